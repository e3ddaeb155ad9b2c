"""How the runtime moves messages: which transfers share a queue, when a send may start,
how early receives are posted (the simulator's :class:`Transport`).

A profile may record the transport of the runtime it was calibrated from (its
``transport`` section, see :mod:`pipesim.schema`); :meth:`Transport.for_profile` reads it
and falls back to :meth:`Transport.for_backend`, the runtime's own choice per
communication backend. The runtime (``runtime/engine.py``) and calibration take their
defaults from :meth:`Transport.for_backend` too, so there is one mapping.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .limits import BYTES, RECV_AHEAD

if TYPE_CHECKING:
    from .profile import Profile

QUEUES = ("link", "rank")
SEND_MODES = ("eager", "rendezvous")


@dataclass(frozen=True)
class Transport:
    """How the lowering and the communication backend move messages (see :mod:`pipesim.engine`).

    ``queue``: ``"link"``, one FIFO per link direction (gloo: one TCP connection per pair
    of ranks), or ``"rank"``, one send and one receive queue per rank shared by forward
    and backward traffic. ``send_mode``: ``"eager"`` (a send starts when posted) or
    ``"rendezvous"`` (once the receiver has posted the receive and told the sender);
    messages up to ``eager_limit_bytes`` go eagerly under rendezvous. ``recv_ahead``:
    each receive is posted that many computations before the one that needs it; None:
    all receives of a step are posted at its start.
    """

    queue: str = "link"
    send_mode: str = "rendezvous"
    eager_limit_bytes: int = 0
    recv_ahead: int | None = None

    def __post_init__(self) -> None:
        if self.queue not in QUEUES:
            raise ValueError(f"transport queue must be 'link' or 'rank', got {self.queue!r}")
        if self.send_mode not in SEND_MODES:
            raise ValueError(f"transport send_mode must be 'eager' or 'rendezvous', got {self.send_mode!r}")
        BYTES.check(self.eager_limit_bytes, "transport eager_limit_bytes")
        if self.recv_ahead is not None:
            RECV_AHEAD.check(self.recv_ahead, "transport recv_ahead (or None)")

    @classmethod
    def for_backend(cls, backend: str | None) -> Transport:
        """The transport the runtime uses with ``backend`` (gloo: per-pair TCP, rendezvous, receives posted up front;
        nccl: one p2p stream per rank, rendezvous, each receive posted just before it is needed)."""
        if backend == "nccl":
            return cls(queue="rank", send_mode="rendezvous", recv_ahead=0)
        return cls(queue="link", send_mode="rendezvous", recv_ahead=None)

    @classmethod
    def for_profile(cls, profile: Profile) -> Transport:
        """The profile's own ``transport`` section if it has one, else the one of its device's backend."""
        if profile.transport is not None:
            return profile.transport
        return cls.for_backend((profile.device or {}).get("backend"))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.recv_ahead is None:
            ahead = "all receives posted at step start"
        elif self.recv_ahead == 0:
            ahead = "each receive posted just before the computation that needs it"
        else:
            ahead = f"each receive posted {self.recv_ahead} computation(s) early"
        eager = f" (eager up to {self.eager_limit_bytes} bytes)" if self.send_mode == "rendezvous" and self.eager_limit_bytes else ""
        return f"{self.queue} queues, {self.send_mode}{eager}, {ahead}"
