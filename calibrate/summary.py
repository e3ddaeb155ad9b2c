"""A short text summary of a profile: stage x micro-batch compute, then links (no torch)."""

from __future__ import annotations


def _ms(s: float) -> str:
    return f"{s * 1e3:.3f}"


def _bytes(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / 2**20:.2f} MiB"
    if n >= 1 << 10:
        return f"{n / 2**10:.1f} KiB"
    return f"{n} B"


def _bps(b: float) -> str:
    return f"{b / 1e9:.2f} Gbit/s" if b >= 1e9 else f"{b / 1e6:.1f} Mbit/s"


def summary(profile) -> str:
    """Tables: per stage and micro-batch size forward/backward ms (+- IQR) and bytes; per link latency/bandwidth."""
    lines = ["", "stage  mbs   forward ms (IQR)      backward ms (IQR)     activation   gradient",
             "-----  ---   -------------------   -------------------   ----------   ----------"]
    for i, st in enumerate(profile.stages):
        for m, c in sorted(st.compute.items()):
            lines.append(f"{i:>5}  {m:>3}   {_ms(c.forward_s):>9} ({_ms(c.forward_spread_s):>7})   "
                         f"{_ms(c.backward_s):>9} ({_ms(c.backward_spread_s):>7})   "
                         f"{_bytes(c.activation_bytes):>10}   {_bytes(c.gradient_bytes):>10}")
        lines.append(f"{i:>5}  opt   {_ms(st.optimizer_s):>9}")
    lines += ["", "link    latency ms   bandwidth        window      fit error (rms / max)",
              "------  ----------   --------------   ---------   ---------------------"]
    fits = {}
    for r in (profile.raw or {}).get("links", []):
        f = r.get("fit") or {}
        fits[(r["src"], r["dst"])] = f
    for (s, d), l in sorted(profile.links.items()):
        f = fits.get((s, d), {})
        err = (f"{f['rms_rel_error'] * 100:.1f}% / {f['max_rel_error'] * 100:.1f}%"
               if f.get("rms_rel_error") is not None else "fit failed")
        win = _bytes(l.window_bytes) if l.window_bytes else "none"
        lines.append(f"{s}->{d}    {_ms(l.latency_s):>10}   {_bps(l.bandwidth_bps):>14}   {win:>9}   {err}")
    excess = [(k, l.delay_excess_s) for k, l in sorted(profile.links.items()) if l.delay_excess_s]
    if excess:
        lines += ["", "under a delay, each message also takes (the delay element's own time): "
                  + ", ".join(f"{a}->{b} {_ms(x)} ms" for (a, b), x in excess)]
    if profile.host is not None:
        sl = ", ".join(f"{k}: {v:.2f}" for k, v in sorted(profile.host.slowdown.items()))
        lines += ["", f"host: {profile.host.cores} cores, slowdown with k ranks computing at once: {sl}"]
        if profile.host.shaped_cpu:
            lines.append("under a rate cap without a delay, each byte a rank sends or receives costs its core: "
                         + ", ".join(f"{_bps(r)} {k * 1e9:.2f} ns" for r, k in profile.host.shaped_cpu))
    from pipesim.context import probe_consistency

    c = probe_consistency(profile)
    if c is not None:
        lines += ["", f"overhead probe: its runs' computations took {c[0]:.2f}x the compute above (median; "
                  f"{c[1]:.2f}-{c[2]:.2f}); the overhead is the probe's excess over that compute, so a slow "
                  "spell in either moves it (docs/calibrate.md)"]
    return "\n".join(lines)
