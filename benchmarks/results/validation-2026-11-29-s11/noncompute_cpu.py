"""Per (schedule, micro-batch size, network): each rank's process CPU per step beyond the CPU
inside its computations (the runtime's posting, gloo's threads, the kernel's work for its
messages), median over the folder's runs, and its change against the default network.

    python noncompute_cpu.py <validation folder with runs/>"""
import collections
import json
import statistics as st
import sys
from pathlib import Path

folder = Path(sys.argv[1])
agg = collections.defaultdict(list)
for line in open(folder / "measured.jsonl"):
    r = json.loads(line)
    if r.get("disturbed") or not (folder / r["results"]).exists():
        continue
    d = json.loads((folder / r["results"]).read_text())
    extra = [p["cpu_per_step"]["median"] - p["compute_cpu_per_step"]["median"] for p in sorted(d["per_rank"], key=lambda p: p["rank"])]
    agg[(r["schedule"], r["micro_batch_size"], r["network"].split(" (")[0])].append(extra)
nets = sorted({k[2] for k in agg}, key=lambda n: (n != "default", n))
print("| schedule | mbs | network | non-compute CPU per step, ms, ranks 0/1/2 | vs default, ms |")
print("|---|---:|---|---|---|")
for s, m in sorted({(k[0], k[1]) for k in agg}):
    base = agg.get((s, m, "default"))
    b = [st.median(x[i] for x in base) for i in range(3)] if base else None
    for n in nets:
        if (s, m, n) not in agg:
            continue
        v = [st.median(x[i] for x in agg[(s, m, n)]) for i in range(3)]
        diff = " / ".join(f"{1000 * (a - c):+.1f}" for a, c in zip(v, b)) if b else "-"
        print(f"| {s} | {m} | {n} | {' / '.join(f'{1000 * a:.1f}' for a in v)} | {diff} |")
