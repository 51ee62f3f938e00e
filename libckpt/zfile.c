/*
 * zfile.c — compressed rank files: the chunking writer and the shared cache of
 * decoded chunks (see zfile.h).
 */
#include "zfile.h"

#include "fsutil.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- writer ---- */

#define ZW_BUFFER ((size_t)8 << 20)

struct ds_zwriter {
    ds_stream *s;          /* the stored bytes (no hashing of its own) */
    char *path;
    uint64_t size, chunk_size;
    size_t nchunks, n;     /* chunks in all; chunks stored so far */
    uint64_t stored_pos;
    ds_zrec *zc;
    uint8_t (*dg)[DS_SHA256_LEN];
};

void ds_zwriter_abort(ds_zwriter *w) {
    if (!w) return;
    ds_stream_abort(w->s);
    free(w->path);
    free(w->zc);
    free(w->dg);
    free(w);
}

dsckpt_status ds_zwriter_create(const char *path, uint64_t size, uint64_t chunk_size, ds_zwriter **out) {
    *out = NULL;
    if (chunk_size == 0 || chunk_size > DS_ZCHUNK_MAX_RAW)
        return ds_err(DSCKPT_EINVAL, "chunk size %llu for a compressed file (1 to %llu)",
                      (unsigned long long)chunk_size, (unsigned long long)DS_ZCHUNK_MAX_RAW);
    ds_zwriter *w = calloc(1, sizeof *w);
    if (!w) return ds_err(DSCKPT_ENOMEM, "out of memory");
    w->size = size;
    w->chunk_size = chunk_size;
    w->nchunks = (size_t)ds_ceil_div(size, chunk_size);
    w->path = ds_strdup(path);
    dsckpt_status st = w->path ? DSCKPT_OK : DSCKPT_ENOMEM;
    size_t nc = w->nchunks ? w->nchunks : 1;
    if (st == DSCKPT_OK) st = ds_calloc(nc, sizeof *w->zc, &w->zc);
    if (st == DSCKPT_OK) st = ds_calloc(nc, sizeof *w->dg, &w->dg);
    if (st == DSCKPT_OK) st = ds_stream_create(path, 0, &w->s);
    /* Room for two chunks a buffer: chunks come a whole at a time. */
    if (st == DSCKPT_OK) ds_stream_set_big_buffers(w->s, ZW_BUFFER);
    if (st) {
        ds_zwriter_abort(w);
        return st;
    }
    *out = w;
    return DSCKPT_OK;
}

dsckpt_status ds_zwriter_enc_new(int level, ds_zchunk_enc **out) {
    DS_TRY(ds_zchunk_enc_new(level, out));
    /* Test builds only (testhook.c): write single-frame chunks as version 2
     * writers did, for the compatibility tests and bench/compress.sh's baseline. */
    dsckpt_status st = DSCKPT_OK;
    if (ds_test_hook("DSCKPT_TEST_ZCHUNK_FRAME")) st = ds_zchunk_enc_set_codec(*out, DS_ZCODEC_FRAME, 0);
    if (st) {
        ds_zchunk_enc_free(*out);
        *out = NULL;
    }
    return st;
}

dsckpt_status ds_zchunk_store_prepare(ds_zchunk_enc *enc, const uint8_t *raw, size_t n, int width, ds_zstored *out) {
    DS_TRY(ds_zchunk_encode(enc, raw, n, width, &out->bytes, &out->n, &out->kind));
    out->width = out->kind != DS_ZCHUNK_RAW ? width : 1;
    return ds_sha256(out->bytes, out->n, out->digest);
}

dsckpt_status ds_zwriter_put(ds_zwriter *w, size_t k, const ds_zstored *c) {
    if (k != w->n || k >= w->nchunks)
        return ds_err(DSCKPT_EINTERNAL, "%s: chunk %zu stored out of order (next %zu of %zu)", w->path, k, w->n,
                      w->nchunks);
    DS_TRY(ds_stream_write(w->s, c->bytes, c->n));
    w->zc[k] = (ds_zrec){.off = w->stored_pos, .size = c->n, .kind = (uint8_t)c->kind, .width = (uint8_t)c->width};
    memcpy(w->dg[k], c->digest, DS_SHA256_LEN);
    w->n++;
    w->stored_pos += c->n;
    return DSCKPT_OK;
}

