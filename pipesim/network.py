"""Network settings: the human strings of the seed table, parsed and validated.

A setting adds one-way delay and/or caps bandwidth, the way ``tc qdisc ... netem
delay D rate R`` does on an interface. Examples::

    default
    delay 5ms
    bandwidth 2Gbps
    delay 10ms bandwidth 1Gbps
    delay 1 ms bandwidth 500Mbps
    delay 2ms; link 1-2 bandwidth 100Mbps      # second clause: both directions of 1<->2
    link 0->1 delay 20ms                       # one direction only

Clauses are separated by ``;`` (an empty clause is an error). A clause without ``link``
applies to every link; a later clause overrides the fields it names for the links it
names. ``seed`` names the ten settings of the seed table (:data:`SEED_LABELS`), in its
order and with its labels.

Units (:data:`UNIT_TABLE`, docs/limits.md): delays in s, ms or us; bandwidths in bits
per second (``bps``, ``Mbps``, ``Gbit/s``, tc's ``mbit``, ...) or, with an upper-case
``B``, bytes per second (``MBps`` = 8e6 bit/s). After conversion every value is checked
against :data:`pipesim.limits.DELAY_S` and :data:`pipesim.limits.BANDWIDTH_BPS`.
Whether the links a setting names exist is checked where the number of stages is known
(:meth:`NetworkSetting.check_stages`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import limits

_UNITS_TIME = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "msec": 1e-3, "us": 1e-6, "usec": 1e-6}
"""Delay units (case does not matter)."""


def _rate_units() -> dict[str, float]:
    """Bandwidth units, case-sensitive for ``b`` (bits) against ``B`` (bytes, x 8).

    Bits per second: ``bps``, ``bit/s``, ``b/s`` and tc's ``bit``, with the prefixes
    k/K (1e3), m/M (1e6), g/G (1e9), t/T (1e12): ``kbps``, ``Mbps``, ``Gbit/s``,
    ``mbit``, ... Unlike tc, ``bps`` here means bits: it is how network rates are
    written. Bytes per second: ``Bps`` and ``B/s`` with the prefixes k/K, M, G, T
    (``MBps``: megabytes per second, 8e6 bit/s).
    """
    out: dict[str, float] = {}
    for pre, k in (("", 1.0), ("k", 1e3), ("K", 1e3), ("m", 1e6), ("M", 1e6), ("g", 1e9), ("G", 1e9),
                   ("t", 1e12), ("T", 1e12)):
        for base in ("bps", "bit/s", "b/s", "bit"):
            out[pre + base] = k
    for pre, k in (("", 1.0), ("k", 1e3), ("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        for base in ("Bps", "B/s"):
            out[pre + base] = 8 * k
    return out


_UNITS_RATE = _rate_units()
_TIME_HINT = "s, ms, us (also sec, msec, usec)"
_RATE_HINT = ("bps, kbps, Mbps, Gbps, Tbps (bits; also Mbit/s, Mb/s and tc's kbit, mbit, gbit) or Bps, KBps, MBps, "
              "GBps, TBps (bytes, x 8); see docs/limits.md")

# the unit table of docs/limits.md
UNIT_TABLE = [
    ("delay", "s, sec", "1 s", "case does not matter: 5ms = 5MS"),
    ("delay", "ms, msec", "1e-3 s", ""),
    ("delay", "us, usec", "1e-6 s", ""),
    ("bandwidth", "bps, bit/s, b/s, bit", "1 bit/s", "bits: lower-case b (unlike tc, bps means bits)"),
    ("bandwidth", "kbps, Kbps, kbit/s, kbit, ...", "1e3 bit/s", "prefix k or K"),
    ("bandwidth", "Mbps, mbps, Mbit/s, mbit, ...", "1e6 bit/s", "prefix M or m (mega, as tc)"),
    ("bandwidth", "Gbps, gbps, Gbit/s, gbit, ...", "1e9 bit/s", "prefix G or g"),
    ("bandwidth", "Tbps, tbps, Tbit/s, tbit, ...", "1e12 bit/s", "prefix T or t"),
    ("bandwidth", "Bps, B/s", "8 bit/s", "bytes: upper-case B"),
    ("bandwidth", "KBps, kBps, KB/s, kB/s", "8e3 bit/s", ""),
    ("bandwidth", "MBps, MB/s", "8e6 bit/s", "1MBps is one megabyte per second"),
    ("bandwidth", "GBps, GB/s", "8e9 bit/s", ""),
    ("bandwidth", "TBps, TB/s", "8e12 bit/s", ""),
]

_NUM = r"([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)"
_TOKEN = re.compile(r"\s*(delay|bandwidth|link)\b\s*", re.I)


def shorten(text: str, n: int = 40) -> str:
    """``text`` cut to about ``n`` characters for an error message (a value of thousands of digits stays one line)."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else f"{text[:n - 10]}...{text[-6:]} ({len(text)} characters)"


