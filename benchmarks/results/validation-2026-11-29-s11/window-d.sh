#!/bin/bash
# quiet window 28 (eleventh session, 2026-11-29): machine B (boot id 4b7a4d16...); a fresh clone of the session's main;
# a third seed-grid validation on this machine; defaults, nothing else running
rm -rf /tmp/fresh-s11d && git clone -q /work/main /tmp/fresh-s11d && cd /tmp/fresh-s11d || exit 1
export PYTHONPATH=/tmp/fresh-s11d
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
echo "== validate-20 $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -8 out-validate.stdout
echo "== end $(date +%T)"
