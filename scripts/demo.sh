#!/usr/bin/env bash
# The demo, end to end on the CPU: set up, build, then
#  1. train a small GPT on 4 MPI ranks with ZeRO-3 in bf16, evaluating and saving
#     (asynchronously) as it goes, reloading the best checkpoint at the end;
#  2. consolidate the checkpoint into 16-bit safetensors (opened by the official
#     Python package), reshard it to 2 ranks, resume training from it on 2 ranks
#     at ZeRO-2, and verify everything;
#  3. take a checkpoint written by real DeepSpeed, consolidate it and rewrite it
#     for 3 ranks in DeepSpeed's own format.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build
D=build/demo
rm -rf "$D"
mkdir -p "$D"
run() { echo "+ $*"; "$@"; }
cat >"$D/ds_config.json" <<'JSON'
{
  "train_batch_size": 32,
  "train_micro_batch_size_per_gpu": "auto",
  "gradient_accumulation_steps": 1,
  "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}},
  "scheduler": {"type": "WarmupCosineLR", "params": {"total_num_steps": "auto", "warmup_num_steps": 20}},
  "bf16": {"enabled": true},
  "gradient_clipping": 1.0,
  "zero_optimization": {"stage": 3},
  "steps_per_print": 50
}
JSON
sed 's/"stage": 3/"stage": 2/; s/"train_batch_size": 32/"train_batch_size": 32/' "$D/ds_config.json" >"$D/ds_config_z2.json"
MODEL=(--n_layer 4 --n_head 4 --n_embd 128 --seq_len 64 --data fixtures/corpus/licenses.txt --learning_rate 3e-3)
echo "== 1. train on 4 ranks, ZeRO-3, bf16"
run build/dsrun --num_procs 4 build/dstrain --deepspeed "$D/ds_config.json" "${MODEL[@]}" \
    --per_device_train_batch_size 8 --max_steps 160 --eval_steps 40 --save_steps 40 --save_total_limit 2 \
    --save_dir "$D/run" --load_best_model_at_end --log_file "$D/train.log"
run cat "$D/run/trainer_state.json" | head -5
run build/dsckpt inspect "$D/run"
echo "== 2. consolidate, reshard, resume on 2 ranks at ZeRO-2, verify"
run build/dsckpt consolidate "$D/run" -o "$D/model.safetensors" --dtype bf16
run build/dsckpt reshard "$D/run" --to 2 --stage 2 -o "$D/run-w2"
run build/dsrun --num_procs 2 build/dstrain --deepspeed "$D/ds_config_z2.json" "${MODEL[@]}" \
    --per_device_train_batch_size 16 --max_steps 200 --eval_steps 40 --save_steps 40 --save_dir "$D/run-w2" \
    --resume auto --log_file "$D/resume.log"
run build/dsckpt verify "$D/run"
run build/dsckpt verify "$D/run-w2"
run build/dsckpt verify "$D/model.safetensors"
echo "+ python: open the consolidated file with the official safetensors package"
.venv/bin/python3 - "$D/model.safetensors" <<'PY'
import sys
from safetensors import safe_open
with safe_open(sys.argv[1], "numpy") as f:
    keys = list(f.keys())
    print(f"  {len(keys)} tensors, metadata {f.metadata()}")
PY
echo "== 3. a checkpoint written by DeepSpeed 0.14.5 (ZeRO-3, 2 ranks)"
FX=fixtures/deepspeed/z3_ws2_bf16/ckpt
run build/dsckpt inspect "$FX"
run build/dsckpt consolidate "$FX" -o "$D/deepspeed.safetensors" --dtype bf16
run build/dsckpt reshard "$FX" --to 3 --format deepspeed -o "$D/deepspeed-w3"
run ls "$D/deepspeed-w3/global_step3"
run build/dsckpt verify "$D/deepspeed-w3"
echo "demo: ok"
