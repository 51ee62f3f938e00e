#!/usr/bin/env bash
# rt_train_test.sh — dstrain end to end over MPI (through dsrun): ZeRO stages 0-3
# give bit-identical training at the same world size, the same global batch at
# W = 1 and 4 gives the same losses within tolerance, the loss falls, fp16
# overflow steps are skipped with the scale lowered, per-rank memory follows the
# ZeRO formulas, and bad configs are refused with the key named.
# Usage: rt_train_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
. "$(dirname "$0")/rt_lib.sh"
rt_init "$@"
MODEL=(--n_layer 2 --n_head 2 --n_embd 32 --seq_len 32 --eval_windows 4)
DSCKPT="$BUILD/dsckpt"

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
train 2 f16.json f16.log 16 || bad "fp16 run failed: $(tail -3 f16.log.out)"
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
    # stage 0 in the model's layout; stages 1-2 by group (each group's flat, padded)
    assert r["params_bytes"] == (2 * psi if stage == 0 else r["params_bytes"])
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

echo "== accepted-but-ignored keys and flags without effect are named (warning or error)"
warn_case() { # CONFIG EXPECTED-RC EXPECTED-LINE DESCRIPTION [flags...]
    printf '%s' "$1" >w.json
    local want=$2 line=$3 what=$4
    shift 4
    "$DSTRAIN" --deepspeed w.json --data "$DATA" "${MODEL[@]}" --max_steps 1 "$@" >w.out 2>&1
    rc=$?
    if [ "$rc" -ne "$want" ]; then bad "$what: exit $rc, expected $want ($(tail -2 w.out))"
    elif ! grep -q -- "$line" w.out; then bad "$what: no line '$line': $(head -c 600 w.out)"
    else ok; fi
}
B='"train_micro_batch_size_per_gpu": 2'
for k in tensorboard wandb csv_monitor comms_logger flops_profiler data_types; do
    warn_case "{$B, \"$k\": {\"enabled\": true}}" 0 "warning: w.json: $k: not used by dstrain" "monitoring key $k"
    [ "$(grep -c "$k" w.out)" -eq 1 ] && ok || bad "monitoring key $k: not exactly one line: $(cat w.out)"
done
warn_case "{$B, \"my_custom_key\": 1}" 0 "warning: w.json: my_custom_key: unknown key, ignored" "unknown top-level key"
warn_case "{$B, \"gradient_clippin\": 1}" 2 'gradient_clippin: unknown key; did you mean "gradient_clipping"' "top-level typo"
warn_case "{$B, \"zero_optimization\": {\"stage\": 1, \"my_key\": 1}}" 2 "zero_optimization.my_key: unknown key" "unknown key in a section"
warn_case "{$B, \"zero_optimization\": {\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\"}}}" 0 \
    "warning: w.json: zero_optimization.offload_optimizer: no effect: this run trains on the CPU" "offload_optimizer on a CPU run"
warn_case "{$B, \"zero_optimization\": {\"stage\": 3, \"offload_param\": {\"device\": \"cpu\"}}}" 0 \
    "warning: w.json: zero_optimization.offload_param: no effect: this run trains on the CPU" "offload_param on a CPU run"
warn_case "{$B, \"zero_optimization\": {\"stage\": 2, \"offload_param\": {\"device\": \"cpu\"}}}" 0 \
    "zero_optimization.offload_param: no effect below ZeRO stage 3" "offload_param below stage 3"
warn_case "{$B}" 0 "scheduler: --warmup_steps 5 has no effect" "--warmup_steps without a scheduler" --warmup_steps 5
warn_case "{$B, \"scheduler\": {\"type\": \"WarmupLR\", \"params\": {\"warmup_max_lr\": 0.001}}}" 0 \
    "scheduler.params.warmup_num_steps: absent, so DeepSpeed's default (1000) is used and --warmup_steps 5 has no effect" \
    "--warmup_steps with a scheduler that does not read it" --warmup_steps 5
