"""A short probe of each core's speed, to see the machine drift while measuring.

These machines are VMs: a core's speed moves over minutes (a pure compute loop was seen
to vary by 25% between 5-second windows), and compute right after an idle spell is
slower. :func:`speed_probe` times a fixed single-threaded numpy loop on each usable
core (pinned there for the probe), after a warm-up that wakes the core, and returns
milliseconds per loop. A validation takes one right after calibrating and one before
every measured run; the ratio of the two is the machine's drift, reported beside the
errors (it never feeds a prediction).
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

_N = 1 << 15  # elements per operation: fits in L2, single-threaded in numpy


def _loop(x: np.ndarray, reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        np.sin(x, out=x)
        x += 1.0
    return time.perf_counter() - t


def speed_probe(reps: int = 20, rounds: int = 7, cpus: list[int] | None = None) -> dict:
    """Milliseconds per probe loop on each core (median of ``rounds``), and their median."""
    usable = sorted(os.sched_getaffinity(0))
    cpus = usable if cpus is None else cpus
    x = np.random.default_rng(0).random(_N)
    per: dict[str, float] = {}
    try:
        for c in cpus:
            os.sched_setaffinity(0, {c})
            _loop(x, reps)  # wake the core up
            per[str(c)] = 1e3 * statistics.median(_loop(x, reps) for _ in range(rounds))
    finally:
        os.sched_setaffinity(0, usable)
    return {"ms_per_loop": per, "median_ms": statistics.median(per.values()), "reps": reps, "rounds": rounds,
            "time": time.time()}
