/*
 * readcheck.c — every read of tensor data is checked (see ckpt.h, "Checked reads").
 *
 * Check units: a native rank file's manifest chunks (SHA-256 each), a DeepSpeed
 * .pt file's zip members (CRC-32 each, from the central directory). Each unit has
 * an atomic state; the first reader to touch it claims it and reads the whole
 * unit exactly once, in pieces: the part the caller asked for goes straight into
 * the caller's buffer, the rest through a small scratch buffer, and every piece is
 * hashed as it arrives. So a chunk read only partially is still hashed whole
 * (reading the remainder once), and no requested byte is read twice by the thread
 * that checks it. Readers run on the existing worker threads (parallel.c), so the
 * hashing is spread over every core the operation uses.
 *
 * Compressed rank files (zfile.h) are read through a bounded cache of decoded
 * chunks shared by the threads: the first reader of a chunk preads its stored
 * bytes, hashes them (once per run, when checks are on), decodes them into a
 * cache slot; readers copy their part out of the slot. Only the chunks a command
 * touches are read and decoded, each normally once.
 */
#include "ckpt.h"
#include "fsutil.h"
#include "zfile.h"
#include "zip.h"

#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define PIECE ((size_t)1 << 20)

enum { U_FRESH = 0, U_CHECKING, U_OK, U_BAD };

struct ds_vfile {
    bool on;            /* this file's reads are checked */
    bool sha;           /* native chunks (else zip members) */
    bool z;             /* a compressed file: reads go through fs->zcache */
    size_t n;           /* units */
    atomic_uchar *state;
    zip_archive *zip;   /* DeepSpeed: members */
    size_t *order;      /* DeepSpeed: member indices sorted by data offset */
    /* Deferred verdicts (ds_fdset_defer_checks): the chunk hashed up to `next` as
     * its parts arrived, its digest context held until its last byte. */
    bool pend;
    size_t pend_k;
    uint64_t pend_next;
    EVP_MD_CTX *pend_md;
};

void ds_fdset_check_free(ds_fdset *fs) {
    if (!fs) return;
    ds_zcache_free(fs->zcache);
    fs->zcache = NULL;
    if (!fs->vf) return;
    for (size_t i = 0; i < fs->n; i++) {
        EVP_MD_CTX_free(fs->vf[i].pend_md);
        free(fs->vf[i].state);
        zip_free(fs->vf[i].zip);
        free(fs->vf[i].order);
    }
    free(fs->vf);
    fs->vf = NULL;
}

/* Member indices sorted by data offset (a merge sort: qsort has no user pointer). */
static void sort_members(const zip_archive *z, size_t *ix, size_t *tmp, size_t n) {
    if (n < 2) return;
    size_t h = n / 2;
    sort_members(z, ix, tmp, h);
    sort_members(z, ix + h, tmp, n - h);
    size_t a = 0, b = h, k = 0;
    while (a < h && b < n)
        tmp[k++] = z->members[ix[a]].data_offset <= z->members[ix[b]].data_offset ? ix[a++] : ix[b++];
    while (a < h) tmp[k++] = ix[a++];
    while (b < n) tmp[k++] = ix[b++];
    memcpy(ix, tmp, n * sizeof *ix);
}

dsckpt_status ds_fdset_check_alloc(const dsckpt_ckpt *c, ds_fdset *fs) {
    fs->vf = NULL;
    fs->zcache = NULL;
    size_t nz = 0;
    for (size_t i = 0; i < c->nfiles; i++) nz += c->files[i].compressed;
    bool anyz = nz > 0;
    /* Compressed files are read through the cache even with the checks off. */
    if ((c->no_read_check && !anyz) || c->nfiles == 0) return DSCKPT_OK;
    DS_TRY(ds_calloc(c->nfiles, sizeof *fs->vf, &fs->vf));
    /* A slot per worker thread and one more per compressed file (at most
     * DS_ZCACHE_FILE_SLOTS): a reader going forwards through several files at once
     * (a tensor split over every rank file) keeps each file's current chunk
     * instead of decoding it again for every piece. Slots allocate on first use;
     * at most slots x (raw + stored chunk size) of memory. */
    size_t slots = (size_t)ds_thread_count(0) + 1 + DS_MIN(nz, (size_t)DS_ZCACHE_FILE_SLOTS);
    dsckpt_status st = anyz ? ds_zcache_new(slots, &fs->zcache) : DSCKPT_OK;
    if (st) ds_fdset_check_free(fs);
    return st;
}

