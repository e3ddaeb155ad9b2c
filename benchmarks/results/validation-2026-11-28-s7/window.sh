#!/bin/bash
# quiet window 14 of 2026-11-28 (seventh session): the seed grid, then three demos, with the level probe
# (loop/level.py: a runtime re-probe of the machine's level before each setting), from a fresh clone
cd /tmp/fresh-s7
export PYTHONPATH=/tmp/fresh-s7
echo "== validate $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -6 out-validate.stdout
for i in 1 2 3; do
  echo "== demo-$i $(date +%T)"; python3 -m loop demo --out out/demo-$i > out-demo-$i.stdout 2> out-demo-$i.stderr; tail -6 out-demo-$i.stdout
done
echo "== end $(date +%T)"
