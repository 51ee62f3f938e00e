/*
 * engine_ckpt.c — saving and loading the engine's checkpoints (see engine_ckpt.h).
 */
#include "engine_ckpt.h"

#include "dsckpt_internal.h"
#include "engine_internal.h"
#include "fsutil.h"
#include "rt_time.h"
#include "savedir.h"

#include <errno.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* The model's tensors as the checkpoint describes them. */
static dsckpt_status model_tensors(const rt_engine *e, ds_tensor **out) {
    size_t np;
    const rt_param *ps = rt_model_params(e->model, &np);
    ds_tensor *ts = NULL;
    DS_TRY(ds_calloc(np, sizeof *ts, &ts));
    for (size_t i = 0; i < np; i++) {
        ds_tensor *t = &ts[i];
        if (!(t->name = ds_strdup(ps[i].name))) goto nomem;
        t->dtype = e->wdt;
        t->ndim = ps[i].ndim;
        for (int d = 0; d < ps[i].ndim; d++) t->shape[d] = (uint64_t)ps[i].shape[d];
        t->numel = ps[i].numel;
        t->trainable = true;
        t->group = e->t[i].group;
        if (!strcmp(ps[i].name, RT_MODEL_LM_HEAD_TARGET)) {
            if (!(t->aliases = calloc(1, sizeof *t->aliases)) || !(t->aliases[0] = ds_strdup(RT_MODEL_LM_HEAD_ALIAS)))
                goto nomem;
            t->naliases = 1;
        }
    }
    *out = ts;
    return DSCKPT_OK;
nomem:
    for (size_t i = 0; i < np; i++) ds_tensor_clear(&ts[i]);
    free(ts);
    return ds_err(DSCKPT_ENOMEM, "out of memory");
}

/* The manifest's "model": what this engine trains. The LM head is always tied
 * to wte (model.h). */
static ds_model_info model_info(const rt_engine *e) {
    const rt_model_cfg *mc = rt_model_config(e->model);
    ds_model_info m = {.n_layer = (uint64_t)mc->n_layer, .n_head = (uint64_t)mc->n_head,
                       .n_embd = (uint64_t)mc->n_embd, .vocab_size = (uint64_t)mc->vocab_size,
                       .n_positions = (uint64_t)mc->n_ctx, .tie_word_embeddings = true};
    snprintf(m.architecture, sizeof m.architecture, "gpt2");
    return m;
}

/* The engine's half of the manifest's "state". */
static cJSON *engine_state(const rt_engine *e) {
    cJSON *st = cJSON_CreateObject(), *opt = cJSON_AddObjectToObject(st, "optimizer");
    cJSON_AddStringToObject(opt, "type", rt_opt_type_name(e->cfg->optimizer.type));
    cJSON *pgs = cJSON_AddArrayToObject(opt, "param_groups");
    for (int g = 0; g < NG; g++) {
        cJSON *pg = cJSON_CreateObject();
        cJSON_AddNumberToObject(pg, "lr", rt_sched_lr(&e->sched, e->applied ? e->applied - 1 : 0));
        cJSON *b = cJSON_AddArrayToObject(pg, "betas");
        cJSON_AddItemToArray(b, cJSON_CreateNumber(e->hp[g].beta1));
        cJSON_AddItemToArray(b, cJSON_CreateNumber(e->hp[g].beta2));
        cJSON_AddNumberToObject(pg, "eps", e->hp[g].eps);
        cJSON_AddNumberToObject(pg, "weight_decay", e->hp[g].weight_decay);
        cJSON_AddNumberToObject(pg, "step", (double)e->applied);
        cJSON_AddItemToArray(pgs, pg);
    }
    cJSON *sch = cJSON_AddObjectToObject(st, "scheduler");
    cJSON_AddStringToObject(sch, "type", rt_sched_type_name(e->cfg->scheduler.type));
    cJSON_AddNumberToObject(sch, "last_batch_iteration", (double)e->applied - 1);
    cJSON *ls = NULL;
    if (rt_scaler_state_to_json(&e->scaler, &ls) == DSCKPT_OK) cJSON_AddItemToObject(st, "loss_scaler", ls);
    cJSON *eng = cJSON_AddObjectToObject(st, "engine");
    cJSON_AddNumberToObject(eng, "applied_steps", (double)e->applied);
    cJSON_AddNumberToObject(eng, "global_steps", (double)e->nsteps);
    return st;
}

/* ---- saving ---- */

/* What the writer reads. An async save does not copy anything when it starts: the
 * writer reads the live partitions, which only the optimizer update (or a load)
 * changes. Right before the engine changes them (rt_engine_set_pre_update), the
 * training thread copies every partition the writer has not finished reading into
 * `copy` and points the writer there. A save that is written within one step
 * therefore costs training no copy at all; a slower one costs one memcpy of what
 * is left, at the next update. `lock` orders the writer's reads against that
 * switch (read side: the writer; write side: the switch). */
typedef struct snap {
    const rt_engine *e;
    float *buf[3][NG];     /* fp32, exp_avg, exp_avg_sq partitions (live, or the copy) */
    uint64_t left[3][NG];  /* elements of each the writer has yet to read */
    bool copied[3][NG];
    pthread_rwlock_t lock;
} snap;

/* Where elements [start, start+numel) of tensor t lie in this rank's partition of
 * its group (*at); false when the rank does not own them all. */
static bool owned_at(const rt_engine *e, uint32_t t, uint64_t start, uint64_t numel, uint64_t *at) {
    uint64_t s0, n, poff;
    rt_engine_own(e, &e->t[t], e->rank, &s0, &n, &poff);
    *at = poff + (start - s0);
    return start >= s0 && start + numel <= s0 + n;
}

static dsckpt_status snap_fill(void *u, ds_state s, uint32_t t, uint64_t start, uint64_t numel, void *dst, int worker) {
    (void)worker;
    snap *sn = u;
    const rt_engine *e = sn->e;
    if (s > DS_ST_EXP_AVG_SQ || t >= e->nt) return ds_err(DSCKPT_EINTERNAL, "engine checkpoint: unexpected state");
    uint64_t at;
    if (!owned_at(e, t, start, numel, &at))
        return ds_err(DSCKPT_EINTERNAL, "engine checkpoint: rank %d asked for elements it does not own", e->rank);
    int g = e->t[t].group;
    pthread_rwlock_rdlock(&sn->lock);
    memcpy(dst, sn->buf[s][g] + at, (size_t)numel * 4);
    __atomic_fetch_sub(&sn->left[s][g], numel, __ATOMIC_RELAXED);
    pthread_rwlock_unlock(&sn->lock);
    return DSCKPT_OK;
}