/* A DeepSpeed .pt file's check units: its zip members (CRC-32), by data offset. */
static dsckpt_status zip_units(const ds_file *f, int fd, ds_vfile *v) {
    DS_TRY(zip_open_fd(fd, f->path, &v->zip));
    v->n = v->zip->n;
    size_t *tmp = NULL;
    dsckpt_status st = ds_calloc(v->n ? v->n : 1, sizeof *v->order, &v->order);
    if (st == DSCKPT_OK) st = ds_calloc(v->n ? v->n : 1, sizeof *tmp, &tmp);
    if (st == DSCKPT_OK) {
        for (size_t k = 0; k < v->n; k++) v->order[k] = k;
        sort_members(v->zip, v->order, tmp, v->n);
    }
    free(tmp);
    return st;
}

dsckpt_status ds_fdset_check_file(const dsckpt_ckpt *c, const ds_fdset *fs, size_t i) {
    if (!fs->vf) return DSCKPT_OK;
    const ds_file *f = &c->files[i];
    ds_vfile *v = &fs->vf[i];
    if (f->compressed) {
        v->z = true;
        v->sha = true;
        v->n = f->dg.nchunks;
    } else if (c->no_read_check) {
        return DSCKPT_OK; /* v->on false: plain preads */
    } else if (f->has_digests) {
        v->sha = true;
        v->n = f->dg.nchunks;
    } else {
        DS_TRY(zip_units(f, fs->fd[i], v));
    }
    if (v->n) {
        v->state = calloc(v->n, sizeof *v->state);
        if (!v->state) return ds_err(DSCKPT_ENOMEM, "out of memory");
        for (size_t k = 0; k < v->n; k++) atomic_init(&v->state[k], U_FRESH);
    }
    v->on = !c->no_read_check;
    return DSCKPT_OK;
}

dsckpt_status ds_fdset_check_init(const dsckpt_ckpt *c, ds_fdset *fs) {
    DS_TRY(ds_fdset_check_alloc(c, fs));
    dsckpt_status st = DSCKPT_OK;
    for (size_t i = 0; i < c->nfiles && st == DSCKPT_OK; i++) st = ds_fdset_check_file(c, fs, i);
    if (st) ds_fdset_check_free(fs);
    return st;
}

/* Bounds of unit k: [*beg, *end) (of the stored bytes of a compressed file). */
static void unit_bounds(const ds_file *f, const ds_vfile *v, size_t k, uint64_t *beg, uint64_t *end) {
    if (v->z) {
        *beg = f->zc[k].off;
        *end = f->zc[k].off + f->zc[k].size;
    } else if (v->sha) {
        *beg = (uint64_t)k * f->dg.chunk_size;
        *end = DS_MIN(*beg + f->dg.chunk_size, f->size);
    } else {
        const zip_member *m = &v->zip->members[v->order[k]];
        *beg = m->data_offset;
        *end = m->data_offset + m->size;
    }
}

/* The unit holding byte `off`, or v->n when none does. */
static size_t unit_of(const ds_file *f, const ds_vfile *v, uint64_t off) {
    if (v->sha) {
        size_t k = (size_t)(off / f->dg.chunk_size);
        return k < v->n ? k : v->n;
    }
    size_t lo = 0, hi = v->n; /* first member starting after off */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v->zip->members[v->order[mid]].data_offset <= off) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0) return v->n;
    uint64_t b, e;
    unit_bounds(f, v, lo - 1, &b, &e);
    return off < e ? lo - 1 : v->n;
}

