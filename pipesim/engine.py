"""SimPy model of one pipeline-parallel training run: ranks, links, host CPU.

What is modelled
----------------
* One SimPy process per rank walks that rank's lowered action list
  (:func:`pipesim.schedule.build`) in program order, for ``steps`` consecutive
  training steps with no barrier in between (as the runtime runs them). After its
  last action a rank waits for its outstanding sends, runs the optimizer step
  (``optimizer_s``) and starts the next step.
* Compute (F, B, W, optimizer) takes the profile's median time for the stage and
  micro-batch size, plus the runtime's own CPU time per computation (``overhead_s``, or
  the schedule's own from ``overhead_by_schedule_s``).
* Several stages per rank (interleaved schedules): a rank runs the actions of all
  its virtual stages in its one program order; each virtual stage has its own compute
  (:meth:`Profile.virtual_compute`: the profile's ``virtual_stages``, else the rank's
  compute split evenly), and a message goes to the rank that owns the peer stage
  (a pair of ranks without a link in the profile, such as the wrap-around link from
  the last rank to rank 0 of the loop placement, takes the parameters of link 0->1
  from a lower to a higher rank and of link 1->0 the other way; a network setting's
  per-link clauses name neighbour ranks only, its uniform part shapes every link).
  Neighbouring stages on one rank exchange nothing. The peak activations reported
  count virtual-stage activations (each about 1/v of a rank's with v stages per rank).
* Split backward (a schedule with W actions, zbh1): B is the input-gradient part
  (``backward_input_s``) and sends its gradient on at once, W the weight-gradient part
  (``backward_weight_s``) that waits for nothing but its own B; without the profile's
  fields both are half of ``backward_s`` (:meth:`StageCompute.backward_split`).
  If the profile has a ``host`` section (all ranks on one machine, as on the local
  testbed), the ranks share its CPU: while k ranks compute at once,
  each progresses ``slowdown[k]`` times slower (processor sharing, re-evaluated at
  every start and end of a computation). With the host's ``shaped_cpu`` (probed by
  :mod:`calibrate.shaped`), a message on a link that the setting caps without adding a
  delay also costs ``cpu_per_byte(rate) * bytes`` of CPU on its sender's and its
  receiver's core from the moment it enters the wire, work that no rank waits for but
  that shares the core with whatever the ranks there compute (the testbed's htb shaping
  does the kernel's work for such messages in the ranks' own processes). A replay
  (``durations``) charges none: its measured durations already hold it.
* Posting a send or receive never blocks. A forward waits until its activation has
  arrived, a backward until its gradient has arrived.
* Each directed link is a FIFO that serializes messages at the link's bandwidth --
  capped, for a message larger than one window, by the single-connection limit
  ``window / RTT`` -- and delivers each message ``latency`` after its last byte left.
  Links are full duplex: the two directions are independent queues.
* The transport (:class:`pipesim.transport.Transport`) is the profile's own ``transport``
  section if it has one, else the runtime's default for the profile's backend
  (:meth:`Transport.for_backend`); ``simulate(transport=...)`` overrides it.
* Which transfers share a queue (:attr:`Transport.queue`):
  ``"link"``: one FIFO per link direction (gloo: one TCP connection per pair of ranks);
  ``"rank"``: one send queue and one receive queue per rank that serve forward and
  backward traffic in program order (runtimes that put all sends on one CUDA
  stream). A send at the head of its rank's queue blocks the sends behind it, and a
  receive at the head blocks the receives behind it, so head-of-line blocking
  between forward and backward traffic is modelled.
* When a send may start (:attr:`Transport.send_mode`): ``"eager"``: as soon as it is
  posted; ``"rendezvous"``: only once the receiver has posted the matching receive
  and its ready-notice (a small control message on the reverse direction of the
  link, queued behind whatever that direction is carrying) has reached the sender,
  as gloo does for every message and NCCL for large ones. ``eager_limit_bytes``
  makes messages up to that size eager under ``"rendezvous"``.
* Monotonicity, where it is promised: without a shared host (a profile without
  ``host``) and with every wire carrying its messages in an order that does not depend
  on timing, a uniform network setting with more delay or less bandwidth never makes a
  step faster, nor ends any rank's step earlier: every time in the simulation is then
  a maximum of sums of durations, and none of them shrinks. The order is fixed with
  eager sends (``send_mode="eager"``, or messages up to ``eager_limit_bytes``), and
  with the gloo transport (:meth:`Transport.for_backend`: per-link queues, rendezvous,
  every receive posted at step start, so that each ready-notice is on its wire before
  any data of the step). It is not promised otherwise, and does not always hold: on a
  shared host, computations pushed apart by a delay contend less for the CPU, which
  can save more than the delay costs; and with rendezvous sends whose receives are
  posted later (the NCCL transport: rank queues, receives posted just before they are
  needed), a ready-notice waits behind data on the reverse direction, and a delay can
  move it ahead of a message it used to wait behind (3 stages, 1 MB messages at
  10 Mbps, 1F1B with 2 micro-batches: 4.01 s with no delay, 3.66 s with 50 ms).
  ``tests/test_fuzz.py`` tests the promise (for every schedule, virtual stages and
  split backward included) and pins both exceptions.

What is not modelled
--------------------
TCP slow start and loss; CPU time spent by the communication stack itself (copies,
checksums, the testbed's delay line); memory limits (peak in-flight activations are
reported, not enforced; with a split backward an activation counts as held until
its W); jitter (every duration is the profile's median); data-, tensor- or
sequence-parallel collectives; any cost of switching between virtual stages on a
rank beyond the profile's per-action overhead.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import simpy

from . import fastpath, limits
from . import schedule as S
from .network import NetworkSetting, shorten
from .network import parse as parse_network
from .profile import Link, Profile, StageCompute
from .trace import TraceEvent
from .transport import Transport

CONTROL_BYTES = 64  # size of a rendezvous ready-notice on the wire

Durations = Callable[[int, int, str], float]
"""Replay: (rank, step, action text such as "1F3" or "OPT") -> seconds that computation takes."""


@dataclass
class RankStats:
    rank: int
    step_time: float  # this rank's own period over the measured step
    compute: float  # F, B and optimizer time in the measured step
    waiting: float  # blocked on a receive or on its sends in the measured step
    idle: float  # rank 0's step time minus this rank's compute and waiting
    peak_inflight: int


@dataclass
class SimResult:
    step_time: float  # as seen by rank 0 (the seed's convention)
    ranks: list[RankStats]
    bubble_fraction: float
    trace: list[TraceEvent]
    step_ends: list[list[float]]  # per rank, end time of each step
    schedule: str
    micro_batch_size: int
    num_microbatches: int
    network: str
    actions: int = 0  # actions executed (for throughput figures)
    engine: str = "simpy"  # which evaluator ran it: "simpy" or "fast" (pipesim.fastpath)
    # per rank, the CPU seconds per step charged for messages on links capped without a delay (host.shaped_cpu)
    shaped_cpu: tuple[float, ...] = ()

    def summary(self) -> str:
        lines = [f"step time (rank 0): {self.step_time:.4f} s   bubble: {100 * self.bubble_fraction:.1f}%",
                 "| rank | compute s | waiting s | idle s | peak activations |",
                 "|---:|---:|---:|---:|---:|"]
        for r in self.ranks:
            idle = round(r.idle, 4) + 0.0  # a rounding remainder of -1e-17 prints as 0.0000, not -0.0000
            lines.append(f"| {r.rank} | {r.compute:.4f} | {r.waiting:.4f} | {idle:.4f} | {r.peak_inflight} |")
        return "\n".join(lines)


# ------------------------------------------------------------------------------ components


class _HostCPU:
    """What both host models share: jobs with remaining solo seconds that progress at
    ``rate`` while they run, and one pending wake-up (older ones are ignored)."""

    def __init__(self, env: simpy.Environment, factor: Callable[[int], float]):
        self.env, self.factor = env, factor
        self.last = 0.0
        self.rate = 1.0
        self.gen = 0

    def _running(self) -> list[list]:
        raise NotImplementedError

    def _wake(self) -> None:
        raise NotImplementedError

    def run(self, work: float) -> simpy.Event:
        raise NotImplementedError

    def _advance(self) -> None:
        dt = self.env.now - self.last
        if dt > 0:
            step = dt * self.rate
            for job in self._running():
                job[1] -= step
        self.last = self.env.now

    def _done(self, job: list) -> bool:
        """Whether ``job`` has finished: nothing left, or less than the clock can still
        resolve at this time (else a wake-up would land on ``now`` again and again)."""
        now = self.env.now
        return job[1] <= 1e-12 or now + job[1] / self.rate <= now

    def _wake_at(self, t: float) -> None:
        if not math.isfinite(t):
            raise ValueError(f"simulated time overflows ({t!r} s) on the shared host: the profile's compute times "
                             "or host.slowdown are beyond any real run")
        self.gen += 1
        gen = self.gen
        ev = self.env.timeout(max(t - self.env.now, 0.0))
        ev.callbacks.append(lambda _e: self._wake() if gen == self.gen else None)


class SharedCPU(_HostCPU):
    """Processor sharing among ranks on one host: k concurrent jobs each run at 1/slowdown(k)."""

    def __init__(self, env: simpy.Environment, factor: Callable[[int], float]):
        super().__init__(env, factor)
        self.jobs: list[list] = []  # [done-event, remaining solo seconds]

    def _running(self):
        return self.jobs

    def run(self, work: float) -> simpy.Event:
        self._advance()
        done = self.env.event()
        self.jobs.append([done, work])
        self._reschedule()
        return done

    def _reschedule(self) -> None:
        if not self.jobs:
            self.gen += 1
            return
        self.rate = 1.0 / self.factor(len(self.jobs))
        self._wake_at(self.env.now + max(min(job[1] for job in self.jobs), 0.0) / self.rate)

    def _wake(self) -> None:
        self._advance()
        keep = []
        for job in self.jobs:
            if self._done(job):
                job[0].succeed()
            else:
                keep.append(job)
        self.jobs = keep
        self._reschedule()


class CoreScheduler(_HostCPU):
    """Ranks on one host of ``cores`` cores, scheduled round-robin with a time slice.

    A computation runs on a free core; with none free it waits in a FIFO run queue.
    A running computation is preempted after ``quantum`` seconds when others wait
    (``quantum`` = inf: each runs to completion once started). While k computations
    run at once (k <= cores), each progresses 1/slowdown(k) as fast as alone (memory
    and cache interference). This is how an operating system shares cores among
    more CPU-bound ranks than cores; :class:`SharedCPU` is its fluid limit
    (quantum -> 0).
    """

    def __init__(self, env: simpy.Environment, cores: int, factor: Callable[[int], float], quantum: float):
        super().__init__(env, factor)
        self.cores, self.quantum = cores, quantum
        self.running: list[list] = []  # [done-event, remaining solo seconds, slice end]
        self.waiting: deque[list] = deque()

    def _running(self):
        return self.running

    def run(self, work: float) -> simpy.Event:
        self._advance()
        done = self.env.event()
        if len(self.running) < self.cores:
            self.running.append([done, work, max(self.env.now + self.quantum, math.nextafter(self.env.now, math.inf))])
        else:
            self.waiting.append([done, work, 0.0])
        self._reschedule()
        return done

    def _reschedule(self) -> None:
        if not self.running:
            self.gen += 1
            return
        self.rate = 1.0 / self.factor(len(self.running))
        now = self.env.now
        nxt = min(now + max(job[1], 0.0) / self.rate for job in self.running)
        if self.waiting:
            nxt = min(nxt, min(job[2] for job in self.running))
        self._wake_at(nxt)

    def _wake(self) -> None:
        self._advance()
        now = self.env.now
        keep = []
        for job in self.running:
            if self._done(job):
                job[0].succeed()
            elif self.waiting and job[2] <= now + 1e-12:
                self.waiting.append(job)  # slice used up: back of the run queue
            else:
                keep.append(job)
        self.running = keep
        while self.waiting and len(self.running) < self.cores:
            job = self.waiting.popleft()
            # a slice too short for the clock at this time lasts one tick, so that time moves on
            job[2] = max(now + self.quantum, math.nextafter(now, math.inf))
            self.running.append(job)
        self._reschedule()


class Message:
    __slots__ = ("key", "src", "dst", "nbytes", "send_post", "recv_post", "notify_at", "pending_send",
                 "started", "sent", "arrived", "start_ev", "queue_ready", "data_in", "done", "done_ev", "post_end")

    def __init__(self, key, src, dst, nbytes):
        self.key, self.src, self.dst, self.nbytes = key, src, dst, nbytes
        self.send_post = self.recv_post = None
        self.notify_at = None  # when the receiver's ready-notice reaches the sender
        self.pending_send = False  # posted, waiting for the notice
        self.started = False
        self.sent = self.arrived = None  # times, known once the transfer has started
        self.start_ev = None  # made on demand
        self.queue_ready = False
        self.data_in = False
        self.done = False  # rank queues: the receive has completed
        self.done_ev = None
        self.post_end = None  # a replay's send lag: the post returns then (see _Sim._start)


class Wire:
    """One direction of a link: a FIFO serializing at the link's rate, then a propagation delay.

    Service is deterministic, so the FIFO needs no events of its own: a message put at
    time t starts when the wire is free (max(t, free_at)), leaves after its
    serialization time and arrives ``latency`` later.
    """

    def __init__(self, link: Link, rtt: float):
        self.link, self.rtt = link, rtt
        self.free_at = 0.0
        self._bits = 8.0 / link.bandwidth_bps
        w = link.window_bytes
        self._extra = max(0.0, rtt - w * self._bits) / w if w else 0.0

    def serialize_time(self, nbytes: int) -> float:
        t = nbytes * self._bits
        w = self.link.window_bytes
        if w and nbytes > w:
            # beyond the first window, each window waits for its acknowledgement when RTT > window/bw
            t += (nbytes - w) * self._extra
        return t

    def put(self, now: float, nbytes: int, post_end: float | None = None) -> tuple[float, float]:
        """Enqueue at ``now``; returns (time the last byte leaves, time it arrives). ``post_end``
        (a replay's send lag): the last bytes leave no earlier than the post's return."""
        start = now if now > self.free_at else self.free_at
        self.free_at = start + self.serialize_time(nbytes)
        sent = self.free_at if post_end is None or post_end <= self.free_at else post_end
        return sent, sent + self.link.latency_s


# ------------------------------------------------------------------------------ simulation


def compute_s(c: StageCompute, a: S.Action, split: set[tuple[int, int]]) -> float:
    """The profile's compute time of computation ``a`` (F, B or W) of a stage with compute ``c``,
    without the runtime's overhead (which the engine adds to every one of them): a B whose
    (stage, micro-batch) is in ``split`` (it has a W) is the input-gradient part, else the
    whole backward."""
    k = a.kind
    if k is S.Kind.F:
        return c.forward_s
    if k is S.Kind.B:
        return c.backward_split()[0] if (a.stage, a.mb) in split else c.backward_s
    if k is S.Kind.W:
        return c.backward_split()[1]
    raise ValueError(f"{a} is not a computation")


def rank_work(profile: Profile, schedule: str, micro_batch_size: int, num_microbatches: int,
              stages_per_rank: int | None = None) -> list[tuple[float, int]]:
    """Per rank, what one step of ``schedule`` asks of it in the engine: (its compute per step
    without overhead, optimizer included; the number of its computations, each of which the
    engine charges the per-action overhead once). gpipe and 1f1b: ``m * (forward_s +
    backward_s) + optimizer_s`` and ``2 m``; zbh1: ``m * (forward_s + B + W) + optimizer_s``
    (:meth:`StageCompute.backward_split`) and ``3 m``, on the first stage too (its B takes the
    gradient and its W runs the whole backward); interleaved1f1b with v stages per rank: the
    sum over the rank's virtual stages (:meth:`Profile.virtual_compute`) of ``m * (forward_s +
    backward_s)``, plus ``optimizer_s``, and ``2 m v``. Read off the schedule's own actions, so
    that it counts what :func:`simulate` runs. The runtime's overhead probe
    (``calibrate/overhead.py``) divides each rank's CPU per step beyond the first figure by
    the second."""
    p = profile.num_stages
    key = schedule.lower()
    v = S.stages_per_rank_of(key, stages_per_rank) if key in S.VIRTUAL else None
    acts = S.generate(key, p, num_microbatches, v)
    return [(solo, n) for solo, n, _ in lowered_work(profile, acts, micro_batch_size, S.placement_for(key, p, v), key)]


def lowered_work(profile: Profile, lowered: list[list[S.Action]], micro_batch_size: int,
                 placement: tuple[int, ...], schedule: str | None = None) -> list[tuple[float, int, float]]:
    """Per rank, what one step of the lowered schedule ``lowered`` (stage -> rank:
    ``placement``) asks of the rank's CPU in the engine: (its compute without overhead,
    optimizer included; the number of its computations, F, B and W alike; the overhead
    the engine charges them, ``overhead(schedule)`` of the computation's (virtual) stage
    once per computation). :func:`rank_work` gives the first two of a named schedule."""
    comp = profile.virtual_compute(micro_batch_size, placement)
    out = []
    for r, lst in enumerate(lowered):
        split = S.split_backward(lst)
        mine = [a for a in lst if a.kind.is_compute]
        solo = sum(compute_s(comp[a.stage], a, split) for a in mine)
        overhead = sum(comp[a.stage].overhead(schedule) for a in mine)
        out.append((solo + step_cpu(profile, r, micro_batch_size), len(mine), overhead))
    return out


def step_cpu(profile: Profile, rank: int, micro_batch_size: int) -> float:
    """What the engine charges rank ``rank`` once per step, after its computations: its stage's
    ``optimizer_s`` plus the runtime's ``step_overhead_s`` at that micro-batch size (if any)."""
    st = profile.stages[rank]
    c = st.compute.get(micro_batch_size)
    return st.optimizer_s + (c.step_overhead_s if c is not None else 0.0)