/* A synchronous save's data in place (ds_view_fn): the partitions (or their
 * snapshot) do not change until the save returns. NULL for anything the fill
 * would refuse, so that the fill reports it. */
static const void *snap_view(void *u, ds_state s, uint32_t t, uint64_t start, uint64_t numel) {
    const snap *sn = u;
    uint64_t at;
    if (s > DS_ST_EXP_AVG_SQ || t >= sn->e->nt || !owned_at(sn->e, t, start, numel, &at)) return NULL;
    return sn->buf[s][sn->e->t[t].group] + at;
}

struct rt_saver {
    rt_engine *e;
    bool async;
    int compress_level;   /* 0: plain rank files; else zstd (rt_saver_set_compress) */
    bool busy;            /* a save started and not committed */
    pthread_t th;
    bool th_live;
    atomic_int done;      /* the writer thread finished */
    dsckpt_status wst;    /* its status */
    char wmsg[512];
    ds_native_out *no;
    ds_tensor *ts;
    snap sn;
    float *copy;          /* snapshot storage: 3 x this rank's partitions */
    size_t copy_len;
    bool dev_snap;        /* the partitions are device memory: every save copies them into
                           * `copy` (the table's pinned host memory) when it starts */
    bool side_snap;       /* an async save's copy runs on the table's side stream: the
                           * writer waits for it, the next update fences on it */
    bool snap_pending;    /* side_snap: copies begun that the writer has not waited for */
    bool fence_due;       /* side_snap: copies begun that no update has fenced on */
    double copy_s;        /* seconds the training thread spent copying (pre-update) */
    char *save_dir, *tag;
    uint64_t step;        /* of the save in flight */
    cJSON *metrics;       /* its metrics (a copy), for on_commit */
    char committed[256];
    rt_commit_fn on_commit;
    void *commit_user;
    /* Test hook DSTRAIN_TEST_WRITER_WAIT_UPDATE: the writer starts only once the
     * next optimizer update has copied what it had not read (or the save is being
     * waited for), so the copy path is taken deterministically. */
    bool hook_wait;
    pthread_mutex_t hook_mu;
    pthread_cond_t hook_cv;
    bool hook_go;
};

static void hook_release(rt_saver *s) {
    if (!s->hook_wait) return;
    pthread_mutex_lock(&s->hook_mu);
    s->hook_go = true;
    pthread_cond_broadcast(&s->hook_cv);
    pthread_mutex_unlock(&s->hook_mu);
}

/* The engine is about to change its partitions: whatever the writer of a save in
 * flight has not read yet is copied first (training thread). */
static void pre_update(void *u) {
    rt_saver *s = u;
    if (s->fence_due) { /* the side copies must have read the partitions first */
        const rt_device *od = s->e->odev;
        dsckpt_status st = od->snap_fence(od->ctx); /* a failure stays in the table: its next sync reports it */
        DS_UNUSED(st);
        s->fence_due = false;
    }
    if (!s->th_live || atomic_load(&s->done)) return;
    snap *sn = &s->sn;
    const rt_engine *e = s->e;
    double t0 = rt_now_s();
    pthread_rwlock_wrlock(&sn->lock);
    float *q = s->copy;
    for (int g = 0; g < NG; g++)
        for (int k = 0; k < 3; k++) {
            if (!sn->copied[k][g] && __atomic_load_n(&sn->left[k][g], __ATOMIC_RELAXED)) {
                memcpy(q, sn->buf[k][g], (size_t)e->plen[g] * 4);
                sn->buf[k][g] = q;
                sn->copied[k][g] = true;
            }
            q += e->plen[g];
        }
    pthread_rwlock_unlock(&sn->lock);
    s->copy_s += rt_now_s() - t0;
    hook_release(s);
}

void rt_saver_set_compress(rt_saver *s, int level) { s->compress_level = level; }

/* The hash (and, compressed, the storage) chunk of dstrain's rank files. A resume
 * at another world size reads each rank file's regions in part and checks every
 * chunk it touches whole: with 16 MiB chunks (the library's default) the ranks of
 * a 4 -> 3 resume hashed 38-88 % more bytes than they read, and the read took
 * 0.80-0.92 s; with 4 MiB 0.58-0.66 s, with 2 MiB 0.56-0.59 s (bench/RESULTS.md,
 * issue 15). Smaller chunks cost manifest size: at 4 MiB ~17 MB of digests per TB
 * of checkpoint. */
#define RT_SAVE_CHUNK ((uint64_t)4 << 20)

dsckpt_status rt_saver_create(rt_engine *e, bool async, rt_saver **out) {
    rt_saver *s = NULL;
    DS_TRY(ds_calloc(1, sizeof *s, &s));
    s->e = e;
    s->async = async;
    if (pthread_rwlock_init(&s->sn.lock, NULL)) {
        free(s);
        return ds_err(DSCKPT_EINTERNAL, "cannot create the checkpoint writer's lock");
    }
    /* Partitions the host cannot read (a GPU's) are snapshotted by the table's copies
     * when a save starts (sync or async); host partitions are read in place. */
    s->dev_snap = !e->odev->host_memory;
    s->side_snap = async && s->dev_snap && e->odev->snap_begin;
    s->hook_wait = async && !s->dev_snap && ds_test_hook("DSTRAIN_TEST_WRITER_WAIT_UPDATE") != NULL;
    if (s->hook_wait) {
        pthread_mutex_init(&s->hook_mu, NULL);
        pthread_cond_init(&s->hook_cv, NULL);
    }
    if (async || s->dev_snap) {
        /* The copy is allocated and touched now, so the update (or save) that needs
         * it pays no page faults. */
        size_t need = 0;
        for (int g = 0; g < NG; g++) need += 3 * (size_t)e->plen[g];
        dsckpt_status st = s->dev_snap ? e->odev->alloc_host(e->odev->ctx, need * sizeof *s->copy, (void **)&s->copy)
                                       : rt_alloc_touched(&s->copy, need * sizeof *s->copy, "the async save buffer");
        if (st) {
            pthread_rwlock_destroy(&s->sn.lock);
            free(s);
            return st;
        }
        s->copy_len = need;
        if (async) rt_engine_set_pre_update(e, pre_update, s);
    }
    *out = s;
    return DSCKPT_OK;
}

double rt_saver_take_copy_seconds(rt_saver *s) {
    double v = s ? s->copy_s : 0;
    if (s) s->copy_s = 0;
    return v;
}

static void save_clear(rt_saver *s) {
    ds_native_out_free(s->no);
    s->no = NULL;
    if (s->ts)
        for (size_t i = 0; i < s->e->nt; i++) ds_tensor_clear(&s->ts[i]);
    free(s->ts);
    s->ts = NULL;
    free(s->save_dir);
    free(s->tag);
    s->save_dir = s->tag = NULL;
    cJSON_Delete(s->metrics);
    s->metrics = NULL;
    s->busy = false;
}

