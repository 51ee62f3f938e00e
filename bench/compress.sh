#!/usr/bin/env bash
# compress.sh — compressed native checkpoints (docs/native-format.md, version 2) on
# real values, with same-run baselines:
#  1. dstrain trains a small GPT-2 on fixtures/corpus for BENCH_STEPS steps (ZeRO-2,
#     2 ranks), once in bf16 and once in fp32, and saves uncompressed;
#  2. build/ds_zratio reports, per state and overall, raw/stored ratios of each
#     checkpoint's values in 4 MiB chunks at zstd levels 1 and 3, and the codecs'
#     encode/decode GB/s per core (per second of the thread's CPU time), the
#     single-frame codec (version 2) and the planes codec side by side;
#  3. each checkpoint, and every DeepSpeed fixture (fixtures/deepspeed*/), resharded
#     to native at its own world size with and without --compress: bytes on disk;
#  4. a synth checkpoint of BENCH_PARAMS parameters, plain, --compress (planes) and
#     --compress with single-frame chunks as version 2 wrote them (the
#     DSCKPT_TEST_ZCHUNK_FRAME test hook of the build/ test build), each
#     consolidated to bf16 BENCH_REPS times, interleaved, with the rank
#     files' pages dropped from the page cache first (cold: read from disk) and
#     not (warm): each pair's ratio compressed / plain and their median (synth
#     values are near-random, so its compression ratio is not the real one; the
#     time ratio is the cost of decoding). BENCH_CONS_SRC=DIR takes a dstrain
#     checkpoint (a save root, e.g. bench/save.sh's build/bench-save/sync) instead
#     of the synth one, rewritten at its own world size by reshard (plain,
#     --compress, and --compress with single frames): real values, whose low
#     mantissa bytes do not compress (the synth values' often do).
# Usage: bash bench/compress.sh   Environment: BENCH_DIR (build/bench-compress),
# BENCH_STEPS (300), BENCH_PARAMS (50M), BENCH_REPS (3), BENCH_REUSE=1 (keep the
# trained checkpoints of an earlier run in BENCH_DIR and skip step 1), BENCH_PARTS
# (the steps after 1 to run: "ratio disk consolidate" for 2, 3, 4).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${BENCH_DIR:-build/bench-compress}
STEPS=${BENCH_STEPS:-300}
PARAMS=${BENCH_PARAMS:-50M}
REPS=${BENCH_REPS:-3}
B=build
[ -x $B/dsckpt ] && [ -x $B/dstrain ] && [ -x $B/ds_zratio ] || bash scripts/build.sh build
if [ "${BENCH_REUSE:-0}" = 1 ] && [ -d "$DIR/run-bf16" ] && [ -d "$DIR/run-fp32" ]; then
    find "$DIR" -mindepth 1 -maxdepth 1 ! -name 'run-*' ! -name 'train-*' ! -name 'ds_*' -exec rm -rf {} +
    TRAIN=""
else
    rm -rf "$DIR"
    mkdir -p "$DIR"
    TRAIN="bf16 fp32"
fi
echo "uptime at start: $(uptime)"

# ---- 1. train ----
for dt in $TRAIN; do
    pre=""
    [ $dt = bf16 ] && pre='"bf16": {"enabled": true},'
    cat >"$DIR/ds_$dt.json" <<JSON
{
  "train_batch_size": 16, "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": 1,
  "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}},
  "scheduler": {"type": "WarmupCosineLR", "params": {"total_num_steps": "auto", "warmup_num_steps": 20}},
  $pre "gradient_clipping": 1.0, "zero_optimization": {"stage": 2}
}
JSON
    t0=$(date +%s.%N)
    $B/dsrun --num_procs 2 $B/dstrain --deepspeed "$DIR/ds_$dt.json" --data fixtures/corpus/licenses.txt \
        --n_layer 4 --n_head 4 --n_embd 128 --seq_len 64 --per_device_train_batch_size 8 --learning_rate 3e-3 \
        --max_steps "$STEPS" --eval_steps "$STEPS" --save_steps "$STEPS" --save_dir "$DIR/run-$dt" \
        --log_file "$DIR/train-$dt.jsonl" 2>&1 | tail -1
    echo "trained $dt in $(echo "$(date +%s.%N) - $t0" | bc) s"
done

PARTS=${BENCH_PARTS:-ratio disk consolidate}
# ---- 2. ratios per state, codec throughput ----
for dt in bf16 fp32; do
    case " $PARTS " in *" ratio "*) ;; *) continue ;; esac
    echo
    echo "### $dt checkpoint after $STEPS steps"
    $B/ds_zratio "$DIR/run-$dt" 1 3
done

