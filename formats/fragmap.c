/*
 * fragmap.c — the fragment map records: state names, tensor copies (fragmap.h).
 */
#include "fragmap.h"

#include <stdlib.h>
#include <string.h>

const char *const ds_state_names[DS_NSTATES] = {"fp32", "exp_avg", "exp_avg_sq", "w16"};

int ds_state_parse(const char *s) {
    for (int i = 0; i < DS_NSTATES; i++)
        if (s && strcmp(s, ds_state_names[i]) == 0) return i;
    return -1;
}

void ds_tensor_clear(ds_tensor *t) {
    if (!t) return;
    free(t->name);
    for (size_t a = 0; a < t->naliases; a++) free(t->aliases[a]);
    free(t->aliases);
    memset(t, 0, sizeof *t);
}

dsckpt_status ds_tensor_copy(ds_tensor *dst, const ds_tensor *src) {
    *dst = *src;
    dst->name = NULL;
    dst->aliases = NULL;
    dst->naliases = 0;
    dst->name = ds_strdup(src->name);
    if (!dst->name) return DSCKPT_ENOMEM;
    if (src->naliases) {
        DS_TRY(ds_calloc(src->naliases, sizeof *dst->aliases, &dst->aliases));
        for (size_t a = 0; a < src->naliases; a++) {
            dst->aliases[a] = ds_strdup(src->aliases[a]);
            if (!dst->aliases[a]) return DSCKPT_ENOMEM;
            dst->naliases = a + 1;
        }
    }
    return DSCKPT_OK;
}

void ds_files_free(ds_file *files, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(files[i].name);
        free(files[i].path);
        ds_digests_clear(&files[i].dg);
        free(files[i].zc);
    }
    free(files);
}
