"""The local testbed: up/down, cleanup in every way a run can end, shaping accuracy.

Needs root and network namespaces (CI has both); skipped only when not root.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time

import pytest

from testbed import Testbed, available, sysnet

pytestmark = pytest.mark.netns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _need_testbed():
    if os.geteuid() != 0:
        pytest.skip("needs root: the testbed makes network namespaces (run the tests with sudo)")
    ok, reason = available()
    assert ok, reason          # root but no namespaces here is a broken CI machine, not a skip


def _ours() -> list[str]:
    return [ns for ns in sysnet.list_netns() if ns.startswith(sysnet.PREFIX)]


def _gone(pid: int) -> bool:
    if not os.path.exists(f"/proc/{pid}"):
        return True
    with open(f"/proc/{pid}/stat") as f:          # a zombie counts as gone
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


def _wait_for(cond, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _rtts(tb, src, dst, count=20):
    p = tb.run(src, ["ping", "-n", "-c", str(count), "-i", "0.01", "-W", "2", tb.addresses[dst]], timeout=30)
    import re
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", p.stdout)]
    assert rtts, p.stdout + p.stderr
    return rtts


def _spawn_owner(network: str, extra: str = "") -> subprocess.Popen:
    """A separate Python process that owns a testbed and prints its facts as JSON."""
    code = textwrap.dedent(f"""
        import json, sys, time
        from testbed import Testbed
        tb = Testbed(2, {network!r}).start()
        sleeper = tb.popen(1, ["sleep", "300"])
        print(json.dumps({{"ns": tb._all_ns, "helper": tb.helper_pid, "sleeper": sleeper.pid}}), flush=True)
        {extra}
        time.sleep(300)
    """)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # SIGINT as a terminal would deliver it: a shell starts background jobs with SIGINT ignored
    # (`cmd &`, nohup), and an ignored SIGINT is inherited, so the owner would never see it
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _root_links() -> str:
    """The machine's own interfaces and their qdiscs (minus counters)."""
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    qdiscs = subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True).stdout
    return links + qdiscs


def test_up_and_down_leaves_nothing():
    before = set(_ours())
    root_before = _root_links()
    with Testbed(3, "delay 1ms bandwidth 1Gbps") as tb:
        assert tb.is_up and len(tb.addresses) == 3 and len(set(tb.addresses)) == 3
        names = list(tb._all_ns)
        helper = tb.helper_pid
        assert all(ns in sysnet.list_netns() for ns in names)
        # every host reaches every other host (gloo opens a full mesh)
        for a in range(3):
            for b in range(3):
                if a != b:
                    assert tb.run(a, ["ping", "-c", "1", "-W", "2", tb.addresses[b]]).returncode == 0, (a, b)
        # nothing of ours in the root namespace, nothing changed there
        assert _root_links() == root_before
    assert not any(ns in sysnet.list_netns() for ns in names)
    assert _gone(helper)
    assert set(_ours()) <= before
    assert _root_links() == root_before


def test_cleanup_after_exception_kills_processes_inside():
    with pytest.raises(RuntimeError, match="boom"):
        with Testbed(2, "default") as tb:
            names, helper = list(tb._all_ns), tb.helper_pid
            sleeper = tb.popen(0, ["sleep", "300"])
            raise RuntimeError("boom")
    assert not any(ns in sysnet.list_netns() for ns in names)
    assert _gone(helper)
    assert _wait_for(lambda: sleeper.poll() is not None)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_cleanup_when_parent_dies(how):
    owner = _spawn_owner("delay 2ms")
    facts = json.loads(owner.stdout.readline())
    assert all(ns in sysnet.list_netns() for ns in facts["ns"])
    os.kill(owner.pid, how)
    try:
        owner.wait(timeout=10)
    except subprocess.TimeoutExpired:
        owner.kill()
        raise AssertionError(f"the testbed's owner did not exit within 10 s of signal {how!r}") from None
    assert _wait_for(lambda: not any(ns in sysnet.list_netns() for ns in facts["ns"])), facts
    assert _wait_for(lambda: _gone(facts["helper"]))
    assert _wait_for(lambda: _gone(facts["sleeper"]))


