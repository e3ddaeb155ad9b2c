"""The machine's speed on the model's own compute, probed right before each measured run.

These VMs drift: a run's computations can all be 20-40% slower than the same cell's
computations a minute later (the 2026-11-28 demo-1 saw it on its first two cells), and
a numpy loop that fits in a core's cache (``runtime.speed``) did not see it. This
probe times what the runs compute: each rank's stage (the runtime's partition of the
model), one forward and one backward at the cell's micro-batch size, pinned to the
core the launcher pins that rank to, after one untimed turn that wakes the core.

A validation takes it once right after calibrating (the reference, per micro-batch
size) and again right before every run. The ratio of the two, the median over the
ranks, is the run's *compute drift*, recorded in ``measured.jsonl``. It feeds no
prediction: the profile scaled by it (:meth:`pipesim.profile.Profile.compute_scaled`)
predicted worse than the profile alone in every folder scored on 2026-11-28
(``benchmarks/drift_tracking.py``).
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from runtime.launch import placement
from runtime.model import build_stage, get_config

from .measure import Clock, StageBench


class ComputeProbe:
    """Each rank's stage of ``model`` over ``ranks``, timed on its own core (see the module docstring)."""

    def __init__(self, model: str, ranks: int, reps: int = 5, threads: int = 1):
        if reps < 1:
            raise ValueError(f"compute probe repeats must be at least 1, got {reps}")
        self.cfg = get_config(model)
        self.ranks, self.reps, self.threads = ranks, reps, threads
        self.cpus = placement(ranks)
        self.stages = [build_stage(self.cfg, ranks, r) for r in range(ranks)]
        self._benches: dict[tuple[int, int], StageBench] = {}
        self._clock = Clock(torch.device("cpu"))

    def _bench(self, rank: int, mbs: int) -> StageBench:
        key = (rank, mbs)
        if key not in self._benches:
            self._benches[key] = StageBench(self.stages[rank], self.cfg, mbs, torch.device("cpu"), torch.float32)
        return self._benches[key]

    def measure(self, mbs: int) -> dict:
        """Seconds of one forward plus one backward of each rank's stage (median of ``reps``)."""
        usable = sorted(os.sched_getaffinity(0))
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        per: list[float] = []
        try:
            for rank in range(self.ranks):
                bench = self._bench(rank, mbs)
                os.sched_setaffinity(0, {self.cpus[rank]})
                bench.run_once(self._clock)   # wake the core and the caches
                per.append(statistics.median(sum(bench.run_once(self._clock)) for _ in range(self.reps)))
                bench.stage.zero_grad(set_to_none=True)
        finally:
            os.sched_setaffinity(0, usable)
            torch.set_num_threads(threads)
        return {"per_rank_s": per, "mbs": mbs, "reps": self.reps, "time": time.time()}


def compute_drift(now: dict, reference: dict) -> float:
    """The median over ranks of probe-now / probe-reference (1.0: as fast as after calibration)."""
    a, b = now["per_rank_s"], reference["per_rank_s"]
    if len(a) != len(b) or not a:
        raise ValueError(f"compute probes of {len(a)} and {len(b)} ranks cannot be compared")
    return statistics.median(x / y for x, y in zip(a, b))
