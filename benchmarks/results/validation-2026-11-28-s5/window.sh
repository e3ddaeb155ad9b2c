#!/bin/bash
# quiet window 9 of 2026-11-28 (fifth session): the seed grid (GPipe, 1F1B) then the new schedules
# (ZB-H1, interleaved 1F1B) with validate's defaults, from a fresh clone that models the delay element's time
cd /tmp/fresh-s5
export PYTHONPATH=/tmp/fresh-s5
echo "== validate $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -8 out-validate.stdout
echo "== validate-new $(date +%T)"; python3 -m loop validate --out out/validate-new --schedules zbh1,interleaved1f1b --figures out/validate-new/figures > out-validate-new.stdout 2> out-validate-new.stderr; tail -8 out-validate-new.stdout
echo "== end $(date +%T)"