/* side_snap: waits until the side copies of the save are on the host (the writer,
 * before it reads them; and before `copy` is freed). */
static dsckpt_status snap_landed(rt_saver *s) {
    if (!s->snap_pending) return DSCKPT_OK;
    s->snap_pending = false;
    const rt_device *od = s->e->odev;
    return od->snap_wait(od->ctx);
}

static void join(rt_saver *s) {
    if (s->th_live) {
        hook_release(s);
        pthread_join(s->th, NULL);
        s->th_live = false;
    }
}

void rt_saver_free(rt_saver *s) {
    if (!s) return;
    join(s);
    save_clear(s);
    if (s->async) rt_engine_set_pre_update(s->e, NULL, NULL);
    pthread_rwlock_destroy(&s->sn.lock);
    if (s->hook_wait) {
        pthread_mutex_destroy(&s->hook_mu);
        pthread_cond_destroy(&s->hook_cv);
    }
    (void)snap_landed(s); /* no side copy may still be landing in `copy` */
    if (s->dev_snap) s->e->odev->free_host(s->e->odev->ctx, s->copy);
    else free(s->copy);
    free(s);
}

bool rt_saver_busy(const rt_saver *s) { return s && s->busy; }

void rt_saver_on_commit(rt_saver *s, rt_commit_fn fn, void *user) {
    s->on_commit = fn;
    s->commit_user = user;
}

/* Stage 0 has one copy of everything: rank 0 writes the one file. */
static bool writes_file(const rt_engine *e) { return e->stage != 0 || e->rank == 0; }

/* The training threads (one in a build without OpenMP: the fuzz targets' runtime). */
static int training_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int rt_saver_threads(const rt_saver *s) {
    /* An async save writes beside training. Where the optimizer state is in host
     * memory (CPU training, or the optimizer offloaded to the CPU) the training
     * threads need the cores, so it writes on one; where the model and the
     * optimizer are on a device the host cores wait through a step, so it takes
     * all the training threads but one (the one that drives the device). */
    if (!s->async) return training_threads();
    return s->e->odev->host_memory ? 1 : DS_MAX(1, training_threads() - 1);
}

static dsckpt_status write_own(rt_saver *s) {
    const rt_engine *e = s->e;
    if (!writes_file(e)) return DSCKPT_OK;
    /* An async save's partitions change under it (pre_update): it copies. */
    ds_native_set_view(s->no, s->async ? NULL : snap_view);
    return ds_native_write_rank(s->no, e->stage == 0 ? 0 : e->rank, snap_fill, &s->sn, 0, rt_saver_threads(s), NULL);
}

static void *writer(void *p) {
    rt_saver *s = p;
    if (s->hook_wait) { /* see rt_saver.hook_wait (tests/rt_ckpt_test.sh) */
        pthread_mutex_lock(&s->hook_mu);
        while (!s->hook_go) pthread_cond_wait(&s->hook_cv, &s->hook_mu);
        pthread_mutex_unlock(&s->hook_mu);
    }
    s->wst = snap_landed(s);
    if (!s->wst) s->wst = write_own(s);
    if (s->wst) snprintf(s->wmsg, sizeof s->wmsg, "%s", dsckpt_last_error());
    atomic_store(&s->done, 1);
    return NULL;
}

/* The commit (docs/DESIGN.md §4): every rank's file is durable when its writer
 * finished. Rank 0 alone gathers what each rank tells it (a header: record length,
 * writer failed or not; then the commit records: digests, compressed chunk
 * records), so a rank sends its own record once and only rank 0 receives them all;
 * rank 0 then writes the manifest and `latest`, and broadcasts its verdict (8
 * bytes): every rank learns whether the save was committed, and who failed. */
enum { VERDICT_OK = 0, VERDICT_RANK_FAILED, VERDICT_MANIFEST_FAILED };

/* Rank 0: the verdict on the gathered headers and records; on success the records
 * are taken in and the manifest and `latest` written. *who: the failed rank. */
static dsckpt_status commit_root(rt_saver *s, int nfiles, const uint64_t *hdrs, const uint8_t *recs,
                                 int32_t *verdict, int32_t *who) {
    const rt_engine *e = s->e;
    for (int r = 0; r < e->W; r++)
        if (hdrs[2 * r + 1]) {
            *verdict = VERDICT_RANK_FAILED;
            *who = r;
            return r == 0 ? DSCKPT_OK : ds_err(DSCKPT_EIO, "saving %s: rank %d failed to write its file", s->tag, r);
        }
    dsckpt_status st = DSCKPT_OK;
    size_t off = (size_t)hdrs[0];
    for (int r = 1; r < nfiles && !st; r++) {
        st = ds_native_file_record_set(s->no, r, recs + off, (size_t)hdrs[2 * r]);
        off += (size_t)hdrs[2 * r];
    }
    if (!st) st = ds_fsync_dir(s->save_dir); /* the tag directory's entry, before the manifest */
    if (!st) st = ds_native_write_manifest(s->no);
    if (!st) st = ds_set_latest(s->save_dir, s->tag);
    if (st) *verdict = VERDICT_MANIFEST_FAILED;
    return st;
}

/* Rank 0 gets every rank's header and record: two gathers to rank 0. */
static dsckpt_status commit_gather(rt_saver *s, const uint64_t hdr[2], const uint8_t *rec, uint64_t **hdrs,
                                   uint8_t **recs) {
    rt_engine *e = s->e;
    bool root = e->rank == 0;
    size_t *lens = NULL, total = 0;
    if (root) DS_TRY(ds_calloc((size_t)e->W, 2 * sizeof **hdrs, hdrs));
    dsckpt_status st = rt_comm_gather(e->comm, hdr, 2 * sizeof *hdr, 0, root ? *hdrs : NULL);
    if (!st && root && !(st = ds_calloc((size_t)e->W, sizeof *lens, &lens))) {
        for (int r = 0; r < e->W; r++) total += (size_t)(lens[r] = (size_t)(*hdrs)[2 * r]);
        st = ds_malloc(total ? total : 1, recs);
    }
    /* On the root, a failure above leaves recs NULL: the gather then refuses on
     * every rank (rt_comm_gatherv), so no rank waits for it. */
    dsckpt_status gst = rt_comm_gatherv(e->comm, rec, (size_t)hdr[0], 0, root ? *recs : NULL, lens);
    free(lens);
    return st ? st : gst;
}

