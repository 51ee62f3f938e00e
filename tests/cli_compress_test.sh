#!/usr/bin/env bash
# cli_compress_test.sh — compressed native checkpoints through the CLI:
#  - an uncompressed synth output is byte for byte what dsckpt wrote before
#    compression existed (SHA-256 of every file, recorded from that version);
#  - synth --compress: manifest version 3 (planes chunks), smaller files, verify passes, inspect
#    reads it; consolidate equals the uncompressed checkpoint's, bit for bit, in
#    bf16 and fp32, one file and the HF layout;
#  - reshard compressed -> plain, plain -> compressed (--compress=3), compressed ->
#    compressed at another world size and stage: each consolidates to the same bytes;
#  - a flipped stored byte: verify exit 1 naming the chunk, consolidate exit 1
#    writing nothing (also with --no-verify: zstd's own check refuses it);
#  - a truncated compressed file: verify and consolidate exit 1;
#  - a checkpoint of single-frame chunks (version 2, written through the test
#    hook as earlier writers did) verifies and consolidates to the same bytes;
#  - a manifest of a newer version: exit 5;
#  - usage: --compress=0, =23, =x exit 3; --compress with --format deepspeed exit 3.
#
# Usage: tests/cli_compress_test.sh PATH/TO/dsckpt
set -u

. "$(dirname "$0")/cli_lib.sh"
cli_init compress "$@"
same() { if cmp -s "$1" "$2"; then ok; else bad "$3: $1 and $2 differ"; fi; }

# ---- uncompressed output unchanged ----
run synth -o golden --params 1M --world-size 3 --stage 1 --seed 5 -q
expect_rc 0 "synth golden"
(cd golden && find . -type f | LC_ALL=C sort | xargs sha256sum) >golden.sha
cat >golden.want <<'SHA'
5de69b1c9db2db848068e7a4da528a9ff8dea18c23fb12327e8c3391e9551930  ./global_step100/manifest.json
d744b5ba4df6ce664174a42717b33523a6d1a1f112c038afbb41baa29c6b9c49  ./global_step100/rank_00000.safetensors
9b9dfbecc3ecdb3b52dc658c5c4ababe99f17db63291be86f29d1f353c9381f1  ./global_step100/rank_00001.safetensors
3bdfa69257da096fc646539881da1d40ec67934e23cbfd12ecef217235443473  ./global_step100/rank_00002.safetensors
7e8151691ddc75fc7fff57738c4d606676d8ab0a2c8d443846bddbb1cd0b7165  ./latest
27b332a432727bae409a7cc814a22e18f3144a917fd479f9aaeb1f0b03e857f7  ./trainer_state.json
SHA
if diff -q golden.sha golden.want >/dev/null; then ok; else
    bad "an uncompressed synth checkpoint changed"
    diff golden.sha golden.want | sed 's/^/    /'
fi

# ---- synth --compress, consolidate equal ----
for dt in bf16 fp32; do
    run synth -o p-$dt --params 3M --world-size 2 --stage 2 --dtype $dt -q
    expect_rc 0 "synth plain $dt"
    run synth -o z-$dt --params 3M --world-size 2 --stage 2 --dtype $dt --compress -q
    expect_rc 0 "synth --compress $dt"
    if grep -q '"version":3,' z-$dt/global_step100/manifest.json &&
        grep -q '"version":1,' p-$dt/global_step100/manifest.json; then ok; else bad "manifest versions ($dt)"; fi
    zs=$(cat z-$dt/global_step100/rank_* | wc -c)
    ps=$(cat p-$dt/global_step100/rank_* | wc -c)
    if [ "$zs" -lt "$ps" ]; then ok; else bad "compressed rank files not smaller ($zs >= $ps, $dt)"; fi
    run verify z-$dt
    expect_rc 0 "verify compressed $dt"
    run inspect z-$dt
    expect_rc 0 "inspect compressed $dt"
    expect_in out "rank_00001.safetensors .* bytes \(zstd: [0-9]+ stored, [0-9.]+x\)" "inspect shows stored sizes"
    for od in bf16 fp32; do
        run consolidate p-$dt -o p-$dt-$od.safetensors --dtype $od -q
        expect_rc 0 "consolidate plain $dt -> $od"
        run consolidate z-$dt -o z-$dt-$od.safetensors --dtype $od -q
        expect_rc 0 "consolidate compressed $dt -> $od"
        same p-$dt-$od.safetensors z-$dt-$od.safetensors "consolidate $dt -> $od"
    done
done
# ---- version 2 (one zstd frame per chunk, as earlier writers wrote) still reads ----
DSCKPT_TEST_ZCHUNK_FRAME=1 run synth -o v2-bf16 --params 3M --world-size 2 --stage 2 --dtype bf16 --compress -q
expect_rc 0 "synth --compress, single frames (test hook)"
if grep -q '"version":2,' v2-bf16/global_step100/manifest.json && ! grep -q '"planes"' v2-bf16/global_step100/manifest.json
then ok; else bad "single-frame chunks write version 2 without planes"; fi
run verify v2-bf16
expect_rc 0 "verify version 2"
run consolidate v2-bf16 -o v2-bf16-bf16.safetensors --dtype bf16 -q
expect_rc 0 "consolidate version 2"
same p-bf16-bf16.safetensors v2-bf16-bf16.safetensors "consolidate version 2 -> bf16"

