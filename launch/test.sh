#!/usr/bin/env bash
# The project's test command: install what is missing, build, run every test that this
# machine can run (gpu tests skip themselves when there is no device).
# Usage: launch/test.sh [ctest args, e.g. -L cpu or -R golden]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/launch/setup.sh"
"$root/launch/build.sh"
build="${T6_BUILD_DIR:-$root/build}"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" "$@"
