/*
 * savedir.c — choosing the checkpoint --resume continues from, and removing the
 * debris of killed saves (see savedir.h).
 */
#include "savedir.h"

#include "dsckpt_internal.h"
#include "engine_ckpt.h"
#include "fsutil.h"
#include "names.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CANDIDATES 100000

/* "global_step<N>" with N decimal (no sign, no overflow): N, else -1. */
static long long step_of(const char *name) {
    if (strncmp(name, "global_step", 11) || !name[11] || strlen(name + 11) > 15) return -1;
    long long v = 0;
    for (const char *p = name + 11; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}


static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* What the tag directory save_dir/tag holds (ds_tag_classify). */
static ds_tag_kind classify(const char *save_dir, const char *tag) {
    char *d = ds_join(save_dir, tag);
    ds_tag_kind k = d ? ds_tag_classify(d) : DS_TAG_NONE;
    free(d);
    return k;
}

typedef struct cand {
    char *tag;
    long long step;
} cand;

static int cmp_cand(const void *a, const void *b) {
    const cand *x = a, *y = b;
    return x->step < y->step ? 1 : x->step > y->step ? -1 : strcmp(x->tag, y->tag);
}

static void notef(rt_resume_pick *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void notef(rt_resume_pick *out, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->msg, sizeof out->msg, fmt, ap);
    va_end(ap);
}

/* The checkpoint opens (its structure: the manifest, the files) and holds this
 * run's model. Its bytes are not hashed here: the load's reads check every byte
 * they read against its digest, and a damaged chunk fails the load as corrupt. */
static int model_ok(const rt_engine *e, const char *save_dir, const char *tag, rt_resume_pick *out) {
    dsckpt_ckpt *c = NULL;
    char what[600];
    snprintf(what, sizeof what, "%s/%s", save_dir, tag);
    dsckpt_status st = dsckpt_ckpt_open(save_dir, tag, &c);
    if (!st) st = rt_engine_check_model(e, c, what);
    dsckpt_ckpt_free(c);
    if (st) {
        notef(out, "%s", dsckpt_last_error());
        return st == DSCKPT_EINVAL ? 3 : st == DSCKPT_EUNSUPPORTED ? 5
               : st == DSCKPT_ECORRUPT || st == DSCKPT_ECHECKSUM || st == DSCKPT_EVERSION ? 1 : 2;
    }
    return 0;
}

/* The tag save_dir/latest names (*tag, malloc'd; NULL when there is no `latest`);
 * *bad when `latest` is there but not a regular file holding one plain tag name. */
static void read_latest(const char *save_dir, char **tag, bool *bad) {
    *tag = NULL;
    *bad = false;
    char *lp = ds_join(save_dir, "latest");
    struct stat sb;
    if (lp && lstat(lp, &sb) == 0) {
        /* A regular file (lstat: a symlink is not what dstrain writes) holding one
         * safe tag name; a NUL inside is damage, not the end of the name. */
        if (!S_ISREG(sb.st_mode) || ds_read_latest(lp, tag) != DSCKPT_OK) *bad = true;
    }
    free(lp);
}

/* Candidates, newest first: every global_step<N> directory, and the tag `latest`
 * names (first of all when it is no global_step<N>). */
static void list_candidates(const char *save_dir, const char *latest_tag, cand **out, size_t *nout) {
    cand *cs = NULL;
    size_t n = 0;
    DIR *d = opendir(save_dir);
    for (struct dirent *de; d && (de = readdir(d)) && n < MAX_CANDIDATES;) {
        long long s = step_of(de->d_name);
        bool is_latest = latest_tag && !strcmp(de->d_name, latest_tag);
        if (s < 0 && !is_latest) continue;
        cand *nc = realloc(cs, (n + 1) * sizeof *cs);
        if (!nc) break;
        cs = nc;
        cs[n].tag = strdup(de->d_name);
        if (!cs[n].tag) break;
        cs[n].step = s < 0 ? (1ll << 62) : s; /* a tag only `latest` names goes first */
        n++;
    }
    if (d) closedir(d);
    if (n) qsort(cs, n, sizeof *cs, cmp_cand);
    *out = cs;
    *nout = n;
}

struct rt_resume_scan {
    const rt_engine *e;
    const char *save_dir;
    bool automatic;
    char *explicit_tag;
    char *latest_tag;
    bool latest_bad, latest_seen;
    cand *cs;
    size_t n, next;
    size_t offered;  /* the index of the candidate last offered, + 1 (0: none) */
    int worst;       /* the worst exit code among the candidates passed over */
    char first_problem[sizeof ((rt_resume_pick *)0)->msg];
    bool *damaged;   /* per candidate: passed over as corrupt (exit 1) */
};

rt_resume_scan *rt_resume_scan_new(const rt_engine *e, const char *save_dir, const char *resume) {
    rt_resume_scan *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->e = e;
    s->save_dir = save_dir;
    s->automatic = !strcmp(resume, "auto");
    if (!s->automatic) {
        s->explicit_tag = strdup(resume);
        if (!s->explicit_tag) {
            free(s);
            return NULL;
        }
        return s;
    }
    read_latest(save_dir, &s->latest_tag, &s->latest_bad);
    list_candidates(save_dir, s->latest_tag, &s->cs, &s->n);
    s->damaged = calloc(s->n ? s->n : 1, sizeof *s->damaged);
    if (!s->damaged) {
        rt_resume_scan_free(s);
        return NULL;
    }
    return s;
}

void rt_resume_scan_free(rt_resume_scan *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) free(s->cs[i].tag);
    free(s->cs);
    free(s->damaged);
    free(s->latest_tag);
    free(s->explicit_tag);
    free(s);
}

