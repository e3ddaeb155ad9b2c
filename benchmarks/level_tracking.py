"""Does re-probing the machine's level during a validation make predictions better? Scored on kept folders.

For each validation or demo folder, every GPipe and 1F1B cell is predicted two ways and
compared with its measured step time (the median of its runs):

* **profile**: from the profile alone (what ``MAPE:`` reports);
* **recalibrated**: each run from the profile scaled to the machine's level at that moment
  (:mod:`loop.level`), the cell's the median of its runs'.

Where a folder has ``levels.jsonl`` (validations since the level probe), the recorded
``recal_s`` of each run is used as it is. Older folders had no level probe; their
default-network micro-batch-1 runs (the same shape as a level probe: 4 micro-batches at
batch 4) stand in for the readings: each run takes the median of the last ``LEVEL_WINDOW``
such runs measured before it (in the order of ``measured.jsonl``), so it never sees its
own cell's CPU or anything measured later. The default-network cells themselves are left
out of the scores in both modes, because in the stand-in mode they are the readings.

It also prints how much one reading varies: the sd, within a folder, of the stand-in or
level-probe readings' ``cpu_drift``. Nothing is fitted. Usage:

    python benchmarks/level_tracking.py out/validate out/demo-1 ...
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from loop import compare as C
from loop.level import LEVEL_WINDOW, level_of
from pipesim import engine as E
from pipesim import profile as P

SCHEDULES = ("gpipe", "1f1b")


def _fmt(v: list[float]) -> str:
    return f"{statistics.fmean(map(abs, v)):.2f}% (signed {statistics.fmean(v):+.2f}%, worst {max(map(abs, v)):.1f}%)"


def score(folder: Path) -> tuple[str, list[float], list[float], list[float]] | None:
    """(mode, profile errors, recalibrated errors, readings' cpu_drift) over the folder's non-default cells."""
    prof = P.load(folder / "profile.json")
    transport = E.Transport.for_profile(prof)
    recs = [json.loads(x) for x in (folder / "measured.jsonl").read_text().splitlines() if x.strip()]
    recs = [r for r in recs if not r.get("disturbed") and r["schedule"] in SCHEDULES]
    probes = folder / "levels.jsonl"
    sims: dict[tuple, float] = {}

    def sim(r: dict, level: float) -> float:
        key = (r["schedule"], r["network"], r["micro_batch_size"], r["batch_size"], level)
        if key not in sims:
            sims[key] = E.simulate(prof.compute_scaled(level), r["schedule"], r["micro_batch_size"], r["batch_size"],
                                   C.setting_of(r["network"]), transport=transport, steps=C.SIM_STEPS,
                                   record=False).step_time
        return sims[key]

    per: dict[str, list[tuple[float, float | None, dict]]] = {}
    if probes.exists():
        mode = "level probes"
        readings = [json.loads(x) for x in probes.read_text().splitlines() if x.strip()]
        drifts = [x["cpu_drift"] for x in readings if x.get("cpu_drift") and not x.get("disturbed")]
        for r in recs:
            per.setdefault(r["key"], []).append((r["median"], r.get("recal_s"), r))
    else:
        if not recs or "cpu_drift" not in recs[0]:
            return None
        mode = "stand-in"
        readings = []
        for r in recs:
            lv = level_of(readings, window=LEVEL_WINDOW)
            per.setdefault(r["key"], []).append((r["median"], None if lv is None else sim(r, lv), r))
            if r["network"].startswith("default") and r["micro_batch_size"] == 1 and r.get("cpu_drift"):
                readings.append({"cpu_drift": r["cpu_drift"]})
        drifts = [x["cpu_drift"] for x in readings]
    e_prof, e_recal = [], []
    for runs in per.values():
        r = runs[0][2]
        if r["network"].startswith("default") or any(x is None for _, x, _ in runs):
            continue
        meas = statistics.median(m for m, _, _ in runs)
        e_prof.append(100 * (sim(r, 1.0) / meas - 1))
        e_recal.append(100 * (statistics.median(x for _, x, _ in runs if x is not None) / meas - 1))
    return (mode, e_prof, e_recal, drifts) if e_prof else None


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip())
        return 2
    every: dict[str, tuple[list[float], list[float]]] = {}
    print("| folder | mode | cells | readings (sd) | profile alone | recalibrated |")
    print("|---|---|---:|---|---|---|")
    for f in map(Path, argv):
        got = score(f)
        if got is None:
            print(f"| {f} | no usable runs | | | | |")
            continue
        mode, ep, er, drifts = got
        sd = f"{len(drifts)} ({100 * statistics.pstdev(drifts):.1f}%)" if len(drifts) > 1 else str(len(drifts))
        print(f"| {f} | {mode} | {len(ep)} | {sd} | {_fmt(ep)} | {_fmt(er)} |")
        a, b = every.setdefault(mode, ([], []))
        a += ep
        b += er
    for mode, (a, b) in every.items():
        print(f"all {len(a)} cells ({mode}): profile alone {_fmt(a)}; recalibrated {_fmt(b)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
