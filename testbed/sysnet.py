"""Thin wrappers over ``ip``/``tc`` and the few syscalls the testbed needs (Linux only).

Nothing here touches the machine's own interfaces: every command names a network
namespace (``ip -n NS ...``), and TUN devices are created directly inside the host's
namespace (``setns`` around the ``open`` of /dev/net/tun), so the root namespace never
sees them.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import struct
import subprocess
import time

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
PR_SET_TIMERSLACK = 29
NETNS_DIR = "/run/netns"
PREFIX = "pst-"          # every namespace a testbed creates starts with this

_libc = None


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def run(argv: list[str], check: bool = True, what: str = "") -> subprocess.CompletedProcess:
    """Run a command; on failure raise RuntimeError with the command and its stderr."""
    p = subprocess.run(argv, capture_output=True, text=True)
    if check and p.returncode != 0:
        msg = (p.stderr or p.stdout).strip()
        raise RuntimeError(f"{what + ': ' if what else ''}`{' '.join(argv)}` failed: {msg}")
    return p


def setns_net(fd: int) -> None:
    if libc().setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


def set_timer_slack(ns: int = 1) -> None:
    """Make select() wake-ups precise (default slack is 50 us)."""
    try:
        libc().prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0)
    except Exception:
        pass


@contextlib.contextmanager
def in_netns(netns: str):
    """Run the body with this (single-threaded) process inside namespace ``netns``.

    Sockets, TUN devices and /proc/sys/net files opened inside belong to ``netns``.
    """
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
    try:
        setns_net(target)
        try:
            yield
        finally:
            setns_net(own)
    finally:
        os.close(own)
        os.close(target)


def open_tun_in(netns: str, name: str) -> int:
    """Create TUN device ``name`` inside namespace ``netns``; return its (non-blocking) fd."""
    with in_netns(netns):
        fd = os.open("/dev/net/tun", os.O_RDWR)
        ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
        fcntl.ioctl(fd, TUNSETIFF, ifr)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    return fd


# TCP settings a new namespace would otherwise reset to kernel defaults; the hosts copy
# the machine's own, so a testbed's TCP behaves like this machine's (window limits!)
INHERITED_SYSCTLS = [
    "net/ipv4/tcp_rmem", "net/ipv4/tcp_wmem", "net/ipv4/tcp_congestion_control",
    "net/ipv4/tcp_slow_start_after_idle", "net/ipv4/tcp_no_metrics_save",
    "net/ipv4/tcp_window_scaling", "net/ipv4/tcp_timestamps", "net/ipv4/tcp_sack",
]


# ...except two that the link model relies on, set as tuned training clusters set them:
# cubic rather than a pacing congestion control (BBR paced each 256 KiB burst out over
# 2-7 ms through a 10 ms path), and no return to slow start after an idle period (which
# cost one extra round trip on every burst after a pause). Measured with 1F1B over
# "delay 10ms": send-to-arrival 12-17 ms with the machine's BBR, 10-30 ms with cubic,
# 10.1 ms with cubic and tcp_slow_start_after_idle=0 (the model says 10.1 ms).
# And a 4 MiB default receive buffer: with the machine's 128 KiB, a new connection's
# receive window sometimes stayed near 64 KiB for a whole run (ss: rwnd_limited), and a
# GPipe run over "delay 10ms bandwidth 1Gbps" took 0.50 s per step instead of 0.24 s in
# 3 of 6 runs; with 4 MiB, 0 of 5.
TCP_OVERRIDES = {"net/ipv4/tcp_congestion_control": "cubic", "net/ipv4/tcp_slow_start_after_idle": "0", "net/ipv4/tcp_rmem": "4096 4194304 16777216"}


ALLOWED_CC = "net/ipv4/tcp_allowed_congestion_control"
CC_LOCK = "/run/pipesim-tcp-cc.lock"


@contextlib.contextmanager
def congestion_control_allowed(name: str):
    """Let new namespaces take ``name`` as their default congestion control while inside.

    A namespace other than the machine's own may only default to an algorithm in the
    machine's ``tcp_allowed_congestion_control`` (the kernel refuses others with EPERM,
    which the sysctl write reports as an I/O error). Where the machine does not list it
    (some VMs allow only ``reno bbr``), it is added for the moment the hosts are set up and
    the machine's list is put back right after: a namespace keeps the default it was given.
    A file lock keeps two testbeds from restoring the list under each other."""
    import fcntl

    os.makedirs(os.path.dirname(CC_LOCK), exist_ok=True)
    with open(CC_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = read_sysctls([ALLOWED_CC]).get(ALLOWED_CC)
        changed = False
        if before is not None and name not in before.split():
            try:
                with open(f"/proc/sys/{ALLOWED_CC}", "w") as f:
                    f.write(f"{before} {name}")
                changed = True
            except OSError:
                pass
        try:
            yield
        finally:
            if changed:
                with open(f"/proc/sys/{ALLOWED_CC}", "w") as f:
                    f.write(before or "")


def read_sysctls(keys: list[str]) -> dict[str, str]:
    out = {}
    for k in keys:
        try:
            with open(f"/proc/sys/{k}") as f:
                out[k] = f.read().strip()
        except OSError:
            pass
    return out


def write_sysctls(netns: str, values: dict[str, str]) -> list[str]:
    """Write sysctls inside ``netns``; return the keys that could not be written."""
    failed = []
    with in_netns(netns):
        for k, v in values.items():
            try:
                with open(f"/proc/sys/{k}", "w") as f:
                    f.write(v)
            except OSError:
                failed.append(k)
    return failed


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def netns_pids(ns: str) -> list[int]:
    p = run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in p.stdout.split() if x.strip().isdigit()]


def kill_netns_processes(ns: str, grace_s: float = 1.0) -> None:
    """SIGTERM, then SIGKILL, every process still running inside ``ns``."""
    me = os.getpid()
    pids = [p for p in netns_pids(ns) if p != me]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
            if not pids:
                return
            time.sleep(0.02)


def delete_netns(names: list[str]) -> list[str]:
    """Kill processes inside, then delete each namespace; return the names that failed."""
    failed = []
    for ns in names:
        if ns not in list_netns():
            continue
        kill_netns_processes(ns)
        p = run(["ip", "netns", "del", ns], check=False)
        if p.returncode != 0 and ns in list_netns():
            failed.append(ns)
    return failed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete testbed namespaces whose owning helper process is gone (after a hard crash)."""
    stale = []
    for ns in list_netns():
        if not ns.startswith(PREFIX):
            continue
        parts = ns[len(PREFIX):].split("-")
        if parts and parts[0].isdigit() and not pid_alive(int(parts[0])):
            stale.append(ns)
    delete_netns(stale)
    return stale


def missing_tools() -> list[str]:
    return [t for t in ("ip", "tc") if shutil.which(t) is None]
