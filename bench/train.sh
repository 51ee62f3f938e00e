#!/usr/bin/env bash
# dstrain step time per ZeRO stage and world size, against stage 0 at the same world
# size measured in the same run, and the share of each step spent in collectives.
# Usage:
#   bash bench/train.sh
# Environment: BENCH_WORLDS ("1 2 4"), BENCH_STAGES ("0 1 2 3"), BENCH_STEPS (8
# optimizer steps per run; the first is dropped as warm-up, the rest give medians),
# BENCH_MODEL (dstrain model flags; default ~10.8M parameters: 6 layers, 384 wide,
# 128 tokens), BENCH_BATCH (global batch in sequences, 8: the same tokens per step at
# every world size), BENCH_DIR (scratch, build/bench-train).
# For every run it prints the median step time, its ratio to stage 0 at the same
# world size, the median time in collectives and its share of the step, and the
# bytes rank 0 sent per step next to what the ZeRO stage's collectives must move.
set -euo pipefail
cd "$(dirname "$0")/.."
WORLDS=${BENCH_WORLDS:-1 2 4}
STAGES=${BENCH_STAGES:-0 1 2 3}
STEPS=${BENCH_STEPS:-8}
BATCH=${BENCH_BATCH:-8}
read -r -a MODEL <<<"${BENCH_MODEL:---n_layer 6 --n_head 6 --n_embd 384 --seq_len 128}"
DIR=${BENCH_DIR:-build/bench-train}
[ -x build/dstrain ] && [ -x build/dsrun ] || bash scripts/build.sh build
PY=python3
mkdir -p "$DIR"

echo '{"train_batch_size": 1, "zero_optimization": {"stage": 0}}' >"$DIR/probe.json"
NUMEL=$(build/dstrain --deepspeed "$DIR/probe.json" \
        --data fixtures/corpus/licenses.txt "${MODEL[@]}" --print_memory | $PY -c \
        'import json,sys; print(json.loads(sys.stdin.readline())["numel"])')
echo "model: ${MODEL[*]} ($NUMEL parameters), bf16, global batch $BATCH, $STEPS steps per run (first dropped)"
echo
echo "| W | stage | step s | ÷ stage 0 | comm s | comm share | sent MB/step (rank 0) | ZeRO collectives MB | extra step s over stage 0 | extra comm s |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for W in $WORLDS; do
  [ $((BATCH % W)) -eq 0 ] || { echo "BENCH_BATCH=$BATCH is not divisible by W=$W" >&2; exit 3; }
  base_step="" base_comm=""
  for S in $STAGES; do
    cfg="$DIR/z$S.json"
    cat >"$cfg" <<EOF
{"train_batch_size": $BATCH, "train_micro_batch_size_per_gpu": $((BATCH / W)), "bf16": {"enabled": true},
 "optimizer": {"type": "AdamW", "params": {"lr": 0.001, "weight_decay": 0.01}},
 "gradient_clipping": 1.0, "zero_optimization": {"stage": $S}}
EOF
    log="$DIR/w${W}_z${S}.log"
    rm -f "$log"
    build/dsrun --num_procs "$W" build/dstrain --deepspeed "$cfg" --data fixtures/corpus/licenses.txt \
      "${MODEL[@]}" --max_steps "$STEPS" --eval_windows 1 --log_file "$log" >"$log.out" 2>&1 ||
      { cat "$log.out"; exit 1; }
    read -r st cm by < <($PY - "$log" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]
med = lambda k: statistics.median(r[k] for r in rows)
print(med("step_s"), med("comm_s"), med("comm_bytes"))
PY
)
    # What each stage's collectives must send per rank and step (W > 1), with
    # N parameters: fp32 gradients reduced (all-reduce = reduce-scatter + all-gather:
    # 2 x 4N(W-1)/W; reduce-scatter alone 4N(W-1)/W), 16-bit weights all-gathered after
    # the step (stages 1-2: 2N(W-1)/W) or before each use in forward and backward
    # (stage 3: 2 x 2N(W-1)/W).
    exp=$($PY -c "
N, W, S = $NUMEL, $W, $S
f = (W - 1) / W
b = {0: 8 * N * f, 1: (4 + 2) * N * f, 2: (4 + 2) * N * f, 3: (4 + 4) * N * f}[S]
print(f'{b / 1e6:.1f}')")
    if [ -z "$base_step" ]; then base_step=$st base_comm=$cm; fi
    $PY -c "
st, cm, by, b0, c0 = $st, $cm, $by, $base_step, $base_comm
print(f'| $W | $S | {st:.3f} | {st / b0:.2f} | {cm:.3f} | {cm / st:.2f} | {by / 1e6:.1f} | $exp | {st - b0:+.3f} | {cm - c0:+.3f} |')"
  done
done
