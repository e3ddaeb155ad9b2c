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

Clauses are separated by ``;``. A clause without ``link`` applies to every link; a
later clause overrides the fields it names for the links it names. ``seed`` names the
ten settings of the seed table (:data:`SEED_GRID`), in its order and with its labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_UNITS_TIME = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "msec": 1e-3, "us": 1e-6, "usec": 1e-6}
_UNITS_RATE = {
    "bps": 1.0, "bit/s": 1.0, "bit": 1.0,
    "kbps": 1e3, "kbit/s": 1e3, "kbit": 1e3,
    "mbps": 1e6, "mbit/s": 1e6, "mbit": 1e6,
    "gbps": 1e9, "gbit/s": 1e9, "gbit": 1e9,
}

_NUM = r"(-?\d+(?:\.\d+)?)"
_TOKEN = re.compile(r"\s*(delay|bandwidth|link)\b\s*", re.I)


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

    def __str__(self) -> str:
        return self.label


def _parse_quantity(text: str, units: dict[str, float], what: str, setting: str) -> float:
    m = re.fullmatch(_NUM + r"\s*([a-zA-Z/]*)", text.strip())
    if m and not m.group(2) and float(m.group(1)) > 0:
        m = None
    if not m:
        raise ValueError(f"network setting {setting!r}: cannot read {what} {text.strip()!r}; "
                         f"write e.g. {'5ms' if what == 'delay' else '1Gbps'}")
    value, unit = float(m.group(1)), m.group(2).lower()
    if what == "delay" and value < 0:
        raise ValueError(f"network setting {setting!r}: delay must be >= 0, got {text.strip()!r}")
    if what == "bandwidth" and value <= 0:
        raise ValueError(f"network setting {setting!r}: bandwidth must be > 0, got {text.strip()!r}")
    if unit not in units:
        raise ValueError(f"network setting {setting!r}: unknown {what} unit {m.group(2)!r}; "
                         f"use one of {', '.join(sorted(set(units)))}")
    return value * units[unit]


def _parse_links(spec: str, setting: str) -> tuple[tuple[int, int], ...]:
    m = re.fullmatch(r"(\d+)\s*(->|-)\s*(\d+)", spec.strip())
    if not m:
        raise ValueError(f"network setting {setting!r}: cannot read link {spec.strip()!r}; "
                         "write 'link 0-1' (both directions) or 'link 0->1' (one direction)")
    a, arrow, b = int(m.group(1)), m.group(2), int(m.group(3))
    if a == b:
        raise ValueError(f"network setting {setting!r}: link {spec.strip()!r} joins a stage to itself")
    return ((a, b),) if arrow == "->" else ((a, b), (b, a))


def _parse_clause(clause: str, setting: str):
    parts = _TOKEN.split(clause)
    if parts[0].strip():
        raise ValueError(f"network setting {setting!r}: unknown word(s) {parts[0].strip()!r}; "
                         "expected 'default', 'delay X', 'bandwidth Y' or 'link A-B ...'")
    links = None
    delay = bw = None
    for key, value in zip(parts[1::2], parts[2::2]):
        key = key.lower()
        if key == "link":
            if links is not None:
                raise ValueError(f"network setting {setting!r}: 'link' given twice in one clause")
            if not value.strip():
                raise ValueError(f"network setting {setting!r}: 'link' needs a pair, e.g. 'link 0-1'")
            links = _parse_links(value, setting)
        elif key == "delay":
            if delay is not None:
                raise ValueError(f"network setting {setting!r}: 'delay' given twice")
            delay = _parse_quantity(value, _UNITS_TIME, "delay", setting)
        else:
            if bw is not None:
                raise ValueError(f"network setting {setting!r}: 'bandwidth' given twice")
            bw = _parse_quantity(value, _UNITS_RATE, "bandwidth", setting)
    if delay is None and bw is None:
        raise ValueError(f"network setting {setting!r}: clause {clause.strip()!r} sets neither delay nor bandwidth")
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
    clauses = tuple(_parse_clause(c, text) for c in text.split(";") if c.strip())
    return NetworkSetting(label, clauses)


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
    items = [t for t in re.split(r"[|,]", text) if t.strip()]
    if not items:
        raise ValueError("network grid is empty; write 'seed' or settings separated by ','")
    return [parse(t) for t in items]
