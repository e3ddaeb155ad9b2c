"""Write pipesim/data/gpt3_small_h200_compute_measured.json from the GPU check's calibration.

Compute (forward, backward, optimizer per stage and micro-batch size) is MEASURED:
`pipesim calibrate`'s worker on one NVIDIA H200, fp32, three processes sharing the GPU
and taking turns (see benchmarks/results/gpu-2026-11-26/). Links are NOT measured
there (the three ranks shared one machine): they are the seed's "default (about
0.1ms; up to 10Gbps)" as in the bundled V100 estimate. So the file as a whole is
marked "estimated", and its description says which half is which.
"""

import sys
from dataclasses import replace
from pathlib import Path

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

from pipesim import profile as P  # noqa: E402

src = P.load(root / "benchmarks/results/gpu-2026-11-26/gpt3_small_h200_fp32.json")
est = P.load(root / "pipesim/data/gpt3_small_v100_estimated.json")
prof = replace(
    src, source="estimated", raw=None, links=est.links,
    description=("Compute MEASURED by pipesim calibrate on one NVIDIA H200 (fp32, torch 2.11, CUDA events, "
                 "3 processes sharing the GPU and taking turns, 2026-11-26); links ESTIMATED as the seed's "
                 "'default (about 0.1ms; up to 10Gbps)': 0.05 ms one way, 10 Gbit/s, TCP window 3 MiB. "
                 "Made by benchmarks/make_h200_profile.py."),
    device={**src.device, "backend": "nccl", "note": "compute measured with gloo between processes on one GPU; "
            "backend set to nccl for the transport model of a real cluster"},
)
out = root / "pipesim/data/gpt3_small_h200_compute_measured.json"
prof.save(out)
print(f"wrote {out}")
