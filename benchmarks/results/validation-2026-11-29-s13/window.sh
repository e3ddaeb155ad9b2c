#!/bin/bash
# quiet window 32 (thirteenth session, 2026-11-29): machine B (boot id 4b7a4d16...); a fresh clone of main; the overhead
# probe with 5 launches per cell (--overhead-launches 5) so that its first 1..5 launches can be scored on the same runs
# (benchmarks/overhead_launches.py); a seed-grid validation, three demos, a validation of ZB-H1 / interleaved 1F1B;
# new output folders, nothing else running
rm -rf /tmp/fresh-s13 && git clone -q /work/main /tmp/fresh-s13 && cd /tmp/fresh-s13 || exit 1
export PYTHONPATH=/tmp/fresh-s13
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
echo "== validate-23 $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures --overhead-launches 5 > out-validate.stdout 2> out-validate.stderr; tail -8 out-validate.stdout
for i in 1 2 3; do
  echo "== demo-$i $(date +%T)"; python3 -m loop demo --out out/demo-$i --overhead-launches 5 > out-demo-$i.stdout 2> out-demo-$i.stderr; tail -4 out-demo-$i.stdout
done
echo "== validate-new-11 $(date +%T)"; python3 -m loop validate --out out/validate-new --schedules zbh1,interleaved1f1b --figures out/validate-new/figures --overhead-launches 5 > out-validate-new.stdout 2> out-validate-new.stderr; tail -8 out-validate-new.stdout
echo "== end $(date +%T)"
