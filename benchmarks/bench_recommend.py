"""Speed of ``pipesim recommend`` over the seed grid.

    python benchmarks/bench_recommend.py [--repeats 3] [--figure out.png]

Times the whole command (profile load, candidates, ranking, the why line's three
re-simulations per setting, the tables) for every registered schedule x micro-batch
sizes 1/2/4/8 x the ten seed settings, batch 64, on the bundled profile, and prints
the best of ``--repeats`` wall times. Target (issue 14): under 5 s. With ``--figure``
it also times the delay x bandwidth plane.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

from loop.cli import main as pipesim
from pipesim import schedule as S


def best(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = pipesim(argv)
        times.append(time.perf_counter() - t0)
        if rc != 0:
            raise SystemExit(f"pipesim {' '.join(argv)} exited {rc}")
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--figure", help="also time --figure (writes this file)")
    args = ap.parse_args()
    schedules = ",".join(S.GENERATORS)
    argv = ["recommend", "--network", "seed", "--micro-batch-sizes", "1,2,4,8", "--schedules", schedules,
            "--batch-size", "64"]
    t = best(argv, args.repeats)
    n = len(S.GENERATORS) * 4
    print(f"recommend, seed grid: {len(S.GENERATORS)} schedules ({schedules}) x 4 micro-batch sizes = {n} candidates "
          f"x 10 settings, batch 64, 3 stages, ranked and explained: {t:.2f} s (best of {args.repeats}; target < 5 s)")
    if args.figure:
        t = best(argv + ["--figure", args.figure], args.repeats)
        print(f"the same with --figure (20 more settings, drawn): {t:.2f} s")


if __name__ == "__main__":
    main()
