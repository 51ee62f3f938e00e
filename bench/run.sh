#!/usr/bin/env bash
# dsckpt benchmarks: consolidate, reshard and verify against floors measured in the
# same run (see bench/floor.c), plus peak RSS. Usage:
#   bash bench/run.sh [GIB ...]        (default: 1 8; GiB of optimizer state =
#                                       fp32 + exp_avg + exp_avg_sq, 12 B/param)
# Environment: BENCH_DIR (scratch, default build/bench-data), BENCH_STAGE (2),
# BENCH_WORLD (4), BENCH_REPS (3: each figure is the median of REPS runs, floors
# and commands interleaved so noise hits both), BENCH_DSCKPT (the dsckpt binary to
# time, default build/dsckpt; e.g. another build for a before/after). Every timed step starts after a
# `sync`, so no step pays for the previous one's dirty pages; floors and commands
# both fsync what they write, so the figures are durable-write throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("${@:-1 8}")
[ $# -eq 0 ] && SIZES=(1 8)
STAGE=${BENCH_STAGE:-2}
WORLD=${BENCH_WORLD:-4}
REPS=${BENCH_REPS:-3}
DIR=${BENCH_DIR:-build/bench-data}
DS=${BENCH_DSCKPT:-build/dsckpt}
FL=build/ds_floor
[ -x "$DS" ] && [ -x "$FL" ] || bash scripts/build.sh build
CORES=$(nproc)
PY=python3

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
jq_() { $PY -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

# One table row: reshard to $1 ranks, timed against the io floor (REPS interleaved).
reshard_row() {
  local M=$1 r t rss rc ft rt rf rs_t=() rs_f=() rs_rss=0
  for r in $(seq "$REPS"); do
    rm -rf "$DIR/resharded"
    sync
    read -r _ _ ft < <($FL io "$ALL" "$TOTAL_FILES" "$DIR/floor.out" "${FILES[@]}")
    sync
    read -r t rss rc < <($FL rss $DS reshard "$CK" --to "$M" -o "$DIR/resharded" --force -q)
    [ "$rc" = 0 ] || { echo "reshard failed"; exit 1; }
    rs_t+=("$t"); rs_f+=("$ft"); [ "$rss" -gt "$rs_rss" ] && rs_rss=$rss
  done
  rt=$(printf '%s\n' "${rs_t[@]}" | median); rf=$(printf '%s\n' "${rs_f[@]}" | median)
  echo "| ${G} GiB | reshard $WORLD → $M ranks ($(( ALL / 1048576 )) MiB each way) | $rt | $rf | $(awk -v a="$rt" -v b="$rf" 'BEGIN{printf "%.2f", a/b}') | ≤ 1.3 | $(( rs_rss / 1024 )) |"
  rm -rf "$DIR/resharded"
}

echo "| state | command | time s | floor s | ratio | target | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|"
for G in "${SIZES[@]}"; do
  mkdir -p "$DIR"
  CK="$DIR/ck-${G}g"
  PARAMS=$(( G * 1024 * 1024 * 1024 / 12 ))
  if [ ! -f "$CK/latest" ]; then
    $DS synth -o "$CK" --params "$PARAMS" --world-size "$WORLD" --stage "$STAGE" --dtype bf16 --force -q >/dev/null
  fi
  $DS inspect "$CK" --json > "$DIR/inspect.json"
  TAGDIR=$(jq_ "$DIR/inspect.json" "d['dir']")
  FP32=$(jq_ "$DIR/inspect.json" "int(d['bytes_per_state']['fp32'] + d['bytes_per_state'].get('w16', 0))")
  ALL=$(jq_ "$DIR/inspect.json" "int(sum(d['bytes_per_state'].values()))")
  FILES=("$TAGDIR"/rank_*.safetensors)
  TOTAL_FILES=$(stat -c %s "${FILES[@]}" | awk '{s+=$1} END {printf "%.0f", s}')

  # consolidate: reads fp32 (+ frozen w16), writes bf16.
  cons_t=(); cons_f=(); cons_rss=0
  for r in $(seq "$REPS"); do
    rm -f "$DIR/out.safetensors"
    sync
    read -r _ _ ft < <($FL io "$FP32" $(( FP32 / 2 )) "$DIR/floor.out" "${FILES[@]}")
    sync
    read -r t rss rc < <($FL rss $DS consolidate "$CK" -o "$DIR/out.safetensors" --dtype bf16 --force -q)
    [ "$rc" = 0 ] || { echo "consolidate failed"; exit 1; }
    cons_t+=("$t"); cons_f+=("$ft"); [ "$rss" -gt "$cons_rss" ] && cons_rss=$rss
  done
  OUTB=$(stat -c %s "$DIR/out.safetensors")
  ct=$(printf '%s\n' "${cons_t[@]}" | median); cf=$(printf '%s\n' "${cons_f[@]}" | median)
  echo "| ${G} GiB | consolidate → bf16 ($(( FP32 / 1048576 )) MiB in, $(( OUTB / 1048576 )) MiB out) | $ct | $cf | $(awk -v a="$ct" -v b="$cf" 'BEGIN{printf "%.2f", a/b}') | ≤ 1.15 | $(( cons_rss / 1024 )) |"

  # reshard W -> W/2, and W -> 1 (one big output file, hashed as it is written, so
  # its chunks must be hashed on every core): each reads and writes every state once.
  M=$(( WORLD / 2 )); [ "$M" -lt 1 ] && M=1
  reshard_row "$M"
  [ "$M" -ne 1 ] && reshard_row 1

  # verify: hashing throughput vs cores x single-core SHA-256.
  v_t=(); v_s=()
  for r in $(seq "$REPS"); do
    sha=$($FL sha 256)
    read -r t rss rc < <($FL rss $DS verify "$CK" -q)
    [ "$rc" = 0 ] || { echo "verify failed"; exit 1; }
    v_t+=("$t"); v_s+=("$sha")
  done
  vt=$(printf '%s\n' "${v_t[@]}" | median); vs=$(printf '%s\n' "${v_s[@]}" | median)
  thr=$(awk -v b="$TOTAL_FILES" -v t="$vt" 'BEGIN{printf "%.3f", b/t/1e9}')
  echo "| ${G} GiB | verify ($(( TOTAL_FILES / 1048576 )) MiB, $CORES cores) | $vt | — | $(awk -v a="$thr" -v s="$vs" -v c="$CORES" 'BEGIN{printf "%.2f", a/(s*c)}') (${thr} GB/s ÷ ${CORES}×${vs} GB/s) | ≥ 0.85 | — |"
  rm -f "$DIR/out.safetensors"
done
