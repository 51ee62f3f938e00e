#!/usr/bin/env bash
# Fails on any function longer than 80 lines that does not say why it is one piece
# (issue 13): split it into named helpers, or, where a split would hurt (a flat
# dispatch with one short case per opcode, keys checked in schema order), put a
# comment containing "One piece: <why>" in the comment block directly above it.
#
# A function is what this codebase's layout makes it: a line at column 0 that
# starts the definition (a name and '(' , not a prototype ending in ';'), a
# signature that may go on over several lines and ends with '{', and a body that
# ends with '}' alone at column 0. Its length counts from the first signature line
# to the closing '}'. Tracked .c, .cu, .cuh and .h files are checked (every file
# when the tree is not a git checkout).
# Usage: scripts/check-long-functions.sh [DIR ...]   (directories of the source
# tree; default: all of them)
set -euo pipefail
cd "$(dirname "$0")/.."

MAX=80
DEFAULT_DIRS="common formats libckpt kernels runtime cli bench tests"
# Files left out of the check (none; kept for a file that lands long and is split
# later, with a comment saying which function and why).
EXCLUDE=""

dirs=("$@")
[ "${#dirs[@]}" -gt 0 ] || read -r -a dirs <<<"$DEFAULT_DIRS"
for d in "${dirs[@]}"; do
    if [ ! -d "$d" ]; then
        echo "check-long-functions: no directory $d" >&2
        exit 3
    fi
done

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files -- "${dirs[@]}" | grep -E '\.(c|cu|cuh|h)$' || true)
else
    mapfile -t files < <(find "${dirs[@]}" -type f \( -name '*.c' -o -name '*.cu' -o -name '*.cuh' -o -name '*.h' \) | sort)
fi
checked=()
for f in "${files[@]}"; do
    [[ " $EXCLUDE " == *" $f "* ]] || checked+=("$f")
done
if [ "${#checked[@]}" -eq 0 ]; then
    echo "check-long-functions: no source files under ${dirs[*]}" >&2
    exit 3
fi

# Prints "FILE:LINE: NAME N" for each function over MAX lines without the comment,
# then a last line "# FUNCTIONS LONG" with the counts of functions and long ones.
out=$(awk -v max="$MAX" '
function flush_comment() { comment = "" }
# The line without a trailing comment, so "f(void); /* why */" still ends in ";".
function code_of(s) {
    sub(/[ \t]*\/\*.*\*\/[ \t]*$/, "", s)
    sub(/[ \t]*\/\/.*$/, "", s)
    return s
}
FNR == 1 { state = 0; flush_comment() }
state == 0 {
    # A comment line directly above a definition (a blank line ends the block).
    if ($0 ~ /^[ \t]*(\/\*|\*|\/\/)/) { comment = comment "\n" $0; next }
    code = code_of($0)
    if (code ~ /^[^ \t#\/*}]/ && index(code, "(") && code !~ /;[ \t]*$/ && substr(code, 1, index(code, "(")) !~ /=/) {
        start = FNR
        head = $0
        gsub(/__launch_bounds__[ \t]*\([^)]*\)/, "", head)
        name = "?"
        if (match(head, /[A-Za-z_][A-Za-z0-9_]*[ \t]*\(/)) {
            name = substr(head, RSTART, RLENGTH)
            sub(/[ \t]*\($/, "", name)
        }
        above = comment
        state = 1
    } else {
        # A return type on a line of its own keeps the comment above it.
        if (code !~ /^[A-Za-z_][A-Za-z0-9_ \t*]*$/) flush_comment()
        next
    }
}
state == 1 {
    code = code_of($0)
    if (code ~ /\{[ \t]*$/) { state = 2; next }
    # A prototype, or a whole function on one line.
    if (code ~ /;[ \t]*$/ || (code ~ /\}[ \t]*$/ && index(code, "{"))) { state = 0; flush_comment() }
    next
}
state == 2 {
    if ($0 != "}") next
    n = FNR - start + 1
    nfun++
    if (n > max && index(above, "One piece:") == 0) {
        printf "%s:%d: %s %d\n", FILENAME, start, name, n
        nlong++
    }
    state = 0
    flush_comment()
}
END { printf "# %d %d\n", nfun, nlong }
' "${checked[@]}")

read -r _ nfun nlong <<<"$(tail -n 1 <<<"$out")"
while read -r where name n; do
    [ -n "$where" ] || continue
    echo "$where $name() is $n lines (over $MAX): split it into helpers, or say why it is one piece in a" \
        "comment containing \"One piece:\" directly above it" >&2
done <<<"$(sed '$d' <<<"$out")"
if [ "$nlong" -ne 0 ]; then
    echo "check-long-functions: $nlong function(s) over $MAX lines without a \"One piece:\" comment" >&2
    exit 1
fi
echo "check-long-functions: $nfun functions in ${#checked[@]} files, none over $MAX lines without a reason" \
    "${EXCLUDE:+(not checked for now: $EXCLUDE)}"
