"""Simulator speed: the seed grid (GPipe and 1F1B; ZB-H1 and interleaved 1F1B), and one large 1F1B simulation,
SimPy vs the fast path.

    python benchmarks/bench_sim.py [--repeats 3]

Prints wall times (best of --repeats) of the SimPy engine (the reference) and the exact
fast path (:mod:`pipesim.fastpath`) on the same work in the same process, and their
ratio; the schedule cache is emptied before each timed run, so both include building
the schedules once. Compare ratios rather than absolute times on a shared machine.
Targets (issue 14): seed grid (60 simulations) < 0.2 s; 64 stages x 1024 micro-batches
1F1B < 2 s.
"""

from __future__ import annotations

import argparse
import time

from pipesim import engine as E
from pipesim import fastpath
from pipesim import network as N
from pipesim import profile as P
from pipesim.cmd_sim import run_grid
from pipesim.profile import Link, Profile, Stage, StageCompute


def big_profile(p: int) -> Profile:
    stages = tuple(Stage(compute={1: StageCompute(0.01, 0.02, 1 << 20, 1 << 20)}, optimizer_s=0.001) for _ in range(p))
    links = {}
    for s in range(p - 1):
        for a, b in ((s, s + 1), (s + 1, s)):
            links[(a, b)] = Link(a, b, 1e-4, 10e9, 3 << 20)
    return Profile(stages=stages, links=links, device={"backend": "gloo"})


def best(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        fastpath.cached_build.cache_clear()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def compare(title: str, fn, repeats: int) -> None:
    ts, rs = best(lambda: fn("simpy"), repeats)
    tf, rf = best(lambda: fn("fast"), repeats)
    acts = sum(r.actions for r in rs.values()) if isinstance(rs, dict) else rs.actions
    used = {r.engine for r in rf.values()} if isinstance(rf, dict) else {rf.engine}
    print(f"{title}: simpy {ts:.3f} s, fast path {tf:.3f} s (engine used: {', '.join(sorted(used))}), "
          f"ratio {ts / tf:.1f}x; {acts:,} actions, {acts / tf:,.0f} actions/s on the fast path")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    prof = P.load()
    settings = N.parse_grid("seed")
    tr = E.Transport.for_profile(prof)
    compare(f"seed grid, 60 cells (2 schedules x 3 micro-batch sizes x 10 settings, batch 64, 3 stages, 2 steps; "
            f"{tr.describe()})",
            lambda eng: run_grid(prof, settings, [1, 2, 4], ["gpipe", "1f1b"], 64, tr, progress=False, engine=eng),
            args.repeats)
    compare("zbh1 (batch 64) and interleaved1f1b (2 stages per rank, batch 48: a multiple of the 3 ranks) on the "
            "seed grid, 60 cells (3 micro-batch sizes x 10 settings each, 2 steps)",
            lambda eng: {**run_grid(prof, settings, [1, 2, 4], ["zbh1"], 64, tr, progress=False, engine=eng),
                         **run_grid(prof, settings, [1, 2, 4], ["interleaved1f1b"], 48, tr, progress=False,
                                    engine=eng)},
            args.repeats)
    big = big_profile(64)
    for sched in ("1f1b", "gpipe"):
        compare(f"{sched}: 64 stages x 1024 micro-batches, 1 step",
                lambda eng, sched=sched: E.simulate(big, sched, 1, 1024, "delay 1ms", steps=1, record=False,
                                                    engine=eng),
                max(1, args.repeats - 2))
    t0 = time.perf_counter()
    fastpath.cached_build.cache_clear()
    fastpath.cached_build("1f1b", 64, 1024, None)
    print(f"of which building (generating, lowering, validating) the 1f1b 64 x 1024 schedule: "
          f"{time.perf_counter() - t0:.3f} s")


if __name__ == "__main__":
    main()
