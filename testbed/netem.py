"""``pipesim netem``: apply a network setting to a real interface with tc netem, and restore it.

This is what the seed's experiments did on each machine::

    tc qdisc replace dev IF root netem delay 10ms rate 1Gbit

``apply`` saves the interface's qdiscs (``tc -j qdisc show dev IF``) to a state file
first (only if none is saved yet, so applying twice keeps the original), then replaces
the root qdisc. ``clear`` restores: if the saved root qdisc was the kernel's default for
the device (handle ``0:``, e.g. ``noqueue``, ``pfifo_fast``, ``fq_codel``, ``mq``),
deleting the root qdisc brings it back exactly; otherwise the saved kind and handle are
put back with default parameters, and the saved JSON is printed so the rest can be
restored by hand.

Netem applies to egress only: run it on every machine (each adds the one-way delay to
what it sends), as the seed did. Per-link settings (``link 0-1 ...``) are refused: one
interface carries all links; use a uniform setting per machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

from pipesim import limits
from pipesim import network as _network
from pipesim.util import write_json_atomic

STATE_DIR = "/run/pipesim"
NETEM_MISSING_HINT = (
    "this kernel has no sch_netem (tc says the qdisc kind is unknown). Install the kernel's "
    "extra modules (Debian/Ubuntu: apt-get install linux-modules-extra-$(uname -r); then "
    "modprobe sch_netem) on a real cluster machine; on one machine use `pipesim testbed` instead, "
    "which emulates delay without netem")
_IFACE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def _check_iface(iface: str | None) -> str:
    if not iface:
        raise ValueError("netem needs an explicit interface: --iface IF (e.g. --iface eth0); it changes "
                         "that interface's qdisc, so it never guesses one")
    if not _IFACE_RE.match(iface) or iface in (".", ".."):
        raise ValueError(f"--iface {iface!r} is not a valid interface name")
    return iface


def _fmt_time(s: float) -> str:
    us = s * 1e6
    return f"{us / 1000:g}ms" if abs(us - round(us / 1000) * 1000) < 1e-6 else f"{us:g}us"


def _fmt_rate(bps: float) -> str:
    for unit, k in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bps >= k and abs(bps / k - round(bps / k)) < 1e-9:
            return f"{int(round(bps / k))}{unit}"
    return f"{int(round(bps))}bit"


def check_limit(limit: int | None) -> int | None:
    """``limit`` (netem's queue length in packets) if it is a positive integer or None."""
    if limit is not None:
        limits.NETEM_LIMIT.check(limit, "--limit")
    return limit


def interface_exists(iface: str) -> bool:
    return os.path.exists(f"/sys/class/net/{iface}")


def netem_args(setting: _network.NetworkSetting, limit: int | None = None) -> list[str]:
    """The ``netem ...`` part for a uniform setting ([] for ``default``)."""
    check_limit(limit)
    try:
        ov = setting.uniform
    except ValueError:
        raise ValueError(f"network setting {setting.label!r} differs per link; netem on one interface "
                         "applies one setting to all traffic. Apply a uniform setting on each machine "
                         "(or one per machine by hand)") from None
    if setting.is_default or (ov.delay_s is None and ov.bandwidth_bps is None):
        return []
    args = ["netem"]
    if limit is not None:
        args += ["limit", str(int(limit))]
    if ov.delay_s is not None:
        args += ["delay", _fmt_time(ov.delay_s)]
    if ov.bandwidth_bps is not None:
        args += ["rate", _fmt_rate(ov.bandwidth_bps)]
    return args


def apply_commands(iface: str, setting: _network.NetworkSetting, limit: int | None = None) -> list[list[str]]:
    iface = _check_iface(iface)
    args = netem_args(setting, limit)
    if not args:   # default: nothing to add (apply() restores a saved state instead)
        return []
    return [["tc", "qdisc", "replace", "dev", iface, "root", *args]]


def state_path(iface: str, state_dir: str = STATE_DIR) -> str:
    return os.path.join(state_dir, f"netem-{_check_iface(iface)}.json")


def restore_commands(iface: str, saved: list[dict]) -> tuple[list[list[str]], str]:
    """Commands that bring back the saved qdiscs, and a note on what could not be."""
    iface = _check_iface(iface)
    root = next((q for q in saved if q.get("root")), None)
    if root is None or root.get("handle") in ("0:", None) or root.get("kind") in ("noqueue",):
        return [["tc", "qdisc", "del", "dev", iface, "root"]], ""
    cmds = [["tc", "qdisc", "replace", "dev", iface, "root", "handle", root["handle"], root["kind"]]]
    note = (f"the previous root qdisc {root['kind']} {root['handle']} was put back with default parameters"
            + (" and without its child qdiscs/classes" if len(saved) > 1 else "")
            + "; the saved state is printed above")
    return cmds, note


def show_qdiscs(iface: str) -> list[dict]:
    p = subprocess.run(["tc", "-j", "qdisc", "show", "dev", iface], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"cannot read the qdiscs of {iface}: {p.stderr.strip()}")
    return json.loads(p.stdout or "[]")


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def _explain(cmd: list[str], p: subprocess.CompletedProcess) -> str:
    err = (p.stderr or p.stdout).strip()
    if "netem" in cmd and ("kind is unknown" in err or "unknown qdisc" in err.lower() or
                           "No such file" in err):
        return f"`{' '.join(cmd)}` failed ({err}): {NETEM_MISSING_HINT}"
    return f"`{' '.join(cmd)}` failed: {err}"


def apply(iface: str, setting: _network.NetworkSetting, *, dry_run: bool = False, limit: int | None = None,
          state_dir: str = STATE_DIR, out=print) -> int:
    iface = _check_iface(iface)
    check_limit(limit)
    cmds = apply_commands(iface, setting, limit)
    path = state_path(iface, state_dir)
    if not cmds:   # 'default': undo our own netem if there is one, else leave the interface alone
        if os.path.exists(path):
            out(f"{setting.label!r} adds nothing: restoring {iface}'s saved qdisc")
            return clear(iface, dry_run=dry_run, state_dir=state_dir, out=out)
        out(f"{setting.label!r} adds nothing and no netem of ours is on {iface}: nothing to do")
        return 0
    if _dry_run_or_need_root(dry_run, f"# would save `tc -j qdisc show dev {iface}` to {path} "
                                      "(unless already saved), then run:", cmds, out):
        return 0
    if not interface_exists(iface):
        raise ValueError(f"no interface {iface!r} on this machine (see `ip -br link`)")
    created = False
    if not os.path.exists(path):
        write_json_atomic(path, {"iface": iface, "qdiscs": show_qdiscs(iface)}, indent=None)
        created = True
    for c in cmds:
        p = _run(c)
        if p.returncode != 0 and not (c[2] == "del" and "No such file" in p.stderr + p.stdout) and not (
                c[2] == "del" and "Cannot delete qdisc with handle of zero" in p.stderr):
            if created:
                os.unlink(path)
            raise RuntimeError(_explain(c, p))
        out(" ".join(c))
    out(f"applied {setting.label!r} on {iface}; previous qdisc saved in {path}; "
        f"restore with `pipesim netem clear --iface {iface}`")
    return 0


def _dry_run_or_need_root(dry_run: bool, header: str, cmds: list[list[str]], out) -> bool:
    """With dry_run, print the header and the commands and return True; else insist on root."""
    if dry_run:
        out(header)
        for c in cmds:
            out(" ".join(c))
        return True
    if os.geteuid() != 0:
        raise PermissionError("tc needs root: run with sudo")
    return False


def clear(iface: str, *, dry_run: bool = False, state_dir: str = STATE_DIR, out=print) -> int:
    iface = _check_iface(iface)
    path = state_path(iface, state_dir)
    saved = None
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f).get("qdiscs", [])
    if not interface_exists(iface) and (saved is None or not dry_run):
        raise ValueError(f"no interface {iface!r} on this machine (see `ip -br link`)"
                         + (f"; its saved state {path} is kept" if saved is not None else ""))
    if saved is not None:
        cmds, note = restore_commands(iface, saved)
    else:
        note = ""
        # nothing saved: remove a netem root qdisc (ours, from a lost state file), touch nothing else
        try:
            current = show_qdiscs(iface)
        except RuntimeError:
            current = []
        root = next((q for q in current if q.get("root")), {})
        cmds = [["tc", "qdisc", "del", "dev", iface, "root"]] if root.get("kind") == "netem" else []
        if not cmds:
            out(f"no saved state for {iface} ({path}) and no netem on it: nothing to do")
            return 0
        out(f"no saved state for {iface} ({path}); removing its netem root qdisc (the kernel puts its "
            "default back)")
    if _dry_run_or_need_root(dry_run, f"# saved state: {path if saved is not None else 'none'}", cmds, out):
        return 0
    for c in cmds:
        p = _run(c)
        err = p.stderr + p.stdout
        if p.returncode != 0 and not ("No such file" in err or "handle of zero" in err):
            raise RuntimeError(_explain(c, p))
        out(" ".join(c))
    if note:
        out(json.dumps(saved))
        out(f"note: {note}")
    if saved is not None:
        os.unlink(path)
    out(f"restored {iface}")
    return 0


