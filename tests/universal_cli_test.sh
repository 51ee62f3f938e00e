#!/usr/bin/env bash
# universal_cli_test.sh — the command line of universal checkpointing:
# `reshard --format universal` (layout, exit codes, never overwriting), universal
# checkpoints as a source for inspect / verify / consolidate / reshard, and
# `dsckpt reshard --to M` typed inside a checkpoint directory (CKPT = ., OUT = the
# sibling <CKPT>_w<M>, exit 4 when it exists), with every argument problem
# reported at once (exit 3).
#
# Usage: tests/universal_cli_test.sh PATH/TO/dsckpt
# Exits non-zero if any check fails; the last line is "N passed, M failed".
set -u

. "$(dirname "$0")/cli_lib.sh"
cli_init uni-test "$@"

cp -r "$SRC_DIR/fixtures/deepspeed/z3_ws2_bf16/ckpt" z3
cp -r "$SRC_DIR/fixtures/deepspeed/z2_ws4_bf16_edge/ckpt" z2

# ---- writing the universal layout ----
run reshard z3 --format universal -o u3 -q
expect_rc 0 "reshard --format universal (stage 3)"
[ "$(cat u3/latest_universal)" = "global_step3_universal" ] && ok || bad "latest_universal names the tag"
[ -f u3/global_step3_universal/zero/optimizer_state.pt ] && ok || bad "zero/optimizer_state.pt"
for f in fp32 exp_avg exp_avg_sq step; do
    [ -f "u3/global_step3_universal/zero/embed.weight/$f.pt" ] && ok || bad "zero/embed.weight/$f.pt"
done
[ -f u3/global_step3_universal/zero_pp_rank_1_mp_rank_00_model_states.pt ] && ok || bad "model states copied"
[ ! -e u3/latest ] && ok || bad "no 'latest' beside latest_universal"
ls -a . | grep -q '\.tmp-' && bad "temporary left behind" || ok
run reshard z3 --format universal -o u3 -q
expect_rc 4 "existing output is refused"
run reshard z2 --format universal -o u2 -q
expect_rc 0 "reshard --format universal (stage 2)"

# ---- universal as a source ----
run inspect u3
expect_rc 0 "inspect a universal checkpoint"
has "$T/out" "universal" "inspect names the format"
run verify u3 -q
expect_rc 0 "verify a universal checkpoint"
run consolidate z3 -o a.safetensors --dtype fp32 -q
run consolidate u3 -o b.safetensors --dtype fp32 -q
expect_rc 0 "consolidate a universal checkpoint"
cmp -s a.safetensors b.safetensors && ok || bad "consolidate: universal equals its source byte for byte"
run reshard u3 --to 3 -o n3 -q
expect_rc 0 "universal -> native"
run reshard z3 --to 3 -o m3 -q
diff -r n3 m3 >/dev/null && ok || bad "universal -> native equals source -> native"
run reshard u2 --to 3 --format deepspeed -o d3 -q
expect_rc 0 "universal -> deepspeed"
run reshard u2 --format universal -o uu -q
expect_rc 0 "universal -> universal"
diff -r u2 uu >/dev/null && ok || bad "universal -> universal reproduces the files"

# damage: a flipped byte in a state file is a checksum failure (1); a FIFO is refused (1)
cp -r u2 bad1
f=bad1/global_step3_universal/zero/embed.weight/exp_avg.pt
size=$(stat -c %s "$f")
printf '\x55' | dd of="$f" bs=1 seek=$((size / 2)) conv=notrunc status=none
run verify bad1 -q
expect_rc 1 "verify: a damaged state file"
run reshard bad1 --to 2 -o x -q
expect_rc 1 "reshard: a damaged state file (its reads are checked)"
[ ! -e x ] && ok || bad "a failed reshard leaves nothing"
cp -r u2 bad2
rm bad2/global_step3_universal/zero/tiny/fp32.pt
mkfifo bad2/global_step3_universal/zero/tiny/fp32.pt
run inspect bad2
expect_rc 2 "a FIFO in place of a state file"
has "$T/err" "not a regular file" "the FIFO is named"

# ---- reshard --to M typed in a checkpoint directory ----
(cd z2 && "$DS" reshard --to 16 -q >"$T/out" 2>"$T/err")
RC=$?
expect_rc 0 "reshard --to 16 in the checkpoint directory"
[ -f z2_w16/global_step3/manifest.json ] && ok || bad "default output <CKPT>_w16 beside the checkpoint"
(cd z2 && "$DS" reshard --to 16 -q >"$T/out" 2>"$T/err")
RC=$?
expect_rc 4 "default output exists: never overwritten"
(cd z2 && "$DS" reshard --format universal -q >"$T/out" 2>"$T/err")
RC=$?
expect_rc 0 "reshard --format universal in the checkpoint directory"
[ -f z2_universal/latest_universal ] && ok || bad "default output <CKPT>_universal"

# every argument problem at once
run reshard z2 --to x --stage 9 --format bogus
expect_rc 3 "bad arguments"
has "$T/err" "--to must be" "bad --to reported"
has "$T/err" "--stage must be" "bad --stage reported"
has "$T/err" "--format must be" "bad --format reported"
run reshard z2 z3
expect_rc 3 "missing --to and two paths"
has "$T/err" "--to M is required" "missing --to reported"
has "$T/err" "at most one checkpoint path" "extra path reported"
run reshard --help
expect_rc 0 "reshard --help"
has "$T/out" "--format universal" "help documents universal"
has "$T/out" "<CKPT>_w<M>" "help documents the default output"

cli_finish