warn_case "{$B, \"bf16\": {\"enabled\": true}}" 2 "bf16.enabled: true in the config but --fp16 is given" "--fp16 with a bf16 config" --fp16
warn_case "{$B, \"fp16\": {\"enabled\": true}}" 2 "fp16.enabled: true in the config but --bf16 is given" "--bf16 with an fp16 config" --bf16
warn_case "{$B}" 0 'warning: w.json: bf16: --bf16 is given but the config has no "bf16" section: training in fp32' "--bf16 without a bf16 section" --bf16
warn_case "{$B, \"zero_optimization\": {\"stage\": 3, \"stage3_gather_16bit_weights_on_model_save\": true}}" 0 \
    "stage3_gather_16bit_weights_on_model_save: no effect without --save_dir" "gather 16-bit without a save dir"
grep -q "warning" auto.out && bad "a clean config gave a warning: $(grep warning auto.out)" || ok

echo "== stage3_gather_16bit_weights_on_model_save: D/model.safetensors at every save, the 16-bit weights of the newest checkpoint"
printf '%s' "{$B, \"bf16\": {\"enabled\": true}, \"zero_optimization\": {\"stage\": 3, \"stage3_gather_16bit_weights_on_model_save\": true}}" >g16.json
"$DSRUN" --num_procs 2 "$DSTRAIN" --deepspeed g16.json --data "$DATA" "${MODEL[@]}" --max_steps 4 --save_dir g16 --save_steps 2 \
    --save_model g16_final.safetensors >g16.out 2>&1
rc=$?
if [ $rc -eq 0 ] && [ "$(grep -c 'wrote g16/model.safetensors (16-bit, from global_step' g16.out)" -eq 2 ] &&
    cmp -s g16/model.safetensors g16_final.safetensors && (cd g16 && sha256sum -c --status model.safetensors.sha256) &&
    "$BUILD/dsckpt" verify g16 >/dev/null 2>&1; then ok
else bad "16-bit model at save: exit $rc: $(tail -4 g16.out)"; fi
# The file beside the checkpoints does not disturb --resume auto.
"$DSTRAIN" --deepspeed g16.json --data "$DATA" "${MODEL[@]}" --max_steps 6 --save_dir g16 --save_steps 2 --resume auto >g16r.out 2>&1
[ $? -eq 0 ] && grep -q "resumed from g16/global_step4" g16r.out && grep -q "from global_step6" g16r.out && ok ||
    bad "resume with model.safetensors in the save dir: $(tail -3 g16r.out)"

echo "== --num_train_epochs: max_steps = ceil(epochs x steps per epoch); --max_steps wins"
head -c 3000 "$DATA" >small.txt
# train part 3000 - 300 = 2700 bytes: 81 windows of 33; batch 4 -> 20 steps per epoch.
"$DSTRAIN" --deepspeed auto.json --data small.txt "${MODEL[@]}" --per_device_train_batch_size 4 --num_train_epochs 0.26 \
    --logging_steps 1 --log_file ep.jsonl >ep.out 2>&1
[ $? -eq 0 ] && [ "$(wc -l <ep.jsonl)" -eq 6 ] && grep -q "^step 6/6: .*| epoch 0.30 |" ep.out && ok ||
    bad "--num_train_epochs 0.26 (20 steps/epoch) is not 6 steps: $(wc -l <ep.jsonl) $(tail -2 ep.out)"
"$DSTRAIN" --deepspeed auto.json --data small.txt "${MODEL[@]}" --per_device_train_batch_size 4 --num_train_epochs 2 \
    --max_steps 3 --log_file ep2.jsonl >ep2.out 2>&1
[ $? -eq 0 ] && [ "$(wc -l <ep2.jsonl)" -eq 3 ] && ok || bad "--max_steps does not win over --num_train_epochs: $(tail -2 ep2.out)"
# epoch in the JSON lines and in trainer_state.json (the Trainer's fields: epoch, num_train_epochs).
"$DSTRAIN" --deepspeed auto.json --data small.txt "${MODEL[@]}" --per_device_train_batch_size 4 --num_train_epochs 0.5 \
    --output_dir ep4 --save_steps 5 --log_file ep4.jsonl >ep4.out 2>&1
