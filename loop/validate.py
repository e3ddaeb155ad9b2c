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
   The last line printed is ``MAPE: gpipe X.X%, 1f1b Y.Y%, worst Z.Z% (cell)``. This is
   :mod:`loop.compare`, the path ``pipesim compare`` and ``pipesim plot`` take too.

Torch is imported here only for the compute probe before each run (:mod:`calibrate.drift`);
everything else runs in the ranks.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path

from calibrate.overhead import OVERHEAD_LAUNCHES, check_launches
from loop import compare as C
from loop import measured as M
from loop import report as R
from loop.compare import SIM_STEPS
from loop.measured import run_spread_pct
from pipesim import context as CX
from pipesim import engine as E
from pipesim import limits
from pipesim import network as N
from pipesim import profile as P
from pipesim import schedule as S
from pipesim.cmd_sim import check_schedules, run_grid
from pipesim.replay import replay
from pipesim.schedule import DEFAULT_STAGES_PER_RANK
from pipesim.trace import read_csv
from pipesim.trace import write as write_trace
from pipesim.util import append_jsonl, output_dir, quantile, read_jsonl, write_json_atomic

__all__ = ["SIM_STEPS", "load_runs", "make_figures", "measure_cell", "run_spread_pct", "validate"]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cell_key(schedule: str, label: str, mbs: int) -> str:
    return f"{schedule}|{label}|{mbs}"


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in label.split(" (")[0]).strip("-").replace("--", "-")


def load_runs(path: Path) -> dict[str, dict[int, dict]]:
    """Measured runs by cell key, then run index (records without one are run 0). A line cut
    by a crash is skipped: that run is measured again. Runs flagged ``disturbed`` stay in the
    log but do not count (their run index was measured again)."""
    out: dict[str, dict[int, dict]] = {}
    for rec in read_jsonl(path):
        if not rec.get("disturbed"):
            out.setdefault(rec["key"], {})[int(rec.get("run", 0))] = rec
    return out


# A run is disturbed, and measured again (at most RETRIES times), when processes other than
# its ranks (and the launcher and testbed) used more than this share of one core over it, or
# the hypervisor stole more than this share of the machine's time.
OTHER_CPU_MAX_PCT = 15.0
STEAL_MAX_PCT = 5.0
RETRIES = 2


def disturbed(usage: dict) -> str | None:
    """Why a run's measurement cannot be trusted, from the machine's usage over it (None: quiet)."""
    why = []
    if usage.get("other_cpu_pct", 0.0) > OTHER_CPU_MAX_PCT:
        why.append(f"other processes used {usage['other_cpu_pct']:.0f}% of a core (over {OTHER_CPU_MAX_PCT:g}%)")
    if usage.get("steal_pct", 0.0) > STEAL_MAX_PCT:
        why.append(f"steal time {usage['steal_pct']:.0f}% (over {STEAL_MAX_PCT:g}%)")
    return "; ".join(why) or None


def setting_for_run(net: N.NetworkSetting) -> str | None:
    """The string the launcher applies (None: no emulation). A setting's label is the text it
    was parsed from, except for the seed's "default (...)" row, which adds nothing."""
    return None if net.is_default else net.label


