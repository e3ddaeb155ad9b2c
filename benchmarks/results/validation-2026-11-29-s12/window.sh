#!/bin/bash
# quiet window 29 (twelfth session, 2026-11-29): machine B (boot id 4b7a4d16...); a fresh clone of main with the
# shaped-link CPU probe and charge (4327b91); ZB-H1 and interleaved 1F1B over the seed grid, then the seed grid's
# GPipe and 1F1B; defaults (the shaped probe on), new output folders, nothing else running
rm -rf /tmp/fresh-s12 && git clone -q /work/main /tmp/fresh-s12 && cd /tmp/fresh-s12 || exit 1
export PYTHONPATH=/tmp/fresh-s12
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
echo "== validate-new-9 $(date +%T)"; python3 -m loop validate --out out/validate-new --schedules zbh1,interleaved1f1b --figures out/validate-new/figures > out-validate-new.stdout 2> out-validate-new.stderr; tail -8 out-validate-new.stdout
echo "== validate-21 $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -8 out-validate.stdout
echo "== end $(date +%T)"
