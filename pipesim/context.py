"""Compute in context: what each computation of a measured run cost, with the sharing of cores taken out.

A run's trace says how long each forward, backward and optimizer step took in the run,
on a machine where ranks may share a core (the local testbed pins ranks 0 and 2 to one
core). Those wall durations hold three things: the computation itself, the rank's own
work between computations (posting, bookkeeping, the hand-off after an arrival: the
*own gap*, see :func:`pipesim.replay.durations_from_trace`), and the time the core
spent on another rank. The simulator's host model already charges the last one, so
:func:`solo_durations` takes it out:

    solo work of an action = sum over the pieces of its busy span of  length / j

where the busy span is the action plus its own gap, and ``j`` is the number of ranks
pinned to the same core that are busy (in a computation or its own gap) during that
piece -- the engine's per-core model, in which ``j`` jobs on a core each run at ``1/j``.
Without pinned placement (no ``host.placement``) nothing is taken out.

:func:`excess_per_action` turns one run's solo work into the runtime's time per action
beyond the profile's isolated compute, the quantity the profile carries as
``overhead_s`` / ``overhead_by_schedule_s``:

    excess = (mean solo work per step - solo compute per step) / (computations per step)

with the solo compute and the count of computations of the schedule the run ran, as the
engine charges them (:func:`pipesim.engine.rank_work`): ``m * (forward_s + backward_s) +
optimizer_s`` over ``2 m`` for gpipe and 1f1b; ``m * (forward_s + B + W) + optimizer_s``
over ``3 m`` for zbh1; for interleaved1f1b, the rank's virtual stages' ``m * (forward_s +
backward_s)`` summed, plus ``optimizer_s``, over ``2 m v``. The solo work per step sums
every computation of the trace (F, B, W and the optimizer step) with its own gap.

:func:`cpu_replay` is the level between the replay and the prediction. A run records each
rank's process CPU time per step (``cpu_per_step`` in its results); the profile says what
the engine charges that rank per step without any sharing of cores (:func:`cpu_per_step`:
compute, optimizer and the runtime's overhead per computation). Their ratio per rank is
the machine's speed in that run against calibration's (a slow spell of the VM, a cold
cache, or calibration's own error: each inflates the CPU the same work takes). The
profile with each rank scaled by its ratio (:meth:`pipesim.profile.Profile.ranks_scaled`),
simulated with the host model, gives the cell's step time had the profile known the run's
speed: its error is the model's (the sharing of cores, transfers, the schedule), and the
difference from the prediction is the machine's. It uses the run's CPU time, never its
step time, and it is not a prediction: a prediction has only the profile. Where the run
and the calibration's overhead probe both recorded the CPU inside their computations, the
ratio is taken on that instead (:func:`cpu_replay`, :func:`compute_reference`): the
process's CPU also holds the posting of messages and the kernel's work for them.

What it does not see: work of other processes (the launcher, the delay line) that was
not on the ranks' cores during the run, and compute that is slower in one network
setting than in another (after long idle spells, for example): it is measured on the
network the run had.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from .engine import rank_work, simulate
from .explain import TraceIndex
from .network import NetworkSetting
from .profile import Host, Profile
from .schedule import VIRTUAL
from .trace import TraceEvent
from .transport import Transport

COMPUTE = ("F", "B", "OPT")


def busy_spans(events: Iterable[TraceEvent]) -> dict[tuple[int, int, str], tuple[float, float]]:
    """(rank, step, action) -> (start of its own gap, end of the computation) for every computation."""
    events = list(events)
    idx = TraceIndex(events)
    out: dict[tuple[int, int, str], tuple[float, float]] = {}
    for lst in idx.compute.values():
        prev = None
        for cur in lst:
            begin = cur.start
            if prev is not None:
                blk = idx.blocker(cur)
                ready = prev.end if blk is None else max(prev.end, min(cur.start, blk[0].end))
                begin = min(cur.start, ready)
            out[(cur.rank, cur.step, cur.action)] = (begin, max(begin, cur.end))
            prev = cur
    if not out:
        raise ValueError("trace has no compute events")
    return out


def solo_durations(events: Iterable[TraceEvent], host: Host | None) -> dict[tuple[int, int, str], float]:
    """(rank, step, action) -> the action's work (own gap included) with the core sharing taken out."""
    spans = busy_spans(events)
    placement = host.placement if host is not None else None
    if placement is None:
        return {k: e - s for k, (s, e) in spans.items()}
    by_core: dict[int, list[tuple[tuple[int, int, str], float, float]]] = defaultdict(list)
    for key, (s, e) in spans.items():
        rank = key[0]
        if rank >= len(placement):
            raise ValueError(f"trace has rank {rank}; the profile's host.placement names {len(placement)} ranks")
        by_core[placement[rank]].append((key, s, e))
    out: dict[tuple[int, int, str], float] = {}
    for items in by_core.values():
        # sweep the span boundaries of this core; between two boundaries the busy set is fixed
        points = sorted({t for _, s, e in items for t in (s, e)})
        starts = sorted(items, key=lambda x: x[1])
        work = {key: 0.0 for key, _, _ in items}
        active: list[tuple[tuple[int, int, str], float, float]] = []
        i = 0
        for a, b in zip(points, points[1:]):
            while i < len(starts) and starts[i][1] <= a:
                active.append(starts[i])
                i += 1
            active = [x for x in active if x[2] > a]
            here = [x for x in active if x[1] <= a and x[2] >= b]
            if not here:
                continue
            share = (b - a) / len(here)
            for key, _, _ in here:
                work[key] += share
        out.update(work)
    return out


