/*
 * ckpt.c — the fragment map handle: opening native checkpoints, indexing and
 * checking fragments, and reading element ranges of a state (see ckpt.h).
 */
#include "ckpt.h"

#include "deepspeed.h"
#include "fsutil.h"
#include "manifest.h"
#include "names.h"
#include "parallel.h"
#include "resolve.h"
#include "safetensors.h"
#include "zfile.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

dsckpt_status ds_ckpt_new(dsckpt_ckpt **out) {
    dsckpt_ckpt *c = calloc(1, sizeof *c);
    if (!c) return ds_err(DSCKPT_ENOMEM, "out of memory");
    *out = c;
    return DSCKPT_OK;
}

void dsckpt_ckpt_free(dsckpt_ckpt *c) {
    if (!c) return;
    free(c->format);
    free(c->root);
    free(c->dir);
    free(c->tag);
    free(c->train_dtype);
    for (size_t i = 0; i < c->ntensors; i++) ds_tensor_clear(&c->tensors[i]);
    free(c->tensors);
    for (int s = 0; s < DS_NSTATES; s++) {
        free(c->frags[s]);
        free(c->tindex[s]);
    }
    ds_files_free(c->files, c->nfiles);
    cJSON_Delete(c->manifest);
    free(c);
}

static int cmp_frag(const void *a, const void *b) {
    const ds_frag *x = a, *y = b;
    if (x->tensor != y->tensor) return x->tensor < y->tensor ? -1 : 1;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    return 0;
}

dsckpt_status ds_ckpt_index(dsckpt_ckpt *c, ds_problem_fn problem, void *user) {
    dsckpt_status st = DSCKPT_OK;
    for (int s = 0; s < DS_NSTATES; s++) {
        free(c->tindex[s]);
        c->tindex[s] = NULL;
        DS_TRY(ds_calloc(c->ntensors + 1, sizeof *c->tindex[s], &c->tindex[s]));
        if (c->nfrags[s]) qsort(c->frags[s], c->nfrags[s], sizeof *c->frags[s], cmp_frag);
        /* Fragments must lie inside their tensor and inside their file. These are
         * structural: a violation makes reading unsafe, so it always fails. */
        for (size_t k = 0; k < c->nfrags[s]; k++) {
            const ds_frag *f = &c->frags[s][k];
            const ds_tensor *t = &c->tensors[f->tensor];
            uint64_t end, bytes, fend;
            if (ds_add_overflow(f->start, f->numel, &end) || end > t->numel)
                return ds_err(DSCKPT_ECORRUPT, "%s: %s fragment [%llu, +%llu) of tensor '%s' lies outside its %llu elements",
                              c->dir, ds_state_names[s], (unsigned long long)f->start, (unsigned long long)f->numel,
                              t->name, (unsigned long long)t->numel);
            if (ds_mul_overflow(f->numel, dsckpt_dtype_size(f->dtype), &bytes) ||
                ds_add_overflow(f->offset, bytes, &fend) || fend > c->files[f->file].size)
                return ds_err(DSCKPT_ECORRUPT, "%s: %s fragment of tensor '%s' at byte %llu (+%llu) lies outside %s (%llu bytes)",
                              c->dir, ds_state_names[s], t->name, (unsigned long long)f->offset,
                              (unsigned long long)bytes, c->files[f->file].name,
                              (unsigned long long)c->files[f->file].size);
            c->tindex[s][f->tensor + 1]++;
        }
        for (size_t t = 0; t < c->ntensors; t++) c->tindex[s][t + 1] += c->tindex[s][t];
        /* Coverage: each applicable state covers its tensor exactly once. */
        for (size_t t = 0; t < c->ntensors; t++) {
            const ds_tensor *tt = &c->tensors[t];
            size_t n;
            const ds_frag *fr = ds_ckpt_frags(c, (ds_state)s, (uint32_t)t, &n);
            char msg[512] = "";
            if (!ds_state_applies(tt, (ds_state)s)) {
                if (n) snprintf(msg, sizeof msg, "tensor '%s' is %s but has %s fragments", tt->name,
                                tt->trainable ? "trainable" : "frozen", ds_state_names[s]);
            } else {
                uint64_t pos = 0;
                for (size_t k = 0; k < n && !msg[0]; k++) {
                    if (fr[k].start > pos)
                        snprintf(msg, sizeof msg, "tensor '%s' state %s: elements [%llu, %llu) are in no fragment",
                                 tt->name, ds_state_names[s], (unsigned long long)pos,
                                 (unsigned long long)fr[k].start);
                    else if (fr[k].start < pos)
                        snprintf(msg, sizeof msg, "tensor '%s' state %s: elements [%llu, %llu) are in two fragments",
                                 tt->name, ds_state_names[s], (unsigned long long)fr[k].start,
                                 (unsigned long long)DS_MIN(pos, fr[k].start + fr[k].numel));
                    pos = DS_MAX(pos, fr[k].start + fr[k].numel);
                }
                if (!msg[0] && pos < tt->numel)
                    snprintf(msg, sizeof msg, "tensor '%s' state %s: elements [%llu, %llu) are in no fragment",
                             tt->name, ds_state_names[s], (unsigned long long)pos, (unsigned long long)tt->numel);
                if (!msg[0]) {
                    /* A state's fragments of one tensor share one dtype. */
                    for (size_t k = 1; k < n; k++)
                        if (fr[k].dtype != fr[0].dtype)
                            snprintf(msg, sizeof msg, "tensor '%s' state %s: fragments of different dtypes",
                                     tt->name, ds_state_names[s]);
                }
            }
            if (msg[0]) {
                if (problem) {
                    problem(user, "%s", msg);
                } else {
                    st = ds_err(DSCKPT_ECORRUPT, "%s: %s", c->dir, msg);
                    return st;
                }
            }
        }
    }
    return st;
}

