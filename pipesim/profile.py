"""Profile: what calibration measured (or a person estimated), and what the simulator reads.

A versioned JSON document, written so that a person can also write it by hand::

    {
      "pipesim_profile": 1,
      "source": "measured",            # or "estimated": never present one as the other
      "description": "where the numbers come from",
      "model": {"name": "gpt3-small", "layers": 12, "d_model": 768, ...},
      "device": {"name": "NVIDIA V100", "backend": "nccl", "dtype": "float16"},
      "stages": [
        {"layers": 4, "optimizer_s": 0.004,
         "compute": {"1": {"forward_s": 0.021, "backward_s": 0.043,
                           "activation_bytes": 3145728, "gradient_bytes": 0}, ...}},
        ...
      ],
      "links": [
        {"src": 0, "dst": 1, "latency_s": 5e-05, "bandwidth_bps": 1e10, "window_bytes": 4194304},
        ...
      ],
      "host": {"cores": 2, "slowdown": {"1": 1.0, "2": 1.1, "3": 1.6}},   # optional
      "raw": {...}                                                          # optional
    }

Per stage and micro-batch size: forward and backward seconds (medians; optional
``*_spread_s``), ``activation_bytes`` sent to the next stage and ``gradient_bytes``
sent back to the previous stage, per micro-batch; optional ``overhead_s``, the
runtime's own CPU time per forward or backward (posting messages, copies, its threads),
which the simulator adds to each of them; optional ``overhead_by_schedule_s``
(``{"gpipe": s, "1f1b": s}``), the same probed per schedule, used when present.

Per directed link: one-way ``latency_s`` (including per-message software overhead),
``bandwidth_bps`` (bits per second), and ``window_bytes``: the most a single
connection keeps in flight, so that its throughput is at most ``window / RTT`` as the
round trip grows (null: no cap). Links missing from the file default to the entry
named ``"default_link"`` if given.

``host`` (optional) says that all ranks share one machine of ``cores`` cores, as on
the local testbed: when k ranks compute at once, each runs ``slowdown[k]`` times slower
than alone. With ``placement`` (the core each rank is pinned to, as ``pipesim run
--local`` does), ranks share only their own core instead: j ranks computing on one core
each run j times slower. A real cluster (one rank per machine) leaves ``host`` out.

Errors name the file and the field, e.g. ``profile.json: stages[1].compute["4"].forward_s
must be a number > 0, got -1``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .network import NetworkSetting
from .schedule import GENERATORS
from .util import write_json_atomic

VERSION = 1
BUNDLED = Path(__file__).parent / "data" / "gpt3_small_v100_estimated.json"


@dataclass(frozen=True)
class StageCompute:
    forward_s: float
    backward_s: float
    activation_bytes: int = 0
    gradient_bytes: int = 0
    forward_spread_s: float = 0.0
    backward_spread_s: float = 0.0
    overhead_s: float = 0.0  # runtime CPU per forward or backward beyond the computation (posting, copies, threads)
    # the same per schedule where it was probed per schedule (it differs: e.g. cache footprint)
    overhead_by_schedule_s: dict[str, float] | None = None

    def overhead(self, schedule: str | None = None) -> float:
        """The runtime's CPU per forward or backward under ``schedule`` (its own probe if any)."""
        if schedule and self.overhead_by_schedule_s and schedule in self.overhead_by_schedule_s:
            return self.overhead_by_schedule_s[schedule]
        return self.overhead_s


@dataclass(frozen=True)
class Stage:
    compute: dict[int, StageCompute]
    layers: int | None = None
    optimizer_s: float = 0.0

    def at(self, mbs: int, where: str = "") -> StageCompute:
        try:
            return self.compute[mbs]
        except KeyError:
            have = ", ".join(str(k) for k in sorted(self.compute))
            raise ValueError(f"{where}no compute times for micro-batch size {mbs} (profile has {have}); "
                             "calibrate with that size (pipesim calibrate --micro-batch-sizes ...)") from None


@dataclass(frozen=True)
class Link:
    src: int
    dst: int
    latency_s: float
    bandwidth_bps: float
    window_bytes: int | None = None

    def shaped(self, override) -> Link:
        """This link under a setting's override: extra delay added, bandwidth capped."""
        lat = self.latency_s + (override.delay_s or 0.0)
        bw = self.bandwidth_bps if override.bandwidth_bps is None else min(self.bandwidth_bps, override.bandwidth_bps)
        return Link(self.src, self.dst, lat, bw, self.window_bytes)


@dataclass(frozen=True)
class Host:
    cores: int
    slowdown: dict[int, float]
    quantum_s: float | None = None  # None: fluid processor sharing; else round-robin time slice (inf allowed)
    placement: tuple[int, ...] | None = None  # core of each rank when ranks are pinned (then cores are shared per core)

    def factor(self, active: int) -> float:
        if active <= 0:
            return 1.0
        if active in self.slowdown:
            return self.slowdown[active]
        # beyond what was measured: fair sharing of the cores on top of the largest measured point
        k = max(self.slowdown)
        return self.slowdown[k] * max(1.0, active / max(k, self.cores))


