#!/usr/bin/env bash
# fuzz_seeds.sh BUILD_DIR — (re)writes the seed_* inputs of the fuzz corpora in
# tests/fuzz/corpus/ from checkpoints made by the built tools (dsckpt synth, dstrain)
# and from fixtures/. Other files in the corpora (inputs fuzzing kept, regression
# inputs) are left alone. Multi-file inputs use the format of tests/fuzz/fuzz_util.h:
# "<name>\n<bytes>" pieces separated by SEP. Manifests lose their "manifest_sha256"
# so the verify and engine_load harnesses complete them (tests/fuzz/fuzz_native.h).
set -euo pipefail
cd "$(dirname "$0")/.."
B=$(cd "${1:-build}" && pwd)
C=tests/fuzz/corpus
SEP=$'\n@@dsckpt-fuzz-next-file@@\n'
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# pack OUT ROOT NAME... : the files ROOT/NAME as one multi-file input.
pack() {
  local out=$1 root=$2 first=1
  shift 2
  : >"$out"
  for n in "$@"; do
    [ $first = 1 ] || printf '%s' "$SEP" >>"$out"
    first=0
    printf '%s\n' "$n" >>"$out"
    if [ "${n##*/}" = manifest.json ]; then
      sed -E 's/,"manifest_sha256":"[0-9a-f]{64}"\}$/}/' "$root/$n" >>"$out"
    else
      cat "$root/$n" >>"$out"
    fi
  done
}
names() { (cd "$1" && find . -type f | sed 's|^\./||' | LC_ALL=C sort); }
# pack_sealed OUT ROOT NAME... : as pack, manifests kept with their digest (the
# harness leaves a sealed manifest as it is: for compressed checkpoints, whose
# chunk lists it does not complete).
pack_sealed() {
  local out=$1 root=$2 first=1
  shift 2
  : >"$out"
  for n in "$@"; do
    [ $first = 1 ] || printf '%s' "$SEP" >>"$out"
    first=0
    printf '%s\n' "$n" >>"$out"
    cat "$root/$n" >>"$out"
  done
}

mkdir -p $C/deepspeed $C/verify $C/tag $C/trainer_state $C/config $C/data $C/engine_load
rm -f $C/*/seed_*

# DeepSpeed: synthetic tags (stage 1 on 2 ranks, stage 3 on 1), and the real
# DeepSpeed model-states files of the stage-3 fixture (no optimizer files: the
# reader's refusal paths, on DeepSpeed's own pickles).
"$B/dsckpt" synth -q -j1 --params 1000 --world-size 2 --stage 1 --format deepspeed -o "$W/ds1"
"$B/dsckpt" synth -q -j1 --params 1000 --world-size 1 --stage 3 --dtype fp32 --format deepspeed -o "$W/ds3"
for s in ds1 ds3; do
  rm -f "$W/$s/trainer_state.json"
  # shellcheck disable=SC2046
  pack $C/deepspeed/seed_synth_$s "$W/$s" $(names "$W/$s")
done
F=fixtures/deepspeed/z3_ws4_fp32_1g/ckpt
pack $C/deepspeed/seed_real_z3_model_states $F latest global_step1/zero_pp_rank_0_mp_rank_00_model_states.pt \
  global_step1/zero_pp_rank_1_mp_rank_00_model_states.pt 2>/dev/null ||
  pack $C/deepspeed/seed_real_z3_model_states $F latest \
    $(cd $F && ls */zero_pp_rank_[01]_mp_rank_00_model_states.pt)

# Native: a stage-3 checkpoint on 2 ranks (frozen tensor pieces on both).
"$B/dsckpt" synth -q -j1 --params 1000 --world-size 2 --stage 3 -o "$W/nat3"
# shellcheck disable=SC2046
pack $C/verify/seed_synth_z3_w2 "$W/nat3" $(names "$W/nat3")
# Native, compressed (manifest version 2): stage 2 on 2 ranks, sealed.
"$B/dsckpt" synth -q -j1 --params 1000 --world-size 2 --stage 2 --compress -o "$W/natz"
# shellcheck disable=SC2046
pack_sealed $C/verify/seed_synth_z2_w2_compressed "$W/natz" $(names "$W/natz")

# dstrain: a 1-layer model checkpoint after 2 steps (the engine_load harness's model).
cat >"$W/ds.json" <<'CFG'
{"train_batch_size": 2, "train_micro_batch_size_per_gpu": 2, "bf16": {"enabled": true},
 "optimizer": {"type": "AdamW", "params": {"lr": 0.003, "weight_decay": 0.01}},
 "gradient_clipping": 1.0, "zero_optimization": {"stage": 1}}
CFG
(cd "$W" && "$B/dsrun" --num_procs 1 "$B/dstrain" --deepspeed ds.json --data "$OLDPWD/fixtures/corpus/licenses.txt" \
  --n_layer 1 --n_head 1 --n_embd 8 --seq_len 8 --max_steps 2 --save_dir run --save_steps 1 --eval_windows 2 \
  --save_total_limit 2 >/dev/null 2>&1)