static dsckpt_status unit_failed(const ds_file *f, const ds_vfile *v, size_t k) {
    uint64_t b, e;
    unit_bounds(f, v, k, &b, &e);
    if (v->z)
        return ds_err(DSCKPT_ECHECKSUM,
                      "%s: chunk %zu (stored bytes %llu..%llu, raw bytes %llu..%llu): SHA-256 mismatch: the file is "
                      "damaged (dsckpt verify lists every bad chunk)",
                      f->path, k, (unsigned long long)b, (unsigned long long)e,
                      (unsigned long long)((uint64_t)k * f->dg.chunk_size),
                      (unsigned long long)DS_MIN((uint64_t)(k + 1) * f->dg.chunk_size, f->size));
    if (v->sha)
        return ds_err(DSCKPT_ECHECKSUM,
                      "%s: chunk %zu (bytes %llu..%llu): SHA-256 mismatch: the file is damaged (dsckpt verify lists "
                      "every bad chunk; reading with checks off reads it anyway)",
                      f->path, k, (unsigned long long)b, (unsigned long long)e);
    return ds_err(DSCKPT_ECHECKSUM,
                  "%s: member '%.200s': CRC-32 mismatch: the file is damaged (reading with checks off reads it anyway)", f->path,
                  v->zip->members[v->order[k]].name);
}

/* Reads all of unit k once, checking it: parts[0..np) (sorted by offset, not
 * overlapping, each within the unit) go to their buffers, the rest through
 * scratch, PIECE at a time so that each piece is hashed while in cache. */
static dsckpt_status check_unit(const ds_file *f, int fd, const ds_vfile *v, size_t k, const ds_read_part *parts,
                                size_t np) {
    uint64_t beg, end;
    unit_bounds(f, v, k, &beg, &end);
    EVP_MD_CTX *md = NULL;
    uLong crc = crc32(0L, Z_NULL, 0);
    uint8_t *scratch = NULL;
    dsckpt_status st = DSCKPT_OK;
    if (v->sha) {
        md = EVP_MD_CTX_new();
        if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
            EVP_MD_CTX_free(md);
            return ds_err(DSCKPT_EINTERNAL, "OpenSSL: cannot initialise SHA-256");
        }
    }
    uint64_t asked = 0;
    for (size_t i = 0; i < np; i++) asked += parts[i].bytes;
    if (end - beg > asked) {
        if (ds_malloc(PIECE, &scratch)) {
            EVP_MD_CTX_free(md);
            return ds_err(DSCKPT_ENOMEM, "out of memory checking %s", f->path);
        }
    }
    size_t i = 0;
    for (uint64_t pos = beg; pos < end && st == DSCKPT_OK;) {
        while (i < np && parts[i].offset + parts[i].bytes <= pos) i++; /* parts done (or empty) */
        uint8_t *p;
        size_t n;
        if (i < np && parts[i].offset <= pos) { /* a caller's part: straight into its buffer */
            n = (size_t)DS_MIN((uint64_t)PIECE, parts[i].offset + parts[i].bytes - pos);
            p = parts[i].dst + (pos - parts[i].offset);
        } else {
            uint64_t lim = i < np ? parts[i].offset : end;
            n = (size_t)DS_MIN((uint64_t)PIECE, lim - pos);
            p = scratch;
        }
        st = ds_pread_full(fd, p, n, pos, f->path);
        if (st) break;
        if (v->sha) {
            if (EVP_DigestUpdate(md, p, n) != 1) st = ds_err(DSCKPT_EINTERNAL, "OpenSSL: SHA-256 failed");
        } else {
            crc = crc32(crc, p, (uInt)n); /* n <= PIECE */
        }
        pos += n;
    }
    bool good = false;
    if (st == DSCKPT_OK && v->sha) {
        uint8_t dg[DS_SHA256_LEN];
        unsigned int len = 0;
        if (EVP_DigestFinal_ex(md, dg, &len) != 1 || len != DS_SHA256_LEN)
            st = ds_err(DSCKPT_EINTERNAL, "OpenSSL: SHA-256 failed");
        else good = memcmp(dg, f->dg.chunks[k], DS_SHA256_LEN) == 0;
    } else if (st == DSCKPT_OK) {
        good = (uint32_t)crc == v->zip->members[v->order[k]].crc32;
    }
    EVP_MD_CTX_free(md);
    free(scratch);
    if (st == DSCKPT_OK && !good) st = unit_failed(f, v, k);
    return st;
}

