"""Calibration: link-model fit, a real 2-rank local calibration, CLI refusals and errors."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from calibrate.fit import LinkFit, fit_link, fit_window, median_spread, message_sizes
from pipesim import profile as prof
from pipesim.transport import Transport
from tests.helpers import Host, uniform_profile

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------- fit (pure)


@pytest.mark.parametrize("lat,bw", [(50e-6, 10e9), (5e-3, 200e6), (1e-3, 1e9), (0.0, 5e9)])
def test_fit_recovers_exact_parameters(lat, bw):
    pts = [(n, lat + n * 8 / bw) for n in message_sizes(64 << 20)]
    f = fit_link(pts)
    assert f.latency_s == pytest.approx(lat, rel=1e-6, abs=1e-12)
    assert f.bandwidth_bps == pytest.approx(bw, rel=1e-6)
    assert f.rms_rel_error < 1e-9 and f.max_rel_error < 1e-9


def test_fit_with_noise_within_a_few_percent():
    rng = random.Random(7)
    lat, bw = 5e-3, 200e6
    pts = [(n, (lat + n * 8 / bw) * (1 + rng.uniform(-0.03, 0.03))) for n in message_sizes(4 << 20) for _ in range(5)]
    f = fit_link(pts)
    assert f.latency_s == pytest.approx(lat, rel=0.05)
    assert f.bandwidth_bps == pytest.approx(bw, rel=0.05)
    assert 0 < f.rms_rel_error < 0.05


def test_fit_fixed_latency_and_clamping():
    pts = [(n, 1e-4 + n * 8 / 1e9) for n in (1000, 10_000, 100_000)]
    f = fit_link(pts, latency_s=1e-4)
    assert f.latency_s == 1e-4 and f.bandwidth_bps == pytest.approx(1e9)
    # points that extrapolate to a negative intercept: latency clamps at 0
    f = fit_link([(1000, 1e-6), (2000, 3e-6)])
    assert f.latency_s == 0.0 and f.bandwidth_bps > 0


@pytest.mark.parametrize("pts,msg", [([(4, 1e-3)], "at least 2"), ([(4, 1e-3), (4, 2e-3)], "two message sizes"),
                                      ([(4, 2e-3), (4096, 1e-3)], "does not grow"), ([(4, 0.0), (8, 1e-3)], "> 0")])
def test_fit_rejects_bad_points(pts, msg):
    with pytest.raises(ValueError, match=msg):
        fit_link(pts)


def test_absolute_fit_gives_the_sustained_rate_despite_a_burst():
    # a token bucket lets the first 128 KiB through at line rate (as the testbed's htb does)
    lat, bw, burst = 5e-3, 200e6, 128 << 10
    pts = [(n, lat + max(0, n - burst) * 8 / bw + min(n, burst) * 8 / 10e9) for n in message_sizes(16 << 20)]
    f = fit_link(pts, latency_s=lat, weighting="absolute")
    assert f.bandwidth_bps == pytest.approx(bw, rel=0.02)
    assert f.max_rel_error > 0.3            # the burst region still shows in the recorded error
    assert fit_link(pts).bandwidth_bps > 1.2 * bw   # an every-size-alike fit would be misled
    with pytest.raises(ValueError, match="weighting"):
        fit_link(pts, weighting="nope")


def test_window_from_a_delayed_probe():
    # 64 KiB window over a 20 ms round trip: 26 Mbit/s, far below a 1 Gbit/s link
    win, rtt = 65536, 20e-3
    probe = LinkFit(latency_s=rtt / 2, bandwidth_bps=win * 8 / rtt, rms_rel_error=0, max_rel_error=0)
    assert fit_window(probe, expected_bps=1e9) == win
    # no cap seen: throughput as expected
    assert fit_window(LinkFit(rtt / 2, 0.95e9, 0, 0), expected_bps=1e9) is None


def test_median_spread_and_sizes():
    assert median_spread([1, 2, 3, 4, 100]) == (3, 2)
    sizes = message_sizes(1_000_000)
    assert sizes[0] == 4 and sizes[-1] >= 1_000_000 and all(s % 4 == 0 for s in sizes)
    assert sizes == sorted(set(sizes))


# ---------------------------------------------------------------------- CLI (no ranks started)


def test_apart_plan_moves_the_higher_rank_to_another_core():
    from calibrate.measure import apart_plan

    assert apart_plan([0, 1, 0], 2, 0) == (2, 1, 0) and apart_plan([0, 1, 0], 0, 2) == (2, 1, 0)
    assert apart_plan([0, 1, 0], 0, 1) is None            # different cores: probed where they run
    assert apart_plan([3, 3, 5, 4], 0, 1) == (1, 4, 3)    # the lowest other core
    assert apart_plan([0, 0], 0, 1) is None               # one core only: nowhere to go
    assert apart_plan([None, None, None], 0, 2) is None   # not pinned


def test_moved_to_moves_every_thread_and_puts_each_back():
    import os
    import threading

    from calibrate.measure import moved_to

    mine = os.sched_getaffinity(0)
    if len(mine) < 2:
        pytest.skip("needs two CPUs to move between")
    target = max(mine)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        before = {int(tid): os.sched_getaffinity(int(tid)) for tid in os.listdir("/proc/self/task")}
        late_stop = threading.Event()
        late = threading.Thread(target=late_stop.wait, daemon=True)
        with moved_to(target) as moved:
            assert moved
            assert {os.sched_getaffinity(int(tid)) == {target} for tid in os.listdir("/proc/self/task")} == {True}
            late.start()   # started while moved: inherits the target
        assert {tid: os.sched_getaffinity(tid) for tid in before} == before
        assert late.native_id is not None and os.sched_getaffinity(late.native_id) == mine   # and is put back too
        late_stop.set()
        late.join()
        with moved_to(None) as moved:   # nothing to do
            assert moved is False and os.sched_getaffinity(0) == mine
    finally:
        stop.set()
        t.join()


def _cli(*argv, timeout=120):
    return subprocess.run([sys.executable, "-m", "pipesim", "calibrate", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_import_does_not_import_torch():
    code = "import sys, loop.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def _main(capsys, *argv):
    """``pipesim calibrate ...`` in this process (one torch import for all the error cases)."""
    from loop.cli import main

    rc = main(["calibrate", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "profile.json"
    out.write_text("keep me")
    rc, _, err = _main(capsys, "--local", "--ranks", "2", "--model", "tiny", "--out", str(out))
    assert rc == 2
    assert "exists" in err and "--force" in err
    assert out.read_text() == "keep me"
    # the library function refuses too
    from calibrate import run_local_calibration

    with pytest.raises(FileExistsError, match="--force"):
        run_local_calibration(2, "tiny", [1], out)


@pytest.mark.parametrize("argv,msg", [
    (["--local", "--micro-batch-sizes", "1,x"], "--micro-batch-sizes"),
    (["--local", "--micro-batch-sizes", "0"], "--micro-batch-sizes"),
    (["--local", "--model", "nope"], "unknown model preset 'nope'"),
    (["--local", "--ranks", "0"], "--ranks must be an integer >= 1"),
    (["--local", "--ranks", "4", "--model", "tiny"], "cannot split"),
    (["--local", "--repeats", "0"], "--repeats must be >= 1"),
    (["--local", "--network", "delay -1ms"], "delay"),
    (["--local", "--window-probe", "bandwidth 1Gbps"], "must add a delay"),
    (["--local", "--overhead-launches", "0"], "--overhead-launches must be a whole number from 1 to 50, got 0"),
    ([], "--local --ranks N"),
])
def test_bad_arguments_give_clear_errors(tmp_path, capsys, argv, msg):
    rc, out, err = _main(capsys, *argv, "--out", str(tmp_path / "p.json"))
    assert rc == 2, out + err
    assert msg in err, err
    assert not (tmp_path / "p.json").exists()


# ---------------------------------------------------------------------- a real calibration (2 gloo ranks)


def test_local_calibration_two_ranks_tiny(tmp_path):
    from runtime.model import get_config

    out = tmp_path / "profile.json"
    r = _cli("--local", "--ranks", "2", "--model", "tiny", "--micro-batch-sizes", "1,2", "--repeats", "5",
             "--link-repeats", "5", "--contention-s", "0.2", "--link-max-bytes", "1048576", "--out", str(out),
             timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[1/10] compute of stage 0" in r.stderr and "[10/10] link 1->0" in r.stderr   # progress, from rank 0
    assert "stage  mbs" in r.stdout and "link" in r.stdout     # summary table
    p = prof.load(out)
    cfg = get_config("tiny")
    assert p.source == "measured" and p.num_stages == 2 and p.micro_batch_sizes == [1, 2]
    assert p.device["backend"] == "gloo" and p.device["dtype"] == "float32" and p.device["name"]
    assert p.model["name"] == "tiny" and p.model["partition"] == [[0, 2], [2, 3]]
    assert [s.layers for s in p.stages] == [2, 1]
    for i, st in enumerate(p.stages):
        assert st.optimizer_s > 0
        for m, c in st.compute.items():
            assert c.forward_s > 0 and c.backward_s > 0 and c.forward_spread_s >= 0
            nbytes = m * cfg.seq_len * cfg.d_model * 4
            assert c.activation_bytes == (nbytes if i == 0 else 0)
            assert c.gradient_bytes == (0 if i == 0 else nbytes)
    assert set(p.links) == {(0, 1), (1, 0)}
    for link in p.links.values():
        assert 0 < link.latency_s < 0.05 and link.bandwidth_bps > 1e7 and link.window_bytes is None
    assert p.host is not None and p.host.slowdown[1] == 1.0 and 2 in p.host.slowdown
    assert p.transport == Transport.for_backend("gloo")   # the transport of the runtime it calibrated with
    assert all(c.overhead_by_schedule_s and set(c.overhead_by_schedule_s) == {"gpipe", "1f1b"}
               for st in p.stages for c in st.compute.values())   # the overhead probe ran
    assert all(c.step_overhead_s == 0 for st in p.stages for c in st.compute.values())   # the step probe is off
    assert "step_runs" not in json.loads(out.read_text())["raw"]["overhead_probe"]
    raw = json.loads(out.read_text())["raw"]
    assert len(raw["links"]) == 2 and all(len(r["points"]) >= 5 and "fit" in r for r in raw["links"])
    assert max(pt["bytes"] for pt in raw["links"][0]["points"]) >= 2 * 2 * cfg.seq_len * cfg.d_model * 4
    # a second run without --force is refused and leaves the profile alone
    before = out.read_text()
    r = _cli("--local", "--ranks", "2", "--model", "tiny", "--out", str(out))
    assert r.returncode == 2 and "--force" in r.stderr and out.read_text() == before


def _probe_doc(lat, bw):
    fit = {"latency_s": lat, "bandwidth_bps": bw, "rms_rel_error": 0.01, "max_rel_error": 0.02}
    return {"raw": {"links": [{"src": 0, "dst": 1, "fit": fit}]}}


def _base_profile():
    return uniform_profile(2, latency=5e-5, bandwidth=1e10, nbytes=1000)


def test_window_probe_merge_one_probe():
    from calibrate.local import merge_window_probe
    from pipesim.network import parse

    base = _base_profile()
    pr = merge_window_probe(base, _probe_doc(0.01, 65536 * 8 / 0.02), parse("delay 10ms"))
    assert pr.links[(0, 1)].window_bytes == 65536
    assert pr.links[(1, 0)].window_bytes is None   # not probed
    assert base.links[(0, 1)].window_bytes is None   # the input is left alone
    assert pr.raw["window_probe"]["networks"] == ["delay 10ms"]
    assert math.isclose(pr.raw["window_probe"]["links"][0]["probes"][0]["expected_bps"], 1e10)
    assert "single-connection cap probed under 'delay 10ms'" in pr.description
    assert prof.from_json(pr.to_json()) == pr


def test_window_probe_two_delays_tell_window_from_ceiling():
    from calibrate.local import merge_window_probe
    from pipesim.network import parse

    probes = [parse("delay 5ms"), parse("delay 20ms")]
    win = 3 << 20
    # window-limited: throughput falls as 1/RTT
    pr = merge_window_probe(_base_profile(), [_probe_doc(5e-3, win * 8 / 10e-3), _probe_doc(20e-3, win * 8 / 40e-3)],
                            probes)
    assert pr.links[(0, 1)].window_bytes == win
    # a 1.3 Gbit/s ceiling at both delays: no window
    pr = merge_window_probe(_base_profile(), [_probe_doc(5e-3, 1.3e9), _probe_doc(20e-3, 1.28e9)], probes)
    assert pr.links[(0, 1)].window_bytes is None
    assert "ceiling" in pr.raw["window_probe"]["links"][0]["verdict"]


def test_overhead_probe_records_its_whole_method():
    """The probe's recorded method used to be a cut paragraph of its docstring, without the formula."""
    from calibrate.overhead import METHOD

    assert "overhead_s = (CPU per step - m * (forward_s + backward_s) - optimizer_s) / (2 m)" in METHOD
    assert "zbh1: (CPU per step - m * (forward_s + backward_input_s + backward_weight_s) - optimizer_s) / (3 m)" in METHOD
    assert "m * (forward_s + backward_s) - optimizer_s) / (2 m v)" in METHOD


