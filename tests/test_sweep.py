"""``pipesim sweep``: the grid, resume, cleanup on every way a run can end, and the netem command lines.

Without a cluster (and without netem in this kernel) the sweep runs on the local testbed:
its hosts are the machines, each one a torchrun node (the ranks meet through torchrun's
rendezvous on host 0's address), and each setting is applied by re-shaping the testbed.
Those tests need root and network namespaces and are skipped, saying so, without them.
Real ranks: the ``tiny`` preset, 2 ranks, batch 4, 2 measured steps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loop import sweep
from pipesim import network
from testbed import netem

ROOT = Path(__file__).resolve().parent.parent
ADDRS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


# ---------------------------------------------------------------------------------------------- no root needed


def test_netem_command_lines_uniform_and_per_link():
    uniform = network.parse("delay 10ms bandwidth 1Gbps")
    for r in range(3):
        assert netem.rank_commands("eth0", uniform, r, ADDRS) == [
            ["tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "10ms", "rate", "1gbit"]]
    per_link = network.parse("delay 1ms; link 0-1 delay 5ms bandwidth 2Gbps")
    prio = ["tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "prio", "bands", "3", "priomap", *["0"] * 16]
    assert netem.rank_commands("eth0", per_link, 0, ADDRS) == [
        prio,
        ["tc", "qdisc", "add", "dev", "eth0", "parent", "1:2", "handle", "20:", "netem", "delay", "5ms", "rate", "2gbit"],
        ["tc", "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip",
         "dst", "10.0.0.2/32", "flowid", "1:2"],
        ["tc", "qdisc", "add", "dev", "eth0", "parent", "1:3", "handle", "30:", "netem", "delay", "1ms"],
        ["tc", "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip",
         "dst", "10.0.0.3/32", "flowid", "1:3"],
    ]
    # a link setting leaves the machines it does not touch alone
    assert netem.rank_commands("eth0", network.parse("link 0->1 delay 5ms"), 1, ADDRS) == []
    with pytest.raises(ValueError, match="only 3 machines"):
        netem.rank_commands("eth0", network.parse("link 2-3 delay 5ms"), 0, ADDRS)
    with pytest.raises(ValueError, match="not an IPv4 address"):
        netem.rank_commands("eth0", network.parse("link 0-1 delay 5ms"), 0, ["10.0.0.1", "fe80::1", "x"])


def test_dry_run_prints_each_machines_commands(capsys):
    from loop.cli import main

    rc = main(["sweep", "--dry-run", "--iface", "eth0", "--ranks", "3", "--addresses", ",".join(ADDRS),
               "--network", "default, delay 5ms bandwidth 1Gbps, link 0-1 delay 5ms", "--micro-batch-sizes", "1,2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[0] == "# 3 settings x 4 cells x 2 repeats = 24 runs on 3 machines, shaping eth0"
    for r in range(3):
        assert f"[rank {r}] tc qdisc replace dev eth0 root netem delay 5ms rate 1gbit" in lines
    assert "[rank 0] tc filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 10.0.0.2/32 flowid 1:2" in lines
    assert "[rank 1] tc filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 10.0.0.1/32 flowid 1:2" in lines
    assert "[rank 1] tc qdisc add dev eth0 parent 1:2 handle 20: netem delay 5ms" in lines
    setting3 = lines[lines.index("# setting 'link 0-1 delay 5ms': 8 runs"):]
    assert "[rank 2] (nothing to change)" in setting3


def _plan(**kw):
    import argparse

    ap = argparse.ArgumentParser()
    sweep.add_args(ap)
    args = ["--network", "default, delay 2ms", "--micro-batch-sizes", "1,2", "--schedules", "gpipe,1f1b",
            "--repeats", "2"]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return sweep.Plan(ap.parse_args(args))


def test_plan_alternates_and_resumes():
    plan = _plan()
    todo = plan.todo({})
    assert [si for si, _ in todo] == [0, 1]
    cells = [("gpipe", 1), ("gpipe", 2), ("1f1b", 1), ("1f1b", 2)]
    assert todo[0][1] == [(0, s, m) for s, m in cells] + [(1, s, m) for s, m in reversed(cells)]
    done = {"gpipe|default|1": {0: {"median": 1.0}}, "1f1b|delay 2ms|2": {0: {"median": 1.0}, 1: {"median": 1.0}}}
    todo = plan.todo(done)
    assert (0, "gpipe", 1) not in todo[0][1] and (1, "gpipe", 1) in todo[0][1]
    assert all(m != 2 or s != "1f1b" for _, s, m in todo[1][1]) and len(todo[1][1]) == 6
    # tie-breaks: only with --tiebreak-pct, only for cells whose runs disagree
    assert plan.tiebreaks(0, {"gpipe|default|1": {0: {"median": 1.0}, 1: {"median": 1.2}}}) == []
    plan = _plan(tiebreak_pct=4)
    assert plan.tiebreaks(0, {"gpipe|default|1": {0: {"median": 1.0}, 1: {"median": 1.2}},
                              "gpipe|default|2": {0: {"median": 1.0}, 1: {"median": 1.01}}}) == [(2, "gpipe", 1)]


def test_refusals(capsys):
    from loop.cli import main

    assert main(["sweep", "--network", "delay 1ms"]) == 2
    assert "torchrun" in capsys.readouterr().err
    assert main(["sweep", "--dry-run", "--network", "delay 1ms"]) == 2
    assert "--iface" in capsys.readouterr().err
    assert main(["sweep", "--dry-run", "--iface", "eth0", "--ranks", "2", "--network", "link 1-2 delay 1ms"]) == 2
    assert "2 ranks" in capsys.readouterr().err
    assert main(["sweep", "--dry-run", "--iface", "eth0", "--batch-size", "4", "--micro-batch-sizes", "3"]) == 2
    assert "multiple" in capsys.readouterr().err


def test_out_folder_outside_the_current_one_is_refused(capsys, tmp_path, monkeypatch):
    """--out as every other output flag (issue 13): a missing folder outside the current one is
    refused before the testbed is looked at (it was made with parents=True anywhere)."""
    from loop.cli import main

    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    away = tmp_path / "away" / "deeper"   # under tmp_path, never a shared path: if it existed, a sweep would run
    assert main(["sweep", "--local", "--ranks", "2", "--network", "default", "--out", str(away / "sweep")]) == 2
    err = capsys.readouterr().err
    assert f"--out: folder {away} does not exist" in err, err
    assert not (tmp_path / "away").exists()

def test_dry_run_of_a_per_link_setting_asks_for_the_addresses(capsys):
    """Without --addresses a per-link setting's filters cannot be written: the error names
    --addresses (it used to say "'ADDR1' is not an IPv4 address", a placeholder nobody typed)."""
    from loop.cli import main

    assert main(["sweep", "--dry-run", "--iface", "eth0", "--ranks", "3", "--network", "default, link 0-1 delay 5ms"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--addresses" in err and "ADDR" not in err, err
    # uniform settings need no addresses
    assert main(["sweep", "--dry-run", "--iface", "eth0", "--ranks", "3", "--network", "default, delay 5ms"]) == 0


# ---------------------------------------------------------------------------------------------- the local testbed

needs_testbed = pytest.mark.netns


@pytest.fixture
def testbed_ok():
    pytest.importorskip("torch")
    if os.geteuid() != 0:
        pytest.skip("needs root: the sweep's machines are network namespaces of the local testbed (run with sudo)")
    from testbed import available

    ok, reason = available()
    if not ok:
        pytest.skip(f"no local testbed here: {reason}")


def _rank_args(out: Path, network_: str = "default, delay 10ms", *extra: str) -> list[str]:
    return ["--out", str(out), "--model", "tiny", "--network", network_, "--schedules", "gpipe,1f1b",
            "--micro-batch-sizes", "2", "--batch-size", "4", "--steps", "2", "--warmup", "1", "--repeats", "1",
            "--op-timeout", "20", *extra]


def _procs_with(text: str) -> list[str]:
    """Live processes whose command line mentions ``text`` (zombies have none)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def _wait_for(cond, timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def _qdiscs(tb) -> list[str]:
    return [tb.run(i, ["tc", "qdisc", "show", "dev", tb.iface]).stdout for i in range(tb.num_hosts)]


def _root_qdiscs() -> str:
    return subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True).stdout


