#!/usr/bin/env bash
# cli_integrity_test.sh — corruption is never passed on, nothing is left behind,
# --force never deletes what dsckpt did not write, verify names every tag:
#  - a flipped byte in a rank file: consolidate and reshard exit 1 naming the file
#    and chunk, and write nothing; --no-verify reads it anyway;
#  - a DeepSpeed .pt whose tensor member fails its CRC-32: consolidate exits 1;
#  - SIGINT / SIGTERM in the middle of consolidate (and SIGTERM mid-reshard): exit
#    130 / 143, no temporaries;
#  - temporaries of a dead pid are removed by the next run writing there, those of
#    a live pid are kept;
#  - --force into a directory holding a foreign file: exit 4, the file kept;
#  - verify SAVE_ROOT with a corrupt tag that is not `latest`: exit 1, the tag named.
#
# Usage: tests/cli_integrity_test.sh PATH/TO/dsckpt
set -u

. "$(dirname "$0")/cli_lib.sh"
cli_init integrity "$@"

# Temporaries (".X.tmp-PID-N" / ".X.old-PID-N") anywhere under $1.
no_temps() {
    local n
    n=$(find "$1" -name '.*.tmp-*' -o -name '.*.old-*' | wc -l)
    if [ "$n" -eq 0 ]; then ok; else
        bad "$2: $n temporaries left"
        find "$1" -name '.*.tmp-*' -o -name '.*.old-*' | sed 's/^/    /' | head -5
    fi
}

# flip FILE OFFSET: inverts one byte in place.
flip() {
    python3 - "$1" "$2" <<'EOF'
import sys
p, off = sys.argv[1], int(sys.argv[2])
with open(p, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0xFF]))
EOF
}
# Byte offset of the middle of the fp32 master weights in rank file 0 (what
# consolidate reads), from the manifest's fragment map.
fp32_offset() {
    python3 - "$1" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
f = [x for x in m["fragments"]["fp32"] if x[3] == 0]
f.sort(key=lambda x: -x[2])
print(f[0][4] + f[0][2] * 2)
EOF
}

# ---- a flipped byte in a rank file ----
run synth -o ck --params 400000 --world-size 2 --stage 2 -q
expect_rc 0 "synth"
TAGDIR=ck/global_step100
cp -r ck ck-good
OFF=$(fp32_offset "$TAGDIR/manifest.json")
flip "$TAGDIR/rank_00000.safetensors" "$OFF"
run consolidate ck -o out.safetensors -q
expect_rc 1 "consolidate of a rank file with a flipped byte"
expect_in err "rank_00000.safetensors: chunk [0-9]+ .*SHA-256 mismatch" "consolidate names file and chunk"
absent out.safetensors "consolidate of damaged data"
no_temps . "consolidate of damaged data"
run consolidate ck -o outdir -q
expect_rc 1 "consolidate (directory output) of a rank file with a flipped byte"
absent outdir "consolidate (directory output) of damaged data"
run reshard ck --to 1 -o rs -q
expect_rc 1 "reshard of a rank file with a flipped byte"
expect_in err "rank_00000.safetensors: chunk [0-9]+ .*SHA-256 mismatch" "reshard names file and chunk"
absent rs "reshard of damaged data"
run reshard ck --to 3 --stage 3 -o rs -q
expect_rc 1 "reshard to stage 3 of damaged data"
absent rs "reshard to stage 3 of damaged data"
no_temps . "reshard of damaged data"
# The escape hatch.
run consolidate ck -o nv.safetensors --no-verify -q
expect_rc 0 "consolidate --no-verify of damaged data"
present nv.safetensors "consolidate --no-verify"
run reshard ck --to 1 -o rs-nv --no-verify -q
expect_rc 0 "reshard --no-verify of damaged data"
# Intact data still goes through.
run consolidate ck-good -o good.safetensors -q
expect_rc 0 "consolidate of an intact checkpoint"
run reshard ck-good --to 3 -o rs-good -q
expect_rc 0 "reshard of an intact checkpoint"

