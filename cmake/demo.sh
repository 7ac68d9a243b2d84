#!/usr/bin/env bash
# Builds and runs the README demo (examples/hello_mesh).
# Installs the Debian packages it needs first (cmake/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash cmake/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target hello_mesh >/dev/null
exec build/release/examples/hello_mesh/hello_mesh
