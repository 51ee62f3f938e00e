#!/usr/bin/env bash
# rt_device_test.sh — dstrain's device discipline, proven on the CPU: training through
# the cpu-strict device table (device memory the host cannot touch: any read or
# write of it outside the table's own ops kills the run with SIGSEGV, and a copy in
# the wrong direction or a host pointer handed to a kernel aborts) gives bit for bit
# what the plain CPU table gives — every logged loss, gradient norm, eval loss, the
# final master/working weight hashes, and every byte of the checkpoints — for ZeRO
# stages 0-3 at 1 and 2 ranks, bf16 / fp16 / fp32, gradient accumulation, async and
# synchronous saves, optimizer offload (offload_optimizer device cpu: the state in
# host memory, Adam on the CPU, gradients down and weights up through the table),
# and resuming across the two tables in both directions. So the engine, the model,
# the checkpoint code and the collectives reach device memory only through the
# device table, as a GPU build needs.
# Usage: rt_device_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
. "$(dirname "$0")/rt_lib.sh"
rt_init "$@"
MODEL=(--n_layer 2 --n_head 4 --n_embd 64 --seq_len 48 --eval_windows 2 --eval_steps 3)

# config NAME STAGE DTYPE MICRO GAS OFFLOAD(0|1)
config() {
    local prec="" off=""
    case $3 in
    bf16) prec='"bf16": {"enabled": true},' ;;
    fp16) prec='"fp16": {"enabled": true, "initial_scale_power": 12},' ;;
    esac
    [ "$6" != 0 ] && off=', "offload_optimizer": {"device": "cpu", "pin_memory": true}'
    [ "$6" = 2 ] && off="$off"', "offload_param": {"device": "cpu", "pin_memory": true}'
    cat >"$1" <<JSON
{"train_micro_batch_size_per_gpu": $4, "gradient_accumulation_steps": $5, $prec
 "optimizer": {"type": "AdamW", "params": {"lr": 0.003, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.01}},
 "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0, "warmup_max_lr": 0.003, "warmup_num_steps": 3}},
 "gradient_clipping": 1.0, "zero_optimization": {"stage": $2, "reduce_bucket_size": 3000$off}}
JSON
}

# The numerics of a log: every field but the timings.
numerics() {
    $PY -c '
import json, sys
keys = ("step", "loss", "lr", "grad_norm", "loss_scale", "skipped", "eval_loss", "master_sha256", "working_sha256")
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(" ".join(f"{k}={r[k]!r}" for k in keys if k in r))
' "$1"
}

# train DEVICE W CONFIG DIR [args...]: writes DIR/log, DIR/out, checkpoints in DIR/save.
train() {
    local dev=$1 w=$2 cfg=$3 dir=$4
    shift 4
    mkdir -p "$dir"
    "$DSRUN" --num_procs "$w" "$DSTRAIN" --device "$dev" --deepspeed "$cfg" --data "$DATA" "${MODEL[@]}" \
        --log_file "$dir/log" --save_dir "$dir/save" --save_steps 3 "$@" >"$dir/out" 2>&1
}

