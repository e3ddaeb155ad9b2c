"""Does the per-step part of the runtime's overhead (``step_overhead_s``) predict better?

Since 2026-11-28's sixth session calibration's overhead probe also launches GPipe with
one micro-batch per step and splits each rank's excess CPU into a part per step
(``step_overhead_s``, charged once per step with the optimizer) and a part per
computation (``calibrate/overhead.py``). This script scores, on validation folders whose
profiles have that probe (``raw.overhead_probe.step_runs``), every measured GPipe and
1F1B cell two ways from the same probe launches:

- ``with``: the profile as calibrated (per step + per computation);
- ``without``: what the probe gave before: no per-step part, the whole excess at the
  probe's count of micro-batches spread over its computations (pooled over GPipe's and
  1F1B's launches, as calibration does).

It prints the mean absolute error per folder, schedule and micro-batch size, and the mean
signed error per micro-batch size (the per-step part matters where a cell runs fewer
micro-batches per step than the probe). Nothing is fitted to step times. Usage:

    python benchmarks/step_overhead.py out/validate out/demo-1 ...
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from overhead_estimators import SCHEDULES, cells_of, errors

from pipesim import engine as E
from pipesim import profile as P


def without_step(prof: P.Profile) -> P.Profile:
    """The profile with no per-step part: each rank's overhead per computation is the median over
    the pooled launches of (CPU per step - solo compute) / computations, as before the split."""
    raw = (prof.raw or {}).get("overhead_probe") or {}
    runs = raw.get("runs") or {}
    stages = []
    for r, st in enumerate(prof.stages):
        comp = {}
        for m, c in st.compute.items():
            recs = [rec for s in SCHEDULES if (rec := runs.get(s, {}).get(str(m), {}).get(str(r)))]
            vals = [(x - rec["solo_compute_s"]) / rec["actions_per_step"] for rec in recs
                    for x in rec["cpu_per_step_launches_s"]]
            by = dict(c.overhead_by_schedule_s or {})
            if vals:
                oh = max(0.0, statistics.median(vals))
                by.update({s: oh for s in SCHEDULES if s in by})
            comp[m] = replace(c, overhead_by_schedule_s=by, step_overhead_s=0.0)
        stages.append(replace(st, compute=comp))
    return replace(prof, stages=tuple(stages))


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip())
        return 2
    every: dict[str, list[float]] = {"with": [], "without": []}
    signed: dict[tuple[str, int], list[float]] = defaultdict(list)
    print("| folder | with: gpipe / 1f1b (worst) | without: gpipe / 1f1b (worst) | per step, ms per rank (mbs: ranks) |")
    print("|---|---|---|---|")
    for f in map(Path, argv):
        prof = P.load(f / "profile.json")
        if not ((prof.raw or {}).get("overhead_probe") or {}).get("step_runs"):
            print(f"| {f} | no step probe in its profile | | |")
            continue
        transport = E.Transport.for_profile(prof)
        cells = cells_of(f)
        cols = []
        for how, p in (("with", prof), ("without", without_step(prof))):
            errs: dict[str, list[float]] = {}
            for schedule, mbs, e in errors(p, cells, transport):
                errs.setdefault(schedule, []).append(e)
                signed[(how, mbs)].append(e)
            flat = [abs(x) for v in errs.values() for x in v]
            every[how] += flat
            cols.append(" / ".join(f"{statistics.fmean(map(abs, v)):.1f}%" for v in errs.values()) + f" ({max(flat):.1f}%)")
        steps = "; ".join(f"{m}: " + ", ".join(f"{1e3 * st.compute[m].step_overhead_s:.2f}" for st in prof.stages)
                          for m in sorted(prof.stages[0].compute))
        print(f"| {f} | {cols[0]} | {cols[1]} | {steps} |")
    for how, v in every.items():
        if v:
            print(f"all {len(v)} cells, {how}: mean absolute error {statistics.fmean(v):.2f}%, "
                  f"p90 {statistics.quantiles(v, n=10)[-1]:.1f}%, worst {max(v):.1f}%")
    for (how, m), v in sorted(signed.items()):
        print(f"  {how}, mbs {m}: mean signed error {statistics.fmean(v):+.2f}% over {len(v)} cells")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
