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
      "transport": {"queue": "link", "send_mode": "rendezvous",            # optional
                    "eager_limit_bytes": 0, "recv_ahead": null},
      "raw": {...}                                                          # optional
    }

Its one declared shape is the JSON Schema of :mod:`pipesim.schema` (shipped as
``pipesim/data/profile.schema.json``; every field, unit and range in
``docs/profile.md``). :func:`from_json` and :func:`load` check a document against it;
:meth:`Profile.to_json` and :meth:`Profile.save` are the one way a profile is written
(calibration builds :class:`Profile` objects and saves them through these).

Per stage and micro-batch size: forward and backward seconds (medians; optional
``*_spread_s``), ``activation_bytes`` sent to the next stage and ``gradient_bytes``
sent back to the previous stage, per micro-batch; optional ``overhead_s``, the
runtime's own CPU time per computation (posting messages, copies, its threads), which
the simulator adds to each computation of the schedule: every forward and backward, and
every weight-gradient W of a split-backward schedule (zbh1); optional ``overhead_by_schedule_s``
(``{"gpipe": s, "1f1b": s}``), the same probed per schedule, used when present; optional
``step_overhead_s``, the runtime's own CPU time per step on that stage's rank beyond its
computations and optimizer (zero_grad, bookkeeping), which the simulator adds to the rank's
optimizer step.

Per directed link: one-way ``latency_s`` (including per-message software overhead),
``bandwidth_bps`` (bits per second), and ``window_bytes``: the most a single
connection keeps in flight, so that its throughput is at most ``window / RTT`` as the
round trip grows (null: no cap); optional ``delay_excess_s``: what a delay element adds
per message beyond its nominal delay (calibration's delayed-link probe measures it; the
simulator adds it wherever a setting adds a delay). Links missing from the file default to the entry
named ``"default_link"`` if given.