def test_overhead_probe_fills_the_profile(monkeypatch):
    """probe() on a Profile, with the runtime launches replaced by fixed CPU times per step."""
    import runtime.launch
    from calibrate.overhead import probe

    cpu = {"gpipe": [10.0, 12.0], "1f1b": [9.0, 11.0]}   # per rank, seconds of CPU per step

    def fake_run_local(module, args, ranks, **kw):
        schedule = args[args.index("--schedule") + 1]
        out = Path(args[args.index("--out") + 1])
        out.write_text(json.dumps({"per_rank": [{"rank": r, "cpu_per_step": {"median": cpu[schedule][r]}}
                                                for r in range(ranks)]}))

    monkeypatch.setattr(runtime.launch, "run_local", fake_run_local)
    base = uniform_profile(2, f=0.5, b=1.0, opt=0.25, bandwidth=1e10, mbs=(1,))
    per_schedule = probe(base, 2, "tiny", [1], launches=1, pool=(), step_probe=False)
    # overhead = (cpu - m * (f + b) - opt) / (2 m) with m = 4 micro-batches: (10 - 6 - 0.25) / 8
    c0, c1 = per_schedule.stages[0].compute[1], per_schedule.stages[1].compute[1]
    assert c0.overhead_s == pytest.approx(3.75 / 8) and c1.overhead_s == pytest.approx(5.75 / 8)
    assert c0.overhead_by_schedule_s == pytest.approx({"gpipe": 3.75 / 8, "1f1b": 2.75 / 8})
    assert "pooled" not in per_schedule.raw["overhead_probe"]
    # by default gpipe and 1f1b share one overhead per action: the median of both schedules' launches
    pr = probe(base, 2, "tiny", [1], launches=1, step_probe=False)
    c0, c1 = pr.stages[0].compute[1], pr.stages[1].compute[1]
    assert c0.overhead_by_schedule_s == pytest.approx({"gpipe": 3.25 / 8, "1f1b": 3.25 / 8})
    assert c1.overhead_by_schedule_s == pytest.approx({"gpipe": 5.25 / 8, "1f1b": 5.25 / 8})
    assert c0.overhead_s == pytest.approx(3.25 / 8)
    rec = pr.raw["overhead_probe"]["runs"]["gpipe"]["1"]["0"]
    assert rec["pooled"] and rec["overhead_s"] == pytest.approx(3.25 / 8)
    assert rec["cpu_overhead_s"] == pytest.approx(3.75 / 8)   # the schedule's own figure stays recorded
    assert pr.raw["overhead_probe"]["pooled"]["schedules"] == ["gpipe", "1f1b"]
    assert base.stages[0].compute[1].overhead_s == 0.0   # the input is left alone
    assert pr.raw["overhead_probe"]["runs"]["1f1b"]["1"]["1"]["cpu_per_step_s"] == 11.0
    assert "runtime overhead per action probed" in pr.description
    assert prof.from_json(pr.to_json()) == pr
    assert pr.raw["overhead_probe"]["runs"]["gpipe"]["1"]["0"]["trace_overhead_s"] is None   # no trace written


