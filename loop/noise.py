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
  mean MAPE and worst cell over the grids, and the worst cell's 10th-90th percentile;
- given a target (a MAPE per group of cells, a schedule, and a worst cell), the share of
  those grids in which the perfect model meets it: the odds that launches as noisy as
  these let any model show the claim. ``validate`` and ``demo`` give theirs
  (:data:`TARGETS`, issue #11's targets on the 2-core VM).

It uses step times only to compare runs of a cell with each other, never with a prediction.
A comparison whose MAPE and worst cell are near the floor is as good as these launches can
show; one well above it has a model error to find (``pipesim explain``).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

MIN_CELLS = 10      # cells with two runs needed to estimate a launch's spread
TRIALS = 500
# (MAPE per schedule, worst cell), percent: what validate (the seed grid) and demo claim
TARGETS = {"validate": (3.0, 8.0), "demo": (5.0, 10.0)}


@dataclass(frozen=True)
class Floor:
    launch_sd: float      # one launch's relative sd (0.05: 5%)
    pairs: int            # cells it was estimated from
    mape: float           # a perfect model's mean MAPE over the drawn grids (fraction)
    worst: float          # its mean worst cell (fraction)
    worst_p10: float
    worst_p90: float
    cells: int = 0        # cells per drawn grid
    target: tuple[float, float] | None = None   # (MAPE per group, worst cell), percent
    meets: float | None = None   # share of the drawn grids in which the perfect model meets the target

    def line(self) -> str:
        """One line for a comparison's notes."""
        text = (f"Noise floor (a perfect model against launches as far apart as these, one launch's sd "
                f"{100 * self.launch_sd:.1f}% from {self.pairs} cells measured twice): MAPE about "
                f"{100 * self.mape:.1f}%, worst cell about {100 * self.worst:.1f}% ({100 * self.worst_p10:.1f}-"
                f"{100 * self.worst_p90:.1f}% in 8 of 10 grids of {self.cells} cells).")
        if self.target is not None and self.meets is not None:
            text += (f" It would meet the target (MAPE at most {self.target[0]:g}% per schedule, no cell over "
                     f"{self.target[1]:g}%) in {100 * self.meets:.0f}% of them.")
        return text

    def to_json(self) -> dict:
        """comparison.json's ``noise_floor``, in percent."""
        return {"launch_sd_pct": 100 * self.launch_sd, "cells_measured_twice": self.pairs,
                "mape_pct": 100 * self.mape, "worst_pct": 100 * self.worst,
                "worst_p10_pct": 100 * self.worst_p10, "worst_p90_pct": 100 * self.worst_p90,
                **({"target_pct": list(self.target), "perfect_model_meets_target_pct": 100 * self.meets}
                   if self.target is not None and self.meets is not None else {})}


def meets_target(mapes: Iterable[float], worst: float, target: tuple[float, float]) -> bool:
    """Whether every group's MAPE is at most ``target[0]`` and the worst cell at most
    ``target[1]`` (all in percent)."""
    return worst <= target[1] and all(m <= target[0] for m in mapes)


def launch_sd(runs: Sequence[Sequence[float]]) -> tuple[float, int] | None:
    """One launch's relative sd from each cell's first two runs, and the number of cells used
    (None: fewer than :data:`MIN_CELLS` cells with two positive runs)."""
    diffs = [(r[1] - r[0]) / ((r[0] + r[1]) / 2) for r in runs if len(r) >= 2 and r[0] > 0 and r[1] > 0]
    if len(diffs) < MIN_CELLS:
        return None
    return statistics.pstdev(diffs) / 2 ** 0.5, len(diffs)


def floor(sd: float, counts: Sequence[int], trials: int = TRIALS, seed: int = 0, pairs: int = 0,
          groups: Sequence[str] | None = None, target: tuple[float, float] | None = None) -> Floor:
    """A perfect model's errors over grids of ``len(counts)`` cells, cell ``i`` measured as the
    median of ``counts[i]`` launches of relative sd ``sd`` (deterministic for a ``seed``).

    ``target``: (MAPE, worst cell) in percent; the floor then also says in what share of the
    grids every group's MAPE (``groups[i]``: cell ``i``'s group, a schedule; default one
    group) is at most the first and no cell is over the second."""
    if sd < 0 or not counts or min(counts) < 1 or trials < 1:
        raise ValueError("floor needs sd >= 0, at least one cell, one run per cell and one trial")
    if groups is not None and len(groups) != len(counts):
        raise ValueError(f"floor needs one group per cell, got {len(groups)} for {len(counts)} cells")
    if target is not None and not (len(target) == 2 and all(x > 0 for x in target)):
        raise ValueError(f"a target is (MAPE, worst cell), both positive percentages, got {target!r}")
    return _floor(sd, tuple(counts), trials, seed, pairs, tuple(groups or [""] * len(counts)),
                  None if target is None else (float(target[0]), float(target[1])))


@lru_cache(maxsize=16)
def _floor(sd: float, counts: tuple[int, ...], trials: int, seed: int, pairs: int, groups: tuple[str, ...],
           target: tuple[float, float] | None) -> Floor:
    rng = random.Random(seed)
    mapes, worsts, met = [], [], 0
    members = [[i for i, g in enumerate(groups) if g == name] for name in dict.fromkeys(groups)]
    for _ in range(trials):
        errs = [abs(1.0 / max(statistics.median(1.0 + rng.gauss(0.0, sd) for _ in range(n)), 1e-9) - 1.0)
                for n in counts]
        mapes.append(statistics.fmean(errs))
        worsts.append(max(errs))
        if target is not None:
            met += meets_target((100 * statistics.fmean(errs[i] for i in idx) for idx in members), 100 * max(errs),
                                target)
    q = statistics.quantiles(worsts, n=10) if trials >= 2 else [worsts[0]] * 9
    return Floor(sd, pairs, statistics.fmean(mapes), statistics.fmean(worsts), q[0], q[-1], len(counts),
                 target, None if target is None else met / trials)


def floor_of(runs: Sequence[Sequence[float]], trials: int = TRIALS, groups: Sequence[str] | None = None,
             target: tuple[float, float] | None = None) -> Floor | None:
    """The floor of cells measured by ``runs`` (each cell's runs; None: too few to estimate);
    ``groups`` (one per cell) and ``target`` as for :func:`floor`."""
    est = launch_sd(runs)
    if est is None:
        return None
    kept = [i for i, r in enumerate(runs) if r]
    return floor(est[0], [len(runs[i]) for i in kept], trials=trials, pairs=est[1],
                 groups=None if groups is None else [groups[i] for i in kept], target=target)


def floor_line(runs: Sequence[Sequence[float]], groups: Sequence[str] | None = None,
               target: tuple[float, float] | None = None) -> str | None:
    """One line for a comparison's notes (None where the runs cannot show it)."""
    f = floor_of(runs, groups=groups, target=target)
    return None if f is None else f.line()
