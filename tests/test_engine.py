"""Exact invariants and derived communication costs of the SimPy model."""

import math

import pytest

from pipesim import engine as E
from pipesim import schedule as S
from pipesim.network import parse
from pipesim.profile import Host
from tests.helpers import uniform_profile

TRANSPORTS = [E.Transport(queue=q, send_mode=s, recv_ahead=ra)
              for q in ("link", "rank") for s in ("eager", "rendezvous") for ra in (None, 0)
              if not (q == "rank" and ra is None)]


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("p,m", [(1, 1), (1, 5), (2, 1), (2, 4), (3, 8), (4, 3), (5, 16)])
@pytest.mark.parametrize("transport", TRANSPORTS, ids=str)
def test_uniform_zero_comm_step_is_m_plus_p_minus_1_times_f_plus_b(schedule, p, m, transport):
    f, b = 1.0, 2.0
    prof = uniform_profile(p, f, b)
    r = E.simulate(prof, schedule, 1, m, transport=transport, steps=1)
    expect = m * (f + b) if p == 1 else (m + p - 1) * (f + b)
    assert r.step_time == pytest.approx(expect, rel=1e-12)
    assert sum(x.compute for x in r.ranks) == pytest.approx(p * m * (f + b))
    assert r.bubble_fraction == pytest.approx(1 - m / (m + p - 1) if p > 1 else 0.0)


@pytest.mark.parametrize("p,m", [(2, 4), (3, 8), (4, 16)])
def test_gpipe_pure_latency_adds_2_p_minus_1_latencies(p, m):
    # GPipe with f, b and latency L (eager): the last forward reaches the last stage after
    # (p-1) hops and the last backward travels back (p-1) hops: step = (m+p-1)(f+b) + 2(p-1)L
    # as long as L does not starve the forward stream (L small against f).
    f, b, L = 1.0, 2.0, 0.25
    prof = uniform_profile(p, f, b, latency=L)
    r = E.simulate(prof, "gpipe", 1, m, transport=E.Transport(send_mode="eager"), steps=1)
    assert r.step_time == pytest.approx((m + p - 1) * (f + b) + 2 * (p - 1) * L)


