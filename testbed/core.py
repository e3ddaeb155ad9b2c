"""A local multi-host testbed: N network namespaces joined by shaped links.

Usage::

    from testbed import Testbed, available
    ok, reason = available()
    with Testbed(num_hosts=3, network="delay 10ms bandwidth 1Gbps") as tb:
        tb.addresses          # IPv4 address of host i, reachable from every other host
        tb.command(i, argv)   # argv wrapped to run inside host i

Every directed pair (i, j) gets ``setting.for_link(i, j)``: the pipeline links
(i <-> i+1) and the others alike, so a uniform setting shapes all traffic, as netem on
every machine's interface would. Delay comes from a user-space delay line between TUN
devices (this kernel has no ``sch_netem``); bandwidth from htb per destination on each
host's egress; a setting with no delay uses plain veth pairs and a bridge. Real kernel
TCP runs end to end, over an MTU of 9000 (``PIPESIM_TESTBED_MTU`` overrides it). All of it lives in a helper process that removes the namespaces
when the testbed is closed, when the parent dies (even by SIGKILL), or on a signal.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from pipesim import network as _network
from pipesim.util import stop_child

from . import sysnet

_live: weakref.WeakSet[Testbed] = weakref.WeakSet()
_available: tuple[bool, str] | None = None
_handlers_installed = False


def available() -> tuple[bool, str]:
    """(True, "") when testbeds can be built here, else (False, what is missing and what to do)."""
    global _available
    if _available is not None:
        return _available
    if sys.platform != "linux":
        _available = (False, "the testbed needs Linux network namespaces")
    elif os.geteuid() != 0:
        _available = (False, "needs root (network namespaces, TUN, tc): run with sudo")
    elif sysnet.missing_tools():
        _available = (False, f"missing {', '.join(sysnet.missing_tools())}: install iproute2 "
                             "(apt-get install iproute2)")
    elif not os.path.exists("/dev/net/tun"):
        _available = (False, "no /dev/net/tun: load the tun module (modprobe tun) or run the "
                             "container with --device /dev/net/tun")
    else:
        probe = f"{sysnet.PREFIX}{os.getpid()}-probe{secrets.token_hex(2)}"
        p = sysnet.run(["ip", "netns", "add", probe], check=False)
        if p.returncode != 0:
            _available = (False, f"cannot create a network namespace ({p.stderr.strip()}); "
                                 "run as root on a host or a --privileged container")
        else:
            sysnet.run(["ip", "netns", "del", probe], check=False)
            _available = (True, "")
    return _available


def _close_all() -> None:
    for tb in list(_live):
        tb.close()


def _on_term(signum, frame):
    _close_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_close_all)
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(s) in (signal.SIG_DFL, None):
                signal.signal(s, _on_term)


def link_table(setting: _network.NetworkSetting, n: int) -> dict[str, tuple[float | None, float | None]]:
    """``"i,j" -> (delay_s, bandwidth_bps)`` for every directed pair of hosts."""
    table = {}
    for i in range(n):
        for j in range(n):
            if i != j:
                ov = setting.for_link(i, j)
                table[f"{i},{j}"] = (ov.delay_s, ov.bandwidth_bps)
    return table


RELAY_ENV = "PIPESIM_TESTBED_RELAY_CPUS"


def relay_cpu_set(cpus: Sequence[int] | None) -> set[int] | None:
    """The cores the delay line will be pinned to (None: not pinned), from ``cpus`` or, where
    set, ``PIPESIM_TESTBED_RELAY_CPUS``; each must be a core this process may use."""
    text = os.environ.get(RELAY_ENV, "").strip()
    where = f"{RELAY_ENV}={text!r}" if text else "relay_cpus"
    if text:
        if text.lower() in ("any", "none", "kernel"):
            return None
        try:
            cpus = [int(c) for c in text.split(",") if c.strip()]
        except ValueError:
            raise ValueError(f"{where}: give core numbers (e.g. 1 or 0,1) or 'any'") from None
    if cpus is None:
        return None
    got = set()
    for c in cpus:
        if isinstance(c, bool) or not isinstance(c, int):
            raise ValueError(f"{where}: core numbers must be integers, got {c!r}")
        got.add(c)
    have = os.sched_getaffinity(0)
    if not got or not got <= have:
        raise ValueError(f"{where}: name one or more of the cores this process may use, {sorted(have)}; "
                         f"got {sorted(got)}")
    return got


class Testbed:
    """N hosts (network namespaces) joined by links shaped to a network setting.

    ``network``: a setting string (``"delay 10ms bandwidth 1Gbps"``) or a parsed
    :class:`~pipesim.network.NetworkSetting`. ``verbose`` prints progress to stderr.
    ``mode``: ``"auto"`` (the delay line only when some link has a delay), ``"tun"``
    (always the delay line: a testbed that :meth:`reshape` may give any delay and cap
    later) or ``"veth"`` (no delays possible). ``relay_cpus``: the cores the delay line may
    run on (default: wherever the kernel wakes it); ``PIPESIM_TESTBED_RELAY_CPUS`` overrides
    it (``"1"``, ``"0,1"``, or ``"any"`` for the kernel's choice). The delay line runs
    SCHED_FIFO, so on a busy core it preempts whatever runs there: the launcher gives it
    the cores with the fewest ranks (:func:`runtime.launch.relay_cores`).
    """

    __test__ = False   # not a pytest test class, despite the name

    def __init__(self, num_hosts: int = 2, network: str | _network.NetworkSetting = "default", *,
                 verbose: bool = False, startup_timeout_s: float = 30.0, stats_file: str | None = None,
                 mode: str = "auto", relay_cpus: Sequence[int] | None = None):
        if not isinstance(num_hosts, int) or num_hosts < 1:
            raise ValueError(f"num_hosts must be an integer >= 1, got {num_hosts!r}")
        if num_hosts > 200:
            raise ValueError(f"num_hosts must be <= 200, got {num_hosts}")
        self.setting = _network.parse(network) if isinstance(network, str) else network
        if not isinstance(self.setting, _network.NetworkSetting):
            raise ValueError(f"network must be a string or NetworkSetting, got {type(network).__name__}")
        self.setting.check_stages(num_hosts, neighbours_only=False, what="testbed hosts")  # any pair of hosts
        self.num_hosts = num_hosts
        self.links = link_table(self.setting, num_hosts)
        if mode not in ("auto", "tun", "veth"):
            raise ValueError(f"mode must be auto, tun or veth, got {mode!r}")
        has_delay = any((d or 0) > 0 for d, _ in self.links.values())
        if mode == "veth" and has_delay:
            raise ValueError(f"network setting {self.setting.label!r} has a delay, which needs mode 'tun'")
        self.mode = mode if mode != "auto" else ("tun" if has_delay else "veth")
        self.relay_cpus = relay_cpu_set(relay_cpus)
        self._ctrl_lock = threading.Lock()
        self.verbose = verbose
        self.startup_timeout_s = startup_timeout_s
        self.stats_file = stats_file
        self.addresses: list[str] = []
        self.namespaces: list[str] = []
        self.iface = ""
        self.helper_pid: int | None = None
        self._all_ns: list[str] = []
        self._proc: subprocess.Popen | None = None

    # -- life cycle -------------------------------------------------------------------
    def __enter__(self) -> Testbed:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _say(self, msg: str) -> None:
        if self.verbose:
            print(f"[testbed] {msg}", file=sys.stderr, flush=True)

    def start(self) -> Testbed:
        if self._proc is not None:
            raise RuntimeError("testbed is already up")
        ok, reason = available()
        if not ok:
            raise RuntimeError(f"cannot build a testbed: {reason}")
        stale = sysnet.sweep_stale()
        if stale:
            self._say(f"removed {len(stale)} namespaces left by a crashed testbed")
        _install_handlers()
        spec = {"num_hosts": self.num_hosts, "tag": f"{os.getpid()}-{secrets.token_hex(3)}",
                "mode": self.mode, "links": self.links, "stats_file": self.stats_file,
                "mtu": int(os.environ.get("PIPESIM_TESTBED_MTU", "0")) or None,
                "relay_cpus": sorted(self.relay_cpus) if self.relay_cpus else None}
        # namespaces are named after this (owner) process's pid: a later testbed sweeps
        # those whose owner is gone (only if owner and helper were both killed)
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._say(f"starting {self.num_hosts} hosts, network {self.setting.label!r} ({self.mode} mode)")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "testbed.helper", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
        self.helper_pid = self._proc.pid
        _live.add(self)
        line = self._read_line(self.startup_timeout_s)
        msg: dict[str, Any]
        try:
            msg = json.loads(line) if line else {"error": "helper exited without a word (see stderr above)"}
        except json.JSONDecodeError:
            msg = {"error": f"helper said {line!r}"}
        if "ready" not in msg:
            self.close()
            raise RuntimeError(f"testbed setup failed: {msg.get('error')}")
        info = msg["ready"]
        self.namespaces, self._all_ns = info["namespaces"], info["all_namespaces"]
        self.addresses, self.iface = info["addresses"], info["iface"]
        self.tcp = info.get("tcp", {})  # the hosts' TCP settings as they are (congestion control, ...)
        self._say("up: " + ", ".join(f"host {i} {a} (netns {ns})" for i, (a, ns)
                                      in enumerate(zip(self.addresses, self.namespaces))))
        return self

    def _read_line(self, timeout: float) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return ""
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
        return buf.decode(errors="replace").strip()

    def close(self) -> None:
        """Stop the helper (it removes everything) and make sure nothing is left."""
        proc, self._proc = self._proc, None
        _live.discard(self)
        if proc is None:
            return
        stop_child(proc, 15)
        if proc.stdout:
            proc.stdout.close()
        # fallback if the helper was killed before it could clean up
        left = [ns for ns in self._all_ns if ns in sysnet.list_netns()]
        if left:
            sysnet.delete_netns(left)
        self.namespaces = []        # command() now says the testbed is not up
        self._say("down")

    def reshape(self, network: str | _network.NetworkSetting, hosts=None, timeout_s: float = 30.0) -> None:
        """Shape the links while up: every directed link ``i -> j`` whose source ``i`` is in
        ``hosts`` (default: all) gets ``network``'s setting for it, as netem on machine ``i``'s
        interface would (each host shapes what it sends). ``"default"`` removes the shaping.
        Delays need a testbed built with ``mode="tun"``. Raises RuntimeError if the helper
        refuses or does not answer."""
        setting = _network.parse(network) if isinstance(network, str) else network
        for links, _ in setting.clauses:
            for a, b in links or ():
                if max(a, b) >= self.num_hosts:
                    raise ValueError(f"network setting {setting.label!r} names link {a}-{b}, "
                                     f"but the testbed has hosts 0..{self.num_hosts - 1}")
        srcs = set(range(self.num_hosts)) if hosts is None else {int(h) for h in hosts}
        if not srcs <= set(range(self.num_hosts)):
            raise ValueError(f"hosts {sorted(srcs)} out of range 0..{self.num_hosts - 1}")
        new = {k: v for k, v in link_table(setting, self.num_hosts).items() if int(k.split(",")[0]) in srcs}
        if self.mode != "tun" and any((d or 0) > 0 for d, _ in new.values()):
            raise ValueError(f"cannot reshape to {setting.label!r}: this testbed has no delay line "
                             "(build it with mode='tun')")
        with self._ctrl_lock:
            if not self.is_up:
                raise RuntimeError("testbed is not up")
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write((json.dumps({"reshape": {"links": new}}) + "\n").encode())
                self._proc.stdin.flush()
            except OSError as e:
                raise RuntimeError(f"testbed helper is gone: {e}") from None
            line = self._read_line(timeout_s)
        try:
            msg = json.loads(line) if line else {"error": f"no answer from the testbed helper within {timeout_s:g}s"}
        except json.JSONDecodeError:
            msg = {"error": f"helper said {line!r}"}
        if "reshaped" not in msg:
            raise RuntimeError(f"reshaping the testbed to {setting.label!r} failed: {msg.get('error')}")
        self.links.update(new)
        if hosts is None:
            self.setting = setting
        self._say(f"reshaped hosts {sorted(srcs)} to {setting.label!r}")

    @property
    def is_up(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- running things inside hosts ----------------------------------------------------
    def command(self, i: int, argv: list[str]) -> list[str]:
        """``argv`` wrapped to run inside host ``i``."""
        if not self.namespaces:
            raise RuntimeError("testbed is not up; use it as `with Testbed(...) as tb:`")
        if not 0 <= i < self.num_hosts:
            raise ValueError(f"host index {i} out of range 0..{self.num_hosts - 1}")
        return ["ip", "netns", "exec", self.namespaces[i], *argv]

    def run(self, i: int, argv: list[str], **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.command(i, argv), **kw)

    def popen(self, i: int, argv: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self.command(i, argv), **kw)

    def __repr__(self) -> str:
        return (f"Testbed(num_hosts={self.num_hosts}, network={self.setting.label!r}, mode={self.mode}, "
                f"up={self.is_up})")
