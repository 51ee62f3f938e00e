#!/usr/bin/env bash
# dstrain checkpoints against floors measured in the same run:
#   - async-save stall (the time a save keeps training from going on: the snapshot)
#     ÷ the synchronous save time of the same checkpoint;
#   - save throughput ÷ the plain write floor: a synchronous save (4 ranks write,
#     hash and fsync their files, then the manifest and `latest` are committed) of
#     B bytes against one plain write() + fsync of B bytes, and against the same
#     write with O_DIRECT (the disk without the page cache, which the saves bypass
#     where they can: common/fsutil.h). The timed save is a run's first, which also
#     faults in its writers' buffers; the run's second save (after step 3), which
#     reuses that memory as every later save of a run does, is reported beside it;
#   - load-time reshard: resuming the 4-rank ZeRO-3 checkpoint at 2 ranks / stage 2,
#     3 ranks / stage 1 and 1 rank / stage 1 (one process with every core: its
#     reads on all its threads; each rank reads only its new partition's byte ranges
#     from the old files) ÷ a plain read() of the same state bytes from those files,
#     and ÷ a checked read of them (every 4 MiB chunk read and its SHA-256 taken, on
#     every core: what a load that hashes every byte it reads cannot go below; with
#     the floors' buffers page-aligned, the checked read is 4-5x the plain read on a
#     2-core machine, so it is the floor a checked load is judged by: RESULTS.md);
#   - `--resume auto` ÷ `--resume global_step3` (the same checkpoint named), the
#     whole resume (finding the checkpoint, opening, loading) at 3 ranks.
# Usage:
#   bash bench/save.sh
# Environment: BENCH_MODEL (dstrain model flags; default ~101M parameters, so about
# 1.2 GB of fp32 master + Adam moments), BENCH_REPS (3: medians; floors interleaved
# with the commands), BENCH_DIR (scratch, build/bench-save), BENCH_COMPRESS (a zstd
# level: also time the same saves with --save_compress=LEVEL, interleaved, against the
# plain ones: stall ÷ compressed sync save, and compressed ÷ plain sync save time and
# bytes, and each load-time reshard from the compressed checkpoint ÷ from the plain
# one; the time ratios both as the ratio of the medians and as the median of the
# pairs' ratios), BENCH_SKIP_LOAD=1 (leave out the load-time reshard rows).
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a MODEL <<<"${BENCH_MODEL:---n_layer 8 --n_head 8 --n_embd 1024 --seq_len 16}"
REPS=${BENCH_REPS:-3}
DIR=${BENCH_DIR:-build/bench-save}
[ -x build/dstrain ] && [ -x build/dsrun ] && [ -x build/ds_floor ] || bash scripts/build.sh build
FL=build/ds_floor
PY=python3
CORES=$(nproc)
DATA=fixtures/corpus/licenses.txt
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# The median of line-by-line ratios A[i] / B[i] of two files (runs of a pair on
# the same line): the machines swing more from run to run than within a pair.
pair_median() { paste "$1" "$2" | awk '{print $1 / $2}' | median; }
rm -rf "$DIR"
mkdir -p "$DIR"
cfg() { # FILE STAGE WORLD (global batch 12)
  cat >"$1" <<EOF
{"train_batch_size": 12, "train_micro_batch_size_per_gpu": $((12 / $3)), "bf16": {"enabled": true},
 "optimizer": {"type": "AdamW", "params": {"lr": 0.001, "weight_decay": 0.01}},
 "gradient_clipping": 1.0, "zero_optimization": {"stage": $2}}
EOF
}
cfg "$DIR/z3w4.json" 3 4
cfg "$DIR/z2w2.json" 2 2
cfg "$DIR/z1w3.json" 1 3
cfg "$DIR/z1w1.json" 1 1
field() { $PY -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(r[int(sys.argv[2])-1][sys.argv[3]])" "$@"; }

# One save run: 3 steps, a save after step 2 (timed) and after step 3.
save_run() { # OUT_DIR LOG [--no_async_save]
  local out=$1 log=$2
  shift 2
  rm -rf "$out"
  sync
  build/dsrun --num_procs 4 build/dstrain --deepspeed "$DIR/z3w4.json" --data "$DATA" "${MODEL[@]}" \
    --eval_windows 1 --max_steps 3 --save_steps 2 --save_dir "$out" --log_file "$log" "$@" >"$log.out" 2>&1 ||
    { cat "$log.out"; exit 1; }
}
: >"$DIR/sync.t"; : >"$DIR/sync2.t"; : >"$DIR/csync2.t"; : >"$DIR/async.t"; : >"$DIR/copy.t"; : >"$DIR/wfloor.t"; : >"$DIR/dfloor.t"; : >"$DIR/csync.t"; : >"$DIR/casync.t"
ZL=${BENCH_COMPRESS:-}
for i in $(seq "$REPS"); do
  if [ -n "$ZL" ]; then
    save_run "$DIR/csync" "$DIR/csync.log" --no_async_save --save_compress="$ZL"
    field "$DIR/csync.log" 2 save_stall_s >>"$DIR/csync.t"
    field "$DIR/csync.log" 3 save_stall_s >>"$DIR/csync2.t"
    save_run "$DIR/casync" "$DIR/casync.log" --save_compress="$ZL"
    $PY -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(r[1]['save_stall_s'] + r[2].get('save_copy_s', 0))" \
      "$DIR/casync.log" >>"$DIR/casync.t"
  fi
  save_run "$DIR/sync" "$DIR/sync.log" --no_async_save
  field "$DIR/sync.log" 2 save_stall_s >>"$DIR/sync.t"
  field "$DIR/sync.log" 3 save_stall_s >>"$DIR/sync2.t"
  BYTES=$(du -cb "$DIR/sync/global_step2"/* | tail -1 | cut -f1)
  sync
  read -r _ wt _ < <($FL io 0 "$BYTES" "$DIR/floor.out" "$DIR/sync/global_step2/manifest.json")
  echo "$wt" >>"$DIR/wfloor.t"
  $FL dwrite "$BYTES" "$DIR/floor.out" >>"$DIR/dfloor.t"
  save_run "$DIR/async" "$DIR/async.log"
  # The stall of an async save: the save call, plus any copy the next update made
  # of what the writer had not read yet (save_copy_s on step 3).
  $PY -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(r[1]['save_stall_s'] + r[2].get('save_copy_s', 0))" \
    "$DIR/async.log" >>"$DIR/async.t"
  $PY -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(r[2].get('save_copy_s', 0))" \
    "$DIR/async.log" >>"$DIR/copy.t"
done
NUMEL=$(build/dsckpt inspect --json "$DIR/sync" | $PY -c 'import json,sys; print(json.load(sys.stdin)["param_count"])' 2>/dev/null ||
        echo "?")
SYNC=$(median <"$DIR/sync.t"); ASYNC=$(median <"$DIR/async.t"); WF=$(median <"$DIR/wfloor.t"); DF=$(median <"$DIR/dfloor.t")
echo "model: ${MODEL[*]} ($NUMEL parameters), 4 ranks, ZeRO-3, bf16; checkpoint $((BYTES / 1048576)) MiB; medians of $REPS"
echo
echo "| measure | command s | floor s | ratio | target |"
echo "|---|---|---|---|---|"
$PY -c "print(f'| async-save stall ÷ synchronous save time | {$ASYNC:.4f} | {$SYNC:.4f} | {$ASYNC / $SYNC:.3f} | ≤ 0.05 |')"
$PY -c "print(f'| save throughput ÷ plain write floor ($((BYTES / 1048576)) MiB, write + fsync) | {$SYNC:.4f} | {$WF:.4f} | {$WF / $SYNC:.2f} | ≥ 0.8 |')"
$PY -c "print(f'| save throughput ÷ direct write floor (the same bytes, O_DIRECT write + fsync) | {$SYNC:.4f} | {$DF:.4f} | {$DF / $SYNC:.2f} | |')"
SYNC2=$(median <"$DIR/sync2.t")
$PY -c "print(f'| the same ÷ plain write floor, the run\'s second save | {$SYNC2:.4f} | {$WF:.4f} | {$WF / $SYNC2:.2f} | ≥ 0.8 |')"

if [ -n "$ZL" ]; then
  CS=$(median <"$DIR/csync.t"); CA=$(median <"$DIR/casync.t")
  CB=$(du -cb "$DIR/csync/global_step2"/* | tail -1 | cut -f1)
  $PY -c "print(f'| --save_compress=$ZL: async-save stall ÷ compressed synchronous save | {$CA:.4f} | {$CS:.4f} | {$CA / $CS:.3f} | ≤ 0.05 |')"
  $PY -c "print(f'| --save_compress=$ZL: compressed ÷ plain synchronous save time | {$CS:.4f} | {$SYNC:.4f} | {$CS / $SYNC:.2f} | ≤ 1 |')"
  PS=$(pair_median "$DIR/csync.t" "$DIR/sync.t")
  $PY -c "print(f'| the same, median of the pairs\' ratios (each compressed save right before its plain one) | | | {$PS:.2f} | ≤ 1 |')"
  CS2=$(median <"$DIR/csync2.t"); PS2=$(pair_median "$DIR/csync2.t" "$DIR/sync2.t")
  $PY -c "print(f'| the same, the runs\' second saves (medians / median of the pairs\' ratios) | {$CS2:.4f} | {$SYNC2:.4f} | {$CS2 / $SYNC2:.2f} / {$PS2:.2f} | ≤ 1 |')"
  $PY -c "print(f'| --save_compress=$ZL: compressed ÷ plain bytes written | {$CB} | {$BYTES} | {$CB / $BYTES:.3f} | < 1 |')"
fi
[ "${BENCH_SKIP_LOAD:-0}" = 1 ] && exit 0

# The files a timed read takes, read once right before it, so the floors and the loads
# all read from the page cache: this machine's proactive reclaim (a DAMON scheme that
# pages out what has gone untouched for about a minute) drops parts of the checkpoints
# between repetitions, and a run that meets evicted pages reads them from the disk
# (`fincore` after one bench run: 1-10 % of each rank file gone).
warm() { cat "$@" >/dev/null; }

# One resume at W ranks with config C from SRC/global_step3 (or what RESUME names),
# printing dstrain's "loaded in" seconds (with WHOLE=1: "opened in" + "loaded in",
# the whole resume). --max_steps 3 with a checkpoint at step 3: load and stop (no
# step, no save).
load_run() { # W C SRC [RESUME]
  sync
  warm "$3"/global_step3/*
  build/dsrun --num_procs "$1" build/dstrain --deepspeed "$DIR/$2.json" --data "$DATA" "${MODEL[@]}" \
    --eval_windows 1 --max_steps 3 --save_dir "$3" --resume "${4:-global_step3}" >"$DIR/load.out" 2>&1 ||
    { cat "$DIR/load.out" >&2; exit 1; }
  if [ "${WHOLE:-0}" = 1 ]; then
    sed -n 's/.*opened in \([0-9.]*\) s, loaded in \([0-9.]*\) s.*/\1 \2/p' "$DIR/load.out" | awk '{print $1 + $2}'
  else
    sed -n 's/.*loaded in \([0-9.]*\) s.*/\1/p' "$DIR/load.out"
  fi
}

# Load-time reshard from the last synchronous save (global_step3 is `latest`).
SRC="$DIR/sync"
STATE=$(du -cb "$SRC/global_step3"/rank_*.safetensors | tail -1 | cut -f1)
for target in "2 z2w2" "3 z1w3" "1 z1w1"; do
  read -r W C <<<"$target"
  : >"$DIR/load.t"; : >"$DIR/rfloor.t"; : >"$DIR/cload.t"; : >"$DIR/kfloor.t"
  for i in $(seq "$REPS"); do
    sync
    warm "$SRC/global_step3"/rank_*.safetensors
    read -r rt _ _ < <($FL io "$STATE" 0 "$DIR/floor.out" "$SRC/global_step3"/rank_*.safetensors)
    echo "$rt" >>"$DIR/rfloor.t"
    warm "$SRC/global_step3"/rank_*.safetensors
    read -r kt _ < <($FL checked "$CORES" $((4 << 20)) "$SRC/global_step3"/rank_*.safetensors)
    echo "$kt" >>"$DIR/kfloor.t"
    load_run "$W" "$C" "$SRC" >>"$DIR/load.t"
    # The same resume from the compressed checkpoint, right after the plain one.
    [ -z "$ZL" ] || load_run "$W" "$C" "$DIR/csync" >>"$DIR/cload.t"
  done
  L=$(median <"$DIR/load.t"); R=$(median <"$DIR/rfloor.t"); K=$(median <"$DIR/kfloor.t")
  $PY -c "print(f'| load-time reshard 4 → $W ranks (stage 3 → ${C:1:1}), $((STATE / 1048576)) MiB of state ÷ plain read | {$L:.4f} | {$R:.4f} | {$L / $R:.2f} | ≤ 1.3 |')"
  $PY -c "print(f'| the same ÷ checked read ($CORES threads, SHA-256 of every 4 MiB chunk read; {$K / $R:.2f} × plain read) | {$L:.4f} | {$K:.4f} | {$L / $K:.2f} | |')"
  if [ -n "$ZL" ]; then
    CL=$(median <"$DIR/cload.t")
    $PY -c "print(f'| --save_compress=$ZL: resume 4 → $W ranks from the compressed ÷ from the plain checkpoint | {$CL:.4f} | {$L:.4f} | {$CL / $L:.2f} | ≤ 1.2 |')"
    PL=$(pair_median "$DIR/cload.t" "$DIR/load.t")
    $PY -c "print(f'| the same, median of the pairs\' ratios (each compressed resume right after its plain one) | | | {$PL:.2f} | ≤ 1.2 |')"
  fi
done

# `--resume auto` against naming the tag: the same load, plus finding the newest
# checkpoint (global_step3: its structure and model, no hash pass; the load's
# checked reads are the integrity check), alternated. The ratio is the median of
# the pairs' ratios (the loads swing more from run to run than within a pair).
: >"$DIR/auto.t"; : >"$DIR/tag.t"
for i in $(seq "$REPS"); do
  A=$(WHOLE=1 load_run 3 z1w3 "$SRC" auto); T=$(WHOLE=1 load_run 3 z1w3 "$SRC")
  echo "$A" >>"$DIR/auto.t"; echo "$T" >>"$DIR/tag.t"
done
A=$(median <"$DIR/auto.t"); T=$(median <"$DIR/tag.t"); R=$(pair_median "$DIR/auto.t" "$DIR/tag.t")
$PY -c "print(f'| resume 4 → 3 ranks, --resume auto ÷ --resume global_step3 (opened + loaded; median of pair ratios) | {$A:.4f} | {$T:.4f} | {$R:.2f} | ≤ 1.05 |')"