def _rtt(tb, a, b) -> float:
    p = tb.run(a, ["ping", "-n", "-c", "8", "-i", "0.01", "-W", "2", tb.addresses[b]], timeout=30)
    return statistics.median(float(x) for x in re.findall(r"time=([\d.]+) ms", p.stdout))


@needs_testbed
def test_testbed_reshapes_live(testbed_ok):
    from testbed import Testbed

    with Testbed(3, "default", mode="tun") as tb:
        assert _rtt(tb, 0, 1) < 1.0
        tb.reshape("delay 5ms")
        assert abs(_rtt(tb, 0, 1) - 10.0) < 1.0
        tb.reshape("default", hosts=[1])          # host 1 sends undelayed, host 0 still delays
        assert abs(_rtt(tb, 0, 1) - 5.0) < 1.0 and abs(_rtt(tb, 0, 2) - 10.0) < 1.0
        tb.reshape("link 0-1 delay 3ms bandwidth 100Mbps")
        assert abs(_rtt(tb, 0, 1) - 6.0) < 1.0 and _rtt(tb, 1, 2) < 1.0
        assert "rate 100Mbit" in tb.run(0, ["tc", "class", "show", "dev", tb.iface]).stdout
        tb.reshape("default")
        assert _rtt(tb, 0, 1) < 1.0 and "htb" not in _qdiscs(tb)[0]
        with pytest.raises(ValueError, match="hosts 0..2"):
            tb.reshape("link 0-3 delay 1ms")
    with Testbed(2, "default") as tb, pytest.raises(ValueError, match="no delay line"):
        tb.reshape("delay 1ms")