/* Passes over candidate i, which cannot be resumed (code 1 corrupt, 2 unreadable). */
static void pass_over(rt_resume_scan *s, size_t i, int code, const char *msg) {
    fprintf(stderr, "dstrain: --resume auto: skipping %s\n", msg);
    s->damaged[i] = code == 1;
    if (!s->first_problem[0]) snprintf(s->first_problem, sizeof s->first_problem, "%s", msg);
    if (!s->worst || code == 1) s->worst = code;
}

void rt_resume_scan_reject(rt_resume_scan *s, int code, const char *msg) {
    if (s && s->automatic && s->offered) pass_over(s, s->offered - 1, code, msg);
}

/* No candidate is left: from scratch when the directory held no checkpoint, else
 * the verdict on what it held. */
static void scan_verdict(rt_resume_scan *s, rt_resume_pick *out) {
    if (s->latest_bad || (s->latest_tag && !s->latest_seen)) {
        out->exit_code = 1;
        notef(out, "--resume auto: %s/latest %s; not starting from scratch over it", s->save_dir,
              s->latest_bad ? "is not a plain tag name in a regular file" : "names a checkpoint that is not there");
    } else if (s->worst) {
        out->exit_code = s->worst;
        notef(out, "--resume auto: %s holds checkpoints but none can be resumed (%s); not starting from "
              "scratch over them", s->save_dir, s->first_problem[0] ? s->first_problem : "the one `latest` names is incomplete");
    }
}

void rt_resume_scan_next(rt_resume_scan *s, rt_resume_pick *out) {
    memset(out, 0, sizeof *out);
    if (!s) {
        out->exit_code = 70;
        notef(out, "out of memory");
        return;
    }
    out->fall_back = s->automatic;
    if (!s->automatic) { /* an explicit tag: once */
        if (!s->explicit_tag) { /* offered already: a failed load of it ends the run */
            out->exit_code = 70;
            notef(out, "--resume: the checkpoint named was offered already");
            return;
        }
        int code = model_ok(s->e, s->save_dir, s->explicit_tag, out);
        if (code) {
            out->exit_code = code;
        } else {
            snprintf(out->tag, sizeof out->tag, "%s", s->explicit_tag);
            out->deepspeed = classify(s->save_dir, s->explicit_tag) == DS_TAG_DEEPSPEED;
        }
        free(s->explicit_tag);
        s->explicit_tag = NULL;
        return;
    }
    while (s->next < s->n) {
        size_t i = s->next++;
        const cand *c = &s->cs[i];
        bool is_latest = s->latest_tag && !strcmp(c->tag, s->latest_tag);
        s->latest_seen |= is_latest;
        ds_tag_kind k = classify(s->save_dir, c->tag);
        if (k == DS_TAG_NONE) continue; /* not a directory */
        if (k == DS_TAG_INCOMPLETE) {
            fprintf(stderr, "dstrain: --resume auto: skipping %s/%s: an incomplete save (no manifest.json)\n",
                    s->save_dir, c->tag);
            if (is_latest && !s->worst) s->worst = 1;
            continue;
        }
        int code = model_ok(s->e, s->save_dir, c->tag, out);
        if (code == 3 || code == 5) { /* another model, or one dstrain cannot take: stop */
            out->exit_code = code;
            return;
        }
        if (code) {
            pass_over(s, i, code, out->msg);
            out->msg[0] = '\0';
            continue;
        }
        snprintf(out->tag, sizeof out->tag, "%s", c->tag);
        out->deepspeed = k == DS_TAG_DEEPSPEED;
        s->offered = i + 1;
        if (s->worst) fprintf(stderr, "dstrain: --resume auto: trying %s, the newest checkpoint left\n", c->tag);
        return;
    }
    scan_verdict(s, out);
}

