#!/usr/bin/env bash
# Builds and runs the whole test suite. Usage: cmake/test.sh [PRESET...]  (default: release)
# Installs the Debian packages it needs first (cmake/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash cmake/install-deps.sh
presets=("$@")
[ ${#presets[@]} -eq 0 ] && presets=(release)
for preset in "${presets[@]}"; do
  echo "== $preset: configure, build, test"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  ctest --preset "$preset"
done
