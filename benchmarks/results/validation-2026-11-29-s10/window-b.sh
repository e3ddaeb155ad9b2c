#!/bin/bash
# quiet window 21 (tenth session, 2026-11-29): a fresh clone of main with the delay line on rank 1's core;
# ZB-H1 / interleaved 1F1B over the seed grid; defaults, nothing else running
rm -rf /tmp/fresh-s10b && git clone -q /work/main /tmp/fresh-s10b && cd /tmp/fresh-s10b || exit 1
export PYTHONPATH=/tmp/fresh-s10b
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
echo "== validate-new $(date +%T)"; python3 -m loop validate --out out/validate-new --schedules zbh1,interleaved1f1b --figures out/validate-new/figures > out-validate-new.stdout 2> out-validate-new.stderr; tail -8 out-validate-new.stdout
echo "== end $(date +%T)"
