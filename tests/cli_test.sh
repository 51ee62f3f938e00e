#!/usr/bin/env bash
# cli_test.sh — behaviour of the `dsckpt` command line that users and scripts rely on:
# help text, exit codes (see the top of cli/main.c), refusal to overwrite outputs,
# verify's verdicts on damaged checkpoints, nothing left behind by failed runs, inspect
# output, and -t TAG selection.
#
# Usage: tests/cli_test.sh PATH/TO/dsckpt
# Exits non-zero if any check fails; the last line is "N passed, M failed".
set -u

. "$(dirname "$0")/cli_lib.sh"
cli_init cli-test "$@"
# check DESCRIPTION COMMAND...: the command must succeed.
check() {
    local desc="$1"
    shift
    if "$@"; then ok; else bad "$desc"; fi
}

# Environment variables for the run come before the arguments: runenv VAR=V -- ARGS...
runenv() {
    local envs=()
    while [ "$1" != "--" ]; do
        envs+=("$1")
        shift
    done
    shift
    env "${envs[@]}" "$DS" "$@" >"$T/out" 2>"$T/err"
    RC=$?
}
expect_absent() {
    if [ ! -e "$1" ] && [ ! -L "$1" ]; then ok; else bad "$2: $1 exists"; fi
}
# No temporary sibling (.NAME.tmp-*) of PATH is left in its directory.
expect_no_tmp() {
    local dir base left
    dir="$(dirname "$1")"
    base="$(basename "$1")"
    left="$(find "$dir" -maxdepth 1 -name ".$base.tmp-*" 2>/dev/null | head -3)"
    if [ -z "$left" ]; then ok; else bad "$2: temporary files left: $left"; fi
}
# Digest of a file or of a whole tree (names, and contents of every file).
tree_hash() {
    if [ -d "$1" ]; then
        (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
    elif [ -f "$1" ]; then
        sha256sum <"$1" | cut -d' ' -f1
    else
        echo "missing"
    fi
}
# JSON field of the last run's stdout: json_field KEY -> prints the value (or fails).
json_field() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$T/out" "$1" 2>/dev/null
}
section() {
    echo "== $*"
}

# --------------------------------------------------------------------------------
section "help and usage errors"

run --help
expect_rc 0 "dsckpt --help"
for c in consolidate reshard verify inspect synth version; do
    expect_in out "^  $c " "dsckpt --help lists '$c'"
done
expect_in out "Exit codes" "dsckpt --help documents exit codes"
run help
expect_rc 0 "dsckpt help"
run version
expect_rc 0 "dsckpt version"
expect_in out '^dsckpt [0-9]+\.[0-9]+\.[0-9]+$' "dsckpt version prints a version"

# Every option each command parses (the struct option tables in cli/main.c), as
# "long/short" (short empty when there is none).
declare -A OPTS
OPTS[consolidate]="tag/t output/o dtype/ max-shard-size/ exclude-frozen/ force/ no-verify/ threads/j quiet/q help/h"
OPTS[reshard]="tag/t to/ output/o stage/ format/ force/ no-verify/ drop-unknown-objects/ compress/ threads/j quiet/q help/h"
OPTS[verify]="tag/t json/ threads/j quiet/q help/h"
OPTS[inspect]="tag/t json/ tensors/ help/h"
OPTS[synth]="output/o params/ world-size/ stage/ dtype/ seed/ step/ format/ compress/ force/ threads/j quiet/q help/h"
# Keep the lists in step with the source: every long option in cli/main.c's tables
# must be listed above for some command.
MAIN_C="$SRC_DIR/cli/main.c"
if [ -f "$MAIN_C" ]; then
    all=" ${OPTS[*]} "
    while read -r o; do
        if [[ "$all" == *" $o/"* ]]; then ok; else bad "option --$o (cli/main.c) is missing from OPTS in tests/cli_test.sh"; fi
    done < <(grep -oE '\{"[a-z][a-z-]*", *(no|required|optional)_argument' "$MAIN_C" | cut -d'"' -f2 | sort -u)
else
    echo "note: $MAIN_C not found; option lists not compared with the source"
