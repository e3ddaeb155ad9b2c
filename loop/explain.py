"""``pipesim explain``: why a cell's simulated step differs from its measured one.

Given a validation folder and a cell, or a measured and a simulated trace of the same
cell, it splits rank 0's step in both along the critical path
(:mod:`pipesim.explain`) and lists the causes of the difference, largest first, in a
short table that adds up to it. ``--against replay`` explains the replay error instead
(the run replayed with its own compute): what is left there is the model of transfers,
queues and overheads. ``validate`` and ``demo`` print it for their worst cell.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from loop import compare as C
from loop.measured import norm_label
from pipesim import engine as E
from pipesim import explain as X
from pipesim import profile as P
from pipesim.replay import replay
from pipesim.trace import TraceEvent, read_csv

SIM_STEPS = C.SIM_STEPS


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in label.split(" (")[0]).strip("-").replace("--", "-")


def cell_runs(out: Path, schedule: str, label: str, mbs: int) -> list[dict]:
    """The counted runs of a cell in a validation folder's measured.jsonl that kept a trace."""
    from loop.validate import load_runs

    runs = load_runs(out / "measured.jsonl")
    want = norm_label(label)
    for key, by_run in runs.items():
        s, lbl, m = key.split("|")
        # the label as in the table, or its name without the parenthesis ("default")
        if s == schedule and want in (norm_label(lbl), norm_label(lbl.split(" (")[0])) and int(m) == mbs:
            return [r for _, r in sorted(by_run.items()) if r.get("trace") and (out / r["trace"]).exists()]
    return []


def _cells_of(out: Path) -> str:
    """The folder's cells, for an error that names a missing one: schedules, settings, sizes."""
    from loop.validate import load_runs

    keys = [k.split("|") for k in load_runs(out / "measured.jsonl")]
    if not keys:
        return "it has no measured runs"
    nets = dict.fromkeys(lbl.split(" (")[0] for _, lbl, _ in keys)
    return (f"it has schedules {', '.join(dict.fromkeys(s for s, _, _ in keys))}; networks "
            f"{', '.join(repr(n) for n in nets)}; micro-batch sizes "
            f"{', '.join(sorted(dict.fromkeys(m for _, _, m in keys), key=int))}")


def explain_cell(out: str | Path, schedule: str, label: str, mbs: int, *, against: str = "profile",
                 top: int | None = 8) -> str:
    """The explain table of one cell of a validation folder (the run whose step time is the cell's median)."""
    out = Path(out)
    prof = P.load(out / "profile.json")
    runs = cell_runs(out, schedule, label, mbs)
    if not runs:
        raise ValueError(f"{out}: no traced run of {schedule}, {label}, mbs {mbs} (measured with this pipesim's "
                         f"validate, every run keeps its trace); {_cells_of(out)}")
    med = statistics.median_low([r["median"] for r in runs])
    run = next(r for r in runs if r["median"] == med)
    measured = read_csv(out / run["trace"])
    results = _results(out, run)
    batch, warmup = int(run["batch_size"]), int(results.get("warmup", 1))
    net = C.setting_of(run["network"])
    transport = E.Transport.for_profile(prof)
    v = C.stages_of(run)
    if against == "replay":
        rp = replay(prof, measured, schedule, mbs, batch, net, warmup=warmup, transport=transport, record=True,
                    stages_per_rank=v)
        sim_trace, what = rp.result.trace, "the run replayed with its own compute"
        ex = X.explain(measured, sim_trace, warmup=warmup, simulated_step=X.median_step(measured, warmup))
    else:
        res = E.simulate(prof, schedule, mbs, batch, net, transport=transport, steps=SIM_STEPS, stages_per_rank=v)
        sim_trace, what = res.trace, "the simulation from the profile"
        ex = X.explain(measured, sim_trace, warmup=warmup)
    head = (f"Explain {schedule}, {run['network']}, mbs {mbs}: run {run.get('run', 0)} (median of "
            f"{len(runs)} run{'s' if len(runs) > 1 else ''}) against {what}")
    text = head + "\n\n" + ex.table(top=top)
    if against != "replay":
        speed = _speed_split(run, results, prof, schedule, mbs, batch, net, transport, v, ex)
        if speed:
            outside = None if net.is_default else _outside_line(out, results, schedule, mbs,
                                                                  charged=res.shaped_cpu)
            text += "\n\n" + speed + (" " + outside if outside else "")
    return text


