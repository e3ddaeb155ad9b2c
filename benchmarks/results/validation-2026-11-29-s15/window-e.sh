#!/bin/bash
# quiet window 41 (fifteenth session, 2026-11-29): machine B (boot id 4b7a4d16...); a fresh clone of main; the seed grid
# (GPipe and 1F1B) with the defaults; a new output folder, nothing else running
rm -rf /tmp/fresh-s15e && git clone -q /work/main /tmp/fresh-s15e && cd /tmp/fresh-s15e || exit 1
export PYTHONPATH=/tmp/fresh-s15e
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
echo "== validate-26 $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -9 out-validate.stdout
echo "== end $(date +%T)"
