"""Execute one rank's lowered action list with torch.distributed point-to-point operations.

What is executed is exactly ``pipesim.schedule.build_placed(name, p, m, recv_ahead,
stages_per_rank)`` for this rank, in program order, through a dispatch table from action
kind to handler (an unknown kind is an error). The model is cut into one stage per
(virtual) stage of the placement (``p * v`` runs of consecutive layers for interleaved
1F1B, ``p`` otherwise); a rank holds the module of every stage placed on it, and each
compute action runs the module of ``action.stage``. Semantics, which the simulator
replays:

* ``RECV_F`` / ``RECV_B`` post ``irecv(buf, src=rank of the peer stage, tag)`` and
  return; ``tag`` is :func:`pipesim.schedule.message_tag` (``action.tag`` with one stage
  per rank).
* ``F`` waits for the work of its ``RECV_F`` (stage > 0), runs the stage's forward;
  on the last stage the loss of the micro-batch is scaled by ``1/m`` so that the
  accumulated gradient is that of the full-batch mean loss. When the previous stage
  runs on the same rank, its output is handed over in memory (no message).
* ``SEND_F`` / ``SEND_B`` post ``isend(..., dst=rank of the peer stage, tag)`` right
  after the compute that produced the tensor and return.
* ``B`` waits for the work of its ``RECV_B`` (stage < last), runs the backward;
  gradients accumulate in ``.grad`` over the micro-batches.
* Split backward (a ``W`` exists for the stage and micro-batch, e.g. ``zbh1``; see
  :mod:`runtime.split`): the forward records each linear layer's input and output; ``B``
  computes, in one autograd pass that frees the graph, the input gradient (which the send
  that follows carries) and the gradients of the linear layers' outputs; ``W`` later
  computes the linear layers' weight gradients from those (``dY^T X``) and accumulates
  them, and the other parameters' gradients B computed, into ``.grad``. On the first
  stage there is no input gradient: its ``B`` only takes the received gradient, and its
  ``W`` runs the whole backward (as torch does).
* At the end of a step the rank waits for all its sends, then runs the optimizer
  once and zeroes the gradients (the ``OPT`` event). There is no barrier between
  steps.

Backends. gloo (CPU): the lowering uses ``recv_ahead=None`` (all receives of the step
posted at its start, in consumption order). NCCL (CUDA): torch runs all p2p between
one pair of ranks on one stream, so receives posted far ahead would block the sends
behind them; the NCCL path uses ``recv_ahead=0`` and posts each maximal run of
consecutive communication actions (e.g. ``SEND_F`` followed by ``RECV_B`` in 1F1B's
steady state) as one ``batch_isend_irecv`` group, as torch.distributed.pipelining
does, so that 1F1B cannot deadlock. Every action still gets its own trace event.

Timing. CPU: ``time.time()`` around each compute action. CUDA: compute runs on its
own stream and is timed with CUDA events, mapped to wall time through an anchor event
recorded at the step start after a synchronize. A send's end is when its work
completed, a receive's end is when its data had arrived: one watcher thread per
(peer, direction) takes the works in posting order and waits for each (gloo: a
blocking ``wait()``, so the stamp is within thread wake-up latency, tens of
microseconds, plus any delay of the previous work of the same queue; NCCL: polls
``is_completed()`` every 50 us). Start of a communication event is its posting time.
A gloo work can have only one waiter, so with watchers the compute thread waits for
the watcher's stamp: one extra thread hand-off per blocking receive (measured on the
busy 2-core development machine, 3 ranks: median 70 us, p90 0.25 ms from arrival to
compute start; a few ms at worst under CPU contention). ``recv_stamp="inline"``
(``--recv-stamp inline``) makes the compute thread wait on receives itself (median
20 us): a receive's end is then when the compute thread saw it, i.e. an upper bound on
arrival when the data came before it was needed. Sends always use watchers.

Clocks. On one machine all ranks use ``time.time()`` directly. When a rank runs on
another host than rank 0, a ping-pong with rank 0 at start-up (16 rounds, the round
with the smallest round trip wins) estimates the offset to rank 0's clock; the error
is at most half that round trip, which is recorded in the results
(``PIPESIM_CLOCK_SYNC=always`` runs the ping-pong on one host too, for testing).

Entry points. :func:`run_rank` initializes the process group, runs once and tears it
down (``python -m runtime``); :func:`run_cell` runs once over a process group that is
already up, so that one torchrun job can run many cells in turn (``pipesim sweep``,
calibration's overhead probe under torchrun). Both return rank 0's results dict.

Environment hooks (tests and experiments): ``PIPESIM_TEST_FAULT=kill|hang:<rank>:<step>``
injects a fault; ``PIPESIM_CLOCK_SYNC=always`` runs the clock ping-pong on one host;
``PIPESIM_GROUP_COMM=1`` uses the grouped NCCL-style posting on gloo;
``PIPESIM_SWITCH_INTERVAL`` sets the GIL switch interval (default 0.5 ms).

Not modelled / not done: no activation recomputation, no data parallelism, dropout off;
trace events are gathered at the end of the run (a crash keeps the per-step JSONL
records but loses the trace). The split backward (:mod:`runtime.split`) defers only the
linear layers' weight gradients to W; a stage's other parameters (LayerNorms) get theirs
in B's autograd pass, held back until W.
"""

