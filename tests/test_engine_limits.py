"""The simulator's own refusals (pipesim/limits.py) and its host CPU models always making progress."""

from __future__ import annotations

import math
import signal
from dataclasses import replace

import pytest

from pipesim import engine as E
from pipesim import limits
from tests.helpers import Host, uniform_profile

SLOW = {1: 1.0, 2: 1.3, 3: 1.7}


@pytest.fixture
def alarm():
    """Fail instead of hanging: a runaway simulation is what these tests guard against."""
    def boom(*_):
        raise TimeoutError("simulation did not finish in 20 s")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("mbs,batch,steps,match", [
    (1, 99999999999999999999, 2, "batch size must be an integer >= 1"),
    (1, 4, 100_000_000, "steps must be an integer >= 1 and <= 10000"),
    (0, 4, 2, "micro-batch size must be"),
    (1, 4, 0, "steps must be"),
    (1, 4, 2.5, "steps must be"),
    (True, 4, 2, "micro-batch size must be"),
    (1, 2 ** 30, 2, "at most 50,000,000"),
    (3, 4, 2, "not a multiple"),
])
def test_sizes_refused_before_starting(mbs, batch, steps, match):
    with pytest.raises(ValueError, match=match):
        E.simulate(uniform_profile(3), "gpipe", mbs, batch, steps=steps)


def test_actions_per_step_is_exact():
    from pipesim import schedule as S
    for p in (1, 2, 3, 5):
        for m in (1, 3, 8):
            for name in S.GENERATORS:
                for v in ((1, 2, 3) if name in S.VIRTUAL else (1,)):
                    if v > 1 and m % p:
                        continue  # interleaved1f1b needs a multiple of the ranks
                    assert sum(map(len, S.build(name, p, m, stages_per_rank=v))) == \
                        E.actions_per_step(p, m, v, split=name in S.SPLIT_BACKWARD)


def test_grid_size_counts_every_cell():
    assert E.check_grid_size(3, [1, 2], 4, 2, 10) == 10 * (E.actions_per_step(3, 4) + E.actions_per_step(3, 2)) * 2
    with pytest.raises(ValueError, match="this grid would run 40 simulations"):
        E.check_grid_size(3, [1, 2], 400_000, 2, 20)


@pytest.mark.parametrize("network,match", [
    ("link 0-2 delay 1ms", "not pipeline neighbours"),
    ("link 5-9 delay 1ms", "stages 0..2 only"),
])
def test_network_checked_against_the_stages(network, match):
    with pytest.raises(ValueError, match=match):
        E.simulate(uniform_profile(3), "1f1b", 1, 4, network)


def test_absurd_step_time_is_refused_naming_the_largest_input():
    with pytest.raises(ValueError, match=r"step time is nan s.*stage 0 forward_s: 1e\+308 s"):
        E.simulate(uniform_profile(3, f=1e308, b=1e308), "gpipe", 1, 4)
    with pytest.raises(ValueError, match=r"outside \(0, 1e\+09\] s.*link 0->1 transfer of one message"):
        E.simulate(uniform_profile(3, nbytes=10 ** 15, bandwidth=1e3), "gpipe", 1, 4)
    assert limits.MAX_STEP_TIME_S == 1e9


def test_too_fine_a_quantum_is_refused_before_starting(alarm):
    prof = uniform_profile(3, host=Host(cores=2, slowdown=SLOW, quantum_s=1e-300))
    with pytest.raises(ValueError, match="host.quantum_s 1e-300 s cuts .* time slices"):
        E.simulate(prof, "gpipe", 1, 4)


def _overhead_profile(quantum: float, overhead_s: float = 0.5, by_schedule: dict | None = None):
    """3 stages on 2 cores (so computations are preempted), f 1 ms and b 2 ms at mbs 1, and a
    large runtime overhead per computation: the overhead decides how much compute there is."""
    prof = uniform_profile(3, f=1e-3, b=2e-3, host=Host(cores=2, slowdown=SLOW, quantum_s=quantum))
    return replace(prof, stages=tuple(
        replace(st, compute={m: replace(c, overhead_s=overhead_s, overhead_by_schedule_s=by_schedule)
                             for m, c in st.compute.items()})
        for st in prof.stages))


@pytest.mark.parametrize("schedule,by_schedule,work", [
    # 2 steps x 3 ranks x (m (f + b) + computations x overhead), m = 6
    ("gpipe", None, "36.1"),                 # 2m computations per rank
    ("1f1b", None, "36.1"),
    ("zbh1", None, "54.1"),                  # 3m: W charged the overhead as well
    ("interleaved1f1b", None, "72.1"),       # 2mv, v = 2: the overhead per virtual computation
    ("zbh1", {"zbh1": 1.0}, "108"),          # the schedule's own probed overhead
])
def test_the_slice_check_counts_the_computations_the_engine_runs(schedule, by_schedule, work):
    """The time-slice estimate is the engine's own compute: every computation of the schedule
    with its overhead (it used to take m (f + b + 2 overhead_s) per stage for every schedule)."""
    prof = _overhead_profile(1e-300, by_schedule=by_schedule)
    with pytest.raises(ValueError, match=rf"host.quantum_s 1e-300 s cuts {work} s of computation into"):
        E.simulate(prof, schedule, 1, 6)


def test_zbh1_refused_for_the_slices_of_its_w_overhead(alarm):
    """zbh1 with a quantum that leaves 2m computations' overhead under MAX_SIM_ACTIONS slices
    (36.1 s / 9e-7 s = 4.0e7) and 3m computations' over it (54.1 s / 9e-7 s = 6.0e7): refused
    before starting, not run into the alarm."""
    with pytest.raises(ValueError, match=r"cuts 54.1 s of computation into about 6.01e\+07 time slices"):
        E.simulate(_overhead_profile(9e-7), "zbh1", 1, 6)


def test_a_replay_is_not_refused_for_slices_it_does_not_make(alarm):
    """A replay (given durations) runs without the host model, so a quantum that would cut the
    profile's compute into too many slices does not stop it."""
    prof = _overhead_profile(1e-300)
    r = E.simulate(prof, "gpipe", 1, 4, steps=1, durations=lambda rank, step, action: 1e-3)
    assert r.step_time > 0


def test_host_overflow_is_a_value_error(alarm):
    prof = uniform_profile(3, host=Host(cores=2, slowdown={1: 1.0, 2: 1e308}))
    with pytest.raises(ValueError, match="simulated time overflows"):
        E.simulate(prof, "gpipe", 1, 4)


@pytest.mark.parametrize("quantum", [None, 10.0, 1e-6])
@pytest.mark.parametrize("f,b", [(3e4, 1e-7), (1e5, 3e-7), (7e3, 1.1e-9)])
def test_host_cpu_progresses_where_the_clock_is_coarse(alarm, f, b, quantum):
    """A tiny computation late in a long run lasts less than the clock can resolve at that
    time: it ends instead of waking up at the same instant forever (it used to hang)."""
    prof = uniform_profile(3, f=f, b=b, host=Host(cores=2, slowdown=SLOW, quantum_s=quantum))
    try:
        t = E.simulate(prof, "1f1b", 1, 4, steps=2, record=False).step_time
    except ValueError as e:  # a quantum too fine for this much compute: refused before starting
        assert quantum is not None and "time slices" in str(e)
        return
    assert math.isfinite(t) and t >= 8 * f
