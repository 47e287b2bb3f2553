#!/usr/bin/env bash
# Training throughput of a config on random tokens: tokens/s, ms/step, MFU and memory.
# Usage: launch/bench.sh CONFIG.yaml [-n NPROC] [--steps N] [--set section.key=value ...]
#   -n NPROC   data-parallel processes (one per GPU), through launch/train.sh
#   --steps N  steps to time (default 10); the table reports the median after 2 warm-up steps
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
config="$1"; shift
steps=10; args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
exec "$root/launch/train.sh" "$config" --benchmark "$steps" "${args[@]}"