@needs_testbed
def test_sweep_killed_rank_then_resume(testbed_ok, tmp_path):
    """A rank killed in the second setting: the survivor names it, both hosts are cleared, the
    runs so far are kept; started again, the sweep does only the rest."""
    from runtime.launch import LaunchError
    from testbed import Testbed
    from testbed.shaper import ShapeServer

    out = tmp_path / "sweep"
    with Testbed(2, "default", mode="tun") as tb, ShapeServer(tb) as srv:
        before = _qdiscs(tb)
        with pytest.raises(LaunchError) as ei:
            sweep.sweep_on_testbed(_rank_args(out), 2, op_timeout_s=20, log_dir=tmp_path / "logs1", echo=False,
                                   env={"PIPESIM_SWEEP_FAULT": "kill:1:3"}, testbed=tb, server=srv, timeout_s=240)
        assert ei.value.rank == 1, str(ei.value)
        said = sweep.sweep_errors(tmp_path / "logs1")
        assert any("rank 0: rank 1 is missing" in s for s in said), said
        recs = [json.loads(x) for x in (out / "measured.jsonl").read_text().splitlines()]
        assert [(r["schedule"], r["network"]) for r in recs] == [("gpipe", "default"), ("1f1b", "default")]
        assert _wait_for(lambda: [h["host"] for h in srv.history if h["action"] == "clear"] in ([0, 1], [1, 0]), 10), \
            srv.history
        assert {(h["host"], h["action"], h["network"]) for h in srv.history} == {
            (0, "apply", "delay 10ms"), (1, "apply", "delay 10ms"), (0, "clear", "default"), (1, "clear", "default")}
        assert next(h for h in srv.history if h["host"] == 1 and h["action"] == "clear")["why"] == "connection closed"
        assert _qdiscs(tb) == before and all(v == (None, None) for v in tb.links.values())
        assert _wait_for(lambda: not _procs_with(str(out)), 20), _procs_with(str(out))
        # resume, as `pipesim sweep` (the verb) under torchrun
        srv.history.clear()
        sweep.sweep_on_testbed(_rank_args(out), 2, op_timeout_s=20, log_dir=tmp_path / "logs2", echo=False,
                               testbed=tb, server=srv, timeout_s=240, module="loop")
        log0 = (tmp_path / "logs2" / "rank0.log").read_text()
        assert "2 already in" in log0 and "2 to do" in log0 and "[run 2 of 2]" in log0, log0
        assert {(h["host"], h["action"]) for h in srv.history} == {(0, "apply"), (1, "apply"), (0, "clear"), (1, "clear")}
        assert _qdiscs(tb) == before
    recs = [json.loads(x) for x in (out / "measured.jsonl").read_text().splitlines()]
    assert sorted(r["key"] for r in recs) == ["1f1b|default|2", "1f1b|delay 10ms|2", "gpipe|default|2",
                                               "gpipe|delay 10ms|2"]
    for r in recs:
        assert r["run"] == 0 and r["batch_size"] == 4 and r["micro_batch_size"] == 2 and r["n"] == 2
        assert r["p10"] <= r["median"] <= r["p90"] and (out / r["results"]).exists()
        if r["network"] == "delay 10ms":   # an activation and a gradient hop per step: the shaping was there
            assert r["median"] >= 0.020, r
    res = json.loads((out / recs[-1]["results"]).read_text())
    assert res["format"] == "pipesim-run" and res["ranks"] == 2 and res["network"] == recs[-1]["network"]


