"""The ``pipesim validate``, ``demo``, ``plot`` and ``compare`` verbs (no torch at import time)."""

from __future__ import annotations

import argparse
import os
import sys

from calibrate.overhead import OVERHEAD_LAUNCHES

DEMO_NETWORKS = "default, delay 5ms, bandwidth 200Mbps, delay 10ms bandwidth 1Gbps"


def _ints(text: str) -> list[int]:
    from pipesim.util import parse_int_list

    return parse_int_list(text, "--micro-batch-sizes")


def _common(ap: argparse.ArgumentParser, out: str, networks: str, mbs: str, batch: int, steps: int,
            figures: str | None, repeats: int) -> None:
    """The flags validate and demo share; ``figures`` None: the figures go in ``<out>/figures``."""
    ap.add_argument("--out", default=out, help="working folder: profile, measured cells, comparison (default %(default)s)")
    ap.add_argument("--model", default="cpu-small", help="model preset (default %(default)s)")
    ap.add_argument("--ranks", type=int, default=3)
    ap.add_argument("--network", default=networks, help="'seed' or settings separated by ',' (default %(default)r)")
    ap.add_argument("--micro-batch-sizes", default=mbs)
    ap.add_argument("--schedules", default="gpipe,1f1b",
                    help="any of gpipe, 1f1b, interleaved1f1b, zbh1 (default %(default)s)")
    ap.add_argument("--stages-per-rank", type=int, default=None, metavar="V",
                    help="virtual stages per rank for interleaved1f1b (default 2)")
    ap.add_argument("--batch-size", type=int, default=batch)
    ap.add_argument("--steps", type=int, default=steps, help="measured steps per run (after 2 warm-up steps)")
    ap.add_argument("--repeats", type=int, default=repeats,
                    help="runs per cell, in passes of alternating order; the cell's time is their median "
                         "(default %(default)s)")
    ap.add_argument("--tiebreak-pct", type=float, default=4.0,
                    help="with 2+ repeats, one more run of a cell whose runs are more than this far apart "
                         "(default %(default)s%%)")
    ap.add_argument("--figures", default=figures,
                    help="folder for the figures ('' for none; default " + (figures or "<out>/figures") + ")")
    ap.add_argument("--recalibrate", action="store_true", help="calibrate again even if the folder has a profile")
    ap.add_argument("--accept-noise", action="store_true",
                    help="demo: print the MAPE even when the machine was too noisy to claim it (it says so anyway)")
    ap.add_argument("--window-probe", default="delay 5ms",
                    help="delayed setting under which links are probed for the single-connection cap ('' for none)")
    ap.add_argument("--no-shaped-probe", action="store_true",
                    help="calibration: skip probing the CPU that the grid's rate caps without a delay cost the ranks "
                         "(host.shaped_cpu; about 8 s per cap)")
    ap.add_argument("--overhead-launches", type=int, default=OVERHEAD_LAUNCHES, metavar="N",
                    help="calibration: launches of each (schedule, micro-batch size) in the runtime-overhead probe "
                         "(default %(default)s)")
    ap.add_argument("--level-probe", action="store_true",
                    help="re-probe the machine's level with a short runtime launch before each network setting and "
                         "print the recalibrated prediction beside the profile's (about 6.5 s per setting and pass; "
                         "docs/validate.md)")
    ap.add_argument("--overhead-method", choices=["cpu", "trace"], default="cpu",
                    help="the calibration's estimate of the runtime's time per action: CPU accounting (default) or "
                         "wall time in context from the probe's traces (both are recorded in the profile's raw)")


def _run(ns: argparse.Namespace, demo: bool) -> int:
    from loop.noise import TARGETS
    from loop.validate import validate
    from pipesim import network as N
    from pipesim.cmd_sim import parse_schedules, stages_per_rank
    from runtime.launch import LaunchError
    from testbed import available

    networks = ns.network
    settings = N.parse_grid(networks)
    for s in settings:  # refused here, before the testbed is looked at or anything is calibrated
        s.check_stages(ns.ranks)
    ok, why = available()
    if not ok:
        kept = [s for s in settings if s.is_default]
        print(f"pipesim {'demo' if demo else 'validate'}: the local testbed is not available ({why}); "
              "calibrating without the delayed-link probe and comparing only the default-network cells "
              "(pipesim grid simulates the rest).", file=sys.stderr)
        ns.window_probe = ""
        if not kept:
            print("no default-network cell to measure without the testbed", file=sys.stderr)
            return 2
        networks = kept
    schedules = tuple(parse_schedules(ns.schedules, runtime_only=True))
    v = stages_per_rank(ns, schedules)
    if ns.figures is None:   # the demo's figures go with its folder: out/demo-2 gets out/demo-2/figures
        ns.figures = os.path.join(ns.out, "figures")
    try:
        validate(ns.out, model=ns.model, ranks=ns.ranks, networks=networks, stages_per_rank=v,
                 micro_batch_sizes=_ints(ns.micro_batch_sizes), schedules=schedules,
                 batch_size=ns.batch_size, steps=ns.steps, figures=ns.figures or None, repeats=ns.repeats,
                 tiebreak_pct=ns.tiebreak_pct, recalibrate=ns.recalibrate, window_probe=ns.window_probe or None,
                 overhead_method=ns.overhead_method, overhead_launches=ns.overhead_launches,
                 shaped_probe=not ns.no_shaped_probe,
                 refuse_noisy=demo and not ns.accept_noise, level_probe=ns.level_probe,
                 target=TARGETS["demo" if demo else "validate"])
    except LaunchError as e:
        print(f"pipesim validate: {e}\nmeasured cells so far are kept in {os.path.join(ns.out, 'measured.jsonl')}; "
              "run the same command again to resume", file=sys.stderr)
        return 1
    return 0


