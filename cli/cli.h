/*
 * cli.h — what the `dsckpt` commands share (defined in main.c): exit codes, the
 * error and usage printers, option-value parsers, signal handling. Each command
 * beyond the original five lives in its own file (list.c, diff.c, estimate.c)
 * and uses only dsckpt.h plus these.
 */
#ifndef DSCKPT_CLI_H
#define DSCKPT_CLI_H

#include "dsckpt.h"

#include <cjson/cJSON.h>

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

enum {
    EXIT_OKAY = 0,
    EXIT_CORRUPT = 1,
    EXIT_UNREADABLE = 2,
    EXIT_USAGE = 3,
    EXIT_EXISTS = 4,
    EXIT_UNSUPPORTED = 5,
    EXIT_INTERNAL = 70
};

extern const char *prog;           /* "dsckpt" */
extern const char exit_codes_help[];

int exit_for(dsckpt_status st);
/* Prints "dsckpt WHAT: error [STATUS]: message" and returns the exit code. */
int fail(dsckpt_status st, const char *what);
/* Prints "dsckpt CMD: <fmt with arg>" and a --help hint; returns EXIT_USAGE. */
int usage_error(const char *cmd, const char *fmt, const char *arg);
/* Bytes: "5GB", "500MB", "2GiB", "1e9", "123" (decimal units as Hugging Face uses). */
bool parse_size(const char *s, uint64_t *out);
/* A count of parameters: "7B", "1.5B", "350M", "125K", "7e9", "1000" (K = 1e3,
 * M = 1e6, B or G = 1e9, T = 1e12; util.c). */
bool parse_count(const char *s, uint64_t *out);
bool parse_int(const char *s, long lo, long hi, long *out);
/* --compress[=LEVEL] (arg NULL: DSCKPT_COMPRESS_DEFAULT_LEVEL); false unless 1..22. */
bool parse_compress(const char *arg, int *level);
void catch_stop_signals(void);
/* (util.c) For an unknown long option: the nearest of `names` (NULL if none is close). */
const char *nearest_option(const char *given, const char *const *names, int n);
/* After getopt_long returned '?' (run with opterr = 0): prints what was wrong
 * with argv[optind - 1] (unknown option, with the nearest of `lo` suggested;
 * missing value) and a --help hint; returns EXIT_USAGE. */
int bad_option(const char *cmd, const struct option *lo, char **argv);
/* Human-readable bytes ("1.23 GB", decimal) into buf. */
const char *fmt_bytes(uint64_t b, char *buf, int n);

/* (summary.c) Bytes of the regular files under path (symlinks not followed). */
uint64_t cli_du(const char *path, int depth);
/* What consolidate wrote at `out` (a .safetensors file or an HF directory),
 * counted from the files' headers. file_names (may be NULL) gets each name. */
typedef struct cli_written {
    size_t tensors, files;
    uint64_t params, bytes;
    struct cJSON *file_names;
} cli_written;
dsckpt_status cli_written_safetensors(const char *out, cli_written *w);

/* A macro's value as a string literal (for help texts). */
#define DS_STR_(x) #x
#define DS_STR(x) DS_STR_(x)

#define DS_CLI_RET(expr)                          \
    do {                                          \
        dsckpt_status ret_st_ = (expr);           \
        if (ret_st_ != DSCKPT_OK) return ret_st_; \
    } while (0)

int cmd_list(int argc, char **argv);
int cmd_estimate(int argc, char **argv);
int cmd_diff(int argc, char **argv);

#endif
