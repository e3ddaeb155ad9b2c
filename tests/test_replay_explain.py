"""Replay with a run's own durations, and explain's critical-path attribution."""

from __future__ import annotations

import random

import pytest
from helpers import Host, uniform_profile

from pipesim import engine as E
from pipesim import explain as X
from pipesim import replay as RP
from pipesim.trace import TraceEvent


def _jittered(seed: int):
    """Durations that differ per rank, step and action (a deterministic hand-made run)."""
    rng = random.Random(seed)
    cache: dict = {}

    def dur(rank: int, step: int, action: str) -> float:
        key = (rank, step, action)
        if key not in cache:
            base = 0.004 if action == "OPT" else (0.01 if "F" in action else 0.02)
            cache[key] = base * rng.uniform(0.7, 1.6)
        return cache[key]
    return dur


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("network", ["default", "delay 3ms", "delay 1ms bandwidth 50Mbps"])
def test_replay_reproduces_a_hand_made_trace_exactly(schedule, network):
    prof = uniform_profile(3, latency=1e-4, bandwidth=1e9, nbytes=200_000, mbs=(1, 2))
    made = E.simulate(prof, schedule, 1, 4, network, steps=6, durations=_jittered(7))
    rp = RP.replay(prof, made.trace, schedule, 1, 4, network, warmup=2)
    assert rp.steps == 6
    ends = made.step_ends[0]
    assert rp.periods == pytest.approx([ends[k] - ends[k - 1] for k in range(2, 6)], abs=1e-12)
    for got, want in zip(rp.result.step_ends, made.step_ends):
        assert got == pytest.approx(want, abs=1e-12)


def test_replay_turns_the_host_model_off_and_uses_only_the_trace():
    shared = uniform_profile(3, host=Host(cores=2, slowdown={1: 1.0}, placement=(0, 1, 0)))
    made = E.simulate(shared, "gpipe", 1, 4, steps=4)  # ranks 0 and 2 share a core: their durations stretch
    rp = RP.replay(shared, made.trace, "gpipe", 1, 4, warmup=1)
    for got, want in zip(rp.result.step_ends, made.step_ends):
        assert got == pytest.approx(want, abs=1e-9)


def test_replay_errors_name_what_is_missing():
    prof = uniform_profile(2)
    made = E.simulate(prof, "gpipe", 1, 2, steps=3)
    cut = [e for e in made.trace if not (e.rank == 1 and e.step == 2 and e.action == "1B1")]
    with pytest.raises(ValueError, match="no 1B1 of rank 1 in step 2"):
        RP.replay(prof, cut, "gpipe", 1, 2)
    with pytest.raises(ValueError, match="needs at least one measured step"):
        RP.replay(prof, made.trace, "gpipe", 1, 2, warmup=3)
    with pytest.raises(ValueError, match="no compute events"):
        RP.replay(prof, [], "gpipe", 1, 2)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("network", ["default", "delay 3ms", "bandwidth 20Mbps"])
def test_critical_path_adds_up_to_the_step(schedule, network):
    prof = uniform_profile(3, latency=1e-4, bandwidth=1e9, nbytes=200_000, opt=0.003)
    res = E.simulate(prof, schedule, 1, 4, network, steps=3, durations=_jittered(3))
    for step in (1, 2):
        path = X.critical_path(res.trace, step)
        assert sum(path.segments.values()) == pytest.approx(path.period, abs=1e-12)
        ends = res.step_ends[0]
        assert path.period == pytest.approx(ends[step] - ends[step - 1], abs=1e-12)


def test_critical_path_of_a_known_pipeline():
    """Two stages, one micro-batch, no overheads: the step is F0, transfer, F1, B1, transfer, B0, OPT."""
    prof = uniform_profile(2, f=1.0, b=2.0, latency=0.5, bandwidth=1e30, opt=0.25)
    res = E.simulate(prof, "gpipe", 1, 1, steps=2)
    path = X.critical_path(res.trace, 1)
    assert path.period == pytest.approx(1 + 0.5 + 1 + 2 + 0.5 + 2 + 0.25)
    assert path.segments == pytest.approx({"compute stage 0 F": 1, "transfer 0->1": 0.5, "compute stage 1 F": 1,
                                           "compute stage 1 B": 2, "transfer 1->0": 0.5, "compute stage 0 B": 2,
                                           "compute stage 0 OPT": 0.25})


