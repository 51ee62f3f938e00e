# cli_lib.sh — sourced by the dsckpt command-line test scripts (tests/*_test.sh):
# the argument check, a scratch directory removed at exit, and the check helpers
# every script shares. Not executable on its own.
#
#   . "$(dirname "$0")/cli_lib.sh"
#   cli_init NAME "$@"       # DS, SRC_DIR, BIN_DIR, PY, T (scratch, the cwd), IO
#   run consolidate ...      # dsckpt; stdout -> $IO/out, stderr -> $IO/err, RC
#   expect_rc 0 "what"       # and expect_in / expect_not_in / has / present / absent
#   cli_finish               # "N passed, M failed"; the script's exit status
#
# IO is where run leaves its output ($T unless the script sets IO before run);
# RUN_TIMEOUT (seconds, unset by default) guards every run with timeout(1):
# exit 124 then means the command hung.

# cli_init NAME ARGS...: checks that ARGS is one executable dsckpt path, makes the
# scratch directory dsckpt-NAME.XXXXXX (removed at exit) and enters it.
cli_init() {
    local name=$1
    shift
    if [ $# -ne 1 ]; then
        echo "usage: $0 PATH/TO/dsckpt" >&2
        exit 2
    fi
    case "$1" in
    /*) DS="$1" ;;
    *) DS="$PWD/$1" ;;
    esac
    if [ ! -x "$DS" ] || ! command -v python3 >/dev/null 2>&1; then
        echo "FAIL: need an executable dsckpt ($DS) and python3" >&2
        echo "0 passed, 1 failed"
        exit 1
    fi
    BIN_DIR="$(dirname "$DS")"
    SRC_DIR="$(cd "$(dirname "$0")/.." && pwd)"
    PY=python3
    [ -x "$SRC_DIR/.venv/bin/python3" ] && PY="$SRC_DIR/.venv/bin/python3"
    T="$(mktemp -d -t "dsckpt-$name.XXXXXX")" || exit 1
    trap 'rm -rf "$T"' EXIT
    IO="$T"
    cd "$T" || exit 1
    PASS=0
    FAIL=0
    RC=0
}

ok() { PASS=$((PASS + 1)); }
bad() {
    FAIL=$((FAIL + 1))
    echo "FAIL: $*"
}
# show FILE: the first lines of FILE, indented, under a failure.
show() { sed 's/^/    /' "$1" | head -5; }

# run ARGS...: dsckpt with no standard input.
run() {
    if [ -n "${RUN_TIMEOUT:-}" ]; then
        timeout "$RUN_TIMEOUT" "$DS" "$@" >"$IO/out" 2>"$IO/err" </dev/null
    else
        "$DS" "$@" >"$IO/out" 2>"$IO/err" </dev/null
    fi
    RC=$?
}
# expect_rc RC DESC: the last run exited with RC.
expect_rc() {
    if [ "$RC" -eq "$1" ]; then ok; else
        bad "$2: exit $RC, expected $1"
        show "$IO/err"
    fi
}
# expect_in out|err|all ERE DESC: the last run's output matches ERE.
expect_in() {
    cat "$IO/out" "$IO/err" >"$IO/all"
    if grep -qE -e "$2" "$IO/$1"; then ok; else
        bad "$3: no /$2/ in std$1"
        show "$IO/$1"
    fi
}
# expect_not_in out|err|all ERE DESC: the last run's output does not match ERE.
expect_not_in() {
    cat "$IO/out" "$IO/err" >"$IO/all"
    if grep -qE -e "$2" "$IO/$1"; then
        bad "$3: /$2/ in std$1"
        show "$IO/$1"
    else ok; fi
}
# has FILE TEXT DESC: FILE contains TEXT (a fixed string).
has() {
    if grep -qF -- "$2" "$1"; then ok; else
        bad "$3: '$2' not in $1"
        show "$1"
    fi
}
present() { if [ -e "$1" ]; then ok; else bad "$2: $1 is missing"; fi; }
absent() { if [ ! -e "$1" ]; then ok; else bad "$2: $1 exists"; fi; }

# cli_finish: the summary line; the exit status of the script.
cli_finish() {
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ]
}
