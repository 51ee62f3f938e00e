# rt_lib.sh — sourced by dstrain's end-to-end test scripts (tests/rt_*_test.sh): the
# arguments, the programs, a scratch directory removed at exit (kept when KEEP is
# set; TMPDIR is inside it), and the pass/fail counters. Not executable on its own.
#
#   . "$(dirname "$0")/rt_lib.sh"
#   rt_init "$@"          # BUILD, SRC, DSTRAIN, DSRUN, DATA, PY, WORK (the cwd)
#   ... && ok || bad "what went wrong"
#   rt_finish [NAME]      # "[NAME: ]N passed, M failed"; the script's exit status

# rt_init BUILD_DIR SOURCE_DIR
rt_init() {
    if [ $# -ne 2 ]; then
        echo "usage: $0 BUILD_DIR SOURCE_DIR" >&2
        exit 2
    fi
    BUILD=$1
    SRC=$2
    DSTRAIN="$BUILD/dstrain"
    DSRUN="$BUILD/dsrun"
    DATA="$SRC/fixtures/corpus/licenses.txt"
    PY=${PYTHON3:-python3}
    WORK=$(mktemp -d) || exit 1
    trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
    cd "$WORK" || exit 1
    # Open MPI keeps a session directory per job under TMPDIR; a job the test kills
    # leaves its one behind, so it goes in WORK too.
    export TMPDIR="$WORK/tmp"
    mkdir -p "$TMPDIR" || exit 1
    PASS=0
    FAIL=0
}

ok() { PASS=$((PASS + 1)); }
bad() {
    FAIL=$((FAIL + 1))
    echo "FAIL: $*"
}

# rt_finish [NAME]: the summary line; returns non-zero when anything failed.
rt_finish() {
    echo "${1:+$1: }$PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ]
}
