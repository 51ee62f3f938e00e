#!/usr/bin/env bash
# cli_trust_test.sh — hostile files never escape, execute or hang (issue findings):
#  1. names read from files are data: a resealed manifest whose tag or file name is
#     a path, a `latest` naming a path or holding a NUL, an escaping
#     best_model_checkpoint: exit 1 naming the file and the name, and nothing is
#     created anywhere (the scratch tree is listed before and after);
#  2. duplicate keys in manifest.json, trainer_state.json, config.json: exit 1
#     naming the key; in a ds_config: dstrain refuses it (its bad-input exit 2);
#  3. pickled callables outside the allow-list in a DeepSpeed client state: verify
#     exits 5 naming them, reshard --format deepspeed exits 5 and writes nothing,
#     --drop-unknown-objects drops them with a warning listing them;
#  4. FIFOs, devices and directories where a file is expected: exit 2 "not a
#     regular file" within `timeout 10` (a hang fails the test instead of it);
#     symlinks are followed and judged by content;
#  5. an empty .pt, or one that is neither a zip nor a torch pickle, is called what
#     it is (exit 1), never "legacy torch format".
#
# Usage: tests/cli_trust_test.sh PATH/TO/dsckpt
set -u

. "$(dirname "$0")/cli_lib.sh"
cli_init trust "$@"
# Every command runs inside $T/w/a/b/c/d, so an escaping name ('../../../../x')
# has room to land inside $T (and is seen there) rather than somewhere else on
# the machine. The test's own files (run's output among them) are in $T/io, left
# out of the listings. Every run has a 10 s guard (124 = it hung).
IO="$T/io"
RUN_TIMEOUT=10
mkdir -p "$T/w/a/b/c/d" "$T/io" && cd "$T/w/a/b/c/d" || exit 1

