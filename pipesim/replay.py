"""Replay a measured run in the simulator with the run's own compute durations.

The *replay error* of a cell isolates the model of schedule, transport and network
from compute noise: every forward, backward and optimizer step of the replay takes
exactly as long as it took in the measured run (per rank, per step, per action, read
from the run's trace), while everything else -- when a rank may start an action, how
messages queue, serialize and propagate over each link under the cell's network
setting -- comes from the model and the profile's links. The run's step time is never
used: it is only compared with the replay's.

Each computation also carries the rank's own time before it that was not waiting for
data (the runtime posting sends and receives, its bookkeeping, the hand-off from its
watcher thread after an arrival): that is CPU work of the rank, not of the network.
A send's post is the rank's own time too, and it holds the message: the runtime stamps
a send when its post returns, and on gloo the post itself pushes the message into the
kernel (over a local veth, through the receiver's network stack as well), so the rank's
time from the computation to that stamp is when the message's last bytes leave, not
only bookkeeping. The replay holds the rank for it, as the run did, and lets the data
arrive no earlier than the post's return plus the link's latency (the ``send_lags`` of
:func:`pipesim.engine.simulate`). Before this, the replay charged that time to the rank's
next computation and sent the data at the computation's end: over 41 kept folders it
came out 1.05% short on average (1F1B / GPipe replay MAPE 1.37% / 1.23%; 0.48% / 0.51%
with it; ``benchmarks/replay_send_lag.py``).

What the replay leaves to the model, and so shows up in its error: the transfers
themselves, when they may start, how they queue, and how much of each is hidden
behind compute. Measured
durations already hold any slowdown from ranks that share a core, so the profile's
``host`` model is off in a replay.

The replayed step time is the median over the measured steps of rank 0's period
between step ends, exactly as the runtime reports its own step time (warm-up steps
are replayed too, and excluded from the median like the runtime excludes them).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from . import engine as E
from .explain import TraceIndex
from .network import NetworkSetting
from .profile import Profile
from .trace import TraceEvent

COMPUTE = ("F", "B", "W", "OPT")


def durations_from_trace(events: Iterable[TraceEvent], with_gaps: bool = True,
                         send_lags: dict[tuple[int, int, str], float] | None = None) -> dict[tuple[int, int, str], float]:
    """(rank, step, action) -> seconds, for every computation in a trace.

    With ``with_gaps`` (the default), each computation also takes the rank's own time
    before it that was not spent waiting: from the end of the rank's previous computation
    to its start, less the part before its data had arrived (a forward's activation, a
    backward's gradient, the sends an optimizer step waits for). That is the runtime's
    own CPU work between actions (posting, bookkeeping, the hand-off after an arrival),
    which belongs to the rank, not to the network.

    Pass a dict as ``send_lags`` to split off the part of that time up to each send's
    stamp (from the end of the computation that produced it, or the rank's previous send
    after it, to the send's start in the trace, which the runtime stamps when the post
    returns): it is filled with (rank, step, send action) -> seconds, and the next
    computation keeps only its own time after the last of those posts. A replay needs the
    split: the post delays the message (its last bytes leave when it returns), which a
    computation's own time after the send does not."""
    events = list(events)
    out: dict[tuple[int, int, str], float] = {}
    for e in events:
        if e.kind in COMPUTE:
            key = (e.rank, e.step, e.action)
            if key in out:
                raise ValueError(f"trace has {e.action} of rank {e.rank} twice in step {e.step}")
            out[key] = max(0.0, e.end - e.start)
    if not out:
        raise ValueError("trace has no compute events to replay")
    if not with_gaps:
        return out
    idx = TraceIndex(events)
    posts: dict[int, list[TraceEvent]] = {}
    if send_lags is not None:
        for e in events:
            if e.kind in ("SF", "SB"):
                posts.setdefault(e.rank, []).append(e)
        for lst in posts.values():
            lst.sort(key=lambda e: e.start)
    for r, lst in idx.compute.items():
        ss = posts.get(r, [])
        j = 0
        for i, prev in enumerate(lst):
            t = prev.end  # the rank's own work after prev: up to its last send post before the next computation
            cur = lst[i + 1] if i + 1 < len(lst) else None
            while j < len(ss) and ss[j].start < prev.end:
                j += 1
            while j < len(ss) and (cur is None or ss[j].start <= cur.start):
                if send_lags is not None:
                    send_lags[(r, ss[j].step, ss[j].action)] = ss[j].start - t
                t = ss[j].start
                j += 1
            if cur is None:
                continue
            blk = idx.blocker(cur)
            ready = t if blk is None else max(t, blk[0].end)
            out[(cur.rank, cur.step, cur.action)] += max(0.0, cur.start - ready)
    return out


@dataclass(frozen=True)
class Replay:
    step_time: float  # median of rank 0's periods over the measured steps
    periods: list[float]  # rank 0's period of each measured step
    steps: int  # steps replayed (warm-up included)
    result: E.SimResult


def replay(profile: Profile, events: Iterable[TraceEvent], schedule: str, micro_batch_size: int, batch_size: int,
           network: str | NetworkSetting = "default", *, warmup: int = 0, transport: E.Transport | None = None,
           record: bool = False, with_gaps: bool = True, stages_per_rank: int = 1,
           send_lags: bool = True) -> Replay:
    """Simulate the run of ``events`` (a measured trace: all its steps) with its own compute durations
    (and, with ``with_gaps``, the rank's own time between actions; see :func:`durations_from_trace`).
    ``stages_per_rank``: the run's virtual stages per rank (interleaved schedules; the run's results say it).
    ``send_lags=False`` charges the time up to each send's stamp to the rank's next computation and
    sends the data at the computation's end (the replay before the lags; for comparison)."""
    lags: dict[tuple[int, int, str], float] = {}
    durs = durations_from_trace(events, with_gaps, lags if with_gaps and send_lags else None)
    steps = 1 + max(step for _, step, _ in durs)
    first = max(warmup, 1)
    if steps <= first:
        raise ValueError(f"trace has {steps} step(s); a replay needs at least one measured step after "
                         f"{warmup} warm-up step(s) and a previous step end")

    def lookup(rank: int, step: int, action: str) -> float:
        try:
            return durs[(rank, step, action)]
        except KeyError:
            if action == "OPT":
                return 0.0
            raise ValueError(f"trace has no {action} of rank {rank} in step {step}; was it cut short?") from None

    def lag(rank: int, step: int, action: str) -> float:
        return lags.get((rank, step, action), 0.0)

    res = E.simulate(profile, schedule, micro_batch_size, batch_size, network, transport=transport, steps=steps,
                     record=record, durations=lookup, stages_per_rank=stages_per_rank,
                     send_lags=lag if lags else None)
    ends = res.step_ends[0]
    periods = [ends[k] - ends[k - 1] for k in range(first, steps)]
    return Replay(statistics.median(periods), periods, steps, res)
