"""Timed measurements on one rank: stage compute, optimizer step, point-to-point transfers.

Measurement discipline (as nanoGPT's ``bench.py``): warm-up iterations first, the
device synchronized around every timed region (CUDA events on GPU, ``perf_counter``
on CPU), the median of the repeats reported with the interquartile range as spread.
The garbage collector is paused inside timed loops.

Compute is timed exactly as the runtime runs a stage: the forward of the stage module
(embedding on the first stage, head and loss on the last), and the backward as
autograd from the output gradient received from the next stage (from the loss on the
last stage), which also produces the input gradient sent back to the previous stage.
With ``split`` (``--split-backward``), each repeat also times the backward split as the
runtime splits it for ZB-H1 (:mod:`runtime.split`): B, the input gradient (and the linear
layers' output gradients; nothing on the first stage, which has no input gradient), then
W, the linear layers' weight gradients from B's (the whole backward on the first stage),
after a fresh, untimed forward that records the linear layers' calls.

Transfers use the runtime's ops: ``dist.isend``/``dist.irecv`` of contiguous tensors
of the runtime's dtype, each waited on. The one-way time of an ``n``-byte message is a
ping-pong of ``n`` bytes out and a 4-byte reply back, minus half the round trip of a
4-byte ping-pong; both taken as the lower quartile of the repeats, because on a shared
machine other processes only ever add time (scheduler wake-up delays of milliseconds
on a busy 2-core host), while the median and IQR are recorded too.

Two ranks pinned to one core (3 ranks on 2 cores: ranks 0 and 2) are probed apart: for
the link's probe one of them moves, all its threads, to another rank's core
(:func:`moved_to`), and moves back after. On one core the ping-pong measures the
scheduler, not the link: gloo's network thread, woken by the reply while its own rank is
preempted inside the send holding the pair's lock, spins in ``epoll_wait`` until the
next tick (measured: a round trip of 3.9-4.0 ms on one core for every message size,
0.11 ms across two cores at 4 B; the spinning thread used half the core). Runs rarely
meet it (their messages between the two ranks arrived a median 0.1-0.25 ms after the
send, 1.1 ms for 2->0 at micro-batch 1), and the sharing of the core itself is the
simulator's to model (the profile's ``host.placement``), so the link is the transport
alone.
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager

import torch
import torch.distributed as dist

from .fit import lower_quartile, median_spread


@contextmanager
def _no_gc():
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class Clock:
    """Times regions on one device: CUDA events on GPU, wall clock on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def marks(self, count: int):
        """``count`` time marks; call ``mark(i)`` in order, then ``elapsed()`` gives the gaps in seconds."""
        return _CudaMarks(count) if self.cuda else _WallMarks(count)


class _WallMarks:
    """Wall clock, and this thread's CPU time beside it (with one torch thread, the CPU
    time of an op is its compute without the time other processes took the core)."""

    def __init__(self, count: int):
        self.t = [0.0] * count
        self.c = [0.0] * count

    def mark(self, i: int) -> None:
        self.t[i] = time.perf_counter()
        self.c[i] = time.thread_time()

    def elapsed(self) -> list[float]:
        return [b - a for a, b in zip(self.t, self.t[1:])]

    def cpu_elapsed(self) -> list[float] | None:
        return [b - a for a, b in zip(self.c, self.c[1:])]


class _CudaMarks:
    def __init__(self, count: int):
        self.ev = [torch.cuda.Event(enable_timing=True) for _ in range(count)]

    def mark(self, i: int) -> None:
        self.ev[i].record()

    def elapsed(self) -> list[float]:
        torch.cuda.synchronize()
        return [a.elapsed_time(b) / 1e3 for a, b in zip(self.ev, self.ev[1:])]

    def cpu_elapsed(self) -> None:
        return None