static dsckpt_status commit(rt_saver *s) {
    rt_engine *e = s->e;
    int nfiles = e->stage == 0 ? 1 : e->W;
    char own[512] = "";
    uint8_t *rec = NULL, *recs = NULL;
    size_t n = 0;
    /* This rank's part: its writer's outcome and its file's record. */
    dsckpt_status lst = s->wst;
    if (lst) snprintf(own, sizeof own, "%s", s->wmsg);
    else if (e->rank < nfiles && (lst = ds_native_file_record(s->no, e->rank, &rec, &n)) != DSCKPT_OK)
        snprintf(own, sizeof own, "%s", dsckpt_last_error());
    uint64_t hdr[2] = {lst ? 0 : n, lst ? 1 : 0}, *hdrs = NULL;
    dsckpt_status st = commit_gather(s, hdr, rec, &hdrs, &recs);
    free(rec);
    int32_t v[2] = {VERDICT_OK, 0}; /* verdict, failed rank */
    if (!st && e->rank == 0) st = commit_root(s, nfiles, hdrs, recs, &v[0], &v[1]);
    free(hdrs);
    free(recs);
    if (st && v[0] == VERDICT_OK) return st; /* the gathers failed, on every rank alike */
    char msg[512];
    snprintf(msg, sizeof msg, "%s", st ? dsckpt_last_error() : "");
    dsckpt_status bst = rt_comm_bcast(e->comm, v, sizeof v, 0);
    if (lst) return ds_err(lst, "%s", own);
    if (st) return ds_err(st, "%s", msg);
    if (bst) return bst;
    if (v[0] == VERDICT_RANK_FAILED)
        return ds_err(DSCKPT_EIO, "saving %s: rank %d failed to write its file", s->tag, v[1]);
    if (v[0] != VERDICT_OK) return ds_err(DSCKPT_EIO, "saving %s: rank 0 could not write the manifest", s->tag);
    snprintf(s->committed, sizeof s->committed, "%s", s->tag);
    return DSCKPT_OK;
}

dsckpt_status rt_saver_poll(rt_saver *s, bool wait, const char **committed) {
    if (committed) *committed = NULL;
    if (!s->busy) return DSCKPT_OK;
    if (s->th_live) {
        bool pending = !atomic_load(&s->done);
        if (!wait) {
            DS_TRY(rt_comm_allreduce_or(s->e->comm, &pending));
            if (pending) return DSCKPT_OK;
        }
        join(s);
    }
    dsckpt_status st = commit(s);
    if (!st && s->on_commit) st = s->on_commit(s->commit_user, s->committed, s->step, s->metrics);
    save_clear(s);
    if (!st && committed) *committed = s->committed;
    return st;
}

/* Rank 0 makes the tag directory; an incomplete one (no manifest: an earlier
 * crashed save of this step) is cleared first. Every rank gets the verdict. */
static dsckpt_status make_tag_dir(rt_engine *e, const char *save_dir, const char *tagdir) {
    dsckpt_status st = DSCKPT_OK;
    bool bad = false;
    if (e->rank == 0) {
        if (mkdir(save_dir, 0755) && errno != EEXIST) st = ds_err_errno(errno, "cannot create %s", save_dir);
        char *man = st ? NULL : ds_join(tagdir, "manifest.json");
        if (!st && man && ds_exists(man)) st = ds_err(DSCKPT_EEXIST, "%s already holds a complete checkpoint", tagdir);
        else if (!st && ds_exists(tagdir)) {
            if (rt_only_save_files(tagdir)) ds_rmtree(tagdir);
            else st = ds_err(DSCKPT_EEXIST, "%s holds files dstrain did not write (a DeepSpeed checkpoint?); "
                             "not replacing it", tagdir);
        }
        if (!st) st = ds_mkdir(tagdir); /* made durable by the commit (fsync of save_dir) */
        free(man);
        bad = st != DSCKPT_OK;
    }
    dsckpt_status cst = rt_comm_allreduce_or(e->comm, &bad);
    if (st || cst) return st ? st : cst;
    if (bad) return ds_err(DSCKPT_EIO, "rank 0 could not create %s", tagdir);
    return DSCKPT_OK;
}

/* The writer reads the live partitions (async: until pre_update copies them):
 * each group's fp32 master and moments, with the elements this rank owns left. */
static void snap_arm(rt_saver *s) {
    rt_engine *e = s->e;
    s->sn.e = e;
    for (int g = 0; g < NG; g++) {
        float *live[3] = {e->master[g], e->m1[g], e->m2[g]};
        uint64_t owned = 0;
        for (size_t i = 0; i < e->nt; i++) {
            if (e->t[i].group != g) continue;
            uint64_t s0, n, poff;
            rt_engine_own(e, &e->t[i], e->rank, &s0, &n, &poff);
            owned += n;
        }
        if (!writes_file(e)) owned = 0;
        for (int k = 0; k < 3; k++) {
            s->sn.buf[k][g] = live[k];
            s->sn.left[k][g] = owned;
            s->sn.copied[k][g] = false;
        }
    }
}

/* A device save's stall: the partitions copied to host memory now, nothing more
 * (the writer then reads the copies). With side_snap the copies only start here,
 * on the table's side stream: the writer waits for them, and the next update's
 * pre_update fences on them, so the stall is issuing them. */
static dsckpt_status snap_to_host(rt_saver *s) {
    rt_engine *e = s->e;
    const rt_device *od = e->odev;
    dsckpt_status st = DSCKPT_OK;
    float *q = s->copy;
    void *dst[3 * NG];
    const void *src[3 * NG];
    size_t bytes[3 * NG];
    int n = 0;
    for (int g = 0; g < NG && !st; g++)
        for (int k = 0; k < 3 && !st; k++) {
            if (s->sn.left[k][g]) {
                if (s->side_snap) {
                    dst[n] = q, src[n] = s->sn.buf[k][g], bytes[n++] = (size_t)e->plen[g] * 4;
                } else {
                    st = od->d2h(od->ctx, q, s->sn.buf[k][g], (size_t)e->plen[g] * 4);
                }
            }
            s->sn.buf[k][g] = q;
            s->sn.copied[k][g] = true;
            q += e->plen[g];
        }
    if (st) return st;
    if (!s->side_snap) return od->sync(od->ctx);
    DS_TRY(od->snap_begin(od->ctx, dst, src, bytes, n));
    s->snap_pending = s->fence_due = true;
    return DSCKPT_OK;
}

