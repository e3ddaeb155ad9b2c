"""Simulated vs measured: per-cell errors, MAPE, the worst cell, and tables.

A *cell* is one (schedule, network setting, micro-batch size). Comparison input is a
list of dicts with at least ``schedule``, ``network``, ``micro_batch_size``,
``simulated_s`` and ``measured_s`` (the median over measured steps); optional
``measured_lo_s``/``measured_hi_s`` (spread) and ``noise_pct`` (run-to-run noise);
``replay_s`` (the run replayed with its own compute: :mod:`pipesim.replay`),
``speed_replay_s`` and ``cpu_drift`` (the profile at the run's own CPU per step per rank,
and that CPU over the profile's: :func:`pipesim.context.cpu_replay`) and ``drift_pct``
(the speed probe against calibration's); ``stages_per_rank`` for an interleaved schedule
(absent: :data:`pipesim.schedule.DEFAULT_STAGES_PER_RANK`).

Up to three errors per cell, from the most to the least the simulator is given: the
*replay error* (replay vs measured: the model of schedule, transport and network alone),
the *error at the run's speed* (the profile scaled to each rank's CPU per step in the run:
adds the model of compute in context, the sharing of cores; what it takes away from the
prediction's error is the machine's speed in that run and calibration's error) and the
*prediction error* (simulated from the profile alone vs measured). The prediction's
``MAPE:`` line is always last.
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
    speed_mape: dict[str, float] | None = None  # per schedule, percent: at each run's own CPU speed
    speed_worst_pct: float | None = None
    speed_worst_cell: str | None = None
    cpu_drift: tuple[float, float, float] | None = None  # the cells' CPU per step over the profile's, percent

    def last_line(self) -> str:
        parts = ", ".join(f"{s} {v:.1f}%" for s, v in self.mape.items())
        return f"MAPE: {parts}, worst {self.worst_pct:.1f}% ({self.worst_cell})"

    def replay_line(self) -> str | None:
        if not self.replay_mape:
            return None
        parts = ", ".join(f"{s} {v:.1f}%" for s, v in self.replay_mape.items())
        return f"Replay MAPE (each run with its own compute): {parts}, worst {self.replay_worst_pct:.1f}% " \
               f"({self.replay_worst_cell})"

    def speed_line(self) -> str | None:
        if not self.speed_mape:
            return None
        parts = ", ".join(f"{s} {v:.1f}%" for s, v in self.speed_mape.items())
        return f"At each run's own speed (the profile at its ranks' CPU per step): {parts}, worst " \
               f"{self.speed_worst_pct:.1f}% ({self.speed_worst_cell})"

    def drift_line(self) -> str | None:
        if self.cpu_drift is not None:
            med, lo, hi = self.cpu_drift
            return (f"Machine speed during the runs (each rank's CPU per step against the profile's; + is slower): "
                    f"median {med:+.1f}%, cells from {lo:+.1f}% to {hi:+.1f}%")
        if self.drift is None:
            return None
        med, lo, hi = self.drift
        return (f"Machine speed during the runs against right after calibration (speed probe; + is slower): "
                f"median {med:+.1f}%, cells from {lo:+.1f}% to {hi:+.1f}%")

    def lines(self) -> list[str]:
        """The summary lines, the prediction's MAPE line last."""
        return [x for x in (self.drift_line(), self.replay_line(), self.speed_line()) if x] + [self.last_line()]


def error_pct(cell: dict) -> float:
    return 100.0 * (cell["simulated_s"] - cell["measured_s"]) / cell["measured_s"]


def replay_error_pct(cell: dict) -> float:
    return 100.0 * (cell["replay_s"] - cell["measured_s"]) / cell["measured_s"]


def speed_error_pct(cell: dict) -> float:
    return 100.0 * (cell["speed_replay_s"] - cell["measured_s"]) / cell["measured_s"]


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
    speed_mape = sworst = None
    sped = [c for c in cells if c.get("speed_replay_s") is not None]
    if sped:
        speed_mape = {g: sum(abs(speed_error_pct(c)) for c in mine) / len(mine)
                      for g, mine in mape_groups(sped).items()}
        sworst = max(sped, key=lambda c: abs(speed_error_pct(c)))
    cpu = [100 * (c["cpu_drift"] - 1) for c in cells if c.get("cpu_drift") is not None]
    return Summary(mape, abs(error_pct(worst)), cell_name(worst), statistics.median(noise) if noise else None,
                   replay_mape, abs(replay_error_pct(rworst)) if rworst else None,
                   cell_name(rworst) if rworst else None,
                   (statistics.median(drifts), min(drifts), max(drifts)) if drifts else None,
                   speed_mape, abs(speed_error_pct(sworst)) if sworst else None, cell_name(sworst) if sworst else None,
                   (statistics.median(cpu), min(cpu), max(cpu)) if cpu else None)


def comparison_table(cells: list[dict], columns: Sequence[tuple[str, Callable[[dict], str]]] = ()) -> str:
    """Markdown: one row per cell with simulated, measured (spread) and error; then one
    column per ``(title, cell -> text)`` in ``columns`` (e.g. a later per-cell error). An
    interleaved schedule's cell says its stages per rank (:func:`schedule_label`)."""
    runs = any(c.get("noise_pct") is not None for c in cells)
    auto: list[tuple[str, Callable[[dict], str]]] = []
    if any(c.get("replay_s") is not None for c in cells):
        auto += [("replay s", lambda c: f"{c['replay_s']:.3f}" if c.get("replay_s") is not None else ""),
                 ("replay err", lambda c: f"{replay_error_pct(c):+.1f}%" if c.get("replay_s") is not None else "")]
    if any(c.get("speed_replay_s") is not None for c in cells):
        auto.append(("at run speed err",
                     lambda c: f"{speed_error_pct(c):+.1f}%" if c.get("speed_replay_s") is not None else ""))
    if any(c.get("cpu_drift") is not None for c in cells):   # the run's CPU speed, where measured
        auto.append(("CPU drift", lambda c: f"{100 * (c['cpu_drift'] - 1):+.0f}%" if c.get("cpu_drift") is not None
                     else ""))
    elif any(c.get("drift_pct") is not None for c in cells):
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