fi
help_mentions() { # COMMAND OPTION PATTERN (on the last run's stdout)
    if grep -qE -e "$3" "$T/out"; then ok; else bad "dsckpt $1 --help does not mention $2"; fi
}
for c in consolidate reshard verify inspect synth; do
    run "$c" --help
    expect_rc 0 "dsckpt $c --help"
    expect_in out "^Usage: dsckpt $c" "dsckpt $c --help starts with its usage line"
    for o in ${OPTS[$c]}; do
        long="${o%/*}"
        short="${o#*/}"
        help_mentions "$c" "--$long" "(^|[^a-z-])--$long([^a-z-]|\$)"
        if [ -n "$short" ]; then
            help_mentions "$c" "-$short" "(^|[ ,])-$short,? "
        fi
    done
    run "$c" -h
    expect_rc 0 "dsckpt $c -h"
done

run
expect_rc 3 "dsckpt with no arguments"
expect_in err "Usage: dsckpt" "dsckpt with no arguments prints the usage on stderr"
run frobnicate
expect_rc 3 "unknown command"
expect_in err "frobnicate" "unknown command is named in stderr"
for c in consolidate reshard verify inspect synth; do
    run "$c" --no-such-option x
    expect_rc 3 "dsckpt $c --no-such-option"
    expect_in err "no-such-option" "dsckpt $c: the unknown option is named"
done
run consolidate somewhere
expect_rc 3 "consolidate without -o"
expect_in err "-o" "consolidate without -o says -o is required"
run reshard somewhere --to 2
expect_rc 2 "reshard without -o: OUT defaults to a sibling, CKPT must exist"
expect_in err "somewhere" "reshard of a missing CKPT names it"
run reshard somewhere -o out
expect_rc 3 "reshard without --to"
expect_in err "--to" "reshard without --to says --to is required"
run synth --params 20000
expect_rc 3 "synth without -o"
expect_in err "-o" "synth without -o says -o is required"
run consolidate -o out.safetensors
expect_rc 3 "consolidate without a checkpoint path"
run consolidate a b -o out.safetensors
expect_rc 3 "consolidate with two checkpoint paths"
run synth -o x extra
expect_rc 3 "synth with a stray argument"

# Bad option values: exit 3, the option named in stderr, nothing created.
bad_value() { # OPTION-NAME ARGS...
    local opt="$1"
    shift
    run "$@"
    expect_rc 3 "dsckpt $*"
    expect_in err "$opt" "dsckpt $*: stderr names $opt"
}
bad_value --dtype consolidate ck -o bv.safetensors --dtype fp8
bad_value --dtype consolidate ck -o bv.safetensors --dtype F64
bad_value --dtype synth -o bv --dtype fp8
bad_value --to reshard ck -o bv --to 0
bad_value --to reshard ck -o bv --to two
bad_value --stage reshard ck -o bv --to 2 --stage 7
bad_value --stage synth -o bv --stage 7
bad_value --stage synth -o bv --stage -1
bad_value --max-shard-size consolidate ck -o bv --max-shard-size banana
bad_value --max-shard-size consolidate ck -o bv --max-shard-size 0
bad_value --max-shard-size consolidate ck -o bv --max-shard-size 5XB
bad_value --threads consolidate ck -o bv.safetensors --threads 0
bad_value --threads reshard ck -o bv --to 2 --threads 0
bad_value --threads verify ck --threads 0
bad_value --threads synth -o bv --threads 0
bad_value --threads synth -o bv --threads 257
bad_value --world-size synth -o bv --world-size 0
bad_value --seed synth -o bv --seed abc
bad_value --step synth -o bv --step -1
bad_value --params synth -o bv --params lots
bad_value --params synth -o bv --params 10
expect_absent bv "usage errors create no output"
expect_absent bv.safetensors "usage errors create no output"

# --------------------------------------------------------------------------------
section "synth, consolidate, reshard: outputs are never silently replaced"

P=(--params 20000 --threads 2)
run synth -o ck "${P[@]}" --world-size 2 --stage 2
expect_rc 0 "synth -o ck"
check "synth writes ck/latest" test -f ck/latest
check "synth writes ck/global_step100/manifest.json" test -f ck/global_step100/manifest.json
check "synth writes one rank file per rank" test -f ck/global_step100/rank_00000.safetensors -a -f ck/global_step100/rank_00001.safetensors

