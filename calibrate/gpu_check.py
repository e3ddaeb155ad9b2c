"""GPU check of calibration: ``python -m calibrate.gpu_check [--model cpu-small] [--out DIR]``.

Calibrates 2 ranks sharing this machine's first GPU (CUDA compute timed with CUDA
events, NCCL point-to-point), prints the profile summary, and checks what the issue
asks of a CUDA profile: device name, backend and dtype recorded, CUDA-event timer,
positive times, activation/gradient bytes = mbs * seq_len * d_model * 4 (fp32).

NCCL refuses two ranks on one GPU in some versions ("Duplicate GPU detected"); then
the check says so and calibrates again with gloo (compute still on CUDA, links over
CPU tensors), so that the CUDA timing path is checked either way. Exit status 0 when
every check passed. Takes about a minute.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def _checks(prof, cfg, backend: str) -> list[str]:
    bad = []
    dev = prof.device
    for k in ("name", "backend", "dtype"):
        if not dev.get(k):
            bad.append(f"device.{k} missing")
    if dev.get("type") != "cuda":
        bad.append(f"device.type is {dev.get('type')!r}, expected 'cuda'")
    if dev.get("backend") != backend:
        bad.append(f"device.backend is {dev.get('backend')!r}, expected {backend!r}")
    if dev.get("timer") != "cuda events":
        bad.append(f"device.timer is {dev.get('timer')!r}, expected 'cuda events'")
    for i, st in enumerate(prof.stages):
        if not st.optimizer_s > 0:
            bad.append(f"stages[{i}].optimizer_s not > 0")
        for m, c in st.compute.items():
            if not (c.forward_s > 0 and c.backward_s > 0):
                bad.append(f"stages[{i}].compute[{m}] times not > 0")
            n = m * cfg.seq_len * cfg.d_model * 4
            want_act = n if i < prof.num_stages - 1 else 0
            want_grad = n if i > 0 else 0
            if c.activation_bytes != want_act or c.gradient_bytes != want_grad:
                bad.append(f"stages[{i}].compute[{m}] bytes {c.activation_bytes}/{c.gradient_bytes}, "
                           f"expected {want_act}/{want_grad}")
    for (s, d), link in prof.links.items():
        if not (link.latency_s > 0 and link.bandwidth_bps > 0):
            bad.append(f"link {s}->{d} latency/bandwidth not > 0")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m calibrate.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cpu-small")
    ap.add_argument("--micro-batch-sizes", default="1,2,4")
    ap.add_argument("--out", default=None, help="directory for the profiles and logs (default: a temporary one)")
    ap.add_argument("--timeout", type=float, default=150, help="seconds per backend before a hung run is stopped")
    args = ap.parse_args(argv)

    import torch

    from runtime.launch import LaunchError
    from runtime.model import get_config

    from .local import run_local_calibration
    from .summary import summary

    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here; nothing to check", file=sys.stderr)
        return 2
    try:
        v = torch.cuda.nccl.version()
        nccl = ".".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)
    except Exception as e:  # noqa: BLE001 - informational only
        nccl = f"unknown ({e})"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s), "
          f"GPU 0: {torch.cuda.get_device_name(0)}; NCCL {nccl}", flush=True)
    cfg = get_config(args.model)
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="pipesim-gpu-check-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    env_note = ""
    for backend in ("nccl", "gloo"):
        out = out_dir / f"profile-{backend}.json"
        t0 = time.monotonic()
        print(f"\n== calibrating {cfg.name}, 2 ranks on one GPU, backend {backend} ==", flush=True)
        try:
            prof = run_local_calibration(2, cfg.name, args.micro_batch_sizes, out, force=True, timeout_s=args.timeout,
                                         log_dir=out_dir / f"logs-{backend}",
                                         extra_args=["--device", "cuda", "--backend", backend])
        except LaunchError as e:
            text = str(e)
            print(f"gpu_check: backend {backend} failed after {time.monotonic() - t0:.0f}s:\n{text[-2500:]}",
                  flush=True)
            if backend == "nccl":
                env_note = ("NCCL refused two ranks on one GPU" if "Duplicate GPU" in text
                            else "NCCL calibration failed (see above)")
                print(f"gpu_check: {env_note}; trying gloo (CUDA compute, CPU link tensors)", flush=True)
                continue
            return 1
        print(summary(prof))
        print(f"\ndevice: {prof.device}\nprofile: {out} ({time.monotonic() - t0:.0f}s)")
        bad = _checks(prof, cfg, backend)
        if bad:
            print("gpu_check: FAILED:\n  " + "\n  ".join(bad))
            return 1
        print(f"gpu_check: OK (backend {backend}{'; ' + env_note if env_note else ''})")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
