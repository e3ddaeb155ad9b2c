"""Does the overhead probe's difference between GPipe and 1F1B carry into the runs?

Calibration's overhead probe (``calibrate/overhead.py``) measures each rank's CPU per step
under GPipe and under 1F1B, per micro-batch size, from a few short launches. If the two
schedules really cost the runtime different CPU, the runs of a validation folder show the
same difference: where the probe says 1F1B costs 5% more than GPipe on (rank, micro-batch
size), the runs say so too. This script compares the two, per (folder, micro-batch size,
rank), as logs of the 1F1B / GPipe ratio of CPU per step:

- probe: the medians of the probe's launches (``raw.overhead_probe.runs``);
- runs: the median over the folder's measured cells of each run's CPU per step
  (``cpu_factors`` in ``measured.jsonl`` times what the folder's profile charges,
  :func:`pipesim.context.cpu_per_step`), all network settings, then the default network only.

It prints the slope and correlation of runs against probe (1: the probe's difference is
real; 0: it is noise that the runs do not share) and the spread of each. Nothing is
fitted. Usage:

    python benchmarks/probe_schedule_gap.py benchmarks/results/validation-2026-11-28*/*/
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipesim import profile as P
from pipesim.context import cpu_per_step


def pairs(folder: Path) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(probe, runs) log ratios per (micro-batch size, rank): over all settings, and the default network only."""
    prof_path, meas = folder / "profile.json", folder / "measured.jsonl"
    if not prof_path.exists() or not meas.exists():
        return [], []
    prof = P.load(prof_path)
    runs = ((prof.raw or {}).get("overhead_probe") or {}).get("runs") or {}
    if "gpipe" not in runs or "1f1b" not in runs:
        return [], []
    rows = [json.loads(line) for line in meas.read_text().splitlines() if line.strip()]
    # the process's CPU per step is rebuilt from factors taken on it (runs since 2026-11-29, ninth
    # session, may take them on the CPU inside their computations instead: speed_basis "compute")
    rows = [r for r in rows if r.get("cpu_factors") and r["schedule"] in ("gpipe", "1f1b")
            and r.get("speed_basis", "process") == "process"]
    cpu: dict[tuple[str, int, int, bool], list[float]] = defaultdict(list)
    charged: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        s, m = r["schedule"], r["micro_batch_size"]
        if (s, m) not in charged:
            charged[(s, m)] = cpu_per_step(prof, s, m, r["batch_size"])
        for rank, f in enumerate(r["cpu_factors"]):
            x = f * charged[(s, m)][rank]
            cpu[(s, m, rank, False)].append(x)
            if r["network"].startswith("default"):
                cpu[(s, m, rank, True)].append(x)
    every, default = [], []
    for mbs, per in runs["gpipe"].items():
        for rank, rec in per.items():
            other = runs["1f1b"].get(mbs, {}).get(rank)
            if other is None:
                continue
            x = math.log(other["cpu_per_step_s"] / rec["cpu_per_step_s"])
            for only_default, out in ((False, every), (True, default)):
                g, o = cpu.get(("gpipe", int(mbs), int(rank), only_default)), cpu.get(("1f1b", int(mbs), int(rank), only_default))
                if g and o:
                    out.append((x, math.log(statistics.median(o) / statistics.median(g))))
    return every, default


def _line(name: str, xy: list[tuple[float, float]]) -> str:
    a = np.array(xy)
    slope = np.polyfit(a[:, 0], a[:, 1], 1)[0]
    corr = np.corrcoef(a[:, 0], a[:, 1])[0, 1]
    return (f"{name}: {len(a)} (folder, mbs, rank); probe 1F1B/GPipe {100 * a[:, 0].mean():+.1f}% (sd {100 * a[:, 0].std():.1f}%), "
            f"runs {100 * a[:, 1].mean():+.1f}% (sd {100 * a[:, 1].std():.1f}%); runs against probe: slope {slope:+.2f}, "
            f"correlation {corr:+.2f}")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    every, default = [], []
    for f in argv:
        e, d = pairs(Path(f))
        every += e
        default += d
    if len(every) < 3:
        print("fewer than 3 (folder, mbs, rank) with both schedules probed and measured")
        return 1
    print(_line("all settings", every))
    if len(default) >= 3:
        print(_line("default network", default))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