# Single-file consolidate.
run consolidate ck -o X.safetensors -q
expect_rc 0 "consolidate -o X.safetensors"
check "consolidate wrote X.safetensors" test -s X.safetensors
h0="$(tree_hash X.safetensors)"
run consolidate ck -o X.safetensors -q --dtype fp32
expect_rc 4 "consolidate onto an existing X.safetensors"
expect_in err "exists" "consolidate onto an existing file says it exists"
expect_in err "--force" "consolidate onto an existing file suggests --force"
check "refused consolidate leaves X.safetensors byte-identical" test "$(tree_hash X.safetensors)" = "$h0"
expect_no_tmp X.safetensors "refused consolidate"
run consolidate ck -o X.safetensors -q --dtype fp32 --force
expect_rc 0 "consolidate --force onto an existing X.safetensors"
check "consolidate --force replaced X.safetensors" test "$(tree_hash X.safetensors)" != "$h0"
expect_no_tmp X.safetensors "consolidate --force"

# Directory consolidate (sharded, so the directory holds several files).
run consolidate ck -o HF -q --max-shard-size 20KB
expect_rc 0 "consolidate -o HF (directory)"
check "directory output has an index" test -f HF/model.safetensors.index.json
h0="$(tree_hash HF)"
run consolidate ck -o HF -q
expect_rc 4 "consolidate onto an existing directory"
expect_in err "already exists" "consolidate onto an existing directory says it exists"
check "refused consolidate leaves HF/ byte-identical" test "$(tree_hash HF)" = "$h0"
expect_no_tmp HF "refused directory consolidate"
run consolidate ck -o HF -q --force
expect_rc 0 "consolidate --force onto an existing directory"
check "consolidate --force replaced HF/ (one file now)" test -f HF/model.safetensors -a ! -e HF/model.safetensors.index.json
expect_no_tmp HF "directory consolidate --force"

# reshard -o.
run reshard ck --to 3 -o RS -q
expect_rc 0 "reshard --to 3 -o RS"
check "reshard wrote 3 rank files" test -f RS/global_step100/rank_00002.safetensors
h0="$(tree_hash RS)"
run reshard ck --to 1 -o RS -q
expect_rc 4 "reshard onto an existing RS"
expect_in err "already exists" "reshard onto an existing output says it exists"
check "refused reshard leaves RS/ byte-identical" test "$(tree_hash RS)" = "$h0"
run reshard ck --to 1 -o RS -q --force
expect_rc 0 "reshard --force onto an existing RS"
check "reshard --force replaced RS/" test "$(tree_hash RS)" != "$h0"
check "reshard --force left no rank file of the old output" test ! -e RS/global_step100/rank_00002.safetensors
expect_no_tmp RS "reshard --force"

# synth -o.
run synth -o SY "${P[@]}"
expect_rc 0 "synth -o SY"
h0="$(tree_hash SY)"
run synth -o SY "${P[@]}" --seed 2
expect_rc 4 "synth onto an existing SY"
expect_in err "already exists" "synth onto an existing output says it exists"
check "refused synth leaves SY/ byte-identical" test "$(tree_hash SY)" = "$h0"
run synth -o SY "${P[@]}" --seed 2 --force
expect_rc 0 "synth --force onto an existing SY"
check "synth --force replaced SY/" test "$(tree_hash SY)" != "$h0"
expect_no_tmp SY "synth --force"

# --------------------------------------------------------------------------------
section "unreadable inputs"

for c in consolidate reshard inspect; do
    case $c in
    consolidate) extra=(-o never.safetensors) ;;
    reshard) extra=(--to 2 -o never) ;;
    *) extra=() ;;
    esac
    run "$c" no/such/ckpt "${extra[@]}"
    expect_rc 2 "$c of a nonexistent path"
    expect_in err "no/such/ckpt" "$c of a nonexistent path names it"
    mkdir -p plain_dir
    echo hello >plain_dir/notes.txt
    run "$c" plain_dir "${extra[@]}"
    expect_rc 2 "$c of a directory that is not a checkpoint"
    expect_in err "plain_dir" "$c of a non-checkpoint directory names it"
done
expect_absent never.safetensors "failed consolidate creates no output"
expect_absent never "failed reshard creates no output"

