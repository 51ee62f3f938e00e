/*
 * describe.c — a JSON description of an open checkpoint (what `dsckpt inspect`
 * shows): tags, latest, stage, world size, dtypes, tensors, bytes per state and per
 * rank, metrics, and the best checkpoint recorded in trainer_state.json.
 */
#include "ckpt.h"
#include "deepspeed.h"
#include "fsutil.h"
#include "hfjson.h"
#include "manifest.h"
#include "resolve.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Tags under the save root: complete checkpoints (ds_tag_classify). */
static void add_tags(cJSON *o, const char *root) {
    cJSON *arr = cJSON_AddArrayToObject(o, "tags");
    DIR *d = root ? opendir(root) : NULL;
    if (!arr || !d) {
        if (d) closedir(d);
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !ds_safe_name(e->d_name)) continue;
        char *dir = ds_join(root, e->d_name);
        ds_tag_kind k = dir ? ds_tag_classify(dir) : DS_TAG_NONE;
        bool ok = k == DS_TAG_NATIVE || k == DS_TAG_DEEPSPEED;
        free(dir);
        if (!ok) continue;
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 16;
            char **p = realloc(names, nc * sizeof *p);
            if (!p) break;
            names = p;
            cap = nc;
        }
        if (!(names[n] = strdup(e->d_name))) break;
        n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        cJSON_AddItemToArray(arr, cJSON_CreateString(names[i]));
        free(names[i]);
    }
    free(names);
}

static void add_root_info(cJSON *o, const char *root) {
    if (!root) return;
    char *lp = ds_join(root, "latest"), *text = NULL;
    if (lp && ds_exists(lp) && ds_read_latest(lp, &text) == DSCKPT_OK) cJSON_AddStringToObject(o, "latest", text);
    free(text);
    free(lp);
    text = NULL;
    char *tp = ds_join(root, "trainer_state.json");
    cJSON *ts = NULL;
    if (tp && ds_exists(tp) && ds_json_read_strict(tp, DS_TRAINER_STATE_MAX, &ts) == DSCKPT_OK) {
        cJSON *best = cJSON_AddObjectToObject(o, "best");
        static const char *keys[] = {"best_metric", "best_model_checkpoint", "best_global_step", "global_step"};
        for (size_t i = 0; ts && best && i < sizeof keys / sizeof keys[0]; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(ts, keys[i]);
            if (v) cJSON_AddItemToObject(best, keys[i], cJSON_Duplicate(v, 1));
        }
        cJSON_Delete(ts);
    }
    free(text);
    free(tp);
}

dsckpt_status dsckpt_ckpt_describe_json(const dsckpt_ckpt *c, char **out_json) {
    ds_err_clear();
    cJSON *o = cJSON_CreateObject();
    if (!o) return ds_err(DSCKPT_ENOMEM, "out of memory");
    cJSON_AddStringToObject(o, "format", c->format ? c->format : "?");
    cJSON_AddStringToObject(o, "dir", c->dir);
    if (c->root) cJSON_AddStringToObject(o, "root", c->root);
    add_root_info(o, c->root);
    add_tags(o, c->root);
    cJSON_AddStringToObject(o, "tag", c->tag);
    cJSON_AddNumberToObject(o, "step", (double)c->step);
    cJSON_AddNumberToObject(o, "world_size", c->world_size);
    cJSON_AddNumberToObject(o, "zero_stage", c->stage);
    cJSON_AddStringToObject(o, "train_dtype", c->train_dtype);
    cJSON_AddNumberToObject(o, "param_groups", c->ngroups);
    uint64_t trainable = 0, frozen = 0;
    cJSON *dt = cJSON_CreateObject(), *tl = cJSON_CreateArray();
    uint64_t dcount[DSCKPT_DTYPE_COUNT] = {0};
    for (size_t i = 0; i < c->ntensors; i++) {
        const ds_tensor *t = &c->tensors[i];
        if (t->trainable) trainable += t->numel;
        else frozen += t->numel;
        dcount[t->dtype]++;
        cJSON *e = cJSON_CreateObject(), *sh = cJSON_CreateArray();
        cJSON_AddStringToObject(e, "name", t->name);
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
        cJSON_AddItemToObject(e, "shape", sh);
        cJSON_AddStringToObject(e, "dtype", dsckpt_dtype_name(t->dtype));
        cJSON_AddBoolToObject(e, "trainable", t->trainable);
        if (t->trainable) cJSON_AddNumberToObject(e, "group", t->group);
        if (t->naliases) {
            cJSON *al = cJSON_AddArrayToObject(e, "aliases");
            for (size_t a = 0; a < t->naliases; a++) cJSON_AddItemToArray(al, cJSON_CreateString(t->aliases[a]));
        }
        cJSON_AddItemToArray(tl, e);
    }
    for (int d = 0; d < DSCKPT_DTYPE_COUNT; d++)
        if (dcount[d]) cJSON_AddNumberToObject(dt, dsckpt_dtype_name((dsckpt_dtype)d), (double)dcount[d]);
    cJSON_AddNumberToObject(o, "tensor_count", (double)c->ntensors);
    cJSON_AddNumberToObject(o, "param_count", (double)(trainable + frozen));
    cJSON_AddNumberToObject(o, "trainable_params", (double)trainable);
    cJSON_AddNumberToObject(o, "frozen_params", (double)frozen);
    cJSON_AddItemToObject(o, "tensor_dtypes", dt);
    cJSON *bs = cJSON_AddObjectToObject(o, "bytes_per_state");
    uint64_t *per_file = calloc(c->nfiles ? c->nfiles : 1, sizeof *per_file);
    for (int s = 0; s < DS_NSTATES; s++) {
        uint64_t b = 0;
        for (size_t k = 0; k < c->nfrags[s]; k++) {
            uint64_t fb = c->frags[s][k].numel * dsckpt_dtype_size(c->frags[s][k].dtype);
            b += fb;
            if (per_file) per_file[c->frags[s][k].file] += fb;
        }
        if (c->nfrags[s]) cJSON_AddNumberToObject(bs, ds_state_names[s], (double)b);
    }
    cJSON *files = cJSON_AddArrayToObject(o, "files");
    for (size_t i = 0; i < c->nfiles; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", c->files[i].name);
        cJSON_AddNumberToObject(e, "rank", c->files[i].rank);
        cJSON_AddNumberToObject(e, "size", (double)c->files[i].size);
        if (c->files[i].compressed) { /* size is the raw size; this is on disk */
            cJSON_AddStringToObject(e, "compression", "zstd");
            cJSON_AddNumberToObject(e, "stored_size", (double)c->files[i].stored_size);
        }
        if (per_file) cJSON_AddNumberToObject(e, "state_bytes", (double)per_file[i]);
        cJSON_AddItemToArray(files, e);
    }
    free(per_file);
    const cJSON *m = c->manifest ? cJSON_GetObjectItemCaseSensitive(c->manifest, "metrics") : NULL;
    cJSON_AddItemToObject(o, "metrics", m ? cJSON_Duplicate(m, 1) : cJSON_CreateObject());
    cJSON_AddItemToObject(o, "tensors", tl);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return ds_err(DSCKPT_ENOMEM, "out of memory describing the checkpoint");
    *out_json = text;
    return DSCKPT_OK;
}
