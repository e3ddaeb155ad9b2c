"""``pipesim sweep``: measure a grid of network settings on real machines, in one torchrun job.

The same command runs on every machine (one rank per machine, rank == stage)::

    torchrun --nnodes 3 --nproc-per-node 1 --node-rank R --master-addr HOST0 --master-port 29500 \\
        -m loop.sweep --iface eth0 --network seed --out out/sweep ...

(``pipesim sweep ...`` under torchrun, or with ``--no-python``, does the same). For each
setting of the grid, in order:

1. every machine applies the setting to what it sends, on its own ``--iface`` with tc
   netem (:class:`testbed.shaper.NetemShaper`; the previous qdisc is saved); per-link
   settings (``link 0-1 delay 5ms``) shape only the traffic to that peer (a prio tree
   with a u32 filter on the peer's address; the addresses are gathered at start);
2. all ranks meet at a barrier (a rank that could not apply it stops them all);
3. the cells of the setting run: schedules x micro-batch sizes x ``--repeats``, in
   passes of alternating order as ``pipesim validate`` does (plus, with
   ``--tiebreak-pct``, one more run of a cell whose runs disagree), each in-process
   over the job's process group (:func:`runtime.engine.run_cell`);
4. the setting is cleared on every machine.

Rank 0 appends every run to ``--out DIR/measured.jsonl`` as it finishes, in the format
of ``pipesim validate``'s (key ``schedule|network|mbs``, ``run``, ``median``, ``p10``,
``p90``, ``n`` ...), and its results to ``DIR/runs/<cell>/run<i>/results.json``. A sweep
that is started again skips the runs already there (rank 0 decides, and broadcasts the
list). Netem is cleared on every machine on any exit (:class:`runtime.cluster.JobGuard`:
signals, a peer that is gone or stuck, a failed cell; SIGKILL: the netem guard
process), and the error names the missing rank.

Without a cluster, ``pipesim sweep --local --ranks N`` does the same on the local testbed:
its hosts are the machines, each runs torchrun (the ranks meet through torchrun's
rendezvous on host 0's address), and each setting is applied by re-shaping the testbed
(:class:`testbed.shaper.TestbedShaper`). ``--dry-run`` prints the tc commands every
machine would run, and changes nothing.

Environment hook (tests): ``PIPESIM_SWEEP_FAULT=kill|term|hang:<rank>:<i>`` kills (SIGKILL),
terminates (SIGTERM) or hangs ``rank`` just before the i-th run (1-based) of this invocation.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from loop.validate import _cell_key, _slug, load_runs, run_spread_pct
from pipesim import network as N
from pipesim.util import append_jsonl, output_dir, parse_int_list

TORCHRUN_HINT = ("run it on every machine under torchrun, one rank per machine, e.g.\n"
                 "  torchrun --nnodes 3 --nproc-per-node 1 --node-rank R --master-addr HOST0 --master-port 29500 \\\n"
                 "      -m loop.sweep --iface eth0 --network seed --out out/sweep\n"
                 "or on this machine's local testbed: pipesim sweep --local --ranks 3 ...")


# ---------------------------------------------------------------------------------------------- arguments


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", default="out/sweep", help="folder for measured.jsonl and the runs (default %(default)s)")
    ap.add_argument("--network", default="seed", help="'seed' or settings separated by ',' (default %(default)s)")
    ap.add_argument("--model", default="cpu-small", help="model preset (default %(default)s)")
    ap.add_argument("--schedules", default="gpipe,1f1b",
                    help="any of gpipe, 1f1b, interleaved1f1b, zbh1 (default %(default)s)")
    ap.add_argument("--stages-per-rank", type=int, default=None, metavar="V",
                    help="virtual stages per rank for interleaved1f1b (default 2)")
    ap.add_argument("--micro-batch-sizes", default="1,2,4")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30, help="measured steps per run (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up steps per run (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="runs per cell, in passes of alternating order (default %(default)s)")
    ap.add_argument("--tiebreak-pct", type=float, default=None,
                    help="with 2+ repeats, one more run of a cell whose runs are more than this far apart (default: none)")
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL)")
    ap.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank (default 1)")
    ap.add_argument("--iface", default=None,
                    help="the interface this machine shapes with tc netem (never guessed; each machine reads its own --iface)")
    ap.add_argument("--netem-limit", type=int, default=None, help="netem queue limit in packets (netem's default: 1000)")
    ap.add_argument("--state-dir", default=None,
                    help="where each machine saves its interface's previous qdisc (default /run/pipesim; "
                         "'{rank}' in it is replaced by the rank)")
    ap.add_argument("--op-timeout", type=float, default=120.0,
                    help="seconds a rank waits for a peer before it clears its netem and stops (default %(default)s)")
    ap.add_argument("--verbose", action="store_true", help="print every step of every run (default: one line per run)")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the runs and the tc commands each machine would run (with --ranks, --addresses); change nothing")
    ap.add_argument("--addresses", default=None,
                    help="with --dry-run: the machines' addresses on --iface, comma-separated, in rank order")
    ap.add_argument("--local", action="store_true",
                    help="run on this machine's local testbed: --ranks hosts, each a torchrun node (needs root)")
    ap.add_argument("--ranks", type=int, default=3, help="with --local or --dry-run: number of machines (default 3)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="with --local: whole-sweep timeout in seconds")
    ap.add_argument("--testbed-control", default=None, help=argparse.SUPPRESS)


class Plan:
    """The grid, checked: settings x schedules x micro-batch sizes x repeats."""

    def __init__(self, ns: argparse.Namespace):
        from pipesim.cmd_sim import parse_schedules, stages_per_rank

        self.settings = N.parse_grid(ns.network)
        self.schedules = list(parse_schedules(ns.schedules, runtime_only=True))
        self.stages_per_rank = stages_per_rank(ns, self.schedules)  # interleaved schedules only
        self.mbs = parse_int_list(ns.micro_batch_sizes, "--micro-batch-sizes", unique_sorted=True)
        for name in ("batch_size", "steps", "repeats", "threads"):
            if getattr(ns, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(ns, name)}")
        if ns.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {ns.warmup}")
        if not ns.op_timeout > 0:
            raise ValueError(f"--op-timeout must be > 0, got {ns.op_timeout}")
        for m in self.mbs:
            if ns.batch_size % m:
                raise ValueError(f"--batch-size {ns.batch_size} is not a multiple of micro-batch size {m}")
        labels = [s.label for s in self.settings]
        if len(set(labels)) != len(labels):
            raise ValueError(f"--network names a setting twice: {labels}")
        self.batch_size, self.repeats, self.tiebreak_pct = ns.batch_size, ns.repeats, ns.tiebreak_pct
        self.cells = [(s, m) for s in self.schedules for m in self.mbs]

    def check_world(self, world: int) -> None:
        for st in self.settings:
            for links, _ in st.clauses:
                for a, b in links or ():
                    if max(a, b) >= world:
                        raise ValueError(f"network setting {st.label!r} names link {a}-{b}, but the job has "
                                         f"{world} ranks (0..{world - 1})")
        from pipesim.cmd_sim import check_schedules

        check_schedules(world, self.schedules, self.mbs, self.batch_size, self.stages_per_rank)

    def stages(self, world: int) -> int:
        """Stages the model is cut into at most (ranks x V with an interleaved schedule)."""
        from pipesim.schedule import VIRTUAL

        return world * (self.stages_per_rank if any(s in VIRTUAL for s in self.schedules) else 1)

    def fingerprint(self, ns: argparse.Namespace) -> str:
        """What every rank must agree on."""
        doc = {"settings": [s.label for s in self.settings], "cells": self.cells, "batch": self.batch_size,
               "stages_per_rank": self.stages_per_rank,
               "repeats": self.repeats, "tiebreak": self.tiebreak_pct,
               **{k: getattr(ns, k) for k in ("model", "steps", "warmup", "device", "backend", "threads")}}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def todo(self, runs: dict[str, dict[int, dict]]) -> list[tuple[int, list[tuple[int, str, int]]]]:
        """Per setting (index), the runs (run index, schedule, mbs) not yet in ``runs``, in passes of
        alternating order."""
        out = []
        for si, st in enumerate(self.settings):
            items = []
            for r in range(self.repeats):
                order = self.cells if r % 2 == 0 else self.cells[::-1]
                items += [(r, s, m) for s, m in order if r not in runs.get(_cell_key(s, st.label, m), {})]
            out.append((si, items))
        return out

    def tiebreaks(self, si: int, runs: dict[str, dict[int, dict]]) -> list[tuple[int, str, int]]:
        """Tie-break runs of setting ``si`` (index ``repeats``) for cells whose runs disagree."""
        if self.tiebreak_pct is None or self.repeats < 2:
            return []
        label = self.settings[si].label
        out = []
        for s, m in self.cells:
            have = runs.get(_cell_key(s, label, m), {})
            if self.repeats in have or len(have) < self.repeats:
                continue
            if run_spread_pct([x["median"] for x in have.values()]) > self.tiebreak_pct:
                out.append((self.repeats, s, m))
        return out

    @property
    def total(self) -> int:
        return len(self.settings) * len(self.cells) * self.repeats


def run_dir(out: Path, schedule: str, label: str, mbs: int, run: int) -> Path:
    """Where a run's results go: the layout of ``pipesim validate``."""
    return out / "runs" / f"{schedule}_{_slug(label)}_mbs{mbs}" / f"run{run}"