def _peer(a: S.Action) -> int:
    peer = a.peer
    if peer is None:
        raise ValueError(f"{a} is not a communication action")
    return peer


class _Sim:
    def __init__(self, profile: Profile, sched: list[list[S.Action]], mbs: int, setting: NetworkSetting,
                 transport: Transport, steps: int, record: bool, schedule: str | None = None,
                 durations: Durations | None = None, placement: tuple[int, ...] | None = None,
                 send_lags: Durations | None = None):
        self.env = simpy.Environment()
        self.durations = durations
        self.send_lags = send_lags  # a replay's: seconds each send's post holds its rank (see simulate)
        self.schedule = schedule
        self.profile, self.sched, self.mbs, self.setting = profile, sched, mbs, setting
        self.transport, self.steps, self.record = transport, steps, record
        self.rank_mode = transport.queue == "rank"
        p = len(sched)
        self.p = p
        self.placement = placement if placement is not None else tuple(range(p))  # stage -> rank
        self.n = len(self.placement)  # (virtual) stages
        self.comp = profile.virtual_compute(mbs, self.placement)  # per stage
        self.split = [S.split_backward(acts) for acts in sched]  # per rank: (stage, mb) with a W
        self.opt = [step_cpu(profile, r, mbs) for r in range(p)]
        host = profile.host if durations is None else None  # replayed durations already hold the sharing
        self.core_of: list[SharedCPU] | None = None
        self.cpu: _HostCPU | None = None
        if host is None:
            self.cpu = None
        elif host.placement is not None:
            if len(host.placement) != p:
                raise ValueError(f"profile host.placement names {len(host.placement)} ranks, the schedule has {p}")
            self.cpu = None
            cores = [SharedCPU(self.env, float) for _ in range(host.cores)]  # j jobs on a core: each at 1/j
            self.core_of = [cores[c] for c in host.placement]
        elif host.quantum_s is None:
            self.cpu = SharedCPU(self.env, host.factor)
        else:
            self.cpu = CoreScheduler(self.env, host.cores, host.factor, host.quantum_s)
        self.wires: dict[tuple[int, int], Wire] = {}
        pairs = {(self.placement[s], self.placement[s + 1]) for s in range(self.n - 1)}
        pairs |= {(b, a) for a, b in pairs}
        # the host CPU per byte a message costs its sender's and receiver's cores (a cap without a delay)
        self.shaped: dict[tuple[int, int], float] = {}
        self.charged = [0.0] * p   # per rank, the seconds charged for them over the run
        for a, b in sorted(pairs):
            if a != b:
                link, back = self._link(a, b), self._link(b, a)
                self.wires[(a, b)] = Wire(link, link.latency_s + back.latency_s)
                if host is not None and host.shaped_cpu:
                    ov = setting.for_link(a, b)
                    if ov.bandwidth_bps is not None and not ov.delay_s:
                        self.shaped[(a, b)] = host.cpu_per_byte(ov.bandwidth_bps)
        self.msgs: dict[tuple, Message] = {}
        # rank queues ("rank" mode): posted sends / receives per rank in program order
        self.sendq: list[deque[Message]] = [deque() for _ in range(p)]
        self.recvq: list[deque[Message]] = [deque() for _ in range(p)]
        self.trace: list[TraceEvent] = []
        self.step_ends: list[list[float]] = [[] for _ in range(p)]
        self.busy = [[0.0] * steps for _ in range(p)]
        self.wait = [[0.0] * steps for _ in range(p)]
        self.live = [0] * p
        self.peak = [0] * p
        self.actions = 0

    def _link(self, a: int, b: int) -> Link:
        """The link a -> b under the setting; a pair the profile does not link (only
        neighbour ranks are) takes link 0 -> 1's parameters (its direction for a < b)."""
        if (a, b) in self.profile.links:
            return self.profile.link(a, b, self.setting)
        base = self.profile.links[(0, 1) if a < b else (1, 0)]
        return replace(base, src=a, dst=b).shaped(self.setting.for_link(a, b))

    # --------------------------------------------------------------- messages

    def _msg(self, step: int, forward: bool, mb: int, sender: int, receiver: int) -> Message:
        """The message of ``step`` from stage ``sender`` to its neighbour stage ``receiver``."""
        key = (step, sender, receiver, 2 * mb + (0 if forward else 1))
        m = self.msgs.get(key)
        if m is None:
            c = self.comp[sender]
            m = self.msgs[key] = Message(key, self.placement[sender], self.placement[receiver],
                                         c.activation_bytes if forward else c.gradient_bytes)
        return m

    def _rendezvous(self, m: Message) -> bool:
        t = self.transport
        return t.send_mode == "rendezvous" and m.nbytes > t.eager_limit_bytes

    def _at(self, t: float, fn) -> None:
        """Call fn() at simulated time t (now if t is not in the future)."""
        dt = t - self.env.now
        if dt <= 0:
            fn()
        else:
            self.env.timeout(dt).callbacks.append(lambda _e: fn())

    def _start(self, m: Message) -> None:
        """The data of m enters its wire now."""
        now = self.env.now
        m.started = True
        m.sent, m.arrived = self.wires[(m.src, m.dst)].put(now, m.nbytes, m.post_end)
        k = self.shaped.get((m.src, m.dst))
        if k:   # the kernel's work for the message, on both ends' cores, beside whatever they compute
            for r in (m.src, m.dst):
                self._charge(r, k * m.nbytes)
                self.charged[r] += k * m.nbytes
        if m.start_ev is not None:
            m.start_ev.succeed()
        if self.rank_mode:
            self._at(m.sent, lambda: self._sent_rank(m))
            self._at(m.arrived, lambda: self._delivered_rank(m))

    def _notify(self, m: Message) -> None:
        """The receiver is ready for m: its ready-notice goes back on the reverse wire (rendezvous)."""
        if self._rendezvous(m):
            _, m.notify_at = self.wires[(m.dst, m.src)].put(self.env.now, CONTROL_BYTES)
        else:
            m.notify_at = self.env.now
        if m.pending_send:
            m.pending_send = False
            self._at(m.notify_at, lambda: self._start(m))

    def _try_send(self, m: Message) -> None:
        if not self._rendezvous(m):
            self._start(m)
        elif m.notify_at is None:
            m.pending_send = True
        else:
            self._at(m.notify_at, lambda: self._start(m))

    def post_send(self, m: Message) -> None:
        m.send_post = self.env.now
        if self.rank_mode:
            q = self.sendq[m.src]
            q.append(m)
            if len(q) == 1:
                self._try_send(m)
        else:
            self._try_send(m)

    def post_recv(self, m: Message) -> None:
        m.recv_post = self.env.now
        if self.rank_mode:
            q = self.recvq[m.dst]
            q.append(m)
            if len(q) == 1:
                self._pump_recv(m.dst)
        else:
            self._notify(m)

    def _sent_rank(self, m: Message) -> None:
        """Rank queue: the head send is done; the next send may go."""
        q = self.sendq[m.src]
        q.popleft()
        if q:
            self._try_send(q[0])

    def _delivered_rank(self, m: Message) -> None:
        m.data_in = True  # the receive completes once it heads its queue
        self._pump_recv(m.dst)

    def _pump_recv(self, r: int) -> None:
        """Rank queue: complete the head receives whose data is in; the next head becomes
        active and notifies its sender."""
        q = self.recvq[r]
        while q and q[0].data_in:
            done = q.popleft()
            done.arrived = max(done.arrived, self.env.now)  # completes only when it heads the queue
            done.done = True
            if done.done_ev is not None:
                done.done_ev.succeed()
        if q and not q[0].queue_ready:
            q[0].queue_ready = True
            self._notify(q[0])

    # --------------------------------------------------------------- ranks

    def _compute(self, r: int, dur: float):
        if self.core_of is not None:
            return self.core_of[r].run(dur)
        if self.cpu is not None:
            return self.cpu.run(dur)
        return self.env.timeout(dur)

    def _charge(self, r: int, work: float) -> None:
        """Run ``work`` solo seconds on rank r's core (or the shared host) that no rank waits for."""
        if self.core_of is not None:
            self.core_of[r].run(work)
        elif self.cpu is not None:
            self.cpu.run(work)

    def _until(self, m: Message, when: str):
        """Wait until m's transfer has started, then until its ``when`` time ("sent" or "arrived")."""
        env = self.env
        if not m.started:
            if m.start_ev is None:
                m.start_ev = env.event()
            yield m.start_ev
        t = getattr(m, when)
        if t > env.now:
            yield env.timeout(t - env.now)

    def _duration(self, a: S.Action, split: set[tuple[int, int]]) -> float:
        c = self.comp[a.stage]
        return compute_s(c, a, split) + c.overhead(self.schedule)

    def rank(self, r: int):
        env = self.env
        acts = self.sched[r]
        split = self.split[r]
        K = S.Kind
        rec = self.record
        last = self.n - 1
        pl = self.placement
        for step in range(self.steps):
            sends: list[Message] = []
            for a in acts:
                k = a.kind
                if k is K.F or k is K.B or k is K.W:
                    s = a.stage
                    if k is K.F and s > 0 and pl[s - 1] != r:
                        m = self._msg(step, True, a.mb, s - 1, s)
                    elif k is K.B and s < last and pl[s + 1] != r:
                        m = self._msg(step, False, a.mb, s + 1, s)
                    else:
                        m = None
                    if m is not None:
                        t0 = env.now
                        if self.rank_mode:
                            if not m.done:  # completes when its data is in and it heads the queue
                                m.done_ev = env.event()
                                yield m.done_ev
                        else:
                            yield from self._until(m, "arrived")
                        self.wait[r][step] += env.now - t0
                    t0 = env.now
                    if self.durations is not None:
                        dur = self.durations(r, step, str(a))
                    else:
                        dur = self._duration(a, split)
                    yield self._compute(r, dur)
                    self.busy[r][step] += env.now - t0
                    if k is K.F:
                        self.live[r] += 1
                        if self.live[r] > self.peak[r]:
                            self.peak[r] = self.live[r]
                    elif k is K.W or (a.stage, a.mb) not in split:
                        self.live[r] -= 1
                    if rec:
                        self.trace.append(TraceEvent(r, str(a), t0, env.now, step))
                elif k is K.SEND_F or k is K.SEND_B:
                    m = self._msg(step, k is K.SEND_F, a.mb, a.stage, _peer(a))
                    lag = 0.0 if self.send_lags is None else self.send_lags(r, step, str(a))
                    if lag > 0:
                        m.post_end = env.now + lag
                    self.post_send(m)
                    if lag > 0:
                        yield env.timeout(lag)
                    sends.append(m)
                elif k is K.RECV_F or k is K.RECV_B:
                    self.post_recv(self._msg(step, k is K.RECV_F, a.mb, _peer(a), a.stage))
                else:
                    raise ValueError(f"rank {r}: no handler for action kind {k!r}")
                self.actions += 1
            t0 = env.now
            for m in sends:
                yield from self._until(m, "sent")
            self.wait[r][step] += env.now - t0
            t0 = env.now
            opt = self.opt[r] if self.durations is None else self.durations(r, step, "OPT")
            if opt > 0:
                yield self._compute(r, opt)
            self.busy[r][step] += env.now - t0
            if rec:
                self.trace.append(TraceEvent(r, "OPT", t0, env.now, step))
            self.step_ends[r].append(env.now)

    def comm_trace(self) -> list[TraceEvent]:
        out = []
        for (step, src, dst, tag), m in self.msgs.items():
            mb, kind = divmod(tag, 2)
            skind, rkind = (S.Kind.SEND_F, S.Kind.RECV_F) if kind == 0 else (S.Kind.SEND_B, S.Kind.RECV_B)
            if m.send_post is not None:  # src, dst: stages; m.src, m.dst: their ranks
                posted = m.send_post if m.post_end is None else m.post_end  # as the runtime stamps it: on return
                out.append(TraceEvent(m.src, str(S.Action(src, skind, mb)), posted,
                                      m.sent if m.started else posted, step, m.nbytes))
            if m.recv_post is not None:
                out.append(TraceEvent(m.dst, str(S.Action(dst, rkind, mb)), m.recv_post,
                                      m.arrived if m.started else m.recv_post, step, m.nbytes))
        return out

    def run(self) -> None:
        for r in range(self.p):
            self.env.process(self.rank(r))
        self.env.run()
        stuck = [r for r in range(self.p) if len(self.step_ends[r]) < self.steps]
        if stuck:
            raise RuntimeError(f"schedule deadlocks: rank(s) {stuck} never finish step "
                               f"{min(len(self.step_ends[r]) for r in stuck)}")


