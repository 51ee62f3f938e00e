#!/usr/bin/env bash
# cli_ux_test.sh — the commands and options a DeepSpeed / Hugging Face user reaches
# for: `dsckpt list`, `dsckpt estimate` (DeepSpeed's memory formulas, expected
# numbers worked out by hand below), `dsckpt diff` (a reshard compares equal, a
# later checkpoint does not), progress output, --json summaries, option aliases
# and the nearest-option hint. Exit codes and the shape of every --json output
# are checked (parsed with python3's json module).
#
# Usage: tests/cli_ux_test.sh PATH/TO/dsckpt
# The last line is "N passed, M failed"; exits non-zero if any check failed.
set -u

. "$(dirname "$0")/cli_lib.sh"
cli_init ux-test "$@"

# jcheck DESCRIPTION PYTHON-EXPR: stdout parses as JSON (d) and EXPR is true.
jcheck() {
    if python3 - "$T/out" "$2" <<'EOF'; then ok; else bad "$1 (stdout: $(head -c 600 "$T/out" | tr '\n' ' '))"; fi
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2]) else 1)
EOF
}
section() { echo "== $*"; }

section setup
run synth -o a --params 300K --world-size 2 --stage 2 --seed 1 --step 100 -q
expect_rc 0 "synth with a K unit"
run synth -o later --params 300K --world-size 2 --stage 2 --seed 2 --step 101 -q
expect_rc 0 "synth of a one-step-later checkpoint (other seed)"
cp -r later/global_step101 a/ && mkdir a/global_step102 && printf x >a/global_step102/rank_00000.safetensors
mkdir a/logs

section list
run list a
expect_rc 0 "list a save root"
expect_in out '^global_step100 +100 +eval_loss=[0-9.]+ +best,latest +2 +2 +bf16 .*complete' "list row of the best/latest tag"
expect_in out '^global_step101 +101 .*complete' "list row of another tag"
expect_in out '^global_step102 +102 .*INCOMPLETE' "an unfinished save is listed as incomplete"
expect_in out 'global_step102: .*incomplete' "the reason is given"
expect_in out '3 checkpoints in a, 1 incomplete; best: global_step100' "list summary"
expect_not_in out 'logs' "a directory that is no checkpoint is not listed"
run list a --json
expect_rc 0 "list --json"
jcheck "list --json shape" 'd["best"] == "global_step100" and d["latest"] == "global_step100" and [t["name"] for t in d["tags"]] == ["global_step100", "global_step101", "global_step102"] and all(set(t) >= {"name","dir","format","complete","problem","step","world_size","zero_stage","train_dtype","param_count","bytes_on_disk","metric","latest","best"} for t in d["tags"])'
jcheck "list --json values" 'd["tags"][0]["complete"] is True and d["tags"][2]["complete"] is False and d["tags"][2]["problem"] and d["tags"][0]["metric"]["name"] == "eval_loss" and d["tags"][0]["world_size"] == 2 and d["tags"][0]["bytes_on_disk"] > 0 and d["tags"][2]["world_size"] is None'
run list "$SRC_DIR/fixtures/deepspeed-0.19/hf_trainer_z3/output" --json
expect_rc 0 "list a Hugging Face output_dir"
jcheck "output_dir: checkpoint-N entries, best and latest from trainer_state.json" '[t["name"] for t in d["tags"]] == ["checkpoint-4", "checkpoint-12"] and d["best"] == "checkpoint-4" and d["latest"] == "checkpoint-12" and d["tags"][0]["format"] == "deepspeed" and abs(d["tags"][0]["metric"]["value"] - 6.713221549987793) < 1e-9'
run list a/global_step100
expect_rc 0 "list a tag directory"
expect_in out '^1 checkpoint in' "one entry for a tag directory"
run list nowhere
expect_rc 2 "list of a missing path"
run list
expect_rc 3 "list without a path"
run list a --jsn
expect_rc 3 "list with a misspelt option"
expect_in err "did you mean '--json'" "the nearest option is suggested"

