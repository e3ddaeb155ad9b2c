"""Compare the compute medians of two profiles: ``python -m calibrate.compare A.json B.json``.

Prints, per stage and micro-batch size, the forward and backward medians of both and
their difference in percent (relative to the mean of the two), the largest difference,
and the fraction of entries within 5%. Used to check that calibrating twice agrees.
"""

from __future__ import annotations

import sys

from pipesim.profile import load


def compare(a_path: str, b_path: str, tol: float = 0.05) -> tuple[str, float]:
    a, b = load(a_path), load(b_path)
    if a.num_stages != b.num_stages:
        raise ValueError(f"{a_path} has {a.num_stages} stages, {b_path} has {b.num_stages}")
    lines = ["stage  mbs  what       A ms      B ms    diff %", "-----  ---  --------  --------  --------  ------"]
    diffs = []
    for i, (sa, sb) in enumerate(zip(a.stages, b.stages)):
        for m in sorted(set(sa.compute) & set(sb.compute)):
            for what in ("forward_s", "backward_s"):
                x, y = getattr(sa.compute[m], what), getattr(sb.compute[m], what)
                d = (y - x) / ((x + y) / 2)
                diffs.append(abs(d))
                lines.append(f"{i:>5}  {m:>3}  {what[:-2]:<8}  {x * 1e3:8.3f}  {y * 1e3:8.3f}  {d * 100:+6.1f}")
    worst = max(diffs) if diffs else 0.0
    within = sum(d <= tol for d in diffs) / len(diffs) if diffs else 1.0
    lines.append(f"profile times: largest difference {worst * 100:.1f}%; "
                 f"{within * 100:.0f}% of entries within {tol * 100:.0f}%")
    # thread CPU time (recorded in raw on CPU): the same comparison without other processes' share of the core
    ra = (a.raw or {}).get("compute", [])
    rb = (b.raw or {}).get("compute", [])
    cd = []
    for xa, xb in zip(ra, rb):
        for m, sa in xa.get("samples", {}).items():
            sb = xb.get("samples", {}).get(m, {})
            for k in ("forward_cpu_s", "backward_cpu_s"):
                if k in sa and k in sb:
                    cd.append(abs(sb[k] - sa[k]) / ((sa[k] + sb[k]) / 2))
    if cd:
        lines.append(f"thread CPU time: largest difference {max(cd) * 100:.1f}%; "
                     f"{sum(d <= tol for d in cd) / len(cd) * 100:.0f}% of entries within {tol * 100:.0f}%")
    for name, p in (("A", a), ("B", b)):
        la = ((p.raw or {}).get("settings", {}) or {}).get("loadavg_1min")
        if la:
            lines.append(f"{name}: load average {la['start']:.1f} -> {la['end']:.1f} on {la['cores']} cores")
    return "\n".join(lines), worst


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m calibrate.compare A.json B.json", file=sys.stderr)
        return 2
    text, _ = compare(argv[0], argv[1])
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
