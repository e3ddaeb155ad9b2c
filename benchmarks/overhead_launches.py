"""How many launches does the overhead probe need? Scored on kept folders, on the same runs.

Calibration's overhead probe (``calibrate/overhead.py``) launches each (schedule,
micro-batch size) ``--overhead-launches`` times, in passes over the cells, and keeps every
launch's CPU per step per rank in ``raw.overhead_probe.runs``. GPipe and 1F1B share one
overhead per action, the median over both schedules' launches (``calibrate.overhead.POOLED``);
ZB-H1 and interleaved 1F1B each have their own. This script rebuilds every schedule's
overhead as calibration does, from only the first ``k`` launches of each cell (what a probe
of ``k`` launches would have measured: the launches go in passes over the cells, so the
first ``k`` are a whole shorter probe), for every ``k`` the folder has, simulates every cell
of the folder (its ``comparison.json``, else its ``measured.jsonl``) and prints, per ``k``, the mean absolute error per
schedule and the worst cell, per folder and over all folders with the same launch count.

Nothing is fitted to measured runs. Usage:

    python benchmarks/overhead_launches.py benchmarks/results/validation-2026-11-29-s13/validate-23 ...
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from overhead_estimators import _per_action, with_overheads  # the probe's formula per launch, as it scores it

from calibrate.overhead import POOLED, virtual_overhead
from loop import compare as C
from pipesim import engine as E
from pipesim import profile as P
from pipesim import schedule as S


def _runs(prof: P.Profile) -> dict:
    return (prof.raw or {}).get("overhead_probe", {}).get("runs", {})


def launches_of(prof: P.Profile) -> int:
    """The fewest launches any cell of the profile's probe kept (0: no probe with its launches)."""
    n = [len(rec.get("cpu_per_step_launches_s") or []) for per in _runs(prof).values() for cells in per.values()
         for rec in cells.values()]
    return min(n) if n else 0


def rebuilt(prof: P.Profile, k: int) -> P.Profile:
    """The profile with every probed schedule's overhead per action rebuilt from the first k
    launches, GPipe and 1F1B pooled as calibration pools them (at least 0), and put on the
    virtual stages as calibration puts it (:func:`calibrate.overhead.virtual_overhead`)."""
    runs = _runs(prof)

    def overhead(i: int, m: int, s: str) -> float | None:
        group = POOLED if s in POOLED else (s,)
        recs = [r for g in group if (r := runs.get(g, {}).get(str(m), {}).get(str(i)))]
        if not recs:
            return None
        return max(0.0, statistics.median(_per_action(r, cpu) for r in recs for cpu in r["cpu_per_step_launches_s"][:k]))

    return virtual_overhead(with_overheads(prof, overhead))


def cells_of(folder: Path) -> list[dict]:
    """The folder's cells: its ``comparison.json``'s, else (folders kept before it was) the
    median of each cell's undisturbed runs in ``measured.jsonl``."""
    if (folder / "comparison.json").exists():
        return json.loads((folder / "comparison.json").read_text())["cells"]
    runs: dict[str, list[dict]] = {}
    for line in (folder / "measured.jsonl").read_text().splitlines():
        r = json.loads(line) if line.strip() else None
        if r and not r.get("disturbed"):
            runs.setdefault(r["key"], []).append(r)
    return [{**rs[0], "measured_s": statistics.median(x["median"] for x in rs)} for rs in runs.values()]


def errors(prof: P.Profile, folder: Path) -> list[tuple[str, float]]:
    """(schedule, signed % error) of every cell of the folder's comparison (against its measured step time)."""
    transport = E.Transport.for_profile(prof)
    v = (prof.raw or {}).get("overhead_probe", {}).get("stages_per_rank") or S.DEFAULT_STAGES_PER_RANK
    out = []
    for c in cells_of(folder):
        s = c["schedule"]
        kw = {"stages_per_rank": v} if s in S.VIRTUAL else {}
        sim = E.simulate(prof, s, c["micro_batch_size"], c["batch_size"], C.setting_of(c["network"]),
                         transport=transport, steps=C.SIM_STEPS, record=False, **kw).step_time
        out.append((s, 100 * (sim / c["measured_s"] - 1)))
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip())
        return 2
    every: dict[int, dict[int, list[float]]] = {}   # the folders' launch count -> k -> |errors|
    print("| folder | launches | with the first k launches: MAPE per schedule, worst cell |")
    print("|---|---:|---|")
    for f in map(Path, argv):
        prof = P.load(f / "profile.json")
        n = launches_of(prof)
        if not n:
            print(f"| {f} | 0 | no overhead probe with its launches in the profile |")
            continue
        cols = []
        for k in range(1, n + 1):
            per: dict[str, list[float]] = {}
            for s, e in errors(rebuilt(prof, k), f):
                per.setdefault(s, []).append(abs(e))
            flat = [x for v in per.values() for x in v]
            every.setdefault(n, {}).setdefault(k, []).extend(flat)
            cols.append(f"{k}: " + " / ".join(f"{statistics.fmean(v):.2f}%" for v in per.values()) + f" ({max(flat):.1f}%)")
        print(f"| {f} | {n} | " + "; ".join(cols) + " |")
    for n, by_k in sorted(every.items()):
        print(f"folders probed with {n} launches: " + ", ".join(
            f"first {k}: {statistics.fmean(v):.2f}% over {len(v)} cells (worst {max(v):.1f}%)" for k, v in sorted(by_k.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
