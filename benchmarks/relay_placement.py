"""Where the testbed's delay line runs, and what it costs the ranks: one cell measured with the
delay line left to the kernel, and pinned to each core in turn, in alternating rounds.

The delay line (:mod:`testbed.router`) runs SCHED_FIFO: wherever it wakes it preempts a rank.
The simulator does not model it (a cluster has no delay line). Since the tenth session the
launcher pins it to the cores with the fewest ranks (:func:`runtime.launch.relay_cores`);
``kernel`` below is the behaviour before that (``PIPESIM_TESTBED_RELAY_CPUS=any``): wherever
the kernel wakes it. This measures, per placement,
the cell's step time, each rank's solo work per step (its computations and own gaps from the
trace, the sharing of cores taken out: :func:`pipesim.context.solo_durations`) and its process
CPU per step, both against the profile's (:func:`pipesim.context.cpu_per_step`), and the
delay line's CPU (``usage.other_cpu_pct``). Solo work above CPU means a rank's computations took
wall time it did not run for: another task had its core.

    python benchmarks/relay_placement.py --profile out/validate-new/profile.json \\
        [--schedule interleaved1f1b] [--network "delay 1ms"] [--micro-batch-size 1] \\
        [--placements kernel,0,1] [--rounds 3] [--out out/relay-placement]

Nothing else may run on the machine meanwhile (it times runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loop.validate import measure_cell  # noqa: E402
from pipesim import network as N  # noqa: E402
from pipesim import profile as P  # noqa: E402
from pipesim.context import cpu_per_step, solo_durations  # noqa: E402
from pipesim.trace import read_csv  # noqa: E402


def solo_ratio(out: Path, rec: dict, prof: P.Profile, schedule: str, mbs: int, batch: int, v: int | None) -> list[float]:
    res = json.loads((out / rec["results"]).read_text())
    solo = solo_durations(read_csv(out / rec["trace"]), prof.host)
    per: dict[int, float] = defaultdict(float)
    steps = set()
    for (rank, step, _), w in solo.items():
        if step >= res["warmup"]:
            per[rank] += w
            steps.add(step)
    want = cpu_per_step(prof, schedule, mbs, batch, v)
    return [per[r] / len(steps) / want[r] for r in sorted(per)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--schedule", default="interleaved1f1b")
    ap.add_argument("--network", default="delay 1ms")
    ap.add_argument("--micro-batch-size", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--stages-per-rank", type=int, default=2)
    ap.add_argument("--placements", default="kernel,0,1",
                    help="comma-separated: kernel (not pinned) or cores joined by + (e.g. kernel,0,1,0+1)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default="out/relay-placement")
    a = ap.parse_args(argv)
    prof = P.load(a.profile)
    net = N.parse(a.network)
    v = a.stages_per_rank if a.schedule == "interleaved1f1b" else None
    out = Path(a.out)
    placements = [p.strip() for p in a.placements.split(",") if p.strip()]
    rows: dict[str, list[dict]] = defaultdict(list)
    for rnd in range(a.rounds):
        order = placements if rnd % 2 == 0 else placements[::-1]
        for pl in order:
            # "any": wherever the kernel wakes it (the testbed's behaviour before the launcher chose)
            os.environ["PIPESIM_TESTBED_RELAY_CPUS"] = "any" if pl == "kernel" else pl.replace("+", ",")
            rec = measure_cell(out / f"relay-{pl}", prof.model.get("name", "cpu-small"), prof.num_stages, a.schedule, net, a.micro_batch_size, a.batch_size,
                               a.steps, 2, 300, False, run=rnd, profile=prof, stages_per_rank=v or 1)
            solo = solo_ratio(out / f"relay-{pl}", rec, prof, a.schedule, a.micro_batch_size, a.batch_size, v)
            rec["solo_ratio"] = solo
            rows[pl].append(rec)
            print(f"round {rnd} relay {pl:>6}: {rec['median'] * 1e3:6.1f} ms  solo/profile "
                  f"{' '.join(f'{x:.3f}' for x in solo)}  cpu/profile {' '.join(f'{x:.3f}' for x in rec['cpu_factors'])}"
                  f"  delay line {rec['usage']['other_cpu_pct']:.1f}% of a core", flush=True)
    os.environ.pop("PIPESIM_TESTBED_RELAY_CPUS", None)
    print(f"\n{a.schedule}, {net.label}, mbs {a.micro_batch_size}: median over {a.rounds} rounds\n")
    print("| delay line | step ms (runs) | solo work / profile (ranks) | CPU / profile (ranks) | delay line % of a core |")
    print("|---|---|---|---|---:|")
    for pl in placements:
        rs = rows[pl]
        med = statistics.median(r["median"] for r in rs) * 1e3
        runs = ", ".join(f"{r['median'] * 1e3:.1f}" for r in rs)
        solo = [statistics.median(r["solo_ratio"][k] for r in rs) for k in range(len(rs[0]["solo_ratio"]))]
        cpu = [statistics.median(r["cpu_factors"][k] for r in rs) for k in range(len(rs[0]["cpu_factors"]))]
        other = statistics.median(r["usage"]["other_cpu_pct"] for r in rs)
        name = "not pinned" if pl == "kernel" else f"core {pl}"
        print(f"| {name} | {med:.1f} ({runs}) | {' '.join(f'{x:.3f}' for x in solo)} | "
              f"{' '.join(f'{x:.3f}' for x in cpu)} | {other:.1f} |")
    (out / "relay_placement.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
