/*
 * native_write.c — rank files, manifest and `latest` of a native checkpoint
 * (see native_write.h).
 */
#include "native_write.h"

#include "copyengine.h"
#include "fsutil.h"
#include "manifest.h"
#include "zfile.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void ds_native_out_free(ds_native_out *o) {
    if (!o) return;
    if (o->plans && o->layout)
        for (int r = 0; r < o->layout->nfiles; r++) ds_rank_plan_clear(&o->plans[r]);
    free(o->plans);
    ds_layout_free(o->layout);
    dsckpt_ckpt_free(o->c);
    free(o);
}

static dsckpt_status add_carried(cJSON *root, const char *key, const cJSON *v) {
    cJSON *d = v ? cJSON_Duplicate(v, 1) : cJSON_CreateObject();
    if (!d || !cJSON_AddItemToObject(root, key, d)) {
        cJSON_Delete(d);
        return ds_err(DSCKPT_ENOMEM, "out of memory");
    }
    return DSCKPT_OK;
}

/* The handle's identity, tensors and carried JSON (state, ds_config, metrics, model). */
static dsckpt_status prepare_handle(dsckpt_ckpt *c, const ds_native_spec *sp, const char *dir) {
    c->format = ds_strdup("dsckpt");
    c->dir = ds_strdup(dir);
    c->tag = ds_strdup(sp->tag);
    c->train_dtype = ds_strdup(sp->train_dtype);
    if (!c->format || !c->dir || !c->tag || !c->train_dtype) return ds_err(DSCKPT_ENOMEM, "out of memory planning a checkpoint");
    c->step = sp->step;
    c->world_size = sp->world_size;
    c->stage = sp->stage;
    c->ngroups = sp->ngroups;
    DS_TRY(ds_calloc(sp->ntensors, sizeof *c->tensors, &c->tensors));
    for (size_t i = 0; i < sp->ntensors; i++) {
        c->ntensors = i + 1;
        DS_TRY(ds_tensor_copy(&c->tensors[i], &sp->tensors[i]));
    }
    c->ntensors = sp->ntensors;
    c->manifest = cJSON_CreateObject();
    if (!c->manifest) return ds_err(DSCKPT_ENOMEM, "out of memory planning a checkpoint");
    DS_TRY(add_carried(c->manifest, "state", sp->state));
    DS_TRY(add_carried(c->manifest, "ds_config", sp->ds_config));
    DS_TRY(add_carried(c->manifest, "metrics", sp->metrics));
    if (sp->model) {
        c->model = *sp->model;
        c->has_model = true;
    }
    return DSCKPT_OK;
}

/* Each rank file's plan and name, then every state's fragments from the plans. */
static dsckpt_status prepare_files(ds_native_out *o, const char *dir, const char *tag) {
    dsckpt_ckpt *c = o->c;
    int nf = o->layout->nfiles;
    DS_TRY(ds_calloc((size_t)nf, sizeof *o->plans, &o->plans));
    DS_TRY(ds_calloc((size_t)nf, sizeof *c->files, &c->files));
    c->nfiles = (size_t)nf;
    size_t cnt[DS_NSTATES] = {0}; /* fragments per state */
    for (int r = 0; r < nf; r++) {
        DS_TRY(ds_rank_plan_make(o->layout, c->tensors, r, tag, &o->plans[r]));
        char name[64];
        snprintf(name, sizeof name, DS_RANK_FILE_FMT, r);
        c->files[r].name = ds_strdup(name);
        c->files[r].path = ds_join(dir, name);
        if (!c->files[r].name || !c->files[r].path) return ds_err(DSCKPT_ENOMEM, "out of memory planning a checkpoint");
        c->files[r].rank = r;
        c->files[r].size = o->plans[r].plan->file_size;
        for (size_t e = 0; e < o->plans[r].n; e++)
            cnt[o->plans[r].entries[e].state] += o->layout->ranks[r].bufs[o->plans[r].entries[e].buf].npieces;
    }
    for (int s = 0; s < DS_NSTATES; s++) DS_TRY(ds_calloc(cnt[s], sizeof *c->frags[s], &c->frags[s]));
    for (int r = 0; r < nf; r++) {
        const ds_rank_plan *rp = &o->plans[r];
        for (size_t e = 0; e < rp->n; e++) {
            const ds_buf *b = &o->layout->ranks[r].bufs[rp->entries[e].buf];
            ds_state s = rp->entries[e].state;
            uint64_t base = rp->plan->header_bytes + rp->plan->offset[e];
            size_t es = dsckpt_dtype_size(b->dtype);
            for (size_t k = 0; k < b->npieces; k++) {
                const ds_piece *p = &b->pieces[k];
                c->frags[s][c->nfrags[s]++] = (ds_frag){.tensor = p->tensor, .file = (uint32_t)r, .start = p->start,
                                                        .numel = p->numel, .offset = base + p->buf_off * es,
                                                        .dtype = b->dtype};
            }
        }
    }
    return DSCKPT_OK;
}