dsckpt_status ds_zwriter_finish(ds_zwriter *w, ds_digests *dg, ds_zrec **zc, uint64_t *stored_size) {
    dsckpt_status st = w->n == w->nchunks ? DSCKPT_OK
                                          : ds_err(DSCKPT_EINTERNAL, "%s: finished after %zu of its %zu chunks",
                                                   w->path, w->n, w->nchunks);
    ds_stream *s = w->s;
    w->s = NULL;
    if (st == DSCKPT_OK) st = ds_stream_finish(s, NULL);
    else ds_stream_abort(s);
    if (st == DSCKPT_OK) {
        memset(dg, 0, sizeof *dg);
        st = ds_sha256_of_chunks((const uint8_t(*)[DS_SHA256_LEN])w->dg, w->n, dg->file);
        if (st) unlink(w->path);
    }
    if (st == DSCKPT_OK) {
        dg->size = w->size;
        dg->chunk_size = w->chunk_size;
        dg->nchunks = w->n;
        dg->chunks = w->dg;
        *zc = w->zc;
        *stored_size = w->stored_pos;
        w->dg = NULL;
        w->zc = NULL;
    }
    ds_zwriter_abort(w); /* the stream is gone: frees the rest */
    return st;
}

/* ---- uncached reads ---- */

void ds_zfile_reader_init(ds_zfile_reader *r, int fd, const ds_zrec *zc, size_t nchunks, uint64_t chunk_size,
                          uint64_t size, const uint8_t (*digests)[DS_SHA256_LEN], const char *what) {
    *r = (ds_zfile_reader){.fd = fd, .zc = zc, .nchunks = nchunks, .chunk_size = chunk_size, .size = size,
                           .digests = digests, .what = what, .k = SIZE_MAX};
}

void ds_zfile_reader_clear(ds_zfile_reader *r) {
    ds_zchunk_dec_free(r->dec);
    free(r->stored);
    free(r->scratch);
    r->dec = NULL;
    r->stored = r->scratch = NULL;
    r->stored_cap = r->scratch_cap = 0;
    r->k = SIZE_MAX;
}

/* A buffer of at least n bytes. Plain malloc, not ds_malloc's huge pages: these
 * reads touch little of what they hold (a header's bytes, a frame's plane), and
 * each page faulted in is one the kernel must zero. */
static dsckpt_status reader_buf(uint8_t **buf, size_t *cap, size_t n) {
    if (n <= *cap) return DSCKPT_OK;
    free(*buf);
    *cap = 0;
    *buf = malloc(n ? n : 1);
    if (!*buf) return ds_err(DSCKPT_ENOMEM, "out of memory (%zu bytes for a chunk)", n);
    *cap = n;
    return DSCKPT_OK;
}

/* Chunk k (rn raw bytes) read, checked and decoded into r->view. */
static dsckpt_status reader_load(ds_zfile_reader *r, size_t k, uint64_t rn, const char *cw) {
    const ds_zrec *z = &r->zc[k];
    r->k = SIZE_MAX;
    /* The record's sizes are checked before anything is allocated for them. */
    DS_TRY(ds_zchunk_check((ds_zchunk_kind)z->kind, z->width, z->size, rn, cw));
    if (!r->dec) DS_TRY(ds_zchunk_dec_new(&r->dec));
    DS_TRY(reader_buf(&r->stored, &r->stored_cap, (size_t)z->size));
    DS_TRY(ds_pread_full(r->fd, r->stored, (size_t)z->size, z->off, r->what));
    if (r->digests) {
        uint8_t dg[DS_SHA256_LEN];
        DS_TRY(ds_sha256(r->stored, (size_t)z->size, dg));
        if (memcmp(dg, r->digests[k], DS_SHA256_LEN) != 0)
            return ds_err(DSCKPT_ECHECKSUM,
                          "%s: chunk %zu (stored bytes %llu..%llu): SHA-256 mismatch: the file is damaged (dsckpt "
                          "verify lists every bad chunk)",
                          r->what, k, (unsigned long long)z->off, (unsigned long long)(z->off + z->size));
    }
    /* Only the zstd planes are decoded into scratch; the pages of the others stay
     * untouched. */
    if (z->kind != DS_ZCHUNK_RAW) DS_TRY(reader_buf(&r->scratch, &r->scratch_cap, (size_t)rn));
    ds_zchunk_dec_set_verified(r->dec, r->digests != NULL); /* as the checked reads do (readcheck.c) */
    DS_TRY(ds_zchunk_decode_view(r->dec, (ds_zchunk_kind)z->kind, z->width, r->stored, (size_t)z->size, r->scratch,
                                 (size_t)rn, cw, &r->view));
    r->k = k;
    return DSCKPT_OK;
}