dsckpt_status rt_saver_start(rt_saver *s, const char *save_dir, const char *tag, const cJSON *state,
                             const cJSON *metrics, double *stall_s) {
    double t0 = rt_now_s();
    rt_engine *e = s->e;
    DS_TRY(rt_saver_poll(s, true, NULL));
    dsckpt_status st = DSCKPT_OK;
    cJSON *full = engine_state(e);
    for (const cJSON *it = state ? state->child : NULL; it; it = it->next)
        cJSON_AddItemToObject(full, it->string, cJSON_Duplicate(it, true));
    char *tagdir = ds_join(save_dir, tag);
    s->save_dir = ds_strdup(save_dir);
    s->tag = ds_strdup(tag);
    if (!tagdir || !s->save_dir || !s->tag) {
        st = DSCKPT_ENOMEM;
        goto done;
    }
    DS_TRYGOTO(make_tag_dir(e, save_dir, tagdir), done);
    DS_TRYGOTO(model_tensors(e, &s->ts), done);
    uint64_t step = 0;
    const char *p = strstr(tag, "global_step");
    if (p) step = strtoull(p + 11, NULL, 10);
    s->step = step;
    if (metrics && !(s->metrics = cJSON_Duplicate(metrics, true))) {
        st = ds_err(DSCKPT_ENOMEM, "out of memory copying a save's metrics");
        goto done;
    }
    const char *dt = e->wdt == DSCKPT_BF16 ? "bf16" : e->wdt == DSCKPT_F16 ? "fp16" : "fp32";
    ds_model_info mi = model_info(e);
    ds_native_spec spec = {.tensors = s->ts, .ntensors = e->nt, .ngroups = NG, .stage = e->stage,
                           .world_size = e->W, .tag = tag, .step = (int64_t)step, .train_dtype = dt,
                           .state = full, .ds_config = e->cfg->resolved, .metrics = metrics, .model = &mi,
                           .compress_level = s->compress_level, .chunk_size = RT_SAVE_CHUNK};
    DS_TRYGOTO(ds_native_prepare(&spec, tagdir, &s->no), done);
    s->busy = true;
    s->wst = DSCKPT_OK;
    atomic_store(&s->done, 0);
    snap_arm(s);
    if (s->dev_snap && (st = snap_to_host(s)) != DSCKPT_OK) {
        s->busy = false;
        goto done;
    }
    s->hook_go = false;
    if (s->async) {
        if (pthread_create(&s->th, NULL, writer, s)) {
            st = ds_err(DSCKPT_EINTERNAL, "cannot start the checkpoint writer thread");
            goto done;
        }
        s->th_live = true;
    } else {
        writer(s);
        st = rt_saver_poll(s, true, NULL);
    }
done:
    if (st && !s->th_live) save_clear(s);
    cJSON_Delete(full);
    free(tagdir);
    if (stall_s) *stall_s = rt_now_s() - t0;
    return st;
}

/* ---- loading ---- */

/* The tensor of c called `name` (its name or one of its aliases), or -1. */
static long find_tensor(const dsckpt_ckpt *c, const char *name) {
    for (size_t k = 0; k < ds_ckpt_ntensors(c); k++) {
        const ds_tensor *t = ds_ckpt_tensor(c, k);
        if (!strcmp(t->name, name)) return (long)k;
        for (size_t a = 0; a < t->naliases; a++)
            if (!strcmp(t->aliases[a], name)) return (long)k;
    }
    return -1;
}

static void shape_str(int nd, const uint64_t *sh, char *out, size_t n) {
    size_t o = (size_t)snprintf(out, n, "[");
    for (int d = 0; d < nd && o < n; d++) o += (size_t)snprintf(out + o, n - o, "%s%llu", d ? ", " : "", (unsigned long long)sh[d]);
    if (o < n) snprintf(out + o, n - o, "]");
}

dsckpt_status rt_engine_check_model(const rt_engine *e, const dsckpt_ckpt *c, const char *what) {
    const rt_model_cfg *mc = rt_model_config(e->model);
    const ds_model_info *m = ds_ckpt_model(c);
    if (m) {
        const struct {
            const char *key, *flag;
            uint64_t ck, run;
        } f[] = {{"n_layer", "--n_layer", m->n_layer, (uint64_t)mc->n_layer},
                 {"n_head", "--n_head", m->n_head, (uint64_t)mc->n_head},
                 {"n_embd", "--n_embd", m->n_embd, (uint64_t)mc->n_embd},
                 {"n_positions", "--seq_len", m->n_positions, (uint64_t)mc->n_ctx},
                 {"vocab_size", "byte-level", m->vocab_size, (uint64_t)mc->vocab_size}};
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
            if (f[i].ck != f[i].run)
                return ds_err(DSCKPT_EINVAL, "%s: checkpoint has %s=%llu, this run %s=%llu (%s); resume it with the "
                              "model it was trained as, or use another --save_dir", what, f[i].key,
                              (unsigned long long)f[i].ck, f[i].key, (unsigned long long)f[i].run, f[i].flag);
        if (strcmp(m->architecture, "gpt2") || !m->tie_word_embeddings)
            return ds_err(DSCKPT_EINVAL, "%s: checkpoint has architecture=%s tie_word_embeddings=%s, this run "
                          "architecture=gpt2 tie_word_embeddings=true", what, m->architecture,
                          m->tie_word_embeddings ? "true" : "false");
    }
    /* Every parameter with its exact shape, and nothing the model lacks (module
     * buffers, which hold no trained state, aside). This is the whole check for a
     * checkpoint without "model" (older dstrain, DeepSpeed). */
    size_t np;
    const rt_param *ps = rt_model_params(e->model, &np);
    char a[96], b[96];
    for (size_t i = 0; i < np; i++) {
        long k = find_tensor(c, ps[i].name);
        uint64_t want[2] = {(uint64_t)ps[i].shape[0], (uint64_t)ps[i].shape[1]};
        shape_str(ps[i].ndim, want, b, sizeof b);
        if (k < 0)
            return ds_err(DSCKPT_EINVAL, "%s: checkpoint has no tensor '%s', this run's model (n_layer=%d, n_embd=%d) "
                          "has it with shape %s", what, ps[i].name, mc->n_layer, mc->n_embd, b);
        const ds_tensor *t = ds_ckpt_tensor(c, (size_t)k);
        shape_str(t->ndim, t->shape, a, sizeof a);
        bool same = t->ndim == ps[i].ndim;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == want[d];
        if (!same)
            return ds_err(DSCKPT_EINVAL, "%s: checkpoint has '%s' with shape %s, this run %s", what, ps[i].name, a, b);
        if (!t->trainable)
            return ds_err(DSCKPT_EINVAL, "%s: checkpoint has '%s' frozen (no optimizer state), this run trains it",
                          what, ps[i].name);
    }
    for (size_t k = 0; k < ds_ckpt_ntensors(c); k++) {
        const ds_tensor *t = ds_ckpt_tensor(c, k);
        if (t->buffer) continue;
        bool known = false;
        for (size_t i = 0; i < np && !known; i++) {
            known = !strcmp(t->name, ps[i].name);
            for (size_t al = 0; al < t->naliases && !known; al++) known = !strcmp(t->aliases[al], ps[i].name);
        }
        if (!known) {
            shape_str(t->ndim, t->shape, a, sizeof a);
            return ds_err(DSCKPT_EINVAL, "%s: checkpoint has tensor '%s' %s, which this run's model (n_layer=%d, "
                          "n_embd=%d) does not have", what, t->name, a, mc->n_layer, mc->n_embd);
        }
    }
    return DSCKPT_OK;
}

