#!/usr/bin/env bash
# rt_train_test.sh — dstrain end to end over MPI (through dsrun): ZeRO stages 0-3
# give bit-identical training at the same world size, the same global batch at
# W = 1 and 4 gives the same losses within tolerance, the loss falls, fp16
# overflow steps are skipped with the scale lowered, per-rank memory follows the
# ZeRO formulas, and bad configs are refused with the key named.
# Usage: rt_train_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
BUILD=$1
SRC=$2
DSTRAIN="$BUILD/dstrain"
DSRUN="$BUILD/dsrun"
DATA="$SRC/fixtures/corpus/licenses.txt"
PY=${PYTHON3:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); }
bad() { FAIL=$((FAIL + 1)); echo "FAIL: $*"; }
MODEL=(--n_layer 2 --n_head 2 --n_embd 32 --seq_len 32 --eval_windows 4)

# cfg NAME STAGE DTYPE MICRO GAS [extra json]
cfg() {
    local prec=""
    case $3 in
    bf16) prec='"bf16": {"enabled": true},' ;;
    fp16) prec='"fp16": {"enabled": true, "initial_scale_power": 8},' ;;
    esac
    cat >"$1" <<EOF
{"train_micro_batch_size_per_gpu": $4, "gradient_accumulation_steps": $5, $prec
 "optimizer": {"type": "AdamW", "params": {"lr": 0.003, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.01}},
 "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0, "warmup_max_lr": 0.003, "warmup_num_steps": 3}},
 "gradient_clipping": 1.0, "zero_optimization": {"stage": $2, "reduce_bucket_size": 5000}${6:-}}
EOF
}

train() { # W CONFIG LOG STEPS
    "$DSRUN" --num_procs "$1" "$DSTRAIN" --deepspeed "$2" --data "$DATA" "${MODEL[@]}" --max_steps "$4" \
        --log_file "$3" >"$3.out" 2>&1
}

field() { # LOG KEY: the values of KEY, one per line
    $PY -c "import json,sys; [print(json.loads(l).get(sys.argv[2])) for l in open(sys.argv[1])]" "$1" "$2"
}

echo "== stages 0-3 are bit-identical at the same world size (bf16, one micro-batch per step)"
for W in 1 2 4; do
    ref=""
    for S in 0 1 2 3; do
        cfg "c$S.json" "$S" bf16 2 1
        if ! train "$W" "c$S.json" "w${W}s$S.log" 5; then
            bad "W=$W stage $S: dstrain failed: $(tail -3 "w${W}s$S.log.out")"
            continue
        fi
        cur="$(field "w${W}s$S.log" loss)|$(field "w${W}s$S.log" grad_norm)|$(field "w${W}s$S.log" master_sha256 | tail -1)"
        if [ -z "$ref" ]; then ref=$cur; ok
        elif [ "$cur" = "$ref" ]; then ok
        else bad "W=$W stage $S: losses/grad norms/master weights differ from stage 0"; fi
    done
done

echo "== comm_bytes: what each stage's collectives must send per rank and step (ZeRO formulas)"
"$DSTRAIN" --deepspeed c0.json --data "$DATA" "${MODEL[@]}" --print_memory >numel.txt 2>&1 || bad "--print_memory failed"
NUMEL=$($PY -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['numel'])" numel.txt)
for W in 2 4; do
    for S in 0 1 2 3; do
        $PY - "w${W}s$S.log" "$NUMEL" "$W" "$S" <<'EOF' && ok || bad "W=$W stage $S: comm_bytes is not what the stage's collectives send"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
n, W, S = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# fp32 gradients: all-reduce 8N(W-1)/W (stage 0) or reduce-scatter 4N(W-1)/W; 16-bit
# weights all-gathered after the update (stages 1-2: 2N(W-1)/W) or before each use in
# forward and backward (stage 3: 2 x 2N(W-1)/W). At stages 1-3 the exact global norm
# all-gathers every rank's 2048 128-bit exponent-bucket partial sums (32 KiB per peer).
# Uneven partitions move rank 0's share by a little; the loss reduction adds 8 bytes.
want = {0: 8, 1: 6, 2: 6, 3: 8}[S] * n * (W - 1) / W
norm = (W - 1) * 2048 * 16 if S else 0
assert rows
for r in rows:
    assert 0.98 * want <= r["comm_bytes"] - norm <= 1.02 * want + 1024, (r["comm_bytes"], want, norm)
EOF
    done
done

echo "== gradient accumulation: stages agree within tolerance, and with one big micro-batch"
for S in 0 2 3; do
    cfg "g$S.json" "$S" fp32 1 2
    train 2 "g$S.json" "gas$S.log" 4 || bad "gas stage $S failed: $(tail -3 "gas$S.log.out")"
done
cfg "g1big.json" 0 fp32 2 1
train 2 "g1big.json" "gasbig.log" 4 || bad "gas reference failed"
$PY - gas0.log gas2.log gas3.log gasbig.log <<'EOF' && ok || bad "accumulated runs differ by more than 1e-5"
import json, sys
runs = [[json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:]]
for r in runs[1:]:
    assert len(r) == len(runs[0]) == 4, runs
    for a, b in zip(runs[0], r):
        assert abs(a - b) <= 1e-5 * abs(a), (a, b)
