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

# A package counts as present when dpkg has it, or when what the build takes from it is
# already on the machine (images that install toolkits without dpkg records, such as GPU
# machines' images with cmake and the libraries built in).
header() {
  for dir in /usr/include /usr/local/include /usr/include/*-linux-gnu /usr/lib/*-linux-gnu/openmpi/include \
             /usr/include/hdf5/serial /opt/*/include; do
    [ -e "$dir/$1" ] && return 0
  done
  return 1
}
provided() {
  case "$1" in
    cmake) command -v cmake ;;
    ninja-build) command -v ninja ;;
    g++) command -v g++ ;;
    pkg-config) command -v pkg-config ;;
    libhdf5-dev) header hdf5.h ;;
    libyaml-cpp-dev) header yaml-cpp/yaml.h ;;
    libfmt-dev) header fmt/format.h ;;
    libgtest-dev) header gtest/gtest.h ;;
    libopenblas-openmp-dev) header openblas-openmp/cblas.h || pkg-config --exists openblas ;;  # what CMake accepts
    nlohmann-json3-dev) header nlohmann/json.hpp ;;
    zlib1g-dev) header zlib.h ;;
    libopenmpi-dev) mpicc --showme:version ;;  # Open MPI's wrapper (the launch scripts use its flags)
    openmpi-bin) mpirun --version | grep -q "Open MPI" ;;
    *) false ;;
  esac >/dev/null 2>&1
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || provided "$p" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all build dependencies present"
  exit 0
fi

# What the build takes from each package, for the message when apt-get cannot install it.
needs() {
  case "$1" in
    cmake) echo "cmake 3.24 or later on PATH" ;;
    ninja-build) echo "ninja on PATH (or remove build/ and let cmake use make)" ;;
    g++) echo "a C++20 compiler (g++ 12 or later) on PATH" ;;
    pkg-config) echo "pkg-config on PATH" ;;
    libhdf5-dev) echo "HDF5's C library and hdf5.h" ;;
    libyaml-cpp-dev) echo "yaml-cpp (yaml-cpp/yaml.h and its CMake package)" ;;
    libfmt-dev) echo "fmt (fmt/format.h and its CMake package)" ;;
    libgtest-dev) echo "GoogleTest (gtest/gtest.h and its CMake package)" ;;
    libopenblas-openmp-dev) echo "OpenBLAS built with OpenMP (cblas.h; pkg-config openblas)" ;;
    nlohmann-json3-dev) echo "nlohmann/json.hpp" ;;
    zlib1g-dev) echo "zlib.h and libz" ;;
    libopenmpi-dev) echo "Open MPI's headers and mpicc" ;;
    openmpi-bin) echo "Open MPI's mpirun on PATH" ;;
  esac
}

echo "setup: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! { $sudo apt-get update -qq &&
       DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; }; then
  echo "setup: apt-get could not install what the build still needs:" >&2
  for p in "${missing[@]}"; do echo "  $p: $(needs "$p")" >&2; done
  echo "setup: provide these another way (on PATH, or under /usr/local), then run it again" >&2
  exit 1
fi
