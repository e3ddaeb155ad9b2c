"""The testbed's delay line as a co-runner: what it costs the ranks, measured, and what
charging that cost would change in the predictions, scored offline on kept validations.

On one machine the testbed emulates delay with a user-space delay line
(:mod:`testbed.router`): one process reads every packet from the sending host's TUN
device and writes it to the receiving host's once its delay is up. It runs on the ranks'
cores (SCHED_FIFO: it preempts them) whenever some link has a delay. Over the kept runs of
2026-11-28 the machine's CPU beyond the ranks was 2-4% of a core under delays and about 0
on the default network and under bandwidth caps alone (``usage.other_cpu_pct``).

``probe``: two testbed hosts under a delay; a sender sends ``count`` messages of each size
(the CPU preset's activation sizes by default) to a receiver that answers each with 4
bytes, as a pipeline's next request would; the delay line's process CPU time
(``/proc/PID/stat``, user + system: writing a packet to a TUN device runs the receiving
host's network stack in the writer's context) is read before and after each size.

``score``: simulates every measured cell of the given folders from their profile, once as
calibrated and once charging the delay line's CPU per message (the probe's figure for the
message's size, interpolated): half when the message enters its wire, half when it
arrives. An idle core absorbs it at no cost to the ranks; with every core busy it shares
the least loaded one(s) with their ranks. Nothing is fitted to step times.

    python benchmarks/relay_cpu.py probe [--delay "delay 1ms"]
    python benchmarks/relay_cpu.py score --per-message-us 16384=700,65536=600,262144=500 FOLDER...
"""

from __future__ import annotations

import argparse
import bisect
import json
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

SIZES = (16 << 10, 64 << 10, 128 << 10, 256 << 10)   # the CPU preset's activations at mbs 1, 2, 4, and a small one
COUNT = 600                                          # messages per size (about 1.3 s each under delay 1ms)
PORT = 29517


# ------------------------------------------------------------------------------------------- probe

def _recv_exact(sock: socket.socket, buf: memoryview) -> None:
    got = 0
    while got < len(buf):
        k = sock.recv_into(buf[got:])
        if not k:
            raise ConnectionError("peer closed")
        got += k


def serve(port: int = PORT) -> None:
    """Receiver: read (8-byte size, payload) messages, answer each with 4 bytes; a size of 0 ends it."""
    with socket.create_server(("0.0.0.0", port)) as srv:
        print("ready", flush=True)
        while True:
            conn, _ = srv.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = bytearray(1 << 20)
                hdr = bytearray(8)
                try:
                    while True:
                        _recv_exact(conn, memoryview(hdr))
                        (n,) = struct.unpack("!Q", hdr)
                        if n == 0:
                            return
                        while n:
                            k = min(n, len(buf))
                            _recv_exact(conn, memoryview(buf)[:k])
                            n -= k
                        conn.sendall(b"ok!!")
                except ConnectionError:
                    continue


