"""Why two traces of the same cell differ: rank 0's step along its critical path.

:func:`critical_path` walks one step of a trace backwards from rank 0's step end to
its previous step end and splits that period into segments that add up to it exactly:

* ``compute stage S F`` / ``B`` / ``OPT``: a computation on the path;
* ``transfer A->B``: a message on the path, from its send being posted on rank A to its
  arrival on rank B (or only the part of it that the receiver was not busy for);
* ``waiting stage S``: from a message's arrival (or a send's completion) to the start
  of the computation that waited for it: the runtime's hand-off from its watcher thread;
* ``overhead stage S``: time between two computations of a rank that waited for
  nothing: posting sends and receives, bookkeeping, the runtime's own code;
* ``before the trace``: the path reached the start of the trace.

The walk: at a computation's start, look at what it waited for. A forward waits for
its activation, a backward for its gradient, the optimizer step for the rank's sends.
If that arrived after the rank's previous computation ended, the path follows the
message to its sender (at the send's posting, then the computation that produced it);
otherwise the path stays on the rank and the gap is overhead.

:func:`explain` runs the walk on a measured and a simulated trace of the same cell and
lists the categories by the size of their difference; the differences add up to the
difference of the two step times.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .schedule import Action, Kind
from .trace import TraceEvent

_EPS = 1e-9
COMPUTE = ("F", "B", "W", "OPT")


@dataclass(frozen=True)
class Path:
    step: int
    start: float  # rank 0's previous step end
    end: float  # rank 0's step end
    segments: dict[str, float]  # category -> seconds; sums to end - start

    @property
    def period(self) -> float:
        return self.end - self.start


class TraceIndex:
    """A trace's computations per rank in order, its messages, and what each computation waited for."""

    def __init__(self, events: Iterable[TraceEvent]):
        self.compute: dict[int, list[TraceEvent]] = defaultdict(list)
        self.comm: dict[tuple[int, int, str], TraceEvent] = {}
        self.comm_at: dict[tuple[int, str], TraceEvent] = {}  # (step, action): stages name their rank's actions
        self.sends: dict[tuple[int, int], list[TraceEvent]] = defaultdict(list)
        for e in events:
            if e.kind in COMPUTE:
                self.compute[e.rank].append(e)
            else:
                self.comm[(e.rank, e.step, e.action)] = e
                self.comm_at[(e.step, e.action)] = e
                if e.kind in ("SF", "SB"):
                    self.sends[(e.rank, e.step)].append(e)
        for lst in self.compute.values():
            lst.sort(key=lambda e: (e.start, e.end))
        self.pos = {id(e): i for lst in self.compute.values() for i, e in enumerate(lst)}

    def prev(self, e: TraceEvent) -> TraceEvent | None:
        i = self.pos[id(e)]
        return self.compute[e.rank][i - 1] if i > 0 else None

    def producer(self, rank: int, t: float) -> TraceEvent | None:
        """The last computation of ``rank`` that ended by ``t``."""
        best = None
        for e in self.compute[rank]:
            if e.end <= t + _EPS:
                best = e
            else:
                break
        return best

    def blocker(self, e: TraceEvent) -> tuple[TraceEvent, TraceEvent | None, int] | None:
        """What computation ``e`` waited for: (its receive or last send, the matching send if a receive, peer)."""
        if e.kind == "OPT":
            sends = self.sends.get((e.rank, e.step))
            if not sends:
                return None
            last = max(sends, key=lambda s: s.end)
            peer = Action.parse(last.action).peer
            return (last, None, peer) if peer is not None else None
        a = Action.parse(e.action)
        if a.kind is Kind.W:
            return None  # a weight gradient waits for nothing but its own B, on the same rank
        kind, skind = (Kind.RECV_F, Kind.SEND_F) if a.kind is Kind.F else (Kind.RECV_B, Kind.SEND_B)
        rv = self.comm.get((e.rank, e.step, str(Action(a.stage, kind, a.mb))))
        if rv is None:
            return None
        peer = Action(a.stage, kind, a.mb).peer
        if peer is None:
            return None
        snd = self.comm_at.get((e.step, str(Action(peer, skind, a.mb))))  # on the rank of stage peer
        return rv, snd, (peer if snd is None else snd.rank)


def rank0_step_ends(events: Iterable[TraceEvent]) -> dict[int, float]:
    """Rank 0's step ends (the end of its optimizer step), by step."""
    return {e.step: e.end for e in events if e.rank == 0 and e.kind == "OPT"}


