"""Oracle: add each cap-only cell's measured extra non-compute CPU per rank (vs default, same schedule/mbs)
to the profile as overhead per computation, re-simulate, and compare errors."""
import collections, json, statistics as st, sys
from dataclasses import replace
from pathlib import Path
from pipesim import profile as P, engine as E, network as N
from pipesim import schedule as S
from loop.compare import setting_of

folder = Path(sys.argv[1]); mode = sys.argv[2] if len(sys.argv) > 2 else "step"
prof = P.load(folder / "profile.json")
tr = E.Transport.for_profile(prof)
agg = collections.defaultdict(list)
for line in open(folder / "measured.jsonl"):
    r = json.loads(line)
    if r.get("disturbed") or not (folder / r["results"]).exists():
        continue
    d = json.loads((folder / r["results"]).read_text())
    extra = [p["cpu_per_step"]["median"] - p["compute_cpu_per_step"]["median"] for p in sorted(d["per_rank"], key=lambda p: p["rank"])]
    agg[(r["schedule"], r["micro_batch_size"], r["network"])].append(extra)
cells = json.load(open(folder / "comparison.json"))["cells"]
deflab = next(c["network"] for c in cells if c["network"].startswith("default"))
for c in cells:
    net = setting_of(c["network"])
    s, m = c["schedule"], c["micro_batch_size"]
    base = [st.median(x[i] for x in agg[(s, m, deflab)]) for i in range(3)]
    cur = [st.median(x[i] for x in agg[(s, m, c["network"])]) for i in range(3)]
    ex = [max(0.0, a - b) for a, b in zip(cur, base)]
    v = 2 if s in S.VIRTUAL else 1
    nb = c["batch_size"] // m
    ncomp = {"gpipe": 2, "1f1b": 2, "zbh1": 3, "interleaved1f1b": 2 * v}[s] * nb
    stages = []
    for r, stg in enumerate(prof.stages):
        sc = stg.compute[m]
        add = ex[r] / ncomp
        obs = dict(sc.overhead_by_schedule_s or {})
        obs[s] = sc.overhead(s) + add
        stages.append(replace(stg, compute={**stg.compute, m: replace(sc, overhead_by_schedule_s=obs)}))
    p2 = replace(prof, stages=tuple(stages))
    kw = {"stages_per_rank": v} if v > 1 else {}
    sim2 = E.simulate(p2, s, m, c["batch_size"], net, transport=tr, steps=3, **kw).step_time
    meas = c["measured_s"]
    e1 = 100 * (c["simulated_s"] / meas - 1); e2 = 100 * (sim2 / meas - 1)
    print(f"{s:16s} {c['network'][:36]:36s} mbs {m}  extra ms {'/'.join(f'{1e3*x:.1f}' for x in ex)}  pred {e1:+6.1f}%  with extra {e2:+6.1f}%")
