#!/bin/bash
# window 16, part b: after window.sh ends, one more demo from the same fresh clone
while pgrep -f window16.sh >/dev/null; do sleep 5; done
cd /tmp/fresh-s8 || exit 1
export PYTHONPATH=/tmp/fresh-s8
echo "== demo-4 $(date +%T)"; python3 -m loop demo --out out/demo-4 > out-demo-4.stdout 2> out-demo-4.stderr; tail -6 out-demo-4.stdout
echo "== end $(date +%T)"