def send(addr: str, size: int, count: int, stop: bool, port: int = PORT) -> dict:
    """Sender: ``count`` messages of ``size`` bytes, each answered before the next."""
    payload = bytes(size)
    ack = memoryview(bytearray(4))
    with socket.create_connection((addr, port), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        for _ in range(count):
            s.sendall(struct.pack("!Q", size) + payload)
            _recv_exact(s, ack)
        wall = time.perf_counter() - t0
        if stop:
            s.sendall(struct.pack("!Q", 0))
    return {"size": size, "count": count, "wall_s": wall}


def probe(delay: str = "delay 1ms", sizes=SIZES, count: int = COUNT) -> list[dict]:
    """For each size: the delay line's CPU seconds over ``count`` messages (and the round trips' wall time)."""
    from testbed import Testbed
    from testbed.check import cpu_seconds

    points = []
    with Testbed(num_hosts=2, network=delay) as tb:
        assert tb.helper_pid is not None
        me = [sys.executable, str(Path(__file__).resolve())]
        srv = tb.popen(1, [*me, "serve"], stdout=subprocess.PIPE, text=True)
        try:
            if "ready" not in (srv.stdout.readline() if srv.stdout else ""):
                raise RuntimeError("the probe's receiver did not start")
            # a warm-up connection first (TCP's first round trips, the delay line's learned wake-up bias)
            tb.run(0, [*me, "send", tb.addresses[1], str(sizes[0]), str(count // 4)], timeout=300)
            for i, size in enumerate(sizes):
                c0 = cpu_seconds(tb.helper_pid)
                p = tb.run(0, [*me, "send", tb.addresses[1], str(size), str(count)]
                           + (["--stop"] if i == len(sizes) - 1 else []), timeout=300)
                c1 = cpu_seconds(tb.helper_pid)
                if p.returncode != 0:
                    raise RuntimeError(f"the probe's sender failed: {p.stderr.strip()[-300:]}")
                points.append({**json.loads(p.stdout.strip().splitlines()[-1]), "cpu_s": c1 - c0})
            srv.wait(timeout=10)
        finally:
            if srv.poll() is None:
                srv.kill()
            srv.wait()
    return points


# ------------------------------------------------------------------------------------------- score

def cost_of(table: dict[int, float]):
    """CPU seconds per message of ``nbytes``: linear between the probed sizes, flat beyond them."""
    xs = sorted(table)

    def f(nbytes: int) -> float:
        if nbytes <= xs[0]:
            return table[xs[0]]
        if nbytes >= xs[-1]:
            return table[xs[-1]]
        i = bisect.bisect_right(xs, nbytes)
        a, b = xs[i - 1], xs[i]
        return table[a] + (table[b] - table[a]) * (nbytes - a) / (b - a)
    return f


def charged_engine(cost):
    """The engine's simulation with the delay line's CPU charged (see the module docstring)."""
    from pipesim import engine as E

    class RelaySim(E._Sim):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            host = self.profile.host if self.durations is None else None
            p = self.p
            on = host is not None and host.placement is not None and any(
                (self.setting.for_link(i, j).delay_s or 0) > 0 for i in range(p) for j in range(p) if i != j)
            # a core no rank is pinned to is always idle: it absorbs the delay line
            self.relay_cores = (list(dict.fromkeys(self.core_of))
                                if on and self.core_of and len(set(host.placement)) == host.cores else None)

        def _relay(self, cpu_s: float) -> None:
            loads = [len(c.jobs) for c in self.relay_cores]
            low = min(loads)
            if low == 0:
                return
            pick = [c for c, n in zip(self.relay_cores, loads) if n == low]
            for c in pick:
                c.run(cpu_s / len(pick))

        def _start(self, m):
            super()._start(m)
            if self.relay_cores:
                half = 0.5 * cost(m.nbytes)
                self._relay(half)
                self._at(m.arrived, lambda: self._relay(half))

    return RelaySim


def score(folders: list[str], table: dict[int, float]) -> None:
    from loop import compare as C
    from loop.validate import load_runs
    from pipesim import engine as E
    from pipesim import profile as P

    plain, charged = E._Sim, charged_engine(cost_of(table))
    every: dict[str, list[float]] = {"as calibrated": [], "delay line charged": []}
    signed: dict[tuple[str, str], dict[str, list[float]]] = {}
    print("| folder | cells | MAPE as calibrated (worst) | delay line charged (worst) |")
    print("|---|---:|---|---|")
    for f in folders:
        folder = Path(f)
        prof = P.load(folder / "profile.json")
        transport = E.Transport.for_profile(prof)
        cells = load_runs(folder / "measured.jsonl")
        errs: dict[str, list[float]] = {k: [] for k in every}
        for by_run in cells.values():
            rs = [by_run[i] for i in sorted(by_run)]
            r = rs[0]
            measured = statistics.median(x["median"] for x in rs)
            v = int(r["stages_per_rank"]) if r.get("stages_per_rank") else None
            kind = "delay" if "delay" in r["network"] else "no delay"
            for name, sim_cls in (("as calibrated", plain), ("delay line charged", charged)):
                E._Sim = sim_cls
                try:
                    sim = E.simulate(prof, r["schedule"], r["micro_batch_size"], r["batch_size"],
                                     C.setting_of(r["network"]), transport=transport, steps=C.SIM_STEPS,
                                     record=False, stages_per_rank=v, engine="simpy").step_time
                finally:
                    E._Sim = plain
                e = 100 * (sim - measured) / measured
                errs[name].append(e)
                every[name].append(abs(e))
                signed.setdefault((r["schedule"], kind), {k: [] for k in every})[name].append(e)
        cols = [f"{statistics.fmean(map(abs, v)):.2f}% ({max(map(abs, v)):.1f}%)" for v in errs.values()]
        print(f"| {f} | {len(cells)} | {cols[0]} | {cols[1]} |")
    for name, v in every.items():
        print(f"all {len(v)} cells, {name}: mean absolute error {statistics.fmean(v):.3f}%, worst {max(v):.1f}%")
    print("\nSigned error (simulated - measured) / measured, mean over cells (- is under-predicted):\n")
    print("| schedule | network | cells | as calibrated | delay line charged |")
    print("|---|---|---:|---:|---:|")
    for (s, kind), d in sorted(signed.items()):
        a, b = d.values()
        print(f"| {s} | {kind} | {len(a)} | {statistics.fmean(a):+.2f}% | {statistics.fmean(b):+.2f}% |")


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        serve()
        return 0
    if argv[:1] == ["send"]:
        print(json.dumps(send(argv[1], int(argv[2]), int(argv[3]), stop="--stop" in argv)), flush=True)
        return 0
    ap = argparse.ArgumentParser(prog="relay_cpu.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("probe", help="measure the delay line's CPU per message in a two-host testbed")
    pp.add_argument("--delay", default="delay 1ms")
    ps = sub.add_parser("score", help="score charging it on kept validation folders")
    ps.add_argument("--per-message-us", required=True,
                    help="the probe's figures, SIZE=MICROSECONDS,... (bytes per message = CPU us per message)")
    ps.add_argument("folders", nargs="+")
    a = ap.parse_args(argv)
    if a.cmd == "probe":
        pts = probe(a.delay)
        print(f"delay line CPU per message under {a.delay!r} (each message answered with 4 bytes):\n")
        print("| message bytes | messages | delay line CPU s | per message us | round trip ms |")
        print("|---:|---:|---:|---:|---:|")
        for p in pts:
            print(f"| {p['size']:,} | {p['count']} | {p['cpu_s']:.2f} | {1e6 * p['cpu_s'] / p['count']:.0f} "
                  f"| {1e3 * p['wall_s'] / p['count']:.2f} |")
        print("\n--per-message-us " + ",".join(f"{p['size']}={1e6 * p['cpu_s'] / p['count']:.0f}" for p in pts))
        return 0
    table = {}
    for item in a.per_message_us.split(","):
        k, _, v = item.partition("=")
        table[int(k)] = float(v) * 1e-6
    score(a.folders, table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