dsckpt_status ds_native_prepare(const ds_native_spec *sp, const char *dir, ds_native_out **out) {
    ds_native_out *o = calloc(1, sizeof *o);
    if (!o) return ds_err(DSCKPT_ENOMEM, "out of memory");
    dsckpt_status st = ds_ckpt_new(&o->c);
    o->compress_level = sp->compress_level;
    o->chunk_size = sp->chunk_size ? sp->chunk_size : o->compress_level ? DS_ZCHUNK_DEFAULT_CHUNK : DS_DEFAULT_CHUNK;
    if (st == DSCKPT_OK && !ds_safe_name(sp->tag)) st = ds_err(DSCKPT_EINVAL, "tag '%s' is not a plain directory name", sp->tag);
    if (st == DSCKPT_OK && o->compress_level && !ds_zchunk_level_ok(o->compress_level))
        st = ds_err(DSCKPT_EINVAL, "compression level %d (zstd levels are 1 to 22)", o->compress_level);
    if (st == DSCKPT_OK && o->compress_level && o->chunk_size > DS_ZCHUNK_MAX_RAW)
        st = ds_err(DSCKPT_EINVAL, "chunk size %llu: compressed chunks are at most %llu bytes",
                    (unsigned long long)o->chunk_size, (unsigned long long)DS_ZCHUNK_MAX_RAW);
    if (st == DSCKPT_OK) st = ds_layout_make(sp->tensors, sp->ntensors, sp->ngroups, sp->stage, sp->world_size, &o->layout);
    if (st == DSCKPT_OK) st = prepare_handle(o->c, sp, dir);
    if (st == DSCKPT_OK) st = prepare_files(o, dir, sp->tag);
    if (st == DSCKPT_OK) st = ds_ckpt_index(o->c, NULL, NULL);
    if (st) {
        ds_native_out_free(o);
        return st;
    }
    *out = o;
    return DSCKPT_OK;
}

uint64_t ds_native_total_bytes(const ds_native_out *o) {
    uint64_t t = 0;
    for (size_t i = 0; i < o->c->nfiles; i++) t += o->c->files[i].size;
    return t;
}

/* ---- a rank file as extents ---- */

/* A rank file's bytes as consecutive extents: the safetensors header, zero padding
 * and tensor data (elements [start, start + len/es) of a state of a tensor). */
typedef enum ext_kind { EXT_HEADER, EXT_ZERO, EXT_DATA } ext_kind;

typedef struct extent {
    uint64_t off, len; /* bytes of the file */
    ext_kind kind;
    ds_state state;
    uint32_t tensor;
    uint64_t start;
    size_t es;         /* element size (1 for the header) */
} extent;

typedef struct rank_map {
    const uint8_t *header;
    extent *x;
    size_t n, cap;
    uint64_t end;      /* where the next extent starts */
} rank_map;

static void rank_map_clear(rank_map *m) {
    free(m->x);
    memset(m, 0, sizeof *m);
}

/* Appends e at the end of the map (room is reserved by rank_map_make). */
static dsckpt_status map_add(rank_map *m, extent e) {
    if (e.len == 0) return DSCKPT_OK;
    if (m->n == m->cap) return ds_err(DSCKPT_EINTERNAL, "rank file map: more extents than its buffers allow");
    e.off = m->end;
    m->x[m->n++] = e;
    m->end += e.len;
    return DSCKPT_OK;
}

