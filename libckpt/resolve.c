/*
 * resolve.c — CKPT and -t TAG to one tag directory: tag directories, save roots
 * (dsckpt, DeepSpeed, a Hugging Face checkpoint-N) and Hugging Face output_dirs
 * (see resolve.h for the rules).
 */
#include "resolve.h"

#include "ckpt.h"
#include "deepspeed.h"
#include "fsutil.h"
#include "hfjson.h"
#include "manifest.h"
#include "names.h"

#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

/* Names read from files and listings, and names the user gives, through the one
 * validator (names.h). */
static dsckpt_status name_check(const char *name, dsckpt_status code, const char *where, const char *kind) {
    return ds_name_check(name, name ? strlen(name) : 0, code, where, kind);
}

bool ds_hf_checkpoint_name(const char *name, uint64_t *n) {
    static const char pfx[] = "checkpoint-";
    if (!name || strncmp(name, pfx, sizeof pfx - 1)) return false;
    const char *d = name + sizeof pfx - 1;
    size_t len = strlen(d);
    if (len < 1 || len > 18) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (d[i] < '0' || d[i] > '9') return false;
        v = v * 10 + (uint64_t)(d[i] - '0');
    }
    if (n) *n = v;
    return true;
}

dsckpt_status ds_best_component(const char *value, const char *where, char **out) {
    *out = NULL;
    size_t e = strlen(value);
    while (e > 0 && (value[e - 1] == '/' || value[e - 1] == '\\')) e--;
    size_t b = e;
    while (b > 0 && value[b - 1] != '/' && value[b - 1] != '\\') b--;
    dsckpt_status st = ds_name_check(value + b, e - b, DSCKPT_ECORRUPT, where, "the last component of best_model_checkpoint");
    if (st) return st;
    char *c = strndup(value + b, e - b);
    if (!c) return ds_err(DSCKPT_ENOMEM, "out of memory");
    *out = c;
    return DSCKPT_OK;
}

dsckpt_status ds_trainer_best(const char *dir, char **best, bool *have_state) {
    *best = NULL;
    *have_state = false;
    char *p = ds_join(dir, "trainer_state.json");
    if (!p) return DSCKPT_ENOMEM;
    if (!ds_exists(p)) {
        free(p);
        return DSCKPT_OK;
    }
    cJSON *ts = NULL;
    dsckpt_status st = ds_json_read_strict(p, DS_TRAINER_STATE_MAX, &ts);
    if (st == DSCKPT_OK && !cJSON_IsObject(ts)) st = ds_err(DSCKPT_ECORRUPT, "%s: not a JSON object", p);
    if (st == DSCKPT_OK) {
        *have_state = true;
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(ts, "best_model_checkpoint");
        if (b && !cJSON_IsNull(b) && !cJSON_IsString(b))
            st = ds_err(DSCKPT_ECORRUPT, "%s: best_model_checkpoint is not a string", p);
        else if (cJSON_IsString(b))
            st = ds_best_component(b->valuestring, p, best);
    }
    cJSON_Delete(ts);
    free(p);
    return st;
}

static bool is_tag_dir(const char *dir) {
    char *mf = ds_join(dir, DS_MANIFEST_NAME);
    bool ok = mf && ds_exists(mf);
    free(mf);
    return ok || ds_is_deepspeed_dir(dir);
}

static bool has_latest(const char *dir) {
    char *lp = ds_join(dir, "latest"), *lu = ds_join(dir, "latest_universal");
    bool ok = (lp && ds_exists(lp)) || (lu && ds_exists(lu));
    free(lp);
    free(lu);
    return ok;
}

/* ---- listings (for choosing and for messages) ---- */

typedef struct name_ent {
    char *name;
    uint64_t num; /* checkpoint number, for checkpoint lists */
} name_ent;

typedef struct name_list {
    name_ent *v;
    size_t n, cap;
} name_list;

