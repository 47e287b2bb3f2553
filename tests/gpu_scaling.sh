#!/usr/bin/env bash
# Per-GPU throughput of data parallelism: T6-small (micro-batch 24 × 5 accumulation) on W GPUs
# must reach at least 98% of one GPU's tokens/s per GPU. A W-GPU job runs at the pace of its
# slowest GPU, so "one GPU" is the slowest of the W measured alone. Skips (exit 77) with fewer
# than W GPUs. Usage: tests/gpu_scaling.sh BUILD_DIR SOURCE_DIR [W]
set -euo pipefail
build="$1"; src="$2"; W="${3:-2}"
gpus=$( (nvidia-smi -L 2>/dev/null || true) | grep -c "^GPU" || true)
if [ "$gpus" -lt "$W" ]; then echo "gpu_scaling: SKIPPED: needs $W GPUs, this machine shows $gpus"; exit 77; fi
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
bench() {  # the median tokens/s per rank: column 7 of the benchmark table's row (the one with "×")
  "$@" --config "$src/configs/t6-small-tpa.yaml" --benchmark 12 | awk -F'|' '$3 ~ /×/ && $7 ~ /[0-9]/ {gsub(/ /, "", $7); print $7}'
}
one=""
for ((g = 0; g < W; g++)); do
  t=$(CUDA_VISIBLE_DEVICES=$g bench "$build/trainer/t6-train")
  echo "GPU $g alone: $t tokens/s"
  if [ -z "$one" ] || [ "$t" -lt "$one" ]; then one=$t; fi
done
many=$(bench mpirun -np "$W" --bind-to none -x NCCL_NVLS_ENABLE "$build/trainer/t6-train")
echo "$W GPUs: $many tokens/s per GPU; the slowest GPU alone: $one"
awk -v a="$one" -v b="$many" 'BEGIN { r = b / a; printf "ratio %.4f (must be >= 0.98)\n", r; exit !(r >= 0.98) }'
