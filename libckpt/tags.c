/*
 * tags.c — every checkpoint under a save root or a Hugging Face output_dir, with
 * what a user picks one by: step, metric, best and latest markers, world size,
 * stage, dtype, size on disk, and whether it is complete (dsckpt_tag_list_open).
 *
 * Names come from directory listings and from files (`latest`,
 * trainer_state.json): each is checked as one plain path component before it is
 * joined to a path, and only compared otherwise.
 */
#include "ckpt.h"
#include "deepspeed.h"
#include "fsutil.h"
#include "hfjson.h"
#include "manifest.h"
#include "resolve.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bounds on what a listing walks: entries per directory level and depth. */
#define MAX_ENTRIES 100000
#define MAX_DEPTH 8

typedef struct tag_ent {
    dsckpt_tag pub;
    char *name, *dir, *format, *problem, *train_dtype, *metric_name;
} tag_ent;

struct dsckpt_tag_list {
    tag_ent *v;
    size_t n, cap;
    long best, latest;
};

static void ent_free(tag_ent *e) {
    free(e->name);
    free(e->dir);
    free(e->format);
    free(e->problem);
    free(e->train_dtype);
    free(e->metric_name);
}

void dsckpt_tag_list_free(dsckpt_tag_list *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) ent_free(&l->v[i]);
    free(l->v);
    free(l);
}

size_t dsckpt_tag_list_count(const dsckpt_tag_list *l) { return l ? l->n : 0; }
const dsckpt_tag *dsckpt_tag_list_get(const dsckpt_tag_list *l, size_t i) {
    return l && i < l->n ? &l->v[i].pub : NULL;
}
long dsckpt_tag_list_best(const dsckpt_tag_list *l) { return l ? l->best : -1; }
long dsckpt_tag_list_latest(const dsckpt_tag_list *l) { return l ? l->latest : -1; }

/* Bytes of the regular files under `path` (symbolic links not followed). */
static uint64_t du(const char *path, int depth) {
    struct stat sb;
    if (lstat(path, &sb)) return 0;
    if (S_ISREG(sb.st_mode)) return (uint64_t)sb.st_size;
    if (!S_ISDIR(sb.st_mode) || depth > MAX_DEPTH) return 0;
    DIR *d = opendir(path);
    if (!d) return 0;
    uint64_t total = 0;
    size_t seen = 0;
    struct dirent *e;
    while ((e = readdir(d)) && seen++ < MAX_ENTRIES) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !ds_safe_name(e->d_name)) continue;
        char *p = ds_join(path, e->d_name);
        if (!p) break;
        total += du(p, depth + 1);
        free(p);
    }
    closedir(d);
    return total;
}

static bool has_file(const char *dir, const char *name) {
    char *p = ds_join(dir, name);
    bool ok = p && ds_exists(p);
    free(p);
    return ok;
}

/* A directory that holds a checkpoint, or the remains of a save that did not
 * finish: a manifest, DeepSpeed's files, or rank files / temporaries of either. */
static bool looks_like_tag(const char *dir) {
    if (has_file(dir, DS_MANIFEST_NAME) || ds_is_deepspeed_dir(dir) || ds_is_universal_dir(dir)) return true;
    DIR *d = opendir(dir);
    if (!d) return false;
    bool found = false;
    size_t seen = 0;
    struct dirent *e;
    while (!found && (e = readdir(d)) && seen++ < MAX_ENTRIES)
        found = !strncmp(e->d_name, "rank_", 5) || !strncmp(e->d_name, ".rank_", 6) ||
                !strncmp(e->d_name, "." DS_MANIFEST_NAME ".tmp-", strlen("." DS_MANIFEST_NAME ".tmp-")) ||
                strstr(e->d_name, "_model_states.pt") || strstr(e->d_name, "_optim_states.pt");
    closedir(d);
    return found;
}