def _outside_line(out: Path, results: dict, schedule: str, mbs: int, charged: Sequence[float] = ()) -> str | None:
    """The run's CPU per step outside its computations (posting, gloo's threads, the kernel's
    work for its messages) against the same cell's runs on the default network in the folder,
    where calibration measured links and overheads: what a network setting costs the ranks
    (a bandwidth cap alone on the local testbed: 0.3-4.2 ms; docs/validate.md), beside what the
    simulation charged them for it (``charged``: per rank, from the profile's ``host.shaped_cpu``;
    empty: nothing). None without both runs."""
    from calibrate.shaped import outside_cpu

    mine = outside_cpu(results)
    bases = [o for r in cell_runs(out, schedule, "default", mbs) if (o := outside_cpu(_results(out, r)))]
    if not mine or not bases or any(len(b) != len(mine) for b in bases):
        return None
    base = [statistics.median(b[r] for b in bases) for r in range(len(mine))]
    ms = " / ".join(f"{1e3 * x:.1f}" for x in mine)
    diff = " / ".join(f"{1e3 * (x - y):+.1f}" for x, y in zip(mine, base))
    if len(charged) == len(mine) and any(charged):
        what = ("the simulation charged " + " / ".join(f"{1e3 * x:+.1f}" for x in charged)
                + " ms for the rate cap (the profile's CPU per byte under a cap without a delay).")
    else:
        what = "the profile charges none of that difference."
    return (f"Outside their computations the ranks spent {ms} ms of CPU per step (ranks 0 to {len(mine) - 1}), "
            f"{diff} ms against this cell's runs on the default network, where calibration measured links and "
            f"overheads; {what}")


def _speed_split(run: dict, results: dict, prof: P.Profile, schedule: str, mbs: int, batch: int, net, transport,
                 v: int, ex: X.Explanation) -> str | None:
    """How much of the difference is the machine's speed in the run: the cell simulated with
    each rank at the run's own CPU per step (:func:`pipesim.context.cpu_replay`) against the
    simulation from the profile; the rest is the model's. As the run recorded it, else (a folder
    older than the record) from its results. None for runs without CPU per step."""
    from loop.validate import run_speed

    keys = ("cpu_factors", "speed_replay_s")
    sp = {k: run[k] for k in (*keys, "speed_basis") if k in run} if all(k in run for k in keys) else \
        run_speed(prof, results, schedule, mbs, batch, net, transport, v)
    if not sp:
        return None
    sim, meas = ex.simulated.period, ex.measured.period
    machine, model = sp["speed_replay_s"] - sim, meas - sp["speed_replay_s"]
    ranks = ", ".join(f"rank {r} {100 * (f - 1):+.0f}%" for r, f in enumerate(sp["cpu_factors"]))
    what = ("the CPU its ranks spent in their computations per step against calibration's" if
            sp.get("speed_basis") == "compute" else "its ranks' CPU per step against the profile's")
    return (f"The run's speed: {what}: {ranks}. At those speeds the cell "
            f"simulates to {sp['speed_replay_s'] * 1e3:.2f} ms, so of the {ex.difference * 1e3:+.2f} ms, "
            f"{machine * 1e3:+.2f} ms is the machine's speed in this run (or calibration's error) and "
            f"{model * 1e3:+.2f} ms the model's (sharing of cores, transfers, the schedule).")


def _results(out: Path, run: dict) -> dict:
    """The run's results file ({} where it has none or it cannot be read)."""
    try:
        return json.loads((out / run["results"]).read_text())
    except (KeyError, OSError, ValueError):
        return {}


def explain_traces(measured: list[TraceEvent], simulated: list[TraceEvent], warmup: int = 1,
                   top: int | None = 8) -> str:
    return X.explain(measured, simulated, warmup=warmup).table(top=top)


def _run(ns: argparse.Namespace) -> int:
    if ns.measured_trace or ns.simulated_trace:
        if not (ns.measured_trace and ns.simulated_trace):
            raise ValueError("give both --measured-trace and --simulated-trace (CSV traces of the same cell)")
        print(explain_traces(read_csv(ns.measured_trace), read_csv(ns.simulated_trace), ns.warmup,
                             None if ns.all else 8))
        return 0
    if not (ns.schedule and ns.network and ns.micro_batch_size):
        raise ValueError("name the cell: --schedule S --network SETTING --micro-batch-size M (or give two traces)")
    print(explain_cell(ns.out, ns.schedule, ns.network, ns.micro_batch_size, against=ns.against,
                       top=None if ns.all else 8))
    return 0


def register(sub) -> None:
    ap = sub.add_parser("explain", help="why a cell's simulated step differs from the measured one (critical path)",
                        description=__doc__.split("\n\n")[1].replace("\n", " "))
    ap.add_argument("--out", default="out/validate", help="a validation folder (default %(default)s)")
    ap.add_argument("--schedule", help="the cell's schedule")
    ap.add_argument("--network", help="the cell's network setting, as in the folder's table")
    ap.add_argument("--micro-batch-size", type=int, help="the cell's micro-batch size")
    ap.add_argument("--against", choices=["profile", "replay"], default="profile",
                    help="explain the prediction from the profile (default) or the replay with the run's own compute")
    ap.add_argument("--measured-trace", help="instead of a folder: a measured trace CSV ...")
    ap.add_argument("--simulated-trace", help="... and a simulated trace CSV of the same cell")
    ap.add_argument("--warmup", type=int, default=1, help="with two traces: warm-up steps of the measured one")
    ap.add_argument("--all", action="store_true", help="list every cause, not the 8 largest")
    ap.set_defaults(func=_run)
