#!/usr/bin/env bash
# rt_resume_test.sh — dstrain never resumes wrongly: a checkpoint of another model
# is refused naming both sides (with the manifest's "model" object, and for older
# checkpoints without one by their tensors); `--resume auto` in a save dir it
# cannot use stops instead of training from scratch (and `latest` stays where it
# was), and over a damaged newest checkpoint resumes the older one (the damaged one
# moved aside whole); a DeepSpeed-format checkpoint of the same model is resumed;
# hostile step counters in a checkpoint's state are refused; debris of killed saves
# (temporaries of dead processes) is removed by the next run, and nothing else is.
# Usage: rt_resume_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
. "$(dirname "$0")/rt_lib.sh"
rt_init "$@"
DSCKPT="$BUILD/dsckpt"
cat >z2.json <<'JSON'
{"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4, "bf16": {"enabled": true},
 "optimizer": {"type": "AdamW", "params": {"lr": 0.003}}, "zero_optimization": {"stage": 2}}
JSON
# train LOG N_LAYER [args...]: 2 ranks, ZeRO-2, a tiny model.
train() {
    local l=$1 nl=$2
    shift 2
    "$DSRUN" --num_procs 2 "$DSTRAIN" --deepspeed z2.json --data "$DATA" --n_layer "$nl" --n_head 2 --n_embd 32 \
        --seq_len 32 --eval_windows 2 "$@" >"$l" 2>&1
}
# reseal MANIFEST PYTHON-EXPR-ON-m: edits a manifest and writes it back with a valid self-digest.
reseal() {
    $PY - "$1" "$2" <<'PYEOF'
import hashlib, json, sys
p, expr = sys.argv[1], sys.argv[2]
m = json.loads(open(p).read())
del m["manifest_sha256"]
exec(expr)
body = json.dumps(m, separators=(",", ":"))
open(p, "w").write(body[:-1] + ',"manifest_sha256":"' + hashlib.sha256(body.encode()).hexdigest() + '"}')
PYEOF
}

echo "== a 4-layer checkpoint; resuming it with --n_layer 2 is refused naming both"
train a.out 4 --max_steps 2 --save_dir run4 --save_steps 2 || bad "4-layer run failed: $(tail -3 a.out)"
$PY -c "import json,sys; m=json.load(open('run4/global_step2/manifest.json'))['model']; assert m=={'architecture':'gpt2','n_layer':4,'n_head':2,'n_embd':32,'vocab_size':256,'n_positions':32,'tie_word_embeddings':True}, m" &&
    ok || bad "the manifest's model object is not what the run trained"
cp -r run4 run4_auto && cp -r run4 run4_old
train b.out 2 --max_steps 4 --save_dir run4 --save_steps 2 --resume global_step2
rc=$?
[ "$rc" = 3 ] && ok || bad "--resume TAG with another model: exit $rc, expected 3: $(tail -3 b.out)"
grep -q "checkpoint has n_layer=4, this run n_layer=2" b.out && ok || bad "the refusal does not name both: $(tail -3 b.out)"
train c.out 2 --max_steps 4 --save_dir run4_auto --save_steps 2 --resume auto
rc=$?
[ "$rc" = 3 ] && ok || bad "--resume auto with another model: exit $rc, expected 3: $(tail -3 c.out)"
grep -q "starting from scratch" c.out && bad "--resume auto started from scratch over another model's checkpoint"
[ "$(cat run4_auto/latest)" = global_step2 ] && [ ! -e run4_auto/global_step4 ] && ok ||
    bad "latest moved or a checkpoint was written after the refusal"
train c2.out 4 --max_steps 2 --n_embd 64 --save_dir run4 --resume auto
grep -q "checkpoint has n_embd=32, this run n_embd=64" c2.out && ok || bad "n_embd mismatch not named: $(tail -3 c2.out)"

