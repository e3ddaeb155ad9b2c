#!/bin/bash
# quiet window 23 (tenth session, 2026-11-29): right after window 22, a fresh clone of main; one demo
while pgrep -f window-c.sh > /dev/null; do sleep 10; done
rm -rf /tmp/fresh-s10d && git clone -q /work/main /tmp/fresh-s10d && cd /tmp/fresh-s10d || exit 1
export PYTHONPATH=/tmp/fresh-s10d
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
echo "== demo $(date +%T)"; python3 -m loop demo --out out/demo-1 > out-demo-1.stdout 2> out-demo-1.stderr; tail -8 out-demo-1.stdout
echo "== end $(date +%T)"
