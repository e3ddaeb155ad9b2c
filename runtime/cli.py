"""The ``pipesim run`` verb and the per-rank argument parser (no torch at import time).

``pipesim run --local --ranks 3 ...`` starts the ranks on this machine (or inside the
local testbed's hosts with ``--network``) through :func:`runtime.launch.run_local`;
each rank runs ``python -m runtime <rank args>``, the same entry point that torchrun
uses on a real cluster.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from pipesim import limits as L
from pipesim.network import parse as parse_network
from pipesim.network import shorten
from pipesim.schedule import GENERATORS, VIRTUAL, check_shape
from pipesim.util import output_dir, output_path

DEFAULT_CPU_PRESET = "cpu-small"  # mirrors runtime.model.DEFAULT_CPU_PRESET (importing it would import torch)
DEFAULT_STAGES_PER_RANK = 2  # as pipesim simulate's --stages-per-rank (pipesim.cmd_sim.DEFAULT_STAGES_PER_RANK)


def stages_per_rank(ns: argparse.Namespace) -> int:
    """The virtual stages per rank a run uses: ``--stages-per-rank`` (refused for a schedule that
    runs one stage per rank, unless 1), else 2 for interleaved schedules and 1 for the others."""
    v = getattr(ns, "stages_per_rank", None)
    if v is None:
        return DEFAULT_STAGES_PER_RANK if ns.schedule in VIRTUAL else 1
    if v < 1:
        raise ValueError(f"--stages-per-rank must be a positive integer, got {v}")
    if v != 1 and ns.schedule not in VIRTUAL:
        raise ValueError(f"--stages-per-rank {v} needs a schedule with several stages per rank ({', '.join(VIRTUAL)})")
    return v


def add_rank_args(ap: argparse.ArgumentParser) -> None:
    """Arguments every rank takes (shared by ``pipesim run`` and ``python -m runtime``)."""
    ap.add_argument("--model", default=DEFAULT_CPU_PRESET, help="model preset (default %(default)s)")
    ap.add_argument("--schedule", default="1f1b", choices=list(GENERATORS))
    ap.add_argument("--stages-per-rank", type=int, default=None, metavar="V",
                    help=f"virtual stages per rank for {', '.join(VIRTUAL)} (default {DEFAULT_STAGES_PER_RANK}; "
                         "the other schedules run one)")
    ap.add_argument("--micro-batch-size", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4, help="default %(default)s: the CPU preset's batch (README)")
    ap.add_argument("--steps", type=int, default=5, help="measured steps (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up steps, not measured (default %(default)s)")
    ap.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0, help="parameter seed")
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL)")
    ap.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"],
                    help="auto: nccl with --device cuda, else gloo (gloo on cuda stages messages through host memory)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads per rank (default 1)")
    ap.add_argument("--recv-ahead", type=int, default=-1,
                    help="lowering's recv_ahead; -1 = backend default (gloo: all receives at step start, nccl: 0)")
    ap.add_argument("--recv-stamp", default="watcher", choices=["watcher", "inline"],
                    help="watcher (default): a thread per peer stamps exact arrival times; inline: the compute thread "
                         "waits itself (less hand-off overhead, arrival stamps are upper bounds)")
    ap.add_argument("--op-timeout", type=float, default=120.0,
                    help="seconds a rank waits for any peer operation before failing (default %(default)s)")
    ap.add_argument("--trace", default=None, help="trace file: .json (Chrome), .csv, or another suffix for both")
    ap.add_argument("--out", default=None, help="results JSON (written by rank 0)")
    ap.add_argument("--steps-log", default=None, help="JSONL file, one line per rank per completed step")
    ap.add_argument("--save-params", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--network", default=None, help="network setting (recorded; applied by the launcher)")


RANK_FLAGS = ["model", "schedule", "stages_per_rank", "micro_batch_size", "batch_size", "steps", "warmup", "optimizer", "lr", "seed",
              "device", "backend", "threads", "recv_ahead", "recv_stamp", "op_timeout", "trace", "out", "steps_log", "save_params", "network"]


def rank_argv(ns: argparse.Namespace) -> list[str]:
    out = []
    for f in RANK_FLAGS:
        v = getattr(ns, f, None)
        if v is not None:
            out += ["--" + f.replace("_", "-"), str(v)]
    return out


def check_rank_args(ns: argparse.Namespace) -> None:
    """Refuse, naming the flag, what every rank would refuse (or fail on inside torch): checked by
    the launcher before any process starts, and by each rank again (no torch needed)."""
    stages_per_rank(ns)
    L.MICRO_BATCH_SIZE.check(ns.micro_batch_size, "--micro-batch-size")
    L.BATCH_SIZE.check(ns.batch_size, "--batch-size")
    if ns.batch_size % ns.micro_batch_size:
        raise ValueError(f"--batch-size {ns.batch_size} is not a multiple of --micro-batch-size {ns.micro_batch_size}")
    L.RUN_STEPS.check(ns.steps, "--steps")
    L.WARMUP_STEPS.check(ns.warmup, "--warmup")
    L.THREADS.check(ns.threads, "--threads")
    L.TIMEOUT_S.check(ns.op_timeout, "--op-timeout")
    L.LEARNING_RATE.check(ns.lr, "--lr")
    if ns.recv_ahead < -1:
        raise ValueError(f"--recv-ahead must be -1 (the backend's default) or an integer >= 0, got {ns.recv_ahead}")
    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", ns.device):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {shorten(ns.device)!r}")
    if ns.backend == "nccl" and not ns.device.startswith("cuda"):
        raise ValueError("--backend nccl needs --device cuda")
    # --network is only recorded by a rank (a label, e.g. the seed table's "default (about 0.1ms; ...)");
    # the launcher checks and applies it


RANK_OUTPUTS = ("out", "steps_log", "trace")
"""The files a rank writes: rank 0 ``--out`` and ``--trace`` at the end, every rank ``--steps-log`` each step."""


def check_rank_outputs(ns: argparse.Namespace) -> None:
    """Refuse, naming the flag, an output path whose folder is missing and not under the current
    folder; a missing folder under it is made (:func:`pipesim.util.output_path`, every command's rule).

    Every rank checks all of them on its own argv, before ``init_process_group``
    (:func:`config_from_args`, then ``runtime.engine.run_rank``): the ranks get the same
    argv, so each refuses with the same line and none starts work, whichever rank
    would have written the file."""
    for f in RANK_OUTPUTS:
        if getattr(ns, f, None):
            output_path(getattr(ns, f), "--" + f.replace("_", "-"))


def config_from_args(ns: argparse.Namespace):
    """The run's configuration from a rank's arguments, after :func:`check_rank_args` and
    :func:`check_rank_outputs` (the latter may create a missing folder under the current one)."""
    check_rank_args(ns)
    check_rank_outputs(ns)
    from runtime.engine import RunConfig

    return RunConfig(schedule=ns.schedule, stages_per_rank=stages_per_rank(ns), model=ns.model, micro_batch_size=ns.micro_batch_size,
                     batch_size=ns.batch_size, steps=ns.steps, warmup=ns.warmup, optimizer=ns.optimizer, lr=ns.lr,
                     seed=ns.seed, device=ns.device, backend=ns.backend, threads=ns.threads, recv_ahead=ns.recv_ahead, recv_stamp=ns.recv_stamp,
                     op_timeout_s=ns.op_timeout, trace=ns.trace, out=ns.out, steps_log=ns.steps_log,
                     save_params=ns.save_params, network=ns.network)


def register(subparsers) -> None:
    ap = subparsers.add_parser("run", help="run real pipeline-parallel training steps (torch)",
                               description="Run real training steps of a GPT split over ranks; prints rank 0's step time.")
    ap.add_argument("--local", action="store_true", required=True, help="start all ranks on this machine")
    ap.add_argument("--ranks", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0, help="whole-run timeout in seconds (default %(default)s)")
    ap.add_argument("--log-dir", default=None, help="per-rank logs, step log and results (default: a new temp dir)")
    ap.add_argument("--quiet", action="store_true", help="do not relay the ranks' output")
    add_rank_args(ap)
    ap.set_defaults(func=_run)


def _check_run_args(ns: argparse.Namespace) -> None:
    """Everything ``pipesim run`` can refuse, before it makes a folder or starts a process."""
    L.RANKS.check(ns.ranks, "--ranks")
    L.TIMEOUT_S.check(ns.timeout, "--timeout")
    check_rank_args(ns)
    if ns.network is not None:  # the testbed shapes any pair of hosts, not only pipeline neighbours
        parse_network(ns.network).check_stages(ns.ranks, neighbours_only=False, what="ranks")
    from runtime.model import get_config, split_layers  # imports torch

    try:
        layers = get_config(ns.model).layers
    except ValueError as e:
        raise ValueError(f"--model: {e}") from None
    v = stages_per_rank(ns)
    try:
        split_layers(layers, ns.ranks * v)
    except ValueError:
        if v == 1:
            raise ValueError(f"--ranks must be at most the layers of --model {ns.model} ({layers}), got {ns.ranks}") from None
        raise ValueError(f"--ranks x --stages-per-rank ({ns.ranks} x {v}) must be at most the layers of --model "
                         f"{ns.model} ({layers})") from None
    try:
        check_shape(ns.schedule, ns.ranks, ns.batch_size // ns.micro_batch_size, v)
    except ValueError as e:
        raise ValueError(f"{e} (--batch-size {ns.batch_size} / --micro-batch-size {ns.micro_batch_size})") from None
    config_from_args(ns)  # last: checks the output paths, and may create a folder under the current one


def _run(ns: argparse.Namespace) -> int:
    import tempfile

    from runtime.launch import LaunchError, run_local

    _check_run_args(ns)  # fail fast, here, on what every rank would reject
    log_dir = output_dir(ns.log_dir, "--log-dir") if ns.log_dir else Path(tempfile.mkdtemp(prefix="pipesim-run-"))
    print(f"pipesim run: logs in {log_dir}", file=sys.stderr)
    if ns.out is None:
        ns.out = str(log_dir / "results.json")
    if ns.steps_log is None:
        ns.steps_log = str(log_dir / "steps.jsonl")
    for f in ("out", "steps_log", "trace"):
        if getattr(ns, f):
            setattr(ns, f, str(Path(getattr(ns, f)).resolve()))
    if ns.op_timeout >= ns.timeout:
        ns.op_timeout = max(1.0, ns.timeout / 2)
    t0 = time.time()
    try:
        run_local("runtime", rank_argv(ns), ns.ranks, network=ns.network, timeout_s=ns.timeout, log_dir=log_dir,
                  echo=not ns.quiet)
    except LaunchError as e:
        print(f"pipesim run: {e}", file=sys.stderr)
        print(f"pipesim run: completed steps so far are in {ns.steps_log}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # e.g. the testbed cannot be built here
        print(f"pipesim run: error: {e}", file=sys.stderr)
        return 2
    res = json.loads(Path(ns.out).read_text())
    s = res["step_time"]
    print(f"{res['schedule']} {res['model']['name']} ranks {res['ranks']} batch {res['batch_size']} "
          f"micro-batch {res['micro_batch_size']} network {ns.network or 'default'}: "
          f"rank 0 step time median {s['median']:.4f} s (p10 {s['p10']:.4f}, p90 {s['p90']:.4f}, "
          f"min {s['min']:.4f}, max {s['max']:.4f}, n {s['n']}); wall {time.time() - t0:.1f} s")
    print(f"results: {ns.out}  steps: {ns.steps_log}" + (f"  trace: {', '.join(res.get('trace_files', []))}"
                                                          if ns.trace else ""))
    return 0
