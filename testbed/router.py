"""The user-space delay line: one loop that moves IP packets between the hosts' TUN devices.

What is modelled: a constant one-way delay per directed link (src host -> dst host),
as ``netem delay D`` without jitter, loss or reordering. Each packet read from host
``src``'s TUN device is held for ``delay[src][dst]`` seconds (``dst`` from the IPv4
destination address) and then written to host ``dst``'s TUN device, where the kernel
receives it. Packets of one link leave in the order they came (one FIFO per link,
constant delay). Bandwidth is not modelled here: the kernel shapes each directed link
with an htb class on the sender's TUN egress, before the packet reaches this loop.

What is not modelled: jitter, loss, reordering, IPv6 (dropped), a queue limit in the
delay line (it holds whatever the sender's window puts in flight). Timing: wake-ups use
``select`` with microsecond timeouts, a 1 ns timer slack, a learned early-wake bias and
releases in the same wake-up every packet due within 30 us (so a burst costs one wake-up
and nothing spins: on a 2-core machine the delay line's CPU competes with the ranks);
the helper runs SCHED_FIFO (priority 1) where allowed.
The release error is reported by :class:`Stats` (tens of microseconds on an idle
machine); on top of the hold, each direction costs one TUN read and write (about
0.05 ms, so an idle RTT is 2 x delay + about 0.1-0.15 ms, against 0.05 ms on veth).
"""

from __future__ import annotations

import os
import select
import time
from collections import deque

READ_SIZE = 65536 + 64
BATCH = 64            # packets read from one device per wake-up, at most
EARLY_OK_S = 30e-6    # a packet due within this long is released in the current wake-up (no busy-wait)
EARLY_MAX_S = 400e-6  # cap on the learned wake-up bias


class Stats:
    def __init__(self, n: int):
        self.packets = [[0] * n for _ in range(n)]
        self.bytes = [[0] * n for _ in range(n)]
        self.dropped = 0
        self.max_late_s = 0.0      # worst release lateness seen
        self.sum_late_s = 0.0
        self.released = 0
        self.late_hist = [0] * 201     # 10 us buckets up to 2 ms, then overflow

    def late(self, s: float) -> None:
        self.released += 1
        self.sum_late_s += s
        if s > self.max_late_s:
            self.max_late_s = s
        self.late_hist[max(0, min(int(s * 1e5), 200))] += 1

    def late_quantile(self, q: float) -> float:
        """Upper edge of the bucket holding quantile q of release lateness (s)."""
        want, seen = q * self.released, 0
        for i, c in enumerate(self.late_hist):
            seen += c
            if seen >= want and c:
                return (i + 1) * 1e-5
        return 0.0

    def as_dict(self) -> dict:
        return {"packets": self.packets, "bytes": self.bytes, "dropped": self.dropped,
                "released": self.released, "max_late_s": self.max_late_s,
                "mean_late_s": self.sum_late_s / self.released if self.released else 0.0,
                "p50_late_s": self.late_quantile(0.5), "p99_late_s": self.late_quantile(0.99)}


def serve(fds: list[int], addr_index: dict[bytes, int], delays: list[list[float]],
          ctrl_fd: int, parent_pid: int, stats: Stats | None = None, on_ctrl=None) -> str:
    """Forward packets until ``ctrl_fd`` reaches EOF or the parent process is gone.

    ``fds[i]``: non-blocking TUN fd of host i; ``addr_index``: IPv4 address (4 bytes) ->
    host index; ``delays[i][j]``: one-way delay in seconds, read for every packet (so a
    caller may change it in place: packets already held keep their release time, and a
    link's packets still leave in order). ``on_ctrl(data)`` gets whatever arrives on
    ``ctrl_fd`` (the helper's commands). Returns why it stopped.
    """
    n = len(fds)
    stats = stats or Stats(n)
    queues: list[list[deque[tuple[float, bytes]]]] = [[deque() for _ in range(n)] for _ in range(n)]  # (release time, packet)
    active: set[tuple[int, int]] = set()
    host_of = {fd: i for i, fd in enumerate(fds)}
    rlist = list(fds) + [ctrl_fd]
    mono = time.monotonic
    write, read = os.write, os.read
    next_parent_check = 0.0
    bias = 50e-6          # select() oversleeps by about this much; learned as we go
    target = None         # when the last timed select() should have woken

    while True:
        # release every packet whose time has come
        now = mono()
        if target is not None:
            over = now - target
            if over > -1e-3:    # woke by timeout, not by a packet: learn the oversleep
                bias += 0.05 * (min(max(over + bias, 0.0), EARLY_MAX_S) - bias)
            target = None
        due = now + EARLY_OK_S  # release what is due within EARLY_OK_S now: one wake-up per burst, no spinning
        nxt = None
        if active:
            for link in list(active):
                q = queues[link[0]][link[1]]
                out = fds[link[1]]
                while q and q[0][0] <= due:
                    t, pkt = q.popleft()
                    stats.late(now - t)      # scheduling error (negative: released early), before the write's cost
                    try:
                        write(out, pkt)
                    except OSError:
                        stats.dropped += 1
                now = mono()
                due = now + EARLY_OK_S
                if q:
                    if nxt is None or q[0][0] < nxt:
                        nxt = q[0][0]
                else:
                    active.discard(link)
        if now >= next_parent_check:
            if os.getppid() != parent_pid:
                return "parent exited"
            next_parent_check = now + 0.2
        if nxt is None:
            timeout = 0.2
        else:
            timeout = max(0.0, min(0.2, nxt - now - bias))
            if timeout > 0:
                target = now + timeout
        try:
            ready, _, _ = select.select(rlist, [], [], timeout)
        except InterruptedError:
            continue
        for fd in ready:
            if fd == ctrl_fd:
                data = read(ctrl_fd, 4096)
                if not data:
                    return "stopped"
                if on_ctrl is not None:
                    on_ctrl(data)
                continue
            src = host_of[fd]
            for _ in range(BATCH):
                try:
                    pkt = read(fd, READ_SIZE)
                except BlockingIOError:
                    break
                except OSError:
                    break
                t = mono()
                if len(pkt) < 20 or pkt[0] >> 4 != 4:
                    stats.dropped += 1
                    continue
                dst = addr_index.get(pkt[16:20])
                if dst is None or dst == src:
                    stats.dropped += 1
                    continue
                stats.packets[src][dst] += 1
                stats.bytes[src][dst] += len(pkt)
                d = delays[src][dst]
                if d <= 0:
                    try:
                        write(fds[dst], pkt)
                    except OSError:
                        stats.dropped += 1
                else:
                    queues[src][dst].append((t + d, pkt))
                    active.add((src, dst))
