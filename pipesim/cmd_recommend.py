"""``pipesim recommend``: the fastest schedule x micro-batch size for each network setting.

The ranking, the memory and the explanation are :mod:`pipesim.recommend`; this module
reads the flags, prints the tables, and writes ``--json`` and ``--figure``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from . import limits
from . import network as N
from . import profile as P
from . import recommend as R
from .cmd_sim import add_transport_args, parse_schedules, profile_note, transport_from, transport_note
from .util import output_path, parse_int_list, write_json_atomic

FIGURE_DELAYS_MS = (0, 1, 2, 5, 10)
FIGURE_BANDWIDTHS_GBPS = (1, 2, 5, 10)
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def figure_settings() -> list[N.NetworkSetting]:
    """The delay x bandwidth plane of ``--figure``: one setting per cell, delay-major."""
    return [N.parse(f"delay {d}ms bandwidth {b}Gbps") for d in FIGURE_DELAYS_MS for b in FIGURE_BANDWIDTHS_GBPS]


def draw_plane(cells: dict[tuple[float, float], R.Scored], path, title: str) -> Path:
    """A categorical heatmap: the winning candidate per (delay ms, bandwidth Gbps) cell,
    its step time written in the cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    order = {name: i for i, name in enumerate(R.S.GENERATORS)}
    winners = {s.candidate for s in cells.values()}
    labels = [c.label for c in sorted(winners, key=lambda c: (order.get(c.schedule, len(order)), c.schedule,
                                                              c.micro_batch_size, c.stages_per_rank or 0))]
    index = {lbl: i for i, lbl in enumerate(labels)}
    tab10 = matplotlib.colormaps["tab10"]
    cmap = ListedColormap([tab10(i % 10) for i in range(len(labels))])
    grid = [[index[cells[(d, b)].candidate.label] for b in FIGURE_BANDWIDTHS_GBPS] for d in FIGURE_DELAYS_MS]
    fig, ax = plt.subplots(figsize=(1.6 * len(FIGURE_BANDWIDTHS_GBPS) + 2.5, 0.9 * len(FIGURE_DELAYS_MS) + 1.6))
    ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(labels) - 0.5, aspect="auto", origin="lower")
    for i, d in enumerate(FIGURE_DELAYS_MS):
        for j, b in enumerate(FIGURE_BANDWIDTHS_GBPS):
            s = cells[(d, b)]
            ax.text(j, i, f"{s.candidate.label}\n{s.step_time:.2f} s", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(FIGURE_BANDWIDTHS_GBPS)), [f"{b} Gbps" for b in FIGURE_BANDWIDTHS_GBPS])
    ax.set_yticks(range(len(FIGURE_DELAYS_MS)), [f"{d} ms" for d in FIGURE_DELAYS_MS])
    ax.set_xlabel("bandwidth cap (every link)")
    ax.set_ylabel("added one-way delay (every link)")
    ax.set_title(title, fontsize=10)
    ax.legend(handles=[Patch(color=cmap(i), label=lbl) for lbl, i in index.items()], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=8, title="fastest")
    path = Path(path)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def _memory_limit(text: str | None) -> int | None:
    return None if text is None else R.parse_bytes(text, "--memory-limit")


def _scored_json(s: R.Scored, rank: int) -> dict:
    c = s.candidate
    return {"rank": rank, "schedule": c.schedule, "micro_batch_size": c.micro_batch_size,
            "stages_per_rank": c.stages_per_rank, "step_time_s": s.step_time,
            "bubble_fraction": s.result.bubble_fraction, "peak_memory_bytes": s.peak_memory,
            "memory_bytes_per_rank": s.memory_bytes, "peak_inflight_per_rank": s.inflight,
            **{f"rank{x.rank}_compute_s": x.compute for x in s.result.ranks},
            **{f"rank{x.rank}_waiting_s": x.waiting for x in s.result.ranks}}


