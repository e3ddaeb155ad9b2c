"""Schedule IR: per-rank ordered action lists, and the generators for GPipe and 1F1B.

A schedule is data. For each rank (one pipeline stage per rank) it is an ordered
list of :class:`Action`. Both executors -- the SimPy model in :mod:`pipesim.engine`
and the torch runtime in ``runtime/`` -- walk the same lists, so their traces can be
compared action by action.

Action kinds and their short text form ``<stage><code><micro-batch>``:

=========  ====  ==============================================================
kind       code  meaning
=========  ====  ==============================================================
F          F     forward of one micro-batch (waits for its RECV_F, if any)
B          B     backward of one micro-batch (waits for its RECV_B, if any)
SEND_F     SF    post the send of the activation to stage + 1 (non-blocking)
RECV_F     RF    post the receive of the activation from stage - 1 (non-blocking)
SEND_B     SB    post the send of the input gradient to stage - 1 (non-blocking)
RECV_B     RB    post the receive of the output gradient from stage + 1
=========  ====  ==============================================================

So ``"1RF3"`` is "stage 1 posts the receive of micro-batch 3's activation".
Posting is non-blocking; a compute action waits for the receive it consumes, and
a rank waits for all its outstanding sends at the end of the step.

The generators (:func:`gpipe`, :func:`one_f_one_b`) produce compute-only orders;
:func:`lower` places the communication actions. Where a receive is posted
(``recv_ahead``) is part of the lowering, because under a rendezvous transport it
decides how much of the link latency is hidden.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum


class Kind(str, Enum):
    F = "F"
    B = "B"
    SEND_F = "SF"
    RECV_F = "RF"
    SEND_B = "SB"
    RECV_B = "RB"

    @property
    def is_compute(self) -> bool:
        return self in (Kind.F, Kind.B)

    @property
    def is_send(self) -> bool:
        return self in (Kind.SEND_F, Kind.SEND_B)

    @property
    def is_recv(self) -> bool:
        return self in (Kind.RECV_F, Kind.RECV_B)


_TEXT = re.compile(r"^(\d+)(SF|RF|SB|RB|F|B)(\d+)$")


@dataclass(frozen=True, order=True)
class Action:
    """One step of a rank's program. ``stage`` is also the rank that runs it."""

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
        """Message tag shared by a send and its matching receive."""
        return 2 * self.mb + (0 if self.kind in (Kind.SEND_F, Kind.RECV_F, Kind.F) else 1)

    def __str__(self) -> str:
        return f"{self.stage}{self.kind.value}{self.mb}"

    @classmethod
    def parse(cls, text: str) -> Action:
        m = _TEXT.match(text.strip())
        if not m:
            raise ValueError(
                f"cannot parse action {text!r}: expected <stage><F|B|SF|RF|SB|RB><micro-batch>, e.g. '0F3'"
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


GENERATORS = {"gpipe": gpipe, "1f1b": one_f_one_b}


def generate(name: str, num_stages: int, num_microbatches: int) -> list[list[Action]]:
    try:
        gen = GENERATORS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(GENERATORS)}") from None
    return gen(num_stages, num_microbatches)


# ----------------------------------------------------------------------------- lowering


def lower(compute: Sequence[Sequence[Action]], recv_ahead: int | None = None) -> list[list[Action]]:
    """Insert communication actions into a compute-only schedule.

    * ``SEND_F`` right after each ``F`` (except on the last stage), ``SEND_B`` right
      after each ``B`` (except on the first stage).
    * The receive a compute action consumes is posted ``recv_ahead`` compute actions
      earlier on the same rank (0: just before it). ``None`` posts every receive of
      the step at its start, in the order they are consumed, so that the sender never
      waits for the receiver to be ready (this is the default, and what the CPU
      runtime does).
    """
    if recv_ahead is not None and recv_ahead < 0:
        raise ValueError(f"recv_ahead must be >= 0 or None, got {recv_ahead}")
    p = len(compute)
    out: list[list[Action]] = []
    for r, acts in enumerate(compute):
        comps = [a for a in acts if a.kind.is_compute]
        if len(comps) != len(acts):
            raise ValueError(f"rank {r}: lower() takes a compute-only schedule (F and B actions)")
        recvs: list[list[Action]] = [[] for _ in comps]  # receives to post before compute j
        upfront: list[Action] = []
        for j, a in enumerate(comps):
            need = None
            if a.kind is Kind.F and r > 0:
                need = Action(r, Kind.RECV_F, a.mb)
            elif a.kind is Kind.B and r < p - 1:
                need = Action(r, Kind.RECV_B, a.mb)
            if need is None:
                continue
            if recv_ahead is None:
                upfront.append(need)
            else:
                recvs[max(0, j - recv_ahead)].append(need)
        lowered = list(upfront)
        for j, a in enumerate(comps):
            lowered += recvs[j]
            lowered.append(a)
            if a.kind is Kind.F and r < p - 1:
                lowered.append(Action(r, Kind.SEND_F, a.mb))
            elif a.kind is Kind.B and r > 0:
                lowered.append(Action(r, Kind.SEND_B, a.mb))
        out.append(lowered)
    return out