# dstrain (a singleton MPI job) with a guard; Open MPI's own allocations are live
# at exit, so LeakSanitizer is off for it (as for the rt_* tests).
DSTRAIN() { ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" timeout 60 "$BIN_DIR/dstrain" "$@"; }

# snapshot: the listing of the whole scratch tree (names, types, sizes).
snapshot() { (cd "$T" && find . -path ./io -prune -o -printf '%p %y %s\n' | LC_ALL=C sort); }
# same_tree DESC: nothing was created, removed or changed in size since `mark`.
mark() { snapshot >"$T/io/before"; }
same_tree() {
    snapshot >"$T/io/after"
    if cmp -s "$T/io/before" "$T/io/after"; then ok; else
        bad "$1: the scratch tree changed"
        diff "$T/io/before" "$T/io/after" | head -8 | sed 's/^/    /'
    fi
}
# reseal MANIFEST PYTHON: edits a manifest (json.loads keeps the last of repeated
# keys; use TEXT edits for those) and writes it back with a valid self-digest.
reseal() {
    "$PY" - "$1" "$2" <<'PYEOF'
import hashlib, json, sys
p, expr = sys.argv[1], sys.argv[2]
m = json.loads(open(p).read())
del m["manifest_sha256"]
exec(expr)
body = json.dumps(m, separators=(",", ":"))
open(p, "w").write(body[:-1] + ',"manifest_sha256":"' + hashlib.sha256(body.encode()).hexdigest() + '"}')
PYEOF
}
# reseal_text MANIFEST OLD NEW: replaces text in the body and reseals.
reseal_text() {
    "$PY" - "$1" "$2" "$3" <<'PYEOF'
import hashlib, sys
p, old, new = sys.argv[1:4]
t = open(p).read()
body = t[: t.rindex(',"manifest_sha256"')] + "}"
assert old in body, old
body = body.replace(old, new, 1)
open(p, "w").write(body[:-1] + ',"manifest_sha256":"' + hashlib.sha256(body.encode()).hexdigest() + '"}')
PYEOF
}

run synth -o ck --params 20000 --world-size 2 --stage 2 -q
expect_rc 0 "synth"
TAG=$(cat ck/latest)

# ==== 1. names read from files ====
# A tag that is a path, resealed (the self-digest is plain SHA-256).
for evil in '../../../../tmp/x' '../../esc' '..' 'a/b' 'x\u0001y'; do
    rm -rf evil && cp -r ck evil
    "$PY" - "evil/$TAG/manifest.json" "$evil" <<'PYEOF'
import hashlib, json, sys
p, tag = sys.argv[1], json.loads('"' + sys.argv[2] + '"')
m = json.loads(open(p).read()); del m["manifest_sha256"]; m["tag"] = tag
body = json.dumps(m, separators=(",", ":"))
open(p, "w").write(body[:-1] + ',"manifest_sha256":"' + hashlib.sha256(body.encode()).hexdigest() + '"}')
PYEOF
    mark
    for cmd in "reshard evil --to 1 --format deepspeed -o o1 -q" "reshard evil --to 1 -o o2 -q" \
        "reshard evil --format universal -o o3 -q" "consolidate evil -o o4.safetensors -q" \
        "consolidate evil -o o5 -q" "inspect evil" "verify evil" "verify evil -t $TAG"; do
        # shellcheck disable=SC2086
        run $cmd
        expect_rc 1 "$cmd (tag '$evil')"
        expect_in all "manifest.json: tag '.*' is not a safe name" "$cmd names the manifest and the tag"
    done
    same_tree "tag '$evil': nothing created"
done

# A file name that is a path.
rm -rf evil && cp -r ck evil
reseal "evil/$TAG/manifest.json" 'm["files"][0]["name"] = "../../../x.safetensors"'
mark
run consolidate evil -o o.safetensors -q
expect_rc 1 "consolidate, a manifest file name that is a path"
expect_in err "manifest.json: file name '../../../x.safetensors' is not a safe name" "the file name is named"
run verify evil
expect_rc 1 "verify, a manifest file name that is a path"
same_tree "a file name that is a path: nothing created"

# `latest`: a path, a NUL inside (refused, never truncated), white space stripped.
rm -rf evil && cp -r ck evil
printf '../../../ck/%s\n' "$TAG" >evil/latest
mark
for cmd in "consolidate evil -o o.safetensors -q" "reshard evil --to 1 -o o -q" "inspect evil"; do
    # shellcheck disable=SC2086
    run $cmd
    expect_rc 1 "$cmd: latest names a path"
    expect_in err "latest: the tag '.*' is not a safe name" "$cmd names latest and the tag"
done
run verify evil
expect_rc 1 "verify: latest names a path"
expect_in out "latest: the tag '.*' is not a safe name" "verify names latest and the tag"
same_tree "latest names a path: nothing created"
printf '%s\0../../x' "$TAG" >evil/latest
mark
for cmd in "consolidate evil -o o.safetensors -q" "reshard evil --to 1 --format deepspeed -o o -q" "inspect evil"; do
    # shellcheck disable=SC2086
    run $cmd
    expect_rc 1 "$cmd: a NUL inside latest"
    expect_in err "latest: a NUL byte at offset ${#TAG}" "$cmd says where the NUL is"
done
same_tree "a NUL inside latest: nothing created"
printf ' %s \n\n' "$TAG" >evil/latest
run inspect evil
expect_rc 0 "latest with surrounding white space"

# ==== 2. duplicate JSON keys ====
rm -rf evil && cp -r ck evil
reseal_text "evil/$TAG/manifest.json" '"step":' '"step":1,"step":'
run verify evil
expect_rc 1 "verify, a manifest with a repeated key"
expect_in out 'duplicate key "step"' "verify names the repeated key"
run consolidate evil -o dup.safetensors -q
expect_rc 1 "consolidate, a manifest with a repeated key"
expect_in err 'manifest.json: duplicate key "step" in one object' "consolidate names the file and key"
[ ! -e dup.safetensors ] && ok || bad "consolidate of a manifest with a repeated key wrote its output"

# A DeepSpeed tag directory through a `latest` naming a path.
DSFIX="$SRC_DIR/fixtures/deepspeed/z1_ws2_bf16/ckpt"
cp -r "$DSFIX" dsck
printf '../../../../tmp/x' >dsck/latest
mark
run reshard dsck --to 1 --format deepspeed -o o -q
expect_rc 1 "reshard of a DeepSpeed root whose latest names a path"
expect_in err "dsck/latest: the tag '../../../../tmp/x' is not a safe name" "the DeepSpeed latest is named"
same_tree "DeepSpeed latest names a path: nothing created"
printf 'global_step3' >dsck/latest

# Hugging Face best_model_checkpoint whose last component is not a name.
HF="$SRC_DIR/fixtures/deepspeed-0.19/hf_trainer_z3/output"
cp -r "$HF" hf
"$PY" - hf/checkpoint-12/trainer_state.json <<'PYEOF'
import json, sys
p = sys.argv[1]; j = json.load(open(p)); j["best_model_checkpoint"] = "output/checkpoint-4/.."
open(p, "w").write(json.dumps(j, indent=2))
PYEOF
mark
run consolidate hf -t best -o best.safetensors -q
expect_rc 1 "consolidate -t best, best_model_checkpoint ending in '..'"
expect_in err "trainer_state.json: the last component of best_model_checkpoint '..' is not a safe name" "best_model_checkpoint named"
same_tree "an escaping best_model_checkpoint: nothing created"

# ==== 2. duplicate JSON keys (continued) ====
rm -rf hf && cp -r "$HF" hf
sed -i '0,/"best_metric"/s//"best_model_checkpoint": "output\/checkpoint-12",\n  "best_metric"/' hf/checkpoint-12/trainer_state.json
run consolidate hf -t best -o best.safetensors -q
expect_rc 1 "trainer_state.json with a repeated key"
expect_in err 'trainer_state.json: duplicate key "best_model_checkpoint"' "the repeated trainer_state key is named"
rm -rf hf && cp -r "$HF" hf
sed -i '0,/{/s//{\n  "activation_function": "relu",/' hf/checkpoint-12/config.json
run consolidate hf -o hfout -q
expect_rc 1 "config.json with a repeated key"
expect_in err 'config.json: duplicate key "activation_function"' "the repeated config.json key is named"
[ ! -e hfout ] && ok || bad "consolidate with a bad config.json wrote its output"
rm -rf hf
# A ds_config with a repeated key: dstrain refuses it (its exit for bad input, 2).
if [ -x "$BIN_DIR/dstrain" ]; then
    printf '{"train_batch_size": 2, "train_batch_size": 4, "optimizer": {"type": "AdamW", "params": {"lr": 0.001}}}' >dup_ds.json
    DSTRAIN --deepspeed dup_ds.json --data "$SRC_DIR/fixtures/corpus/licenses.txt" \
        --n_embd 16 --seq_len 16 --max_steps 1 >"$T/io/out" 2>"$T/io/err" </dev/null
    RC=$?
    expect_rc 2 "dstrain, a ds_config with a repeated key"
    expect_in err 'dup_ds.json: .*duplicate key' "dstrain names the repeated key"
    printf '{"train_batch_size": 2, "optimizer": {"type": "AdamW", "params": {"lr": 0.001, "lr": 0.5}}}' >dup_ds.json
    DSTRAIN --deepspeed dup_ds.json --data "$SRC_DIR/fixtures/corpus/licenses.txt" \
        --n_embd 16 --seq_len 16 --max_steps 1 >"$T/io/out" 2>"$T/io/err" </dev/null
    RC=$?
    expect_rc 2 "dstrain, a ds_config with a repeated nested key"
    expect_in err 'dup_ds.json: duplicate key "lr"' "dstrain names the repeated nested key"
    printf '{"train_batch_size": 4294967296, "optimizer": {"type": "AdamW", "params": {"lr": 0.001}}}' >big_ds.json
    DSTRAIN --deepspeed big_ds.json --data "$SRC_DIR/fixtures/corpus/licenses.txt" \
        --n_embd 16 --seq_len 16 --max_steps 1 >"$T/io/out" 2>"$T/io/err" </dev/null
    RC=$?
    expect_rc 2 "dstrain, train_batch_size 2^32"
    expect_in err 'train_batch_size.*4294967296' "train_batch_size 2^32 refused, not truncated"
fi

# ==== 3. pickled callables outside the allow-list ====
# inject PT MODE: appends an entry to the top-level dict of PT's data.pkl and
# rewrites the zip (stored members, fresh CRCs): 'system' adds
# 'evil': posix.system('echo pwned'); 'nested' adds 'client': {'ok': 1, 'hook': builtins.eval}.
inject() {
    "$PY" - "$1" "$2" <<'PYEOF'
import struct, sys, zipfile
p, mode = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(p) as z:
    items = [(i, z.read(i.filename)) for i in z.infolist()]
def s(x):
    b = x.encode()
    return b"X" + struct.pack("<I", len(b)) + b
with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as w:
    for info, data in items:
        if info.filename.endswith("/data.pkl"):
            assert data.endswith(b".")
            if mode == "system":
                extra = s("evil") + b"cposix\nsystem\n" + s("echo pwned") + b"\x85R" + b"s"
            else:
                extra = s("client") + b"}" + s("ok") + b"K\x01s" + s("hook") + b"cbuiltins\neval\n" + b"s" + b"s"
            data = data[:-1] + extra + b"."
        zi = zipfile.ZipInfo(info.filename, date_time=info.date_time)
        w.writestr(zi, data)
PYEOF
}
# has_bytes PT TEXT: data.pkl of PT contains TEXT.
has_bytes() {
    "$PY" - "$1" "$2" <<'PYEOF'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
d = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
sys.exit(0 if sys.argv[2].encode() in z.read(d) else 1)
PYEOF
}
rm -rf dsck && cp -r "$DSFIX" dsck
inject dsck/global_step3/mp_rank_00_model_states.pt system
mark
run verify dsck
expect_rc 5 "verify of a DeepSpeed checkpoint with posix.system in its client state"
expect_in out "mp_rank_00_model_states.pt: posix.system at \['evil'\]" "verify names the callable and the key"
expect_in out "dsck: unsupported" "verify's verdict"
run verify dsck --json
expect_rc 5 "verify --json of a source with posix.system"
expect_in out '"result":"unsupported"' "verify --json's verdict"
run reshard dsck --to 1 --format deepspeed -o pk1 -q
expect_rc 5 "reshard --format deepspeed of a source with posix.system"
expect_in err "posix.system at \['evil'\].*--drop-unknown-objects" "reshard names the object and the way out"
run reshard dsck --format universal -o pk2 -q
expect_rc 5 "reshard --format universal of a source with posix.system"
expect_in err "posix.system at \['evil'\]" "reshard --format universal names the object"
same_tree "a source with posix.system: nothing written"
run reshard dsck --to 1 --format deepspeed -o pk3 -q --drop-unknown-objects
expect_rc 0 "reshard --format deepspeed --drop-unknown-objects"
expect_in err "warning: .*posix.system at \['evil'\]" "the dropped object is listed"
if has_bytes pk3/global_step3/mp_rank_00_model_states.pt posix; then bad "posix.system copied into the output"; else ok; fi
run verify pk3
expect_rc 0 "verify of the output written with --drop-unknown-objects"
# Nested: only the entry holding the object goes.
rm -rf dsck pk3 && cp -r "$DSFIX" dsck
inject dsck/global_step3/mp_rank_00_model_states.pt nested
run verify dsck
expect_rc 5 "verify of a client state with builtins.eval inside a dict"
expect_in out "builtins.eval at \['client'\]\['hook'\]" "the nested key path is named"
run reshard dsck --to 2 --format deepspeed -o pk4 -q --drop-unknown-objects
expect_rc 0 "reshard --drop-unknown-objects, nested"
if has_bytes pk4/global_step3/mp_rank_00_model_states.pt eval; then bad "builtins.eval copied into the output"; else ok; fi
if has_bytes pk4/global_step3/mp_rank_00_model_states.pt client; then ok; else bad "the rest of 'client' was dropped too"; fi
rm -rf dsck pk4
# Every global the real DeepSpeed fixtures use is allowed: each verifies ok.
for f in "$SRC_DIR"/fixtures/deepspeed*/*/ckpt "$SRC_DIR"/fixtures/deepspeed*/*/expected/universal; do
    [ -d "$f" ] || continue
    run verify "$f"
    expect_rc 0 "verify of the fixture ${f#"$SRC_DIR"/}"
done

# ==== 4. only regular files are opened; nothing blocks ====
# fifo_in CKPT RELPATH: replaces CKPT/RELPATH with a FIFO.
fifo_in() { rm -rf "$1/$2" && mkfifo "$1/$2"; }
for case in "ck $TAG/rank_00001.safetensors" "ck $TAG/manifest.json" "ck latest" \
    "ds global_step3/mp_rank_00_model_states.pt" "ds global_step3/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt" \
    "ds latest"; do
    set -- $case
    rm -rf ff
    if [ "$1" = ck ]; then cp -r ck ff; else cp -r "$DSFIX" ff; fi
    fifo_in ff "$2"
    mark
    for cmd in "verify ff" "inspect ff" "consolidate ff -o f.safetensors -q" "reshard ff --to 1 -o f1 -q" \
        "reshard ff --to 1 --format deepspeed -o f2 -q"; do
        # shellcheck disable=SC2086
        run $cmd
        if [ "$RC" -eq 124 ]; then bad "$cmd with a FIFO at $2: hung (killed after 10 s)"; continue; fi
        # inspect of a native checkpoint reads the manifest only, not the rank files.
        case "$cmd $2" in "inspect ff "*.safetensors) expect_rc 0 "$cmd with a FIFO at $2"; continue ;; esac
        expect_rc 2 "$cmd with a FIFO at $2"
        expect_in all "$2: not a regular file \(a FIFO\)" "$cmd names the FIFO"
    done
    same_tree "a FIFO at $2: nothing written"
