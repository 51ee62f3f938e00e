#!/usr/bin/env bash
# consolidate on DeepSpeed-layout checkpoints (torch zip + pickle files written by
# `dsckpt synth --format deepspeed`) against a floor measured in the same run, plus
# peak RSS. Usage:
#   bash bench/deepspeed.sh [GIB]       (default 2: GiB of optimizer state, 12 B/param;
#                                        the .pt files add the 16-bit module weights)
# Environment: BENCH_DIR (scratch, default build/bench-data), BENCH_STAGES ("2 3"),
# BENCH_WORLD (4), BENCH_REPS (3, medians; floor and command interleaved).
# Floor: a plain read() of the bytes consolidate must read (the fp32 partitions, from
# the optimizer files) and a plain write()+fsync of the bytes it writes.
set -euo pipefail
cd "$(dirname "$0")/.."
G=${1:-2}
STAGES=${BENCH_STAGES:-2 3}
WORLD=${BENCH_WORLD:-4}
REPS=${BENCH_REPS:-3}
DIR=${BENCH_DIR:-build/bench-data}
DS=build/dsckpt
FL=build/ds_floor
[ -x "$DS" ] && [ -x "$FL" ] || bash scripts/build.sh build
PY=python3
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
jq_() { $PY -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

echo "| stage | checkpoint | command | time s | floor s | ratio | target | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
for STAGE in $STAGES; do
  mkdir -p "$DIR"
  CK="$DIR/ds-z${STAGE}-${G}g"
  PARAMS=$(( G * 1024 * 1024 * 1024 / 12 ))
  if [ ! -f "$CK/latest" ]; then
    $DS synth --format deepspeed -o "$CK" --params "$PARAMS" --world-size "$WORLD" --stage "$STAGE" \
      --dtype bf16 --force -q >/dev/null
  fi
  $DS inspect "$CK" --json > "$DIR/inspect.json"
  TAGDIR=$(jq_ "$DIR/inspect.json" "d['dir']")
  FP32=$(jq_ "$DIR/inspect.json" "int(d['bytes_per_state']['fp32'] + d['bytes_per_state'].get('w16', 0))")
  OPT=("$TAGDIR"/*_optim_states.pt)
  ALLB=$(stat -c %s "$TAGDIR"/*.pt | awk '{s+=$1} END {printf "%.0f", s}')
  for OUTDT in bf16 fp32; do
    t_=(); f_=(); rss_=0
    for r in $(seq "$REPS"); do
      rm -f "$DIR/out.safetensors"
      sync
      [ "$OUTDT" = bf16 ] && OUTSZ=$(( FP32 / 2 )) || OUTSZ=$FP32
      read -r _ _ ft < <($FL io "$FP32" "$OUTSZ" "$DIR/floor.out" "${OPT[@]}")
      sync
      read -r t rss rc < <($FL rss $DS consolidate "$CK" -o "$DIR/out.safetensors" --dtype "$OUTDT" --force -q)
      [ "$rc" = 0 ] || { echo "consolidate failed"; exit 1; }
      t_+=("$t"); f_+=("$ft"); [ "$rss" -gt "$rss_" ] && rss_=$rss
    done
    OUTB=$(stat -c %s "$DIR/out.safetensors")
    ct=$(printf '%s\n' "${t_[@]}" | median); cf=$(printf '%s\n' "${f_[@]}" | median)
    echo "| $STAGE | $(( ALLB / 1048576 )) MiB, $WORLD ranks, bf16 | consolidate → $OUTDT ($(( FP32 / 1048576 )) MiB in, $(( OUTB / 1048576 )) MiB out) | $ct | $cf | $(awk -v a="$ct" -v b="$cf" 'BEGIN{printf "%.2f", a/b}') | ≤ 1.2 | $(( rss_ / 1024 )) |"
  done
  rm -f "$DIR/out.safetensors" "$DIR/floor.out"
done