@dataclass(frozen=True)
class LinkOverride:
    """Extra one-way delay (s) and bandwidth cap (bit/s) on a set of links (None = unchanged)."""

    delay_s: float | None = None
    bandwidth_bps: float | None = None


@dataclass(frozen=True)
class NetworkSetting:
    """A parsed setting. ``clauses`` are (links, override); links None means all links.

    ``links`` is a tuple of directed (src, dst) stage pairs.
    """

    label: str
    clauses: tuple[tuple[tuple[tuple[int, int], ...] | None, LinkOverride], ...] = field(default=())

    @property
    def is_default(self) -> bool:
        return not self.clauses

    def for_link(self, src: int, dst: int) -> LinkOverride:
        """The override that applies to the directed link src -> dst."""
        delay = bw = None
        for links, ov in self.clauses:
            if links is None or (src, dst) in links:
                delay = ov.delay_s if ov.delay_s is not None else delay
                bw = ov.bandwidth_bps if ov.bandwidth_bps is not None else bw
        return LinkOverride(delay, bw)

    @property
    def uniform(self) -> LinkOverride:
        """The override for all links (error if the setting names single links)."""
        if any(links is not None for links, _ in self.clauses):
            raise ValueError(f"setting {self.label!r} differs per link; this use needs one setting for all links")
        return self.for_link(0, 1)

    def check_stages(self, num_stages: int, *, neighbours_only: bool = True, what: str = "stages") -> None:
        """Refuse a ``link`` clause that names a stage beyond ``num_stages`` or, with
        ``neighbours_only`` (the simulator), two stages that are not pipeline neighbours:
        only the links i <-> i+1 carry pipeline traffic, so shaping another pair would
        change nothing. The testbed passes ``neighbours_only=False``: it can shape any
        pair of hosts."""
        for links, _ in self.clauses:
            if links is None:
                continue
            a, b = links[0]
            spec = f"{a}-{b}" if len(links) == 2 else f"{a}->{b}"
            if max(a, b) >= num_stages:
                raise ValueError(f"network setting {shorten(self.label)!r} names link {spec}, but there are "
                                 f"{what} 0..{num_stages - 1} only" if num_stages > 1 else
                                 f"network setting {shorten(self.label)!r} names link {spec}, but there is one "
                                 f"{what[:-1]} only (no links)")
            if neighbours_only and abs(a - b) != 1:
                raise ValueError(f"network setting {shorten(self.label)!r} names link {spec}: stages {a} and {b} "
                                 "are not pipeline neighbours; only neighbour links (i-(i+1)) carry pipeline "
                                 "traffic, so it would change nothing")

    def __str__(self) -> str:
        return self.label


def _parse_quantity(text: str, units: dict[str, float], what: str, setting: str) -> float:
    shown = shorten(text.strip())
    m = re.fullmatch(_NUM + r"\s*([a-zA-Z/]*)", text.strip())
    if m and not m.group(2) and float(m.group(1)) > 0:
        m = None  # a positive number needs its unit
    if not m:
        raise ValueError(f"network setting {shorten(setting)!r}: cannot read {what} {shown!r}; "
                         f"write e.g. {'5ms' if what == 'delay' else '1Gbps'}")
    number, unit = m.group(1), m.group(2)
    rng = limits.DELAY_S if what == "delay" else limits.BANDWIDTH_BPS
    key = unit.lower() if what == "delay" else unit
    if unit and key not in units:
        hint = ("; units are case-sensitive: b = bits, B = bytes (x 8)"
                if what == "bandwidth" and unit.lower() in {u.lower() for u in units} else "")
        raise ValueError(f"network setting {shorten(setting)!r}: unknown {what} unit {shorten(unit, 20)!r}{hint}; "
                         f"use one of {_TIME_HINT if what == 'delay' else _RATE_HINT}")
    value = float(number) * (units[key] if unit else 1.0)  # float() of thousands of digits is inf, refused below
    try:
        return float(rng.check(value, what)) + 0.0  # + 0.0: no -0.0
    except ValueError:
        raise ValueError(f"network setting {shorten(setting)!r}: {what} must be {rng.describe()}, "
                         f"got {shown!r}") from None


