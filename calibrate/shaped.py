"""The CPU a rate cap without a delay costs the ranks: probed per rate, charged by the simulator.

On the local testbed a setting that caps a link's rate and adds no delay shapes the
link's veth with htb, and the kernel's work for each message (smaller segments, the
shaper's own dequeueing, more acknowledgements) runs in the ranks' own processes, on
their own cores. A delayed setting hands its packets to the delay line on a core of its
own instead. Measured on the 2-core VM of 2026-11-29 (machine B, validation folders of
the eleventh session, ``benchmarks/results/validation-2026-11-29-s11/noncompute_cpu.txt``):
each rank's process CPU per step beyond its computations rose against the default
network by about 1-2 ms per MB the rank sent and received under a cap alone (largest at
2 Gbit/s, not monotonic in the rate), and by about nothing under any delay. Calibration
works on the default network, so without this probe no prediction sees that CPU.

:func:`probe` launches the real runtime, GPipe at one micro-batch size with
``microbatches`` micro-batches per step (the overhead probe's shape), alternately on the
default network and under a cap of each rate, ``launches`` times each, and per rate sets

    s_per_byte = max(0, sum over ranks of (N_cap - N_default)) / (sum over ranks of bytes per step)

where ``N`` is a rank's CPU per step outside its computations (its process CPU per step
less the CPU inside its forwards, backwards and optimizer step; where a runtime reports no
CPU inside its computations, the process CPU per step itself), the median of the
launches, and a rank's bytes per step are those it sends plus those it receives (each
message counted at both ends, as the simulator charges it). The figures go to the
profile's ``host.shaped_cpu`` (:class:`pipesim.profile.Host`); the launches, each rank's
measured and fitted excess and the fit's error to ``raw.shaped_cpu_probe``. The simulator
charges ``s_per_byte * bytes`` on the sender's and the receiver's core when a message
enters a link that the setting caps without a delay (:mod:`pipesim.engine`), linear in
log rate between probed rates and the nearest probed rate's figure outside them.

It is a property of the machine and its shaper, not of the model: on a cluster, tc's
shaping may land elsewhere (on a NIC queue, another core), so the cluster calibration does
not run it, and a profile without ``shaped_cpu`` charges nothing.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipesim import network as N
from pipesim.limits import BANDWIDTH_BPS
from pipesim.profile import Profile

METHOD = ("the runtime (gpipe, one micro-batch size, `microbatches` micro-batches per step) launched alternately on "
          "the default network and under each rate cap without a delay; per rank N = process CPU per step less the CPU "
          "inside its computations, median of the launches; s_per_byte = max(0, sum over ranks of (N_cap - N_default)) "
          "/ sum over ranks of the bytes the rank sends and receives per step")
LAUNCHES = 2       # launches per setting (the default network's included)
STEPS = 12
MICROBATCHES = 4

RunFn = Callable[[str | None, str, int, int, int], dict]


def rates_of(settings: Sequence[N.NetworkSetting]) -> list[float]:
    """The rate caps a grid applies to some link without a delay on it, sorted, each once."""
    out: set[float] = set()
    for net in settings:
        for _, ov in net.clauses:
            if ov.bandwidth_bps is not None and not ov.delay_s:
                out.add(float(ov.bandwidth_bps))
    return sorted(out)


def rate_text(bps: float) -> str:
    """A rate as a network setting writes it: 5Gbps, 200Mbps, 64kbps, 1500bps."""
    for unit, scale in (("Gbps", 1e9), ("Mbps", 1e6), ("kbps", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps:g}bps"


def rate_of(text: str) -> float:
    """A rate as a network setting writes it ('5Gbps', '200Mbps'), in bit/s (the inverse of
    :func:`rate_text`); ``ValueError`` from the setting parser otherwise."""
    ov = N.parse(f"bandwidth {text}").for_link(0, 1)
    assert ov.bandwidth_bps is not None
    return ov.bandwidth_bps


def bytes_per_step(prof: Profile, micro_batch_size: int, microbatches: int) -> list[int]:
    """Per rank, the bytes GPipe (one stage per rank) sends plus receives in a step of
    ``microbatches`` micro-batches: activations forward, gradients back."""
    p = prof.num_stages
    c = [st.at(micro_batch_size, f"profile stage {i}: ") for i, st in enumerate(prof.stages)]
    out = []
    for r in range(p):
        n = 0
        if r < p - 1:
            n += c[r].activation_bytes + c[r + 1].gradient_bytes    # sends forward, receives back
        if r > 0:
            n += c[r - 1].activation_bytes + c[r].gradient_bytes    # receives forward, sends back
        out.append(n * microbatches)
    return out


def outside_cpu(results: dict) -> list[float] | None:
    """Per rank, a run's process CPU per step beyond the CPU inside its computations (None: the
    runtime's results do not record both)."""
    try:
        per = sorted(results["per_rank"], key=lambda p: p["rank"])
        return [float(p["cpu_per_step"]["median"]) - float(p["compute_cpu_per_step"]["median"]) for p in per]
    except (KeyError, TypeError, ValueError):
        return None


def _outside(res: dict) -> list[float]:
    """:func:`outside_cpu`, or each rank's process CPU per step where the run reports no split."""
    got = outside_cpu(res)
    if got is not None:
        return got
    return [float(pr["cpu_per_step"]["median"]) for pr in sorted(res["per_rank"], key=lambda x: x["rank"])]


