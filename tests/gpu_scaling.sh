#!/usr/bin/env bash
# Per-GPU throughput of data parallelism: T6-small (micro-batch 24 × 5 accumulation) on W GPUs
# must reach at least 98% of one GPU's tokens/s per GPU. A W-GPU job runs at the pace of its
# slowest GPU, so "one GPU" is the slowest of the W measured alone. Shared machines drift, so
# the runs alternate (each GPU alone, then all W, three rounds) and medians are compared.
# Skips (exit 77) with fewer than W GPUs. Usage: tests/gpu_scaling.sh BUILD_DIR SOURCE_DIR [W]
set -euo pipefail
build="$1"; src="$2"; W="${3:-2}"; rounds=3
gpus=$( (nvidia-smi -L 2>/dev/null || true) | grep -c "^GPU" || true)
if [ "$gpus" -lt "$W" ]; then echo "gpu_scaling: SKIPPED: needs $W GPUs, this machine shows $gpus"; exit 77; fi
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
bench() {  # the median tokens/s per rank of one run: column 7 of the benchmark table's row (the one with "×")
  "$@" --config "$src/configs/t6-small-tpa.yaml" --benchmark 12 | awk -F'|' '$3 ~ /×/ && $7 ~ /[0-9]/ {gsub(/ /, "", $7); print $7}'
}
median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
declare -a alone
many=""
for ((round = 1; round <= rounds; round++)); do
  line="round $round:"
  for ((g = 0; g < W; g++)); do
    t=$(CUDA_VISIBLE_DEVICES=$g bench "$build/trainer/t6-train")
    [ -n "$t" ] || { echo "FAIL: GPU $g alone gave no benchmark row"; exit 1; }
    alone[$g]="${alone[$g]:-} $t"
    line="$line GPU $g alone $t,"
  done
  t=$(bench mpirun -np "$W" --bind-to none -x NCCL_NVLS_ENABLE "$build/trainer/t6-train")
  [ -n "$t" ] || { echo "FAIL: the $W-GPU run gave no benchmark row"; exit 1; }
  many="$many $t"
  echo "$line $W GPUs $t tokens/s per GPU"
done
one=""
for ((g = 0; g < W; g++)); do
  m=$(echo "${alone[$g]}" | median)
  echo "GPU $g alone: median $m tokens/s (runs:${alone[$g]})"
  if [ -z "$one" ] || awk -v a="$m" -v b="$one" 'BEGIN { exit !(a < b) }'; then one=$m; fi
done
m=$(echo "$many" | median)
echo "$W GPUs: median $m tokens/s per GPU (runs:$many); the slowest GPU alone: $one"
awk -v a="$one" -v b="$m" 'BEGIN { r = b / a; printf "ratio %.4f (must be >= 0.98)\n", r; exit !(r >= 0.98) }'
