#!/usr/bin/env bash
# Fails on any #include that goes up or sideways across the layers (docs/DESIGN.md):
#
#   common/  <  formats/  <  libckpt/  <  runtime/, cli/        kernels/: depends on nothing
#
# A layer may include its own headers and those of the layers below it; dsckpt.h
# (libckpt/include, the public API: status codes, dtypes) is visible to all but
# kernels/. cli/ uses libckpt only through dsckpt.h. runtime/ uses libckpt only
# through the headers in RT_LIBCKPT below. Quoted includes are resolved by name
# against the layers' directories (header names are unique across them); system
# includes (<...>) are not checked. tests/, bench/ and fuzz harnesses are white-box
# and not checked.
# Usage: scripts/check-includes.sh [SOURCE_DIR]
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"

# The libckpt headers runtime/ may include: its internal API, nothing else.
RT_LIBCKPT="dsckpt_internal.h"

layer_of_dir() {
    case "$1" in
    common) echo common ;;
    formats) echo formats ;;
    kernels | kernels/cuda) echo kernels ;;
    libckpt/include) echo public ;;
    libckpt) echo libckpt ;;
    runtime | runtime/*) echo runtime ;;
    cli) echo cli ;;
    *) echo "" ;;
    esac
}

allowed() { # allowed FROM_LAYER TO_LAYER HEADER
    case "$1:$2" in
    "$1:$1") return 0 ;;
    common:public | formats:common | formats:public) return 0 ;;
    libckpt:common | libckpt:formats | libckpt:kernels | libckpt:public) return 0 ;;
    runtime:common | runtime:kernels | runtime:public) return 0 ;;
    runtime:libckpt) [[ " $RT_LIBCKPT " == *" $3 "* ]] ;;
    cli:public) return 0 ;;
    *) return 1 ;;
    esac
}

dirs="common formats kernels kernels/cuda libckpt/include libckpt runtime runtime/cuda runtime/main cli"
declare -A where
for d in $dirs; do
    for h in "$d"/*.h "$d"/*.cuh; do
        [ -e "$h" ] || continue
        n=${h##*/}
        if [ -n "${where[$n]:-}" ]; then
            echo "check-includes: header name $n in both ${where[$n]} and $d" >&2
            exit 1
        fi
        where[$n]=$d
    done
done

bad=0
checked=0
for d in $dirs; do
    from=$(layer_of_dir "$d")
    for f in "$d"/*.c "$d"/*.h "$d"/*.cu "$d"/*.cuh; do
        [ -e "$f" ] || continue
        while IFS= read -r line; do
            lineno=${line%%:*}
            h=$(sed -E 's/^[0-9]+:[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]+)".*/\1/' <<<"$line")
            checked=$((checked + 1))
            target=${where[${h##*/}]:-}
            if [ -z "$target" ]; then
                echo "$f:$lineno: includes \"$h\", which is in none of the layers" >&2
                bad=$((bad + 1))
                continue
            fi
            to=$(layer_of_dir "$target")
            if ! allowed "$from" "$to" "${h##*/}"; then
                echo "$f:$lineno: $from/ may not include $target/${h##*/} ($to)" >&2
                bad=$((bad + 1))
            fi
        done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" || true)
    done
done
if [ "$bad" -ne 0 ]; then
    echo "check-includes: $bad include(s) across the layers" >&2
    exit 1
fi
echo "check-includes: $checked includes, none across the layers"
