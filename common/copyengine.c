/*
 * copyengine.c — fill, hash, pwrite and start writeback of output units on every
 * worker (see copyengine.h).
 */
#include "copyengine.h"

#include "awriter.h"
#include "fsutil.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct engine {
    const ds_copy_job *job;
    uint8_t **buf;  /* per worker w: buffers 2w and 2w + 1 (the second only with
                     * writer threads) of DS_COPY_PIECE bytes, page-aligned (ds_malloc) */
    int *cur;       /* per worker: the buffer it fills next (0 or 1) */
    int *dfd;       /* per file: its direct descriptor, or -1 (fsutil.h) */
    ds_awriter **aw; /* per worker where any file writes direct, else NULL */
    size_t *order;  /* order[k]: the unit the k-th job writes */
} engine;

/* The units cut into `threads` stretches of consecutive units, taken in turn
 * (stretch 0's first, stretch 1's first, ..., stretch 0's second, ...), so that at
 * any time the workers fill far-apart parts of the output (different files, or
 * different halves of one file): their sources are then mostly disjoint too, and
 * two workers rarely meet on one checked source chunk (readcheck.c). */
static void spread(size_t *order, size_t n, int threads) {
    size_t len = (size_t)ds_ceil_div(n, (uint64_t)threads), k = 0;
    for (size_t pos = 0; pos < len; pos++)
        for (size_t s = 0; s < (size_t)threads; s++)
            if (s * len + pos < n) order[k++] = s * len + pos;
}

static dsckpt_status check_unit(const ds_copy_job *j, const ds_copy_unit *u) {
    const ds_copy_file *f = u->file < j->nfiles ? &j->files[u->file] : NULL;
    bool ok = f && u->len > 0;
    if (ok && f->hash_chunk)
        ok = u->offset % f->hash_chunk == 0 && u->offset < f->size &&
             u->len == DS_MIN(f->hash_chunk, f->size - u->offset) && f->digests;
    if (!ok)
        return ds_err(DSCKPT_EINTERNAL, "copy engine: unit at %llu (+%llu) does not fit its file",
                      (unsigned long long)u->offset, (unsigned long long)u->len);
    return DSCKPT_OK;
}

/* One unit: its pieces filled, hashed, written, handed to writeback. */
static dsckpt_status copy_unit(void *user, size_t k, int worker) {
    const engine *e = user;
    size_t ui = e->order[k];
    const ds_copy_job *j = e->job;
    const ds_copy_unit *u = &j->units[ui];
    DS_TRY(check_unit(j, u));
    ds_copy_file *f = &j->files[u->file];
    ds_hasher *h = NULL;
    if (f->hash_chunk) DS_TRY(ds_hasher_new(f->hash_chunk, &h));
    dsckpt_status st = DSCKPT_OK;
    for (uint64_t done = 0; st == DSCKPT_OK && done < u->len; done += DS_COPY_PIECE) {
        if (ds_parallel_stopping(NULL)) {
            st = ds_err(DSCKPT_EINTERNAL, "stopped after another worker failed");
            break;
        }
        size_t n = (size_t)DS_MIN((uint64_t)DS_COPY_PIECE, u->len - done);
        uint64_t at = u->offset + done;
        int dfd = e->dfd[u->file];
        ds_awriter *aw = e->aw ? e->aw[worker] : NULL;
        /* With writer threads, written by the worker's while it fills the other
         * buffer. */
        uint8_t *b = e->buf[2 * worker + (aw ? e->cur[worker] : 0)];
        const void *p = b;
        st = j->fill(j->user, ui, u->file, at, n, b, &p, worker);
        if (st == DSCKPT_OK && h) st = ds_hasher_update(h, p, n);
        if (st != DSCKPT_OK) break;
        if (aw) {
            if (p != b) memcpy(b, p, n); /* memory the fill lent is only lent until its next call */
            st = ds_awriter_submit(aw, f->fd, dfd, b, n, at, f->name);
            e->cur[worker] ^= 1;
        } else {
            st = ds_pwrite_full(f->fd, p, n, at, f->name);
            /* Start this piece's writeback now, so the disk works while the
             * workers go on; the caller's fsync finds little left. Advisory: a
             * failure here is reported by that fsync. */
            if (st == DSCKPT_OK) (void)sync_file_range(f->fd, (off_t)at, (off_t)n, SYNC_FILE_RANGE_WRITE);
        }
        if (st != DSCKPT_OK) break;
        ds_progress_add(j->prog, n);
    }
    if (st == DSCKPT_OK && h) {
        ds_digests d = {0};
        st = ds_hasher_final(h, &d);
        if (st == DSCKPT_OK) memcpy(f->digests[u->offset / f->hash_chunk], d.chunks[0], DS_SHA256_LEN);
        ds_digests_clear(&d);
    }
    ds_hasher_free(h);
    return st;
}