dsckpt_dtype ds_ckpt_state_dtype(const dsckpt_ckpt *c, ds_state s, uint32_t t) {
    size_t n;
    const ds_frag *fr = ds_ckpt_frags(c, s, t, &n);
    if (n) return fr[0].dtype;
    return s == DS_ST_W16 ? c->tensors[t].dtype : DSCKPT_F32;
}

dsckpt_status ds_file_read_header(const ds_file *f, int fd, bool check, st_header **out) {
    *out = NULL;
    if (!f->compressed) return st_read_fd(fd, f->path, out);
    /* The header of the raw bytes, decoded from the chunks it lies in (their
     * stored bytes checked first when `check`): the length, then the header, with
     * the first chunk decoded once. */
    if (f->size < 8)
        return ds_err(DSCKPT_ECORRUPT, "%s: %llu raw bytes cannot hold a safetensors header", f->path,
                      (unsigned long long)f->size);
    const uint8_t(*dg)[DS_SHA256_LEN] = check ? (const uint8_t(*)[DS_SHA256_LEN])f->dg.chunks : NULL;
    ds_zfile_reader r;
    ds_zfile_reader_init(&r, fd, f->zc, f->dg.nchunks, f->dg.chunk_size, f->size, dg, f->path);
    uint8_t len[8], *buf = NULL;
    dsckpt_status st = ds_zfile_reader_read(&r, len, sizeof len, 0);
    uint64_t n = st == DSCKPT_OK ? ds_get_le64(len) : 0;
    if (st == DSCKPT_OK && (n > ST_MAX_HEADER || n > f->size - 8))
        st = ds_err(DSCKPT_ECORRUPT, "%s: header length %llu does not fit its %llu raw bytes", f->path,
                    (unsigned long long)n, (unsigned long long)f->size);
    if (st == DSCKPT_OK) st = ds_malloc(n ? (size_t)n : 1, &buf);
    if (st == DSCKPT_OK) st = ds_zfile_reader_read(&r, buf, (size_t)n, 8);
    if (st == DSCKPT_OK) st = st_parse_header(buf, n, f->size, f->path, out);
    ds_zfile_reader_clear(&r);
    free(buf);
    return st;
}

/* The safetensors header of open file i: a compressed file's through the chunk
 * cache (its first chunk is then decoded once, and stays for the readers). */
