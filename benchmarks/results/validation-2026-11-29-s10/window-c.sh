#!/bin/bash
# quiet window 22 (tenth session, 2026-11-29): right after window 21, a fresh clone of main with the
# delay line on rank 1's core; the seed grid (GPipe / 1F1B); defaults, nothing else running
while pgrep -f window-b.sh > /dev/null; do sleep 10; done
rm -rf /tmp/fresh-s10c && git clone -q /work/main /tmp/fresh-s10c && cd /tmp/fresh-s10c || exit 1
export PYTHONPATH=/tmp/fresh-s10c
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
echo "== validate $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -8 out-validate.stdout
echo "== end $(date +%T)"
