"""Exact fast evaluator for the runs whose event order does not depend on timing.

Without a shared host CPU (a profile without ``host``, or replayed durations) every
time in a simulation of :mod:`pipesim.engine` is a maximum of sums of durations --
a longest path through a graph whose nodes are the actions and the wire transfers --
*provided* the order in which each wire serves its transfers is known. This module
computes those times directly, with no event loop: each rank walks its lowered action
list in program order (edges: program order; a compute waits for its message's
arrival, or, with rank queues, its receive's completion; the end of a step waits for
the step's sends to leave), and each wire (one direction of a link) serves two
streams, each in program order: the owner's data sends to the peer, and the owner's
rendezvous ready-notices for receives from the peer. The evaluator merges the two
streams by their times, putting a transfer on its wire only once no transfer still
unknown could come before it (a lower bound from the owner's clock); when every
rank waits on a wire that cannot yet decide, it puts the earliest known transfer
(what an event loop would do next) and goes on.

The result is then checked: on each wire the transfers must have been put in
non-decreasing time order, and two transfers at the *same* time are refused unless
both were put inside their posts, in program order (otherwise their order in SimPy
would depend on which event it happens to process first). A run that passes is the
SimPy run: the same order on every wire gives the same maxima and sums (times agree
to rounding). A run that fails, or whose evaluation cannot go on (a schedule that
deadlocks), is refused (:func:`run` says why) and :func:`pipesim.engine.simulate` runs
SimPy, which stays the reference.

When the fast path applies at all (:func:`ineligible` says why not):

* no host CPU model in the run (``profile.host`` is None, or ``durations`` replay);
* only the action kinds this module knows (F, B, W, SEND_F/B, RECV_F/B; a new kind makes
  the run fall back until :func:`_compile` handles it);
* ``engine="auto"``: no trace requested (``record=False``). With ``engine="fast"`` the
  trace is produced too, with the same events as SimPy's; events with the same start
  and rank may be listed in another order.

Static by construction (the check passes, but for exact ties that transfers of no
length can make): eager sends (every wire carries only
its owner's data, in program order), and the gloo transport (link queues, rendezvous,
every receive posted at step start, so each ready-notice precedes the step's data).
With rendezvous and receives posted late (the NCCL transport) the order can depend on
timing (see the monotonicity paragraph of :mod:`pipesim.engine`); the evaluator then
finds the order an event loop would and the check confirms it, or the run falls back.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import math
from collections import deque
from typing import Any

from . import schedule as S
from .trace import TraceEvent

ENGINES = ("auto", "simpy", "fast")

_COMP, _SEND, _RECV = 0, 1, 2


class _Fail(Exception):
    """The evaluation cannot be trusted to be SimPy's: fall back."""


class FastMsg:
    """A message's times, with the attribute names :meth:`engine._Sim.comm_trace` reads."""

    __slots__ = ("key", "src", "dst", "nbytes", "rdv", "send_post", "recv_post", "notify", "sent", "arr",
                 "arrived", "started", "done", "prevs", "prevr", "wdone", "wsent", "spos", "rpos", "post_end")

    def __init__(self, key, src, dst, nbytes, rdv):
        self.key, self.src, self.dst, self.nbytes, self.rdv = key, src, dst, nbytes, rdv
        self.send_post = self.recv_post = self.notify = self.sent = self.arr = self.arrived = None
        self.post_end = None
        self.done = None  # when a compute waiting on it may start
        self.started = False
        self.prevs = self.prevr = None  # rank queues: the previous send / receive of the same rank
        self.wdone = self.wsent = None  # rank waiting on its completion / on its leaving the wire
        self.spos = self.rpos = 0  # program positions of its send and receive on their ranks


# what a computation's duration is (its offset in a stage's four entries of _Eval.base): the whole
# backward, a forward, a weight-gradient W, and the input-gradient part of a split backward (a B with a W)
_DUR_B, _DUR_F, _DUR_W, _DUR_BI = 0, 1, 2, 3


