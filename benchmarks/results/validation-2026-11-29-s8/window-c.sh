#!/bin/bash
# window 16, part c: one more seed-grid validation from the same fresh clone (c0a3d00)
cd /tmp/fresh-s8 || exit 1
export PYTHONPATH=/tmp/fresh-s8
echo "== validate-2 $(date +%T)"; python3 -m loop validate --out out/validate-2 > out-validate-2.stdout 2> out-validate-2.stderr; tail -6 out-validate-2.stdout
echo "== end $(date +%T)"