/* Fills a cache slot with chunk k (rn raw bytes) of compressed file f, in its
 * shuffled form: checks the record's sizes before allocating for them, reads the
 * stored bytes (a raw chunk straight into the slot's raw buffer), checks their
 * SHA-256 unless this run already did (or checks are off), decodes. */
static dsckpt_status load_zchunk(ds_zcache *cache, const ds_file *f, int fd, ds_vfile *v, size_t k, uint64_t rn,
                                 ds_zslot *slot) {
    const ds_zrec *z = &f->zc[k];
    ds_zchunk_kind kind = (ds_zchunk_kind)z->kind;
    char what[600];
    snprintf(what, sizeof what, "%s: chunk %zu", f->path, k);
    DS_TRY(ds_zchunk_check(kind, z->width, z->size, rn, what));
    bool raw = kind == DS_ZCHUNK_RAW;
    /* Both buffers at the raw size (stored bytes are fewer): a slot allocates
     * once, not again for each larger stored chunk (fresh pages cost faults). */
    DS_TRY(ds_zslot_reserve(cache, slot, (size_t)(rn ? rn : 1), raw ? 1 : (size_t)rn));
    uint8_t *sb = raw ? slot->raw : slot->stored;
    DS_TRY(ds_pread_full(fd, sb, (size_t)z->size, z->off, f->path));
    bool hashed = v->on && atomic_load(&v->state[k]) != U_OK;
    if (hashed) {
        uint8_t dg[DS_SHA256_LEN];
        DS_TRY(ds_sha256(sb, (size_t)z->size, dg));
        if (memcmp(dg, f->dg.chunks[k], DS_SHA256_LEN) != 0) {
            atomic_store(&v->state[k], U_BAD);
            return unit_failed(f, v, k);
        }
        atomic_store(&v->state[k], U_OK);
    }
    /* These bytes, not only this chunk, were hashed: the frames' checksums are
     * redundant. A chunk whose verdict came from an earlier read is read again
     * unhashed, so its frames keep theirs. */
    ds_zchunk_dec_set_verified(slot->dec, hashed);
    return ds_zchunk_decode_view(slot->dec, kind, z->width, sb, (size_t)z->size, slot->raw, (size_t)rn, what,
                                 &slot->view);
}

/* Raw size of chunk k of compressed file f. */
static uint64_t zchunk_raw_n(const ds_file *f, size_t k) {
    uint64_t rb = (uint64_t)k * f->dg.chunk_size;
    return DS_MIN(f->dg.chunk_size, f->size - rb);
}

/* Instead of waiting for another thread to decode the chunk this one needs:
 * decodes chunk j of the same file (the next one) when nobody has it yet and a
 * slot is free, so two readers of one file decode in parallel. Its outcome is
 * left to the reader that asks for it (a failure empties the slot, or marks a bad
 * chunk, which that reader then reports). */
static void zprefetch(const ds_file *f, const ds_fdset *fs, uint32_t file, size_t j) {
    ds_vfile *v = &fs->vf[file];
    if (j >= v->n || (v->on && atomic_load(&v->state[j]) == U_BAD)) return;
    bool must = false;
    ds_zslot *s = ds_zcache_try_acquire(fs->zcache, file, j, &must);
    if (!s) return;
    if (must) ds_zcache_loaded(fs->zcache, s, load_zchunk(fs->zcache, f, fs->fd[file], v, j, zchunk_raw_n(f, j), s) == DSCKPT_OK);
    ds_zcache_release(fs->zcache, s);
}