echo "== an older checkpoint (no \"model\" object): the tensors decide"
reseal run4_old/global_step2/manifest.json 'del m["model"]'
"$DSCKPT" verify run4_old >/dev/null && ok || bad "the resealed old-style checkpoint does not verify"
train d.out 2 --max_steps 4 --save_dir run4_old --resume auto
rc=$?
[ "$rc" = 3 ] && ok || bad "old checkpoint with more layers: exit $rc, expected 3: $(tail -3 d.out)"
grep -q "checkpoint has tensor 'transformer.h.2" d.out && ok || bad "the extra layer is not named: $(tail -3 d.out)"
train d2.out 4 --max_steps 3 --seq_len 16 --save_dir run4_old --resume auto
grep -q "checkpoint has 'transformer.wpe.weight' with shape \[32, 32\], this run \[16, 32\]" d2.out && ok ||
    bad "a shape mismatch is not named: $(tail -3 d2.out)"
train d3.out 4 --max_steps 3 --save_dir run4_old --resume auto && ok || bad "the old checkpoint of the same model does not resume: $(tail -3 d3.out)"
grep -q "resumed from run4_old/global_step2 at step 2" d3.out && ok || bad "not resumed: $(tail -3 d3.out)"

echo "== --resume auto over a DeepSpeed-format checkpoint: resumed when the model matches, refused otherwise"
train e.out 2 --max_steps 2 --save_dir src2 --save_steps 2 || bad "2-layer run failed: $(tail -3 e.out)"
"$DSCKPT" reshard src2 --to 2 --format deepspeed -o dsrun -q || bad "reshard --format deepspeed failed"
[ ! -f dsrun/global_step2/manifest.json ] && ls dsrun/global_step2/*_model_states.pt >/dev/null 2>&1 && ok ||
    bad "the DeepSpeed-format save dir is not what this test needs"
cp -r dsrun dsrun_other
train f.out 2 --max_steps 4 --save_dir dsrun --save_steps 2 --resume auto && ok || bad "resume from DeepSpeed format failed: $(tail -3 f.out)"
grep -q "resumed from dsrun/global_step2 (DeepSpeed format) at step 2" f.out && ok || bad "did not resume the DeepSpeed checkpoint: $(tail -3 f.out)"
grep -q "starting from scratch" f.out && bad "started from scratch over a DeepSpeed checkpoint"
[ "$(cat dsrun/latest)" = global_step4 ] && "$DSCKPT" verify dsrun -t global_step4 >/dev/null && ok || bad "no good checkpoint after the resumed run"
train g.out 3 --max_steps 4 --save_dir dsrun_other --save_steps 2 --resume auto
rc=$?
[ "$rc" = 3 ] && ok || bad "DeepSpeed checkpoint of another model: exit $rc, expected 3: $(tail -3 g.out)"
[ "$(cat dsrun_other/latest)" = global_step2 ] && [ ! -e dsrun_other/global_step4 ] && ok || bad "latest moved over the DeepSpeed checkpoint"
# Without --resume, a save must never replace the DeepSpeed checkpoint's directory.
train g2.out 2 --max_steps 2 --save_dir dsrun_other --save_steps 2
rc=$?
[ "$rc" != 0 ] && ls dsrun_other/global_step2/*_model_states.pt >/dev/null 2>&1 && ok ||
    bad "a fresh run replaced the DeepSpeed checkpoint (exit $rc)"

echo "== --resume auto over a corrupt checkpoint: stops (exit 1), latest unchanged"
cp -r src2 corrupt
f=corrupt/global_step2/rank_00001.safetensors
printf 'X' | dd of="$f" bs=1 seek=$(( $(stat -c %s "$f") - 9 )) conv=notrunc status=none
train h.out 2 --max_steps 4 --save_dir corrupt --save_steps 2 --resume auto
rc=$?
[ "$rc" = 1 ] && ok || bad "--resume auto over a corrupt checkpoint: exit $rc, expected 1: $(tail -3 h.out)"
[ "$(cat corrupt/latest)" = global_step2 ] && [ ! -e corrupt/global_step4 ] && ok || bad "latest moved over a corrupt checkpoint"
echo "== --resume TAG over the same corrupt checkpoint: no verify pass first, the load's checked reads refuse it (exit 1 on every rank, naming the file), latest unchanged"
train h2.out 2 --max_steps 4 --save_dir corrupt --save_steps 2 --resume global_step2
rc=$?
[ "$rc" = 1 ] && grep -q "rank_00001.safetensors: chunk .*SHA-256 mismatch" h2.out && ok ||
    bad "--resume global_step2 over a corrupt checkpoint: exit $rc, expected 1 naming the chunk: $(tail -4 h2.out)"
[ "$(cat corrupt/latest)" = global_step2 ] && [ ! -e corrupt/global_step4 ] && ok || bad "latest moved over a corrupt checkpoint (--resume TAG)"
[ ! -e corrupt/global_step2.damaged ] && [ -d corrupt/global_step2 ] && ok || bad "a checkpoint was moved aside though nothing was resumed"
echo "== the same at 3 ranks, where each chunk is read and checked by one rank and its pieces sent to the others: every rank exits 1"
cat >z1w3.json <<'JSON'
{"train_batch_size": 6, "train_micro_batch_size_per_gpu": 2, "bf16": {"enabled": true},
 "optimizer": {"type": "AdamW", "params": {"lr": 0.003}}, "zero_optimization": {"stage": 1}}
JSON
"$DSRUN" --num_procs 3 "$DSTRAIN" --deepspeed z1w3.json --data "$DATA" --n_layer 2 --n_head 2 --n_embd 32 \
    --seq_len 32 --eval_windows 2 --max_steps 4 --save_dir corrupt --save_steps 2 --resume global_step2 >h3.out 2>&1
rc=$?
[ "$rc" = 1 ] && grep -q "rank_00001.safetensors: chunk .*SHA-256 mismatch" h3.out &&
    [ "$(grep -c "^dstrain (rank [0-2]).*\(SHA-256 mismatch\|found the checkpoint damaged\)" h3.out)" = 3 ] && ok ||
    bad "--resume global_step2 at 3 ranks over a corrupt checkpoint: exit $rc, expected 1 on every rank: $(grep -v '^\[' h3.out | tail -6)"
[ "$(cat corrupt/latest)" = global_step2 ] && [ ! -e corrupt/global_step4 ] && ok || bad "latest moved over a corrupt checkpoint (3 ranks)"

echo "== --resume auto over a damaged newest checkpoint: the load's checked reads find it (no verify pass), every rank"
echo "   passes over it, the older one resumes, the damaged one is moved aside whole and its step saved again"
train l.out 2 --max_steps 4 --save_dir dmg --save_steps 2 || bad "the run to damage failed: $(tail -3 l.out)"
cp dmg/global_step4/rank_00000.safetensors l0.orig && cp dmg/global_step4/rank_00001.safetensors l1.orig
f=dmg/global_step4/rank_00001.safetensors
printf 'X' | dd of="$f" bs=1 seek=$(( $(stat -c %s "$f") - 9 )) conv=notrunc status=none
cp "$f" l1.damaged
train l2.out 2 --max_steps 6 --save_dir dmg --save_steps 2 --resume auto
rc=$?
[ "$rc" = 0 ] && ok || bad "--resume auto over a damaged newest checkpoint: exit $rc: $(tail -4 l2.out)"
grep -q "rank_00001.safetensors: chunk .*SHA-256 mismatch" l2.out && grep -q "skipping dmg/global_step4: the load found damaged" l2.out &&
    ok || bad "the damage is not named: $(grep -v '^\[' l2.out | head -8)"
grep -q "resumed from dmg/global_step2 at step 2 (opened in" l2.out && ok || bad "not resumed from global_step2: $(tail -3 l2.out)"
grep -q "moved the damaged dmg/global_step4 aside to dmg/global_step4.damaged" l2.out &&
    cmp -s dmg/global_step4.damaged/rank_00001.safetensors l1.damaged && ok || bad "the damaged checkpoint was not kept aside as it was"
cmp -s dmg/global_step4/rank_00000.safetensors l0.orig && cmp -s dmg/global_step4/rank_00001.safetensors l1.orig && ok ||
    bad "step 4 saved again differs from the first run's"
[ "$(cat dmg/latest)" = global_step6 ] && "$DSCKPT" verify dmg -t global_step6 >/dev/null && ok ||
    bad "no good checkpoint after the run: latest $(cat dmg/latest)"
"$DSCKPT" verify dmg >v.out 2>&1
rc=$?
[ "$rc" = 1 ] && grep -q "tag global_step4.damaged: corrupt" v.out && grep -q "tag global_step4: ok" v.out && ok ||
    bad "verify of the save dir does not tell the kept damaged copy from the good ones (exit $rc): $(cat v.out)"

mkdir empty
train i.out 2 --max_steps 2 --save_dir empty --save_steps 2 --resume auto && grep -q "starting from scratch" i.out && ok ||
    bad "an empty save dir does not start from scratch: $(tail -3 i.out)"
# The weights drawn after an empty --resume auto (the engine starts without them
# when resuming) are the seed's, exactly as without --resume.
train j.out 2 --max_steps 2 --save_dir fresh --save_steps 2 && ok || bad "a plain run failed: $(tail -3 j.out)"
for f in rank_00000.safetensors rank_00001.safetensors; do
    cmp -s empty/global_step2/$f fresh/global_step2/$f && ok || bad "$f after an empty --resume auto differs from a plain run's"
done

echo "== hostile step counters in the state are refused, not cast"
for expr in 'm["state"]["engine"]["applied_steps"]=1e300' 'm["state"]["engine"]["global_steps"]=-1' \
    'm["state"]["engine"]["applied_steps"]=2.5' 'm["state"]["data"]["next_batch"]=1e19' 'm["state"]["data"]["next_batch"]="3"'; do
    rm -rf hs && cp -r src2 hs
    reseal hs/global_step2/manifest.json "$expr"
    train j.out 2 --max_steps 4 --save_dir hs --resume global_step2
    rc=$?
    [ "$rc" = 1 ] && grep -qE "must be (an integer|integers)" j.out && ok || bad "state edit $expr: exit $rc: $(tail -2 j.out)"
done

echo "== debris of killed saves: temporaries of dead processes go, everything else stays"
rm -rf deb && cp -r src2 deb
sh -c 'exit 0' &
dead=$!
wait "$dead"
live=$$
: >"deb/.latest.tmp-$dead-0"
: >"deb/.trainer_state.json.tmp-$dead-3"
: >"deb/.latest.tmp-$live-0"            # a live writer's: kept
: >"deb/.latest.tmp-$dead-0x"           # not the exact name: kept
: >"deb/.notes.tmp-$dead-0"             # not a file dstrain writes at the root: kept
mkdir deb/global_step1 && : >"deb/global_step1/.rank_00000.safetensors.tmp-$dead-1" && : >deb/global_step1/rank_00001.safetensors
: >"deb/global_step2/.rank_00000.safetensors.tmp-$dead-1" # verify calls it a stray file
train k.out 2 --max_steps 3 --save_dir deb --save_steps 3 --resume auto || bad "run in a dir with debris failed: $(tail -3 k.out)"
for f in ".latest.tmp-$dead-0" ".trainer_state.json.tmp-$dead-3" "global_step1/.rank_00000.safetensors.tmp-$dead-1" \
    "global_step2/.rank_00000.safetensors.tmp-$dead-1"; do
    [ ! -e "deb/$f" ] && ok || bad "stale $f was not removed"
done
for f in ".latest.tmp-$live-0" ".latest.tmp-$dead-0x" ".notes.tmp-$dead-0" global_step1/rank_00001.safetensors; do
    [ -e "deb/$f" ] && ok || bad "$f was removed"
done
grep -q "removed 4 temporary file(s)" k.out && ok || bad "the cleanup is not reported: $(grep -i tempor k.out)"
[ "$(cat deb/latest)" = global_step3 ] && ok || bad "the run after the cleanup did not save"

rt_finish