class StageBench:
    """One stage module with inputs shaped like the runtime's, for one micro-batch size."""

    def __init__(self, stage, cfg, mbs: int, device: torch.device, dtype: torch.dtype, split: bool = False):
        from runtime.model import synthetic_batch

        self.stage, self.mbs, self.split = stage, mbs, split
        self.splitter = None   # the split backward (runtime.split); none on the first stage, whose W is the backward
        if split and not stage.is_first:
            from runtime.split import SplitBackward

            self.splitter = SplitBackward(stage)
        idx, targets = synthetic_batch(cfg, mbs, step=0)
        self.targets = targets.to(device) if stage.is_last else None
        if stage.is_first:
            self.x = idx.to(device)
        else:  # a received activation: a leaf that requires grad, as the runtime makes it
            self.x = torch.randn(mbs, cfg.seq_len, cfg.d_model, device=device, dtype=dtype).requires_grad_()
        self.grad_out: torch.Tensor | None = None
        if not stage.is_last:
            with torch.no_grad():
                y = stage(self.x)
            self.grad_out = torch.randn_like(y)   # the gradient received from the next stage

    def forward(self):
        return self.stage(self.x, self.targets) if self.stage.is_last else self.stage(self.x)

    def backward(self, y) -> None:
        if self.stage.is_last:
            y.backward()
        else:
            torch.autograd.backward(y, self.grad_out)

    def output_bytes(self) -> int:
        with torch.no_grad():
            y = self.forward()
        return 0 if self.stage.is_last else y.numel() * y.element_size()

    def input_grad_bytes(self) -> int:
        if self.stage.is_first:
            return 0
        return self.x.numel() * self.x.element_size()

    def run_once(self, clock: Clock, cpu: list | None = None) -> tuple[float, float]:
        """One forward and one backward, timed separately (seconds); CPU times appended to ``cpu``."""
        if self.x.grad is not None:
            self.x.grad = None
        m = clock.marks(3)
        clock.sync()
        m.mark(0)
        y = self.forward()
        m.mark(1)
        self.backward(y)
        m.mark(2)
        f, b = m.elapsed()
        if cpu is not None:
            cpu.append(m.cpu_elapsed())
        return f, b

    def run_split(self, clock: Clock, cpu: list | None = None) -> tuple[float, float]:
        """A forward (not timed), then the split backward as the runtime runs it: B (input
        gradient) and W (weight gradients), timed separately (seconds); CPU times to ``cpu``."""
        if self.x.grad is not None:
            self.x.grad = None
        sb = self.splitter
        if sb is None:
            y = self.forward()
        else:
            y, tape = sb.forward(self.forward)
        m = clock.marks(3)
        clock.sync()
        m.mark(0)
        if sb is not None:   # grad_out None: the last stage (its output is the loss)
            pending = sb.input_grad(y, self.grad_out, self.x, tape)
        m.mark(1)
        if sb is None:
            self.backward(y)
        else:
            sb.weight_grad(pending)
        m.mark(2)
        bi, bw = (max(t, 1e-9) for t in m.elapsed())  # the first stage's B does nothing: a clock tick at most
        if cpu is not None:
            c = m.cpu_elapsed()
            cpu.append(None if c is None else [max(t, 1e-9) for t in c])
        return bi, bw


def time_stages(benches: dict, clock: Clock, warmup: int, repeats: int) -> dict:
    """Forward/backward wall-time samples (and thread CPU-time samples on CPU) per micro-batch size.

    The sizes are interleaved (round robin within each repeat), so that a disturbance
    lasting a while -- another process taking the core -- spreads over all sizes
    instead of shifting one size's median. See :func:`summarize` for the statistics.
    """
    for _ in range(warmup):
        for b in benches.values():
            b.run_once(clock)
    out: dict[int, dict[str, list]] = {m: {"forward": [], "backward": [], "cpu": []} for m in benches}
    for m, b in benches.items():
        if b.split:
            out[m].update(backward_input=[], backward_weight=[], cpu_split=[])
            for _ in range(warmup):
                b.run_split(clock)
    with _no_gc():
        for _ in range(repeats):
            for m, b in benches.items():
                f, bw = b.run_once(clock, out[m]["cpu"])
                out[m]["forward"].append(f)
                out[m]["backward"].append(bw)
                if b.split:
                    bi, bwt = b.run_split(clock, out[m]["cpu_split"])
                    out[m]["backward_input"].append(bi)
                    out[m]["backward_weight"].append(bwt)
    for b in benches.values():
        b.stage.zero_grad(set_to_none=True)
    return out