# --------------------------------------------------------------------------------
section "verify"

run verify ck
expect_rc 0 "verify of an intact checkpoint"
expect_in out " ok " "verify of an intact checkpoint says ok"
run verify ck --json
expect_rc 0 "verify --json of an intact checkpoint"
check "verify --json prints JSON with result ok" test "$(json_field result)" = ok
check "verify --json counts 2 files" test "$(json_field files)" = 2
run verify ck -q
expect_rc 0 "verify -q of an intact checkpoint"
check "verify -q prints nothing when intact" test ! -s "$T/out"

# Byte offset of the data region of a safetensors file (8 + header length).
data_start() {
    python3 -c 'import struct,sys; f=open(sys.argv[1],"rb"); print(8+struct.unpack("<Q",f.read(8))[0])' "$1"
}
flip_byte() { # FILE OFFSET
    python3 -c '
import sys
p, off = sys.argv[1], int(sys.argv[2])
with open(p, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0xFF]))' "$1" "$2"
}

cp -r ck vflip
R1=vflip/global_step100/rank_00001.safetensors
flip_byte "$R1" $(($(data_start "$R1") + 1000))
run verify vflip
expect_rc 1 "verify after flipping a data byte"
expect_in out "rank_00001\.safetensors" "verify names the damaged file"
expect_in out "chunk" "verify names the damaged chunk"
run verify vflip --json
expect_rc 1 "verify --json after flipping a data byte"
check "verify --json says corrupt" test "$(json_field result)" = corrupt

cp -r ck vmiss
rm vmiss/global_step100/rank_00000.safetensors
run verify vmiss
expect_rc 1 "verify with a rank file deleted"
expect_in out "rank_00000\.safetensors.*missing" "verify says the deleted file is missing"

cp -r ck vstray
echo junk >vstray/global_step100/extra.bin
run verify vstray
expect_rc 1 "verify with a stray file in the tag directory"
expect_in out "extra\.bin.*stray" "verify names the stray file"

cp -r ck vtrunc
R0=vtrunc/global_step100/rank_00000.safetensors
truncate -s $(($(stat -c %s "$R0") - 100)) "$R0"
run verify vtrunc
expect_rc 1 "verify with a truncated rank file"
expect_in out "rank_00000\.safetensors.*truncated" "verify says the file is truncated"
run consolidate vtrunc -o fromtrunc.safetensors -q
expect_rc 1 "consolidate of a checkpoint with a truncated rank file"
expect_absent fromtrunc.safetensors "consolidate of a truncated checkpoint leaves no output"
expect_no_tmp fromtrunc.safetensors "consolidate of a truncated checkpoint"

cp -r ck vbadjson
echo '{"format": "dsckpt", "version": 1,' >vbadjson/global_step100/manifest.json
run verify vbadjson
expect_rc 1 "verify with a manifest that is not JSON"
expect_in out "manifest\.json" "verify names the bad manifest"

run verify X.safetensors
expect_rc 0 "verify of a consolidated .safetensors file"
head -c $(($(stat -c %s X.safetensors) - 10)) X.safetensors >Xtrunc.safetensors
run verify Xtrunc.safetensors
expect_rc 1 "verify of a truncated .safetensors file"
expect_in out "truncated" "verify says the .safetensors file is truncated"
run verify no/such/path
expect_rc 2 "verify of a nonexistent path"
expect_in out "no/such/path" "verify of a nonexistent path names it"
run verify plain_dir
expect_rc 2 "verify of a directory that is not a checkpoint"

# --------------------------------------------------------------------------------
section "failed runs leave nothing behind (DSCKPT_TEST_FAIL_WRITE_AFTER)"

# ENOSPC after N bytes, at several points: the first write, inside a rank file, and
# (for synth) past all rank files, i.e. while writing manifest.json / latest.
total_rank_bytes=$(cat ck/global_step100/rank_*.safetensors | wc -c)
for n in 0 5000 $((total_rank_bytes / 2)) $((total_rank_bytes + 10)); do
    runenv DSCKPT_TEST_FAIL_WRITE_AFTER=$n -- synth -o fs_synth "${P[@]}" --world-size 2 --stage 2
    expect_rc 2 "synth with disk full after $n bytes"
    expect_in err "No space" "synth with disk full after $n bytes reports ENOSPC"
    expect_absent fs_synth "synth with disk full after $n bytes"
    expect_no_tmp fs_synth "synth with disk full after $n bytes"