``host`` (optional) says that all ranks share one machine of ``cores`` cores, as on
the local testbed: when k ranks compute at once, each runs ``slowdown[k]`` times slower
than alone. With ``placement`` (the core each rank is pinned to, as ``pipesim run
--local`` does), ranks share only their own core instead: j ranks computing on one core
each run j times slower. Its optional ``shaped_cpu`` lists, per probed rate cap, the CPU
seconds per byte a rank spends on a message through that cap when the setting adds no delay
(the local testbed shapes such a link with htb on its veth, and the kernel's work for the
messages lands on the ranks' own cores; :mod:`calibrate.shaped` probes it); the simulator
charges it on the sender's and the receiver's core (:meth:`Host.cpu_per_byte`). A real
cluster (one rank per machine) leaves ``host`` out.

``transport`` (optional) is how the runtime the profile was calibrated from moves
messages (:class:`pipesim.transport.Transport`); without it the simulator uses the
runtime's default for ``device.backend``.

Errors name the file and the field, e.g. ``profile.json: stages[1].compute["4"].forward_s
must be a number > 0 and <= 86400 s, got -1``.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from . import schema
from .network import NetworkSetting
from .transport import Transport
from .util import write_json_atomic

VERSION = schema.VERSION
BUNDLED = Path(__file__).parent / "data" / "gpt3_small_v100_estimated.json"


@dataclass(frozen=True)
class StageCompute:
    forward_s: float
    backward_s: float
    activation_bytes: int = 0
    gradient_bytes: int = 0
    forward_spread_s: float = 0.0
    backward_spread_s: float = 0.0
    overhead_s: float = 0.0  # runtime CPU per computation (F, B, W) beyond the compute itself (posting, copies, threads)
    # the same per schedule where it was probed per schedule (it differs: e.g. cache footprint)
    overhead_by_schedule_s: dict[str, float] | None = None
    # split backward (zbh1): input-gradient part B and weight-gradient part W; None: derived (backward_split)
    backward_input_s: float | None = None
    backward_weight_s: float | None = None
    # runtime CPU per step of the rank beyond its computations' and optimizer's (zero_grad, bookkeeping);
    # on a rank's stage (not on virtual stages): the simulator adds it to the rank's optimizer step
    step_overhead_s: float = 0.0

    def overhead(self, schedule: str | None = None) -> float:
        """The runtime's CPU per computation (F, B or W) under ``schedule`` (its own probe if any)."""
        if schedule and self.overhead_by_schedule_s and schedule in self.overhead_by_schedule_s:
            return self.overhead_by_schedule_s[schedule]
        return self.overhead_s

    def backward_split(self) -> tuple[float, float]:
        """(B, W): the input-gradient and weight-gradient seconds of a split backward.

        The profile's ``backward_input_s`` / ``backward_weight_s`` where given; one of them
        alone leaves the other ``backward_s`` minus it; neither: ``backward_s`` split
        :data:`BACKWARD_INPUT_SHARE` : the rest (1:1).
        """
        b, w = self.backward_input_s, self.backward_weight_s
        if b is None and w is None:
            b = self.backward_s * BACKWARD_INPUT_SHARE
            return b, self.backward_s - b
        if b is None:
            assert w is not None
            return self.backward_s - w, w
        return b, (self.backward_s - b if w is None else w)

    def chunk(self, v: int) -> StageCompute:
        """One of ``v`` equal virtual stages of this stage: times / v, message sizes kept."""
        if v == 1:
            return self
        b, w = self.backward_split()
        return StageCompute(
            forward_s=self.forward_s / v, backward_s=self.backward_s / v, activation_bytes=self.activation_bytes,
            gradient_bytes=self.gradient_bytes, forward_spread_s=self.forward_spread_s / v,
            backward_spread_s=self.backward_spread_s / v, overhead_s=self.overhead_s,
            overhead_by_schedule_s=self.overhead_by_schedule_s, backward_input_s=b / v, backward_weight_s=w / v,
            step_overhead_s=0.0)


BACKWARD_INPUT_SHARE = 0.5
"""Share of ``backward_s`` taken as the input-gradient part B when a profile does not
give ``backward_input_s``/``backward_weight_s``. 1:1 because in a matmul layer
``Y = X A`` the input gradient ``dX = dY A^T`` and the weight gradient
``dA = X^T dY`` cost the same FLOPs, and a transformer layer's time is dominated by
its matmuls (Qi et al., ICLR 2024, take T_B = T_W in their analysis for the same
reason; attention's softmax backward makes B somewhat larger in practice)."""


@dataclass(frozen=True)
class Stage:
    compute: dict[int, StageCompute]
    layers: int | None = None
    optimizer_s: float = 0.0
    # compute of each virtual stage this rank runs (interleaved schedules), in stage order; None: derived
    virtual_stages: tuple[dict[int, StageCompute], ...] | None = None

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
    # what a delay element adds to latency_s beyond its nominal delay, measured under a delay (0: nothing)
    delay_excess_s: float = 0.0

    def shaped(self, override) -> Link:
        """This link under a setting's override: extra delay added, bandwidth capped.

        Under a delay the one-way latency is ``latency_s + delay + delay_excess_s``;
        ``delay_excess_s`` applies only where the setting adds a delay."""
        d = override.delay_s or 0.0
        lat = self.latency_s + d + self.delay_excess_s if d > 0 else self.latency_s
        bw = self.bandwidth_bps if override.bandwidth_bps is None else min(self.bandwidth_bps, override.bandwidth_bps)
        return Link(self.src, self.dst, lat, bw, self.window_bytes)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        if not self.delay_excess_s:   # left out where it is 0, as profiles before it were written
            del doc["delay_excess_s"]
        return doc


@dataclass(frozen=True)
class Host:
    cores: int
    slowdown: dict[int, float]
    quantum_s: float | None = None  # None: fluid processor sharing; else round-robin time slice (inf allowed)
    placement: tuple[int, ...] | None = None  # core of each rank when ranks are pinned (then cores are shared per core)
    # (rate cap in bit/s, CPU seconds per byte a rank sends or receives through it without a delay), by rate
    shaped_cpu: tuple[tuple[float, float], ...] = ()

    def cpu_per_byte(self, bandwidth_bps: float) -> float:
        """CPU seconds per byte a rank spends on a message through a cap of ``bandwidth_bps`` without
        a delay: the probed figure at that rate, linear in log rate between probed rates, the
        nearest probed rate's outside them; 0 where nothing was probed."""
        pts = self.shaped_cpu
        if not pts:
            return 0.0
        if bandwidth_bps <= pts[0][0]:
            return pts[0][1]
        if bandwidth_bps >= pts[-1][0]:
            return pts[-1][1]
        i = bisect.bisect_left(pts, bandwidth_bps, key=lambda pt: pt[0])   # pts[i - 1] < rate <= pts[i]
        (r0, k0), (r1, k1) = pts[i - 1], pts[i]
        return k0 + math.log(bandwidth_bps / r0) / math.log(r1 / r0) * (k1 - k0)

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
    transport: Transport | None = None  # the runtime's transport, if the profile records it

    @property
    def num_stages(self) -> int:
        """Stages of the profile: one per rank (virtual stages are parts of these)."""
        return len(self.stages)

    def virtual_compute(self, mbs: int, placement: tuple[int, ...]) -> list[StageCompute]:
        """Compute of each (virtual) stage under ``placement`` (stage -> rank) at ``mbs``.

        A rank running v stages uses its ``virtual_stages`` entry where the profile has one
        (with exactly v items), else its own compute split evenly over the v stages
        (:meth:`StageCompute.chunk`: times / v, message sizes kept). A message between
        virtual stages that the one-stage-per-rank profile never sends (rank 0's gradient,
        the last rank's activation) has the largest size any rank sends that way.
        """
        per_rank = [[s for s, r in enumerate(placement) if r == rank] for rank in range(self.num_stages)]
        big_a = max(st.at(mbs, f"profile stage {i}: ").activation_bytes for i, st in enumerate(self.stages))
        big_g = max(st.at(mbs, f"profile stage {i}: ").gradient_bytes for i, st in enumerate(self.stages))
        out: list[StageCompute | None] = [None] * len(placement)
        for rank, stages in enumerate(per_rank):
            st, v = self.stages[rank], len(stages)
            base = st.at(mbs, f"profile stage {rank}: ")
            if st.virtual_stages is not None and v > 1:
                if len(st.virtual_stages) != v:
                    raise ValueError(f"profile stages[{rank}].virtual_stages has {len(st.virtual_stages)} entries, "
                                     f"the schedule puts {v} stages on rank {rank}")
                parts = []
                for j, vs in enumerate(st.virtual_stages):
                    try:
                        parts.append(vs[mbs])
                    except KeyError:
                        raise ValueError(f"profile stages[{rank}].virtual_stages[{j}]: no compute times for "
                                         f"micro-batch size {mbs}") from None
            else:
                parts = [base.chunk(v)] * v
            for s, c in zip(stages, parts):
                if v > 1:
                    c = replace(c, activation_bytes=c.activation_bytes or big_a, gradient_bytes=c.gradient_bytes or big_g)
                out[s] = c
        return [c for c in out if c is not None]

    def compute_scaled(self, factor: float) -> Profile:
        """This profile with every computation taking ``factor`` times as long: forward,
        backward (and its B and W parts), the optimizer step and the runtime's overhead
        per computation, of every stage and virtual stage. Links and the host model are kept.

        What a validation uses when it tracks the machine's speed: the compute probe
        before a run over the same probe right after calibration (``calibrate.drift``)."""
        if not (factor > 0 and math.isfinite(factor)):
            raise ValueError(f"compute scale factor must be a positive number, got {factor!r}")
        return self.ranks_scaled([factor] * self.num_stages)

    def ranks_scaled(self, factors: Sequence[float]) -> Profile:
        """This profile with rank ``r``'s computations taking ``factors[r]`` times as long (as
        :meth:`compute_scaled`, one factor per rank: its stage, its virtual stages, its optimizer
        step and overhead). What :func:`pipesim.context.cpu_replay` simulates a run with."""
        if len(factors) != self.num_stages:
            raise ValueError(f"{len(factors)} scale factors for a profile of {self.num_stages} stages")
        for f in factors:
            if not (f > 0 and math.isfinite(f)):
                raise ValueError(f"compute scale factor must be a positive number, got {f!r}")

        def scaled(st: Stage, factor: float) -> Stage:
            def sc(c: StageCompute) -> StageCompute:
                return replace(c, forward_s=c.forward_s * factor, backward_s=c.backward_s * factor,
                               forward_spread_s=c.forward_spread_s * factor,
                               backward_spread_s=c.backward_spread_s * factor, overhead_s=c.overhead_s * factor,
                               overhead_by_schedule_s=None if c.overhead_by_schedule_s is None else
                               {k: x * factor for k, x in c.overhead_by_schedule_s.items()},
                               backward_input_s=None if c.backward_input_s is None else c.backward_input_s * factor,
                               backward_weight_s=None if c.backward_weight_s is None else
                               c.backward_weight_s * factor, step_overhead_s=c.step_overhead_s * factor)

            return replace(st, compute={m: sc(c) for m, c in st.compute.items()}, optimizer_s=st.optimizer_s * factor,
                           virtual_stages=None if st.virtual_stages is None else
                           tuple({m: sc(c) for m, c in part.items()} for part in st.virtual_stages))

        return replace(self, stages=tuple(scaled(st, f) for st, f in zip(self.stages, factors)))

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
        """The profile's JSON document (what :func:`from_json` reads back to an equal profile)."""
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
                    "compute": _compute_json(s.compute),
                    **({} if s.virtual_stages is None else
                       {"virtual_stages": [_compute_json(vs) for vs in s.virtual_stages]}),
                }
                for s in self.stages
            ],
            "links": [l.to_json() for _, l in sorted(self.links.items())],
        }
        if self.host is not None:
            doc["host"] = {"cores": self.host.cores, "slowdown": {str(k): v for k, v in sorted(self.host.slowdown.items())}}
            if self.host.placement is not None:
                doc["host"]["placement"] = list(self.host.placement)
            if self.host.quantum_s is not None:
                doc["host"]["quantum_s"] = self.host.quantum_s if math.isfinite(self.host.quantum_s) else "inf"
            if self.host.shaped_cpu:
                doc["host"]["shaped_cpu"] = [{"bandwidth_bps": r, "s_per_byte": k} for r, k in self.host.shaped_cpu]
        if self.transport is not None:
            doc["transport"] = self.transport.to_json()
        if self.raw is not None:
            doc["raw"] = self.raw
        return doc

    def save(self, path: str | os.PathLike, force: bool = True) -> None:
        """Write the profile to ``path`` atomically (``FileExistsError`` if it exists and not ``force``)."""
        write_json_atomic(path, self.to_json(), force=force)


