#!/usr/bin/env bash
# Prepared GPU check (one short run on a CUDA machine). Writes logs to $OUT (or ./gpu-out).
#   bash benchmarks/gpu_check.sh
# 1. runtime CUDA path: 2 and 3 ranks, both schedules, parameters vs unpartitioned (runtime.gpu_check)
# 2. calibration CUDA path: 2 ranks, CUDA events, device/backend/dtype recorded (calibrate.gpu_check)
# 3. GPT-3 small compute on this GPU: 3 stages, micro-batch 1/2/4, fp32 (profile kept as a file)
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD; fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), 'nccl', torch.cuda.nccl.version())"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
echo "== runtime.gpu_check"; timeout 200 python3 -m runtime.gpu_check --ranks 2,3 --timeout 60 > "$OUT/runtime_gpu.txt" 2>&1; echo "rc=$?" >> "$OUT/runtime_gpu.txt"; tail -15 "$OUT/runtime_gpu.txt"
echo "== calibrate.gpu_check"; timeout 150 python3 -m calibrate.gpu_check --timeout 60 > "$OUT/calibrate_gpu.txt" 2>&1; echo "rc=$?" >> "$OUT/calibrate_gpu.txt"; tail -25 "$OUT/calibrate_gpu.txt"
echo "== gpt3-small compute, 3 stages on one GPU (gloo links, fp32)"
timeout 200 torchrun --standalone --nproc-per-node 3 -m calibrate.worker --model gpt3-small --micro-batch-sizes 1,2,4 \
  --device cuda --backend gloo --dtype float32 --repeats 10 --link-repeats 3 --link-max-bytes 33554432 \
  --out "$OUT/gpt3_small_h200_fp32.json" --force > "$OUT/gpt3_calibrate.txt" 2>&1; echo "rc=$?" >> "$OUT/gpt3_calibrate.txt"
tail -30 "$OUT/gpt3_calibrate.txt"
