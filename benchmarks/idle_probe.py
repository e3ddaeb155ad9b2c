"""Compute after an idle gap: is the first computation after the device (and the host thread that
drives it) sat idle slower than one that follows another at once?

On the CPU VMs this project is developed on, a core that idles for a few milliseconds comes back
slower (up to 1.9x for the first computation after 20-50 ms). This probe asks the same of any
device: one stage of the model (a middle one, the runtime's cut), one forward and backward per
sample, after sleeping each gap in turn, round robin so that a slow spell falls on every gap.
It times the first computation after the gap and the one right after it (no gap), so that the
table shows both the slowdown and how fast it wears off:

    python benchmarks/idle_probe.py --model gpt3-small --device cuda    # on a GPU
    python benchmarks/idle_probe.py                                     # on this CPU (cpu-small)

On CUDA, "wall" is the host's time from launch to synchronize (launches included) and "device" is
CUDA-event time (the GPU's own); on the CPU both columns are the wall clock. Prints a markdown table
of medians (ms) and the ratio to no gap.
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
    ap.add_argument("--stages", type=int, default=3, help="cut the model into this many stages; probe stage 1")
    ap.add_argument("--micro-batch-sizes", default="1,4")
    ap.add_argument("--gaps-ms", default="0,1,5,20,50,200,500")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=5)
    _device.add_args(ap)
    ns = ap.parse_args(argv)

    import torch

    from calibrate.measure import StageBench

    setup = _device.stages_on_device(ns, "idle_probe")
    if setup is None:
        return 2
    cfg, stages, dev, dtype = setup
    cuda = dev.type == "cuda"
    stage = stages[min(1, ns.stages - 1)]
    gaps = [float(g) / 1e3 for g in ns.gaps_ms.split(",")]
    sizes = [int(s) for s in ns.micro_batch_sizes.split(",")]

    def once(b: StageBench) -> tuple[float, float]:
        """One forward and backward: (wall seconds, device seconds)."""
        b.x.grad = None
        stage.zero_grad(set_to_none=True)
        if cuda:
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            e0.record()
            b.backward(b.forward())
            e1.record()
            torch.cuda.synchronize()
            return time.perf_counter() - t0, e0.elapsed_time(e1) / 1e3
        t0 = time.perf_counter()
        b.backward(b.forward())
        t = time.perf_counter() - t0
        return t, t

    rows = []
    for mbs in sizes:
        b = StageBench(stage, cfg, mbs, dev, dtype)
        for _ in range(ns.warmup):
            once(b)
        first: dict[float, list] = {g: [] for g in gaps}
        second: dict[float, list] = {g: [] for g in gaps}
        for _ in range(ns.rounds):
            for g in gaps:
                if cuda:
                    torch.cuda.synchronize()
                if g > 0:
                    time.sleep(g)
                first[g].append(once(b))
                second[g].append(once(b))
        med = {g: (statistics.median(w for w, _ in first[g]), statistics.median(d for _, d in first[g]),
                   statistics.median(w for w, _ in second[g]), statistics.median(d for _, d in second[g]))
               for g in gaps}
        rows.append((mbs, med))
        print(f"mbs {mbs}: " + ", ".join(f"{1e3 * g:g} ms gap {1e3 * med[g][0]:.2f} ms" for g in gaps),
              file=sys.stderr, flush=True)

    print(f"\nCompute after an idle gap: {ns.model} stage 1 of {ns.stages}, forward + backward, {_device.describe(ns)}; "
          f"median of {ns.rounds} rounds (ms); ratio to no gap\n")
    print("| mbs | gap ms | first: wall | ratio | first: device | ratio | next: wall | ratio | next: device | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mbs, med in rows:
        w0, d0 = med[gaps[0]][0], med[gaps[0]][1]
        for g in gaps:
            fw, fd, sw, sd = med[g]
            print(f"| {mbs} | {1e3 * g:g} | {1e3 * fw:.2f} | {fw / w0:.2f} | {1e3 * fd:.2f} | {fd / d0:.2f} | "
                  f"{1e3 * sw:.2f} | {sw / w0:.2f} | {1e3 * sd:.2f} | {sd / d0:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
