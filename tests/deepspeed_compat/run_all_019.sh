#!/usr/bin/env bash
# Manual checks against the current PyPI stack (torch 2.15.0, deepspeed 0.19.8, transformers
# 5.25.0, accelerate 1.16.0) on the fixtures/deepspeed-0.19/* checkpoints. Not part of CI (see
# README.md beside this file).
#
#   DS_VENV=/path/to/venv tests/deepspeed_compat/run_all_019.sh BUILD_DIR [WORK_DIR]
#
# DS_VENV    a venv with the stack above (required; its bin/python runs every check)
# BUILD_DIR  the CMake build dir holding dsckpt
# WORK_DIR   where converted checkpoints and logs go (default: a new temp dir)
#
# Checks (CHECKS, default all four, in this order):
#   deepspeed        each of FIXTURES at its own world size, then `dsckpt reshard --format
#                    deepspeed --to M` for M in SIZES, loaded by engine.load_checkpoint and
#                    compared bitwise with expected/truth.safetensors (load_check.py);
#                    TRAIN_STEP_SIZES also take one training step
#   universal        `dsckpt reshard --format universal`, loaded at M in UNIVERSAL_SIZES with
#                    "checkpoint": {"load_universal": true} (load_check.py --universal)
#   hf_resume        hf_resume_check.py: a Trainer resumes from a resharded checkpoint-N at
#                    M = HF_SIZES and finishes with load_best_model_at_end
#   from_pretrained  from_pretrained_check.py (and hf_from_pretrained.py when present):
#                    from_pretrained on `dsckpt consolidate` output vs DeepSpeed's own
#                    zero_to_fp32 path, logits max abs diff 0
# ZeRO-0 fixtures (Z0_FIXTURES, default "z0_ws2_bf16 z0_ws2_fp32") join the deepspeed check at
# Z0_SIZES (default "1 2"), each load with a training step; they have no universal check
# (refused: DeepSpeed loads universal checkpoints only at stages 1-3).
# Environment: FIXTURES (default "z1_ws2_bf16 z2_ws2_bf16_palign z3_ws2_bf16"), SIZES
# (default "1 2 3 4"), TRAIN_STEP_SIZES ("3"), UNIVERSAL_SIZES ("1 3"), HF_SIZES ("1 3"),
# TIMEOUT (s per check, 1800). DeepSpeed's shared-memory op is not built (load_check.py
# --shm-op skip), so nothing is left in /dev/shm. Runs one check at a time; prints one RESULT
# line per check and a final tally; exit 1 on any FAIL.
set -u

