#!/bin/bash
# quiet window 38 (fifteenth session, 2026-11-29): machine B (boot id 4b7a4d16...); a fresh clone of main; ZB-H1 /
# interleaved 1F1B with the defaults, the runtime's own split backward (d651710); a new output folder, nothing else running
rm -rf /tmp/fresh-s15b && git clone -q /work/main /tmp/fresh-s15b && cd /tmp/fresh-s15b || exit 1
export PYTHONPATH=/tmp/fresh-s15b
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
echo "== validate-new-17 $(date +%T)"; python3 -m loop validate --out out/validate-new --schedules zbh1,interleaved1f1b --figures out/validate-new/figures > out-validate-new.stdout 2> out-validate-new.stderr; tail -9 out-validate-new.stdout
echo "== end $(date +%T)"