def test_explain_adds_up_to_the_difference_and_finds_the_cause():
    prof = uniform_profile(3, latency=1e-4, bandwidth=1e9, nbytes=100_000, opt=0.002)
    base = E.simulate(prof, "1f1b", 1, 4, "delay 2ms", steps=4)
    # the "measured" run: stage 1's backward takes 3 s instead of 2 s
    meas = E.simulate(prof, "1f1b", 1, 4, "delay 2ms", steps=4,
                      durations=lambda r, s, a: 0.002 if a == "OPT" else
                      (1.0 if "F" in a else (3.0 if r == 1 else 2.0)))
    ex = X.explain(meas.trace, base.trace, warmup=1)
    total = sum(m - s for _, m, s in ex.rows)
    assert total == pytest.approx(ex.difference, abs=1e-9)
    assert ex.rows[0][0] == "compute stage 1 B"
    assert ex.rows[0][1] - ex.rows[0][2] > 0
    text = ex.table(top=3)
    assert "**total**" in text and "compute stage 1 B" in text


def test_explain_rejects_traces_without_steps():
    with pytest.raises(ValueError, match="rank 0"):
        X.critical_path([TraceEvent(1, "1F0", 0, 1, 0)], 1)


def test_replayed_durations_carry_the_ranks_own_gaps_but_not_its_waiting():
    ev = [TraceEvent(1, "1RF0", 0.0, 0.1, 0), TraceEvent(1, "1RF1", 0.0, 1.2, 0),
          TraceEvent(1, "1F0", 0.1, 1.1, 0), TraceEvent(1, "1F1", 1.5, 2.5, 0),   # waited 0.1 of the 0.4 gap
          TraceEvent(1, "1SB1", 2.6, 2.7, 0),
          TraceEvent(1, "OPT", 2.9, 3.0, 0)]   # waited for its send until 2.7, then 0.2 of its own
    d = RP.durations_from_trace(ev)
    assert d[(1, 0, "1F0")] == pytest.approx(1.0)
    assert d[(1, 0, "1F1")] == pytest.approx(1.0 + 0.3)
    assert d[(1, 0, "OPT")] == pytest.approx(0.1 + 0.2)
    bare = RP.durations_from_trace(ev, with_gaps=False)
    assert bare[(1, 0, "1F1")] == pytest.approx(1.0) and bare[(1, 0, "OPT")] == pytest.approx(0.1)


def _lags(seed: int):
    """Send lags that differ per rank, step and send (a hand-made run's posts)."""
    rng = random.Random(seed)
    cache: dict = {}

    def lag(rank: int, step: int, action: str) -> float:
        return cache.setdefault((rank, step, action), 0.003 * rng.uniform(0.0, 1.0))
    return lag


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "zbh1"])
@pytest.mark.parametrize("network", ["default", "delay 3ms", "delay 1ms bandwidth 50Mbps"])
def test_replay_reproduces_a_hand_made_trace_with_send_lags_exactly(schedule, network):
    """A run whose posts hold their ranks (each send stamped when its post returns, as the
    runtime stamps it): the replay reads the lags back from the trace and lands on the same
    step ends; without them it does not."""
    prof = uniform_profile(3, latency=1e-4, bandwidth=1e9, nbytes=200_000, mbs=(1, 2))
    made = E.simulate(prof, schedule, 1, 4, network, steps=6, durations=_jittered(7), send_lags=_lags(5))
    rp = RP.replay(prof, made.trace, schedule, 1, 4, network, warmup=2)
    for got, want in zip(rp.result.step_ends, made.step_ends):
        assert got == pytest.approx(want, abs=1e-12)
    old = RP.replay(prof, made.trace, schedule, 1, 4, network, warmup=2, send_lags=False)
    if "bandwidth" not in network:   # behind a slow wire the data comes after the post returns anyway
        assert old.result.step_ends[0][-1] < made.step_ends[0][-1] - 1e-6


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])   # the fast path's schedules
@pytest.mark.parametrize("network", ["default", "delay 2ms", "bandwidth 100Mbps"])
def test_send_lags_agree_in_the_fast_path_and_simpy(schedule, network):
    prof = uniform_profile(3, latency=1e-4, bandwidth=1e9, nbytes=200_000, opt=0.002)
    kw = dict(steps=4, record=False, durations=_jittered(11), send_lags=_lags(13))
    fast = E.simulate(prof, schedule, 1, 4, network, engine="fast", **kw)
    ref = E.simulate(prof, schedule, 1, 4, network, engine="simpy", **kw)
    assert fast.engine == "fast" and ref.engine == "simpy"
    for got, want in zip(fast.step_ends, ref.step_ends):
        assert got == pytest.approx(want, abs=1e-12)