# ---------------------------------------------------------------------------------------------- dry run


def dry_run_lines(plan: Plan, ranks: int, iface: str, addresses: list[str] | None, limit: int | None = None) -> list[str]:
    """What each machine would run for each setting (tc commands), and how many runs each takes."""
    from testbed import netem

    plan.check_world(ranks)
    if addresses is None:
        per_link = [st.label for st in plan.settings if any(links is not None for links, _ in st.clauses)]
        if per_link:
            raise ValueError(f"--dry-run: setting {per_link[0]!r} names links, and its tc filters match each peer by "
                             "its address: pass --addresses A0,A1,... (the machines' IPv4 addresses on --iface, in rank order)")
    addrs = addresses or [f"ADDR{r}" for r in range(ranks)]  # placeholders: uniform settings do not use them
    if len(addrs) != ranks:
        raise ValueError(f"--addresses gives {len(addrs)} addresses for {ranks} ranks")
    lines = [f"# {len(plan.settings)} settings x {len(plan.cells)} cells x {plan.repeats} repeats = {plan.total} runs "
             f"on {ranks} machines, shaping {iface}"]
    for st in plan.settings:
        lines.append(f"# setting {st.label!r}: {len(plan.cells) * plan.repeats} runs")
        for r in range(ranks):
            cmds = netem.rank_commands(iface, st, r, addrs, limit)
            if not cmds:
                lines.append(f"[rank {r}] (nothing to change)")
                continue
            lines += [f"[rank {r}] {' '.join(c)}" for c in cmds]
            lines.append(f"[rank {r}] ... runs ..., then: tc qdisc del dev {iface} root   "
                         "(or the saved root qdisc put back, if it was not the kernel's default)")
    return lines


