"""Why calibration probes two ranks that share a core apart: a gloo ping-pong on one core.

Starts two processes (gloo over 127.0.0.1), pins them to one core and then to two, and
prints per message size the round trip (p25, median, p90) of ``isend(n bytes).wait();
irecv(4 bytes).wait()`` against the peer's ``irecv().wait(); isend().wait()`` (the
calibration probe's ping-pong), with the CPU each process's threads used over the loop
(from /proc/self/task/*/schedstat: the compute thread and gloo's network thread).
Measured on the 2-core VM of 2026-11-29 (``results/validation-2026-11-29-s9/
colocated_pingpong.txt``): 3.9-4.0 ms per round trip on one core at every size; across
two, a median of 0.11 ms at 4 B and 0.41 ms at 1 MiB, with a p90 of 4 ms from 64 KiB up
(each process's own threads still share its one core). Gloo's network thread took about
half the core, calling epoll_wait some 25,000 times a second without reading (perf
trace): woken by the reply while its own rank is preempted inside the send, holding the
pair's lock, it spins until the tick. Run with nothing else on the machine:

    python benchmarks/colocated_pingpong.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

SIZES = (4, 65536, 1048576)
ROUNDS = 200


def _threads() -> dict[str, float]:
    out: dict[str, float] = {}
    for t in os.listdir("/proc/self/task"):
        try:
            name = open(f"/proc/self/task/{t}/comm").read().strip()
            cpu = int(open(f"/proc/self/task/{t}/schedstat").read().split()[0]) / 1e9
        except OSError:
            continue
        key = "gloo" if name.startswith("gloo") else ("main" if int(t) == os.getpid() else "other")
        out[key] = out.get(key, 0.0) + cpu
    return out


def child(rank: int, cpu: int, port: int) -> None:
    import torch
    import torch.distributed as dist

    os.sched_setaffinity(0, {cpu})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    peer = 1 - rank
    reply = torch.zeros(1)

    def wait(work) -> None:
        assert work is not None, "this rank is not in the group"
        work.wait()

    def round_trip(x) -> None:   # the calibration probe's ping-pong (calibrate.measure.pingpong)
        if rank == 0:
            wait(dist.isend(x, peer))
            wait(dist.irecv(reply, peer))
        else:
            wait(dist.irecv(x, peer))
            wait(dist.isend(reply, peer))

    for n in SIZES:
        x = torch.zeros(max(1, n // 4))
        for _ in range(20):   # warm-up
            round_trip(x)
        dist.barrier()
        before, t0, rtts = _threads(), time.perf_counter(), []
        for _ in range(ROUNDS):
            a = time.perf_counter()
            round_trip(x)
            rtts.append(time.perf_counter() - a)
        wall = time.perf_counter() - t0
        after = _threads()
        share = {k: (after[k] - before.get(k, 0.0)) / wall for k in after}
        rtts.sort()
        if rank == 0:
            print(f"  {n:>8} B: round trip p25 {rtts[ROUNDS // 4] * 1e3:6.3f}  median {rtts[ROUNDS // 2] * 1e3:6.3f}  "
                  f"p90 {rtts[9 * ROUNDS // 10] * 1e3:6.3f} ms;  rank 0's CPU over the loop: compute thread "
                  f"{100 * share.get('main', 0):4.1f}%, gloo thread {100 * share.get('gloo', 0):4.1f}% of wall",
                  flush=True)
    dist.destroy_process_group()


def main() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    layouts = [("one core", (cpus[0], cpus[0]))] + ([("two cores", (cpus[0], cpus[1]))] if len(cpus) > 1 else [])
    for name, (c0, c1) in layouts:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        print(f"{name} (cores {c0} and {c1}), {ROUNDS} round trips per size:", flush=True)
        procs = [subprocess.Popen([sys.executable, __file__, "--child", str(r), str(c), str(port)])
                 for r, c in ((0, c0), (1, c1))]
        for p in procs:
            if p.wait(timeout=300) != 0:
                raise SystemExit(f"a ping-pong process failed (exit status {p.returncode})")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
