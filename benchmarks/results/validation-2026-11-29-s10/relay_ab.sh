#!/bin/bash
cd /work/main
P=/tmp/fresh-s10/out/validate-new/profile.json   # kept as validate-new-6/profile.json
for cell in "1f1b|delay 1ms|1" "gpipe|delay 5ms|1" "zbh1|delay 1ms|1" "1f1b|delay 1ms  bandwidth 5Gbps|2"; do
  IFS='|' read s n m <<< "$cell"
  echo "=== $s / $n / mbs $m $(date +%T)"
  python3 benchmarks/relay_placement.py --profile $P --schedule $s --network "$n" --micro-batch-size $m --placements kernel,1 --rounds 3 --out /tmp/relay-ab/$s-$m-$(echo $n | tr -cd 'a-z0-9') | tail -5
done
echo "== end $(date +%T)"
