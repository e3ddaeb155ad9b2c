#!/bin/bash
# quiet window 20 (tenth session, 2026-11-29): a fresh clone of main (the compute speed basis);
# ZB-H1 / interleaved 1F1B over the seed grid; defaults, nothing else running
rm -rf /tmp/fresh-s10 && git clone -q /work/main /tmp/fresh-s10 && cd /tmp/fresh-s10 || exit 1
export PYTHONPATH=/tmp/fresh-s10
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
echo "== validate-new $(date +%T)"; python3 -m loop validate --out out/validate-new --schedules zbh1,interleaved1f1b --figures out/validate-new/figures > out-validate-new.stdout 2> out-validate-new.stderr; tail -8 out-validate-new.stdout
echo "== end $(date +%T)"