static dsckpt_status fdset_read_header(const dsckpt_ckpt *c, const ds_fdset *fs, size_t i, st_header **out) {
    const ds_file *f = &c->files[i];
    *out = NULL;
    if (!f->compressed) return st_read_fd(fs->fd[i], f->path, out);
    if (f->size < 8)
        return ds_err(DSCKPT_ECORRUPT, "%s: %llu raw bytes cannot hold a safetensors header", f->path,
                      (unsigned long long)f->size);
    uint8_t len[8];
    DS_TRY(ds_fdset_pread(c, fs, (uint32_t)i, len, 8, 0));
    uint64_t n = ds_get_le64(len);
    if (n > ST_MAX_HEADER || n > f->size - 8)
        return ds_err(DSCKPT_ECORRUPT, "%s: header length %llu does not fit its %llu raw bytes", f->path,
                      (unsigned long long)n, (unsigned long long)f->size);
    uint8_t *buf = NULL;
    DS_TRY(ds_malloc(n ? (size_t)n : 1, &buf));
    dsckpt_status st = ds_fdset_pread(c, fs, (uint32_t)i, buf, (size_t)n, 8);
    if (st == DSCKPT_OK) st = st_parse_header(buf, n, f->size, f->path, out);
    free(buf);
    return st;
}

/* Opens file i of c, checking its size against the manifest. */
static dsckpt_status open_file(const dsckpt_ckpt *c, size_t i, int *fd) {
    uint64_t size;
    dsckpt_status st = ds_open_read(c->files[i].path, fd, &size);
    if (st == DSCKPT_ENOENT)
        return ds_err(DSCKPT_ECORRUPT, "%s: missing (listed in the manifest, not on disk; run dsckpt verify)",
                      c->files[i].path);
    DS_TRY(st);
    uint64_t want = ds_file_disk_size(&c->files[i]);
    if (size != want)
        return ds_err(DSCKPT_ECORRUPT, "%s: %llu bytes, but the manifest says %llu (truncated or replaced; run dsckpt verify)",
                      c->files[i].path, (unsigned long long)size, (unsigned long long)want);
    return DSCKPT_OK;
}

/* Native rank files: fragments must point into the data, never into the
 * safetensors header (a reader would otherwise return header bytes as weights).
 * DeepSpeed files are checked against their zip members at open. */
static dsckpt_status frags_past_header(const dsckpt_ckpt *c, size_t i, const st_header *h) {
    for (int s = 0; s < DS_NSTATES; s++)
        for (size_t k = 0; k < c->nfrags[s]; k++) {
            const ds_frag *fr = &c->frags[s][k];
            if (fr->file == i && fr->numel && fr->offset < h->data_start)
                return ds_err(DSCKPT_ECORRUPT, "%s: %s fragment of '%s' at byte %llu points into the header",
                              c->files[i].path, ds_state_names[s], c->tensors[fr->tensor].name,
                              (unsigned long long)fr->offset);
        }
    return DSCKPT_OK;
}

static bool is_native(const dsckpt_ckpt *c) { return c->format && !strcmp(c->format, "dsckpt"); }

static dsckpt_status fdset_alloc(const dsckpt_ckpt *c, ds_fdset *fs) {
    fs->n = c->nfiles;
    fs->vf = NULL;
    fs->zcache = NULL;
    fs->lazy = NULL;
    fs->deferred = false; /* verdicts at once unless the reader asks (ds_fdset_defer_checks) */
    fs->stream = false;
    DS_TRY(ds_calloc(c->nfiles ? c->nfiles : 1, sizeof *fs->fd, &fs->fd));
    for (size_t i = 0; i < c->nfiles; i++) fs->fd[i] = -1;
    return DSCKPT_OK;
}

dsckpt_status ds_fdset_open(const dsckpt_ckpt *c, ds_fdset *fs) {
    DS_TRY(fdset_alloc(c, fs));
    dsckpt_status st = DSCKPT_OK;
    for (size_t i = 0; i < c->nfiles && st == DSCKPT_OK; i++) st = open_file(c, i, &fs->fd[i]);
    if (st == DSCKPT_OK) st = ds_fdset_check_init(c, fs);
    for (size_t i = 0; is_native(c) && i < c->nfiles && st == DSCKPT_OK; i++) {
        st_header *h = NULL;
        st = fdset_read_header(c, fs, i, &h);
        if (st == DSCKPT_OK) st = frags_past_header(c, i, h);
        st_header_free(h);
    }
    if (st) ds_fdset_close(fs);
    return st;
}

/* ---- lazy sets ---- */

enum { LZ_CLOSED = 0, LZ_OPEN, LZ_FAILED };

struct ds_fdlazy {
    pthread_mutex_t mu; /* held only while this file is opened; no other lock is taken under it */
    atomic_int state;   /* LZ_*; LZ_OPEN / LZ_FAILED published with release */
    dsckpt_status st;   /* LZ_FAILED: why */
    char *msg;
};