/* A step count stored in a checkpoint's state: an integer in [0, 2^53 - 1]. */
static bool state_count(const cJSON *it, uint64_t *out) {
    if (!cJSON_IsNumber(it)) return false;
    double d = it->valuedouble;
    if (!(d >= 0) || d > 9007199254740991.0 || d != floor(d)) return false;
    *out = (uint64_t)d;
    return true;
}

/* The gradients are idle until the next step, which zeroes them first, and were
 * touched at start-up: a compressed checkpoint's chunk cache decodes into them
 * instead of into fresh pages (ds_fdset_lend). */
static void lend_gradients(const rt_engine *e, ds_fdset *fs) {
    if (!e->dev->host_memory) return;
    if (e->gfull) ds_fdset_lend(fs, e->gfull, (size_t)e->N * sizeof *e->gfull);
    for (int g = 0; g < NG; g++)
        if (e->gpart[g]) ds_fdset_lend(fs, e->gpart[g], (size_t)e->plen[g] * sizeof *e->gpart[g]);
}

/* tis[i]: the checkpoint's tensor for the model's tensor i, trainable, of the same
 * size, its states (fp32, and the moments when asked) stored as F32. */
static dsckpt_status match_tensors(const rt_engine *e, const dsckpt_ckpt *c, bool moments, uint32_t *tis) {
    size_t np;
    const rt_param *ps = rt_model_params(e->model, &np);
    for (size_t i = 0; i < e->nt; i++) {
        long ti = find_tensor(c, ps[i].name);
        const ds_tensor *ct = ti < 0 ? NULL : ds_ckpt_tensor(c, (size_t)ti);
        if (!ct || !ct->trainable || ct->numel != e->t[i].numel)
            return ds_err(DSCKPT_EINVAL, "%s: %s '%s' of %llu elements (the model has %llu)", ds_ckpt_dir(c),
                          !ct ? "no tensor" : !ct->trainable ? "no trainable tensor" : "tensor", ps[i].name,
                          !ct ? 0ull : (unsigned long long)ct->numel, (unsigned long long)e->t[i].numel);
        tis[i] = (uint32_t)ti;
        for (int s = 0; s < (moments ? 3 : 1); s++)
            if (ds_ckpt_state_dtype(c, (ds_state)s, (uint32_t)ti) != DSCKPT_F32)
                return ds_err(DSCKPT_EUNSUPPORTED, "%s: '%s' %s is not stored as F32", ds_ckpt_dir(c), ps[i].name,
                              ds_state_names[s]);
    }
    return DSCKPT_OK;
}

/* A device rank's partitions are read into pinned host memory (at least this
 * many floats, or the largest tensor share) a batch of tensors at a time and
 * copied up through the table. */
#define LOAD_STAGE_FLOATS ((uint64_t)16 << 20)

/* The reads of a load: into the partitions in host memory; for device ones into a
 * staging buffer, each batch then copied up (ups: a run of tensors lying end to
 * end both in the buffer and on the device is one copy). */
typedef struct {
    const rt_device *od;
    const dsckpt_ckpt *c;
    const ds_fdset *fs;
    int threads;
    ds_read_list rl;
    float *stage; /* NULL: host partitions */
    uint64_t cap, fill;
    struct load_up {
        float *dst;
        uint64_t off, n;
    } *ups;
    size_t nup, upcap;
} loader;

/* Reads what was added (on the training threads), and copies a staged batch up. */
static dsckpt_status loader_flush(loader *L) {
    DS_TRY(ds_read_list_run_threads(L->c, L->fs, &L->rl, L->threads));
    L->rl.n = 0;
    for (size_t i = 0; i < L->nup; i++)
        DS_TRY(L->od->h2d(L->od->ctx, L->ups[i].dst, L->stage + L->ups[i].off, (size_t)L->ups[i].n * sizeof(float)));
    if (L->nup) DS_TRY(L->od->sync(L->od->ctx)); /* the staging buffer is reused */
    L->nup = 0;
    L->fill = 0;
    return DSCKPT_OK;
}

static dsckpt_status loader_add(loader *L, ds_state s, uint32_t ti, uint64_t s0, uint64_t n, float *dst) {
    if (!L->stage) return ds_read_list_add(&L->rl, L->c, s, ti, s0, n, dst);
    if (L->fill + n > L->cap) DS_TRY(loader_flush(L));
    DS_TRY(ds_read_list_add(&L->rl, L->c, s, ti, s0, n, L->stage + L->fill));
    struct load_up *u = L->nup ? &L->ups[L->nup - 1] : NULL;
    if (u && u->dst + u->n == dst && u->off + u->n == L->fill) {
        u->n += n;
    } else {
        DS_TRY(ds_array_room(&L->ups, &L->upcap, L->nup, sizeof *L->ups));
        L->ups[L->nup++] = (struct load_up){.dst = dst, .off = L->fill, .n = n};
    }
    L->fill += n;
    return DSCKPT_OK;
}

/* The staging buffer of a device rank: LOAD_STAGE_FLOATS, or the largest tensor
 * share, but no more than the whole share. */
static dsckpt_status loader_stage(const rt_engine *e, bool moments, loader *L) {
    uint64_t most = 1, all = 0;
    for (size_t i = 0; i < e->nt; i++) {
        uint64_t s0, n, poff;
        rt_engine_own(e, &e->t[i], e->rank, &s0, &n, &poff);
        most = DS_MAX(most, n);
        all += n * (moments ? 3 : 1);
    }
    uint64_t stage = LOAD_STAGE_FLOATS;
    /* Test builds may ask for less, so that a small model loads in several batches
     * (tests/rt_device_test.sh). */
    const char *hs = ds_test_hook("DSTRAIN_TEST_LOAD_STAGE");
    if (hs && strtoull(hs, NULL, 10) > 0) stage = strtoull(hs, NULL, 10);
    L->cap = DS_MAX(most, DS_MIN(all, stage));
    return L->od->alloc_host(L->od->ctx, (size_t)L->cap * sizeof *L->stage, (void **)&L->stage);
}

