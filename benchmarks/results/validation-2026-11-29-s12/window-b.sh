#!/bin/bash
# quiet window 30 (twelfth session, 2026-11-29): machine B (boot id 4b7a4d16...); a fresh clone of main (the shaped-link
# CPU probe and charge); three demos in a row, then a second seed-grid validation; defaults, new output folders,
# nothing else running
rm -rf /tmp/fresh-s12b && git clone -q /work/main /tmp/fresh-s12b && cd /tmp/fresh-s12b || exit 1
export PYTHONPATH=/tmp/fresh-s12b
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
for i in 1 2 3; do
  echo "== demo-$i $(date +%T)"; python3 -m loop demo --out out/demo-$i > out-demo-$i.stdout 2> out-demo-$i.stderr; tail -4 out-demo-$i.stdout
done
echo "== validate-22 $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -8 out-validate.stdout
echo "== end $(date +%T)"
