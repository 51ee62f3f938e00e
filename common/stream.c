/*
 * stream.c — sequential output stream with sticky error, chunked SHA-256 computed
 * while writing, and a fault-injecting backend for tests. See stream.h.
 */
#include "stream.h"

#include "awriter.h"
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- hashing ---- */

struct ds_hasher {
    EVP_MD_CTX *ctx;
    uint64_t chunk_size;
    uint64_t in_chunk; /* bytes in the current chunk */
    uint64_t total;
    size_t nchunks, cap;
    uint8_t (*chunks)[DS_SHA256_LEN];
};

void ds_digests_clear(ds_digests *d) {
    if (!d) return;
    free(d->chunks);
    memset(d, 0, sizeof *d);
}

dsckpt_status ds_hasher_new(uint64_t chunk_size, ds_hasher **out) {
    if (chunk_size == 0) return ds_err(DSCKPT_EINVAL, "hash chunk size must be positive");
    ds_hasher *h = calloc(1, sizeof *h);
    if (!h) return ds_err(DSCKPT_ENOMEM, "out of memory creating a hasher");
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        ds_hasher_free(h);
        return ds_err(DSCKPT_EINTERNAL, "OpenSSL: cannot initialise SHA-256");
    }
    h->chunk_size = chunk_size;
    *out = h;
    return DSCKPT_OK;
}

static dsckpt_status hasher_close_chunk(ds_hasher *h) {
    if (h->nchunks == h->cap) {
        size_t ncap = h->cap ? h->cap * 2 : 16;
        void *p = realloc(h->chunks, ncap * sizeof *h->chunks);
        if (!p) return ds_err(DSCKPT_ENOMEM, "out of memory growing the chunk digest list");
        h->chunks = p;
        h->cap = ncap;
    }
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(h->ctx, h->chunks[h->nchunks], &len) != 1 || len != DS_SHA256_LEN ||
        EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1)
        return ds_err(DSCKPT_EINTERNAL, "OpenSSL: SHA-256 failed");
    h->nchunks++;
    h->in_chunk = 0;
    return DSCKPT_OK;
}

dsckpt_status ds_hasher_update(ds_hasher *h, const void *data, size_t n) {
    const uint8_t *p = data;
    while (n > 0) {
        uint64_t room = h->chunk_size - h->in_chunk;
        size_t take = n < room ? n : (size_t)room;
        if (EVP_DigestUpdate(h->ctx, p, take) != 1) return ds_err(DSCKPT_EINTERNAL, "OpenSSL: SHA-256 failed");
        h->in_chunk += take;
        h->total += take;
        p += take;
        n -= take;
        if (h->in_chunk == h->chunk_size) DS_TRY(hasher_close_chunk(h));
    }
    return DSCKPT_OK;
}

dsckpt_status ds_hasher_final(ds_hasher *h, ds_digests *out) {
    if (h->in_chunk > 0) DS_TRY(hasher_close_chunk(h));
    memset(out, 0, sizeof *out);
    DS_TRY(ds_sha256_of_chunks((const uint8_t(*)[DS_SHA256_LEN])h->chunks, h->nchunks, out->file));
    out->size = h->total;
    out->chunk_size = h->chunk_size;
    out->nchunks = h->nchunks;
    out->chunks = h->chunks;
    h->chunks = NULL;
    h->nchunks = h->cap = 0;
    return DSCKPT_OK;
}

void ds_hasher_free(ds_hasher *h) {
    if (!h) return;
    EVP_MD_CTX_free(h->ctx);
    free(h->chunks);
    free(h);
}

dsckpt_status ds_sha256(const void *data, size_t n, uint8_t out[DS_SHA256_LEN]) {
    unsigned int len = 0;
    if (EVP_Digest(data, n, out, &len, EVP_sha256(), NULL) != 1 || len != DS_SHA256_LEN)
        return ds_err(DSCKPT_EINTERNAL, "OpenSSL: SHA-256 failed");
    return DSCKPT_OK;
}

