"""Units and accepted ranges of every network setting, profile field and simulation size.

The one place that states them. The network-setting parser (:mod:`pipesim.network`),
the profile schema (:mod:`pipesim.schema`, which the profile reader validates against) and the simulator's entry
(:func:`pipesim.engine.simulate`) all check against this table, and
``docs/limits.md`` is generated from it (``python -m pipesim.limits`` prints it and the
units of network settings; a test checks that the file still contains both).

The ranges are wide enough for any real cluster and narrow enough that every
simulation stays finite: a value outside one is refused with a one-line error that
names the field, the unit and the range, never turned into ``nan`` or a 300-digit
step time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """A quantity's unit and accepted interval (``lo_open``: the lower bound itself is refused)."""

    name: str
    unit: str
    lo: float
    hi: float
    lo_open: bool = False
    integer: bool = False
    doc: str = ""

    def describe(self) -> str:
        lo = f"> {_fmt(self.lo)}" if self.lo_open else f">= {_fmt(self.lo)}"
        kind = "an integer" if self.integer else "a number"
        return f"{kind} {lo} and <= {_fmt(self.hi)} {self.unit}".rstrip()

    def check(self, value, where: str) -> float:
        """``value`` as a float (or int) if it lies in range, else ``ValueError`` naming ``where``."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be {self.describe()}, got {value!r}")
        if isinstance(value, int):
            if self.integer and self.lo <= value <= self.hi and not (self.lo_open and value == self.lo):
                return value
            if abs(value) > 1e300:  # a huge integer literal: float() would overflow
                raise ValueError(f"{where} must be {self.describe()}, got a number of {len(str(abs(value)))} digits")
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"{where} must be {self.describe()}, got {value!r}")
        if self.integer and v != int(v):
            raise ValueError(f"{where} must be {self.describe()} (a whole number), got {value!r}")
        if v < self.lo or (self.lo_open and v == self.lo) or v > self.hi:
            raise ValueError(f"{where} must be {self.describe()}, got {value!r}")
        return int(v) if self.integer else v


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1e6 or abs(x) < 1e-3:
        s = f"{x:.0e}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
        if float(s) != x:  # not a round power: the exact value (2**31 is not 2e9)
            return f"{int(x):,}" if x == int(x) else f"{x:.6g}"
        return s
    return f"{x:g}"


# ---------------------------------------------------------------- network settings
DELAY_S = Range("delay", "s", 0.0, 3600.0, doc="one-way delay added to a link, as tc netem delay (0 to 1 hour)")
BANDWIDTH_BPS = Range("bandwidth", "bit/s", 1e3, 1e15, doc="link rate cap, bits per second (1 kbit/s to 1 Pbit/s)")

# ---------------------------------------------------------------- profile
SECONDS = Range("seconds", "s", 0.0, 86400.0, lo_open=True,
                doc="compute time of one forward or backward of one micro-batch (> 0, at most a day)")
SECONDS_OR_ZERO = Range("seconds", "s", 0.0, 86400.0,
                        doc="optimizer step, overheads, spreads (>= 0, at most a day)")
LATENCY_S = Range("latency", "s", 0.0, 3600.0, doc="one-way link latency, per message overhead included")
DELAY_EXCESS_S = Range("delay excess", "s", 0.0, 3600.0,
                       doc="what a delay element adds to a link's latency beyond its nominal delay, per message")
LINK_BANDWIDTH_BPS = Range("bandwidth", "bit/s", 1e3, 1e15, doc="a link's measured throughput, bits per second")
BYTES = Range("bytes", "bytes", 0, 2 ** 50, integer=True, doc="bytes of one message (activation or gradient), whole")
WINDOW_BYTES = Range("window", "bytes", 1, 2 ** 40, integer=True,
                     doc="the most one connection keeps in flight (null: no cap), whole bytes")
SLOWDOWN = Range("slowdown", "", 1e-3, 1e3, doc="host slowdown factor with k ranks computing at once")
SHAPED_CPU_S_PER_BYTE = Range("CPU per byte", "s/byte", 0.0, 1e-3,
                              doc="host CPU a rank spends per byte it sends or receives through a rate cap without "
                                  "a delay (the local testbed's htb shaping)")
QUANTUM_S = Range("quantum", "s", 0.0, 3600.0, lo_open=True, doc="round-robin time slice of the host scheduler")
CORES = Range("cores", "", 1, 4096, integer=True, doc="cores of the shared host")
LAYERS = Range("layers", "", 1, 1_000_000, integer=True, doc="layers of a stage or a model")
MODEL_SIZE = Range("size", "", 1, 2 ** 40, integer=True,
                   doc="model.d_model, heads, seq_len, vocab, stages: sizes of the model, whole")
RECV_AHEAD = Range("receives ahead", "computations", 0, 2 ** 31, integer=True,
                   doc="each receive is posted this many computations before the one that needs it "
                       "(null: all receives of a step posted at its start)")

# ---------------------------------------------------------------- simulation sizes
MICRO_BATCH_SIZE = Range("micro-batch size", "", 1, 2 ** 31, integer=True, doc="samples per micro-batch")
BATCH_SIZE = Range("batch size", "", 1, 2 ** 31, integer=True, doc="samples per training step")
STEPS = Range("steps", "", 1, 10_000, integer=True, doc="consecutive simulated steps")
MEMORY_LIMIT_BYTES = Range("memory limit", "bytes", 1, 2 ** 50, integer=True,
                           doc="largest peak activation memory per rank a candidate may need (units: B, kB, MB, GB, "
                               "TB, KiB, MiB, GiB, TiB)")
TOP = Range("top", "candidates", 1, 1000, integer=True, doc="candidates printed per network setting")
STAGES_PER_RANK = Range("stages per rank", "", 1, 64, integer=True,
                        doc="model chunks per rank, for schedules that take them (interleaved)")

# ---------------------------------------------------------------- real runs (pipesim run, calibrate)
RANKS = Range("ranks", "", 1, 200, integer=True, doc="ranks = stages of a local run (at most the model's layers)")
RUN_STEPS = Range("steps", "", 1, 1_000_000, integer=True, doc="measured steps of a real run")
WARMUP_STEPS = Range("warm-up steps", "", 0, 1_000_000, integer=True, doc="warm-up steps of a real run, not measured")
THREADS = Range("threads", "", 1, 4096, integer=True, doc="torch intra-op threads per rank")
TIMEOUT_S = Range("timeout", "s", 0.0, 7 * 86400.0, lo_open=True, doc="a run's or a peer operation's time limit")
LEARNING_RATE = Range("learning rate", "", 0.0, 1e3, doc="optimizer learning rate")
NETEM_LIMIT = Range("limit", "packets", 1, 2 ** 32 - 1, integer=True, doc="tc netem queue limit")
CHECK_SECONDS = Range("seconds", "s", 0.0, 3600.0, lo_open=True, doc="iperf3 duration per setting")
CHECK_PINGS = Range("pings", "", 1, 100_000, integer=True, doc="pings per setting")

MAX_SIM_ACTIONS = 50_000_000
"""Most actions (ranks x actions per rank x steps) one simulation may run: about 5
minutes at the simulator's measured speed (docs/simulate.md); larger ones are refused
before starting, with the size that was asked for."""
MAX_STEP_TIME_S = 1e9
"""A simulated step longer than this (about 30 years) is refused as a result."""

ALL = {
    "network: delay": DELAY_S, "network: bandwidth": BANDWIDTH_BPS,
    "profile: forward_s, backward_s": SECONDS,
    "profile: optimizer_s, overhead_s, step_overhead_s, *_spread_s, overhead_by_schedule_s": SECONDS_OR_ZERO,
    "profile: activation_bytes, gradient_bytes, transport.eager_limit_bytes": BYTES,
    "profile: links[].latency_s": LATENCY_S, "profile: links[].bandwidth_bps": LINK_BANDWIDTH_BPS,
    "profile: links[].window_bytes": WINDOW_BYTES, "profile: links[].delay_excess_s": DELAY_EXCESS_S,
    "profile: host.cores": CORES, "profile: host.slowdown": SLOWDOWN, "profile: host.quantum_s": QUANTUM_S,
    "profile: host.shaped_cpu[].bandwidth_bps": BANDWIDTH_BPS,
    "profile: host.shaped_cpu[].s_per_byte": SHAPED_CPU_S_PER_BYTE,
    "profile: stages[].layers, model.layers": LAYERS,
    "profile: model.d_model, heads, seq_len, vocab, stages": MODEL_SIZE,
    "profile: transport.recv_ahead": RECV_AHEAD,
    "simulate: --micro-batch-size": MICRO_BATCH_SIZE, "simulate: --batch-size": BATCH_SIZE,
    "simulate: --steps": STEPS,
    "recommend: --memory-limit": MEMORY_LIMIT_BYTES, "recommend: --top": TOP,
    "recommend: --stages-per-rank": STAGES_PER_RANK,
    "run: --ranks": RANKS, "run: --steps": RUN_STEPS, "run: --warmup": WARMUP_STEPS, "run: --threads": THREADS,
    "run: --timeout, --op-timeout": TIMEOUT_S, "run: --lr": LEARNING_RATE, "netem apply: --limit": NETEM_LIMIT,
    "testbed check: --seconds": CHECK_SECONDS, "testbed check: --pings": CHECK_PINGS,
}


def markdown() -> str:
    """The table of docs/limits.md."""
    lines = ["| what | unit | accepted | meaning |", "|---|---|---|---|"]
    for what, r in ALL.items():
        lines.append(f"| {what} | {r.unit or '-'} | {r.describe()} | {r.doc} |")
    lines.append(f"| one simulation | actions | at most {MAX_SIM_ACTIONS:,} (ranks x actions x steps) | "
                 "larger runs are refused before starting |")
    return "\n".join(lines)


if __name__ == "__main__":
    from .network import units_markdown

    print(markdown())
    print()
    print(units_markdown())
