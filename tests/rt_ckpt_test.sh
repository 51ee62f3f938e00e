#!/usr/bin/env bash
# rt_ckpt_test.sh — dstrain checkpoints end to end over MPI: resume at the same
# world size and stage continues bit-identically; a ZeRO-3 checkpoint of 4 ranks
# resumes at 2 ranks / stage 2 and 3 ranks / stage 1 within tolerance; consolidated
# weights equal the running job's 16-bit weights; best tracking and rotation keep
# the right checkpoints and load-best-at-end restores the best one; a rank killed
# during async saves never leaves `latest` pointing at an incomplete checkpoint;
# a full disk during a save is reported and the previous checkpoint stays intact;
# --save_compress checkpoints hold the same state and resume exactly as plain ones.
# Usage: rt_ckpt_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
. "$(dirname "$0")/rt_lib.sh"
rt_init "$@"
DSCKPT="$BUILD/dsckpt"
MODEL=(--n_layer 2 --n_head 2 --n_embd 32 --seq_len 32 --eval_windows 4)

cfg() { # NAME STAGE MICRO (global batch 12 = micro x world)
    cat >"$1" <<EOF
{"train_batch_size": 12, "train_micro_batch_size_per_gpu": $3, "bf16": {"enabled": true},
 "optimizer": {"type": "AdamW", "params": {"lr": 0.003, "weight_decay": 0.01}},
 "gradient_clipping": 1.0, "zero_optimization": {"stage": $2}}
EOF
}
train() { # W CONFIG LOG [args...]
    local w=$1 c=$2 l=$3
    shift 3
    "$DSRUN" --num_procs "$w" "$DSTRAIN" --deepspeed "$c" --data "$DATA" "${MODEL[@]}" --log_file "$l" "$@" >"$l.out" 2>&1
}
json() { $PY -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(eval(sys.argv[2]))" "$@"; }

cfg z3w4.json 3 3
cfg z2w2.json 2 6
cfg z1w3.json 1 4

echo "== uninterrupted reference: 8 steps, W=4, ZeRO-3"
train 4 z3w4.json full.log --max_steps 8 || bad "reference run failed: $(tail -3 full.log.out)"

echo "== save at step 4, resume at the same world size and stage: bit-identical"
train 4 z3w4.json a.log --max_steps 4 --save_dir run --save_steps 2 || bad "first half failed: $(tail -3 a.log.out)"
[ "$(cat run/latest 2>/dev/null)" = global_step4 ] && ok || bad "latest is '$(cat run/latest 2>/dev/null)', expected global_step4"
"$DSCKPT" verify run >/dev/null && ok || bad "dsckpt verify of the training checkpoint failed"
# dstrain's rank files use 4 MiB hash chunks (a resume at another world size hashes
# whole chunks it touches), not the library's 16 MiB default.
$PY -c "import json,sys; m=json.load(open('run/global_step4/manifest.json')); sys.exit(any(f['chunk_size'] != 4194304 for f in m['files']))" &&
    ok || bad "dstrain's rank files do not have 4 MiB hash chunks"
cp -r run run_w2 && cp -r run run_w3 && cp -r run run_w3n
train 4 z3w4.json b.log --max_steps 8 --save_dir run --save_steps 2 --resume auto || bad "resume failed: $(tail -3 b.log.out)"
grep -q "resumed from run/global_step4 at step 4" b.log.out && ok || bad "resume did not say where it started: $(tail -2 b.log.out)"
[ "$(json full.log "[x['loss'] for x in r[4:]]")" = "$(json b.log "[x['loss'] for x in r]")" ] && ok ||
    bad "resumed losses differ from the uninterrupted run"
[ "$(json full.log "r[-1]['master_sha256']")" = "$(json b.log "r[-1]['master_sha256']")" ] && ok ||
    bad "resumed final master weights differ from the uninterrupted run"

echo "== async writer slower than a step: the update copies what it has not read; the checkpoint is still exact"
# Test hook: each save's writer starts only after the next optimizer update has
# copied what it had not read (signalled by the engine), so every save but the last
# (which the end of training waits for) takes the copy path, whatever the load.
DSTRAIN_TEST_WRITER_WAIT_UPDATE=1 train 4 z3w4.json slow.log --max_steps 4 --save_dir run_slow --save_steps 1 ||
    bad "run with a slow writer failed: $(tail -3 slow.log.out)"
[ "$(json slow.log "[x['step'] for x in r if x.get('save_copy_s', 0) > 0]")" = "[2, 3, 4]" ] && ok ||
    bad "steps that copied for the writer: $(json slow.log "[x['step'] for x in r if x.get('save_copy_s', 0) > 0]"), expected [2, 3, 4]"
[ "$(json full.log "[x['loss'] for x in r[:4]]")" = "$(json slow.log "[x['loss'] for x in r]")" ] && ok ||
    bad "a slow async writer changed the training losses"
"$DSCKPT" verify run_slow -t global_step3 >/dev/null && ok || bad "checkpoint written through the copy path does not verify"
train 4 z3w4.json slow_b.log --max_steps 8 --save_dir run_slow --resume global_step3 ||
    bad "resume from the copy-path checkpoint failed: $(tail -3 slow_b.log.out)"
[ "$(json full.log "r[-1]['master_sha256']")" = "$(json slow_b.log "r[-1]['master_sha256']")" ] && ok ||
    bad "resuming the checkpoint written while the update copied does not continue bit-identically"

echo "== resume the 4-rank ZeRO-3 checkpoint at 2 ranks / stage 2 and 3 ranks / stage 1"
train 2 z2w2.json c2.log --max_steps 8 --save_dir run_w2 --resume global_step4 || bad "W=2 resume failed: $(tail -3 c2.log.out)"
train 3 z1w3.json c3.log --max_steps 8 --save_dir run_w3 --resume auto || bad "W=3 resume failed: $(tail -3 c3.log.out)"
# This model's rank files are one chunk each, so all three ranks touch every chunk.
# As many as the working weights can carry (here one of the four) are read and
# hashed by one rank, which sends the others their pieces; each rank reads its own
# pieces of the rest. Test builds can turn the sharing off (every rank reads all
# it touches): the same training.
DSTRAIN_TEST_NO_SHARED_READS=1 train 3 z1w3.json c3n.log --max_steps 8 --save_dir run_w3n --resume auto ||
    bad "W=3 resume, every rank reading its own, failed: $(tail -3 c3n.log.out)"
[ "$(json c3.log "[x['loss'] for x in r] + [r[-1]['master_sha256']]")" = \
  "$(json c3n.log "[x['loss'] for x in r] + [r[-1]['master_sha256']]")" ] && ok ||
    bad "a W=3 resume with the chunks shared between the ranks differs from one without"
for l in c2.log c3.log; do
    $PY - full.log $l <<'EOF' && ok || bad "$l: losses after resuming at another world size are off"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])][4:]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) == 4, (len(a), len(b))