done
for n in 0 5000 $((total_rank_bytes / 2)); do
    runenv DSCKPT_TEST_FAIL_WRITE_AFTER=$n -- reshard ck --to 3 -o fs_reshard -q
    expect_rc 2 "reshard with disk full after $n bytes"
    expect_in err "No space" "reshard with disk full after $n bytes reports ENOSPC"
    expect_absent fs_reshard "reshard with disk full after $n bytes"
    expect_no_tmp fs_reshard "reshard with disk full after $n bytes"
done
# The target of --force survives a failed replacement.
h0="$(tree_hash RS)"
runenv DSCKPT_TEST_FAIL_WRITE_AFTER=5000 -- reshard ck --to 2 -o RS -q --force
expect_rc 2 "reshard --force with disk full"
check "a failed reshard --force leaves the old output intact" test "$(tree_hash RS)" = "$h0"
expect_no_tmp RS "reshard --force with disk full"
# consolidate writes with positional writes (ds_pwrite_full), which honour the hook too.
for n in 0 5000; do
    runenv DSCKPT_TEST_FAIL_WRITE_AFTER=$n -- consolidate ck -o fs_cons.safetensors -q
    expect_rc 2 "consolidate (file) with disk full after $n bytes"
    expect_in err "No space" "consolidate (file) with disk full after $n bytes reports ENOSPC"
    expect_absent fs_cons.safetensors "consolidate (file) with disk full after $n bytes"
    expect_no_tmp fs_cons.safetensors "consolidate (file) with disk full after $n bytes"
    runenv DSCKPT_TEST_FAIL_WRITE_AFTER=$n -- consolidate ck -o fs_cons_dir -q --max-shard-size 20KB
    expect_rc 2 "consolidate (directory) with disk full after $n bytes"
    expect_in err "No space" "consolidate (directory) with disk full after $n bytes reports ENOSPC"
    expect_absent fs_cons_dir "consolidate (directory) with disk full after $n bytes"
    expect_no_tmp fs_cons_dir "consolidate (directory) with disk full after $n bytes"
done
h0="$(tree_hash X.safetensors)"
runenv DSCKPT_TEST_FAIL_WRITE_AFTER=5000 -- consolidate ck -o X.safetensors -q --force
expect_rc 2 "consolidate --force with disk full"
check "a failed consolidate --force leaves the old file intact" test "$(tree_hash X.safetensors)" = "$h0"
# With a budget larger than the output, the hook changes nothing.
runenv DSCKPT_TEST_FAIL_WRITE_AFTER=100000000 -- synth -o fs_big "${P[@]}"
expect_rc 0 "synth with a fault budget larger than its output"

# --------------------------------------------------------------------------------
section "inspect"

run synth -o IN "${P[@]}" --world-size 3 --stage 3 --dtype fp16 --step 250 --seed 9
expect_rc 0 "synth -o IN (world 3, stage 3, fp16, step 250)"
run inspect IN
expect_rc 0 "inspect"
expect_in out "^tag +global_step250" "inspect prints the tag"
expect_in out "^zero stage +3$" "inspect prints the ZeRO stage"
expect_in out "^world size +3 " "inspect prints the world size"
expect_in out "^train dtype +fp16" "inspect prints the training dtype"
run inspect IN --tensors
expect_rc 0 "inspect --tensors"
expect_in out "wpe\.weight.*frozen" "inspect --tensors lists the frozen tensor"
run inspect IN --json
expect_rc 0 "inspect --json"
# 20000 parameters -> 2 layers -> 4 + 12*2 = 28 tensors (libckpt/synth.c).
check "inspect --json world_size is 3" test "$(json_field world_size)" = 3
check "inspect --json zero_stage is 3" test "$(json_field zero_stage)" = 3
check "inspect --json tensor_count is 28" test "$(json_field tensor_count)" = 28
check "inspect --json tag is global_step250" test "$(json_field tag)" = global_step250
check "inspect --json step is 250" test "$(json_field step)" = 250
check "inspect --json train_dtype is fp16" test "$(json_field train_dtype)" = fp16
run inspect IN/global_step250 --json
expect_rc 0 "inspect of a tag directory"
check "inspect of a tag directory finds the tag" test "$(json_field tag)" = global_step250

