"""Compute in context (pipesim.context): the sharing of a core taken out of a run's durations."""

from __future__ import annotations

from dataclasses import replace

import pytest
from helpers import Host, uniform_profile

from pipesim import context as CX
from pipesim import engine as E
from pipesim.trace import TraceEvent


def test_solo_work_halves_the_overlap_of_two_ranks_on_one_core():
    ev = [TraceEvent(0, "0F0", 0.0, 2.0), TraceEvent(0, "OPT", 3.0, 4.0),   # 2..3: its own gap (nothing waited)
          TraceEvent(2, "2F0", 1.0, 3.0), TraceEvent(1, "1F0", 0.0, 1.0)]
    host = Host(cores=2, slowdown={1: 1.0, 2: 2.0}, placement=(0, 1, 0))
    solo = CX.solo_durations(ev, host)
    assert solo[(0, 0, "0F0")] == pytest.approx(1.5)     # 0..1 alone, 1..2 with rank 2
    assert solo[(0, 0, "OPT")] == pytest.approx(1.5)     # gap 2..3 with rank 2, 3..4 alone
    assert solo[(2, 0, "2F0")] == pytest.approx(1.0)     # always beside rank 0
    assert solo[(1, 0, "1F0")] == pytest.approx(1.0)     # alone on core 1
    wall = CX.solo_durations(ev, None)                   # no placement: nothing taken out
    assert wall[(0, 0, "OPT")] == pytest.approx(2.0) and wall[(2, 0, "2F0")] == pytest.approx(2.0)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "zbh1", "interleaved1f1b"])
@pytest.mark.parametrize("network", ["default", "delay 2ms", "bandwidth 100Mbps"])
def test_excess_per_action_recovers_the_overhead_of_a_simulated_shared_core_run(schedule, network):
    """A run simulated on pinned, shared cores with a known overhead per action: the trace
    method gives that overhead back exactly, although ranks 0 and 2 overlapped on core 0
    (zbh1: 3 computations per micro-batch, B and W; interleaved1f1b: 2 per micro-batch on
    each of a rank's 2 virtual stages)."""
    host = Host(cores=2, slowdown={1: 1.0, 2: 2.0}, placement=(0, 1, 0))
    base = uniform_profile(3, f=0.010, b=0.020, latency=1e-4, bandwidth=1e9, nbytes=100_000, opt=0.003, host=host)
    overheads = {0: 0.0007, 1: 0.0011, 2: 0.0004}
    stages = tuple(replace(st, compute={1: replace(st.compute[1], overhead_s=overheads[r])})
                   for r, st in enumerate(base.stages))
    truth = replace(base, stages=stages)
    run = E.simulate(truth, schedule, 1, 4, network, steps=5)
    # the trace really has overlap on core 0 (else the test would not test the sharing)
    c0 = [e for e in run.trace if e.rank in (0, 2) and e.kind in ("F", "B", "OPT")]
    assert any(a.rank != b.rank and a.start < b.end and b.start < a.end for a in c0 for b in c0)
    got = CX.excess_per_action(run.trace, base, 1, 4, warmup=1, schedule=schedule)
    assert got == pytest.approx(overheads, abs=1e-12)
    # the wall durations without the sharing taken out would overstate rank 0's and rank 2's
    wall = CX.excess_per_action(run.trace, replace(base, host=None), 1, 4, warmup=1, schedule=schedule)
    assert wall[0] > overheads[0] + 1e-4 and wall[2] > overheads[2] + 1e-4


def test_excess_counts_the_schedules_computations():
    """A trace of zbh1 read as if it were gpipe (2 m computations, m * (forward + backward))
    gets the overhead wrong: the count of computations and their compute are the schedule's."""
    base = uniform_profile(3, f=0.010, b=0.020, latency=1e-4, bandwidth=1e9, nbytes=100_000, opt=0.003)
    truth = replace(base, stages=tuple(replace(st, compute={1: replace(st.compute[1], overhead_s=0.001)})
                                       for st in base.stages))
    run = E.simulate(truth, "zbh1", 1, 4, steps=3)
    assert CX.excess_per_action(run.trace, base, 1, 4, warmup=1, schedule="zbh1") == pytest.approx(
        {0: 0.001, 1: 0.001, 2: 0.001}, abs=1e-12)
    # 12 computations of 1 ms read as 8: 1.5 ms each
    assert CX.excess_per_action(run.trace, base, 1, 4, warmup=1) == pytest.approx(
        {0: 0.0015, 1: 0.0015, 2: 0.0015}, abs=1e-12)


def test_excess_needs_a_step_after_the_warm_up():
    with pytest.raises(ValueError, match="no step after"):
        CX.excess_per_action([TraceEvent(0, "0F0", 0.0, 1.0, 0)], uniform_profile(1), 1, 1, warmup=1)