done
rm -rf ff
# A directory, and a character device (through a symlink), where a file should be.
cp -r ck ff
rm ff/$TAG/rank_00000.safetensors && mkdir ff/$TAG/rank_00000.safetensors
run consolidate ff -o f.safetensors -q
expect_rc 2 "consolidate, a directory in place of a rank file"
expect_in err "rank_00000.safetensors: not a regular file \(a directory\)" "the directory is named"
rm -rf ff/$TAG/rank_00000.safetensors && ln -s /dev/zero ff/$TAG/rank_00000.safetensors
run consolidate ff -o f.safetensors -q
expect_rc 2 "consolidate, a symlink to /dev/zero in place of a rank file"
expect_in err "not a regular file \(a character device\)" "the device is refused"
rm -rf ff
# HF side files beside a checkpoint: config.json and trainer_state.json as FIFOs.
cp -r "$HF" hf
fifo_in hf/checkpoint-12 config.json
run consolidate hf -o hfo -q
[ "$RC" -ne 124 ] && ok || bad "consolidate with a FIFO config.json hung"
expect_rc 2 "consolidate with a FIFO config.json"
expect_in err "config.json: not a regular file" "the FIFO config.json is named"
rm -rf hf && cp -r "$HF" hf
fifo_in hf/checkpoint-12 trainer_state.json
run consolidate hf -t best -o hfo.safetensors -q
[ "$RC" -ne 124 ] && ok || bad "consolidate -t best with a FIFO trainer_state.json hung"
expect_rc 2 "consolidate -t best with a FIFO trainer_state.json"
expect_in err "trainer_state.json: not a regular file" "the FIFO trainer_state.json is named"
rm -rf hf
# dstrain: --data and --deepspeed as FIFOs.
if [ -x "$BIN_DIR/dstrain" ]; then
    mkfifo data.fifo cfg.fifo
    printf '{"train_batch_size": 2, "optimizer": {"type": "AdamW", "params": {"lr": 0.001}}}' >ok_ds.json
    DSTRAIN --deepspeed ok_ds.json --data data.fifo --n_embd 16 --seq_len 16 --max_steps 1 \
        >"$T/io/out" 2>"$T/io/err" </dev/null
    RC=$?
    [ "$RC" -ne 124 ] && ok || bad "dstrain --data FIFO hung"
    expect_rc 2 "dstrain --data FIFO"
    expect_in err "data.fifo: not a regular file \(a FIFO\)" "dstrain names the FIFO"
    DSTRAIN --deepspeed cfg.fifo --data "$SRC_DIR/fixtures/corpus/licenses.txt" --n_embd 16 \
        --seq_len 16 --max_steps 1 >"$T/io/out" 2>"$T/io/err" </dev/null
    RC=$?
    [ "$RC" -ne 124 ] && ok || bad "dstrain --deepspeed FIFO hung"
    expect_rc 2 "dstrain --deepspeed FIFO"
    expect_in err "cfg.fifo: not a regular file \(a FIFO\)" "dstrain names the FIFO config"
    rm -f data.fifo cfg.fifo
    # dstrain's trainer_state.json: best_model_checkpoint is a tag, never a path.
    mkdir -p run
    printf '{"best_model_checkpoint": "../../../x", "log_history": []}' >run/trainer_state.json
    DSTRAIN --deepspeed ok_ds.json --data "$SRC_DIR/fixtures/corpus/licenses.txt" --n_embd 16 \
        --seq_len 16 --max_steps 1 --save_dir run --save_steps 1 >"$T/io/out" 2>"$T/io/err" </dev/null
    RC=$?
    expect_rc 1 "dstrain with a trainer_state.json whose best_model_checkpoint is a path"
    expect_in err "trainer_state.json: best_model_checkpoint '../../../x' is not a safe name" "the path is named"
    [ ! -e run/latest ] && ok || bad "dstrain saved over a damaged trainer_state.json"
    rm -rf run
