"""Where the kernel's packet work lands: per-CPU irq + softirq time (/proc/stat) over one run
of interleaved 1F1B, mbs 1, batch 4, under a bandwidth cap and on the default network,
alternating. Run from the repository root with nothing else running."""
import json
import sys
import tempfile
import time
from pathlib import Path

from runtime.launch import run_local

HZ = 100  # USER_HZ of /proc/stat


def per_cpu():
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            f = line.split()
            out[f[0]] = {"irq": int(f[6]) / HZ, "softirq": int(f[7]) / HZ, "busy": sum(map(int, f[1:4])) / HZ}
    return out


def one(network, tmp, i):
    out = Path(tmp) / f"r{i}.json"
    a, t0 = per_cpu(), time.monotonic()
    run_local("runtime", ["--schedule", "interleaved1f1b", "--micro-batch-size", "1", "--batch-size", "4",
                          "--steps", "30", "--warmup", "2", "--out", str(out), "--trace", str(out.with_suffix(".csv"))],
              3, network=network, echo=False, log_dir=Path(tmp) / f"log{i}")
    b, wall = per_cpu(), time.monotonic() - t0
    res = json.loads(out.read_text())
    step = res["step_time"]["median"]
    cpu = {c: {k: round(100 * (b[c][k] - a[c][k]) / wall, 1) for k in ("irq", "softirq")} for c in a}
    ranks = [(pr["rank"], round(1000 * pr["compute_cpu_per_step"]["median"], 2)) for pr in res["per_rank"]]
    print(f"{network or 'default':18s} step {1000 * step:.1f} ms  % of each core over the run: {cpu}  "
          f"compute CPU per step ms {ranks}", flush=True)


with tempfile.TemporaryDirectory() as tmp:
    nets = sys.argv[1:] or ["bandwidth 2Gbps", None]
    for i in range(2):
        for j, n in enumerate(nets):
            one(n, tmp, 10 * i + j)