/* The extents of one buffer: its pieces, and zeros in the gaps and at the end. */
static dsckpt_status map_buf(rank_map *m, const ds_buf *b, ds_state state) {
    size_t es = dsckpt_dtype_size(b->dtype);
    uint64_t pos = 0; /* element position in the buffer */
    for (size_t p = 0; p <= b->npieces; p++) {
        uint64_t next = p < b->npieces ? b->pieces[p].buf_off : b->len;
        if (next > pos) DS_TRY(map_add(m, (extent){.len = (next - pos) * es, .kind = EXT_ZERO, .es = es}));
        pos = next;
        if (p == b->npieces) break;
        const ds_piece *pc = &b->pieces[p];
        DS_TRY(map_add(m, (extent){.len = pc->numel * es, .kind = EXT_DATA, .state = state, .tensor = pc->tensor,
                                   .start = pc->start, .es = es}));
        pos += pc->numel;
    }
    return DSCKPT_OK;
}

/* Rank `rank`'s file in the order the plan lays it out, checked against the plan. */
static dsckpt_status rank_map_make(const ds_native_out *o, int rank, rank_map *m) {
    const ds_rank_plan *rp = &o->plans[rank];
    const st_plan *pl = rp->plan;
    memset(m, 0, sizeof *m);
    m->header = pl->header;
    m->cap = 1; /* the header; each buffer: its pieces and the gaps around them */
    for (size_t e = 0; e < pl->n; e++) m->cap += 2 * o->layout->ranks[rank].bufs[rp->entries[e].buf].npieces + 1;
    DS_TRY(ds_calloc(m->cap, sizeof *m->x, &m->x));
    dsckpt_status st = map_add(m, (extent){.len = pl->header_bytes, .kind = EXT_HEADER, .es = 1});
    for (size_t k = 0; st == DSCKPT_OK && k < pl->n; k++) {
        size_t e = pl->order[k];
        const ds_buf *b = &o->layout->ranks[rank].bufs[rp->entries[e].buf];
        uint64_t at = pl->header_bytes + pl->offset[e];
        /* Tensor data sits at multiples of its element size (the chunk size is a
         * multiple of 8), so every piece a chunk boundary cuts is whole elements. */
        if (m->end != at || at % dsckpt_dtype_size(b->dtype))
            st = ds_err(DSCKPT_EINTERNAL, "%s: entry %zu planned at %llu, laid out at %llu", o->c->files[rank].path,
                        e, (unsigned long long)at, (unsigned long long)m->end);
        if (st == DSCKPT_OK) st = map_buf(m, b, rp->entries[e].state);
    }
    if (st == DSCKPT_OK && m->end != o->c->files[rank].size)
        st = ds_err(DSCKPT_EINTERNAL, "%s: laid out %llu bytes, planned %llu", o->c->files[rank].path,
                    (unsigned long long)m->end, (unsigned long long)o->c->files[rank].size);
    if (st) rank_map_clear(m);
    return st;
}

/* The first extent that ends after `off`. */
static size_t map_find(const rank_map *m, uint64_t off) {
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->x[mid].off + m->x[mid].len <= off) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Bytes [off, off+len) of the rank file into dst: header, zeros, or the fill's data. */
static dsckpt_status rank_bytes(const rank_map *m, ds_fill_fn fill, void *user, int worker, uint64_t off, size_t len,
                                uint8_t *dst) {
    for (size_t i = map_find(m, off); len > 0; i++) {
        if (i >= m->n) return ds_err(DSCKPT_EINTERNAL, "rank file read past its end at %llu", (unsigned long long)off);
        const extent *x = &m->x[i];
        uint64_t a = off - x->off;
        size_t n = (size_t)DS_MIN((uint64_t)len, x->len - a);
        if (x->kind == EXT_HEADER) memcpy(dst, m->header + a, n);
        else if (x->kind == EXT_ZERO) memset(dst, 0, n);
        else if (a % x->es || n % x->es)
            return ds_err(DSCKPT_EINTERNAL, "rank file cut inside an element at %llu", (unsigned long long)off);
        else DS_TRY(fill(user, x->state, x->tensor, x->start + a / x->es, n / x->es, dst, worker));
        dst += n;
        off += n;
        len -= n;
    }
    return DSCKPT_OK;
}

