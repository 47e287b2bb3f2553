#!/usr/bin/env bash
# Training throughput of a config on random tokens: tokens/s, ms/step, MFU and memory.
# Usage: launch/bench.sh CONFIG.yaml [-n NPROC] [--steps N] [--compare] [--set section.key=value ...]
#   -n NPROC   data-parallel processes (one per GPU), through launch/train.sh
#   --steps N  steps to time (default 10); the table reports the median after 2 warm-up steps
#   --compare  then time an independent PyTorch implementation of the same model on the same GPU
#              (tests/pytorch/t6_reference.py: the authors' recipe, torch.compile, bf16 autocast,
#              cuDNN attention, fused AdamW) and print both and the ratio (one process only)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
config="$1"; shift
steps=10; compare=0; nproc=1; args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --steps)
      if [ $# -lt 2 ] || ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then
        echo "bench.sh: --steps expects a number of steps (1 or more), got '${2-}'" >&2
        exit 2
      fi
      steps="$2"; shift 2 ;;
    --compare) compare=1; shift ;;
    -n|--nproc)
      if [ $# -lt 2 ] || ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then
        echo "bench.sh: $1 expects a number of processes (1 or more), got '${2-}'" >&2
        exit 2
      fi
      nproc="$2"; args+=("$1" "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ "$compare" -eq 0 ]; then
  exec "$root/launch/train.sh" "$config" --benchmark "$steps" "${args[@]}"
fi
if [ "$nproc" -ne 1 ]; then
  echo "bench.sh: --compare times one process on one GPU; drop -n $nproc" >&2
  exit 2
fi
for a in "${args[@]}"; do
  if [ "$a" = "--set" ]; then
    echo "bench.sh: --compare times the config file as it is on both sides; put the --set changes into a copy of it" >&2
    exit 2
  fi
done
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
"$root/launch/train.sh" "$config" --benchmark "$steps" "${args[@]}" | tee "$log"
# The benchmark table's row: | config | shape | tokens/step | ms/step | tokens/s | ...
read -r ours_ms ours < <(awk -F'|' '$3 ~ /×/ && $6 ~ /[0-9]/ {gsub(/ /, "", $5); gsub(/ /, "", $6); print $5, $6}' "$log" | tail -1)
echo
if ! python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  echo "bench.sh: PyTorch with CUDA is not available here: no comparison (this project alone: $ours tokens/s)"
  exit 0
fi
echo "PyTorch comparison: the same model, micro-batch, accumulation and T (compiling takes a minute)..."
theirs_line=$(python3 "$root/tests/pytorch/t6_reference.py" benchmark "$config" --steps "$steps" | grep '^pytorch_benchmark')
read -r _ theirs theirs_ms rest <<<"$theirs_line"
echo
echo "| implementation | ms/step | tokens/s |"
echo "|---|---|---|"
echo "| this project | $ours_ms | $ours |"
echo "| PyTorch reference ${rest} | $theirs_ms | $theirs |"
awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "ratio (this project / PyTorch): %.2fx\n", a / b }'
