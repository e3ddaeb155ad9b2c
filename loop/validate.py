"""``pipesim validate`` and ``pipesim demo``: calibrate, simulate, measure, compare, plot.

The loop, all on this machine (ranks in the local testbed's hosts):

1. Calibrate on the default network (plus one links-only probe under a delayed link
   to fit the single-connection cap) -> ``<out>/profile.json``. Reused if present.
2. Simulate every cell from that profile alone -> ``<out>/simulated.json``. The
   measured step times never feed the predictions.
3. Measure every cell with the runtime, ``repeats`` times in passes of alternating
   order (a slow spell of the machine then lands on one run of a cell, not on all),
   plus one tie-break run where a cell's runs are more than ``tiebreak_pct`` apart
   -> one line per finished run in ``<out>/measured.jsonl``. A cell's measured time is
   the median of its runs' medians. An interrupted validation resumes: runs already
   there are not measured again.
4. Compare -> ``<out>/comparison.md`` / ``comparison.json``; figures under ``--figures``.
   The last line printed is ``MAPE: gpipe X.X%, 1f1b Y.Y%, worst Z.Z% (cell)``.

Nothing here imports torch; the ranks do.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from loop import report as R
from pipesim import engine as E
from pipesim import limits
from pipesim import network as N
from pipesim import profile as P
from pipesim.cmd_sim import run_grid
from pipesim.trace import read_csv
from pipesim.trace import write as write_trace
from pipesim.util import append_jsonl, output_dir, read_jsonl, write_json_atomic

SIM_STEPS = 3  # consecutive steps simulated; the last one is reported (steady state, as measured)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cell_key(schedule: str, label: str, mbs: int) -> str:
    return f"{schedule}|{label}|{mbs}"


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in label.split(" (")[0]).strip("-").replace("--", "-")


def load_runs(path: Path) -> dict[str, dict[int, dict]]:
    """Measured runs by cell key, then run index (records without one are run 0). A line cut
    by a crash is skipped: that run is measured again."""
    out: dict[str, dict[int, dict]] = {}
    for rec in read_jsonl(path):
        out.setdefault(rec["key"], {})[int(rec.get("run", 0))] = rec
    return out


def run_spread_pct(medians: list[float]) -> float:
    """How far apart a cell's runs are: (max - min) / min, in percent."""
    return 100.0 * (max(medians) - min(medians)) / min(medians)


def setting_for_run(net: N.NetworkSetting) -> str | None:
    """The string the launcher applies (None: no emulation). A setting's label is the text it
    was parsed from, except for the seed's "default (...)" row, which adds nothing."""
    return None if net.is_default else net.label


def measure_cell(out: Path, model: str, ranks: int, schedule: str, net: N.NetworkSetting, mbs: int, batch: int,
                 steps: int, warmup: int, timeout_s: float, trace: bool, run: int | str = 0) -> dict:
    from runtime.launch import run_local

    name = f"{schedule}_{_slug(net.label)}_mbs{mbs}"
    cell_dir = out / "runs" / name / f"run{run}"
    cell_dir.mkdir(parents=True, exist_ok=True)
    res_path = cell_dir / "results.json"
    argv = ["--model", model, "--schedule", schedule, "--micro-batch-size", str(mbs), "--batch-size", str(batch),
            "--steps", str(steps), "--warmup", str(warmup), "--out", str(res_path),
            "--steps-log", str(cell_dir / "steps.jsonl"), "--op-timeout", str(max(10.0, timeout_s / 2)),
            "--network", net.label]
    if trace:
        argv += ["--trace", str(cell_dir / "trace")]
    t0 = time.time()
    run_local("runtime", argv, ranks, network=setting_for_run(net), timeout_s=timeout_s, log_dir=cell_dir / "logs",
              echo=False)
    res = json.loads(res_path.read_text())
    st = res["step_time"]
    return {"median": st["median"], "p10": st["p10"], "p90": st["p90"], "n": st["n"], "wall_s": time.time() - t0,
            "results": str(res_path.relative_to(out)),
            "trace": str((cell_dir / "trace.csv").relative_to(out)) if trace else None}


