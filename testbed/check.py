"""``pipesim testbed check``: measure RTT (ping) and throughput (iperf3) against the setting.

Targets: RTT within 10% (or 0.2 ms, whichever is larger) of twice the one-way delay;
iperf3 throughput within 10% of the bandwidth cap. Without a cap the throughput is
whatever the path carries (the delay line's ceiling, or veth's), reported, not judged.
The CPU cost is the helper process's (delay line's) CPU time during the iperf3 run,
as a share of one core.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass

from pipesim import network as _network

from .core import Testbed

RTT_REL, RTT_ABS_S, BW_REL = 0.10, 0.2e-3, 0.10


@dataclass
class Result:
    label: str
    mode: str
    delay_s: float
    rtt_target_s: float
    bandwidth_bps: float | None
    rtt_median_s: float
    rtt_min_s: float
    throughput_bps: float
    helper_cpu: float          # cores used by the helper (delay line) during iperf3
    rtt_ok: bool
    bw_ok: bool | None         # None: no cap to judge against


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ping_rtts(tb: Testbed, src: int, dst: int, count: int = 30, interval: float = 0.02) -> list[float]:
    p = tb.run(src, ["ping", "-n", "-c", str(count), "-i", str(interval),
                     "-W", "2", tb.addresses[dst]], timeout=count * interval + 30)
    rtts = [float(x) * 1e-3 for x in re.findall(r"time=([\d.]+) ms", p.stdout)]
    if not rtts:
        raise RuntimeError(f"ping from host {src} to {tb.addresses[dst]} got no replies: {p.stdout[-300:]} {p.stderr}")
    return rtts


def iperf(tb: Testbed, src: int, dst: int, seconds: float = 3.0, omit: float = 1.0) -> tuple[float, float]:
    """(received bit/s, helper CPU in cores) for one TCP stream src -> dst."""
    port = str(5201 + dst)
    server = tb.popen(dst, ["iperf3", "-s", "-1", "-p", port, "-B", tb.addresses[dst]],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.05)
        cpu0 = cpu_seconds(tb.helper_pid) if tb.helper_pid else 0.0
        t0 = time.monotonic()
        doc: dict = {}
        for _attempt in range(40):
            p = tb.run(src, ["iperf3", "-c", tb.addresses[dst], "-p", port, "-t", str(seconds),
                             "-O", str(omit), "-J"], timeout=seconds + omit + 30)
            try:
                doc = json.loads(p.stdout)
            except json.JSONDecodeError:
                doc = {"error": f"{p.stdout[-300:]} {p.stderr[-300:]}"}
            # iperf3 -J exits 0 even when it could not connect: look at the document
            if "error" not in doc or "connect" not in str(doc["error"]):
                break
            time.sleep(0.05)        # server not listening yet
        wall = time.monotonic() - t0
        cpu = (cpu_seconds(tb.helper_pid) - cpu0) / wall if tb.helper_pid else 0.0
        if "error" in doc or "sum_received" not in doc.get("end", {}):
            raise RuntimeError(f"iperf3 from host {src} to host {dst} failed: {doc.get('error', doc)}")
        return float(doc["end"]["sum_received"]["bits_per_second"]), cpu
    finally:
        server.kill()
        server.wait()


def check_setting(setting: _network.NetworkSetting, seconds: float = 3.0, pings: int = 30,
                  verbose: bool = False) -> Result:
    with Testbed(2, setting, verbose=verbose) as tb:
        ov = setting.for_link(0, 1)
        back = setting.for_link(1, 0)
        delay = (ov.delay_s or 0.0)
        rtt_target = delay + (back.delay_s or 0.0)
        rtts = ping_rtts(tb, 0, 1, count=pings)
        bps, cpu = iperf(tb, 0, 1, seconds=seconds)
        med = statistics.median(rtts)
        rtt_ok = abs(med - rtt_target) <= max(RTT_REL * rtt_target, RTT_ABS_S)
        bw_ok = None if not ov.bandwidth_bps else abs(bps - ov.bandwidth_bps) <= BW_REL * ov.bandwidth_bps
        return Result(setting.label, tb.mode, delay, rtt_target, ov.bandwidth_bps, med, min(rtts), bps, cpu, rtt_ok, bw_ok)


def _fmt_bps(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v / 1e9:.2f} Gbit/s" if v >= 1e9 else f"{v / 1e6:.0f} Mbit/s"


def table(results: list[Result]) -> str:
    rows = ["| setting | path | RTT target | RTT measured (median / min) | bandwidth | iperf3 throughput "
            "| delay-line CPU | ok |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        ok = "yes" if r.rtt_ok and r.bw_ok is not False else "NO"
        why = []
        if not r.rtt_ok:
            why.append("RTT")
        if r.bw_ok is False:
            why.append("throughput")
        rows.append(f"| {r.label} | {r.mode} | {r.rtt_target_s * 1e3:.2f} ms | {r.rtt_median_s * 1e3:.3f} / "
                    f"{r.rtt_min_s * 1e3:.3f} ms | {_fmt_bps(r.bandwidth_bps)} | {_fmt_bps(r.throughput_bps)} "
                    f"| {r.helper_cpu * 100:.0f}% of a core | {ok}{' (' + ', '.join(why) + ')' if why else ''} |")
    return "\n".join(rows)


def missing_programs() -> list[str]:
    return [p for p in ("ping", "iperf3") if shutil.which(p) is None]
