"""Who changes the network for a sweep or a probe: one object per machine (rank), same calls everywhere.

A :class:`Shaper` applies a network setting to what *this* machine sends and clears it
again, as the seed's experiments did with netem on every machine:

* :class:`NetemShaper`: ``tc netem`` on a real interface named with ``--iface`` (never
  guessed). The previous qdisc is saved (:mod:`.netem`) and restored by :meth:`clear`.
  A *guard* process (``python -m testbed.shaper guard``, in its own session) holds a
  pipe from this process and restores the interface when that pipe closes, so the
  qdisc comes back even when this process is killed with SIGKILL.
* :class:`TestbedShaper`: on the local testbed, each host's rank asks the process that
  owns the testbed (a :class:`ShapeServer`, over a Unix socket) to re-shape that host's
  egress links (:meth:`testbed.Testbed.reshape`). When the rank's connection closes
  (it exited or was killed), the server clears its host.
* :class:`NoShaper`: nothing to shape with; any setting but ``default`` is refused.

Uniform settings become one netem on the interface; settings that name links
(``link 0-1 delay 5ms``) become a prio tree with a netem per shaped peer, matched by the
peer's IPv4 address (:func:`testbed.netem.per_link_commands`); the addresses are each
rank's address on its interface, gathered at start.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from pipesim import network as _network
from pipesim.util import stop_child

from . import netem


class Shaper:
    """Base class: ``check`` (refuse a bad configuration before anything starts), ``address``,
    ``apply``, ``clear`` (idempotent), ``close``."""

    what = "nothing"

    def check(self) -> None:
        return None

    def address(self) -> str | None:
        return None

    def apply(self, setting: _network.NetworkSetting, addresses: list[str] | None = None) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        return None

    def close(self) -> None:
        self.clear()


class NoShaper(Shaper):
    what = "nothing (no --iface)"

    def apply(self, setting, addresses=None) -> None:
        if not setting.is_default:
            raise ValueError(f"network setting {setting.label!r} changes the network, but there is nothing to "
                             "shape it with: pass --iface IF (tc netem on every machine)")


def iface_address(iface: str) -> str | None:
    """The first IPv4 address of ``iface`` (None if it has none)."""
    p = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", iface], capture_output=True, text=True)
    for line in p.stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            return parts[parts.index("inet") + 1].split("/")[0]
    return None


class NetemShaper(Shaper):
    """tc netem on ``iface`` of this machine (rank ``rank``)."""

    def __init__(self, iface: str, rank: int, *, state_dir: str = netem.STATE_DIR, limit: int | None = None,
                 guard: bool = True, log=None):
        self.iface, self.rank, self.state_dir, self.limit = iface, rank, state_dir, limit
        self.what = f"tc netem on {iface}"
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.use_guard = guard
        self._guard: subprocess.Popen | None = None
        self._applied = False

    def check(self) -> None:
        netem._check_iface(self.iface)   # ValueError: missing or malformed name
        if not os.path.exists(f"/sys/class/net/{self.iface}"):
            raise ValueError(f"--iface {self.iface}: no such interface on {socket.gethostname()} (see `ip -br link`)")
        if os.geteuid() != 0:
            raise PermissionError(f"--iface {self.iface}: tc needs root on {socket.gethostname()}: run with sudo")
        path = netem.state_path(self.iface, self.state_dir)
        if os.path.exists(path):
            raise ValueError(f"--iface {self.iface}: {path} exists, so a netem of pipesim's is still on it (a "
                             f"`pipesim netem apply`, or a run that could not clean up): restore it with "
                             f"`pipesim netem clear --iface {self.iface}` first")

    def address(self) -> str | None:
        return iface_address(self.iface)

    def _start_guard(self) -> None:
        if not self.use_guard or self._guard is not None:
            return
        pkg_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # own session: a kill of this process's group (torchrun's, a launcher's) does not reach it
        self._guard = subprocess.Popen([sys.executable, "-m", "testbed.shaper", "guard", "--iface", self.iface,
                                        "--state-dir", self.state_dir], stdin=subprocess.PIPE,
                                       stdout=subprocess.DEVNULL, env=env, start_new_session=True)

    def apply(self, setting, addresses=None) -> None:
        cmds = netem.rank_commands(self.iface, setting, self.rank, addresses, self.limit)
        if not cmds:
            return
        self._start_guard()
        self._applied = True
        netem.apply_list(self.iface, cmds, setting.label, state_dir=self.state_dir, out=self.log)

    def clear(self) -> None:
        if not self._applied and not os.path.exists(netem.state_path(self.iface, self.state_dir)):
            return
        netem.clear(self.iface, state_dir=self.state_dir, out=self.log)
        self._applied = False

    def close(self) -> None:
        try:
            self.clear()
        finally:
            g, self._guard = self._guard, None
            if g is not None:
                stop_child(g, 10)   # the guard finds nothing saved and exits


def guard_main(iface: str, state_dir: str) -> int:
    """Wait for stdin to close (the shaping process closed it, exited or was killed), then put
    the interface's saved qdisc back if it is still saved."""
    import signal

    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)     # a Ctrl-C or hang-up of the terminal must not stop it first
    while True:
        try:
            if not os.read(0, 4096):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    if os.path.exists(netem.state_path(iface, state_dir)):
        try:
            netem.clear(iface, state_dir=state_dir,
                        out=lambda m: print(f"pipesim netem guard: {m}", file=sys.stderr, flush=True))
        except (RuntimeError, OSError) as e:
            print(f"pipesim netem guard: could not restore {iface}: {e}", file=sys.stderr, flush=True)
            return 1
    return 0


