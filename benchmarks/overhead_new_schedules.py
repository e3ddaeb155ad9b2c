"""Does probing the runtime's overhead under ZB-H1 and interleaved 1F1B themselves predict better
than reusing GPipe's? Scored offline on kept validation or demo folders of those schedules.

Calibration with ``--split-backward`` / ``--stages-per-rank`` probes each schedule's own
per-action overhead (``overhead_by_schedule_s``, calibrate/overhead.py); before, those
schedules fell back to GPipe's ``overhead_s``. This script simulates every measured cell
from the profile as calibrated and from the same profile with the two schedules' own
entries removed (the fallback), and prints both MAPE lines. Nothing is fitted. Usage:

    python benchmarks/overhead_new_schedules.py out/demo-new ...
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from loop import compare as C
from loop import measured as M
from loop import report as R
from pipesim import engine as E
from pipesim import profile as P

NEW = ("zbh1", "interleaved1f1b")


def fallback(prof: P.Profile) -> P.Profile:
    """``prof`` without the new schedules' own overhead entries (they then take ``overhead_s``)."""
    def drop(c: P.StageCompute) -> P.StageCompute:
        by = {k: v for k, v in (c.overhead_by_schedule_s or {}).items() if k not in NEW}
        return replace(c, overhead_by_schedule_s=by or None)

    return replace(prof, stages=tuple(
        replace(st, compute={m: drop(c) for m, c in st.compute.items()},
                virtual_stages=None if st.virtual_stages is None else
                tuple({m: drop(c) for m, c in part.items()} for part in st.virtual_stages))
        for st in prof.stages))


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    for folder in map(Path, argv):
        prof = P.load(folder / "profile.json")
        cells = M.read(folder / "measured.jsonl")
        for name, p in (("own probe", prof), ("GPipe's overhead", fallback(prof))):
            rows = C.build_rows(p, cells, E.Transport.for_profile(p))
            print(f"{folder} ({name}): {R.summarize(rows).last_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
