/*
 * unknown.c — pickled objects outside the writer's allow-list (formats/pickle.h,
 * pk_global_allowed) in the files of a DeepSpeed or universal checkpoint: what
 * verify reports as unsafe, and what reshard --format deepspeed / universal
 * refuses to carry into an output. Nothing is ever evaluated: the pickles are read
 * into inert trees and walked.
 */
#include "unknown.h"

#include "ckpt.h"
#include "fsutil.h"
#include "pickle.h"
#include "zip.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UO_PKL_MAX (256u << 20) /* as the DeepSpeed reader's bound on data.pkl */
#define UO_MAX_LINES 20         /* objects listed in full; the count covers all */

void ds_unknown_list_free(ds_unknown_list *l) {
    if (!l) return;
    free(l->text);
    memset(l, 0, sizeof *l);
}

static void add_line(ds_unknown_list *l, const char *file, const char *module, const char *name, const char *path) {
    l->count++;
    if (l->oom) return;
    char line[900];
    int n = l->count <= UO_MAX_LINES
                ? snprintf(line, sizeof line, "%s%s: %s.%s at %s", l->len ? "; " : "", file, module, name, path)
            : l->count == UO_MAX_LINES + 1 ? snprintf(line, sizeof line, "; ...")
                                           : 0;
    if (n <= 0) return;
    size_t k = DS_MIN((size_t)n, sizeof line - 1);
    if (l->len + k + 1 > l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 512;
        while (nc < l->len + k + 1) nc *= 2;
        char *t = realloc(l->text, nc);
        if (!t) {
            l->oom = true;
            return;
        }
        l->text = t;
        l->cap = nc;
    }
    memcpy(l->text + l->len, line, k + 1);
    l->len += k;
}

typedef struct report_ctx {
    ds_unknown_list *l;
    const char *file;
} report_ctx;

static void on_unknown(void *u, const char *module, const char *name, const char *path) {
    report_ctx *r = u;
    add_line(r->l, r->file, module, name, path);
}

dsckpt_status ds_unknown_in_tree(pk_obj *root, const char *label, bool drop, ds_unknown_list *l) {
    report_ctx r = {.l = l, .file = label};
    size_t n = 0;
    dsckpt_status st = pk_screen(root, drop, on_unknown, &r, &n);
    if (l->oom) return ds_err(DSCKPT_ENOMEM, "out of memory listing unknown objects");
    return st;
}

dsckpt_status ds_unknown_in_file(const char *path, const char *label, ds_unknown_list *l) {
    int fd = -1;
    zip_archive *z = NULL;
    uint8_t *pkl = NULL;
    pk_doc *doc = NULL;
    pk_obj *root = NULL;
    dsckpt_status st = ds_open_read(path, &fd, NULL);
    if (!st) st = zip_open_fd(fd, path, &z);
    const zip_member *m = st ? NULL : zip_find_rel(z, "data.pkl");
    if (!st && !m) st = ds_err(DSCKPT_ECORRUPT, "%s: no data.pkl member", path);
    if (!st) st = zip_read_member(fd, z, m, UO_PKL_MAX, path, &pkl);
    if (!st) st = pk_parse(pkl, (size_t)m->size, path, NULL, &doc, &root);
    if (!st) st = ds_unknown_in_tree(root, label, false, l);
    pk_doc_free(doc);
    free(pkl);
    zip_free(z);
    if (fd >= 0) close(fd);
    return st;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

dsckpt_status ds_unknown_in_dir(const char *dir, ds_unknown_list *l) {
    /* Every *_states.pt of the tag (model and optimizer files), in name order, then
     * a universal checkpoint's zero/optimizer_state.pt. */
    DIR *d = opendir(dir);
    if (!d) return ds_err_errno(errno, "%s: cannot list directory", dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    dsckpt_status st = DSCKPT_OK;
    for (struct dirent *e; !st && (e = readdir(d));) {
        if (e->d_name[0] == '.' || !ends_with(e->d_name, "_states.pt") || !ds_safe_name(e->d_name)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                st = ds_err(DSCKPT_ENOMEM, "out of memory");
                break;
            }
            names = nn;
        }
        if (!(names[n] = ds_strdup(e->d_name))) st = DSCKPT_ENOMEM;
        else n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && !st; i++) {
        char *p = ds_join(dir, names[i]);
        st = p ? ds_unknown_in_file(p, names[i], l) : DSCKPT_ENOMEM;
        free(p);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    if (!st) {
        char *z = ds_join(dir, "zero"), *p = z ? ds_join(z, "optimizer_state.pt") : NULL;
        if (!p) st = DSCKPT_ENOMEM;
        else if (ds_exists(p)) st = ds_unknown_in_file(p, "zero/optimizer_state.pt", l);
        free(p);
        free(z);
    }
    return st;
}

dsckpt_status dsckpt_ckpt_unknown_objects(const dsckpt_ckpt *c, char **text_out, size_t *count_out) {
    ds_err_clear();
    if (!c || !text_out || !count_out) return ds_err(DSCKPT_EINVAL, "dsckpt_ckpt_unknown_objects: NULL argument");
    *text_out = NULL;
    *count_out = 0;
    if (!c->format || (strcmp(c->format, "deepspeed") && strcmp(c->format, "universal"))) return DSCKPT_OK;
    ds_unknown_list l = {0};
    dsckpt_status st = ds_unknown_in_dir(c->dir, &l);
    if (st) {
        ds_unknown_list_free(&l);
        return st;
    }
    *count_out = l.count;
    *text_out = l.text;
    return DSCKPT_OK;
}