def _shared_core_profile():
    host = Host(cores=2, slowdown={1: 1.0, 2: 2.0}, placement=(0, 1, 0))
    base = uniform_profile(3, f=0.010, b=0.020, latency=1e-4, bandwidth=1e9, nbytes=100_000, opt=0.003, host=host)
    return replace(base, stages=tuple(replace(st, compute={1: replace(st.compute[1], overhead_s=0.0005 * (r + 1))})
                                      for r, st in enumerate(base.stages)))


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "zbh1", "interleaved1f1b"])
def test_cpu_per_step_is_what_the_engine_charges_each_rank_without_sharing(schedule):
    """The profile's CPU per step per rank: computations, optimizer and overhead per computation
    (engine.rank_work), the same with or without the host model (the run's CPU time does not
    count waiting for a core)."""
    prof = _shared_core_profile()
    got = CX.cpu_per_step(prof, schedule, 1, 6)
    want = [c + n * prof.stages[r].compute[1].overhead(schedule)
            for r, (c, n) in enumerate(E.rank_work(prof, schedule, 1, 6))]
    assert got == pytest.approx(want, rel=1e-12)
    assert CX.cpu_per_step(replace(prof, host=None), schedule, 1, 6) == pytest.approx(got, rel=1e-12)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "zbh1", "interleaved1f1b"])
def test_cpu_replay_simulates_each_rank_at_the_runs_cpu(schedule):
    """A run whose ranks took the profile's CPU replays to the profile's own simulation; one whose
    rank 1 took 30% more (and rank 2 10% less) replays to the profile with exactly those ranks
    scaled, whose CPU per step is then the run's, simulated with the sharing of core 0."""
    prof = _shared_core_profile()
    net = "delay 2ms"
    plain = E.simulate(prof, schedule, 1, 6, net, steps=3, record=False).step_time
    same = CX.cpu_replay(prof, schedule, 1, 6, net, CX.cpu_per_step(prof, schedule, 1, 6))
    assert same.factors == pytest.approx((1.0, 1.0, 1.0), rel=1e-12) and same.step_time == pytest.approx(plain)
    run = [x * f for x, f in zip(CX.cpu_per_step(prof, schedule, 1, 6), (1.0, 1.3, 0.9))]
    cr = CX.cpu_replay(prof, schedule, 1, 6, net, run)
    assert cr.factors == pytest.approx((1.0, 1.3, 0.9), rel=1e-12) and cr.drift == pytest.approx(1.0)
    scaled = prof.ranks_scaled(cr.factors)
    assert CX.cpu_per_step(scaled, schedule, 1, 6) == pytest.approx(run, rel=1e-12)
    assert cr.step_time == pytest.approx(E.simulate(scaled, schedule, 1, 6, net, steps=3, record=False).step_time)
    assert cr.step_time != pytest.approx(plain, rel=1e-3)
    # the host model applies: without it the same speeds simulate to another step time
    alone = CX.cpu_replay(replace(prof, host=None), schedule, 1, 6, net, run)
    assert alone.step_time < cr.step_time


def test_ranks_scaled_and_cpu_replay_refuse_bad_input():
    prof = _shared_core_profile()
    assert prof.ranks_scaled([1.5] * 3) == prof.compute_scaled(1.5)
    with pytest.raises(ValueError, match="2 scale factors for a profile of 3 stages"):
        prof.ranks_scaled([1.0, 1.0])
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive number"):
            prof.ranks_scaled([1.0, bad, 1.0])
    with pytest.raises(ValueError, match="CPU per step for 2 ranks, the profile 3 stages"):
        CX.cpu_replay(prof, "gpipe", 1, 4, "default", [0.1, 0.1])
    with pytest.raises(ValueError, match="rank 1's CPU per step must be a positive number"):
        CX.cpu_replay(prof, "gpipe", 1, 4, "default", [0.1, float("nan"), 0.1])


def _with_probe_compute(prof, ratios: dict[str, list[float]], mbs: int = 1):
    """``prof`` whose overhead probe recorded, per schedule, CPU inside the computations per step
    of ``ratios[schedule][r]`` times the solo compute the engine charges that step."""
    runs = {}
    for s, rs in ratios.items():
        work = E.rank_work(prof, s, mbs, 4)
        runs[s] = {str(mbs): {str(r): {"solo_compute_s": work[r][0], "compute_cpu_per_step_s": work[r][0] * q}
                              for r, q in enumerate(rs)}}
    return replace(prof, raw={"overhead_probe": {"runs": runs}})


def test_compute_reference_reads_the_probe_and_falls_back_to_the_median_over_schedules():
    prof = _with_probe_compute(_shared_core_profile(), {"gpipe": [1.1, 1.2, 1.0], "1f1b": [1.3, 1.0, 1.2],
                                                        "zbh1": [1.2, 1.1, 1.4]})
    assert CX.compute_reference(prof, "1f1b", 1) == pytest.approx([1.3, 1.0, 1.2])
    assert CX.compute_reference(prof, "interleaved1f1b", 1) == pytest.approx([1.2, 1.1, 1.2])   # not probed
    assert CX.compute_reference(prof, "gpipe", 2) is None   # no probe at that size
    assert CX.compute_reference(_shared_core_profile(), "gpipe", 1) is None   # no probe at all


