"""Does the delay line's own time per message belong in the model? Scored offline on kept validations.

Calibration's delayed-link probe (``--window-probe "delay 5ms"``, which validate and demo
run) measures every link again under a delay. Its fitted latency is the link's
undelayed latency plus the delay plus what the delay element itself adds: on the local
testbed, the user-space delay line's time to take a packet in, hold it and release it
(0.02-0.2 ms per message on the 2-core VMs of 2026-11-26/28). Profiles since this script
carry it per link (``delay_excess_s``, :func:`calibrate.local.delay_excess`) and the
simulator adds it to every delayed link. Older profiles have the probe's fits in
``raw.window_probe``, so this script derives the same excess from them, simulates every
measured cell of the given folders with and without it, and prints the prediction's
MAPE and worst cell per folder, then the signed mean error per network setting over all
folders. Nothing is fitted to step times. With ``--replay``, folders whose run traces
were kept are also replayed (each run with its own compute) both ways.

    python benchmarks/delay_excess.py [--replay] out/validate out/demo-1 ...
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import replace
from pathlib import Path

from calibrate.local import delay_excess
from loop import compare as C
from loop.validate import load_runs
from pipesim import engine as E
from pipesim import network as N
from pipesim import profile as P
from pipesim.replay import replay
from pipesim.schedule import VIRTUAL
from pipesim.trace import read_csv


def with_excess(prof: P.Profile) -> P.Profile | None:
    """The profile with each probed link's delay excess derived from ``raw.window_probe`` (None: no probe)."""
    wp = (prof.raw or {}).get("window_probe")
    if not wp:
        return None
    links = dict(prof.links)
    for entry in wp["links"]:
        key = (entry["src"], entry["dst"])
        probed = [(p["fit"]["latency_s"], N.parse(p["network"]).for_link(*key).delay_s) for p in entry["probes"]]
        links[key] = replace(links[key], delay_excess_s=delay_excess(links[key].latency_s, probed))
    return replace(prof, links=links)


def _plain(prof: P.Profile) -> P.Profile:
    return replace(prof, links={k: replace(v, delay_excess_s=0.0) for k, v in prof.links.items()})


def score(folder: Path, with_replay: bool) -> dict | None:
    prof = P.load(folder / "profile.json")
    new = with_excess(prof)
    if new is None:
        return None
    old = _plain(prof)
    t_old, t_new = E.Transport.for_profile(old), E.Transport.for_profile(new)
    runs = load_runs(folder / "measured.jsonl")
    out: dict = {"pred": [], "replay": [], "excess_us": [1e6 * l.delay_excess_s for _, l in sorted(new.links.items())]}
    for _key, by_run in runs.items():
        recs = [r for r in by_run.values() if not r.get("disturbed") and "median" in r]
        if not recs:
            continue
        r0 = recs[0]
        s, mbs, b = r0["schedule"], r0["micro_batch_size"], r0["batch_size"]
        net = C.setting_of(r0["network"])
        v = int(r0.get("stages_per_rank") or 1)
        spr = v if s in VIRTUAL else None
        meas = statistics.median(r["median"] for r in recs)
        sims = [E.simulate(pr, s, mbs, b, net, transport=t, steps=C.SIM_STEPS, record=False,
                           stages_per_rank=spr).step_time for pr, t in ((old, t_old), (new, t_new))]
        out["pred"].append((r0["network"], s, mbs, *(100 * (x / meas - 1) for x in sims)))
        if with_replay:
            errs = []
            for r in recs:
                trace = folder / r.get("trace", "")
                if not r.get("trace") or not trace.exists():
                    continue
                ev = read_csv(trace)
                rp = [replay(pr, ev, s, mbs, b, net, warmup=2, transport=t, stages_per_rank=v).step_time
                      for pr, t in ((old, t_old), (new, t_new))]
                errs.append(tuple(100 * (x / r["median"] - 1) for x in rp))
            if errs:
                out["replay"].append((r0["network"], s, mbs, statistics.median(e[0] for e in errs),
                                      statistics.median(e[1] for e in errs)))
    return out


def _line(rows: list[tuple]) -> str:
    a = [abs(r[3]) for r in rows]
    b = [abs(r[4]) for r in rows]
    return f"{statistics.fmean(a):.2f}% -> {statistics.fmean(b):.2f}% (worst {max(a):.1f}% -> {max(b):.1f}%)"


def main(argv: list[str]) -> int:
    with_replay = "--replay" in argv
    folders = [a for a in argv if a != "--replay"]
    if not folders:
        print(__doc__.strip().splitlines()[-1].strip())
        return 2
    every: dict[str, list[tuple]] = {"pred": [], "replay": []}
    print("| folder | delay excess per link (us) | cells | prediction MAE, without -> with | replay MAE |")
    print("|---|---|---:|---|---|")
    for f in folders:
        s = score(Path(f), with_replay)
        if s is None:
            print(f"| {f} | no delayed-link probe | | | |")
            continue
        for k in every:
            every[k] += s[k]
        rep = _line(s["replay"]) if s["replay"] else "-"
        print(f"| {f} | {' '.join(f'{x:.0f}' for x in s['excess_us'])} | {len(s['pred'])} | {_line(s['pred'])} | {rep} |")
    for k, rows in every.items():
        if not rows:
            continue
        better = sum(abs(r[4]) < abs(r[3]) for r in rows)
        worse = sum(abs(r[4]) > abs(r[3]) for r in rows)
        print(f"\nall {len(rows)} cells, {'prediction' if k == 'pred' else 'replay'}: mean absolute error "
              f"{_line(rows)}; {better} cells closer, {worse} further")
        print("\n| network | cells | signed mean error, without -> with |\n|---|---:|---|")
        nets: dict[str, list[tuple]] = {}
        for r in rows:
            nets.setdefault(r[0], []).append(r)
        for net, v in nets.items():
            print(f"| {net} | {len(v)} | {statistics.fmean(r[3] for r in v):+.2f}% -> "
                  f"{statistics.fmean(r[4] for r in v):+.2f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