def actions_per_step(num_stages: int, num_microbatches: int, stages_per_rank: int = 1, split: bool = False) -> int:
    """Actions of one step over all ranks: a forward and a backward (and a W with
    ``split``) per micro-batch on every (virtual) stage, and a send and a receive for
    each of the 2 messages per micro-batch between neighbouring stages (exact for the
    lowered gpipe, 1f1b, zbh1 and, with ``num_stages`` > 1, interleaved1f1b schedules)."""
    n = num_stages * stages_per_rank
    links = n - 1 if num_stages > 1 else 0
    return (3 if split else 2) * num_microbatches * n + 4 * num_microbatches * links


def check_size(num_stages: int, micro_batch_size: int, batch_size: int, steps: int, *,
               names: tuple[str, str, str] = ("micro-batch size", "batch size", "steps"),
               fixed_steps: bool = False, stages_per_rank: int = 1, split: bool = False) -> int:
    """Refuse sizes outside :mod:`pipesim.limits` and a simulation of more than
    ``MAX_SIM_ACTIONS`` actions; return the actions it will run. ``names`` are what the
    errors call the three sizes (the command's flags); ``fixed_steps``: the user cannot
    change the steps, so the error does not suggest it."""
    limits.MICRO_BATCH_SIZE.check(micro_batch_size, names[0])
    limits.BATCH_SIZE.check(batch_size, names[1])
    limits.STEPS.check(steps, names[2])
    if batch_size % micro_batch_size:
        raise ValueError(f"{names[1]} {batch_size} is not a multiple of {names[0]} {micro_batch_size}")
    m = batch_size // micro_batch_size
    per_step = actions_per_step(num_stages, m, stages_per_rank, split)
    n = per_step * steps
    if n > limits.MAX_SIM_ACTIONS:
        fewer = "" if fixed_steps else f"fewer {names[2]}, "
        raise ValueError(f"this simulation would run {num_stages} ranks x {m:,} micro-batches: "
                         f"{per_step:,} actions per step x {steps:,} steps = {n:,} actions; "
                         f"at most {limits.MAX_SIM_ACTIONS:,} are simulated (pipesim/limits.py): use {fewer}a smaller {names[1]} "
                         f"or a larger {names[0]}")
    return n


