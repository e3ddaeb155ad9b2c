#!/bin/bash
# quiet window 16 (eighth session, 2026-11-29): a fresh clone of main with the replay's send lags,
# three demos, the seed grid, then ZB-H1 / interleaved 1F1B over the seed grid; defaults, no level probe
rm -rf /tmp/fresh-s8 && git clone -q /work/main /tmp/fresh-s8 && cd /tmp/fresh-s8 || exit 1
export PYTHONPATH=/tmp/fresh-s8
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
for i in 1 2 3; do
  echo "== demo-$i $(date +%T)"; python3 -m loop demo --out out/demo-$i > out-demo-$i.stdout 2> out-demo-$i.stderr; tail -6 out-demo-$i.stdout
done
echo "== validate $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -6 out-validate.stdout
echo "== validate-new $(date +%T)"; python3 -m loop validate --out out/validate-new --schedules zbh1,interleaved1f1b --figures out/validate-new/figures > out-validate-new.stdout 2> out-validate-new.stderr; tail -8 out-validate-new.stdout
echo "== end $(date +%T)"