$PY - ep4.jsonl ep4/trainer_state.json <<'EOF' && ok || bad "epoch fields (20 steps per epoch): $(tail -2 ep4.out)"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
st = json.load(open(sys.argv[2]))
assert len(rows) == 10 and [r["epoch"] for r in rows] == [s / 20 for s in range(1, 11)], [r.get("epoch") for r in rows]
assert st["epoch"] == 0.5 and st["num_train_epochs"] == 1 and st["max_steps"] == 10, st
assert [e["epoch"] for e in st["log_history"] if "loss" in e] == [s / 20 for s in range(1, 11)], st["log_history"]
EOF
printf '%s' '{"train_micro_batch_size_per_gpu": 4, "scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": "auto", "warmup_num_steps": 0, "warmup_max_lr": 0.001}}}' >ep.json
"$DSTRAIN" --deepspeed ep.json --data small.txt "${MODEL[@]}" --num_train_epochs 0.1 --log_file ep3.jsonl >ep3.out 2>&1
[ $? -eq 0 ] && [ "$(wc -l <ep3.jsonl)" -eq 2 ] && tail -1 ep3.jsonl | grep -q '"lr": 0,' && ok ||
    bad "--num_train_epochs does not fill total_num_steps \"auto\": $(tail -2 ep3.out) $(head -c 400 ep3.jsonl)"
for v in 0 -1 x; do
    "$DSTRAIN" --deepspeed auto.json --data small.txt --num_train_epochs "$v" >bad.out 2>&1
    [ $? -eq 3 ] && grep -q "num_train_epochs must be" bad.out && ok || bad "--num_train_epochs $v not refused: $(tail -2 bad.out)"
done

echo "== logging: window mean loss, samples/s, tokens/s, epoch, ETA, save lines, summary; --max_steps below the resumed step"
"$DSTRAIN" --deepspeed auto.json --data "$DATA" "${MODEL[@]}" --max_steps 6 --logging_steps 3 --output_dir lg --save_steps 3 \
    --eval_steps 3 --load_best_model_at_end --log_file lg.jsonl >lg.out 2>&1
rc=$?
$PY - lg.jsonl lg.out <<'EOF' && [ $rc -eq 0 ] && ok || bad "logging lines (exit $rc): $(cat lg.out)"
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
err = open(sys.argv[2]).read()
lines = [l for l in err.splitlines() if l.startswith("step ")]
assert len(lines) == 2, lines
pat = re.compile(r"^step (\d+)/6: loss ([0-9.]+) \(mean of 3\) lr \S+ grad_norm \S+ eval_loss \S+ \| epoch [0-9.]+ \| "
                 r"[0-9.]+ samples/s [0-9]+ tok/s \| \S+ elapsed, ETA \S+$")
for l, first in zip(lines, (0, 3)):
    m = pat.match(l)
    assert m, l
    want = sum(r["loss"] for r in rows[first:first + 3]) / 3
    assert int(m.group(1)) == first + 3 and abs(float(m.group(2)) - want) < 1e-4, (l, want)
