#!/usr/bin/env bash
# cli_ds19_test.sh — the `dsckpt` command line on checkpoints written by DeepSpeed
# 0.19.8 / torch 2.15 (fixtures/deepspeed-0.19): inspect, verify, consolidate and
# reshard --format deepspeed succeed on every tag directory (plain ZeRO-1/2/3 and
# the HF Trainer's ZeRO-3 checkpoints); a flipped byte is caught (exit 1); what is
# not supported exits 5 naming what was found (big-endian torch file, TP layout).
#
# Usage: tests/cli_ds19_test.sh PATH/TO/dsckpt
# Exits non-zero if any check fails; the last line is "N passed, M failed".
set -u

. "$(dirname "$0")/cli_lib.sh"
cli_init ds19-test "$@"
FX="$SRC_DIR/fixtures/deepspeed-0.19"

TAGS="z1_ws2_bf16/ckpt/global_step3 z2_ws2_bf16_palign/ckpt/global_step3 z3_ws2_bf16/ckpt/global_step3
z0_ws2_bf16/ckpt/global_step3 z0_ws2_fp32/ckpt/global_step3
hf_trainer_z3/output/checkpoint-4/global_step4 hf_trainer_z3/output/checkpoint-12/global_step12"
for tag in $TAGS; do
    run inspect "$FX/$tag"
    expect_rc 0 "inspect $tag"
    run inspect --json "$FX/$tag"
    expect_rc 0 "inspect --json $tag"
    python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$T/out" && ok || bad "inspect --json $tag: invalid JSON"
    run verify "$FX/$tag"
    expect_rc 0 "verify $tag"
    rm -rf "$T/c"
    run consolidate "$FX/$tag" -o "$T/c" --dtype bf16
    expect_rc 0 "consolidate $tag"
    rm -rf "$T/r"
    run reshard "$FX/$tag" --to 3 --format deepspeed -o "$T/r"
    expect_rc 0 "reshard --format deepspeed $tag"
    run verify "$T/r"
    expect_rc 0 "verify of the resharded $tag"
done
# Save roots resolve through `latest` (an HF checkpoint-N folder is one), or -t.
run inspect "$FX/z3_ws2_bf16/ckpt"
expect_rc 0 "inspect a 0.19 save root"
expect_in out "zero stage +3" "inspect shows ZeRO-3"
run inspect "$FX/hf_trainer_z3/output/checkpoint-12"
expect_rc 0 "inspect an HF checkpoint-N folder"
expect_in out "global_step12" "checkpoint-12 resolves to global_step12"
run inspect "$FX/hf_trainer_z3/output/checkpoint-4" -t global_step4
expect_rc 0 "inspect checkpoint-4 -t global_step4"
expect_in out "global_step4" "-t global_step4"

# A flipped byte in a ZeRO-3 optimizer file: corrupt.
cp -r "$FX/z3_ws2_bf16/ckpt/global_step3" "$T/flip"
chmod -R u+w "$T/flip"
F="$T/flip/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
python3 - "$F" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x10
open(p, "wb").write(b)
EOF
run verify "$T/flip"
expect_rc 1 "verify catches a flipped byte"
expect_in out "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt" "verify names the damaged file"

# A big-endian torch file: unsupported (5), naming it.
cp -r "$FX/z3_ws2_bf16/ckpt/global_step3" "$T/big"
chmod -R u+w "$T/big"
F="$T/big/zero_pp_rank_0_mp_rank_00_model_states.pt"
python3 - "$F" <<'EOF'
import sys, zipfile
p = sys.argv[1]
src = zipfile.ZipFile(p)
items = [(i.filename, src.read(i.filename)) for i in src.infolist()]
src.close()
with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as z:
    for n, d in items:
        z.writestr(n, b"big" if n.endswith("/byteorder") else d)
EOF
for cmd in inspect verify consolidate; do
    rm -rf "$T/o"
    if [ "$cmd" = consolidate ]; then run consolidate "$T/big" -o "$T/o"; else run "$cmd" "$T/big"; fi
    if [ "$cmd" = verify ]; then
        [ "$RC" -ne 0 ] && ok || bad "verify passes a big-endian file"
    else
        expect_rc 5 "$cmd of a big-endian file"
        expect_in err "big-endian.*zero_pp_rank_0_mp_rank_00_model_states.pt|zero_pp_rank_0_mp_rank_00_model_states.pt.*big-endian" "$cmd names the big-endian file"
    fi
done

# A tensor-parallel rank file next to the data-parallel ones: unsupported, named.
cp -r "$FX/z3_ws2_bf16/ckpt/global_step3" "$T/tp"
chmod -R u+w "$T/tp"
: >"$T/tp/zero_pp_rank_0_mp_rank_01_model_states.pt"
run inspect "$T/tp"
expect_rc 5 "inspect of a TP checkpoint"
expect_in err "mp_rank_01" "the TP file is named"

