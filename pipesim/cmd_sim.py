"""``pipesim simulate`` and ``pipesim grid``: offline predictions from a profile."""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time

from . import engine as E
from . import fastpath
from . import network as N
from . import profile as P
from . import schedule as S
from . import trace as T
from .transport import QUEUES, SEND_MODES
from .util import output_path, parse_int_list, write_json_atomic, write_text_atomic


def parse_schedules(text: str, runtime_only: bool = False) -> list[str]:
    """Schedule names from ``a,b``; ``runtime_only``: only those the torch runtime runs
    (verbs that measure as well as simulate: validate, demo, sweep)."""
    names = [x.strip().lower() for x in text.split(",") if x.strip()]
    for n in names:
        if n not in S.GENERATORS:
            choose = S.RUNTIME_SCHEDULES if runtime_only else S.GENERATORS
            raise ValueError(f"unknown schedule {n!r}; choose from {', '.join(choose)}")
        if runtime_only:
            S.check_runtime(n)
    if not names:
        raise ValueError("no schedule given; e.g. --schedules gpipe,1f1b")
    return names


def stages_per_rank(args, schedules) -> int:
    """``--stages-per-rank`` (default :data:`pipesim.schedule.DEFAULT_STAGES_PER_RANK`), refused when no schedule takes it."""
    v = getattr(args, "stages_per_rank", None)
    if v is None:
        return S.DEFAULT_STAGES_PER_RANK
    if v < 1:
        raise ValueError(f"--stages-per-rank must be a positive integer, got {v}")
    if v != 1 and not any(s in S.VIRTUAL for s in schedules):
        raise ValueError(f"--stages-per-rank {v} needs a schedule with several stages per rank "
                         f"({', '.join(S.VIRTUAL)})")
    return v


def _v(schedule: str, v: int) -> int:
    return v if schedule in S.VIRTUAL else 1