for x, y in zip(a, b):
    assert abs(x["loss"] - y["loss"]) <= 2e-3 * abs(x["loss"]), (x["loss"], y["loss"])
EOF
done

echo "== --save_compress: the same state in fewer bytes; resumed at 4 and 2 ranks exactly as the plain one"
train 4 z3w4.json z.log --max_steps 4 --save_dir runz --save_steps 2 --save_compress ||
    bad "compressed-save run failed: $(tail -3 z.log.out)"
[ "$(json a.log "[x['loss'] for x in r]")" = "$(json z.log "[x['loss'] for x in r]")" ] && ok ||
    bad "compressed saves changed the training losses"
"$DSCKPT" verify runz >/dev/null && ok || bad "dsckpt verify of the compressed training checkpoint failed"
$PY -c "import json,sys; m=json.load(open('runz/global_step4/manifest.json')); sys.exit(m['version'] < 2)" && ok ||
    bad "the compressed checkpoint's manifest is not a compressed one"
zb=$(du -cb runz/global_step4/rank_* | tail -1 | cut -f1); pb=$(du -cb run_w3/global_step4/rank_* | tail -1 | cut -f1)
[ "$zb" -lt "$pb" ] && ok || bad "compressed rank files ($zb bytes) are not smaller than plain ones ($pb)"
"$DSCKPT" consolidate runz -t global_step4 -o z.safetensors --dtype fp32 -q &&
    "$DSCKPT" consolidate run_w3 -t global_step4 -o p.safetensors --dtype fp32 -q && cmp -s z.safetensors p.safetensors &&
    ok || bad "the compressed and the plain checkpoint consolidate differently"
cp -r runz runz_w2
train 4 z3w4.json zb.log --max_steps 8 --save_dir runz --resume global_step4 || bad "compressed resume failed: $(tail -3 zb.log.out)"
[ "$(json full.log "r[-1]['master_sha256']")" = "$(json zb.log "r[-1]['master_sha256']")" ] && ok ||
    bad "resuming the compressed checkpoint does not continue bit-identically"
train 2 z2w2.json zc2.log --max_steps 8 --save_dir runz_w2 --resume global_step4 ||
    bad "compressed W=2 resume failed: $(tail -3 zc2.log.out)"
[ "$(json c2.log "[(x['loss'], x.get('master_sha256')) for x in r]")" = \
  "$(json zc2.log "[(x['loss'], x.get('master_sha256')) for x in r]")" ] && ok ||
    bad "resuming the compressed checkpoint at 2 ranks differs from resuming the plain one"

