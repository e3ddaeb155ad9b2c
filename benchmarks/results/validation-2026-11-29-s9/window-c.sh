#!/bin/bash
# quiet window 19 (ninth session, 2026-11-29): a fresh clone of main after the review; two demos
rm -rf /tmp/fresh-s9c && git clone -q /work/main /tmp/fresh-s9c && cd /tmp/fresh-s9c || exit 1
export PYTHONPATH=/tmp/fresh-s9c
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
for i in 1 2; do
  echo "== demo-$i $(date +%T)"; python3 -m loop demo --out out/demo-$i > out-demo-$i.stdout 2> out-demo-$i.stderr; tail -6 out-demo-$i.stdout
done
echo "== end $(date +%T)"