def test_overhead_probe_trace_method_reads_the_launches_traces(monkeypatch):
    """method="trace": each launch's trace (here a simulated run on a shared core with a known
    overhead per action) gives the overhead back, whatever the CPU accounting said."""
    from dataclasses import replace

    import runtime.launch
    from calibrate.overhead import probe
    from pipesim import engine
    from pipesim.trace import write

    host = Host(cores=2, slowdown={1: 1.0, 2: 2.0}, placement=(0, 1, 0))
    base = uniform_profile(3, f=0.01, b=0.02, opt=0.002, latency=1e-4, bandwidth=1e9, nbytes=10_000, mbs=(1,), host=host)
    true_oh = {0: 0.0006, 1: 0.0009, 2: 0.0003}
    truth = replace(base, stages=tuple(replace(st, compute={1: replace(st.compute[1], overhead_s=true_oh[r])})
                                       for r, st in enumerate(base.stages)))

    schedules = ("gpipe", "1f1b", "zbh1", "interleaved1f1b")

    def fake_run_local(module, args, ranks, **kw):
        schedule = args[args.index("--schedule") + 1]
        v = int(args[args.index("--stages-per-rank") + 1]) if "--stages-per-rank" in args else None
        Path(args[args.index("--out") + 1]).write_text(json.dumps(
            {"per_rank": [{"rank": r, "cpu_per_step": {"median": 1.0}} for r in range(ranks)]}))
        run = engine.simulate(truth, schedule, int(args[args.index("--micro-batch-size") + 1]),
                              int(args[args.index("--batch-size") + 1]), "default",
                              steps=2 + int(args[args.index("--steps") + 1]), stages_per_rank=v)
        write(run.trace, args[args.index("--trace") + 1])

    monkeypatch.setattr(runtime.launch, "run_local", fake_run_local)
    pr = probe(base, 3, "tiny", [1], launches=1, steps=3, method="trace", schedules=schedules, stages_per_rank=2, step_probe=False)
    for r in range(3):
        c = pr.stages[r].compute[1]
        # each schedule's count of computations (8, 8, 12, 16) gives the same overhead back
        assert c.overhead_by_schedule_s == pytest.approx({s: true_oh[r] for s in schedules}, abs=1e-12)
        rec = pr.raw["overhead_probe"]["runs"]["gpipe"]["1"][str(r)]
        assert rec["trace_overhead_s"] == pytest.approx(true_oh[r], abs=1e-12)
        assert rec["cpu_overhead_s"] == pytest.approx((1.0 - 4 * 0.03 - 0.002) / 8)   # recorded beside it
        rec = pr.raw["overhead_probe"]["runs"]["zbh1"]["1"][str(r)]
        assert rec["cpu_overhead_s"] == pytest.approx((1.0 - 4 * 0.03 - 0.002) / 12)
        rec = pr.raw["overhead_probe"]["runs"]["interleaved1f1b"]["1"][str(r)]
        assert rec["cpu_overhead_s"] == pytest.approx((1.0 - 4 * 0.03 - 0.002) / 16)
    assert pr.raw["overhead_probe"]["used"] == "trace"
    with pytest.raises(ValueError, match="method"):
        probe(base, 3, "tiny", [1], method="wall")


