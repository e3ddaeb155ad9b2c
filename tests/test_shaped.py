"""The CPU a rate cap without a delay costs the ranks: the profile's figure, the engine's
charge, and calibration's probe (calibrate/shaped.py) with its launches stood in for."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from pipesim import engine as E
from pipesim import profile as prof
from pipesim.network import parse
from pipesim.profile import Host
from tests.helpers import uniform_profile


def test_cpu_per_byte_interpolates_in_log_rate_and_holds_the_ends():
    h = Host(2, {1: 1.0}, shaped_cpu=((1e9, 1e-9), (4e9, 3e-9)))
    assert h.cpu_per_byte(1e9) == 1e-9 and h.cpu_per_byte(4e9) == 3e-9
    assert math.isclose(h.cpu_per_byte(2e9), 2e-9, rel_tol=1e-12)   # halfway in log rate
    assert h.cpu_per_byte(1e8) == 1e-9 and h.cpu_per_byte(1e11) == 3e-9   # outside: the nearest probed rate's
    assert Host(2, {1: 1.0}).cpu_per_byte(1e9) == 0.0                 # nothing probed: nothing charged


def _two_cores(k: float, rate: float = 8e9) -> prof.Profile:
    """2 ranks, each on its own core, 1 MB messages, forward 1 s, backward 2 s."""
    base = uniform_profile(2, f=1.0, b=2.0, opt=0.5, latency=1e-4, bandwidth=1e10, nbytes=1_000_000)
    return replace(base, host=Host(2, {1: 1.0}, placement=(0, 1), shaped_cpu=((rate, k),) if k else ()))


def test_the_charge_delays_exactly_what_shares_a_core_with_it():
    """One micro-batch on two cores: the activation's charge w on the receiver's core starts when the
    message enters the wire; the receiver waits the transfer T alone, then its forward shares the core
    with the w - T left of the charge and ends w - T later. The gradient's does the same to rank 0's
    backward. So rank 0's step grows by exactly 2 (w - T)."""
    net = "bandwidth 8Gbps"
    k = 1e-7   # s per byte: w = 0.1 s per message end
    plain = E.simulate(_two_cores(0.0), "gpipe", 1, 1, net, steps=1)
    shaped = E.simulate(_two_cores(k), "gpipe", 1, 1, net, steps=1)
    t = 1e-4 + 1_000_000 * 8 / 8e9   # latency + serialisation at the cap
    assert math.isclose(shaped.step_time - plain.step_time, 2 * (k * 1_000_000 - t), rel_tol=1e-9)
    # each rank sends one message and receives one per step: 2 w charged to each, reported per rank
    assert shaped.shaped_cpu == pytest.approx((2 * k * 1_000_000,) * 2, rel=1e-12) and plain.shaped_cpu == ()


@pytest.mark.parametrize("net", ["default", "delay 1ms", "delay 1ms bandwidth 8Gbps"])
def test_no_charge_without_a_cap_or_under_a_delay(net):
    assert E.simulate(_two_cores(1e-7), "gpipe", 1, 4, net).step_time == \
        E.simulate(_two_cores(0.0), "gpipe", 1, 4, net).step_time


def test_a_per_link_cap_charges_only_that_link():
    """3 ranks on 3 cores; a cap on 1->2 alone lengthens the step less than the same cap everywhere."""
    base = uniform_profile(3, f=1.0, b=2.0, latency=1e-4, bandwidth=1e10, nbytes=1_000_000)
    p = replace(base, host=Host(3, {1: 1.0}, placement=(0, 1, 2), shaped_cpu=((8e9, 1e-7),)))
    q = replace(p, host=replace(p.host, shaped_cpu=()))
    one = E.simulate(p, "gpipe", 1, 1, "link 1-2 bandwidth 8Gbps", steps=1).step_time - \
        E.simulate(q, "gpipe", 1, 1, "link 1-2 bandwidth 8Gbps", steps=1).step_time
    every = E.simulate(p, "gpipe", 1, 1, "bandwidth 8Gbps", steps=1).step_time - \
        E.simulate(q, "gpipe", 1, 1, "bandwidth 8Gbps", steps=1).step_time
    assert 0 < one < every


def test_a_replay_charges_nothing():
    """Replayed durations already hold the kernel's work of the run they came from."""
    durs = lambda r, step, a: 0.5   # noqa: E731
    a = E.simulate(_two_cores(1e-7), "gpipe", 1, 2, "bandwidth 8Gbps", durations=durs).step_time
    b = E.simulate(_two_cores(0.0), "gpipe", 1, 2, "bandwidth 8Gbps", durations=durs).step_time
    assert a == b


