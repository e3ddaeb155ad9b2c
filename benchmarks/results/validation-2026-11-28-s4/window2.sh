#!/bin/bash
# quiet window 7 of 2026-11-28 (fourth session): the seed grid with validate's defaults, from a fresh clone
# that prints the noise floor
cd /tmp/fresh-s4b
export PYTHONPATH=/tmp/fresh-s4b
echo "== validate $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -8 out-validate.stdout
echo "== end $(date +%T)"
