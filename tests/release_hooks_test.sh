#!/usr/bin/env bash
# release_hooks_test.sh — a build configured without -DDSCKPT_TEST_HOOKS=ON (a
# release build) ignores every test hook: a fault-injection variable does not make
# dsckpt fail, and dstrain's hooks change nothing. Run by scripts/test.sh on a
# plain build; on a test build (hooks compiled in) it fails, which is the point.
# Usage: release_hooks_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
BUILD=$1
SRC=$2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
FAIL=0
bad() { FAIL=$((FAIL + 1)); echo "FAIL: $*"; }
# A write budget of 1000 bytes: with hooks, synth fails with "no space left".
if DSCKPT_TEST_FAIL_WRITE_AFTER=1000 "$BUILD/dsckpt" synth -o ck --params 20000 --world-size 2 --stage 2 -q >synth.out 2>&1; then
    "$BUILD/dsckpt" verify ck >/dev/null 2>&1 || bad "the checkpoint synth wrote with the hook set does not verify"
else
    bad "DSCKPT_TEST_FAIL_WRITE_AFTER made dsckpt fail in this build: $(tail -2 synth.out)"
fi
if [ -x "$BUILD/dstrain" ]; then
    echo '{"train_batch_size": 2, "optimizer": {"type": "AdamW", "params": {"lr": 0.001}}}' >ds.json
    DSTRAIN_TEST_EVAL="1:123.0" DSTRAIN_TEST_WRITER_WAIT_UPDATE=1 DSCKPT_TEST_FAIL_WRITE_AFTER=10 \
        "$BUILD/dsrun" --num_procs 1 "$BUILD/dstrain" --deepspeed ds.json --data "$SRC/fixtures/corpus/licenses.txt" \
        --n_embd 16 --seq_len 16 --max_steps 2 --eval_steps 1 --eval_windows 1 --save_dir run --save_steps 1 >train.out 2>&1 ||
        bad "dstrain failed with test hooks set: $(tail -3 train.out)"
    grep -q "DSTRAIN_TEST_EVAL" train.out && bad "dstrain honoured DSTRAIN_TEST_EVAL"
    grep -q "eval_loss 123" train.out && bad "dstrain used the planted eval metric"
    [ "$(cat run/latest 2>/dev/null)" = global_step2 ] || bad "dstrain's saves failed with DSCKPT_TEST_FAIL_WRITE_AFTER set"
fi
# Every hook is read through ds_test_hook (common/testhook.c), which the build
# option switches; a direct getenv of a test variable would escape it.
direct=$(cd "$SRC" && grep -rnE 'getenv\("(DSCKPT|DSTRAIN)_TEST' common libckpt formats kernels cli runtime | grep -v '^common/testhook.c:')
[ -z "$direct" ] || bad "test hooks read without ds_test_hook: $direct"
# verify's in-process hook (a function pointer tests set) is compiled out too: no
# verify_hook object in the release binary, and no code outside testhook.c that
# holds one.
# The library holds verify's code (the dsckpt program links it, shared or static).
if command -v nm >/dev/null 2>&1; then
    checked=0
    for bin in "$BUILD/libdsckpt.so" "$BUILD/dsckpt"; do
        [ -e "$bin" ] || continue
        syms=$(nm "$bin" 2>/dev/null)
        grep -qw ds_test_verify_point <<<"$syms" || continue
        checked=1
        grep -qw verify_hook <<<"$syms" && bad "the release $(basename "$bin") holds verify's test hook (verify_hook)"
    done
    [ "$checked" = 1 ] || echo "note: no symbols of verify in $BUILD/libdsckpt.so or $BUILD/dsckpt (stripped); the verify_hook check is skipped"
fi
stray=$(cd "$SRC" && grep -rn 'ds_test_verify_hook' common libckpt formats kernels cli runtime)
[ -z "$stray" ] || bad "a verify hook outside testhook.c: $stray"
[ "$FAIL" -eq 0 ] && echo "release build: every test hook ignored"
[ "$FAIL" -eq 0 ]