def measure_cell(out: Path, model: str, ranks: int, schedule: str, net: N.NetworkSetting, mbs: int, batch: int,
                 steps: int, warmup: int, timeout_s: float, trace: bool, run: int | str = 0,
                 profile: P.Profile | None = None, transport: E.Transport | None = None,
                 stages_per_rank: int = 1, compute_probe=None, compute_ref: dict | None = None) -> dict:
    """One run of a cell. Its trace is always kept (CSV; also Chrome JSON with ``trace``); with a
    ``profile``, the run is replayed with its own compute durations (``replay_s``).
    ``stages_per_rank``: for interleaved schedules (ignored by the others). With a
    ``compute_probe`` (:class:`calibrate.drift.ComputeProbe`), the model's compute is probed
    right before the launch (``compute_probe_s``) and, against ``compute_ref`` (the same probe
    right after calibration), gives the run's ``compute_drift``."""
    from runtime.launch import run_local
    from runtime.speed import speed_probe

    name = f"{schedule}_{_slug(net.label)}_mbs{mbs}"
    cell_dir = out / "runs" / name / f"run{run}"
    cell_dir.mkdir(parents=True, exist_ok=True)
    res_path = cell_dir / "results.json"
    argv = ["--model", model, "--schedule", schedule, "--micro-batch-size", str(mbs), "--batch-size", str(batch),
            "--steps", str(steps), "--warmup", str(warmup), "--out", str(res_path),
            "--steps-log", str(cell_dir / "steps.jsonl"), "--op-timeout", str(max(10.0, timeout_s / 2)),
            "--network", net.label, "--trace", str(cell_dir / ("trace" if trace else "trace.csv"))]
    v = stages_per_rank if schedule in S.VIRTUAL else 1
    if schedule in S.VIRTUAL:
        argv += ["--stages-per-rank", str(v)]
    speed = speed_probe()
    probed = compute_probe.measure(mbs) if compute_probe is not None else None
    t0 = time.time()
    launched = run_local("runtime", argv, ranks, network=setting_for_run(net), timeout_s=timeout_s,
                         log_dir=cell_dir / "logs", echo=False)
    res = json.loads(res_path.read_text())
    st = res["step_time"]
    rec = {"median": st["median"], "p10": st["p10"], "p90": st["p90"], "n": st["n"], "wall_s": time.time() - t0,
           "results": str(res_path.relative_to(out)), "trace": str((cell_dir / "trace.csv").relative_to(out)),
           "usage": launched.usage, "speed_ms": speed["median_ms"],
           **({"stages_per_rank": v} if schedule in S.VIRTUAL else {})}
    if probed is not None:
        from calibrate.drift import compute_drift

        rec["compute_probe_s"] = probed["per_rank_s"]
        if compute_ref is not None:
            rec["compute_drift"] = compute_drift(probed, compute_ref)
    if profile is not None:
        rp = replay(profile, read_csv(cell_dir / "trace.csv"), schedule, mbs, batch, net, warmup=warmup,
                    transport=transport, stages_per_rank=v)
        rec["replay_s"] = rp.step_time
        rec.update(run_speed(profile, res, schedule, mbs, batch, net, transport, v))
    return rec


def run_speed(profile: P.Profile, res: dict, schedule: str, mbs: int, batch: int, net: N.NetworkSetting,
              transport: E.Transport | None, stages_per_rank: int) -> dict:
    """A CPU run's speed against the profile, from its ranks' CPU per step
    (:func:`pipesim.context.cpu_replay`): ``cpu_drift`` (the median over ranks of the run's CPU
    per step over the profile's, 1.0: as calibrated), ``cpu_factors`` (per rank),
    ``speed_replay_s`` (the cell simulated at those speeds) and ``speed_basis`` ("compute": the
    CPU inside the computations against the overhead probe's, where both were recorded; else
    "process"). Empty for a GPU run (its CPU time is not its compute) or results without every
    rank's CPU per step."""
    per = sorted(res.get("per_rank") or [], key=lambda x: x.get("rank", 0))
    if res.get("device", "cpu") != "cpu" or len(per) != profile.num_stages:
        return {}
    try:
        cpu = [float(x["cpu_per_step"]["median"]) for x in per]
        comp = [(x.get("compute_cpu_per_step") or {}).get("median") for x in per]
        usable = all(isinstance(c, (int, float)) and c > 0 and math.isfinite(c) for c in comp)
        cr = CX.cpu_replay(profile, schedule, mbs, batch, net, cpu, transport=transport,
                           stages_per_rank=stages_per_rank if schedule in S.VIRTUAL else None,
                           run_compute_cpu_per_step=[float(c) for c in comp if c is not None] if usable else None)
    except (KeyError, TypeError, ValueError) as e:
        _log(f"  run speed not measured: {e}")
        return {}
    return {"cpu_drift": cr.drift, "cpu_factors": list(cr.factors), "speed_replay_s": cr.step_time,
            "speed_basis": cr.basis}


