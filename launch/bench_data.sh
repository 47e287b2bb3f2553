#!/usr/bin/env bash
# Data-pipeline throughput on this machine: t6-prepare (gpt2) in MB/s, loader in tokens/s per rank.
# Usage: launch/bench_data.sh [t6-bench-data options, e.g. --tokens 100000000]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/launch/setup.sh" >/dev/null
"$root/launch/build.sh" >/dev/null
exec "${T6_BUILD_DIR:-$root/build}/trainer/t6-bench-data" "$@"