# --------------------------------------------------------------------------------
section "-t TAG"

run inspect ck -t global_step100
expect_rc 0 "inspect -t global_step100"
expect_in out "^tag +global_step100" "inspect -t global_step100 shows that tag"
run consolidate ck -t global_step100 -o tagged.safetensors -q
expect_rc 0 "consolidate -t global_step100"
run verify ck -t global_step100
expect_rc 0 "verify -t global_step100"
run inspect ck -t nosuch
expect_rc 2 "inspect -t nosuch"
expect_in err "nosuch" "inspect -t nosuch names the tag"
run consolidate ck -t nosuch -o nosuch.safetensors -q
expect_rc 2 "consolidate -t nosuch"
expect_absent nosuch.safetensors "consolidate -t nosuch creates nothing"
run verify ck -t nosuch
expect_rc 2 "verify -t nosuch"
# A tag is a directory name, never a path: '../IN/global_step250' would reach a real
# checkpoint if it were followed.
for c in inspect consolidate reshard verify; do
    case $c in
    consolidate) extra=(-o esc.safetensors) ;;
    reshard) extra=(--to 2 -o esc) ;;
    *) extra=() ;;
    esac
    run "$c" ck -t ../IN/global_step250 "${extra[@]}"
    # A bad tag from the user is a usage error (3), for every command.
    case $RC in
    3) ok ;;
    *) bad "$c -t ../IN/global_step250: exit $RC, expected 3 (usage error)" ;;
    esac
    expect_in err "is not a safe name" "$c -t ../IN/global_step250 says the tag is not a plain name"
done
expect_absent esc.safetensors "a refused tag creates no output"
expect_absent esc "a refused tag creates no output"
# The same rule for the tag named by 'latest'.
cp -r ck evil_latest
printf '../IN/global_step250\n' >evil_latest/latest
run consolidate evil_latest -o evil.safetensors -q
expect_rc 1 "consolidate of a root whose 'latest' is a path"
expect_in err "is not a safe name" "a path in 'latest' is refused"
# 'latest' with surrounding white space still works (DeepSpeed writers add none, but
# hand-edited files do).
cp -r ck ws_latest
printf '  global_step100\n\n' >ws_latest/latest
run inspect ws_latest
expect_rc 0 "inspect of a root whose 'latest' has white space"

# --------------------------------------------------------------------------------
echo "== DeepSpeed checkpoints (fixtures written by DeepSpeed 0.14.5)"
FIX="$(cd "$(dirname "$0")/.." && pwd)/fixtures/deepspeed"
for fx in z1_ws2_bf16 z2_ws4_fp32 z3_ws2_bf16; do
    run inspect "$FIX/$fx/ckpt"
    expect_rc 0 "inspect of DeepSpeed fixture $fx"
    expect_in out "format       deepspeed" "inspect says the format of $fx"
    run verify "$FIX/$fx/ckpt"
    expect_rc 0 "verify of DeepSpeed fixture $fx"
    run consolidate "$FIX/$fx/ckpt" -o "ds_$fx.safetensors" -q
    expect_rc 0 "consolidate of DeepSpeed fixture $fx"
    run reshard "$FIX/$fx/ckpt" --to 3 -o "ds_$fx.native" -q
    expect_rc 0 "reshard of DeepSpeed fixture $fx to a native checkpoint"
    run verify "ds_$fx.native"
    expect_rc 0 "verify of the native checkpoint resharded from $fx"
done
cp -r "$FIX/z2_ws4_fp32/ckpt" ds_damaged
rm ds_damaged/global_step3/zero_pp_rank_2_mp_rank_00_optim_states.pt
run consolidate ds_damaged -o ds_damaged.safetensors -q
expect_rc 1 "consolidate of a DeepSpeed checkpoint missing a rank file"
expect_in err "rank 2 is missing" "the missing DeepSpeed rank is named"


