#!/bin/bash
# quiet window 4 of 2026-11-28: the seed-grid validation again (fresh clone 3a7a591)
cd /tmp/fresh-1025
export PYTHONPATH=/tmp/fresh-1025
echo "== validate-2 $(date +%T)"; python3 -m loop validate --out out/validate-2 --figures out/validate-2/figures > out-validate-2.stdout 2> out-validate-2.stderr; tail -4 out-validate-2.stdout
echo "== end $(date +%T)"