# ZeRO-0 (everything in mp_rank_00_model_states.pt): read as stage 0 at its world
# size; DeepSpeed format out at any M is one file again and consolidates to the same
# bytes; universal output only with --stage 1-3 (DeepSpeed loads universal only there).
for fx in z0_ws2_bf16 z0_ws2_fp32; do
    run inspect "$FX/$fx/ckpt"
    expect_in out "zero stage   0" "$fx is ZeRO-0"
    expect_in out "world size   2" "$fx world size from dp_world_size"
    run consolidate "$FX/$fx/ckpt" -o "$T/$fx.a.safetensors" --dtype fp32 -q
    expect_rc 0 "consolidate $fx"
    for m in 1 3; do
        rm -rf "$T/$fx.w$m"
        run reshard "$FX/$fx/ckpt" --to $m --format deepspeed -o "$T/$fx.w$m" -q
        expect_rc 0 "reshard --format deepspeed $fx --to $m"
        [ "$(ls "$T/$fx.w$m/global_step3")" = "mp_rank_00_model_states.pt" ] && ok || bad "$fx --to $m: not one model-states file"
        run inspect "$T/$fx.w$m"
        expect_in out "world size   $m" "$fx --to $m reads back at $m"
        rm -f "$T/$fx.b.safetensors"
        run consolidate "$T/$fx.w$m" -o "$T/$fx.b.safetensors" --dtype fp32 -q
        cmp -s "$T/$fx.a.safetensors" "$T/$fx.b.safetensors" && ok || bad "$fx --to $m consolidates differently"
    done
    run reshard "$FX/$fx/ckpt" --format universal -o "$T/$fx.uni" -q
    expect_rc 5 "universal from $fx"
    expect_in err "ZeRO-0" "universal refusal names ZeRO-0"
    [ ! -e "$T/$fx.uni" ] && ok || bad "$fx: refused universal output was created"
    # for a run going on under ZeRO 1-3: built from the tensors at that stage
    for s in 1 3; do
        run reshard "$FX/$fx/ckpt" --format universal --stage $s -o "$T/$fx.uni$s" -q
        expect_rc 0 "universal --stage $s from $fx"
        run inspect "$T/$fx.uni$s"
        expect_in out "format       universal" "$fx universal --stage $s reads back as universal"
        expect_in out "zero stage   $s" "$fx universal --stage $s is stage $s"
        rm -f "$T/$fx.b.safetensors"
        run consolidate "$T/$fx.uni$s" -o "$T/$fx.b.safetensors" --dtype fp32 -q
        cmp -s "$T/$fx.a.safetensors" "$T/$fx.b.safetensors" && ok || bad "$fx universal --stage $s consolidates differently"
    done
    # --force replaces a universal output dsckpt wrote, never one holding other files
    run reshard "$FX/$fx/ckpt" --format universal --stage 2 -o "$T/$fx.uni1" --force -q
    expect_rc 0 "universal --force over a universal output"
    : >"$T/$fx.uni1/global_step3_universal/zero/embed.weight/notes.txt"
    run reshard "$FX/$fx/ckpt" --format universal --stage 2 -o "$T/$fx.uni1" --force -q
    expect_rc 4 "universal --force over a folder holding a foreign file"
    expect_in err "notes.txt" "the foreign file is named"
done
# A ZeRO-0 file without optimizer state (DeepSpeed before the bf16 fix) is refused as unsupported.
mkdir -p "$T/noopt/global_step3"
python3 - "$FX/z0_ws2_fp32/ckpt/global_step3/mp_rank_00_model_states.pt" "$T/noopt/global_step3/mp_rank_00_model_states.pt" <<'PYEOF'
import sys, zipfile
# The pickle's 'optimizer' value is torch's state_dict: replace the file's pickle by one
# whose root dict has optimizer None (tensors kept, so the file stays a torch.save zip).
src, dst = sys.argv[1], sys.argv[2]
zin = zipfile.ZipFile(src)
names = zin.namelist()
pkl_name = [n for n in names if n.endswith("/data.pkl")][0]
data = zin.read(pkl_name)
key = b"X\t\x00\x00\x00optimizer"
i = data.find(key)
assert i > 0, "no optimizer key"
# the value that follows is a dict opened with '}' (EMPTY_DICT); point the key at None
# instead by renaming it, so 'optimizer' is absent
data = data[:i] + b"X\t\x00\x00\x00optimizeX" + data[i + len(key):]
with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
    for n in names:
        zout.writestr(zin.getinfo(n), data if n == pkl_name else zin.read(n))
PYEOF
echo global_step3 > "$T/noopt/latest"
run inspect "$T/noopt"
expect_rc 5 "a ZeRO-0 checkpoint without optimizer state"
expect_in err "without optimizer state" "the refusal says what is missing"

cli_finish
