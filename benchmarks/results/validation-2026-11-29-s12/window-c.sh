#!/bin/bash
# quiet window 31 (twelfth session, 2026-11-29): machine B (boot id 4b7a4d16...); a fresh clone of main (the shaped-link
# CPU probe and charge, as window 30); a second validation of ZB-H1 and interleaved 1F1B over the seed grid with it;
# defaults, new output folder, nothing else running
rm -rf /tmp/fresh-s12c && git clone -q /work/main /tmp/fresh-s12c && cd /tmp/fresh-s12c || exit 1
export PYTHONPATH=/tmp/fresh-s12c
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
echo "== validate-new-10 $(date +%T)"; python3 -m loop validate --out out/validate-new --schedules zbh1,interleaved1f1b --figures out/validate-new/figures > out-validate-new.stdout 2> out-validate-new.stderr; tail -8 out-validate-new.stdout
echo "== end $(date +%T)"
