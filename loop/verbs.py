"""The ``pipesim validate`` and ``pipesim demo`` verbs (no torch at import time)."""

from __future__ import annotations

import argparse
import os
import sys

DEMO_NETWORKS = "default, delay 5ms, bandwidth 200Mbps, delay 10ms bandwidth 1Gbps"


def _ints(text: str) -> list[int]:
    from pipesim.util import parse_int_list

    return parse_int_list(text, "--micro-batch-sizes")


def _common(ap: argparse.ArgumentParser, out: str, networks: str, mbs: str, batch: int, steps: int,
            figures: str, repeats: int) -> None:
    ap.add_argument("--out", default=out, help="working folder: profile, measured cells, comparison (default %(default)s)")
    ap.add_argument("--model", default="cpu-small", help="model preset (default %(default)s)")
    ap.add_argument("--ranks", type=int, default=3)
    ap.add_argument("--network", default=networks, help="'seed' or settings separated by ',' (default %(default)r)")
    ap.add_argument("--micro-batch-sizes", default=mbs)
    ap.add_argument("--schedules", default="gpipe,1f1b")
    ap.add_argument("--batch-size", type=int, default=batch)
    ap.add_argument("--steps", type=int, default=steps, help="measured steps per run (after 2 warm-up steps)")
    ap.add_argument("--repeats", type=int, default=repeats,
                    help="runs per cell, in passes of alternating order; the cell's time is their median "
                         "(default %(default)s)")
    ap.add_argument("--tiebreak-pct", type=float, default=4.0,
                    help="with 2+ repeats, one more run of a cell whose runs are more than this far apart "
                         "(default %(default)s%%)")
    ap.add_argument("--figures", default=figures, help="folder for the figures ('' for none; default %(default)s)")
    ap.add_argument("--recalibrate", action="store_true", help="calibrate again even if the folder has a profile")
    ap.add_argument("--window-probe", default="delay 5ms",
                    help="delayed setting under which links are probed for the single-connection cap ('' for none)")


def _run(ns: argparse.Namespace, demo: bool) -> int:
    from loop.validate import validate
    from pipesim import network as N
    from pipesim.cmd_sim import parse_schedules
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
    try:
        validate(ns.out, model=ns.model, ranks=ns.ranks, networks=networks,
                 micro_batch_sizes=_ints(ns.micro_batch_sizes), schedules=tuple(parse_schedules(ns.schedules)),
                 batch_size=ns.batch_size, steps=ns.steps, figures=ns.figures or None, repeats=ns.repeats,
                 tiebreak_pct=ns.tiebreak_pct,
                 recalibrate=ns.recalibrate, window_probe=ns.window_probe or None)
    except LaunchError as e:
        print(f"pipesim validate: {e}\nmeasured cells so far are kept in {os.path.join(ns.out, 'measured.jsonl')}; "
              "run the same command again to resume", file=sys.stderr)
        return 1
    return 0


def _plot(ns: argparse.Namespace) -> int:
    """Redraw the figures of a finished validation folder (no measuring, no torch)."""
    import json
    from pathlib import Path

    from loop.validate import make_figures
    from pipesim import engine as E
    from pipesim import network as N
    from pipesim import profile as P

    out = Path(ns.out)
    comp = out / "comparison.json"
    if not comp.exists():
        raise FileNotFoundError(f"{comp} not found: run 'pipesim validate --out {out}' first")
    doc = json.loads(comp.read_text())
    rows = doc["cells"]
    prof = P.load(out / "profile.json")
    labels = list(dict.fromkeys(r["network"] for r in rows))
    settings = {lbl: (N.seed_setting(lbl) if lbl in N.SEED_LABELS else N.parse(lbl)) for lbl in labels}
    last = rows[-1]
    tl = doc.get("timeline_cell") or (last["schedule"], last["network"], last["micro_batch_size"])
    paths = make_figures(out, prof, rows, ns.figures, tuple(tl),
                         json.loads((out / "simulated.json").read_text())["batch_size"],
                         E.Transport.for_backend(prof.device.get("backend")), settings)
    print("\n".join(str(p) for p in paths))
    return 0


def register(sub) -> None:
    ap = sub.add_parser("validate", help="calibrate, simulate a grid, measure it on the local testbed, compare, plot")
    _common(ap, "out/validate", "seed", "1,2,4", 4, 30, "figures", 2)
    ap.set_defaults(func=lambda ns: _run(ns, demo=False))
    ap = sub.add_parser("plot", help="redraw the figures of a validation folder")
    ap.add_argument("--out", default="out/validate", help="the validation folder (default %(default)s)")
    ap.add_argument("--figures", default="figures", help="where to write the figures (default %(default)s)")
    ap.set_defaults(func=_plot)
    ap = sub.add_parser("demo", help="the whole loop on a reduced grid with the CPU preset (a few minutes)")
    _common(ap, "out/demo", DEMO_NETWORKS, "1,4", 4, 20, "out/demo/figures", 1)
    ap.set_defaults(func=lambda ns: _run(ns, demo=True))
