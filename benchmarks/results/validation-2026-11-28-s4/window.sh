#!/bin/bash
# quiet window 6 of 2026-11-28 (fourth session): the seed grid with 5 launches per cell (no tie-break),
# the protocol benchmarks/noise_floor.py says brings a perfect model's worst cell under 8%
cd /tmp/fresh-s4
export PYTHONPATH=/tmp/fresh-s4
echo "== validate-5 $(date +%T)"; python3 -m loop validate --out out/validate-5 --figures out/validate-5/figures --repeats 5 --tiebreak-pct 1000 > out-validate-5.stdout 2> out-validate-5.stderr; tail -8 out-validate-5.stdout
echo "== end $(date +%T)"
