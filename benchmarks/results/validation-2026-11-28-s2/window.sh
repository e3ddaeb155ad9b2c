#!/bin/bash
# quiet window 2026-11-28 (second session): 3 demos, new-schedule demo, seed-grid validate
cd /tmp/fresh-1015
export PYTHONPATH=/tmp/fresh-1015
for i in 1 2 3; do
  echo "== demo-$i $(date +%T)"; python3 -m loop demo --out out/demo-$i > out-demo-$i.stdout 2> out-demo-$i.stderr; tail -4 out-demo-$i.stdout
done
echo "== demo-new $(date +%T)"; python3 -m loop demo --out out/demo-new --schedules zbh1,interleaved1f1b > out-demo-new.stdout 2> out-demo-new.stderr; tail -4 out-demo-new.stdout
echo "== validate $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -5 out-validate.stdout
echo "== end $(date +%T)"
