"""Simulated vs measured: per-cell errors, MAPE, the worst cell, and tables.

A *cell* is one (schedule, network setting, micro-batch size). Comparison input is a
list of dicts with at least ``schedule``, ``network``, ``micro_batch_size``,
``simulated_s`` and ``measured_s`` (the median over measured steps); optional
``measured_lo_s``/``measured_hi_s`` (spread) and ``noise_pct`` (run-to-run noise);
``replay_s`` (the run replayed with its own compute: :mod:`pipesim.replay`) and
``drift_pct`` (the machine's speed against calibration's); ``stages_per_rank`` for an
interleaved schedule (absent: :data:`pipesim.schedule.DEFAULT_STAGES_PER_RANK`).

Two errors per cell where there is a replay: the *replay error* (replay vs measured: the
model of schedule, transport and network alone) and the *prediction error* (simulated
from the profile alone vs measured). The prediction's ``MAPE:`` line is always last.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipesim.schedule import DEFAULT_STAGES_PER_RANK, VIRTUAL


@dataclass(frozen=True)
class Summary:
    mape: dict[str, float]  # per schedule, percent
    worst_pct: float
    worst_cell: str
    noise_pct: float | None  # median run-to-run noise of the measurements, percent
    replay_mape: dict[str, float] | None = None  # per schedule, percent, where cells have a replay
    replay_worst_pct: float | None = None
    replay_worst_cell: str | None = None
    drift: tuple[float, float, float] | None = None  # the cells' drift: median, min, max (percent)

    def last_line(self) -> str:
        parts = ", ".join(f"{s} {v:.1f}%" for s, v in self.mape.items())
        return f"MAPE: {parts}, worst {self.worst_pct:.1f}% ({self.worst_cell})"

    def replay_line(self) -> str | None:
        if not self.replay_mape:
            return None
        parts = ", ".join(f"{s} {v:.1f}%" for s, v in self.replay_mape.items())
        return f"Replay MAPE (each run with its own compute): {parts}, worst {self.replay_worst_pct:.1f}% " \
               f"({self.replay_worst_cell})"

    def drift_line(self) -> str | None:
        if self.drift is None:
            return None
        med, lo, hi = self.drift
        return (f"Machine speed during the runs against right after calibration (speed probe; + is slower): "
                f"median {med:+.1f}%, cells from {lo:+.1f}% to {hi:+.1f}%")

    def lines(self) -> list[str]:
        """The summary lines, the prediction's MAPE line last."""
        return [x for x in (self.drift_line(), self.replay_line()) if x] + [self.last_line()]


def error_pct(cell: dict) -> float:
    return 100.0 * (cell["simulated_s"] - cell["measured_s"]) / cell["measured_s"]


def replay_error_pct(cell: dict) -> float:
    return 100.0 * (cell["replay_s"] - cell["measured_s"]) / cell["measured_s"]


def stages_of(cell: dict) -> int:
    """The virtual stages per rank a cell ran with: its ``stages_per_rank``, else the command
    line's default for an interleaved schedule (:data:`pipesim.schedule.VIRTUAL`), else 1."""
    if cell["schedule"] not in VIRTUAL:
        return 1
    return int(cell.get("stages_per_rank") or DEFAULT_STAGES_PER_RANK)


def schedule_label(cell: dict) -> str:
    """The schedule as a table shows it: an interleaved one with its stages per rank,
    ``interleaved1f1b (v 2)``, so that two cells of different v are told apart; the others
    as named."""
    s = cell["schedule"]
    return f"{s} (v {stages_of(cell)})" if s in VIRTUAL else s


def cell_name(cell: dict) -> str:
    return f"{schedule_label(cell)}, {cell['network']}, mbs {cell['micro_batch_size']}"


def mape_groups(cells: Sequence[dict]) -> dict[str, list[dict]]:
    """Cells grouped for a MAPE line: per schedule, and per stages per rank as well where one
    schedule's cells ran several (``interleaved1f1b (v 2)``, ``interleaved1f1b (v 3)``)."""
    groups: dict[str, list[dict]] = {}
    for s in dict.fromkeys(c["schedule"] for c in cells):
        mine = [c for c in cells if c["schedule"] == s]
        if len({stages_of(c) for c in mine}) > 1:
            for c in mine:
                groups.setdefault(schedule_label(c), []).append(c)
        else:
            groups[s] = mine
    return groups


def summarize(cells: list[dict]) -> Summary:
    if not cells:
        raise ValueError("no measured cells to compare")
    mape = {g: sum(abs(error_pct(c)) for c in mine) / len(mine) for g, mine in mape_groups(cells).items()}
    worst = max(cells, key=lambda c: abs(error_pct(c)))
    noise = [c["noise_pct"] for c in cells if c.get("noise_pct") is not None]
    replay_mape = rworst = None
    replayed = [c for c in cells if c.get("replay_s") is not None]
    if replayed:
        replay_mape = {g: sum(abs(replay_error_pct(c)) for c in mine) / len(mine)
                       for g, mine in mape_groups(replayed).items()}
        rworst = max(replayed, key=lambda c: abs(replay_error_pct(c)))
    drifts = [c["drift_pct"] for c in cells if c.get("drift_pct") is not None]
    return Summary(mape, abs(error_pct(worst)), cell_name(worst), statistics.median(noise) if noise else None,
                   replay_mape, abs(replay_error_pct(rworst)) if rworst else None,
                   cell_name(rworst) if rworst else None,
                   (statistics.median(drifts), min(drifts), max(drifts)) if drifts else None)


def comparison_table(cells: list[dict], columns: Sequence[tuple[str, Callable[[dict], str]]] = ()) -> str:
    """Markdown: one row per cell with simulated, measured (spread) and error; then one
    column per ``(title, cell -> text)`` in ``columns`` (e.g. a later per-cell error). An
    interleaved schedule's cell says its stages per rank (:func:`schedule_label`)."""
    runs = any(c.get("noise_pct") is not None for c in cells)
    auto: list[tuple[str, Callable[[dict], str]]] = []
    if any(c.get("replay_s") is not None for c in cells):
        auto += [("replay s", lambda c: f"{c['replay_s']:.3f}" if c.get("replay_s") is not None else ""),
                 ("replay err", lambda c: f"{replay_error_pct(c):+.1f}%" if c.get("replay_s") is not None else "")]
    if any(c.get("drift_pct") is not None for c in cells):
        auto.append(("drift", lambda c: f"{c['drift_pct']:+.0f}%" if c.get("drift_pct") is not None else ""))
    columns = [*auto, *columns]
    lines = ["| schedule | network setting | mbs | simulated s | measured s (spread) | error |"
             + (" runs apart |" if runs else "") + "".join(f" {title} |" for title, _ in columns),
             "|---|---|---:|---:|---:|---:|" + ("---:|" if runs else "") + "---:|" * len(columns)]
    for c in cells:
        spread = ""
        if c.get("measured_lo_s") is not None and c.get("measured_hi_s") is not None:
            spread = f" ({c['measured_lo_s']:.3f}-{c['measured_hi_s']:.3f})"
        apart = ""
        if runs:
            apart = f" {c['noise_pct']:.1f}% |" if c.get("noise_pct") is not None else " |"
        lines.append(f"| {schedule_label(c)} | {c['network']} | {c['micro_batch_size']} | {c['simulated_s']:.3f} | "
                     f"{c['measured_s']:.3f}{spread} | {error_pct(c):+.1f}% |{apart}"
                     + "".join(f" {fn(c)} |" for _, fn in columns))
    return "\n".join(lines)
