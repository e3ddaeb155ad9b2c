"""Prepared check of the CUDA path (run it on a CUDA machine; a few minutes at most).

    python -m runtime.gpu_check [--ranks 2,3] [--timeout 240]
    python -m runtime.gpu_check --model tiny6 --schedules zbh1,interleaved1f1b   # split backward, virtual stages

For each rank count and schedule (default gpipe and 1f1b) it runs the runtime with ``--device cuda`` on
the GPUs present (ranks share cuda:0 when there is one GPU) and checks that after one
SGD step every rank's parameters equal those of the unpartitioned model trained on
the same batch on the same GPU, stage by stage (atol 1e-5, rtol 1e-4; TF32 off), that the per-step
losses match, and that the trace has every action. It tries the NCCL backend first;
NCCL refuses two ranks on one GPU in some versions ("Duplicate GPU detected"), so
when that happens on a single-GPU machine it says so and checks the CUDA compute path
(separate compute stream, CUDA-event timing) with gloo staging messages through host
memory instead. Prints one line per case and a summary; exit status 0 only when every
attempted case passed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

BATCH, MBS, LR, STEPS = 12, 2, 0.5, 4  # 6 micro-batches: a multiple of 2 and 3 ranks (interleaved)


def _reference(model: str, ranks: int):
    import torch

    from runtime.model import build_stages, get_config, synthetic_batch

    torch.backends.cuda.matmul.allow_tf32 = False
    cfg = get_config(model)
    full, _ = build_stages(cfg, ranks, seed=0)
    full = full.cuda()
    opt = torch.optim.SGD(full.parameters(), lr=LR)
    losses, after_one = [], None
    for step in range(STEPS):
        idx, tgt = synthetic_batch(cfg, BATCH, step)
        loss = full(idx.cuda(), tgt.cuda())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step == 0:
            after_one = {k: v.detach().cpu().clone() for k, v in full.state_dict().items()}
    return cfg, after_one, losses


def check(ranks: int, schedule: str, backend: str, model: str, timeout: float, work: Path) -> str:
    import torch

    from pipesim.schedule import VIRTUAL, build_placed
    from pipesim.trace import read_csv
    from runtime.launch import run_local
    from runtime.model import split_layers

    d = work / f"{backend}-{ranks}-{schedule}"
    out, params = d / "results.json", d / "params"
    args = ["--model", model, "--schedule", schedule, "--batch-size", BATCH, "--micro-batch-size", MBS,
            "--optimizer", "sgd", "--lr", LR, "--warmup", 1, "--steps", STEPS - 1, "--device", "cuda",
            "--backend", backend, "--out", out, "--trace", d / "trace", "--save-params", params,
            "--op-timeout", timeout / 3]
    v = 2 if schedule in VIRTUAL else 1  # the runtime's default for interleaved schedules
    t0 = time.time()
    run_local("runtime", [str(a) for a in args], ranks, timeout_s=timeout, log_dir=d / "logs", echo=False,
              env={"NCCL_DEBUG": "WARN"})
    wall = time.time() - t0
    cfg, after_one, ref_losses = _reference(model, ranks)
    worst = 0.0
    for s, (a, _) in enumerate(split_layers(cfg.layers, ranks * v)):
        for k, got in torch.load(f"{params}.stage{s}.pt").items():
            key = k
            if k.startswith("blocks."):
                i, rest = k.split(".", 2)[1:]
                key = f"blocks.{a + int(i)}.{rest}"
            torch.testing.assert_close(got, after_one[key], atol=1e-5, rtol=1e-4)
            worst = max(worst, (got - after_one[key]).abs().max().item())
    res = json.loads(out.read_text())
    for got, want in zip(res["losses"], ref_losses):
        if abs(got - want) > 1e-4 * abs(want) + 1e-5:
            raise AssertionError(f"losses differ: {res['losses']} vs {ref_losses}")
    events = read_csv(d / "trace.csv")
    sched, _ = build_placed(schedule, ranks, BATCH // MBS, res["recv_ahead"], v)
    for r in range(ranks):
        got = sorted(e.action for e in events if e.rank == r and e.step == 2 and e.action != "OPT")
        if got != sorted(str(a) for a in sched[r]):
            raise AssertionError(f"rank {r}: trace of step 2 does not hold every action once")
    s = res["step_time"]
    return (f"params max |diff| {worst:.2e}, losses match, trace complete; backend {res['backend']}, "
            f"recv_ahead {res['recv_ahead']}, step time median {s['median'] * 1e3:.1f} ms; wall {wall:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description="Check the runtime's CUDA path (NCCL, streams, CUDA events).")
    ap.add_argument("--ranks", default="2,3")
    ap.add_argument("--model", default="tiny", help="tiny6 for interleaved1f1b on 3 ranks (ranks x 2 stages)")
    ap.add_argument("--schedules", default="gpipe,1f1b", help="any of gpipe, 1f1b, zbh1, interleaved1f1b")
    ap.add_argument("--timeout", type=float, default=90, help="per case; ranks give up on a peer after a third of it")
    ns = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL {torch.cuda.nccl.version()}, "
          f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    ok = failed = 0
    nccl_refused = False
    for ranks in [int(x) for x in ns.ranks.split(",")]:
        for schedule in ns.schedules.split(","):
            nccl_failed = False
            if not nccl_refused:
                try:
                    msg = check(ranks, schedule, "nccl", ns.model, ns.timeout, work)
                    print(f"PASS nccl ranks {ranks} {schedule}: {msg}", flush=True)
                    ok += 1
                except Exception as e:  # report and go on with the other cases
                    text = str(e)
                    if torch.cuda.device_count() < ranks and ("Duplicate GPU" in text or "invalid usage" in text):
                        print(f"SKIP nccl ranks {ranks}: NCCL refuses several ranks on one GPU "
                              f"(Duplicate GPU detected / invalid usage)", flush=True)
                        nccl_refused = True
                    else:
                        print(f"FAIL nccl ranks {ranks} {schedule}: {text[:2000]}", flush=True)
                        failed += 1
                        nccl_failed = True
            if nccl_refused or nccl_failed:  # still check the CUDA compute path (streams, events)
                try:
                    msg = check(ranks, schedule, "gloo", ns.model, ns.timeout, work)
                    print(f"PASS cuda+gloo ranks {ranks} {schedule}: {msg}", flush=True)
                    ok += 1
                except Exception as e:
                    print(f"FAIL cuda+gloo ranks {ranks} {schedule}: {str(e)[:2000]}", flush=True)
                    failed += 1
    print(f"gpu_check: {ok} passed, {failed} failed; logs under {work}")
    return 0 if failed == 0 and ok > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