def validate(out: str | Path = "out/validate", *, model: str = "cpu-small", ranks: int = 3,
             networks: str = "seed", micro_batch_sizes=(1, 2, 4), schedules=("gpipe", "1f1b"), batch_size: int = 4,
             steps: int = 30, warmup: int = 2, figures: str | Path | None = "figures", timeline_cell=None,
             window_probe: str | None = "delay 5ms", recalibrate: bool = False, cell_timeout_s: float = 300,
             calibrate_repeats: int = 20, repeats: int = 2, tiebreak_pct: float | None = 4.0,
             retries: int = RETRIES, refuse_noisy: bool = False, overhead_method: str = "cpu",
             overhead_launches: int = OVERHEAD_LAUNCHES,
             stages_per_rank: int = DEFAULT_STAGES_PER_RANK, track_compute: bool = True,
             level_probe: bool = False, target: tuple[float, float] | None = None,
             shaped_probe: bool = True) -> R.Summary:
    """Calibrate, simulate, measure and compare a grid on this machine (see the module
    docstring). ``stages_per_rank``: the v of interleaved schedules (calibrated per
    virtual stage, run, simulated and replayed with it). ``level_probe``: a short runtime
    re-probe of the machine's CPU level before each network setting, and each run's
    recalibrated prediction from it (:mod:`loop.level`). ``target``: (MAPE per schedule, worst
    cell) in percent, the claim the noise floor's line weighs (:data:`loop.noise.TARGETS`).
    ``shaped_probe``: calibration also probes the CPU that the grid's rate caps without a
    delay cost the ranks (:mod:`calibrate.shaped`), which the simulator then charges."""
    settings = N.parse_grid(networks) if isinstance(networks, str) else list(networks)
    v = stages_per_rank
    if repeats < 1 or steps < 1:
        raise ValueError(f"--repeats and --steps must be at least 1, got {repeats} and {steps}")
    check_launches(overhead_launches)
    # everything the simulation would refuse, refused before minutes of calibration
    limits.RANKS.check(ranks, "--ranks")
    limits.RUN_STEPS.check(steps, "--steps")
    for net in settings:
        net.check_stages(ranks)
    E.check_grid_size(ranks, micro_batch_sizes, batch_size, SIM_STEPS, len(settings),
                      names=("--micro-batch-sizes", "--batch-size", "steps"),
                      shapes=[(v if s in S.VIRTUAL else 1, s in S.SPLIT_BACKWARD) for s in schedules])
    check_schedules(ranks, schedules, micro_batch_sizes, batch_size, v)
    out = output_dir(out, "--out")  # an existing folder, or one made now (under the current one, or in an existing one)
    if figures:
        figures = output_dir(figures, "--figures")
    prof_path = out / "profile.json"
    # 1. calibrate
    if recalibrate or not prof_path.exists():
        from calibrate.local import run_local_calibration
        from calibrate.shaped import rate_text, rates_of

        shaped = rates_of(settings) if shaped_probe and ranks > 1 else []
        _log(f"[1/4] calibrating {model} on {ranks} ranks, micro-batch sizes {list(micro_batch_sizes)} "
             f"(default network{', probe ' + window_probe if window_probe else ''}"
             + (f"; CPU under the caps {', '.join(rate_text(r) for r in shaped)}" if shaped else "") + ")")
        run_local_calibration(ranks, model, list(micro_batch_sizes), out=prof_path, force=True,
                              repeats=calibrate_repeats, window_probe=window_probe, overhead_method=overhead_method,
                              overhead_launches=overhead_launches, shaped_rates=shaped,
                              log_dir=out / "calibrate-logs", echo=False,
                              # B and W separately for the schedules that split the backward
                              extra_args=(["--split-backward"] if set(schedules) & set(S.SPLIT_BACKWARD) else [])
                              + (["--stages-per-rank", str(v)] if set(schedules) & set(S.VIRTUAL) else []))
        for ref in ("speed.json", "compute_probe.json"):   # the speed references belong to this calibration
            (out / ref).unlink(missing_ok=True)
    else:
        _log(f"[1/4] reusing {prof_path} (pass --recalibrate to measure again)")
    prof = P.load(prof_path)
    speed_ref = _speed_reference(out)
    cprobe, cref = _compute_reference(out, model, ranks, micro_batch_sizes) if track_compute else (None, {})
    # 2. simulate from the profile only
    transport = E.Transport.for_profile(prof)
    cells = [(s, net, m) for s in schedules for net in settings for m in micro_batch_sizes]
    t0 = time.perf_counter()
    grid = run_grid(prof, settings, micro_batch_sizes, schedules, batch_size, transport, progress=False,
                    steps=SIM_STEPS, stages_per_rank=v)
    sims = {_cell_key(*k): r.step_time for k, r in grid.items()}
    _log(f"[2/4] simulated {len(cells)} cells in {time.perf_counter() - t0:.2f} s from {prof_path}")
    write_json_atomic(out / "simulated.json", {"profile": str(prof_path), "batch_size": batch_size,
                                                 "cells": [{"key": k, "simulated_s": v} for k, v in sims.items()]})
    # 3. measure (resumable): `repeats` passes over the cells, alternating direction, so a
    # slow spell of the machine lands on one run of a cell, not on all of them; then a
    # tie-break run for cells whose runs disagree by more than `tiebreak_pct`.
    mpath = out / "measured.jsonl"
    runs = load_runs(mpath)
    levels = None
    if level_probe and prof.device.get("type", "cpu") == "cpu":   # a GPU run's CPU time is not its compute
        from loop.level import LevelProbe

        levels = LevelProbe(out, model, ranks, prof, transport, min(micro_batch_sizes), stages_per_rank=v,
                            timeout_s=cell_timeout_s)
    # the timeline: the last setting of the last schedule, with the most micro-batches
    tl = timeline_cell or (schedules[-1], settings[-1].label, micro_batch_sizes[0])

    def key_of(cell) -> str:
        return _cell_key(cell[0], cell[1].label, cell[2])

    def measure(i_run: int, todo: list, what: str) -> None:
        _log(f"[3/4] {what}: measuring {len(todo)} of {len(cells)} cells"
             + (", re-probing the machine's level before each setting" if levels is not None else ""))
        group = None
        for i, (s, net, m) in enumerate(todo, 1):
            key = key_of((s, net, m))
            if levels is not None and (s, net.label) != group:
                group = (s, net.label)
                lv = levels.measure(s, key)
                _log(f"  level probe ({s}, default network): CPU x{lv['cpu_drift']:.3f}"
                     if "cpu_drift" in lv else "  level probe: no CPU per step read")
            for attempt in range(retries + 1):
                meas = measure_cell(out, model, ranks, s, net, m, batch_size, steps, warmup, cell_timeout_s,
                                    trace=(s, net.label, m) == tuple(tl), run=i_run, profile=prof,
                                    transport=transport, stages_per_rank=v, compute_probe=cprobe,
                                    compute_ref=cref.get(str(m)))
                rec = {"key": key, "run": i_run, "schedule": s, "network": net.label, "micro_batch_size": m,
                       "batch_size": batch_size, **meas}
                if meas.get("speed_ms"):
                    rec["drift_pct"] = 100 * (meas["speed_ms"] / speed_ref - 1)
                rc = levels.predict(s, net, m, batch_size, SIM_STEPS, v) if levels is not None else None
                if rc is not None:
                    rec["level"], rec["recal_s"], rec["level_readings"] = rc
                why = disturbed(meas.get("usage") or {})
                if why and attempt < retries:
                    rec["disturbed"] = why  # kept in the log, not counted
                    append_jsonl(mpath, rec, fsync=True)
                    _log(f"  [{i}/{len(todo)}] {s:5s} {net.label:36s} mbs {m}: disturbed ({why}); measuring again")
                    continue
                if why:
                    rec["noisy"] = why  # still disturbed after the retries: counted, and said so
                append_jsonl(mpath, rec, fsync=True)
                break
            runs.setdefault(key, {})[i_run] = rec
            err = 100 * (sims[key] - meas["median"]) / meas["median"]
            rerr = f", replay {100 * (meas['replay_s'] - meas['median']) / meas['median']:+.1f}%" \
                if "replay_s" in meas else ""
            _log(f"  [{i}/{len(todo)}] {s:5s} {net.label:36s} mbs {m}: measured {meas['median']:.3f} s "
                 f"(p10-p90 {meas['p10']:.3f}-{meas['p90']:.3f}), simulated {sims[key]:.3f} s, {err:+.1f}%"
                 f"{rerr}" + (f", drift {rec['drift_pct']:+.0f}%" if "drift_pct" in rec else "")
                 + (f", CPU x{meas['cpu_drift']:.2f}" if "cpu_drift" in meas else "")
                 + f"  [{meas['wall_s']:.0f} s]")

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
                     warmup, cell_timeout_s, trace=True, run="trace", stages_per_rank=v)
    # 4. compare (loop/compare.py, as pipesim compare and pipesim plot)
    measured = []
    for s, net, m in cells:
        recs = [runs[key_of((s, net, m))][i] for i in sorted(runs[key_of((s, net, m))])]
        measured.append(M.cell_from_runs([M.run_record(s, net.label, m, batch_size, x["median"], x["p10"], x["p90"],
                                                       str(mpath), stages_per_rank=x.get("stages_per_rank"),
                                                       replay_s=x.get("replay_s"),
                                                       drift_pct=x.get("drift_pct"),
                                                       compute_drift=x.get("compute_drift"),
                                                       cpu_drift=x.get("cpu_drift"),
                                                       speed_replay_s=x.get("speed_replay_s"),
                                                       recal_s=x.get("recal_s")) for x in recs]))
    skipped: list[str] = []
    rows = C.build_rows(prof, measured, transport, simulated={k: r.step_time for k, r in grid.items()},
                        skipped=skipped)
    for reason in skipped:
        _log(f"[4/4] not compared: {reason}")
    summ = R.summarize(rows)
    n_runs = sorted({len(r["runs_s"]) for r in rows})
    notes = [f"Measured: the median of each cell's runs ({'-'.join(map(str, n_runs))} per cell: {repeats} "
             f"pass{'es' if repeats > 1 else ''} in alternating order"
             + (f", one more where they were over {tiebreak_pct:g}% apart" if repeats >= 2 and tiebreak_pct is not None
                else "") + "); spread: the runs' median p10-p90 of steps.", *C.spread_lines(rows, summ, target)]
    consistency = CX.probe_consistency(prof)
    if consistency is not None:
        notes.append(consistency_line(consistency))
    text = C.render(f"# Validation: {model}, {ranks} ranks, batch {batch_size}, {steps} measured steps per run",
                    [f"Profile: {prof_path} ({prof.source}). Predictions use only the profile."], rows, notes, summ)
    C.write_outputs(out, text, C.comparison_doc(rows, summ, target, repeats=repeats, timeline_cell=list(tl),
                                                tiebreak_pct=tiebreak_pct))
    if figures:
        paths = make_figures(out, prof, rows, figures, tl, transport,
                             title=f"Simulated vs measured ({len(rows)} cells, local testbed)")
        _log("[4/4] figures: " + ", ".join(str(p) for p in paths))
    print("\n".join(C.body_lines(rows, notes)))
    why = _explain_worst(out, rows)
    if why:
        print("\n" + why + "\n")
    lines = summ.lines()
    noisy = too_noisy([x for by in runs.values() for x in by.values()])
    if noisy and refuse_noisy:
        lines[-1] = f"MAPE: not claimed: the machine was too noisy for it ({noisy}); measured: {lines[-1][6:]}"
    elif noisy:
        lines.insert(-1, f"Warning: the machine was noisy ({noisy}).")
    print("\n".join(lines))
    return summ