def test_two_testbeds_at_once_do_not_collide():
    with Testbed(2, "delay 1ms") as a, Testbed(2, "default") as b:
        assert not set(a._all_ns) & set(b._all_ns)
        ra, rb = statistics.median(_rtts(a, 0, 1, 10)), statistics.median(_rtts(b, 0, 1, 10))
        assert 1.9 < ra < 3.0 and rb < 1.0, (ra, rb)


def test_tcp_transfer_between_hosts():
    n = 4 << 20
    server = textwrap.dedent(f"""
        import socket, hashlib
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 7000)); s.listen(1); print("ready", flush=True)
        c, _ = s.accept(); h = hashlib.sha256(); got = 0
        while got < {n}:
            d = c.recv(1 << 20)
            if not d: break
            h.update(d); got += len(d)
        print(got, h.hexdigest(), flush=True)
    """)
    client = textwrap.dedent(f"""
        import socket, sys
        c = socket.create_connection((sys.argv[1], 7000), timeout=10)
        c.sendall(bytes(range(256)) * ({n} // 256)); c.close()
    """)
    import hashlib
    want = hashlib.sha256(bytes(range(256)) * (n // 256)).hexdigest()
    with Testbed(3, "delay 2ms bandwidth 500Mbps") as tb:
        srv = tb.popen(2, [sys.executable, "-c", server], stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "ready"
        assert tb.run(0, [sys.executable, "-c", client, tb.addresses[2]], timeout=30).returncode == 0
        got, digest = srv.stdout.readline().split()
        srv.wait(timeout=10)
    assert int(got) == n and digest == want


def test_rtt_under_delay_5ms():
    with Testbed(2, "delay 5ms") as tb:
        med = statistics.median(_rtts(tb, 0, 1, 30))
    assert abs(med - 10.0) <= 1.0, med


def test_delay_line_runs_on_the_cores_it_is_given():
    last = max(os.sched_getaffinity(0))
    with Testbed(2, "delay 1ms", relay_cpus=[last]) as tb:
        med = statistics.median(_rtts(tb, 0, 1, 10))
        with open(f"/proc/{tb.helper_pid}/status") as f:
            allowed = next(ln.split()[1] for ln in f if ln.startswith("Cpus_allowed_list"))
    assert allowed == str(last)
    assert abs(med - 2.0) <= 0.3, med           # and it still holds each packet for its delay


def test_per_link_delay_applies_to_its_link_only():
    with Testbed(3, "delay 1ms; link 0-1 delay 4ms") as tb:
        r01 = statistics.median(_rtts(tb, 0, 1, 10))
        r12 = statistics.median(_rtts(tb, 1, 2, 10))
    assert abs(r01 - 8.0) <= 0.8 and abs(r12 - 2.0) <= 0.3, (r01, r12)


def _iperf(tb, seconds=2):
    from testbed import check
    bps, _ = check.iperf(tb, 0, 1, seconds=seconds, omit=0.5)
    return bps


@pytest.mark.parametrize("network", ["bandwidth 100Mbps", "delay 2ms bandwidth 100Mbps"])
def test_throughput_under_bandwidth_cap(network):
    # one retry: CI machines are shared, and a CPU-starved iperf3 reads low
    seen = []
    with Testbed(2, network) as tb:
        for _ in range(2):
            seen.append(_iperf(tb))
            if abs(seen[-1] - 100e6) <= 10e6:
                break
    assert abs(seen[-1] - 100e6) <= 10e6, seen


@pytest.mark.parametrize("network, delay_s", [("bandwidth 100Mbps", 0.0), ("delay 2ms bandwidth 100Mbps", 0.002)])
def test_a_message_after_idle_does_not_skip_the_cap(network, delay_s):
    """A pipeline sends a burst, then idles. The shaper's bucket must not let a large part
    of the next message through at line rate (htb with a 70 kB bucket and 64 KiB GSO
    packets let ~134 KiB of each 256 KiB message skip the cap, halving its time)."""
    size = 256 << 10
    server = textwrap.dedent(f"""
        import socket
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 7001)); s.listen(1); print("ready", flush=True)
        c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            got = 0
            while got < {size}:
                d = c.recv(1 << 20)
                if not d: raise SystemExit
                got += len(d)
            c.sendall(b"k")
    """)
    client = textwrap.dedent(f"""
        import socket, sys, time
        c = socket.create_connection((sys.argv[1], 7001), timeout=10)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = bytes({size}); idle = []; busy = []
        for i in range(6):
            time.sleep(0.15)                      # idle: the shaper's bucket refills
            t = time.perf_counter(); c.sendall(msg); c.recv(1); idle.append(time.perf_counter() - t)
        for i in range(6):                        # back to back: the bucket stays empty
            t = time.perf_counter(); c.sendall(msg); c.recv(1); busy.append(time.perf_counter() - t)
        print(min(idle[2:]), min(busy[2:]))       # after the window has grown
    """)
    with Testbed(2, network) as tb:
        srv = tb.popen(1, [sys.executable, "-c", server], stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "ready"
        p = tb.run(0, [sys.executable, "-c", client, tb.addresses[1]], timeout=30)
        srv.kill()
    assert p.returncode == 0, p.stderr
    idle, busy = map(float, p.stdout.split())
    # Compared with the same message sent back to back on the same path in the same test (no
    # threshold tied to this machine's speed): the defect made it about half as long after idle.
    wire = size * 8 / 100e6                       # 21 ms at the cap
    assert busy >= 0.5 * wire, (idle, busy, wire)  # the cap holds at all
    assert idle >= 0.85 * busy, (idle, busy)


def test_errors_are_value_errors():
    with pytest.raises(ValueError, match="num_hosts"):
        Testbed(0)
    with pytest.raises(ValueError, match="cannot read delay"):
        Testbed(2, "delay fast")
    with pytest.raises(ValueError, match="hosts 0..1"):
        Testbed(2, "link 1-2 delay 1ms")
    tb = Testbed(2)
    with pytest.raises(RuntimeError, match="not up"):
        tb.command(0, ["true"])


def test_cli_check_prints_table():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "pipesim", "testbed", "check", "--network", "delay 2ms",
                        "--seconds", "1", "--pings", "10"], capture_output=True, text=True, env=env, timeout=60)
    assert "| delay 2ms | tun | 4.00 ms |" in p.stdout, p.stdout + p.stderr
    row = next(ln for ln in p.stdout.splitlines() if ln.startswith("| delay 2ms |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    median_ms = float(cells[3].split("/")[0])
    assert 3.9 <= median_ms <= 6.0, row          # the delay line holds both directions (timing: loose)
    # the exit status is the table's verdict: 0 when the setting met its targets, 1 when not (a busy
    # machine can miss the 10% RTT target; that is the check working, not the test failing)
    assert cells[-1] == "yes" or cells[-1].startswith("NO ("), row
    assert p.returncode == (0 if cells[-1] == "yes" else 1), p.stdout + p.stderr


def test_hosts_run_cubic_even_where_the_machine_does_not_allow_it():
    """A VM that allows only 'reno bbr' made the hosts silently keep BBR, whose pacing made
    every message over a delayed link 7-8 ms late (the fresh-machine demo of issue 11). The
    testbed allows cubic while it sets the hosts up, and puts the machine's list back."""
    key = "net/ipv4/tcp_allowed_congestion_control"
    before = sysnet.read_sysctls([key]).get(key)
    with Testbed(2, "delay 1ms") as tb:
        assert tb.tcp["net/ipv4/tcp_congestion_control"] == "cubic", tb.tcp
        assert tb.tcp["net/ipv4/tcp_slow_start_after_idle"] == "0"
        assert sysnet.read_sysctls([key]).get(key) == before
        out = tb.run(0, ["cat", "/proc/sys/net/ipv4/tcp_congestion_control"]).stdout.strip()
        assert out == "cubic"
    assert sysnet.read_sysctls([key]).get(key) == before
