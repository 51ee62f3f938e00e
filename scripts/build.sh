#!/usr/bin/env bash
# Configures and builds dsckpt into build/ (or $1). Extra arguments go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}"
shift || true
# The test suite's build: test hooks (fault injection) are compiled in; a plain
# `cmake -S . -B build` (a release build) leaves them out.
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDS_PYTHON3="$PWD/.venv/bin/python3" -DDSCKPT_TEST_HOOKS=ON "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
