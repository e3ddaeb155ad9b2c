"""Rank schedule x micro-batch size (x stages per rank) by predicted step time.

What :func:`recommend` does, for one network setting:

* **Candidates** (:func:`candidates`): every schedule of :data:`pipesim.schedule.GENERATORS`
  (or those asked for) x every micro-batch size the profile has (or those asked for)
  that divides the batch size, x every stages-per-rank value (default 2) for the schedules
  with several stages per rank (:data:`pipesim.schedule.VIRTUAL`). A candidate whose
  generator refuses its shape (interleaved 1F1B needs the micro-batches to split into
  equal rounds over the ranks) is left out with a note.
* **Step time**: each candidate simulated with :func:`pipesim.engine.simulate`, the same
  model and transport as ``pipesim grid`` (2 consecutive steps, rank 0's period).
* **Memory** (:func:`activation_memory`): the peak, over the step, of the *boundary
  activations* each rank holds: for every micro-batch whose forward has run and whose
  backward has not (its weight-gradient half W, where the backward is split), the activation it received from the previous stage plus the one it
  sent to the next (the profile's ``activation_bytes`` of stage r - 1 and of stage r at that
  micro-batch size). The profile records no more than these boundary tensors, so this is a
  **lower bound** on activation memory: what a stage keeps inside itself for its backward
  (attention scores, MLP intermediates), weights, gradients and optimizer state are not
  counted. A ``memory_limit`` drops the candidates whose worst rank exceeds it.
* **Why the winner wins** (:func:`attribute`): the gap between the winner and the
  runner-up is re-simulated with the network's latency removed (every link's latency and
  the setting's delay set to 0), with its throughput limits removed (unlimited bandwidth,
  no window cap), and with both, and split Shapley-style into *exposed latency*,
  *bandwidth*, and what remains on an ideal network: *compute* (rank 0's own compute,
  which differs between micro-batch sizes when the profile's compute is not linear in
  the size) and *bubble* (the rest of rank 0's step: waiting for other stages). The four
  parts sum to the gap.

Not modelled: everything :mod:`pipesim.engine` does not model (its docstring), and any
memory but the boundary activations.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import engine as E
from . import limits
from . import schedule as S
from .network import LinkOverride, NetworkSetting
from .profile import Profile
from .transport import Transport

DEFAULT_STAGES_PER_RANK = (2,)
"""Stages per rank tried for a generator that takes ``stages_per_rank``."""
STEPS = 2  # consecutive steps simulated per candidate, as pipesim grid

MEMORY_MEANING = ("the most boundary activations any one rank holds at once (the activation received and the one "
                  "sent, for each micro-batch between its forward and its backward; the profile's activation_bytes): "
                  "a lower bound on activation memory, which leaves out what a stage keeps inside for its backward")

_BYTE_UNITS = {"": 1, "b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
               "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}
_BYTES_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_bytes(text: str, what: str = "--memory-limit") -> int:
    """``"16GiB"`` -> 17179869184, ``"500MB"`` -> 500000000, ``"1024"`` -> 1024 (bytes).

    Units, case-insensitive: B, kB, MB, GB, TB (powers of 1000) and KiB, MiB, GiB, TiB
    (powers of 1024). The result is checked against :data:`pipesim.limits.MEMORY_LIMIT_BYTES`.
    """
    m = _BYTES_RE.match(str(text))
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _BYTE_UNITS:
        raise ValueError(f"{what} must be {limits.MEMORY_LIMIT_BYTES.describe()}, written as a number with an "
                         f"optional unit B, kB, MB, GB, TB, KiB, MiB, GiB, TiB (e.g. 16GiB), got {str(text)[:40]!r}")
    value = float(m.group(1)) * _BYTE_UNITS[unit]
    if not math.isfinite(value) or value > limits.MEMORY_LIMIT_BYTES.hi:
        raise ValueError(f"{what} must be {limits.MEMORY_LIMIT_BYTES.describe()}, got {str(text)[:40]!r}")
    return int(limits.MEMORY_LIMIT_BYTES.check(int(value), what))


def format_bytes(n: float) -> str:
    """Bytes in binary units: ``25165824`` -> ``24.0 MiB``."""
    for unit, k in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{int(n)} B"


# ----------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Candidate:
    schedule: str
    micro_batch_size: int
    stages_per_rank: int | None = None  # None: the generator takes no such parameter

    @property
    def label(self) -> str:
        v = "" if self.stages_per_rank is None else f" v {self.stages_per_rank}"
        return f"{self.schedule} mbs {self.micro_batch_size}{v}"

    def generator_kwargs(self) -> dict[str, int]:
        return {} if self.stages_per_rank is None else {"stages_per_rank": self.stages_per_rank}


def candidates(profile: Profile, batch_size: int, schedules: Sequence[str] | None = None,
               micro_batch_sizes: Sequence[int] | None = None,
               stages_per_rank: Sequence[int] = DEFAULT_STAGES_PER_RANK) -> tuple[list[Candidate], list[str]]:
    """The candidates, and notes on what was left out and why (in words)."""
    limits.BATCH_SIZE.check(batch_size, "--batch-size")
    names = list(S.GENERATORS) if schedules is None else [s.lower() for s in schedules]
    for n in names:
        if n not in S.GENERATORS:
            raise ValueError(f"unknown schedule {n!r}; choose from {', '.join(S.GENERATORS)}")
    have = profile.micro_batch_sizes
    if micro_batch_sizes is None:
        sizes = list(have)
    else:
        sizes = sorted(set(micro_batch_sizes))
        missing = [m for m in sizes if m not in have]
        if missing:
            raise ValueError(f"--micro-batch-sizes: the profile has no compute for micro-batch size(s) "
                             f"{', '.join(map(str, missing))} (it has {', '.join(map(str, have))})")
    for m in sizes:
        limits.MICRO_BATCH_SIZE.check(m, "--micro-batch-sizes")
    notes: list[str] = []
    odd = [m for m in sizes if batch_size % m]
    if odd:
        notes.append(f"micro-batch size(s) {', '.join(map(str, odd))} left out: they do not divide batch size {batch_size}")
    sizes = [m for m in sizes if batch_size % m == 0]
    if not sizes:
        raise ValueError(f"--batch-size {batch_size}: no micro-batch size of the profile divides it "
                         f"(it has {', '.join(map(str, have))})")
    for v in stages_per_rank:
        limits.STAGES_PER_RANK.check(v, "--stages-per-rank")
    out: list[Candidate] = []
    for name in names:
        if name not in S.VIRTUAL:
            out += [Candidate(name, m) for m in sizes]
        else:
            out += [Candidate(name, m, v) for m in sizes for v in sorted(set(stages_per_rank))]
    return out, notes


# ----------------------------------------------------------------------------- memory


def _held_bytes(profile: Profile, stage: int, mbs: int) -> int:
    """Boundary activation bytes a stage holds per micro-batch in flight: its input
    (the previous stage's ``activation_bytes``) and its output (its own)."""
    st = profile.stages[stage].compute[mbs]
    prev = profile.stages[stage - 1].compute[mbs].activation_bytes if stage > 0 else 0
    return prev + st.activation_bytes


def activation_memory(profile: Profile, cand: Candidate, batch_size: int) -> tuple[list[int], list[int]]:
    """Per rank: (peak boundary-activation bytes held, peak micro-batches in flight).

    Walks the generator's compute order: a forward adds the micro-batch's boundary
    activations of the action's (virtual) stage (:meth:`Profile.virtual_compute` under the
    schedule's placement), its backward frees them -- or, where the backward is split, its
    weight-gradient half (W), which still needs them. See the module docstring for what this counts."""
    p, m = profile.num_stages, batch_size // cand.micro_batch_size
    kw = cand.generator_kwargs()
    compute = S.GENERATORS[cand.schedule](p, m, **kw)
    placement = S.placement_for(cand.schedule, p, kw.get("stages_per_rank", 1))
    comp = profile.virtual_compute(cand.micro_batch_size, placement)
    held = [(comp[s - 1].activation_bytes if s > 0 else 0) + comp[s].activation_bytes for s in range(len(comp))]
    split = S.split_backward(a for acts in compute for a in acts)
    peaks = S.peak_inflight(compute)
    out = []
    for acts in compute:
        live = peak = 0
        for a in acts:
            if a.kind is S.Kind.F:
                live += held[a.stage]
            elif a.kind is S.Kind.W or (a.kind is S.Kind.B and (a.stage, a.mb) not in split):
                live -= held[a.stage]
            peak = max(peak, live)
        out.append(peak)
    return out, peaks


# ----------------------------------------------------------------------------- ranking


@dataclass
class Scored:
    candidate: Candidate
    step_time: float
    result: E.SimResult
    memory_bytes: list[int]  # per rank, peak boundary activations held
    inflight: list[int]  # per rank, peak micro-batches in flight

    @property
    def peak_memory(self) -> int:
        return max(self.memory_bytes)


def simulate(profile: Profile, cand: Candidate, batch_size: int, setting: NetworkSetting,
             transport: Transport | None = None, steps: int = STEPS) -> E.SimResult:
    kw: dict[str, Any] = dict(cand.generator_kwargs())
    return E.simulate(profile, cand.schedule, cand.micro_batch_size, batch_size, setting, transport=transport,
                      steps=steps, record=False, **kw)


def check_sizes(profile: Profile, cands: Sequence[Candidate], batch_size: int, simulations_per_candidate: int) -> None:
    """The whole recommendation's size against ``MAX_SIM_ACTIONS``, before its first simulation."""
    total = 0
    for c in cands:
        total += simulations_per_candidate * E.check_size(profile.num_stages, c.micro_batch_size, batch_size, STEPS,
                                                          names=("--micro-batch-sizes", "--batch-size", "steps"),
                                                          fixed_steps=True)
    if total > limits.MAX_SIM_ACTIONS:
        raise ValueError(f"this recommendation would run {total:,} actions; at most {limits.MAX_SIM_ACTIONS:,} are "
                         "simulated by one command (pipesim/limits.py): use fewer settings, schedules or "
                         "--micro-batch-sizes, or a smaller --batch-size")


Sized = tuple[Candidate, list[int], list[int]]
"""A candidate with its per-rank memory bytes and in-flight micro-batches (:func:`activation_memory`)."""


def split_by_memory(profile: Profile, cands: Sequence[Candidate], batch_size: int,
                    memory_limit: int | None, notes: list[str] | None = None) -> tuple[list[Sized], list[Sized]]:
    """(kept, dropped): each candidate with its per-rank memory and in-flight peaks.

    With ``notes``, a candidate whose generator refuses the shape (a ``ValueError``, e.g.
    a schedule that needs the micro-batches to be a multiple of the stages) is left out
    and the reason appended there; without, the error propagates."""
    kept: list[Sized] = []
    dropped: list[Sized] = []
    for c in cands:
        try:
            mem, infl = activation_memory(profile, c, batch_size)
        except ValueError as e:
            if notes is None:
                raise
            notes.append(f"{c.label} left out: {e}")
            continue
        (dropped if memory_limit is not None and max(mem) > memory_limit else kept).append((c, mem, infl))
    return kept, dropped


def rank(profile: Profile, setting: NetworkSetting, kept: Sequence[Sized], batch_size: int,
         transport: Transport | None = None) -> list[Scored]:
    """Simulate each kept candidate (from :func:`split_by_memory`) under ``setting``;
    fastest first (ties in candidate order)."""
    scored = []
    for c, mem, infl in kept:
        res = simulate(profile, c, batch_size, setting, transport)
        scored.append(Scored(c, res.step_time, res, mem, infl))
    order = {id(s): i for i, s in enumerate(scored)}
    return sorted(scored, key=lambda s: (s.step_time, order[id(s)]))


# ----------------------------------------------------------------------------- why


def without_network(profile: Profile, setting: NetworkSetting, *, latency: bool = False,
                    bandwidth: bool = False) -> tuple[Profile, NetworkSetting]:
    """The profile and setting with the network's latency (``latency``: every link's
    latency and the setting's delays set to 0) and/or its throughput limits (``bandwidth``:
    unlimited link rate, no window cap, the setting's caps dropped) taken away."""
    links = {}
    for k, l in profile.links.items():
        links[k] = dataclasses.replace(l, latency_s=0.0 if latency else l.latency_s,
                                       bandwidth_bps=math.inf if bandwidth else l.bandwidth_bps,
                                       window_bytes=None if bandwidth else l.window_bytes)
    clauses = tuple((lk, LinkOverride(None if latency else ov.delay_s, None if bandwidth else ov.bandwidth_bps))
                    for lk, ov in setting.clauses)
    return dataclasses.replace(profile, links=links), NetworkSetting(setting.label, clauses)


PARTS = ("bubble", "latency", "bandwidth", "compute")
PART_WORDS = {"bubble": "pipeline bubble", "latency": "exposed latency", "bandwidth": "bandwidth",
              "compute": "compute per sample"}


def _signed(x: float) -> str:
    return "0.000 s" if abs(x) < 5e-4 else f"{x:+.3f} s"


@dataclass
class Attribution:
    winner: Candidate
    runner_up: Candidate
    gap: float  # runner-up's step time minus the winner's
    parts: dict[str, float]  # PARTS -> seconds; they sum to gap
    gap_zero_delay: float
    gap_unlimited_bandwidth: float
    gap_ideal: float

    @property
    def reason(self) -> str:
        return max(PARTS, key=lambda k: self.parts[k])

    def line(self, winner_time: float) -> str:
        """One line: why the winner wins, derived from the re-simulations."""
        w, r = self.winner.label, self.runner_up.label
        if self.gap <= 1e-12:
            return f"why: {w} and {r} tie ({winner_time:.3f} s)"
        why = self.reason
        detail = {
            "latency": f"with zero delay the gap is {_signed(self.gap_zero_delay)}",
            "bandwidth": f"with unlimited bandwidth the gap is {_signed(self.gap_unlimited_bandwidth)}",
            "bubble": f"on an ideal network the gap is still {_signed(self.gap_ideal)}, rank 0 waiting for other stages",
            "compute": f"on an ideal network the gap is still {_signed(self.gap_ideal)}, rank 0's own compute",
        }[why]
        parts = ", ".join(f"{PART_WORDS[k]} {_signed(self.parts[k])}" for k in PARTS)
        pct = 100 * self.gap / (winner_time + self.gap)
        return (f"why: {w} beats {r} by {self.gap:.3f} s ({pct:.1f}%), mostly {PART_WORDS[why]} "
                f"({detail}); the gap = {parts}")


def attribute(profile: Profile, setting: NetworkSetting, winner: Scored, runner_up: Scored, batch_size: int,
              transport: Transport | None = None) -> Attribution:
    """Split the runner-up's lead time into bubble, exposed latency, bandwidth and compute
    by re-simulating both candidates without latency, without throughput limits, and
    without either (Shapley values over the two network factors; the ideal-network gap
    split into rank 0's compute and the rest)."""
    gaps = {}
    ideal = {}
    for lat, bw in ((False, True), (True, False), (True, True)):
        prof, net = without_network(profile, setting, latency=lat, bandwidth=bw)
        a = simulate(prof, winner.candidate, batch_size, net, transport)
        b = simulate(prof, runner_up.candidate, batch_size, net, transport)
        gaps[(lat, bw)] = b.step_time - a.step_time
        if lat and bw:
            ideal = {"a": a, "b": b}
    g = runner_up.step_time - winner.step_time
    g_l0, g_binf, g_0 = gaps[(True, False)], gaps[(False, True)], gaps[(True, True)]
    latency = 0.5 * ((g - g_l0) + (g_binf - g_0))
    bandwidth = 0.5 * ((g - g_binf) + (g_l0 - g_0))
    compute = ideal["b"].ranks[0].compute - ideal["a"].ranks[0].compute
    parts = {"bubble": g_0 - compute, "latency": latency, "bandwidth": bandwidth, "compute": compute}
    return Attribution(winner.candidate, runner_up.candidate, g, parts, g_l0, g_binf, g_0)


@dataclass
class Recommendation:
    setting: NetworkSetting
    ranked: list[Scored]
    why: Attribution | None  # None with a single candidate

    @property
    def best(self) -> Scored:
        return self.ranked[0]

    def why_line(self) -> str:
        if self.why is None:
            return f"why: {self.best.candidate.label} is the only candidate left"
        return self.why.line(self.best.step_time)


def recommend(profile: Profile, setting: NetworkSetting, kept: Sequence[Sized], batch_size: int,
              transport: Transport | None = None, explain: bool = True) -> Recommendation:
    """Rank the kept candidates under one setting and explain the winner."""
    ranked = rank(profile, setting, kept, batch_size, transport)
    why = attribute(profile, setting, ranked[0], ranked[1], batch_size, transport) if explain and len(ranked) > 1 else None
    return Recommendation(setting, ranked, why)


def table(rec: Recommendation, top: int) -> str:
    """The top ``top`` candidates as a markdown table."""
    has_v = any(s.candidate.stages_per_rank is not None for s in rec.ranked)
    head = ["rank", "schedule", "mbs"] + (["v"] if has_v else []) + ["step time", "vs best", "peak memory per rank"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if h not in ("schedule",) else "---" for h in head) + "|"]
    best = rec.best.step_time
    for i, s in enumerate(rec.ranked[:top], 1):
        c = s.candidate
        row = [str(i), c.schedule, str(c.micro_batch_size)]
        if has_v:
            row.append("-" if c.stages_per_rank is None else str(c.stages_per_rank))
        row += [f"{s.step_time:.3f} s", "best" if i == 1 else f"+{100 * (s.step_time / best - 1):.1f}%",
                f"{format_bytes(s.peak_memory)} (rank {s.memory_bytes.index(s.peak_memory)})"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


__all__ = ["Candidate", "Scored", "Attribution", "Recommendation", "candidates", "activation_memory",
           "split_by_memory", "rank", "attribute", "recommend", "without_network", "parse_bytes", "format_bytes",
           "table", "MEMORY_MEANING"]
