#!/bin/bash
# quiet window 24 (tenth session, 2026-11-29): a fresh clone of the final main; two more demos
rm -rf /tmp/fresh-s10e && git clone -q /work/main /tmp/fresh-s10e && cd /tmp/fresh-s10e || exit 1
export PYTHONPATH=/tmp/fresh-s10e
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
for i in 2 3; do
  echo "== demo-$i $(date +%T)"; python3 -m loop demo --out out/demo-$i > out-demo-$i.stdout 2> out-demo-$i.stderr; tail -6 out-demo-$i.stdout
done
echo "== end $(date +%T)"
