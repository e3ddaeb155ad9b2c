"""Schedule IR: per-rank ordered action lists, and the generators for GPipe, 1F1B,
interleaved 1F1B and ZB-H1.

A schedule is data. For each rank it is an ordered list of :class:`Action`. Both
executors -- the SimPy model in :mod:`pipesim.engine` and the torch runtime in
``runtime/`` -- walk the same lists, so their traces can be compared action by action.
The torch runtime executes all of them (:data:`RUNTIME_SCHEDULES`; :func:`check_runtime`
refuses, in one line, a schedule it would not run).

Stages and ranks. ``Action.stage`` is a (virtual) stage index ``0..S-1``; which rank
runs stage ``s`` is the *placement*, a tuple ``placement[s] = rank``. With one stage
per rank (gpipe, 1f1b, zbh1) the placement is the identity and stage == rank.
Interleaved 1F1B puts ``v`` stages on each of ``p`` ranks with the "loop" placement of
Megatron-LM and torch.distributed.pipelining: stage ``s`` on rank ``s % p``
(:func:`loop_placement`). The placement is explicit wherever it matters
(:func:`lower`, :func:`validate`, :func:`build_placed`); :func:`placement_of` reads it
back from a schedule, where each stage's actions sit on exactly one rank.

Action kinds and their short text form ``<stage><code><micro-batch>``:

=========  ====  ==============================================================
kind       code  meaning
=========  ====  ==============================================================
F          F     forward of one micro-batch (waits for its RECV_F, if any)
B          B     backward of one micro-batch (waits for its RECV_B, if any); when the
                 schedule has a W for the same stage and micro-batch, B is the
                 input-gradient half only (what the previous stage needs)
W          W     weight-gradient half of a split backward; needs only its own B
SEND_F     SF    post the send of the activation to stage + 1 (non-blocking)
RECV_F     RF    post the receive of the activation from stage - 1 (non-blocking)
SEND_B     SB    post the send of the input gradient to stage - 1 (non-blocking)
RECV_B     RB    post the receive of the output gradient from stage + 1
=========  ====  ==============================================================

So ``"1RF3"`` is "stage 1 posts the receive of micro-batch 3's activation".
Posting is non-blocking; a compute action waits for the receive it consumes, and
a rank waits for all its outstanding sends at the end of the step. Neighbouring
stages on the same rank (possible only with a non-loop placement, or with ``p = 1``)
exchange nothing: :func:`lower` places no send or receive between them, and the
validator checks instead that the producer runs earlier on that rank.

The generators (:func:`gpipe`, :func:`one_f_one_b`) produce compute-only orders;
:func:`lower` places the communication actions. Where a receive is posted
(``recv_ahead``) is part of the lowering, because under a rendezvous transport it
decides how much of the link latency is hidden.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum


class Kind(str, Enum):
    F = "F"
    B = "B"
    W = "W"
    SEND_F = "SF"
    RECV_F = "RF"
    SEND_B = "SB"
    RECV_B = "RB"

    @property
    def is_compute(self) -> bool:
        return self in (Kind.F, Kind.B, Kind.W)

    @property
    def is_send(self) -> bool:
        return self in (Kind.SEND_F, Kind.SEND_B)

    @property
    def is_recv(self) -> bool:
        return self in (Kind.RECV_F, Kind.RECV_B)


_TEXT = re.compile(r"^(\d+)(SF|RF|SB|RB|F|B|W)(\d+)$")


@dataclass(frozen=True, order=True)
class Action:
    """One step of a rank's program. ``stage`` is the (virtual) stage; the placement
    says which rank runs it (the identity with one stage per rank)."""

    stage: int
    kind: Kind
    mb: int

    def __post_init__(self) -> None:
        if not isinstance(self.kind, Kind):
            object.__setattr__(self, "kind", Kind(self.kind))
        if self.stage < 0:
            raise ValueError(f"stage must be >= 0, got {self.stage}")
        if self.mb < 0:
            raise ValueError(f"mb must be >= 0, got {self.mb}")

    @property
    def peer(self) -> int | None:
        """The stage at the other end of a communication action (None for compute)."""
        if self.kind in (Kind.SEND_F, Kind.RECV_B):
            return self.stage + 1
        if self.kind in (Kind.SEND_B, Kind.RECV_F):
            return self.stage - 1
        return None

    @property
    def tag(self) -> int:
        """Message tag shared by a send and its matching receive, with one stage per rank
        (:func:`message_tag` gives the tag under any placement; the same number here)."""
        return 2 * self.mb + (0 if self.kind in (Kind.SEND_F, Kind.RECV_F, Kind.F) else 1)

    def __str__(self) -> str:
        return f"{self.stage}{self.kind.value}{self.mb}"

    @classmethod
    def parse(cls, text: str) -> Action:
        m = _TEXT.match(text.strip())
        if not m:
            raise ValueError(
                f"cannot parse action {text!r}: expected <stage><F|B|W|SF|RF|SB|RB><micro-batch>, e.g. '0F3'"
            )
        return cls(int(m.group(1)), Kind(m.group(2)), int(m.group(3)))


# ----------------------------------------------------------------------------- generators


def _check_shape(num_stages: int, num_microbatches: int) -> None:
    if not isinstance(num_stages, int) or num_stages < 1:
        raise ValueError(f"num_stages must be a positive integer, got {num_stages!r}")
    if not isinstance(num_microbatches, int) or num_microbatches < 1:
        raise ValueError(f"num_microbatches must be a positive integer, got {num_microbatches!r}")


def gpipe(num_stages: int, num_microbatches: int) -> list[list[Action]]:
    """GPipe: all forwards, then all backwards (in the same micro-batch order)."""
    _check_shape(num_stages, num_microbatches)
    m = num_microbatches
    return [
        [Action(s, Kind.F, i) for i in range(m)] + [Action(s, Kind.B, i) for i in range(m)]
        for s in range(num_stages)
    ]


def one_f_one_b(num_stages: int, num_microbatches: int) -> list[list[Action]]:
    """1F1B as in PipeDream-flush / Megatron-LM.

    Rank r runs ``min(p - r - 1, m)`` warm-up forwards, then alternates one forward
    and one backward while forwards remain, then drains the remaining backwards.
    At most ``min(p - r, m)`` activations are alive on rank r at any time.
    """
    _check_shape(num_stages, num_microbatches)
    p, m = num_stages, num_microbatches
    out = []
    for r in range(p):
        warmup = min(p - r - 1, m)
        acts = [Action(r, Kind.F, i) for i in range(warmup)]
        f, b = warmup, 0
        while f < m:
            acts.append(Action(r, Kind.F, f))
            f += 1
            acts.append(Action(r, Kind.B, b))
            b += 1
        acts += [Action(r, Kind.B, i) for i in range(b, m)]
        out.append(acts)
    return out


def zbh1(num_stages: int, num_microbatches: int) -> list[list[Action]]:
    """ZB-H1 (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024, section 3.1).

    1F1B with the backward split into B (input gradient, sent on at once) and W
    (weight gradient, needed by nobody else). Rank r runs 1F1B's ``min(p - r - 1, m)``
    warm-up forwards, then ``F B`` pairs, and keeps its W passes ``r`` behind its
    B passes (rank r runs W of micro-batch ``k - r`` after B of micro-batch ``k``);
    the deferred W passes fill the cool-down, where 1F1B waits for gradients. Every rank
    holds at most ``min(p, m)`` activations (forward done, W not), which is rank 0's
    peak under 1F1B: the peak activation memory of 1F1B.

    torch.distributed.pipelining has no plain ZB-H1 class, hence the name ``zbh1``; its
    ``ScheduleInterleavedZeroBubble`` (the several-stages-per-rank variant) computes this
    same order with one stage per rank (``tests/test_schedule_torch.py``), though torch
    refuses micro-batch counts that ``max(1, m // p)`` does not divide and this does not.
    """
    _check_shape(num_stages, num_microbatches)
    p, m = num_stages, num_microbatches
    out = []
    for r in range(p):
        warmup = min(p - r - 1, m)
        acts = [Action(r, Kind.F, i) for i in range(warmup)]
        pending: list[int] = []  # micro-batches whose B ran and W did not
        f = warmup
        for b in range(m):
            if f < m:
                acts.append(Action(r, Kind.F, f))
                f += 1
            acts.append(Action(r, Kind.B, b))
            pending.append(b)
            if len(pending) > r:
                acts.append(Action(r, Kind.W, pending.pop(0)))
        acts += [Action(r, Kind.W, k) for k in pending]
        out.append(acts)
    return out


def interleaved_1f1b(num_ranks: int, num_microbatches: int, stages_per_rank: int = 2) -> list[list[Action]]:
    """Interleaved 1F1B (Narayanan et al., SC'21): torch.distributed.pipelining's
    ``ScheduleInterleaved1F1B`` order (``tests/test_schedule_torch.py``), also the order
    of Megatron-LM's interleaved schedule for m a multiple of p above p.
    ``v = stages_per_rank`` stages per rank, stage s on rank ``s % p``
    (:func:`loop_placement`).

    Micro-batches go through the chunks of a rank in rounds of ``g`` (``g = m / k`` with
    ``k = max(1, m // p)`` rounds: ``g = p`` when p divides m): the j-th forward of rank r
    is on its chunk ``(j // g) % v``, and the j-th backward after the warm-up on chunk
    ``v - 1 - (j // g) % v``; each stage takes its micro-batches in order. Rank r runs
    ``min((v - 1) g + 2 (p - 1 - r), m v)`` warm-up forwards, then alternates one forward
    and one backward, then drains the backwards. torch refuses a micro-batch count that
    ``k`` does not divide (e.g. 5 with 2 ranks), and so does this generator.
    (Megatron-LM needs m to be a multiple of p, and with ``m == p`` runs all forwards
    first; torch, and this generator, do not.) ``v = 1`` is :func:`one_f_one_b`.
    """
    _check_shape(num_ranks, num_microbatches)
    p, m, v = num_ranks, num_microbatches, stages_per_rank
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"stages_per_rank must be a positive integer, got {v!r}")
    if v == 1:
        return one_f_one_b(p, m)
    _check_rounds(p, m)
    rounds = max(1, m // p)
    g = m // rounds  # micro-batches per round
    total = m * v
    out = []
    for r in range(p):
        warmup = min((v - 1) * g + 2 * (p - 1 - r), total)
        nxt = {Kind.F: [0] * v, Kind.B: [0] * v}  # next micro-batch of each chunk
        acts: list[Action] = []
        for j in range(total + warmup):  # j < warmup: forward; then forward and backward; then backward
            for kind, on in ((Kind.F, j < total), (Kind.B, j >= warmup)):
                if on:
                    c = (j // g) % v if kind is Kind.F else v - 1 - ((j - warmup) // g) % v
                    acts.append(Action(c * p + r, kind, nxt[kind][c]))
                    nxt[kind][c] += 1
        out.append(acts)
    return out


def _check_rounds(p: int, m: int) -> None:
    rounds = max(1, m // p)
    if m % rounds:
        raise ValueError(f"interleaved1f1b splits the micro-batches into max(1, m // p) equal rounds, as torch's "
                         f"ScheduleInterleaved1F1B does: {m} micro-batches on {p} ranks do not split into {rounds} "
                         "(a multiple of the ranks always does)")


GENERATORS: dict[str, Callable[..., list[list[Action]]]] = {"gpipe": gpipe, "1f1b": one_f_one_b, "interleaved1f1b": interleaved_1f1b, "zbh1": zbh1}
"""Every schedule by name (the simulator runs all of them)."""
VIRTUAL = ("interleaved1f1b",)
"""Schedules that take ``stages_per_rank`` (several stages per rank)."""
SPLIT_BACKWARD = ("zbh1",)
"""Schedules that split the backward into B and W."""
RUNTIME_SCHEDULES = ("gpipe", "1f1b", "interleaved1f1b", "zbh1")
"""What the torch runtime (``runtime/``) executes, and so what run, validate, demo and sweep take."""


def check_runtime(name: str) -> None:
    """Refuse, in one line, a schedule the runtime does not execute."""
    if name.lower() not in RUNTIME_SCHEDULES:
        raise ValueError(f"schedule {name!r} is simulated only; the runtime runs {', '.join(RUNTIME_SCHEDULES)}")


DEFAULT_STAGES_PER_RANK = 2
"""Stages per rank of a :data:`VIRTUAL` schedule when none is given."""


def stages_per_rank_of(name: str, stages_per_rank: int | None = None) -> int:
    """``stages_per_rank`` as given, else the schedule's default (2 for :data:`VIRTUAL`, else 1)."""
    if stages_per_rank is None:
        return DEFAULT_STAGES_PER_RANK if name.lower() in VIRTUAL else 1
    return stages_per_rank


def check_shape(name: str, num_ranks: int, num_microbatches: int, stages_per_rank: int | None = None) -> None:
    """Refuse, without generating it, what :func:`generate` would refuse (one line)."""
    key = name.lower()
    if key not in GENERATORS:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(GENERATORS)}")
    _check_shape(num_ranks, num_microbatches)
    v = stages_per_rank_of(key, stages_per_rank)
    _check_v(key, v)
    if key in VIRTUAL and v > 1:
        _check_rounds(num_ranks, num_microbatches)


def _check_v(name: str, stages_per_rank: int) -> None:
    if not isinstance(stages_per_rank, int) or isinstance(stages_per_rank, bool) or stages_per_rank < 1:
        raise ValueError(f"stages_per_rank must be a positive integer, got {stages_per_rank!r}")
    if stages_per_rank != 1 and name not in VIRTUAL:
        raise ValueError(f"schedule {name!r} runs one stage per rank; stages_per_rank {stages_per_rank} "
                         f"needs {' or '.join(VIRTUAL)}")


def generate(name: str, num_stages: int, num_microbatches: int,
             stages_per_rank: int | None = None) -> list[list[Action]]:
    """The compute-only schedule ``name`` on ``num_stages`` ranks (``stages_per_rank``:
    virtual stages per rank, for :data:`VIRTUAL` schedules only, default
    :data:`DEFAULT_STAGES_PER_RANK`; interleaved1f1b with 1 is 1f1b)."""
    key = name.lower()
    try:
        gen = GENERATORS[key]
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(GENERATORS)}") from None
    v = stages_per_rank_of(key, stages_per_rank)
    if key in VIRTUAL:
        return interleaved_1f1b(num_stages, num_microbatches, v)
    _check_v(key, v)
    return gen(num_stages, num_microbatches)


# ----------------------------------------------------------------------------- placement


def loop_placement(num_ranks: int, stages_per_rank: int = 1) -> tuple[int, ...]:
    """Stage s on rank ``s % p``: Megatron-LM's and torch's "loop" placement (identity for v = 1)."""
    return tuple(s % num_ranks for s in range(num_ranks * stages_per_rank))


def placement_for(name: str, num_ranks: int, stages_per_rank: int | None = None) -> tuple[int, ...]:
    """The placement schedule ``name`` uses."""
    return loop_placement(num_ranks, stages_per_rank_of(name, stages_per_rank) if name.lower() in VIRTUAL else 1)


def placement_of(schedule: Sequence[Sequence[Action]]) -> tuple[int, ...]:
    """Stage -> rank as the schedule's actions say (each stage on one rank, stages 0..S-1)."""
    where: dict[int, int] = {}
    for r, acts in enumerate(schedule):
        for i, a in enumerate(acts):
            if not isinstance(a, Action):
                raise ValueError(f"rank {r}, position {i}: not an Action: {a!r}")
            if where.setdefault(a.stage, r) != r:
                raise ValueError(f"rank {r}, position {i} ({a}): stage {a.stage} also runs on rank {where[a.stage]}")
    n = max(where, default=-1) + 1
    missing = [s for s in range(n) if s not in where]
    if missing:
        raise ValueError(f"schedule has no actions for stage(s) {missing[:8]} (stages 0..{n - 1})")
    return tuple(where[s] for s in range(n))


def _check_placement(placement: Sequence[int], num_ranks: int) -> tuple[int, ...]:
    pl = tuple(placement)
    if not pl:
        raise ValueError("placement is empty: give the rank of each stage")
    for s, r in enumerate(pl):
        if not isinstance(r, int) or not 0 <= r < num_ranks:
            raise ValueError(f"placement[{s}] must be a rank 0..{num_ranks - 1}, got {r!r}")
    idle = sorted(set(range(num_ranks)) - set(pl))
    if idle:
        raise ValueError(f"placement puts no stage on rank(s) {idle[:8]}")
    return pl


def message_tag(stage: int, mb: int, forward: bool, placement: Sequence[int]) -> int:
    """Tag of the message between ``stage`` and its neighbour (``stage + 1`` for an
    activation, ``stage - 1`` for a gradient): unique per ordered rank pair, micro-batch
    and stage under any placement, and :attr:`Action.tag` with one stage per rank.
    ``2 (mb v + k) + d``: d is 0 for activations and 1 for gradients, k the position of
    the sending stage among the stages of its rank, v the most stages on one rank."""
    counts: dict[int, int] = {}
    for r in placement:
        counts[r] = counts.get(r, 0) + 1
    v = max(counts.values())
    k = sum(1 for t in range(stage) if placement[t] == placement[stage])
    return 2 * (mb * v + k) + (0 if forward else 1)


# ----------------------------------------------------------------------------- lowering


def lower(compute: Sequence[Sequence[Action]], recv_ahead: int | None = None,
          placement: Sequence[int] | None = None) -> list[list[Action]]:
    """Insert communication actions into a compute-only schedule.

    * ``SEND_F`` right after each ``F`` (except on the last stage), ``SEND_B`` right
      after each ``B`` (except on the first stage); none after ``W``.
    * The receive a compute action consumes is posted ``recv_ahead`` compute actions
      earlier on the same rank (0: just before it). ``None`` posts every receive of
      the step at its start, in the order they are consumed, so that the sender never
      waits for the receiver to be ready (this is the default, and what the CPU
      runtime does).
    * ``placement`` (stage -> rank; default: read from the schedule, the identity with
      one stage per rank): neighbouring stages on the same rank exchange nothing.
    """
    if recv_ahead is not None and recv_ahead < 0:
        raise ValueError(f"recv_ahead must be >= 0 or None, got {recv_ahead}")
    pl = placement_of(compute) if placement is None else _check_placement(placement, len(compute))
    last = len(pl) - 1
    out: list[list[Action]] = []
    for r, acts in enumerate(compute):
        comps = [a for a in acts if a.kind.is_compute]
        if len(comps) != len(acts):
            raise ValueError(f"rank {r}: lower() takes a compute-only schedule (F, B and W actions)")
        recvs: list[list[Action]] = [[] for _ in comps]  # receives to post before compute j
        upfront: list[Action] = []
        for j, a in enumerate(comps):
            s = a.stage
            need = None
            if a.kind is Kind.F and s > 0 and pl[s - 1] != r:
                need = Action(s, Kind.RECV_F, a.mb)
            elif a.kind is Kind.B and s < last and pl[s + 1] != r:
                need = Action(s, Kind.RECV_B, a.mb)
            if need is None:
                continue
            if recv_ahead is None:
                upfront.append(need)
            else:
                recvs[max(0, j - recv_ahead)].append(need)
        lowered = list(upfront)
        for j, a in enumerate(comps):
            s = a.stage
            lowered += recvs[j]
            lowered.append(a)
            if a.kind is Kind.F and s < last and pl[s + 1] != r:
                lowered.append(Action(s, Kind.SEND_F, a.mb))
            elif a.kind is Kind.B and s > 0 and pl[s - 1] != r:
                lowered.append(Action(s, Kind.SEND_B, a.mb))
        out.append(lowered)
    return out


def build(name: str, num_stages: int, num_microbatches: int, recv_ahead: int | None = None,
          stages_per_rank: int | None = None) -> list[list[Action]]:
    """Generate, lower and validate a schedule in one call (``num_stages``: ranks)."""
    return build_placed(name, num_stages, num_microbatches, recv_ahead, stages_per_rank)[0]


def build_placed(name: str, num_ranks: int, num_microbatches: int, recv_ahead: int | None = None,
                 stages_per_rank: int | None = None) -> tuple[list[list[Action]], tuple[int, ...]]:
    """:func:`build`, and the placement (stage -> rank) it used."""
    pl = placement_for(name, num_ranks, stages_per_rank)
    sched = lower(generate(name, num_ranks, num_microbatches, stages_per_rank), recv_ahead=recv_ahead, placement=pl)
    validate(sched, num_microbatches, placement=pl)
    return sched, pl


# ----------------------------------------------------------------------------- validation


def validate(schedule: Sequence[Sequence[Action]], num_microbatches: int,
             placement: Sequence[int] | None = None) -> None:
    """Raise ValueError naming the rank and position of the first malformed action.

    ``placement`` (stage -> rank) defaults to the identity over the schedule's ranks.
    Checks the placement (a rank per stage, every rank runs a stage), then per rank:
    every action belongs to a stage placed on that rank; micro-batches are in range;
    each F and B appears exactly once per stage and micro-batch, B after F; W (split
    backward) at most once, after its own B, and for all micro-batches of a stage or
    none; each needed receive is posted exactly once and before the compute that
    consumes it; each send comes after the compute that produces it and goes to a
    stage on another rank; a forward (backward) whose producer stage is on the same
    rank comes after that producer's forward (backward); no action is repeated.

    These per-rank checks already match every send with a receive: a SEND_F from
    stage s is for a micro-batch whose F stage s + 1 must run on its rank, and that F
    must be preceded by its RECV_F (the same for SEND_B and RECV_B), so no cross-rank
    check is needed.
    """
    p, m = len(schedule), num_microbatches
    if p < 1:
        raise ValueError("schedule has no ranks")
    pl = tuple(range(p)) if placement is None else _check_placement(placement, p)
    n = len(pl)

    def where(r: int, i: int, a: Action) -> str:
        return f"rank {r}, position {i} ({a})"

    def remote(s: int, r: int) -> bool:  # stage s exists and runs on another rank than r
        return 0 <= s < n and pl[s] != r

    # keys are (stage, kind, mb) tuples: hashing them is several times faster than hashing
    # Action dataclasses, and a 64 x 1024 schedule checks about 1.5 million of them
    F, B, W, SF, SB, RF, RB = Kind.F, Kind.B, Kind.W, Kind.SEND_F, Kind.SEND_B, Kind.RECV_F, Kind.RECV_B
    to_peer = {SF: 1, RB: 1, SB: -1, RF: -1}
    for r, acts in enumerate(schedule):
        seen: dict[tuple[int, Kind, int], int] = {}
        for i, a in enumerate(acts):
            if not isinstance(a, Action):
                raise ValueError(f"rank {r}, position {i}: not an Action: {a!r}")
            s, k, mb = a.stage, a.kind, a.mb
            if s >= n or pl[s] != r:
                on = f" (placement: rank {pl[s]})" if s < n and placement is not None else ""
                raise ValueError(f"{where(r, i, a)}: action of stage {s} on rank {r}{on}")
            if mb >= m:
                raise ValueError(f"{where(r, i, a)}: micro-batch {mb} out of range 0..{m - 1}")
            key = (s, k, mb)
            if key in seen:
                raise ValueError(f"{where(r, i, a)}: repeats position {seen[key]}")
            d = to_peer.get(k)
            if d is not None:
                peer = s + d
                if not 0 <= peer < n:
                    raise ValueError(f"{where(r, i, a)}: peer stage {peer} does not exist (stages 0..{n - 1})")
                if pl[peer] == r:
                    raise ValueError(f"{where(r, i, a)}: peer stage {peer} is on the same rank (nothing to communicate)")
                if k is SF and (s, F, mb) not in seen:
                    raise ValueError(f"{where(r, i, a)}: sends an activation not yet computed")
                if k is SB and (s, B, mb) not in seen:
                    raise ValueError(f"{where(r, i, a)}: sends a gradient not yet computed")
            elif k is F:
                if remote(s - 1, r) and (s, RF, mb) not in seen:
                    raise ValueError(f"{where(r, i, a)}: forward before its activation receive is posted")
                if s > 0 and pl[s - 1] == r and (s - 1, F, mb) not in seen:
                    raise ValueError(f"{where(r, i, a)}: forward before stage {s - 1}'s forward on the same rank")
            elif k is B:
                if (s, F, mb) not in seen:
                    raise ValueError(f"{where(r, i, a)}: backward before its forward")
                if remote(s + 1, r) and (s, RB, mb) not in seen:
                    raise ValueError(f"{where(r, i, a)}: backward before its gradient receive is posted")
                if s < n - 1 and pl[s + 1] == r and (s + 1, B, mb) not in seen:
                    raise ValueError(f"{where(r, i, a)}: backward before stage {s + 1}'s backward on the same rank")
            elif k is W and (s, B, mb) not in seen:
                raise ValueError(f"{where(r, i, a)}: weight gradient before its backward")
            seen[key] = i
        for s in (t for t in range(n) if pl[t] == r):
            for kind in (F, B):
                missing = [i for i in range(m) if (s, kind, i) not in seen]
                if missing:
                    what = kind.name if n == p and placement is None else f"{kind.name} of stage {s}"
                    raise ValueError(f"rank {r}: no {what} for micro-batch(es) {missing[:8]}")
            ws = [i for i in range(m) if (s, W, i) in seen]
            if ws and len(ws) != m:
                missing = [i for i in range(m) if (s, W, i) not in seen]
                raise ValueError(f"rank {r}: stage {s} splits the backward (W) but has no W for micro-batch(es) "
                                 f"{missing[:8]}")
            for kind, needed in ((SF, remote(s + 1, r)), (SB, remote(s - 1, r))):
                missing = [i for i in range(m) if needed and (s, kind, i) not in seen]
                if missing:
                    what = kind.name if n == p and placement is None else f"{kind.name} of stage {s}"
                    raise ValueError(f"rank {r}: no {what} for micro-batch(es) {missing[:8]}")


# ----------------------------------------------------------------------------- text form


def to_text(schedule: Iterable[Iterable[Action]]) -> str:
    """One line per rank: ``rank 0: 0F0 0SF0 0F1 ...``."""
    return "\n".join(f"rank {r}: " + " ".join(str(a) for a in acts) for r, acts in enumerate(schedule)) + "\n"


def from_text(text: str) -> list[list[Action]]:
    out: list[list[Action]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        head, _, body = line.partition(":")
        if not head.startswith("rank ") or not _:
            raise ValueError(f"line {lineno}: expected 'rank N: actions...', got {line[:40]!r}")
        r = int(head[5:])
        if r != len(out):
            raise ValueError(f"line {lineno}: expected rank {len(out)}, got rank {r}")
        try:
            out.append([Action.parse(t) for t in body.split()])
        except ValueError as e:
            raise ValueError(f"line {lineno}: {e}") from None
    return out


def split_backward(acts: Iterable[Action]) -> set[tuple[int, int]]:
    """The (stage, micro-batch) pairs whose backward is split (a W action among ``acts``)."""
    return {(a.stage, a.mb) for a in acts if a.kind is Kind.W}


def peak_inflight(compute_or_lowered: Sequence[Sequence[Action]]) -> list[int]:
    """Largest number of activations held (forward done, backward -- or its W, when the
    backward is split -- not) per rank, over all its stages."""
    peaks = []
    for acts in compute_or_lowered:
        split = split_backward(acts)
        live = peak = 0
        for a in acts:
            if a.kind is Kind.F:
                live += 1
                peak = max(peak, live)
            elif (a.kind is Kind.B and (a.stage, a.mb) not in split) or a.kind is Kind.W:
                live -= 1
        peaks.append(peak)
    return peaks


def stages_of(cell: dict) -> int:
    """The virtual stages per rank a cell ran with: its ``stages_per_rank``, else the command
    line's default for an interleaved schedule (:data:`VIRTUAL`), else 1."""
    if cell["schedule"] not in VIRTUAL:
        return 1
    return int(cell.get("stages_per_rank") or DEFAULT_STAGES_PER_RANK)


def schedule_label(cell: dict) -> str:
    """The schedule as a table shows it: an interleaved one with its stages per rank,
    ``interleaved1f1b (v 2)``, so that two cells of different v are told apart; the others
    as named."""
    s = cell["schedule"]
    return f"{s} (v {stages_of(cell)})" if s in VIRTUAL else s


def cell_groups(cells: Sequence[dict]) -> dict[str, list[dict]]:
    """Measured or simulated cells (dicts with ``schedule`` and, for interleaved ones,
    ``stages_per_rank``) grouped for a MAPE line or a figure: per schedule, and per stages
    per rank as well where one schedule's cells ran several (``interleaved1f1b (v 2)``,
    ``interleaved1f1b (v 3)``)."""
    groups: dict[str, list[dict]] = {}
    for s in dict.fromkeys(c["schedule"] for c in cells):
        mine = [c for c in cells if c["schedule"] == s]
        if len({stages_of(c) for c in mine}) > 1:
            for c in mine:
                groups.setdefault(schedule_label(c), []).append(c)
        else:
            groups[s] = mine
    return groups
