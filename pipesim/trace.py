"""Trace records shared by the simulator and the runtime, and their exports.

One :class:`TraceEvent` per executed action: rank, action (text form, e.g. ``1RF3``),
step, start and end in seconds on a common clock, and bytes moved. For a send, start
is when it was posted and end when the transport finished with it; for a receive,
start is when it was posted and end when the data had arrived. Compute events span
the computation itself. An ``OPT`` event covers the optimizer step.

Exports: Chrome trace JSON (opens in Perfetto and chrome://tracing: one process per
rank, compute and communication on separate rows, a flow arrow from each send to its
receive) and CSV (one row per event, the same columns as the dataclass).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from .schedule import Action
from .util import write_json_atomic, write_text_atomic


@dataclass(frozen=True)
class TraceEvent:
    rank: int
    action: str  # text form ("0F3", "1RB2") or "OPT"
    start: float
    end: float
    step: int = 0
    bytes: int = 0

    @property
    def kind(self) -> str:
        if self.action == "OPT":
            return "OPT"
        return Action.parse(self.action).kind.value

    @property
    def duration(self) -> float:
        return self.end - self.start


COLUMNS = [f.name for f in fields(TraceEvent)]


def write_csv(events: Iterable[TraceEvent], path: str | os.PathLike) -> None:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for e in events:
        w.writerow([e.rank, e.action, repr(e.start), repr(e.end), e.step, e.bytes])
    write_text_atomic(path, buf.getvalue())


def read_csv(path: str | os.PathLike) -> list[TraceEvent]:
    out = []
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        if r.fieldnames != COLUMNS:
            raise ValueError(f"{path}: not a pipesim trace CSV (columns {r.fieldnames}, expected {COLUMNS})")
        for i, row in enumerate(r, 2):
            try:
                out.append(TraceEvent(int(row["rank"]), row["action"], float(row["start"]), float(row["end"]),
                                      int(row["step"]), int(row["bytes"])))
            except ValueError as e:
                raise ValueError(f"{path}: line {i}: {e}") from None
    return out


_NAMES = {"F": "forward", "B": "backward", "W": "weight grad", "SF": "send act", "RF": "recv act",
          "SB": "send grad", "RB": "recv grad", "OPT": "optimizer"}


def to_chrome(events: Iterable[TraceEvent], label: str = "pipesim") -> dict:
    """Chrome trace document; times in microseconds."""
    events = list(events)
    t0 = min((e.start for e in events), default=0.0)
    out: list[dict] = []
    ranks = sorted({e.rank for e in events})
    for r in ranks:
        out.append({"ph": "M", "pid": r, "name": "process_name", "args": {"name": f"rank {r}"}})
        out.append({"ph": "M", "pid": r, "name": "process_sort_index", "args": {"sort_index": r}})
        for tid, name in ((0, "compute"), (1, "send"), (2, "recv")):
            out.append({"ph": "M", "pid": r, "tid": tid, "name": "thread_name", "args": {"name": name}})
    sends: dict[tuple, TraceEvent] = {}
    recvs: dict[tuple, TraceEvent] = {}
    for e in events:
        kind = e.kind
        tid = 0 if kind in ("F", "B", "W", "OPT") else (1 if kind in ("SF", "SB") else 2)
        ts = (e.start - t0) * 1e6
        out.append({"ph": "X", "pid": e.rank, "tid": tid, "ts": ts, "dur": max(e.duration * 1e6, 0.001),
                    "name": f"{_NAMES[kind]} {e.action}", "cat": kind,
                    "args": {"step": e.step, "bytes": e.bytes, "action": e.action}})
        if kind in ("SF", "SB", "RF", "RB"):
            a = Action.parse(e.action)
            if a.kind.is_send:
                sends[(e.step, a.stage, a.peer, a.tag)] = e
            else:
                recvs[(e.step, a.peer, a.stage, a.tag)] = e
    flow_id = 0
    for key, s in sends.items():
        rv = recvs.get(key)
        if rv is None:
            continue
        flow_id += 1
        out.append({"ph": "s", "id": flow_id, "pid": s.rank, "tid": 1, "ts": (s.start - t0) * 1e6,
                    "name": "transfer", "cat": "flow"})
        out.append({"ph": "f", "bp": "e", "id": flow_id, "pid": rv.rank, "tid": 2,
                    "ts": max((rv.end - t0) * 1e6 - 0.001, (s.start - t0) * 1e6), "name": "transfer", "cat": "flow"})
    return {"traceEvents": out, "displayTimeUnit": "ms", "otherData": {"source": label}}


def write_chrome(events: Iterable[TraceEvent], path: str | os.PathLike, label: str = "pipesim") -> None:
    write_json_atomic(path, to_chrome(events, label), indent=None)


def write(events: Iterable[TraceEvent], path: str | os.PathLike, label: str = "pipesim") -> list[Path]:
    """Write ``path`` as Chrome JSON (.json) or CSV (.csv); with another suffix, both."""
    events = list(events)
    path = Path(path)
    if path.suffix == ".json":
        write_chrome(events, path, label)
        return [path]
    if path.suffix == ".csv":
        write_csv(events, path)
        return [path]
    j, c = path.with_suffix(".json"), path.with_suffix(".csv")
    write_chrome(events, j, label)
    write_csv(events, c)
    return [j, c]


__all__ = ["TraceEvent", "write_csv", "read_csv", "to_chrome", "write_chrome", "write", "COLUMNS"]
