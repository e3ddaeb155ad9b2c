"""The testbed's helper process: builds the hosts, runs the delay line, and tears down.

Started by :class:`testbed.Testbed` as ``python -m testbed.helper SPEC``
in its own session (so Ctrl-C reaches only the parent). It owns every namespace and
device it makes and removes them when:

- its stdin (a pipe from the parent) reaches EOF: the parent closed the testbed, or
  died, even by SIGKILL;
- its parent process changes (the parent died while someone else still holds the pipe);
- it gets SIGTERM, SIGINT or SIGHUP.

It prints one JSON line on stdout: ``{"ready": ...}`` or ``{"error": "..."}``.

Re-shaping while up: each line written to its stdin is a JSON command. ``{"reshape":
{"links": {"i,j": [delay_s, bandwidth_bps], ...}}}`` sets those directed links (the
delay line's delay and host ``i``'s htb class towards ``j``; a link not named keeps its
shaping) and is answered by one line, ``{"reshaped": [hosts]}`` or ``{"error": "..."}``.
A delay needs ``tun`` mode (the parent builds it when asked to, even for a setting
without delay).

Two modes (chosen by the parent):

``veth``  no link has a delay: each host has a veth pair to a bridge that lives in a
          switch namespace of its own; bandwidth by htb on each host's veth egress.
``tun``   some link has a delay: each host has a TUN device (MTU 9000); this process
          reads every packet and holds it for the link's delay (:mod:`.router`);
          bandwidth by htb on each host's TUN egress, before the delay line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

from . import router, sysnet

IFACE = "tb0"
# MTU of every host's device, TUN and veth alike: jumbo frames, as on many cluster
# networks, and few enough packets per second (about 14k at 1 Gbit/s) for the Python
# delay line. A 64 KiB MTU was tried and is worse: an MSS that large is about the
# receiver's initial window (tcp_rmem default 128 KiB), and a stream over a 20 ms RTT
# stalled at 35 Mbit/s.
MTU = 9000
SUBNET = "10.77.0"
# htb's bucket: one MTU. htb lets a packet out while its tokens are >= 0 and charges it
# afterwards, so after an idle spell bucket + one packet leave at line rate. With the
# earlier 70000 bytes (plus a 64 KiB veth GSO packet) about 134 KiB of every message
# skipped the cap: a 256 KiB message at 200 Mbit/s took 5 ms instead of 10.5 ms.
HTB_BURST_BYTES = MTU


class _Stop(Exception):
    pass


def _on_signal(signum, frame):
    raise _Stop(signal.Signals(signum).name)


def address(i: int) -> str:
    return f"{SUBNET}.{i + 1}"


def shape_commands(ns: str, src: int, links: dict, n: int) -> list[list[str]]:
    """tc commands that cap each directed link src -> j at its bandwidth (htb, per destination).

    Unclassified traffic (links without a cap) bypasses shaping (``default 0``).
    """
    caps = {j: links[f"{src},{j}"][1] for j in range(n) if j != src and links[f"{src},{j}"][1]}
    if not caps:
        return []
    tc = ["tc", "-n", ns]
    cmds = [tc + ["qdisc", "add", "dev", IFACE, "root", "handle", "1:", "htb", "default", "0"]]
    for j, bps in sorted(caps.items()):
        cls = f"1:{j + 10:x}"
        # burst: one packet (veth GSO packets are capped at the MTU in build()), so that, as
        # with netem's rate, no more than about two packets pass faster than the rate
        burst = HTB_BURST_BYTES
        cmds.append(tc + ["class", "add", "dev", IFACE, "parent", "1:", "classid", cls, "htb",
                          "rate", f"{int(bps)}bit", "ceil", f"{int(bps)}bit",
                          "burst", str(burst), "cburst", str(burst), "quantum", "65536"])
        cmds.append(tc + ["qdisc", "add", "dev", IFACE, "parent", cls, "pfifo", "limit", "1000"])
        cmds.append(tc + ["filter", "add", "dev", IFACE, "parent", "1:", "protocol", "ip", "prio", "1",
                          "u32", "match", "ip", "dst", f"{address(j)}/32", "flowid", cls])
    return cmds


def build(spec: dict, made: list[str], fds: list[int]) -> dict:
    n, tag, mode, links = spec["num_hosts"], spec["tag"], spec["mode"], spec["links"]
    hosts = [f"{sysnet.PREFIX}{tag}-h{i}" for i in range(n)]
    mtu = str(spec.get("mtu") or MTU)
    shaping = [shape_commands(ns, i, links, n) for i, ns in enumerate(hosts)]
    inherited = sysnet.read_sysctls(sysnet.INHERITED_SYSCTLS)
    inherited.update(sysnet.TCP_OVERRIDES)
    if mode == "tun":   # the delay line forwards IPv4 only: keep IPv6 chatter off the TUN devices
        inherited.update({"net/ipv6/conf/all/disable_ipv6": "1", "net/ipv6/conf/default/disable_ipv6": "1"})
    tcp_failed: set[str] = set()
    with sysnet.congestion_control_allowed(sysnet.TCP_OVERRIDES["net/ipv4/tcp_congestion_control"]):
        for ns in hosts:
            sysnet.run(["ip", "netns", "add", ns], what="creating network namespace")
            made.append(ns)
            sysnet.run(["ip", "-n", ns, "link", "set", "lo", "up"])
            tcp_failed.update(sysnet.write_sysctls(ns, inherited))
    with sysnet.in_netns(hosts[0]):
        tcp = sysnet.read_sysctls(list(sysnet.TCP_OVERRIDES))
    if tcp_failed & set(sysnet.TCP_OVERRIDES):
        print(f"pipesim testbed: warning: could not set {', '.join(sorted(tcp_failed & set(sysnet.TCP_OVERRIDES)))} in "
              f"the hosts (they run {tcp}); messages over delayed links will take longer than the link model says",
              file=sys.stderr, flush=True)
    if mode == "veth":
        sw = f"{sysnet.PREFIX}{tag}-sw"
        sysnet.run(["ip", "netns", "add", sw], what="creating switch namespace")
        made.append(sw)
        sysnet.run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"], what="creating bridge")
        sysnet.run(["ip", "-n", sw, "link", "set", "br0", "up"])
        for i, ns in enumerate(hosts):
            sysnet.run(["ip", "-n", sw, "link", "add", f"p{i}", "type", "veth", "peer", "name", IFACE,
                        "netns", ns], what="creating veth pair")
            sysnet.run(["ip", "-n", sw, "link", "set", f"p{i}", "mtu", mtu])
            sysnet.run(["ip", "-n", ns, "link", "set", IFACE, "mtu", mtu])
            if shaping[i]:
                # no GSO super-packets (up to 64 KiB) on a shaped link: each would pass the cap at once
                sysnet.run(["ip", "-n", ns, "link", "set", IFACE, "gso_max_size", mtu],
                           what="capping GSO packets at the MTU")
            sysnet.run(["ip", "-n", sw, "link", "set", f"p{i}", "master", "br0", "up"])
    else:
        for ns in hosts:
            fds.append(sysnet.open_tun_in(ns, IFACE))
            sysnet.run(["ip", "-n", ns, "link", "set", IFACE, "mtu", mtu, "txqueuelen", "1000"])
    for i, ns in enumerate(hosts):
        sysnet.run(["ip", "-n", ns, "addr", "add", f"{address(i)}/24", "dev", IFACE])
        sysnet.run(["ip", "-n", ns, "link", "set", IFACE, "up"])
        for cmd in shaping[i]:
            sysnet.run(cmd, what="shaping bandwidth with htb")
    return {"namespaces": hosts, "all_namespaces": list(made), "addresses": [address(i) for i in range(n)],
            "iface": IFACE, "mode": mode, "pid": os.getpid(), "tcp": tcp}


class Control:
    """The helper's command channel: JSON lines on stdin, one JSON answer per line on stdout."""

    def __init__(self, spec: dict, hosts: list[str], delays: list[list[float]] | None):
        self.spec, self.hosts, self.delays = spec, hosts, delays
        self.buf = b""

    def feed(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if not line.strip():
                continue
            try:
                answer = self.handle(json.loads(line))
            except Exception as e:  # a bad command must not stop the delay line
                answer = {"error": str(e)}
            print(json.dumps(answer), flush=True)

    def handle(self, cmd: dict) -> dict:
        if "reshape" not in cmd:
            return {"error": f"unknown command {sorted(cmd)}"}
        n, links = self.spec["num_hosts"], self.spec["links"]
        new = cmd["reshape"]["links"]
        for key, (d, _) in new.items():
            if key not in links:
                return {"error": f"no link {key!r} in a testbed of {n} hosts"}
            if (d or 0) > 0 and self.delays is None:
                return {"error": "this testbed has no delay line (veth mode): build it with mode='tun' to reshape delays"}
        srcs = sorted({int(k.split(",")[0]) for k in new})
        for key, (d, bw) in new.items():
            links[key] = [d, bw]
            if self.delays is not None:
                i, j = map(int, key.split(","))
                self.delays[i][j] = d or 0.0
        for i in srcs:
            ns = self.hosts[i]
            sysnet.run(["tc", "-n", ns, "qdisc", "del", "dev", IFACE, "root"], check=False)
            cmds = shape_commands(ns, i, links, n)
            if cmds and self.spec["mode"] == "veth":
                sysnet.run(["ip", "-n", ns, "link", "set", IFACE, "gso_max_size", str(self.spec.get("mtu") or MTU)],
                           what="capping GSO packets at the MTU")
            for c in cmds:
                sysnet.run(c, what="shaping bandwidth with htb")
        return {"reshaped": srcs}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    parent = os.getppid()
    made: list[str] = []
    fds: list[int] = []
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _on_signal)
    stats = router.Stats(spec["num_hosts"])
    why = "?"
    try:
        try:
            info = build(spec, made, fds)
        except Exception as e:  # report, then clean up below
            print(json.dumps({"error": str(e)}), flush=True)
            return 1
        print(json.dumps({"ready": info}), flush=True)
        ctrl = sys.stdin.fileno()
        if spec["mode"] == "tun":
            sysnet.set_timer_slack(1)
            if spec.get("realtime", True):
                try:   # the delay line's timing matters more than anything else running here
                    os.sched_setscheduler(0, os.SCHED_FIFO | getattr(os, "SCHED_RESET_ON_FORK", 0),
                                          os.sched_param(1))
                except (OSError, AttributeError):
                    pass
            if spec.get("relay_cpus"):   # off the ranks' busiest cores (chosen by the parent)
                os.sched_setaffinity(0, set(spec["relay_cpus"]))
            n = spec["num_hosts"]
            delays = [[(spec["links"][f"{i},{j}"][0] or 0.0) if i != j else 0.0 for j in range(n)]
                      for i in range(n)]
            index = {socket.inet_aton(address(i)): i for i in range(n)}
            control = Control(spec, info["namespaces"], delays)
            why = router.serve(fds, index, delays, ctrl, parent, stats, on_ctrl=control.feed)
        else:
            import select
            control = Control(spec, info["namespaces"], None)
            while True:
                r, _, _ = select.select([ctrl], [], [], 0.2)
                if r:
                    data = os.read(ctrl, 4096)
                    if not data:
                        why = "stopped"
                        break
                    control.feed(data)
                if os.getppid() != parent:
                    why = "parent exited"
                    break
    except _Stop as e:
        why = f"signal {e}"
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        failed = sysnet.delete_netns(list(reversed(made)))
        if spec.get("stats_file"):
            try:
                with open(spec["stats_file"], "w") as f:
                    json.dump({"why": why, **stats.as_dict()}, f)
            except OSError:
                pass
        if failed:
            print(f"pipesim testbed: could not delete namespaces {failed}; "
                  f"remove them with `ip netns del NAME`", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