@dataclass(frozen=True)
class Profile:
    stages: tuple[Stage, ...]
    links: dict[tuple[int, int], Link]
    source: str = "estimated"
    description: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    host: Host | None = None
    raw: dict[str, Any] | None = None

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def micro_batch_sizes(self) -> list[int]:
        sizes = set(self.stages[0].compute)
        for s in self.stages[1:]:
            sizes &= set(s.compute)
        return sorted(sizes)

    def link(self, src: int, dst: int, setting: NetworkSetting | None = None) -> Link:
        try:
            base = self.links[(src, dst)]
        except KeyError:
            raise ValueError(f"profile has no link {src}->{dst}; add it under 'links'") from None
        return base.shaped(setting.for_link(src, dst)) if setting is not None else base

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "pipesim_profile": VERSION,
            "source": self.source,
            "description": self.description,
            "model": self.model,
            "device": self.device,
            "stages": [
                {
                    "layers": s.layers,
                    "optimizer_s": s.optimizer_s,
                    "compute": {str(k): asdict(v) for k, v in sorted(s.compute.items())},
                }
                for s in self.stages
            ],
            "links": [asdict(l) for _, l in sorted(self.links.items())],
        }
        if self.host is not None:
            doc["host"] = {"cores": self.host.cores, "slowdown": {str(k): v for k, v in sorted(self.host.slowdown.items())}}
            if self.host.placement is not None:
                doc["host"]["placement"] = list(self.host.placement)
            if self.host.quantum_s is not None:
                doc["host"]["quantum_s"] = self.host.quantum_s if math.isfinite(self.host.quantum_s) else "inf"
        if self.raw is not None:
            doc["raw"] = self.raw
        return doc

    def save(self, path: str | os.PathLike, force: bool = True) -> None:
        write_json_atomic(path, self.to_json(), force=force)


# ---------------------------------------------------------------------- reading with named errors


class _Reader:
    def __init__(self, origin: str):
        self.origin = origin

    def fail(self, where: str, msg: str) -> ValueError:
        return ValueError(f"{self.origin}: {where} {msg}")

    def get(self, obj: dict, key: str, where: str, required: bool = True, default: Any = None):
        if not isinstance(obj, dict):
            raise self.fail(where, f"must be an object, got {type(obj).__name__}")
        if key not in obj:
            if required:
                raise self.fail(f"{where}.{key}" if where else key, "is missing")
            return default
        return obj[key]

    def number(self, obj, key, where, *, positive=False, nonneg=True, required=True, default=None):
        v = self.get(obj, key, where, required, default)
        name = f"{where}.{key}" if where else key
        if v is None and not required:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.fail(name, f"must be a number, got {v!r}")
        if positive and v <= 0:
            raise self.fail(name, f"must be a number > 0, got {v!r}")
        if nonneg and v < 0:
            raise self.fail(name, f"must be a number >= 0, got {v!r}")
        return v


def _by_schedule(rd: _Reader, obj: dict, key: str, where: str) -> dict[str, float] | None:
    d = obj.get(key)
    if d is None:
        return None
    if not isinstance(d, dict):
        raise rd.fail(f"{where}.{key}", 'must map a schedule to seconds, e.g. {"gpipe": 0.0005, "1f1b": 0.0004}')
    for name in d:
        if name not in GENERATORS:
            raise rd.fail(f"{where}.{key}", f"unknown schedule {name!r} ({', '.join(GENERATORS)})")
    return {name: rd.number(d, name, f"{where}.{key}") for name in d}