/* Bytes [off, off+len) of the rank file where `view` has them in place, end to end
 * in one run of memory: tensor data only, cut at whole elements. NULL otherwise
 * (the header, zeros, a gap between the runs, no view). */
static const uint8_t *rank_view(const rank_map *m, ds_view_fn view, void *user, uint64_t off, size_t len) {
    const uint8_t *first = NULL, *next = NULL;
    for (size_t i = map_find(m, off); len > 0; i++) {
        if (!view || i >= m->n) return NULL;
        const extent *x = &m->x[i];
        uint64_t a = off - x->off;
        size_t n = (size_t)DS_MIN((uint64_t)len, x->len - a);
        if (x->kind != EXT_DATA || a % x->es || n % x->es) return NULL;
        const uint8_t *p = view(user, x->state, x->tensor, x->start + a / x->es, n / x->es);
        if (!p || (first && p != next)) return NULL;
        if (!first) first = p;
        next = p + n;
        off += n;
        len -= n;
    }
    return first;
}

void ds_native_set_view(ds_native_out *o, ds_view_fn view) { o->view = view; }

/* ---- plain rank files: through the copy engine ---- */

/* At most this many rank files open at once (a reshard to many ranks). */
#define BATCH_FILES 64

typedef struct batch {
    ds_native_out *o;
    int r0, n;            /* files r0 .. r0+n-1 */
    rank_map *maps;
    ds_copy_file *files;
    char **tmps;          /* temporary names; NULL once renamed */
    ds_fill_fn fill;
    void *user;
    int worker_base;      /* the fill sees worker_base + the engine's worker */
} batch;

static dsckpt_status batch_fill(void *u, size_t unit, size_t file, uint64_t off, size_t len, void *buf,
                                const void **out, int worker) {
    (void)unit;
    (void)out;
    batch *b = u;
    return rank_bytes(&b->maps[file], b->fill, b->user, b->worker_base + worker, off, len, buf);
}

static void batch_clear(batch *b) {
    for (int i = 0; i < b->n; i++) {
        if (b->files && b->files[i].fd >= 0) close(b->files[i].fd);
        if (b->tmps && b->tmps[i]) unlink(b->tmps[i]);
        if (b->tmps) free(b->tmps[i]);
        if (b->maps) rank_map_clear(&b->maps[i]);
        if (b->files) ds_copy_file_clear(&b->files[i]);
    }
    free(b->maps);
    free(b->files);
    free(b->tmps);
}

/* Maps the batch's files and creates them under temporary names. */
static dsckpt_status batch_open(batch *b) {
    DS_TRY(ds_calloc((size_t)b->n, sizeof *b->maps, &b->maps));
    DS_TRY(ds_calloc((size_t)b->n, sizeof *b->files, &b->files));
    DS_TRY(ds_calloc((size_t)b->n, sizeof *b->tmps, &b->tmps));
    for (int i = 0; i < b->n; i++) b->files[i].fd = -1;
    for (int i = 0; i < b->n; i++) {
        const ds_file *f = &b->o->c->files[b->r0 + i];
        DS_TRY(rank_map_make(b->o, b->r0 + i, &b->maps[i]));
        b->tmps[i] = ds_tmp_sibling(f->path);
        if (!b->tmps[i]) return DSCKPT_ENOMEM;
        int fd = open(b->tmps[i], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
            dsckpt_status st = ds_err_errno(errno, "%s: cannot create", b->tmps[i]);
            free(b->tmps[i]);
            b->tmps[i] = NULL; /* not ours to unlink */
            return st;
        }
        b->files[i] = (ds_copy_file){.fd = fd, .name = f->path, .size = f->size, .hash_chunk = b->o->chunk_size};
    }
    return DSCKPT_OK;
}