def check_grid_size(num_stages: int, micro_batch_sizes, batch_size: int, steps: int, cells_per_size: int, *,
                    names: tuple[str, str, str] = ("micro-batch sizes", "batch size", "steps"),
                    shapes=((1, False),)) -> int:
    """:func:`check_size` for each micro-batch size of a grid, and the whole grid's actions
    (``cells_per_size`` simulations per size and per shape) against ``MAX_SIM_ACTIONS``;
    returns them. ``shapes``: (stages per rank, split backward) of each schedule, when
    they differ; by default one shape of one stage per rank, so that ``cells_per_size``
    counts every schedule's cells."""
    sizes = list(micro_batch_sizes)
    shapes = list(shapes)
    total = sum(cells_per_size * check_size(num_stages, m, batch_size, steps, names=names, fixed_steps=True,
                                            stages_per_rank=v, split=split)
                for m in sizes for v, split in shapes)
    if total > limits.MAX_SIM_ACTIONS:
        raise ValueError(f"this grid would run {cells_per_size * len(sizes) * len(shapes)} simulations, "
                         f"{total:,} actions in all; "
                         f"at most {limits.MAX_SIM_ACTIONS:,} are simulated by one command (pipesim/limits.py): "
                         f"use fewer settings, schedules or {names[0]}, or a smaller {names[1]}")
    return total


