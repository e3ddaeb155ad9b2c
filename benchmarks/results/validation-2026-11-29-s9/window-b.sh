#!/bin/bash
# quiet window 18 (ninth session, 2026-11-29): a fresh clone of main with a run's speed read from the
# CPU inside its computations; the seed grid, then a demo; defaults, nothing else running
rm -rf /tmp/fresh-s9b && git clone -q /work/main /tmp/fresh-s9b && cd /tmp/fresh-s9b || exit 1
export PYTHONPATH=/tmp/fresh-s9b
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
echo "== validate $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -6 out-validate.stdout
echo "== demo-1 $(date +%T)"; python3 -m loop demo --out out/demo-1 > out-demo-1.stdout 2> out-demo-1.stderr; tail -6 out-demo-1.stdout
echo "== end $(date +%T)"