dsckpt_status ds_sha256_file(const char *path, uint8_t out[DS_SHA256_LEN]) {
    enum { PIECE = 1 << 20 };
    int fd;
    uint64_t size;
    DS_TRY(ds_open_read(path, &fd, &size));
    uint8_t *buf = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    dsckpt_status st = md ? ds_malloc(PIECE, &buf) : ds_err(DSCKPT_ENOMEM, "out of memory hashing %s", path);
    if (!st && EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) st = ds_err(DSCKPT_EINTERNAL, "OpenSSL: SHA-256 failed");
    for (uint64_t off = 0; !st && off < size; off += PIECE) {
        size_t n = (size_t)DS_MIN((uint64_t)PIECE, size - off);
        st = ds_pread_full(fd, buf, n, off, path);
        if (!st && EVP_DigestUpdate(md, buf, n) != 1) st = ds_err(DSCKPT_EINTERNAL, "OpenSSL: SHA-256 failed");
    }
    unsigned int len = 0;
    if (!st && (EVP_DigestFinal_ex(md, out, &len) != 1 || len != DS_SHA256_LEN))
        st = ds_err(DSCKPT_EINTERNAL, "OpenSSL: SHA-256 failed");
    EVP_MD_CTX_free(md);
    free(buf);
    close(fd);
    return st;
}

dsckpt_status ds_sha256_of_chunks(const uint8_t (*chunks)[DS_SHA256_LEN], size_t n,
                                  uint8_t out[DS_SHA256_LEN]) {
    static const uint8_t empty = 0;
    return ds_sha256(n ? (const void *)chunks : (const void *)&empty, n * DS_SHA256_LEN, out);
}

