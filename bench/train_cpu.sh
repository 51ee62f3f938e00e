#!/usr/bin/env bash
# CPU seconds (user + sys) of a fixed single-thread dstrain run (W = 1, 4 steps of a
# ~3.3M-parameter GPT-2, bf16) for several builds, interleaved, with the last loss of
# each run. CPU time of one thread is far less disturbed than wall time by other jobs
# on a shared machine, so it compares kernels (native vs BLAS, before vs after) where
# bench/train.sh's step times cannot. Ratios are to the first build, same run.
# Usage: bash bench/train_cpu.sh NAME=BUILD_DIR [NAME=BUILD_DIR ...]
#   e.g. bash bench/train_cpu.sh blas=build native=build-native   (build-native: -DDSCKPT_BLAS=OFF)
# Environment: REPS (2), STAGES ("0 3").
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 NAME=BUILD_DIR ..." >&2; exit 3; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "| rep | stage | build | CPU s | ÷ $(echo "${1%%=*}") | last loss |"
echo "|---|---|---|---|---|---|"
for rep in $(seq "${REPS:-2}"); do
  for S in ${STAGES:-0 3}; do
    cat >"$WORK/c.json" <<JSON
{"train_batch_size": 8, "train_micro_batch_size_per_gpu": 8, "bf16": {"enabled": true},
 "optimizer": {"type": "AdamW", "params": {"lr": 0.001, "weight_decay": 0.01}},
 "gradient_clipping": 1.0, "zero_optimization": {"stage": $S}}
JSON
    first=""
    for spec in "$@"; do
      name=${spec%%=*} dir=${spec#*=}
      OMP_NUM_THREADS=1 /usr/bin/time -f "%U %S" -o "$WORK/time" "$dir/dstrain" --deepspeed "$WORK/c.json" \
        --data fixtures/corpus/licenses.txt --n_layer 4 --n_head 4 --n_embd 256 --seq_len 128 --max_steps 4 \
        --eval_windows 1 --log_file "$WORK/log" >"$WORK/out" 2>&1 || { cat "$WORK/out"; exit 1; }
      cpu=$(awk '{print $1 + $2}' "$WORK/time")
      [ -n "$first" ] || first=$cpu
      loss=$(tail -1 "$WORK/log" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["loss"])')
      echo "| $rep | $S | $name | $cpu | $(awk -v a="$cpu" -v b="$first" 'BEGIN{printf "%.2f", a/b}') | $loss |"
      rm -f "$WORK/log"
    done
  done
done
