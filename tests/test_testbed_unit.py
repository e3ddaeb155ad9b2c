"""Testbed pieces that need no root: link table, mode, shaping commands, the delay line itself."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from pipesim import network
from testbed import Testbed, core, helper, router


def test_link_table_covers_every_directed_pair():
    t = core.link_table(network.parse("delay 1ms; link 0-1 bandwidth 100Mbps; link 2->1 delay 3ms"), 3)
    assert set(t) == {f"{i},{j}" for i in range(3) for j in range(3) if i != j}
    assert t["0,1"] == (1e-3, 100e6) and t["1,0"] == (1e-3, 100e6)
    assert t["2,1"] == (3e-3, None) and t["1,2"] == (1e-3, None)
    assert t["0,2"] == (1e-3, None)        # non-neighbours get the uniform clauses


@pytest.mark.parametrize("text,mode", [("default", "veth"), ("bandwidth 1Gbps", "veth"),
                                       ("delay 1ms", "tun"), ("bandwidth 1Gbps; link 0-1 delay 1ms", "tun")])
def test_mode(text, mode):
    assert Testbed(2, text).mode == mode


def test_shape_commands_one_htb_class_per_capped_destination():
    links = core.link_table(network.parse("delay 1ms; link 0-1 bandwidth 100Mbps"), 3)
    cmds = helper.shape_commands("NS", 0, links, 3)
    text = [" ".join(c) for c in cmds]
    assert text[0] == "tc -n NS qdisc add dev tb0 root handle 1: htb default 0"
    assert any("classid 1:b htb rate 100000000bit ceil 100000000bit" in c for c in text)
    assert any("match ip dst 10.77.0.2/32 flowid 1:b" in c for c in text)
    assert not any("10.77.0.3" in c for c in text)          # 0 -> 2 is not capped
    assert helper.shape_commands("NS", 2, links, 3) == []


def test_available_says_what_to_do_when_not_root(monkeypatch):
    monkeypatch.setattr(core, "_available", None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    ok, reason = core.available()
    assert not ok and "root" in reason and "sudo" in reason
    with pytest.raises(RuntimeError, match="sudo"):
        Testbed(2, "delay 1ms").start()
    monkeypatch.setattr(core, "_available", None)


def _packet(dst: str, payload: bytes = b"x" * 100) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0,
                      socket.inet_aton("10.77.0.1"), socket.inet_aton(dst))
    return hdr + payload


def test_delay_line_holds_each_link_for_its_delay():
    """The router loop over datagram socket pairs standing in for TUN devices."""
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(3)]
    for a, _ in pairs:
        a.setblocking(False)
    ctrl_r, ctrl_w = os.pipe()
    delays = [[0, 0.004, 0.0], [0.004, 0, 0.001], [0.0, 0.001, 0]]
    index = {socket.inet_aton(f"10.77.0.{i + 1}"): i for i in range(3)}
    stats = router.Stats(3)
    th = threading.Thread(target=router.serve, args=([a.fileno() for a, _ in pairs], index, delays, ctrl_r,
                                                     os.getppid(), stats), daemon=True)
    th.start()
    try:
        def one_way(src, dst):
            pairs[dst][1].settimeout(2)
            t0 = time.monotonic()
            pairs[src][1].send(_packet(f"10.77.0.{dst + 1}"))
            data = pairs[dst][1].recv(70000)
            assert data[16:20] == socket.inet_aton(f"10.77.0.{dst + 1}")
            return time.monotonic() - t0
        d01 = sorted(one_way(0, 1) for _ in range(10))[5]
        d12 = sorted(one_way(1, 2) for _ in range(10))[5]
        d02 = sorted(one_way(0, 2) for _ in range(10))[5]
        early = router.EARLY_OK_S  # a packet may leave this much before its time (no busy-wait)
        assert 0.004 - early <= d01 < 0.0055, d01
        assert 0.001 - early <= d12 < 0.0025, d12
        assert d02 < 0.0015, d02
        # a burst keeps its order
        for k in range(50):
            pairs[0][1].send(_packet("10.77.0.2", struct.pack("!I", k) * 4))
        got = [struct.unpack("!I", pairs[1][1].recv(70000)[20:24])[0] for _ in range(50)]
        assert got == list(range(50))
        # junk is dropped, not forwarded
        pairs[0][1].send(b"\x60" + b"\0" * 60)               # IPv6
        pairs[0][1].send(_packet("10.99.0.1"))              # unknown host
    finally:
        os.close(ctrl_w)                                    # EOF: the loop returns
        th.join(timeout=2)
        os.close(ctrl_r)
    assert not th.is_alive()
    assert stats.dropped == 2 and stats.packets[0][1] == 60


def test_relay_cpus_checked_and_overridden_by_the_environment(monkeypatch):
    have = sorted(os.sched_getaffinity(0))
    monkeypatch.delenv(core.RELAY_ENV, raising=False)
    assert Testbed(2, "delay 1ms").relay_cpus is None                  # the kernel's choice unless told
    assert Testbed(2, "delay 1ms", relay_cpus=[have[-1]]).relay_cpus == {have[-1]}
    for bad in ([], [max(have) + 1], ["1"], [True]):
        with pytest.raises(ValueError, match="relay_cpus"):
            Testbed(2, "delay 1ms", relay_cpus=bad)
    monkeypatch.setenv(core.RELAY_ENV, "any")                           # the override wins, both ways
    assert Testbed(2, "delay 1ms", relay_cpus=[have[-1]]).relay_cpus is None
    monkeypatch.setenv(core.RELAY_ENV, str(have[0]))
    assert Testbed(2, "delay 1ms").relay_cpus == {have[0]}
    monkeypatch.setenv(core.RELAY_ENV, "one")
    with pytest.raises(ValueError, match="PIPESIM_TESTBED_RELAY_CPUS='one': give core numbers"):
        Testbed(2, "delay 1ms")


def test_relay_cores_are_the_least_loaded(monkeypatch):
    from runtime import launch
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert launch.placement(3) == [0, 1, 0]
    assert launch.relay_cores(launch.placement(3)) == [1]      # ranks 0 and 2 share core 0: rank 1's core
    assert launch.relay_cores(launch.placement(4)) == [0, 1]   # a tie: either
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert launch.relay_cores(launch.placement(3)) == [3]      # a free core where there is one
    assert launch.relay_cores([]) == [0, 1, 2, 3]
