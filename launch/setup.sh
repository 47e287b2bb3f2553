#!/usr/bin/env bash
# Installs the distribution packages the build needs, only those that are missing.
# Idempotent: prints one line and does nothing when everything is present.
set -euo pipefail

packages=(cmake ninja-build g++ pkg-config libhdf5-dev libyaml-cpp-dev libfmt-dev
          libgtest-dev libopenblas-openmp-dev nlohmann-json3-dev zlib1g-dev
          libopenmpi-dev openmpi-bin)

if ! command -v dpkg-query >/dev/null 2>&1; then
  # Not a Debian/Ubuntu machine (e.g. a prepared GPU image): trust what is installed.
  echo "setup: no dpkg here; assuming the build dependencies are installed"
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all build dependencies present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
