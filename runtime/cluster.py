"""Keeping a long multi-machine torchrun job honest: clean up on any exit, name the rank that went missing.

A :class:`JobGuard` is made by every rank of a job that changes something on its
machine (``pipesim sweep`` and calibration under torchrun put netem on an interface).
It guarantees that ``cleanup`` runs (once) however the rank ends, short of SIGKILL
(for that, :class:`testbed.shaper.NetemShaper` has its guard process):

* **signals**: SIGTERM, SIGINT and SIGHUP are blocked in every thread and taken by one
  thread with ``sigwait``, so they are handled even while the main thread is stuck in a
  gloo or NCCL wait (a Python signal handler would wait for that call to return);
* **a peer that is gone**: each rank bumps a heartbeat counter in the job's store
  (torchrun's, on machine 0) every second from a thread of its own, with a store client
  of its own. When an operation fails, :meth:`fail` looks at whose counter stopped and
  names that rank (or, if the store itself is unreachable, machine 0);
* **a peer that gave up**: :meth:`fail` posts an ``abort`` key with the reason; every
  other rank's heartbeat thread sees it within a second, cleans up and exits, even when
  its main thread is blocked in a collective that would otherwise wait for its timeout.

Torch is imported by the caller (this module only uses ``torch.distributed.TCPStore``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, NoReturn

from runtime.launch import BLAME_PREFIX

if TYPE_CHECKING:
    from torch.distributed import TCPStore

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def block_signals() -> None:
    """Block SIGTERM, SIGINT and SIGHUP in this thread and every thread started after (call
    first thing in the main thread, before torch starts any thread)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)