def consistency_line(c: tuple[float, float, float]) -> str:
    """The calibration's own consistency (:func:`pipesim.context.probe_consistency`), one line."""
    med, lo, hi = c
    return (f"Calibration's consistency: the overhead probe's computations took {med:.2f}x the calibrated compute "
            f"(median over its launches; {lo:.2f}-{hi:.2f}). The profile's overhead is the probe's excess over "
            f"that compute, so a slow spell during either piece moves this; well above the usual, the overhead "
            f"carries the probe's spell (docs/validate.md).")


NOISY_RUNS_MAX = 0.25  # share of runs still disturbed after their retries
DRIFT_SPREAD_MAX_PCT = 20.0  # fastest to slowest run, by the speed probe


def too_noisy(records: list[dict]) -> str | None:
    """Why a validation's figures cannot be trusted as a claim (None: they can)."""
    why = []
    noisy = [r for r in records if r.get("noisy")]
    if records and len(noisy) > NOISY_RUNS_MAX * len(records):
        why.append(f"{len(noisy)} of {len(records)} runs disturbed by other processes or steal even after "
                   f"{RETRIES} retries")
    drifts = [r["drift_pct"] for r in records if r.get("drift_pct") is not None]
    if drifts:
        lo, hi = quantile(drifts, 0.1), quantile(drifts, 0.9)   # one hiccup of the probe is not a drift
        if hi - lo > DRIFT_SPREAD_MAX_PCT:
            why.append(f"the machine's speed moved {hi - lo:.0f} points between runs (p10 {lo:+.0f}% to p90 "
                       f"{hi:+.0f}% against calibration; over {DRIFT_SPREAD_MAX_PCT:g})")
    return "; ".join(why) or None


