#!/bin/bash
# quiet window 27 (eleventh session, 2026-11-29): the new machine (boot id 4b7a4d16...); a fresh clone of main;
# a second seed-grid validation on this machine; defaults, nothing else running
rm -rf /tmp/fresh-s11c && git clone -q /work/main /tmp/fresh-s11c && cd /tmp/fresh-s11c || exit 1
export PYTHONPATH=/tmp/fresh-s11c
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
echo "== validate-19 $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -8 out-validate.stdout
echo "== end $(date +%T)"