def validate(out: str | Path = "out/validate", *, model: str = "cpu-small", ranks: int = 3,
             networks: str = "seed", micro_batch_sizes=(1, 2, 4), schedules=("gpipe", "1f1b"), batch_size: int = 4,
             steps: int = 30, warmup: int = 2, figures: str | Path | None = "figures", timeline_cell=None,
             window_probe: str | None = "delay 5ms", recalibrate: bool = False, cell_timeout_s: float = 300,
             calibrate_repeats: int = 20, repeats: int = 2, tiebreak_pct: float | None = 4.0) -> R.Summary:
    settings = N.parse_grid(networks) if isinstance(networks, str) else list(networks)
    if repeats < 1 or steps < 1:
        raise ValueError(f"--repeats and --steps must be at least 1, got {repeats} and {steps}")
    # everything the simulation would refuse, refused before minutes of calibration
    limits.RANKS.check(ranks, "--ranks")
    limits.RUN_STEPS.check(steps, "--steps")
    for net in settings:
        net.check_stages(ranks)
    E.check_grid_size(ranks, micro_batch_sizes, batch_size, SIM_STEPS, len(schedules) * len(settings),
                      names=("--micro-batch-sizes", "--batch-size", "steps"))
    out = output_dir(out, "--out")  # an existing folder, or one made now (under the current one, or in an existing one)
    prof_path = out / "profile.json"
    # 1. calibrate
    if recalibrate or not prof_path.exists():
        from calibrate.local import run_local_calibration

        _log(f"[1/4] calibrating {model} on {ranks} ranks, micro-batch sizes {list(micro_batch_sizes)} "
             f"(default network{', probe ' + window_probe if window_probe else ''})")
        run_local_calibration(ranks, model, list(micro_batch_sizes), out=prof_path, force=True,
                              repeats=calibrate_repeats, window_probe=window_probe,
                              log_dir=out / "calibrate-logs", echo=False)
    else:
        _log(f"[1/4] reusing {prof_path} (pass --recalibrate to measure again)")
    prof = P.load(prof_path)
    # 2. simulate from the profile only
    transport = E.Transport.for_backend(prof.device.get("backend"))
    cells = [(s, net, m) for s in schedules for net in settings for m in micro_batch_sizes]
    t0 = time.perf_counter()
    grid = run_grid(prof, settings, micro_batch_sizes, schedules, batch_size, transport, progress=False,
                    steps=SIM_STEPS)
    sims = {_cell_key(*k): r.step_time for k, r in grid.items()}
    _log(f"[2/4] simulated {len(cells)} cells in {time.perf_counter() - t0:.2f} s from {prof_path}")
    write_json_atomic(out / "simulated.json", {"profile": str(prof_path), "batch_size": batch_size,
                                                 "cells": [{"key": k, "simulated_s": v} for k, v in sims.items()]})
    # 3. measure (resumable): `repeats` passes over the cells, alternating direction, so a
    # slow spell of the machine lands on one run of a cell, not on all of them; then a
    # tie-break run for cells whose runs disagree by more than `tiebreak_pct`.
    mpath = out / "measured.jsonl"
    runs = load_runs(mpath)
    # the timeline: the last setting of the last schedule, with the most micro-batches
    tl = timeline_cell or (schedules[-1], settings[-1].label, micro_batch_sizes[0])

    def key_of(cell) -> str:
        return _cell_key(cell[0], cell[1].label, cell[2])

    def measure(i_run: int, todo: list, what: str) -> None:
        _log(f"[3/4] {what}: measuring {len(todo)} of {len(cells)} cells")
        for i, (s, net, m) in enumerate(todo, 1):
            key = key_of((s, net, m))
            meas = measure_cell(out, model, ranks, s, net, m, batch_size, steps, warmup, cell_timeout_s,
                                trace=i_run == 0 and (s, net.label, m) == tuple(tl), run=i_run)
            rec = {"key": key, "run": i_run, "schedule": s, "network": net.label, "micro_batch_size": m,
                   "batch_size": batch_size, **meas}
            append_jsonl(mpath, rec, fsync=True)
            runs.setdefault(key, {})[i_run] = rec
            err = 100 * (sims[key] - meas["median"]) / meas["median"]
            _log(f"  [{i}/{len(todo)}] {s:5s} {net.label:36s} mbs {m}: measured {meas['median']:.3f} s "
                 f"(p10-p90 {meas['p10']:.3f}-{meas['p90']:.3f}), simulated {sims[key]:.3f} s, {err:+.1f}%  "
                 f"[{meas['wall_s']:.0f} s]")

    for r in range(repeats):
        order = cells if r % 2 == 0 else cells[::-1]
        todo = [c for c in order if r not in runs.get(key_of(c), {})]
        if todo:
            measure(r, todo, f"pass {r + 1} of {repeats}")
    if repeats >= 2 and tiebreak_pct is not None:
        todo = [c for c in cells if repeats not in runs[key_of(c)]
                and run_spread_pct([x["median"] for x in runs[key_of(c)].values()]) > tiebreak_pct]
        if todo:
            measure(repeats, todo, f"tie-break (runs more than {tiebreak_pct:g}% apart)")
    if figures and _trace_csv(out, *tl) is None:
        # the timeline's cell was measured without a trace (e.g. by an older version): one traced run,
        # drawn only, not compared
        s, label, m = tl
        _log(f"[3/4] one traced run of {s}, {label}, mbs {m} for the timeline figure")
        measure_cell(out, model, ranks, s, next(n for n in settings if n.label == label), m, batch_size, steps,
                     warmup, cell_timeout_s, trace=True, run="trace")
    # 4. compare
    rows = []
    for s, net, m in cells:
        key = key_of((s, net, m))
        recs = [runs[key][i] for i in sorted(runs[key])]
        medians = [x["median"] for x in recs]
        rows.append({"schedule": s, "network": net.label, "micro_batch_size": m, "simulated_s": sims[key],
                     "measured_s": statistics.median(medians),
                     "measured_lo_s": statistics.median(x["p10"] for x in recs),
                     "measured_hi_s": statistics.median(x["p90"] for x in recs),
                     "runs_s": medians,
                     "step_spread_pct": statistics.median(100 * (x["p90"] - x["p10"]) / 2 / x["median"] for x in recs),
                     "noise_pct": run_spread_pct(medians) if len(medians) > 1 else None})
    summ = R.summarize(rows)
    n_runs = sorted({len(r["runs_s"]) for r in rows})
    step_spread = statistics.median(r["step_spread_pct"] for r in rows)
    text = [f"# Validation: {model}, {ranks} ranks, batch {batch_size}, {steps} measured steps per run",
            "", f"Profile: {prof_path} ({prof.source}). Predictions use only the profile.", "",
            R.comparison_table(rows), "",
            f"Measured: the median of each cell's runs ({'-'.join(map(str, n_runs))} per cell: {repeats} "
            f"pass{'es' if repeats > 1 else ''} in alternating order"
            + (f", one more where they were over {tiebreak_pct:g}% apart" if repeats >= 2 and tiebreak_pct is not None
               else "") + "); spread: the runs' median p10-p90 of steps.",
            f"Step-to-step spread (half the p10-p90 range, median over cells): {step_spread:.1f}%."]
    noisy = [r for r in rows if r["noise_pct"] is not None]
    if noisy:
        worst_noise = max(noisy, key=lambda r: r["noise_pct"])
        text.append(f"Run-to-run spread of a cell ((max - min) / min of its runs): median {summ.noise_pct:.1f}%, "
                    f"worst {worst_noise['noise_pct']:.1f}% ({R.cell_name(worst_noise)}).")
    text += ["", summ.last_line()]
    (out / "comparison.md").write_text("\n".join(text) + "\n")
    write_json_atomic(out / "comparison.json", {"cells": rows, "mape": summ.mape, "worst_pct": summ.worst_pct,
                                                  "worst_cell": summ.worst_cell, "noise_pct": summ.noise_pct,
                                                  "step_spread_pct": step_spread, "repeats": repeats,
                                                  "timeline_cell": list(tl),
                                                  "tiebreak_pct": tiebreak_pct})
    if figures:
        paths = make_figures(out, prof, rows, figures, tl, batch_size, transport, {n.label: n for n in settings})
        _log("[4/4] figures: " + ", ".join(str(p) for p in paths))
    print("\n".join(text[4:-1]))
    print(summ.last_line())
    return summ


