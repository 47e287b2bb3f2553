#!/usr/bin/env bash
# A GPU whose stream stops (rank 1's gradient all-reduce held behind a two-minute host callback,
# as behind a hung kernel) must end a 2-GPU job within train.collective_timeout_s, the waiting
# rank named, instead of leaving both ranks blocked forever. Skips (exit 77) with fewer than 2
# GPUs. Usage: tests/gpu_nccl_hang.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build="$1"; src="$2"
gpus=$( (nvidia-smi -L 2>/dev/null || true) | grep -c "^GPU" || true)
if [ "$gpus" -lt 2 ]; then echo "gpu_nccl_hang: SKIPPED: needs 2 GPUs, this machine shows $gpus"; exit 77; fi
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
start=$(date +%s)
log=$(timeout 100 mpirun -np 2 --bind-to none -x NCCL_NVLS_ENABLE -x T6_TEST_FAULT_RANK=1 -x T6_TEST_NCCL_STALL_CALL=20 \
  "$build/trainer/t6-train" --config "$src/configs/demo.yaml" --set train.device=cuda --set train.max_iters=50 \
  --set sample.max_new_tokens=0 --set checkpoint.interval=0 --set train.collective_timeout_s=5 \
  --set "train.out_dir=$out/run" 2>&1)
rc=$?
took=$(( $(date +%s) - start ))
echo "$log" | grep -E "error on rank" | head -2
echo "exit $rc after $took s"
if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ]; then echo "FAIL: the job did not end with an error (exit $rc)"; exit 1; fi
echo "$log" | grep -qE "error on rank [01] of 2: no progress for [0-9]+ s inside NCCL" ||
  { echo "FAIL: no rank said it waited inside NCCL"; exit 1; }
[ "$took" -lt 60 ] || { echo "FAIL: took $took s with a 5 s timeout"; exit 1; }
echo "PASS"