/* Step from a name "global_step<N>" or "checkpoint-<N>"; -1 otherwise. */
static int64_t step_from_name(const char *name) {
    uint64_t n;
    if (ds_hf_checkpoint_name(name, &n)) return (int64_t)n;
    if (!strncmp(name, "global_step", 11) && name[11]) {
        const char *d = name + 11;
        int64_t v = 0;
        for (size_t i = 0; d[i]; i++) {
            if (d[i] < '0' || d[i] > '9' || i >= 18) return -1;
            v = v * 10 + (d[i] - '0');
        }
        return v;
    }
    return -1;
}

/* The contents of `dir`/latest, trimmed, as a plain name (NULL if none or bad). */
static char *read_latest(const char *dir) {
    char *p = ds_join(dir, "latest"), *text = NULL;
    if (!p) return NULL;
    if (!ds_exists(p) || ds_read_small_file(p, 4096, &text, NULL) != DSCKPT_OK) {
        free(p);
        ds_err_clear();
        return NULL;
    }
    free(p);
    char *s = text;
    while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == '\t')) s[--n] = '\0';
    char *out = ds_safe_name(s) ? ds_strdup(s) : NULL;
    free(text);
    return out;
}

static dsckpt_status push(dsckpt_tag_list *l, const char *name, const char *dir) {
    DS_TRY(ds_array_room(&l->v, &l->cap, l->n, sizeof *l->v));
    tag_ent *e = &l->v[l->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = ds_strdup(name)) || !(e->dir = ds_strdup(dir))) {
        ent_free(e);
        return ds_err(DSCKPT_ENOMEM, "out of memory");
    }
    l->n++;
    return DSCKPT_OK;
}

/* Opens entry e (as `root` + `tag`, or e->dir alone when root is NULL) and fills
 * what the checkpoint says about itself. A failure is recorded, not returned. */
static dsckpt_status fill_from_ckpt(tag_ent *e, const char *root, const char *tag) {
    e->pub.step = step_from_name(e->name);
    e->pub.zero_stage = -1;
    dsckpt_ckpt *c = NULL;
    dsckpt_status st = dsckpt_ckpt_open(root ? root : e->dir, tag, &c);
    if (st == DSCKPT_ENOMEM) return st;
    if (st) {
        const char *m = dsckpt_last_error();
        if (!(e->problem = ds_strdup(*m ? m : dsckpt_status_name(st)))) return DSCKPT_ENOMEM;
        ds_err_clear();
        return DSCKPT_OK;
    }
    dsckpt_info info;
    dsckpt_ckpt_info(c, &info);
    e->pub.complete = 1;
    e->pub.step = info.step;
    e->pub.world_size = info.world_size;
    e->pub.zero_stage = info.zero_stage;
    e->pub.param_count = info.param_count;
    if ((info.format && !(e->format = ds_strdup(info.format))) ||
        (info.train_dtype && !(e->train_dtype = ds_strdup(info.train_dtype)))) {
        dsckpt_ckpt_free(c);
        return DSCKPT_ENOMEM;
    }
    /* The metric the checkpoint was saved with (dstrain records it in the manifest). */
    const cJSON *m = c->manifest ? cJSON_GetObjectItemCaseSensitive(c->manifest, "metrics") : NULL;
    for (const cJSON *v = cJSON_IsObject(m) ? m->child : NULL; v; v = v->next)
        if (cJSON_IsNumber(v) && v->string && isfinite(v->valuedouble)) {
            e->pub.has_metric = 1;
            e->pub.metric = v->valuedouble;
            if (!(e->metric_name = ds_strdup(v->string))) st = DSCKPT_ENOMEM;
            break;
        }
    dsckpt_ckpt_free(c);
    return st;
}

static bool eval_metric_key(const char *k) {
    return !strncmp(k, "eval_", 5) && strcmp(k, "eval_runtime") && !strstr(k, "_per_second");
}

/* Metrics from trainer_state.json's log_history: for each entry without one, the
 * eval value logged at its step (the metric best_metric was taken from when that
 * can be told, else eval_loss, else the first eval_* key). */