EOF

echo "== the same global batch at W = 1 and W = 4 (fp32, stages 0 and 3)"
cfg "w1.json" 0 fp32 8 1
cfg "w4.json" 3 fp32 2 1
train 1 w1.json gb1.log 6 || bad "W=1 run failed: $(tail -3 gb1.log.out)"
train 4 w4.json gb4.log 6 || bad "W=4 run failed: $(tail -3 gb4.log.out)"
$PY - gb1.log gb4.log <<'EOF' && ok || bad "W=1 and W=4 losses differ by more than 1e-4 relative"
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
assert len(a) == len(b) == 6
for x, y in zip(a, b):
    assert abs(x["loss"] - y["loss"]) <= 1e-4 * abs(x["loss"]), (x["loss"], y["loss"])
    assert abs(x["grad_norm"] - y["grad_norm"]) <= 1e-3 * abs(x["grad_norm"]), (x["grad_norm"], y["grad_norm"])
EOF

echo "== the loss falls"
cfg "fall.json" 2 bf16 4 1
train 2 fall.json fall.log 40 || bad "training run failed: $(tail -3 fall.log.out)"
$PY - fall.log <<'EOF' && ok || bad "loss did not fall: $(head -1 fall.log) ... $(tail -1 fall.log)"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
first = sum(x["loss"] for x in r[:3]) / 3
last = sum(x["loss"] for x in r[-3:]) / 3
assert len(r) == 40 and last < first - 1.0, (first, last)
assert r[-1]["eval_loss"] < 4.0, r[-1]["eval_loss"]
EOF

echo "== fp16: overflowing steps are skipped and the scale halves (hysteresis 1)"
cfg "f16.json" 2 fp16 2 1 ''
sed -i 's/"initial_scale_power": 8/"initial_scale_power": 24, "hysteresis": 1/' f16.json
train 2 f16.json f16.log 12 || bad "fp16 run failed: $(tail -3 f16.log.out)"
$PY - f16.log <<'EOF' && ok || bad "fp16 loss scaling did not behave: $(cat f16.log | head -12)"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
skipped = [x for x in r if x["skipped"]]
applied = [x for x in r if not x["skipped"]]
assert skipped and applied, "expected both skipped and applied steps"
assert r[0]["skipped"] and r[0]["loss_scale"] == 2.0 ** 24
for a, b in zip(r, r[1:]):
    if a["skipped"]:
        assert b["loss_scale"] == a["loss_scale"] / 2, (a, b)
scales = [x["loss_scale"] for x in r]
assert scales == sorted(scales, reverse=True), "the scale rose within the window"
assert not any(x["skipped"] for x in r[-3:]), "still overflowing at the end"
assert all(x["grad_norm"] > 0 for x in applied)
EOF

echo "== per-rank memory follows the ZeRO formulas (W=4)"
for S in 0 1 2 3; do
    cfg "m$S.json" "$S" bf16 2 1
    "$DSRUN" --num_procs 4 "$DSTRAIN" --deepspeed "m$S.json" --data "$DATA" "${MODEL[@]}" --print_memory >"mem$S.txt" 2>&1 ||
        bad "stage $S --print_memory failed: $(tail -3 "mem$S.txt")"
    $PY - "mem$S.txt" "$S" <<'EOF' && ok || bad "stage $S memory: $(cat "mem$S.txt")"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
stage = int(sys.argv[2])
assert len(rows) == 4
for r in rows:
    psi, W = r["numel"], r["world_size"]
    # textbook: params 2Ψ (2Ψ/W at stage 3), grads 4Ψ (4Ψ/W at 2-3), optimizer 12Ψ (12Ψ/W at 1-3);
    # padding adds at most 2W elements per group (stages 1-2) or one per tensor (stage 3).
    slack = 64 * W
    for key in ("params", "grads", "optim"):
        have, want = r[key + "_bytes"], r["formula_" + key + "_bytes"]
        unit = {"params": 2, "grads": 4, "optim": 12}[key]
        assert want <= have <= want + slack * unit, (key, have, want)
    assert r["params_bytes"] == (2 * psi if stage < 3 else r["params_bytes"])
    assert (r["optim_bytes"] < 12 * psi) == (stage >= 1)
    assert (r["grads_bytes"] < 4 * psi) == (stage >= 2)
    assert (r["params_bytes"] < 2 * psi) == (stage == 3)
EOF
done

