#!/usr/bin/env bash
# The whole test suite: setup, a -Werror build with every test (test hooks compiled
# in), a -Werror -O3 release build (tests compiled too) checked to ignore the test
# hooks, then the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer
# (and the native GEMM kernels instead of OpenBLAS).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The layers: no include goes up (common < formats < libckpt < runtime, cli).
bash scripts/check-includes.sh
# No function over 80 lines without a "One piece:" comment saying why.
bash scripts/check-long-functions.sh
bash scripts/build.sh build -DDSCKPT_WERROR=ON
ctest --test-dir build --output-on-failure -j2
# A release build (test hooks left out, as a plain cmake configure does) ignores them.
# It is built -O3 (Release) with the tests and -Werror: -O3 inlines more and so finds
# warnings (-Wmaybe-uninitialized, -Wformat-truncation) the -O2 builds above do not.
# The tests are only compiled here (without hooks their fault-injection parts would
# fail), so configure's warning about DSCKPT_TEST_HOOKS=OFF is expected.
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DDSCKPT_BUILD_TESTS=ON -DDSCKPT_WERROR=ON >/dev/null
cmake --build build-release -j"$(nproc)"
bash tests/release_hooks_test.sh "$PWD/build-release" "$PWD"
# The portable kernel path (what aarch64 builds), and an aarch64 cross-compile of kernels/.
bash scripts/check_portable.sh build-generic
# The sanitizer build trains with the native kernels (-DDSCKPT_BLAS=OFF): the suite
# runs once through OpenBLAS (the default build above, where it is installed) and
# once through the native GEMMs, the reference every GEMM path is tested against.
bash scripts/build.sh build-asan -DDSCKPT_ASAN=ON -DDSCKPT_UBSAN=ON -DDSCKPT_WERROR=ON -DDSCKPT_BLAS=OFF
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j2
# Brief libFuzzer runs of every target (clang; library and runtime instrumented),
# each starting from its checked-in corpus, two at a time: 11 targets x 20 s / 2.
bash scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
echo "test.sh: all suites passed (plain and ASan+UBSan builds, fuzzing)"