section estimate
# Expected figures from DeepSpeed's formulas (see cli/estimate.c), by hand:
# 7B, 8 GPUs on 1 node, stage 3, largest layer 131072000 (a 32000 x 4096 embedding), zero_init:
#   no offload:        gpu = 4*131072000 + int(18*7e9/8) = 524288000 + 15750000000 = 16274288000
#                      cpu = 131072000 * 4 * 8 * 1.5 = 6291456000
#   offload optimizer: gpu = 524288000 + int(2*7e9/8) = 2274288000; cpu = 7e9 * 16 * 1 * 1.5 = 168000000000
#   + offload param:   gpu = 524288000;                             cpu = 7e9 * 18 * 1 * 1.5 = 189000000000
run estimate --params 7B --world-size 8 --stage 3 --largest-layer 131072000 --json
expect_rc 0 "estimate 7B stage 3"
jcheck "7B stage 3, no offload" 'd["per_gpu_bytes"] == 16274288000 and d["per_node_cpu_bytes"] == 6291456000 and d["per_node_gpu_bytes"] == 8 * 16274288000 and d["formula"] == "estimate_zero3_model_states_mem_needs" and d["nodes"] == 1'
jcheck "7B: all six DeepSpeed rows" 'len(d["all_options"]) == 6 and {(r["offload_optimizer"], r["offload_param"], r["zero_init"], r["per_gpu_bytes"], r["per_node_cpu_bytes"]) for r in d["all_options"]} >= {(True, True, True, 524288000, 189000000000), (True, False, True, 2274288000, 168000000000), (False, False, True, 16274288000, 6291456000), (False, False, False, 16274288000, 7e9 * 4 * 8 * 1.5)}'
run estimate --params 7B --world-size 8 --stage 3 --largest-layer 131072000 --offload-optimizer --json
jcheck "7B offload optimizer" 'd["per_gpu_bytes"] == 2274288000 and d["per_node_cpu_bytes"] == 168000000000'
run estimate --params 7B --world-size 8 --stage 3 --largest-layer 131072000 --offload-optimizer --offload-param --json
jcheck "7B offload optimizer and params" 'd["per_gpu_bytes"] == 524288000 and d["per_node_cpu_bytes"] == 189000000000'
# 1.3B, 16 GPUs = 2 nodes x 8, stage 2 (ZeRO-2 formula):
#   no offload: gpu = 4*1.3e9 + int(16*1.3e9/16) = 5200000000 + 1300000000 = 6500000000; cpu = 1.3e9*4*8*1.5 = 62400000000
#   offload:    gpu = 2*1.3e9 = 2600000000; cpu = 1.3e9 * max(4*16, 16) * 1.5 = 124800000000
run estimate --params 1.3B --world-size 16 --gpus-per-node 8 --stage 2 --json
expect_rc 0 "estimate 1.3B stage 2"
jcheck "1.3B stage 2, 2 nodes" 'd["per_gpu_bytes"] == 6500000000 and d["per_node_cpu_bytes"] == 62400000000 and d["nodes"] == 2 and d["formula"] == "estimate_zero2_model_states_mem_needs"'
run estimate --params 1.3B --world-size 16 --gpus-per-node 8 --stage 2 --offload-optimizer --json
jcheck "1.3B stage 2, offload" 'd["per_gpu_bytes"] == 2600000000 and d["per_node_cpu_bytes"] == 124800000000'
# 350M, 4 GPUs, stage 1 (the ZeRO-2 formula): gpu = 4*350e6 + int(16*350e6/4) = 2800000000; cpu = 350e6*4*4*1.5 = 8400000000
# on disk: native 12 P = 4200000000; DeepSpeed 12 P + 2 P (bf16 module weights) = 4900000000; consolidated 2 P = 700000000
run estimate --params 350M --world-size 4 --stage 1 --json
expect_rc 0 "estimate 350M stage 1"
jcheck "350M stage 1" 'd["per_gpu_bytes"] == 2800000000 and d["per_node_cpu_bytes"] == 8400000000 and d["checkpoint_bytes"] == {"native": 4200000000, "deepspeed": 4900000000, "consolidated": 700000000}'
# 13B on 2 nodes x 8, stage 3, largest layer 325M, offload optimizer, no zero.Init:
#   gpu = 4*325e6 + int(2*13e9/16) = 1300000000 + 1625000000 = 2925000000; cpu = 13e9 * max(4*8, 16/2) * 1.5 = 624000000000
run estimate --params 13e9 --world-size 16 --gpus-per-node 8 --stage 3 --largest-layer 325M --offload-optimizer --no-zero-init --json
jcheck "13B stage 3 on 2 nodes without zero.Init" 'd["per_gpu_bytes"] == 2925000000 and d["per_node_cpu_bytes"] == 624000000000'
run estimate --params 7B --world-size 8 --stage 3
expect_rc 0 "estimate text"
expect_in out 'per GPU +14\.67 GiB' "text: per GPU in GiB as DeepSpeed prints it"
expect_in out 'largest layer: 0 parameters \(not given' "text: a missing largest layer is said"
run estimate a --world-size 16 --json
expect_rc 0 "estimate from a checkpoint"
P="$("$DS" inspect a --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["param_count"])')"
jcheck "checkpoint: its parameter count, stage and a 2-node layout" "d['params'] == $P and d['stage'] == 2 and d['world_size'] == 16 and d['nodes'] == 2 and d['largest_layer_params'] > 0"
SZ="$("$DS" list a --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tags"][0]["bytes_on_disk"])')"
jcheck "checkpoint size on disk within 5% of the estimate" "abs(d['checkpoint_bytes']['native'] - $SZ) < 0.05 * $SZ"
# --compress: the estimate from a sample of chunks against the stored size of the
# rank files `reshard --compress` writes from the same checkpoint. b holds 3 chunks
# of 4 MiB per Adam state and 1 is sampled (the middle one), so the estimate is
# extrapolated; the DeepSpeed fixture's values come from a real training run.
cmp_compressed() { # DESC CKPT OUT: estimate within 10% of OUT's rank files
    local act
    act="$(find "$3" -name 'rank_*.safetensors' -printf '%s\n' | awk '{s += $1} END {print s + 0}')"
    jcheck "$1: estimate within 10% of reshard --compress ($act bytes)" "$act > 0 and abs(d['compressed']['estimated_bytes'] - $act) < 0.10 * $act and d['compressed']['estimated_bytes'] < 0.95 * d['compressed']['raw_bytes']"
}
run synth -o b --params 3M --world-size 3 --stage 3 --seed 4 -q
expect_rc 0 "synth for --compress"
run reshard b --to 3 -o bz --compress -q
expect_rc 0 "reshard --compress"
run estimate b --compress --sample-chunks 1 --json
expect_rc 0 "estimate --compress --sample-chunks 1"
cmp_compressed "synth" b bz
jcheck "--compress --json: per state, sampled bytes said, an estimate" '(lambda c: set(c["states"]) == {"fp32", "exp_avg", "exp_avg_sq", "w16"} and c["estimate"] is True and c["level"] == 1 and c["states"]["fp32"]["chunks"] == 3 and c["states"]["fp32"]["sampled_chunks"] == 1 and 0 < c["sampled_bytes"] < c["raw_bytes"] and c["raw_bytes"] == sum(e["raw_bytes"] for e in c["states"].values()) and c["estimated_bytes"] == sum(e["estimated_bytes"] for e in c["states"].values()))(d["compressed"])'
run estimate b --compress
expect_rc 0 "estimate --compress text"
expect_in out 'an ESTIMATE from 10 of 10 chunks of 4 MiB compressed' "text: the sample is said"
expect_in out '^  exp_avg_sq +[0-9.]+ MB +[0-9.]+ MB +[0-9.]+x' "text: a row per state"
expect_in out '^  total ' "text: the total"
DSF="$SRC_DIR/fixtures/deepspeed-0.19/z1_ws2_bf16/ckpt"
run reshard "$DSF" --to 2 --format native -o dsz --compress -q
expect_rc 0 "reshard a DeepSpeed checkpoint --compress"
run estimate "$DSF" --compress --json
expect_rc 0 "estimate a DeepSpeed checkpoint --compress"
cmp_compressed "DeepSpeed 0.19 checkpoint" "$DSF" dsz
run estimate --params 7B --world-size 8 --compress
expect_rc 0 "estimate --params --compress"
expect_in out 'compressed size depends on the values.*estimate CKPT --compress' "--params --compress: no invented ratio, a pointer to CKPT"
expect_not_in out 'ESTIMATE from' "--params --compress: no figure"
run estimate --params 7B --world-size 8 --compress --json
jcheck "--params --compress --json: compressed is null, with the note" 'd["compressed"] is None and "depends on the values" in d["compressed_note"]'
run estimate b --compress=23
expect_rc 3 "--compress=23"
run estimate b --sample-chunks 4
expect_rc 3 "--sample-chunks without --compress"
run estimate --help
expect_in out 'compressed size depends on the values|depends on them' "--help says what --params --compress gives"
run estimate --params 7B --world-size 12 --gpus-per-node 8
expect_rc 3 "world size not a multiple of GPUs per node"
run estimate --params 7B --world-size 8 --stage 3 --offload-param
expect_rc 5 "offload_param without offload_optimizer: no DeepSpeed figure"
run estimate --params 7X --world-size 8
expect_rc 3 "a bad unit"
run estimate --world-size 8
expect_rc 3 "neither --params nor a checkpoint"
run estimate --params 7B --world-size 8 --offload-optimiser
expect_rc 3 "misspelt option"
expect_in err "did you mean '--offload-optimizer'" "estimate suggests the nearest option"