def excess_per_action(events: Iterable[TraceEvent], profile: Profile, micro_batch_size: int, num_microbatches: int,
                      warmup: int, schedule: str = "gpipe", stages_per_rank: int | None = None) -> dict[int, float]:
    """rank -> the runtime's time per computation beyond the profile's compute, from one run's trace.

    The mean over the steps after ``warmup`` of each rank's solo work per step, less its
    solo compute per step under ``schedule`` (``stages_per_rank``: v of interleaved1f1b),
    over its computations per step (:func:`pipesim.engine.rank_work`; gpipe and 1f1b:
    ``m * (forward_s + backward_s) + optimizer_s`` over ``2 m``), at least 0."""
    solo = solo_durations(events, profile.host)
    per_step: dict[tuple[int, int], float] = defaultdict(float)
    for (rank, step, _), w in solo.items():
        if step >= warmup:
            per_step[(rank, step)] += w
    if not per_step:
        raise ValueError(f"trace has no step after {warmup} warm-up step(s)")
    work = rank_work(profile, schedule, micro_batch_size, num_microbatches, stages_per_rank)
    out = {}
    for rank in sorted({r for r, _ in per_step}):
        if rank >= len(work):
            raise ValueError(f"trace has rank {rank}; the profile has {len(work)} stages")
        mean = statistics.fmean(v for (r, _), v in per_step.items() if r == rank)
        compute, actions = work[rank]
        out[rank] = max(0.0, (mean - compute) / actions)
    return out


def cpu_per_step(profile: Profile, schedule: str, micro_batch_size: int, batch_size: int,
                 stages_per_rank: int | None = None) -> list[float]:
    """Per rank, the CPU per step the engine charges it under ``schedule``, without sharing of
    cores: its computations (F, B, W), optimizer step and per-computation overhead, as a run's
    ``cpu_per_step`` counts them (the process's CPU time, not the time it waited for a core)."""
    res = simulate(replace(profile, host=None), schedule, micro_batch_size, batch_size, "default",
                   steps=1, record=False, stages_per_rank=stages_per_rank)
    return [r.compute for r in res.ranks]


@dataclass(frozen=True)
class CpuReplay:
    step_time: float          # seconds: the cell simulated with each rank at the run's own CPU per step
    factors: tuple[float, ...]  # per rank: the run's CPU per step over the profile's (> 1: the run was slower)
    basis: str = "process"    # "compute": from the CPU inside the computations (see cpu_replay), else the process's

    @property
    def drift(self) -> float:
        """The run's CPU per step over the profile's, the median over ranks (1.0: as calibrated)."""
        return statistics.median(self.factors)


def _check_per_rank(values: Sequence[float], ranks: int, what: str) -> None:
    """Refuse anything but one positive, finite number of seconds per rank."""
    if len(values) != ranks:
        raise ValueError(f"the run has {what} for {len(values)} ranks, the profile {ranks} stages")
    for r, x in enumerate(values):
        if not (x > 0 and math.isfinite(x)):
            raise ValueError(f"rank {r}'s {what} must be a positive number of seconds, got {x!r}")


def without_step_overhead(prof: Profile) -> Profile:
    """``prof`` with every ``step_overhead_s`` set to 0 (what the overhead probe's solo compute
    is taken from)."""
    return replace(prof, stages=tuple(replace(st, compute={m: replace(c, step_overhead_s=0.0)
                                                           for m, c in st.compute.items()})
                                      for st in prof.stages))


def _probe_runs(profile: Profile) -> dict:
    """``raw.overhead_probe.runs`` (schedule -> micro-batch size -> rank -> launch figures), or {}."""
    return ((profile.raw or {}).get("overhead_probe") or {}).get("runs") or {}


