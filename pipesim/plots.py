"""Figures: parity, grouped bars, timelines and what-if heatmaps (matplotlib, no torch).

Every figure is drawn from result files and traces, so "simulated vs measured" is a
comparison of two files of the same kind.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import engine as E  # noqa: E402
from .network import LinkOverride, NetworkSetting  # noqa: E402
from .schedule import cell_groups  # noqa: E402
from .trace import TraceEvent  # noqa: E402

COLORS = {"gpipe": "#1f77b4", "1f1b": "#d62728"}
KIND_COLORS = {"F": "#4c9be8", "B": "#f28e2b", "W": "#edc948", "OPT": "#59a14f"}
KIND_LABELS = {"F": "forward", "B": "backward", "W": "weight grad", "OPT": "optimizer"}


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def parity(cells: Sequence[dict], path, title: str = "Simulated vs measured step time") -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5.2))
    xs = [c["measured_s"] for c in cells] + [c["simulated_s"] for c in cells]
    lo, hi = min(xs) * 0.85, max(xs) * 1.15
    grid = np.linspace(lo, hi, 50)
    ax.fill_between(grid, grid * 0.95, grid * 1.05, color="0.85", label="±5%")
    ax.plot(grid, grid, color="0.3", lw=1, label="y = x")
    markers = {1: "o", 2: "s", 4: "^", 8: "D"}
    for s in dict.fromkeys(c["schedule"] for c in cells):
        for m in sorted({c["micro_batch_size"] for c in cells}):
            sel = [c for c in cells if c["schedule"] == s and c["micro_batch_size"] == m]
            if not sel:
                continue
            xerr = None
            if all(c.get("measured_lo_s") is not None for c in sel):
                xerr = np.array([[c["measured_s"] - c["measured_lo_s"] for c in sel],
                                 [c["measured_hi_s"] - c["measured_s"] for c in sel]]).clip(min=0)
            ax.errorbar([c["measured_s"] for c in sel], [c["simulated_s"] for c in sel], xerr=xerr, fmt=markers.get(m, "o"),
                        color=COLORS.get(s, None), ms=5, lw=0.8, alpha=0.85, label=f"{s}, mbs {m}")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured step time (s, median; bars: spread)")
    ax.set_ylabel("simulated step time (s)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


bar_groups = cell_groups  # the groups of bars: a schedule's cells, per stages per rank where they ran several


def bars(cells: Sequence[dict], path, title: str = "Step time per network setting") -> Path:
    """One panel per micro-batch size; per setting, simulated beside measured for both schedules."""
    mbs_list = sorted({c["micro_batch_size"] for c in cells})
    nets = list(dict.fromkeys(c["network"] for c in cells))
    groups = cell_groups(cells)
    scheds = list(groups)
    idx = {(g, c["network"], c["micro_batch_size"]): c for g, mine in groups.items() for c in mine}
    fig, axes = plt.subplots(len(mbs_list), 1, figsize=(max(8, 1.0 * len(nets) + 2), 2.6 * len(mbs_list)),
                             squeeze=False, sharex=True)
    width = 0.8 / (2 * len(scheds))
    x = np.arange(len(nets))
    spare = itertools.cycle(["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"])  # tab10's last six
    color: dict[str, str] = {}
    for g in scheds:   # a schedule's colour for its first group, another for each further v
        base = g.split(" (")[0]
        color[g] = COLORS[base] if base in COLORS and COLORS[base] not in color.values() else next(spare)
    for ax, m in zip(axes[:, 0], mbs_list):
        k = 0
        for s in scheds:
            for kind, hatch, alpha in (("simulated_s", "//", 0.55), ("measured_s", "", 0.95)):
                vals = [idx[(s, n, m)][kind] if (s, n, m) in idx else np.nan for n in nets]
                ax.bar(x + (k - len(scheds) + 0.5) * width, vals, width, color=color[s], alpha=alpha,
                       hatch=hatch, edgecolor="white", label=f"{s} {'simulated' if kind == 'simulated_s' else 'measured'}")
                k += 1
        ax.set_ylabel(f"mbs {m}: step s")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper left")
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xticks(x)
    axes[-1, 0].set_xticklabels([n.replace("  ", " ").replace(" bandwidth", "\nbandwidth").replace(" (", "\n(")
                                 for n in nets], fontsize=7, rotation=30, ha="right")
    return _save(fig, path)


def _draw_trace(ax, events: Sequence[TraceEvent], step: int | None, t0: float | None = None) -> float:
    evs = [e for e in events if step is None or e.step == step]
    if not evs:
        return 0.0
    if t0 is None:  # rank 0's step start (its receives are posted then), so the width is its step time
        t0 = min((e.start for e in evs if e.rank == 0), default=min(e.start for e in evs))
    ranks = sorted({e.rank for e in evs})
    for e in evs:
        k = e.kind
        y = e.rank
        if k in KIND_COLORS:
            ax.barh(y, e.end - e.start, left=e.start - t0, height=0.6, color=KIND_COLORS[k], edgecolor="black",
                    lw=0.2)
        elif k in ("RF", "RB"):
            # the stretch a receive was outstanding after its data was needed is what matters; draw arrival
            ax.plot([e.end - t0], [y + 0.38], marker="v", ms=2.5, color="0.35", lw=0)
    ax.set_yticks(ranks)
    ax.set_yticklabels([f"rank {r}" for r in ranks])
    ax.invert_yaxis()
    return max(e.end for e in evs) - t0


def timelines(sim: Sequence[TraceEvent], measured: Sequence[TraceEvent], path, title: str = "",
              sim_step: int | None = None, measured_step: int | None = None) -> Path:
    """Simulated above measured, one row per rank; blue forward, orange backward, yellow weight grad, green optimizer,
    triangles where a receive's data arrived."""
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(11, 4.2), sharex=True)
    w1 = _draw_trace(a1, sim, sim_step)
    w2 = _draw_trace(a2, measured, measured_step)
    a1.set_title(f"simulated (rank 0's step: {w1:.3f} s)" + (f" — {title}" if title else ""), fontsize=9, loc="left")
    a2.set_title(f"measured (rank 0's step: {w2:.3f} s)", fontsize=9, loc="left")
    a2.set_xlabel("seconds from the start of the step")
    a2.set_xlim(0, max(w1, w2) * 1.02)
    shown = [k for k in KIND_COLORS if k != "W" or any(e.kind == "W" for e in [*sim, *measured])]
    handles = [plt.Rectangle((0, 0), 1, 1, color=KIND_COLORS[k]) for k in shown]
    a1.legend(handles, [KIND_LABELS[k] for k in shown], fontsize=7, loc="lower right", ncol=len(shown),
              bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _save(fig, path)


def heatmap(profile, path, *, micro_batch_size: int, batch_size: int, delays_ms: Sequence[float],
            bandwidths_gbps: Sequence[float], schedules: Sequence[str] = ("gpipe", "1f1b"),
            transport: E.Transport | None = None) -> Path:
    """Simulated step time over one-way delay x bandwidth, a panel per schedule."""
    fig, axes = plt.subplots(1, len(schedules), figsize=(5.2 * len(schedules), 4.2), squeeze=False)
    grids = []
    for s in schedules:
        g = np.zeros((len(delays_ms), len(bandwidths_gbps)))
        for i, d in enumerate(delays_ms):
            for j, bw in enumerate(bandwidths_gbps):
                setting = NetworkSetting(f"delay {d}ms bandwidth {bw}Gbps",
                                         ((None, LinkOverride(d * 1e-3, bw * 1e9)),))
                g[i, j] = E.simulate(profile, s, micro_batch_size, batch_size, setting, transport=transport,
                                     record=False).step_time
        grids.append(g)
    vmin, vmax = min(g.min() for g in grids), max(g.max() for g in grids)
    digits = 3 if vmax < 1 else 2  # sub-second steps need the third digit to differ
    for ax, s, g in zip(axes[0], schedules, grids):
        im = ax.imshow(g, origin="lower", cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        for i in range(g.shape[0]):
            for j in range(g.shape[1]):
                ax.text(j, i, f"{g[i, j]:.{digits}f}", ha="center", va="center", fontsize=7,
                        color="white" if g[i, j] < (vmin + vmax) / 2 else "black")
        ax.set_xticks(range(len(bandwidths_gbps)))
        ax.set_xticklabels([f"{b:g}" for b in bandwidths_gbps])
        ax.set_yticks(range(len(delays_ms)))
        ax.set_yticklabels([f"{d:g}" for d in delays_ms])
        ax.set_xlabel("bandwidth (Gbit/s)")
        ax.set_ylabel("one-way delay (ms)")
        ax.set_title(f"{s}: simulated step time (s), mbs {micro_batch_size}", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.85, label="seconds")
    return _save(fig, path)