# ---------------------------------------------------------------------------------------------
# Per-machine commands of a sweep: what machine `rank` runs for a setting, per-link ones included.
#
# A setting that names single links (``link 0-1 delay 5ms``) cannot be one netem on the whole
# interface. Machine ``rank`` then shapes only what it sends to each peer whose link the setting
# changes, with the tree of tc-netem(8)'s per-destination example:
#
#     tc qdisc replace dev IF root handle 1: prio bands B priomap 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
#     tc qdisc add dev IF parent 1:2 handle 20: netem delay 5ms          (one band per distinct setting)
#     tc filter add dev IF parent 1: protocol ip prio 1 u32 match ip dst PEER/32 flowid 1:2
#
# The priomap sends every unfiltered packet to band 1 (plain fifo, unshaped); each peer's packets
# go through its band's netem. Peers are matched by their IPv4 address on the interface.

PRIO_MISSING_HINT = ("this kernel has no sch_prio (tc says the qdisc kind is unknown): load it with "
                     "`modprobe sch_prio` (per-link settings need it; uniform ones do not)")
_IPV4_RE = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


def _check_ipv4(addr: str, what: str) -> str:
    m = _IPV4_RE.match(str(addr))
    if not m or any(int(x) > 255 for x in m.groups()):
        raise ValueError(f"{what}: {addr!r} is not an IPv4 address (per-link settings match peers by IPv4 address)")
    return str(addr)