/* Raw bytes [offset, offset+n) of a compressed file, through the chunk cache:
 * each chunk's part unshuffled from the slot straight into dst. */
static dsckpt_status zread(const ds_file *f, const ds_fdset *fs, uint32_t file, uint8_t *dst, size_t n,
                           uint64_t offset) {
    ds_vfile *v = &fs->vf[file];
    uint64_t end = offset + n;
    for (uint64_t pos = offset; pos < end;) {
        size_t k = (size_t)(pos / f->dg.chunk_size);
        if (k >= v->n)
            return ds_err(DSCKPT_ECORRUPT, "%s: raw byte %llu is in no chunk listed in the manifest", f->path,
                          (unsigned long long)pos);
        if (v->on && atomic_load(&v->state[k]) == U_BAD) return unit_failed(f, v, k);
        uint64_t rb = (uint64_t)k * f->dg.chunk_size, rn = zchunk_raw_n(f, k);
        uint64_t take = DS_MIN(end, rb + rn) - pos;
        bool must = false;
        ds_zslot *slot = ds_zcache_try_acquire(fs->zcache, file, k, &must);
        if (!slot) {
            zprefetch(f, fs, file, k + 1);
            slot = ds_zcache_acquire(fs->zcache, file, k, &must);
        }
        if (must) {
            dsckpt_status st = load_zchunk(fs->zcache, f, fs->fd[file], v, k, rn, slot);
            ds_zcache_loaded(fs->zcache, slot, st == DSCKPT_OK);
            if (st) {
                ds_zcache_release(fs->zcache, slot);
                return st;
            }
        }
        if (fs->stream) ds_zplanes_read_stream(dst + (pos - offset), &slot->view, (size_t)(pos - rb), (size_t)take);
        else ds_zplanes_read(dst + (pos - offset), &slot->view, (size_t)(pos - rb), (size_t)take);
        ds_zcache_release(fs->zcache, slot);
        pos += take;
    }
    return DSCKPT_OK;
}

/* ---- deferred verdicts (dsckpt_internal.h, ds_fdset_defer_checks) ---- */

void ds_fdset_defer_checks(ds_fdset *fs) { fs->deferred = true; }

void ds_fdset_stream_reads(ds_fdset *fs) { fs->stream = true; }

void ds_fdset_lend(ds_fdset *fs, void *mem, size_t bytes) {
    if (fs->zcache) ds_zcache_lend(fs->zcache, mem, bytes);
}

static dsckpt_status pend_update(ds_vfile *v, const uint8_t *p, size_t n) {
    return EVP_DigestUpdate(v->pend_md, p, n) == 1 ? DSCKPT_OK : ds_err(DSCKPT_EINTERNAL, "OpenSSL: SHA-256 failed");
}

/* Hashes the rest of file f's part-hashed chunk (read into scratch) and gives its
 * verdict. */
static dsckpt_status pend_finish(const ds_file *f, int fd, ds_vfile *v) {
    size_t k = v->pend_k;
    uint64_t beg, end;
    unit_bounds(f, v, k, &beg, &end);
    dsckpt_status st = DSCKPT_OK;
    if (v->pend_next < end) {
        uint8_t *scratch = NULL;
        st = ds_malloc(PIECE, &scratch);
        for (uint64_t pos = v->pend_next; st == DSCKPT_OK && pos < end;) {
            size_t n = (size_t)DS_MIN((uint64_t)PIECE, end - pos);
            st = ds_pread_full(fd, scratch, n, pos, f->path);
            if (st == DSCKPT_OK) st = pend_update(v, scratch, n);
            pos += n;
        }
        free(scratch);
    }
    uint8_t dg[DS_SHA256_LEN];
    unsigned int len = 0;
    if (st == DSCKPT_OK && (EVP_DigestFinal_ex(v->pend_md, dg, &len) != 1 || len != DS_SHA256_LEN))
        st = ds_err(DSCKPT_EINTERNAL, "OpenSSL: SHA-256 failed");
    v->pend = false;
    if (st) { /* not checked: a later read of the chunk checks it afresh */
        atomic_store(&v->state[k], U_FRESH);
        return st;
    }
    bool good = memcmp(dg, f->dg.chunks[k], DS_SHA256_LEN) == 0;
    atomic_store(&v->state[k], good ? U_OK : U_BAD);
    return good ? DSCKPT_OK : unit_failed(f, v, k);
}