static void name_list_free(name_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i].name);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static dsckpt_status name_list_add(name_list *l, const char *s, uint64_t num) {
    DS_TRY(ds_array_room(&l->v, &l->cap, l->n, sizeof *l->v));
    if (!(l->v[l->n].name = ds_strdup(s))) return DSCKPT_ENOMEM;
    l->v[l->n++].num = num;
    return DSCKPT_OK;
}

/* By number, then name. */
static int cmp_ent(const void *a, const void *b) {
    const name_ent *x = a, *y = b;
    if (x->num != y->num) return x->num < y->num ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Subdirectories of `dir` that are tag directories (want_ckpt false) or named
 * checkpoint-N (want_ckpt true). Names are checked before they are joined. */
static dsckpt_status list_dir(const char *dir, bool want_ckpt, name_list *out) {
    memset(out, 0, sizeof *out);
    DIR *d = opendir(dir);
    if (!d) return DSCKPT_OK; /* nothing to list */
    dsckpt_status st = DSCKPT_OK;
    struct dirent *e;
    while (st == DSCKPT_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !ds_safe_name(e->d_name)) continue;
        uint64_t num = 0;
        if (want_ckpt && !ds_hf_checkpoint_name(e->d_name, &num)) continue;
        char *p = ds_join(dir, e->d_name);
        if (!p) {
            st = DSCKPT_ENOMEM;
            break;
        }
        bool ok = want_ckpt ? ds_is_dir(p) : ds_is_dir(p) && is_tag_dir(p);
        free(p);
        if (ok) st = name_list_add(out, e->d_name, num);
    }
    closedir(d);
    if (st) name_list_free(out);
    else if (out->n) qsort(out->v, out->n, sizeof *out->v, cmp_ent);
    return st;
}

/* "a, b, c" (at most 20 names, then "...") or "none", into buf (size n). */
static void join_names(const name_list *l, char *buf, size_t n) {
    size_t o = 0;
    buf[0] = '\0';
    if (!l->n) {
        snprintf(buf, n, "none");
        return;
    }
    for (size_t i = 0; i < l->n && o + 1 < n; i++) {
        int k = i >= 20 ? snprintf(buf + o, n - o, ", ...")
                        : snprintf(buf + o, n - o, "%s%s", i ? ", " : "", l->v[i].name);
        if (k < 0) break;
        o += (size_t)k;
        if (i >= 20) break;
    }
}

static dsckpt_status missing_tag(const char *root, const char *tag, const char *why) {
    name_list l;
    DS_TRY(list_dir(root, false, &l));
    char names[1024];
    join_names(&l, names, sizeof names);
    name_list_free(&l);
    return ds_err(DSCKPT_ENOENT, "%s: no tag '%s'%s; tags here: %s", root, tag, why ? why : "", names);
}

static dsckpt_status missing_checkpoint(const char *outdir, const char *name, const char *why) {
    name_list l;
    DS_TRY(list_dir(outdir, true, &l));
    char names[1024];
    join_names(&l, names, sizeof names);
    name_list_free(&l);
    return ds_err(DSCKPT_ENOENT, "%s: no %s%s; checkpoints here: %s", outdir, name, why ? why : "", names);
}

/* A checkpoint-N folder whose `latest` names an existing tag directory. */
static bool complete_checkpoint(const char *ck) {
    char *dir = NULL, *root = NULL;
    bool ok = has_latest(ck) && ds_resolve_tag_dir(ck, NULL, &dir, &root) == DSCKPT_OK && is_tag_dir(dir);
    free(dir);
    free(root);
    return ok;
}

/* Resolves inside one checkpoint-N (or any save root) to its latest tag. */
static dsckpt_status open_checkpoint(const char *outdir, const char *name, char **dir_out, char **root_out) {
    DS_TRY(name_check(name, DSCKPT_EINVAL, outdir, "checkpoint"));
    char *ck = ds_join(outdir, name);
    if (!ck) return DSCKPT_ENOMEM;
    dsckpt_status st;
    if (!ds_is_dir(ck)) st = missing_checkpoint(outdir, name, "");
    else if (!has_latest(ck)) st = ds_err(DSCKPT_ENOENT, "%s: no 'latest' file: not a DeepSpeed/dsckpt checkpoint folder (incomplete?)", ck);
    else st = ds_resolve_tag_dir(ck, NULL, dir_out, root_out);
    free(ck);
    return st;
}