from __future__ import annotations

import os
import queue
import resource
import socket
import statistics
import sys
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from pipesim.schedule import Action, Kind, build_placed, message_tag, split_backward
from pipesim.trace import TraceEvent
from pipesim.transport import Transport
from pipesim.util import append_jsonl, backend_for, quantile, write_json_atomic
from runtime.launch import BLAME_PREFIX
from runtime.model import build_stages, get_config, synthetic_batch
from runtime.split import SplitBackward


@dataclass
class RunConfig:
    schedule: str = "1f1b"
    model: str = "cpu-small"
    micro_batch_size: int = 1
    batch_size: int = 8
    steps: int = 5
    warmup: int = 2
    optimizer: str = "adamw"
    lr: float = 1e-3
    seed: int = 0
    data_seed: int = 1234
    device: str = "cpu"
    threads: int = 1
    recv_ahead: int | None = -1  # -1: backend default (gloo None, nccl 0)
    recv_stamp: str = "watcher"  # watcher: exact arrival stamps; inline: the compute thread waits itself
    backend: str = "auto"  # auto: nccl on cuda, gloo on cpu; gloo on cuda stages tensors through host memory
    op_timeout_s: float = 120.0
    trace: str | None = None
    out: str | None = None
    steps_log: str | None = None
    save_params: str | None = None
    network: str | None = None
    stages_per_rank: int = 1  # virtual stages per rank (interleaved schedules)

    def __post_init__(self) -> None:
        for f in ("micro_batch_size", "batch_size", "steps"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if not self.op_timeout_s > 0 or self.op_timeout_s == float("inf"):
            raise ValueError(f"op_timeout_s must be a number > 0, got {self.op_timeout_s}")
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of micro_batch_size "
                             f"{self.micro_batch_size}")
        if self.backend not in ("auto", "gloo", "nccl"):
            raise ValueError(f"backend must be auto, gloo or nccl, got {self.backend!r}")
        if self.backend == "nccl" and not self.device.startswith("cuda"):
            raise ValueError("backend nccl needs --device cuda")
        if self.recv_stamp not in ("watcher", "inline"):
            raise ValueError(f"recv_stamp must be watcher or inline, got {self.recv_stamp!r}")
        if not isinstance(self.stages_per_rank, int) or self.stages_per_rank < 1:
            raise ValueError(f"stages_per_rank must be a positive integer, got {self.stages_per_rank!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")

    @property
    def num_microbatches(self) -> int:
        return self.batch_size // self.micro_batch_size


class PeerTimeout(RuntimeError):
    def __init__(self, peer: int, msg: str):
        super().__init__(msg)
        self.peer = peer