/* Bytes [a, b) of chunk k (bounds [ub, ue)) of a deferred set's native file into
 * dst. Sets *done when it read them; leaves it false for the immediate check to
 * read them (a whole chunk, one already checked, or a part that neither starts a
 * chunk nor continues the pending one). */
static dsckpt_status deferred_part(const ds_file *f, int fd, ds_vfile *v, size_t k, uint64_t ub, uint64_t ue,
                                   uint64_t a, uint64_t b, uint8_t *dst, bool *done) {
    *done = false;
    bool cont = v->pend && v->pend_k == k && v->pend_next == a;
    if (v->pend && !cont) DS_TRY(pend_finish(f, fd, v)); /* the file's reader went elsewhere */
    if (!cont && (a != ub || b == ue || atomic_load(&v->state[k]) != U_FRESH)) return DSCKPT_OK;
    if (!cont) {
        if (!v->pend_md && !(v->pend_md = EVP_MD_CTX_new())) return ds_err(DSCKPT_ENOMEM, "out of memory");
        if (EVP_DigestInit_ex(v->pend_md, EVP_sha256(), NULL) != 1)
            return ds_err(DSCKPT_EINTERNAL, "OpenSSL: cannot initialise SHA-256");
        atomic_store(&v->state[k], U_CHECKING);
        v->pend = true;
        v->pend_k = k;
    }
    *done = true;
    v->pend_next = b;
    for (uint64_t pos = a; pos < b;) { /* PIECE at a time: hashed while in cache */
        size_t n = (size_t)DS_MIN((uint64_t)PIECE, b - pos);
        dsckpt_status st = ds_pread_full(fd, dst + (pos - a), n, pos, f->path);
        if (st == DSCKPT_OK) st = pend_update(v, dst + (pos - a), n);
        if (st) { /* the chunk is left unchecked: a later read checks it afresh */
            v->pend = false;
            atomic_store(&v->state[k], U_FRESH);
            return st;
        }
        pos += n;
    }
    return b == ue ? pend_finish(f, fd, v) : DSCKPT_OK;
}

dsckpt_status ds_fdset_finish(const dsckpt_ckpt *c, const ds_fdset *fs) {
    dsckpt_status first = DSCKPT_OK;
    for (size_t i = 0; fs->vf && i < fs->n; i++) {
        if (!fs->vf[i].pend) continue;
        dsckpt_status st = pend_finish(&c->files[i], fs->fd[i], &fs->vf[i]);
        if (st && !first) first = st;
    }
    return first;
}

/* Parts [0, np) of unit k of a checked file, the unit claimed first: the claiming
 * reader reads it whole and checks it; a unit already checked (or being checked
 * by another thread: ckpt.h) is read plainly, a bad one fails. */
static dsckpt_status read_unit_parts(const ds_file *f, int fd, ds_vfile *v, size_t k, const ds_read_part *parts,
                                     size_t np) {
    unsigned char expect = U_FRESH;
    if (atomic_compare_exchange_strong(&v->state[k], &expect, U_CHECKING)) {
        dsckpt_status st = check_unit(f, fd, v, k, parts, np);
        /* A mismatch is final; an I/O failure leaves the unit for another try. */
        atomic_store(&v->state[k], st == DSCKPT_OK ? U_OK : st == DSCKPT_ECHECKSUM ? U_BAD : U_FRESH);
        return st;
    }
    if (expect == U_BAD) return unit_failed(f, v, k);
    for (size_t i = 0; i < np; i++) DS_TRY(ds_pread_full(fd, parts[i].dst, parts[i].bytes, parts[i].offset, f->path));
    return DSCKPT_OK;
}

