"""The runtime's own CPU time per computation (F, B, W), measured by CPU accounting.

The compute times in a profile are measured alone, one rank at a time. A rank of the
runtime spends more CPU than that: posting and completing messages, copying tensors,
its watcher and gloo threads, and (where ranks share a core, as on the local testbed)
cache refills after the other rank ran. :func:`probe` runs the real runtime for a few
steps of ``probe_microbatches`` micro-batches per micro-batch size and schedule on the
default network, reads each rank's process CPU time per step (all its threads), and sets

    overhead = (CPU per step - solo compute per step) / (computations per step)

for every stage, micro-batch size and schedule (at least 0), in
``overhead_by_schedule_s``; ``overhead_s`` keeps GPipe's. The solo compute and the
count are what the simulator charges that rank in one step (:func:`pipesim.engine.rank_work`,
read off the schedule's own actions), so that the simulator, adding the overhead to every
computation, reproduces the probed CPU per step:

* ``gpipe``, ``1f1b``: ``m * (forward_s + backward_s) + optimizer_s`` over ``2 m``;
* ``zbh1`` (probed when the calibration measured B and W, ``--split-backward``):
  ``m * (forward_s + backward_input_s + backward_weight_s) + optimizer_s`` over ``3 m``.
  Every rank counts 3 m, the first too: its B computes nothing (no input gradient) but is
  still an action of the runtime (it takes the received gradient), and its W runs the
  whole backward; the engine adds the overhead to that B and that W as to the others;
* ``interleaved1f1b`` with the calibration's V (probed when it measured virtual stages,
  ``--stages-per-rank V``): the sum over the rank's V virtual stages of
  ``m * (forward_s + backward_s)`` (their measured ``virtual_stages``, else the rank's
  compute split evenly, as the simulator takes them), plus ``optimizer_s``, over ``2 m V``.
  The overhead lands on the rank's compute and on each of its virtual stages
  (:func:`virtual_overhead`), where the simulator reads it.

**Per step and per computation: measured, not charged by default.** Part of the excess
does not grow with the computations (zero_grad, the step's bookkeeping, the end-of-step
hand-offs), so spread over the probe's ``2 m`` computations it undercharges, in CPU, a
cell with fewer micro-batches per step than the probe (at batch 4, micro-batch 4 runs
one, micro-batch 2 two, against the probe's four). With ``step_probe=True`` the probe also
launches GPipe with one micro-batch per step (the same number of launches, interleaved
with the others) and, per micro-batch size and rank, with ``e1`` and ``en`` the CPU per
step beyond the solo compute at 1 and at n micro-batches (``en``: the median over the
pooled schedules' launches):

    per computation  b = max(0, (en - e1) / (2 n - 2))
    per step         step_overhead_s = max(0, e1 - 2 b)

``step_overhead_s`` goes on the rank's stage (not on its virtual stages), and the
simulator adds it to the rank's optimizer step, once per step
(:func:`pipesim.engine.step_cpu`); every schedule's overhead per computation is then
``(CPU per step - solo compute - step_overhead_s) / (computations per step)``, so the
simulator reproduces the probed CPU per step at both counts. On the 2-core VM of
2026-11-28 it found 0-2.9 ms per step per rank (``raw.overhead_probe.step_runs``), and
the CPU the runs spent at micro-batch 4 matched it (their CPU drift fell from +2.4..+7.4%
to +0.6..+1.0%). But the step times did not follow: on the 108 GPipe and 1F1B cells of
the window that calibrated with it, the per-step charge scored 2.81% mean absolute error
against 2.67% for the same launches without it, and 3.12% spread over each cell's
computations (``benchmarks/step_overhead.py``); at micro-batch 4 the extra CPU is mostly
off the critical path. So it is off by default, and the field stays for profiles that
carry it.

:func:`schedules_for` says which schedules a calibration probes. interleaved1f1b splits
the micro-batches into ``max(1, m // ranks)`` equal rounds (torch's rule,
:func:`pipesim.schedule.check_shape`); where ``probe_microbatches`` does not split so, the
probe runs it with the next count that does (a multiple of the ranks always does) and
records the count per schedule (``raw.overhead_probe.microbatches``). With 4 it never
has to: 4 splits on every number of ranks.

GPipe and 1F1B get one overhead per action (:data:`POOLED`): the median over all launches
of both schedules of each launch's overhead per action. Each schedule's own figure stays
in ``raw.overhead_probe.runs`` (``cpu_overhead_s``, ``trace_overhead_s``). The probe's
difference between the two is noise that the runs do not share: over the 11 validation
folders of 2026-11-28 that recorded the runs' CPU (81 (folder, micro-batch size, rank)), the
probe's 1F1B / GPipe ratio of CPU per step spread by 5.6% (sd), and the runs' ratio did not
follow it (slope +0.01, correlation +0.03; the runs' own ratio +0.6%, sd 2.6%;
``benchmarks/probe_schedule_gap.py``). Pooled, the prediction's mean absolute error over
the 784 GPipe and 1F1B cells kept since 2026-11-26 fell from 4.03% to 3.85% (2026-11-28's
660: 3.69% to 3.45%; 2026-11-26's 124: 5.83% to 5.97%), and from 3.84% to 3.42% (worst 14.0%
to 12.2%) over the 288 cells measured after an earlier look (2026-11-28, third session) had
left it out (``benchmarks/overhead_estimators.py``, estimators ``median`` and ``pooled``).
On the three windows measured after it was adopted it was better in one (2.67% against
2.85%), worse in one (3.90% against 3.75%) and even in one; over all 936 kept cells it
scores 3.46% against 3.63% kept apart. ZB-H1 and
interleaved 1F1B count other actions and keep their own. The runs are calibration
runs on the default network, and only CPU time is used, never their step times. They run
``probe_microbatches`` (4) micro-batches, so at micro-batch 1 their batch is the
validation's batch 4. Part of the excess is per step, not per action (zero_grad,
bookkeeping): with 3 micro-batches it was spread over 6 actions instead of 8, and GPipe's
micro-batch-1 cells came out 5.3% slow on average (against +2.2% and -2.0% with 4).
Calibrations differ by a few ms per step in this excess anyway (the machine drifts between
the compute and the probe runs), so it is not split into per-step and per-action parts.
Each cell's CPU per step is the median of ``launches`` (:data:`OVERHEAD_LAUNCHES`, 3)
interleaved launches: one launch of the same configuration measured up to 13% more or less
CPU per step than another. Over the kept profiles of 2026-11-28, a launch's CPU per step
sat 5.4% (sd) from its cell's median, all ranks together (one rank apart from the others:
2%). 7 launches were tried (2026-11-28, fifth session): on the same runs, the median of
all 7 scored 3.44% mean absolute error against 3.31% for the median of their first 3
(``benchmarks/overhead_estimators.py``, 108 cells), and calibration took 5.6 min instead
of 3, so the default stayed 3. More launches of one cell did not help, pooling GPipe's and
1F1B's launches (above) did: the error was mostly in the difference between the schedules,
not in each cell's median.

Each local launch also writes the runtime's trace, and the same excess is estimated a
second way, from wall time in context (:func:`pipesim.context.excess_per_action`: each
computation's duration plus the rank's own time before it, with the time its core spent
on the other rank pinned there taken out, less the same solo compute, over the same count
of computations), recorded beside the CPU figure in ``raw.overhead_probe``
(``trace_overhead_s``). ``method`` picks which of the two the profile's
``overhead_by_schedule_s`` carries: ``"cpu"`` (the default) or ``"trace"``. Under
torchrun (``run=``) there is no trace, and the CPU figure is used.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipesim import schedule as S
from pipesim.context import without_step_overhead
from pipesim.profile import Profile

# What the probe records as its method (the module docstring says why)
METHOD = ("short runs of the real runtime on the default network, probe_microbatches micro-batches per step, "
          "per micro-batch size and schedule; each rank's process CPU time per step (all threads), median of "
          "interleaved launches; overhead = (CPU per step - solo compute per step) / (computations per step), "
          "at least 0, per stage, micro-batch size and schedule, with the solo compute and the count that the "
          "simulator charges the rank (pipesim.engine.rank_work): gpipe and 1f1b: "
          "overhead_s = (CPU per step - m * (forward_s + backward_s) - optimizer_s) / (2 m); "
          "zbh1: (CPU per step - m * (forward_s + backward_input_s + backward_weight_s) - optimizer_s) / (3 m), "
          "the first stage's B (no input gradient) and W (the whole backward) counted as on every stage; "
          "interleaved1f1b with v stages per rank: (CPU per step - sum over the rank's virtual stages of "
          "m * (forward_s + backward_s) - optimizer_s) / (2 m v)")


METHODS = ("cpu", "trace")
TRACE_METHOD = ("the same launches' traces: each rank's mean per step of its computations' durations plus its own time "
                "before each (not waiting for data), with the time its core ran the other rank pinned there taken out "
                "(pipesim.context); overhead = (that - solo compute per step) / (computations per step), the same solo "
                "compute and count as the CPU method, at least 0, median of the launches")

BASE_SCHEDULES = ("gpipe", "1f1b")
STEP_KEY = "gpipe@1"   # the step probe's launches (gpipe, one micro-batch per step)
STEP_METHOD = ("gpipe launched with one micro-batch per step beside the probe's count n, per micro-batch size; per rank, "
               "e1 and en: CPU per step less solo compute at 1 and at n micro-batches (en: median over the pooled "
               "schedules' launches); per computation b = max(0, (en - e1) / (2 n - 2)); per step "
               "step_overhead_s = max(0, e1 - 2 b), which the simulator adds to the rank's optimizer step; every "
               "schedule's overhead per computation is then (CPU per step - solo compute - step_overhead_s) / "
               "(computations per step)")
OVERHEAD_LAUNCHES = 3   # launches per (schedule, micro-batch size); the profile takes their median
POOLED = BASE_SCHEDULES  # schedules given one overhead per action, from all their launches (the module docstring says why)
POOL_METHOD = ("one overhead per action for these schedules, per stage and micro-batch size: the median over all "
               "their launches of each launch's overhead per action, at least 0 (the per-schedule figures stay in "
               "cpu_overhead_s / trace_overhead_s)")


def schedules_for(split_backward: bool = False, stages_per_rank: int = 1) -> tuple[str, ...]:
    """The schedules a calibration probes: gpipe and 1f1b always; zbh1 when it measured the
    split backward (``--split-backward``); interleaved1f1b when it measured virtual stages
    (``--stages-per-rank`` V > 1)."""
    out = list(BASE_SCHEDULES)
    if split_backward:
        out += [s for s in S.SPLIT_BACKWARD if s in S.RUNTIME_SCHEDULES]
    if stages_per_rank > 1:
        out += [s for s in S.VIRTUAL if s in S.RUNTIME_SCHEDULES]
    return tuple(out)


def microbatches_for(schedule: str, ranks: int, wanted: int, stages_per_rank: int | None = None) -> int:
    """``wanted`` micro-batches if ``schedule`` runs them on ``ranks`` ranks, else the next count
    that it does (interleaved1f1b's rounds rule; a multiple of the ranks always passes)."""
    m = wanted
    while True:
        try:
            S.check_shape(schedule, ranks, m, stages_per_rank)
            return m
        except ValueError:
            if m >= wanted + ranks:   # past a multiple of the ranks: the refusal is not the rounds rule
                raise
            m += 1


def check_launches(launches) -> int:
    """``launches`` if it is a whole number from 1 to 50, else ``ValueError`` naming the flag."""
    if not isinstance(launches, int) or isinstance(launches, bool) or not 1 <= launches <= 50:
        raise ValueError(f"--overhead-launches must be a whole number from 1 to 50, got {launches!r}")
    return launches


def _compute_cpu(into: dict, key: tuple[str, int], res: dict) -> None:
    """Add a launch's CPU per step inside the computations per rank (``compute_cpu_per_step`` in
    its results; runtimes before it report none, and then nothing is added)."""
    per_rank = sorted(res["per_rank"], key=lambda pr: pr["rank"])
    got = [(pr.get("compute_cpu_per_step") or {}).get("median") for pr in per_rank]
    if all(isinstance(x, (int, float)) and x > 0 for x in got):
        into.setdefault(key, []).append(got)


def probe(prof: Profile, ranks: int, model: str, micro_batch_sizes, *, probe_microbatches: int = 4, steps: int = 12,
          timeout_s: float = 300, echo: bool = False, schedules=BASE_SCHEDULES, stages_per_rank: int | None = None,
          launches: int = OVERHEAD_LAUNCHES, run=None, method: str = "cpu", pool=POOLED,
          step_probe: bool = False) -> Profile:
    """``prof`` with ``overhead_s`` and ``overhead_by_schedule_s`` probed, and the raw figures in ``raw.overhead_probe``.

    ``stages_per_rank``: the V interleaved1f1b runs with (default: the length of the
    profile's ``virtual_stages``, else :data:`pipesim.schedule.DEFAULT_STAGES_PER_RANK`).
    ``run(schedule, micro_batch_size, batch_size, steps, stages_per_rank)``, if given, runs one
    cell and returns the runtime's results dict, instead of a local launch (under torchrun:
    calibrate/cluster.py). ``pool``: the schedules given one overhead per action from all
    their launches (default :data:`POOLED`, GPipe and 1F1B; ``()``: each its own).
    ``step_probe``: also launch GPipe with one micro-batch per step, and split each rank's
    excess into a part per step (``step_overhead_s``) and a part per computation (the module
    docstring says how, and why it is off by default)."""
    from pipesim.context import excess_per_action
    from pipesim.engine import rank_work
    from pipesim.trace import read_csv
    from runtime.launch import run_local

    if method not in METHODS:
        raise ValueError(f"overhead probe method must be one of {', '.join(METHODS)}, got {method!r}")
    check_launches(launches)
    if not isinstance(probe_microbatches, int) or probe_microbatches < 1:
        raise ValueError(f"probe_microbatches must be a positive integer, got {probe_microbatches!r}")
    schedules = tuple(s.lower() for s in schedules)
    if not schedules:
        raise ValueError("the overhead probe needs at least one schedule")
    for s in schedules:
        S.check_runtime(s)
    if stages_per_rank is None:
        vs = prof.stages[0].virtual_stages
        stages_per_rank = len(vs) if vs is not None else S.DEFAULT_STAGES_PER_RANK
    v_of = {s: (stages_per_rank if s in S.VIRTUAL else 1) for s in schedules}
    mb_of = {s: microbatches_for(s, ranks, probe_microbatches, v_of[s]) for s in schedules}
    warmup = 2
    raw: dict[str, Any] = {"method": METHOD, "trace_method": TRACE_METHOD, "used": method, "probe_microbatches": probe_microbatches,
                           "steps": steps, "schedules": list(schedules), "microbatches": mb_of, "launches": launches, "runs": {}}
    if any(s in S.VIRTUAL for s in schedules):
        raw["stages_per_rank"] = stages_per_rank
    cpus: dict[tuple[str, int], list[list[float]]] = {}
    comp_cpus: dict[tuple[str, int], list[list[float]]] = {}   # CPU inside the computations (where reported)
    traced: dict[tuple[str, int], list[dict[int, float]]] = {}
    # the step probe: gpipe with one micro-batch, beside the probe's count, to split per step from per action
    step_probe = step_probe and "gpipe" in schedules and mb_of["gpipe"] > 1
    cells = [(schedule, mb_of[schedule]) for schedule in schedules] + ([("gpipe", 1)] if step_probe else [])
    if step_probe:
        raw["step_probe"] = {"schedule": "gpipe", "microbatches": 1, "method": STEP_METHOD}
    with tempfile.TemporaryDirectory(prefix="pipesim-overhead-") as tmp:
        # launches interleaved over the cells, so that a slow spell lands on one launch of a cell
        for i in range(launches):
            for m in micro_batch_sizes:
                for schedule, n in cells:
                    v = v_of[schedule]
                    key = (schedule if n == mb_of[schedule] else STEP_KEY, m)
                    out = Path(tmp) / f"{key[0]}_mbs{m}_{i}.json"
                    if run is not None:
                        res = run(schedule, m, m * n, steps, v)
                        cpus.setdefault(key, []).append(
                            [pr["cpu_per_step"]["median"] for pr in sorted(res["per_rank"], key=lambda pr: pr["rank"])])
                        _compute_cpu(comp_cpus, key, res)
                        continue
                    trace = out.with_suffix(".csv")
                    run_local("runtime", ["--model", model, "--schedule", schedule, "--micro-batch-size", str(m),
                                          "--batch-size", str(m * n), "--steps", str(steps),
                                          *(["--stages-per-rank", str(v)] if schedule in S.VIRTUAL else []),
                                          "--warmup", str(warmup), "--out", str(out), "--trace", str(trace)],
                              ranks, timeout_s=timeout_s, log_dir=Path(tmp) / f"logs_{key[0]}_{m}_{i}", echo=echo)
                    res = json.loads(out.read_text())
                    if trace.exists() and key[0] != STEP_KEY:   # (a launch stand-in in the tests may write none)
                        traced.setdefault(key, []).append(
                            excess_per_action(read_csv(trace), prof, m, n, warmup, schedule=schedule,
                                              stages_per_rank=v if schedule in S.VIRTUAL else None))
                    per_rank = sorted(res["per_rank"], key=lambda pr: pr["rank"])
                    cpus.setdefault(key, []).append([pr["cpu_per_step"]["median"] for pr in per_rank])
                    _compute_cpu(comp_cpus, key, res)
    pooled = tuple(s for s in pool if s in schedules)
    if len(pooled) < 2:
        pooled = ()
    base = without_step_overhead(prof)
    work = {(schedule, m): rank_work(base, schedule, m, mb_of[schedule], v_of[schedule] if schedule in S.VIRTUAL else None)
            for (schedule, m) in cpus if schedule != STEP_KEY}
    # per (micro-batch size, rank): the runtime's CPU per step that does not grow with the computations
    step_s: dict[tuple[int, int], float] = {}
    if step_probe:
        raw["step_runs"] = {}
        for (schedule, m), runs1 in cpus.items():
            if schedule != STEP_KEY:
                continue
            w1 = rank_work(base, "gpipe", m, 1)
            per = {}
            for r in range(len(runs1[0])):
                (solo1, act1), (solo_n, act_n) = w1[r], work[("gpipe", m)][r]
                e1 = statistics.median(run[r] - solo1 for run in runs1)
                e_n = statistics.median(run[r] - solo_n for s in (pooled or ("gpipe",)) for run in cpus[(s, m)])
                per_action = max(0.0, (e_n - e1) / (act_n - act1))
                step_s[(m, r)] = a = max(0.0, e1 - act1 * per_action)
                per[str(r)] = {"cpu_per_step_launches_s": [run[r] for run in runs1], "solo_compute_s": solo1,
                               "actions_per_step": act1, "excess_s": e1, "excess_probe_s": e_n,
                               "per_action_s": per_action, "step_overhead_s": a}
            raw["step_runs"][str(m)] = per
    stages = list(prof.stages)
    per_launch: dict[tuple[str, int, int], list[float]] = {}   # the method's overhead per action, per launch
    for (schedule, m), runs in cpus.items():
        if schedule == STEP_KEY:
            continue
        per = {}
        for r in range(len(runs[0])):
            solo, actions = work[(schedule, m)][r]
            a = step_s.get((m, r), 0.0)
            cpu = statistics.median(run[r] for run in runs)
            cpu_oh = max(0.0, (cpu - solo - a) / actions)
            tr = traced.get((schedule, m)) or []
            trace_oh = max(0.0, statistics.median(t[r] for t in tr) - a / actions) if tr else None
            use_trace = method == "trace" and bool(tr)
            per_launch[(schedule, m, r)] = ([t[r] - a / actions for t in tr] if use_trace
                                           else [(run[r] - solo - a) / actions for run in runs])
            per[str(r)] = {"cpu_per_step_s": cpu, "cpu_per_step_launches_s": [run[r] for run in runs],
                           "solo_compute_s": solo, "actions_per_step": actions,
                           "overhead_s": trace_oh if use_trace else cpu_oh,
                           "cpu_overhead_s": cpu_oh, "trace_overhead_s": trace_oh,
                           "trace_overhead_launches_s": [t[r] for t in tr] if tr else None,
                           **({"step_overhead_s": a} if step_probe else {})}
            comp = comp_cpus.get((schedule, m))
            if comp and len(comp) == len(runs):   # the reference of a run's speed (pipesim.context.cpu_replay)
                per[str(r)]["compute_cpu_per_step_s"] = statistics.median(run[r] for run in comp)
        raw["runs"].setdefault(schedule, {})[str(m)] = per
    if pooled:
        raw["pooled"] = {"schedules": list(pooled), "method": POOL_METHOD}
    for (schedule, m, r), values in per_launch.items():
        rec = raw["runs"][schedule][str(m)][str(r)]
        if schedule in pooled:
            values = [x for s in pooled for x in per_launch[(s, m, r)]]
            rec["overhead_s"] = max(0.0, statistics.median(values))
            rec["pooled"] = True
        oh = rec["overhead_s"]
        stage = stages[r]
        c = stage.compute[m]
        c = replace(c, overhead_by_schedule_s={**(c.overhead_by_schedule_s or {}), schedule: oh},
                    overhead_s=oh if schedule == schedules[0] else c.overhead_s,
                    step_overhead_s=step_s.get((m, r), c.step_overhead_s))
        stages[r] = replace(stage, compute={**stage.compute, m: c})
    counts = sorted(set(mb_of.values()))
    what = (f"{counts[0]} micro-batches" if len(counts) == 1
            else "micro-batches " + ", ".join(f"{s} {n}" for s, n in mb_of.items()))
    names = [f"{s} (v {stages_per_rank})" if s in S.VIRTUAL else s for s in schedules]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    desc = prof.description + f"; runtime overhead per action probed ({what}, {listed})"
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
