#!/bin/bash
# quiet window 15, the first of 2026-11-29 (seventh session, after midnight UTC): a fresh clone made on the new date,
# then three demos and the seed grid with the defaults (profile alone; no level probe)
while [ "$(date -u +%F)" = "2026-11-28" ]; do sleep 5; done
rm -rf /tmp/fresh-d2 && git clone -q /work/main /tmp/fresh-d2 && cd /tmp/fresh-d2 || exit 1
export PYTHONPATH=/tmp/fresh-d2
echo "== clone $(date -u '+%F %T') $(git log --oneline | head -1)"
for i in 1 2 3; do
  echo "== demo-$i $(date +%T)"; python3 -m loop demo --out out/demo-$i > out-demo-$i.stdout 2> out-demo-$i.stderr; tail -6 out-demo-$i.stdout
done
echo "== validate $(date +%T)"; python3 -m loop validate --out out/validate --figures out/validate/figures > out-validate.stdout 2> out-validate.stderr; tail -6 out-validate.stdout
echo "== end $(date +%T)"