def _explain_worst(out: Path, rows: list[dict]) -> str | None:
    """``pipesim explain`` of the cell with the largest prediction error (None without traces)."""
    from loop.explain import explain_cell

    worst = max(rows, key=lambda r: abs(R.error_pct(r)))
    try:
        text = explain_cell(out, worst["schedule"], worst["network"], worst["micro_batch_size"], top=6)
    except (ValueError, KeyError, OSError) as e:
        _log(f"[4/4] explain of the worst cell skipped: {e}")
        return None
    cmd = (f"pipesim explain --out {out} --schedule {worst['schedule']} --network '{worst['network']}' "
           f"--micro-batch-size {worst['micro_batch_size']}")
    return f"The worst cell, explained ({cmd}; add --against replay for the replay error):\n\n{text}"


def _speed_reference(out: Path) -> float:
    """The machine's speed probe (ms per loop) right after calibration, kept in ``<out>/speed.json``."""
    from runtime.speed import speed_probe

    path = out / "speed.json"
    if path.exists():
        return float(json.loads(path.read_text())["median_ms"])
    ref = speed_probe()
    write_json_atomic(path, ref)
    return float(ref["median_ms"])


def _compute_reference(out: Path, model: str, ranks: int, micro_batch_sizes) -> tuple:
    """The compute probe (:mod:`calibrate.drift`) and its reference per micro-batch size, taken
    right after calibration and kept in ``<out>/compute_probe.json`` (a resumed validation
    compares with the same reference)."""
    from calibrate.drift import ComputeProbe

    probe = ComputeProbe(model, ranks)
    path = out / "compute_probe.json"
    ref = json.loads(path.read_text()) if path.exists() else {}
    missing = [m for m in micro_batch_sizes if str(m) not in ref]
    for m in missing:   # three probes, the median per rank: every drift of the validation is against it
        takes = [probe.measure(m) for _ in range(3)]
        ref[str(m)] = {**takes[-1], "per_rank_s": [statistics.median(t["per_rank_s"][r] for t in takes)
                                                   for r in range(ranks)], "takes": len(takes)}
    if missing:
        write_json_atomic(path, ref)
    return probe, ref