@needs_testbed
def test_sigterm_to_a_rank_clears_and_stops_every_rank(testbed_ok, tmp_path):
    """SIGTERM reaches a rank while its main thread may be inside gloo: the guard's signal thread
    clears its host and posts an abort, which stops the other rank too."""
    from runtime.launch import LaunchError
    from testbed import Testbed
    from testbed.shaper import ShapeServer

    out = tmp_path / "sweep"
    with Testbed(2, "default", mode="tun") as tb, ShapeServer(tb) as srv:
        with pytest.raises(LaunchError):
            sweep.sweep_on_testbed(_rank_args(out, "delay 10ms"), 2, op_timeout_s=20, log_dir=tmp_path / "logs",
                                   echo=False, env={"PIPESIM_SWEEP_FAULT": "term:1:2"}, testbed=tb, server=srv,
                                   timeout_s=120)
        said = sweep.sweep_errors(tmp_path / "logs")
        assert "pipesim sweep: rank 1: got SIGTERM; cleaned up and stopped" in said, said
        assert any(s.startswith("pipesim sweep: rank 0: stopping, because rank 1 got SIGTERM") for s in said), said
        assert _wait_for(lambda: sorted((h["host"], h["action"]) for h in srv.history) ==
                         [(0, "apply"), (0, "clear"), (1, "apply"), (1, "clear")], 10), srv.history
    assert len((out / "measured.jsonl").read_text().splitlines()) == 1
    assert _wait_for(lambda: not _procs_with(str(out)), 20), _procs_with(str(out))


@needs_testbed
def test_killed_launcher_leaves_nothing(testbed_ok, tmp_path):
    out = tmp_path / "sweep"
    root_before = _root_qdiscs()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = _rank_args(out, "default, delay 10ms")
    args[args.index("--steps") + 1] = "30"
    args[args.index("--repeats") + 1] = "3"
    p = subprocess.Popen([sys.executable, "-m", "loop", "sweep", "--local", "--ranks", "2", *args], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(lambda: (out / "measured.jsonl").exists() or p.poll() is not None, 120)
        assert p.poll() is None, "the sweep ended before it could be killed"
        assert any(ns.startswith(f"pst-{p.pid}-") for ns in _netns())
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert _wait_for(lambda: not any(ns.startswith(f"pst-{p.pid}-") for ns in _netns()), 30), _netns()
    assert _wait_for(lambda: not _procs_with(str(out)), 30), _procs_with(str(out))
    assert _root_qdiscs() == root_before


def _netns() -> list[str]:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()


@needs_testbed
def test_bad_iface_and_failing_netem_leave_nothing(testbed_ok, tmp_path):
    """--iface that does not exist: refused on every machine before anything changes. --iface
    that exists (each host's tb0): netem is applied and restored, or, on a kernel without
    sch_netem (this one), refused with the hint; either way tb0's qdisc is as before."""
    from runtime.launch import LaunchError
    from testbed import Testbed
    from testbed.shaper import ShapeServer

    out = tmp_path / "sweep"
    state = tmp_path / "state"
    with Testbed(2, "default", mode="tun") as tb, ShapeServer(tb) as srv:
        before = _qdiscs(tb)
        with pytest.raises(LaunchError):
            sweep.sweep_on_testbed(_rank_args(out, "default, delay 10ms", "--iface", "nosuch0", "--state-dir",
                                              f"{state}/{{rank}}"),
                                   2, op_timeout_s=20, log_dir=tmp_path / "logs1", echo=False, testbed=tb, server=srv,
                                   timeout_s=120)
        said = sweep.sweep_errors(tmp_path / "logs1")
        assert any("ranks 0, 1: --iface nosuch0: no such interface" in s for s in said), said
        assert not (out / "measured.jsonl").exists()
        have_netem = tb.run(0, ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]).returncode == 0
        if have_netem:
            tb.run(0, ["tc", "qdisc", "del", "dev", "lo", "root"])
        try:
            sweep.sweep_on_testbed(_rank_args(out, "delay 10ms", "--iface", tb.iface, "--state-dir",
                                              f"{state}/{{rank}}"),
                                   2, op_timeout_s=20, log_dir=tmp_path / "logs2", echo=False, testbed=tb, server=srv,
                                   timeout_s=120)
            assert have_netem, "netem is missing here, yet the sweep applied it"
        except LaunchError:
            assert not have_netem
            said = sweep.sweep_errors(tmp_path / "logs2")
            assert any("failed on 2 of 2 machines" in s and "sch_netem" in s for s in said), said
        assert _qdiscs(tb) == before
        assert not srv.history                       # the testbed itself was never re-shaped
    assert not [p for p in state.rglob("*") if p.is_file()]   # no saved state left: everything restored
    assert _wait_for(lambda: not _procs_with(str(tmp_path)), 20), _procs_with(str(tmp_path))


