#!/bin/bash
# quiet windows 42-44 (sixteenth session, 2026-11-29): machine B (boot id 4b7a4d16...); each from a fresh clone of main
# into a new output folder, the defaults, nothing else running:
#   42: validate-new-20 (ZB-H1 and interleaved 1F1B)   43: validate-new-21 (the same)   44: validate-27 (the seed grid)
# Each window's files are copied to ./<name>/ as it ends.
HERE=$(cd "$(dirname "$0")" && pwd)
window() {   # name, extra args, folder
  local name=$1 args=$2 dir=/tmp/fresh-s16-$1
  rm -rf "$dir" && git clone -q /work/main "$dir" && cd "$dir" || return 1
  export PYTHONPATH=$dir
  echo "== $name: clone $(date -u '+%F %T') $(git log --oneline | head -1) boot $(cat /proc/sys/kernel/random/boot_id)"
  python3 -m loop validate --out out/v $args --figures out/v/figures > out.stdout 2> out.stderr
  echo "   rc=$? $(date -u +%T)"; tail -9 out.stdout
  mkdir -p "$HERE/$name" && cp out/v/comparison.md out/v/comparison.json out/v/measured.jsonl out/v/profile.json \
    out/v/compute_probe.json "$HERE/$name/" 2>/dev/null; cp out.stdout "$HERE/$name/stdout.txt"; cp out.stderr "$HERE/$name/stderr.txt"
}
window validate-new-20 "--schedules zbh1,interleaved1f1b"
window validate-new-21 "--schedules zbh1,interleaved1f1b"
window validate-27 ""
echo "== end $(date -u +%T)"