def _trace_csv(out: Path, schedule: str, label: str, mbs: int) -> Path | None:
    cell = out / "runs" / f"{schedule}_{_slug(label)}_mbs{mbs}"
    return next((p for p in (cell / "run0" / "trace.csv", cell / "runtrace" / "trace.csv") if p.exists()), None)


def make_figures(out: Path, prof: P.Profile, rows, figures, tl, batch_size, transport, settings) -> list[Path]:
    from pipesim import plots

    figures = Path(figures)
    paths = [plots.parity(rows, figures / "parity.png",
                          title=f"Simulated vs measured ({len(rows)} cells, local testbed)"),
             plots.bars(rows, figures / "bars.png")]
    s, label, m = tl
    trace_csv = _trace_csv(out, s, label, m)
    if trace_csv is not None:
        measured = read_csv(trace_csv)
        steps = sorted({e.step for e in measured})
        sim = E.simulate(prof, s, m, batch_size, settings[label], transport=transport, steps=SIM_STEPS)
        write_trace(sim.trace, out / "sim_trace.json")
        paths.append(plots.timelines(sim.trace, measured, figures / "timeline.png",
                                     title=f"{s}, {label}, mbs {m}", sim_step=SIM_STEPS - 1,
                                     measured_step=steps[-1]))
    mbs = min(prof.micro_batch_sizes)  # the most micro-batches: where the two schedules differ most
    paths.append(plots.heatmap(prof, figures / "heatmap.png", micro_batch_size=mbs, batch_size=batch_size,
                               delays_ms=[0, 0.5, 1, 2, 5, 10, 20], bandwidths_gbps=[0.1, 0.2, 0.5, 1, 2, 5, 10],
                               transport=transport))
    return paths

