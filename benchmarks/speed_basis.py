"""A run's speed from its process's CPU or from the CPU inside its computations: which explains more?

Since 2026-11-29 (ninth session) a run reports, per rank, the CPU per step of the whole
process (``cpu_per_step``) and the CPU spent inside its computations
(``compute_cpu_per_step``: F, B, W and the optimizer step), and the overhead probe keeps
the latter for its launches. :func:`pipesim.context.cpu_replay` simulates the cell with
each rank scaled to the run's speed on either basis. For every run of the given folders
that reported both, this simulates it both ways, takes each cell's median over its runs
and prints, per folder and over all, the MAPE and signed mean error against the measured
step time, split into cells under a bandwidth cap and the others, and the spread of the
speed factors. Nothing is fitted. Usage:

    python benchmarks/speed_basis.py out/validate out/demo-1 ...
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from loop import compare as C
from pipesim import context as CX
from pipesim import engine as E
from pipesim import profile as P
from pipesim.schedule import VIRTUAL


def score(folder: Path) -> dict[str, dict[str, list]]:
    prof = P.load(folder / "profile.json")
    transport = E.Transport.for_profile(prof)
    cells: dict = defaultdict(lambda: {"measured": [], "process": [], "compute": [], "fp": [], "fc": []})
    for line in (folder / "measured.jsonl").read_text().splitlines():
        r = json.loads(line)
        try:
            res = json.loads((folder / r["results"]).read_text())
        except (KeyError, OSError, ValueError):
            continue
        per = sorted(res.get("per_rank") or [], key=lambda x: x["rank"])
        if not per or any("compute_cpu_per_step" not in x for x in per):
            continue
        cpu = [x["cpu_per_step"]["median"] for x in per]
        comp = [x["compute_cpu_per_step"]["median"] for x in per]
        v = int(r["stages_per_rank"]) if r.get("stages_per_rank") else None
        a, b = (CX.cpu_replay(prof, r["schedule"], r["micro_batch_size"], r["batch_size"],
                              C.setting_of(r["network"]), cpu, transport=transport, steps=C.SIM_STEPS,
                              stages_per_rank=v if r["schedule"] in VIRTUAL else None,
                              run_compute_cpu_per_step=basis) for basis in (None, comp))
        if b.basis != "compute":
            continue   # the profile's probe kept no reference
        c = cells[(r["schedule"], r["network"], r["micro_batch_size"])]
        c["measured"].append(r["median"])
        c["process"].append(a.step_time)
        c["compute"].append(b.step_time)
        c["fp"] += list(a.factors)
        c["fc"] += list(b.factors)
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for (_, net, _), c in cells.items():
        m = statistics.median(c["measured"])
        group = "bandwidth cap" if "bandwidth" in net.lower() else "no cap"
        for basis in ("process", "compute"):
            e = 100 * (statistics.median(c[basis]) / m - 1)
            out[group][basis].append(e)
            out["all"][basis].append(e)
        out["all"]["fp"] += c["fp"]
        out["all"]["fc"] += c["fc"]
    return out


def _line(name: str, errs: list[float]) -> str:
    return (f"  {name:22s} {len(errs):3d} cells  signed {statistics.fmean(errs):+5.2f}%  "
            f"MAPE {statistics.fmean(map(abs, errs)):4.2f}%  worst {max(map(abs, errs)):4.1f}%")


def _spread(fs: list[float]) -> str:
    q = statistics.quantiles(fs, n=10)
    return f"median {100 * (statistics.median(fs) - 1):+.1f}%, p10-p90 {100 * (q[0] - 1):+.1f}..{100 * (q[-1] - 1):+.1f}%"


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    every: dict = defaultdict(lambda: defaultdict(list))
    for f in map(Path, argv):
        got = score(f)
        if not got:
            print(f"{f}: no run reported its compute CPU with a profile that kept a reference")
            continue
        print(f)
        for group in ("no cap", "bandwidth cap", "all"):
            for basis in ("process", "compute"):
                if got[group][basis]:
                    every[group][basis] += got[group][basis]
                    print(_line(f"{group}, {basis}", got[group][basis]))
        every["all"]["fp"] += got["all"]["fp"]
        every["all"]["fc"] += got["all"]["fc"]
        print(f"  speed factors: process {_spread(got['all']['fp'])}; compute {_spread(got['all']['fc'])}")
    if len(argv) > 1 and every:
        print("all folders")
        for group in ("no cap", "bandwidth cap", "all"):
            for basis in ("process", "compute"):
                if every[group][basis]:
                    print(_line(f"{group}, {basis}", every[group][basis]))


if __name__ == "__main__":
    main(sys.argv[1:])
