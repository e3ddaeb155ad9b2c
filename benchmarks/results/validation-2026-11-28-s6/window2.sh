#!/bin/bash
# quiet window 12 of 2026-11-28 (sixth session): the seed grid with validate's defaults (the probe now splits per step from per computation; GPipe and 1F1B share
# one probed overhead per action), then three demos, from a fresh clone
cd /tmp/fresh-s6b
export PYTHONPATH=/tmp/fresh-s6b
echo "== validate $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -8 out-validate.stdout
for i in 1 2 3; do
  echo "== demo-$i $(date +%T)"; python3 -m loop demo --out out/demo-$i > out-demo-$i.stdout 2> out-demo-$i.stderr; tail -6 out-demo-$i.stdout
done
echo "== end $(date +%T)"