class _Rec:
    """A communication event being timed (its end is filled in by a watcher)."""

    __slots__ = ("action", "start", "end", "bytes", "done", "error")

    def __init__(self, action: Action, start: float, nbytes: int):
        self.action, self.start, self.bytes = action, start, nbytes
        self.end: float | None = None   # set by the watcher (or the inline wait) when the work completes
        self.done = threading.Event()
        self.error: BaseException | None = None


class _Watcher(threading.Thread):
    """Waits for works in posting order and stamps their completion time."""

    def __init__(self, name: str, poll: bool):
        super().__init__(name=name, daemon=True)
        self.q: queue.Queue = queue.Queue()
        self.poll = poll

    def run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            work, rec = item
            try:
                if self.poll:
                    while not work.is_completed():
                        time.sleep(50e-6)
                else:
                    work.wait()
            except Exception as e:  # the main thread reports the failure with context
                rec.error = e
            rec.end = time.time()
            rec.done.set()


def _stats(xs: list[float]) -> dict:
    if not xs:
        return {"median": None, "samples": []}
    s = sorted(xs)
    return {"median": statistics.median(s), "mean": statistics.fmean(s), "min": s[0], "max": s[-1],
            "p10": quantile(s, 0.1), "p90": quantile(s, 0.9), "stdev": statistics.stdev(s) if len(s) > 1 else 0.0,
            "n": len(s), "samples": xs}