/* ---- a Hugging Face output_dir ---- */

static dsckpt_status resolve_output_dir(const char *path, const char *tag, const name_list *cks, char **dir_out,
                                        char **root_out) {
    /* The newest complete checkpoint: the default, `latest`, and where `best` is read. */
    const char *newest = NULL;
    for (size_t i = cks->n; i-- > 0 && !newest;) {
        char *p = ds_join(path, cks->v[i].name);
        if (!p) return DSCKPT_ENOMEM;
        if (complete_checkpoint(p)) newest = cks->v[i].name;
        free(p);
    }
    if (!tag || !strcmp(tag, "latest")) {
        if (!newest) return missing_checkpoint(path, "complete checkpoint-N", " (none has a 'latest' naming a tag directory)");
        return open_checkpoint(path, newest, dir_out, root_out);
    }
    if (!strcmp(tag, "best")) {
        if (!newest) return missing_checkpoint(path, "complete checkpoint-N", " to read the best checkpoint from");
        char *ck = ds_join(path, newest), *best = NULL;
        if (!ck) return DSCKPT_ENOMEM;
        bool have = false;
        dsckpt_status st = ds_trainer_best(ck, &best, &have);
        if (st == DSCKPT_OK && !have) st = ds_err(DSCKPT_ENOENT, "%s: no trainer_state.json: no best checkpoint recorded", ck);
        else if (st == DSCKPT_OK && !best)
            st = ds_err(DSCKPT_ENOENT, "%s/trainer_state.json: no best checkpoint recorded (best_model_checkpoint is null)", ck);
        else if (st == DSCKPT_OK && !ds_hf_checkpoint_name(best, NULL))
            st = ds_err(DSCKPT_ECORRUPT, "%s/trainer_state.json: best_model_checkpoint ends in '%s', not a checkpoint-N folder",
                        ck, best);
        if (st == DSCKPT_OK) st = open_checkpoint(path, best, dir_out, root_out);
        free(best);
        free(ck);
        return st;
    }
    DS_TRY(name_check(tag, DSCKPT_EINVAL, path, "tag"));
    if (ds_hf_checkpoint_name(tag, NULL)) return open_checkpoint(path, tag, dir_out, root_out);
    /* A tag (global_stepN): the one checkpoint-N that holds it. */
    const char *found = NULL;
    size_t nfound = 0;
    for (size_t i = 0; i < cks->n; i++) {
        char *ck = ds_join(path, cks->v[i].name), *td = ck ? ds_join(ck, tag) : NULL;
        if (!ck || !td) {
            free(ck);
            return DSCKPT_ENOMEM;
        }
        if (ds_is_dir(td) && is_tag_dir(td)) {
            found = cks->v[i].name;
            nfound++;
        }
        free(td);
        free(ck);
    }
    if (nfound > 1)
        return ds_err(DSCKPT_EINVAL, "%s: tag '%s' is in %zu checkpoint folders; pass -t checkpoint-N or the folder", path,
                      tag, nfound);
    if (!found) {
        char what[320];
        snprintf(what, sizeof what, "checkpoint-N holding a tag '%s'", tag);
        return missing_checkpoint(path, what, NULL);
    }
    char *ck = ds_join(path, found);
    if (!ck) return DSCKPT_ENOMEM;
    dsckpt_status st = ds_resolve_tag_dir(ck, tag, dir_out, root_out);
    free(ck);
    return st;
}

/* ---- a save root (dsckpt, DeepSpeed, or a checkpoint-N) ---- */