/* Direct descriptors for the files, and a writer thread per worker if any. */
static dsckpt_status start_direct(engine *e, int threads) {
    const ds_copy_job *job = e->job;
    DS_TRY(ds_malloc((job->nfiles ? job->nfiles : 1) * sizeof *e->dfd, &e->dfd));
    bool any = false;
    for (size_t i = 0; i < job->nfiles; i++) {
        /* Direct only where every piece is whole pages but a file's last: files cut
         * into page-multiple chunks (rank files). Elsewhere (safetensors and torch
         * zip outputs, tensors at any offset) a unit's ends cut pages, and its small
         * writes, two in flight, ran 1.4x as long as through the page cache
         * (a 404 MB consolidate, bench/RESULTS.md). */
        uint64_t c = job->files[i].hash_chunk;
        e->dfd[i] = c && c % DS_DIRECT_ALIGN == 0 ? ds_direct_fd(job->files[i].fd) : -1;
        any = any || e->dfd[i] >= 0;
        /* The file's blocks reserved up front: a direct write then neither extends
         * the file nor fills a hole, which ext4 does under the inode's lock, one
         * write at a time. Advisory: where it fails, the writes still allocate. */
        if (e->dfd[i] >= 0 && job->files[i].size > 0)
            (void)fallocate(job->files[i].fd, 0, 0, (off_t)job->files[i].size);
    }
    if (!any) return DSCKPT_OK;
    DS_TRY(ds_calloc((size_t)threads, sizeof *e->aw, &e->aw));
    for (int i = 0; i < threads; i++) DS_TRY(ds_awriter_new(&e->aw[i]));
    return DSCKPT_OK;
}

/* Waits for every write in flight and stops the writers; returns st, or the first
 * write failure where st is not a failure already. */
static dsckpt_status stop_direct(engine *e, int threads, dsckpt_status st) {
    for (int i = 0; e->aw && i < threads; i++) {
        if (!e->aw[i]) continue;
        dsckpt_status ws = ds_awriter_drain(e->aw[i]);
        if (ws && st == DSCKPT_OK) st = ws;
        ds_awriter_free(e->aw[i]);
    }
    free(e->aw);
    for (size_t i = 0; e->dfd && i < e->job->nfiles; i++)
        if (e->dfd[i] >= 0) close(e->dfd[i]);
    free(e->dfd);
    return st;
}

dsckpt_status ds_copy_run(const ds_copy_job *job) {
    int threads = job->threads < 1 ? 1 : job->threads;
    if ((size_t)threads > job->nunits) threads = job->nunits ? (int)job->nunits : 1;
    engine e = {.job = job};
    dsckpt_status st = ds_calloc(2 * (size_t)threads, sizeof *e.buf, &e.buf);
    if (st == DSCKPT_OK) st = ds_calloc((size_t)threads, sizeof *e.cur, &e.cur);
    if (st == DSCKPT_OK) st = ds_calloc(job->nunits ? job->nunits : 1, sizeof *e.order, &e.order);
    if (st == DSCKPT_OK) spread(e.order, job->nunits, threads);
    if (st == DSCKPT_OK) st = start_direct(&e, threads);
    for (int i = 0; st == DSCKPT_OK && i < 2 * threads; i++)
        if (i % 2 == 0 || e.aw) st = ds_malloc(DS_COPY_PIECE, &e.buf[i]);
    if (st == DSCKPT_OK) st = ds_parallel_run(job->nunits, threads, copy_unit, &e, job->prog);
    st = stop_direct(&e, threads, st); /* before the buffers go: a write may be in flight */
    if (e.buf)
        for (int i = 0; i < 2 * threads; i++) free(e.buf[i]);
    free(e.buf);
    free(e.cur);
    free(e.order);
    return st;
}

dsckpt_status ds_copy_chunk_units(ds_copy_file *files, size_t nfiles, uint64_t unit_bytes, ds_copy_unit **units,
                                  size_t *nunits) {
    size_t n = 0;
    for (size_t i = 0; i < nfiles; i++) {
        uint64_t step = files[i].hash_chunk ? files[i].hash_chunk : unit_bytes;
        if (step == 0) return ds_err(DSCKPT_EINTERNAL, "copy engine: unit size 0");
        uint64_t k = ds_ceil_div(files[i].size, step);
        if (files[i].hash_chunk) {
            free(files[i].digests);
            files[i].digests = NULL;
            DS_TRY(ds_calloc(k ? (size_t)k : 1, DS_SHA256_LEN, &files[i].digests));
        }
        n += (size_t)k;
    }
    ds_copy_unit *u = NULL;
    DS_TRY(ds_calloc(n ? n : 1, sizeof *u, &u));
    size_t m = 0;
    for (size_t i = 0; i < nfiles; i++) {
        uint64_t step = files[i].hash_chunk ? files[i].hash_chunk : unit_bytes;
        for (uint64_t off = 0; off < files[i].size; off += step)
            u[m++] = (ds_copy_unit){.file = i, .offset = off, .len = DS_MIN(step, files[i].size - off)};
    }
    *units = u;
    *nunits = m;
    return DSCKPT_OK;
}

dsckpt_status ds_copy_digests(ds_copy_file *f, ds_digests *out) {
    if (!f->hash_chunk) return ds_err(DSCKPT_EINTERNAL, "%s: not hashed", f->name);
    size_t n = (size_t)ds_ceil_div(f->size, f->hash_chunk);
    DS_TRY(ds_sha256_of_chunks((const uint8_t(*)[DS_SHA256_LEN])f->digests, n, out->file));
    out->size = f->size;
    out->chunk_size = f->hash_chunk;
    out->nchunks = n;
    out->chunks = f->digests;
    f->digests = NULL;
    return DSCKPT_OK;
}

void ds_copy_file_clear(ds_copy_file *f) {
    if (!f) return;
    free(f->digests);
    f->digests = NULL;
}