def from_json(doc: Any, origin: str = "<profile>") -> Profile:
    rd = _Reader(origin)
    if not isinstance(doc, dict):
        raise rd.fail("document", "must be a JSON object")
    version = rd.get(doc, "pipesim_profile", "")
    if version != VERSION:
        raise rd.fail("pipesim_profile", f"is {version!r}; this pipesim reads version {VERSION}")
    source = rd.get(doc, "source", "", required=False, default="estimated")
    if source not in ("measured", "estimated"):
        raise rd.fail("source", f"must be 'measured' or 'estimated', got {source!r}")
    stages_doc = rd.get(doc, "stages", "")
    if not isinstance(stages_doc, list) or not stages_doc:
        raise rd.fail("stages", "must be a non-empty list")
    stages = []
    for i, sd in enumerate(stages_doc):
        w = f"stages[{i}]"
        comp_doc = rd.get(sd, "compute", w)
        if not isinstance(comp_doc, dict) or not comp_doc:
            raise rd.fail(f"{w}.compute", "must be a non-empty object keyed by micro-batch size")
        compute = {}
        for k, cd in comp_doc.items():
            cw = f'{w}.compute["{k}"]'
            try:
                mbs = int(k)
                assert mbs > 0
            except (ValueError, AssertionError):
                raise rd.fail(cw, "key must be a positive micro-batch size") from None
            compute[mbs] = StageCompute(
                forward_s=rd.number(cd, "forward_s", cw, positive=True),
                backward_s=rd.number(cd, "backward_s", cw, positive=True),
                activation_bytes=int(rd.number(cd, "activation_bytes", cw, required=False, default=0)),
                gradient_bytes=int(rd.number(cd, "gradient_bytes", cw, required=False, default=0)),
                forward_spread_s=rd.number(cd, "forward_spread_s", cw, required=False, default=0.0),
                backward_spread_s=rd.number(cd, "backward_spread_s", cw, required=False, default=0.0),
                overhead_s=rd.number(cd, "overhead_s", cw, required=False, default=0.0),
                overhead_by_schedule_s=_by_schedule(rd, cd, "overhead_by_schedule_s", cw),
            )
        layers = rd.get(sd, "layers", w, required=False)
        stages.append(Stage(compute=compute, layers=layers,
                            optimizer_s=rd.number(sd, "optimizer_s", w, required=False, default=0.0)))
    p = len(stages)
    links: dict[tuple[int, int], Link] = {}
    default_link = None
    if "default_link" in doc:
        dl = doc["default_link"]
        default_link = (rd.number(dl, "latency_s", "default_link"),
                        rd.number(dl, "bandwidth_bps", "default_link", positive=True),
                        rd.number(dl, "window_bytes", "default_link", positive=True, required=False))
    links_doc = rd.get(doc, "links", "", required=default_link is None, default=[])
    if not isinstance(links_doc, list):
        raise rd.fail("links", "must be a list")
    for i, ld in enumerate(links_doc):
        w = f"links[{i}]"
        src = rd.get(ld, "src", w)
        dst = rd.get(ld, "dst", w)
        for name, v in (("src", src), ("dst", dst)):
            if not isinstance(v, int) or not 0 <= v < p:
                raise rd.fail(f"{w}.{name}", f"must be a stage index 0..{p - 1}, got {v!r}")
        if src == dst:
            raise rd.fail(w, f"joins stage {src} to itself")
        if (src, dst) in links:
            raise rd.fail(w, f"repeats link {src}->{dst}")
        win = rd.number(ld, "window_bytes", w, positive=True, required=False)
        links[(src, dst)] = Link(src, dst,
                                 latency_s=rd.number(ld, "latency_s", w),
                                 bandwidth_bps=rd.number(ld, "bandwidth_bps", w, positive=True),
                                 window_bytes=int(win) if win is not None else None)
    for s in range(p - 1):
        for pair in ((s, s + 1), (s + 1, s)):
            if pair not in links:
                if default_link is None:
                    raise rd.fail("links", f"has no link {pair[0]}->{pair[1]} (and no 'default_link')")
                lat, bw, win = default_link
                links[pair] = Link(pair[0], pair[1], lat, bw, int(win) if win is not None else None)
    host = None
    if doc.get("host") is not None:
        hd = doc["host"]
        cores = rd.get(hd, "cores", "host")
        if not isinstance(cores, int) or cores < 1:
            raise rd.fail("host.cores", f"must be a positive integer, got {cores!r}")
        sl = rd.get(hd, "slowdown", "host")
        if not isinstance(sl, dict) or not sl:
            raise rd.fail("host.slowdown", "must be an object like {\"1\": 1.0, \"2\": 1.1}")
        slow = {}
        for k in sl:
            try:
                kk = int(k)
                assert kk > 0
            except (ValueError, AssertionError):
                raise rd.fail("host.slowdown", f"key {k!r} must be a positive number of ranks") from None
            slow[kk] = rd.number(sl, k, "host.slowdown", positive=True)
        q = hd.get("quantum_s")
        if q == "inf":
            q = math.inf
        elif q is not None:
            q = rd.number(hd, "quantum_s", "host", positive=True)
        pl = hd.get("placement")
        if pl is not None:
            if (not isinstance(pl, list) or len(pl) != len(stages)
                    or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < cores for c in pl)):
                raise rd.fail("host.placement", f"must list one core index 0..{cores - 1} per stage "
                                                f"({len(stages)} stages), got {pl!r}")
            pl = tuple(pl)
        host = Host(cores=cores, slowdown=slow, quantum_s=q, placement=pl)
    model = rd.get(doc, "model", "", required=False, default={}) or {}
    device = rd.get(doc, "device", "", required=False, default={}) or {}
    return Profile(stages=tuple(stages), links=links, source=source,
                   description=str(doc.get("description", "")), model=model, device=device,
                   host=host, raw=doc.get("raw"))


def load(path: str | os.PathLike | None = None) -> Profile:
    """Read a profile file (the bundled example when path is None)."""
    path = Path(path) if path is not None else BUNDLED
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such profile file; make one with 'pipesim calibrate' "
                         "or leave --profile out to use the bundled example") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    return from_json(doc, origin=str(path))
