#!/usr/bin/env bash
# launch/setup.sh decides by what is on the machine, not by dpkg's records: with a dpkg that
# knows no package (as on images that install toolkits without it) and everything present, it
# installs nothing; with cmake missing from PATH and apt-get failing, it stops with a message
# that names cmake and what the build needs from it. Usage: setup_test.sh SOURCE_DIR
set -uo pipefail
src="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/fake" "$work/bare"
printf '#!/bin/sh\nexit 1\n' > "$work/fake/dpkg-query"                             # knows no package
printf '#!/bin/sh\necho called >> "%s/apt-calls"\nexit 100\n' "$work" > "$work/fake/apt-get"  # no mirror
chmod +x "$work/fake/dpkg-query" "$work/fake/apt-get"

out=$(PATH="$work/fake:$PATH" "$src/launch/setup.sh" 2>&1); rc=$?
echo "$out"
[ $rc -eq 0 ] || { echo "FAIL: setup.sh failed with everything present (rc $rc)"; exit 1; }
grep -q "all build dependencies present" <<<"$out" || { echo "FAIL: it did not find everything present"; exit 1; }
[ ! -e "$work/apt-calls" ] || { echo "FAIL: apt-get was called although nothing was missing"; exit 1; }

# The same machine seen through a PATH without cmake.
for tool in bash env grep id g++ ninja pkg-config mpicc mpirun; do
  p=$(command -v "$tool") && ln -s "$p" "$work/bare/$tool"
done
cp "$work/fake/dpkg-query" "$work/fake/apt-get" "$work/bare/"
out=$(PATH="$work/bare" "$src/launch/setup.sh" 2>&1); rc=$?
echo "$out"
[ $rc -ne 0 ] || { echo "FAIL: setup.sh succeeded without cmake and without apt-get"; exit 1; }
grep -q "^  cmake: cmake 3.24 or later on PATH" <<<"$out" || { echo "FAIL: the message does not name cmake"; exit 1; }
[ -e "$work/apt-calls" ] || { echo "FAIL: apt-get was not tried for the missing cmake"; exit 1; }
echo PASS