# ---- a DeepSpeed file whose tensor member fails its CRC-32 ----
FIX="$SRC_DIR/fixtures/deepspeed/z1_ws2_bf16/ckpt"
if [ -d "$FIX" ]; then
    cp -r "$FIX" dsck
    PT=$(ls dsck/*/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt | head -1)
    # One byte in the middle of every tensor member (fp32 partition, moments).
    python3 - "$PT" <<'EOF'
import struct, sys, zipfile
p = sys.argv[1]
z = zipfile.ZipFile(p)
with open(p, "r+b") as f:
    for m in z.infolist():
        if "/data/" not in m.filename or m.file_size < 1024:
            continue
        f.seek(m.header_offset); h = f.read(30)
        n, e = struct.unpack("<HH", h[26:30])
        off = m.header_offset + 30 + n + e + m.file_size // 2
        f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0xFF]))
EOF
    run consolidate dsck -o ds.safetensors -q
    expect_rc 1 "consolidate of a DeepSpeed file with a bad member CRC-32"
    expect_in err "optim_states.pt: member '.*': CRC-32 mismatch" "the member is named"
    absent ds.safetensors "consolidate of a bad DeepSpeed member"
    run reshard dsck --to 1 --format deepspeed -o dsrs -q
    expect_rc 1 "reshard --format deepspeed of a bad DeepSpeed member"
    absent dsrs "reshard of a bad DeepSpeed member"
    run consolidate dsck -o ds.safetensors --no-verify -q
    expect_rc 0 "consolidate --no-verify of a bad DeepSpeed member"
    no_temps . "DeepSpeed damage"
else
    bad "fixture $FIX is missing"
fi

# ---- SIGINT / SIGTERM mid-consolidate ----
# A checkpoint big enough that consolidate runs for a while on one thread. The
# command is stopped (SIGSTOP) as soon as its temporary exists, so the signal
# surely arrives mid-run; then SIGINT/SIGTERM and SIGCONT. If it finished before
# the stop (a very fast machine), the trial is repeated on a bigger checkpoint.
run synth -o big --params 30M --world-size 2 --stage 2 -q
expect_rc 0 "synth of the big checkpoint"
sig_trial() { # SIGNAL EXPECTED_RC
    local sig=$1 want=$2 tries pid rc i
    for tries in 1 2 3; do
        rm -rf sigout
        mkdir sigout
        "$DS" consolidate big -o sigout/model.safetensors -j 1 --dtype fp32 -q 2>"$T/err" &
        pid=$!
        for ((i = 0; i < 20000; i++)); do # bounded poll on the temporary's appearance
            compgen -G "sigout/.model.safetensors.tmp-$pid-*" >/dev/null && break
            kill -0 "$pid" 2>/dev/null || break
        done
        kill -STOP "$pid" 2>/dev/null
        if compgen -G "sigout/.model.safetensors.tmp-$pid-*" >/dev/null; then
            kill -"$sig" "$pid"
            kill -CONT "$pid"
            wait "$pid"
            rc=$?
            if [ "$rc" -eq "$want" ]; then ok; else bad "consolidate stopped by SIG$sig: exit $rc, expected $want"; fi
            absent sigout/model.safetensors "consolidate stopped by SIG$sig"
            no_temps sigout "consolidate stopped by SIG$sig"
            return
        fi
        kill -CONT "$pid" 2>/dev/null
        wait "$pid"
    done
    bad "consolidate finished before it could be signalled (3 tries)"
}
sig_trial INT 130
sig_trial TERM 143
# reshard: its workers each stream a whole rank file; they stop at the next write.
rs_sig_trial() {
    local tries pid rc i
    for tries in 1 2 3; do
        rm -rf rsig
        "$DS" reshard big --to 3 -o rsig -j 1 -q 2>"$T/err" &
        pid=$!
        for ((i = 0; i < 20000; i++)); do
            compgen -G ".rsig.tmp-$pid-*/global_step100/.rank_*" >/dev/null && break
            kill -0 "$pid" 2>/dev/null || break
        done
        kill -STOP "$pid" 2>/dev/null
        if compgen -G ".rsig.tmp-$pid-*" >/dev/null; then
            kill -TERM "$pid"
            kill -CONT "$pid"
            wait "$pid"
            rc=$?
            if [ "$rc" -eq 143 ]; then ok; else bad "reshard stopped by SIGTERM: exit $rc, expected 143"; fi
            absent rsig "reshard stopped by SIGTERM"
            no_temps . "reshard stopped by SIGTERM"
            return
        fi
        kill -CONT "$pid" 2>/dev/null
        wait "$pid"
    done
    bad "reshard finished before it could be signalled (3 tries)"
}
rs_sig_trial