def _plot(ns: argparse.Namespace) -> int:
    """Redraw the figures of a validation folder from its measured.jsonl and profile.json
    (no measuring, no torch), through the comparison ``pipesim compare`` uses."""
    import json
    from pathlib import Path

    from loop import compare as C
    from loop import measured as M
    from loop.validate import make_figures
    from pipesim import engine as E
    from pipesim import profile as P
    from pipesim.util import output_dir

    out = Path(ns.out)
    mpath, ppath = out / "measured.jsonl", out / "profile.json"
    for need in (mpath, ppath):
        if not need.exists():
            raise FileNotFoundError(f"{need} not found: run 'pipesim validate --out {out}' first")
    figures = output_dir(ns.figures, "--figures")  # before any work; refused outside the current folder
    prof = P.load(ppath)
    transport = E.Transport.for_profile(prof)
    skipped: list[str] = []
    rows = C.build_rows(prof, M.read_measured_jsonl(mpath), transport, skipped=skipped)
    for s in skipped:
        print(f"pipesim plot: skipped {s}", file=sys.stderr)
    if not rows:
        raise ValueError(f"no cell of {mpath} can be simulated with {ppath}")
    comp = out / "comparison.json"
    tl = json.loads(comp.read_text()).get("timeline_cell") if comp.exists() else None
    last = rows[-1]
    tl = tl or (last["schedule"], last["network"], last["micro_batch_size"])
    paths = make_figures(out, prof, rows, figures, tuple(tl), transport)
    print("\n".join(str(p) for p in paths))
    return 0


def _compare(ns: argparse.Namespace) -> int:
    from loop.compare import compare

    lines, _, written = compare(ns.measured, ns.profile, batch_size=ns.batch_size, figures=ns.figures or None,
                                out=ns.out)
    for p in written:
        print(f"wrote {p}", file=sys.stderr)
    print("\n".join(lines))
    return 0


def register(sub) -> None:
    ap = sub.add_parser("validate", help="calibrate, simulate a grid, measure it on the local testbed, compare, plot")
    _common(ap, "out/validate", "seed", "1,2,4", 4, 30, "figures", 2)
    ap.set_defaults(func=lambda ns: _run(ns, demo=False))
    ap = sub.add_parser("plot", help="redraw the figures of a validation folder")
    ap.add_argument("--out", default="out/validate", help="the validation folder (default %(default)s)")
    ap.add_argument("--figures", default="figures", help="where to write the figures (default %(default)s)")
    ap.set_defaults(func=_plot)
    ap = sub.add_parser("compare", help="measured step times (measured.jsonl, run results, CSV, a filled seed table) "
                                        "beside the profile's predictions: table, MAPE, figures")
    ap.add_argument("--profile", metavar="P", help="profile JSON (default: the bundled GPT-3 small estimate)")
    ap.add_argument("--measured", nargs="+", required=True, metavar="M",
                    help="measured.jsonl, 'pipesim run' results (.json, or a folder of *results*.json), "
                         ".csv (schedule, network, micro_batch_size, batch_size, step_time_s[, step_time_p10_s, "
                         "step_time_p90_s]) or .md (the seed's tables, filled in)")
    ap.add_argument("--batch-size", type=int, metavar="B",
                    help="batch size of tables that do not record it (required for .md); cells recorded at "
                         "another batch size are skipped")
    ap.add_argument("--figures", metavar="DIR", help="folder for parity.png, bars.png, heatmap.png (default: none)")
    ap.add_argument("--out", metavar="DIR", help="folder for comparison.md and comparison.json (default: print only)")
    ap.set_defaults(func=_compare)
    ap = sub.add_parser("demo", help="the whole loop on a reduced grid with the CPU preset (a few minutes)")
    _common(ap, "out/demo", DEMO_NETWORKS, "1,4", 4, 20, None, 2)
    ap.set_defaults(func=lambda ns: _run(ns, demo=True))