echo "== writing DeepSpeed's format"
run reshard --help
expect_in out "--format F" "reshard --help documents --format"
run synth --help
expect_in out "--format F" "synth --help documents --format"
run reshard "$FIX/z2_ws4_fp32/ckpt" --to 3 --format torch -o ds_badfmt -q
expect_rc 3 "reshard --format with an unknown format is a usage error"
expect_in err "native, deepspeed or universal" "the usage error names the formats"
[ ! -e ds_badfmt ] && ok "nothing written for a bad --format" || bad "ds_badfmt was created"
run reshard "$FIX/z3_ws2_bf16/ckpt" --to 3 --format deepspeed -o ds_z3_to3 -q
expect_rc 0 "reshard of a stage-3 DeepSpeed checkpoint to 3 ranks in DeepSpeed's format"
for r in 0 1 2; do
    [ -f ds_z3_to3/global_step3/bf16_zero_pp_rank_${r}_mp_rank_00_optim_states.pt ] &&
    [ -f ds_z3_to3/global_step3/zero_pp_rank_${r}_mp_rank_00_model_states.pt ] &&
        ok "rank $r's DeepSpeed files are there" || bad "rank $r's DeepSpeed files are missing"
done
[ "$(cat ds_z3_to3/latest)" = global_step3 ] && ok "latest names the tag" || bad "latest is '$(cat ds_z3_to3/latest)'"
run verify ds_z3_to3
expect_rc 0 "verify of the DeepSpeed files we wrote"
run consolidate ds_z3_to3 -o ds_z3_to3.safetensors -q
expect_rc 0 "consolidate of the DeepSpeed files we wrote"
cmp -s ds_z3_to3.safetensors ds_z3_ws2_bf16.safetensors && ok "same consolidated bytes as from the original" ||
    bad "consolidating the 3-rank DeepSpeed files gives other bytes"
run reshard "$FIX/z3_ws2_bf16/ckpt" --to 3 --format deepspeed --stage 2 -o ds_z3_stage2 -q
expect_rc 5 "reshard --format deepspeed refuses to change a DeepSpeed checkpoint's stage"
expect_in err "keeps the ZeRO stage" "the refusal says why"
[ ! -e ds_z3_stage2 ] && ok "nothing written for the refused stage change" || bad "ds_z3_stage2 was created"
run reshard "$FIX/z3_ws2_bf16/ckpt" --to 2 --format deepspeed -o ds_z3_to3 -q
expect_rc 4 "reshard --format deepspeed refuses to overwrite an existing output"
run synth --format deepspeed -o ds_synth --params 200k --world-size 2 --stage 2 -q
expect_rc 0 "synth --format deepspeed"
run inspect ds_synth
expect_in out "format       deepspeed" "inspect sees DeepSpeed files from synth"
run synth --format deepspeed -o ds_synth0 --params 200k --world-size 2 --stage 0 -q
expect_rc 0 "synth --format deepspeed at stage 0 (ZeRO-0: one model-states file holding the optimizer)"
[ "$(ls ds_synth0/global_step100)" = "mp_rank_00_model_states.pt" ] && ok "ZeRO-0 writes one file" ||
    bad "ZeRO-0 files: $(ls ds_synth0/global_step100 | tr '\n' ' ')"
run inspect ds_synth0
expect_in out "zero stage   0" "inspect reads the ZeRO-0 files back as stage 0"
run verify ds_synth0
expect_rc 0 "verify the ZeRO-0 files"
run synth -o nat_synth0 --params 200k --world-size 2 --stage 0 -q
run consolidate ds_synth0 -o ds_synth0.safetensors --dtype fp32 -q
run consolidate nat_synth0 -o nat_synth0.safetensors --dtype fp32 -q
cmp -s ds_synth0.safetensors nat_synth0.safetensors && ok "ZeRO-0 DeepSpeed files consolidate to the same bytes as native" ||
    bad "ZeRO-0 DeepSpeed consolidate differs from the native one"
run reshard ds_synth0 --format universal -o ds_synth0_uni -q
expect_rc 5 "universal output from a ZeRO-0 DeepSpeed checkpoint is refused as unsupported"
expect_in err "ZeRO-0" "the refusal names ZeRO-0"
[ ! -e ds_synth0_uni ] && ok "nothing written for the refused universal output" || bad "ds_synth0_uni was created"

# --------------------------------------------------------------------------------
cli_finish