def test_shaped_cpu_round_trips_and_bad_values_name_the_field(tmp_path):
    p = _two_cores(1e-9)
    assert prof.from_json(p.to_json()) == p
    doc = p.to_json()
    assert doc["host"]["shaped_cpu"] == [{"bandwidth_bps": 8e9, "s_per_byte": 1e-9}]
    assert "shaped_cpu" not in _two_cores(0.0).to_json()["host"]   # left out where nothing was probed
    bad = json.loads(json.dumps(doc))
    bad["host"]["shaped_cpu"] = [{"bandwidth_bps": 8e9, "s_per_byte": -1e-9}]
    with pytest.raises(ValueError, match=r"host\.shaped_cpu\[0\]\.s_per_byte"):
        prof.from_json(bad, origin="p.json")
    bad["host"]["shaped_cpu"] = [{"bandwidth_bps": 8e9, "s_per_byte": 1e-9}, {"bandwidth_bps": 8e9, "s_per_byte": 2e-9}]
    with pytest.raises(ValueError, match="8e\\+09 bit/s twice"):
        prof.from_json(bad, origin="p.json")


# ---------------------------------------------------------------- calibration's probe

def _probe_profile():
    base = uniform_profile(3, f=0.01, b=0.02, latency=1e-4, bandwidth=1e10, nbytes=65536)
    return replace(base, host=Host(2, {1: 1.0}, placement=(0, 1, 0)))


def test_bytes_per_step_counts_each_message_at_both_ends():
    from calibrate.shaped import bytes_per_step

    # 3 ranks, 64 KiB each way per micro-batch: the ends move one message each way, the middle two
    assert bytes_per_step(_probe_profile(), 1, 4) == [2 * 65536 * 4, 4 * 65536 * 4, 2 * 65536 * 4]


def test_rates_of_a_grid_are_its_caps_without_a_delay():
    from calibrate.shaped import rates_of

    assert rates_of([parse(x) for x in ("default", "delay 5ms bandwidth 2Gbps", "bandwidth 1Gbps",
                                        "bandwidth 5Gbps", "link 0-1 bandwidth 200Mbps")]) == [2e8, 1e9, 5e9]
    assert rates_of([parse("delay 1ms")]) == []


def test_probe_recovers_the_cpu_per_byte_from_the_launches():
    """Launches stood in for: each rank's CPU outside its computations is 2 ms on the default network
    plus k(rate) per byte it moves under a cap; the probe gives k back, per rate, with no fit error."""
    from calibrate.shaped import bytes_per_step, probe

    p = _probe_profile()
    truth = {None: 0.0, "bandwidth 5Gbps": 1e-9, "bandwidth 1Gbps": 2e-9}
    nb = bytes_per_step(p, 1, 4)
    calls, said = [], []

    def run(network, schedule, mbs, batch, steps):
        calls.append((network, schedule, mbs, batch, steps))
        return {"per_rank": [{"rank": r, "cpu_per_step": {"median": 0.030 + 0.002 + truth[network] * nb[r]},
                              "compute_cpu_per_step": {"median": 0.030}} for r in (2, 0, 1)]}

    out = probe(p, 3, "tiny", 1, [1e9, 5e9], run=run, progress=said.append)
    assert [r for r, _ in out.host.shaped_cpu] == [1e9, 5e9]
    assert [k for _, k in out.host.shaped_cpu] == pytest.approx([2e-9, 1e-9], rel=1e-9)
    # alternating order over 2 launches, every one gpipe at the given size with 4 micro-batches
    assert [c[0] for c in calls] == [None, "bandwidth 1Gbps", "bandwidth 5Gbps",
                                     "bandwidth 5Gbps", "bandwidth 1Gbps", None]
    assert {c[1:] for c in calls} == {("gpipe", 1, 4, 12)}
    assert len(said) == 6 and said[0].startswith("shaped-link CPU probe [1/6]")
    raw = out.raw["shaped_cpu_probe"]
    assert raw["bytes_per_step"] == nb and raw["rates"][0]["fit_max_abs_error_s"] == pytest.approx(0, abs=1e-15)
    assert "CPU per byte under a rate cap probed at 1e+09 bit/s, 5e+09 bit/s" in out.description
    assert prof.from_json(out.to_json()) == out
    assert p.host.shaped_cpu == ()   # the input is left alone


def test_probe_never_charges_less_than_nothing_and_refuses_what_it_cannot_probe():
    from calibrate.shaped import probe

    p = _probe_profile()

    def quieter(network, schedule, mbs, batch, steps):   # a cap that costs less than the default network
        x = 0.001 if network else 0.002
        return {"per_rank": [{"rank": r, "cpu_per_step": {"median": x}} for r in range(3)]}

    assert probe(p, 3, "tiny", 1, [1e9], run=quieter, launches=1).host.shaped_cpu == ((1e9, 0.0),)
    with pytest.raises(ValueError, match="host section"):
        probe(replace(p, host=None), 3, "tiny", 1, [1e9], run=quieter)
    with pytest.raises(ValueError, match="at least one rate"):
        probe(p, 3, "tiny", 1, [], run=quieter)
    with pytest.raises(ValueError, match="shaped-link probe rate"):
        probe(p, 3, "tiny", 1, [0.0], run=quieter)
    with pytest.raises(ValueError, match="send nothing"):
        probe(replace(p, stages=tuple(replace(s, compute={1: replace(s.compute[1], activation_bytes=0,
                                                                         gradient_bytes=0)}) for s in p.stages)),
              3, "tiny", 1, [1e9], run=quieter)