@pytest.fixture
def scratch_ns():
    """A namespace with a veth pair (never the machine's own interfaces)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: makes a scratch network namespace")
    ns = f"pst-{os.getpid()}-sweeptest"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "va", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "vb", "up"], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def _root_qdisc(ns: str) -> dict:
    out = subprocess.run(["tc", "-n", ns, "-j", "qdisc", "show", "dev", "va"], capture_output=True, text=True).stdout
    return next((q for q in json.loads(out or "[]") if q.get("root")), {})


TBF = ["tc", "qdisc", "replace", "dev", "va", "root", "handle", "5:", "tbf", "rate", "1gbit", "burst", "100k",
       "latency", "10ms"]   # stands in for netem, which this kernel may lack


def _in_ns(ns: str, code: str, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return ["ip", "netns", "exec", ns, sys.executable, "-c", code], env


@needs_testbed
def test_apply_list_restores_the_interface_when_a_command_fails(scratch_ns, tmp_path):
    code = (f"from testbed import netem\n"
            f"try:\n"
            f"    netem.apply_list('va', [{TBF!r}, ['tc', 'qdisc', 'add', 'dev', 'va', 'parent', '9:', 'pfifo']], "
            f"'x', state_dir={str(tmp_path)!r}, out=lambda m: None)\n"
            f"except RuntimeError as e:\n"
            f"    print('refused:', e)\n")
    argv, env = _in_ns(scratch_ns, code)
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert "refused:" in p.stdout and "parent 9:" in p.stdout, p.stdout + p.stderr
    assert _root_qdisc(scratch_ns)["kind"] == "noqueue"      # the tbf that went in first is gone again
    assert not list(tmp_path.iterdir())


@needs_testbed
def test_netem_guard_restores_the_interface_when_its_rank_is_killed(scratch_ns, tmp_path):
    code = (f"import time\nfrom testbed import netem\nfrom testbed.shaper import NetemShaper\n"
            f"sh = NetemShaper('va', 0, state_dir={str(tmp_path)!r})\nsh._start_guard()\n"
            f"netem.apply_list('va', [{TBF!r}], 'x', state_dir={str(tmp_path)!r}, out=lambda m: None)\n"
            f"print('ready', sh._guard.pid, flush=True)\ntime.sleep(300)\n")
    argv, env = _in_ns(scratch_ns, code)
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    try:
        word, guard = p.stdout.readline().split()
        assert word == "ready" and _root_qdisc(scratch_ns)["kind"] == "tbf"
    finally:
        p.kill()
        p.wait()
    assert _wait_for(lambda: _root_qdisc(scratch_ns)["kind"] == "noqueue", 10), _root_qdisc(scratch_ns)
    assert _wait_for(lambda: not os.path.exists(f"/proc/{guard}"), 10)
    assert not list(tmp_path.iterdir())
