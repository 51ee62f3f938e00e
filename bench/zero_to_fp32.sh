#!/usr/bin/env bash
# `dsckpt consolidate --dtype fp32` vs DeepSpeed's own zero_to_fp32 on the same ZeRO-3
# checkpoint (DeepSpeed layout, written by `dsckpt synth --format deepspeed`), side by side in
# one run: wall time and peak RSS from /usr/bin/time -v, interleaved with a plain read/write
# floor (bench/floor.c), medians of BENCH_REPS; then both outputs compared tensor by tensor.
# Needs a venv with torch + deepspeed (PyPI), never used by the product:
#   DS_VENV=/path/to/venv bash bench/zero_to_fp32.sh [GIB]
# GIB: GiB of optimizer state (12 B/param; default 1). Environment: BENCH_DIR (scratch,
# default build/bench-data), BENCH_WORLD (4), BENCH_REPS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${DS_VENV:-}" ] || { sed -n '2,9p' "$0" >&2; exit 3; }
PY=$DS_VENV/bin/python
G=${1:-1}
WORLD=${BENCH_WORLD:-4}
REPS=${BENCH_REPS:-3}
DIR=${BENCH_DIR:-build/bench-data}
DS=build/dsckpt
FL=build/ds_floor
[ -x "$DS" ] && [ -x "$FL" ] || bash scripts/build.sh build
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# "wall_s max_rss_kib" from a /usr/bin/time -v log
tv() { awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]}
                   /Maximum resident set size/ {r=$2} END {printf "%.2f %d\n", s, r}' "$1"; }

mkdir -p "$DIR"
CK="$DIR/ds-z3-${G}g-w$WORLD"
PARAMS=$(awk -v g="$G" 'BEGIN{printf "%.0f", g * 1073741824 / 12}')
if [ ! -f "$CK/latest" ]; then
  $DS synth --format deepspeed -o "$CK" --params "$PARAMS" --world-size "$WORLD" --stage 3 \
    --dtype bf16 --force -q >/dev/null
fi
TAG=$(cat "$CK/latest")
ALLB=$(stat -c %s "$CK/$TAG"/*.pt | awk '{s+=$1} END {printf "%.0f", s}')
OPT=("$CK/$TAG"/*_optim_states.pt)
$DS inspect "$CK" --json > "$DIR/inspect.json"
FP32=$($PY -c "import json,sys; d=json.load(open(sys.argv[1])); b=d['bytes_per_state']; print(int(b['fp32'] + b.get('w16', 0)))" "$DIR/inspect.json")
echo "checkpoint: $CK ($(( ALLB / 1048576 )) MiB of .pt files, $WORLD ranks, ZeRO-3 bf16, ~$PARAMS params)"
"$PY" -c 'import torch, deepspeed; print("torch", torch.__version__, "deepspeed", deepspeed.__version__)' 2>/dev/null | tail -1

ours_t=(); ours_r=0; z_t=(); z_r=0; f_t=()
for r in $(seq "$REPS"); do
  rm -rf "$DIR/ours.safetensors" "$DIR/z2f"
  sync
  read -r _ _ ft < <($FL io "$FP32" "$FP32" "$DIR/floor.out" "${OPT[@]}")
  f_t+=("$ft")
  sync
  /usr/bin/time -v -o "$DIR/ours.time" $DS consolidate "$CK" -o "$DIR/ours.safetensors" --dtype fp32 -q
  read -r t rss < <(tv "$DIR/ours.time"); ours_t+=("$t"); [ "$rss" -gt "$ours_r" ] && ours_r=$rss
  sync
  DS_ACCELERATOR=cpu /usr/bin/time -v -o "$DIR/z2f.time" "$PY" -m deepspeed.utils.zero_to_fp32 "$CK" "$DIR/z2f" \
    >"$DIR/z2f.log" 2>&1 || { cat "$DIR/z2f.log" | tail -20; echo "zero_to_fp32 failed"; exit 1; }
  read -r t rss < <(tv "$DIR/z2f.time"); z_t+=("$t"); [ "$rss" -gt "$z_r" ] && z_r=$rss
  sync
done
ot=$(printf '%s\n' "${ours_t[@]}" | median); zt=$(printf '%s\n' "${z_t[@]}" | median)
ft=$(printf '%s\n' "${f_t[@]}" | median)
OUTB=$(stat -c %s "$DIR/ours.safetensors"); ZB=$(du -cb "$DIR/z2f" | tail -1 | cut -f1)
echo
echo "| tool | output | time s (median of $REPS) | ÷ floor | peak RSS MiB |"
echo "|---|---|---|---|---|"
echo "| floor: read() $(( FP32 / 1048576 )) MiB + write()+fsync $(( FP32 / 1048576 )) MiB | — | $ft | 1.00 | — |"
echo "| dsckpt consolidate --dtype fp32 | $(( OUTB / 1048576 )) MiB safetensors | $ot | $(awk -v a="$ot" -v b="$ft" 'BEGIN{printf "%.2f", a/b}') | $(( ours_r / 1024 )) |"
echo "| DeepSpeed zero_to_fp32 | $(( ZB / 1048576 )) MiB torch pickle | $zt | $(awk -v a="$zt" -v b="$ft" 'BEGIN{printf "%.2f", a/b}') | $(( z_r / 1024 )) |"
echo "zero_to_fp32 ÷ dsckpt: time $(awk -v a="$zt" -v b="$ot" 'BEGIN{printf "%.1f", a/b}')×, peak RSS $(awk -v a="$z_r" -v b="$ours_r" 'BEGIN{printf "%.0f", a/b}')×"
# same tensors? (zero_to_fp32 writes tied weights under both names; dsckpt once + an alias)
"$PY" - "$DIR/ours.safetensors" "$DIR/z2f" <<'EOF'
import glob, os, sys, torch
from safetensors.torch import load_file
ours = load_file(sys.argv[1])
ref = {}
for f in sorted(glob.glob(os.path.join(sys.argv[2], "*.bin"))):
    ref.update(torch.load(f, map_location="cpu", weights_only=True))
common = sorted(set(ours) & set(ref))
# values compared exactly (a 16-bit tensor widened to fp32 is exact); dtypes reported apart
bad = [k for k in common if not torch.equal(ours[k].float(), ref[k].float())]
dt = [f"{k} {ours[k].dtype}/{ref[k].dtype}" for k in common if ours[k].dtype != ref[k].dtype]
only_ref = sorted(set(ref) - set(ours))
print(f"outputs: {len(common)} tensors in both, {len(bad)} differ in value; dtype differs (dsckpt/zero_to_fp32): "
      f"{dt}; only in zero_to_fp32's: {only_ref[:4]}; only in dsckpt's: {sorted(set(ours) - set(ref))[:4]}")
sys.exit(1 if bad or not common else 0)
EOF
[ -n "${BENCH_KEEP:-}" ] || rm -rf "$DIR/ours.safetensors" "$DIR/z2f" "$DIR/floor.out"
