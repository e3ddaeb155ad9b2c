"""Probe-style launch vs validate-style launch of the same configuration (gpipe, mbs 1, batch 4):
compute CPU per step per rank, alternating."""
import json, sys, time
from pathlib import Path
from runtime.launch import run_local
from loop.validate import measure_cell
from pipesim import network as N
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
def cc(res):
    pr = sorted(res["per_rank"], key=lambda p: p["rank"])
    return [round(1e3 * p["compute_cpu_per_step"]["median"], 2) for p in pr], [round(1e3 * p["cpu_per_step"]["median"], 2) for p in pr], round(1e3 * res["step_time"]["median"], 1)
rows = []
for i in range(rounds):
    for kind in ("probe12", "probe30", "cell30"):
        t = time.time()
        if kind.startswith("probe"):
            steps = 12 if kind == "probe12" else 30
            f = out / f"{kind}_{i}.json"
            run_local("runtime", ["--model", "cpu-small", "--schedule", "gpipe", "--micro-batch-size", "1", "--batch-size", "4",
                                  "--steps", str(steps), "--warmup", "2", "--out", str(f), "--trace", str(f.with_suffix(".csv"))],
                      3, timeout_s=300, log_dir=out / f"logs_{kind}_{i}", echo=False)
            res = json.loads(f.read_text())
        else:
            rec = measure_cell(out, "cpu-small", 3, "gpipe", N.parse_setting("default") if hasattr(N, "parse_setting") else N.parse_grid("default")[0], 1, 4, 30, 2, 300, False, run=i)
            res = json.loads((out / rec["results"]).read_text())
        c = cc(res)
        rows.append((kind, i, *c))
        print(kind, i, "compute cpu", c[0], "cpu", c[1], "step", c[2], f"[{time.time()-t:.0f} s]", flush=True)
import statistics as st
for kind in ("probe12", "probe30", "cell30"):
    xs = [r for r in rows if r[0] == kind]
    print(kind, "median compute cpu", [round(st.median(r[2][k] for r in xs), 2) for k in range(3)], "cpu", [round(st.median(r[3][k] for r in xs), 2) for k in range(3)])