dsckpt_status ds_zfile_reader_read(ds_zfile_reader *r, void *dst, size_t n, uint64_t off) {
    uint64_t end;
    if (ds_add_overflow(off, n, &end) || end > r->size)
        return ds_err(DSCKPT_ECORRUPT, "%s: bytes [%llu, +%zu) lie outside its %llu raw bytes", r->what,
                      (unsigned long long)off, n, (unsigned long long)r->size);
    uint8_t *out = dst;
    for (uint64_t pos = off; pos < end;) {
        size_t k = (size_t)(pos / r->chunk_size);
        if (k >= r->nchunks)
            return ds_err(DSCKPT_ECORRUPT, "%s: raw byte %llu is in no chunk", r->what, (unsigned long long)pos);
        uint64_t rb = (uint64_t)k * r->chunk_size, rn = DS_MIN(r->chunk_size, r->size - rb);
        if (k != r->k) {
            char cw[512];
            snprintf(cw, sizeof cw, "%s: chunk %zu", r->what, k);
            DS_TRY(reader_load(r, k, rn, cw));
        }
        uint64_t take = DS_MIN(end, rb + rn) - pos;
        ds_zplanes_read(out + (pos - off), &r->view, (size_t)(pos - rb), (size_t)take);
        pos += take;
    }
    return DSCKPT_OK;
}

/* ---- the cache of decoded chunks ---- */

enum { Z_EMPTY = 0, Z_LOADING, Z_READY };

typedef struct zent {
    ds_zslot s; /* first: a ds_zslot * is a zent * */
    uint32_t file;
    size_t k;
    int state;
    int refs;
    uint64_t used;
} zent;

struct ds_zcache {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    zent *e;
    size_t n;
    uint64_t tick;
    struct {
        uint8_t *p;
        size_t left;
    } lent[DS_ZCACHE_LENT]; /* ds_zcache_lend: what is not carved yet */
    size_t nlent;
};

dsckpt_status ds_zcache_new(size_t slots, ds_zcache **out) {
    *out = NULL;
    if (slots == 0) slots = 1;
    ds_zcache *z = calloc(1, sizeof *z);
    if (!z) return ds_err(DSCKPT_ENOMEM, "out of memory");
    z->e = calloc(slots, sizeof *z->e);
    if (!z->e) {
        free(z);
        return ds_err(DSCKPT_ENOMEM, "out of memory");
    }
    z->n = slots;
    for (size_t i = 0; i < slots; i++) {
        dsckpt_status st = ds_zchunk_dec_new(&z->e[i].s.dec);
        if (st) {
            z->n = i;
            ds_zcache_free(z);
            return st;
        }
    }
    pthread_mutex_init(&z->mu, NULL);
    pthread_cond_init(&z->cv, NULL);
    *out = z;
    return DSCKPT_OK;
}

void ds_zcache_free(ds_zcache *z) {
    if (!z) return;
    for (size_t i = 0; i < z->n; i++) {
        if (!z->e[i].s.raw_lent) free(z->e[i].s.raw);
        if (!z->e[i].s.stored_lent) free(z->e[i].s.stored);
        ds_zchunk_dec_free(z->e[i].s.dec);
    }
    if (z->n) {
        pthread_mutex_destroy(&z->mu);
        pthread_cond_destroy(&z->cv);
    }
    free(z->e);
    free(z);
}

void ds_zcache_lend(ds_zcache *z, void *mem, size_t bytes) {
    /* Carved on 64-byte lines, as ds_malloc aligns. */
    uintptr_t a = ((uintptr_t)mem + 63) & ~(uintptr_t)63;
    if (!mem || bytes < a - (uintptr_t)mem + 64) return;
    pthread_mutex_lock(&z->mu);
    if (z->nlent < DS_ZCACHE_LENT) {
        z->lent[z->nlent].p = (uint8_t *)a;
        z->lent[z->nlent].left = (bytes - (a - (uintptr_t)mem)) & ~(size_t)63;
        z->nlent++;
    }
    pthread_mutex_unlock(&z->mu);
}