class RankEngine:
    def __init__(self, cfg: RunConfig, rank: int, world: int):
        self.cfg, self.rank, self.world = cfg, rank, world
        self.cuda = cfg.device.startswith("cuda")
        self.backend = dist.get_backend() if dist.is_initialized() else backend_for(cfg.device, cfg.backend)
        self.nccl = self.backend == "nccl"
        ra = cfg.recv_ahead
        # the backend's default is the simulator's and calibration's (one mapping: pipesim.transport)
        self.recv_ahead = Transport.for_backend(self.backend).recv_ahead if ra == -1 else ra
        # NCCL: post each run of consecutive communication actions as one group (see module docstring);
        # PIPESIM_GROUP_COMM=1 does the same on gloo, to exercise that path without a GPU
        self.group_comm = self.nccl or os.environ.get("PIPESIM_GROUP_COMM") == "1"
        self.inline_recv = cfg.recv_stamp == "inline" and not self.nccl  # NCCL: wait() does not block the CPU
        self.mcfg = get_config(cfg.model)
        self.m = cfg.num_microbatches
        sched, self.placement = build_placed(cfg.schedule, world, self.m, self.recv_ahead, cfg.stages_per_rank)
        self.actions = sched[rank]
        self.split = split_backward(self.actions)  # (stage, mb) whose backward is split into B and W
        # communication action -> (peer rank, tag): the rank owning the peer stage, the IR's message tag
        self.comm_peer: dict[Action, tuple[int, int]] = {}
        for a in self.actions:
            if a.kind.is_compute:
                continue
            peer = a.peer
            assert peer is not None   # every communication action has a peer stage
            fwd = a.kind in (Kind.SEND_F, Kind.RECV_F)
            sender = a.stage if a.kind.is_send else peer
            self.comm_peer[a] = (self.placement[peer], message_tag(sender, a.mb, fwd, self.placement))
        self.device = torch.device("cuda", torch.cuda.current_device()) if self.cuda else torch.device(cfg.device)
        _, all_stages = build_stages(self.mcfg, len(self.placement), seed=cfg.seed)
        self.my_stages = [s for s, r in enumerate(self.placement) if r == rank]
        # the module of each (virtual) stage this rank runs
        self.mods = {s: all_stages[s].to(self.device) for s in self.my_stages}
        # split backward (runtime.split) for each stage with a W that has an input gradient to compute
        self.splitters = {s: SplitBackward(self.mods[s]) for s in {s for s, _ in self.split}
                          if not self.mods[s].is_first}
        self.stage = self.mods[self.my_stages[0]]  # the first of them (the only one with one stage per rank)
        params = []
        self.opt: torch.optim.Optimizer
        for s in self.my_stages:
            self.mods[s].train()
            params += list(self.mods[s].parameters())
        if cfg.optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=cfg.lr)
        else:
            self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        self.act_shape = (cfg.micro_batch_size, self.mcfg.seq_len, self.mcfg.d_model)
        # gloo moves host memory only: on cuda, messages are staged through host tensors
        self.comm_device = self.device if (self.nccl or not self.cuda) else torch.device("cpu")
        self.handlers = {
            Kind.F: self._forward, Kind.B: self._backward, Kind.W: self._weight,
            Kind.SEND_F: self._send_act, Kind.SEND_B: self._send_grad,
            Kind.RECV_F: self._recv_act, Kind.RECV_B: self._recv_grad,
        }
        self.watchers: dict[tuple[int, str], _Watcher] = {}
        self.events: list[TraceEvent] = []
        self.clock_offset = 0.0
        self.clock_offset_err = 0.0
        self.step_ends: list[float] = []
        self.cpu_marks: list[float] = []  # process CPU seconds at each step end
        self.main_cpu_marks: list[float] = []  # this (the compute) thread's CPU seconds at each step end
        self.compute_cpu: list[float] = []  # per step: its CPU seconds inside F, B, W and the optimizer step
        self.compute_marks: list[float] = []  # seconds of F and B in each step
        self.losses: list[float] = []
        if self.cuda:
            self.compute_stream = torch.cuda.Stream()

    # ------------------------------------------------------------------ helpers
    def _handler(self, a: Action):
        """The handler of an action's kind (the dispatch table); an unknown kind is an error."""
        h = self.handlers.get(a.kind)
        if h is None:
            raise ValueError(f"rank {self.rank}: no handler for action kind {a.kind!r} ({a})")
        return h

    def _watcher(self, peer: int, direction: str) -> _Watcher:
        key = (peer, direction)
        w = self.watchers.get(key)
        if w is None:
            w = self.watchers[key] = _Watcher(f"watch-{direction}-{peer}", poll=self.nccl)
            w.start()
        return w

    def _peer_rank(self, a: Action) -> int:
        return self.comm_peer[a][0]

    def _wait(self, work, rec: _Rec, what: str) -> None:
        """Wait for a posted work. gloo: a work may be waited on by one thread only (a second
        waiter would never wake), so the watcher waits and this thread waits for its stamp.
        NCCL: ``wait()`` makes the compute stream wait; the watcher only polls."""
        action = rec.action
        err: str | None = None
        try:
            if self.inline_recv and rec.action.kind.is_recv:
                try:
                    work.wait()
                except Exception as e:
                    rec.error = e
                rec.end = time.time()
                rec.done.set()
                if rec.error is not None:
                    raise rec.error
            elif self.nccl:
                work.wait(timedelta(seconds=self.cfg.op_timeout_s))
            elif not rec.done.wait(self.cfg.op_timeout_s + 5):
                err = f"no completion within {self.cfg.op_timeout_s + 5:g}s"
            elif rec.error is not None:
                failure = rec.error
                err = f"{type(failure).__name__}: {str(failure).splitlines()[0] if str(failure) else ''}"
        except Exception as e:
            err = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if err:
            peer = self._peer_rank(action)
            raise PeerTimeout(peer, f"rank {self.rank}: {what} {action} (peer rank {peer}) failed: {err}")

    def _now_compute(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record(self.compute_stream)
            return ev
        return time.time()

    # ------------------------------------------------------------------ handlers
    # communication handlers return (op, tensor, peer, tag, rec); compute handlers run.
    def _recv_act(self, a: Action):
        buf = torch.empty(self.act_shape, device=self.comm_device)
        return dist.irecv, buf, a, "recv", ("act", a.stage, a.mb)

    def _recv_grad(self, a: Action):
        buf = torch.empty(self.act_shape, device=self.comm_device)
        return dist.irecv, buf, a, "recv", ("grad", a.stage, a.mb)

    def _send_act(self, a: Action):
        return dist.isend, self.st.outputs[(a.stage, a.mb)].detach().to(self.comm_device).contiguous(), a, "send", None

    def _send_grad(self, a: Action):
        x = self.st.inputs.pop((a.stage, a.mb))
        return dist.isend, x.grad.to(self.comm_device).contiguous(), a, "send", None

    def _local(self, s: int) -> bool:
        """Stage ``s`` exists and runs on this rank (a neighbour handed over in memory)."""
        return 0 <= s < len(self.placement) and self.placement[s] == self.rank

    def _forward(self, a: Action):
        st, mod, key = self.st, self.mods[a.stage], (a.stage, a.mb)
        if mod.is_first:
            x = st.idx[a.mb]
        elif self._local(a.stage - 1):
            x = st.outputs[(a.stage - 1, a.mb)].detach().requires_grad_(True)
        else:
            buf, work, rec = st.recvs.pop(("act", a.stage, a.mb))
            self._wait(work, rec, "waiting for")
            x = buf.to(self.device).requires_grad_(True)
        sb = self.splitters.get(a.stage) if key in self.split else None
        t0 = self._now_compute()
        if sb is not None:   # record the linear layers' calls for B and W
            out, st.tapes[key] = sb.forward(self._stage_forward, mod, x, a.mb)
        else:
            out = self._stage_forward(mod, x, a.mb)
        t1 = self._now_compute()
        st.compute.append((a, t0, t1))
        st.inputs[key] = x
        st.outputs[key] = out

    def _stage_forward(self, mod, x, mb: int):
        return mod(x, self.st.tgt[mb]) / self.m if mod.is_last else mod(x)

    def _backward(self, a: Action):
        st, mod, key = self.st, self.mods[a.stage], (a.stage, a.mb)
        out = st.outputs.pop(key)
        grad = None
        if mod.is_last:
            st.loss.append(out.detach().clone())
        elif self._local(a.stage + 1):
            grad = st.local_grads.pop(key)
        else:
            buf, work, rec = st.recvs.pop(("grad", a.stage, a.mb))
            self._wait(work, rec, "waiting for")
            grad = buf.to(self.device)
        t0 = self._now_compute()
        if key not in self.split:
            out.backward(grad)
        elif mod.is_first:  # no input gradient to compute: W runs the whole backward
            st.pending_w[key] = ("full", out, grad)
        else:
            st.pending_w[key] = ("weight", self.splitters[a.stage].input_grad(out, grad, st.inputs[key],
                                                                             st.tapes.pop(key)), None)
        t1 = self._now_compute()
        st.compute.append((a, t0, t1))
        if mod.is_first:
            st.inputs.pop(key, None)
        elif self._local(a.stage - 1):
            st.local_grads[(a.stage - 1, a.mb)] = st.inputs.pop(key).grad

    def _weight(self, a: Action):
        st, key = self.st, (a.stage, a.mb)
        how, what, grad = st.pending_w.pop(key)
        t0 = self._now_compute()
        if how == "full":
            what.backward(grad)
        else:
            SplitBackward.weight_grad(what)
        t1 = self._now_compute()
        st.compute.append((a, t0, t1))

    def _post(self, specs: list) -> None:
        """Post communication actions (one group under NCCL) and hand them to the watchers."""
        st = self.st
        posted: float | None = None   # when the group was posted (one group: one start for all of it)
        if self.group_comm:
            ops = [dist.P2POp(op, t, peer=self.comm_peer[a][0], tag=self.comm_peer[a][1]) for op, t, a, _, _ in specs]
            posted = time.time()
            works = dist.batch_isend_irecv(ops)
            if len(works) != len(specs):  # coalesced into one work: it stands for all of them
                works = [works[-1]] * len(specs)
        else:
            works = []
            for op, t, a, _, _ in specs:
                peer, tag = self.comm_peer[a]
                works.append(op(t, peer, tag=tag))
        for (_op, t, a, direction, key), work in zip(specs, works):
            rec = _Rec(a, posted if posted is not None else time.time(), t.numel() * t.element_size())
            if direction == "send" or not self.inline_recv:
                self._watcher(self._peer_rank(a), direction).q.put((work, rec))
            st.comm.append(rec)
            if direction == "recv":
                st.recvs[key] = (t, work, rec)
            else:
                st.sends.append((t, work, rec))

    # ------------------------------------------------------------------ step
    def run_step(self, step: int) -> float | None:
        """One training step; returns its loss on the last stage's rank, None on the others."""
        cfg = self.cfg
        idx, tgt = synthetic_batch(self.mcfg, cfg.batch_size, step, seed=cfg.data_seed)
        self.st = st = _StepState()
        st.idx = [t.to(self.device) for t in idx.split(cfg.micro_batch_size)]
        st.tgt = [t.to(self.device) for t in tgt.split(cfg.micro_batch_size)]
        if self.cuda:
            torch.cuda.synchronize()
            anchor_t = time.time()
            anchor = torch.cuda.Event(enable_timing=True)
            anchor.record(self.compute_stream)
            ctx: AbstractContextManager = torch.cuda.stream(self.compute_stream)
        else:
            ctx = nullcontext()
        with ctx:
            acts, i, n = self.actions, 0, len(self.actions)
            handler_cpu = 0.0   # this thread's CPU inside the compute handlers (CPU runs: the compute itself)
            while i < n:
                a = acts[i]
                if a.kind.is_compute:
                    c0 = time.thread_time()
                    self._handler(a)(a)
                    handler_cpu += time.thread_time() - c0
                    i += 1
                    continue
                j = i + 1
                if self.group_comm:
                    while j < n and not acts[j].kind.is_compute:
                        j += 1
                self._post([self._handler(b)(b) for b in acts[i:j]])
                i = j
            for _t, work, rec in st.sends:
                self._wait(work, rec, "send")
            t_opt0 = self._now_compute()
            c0 = time.thread_time()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            handler_cpu += time.thread_time() - c0
            t_opt1 = self._now_compute()
        if self.cuda:
            torch.cuda.synchronize()
            conv = lambda ev: anchor_t + anchor.elapsed_time(ev) / 1e3  # noqa: E731
        else:
            conv = lambda t: t  # noqa: E731
        end = time.time() if not self.cuda else conv(t_opt1)
        loss = float(sum(x.item() for x in st.loss)) if st.loss else None
        off = self.clock_offset
        for a, t0, t1 in st.compute:
            self.events.append(TraceEvent(self.rank, str(a), conv(t0) + off, conv(t1) + off, step, 0))
        self.events.append(TraceEvent(self.rank, "OPT", conv(t_opt0) + off, conv(t_opt1) + off, step, 0))
        for rec in st.comm:
            if not rec.done.wait(self.cfg.op_timeout_s):
                raise PeerTimeout(self._peer_rank(rec.action), f"rank {self.rank}: watcher never saw {rec.action} complete")
            self.events.append(TraceEvent(self.rank, str(rec.action), rec.start + off, rec.end + off, step, rec.bytes))
        self.step_ends.append(end + off)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu_marks.append(ru.ru_utime + ru.ru_stime)  # all threads of this rank (gloo's too)
        self.main_cpu_marks.append(time.thread_time())   # the thread that computes and posts, alone
        self.compute_cpu.append(handler_cpu)
        self.compute_marks.append(sum(conv(t1) - conv(t0) for _, t0, t1 in st.compute))
        if loss is not None:
            self.losses.append(loss)
        return loss

    # ------------------------------------------------------------------ clocks
    def sync_clocks(self, hosts: list[str]) -> None:
        """Estimate each remote rank's offset to rank 0 (see module docstring)."""
        dev = self.comm_device
        force = os.environ.get("PIPESIM_CLOCK_SYNC") == "always"  # for tests: ping-pong on one host too
        for r in range(1, self.world):
            if hosts[r] == hosts[0] and not force:
                continue
            if self.rank == 0:
                buf = torch.zeros(1, dtype=torch.float64, device=dev)
                for _ in range(16):
                    dist.recv(buf, src=r)
                    buf.fill_(time.time())
                    dist.send(buf, dst=r)
            elif self.rank == r:
                best: tuple[float, float] | None = None   # (round trip, offset) of the fastest round trip
                buf = torch.zeros(1, dtype=torch.float64, device=dev)
                for _ in range(16):
                    t1 = time.time()
                    dist.send(buf, dst=0)
                    dist.recv(buf, src=0)
                    t2 = time.time()
                    rtt, t0 = t2 - t1, float(buf.item())
                    if best is None or rtt < best[0]:
                        best = (rtt, t0 - (t1 + t2) / 2)
                assert best is not None   # 16 round trips above
                self.clock_offset, self.clock_offset_err = best[1], best[0] / 2

    def close(self, join: bool = True) -> None:
        for w in self.watchers.values():
            w.q.put(None)
        if join:
            for w in self.watchers.values():
                w.join(timeout=5)


class _StepState:
    def __init__(self):
        self.inputs, self.outputs, self.recvs = {}, {}, {}  # keyed by (stage, mb) / (what, stage, mb)
        self.local_grads, self.pending_w = {}, {}  # input gradients handed over on this rank; B's state for W
        self.tapes = {}  # (stage, mb) -> the linear-layer calls of its forward (split backward)
        self.sends, self.comm, self.compute, self.loss = [], [], [], []
        self.idx = self.tgt = None


def _fault_hook(rank: int, step: int) -> None:
    """Fault injection for the launcher tests: PIPESIM_TEST_FAULT=kind:rank:step (kind kill|hang)."""
    spec = os.environ.get("PIPESIM_TEST_FAULT")
    if not spec:
        return
    kind, r, s = spec.split(":")
    if int(r) == rank and int(s) == step:
        if kind == "kill":
            os.kill(os.getpid(), 9)
        elif kind == "hang":
            time.sleep(10 ** 6)


def prepare_process(cfg: RunConfig) -> dict:
    """Per-process set-up before ``init_process_group``: torch threads, GIL switch interval,
    CUDA device. Returns the extra keyword arguments for ``init_process_group``."""
    torch.set_num_threads(cfg.threads)
    sys.setswitchinterval(float(os.environ.get("PIPESIM_SWITCH_INTERVAL", "0.0005")))  # faster GIL hand-offs
    kw = {}
    if cfg.device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local % torch.cuda.device_count())
        torch.backends.cuda.matmul.allow_tf32 = False
        if backend_for(cfg.device, cfg.backend) == "nccl":
            kw["device_id"] = torch.device("cuda", torch.cuda.current_device())  # eager communicator init
    return kw


