"""Real multi-process gloo runs of the runtime (tiny preset).

Correctness: a pipelined run (2 and 3 ranks, GPipe and 1F1B, 4 micro-batches) starts
from the parameters of the unpartitioned model; after one step each rank's parameters
equal the unpartitioned model's after one SGD step on the same batch, within
``atol=1e-6, rtol=1e-5`` (float32; the only difference is the order in which the
micro-batch gradients are summed). The per-step losses over 5 steps equal the
unpartitioned ones (rtol 1e-4) and fall.

Failure: a rank killed by SIGKILL, or one that hangs, makes ``run_local`` fail within
its timeout, naming that rank.
"""

from __future__ import annotations

import json
import time

import pytest

torch = pytest.importorskip("torch")

from helpers import unpartitioned_reference  # noqa: E402

from runtime.launch import LaunchError, run_local  # noqa: E402

BATCH, MBS, LR, STEPS = 8, 2, 0.5, 5


def _reference(ranks: int):
    return unpartitioned_reference("tiny", BATCH, STEPS, LR, stages=ranks)


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_pipeline_matches_unpartitioned(tmp_path, capsys, ranks, schedule):
    out, params = tmp_path / "results.json", tmp_path / "params"
    args = ["--model", "tiny", "--schedule", schedule, "--batch-size", BATCH, "--micro-batch-size", MBS,
            "--optimizer", "sgd", "--lr", LR, "--warmup", 1, "--steps", STEPS - 1, "--out", out,
            "--steps-log", tmp_path / "steps.jsonl", "--trace", tmp_path / "trace", "--save-params", params,
            "--op-timeout", 60]
    if (ranks, schedule) == (3, "1f1b"):  # this case goes through the `pipesim run` verb
        from loop.cli import main

        assert main(["run", "--local", "--ranks", str(ranks), "--quiet", "--timeout", "120", "--log-dir",
                     str(tmp_path / "logs"), *map(str, args)]) == 0
        assert "rank 0 step time median" in capsys.readouterr().out
    else:  # these also run the clock ping-pong (on one host the true offset is 0)
        env = {"PIPESIM_CLOCK_SYNC": "always"}
        if (ranks, schedule) == (2, "1f1b"):  # the NCCL posting path (recv_ahead 0, grouped posts), on gloo
            env["PIPESIM_GROUP_COMM"] = "1"
            args += ["--recv-ahead", 0]
        run_local("runtime", [str(a) for a in args], ranks, timeout_s=120, log_dir=tmp_path / "logs", echo=False,
                  env=env)
    cfg, after_one, ref_losses = _reference(ranks)
    from runtime.model import split_layers

    for r, (a, _) in enumerate(split_layers(cfg.layers, ranks)):
        got = torch.load(f"{params}.rank{r}.pt")
        assert got, f"rank {r} saved no parameters"
        for k, v in got.items():
            if k.startswith("blocks."):
                i, rest = k.split(".", 2)[1:]
                key = f"blocks.{a + int(i)}.{rest}"
            else:
                key = k
            torch.testing.assert_close(v, after_one[key], atol=1e-6, rtol=1e-5, msg=lambda m, r=r, k=k: f"rank {r} {k}: {m}")
    res = json.loads(out.read_text())
    assert res["losses"] == pytest.approx(ref_losses, rel=1e-4)
    assert min(ref_losses[-2:]) < ref_losses[0] - 0.03
    assert res["step_time"]["n"] == STEPS - 1 and res["step_time"]["median"] > 0
    assert len(res["per_rank"]) == ranks
    if (ranks, schedule) != (3, "1f1b"):
        for pr in res["per_rank"][1:]:
            assert 0 < pr["clock_offset_err_s"] < 0.05
            assert abs(pr["clock_offset_s"]) <= pr["clock_offset_err_s"] + 1e-3
    lines = [json.loads(x) for x in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert sorted((d["rank"], d["step"]) for d in lines) == [(r, s) for r in range(ranks) for s in range(STEPS)]
    from pipesim.schedule import build
    from pipesim.trace import read_csv

    events = read_csv(tmp_path / "trace.csv")
    sched = build(schedule, ranks, BATCH // MBS)
    for r in range(ranks):
        got = [e.action for e in events if e.rank == r and e.step == 3 and e.action != "OPT"]
        assert sorted(got) == sorted(str(a) for a in sched[r])  # every action traced once per step
        assert all(e.end >= e.start for e in events)


def _fault(tmp_path, fault: str, timeout_s: float, op_timeout: float, ranks: int = 2):
    args = ["--model", "tiny", "--schedule", "1f1b", "--batch-size", 4, "--micro-batch-size", 2, "--warmup", 0,
            "--steps", 3, "--op-timeout", op_timeout, "--steps-log", tmp_path / "steps.jsonl"]
    t0 = time.monotonic()
    with pytest.raises(LaunchError) as ei:
        run_local("runtime", [str(a) for a in args], ranks, timeout_s=timeout_s, env={"PIPESIM_TEST_FAULT": fault},
                  log_dir=tmp_path, echo=False)
    return ei.value, time.monotonic() - t0


def test_killed_rank_is_named(tmp_path):
    err, took = _fault(tmp_path, "kill:1:1", timeout_s=60, op_timeout=30)
    assert err.rank == 1 and "rank 1" in str(err) and "SIGKILL" in str(err)
    assert took < 60
    # the step completed before the crash is kept, for every rank
    lines = [json.loads(x) for x in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert {(d["rank"], d["step"]) for d in lines} >= {(0, 0), (1, 0)}


def test_hung_rank_is_named(tmp_path):
    # rank 2 hangs: rank 1 times out waiting for rank 2, rank 0 for rank 1; the chain is followed
    err, took = _fault(tmp_path, "hang:2:1", timeout_s=60, op_timeout=3, ranks=3)
    assert err.rank == 2, str(err)
    assert str(err).startswith("rank 2 made no progress") and took < 60


@pytest.mark.netns
def test_runs_inside_testbed_with_delay(tmp_path):
    """2 ranks inside the local testbed with 10 ms one-way delay: each step has at least
    one activation hop and one gradient hop on its critical path (>= 20 ms)."""
    testbed = pytest.importorskip("testbed")
    ok, reason = testbed.available()
    if not ok:
        pytest.skip(f"no testbed here: {reason}")
    out = tmp_path / "results.json"
    args = ["--model", "tiny", "--schedule", "gpipe", "--batch-size", 4, "--micro-batch-size", 2, "--warmup", 1,
            "--steps", 3, "--out", out, "--op-timeout", 60, "--network", "delay 10ms"]
    launched = run_local("runtime", [str(a) for a in args], 2, network="delay 10ms", timeout_s=120,
                         log_dir=tmp_path / "logs", echo=False)
    res = json.loads(out.read_text())
    assert res["network"] == "delay 10ms"
    # the delay line was kept off the busiest core of the ranks' placement, and the run says where
    from runtime.launch import placement, relay_cores
    assert launched.usage["relay_cpus"] == relay_cores(placement(2))
    assert res["step_time"]["median"] >= 0.020


def test_placement_is_round_robin_over_usable_cpus(monkeypatch):
    import os

    from runtime import launch

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 2})
    assert launch.placement(3) == [2, 4, 2]  # neighbours never share a core
    assert launch.placement(2) == [2, 4]
    assert launch.placement(1) == [2]


def test_results_report_cpu_per_step_and_the_pinned_cpu(tmp_path):
    out = tmp_path / "res.json"
    run_local("runtime", ["--model", "tiny", "--schedule", "gpipe", "--micro-batch-size", "1", "--batch-size", "4",
                          "--steps", "3", "--warmup", "1", "--out", str(out)], 2, timeout_s=120, log_dir=tmp_path / "l",
              echo=False)
    res = json.loads(out.read_text())
    for pr in res["per_rank"]:
        assert pr["cpu_per_step"]["median"] > 0
        assert pr["compute_per_step"]["median"] > 0
        # the compute thread's own share: a part of the process's, the rest the watcher and gloo threads'
        assert 0 < pr["main_thread_cpu_per_step"]["median"] <= pr["cpu_per_step"]["median"] + 1e-3
        # of which inside the computations: the compute's own CPU, within the thread's
        assert 0 < pr["compute_cpu_per_step"]["median"] <= pr["main_thread_cpu_per_step"]["median"] + 1e-3
        assert pr["cpu"] is not None  # pinned by default


def test_launcher_waits_without_spinning_and_accounts_the_machine(tmp_path):
    """The launcher sleeps until a rank exits: over a run it takes a small share of a core
    compared with the ranks (measured in the same run: no threshold tied to this machine)."""
    res = run_local("runtime", ["--model", "tiny", "--schedule", "gpipe", "--micro-batch-size", "1",
                                "--batch-size", "2", "--steps", "20", "--warmup", "1"], 2, echo=False,
                    log_dir=tmp_path)
    u = res.usage
    assert u["ranks_cpu_s"] > 0 and u["wall_s"] > 0
    assert u["launcher_cpu_s"] < 0.05 * u["ranks_cpu_s"], u
    for key in ("launcher_cpu_pct", "loadavg_start", "loadavg_end"):
        assert key in u
    if "machine_busy_cpu_s" in u:
        assert u["other_cpu_s"] >= 0 and 0 <= u["steal_pct"] <= 100