# ---------------------------------------------------------------------------------------------- testbed


class ShapeServer:
    """Serves :class:`TestbedShaper` requests for a :class:`testbed.Testbed` (the process that owns it).

    Protocol: JSON lines over a Unix socket; ``{"host": i, "apply": SETTING}`` or
    ``{"host": i, "clear": true}``, each answered ``{"ok": true}`` or ``{"error": ...}``.
    A closed connection clears the hosts it shaped. ``history`` records every change
    (host, action, network, why)."""

    def __init__(self, tb, path: str | None = None):
        self.tb = tb
        self._dir = None
        if path is None:
            self._dir = tempfile.mkdtemp(prefix="pipesim-shape-")
            path = os.path.join(self._dir, "ctl.sock")
        self.path = path
        self.history: list[dict] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._conns: list[socket.socket] = []

    def __enter__(self) -> ShapeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> ShapeServer:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.listen(64)
        self._sock = s
        threading.Thread(target=self._accept, name="shape-server", daemon=True).start()
        return self

    def _accept(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _change(self, host: int, action: str, network: str, why: str) -> None:
        with self._lock:
            self.tb.reshape(network, hosts=[host])
            self.history.append({"host": host, "action": action, "network": network, "why": why})

    def _serve(self, conn: socket.socket) -> None:
        shaped: set[int] = set()
        f = conn.makefile("rwb", buffering=0)
        try:
            for line in f:
                try:
                    cmd = json.loads(line)
                    host = int(cmd["host"])
                    if "apply" in cmd:
                        label = _network.parse(cmd["apply"]).label
                        self._change(host, "apply", label, "asked")
                        shaped.add(host)
                    elif cmd.get("clear"):
                        if host in shaped:
                            self._change(host, "clear", "default", "asked")
                            shaped.discard(host)
                    else:
                        raise ValueError(f"unknown request {cmd}")
                    answer: dict = {"ok": True}
                except Exception as e:   # answer every request, whatever went wrong
                    answer = {"error": str(e)}
                f.write((json.dumps(answer) + "\n").encode())
        except OSError:
            pass
        finally:
            for host in sorted(shaped):   # the rank is gone without clearing: clear for it
                try:
                    self._change(host, "clear", "default", "connection closed")
                except Exception:
                    pass
            conn.close()

    def close(self) -> None:
        s, self._sock = self._sock, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if os.path.exists(self.path):
            os.unlink(self.path)
        if self._dir:
            os.rmdir(self._dir)


class TestbedShaper(Shaper):
    """Host ``host`` of a local testbed, shaped through the :class:`ShapeServer` at ``path``."""

    __test__ = False

    def __init__(self, path: str, host: int, timeout_s: float = 60.0):
        self.path, self.host, self.timeout_s = path, host, timeout_s
        self.what = "re-shaping the local testbed"
        self._f: socket.SocketIO | None = None
        self._applied = False

    def check(self) -> None:
        if self._f is not None:
            return
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout_s)
        try:
            s.connect(self.path)
        except OSError as e:
            s.close()
            raise ValueError(f"cannot reach the testbed's shaping server at {self.path}: {e}") from None
        self._f = s.makefile("rwb", buffering=0)

    def _ask(self, req: dict) -> None:
        self.check()
        assert self._f is not None
        self._f.write((json.dumps({"host": self.host, **req}) + "\n").encode())
        line = self._f.readline()
        answer = json.loads(line) if line else {"error": "the testbed's shaping server closed the connection"}
        if not answer.get("ok"):
            raise RuntimeError(f"testbed host {self.host}: {answer.get('error')}")

    def apply(self, setting, addresses=None) -> None:
        if setting.is_default:
            return
        self._applied = True
        self._ask({"apply": setting.label})

    def clear(self) -> None:
        if self._applied:
            self._ask({"clear": True})
            self._applied = False

    def close(self) -> None:
        try:
            self.clear()
        finally:
            f, self._f = self._f, None
            if f is not None:
                f.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m testbed.shaper")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("guard", help="restore IFACE's saved qdisc when stdin closes")
    g.add_argument("--iface", required=True)
    g.add_argument("--state-dir", default=netem.STATE_DIR)
    args = ap.parse_args(argv)
    return guard_main(args.iface, args.state_dir)


if __name__ == "__main__":
    sys.exit(main())
