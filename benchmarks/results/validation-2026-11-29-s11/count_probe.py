"""Does a micro-batch's compute cost depend on how many micro-batches a step has? GPipe at
micro-batch 4 on the default network, batch 4 (one micro-batch per step, as validate runs
it) against batch 16 (four, as the overhead probe runs it), alternating launches; each
rank's CPU inside its computations per micro-batch (the optimizer step spread over them).
Run from the repository root with nothing else running."""
import json
import statistics as st
import sys
import tempfile
from pathlib import Path

from runtime.launch import run_local

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
got = {4: [], 16: []}
with tempfile.TemporaryDirectory() as tmp:
    for i in range(rounds):
        for batch in (4, 16):
            out = Path(tmp) / f"b{batch}_{i}.json"
            run_local("runtime", ["--schedule", "gpipe", "--micro-batch-size", "4", "--batch-size", str(batch),
                                  "--steps", "20", "--warmup", "2", "--out", str(out)], 3, echo=False,
                      log_dir=Path(tmp) / f"log{batch}_{i}")
            res = json.loads(out.read_text())
            per = [p["compute_cpu_per_step"]["median"] / (batch // 4) for p in sorted(res["per_rank"], key=lambda p: p["rank"])]
            got[batch].append(per)
            print(f"batch {batch:2d} ({batch // 4} micro-batch{'es' if batch > 4 else ''}): compute CPU per micro-batch, ms, "
                  f"ranks 0/1/2: {' / '.join(f'{1000 * x:.2f}' for x in per)}", flush=True)
for r in range(3):
    a, b = st.median(x[r] for x in got[4]), st.median(x[r] for x in got[16])
    print(f"rank {r}: one micro-batch per step {1000 * a:.2f} ms, four {1000 * b:.2f} ms: {100 * (a / b - 1):+.1f}%")
