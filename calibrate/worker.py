"""Per-rank calibration worker: ``python -m calibrate.worker`` (one rank per stage).

Run under torchrun on a cluster (one rank per machine)::

    torchrun --nnodes 3 --nproc-per-node 1 --node-rank R --master-addr HOST0 --master-port 29500 \\
        -m calibrate.worker --model gpt3-small --micro-batch-sizes 1,2,4 --out profile.json

or through ``pipesim calibrate --local`` (all ranks on this machine). Rank ``r`` owns
stage ``r``. Phases, separated by barriers so that only the ranks being measured work:

1. compute: the ranks take turns; each times forward/backward of its own stage for
   every micro-batch size and its optimizer step, with the other ranks idle. Asked for,
   also: ``--split-backward``, the backward split into B (input gradient) and W (weight
   gradient) as the runtime runs ZB-H1 (``backward_input_s``/``backward_weight_s``);
   ``--stages-per-rank V``, each of the rank's V virtual stages of interleaved 1F1B
   (the model cut into ranks x V stages, stage s on rank s % ranks), into the profile's
   ``virtual_stages`` (with their own B and W under ``--split-backward``);
2. host contention (``--one-machine`` only, all ranks on one machine): for k = 2..N, ranks
   0..k-1 run forward+backward at the same time; the slowdown is the per-iteration
   time over the time alone;
3. links: for each neighbour pair and direction (and, with ``--stages-per-rank`` > 1,
   the wrap-around pair last rank <-> rank 0 that interleaved 1F1B uses), ping-pong latency and one-way
   transfer time over message sizes from 4 bytes to beyond the activation size,
   fitted to ``latency + bytes*8/bandwidth``.

Rank 0 gathers everything and writes the profile atomically (refusing to overwrite an
existing file unless ``--force``), then prints a summary table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import socket
import sys
import time

from pipesim.util import backend_for, parse_int_list


def parse_sizes(text: str) -> list[int]:
    return parse_int_list(text, "--micro-batch-sizes", unique_sorted=True)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m calibrate.worker",
                                 description="One calibration rank (run under torchrun or pipesim calibrate --local).")
    add_common_args(ap)
    from . import cluster

    cluster.add_args(ap)   # under torchrun: --iface, --window-probe, --no-overhead-probe
    ap.add_argument("--one-machine", action="store_true",
                    help="all ranks share this machine: also measure host contention (profile 'host')")
    ap.add_argument("--links-only", action="store_true", help="measure links only (no compute); write raw JSON")
    ap.add_argument("--network-label", default="default", help="the network setting the ranks run under (recorded)")
    ap.add_argument("--no-summary", action="store_true", help="do not print the summary table (the caller does)")
    return ap


def add_common_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default=None, help="model preset (default: the runtime's CPU preset)")
    ap.add_argument("--micro-batch-sizes", default="1,2,4", help="comma-separated, e.g. 1,2,4")
    ap.add_argument("--out", required=True, help="profile JSON to write")
    ap.add_argument("--force", action="store_true", help="overwrite an existing profile")
    ap.add_argument("--repeats", type=int, default=30, help="timed repeats per measurement (default 30)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="the ranks take turns this many times; the repeats are split over the rounds (default 3)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed warm-up iterations (default 3)")
    ap.add_argument("--link-repeats", type=int, default=15, help="timed round trips per message size (default 15)")
    ap.add_argument("--link-max-bytes", type=int, default=16 << 20,
                    help="largest link message at least this (and at least twice the activation; default 16 MiB)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank (default 1, as the runtime)")
    ap.add_argument("--timing", default="wall", choices=["wall", "cpu"],
                    help="compute times: wall clock medians (default), or on CPU this thread's CPU time, which "
                         "leaves out time other processes took the core (reproducible on a shared machine)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--contention-s", type=float, default=0.6,
                    help="seconds per host-contention level and micro-batch size (default 0.6)")
    ap.add_argument("--split-backward", action="store_true",
                    help="also time the backward split into B (input gradient) and W (weight gradient), as the "
                         "runtime runs zbh1: the profile's backward_input_s / backward_weight_s")
    ap.add_argument("--stages-per-rank", type=int, default=1, metavar="V",
                    help="also time each of the V virtual stages a rank runs under interleaved1f1b (the model cut "
                         "into ranks x V stages, loop placement): the profile's virtual_stages (default 1: none)")


def check_args(args) -> None:
    """Clear errors for bad values before anything starts."""
    args.mbs = parse_sizes(args.micro_batch_sizes)
    for name in ("repeats", "link_repeats", "threads", "rounds"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.link_max_bytes < 4:
        raise ValueError(f"--link-max-bytes must be >= 4, got {args.link_max_bytes}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if not args.contention_s > 0:
        raise ValueError(f"--contention-s must be > 0, got {args.contention_s}")
    if args.stages_per_rank < 1:
        raise ValueError(f"--stages-per-rank must be >= 1, got {args.stages_per_rank}")
    from runtime.model import DEFAULT_CPU_PRESET, get_config

    args.model = args.model or DEFAULT_CPU_PRESET
    args.cfg = get_config(args.model)   # ValueError naming the presets


# ---------------------------------------------------------------------- main


def _say(rank: int, msg: str) -> None:
    if rank == 0:
        print(msg, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
    except ValueError as e:
        print(f"calibrate.worker: error: {e}", file=sys.stderr)
        return 2
    return run(args)


def run(args) -> int:
    import torch
    import torch.distributed as dist

    from pipesim.util import output_path, write_json_atomic
    from runtime.model import build_stage, build_stages, split_layers

    from . import measure
    from .fit import message_sizes

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cfg = args.cfg
    v = args.stages_per_rank
    if cfg.layers < world * v:
        raise SystemExit(f"calibrate.worker: error: model {cfg.name} has {cfg.layers} layers, "
                         f"cannot split over {world} ranks" + (f" x {v} stages per rank" if v > 1 else ""))
    torch.set_num_threads(args.threads)
    if args.device == "auto":
        dev_type = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        dev_type = args.device
    if dev_type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("calibrate.worker: error: --device cuda but CUDA is not available")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    backend = backend_for(dev_type, args.backend)
    dtype = getattr(torch, args.dtype)
    if "MASTER_ADDR" not in os.environ:   # a single rank run by hand
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29517")
    if backend == "gloo":
        _gloo_interface()
    dist.init_process_group(backend=backend, rank=rank, world_size=world,
                            device_id=device if backend == "nccl" else None)
    clock = measure.Clock(device)
    # gloo moves CPU tensors only: with CUDA compute under gloo the links carry CPU tensors (staged copies)
    link_device = device if backend == "nccl" else torch.device("cpu")
    link_clock = measure.Clock(link_device)

    # refuse to overwrite before spending any time (rank 0 decides, everybody exits)
    verdict: list[str | None] = [None]
    if rank == 0:
        try:
            output_path(args.out, "--out")  # a missing folder is made only under the current one, as everywhere
        except ValueError as e:
            verdict[0] = str(e)
    if rank == 0 and not verdict[0] and os.path.exists(args.out) and not args.force:
        verdict[0] = f"{args.out} exists; pass --force to overwrite it"
    dist.broadcast_object_list(verdict, src=0)
    if verdict[0]:
        if rank == 0:
            print(f"calibrate.worker: error: {verdict[0]}", file=sys.stderr)
        dist.destroy_process_group()
        return 2

    partition = split_layers(cfg.layers, world)
    stage = build_stage(cfg, world, rank).to(device=device, dtype=dtype)
    # interleaved 1F1B: the virtual stages this rank runs (loop placement: stage s on rank s % world)
    vstages = []
    if v > 1:
        _, cut = build_stages(cfg, world * v)
        vstages = [cut[k * world + rank].to(device=device, dtype=dtype) for k in range(v)]
    n_comp = 0 if args.links_only else world * max(1, min(args.rounds, args.repeats)) + 1
    n_cont = (world - 1) if (args.one_machine and not args.links_only) else 0
    # links: both directions of each neighbour pair; with virtual stages (loop placement) also the
    # wrap-around pair, last rank <-> rank 0, that carries messages between stage k*world - 1 and k*world
    pairs = [(s, s + 1) for s in range(world - 1)] + ([(world - 1, 0)] if v > 1 and world > 2 else [])
    n_link = 2 * len(pairs)
    total = n_comp + n_cont + n_link
    step = [0]

    def progress(msg: str) -> None:
        step[0] += 1
        _say(rank, f"[{step[0]}/{total}] {msg}")

    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    if rank == 0 and load_start > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load_start:.1f} on {os.cpu_count()} cores before starting: other processes "
              "are running and the timings will carry their noise (see raw.settings.loadavg)", flush=True)
    _say(rank, f"calibrating {cfg.name} over {world} ranks ({'one machine' if args.one_machine else 'one rank per machine'}), "
               f"backend {backend}, device {dev_type}, dtype {args.dtype}, micro-batch sizes "
               f"{','.join(map(str, args.mbs))}, network {args.network_label!r}")

    mine: dict = {"rank": rank, "host": socket.gethostname(), "cpu": os.environ.get("PIPESIM_CPU")}
    # ---------------------------------------------------------------- 1. compute, one rank at a time
    benches = {}
    if not args.links_only:
        split = args.split_backward
        benches = {m: measure.StageBench(stage, cfg, m, device, dtype, split=split) for m in args.mbs}
        vbenches = {(j, m): measure.StageBench(vs, cfg, m, device, dtype, split=split)
                    for j, vs in enumerate(vstages) for m in args.mbs}
        vpooled: dict = {k: {"forward": [], "backward": [], "cpu": []} for k in vbenches}
        optimizer = torch.optim.AdamW(stage.parameters(), lr=1e-3, weight_decay=0.0)   # as the runtime
        # rounds of turns (stage 0, 1, .., N-1, 0, 1, ..): a disturbance that lasts a while lands on
        # several stages a little rather than on one stage entirely
        rounds = max(1, min(args.rounds, args.repeats))
        per_round = [args.repeats // rounds + (1 if i < args.repeats % rounds else 0) for i in range(rounds)]
        pooled: dict[int, dict[str, list]] = {m: {"forward": [], "backward": [], "cpu": []} for m in args.mbs}
        for rnd in range(rounds):
            for s in range(world):
                progress(f"compute of stage {s} (layers {partition[s][0]}..{partition[s][1] - 1}), micro-batch "
                         f"sizes {','.join(map(str, args.mbs))}, round {rnd + 1} of {rounds}, others idle")
                dist.barrier()
                if rank == s:
                    got = measure.time_stages(benches, clock, args.warmup if rnd == 0 else 1, per_round[rnd])
                    for m, d in got.items():
                        for k, xs in d.items():
                            pooled[m].setdefault(k, []).extend(xs)
                    if vbenches:
                        got = measure.time_stages(vbenches, clock, args.warmup if rnd == 0 else 1, per_round[rnd])
                        for key, d in got.items():
                            for k, xs in d.items():
                                vpooled[key].setdefault(k, []).extend(xs)
                dist.barrier()
        progress("optimizer step of each stage (one rank at a time)")
        for s in range(world):
            dist.barrier()
            if rank == s:
                opt_med, opt_iqr = measure.time_optimizer(stage, optimizer, clock, args.warmup, args.repeats)
                mine["optimizer_s"] = opt_med
                mine["optimizer_spread_s"] = opt_iqr
            dist.barrier()
        comp = {m: measure.summarize(pooled[m], args.timing) for m in args.mbs}
        for m, r in comp.items():
            r["activation_bytes"] = benches[m].output_bytes()
            r["gradient_bytes"] = benches[m].input_grad_bytes()
        mine["compute"] = comp
        if vbenches:
            virt = []
            for j in range(v):
                vc = {m: measure.summarize(vpooled[(j, m)], args.timing) for m in args.mbs}
                for m, r in vc.items():
                    r["activation_bytes"] = vbenches[(j, m)].output_bytes()
                    r["gradient_bytes"] = vbenches[(j, m)].input_grad_bytes()
                virt.append(vc)
            mine["virtual"] = virt
    # ---------------------------------------------------------------- 2. host contention (one machine)
    if n_cont:
        mine["contention"] = {}
        for k in range(2, world + 1):
            progress(f"host contention: {k} ranks computing at once")
            for m in args.mbs:
                dist.barrier()
                if rank < k:
                    mine["contention"].setdefault(k, {})[m] = measure.time_concurrent(benches[m], clock,
                                                                                      args.contention_s)
                dist.barrier()
    # ---------------------------------------------------------------- 3. links
    act_max = max((r["activation_bytes"] for r in mine.get("compute", {}).values()), default=0)
    acts: list = [None] * world
    dist.all_gather_object(acts, act_max)   # every rank's act_max (an int)
    if args.links_only:
        acts = [4 * max(args.mbs) * cfg.seq_len * cfg.d_model] * world   # fp32 activation of the largest micro-batch
    sizes = message_sizes(max(2 * max(acts), args.link_max_bytes))
    mine["links"] = []
    cpus: list = [None] * world
    pinned = os.environ.get("PIPESIM_CPU")   # set by the local launcher (runtime.launch.run_local)
    dist.all_gather_object(cpus, int(pinned) if pinned and pinned.isdigit() and args.one_machine else None)
    for a, b in pairs:
        plan = measure.apart_plan(cpus, a, b)   # two ranks on one core: probed apart (calibrate.measure)
        for src, dst in ((a, b), (b, a)):
            progress(f"link {src}->{dst}: latency and {len(sizes)} message sizes "
                     f"({sizes[0]} B .. {sizes[-1] / 2**20:.1f} MiB)"
                     + (f", rank {plan[0]} moved from core {plan[2]} to core {plan[1]} (ranks {a} and {b} share "
                        "a core)" if plan else ""))
            dist.barrier()
            with measure.moved_to(plan[1] if plan and rank == plan[0] else None) as moved:
                dist.barrier()   # both sides in place before the first message
                link = measure.measure_direction(rank, src, dst, sizes, dtype, link_device, args.warmup,
                                                 args.link_repeats, link_clock)
            if plan:
                took: list = [None] * world
                dist.all_gather_object(took, moved)
                if link is not None:
                    link["shared_core"] = {"core": plan[2], "moved_rank": plan[0], "to_core": plan[1],
                                           "moved": bool(took[plan[0]])}
                    if not took[plan[0]]:
                        print(f"warning: link {src}->{dst}: could not move rank {plan[0]} to core {plan[1]} (is the "
                              "CPU set restricted?); probed on the shared core, where the round trip times the "
                              "scheduler (milliseconds) rather than the link", flush=True)
            if link is not None:
                mine["links"].append(link)
            dist.barrier()

    from . import cluster

    if cluster.active(args):   # one rank per machine (torchrun): the window probe, with netem on --iface
        mine["cluster_window_probe"] = cluster.window_probe(args, rank, world, sizes, dtype, link_device, link_clock)
    gathered: list = [None] * world
    dist.gather_object(mine, gathered if rank == 0 else None, dst=0)   # rank 0: every rank's ``mine``
    rc = 0
    if rank == 0:
        loadavg = {"start": load_start, "end": os.getloadavg()[0], "cores": os.cpu_count()}
        if args.links_only:   # raw link measurements for merge_window_probe, not a profile
            write_json_atomic(args.out, assemble_links(args, gathered, loadavg, time.perf_counter() - t_start),
                              force=args.force)
        else:
            prof = assemble(args, gathered, cfg, partition, backend, device, time.perf_counter() - t_start, loadavg)
            if cluster.active(args):   # merge the window probe; run the overhead probe in-process
                prof, rc = cluster.finish(prof, gathered, args, world)
            prof.save(args.out, force=args.force)
            from pipesim.profile import from_json

            from .summary import summary

            checked = from_json(prof.to_json(), origin=str(args.out))   # what the simulator will read
            if not args.no_summary:
                print(summary(checked), flush=True)
        print(f"wrote {args.out} ({time.perf_counter() - t_start:.1f}s)", flush=True)
    elif cluster.active(args):
        cluster.serve(args)   # the overhead probe's cells, as rank 0 picks them
    dist.barrier()
    dist.destroy_process_group()
    return rc


def _gloo_interface() -> None:
    """Make gloo use the interface that reaches MASTER_ADDR (unless GLOO_SOCKET_IFNAME is set).

    Gloo advertises the address its host name resolves to; inside a testbed namespace
    (or on a host whose name maps to 127.0.0.1) that is loopback and the peers cannot
    connect. Nothing changes when the master is loopback.
    """
    master = os.environ.get("MASTER_ADDR", "127.0.0.1")
    if os.environ.get("GLOO_SOCKET_IFNAME") or master in ("127.0.0.1", "localhost", "::1"):
        return
    import subprocess

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((socket.gethostbyname(master), 9))
            local_ip = s.getsockname()[0]
        out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[3].split("/")[0] == local_ip:
            os.environ["GLOO_SOCKET_IFNAME"] = parts[1].split("@")[0]
            return


# ---------------------------------------------------------------------- profile document


def describe_device(device, backend: str, dtype_name: str, threads: int) -> dict:
    import torch

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return {"name": name, "type": device.type, "backend": backend, "dtype": dtype_name,
            "threads_per_rank": threads, "torch": torch.__version__,
            **({"cuda": torch.version.cuda} if device.type == "cuda" else {})}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _settings(args, wall_s: float, loadavg: dict) -> dict:
    return {"repeats": args.repeats, "warmup": args.warmup, "link_repeats": args.link_repeats,
            "network": args.network_label, "spread": "interquartile range (p75 - p25)",
            "rounds": args.rounds, "timing": args.timing,
            **({"split_backward": True} if getattr(args, "split_backward", False) else {}),
            **({"stages_per_rank": args.stages_per_rank} if getattr(args, "stages_per_rank", 1) > 1 else {}),
            "optimizer": "torch.optim.AdamW(lr=1e-3, weight_decay=0), as the runtime", "wall_s": round(wall_s, 2),
            "link_method": "ping-pong of n bytes out and 4 bytes back, minus half a 4-byte round trip, "
                           "lower quartile of the repeats; latency = half the 4-byte round trip; bandwidth = "
                           "least squares on seconds with that latency fixed (the largest messages "
                           "set it); errors relative, over all sizes; two ranks pinned to one core are probed "
                           "with one of them moved to another rank's core (links[].shared_core): on one core the "
                           "ping-pong times the scheduler, and the sharing is host.placement's to model",
            "loadavg_1min": loadavg}


def _fit_links(gathered: list[dict]):
    """Each measured direction fitted to latency + bytes*8/bandwidth: (Links, their raw records)."""
    from pipesim.limits import LINK_BANDWIDTH_BPS as BW
    from pipesim.profile import Link

    from .fit import LinkFit, fit_link

    links, raw_links = [], []
    for g in gathered:
        for r in g["links"]:
            pts = [(p["bytes"], p["one_way_s"]) for p in r["points"]]
            try:
                fit = fit_link(pts, latency_s=r["small_rtt_p25_s"] / 2, weighting="absolute")
            except ValueError as e:
                # never lose a whole calibration to one noisy link: fall back and say so
                n_big, t_big = pts[-1]
                lat = r["small_rtt_p25_s"] / 2
                fit = LinkFit(lat, n_big * 8 / max(t_big - lat, t_big * 0.5), None, None)
                shown = ", ".join(f"{n} B: {t * 1e6:.1f} us" for n, t in pts)
                print(f"warning: link {r['src']}->{r['dst']}: {e}; using half the small round trip and the largest "
                      f"message's throughput instead (one-way times: {shown}); is the machine busy?", flush=True)
                r = {**r, "fit_failed": str(e)}
            bw = min(max(fit.bandwidth_bps, BW.lo), BW.hi)   # a profile holds no more (pipesim.limits)
            if bw != fit.bandwidth_bps:
                print(f"warning: link {r['src']}->{r['dst']}: fitted bandwidth {fit.bandwidth_bps:.3g} bit/s is outside "
                      f"what a profile holds ({BW.describe()}); using {bw:.3g} (is the machine busy?)", flush=True)
                r = {**r, "bandwidth_clamped_from_bps": fit.bandwidth_bps}
            links.append(Link(r["src"], r["dst"], latency_s=fit.latency_s, bandwidth_bps=bw))
            try:   # for comparison: both parameters free, every size weighted alike
                free = fit_link(pts).to_json()
            except ValueError as e:
                free = {"error": str(e)}
            raw_links.append({**r, "fit": fit.to_json(), "fit_free_relative": free})
    raw_links.sort(key=lambda l: (l["src"], l["dst"]))
    return {(l.src, l.dst): l for l in sorted(links, key=lambda l: (l.src, l.dst))}, raw_links


def assemble_links(args, gathered: list[dict], loadavg: dict, wall_s: float) -> dict:
    """A links-only run's result (``--links-only``): the raw link records, read by
    :func:`calibrate.local.merge_window_probe`; not a profile."""
    _, raw_links = _fit_links(gathered)
    return {"links_only": True, "network": args.network_label,
            "raw": {"settings": _settings(args, wall_s, loadavg), "links": raw_links}}


def assemble(args, gathered: list[dict], cfg, partition, backend, device, wall_s: float, loadavg: dict):
    """The measured :class:`pipesim.profile.Profile` from what the ranks gathered."""
    from pipesim.profile import Host, Profile, Stage, StageCompute
    from pipesim.transport import Transport

    world = len(gathered)
    dev = describe_device(device, backend, args.dtype, args.threads)
    dev["timer"] = "cuda events" if device.type == "cuda" else "time.perf_counter"
    if device.type == "cuda" and backend != "nccl":
        dev["link_tensors"] = "cpu (gloo)"
    hosts = sorted({g["host"] for g in gathered})
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    where = f"{world} ranks on one machine ({hosts[0]})" if args.one_machine else f"{world} ranks on {', '.join(hosts)}"
    desc = (f"measured by pipesim calibrate: {cfg.name}, {where}, device {dev['name']}, backend {backend}, "
            f"dtype {args.dtype}, {args.threads} thread(s) per rank, network {args.network_label!r}, "
            f"{'thread CPU-time' if args.timing == 'cpu' else 'wall-clock'} medians, {when}")
    links, raw_links = _fit_links(gathered)
    raw: dict = {"settings": _settings(args, wall_s, loadavg), "links": raw_links}
    stages, raw_comp = [], []
    def compute_of(measured: dict) -> tuple[dict, dict]:
        comp, rc = {}, {}
        for m, r in sorted(measured.items()):
            comp[int(m)] = StageCompute(forward_s=r["forward_s"], backward_s=r["backward_s"],
                                        activation_bytes=r["activation_bytes"], gradient_bytes=r["gradient_bytes"],
                                        forward_spread_s=r["forward_spread_s"], backward_spread_s=r["backward_spread_s"],
                                        backward_input_s=r.get("backward_input_s"),
                                        backward_weight_s=r.get("backward_weight_s"))
            rc[str(m)] = {"forward_samples_s": r["forward_samples"], "backward_samples_s": r["backward_samples"]}
            if "forward_cpu_s" in r:   # thread CPU time: the compute without time other processes took
                for k in ("forward_wall_s", "backward_wall_s", "forward_cpu_s", "backward_cpu_s"):
                    rc[str(m)][k] = r[k]
            if "backward_input_s" in r:   # split backward (B, W)
                for k in ("backward_input_samples", "backward_weight_samples"):
                    rc[str(m)][k + "_s"] = r[k]
                for k in ("backward_input_spread_s", "backward_weight_spread_s"):
                    rc[str(m)][k] = r[k]
        return comp, rc

    from runtime.model import split_layers

    v = getattr(args, "stages_per_rank", 1)
    for g, (a, b) in zip(gathered, partition):
        comp, rc = compute_of(g["compute"])
        virtual, raw_virtual = None, None
        if g.get("virtual"):
            pairs = [compute_of(vc) for vc in g["virtual"]]
            virtual = tuple(p[0] for p in pairs)
            raw_virtual = [p[1] for p in pairs]
        stages.append(Stage(compute=comp, layers=b - a, optimizer_s=g["optimizer_s"], virtual_stages=virtual))
        raw_comp.append({"rank": g["rank"], "optimizer_spread_s": g["optimizer_spread_s"], "samples": rc,
                         **({"virtual_samples": raw_virtual} if raw_virtual else {})})
    raw["compute"] = raw_comp
    host = None
    if args.one_machine and world > 1:
        import statistics

        slow = {1: 1.0}
        per = {}
        for k in range(2, world + 1):
            ratios_by_mbs = {}
            for m in args.mbs:
                ratios = []
                for g in gathered[:k]:
                    c = g["compute"][m]
                    alone = c.get("forward_wall_s", c["forward_s"]) + c.get("backward_wall_s", c["backward_s"])
                    ratios.append(statistics.median(g["contention"][k][m]) / alone)
                ratios_by_mbs[str(m)] = {"per_rank": ratios, "mean": sum(ratios) / len(ratios)}
            per[str(k)] = ratios_by_mbs
            slow[k] = statistics.median(v["mean"] for v in ratios_by_mbs.values())
        cores = os.cpu_count() or 1
        placement = None
        pinned = [int(c) for g in gathered if (c := g.get("cpu")) is not None]
        if len(pinned) == len(gathered):  # ranks pinned to cores by the launcher (runtime.launch.placement)
            order = sorted(set(pinned))
            placement = tuple(order.index(c) for c in pinned)
            cores = max(len(order), 1) if len(order) > cores else cores
        host = Host(cores=cores, slowdown=slow, placement=placement)
        raw["host"] = {"method": "ranks 0..k-1 run forward+backward back to back for "
                                 f"{args.contention_s}s; ratio = median iteration time / (forward+backward alone); "
                                 "slowdown[k] = median over micro-batch sizes of the mean over ranks",
                       "ratios": per}
    return Profile(stages=tuple(stages), links=links, source="measured", description=desc,
                   model={**cfg.to_dict(), "stages": world, "partition": [list(p) for p in partition],
                          **({"stages_per_rank": v, "virtual_partition": [list(p) for p in split_layers(cfg.layers, world * v)]}
                             if v > 1 else {})},
                   device=dev, host=host, transport=Transport.for_backend(backend), raw=raw)


if __name__ == "__main__":
    rc = main()
    # Leave without interpreter finalization (see runtime/__main__.py): the profile is written
    # by now, and gloo's teardown during finalization sometimes aborts.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc or 0)