/* Whether the ranks of this load share the check units they touch
 * (ds_read_share): several ranks with partitioned shares read into host memory
 * and talk over MPI. Test builds can turn it off (DSTRAIN_TEST_NO_SHARED_READS=1:
 * every rank reads and checks what it touches, as before), for comparisons. */
static bool shares_reads(const rt_engine *e, const loader *L) {
    const char *off = ds_test_hook("DSTRAIN_TEST_NO_SHARED_READS");
    return e->W > 1 && e->stage >= 1 && !L->stage && strcmp(rt_comm_backend(e->comm), "mpi") == 0 &&
           !(off && strcmp(off, "1") == 0);
}

/* Memory for the blocks a load sends and receives: the working weights, when they
 * are host memory (the load rebuilds them when it succeeds; after a failed load
 * the engine is loaded again, set up afresh or ended). Touched at start-up, so the
 * exchange faults in no fresh pages; *bytes = 0 when there is none. */
static uint8_t *lent_weights(const rt_engine *e, uint64_t *bytes) {
    uint8_t *w = NULL;
    *bytes = 0;
    if (!e->dev->host_memory) return NULL;
    if (e->stage != 3) {
        *bytes = (e->wlen ? e->wlen : 1) * e->ws;
        return e->w;
    }
    for (int g = 0; g < NG && !e->poff; g++) {
        uint64_t b = (e->plen[g] ? e->plen[g] : 1) * e->ws; /* as engine_buffers allocates it */
        if (b > *bytes) {
            w = e->w3[g];
            *bytes = b;
        }
    }
    return w;
}

/* Every rank's extents, on every rank: `all` holds rank 0's counts[0], then rank
 * 1's, ... (mine: this rank's list, empty for a rank that already failed). */
static dsckpt_status gather_extents(rt_engine *e, const ds_read_list *mine, ds_read_extent **all, size_t *counts) {
    int W = e->W;
    uint64_t n = mine->n, *ns = NULL, most = 0, total = 0;
    ds_read_extent *pad = NULL, *own = NULL;
    DS_TRY(ds_calloc((size_t)W, sizeof *ns, &ns));
    dsckpt_status st = rt_comm_allgather(e->comm, &n, sizeof n, ns);
    for (int r = 0; r < W && !st; r++) {
        most = DS_MAX(most, ns[r]);
        total += ns[r];
        counts[r] = (size_t)ns[r];
    }
    /* Zeroed, padding included: the blocks go out whole. */
    if (!st) st = ds_calloc(most ? (size_t)most : 1, sizeof *own, &own);
    if (!st) st = ds_calloc((size_t)W * (most ? (size_t)most : 1), sizeof *pad, &pad);
    if (!st) st = ds_calloc(total ? (size_t)total : 1, sizeof **all, all);
    for (size_t i = 0; i < mine->n && !st; i++)
        own[i] = (ds_read_extent){.file = mine->runs[i].file, .offset = mine->runs[i].offset, .bytes = mine->runs[i].bytes};
    if (!st) st = rt_comm_allgather(e->comm, own, (size_t)most * sizeof *own, pad);
    for (int r = 0, at = 0; r < W && !st; r++)
        for (size_t i = 0; i < counts[r]; i++) (*all)[at++] = pad[(size_t)r * most + i];
    free(ns);
    free(own);
    free(pad);
    return st;
}

/* The host reads of a load (st: this rank's status so far), each check unit that
 * several ranks touch read and checked by one of them, which sends the others
 * their pieces of it (ds_read_share). Collective: every rank comes here, and a
 * rank that already failed plans with an empty list (the others read all they
 * need) and still takes part in the exchange. The bytes moved go through the
 * working weights (lent_weights), each rank's sends plus receives within what the
 * rank with the least has. If no rank has any, or any rank could not plan, every
 * rank reads its own list whole. What a rank received was checked by its sender;
 * the load's agreement (agree) fails every rank when any of them failed. */
static dsckpt_status read_shared(rt_engine *e, loader *L, dsckpt_status st) {
    static const ds_read_list none;
    const ds_read_list *mine = st ? &none : &L->rl;
    uint64_t have;
    uint8_t *mem = lent_weights(e, &have);
    double least = -(double)have; /* the budget: what the rank with the least has */
    dsckpt_status cst = rt_comm_allreduce_max_f64(e->comm, &least, 1);
    if (cst) return st ? st : cst;
    uint64_t budget = (uint64_t)-least;
    if (!budget) return st ? st : loader_flush(L);
    size_t *counts = NULL;
    ds_read_extent *all = NULL;
    ds_read_share plan = {0};
    dsckpt_status pst = ds_calloc((size_t)e->W, sizeof *counts, &counts);
    if (!pst) pst = gather_extents(e, mine, &all, counts);
    if (pst == DSCKPT_EMPI) {
        free(counts);
        free(all);
        return pst;
    }
    if (!pst) pst = ds_read_share_plan(L->c, mine, e->rank, e->W, all, counts, budget, &plan);
    if (!pst && plan.send_total + plan.recv_total > have)
        pst = ds_err(DSCKPT_EINTERNAL, "read plan: %llu bytes to move, over the budget",
                     (unsigned long long)(plan.send_total + plan.recv_total));
    free(counts);
    free(all);
    bool failed = pst != DSCKPT_OK;
    cst = rt_comm_allreduce_or(e->comm, &failed);
    if (!cst && !failed) {
        ds_read_share_bind(&plan, mem);
        if (!st) st = ds_read_list_run_threads(L->c, L->fs, &plan.list, L->threads);
        cst = rt_comm_exchangev(e->comm, mem, plan.send_bytes, mem + plan.send_total, plan.recv_bytes);
        if (!st && !cst) ds_read_share_scatter(&plan, mem + plan.send_total);
    } else if (!cst && !st) { /* some rank could not plan: every one reads its own */
        st = loader_flush(L);
    }
    ds_read_share_free(&plan);
    return st ? st : cst;
}

