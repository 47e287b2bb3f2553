#!/usr/bin/env bash
# Trains a config: install what is missing, build, run t6-train.
# Usage: launch/train.sh CONFIG.yaml [--set section.key=value ...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -lt 1 ]; then
  echo "usage: launch/train.sh CONFIG.yaml [--set section.key=value ...]" >&2
  exit 2
fi
config="$1"; shift
"$root/launch/setup.sh" >/dev/null
"$root/launch/build.sh" >/dev/null
build="${T6_BUILD_DIR:-$root/build}"
exec "$build/trainer/t6-train" --config "$config" "$@"