def _compile(a: S.Action, last: int, split: set[tuple[int, int]], pl: tuple[int, ...],
             wire: dict[tuple[int, int], int]) -> tuple:
    """One action as an op tuple (the dispatch table of the fast path): (code, action, ...).
    Compute: (_COMP, a, its duration's index in :attr:`_Eval.base` (``4 * stage + _DUR_*``),
    message key (src stage, dst stage, tag) or None, live delta); send and receive: (code, a,
    wire, message key). ``split``: the rank's (stage, micro-batch) whose backward is split into
    B and W (:func:`schedule.split_backward`):
    such a B is the input-gradient part and keeps the micro-batch live, its W computes the weight
    gradients (no message) and frees it, as :mod:`pipesim.engine` counts them. ``pl``: stage ->
    rank; a hand-off between two stages of one rank is no message. ``wire``: (rank, rank) -> the
    index of that wire (:func:`_wire_order`)."""
    k = a.kind
    s = a.stage
    mb2 = 2 * a.mb
    d = 4 * s
    if k is _F:
        return (_COMP, a, d + _DUR_F, (s - 1, s, mb2) if s > 0 and pl[s - 1] != pl[s] else None, 1)
    if k is _B:
        key = (s + 1, s, mb2 + 1) if s < last and pl[s + 1] != pl[s] else None
        if (s, a.mb) in split:
            return (_COMP, a, d + _DUR_BI, key, 0)
        return (_COMP, a, d + _DUR_B, key, -1)
    if k is _W:
        return (_COMP, a, d + _DUR_W, None, -1)
    if k is _SF:
        return (_SEND, a, wire[(pl[s], pl[s + 1])], (s, s + 1, mb2))
    if k is _SB:
        return (_SEND, a, wire[(pl[s], pl[s - 1])], (s, s - 1, mb2 + 1))
    if k is _RF:
        return (_RECV, a, wire[(pl[s], pl[s - 1])], (s - 1, s, mb2))
    if k is _RB:
        return (_RECV, a, wire[(pl[s], pl[s + 1])], (s + 1, s, mb2 + 1))
    raise _Fail(f"action kind {k!r} has no fast-path handler")


def _wire_order(wires) -> list[tuple[int, int]]:
    """The engine's wires (its ``(rank, rank)`` keys, both directions of every linked pair) in the
    fast path's order: index ``2 i`` is the i-th pair (a < b) a -> b and ``2 i + 1`` its reverse,
    so that ``w ^ 1`` is wire w's reverse. One stage per rank: wire r -> r + 1 is ``2 r`` and
    r + 1 -> r is ``2 r + 1``."""
    pairs = sorted({(min(a, b), max(a, b)) for a, b in wires})
    return [w for a, b in pairs for w in ((a, b), (b, a))]


_F, _B, _W = S.Kind.F, S.Kind.B, S.Kind.W
_SF, _SB, _RF, _RB = S.Kind.SEND_F, S.Kind.SEND_B, S.Kind.RECV_F, S.Kind.RECV_B
# id(lowered) -> (lowered, placement, its ops): a cached schedule compiles once
_OPS: dict[int, tuple[list, tuple, list]] = {}
_BUILT: dict[int, list] = {}  # the schedules cached_build made (a caller's own lists may change between calls)


def _ops_of(sched: list[list[S.Action]], placement: tuple[int, ...],
            wire: dict[tuple[int, int], int]) -> list[list[tuple]]:
    """The schedule's op tuples (:func:`_compile`); ``wire`` follows from the placement, so the
    cache checks the placement only."""
    hit = _OPS.get(id(sched))
    if hit is not None and hit[0] is sched and hit[1] == placement:
        return hit[2]
    last = len(placement) - 1
    ops = []
    for acts in sched:
        split = S.split_backward(acts)
        ops.append([_compile(a, last, split, placement, wire) for a in acts])
    if _BUILT.get(id(sched)) is not sched:
        return ops
    if len(_OPS) >= 16:
        _OPS.clear()
    _OPS[id(sched)] = (sched, placement, ops)
    return ops