dsckpt_status ds_fdset_open_lazy(const dsckpt_ckpt *c, ds_fdset *fs) {
    DS_TRY(fdset_alloc(c, fs));
    dsckpt_status st = ds_calloc(c->nfiles ? c->nfiles : 1, sizeof *fs->lazy, &fs->lazy);
    for (size_t i = 0; st == DSCKPT_OK && i < c->nfiles; i++) {
        if (pthread_mutex_init(&fs->lazy[i].mu, NULL)) st = ds_err(DSCKPT_EINTERNAL, "cannot create a file's mutex");
        atomic_init(&fs->lazy[i].state, st ? LZ_FAILED : LZ_CLOSED);
        fs->lazy[i].st = st;
    }
    if (st == DSCKPT_OK) st = ds_fdset_check_alloc(c, fs);
    if (st) ds_fdset_close(fs);
    return st;
}

/* Opens file i of a lazy set as ds_fdset_open would. The header is read straight
 * from the file (a compressed one's first chunks decoded here, not through the
 * shared chunk cache): opening never waits on the cache nor re-enters the set. */
static dsckpt_status lazy_open(const dsckpt_ckpt *c, const ds_fdset *fs, size_t i) {
    DS_TRY(open_file(c, i, &fs->fd[i]));
    DS_TRY(ds_fdset_check_file(c, fs, i));
    if (!is_native(c)) return DSCKPT_OK;
    st_header *h = NULL;
    dsckpt_status st = ds_file_read_header(&c->files[i], fs->fd[i], !c->no_read_check, &h);
    if (st == DSCKPT_OK) st = frags_past_header(c, i, h);
    st_header_free(h);
    return st;
}

dsckpt_status ds_fdset_ensure(const dsckpt_ckpt *c, const ds_fdset *fs, uint32_t i) {
    ds_fdlazy *l = &fs->lazy[i];
    int state = atomic_load_explicit(&l->state, memory_order_acquire);
    if (state == LZ_CLOSED) {
        pthread_mutex_lock(&l->mu);
        if (atomic_load_explicit(&l->state, memory_order_relaxed) == LZ_CLOSED) {
            dsckpt_status st = lazy_open(c, fs, i);
            if (st) {
                l->st = st;
                l->msg = ds_strdup(dsckpt_last_error());
            }
            atomic_store_explicit(&l->state, st ? LZ_FAILED : LZ_OPEN, memory_order_release);
        }
        pthread_mutex_unlock(&l->mu);
        state = atomic_load_explicit(&l->state, memory_order_acquire);
    }
    if (state == LZ_OPEN) return DSCKPT_OK;
    return ds_err(l->st ? l->st : DSCKPT_EIO, "%s", l->msg ? l->msg : c->files[i].path);
}

bool ds_fdset_is_open(const ds_fdset *fs, size_t i) {
    if (!fs || !fs->fd || i >= fs->n) return false;
    if (!fs->lazy) return true;
    return atomic_load_explicit(&fs->lazy[i].state, memory_order_acquire) != LZ_CLOSED;
}

size_t ds_fdset_opened(const ds_fdset *fs) {
    size_t k = 0;
    for (size_t i = 0; fs && i < fs->n; i++) k += ds_fdset_is_open(fs, i);
    return k;
}

void ds_fdset_close(ds_fdset *fs) {
    if (!fs) return;
    ds_fdset_check_free(fs);
    if (!fs->fd) return;
    for (size_t i = 0; i < fs->n; i++) {
        if (fs->fd[i] >= 0) close(fs->fd[i]);
        if (!fs->lazy) continue;
        pthread_mutex_destroy(&fs->lazy[i].mu);
        free(fs->lazy[i].msg);
    }
    free(fs->lazy);
    fs->lazy = NULL;
    free(fs->fd);
    fs->fd = NULL;
    fs->n = 0;
}

/* The byte ranges holding elements [start, start+numel) of state s of tensor t, in
 * order: piece(u, file, offset, bytes, at) for each, `at` being the byte offset of
 * the piece in the caller's destination. */
typedef dsckpt_status (*frag_piece_fn)(void *u, uint32_t file, uint64_t offset, size_t bytes, uint64_t at);

