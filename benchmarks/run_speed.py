"""How much of a prediction's miss is the machine's speed in the run? Scored offline on kept validations.

Every CPU run records each rank's process CPU time per step. Against what the profile
charges that rank per step (:func:`pipesim.context.cpu_per_step`), it is the run's speed:
a slow spell of the VM, or calibration's own error, makes the same work take more CPU.
This script simulates every run of the given validation or demo folders twice -- from
the profile alone (the prediction) and at the run's own speed
(:func:`pipesim.context.cpu_replay`) -- takes each cell's median over its runs, and prints
the MAPE of both per folder and over all cells. It also prints how well three measures
of the machine's speed follow the runs' measured / predicted step time (correlation over
runs): the run's CPU per step, the compute probe before the run (``compute_drift``) and
the speed probe (``drift_pct``), and a second table: the median CPU drift of each network
setting's runs per folder. Nothing is fitted; step times are only compared against.
A run's CPU per step comes from its record (``cpu_factors``, written since they exist),
its results file, or, where the run folders were not kept (``benchmarks/results/*``),
from the folder's ``run_cpu.json`` extracted from them.

    python benchmarks/run_speed.py out/validate out/demo-1 ...
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from loop import compare as C
from loop.validate import run_speed
from pipesim import context as CX
from pipesim import engine as E
from pipesim import profile as P
from pipesim.schedule import VIRTUAL


def _corr(xs: list[float | None], ys: list[float]) -> str:
    """The correlation over the runs that have the measure ``xs`` (None: not recorded)."""
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None]
    xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
    try:
        return f"{statistics.correlation(xs, ys):+.2f}" if len(xs) >= 3 else "-"
    except statistics.StatisticsError:   # a constant measure
        return "-"


def score(folder: Path) -> dict:
    prof = P.load(folder / "profile.json")
    transport = E.Transport.for_profile(prof)
    runs = [json.loads(line) for line in (folder / "measured.jsonl").read_text().splitlines() if line.strip()]
    kept = folder / "run_cpu.json"
    extracted = json.loads(kept.read_text())["runs"] if kept.exists() else {}

    def speed_of(r: dict) -> tuple[float, float] | None:
        """(the cell at the run's speed, its CPU drift): as recorded by the run (validate and demo
        since 2026-11-28, third session), else from run_cpu.json or the run's results file."""
        if "speed_replay_s" in r and "cpu_drift" in r:
            return r["speed_replay_s"], r["cpu_drift"]
        v = int(r["stages_per_rank"]) if r.get("stages_per_rank") else 1
        args = (prof, r["schedule"], r["micro_batch_size"], r["batch_size"], C.setting_of(r["network"]))
        if r.get("results") in extracted:
            cr = CX.cpu_replay(*args, extracted[r["results"]], transport=transport, steps=C.SIM_STEPS,
                               stages_per_rank=v if r["schedule"] in VIRTUAL else None)
            return cr.step_time, cr.drift
        if r.get("results") and (folder / r["results"]).exists():
            sp = run_speed(*args, json.loads((folder / r["results"]).read_text()), transport, v)
            return (sp["speed_replay_s"], sp["cpu_drift"]) if sp else None
        return None

    cells: dict[str, list[tuple[float, float, float, str]]] = {}
    plain_cache: dict[str, float] = {}
    by_net: dict[str, list[float]] = {}
    ratio: list[float] = []
    by_cpu: list[float | None] = []
    by_probe: list[float | None] = []
    by_numpy: list[float | None] = []
    counted = 0
    for r in runs:
        speed = None if r.get("disturbed") else speed_of(r)
        if speed is None:
            continue
        counted += 1
        at_speed, drift = speed
        if r["key"] not in plain_cache:
            v = int(r["stages_per_rank"]) if r.get("stages_per_rank") else None
            plain_cache[r["key"]] = E.simulate(prof, r["schedule"], r["micro_batch_size"], r["batch_size"],
                                               C.setting_of(r["network"]), transport=transport, steps=C.SIM_STEPS,
                                               record=False, stages_per_rank=v).step_time
        plain = plain_cache[r["key"]]
        cells.setdefault(r["key"], []).append((r["median"], plain, at_speed, r["schedule"]))
        by_net.setdefault(r["network"].split(" (")[0], []).append(drift - 1)
        ratio.append(r["median"] / plain - 1)
        by_cpu.append(drift - 1)
        by_probe.append(r["compute_drift"] - 1 if r.get("compute_drift") else None)
        by_numpy.append(r["drift_pct"] / 100 if r.get("drift_pct") is not None else None)
    errs: dict[str, dict[str, list[float]]] = {"profile": {}, "run speed": {}}
    for rs in cells.values():
        measured = statistics.median(x[0] for x in rs)
        for i, way in ((1, "profile"), (2, "run speed")):
            errs[way].setdefault(rs[0][3], []).append(100 * (statistics.median(x[i] for x in rs) - measured) / measured)
    return {"folder": str(folder), "runs": counted, "cells": len(cells), "errs": errs,
            "corr": (_corr(by_cpu, ratio), _corr(by_probe, ratio), _corr(by_numpy, ratio)), "by_net": by_net}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip())
        return 2
    every: dict[str, list[float]] = {"profile": [], "run speed": []}
    nets: dict[str, dict[str, list[float]]] = {}
    print("| folder | cells | prediction MAPE (worst) | at the run's speed MAPE (worst) "
          "| corr: run CPU | compute probe | speed probe |")
    print("|---|---:|---|---|---:|---:|---:|")
    for f in argv:
        s = score(Path(f))
        cols = []
        for way in ("profile", "run speed"):
            e = s["errs"][way]
            every[way] += [abs(x) for v in e.values() for x in v]
            cols.append(" / ".join(f"{k} {statistics.fmean(map(abs, v)):.1f}%" for k, v in e.items())
                        + f" ({max(abs(x) for v in e.values() for x in v):.1f}%)")
        for net, v in s["by_net"].items():
            nets.setdefault(net, {})[f] = v
        c = s["corr"]
        print(f"| {f} | {s['cells']} | {cols[0]} | {cols[1]} | {c[0]} | {c[1]} | {c[2]} |")
    for way, v in every.items():
        q = statistics.quantiles(v, n=10)[-1] if len(v) >= 2 else v[0]
        print(f"all {len(v)} cells, {way}: mean absolute error {statistics.fmean(v):.2f}%, p90 {q:.1f}%, "
              f"worst {max(v):.1f}%")
    print("\nCPU drift (the runs' CPU per step over the profile's, median over the runs; + is slower) per network "
          "setting, one column per folder in the order given, then all runs:\n")
    print("| network | " + " | ".join(str(i + 1) for i in range(len(argv))) + " | all runs |")
    print("|---|" + "---:|" * (len(argv) + 1))
    for net, per in nets.items():
        cols = [f"{100 * statistics.median(per[f]):+.1f}%" if f in per else "" for f in argv]
        flat = [x for v in per.values() for x in v]
        print(f"| {net} | " + " | ".join(cols) + f" | {100 * statistics.median(flat):+.1f}% ({len(flat)}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
