"""Simulated vs measured: per-cell errors, MAPE, the worst cell, and tables.

A *cell* is one (schedule, network setting, micro-batch size). Comparison input is a
list of dicts with at least ``schedule``, ``network``, ``micro_batch_size``,
``simulated_s`` and ``measured_s`` (the median over measured steps); optional
``measured_lo_s``/``measured_hi_s`` (spread) and ``noise_pct`` (run-to-run noise);
``replay_s`` (the run replayed with its own compute: :mod:`pipesim.replay`),
``speed_replay_s`` and ``cpu_drift`` (the profile at the run's own CPU per step per rank,
and that CPU over the profile's: :func:`pipesim.context.cpu_replay`), ``recal_s`` (the
profile at the machine's level re-probed before the run: :mod:`loop.level`) and ``drift_pct``
(the speed probe against calibration's); ``stages_per_rank`` for an interleaved schedule
(absent: :data:`pipesim.schedule.DEFAULT_STAGES_PER_RANK`).

Up to three errors per cell, from the most to the least the simulator is given: the
*replay error* (replay vs measured: the model of schedule, transport and network alone),
the *error at the run's speed* (the profile scaled to each rank's CPU per step in the run:
adds the model of compute in context, the sharing of cores; what it takes away from the
prediction's error is the machine's speed in that run and calibration's error) and the
*prediction error* (simulated from the profile alone vs measured). Beside them, where a
validation re-probed the machine's level, the *recalibrated error* (the profile scaled to
that level, never to a step time). The prediction's ``MAPE:`` line is always last.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipesim.schedule import cell_groups as mape_groups
from pipesim.schedule import schedule_label, stages_of  # noqa: F401  (stages_of: part of this module's API)


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
    recal_mape: dict[str, float] | None = None  # per schedule, percent: the profile at the re-probed level
    recal_worst_pct: float | None = None
    recal_worst_cell: str | None = None

    def last_line(self) -> str:
        text = _mape_text("MAPE:", self.mape, self.worst_pct, self.worst_cell)
        assert text is not None   # every summary has a prediction
        return text

    def replay_line(self) -> str | None:
        return _mape_text("Replay MAPE (each run with its own compute):", self.replay_mape, self.replay_worst_pct,
                          self.replay_worst_cell)

    def speed_line(self) -> str | None:
        return _mape_text("At each run's own speed (the profile at its ranks' CPU per step):", self.speed_mape,
                          self.speed_worst_pct, self.speed_worst_cell)

    def recal_line(self) -> str | None:
        return _mape_text("Recalibrated (the profile at the machine's level, re-probed before each setting):",
                          self.recal_mape, self.recal_worst_pct, self.recal_worst_cell)

    def drift_line(self) -> str | None:
        if self.cpu_drift is not None:
            return _range_text("Machine speed during the runs (each rank's CPU per step against the profile's, "
                               "in its computations where recorded; + is slower):", self.cpu_drift)
        if self.drift is None:
            return None
        return _range_text("Machine speed during the runs against right after calibration (speed probe; + is "
                           "slower):", self.drift)

    def lines(self) -> list[str]:
        """The summary lines, the prediction's MAPE line last."""
        return [x for x in (self.drift_line(), self.replay_line(), self.speed_line(), self.recal_line()) if x] \
            + [self.last_line()]


def _mape_text(title: str, mape: dict[str, float] | None, worst_pct: float | None,
               worst_cell: str | None) -> str | None:
    """A MAPE line: per group, then the worst cell (None for a level no cell has)."""
    if not mape or worst_pct is None:
        return None
    parts = ", ".join(f"{s} {v:.1f}%" for s, v in mape.items())
    return f"{title} {parts}, worst {worst_pct:.1f}% ({worst_cell})"


def _range_text(title: str, spread: tuple[float, float, float]) -> str:
    med, lo, hi = spread
    return f"{title} median {med:+.1f}%, cells from {lo:+.1f}% to {hi:+.1f}%"


def _error(cell: dict, key: str) -> float:
    """Percent error against the measured step time of the cell's ``key`` (a simulated time)."""
    return 100.0 * (cell[key] - cell["measured_s"]) / cell["measured_s"]


def error_pct(cell: dict) -> float:
    return _error(cell, "simulated_s")


def replay_error_pct(cell: dict) -> float:
    return _error(cell, "replay_s")


def speed_error_pct(cell: dict) -> float:
    return _error(cell, "speed_replay_s")


def recal_error_pct(cell: dict) -> float:
    return _error(cell, "recal_s")


def cell_name(cell: dict) -> str:
    return f"{schedule_label(cell)}, {cell['network']}, mbs {cell['micro_batch_size']}"


def _level(cells: Sequence[dict], key: str) -> tuple[dict[str, float] | None, float | None, str | None]:
    """One level of error over the cells that have ``key``: MAPE per group (:func:`mape_groups`),
    the worst cell's error and its name (all None where no cell has it)."""
    have = [c for c in cells if c.get(key) is not None]
    if not have:
        return None, None, None
    mape = {g: sum(abs(_error(c, key)) for c in mine) / len(mine) for g, mine in mape_groups(have).items()}
    worst = max(have, key=lambda c: abs(_error(c, key)))
    return mape, abs(_error(worst, key)), cell_name(worst)


def _spread(values: list[float]) -> tuple[float, float, float] | None:
    return (statistics.median(values), min(values), max(values)) if values else None


def summarize(cells: list[dict]) -> Summary:
    if not cells:
        raise ValueError("no measured cells to compare")
    mape, worst_pct, worst_cell = _level(cells, "simulated_s")
    assert mape is not None and worst_pct is not None and worst_cell is not None   # every cell is simulated
    noise = [c["noise_pct"] for c in cells if c.get("noise_pct") is not None]
    return Summary(mape, worst_pct, worst_cell, statistics.median(noise) if noise else None,
                   *_level(cells, "replay_s"),
                   _spread([c["drift_pct"] for c in cells if c.get("drift_pct") is not None]),
                   *_level(cells, "speed_replay_s"),
                   _spread([100 * (c["cpu_drift"] - 1) for c in cells if c.get("cpu_drift") is not None]),
                   *_level(cells, "recal_s"))


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
    if any(c.get("recal_s") is not None for c in cells):
        auto.append(("recal err", lambda c: f"{recal_error_pct(c):+.1f}%" if c.get("recal_s") is not None else ""))
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
