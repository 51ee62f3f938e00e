#!/usr/bin/env bash
# Configures and builds dsckpt into build/ (or $1). Extra arguments go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}"
shift || true
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDS_PYTHON3="$PWD/.venv/bin/python3" "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
