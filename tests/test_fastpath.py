"""The exact fast path (pipesim/fastpath.py) against the SimPy engine, the reference.

Every figure of the result must agree to 1e-9 s, for every registered schedule (several
stages per rank and a split backward included): per-rank step ends of every step,
compute and waiting per rank, the step time, peak activations, the action count, and
(with engine="fast" and a trace) the trace events. Where the fast path does not apply,
engine="auto" runs SimPy and engine="fast" refuses.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipesim import engine as E
from pipesim import schedule as S
from pipesim.profile import Host, Link, Profile, Stage, StageCompute
from pipesim.transport import Transport
from tests.helpers import uniform_profile

GOLDEN = Path(__file__).parent / "golden"
TOL = 1e-9
# PIPESIM_FASTPATH_EXAMPLES=2000 for a longer search than the suite's
EXAMPLES = int(os.environ.get("PIPESIM_FASTPATH_EXAMPLES", "60"))

TRANSPORTS = [
    Transport(),  # gloo: link queues, rendezvous, receives at step start
    Transport(send_mode="eager"),
    Transport(send_mode="rendezvous", recv_ahead=0),
    Transport(send_mode="eager", recv_ahead=1),
    Transport(queue="rank", send_mode="rendezvous", recv_ahead=0),  # nccl
    Transport(queue="rank", send_mode="eager", recv_ahead=0),
    Transport(queue="rank", send_mode="rendezvous", recv_ahead=None),
    Transport(send_mode="rendezvous", eager_limit_bytes=300_000),
]


def agree(a: E.SimResult, b: E.SimResult) -> None:
    assert a.actions == b.actions
    assert abs(a.step_time - b.step_time) <= TOL
    assert abs(a.bubble_fraction - b.bubble_fraction) <= TOL
    assert len(a.step_ends) == len(b.step_ends)
    for ea, eb in zip(a.step_ends, b.step_ends):
        assert len(ea) == len(eb)
        assert max((abs(x - y) for x, y in zip(ea, eb)), default=0.0) <= TOL
    for ra, rb in zip(a.ranks, b.ranks):
        assert ra.peak_inflight == rb.peak_inflight
        for f in ("step_time", "compute", "waiting", "idle"):
            assert abs(getattr(ra, f) - getattr(rb, f)) <= TOL, (ra.rank, f)


def both(prof, sched, mbs, batch, net, **kw) -> tuple[E.SimResult, E.SimResult]:
    ref = E.simulate(prof, sched, mbs, batch, net, engine="simpy", **kw)
    fast = E.simulate(prof, sched, mbs, batch, net, engine="auto", **kw)
    assert ref.engine == "simpy"
    agree(ref, fast)
    return ref, fast


def hetero_profile(p: int, nbytes: int = 1 << 20, window: int | None = 1 << 18) -> Profile:
    stages = tuple(Stage(compute={1: StageCompute(0.01 * (1 + s % 3), 0.025 + 0.003 * s, nbytes, nbytes // 2 + 17,
                                                  overhead_s=1e-4)}, optimizer_s=0.002 * s)
                   for s in range(p))
    links = {}
    for s in range(p - 1):
        for a, b in ((s, s + 1), (s + 1, s)):
            links[(a, b)] = Link(a, b, 1e-4 * (1 + a), 1e9 + 1e8 * b, window)
    return Profile(stages=stages, links=links, device={"backend": "gloo"})


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.txt")), ids=lambda p: p.stem)
@pytest.mark.parametrize("tr", TRANSPORTS, ids=lambda t: t.describe())
@pytest.mark.parametrize("net", ["default", "delay 10ms bandwidth 1Gbps", "bandwidth 100Mbps"])
def test_golden_schedules_agree(path, tr, net):
    name, *parts = path.stem.split("_")
    size = {t[0]: int(t[1:]) for t in parts if t[0] in "pvm" and t[1:].isdigit()}
    lowered = S.from_text(path.read_text())
    prof = hetero_profile(size["p"])
    _, fast = both(prof, name, 1, size["m"], net, transport=tr, steps=3, record=False, lowered=lowered)
    if tr.send_mode == "eager" or (tr.queue == "link" and tr.recv_ahead is None):
        assert fast.engine == "fast"  # static by construction (W, virtual stages too): the check never fails


def test_seed_grid_profile_takes_the_fast_path():
    from pipesim import network as N
    from pipesim import profile as P
    prof = P.load()
    used = set()
    for net in N.parse_grid("seed"):
        for s, mbs, batch in (("gpipe", 4, 64), ("1f1b", 4, 64), ("zbh1", 4, 64), ("interleaved1f1b", 4, 48)):
            _, fast = both(prof, s, mbs, batch, net, steps=2, record=False)
            used.add(fast.engine)
    assert used == {"fast"}


@pytest.mark.parametrize("v", [2, 3])
@pytest.mark.parametrize("tr", TRANSPORTS, ids=lambda t: t.describe())
def test_virtual_stages_and_split_backward_agree(v, tr):
    """Several stages per rank (wires between ranks that are not neighbours, hand-offs inside a
    rank with one rank) and a split backward (B keeps the micro-batch live, W frees it)."""
    for p, m in ((1, 2), (2, 4), (3, 6), (4, 4)):
        prof = hetero_profile(p)
        _, fast = both(prof, "interleaved1f1b", 1, m, "delay 1ms bandwidth 1Gbps", transport=tr, steps=2,
                       record=False, stages_per_rank=v)
        if tr.send_mode == "eager":
            assert fast.engine == "fast"
    for p, m in ((1, 3), (2, 5), (4, 7)):
        _, fast = both(hetero_profile(p), "zbh1", 1, m, "bandwidth 200Mbps", transport=tr, steps=2, record=False)
        if tr.send_mode == "eager":
            assert fast.engine == "fast"


@settings(max_examples=EXAMPLES, deadline=None)
@given(p=st.integers(2, 5), m=st.integers(1, 7), sched=st.sampled_from(["gpipe", "1f1b", "zbh1", "interleaved1f1b"]),
       steps=st.integers(1, 3), tr=st.sampled_from(TRANSPORTS),
       f=st.lists(st.floats(1e-4, 0.1), min_size=5, max_size=5),
       b=st.lists(st.floats(1e-4, 0.2), min_size=5, max_size=5),
       nbytes=st.integers(0, 4 << 20), window=st.sampled_from([None, 1 << 16, 1 << 20]),
       lat=st.floats(0, 0.02), bw=st.floats(1e7, 1e11), opt=st.floats(0, 0.05),
       net=st.sampled_from(["default", "delay 5ms", "bandwidth 200Mbps", "delay 1ms bandwidth 1Gbps"]))
def test_random_profiles_agree(p, m, sched, steps, tr, f, b, nbytes, window, lat, bw, opt, net):
    stages = tuple(Stage(compute={1: StageCompute(f[s], b[s], nbytes, nbytes // 3)}, optimizer_s=opt * (s % 2))
                   for s in range(p))
    links = {}
    for s in range(p - 1):
        for x, y in ((s, s + 1), (s + 1, s)):
            links[(x, y)] = Link(x, y, lat * (1 + x) / 2, bw, window)
    prof = Profile(stages=stages, links=links, device={"backend": "gloo"})
    if sched == "interleaved1f1b":
        m = p * (1 + m % 2)  # equal rounds of p micro-batches (check_shape), 2 stages per rank
    _, fast = both(prof, sched, 1, m, net, transport=tr, steps=steps, record=False)
    static = tr.send_mode == "eager" or (tr.queue == "link" and tr.recv_ahead is None and not tr.eager_limit_bytes)
    if static and nbytes > 0:  # transfers of no length can tie, and ties fall back
        assert fast.engine == "fast"


@pytest.mark.parametrize("tr", TRANSPORTS[:5], ids=lambda t: t.describe())
def test_trace_with_engine_fast_has_simpys_events(tr):
    prof = hetero_profile(3)
    ref = E.simulate(prof, "1f1b", 1, 6, "delay 2ms", transport=tr, steps=2, engine="simpy")
    fast = E.simulate(prof, "1f1b", 1, 6, "delay 2ms", transport=tr, steps=2, engine="fast")
    assert fast.engine == "fast"
    agree(ref, fast)
    key = lambda e: (e.rank, e.action, e.step)  # noqa: E731
    assert len(ref.trace) == len(fast.trace)
    for x, y in zip(sorted(ref.trace, key=key), sorted(fast.trace, key=key)):
        assert key(x) == key(y) and x.bytes == y.bytes
        assert abs(x.start - y.start) <= TOL and abs(x.end - y.end) <= TOL
    # auto with a trace runs SimPy (its order of simultaneous events is the reference)
    assert E.simulate(prof, "1f1b", 1, 6, "delay 2ms", transport=tr, steps=2).engine == "simpy"


def test_replayed_durations_agree():
    prof = hetero_profile(3)
    dur = lambda r, step, a: 0.001 * (1 + r) + 0.0003 * step + (0.002 if "B" in a else 0.0)  # noqa: E731
    both(prof, "gpipe", 1, 5, "delay 1ms", steps=3, record=False, durations=dur)
    assert E.simulate(prof, "gpipe", 1, 5, "delay 1ms", steps=3, record=False, durations=dur).engine == "fast"


def test_zero_communication_invariant_is_exact():
    prof = uniform_profile(4, f=1.0, b=2.0)
    for s in ("gpipe", "1f1b"):
        r = E.simulate(prof, s, 1, 8, steps=2, record=False, engine="fast")
        assert r.step_time == pytest.approx((8 + 4 - 1) * 3.0, abs=1e-12)
    # interleaved 1F1B with v stages per rank: the bubble shrinks by v, (m + (p - 1) / v)(f + b)
    for v in (2, 4):
        r = E.simulate(prof, "interleaved1f1b", 1, 8, steps=2, record=False, engine="fast", stages_per_rank=v)
        assert r.step_time == pytest.approx((8 + (4 - 1) / v) * 3.0, abs=1e-12)


def test_shared_host_falls_back_to_simpy():
    prof = uniform_profile(3, nbytes=1000, latency=1e-3, bandwidth=1e9, host=Host(cores=2, slowdown={1: 1.0, 2: 1.2, 3: 1.5}))
    assert E.simulate(prof, "1f1b", 1, 4, record=False).engine == "simpy"
    with pytest.raises(ValueError, match="shared host"):
        E.simulate(prof, "1f1b", 1, 4, record=False, engine="fast")


def test_deadlock_falls_back_and_is_reported():
    lowered = S.from_text("rank 0: 0RB0 0F0 0B0 0SF0\nrank 1: 1RF0 1F0 1B0 1SB0\n")
    prof = uniform_profile(2, nbytes=10, latency=1e-3, bandwidth=1e9)
    with pytest.raises(RuntimeError, match="deadlock"):
        E.simulate(prof, "gpipe", 1, 1, lowered=lowered, record=False)
    with pytest.raises(ValueError, match="does not apply"):
        E.simulate(prof, "gpipe", 1, 1, lowered=lowered, record=False, engine="fast")


def test_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="engine"):
        E.simulate(uniform_profile(2), "gpipe", 1, 2, engine="jax")


def test_timing_dependent_wire_order_is_found_and_checked():
    """The NCCL case of the engine's monotonicity paragraph: with 50 ms more delay a ready-notice
    overtakes a gradient on the wire 2 -> 1. The fast path merges the wire's two streams by time,
    so it gets both orders right, and SimPy's figures."""
    stages = tuple(Stage({1: StageCompute(0.001, 0.002, act, grad)})
                   for act, grad in ((10 ** 6, 0), (10 ** 6, 0), (0, 10 ** 6)))
    links = {(a, c): Link(a, c, 0.0, 1e8) for a, c in ((0, 1), (1, 0), (1, 2), (2, 1))}
    prof = Profile(stages, links)
    tr = E.Transport.for_backend("nccl")
    for net, want in (("bandwidth 10Mbps", 4.012), ("delay 50ms bandwidth 10Mbps", 3.658)):
        _, fast = both(prof, "1f1b", 1, 2, net, transport=tr, steps=1, record=False)
        assert fast.engine == "fast" and fast.step_time == pytest.approx(want, abs=1e-3)


def test_cli_engine_flag(capsys):
    from loop.cli import main
    out = {}
    for eng in ("simpy", "fast"):
        assert main(["simulate", "--schedule", "1f1b", "--micro-batch-size", "2", "--batch-size", "16",
                     "--network", "delay 5ms", "--engine", eng]) == 0
        out[eng] = capsys.readouterr().out
    assert out["simpy"] == out["fast"]
    assert main(["grid", "--micro-batch-sizes", "4", "--engine", "fast"]) == 0