/* File i of the batch: durable, its digests recorded, renamed into place. */
static dsckpt_status finish_job(void *u, size_t i, int worker) {
    (void)worker;
    batch *b = u;
    ds_copy_file *cf = &b->files[i];
    ds_file *f = &b->o->c->files[b->r0 + (int)i];
    if (fsync(cf->fd) != 0) return ds_err_errno(errno, "%s: fsync failed", f->path);
    int fd = cf->fd;
    cf->fd = -1;
    if (close(fd) != 0) return ds_err_errno(errno, "%s: close failed", f->path);
    ds_digests_clear(&f->dg);
    free(f->zc);
    f->zc = NULL;
    f->compressed = false;
    f->stored_size = f->size;
    DS_TRY(ds_copy_digests(cf, &f->dg));
    f->has_digests = true;
    DS_TRY(ds_rename_durable(b->tmps[i], f->path, true));
    free(b->tmps[i]);
    b->tmps[i] = NULL;
    return DSCKPT_OK;
}

/* Files r0 .. r0+n-1, every chunk of every file on `threads` threads. */
static dsckpt_status write_batch(ds_native_out *o, int r0, int n, ds_fill_fn fill, void *user, int threads,
                                 int worker_base, ds_progress *prog) {
    batch b = {.o = o, .r0 = r0, .n = n, .fill = fill, .user = user, .worker_base = worker_base};
    ds_copy_unit *units = NULL;
    size_t nunits = 0;
    /* Chunks must cut tensor data at element boundaries (see rank_map_make). */
    if (o->chunk_size % 8)
        return ds_err(DSCKPT_EINVAL, "chunk size %llu is not a multiple of 8", (unsigned long long)o->chunk_size);
    dsckpt_status st = batch_open(&b);
    if (st == DSCKPT_OK) st = ds_copy_chunk_units(b.files, (size_t)n, o->chunk_size, &units, &nunits);
    if (st == DSCKPT_OK) {
        ds_copy_job job = {.files = b.files, .nfiles = (size_t)n, .units = units, .nunits = nunits,
                           .fill = batch_fill, .user = &b, .threads = threads, .prog = prog};
        st = ds_copy_run(&job);
    }
    if (st == DSCKPT_OK) st = ds_parallel_run((size_t)n, threads, finish_job, &b, NULL);
    free(units);
    batch_clear(&b);
    return st;
}

/* ---- compressed rank files: chunks on every worker, stored in order ---- */

/* A compressed rank file being written. */
typedef struct zfile_w {
    rank_map m;
    char *tmp;        /* its temporary name; NULL once renamed */
    bool created;     /* tmp exists (and is ours to remove) */
    ds_zwriter *z;    /* from chunk 0's turn to the last chunk's */
    size_t nchunks;
    size_t next;      /* the chunk whose turn it is to be stored (under zrun.mu) */
} zfile_w;

/* Files r0 .. r0+n-1 cut into chunks, the run's units in file order: workers
 * claim units in that order, fill and encode them side by side, and store each
 * file's chunks in index order (a stored chunk's offset is the sum of the sizes
 * of those before it). A worker holds one unit at a time and the units before
 * it were claimed first, so the chunk whose turn it is always has a worker. */
typedef struct zrun {
    ds_native_out *o;
    int r0, n;
    zfile_w *f;
    size_t *first;    /* each file's first unit; first[n]: the units in all */
    ds_fill_fn fill;
    void *user;
    ds_progress *prog;
    int worker_base;  /* the fill sees worker_base + the worker */
    atomic_size_t next_unit;
    atomic_bool failed;
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* a turn passed, or the run failed */
    dsckpt_status st;   /* the first failure and its message (under mu) */
    char msg[1024];
} zrun;

