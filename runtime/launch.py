"""Start one process per rank on this machine, watch them, and never hang silently.

:func:`run_local` spawns ``python -m <module> <args>`` once per rank with the usual
torch.distributed environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT`` on a free port). Each rank's stdout and stderr go to
``<log_dir>/rank<i>.log`` and, line by line, to this process's stderr prefixed with
``[rank i]`` (``echo=False`` to keep quiet).

Failure handling (what "never a silent hang" means here):

* a rank that exits non-zero (or is killed by a signal) makes the launcher kill the
  other ranks and raise :class:`LaunchError` naming that rank, its exit status and
  the tail of its log. If several ranks fail within ``grace_s`` of each other, the
  one killed by a signal, else the one that failed first, is named; the others are
  listed. A rank that timed out waiting for a peer prints ``PIPESIM_BLAME <peer>``
  (see ``runtime.engine``), and the launcher then names that peer as the rank that
  made no progress (following the chain when that peer itself timed out waiting for
  another rank).
* the whole run exceeding ``timeout_s`` -> kill all, raise naming the rank whose
  output went quiet first.
* ``stall_s`` (optional): no rank has written a line for ``stall_s`` seconds -> same.

With ``network`` set (and not ``"default"``) the ranks run inside the hosts of the
local testbed (:class:`testbed.Testbed`): host ``i`` runs rank ``i``,
``MASTER_ADDR`` is host 0's address, and each argv is wrapped by
``tb.command(i, argv)``. The environment is passed explicitly with ``env K=V ...`` so
that it survives whatever the wrapper does to the environment. ``testbed`` runs them in
the hosts of a testbed the caller already has up (and keeps: e.g. to re-shape it while
they run).

With ``torchrun=True`` each rank is a one-process torchrun node (``python -m
torch.distributed.run --nnodes N --nproc-per-node 1 --node-rank i --master-addr A
--master-port P -m module ...``): the ranks meet through torchrun's own rendezvous (its
store on host 0's address), exactly as on a cluster, and torchrun sets their ``RANK``,
``WORLD_SIZE`` and ``MASTER_*``. Its log folder is ``<log_dir>/torchrun`` (torchrun's
default, a new ``/tmp/torchelastic_*`` per node, is never removed).
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

BLAME_PREFIX = "PIPESIM_BLAME "


class LaunchError(RuntimeError):
    """A rank failed or hung. ``rank`` is the rank blamed, ``log_tail`` its last lines."""

    def __init__(self, message: str, rank: int | None, returncode: int | None, log_tail: str, log_dir: Path):
        super().__init__(message)
        self.rank, self.returncode, self.log_tail, self.log_dir = rank, returncode, log_tail, log_dir


@dataclass
class LaunchResult:
    ranks: int
    returncodes: list[int]
    wall_s: float
    log_dir: Path
    logs: list[Path] = field(default_factory=list)
    usage: dict = field(default_factory=dict)  # the machine's CPU during the run (see MachineUsage)

    def log(self, rank: int) -> str:
        return self.logs[rank].read_text(errors="replace")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class _Rank:
    def __init__(self, rank: int, argv: list[str], env: dict, log: Path, echo: bool,
                 changed: threading.Event | None = None):
        self.rank, self.log = rank, log
        self.changed = changed  # set when this rank's output ends (it exited): wakes the watcher
        self.last_output = time.monotonic()
        self.exit_time: float | None = None
        self.blame: int | None = None
        self._fh = open(log, "w", buffering=1)
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, text=True,
                                     errors="replace", bufsize=1)
        self._thread = threading.Thread(target=self._pump, args=(echo,), daemon=True)
        self._thread.start()

    def _pump(self, echo: bool) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.last_output = time.monotonic()
            self._fh.write(line)
            if line.startswith(BLAME_PREFIX):
                try:
                    self.blame = int(line[len(BLAME_PREFIX):].split()[0])
                except (ValueError, IndexError):
                    pass
            if echo:
                sys.stderr.write(f"[rank {self.rank}] {line}")
                sys.stderr.flush()
        self._fh.flush()
        if self.changed is not None:
            self.changed.set()

    def poll(self) -> int | None:
        rc = self.proc.poll()
        if rc is not None and self.exit_time is None:
            self.exit_time = time.monotonic()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: takes wrappers' children too
            except (ProcessLookupError, PermissionError):
                self.proc.kill()

    def close(self) -> None:
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._thread.join(timeout=5)
        self._fh.close()


def run_local(module: str, args: list[str], ranks: int, *, network: str | None = None, timeout_s: float = 300,
              env: dict | None = None, log_dir=None, stall_s: float | None = None, echo: bool = True,
              grace_s: float = 1.0, python: str | None = None, pin: bool | None = None, testbed=None,
              torchrun: bool = False) -> LaunchResult:
    """Run ``python -m module *args`` as ``ranks`` ranks; return when all exit 0, else raise LaunchError.

    ``pin`` (default: on, unless the environment sets ``PIPESIM_PIN=0``) pins each rank to one
    CPU with ``taskset`` (see :func:`placement`) and tells it which in ``PIPESIM_CPU``."""
    pin = pinning(pin)
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="pipesim-run-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    python = python or sys.executable
    use_testbed = testbed is not None or (network is not None and network.strip().lower() != "default")
    if testbed is not None and testbed.num_hosts < ranks:
        raise ValueError(f"the testbed has {testbed.num_hosts} hosts, fewer than the {ranks} ranks")

    with ExitStack() as stack:
        if use_testbed:
            from testbed import Testbed

            if testbed is not None:
                tb = testbed
            else:
                assert network is not None   # use_testbed without a testbed: a network setting was named
                tb = stack.enter_context(Testbed(num_hosts=ranks, network=network, relay_cpus=relay_cpus_for(ranks, pin)))
            master = tb.addresses[0]
            wrap = tb.command
        else:
            master = "127.0.0.1"
            wrap = None
        port = free_port("127.0.0.1")
        base_env = dict(os.environ)
        base_env.update(env or {})
        # make `python -m runtime` importable from the repository even when not installed
        repo = str(Path(__file__).resolve().parent.parent)
        base_env["PYTHONPATH"] = repo + (os.pathsep + base_env["PYTHONPATH"] if base_env.get("PYTHONPATH") else "")
        base_env["PYTHONUNBUFFERED"] = "1"
        procs: list[_Rank] = []
        cpus = placement(ranks) if pin else None
        changed = threading.Event()
        usage = MachineUsage()
        t0 = time.monotonic()
        try:
            for i in range(ranks):
                if torchrun:
                    dist_env = {}
                    argv = [python, "-m", "torch.distributed.run", "--nnodes", str(ranks), "--nproc-per-node", "1",
                            "--node-rank", str(i), "--master-addr", master, "--master-port", str(port),
                            # torchrun's own log folder: in the run's, not a torchelastic_* left in /tmp
                            "--log-dir", str((log_dir / "torchrun").resolve()), "-m", module, *map(str, args)]
                else:
                    dist_env = {"RANK": str(i), "WORLD_SIZE": str(ranks), "LOCAL_RANK": "0" if use_testbed else str(i),
                                "MASTER_ADDR": master, "MASTER_PORT": str(port)}
                    argv = [python, "-m", module, *map(str, args)]
                if cpus is not None:
                    dist_env["PIPESIM_CPU"] = str(cpus[i])
                    argv = ["taskset", "-c", str(cpus[i]), *argv]
                if wrap is not None:
                    extra = {k: v for k, v in (env or {}).items()}
                    extra.update(dist_env)
                    extra["PYTHONPATH"] = base_env["PYTHONPATH"]
                    extra["PYTHONUNBUFFERED"] = "1"
                    iface = getattr(tb, "iface", None)
                    if iface and "GLOO_SOCKET_IFNAME" not in extra:
                        extra["GLOO_SOCKET_IFNAME"] = iface  # gloo would otherwise bind the hostname's address
                    argv = wrap(i, ["env", *(f"{k}={v}" for k, v in extra.items()), *argv])
                procs.append(_Rank(i, argv, {**base_env, **dist_env}, log_dir / f"rank{i}.log", echo, changed))
            _watch(procs, t0, timeout_s, stall_s, grace_s, log_dir, changed)
        finally:
            for p in procs:
                p.kill()
            for p in procs:
                p.close()
        used = usage.finish()
        if use_testbed and getattr(tb, "mode", None) == "tun":   # where the delay line ran (None: where the kernel woke it)
            relay = getattr(tb, "relay_cpus", None)
            used["relay_cpus"] = sorted(relay) if relay else None
        return LaunchResult(ranks, [p.proc.returncode for p in procs], time.monotonic() - t0, log_dir,
                            [p.log for p in procs], used)


class MachineUsage:
    """CPU time of the whole machine over a run, split into the ranks', the launcher's and the rest.

    From ``/proc/stat`` (every CPU's busy and steal time), this process's own CPU time
    (the launcher: its watcher and output threads) and its reaped children's (the ranks and
    their wrappers, and the testbed's helper with its delay line). "Other" is what neither used:
    other processes. Interrupt work (the kernel moving the testbed's packets) is counted apart,
    and load averages bracket the run.
    """

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.stat0 = _proc_stat()
        self.self0 = _cpu_self()
        self.child0 = _cpu_children()
        self.load0 = _loadavg()

    def finish(self) -> dict:
        wall = max(time.monotonic() - self.t0, 1e-9)
        st1 = _proc_stat()
        busy = steal = total = irq = None
        if self.stat0 is not None and st1 is not None:
            busy, irq, steal, total = ((a - b) / _HZ for a, b in zip(st1, self.stat0))
        launcher = _cpu_self() - self.self0
        ranks = _cpu_children() - self.child0
        out = {"wall_s": wall, "launcher_cpu_s": launcher, "ranks_cpu_s": ranks,
               "launcher_cpu_pct": 100 * launcher / wall, "loadavg_start": self.load0, "loadavg_end": _loadavg()}
        if busy is not None and total:
            other = max(0.0, busy - launcher - ranks)
            out.update({"machine_busy_cpu_s": busy, "other_cpu_s": other, "other_cpu_pct": 100 * other / wall,
                        "irq_cpu_pct": 100 * (irq or 0.0) / wall, "steal_pct": 100 * (steal or 0.0) / total})
        return out


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat() -> tuple[int, int, int, int] | None:
    """(busy in processes, interrupts and softirqs, steal, total) jiffies over all CPUs, or None
    where /proc/stat is missing. Interrupts are apart: the kernel's packet work for the testbed."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()
    except OSError:
        return None
    v = [int(x) for x in parts[1:]]
    v += [0] * (8 - len(v))
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return user + nice + system, irq + softirq, steal, sum(v[:8])


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def placement(ranks: int) -> list[int]:
    """The CPU each rank is pinned to on this machine: round-robin over the usable CPUs
    (3 ranks on 2 CPUs: 0, 1, 0), so that the operating system cannot move them around and
    pipeline neighbours never share a core (two ranks on one core that message each other
    wait for the scheduler: a gloo ping-pong on one core takes a 4 ms tick per round trip
    here, see :mod:`calibrate.measure`). Which
    ranks share a core is then fixed, and the simulator models it (``host.placement``)."""
    usable = sorted(os.sched_getaffinity(0))
    return [usable[i % len(usable)] for i in range(ranks)]


def relay_cores(cpus: list[int]) -> list[int]:
    """The cores for the testbed's delay line given the ranks' (:func:`placement`): those of the
    usable cores with the fewest ranks pinned (a free core where there is one). The delay line
    runs SCHED_FIFO and preempts whatever runs where it wakes; left to the kernel it lands on
    the core two ranks share about as often as elsewhere (3 ranks on 2 cores: interleaved
    1F1B at delay 1ms, micro-batch 1, measured 104 ms a step against 94 ms with it on rank
    1's core, and the runs twice as far apart; ``benchmarks/relay_placement.py``)."""
    usable = sorted(os.sched_getaffinity(0))
    load = {c: 0 for c in usable}
    for c in cpus:
        if c in load:
            load[c] += 1
    least = min(load.values())
    return [c for c in usable if load[c] == least]


def pinning(pin: bool | None = None) -> bool:
    """Whether local ranks are pinned: ``pin``, or by default on unless ``PIPESIM_PIN=0``."""
    return os.environ.get("PIPESIM_PIN", "1") != "0" if pin is None else pin


def relay_cpus_for(ranks: int, pin: bool | None = None) -> list[int] | None:
    """The delay line's cores for a testbed of ``ranks`` local ranks (None: not pinned, as the ranks)."""
    return relay_cores(placement(ranks)) if pinning(pin) else None


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def _watch(procs: list[_Rank], t0: float, timeout_s: float, stall_s: float | None, grace_s: float,
           log_dir: Path, changed: threading.Event | None = None) -> None:
    """Wait for the ranks without spinning: the watcher sleeps until a rank's output ends (it
    exited) or a deadline is due, so that it takes no measurable CPU from the ranks' cores."""
    while True:
        rcs = [p.poll() for p in procs]
        failed = [p for p, rc in zip(procs, rcs) if rc not in (None, 0)]
        if failed:
            deadline = time.monotonic() + grace_s  # let near-simultaneous failures show up
            while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                time.sleep(0.05)
            failed = [p for p in procs if p.poll() not in (None, 0)]
            for p in procs:
                p.kill()
            for p in procs:
                p.close()
            by_signal = [p for p in failed if p.proc.returncode < 0]
            first = min(by_signal or failed, key=lambda p: (p.exit_time or 0.0, p.rank))
            blamed = first.blame if first.blame is not None and not by_signal else None
            seen = {first.rank}
            # follow the chain of waits: a blamed rank that itself timed out waiting for another
            while (blamed is not None and 0 <= blamed < len(procs) and blamed not in seen
                   and procs[blamed] in failed and procs[blamed].blame is not None):
                seen.add(blamed)
                blamed = procs[blamed].blame
            others = ", ".join(f"rank {p.rank} ({_describe(p.proc.returncode)})" for p in failed if p is not first)
            if blamed is not None and 0 <= blamed < len(procs):
                msg = (f"rank {blamed} made no progress: rank {first.rank} timed out waiting for "
                       f"{'it' if blamed == first.blame else f'rank {first.blame}, which waited for it'} "
                       f"({_describe(first.proc.returncode)})")
                name, tail_of = blamed, procs[blamed]
            else:
                msg = f"rank {first.rank} failed ({_describe(first.proc.returncode)})"
                name, tail_of = first.rank, first
            if others:
                msg += f"; also failed: {others}"
            tail = _tail(tail_of.log)
            if tail_of is not first:
                tail += f"\n--- rank {first.rank} ---\n" + _tail(first.log)
            raise LaunchError(f"{msg}\nlogs: {log_dir}\n--- tail of rank {name}'s log ---\n{tail}",
                              name, first.proc.returncode, tail, log_dir)
        if all(rc == 0 for rc in rcs):
            return
        now = time.monotonic()
        alive = [p for p, rc in zip(procs, rcs) if rc is None]
        quiet = min(alive, key=lambda p: p.last_output)
        why = None
        if now - t0 > timeout_s:
            why = f"run exceeded its timeout of {timeout_s:g}s"
        elif stall_s is not None and now - max(p.last_output for p in alive) > stall_s:
            why = f"no rank wrote any output for {stall_s:g}s"
        if why:
            for p in procs:
                p.kill()
            for p in procs:
                p.close()
            tail = _tail(quiet.log)
            raise LaunchError(f"{why}; rank {quiet.rank} went quiet first "
                              f"({now - quiet.last_output:.1f}s without output); still running: "
                              f"{', '.join(str(p.rank) for p in alive)}\nlogs: {log_dir}\n"
                              f"--- tail of rank {quiet.rank}'s log ---\n{tail}", quiet.rank, None, tail, log_dir)
        if changed is None:
            time.sleep(0.05)
            continue
        # sleep until a rank exits, or the next deadline (whole-run timeout, stall check), at most 1 s
        due = t0 + timeout_s - now
        if stall_s is not None:
            due = min(due, max(p.last_output for p in alive) + stall_s - now)
        changed.wait(min(1.0, max(0.01, due)))
        changed.clear()