/* n bytes carved from the lent memory (first fit), or NULL. */
static uint8_t *carve(ds_zcache *z, size_t n) {
    size_t need = (n + 63) & ~(size_t)63;
    uint8_t *p = NULL;
    pthread_mutex_lock(&z->mu);
    for (size_t i = 0; i < z->nlent && !p; i++) {
        if (z->lent[i].left < need) continue;
        p = z->lent[i].p;
        z->lent[i].p += need;
        z->lent[i].left -= need;
    }
    pthread_mutex_unlock(&z->mu);
    return p;
}

static ds_zslot *acquire(ds_zcache *z, uint32_t file, size_t k, bool *must_load, bool wait) {
    pthread_mutex_lock(&z->mu);
    for (;;) {
        zent *hit = NULL, *victim = NULL;
        for (size_t i = 0; i < z->n && !hit; i++) {
            zent *e = &z->e[i];
            if (e->state != Z_EMPTY && e->file == file && e->k == k) hit = e;
            else if (e->state != Z_LOADING && e->refs == 0 &&
                     (!victim || (victim->state != Z_EMPTY && (e->state == Z_EMPTY || e->used < victim->used))))
                victim = e;
        }
        if (hit && hit->state == Z_READY) {
            hit->refs++;
            hit->used = ++z->tick;
            pthread_mutex_unlock(&z->mu);
            *must_load = false;
            return &hit->s;
        }
        if (!hit && victim) {
            victim->file = file;
            victim->k = k;
            victim->state = Z_LOADING;
            victim->refs = 1;
            victim->used = ++z->tick;
            pthread_mutex_unlock(&z->mu);
            *must_load = true;
            return &victim->s;
        }
        /* Being loaded by another thread, or every slot in use: wait. */
        if (!wait) {
            pthread_mutex_unlock(&z->mu);
            *must_load = false;
            return NULL;
        }
        pthread_cond_wait(&z->cv, &z->mu);
    }
}

ds_zslot *ds_zcache_acquire(ds_zcache *z, uint32_t file, size_t k, bool *must_load) {
    return acquire(z, file, k, must_load, true);
}

ds_zslot *ds_zcache_try_acquire(ds_zcache *z, uint32_t file, size_t k, bool *must_load) {
    return acquire(z, file, k, must_load, false);
}

void ds_zcache_loaded(ds_zcache *z, ds_zslot *s, bool ok) {
    zent *e = (zent *)s;
    pthread_mutex_lock(&z->mu);
    e->state = ok ? Z_READY : Z_EMPTY;
    pthread_cond_broadcast(&z->cv);
    pthread_mutex_unlock(&z->mu);
}

void ds_zcache_release(ds_zcache *z, ds_zslot *s) {
    zent *e = (zent *)s;
    pthread_mutex_lock(&z->mu);
    e->refs--;
    if (e->refs == 0) pthread_cond_broadcast(&z->cv);
    pthread_mutex_unlock(&z->mu);
}

/* One of a slot's buffers at n bytes or more: carved from lent memory, else from
 * ds_malloc (a whole chunk on 2 MiB-aligned huge pages where the kernel grants
 * them; a fresh cache's slots are first touched inside the read that needs them,
 * where one fault per 2 MiB costs far less than 512). */
static dsckpt_status slot_buffer(ds_zcache *z, uint8_t **buf, size_t *cap, bool *lent, size_t n) {
    if (n <= *cap) return DSCKPT_OK;
    if (!*lent) free(*buf);
    *buf = NULL;
    *cap = 0;
    *lent = false;
    uint8_t *p = carve(z, n);
    if (p) *lent = true;
    else DS_TRY(ds_malloc(n, &p));
    *buf = p;
    *cap = n;
    return DSCKPT_OK;
}

dsckpt_status ds_zslot_reserve(ds_zcache *z, ds_zslot *s, size_t raw_n, size_t stored_n) {
    DS_TRY(slot_buffer(z, &s->raw, &s->raw_cap, &s->raw_lent, raw_n));
    return slot_buffer(z, &s->stored, &s->stored_cap, &s->stored_lent, stored_n);
}
