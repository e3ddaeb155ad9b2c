"""Benchmark the testbed's delay line: ceiling, CPU cost per Gbit/s, timing error.

    sudo python3 benchmarks/bench_testbed.py [--seconds 4] [--settings "delay 1ms,delay 1ms bandwidth 1Gbps"]

For each setting: one iperf3 TCP stream host 0 -> host 1 (throughput), the delay line
helper's CPU time during it (share of one core), and the delay line's own record of
how late it released packets (p50, p99, max over every packet of the run, including
the iperf3 stream). Then ping RTT on the idle link. The uncapped ``delay 1ms`` row is the
ceiling: what one stream through the delay line reaches on this machine.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipesim import network  # noqa: E402
from testbed import Testbed, available, check  # noqa: E402

DEFAULT = "delay 1ms,delay 0.1ms,delay 1ms bandwidth 1Gbps,delay 1ms bandwidth 2Gbps,delay 1ms bandwidth 5Gbps"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--settings", default=DEFAULT)
    args = ap.parse_args()
    ok, reason = available()
    if not ok:
        print(f"bench_testbed: {reason}", file=sys.stderr)
        return 2
    rows = ["| setting | throughput (1 stream) | delay-line CPU | CPU per Gbit/s | release late p50 / p99 / max | "
            "idle RTT median (target) |", "|---|---|---|---|---|---|"]
    for text in args.settings.split(","):
        s = network.parse(text)
        with tempfile.NamedTemporaryFile(suffix=".json") as stats_file:
            with Testbed(2, s, stats_file=stats_file.name) as tb:
                rtt = statistics.median(check.ping_rtts(tb, 0, 1, count=40))
                bps, cpu = check.iperf(tb, 0, 1, seconds=args.seconds)
            try:
                st = json.load(open(stats_file.name))
            except (OSError, json.JSONDecodeError):
                st = {"p50_late_s": float("nan"), "p99_late_s": float("nan"), "max_late_s": float("nan")}
        target = 2 * (s.for_link(0, 1).delay_s or 0)
        rows.append(f"| {s.label} | {bps / 1e9:.2f} Gbit/s | {cpu * 100:.0f}% | "
                    f"{cpu * 100 / (bps / 1e9):.0f}% of a core | <{st['p50_late_s'] * 1e6:.0f} / <{st['p99_late_s'] * 1e6:.0f} / "
                    f"{st['max_late_s'] * 1e6:.0f} us | {rtt * 1e3:.3f} ms ({target * 1e3:.2f}) |")
        print(rows[-1], file=sys.stderr, flush=True)
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the end")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
