#!/bin/bash
# quiet window 5 of 2026-11-28 (third session): three consecutive demos, the seed grid, the seed grid of the new schedules
cd /tmp/fresh-s3
export PYTHONPATH=/tmp/fresh-s3
for i in 1 2 3; do
  echo "== demo-$i $(date +%T)"; python3 -m loop demo --out out/demo-$i > out-demo-$i.stdout 2> out-demo-$i.stderr; tail -5 out-demo-$i.stdout
done
echo "== validate $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -5 out-validate.stdout
echo "== validate-new $(date +%T)"; python3 -m loop validate --out out/validate-new --schedules zbh1,interleaved1f1b --figures out/validate-new/figures > out-validate-new.stdout 2> out-validate-new.stderr; tail -5 out-validate-new.stdout
echo "== end $(date +%T)"
