"""What the per-stage benchmarks (bench_split.py, idle_probe.py) share: the --threads, --device and
--dtype flags, and the model cut into stages on that device in that dtype (TF32 off)."""

from __future__ import annotations

import sys


def add_args(ap) -> None:
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def stages_on_device(ns, prog: str):
    """(cfg, stages, device, dtype) for ``ns.model`` cut into ``ns.stages``; None (and a message) where
    CUDA was asked for and is not there."""
    import torch

    from runtime.model import build_stages, get_config

    if ns.device == "cuda" and not torch.cuda.is_available():
        print(f"{prog}: CUDA is not available here; run it without --device cuda", file=sys.stderr)
        return None
    torch.set_num_threads(ns.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    dev, dtype = torch.device(ns.device), getattr(torch, ns.dtype)
    cfg = get_config(ns.model)
    _, stages = build_stages(cfg, ns.stages)
    return cfg, [st.to(device=dev, dtype=dtype) for st in stages], dev, dtype


def describe(ns) -> str:
    """Where it ran, for a table's title."""
    import torch

    if ns.device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, {ns.dtype}"
    return f"CPU, {ns.threads} thread(s), {ns.dtype}"
