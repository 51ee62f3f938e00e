/*
 * trainer.c — trainer_state.json, best tracking and checkpoint rotation (see trainer.h).
 */
#include "trainer.h"

#include "dsckpt_internal.h"
#include "fsutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

dsckpt_status rt_tstate_load(const char *save_dir, rt_tstate *ts) {
    ts->root = NULL;
    ts->steps_per_epoch = 0;
    char *p = ds_join(save_dir, "trainer_state.json");
    if (!p) return DSCKPT_ENOMEM;
    dsckpt_status st = DSCKPT_OK;
    if (ds_exists(p)) {
        char *text = NULL;
        size_t len = 0;
        st = ds_read_small_file(p, 256u << 20, &text, &len);
        if (!st) {
            ts->root = cJSON_ParseWithLength(text, len);
            if (!cJSON_IsObject(ts->root)) st = ds_err(DSCKPT_ECORRUPT, "%s is not a JSON object", p);
            else st = ds_json_unique_keys(ts->root, DSCKPT_ECORRUPT, p);
            /* dstrain records its best checkpoint as a tag; it is later opened and
             * kept from rotation by that name: a name, never a path. */
            const cJSON *b = st ? NULL : cJSON_GetObjectItemCaseSensitive(ts->root, "best_model_checkpoint");
            if (cJSON_IsString(b))
                st = ds_name_check(b->valuestring, strlen(b->valuestring), DSCKPT_ECORRUPT, p, "best_model_checkpoint");
            else if (b && !cJSON_IsNull(b))
                st = ds_err(DSCKPT_ECORRUPT, "%s: best_model_checkpoint is not a string", p);
            if (st) {
                cJSON_Delete(ts->root);
                ts->root = NULL;
            }
        }
        free(text);
    }
    if (!st && !ts->root) {
        ts->root = cJSON_CreateObject();
        cJSON_AddNullToObject(ts->root, "best_global_step");
        cJSON_AddNullToObject(ts->root, "best_metric");
        cJSON_AddNullToObject(ts->root, "best_model_checkpoint");
        cJSON_AddArrayToObject(ts->root, "log_history");
    }
    free(p);
    return st;
}

void rt_tstate_free(rt_tstate *ts) {
    cJSON_Delete(ts->root);
    ts->root = NULL;
}

static cJSON *history(rt_tstate *ts) {
    cJSON *h = cJSON_GetObjectItemCaseSensitive(ts->root, "log_history");
    if (!cJSON_IsArray(h)) {
        cJSON_DeleteItemFromObjectCaseSensitive(ts->root, "log_history");
        h = cJSON_AddArrayToObject(ts->root, "log_history");
    }
    return h;
}

static void set_num(cJSON *o, const char *k, double v) {
    cJSON *n = isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
    if (cJSON_GetObjectItemCaseSensitive(o, k)) cJSON_ReplaceItemInObjectCaseSensitive(o, k, n);
    else cJSON_AddItemToObject(o, k, n);
}

void rt_tstate_log_train(rt_tstate *ts, uint64_t step, double loss, double lr, double grad_norm) {
    cJSON *e = cJSON_CreateObject();
    set_num(e, "grad_norm", grad_norm);
    set_num(e, "learning_rate", lr);
    set_num(e, "loss", loss);
    set_num(e, "step", (double)step);
    if (ts->steps_per_epoch) set_num(e, "epoch", (double)step / (double)ts->steps_per_epoch);
    cJSON_AddItemToArray(history(ts), e);
}

void rt_tstate_log_eval(rt_tstate *ts, uint64_t step, const char *metric, double value) {
    cJSON *e = cJSON_CreateObject();
    set_num(e, metric, value);
    set_num(e, "step", (double)step);
    if (ts->steps_per_epoch) set_num(e, "epoch", (double)step / (double)ts->steps_per_epoch);
    cJSON_AddItemToArray(history(ts), e);
}

void rt_metric_name(const char *given, char *out, size_t n) {
    if (!given || !*given) given = "eval_loss";
    snprintf(out, n, "%s%s", strncmp(given, "eval_", 5) ? "eval_" : "", given);
}

bool rt_metric_greater_default(const char *metric) {
    size_t n = strlen(metric);
    return !(n >= 4 && !strcmp(metric + n - 4, "loss"));
}