# ---- stale temporaries ----
true &
DEAD=$!
wait "$DEAD"
if kill -0 "$DEAD" 2>/dev/null; then bad "pid $DEAD still alive"; fi
LIVE=$$
mkdir st
printf x >"st/.m.safetensors.tmp-$DEAD-0"
printf x >"st/.m.safetensors.tmp-$LIVE-0"
printf x >"st/.other.safetensors.tmp-$DEAD-0" # another output's: not ours to judge
printf x >"st/.m.safetensors.tmp-${DEAD}x-0"  # not our pattern exactly
run consolidate ck-good -o st/m.safetensors -q
expect_rc 0 "consolidate beside stale temporaries"
absent "st/.m.safetensors.tmp-$DEAD-0" "a dead pid's temporary"
present "st/.m.safetensors.tmp-$LIVE-0" "a live pid's temporary"
present "st/.other.safetensors.tmp-$DEAD-0" "another output's temporary"
present "st/.m.safetensors.tmp-${DEAD}x-0" "a name outside the pattern"
mkdir -p "st/.rs.tmp-$DEAD-3/global_step100" "st/.rs.tmp-$LIVE-3"
printf x >"st/.rs.tmp-$DEAD-3/global_step100/rank_00000.safetensors"
run reshard ck-good --to 1 -o st/rs -q
expect_rc 0 "reshard beside stale temporaries"
absent "st/.rs.tmp-$DEAD-3" "a dead pid's temporary directory"
present "st/.rs.tmp-$LIVE-3" "a live pid's temporary directory"
rm -rf st

# ---- --force never deletes foreign files ----
run reshard ck-good --to 1 -o fr -q
expect_rc 0 "reshard into fr"
printf 'mine' >fr/notes.txt
run reshard ck-good --to 2 -o fr --force -q
expect_rc 4 "reshard --force into a save root holding a foreign file"
expect_in err "notes.txt" "the foreign file is named"
present fr/notes.txt "the foreign file after a refused --force"
present fr/global_step100/manifest.json "the old output after a refused --force"
rm -f fr/notes.txt
printf 'mine' >fr/global_step100/notes.txt
run reshard ck-good --to 2 -o fr --force -q
expect_rc 4 "reshard --force into a tag directory holding a foreign file"
present fr/global_step100/notes.txt "a foreign file in a tag directory"
rm -f fr/global_step100/notes.txt
run reshard ck-good --to 2 -o fr --force -q
expect_rc 0 "reshard --force over its own output"
# A manifest with two "files" keys: the first (which cJSON would read) lists a foreign
# file, the last (which Python's json keeps) does not. Which files are ours would depend
# on the reader, so --force refuses.
printf 'mine' >fr/global_step100/notes.txt
sed -i '0,/"files"[[:space:]]*:/s//"files": [{"name": "notes.txt"}], "files":/' fr/global_step100/manifest.json
run reshard ck-good --to 1 -o fr --force -q
expect_rc 4 "reshard --force into a tag whose manifest holds duplicate keys"
expect_in err "duplicate keys" "the duplicate keys are named"
present fr/global_step100/notes.txt "a file listed only by a duplicate manifest key"
rm -rf fr/global_step100/notes.txt
run consolidate ck-good -o hf -q
expect_rc 0 "consolidate into hf"
printf 'mine' >hf/README.md
run consolidate ck-good -o hf --force -q
expect_rc 4 "consolidate --force into a directory holding a foreign file"
present hf/README.md "the foreign file beside a consolidate output"
rm -f hf/README.md
run consolidate ck-good -o hf --force -q
expect_rc 0 "consolidate --force over its own output"
mkdir plain
printf 'mine' >plain/data.bin
run synth -o plain --params 20000 --force -q
expect_rc 4 "synth --force into an unrelated directory"
present plain/data.bin "an unrelated directory after synth --force"
no_temps . "refused --force"

# ---- verify SAVE_ROOT checks every tag ----
run synth -o multi --params 20000 --world-size 2 --step 100 -q
run synth -o m2 --params 20000 --world-size 2 --step 200 -q
mv m2/global_step200 multi/
printf global_step200 >multi/latest
run verify multi -q
expect_rc 0 "verify of a save root with two intact tags"
flip multi/global_step100/rank_00001.safetensors 200
run verify multi
expect_rc 1 "verify of a save root whose non-latest tag is corrupt"
expect_in out "^tag global_step100: corrupt" "the corrupt tag is named with its verdict"
expect_in out "^tag global_step200: ok" "the intact tag is named with its verdict"
expect_in out "global_step100: rank_00001.safetensors: chunk 0" "the problem names the tag and chunk"
run verify multi --json
expect_rc 1 "verify --json of the save root"
if python3 - "$T/out" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
t = {x["tag"]: x["result"] for x in d["tags"]}
sys.exit(0 if t == {"global_step100": "corrupt", "global_step200": "ok"} and d["result"] == "corrupt" else 1)
EOF
then ok; else bad "verify --json tags: $(cat "$T/out")"; fi
run verify multi --tag global_step200
expect_rc 0 "verify --tag of the intact tag"

cli_finish
