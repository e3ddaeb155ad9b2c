"""Write pipesim/data/gpt3_small_v100_estimated.json: the bundled example profile.

Every number here is an ESTIMATE from arithmetic, not a measurement:

* Model: GPT-3 small (Brown et al. 2020, "Language Models are Few-Shot Learners",
  Table 2.1: 12 layers, d_model 768, 12 heads), sequence 2048, split 4/4/4 over
  3 stages, as in the seed table.
* Compute: forward FLOPs per token per layer = 24 d^2 + 4 s d (the matrix products
  of attention and MLP, 2 FLOPs per multiply-add); backward = 2x forward. The seed
  says embedding and loss are light for its data set, so stages are uniform.
  Device: the seed's p3.2xlarge has one NVIDIA V100 (NVIDIA's V100 datasheet: 15.7
  TFLOP/s FP32, SXM2); we assume FP32 (PyTorch's default) at 50% of that peak.
* Optimizer: Adam over the stage's 12 d^2 * 4 parameters, reading and writing
  16 bytes per parameter at 900 GB/s (V100 datasheet HBM2 bandwidth).
* Bytes: activation of one micro-batch, FP32: mbs * s * d * 4.
* Links: the seed's "default (about 0.1ms; up to 10Gbps)": 0.05 ms one way, 10 Gbit/s.
  Single TCP connection window: 3 MiB, i.e. half of Linux's default
  net.ipv4.tcp_rmem maximum (6 MiB) as the advertised window with
  tcp_adv_win_scale = 1. Transport: NCCL-like (rank queues, rendezvous).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipesim.profile import Link, Profile, Stage, StageCompute  # noqa: E402

LAYERS, D, S, STAGES = 12, 768, 2048, 3
PEAK, EFF = 15.7e12, 0.5
per_stage_layers = LAYERS // STAGES
fwd_flops_per_sample = (24 * D * D + 4 * S * D) * S * per_stage_layers
params = 12 * D * D * per_stage_layers
opt_s = params * 16 / 900e9

stages = []
for s in range(STAGES):
    compute = {}
    for mbs in (1, 2, 4, 8):
        f = fwd_flops_per_sample * mbs / (PEAK * EFF)
        act = mbs * S * D * 4
        compute[mbs] = StageCompute(forward_s=round(f, 6), backward_s=round(2 * f, 6),
                                    activation_bytes=act if s < STAGES - 1 else 0,
                                    gradient_bytes=act if s > 0 else 0)
    stages.append(Stage(compute=compute, layers=per_stage_layers, optimizer_s=round(opt_s, 6)))

links = {}
for s in range(STAGES - 1):
    for a, b in ((s, s + 1), (s + 1, s)):
        links[(a, b)] = Link(a, b, latency_s=0.05e-3, bandwidth_bps=10e9, window_bytes=3 * 2**20)

prof = Profile(
    stages=tuple(stages), links=links, source="estimated",
    description=(
        "ESTIMATED, not measured: GPT-3 small (12 layers, d_model 768, 12 heads, seq 2048), 4 layers per stage "
        "on 3 stages. Forward FLOPs per token per layer 24*d^2 + 4*s*d, backward 2x forward, FP32 at 50% of the "
        "NVIDIA V100's 15.7 TFLOP/s peak (V100 datasheet; the seed's p3.2xlarge has one V100). Links: 0.05 ms "
        "one way, 10 Gbit/s (the seed's 'default (about 0.1ms; up to 10Gbps)'), TCP window 3 MiB (half of "
        "Linux's default tcp_rmem max). Made by benchmarks/make_bundled_profile.py; replace with "
        "'pipesim calibrate' output for real predictions."),
    model={"name": "gpt3-small", "layers": LAYERS, "d_model": D, "heads": 12, "seq_len": S, "vocab": 50257},
    device={"name": "NVIDIA V100 (assumed)", "backend": "nccl", "dtype": "float32"},
)
out = Path(__file__).resolve().parents[1] / "pipesim" / "data" / "gpt3_small_v100_estimated.json"
prof.save(out)
print(f"wrote {out}")