static dsckpt_status frag_walk(const dsckpt_ckpt *c, ds_state s, uint32_t t, uint64_t start, uint64_t numel,
                               frag_piece_fn piece, void *u) {
    size_t n;
    const ds_frag *fr = ds_ckpt_frags(c, s, t, &n);
    uint64_t end = start + numel;
    /* Binary search for the first fragment ending after `start`. */
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (fr[mid].start + fr[mid].numel <= start) lo = mid + 1;
        else hi = mid;
    }
    uint64_t pos = start;
    for (size_t k = lo; k < n && pos < end; k++) {
        const ds_frag *f = &fr[k];
        if (f->start > pos) break;
        size_t es = dsckpt_dtype_size(f->dtype);
        uint64_t take = DS_MIN(end, f->start + f->numel) - pos;
        DS_TRY(piece(u, f->file, f->offset + (pos - f->start) * es, (size_t)(take * es), (pos - start) * es));
        pos += take;
    }
    if (pos != end)
        return ds_err(DSCKPT_ECORRUPT, "%s: tensor '%s' state %s: elements from %llu are in no fragment", c->dir,
                      c->tensors[t].name, ds_state_names[s], (unsigned long long)pos);
    return DSCKPT_OK;
}

typedef struct {
    const dsckpt_ckpt *c;
    const ds_fdset *fs;
    uint8_t *dst;
} read_now;

static dsckpt_status read_piece(void *u, uint32_t file, uint64_t offset, size_t bytes, uint64_t at) {
    read_now *r = u;
    return ds_fdset_pread(r->c, r->fs, file, r->dst + at, bytes, offset);
}

dsckpt_status ds_ckpt_read(const dsckpt_ckpt *c, const ds_fdset *fs, ds_state s, uint32_t t, uint64_t start,
                           uint64_t numel, void *dst) {
    read_now r = {c, fs, dst};
    return frag_walk(c, s, t, start, numel, read_piece, &r);
}

typedef struct {
    ds_read_list *l;
    uint8_t *dst;
} list_add;

static dsckpt_status list_piece(void *u, uint32_t file, uint64_t offset, size_t bytes, uint64_t at) {
    list_add *a = u;
    ds_read_list *l = a->l;
    uint8_t *dst = a->dst + at;
    ds_read_run *last = l->n ? &l->runs[l->n - 1] : NULL;
    if (last && last->file == file && last->offset + last->bytes == offset && last->dst + last->bytes == dst &&
        last->bytes <= SIZE_MAX - bytes) {
        last->bytes += bytes;
        return DSCKPT_OK;
    }
    DS_TRY(ds_array_room(&l->runs, &l->cap, l->n, sizeof *l->runs));
    l->runs[l->n++] = (ds_read_run){.file = file, .offset = offset, .bytes = bytes, .dst = dst};
    return DSCKPT_OK;
}

dsckpt_status ds_read_list_add(ds_read_list *l, const dsckpt_ckpt *c, ds_state s, uint32_t t, uint64_t start,
                               uint64_t numel, void *dst) {
    list_add a = {l, dst};
    return frag_walk(c, s, t, start, numel, list_piece, &a);
}

dsckpt_status ds_read_list_run(const dsckpt_ckpt *c, const ds_fdset *fs, const ds_read_list *l) {
    for (size_t i = 0; i < l->n; i++)
        DS_TRY(ds_fdset_pread(c, fs, l->runs[i].file, l->runs[i].dst, l->runs[i].bytes, l->runs[i].offset));
    return DSCKPT_OK;
}

/* A piece of a run within one check unit (unit: its index in the file's fixed
 * chunks, or UINT64_MAX for a run read whole, on its own). */
typedef struct {
    uint32_t file;
    uint64_t unit;
    ds_read_part part;
} list_piece_t;

static int piece_cmp(const void *a, const void *b) {
    const list_piece_t *x = a, *y = b;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    if (x->part.offset != y->part.offset) return x->part.offset < y->part.offset ? -1 : 1;
    return 0;
}

typedef struct {
    const dsckpt_ckpt *c;
    const ds_fdset *fs;
    const uint32_t *file;     /* per item */
    const size_t *first;      /* item i: parts[first[i] .. first[i + 1]) */
    const ds_read_part *parts;
} list_job;

static dsckpt_status list_item(void *u, size_t i, int worker) {
    (void)worker;
    const list_job *j = u;
    return ds_fdset_pread_parts(j->c, j->fs, j->file[i], j->parts + j->first[i], j->first[i + 1] - j->first[i]);
}

/* Opens lazy file `files[i]` (its failure is kept by the set: see below). */
static dsckpt_status open_item(void *u, size_t i, int worker) {
    (void)worker;
    const list_job *j = u;
    (void)ds_fdset_ensure(j->c, j->fs, j->file[i]);
    return DSCKPT_OK;
}

