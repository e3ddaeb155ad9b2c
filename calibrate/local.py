"""Calibrate on this machine: all ranks local (or in the testbed's hosts), one call.

:func:`run_local_calibration` starts ``python -m calibrate.worker`` once per rank with
:func:`runtime.launch.run_local` (inside the local testbed when ``network`` is given),
optionally runs a second, links-only pass over a delayed link (``window_probe``) to
fit each link's single-connection cap (``window_bytes``), and writes the profile
atomically. Nothing here imports torch; the ranks do.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from pipesim import network as _network
from pipesim.profile import Profile, from_json, write_json_atomic

from .fit import LinkFit, fit_window


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
                          window_probe: str | None = None, contention_s: float = 0.6, link_max_bytes: int = 16 << 20, timeout_s: float = 900,
                          log_dir: str | Path | None = None, echo: bool = True,
                          extra_args: Sequence[str] = ()) -> Profile:
    """Calibrate ``ranks`` stages of ``model`` on this machine and write the profile to ``out``.

    ``network``: run the ranks in the local testbed under that setting (None or
    ``"default"``: plain loopback). ``window_probe``: a setting with a delay (e.g.
    ``"delay 10ms"``) under which the links are measured a second time to fit the
    single-connection cap; without it ``window_bytes`` stays null (no cap).
    Raises ``FileExistsError`` if ``out`` exists and not ``force``, ``ValueError`` on
    bad arguments, :class:`runtime.launch.LaunchError` naming a failed rank.
    """
    from runtime.launch import run_local

    if not isinstance(ranks, int) or isinstance(ranks, bool) or ranks < 1:
        raise ValueError(f"--ranks must be a positive integer, got {ranks!r}")
    sizes = _sizes_arg(micro_batch_sizes)
    out = Path(out).resolve()
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name such as profile.json")
    net_label = "default"
    if network is not None and network.strip():
        net_label = _network.parse(network).label      # ValueError on nonsense
    probe = None
    if window_probe:
        probe = _network.parse(window_probe)
        if any(ov.delay_s is None for _, ov in probe.clauses) or probe.is_default:
            raise ValueError(f"--window-probe {window_probe!r} must add a delay (e.g. 'delay 10ms') to show the "
                             "single-connection cap")
        if net_label != "default":
            raise ValueError("--window-probe applies to calibration on the default network; leave --network out")
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
        doc = json.loads(main_json.read_text())
        if probe is not None and ranks > 1:
            probe_json = tmp / "probe.json"
            run_local("calibrate.worker", [*common, "--links-only", "--network-label", probe.label,
                                           "--out", str(probe_json)],
                      ranks, network=probe.label, timeout_s=timeout_s,
                      log_dir=Path(log_dir) / "probe" if log_dir else None, echo=echo)
            merge_window_probe(doc, json.loads(probe_json.read_text()), probe)
        write_json_atomic(out, doc, force=force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return from_json(doc, origin=str(out))


def merge_window_probe(doc: dict, probe_doc: dict, probe: "_network.NetworkSetting") -> None:
    """Set each link's ``window_bytes`` from a links-only run under a delayed link (see :func:`fit_window`)."""
    fits = {(r["src"], r["dst"]): r["fit"] for r in probe_doc["raw"]["links"]}
    report = []
    for link in doc["links"]:
        f = fits.get((link["src"], link["dst"]))
        if f is None:
            continue
        pf = LinkFit(f["latency_s"], f["bandwidth_bps"], f["rms_rel_error"], f["max_rel_error"])
        shaped = probe.for_link(link["src"], link["dst"]).bandwidth_bps
        expected = min(link["bandwidth_bps"], shaped) if shaped else link["bandwidth_bps"]
        win = fit_window(pf, expected)
        link["window_bytes"] = win
        report.append({"src": link["src"], "dst": link["dst"], "probe_fit": f, "expected_bps": expected,
                       "window_bytes": win})
    doc.setdefault("raw", {})["window_probe"] = {
        "network": probe.label,
        "method": "links re-measured under this setting; if the fitted bandwidth is below 0.8x the expected "
                  "(min of the undelayed fit and the shaped rate), window = bandwidth * 2 * latency / 8, else no cap",
        "links": report, "raw_links": probe_doc["raw"]["links"]}
    doc["description"] += f"; single-connection cap probed under {probe.label!r}"