void ds_hex(const uint8_t *bytes, size_t n, char *out) {
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[bytes[i] >> 4];
        out[2 * i + 1] = hx[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool ds_unhex32(const char *s, uint8_t out[DS_SHA256_LEN]) {
    if (!s || strlen(s) != 2 * DS_SHA256_LEN) return false;
    for (int i = 0; i < DS_SHA256_LEN; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

/* ---- fault injection ---- */

static atomic_llong fault_budget = -1;
static atomic_int fault_errno = ENOSPC;
static pthread_once_t fault_env_once = PTHREAD_ONCE_INIT;

int ds_fault_errno(void) { return atomic_load(&fault_errno); }

void ds_fault_inject_write(int64_t budget, int err) {
    atomic_store(&fault_errno, err ? err : ENOSPC);
    atomic_store(&fault_budget, budget < 0 ? -1 : (long long)budget);
}

static void fault_env_init(void) {
    const char *v = ds_test_hook("DSCKPT_TEST_FAIL_WRITE_AFTER");
    if (v) ds_fault_inject_write(strtoll(v, NULL, 10), ENOSPC);
}

size_t ds_fault_allow(size_t n, bool *fail) {
    pthread_once(&fault_env_once, fault_env_init);
    *fail = false;
    long long b = atomic_load(&fault_budget);
    while (b >= 0) {
        long long take = (long long)n <= b ? (long long)n : b;
        if (atomic_compare_exchange_weak(&fault_budget, &b, b - take)) {
            if ((size_t)take < n) *fail = true;
            return (size_t)take;
        }
    }
    return n;
}

/* ---- stream ---- */

#define STREAM_BUF (1u << 20)

struct ds_stream {
    int fd;
    int dfd;            /* direct descriptor (fsutil.h) or -1: then every write but
                         * the last is a whole, page-aligned buffer at a multiple of
                         * its size */
    char *path;
    uint64_t pos;
    dsckpt_status err;  /* sticky */
    char *errmsg;
    ds_hasher *hasher;
    uint8_t *buf;       /* the buffer being filled: spare[0] or spare[1] with a writer */
    uint8_t *spare[2];  /* with a writer: buf's first buffer and a second one */
    ds_awriter *aw;     /* with dfd, from the first full buffer: writes each full
                         * buffer while the other fills */
    size_t buflen;
    size_t bufcap;      /* the buffer's size: STREAM_BUF, then with a writer big */
    size_t big;         /* ds_stream_set_big_buffers (STREAM_BUF by default) */
    uint64_t synced;    /* bytes handed to write-back so far */
};

/* Start write-back of every full window as it is written, so the final fsync
 * does not find gigabytes of dirty pages at once and the disk works while we
 * compute (what RocksDB calls bytes_per_sync). */
#define WRITEBACK_WINDOW (64ull << 20)

static dsckpt_status stream_fail(ds_stream *s, dsckpt_status st) {
    if (s->err == DSCKPT_OK) {
        s->err = st;
        s->errmsg = strdup(dsckpt_last_error());
    }
    return st;
}

static dsckpt_status sticky(ds_stream *s) {
    if (s->err != DSCKPT_OK) return ds_err(s->err, "%s", s->errmsg ? s->errmsg : "earlier write failed");
    return DSCKPT_OK;
}

dsckpt_status ds_stream_create(const char *path, uint64_t chunk_size, ds_stream **out) {
    pthread_once(&fault_env_once, fault_env_init);
    ds_stream *s = calloc(1, sizeof *s);
    if (!s) return ds_err(DSCKPT_ENOMEM, "out of memory creating a stream for %s", path);
    s->fd = -1;
    s->dfd = -1;
    s->path = strdup(path);
    s->bufcap = s->big = STREAM_BUF;
    if (ds_malloc(STREAM_BUF, &s->buf)) s->buf = NULL;
    if (!s->path || !s->buf) {
        ds_stream_abort(s);
        return ds_err(DSCKPT_ENOMEM, "out of memory creating a stream for %s", path);
    }
    if (chunk_size) {
        dsckpt_status st = ds_hasher_new(chunk_size, &s->hasher);
        if (st) {
            free(s->buf);
            free(s->path);
            free(s);
            return st;
        }
    }
    s->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (s->fd < 0) {
        dsckpt_status st = ds_err_errno(errno, "%s: cannot create", path);
        ds_hasher_free(s->hasher);
        free(s->buf);
        free(s->path);
        free(s);
        return st;
    }
    s->dfd = ds_direct_fd(s->fd);
    *out = s;
    return DSCKPT_OK;
}

static dsckpt_status raw_write(ds_stream *s, const uint8_t *p, size_t n) {
    dsckpt_status st = ds_pwrite_direct(s->fd, s->dfd, p, n, s->pos, s->path);
    if (st) return stream_fail(s, st);
    s->pos += n;
    if (s->pos - s->synced >= WRITEBACK_WINDOW) {
        /* Advisory: a failure here is reported by the fsync in ds_stream_finish.
         * (Nothing to do for what went direct.) */
        (void)sync_file_range(s->fd, (off_t)s->synced, (off_t)(s->pos - s->synced), SYNC_FILE_RANGE_WRITE);
        s->synced = s->pos;
    }
    return DSCKPT_OK;
}

static dsckpt_status flush_buf(ds_stream *s) {
    if (s->buflen == 0) return DSCKPT_OK;
    size_t n = s->buflen;
    s->buflen = 0;
    if (!s->aw && s->dfd >= 0 && n == STREAM_BUF) {
        /* A full buffer: more may follow, so from here a writer thread writes each
         * while the other fills (a small file never starts one). Without it, the
         * writes stay direct, one at a time. With big buffers, this one is written
         * here and the two of the writer are big ones. */
        if (s->big > STREAM_BUF) {
            DS_TRY(raw_write(s, s->buf, n));
            if (ds_malloc(s->big, &s->spare[0]) == DSCKPT_OK && ds_malloc(s->big, &s->spare[1]) == DSCKPT_OK &&
                ds_awriter_new(&s->aw) == DSCKPT_OK) {
                free(s->buf);
                s->buf = s->spare[0];
                s->bufcap = s->big;
            } else {
                free(s->spare[0]);
                free(s->spare[1]);
                s->spare[0] = s->spare[1] = NULL;
            }
            return DSCKPT_OK;
        }
        s->spare[0] = s->buf;
        if (ds_malloc(STREAM_BUF, &s->spare[1]) || ds_awriter_new(&s->aw)) {
            free(s->spare[1]);
            s->spare[0] = s->spare[1] = NULL;
        }
    }
    if (!s->aw) return raw_write(s, s->buf, n);
    dsckpt_status st = ds_awriter_submit(s->aw, s->fd, s->dfd, s->buf, n, s->pos, s->path);
    if (st) return stream_fail(s, st);
    s->pos += n;
    s->buf = s->spare[s->buf == s->spare[0]]; /* the other one: its write is done */
    return DSCKPT_OK;
}

/* The write in flight done (with a writer); the writer stopped. */
static dsckpt_status stop_writer(ds_stream *s) {
    if (!s->aw) return DSCKPT_OK;
    dsckpt_status st = ds_awriter_drain(s->aw);
    ds_awriter_free(s->aw);
    s->aw = NULL;
    return st ? stream_fail(s, st) : DSCKPT_OK;
}

dsckpt_status ds_stream_write(ds_stream *s, const void *data, size_t n) {
    DS_TRY(sticky(s));
    if (ds_interrupted()) return stream_fail(s, ds_err_interrupted());
    if (n == 0) return DSCKPT_OK;
    if (s->hasher) {
        dsckpt_status st = ds_hasher_update(s->hasher, data, n);
        if (st) return stream_fail(s, st);
    }
    const uint8_t *p = data;
    /* Through the page cache, a write that overflows the buffer flushes it and, when
     * at least a buffer long itself, goes out from the caller's memory. Direct,
     * everything goes through the buffer, so that every write but the last is a
     * whole buffer. */
    if (s->dfd < 0 && s->buflen + n > STREAM_BUF) {
        DS_TRY(flush_buf(s));
        if (n >= STREAM_BUF) return raw_write(s, p, n);
    }
    while (n > 0) {
        size_t k = DS_MIN(n, s->bufcap - s->buflen);
        memcpy(s->buf + s->buflen, p, k);
        s->buflen += k;
        p += k;
        n -= k;
        if (s->buflen == s->bufcap) DS_TRY(flush_buf(s));
    }
    return DSCKPT_OK;
}

dsckpt_status ds_stream_write_zeros(ds_stream *s, uint64_t n) {
    static const uint8_t zeros[65536];
    while (n > 0) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        DS_TRY(ds_stream_write(s, zeros, k));
        n -= k;
    }
    return DSCKPT_OK;
}

uint64_t ds_stream_pos(const ds_stream *s) { return s->pos + s->buflen; }

void ds_stream_set_big_buffers(ds_stream *s, size_t bytes) {
    if (bytes > STREAM_BUF && bytes % DS_DIRECT_ALIGN == 0 && !s->aw) s->big = bytes;
}

static void stream_free(ds_stream *s) {
    ds_awriter_free(s->aw); /* waits for a write in flight */
    if (s->dfd >= 0) close(s->dfd);
    ds_hasher_free(s->hasher);
    free(s->errmsg);
    if (s->spare[0]) {
        free(s->spare[0]);
        free(s->spare[1]);
    } else {
        free(s->buf);
    }
    free(s->path);
    free(s);
}

dsckpt_status ds_stream_finish(ds_stream *s, ds_digests *out) {
    dsckpt_status st = sticky(s);
    if (st == DSCKPT_OK) st = flush_buf(s);
    dsckpt_status ws = stop_writer(s);
    if (st == DSCKPT_OK) st = ws;
    if (st == DSCKPT_OK && fsync(s->fd) != 0) st = ds_err_errno(errno, "%s: fsync failed", s->path);
    if (st == DSCKPT_OK) {
        int fd = s->fd;
        s->fd = -1;
        if (close(fd) != 0) st = ds_err_errno(errno, "%s: close failed", s->path);
    }
    if (st == DSCKPT_OK && s->hasher && out) st = ds_hasher_final(s->hasher, out);
    if (st != DSCKPT_OK) {
        if (s->fd >= 0) close(s->fd);
        unlink(s->path);
    }
    stream_free(s);
    return st;
}

void ds_stream_abort(ds_stream *s) {
    if (!s) return;
    (void)stop_writer(s); /* no write in flight on a descriptor about to close */
    if (s->fd >= 0) {
        close(s->fd);
        unlink(s->path);
    }
    stream_free(s);
}
