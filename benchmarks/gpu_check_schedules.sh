#!/usr/bin/env bash
# Prepared GPU check of the newer schedules (issue #14): one short run on a CUDA machine, about
# 4 minutes. Writes its logs and profiles to $OUT (or ./gpu-out). Parts can be picked by number:
#   bash benchmarks/gpu_check_schedules.sh            # parts 1-5
#   bash benchmarks/gpu_check_schedules.sh 2 2b 4b    # the split backward in fp32 and bf16, idle probe in bf16
# 1. the runtime's CUDA path for zbh1 (split backward) and interleaved1f1b (2 stages per rank), 2 and 3
#    ranks: parameters after one step against the unpartitioned model (runtime.gpu_check --model tiny6)
# 2. the split backward on CUDA: gradients equal the fused backward's, and B + W against the fused
#    backward, ours and torch's (benchmarks/bench_split.py, GPT-3 small, 3 stages, fp32)
# 3. calibration on CUDA under torchrun with --split-backward --stages-per-rank 2: GPT-3 small, 3 ranks,
#    micro-batch 1/2/4, fp32, with the runtime overhead probe (the profile is kept)
# 4. compute after an idle gap on this GPU (benchmarks/idle_probe.py, GPT-3 small stage 1)
# 5. as 3 in bfloat16, micro-batch 1/2/4/8, without the overhead probe (the profile is kept)
# 2b, 4b: as 2 and 4 in bfloat16 (not in the default run)
# Each part has its own time limit, so that one hung part leaves the others' results.
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD; fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; nproc;
  python3 -c "import torch, simpy; print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), 'nccl', torch.cuda.nccl.version(), 'simpy', simpy.__version__)"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
t0=$(date +%s); el() { echo "  ($(( $(date +%s) - t0 )) s so far)"; }

part_1() {
echo "== 1. runtime.gpu_check: zbh1 and interleaved1f1b"
timeout 150 python3 -m runtime.gpu_check --model tiny6 --schedules zbh1,interleaved1f1b --ranks 2,3 --timeout 45 \
  > "$OUT/runtime_gpu_schedules.txt" 2>&1; echo "rc=$?" >> "$OUT/runtime_gpu_schedules.txt"
tail -8 "$OUT/runtime_gpu_schedules.txt"; el
}

part_2() {
echo "== 2. bench_split on CUDA"
timeout 75 python3 benchmarks/bench_split.py --model gpt3-small --device cuda --micro-batch-sizes 1,2,4 \
  --warmup 5 --repeats 20 > "$OUT/bench_split_cuda.txt" 2>&1; echo "rc=$?" >> "$OUT/bench_split_cuda.txt"
tail -24 "$OUT/bench_split_cuda.txt"; el
}

part_3() {
echo "== 3. calibration on CUDA, split backward and 2 stages per rank, fp32"
timeout 170 torchrun --standalone --nproc-per-node 3 -m calibrate.worker --model gpt3-small --micro-batch-sizes 1,2,4 \
  --device cuda --backend gloo --dtype float32 --repeats 10 --link-repeats 3 --link-max-bytes 33554432 \
  --split-backward --stages-per-rank 2 --out "$OUT/gpt3_small_h200_fp32_split.json" --force \
  > "$OUT/calibrate_split_fp32.txt" 2>&1; echo "rc=$?" >> "$OUT/calibrate_split_fp32.txt"
tail -12 "$OUT/calibrate_split_fp32.txt"; el
}

part_4() {
echo "== 4. compute after an idle gap on this GPU"
timeout 60 python3 benchmarks/idle_probe.py --model gpt3-small --device cuda --micro-batch-sizes 1,4 --rounds 12 \
  > "$OUT/idle_probe_cuda.txt" 2>&1; echo "rc=$?" >> "$OUT/idle_probe_cuda.txt"
tail -18 "$OUT/idle_probe_cuda.txt"; el
}

part_5() {
echo "== 5. calibration on CUDA, split backward and 2 stages per rank, bf16"
timeout 90 torchrun --standalone --nproc-per-node 3 -m calibrate.worker --model gpt3-small --micro-batch-sizes 1,2,4,8 \
  --device cuda --backend gloo --dtype bfloat16 --repeats 10 --link-repeats 3 --link-max-bytes 33554432 \
  --split-backward --stages-per-rank 2 --no-overhead-probe --out "$OUT/gpt3_small_h200_bf16_split.json" --force \
  > "$OUT/calibrate_split_bf16.txt" 2>&1; echo "rc=$?" >> "$OUT/calibrate_split_bf16.txt"
tail -6 "$OUT/calibrate_split_bf16.txt"; el
}

part_2b() {
echo "== 2b. bench_split on CUDA, bf16"
timeout 75 python3 benchmarks/bench_split.py --model gpt3-small --device cuda --dtype bfloat16 --micro-batch-sizes 1,2,4,8 \
  --warmup 5 --repeats 20 > "$OUT/bench_split_cuda_bf16.txt" 2>&1; echo "rc=$?" >> "$OUT/bench_split_cuda_bf16.txt"
tail -28 "$OUT/bench_split_cuda_bf16.txt"; el
}

part_4b() {
echo "== 4b. compute after an idle gap on this GPU, bf16"
timeout 60 python3 benchmarks/idle_probe.py --model gpt3-small --device cuda --dtype bfloat16 --micro-batch-sizes 1,8 \
  --rounds 12 > "$OUT/idle_probe_cuda_bf16.txt" 2>&1; echo "rc=$?" >> "$OUT/idle_probe_cuda_bf16.txt"
tail -18 "$OUT/idle_probe_cuda_bf16.txt"; el
}

for part in ${@:-1 2 3 4 5}; do "part_$part"; done
