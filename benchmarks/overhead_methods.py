"""Which estimate of the runtime's time per action predicts better: CPU accounting or wall time in context?

Calibration's overhead probe (calibrate/overhead.py) records both estimates for every
schedule, micro-batch size and rank in ``raw.overhead_probe`` (``cpu_overhead_s`` and
``trace_overhead_s``), from the same launches. This script builds the profile once with
each, simulates every measured cell of a validation or demo folder from it, and prints
the prediction errors side by side: over all cells, and over the cells off the default
network (the probe ran on the default network, so those are the cells it says least
about). Nothing is fitted to the measured runs. Usage:

    python benchmarks/overhead_methods.py out/demo-1 out/demo-2 ...
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import replace
from pathlib import Path

from calibrate.overhead import virtual_overhead
from loop import compare as C
from loop import measured as M
from pipesim import profile as P


def with_method(prof: P.Profile, key: str) -> P.Profile | None:
    runs = ((prof.raw or {}).get("overhead_probe") or {}).get("runs") or {}
    stages = list(prof.stages)
    seen = False
    for schedule, per_m in runs.items():
        for m, per_rank in per_m.items():
            for r, rec in per_rank.items():
                v = rec.get(key, rec.get("overhead_s") if key == "cpu_overhead_s" else None)  # older profiles: CPU only
                if v is None:
                    continue
                seen = True
                st = stages[int(r)]
                c = st.compute[int(m)]
                c = replace(c, overhead_by_schedule_s={**(c.overhead_by_schedule_s or {}), schedule: v})
                stages[int(r)] = replace(st, compute={**st.compute, int(m): c})
    # with virtual stages (interleaved1f1b), the simulator reads the overhead on each of them
    return virtual_overhead(replace(prof, stages=tuple(stages))) if seen else None


def errors(prof: P.Profile, cells) -> dict:
    rows = C.build_rows(prof, cells)
    out: dict = {}
    for r in rows:
        e = 100 * (r["simulated_s"] - r["measured_s"]) / r["measured_s"]
        off = not r["network"].startswith("default")
        out.setdefault((r["schedule"], "all"), []).append(e)
        if off:
            out.setdefault((r["schedule"], "off-default"), []).append(e)
    return out


def line(errs: dict, schedule: str, part: str) -> str:
    es = errs.get((schedule, part), [])
    if not es:
        return "-"
    return (f"MAPE {statistics.fmean(abs(e) for e in es):4.1f}%, mean {statistics.fmean(es):+5.1f}%, "
            f"worst {max(es, key=abs):+5.1f}% ({len(es)} cells)")


def main(folders: list[str]) -> int:
    for folder in folders:
        out = Path(folder)
        prof = P.load(out / "profile.json")
        cells = M.read([out / "measured.jsonl"])
        print(f"== {out}")
        for key in ("cpu_overhead_s", "trace_overhead_s"):
            variant = with_method(prof, key)
            if variant is None:
                print(f"  {key}: not in this profile's raw.overhead_probe")
                continue
            errs = errors(variant, cells)
            for schedule in sorted({s for s, _ in errs}):
                for part in ("all", "off-default"):
                    print(f"  {key:17s} {schedule:15s} {part:11s} {line(errs, schedule, part)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or ["out/demo"]))
