"""``pipesim netem``: command generation, refusals, and state save/restore (no netem needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipesim import network
from testbed import netem

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, ns=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, "-m", "pipesim", *args]
    if ns:
        argv = ["ip", "netns", "exec", ns, *argv]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)


SEED_EXPECTED = [
    [],
    ["netem", "delay", "1ms"],
    ["netem", "delay", "5ms"],
    ["netem", "delay", "10ms"],
    ["netem", "rate", "5gbit"],
    ["netem", "rate", "2gbit"],
    ["netem", "rate", "1gbit"],
    ["netem", "delay", "1ms", "rate", "5gbit"],
    ["netem", "delay", "5ms", "rate", "2gbit"],
    ["netem", "delay", "10ms", "rate", "1gbit"],
]


@pytest.mark.parametrize("setting,expected", list(zip(network.parse_grid("seed"), SEED_EXPECTED)),
                         ids=[s.label for s in network.parse_grid("seed")])
def test_seed_settings_become_the_seeds_tc_commands(setting, expected):
    cmds = netem.apply_commands("eth0", setting)
    assert cmds == ([] if not expected else [["tc", "qdisc", "replace", "dev", "eth0", "root", *expected]])


def test_odd_values_and_limit():
    s = network.parse("delay 0.5ms bandwidth 1.5Gbps")
    assert netem.netem_args(s, limit=5000) == ["netem", "limit", "5000", "delay", "500us", "rate", "1500mbit"]
    assert netem.netem_args(network.parse("bandwidth 123456bps")) == ["netem", "rate", "123456bit"]


def test_refuses_without_interface_and_per_link_settings():
    with pytest.raises(ValueError, match="explicit interface"):
        netem.apply_commands("", network.parse("delay 1ms"))
    with pytest.raises(ValueError, match="not a valid interface"):
        netem.apply_commands("eth0; rm -rf /", network.parse("delay 1ms"))
    with pytest.raises(ValueError, match="differs per link"):
        netem.apply_commands("eth0", network.parse("delay 1ms; link 0-1 delay 5ms"))
    p = _cli("netem", "apply", "--network", "delay 1ms")
    assert p.returncode == 2 and "--iface" in p.stderr


def test_dry_run_prints_commands_and_changes_nothing(tmp_path):
    p = _cli("netem", "apply", "--iface", "eth0", "--network", "delay 10ms bandwidth 1Gbps", "--dry-run",
             "--state-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "tc qdisc replace dev eth0 root netem delay 10ms rate 1gbit" in p.stdout
    assert not os.listdir(tmp_path)


def test_restore_commands():
    default_root = [{"kind": "pfifo_fast", "handle": "0:", "root": True}]
    assert netem.restore_commands("eth0", default_root) == ([["tc", "qdisc", "del", "dev", "eth0", "root"]], "")
    custom = [{"kind": "fq", "handle": "8001:", "root": True}]
    cmds, note = netem.restore_commands("eth0", custom)
    assert cmds == [["tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "8001:", "fq"]]
    assert "default parameters" in note


@pytest.fixture
def scratch_ns():
    """A namespace with a veth pair whose root qdisc is a custom tbf (never the host's interfaces)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: makes a scratch network namespace")
    ns = f"pst-{os.getpid()}-netemtest"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb"], check=True)
        subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", "va", "root", "handle", "7:", "tbf",
                        "rate", "1gbit", "burst", "100k", "latency", "10ms"], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def _root_qdisc(ns, dev="va"):
    out = subprocess.run(["tc", "-n", ns, "-j", "qdisc", "show", "dev", dev], capture_output=True, text=True).stdout
    return next(q for q in json.loads(out) if q.get("root"))


def test_apply_fails_clearly_without_netem_and_leaves_qdisc(scratch_ns, tmp_path):
    have_netem = subprocess.run(["tc", "-n", scratch_ns, "qdisc", "add", "dev", "vb", "root", "netem", "delay",
                                 "1ms"], capture_output=True).returncode == 0
    p = _cli("netem", "apply", "--iface", "va", "--network", "delay 5ms", "--state-dir", str(tmp_path), ns=scratch_ns)
    if have_netem:      # a kernel with netem: apply, then clear puts the tbf back
        assert p.returncode == 0, p.stderr
        assert _root_qdisc(scratch_ns)["kind"] == "netem"
        c = _cli("netem", "clear", "--iface", "va", "--state-dir", str(tmp_path), ns=scratch_ns)
        assert c.returncode == 0, c.stderr
        assert _root_qdisc(scratch_ns)["kind"] == "tbf"
        return
    assert p.returncode == 1
    assert "sch_netem" in p.stderr and "pipesim testbed" in p.stderr
    assert _root_qdisc(scratch_ns)["kind"] == "tbf"      # untouched
    assert not os.listdir(tmp_path)                       # no stale state left behind


def test_clear_without_state_touches_nothing(scratch_ns, tmp_path):
    c = _cli("netem", "clear", "--iface", "va", "--state-dir", str(tmp_path), ns=scratch_ns)
    assert c.returncode == 0 and "nothing to do" in c.stdout
    assert _root_qdisc(scratch_ns)["kind"] == "tbf"


def test_apply_default_is_a_no_op(scratch_ns, tmp_path):
    p = _cli("netem", "apply", "--iface", "va", "--network", "default", "--state-dir", str(tmp_path), ns=scratch_ns)
    assert p.returncode == 0 and "nothing to do" in p.stdout
    assert _root_qdisc(scratch_ns)["kind"] == "tbf"


def test_unknown_interface(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    p = _cli("netem", "apply", "--iface", "nosuchif0", "--network", "delay 1ms", "--state-dir", str(tmp_path))
    assert p.returncode != 0 and "no interface" in p.stderr


@pytest.mark.parametrize("how", ["apply", "apply_list"])
def test_the_saved_qdisc_file_is_never_left_half_written(tmp_path, monkeypatch, how):
    """The file that puts an interface back is written atomically: a failure while writing it
    (here: qdiscs that JSON cannot encode) leaves no truncated file that `netem clear` would
    then read. No tc command runs (the interface is lo, and _run is replaced)."""
    if os.geteuid() != 0:
        pytest.skip("apply checks for root before it writes the state file")
    ran = []
    monkeypatch.setattr(netem, "_run", lambda c: ran.append(c) or subprocess.CompletedProcess(c, 0, "", ""))
    monkeypatch.setattr(netem, "show_qdiscs", lambda iface: [{"kind": "noqueue", "odd": object()}])
    with pytest.raises(TypeError):
        if how == "apply":
            netem.apply("lo", network.parse("delay 5ms"), state_dir=str(tmp_path), out=lambda s: None)
        else:
            netem.apply_list("lo", [["tc", "qdisc", "replace", "dev", "lo", "root", "netem", "delay", "5ms"]], "x",
                             state_dir=str(tmp_path), out=lambda s: None)
    assert ran == [] and os.listdir(tmp_path) == []
