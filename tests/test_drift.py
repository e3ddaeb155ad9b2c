"""Tracking the machine's speed: the model's compute probe (calibrate.drift), the profile
scaled by it (Profile.compute_scaled), and the offline score of that tracking
(benchmarks/drift_tracking.py)."""

from __future__ import annotations

import os
import sys

import pytest

from pipesim import engine as E
from pipesim.profile import Host, StageCompute
from tests.helpers import uniform_profile


def test_compute_scaled_scales_every_computation_and_nothing_else():
    prof = uniform_profile(3, f=1.0, b=2.0, latency=0.5, bandwidth=1e9, nbytes=1000, opt=0.25, mbs=(1, 2))
    st = prof.stages[0]
    c = st.compute[2]
    rich = type(st)(compute={2: StageCompute(1.0, 2.0, 10, 20, 0.1, 0.2, overhead_s=0.05,
                                             overhead_by_schedule_s={"1f1b": 0.04}, backward_input_s=1.2,
                                             backward_weight_s=0.8)},
                    optimizer_s=0.3, virtual_stages=({2: c}, {2: c}))
    prof2 = type(prof)(stages=(rich, *prof.stages[1:]), links=prof.links, host=prof.host, device=prof.device)
    s = prof2.compute_scaled(1.5)
    got = s.stages[0].compute[2]
    assert (got.forward_s, got.backward_s, got.overhead_s) == pytest.approx((1.5, 3.0, 0.075))
    assert (got.backward_input_s, got.backward_weight_s) == pytest.approx((1.8, 1.2))
    assert got.overhead_by_schedule_s == pytest.approx({"1f1b": 0.06})
    assert (got.forward_spread_s, got.backward_spread_s) == pytest.approx((0.15, 0.3))
    assert (got.activation_bytes, got.gradient_bytes) == (10, 20)   # message sizes are not compute
    assert s.stages[0].optimizer_s == pytest.approx(0.45)
    assert s.stages[0].virtual_stages[1][2].forward_s == pytest.approx(1.5 * c.forward_s)
    assert s.links == prof2.links and s.host == prof2.host
    assert prof2.stages[0].compute[2].forward_s == 1.0   # the original is untouched


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "zbh1"])
def test_scaled_compute_scales_a_compute_bound_step_exactly(schedule):
    prof = uniform_profile(3, f=0.01, b=0.02, opt=0.005, mbs=(1,))   # no latency, no bandwidth limit
    one = E.simulate(prof, schedule, 1, 6, "default", steps=3, record=False).step_time
    two = E.simulate(prof.compute_scaled(1.7), schedule, 1, 6, "default", steps=3, record=False).step_time
    assert two == pytest.approx(1.7 * one, rel=1e-9)


def test_scaled_compute_leaves_the_network_part_alone():
    # a latency-bound step: a 2x slower machine is far from 2x slower
    prof = uniform_profile(3, f=0.001, b=0.002, latency=0.05, mbs=(1,))
    one = E.simulate(prof, "gpipe", 1, 4, "default", steps=3, record=False).step_time
    two = E.simulate(prof.compute_scaled(2.0), "gpipe", 1, 4, "default", steps=3, record=False).step_time
    assert one < two < 1.2 * one


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_compute_scaled_refuses_a_bad_factor(bad):
    with pytest.raises(ValueError, match="compute scale factor must be a positive number"):
        uniform_profile(2).compute_scaled(bad)


def test_compute_drift_is_the_median_ratio_over_ranks():
    from calibrate.drift import compute_drift

    ref = {"per_rank_s": [1.0, 2.0, 4.0]}
    assert compute_drift({"per_rank_s": [1.1, 2.0, 8.0]}, ref) == pytest.approx(1.1)
    with pytest.raises(ValueError, match="cannot be compared"):
        compute_drift({"per_rank_s": [1.0]}, ref)


def test_the_compute_probe_times_each_ranks_stage_on_its_core():
    pytest.importorskip("torch")
    from calibrate.drift import ComputeProbe

    before = os.sched_getaffinity(0)
    probe = ComputeProbe("cpu-small", 3, reps=3)
    r1, r4 = probe.measure(1), probe.measure(8)
    assert len(r1["per_rank_s"]) == 3 and all(t > 0 for t in r1["per_rank_s"])
    assert os.sched_getaffinity(0) == before   # the launcher's own affinity is given back
    # eight times the tokens take longer (the same stage modules, real compute: about 6x here)
    assert sum(r4["per_rank_s"]) > sum(r1["per_rank_s"])


def test_host_is_kept_when_scaling():
    prof = uniform_profile(3, host=Host(cores=2, slowdown={1: 1.0, 2: 1.0, 3: 1.6}, placement=(0, 1, 0)))
    assert prof.compute_scaled(1.2).host == prof.host


