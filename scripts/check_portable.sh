#!/usr/bin/env bash
# The portable (non-x86) kernel path, checked on any host: a build with the x86 SIMD
# kernels left out (-DDSCKPT_FORCE_GENERIC=ON, what aarch64 compiles) running the
# kernel tests; then, where an aarch64 cross compiler is installed
# (gcc-aarch64-linux-gnu + libc6-dev-arm64-cross, scripts/setup.sh), kernels/ compiled for aarch64 with
# -Werror. Usage: bash scripts/check_portable.sh [BUILD_DIR]   (default build-generic)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-generic}
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSCKPT_FORCE_GENERIC=ON -DDSCKPT_WERROR=ON \
  -DDSCKPT_BLAS=OFF -DDS_PYTHON3="$PWD/.venv/bin/python3" >/dev/null
cmake --build "$dir" -j"$(nproc)" --target test_cast test_kernels
"$dir/test_cast" | tail -4
"$dir/test_kernels" | tail -4
# No x86 object may have been built.
if find "$dir" -name 'cast_avx*.o' | grep -q .; then
  echo "check_portable: x86 SIMD objects in a generic build" >&2
  exit 1
fi
if command -v aarch64-linux-gnu-gcc >/dev/null &&
   echo '#include <stdint.h>' | aarch64-linux-gnu-gcc -E -x c - >/dev/null 2>&1; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
  for src in kernels/cast.c kernels/gemm.c kernels/nn.c kernels/optim.c; do
    aarch64-linux-gnu-gcc -std=gnu11 -O2 -fopenmp -ffp-contract=off -D_GNU_SOURCE -Wall -Wextra -Wshadow \
      -Wstrict-prototypes -Wvla -Werror -Ikernels -c "$src" -o "$out/$(basename "$src" .c).o"
  done
  echo "check_portable: kernels/ cross-compiled for aarch64"
else
  echo "check_portable: SKIPPED aarch64 cross-compile: no aarch64-linux-gnu-gcc with its C library headers" \
       "(apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"
fi
echo "check_portable: ok"