if [ $# -lt 1 ] || [ -z "${DS_VENV:-}" ]; then
    sed -n '2,28p' "$0" >&2
    exit 3
fi
PY=$DS_VENV/bin/python
BUILD=$1
WORK=${2:-$(mktemp -d -t dscompat019.XXXXXX)}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DSCKPT=$BUILD/dsckpt
FX=$ROOT/fixtures/deepspeed-0.19
CHECKS=${CHECKS:-"deepspeed universal hf_resume from_pretrained"}
FIXTURES=${FIXTURES:-"z1_ws2_bf16 z2_ws2_bf16_palign z3_ws2_bf16"}
SIZES=${SIZES:-"1 2 3 4"}
Z0_FIXTURES=${Z0_FIXTURES-"z0_ws2_bf16 z0_ws2_fp32"}
Z0_SIZES=${Z0_SIZES:-"1 2"}
TRAIN_STEP_SIZES=${TRAIN_STEP_SIZES:-"3"}
UNIVERSAL_SIZES=${UNIVERSAL_SIZES:-"1 3"}
HF_SIZES=${HF_SIZES:-"1 3"}
TIMEOUT=${TIMEOUT:-1800}
export DS_BUILD_OPS=${DS_BUILD_OPS:-0} DS_ACCELERATOR=cpu
mkdir -p "$WORK/logs"
WORK=$(cd "$WORK" && pwd)  # absolute: reshard writes best_model_checkpoint as -o gives it
[ -x "$DSCKPT" ] || { echo "no $DSCKPT" >&2; exit 3; }
[ -x "$PY" ] || { echo "no $PY" >&2; exit 3; }
"$PY" -c 'import torch, deepspeed; print("torch", torch.__version__, "deepspeed", deepspeed.__version__)' \
    2>/dev/null | tail -1

pass=0 fail=0

tally() {  # label rc seconds [log]
    if [ "$2" -eq 0 ]; then
        pass=$((pass + 1)); echo "RESULT $1 PASS (${3}s)"
    else
        fail=$((fail + 1)); echo "RESULT $1 FAIL (${3}s) [${4:-}]"
    fi
}

load() {  # label save_dir M truth [extra load_check args]
    local label=$1 dir=$2 m=$3 truth=$4
    shift 4
    local log=$WORK/logs/$label t0=$SECONDS
    mkdir -p "$log"
    "$PY" "$HERE/load_check.py" "$dir" "$m" --truth "$truth" --timeout "$TIMEOUT" \
        --gloo-shim off --shm-op skip --log-dir "$log" --quiet "$@" >"$log/launcher.out" 2>&1
    local rc=$?
    tally "$label M=$m $*" $rc $((SECONDS - t0)) "$log"
    [ $rc -eq 0 ] || grep -h '^VERDICT' "$log/launcher.out" | head -2 | cut -c1-800
}

convert() {  # label out dsckpt-args...: run dsckpt, count a failure
    local label=$1 out=$2
    shift 2
    if ! "$DSCKPT" "$@" -o "$out" -q >"$WORK/logs/$label.dsckpt.log" 2>&1; then
        echo "RESULT $label FAIL (dsckpt $1 failed: $(tail -1 "$WORK/logs/$label.dsckpt.log"))"
        fail=$((fail + 1))
        return 1
    fi
}

for check in $CHECKS; do
    case $check in
    deepspeed)
        for name in $FIXTURES; do
            truth=$FX/$name/expected/truth.safetensors
            ws=$(echo "$name" | sed -n 's/.*_ws\([0-9]*\)_.*/\1/p')
            load "${name}_orig" "$FX/$name/ckpt" "$ws" "$truth"
            for m in $SIZES; do
                out=$WORK/${name}_M$m
                rm -rf "$out"
                convert "${name}_M$m" "$out" reshard "$FX/$name/ckpt" --to "$m" --format deepspeed \
                    || continue
                extra=()
                for t in $TRAIN_STEP_SIZES; do [ "$t" = "$m" ] && extra=(--train-step); done
                load "${name}_M$m" "$out" "$m" "$truth" "${extra[@]}"
            done
        done
        # ZeRO-0: nothing is partitioned; our one-file output loaded at each of Z0_SIZES
        for name in $Z0_FIXTURES; do
            truth=$FX/$name/expected/truth.safetensors
            ws=$(echo "$name" | sed -n 's/.*_ws\([0-9]*\)_.*/\1/p')
            load "${name}_orig" "$FX/$name/ckpt" "$ws" "$truth" --train-step
            for m in $Z0_SIZES; do
                out=$WORK/${name}_M$m
                rm -rf "$out"
                convert "${name}_M$m" "$out" reshard "$FX/$name/ckpt" --to "$m" --format deepspeed || continue
                load "${name}_M$m" "$out" "$m" "$truth" --train-step
            done
        done
        ;;
    universal)
        for name in $FIXTURES; do
            truth=$FX/$name/expected/truth.safetensors
            out=$WORK/${name}_universal
            rm -rf "$out"
            convert "${name}_universal" "$out" reshard "$FX/$name/ckpt" --format universal || continue
            for m in $UNIVERSAL_SIZES; do
                load "${name}_universal_M$m" "$out" "$m" "$truth" --universal --train-step
            done
        done
        ;;
    hf_resume)
        for m in $HF_SIZES; do
            out=$WORK/hf_M$m
            rm -rf "$out"
            mkdir -p "$out"  # dsckpt creates the output, not its parents
            # each checkpoint-N of the output_dir into a checkpoint-N of a new output_dir
            ok=1
            for c in checkpoint-4 checkpoint-12; do
                convert "hf_trainer_z3_${c}_M$m" "$out/$c" reshard "$FX/hf_trainer_z3/output" -t "$c" \
                    --to "$m" --format deepspeed || ok=0
            done
            [ $ok = 1 ] || continue
            log=$WORK/logs/hf_resume_M$m t0=$SECONDS
            mkdir -p "$log"
            "$PY" "$HERE/hf_resume_check.py" "$out" "$m" --resume checkpoint-4 --work "$log" \
                --timeout "$TIMEOUT" >"$log/launcher.out" 2>&1
            rc=$?
            tally "hf_resume M=$m" $rc $((SECONDS - t0)) "$log"
            [ $rc -eq 0 ] || tail -5 "$log/launcher.out"
        done
        ;;
    from_pretrained)
        # ours: zero_to_fp32 run live on checkpoint-4; hf_from_pretrained.py: output_dir -t best
        # against the fixture's stored zero_to_fp32 output
        log=$WORK/logs/from_pretrained t0=$SECONDS
        mkdir -p "$log"
        "$PY" "$HERE/from_pretrained_check.py" --dsckpt "$DSCKPT" --work "$log" >"$log/out" 2>&1
        rc=$?
        tally "from_pretrained checkpoint-4 vs live zero_to_fp32" $rc $((SECONDS - t0)) "$log"
        [ $rc -eq 0 ] || tail -5 "$log/out"
        if [ -f "$HERE/hf_from_pretrained.py" ]; then
            t0=$SECONDS
            "$PY" "$HERE/hf_from_pretrained.py" "$DSCKPT" >"$log/hf_from_pretrained.out" 2>&1
            rc=$?
            tally "hf_from_pretrained.py (output_dir -t best)" $rc $((SECONDS - t0)) "$log"
            [ $rc -eq 0 ] || tail -5 "$log/hf_from_pretrained.out"
        fi
        ;;
    *)
        echo "unknown check $check" >&2
        exit 3
        ;;
    esac
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
