"""Calibration under torchrun (one rank per machine): what ``--local`` does that a cluster allows.

After the main measurement (compute, links), every rank of ``python -m calibrate.worker``
(or ``pipesim calibrate`` under torchrun) also runs:

1. **the window probe**, with ``--iface IF``: every machine puts a delay on what it sends
   (``--window-probe``, default ``delay 5ms``; twice with different delays to tell a window
   from a capacity ceiling) with tc netem on ``IF`` (:class:`testbed.shaper.NetemShaper`,
   the previous qdisc saved and restored, also when the probe fails or the rank is killed),
   the links are measured again, and rank 0 fits each link's single-connection cap
   (``window_bytes``, :func:`calibrate.local.merge_window_probe`). Without ``--iface`` it
   is skipped and says what that means for predictions: ``window_bytes`` stays null, so a
   delayed link is predicted at its line rate, while one TCP stream over a 20 ms round trip
   with a 3.5 MiB window carries at most about 1.47 Gbit/s;
2. **the overhead probe** (CPU devices, as with ``--local``): short runs of the real
   runtime in-process over the job's process group (:func:`runtime.engine.run_cell`; rank
   0 picks each cell and broadcasts it), whose CPU time per step gives ``overhead_s``
   (:func:`calibrate.overhead.probe`): gpipe and 1f1b, and zbh1 with ``--split-backward``,
   interleaved1f1b with ``--stages-per-rank V`` (:func:`calibrate.overhead.schedules_for`).
   On CUDA it is skipped, as with ``--local``: the method compares CPU time with CPU
   compute times.

Host contention (``host``) is not measured: on a cluster each rank has its machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys

from pipesim import network as _network

# One TCP stream is limited to window / RTT: 3.5 MiB over 20 ms.
WINDOW_EXAMPLE_BPS = 3.5 * 2 ** 20 * 8 / 0.020
SKIP_NOTE = ("window probe skipped: no --iface to put a delay on. The profile gets no single-connection cap "
             "(window_bytes null), so gloo over a delayed link will be predicted at line rate; but one TCP stream "
             "over a 20 ms round trip with a 3.5 MiB window is limited to about "
             f"{WINDOW_EXAMPLE_BPS / 1e9:.2f} Gbit/s. Pass --iface IF (the interface each machine sends on) to probe it")
OVERHEAD_SKIP_CUDA = ("overhead probe skipped: it measures the runtime's CPU time per action, comparable only with "
                      "CPU compute times (this device is CUDA), as with --local")


def add_args(ap: argparse.ArgumentParser, *, with_probe_flags: bool = True) -> None:
    """The worker's flags for the cluster probes (``pipesim calibrate`` has its own --window-probe
    and --no-overhead-probe, so it passes ``with_probe_flags=False``)."""
    ap.add_argument("--iface", default=None,
                    help="under torchrun: the interface each machine shapes with tc netem for the window probe "
                         "(never guessed; without it the probe is skipped and says what that means)")
    if with_probe_flags:
        ap.add_argument("--window-probe", action="append", default=None, metavar="SETTING",
                        help="delayed setting for the window probe (default 'delay 5ms' with --iface; twice with "
                             "different delays to tell a window from a capacity ceiling)")
        ap.add_argument("--no-overhead-probe", action="store_true",
                        help="skip the short runtime runs that measure its CPU time per action (overhead_s)")
    ap.add_argument("--netem-limit", type=int, default=None, help="netem queue limit in packets for the window probe")
    ap.add_argument("--state-dir", default=None,
                    help="where the interface's previous qdisc is saved (default /run/pipesim; '{rank}' -> the rank)")
    ap.add_argument("--testbed-control", default=None, help=argparse.SUPPRESS)


def active(args) -> bool:
    """True for a cluster calibration (one rank per machine, under torchrun)."""
    return not getattr(args, "one_machine", False) and not getattr(args, "links_only", False)


def _probes(args) -> list[_network.NetworkSetting]:
    texts = getattr(args, "window_probe", None) or (["delay 5ms"] if getattr(args, "iface", None)
                                                    or getattr(args, "testbed_control", None) else [])
    out = []
    for t in texts:
        s = _network.parse(t)
        if s.is_default or any(ov.delay_s is None for _, ov in s.clauses):
            raise ValueError(f"--window-probe {t!r} must add a delay (e.g. 'delay 10ms')")
        out.append(s)
    return out


def _shaper(args, rank: int):
    from testbed import netem
    from testbed.shaper import NetemShaper, TestbedShaper

    if getattr(args, "iface", None):
        state_dir = (getattr(args, "state_dir", None) or netem.STATE_DIR).replace("{rank}", str(rank))
        return NetemShaper(args.iface, rank, state_dir=state_dir, limit=getattr(args, "netem_limit", None),
                           log=lambda m: print(f"[rank {rank}] {m}", file=sys.stderr, flush=True))
    if getattr(args, "testbed_control", None):
        return TestbedShaper(args.testbed_control, rank)
    return None


def window_probe(args, rank: int, world: int, sizes, dtype, link_device, link_clock) -> dict:
    """Every rank: measure the links again under each probe setting, applied on every machine.
    Returns this rank's part: ``{"probes": [labels], "links": [[raw link dicts] per probe]}``, or
    ``{"skipped": why}`` / ``{"failed": why}``."""
    import torch.distributed as dist

    from . import measure

    say = (lambda m: print(m, flush=True)) if rank == 0 else (lambda m: None)
    if world < 2:
        return {"skipped": "one rank: no links"}
    probes = _probes(args)
    shaper = _shaper(args, rank)
    if shaper is None or not probes:
        say(SKIP_NOTE)
        return {"skipped": SKIP_NOTE}
    mine: dict = {"probes": [p.label for p in probes], "links": []}
    try:
        err = None
        try:
            shaper.check()
            address = shaper.address()
        except Exception as e:
            err, address = str(e), None
        every: list = [None] * world
        dist.all_gather_object(every, (err, address))
        bad = [f"rank {r}: {e}" for r, (e, _) in enumerate(every) if e]
        addresses = [a for _, a in every]
        for probe in probes:
            if bad:
                break
            say(f"window probe: {probe.label!r} on every machine ({shaper.what}), links measured again")
            err = None
            try:
                shaper.apply(probe, addresses)
            except Exception as e:
                err = str(e)
            dist.all_gather_object(every, (err, None))
            bad = [f"rank {r}: {e}" for r, (e, _) in enumerate(every) if e]
            if bad:
                break
            got = []
            for s in range(world - 1):
                for src, dst in ((s, s + 1), (s + 1, s)):
                    dist.barrier()
                    r = measure.measure_direction(rank, src, dst, sizes, dtype, link_device, args.warmup,
                                                  args.link_repeats, link_clock)
                    if r is not None:
                        got.append(r)
                    dist.barrier()
            mine["links"].append(got)
            shaper.clear()
    finally:
        shaper.close()   # restores the interface whatever happened
    if bad:
        why = "window probe failed (every machine restored): " + "; ".join(bad)
        say(f"warning: {why}; the profile is written without window_bytes")
        return {"failed": why}
    return mine


def _probe_doc(links: list[dict]) -> dict:
    """A links-only document (``raw.links`` with fits) of the probe's measurements, fitted as the
    main calibration fits its links."""
    from .fit import LinkFit, fit_link

    raw = []
    for r in links:
        pts = [(p["bytes"], p["one_way_s"]) for p in r["points"]]
        lat = r["small_rtt_p25_s"] / 2
        try:
            fit = fit_link(pts, latency_s=lat, weighting="absolute")
        except ValueError as e:   # as the main calibration does: never lose the probe to one noisy link
            n_big, t_big = pts[-1]
            fit = LinkFit(lat, n_big * 8 / max(t_big - lat, t_big * 0.5), None, None)
            print(f"warning: window probe, link {r['src']}->{r['dst']}: {e}; using half the small round trip and "
                  "the largest message's throughput instead", flush=True)
            r = {**r, "fit_failed": str(e)}
        raw.append({**r, "fit": fit.to_json()})
    return {"raw": {"links": raw}}


def finish(prof, gathered: list[dict], args, world: int):
    """Rank 0, after the profile is assembled: merge the window probe, then drive the overhead
    probe (the other ranks are in :func:`serve`). Returns (the profile, 1 if a probe failed else 0)."""
    from dataclasses import replace

    import torch.distributed as dist

    from .local import merge_window_probe

    rc = 0
    parts = [g.get("cluster_window_probe") or {} for g in gathered]
    note: dict = {}
    try:
        if parts[0].get("probes"):
            probes = [_network.parse(t) for t in parts[0]["probes"]]
            docs = [_probe_doc([r for p in parts for r in p["links"][i]]) for i in range(len(probes))]
            prof = merge_window_probe(prof, docs, probes)
            wp = {**prof.raw["window_probe"], "applied_with": "tc netem on --iface" if getattr(args, "iface", None)
                  else "the local testbed"}
            prof = replace(prof, raw={**prof.raw, "window_probe": wp})
        else:
            note["window_probe"] = parts[0].get("skipped") or parts[0].get("failed")
            rc = 1 if parts[0].get("failed") else 0
        if getattr(args, "no_overhead_probe", False):
            note["overhead_probe"] = "skipped (--no-overhead-probe)"
        elif world < 2:
            note["overhead_probe"] = "skipped: one rank"
        elif prof.device.get("type", "cpu") != "cpu":
            note["overhead_probe"] = OVERHEAD_SKIP_CUDA
            print(OVERHEAD_SKIP_CUDA, flush=True)
        else:
            from .overhead import probe, schedules_for

            v = getattr(args, "stages_per_rank", 1)
            schedules = schedules_for(getattr(args, "split_backward", False), v)
            print(f"runtime overhead probe: a few steps of {', '.join(schedules)} per micro-batch size, in-process "
                  "over this torchrun job (CPU time per action)", flush=True)
            prof = probe(prof, world, prof.model["name"], args.mbs, schedules=schedules, stages_per_rank=v,
                         run=lambda s, m, b, n, sv: _cell(args, s, m, b, n, sv))
    finally:
        dist.broadcast_object_list([None], src=0)   # the other ranks stop serving cells
    if note:
        prof = replace(prof, raw={**(prof.raw or {}), "cluster_probes": note})
    return prof, rc


def _config(args, spec):
    from runtime.engine import RunConfig

    schedule, m, batch, steps, v = spec
    # CPU only: the overhead probe is skipped on CUDA (see finish)
    return RunConfig(schedule=schedule, model=args.model, micro_batch_size=m, batch_size=batch, steps=steps, warmup=2,
                     device="cpu", threads=args.threads, stages_per_rank=v)


def _cell(args, schedule: str, m: int, batch: int, steps: int, stages_per_rank: int = 1) -> dict:
    """Rank 0: tell the others which cell, run it, return its results."""
    import torch.distributed as dist

    from runtime.engine import prepare_process, run_cell

    spec = (schedule, m, batch, steps, stages_per_rank)
    dist.broadcast_object_list([spec], src=0)
    cfg = _config(args, spec)
    prepare_process(cfg)
    with contextlib.redirect_stdout(io.StringIO()):   # the runtime's step lines
        res = run_cell(cfg)
    assert res is not None
    return res


def serve(args) -> None:
    """Ranks other than 0: run the cells rank 0 broadcasts, until it sends None."""
    import torch.distributed as dist

    from runtime.engine import prepare_process, run_cell

    while True:
        box: list = [None]
        dist.broadcast_object_list(box, src=0)
        if box[0] is None:
            return
        cfg = _config(args, box[0])
        prepare_process(cfg)
        with contextlib.redirect_stdout(io.StringIO()):
            run_cell(cfg)