class JobGuard:
    def __init__(self, rank: int, world: int, cleanup: Callable[[], None], *, name: str = "pipesim",
                 op_timeout_s: float = 120.0, beat_s: float = 1.0):
        self.rank, self.world, self.name = rank, world, name
        self._cleanup_fn = cleanup
        self._cleaned = False
        self._lock = threading.RLock()
        self.op_timeout_s = op_timeout_s
        self.beat_s = beat_s
        self.finishing = False
        self.where = "starting"   # what the main thread is doing (published with the heartbeat)
        self._store: TCPStore | None = None
        self._prefix = f"pipesim_guard/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
        self.store_where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"

    # ------------------------------------------------------------------ life cycle
    def start_signals(self) -> JobGuard:
        block_signals()
        threading.Thread(target=self._signals, name="job-guard-signals", daemon=True).start()
        return self

    def start_heartbeat(self) -> JobGuard:
        """After ``init_process_group``: a store client of our own, and the heartbeat thread."""
        import torch.distributed as dist

        host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if not host or not port:
            return self
        try:
            self._store = dist.TCPStore(host, int(port), is_master=False,
                                        timeout=timedelta(seconds=max(5.0, min(self.op_timeout_s, 30.0))))
            self._store.add(self._key(f"hb/{self.rank}"), 1)
        except Exception as e:  # not fatal: only the naming of a missing rank is lost
            print(f"{self.name}: rank {self.rank}: no heartbeat (cannot reach the store at {self.store_where}: {e})",
                  file=sys.stderr, flush=True)
            self._store = None
            return self
        threading.Thread(target=self._beat, name="job-guard-heartbeat", daemon=True).start()
        return self

    def _key(self, k: str) -> str:
        return self._prefix + k

    def cleanup(self) -> None:
        """Run ``cleanup`` once (later calls do nothing); errors are printed, not raised."""
        with self._lock:
            if self._cleaned:
                return
            self._cleaned = True
            try:
                self._cleanup_fn()
            except Exception as e:
                print(f"{self.name}: rank {self.rank}: cleaning up failed: {e}", file=sys.stderr, flush=True)

    @property
    def lock(self) -> threading.RLock:
        """Hold it while changing what ``cleanup`` undoes (a signal then waits for the change)."""
        return self._lock

    def _exit(self, code: int, msg: str) -> NoReturn:
        self.finishing = True
        self.cleanup()
        if self._store is not None:   # not missing: it left, and says why
            try:
                self._store.set(self._key(f"left/{self.rank}"), msg)
            except Exception:
                pass
        print(msg, file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(code)

    # ------------------------------------------------------------------ threads
    def _signals(self) -> None:
        sig = signal.sigwait(SIGNALS)
        self.finishing = True
        name = signal.Signals(sig).name
        self._post_abort(f"rank {self.rank} got {name}")
        self._await_others([])
        self._exit(128 + sig, f"{self.name}: rank {self.rank}: got {name}; cleaned up and stopped")

    def _beat(self) -> None:
        assert self._store is not None
        last_ok = time.monotonic()
        published = None
        while not self.finishing:
            time.sleep(self.beat_s)
            if self.finishing:
                return
            try:
                self._store.add(self._key(f"hb/{self.rank}"), 1)
                where = self.where
                if where != published:
                    self._store.set(self._key(f"at/{self.rank}"), where)
                    published = where
                if self._store.check([self._key("abort")]):
                    why = self._store.get(self._key("abort")).decode(errors="replace")
                    if not self.finishing:
                        self._exit(1, f"{self.name}: rank {self.rank}: stopping, because {why}; cleaned up")
                last_ok = time.monotonic()
            except Exception as e:
                if self.finishing:
                    return
                if time.monotonic() - last_ok > self.op_timeout_s:
                    print(f"{BLAME_PREFIX}0", flush=True)
                    self._exit(1, f"{self.name}: rank {self.rank}: lost the job's store at {self.store_where} "
                                  f"(machine 0, rank 0's torchrun) for {self.op_timeout_s:g}s ({e}): rank 0's "
                                  "machine or its torchrun is gone; cleaned up")

    # ------------------------------------------------------------------ failure
    def _post_abort(self, why: str) -> None:
        if self._store is None:
            return
        try:
            if not self._store.check([self._key("abort")]):
                self._store.set(self._key("abort"), why)
        except Exception:
            pass

    def _await_others(self, missing: list[int]) -> None:
        """After posting ``abort``: give the other ranks a few beats to see it and leave, so that
        machine 0's store (which goes when rank 0 exits) is still there when they look."""
        if self._store is None:
            return
        others = [r for r in range(self.world) if r != self.rank and r not in missing]
        deadline = time.monotonic() + 3 * self.beat_s + 2
        try:
            while others and time.monotonic() < deadline:
                others = [r for r in others if not self._store.check([self._key(f"left/{r}")])]
                time.sleep(0.1)
        except Exception:
            pass

    def missing_ranks(self, wait_s: float | None = None) -> list[int] | None:
        """Ranks whose heartbeat stopped (counters that do not move over ``wait_s``, default 2.5
        beats); None if the store cannot be reached (machine 0 or its torchrun is gone)."""
        if self._store is None:
            return None
        wait_s = 2.5 * self.beat_s if wait_s is None else wait_s
        try:
            keys = [self._key(f"hb/{r}") for r in range(self.world)]
            first = [self._store.add(k, 0) for k in keys]
            time.sleep(wait_s)
            second = [self._store.add(k, 0) for k in keys]
        except Exception:
            return None
        still = [r for r in range(self.world) if r != self.rank and second[r] == first[r]]
        try:
            return [r for r in still if not self._store.check([self._key(f"left/{r}")])]
        except Exception:
            return None

    def _positions(self) -> str:
        try:
            at = [self._store.get(self._key(f"at/{r}")).decode(errors="replace")
                  if self._store is not None and self._store.check([self._key(f"at/{r}")]) else "?"
                  for r in range(self.world)]
        except Exception:
            return "where each rank was is unknown"
        return "last seen: " + "; ".join(f"rank {r} {a}" for r, a in enumerate(at))

    def fail(self, what: str, blame: int | None = None, code: int = 1) -> NoReturn:
        """Clean up, find who is missing, tell the others, and exit. ``blame``: the peer an
        operation waited for, if known (a hung rank keeps its heartbeat)."""
        self.cleanup()
        missing = self.missing_ranks()
        if missing is None:
            who, blamed = (f"the job's store at {self.store_where} (machine 0) cannot be reached: rank 0's machine "
                           "or its torchrun is gone", 0 if self.rank != 0 else blame)
        elif missing:
            who = f"rank{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} {'is' if len(missing) == 1 else 'are'} " \
                  f"missing (no heartbeat for {2.5 * self.beat_s:g}s)"
            blamed = missing[0]
        elif blame is not None:
            who, blamed = f"rank {blame} made no progress (it is alive but did not answer)", blame
        else:
            who, blamed = "every rank is alive, so one is stuck or far slower than the timeout; " + self._positions(), None
        self.finishing = True
        self._post_abort(f"rank {self.rank} failed: {who or what}")
        self._await_others(missing or [])
        if blamed is not None:
            print(f"{BLAME_PREFIX}{blamed}", flush=True)
        self._exit(code, f"{self.name}: rank {self.rank}: {who + ': ' if who else ''}{what}; cleaned up")

    def finish(self) -> None:
        """The job ends normally: stop the heartbeat (machine 0's store may close first), clean up."""
        self.finishing = True
        self.cleanup()