assert re.search(r"^dstrain: saved global_step3 in [0-9.]+ s, async$", err, re.M), err
assert re.search(r"^dstrain: saved global_step6 in [0-9.]+ s, async$", err, re.M), err
assert re.search(r"^dstrain: done: 6 step\(s\) \(6 in this run, [0-9.]+ epoch\(s\)\) in ", err, re.M), err
assert re.search(r"^dstrain: best checkpoint: lg/global_step[36] \(eval_loss\)$", err, re.M), err
assert "dstrain: model (16-bit safetensors): lg/final/model.safetensors" in err, err
EOF
"$DSTRAIN" --deepspeed auto.json --data "$DATA" "${MODEL[@]}" --max_steps 6 --no_async_save --output_dir lgs --save_steps 6 >lgs.out 2>&1
[ $? -eq 0 ] && grep -q "^dstrain: saved global_step6 in [0-9.]* s, sync, [0-9]* threads\{0,1\} a rank$" lgs.out && ok || bad "sync save line: $(tail -3 lgs.out)"
echo "== a synchronous save writes its rank file on the training threads: the same bytes as an async save on one"
BIG=(--n_layer 4 --n_head 4 --n_embd 192 --seq_len 32 --eval_windows 1) # a rank file of several 4 MiB chunks
for z in plain zstd; do
    zf=()
    [ $z = zstd ] && zf=(--save_compress=1)
    for mode in async sync; do
        sf=()
        [ $mode = sync ] && sf=(--no_async_save)
        OMP_NUM_THREADS=3 "$DSTRAIN" --deepspeed auto.json --data "$DATA" "${BIG[@]}" --max_steps 2 --save_steps 2 \
            --save_dir "st_${z}_$mode" "${zf[@]}" "${sf[@]}" >"st_${z}_$mode.out" 2>&1 ||
            bad "$z $mode save run: $(tail -3 "st_${z}_$mode.out")"
    done
    grep -q "^dstrain: saved global_step2 in [0-9.]* s, sync, 3 threads a rank$" "st_${z}_sync.out" && ok ||
        bad "$z: the sync save line: $(grep saved "st_${z}_sync.out")"
    f=global_step2/rank_00000.safetensors
    n=$($PY -c "import json,sys; print(len(json.load(open(sys.argv[1]))['files'][0]['chunks']))" "st_${z}_sync/global_step2/manifest.json")
    [ "$n" -ge 4 ] && ok || bad "$z: the rank file has $n chunks, too few to share between threads"
    cmp -s "st_${z}_async/$f" "st_${z}_sync/$f" && ok || bad "$z: the sync save on 3 threads wrote other bytes than the async save"
    "$DSCKPT" verify "st_${z}_sync" >/dev/null && ok || bad "$z: the sync save on 3 threads does not verify"
done
"$DSTRAIN" --deepspeed auto.json --data "$DATA" "${MODEL[@]}" --max_steps 4 --output_dir lg --resume auto --log_file lgr.jsonl >lgr.out 2>&1
[ $? -eq 0 ] && grep -q "^dstrain: --max_steps 4 is not above the resumed step 6: nothing to train$" lgr.out &&
    [ ! -s lgr.jsonl ] && [ ! -d lg/global_step4 ] && ok || bad "--max_steps below the resumed step: $(tail -3 lgr.out)"
"$DSTRAIN" --help >help.out 2>&1 && grep -q -- "--num_train_epochs" help.out && grep -q "averaged" help.out &&
    grep -q "stage3_gather_16bit_weights_on_model_save" help.out && ok || bad "dstrain --help lacks the new flags/behaviour"

"$DSTRAIN" --deepspeed bad.json --data "$WORK/nonexistent.txt" "${MODEL[@]}" >bad.out 2>&1
[ $? -ne 0 ] && ok || bad "a missing data file is not an error"
"$DSTRAIN" --bogus >bad.out 2>&1
[ $? -eq 3 ] && ok || bad "an unknown option is not a usage error"
# (Into a file: under pipefail, grep -q closing the pipe early would SIGPIPE a long help.)
"$DSTRAIN" --help >help.out 2>&1 && grep -q -- "--deepspeed" help.out && ok || bad "dstrain --help does not document --deepspeed"
# --comm: nccl only with --device cuda, checked before anything starts; --help tells it.
grep -q -- "--comm mpi|nccl" help.out && ok || bad "dstrain --help does not document --comm"
"$DSTRAIN" --deepspeed none.json --data none --comm nccl >comm.out 2>&1
rc=$?
[ $rc -eq 3 ] && grep -q -- "--comm nccl needs --device cuda" comm.out && ok || bad "--comm nccl on the CPU: rc $rc, $(head -2 comm.out)"
"$DSTRAIN" --deepspeed none.json --data none --comm gloo >comm.out 2>&1
rc=$?
[ $rc -eq 3 ] && grep -q -- "--comm must be mpi or nccl (got 'gloo')" comm.out && ok || bad "--comm gloo: rc $rc, $(head -2 comm.out)"

rt_finish
