/*
 * summary.c — what a command wrote, read back from the output itself (so the
 * summary line and --json count what is on disk, not what was planned): the
 * tensors, parameters and files of consolidate's safetensors output, the size
 * of any output tree.
 */
#include "cli.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

uint64_t cli_du(const char *path, int depth) {
    struct stat sb;
    if (lstat(path, &sb)) return 0;
    if (S_ISREG(sb.st_mode)) return (uint64_t)sb.st_size;
    if (!S_ISDIR(sb.st_mode) || depth > 8) return 0;
    DIR *d = opendir(path);
    if (!d) return 0;
    uint64_t total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        size_t n = strlen(path) + strlen(e->d_name) + 2;
        char *p = malloc(n);
        if (!p) break;
        snprintf(p, n, "%s/%s", path, e->d_name);
        total += cli_du(p, depth + 1);
        free(p);
    }
    closedir(d);
    return total;
}

static dsckpt_status add_file(const char *path, const char *name, cli_written *w) {
    dsckpt_ckpt *c = NULL;
    DS_CLI_RET(dsckpt_source_open(path, NULL, &c));
    for (size_t i = 0; i < dsckpt_tensor_count(c); i++) {
        dsckpt_tensor_info t;
        if (dsckpt_tensor_get(c, i, &t) == DSCKPT_OK) {
            w->tensors++;
            w->params += t.numel;
        }
    }
    dsckpt_ckpt_free(c);
    w->files++;
    if (w->file_names) cJSON_AddItemToArray(w->file_names, cJSON_CreateString(name));
    return DSCKPT_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

dsckpt_status cli_written_safetensors(const char *out, cli_written *w) {
    size_t n = strlen(out);
    w->bytes = cli_du(out, 0);
    if (n >= 12 && !strcmp(out + n - 12, ".safetensors")) {
        const char *base = strrchr(out, '/');
        return add_file(out, base ? base + 1 : out, w);
    }
    DIR *d = opendir(out);
    if (!d) return DSCKPT_ENOENT;
    char **names = NULL;
    size_t k = 0, cap = 0;
    struct dirent *e;
    dsckpt_status st = DSCKPT_OK;
    while ((e = readdir(d))) {
        size_t m = strlen(e->d_name);
        if (m < 13 || strcmp(e->d_name + m - 12, ".safetensors") || e->d_name[0] == '.') continue;
        if (k == cap) {
            cap = cap ? 2 * cap : 8;
            char **v = realloc(names, cap * sizeof *v);
            if (!v) {
                st = DSCKPT_ENOMEM;
                break;
            }
            names = v;
        }
        if (!(names[k] = strdup(e->d_name))) {
            st = DSCKPT_ENOMEM;
            break;
        }
        k++;
    }
    closedir(d);
    if (k) qsort(names, k, sizeof *names, cmp_str);
    for (size_t i = 0; i < k; i++) {
        if (st == DSCKPT_OK) {
            size_t len = strlen(out) + strlen(names[i]) + 2;
            char *p = malloc(len);
            if (!p) st = DSCKPT_ENOMEM;
            else {
                snprintf(p, len, "%s/%s", out, names[i]);
                st = add_file(p, names[i], w);
                free(p);
            }
        }
        free(names[i]);
    }
    free(names);
    return st;
}