echo "== consolidated bf16 weights = the running job's 16-bit weights"
"$DSCKPT" consolidate run -o final.safetensors --dtype bf16 -q || bad "consolidate of the training checkpoint failed"
$PY - final.safetensors b.log <<'EOF' && ok || bad "consolidated weights differ from the running job's"
import hashlib, json, sys
raw = open(sys.argv[1], "rb").read()
n = int.from_bytes(raw[:8], "little")
hdr = json.loads(raw[8:8 + n])
names = [k for k in hdr if k != "__metadata__"]
# model order: embeddings, blocks in order (HF GPT-2 parameter order), final LN
order = ["transformer.wte.weight", "transformer.wpe.weight"]
blocks = sorted({int(k.split(".")[2]) for k in names if k.startswith("transformer.h.")})
per = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
       "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
       "mlp.c_proj.weight", "mlp.c_proj.bias"]
for b in blocks:
    order += [f"transformer.h.{b}.{p}" for p in per]
order += ["transformer.ln_f.weight", "transformer.ln_f.bias"]
assert sorted(order) == sorted(names), set(order) ^ set(names)
assert hdr["__metadata__"].get("alias.lm_head.weight") == "transformer.wte.weight"
h = hashlib.sha256()
for k in order:
    assert hdr[k]["dtype"] == "BF16"
    b, e = hdr[k]["data_offsets"]
    h.update(raw[8 + n + b:8 + n + e])
want = [json.loads(l) for l in open(sys.argv[2])][-1]["working_sha256"]
assert h.hexdigest() == want, (h.hexdigest(), want)
EOF

echo "== best tracking and rotation (planted best at step 4, save_total_limit 2), load best at end"
cfg z2w2b.json 2 6
DSTRAIN_TEST_EVAL="2:5.0,4:3.0,6:4.0,8:4.5" train 2 z2w2b.json best.log --max_steps 8 --save_dir rot --save_steps 2 \
    --eval_steps 2 --save_total_limit 2 --load_best_model_at_end || bad "best run failed: $(tail -3 best.log.out)"
kept=$(cd rot && ls -d global_step* 2>/dev/null | sort | tr '\n' ' ')
[ "$kept" = "global_step4 global_step6 global_step8 " ] && ok || bad "kept checkpoints: '$kept'"
$PY - rot/trainer_state.json <<'EOF' && ok || bad "trainer_state.json: $(head -c 400 rot/trainer_state.json)"
import json, sys
t = json.load(open(sys.argv[1]))
assert t["best_model_checkpoint"] == "global_step4" and t["best_metric"] == 3.0 and t["best_global_step"] == 4, t
assert t["global_step"] == 8
assert any(e.get("eval_loss") == 4.5 and e["step"] == 8 for e in t["log_history"])
EOF
grep -q "loaded the best checkpoint rot/global_step4" best.log.out && ok || bad "load-best-at-end did not load global_step4"
"$DSCKPT" consolidate rot -t global_step4 -o best4.safetensors --dtype bf16 -q &&
    cmp -s best4.safetensors rot/final/model.safetensors && ok || bad "final/model.safetensors is not the best checkpoint's weights"
(cd rot/final && sha256sum -c model.safetensors.sha256 >/dev/null 2>&1) && ok || bad "final/model.safetensors.sha256 does not match"
"$DSCKPT" inspect rot | grep -q "global_step4" && ok || bad "dsckpt inspect does not show the best checkpoint"

