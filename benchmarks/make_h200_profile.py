"""Write the bundled H200 profiles from the GPU checks' calibrations:

* ``pipesim/data/gpt3_small_h200_compute_measured.json``: fp32, micro-batch 1/2/4;
* ``pipesim/data/gpt3_small_h200_bf16_compute_measured.json``: bfloat16, micro-batch 1/2/4/8.

Compute (forward, backward, its split into B and W as the runtime runs zbh1, each of the two
virtual stages a rank runs under interleaved1f1b, and the optimizer step) is MEASURED:
`pipesim calibrate`'s worker under torchrun with ``--split-backward --stages-per-rank 2`` on
one NVIDIA H200, three processes sharing the GPU and taking turns
(``benchmarks/gpu_check_schedules.sh``, results in benchmarks/results/gpu-2026-11-29/).
Links are NOT measured there (the three ranks shared one machine): they are the seed's
"default (about 0.1ms; up to 10Gbps)" as in the bundled V100 estimate, the same for every
pair of ranks. So each file as a whole is marked "estimated", and its description says which
half is which.
"""

import sys
from dataclasses import replace
from pathlib import Path

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

from pipesim import profile as P  # noqa: E402

est = P.load(root / "pipesim/data/gpt3_small_v100_estimated.json")
default_link = est.links[(0, 1)]
for dtype, name in [("fp32", "gpt3_small_h200_compute_measured.json"),
                    ("bf16", "gpt3_small_h200_bf16_compute_measured.json")]:
    src = P.load(root / f"benchmarks/results/gpu-2026-11-29/gpt3_small_h200_{dtype}_split.json")
    links = {pair: replace(est.links.get(pair, default_link), src=pair[0], dst=pair[1])   # 0<->2 too
             for pair in src.links}
    prof = replace(
        src, source="estimated", raw=None, links=links, transport=None,   # nccl's, as on a real cluster
        description=(f"Compute MEASURED by pipesim calibrate on one NVIDIA H200 ({src.device['dtype']}, torch 2.11, "
                     "CUDA events, 3 processes sharing the GPU and taking turns, 2026-11-29; forward, backward, "
                     "its split into B and W, and 2 virtual stages per rank); links ESTIMATED as the seed's "
                     "'default (about 0.1ms; up to 10Gbps)': 0.05 ms one way, 10 Gbit/s, TCP window 3 MiB, "
                     "between every pair of ranks. Made by benchmarks/make_h200_profile.py."),
        device={**src.device, "backend": "nccl", "note": "compute measured with gloo between processes on one "
                "GPU; backend set to nccl for the transport model of a real cluster"},
    )
    out = root / "pipesim/data" / name
    prof.save(out, force=True)
    print(f"wrote {out}")