def critical_path(compute, f, b, L):
    """Longest path through the dependency graph: an independent derivation of the step time
    for eager sends, unlimited bandwidth and latency L per hop. An op starts when the previous op
    on its rank has ended and (F) the forward of the stage before / (B) the backward of the stage
    after has ended plus L. Returns the end of rank 0's last op."""
    p = len(compute)
    end = {}
    pos = [0] * p
    t = [0.0] * p
    progressed = True
    while progressed:
        progressed = False
        for r in range(p):
            while pos[r] < len(compute[r]):
                a = compute[r][pos[r]]
                dep = (r - 1, "F", a.mb) if a.kind is S.Kind.F else (r + 1, "B", a.mb)
                if 0 <= dep[0] < p:
                    if dep not in end:
                        break
                    ready = end[dep] + L
                else:
                    ready = 0.0
                t[r] = max(t[r], ready) + (f if a.kind is S.Kind.F else b)
                end[(r, a.kind.value, a.mb)] = t[r]
                pos[r] += 1
                progressed = True
    assert all(pos[r] == len(compute[r]) for r in range(p)), "dependency cycle"
    return t[0]


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("p,m", [(2, 1), (2, 4), (2, 7), (3, 8), (4, 9), (5, 16)])
@pytest.mark.parametrize("L", [0.1, 0.7, 3.0])
def test_pure_latency_matches_the_critical_path(schedule, p, m, L):
    f, b = 1.0, 2.0
    r = E.simulate(uniform_profile(p, f, b, latency=L), schedule, 1, m,
                   transport=E.Transport(send_mode="eager"), steps=1)
    assert r.step_time == pytest.approx(critical_path(S.generate(schedule, p, m), f, b, L))


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8, 9, 16])
def test_1f1b_two_stages_pure_latency_closed_form(m):
    # p = 2, 1F1B, L small (2L < f + b): rank 0 holds two micro-batches in its loop
    # r0.F_k -> L -> r1.F_k, r1.B_k -> L -> r0.B_k -> r0.F_{k+2}, so every second micro-batch
    # waits one round trip: end of r1.B_k is e_k = e_{k-1} + f + b (+2L for even k >= 2),
    # e_0 = 2f + b + L, and rank 0 ends at e_{m-1} + L + b:
    # step = (m + 1)(f + b) + 2L (1 + floor((m - 1) / 2)).
    f, b, L = 1.0, 2.0, 0.1
    r = E.simulate(uniform_profile(2, f, b, latency=L), "1f1b", 1, m,
                   transport=E.Transport(send_mode="eager"), steps=1)
    assert r.step_time == pytest.approx((m + 1) * (f + b) + 2 * L * (1 + (m - 1) // 2))


def test_bandwidth_serializes_each_direction():
    # p = 2, GPipe, eager: m activations of n bytes each at rate R: transfers queue when n*8/R > f.
    f, b, m, n, R = 1.0, 1.0, 5, 1000, 8000.0 / 3  # each transfer takes 3 s > f
    prof = uniform_profile(2, f, b, bandwidth=R, nbytes=n)
    r = E.simulate(prof, "gpipe", 1, m, transport=E.Transport(send_mode="eager"), steps=1)
    arrivals = sorted(e.end for e in r.trace if e.rank == 1 and "RF" in e.action)
    assert arrivals == pytest.approx([f + 3 * (k + 1) for k in range(m)])


def test_rendezvous_waits_for_the_ready_notice():
    # Receive posted just before it is needed (recv_ahead=0): under rendezvous the data leaves
    # only after the notice has crossed back, so each hop costs 2L (notice + data) instead of L.
    f, b, L, m = 1.0, 1.0, 0.5, 1
    prof = uniform_profile(2, f, b, latency=L, nbytes=1)
    eager = E.simulate(prof, "gpipe", 1, m, transport=E.Transport(send_mode="eager", recv_ahead=0), steps=1)
    rdv = E.simulate(prof, "gpipe", 1, m, transport=E.Transport(send_mode="rendezvous", recv_ahead=0), steps=1)
    assert eager.step_time == pytest.approx(2 * (f + b) + 2 * L)
    # the forward hop: rank 1 posts its receive at 0, the notice arrives at L < f, so no cost;
    # the backward hop: rank 0 posts RB0 at time f (just before B0) -> notice reaches rank 1 at f + L,
    # but rank 1 only sends after its B at f + L + f + b, so no extra cost either:
    assert rdv.step_time == pytest.approx(eager.step_time)
    # with a long latency the backward notice arrives after rank 1 is ready to send:
    L = 5.0
    prof = uniform_profile(2, f, b, latency=L, nbytes=1)
    rdv = E.simulate(prof, "gpipe", 1, m, transport=E.Transport(send_mode="rendezvous", recv_ahead=0), steps=1)
    # rank 1: RF0 posted at 0 -> notice at 5; rank 0 sends at f=1, waits for notice: data leaves at 5,
    # arrives 10; rank 1 F 10..11, B 11..12, SB at 12; rank 0 posted RB0 just before B0 i.e. at
    # f = 1 -> notice reaches rank 1 at 6 < 12; data arrives 17; B0 17..18.
    assert rdv.step_time == pytest.approx(18.0)


def test_window_caps_single_connection_throughput():
    # n = 10 windows; RTT 2L = 1 s; window/RTT = 1000 B/s << bandwidth: about n/W * RTT seconds.
    L, W, n = 0.5, 1000, 10000
    prof = uniform_profile(2, 1.0, 1.0, latency=L, bandwidth=1e12, nbytes=n, window=W)
    r = E.simulate(prof, "gpipe", 1, 1, transport=E.Transport(send_mode="eager"), steps=1)
    arr = [e.end for e in r.trace if e.action == "1RF0"][0]
    assert arr == pytest.approx(1.0 + (n / W - 1) * 2 * L + L, rel=1e-6)


def test_shared_host_processor_sharing():
    # 2 stages, 1 core, slowdown 2 when both compute: two equal jobs started together end together at 2x.
    prof = uniform_profile(2, 1.0, 1.0, host=Host(cores=1, slowdown={1: 1.0, 2: 2.0}))
    r = E.simulate(prof, "gpipe", 1, 4, steps=1)
    alone = E.simulate(uniform_profile(2, 1.0, 1.0), "gpipe", 1, 4, steps=1)
    assert r.step_time > alone.step_time
    # rank 0's F1 overlaps rank 1's F0 exactly: both take 2 s
    f1 = [e for e in r.trace if e.action == "0F1"][0]
    assert f1.duration == pytest.approx(2.0)


@pytest.mark.parametrize("p,m", [(3, 8), (4, 4), (4, 2), (8, 32)])
def test_peak_inflight(p, m):
    prof = uniform_profile(p)
    g = E.simulate(prof, "gpipe", 1, m)
    o = E.simulate(prof, "1f1b", 1, m)
    assert [x.peak_inflight for x in g.ranks] == [m] * p
    assert [x.peak_inflight for x in o.ranks] == [min(p - r, m) for r in range(p)]


def test_steady_state_period_is_reported():
    prof = uniform_profile(3, 1.0, 2.0)
    r1 = E.simulate(prof, "gpipe", 1, 4, steps=1)
    r3 = E.simulate(prof, "gpipe", 1, 4, steps=3)
    assert r3.step_ends[0][0] == pytest.approx(r1.step_time)
    assert r3.step_time == pytest.approx(r3.step_ends[0][2] - r3.step_ends[0][1])
    assert r3.step_time <= r1.step_time + 1e-9


def test_deadlock_is_reported():
    # rank 1 waits for a gradient of mb 0 before doing its forwards: hand-made bad order.
    sched = S.lower([[S.Action(0, "F", 0), S.Action(0, "B", 0)],
                     [S.Action(1, "F", 0), S.Action(1, "B", 0)]])
    sched[0] = [S.Action(0, "RB", 0), S.Action(0, "F", 0), S.Action(0, "B", 0), S.Action(0, "SF", 0)]
    with pytest.raises(RuntimeError, match="deadlock"):
        E.simulate(uniform_profile(2), "custom", 1, 1, lowered=sched, steps=1)


def test_heterogeneous_link_setting():
    prof = uniform_profile(3, latency=0.0)
    slow12 = E.simulate(prof, "gpipe", 1, 4, parse("link 1-2 delay 1s"), transport=E.Transport(send_mode="eager"),
                        steps=1)
    slow01 = E.simulate(prof, "gpipe", 1, 4, parse("link 0-1 delay 1s"), transport=E.Transport(send_mode="eager"),
                        steps=1)
    both = E.simulate(prof, "gpipe", 1, 4, parse("delay 1s"), transport=E.Transport(send_mode="eager"), steps=1)
    base = (4 + 2) * 3.0
    assert slow12.step_time == pytest.approx(base + 2.0)
    assert slow01.step_time == pytest.approx(base + 2.0)
    assert both.step_time == pytest.approx(base + 4.0)


def test_bad_inputs():
    prof = uniform_profile(3, mbs=(1, 2))
    with pytest.raises(ValueError, match="multiple"):
        E.simulate(prof, "gpipe", 2, 5)
    with pytest.raises(ValueError, match="micro-batch size 4"):
        E.simulate(prof, "gpipe", 4, 8)
    with pytest.raises(ValueError, match="unknown schedule"):
        E.simulate(prof, "zb", 1, 8)
    with pytest.raises(ValueError, match="queue"):
        E.Transport(queue="bus")
    assert math.isfinite(E.simulate(prof, "1f1b", 2, 8).step_time)


def test_rank_queues_add_head_of_line_blocking():
    # Rank 1 sends activations forward and gradients backward over a slow network. With one send
    # queue per rank, a gradient waits behind an activation still serializing (and vice versa);
    # with one FIFO per link direction they travel in parallel on different links.
    prof = uniform_profile(3, 1.0, 2.0, bandwidth=8000.0, nbytes=2000)  # 2 s per message
    link = E.simulate(prof, "1f1b", 1, 8, transport=E.Transport(queue="link", send_mode="eager", recv_ahead=0))
    rank = E.simulate(prof, "1f1b", 1, 8, transport=E.Transport(queue="rank", send_mode="eager", recv_ahead=0))
    assert rank.step_time > link.step_time
    # each send of rank 1 starts only when its previous send has left
    sends = sorted((e for e in rank.trace if e.rank == 1 and e.kind in ("SF", "SB") and e.step == 1),
                   key=lambda e: e.end)
    for x, y in zip(sends, sends[1:]):
        assert y.end >= x.end + 2.0 - 1e-9


@pytest.mark.parametrize("quantum,first_end", [(math.inf, 1.0), (0.5, 1.5), (0.25, 1.75)])
def test_round_robin_host_scheduler(quantum, first_end):
    # one core, two 1-second jobs arriving together: run to completion (inf) or take turns
    import simpy

    env = simpy.Environment()
    cpu = E.CoreScheduler(env, cores=1, factor=lambda k: 1.0, quantum=quantum)
    ends = []
    a, b = cpu.run(1.0), cpu.run(1.0)
    a.callbacks.append(lambda _e: ends.append(("a", env.now)))
    b.callbacks.append(lambda _e: ends.append(("b", env.now)))
    env.run()
    assert ends[0] == ("a", pytest.approx(first_end))
    assert ends[1] == ("b", pytest.approx(2.0))


def test_round_robin_host_in_a_simulation(tmp_path):
    # 3 stages on 2 cores: the step cannot beat the CPU work / 2, and the profile round-trips quantum_s
    from pipesim import profile as P

    host = Host(cores=2, slowdown={1: 1.0, 2: 1.0}, quantum_s=math.inf)
    prof = uniform_profile(3, 1.0, 2.0, bandwidth=1e10, host=host)   # a bandwidth a profile file may hold
    r = E.simulate(prof, "gpipe", 1, 8, steps=3)
    assert r.step_time >= 3 * 8 * 3.0 / 2 - 1e-9
    prof.save(tmp_path / "p.json")
    assert P.load(tmp_path / "p.json").host.quantum_s == math.inf


def test_pinned_ranks_share_only_their_core():
    # 3 stages on 2 cores, pinned round-robin (0, 1, 0): ranks 0 and 2 share core 0, rank 1 has core 1.
    pinned = Host(cores=2, slowdown={1: 1.0}, placement=(0, 1, 0))
    alone = E.simulate(uniform_profile(3, 1.0, 1.0), "gpipe", 1, 1, steps=1)
    r = E.simulate(uniform_profile(3, 1.0, 1.0, host=pinned), "gpipe", 1, 1, steps=1)
    assert r.step_time == pytest.approx(alone.step_time)  # one micro-batch: never two ranks busy at once
    r = E.simulate(uniform_profile(3, 1.0, 1.0, host=pinned), "gpipe", 1, 4, steps=1)
    # with 4 micro-batches rank 0's forwards overlap rank 2's: those run at half speed
    f = {e.action: e.duration for e in r.trace if e.kind == "F"}
    assert f["1F1"] == pytest.approx(1.0)  # rank 1 never shares its core
    assert max(f["0F3"], f["2F0"]) > 1.0
    with pytest.raises(ValueError, match="placement"):
        E.simulate(uniform_profile(2, host=pinned), "gpipe", 1, 2)


def test_runtime_overhead_adds_to_each_computation():
    from dataclasses import replace

    prof = uniform_profile(2, 1.0, 2.0)
    st = tuple(replace(s, compute={m: replace(c, overhead_s=0.5) for m, c in s.compute.items()}) for s in prof.stages)
    r = E.simulate(replace(prof, stages=st), "gpipe", 1, 4, steps=1)
    assert r.step_time == pytest.approx((4 + 1) * (1.0 + 2.0 + 2 * 0.5))
    # a schedule's own probe wins over the default; a schedule without one falls back to it
    st = tuple(replace(s, compute={m: replace(c, overhead_s=0.5, overhead_by_schedule_s={"1f1b": 0.25})
                                   for m, c in s.compute.items()}) for s in prof.stages)
    both = replace(prof, stages=st)
    assert E.simulate(both, "gpipe", 1, 4, steps=1).step_time == pytest.approx((4 + 1) * (1.0 + 2.0 + 2 * 0.5))
    r = E.simulate(both, "1f1b", 1, 4, steps=1)
    f = [e.duration for e in r.trace if e.kind == "F"]
    assert f and all(d == pytest.approx(1.25) for d in f)
    # the schedule's name in any case is the schedule, its own overhead included
    assert E.simulate(both, "1F1B", 1, 4, steps=1).step_time == r.step_time


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "zbh1", "interleaved1f1b"])
def test_a_probed_overhead_makes_each_ranks_busy_time_the_probes_cpu_per_step(schedule):
    """With a schedule's probed overhead per action, each rank's busy time in a step is its solo
    compute plus the overhead times its computations: 2 m for gpipe and 1f1b, 3 m for zbh1 (B
    and W, the first stage's too), 2 m v for interleaved1f1b (on each virtual stage's own
    compute), which is what calibrate/overhead.py divides the CPU per step by."""
    from dataclasses import replace

    from pipesim.profile import StageCompute

    m, v = 4, 2
    oh = {"gpipe": 0.010, "1f1b": 0.020, "zbh1": 0.030, "interleaved1f1b": 0.040}
    base = uniform_profile(3, 1.0, 2.0, opt=0.25)
    stages = []
    for r, st in enumerate(base.stages):
        by = {k: x * (r + 1) for k, x in oh.items()}
        # B + W differs from backward_s, and the virtual stages from the rank's compute, so that each
        # schedule's solo compute is its own
        c = replace(st.compute[1], backward_input_s=0.01 if r == 0 else 0.8, backward_weight_s=2.1 if r == 0 else 1.3,
                    overhead_s=0.5, overhead_by_schedule_s=by)
        parts = ({1: StageCompute(0.3 + 0.1 * r, 0.7, overhead_s=0.5, overhead_by_schedule_s=by)},
                 {1: StageCompute(0.6, 1.5 + 0.1 * r, overhead_s=0.5, overhead_by_schedule_s=by)})
        stages.append(replace(st, compute={1: c}, virtual_stages=parts))
    prof = replace(base, stages=tuple(stages))
    res = E.simulate(prof, schedule, 1, m, steps=2, record=False)
    work = E.rank_work(prof, schedule, 1, m)
    for r, st in enumerate(prof.stages):
        c = st.compute[1]
        if schedule == "zbh1":
            solo, n = m * (c.forward_s + c.backward_input_s + c.backward_weight_s), 3 * m
        elif schedule == "interleaved1f1b":
            solo, n = m * sum(part[1].forward_s + part[1].backward_s for part in st.virtual_stages), 2 * m * v
        else:
            solo, n = m * (c.forward_s + c.backward_s), 2 * m
        assert work[r] == (pytest.approx(solo + st.optimizer_s, rel=1e-12), n)
        assert res.ranks[r].compute == pytest.approx(solo + st.optimizer_s + n * oh[schedule] * (r + 1), rel=1e-12)


