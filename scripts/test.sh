#!/usr/bin/env bash
# The whole test suite: setup, a -Werror build with every test, then the same suite
# built with AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build -DDSCKPT_WERROR=ON
ctest --test-dir build --output-on-failure -j2
bash scripts/build.sh build-asan -DDSCKPT_ASAN=ON -DDSCKPT_UBSAN=ON -DDSCKPT_WERROR=ON
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j2
# Brief libFuzzer runs of every parser (clang), starting from the checked-in corpus.
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSCKPT_FUZZ=ON -DDSCKPT_ASAN=ON \
  -DDSCKPT_UBSAN=ON >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_safetensors fuzz_manifest fuzz_zip fuzz_pickle
for f in safetensors manifest zip pickle; do
  work=$(mktemp -d)
  cp -r "tests/fuzz/corpus/$f/." "$work/"
  if ! build-fuzz/fuzz_$f -max_total_time="$FUZZ_SECONDS" -max_len=65536 "$work" >"$work.log" 2>&1; then
    cat "$work.log"
    echo "fuzz_$f: FAILED (the crashing input is above and in the current directory)"
    exit 1
  fi
  echo "fuzz_$f: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$work.log" | tail -1), no crash"
  rm -rf "$work" "$work.log"
done
echo "test.sh: all suites passed (plain and ASan+UBSan builds, fuzzing)"
