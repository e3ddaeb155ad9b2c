"""Would another estimate of the overhead from the same probe launches predict better?

Calibration's overhead probe (``calibrate/overhead.py``) launches each (schedule,
micro-batch size) 3 times and keeps every launch's CPU per step per rank in
``raw.overhead_probe.runs``. The profile takes the median of the launches (``median``).
This script rebuilds the gpipe and 1f1b overheads of each folder's profile with other
estimators of the same launches, simulates every measured cell, and prints each
estimator's MAPE per folder and over all cells:

- ``median``: each schedule's median of its launches (what calibration did until 2026-11-28's
  sixth session);
- ``median3``, ``median5``: the median of the first 3 or 5 launches only (what a probe with
  ``--overhead-launches 3`` or ``5`` would have measured; the launches go in passes over the
  cells, so the first ones are a whole shorter probe);
- ``min``: the fastest launch (the least disturbed one);
- ``mean``: their mean;
- ``pooled``: one value for gpipe and 1f1b, the median over both schedules' launches (what
  calibration does since, ``calibrate.overhead.POOLED``);
- ``linear``: per rank and schedule, a least-squares line in the micro-batch size
  through all its launches (smooths the noise of one cell with its neighbours).

Nothing is fitted to measured runs. Usage:

    python benchmarks/overhead_estimators.py benchmarks/results/validation-2026-11-28-s2/validate ...
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from loop import compare as C
from pipesim import engine as E
from pipesim import profile as P

ESTIMATORS = ("median", "median3", "median5", "min", "mean", "pooled", "linear")
SCHEDULES = ("gpipe", "1f1b")


def _per_action(rec: dict, cpu: float) -> float:
    return (cpu - rec["solo_compute_s"] - rec.get("step_overhead_s", 0.0)) / rec.get("actions_per_step", 8)


def estimate(runs: dict, how: str, schedule: str, mbs: int, rank: int) -> float | None:
    rec = runs.get(schedule, {}).get(str(mbs), {}).get(str(rank))
    if rec is None:
        return None
    launches = rec["cpu_per_step_launches_s"]
    if how in ("median3", "median5"):   # what a probe of 3 or 5 launches would have taken (its first ones)
        launches = launches[:int(how[-1])]
        how = "median"
    if how in ("median", "min", "mean"):
        cpu = {"median": statistics.median, "min": min, "mean": statistics.fmean}[how](launches)
        return max(0.0, _per_action(rec, cpu))
    if how == "pooled":
        both = [r for s in SCHEDULES if (r := runs.get(s, {}).get(str(mbs), {}).get(str(rank)))]
        return max(0.0, statistics.median(_per_action(r, x) for r in both for x in r["cpu_per_step_launches_s"]))
    pts = [(int(m), _per_action(r, x)) for m, per in runs.get(schedule, {}).items()
           if (r := per.get(str(rank))) for x in r["cpu_per_step_launches_s"]]
    a = np.array([[1.0, m] for m, _ in pts])
    coef = np.linalg.lstsq(a, np.array([y for _, y in pts]), rcond=None)[0]
    return max(0.0, float(coef[0] + coef[1] * mbs))


def with_overheads(prof: P.Profile, overhead) -> P.Profile:
    """``prof`` with each stage's ``overhead_by_schedule_s`` at each micro-batch size updated by
    ``overhead(stage index, micro-batch size, schedule)`` for every schedule of its probe
    (``raw.overhead_probe.runs``) where that returns a figure (None: the entry stays)."""
    runs = (prof.raw or {}).get("overhead_probe", {}).get("runs", {})
    stages = []
    for k, st in enumerate(prof.stages):
        comp = {}
        for m, c in st.compute.items():
            by = dict(c.overhead_by_schedule_s or {})
            for s in runs:
                x = overhead(k, m, s)
                if x is not None:
                    by[s] = x
            comp[m] = replace(c, overhead_by_schedule_s=by)
        stages.append(replace(st, compute=comp))
    return replace(prof, stages=tuple(stages))


def rebuilt(prof: P.Profile, how: str) -> P.Profile:
    runs = (prof.raw or {}).get("overhead_probe", {}).get("runs", {})
    return with_overheads(prof, lambda k, m, s: estimate(runs, how, s, m, k) if s in SCHEDULES else None)


def cells_of(folder: Path) -> dict[str, list[dict]]:
    """The folder's gpipe and 1f1b runs not flagged disturbed, per cell (``key``)."""
    cells: dict[str, list[dict]] = {}
    for line in (folder / "measured.jsonl").read_text().splitlines():
        r = json.loads(line) if line.strip() else None
        if r and r["schedule"] in SCHEDULES and not r.get("disturbed"):
            cells.setdefault(r["key"], []).append(r)
    return cells


def errors(prof: P.Profile, cells: dict[str, list[dict]], transport: E.Transport) -> list[tuple[str, int, float]]:
    """(schedule, micro-batch size, signed % error of the simulation against the median of the runs) per cell."""
    out = []
    for rs in cells.values():
        r = rs[0]
        sim = E.simulate(prof, r["schedule"], r["micro_batch_size"], r["batch_size"], C.setting_of(r["network"]),
                         transport=transport, steps=C.SIM_STEPS, record=False).step_time
        meas = statistics.median(x["median"] for x in rs)
        out.append((r["schedule"], r["micro_batch_size"], 100 * (sim - meas) / meas))
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip())
        return 2
    every: dict[str, list[float]] = {h: [] for h in ESTIMATORS}
    print("| folder | " + " | ".join(f"{h}: gpipe / 1f1b (worst)" for h in ESTIMATORS) + " |")
    print("|---|" + "---|" * len(ESTIMATORS))
    for f in map(Path, argv):
        prof = P.load(f / "profile.json")
        if not (prof.raw or {}).get("overhead_probe", {}).get("runs"):
            print(f"| {f} | no overhead probe in its profile |")
            continue
        transport = E.Transport.for_profile(prof)
        cells = cells_of(f)
        if not cells:
            print(f"| {f} | no gpipe or 1f1b cells |")
            continue
        cols = []
        for how in ESTIMATORS:
            errs: dict[str, list[float]] = {}
            for schedule, _, e in errors(rebuilt(prof, how), cells, transport):
                errs.setdefault(schedule, []).append(e)
            flat = [abs(x) for v in errs.values() for x in v]
            every[how] += flat
            cols.append(" / ".join(f"{statistics.fmean(map(abs, v)):.1f}%" for v in errs.values())
                        + f" ({max(flat):.1f}%)")
        print(f"| {f} | " + " | ".join(cols) + " |")
    for how, v in every.items():
        if v:
            print(f"all {len(v)} cells, {how}: mean absolute error {statistics.fmean(v):.2f}%, "
                  f"p90 {statistics.quantiles(v, n=10)[-1]:.1f}%, worst {max(v):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
