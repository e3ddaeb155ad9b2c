"""Would tracking the machine's speed from the runs just before a cell predict it better?

A validation calibrates once, then runs its cells for 25-45 minutes. When the machine's
speed moves in between (in one window of 2026-11-28 every run took 6-10% more CPU per step
than calibration measured, pass after pass), every prediction from the profile misses by
about as much. This script scores, on kept folders, a prediction that follows such a
shift: the profile scaled (every rank alike, :meth:`pipesim.profile.Profile.ranks_scaled`)
by the median CPU drift of the ``K`` runs measured just before the cell's run -- a
stand-in for a short probe run launched before each cell. It uses the earlier runs' CPU
per step only, never a step time. The cell's prediction is the median over its runs,
compared with the median of its measured runs, as validate does.

Only folders whose runs record ``cpu_drift`` (validate and demo since 2026-11-28, third
session) can be scored.

    python benchmarks/speed_tracking.py benchmarks/results/validation-2026-11-28-s3/validate ...
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from loop import compare as C
from pipesim import engine as E
from pipesim import profile as P
from pipesim.util import read_jsonl

WINDOWS = (0, 5, 10, 20, 40)   # runs looked back; 0: the profile alone (the prediction)


def score(folder: Path) -> dict[int, list[float]] | None:
    prof = P.load(folder / "profile.json")
    transport = E.Transport.for_profile(prof)
    runs = [r for r in read_jsonl(folder / "measured.jsonl") if not r.get("disturbed")]   # in the order measured
    if not runs or any(r.get("cpu_drift") is None for r in runs):
        return None
    cache: dict[tuple, float] = {}

    def simulate(r: dict, factor: float) -> float:
        key = (r["key"], round(factor, 4))
        if key not in cache:
            p = prof.ranks_scaled([factor] * prof.num_stages) if factor != 1.0 else prof
            v = int(r["stages_per_rank"]) if r.get("stages_per_rank") else None
            cache[key] = E.simulate(p, r["schedule"], r["micro_batch_size"], r["batch_size"],
                                    C.setting_of(r["network"]), transport=transport, steps=C.SIM_STEPS,
                                    record=False, stages_per_rank=v).step_time
        return cache[key]

    out: dict[int, list[float]] = {}
    for k in WINDOWS:
        cells: dict[str, list[tuple[float, float]]] = {}
        for i, r in enumerate(runs):
            before = runs[max(0, i - k):i] if k else []
            factor = statistics.median(x["cpu_drift"] for x in before) if before else 1.0
            cells.setdefault(r["key"], []).append((r["median"], simulate(r, factor)))
        out[k] = []
        for rs in cells.values():
            measured = statistics.median(x[0] for x in rs)
            out[k].append(100 * (statistics.median(x[1] for x in rs) - measured) / measured)
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip())
        return 2
    every: dict[int, list[float]] = {k: [] for k in WINDOWS}
    print("| folder | cells | " + " | ".join("profile alone" if k == 0 else f"last {k} runs" for k in WINDOWS) + " |")
    print("|---|---:|" + "---|" * len(WINDOWS))
    for f in argv:
        s = score(Path(f))
        if s is None:
            print(f"| {f} | - | " + " | ".join("no cpu_drift in its runs" if k == 0 else "" for k in WINDOWS) + " |")
            continue
        for k, e in s.items():
            every[k] += [abs(x) for x in e]
        print(f"| {f} | {len(s[0])} | " + " | ".join(f"{statistics.fmean(map(abs, e)):.2f}% ({max(map(abs, e)):.1f}%)"
                                                    for e in s.values()) + " |")
    for k, v in every.items():
        if v:
            what = "profile alone" if k == 0 else f"scaled by the last {k} runs' CPU drift"
            print(f"all {len(v)} cells, {what}: mean absolute error {statistics.fmean(v):.2f}%, worst {max(v):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