/* Records the run's first failure and wakes every waiting worker; returns st. */
static dsckpt_status z_fail(zrun *r, dsckpt_status st) {
    pthread_mutex_lock(&r->mu);
    if (!atomic_load(&r->failed)) {
        r->st = st;
        snprintf(r->msg, sizeof r->msg, "%s", dsckpt_last_error());
        atomic_store(&r->failed, true);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return st;
}

/* Waits until chunk k of f is next; once the run has failed, raises its failure
 * again (the same status and message, whichever worker reports it first). */
static dsckpt_status z_wait_turn(zrun *r, zfile_w *f, size_t k) {
    pthread_mutex_lock(&r->mu);
    while (!atomic_load(&r->failed) && f->next != k) pthread_cond_wait(&r->cv, &r->mu);
    dsckpt_status st = atomic_load(&r->failed) ? r->st : DSCKPT_OK;
    char msg[sizeof r->msg];
    if (st) memcpy(msg, r->msg, sizeof msg);
    pthread_mutex_unlock(&r->mu);
    return st ? ds_err(st, "%s", msg) : DSCKPT_OK;
}

static void z_pass_turn(zrun *r, zfile_w *f) {
    pthread_mutex_lock(&r->mu);
    f->next++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* The element width most bytes of [off, off+n) have (the header counts as 1;
 * ties go to the narrower): the chunk's shuffle. */
static int chunk_width(const rank_map *m, uint64_t off, uint64_t n) {
    uint64_t wb[4] = {0}, end = off + n;
    for (size_t i = map_find(m, off); i < m->n && m->x[i].off < end; i++) {
        uint64_t a = DS_MAX(off, m->x[i].off), b = DS_MIN(end, m->x[i].off + m->x[i].len);
        size_t es = m->x[i].es;
        wb[es >= 8 ? 3 : es >= 4 ? 2 : es >= 2 ? 1 : 0] += b - a;
    }
    int best = 0;
    for (int i = 1; i < 4; i++)
        if (wb[i] > wb[best]) best = i;
    return 1 << best;
}

/* The last chunk is stored: durable, digests and chunk records into the handle,
 * renamed into place. */
static dsckpt_status z_close(zrun *r, int i) {
    zfile_w *f = &r->f[i];
    ds_file *df = &r->o->c->files[r->r0 + i];
    ds_digests_clear(&df->dg);
    free(df->zc);
    df->zc = NULL;
    ds_zwriter *z = f->z;
    f->z = NULL;
    dsckpt_status st = ds_zwriter_finish(z, &df->dg, &df->zc, &df->stored_size);
    df->compressed = st == DSCKPT_OK;
    if (st == DSCKPT_OK) {
        df->has_digests = true;
        st = ds_rename_durable(f->tmp, df->path, true);
    }
    if (st == DSCKPT_OK) {
        free(f->tmp);
        f->tmp = NULL;
    }
    return st;
}

/* Unit u: its bytes filled into raw, encoded and hashed, then, at its turn,
 * stored (the first chunk creates the file, the last one finishes it). */
static dsckpt_status z_unit(zrun *r, size_t u, int worker, uint8_t *raw, ds_zchunk_enc *enc) {
    size_t lo = 0, hi = (size_t)r->n; /* the file: the last with first[i] <= u */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->first[mid] <= u) lo = mid;
        else hi = mid;
    }
    int i = (int)lo;
    zfile_w *f = &r->f[i];
    const ds_file *df = &r->o->c->files[r->r0 + i];
    size_t k = u - r->first[i];
    uint64_t off = (uint64_t)k * r->o->chunk_size, n = DS_MIN(r->o->chunk_size, df->size - off);
    /* Data lying in place is encoded from there; the rest is filled into raw. */
    const uint8_t *src = rank_view(&f->m, r->o->view, r->user, off, (size_t)n);
    if (!src) {
        DS_TRY(rank_bytes(&f->m, r->fill, r->user, r->worker_base + worker, off, (size_t)n, raw));
        src = raw;
    }
    ds_zstored c;
    DS_TRY(ds_zchunk_store_prepare(enc, src, (size_t)n, chunk_width(&f->m, off, n), &c));
    DS_TRY(z_wait_turn(r, f, k));
    /* The file is this worker's until the turn passes. */
    if (k == 0) {
        DS_TRY(ds_zwriter_create(f->tmp, df->size, r->o->chunk_size, &f->z));
        f->created = true;
    }
    DS_TRY(ds_zwriter_put(f->z, k, &c));
    if (k + 1 == f->nchunks) DS_TRY(z_close(r, i));
    ds_progress_add(r->prog, n);
    z_pass_turn(r, f);
    return DSCKPT_OK;
}