def _local_run(model: str, ranks: int, timeout_s: float, tmp: Path) -> RunFn:
    from runtime.launch import run_local

    count = [0]

    def run(network: str | None, schedule: str, mbs: int, batch: int, steps: int) -> dict:
        count[0] += 1
        out = tmp / f"launch{count[0]}.json"
        run_local("runtime", ["--model", model, "--schedule", schedule, "--micro-batch-size", str(mbs),
                              "--batch-size", str(batch), "--steps", str(steps), "--warmup", "2", "--out", str(out)],
                  ranks, network=network, timeout_s=timeout_s, log_dir=tmp / f"logs{count[0]}", echo=False)
        return json.loads(out.read_text())
    return run


def probe(prof: Profile, ranks: int, model: str, micro_batch_size: int, rates_bps: Sequence[float], *,
          launches: int = LAUNCHES, microbatches: int = MICROBATCHES, steps: int = STEPS, timeout_s: float = 300,
          run: RunFn | None = None, progress: Callable[[str], None] | None = None) -> Profile:
    """``prof`` with ``host.shaped_cpu`` probed at each of ``rates_bps`` (see the module docstring).

    ``run(network, schedule, micro_batch_size, batch_size, steps)`` runs one launch and returns
    the runtime's results (default: a local launch, inside the testbed under a cap). A
    profile without a ``host`` section (not one machine) is refused."""
    if prof.host is None:
        raise ValueError("the shaped-link CPU probe is for ranks that share one machine (a profile with a host "
                         "section); a cluster profile has none")
    if ranks < 2 or ranks != prof.num_stages:
        raise ValueError(f"the shaped-link CPU probe needs the profile's {prof.num_stages} ranks (at least 2), "
                         f"got {ranks}")
    rates = sorted({float(BANDWIDTH_BPS.check(r, "shaped-link probe rate")) for r in rates_bps})
    if not rates:
        raise ValueError("the shaped-link CPU probe needs at least one rate cap")
    if not isinstance(launches, int) or isinstance(launches, bool) or launches < 1:
        raise ValueError(f"shaped-link probe launches must be a positive whole number, got {launches!r}")
    nbytes = bytes_per_step(prof, micro_batch_size, microbatches)
    if sum(nbytes) == 0:
        raise ValueError(f"the profile's stages send nothing at micro-batch size {micro_batch_size}: "
                         "no bytes to charge the shaped CPU to")
    labels: list[str | None] = [None] + [f"bandwidth {rate_text(r)}" for r in rates]
    measured: dict[str | None, list[list[float]]] = {lbl: [] for lbl in labels}
    with tempfile.TemporaryDirectory(prefix="pipesim-shaped-") as tmp:
        go = run or _local_run(model, ranks, timeout_s, Path(tmp))
        total = launches * len(labels)
        for i in range(launches):
            # alternating, so that a slow spell of the machine lands on one launch of a setting
            for j, lbl in enumerate(labels if i % 2 == 0 else labels[::-1]):
                if progress:
                    progress(f"shaped-link CPU probe [{i * len(labels) + j + 1}/{total}] "
                             f"{lbl or 'default network'}")
                res = go(lbl, "gpipe", micro_batch_size, micro_batch_size * microbatches, steps)
                measured[lbl].append(_outside(res))
    med = {lbl: [statistics.median(x[r] for x in runs) for r in range(ranks)] for lbl, runs in measured.items()}
    points = []
    report: list[dict[str, Any]] = []
    for rate, lbl in zip(rates, labels[1:]):
        extra = [a - b for a, b in zip(med[lbl], med[None])]
        k = max(0.0, sum(extra)) / sum(nbytes)
        fitted = [k * n for n in nbytes]
        points.append((rate, k))
        report.append({"bandwidth_bps": rate, "network": lbl, "s_per_byte": k,
                       "outside_cpu_launches_s": measured[lbl], "excess_s": extra, "fitted_excess_s": fitted,
                       "fit_max_abs_error_s": max(abs(f - e) for f, e in zip(fitted, extra))})
    raw = {**(prof.raw or {}), "shaped_cpu_probe": {
        "method": METHOD, "schedule": "gpipe", "micro_batch_size": micro_batch_size, "microbatches": microbatches,
        "steps": steps, "launches": launches, "bytes_per_step": nbytes,
        "default_outside_cpu_launches_s": measured[None], "rates": report}}
    host = replace(prof.host, shaped_cpu=tuple(points))
    desc = prof.description + "; CPU per byte under a rate cap probed at " + ", ".join(f"{r:g} bit/s" for r in rates)
    return replace(prof, host=host, raw=raw, description=desc)


def summary_lines(prof: Profile) -> list[str]:
    """One line per probed rate: the CPU per MB and the fit's largest error per rank and step."""
    rep = ((prof.raw or {}).get("shaped_cpu_probe") or {}).get("rates") or []
    return [f"  under {r['network']}: {1e3 * 1e6 * r['s_per_byte']:.2f} ms of CPU per MB a rank sends or receives "
            f"(fit within {1e3 * r['fit_max_abs_error_s']:.2f} ms per rank and step)" for r in rep]
