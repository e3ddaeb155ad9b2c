"""The machine's noise floor for a validation's claim: how large an error would a perfect
model show, from launch-to-launch noise alone?

Each cell of ``pipesim validate`` is measured by a few launches (2, and a third where the
first two are more than 4% apart) and the cell's measured step time is their median. On
a VM one launch differs from the next by several percent, with little correlation
between consecutive launches (docs/validate.md), so even a model that predicted each
cell's true mean step time exactly would show errors. This script

1. estimates the per-launch spread from the kept folders: for every cell measured at
   least twice, the relative difference of its first two launches (their sd / sqrt 2);
2. draws launches from that spread (normal; :mod:`loop.noise`) with the validation's
   protocol and with more launches per cell, and prints the MAPE and the worst cell of a
   perfect model over a grid of ``--cells`` cells (60: the seed grid, two schedules), and
   how often it would meet validate's target (:data:`loop.noise.TARGETS`);
3. per folder (``--per-folder``): its own launch spread, how often a perfect model would
   meet its command's target against launches like its own (``demo`` in the folder's
   name: the demo's), and what the prediction scored (comparison.md's last line).

Nothing is fitted to predictions; step times are only compared with each other.

    python benchmarks/noise_floor.py benchmarks/results/validation-2026-11-28*/*
    python benchmarks/noise_floor.py --per-folder benchmarks/results/validation-2026-11-29*/*
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
from pathlib import Path

from loop import noise as NF
from loop.validate import load_runs


def cell_runs(folders: list[str]) -> list[list[float]]:
    """Each cell's counted launches (step times, in run order) over the folders."""
    out = []
    for f in folders:
        for by_run in load_runs(Path(f) / "measured.jsonl").values():
            out.append([by_run[i]["median"] for i in sorted(by_run)])
    return out


def validate_protocol(sd: float, cells: int, trials: int, seed: int, tiebreak: float = 0.04,
                      target: tuple[float, float] = NF.TARGETS["validate"]) -> tuple[float, float, float]:
    """(mean MAPE, mean worst cell, share of grids meeting ``target``) of a perfect model under
    validate's own protocol: 2 launches, a third where they are over ``tiebreak`` apart, the
    median; the cells split into two schedules, each held to the target's MAPE."""
    rng = random.Random(seed)
    mapes, worsts, met = [], [], 0
    half = cells // 2
    for _ in range(trials):
        errs = []
        for _ in range(cells):
            xs = [1.0 + rng.gauss(0.0, sd), 1.0 + rng.gauss(0.0, sd)]
            if (max(xs) - min(xs)) / min(xs) > tiebreak:
                xs.append(1.0 + rng.gauss(0.0, sd))
            errs.append(abs(1.0 / statistics.median(xs) - 1.0))
        mapes.append(statistics.fmean(errs))
        worsts.append(max(errs))
        parts = [errs[:half], errs[half:]] if half else [errs]
        met += NF.meets_target((100 * statistics.fmean(p) for p in parts if p), 100 * max(errs), target)
    return statistics.fmean(mapes), statistics.fmean(worsts), met / trials


MAPE_LINE = re.compile(r"^MAPE: (.*), worst ([0-9.]+)%")


def scored(folder: Path) -> tuple[dict[str, float], float] | None:
    """The prediction's MAPE per schedule and worst cell from a folder's comparison.md (or its
    stdout.txt), None where neither has the line."""
    for name in ("comparison.md", "stdout.txt"):
        f = folder / name
        if not f.exists():
            continue
        for line in reversed(f.read_text().splitlines()):
            if line.startswith("MAPE: not claimed"):   # a noisy demo still says what it measured
                line = "MAPE: " + line.split("; measured: ", 1)[-1]
            m = MAPE_LINE.match(line)
            if m:
                mape = {k: float(v.rstrip("%")) for k, v in (x.rsplit(" ", 1) for x in m.group(1).split(", "))}
                return mape, float(m.group(2))
    return None


def per_folder(folders: list[str], trials: int, seed: int) -> None:
    """One row per folder: its launch spread, a perfect model's odds at its command's target,
    and the prediction's own score against that target."""
    print("| folder | cells | one launch's sd | target | a perfect model meets it | prediction MAPE | worst | met |")
    print("|---|---:|---:|---|---:|---|---:|---|")
    odds = []
    for f in folders:
        path = Path(f)
        runs = load_runs(path / "measured.jsonl") if (path / "measured.jsonl").exists() else {}
        cells = [(key.split("|")[0], [by_run[i]["median"] for i in sorted(by_run)]) for key, by_run in runs.items()]
        target = NF.TARGETS["demo" if "demo" in path.name else "validate"]
        fl = NF.floor_of([r for _, r in cells], trials=trials, groups=[g for g, _ in cells], target=target)
        if fl is None or fl.meets is None:
            continue
        got = scored(path)
        score = ("-", "-", "-") if got is None else (
            " / ".join(f"{v:.1f}%" for v in got[0].values()), f"{got[1]:.1f}%",
            "yes" if NF.meets_target(got[0].values(), got[1], target) else "no")
        odds.append(fl.meets)
        print(f"| {path.parent.name}/{path.name} | {len(cells)} | {100 * fl.launch_sd:.1f}% | {target[0]:g}% / "
              f"{target[1]:g}% | {100 * fl.meets:.0f}% | {score[0]} | {score[1]} | {score[2]} |")
    if odds:
        print(f"\nMean over {len(odds)} folders: a perfect model would meet its folder's target in "
              f"{100 * statistics.fmean(odds):.0f}% of grids.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--cells", type=int, default=60, help="cells per validation (default 60, the seed grid)")
    ap.add_argument("--trials", type=int, default=2000, help="validations drawn per protocol")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-folder", action="store_true",
                    help="one row per folder: its own spread and a perfect model's odds at its target")
    a = ap.parse_args(argv)
    if a.per_folder:
        per_folder(a.folders, min(a.trials, NF.TRIALS), a.seed)
        return 0
    est = NF.launch_sd(cell_runs(a.folders))
    if est is None:
        print(f"fewer than {NF.MIN_CELLS} cells measured twice in these folders: too few to estimate the spread")
        return 1
    sd, pairs = est
    print(f"{pairs} cells measured at least twice: one launch's sd {100 * sd:.2f}%\n")
    print(f"A perfect model over {a.cells} cells, {a.trials} grids drawn per row (mean over them; for fixed "
          "launches also the worst cell's 10th-90th percentile):\n")
    t = NF.TARGETS["validate"]
    print(f"| launches per cell | MAPE | worst cell | meets {t[0]:g}% per schedule, no cell over {t[1]:g}% |")
    print("|---|---:|---:|---:|")
    mape, worst, meets = validate_protocol(sd, a.cells, a.trials, a.seed)
    print(f"| 2, a 3rd if over 4% apart (validate's) | {100 * mape:.1f}% | {100 * worst:.1f}% | {100 * meets:.0f}% |")
    groups = ["a"] * (a.cells // 2) + ["b"] * (a.cells - a.cells // 2)
    for n in (3, 5, 7):
        f = NF.floor(sd, [n] * a.cells, trials=a.trials, seed=a.seed, groups=groups, target=t)
        print(f"| {n} | {100 * f.mape:.1f}% | {100 * f.worst:.1f}% ({100 * f.worst_p10:.1f}-{100 * f.worst_p90:.1f}%) "
              f"| {100 * (f.meets or 0):.0f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
