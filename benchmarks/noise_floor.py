"""The machine's noise floor for a validation's claim: how large an error would a perfect
model show, from launch-to-launch noise alone?

Each cell of ``pipesim validate`` is measured by a few launches (2, and a third where the
first two are more than 4% apart) and the cell's measured step time is their median. On
a VM one launch differs from the next by several percent, with little correlation
between consecutive launches (docs/validate.md), so even a model that predicted each
cell's true mean step time exactly would show errors. This script

1. estimates the per-launch spread from the kept folders: for every cell measured at
   least twice, the relative difference of its first two launches (their sd / sqrt 2);
2. draws launches from that spread (normal, and the pairs' own differences resampled) with
   the validation's protocol and with more launches per cell, and prints the MAPE and the
   worst cell of a perfect model over a grid of ``--cells`` cells (60: the seed grid).

Nothing is fitted to predictions; step times are only compared with each other.

    python benchmarks/noise_floor.py benchmarks/results/validation-2026-11-28*/*
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path


def launch_pairs(folders: list[str]) -> list[float]:
    """Relative difference (b - a) / mean of each cell's first two counted launches."""
    out = []
    for f in folders:
        path = Path(f) / "measured.jsonl"
        if not path.exists():
            continue
        cells: dict[str, dict[int, float]] = {}
        for line in path.read_text().splitlines():
            r = json.loads(line) if line.strip() else None
            if r and not r.get("disturbed"):
                cells.setdefault(r["key"], {})[int(r.get("run", 0))] = r["median"]
        for runs in cells.values():
            if 0 in runs and 1 in runs:
                a, b = runs[0], runs[1]
                out.append((b - a) / ((a + b) / 2))
    return out


def measured(draw, launches: int | None, tiebreak: float = 0.04) -> float:
    """One cell's measured value (true value 1.0): ``launches`` launches and their median, or
    (None) the validation's protocol: 2 launches, a third where they are over ``tiebreak`` apart."""
    if launches is None:
        xs = [draw(), draw()]
        if (max(xs) - min(xs)) / min(xs) > tiebreak:
            xs.append(draw())
    else:
        xs = [draw() for _ in range(launches)]
    return statistics.median(xs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--cells", type=int, default=60, help="cells per validation (default 60, the seed grid)")
    ap.add_argument("--trials", type=int, default=2000, help="validations drawn per protocol")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    pairs = launch_pairs(a.folders)
    if len(pairs) < 10:
        print(f"only {len(pairs)} cells measured twice in these folders: too few to estimate the spread")
        return 1
    sd = statistics.pstdev(pairs) / 2 ** 0.5
    print(f"{len(pairs)} cells measured at least twice: one launch's sd {100 * sd:.2f}% "
          f"(first two launches differ by a median of {100 * statistics.median(map(abs, pairs)):.1f}%)\n")
    rng = random.Random(a.seed)
    # a launch's deviation: normal with that sd, or one launch's share of a kept pair's difference
    draws = {"normal": lambda: 1.0 + rng.gauss(0.0, sd),
             "resampled pairs": lambda: 1.0 + rng.choice(pairs) / 2 ** 0.5 * rng.choice((-1, 1))}
    print(f"A perfect model over {a.cells} cells, {a.trials} validations drawn per row "
          "(mean over them; in brackets the 10th-90th percentile):\n")
    print("| launches per cell | launch noise | MAPE | worst cell | cells over 8% |")
    print("|---|---|---:|---:|---:|")
    for launches in (None, 3, 5, 7):
        for name, draw in draws.items():
            mapes, worsts, over = [], [], []
            for _ in range(a.trials):
                errs = [abs(1.0 / measured(draw, launches) - 1.0) for _ in range(a.cells)]
                mapes.append(statistics.fmean(errs))
                worsts.append(max(errs))
                over.append(sum(e > 0.08 for e in errs))
            q = statistics.quantiles(worsts, n=10)
            what = "2, a 3rd if >4% apart (validate)" if launches is None else str(launches)
            print(f"| {what} | {name} | {100 * statistics.fmean(mapes):.1f}% | {100 * statistics.fmean(worsts):.1f}% "
                  f"({100 * q[0]:.1f}-{100 * q[-1]:.1f}%) | {statistics.fmean(over):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
