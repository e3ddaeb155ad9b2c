"""Does the CPU preset behave like the seed's cluster? (the runtime issue's criterion)

On the local testbed, the default network must be compute-bound while
"delay 10ms bandwidth 1Gbps" makes the step at least 1.3x slower. This measures, for
both schedules and each micro-batch size, rank 0's median step time under both
settings (``--repeats`` runs each, interleaved so that a slow spell of the machine
hits both sides), the ratio, and how busy the busiest core is on the default network
(CPU seconds of the ranks pinned to it per step / step time). With ``--profile`` (a
calibration of the same preset) it also prints the network's share of the default
step, simulated: (step - step with an ideal network) / step. Needs root (the testbed).

    python benchmarks/bench_preset.py --model cpu-small --batch-size 4 --repeats 2 --profile out/validate/profile.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SLOW = "delay 10ms bandwidth 1Gbps"


def busiest_core_share(results: Path) -> float:
    res = json.loads(results.read_text())
    per_core = defaultdict(float)
    for r in res["per_rank"]:
        per_core[r.get("cpu") or f"rank{r['rank']}"] += r["cpu_per_step"]["median"]
    return max(per_core.values()) / res["step_time"]["median"]


def network_share(path: str, cells, batch: int) -> dict:
    """Simulated (step - step with zero latency and unlimited bandwidth) / step, in percent."""
    from dataclasses import replace

    from pipesim import engine as E
    from pipesim import profile as P

    prof = P.load(path)
    # in memory only: beyond what a profile file may say (limits.LINK_BANDWIDTH_BPS), never saved
    prof0 = replace(prof, links={k: replace(l, latency_s=0.0, bandwidth_bps=1e18, window_bytes=None)
                                 for k, l in prof.links.items()})
    out = {}
    for s, m in cells:
        a = E.simulate(prof, s, m, batch, "default", record=False).step_time
        b = E.simulate(prof0, s, m, batch, "default", record=False).step_time
        out[(s, m)] = 100 * (a - b) / a
    return out


def main(argv=None) -> int:
    from loop.validate import measure_cell
    from pipesim import network as N
    from testbed import available

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cpu-small")
    ap.add_argument("--ranks", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--micro-batch-sizes", default="1,2,4")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None, help="keep the runs here (default: a temp dir)")
    ap.add_argument("--profile", default=None, help="a profile of the same preset: adds the network's simulated share")
    ns = ap.parse_args(argv)
    ok, why = available()
    if not ok:
        print(f"bench_preset: needs the local testbed ({why})", file=sys.stderr)
        return 2
    out = Path(ns.out or tempfile.mkdtemp(prefix="bench_preset_"))
    mbs_list = [int(x) for x in ns.micro_batch_sizes.split(",")]
    nets = {"default": N.parse("default"), "slow": N.parse(SLOW)}
    cells = [(s, m) for s in ("gpipe", "1f1b") for m in mbs_list]
    times = defaultdict(list)
    share = defaultdict(list)
    total = ns.repeats * len(cells) * 2
    done = 0
    for rep in range(ns.repeats):
        for s, m in (cells if rep % 2 == 0 else cells[::-1]):
            for which in (("default", "slow") if rep % 2 == 0 else ("slow", "default")):
                meas = measure_cell(out / f"rep{rep}", ns.model, ns.ranks, s, nets[which], m, ns.batch_size,
                                    ns.steps, 2, 300, False)
                times[(s, m, which)].append(meas["median"])
                if which == "default":
                    share[(s, m)].append(busiest_core_share(out / f"rep{rep}" / meas["results"]))
                done += 1
                print(f"[{done}/{total}] {s} mbs {m} {nets[which].label}: {meas['median']:.4f} s", file=sys.stderr,
                      flush=True)
    print(f"\n{ns.model}, {ns.ranks} ranks, batch {ns.batch_size}, {ns.steps} steps x {ns.repeats} runs "
          f"(median of the runs' medians)\n")
    share_net = network_share(ns.profile, cells, ns.batch_size) if ns.profile else {}
    print(f"| schedule | mbs | default s | {SLOW} s | slower by | busiest core busy (default) |"
          + (" network share (default, simulated) |" if share_net else ""))
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if share_net else ""))
    ratios = []
    for s, m in cells:
        d = statistics.median(times[(s, m, "default")])
        w = statistics.median(times[(s, m, "slow")])
        busy = statistics.median(share[(s, m)])
        ratios.append(w / d)
        print(f"| {s} | {m} | {d:.4f} | {w:.4f} | {w / d:.2f}x | {100 * busy:.0f}% |"
              + (f" {share_net[(s, m)]:.1f}% |" if share_net else ""))
    print(f"\nsmallest slow-down: {min(ratios):.2f}x (target >= 1.3x); runs kept in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