def build(name: str, num_stages: int, num_microbatches: int, recv_ahead: int | None = None) -> list[list[Action]]:
    """Generate, lower and validate a schedule in one call."""
    sched = lower(generate(name, num_stages, num_microbatches), recv_ahead=recv_ahead)
    validate(sched, num_microbatches)
    return sched


# ----------------------------------------------------------------------------- validation


def validate(schedule: Sequence[Sequence[Action]], num_microbatches: int) -> None:
    """Raise ValueError naming the rank and position of the first malformed action.

    Checks, per rank: every action belongs to the rank's stage; micro-batches are in
    range; each F and B appears exactly once per micro-batch, B after F; each needed
    receive is posted exactly once and before the compute that consumes it; each
    send comes after the compute that produces it; no action is repeated.

    These per-rank checks already match every send with a receive: a SEND_F from
    rank r is for a micro-batch whose F rank r + 1 must run, and that F must be preceded
    by its RECV_F (the same for SEND_B and RECV_B), so no cross-rank check is needed.
    """
    p, m = len(schedule), num_microbatches
    if p < 1:
        raise ValueError("schedule has no ranks")

    def where(r: int, i: int, a: Action) -> str:
        return f"rank {r}, position {i} ({a})"

    for r, acts in enumerate(schedule):
        seen: dict[Action, int] = {}
        for i, a in enumerate(acts):
            if not isinstance(a, Action):
                raise ValueError(f"rank {r}, position {i}: not an Action: {a!r}")
            if a.stage != r:
                raise ValueError(f"{where(r, i, a)}: action of stage {a.stage} on rank {r}")
            if a.mb >= m:
                raise ValueError(f"{where(r, i, a)}: micro-batch {a.mb} out of range 0..{m - 1}")
            if a in seen:
                raise ValueError(f"{where(r, i, a)}: repeats position {seen[a]}")
            peer = a.peer
            if peer is not None and not 0 <= peer < p:
                raise ValueError(f"{where(r, i, a)}: peer stage {peer} does not exist (stages 0..{p - 1})")
            if a.kind is Kind.B and Action(r, Kind.F, a.mb) not in seen:
                raise ValueError(f"{where(r, i, a)}: backward before its forward")
            if a.kind is Kind.SEND_F and Action(r, Kind.F, a.mb) not in seen:
                raise ValueError(f"{where(r, i, a)}: sends an activation not yet computed")
            if a.kind is Kind.SEND_B and Action(r, Kind.B, a.mb) not in seen:
                raise ValueError(f"{where(r, i, a)}: sends a gradient not yet computed")
            if a.kind is Kind.F and r > 0 and Action(r, Kind.RECV_F, a.mb) not in seen:
                raise ValueError(f"{where(r, i, a)}: forward before its activation receive is posted")
            if a.kind is Kind.B and r < p - 1 and Action(r, Kind.RECV_B, a.mb) not in seen:
                raise ValueError(f"{where(r, i, a)}: backward before its gradient receive is posted")
            seen[a] = i
        for kind in (Kind.F, Kind.B):
            missing = [i for i in range(m) if Action(r, kind, i) not in seen]
            if missing:
                raise ValueError(f"rank {r}: no {kind.name} for micro-batch(es) {missing[:8]}")
        for kind, needed in ((Kind.SEND_F, r < p - 1), (Kind.SEND_B, r > 0)):
            missing = [i for i in range(m) if needed and Action(r, kind, i) not in seen]
            if missing:
                raise ValueError(f"rank {r}: no {kind.name} for micro-batch(es) {missing[:8]}")


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


def peak_inflight(compute_or_lowered: Sequence[Sequence[Action]]) -> list[int]:
    """Largest number of activations held (forward done, backward not) per rank."""
    peaks = []
    for acts in compute_or_lowered:
        live = peak = 0
        for a in acts:
            if a.kind is Kind.F:
                live += 1
                peak = max(peak, live)
            elif a.kind is Kind.B:
                live -= 1
        peaks.append(peak)
    return peaks