static dsckpt_status fdset_pread(const dsckpt_ckpt *c, const ds_fdset *fs, uint32_t file, void *dst, size_t n,
                                 uint64_t offset, bool defer) {
    const ds_file *f = &c->files[file];
    if (ds_interrupted()) return ds_err_interrupted();
    if (fs->lazy) DS_TRY(ds_fdset_ensure(c, fs, file)); /* never with a lock of ours held */
    int fd = fs->fd[file];
    if (fs->vf && fs->vf[file].z && n) return zread(f, fs, file, dst, n, offset);
    if (!fs->vf || !fs->vf[file].on || n == 0) return ds_pread_full(fd, dst, n, offset, f->path);
    ds_vfile *v = &fs->vf[file];
    uint8_t *out = dst;
    uint64_t end = offset + n;
    for (uint64_t pos = offset; pos < end;) {
        size_t k = unit_of(f, v, pos);
        if (k >= v->n)
            return ds_err(DSCKPT_ECORRUPT, "%s: bytes at offset %llu are in no %s", f->path, (unsigned long long)pos,
                          v->sha ? "chunk listed in the manifest" : "zip member");
        uint64_t ub, ue;
        unit_bounds(f, v, k, &ub, &ue);
        uint64_t b = DS_MIN(end, ue);
        if (defer && v->sha) {
            bool done = false;
            DS_TRY(deferred_part(f, fd, v, k, ub, ue, pos, b, out + (pos - offset), &done));
            if (done) {
                pos = b;
                continue;
            }
        }
        ds_read_part part = {.offset = pos, .bytes = (size_t)(b - pos), .dst = out + (pos - offset)};
        DS_TRY(read_unit_parts(f, fd, v, k, &part, 1));
        pos = b;
    }
    return DSCKPT_OK;
}

dsckpt_status ds_fdset_pread(const dsckpt_ckpt *c, const ds_fdset *fs, uint32_t file, void *dst, size_t n,
                             uint64_t offset) {
    return fdset_pread(c, fs, file, dst, n, offset, fs->deferred);
}

dsckpt_status ds_fdset_pread_parts(const dsckpt_ckpt *c, const ds_fdset *fs, uint32_t file, const ds_read_part *parts,
                                   size_t np) {
    if (np == 0) return DSCKPT_OK;
    if (ds_interrupted()) return ds_err_interrupted();
    if (fs->lazy) DS_TRY(ds_fdset_ensure(c, fs, file));
    const ds_file *f = &c->files[file];
    ds_vfile *v = fs->vf ? &fs->vf[file] : NULL;
    /* One unit of a checked file, the parts in order and apart: read in one pass. */
    size_t k = v && v->on && !v->z ? unit_of(f, v, parts[0].offset) : SIZE_MAX;
    bool one_pass = k != SIZE_MAX && k < v->n;
    if (one_pass) {
        uint64_t ub, ue;
        unit_bounds(f, v, k, &ub, &ue);
        for (size_t i = 0; i < np && one_pass; i++)
            one_pass = parts[i].offset >= ub && parts[i].offset <= ue && parts[i].bytes <= ue - parts[i].offset &&
                       (i == 0 || parts[i].offset >= parts[i - 1].offset + parts[i - 1].bytes);
    }
    if (one_pass) return read_unit_parts(f, fs->fd[file], v, k, parts, np);
    /* Otherwise each part on its own (never deferred: parts may be read on several
     * threads at once). */
    for (size_t i = 0; i < np; i++)
        DS_TRY(fdset_pread(c, fs, file, parts[i].dst, parts[i].bytes, parts[i].offset, false));
    return DSCKPT_OK;
}
