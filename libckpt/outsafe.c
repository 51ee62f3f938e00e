/*
 * outsafe.c — ownership checks before --force replaces an output, and removal of
 * temporaries left by dead processes (see outsafe.h).
 */
#include "outsafe.h"

#include "fsutil.h"
#include "manifest.h"
#include "names.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Digits only, 1..19 of them; false otherwise. */
static bool parse_digits(const char *s, size_t n, long *out) {
    if (n == 0 || n > 18) return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

bool ds_parse_temp_name(const char *name, const char *base, long *pid, bool *old) {
    if (!name || name[0] != '.') return false;
    const char *s = name + 1;
    size_t n = strlen(s);
    /* From the end: "-<n>", then "-<pid>", then ".tmp" or ".old". */
    size_t e = n;
    while (e > 0 && s[e - 1] >= '0' && s[e - 1] <= '9') e--;
    long cnt, p;
    if (!parse_digits(s + e, n - e, &cnt) || e == 0 || s[e - 1] != '-') return false;
    size_t pe = e - 1, pb = pe;
    while (pb > 0 && s[pb - 1] >= '0' && s[pb - 1] <= '9') pb--;
    if (!parse_digits(s + pb, pe - pb, &p) || p <= 0 || p > INT_MAX || pb < 5 || s[pb - 1] != '-') return false;
    size_t kb = pb - 5; /* ".tmp" / ".old" before the '-' */
    bool is_old;
    if (!strncmp(s + kb, ".tmp-", 5)) is_old = false;
    else if (!strncmp(s + kb, ".old-", 5)) is_old = true;
    else return false;
    if (kb == 0) return false; /* empty base */
    if (base && (strlen(base) != kb || strncmp(s, base, kb) != 0)) return false;
    if (pid) *pid = p;
    if (old) *old = is_old;
    return true;
}

static bool pid_dead(long pid) {
    if (pid == (long)getpid()) return false;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

void ds_clean_stale_temps(const char *final) {
    char *dir = ds_dirname(final), *base = ds_basename(final);
    DIR *d = dir && base ? opendir(dir) : NULL;
    if (d) {
        bool final_exists = ds_exists(final);
        struct dirent *e;
        while ((e = readdir(d))) {
            long pid;
            bool old;
            if (!ds_parse_temp_name(e->d_name, base, &pid, &old) || !pid_dead(pid)) continue;
            if (old && !final_exists) continue; /* maybe the only copy of the previous output */
            char *p = ds_join(dir, e->d_name);
            struct stat sb;
            if (p && lstat(p, &sb) == 0) {
                if (S_ISDIR(sb.st_mode)) ds_rmtree(p);
                else if (S_ISREG(sb.st_mode)) unlink(p);
            }
            free(p);
        }
        closedir(d);
    }
    free(dir);
    free(base);
}

static atomic_uint old_counter;

char *ds_old_sibling(const char *final) {
    char *dir = ds_dirname(final), *base = ds_basename(final), *p = NULL;
    if (dir && base &&
        asprintf(&p, "%s/.%s.old-%ld-%u", dir, base, (long)getpid(), atomic_fetch_add(&old_counter, 1)) < 0)
        p = NULL;
    if (!p) ds_err(DSCKPT_ENOMEM, "out of memory");
    free(dir);
    free(base);
    return p;
}

/* ---- ownership ---- */

static bool is_temp(const char *name) { return ds_parse_temp_name(name, NULL, NULL, NULL); }

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n > m && !strcmp(s + n - m, suf);
}

/* "model-NNNNN-of-NNNNN.safetensors" */
static bool is_hf_shard(const char *s) {
    if (strlen(s) != strlen("model-00001-of-00001.safetensors") || strncmp(s, "model-", 6) != 0) return false;
    for (int i = 0; i < 5; i++)
        if (s[6 + i] < '0' || s[6 + i] > '9' || s[15 + i] < '0' || s[15 + i] > '9') return false;
    return !strncmp(s + 11, "-of-", 4) && !strcmp(s + 20, ".safetensors");
}

/* The Hugging Face files consolidate writes beside the weights and reshard carries
 * from a Trainer checkpoint (hf_export.h). */
static bool is_hf_side_file(const char *n) {
    static const char *const names[] = {"config.json", "generation_config.json", "tokenizer.json",
                                        "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                                        "vocab.json", "merges.txt", "chat_template.jinja"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(n, names[i])) return true;
    return false;
}

/* The Trainer's files reshard carries into a save root (hf_export.h). */
static bool is_trainer_file(const char *n) {
    size_t k = strlen(n);
    return !strcmp(n, "trainer_state.json") || !strcmp(n, "scheduler.pt") || !strcmp(n, "training_args.bin") ||
           (!strncmp(n, "rng_state", 9) && k >= 13 && !strcmp(n + k - 4, ".pth"));
}

static dsckpt_status foreign(const char *dir, const char *name, const char *why) {
    return ds_err(DSCKPT_EEXIST,
                  "%s: not replaced (even forced): '%s' %s; dsckpt replaces only an output it wrote (remove that entry or "
                  "choose another output)",
                  dir, name, why);
}

/* Is the regular file `name` in the native tag directory one its manifest lists? */
static bool listed(const cJSON *files, const char *name) {
    const cJSON *f;
    cJSON_ArrayForEach(f, files) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(f, "name");
        if (cJSON_IsString(n) && !strcmp(n->valuestring, name)) return true;
    }
    return false;
}

static bool is_deepspeed_file(const char *name) {
    return ends_with(name, "_model_states.pt") || ends_with(name, "_optim_states.pt") || !strcmp(name, "zero_to_fp32.py");
}

/* The zero/ folder of a universal tag directory we wrote: optimizer_state.pt and
 * one folder per parameter holding only {fp32,exp_avg,exp_avg_sq,step}.pt. */
static dsckpt_status check_universal_zero(const char *zdir) {
    static const char *const per_param[] = {"fp32.pt", "exp_avg.pt", "exp_avg_sq.pt", "step.pt"};
    DIR *d = opendir(zdir);
    if (!d) return ds_err_errno(errno, "%s: cannot list directory", zdir);
    dsckpt_status st = DSCKPT_OK;
    struct dirent *e;
    while (st == DSCKPT_OK && (e = readdir(d))) {
        const char *n = e->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..") || is_temp(n)) continue;
        char *p = ds_join(zdir, n);
        struct stat sb;
        bool reg = p && lstat(p, &sb) == 0 && S_ISREG(sb.st_mode), dir = p && !reg && S_ISDIR(sb.st_mode);
        if (!p) st = DSCKPT_ENOMEM;
        else if (reg && !strcmp(n, "optimizer_state.pt")) {
        } else if (!dir) {
            st = foreign(zdir, n, "is not a file dsckpt writes in a universal checkpoint");
        } else {
            DIR *pd = opendir(p);
            if (!pd) st = ds_err_errno(errno, "%s: cannot list directory", p);
            struct dirent *f;
            while (st == DSCKPT_OK && pd && (f = readdir(pd))) {
                if (!strcmp(f->d_name, ".") || !strcmp(f->d_name, "..") || is_temp(f->d_name)) continue;
                char *q = ds_join(p, f->d_name);
                bool ok = false;
                for (size_t k = 0; q && k < sizeof per_param / sizeof per_param[0]; k++)
                    ok |= !strcmp(f->d_name, per_param[k]) && lstat(q, &sb) == 0 && S_ISREG(sb.st_mode);
                free(q);
                if (!ok) st = foreign(p, f->d_name, "is not a file dsckpt writes for a universal parameter");
            }
            if (pd) closedir(pd);
        }
        free(p);
    }
    closedir(d);
    return st;
}

/* A tag directory of a save root we wrote: native (manifest + listed files),
 * DeepSpeed files only, or those plus a universal zero/ folder. */
static dsckpt_status check_tag_dir(const char *root, const char *tag) {
    char *dir = ds_join(root, tag), *mp = dir ? ds_join(dir, DS_MANIFEST_NAME) : NULL;
    if (!mp) {
        free(dir);
        return DSCKPT_ENOMEM;
    }
    dsckpt_status st = DSCKPT_OK;
    cJSON *m = NULL;
    const cJSON *files = NULL;
    struct stat sb;
    if (lstat(mp, &sb) == 0 && S_ISREG(sb.st_mode)) {
        char *text = NULL;
        size_t len = 0;
        if (ds_read_small_file(mp, DS_MANIFEST_MAX, &text, &len) == DSCKPT_OK) m = cJSON_ParseWithLength(text, len);
        free(text);
        /* Duplicate keys: which "files" list counts would depend on the reader. */
        bool unique = m && ds_json_unique_keys(m, DSCKPT_ECORRUPT, mp) == DSCKPT_OK;
        files = unique ? cJSON_GetObjectItemCaseSensitive(m, "files") : NULL;
        if (m && !unique)
            st = foreign(dir, DS_MANIFEST_NAME, "holds duplicate keys");
        else if (!cJSON_IsArray(files))
            st = foreign(dir, DS_MANIFEST_NAME, "is not a dsckpt manifest");
    }
    DIR *d = st == DSCKPT_OK ? opendir(dir) : NULL;
    if (st == DSCKPT_OK && !d) st = ds_err_errno(errno, "%s: cannot list directory", dir);
    struct dirent *e;
    while (st == DSCKPT_OK && (e = readdir(d))) {
        const char *n = e->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..") || is_temp(n)) continue;
        char *p = ds_join(dir, n);
        bool reg = p && lstat(p, &sb) == 0 && S_ISREG(sb.st_mode);
        if (p && !files && !reg && !strcmp(n, "zero") && S_ISDIR(sb.st_mode)) {
            st = check_universal_zero(p);
            free(p);
            continue;
        }
        free(p);
        bool ok = reg && (files ? (!strcmp(n, DS_MANIFEST_NAME) || listed(files, n)) : is_deepspeed_file(n));
        if (!ok)
            st = foreign(dir, n,
                         files ? "is not listed in the checkpoint's manifest" : "is not a file dsckpt writes in a tag directory");
    }
    if (d) closedir(d);
    cJSON_Delete(m);
    free(mp);
    free(dir);
    return st;
}

dsckpt_status ds_check_replaceable(const char *final, ds_out_kind kind) {
    struct stat sb;
    if (lstat(final, &sb) != 0) return DSCKPT_OK;
    if (!S_ISDIR(sb.st_mode))
        return ds_err(DSCKPT_EEXIST, "%s: not replaced (even forced): it exists and is not a directory dsckpt wrote", final);
    DIR *d = opendir(final);
    if (!d) return ds_err_errno(errno, "%s: cannot list directory", final);
    dsckpt_status st = DSCKPT_OK;
    struct dirent *e;
    while (st == DSCKPT_OK && (e = readdir(d))) {
        const char *n = e->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..") || is_temp(n)) continue;
        char *p = ds_join(final, n);
        if (!p) {
            st = DSCKPT_ENOMEM;
            break;
        }
        bool reg = lstat(p, &sb) == 0 && S_ISREG(sb.st_mode), dir = !reg && S_ISDIR(sb.st_mode);
        free(p);
        if (kind == DS_OUT_HF_DIR) {
            bool ok = reg && (!strcmp(n, "model.safetensors") || is_hf_shard(n) ||
                              !strcmp(n, "model.safetensors.index.json") || is_hf_side_file(n));
            if (!ok) st = foreign(final, n, "is not a file consolidate writes");
        } else if (reg) {
            if (strcmp(n, "latest") != 0 && strcmp(n, "latest_universal") != 0 && !is_trainer_file(n) &&
                !is_hf_side_file(n))
                st = foreign(final, n, "is not a file dsckpt writes in a save root");
        } else if (dir) {
            st = check_tag_dir(final, n);
        } else {
            st = foreign(final, n, "is neither a regular file nor a directory");
        }
    }
    closedir(d);
    return st;
}

/* ---- output directories committed by rename ---- */

dsckpt_status ds_outdir_begin(ds_outdir *od, const char *final, bool force) {
    return ds_outdir_begin_kind(od, final, force, DS_OUT_SAVE_ROOT);
}

dsckpt_status ds_outdir_begin_kind(ds_outdir *od, const char *final, bool force, int kind) {
    memset(od, 0, sizeof *od);
    od->force = force;
    ds_clean_stale_temps(final);
    if (ds_exists(final) && !force)
        return ds_err(DSCKPT_EEXIST, "%s: output already exists (not replaced unless forced)", final);
    if (force) DS_TRY(ds_check_replaceable(final, (ds_out_kind)kind));
    char *parent = ds_dirname(final);
    if (!parent) return DSCKPT_ENOMEM;
    bool ok = ds_is_dir(parent);
    free(parent);
    if (!ok) return ds_err(DSCKPT_ENOENT, "%s: the parent directory does not exist", final);
    od->final = ds_strdup(final);
    od->tmp = ds_tmp_sibling(final);
    if (!od->final || !od->tmp) {
        ds_outdir_abort(od);
        return DSCKPT_ENOMEM;
    }
    dsckpt_status st = ds_mkdir(od->tmp);
    if (st) {
        free(od->tmp);
        od->tmp = NULL;
        ds_outdir_abort(od);
    }
    return st;
}

dsckpt_status ds_outdir_commit(ds_outdir *od) {
    if (ds_interrupted()) return ds_err_interrupted();
    DS_TRY(ds_fsync_dir(od->tmp));
    dsckpt_status st;
    if (ds_exists(od->final)) {
        if (!od->force) return ds_err(DSCKPT_EEXIST, "%s: output appeared while writing; not replaced", od->final);
        /* Move the old output aside, put the new one in place, then delete the old:
         * at every instant one complete output exists under `final` or beside it. */
        char *old = ds_old_sibling(od->final);
        if (!old) return DSCKPT_ENOMEM;
        if (rename(od->final, old) != 0) {
            st = ds_err_errno(errno, "%s: cannot move the existing output aside", od->final);
            free(old);
            return st;
        }
        st = ds_rename_durable(od->tmp, od->final, true);
        if (st) {
            if (ds_exists(od->tmp)) {
                rename(old, od->final); /* the new one is not in place: put the original back */
            } else {
                /* Renamed, but the directory fsync failed: the new output is in place. */
                ds_rmtree(old);
                free(od->tmp);
                od->tmp = NULL;
            }
            free(old);
            return st;
        }
        ds_rmtree(old);
        free(old);
    } else {
        DS_TRY(ds_rename_durable(od->tmp, od->final, true));
    }
    free(od->tmp);
    od->tmp = NULL;
    return DSCKPT_OK;
}

void ds_outdir_abort(ds_outdir *od) {
    if (!od) return;
    if (od->tmp) ds_rmtree(od->tmp);
    free(od->tmp);
    free(od->final);
    od->tmp = od->final = NULL;
}