fi

# ==== 5. files called what they are ====
rm -rf dsck && cp -r "$DSFIX" dsck
: >dsck/global_step3/mp_rank_00_model_states.pt
run inspect dsck
expect_rc 1 "inspect, a 0-byte .pt"
expect_in err "mp_rank_00_model_states.pt: empty file \(0 bytes\)" "a 0-byte .pt is called empty"
expect_not_in err "legacy" "a 0-byte .pt is not the legacy torch format"
rm dsck/global_step3/mp_rank_00_model_states.pt
ln -s /etc/passwd dsck/global_step3/mp_rank_00_model_states.pt
run consolidate dsck -o p.safetensors -q
expect_rc 1 "consolidate, a .pt that is a symlink to a text file"
expect_in err "mp_rank_00_model_states.pt: not a torch zip archive" "judged by its content"
expect_not_in err "legacy" "a text file is not the legacy torch format"
rm dsck/global_step3/mp_rank_00_model_states.pt
printf 'this is not a checkpoint' >dsck/global_step3/mp_rank_00_model_states.pt
run verify dsck
expect_rc 1 "verify, a .pt holding text"
expect_in out "not a torch zip archive" "verify calls it what it is"
# The legacy format itself (a pickle stream, no zip) is still named as such.
printf '\x80\x02\x8a\x0alegacy' >dsck/global_step3/mp_rank_00_model_states.pt
run inspect dsck
expect_rc 5 "inspect, a legacy (pickle-stream) torch file"
expect_in err "legacy" "the legacy format is named"
# A symlink to a regular file inside the checkpoint is followed.
rm -rf dsck && cp -r "$DSFIX" dsck
mv dsck/global_step3/mp_rank_00_model_states.pt dsck/model.pt
ln -s ../model.pt dsck/global_step3/mp_rank_00_model_states.pt
run inspect dsck
expect_rc 0 "inspect, a symlinked model-states file"
rm -rf dsck

# summary
cli_finish