# same_ckpt A B: the two save dirs hold the same checkpoints, byte for byte.
same_ckpt() {
    local a=$1 b=$2 n=0
    for t in "$a"/global_step*; do
        [ -d "$t" ] || continue
        for f in "$t"/*; do
            n=$((n + 1))
            cmp -s "$f" "$b/$(basename "$t")/$(basename "$f")" || { echo "differs: $(basename "$t")/$(basename "$f")"; return 1; }
        done
    done
    [ "$n" -gt 0 ] || { echo "no checkpoint files in $a"; return 1; }
}

# case NAME W STAGE DTYPE MICRO GAS OFFLOAD(0, 1: optimizer, 2: optimizer and parameters) [extra dstrain args]
run_case() {
    local name=$1 w=$2
    config "$name.json" "$3" "$4" "$5" "$6" "$7"
    shift 7
    if ! train cpu "$w" "$name.json" "$name.cpu" --max_steps 6 "$@"; then
        bad "$name: cpu run failed: $(tail -3 "$name.cpu/out")"
        return
    fi
    if ! train cpu-strict "$w" "$name.json" "$name.strict" --max_steps 6 "$@"; then
        bad "$name: cpu-strict run failed (a host access to device memory?): $(tail -5 "$name.strict/out")"
        return
    fi
    local a b
    a=$(numerics "$name.cpu/log")
    b=$(numerics "$name.strict/log")
    if [ -n "$a" ] && [ "$a" = "$b" ] && grep -q master_sha256 <<<"$a"; then ok; else
        bad "$name: logs differ"$'\n'"cpu:    $a"$'\n'"strict: $b"
    fi
    if same_ckpt "$name.cpu/save" "$name.strict/save" >"$name.cmp"; then ok; else bad "$name: $(cat "$name.cmp")"; fi
}

# Three threads: the cpu-strict run's async saves (model and optimizer on the
# "device") are written on two (all but the one that drives the device), the cpu
# run's on one (checked below); the checkpoints are the same bytes (run_case).
OMP_NUM_THREADS=3 run_case w1s0 1 0 bf16 2 1 0
if grep -q "^dstrain: saved global_step3 in [0-9.]* s, async, 2 threads a rank$" w1s0.strict/out &&
    grep -q "^dstrain: saved global_step3 in [0-9.]* s, async$" w1s0.cpu/out; then ok; else
    bad "w1s0: async save threads: strict '$(grep 'saved global_step3' w1s0.strict/out)', cpu '$(grep 'saved global_step3' w1s0.cpu/out)'"
fi
run_case w1s1fp16 1 1 fp16 1 2 0
run_case w1s3off 1 3 bf16 2 1 1 --no_async_save
run_case w2s0fp32 2 0 fp32 1 1 0
run_case w2s1off 2 1 bf16 1 2 1
run_case w2s2 2 2 bf16 2 1 0 --no_async_save
run_case w2s2off 2 2 fp16 1 1 1
run_case w2s3 2 3 bf16 1 2 0
# The offloaded gradients come down in chunks of 777 elements here (a test hook), so
# the double-buffered copies (pipe_begin/pipe_wait) go through many chunks a step.
DSTRAIN_TEST_PIPE_CHUNK=777 run_case w2s3off 2 3 bf16 2 1 1
# offload_param: the 16-bit pieces in host memory, up to the device as gathered.
run_case w2s3poff 2 3 fp16 1 2 2

# Resume across the tables: the step-3 checkpoint of one table, resumed on the
# other, ends where the uninterrupted run ends (stage 2 saved -> stage 3 resumed at
# another world size is the engine's business, tested in rt_ckpt; here the device).
for pair in "cpu:cpu-strict:w2s2" "cpu-strict:cpu:w2s3off"; do
    IFS=: read -r from to name <<<"$pair"
    src=$([ "$from" = cpu ] && echo "$name.cpu" || echo "$name.strict")
    ref=$([ "$to" = cpu ] && echo "$name.cpu" || echo "$name.strict")
    rd="resume.$from.$to"
    mkdir -p "$rd/save"
    cp -r "$src/save/global_step3" "$rd/save/"
    echo global_step3 >"$rd/save/latest"
    if ! train "$to" 2 "$name.json" "$rd" --max_steps 6 --resume global_step3; then
        bad "resume $from -> $to failed: $(tail -5 "$rd/out")"
        continue
    fi
    a=$(numerics "$ref/log" | tail -1)
    b=$(numerics "$rd/log" | tail -1)
    if [ -n "$a" ] && [ "$a" = "$b" ]; then ok; else bad "resume $from -> $to: last step differs"$'\n'"$a"$'\n'"$b"; fi
done
# w2s2's step-3 checkpoint resumed at one rank: on cpu, one thread (the host
# partitions read in order); on cpu-strict, three threads, with a staging buffer of
# 1000 floats (a test hook: the device partitions arrive in many batches, each read
# on every thread and then copied up) and without. The three runs end at the same
# step, and the staged one made at least 10 more copies up than the other (the
# unstaged load copies each state's group up whole: 6 copies; the staged one cuts
# them at every batch, the largest tensor's share at least).
config w1s2.json 2 bf16 4 1 0
for side in "cpu 1 0 cpu" "cpu-strict 3 1000 staged" "cpu-strict 3 0 strict"; do
    read -r dev th stage name <<<"$side"
    rd="resume1.$name"
    mkdir -p "$rd/save"
    cp -r w2s2.cpu/save/global_step3 "$rd/save/"
    echo global_step3 >"$rd/save/latest"
    OMP_NUM_THREADS=$th DSTRAIN_TEST_LOAD_STAGE=$stage train "$dev" 1 w1s2.json "$rd" --max_steps 6 --resume global_step3 ||
        bad "resume w2s2 at 1 rank ($name) failed: $(tail -5 "$rd/out")"
done
a=$(numerics resume1.cpu/log | tail -1)
for name in staged strict; do
    b=$(numerics "resume1.$name/log" | tail -1)
    if [ -n "$a" ] && [ "$a" = "$b" ]; then ok; else bad "resume at 1 rank: cpu and $name differ"$'\n'"$a"$'\n'"$b"; fi
done
ups() { sed -n 's/^cpu-strict device: \([0-9]*\) host-to-device copies$/\1/p' "$1/out" | tail -1; }
u1=$(ups resume1.staged) u0=$(ups resume1.strict)
if [ -n "$u1" ] && [ -n "$u0" ] && [ "$u1" -ge $((u0 + 10)) ]; then ok; else
    bad "the staged resume made ${u1:-no} copies up against ${u0:-no} (want 10 more)"
fi

# The offload is taken: the strict run reports it (so the test above exercised it).
if grep -q "optimizer offloaded" w2s3off.strict/out; then ok; else bad "offload not reported by the cpu-strict run: $(head -3 w2s3off.strict/out)"; fi
if grep -q "optimizer and parameters offloaded" w2s3poff.strict/out && ! grep -q "offload_param" w2s3poff.strict/out; then ok; else
    bad "offload_param not taken by the cpu-strict run: $(head -4 w2s3poff.strict/out)"
fi

# The offloaded optimizer's gradients came down through the pipelined copies: more
# of them than the 6 steps x 2 groups of one copy each.
pipes=$(sed -n 's/^cpu-strict device: \([0-9]*\) offload copies pipelined.*/\1/p' w2s3off.strict/out | head -1)
if [ "${pipes:-0}" -gt 12 ]; then ok; else bad "w2s3off cpu-strict: ${pipes:-no} pipelined offload copies (want > 12)"; fi

# Async saves of device partitions go through the table's snapshot ops (side-stream
# copies on a GPU): every snapshot begun was waited for by the writer before it read
# (and the checkpoints above are the CPU's, byte for byte).
snaps=$(sed -n 's/^cpu-strict device: \([0-9]*\) snapshot(s) begun, \([0-9]*\) waited for.*/\1 \2/p' w2s3.strict/out | head -1)
read -r begun waited <<<"${snaps:-0 -1}"
if [ "$begun" -gt 0 ] && [ "$begun" = "$waited" ]; then ok; else
    bad "w2s3 cpu-strict: snapshot ops not used as they should be: '${snaps}' ($(grep cpu-strict w2s3.strict/out | head -3))"
fi

# 16-bit GEMM operands (--gemm_dtype, what a GPU's bf16 mode computes): cpu-strict
# emulates them, so the W=2 stage-2 bf16 run with bf16 GEMMs has losses near the
# fp32-GEMM run's (the activations are rounded, so not the same bits); the plain
# CPU table refuses them (exit 5, naming the device); fp32 is the same as auto there.
if train cpu-strict 2 w2s2.json gemm16 --max_steps 6 --no_async_save --gemm_dtype bf16; then
    if $PY - w2s2.cpu/log gemm16/log <<'PYEOF'; then ok; else bad "bf16 GEMMs: losses not within 1e-2 of fp32 GEMMs, or identical"; fi
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:3])
d = max(abs(x - y) / abs(x) for x, y in zip(a, b))
print(f"bf16 GEMMs vs fp32: max relative loss difference {d:.3g} over {len(b)} steps")
sys.exit(0 if len(a) == len(b) == 6 and 0 < d < 1e-2 else 1)
PYEOF
else
    bad "cpu-strict --gemm_dtype bf16 failed: $(tail -5 gemm16/out)"
fi
train cpu 1 w2s2.json gemmcpu --max_steps 1 --gemm_dtype bf16
rc=$?
if [ $rc -eq 5 ] && grep -q "cpu device computes its GEMMs in fp32 only" gemmcpu/out; then ok; else
    bad "cpu --gemm_dtype bf16: exit $rc, want 5 naming the device: $(tail -3 gemmcpu/out)"
fi
train cpu 1 w2s2.json gemmbad --max_steps 1 --gemm_dtype int8
rc=$?
if [ $rc -eq 3 ] && grep -q "gemm_dtype must be auto, fp32, bf16 or fp16 (got 'int8')" gemmbad/out && [ ! -e gemmbad/save ]; then
    ok
else
    bad "--gemm_dtype int8: exit $rc, want 3 with the choices and no save dir: $(tail -2 gemmbad/out)"
fi
if train cpu 2 w2s2.json gemm32 --max_steps 6 --no_async_save --gemm_dtype fp32 &&
    [ "$(numerics gemm32/log)" = "$(numerics w2s2.cpu/log)" ]; then ok; else bad "cpu --gemm_dtype fp32 differs from the default"; fi

rt_finish rt_device