static dsckpt_status load_parts(rt_engine *e, const dsckpt_ckpt *c, bool moments) {
    ds_fdset fs;
    loader L = {.od = e->odev, .c = c, .fs = &fs, .threads = training_threads()};
    if (!L.od->host_memory) DS_TRY(loader_stage(e, moments, &L));
    dsckpt_status st = ds_fdset_open_lazy(c, &fs); /* only the files holding this rank's share */
    if (st) {
        if (L.stage) L.od->free_host(L.od->ctx, L.stage);
        return st;
    }
    /* Read on the training threads, which wait for the load anyway: each chunk's
     * pieces (a ZeRO-3 rank file holds a slice of every tensor) read by one of them
     * in one pass (ds_read_list_run_threads). One thread reads in order, each piece
     * once, the chunk's verdict with its last byte, and ds_fdset_finish below for
     * the rest before anything is accepted. */
    ds_fdset_defer_checks(&fs);
    lend_gradients(e, &fs);
    if (!L.stage) ds_fdset_stream_reads(&fs); /* the shares are read again only by the rebuild, after all of them */
    uint32_t *tis = calloc(e->nt ? e->nt : 1, sizeof *tis);
    if (!tis) st = ds_err(DSCKPT_ENOMEM, "out of memory");
    if (!st) st = match_tensors(e, c, moments, tis);
    /* State by state, group by group, tensors in order: each (state, group) lies
     * in one region of every rank file, so the reads go forwards through it (and a
     * compressed file's chunks are decoded once, not again for every piece they
     * hold: reading in model order, which alternates between the groups, decoded
     * 3.4x the bytes of a 4 -> 2 resume). The share of a group is one run per rank
     * file it lies in (ds_read_list), so a chunk that a tensor boundary falls in is
     * read once, not its tail twice. */
    for (int s = 0; s < (moments ? 3 : 1) && !st; s++) {
        for (int g = 0; g < NG && !st; g++) {
            for (size_t i = 0; i < e->nt && !st; i++) {
                const et *T = &e->t[i];
                uint64_t s0, n, poff;
                if (T->group != g) continue;
                rt_engine_own(e, T, e->rank, &s0, &n, &poff);
                if (n) st = loader_add(&L, (ds_state)s, tis[i], s0, n, (s == 0 ? e->master : s == 1 ? e->m1 : e->m2)[g] + poff);
            }
        }
    }
    if (shares_reads(e, &L)) st = read_shared(e, &L, st);
    else if (!st) st = loader_flush(&L);
    if (!st) st = ds_fdset_finish(c, &fs);
    ds_read_list_free(&L.rl);
    free(L.ups);
    free(tis);
    ds_fdset_close(&fs);
    if (L.stage) L.od->free_host(L.od->ctx, L.stage);
    return st;
}

/* Every rank must succeed, or all fail together (no rank left waiting). When one
 * found the checkpoint damaged, every rank fails as corrupt, so the verdict (the
 * exit code, and whether --resume auto goes on to an older checkpoint) is the same
 * on all of them whichever rank saw the damage. */
static dsckpt_status agree(rt_engine *e, dsckpt_status st) {
    bool damaged = st == DSCKPT_ECORRUPT || st == DSCKPT_ECHECKSUM || st == DSCKPT_EVERSION;
    double v[2] = {st != DSCKPT_OK, damaged};
    dsckpt_status cst = rt_comm_allreduce_f64(e->comm, v, 2);
    if (cst) return st ? st : cst;
    if (v[1] > 0) {
        if (damaged) return st;
        if (st) return ds_err_prefix(DSCKPT_ECORRUPT, "another rank found the checkpoint damaged; this rank");
        return ds_err(DSCKPT_ECORRUPT, "another rank found the checkpoint damaged (its message says where)");
    }
    if (st) return st;
    if (v[0] > 0) return ds_err(DSCKPT_EIO, "another rank failed to load the checkpoint");
    return DSCKPT_OK;
}

static dsckpt_status load_common(rt_engine *e, const char *path, const char *tag, bool moments, cJSON **state_out,
                                 double *read_s) {
    double t0 = rt_now_s();
    dsckpt_ckpt *c = NULL;
    dsckpt_status st = dsckpt_ckpt_open(path, tag, &c);
    if (!st) st = rt_engine_check_model(e, c, ds_ckpt_dir(c));
    /* The step counters, checked before anything changes. */
    const cJSON *state = !st ? ds_ckpt_state_json(c) : NULL;
    uint64_t applied = 0, nsteps = 0;
    if (!st && moments) {
        const cJSON *eng = state ? cJSON_GetObjectItemCaseSensitive(state, "engine") : NULL;
        const cJSON *ap = eng ? cJSON_GetObjectItemCaseSensitive(eng, "applied_steps") : NULL;
        const cJSON *gs = eng ? cJSON_GetObjectItemCaseSensitive(eng, "global_steps") : NULL;
        if (ap || gs) {
            if (!state_count(ap, &applied) || !state_count(gs, &nsteps))
                st = ds_err(DSCKPT_ECORRUPT, "%s: state.engine: applied_steps and global_steps must be integers in "
                            "[0, 2^53 - 1]", ds_ckpt_dir(c));
        } else { /* a checkpoint from elsewhere: the optimizer step of group 0 */
            const cJSON *pg = cJSON_GetArrayItem(
                cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(state, "optimizer"), "param_groups"), 0);
            const cJSON *sp = pg ? cJSON_GetObjectItemCaseSensitive(pg, "step") : NULL;
            if (sp && !state_count(sp, &applied))
                st = ds_err(DSCKPT_ECORRUPT, "%s: state.optimizer.param_groups[0].step must be an integer in "
                            "[0, 2^53 - 1]", ds_ckpt_dir(c));
            if (!sp || !applied) applied = ds_ckpt_step(c) > 0 ? (uint64_t)ds_ckpt_step(c) : 0;
            nsteps = applied;
        }
    }
    rt_engine_before_change(e);
    /* What a failed load must leave as it was: with the partitions all overwritten
     * by the next load, a load after a failed one (--resume auto going on to an
     * older checkpoint) is the same as a first one. */
    const uint64_t applied0 = e->applied, nsteps0 = e->nsteps;
    const rt_scaler_state scaler0 = e->scaler.st;
    if (!st) st = load_parts(e, c, moments);
    if (!st && moments) {
        e->applied = applied;
        e->nsteps = nsteps;
        const cJSON *ls = state ? cJSON_GetObjectItemCaseSensitive(state, "loss_scaler") : NULL;
        if (!st && ls && !cJSON_IsNull(ls) && e->scaler.kind != RT_SCALER_STATIC) st = rt_scaler_state_from_json(&e->scaler, ls);
        if (!st && state_out) *state_out = state ? cJSON_Duplicate(state, true) : cJSON_CreateObject();
    }
    dsckpt_ckpt_free(c);
    st = agree(e, st);
    if (read_s) *read_s = rt_now_s() - t0;
    if (st) {
        e->applied = applied0;
        e->nsteps = nsteps0;
        e->scaler.st = scaler0;
        if (state_out) {
            cJSON_Delete(*state_out);
            *state_out = NULL;
        }
        return st;
    }
    return rt_engine_refresh_working(e);
}

dsckpt_status rt_engine_load(rt_engine *e, const char *path, const char *tag, cJSON **state_out, double *read_s) {
    return load_common(e, path, tag, true, state_out, read_s);
}

dsckpt_status rt_engine_load_weights(rt_engine *e, const char *path, const char *tag) {
    return load_common(e, path, tag, false, NULL, NULL);
}