@functools.lru_cache(maxsize=16)
def cached_build(name: str, num_stages: int, num_microbatches: int, recv_ahead: int | None,
                 stages_per_rank: int | None = None) -> tuple[list[list[S.Action]], tuple[int, ...]]:
    """:func:`schedule.build_placed` (the lowered lists and the placement), remembered: a grid builds
    each (schedule, size) once, not once per network setting (generating and validating a 64 x 1024
    schedule takes longer than running it). The lists are shared between simulations, which only read them."""
    with _no_gc():
        low, placement = S.build_placed(name, num_stages, num_microbatches, recv_ahead=recv_ahead,
                                        stages_per_rank=stages_per_rank)
    if len(_BUILT) >= 16:
        _BUILT.clear()
    _BUILT[id(low)] = low
    return low, placement


@contextlib.contextmanager
def _no_gc():
    """Pause the cyclic garbage collector: building or evaluating a large schedule makes
    hundreds of thousands of objects and no cycles, and each collection would scan them all."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def ineligible(sim: Any, record: bool, auto: bool) -> str | None:
    """Why the fast path does not apply to this :class:`engine._Sim` (None: it does)."""
    if sim.cpu is not None or sim.core_of is not None:
        return "the profile has a shared host CPU (host section): its processor sharing depends on timing"
    if auto and record:
        return "a trace is requested (engine='auto' runs SimPy then; engine='fast' makes the trace too)"
    return None  # an action kind with no handler is found while compiling (run() says so)


def run(sim: Any, control_bytes: int) -> str | None:
    """Evaluate ``sim`` (an unrun :class:`engine._Sim`) without an event loop and fill in
    its results (step_ends, busy, wait, peak, actions, trace, msgs); returns None. Where
    the result would not be exactly SimPy's, leaves ``sim`` untouched and returns why."""
    try:
        with _no_gc():
            out = _Eval(sim, control_bytes).go()
    except _Fail as e:
        return str(e)
    sim.step_ends, sim.busy, sim.wait, sim.peak, sim.actions, sim.trace, sim.msgs = out
    return None