def _trace_csv(out: Path, schedule: str, label: str, mbs: int) -> Path | None:
    cell = out / "runs" / f"{schedule}_{_slug(label)}_mbs{mbs}"
    return next((p for p in (cell / "run0" / "trace.csv", cell / "runtrace" / "trace.csv") if p.exists()), None)


def make_figures(out: Path, prof: P.Profile, rows, figures, tl, transport, title: str | None = None) -> list[Path]:
    """The comparison's figures (:func:`loop.compare.draw`: parity, bars, heatmap) and, where
    the timeline cell ``tl`` has a measured trace, the simulated and measured timelines."""
    from pipesim import plots

    paths = C.draw(prof, rows, figures, transport, title=title)
    s, label, m = tl
    trace_csv = _trace_csv(out, s, label, m)
    row = next((r for r in rows if (r["schedule"], r["network"], r["micro_batch_size"]) == (s, label, m)), None)
    if trace_csv is not None and row is not None:
        measured = read_csv(trace_csv)
        steps = sorted({e.step for e in measured})
        sim = E.simulate(prof, s, m, row["batch_size"], C.setting_of(label), transport=transport, steps=SIM_STEPS,
                         stages_per_rank=C.stages_of(row))
        write_trace(sim.trace, out / "sim_trace.json")
        paths.append(plots.timelines(sim.trace, measured, Path(figures) / "timeline.png",
                                     title=f"{s}, {label}, mbs {m}", sim_step=SIM_STEPS - 1,
                                     measured_step=steps[-1]))
    return paths
