/*
 * util.c — small helpers of the command line: parameter counts with units, the
 * nearest option name for a typo, human-readable sizes.
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool parse_count(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0)) return false;
    static const struct { const char *suf; double mul; } units[] = {
        {"", 1}, {"K", 1e3}, {"M", 1e6}, {"B", 1e9}, {"G", 1e9}, {"T", 1e12},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcasecmp(end, units[i].suf) == 0) {
            double r = v * units[i].mul;
            if (r < 1 || r > 1e18) return false;
            *out = (uint64_t)(r + 0.5);
            return true;
        }
    return false;
}

/* Edit distance (insertions, deletions, substitutions), capped operands. */
static int distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 63 || m > 63) return 1000;
    int prev[64], cur[64];
    for (size_t j = 0; j <= m; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (m + 1) * sizeof *prev);
    }
    return prev[m];
}

const char *nearest_option(const char *given, const char *const *names, int n) {
    /* Compare without leading dashes and with '_' as '-' (DeepSpeed / HF spellings). */
    char g[64];
    while (*given == '-') given++;
    size_t k = 0;
    for (; given[k] && given[k] != '=' && k < sizeof g - 1; k++) g[k] = given[k] == '_' ? '-' : given[k];
    g[k] = '\0';
    if (!k) return NULL;
    const char *best = NULL;
    int bd = 1000;
    for (int i = 0; i < n; i++) {
        int d = distance(g, names[i]);
        /* A prefix or containment counts as close too ("exclude" -> "exclude-frozen"). */
        if (d > 0 && (strstr(names[i], g) == names[i] || strstr(g, names[i]))) d = 1;
        if (d < bd) {
            bd = d;
            best = names[i];
        }
    }
    size_t len = strlen(g);
    int limit = len <= 4 ? 1 : len <= 8 ? 2 : 3;
    return bd <= limit ? best : NULL;
}

const char *fmt_bytes(uint64_t b, char *buf, int n) {
    if (b >= 1000000000000ull) snprintf(buf, (size_t)n, "%.2f TB", (double)b / 1e12);
    else if (b >= 1000000000ull) snprintf(buf, (size_t)n, "%.2f GB", (double)b / 1e9);
    else if (b >= 1000000ull) snprintf(buf, (size_t)n, "%.1f MB", (double)b / 1e6);
    else if (b >= 1000ull) snprintf(buf, (size_t)n, "%.1f KB", (double)b / 1e3);
    else snprintf(buf, (size_t)n, "%llu B", (unsigned long long)b);
    return buf;
}

int bad_option(const char *cmd, const struct option *lo, char **argv) {
    const char *tok = optind > 0 ? argv[optind - 1] : "";
    if (optopt) {
        /* A known option without its value, or an unknown short one. */
        const char *name = NULL;
        for (const struct option *o = lo; o && o->name; o++)
            if (o->val == optopt && o->has_arg == required_argument) name = o->name;
        if (name) fprintf(stderr, "%s %s: option '--%s' needs a value\n", prog, cmd, name);
        else fprintf(stderr, "%s %s: unknown option '-%c'\n", prog, cmd, optopt >= 0x20 && optopt < 0x7f ? optopt : '?');
    } else {
        const char *names[128];
        int n = 0;
        for (const struct option *o = lo; o && o->name && n < 128; o++) names[n++] = o->name;
        const char *near = nearest_option(tok, names, n);
        size_t len = strcspn(tok, "=");
        fprintf(stderr, "%s %s: unknown option '%.*s'", prog, cmd, (int)len, tok);
        if (near) fprintf(stderr, "; did you mean '--%s'?", near);
        fputc('\n', stderr);
    }
    fprintf(stderr, "Try '%s %s --help'.\n", prog, cmd);
    return EXIT_USAGE;
}
