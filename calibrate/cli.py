"""``pipesim calibrate``: measure compute and links, write the profile (torch imported only when run)."""

from __future__ import annotations

import argparse
import os
import sys

from pipesim import limits, network
from pipesim.util import output_dir, output_path

from .overhead import OVERHEAD_LAUNCHES

TORCHRUN_HINT = ("on a cluster, start one rank per machine with torchrun, e.g.\n"
                 "  torchrun --nnodes 3 --nproc-per-node 1 --node-rank R --master-addr HOST0 --master-port 29500 \\\n"
                 "      -m calibrate.worker --model gpt3-small --micro-batch-sizes 1,2,4 --iface eth0 --out profile.json\n"
                 "(rank 0 writes the profile; --iface: the window probe puts a delay on it with tc netem); "
                 "on this machine use --local --ranks N")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate", help="measure compute and links, write a profile",
        description="Measure each stage's forward/backward time per micro-batch size and each link's latency "
                    "and bandwidth, and write the profile that 'pipesim simulate' reads.\n\n" + TORCHRUN_HINT,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--local", action="store_true", help="all ranks on this machine (testbed hosts with --network)")
    p.add_argument("--ranks", type=int, default=3, help="number of ranks = stages, with --local (default 3)")
    p.add_argument("--network", default=None, help="with --local: run the ranks in the testbed under this setting")
    p.add_argument("--window-probe", action="append", default=None, metavar="SETTING",
                   help="with --local: re-measure links under this delayed setting (e.g. 'delay 10ms') to fit "
                        "the single-connection cap (window_bytes); give it twice with different delays to tell a "
                        "window from a capacity ceiling")
    p.add_argument("--shaped-probe", default=None, metavar="RATES",
                   help="with --local: probe the CPU a rate cap without a delay costs the ranks on the testbed, "
                        "at these rates (e.g. '5Gbps,2Gbps,1Gbps', or 'seed' for the seed grid's caps); the "
                        "simulator charges it where a setting caps a link without a delay (host.shaped_cpu)")
    p.add_argument("--no-overhead-probe", action="store_true",
                   help="with --local: skip the short runtime runs that measure its CPU time per action (overhead_s)")
    p.add_argument("--overhead-method", choices=["cpu", "trace"], default="cpu",
                   help="with --local: the overhead probe's estimate the profile carries: CPU accounting (default) or "
                        "wall time in context from the probe's traces (both are recorded in raw.overhead_probe)")
    p.add_argument("--overhead-launches", type=int, default=OVERHEAD_LAUNCHES, metavar="N",
                   help="with --local: launches of each (schedule, micro-batch size) in the overhead probe; the "
                        "profile takes their median (default %(default)s)")
    p.add_argument("--timeout", type=float, default=900, help="seconds before a hung calibration is stopped")
    p.add_argument("--log-dir", default=None, help="keep each rank's log here")
    from .cluster import add_args as add_cluster_args
    from .worker import add_common_args

    add_common_args(p)
    add_cluster_args(p, with_probe_flags=False)
    p.set_defaults(func=_run)


def parse_rates(text: str) -> list[float]:
    """``--shaped-probe``: comma-separated rates ('5Gbps,200Mbps') or 'seed' (the seed grid's caps without
    a delay), as bit/s; ValueError naming the flag on anything else."""
    from .shaped import rate_of, rates_of

    if text.strip().lower() == "seed":
        return rates_of(network.parse_grid("seed"))
    out = []
    for part in (x.strip() for x in text.split(",")):
        if part:
            try:
                out.append(rate_of(part))
            except ValueError as e:
                raise ValueError(f"--shaped-probe: {part!r} is not a rate ({e})") from None
    if not out:
        raise ValueError(f"--shaped-probe: no rate in {text!r}; write e.g. '5Gbps,2Gbps,1Gbps' or 'seed'")
    return sorted(set(out))


def _run(args) -> int:
    from .worker import check_args

    check_args(args)   # ValueError -> "pipesim calibrate: error: ..."
    if not args.local:
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:   # started by torchrun: be a worker
            from .worker import run

            args.one_machine, args.links_only, args.no_summary, args.network_label = False, False, False, "default"
            return run(args)
        raise ValueError("say where to calibrate: --local --ranks N for this machine, or\n" + TORCHRUN_HINT)
    if args.iface:
        raise ValueError("--iface is for calibrating under torchrun (netem on each machine's interface); with --local "
                         "the window probe runs on the local testbed")
    limits.RANKS.check(args.ranks, "--ranks")
    limits.TIMEOUT_S.check(args.timeout, "--timeout")
    for flag, text in [("--network", args.network)] + [("--window-probe", w) for w in args.window_probe or []]:
        if text is not None:  # the testbed shapes any pair of hosts
            try:
                network.parse(text).check_stages(args.ranks, neighbours_only=False, what="ranks")
            except ValueError as e:
                raise ValueError(f"{flag}: {e}") from None
    shaped = parse_rates(args.shaped_probe) if args.shaped_probe else []
    output_path(args.out, "--out")
    if os.path.exists(args.out) and not args.force:
        raise FileExistsError(f"{args.out} exists; pass --force to overwrite it")
    if args.log_dir:
        output_dir(args.log_dir, "--log-dir")
    from runtime.launch import LaunchError

    from .local import run_local_calibration
    from .summary import summary

    try:
        prof = run_local_calibration(args.ranks, args.model, args.mbs, args.out, network=args.network,
                                     force=args.force, repeats=args.repeats, warmup=args.warmup, rounds=args.rounds,
                                     link_repeats=args.link_repeats, threads=args.threads,
                                     window_probe=args.window_probe, contention_s=args.contention_s, link_max_bytes=args.link_max_bytes,
                                     timeout_s=args.timeout, log_dir=args.log_dir,
                                     overhead_probe=not args.no_overhead_probe, overhead_method=args.overhead_method,
                                     overhead_launches=args.overhead_launches, shaped_rates=shaped,
                                     extra_args=["--timing", args.timing, "--device", args.device, "--backend", args.backend,
                                                 "--dtype", args.dtype, "--stages-per-rank", str(args.stages_per_rank)]
                                     + (["--split-backward"] if args.split_backward else []))
    except LaunchError as e:
        print(f"pipesim calibrate: error: {e}", file=sys.stderr)
        return 1
    print(summary(prof))
    print(f"\nwrote {args.out}")
    return 0
