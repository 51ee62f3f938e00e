#!/usr/bin/env bash
# A fingerprint of dstrain's numerics: every logged loss, gradient norm and the
# final master-weight hash of short fixed runs (ZeRO stages 0-3 at W = 1, 2, 4 in
# bf16, fp16 with loss scaling, fp32, gradient accumulation), one line per run.
# Two builds give the same fingerprint exactly when their training is bit-identical;
# used to show that a refactor of the kernels or the engine changed no bit.
# Usage: bash bench/train_fingerprint.sh [BUILD_DIR] > fingerprint.txt
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)
DATA=$PWD/fixtures/corpus/licenses.txt
PY=${PYTHON3:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
MODEL=(--n_layer 2 --n_head 4 --n_embd 64 --seq_len 48 --eval_windows 2 --eval_steps 10)
run() { # W STAGE DTYPE MICRO GAS
    local prec="" name="w$1 stage$2 $3 micro$4 gas$5"
    case $3 in
    bf16) prec='"bf16": {"enabled": true},' ;;
    fp16) prec='"fp16": {"enabled": true, "initial_scale_power": 12},' ;;
    esac
    cat >"$WORK/c.json" <<JSON
{"train_micro_batch_size_per_gpu": $4, "gradient_accumulation_steps": $5, $prec
 "optimizer": {"type": "AdamW", "params": {"lr": 0.003, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.01}},
 "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0, "warmup_max_lr": 0.003, "warmup_num_steps": 3}},
 "gradient_clipping": 1.0, "zero_optimization": {"stage": $2, "reduce_bucket_size": 3000}}
JSON
    rm -f "$WORK/log"
    "$BUILD/dsrun" --num_procs "$1" "$BUILD/dstrain" --deepspeed "$WORK/c.json" --data "$DATA" "${MODEL[@]}" \
        --max_steps 20 --log_file "$WORK/log" >"$WORK/out" 2>&1 || { cat "$WORK/out" >&2; exit 1; }
    echo "$name: $($PY -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(" ".join(f"{k}={r[k]!r}" for r in rows for k in ("loss", "grad_norm", "eval_loss", "master_sha256") if k in r))
' "$WORK/log")"
}
for W in 1 2 4; do
    for S in 0 1 2 3; do run "$W" "$S" bf16 2 1; done
done
run 2 0 fp16 2 2
run 2 2 fp16 1 2
run 4 3 fp16 1 1
run 1 1 fp32 2 2
run 2 3 fp32 1 3