def run_rank(cfg: RunConfig) -> dict | None:
    """Entry point of one rank (env: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    kw = prepare_process(cfg)
    dist.init_process_group(backend_for(cfg.device, cfg.backend), rank=rank, world_size=world,
                            timeout=timedelta(seconds=cfg.op_timeout_s), **kw)
    try:
        return run_cell(cfg)
    except PeerTimeout as e:
        print(f"{BLAME_PREFIX}{e.peer}", flush=True)
        print(str(e), file=sys.stderr, flush=True)
        os._exit(1)  # the peer may never answer: do not wait in destroy_process_group
    finally:
        try:
            dist.destroy_process_group()
        except Exception:
            pass


def run_cell(cfg: RunConfig) -> dict | None:
    """One run (warm-up and measured steps) over the already-initialized default process group.

    Every rank of the group calls it with the same ``cfg``; rank 0 returns the results dict
    (and writes ``cfg.out`` if set), the others return None. Several runs may follow one
    another in the same group (``pipesim sweep`` does). A peer that fails or makes no
    progress raises :class:`PeerTimeout` naming it.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    eng = None
    try:
        eng = RankEngine(cfg, rank, world)
        host = socket.gethostname()
        hosts: list = [None] * world
        dist.all_gather_object(hosts, host)
        eng.sync_clocks(hosts)
        total = cfg.warmup + cfg.steps
        for step in range(total):
            _fault_hook(rank, step)
            if cfg.save_params and step == 1:  # parameters after exactly one step (for the tests)
                for s, mod in eng.mods.items():
                    torch.save({k: v.detach().cpu() for k, v in mod.state_dict().items()}, f"{cfg.save_params}.stage{s}.pt")
                if len(eng.mods) == 1:
                    torch.save({k: v.detach().cpu() for k, v in eng.stage.state_dict().items()},
                               f"{cfg.save_params}.rank{rank}.pt")
            t_prev = eng.step_ends[-1] if eng.step_ends else None
            loss = eng.run_step(step)
            end = eng.step_ends[-1]
            step_time = (end - t_prev) if t_prev is not None else None
            rec = {"rank": rank, "step": step, "phase": "warmup" if step < cfg.warmup else "measure",
                   "end": end, "step_time": step_time, "loss": loss}
            if cfg.steps_log:
                append_jsonl(cfg.steps_log, rec)
            st = f"{step_time * 1e3:.1f} ms" if step_time is not None else "-"
            print(f"step {step} {rec['phase']} step_time {st}" + (f" loss {loss:.4f}" if loss is not None else ""),
                  flush=True)
        first = max(cfg.warmup, 1)

        def per_step(marks: list[float]) -> list[float]:   # measured steps: from one step's end to the next's
            return [marks[k] - marks[k - 1] for k in range(first, total)]

        times, cpu, main_cpu = per_step(eng.step_ends), per_step(eng.cpu_marks), per_step(eng.main_cpu_marks)
        mine = {"rank": rank, "host": host, "clock_offset_s": eng.clock_offset,
                "clock_offset_err_s": eng.clock_offset_err, "step_time": _stats(times),
                "cpu_per_step": _stats(cpu), "compute_per_step": _stats(eng.compute_marks[first:]),
                # the compute thread's share of cpu_per_step; the rest ran on the watcher and gloo threads
                "main_thread_cpu_per_step": _stats(main_cpu),
                # of which inside the computations (F, B, W, the optimizer step and their waits for data): on
                # CPU the compute's own CPU time, without posting, messages and what the kernel does for them
                "compute_cpu_per_step": _stats(eng.compute_cpu[first:]),
                "cpu": os.environ.get("PIPESIM_CPU"),
                "losses": eng.losses}
        gathered: list = [None] * world
        dist.all_gather_object(gathered, (mine, eng.events))
        if rank != 0:
            return None
        per_rank = [g[0] for g in gathered]
        events = sorted((e for g in gathered for e in g[1]), key=lambda e: (e.start, e.rank))
        mcfg = eng.mcfg
        result = {
            "format": "pipesim-run", "version": 1,
            "model": mcfg.to_dict(), "schedule": cfg.schedule, "ranks": world,
            "stages_per_rank": cfg.stages_per_rank, "placement": list(eng.placement),
            "micro_batch_size": cfg.micro_batch_size, "batch_size": cfg.batch_size,
            "num_microbatches": cfg.num_microbatches, "steps": cfg.steps, "warmup": cfg.warmup,
            "backend": eng.backend, "device": cfg.device, "threads": cfg.threads,
            "recv_ahead": eng.recv_ahead, "recv_stamp": "inline" if eng.inline_recv else "watcher",
            "optimizer": cfg.optimizer, "lr": cfg.lr, "network": cfg.network,
            "torch": torch.__version__,
            "step_time": per_rank[0]["step_time"],
            "per_rank": per_rank,
            "losses": per_rank[-1]["losses"],
            "trace": cfg.trace,
        }
        if cfg.trace:
            from pipesim.trace import write
            written = write(events, cfg.trace, label=f"runtime {cfg.schedule} {mcfg.name}")
            result["trace_files"] = [str(p) for p in written]
        if cfg.out:
            write_json_atomic(cfg.out, result, indent=1)
        s = result["step_time"]
        print(f"rank 0 step time: median {s['median'] * 1e3:.1f} ms (min {s['min'] * 1e3:.1f}, "
              f"max {s['max'] * 1e3:.1f}, n {s['n']})", flush=True)
        return result
    except BaseException:
        if eng is not None:
            eng.close(join=False)  # a watcher may be stuck on a dead peer: do not wait for it
            eng = None
        raise
    finally:
        if eng is not None:
            eng.close()