def critical_path(events: Sequence[TraceEvent], step: int) -> Path:
    """Rank 0's period of ``step`` (from the end of step - 1 to the end of step), split along its critical path."""
    idx = TraceIndex(events)
    if 0 not in idx.compute:
        raise ValueError("trace has no compute events of rank 0")
    ends = rank0_step_ends(events)
    if step not in ends or step - 1 not in ends:
        raise ValueError(f"trace has no rank-0 step ends for steps {step - 1} and {step}")
    t0, t1 = ends[step - 1], ends[step]
    seg: dict[str, float] = defaultdict(float)

    def add(cat: str, a: float, b: float) -> bool:
        """Account [a, b] (clipped at t0); True when the path has reached t0."""
        if b > a:
            seg[cat] += max(0.0, b - max(a, t0))
        return a <= t0 + _EPS

    cur: TraceEvent | None = next(e for e in idx.compute[0] if e.kind == "OPT" and e.step == step)
    t = t1
    for _ in range(10 * len(events) + 10):
        assert cur is not None
        if add(f"compute stage {cur.rank} {cur.kind}", cur.start, min(cur.end, t)):
            break
        t = min(cur.start, t)
        prev = idx.prev(cur)
        if prev is None:
            seg["before the trace"] += t - t0
            break
        free = min(prev.end, t)
        blk = idx.blocker(cur)
        if blk is not None and blk[0].end > free + _EPS:
            done, snd, peer = blk
            arrived = min(done.end, t)
            if add(f"waiting stage {cur.rank}", arrived, t):
                break
            if snd is not None and snd.start > free + _EPS:
                # the message was posted after this rank was free: the path goes to the sender
                if add(f"transfer {peer}->{cur.rank}", snd.start, arrived):
                    break
                t = snd.start
                prod = idx.producer(peer, t)
                if prod is None:
                    seg["before the trace"] += t - t0
                    break
                if add(f"overhead stage {peer}", prod.end, t):
                    break
                cur, t = prod, min(prod.end, t)
                continue
            link = f"transfer {peer}->{cur.rank}" if snd is not None else f"transfer {cur.rank}->{peer}"
            if add(link, free, arrived):
                break
        elif add(f"overhead stage {cur.rank}", free, t):
            break
        cur, t = prev, free
    return Path(step, t0, t1, dict(seg))


def median_step(events: Sequence[TraceEvent], first: int = 1) -> int:
    """The step whose rank-0 period is the median one (the lower median), from step ``first`` on."""
    ends = rank0_step_ends(events)
    periods = {k: ends[k] - ends[k - 1] for k in sorted(ends) if k >= max(first, 1) and k - 1 in ends}
    if not periods:
        raise ValueError("trace has fewer than two rank-0 step ends")
    med = statistics.median_low(list(periods.values()))
    return min(k for k, v in periods.items() if v == med)


@dataclass(frozen=True)
class Explanation:
    measured: Path
    simulated: Path
    rows: list[tuple[str, float, float]]  # (category, measured s, simulated s), largest difference first

    @property
    def difference(self) -> float:
        return self.measured.period - self.simulated.period

    def table(self, top: int | None = None) -> str:
        d = self.difference
        lines = [f"rank 0's step: measured {self.measured.period * 1e3:.2f} ms (step {self.measured.step}), "
                 f"simulated {self.simulated.period * 1e3:.2f} ms (step {self.simulated.step}), "
                 f"difference {d * 1e3:+.2f} ms",
                 "", "| cause (on the critical path) | measured ms | simulated ms | difference ms | share |",
                 "|---|---:|---:|---:|---:|"]
        rows = self.rows if top is None else self.rows[:top]
        for cat, m, s in rows:
            share = f"{100 * (m - s) / d:+.0f}%" if abs(d) > 1e-12 else "-"
            lines.append(f"| {cat} | {m * 1e3:.2f} | {s * 1e3:.2f} | {(m - s) * 1e3:+.2f} | {share} |")
        if top is not None and len(self.rows) > top:
            rest = self.rows[top:]
            rm, rs = sum(r[1] for r in rest), sum(r[2] for r in rest)
            share = f"{100 * (rm - rs) / d:+.0f}%" if abs(d) > 1e-12 else "-"
            lines.append(f"| {len(rest)} smaller causes | {rm * 1e3:.2f} | {rs * 1e3:.2f} | {(rm - rs) * 1e3:+.2f} "
                         f"| {share} |")
        lines.append(f"| **total** | {self.measured.period * 1e3:.2f} | {self.simulated.period * 1e3:.2f} | "
                     f"{d * 1e3:+.2f} | 100% |")
        return "\n".join(lines)


def explain(measured: Sequence[TraceEvent], simulated: Sequence[TraceEvent], *, measured_step: int | None = None,
            simulated_step: int | None = None, warmup: int = 1) -> Explanation:
    """Attribute the difference of rank 0's step between two traces of one cell to causes on the critical path.

    ``measured_step`` defaults to the step with the median period after ``warmup``;
    ``simulated_step`` to the simulated trace's last step."""
    ms = median_step(measured, warmup) if measured_step is None else measured_step
    ss = max(rank0_step_ends(simulated)) if simulated_step is None else simulated_step
    pm, ps = critical_path(measured, ms), critical_path(simulated, ss)
    cats = set(pm.segments) | set(ps.segments)
    rows = sorted(((c, pm.segments.get(c, 0.0), ps.segments.get(c, 0.0)) for c in cats),
                  key=lambda r: (-abs(r[1] - r[2]), r[0]))
    return Explanation(pm, ps, rows)
