#!/bin/bash
# quiet window 3 of 2026-11-28: three consecutive demos with two runs per cell
cd /tmp/fresh-1025
export PYTHONPATH=/tmp/fresh-1025
for i in 1 2 3; do
  echo "== demo-r$i $(date +%T)"; python3 -m loop demo --out out/demo-r$i > out-demo-r$i.stdout 2> out-demo-r$i.stderr; tail -4 out-demo-r$i.stdout
done
echo "== end $(date +%T)"
