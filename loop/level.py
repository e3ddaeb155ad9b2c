"""Quick recalibration during a validation: the machine's CPU level from short runtime re-probes.

The profile is measured once, before the runs; the machine then drifts. A run's CPU per
step against the profile's (its ``cpu_drift``, :func:`loop.validate.run_speed`) moved by
several percent between validations of the same day (the median over a validation's runs
from +0.2% to +7.8% over the eight seed validations of 2026-11-28 that recorded it), and nothing measured *outside* the runtime followed it: the
speed probe and the compute probe before each run did not (``benchmarks/drift_tracking.py``).

A *level probe* is what the calibration's overhead probe launches, once, on the default
network: the runtime with the cell's schedule at the grid's smallest micro-batch size
and 4 micro-batches per step (:func:`calibrate.overhead.microbatches_for`), 12 steps
after 2 warm-up steps. Its ranks' CPU per step over the profile's, median over ranks
(the same ``cpu_drift`` as a run's), is one reading of the machine's level. It never looks
at a step time. One reading varies by about 4% (sd of single default-network runs'
``cpu_drift`` within a validation), so the level is the median of the last
:data:`LEVEL_WINDOW` readings that were not disturbed by other processes.

``pipesim validate`` and ``demo`` with ``--level-probe`` take one reading before each network setting of a pass
(each change of schedule or setting in the order the cells are measured), and simulate
each run of a cell from the profile scaled to the level at that moment
(:meth:`pipesim.profile.Profile.compute_scaled`): the run's *recalibrated* prediction,
``recal_s``. A cell's is the median of its runs'. The readings are kept, one line each,
in ``<out>/levels.jsonl`` (a resumed validation continues from them); each reading's run
folder under ``<out>/levels/``.

Scored offline before it was built (``benchmarks/level_tracking.py``), with the
default-network micro-batch-1 runs of kept folders standing in for re-probes (the median
of those measured before each run): over 576 cells of 20 folders of 2026-11-28 the mean
absolute error went from 3.67% to 3.28%, better in the folders with a large step between
calibration and the runs (5.4% to 2.2%, 5.0% to 3.1%) and worse in some quiet ones (2.7% to
3.2%). On its first window (a seed validation and three demos, 90 non-default cells) it
was even, 3.24% against 3.27%, so it is off by default. The profile-alone prediction
stays the last line; the recalibrated one is printed before it.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from pipesim import engine as E
from pipesim import network as N
from pipesim import profile as P
from pipesim import schedule as S
from pipesim.util import append_jsonl, read_jsonl

LEVEL_WINDOW = 9   # readings in the level's median: about 5 minutes of a seed validation
LEVEL_STEPS = 12
LEVEL_WARMUP = 2
LEVEL_MICROBATCHES = 4   # as the calibration's overhead probe


def level_of(readings: list[dict], upto: int | None = None, window: int = LEVEL_WINDOW) -> float | None:
    """The level after the first ``upto`` readings (all: None): the median ``cpu_drift`` of the
    last ``window`` of them not flagged ``disturbed`` (None: no such reading)."""
    kept = [r["cpu_drift"] for r in readings[:upto] if not r.get("disturbed") and r.get("cpu_drift")]
    return statistics.median(kept[-window:]) if kept else None


class LevelProbe:
    """The level probes of one validation folder (``<out>/levels.jsonl``)."""

    def __init__(self, out: Path, model: str, ranks: int, profile: P.Profile, transport: E.Transport,
                 micro_batch_size: int, *, stages_per_rank: int = 1, timeout_s: float = 300,
                 window: int = LEVEL_WINDOW):
        self.out, self.model, self.ranks, self.profile = Path(out), model, ranks, profile
        self.transport, self.mbs, self.v, self.timeout_s, self.window = (transport, micro_batch_size,
                                                                          stages_per_rank, timeout_s, window)
        self.path = self.out / "levels.jsonl"
        self.readings: list[dict] = list(read_jsonl(self.path))
        self._sims: dict[tuple, float] = {}

    def level(self) -> float | None:
        return level_of(self.readings, window=self.window)

    def measure(self, schedule: str, before: str) -> dict:
        """One reading with ``schedule`` on the default network, appended to ``levels.jsonl``
        (``before``: the cell measured next, for the record)."""
        from calibrate.overhead import microbatches_for
        from loop.validate import disturbed, run_speed
        from runtime.launch import run_local

        virtual = schedule in S.VIRTUAL
        v = self.v if virtual else 1
        n = microbatches_for(schedule, self.ranks, LEVEL_MICROBATCHES, v if virtual else None)
        i = len(self.readings)
        folder = self.out / "levels" / f"{i:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        res_path = folder / "results.json"
        argv = ["--model", self.model, "--schedule", schedule, "--micro-batch-size", str(self.mbs),
                "--batch-size", str(self.mbs * n), "--steps", str(LEVEL_STEPS), "--warmup", str(LEVEL_WARMUP),
                "--out", str(res_path), "--op-timeout", str(max(10.0, self.timeout_s / 2)),
                *(["--stages-per-rank", str(v)] if virtual else [])]
        t0 = time.time()
        launched = run_local("runtime", argv, self.ranks, network=None, timeout_s=self.timeout_s,
                             log_dir=folder / "logs", echo=False)
        res = json.loads(res_path.read_text())
        speed = run_speed(self.profile, res, schedule, self.mbs, self.mbs * n, N.parse_grid("default")[0],
                          self.transport, v)
        rec = {"index": i, "time": t0, "wall_s": time.time() - t0, "schedule": schedule, "micro_batch_size": self.mbs,
               "microbatches": n, "steps": LEVEL_STEPS, "before": before, "results": str(res_path.relative_to(self.out)),
               "usage": launched.usage, **{k: speed[k] for k in ("cpu_drift", "cpu_factors", "speed_basis") if k in speed}}
        why = disturbed(launched.usage or {})
        if why:
            rec["disturbed"] = why
        append_jsonl(self.path, rec, fsync=True)
        self.readings.append(rec)
        return rec

    def predict(self, schedule: str, net: N.NetworkSetting, mbs: int, batch: int, steps: int,
                stages_per_rank: int = 1) -> tuple[float, float, int] | None:
        """(level, the cell simulated from the profile at that level, readings so far), or None
        before any usable reading."""
        lv = self.level()
        if lv is None:
            return None
        key = (schedule, net.label, mbs, batch, lv)
        if key not in self._sims:
            self._sims[key] = E.simulate(self.profile.compute_scaled(lv), schedule, mbs, batch, net,
                                         transport=self.transport, steps=steps, record=False,
                                         stages_per_rank=stages_per_rank if schedule in S.VIRTUAL else None).step_time
        return lv, self._sims[key], len(self.readings)