section diff
run reshard a --to 3 -o a3 -q
expect_rc 0 "reshard for diff"
run diff a a3
expect_rc 0 "a checkpoint and its reshard compare equal"
expect_in out 'equal \(0 differences\)' "diff says equal"
run diff a a3 --json
expect_rc 0 "diff --json equal"
jcheck "diff --json shape (equal)" 'd["equal"] is True and d["differences"] == 0 and d["mode"] == "all_states" and d["states_compared"] > 0 and d["added"] == [] and d["removed"] == [] and d["tensors"] == [] and d["non_tensor"] == [] and d["layout"]["world_size"] == {"a": 2, "b": 3}'
run diff a later
expect_rc 1 "a checkpoint and a later one differ"
expect_in out '^~ wte.weight fp32: [0-9]+ of [0-9]+ elements differ \(max abs' "per-state counts and maxima"
expect_in out '^state step: 100 -> 101' "the step difference"
expect_in out 'DIFFERENT' "diff says different"
run diff a later --json
expect_rc 1 "diff --json different"
jcheck "diff --json shape (different)" 'd["equal"] is False and len(d["tensors"]) > 0 and all(set(t) == {"name","state","numel","differing","max_abs","max_rel"} for t in d["tensors"]) and any(n["key"] == "step" and n["a"] == 100 and n["b"] == 101 for n in d["non_tensor"])'
run diff a later --atol 1 --json
expect_rc 1 "with a huge tolerance the tensors match but the state differs"
jcheck "--atol: no tensor differences left" 'd["tensors"] == [] and len(d["non_tensor"]) > 0'
run consolidate a -o w32.safetensors --dtype fp32 -q
run diff a w32.safetensors
expect_rc 0 "a checkpoint and its fp32 consolidation: equal weights"
expect_in out 'weights only' "weights mode is said"
run consolidate a -o w16.safetensors -q
run diff a w16.safetensors --json
expect_rc 1 "bf16 weights differ from the fp32 master"
jcheck "dtype changes are listed" 'd["mode"] == "weights" and len(d["dtype_changed"]) > 0 and len(d["tensors"]) > 0'
run diff a w16.safetensors --rtol 0.004 --json
expect_rc 0 "within bf16 rounding (relative 2^-8) the weights are equal"
jcheck "--rtol: no differing tensors, dtype changes still listed" 'd["equal"] and d["tensors"] == [] and len(d["dtype_changed"]) > 0'
run consolidate a -o nofrozen.safetensors --dtype fp32 --exclude-frozen -q
run diff a nofrozen.safetensors --json
expect_rc 1 "a frozen tensor left out"
jcheck "removed tensors are listed" 'd["removed"] == ["wpe.weight"]'
run diff nofrozen.safetensors w32.safetensors --json
expect_rc 1 "two files"
jcheck "added tensors are listed" 'd["added"] == ["wpe.weight"]'
run diff a -q
expect_rc 3 "diff with one path"
run diff a nowhere
expect_rc 2 "diff against a missing path"
run diff a later -q
expect_rc 1 "diff -q: exit code only"
if [ -s "$T/out" ]; then bad "diff -q printed: $(head -c 200 "$T/out")"; else ok; fi