static dsckpt_status metrics_from_state(dsckpt_tag_list *l, const cJSON *ts) {
    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(ts, "log_history");
    if (!cJSON_IsArray(hist)) return DSCKPT_OK;
    char key[256] = "";
    double bm, bs;
    if (ds_json_number(cJSON_GetObjectItemCaseSensitive(ts, "best_metric"), &bm) &&
        ds_json_number(cJSON_GetObjectItemCaseSensitive(ts, "best_global_step"), &bs))
        for (const cJSON *h = hist->child; h && !key[0]; h = h->next) {
            double s;
            if (!ds_json_number(cJSON_GetObjectItemCaseSensitive(h, "step"), &s) || s != bs) continue;
            for (const cJSON *v = h->child; v && !key[0]; v = v->next) {
                double mv;
                if (v->string && eval_metric_key(v->string) && ds_json_number(v, &mv) && mv == bm)
                    snprintf(key, sizeof key, "%s", v->string);
            }
        }
    for (size_t i = 0; i < l->n; i++) {
        tag_ent *e = &l->v[i];
        if (e->pub.has_metric || e->pub.step < 0) continue;
        for (const cJSON *h = hist->child; h; h = h->next) {
            double s;
            if (!cJSON_IsObject(h) || !ds_json_number(cJSON_GetObjectItemCaseSensitive(h, "step"), &s) ||
                s != (double)e->pub.step)
                continue;
            double mv = 0;
            const cJSON *pick = key[0] ? cJSON_GetObjectItemCaseSensitive(h, key) : NULL;
            if (!pick) pick = cJSON_GetObjectItemCaseSensitive(h, "eval_loss");
            for (const cJSON *v = h->child; !pick && v; v = v->next)
                if (v->string && eval_metric_key(v->string) && ds_json_number(v, &mv)) pick = v;
            if (pick && pick->string && ds_json_number(pick, &mv) && isfinite(mv)) {
                free(e->metric_name);
                if (!(e->metric_name = ds_strdup(pick->string))) return DSCKPT_ENOMEM;
                e->pub.has_metric = 1;
                e->pub.metric = mv; /* the last eval at that step wins */
            }
        }
    }
    return DSCKPT_OK;
}

/* best_model_checkpoint's last component, matched against the entries' names,
 * and the metrics the state logged. `state_dir` holds trainer_state.json. */
static dsckpt_status apply_trainer_state(dsckpt_tag_list *l, const char *state_dir) {
    char *p = ds_join(state_dir, "trainer_state.json");
    if (!p) return DSCKPT_ENOMEM;
    if (!ds_exists(p)) {
        free(p);
        return DSCKPT_OK;
    }
    cJSON *ts = NULL;
    dsckpt_status st = ds_json_read_strict(p, DS_TRAINER_STATE_MAX, &ts);
    free(p);
    if (st == DSCKPT_ENOMEM) return st;
    if (st || !cJSON_IsObject(ts)) { /* a damaged state file marks nothing; the tags still list */
        cJSON_Delete(ts);
        ds_err_clear();
        return DSCKPT_OK;
    }
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(ts, "best_model_checkpoint");
    char *best = NULL;
    if (cJSON_IsString(b) && ds_best_component(b->valuestring, state_dir, &best) == DSCKPT_OK) {
        for (size_t i = 0; i < l->n; i++)
            if (!strcmp(l->v[i].name, best)) {
                l->v[i].pub.is_best = 1;
                l->best = (long)i;
            }
    }
    ds_err_clear();
    free(best);
    st = metrics_from_state(l, ts);
    cJSON_Delete(ts);
    return st;
}

