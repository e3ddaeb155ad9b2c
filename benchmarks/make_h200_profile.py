"""Write pipesim/data/gpt3_small_h200_compute_measured.json from the GPU check's calibration.

Compute (forward, backward, optimizer per stage and micro-batch size) is MEASURED:
`pipesim calibrate`'s worker on one NVIDIA H200, fp32, three processes sharing the GPU
and taking turns (see benchmarks/results/gpu-2026-11-26/). Links are NOT measured
there (the three ranks shared one machine): they are the seed's "default (about
0.1ms; up to 10Gbps)" as in the bundled V100 estimate. So the file as a whole is
marked "estimated", and its description says which half is which.
"""

import json
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

from pipesim.profile import from_json  # noqa: E402
from pipesim.util import write_json_atomic  # noqa: E402

src = json.loads((root / "benchmarks/results/gpu-2026-11-26/gpt3_small_h200_fp32.json").read_text())
est = json.loads((root / "pipesim/data/gpt3_small_v100_estimated.json").read_text())
doc = {
    "pipesim_profile": 1,
    "source": "estimated",
    "description": ("Compute MEASURED by pipesim calibrate on one NVIDIA H200 (fp32, torch 2.11, CUDA events, "
                    "3 processes sharing the GPU and taking turns, 2026-11-26); links ESTIMATED as the seed's "
                    "'default (about 0.1ms; up to 10Gbps)': 0.05 ms one way, 10 Gbit/s, TCP window 3 MiB. "
                    "Made by benchmarks/make_h200_profile.py."),
    "model": src["model"],
    "device": {**src["device"], "backend": "nccl", "note": "compute measured with gloo between processes on one GPU; "
               "backend set to nccl for the transport model of a real cluster"},
    "stages": src["stages"],
    "links": est["links"],
}
from_json(doc, "generated")  # validate before writing
out = root / "pipesim/data/gpt3_small_h200_compute_measured.json"
write_json_atomic(out, doc)
print(f"wrote {out}")