def _check_slices(profile: Profile, mbs: int, lowered: list[list[S.Action]], placement: tuple[int, ...],
                  schedule: str | None, steps: int, actions: int) -> None:
    """Round-robin time slices cost an event each: refuse a host quantum so small against the
    compute that the slices alone would be a runaway simulation. The compute is what the
    engine will run (:func:`lowered_work`): every computation of the schedule with its
    overhead (zbh1's W too, 3m per rank; interleaved's 2mv), plus the optimizer steps."""
    host = profile.host
    if host is None or host.quantum_s is None or not math.isfinite(host.quantum_s) or host.placement is not None:
        return
    if profile.num_stages <= host.cores:
        return  # never more computations than cores: nobody is preempted
    work = steps * sum(solo + overhead for solo, _, overhead in lowered_work(profile, lowered, mbs, placement, schedule))
    slices = work / host.quantum_s
    if not slices + actions <= limits.MAX_SIM_ACTIONS:  # also refuses nan
        raise ValueError(f"profile host.quantum_s {host.quantum_s:g} s cuts {work:.3g} s of computation into about "
                         f"{slices:.3g} time slices; at most {limits.MAX_SIM_ACTIONS:,} actions and slices are "
                         "simulated (pipesim/limits.py): use a larger quantum_s or fewer steps")