static int cmp_ent(const void *a, const void *b) {
    const tag_ent *x = a, *y = b;
    if (x->pub.step != y->pub.step) return x->pub.step < y->pub.step ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Subdirectories of `dir` accepted by `want`, in name order, as entries. */
static dsckpt_status scan(dsckpt_tag_list *l, const char *dir, bool hf) {
    DIR *d = opendir(dir);
    if (!d) return ds_err_errno(errno, "%s: cannot list", dir);
    dsckpt_status st = DSCKPT_OK;
    size_t seen = 0;
    struct dirent *e;
    while (st == DSCKPT_OK && (e = readdir(d))) {
        if (seen++ >= MAX_ENTRIES) {
            st = ds_err(DSCKPT_EUNSUPPORTED, "%s: more than %d entries", dir, MAX_ENTRIES);
            break;
        }
        if (e->d_name[0] == '.' || !ds_safe_name(e->d_name)) continue;
        if (hf && !ds_hf_checkpoint_name(e->d_name, NULL)) continue;
        char *p = ds_join(dir, e->d_name);
        if (!p) {
            st = DSCKPT_ENOMEM;
            break;
        }
        bool take = ds_is_dir(p) && (hf || looks_like_tag(p));
        if (take) st = push(l, e->d_name, p);
        free(p);
    }
    closedir(d);
    return st;
}

static dsckpt_status list_fill(dsckpt_tag_list *l, const char *path) {
    if (!ds_exists(path)) return ds_err(DSCKPT_ENOENT, "%s: no such file or directory", path);
    if (!ds_is_dir(path)) return ds_err(DSCKPT_EINVAL, "%s: not a checkpoint directory", path);
    /* One tag directory. */
    if (has_file(path, DS_MANIFEST_NAME) || ds_is_deepspeed_dir(path) || ds_is_universal_dir(path)) {
        char *base = ds_basename(path);
        if (!base) return DSCKPT_ENOMEM;
        dsckpt_status st = push(l, base, path);
        free(base);
        DS_TRY(st);
        DS_TRY(fill_from_ckpt(&l->v[0], NULL, NULL));
        l->v[0].pub.bytes_on_disk = du(path, 0);
        return DSCKPT_OK;
    }
    bool root = has_file(path, "latest") || has_file(path, "latest_universal");
    DS_TRY(scan(l, path, false));
    bool hf = false;
    if (!root && l->n == 0) {
        DS_TRY(scan(l, path, true));
        hf = l->n > 0;
    }
    if (l->n == 0)
        return ds_err(DSCKPT_ENOENT, "%s: no checkpoints here (no tag directories, no checkpoint-N folders)", path);
    for (size_t i = 0; i < l->n; i++) {
        tag_ent *e = &l->v[i];
        DS_TRY(fill_from_ckpt(e, path, e->name));
        e->pub.bytes_on_disk = du(e->dir, 0);
        if (hf && e->pub.complete && !has_file(e->dir, "latest")) e->pub.complete = 0;
    }
    qsort(l->v, l->n, sizeof *l->v, cmp_ent);
    if (hf) {
        /* `latest` in an output_dir: the newest complete checkpoint-N, whose
         * trainer_state.json holds the whole history. */
        for (size_t i = l->n; i-- > 0;)
            if (l->v[i].pub.complete) {
                l->latest = (long)i;
                break;
            }
        if (l->latest >= 0) DS_TRY(apply_trainer_state(l, l->v[l->latest].dir));
    } else {
        char *lt = read_latest(path);
        for (size_t i = 0; lt && i < l->n; i++)
            if (!strcmp(l->v[i].name, lt)) l->latest = (long)i;
        free(lt);
        DS_TRY(apply_trainer_state(l, path));
    }
    return DSCKPT_OK;
}

dsckpt_status dsckpt_tag_list_open(const char *path, dsckpt_tag_list **out) {
    ds_err_clear();
    if (!path || !out) return ds_err(DSCKPT_EINVAL, "dsckpt_tag_list_open: NULL argument");
    *out = NULL;
    dsckpt_tag_list *l = calloc(1, sizeof *l);
    if (!l) return ds_err(DSCKPT_ENOMEM, "out of memory");
    l->best = l->latest = -1;
    dsckpt_status st = list_fill(l, path);
    if (st) {
        dsckpt_tag_list_free(l);
        return st;
    }
    for (size_t i = 0; i < l->n; i++) {
        tag_ent *e = &l->v[i];
        e->pub.name = e->name;
        e->pub.dir = e->dir;
        e->pub.format = e->format;
        e->pub.problem = e->problem;
        e->pub.train_dtype = e->train_dtype;
        e->pub.metric_name = e->metric_name;
        e->pub.is_latest = (long)i == l->latest;
    }
    *out = l;
    return DSCKPT_OK;
}
