#!/bin/bash
# quiet window 8 of 2026-11-28 (fourth session): the seed grid of ZB-H1 and interleaved 1F1B, validate's defaults
cd /tmp/fresh-s4c
export PYTHONPATH=/tmp/fresh-s4c
echo "== validate-new $(date +%T)"; python3 -m loop validate --out out/validate-new --schedules zbh1,interleaved1f1b --figures out/validate-new/figures > out-validate-new.stdout 2> out-validate-new.stderr; tail -8 out-validate-new.stdout
echo "== end $(date +%T)"