def test_shaped_probe_flag_reads_rates_or_the_seed():
    from calibrate.cli import parse_rates

    assert parse_rates("seed") == [1e9, 2e9, 5e9]
    assert parse_rates("5Gbps, 200Mbps,5Gbps") == [2e8, 5e9]
    for bad, why in (("fast", "not a rate"), (" , ", "no rate")):
        with pytest.raises(ValueError, match=why):
            parse_rates(bad)


def test_the_profile_summary_states_the_figure():
    from calibrate.summary import summary

    assert "each byte a rank sends or receives costs its core: 8.00 Gbit/s 1.00 ns" in summary(_two_cores(1e-9))


@pytest.mark.netns
def test_calibrate_probes_a_cap_on_the_real_testbed(tmp_path):
    """`pipesim calibrate --local --shaped-probe 1Gbps`: real launches of the runtime on the default
    network and under the cap (htb on the testbed's veth); the figure lands in the profile, the
    launches in its raw section, and the summary states it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("torch")
    if os.geteuid() != 0:
        pytest.skip("needs root: the cap is shaped on the local testbed's network namespaces")
    from testbed import available

    ok, reason = available()
    if not ok:
        pytest.skip(f"no local testbed here: {reason}")
    out = tmp_path / "p.json"
    repo = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-m", "pipesim", "calibrate", "--local", "--ranks", "2", "--model", "tiny",
                        "--micro-batch-sizes", "1", "--repeats", "3", "--link-repeats", "3", "--contention-s", "0.1",
                        "--link-max-bytes", "262144", "--no-overhead-probe", "--shaped-probe", "1Gbps",
                        "--out", str(out)], cwd=repo, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    p = prof.load(out)
    assert [rate for rate, _ in p.host.shaped_cpu] == [1e9]
    k = p.host.shaped_cpu[0][1]
    assert 0 <= k < 1e-6   # s per byte: below a microsecond (measured: about 1-2 ns on a 2-core VM)
    raw = p.raw["shaped_cpu_probe"]
    assert raw["rates"][0]["network"] == "bandwidth 1Gbps" and len(raw["default_outside_cpu_launches_s"]) == 2
    assert all(len(x) == 2 and all(v > 0 for v in x) for x in raw["default_outside_cpu_launches_s"])
    assert "shaped-link CPU probe [4/4]" in r.stdout and "each byte a rank sends or receives costs" in r.stdout


def test_explain_sets_the_cpu_outside_the_computations_beside_what_the_simulation_charged(tmp_path):
    from loop.explain import _outside_line

    def results(outside_ms):
        return {"per_rank": [{"rank": r, "cpu_per_step": {"median": 0.02 + x / 1e3},
                              "compute_cpu_per_step": {"median": 0.02}} for r, x in enumerate(outside_ms)]}

    run = tmp_path / "runs" / "gpipe_default_mbs1" / "run0"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps(results([2.0, 3.0])))
    (run / "trace.csv").write_text("rank,action,start,end,step,bytes\n")
    (tmp_path / "measured.jsonl").write_text(json.dumps(
        {"key": "gpipe|default|1", "run": 0, "schedule": "gpipe", "network": "default", "micro_batch_size": 1,
         "median": 0.05, "results": "runs/gpipe_default_mbs1/run0/results.json",
         "trace": "runs/gpipe_default_mbs1/run0/trace.csv"}) + "\n")
    capped = results([3.0, 5.0])
    line = _outside_line(tmp_path, capped, "gpipe", 1, charged=(0.0008, 0.0016))
    assert "3.0 / 5.0 ms of CPU per step" in line and "+1.0 / +2.0 ms against" in line
    assert line.endswith("the simulation charged +0.8 / +1.6 ms for the rate cap (the profile's CPU per byte "
                         "under a cap without a delay).")
    assert _outside_line(tmp_path, capped, "gpipe", 1).endswith("the profile charges none of that difference.")


def test_validate_probes_its_grids_caps_without_a_delay(monkeypatch, tmp_path):
    """validate hands calibration the caps its grid applies without a delay (none with
    shaped_probe=False); stopped right there, before anything is launched."""
    import calibrate.local
    from loop.validate import validate

    seen = []

    class Stop(Exception):
        pass

    def fake(*args, **kw):
        seen.append(kw.get("shaped_rates"))
        raise Stop

    monkeypatch.setattr(calibrate.local, "run_local_calibration", fake)
    for flag, want in ((True, [1e9]), (False, [])):
        with pytest.raises(Stop):
            validate(tmp_path / f"v{flag}", networks="default, bandwidth 1Gbps, delay 5ms bandwidth 2Gbps",
                     micro_batch_sizes=(1,), figures=None, shaped_probe=flag)
        assert seen[-1] == want
