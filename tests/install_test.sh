#!/usr/bin/env bash
# Installs the built project into a scratch prefix and builds two consumers against
# it, the ways a user would: with pkg-config and with find_package(dsckpt). Each
# consumer opens nothing but calls into libdsckpt.so (status names, dtype parsing,
# synth + verify of a small checkpoint) and must run.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -u
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
check() { if "$@" >"$tmp/log" 2>&1; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $*"; cat "$tmp/log"; fi; }

check cmake --install "$build" --prefix "$tmp/prefix"
check test -f "$tmp/prefix/include/dsckpt.h"
cat >"$tmp/consumer.c" <<'C'
#include <dsckpt.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    dsckpt_dtype d;
    if (dsckpt_dtype_parse("bf16", &d) != DSCKPT_OK || d != DSCKPT_BF16) return 1;
    if (strcmp(dsckpt_status_name(DSCKPT_ECORRUPT), "ECORRUPT")) return 1;
    dsckpt_synth_opts o;
    dsckpt_synth_opts_init(&o);
    o.params = 5000;
    if (dsckpt_synth(argv[1], &o) != DSCKPT_OK) { fprintf(stderr, "%s\n", dsckpt_last_error()); return 1; }
    dsckpt_verify_report *r;
    if (dsckpt_verify(argv[1], NULL, NULL, &r) != DSCKPT_OK) return 1;
    int ok = dsckpt_verify_report_result(r) == DSCKPT_VERIFY_OK;
    dsckpt_verify_report_free(r);
    (void)argc;
    return ok ? 0 : 1;
}
C
# 1. pkg-config
libdir=$(ls -d "$tmp/prefix"/lib*/pkgconfig | head -1)
export PKG_CONFIG_PATH="$libdir"
check sh -c "cc -o '$tmp/c1' '$tmp/consumer.c' \$(pkg-config --cflags --libs dsckpt) -Wl,-rpath,'$(dirname "$libdir")'"
check "$tmp/c1" "$tmp/ck1"
# 2. find_package
mkdir -p "$tmp/proj"
cp "$tmp/consumer.c" "$tmp/proj/"
cat >"$tmp/proj/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.20)
project(consumer C)
find_package(dsckpt REQUIRED)
add_executable(consumer consumer.c)
target_link_libraries(consumer PRIVATE dsckpt::dsckpt)
CM
check cmake -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_RPATH="$(dirname "$libdir")"
check cmake --build "$tmp/proj/build"
check "$tmp/proj/build/consumer" "$tmp/ck2"
# The installed CLI finds libdsckpt.so through its RPATH ($ORIGIN/../lib), with
# no LD_LIBRARY_PATH, and its new commands run against it.
check sh -c "readelf -d '$tmp/prefix/bin/dsckpt' | grep -E 'R(UN)?PATH' | grep -qF '\$ORIGIN/../'"
check sh -c "ldd '$tmp/prefix/bin/dsckpt' | grep 'libdsckpt.so' | grep -qF '$tmp/prefix/'"
check env -u LD_LIBRARY_PATH "$tmp/prefix/bin/dsckpt" version
check env -u LD_LIBRARY_PATH "$tmp/prefix/bin/dsckpt" list "$tmp/ck1"
check env -u LD_LIBRARY_PATH "$tmp/prefix/bin/dsckpt" estimate --params 7B --world-size 8 --stage 3
check env -u LD_LIBRARY_PATH "$tmp/prefix/bin/dsckpt" diff "$tmp/ck1" "$tmp/ck1" -q
# Only the public API is exported from the shared library.
check sh -c "! nm -D --defined-only '$(dirname "$libdir")'/libdsckpt.so | awk '{print \$3}' | grep -v '^dsckpt_' | grep -q ."
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
