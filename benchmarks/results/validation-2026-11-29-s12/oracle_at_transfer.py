"""Oracle 2: charge k*nbytes of CPU on the sender's and receiver's cores when a message enters its wire,
k per cell from the cell's measured extra non-compute CPU (vs default) per byte the ranks move."""
import collections, json, statistics as st, sys
from pathlib import Path
from pipesim import profile as P, engine as E
from pipesim import schedule as S
from loop.compare import setting_of

folder = Path(sys.argv[1]); only_cap = len(sys.argv) > 2
prof = P.load(folder / "profile.json")
tr = E.Transport.for_profile(prof)
K = {"k": 0.0, "when": "start"}
orig_start = E._Sim._start
def _start(self, m):
    orig_start(self, m)
    if K["k"] > 0 and self.core_of is not None:
        w = K["k"] * m.nbytes
        self.core_of[m.src].run(w)
        if K["when"] == "start":
            self.core_of[m.dst].run(w)
        else:
            self._at(m.arrived, lambda: self.core_of[m.dst].run(w))
E._Sim._start = _start
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
ks = collections.defaultdict(list)
rows = []
for c in cells:
    net = setting_of(c["network"])
    s, m = c["schedule"], c["micro_batch_size"]
    v = 2 if s in S.VIRTUAL else 1
    kw = {"stages_per_rank": v} if v > 1 else {}
    base = [st.median(x[i] for x in agg[(s, m, deflab)]) for i in range(3)]
    cur = [st.median(x[i] for x in agg[(s, m, c["network"])]) for i in range(3)]
    ex = sum(a - b for a, b in zip(cur, base))
    # bytes moved per step, counted at both ends
    K["k"] = 0.0
    sim0 = E._Sim  # count via a plain simulate's messages
    nbytes = 2 * c["batch_size"] * 65536 * 2 * (len(prof.stages) * v - 1)
    k = max(0.0, ex / nbytes)
    cap = ("bandwidth" in c["network"]) and ("delay" not in c["network"])
    if cap:
        ks[c["network"]].append(k)
    out = [c["simulated_s"]]
    for when in ("start", "arrive"):
        K["k"], K["when"] = (k if cap else 0.0), when
        out.append(E.simulate(prof, s, m, c["batch_size"], net, transport=tr, steps=3, **kw).step_time)
    meas = c["measured_s"]
    rows.append((s, c["network"], m, k, [100 * (x / meas - 1) for x in out], cap))
for s, n, m, k, e, cap in rows:
    if cap or not only_cap:
        print(f"{s:16s} {n[:30]:30s} mbs {m}  k {k*1e9:5.2f} ns/B  pred {e[0]:+6.1f}%  jobs@start {e[1]:+6.1f}%  src@start,dst@arrive {e[2]:+6.1f}%")
for n, v in ks.items():
    print(n, "k ns/B", [round(x * 1e9, 2) for x in v])
def mape(i, sch):
    xs = [abs(e[i]) for s, n, m, k, e, cap in rows if s == sch]
    return sum(xs) / len(xs), max(xs)
for sch in sorted({r[0] for r in rows}):
    print(sch, "MAPE/worst: pred %.1f/%.1f  start %.1f/%.1f  arrive %.1f/%.1f" % (*mape(0, sch), *mape(1, sch), *mape(2, sch)))