def _load_script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    if str(path.parent) not in sys.path:   # as when run: a script imports its neighbours (overhead_estimators)
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_drift_tracking_scores_a_tracking_that_explains_the_runs_as_exact(tmp_path, capsys):
    """A folder whose runs took exactly the profile's prediction scaled by their compute
    probe: tracking by that probe scores 0%, the profile alone does not, and the probe
    follows the runs' compute perfectly."""
    import json

    dt = _load_script("drift_tracking")
    prof = uniform_profile(3, f=0.01, b=0.02, latency=1e-4, bandwidth=1e9, nbytes=1000, mbs=(1, 2))
    prof.save(tmp_path / "profile.json")
    lines = []
    for m, net, factor in [(1, "default", 1.1), (2, "default", 0.9), (1, "delay 1ms", 1.2), (2, "delay 1ms", 1.05)]:
        t = E.simulate(prof.compute_scaled(factor), "gpipe", m, 4, net, steps=3, record=False).step_time
        lines.append({"key": f"gpipe|{net}|{m}", "run": 0, "schedule": "gpipe", "network": net,
                      "micro_batch_size": m, "batch_size": 4, "median": t, "replay_s": t,
                      "compute_drift": factor, "drift_pct": 0.0})
    lines.append({**lines[0], "disturbed": "other processes", "median": 99.0})   # not counted
    (tmp_path / "measured.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    s = dt.score(tmp_path)
    assert s["runs"] == 4 and s["cells"] == 4
    assert s["ways"]["x compute probe"]["mape"]["gpipe"] == pytest.approx(0.0, abs=1e-6)
    assert s["ways"]["profile alone"]["mape"]["gpipe"] > 3.0
    assert s["ways"]["x numpy probe"]["mape"] == s["ways"]["profile alone"]["mape"]   # drift_pct 0: no scaling
    assert s["corr_compute_probe"] == pytest.approx(1.0, abs=0.05)
    assert dt.main([str(tmp_path)]) == 0
    assert "| x compute probe | gpipe 0.0% |" in capsys.readouterr().out


def test_overhead_new_schedules_fallback_drops_only_their_own_entries():
    from dataclasses import replace

    ons = _load_script("overhead_new_schedules")
    prof = uniform_profile(3, f=0.01, b=0.02, mbs=(1,))
    by = {"gpipe": 0.001, "zbh1": 0.004, "interleaved1f1b": 0.003}
    prof = replace(prof, stages=tuple(replace(st, compute={1: replace(st.compute[1], overhead_s=0.001,
                                                                     overhead_by_schedule_s=by)})
                                      for st in prof.stages))
    fb = ons.fallback(prof)
    assert all(st.compute[1].overhead_by_schedule_s == {"gpipe": 0.001} for st in fb.stages)
    own = E.simulate(prof, "zbh1", 1, 4, "default", steps=3, record=False).step_time
    reused = E.simulate(fb, "zbh1", 1, 4, "default", steps=3, record=False).step_time
    assert reused < own   # GPipe's smaller overhead per action
    assert E.simulate(fb, "gpipe", 1, 4, "default", steps=3, record=False).step_time == \
        E.simulate(prof, "gpipe", 1, 4, "default", steps=3, record=False).step_time


def test_overhead_launches_rebuilds_the_pooled_overhead_from_the_first_launches(tmp_path, capsys):
    """benchmarks/overhead_launches.py: with the first k launches of each cell, GPipe's and
    1F1B's overhead per action is the median over both schedules' launches of their CPU per
    step beyond the solo compute, per action; cells measured at the all-launches prediction
    score 0% with every launch and not with the first alone."""
    import json
    from dataclasses import replace

    ol = _load_script("overhead_launches")
    prof = uniform_profile(3, f=0.01, b=0.02, latency=1e-4, bandwidth=1e9, nbytes=1000, mbs=(1,))
    launches = {"gpipe": [0.128, 0.136, 0.144], "1f1b": [0.132, 0.160, 0.140]}  # solo 4 x 0.03 = 0.12, 8 actions
    runs = {s: {"1": {str(r): {"cpu_per_step_s": sorted(v)[1], "cpu_per_step_launches_s": v,
                               "solo_compute_s": 0.12, "actions_per_step": 8} for r in range(3)}}
            for s, v in launches.items()}
    prof = replace(prof, raw={"overhead_probe": {"runs": runs}})
    assert ol.launches_of(prof) == 3
    first = ol.rebuilt(prof, 1).stages[1].compute[1].overhead_by_schedule_s
    assert first == pytest.approx({"gpipe": 0.00125, "1f1b": 0.00125})   # median of 0.001 and 0.0015
    every = ol.rebuilt(prof, 3)
    assert every.stages[0].compute[1].overhead_by_schedule_s == pytest.approx({"gpipe": 0.00225, "1f1b": 0.00225})
    cells = []
    for s in ("gpipe", "1f1b"):
        for net in ("default", "delay 1ms"):
            t = E.simulate(every, s, 1, 4, net, steps=3, record=False).step_time
            cells.append({"schedule": s, "network": net, "micro_batch_size": 1, "batch_size": 4, "measured_s": t})
    prof.save(tmp_path / "profile.json")
    (tmp_path / "comparison.json").write_text(json.dumps({"cells": cells}))
    errs = ol.errors(ol.rebuilt(prof, 3), tmp_path)
    assert [s for s, _ in errs] == ["gpipe", "gpipe", "1f1b", "1f1b"]
    assert all(e == pytest.approx(0.0, abs=1e-6) for _, e in errs)
    assert all(e < -1.0 for _, e in ol.errors(ol.rebuilt(prof, 1), tmp_path))   # less overhead: under-predicted
    assert ol.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3: 0.00% / 0.00% (0.0%)" in out and "folders probed with 3 launches" in out
