#!/bin/bash
# quiet window 13 of 2026-11-28 (sixth session): the seed grid with the final defaults of the session (GPipe and 1F1B
# share one probed overhead per action; the step probe off), from a fresh clone
cd /tmp/fresh-s6c
export PYTHONPATH=/tmp/fresh-s6c
echo "== validate $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -8 out-validate.stdout
echo "== end $(date +%T)"