/* A worker: units until none is left or the run failed. */
static dsckpt_status z_worker(void *u, size_t job, int worker) {
    (void)job;
    zrun *r = u;
    uint8_t *raw = NULL;
    ds_zchunk_enc *enc = NULL;
    dsckpt_status st = ds_malloc((size_t)r->o->chunk_size, &raw);
    if (st == DSCKPT_OK) st = ds_zwriter_enc_new(r->o->compress_level, &enc);
    while (st == DSCKPT_OK && !atomic_load(&r->failed)) {
        size_t unit = atomic_fetch_add(&r->next_unit, 1);
        if (unit >= r->first[r->n]) break;
        st = ds_interrupted() ? ds_err_interrupted() : z_unit(r, unit, worker, raw, enc);
    }
    if (st) z_fail(r, st);
    ds_zchunk_enc_free(enc);
    free(raw);
    return st;
}

/* Compressed files r0 .. r0+n-1 on `threads` workers; the fill sees worker_base +
 * the worker. */
static dsckpt_status write_z(ds_native_out *o, int r0, int n, ds_fill_fn fill, void *user, int threads,
                             int worker_base, ds_progress *prog) {
    zrun r = {.o = o, .r0 = r0, .n = n, .fill = fill, .user = user, .prog = prog, .worker_base = worker_base};
    atomic_init(&r.next_unit, 0);
    atomic_init(&r.failed, false);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    dsckpt_status st = o->chunk_size % 8 ? ds_err(DSCKPT_EINVAL, "chunk size %llu is not a multiple of 8",
                                                  (unsigned long long)o->chunk_size)
                                         : DSCKPT_OK;
    if (st == DSCKPT_OK) st = ds_calloc((size_t)n, sizeof *r.f, &r.f);
    if (st == DSCKPT_OK) st = ds_calloc((size_t)n + 1, sizeof *r.first, &r.first);
    for (int i = 0; st == DSCKPT_OK && i < n; i++) {
        const ds_file *df = &o->c->files[r0 + i];
        r.f[i].nchunks = (size_t)ds_ceil_div(df->size, o->chunk_size);
        if (r.f[i].nchunks == 0) st = ds_err(DSCKPT_EINTERNAL, "%s: a rank file of no bytes", df->path);
        if (st == DSCKPT_OK) st = rank_map_make(o, r0 + i, &r.f[i].m);
        if (st == DSCKPT_OK && !(r.f[i].tmp = ds_tmp_sibling(df->path))) st = DSCKPT_ENOMEM;
        r.first[i + 1] = r.first[i] + r.f[i].nchunks;
    }
    if (st == DSCKPT_OK) {
        size_t t = (size_t)(threads < 1 ? 1 : threads);
        if (t > r.first[n]) t = r.first[n];
        /* One worker and no progress to report: on the calling thread. */
        st = t == 1 && !prog ? z_worker(&r, 0, 0) : ds_parallel_run(t, (int)t, z_worker, &r, prog);
    }
    for (int i = 0; r.f && i < n; i++) {
        ds_zwriter_abort(r.f[i].z); /* removes its file */
        if (r.f[i].tmp && r.f[i].created) unlink(r.f[i].tmp);
        free(r.f[i].tmp);
        rank_map_clear(&r.f[i].m);
    }
    free(r.f);
    free(r.first);
    pthread_mutex_destroy(&r.mu);
    pthread_cond_destroy(&r.cv);
    return st;
}

dsckpt_status ds_native_write_rank(ds_native_out *o, int rank, ds_fill_fn fill, void *user, int worker, int threads,
                                   ds_progress *prog) {
    if (o->compress_level) return write_z(o, rank, 1, fill, user, threads, worker, prog);
    return write_batch(o, rank, 1, fill, user, threads, worker, prog);
}

dsckpt_status ds_native_write_all(ds_native_out *o, ds_fill_fn fill, void *user, int threads, ds_progress *prog) {
    if (prog) prog->total = ds_native_total_bytes(o);
    for (size_t r = 0; r < o->c->nfiles; r += BATCH_FILES) {
        int n = (int)DS_MIN((size_t)BATCH_FILES, o->c->nfiles - r);
        DS_TRY(o->compress_level ? write_z(o, (int)r, n, fill, user, threads, 0, prog)
                                 : write_batch(o, (int)r, n, fill, user, threads, 0, prog));
    }
    return ds_native_write_manifest(o);
}

/* A commit record: u64 raw size, chunk size, chunk count, compressed, stored size;
 * the file digest; the chunk digests; a compressed file's chunk records (the same
 * program writes and reads them, so the records travel as they are in memory). */
