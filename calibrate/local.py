"""Calibrate on this machine: all ranks local (or in the testbed's hosts), one call.

:func:`run_local_calibration` starts ``python -m calibrate.worker`` once per rank with
:func:`runtime.launch.run_local` (inside the local testbed when ``network`` is given),
optionally runs a second, links-only pass over a delayed link (``window_probe``) to
fit each link's single-connection cap (``window_bytes``), and writes the profile
atomically. Nothing here imports torch; the ranks do.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pipesim import limits as _limits
from pipesim import network as _network
from pipesim import profile as _profile
from pipesim.profile import Profile

from .fit import LinkFit, fit_window
from .overhead import OVERHEAD_LAUNCHES


def _sizes_arg(micro_batch_sizes) -> str:
    if isinstance(micro_batch_sizes, str):
        text = micro_batch_sizes
    else:
        text = ",".join(str(int(m)) for m in micro_batch_sizes)
    from .worker import parse_sizes

    return ",".join(map(str, parse_sizes(text)))


def run_local_calibration(ranks: int, model: str | None = None, micro_batch_sizes: Sequence[int] | str = (1, 2, 4),
                          out: str | Path = "profile.json", network: str | None = None, force: bool = False, *,
                          repeats: int = 30, warmup: int = 3, rounds: int = 3, link_repeats: int = 15, threads: int = 1,
                          window_probe: str | Sequence[str] | None = None, contention_s: float = 0.6, link_max_bytes: int = 16 << 20, timeout_s: float = 900,
                          log_dir: str | Path | None = None, echo: bool = True,
                          extra_args: Sequence[str] = (), overhead_probe: bool = True,
                          overhead_method: str = "cpu", overhead_launches: int = OVERHEAD_LAUNCHES,
                          shaped_rates: Sequence[float] = ()) -> Profile:
    """Calibrate ``ranks`` stages of ``model`` on this machine and write the profile to ``out``.

    ``network``: run the ranks in the local testbed under that setting (None or
    ``"default"``: plain loopback). ``window_probe``: a setting with a delay (e.g.
    ``"delay 10ms"``), or two with different delays, under which the links are
    measured again to fit the single-connection cap (see :func:`merge_window_probe`);
    without it ``window_bytes`` stays null (no cap).
    ``overhead_method``: what the runtime-overhead probe puts in the profile, ``"cpu"``
    (CPU accounting) or ``"trace"`` (wall time in context); see :mod:`calibrate.overhead`.
    ``overhead_launches``: launches per (schedule, micro-batch size) of that probe.
    ``shaped_rates``: rate caps (bit/s) under which the CPU a cap without a delay costs the
    ranks per byte is probed on the testbed (:mod:`calibrate.shaped`; into ``host.shaped_cpu``).
    ``extra_args``: more worker flags; with ``--split-backward`` the overhead probe also
    runs zbh1, with ``--stages-per-rank V`` (V > 1) interleaved1f1b with that V.
    Raises ``FileExistsError`` if ``out`` exists and not ``force``, ``ValueError`` on
    bad arguments, :class:`runtime.launch.LaunchError` naming a failed rank.
    """
    from runtime.launch import run_local

    if not isinstance(ranks, int) or isinstance(ranks, bool) or ranks < 1:
        raise ValueError(f"--ranks must be a positive integer, got {ranks!r}")
    from .overhead import METHODS, check_launches

    check_launches(overhead_launches)
    if overhead_method not in METHODS:
        raise ValueError(f"--overhead-method must be one of {', '.join(METHODS)}, got {overhead_method!r}")
    sizes = _sizes_arg(micro_batch_sizes)
    out = Path(out).resolve()
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name such as profile.json")
    net_label = "default"
    if network is not None and network.strip():
        net_label = _network.parse(network).label      # ValueError on nonsense
    probes = []
    for text in ([window_probe] if isinstance(window_probe, str) else list(window_probe or [])):
        probe = _network.parse(text)
        if probe.is_default or any(ov.delay_s is None for _, ov in probe.clauses):
            raise ValueError(f"--window-probe {text!r} must add a delay (e.g. 'delay 10ms') to show the "
                             "single-connection cap")
        probes.append(probe)
    if len(probes) > 2:
        raise ValueError(f"--window-probe: give one or two delayed settings, got {len(probes)}")
    if probes and net_label != "default":
        raise ValueError("--window-probe applies to calibration on the default network; leave --network out")
    shaped_rates = sorted({float(_limits.BANDWIDTH_BPS.check(r, "--shaped-probe rate")) for r in shaped_rates})
    if shaped_rates and net_label != "default":
        raise ValueError("--shaped-probe applies to calibration on the default network; leave --network out")
    if net_label != "default" or probes or shaped_rates:
        from testbed import available

        ok, why = available()
        if not ok:
            raise ValueError(f"calibrating under a network setting (or with --window-probe or --shaped-probe) needs "
                             f"the local testbed, which is not available here: {why}")
    # the model name is checked by the worker too, but fail here before any process starts
    from runtime.model import DEFAULT_CPU_PRESET, get_config

    cfg = get_config(model or DEFAULT_CPU_PRESET)
    if cfg.layers < ranks:
        raise ValueError(f"model {cfg.name} has {cfg.layers} layers; cannot split it over {ranks} ranks")

    common = ["--model", cfg.name, "--micro-batch-sizes", sizes, "--repeats", str(repeats), "--warmup", str(warmup), "--rounds", str(rounds),
              "--link-repeats", str(link_repeats), "--threads", str(threads), "--contention-s", str(contention_s),
              "--link-max-bytes", str(link_max_bytes),
              "--force", *extra_args]
    for name, v in (("repeats", repeats), ("link_repeats", link_repeats), ("threads", threads), ("rounds", rounds)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
    tmp = Path(tempfile.mkdtemp(prefix="pipesim-calibrate-"))
    try:
        main_json = tmp / "main.json"
        run_local("calibrate.worker", [*common, "--one-machine", "--no-summary", "--network-label", net_label,
                                       "--out", str(main_json)],
                  ranks, network=None if net_label == "default" else net_label, timeout_s=timeout_s,
                  log_dir=Path(log_dir) / "main" if log_dir else None, echo=echo)
        prof = _profile.load(main_json)
        if probes and ranks > 1:
            docs = []
            for i, probe in enumerate(probes):
                probe_json = tmp / f"probe{i}.json"
                run_local("calibrate.worker", [*common, "--links-only", "--network-label", probe.label,
                                               "--out", str(probe_json)],
                          ranks, network=probe.label, timeout_s=timeout_s,
                          log_dir=Path(log_dir) / f"probe{i}" if log_dir else None, echo=echo)
                docs.append(json.loads(probe_json.read_text()))
            prof = merge_window_probe(prof, docs, probes)
        # CPU time per action is only comparable with CPU compute times
        if overhead_probe and ranks > 1 and net_label == "default" and prof.device.get("type", "cpu") == "cpu":
            from .overhead import probe as probe_overhead
            from .overhead import schedules_for

            split_backward, v = _asked_shapes(extra_args)
            schedules = schedules_for(split_backward, v)   # the new schedules where their compute was measured
            if echo:
                print(f"runtime overhead probe: a few steps of {', '.join(schedules)} per micro-batch size "
                      "(CPU time per action)", flush=True)
            prof = probe_overhead(prof, ranks, cfg.name, [int(x) for x in sizes.split(",")], timeout_s=timeout_s, echo=False,
                                  method=overhead_method, schedules=schedules, stages_per_rank=v,
                                  launches=overhead_launches)
        if shaped_rates and ranks > 1 and prof.host is not None and prof.device.get("type", "cpu") == "cpu":
            from .shaped import probe as probe_shaped
            from .shaped import summary_lines

            first = min(int(x) for x in sizes.split(","))
            prof = probe_shaped(prof, ranks, cfg.name, first, shaped_rates, timeout_s=timeout_s,
                                progress=(lambda msg: print(msg, flush=True)) if echo else None)
            if echo:
                print("\n".join(["CPU a rate cap without a delay costs the ranks:", *summary_lines(prof)]), flush=True)
        prof.save(out, force=force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _profile.from_json(prof.to_json(), origin=str(out))   # what the simulator will read


def _asked_shapes(extra_args: Sequence[str]) -> tuple[bool, int]:
    """(``--split-backward``, ``--stages-per-rank``) as the worker reads them from ``extra_args``."""
    ap = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    ap.add_argument("--split-backward", action="store_true")
    ap.add_argument("--stages-per-rank", type=int, default=1)
    ns, _ = ap.parse_known_args([str(a) for a in extra_args])
    return ns.split_backward, ns.stages_per_rank


def delay_excess(latency_s: float, probed: Sequence[tuple[float, float | None]]) -> float:
    """What a delay element adds to a link's latency beyond its nominal delay.

    ``probed`` holds (fitted latency, delay of the setting on this link) for each probe
    of the link under a delay; the excess is the median over them of the fitted latency
    less the delay and the link's undelayed ``latency_s``. On the local testbed it is
    the delay line's own time per message (about 0.05-0.2 ms); under tc netem on a
    cluster, netem's. It is never below 0: a link that is faster under a delay than
    without one had its undelayed latency inflated by something the runs do not show
    (the wrap-around link of interleaved 1F1B, between two ranks pinned to one core,
    probed at about 2 ms until calibration probed such pairs apart, see
    :mod:`calibrate.measure`), and letting that through scored worse
    (``benchmarks/delay_excess.py``). 0 without a delayed probe."""
    xs = [lat - d - latency_s for lat, d in probed if d]
    return max(statistics.median(xs), 0.0) if xs else 0.0


def merge_window_probe(prof: Profile, probe_docs, probes) -> Profile:
    """Set each link's ``window_bytes`` from links-only runs under delayed links.

    One probe: if its fitted bandwidth is clearly below the expected one (the smaller
    of the undelayed fit and the probe's shaped rate), the connection was
    window-limited and ``window = bandwidth * RTT / 8`` (:func:`fit_window`). This
    cannot tell a window from a path that is simply slower under delay (the testbed's
    user-space delay line has a CPU ceiling). Two probes at different delays can: a
    window cap falls as 1/RTT, a capacity ceiling does not. If the longer-RTT probe's
    bandwidth is below 0.8x the shorter one's, the window is taken from the longer
    one; otherwise the drop is a capacity ceiling, ``window_bytes`` stays null and the
    ceiling is recorded in ``raw.window_probe``. Returns the profile with those windows,
    the probe recorded in ``raw.window_probe`` and named in the description.
    """
    if isinstance(probe_docs, dict):
        probe_docs, probes = [probe_docs], [probes]
    fits = [{(r["src"], r["dst"]): r["fit"] for r in pd["raw"]["links"]} for pd in probe_docs]
    report = []
    links = dict(prof.links)
    for key, link in sorted(prof.links.items()):
        per = []
        delayed = []   # (fitted latency, the probe's delay on this link)
        for f, probe in zip(fits, probes):
            if key not in f:
                continue
            pf = LinkFit(f[key]["latency_s"], f[key]["bandwidth_bps"], f[key]["rms_rel_error"] or 0.0,
                         f[key]["max_rel_error"] or 0.0)
            ov = probe.for_link(*key)
            expected = min(link.bandwidth_bps, ov.bandwidth_bps) if ov.bandwidth_bps else link.bandwidth_bps
            per.append((pf, expected, probe.label))
            delayed.append((pf.latency_s, ov.delay_s))
        if not per:
            continue
        entry = {"src": key[0], "dst": key[1],
                 "probes": [{"network": lbl, "fit": pf.to_json(), "expected_bps": exp} for pf, exp, lbl in per]}
        if len(per) == 1:
            pf, expected, _ = per[0]
            win = fit_window(pf, expected)
            entry["verdict"] = "window-limited" if win else "no cap seen"
        else:
            (p1, e1, _), (p2, e2, _) = sorted(per, key=lambda x: x[0].latency_s)
            if fit_window(p2, e2) is None:
                win, entry["verdict"] = None, "no cap seen"
            elif p2.bandwidth_bps < 0.8 * p1.bandwidth_bps:
                win, entry["verdict"] = fit_window(p2, e2, threshold=1.0), "window-limited (throughput falls with RTT)"
            else:
                win = None
                entry["verdict"] = "capacity ceiling under delay, not a window (throughput does not fall with RTT)"
                entry["ceiling_bps"] = min(p1.bandwidth_bps, p2.bandwidth_bps)
        excess = delay_excess(link.latency_s, delayed)
        links[key] = replace(link, window_bytes=win, delay_excess_s=excess)
        entry["window_bytes"] = win
        entry["delay_excess_s"] = excess
        report.append(entry)
    labels = [p.label for p in probes]
    raw = {**(prof.raw or {}), "window_probe": {
        "networks": labels,
        "method": "links re-measured under these settings; window = bandwidth * 2 * latency / 8 where the "
                  "throughput is below 0.8x the expected and (with two probes) falls as the round trip grows; "
                  "delay_excess_s = the probed latency less the delay and the undelayed latency (median over "
                  "the probes)",
        "links": report, "raw_links": [pd["raw"]["links"] for pd in probe_docs]}}
    desc = prof.description + f"; single-connection cap probed under {' and '.join(repr(l) for l in labels)}"
    return replace(prof, links=links, raw=raw, description=desc)