def check_schedules(num_ranks: int, schedules, mbs_list, batch_size: int, v: int) -> None:
    """Refuse, before anything runs, a schedule that cannot be built for a cell (e.g.
    interleaved1f1b with a micro-batch count that does not split into equal rounds)."""
    for s in schedules:
        for m in mbs_list:
            if m >= 1 and batch_size >= m and batch_size % m == 0:
                try:
                    S.check_shape(s, num_ranks, batch_size // m, _v(s, v))
                except ValueError as e:
                    raise ValueError(f"{e} (micro-batch size {m}, batch size {batch_size})") from None


def add_transport_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("transport (default: the profile's 'transport' section, else its backend's)")
    g.add_argument("--queue", choices=list(QUEUES), help="one FIFO per link direction, or per-rank send/recv queues")
    g.add_argument("--send-mode", choices=list(SEND_MODES), help="when a send may start")
    g.add_argument("--eager-limit-bytes", type=int, default=None, metavar="N",
                   help="under rendezvous, messages up to N bytes go eagerly")
    g.add_argument("--recv-ahead", type=int, default=None, metavar="K",
                   help="post each receive K computations early (-1: all at step start; default: the profile's)")


def transport_from(args, profile: P.Profile) -> E.Transport:
    """The profile's transport (:meth:`Transport.for_profile`) with the flags that were given on top."""
    base = E.Transport.for_profile(profile)
    if args.recv_ahead is None:
        ra = base.recv_ahead
    elif args.recv_ahead == -1:
        ra = None
    elif args.recv_ahead < -1:
        raise ValueError(f"--recv-ahead must be -1 (all receives at step start) or an integer >= 0, got {args.recv_ahead}")
    else:
        ra = args.recv_ahead
    if args.eager_limit_bytes is not None and args.eager_limit_bytes < 0:
        raise ValueError(f"--eager-limit-bytes must be >= 0, got {args.eager_limit_bytes}")
    eager = base.eager_limit_bytes if args.eager_limit_bytes is None else args.eager_limit_bytes
    return E.Transport(queue=args.queue or base.queue, send_mode=args.send_mode or base.send_mode,
                       eager_limit_bytes=eager, recv_ahead=ra)


def transport_note(args, profile: P.Profile, tr: E.Transport) -> str:
    """Where the transport comes from, in words."""
    flags = any(x for x in (args.queue, args.send_mode, args.eager_limit_bytes is not None,
                                 args.recv_ahead is not None))
    origin = ("the profile's transport section" if profile.transport is not None
              else f"the default for backend {profile.device.get('backend') or 'gloo'}")
    return f"transport: {tr.describe()} ({origin}{', flags on top' if flags else ''})"


def profile_note(profile: P.Profile, path) -> str:
    where = path or f"bundled example ({P.BUNDLED.name})"
    return f"profile: {where} [{profile.source}]"


# ----------------------------------------------------------------------------- simulate


SIZE_FLAGS = ("--micro-batch-size", "--batch-size", "--steps")


def cmd_simulate(args) -> int:
    if args.trace:
        output_path(args.trace, "--trace")
    prof = P.load(args.profile)
    setting = N.parse(args.network)
    setting.check_stages(prof.num_stages)
    v = _v(args.schedule, stages_per_rank(args, [args.schedule]))
    E.check_size(prof.num_stages, args.micro_batch_size, args.batch_size, args.steps, names=SIZE_FLAGS,
                 stages_per_rank=v, split=args.schedule in S.SPLIT_BACKWARD)
    check_schedules(prof.num_stages, [args.schedule], [args.micro_batch_size], args.batch_size, v)
    tr = transport_from(args, prof)
    res = E.simulate(prof, args.schedule, args.micro_batch_size, args.batch_size, setting,
                     transport=tr, steps=args.steps, record=bool(args.trace), stages_per_rank=v,
                     engine=args.engine)
    print(profile_note(prof, args.profile))
    stages = f"{prof.num_stages} stages" if v == 1 else f"{prof.num_stages} ranks x {v} stages"
    print(f"{args.schedule}, micro-batch {args.micro_batch_size} x {res.num_microbatches}, "
          f"{stages}, network: {setting.label}")
    print(transport_note(args, prof, tr))
    print(res.summary())
    if args.trace:
        for p in T.write(res.trace, args.trace, label="pipesim simulate"):
            print(f"trace: {p}")
    return 0


# ----------------------------------------------------------------------------- grid


GRID_STEPS = 2  # consecutive steps simulated per cell of `pipesim grid`


def run_grid(prof: P.Profile, settings, mbs_list, schedules, batch_size, transport, progress=True, steps=GRID_STEPS,
             stages_per_rank: int = S.DEFAULT_STAGES_PER_RANK, engine: str = "auto"):
    """Simulate every cell. Returns {(schedule, setting label, mbs): SimResult}.
    ``stages_per_rank`` applies to the interleaved schedules (:data:`pipesim.schedule.VIRTUAL`); ``engine``: as
    :func:`engine.simulate` (``"auto"``: the exact fast path where it applies, else SimPy)."""
    cells = [(s, net, m) for s in schedules for net in settings for m in mbs_list]
    out = {}
    t0 = time.perf_counter()
    for i, (s, net, m) in enumerate(cells, 1):
        out[(s, net.label, m)] = E.simulate(prof, s, m, batch_size, net, transport=transport, steps=steps,
                                            record=False, stages_per_rank=_v(s, stages_per_rank), engine=engine)
        if progress and sys.stderr.isatty():
            print(f"\r  simulating {i}/{len(cells)}", end="", file=sys.stderr, flush=True)
    if progress and sys.stderr.isatty():
        print(f"\r  simulated {len(cells)} cells in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return out


SCHEDULE_TITLES = {"gpipe": "Gpipe based pipeline", "1f1b": "1F1B based pipeline",
                   "interleaved1f1b": "Interleaved 1F1B based pipeline", "zbh1": "ZB-H1 based pipeline"}


STAGES_COLUMN = "Stages per rank"
"""The column an interleaved schedule's table gets (``pipesim compare`` reads it back)."""


def markdown_tables(values, settings, mbs_list, schedules, fmt=lambda v: f"{v:.2f} s",
                    stages_per_rank: int | None = None) -> str:
    """The seed's two tables: one per schedule, a row per setting, a column per micro-batch size.
    With ``stages_per_rank``, the tables of the interleaved schedules (:data:`pipesim.schedule.VIRTUAL`)
    also get a "Stages per rank" column after the setting."""
    width = max(len("Network setting"), *(len(s.label) for s in settings))
    out = []
    for s in schedules:
        heads = [f"Micro batch size: {m}" for m in mbs_list]
        extra = [STAGES_COLUMN] if stages_per_rank is not None and s in S.VIRTUAL else []
        out.append(f"### {SCHEDULE_TITLES.get(s, s)}")
        out.append("| " + "Network setting".ljust(width) + " | " + " | ".join(extra + heads) + " |")
        out.append("|" + "-" * (width + 2) + "|" + "|".join("-" * (len(h) + 2) for h in extra + heads) + "|")
        for net in settings:
            cells = [str(stages_per_rank).ljust(len(h)) for h in extra]
            cells += [fmt(values[(s, net.label, m)]).ljust(len(h)) for m, h in zip(mbs_list, heads)]
            out.append("| " + net.label.ljust(width) + " | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def cmd_grid(args) -> int:
    for flag in ("csv", "json"):
        if getattr(args, flag):
            output_path(getattr(args, flag), f"--{flag}")
    prof = P.load(args.profile)
    settings = N.parse_grid(args.network)
    mbs_list = parse_int_list(args.micro_batch_sizes, "--micro-batch-sizes")
    schedules = parse_schedules(args.schedules)
    for net in settings:
        net.check_stages(prof.num_stages)
    v = stages_per_rank(args, schedules)
    E.check_grid_size(prof.num_stages, mbs_list, args.batch_size, GRID_STEPS, len(settings),
                      names=("--micro-batch-sizes", "--batch-size", "steps"),  # the whole grid, before its first cell
                      shapes=[(_v(s, v), s in S.SPLIT_BACKWARD) for s in schedules])
    check_schedules(prof.num_stages, schedules, mbs_list, args.batch_size, v)
    tr = transport_from(args, prof)
    t0 = time.perf_counter()
    res = run_grid(prof, settings, mbs_list, schedules, args.batch_size, tr, steps=GRID_STEPS, stages_per_rank=v,
                   engine=args.engine)
    wall = time.perf_counter() - t0
    print(f"<!-- {profile_note(prof, args.profile)}; batch {args.batch_size}; {prof.num_stages} stages; "
          f"step time seen by rank 0; {len(res)} cells simulated in {wall:.2f} s -->")
    print(markdown_tables({k: v.step_time for k, v in res.items()}, settings, mbs_list, schedules, stages_per_rank=v))
    rows = [{"schedule": s, "network": lbl, "micro_batch_size": m, "batch_size": args.batch_size,
             "stages_per_rank": _v(s, v), "step_time_s": r.step_time, "bubble_fraction": r.bubble_fraction,
             **{f"rank{x.rank}_compute_s": x.compute for x in r.ranks},
             **{f"rank{x.rank}_waiting_s": x.waiting for x in r.ranks}}
            for (s, lbl, m), r in res.items()]
    if args.csv:
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        write_text_atomic(args.csv, buf.getvalue())
        print(f"csv: {args.csv}", file=sys.stderr)
    if args.json:
        write_json_atomic(args.json, {"profile": args.profile or str(P.BUNDLED), "source": prof.source,
                                      "transport": tr.__dict__, "cells": rows})
        print(f"json: {args.json}", file=sys.stderr)
    return 0


def add_engine_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--engine", choices=fastpath.ENGINES, default="auto",
                    help="auto: the exact fast path where it applies, else SimPy (the reference); "
                         "simpy or fast to force one (default: auto)")


def register(sub) -> None:
    ap = sub.add_parser("simulate", help="simulate one configuration and print the step time and its breakdown")
    ap.add_argument("--schedule", required=True, choices=list(S.GENERATORS))
    ap.add_argument("--micro-batch-size", type=int, required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--network", default="default", help='e.g. "delay 10ms bandwidth 1Gbps" (default: default)')
    ap.add_argument("--profile", help="profile JSON (default: the bundled GPT-3 small estimate)")
    ap.add_argument("--trace", help="write the simulated trace (.json Chrome/Perfetto, .csv, or both)")
    ap.add_argument("--steps", type=int, default=2, help="consecutive steps simulated; the last is reported")
    ap.add_argument("--stages-per-rank", type=int, default=None, metavar="V",
                    help=f"virtual stages per rank for {', '.join(S.VIRTUAL)} (default {S.DEFAULT_STAGES_PER_RANK})")
    add_transport_args(ap)
    add_engine_arg(ap)
    ap.set_defaults(func=cmd_simulate)

    ap = sub.add_parser("grid", help="simulate a grid of settings x micro-batch sizes x schedules (seed tables)")
    ap.add_argument("--network", default="seed", help="'seed' or settings separated by ',' (default: seed)")
    ap.add_argument("--micro-batch-sizes", default="1,2,4")
    ap.add_argument("--schedules", default="gpipe,1f1b", help=f"any of {', '.join(S.GENERATORS)} (default gpipe,1f1b)")
    ap.add_argument("--stages-per-rank", type=int, default=None, metavar="V",
                    help=f"virtual stages per rank for {', '.join(S.VIRTUAL)} (default {S.DEFAULT_STAGES_PER_RANK})")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--profile", help="profile JSON (default: the bundled GPT-3 small estimate)")
    ap.add_argument("--csv", help="also write the cells as CSV")
    ap.add_argument("--json", help="also write the cells as JSON")
    add_transport_args(ap)
    add_engine_arg(ap)
    ap.set_defaults(func=cmd_grid)


__all__ = ["register", "run_grid", "markdown_tables", "parse_int_list", "parse_schedules"]
