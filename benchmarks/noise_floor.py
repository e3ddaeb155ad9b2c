"""The machine's noise floor for a validation's claim: how large an error would a perfect
model show, from launch-to-launch noise alone?

Each cell of ``pipesim validate`` is measured by a few launches (2, and a third where the
first two are more than 4% apart) and the cell's measured step time is their median. On
a VM one launch differs from the next by several percent, with little correlation
between consecutive launches (docs/validate.md), so even a model that predicted each
cell's true mean step time exactly would show errors. This script

1. estimates the per-launch spread from the kept folders: for every cell measured at
   least twice, the relative difference of its first two launches (their sd / sqrt 2);
2. draws launches from that spread (normal; :mod:`loop.noise`) with the validation's
   protocol and with more launches per cell, and prints the MAPE and the worst cell of a
   perfect model over a grid of ``--cells`` cells (60: the seed grid).

Nothing is fitted to predictions; step times are only compared with each other.

    python benchmarks/noise_floor.py benchmarks/results/validation-2026-11-28*/*
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

from loop import noise as NF
from loop.validate import load_runs


def cell_runs(folders: list[str]) -> list[list[float]]:
    """Each cell's counted launches (step times, in run order) over the folders."""
    out = []
    for f in folders:
        for by_run in load_runs(Path(f) / "measured.jsonl").values():
            out.append([by_run[i]["median"] for i in sorted(by_run)])
    return out


def validate_protocol(sd: float, cells: int, trials: int, seed: int, tiebreak: float = 0.04) -> tuple[float, float]:
    """(mean MAPE, mean worst cell) of a perfect model under validate's own protocol: 2 launches,
    a third where they are over ``tiebreak`` apart, the median."""
    rng = random.Random(seed)
    mapes, worsts = [], []
    for _ in range(trials):
        errs = []
        for _ in range(cells):
            xs = [1.0 + rng.gauss(0.0, sd), 1.0 + rng.gauss(0.0, sd)]
            if (max(xs) - min(xs)) / min(xs) > tiebreak:
                xs.append(1.0 + rng.gauss(0.0, sd))
            errs.append(abs(1.0 / statistics.median(xs) - 1.0))
        mapes.append(statistics.fmean(errs))
        worsts.append(max(errs))
    return statistics.fmean(mapes), statistics.fmean(worsts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--cells", type=int, default=60, help="cells per validation (default 60, the seed grid)")
    ap.add_argument("--trials", type=int, default=2000, help="validations drawn per protocol")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    est = NF.launch_sd(cell_runs(a.folders))
    if est is None:
        print(f"fewer than {NF.MIN_CELLS} cells measured twice in these folders: too few to estimate the spread")
        return 1
    sd, pairs = est
    print(f"{pairs} cells measured at least twice: one launch's sd {100 * sd:.2f}%\n")
    print(f"A perfect model over {a.cells} cells, {a.trials} grids drawn per row (mean over them; for fixed "
          "launches also the worst cell's 10th-90th percentile):\n")
    print("| launches per cell | MAPE | worst cell |")
    print("|---|---:|---:|")
    mape, worst = validate_protocol(sd, a.cells, a.trials, a.seed)
    print(f"| 2, a 3rd if over 4% apart (validate's) | {100 * mape:.1f}% | {100 * worst:.1f}% |")
    for n in (3, 5, 7):
        f = NF.floor(sd, [n] * a.cells, trials=a.trials, seed=a.seed)
        print(f"| {n} | {100 * f.mape:.1f}% | {100 * f.worst:.1f}% ({100 * f.worst_p10:.1f}-{100 * f.worst_p90:.1f}%) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
