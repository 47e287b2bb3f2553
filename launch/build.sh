#!/usr/bin/env bash
# Configures and builds into build/ (or $T6_BUILD_DIR). Usage: launch/build.sh [extra cmake args]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${T6_BUILD_DIR:-$root/build}"
generator=()
[ -f "$build/CMakeCache.txt" ] || { command -v ninja >/dev/null && generator=(-G Ninja); }
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "${generator[@]}" "$@" >/dev/null
cmake --build "$build" -j "$(nproc)"