def _largest_input(sim: _Sim) -> str:
    """The largest duration that went into a simulation, named: why its step time is absurd."""
    cands: list[tuple[float, str]] = []
    for s, c in enumerate(sim.comp):
        what = f"stage {s}" if sim.n == sim.p else f"virtual stage {s} (rank {sim.placement[s]})"
        cands += [(c.forward_s, f"{what} forward_s"), (c.backward_s, f"{what} backward_s"),
                  (c.overhead(sim.schedule), f"{what} overhead_s")]
    cands += [(t, f"stage {r} optimizer_s") for r, t in enumerate(sim.opt)]
    for (a, b), w in sim.wires.items():
        big = max(max(c.activation_bytes, c.gradient_bytes) for s, c in enumerate(sim.comp) if sim.placement[s] == a)
        cands += [(w.link.latency_s, f"link {a}->{b} latency (with the setting's delay)"),
                  (w.serialize_time(big), f"link {a}->{b} transfer of one message (bytes / bandwidth)")]
    v, what = max(cands, key=lambda c: c[0] if math.isfinite(c[0]) else math.inf)
    return f"the largest duration in it is {what}: {v:.3g} s (network setting {shorten(sim.setting.label)!r})"


def simulate(profile: Profile, schedule: str, micro_batch_size: int, batch_size: int,
             network: str | NetworkSetting = "default", *, transport: Transport | None = None,
             steps: int = 2, record: bool = True, lowered: list[list[S.Action]] | None = None,
             durations: Durations | None = None, stages_per_rank: int | None = None,
             placement: tuple[int, ...] | None = None, engine: str = "auto",
             send_lags: Durations | None = None) -> SimResult:
    """Simulate ``steps`` consecutive training steps and report the last one.

    The step time is rank 0's period over the last step (the time between the end of
    its previous step and the end of this one; the end of step 1 when ``steps == 1``),
    as the runtime measures it. Pass ``lowered`` to run a hand-made schedule, and
    ``durations`` to replay every computation with a given duration (see
    :mod:`pipesim.replay`; the host CPU model is then off, as measured durations already
    hold any sharing of cores). ``stages_per_rank`` is the v of interleaved schedules
    (:data:`pipesim.schedule.VIRTUAL`; default 2); a hand-made ``lowered`` schedule takes its
    ``placement`` (stage -> rank; default: read from its actions). ``send_lags`` (a replay's,
    :func:`pipesim.replay.durations_from_trace`): seconds each send's post holds its rank
    (rank, step, action such as ``"0SF1"``): the data enters the wire when it is posted, but
    its last bytes leave no earlier than the post's return, and arrive no earlier than that
    plus the link's latency; the rank moves on after the post returns.

    Sizes are checked against :mod:`pipesim.limits` before anything runs (a simulation
    of more than ``MAX_SIM_ACTIONS`` actions is refused), the network setting against
    the profile's stages (:meth:`NetworkSetting.check_stages`), and the result: a step
    time that is not finite and positive or exceeds ``MAX_STEP_TIME_S`` is a
    ``ValueError`` naming what made it so.

    ``engine``: ``"simpy"`` runs the event loop above (the reference); ``"fast"`` the exact
    evaluator of :mod:`pipesim.fastpath` (a ``ValueError`` where it does not apply);
    ``"auto"`` the fast one where it applies and agrees, else SimPy.
    """
    if engine not in fastpath.ENGINES:
        raise ValueError(f"engine must be one of {', '.join(fastpath.ENGINES)}, got {engine!r}")
    schedule = schedule.lower()   # "1F1B" is 1f1b, its own overhead included
    p = profile.num_stages
    if lowered is None:
        if schedule.lower() not in S.GENERATORS:  # an unknown name, refused before the sizes
            raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(S.GENERATORS)}")
        v = S.stages_per_rank_of(schedule, stages_per_rank) if schedule.lower() in S.VIRTUAL else 1
        check_size(p, micro_batch_size, batch_size, steps, stages_per_rank=v, split=schedule.lower() in S.SPLIT_BACKWARD)
    else:
        check_size(p, micro_batch_size, batch_size, 1)  # the ranges; the hand-made schedule's own size below
        limits.STEPS.check(steps, "steps")
        n = sum(len(r) for r in lowered) * steps
        if n > limits.MAX_SIM_ACTIONS:
            raise ValueError(f"this simulation would run {n:,} actions; at most {limits.MAX_SIM_ACTIONS:,} are "
                             "simulated (pipesim/limits.py)")
    m = batch_size // micro_batch_size
    setting = parse_network(network) if isinstance(network, str) else network
    setting.check_stages(p)
    transport = transport or Transport.for_profile(profile)
    if lowered is None:
        lowered, placement = fastpath.cached_build(schedule, p, m, transport.recv_ahead, stages_per_rank)
    else:
        if len(lowered) != p:
            raise ValueError(f"schedule has {len(lowered)} ranks but the profile has {p} stages")
        placement = S.placement_of(lowered) if placement is None else tuple(placement)
        S.validate(lowered, m, placement=placement)
    if durations is None:   # a replay runs without the host model: no time slices to count
        _check_slices(profile, micro_batch_size, lowered, placement, schedule, steps,
                      sum(len(r) for r in lowered) * steps)
    sim = _Sim(profile, lowered, micro_batch_size, setting, transport, steps, record, schedule, durations, placement,
               send_lags)
    used = "simpy"
    if engine != "simpy":
        why = fastpath.ineligible(sim, record, auto=engine == "auto") or fastpath.run(sim, CONTROL_BYTES)
        if why is None:
            used = "fast"
        elif engine == "fast":
            raise ValueError(f"engine='fast' does not apply to this run: {why}")
    if used == "simpy":
        sim.run()
    last = steps - 1

    def period(r: int) -> float:
        ends = sim.step_ends[r]
        return ends[last] - (ends[last - 1] if last > 0 else 0.0)

    step_time = period(0)
    if not (0 < step_time <= limits.MAX_STEP_TIME_S):  # also refuses nan and inf
        raise ValueError(f"simulated step time is {step_time!r} s, outside (0, {limits.MAX_STEP_TIME_S:g}] s "
                         f"(pipesim/limits.py MAX_STEP_TIME_S); {_largest_input(sim)}")
    ranks = []
    for r in range(p):
        c, w = sim.busy[r][last], sim.wait[r][last]
        ranks.append(RankStats(r, period(r), c, w, step_time - c - w, sim.peak[r]))
    bubble = 1.0 - sum(x.compute for x in ranks) / (p * step_time) if step_time > 0 else 0.0
    trace = sorted(sim.trace + sim.comm_trace(), key=lambda e: (e.start, e.rank)) if record else []
    return SimResult(step_time=step_time, ranks=ranks, bubble_fraction=bubble, trace=trace,
                     step_ends=sim.step_ends, schedule=schedule, micro_batch_size=micro_batch_size,
                     num_microbatches=m, network=str(setting), actions=sim.actions, engine=used,
                     shaped_cpu=tuple(x / steps for x in sim.charged) if sim.shaped else ())