/* Moves save_dir/tag aside to the first free save_dir/tag.damaged[-N]. */
static dsckpt_status move_aside(const char *save_dir, const char *tag) {
    char *from = ds_join(save_dir, tag);
    dsckpt_status st = from ? DSCKPT_EEXIST : DSCKPT_ENOMEM;
    for (int k = 0; k < 100 && st == DSCKPT_EEXIST; k++) {
        char name[300];
        if (k) snprintf(name, sizeof name, "%s.damaged-%d", tag, k);
        else snprintf(name, sizeof name, "%s.damaged", tag);
        char *to = ds_join(save_dir, name);
        st = to ? ds_rename_durable(from, to, true) : DSCKPT_ENOMEM;
        if (!st) fprintf(stderr, "dstrain: --resume auto: moved the damaged %s/%s aside to %s/%s\n", save_dir, tag,
                         save_dir, name);
        free(to);
    }
    free(from);
    return st;
}

dsckpt_status rt_resume_scan_set_aside(rt_resume_scan *s, const char *resumed) {
    if (!s || !s->automatic) return DSCKPT_OK;
    bool latest_damaged = false;
    for (size_t i = 0; i < s->n; i++)
        latest_damaged |= s->damaged[i] && s->latest_tag && !strcmp(s->cs[i].tag, s->latest_tag);
    /* First `latest`, so that a run killed in between finds it naming a checkpoint. */
    if (latest_damaged) DS_TRY(ds_set_latest(s->save_dir, resumed));
    for (size_t i = 0; i < s->n; i++)
        if (s->damaged[i]) DS_TRY(move_aside(s->save_dir, s->cs[i].tag));
    return DSCKPT_OK;
}

bool rt_stale_temp(const char *name, long *pid) {
    /* .BASE.tmp-PID-N */
    if (name[0] != '.') return false;
    const char *t = strstr(name + 1, ".tmp-");
    if (!t || t == name + 1) return false;
    for (const char *p = strstr(t + 5, ".tmp-"); p; p = strstr(p + 5, ".tmp-")) t = p; /* the last one */
    const char *p = t + 5;
    long v = 0;
    int nd = 0;
    for (; *p >= '0' && *p <= '9' && nd < 10; p++, nd++) v = v * 10 + (*p - '0');
    if (!nd || *p != '-' || v <= 0) return false;
    p++;
    int nc = 0;
    for (; *p >= '0' && *p <= '9' && nc < 10; p++) nc++;
    if (!nc || *p) return false;
    char base[256];
    size_t bl = (size_t)(t - (name + 1));
    if (bl >= sizeof base) return false;
    memcpy(base, name + 1, bl);
    base[bl] = '\0';
    if (!ds_safe_name(base)) return false;
    *pid = v;
    if (kill((pid_t)v, 0) == -1) return errno == ESRCH;
    /* A zombie is dead too: a rank whose launcher was killed is reparented, and
     * not every init reaps at once. */
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", v);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X');
}

/* Removes dead writers' temporaries of the names `allowed` accepts in dir. */
static int clean_dir(const char *dir, bool root) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    for (struct dirent *de; (de = readdir(d));) {
        long pid;
        if (!rt_stale_temp(de->d_name, &pid)) continue;
        if (root) { /* only the files dstrain's rank 0 writes there */
            const char *n = de->d_name + 1;
            if (strncmp(n, "latest.tmp-", 11) && strncmp(n, "trainer_state.json.tmp-", 23)) continue;
        } else { /* rank files and the manifest */
            const char *n = de->d_name + 1;
            if (strncmp(n, "manifest.json.tmp-", 18) &&
                !(strncmp(n, "rank_", 5) == 0 && strstr(n, ".safetensors.tmp-") == n + 10))
                continue;
        }
        struct stat sb;
        if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) || !S_ISREG(sb.st_mode)) continue;
        if (unlinkat(dirfd(d), de->d_name, 0) == 0) removed++;
    }
    closedir(d);
    return removed;
}

int rt_clean_debris(const char *save_dir) {
    int removed = clean_dir(save_dir, true);
    DIR *d = opendir(save_dir);
    for (struct dirent *de; d && (de = readdir(d));) {
        ds_tag_kind k = step_of(de->d_name) < 0 ? DS_TAG_NONE : classify(save_dir, de->d_name);
        if (k != DS_TAG_INCOMPLETE && k != DS_TAG_NATIVE) continue;
        char *td = ds_join(save_dir, de->d_name);
        if (td) removed += clean_dir(td, false);
        free(td);
    }
    if (d) closedir(d);
    if (removed) ds_fsync_dir(save_dir);
    return removed;
}

bool rt_only_save_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool ok = true;
    for (struct dirent *de; ok && (de = readdir(d));) {
        const char *n = de->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..")) continue;
        bool rank_file = !strncmp(n, "rank_", 5) && ends_with(n, ".safetensors") && strlen(n) <= 24;
        bool temp = n[0] == '.' && strstr(n, ".tmp-") != NULL;
        ok = rank_file || temp;
    }
    closedir(d);
    return ok;
}