def test_local_calibration_measures_virtual_stages_and_split_backward(tmp_path):
    """``--stages-per-rank 2 --split-backward`` fills each rank's virtual_stages and the B/W
    split of every stage; the simulator then takes its compute from them."""
    import dataclasses

    from pipesim import engine as E
    from pipesim.schedule import loop_placement

    out = tmp_path / "profile.json"
    r = _cli("--local", "--ranks", "3", "--model", "tiny6", "--micro-batch-sizes", "1", "--repeats", "3",
             "--rounds", "1", "--warmup", "1", "--link-repeats", "3", "--contention-s", "0.1", "--link-max-bytes",
             "65536", "--no-overhead-probe", "--stages-per-rank", "2", "--split-backward", "--out", str(out),
             timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    p = prof.load(out)
    assert p.model["stages_per_rank"] == 2 and p.model["virtual_partition"] == [[i, i + 1] for i in range(6)]
    assert set(p.links) == {(0, 1), (1, 0), (1, 2), (2, 1), (2, 0), (0, 2)}  # and the wrap-around pair
    for rank, st in enumerate(p.stages):
        c = st.compute[1]
        assert c.backward_input_s and c.backward_weight_s  # measured, not derived
        assert st.virtual_stages is not None and len(st.virtual_stages) == 2
        for j, vs in enumerate(st.virtual_stages):
            stage = j * 3 + rank
            vc = vs[1]
            assert vc.forward_s > 0 and vc.backward_s > 0 and vc.backward_input_s and vc.backward_weight_s
            if stage == 0:  # no input gradient: B does nothing, W is the whole backward
                assert vc.backward_input_s < 0.2 * vc.backward_weight_s
                assert vc.gradient_bytes == 0
            else:
                assert vc.gradient_bytes == 1 * 16 * 32 * 4
            assert vc.activation_bytes == (0 if stage == 5 else 1 * 16 * 32 * 4)
    raw = json.loads(out.read_text())["raw"]
    assert raw["settings"]["split_backward"] is True and raw["settings"]["stages_per_rank"] == 2
    # ranks that share a core (the launcher's round-robin: 3 ranks on 2 cores put 0 and 2 together)
    # had their link probed apart, and only they
    pl = p.host.placement if p.host is not None else None
    for r in raw["links"]:   # (on one CPU nobody can move, and nothing is recorded)
        together = pl is not None and pl[r["src"]] == pl[r["dst"]] and len(set(pl)) > 1
        assert ("shared_core" in r) == together, r
        if together:
            assert r["shared_core"]["moved"] is True and r["shared_core"]["moved_rank"] == max(r["src"], r["dst"])
            assert r["shared_core"]["to_core"] != r["shared_core"]["core"]
    # the simulator's compute per virtual stage is the measured one
    placement = loop_placement(3, 2)
    vc = p.virtual_compute(1, placement)
    assert [c.forward_s for c in vc] == [p.stages[r].virtual_stages[s // 3][1].forward_s
                                         for s, r in enumerate(placement)]
    assert p.stages[1].compute[1].backward_split() == (p.stages[1].compute[1].backward_input_s,
                                                        p.stages[1].compute[1].backward_weight_s)
    # and it changes what is simulated (against the same profile without the new fields)
    plain = dataclasses.replace(p, host=None, stages=tuple(
        dataclasses.replace(st, virtual_stages=None, compute={m: dataclasses.replace(c, backward_input_s=None,
                                                                                    backward_weight_s=None)
                                                              for m, c in st.compute.items()})
        for st in p.stages))
    measured = dataclasses.replace(p, host=None)
    for sched, v in (("zbh1", 1), ("interleaved1f1b", 2)):
        a = E.simulate(measured, sched, 1, 6, steps=1, stages_per_rank=v, record=False).step_time
        b = E.simulate(plain, sched, 1, 6, steps=1, stages_per_rank=v, record=False).step_time
        assert a > 0 and b > 0 and a != b


def test_overhead_probe_reaches_the_virtual_stages():
    """The rank's probed overhead per action goes onto each of its virtual stages too (a measured
    virtual stage carries none of its own; without it interleaved1f1b was predicted 27% short)."""
    import dataclasses

    from calibrate.overhead import virtual_overhead

    base = uniform_profile(2, mbs=(1,))
    stages = []
    for st in base.stages:
        c = dataclasses.replace(st.compute[1], overhead_s=0.002, overhead_by_schedule_s={"gpipe": 0.002, "1f1b": 0.003})
        half = dataclasses.replace(st.compute[1], forward_s=0.5, backward_s=1.0)
        stages.append(dataclasses.replace(st, compute={1: c}, virtual_stages=({1: half}, {1: half})))
    got = virtual_overhead(dataclasses.replace(base, stages=tuple(stages)))
    for st in got.stages:
        for part in st.virtual_stages:
            assert part[1].overhead_s == 0.002 and part[1].overhead_by_schedule_s == {"gpipe": 0.002, "1f1b": 0.003}
            assert part[1].forward_s == 0.5  # the measured compute is kept
    assert virtual_overhead(base) == base  # nothing to do without virtual stages


def _split_virtual_profile(p=2):
    """``p`` stages with a measured B/W split (B + W differs from backward_s; the first stage's B
    does nothing) and two unequal measured virtual stages each."""
    import dataclasses

    from pipesim.profile import StageCompute

    base = uniform_profile(p, f=0.5, b=1.0, opt=0.25, bandwidth=1e10, mbs=(1,))
    stages = []
    for r, st in enumerate(base.stages):
        c = dataclasses.replace(st.compute[1], backward_input_s=0.001 if r == 0 else 0.4, backward_weight_s=0.7)
        parts = ({1: StageCompute(0.2, 0.3 + 0.1 * r)}, {1: StageCompute(0.4, 0.9)})
        stages.append(dataclasses.replace(st, compute={1: c}, virtual_stages=parts))
    return dataclasses.replace(base, stages=tuple(stages))


def test_overhead_probe_divides_by_each_schedules_computations():
    """probe() with a stand-in runner giving known CPU per step: zbh1 takes 3 m computations
    and m * (F + B + W) of compute, interleaved1f1b 2 m v and its virtual stages' compute; the
    overhead lands on the rank's compute and on each virtual stage; and the simulator, given
    the probed profile, has every rank busy for exactly the probed CPU per step."""
    from calibrate.overhead import probe
    from pipesim import engine as E

    base = _split_virtual_profile()
    schedules = ("gpipe", "1f1b", "zbh1", "interleaved1f1b")
    cpu = {"gpipe": [10.0, 12.0], "1f1b": [9.0, 11.0], "zbh1": [13.0, 14.0], "interleaved1f1b": [15.0, 16.0]}
    calls = []

    def run(schedule, m, batch, steps, v):
        calls.append((schedule, m, batch, steps, v))
        return {"per_rank": [{"rank": r, "cpu_per_step": {"median": cpu[schedule][r]},
                              "compute_cpu_per_step": {"median": cpu[schedule][r] - 0.5}} for r in (1, 0)]}

    pr = probe(base, 2, "tiny", [1], launches=1, steps=5, schedules=schedules, run=run, pool=(), step_probe=False)
    # the runs' CPU inside their computations is kept per schedule and rank (a run's speed reference)
    assert {s: [pr.raw["overhead_probe"]["runs"][s]["1"][str(r)]["compute_cpu_per_step_s"] for r in (0, 1)]
            for s in schedules} == {s: [cpu[s][0] - 0.5, cpu[s][1] - 0.5] for s in schedules}
    assert sorted(calls) == sorted([(s, 1, 4, 5, 2 if s == "interleaved1f1b" else 1) for s in schedules])
    m = 4
    for r, st in enumerate(pr.stages):
        c = st.compute[1]
        bi = 0.001 if r == 0 else 0.4
        expect = {
            "gpipe": (cpu["gpipe"][r] - m * (0.5 + 1.0) - 0.25) / (2 * m),
            "1f1b": (cpu["1f1b"][r] - m * (0.5 + 1.0) - 0.25) / (2 * m),
            "zbh1": (cpu["zbh1"][r] - m * (0.5 + bi + 0.7) - 0.25) / (3 * m),
            "interleaved1f1b": (cpu["interleaved1f1b"][r] - m * (0.2 + 0.3 + 0.1 * r + 0.4 + 0.9) - 0.25) / (2 * m * 2),
        }
        assert c.overhead_by_schedule_s == pytest.approx(expect, rel=1e-12)
        assert c.overhead_s == pytest.approx(expect["gpipe"])   # the default stays GPipe's
        for part in st.virtual_stages:
            assert part[1].overhead_by_schedule_s == c.overhead_by_schedule_s
        rec = pr.raw["overhead_probe"]["runs"]
        assert [rec[s]["1"][str(r)]["actions_per_step"] for s in schedules] == [8, 8, 12, 16]
    assert pr.raw["overhead_probe"]["microbatches"] == {s: 4 for s in schedules}
    assert pr.raw["overhead_probe"]["stages_per_rank"] == 2
    assert "gpipe, 1f1b, zbh1 and interleaved1f1b (v 2)" in pr.description
    assert prof.from_json(pr.to_json()) == pr
    for s in schedules:   # the simulator reproduces the probed CPU per step on every rank
        res = E.simulate(pr, s, 1, 4, steps=2, record=False)
        assert [x.compute for x in res.ranks] == pytest.approx(cpu[s], rel=1e-12), s
    # pooled (the default): gpipe and 1f1b are both charged the mean of their probed CPU per step
    # (the median of two launches), zbh1 and interleaved1f1b their own
    pooled = probe(base, 2, "tiny", [1], launches=1, steps=5, schedules=schedules, run=run, step_probe=False)
    for s in schedules:
        res = E.simulate(pooled, s, 1, 4, steps=2, record=False)
        want = [(cpu["gpipe"][r] + cpu["1f1b"][r]) / 2 if s in ("gpipe", "1f1b") else cpu[s][r] for r in range(2)]
        assert [x.compute for x in res.ranks] == pytest.approx(want, rel=1e-12), s


def test_overhead_probe_splits_the_excess_per_step_from_per_computation():
    """The step probe: a stand-in runtime whose ranks spend a known CPU per step beyond their
    computations (a) and per computation (b), at any count of micro-batches. The probe (GPipe
    and 1F1B with 4 micro-batches, GPipe with 1) gives a and b back exactly; every schedule's
    overhead per computation is b; and the simulator, given the probed profile, charges each
    rank exactly the stand-in's CPU per step at 1, 2 and 4 micro-batches (it used to charge
    the per-step part spread over the probe's 8 computations: too little at 1 and 2)."""
    from calibrate.overhead import probe
    from pipesim import engine as E

    base = _split_virtual_profile()
    schedules = ("gpipe", "1f1b", "zbh1", "interleaved1f1b")
    a, b = [0.6, 1.1], [0.05, 0.08]   # per rank: seconds per step, seconds per computation

    def cpu(schedule, m, n, v, r):
        solo, actions = E.rank_work(base, schedule, m, n, v if schedule == "interleaved1f1b" else None)[r]
        return solo + a[r] + b[r] * actions

    calls = []

    def run(schedule, m, batch, steps, v):
        calls.append((schedule, batch))
        return {"per_rank": [{"rank": r, "cpu_per_step": {"median": cpu(schedule, m, batch // m, v, r)}} for r in (0, 1)]}

    pr = probe(base, 2, "tiny", [1], launches=2, steps=5, schedules=schedules, run=run, step_probe=True)
    assert sorted(set(calls)) == sorted({(s, 4) for s in schedules} | {("gpipe", 1)})
    assert len(calls) == 2 * 5   # two launches of each cell, the step probe's too
    raw = pr.raw["overhead_probe"]
    assert raw["step_probe"]["microbatches"] == 1
    for r, st in enumerate(pr.stages):
        c = st.compute[1]
        assert c.step_overhead_s == pytest.approx(a[r], rel=1e-9)
        assert c.overhead_by_schedule_s == pytest.approx({s: b[r] for s in schedules}, rel=1e-9)
        assert raw["step_runs"]["1"][str(r)]["per_action_s"] == pytest.approx(b[r], rel=1e-9)
        for part in st.virtual_stages:   # per step belongs to the rank, charged once: not on its virtual stages
            assert part[1].step_overhead_s == 0.0
    assert prof.from_json(pr.to_json()) == pr
    for s in schedules:
        for n in ((1, 2, 4) if s != "interleaved1f1b" else (2, 4)):
            res = E.simulate(pr, s, 1, n, steps=2, record=False)
            want = [cpu(s, 1, n, 2, r) for r in range(2)]
            assert [x.compute for x in res.ranks] == pytest.approx(want, rel=1e-9), (s, n)
    # a step excess that does not grow with the computations: all of it per step, none per computation
    flat = probe(base, 2, "tiny", [1], launches=1, steps=5, schedules=("gpipe", "1f1b"),
                 run=lambda s, m, batch, steps, v: {"per_rank": [
                     {"rank": r, "cpu_per_step": {"median": E.rank_work(base, s, m, batch // m)[r][0] + 0.5}}
                     for r in (0, 1)]}, step_probe=True)
    c = flat.stages[0].compute[1]
    assert c.step_overhead_s == pytest.approx(0.5) and c.overhead_by_schedule_s == pytest.approx({"gpipe": 0.0, "1f1b": 0.0})


def test_step_overhead_is_charged_once_per_step_on_its_rank():
    """step_overhead_s goes on the rank's optimizer step, once per step, whatever the schedule
    and the count of micro-batches; in the SimPy engine and the fast path alike."""
    from dataclasses import replace

    from pipesim import engine as E

    base = uniform_profile(3, f=0.01, b=0.02, opt=0.002, latency=1e-4, bandwidth=1e9, nbytes=10_000, mbs=(1, 2))
    with_step = replace(base, stages=tuple(
        replace(st, compute={m: replace(c, step_overhead_s=0.003 * (r + 1) if m == 1 else 0.0) for m, c in st.compute.items()})
        for r, st in enumerate(base.stages)))
    for s in ("gpipe", "1f1b", "zbh1"):
        for n in (1, 3):
            plain = E.simulate(base, s, 1, n, steps=2, record=False)
            more = E.simulate(with_step, s, 1, n, steps=2, record=False)
            assert [m.compute - p.compute for m, p in zip(more.ranks, plain.ranks)] == pytest.approx(
                [0.003, 0.006, 0.009]), (s, n)
            assert E.rank_work(with_step, s, 1, n)[0][0] == pytest.approx(E.rank_work(base, s, 1, n)[0][0] + 0.003)
        # another micro-batch size has none
        assert E.simulate(with_step, s, 2, 2, steps=2).step_time == pytest.approx(E.simulate(base, s, 2, 2, steps=2).step_time)
    assert prof.from_json(with_step.to_json()) == with_step
    assert "step_overhead_s" not in json.dumps(base.to_json())   # left out where 0


def test_overhead_probe_picks_a_micro_batch_count_interleaved_can_run():
    """5 micro-batches on 2 ranks do not split into interleaved1f1b's 2 rounds: that schedule is
    probed with 6 (and its formula uses 6), the others with 5."""
    from calibrate.overhead import microbatches_for, probe

    assert microbatches_for("interleaved1f1b", 2, 5, 2) == 6
    assert microbatches_for("interleaved1f1b", 3, 7, 2) == 8   # 2 rounds of 4
    assert microbatches_for("interleaved1f1b", 3, 4, 2) == 4 and microbatches_for("gpipe", 2, 5) == 5
    base = _split_virtual_profile()
    calls = {}

    def run(schedule, m, batch, steps, v):
        calls[schedule] = batch
        return {"per_rank": [{"rank": r, "cpu_per_step": {"median": 20.0}} for r in range(2)]}

    pr = probe(base, 2, "tiny", [1], launches=1, probe_microbatches=5, schedules=("gpipe", "interleaved1f1b"), run=run,
               step_probe=False)
    assert calls == {"gpipe": 5, "interleaved1f1b": 6}
    assert pr.raw["overhead_probe"]["microbatches"] == {"gpipe": 5, "interleaved1f1b": 6}
    c = pr.stages[0].compute[1]
    assert c.overhead_by_schedule_s["interleaved1f1b"] == pytest.approx((20.0 - 6 * (0.2 + 0.3 + 0.4 + 0.9) - 0.25) / 24)
    assert c.overhead_by_schedule_s["gpipe"] == pytest.approx((20.0 - 5 * 1.5 - 0.25) / 10)
    with pytest.raises(ValueError, match="probe_microbatches"):
        probe(base, 2, "tiny", [1], probe_microbatches=0, run=run)
    with pytest.raises(ValueError, match="the runtime runs"):
        probe(base, 2, "tiny", [1], schedules=("gpipe", "nope"), run=run)


def test_overhead_probe_schedules_follow_what_calibration_measured():
    from calibrate.local import _asked_shapes
    from calibrate.overhead import schedules_for

    assert schedules_for() == ("gpipe", "1f1b")
    assert schedules_for(split_backward=True) == ("gpipe", "1f1b", "zbh1")
    assert schedules_for(stages_per_rank=2) == ("gpipe", "1f1b", "interleaved1f1b")
    assert schedules_for(True, 3) == ("gpipe", "1f1b", "zbh1", "interleaved1f1b")
    # what pipesim calibrate hands run_local_calibration (and validate: only the flags it needs)
    assert _asked_shapes(["--timing", "wall", "--device", "cpu", "--stages-per-rank", "1"]) == (False, 1)
    assert _asked_shapes(["--timing", "wall", "--stages-per-rank", "2", "--split-backward"]) == (True, 2)
    assert _asked_shapes(["--split-backward"]) == (True, 1)


def test_window_probe_measures_what_the_delay_element_adds():
    """The delayed-link probe's latency, less the delay and the undelayed latency, is the delay
    element's own time per message; the simulator adds it wherever a setting adds a delay."""
    from calibrate.local import delay_excess, merge_window_probe
    from pipesim.network import parse

    base = _base_profile()   # undelayed latency 50 us
    pr = merge_window_probe(base, _probe_doc(5e-3 + 5e-5 + 120e-6, 1e9), parse("delay 5ms"))
    link = pr.links[(0, 1)]
    assert math.isclose(link.delay_excess_s, 120e-6, rel_tol=1e-9)
    assert pr.links[(1, 0)].delay_excess_s == 0.0   # not probed
    assert math.isclose(pr.raw["window_probe"]["links"][0]["delay_excess_s"], 120e-6, rel_tol=1e-9)
    assert math.isclose(pr.link(0, 1, parse("delay 1ms")).latency_s, 5e-5 + 1e-3 + 120e-6, rel_tol=1e-9)
    assert pr.link(0, 1, parse("default")).latency_s == 5e-5              # no delay: nothing added
    assert pr.link(0, 1, parse("bandwidth 1Gbps")).latency_s == 5e-5
    assert prof.from_json(pr.to_json()) == pr
    from calibrate.summary import summary
    assert "each message also takes (the delay element's own time): 0->1 0.120 ms" in summary(pr)
    # two probes: the median; a link faster under a delay than without: 0, never negative
    assert math.isclose(delay_excess(5e-5, [(5e-3 + 5e-5 + 1e-4, 5e-3), (20e-3 + 5e-5 + 3e-4, 20e-3)]), 2e-4)
    assert delay_excess(2e-3, [(5.1e-3, 5e-3)]) == 0.0
    assert delay_excess(5e-5, [(1e-3, None)]) == 0.0   # a probe without a delay on this link


def test_delay_excess_lengthens_a_delayed_simulation_only():
    from calibrate.local import merge_window_probe
    from pipesim import engine
    from pipesim.network import parse

    base = uniform_profile(3, latency=5e-5, bandwidth=1e10, nbytes=1000)
    doc = {"raw": {"links": [{"src": a, "dst": b, "fit": {"latency_s": 5e-3 + 5e-5 + 2e-4, "bandwidth_bps": 1e9,
                                                         "rms_rel_error": 0.01, "max_rel_error": 0.02}}
                             for a, b in ((0, 1), (1, 0), (1, 2), (2, 1))]}}
    pr = merge_window_probe(base, doc, parse("delay 5ms"))

    def step(p, net):
        return engine.simulate(p, "gpipe", 1, 4, parse(net), steps=4, record=False).step_time

    assert step(pr, "default") == step(base, "default")
    assert step(pr, "bandwidth 1Gbps") == step(base, "bandwidth 1Gbps")
    # GPipe's step crosses each of the 2 links twice on its critical path (forward, then backward)
    assert math.isclose(step(pr, "delay 10ms") - step(base, "delay 10ms"), 4 * 2e-4, rel_tol=1e-6)
