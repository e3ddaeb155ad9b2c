"""Interleaved 1F1B's wrap-around link (ranks 2 and 0, which share a core on 3 ranks over 2
cores) at its probed latency against a stand-in, in the replay and in the prediction.

Until 2026-11-29 (ninth session) calibration probed that link with both ranks on their
shared core, where gloo's ping-pong times the scheduler (a 4 ms tick per round trip) and
the fit gave about 2 ms of latency. It now probes the two apart (``calibrate.measure``).
For each folder this prints the profile's co-located latency, then the interleaved
cells' replay and prediction errors with the co-located links as probed on one core
(``one core``) and apart (``apart``); the profile has one of the two, and the other is a
stand-in: for a profile probed on one core, the links 0->1 and 1->0 stand in for 0->2 and
2->0 (the transport between two other ranks of the same host); for a profile probed
apart, ``--swap-latency-ms`` (default 2.0, what the old probe gave) replaces their
latency. Nothing is fitted. Usage:

    python benchmarks/colocated_link.py out/validate-new out/demo-new ... [--swap-latency-ms 2.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from collections import defaultdict
from pathlib import Path

from pipesim import engine as E
from pipesim.network import parse
from pipesim.profile import Profile, load
from pipesim.replay import replay
from pipesim.trace import read_csv


def shared(prof: Profile) -> list[tuple[int, int]]:
    """The links between ranks pinned to one core (host.placement)."""
    pl = prof.host.placement if prof.host is not None else None
    return [k for k in prof.links if pl is not None and pl[k[0]] == pl[k[1]]]


def swapped(prof: Profile, latency_s: float) -> Profile:
    links = dict(prof.links)
    for src, dst in shared(prof):
        if prof.links[(src, dst)].latency_s > 1e-3:   # probed on one core: another pair's transport stands in
            stand = prof.links[(0, 1)] if src < dst else prof.links[(1, 0)]
            links[(src, dst)] = dataclasses.replace(stand, src=src, dst=dst)
        else:
            links[(src, dst)] = dataclasses.replace(links[(src, dst)], latency_s=latency_s)
    return dataclasses.replace(prof, links=links)


def _fmt(errs: list[float]) -> str:
    return (f"signed {statistics.fmean(errs):+5.2f}%  MAPE {statistics.fmean(map(abs, errs)):4.2f}%  "
            f"worst {max(map(abs, errs)):4.1f}%")


def score(folder: Path, latency_s: float) -> dict[str, list[float]]:
    prof = load(folder / "profile.json")
    one_core = any(prof.links[k].latency_s > 1e-3 for k in shared(prof))
    other = swapped(prof, latency_s)
    variants = {"one core": prof, "apart": other} if one_core else {"apart": prof, "one core": other}
    transports = {k: E.Transport.for_profile(p) for k, p in variants.items()}
    meas: dict = defaultdict(list)
    rep: dict = defaultdict(lambda: defaultdict(list))
    cells = {}
    for line in (folder / "measured.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["schedule"] != "interleaved1f1b":
            continue
        v = 2
        res = folder / r["results"] if r.get("results") else None
        if res is not None and res.exists():
            v = json.loads(res.read_text()).get("stages_per_rank") or 2
        net = parse(r["network"].split(" (")[0])
        cells[r["key"]] = (r["micro_batch_size"], r["batch_size"], net, v)
        meas[r["key"]].append(r["median"])
        if r.get("trace") and (folder / r["trace"]).exists():
            ev = read_csv(folder / r["trace"])
            for name, p in variants.items():
                rep[r["key"]][name].append(replay(p, ev, "interleaved1f1b", r["micro_batch_size"], r["batch_size"],
                                                  net, warmup=2, stages_per_rank=v,
                                                  transport=transports[name]).step_time)
    out: dict[str, list[float]] = defaultdict(list)
    for key, (mbs, batch, net, v) in cells.items():
        m = statistics.median(meas[key])
        for name, p in variants.items():
            pred = E.simulate(p, "interleaved1f1b", mbs, batch, net, transport=transports[name], steps=2,
                              record=False, stages_per_rank=v).step_time
            out[f"prediction, {name}"].append(100 * (pred / m - 1))
            if rep[key][name]:
                out[f"replay, {name}"].append(100 * (statistics.median(rep[key][name]) / m - 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--swap-latency-ms", type=float, default=2.0)
    args = ap.parse_args()
    every: dict = defaultdict(list)
    for f in args.folders:
        prof = load(f / "profile.json")
        lat = ", ".join(f"{s}->{d} {prof.links[(s, d)].latency_s * 1e3:.3f} ms" for s, d in shared(prof))
        print(f"{f}  (co-located: {lat or 'none'})")
        for name, errs in sorted(score(f, args.swap_latency_ms * 1e-3).items()):
            every[name] += errs
            print(f"  {name:24s} {len(errs):3d} cells  {_fmt(errs)}", flush=True)
    print("all folders")
    for name, errs in sorted(every.items()):
        print(f"  {name:24s} {len(errs):3d} cells  {_fmt(errs)}")


if __name__ == "__main__":
    main()
