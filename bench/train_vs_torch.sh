#!/usr/bin/env bash
# dstrain against PyTorch eager on the same CPU training step, in the same run.
# Model: the ~3.26M-parameter GPT-2 shape of bench/train_cpu.sh (4 layers, 4 heads,
# 256 wide, 128 tokens, byte vocabulary), fp32, AdamW, gradient clipping 1.0, global
# batch 8 sequences. Sides, interleaved in every repetition:
#   dstrain W=1 (stage 0) and W=2 (ZeRO-2) for each build given (the default build,
#   OpenBLAS where it was found, and the native kernels' -DDSCKPT_BLAS=OFF build
#   when present), threads per rank = cores / W;
#   PyTorch eager W=1 and DDP over gloo at W=2 (bench/torch_gpt2_cpu.py) with
#   torch.set_num_threads = the same threads per rank.
# Prints each run, then the median tokens/s per side and W, the ratio of the medians
# dstrain ÷ PyTorch, and the median of the repetitions' own ratios (each repetition runs
# the sides back to back, so that one is less sensitive to a noisy machine).
# Usage: bash bench/train_vs_torch.sh [NAME=BUILD_DIR ...]   (default dstrain=build,
#        plus native=build-native when build-native/dstrain exists:
#        bash scripts/build.sh build-native -DDSCKPT_BLAS=OFF)
# Environment: TORCH_PY (python of a venv with torch; without it the PyTorch side is
# skipped with a message), REPS (3), STEPS (8 optimizer steps per run, first dropped),
# WORLDS ("1 2"), CORES (nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3} STEPS=${STEPS:-8} WORLDS=${WORLDS:-1 2} CORES=${CORES:-$(nproc)}
BATCH=8 SEQ=128
MODEL=(--n_layer 4 --n_head 4 --n_embd 256 --seq_len $SEQ)
BUILDS=("$@")
if [ ${#BUILDS[@]} -eq 0 ]; then
  BUILDS=(dstrain=build)
  [ -x build-native/dstrain ] && BUILDS+=(native=build-native)
fi
for spec in "${BUILDS[@]}"; do
  [ -x "${spec#*=}/dstrain" ] && [ -x "${spec#*=}/dsrun" ] || { echo "no dstrain/dsrun in ${spec#*=}" >&2; exit 3; }
done
SIDES=("${BUILDS[@]%%=*}")
if [ -n "${TORCH_PY:-}" ] && "$TORCH_PY" -c 'import torch' 2>/dev/null; then
  SIDES+=(torch)
else
  echo "TORCH_PY is unset or has no torch: the PyTorch side is skipped (dstrain only)"
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RES="$WORK/results"
echo "load at start: $(uptime)"
echo "| rep | W | side | threads/rank | step s | tokens/s |"
echo "|---|---|---|---|---|---|"
for rep in $(seq "$REPS"); do
  for W in $WORLDS; do
    T=$((CORES / W)); [ "$T" -ge 1 ] || T=1
    S=$([ "$W" -eq 1 ] && echo 0 || echo 2)
    cat >"$WORK/c.json" <<JSON
{"train_batch_size": $BATCH, "train_micro_batch_size_per_gpu": $((BATCH / W)),
 "optimizer": {"type": "AdamW", "params": {"lr": 0.001, "weight_decay": 0.01}},
 "gradient_clipping": 1.0, "zero_optimization": {"stage": $S}}
JSON
    for spec in "${BUILDS[@]}" torch; do
      name=${spec%%=*} dir=${spec#*=}
      if [ "$name" = torch ]; then
        [[ " ${SIDES[*]} " == *" torch "* ]] || continue
        "$TORCH_PY" bench/torch_gpt2_cpu.py --data fixtures/corpus/licenses.txt --world "$W" --threads "$T" \
          --batch $BATCH --seq_len $SEQ --n_layer 4 --n_head 4 --n_embd 256 --steps "$STEPS" \
          >"$WORK/t.out" 2>"$WORK/t.err" || { cat "$WORK/t.err"; exit 1; }
        st=$(tail -1 "$WORK/t.out" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["step_s"])')
      else
        rm -f "$WORK/log"
        OMP_NUM_THREADS=$T "$dir/dsrun" --num_procs "$W" "$dir/dstrain" --deepspeed "$WORK/c.json" \
          --data fixtures/corpus/licenses.txt "${MODEL[@]}" --max_steps "$STEPS" --eval_windows 1 \
          --log_file "$WORK/log" >"$WORK/d.out" 2>&1 || { cat "$WORK/d.out"; exit 1; }
        st=$(python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]
print(statistics.median(r["step_s"] for r in rows))' "$WORK/log")
      fi
      tok=$(python3 -c "print(f'{$BATCH * $SEQ / $st:.0f}')")
      echo "$rep $W $name $tok" >>"$RES"
      echo "| $rep | $W | $name | $T | $(printf %.3f "$st") | $tok |"
    done
  done
done
echo "load at end: $(uptime)"
echo
echo "| W | side | median tokens/s | ÷ PyTorch | ÷ PyTorch, median of the repetitions' ratios |"
echo "|---|---|---|---|---|"
python3 - "$RES" $WORLDS <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for w in sys.argv[2:]:
    tok = {}  # side -> {rep: tokens/s}
    for rep, _, s, t in (r for r in rows if r[1] == w):
        tok.setdefault(s, {})[rep] = float(t)
    torch = tok.get("torch", {})
    for s, by_rep in tok.items():
        med = statistics.median(by_rep.values())
        ratio = f"{med / statistics.median(torch.values()):.2f}" if torch else "n/a"
        pairs = [v / torch[r] for r, v in by_rep.items() if r in torch]
        pair = f"{statistics.median(pairs):.2f}" if pairs else "n/a"
        print(f"| {w} | {s} | {med:.0f} | {ratio} | {pair} |")
PY
