#!/usr/bin/env bash
# crash_trials.sh — crash consistency of dstrain's checkpoints: N kill trials
# (default 40) on a 2-rank job that saves every step (async), cycling through
#   rank:     one rank (chosen at random) gets SIGKILL
#   job:      the launcher and every rank get SIGKILL at once
#   launcher: only the launcher (mpirun) gets SIGKILL
# each at a random moment after the first commit. After each kill it counts:
#   corrupt latest   `latest` missing, not a tag, or naming no complete checkpoint
#   failed verify    `dsckpt verify` of the save root (the tag `latest` names)
#   failed resume    `dstrain --resume auto` (which then saves twice) exits non-zero
#   temporaries      `.*.tmp-*` files or manifest-less global_step dirs left in the
#                    save root after that resumed run's saves
# and that every rank of the killed job is gone within 1 s. Victims come from the
# job's own process tree (the launcher's children). Not part of ctest (minutes).
# Usage: bash bench/crash_trials.sh [TRIALS] [BUILD_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
N=${1:-40}
B=$(cd "${2:-build}" && pwd)
SRC=$PWD
DATA=$SRC/fixtures/corpus/licenses.txt
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
cat >z1.json <<'JSON'
{"train_batch_size": 12, "train_micro_batch_size_per_gpu": 6, "bf16": {"enabled": true},
 "optimizer": {"type": "AdamW", "params": {"lr": 0.003}}, "zero_optimization": {"stage": 1}}
JSON
MODEL=(--n_layer 2 --n_head 2 --n_embd 64 --seq_len 32 --eval_windows 2)
children() { # the child processes of $1
    local p=$1 f line rest
    for f in /proc/[0-9]*/stat; do
        line=$(cat "$f" 2>/dev/null) || continue
        rest=${line##*) }
        set -- $rest
        [ "${2:-}" = "$p" ] && echo "${line%% *}"
    done
}
alive() {
    local line st
    line=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${line##*) }
    st=${st%% *}
    [ "$st" != Z ] && [ "$st" != X ]
}
corrupt=0 badverify=0 badresume=0 temps=0 slow=0 nocommit=0
declare -A kinds=()
for t in $(seq "$N"); do
    case $((t % 3)) in 1) kind=rank ;; 2) kind=job ;; 0) kind=launcher ;; esac
    kinds[$kind]=$((${kinds[$kind]:-0} + 1))
    rm -rf run
    "$B/dsrun" --num_procs 2 "$B/dstrain" --deepspeed z1.json --data "$DATA" "${MODEL[@]}" --max_steps 1000000 \
        --save_dir run --save_steps 1 >job.out 2>&1 &
    L=$!
    for _ in $(seq 1800); do [ -s run/latest ] && break; sleep 0.1; done
    if [ ! -s run/latest ]; then nocommit=$((nocommit + 1)); kill -KILL "$L"; wait "$L"; continue; fi
    sleep "$(awk -v t="$t" 'BEGIN{srand(t * 104729); printf "%.3f", 1.5 * rand()}')"
    ranks=($(children "$L"))
    case $kind in
    rank) kill -KILL "${ranks[$((RANDOM % ${#ranks[@]}))]}" ;;
    job) kill -KILL "$L" "${ranks[@]}" ;;
    launcher) kill -KILL "$L" ;;
    esac
    wait "$L" 2>/dev/null
    gone=0
    for _ in $(seq 10); do
        gone=1
        for r in "${ranks[@]}"; do alive "$r" && gone=0; done
        [ $gone = 1 ] && break
        sleep 0.1
    done
    [ $gone = 1 ] || { slow=$((slow + 1)); echo "trial $t ($kind): ranks alive 1 s after the kill"; for r in "${ranks[@]}"; do kill -KILL "$r" 2>/dev/null; done; }
    tag=$(cat run/latest 2>/dev/null)
    case $tag in global_step[0-9]*) [ -f "run/$tag/manifest.json" ] || tag= ;; *) tag= ;; esac
    if [ -z "$tag" ]; then corrupt=$((corrupt + 1)); echo "trial $t ($kind): corrupt latest"; continue; fi
    "$B/dsckpt" verify run >verify.out 2>&1 || { badverify=$((badverify + 1)); echo "trial $t ($kind): verify: $(tail -2 verify.out)"; }
    if ! "$B/dsrun" --num_procs 2 "$B/dstrain" --deepspeed z1.json --data "$DATA" "${MODEL[@]}" \
        --max_steps $((${tag#global_step} + 2)) --save_dir run --save_steps 1 --resume auto >resume.out 2>&1; then
        badresume=$((badresume + 1))
        echo "trial $t ($kind): resume failed: $(grep -v '^\[' resume.out | head -8)"
        continue
    fi
    left=$(find run -name '.*.tmp-*' | wc -l)
    for d in run/global_step*; do [ -f "$d/manifest.json" ] || [ ! -d "$d" ] || left=$((left + 1)); done
    [ "$left" -eq 0 ] || { temps=$((temps + 1)); echo "trial $t ($kind): left behind: $(find run -name '.*.tmp-*'; ls run)"; }
done
echo "trials: $N (rank ${kinds[rank]:-0}, job ${kinds[job]:-0}, launcher ${kinds[launcher]:-0}); no commit before the kill: $nocommit"
echo "corrupt latest: $corrupt; failed verify: $badverify; failed resume: $badresume; temporaries left after the next save: $temps; ranks alive 1 s after the kill: $slow"
[ $((corrupt + badverify + badresume + temps + slow + nocommit)) -eq 0 ]