def test_profile_transport_section_is_the_default():
    from dataclasses import replace

    prof = uniform_profile(3, 0.02, 0.04, latency=0.05, bandwidth=1e9, nbytes=10 ** 5)   # gloo backend
    section = E.Transport(queue="rank", send_mode="rendezvous", recv_ahead=None)
    with_section = replace(prof, transport=section)
    assert E.Transport.for_profile(prof) == E.Transport.for_backend("gloo")
    assert E.Transport.for_profile(with_section) == section
    base = E.simulate(prof, "gpipe", 1, 8).step_time
    own = E.simulate(with_section, "gpipe", 1, 8).step_time
    assert own == E.simulate(prof, "gpipe", 1, 8, transport=section).step_time != base
    assert E.simulate(with_section, "gpipe", 1, 8, transport=E.Transport.for_backend("gloo")).step_time == base


def test_summary_never_prints_minus_zero():
    """Idle is rank 0's step time minus compute and waiting: a rounding remainder of -1e-17
    used to print as '-0.0000' (docs/profile.md's worked example)."""
    from pipesim import profile as P

    tr = E.Transport(queue="rank", send_mode="rendezvous", recv_ahead=None)
    res = E.simulate(P.load(), "1f1b", 1, 8, parse("delay 5ms"), transport=tr)
    assert any(r.idle < 0 for r in res.ranks)  # the remainder this test is about
    assert "-0.0000" not in res.summary(), res.summary()
