#!/usr/bin/env bash
# fuzz.sh SECONDS — builds every libFuzzer target (clang, ASan + UBSan, the library
# and runtime instrumented for coverage: tests/fuzz/fuzz.cmake) into build-fuzz/
# and runs each for SECONDS, starting from a copy of its corpus
# tests/fuzz/corpus/<target>/ (so every checked-in input, regressions included,
# runs first). Targets run FUZZ_JOBS at a time (default: the number of CPUs).
# Prints one line per target with libFuzzer's final edge coverage (cov), features
# (ft), executions and corpus size. On a crash, leak or timeout it prints the log
# and the input (hex), keeps the input in fuzz-crashes/, and fails.
#
# Environment: FUZZ_JOBS, FUZZ_TARGETS (space-separated subset), FUZZ_BUILD
# (build dir, default build-fuzz), FUZZ_KEEP (a directory: the grown corpora are
# copied there, one subdirectory per target).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:?usage: scripts/fuzz.sh SECONDS}
ALL="safetensors manifest zip pickle deepspeed verify tag zchunk trainer_state config data engine_load"
TARGETS=${FUZZ_TARGETS:-$ALL}
JOBS=${FUZZ_JOBS:-$(nproc)}
B=${FUZZ_BUILD:-build-fuzz}
CC=clang cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSCKPT_FUZZ=ON -DDSCKPT_ASAN=ON \
  -DDSCKPT_UBSAN=ON -DDSCKPT_BLAS=OFF >/dev/null
# shellcheck disable=SC2046
cmake --build "$B" -j"$(nproc)" --target $(for t in $TARGETS; do printf 'fuzz_%s ' "$t"; done) >/dev/null

# The harnesses write their files under TMPDIR (tests/fuzz/fuzz_util.h): a tmpfs
# directory of this run's own, removed at the end even if a harness crashed.
base=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
RUN=$(mktemp -d "$base/dsckpt-fuzz-run.XXXXXX")
trap 'rm -rf "$RUN"' EXIT
export TMPDIR=$RUN/tmp
mkdir -p "$TMPDIR"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

max_len() {
  case $1 in
    deepspeed | verify | engine_load | trainer_state) echo 131072 ;;
    *) echo 65536 ;;
  esac
}

run_one() {
  local t=$1 w=$RUN/$1
  mkdir -p "$w/corpus" "$w/art"
  cp -r "tests/fuzz/corpus/$t/." "$w/corpus/"
  "$B/fuzz_$t" -max_total_time="$SECONDS_EACH" -max_len="$(max_len "$t")" -timeout=30 -rss_limit_mb=4096 \
    -dict=tests/fuzz/fuzz.dict -print_final_stats=1 -artifact_prefix="$w/art/" "$w/corpus" >"$w/log" 2>&1 &&
    echo 0 >"$w/rc" || echo $? >"$w/rc"
}

for t in $TARGETS; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  run_one "$t" &
done
wait
fail=0
for t in $TARGETS; do
  w=$RUN/$t
  if [ "$(cat "$w/rc" 2>/dev/null)" != 0 ]; then
    fail=1
    echo "==== fuzz_$t: FAILED; its log:"
    tail -60 "$w/log"
    mkdir -p fuzz-crashes
    for a in "$w"/art/*; do
      [ -f "$a" ] || continue
      cp "$a" "fuzz-crashes/$t-$(basename "$a")"
      echo "==== the input ($(stat -c %s "$a") bytes, kept as fuzz-crashes/$t-$(basename "$a")); first 4 KiB in hex:"
      head -c 4096 "$a" | od -A d -t x1z | head -300
    done
    continue
  fi
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$w/log" | tail -1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$w/log" | tail -1)
  cov=$(echo "$done_line" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
  ft=$(echo "$done_line" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
  corp=$(echo "$done_line" | sed -n 's/.*corp: \([^ ]*\).*/\1/p')
  eps=$(echo "$done_line" | sed -n 's/.*exec\/s: \([0-9]*\).*/\1/p')
  echo "fuzz_$t: cov ${cov:-?} ft ${ft:-?} execs ${execs:-?} (${eps:-?}/s) corpus ${corp:-?} in ${SECONDS_EACH}s, no crash"
  if [ -n "${FUZZ_KEEP:-}" ]; then
    mkdir -p "$FUZZ_KEEP/$t"
    cp -r "$w/corpus/." "$FUZZ_KEEP/$t/"
  fi
done
[ $fail = 0 ] || { echo "fuzz.sh: a target failed (inputs in fuzz-crashes/)"; exit 1; }
echo "fuzz.sh: $(echo "$TARGETS" | wc -w) targets, ${SECONDS_EACH}s each, no crash"