run diff p-bf16 z-bf16
expect_rc 0 "diff plain vs compressed"
expect_in out "equal \(0 differences\)" "diff finds them equal"
run consolidate z-bf16 -o z-hf --max-shard-size 2MB -q
expect_rc 0 "consolidate compressed, HF layout"
run consolidate p-bf16 -o p-hf --max-shard-size 2MB -q
for f in p-hf/*; do same "$f" "z-hf/$(basename "$f")" "HF layout $(basename "$f")"; done

# ---- reshard both ways ----
run reshard z-bf16 --to 3 -o r-plain -q
expect_rc 0 "reshard compressed -> plain"
if grep -q '"version":1,' r-plain/global_step100/manifest.json; then ok; else bad "reshard without --compress writes version 1"; fi
run reshard p-bf16 --to 3 --compress=3 -o r-z3 -q
expect_rc 0 "reshard plain -> compressed level 3"
run reshard z-bf16 --to 1 --stage 3 --compress -o r-zz -q
expect_rc 0 "reshard compressed -> compressed, W=1 stage 3"
run verify r-zz
expect_rc 0 "verify resharded compressed"
for r in r-plain r-z3 r-zz; do
    run consolidate $r -o $r.safetensors -q
    expect_rc 0 "consolidate $r"
    same p-bf16-bf16.safetensors $r.safetensors "consolidate after $r"
done

# ---- damage ----
cp -r z-bf16 dmg
f=dmg/global_step100/rank_00001.safetensors
# A byte in the middle of a zstd frame of the stored chunk holding the middle of
# rank 1's largest fp32 fragment (data consolidate reads), found from the manifest
# (fragments are [tensor, file, numel, start, raw offset]); for a planes chunk, in
# its first frame plane (header: per plane a kind byte, 0 raw / 1 zstd, and a u32
# LE stored size), as a flip in a raw plane has no check but the SHA-256.
seek=$(python3 -c 'import json,sys
m = json.load(open(sys.argv[1]))
i = [k for k, f in enumerate(m["files"]) if f["name"] == "rank_00001.safetensors"][0]
fr = max((x for x in m["fragments"]["fp32"] if x[1] == i), key=lambda x: x[2])
f = m["files"][i]
c = f["chunks"][(fr[4] + fr[2] * 2) // f["chunk_size"]]
at = c[2] + c[3] // 2
if c[4] == "planes":
    b = open(sys.argv[2], "rb").read()[c[2]:c[2] + c[3]]
    pos = 5 * c[5]
    for j in range(c[5]):
        sz = int.from_bytes(b[5 * j + 1:5 * j + 5], "little")
        if b[5 * j] == 1:
            at = c[2] + pos + sz // 2
            break
        pos += sz
print(at)' dmg/global_step100/manifest.json $f)
printf '\x55' | dd of=$f bs=1 seek="$seek" conv=notrunc status=none
run verify dmg
expect_rc 1 "verify flipped stored byte"
expect_in out "rank_00001.safetensors: chunk [0-9]+ \(stored bytes" "verify names the chunk"
run consolidate dmg -o dmg.safetensors -q
expect_rc 1 "consolidate flipped stored byte"
expect_in err "rank_00001.safetensors: chunk [0-9]+" "consolidate names the chunk"
absent dmg.safetensors "consolidate of a damaged checkpoint"
run consolidate dmg -o dmg.safetensors -q --no-verify
expect_rc 1 "consolidate --no-verify flipped stored byte (zstd's check)"
absent dmg.safetensors "consolidate --no-verify of a damaged checkpoint"

cp -r z-bf16 trunc
truncate -s -1000 trunc/global_step100/rank_00000.safetensors
run verify trunc
expect_rc 1 "verify truncated compressed file"
expect_in out "truncated" "verify says truncated"
run consolidate trunc -o trunc.safetensors -q
expect_rc 1 "consolidate truncated compressed file"

# A newer manifest version (resealed digest is not needed: the version is read
# after the digest check, so rewrite both with sed + sha256sum).
cp -r z-bf16 newer
m=newer/global_step100/manifest.json
body=$(sed 's/,"manifest_sha256":"[0-9a-f]*"}$/}/; s/"version":[23],/"version":4,/' $m)
dg=$(printf '%s' "$body" | sha256sum | cut -d' ' -f1)
printf '%s' "${body%\}},\"manifest_sha256\":\"$dg\"}" >$m
run consolidate newer -o newer.safetensors -q
expect_rc 5 "a newer manifest version"
expect_in err "manifest version 4" "the version is named"

# ---- usage ----
for bad_level in 0 23 x; do
    run synth -o u --params 1M --compress=$bad_level -q
    expect_rc 3 "synth --compress=$bad_level"
    run reshard z-bf16 --to 2 -o u --compress=$bad_level -q
    expect_rc 3 "reshard --compress=$bad_level"
done
run synth -o u --params 1M --stage 2 --format deepspeed --compress -q
expect_rc 3 "synth --format deepspeed --compress"
run reshard z-bf16 --to 2 -o u --format deepspeed --compress -q
expect_rc 3 "reshard --format deepspeed --compress"
absent u "refused runs"

cli_finish
