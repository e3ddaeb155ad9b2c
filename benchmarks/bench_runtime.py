"""Our runtime's step time vs torch.distributed.pipelining (ScheduleGPipe, Schedule1F1B).

Same model preset, same even split (runtime.model.build_stage), same micro-batches,
gloo, one thread per rank, AdamW, no barrier between steps; step time = period
between consecutive step ends on rank 0, median over the measured steps after the
warm-up. Runs everything side by side in one invocation and prints a markdown table:

    python benchmarks/bench_runtime.py --model cpu-small --ranks 3 --batch-size 16 --micro-batch-size 2

(The torch.distributed.pipelining ranks run this file as ``python -m benchmarks.bench_runtime --worker``.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def with_logits(stage):
    """The last stage as torch's schedules want it: returning logits (their loss_fn computes the loss)."""
    from torch import nn

    class Logits(nn.Module):
        def __init__(self, st):
            super().__init__()
            self.st = st

        def forward(self, x):
            st = self.st
            if st.embed is not None:
                x = st.embed(x)
            for blk in st.blocks:
                x = blk(x)
            return st.head.lm(st.head.ln(x))

    return Logits(stage)


def worker(ns: argparse.Namespace) -> None:
    """One rank of the torch.distributed.pipelining baseline."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    from runtime.model import build_stage, get_config, synthetic_batch

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(ns.threads)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=120))
    cfg = get_config(ns.model)
    stage = build_stage(cfg, world, rank, seed=0)

    last = rank == world - 1
    mod = with_logits(stage) if last else stage
    loss_fn = lambda logits, tgt: F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1))  # noqa: E731
    m = ns.batch_size // ns.micro_batch_size
    pstage = PipelineStage(mod, rank, world, torch.device("cpu"))
    sched = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[ns.schedule](pstage, m, loss_fn=loss_fn)
    opt = torch.optim.AdamW(mod.parameters(), lr=1e-3, weight_decay=0.0)
    ends = []
    for step in range(ns.warmup + ns.steps):
        idx, tgt = synthetic_batch(cfg, ns.batch_size, step)
        if rank == 0:
            sched.step(idx)
        elif last:
            sched.step(target=tgt, losses=[])
        else:
            sched.step()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ends.append(time.time())
        print(f"step {step}", flush=True)
    if rank == 0:
        times = [ends[k] - ends[k - 1] for k in range(max(ns.warmup, 1), len(ends))]
        Path(ns.out).write_text(json.dumps({"samples": times}))
    dist.destroy_process_group()


def _summary(xs: list[float]) -> tuple[float, float, float]:
    s = sorted(xs)
    return statistics.median(s), s[int(0.1 * (len(s) - 1))], s[round(0.9 * (len(s) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="cpu-small")
    ap.add_argument("--ranks", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--micro-batch-size", type=int, default=2)
    ap.add_argument("--schedules", default="gpipe,1f1b")
    ap.add_argument("--schedule", default="gpipe", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--ours-args", default="", help="extra arguments for our runtime, e.g. '--recv-stamp inline'")
    ap.add_argument("--timeout", type=float, default=600)
    ns = ap.parse_args()
    if ns.worker:
        worker(ns)
        return 0
    from runtime.launch import run_local

    tmp = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    rows = []
    common = ["--model", ns.model, "--batch-size", str(ns.batch_size), "--micro-batch-size",
              str(ns.micro_batch_size), "--steps", str(ns.steps), "--warmup", str(ns.warmup),
              "--threads", str(ns.threads)]
    for sched in ns.schedules.split(","):
        ours_out, torch_out = tmp / f"ours-{sched}.json", tmp / f"torch-{sched}.json"
        run_local("runtime", common + ["--schedule", sched, "--optimizer", "adamw", "--out", str(ours_out),
                                       *ns.ours_args.split()],
                  ns.ranks, timeout_s=ns.timeout, log_dir=tmp / f"ours-{sched}", echo=False)
        run_local("benchmarks.bench_runtime", common + ["--worker", "--schedule", sched, "--out", str(torch_out)],
                  ns.ranks, timeout_s=ns.timeout, log_dir=tmp / f"torch-{sched}", echo=False)
        ours = _summary(json.loads(ours_out.read_text())["step_time"]["samples"])
        theirs = _summary(json.loads(torch_out.read_text())["samples"])
        rows.append((sched, ours, theirs))
    print(f"\n{ns.model}, {ns.ranks} ranks, batch {ns.batch_size}, micro-batch {ns.micro_batch_size} "
          f"({ns.batch_size // ns.micro_batch_size} micro-batches), gloo, {ns.threads} thread(s)/rank, "
          f"{ns.steps} measured steps after {ns.warmup} warm-up; rank 0 step time, median [p10, p90]"
          + (f"; ours with {ns.ours_args}" if ns.ours_args else "") + "\n")
    print("| schedule | pipesim runtime (s) | torch.distributed.pipelining (s) | ours / torch |")
    print("|---|---|---|---|")
    for sched, o, t in rows:
        print(f"| {sched} | {o[0]:.4f} [{o[1]:.4f}, {o[2]:.4f}] | {t[0]:.4f} [{t[1]:.4f}, {t[2]:.4f}] | "
              f"{o[0] / t[0]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
