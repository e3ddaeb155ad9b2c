"""The runtime's own CPU time per forward or backward, measured by CPU accounting.

The compute times in a profile are measured alone, one rank at a time. A rank of the
runtime spends more CPU than that: posting and completing messages, copying tensors,
its watcher and gloo threads, and (where ranks share a core, as on the local testbed)
cache refills after the other rank ran. :func:`probe` runs the real runtime for a few
steps of ``probe_microbatches`` micro-batches per micro-batch size and schedule on the
default network, reads each rank's process CPU time per step (all its threads), and sets

    overhead_s = (CPU per step - m * (forward_s + backward_s) - optimizer_s) / (2 m)

for every stage, micro-batch size and schedule (at least 0), in
``overhead_by_schedule_s``; ``overhead_s`` keeps GPipe's. The two differ: at
micro-batch 1, 1F1B's ranks spent 5-9% less CPU per step than GPipe's (probably
fewer activations alive at once). The runs are calibration runs on the default network, and only CPU time is used,
never their step times. They run ``probe_microbatches`` (4) micro-batches, so at
micro-batch 1 their batch is the validation's batch 4. Part of the excess is per step,
not per action (zero_grad, bookkeeping): with 3 micro-batches it was spread over 6
actions instead of 8, and GPipe's micro-batch-1 cells came out 5.3% slow on average
(against +2.2% and -2.0% with 4). Calibrations differ by a few ms per step in this
excess anyway (the machine drifts between the compute and the probe runs), so it is not
split into per-step and per-action parts. Each cell's CPU per step is the median of
``launches`` (3) interleaved launches: one launch of the same configuration measured
up to 13% more or less CPU per step than another.

Each local launch also writes the runtime's trace, and the same excess is estimated a
second way, from wall time in context (:func:`pipesim.context.excess_per_action`: each
computation's duration plus the rank's own time before it, with the time its core spent
on the other rank pinned there taken out), recorded beside the CPU figure in
``raw.overhead_probe`` (``trace_overhead_s``). ``method`` picks which of the two the
profile's ``overhead_by_schedule_s`` carries: ``"cpu"`` (the default) or ``"trace"``.
Under torchrun (``run=``) there is no trace, and the CPU figure is used.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from pipesim.profile import Profile

# What the probe records as its method (the module docstring says why)
METHOD = ("short runs of the real runtime on the default network, probe_microbatches micro-batches per step, "
          "per micro-batch size and schedule; each rank's process CPU time per step (all threads), median of "
          "interleaved launches; overhead_s = (CPU per step - m * (forward_s + backward_s) - optimizer_s) / (2 m), "
          "at least 0, per stage, micro-batch size and schedule")


METHODS = ("cpu", "trace")
TRACE_METHOD = ("the same launches' traces: each rank's mean per step of its computations' durations plus its own time "
                "before each (not waiting for data), with the time its core ran the other rank pinned there taken out "
                "(pipesim.context); overhead = (that - m * (forward_s + backward_s) - optimizer_s) / (2 m), at least 0, "
                "median of the launches")


def probe(prof: Profile, ranks: int, model: str, micro_batch_sizes, *, probe_microbatches: int = 4, steps: int = 12,
          timeout_s: float = 300, echo: bool = False, schedules=("gpipe", "1f1b"), launches: int = 3,
          run=None, method: str = "cpu") -> Profile:
    """``prof`` with ``overhead_s`` and ``overhead_by_schedule_s`` probed, and the raw figures in ``raw.overhead_probe``.

    ``run(schedule, micro_batch_size, batch_size, steps)``, if given, runs one cell and returns
    the runtime's results dict, instead of a local launch (under torchrun: calibrate/cluster.py)."""
    from pipesim.context import excess_per_action
    from pipesim.trace import read_csv
    from runtime.launch import run_local

    if method not in METHODS:
        raise ValueError(f"overhead probe method must be one of {', '.join(METHODS)}, got {method!r}")
    warmup = 2
    raw = {"method": METHOD, "trace_method": TRACE_METHOD, "used": method, "probe_microbatches": probe_microbatches,
           "steps": steps, "schedules": list(schedules), "launches": launches, "runs": {}}
    cpus: dict[tuple[str, int], list[list[float]]] = {}
    traced: dict[tuple[str, int], list[dict[int, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="pipesim-overhead-") as tmp:
        # launches interleaved over the cells, so that a slow spell lands on one launch of a cell
        for i in range(launches):
            for m in micro_batch_sizes:
                for schedule in schedules:
                    out = Path(tmp) / f"{schedule}_mbs{m}_{i}.json"
                    if run is not None:
                        res = run(schedule, m, m * probe_microbatches, steps)
                        cpus.setdefault((schedule, m), []).append(
                            [pr["cpu_per_step"]["median"] for pr in sorted(res["per_rank"], key=lambda pr: pr["rank"])])
                        continue
                    trace = out.with_suffix(".csv")
                    run_local("runtime", ["--model", model, "--schedule", schedule, "--micro-batch-size", str(m),
                                          "--batch-size", str(m * probe_microbatches), "--steps", str(steps),
                                          "--warmup", str(warmup), "--out", str(out), "--trace", str(trace)],
                              ranks, timeout_s=timeout_s, log_dir=Path(tmp) / f"logs_{schedule}_{m}_{i}", echo=echo)
                    res = json.loads(out.read_text())
                    if trace.exists():   # (a launch stand-in in the tests may write none)
                        traced.setdefault((schedule, m), []).append(
                            excess_per_action(read_csv(trace), prof, m, probe_microbatches, warmup))
                    per_rank = sorted(res["per_rank"], key=lambda pr: pr["rank"])
                    cpus.setdefault((schedule, m), []).append([pr["cpu_per_step"]["median"] for pr in per_rank])
    stages = list(prof.stages)
    for (schedule, m), runs in cpus.items():
        per = {}
        for r in range(len(runs[0])):
            stage = stages[r]
            c = stage.compute[m]
            solo = probe_microbatches * (c.forward_s + c.backward_s) + stage.optimizer_s
            cpu = statistics.median(run[r] for run in runs)
            oh = cpu_oh = max(0.0, (cpu - solo) / (2 * probe_microbatches))
            tr = traced.get((schedule, m))
            trace_oh = statistics.median(t[r] for t in tr) if tr else None
            if method == "trace" and trace_oh is not None:
                oh = trace_oh
            c = replace(c, overhead_by_schedule_s={**(c.overhead_by_schedule_s or {}), schedule: oh},
                        overhead_s=oh if schedule == schedules[0] else c.overhead_s)
            stages[r] = replace(stage, compute={**stage.compute, m: c})
            per[str(r)] = {"cpu_per_step_s": cpu, "cpu_per_step_launches_s": [run[r] for run in runs],
                           "solo_compute_s": solo, "overhead_s": oh, "cpu_overhead_s": cpu_oh,
                           "trace_overhead_s": trace_oh,
                           "trace_overhead_launches_s": [t[r] for t in tr] if tr else None}
        raw["runs"].setdefault(schedule, {})[str(m)] = per
    desc = prof.description + (f"; runtime overhead per action probed ({probe_microbatches} micro-batches, "
                               f"{' and '.join(schedules)})")
    return virtual_overhead(replace(prof, stages=tuple(stages), raw={**(prof.raw or {}), "overhead_probe": raw},
                                    description=desc))


def virtual_overhead(prof: Profile) -> Profile:
    """``prof`` with each rank's probed overhead per action (``overhead_s``,
    ``overhead_by_schedule_s``) also on each of its ``virtual_stages``: the overhead belongs
    to the rank's runtime, not to a stage, and the simulator adds it to every forward and
    backward of every virtual stage (without it a measured virtual stage would carry none)."""
    stages = []
    for st in prof.stages:
        if st.virtual_stages is not None:
            vs = tuple({m: replace(c, overhead_s=st.compute[m].overhead_s,
                                   overhead_by_schedule_s=st.compute[m].overhead_by_schedule_s)
                        if m in st.compute else c for m, c in part.items()} for part in st.virtual_stages)
            st = replace(st, virtual_stages=vs)
        stages.append(st)
    return replace(prof, stages=tuple(stages))