# ---------------------------------------------------------------------------------------------- one rank


def _fault(rank: int, i: int) -> None:
    spec = os.environ.get("PIPESIM_SWEEP_FAULT")
    if not spec:
        return
    kind, r, k = spec.split(":")
    if int(r) == rank and int(k) == i:
        if kind == "kill":
            os.kill(os.getpid(), 9)
        elif kind == "term":
            os.kill(os.getpid(), 15)
            time.sleep(60)   # the guard's signal thread ends the process
        elif kind == "hang":
            time.sleep(10 ** 6)


def _fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else (f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s")


def make_shaper(ns: argparse.Namespace, rank: int):
    from testbed import netem
    from testbed.shaper import NetemShaper, NoShaper, TestbedShaper

    if ns.iface:
        state_dir = (ns.state_dir or netem.STATE_DIR).replace("{rank}", str(rank))
        return NetemShaper(ns.iface, rank, state_dir=state_dir, limit=ns.netem_limit,
                           log=lambda m: print(f"[rank {rank}] {m}", file=sys.stderr, flush=True))
    if ns.testbed_control:
        return TestbedShaper(ns.testbed_control, rank)
    return NoShaper()


def sweep_rank(ns: argparse.Namespace) -> int:
    """One rank of the sweep (env RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from torchrun)."""
    from runtime.cluster import JobGuard

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    say = (lambda msg: print(msg, flush=True)) if rank == 0 else (lambda msg: None)
    try:
        plan = Plan(ns)
        plan.check_world(world)
        from runtime.model import get_config, split_layers

        split_layers(get_config(ns.model).layers, plan.stages(world))
    except ValueError as e:
        print(f"pipesim sweep: error: {e}", file=sys.stderr, flush=True)
        return 2
    shaper = make_shaper(ns, rank)
    if not ns.iface and not ns.testbed_control and any(not s.is_default for s in plan.settings):
        if rank == 0:
            print("pipesim sweep: error: the grid has settings that change the network, and nothing shapes it: pass "
                  "--iface IF (the interface every machine shapes with tc netem; never guessed), or keep to "
                  "'default'", file=sys.stderr, flush=True)
        return 2
    guard = JobGuard(rank, world, shaper.close, name="pipesim sweep", op_timeout_s=ns.op_timeout).start_signals()

    import torch.distributed as dist

    from pipesim.util import backend_for
    from runtime.engine import PeerTimeout, RunConfig, prepare_process, run_cell

    out = Path(ns.out)
    base = RunConfig(model=ns.model, batch_size=ns.batch_size, steps=ns.steps, warmup=ns.warmup, device=ns.device,
                     backend=ns.backend, threads=ns.threads, op_timeout_s=ns.op_timeout)
    kw = prepare_process(base)
    from datetime import timedelta

    dist.init_process_group(backend_for(ns.device, ns.backend), rank=rank, world_size=world,
                            timeout=timedelta(seconds=ns.op_timeout), **kw)
    guard.start_heartbeat()
    guard.where = "starting"
    try:
        # ---- everyone agrees on the grid, and every machine can shape
        guard.where = "checking the arguments and interfaces"
        mine = {"fingerprint": plan.fingerprint(ns), "error": None, "address": None}
        try:
            if rank == 0:  # refused outside the current folder, as everywhere (rank 0 only: ranks may share a disk)
                output_dir(out, "--out")
            shaper.check()
            mine["address"] = shaper.address()
        except (ValueError, PermissionError, OSError, RuntimeError) as e:
            mine["error"] = str(e)
        every: list = [None] * world
        dist.all_gather_object(every, mine)
        errors = _grouped({r: m["error"] for r, m in enumerate(every) if m["error"]})
        errors += [f"rank {r} was started with other arguments than rank 0 (grid, model or steps differ)"
                   for r, m in enumerate(every) if m["fingerprint"] != every[0]["fingerprint"]]
        addresses = [m["address"] for m in every]
        if ns.iface and any(not s.is_default and any(lk is not None for lk, _ in s.clauses) for s in plan.settings):
            errors += [f"rank {r}: --iface {ns.iface} has no IPv4 address (per-link settings match peers by it)"
                       for r, a in enumerate(addresses) if a is None and not every[r]["error"]]
        if errors:
            guard.finish()
            if rank == 0:
                print("pipesim sweep: error: " + "; ".join(errors), file=sys.stderr, flush=True)
            _leave(dist)
            return 2
        # ---- rank 0 decides what is left to do
        guard.where = "reading what is already measured"
        mpath = out / "measured.jsonl"
        runs: dict[str, dict[int, dict]] = {}
        box: list = [None]
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            runs = load_runs(mpath)
            box[0] = plan.todo(runs)
        dist.broadcast_object_list(box, src=0)
        todo: list[tuple[int, list[tuple[int, str, int]]]] = box[0]
        n_todo = sum(len(items) for _, items in todo)
        say(f"sweep: {len(plan.settings)} settings x {len(plan.cells)} cells x {plan.repeats} repeats = {plan.total} runs "
            f"on {world} machines ({shaper.what}); {plan.total - n_todo} already in {mpath}, {n_todo} to do")
        done_n, t_runs, wall_sum = 0, time.monotonic(), 0.0

        def measure(si: int, batch: list[tuple[int, str, int]]) -> None:
            nonlocal done_n, wall_sum
            st = plan.settings[si]
            for r_idx, s, m in batch:
                done_n += 1
                guard.where = f"run {done_n} ({s}, {st.label!r}, mbs {m}, run {r_idx})"
                _fault(rank, done_n)
                rec = _one_run(ns, out, rank, st, s, m, r_idx, run_cell, RunConfig)
                if rank == 0 and rec is not None:
                    append_jsonl(mpath, rec, fsync=True)
                    runs.setdefault(rec["key"], {})[r_idx] = rec
                    wall_sum += rec["wall_s"]
                    eta = (n_todo - done_n) * wall_sum / done_n
                    say(f"  [run {done_n} of {n_todo}] {s:5s} {st.label:30s} mbs {m} run {r_idx}: "
                        f"{rec['median']:.4f} s (p10-p90 {rec['p10']:.4f}-{rec['p90']:.4f})  "
                        f"[{rec['wall_s']:.0f} s; ETA {_fmt_s(eta)}]")

        def tiebreaks(si: int) -> list[tuple[int, str, int]]:
            box: list = [plan.tiebreaks(si, runs) if rank == 0 else None]
            dist.broadcast_object_list(box, src=0)   # fills box[0] on every rank with rank 0's list
            return box[0]

        for si, items in todo:
            st = plan.settings[si]
            # with no passes left, tie-break runs may still be (they need the setting too)
            late = tiebreaks(si) if not items else []
            if not items and not late:
                continue
            guard.where = f"applying {st.label!r}"
            _shape(guard, dist, world, lambda st=st: shaper.apply(st, addresses), f"applying {st.label!r}")
            say(f"[setting {si + 1}/{len(plan.settings)}] {st.label!r} applied on every machine ({shaper.what})")
            dist.barrier()
            if items:
                measure(si, items)
                late = tiebreaks(si)
            if late:
                say(f"  tie-break: {len(late)} cells whose runs are more than {plan.tiebreak_pct:g}% apart")
                n_todo += len(late)
                measure(si, late)
            guard.where = f"clearing {st.label!r}"
            _shape(guard, dist, world, shaper.clear, f"clearing {st.label!r}")
        say(f"sweep done: {done_n} runs in {_fmt_s(time.monotonic() - t_runs)}; {mpath} has "
            f"{sum(len(v) for v in load_runs(mpath).values()) if rank == 0 else 0} runs. Next: pipesim compare "
            f"--profile PROFILE --measured {mpath}")
        guard.finish()
        dist.barrier()
    except PeerTimeout as e:
        guard.fail(f"while {guard.where}: {e}", blame=e.peer)
    except _ShapeError as e:
        guard.finish()
        if rank == 0:
            print(f"pipesim sweep: error: {e}", file=sys.stderr, flush=True)
        _leave(dist)
        return 1
    except Exception as e:
        guard.fail(f"while {guard.where}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    _leave(dist)
    return 0


class _ShapeError(RuntimeError):
    pass


def _shape(guard, dist, world: int, fn, what: str) -> None:
    """Every rank does ``fn`` (apply or clear); if any failed, all clear and raise, naming the ranks."""
    err = None
    with guard.lock:
        try:
            fn()
        except Exception as e:
            err = f"{type(e).__name__}: {e}" if not isinstance(e, (RuntimeError, ValueError)) else str(e)
    errs: list = [None] * world
    dist.all_gather_object(errs, err)
    bad = {r: e for r, e in enumerate(errs) if e}
    if bad:
        raise _ShapeError(f"{what} failed on {len(bad)} of {world} machines (every machine has been cleared): "
                          + "; ".join(_grouped(bad)))


def _grouped(errors: dict[int, str]) -> list[str]:
    """``rank 0, 2: message`` for each distinct message."""
    by: dict[str, list[int]] = {}
    for r, e in sorted(errors.items()):
        by.setdefault(e, []).append(r)
    return [f"rank{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))}: {e}" for e, rs in by.items()]


def _leave(dist) -> None:
    try:
        dist.destroy_process_group()
    except Exception:
        pass


def _one_run(ns, out: Path, rank: int, st: N.NetworkSetting, schedule: str, mbs: int, r_idx: int, run_cell,
             RunConfig) -> dict | None:
    from pipesim.cmd_sim import stages_per_rank
    from pipesim.schedule import VIRTUAL

    d = run_dir(out, schedule, st.label, mbs, r_idx)
    d.mkdir(parents=True, exist_ok=True)   # on every machine: each appends its own steps
    res_path = d / "results.json"
    v = stages_per_rank(ns, [schedule]) if schedule in VIRTUAL else 1
    cfg = RunConfig(schedule=schedule, stages_per_rank=v, model=ns.model, micro_batch_size=mbs, batch_size=ns.batch_size,
                    steps=ns.steps, warmup=ns.warmup, device=ns.device, backend=ns.backend, threads=ns.threads,
                    op_timeout_s=ns.op_timeout, out=str(res_path) if rank == 0 else None,
                    steps_log=str(d / "steps.jsonl"), network=st.label)
    t0 = time.time()
    if ns.verbose:
        res = run_cell(cfg)
    else:
        with open(d / f"rank{rank}.log", "w") as log, contextlib.redirect_stdout(log):
            res = run_cell(cfg)
    if rank != 0 or res is None:
        return None
    stt = res["step_time"]
    return {"key": _cell_key(schedule, st.label, mbs), "run": r_idx, "schedule": schedule, "network": st.label,
            "micro_batch_size": mbs, "batch_size": ns.batch_size, "median": stt["median"], "p10": stt["p10"],
            "p90": stt["p90"], "n": stt["n"], "wall_s": time.time() - t0, "results": str(res_path.relative_to(out)),
            "trace": None, "source": "sweep", "model": ns.model, "ranks": res["ranks"], "steps": ns.steps,
            "device": ns.device, "backend": res["backend"], **({"stages_per_rank": v} if schedule in VIRTUAL else {})}


# ---------------------------------------------------------------------------------------------- on the local testbed


def sweep_on_testbed(rank_args: list[str], ranks: int, *, timeout_s: float = 3600.0, op_timeout_s: float = 120.0,
                     log_dir=None, echo: bool = True, env: dict | None = None, testbed=None, server=None,
                     module: str = "loop.sweep"):
    """Run the sweep's ranks in the hosts of a local testbed (built in tun mode unless given),
    one torchrun node per host, shaped through a :class:`testbed.shaper.ShapeServer`.
    ``module="loop"`` runs them as ``pipesim sweep`` (the verb) instead of ``-m loop.sweep``.
    Returns the :class:`runtime.launch.LaunchResult`; raises LaunchError naming a failed rank."""
    if module == "loop":
        rank_args = ["sweep", *rank_args]
    from runtime.launch import relay_cpus_for, run_local
    from testbed import Testbed
    from testbed.shaper import ShapeServer

    with contextlib.ExitStack() as stack:
        tb = testbed if testbed is not None else stack.enter_context(
            Testbed(ranks, "default", mode="tun", relay_cpus=relay_cpus_for(ranks)))
        srv = server if server is not None else stack.enter_context(ShapeServer(tb))
        # the survivors of a failed rank need up to op_timeout to notice, clear and say who is missing
        return run_local(module, [*rank_args, "--testbed-control", srv.path], ranks, testbed=tb, torchrun=True,
                         timeout_s=timeout_s, log_dir=log_dir, echo=echo, env=env, grace_s=op_timeout_s + 15)


def sweep_errors(log_dir) -> list[str]:
    """The sweep's own error lines (``pipesim sweep: rank R: ...``) from the ranks' logs."""
    out = []
    for p in sorted(Path(log_dir).glob("rank*.log")):
        out += [ln.strip() for ln in p.read_text(errors="replace").splitlines() if ln.startswith("pipesim sweep: ")]
    return list(dict.fromkeys(out))


def _local(ns: argparse.Namespace) -> int:
    from runtime.launch import LaunchError
    from testbed import available

    plan = Plan(ns)
    plan.check_world(ns.ranks)
    from runtime.model import get_config, split_layers

    split_layers(get_config(ns.model).layers, plan.stages(ns.ranks))
    output_dir(ns.out, "--out")  # refused outside the current folder, before the testbed is looked at
    ok, why = available()
    if not ok:
        print(f"pipesim sweep: error: the local testbed is not available ({why})", file=sys.stderr)
        return 2
    rank_args = rank_argv(ns)
    log_dir = Path(ns.out).resolve() / "logs"
    try:
        sweep_on_testbed(rank_args, ns.ranks, timeout_s=ns.timeout, op_timeout_s=ns.op_timeout, log_dir=log_dir)
    except LaunchError as e:
        print(f"pipesim sweep: {e}", file=sys.stderr)
        said = sweep_errors(log_dir)
        if said:
            print("what the ranks said:\n  " + "\n  ".join(said), file=sys.stderr)
        print(f"finished runs are kept in {Path(ns.out) / 'measured.jsonl'}; run the same command again to resume",
              file=sys.stderr)
        return 1
    return 0


RANK_FLAGS = ["network", "model", "schedules", "stages_per_rank", "micro_batch_sizes", "batch_size", "steps", "warmup", "repeats",
              "tiebreak_pct", "device", "backend", "threads", "iface", "netem_limit", "state_dir", "op_timeout"]


def rank_argv(ns: argparse.Namespace) -> list[str]:
    """The arguments each rank gets from ``--local`` (``--out`` made absolute)."""
    out = ["--out", str(Path(ns.out).resolve())]
    for f in RANK_FLAGS:
        v = getattr(ns, f, None)
        if v is not None:
            out += ["--" + f.replace("_", "-"), str(v)]
    if ns.verbose:
        out.append("--verbose")
    return out


# ---------------------------------------------------------------------------------------------- the verb


def run(ns: argparse.Namespace) -> int:
    if ns.dry_run:
        plan = Plan(ns)
        if not ns.iface:
            raise ValueError("--dry-run shows the tc commands for an interface: pass --iface IF")
        addrs = [a.strip() for a in ns.addresses.split(",")] if ns.addresses else None
        print("\n".join(dry_run_lines(plan, ns.ranks, ns.iface, addrs, ns.netem_limit)))
        return 0
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rc = sweep_rank(ns)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)   # a rank leaves without interpreter finalization (gloo's threads; see runtime/__main__.py)
    if ns.local:
        return _local(ns)
    raise ValueError("say where to sweep: under torchrun on every machine, or --local on this machine's testbed.\n"
                     + TORCHRUN_HINT)


def register(sub) -> None:
    ap = sub.add_parser("sweep", help="measure a grid of network settings on real machines (torchrun; netem on --iface)",
                        description="Measure every cell of a network grid with the real runtime: each setting is "
                                    "applied with tc netem on every machine, its cells run, and it is cleared. "
                                    "Rank 0 appends each run to OUT/measured.jsonl; started again, it resumes.\n\n"
                                    + TORCHRUN_HINT, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(ap)
    ap.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m loop.sweep", description=__doc__.split("\n\n")[0],
                                 epilog=TORCHRUN_HINT, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(ap)
    ns = ap.parse_args(argv)
    try:
        return run(ns)
    except (ValueError, FileNotFoundError) as e:
        print(f"pipesim sweep: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)   # no interpreter finalization with gloo's threads about (see runtime/__main__.py)