#define REC_HEAD (5 * sizeof(uint64_t) + DS_SHA256_LEN)

static size_t record_len(uint64_t nchunks, bool compressed) {
    return REC_HEAD + (size_t)nchunks * (DS_SHA256_LEN + (compressed ? sizeof(ds_zrec) : 0));
}

dsckpt_status ds_native_file_record(const ds_native_out *o, int file, uint8_t **out, size_t *len) {
    const ds_file *f = &o->c->files[file];
    size_t nc = f->dg.nchunks, n = record_len(nc, f->compressed);
    uint8_t *b = NULL;
    if (!f->has_digests) return ds_err(DSCKPT_EINTERNAL, "%s: not written in this process", f->path);
    DS_TRY(ds_malloc(n, &b));
    uint64_t hdr[5] = {f->dg.size, f->dg.chunk_size, nc, f->compressed, f->stored_size};
    memcpy(b, hdr, sizeof hdr);
    memcpy(b + sizeof hdr, f->dg.file, DS_SHA256_LEN);
    if (nc) memcpy(b + REC_HEAD, f->dg.chunks, nc * DS_SHA256_LEN);
    if (nc && f->compressed) memcpy(b + REC_HEAD + nc * DS_SHA256_LEN, f->zc, nc * sizeof *f->zc);
    *out = b;
    *len = n;
    return DSCKPT_OK;
}

dsckpt_status ds_native_file_record_set(ds_native_out *o, int file, const void *rec, size_t len) {
    ds_file *f = &o->c->files[file];
    const uint8_t *b = rec;
    uint64_t hdr[5] = {0};
    if (len >= REC_HEAD) memcpy(hdr, b, sizeof hdr);
    bool ok = len >= REC_HEAD && hdr[0] == f->size && hdr[1] > 0 && hdr[2] == ds_ceil_div(hdr[0], hdr[1]) &&
              hdr[3] <= 1 && hdr[2] <= SIZE_MAX / DS_SHA256_LEN && len == record_len(hdr[2], hdr[3]);
    if (!ok) return ds_err(DSCKPT_EINTERNAL, "%s: malformed commit record from the writing rank (%zu bytes)", f->path, len);
    size_t nc = (size_t)hdr[2];
    ds_digests_clear(&f->dg);
    free(f->zc);
    f->zc = NULL;
    f->has_digests = false;
    DS_TRY(ds_calloc(nc ? nc : 1, DS_SHA256_LEN, &f->dg.chunks));
    if (hdr[3]) DS_TRY(ds_calloc(nc ? nc : 1, sizeof *f->zc, &f->zc));
    f->dg.size = hdr[0];
    f->dg.chunk_size = hdr[1];
    f->dg.nchunks = nc;
    f->compressed = hdr[3] != 0;
    f->stored_size = hdr[4];
    memcpy(f->dg.file, b + 5 * sizeof(uint64_t), DS_SHA256_LEN);
    if (nc) memcpy(f->dg.chunks, b + REC_HEAD, nc * DS_SHA256_LEN);
    if (nc && f->compressed) memcpy(f->zc, b + REC_HEAD + nc * DS_SHA256_LEN, nc * sizeof *f->zc);
    f->has_digests = true;
    return DSCKPT_OK;
}

dsckpt_status ds_native_write_manifest(ds_native_out *o) {
    char *text = NULL;
    DS_TRY(ds_ckpt_build_manifest(o->c, &text));
    char *path = ds_join(o->c->dir, DS_MANIFEST_NAME);
    dsckpt_status st = path ? ds_write_file_atomic(path, text, strlen(text)) : DSCKPT_ENOMEM;
    free(path);
    free(text);
    return st;
}

dsckpt_status ds_set_latest(const char *root, const char *tag) {
    if (!ds_safe_name(tag)) return ds_err(DSCKPT_EINVAL, "tag '%s' is not a plain directory name", tag);
    char *p = ds_join(root, "latest");
    if (!p) return DSCKPT_ENOMEM;
    dsckpt_status st = ds_write_file_atomic(p, tag, strlen(tag));
    free(p);
    return st;
}
