"""The noise floor of a comparison: the errors a perfect model would show against these runs.

A cell's measured step time is the median of a few launches, and on a shared or virtual
machine one launch differs from the next by several percent. So even a model that
predicted every cell's true mean exactly would miss some cells by that noise; over a
grid of 60 cells the worst of them is several times the typical launch spread. The
floor is estimated from the runs themselves:

- the spread of one launch: over the cells with at least two runs, the relative
  difference of their first two (``(b - a) / mean``), whose sd over cells is sqrt 2 times
  one launch's sd (the two launches are independent draws; their order alternates);
- the floor: ``trials`` grids drawn with that sd (normal), each cell with its own number
  of runs and their median as the measured value, against a perfect prediction. The
  mean MAPE and worst cell over the grids, and the worst cell's 10th-90th percentile.

It uses step times only to compare runs of a cell with each other, never with a prediction.
A comparison whose MAPE and worst cell are near the floor is as good as these launches can
show; one well above it has a model error to find (``pipesim explain``).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

MIN_CELLS = 10      # cells with two runs needed to estimate a launch's spread
TRIALS = 500


@dataclass(frozen=True)
class Floor:
    launch_sd: float      # one launch's relative sd (0.05: 5%)
    pairs: int            # cells it was estimated from
    mape: float           # a perfect model's mean MAPE over the drawn grids (fraction)
    worst: float          # its mean worst cell (fraction)
    worst_p10: float
    worst_p90: float
    cells: int = 0        # cells per drawn grid

    def line(self) -> str:
        """One line for a comparison's notes."""
        return (f"Noise floor (a perfect model against launches as far apart as these, one launch's sd "
                f"{100 * self.launch_sd:.1f}% from {self.pairs} cells measured twice): MAPE about "
                f"{100 * self.mape:.1f}%, worst cell about {100 * self.worst:.1f}% ({100 * self.worst_p10:.1f}-"
                f"{100 * self.worst_p90:.1f}% in 8 of 10 grids of {self.cells} cells).")

    def to_json(self) -> dict:
        """comparison.json's ``noise_floor``, in percent."""
        return {"launch_sd_pct": 100 * self.launch_sd, "cells_measured_twice": self.pairs,
                "mape_pct": 100 * self.mape, "worst_pct": 100 * self.worst,
                "worst_p10_pct": 100 * self.worst_p10, "worst_p90_pct": 100 * self.worst_p90}


def launch_sd(runs: Sequence[Sequence[float]]) -> tuple[float, int] | None:
    """One launch's relative sd from each cell's first two runs, and the number of cells used
    (None: fewer than :data:`MIN_CELLS` cells with two positive runs)."""
    diffs = [(r[1] - r[0]) / ((r[0] + r[1]) / 2) for r in runs if len(r) >= 2 and r[0] > 0 and r[1] > 0]
    if len(diffs) < MIN_CELLS:
        return None
    return statistics.pstdev(diffs) / 2 ** 0.5, len(diffs)


def floor(sd: float, counts: Sequence[int], trials: int = TRIALS, seed: int = 0, pairs: int = 0) -> Floor:
    """A perfect model's errors over grids of ``len(counts)`` cells, cell ``i`` measured as the
    median of ``counts[i]`` launches of relative sd ``sd`` (deterministic for a ``seed``)."""
    if sd < 0 or not counts or min(counts) < 1 or trials < 1:
        raise ValueError("floor needs sd >= 0, at least one cell, one run per cell and one trial")
    return _floor(sd, tuple(counts), trials, seed, pairs)


@lru_cache(maxsize=16)
def _floor(sd: float, counts: tuple[int, ...], trials: int, seed: int, pairs: int) -> Floor:
    rng = random.Random(seed)
    mapes, worsts = [], []
    for _ in range(trials):
        errs = [abs(1.0 / max(statistics.median(1.0 + rng.gauss(0.0, sd) for _ in range(n)), 1e-9) - 1.0)
                for n in counts]
        mapes.append(statistics.fmean(errs))
        worsts.append(max(errs))
    q = statistics.quantiles(worsts, n=10) if trials >= 2 else [worsts[0]] * 9
    return Floor(sd, pairs, statistics.fmean(mapes), statistics.fmean(worsts), q[0], q[-1], len(counts))


def floor_of(runs: Sequence[Sequence[float]], trials: int = TRIALS) -> Floor | None:
    """The floor of cells measured by ``runs`` (each cell's runs; None: too few to estimate)."""
    est = launch_sd(runs)
    if est is None:
        return None
    return floor(est[0], [len(r) for r in runs if r], trials=trials, pairs=est[1])


def floor_line(runs: Sequence[Sequence[float]]) -> str | None:
    """One line for a comparison's notes (None where the runs cannot show it)."""
    f = floor_of(runs)
    return None if f is None else f.line()