section "progress and --json summaries"
# stderr is a file here, not a terminal: plain lines, every update with interval 0.
DSCKPT_PROGRESS_INTERVAL=0 "$DS" consolidate a -o p.safetensors >"$T/out" 2>"$T/err"
RC=$?
expect_rc 0 "consolidate with plain progress lines"
expect_in err '^consolidate: 100% .*syncing$' "100% then syncing, not a silent wait"
expect_not_in err $'\r' "no carriage returns when stderr is not a terminal"
expect_in err '^consolidated global_step100 -> p.safetensors: [0-9]+ tensors, [0-9]+ parameters as BF16, 1 file, .* GB/s\)$' "summary line"
# diff reports progress after every slice it compares (no timer involved).
DSCKPT_PROGRESS_INTERVAL=0 "$DS" diff a a3 >"$T/out" 2>"$T/err"
expect_in err '^diff: [0-9]+% \([0-9.]+ of [0-9.]+ GB\), [0-9]+ MB/s, [0-9:]+ elapsed, ETA [0-9:-]+$' "a plain progress line with elapsed and ETA"
"$DS" consolidate a -o p2.safetensors >"$T/out" 2>"$T/err"
expect_not_in err '^consolidate: ' "no progress lines for a run shorter than the interval"
DSCKPT_PROGRESS_INTERVAL=0 "$DS" synth -o psynth --params 200K >"$T/out" 2>"$T/err"
expect_in err '^synth: ' "synth shows progress"
expect_in err '^synth: 100% .*syncing$' "synth reaches 100% and says syncing"
# On a terminal (script(1) gives one): the bar with elapsed and ETA (or "syncing"),
# then its final figures; never wider than the terminal (a wrapped bar leaves a
# stale row behind at every redraw).
tty_rows() { # FILE: every row the terminal showed (split at \r and \n, \e[K removed)
    python3 -c 'import re,sys; raw=open(sys.argv[1],"rb").read().decode(); [print(re.sub(r"\x1b\[K","",s)) for l in raw.split("\n") for s in l.split("\r")]' "$1"
}
if command -v script >/dev/null; then
    script -qec "stty cols 50 rows 20; '$DS' consolidate a -o tty.safetensors" /dev/null >"$T/tty" 2>&1
    rc=$?
    tty_rows "$T/tty" >"$T/rows"
    if [ $rc -eq 0 ] && [ "$(grep -E '^consolidate +\[' "$T/rows" | awk 'length($0) > 49' | wc -l)" -eq 0 ] &&
        [ "$(grep -Ec '^consolidate +\[' "$T/rows")" -ge 1 ] && grep -Eq '^consolidate +\[=+\] 100%' "$T/rows"; then ok
    else bad "progress bar on a 50-column terminal (exit $rc): $(cat -v "$T/tty" | head -c 800)"; fi
    script -qec "stty cols 200 rows 20; '$DS' consolidate a -o tty2.safetensors" /dev/null >"$T/tty" 2>&1
    tty_rows "$T/tty" >"$T/rows"
    grep -Eq '^consolidate +\[[=> ]+\] +[0-9]+%  [0-9.]+/[0-9.]+ GB +[0-9]+ MB/s  [0-9:]+ elapsed  (ETA [0-9:-]+|syncing \(flush, fsync, rename\))$' "$T/rows" &&
        ok || bad "progress bar with elapsed and ETA or syncing on a wide terminal: $(cat -v "$T/tty" | head -c 800)"
