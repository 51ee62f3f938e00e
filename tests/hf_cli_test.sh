#!/usr/bin/env bash
# hf_cli_test.sh — the dsckpt command line on Hugging Face Trainer folders, on the
# real Trainer output (fixtures/deepspeed-0.19/hf_trainer_z3, copied to a scratch
# directory) and on damaged copies of it: CKPT as output_dir or checkpoint-N,
# -t best / latest / checkpoint-N, exit codes of missing tags (2), hostile or
# damaged trainer_state.json (1), bad tags from the user (3), the exported folder,
# and reshard writing a checkpoint-N the Trainer can resume from.
#
# Usage: tests/hf_cli_test.sh PATH/TO/dsckpt
# Exits non-zero if any check fails; the last line is "N passed, M failed".
set -u

. "$(dirname "$0")/cli_lib.sh"
cli_init hf-test "$@"
# run's output goes to io/ ("out" is the copied Trainer output_dir).
IO="$T/io"
mkdir -p "$IO"

cp -r "$SRC_DIR/fixtures/deepspeed-0.19/hf_trainer_z3/output" out
# The Trainer stored best_model_checkpoint as "output/checkpoint-4": relative to the
# directory it ran in, which is not this one (the copy is named "out").

run inspect out
expect_rc 0 "inspect output_dir"
has "$IO/out" "checkpoint-12/global_step12" "output_dir defaults to the newest checkpoint"
run inspect out -t best
expect_rc 0 "inspect -t best"
has "$IO/out" "checkpoint-4/global_step4" "-t best is checkpoint-4"
run inspect out -t latest
has "$IO/out" "checkpoint-12/global_step12" "-t latest is the newest checkpoint"
run inspect out -t checkpoint-4
has "$IO/out" "checkpoint-4/global_step4" "-t checkpoint-4"
run inspect out/checkpoint-12 -t best
has "$IO/out" "checkpoint-4/global_step4" "-t best from a checkpoint-N names its sibling"
run verify out -t best -q
expect_rc 0 "verify -t best"

run inspect out -t checkpoint-8
expect_rc 2 "missing checkpoint"
has "$IO/err" "checkpoints here: checkpoint-4, checkpoint-12" "missing checkpoint lists the existing ones"
run inspect out/checkpoint-4 -t global_step9
expect_rc 2 "missing tag"
has "$IO/err" "tags here: global_step4" "missing tag lists the existing ones"
run inspect out -t ../out
expect_rc 3 "a tag that is not a plain name"

# Export: weights + config.json + generation_config.json, loadable by from_pretrained.
run consolidate out -t best -o export --dtype fp32 -q
expect_rc 0 "consolidate -t best to a folder"
for f in model.safetensors config.json generation_config.json; do
    if [ -f "export/$f" ]; then ok; else bad "export/$f missing"; fi
done
for f in zero_to_fp32.py training_args.bin rng_state_0.pth trainer_state.json; do
    if [ -e "export/$f" ]; then bad "export/$f should not be there"; else ok; fi
done
has export/config.json '"float32"' "config.json names the weights' dtype"

# Reshard for 3 ranks into a new output_dir: a checkpoint-N the Trainer resumes from.
mkdir w3
run reshard out --to 3 --format deepspeed -o w3/checkpoint-12 -q
expect_rc 0 "reshard checkpoint-12 to 3 ranks"
has w3/checkpoint-12/trainer_state.json '"w3/checkpoint-4"' "best_model_checkpoint points at the new output_dir"
for f in latest scheduler.pt config.json generation_config.json global_step12; do
    if [ -e "w3/checkpoint-12/$f" ]; then ok; else bad "w3/checkpoint-12/$f missing"; fi
done
run reshard out -t best --to 3 --format deepspeed -o w3/checkpoint-4 -q
expect_rc 0 "reshard the best checkpoint to 3 ranks"
run inspect w3 -t best --json
if python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(not (d["world_size"] == 3 and d["tag"] == "global_step4"))' "$IO/out"; then
    ok
else
    bad "the new output_dir's best checkpoint is global_step4 at 3 ranks"
fi

# Without --format, a Trainer checkpoint-N is written in DeepSpeed format (what the
# Trainer resumes from), with a one-line note; --format native only when asked.
run reshard out -t checkpoint-4 --to 2 -o w3/default
expect_rc 0 "reshard of a checkpoint-N with no --format"
has "$IO/err" "note: a Hugging Face Trainer checkpoint: writing DeepSpeed format" "the default is announced"
if [ "$(grep -c 'note:' "$IO/err")" -eq 1 ]; then ok; else bad "one note line, got: $(cat "$IO/err")"; fi
if [ -f w3/default/global_step4/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt ] &&
    [ ! -e w3/default/global_step4/manifest.json ]; then ok; else bad "default output is not DeepSpeed's files: $(ls w3/default/global_step4 | tr '\n' ' ')"; fi
run inspect w3/default --json
if python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["format"] != "deepspeed")' "$IO/out"; then
    ok
else
    bad "default output reads back as deepspeed"
fi
run reshard out/checkpoint-4 --to 2 -o w3/native --format native -q
expect_rc 0 "reshard of a checkpoint-N with --format native"
# (-q hides the progress only: the one summary line "resharded ..." stays.)
if ! grep -q 'note:' "$IO/err" && [ "$(grep -vc '^resharded ' "$IO/err")" -eq 0 ]; then ok; else bad "no note with an explicit --format: $(cat "$IO/err")"; fi
run inspect w3/native --json
if python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["format"] != "dsckpt")' "$IO/out"; then
    ok
else
    bad "--format native writes the native format"
fi

# Python's json writes NaN for a non-finite grad_norm (an fp16 overflow step): read
# and written back as such.
sed -i 's/"grad_norm": 1.4482343179435648/"grad_norm": NaN/' out/checkpoint-12/trainer_state.json
run inspect out -t best
expect_rc 0 "-t best with a NaN in log_history"
run reshard out --to 2 --format deepspeed -o w3/nan -q
expect_rc 0 "reshard with a NaN in log_history"
has w3/nan/trainer_state.json '"grad_norm":	NaN' "NaN written back as Python writes it"

# Sharded export: shards, index, config.json.
run consolidate out -o shards --dtype fp32 --max-shard-size 100KB -q
expect_rc 0 "consolidate to HF shards"
for f in model.safetensors.index.json config.json generation_config.json model-00001-of-00007.safetensors; do
    if [ -f "shards/$f" ]; then ok; else bad "shards/$f missing ($(ls shards | tr '\n' ' '))"; fi
done

# Hostile and damaged trainer_state.json: exit 1, nothing outside the output_dir read.
python3 - out/checkpoint-12/trainer_state.json <<'EOF'
import sys
p = sys.argv[1]
t = open(p).read().replace('"output/checkpoint-4"', '"../../etc"')
open(p, "w").write(t)
EOF
run inspect out -t best
expect_rc 1 "best_model_checkpoint ../../etc"
has "$IO/err" "not a checkpoint-N folder" "hostile best_model_checkpoint named"
run consolidate out -t best -o export2 -q
expect_rc 1 "consolidate -t best with a hostile trainer_state.json"
if [ -e export2 ]; then bad "export2 left behind"; else ok; fi
printf '{"best_model_checkpoint": "output/checkpoint-4", "best_model_checkpoint": "output/checkpoint-12"}' \
    >out/checkpoint-12/trainer_state.json
run inspect out -t best
expect_rc 1 "duplicate keys in trainer_state.json"
has "$IO/err" "duplicate key" "duplicate key named"
run inspect out
expect_rc 0 "the default does not read trainer_state.json"

cli_finish