def _compute_json(compute: dict[int, StageCompute]) -> dict[str, Any]:
    """Compute per micro-batch size as JSON (the optional split-backward fields only when set)."""
    out = {}
    for k, v in sorted(compute.items()):
        d = asdict(v)
        for opt in ("backward_input_s", "backward_weight_s"):
            if d[opt] is None:
                del d[opt]
        if not d["step_overhead_s"]:   # left out where it is 0, as profiles before it were written
            del d["step_overhead_s"]
        out[str(k)] = d
    return out


# ---------------------------------------------------------------------- reading with named errors


class _NonFinite(float):
    """A number JSON cannot hold as a finite float (``NaN``, ``Infinity``, ``1e400``, a 400-digit integer).

    It is a float (inf or nan), so the schema refuses it wherever a number is expected,
    and free-form sections (``raw``) keep it as before; its ``repr`` is what the file said.
    """

    text: str

    def __new__(cls, value: float, text: str) -> _NonFinite:
        obj = super().__new__(cls, value)
        obj.text = text
        return obj

    def __repr__(self) -> str:
        return self.text

    def __reduce__(self):
        return float, (float(self),)


def _parse_constant(name: str) -> float:
    return _NonFinite(float(name.replace("Infinity", "inf")), name)


def _parse_float(text: str) -> float:
    v = float(text)
    return v if math.isfinite(v) else _NonFinite(v, text)