else
    echo "note: script(1) is not installed: the terminal progress bar is not checked"
fi
DSCKPT_PROGRESS_INTERVAL=0 "$DS" consolidate a -o q.safetensors -q >"$T/out" 2>"$T/err"
expect_not_in err '^consolidate: ' "-q hides the progress"
expect_in err '^consolidated ' "-q keeps the summary line"
run consolidate a -o cj --json --exclude-frozen
expect_rc 0 "consolidate --json"
jcheck "consolidate --json: what was written" 'd["command"] == "consolidate" and d["files"] == ["model.safetensors"] and d["tensors"] > 0 and d["bytes"] > 0 and d["seconds"] >= 0 and "gb_per_s" in d and d["dtype"] == "BF16"'
NT="$("$DS" inspect a --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(1 for t in d["tensors"] if t["trainable"]))')"
jcheck "the summary counts the tensors written (frozen excluded)" "d['tensors'] == $NT"
run reshard a --to 4 -o rj --json
expect_rc 0 "reshard --json"
jcheck "reshard --json" 'd["command"] == "reshard" and d["world_size"] == 4 and d["from_world_size"] == 2 and d["files"] == 4 and d["bytes"] > 0 and d["format"] == "dsckpt" and "gb_per_s" in d'
cp -r a/global_step100 vc && python3 -c "
import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[-3]^=1; open(p,'wb').write(b)" vc/rank_00001.safetensors
touch vc/stray.bin
run verify vc --json
expect_rc 1 "verify --json on a damaged checkpoint"
jcheck "verify --json problems are objects (file, chunk, kind)" 'all(set(p) == {"file","chunk","kind","message"} for p in d["problems"]) and {"file": "rank_00001.safetensors", "chunk": 0, "kind": "checksum"}.items() <= [p for p in d["problems"] if p["kind"] == "checksum"][0].items() and any(p["kind"] == "stray_file" and p["file"] == "stray.bin" and p["chunk"] is None for p in d["problems"]) and "gb_per_s" in d'
run verify a3 --json
jcheck "verify --json intact" 'd["result"] == "ok" and d["problems"] == [] and d["bytes_hashed"] > 0'

