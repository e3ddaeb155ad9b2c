#!/bin/bash
# quiet window 25 (eleventh session, 2026-11-29): a NEW machine (boot id 4b7a4d16..., first boot
# seen this session); a fresh clone of main; three demos back to back, then the seed grid; defaults, nothing else running
rm -rf /tmp/fresh-s11 && git clone -q /work/main /tmp/fresh-s11 && cd /tmp/fresh-s11 || exit 1
export PYTHONPATH=/tmp/fresh-s11
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id) cpu $(lscpu | sed -n 's/^Model name: *//p')"
for i in 1 2 3; do
  echo "== demo-$i $(date +%T)"; python3 -m loop demo --out out/demo-$i > out-demo-$i.stdout 2> out-demo-$i.stderr; tail -6 out-demo-$i.stdout
done
echo "== validate $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -8 out-validate.stdout
echo "== end $(date +%T)"