# ---- 3. whole checkpoints on disk ----
size_of() { cat "$1"/*/rank_* "$1"/*/*.pt 2>/dev/null | wc -c; }
echo
echo "| checkpoint | plain native bytes | --compress bytes | ratio |"
echo "|---|---:|---:|---:|"
for src in "$DIR/run-bf16" "$DIR/run-fp32" fixtures/deepspeed/*/ckpt fixtures/deepspeed-0.19/z*/ckpt; do
    [ -d "$src" ] || continue
    case " $PARTS " in *" disk "*) ;; *) continue ;; esac
    ws=$($B/dsckpt inspect --json "$src" | python3 -c 'import json,sys; print(json.load(sys.stdin)["world_size"])')
    n=$(basename "$(dirname "$src")")
    case "$src" in "$DIR"/*) n=$(basename "$src") ;; fixtures/deepspeed-0.19/*) n="0.19/$n" ;; esac
    n=${n//\//-}
    $B/dsckpt reshard "$src" --to "$ws" -o "$DIR/p-$n" -q
    $B/dsckpt reshard "$src" --to "$ws" --compress -o "$DIR/z-$n" -q
    $B/dsckpt verify "$DIR/z-$n" >/dev/null
    p=$(cat "$DIR/p-$n"/*/rank_* | wc -c)
    z=$(cat "$DIR/z-$n"/*/rank_* | wc -c)
    echo "| $n | $p | $z | $(echo "scale=3; $p / $z" | bc) |"
done

# ---- 4. consolidate from compressed vs plain, page cache warm and cold ----
case " $PARTS " in *" consolidate "*) ;; *) echo "uptime at end: $(uptime)"; exit 0 ;; esac
# "cold": the rank files' pages are dropped from the page cache first
# (posix_fadvise DONTNEED on those files only, after sync), so they are read from
# the disk; "warm": read again straight after, from the page cache.
rm -rf "$DIR/s-plain" "$DIR/s-z" "$DIR/s-z2"
if [ -n "${BENCH_CONS_SRC:-}" ]; then
    # A dstrain checkpoint's own values, rewritten at its world size three ways.
    CW=$($B/dsckpt inspect --json "$BENCH_CONS_SRC" | python3 -c 'import json,sys; print(json.load(sys.stdin)["world_size"])')
    $B/dsckpt reshard "$BENCH_CONS_SRC" --to "$CW" -o "$DIR/s-plain" -q
    $B/dsckpt reshard "$BENCH_CONS_SRC" --to "$CW" -o "$DIR/s-z" --compress -q
    DSCKPT_TEST_ZCHUNK_FRAME=1 $B/dsckpt reshard "$BENCH_CONS_SRC" --to "$CW" -o "$DIR/s-z2" --compress -q
    WHAT="$BENCH_CONS_SRC (W=$CW)"
else
    $B/dsckpt synth -o "$DIR/s-plain" --params "$PARAMS" --world-size 2 --stage 2 -q
    $B/dsckpt synth -o "$DIR/s-z" --params "$PARAMS" --world-size 2 --stage 2 --compress -q
    DSCKPT_TEST_ZCHUNK_FRAME=1 $B/dsckpt synth -o "$DIR/s-z2" --params "$PARAMS" --world-size 2 --stage 2 --compress -q
    WHAT="$PARAMS params (synth bf16, W=2, ZeRO-2)"
fi
grep -q '"version":2,' "$DIR"/s-z2/*/manifest.json || { echo "s-z2 is not version 2 (test hooks not built?)"; exit 1; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
drop() { sync; python3 -c 'import os,sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$1"/*/rank_*; }
for c in cold warm; do : >"$DIR/t-plain-$c"; : >"$DIR/t-z-$c"; : >"$DIR/t-z2-$c"; : >"$DIR/r-$c"; : >"$DIR/r2-$c"; done
for r in $(seq "$REPS"); do
    for c in cold warm; do
        for k in plain z z2; do
            rm -rf "$DIR/out-$k.safetensors"
            [ $c = cold ] && drop "$DIR/s-$k"
            sync
            t0=$(date +%s.%N)
            $B/dsckpt consolidate "$DIR/s-$k" -o "$DIR/out-$k.safetensors" --dtype bf16 -q
            echo "$(date +%s.%N) - $t0" | bc >>"$DIR/t-$k-$c"
        done
        # the ratio of this pair (the plain and compressed runs back to back)
        echo "$(tail -1 "$DIR/t-z-$c") / $(tail -1 "$DIR/t-plain-$c")" | bc -l >>"$DIR/r-$c"
        echo "$(tail -1 "$DIR/t-z2-$c") / $(tail -1 "$DIR/t-plain-$c")" | bc -l >>"$DIR/r2-$c"
    done
done
cmp "$DIR/out-plain.safetensors" "$DIR/out-z.safetensors"
cmp "$DIR/out-plain.safetensors" "$DIR/out-z2.safetensors"
echo
echo "consolidate $WHAT to bf16, $REPS paired runs (seconds; ratio compressed / plain, target <= 1.2):"
echo "rank files $(cat "$DIR"/s-plain/*/rank_* | wc -c) (plain) vs $(cat "$DIR"/s-z/*/rank_* | wc -c) (planes)" \
    "vs $(cat "$DIR"/s-z2/*/rank_* | wc -c) (single frames) bytes"
for c in cold warm; do
    echo "  $c: plain $(tr '\n' ' ' <"$DIR/t-plain-$c")| planes $(tr '\n' ' ' <"$DIR/t-z-$c")|" \
        "single frames $(tr '\n' ' ' <"$DIR/t-z2-$c")"
    echo "  $c: planes / plain $(xargs printf '%.3f ' <"$DIR/r-$c")| median $(median <"$DIR/r-$c" | xargs printf '%.3f');" \
        "single frames / plain $(xargs printf '%.3f ' <"$DIR/r2-$c")| median $(median <"$DIR/r2-$c" | xargs printf '%.3f')"
done
echo "uptime at end: $(uptime)"