def cmd_recommend(args) -> int:
    for flag in ("json", "figure"):
        v = getattr(args, flag)
        if v and v != "-":
            output_path(v, f"--{flag}")
    if args.figure and Path(args.figure).suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"--figure: name a {', '.join(FIGURE_SUFFIXES)} file, got {args.figure!r}")
    top = int(limits.TOP.check(args.top, "--top"))
    limits.BATCH_SIZE.check(args.batch_size, "--batch-size")
    memory_limit = _memory_limit(args.memory_limit)
    prof = P.load(args.profile)
    settings = N.parse_grid(args.network)
    for net in settings:
        net.check_stages(prof.num_stages)
    schedules = parse_schedules(args.schedules) if args.schedules else None
    mbs = parse_int_list(args.micro_batch_sizes, "--micro-batch-sizes") if args.micro_batch_sizes else None
    vs = parse_int_list(args.stages_per_rank, "--stages-per-rank")
    cands, notes = R.candidates(prof, args.batch_size, schedules, mbs, vs)
    figure_cells = figure_settings() if args.figure else []
    # the whole run's size before anything is generated: 4 simulations per setting (the ranking and up to 3 to
    # explain) and one per figure cell
    R.check_sizes(prof, cands, args.batch_size, 4 * len(settings) + len(figure_cells))
    kept, dropped = R.split_by_memory(prof, cands, args.batch_size, memory_limit, notes)
    if not kept and not dropped:
        raise ValueError("no candidate can be scheduled: " + "; ".join(notes))
    if not kept:
        least = min(dropped, key=lambda x: max(x[1]))
        raise ValueError(f"every candidate is over --memory-limit {R.format_bytes(memory_limit or 0)}: the least "
                         f"memory is {least[0].label} with {R.format_bytes(max(least[1]))} per rank "
                         f"({len(dropped)} candidates; memory = boundary activations, a lower bound)")
    tr = transport_from(args, prof)
    t0 = time.perf_counter()
    recs = [R.recommend(prof, net, kept, args.batch_size, tr) for net in settings]
    wall = time.perf_counter() - t0
    out_json = {"profile": args.profile or str(P.BUNDLED), "source": prof.source, "batch_size": args.batch_size,
                "transport": tr.__dict__, "memory_limit_bytes": memory_limit, "memory_meaning": R.MEMORY_MEANING,
                "dropped_over_memory_limit": [{"schedule": c.schedule, "micro_batch_size": c.micro_batch_size,
                                               "stages_per_rank": c.stages_per_rank, "peak_memory_bytes": max(m)}
                                              for c, m, _ in dropped],
                "notes": notes, "settings": []}
    lines = [f"<!-- {profile_note(prof, args.profile)}; batch {args.batch_size}; {prof.num_stages} stages; "
             f"{len(kept)} candidate(s) x {len(settings)} setting(s) ranked and explained in {wall:.2f} s; step time seen by rank 0 -->",
             f"<!-- {transport_note(args, prof, tr)} -->",
             f"<!-- peak memory per rank: {R.MEMORY_MEANING} -->"]
    if dropped:
        lines.append(f"<!-- over --memory-limit {R.format_bytes(memory_limit or 0)}, left out: "
                     + ", ".join(f"{c.label} ({R.format_bytes(max(m))})" for c, m, _ in dropped) + " -->")
    lines += [f"<!-- {n} -->" for n in notes]
    for rec in recs:
        lines += ["", f"### {rec.setting.label}", R.table(rec, top), "", rec.why_line()]
        out_json["settings"].append({
            "network": rec.setting.label,
            "ranked": [_scored_json(s, i) for i, s in enumerate(rec.ranked, 1)],
            "why": rec.why_line(),
            "why_parts_s": rec.why.parts if rec.why else None,
            "why_reason": rec.why.reason if rec.why else None})
    if args.figure:
        cells: dict[tuple[float, float], R.Scored] = {}
        for net, (d, b) in zip(figure_cells, ((d, b) for d in FIGURE_DELAYS_MS for b in FIGURE_BANDWIDTHS_GBPS)):
            cells[(d, b)] = R.rank(prof, net, kept, args.batch_size, tr)[0]
        lim = f", memory <= {R.format_bytes(memory_limit)}" if memory_limit else ""
        p = draw_plane(cells, args.figure, f"fastest schedule / micro-batch size, batch {args.batch_size}{lim}\n"
                                           f"{profile_note(prof, args.profile)}")
        print(f"figure: {p}", file=sys.stderr)
        out_json["figure"] = {"path": str(p), "delays_ms": list(FIGURE_DELAYS_MS),
                              "bandwidths_gbps": list(FIGURE_BANDWIDTHS_GBPS),
                              "best": [{"delay_ms": d, "bandwidth_gbps": b, **_scored_json(s, 1)}
                                       for (d, b), s in cells.items()]}
    if args.json == "-":
        import json

        print(json.dumps(out_json, indent=2))
    else:
        print("\n".join(lines))
        if args.json:
            write_json_atomic(args.json, out_json)
            print(f"json: {args.json}", file=sys.stderr)
    return 0


def register(sub) -> None:
    ap = sub.add_parser("recommend", help="rank schedule x micro-batch size by predicted step time per network "
                                          "setting, within a memory limit, and say why the best wins")
    ap.add_argument("--profile", metavar="P", help="profile JSON (default: the bundled GPT-3 small estimate)")
    ap.add_argument("--network", default="default",
                    help="a setting, settings separated by ',', or 'seed' (default: default)")
    ap.add_argument("--batch-size", type=int, default=64, metavar="B", help="samples per step (default %(default)s)")
    ap.add_argument("--memory-limit", metavar="BYTES",
                    help="drop candidates whose peak boundary activations on some rank exceed this, e.g. 16GiB, 500MB")
    ap.add_argument("--schedules", help="schedules to try (default: every registered one)")
    ap.add_argument("--micro-batch-sizes", metavar="LIST",
                    help="micro-batch sizes to try (default: every one the profile has that divides the batch size)")
    ap.add_argument("--stages-per-rank", default=",".join(map(str, R.DEFAULT_STAGES_PER_RANK)), metavar="LIST",
                    help="stages per rank to try, for schedules that take it (default %(default)s)")
    ap.add_argument("--top", type=int, default=5, metavar="N", help="candidates printed per setting (default %(default)s)")
    ap.add_argument("--json", metavar="PATH", help="also write the full ranking as JSON ('-': print it instead of the tables)")
    ap.add_argument("--figure", metavar="PATH",
                    help="draw the fastest choice over a delay (0-10 ms) x bandwidth (1-10 Gbps) plane (.png, .svg, .pdf)")
    add_transport_args(ap)
    ap.set_defaults(func=cmd_recommend)


__all__ = ["register", "cmd_recommend", "draw_plane", "figure_settings"]
