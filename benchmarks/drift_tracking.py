"""Does tracking the machine's speed make predictions better? Scored offline on kept validations.

Before every run, ``pipesim validate`` / ``demo`` record two probes of the machine
against the same probes right after calibration: ``drift_pct`` (a numpy loop in a
core's cache, ``runtime/speed.py``) and ``compute_drift`` (each rank's stage of the real
model, forward and backward at the cell's micro-batch size, on its core,
``calibrate/drift.py``). A prediction that tracks the machine would scale the profile's
compute by one of them (``Profile.compute_scaled``) before simulating the run's cell.

This script simulates every run of a validation or demo folder three ways -- from the
profile alone, scaled by ``compute_drift``, scaled by ``1 + drift_pct / 100`` -- takes each
cell's median over its runs, and prints the MAPE of each beside the others, and how well
each probe follows the run's own compute (the correlation, over runs, of the probe with
the replay over the plain prediction: the run's compute in context against the
profile's). Nothing is fitted. Usage:

    python benchmarks/drift_tracking.py out/demo-1 out/demo-2 ...
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from loop import compare as C
from pipesim import engine as E
from pipesim import profile as P

WAYS = ("profile alone", "x compute probe", "x numpy probe")


def _corr(xs: list[float], ys: list[float]) -> float | None:
    try:
        return statistics.correlation(xs, ys) if len(xs) >= 3 else None
    except statistics.StatisticsError:   # a constant probe or effect
        return None


def score(folder: str | Path) -> dict:
    """MAPE per schedule of each way of predicting (``WAYS``), the worst cell of each, and
    the probes' correlations with the runs' compute in context."""
    folder = Path(folder)
    prof = P.load(folder / "profile.json")
    transport = E.Transport.for_profile(prof)
    runs = [json.loads(line) for line in (folder / "measured.jsonl").read_text().splitlines() if line.strip()]
    runs = [r for r in runs if not r.get("disturbed") and r.get("compute_drift") and r.get("drift_pct") is not None]
    if not runs:
        raise ValueError(f"{folder}/measured.jsonl has no runs with both probes (compute_drift, drift_pct)")
    cells: dict[str, list[tuple[float, list[float], dict]]] = {}
    effect, by_probe, by_numpy = [], [], []
    cache: dict[tuple, float] = {}

    def sim(p: P.Profile, factor: float, r: dict) -> float:
        key = (factor, r["key"])
        if key not in cache:
            cache[key] = E.simulate(p.compute_scaled(factor) if factor != 1.0 else p, r["schedule"],
                                    r["micro_batch_size"], r["batch_size"], C.setting_of(r["network"]),
                                    transport=transport, steps=C.SIM_STEPS, record=False,
                                    stages_per_rank=int(r.get("stages_per_rank") or 1)).step_time
        return cache[key]

    for r in runs:
        plain = sim(prof, 1.0, r)
        preds = [plain, sim(prof, r["compute_drift"], r), sim(prof, 1 + r["drift_pct"] / 100, r)]
        cells.setdefault(r["key"], []).append((r["median"], preds, r))
        if r.get("replay_s"):
            effect.append(r["replay_s"] / plain - 1)
            by_probe.append(r["compute_drift"] - 1)
            by_numpy.append(r["drift_pct"] / 100)
    out: dict = {"folder": str(folder), "runs": len(runs), "cells": len(cells), "ways": {}}
    for i, way in enumerate(WAYS):
        errs: dict[str, list[float]] = {}
        worst = (0.0, "")
        for key, rs in cells.items():
            measured = statistics.median(x[0] for x in rs)
            pred = statistics.median(x[1][i] for x in rs)
            e = 100 * (pred - measured) / measured
            errs.setdefault(rs[0][2]["schedule"], []).append(abs(e))
            if abs(e) > worst[0]:
                worst = (abs(e), key)
        out["ways"][way] = {"mape": {s: statistics.fmean(v) for s, v in errs.items()}, "worst_pct": worst[0],
                            "worst_cell": worst[1]}
    out["corr_compute_probe"] = _corr(by_probe, effect)
    out["corr_numpy_probe"] = _corr(by_numpy, effect)
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    print("| folder | runs | prediction | MAPE per schedule | worst cell |")
    print("|---|---:|---|---|---|")
    notes = []
    for folder in argv:
        s = score(folder)
        for way, w in s["ways"].items():
            mape = ", ".join(f"{k} {v:.1f}%" for k, v in w["mape"].items())
            print(f"| {folder} | {s['runs']} | {way} | {mape} | {w['worst_pct']:.1f}% ({w['worst_cell']}) |")
        c1, c2 = s["corr_compute_probe"], s["corr_numpy_probe"]
        notes.append(f"{folder}: correlation with the runs' compute in context (replay / plain prediction - 1): "
                     f"compute probe {'n/a' if c1 is None else f'{c1:+.2f}'}, "
                     f"numpy probe {'n/a' if c2 is None else f'{c2:+.2f}'}")
    print("\n" + "\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
