"""Fitting the profile's link model to measured transfer times (no torch).

The model (what :class:`pipesim.profile.Link` holds and the simulator replays)::

    time(n) = latency + n * 8 / bandwidth          one message of n bytes, one way
    throughput of one connection <= window / RTT   (RTT = 2 * latency)

:func:`fit_link` fits ``latency`` and ``bandwidth`` to points ``(n, seconds)``.
Calibration measures the latency directly (half a 4-byte round trip) and fits the
bandwidth by plain least squares with that latency fixed, so that the largest
messages set it: the sustained rate, not one inflated by a shaper's burst (the
testbed's htb lets ~128 KiB pass at line rate) or by small-message effects. The
fit's relative error over all sizes is recorded, so such deviations stay visible. :func:`fit_window` infers
the single-connection cap from a second run over a delayed link: if the throughput
seen there is clearly below what the link's bandwidth allows, the cap is
``window = throughput * RTT / 8``; otherwise no cap was observed (``None``).

What is not modelled: slow start, loss, per-size protocol switches (e.g. eager vs
rendezvous), and any difference between the two directions' latencies (one-way
latency is half a measured round trip).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipesim.util import quantile


@dataclass(frozen=True)
class LinkFit:
    latency_s: float
    bandwidth_bps: float
    rms_rel_error: float | None     # root mean square of (model - measured) / measured over the points
    max_rel_error: float | None     # both None: not a fit (a fallback where the fit failed)

    def predict(self, nbytes: float) -> float:
        return self.latency_s + nbytes * 8.0 / self.bandwidth_bps

    def to_json(self) -> dict:
        return {"latency_s": self.latency_s, "bandwidth_bps": self.bandwidth_bps,
                "rms_rel_error": self.rms_rel_error, "max_rel_error": self.max_rel_error}


def fit_link(points: Iterable[tuple[float, float]], latency_s: float | None = None,
             weighting: str = "relative") -> LinkFit:
    """Fit ``time(n) = latency + n*8/bandwidth`` to ``(bytes, seconds)`` points.

    ``weighting="relative"``: least squares on ``(model - t) / t``, every size counts
    alike. ``weighting="absolute"``: plain least squares on seconds, so the largest
    messages set the bandwidth -- the sustained rate, not one inflated by a token
    bucket's burst or by small-message effects. If ``latency_s`` is given (half a
    measured small-message round trip) only the bandwidth is fitted. The latency is
    clamped at >= 0; a slope that is not positive raises ``ValueError``. The errors
    reported are relative, over all points, whatever the weighting.
    """
    pts = [(float(n), float(t)) for n, t in points]
    if len(pts) < 2:
        raise ValueError(f"need at least 2 points to fit a link, got {len(pts)}")
    if any(t <= 0 or n < 0 for n, t in pts):
        raise ValueError("link points must have bytes >= 0 and seconds > 0")
    if len({n for n, _ in pts}) < 2:
        raise ValueError("link points must cover at least two message sizes")
    if weighting not in ("relative", "absolute"):
        raise ValueError(f"weighting must be 'relative' or 'absolute', got {weighting!r}")
    w2 = [1.0 / (t * t) if weighting == "relative" else 1.0 for _, t in pts]
    if latency_s is None:
        # minimise sum w (a + b n - t)^2 over a, b: 2x2 normal equations
        s00 = sum(w2)
        s01 = sum(w * n for w, (n, _) in zip(w2, pts))
        s11 = sum(w * n * n for w, (n, _) in zip(w2, pts))
        r0 = sum(w * t for w, (_, t) in zip(w2, pts))
        r1 = sum(w * n * t for w, (n, t) in zip(w2, pts))
        det = s00 * s11 - s01 * s01
        a = (r0 * s11 - r1 * s01) / det
        b = (s00 * r1 - s01 * r0) / det
        if a < 0:                       # latency cannot be negative: refit the slope alone
            a = 0.0
            b = r1 / s11
    else:
        a = max(0.0, float(latency_s))
        num = sum(w * n * (t - a) for w, (n, t) in zip(w2, pts))
        den = sum(w * n * n for w, (n, _) in zip(w2, pts))
        b = num / den if den > 0 else 0.0
    if not b > 0:
        raise ValueError("transfer time does not grow with message size; cannot fit a bandwidth "
                         "(measure larger messages)")
    rel = [((a + b * n) - t) / t for n, t in pts]
    return LinkFit(latency_s=a, bandwidth_bps=8.0 / b,
                   rms_rel_error=math.sqrt(sum(r * r for r in rel) / len(rel)),
                   max_rel_error=max(abs(r) for r in rel))


def fit_window(probe: LinkFit, expected_bps: float, threshold: float = 0.8) -> int | None:
    """The single-connection cap shown by a run over a delayed link, in bytes, or None.

    ``probe`` is the fit of the delayed run; ``expected_bps`` the bandwidth the link
    would give without a cap (the smaller of the undelayed fit and the probe's shaped
    rate). If the probe's bandwidth is below ``threshold * expected_bps`` the
    connection was window-limited: ``window = bandwidth * RTT / 8`` with
    ``RTT = 2 * latency``. Otherwise no cap was observed at this RTT: ``None``.
    """
    if probe.bandwidth_bps >= threshold * expected_bps:
        return None
    return int(round(probe.bandwidth_bps * 2.0 * probe.latency_s / 8.0))


def median_spread(samples: Sequence[float]) -> tuple[float, float]:
    """Median and interquartile range (p75 - p25) of timing samples."""
    if not samples:
        raise ValueError("no samples")
    xs = sorted(samples)
    med = statistics.median(xs)
    if len(xs) < 4:
        return med, xs[-1] - xs[0]
    return med, quantile(xs, 0.75) - quantile(xs, 0.25)


def lower_quartile(samples: Sequence[float]) -> float:
    """p25 of the samples: for transfers, where other processes' noise only adds time."""
    xs = sorted(samples)
    if len(xs) < 4:
        return xs[0]
    return quantile(xs, 0.25)


def message_sizes(max_bytes: int, min_bytes: int = 4, factor: int = 4) -> list[int]:
    """Geometric sizes from ``min_bytes`` to at least ``max_bytes`` (multiples of 4 bytes)."""
    if max_bytes < min_bytes:
        max_bytes = min_bytes
    out, n = [], min_bytes
    while n < max_bytes:
        out.append(n)
        n *= factor
    out.append(max(4, int(math.ceil(max_bytes / 4)) * 4))
    return out