bool rt_tstate_checkpoint(rt_tstate *ts, const char *tag, uint64_t step, double value, bool greater) {
    if (!isfinite(value)) return false;
    const cJSON *bm = cJSON_GetObjectItemCaseSensitive(ts->root, "best_metric");
    bool better = !cJSON_IsNumber(bm) || (greater ? value > bm->valuedouble : value < bm->valuedouble);
    if (!better) return false;
    set_num(ts->root, "best_metric", value);
    set_num(ts->root, "best_global_step", (double)step);
    cJSON *s = cJSON_CreateString(tag);
    if (cJSON_GetObjectItemCaseSensitive(ts->root, "best_model_checkpoint"))
        cJSON_ReplaceItemInObjectCaseSensitive(ts->root, "best_model_checkpoint", s);
    else cJSON_AddItemToObject(ts->root, "best_model_checkpoint", s);
    return true;
}

const char *rt_tstate_best(const rt_tstate *ts) {
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(ts->root, "best_model_checkpoint");
    return cJSON_IsString(b) ? b->valuestring : NULL;
}

dsckpt_status rt_tstate_save(rt_tstate *ts, const char *save_dir, uint64_t global_step, uint64_t max_steps,
                             uint64_t eval_steps, uint64_t save_steps, uint64_t train_batch_size) {
    set_num(ts->root, "global_step", (double)global_step);
    set_num(ts->root, "max_steps", (double)max_steps);
    set_num(ts->root, "eval_steps", (double)eval_steps);
    set_num(ts->root, "save_steps", (double)save_steps);
    set_num(ts->root, "train_batch_size", (double)train_batch_size);
    if (ts->steps_per_epoch) {
        set_num(ts->root, "epoch", (double)global_step / (double)ts->steps_per_epoch);
        set_num(ts->root, "num_train_epochs", ceil((double)max_steps / (double)ts->steps_per_epoch));
    }
    if (!cJSON_GetObjectItemCaseSensitive(ts->root, "is_world_process_zero"))
        cJSON_AddTrueToObject(ts->root, "is_world_process_zero");
    char *text = cJSON_Print(ts->root);
    char *p = ds_join(save_dir, "trainer_state.json");
    dsckpt_status st = !text || !p ? ds_err(DSCKPT_ENOMEM, "out of memory") : ds_write_file_atomic(p, text, strlen(text));
    free(text);
    free(p);
    return st;
}

static long step_of(const char *name) {
    if (strncmp(name, "global_step", 11) || !name[11]) return -1;
    char *end;
    long v = strtol(name + 11, &end, 10);
    return *end || v < 0 ? -1 : v;
}

/* A complete native checkpoint (ds_tag_classify: its manifest exists). */
static bool complete(const char *save_dir, const char *tag) {
    char *d = ds_join(save_dir, tag);
    bool ok = d && ds_tag_classify(d) == DS_TAG_NATIVE;
    free(d);
    return ok;
}

static int cmp_newest(const void *a, const void *b) {
    long x = step_of(*(char *const *)a), y = step_of(*(char *const *)b);
    return x < y ? 1 : x > y ? -1 : 0;
}

dsckpt_status rt_list_checkpoints(const char *save_dir, char ***tags, size_t *n) {
    *tags = NULL;
    *n = 0;
    DIR *d = opendir(save_dir);
    if (!d) return DSCKPT_OK;
    char **v = NULL;
    size_t cnt = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (step_of(e->d_name) < 0 || !complete(save_dir, e->d_name)) continue;
        char **nv = realloc(v, (cnt + 1) * sizeof *v);
        if (!nv || !(nv[cnt] = ds_strdup(e->d_name))) {
            closedir(d);
            rt_free_list(nv ? nv : v, cnt);
            return ds_err(DSCKPT_ENOMEM, "out of memory");
        }
        v = nv;
        cnt++;
    }
    closedir(d);
    if (cnt) qsort(v, cnt, sizeof *v, cmp_newest); /* qsort(NULL, 0) is undefined */
    *tags = v;
    *n = cnt;
    return DSCKPT_OK;
}

void rt_free_list(char **tags, size_t n) {
    for (size_t i = 0; i < n; i++) free(tags[i]);
    free(tags);
}

dsckpt_status rt_rotate(const char *save_dir, uint64_t limit, const char *best, const char *keep, int *deleted) {
    if (deleted) *deleted = 0;
    if (!limit) return DSCKPT_OK;
    char **tags;
    size_t n;
    DS_TRY(rt_list_checkpoints(save_dir, &tags, &n));
    /* tags[0] is the newest complete checkpoint: only older ones may go. */
    for (size_t i = limit; i < n; i++) {
        if ((best && !strcmp(tags[i], best)) || (keep && !strcmp(tags[i], keep))) continue;
        char *p = ds_join(save_dir, tags[i]);
        if (!p) break;
        ds_rmtree(p);
        free(p);
        if (deleted) (*deleted)++;
    }
    rt_free_list(tags, n);
    return ds_fsync_dir(save_dir);
}