section "aliases and smaller items"
run consolidate a -o al --exclude_frozen_parameters --max_shard_size 100KB --safe_serialization --json
expect_rc 0 "DeepSpeed / transformers spellings accepted"
jcheck "--max_shard_size and --exclude_frozen_parameters took effect" 'len(d["files"]) > 1 and d["tensors"] == '"$NT"
run consolidate a -o al2 --exclude-frozn
expect_rc 3 "misspelt consolidate option"
expect_in err "unknown option '--exclude-frozn'; did you mean '--exclude-frozen'" "consolidate suggests the nearest"
run reshard a --too 3
expect_rc 3 "misspelt reshard option"
expect_in err "did you mean '--to'" "reshard suggests the nearest"
run verify a --jsn
expect_in err "did you mean '--json'" "verify suggests the nearest"
run consolidate a -o pytorch_model.bin
expect_rc 3 "a pickle output name is refused"
expect_in err 'safetensors only' "and what is supported is said"
if [ -e pytorch_model.bin ]; then bad "pytorch_model.bin was created"; else ok; fi
run synth -o h16 --params 200K --dtype fp16 -q
run consolidate h16 -o h16.safetensors --json
jcheck "the default dtype follows the training dtype (fp16)" 'd["dtype"] == "F16"'
if python3 -c '
import json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n))
sys.exit(0 if {v["dtype"] for k, v in h.items() if k != "__metadata__"} == {"F16"} else 1)' "$T/h16.safetensors"; then ok; else bad "an fp16 run consolidates to fp16 only"; fi
run synth -o nodir/x --params 7B
expect_rc 2 "synth --params 7B is accepted (fails later: no such directory)"
expect_in err 'nodir/x' "the missing directory is named as given"
run synth -o y --params 7Q
expect_rc 3 "a bad parameter unit"
run consolidate a -o nodir/x.safetensors
expect_rc 2 "a missing output directory"
expect_in err 'nodir/x.safetensors: the parent directory does not exist' "reported by the user's name"
expect_not_in err '\.tmp-' "not by the temporary name"
run inspect a -q
expect_rc 0 "inspect -q"
expect_in out '^a: dsckpt global_step100, step 100, world size 2, stage 2, bf16, [0-9]+ tensors, [0-9]+ parameters$' "inspect -q: one line"
run inspect w32.safetensors --json
expect_rc 0 "inspect a .safetensors file"
jcheck "inspect of a file: format safetensors, tensors listed" 'd["format"] == "safetensors" and d["tensor_count"] > 0 and len(d["tensors"]) == d["tensor_count"]'
run consolidate w32.safetensors -o again.safetensors
expect_rc 3 "consolidate of a .safetensors file is not a checkpoint"
if grep -nE '^(dsckpt|dstrain|dsrun|\./)[^#]*\[--' "$SRC_DIR/README.md" >"$T/readme"; then
    bad "README copyable lines hold a literal [--option]: $(head -3 "$T/readme")"
else
    ok
fi

run reshard a --to 3 -o a3
expect_rc 4 "reshard onto an existing output"
expect_in err 'already exists .*; pass --force to replace it$' "the CLI adds its --force hint to the library's message"

cli_finish
