/*
 * zfile.h — compressed rank files (manifest version 2, docs/native-format.md):
 * the writer that cuts the raw bytes of a rank file into chunks and stores each
 * through the chunk codec (zchunk.h), and the bounded cache of decoded chunks the
 * checked reads (readcheck.c) share across worker threads.
 *
 * A compressed file's raw bytes are exactly the uncompressed rank file (safetensors
 * header and data); fragments keep pointing at raw offsets. Raw chunk k is bytes
 * [k·chunk_size, min((k+1)·chunk_size, size)); it is stored at ds_zrec[k] and the
 * stored chunks follow each other without gaps from offset 0. The manifest's chunk
 * digests are the SHA-256 of the STORED bytes, so verify hashes without decoding.
 */
#ifndef DSCKPT_ZFILE_H
#define DSCKPT_ZFILE_H

#include "fragmap.h"
#include "stream.h"
#include "zchunk.h"

#include <stdbool.h>

/* ---- writer ---- */

/* A chunk ready to store: its stored bytes (in the encoder, or the raw bytes
 * themselves), their kind, width and SHA-256. */
typedef struct ds_zstored {
    const uint8_t *bytes;
    size_t n;
    ds_zchunk_kind kind;
    int width;
    uint8_t digest[DS_SHA256_LEN];
} ds_zstored;
/* An encoder for a compressed rank file's chunks at zstd `level` (the planes
 * codec; test builds can ask for single frames: testhook.c). */
dsckpt_status ds_zwriter_enc_new(int level, ds_zchunk_enc **out);
/* Encodes raw[0..n) shuffled by `width` (the element width most of its bytes
 * have) and hashes the stored bytes: the part of storing a chunk that any thread
 * can do, in any order. out->bytes is valid until enc's next call (or while raw
 * is, for a chunk stored raw). */
dsckpt_status ds_zchunk_store_prepare(ds_zchunk_enc *enc, const uint8_t *raw, size_t n, int width, ds_zstored *out);

/* A compressed file being written: chunks prepared on any thread are put in index
 * order, one caller at a time (native_write.c orders them). A chunk's stored bytes
 * do not depend on the other chunks (zchunk.h), so the file is the same whatever
 * the number of threads. */
typedef struct ds_zwriter ds_zwriter;
/* Creates `path` (which must not exist) for a file of `size` raw bytes; chunk_size
 * in [1, DS_ZCHUNK_MAX_RAW]. */
dsckpt_status ds_zwriter_create(const char *path, uint64_t size, uint64_t chunk_size, ds_zwriter **out);
/* Stores chunk k, which must be the next one (0, 1, ...; an error otherwise). */
dsckpt_status ds_zwriter_put(ds_zwriter *w, size_t k, const ds_zstored *c);
/* After the last chunk: fsyncs and closes. On success moves the stored-chunk
 * digests into *dg (dg->size = the raw size, dg->chunk_size the raw chunk size,
 * dg->file the SHA-256 of the chunk digests), the chunk records into *zc (malloc'd,
 * dg->nchunks entries) and the file's size on disk into *stored_size. The writer
 * is freed either way; on failure the file is unlinked. */
dsckpt_status ds_zwriter_finish(ds_zwriter *w, ds_digests *dg, ds_zrec **zc, uint64_t *stored_size);
void ds_zwriter_abort(ds_zwriter *w); /* unlinks the file; accepts NULL */

/* ---- reading ---- */

/* Reads of raw bytes of a compressed file (records zc, nchunks chunks of
 * chunk_size raw bytes, raw size `size`) from fd, one after another, without a
 * cache: for small reads such as the safetensors header. Each read decodes the
 * chunks it touches, keeping the last one decoded, so a header's length and then
 * the header decode the first chunk once. With `digests` (the manifest's, one per
 * chunk) each stored chunk is checked before it is decoded (DSCKPT_ECHECKSUM
 * naming it). `what` names the file in errors. Its buffers hold one chunk's stored
 * bytes and its zstd planes. The fields are its own. */