echo "== bad configs are refused, naming the key"
bad_cfg() { # FILE-CONTENT EXPECTED-SUBSTRING DESCRIPTION
    printf '%s' "$1" >bad.json
    "$DSTRAIN" --deepspeed bad.json --data "$DATA" "${MODEL[@]}" --max_steps 1 >bad.out 2>&1
    rc=$?
    if [ "$rc" -ne 2 ]; then bad "$3: exit $rc, expected 2 ($(tail -2 bad.out))"
    elif ! grep -qi -- "$2" bad.out; then bad "$3: message lacks '$2': $(tail -2 bad.out)"
    else ok; fi
}
bad_cfg '{"train_micro_batch_size_per_gpu": 2, "bf16": {"enabled": true}, "fp16": {"enabled": true}}' "bf16" "fp16 and bf16 both on"
bad_cfg '{"train_batch_size": 7, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1}' "train_batch_size" "inconsistent batch"
bad_cfg '{"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 4}}' "zero_optimization.stage" "stage 4"
bad_cfg '{"train_micro_batch_size_per_gpu": 2, "zero_optimisation": {"stage": 1}}' "zero_optimisation" "misspelt key"
bad_cfg '{"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}}' "nvme" "nvme offload"
bad_cfg '{"train_micro_batch_size_per_gpu": 2, "steps_per_print": "auto"}' "steps_per_print" "auto that no flag fills"
bad_cfg '{"train_micro_batch_size_per_gpu": 2,' "bad.json" "malformed JSON"
# Every config problem in one run, said once (rank 0) even on several ranks.
printf '%s' '{"train_micro_batch_size_per_gpu": 2, "gradient_clipping": 1.0, "zero_optimization": {"stage": 4}, "fp16": {"enabled": false}}' >bad.json
"$DSRUN" --num_procs 2 "$DSTRAIN" --deepspeed bad.json --data "$DATA" "${MODEL[@]}" --max_steps 1 --max_grad_norm 0.5 --fp16 >bad.out 2>&1
rc=$?
if [ "$rc" -ne 0 ] && grep -q "3 problems" bad.out && grep -q "gradient_clipping" bad.out && grep -q "zero_optimization.stage" bad.out &&
    grep -q "fp16.enabled" bad.out && [ "$(grep -c '3 problems' bad.out)" -eq 1 ]; then ok
else bad "all config problems in one run, said once: exit $rc: $(head -c 600 bad.out)"; fi
# "auto" without its flag: the Trainer's defaults (lr 5e-5, micro batch 8, ...).
printf '%s' '{"train_micro_batch_size_per_gpu": "auto", "gradient_clipping": "auto", "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}, "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}' >auto.json
"$DSTRAIN" --deepspeed auto.json --data "$DATA" "${MODEL[@]}" --max_steps 1 --bf16 --log_file auto.jsonl >auto.out 2>&1
if [ $? -eq 0 ] && grep -q "batch 8 = 8 x 1 x 1" auto.out && grep -q '"lr": 5e-05' auto.jsonl; then ok
else bad "\"auto\" takes the Trainer's defaults: $(tail -3 auto.out) $(head -c 300 auto.jsonl)"; fi
# Hugging Face flags.
"$DSTRAIN" --deepspeed auto.json --data "$DATA" "${MODEL[@]}" --output_dir hfo --save_steps 30 --eval_steps 20 --load_best_model_at_end >bad.out 2>&1
[ $? -eq 3 ] && grep -q "round multiple" bad.out && ok || bad "--load_best_model_at_end with save/eval steps that do not line up: $(tail -2 bad.out)"
"$DSTRAIN" --deepspeed auto.json --data "$DATA" "${MODEL[@]}" --save_strategy epoch >bad.out 2>&1
[ $? -eq 3 ] && grep -q "counts steps" bad.out && ok || bad "--save_strategy epoch refused: $(tail -2 bad.out)"
"$DSTRAIN" --deepspeed auto.json --data "$DATA" "${MODEL[@]}" --lr_scheduler_type polynomial >bad.out 2>&1
[ $? -eq 3 ] && ok || bad "--lr_scheduler_type polynomial refused: $(tail -2 bad.out)"
"$DSTRAIN" --deepspeed auto.json --data "$DATA" "${MODEL[@]}" --max_steps 8 --bf16 --lr_scheduler_type linear \
    --learning_rate 1e-3 --logging_steps 2 --output_dir hfo --save_steps 8 --log_file sched.jsonl >bad.out 2>&1
if [ $? -eq 0 ] && [ -f hfo/global_step8/manifest.json ] && [ "$(grep -c '^step ' bad.out)" -ge 2 ] &&
    python3 -c 'import json,sys; l=[json.loads(x)["lr"] for x in open(sys.argv[1])]; sys.exit(0 if max(l) > 2 * l[-1] else 1)' sched.jsonl; then ok
else bad "--output_dir, --logging_steps and --lr_scheduler_type linear: $(tail -3 bad.out)"; fi
"$DSTRAIN" --deepspeed bad.json --data "$WORK/nonexistent.txt" "${MODEL[@]}" >bad.out 2>&1
[ $? -ne 0 ] && ok || bad "a missing data file is not an error"
"$DSTRAIN" --bogus >bad.out 2>&1
[ $? -eq 3 ] && ok || bad "an unknown option is not a usage error"
# (Into a file: under pipefail, grep -q closing the pipe early would SIGPIPE a long help.)
"$DSTRAIN" --help >help.out 2>&1 && grep -q -- "--deepspeed" help.out && ok || bad "dstrain --help does not document --deepspeed"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