def per_link_commands(iface: str, setting: _network.NetworkSetting, rank: int, addresses: list[str],
                      limit: int | None = None) -> list[list[str]]:
    """The tc commands machine ``rank`` runs so that what it sends to machine ``j`` sees
    ``setting.for_link(rank, j)`` (the prio tree above); [] when no link from ``rank`` changes."""
    iface = _check_iface(iface)
    if not 0 <= rank < len(addresses):
        raise ValueError(f"rank {rank} has no address among the {len(addresses)} machines")
    for links, _ in setting.clauses:
        for a, b in links or ():
            if max(a, b) >= len(addresses):
                raise ValueError(f"network setting {setting.label!r} names link {a}-{b}, but there are only "
                                 f"{len(addresses)} machines (ranks 0..{len(addresses) - 1})")
    groups: dict[tuple[float | None, float | None], list[int]] = {}
    for j in range(len(addresses)):
        if j == rank:
            continue
        ov = setting.for_link(rank, j)
        if ov.delay_s is None and ov.bandwidth_bps is None:
            continue
        groups.setdefault((ov.delay_s, ov.bandwidth_bps), []).append(j)
    if not groups:
        return []
    if len(groups) > 15:
        raise ValueError(f"network setting {setting.label!r} gives rank {rank}'s links {len(groups)} different "
                         "settings; prio has at most 16 bands (15 shaped)")
    cmds = [["tc", "qdisc", "replace", "dev", iface, "root", "handle", "1:", "prio", "bands", str(1 + len(groups)),
             "priomap", *["0"] * 16]]
    for band, ((delay, bw), peers) in enumerate(sorted(groups.items(), key=lambda kv: kv[1][0]), start=2):
        one = _network.NetworkSetting("one link", ((None, _network.LinkOverride(delay, bw)),))
        cmds.append(["tc", "qdisc", "add", "dev", iface, "parent", f"1:{band}", "handle", f"{band}0:",
                     *netem_args(one, limit)])
        for j in peers:
            dst = _check_ipv4(addresses[j], f"address of rank {j}")
            cmds.append(["tc", "filter", "add", "dev", iface, "parent", "1:", "protocol", "ip", "prio", "1",
                         "u32", "match", "ip", "dst", f"{dst}/32", "flowid", f"1:{band}"])
    return cmds


def rank_commands(iface: str, setting: _network.NetworkSetting, rank: int, addresses: list[str] | None = None,
                  limit: int | None = None) -> list[list[str]]:
    """What machine ``rank`` runs for ``setting``: the seed's one netem for a uniform setting
    (:func:`apply_commands`), the per-destination tree for one that names links."""
    if any(links is not None for links, _ in setting.clauses):
        if addresses is None:
            raise ValueError(f"network setting {setting.label!r} names links: the machines' addresses are needed")
        return per_link_commands(iface, setting, rank, addresses, limit)
    return apply_commands(iface, setting, limit)


def apply_list(iface: str, cmds: list[list[str]], label: str, *, state_dir: str = STATE_DIR, out=print) -> int:
    """Save ``iface``'s qdiscs (unless saved already), run ``cmds``; on any failure put the saved
    qdiscs back (:func:`clear`) before raising, so a half-built tree is never left behind."""
    iface = _check_iface(iface)
    if not cmds:
        out(f"{label!r} changes nothing that this machine sends: nothing to do")
        return 0
    if os.geteuid() != 0:
        raise PermissionError("tc needs root: run with sudo")
    if not os.path.exists(f"/sys/class/net/{iface}"):
        raise ValueError(f"no interface {iface!r} on this machine (see `ip -br link`)")
    path = state_path(iface, state_dir)
    if not os.path.exists(path):
        write_json_atomic(path, {"iface": iface, "qdiscs": show_qdiscs(iface)}, indent=None)
    for c in cmds:
        p = _run(c)
        if p.returncode != 0:
            err = (p.stderr or p.stdout).strip()
            why = (f"`{' '.join(c)}` failed ({err}): {PRIO_MISSING_HINT}" if "prio" in c and "kind is unknown" in err
                   else _explain(c, p))
            try:
                clear(iface, state_dir=state_dir, out=out)
            except (RuntimeError, OSError) as e:
                why += f"; restoring {iface} failed too: {e}"
            raise RuntimeError(why)
        out(" ".join(c))
    out(f"applied {label!r} on {iface}; previous qdisc saved in {path}")
    return 0