def summarize(samples: dict, timing: str = "wall") -> dict:
    """Medians and IQRs of the samples of :func:`time_stages` (pooled over rounds).

    ``timing="cpu"`` (CPU only): the profile's times are the thread CPU-time medians,
    which leave out the time other processes took the core -- reproducible on a shared
    machine; ``"wall"`` (default): wall-clock medians, what the runtime sees.
    """
    cpu = [c for c in samples["cpu"] if c is not None]
    fc = [c[0] for c in cpu]
    bc = [c[1] for c in cpu]
    if timing == "cpu" and cpu:
        fm, fsp = median_spread(fc)
        bm, bsp = median_spread(bc)
    else:
        fm, fsp = median_spread(samples["forward"])
        bm, bsp = median_spread(samples["backward"])
    r = {"forward_s": fm, "backward_s": bm, "forward_spread_s": fsp, "backward_spread_s": bsp,
         "forward_samples": samples["forward"], "backward_samples": samples["backward"]}
    if cpu:
        r["forward_wall_s"] = median_spread(samples["forward"])[0]
        r["backward_wall_s"] = median_spread(samples["backward"])[0]
        r["forward_cpu_s"] = median_spread(fc)[0]
        r["backward_cpu_s"] = median_spread(bc)[0]
    if samples.get("backward_input"):  # split backward (B, W), the same statistics
        split_cpu = [c for c in samples.get("cpu_split", []) if c is not None]
        if timing == "cpu" and split_cpu:
            bi, bw = [c[0] for c in split_cpu], [c[1] for c in split_cpu]
        else:
            bi, bw = samples["backward_input"], samples["backward_weight"]
        r["backward_input_s"], r["backward_input_spread_s"] = median_spread(bi)
        r["backward_weight_s"], r["backward_weight_spread_s"] = median_spread(bw)
        r["backward_input_samples"] = samples["backward_input"]
        r["backward_weight_samples"] = samples["backward_weight"]
    return r


def time_concurrent(bench: StageBench, clock: Clock, duration_s: float) -> list[float]:
    """Forward+backward iterations back to back for ``duration_s``; per-iteration seconds (first dropped)."""
    out: list[float] = []
    end = time.perf_counter() + duration_s
    with _no_gc():
        while time.perf_counter() < end or len(out) < 3:
            f, b = bench.run_once(clock)
            out.append(f + b)
    bench.stage.zero_grad(set_to_none=True)
    return out[1:]


def time_optimizer(stage, optimizer, clock: Clock, warmup: int, repeats: int) -> tuple[float, float]:
    """Median and IQR of ``optimizer.step()`` (+ ``zero_grad``) with gradients present."""
    for p in stage.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    ts = []
    for i in range(warmup + repeats):
        m = clock.marks(2)
        clock.sync()
        m.mark(0)
        optimizer.step()
        m.mark(1)
        if i >= warmup:
            ts.append(m.elapsed()[0])
    stage.zero_grad(set_to_none=True)
    return median_spread(ts)


