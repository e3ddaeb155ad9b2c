#!/bin/bash
# quiet window 34 (fourteenth session, 2026-11-29): machine B (boot id 4b7a4d16...); a fresh clone of main; the defaults;
# ZB-H1 / interleaved 1F1B first (issue 14), then the seed grid; new output folders, nothing else running
rm -rf /tmp/fresh-s14 && git clone -q /work/main /tmp/fresh-s14 && cd /tmp/fresh-s14 || exit 1
export PYTHONPATH=/tmp/fresh-s14
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
echo "== validate-new-13 $(date +%T)"; python3 -m loop validate --out out/validate-new --schedules zbh1,interleaved1f1b --figures out/validate-new/figures > out-validate-new.stdout 2> out-validate-new.stderr; tail -8 out-validate-new.stdout
echo "== validate-25 $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -8 out-validate.stdout
echo "== end $(date +%T)"