echo "== a rank killed during async saves: latest always names a complete checkpoint"
# The victims come from this test's own process tree: dsrun execs mpirun, which
# forks each rank itself, so the ranks are the children of the launcher's pid.
ranks_of() { # the child processes of $PARENT
    local f line rest
    for f in /proc/[0-9]*/stat; do
        line=$(cat "$f" 2>/dev/null) || continue
        rest=${line##*) }
        set -- $rest
        [ "${2:-}" = "$PARENT" ] && echo "${line%% *}"
    done
}
alive() { # PID: running (not gone, not a zombie)
    local line st
    line=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${line##*) }
    st=${st%% *}
    [ "$st" != Z ] && [ "$st" != X ]
}
wait_for() { # TENTHS COMMAND...: polls COMMAND every 0.1 s, at most TENTHS times
    local n=$1
    shift
    while [ "$n" -gt 0 ]; do
        "$@" && return 0
        n=$((n - 1))
        sleep 0.1
    done
    return 1
}
committed() { [ -s kill/latest ]; }
# The killed jobs' shared-memory segments (Open MPI's vader transport, /dev/shm by
# default) are left behind by the kill: they go in WORK, removed at exit.
mkdir -p "$WORK/shm"
launch_kill_job() {
    rm -rf kill
    OMPI_MCA_btl_vader_backing_directory="$WORK/shm" "$DSRUN" --num_procs 2 "$DSTRAIN" --deepspeed zkill.json --data "$DATA" --n_layer 2 --n_head 2 --n_embd 64 \
        --seq_len 32 --eval_windows 2 --max_steps 1000000 --save_dir kill --save_steps 1 >kill.out 2>&1 &
    runner=$!
}
cfg zkill.json 1 6
for trial in 1 2 3 4 5; do
    launch_kill_job
    # The first commit, then a random delay: the kill lands anywhere in a save.
    if ! wait_for 1800 committed; then bad "trial $trial: no checkpoint committed within 180 s"; kill -KILL "$runner"; wait "$runner"; continue; fi
    sleep "$(awk -v t="$trial" 'BEGIN{srand(t * 7919); printf "%.2f", 1.5 * rand()}')"
    PARENT=$runner
    victims=($(ranks_of))
    if [ "${#victims[@]}" -ne 2 ]; then bad "trial $trial: the launcher has ${#victims[@]} ranks, expected 2"; kill -KILL "$runner"; wait "$runner"; continue; fi
    kill -KILL "${victims[$((trial % 2))]}"
    wait_for 600 eval '! alive "$runner"' || { bad "trial $trial: the job did not end within 60 s of a rank's death"; kill -KILL "$runner"; }
    wait "$runner" 2>/dev/null
    tag=$(cat kill/latest)
    "$DSCKPT" verify kill >/dev/null 2>&1 && ok || bad "trial $trial: latest ($tag) does not verify"
    "$DSRUN" --num_procs 2 "$DSTRAIN" --deepspeed zkill.json --data "$DATA" --n_layer 2 --n_head 2 --n_embd 64 \
        --seq_len 32 --eval_windows 2 --max_steps $(( ${tag#global_step} + 1 )) --save_dir kill --resume auto >resume.out 2>&1 &&
        ok || bad "trial $trial: --resume auto after the kill failed: $(grep -v '^\[' resume.out | head -20)"
done

echo "== the launcher killed: its ranks end at once and commit nothing after"
for trial in 1 2; do
    launch_kill_job
    if ! wait_for 1800 committed; then bad "launcher trial $trial: no checkpoint committed within 180 s"; kill -KILL "$runner"; wait "$runner"; continue; fi
    PARENT=$runner
    ranks=($(ranks_of))
    [ "${#ranks[@]}" -eq 2 ] || bad "launcher trial $trial: the launcher has ${#ranks[@]} ranks, expected 2"
    kill -KILL "$runner"
    wait "$runner" 2>/dev/null
    # Open MPI alone lets them run on for a second or two (and commit); the kernel
    # kills a rank whose launcher died at once (PR_SET_PDEATHSIG).
    gone() { for r in "${ranks[@]}"; do alive "$r" && return 1; done; return 0; }
    wait_for 5 gone && ok || { bad "launcher trial $trial: ranks still running 0.5 s after the launcher was killed"; for r in "${ranks[@]}"; do kill -KILL "$r" 2>/dev/null; done; }
    tag=$(cat kill/latest)
    "$DSCKPT" verify kill >/dev/null 2>&1 && ok || bad "launcher trial $trial: latest ($tag) does not verify"
done

# What the killed launchers left lies in WORK (rt_lib.sh's TMPDIR, the vader
# directory above), not in the machine's /tmp: their Open MPI session directories.
compgen -G "$TMPDIR/ompi.*" >/dev/null && ok ||
    bad "no Open MPI session directory under the test's TMPDIR ($TMPDIR) after the launcher kills"

echo "== disk full during a save: reported, previous checkpoint intact"
cfg z2w2d.json 2 6
train 2 z2w2d.json d1.log --max_steps 2 --save_dir df --save_steps 2 --no_async_save || bad "disk-full setup failed"
size=$(stat -c %s df/global_step2/rank_00000.safetensors)
rm -rf df
train 2 z2w2d.json d2.log --max_steps 2 --save_dir df --save_steps 2 || bad "disk-full setup (2) failed"
DSCKPT_TEST_FAIL_WRITE_AFTER=$(( size / 2 )) train 2 z2w2d.json d3.log --max_steps 4 --save_dir df --save_steps 2 \
    --resume auto --no_async_save
rc=$?
[ "$rc" -ne 0 ] && ok || bad "a save that hit a full disk did not fail the run"
grep -qi "no space" d3.log.out && ok || bad "the disk-full error is not reported: $(tail -3 d3.log.out)"
[ "$(cat df/latest)" = global_step2 ] && ok || bad "latest moved to '$(cat df/latest)'"
"$DSCKPT" verify df >/dev/null && ok || bad "the previous checkpoint no longer verifies"
[ ! -f df/global_step4/manifest.json ] && ok || bad "a manifest was written for the failed save"

rt_finish