def test_cpu_replay_on_compute_cpu_counts_the_cells_micro_batches_without_the_step_overhead():
    """At micro-batch 2 and batch 8 (4 micro-batches) the step's solo compute is the engine's
    for 4 micro-batches, without the per-step overhead the probe's solo never held."""
    base = _shared_core_profile()
    base = replace(base, stages=tuple(replace(st, compute={2: replace(st.compute[1], step_overhead_s=0.002)})
                                      for st in base.stages))
    prof = _with_probe_compute(base, {"gpipe": [1.0, 1.0, 1.0]}, mbs=2)
    bare = [c for c, _ in E.rank_work(_with_probe_compute(replace(base, stages=tuple(
        replace(st, compute={2: replace(st.compute[2], step_overhead_s=0.0)}) for st in base.stages)),
        {"gpipe": [1.0] * 3}, mbs=2), "gpipe", 2, 4)]
    cr = CX.cpu_replay(prof, "gpipe", 2, 8, "default", CX.cpu_per_step(prof, "gpipe", 2, 8),
                       run_compute_cpu_per_step=[x * 1.1 for x in bare])
    assert cr.basis == "compute" and cr.factors == pytest.approx((1.1, 1.1, 1.1), rel=1e-12)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "zbh1", "interleaved1f1b"])
def test_cpu_replay_on_compute_cpu_divides_by_the_probes_own_ratio(schedule):
    """With the computations' own CPU per step and a probe that recorded it, a rank's factor is
    that CPU over the step's solo compute, over the probe's same ratio: a run spending what the
    probe spent per unit of compute is at speed 1 whatever its process CPU (posting, the kernel)
    says; one spending 20% more is at 1.2. Without a reference it stays on the process's CPU."""
    base = _shared_core_profile()
    q = [1.1, 1.25, 1.05]
    prof = _with_probe_compute(base, {schedule: q})
    net = "bandwidth 2Gbps"
    solo = [c for c, _ in E.rank_work(prof, schedule, 1, 6)]
    process = [x * 1.15 for x in CX.cpu_per_step(prof, schedule, 1, 6)]   # 15% more in the process: not compute
    same = CX.cpu_replay(prof, schedule, 1, 6, net, process, run_compute_cpu_per_step=[s * k for s, k in zip(solo, q)])
    assert same.basis == "compute" and same.factors == pytest.approx((1.0, 1.0, 1.0), rel=1e-12)
    assert same.step_time == pytest.approx(E.simulate(prof, schedule, 1, 6, net, steps=3, record=False).step_time)
    slow = CX.cpu_replay(prof, schedule, 1, 6, net, process,
                         run_compute_cpu_per_step=[s * k * f for s, k, f in zip(solo, q, (1.2, 1.0, 0.9))])
    assert slow.factors == pytest.approx((1.2, 1.0, 0.9), rel=1e-12) and slow.drift == pytest.approx(1.0)
    # no reference in the profile (calibrated before the runtime reported it): the process's CPU, as before
    old = CX.cpu_replay(base, schedule, 1, 6, net, process, run_compute_cpu_per_step=[1.0, 1.0, 1.0])
    assert old.basis == "process" and old.factors == pytest.approx((1.15,) * 3, rel=1e-12)
    with pytest.raises(ValueError, match="rank 0's compute CPU per step must be a positive number"):
        CX.cpu_replay(prof, schedule, 1, 6, net, process, run_compute_cpu_per_step=[0.0, 1.0, 1.0])


def test_probe_consistency_reads_the_overhead_probe():
    from calibrate.summary import summary
    from loop.validate import consistency_line
    from pipesim.profile import load

    prof = load(None)
    assert CX.probe_consistency(prof) is None                      # no probe: nothing to say
    runs = {"gpipe": {"1": {"0": {"compute_cpu_per_step_s": 0.011, "solo_compute_s": 0.010},
                            "1": {"compute_cpu_per_step_s": 0.013, "solo_compute_s": 0.010}},
                      "2": {"0": {"compute_cpu_per_step_s": 0.009, "solo_compute_s": 0.010},
                            "1": {"cpu_per_step_s": 0.02, "solo_compute_s": 0.010}}},   # older launch: skipped
            "zbh1": {"1": {"0": {"compute_cpu_per_step_s": 0.0, "solo_compute_s": 0.010}}}}  # unusable: skipped
    probed = replace(prof, raw={"overhead_probe": {"runs": runs}})
    med, lo, hi = CX.probe_consistency(probed)
    assert (med, lo, hi) == pytest.approx((1.1, 0.9, 1.3))
    assert "took 1.10x the calibrated compute (median over its launches; 0.90-1.30)" in consistency_line((med, lo, hi))
    assert "overhead probe: its runs' computations took 1.10x" in summary(probed)