def _parse_int(text: str) -> int | float:
    digits = len(text.lstrip("-"))
    if digits > 300:   # beyond every range; int() of more than 4300 digits even raises
        return _NonFinite(-math.inf if text.startswith("-") else math.inf, f"a number of {digits} digits")
    return int(text)


def parse(text: str, origin: str = "<profile>") -> Any:
    """A profile document from JSON text; ``ValueError`` naming ``origin`` if it is not valid JSON."""
    try:
        return json.loads(text, parse_constant=_parse_constant, parse_float=_parse_float, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise ValueError(f"{origin}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise ValueError(f"{origin}: not a profile: nested too deeply for JSON to be read") from None


def _fail(origin: str, where: str, msg: str) -> ValueError:
    return ValueError(f"{origin}: {where} {msg}")


def from_json(doc: Any, origin: str = "<profile>") -> Profile:
    """A :class:`Profile` from its JSON document, checked against the schema (:mod:`pipesim.schema`).

    Errors are ``ValueError`` naming ``origin`` and the field. An unknown top-level key
    is an error too (``unknown top-level field 'stagse' (known: ...)``); ``$schema`` is
    accepted and ignored, ``raw`` is kept as it is.
    """
    if not isinstance(doc, dict):
        raise _fail(origin, "document", "must be a JSON object")
    if "pipesim_profile" not in doc:
        raise _fail(origin, "pipesim_profile", f"is missing (this pipesim reads version {VERSION})")
    version = doc["pipesim_profile"]
    if type(version) is not int or version != VERSION:
        raise _fail(origin, "pipesim_profile", f"is {schema.shown(version)}; this pipesim reads version {VERSION}")
    try:
        problem = schema.first_error(doc)
    except RecursionError:
        raise _fail(origin, "document", "is nested too deeply") from None
    if problem is not None:
        raise ValueError(f"{origin}: {problem}")
    return _build(doc, origin)


def _num(v: Any, default: float = 0.0) -> float:
    return default if v is None else float(v)


def _bytes(v: Any) -> int:
    return 0 if v is None else int(v)


def _build(doc: dict, origin: str) -> Profile:
    """The Profile of a document that the schema accepted; checks what the schema cannot say."""
    stages = []

    def opt(v: Any) -> float | None:
        return None if v is None else float(v)

    def compute_of(cmap: dict, where: str) -> dict[int, StageCompute]:
        compute = {}
        for k, cd in cmap.items():
            by = cd.get("overhead_by_schedule_s")
            c = compute[int(k)] = StageCompute(
                forward_s=float(cd["forward_s"]), backward_s=float(cd["backward_s"]),
                activation_bytes=_bytes(cd.get("activation_bytes")), gradient_bytes=_bytes(cd.get("gradient_bytes")),
                forward_spread_s=_num(cd.get("forward_spread_s")), backward_spread_s=_num(cd.get("backward_spread_s")),
                overhead_s=_num(cd.get("overhead_s")),
                overhead_by_schedule_s=None if by is None else {name: float(v) for name, v in by.items()},
                backward_input_s=opt(cd.get("backward_input_s")), backward_weight_s=opt(cd.get("backward_weight_s")),
                step_overhead_s=_num(cd.get("step_overhead_s")))
            for name, part in zip(("backward_input_s", "backward_weight_s"), c.backward_split()):
                if not part > 0:
                    raise _fail(origin, f'{where}["{k}"]',
                                f"splits backward_s {c.backward_s:g} s into B and W leaving {name} {part:g} s "
                                "(must be > 0: give both parts, or one smaller than backward_s)")
        return compute

    for i, sd in enumerate(doc["stages"]):
        layers = sd.get("layers")
        vsd = sd.get("virtual_stages")
        stages.append(Stage(compute=compute_of(sd["compute"], f"stages[{i}].compute"),
                            layers=None if layers is None else int(layers),
                            optimizer_s=_num(sd.get("optimizer_s")),
                            virtual_stages=None if vsd is None else tuple(
                                compute_of(vs, f"stages[{i}].virtual_stages[{j}]") for j, vs in enumerate(vsd))))
    p = len(stages)

    def link(src: int, dst: int, ld: dict) -> Link:
        win = ld.get("window_bytes")
        return Link(src, dst, latency_s=float(ld["latency_s"]), bandwidth_bps=float(ld["bandwidth_bps"]),
                    window_bytes=None if win is None else int(win),
                    delay_excess_s=float(ld.get("delay_excess_s") or 0.0))

    default_link = doc.get("default_link")
    if "links" not in doc and default_link is None:
        raise _fail(origin, "links", "is missing (list each direction between neighbour stages, or give a 'default_link')")
    links: dict[tuple[int, int], Link] = {}
    for i, ld in enumerate(doc.get("links") or []):
        w = f"links[{i}]"
        src, dst = int(ld["src"]), int(ld["dst"])
        for name, v in (("src", src), ("dst", dst)):
            if v >= p:
                raise _fail(origin, f"{w}.{name}", f"must be a stage index 0..{p - 1}, got {v!r}")
        if src == dst:
            raise _fail(origin, w, f"joins stage {src} to itself")
        if (src, dst) in links:
            raise _fail(origin, w, f"repeats link {src}->{dst}")
        links[(src, dst)] = link(src, dst, ld)
    for s in range(p - 1):
        for a, b in ((s, s + 1), (s + 1, s)):
            if (a, b) not in links:
                if default_link is None:
                    raise _fail(origin, "links", f"has no link {a}->{b} (and no 'default_link')")
                links[(a, b)] = link(a, b, default_link)
    host = None
    hd = doc.get("host")
    if hd is not None:
        cores = int(hd["cores"])
        q = hd.get("quantum_s")
        pl = hd.get("placement")
        if pl is not None:
            if len(pl) != p or not all(int(c) < cores for c in pl):
                raise _fail(origin, "host.placement", f"must list one core index 0..{cores - 1} per stage "
                                                      f"({p} stages), got {schema.shown(pl) if len(pl) > 20 else pl!r}")
            pl = tuple(int(c) for c in pl)
        shaped = sorted((float(x["bandwidth_bps"]), float(x["s_per_byte"])) for x in hd.get("shaped_cpu") or [])
        rates = [r for r, _k in shaped]
        for lo, hi in zip(rates, rates[1:]):
            if lo == hi:
                raise _fail(origin, "host.shaped_cpu", f"gives the rate {lo:g} bit/s twice; give each probed rate once")
        host = Host(cores=cores, slowdown={int(k): float(v) for k, v in hd["slowdown"].items()},
                    quantum_s=None if q is None else math.inf if q == "inf" else float(q), placement=pl,
                    shaped_cpu=tuple(shaped))
    td = doc.get("transport")
    transport = None
    if td is not None:
        ra = td["recv_ahead"]
        transport = Transport(queue=td["queue"], send_mode=td["send_mode"],
                              eager_limit_bytes=_bytes(td.get("eager_limit_bytes")),
                              recv_ahead=None if ra is None else int(ra))
    return Profile(stages=tuple(stages), links=links, source=doc.get("source", "estimated"),
                   description=doc.get("description", ""), model=doc.get("model") or {},
                   device=doc.get("device") or {}, host=host, transport=transport, raw=doc.get("raw"))


def load(path: str | os.PathLike | None = None) -> Profile:
    """Read a profile file (the bundled example when path is None).

    Every way a file can fail to be a profile is a ``ValueError`` with a one-line
    message naming the file (and the field, where there is one).
    """
    path = Path(path) if path is not None else BUNDLED
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such profile file; make one with 'pipesim calibrate' "
                         "or leave --profile out to use the bundled example") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder; name a profile file (JSON)") from None
    except PermissionError:
        raise ValueError(f"{path}: cannot read the profile: permission denied") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read the profile: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a profile: byte 0x{data[e.start]:02x} at offset {e.start} is not UTF-8 "
                         "(a profile is JSON text in UTF-8)") from None
    return from_json(parse(text, str(path)), origin=str(path))
