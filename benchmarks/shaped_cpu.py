"""Does charging the CPU of a rate cap without a delay (``host.shaped_cpu``) predict better?

Since the twelfth session (2026-11-29) calibration probes, per rate cap of the grid, the
CPU per byte such a cap costs the ranks on the local testbed (``calibrate/shaped.py``), and
the simulator charges it on the sender's and the receiver's core. This script scores every
measured cell of validation folders two ways:

- ``with``: the folder's profile with its CPU per byte: the figures it was calibrated with,
  or, with ``--per-mb RATE=MS,...`` (ms of CPU per MB a rank sends or receives), those for a
  folder calibrated before the probe existed (figures from another calibration: nothing is
  fitted to the folder's own runs);
- ``without``: the same profile without it (what every earlier prediction was).

It prints, per folder and schedule, the mean absolute error and the worst cell both ways,
and the same over the cells with a cap and no delay (the only cells it changes). Nothing is
fitted to step times. Usage:

    python benchmarks/shaped_cpu.py out/validate out/validate-new ...
    python benchmarks/shaped_cpu.py --per-mb 5Gbps=1.02,2Gbps=2.16,1Gbps=1.41 <older folders>
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

from calibrate.shaped import rate_of
from loop.compare import setting_of
from pipesim import engine as E
from pipesim import profile as P
from pipesim import schedule as S


def per_mb(text: str) -> tuple[tuple[float, float], ...]:
    """'5Gbps=1.02,2Gbps=2.16' -> ((rate bit/s, s per byte), ...) by rate."""
    pts = []
    for part in text.split(","):
        rate, ms = part.split("=")
        pts.append((rate_of(rate.strip()), float(ms) / 1e3 / 1e6))
    return tuple(sorted(pts))


def capped_only(label: str) -> bool:
    return any(ov.bandwidth_bps is not None and not ov.delay_s for _, ov in setting_of(label).clauses)


def score(folder: Path, figures: tuple[tuple[float, float], ...] | None) -> list[tuple]:
    prof = P.load(folder / "profile.json")
    if prof.host is None:
        raise SystemExit(f"{folder}: the profile has no host section; nothing is charged without one")
    with_ = replace(prof, host=replace(prof.host, shaped_cpu=figures)) if figures else prof
    if not with_.host or not with_.host.shaped_cpu:
        raise SystemExit(f"{folder}: its profile has no host.shaped_cpu; give --per-mb figures from a calibration")
    without = replace(prof, host=replace(prof.host, shaped_cpu=()))
    tr = E.Transport.for_profile(prof)
    v = (prof.raw or {}).get("overhead_probe", {}).get("stages_per_rank") or S.DEFAULT_STAGES_PER_RANK
    rows = []
    for c in json.loads((folder / "comparison.json").read_text())["cells"]:
        s, m, net = c["schedule"], c["micro_batch_size"], setting_of(c["network"])
        kw = {"stages_per_rank": v} if s in S.VIRTUAL else {}
        meas = c["measured_s"]
        a = E.simulate(with_, s, m, c["batch_size"], net, transport=tr, steps=3, **kw).step_time
        b = E.simulate(without, s, m, c["batch_size"], net, transport=tr, steps=3, **kw).step_time
        rows.append((s, c["network"], m, 100 * (a / meas - 1), 100 * (b / meas - 1), capped_only(c["network"])))
    return rows


def line(name: str, rows: list[tuple]) -> str:
    if not rows:
        return f"{name}: no cells"
    w = [abs(r[3]) for r in rows]
    wo = [abs(r[4]) for r in rows]
    return (f"{name}: with {statistics.mean(w):.2f}% (worst {max(w):.1f}%), without {statistics.mean(wo):.2f}% "
            f"(worst {max(wo):.1f}%), {len(rows)} cells")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--per-mb", default=None, help="RATE=MS,...: ms of CPU per MB under each cap, for older folders")
    ns = ap.parse_args(argv)
    figures = per_mb(ns.per_mb) if ns.per_mb else None
    every = []
    for f in ns.folders:
        rows = score(Path(f), figures)
        every += rows
        print(f"## {f}")
        for s in dict.fromkeys(r[0] for r in rows):
            mine = [r for r in rows if r[0] == s]
            print("  " + line(s, mine))
            print("    " + line("capped, no delay", [r for r in mine if r[5]]))
    print("## all folders")
    for s in dict.fromkeys(r[0] for r in every):
        print("  " + line(s, [r for r in every if r[0] == s]))
    print("  " + line("capped, no delay (all schedules)", [r for r in every if r[5]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