pack $C/engine_load/seed_dstrain_step2 "$W/run" latest global_step2/manifest.json global_step2/rank_00000.safetensors
pack $C/verify/seed_dstrain_step2 "$W/run" latest global_step2/manifest.json global_step2/rank_00000.safetensors

# Tags and trainer_state.json: dstrain's save root without the rank files.
mkdir -p "$W/tags/global_step1" "$W/tags/global_step2"
cp "$W/run/trainer_state.json" "$W/run/latest" "$W/tags/"
echo '{}' >"$W/tags/global_step1/manifest.json"
cp "$W/run/global_step2/manifest.json" "$W/tags/global_step2/"
pack $C/trainer_state/seed_dstrain "$W/tags" latest trainer_state.json global_step1/manifest.json \
  global_step2/manifest.json
pack $C/tag/seed_dstrain_root "$W/tags" latest trainer_state.json global_step1/manifest.json global_step2/manifest.json
printf 'global_step1' >"$W/tags/.tag"
pack $C/tag/seed_explicit_tag "$W/tags" .tag latest global_step1/manifest.json
printf ' global_step2 \r\n' >"$W/tags/latest"
pack $C/tag/seed_latest_spaces "$W/tags" latest trainer_state.json global_step2/manifest.json

# A Hugging Face Trainer output_dir (the DeepSpeed 0.19 fixture's, model files left
# out, the tag directories holding empty *_states.pt), with -t best.
H=fixtures/deepspeed-0.19/hf_trainer_z3/output
for n in 4 12; do
  mkdir -p "$W/hf/checkpoint-$n/global_step$n"
  cp "$H/checkpoint-$n/latest" "$H/checkpoint-$n/trainer_state.json" "$W/hf/checkpoint-$n/"
  : >"$W/hf/checkpoint-$n/global_step$n/zero_pp_rank_0_mp_rank_00_model_states.pt"
done
printf 'best' >"$W/hf/.tag"
pack $C/tag/seed_hf_output_dir_best "$W/hf" .tag checkpoint-4/latest checkpoint-4/trainer_state.json \
  checkpoint-4/global_step4/zero_pp_rank_0_mp_rank_00_model_states.pt checkpoint-12/latest \
  checkpoint-12/trainer_state.json checkpoint-12/global_step12/zero_pp_rank_0_mp_rank_00_model_states.pt

# ds_config: the selector byte (tests/fuzz/fuzz_config.c), then the config.
cfg() { { printf "\\x$1"; cat; } >"$C/config/seed_$2"; }
cfg 00 ds_stage1 <"$W/ds.json"
cfg 03 hf_auto_z3 <<'CFG'
{"fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
 "hysteresis": 2, "min_loss_scale": 1}, "bf16": {"enabled": "auto"},
 "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
 "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
  "warmup_num_steps": "auto", "total_num_steps": "auto"}},
 "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": true},
  "offload_param": {"device": "cpu", "pin_memory": true}, "overlap_comm": true, "contiguous_gradients": true,
  "sub_group_size": 1e9, "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
  "stage3_param_persistence_threshold": "auto", "stage3_max_live_parameters": 1e9,
  "stage3_max_reuse_distance": 1e9, "stage3_gather_16bit_weights_on_model_save": true},
 "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "steps_per_print": 2000,
 "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "wall_clock_breakdown": false}
CFG
cfg 08 fp16_cosine <<'CFG'
{"train_batch_size": 8, "gradient_accumulation_steps": 2, "fp16": {"enabled": true, "loss_scale": 0,
 "initial_scale_power": 8, "loss_scale_window": 4, "hysteresis": 2, "consecutive_hysteresis": true,
 "min_loss_scale": 0.5}, "optimizer": {"type": "Adam", "params": {"lr": 1e-3, "betas": [0.8, 0.99],
 "eps": 1e-6, "weight_decay": 0.1, "adam_w_mode": false, "bias_correction": false}},
 "scheduler": {"type": "WarmupCosineLR", "params": {"total_num_steps": 50, "warmup_num_steps": 5,
  "warmup_type": "linear", "warmup_min_ratio": 0.1, "cos_min_ratio": 0.01}},
 "zero_optimization": {"stage": 2, "reduce_scatter": false, "allgather_bucket_size": 5e8,
  "round_robin_gradients": true}, "checkpoint": {"tag_validation": "fail", "load_universal": false},
 "prescale_gradients": true, "gradient_predivide_factor": 2.0, "zero_allow_untested_optimizer": true}
CFG
cfg 00 warmuplr_stage0 <<'CFG'
{"train_micro_batch_size_per_gpu": 3, "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0,
 "warmup_max_lr": 0.01, "warmup_num_steps": 3, "warmup_type": "log"}}, "fp16": {"enabled": true, "loss_scale": 128},
 "zero_optimization": {"stage": 0}}
CFG

# Data: the 4 parameter bytes (tests/fuzz/fuzz_data.c), then text from the corpus.
{ printf '\x07\x20\x01\x01'; head -c 1500 fixtures/corpus/licenses.txt; } >$C/data/seed_gpl1_head
{ printf '\x00\xfe\x03\x03'; tail -c 600 fixtures/corpus/licenses.txt; } >$C/data/seed_gpl3_tail_w4
du -sh $C
