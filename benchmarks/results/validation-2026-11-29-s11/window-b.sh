#!/bin/bash
# quiet window 26 (eleventh session, 2026-11-29): the new machine (boot id 4b7a4d16...); a fresh clone of main;
# ZB-H1 / interleaved 1F1B over the seed grid; defaults, nothing else running
rm -rf /tmp/fresh-s11b && git clone -q /work/main /tmp/fresh-s11b && cd /tmp/fresh-s11b || exit 1
export PYTHONPATH=/tmp/fresh-s11b
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
echo "== validate-new $(date +%T)"; python3 -m loop validate --out out/validate-new --schedules zbh1,interleaved1f1b --figures out/validate-new/figures > out-validate-new.stdout 2> out-validate-new.stderr; tail -8 out-validate-new.stdout
echo "== end $(date +%T)"
