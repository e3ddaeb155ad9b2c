"""The split backward's cost: B + W against the fused backward, ours (``runtime.split``) and
torch.distributed.pipelining's (``stage_backward_input`` / ``stage_backward_weight``).

One process, one thread, the model cut as the runtime cuts it; for every stage but the first
(whose B is empty and whose W is the fused backward, in both) and every micro-batch size, the
three ways are run round robin (``--repeats`` rounds after ``--warmup``), each after its own
untimed forward, so that a slow spell of the machine falls on all three. Prints a markdown
table of medians (ms) and the ratio (B + W) / fused, per way:

    python benchmarks/bench_split.py --model cpu-small --stages 3 --micro-batch-sizes 1,2,4
    python benchmarks/bench_split.py --model gpt3-small --device cuda     # on a GPU (TF32 off)

Both ways' gradients are checked against the fused backward's before timing (atol 1e-5, rtol
1e-4 in float32; looser in 16-bit types). On CUDA each timed part ends with a synchronize, so
B and W are the GPU's time for them plus the launches.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import _device  # noqa: E402  (benchmarks/, beside this script)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cpu-small")
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--micro-batch-sizes", default="1,2,4")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=40)
    _device.add_args(ap)
    ns = ap.parse_args(argv)

    import torch
    from torch.distributed.pipelining._backward import stage_backward_input, stage_backward_weight

    from calibrate.measure import StageBench

    setup = _device.stages_on_device(ns, "bench_split")
    if setup is None:
        return 2
    cfg, stages, dev, dtype = setup
    # a gradient passes when its error relative to its norm is within rel_tol, or within 4x the fused
    # backward's own run-to-run difference (kernels that accumulate in a varying order, on a GPU)
    rel_tol = 1e-5 if dtype == torch.float32 else 1e-2
    sizes = [int(s) for s in ns.micro_batch_sizes.split(",")]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def grads(stage):
        return [None if p.grad is None else p.grad.clone() for p in stage.parameters()]

    def worst_error(got, ref, names) -> tuple[float, str, float]:
        """The largest ||g - r|| / ||r|| over the gradients: (that error, whose gradient, its max |g - r|)."""
        worst = (0.0, "-", 0.0)
        for g, r, n in zip(got, ref, names):
            if (g is None) != (r is None):
                return float("inf"), f"{n} (one of the two has no gradient)", float("inf")
            if g is None:
                continue
            d = (g.double() - r.double())
            e = d.norm().item() / max(r.double().norm().item(), 1e-30)
            if e > worst[0]:
                worst = (e, n, d.abs().max().item())
        return worst

    def fused(b):
        y = b.forward()
        sync()
        t0 = time.perf_counter()
        b.backward(y)
        sync()
        return time.perf_counter() - t0, 0.0

    def torch_split(b):
        y = b.forward()
        gr = None if b.grad_out is None else [b.grad_out]
        sync()
        t0 = time.perf_counter()
        _, groups = stage_backward_input([y], gr, [b.x], b.stage.parameters())
        sync()
        t1 = time.perf_counter()
        stage_backward_weight(b.stage.parameters(), groups)
        sync()
        return t1 - t0, time.perf_counter() - t1

    def ours(b):
        sb = b.splitter
        y, tape = sb.forward(b.forward)
        sync()
        t0 = time.perf_counter()
        pending = sb.input_grad(y, b.grad_out, b.x, tape)
        sync()
        t1 = time.perf_counter()
        sb.weight_grad(pending)
        sync()
        return t1 - t0, time.perf_counter() - t1

    def fresh(b, fn):
        """``fn(b)`` with no gradient left from the last run."""
        b.stage.zero_grad(set_to_none=True)
        b.x.grad = None
        return fn(b)

    ways = {"fused": fused, "torch": torch_split, "ours": ours}
    rows, errors, bad = [], [], []
    for s, stage in enumerate(stages):
        if stage.is_first:
            continue
        names = [n for n, _ in stage.named_parameters()] + ["input"]
        for mbs in sizes:
            b = StageBench(stage, cfg, mbs, dev, dtype, split=True)   # b.splitter: runtime.split's
            got = {}   # correctness first: each way's gradients, and the fused backward's twice
            for name, fn in [("fused", fused), ("fused again", fused), ("torch", torch_split), ("ours", ours)]:
                fresh(b, fn)
                got[name] = grads(stage) + [b.x.grad.clone()]
            err = {n: worst_error(got[n], got["fused"], names) for n in ("fused again", "torch", "ours")}
            errors.append((s, mbs, err))
            for n in ("torch", "ours"):
                e, where, diff = err[n]
                if e > max(rel_tol, 4 * err["fused again"][0]):
                    bad.append(f"{n}: stage {s} mbs {mbs}: {where} differs from the fused backward's by "
                               f"{e:.2e} of its norm (max |diff| {diff:.2e}); the fused backward run again: "
                               f"{err['fused again'][0]:.2e}")
            t = {name: [] for name in ways}
            for i in range(ns.warmup + ns.repeats):
                for name, fn in ways.items():
                    bi, w = fresh(b, fn)
                    if i >= ns.warmup:
                        t[name].append((bi, w))
            med = {n: (statistics.median(x for x, _ in v), statistics.median(y for _, y in v),
                       statistics.median(x + y for x, y in v)) for n, v in t.items()}
            rows.append((s, mbs, med))
            print(f"stage {s} mbs {mbs}: fused {1e3 * med['fused'][2]:.2f} ms, torch {1e3 * med['torch'][2]:.2f} ms, "
                  f"ours {1e3 * med['ours'][2]:.2f} ms", file=sys.stderr, flush=True)

    print(f"\nSplit backward on {ns.model}, {ns.stages} stages, {_device.describe(ns)}; median of {ns.repeats} "
          "(ms); B + W over the fused backward\n")
    print("| stage | mbs | fused | torch B | torch W | torch (B+W)/fused | ours B | ours W | ours (B+W)/fused |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s, mbs, med in rows:
        f = med["fused"][2]
        print(f"| {s} | {mbs} | {1e3 * f:.2f} | {1e3 * med['torch'][0]:.2f} | {1e3 * med['torch'][1]:.2f} | "
              f"{med['torch'][2] / f:.2f} | {1e3 * med['ours'][0]:.2f} | {1e3 * med['ours'][1]:.2f} | "
              f"{med['ours'][2] / f:.2f} |")
    print("\nGradients against the fused backward's: the largest ||g - g_fused|| / ||g_fused|| over the "
          "stage's parameters and its input, and whose it is\n")
    print("| stage | mbs | fused again | torch | ours | ours: worst gradient | ours: max abs diff |")
    print("|---:|---:|---:|---:|---:|---|---:|")
    for s, mbs, err in errors:
        print(f"| {s} | {mbs} | {err['fused again'][0]:.1e} | {err['torch'][0]:.1e} | {err['ours'][0]:.1e} | "
              f"{err['ours'][1]} | {err['ours'][2]:.1e} |")
    if bad:
        print("\nbench_split: gradients differ:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