/* A lazy set's files that the list reads, opened side by side before the reads:
 * opening one reads and checks its header (a compressed file's first chunks
 * decoded), and the threads would otherwise wait on each file's opening in turn,
 * as they all reach it. files[0..nf) are distinct. A file that fails to open fails
 * the run here, the first in file order, with its own message. */
static dsckpt_status open_files(const dsckpt_ckpt *c, const ds_fdset *fs, const uint32_t *files, size_t nf,
                                int threads) {
    if (!fs->lazy || nf < 2) return DSCKPT_OK;
    list_job j = {.c = c, .fs = fs, .file = files};
    DS_TRY(ds_parallel_run(nf, threads, open_item, &j, NULL));
    for (size_t i = 0; i < nf; i++) DS_TRY(ds_fdset_ensure(c, fs, files[i]));
    return DSCKPT_OK;
}

uint64_t ds_ckpt_check_unit(const dsckpt_ckpt *c, uint32_t i) {
    const ds_file *f = &c->files[i];
    return f->has_digests || f->compressed ? f->dg.chunk_size : 0;
}

dsckpt_status ds_read_list_run_threads(const dsckpt_ckpt *c, const ds_fdset *fs, const ds_read_list *l, int threads) {
    if (threads <= 1 || l->n == 0) return ds_read_list_run(c, fs, l);
    size_t n = 0, cap = 0;
    list_piece_t *pc = NULL;
    dsckpt_status st = DSCKPT_OK;
    for (size_t r = 0; r < l->n && !st; r++) {
        const ds_read_run *run = &l->runs[r];
        uint64_t u = ds_ckpt_check_unit(c, run->file), end = run->offset + run->bytes;
        for (uint64_t pos = run->offset; pos < end && !st;) {
            uint64_t b = ds_unit_piece_end(u, pos, end);
            ds_read_part part = {.offset = pos, .bytes = (size_t)(b - pos), .dst = run->dst + (pos - run->offset)};
            if (!(st = ds_array_room(&pc, &cap, n, sizeof *pc)))
                pc[n++] = (list_piece_t){.file = run->file, .unit = ds_unit_index(u, pos), .part = part};
            pos = b;
        }
    }
    ds_read_part *parts = NULL;
    size_t *first = NULL, items = 0;
    uint32_t *file = NULL;
    if (!st && n) {
        qsort(pc, n, sizeof *pc, piece_cmp);
        st = ds_calloc(n, sizeof *parts, &parts);
        if (!st) st = ds_calloc(n + 1, sizeof *first, &first);
        if (!st) st = ds_calloc(n, sizeof *file, &file);
    }
    for (size_t i = 0; i < n && !st; i++) {
        const list_piece_t *p = &pc[i], *q = i ? &pc[i - 1] : NULL;
        bool joins = q && p->unit != UINT64_MAX && q->file == p->file && q->unit == p->unit &&
                     p->part.offset >= q->part.offset + q->part.bytes;
        if (!joins) {
            file[items] = p->file;
            first[items++] = i;
        }
        parts[i] = p->part;
    }
    uint32_t *distinct = NULL; /* the files, once each (the items are in file order) */
    size_t nd = 0;
    if (!st && items) st = ds_calloc(items, sizeof *distinct, &distinct);
    for (size_t i = 0; i < items && !st; i++)
        if (!nd || distinct[nd - 1] != file[i]) distinct[nd++] = file[i];
    if (!st && items) st = open_files(c, fs, distinct, nd, threads);
    if (!st && items) {
        first[items] = n;
        list_job j = {.c = c, .fs = fs, .file = file, .first = first, .parts = parts};
        st = ds_parallel_run(items, threads, list_item, &j, NULL);
    }
    free(distinct);
    free(pc);
    free(parts);
    free(first);
    free(file);
    return st;
}

void ds_read_list_free(ds_read_list *l) {
    free(l->runs);
    *l = (ds_read_list){0};
}

/* A tag directory whose save did not finish: rank files (or their temporaries)
 * but no manifest. */
static bool looks_like_partial_save(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d)))
        found = !strncmp(e->d_name, "rank_", 5) || !strncmp(e->d_name, ".rank_", 6) ||
                !strncmp(e->d_name, "." DS_MANIFEST_NAME ".tmp-", strlen("." DS_MANIFEST_NAME ".tmp-"));
    closedir(d);
    return found;
}

