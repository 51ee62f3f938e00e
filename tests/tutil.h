/*
 * tutil.h — small helpers shared by the CUnit test programs: scratch directories,
 * whole-file reads and writes, bit flips, and a main() driver.
 */
#ifndef DSCKPT_TUTIL_H
#define DSCKPT_TUTIL_H

#include <CUnit/Basic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* A fresh scratch directory under $TMPDIR (or /tmp), removed by tu_rmtree(). The
 * returned string is malloc'd. */
char *tu_mkdtemp(void);
void tu_rmtree(const char *path);
/* malloc'd "a/b" */
char *tu_path(const char *dir, const char *name);
/* Reads a whole file (malloc'd, *len set); NULL if it cannot. */
uint8_t *tu_read(const char *path, size_t *len);
int tu_write(const char *path, const void *data, size_t len);
/* Whether both files can be read and hold the same bytes. */
bool tu_same_file(const char *a, const char *b);
int tu_exists(const char *path);
/* Flips bit `bit` of byte `offset`. 0 on success. */
int tu_flip_bit(const char *path, uint64_t offset, int bit);
int tu_truncate(const char *path, uint64_t size);
/* Path of a file in the source tree (DSCKPT_SOURCE_DIR env, set by ctest). */
char *tu_src_path(const char *rel);

typedef struct tu_test {
    const char *name;
    void (*fn)(void);
} tu_test;

/* Runs one suite of tests; returns the process exit code (0 = all passed). */
int tu_main(const char *suite, const tu_test *tests);

#define TU_ASSERT_OK(expr)                                                              \
    do {                                                                                \
        dsckpt_status tu_st_ = (expr);                                                  \
        if (tu_st_ != DSCKPT_OK)                                                        \
            fprintf(stderr, "\n  %s -> %s: %s\n", #expr, dsckpt_status_name(tu_st_),    \
                    dsckpt_last_error());                                               \
        CU_ASSERT_EQUAL_FATAL(tu_st_, DSCKPT_OK);                                       \
    } while (0)

#endif
