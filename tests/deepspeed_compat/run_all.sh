#!/usr/bin/env bash
# Load every fixtures/deepspeed/* checkpoint with real DeepSpeed: the original at its own world
# size, then `dsckpt reshard --format deepspeed` outputs at M = 1 2 3 4 8, each compared bitwise
# with expected/truth.safetensors. Manual check, not part of CI (see README.md beside this file).
#
#   tests/deepspeed_compat/run_all.sh PYTHON BUILD_DIR [WORK_DIR]
#
# PYTHON     interpreter of a venv with torch + deepspeed (e.g. $VENV/bin/python)
# BUILD_DIR  the CMake build dir holding dsckpt
# WORK_DIR   where resharded checkpoints and logs go (default: a new temp dir)
#
# Environment: FIXTURES (default: all six), SIZES (default "1 2 3 4 8"),
# TRAIN_STEP_SIZES (sizes that also run --train-step; default "3"), TIMEOUT (s per check, 1800).
# Runs one check at a time. Prints one RESULT line per check and a final tally; exit 1 on any FAIL.
set -u

if [ $# -lt 2 ]; then
    sed -n '2,14p' "$0" >&2
    exit 3
fi
PY=$1
BUILD=$2
WORK=${3:-$(mktemp -d -t dscompat.XXXXXX)}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DSCKPT=$BUILD/dsckpt
FIXTURES=${FIXTURES:-"z1_ws2_bf16 z1_ws2_bf16opt z2_ws4_bf16_edge z2_ws4_fp32 z3_ws2_bf16 z3_ws4_fp32_1g"}
SIZES=${SIZES:-"1 2 3 4 8"}
TRAIN_STEP_SIZES=${TRAIN_STEP_SIZES:-"3"}
TIMEOUT=${TIMEOUT:-1800}
export DS_BUILD_OPS=${DS_BUILD_OPS:-0}
mkdir -p "$WORK"
[ -x "$DSCKPT" ] || { echo "no $DSCKPT" >&2; exit 3; }

pass=0 fail=0

check() {  # label save_dir M truth [extra args]
    local label=$1 dir=$2 m=$3 truth=$4
    shift 4
    local log=$WORK/logs/$label
    mkdir -p "$log"
    local t0=$SECONDS
    "$PY" "$HERE/load_check.py" "$dir" "$m" --truth "$truth" --timeout "$TIMEOUT" \
        --log-dir "$log" --quiet "$@" >"$log/launcher.out" 2>&1
    local rc=$?
    local verdict=PASS
    [ $rc -eq 0 ] || verdict=FAIL
    if [ $rc -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
    echo "RESULT $label M=$m $verdict ($((SECONDS - t0))s) $*  [$log]"
    if [ $rc -ne 0 ]; then
        grep -h '^VERDICT' "$log/launcher.out" | head -2 | cut -c1-600
    fi
}

for name in $FIXTURES; do
    fx=$ROOT/fixtures/deepspeed/$name
    truth=$fx/expected/truth.safetensors
    ws=$(echo "$name" | sed -n 's/.*_ws\([0-9]*\)_.*/\1/p')
    check "${name}_orig" "$fx/ckpt" "$ws" "$truth"
    for m in $SIZES; do
        out=$WORK/${name}_M$m
        if ! "$DSCKPT" reshard "$fx/ckpt" --to "$m" --format deepspeed -o "$out" -q --force \
                >"$WORK/${name}_M$m.reshard.log" 2>&1; then
            echo "RESULT ${name}_M$m M=$m FAIL (dsckpt reshard failed, see $WORK/${name}_M$m.reshard.log)"
            fail=$((fail + 1))
            continue
        fi
        extra=()
        for t in $TRAIN_STEP_SIZES; do [ "$t" = "$m" ] && extra=(--train-step); done
        check "${name}_M$m" "$out" "$m" "$truth" "${extra[@]}"
    done
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