dsckpt_status ds_resolve_tag_dir(const char *path, const char *tag, char **dir_out, char **root_out) {
    *dir_out = NULL;
    *root_out = NULL;
    if (!ds_exists(path)) return ds_err(DSCKPT_ENOENT, "%s: no such file or directory", path);
    if (!ds_is_dir(path)) return ds_err(DSCKPT_EINVAL, "%s: not a checkpoint directory", path);
    char *mf = ds_join(path, DS_MANIFEST_NAME);
    if (!mf) return DSCKPT_ENOMEM;
    bool is_tag_dir = ds_exists(mf) || ds_is_deepspeed_dir(path);
    free(mf);
    if (is_tag_dir && !tag) {
        *dir_out = ds_strdup(path);
        return *dir_out ? DSCKPT_OK : DSCKPT_ENOMEM;
    }
    char *latest_buf = NULL;
    bool from_latest = false;
    if (!tag) {
        char *lp = ds_join(path, "latest");
        if (!lp) return DSCKPT_ENOMEM;
        if (!ds_exists(lp)) { /* a save root holding only universal checkpoints */
            free(lp);
            if (!(lp = ds_join(path, "latest_universal"))) return DSCKPT_ENOMEM;
        }
        if (!ds_exists(lp)) {
            free(lp);
            if (looks_like_partial_save(path))
                return ds_err(DSCKPT_ENOENT,
                              "%s: no manifest: the checkpoint is incomplete (a save that did not finish) or not a dsckpt checkpoint",
                              path);
            return ds_err(DSCKPT_ENOENT, "%s: neither a tag directory (no %s) nor a save root (no 'latest'); pass -t TAG",
                          path, DS_MANIFEST_NAME);
        }
        dsckpt_status st = ds_read_latest(lp, &latest_buf);
        free(lp);
        DS_TRY(st);
        tag = latest_buf;
        from_latest = true;
    }
    if (!from_latest) DS_TRY(ds_name_check(tag, strlen(tag), DSCKPT_EINVAL, path, "tag"));
    char *dir = ds_join(path, tag);
    free(latest_buf);
    if (!dir) return DSCKPT_ENOMEM;
    if (!ds_is_dir(dir)) {
        dsckpt_status st = ds_err(DSCKPT_ENOENT, "%s: tag directory does not exist", dir);
        free(dir);
        return st;
    }
    *dir_out = dir;
    *root_out = ds_strdup(path);
    if (!*root_out) {
        free(dir);
        *dir_out = NULL;
        return DSCKPT_ENOMEM;
    }
    return DSCKPT_OK;
}

size_t ds_ckpt_ntensors(const dsckpt_ckpt *c) { return c->ntensors; }
const ds_tensor *ds_ckpt_tensor(const dsckpt_ckpt *c, size_t k) { return &c->tensors[k]; }
const char *ds_ckpt_dir(const dsckpt_ckpt *c) { return c->dir; }
int64_t ds_ckpt_step(const dsckpt_ckpt *c) { return c->step; }
const ds_model_info *ds_ckpt_model(const dsckpt_ckpt *c) { return c && c->has_model ? &c->model : NULL; }

const cJSON *ds_ckpt_state_json(const dsckpt_ckpt *c) {
    return c->manifest ? cJSON_GetObjectItemCaseSensitive(c->manifest, "state") : NULL;
}

dsckpt_status ds_ckpt_parse_manifest(dsckpt_ckpt *c, const char *text, size_t len, const char *what) {
    ds_manifest m = {.dir = c->dir};
    dsckpt_status st = ds_manifest_parse(text, len, what, &m);
    if (st) {
        ds_manifest_clear(&m);
        return st;
    }
    c->format = m.format;
    c->tag = m.tag;
    c->step = m.step;
    c->world_size = m.world_size;
    c->stage = m.stage;
    c->train_dtype = m.train_dtype;
    c->ngroups = m.ngroups;
    c->tensors = m.tensors;
    c->ntensors = m.ntensors;
    for (int s = 0; s < DS_NSTATES; s++) {
        c->frags[s] = m.frags[s];
        c->nfrags[s] = m.nfrags[s];
    }
    c->files = m.files;
    c->nfiles = m.nfiles;
    c->has_model = m.has_model;
    c->model = m.model;
    c->manifest = m.json;
    return DSCKPT_OK;
}