class _Eval:
    def __init__(self, sim: Any, control_bytes: int):
        self.sim = sim
        self.p = p = sim.p
        self.steps = sim.steps
        self.rank_mode = sim.rank_mode
        self.ctrl = control_bytes
        tr = sim.transport
        self.rdv_limit = tr.eager_limit_bytes if tr.send_mode == "rendezvous" else math.inf
        self.pl = pl = tuple(sim.placement)
        order = _wire_order(sim.wires)
        self.ops = _ops_of(sim.sched, pl, {key: i for i, key in enumerate(order)})
        self.wires: list[Any] = []
        self.owner: list[int] = []
        for key in order:
            w2 = copy.copy(sim.wires[key])
            w2.free_at = 0.0
            self.wires.append(w2)
            self.owner.append(key[0])
        nw = len(self.wires)
        self.D: list[deque] = [deque() for _ in range(nw)]
        self.C: list[deque] = [deque() for _ in range(nw)]
        self.last_t = [-math.inf] * nw
        self.last_m: list[Any] = [None] * nw  # the wire's last transfer, and whether it was data
        self.last_d = [False] * nw
        self.pos = [0] * p  # actions posted so far per rank (program position)
        self.out_w = [[w for w in range(nw) if self.owner[w] == r] for r in range(p)]  # the wires rank r sends on
        self.msgs: dict[tuple, FastMsg] = {}
        self.mstep: list[dict[tuple, FastMsg]] = [{} for _ in range(self.steps)]
        self.nbytes = [(c.activation_bytes, c.gradient_bytes) for c in sim.comp]
        self.clock = [0.0] * p
        self.step = [0] * p
        self.pc = [0] * p
        self.sends: list[list[FastMsg]] = [[] for _ in range(p)]
        self.si = [0] * p
        self.lastsend: list[FastMsg | None] = [None] * p
        self.lastrecv: list[FastMsg | None] = [None] * p
        self.rq: list[list[FastMsg]] = [[] for _ in range(p)]
        self.rqi = [0] * p
        self.ready: deque[int] = deque(range(p))
        self.queued = [True] * p
        self.wl: deque[int] = deque()
        self.inwl = [False] * nw
        self.step_ends: list[list[float]] = [[] for _ in range(p)]
        self.busy = [[0.0] * self.steps for _ in range(p)]
        self.wait = [[0.0] * self.steps for _ in range(p)]
        self.live = [0] * p
        self.peak = [0] * p
        self.actions = 0
        self.trace: list[TraceEvent] = []
        self.base: list[float] = []   # 4 per stage: each duration kind's seconds (_DUR_*), overhead included
        for c in sim.comp:
            ov = c.overhead(sim.schedule)
            bi, bw = c.backward_split()
            self.base += (c.backward_s + ov, c.forward_s + ov, bw + ov, bi + ov)

    # ------------------------------------------------------------------ messages and wires

    def msg(self, step: int, k: tuple[int, int, int]) -> FastMsg:
        """The message of ``step`` with key (src, dst, tag), made on first use."""
        src, dst, tag = k
        m = FastMsg((step, src, dst, tag), self.pl[src], self.pl[dst], self.nbytes[src][tag & 1], False)
        m.rdv = m.nbytes > self.rdv_limit
        self.mstep[step][k] = m
        if self.sim.record:
            self.msgs[m.key] = m
        return m

    def dtime(self, m: FastMsg) -> float | None:
        t = m.send_post
        if self.rank_mode:
            ps = m.prevs
            if ps is not None:
                if ps.sent is None:
                    return None
                if ps.sent > t:
                    t = ps.sent
        if m.rdv:
            n = m.notify
            if n is None:
                return None
            if n > t:
                t = n
        return t

    def ctime(self, m: FastMsg) -> float | None:
        t = m.recv_post
        if self.rank_mode:
            pr = m.prevr
            if pr is not None:
                if pr.done is None:
                    return None
                if pr.done > t:
                    t = pr.done
        return t

    def dsync(self, m: FastMsg, t: float) -> bool:
        """Whether m's data is put inside its post (so ties with other posts follow program order)."""
        if t != m.send_post:
            return False
        ps = m.prevs
        return not self.rank_mode or ps is None or ps.sent < t

    def csync(self, m: FastMsg, t: float) -> bool:
        """Whether m's ready-notice is put inside the post of its receive."""
        if t != m.recv_post:
            return False
        pr = m.prevr
        return not self.rank_mode or pr is None or pr.done < t

    def _check(self, w: int, t: float, m: FastMsg, data: bool) -> None:
        """Wire w puts m at t: after the wire's previous transfer, and a tie only in program order."""
        lt = self.last_t[w]
        if t <= lt:
            if t < lt:
                raise _Fail("wire order depends on timing")
            pm, pd = self.last_m[w], self.last_d[w]
            sync = self.dsync(m, t) if data else self.csync(m, t)
            psync = self.dsync(pm, t) if pd else self.csync(pm, t)
            if not (sync and psync and (m.spos if data else m.rpos) > (pm.spos if pd else pm.rpos)):
                # two transfers at the same time, not both put inside their posts in this order:
                # SimPy's order would come from its event queue
                raise _Fail("two transfers at the same time on one wire")
        self.last_t[w], self.last_m[w], self.last_d[w] = t, m, data

    def _wake(self, r: int | None) -> None:
        if r is not None and not self.queued[r]:
            self.queued[r] = True
            self.ready.append(r)

    def _dirty(self, w: int) -> None:
        if not self.inwl[w]:
            self.inwl[w] = True
            self.wl.append(w)

    def put_data(self, w: int, m: FastMsg, t: float) -> None:
        self._check(w, t, m, True)
        m.sent, m.arr = self.wires[w].put(t, m.nbytes, m.post_end)
        m.started = True
        self._wake(m.wsent)
        if self.rank_mode:
            for x in self.out_w[m.src]:
                self._dirty(x)
            self.complete(m.dst)
        else:
            m.done = m.arrived = m.arr
            self._wake(m.wdone)

    def put_ctrl(self, w: int, m: FastMsg, t: float) -> None:
        self._check(w, t, m, False)
        _, m.notify = self.wires[w].put(t, self.ctrl)
        self._dirty(w ^ 1)

    def owner_lb(self, w: int) -> float:
        a = self.owner[w]
        return self.clock[a] if self.step[a] < self.steps else math.inf

    def pump(self, w: int) -> None:
        """Put the transfers of wire w that no transfer still unknown can precede."""
        self.inwl[w] = False
        Dq, Cq = self.D[w], self.C[w]
        while Dq or Cq:
            td = self.dtime(Dq[0]) if Dq else None
            tc = self.ctime(Cq[0]) if Cq else None
            if td is not None and tc is not None:
                if td == tc:  # the same time: fixed only if both happen inside their posts
                    d, c = Dq[0], Cq[0]
                    if not (self.dsync(d, td) and self.csync(c, tc)):
                        raise _Fail("a data transfer and a ready-notice at the same time on one wire")
                    if d.spos < c.rpos:
                        self.put_data(w, Dq.popleft(), td)
                    else:
                        self.put_ctrl(w, Cq.popleft(), tc)
                elif td < tc:
                    self.put_data(w, Dq.popleft(), td)
                else:
                    self.put_ctrl(w, Cq.popleft(), tc)
                continue
            if td is not None:
                d = Dq[0]
                if Cq:
                    c = Cq[0]
                    lb, later = c.recv_post, c.rpos > d.spos
                else:
                    lb, later = self.owner_lb(w), True
                if td < lb or (td == lb and later and self.dsync(d, td)):
                    self.put_data(w, Dq.popleft(), td)
                    continue
            elif tc is not None:
                c = Cq[0]
                if Dq:
                    d = Dq[0]
                    lb, later = d.send_post, d.spos > c.rpos
                else:
                    lb, later = self.owner_lb(w), True
                if tc < lb or (tc == lb and later and self.csync(c, tc)):
                    self.put_ctrl(w, Cq.popleft(), tc)
                    continue
            break

    def force(self) -> bool:
        """Every rank waits: put the earliest transfer whose time is known."""
        best, bw, bd = math.inf, -1, True
        for w in range(len(self.wires)):
            Dq, Cq = self.D[w], self.C[w]
            if Dq:
                t = self.dtime(Dq[0])
                if t is not None and t < best:
                    best, bw, bd = t, w, True
            if Cq:
                t = self.ctime(Cq[0])
                if t is not None and t < best:
                    best, bw, bd = t, w, False
        if bw < 0:
            return False
        if bd:
            self.put_data(bw, self.D[bw].popleft(), best)
        else:
            self.put_ctrl(bw, self.C[bw].popleft(), best)
        self._dirty(bw)
        return True

    def complete(self, r: int) -> None:
        """Rank queues: complete rank r's receives in order while their data is in."""
        q, i = self.rq[r], self.rqi[r]
        n = len(q)
        while i < n:
            m = q[i]
            a = m.arr
            if a is None:
                break
            t = m.recv_post
            if a > t:
                t = a
            pr = m.prevr
            if pr is not None and pr.done > t:
                t = pr.done
            m.done = m.arrived = t
            self._wake(m.wdone)
            i += 1
        self.rqi[r] = i
        for x in self.out_w[r]:
            self._dirty(x)

    # ------------------------------------------------------------------ ranks

    def advance(self, r: int) -> None:
        """Run rank r's program until it waits on a time not known yet (or ends)."""
        self.queued[r] = False
        ops = self.ops[r]
        n = len(ops)
        c = self.clock[r]
        st, pc = self.step[r], self.pc[r]
        steps, rank_mode, rec = self.steps, self.rank_mode, self.sim.record
        durf = self.sim.durations
        lagf = self.sim.send_lags
        base = self.base
        sends = self.sends[r]
        busy, wait = self.busy[r], self.wait[r]
        live, peak = self.live[r], self.peak[r]
        pos0 = pos = self.pos[r]
        D, C = self.D, self.C
        ms = self.mstep[st] if st < steps else {}
        try:
            while st < steps:
                if pc < n:
                    op = ops[pc]
                    code = op[0]
                    if code == _COMP:
                        k = op[3]
                        if k is not None:
                            m = ms.get(k) or self.msg(st, k)
                            d = m.done
                            if d is None:
                                m.wdone = r
                                return
                            if d > c:
                                wait[st] += d - c
                                c = d
                        if durf is None:
                            dur = base[op[2]]
                        else:
                            dur = durf(r, st, str(op[1]))
                        t0 = c
                        c = c + dur
                        busy[st] += c - t0
                        live += op[4]
                        if live > peak:
                            peak = live
                        if rec:
                            self.trace.append(TraceEvent(r, str(op[1]), t0, c, st))
                    elif code == _SEND:
                        m = ms.get(op[3]) or self.msg(st, op[3])
                        lag = 0.0 if lagf is None else lagf(r, st, str(op[1]))
                        m.send_post = c
                        if lag > 0:
                            m.post_end = c + lag
                        m.spos = pos
                        if rank_mode:
                            m.prevs = self.lastsend[r]
                            self.lastsend[r] = m
                        D[op[2]].append(m)
                        sends.append(m)
                        if lag > 0:
                            c = c + lag  # the post holds the rank until it returns
                    else:
                        m = ms.get(op[3]) or self.msg(st, op[3])
                        m.recv_post = c
                        m.rpos = pos
                        if m.rdv:
                            C[op[2]].append(m)
                        if rank_mode:
                            m.prevr = self.lastrecv[r]
                            self.lastrecv[r] = m
                            self.rq[r].append(m)
                            self.complete(r)
                    pos += 1
                    pc += 1
                else:
                    si = self.si[r]
                    t0 = c
                    while si < len(sends):
                        m = sends[si]
                        if m.sent is None:
                            m.wsent = r
                            self.si[r] = si
                            wait[st] += c - t0
                            return
                        if m.sent > c:
                            c = m.sent
                        si += 1
                    wait[st] += c - t0
                    opt = self.sim.opt[r] if durf is None else durf(r, st, "OPT")
                    t0 = c
                    if opt > 0:
                        c = c + opt
                    busy[st] += c - t0
                    if rec:
                        self.trace.append(TraceEvent(r, "OPT", t0, c, st))
                    self.step_ends[r].append(c)
                    st += 1
                    pc = 0
                    self.si[r] = 0
                    sends = self.sends[r] = []
                    if st < steps:
                        ms = self.mstep[st]
        finally:
            self.clock[r] = c
            self.step[r], self.pc[r] = st, pc
            self.live[r], self.peak[r] = live, peak
            self.actions += pos - pos0
            self.pos[r] = pos
            for x in self.out_w[r]:
                self._dirty(x)

    def go(self):
        ready, wl = self.ready, self.wl
        p = self.p
        while True:
            while ready or wl:
                while ready:
                    self.advance(ready.popleft())
                while wl and not ready:
                    self.pump(wl.popleft())
            if all(s >= self.steps for s in self.step):
                break
            if not self.force():
                raise _Fail("the evaluation cannot go on (the schedule may deadlock)")
        for w in range(len(self.wires)):
            if self.D[w] or self.C[w]:
                raise _Fail("transfers left over")
        if not all(len(e) == self.steps for e in self.step_ends) or p == 0:
            raise _Fail("incomplete")
        return self.step_ends, self.busy, self.wait, self.peak, self.actions, self.trace, self.msgs
