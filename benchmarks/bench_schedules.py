"""Our runtime's step time vs torch.distributed.pipelining for the schedules of issue 14:
interleaved 1F1B (``ScheduleInterleaved1F1B``) and ZB-H1.

Same pattern as ``benchmarks/bench_runtime.py`` (which compares GPipe and 1F1B): same
model preset, cut into the same stages (``runtime.model.build_stages``: ``ranks x v``
runs of consecutive layers, stage s on rank s % ranks), same micro-batches, gloo, one
thread per rank, AdamW, no barrier between steps; step time = period between
consecutive step ends on rank 0, median over the measured steps after the warm-up.
Prints a markdown table with the ratio ours / torch:

    python benchmarks/bench_schedules.py --model cpu-small --ranks 3 --batch-size 12 --micro-batch-size 2

The torch class compared with each schedule:

* ``interleaved1f1b``: ``ScheduleInterleaved1F1B`` with the same ``v`` stages per rank
  (``--stages-per-rank``, default 2) in the same loop placement.
* ``zbh1``: torch has no plain ZB-H1 class. The closest is
  ``ScheduleInterleavedZeroBubble`` (the zero-bubble schedule of the same paper, with
  the backward split into input and weight gradients by torch's
  ``stage_backward_input``/``stage_backward_weight``, where our runtime uses
  ``runtime.split``), given one stage per rank, which it accepts; its order is its own
  (it fills bubbles with W greedily), not ZB-H1's.

(The torch ranks run this file as ``python -m benchmarks.bench_schedules --worker``.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_runtime import _summary, with_logits  # noqa: E402

TORCH_CLASS = {"gpipe": "ScheduleGPipe", "1f1b": "Schedule1F1B", "interleaved1f1b": "ScheduleInterleaved1F1B",
               "zbh1": "ScheduleInterleavedZeroBubble"}
VIRTUAL = ("interleaved1f1b",)


def worker(ns: argparse.Namespace) -> None:
    """One rank of the torch.distributed.pipelining baseline."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist
    import torch.distributed.pipelining as pp
    import torch.nn.functional as F

    from runtime.model import build_stages, get_config, synthetic_batch

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(ns.threads)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=120))
    cfg = get_config(ns.model)
    v = ns.stages_per_rank if ns.schedule in VIRTUAL else 1
    n = world * v
    _, cut = build_stages(cfg, n, seed=0)

    ids = [k * world + rank for k in range(v)]  # loop placement, as ours
    mods = [with_logits(cut[s]) if s == n - 1 else cut[s] for s in ids]
    loss_fn = lambda logits, tgt: F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1))  # noqa: E731
    m = ns.batch_size // ns.micro_batch_size
    stages = [pp.PipelineStage(mod, s, n, torch.device("cpu")) for mod, s in zip(mods, ids)]
    cls = getattr(pp, TORCH_CLASS[ns.schedule])
    if ns.schedule in ("gpipe", "1f1b"):
        sched = cls(stages[0], m, loss_fn=loss_fn)
    else:
        sched = cls(stages, m, loss_fn=loss_fn)
    params = [p for mod in mods for p in mod.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    first, last = 0 in ids, (n - 1) in ids
    ends = []
    for step in range(ns.warmup + ns.steps):
        idx, tgt = synthetic_batch(cfg, ns.batch_size, step)
        kw = {"target": tgt, "losses": []} if last else {}
        if first:
            sched.step(idx, **kw)
        else:
            sched.step(**kw)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ends.append(time.time())
        print(f"step {step}", flush=True)
    if rank == 0:
        times = [ends[k] - ends[k - 1] for k in range(max(ns.warmup, 1), len(ends))]
        Path(ns.out).write_text(json.dumps({"samples": times}))
    dist.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="cpu-small")
    ap.add_argument("--ranks", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--micro-batch-size", type=int, default=2)
    ap.add_argument("--schedules", default="interleaved1f1b,zbh1")
    ap.add_argument("--schedule", default="zbh1", help=argparse.SUPPRESS)
    ap.add_argument("--stages-per-rank", type=int, default=2, help="v of interleaved1f1b (default 2)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved (ours, torch) pairs per schedule; "
                                                            "the median over all their steps is reported")
    ap.add_argument("--out", default=None)
    ap.add_argument("--timeout", type=float, default=600)
    ns = ap.parse_args()
    if ns.worker:
        worker(ns)
        return 0
    from runtime.launch import run_local

    tmp = Path(tempfile.mkdtemp(prefix="bench-schedules-"))
    rows = []
    common = ["--model", ns.model, "--batch-size", str(ns.batch_size), "--micro-batch-size",
              str(ns.micro_batch_size), "--steps", str(ns.steps), "--warmup", str(ns.warmup),
              "--threads", str(ns.threads), "--stages-per-rank", str(ns.stages_per_rank)]
    for sched in ns.schedules.split(","):
        ours_s: list[float] = []
        theirs_s: list[float] = []
        for i in range(ns.repeats):
            ours_out, torch_out = tmp / f"ours-{sched}-{i}.json", tmp / f"torch-{sched}-{i}.json"
            ours_args = common if sched in VIRTUAL else common[:-2]  # --stages-per-rank: interleaved only
            run_local("runtime", ours_args + ["--schedule", sched, "--optimizer", "adamw", "--out", str(ours_out)],
                      ns.ranks, timeout_s=ns.timeout, log_dir=tmp / f"ours-{sched}-{i}", echo=False)
            run_local("benchmarks.bench_schedules", common + ["--worker", "--schedule", sched, "--out", str(torch_out)],
                      ns.ranks, timeout_s=ns.timeout, log_dir=tmp / f"torch-{sched}-{i}", echo=False)
            ours_s += json.loads(ours_out.read_text())["step_time"]["samples"]
            theirs_s += json.loads(torch_out.read_text())["samples"]
        rows.append((sched, _summary(ours_s), _summary(theirs_s)))
    print(f"\n{ns.model}, {ns.ranks} ranks, batch {ns.batch_size}, micro-batch {ns.micro_batch_size} "
          f"({ns.batch_size // ns.micro_batch_size} micro-batches), interleaved: {ns.stages_per_rank} stages per rank, "
          f"gloo, {ns.threads} thread(s)/rank, {ns.steps} measured steps after {ns.warmup} warm-up, "
          f"{ns.repeats} run(s) each; rank 0 step time, median [p10, p90]\n")
    print("| schedule | pipesim runtime (s) | torch class | torch (s) | ours / torch |")
    print("|---|---|---|---|---|")
    for sched, o, t in rows:
        print(f"| {sched} | {o[0]:.4f} [{o[1]:.4f}, {o[2]:.4f}] | {TORCH_CLASS[sched]} | "
              f"{t[0]:.4f} [{t[1]:.4f}, {t[2]:.4f}] | {o[0] / t[0]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