@contextmanager
def moved_to(cpu: int | None):
    """Run the body with every thread of this process on ``cpu`` (None: where they are), then
    put each back on its own CPUs. Yields whether the move took (a cgroup may forbid it)."""
    if cpu is None:
        yield False
        return
    import os

    def tasks() -> list[int]:
        return [int(t) for t in os.listdir("/proc/self/task")]

    home = os.sched_getaffinity(0)
    saved: dict[int, set[int]] = {}
    moved = True
    for tid in tasks():
        try:
            saved[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, {cpu})
        except ProcessLookupError:   # the thread ended meanwhile
            saved.pop(tid, None)
        except OSError:   # not allowed there: put back what moved, and say it did not
            moved = False
            break
    try:
        yield moved and bool(saved)
    finally:
        for tid in tasks():   # threads started meanwhile inherited ``cpu``: they get the caller's CPUs
            try:
                os.sched_setaffinity(tid, saved.get(tid, home))
            except OSError:   # ended meanwhile, or refused: nothing more to do for it
                pass


def apart_plan(cpus: list[int | None], src: int, dst: int) -> tuple[int, int, int] | None:
    """(rank that moves, the core it moves to, the core the two share) when ranks ``src`` and
    ``dst`` are pinned to one core (``cpus[r]``: rank r's core, None if not pinned) and another
    rank's core exists to move to; else None. The higher rank moves, to the lowest other core."""
    a, b = cpus[src], cpus[dst]
    if a is None or a != b:
        return None
    others = sorted({c for c in cpus if c is not None and c != a})
    return (max(src, dst), others[0], a) if others else None


def _wait(work: dist.Work | None) -> None:
    """Wait for an ``isend``/``irecv``; torch returns None only to a rank outside the group."""
    assert work is not None, "this rank is not in the process group"
    work.wait()


def pingpong(me: int, peer: int, initiator: bool, send: torch.Tensor, reply: torch.Tensor,
             warmup: int, repeats: int, clock: Clock) -> list[float]:
    """Round trips of ``send`` (initiator -> peer) and ``reply`` (peer -> initiator).

    Both sides must call it with the same sizes and counts. Returns the round-trip
    seconds measured on the initiator (empty on the peer).
    """
    out = []
    for i in range(warmup + repeats):
        if initiator:
            clock.sync()
            t0 = time.perf_counter()
            _wait(dist.isend(send, peer))
            _wait(dist.irecv(reply, peer))
            clock.sync()
            if i >= warmup:
                out.append(time.perf_counter() - t0)
        else:
            _wait(dist.irecv(send, peer))
            clock.sync()
            _wait(dist.isend(reply, peer))
    clock.sync()
    return out


def measure_direction(me: int, src: int, dst: int, sizes: list[int], dtype: torch.dtype, device: torch.device,
                      warmup: int, repeats: int, clock: Clock) -> dict | None:
    """One-way transfer times src -> dst for each size in bytes. Result on ``src``, None elsewhere."""
    if me not in (src, dst):
        return None
    initiator = me == src
    peer = dst if initiator else src
    esize = torch.tensor([], dtype=dtype).element_size()
    reply = torch.zeros(max(1, 4 // esize), dtype=dtype, device=device)
    small = torch.zeros(max(1, 4 // esize), dtype=dtype, device=device)
    rtt0 = pingpong(me, peer, initiator, small, reply, warmup * 3, repeats * 2, clock)
    points = []
    for n in sizes:
        buf = torch.zeros(max(1, n // esize), dtype=dtype, device=device)
        rtts = pingpong(me, peer, initiator, buf, reply, warmup, repeats, clock)
        if initiator:
            points.append((buf.numel() * esize, rtts))
    if not initiator:
        return None
    rtt_med, rtt_iqr = median_spread(rtt0)
    rtt_low = lower_quartile(rtt0)
    pts = []
    for n, rtts in points:
        med, iqr = median_spread(rtts)
        low = lower_quartile(rtts)
        pts.append({"bytes": n, "rtt_s": med, "rtt_spread_s": iqr, "rtt_p25_s": low,
                    "one_way_s": max(low - rtt_low / 2, 1e-9)})
    return {"src": src, "dst": dst, "small_rtt_s": rtt_med, "small_rtt_spread_s": rtt_iqr, "small_rtt_p25_s": rtt_low,
            "points": pts}