def _probe_ratio(x) -> float | None:
    """One probe cell's CPU inside its computations per step over its solo compute (None: not recorded)."""
    try:
        r = float(x["compute_cpu_per_step_s"]) / float(x["solo_compute_s"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return r if r > 0 and math.isfinite(r) else None


def compute_reference(profile: Profile, schedule: str, micro_batch_size: int) -> list[float] | None:
    """Per rank, the CPU the overhead probe's launches spent inside their computations per step
    over the solo compute the engine charges for that step (``raw.overhead_probe.runs``: its
    ``compute_cpu_per_step_s`` over ``solo_compute_s``): what a run on the calibrated machine
    spends in its computations per unit of profile compute. ``schedule``'s own at
    ``micro_batch_size`` where probed, else the median over the probed schedules at that size;
    None where the profile has none (calibrated before the runtime reported it)."""
    runs = _probe_runs(profile)

    def ratios(per: dict) -> list[float] | None:
        out = [_probe_ratio(per.get(str(r))) for r in range(profile.num_stages)]
        got = [x for x in out if x is not None]
        return got if len(got) == len(out) else None

    own = ratios((runs.get(schedule) or {}).get(str(micro_batch_size)) or {})
    if own is not None:
        return own
    got = [x for per in runs.values() if isinstance(per, dict)
           if (x := ratios(per.get(str(micro_batch_size)) or {})) is not None]
    if not got:
        return None
    return [statistics.median(g[r] for g in got) for r in range(profile.num_stages)]


def probe_consistency(profile: Profile) -> tuple[float, float, float] | None:
    """(median, min, max) over the overhead probe's launches (every schedule, micro-batch size
    and rank in ``raw.overhead_probe.runs``) of the CPU spent inside the computations per step
    over the solo compute the engine charges for that step; None where the profile has none.

    Calibration measures compute first (each stage alone, warm) and the overhead probe's short
    runs after it; the probe's excess over that compute becomes the profile's overhead. The
    computations of a run take somewhat more than the isolated ones (caches, the other rank on
    the core), so the ratio sat at 1.07-1.13 in steady calibrations on the 2-core VM. Well
    above that the probe ran in a slow spell and its slowness is charged as overhead; below
    it, compute may have been measured in one (the clipped overhead cannot give it back),
    though 0.99 was also seen with a sound profile."""
    ratios = [r for by_mbs in _probe_runs(profile).values() if isinstance(by_mbs, dict)
              for per in by_mbs.values() if isinstance(per, dict)
              for x in per.values() if (r := _probe_ratio(x)) is not None]
    if not ratios:
        return None
    return statistics.median(ratios), min(ratios), max(ratios)


def cpu_replay(profile: Profile, schedule: str, micro_batch_size: int, batch_size: int,
               network: str | NetworkSetting, run_cpu_per_step: Sequence[float], *,
               transport: Transport | None = None, steps: int = 3, stages_per_rank: int | None = None,
               run_compute_cpu_per_step: Sequence[float] | None = None) -> CpuReplay:
    """The cell simulated with the profile's ranks scaled to the run's CPU per step (see the
    module docstring): ``run_cpu_per_step[r]`` is rank ``r``'s median process CPU seconds per
    step in the run.

    With ``run_compute_cpu_per_step`` (rank ``r``'s median CPU seconds per step inside its
    computations: F, B, W and the optimizer step, the runtime's ``compute_cpu_per_step``) and a
    profile whose overhead probe recorded the same (:func:`compute_reference`), the factor is
    instead that CPU over the solo compute the engine charges the step, divided by the probe's
    same ratio (``basis`` "compute"). The process's CPU also counts the posting of messages and
    what the kernel does for them, which grows with a bandwidth cap without the compute being
    any slower (GPipe, micro-batch 4, 2 Gbit/s against the default network on the 2-core VM of
    2026-11-29: the process's CPU per step beyond the computations' 1.1-2.3 ms higher, the
    computations' own CPU not higher)."""
    want = cpu_per_step(profile, schedule, micro_batch_size, batch_size, stages_per_rank)
    _check_per_rank(run_cpu_per_step, len(want), "CPU per step")
    factors = tuple(x / w for x, w in zip(run_cpu_per_step, want))
    basis = "process"
    ref = compute_reference(profile, schedule, micro_batch_size) if run_compute_cpu_per_step is not None else None
    if ref is not None:
        assert run_compute_cpu_per_step is not None
        _check_per_rank(run_compute_cpu_per_step, len(want), "compute CPU per step")
        m = max(1, batch_size // micro_batch_size)
        # the probe's solo compute had no per-step overhead in it
        solo = [c for c, _ in rank_work(without_step_overhead(profile), schedule, micro_batch_size, m,
                                        stages_per_rank if schedule in VIRTUAL else None)]
        factors = tuple(x / s / q for x, s, q in zip(run_compute_cpu_per_step, solo, ref))
        basis = "compute"
    res = simulate(profile.ranks_scaled(factors), schedule, micro_batch_size, batch_size, network,
                   transport=transport, steps=steps, record=False, stages_per_rank=stages_per_rank)
    return CpuReplay(res.step_time, factors, basis)