typedef struct ds_zfile_reader {
    int fd;
    const ds_zrec *zc;
    size_t nchunks;
    uint64_t chunk_size, size;
    const uint8_t (*digests)[DS_SHA256_LEN];
    const char *what;
    ds_zchunk_dec *dec;
    uint8_t *stored, *scratch;
    size_t stored_cap, scratch_cap;
    size_t k;        /* the chunk in view; SIZE_MAX: none */
    ds_zplanes view;
} ds_zfile_reader;
void ds_zfile_reader_init(ds_zfile_reader *r, int fd, const ds_zrec *zc, size_t nchunks, uint64_t chunk_size,
                          uint64_t size, const uint8_t (*digests)[DS_SHA256_LEN], const char *what);
/* Raw bytes [off, off+n) into dst. */
dsckpt_status ds_zfile_reader_read(ds_zfile_reader *r, void *dst, size_t n, uint64_t off);
void ds_zfile_reader_clear(ds_zfile_reader *r);

/* A bounded set of decoded chunks shared by threads. Each slot holds one chunk
 * (file, k) in its shuffled form (ds_zchunk_decode_view: planes stored raw are
 * read where they lie in the stored bytes); readers acquire it, unshuffle the
 * bytes they need straight into their buffer (ds_zplanes_read) and release it.
 * Memory is at most slots × (raw + stored chunk size). */
typedef struct ds_zslot {
    /* buffers of raw_cap / stored_cap bytes: stored holds the chunk's stored bytes,
     * raw its decoded zstd planes (or a raw chunk's bytes, read there directly) */
    uint8_t *raw, *stored;
    size_t raw_cap, stored_cap;
    bool raw_lent, stored_lent; /* carved from memory lent to the cache (not freed) */
    ds_zplanes view;        /* the loaded chunk (shuffled), in raw and stored */
    ds_zchunk_dec *dec;
} ds_zslot;
/* The most cache slots a reader keeps for the files it reads at once (beyond one
 * per worker thread): 16 chunks of 4 MiB, raw and stored, are 128 MiB. */
#define DS_ZCACHE_FILE_SLOTS 16
typedef struct ds_zcache ds_zcache;
dsckpt_status ds_zcache_new(size_t slots, ds_zcache **out);
void ds_zcache_free(ds_zcache *z); /* accepts NULL */
/* Lends the cache `bytes` of the caller's memory at `mem` (up to DS_ZCACHE_LENT
 * regions; more are ignored), which must stay valid and otherwise unused until
 * ds_zcache_free: slots carve their buffers from it before allocating their own.
 * Memory the caller has touched already (a buffer idle while it reads) spares the
 * fresh pages' zeroing, which on a small load costs as much as the decoding. Its
 * contents are overwritten. Before the cache's first acquire. */
#define DS_ZCACHE_LENT 8
void ds_zcache_lend(ds_zcache *z, void *mem, size_t bytes);
/* Returns a slot for chunk k of file `file`, held until ds_zcache_release. When
 * *must_load is true the slot is this caller's to fill (the others asking for the
 * same chunk wait): it calls ds_zcache_loaded with the outcome; on failure the
 * slot is emptied and waiters try again themselves. Waits while every slot is in
 * use. */
ds_zslot *ds_zcache_acquire(ds_zcache *z, uint32_t file, size_t k, bool *must_load);
/* As ds_zcache_acquire, but returns NULL instead of waiting (the chunk is being
 * loaded by another thread, or every slot is in use). */
ds_zslot *ds_zcache_try_acquire(ds_zcache *z, uint32_t file, size_t k, bool *must_load);
void ds_zcache_loaded(ds_zcache *z, ds_zslot *s, bool ok);
void ds_zcache_release(ds_zcache *z, ds_zslot *s);
/* Makes sure a slot's buffers hold raw_n / stored_n bytes (called by the thread
 * that holds the slot). */
dsckpt_status ds_zslot_reserve(ds_zcache *z, ds_zslot *s, size_t raw_n, size_t stored_n);

#endif /* DSCKPT_ZFILE_H */