def test_a_send_lag_holds_the_sender_and_the_data_until_the_post_returns():
    """Two stages, one micro-batch: F0 (1 s), its post holds rank 0 for 0.75 s, then the data
    arrives 0.5 s (the latency) later; the wire alone (0.5 s + 0.25 s serialization) would
    have had it there at 1.75 s, not 2.25 s."""
    prof = uniform_profile(2, f=1.0, b=2.0, latency=0.5, bandwidth=8 / 0.25, nbytes=1)
    lag = {(0, 0, "0SF0"): 0.75}
    eager = E.Transport(send_mode="eager")   # no ready-notices on the (slow) wire
    res = E.simulate(prof, "gpipe", 1, 1, steps=1, transport=eager, durations=lambda r, s, a: 0.0 if a == "OPT" else
                     (1.0 if "F" in a else 2.0), send_lags=lambda r, s, a: lag.get((r, s, a), 0.0))
    ev = {(e.rank, e.action): e for e in res.trace}
    assert ev[(0, "0SF0")].start == pytest.approx(1.75)   # stamped when its post returns
    assert ev[(1, "1F0")].start == pytest.approx(2.25)    # 1.75 + latency
    base = E.simulate(prof, "gpipe", 1, 1, steps=1, transport=eager, durations=lambda r, s, a: 0.0 if a == "OPT" else
                      (1.0 if "F" in a else 2.0))
    assert {(e.rank, e.action): e for e in base.trace}[(1, "1F0")].start == pytest.approx(1.75)


def test_durations_split_the_time_up_to_a_sends_stamp_off_as_its_lag():
    ev = [TraceEvent(0, "0F0", 0.0, 1.0, 0), TraceEvent(0, "0SF0", 1.3, 1.4, 0),   # posted 0.3 after F0
          TraceEvent(0, "0F1", 1.5, 2.5, 0), TraceEvent(0, "0SF1", 2.6, 2.7, 0),
          TraceEvent(0, "0RB1", 0.0, 3.5, 0), TraceEvent(0, "0RB0", 0.0, 3.0, 0),
          TraceEvent(0, "0B1", 3.6, 5.6, 0),   # waited for its gradient until 3.5, then 0.1 of its own
          TraceEvent(0, "0B0", 5.8, 7.8, 0),
          TraceEvent(0, "OPT", 7.9, 8.0, 0)]
    lags: dict = {}
    d = RP.durations_from_trace(ev, send_lags=lags)
    assert lags == pytest.approx({(0, 0, "0SF0"): 0.3, (0, 0, "0SF1"): 0.1})
    assert d[(0, 0, "0F1")] == pytest.approx(1.0 + 0.2)   # its own time after the post's stamp (1.3 -> 1.5)
    assert d[(0, 0, "0B1")] == pytest.approx(2.0 + 0.1)   # after its gradient arrived (3.5), not after the post
    assert d[(0, 0, "0B0")] == pytest.approx(2.0 + 0.2)
    whole = RP.durations_from_trace(ev)   # without the split: the post goes to the next computation
    assert whole[(0, 0, "0F1")] == pytest.approx(1.0 + 0.5)