dsckpt_status ds_ckpt_build_manifest(const dsckpt_ckpt *c, char **json_out) {
    ds_manifest m = {
        .dir = c->dir, .format = c->format, .tag = c->tag, .step = c->step,
        .world_size = c->world_size, .stage = c->stage, .train_dtype = c->train_dtype,
        .ngroups = c->ngroups, .tensors = c->tensors, .ntensors = c->ntensors,
        .files = c->files, .nfiles = c->nfiles, .has_model = c->has_model,
        .model = c->model, .json = c->manifest,
    };
    for (int s = 0; s < DS_NSTATES; s++) {
        m.frags[s] = c->frags[s];
        m.nfrags[s] = c->nfrags[s];
    }
    return ds_manifest_build(&m, json_out); /* m only borrows c's fields */
}

dsckpt_status ds_native_open(const char *dir, dsckpt_ckpt *c) {
    char *mp = ds_join(dir, DS_MANIFEST_NAME);
    if (!mp) return DSCKPT_ENOMEM;
    if (!ds_exists(mp)) {
        dsckpt_status st = ds_err(DSCKPT_ENOENT,
                                  "%s: no manifest: the checkpoint is incomplete (a save that did not finish) or not a dsckpt checkpoint",
                                  dir);
        free(mp);
        return st;
    }
    char *text = NULL;
    size_t len = 0;
    dsckpt_status st = ds_read_small_file(mp, DS_MANIFEST_MAX, &text, &len);
    if (st == DSCKPT_OK) {
        if (!c->dir) c->dir = ds_strdup(dir);
        st = c->dir ? ds_ckpt_parse_manifest(c, text, len, mp) : DSCKPT_ENOMEM;
    }
    free(text);
    free(mp);
    return st;
}

dsckpt_status ds_ckpt_load(dsckpt_ckpt *c) {
    char *mp = ds_join(c->dir, DS_MANIFEST_NAME);
    if (!mp) return DSCKPT_ENOMEM;
    bool native = ds_exists(mp);
    free(mp);
    dsckpt_status st = !native && ds_is_universal_dir(c->dir)   ? ds_universal_open(c)
                       : !native && ds_is_deepspeed_dir(c->dir) ? ds_deepspeed_open(c)
                                                                : ds_native_open(c->dir, c);
    /* The tag names output directories (reshard, universal): whether it came from
     * a manifest (checked there) or from the directory's name ("." when the
     * checkpoint was named as the working directory), it must be one safe name. */
    if (st == DSCKPT_OK && c->tag && !ds_safe_name(c->tag))
        st = ds_err(DSCKPT_EINVAL, "%s: the tag '%.200s' taken from this directory's name is not a safe name; name the tag directory by its own name",
                    c->dir, c->tag);
    return st;
}

dsckpt_status dsckpt_ckpt_open(const char *path, const char *tag, dsckpt_ckpt **out) {
    ds_err_clear();
    if (!path || !out) return ds_err(DSCKPT_EINVAL, "dsckpt_ckpt_open: NULL argument");
    *out = NULL;
    dsckpt_ckpt *c = NULL;
    DS_TRY(ds_ckpt_new(&c));
    dsckpt_status st = ds_resolve_ckpt(path, tag, &c->dir, &c->root);
    if (st == DSCKPT_OK) st = ds_ckpt_load(c);
    if (st == DSCKPT_OK) st = ds_ckpt_index(c, NULL, NULL);
    if (st) {
        dsckpt_ckpt_free(c);
        return st;
    }
    *out = c;
    return DSCKPT_OK;
}

void dsckpt_ckpt_set_read_check(dsckpt_ckpt *c, int on) {
    /* A .safetensors source (dsckpt_source_open) has no digests: reads stay unchecked. */
    if (c) c->no_read_check = !on || (c->format && !strcmp(c->format, "safetensors"));
}

void dsckpt_ckpt_info(const dsckpt_ckpt *c, dsckpt_info *o) {
    memset(o, 0, sizeof *o);
    o->format = c->format;
    o->dir = c->dir;
    o->tag = c->tag;
    o->step = c->step;
    o->world_size = c->world_size;
    o->zero_stage = c->stage;
    o->train_dtype = c->train_dtype;
    o->tensor_count = c->ntensors;
    o->file_count = c->nfiles;
    for (size_t i = 0; i < c->ntensors; i++) o->param_count += c->tensors[i].numel;
}
