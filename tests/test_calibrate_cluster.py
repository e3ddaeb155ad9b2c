"""Calibration under torchrun (one rank per machine): the window probe with a delay applied on
every machine, and the overhead probe in-process over the same job.

Real torchrun nodes, 2 ranks, the ``tiny`` preset. Without ``--iface`` (on loopback, no root
needed) the window probe is skipped and says what that means. On the local testbed (root)
the delay is applied by re-shaping the testbed, or with netem on each host's interface
(this kernel has none: the probe fails, and the interface is as it was).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("torch")

from runtime.launch import LaunchError, run_local  # noqa: E402

COMMON = ["--model", "tiny", "--micro-batch-sizes", "1,2", "--repeats", "3", "--rounds", "1", "--warmup", "1",
          "--link-repeats", "3", "--link-max-bytes", "1048576", "--force"]


def test_without_iface_skips_the_window_probe_and_says_why(tmp_path):
    out = tmp_path / "profile.json"
    # with the split backward and virtual stages measured (tiny6: 2 ranks x 2 stages), the overhead
    # probe also runs zbh1 and interleaved1f1b in-process
    args = [*COMMON, "--out", str(out), "--split-backward", "--stages-per-rank", "2"]
    args[args.index("tiny")] = "tiny6"
    run_local("calibrate.worker", args, 2, torchrun=True, timeout_s=300, log_dir=tmp_path / "logs", echo=False)
    log = (tmp_path / "logs" / "rank0.log").read_text()
    # torchrun's own log folders are in the run's folder, not new torchelastic_* left in /tmp
    assert len(list((tmp_path / "logs" / "torchrun").iterdir())) == 2
    assert "window probe skipped: no --iface" in log and "1.47 Gbit/s" in log and "line rate" in log, log[-3000:]
    doc = json.loads(out.read_text())
    assert doc["raw"]["cluster_probes"]["window_probe"].startswith("window probe skipped")
    assert "window_probe" not in doc["raw"] and all(link["window_bytes"] is None for link in doc["links"])
    assert "host" not in doc   # one rank per machine: no host contention
    # the overhead probe ran in-process: every schedule, micro-batch size and stage
    schedules = {"gpipe", "1f1b", "zbh1", "interleaved1f1b"}
    assert set(doc["raw"]["overhead_probe"]["runs"]) == schedules
    assert doc["raw"]["overhead_probe"]["stages_per_rank"] == 2
    for st in doc["stages"]:
        for m in ("1", "2"):
            assert set(st["compute"][m]["overhead_by_schedule_s"]) == schedules
            assert all(vs[m]["overhead_by_schedule_s"] == st["compute"][m]["overhead_by_schedule_s"]
                       for vs in st["virtual_stages"])
    counts = {s: doc["raw"]["overhead_probe"]["runs"][s]["1"]["0"]["actions_per_step"] for s in schedules}
    assert counts == {"gpipe": 8, "1f1b": 8, "zbh1": 12, "interleaved1f1b": 16}
    from pipesim import profile

    assert profile.load(out).num_stages == 2


@pytest.fixture
def testbed_ok():
    if os.geteuid() != 0:
        pytest.skip("needs root: the machines are network namespaces of the local testbed (run with sudo)")
    from testbed import available

    ok, reason = available()
    if not ok:
        pytest.skip(f"no local testbed here: {reason}")


@pytest.mark.netns
def test_window_probe_applies_the_delay_on_every_machine(testbed_ok, tmp_path):
    from testbed import Testbed
    from testbed.shaper import ShapeServer

    out = tmp_path / "profile.json"
    with Testbed(2, "default", mode="tun") as tb, ShapeServer(tb) as srv:
        run_local("calibrate.worker", [*COMMON, "--out", str(out), "--no-overhead-probe", "--window-probe",
                                       "delay 5ms", "--testbed-control", srv.path],
                  2, testbed=tb, torchrun=True, timeout_s=300, log_dir=tmp_path / "logs", echo=False)
        assert sorted((h["host"], h["action"], h["network"]) for h in srv.history) == [
            (0, "apply", "delay 5ms"), (0, "clear", "default"), (1, "apply", "delay 5ms"), (1, "clear", "default")]
    doc = json.loads(out.read_text())
    wp = doc["raw"]["window_probe"]
    assert wp["networks"] == ["delay 5ms"] and wp["applied_with"] == "the local testbed"
    assert {(e["src"], e["dst"]) for e in wp["links"]} == {(0, 1), (1, 0)}
    for e in wp["links"]:
        lat = e["probes"][0]["fit"]["latency_s"]
        assert 0.0045 < lat < 0.0065, e          # the delay was there while the links were measured
        assert e["verdict"]
    for link in doc["links"]:                      # the main calibration ran undelayed
        assert link["latency_s"] < 0.002
    assert doc["raw"]["cluster_probes"]["overhead_probe"] == "skipped (--no-overhead-probe)"


@pytest.mark.netns
def test_window_probe_with_netem_restores_the_interface(testbed_ok, tmp_path):
    from testbed import Testbed

    out = tmp_path / "profile.json"
    state = tmp_path / "state"
    with Testbed(2, "default", mode="tun") as tb:
        before = [tb.run(i, ["tc", "qdisc", "show", "dev", tb.iface]).stdout for i in range(2)]
        have_netem = tb.run(0, ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]).returncode == 0
        if have_netem:
            tb.run(0, ["tc", "qdisc", "del", "dev", "lo", "root"])
        args = [*COMMON, "--out", str(out), "--no-overhead-probe", "--iface", tb.iface, "--state-dir",
                f"{state}/{{rank}}"]
        try:
            run_local("calibrate.worker", args, 2, testbed=tb, torchrun=True, timeout_s=300,
                      log_dir=tmp_path / "logs", echo=False)
            assert have_netem, "netem is missing here, yet the probe applied it"
        except LaunchError:
            assert not have_netem
        after = [tb.run(i, ["tc", "qdisc", "show", "dev", tb.iface]).stdout for i in range(2)]
    assert after == before
    assert not [p for p in state.rglob("*") if p.is_file()]
    doc = json.loads(out.read_text())          # the profile is written either way
    if not have_netem:
        note = doc["raw"]["cluster_probes"]["window_probe"]
        assert note.startswith("window probe failed (every machine restored)") and "sch_netem" in note
        log = Path(tmp_path / "logs" / "rank0.log").read_text()
        assert "the profile is written without window_bytes" in log
    else:
        assert doc["raw"]["window_probe"]["applied_with"] == "tc netem on --iface"


def test_out_folder_outside_the_current_one_is_refused_before_measuring(tmp_path, monkeypatch, capsys):
    """calibrate.worker --out (the torchrun calibration) as every other output flag (issue 13):
    a missing folder outside the current one is refused by rank 0 before anything is measured
    (it was made, with its parents, when the profile was written). One rank, in-process."""
    import socket

    from calibrate import worker

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "GLOO_SOCKET_IFNAME"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    away = tmp_path / "away" / "deeper"
    rc = worker.main(["--model", "tiny", "--micro-batch-sizes", "1", "--repeats", "3", "--rounds", "1",
                      "--link-repeats", "3", "--out", str(away / "profile.json")])
    assert rc == 2
    assert f"--out: folder {away} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "away").exists()
