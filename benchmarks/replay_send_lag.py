"""The replay with and without send lags, scored on validation folders that kept their traces.

The runtime stamps a send when its post returns, and on gloo the post pushes the message
into the kernel itself (over the testbed's veth, through the receiver's stack too): the
rank's time from a computation's end to its send's stamp is when the message's last
bytes leave. ``pipesim.replay`` now holds the rank for it and lets the data arrive no
earlier than the post's return plus the link's latency (``with lags``). Before, it charged
that time to the rank's next computation and sent the data at the computation's end
(``without``). Nothing is fitted: both read the same trace, the lags are measured.

For every cell of every folder (all schedules with a trace), the replay of each run, the
cell's the median of its runs', against the cell's measured step time (the median of its
runs'). Prints per folder and schedule the signed mean, the MAPE and the worst cell, and
the median lag per network setting and micro-batch size. Usage:

    python benchmarks/replay_send_lag.py out/validate out/demo-1 ...
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from pipesim.network import parse
from pipesim.profile import load
from pipesim.replay import durations_from_trace, replay
from pipesim.trace import read_csv


def _fmt(v: list[float]) -> str:
    return (f"signed {statistics.fmean(v):+.2f}%  MAPE {statistics.fmean(map(abs, v)):.2f}%  "
            f"worst {max(map(abs, v)):.1f}%")


def score(folder: Path) -> tuple[dict, dict]:
    """(schedule -> [(error without, error with)] per cell, (network, mbs) -> lags in ms)."""
    prof = load(folder / "profile.json")
    cells: dict = defaultdict(lambda: ([], [], []))
    lags: dict = defaultdict(list)
    for line in (folder / "measured.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "replay_s" not in r or not r.get("trace") or not (folder / r["trace"]).exists():
            continue
        ev = read_csv(folder / r["trace"])
        res = folder / r["results"]
        v = (json.loads(res.read_text()).get("stages_per_rank") or 1) if res.exists() else 1
        net = parse(r["network"].split(" (")[0])
        kw = dict(warmup=2, stages_per_rank=v)
        args = (prof, ev, r["schedule"], r["micro_batch_size"], r["batch_size"], net)
        without, with_ = replay(*args, send_lags=False, **kw), replay(*args, **kw)
        c = cells[(r["schedule"], r["key"])]
        c[0].append(r["median"])
        c[1].append(without.step_time)
        c[2].append(with_.step_time)
        got: dict = {}
        durations_from_trace(ev, True, got)
        lags[(str(net), r["micro_batch_size"])] += [1e3 * x for (_, step, _), x in got.items() if step >= 2]
    out: dict = defaultdict(list)
    for (sched, _), (meas, wo, wi) in cells.items():
        m = statistics.median(meas)
        out[sched].append((100 * (statistics.median(wo) / m - 1), 100 * (statistics.median(wi) / m - 1)))
    return out, lags


def _line(name: str, errs: list[tuple[float, float]]) -> str:
    return (f"  {name:16s} {len(errs):3d} cells  without: {_fmt([a for a, _ in errs])}   "
            f"with lags: {_fmt([b for _, b in errs])}")


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    every: dict = defaultdict(list)
    all_lags: dict = defaultdict(list)
    for f in map(Path, argv):
        out, lags = score(f)
        for k, v in lags.items():
            all_lags[k] += v
        print(f"{f}:")
        for sched, errs in sorted(out.items()):
            every[sched] += errs
            print(_line(sched, errs))
    print("all folders:")
    for sched, errs in sorted(every.items()):
        print(_line(sched, errs))
    print(_line("all", [e for v in every.values() for e in v]))
    print("median send lag (ms) by network setting and micro-batch size:")
    for (net, mbs), v in sorted(all_lags.items()):
        print(f"  {net:28s} mbs {mbs}: {statistics.median(v):.3f} ({len(v)} sends)")


if __name__ == "__main__":
    main(sys.argv[1:])