def _parse_links(spec: str, setting: str) -> tuple[tuple[int, int], ...]:
    m = re.fullmatch(r"([0-9]+)\s*(->|-)\s*([0-9]+)", spec.strip())
    if not m:
        raise ValueError(f"network setting {shorten(setting)!r}: cannot read link {shorten(spec.strip())!r}; "
                         "write 'link 0-1' (both directions) or 'link 0->1' (one direction)")
    if max(len(m.group(1)), len(m.group(3))) > 6:
        raise ValueError(f"network setting {shorten(setting)!r}: link {shorten(spec.strip())!r} names a stage "
                         "beyond 999999; stages are numbered from 0, as in the profile")
    a, arrow, b = int(m.group(1)), m.group(2), int(m.group(3))
    if a == b:
        raise ValueError(f"network setting {shorten(setting)!r}: link {spec.strip()!r} joins a stage to itself")
    return ((a, b),) if arrow == "->" else ((a, b), (b, a))


def _parse_clause(clause: str, setting: str):
    parts = _TOKEN.split(clause)
    if parts[0].strip():
        raise ValueError(f"network setting {shorten(setting)!r}: unknown word(s) {shorten(parts[0].strip())!r}; "
                         "expected 'default', 'delay X', 'bandwidth Y' or 'link A-B ...'")
    links = None
    delay = bw = None
    for key, value in zip(parts[1::2], parts[2::2]):
        key = key.lower()
        if key == "link":
            if links is not None:
                raise ValueError(f"network setting {shorten(setting)!r}: 'link' given twice in one clause")
            if not value.strip():
                raise ValueError(f"network setting {shorten(setting)!r}: 'link' needs a pair, e.g. 'link 0-1'")
            links = _parse_links(value, setting)
        elif key == "delay":
            if delay is not None:
                raise ValueError(f"network setting {shorten(setting)!r}: 'delay' given twice")
            delay = _parse_quantity(value, _UNITS_TIME, "delay", setting)
        else:
            if bw is not None:
                raise ValueError(f"network setting {shorten(setting)!r}: 'bandwidth' given twice")
            bw = _parse_quantity(value, _UNITS_RATE, "bandwidth", setting)
    if delay is None and bw is None:
        raise ValueError(f"network setting {shorten(setting)!r}: clause {shorten(clause.strip())!r} sets neither "
                         "delay nor bandwidth")
    return links, LinkOverride(delay, bw)


def parse(text: str) -> NetworkSetting:
    """Parse one setting string. Raises ValueError with what to write instead."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("network setting is empty; write 'default', 'delay 5ms', 'bandwidth 1Gbps', ...")
    label = " ".join(text.split())
    if label.lower() == "default":
        return NetworkSetting("default")
    if label.lower() in GRIDS:
        raise ValueError(f"{label!r} names a grid of settings, not one setting; use it with 'pipesim grid'")
    pieces = text.split(";")
    if any(not c.strip() for c in pieces):
        raise ValueError(f"network setting {shorten(text)!r} has an empty clause; clauses are separated by ';', "
                         "e.g. 'delay 2ms; link 1-2 bandwidth 100Mbps'")
    clauses = tuple(_parse_clause(c, text) for c in pieces)
    return NetworkSetting(label, clauses)


def units_markdown() -> str:
    """The unit table of docs/limits.md."""
    lines = ["| quantity | units | each is | note |", "|---|---|---|---|"]
    lines += [f"| {q} | {u} | {v} | {n} |" for q, u, v, n in UNIT_TABLE]
    return "\n".join(lines)


# The seed table's rows, in its order, with its labels.
SEED_LABELS = [
    "default (about 0.1ms; up to 10Gbps)",
    "delay 1ms",
    "delay 5ms",
    "delay 10ms",
    "bandwidth 5Gbps",
    "bandwidth 2Gbps",
    "bandwidth 1Gbps",
    "delay 1ms  bandwidth 5Gbps",
    "delay 5ms  bandwidth 2Gbps",
    "delay 10ms  bandwidth 1Gbps",
]

GRIDS = {"seed": SEED_LABELS}


def seed_setting(label: str) -> NetworkSetting:
    s = parse("default" if label.startswith("default") else label)
    return NetworkSetting(label, s.clauses)


def parse_grid(text: str) -> list[NetworkSetting]:
    """A named grid (``seed``) or settings separated by ``,`` or ``|``."""
    name = text.strip().lower()
    if name == "seed":
        return [seed_setting(lbl) for lbl in SEED_LABELS]
    items = re.split(r"[|,]", text)
    if not text.strip() or all(not t.strip() for t in items):
        raise ValueError("network grid is empty; write 'seed' or settings separated by ','")
    if any(not t.strip() for t in items):
        raise ValueError(f"network grid {shorten(text)!r} has an empty setting between ',' or '|'")
    return [parse(t) for t in items]
