"""Simulator speed: the seed grid, and one large 1F1B simulation.

    python benchmarks/bench_sim.py [--repeats 3]

Prints wall times (best of --repeats) and simulated actions per second.
Targets (issue 2): seed grid < 1 s in total; 64 stages x 1024 micro-batches 1F1B < 5 s.
"""

from __future__ import annotations

import argparse
import time

from pipesim import engine as E
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
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    prof = P.load()
    settings = N.parse_grid("seed")
    tr = E.Transport.for_profile(prof)
    t, res = best(lambda: run_grid(prof, settings, [1, 2, 4], ["gpipe", "1f1b"], 64, tr, progress=False), args.repeats)
    acts = sum(r.actions for r in res.values())
    print(f"seed grid: {len(res)} cells (2 schedules x 3 micro-batch sizes x 10 settings, batch 64, 3 stages, "
          f"2 steps each): {t:.3f} s, {acts / t:,.0f} actions/s")
    big = big_profile(64)
    for sched in ("1f1b", "gpipe"):
        t, r = best(lambda sched=sched: E.simulate(big, sched, 1, 1024, "delay 1ms", steps=1, record=False), max(1, args.repeats - 2))
        print(f"{sched}: 64 stages x 1024 micro-batches, 1 step: {t:.3f} s, {r.actions:,} actions, "
              f"{r.actions / t:,.0f} actions/s (step {r.step_time:.2f} s simulated)")


if __name__ == "__main__":
    main()