static dsckpt_status resolve_save_root(const char *path, const char *tag, char **dir_out, char **root_out) {
    if (!tag || !strcmp(tag, "latest")) return ds_resolve_tag_dir(path, NULL, dir_out, root_out);
    char *base = ds_basename(path), *parent = ds_dirname(path);
    dsckpt_status st = base && parent ? DSCKPT_OK : DSCKPT_ENOMEM;
    bool hf = st == DSCKPT_OK && ds_hf_checkpoint_name(base, NULL);
    char *want = NULL; /* the tag or checkpoint name to look for */
    bool from_best = false;
    if (st == DSCKPT_OK && !strcmp(tag, "best")) {
        bool have = false;
        st = ds_trainer_best(path, &want, &have);
        if (st == DSCKPT_OK && !have)
            st = ds_err(DSCKPT_ENOENT, "%s: no trainer_state.json: no best checkpoint recorded", path);
        else if (st == DSCKPT_OK && !want)
            st = ds_err(DSCKPT_ENOENT, "%s/trainer_state.json: no best checkpoint recorded (best_model_checkpoint is null)",
                        path);
        from_best = true;
    } else if (st == DSCKPT_OK) {
        st = name_check(tag, DSCKPT_EINVAL, path, "tag");
        if (st == DSCKPT_OK && !(want = ds_strdup(tag))) st = DSCKPT_ENOMEM;
    }
    char *td = st == DSCKPT_OK ? ds_join(path, want) : NULL;
    if (st == DSCKPT_OK && !td) st = DSCKPT_ENOMEM;
    if (st == DSCKPT_OK) {
        if (ds_is_dir(td) && (!from_best || is_tag_dir(td))) {
            st = ds_resolve_tag_dir(path, want, dir_out, root_out);
        } else if (hf && ds_hf_checkpoint_name(want, NULL)) {
            /* This checkpoint-N itself, or a sibling in the same output_dir. */
            if (!strcmp(want, base)) st = ds_resolve_tag_dir(path, NULL, dir_out, root_out);
            else st = open_checkpoint(parent, want, dir_out, root_out);
        } else if (from_best) {
            st = hf ? ds_err(DSCKPT_ECORRUPT,
                             "%s/trainer_state.json: best_model_checkpoint ends in '%s', not a checkpoint-N folder", path, want)
                    : missing_tag(path, want, " (named by best_model_checkpoint in trainer_state.json)");
        } else {
            st = missing_tag(path, want, NULL);
        }
    }
    free(td);
    free(want);
    free(base);
    free(parent);
    return st;
}

dsckpt_status ds_resolve_ckpt(const char *path, const char *tag, char **dir_out, char **root_out) {
    *dir_out = NULL;
    *root_out = NULL;
    if (!ds_exists(path)) return ds_err(DSCKPT_ENOENT, "%s: no such file or directory", path);
    if (!ds_is_dir(path)) return ds_err(DSCKPT_EINVAL, "%s: not a checkpoint directory", path);
    if (is_tag_dir(path)) return ds_resolve_tag_dir(path, tag, dir_out, root_out);
    if (has_latest(path)) return resolve_save_root(path, tag, dir_out, root_out);
    name_list cks;
    DS_TRY(list_dir(path, true, &cks));
    dsckpt_status st;
    if (cks.n) st = resolve_output_dir(path, tag, &cks, dir_out, root_out);
    else st = ds_resolve_tag_dir(path, tag, dir_out, root_out); /* its messages for what is neither */
    name_list_free(&cks);
    return st;
}

ds_tag_kind ds_tag_classify(const char *dir) {
    struct stat sb;
    if (!dir || lstat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return DS_TAG_NONE;
    char *m = ds_join(dir, DS_MANIFEST_NAME);
    bool native = m && lstat(m, &sb) == 0;
    free(m);
    if (native) return DS_TAG_NATIVE;
    return ds_is_deepspeed_dir(dir) ? DS_TAG_DEEPSPEED : DS_TAG_INCOMPLETE;
}
