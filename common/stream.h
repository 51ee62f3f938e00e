/*
 * stream.h — the sequential output stream, and the chunked SHA-256 used to make
 * files verifiable in parallel. Outputs whose layout is planned up front go through
 * the copy engine instead (copyengine.h: positional writes on every thread); both
 * obey the same fault hook (ds_fault_allow) and interruption.
 *
 * A ds_stream writes sequentially to a new file, with a sticky error (after the
 * first failure every call returns the same status and message), an optional
 * running chunked SHA-256 computed as the bytes pass (no second read), and a
 * fault-injecting backend for tests (ds_fault_inject_write).
 *
 * Digests: a file is cut into chunks of `chunk_size` bytes (the last one shorter);
 * each chunk has its own SHA-256, and the file digest is SHA-256 over the
 * concatenation of the chunk digests. Chunks can be checked on any number of
 * threads and a mismatch names the chunk (docs/native-format.md, "Digests").
 */
#ifndef DSCKPT_STREAM_H
#define DSCKPT_STREAM_H

#include "internal.h"

#define DS_SHA256_LEN 32
#define DS_DEFAULT_CHUNK (16ull << 20)

typedef struct ds_digests {
    uint64_t size;        /* bytes hashed */
    uint64_t chunk_size;
    size_t nchunks;       /* ceil(size / chunk_size); 0 for an empty file */
    uint8_t (*chunks)[DS_SHA256_LEN];
    uint8_t file[DS_SHA256_LEN];
} ds_digests;
void ds_digests_clear(ds_digests *d); /* frees chunks; d may hold zeros */

/* Incremental chunked hashing. */
typedef struct ds_hasher ds_hasher;
dsckpt_status ds_hasher_new(uint64_t chunk_size, ds_hasher **out);
dsckpt_status ds_hasher_update(ds_hasher *h, const void *data, size_t n);
/* Finishes and moves the result into *out (which the caller clears). */
dsckpt_status ds_hasher_final(ds_hasher *h, ds_digests *out);
void ds_hasher_free(ds_hasher *h);

/* One-shot SHA-256. */
dsckpt_status ds_sha256(const void *data, size_t n, uint8_t out[DS_SHA256_LEN]);
/* SHA-256 of a whole regular file, read in bounded pieces (never all in memory). */
dsckpt_status ds_sha256_file(const char *path, uint8_t out[DS_SHA256_LEN]);
/* File digest from chunk digests. */
dsckpt_status ds_sha256_of_chunks(const uint8_t (*chunks)[DS_SHA256_LEN], size_t n,
                                  uint8_t out[DS_SHA256_LEN]);
void ds_hex(const uint8_t *bytes, size_t n, char *out /* 2n+1 */);
/* Parses 64 hex chars; false if malformed. */
bool ds_unhex32(const char *s, uint8_t out[DS_SHA256_LEN]);

typedef struct ds_stream ds_stream;

/* Creates `path` (which must not exist) for writing. chunk_size 0 disables hashing. */
dsckpt_status ds_stream_create(const char *path, uint64_t chunk_size, ds_stream **out);
/* Writing direct, a stream's writer thread (from its second MiB on) takes 1 MiB
 * buffers; with this, before the first write, it takes two buffers of `bytes` (a
 * multiple of DS_DIRECT_ALIGN above 1 MiB) instead, so that a producer handing over several MiB
 * at once (a compressed chunk) does not wait on each MiB's write. */
void ds_stream_set_big_buffers(ds_stream *s, size_t bytes);
dsckpt_status ds_stream_write(ds_stream *s, const void *data, size_t n);
dsckpt_status ds_stream_write_zeros(ds_stream *s, uint64_t n);
uint64_t ds_stream_pos(const ds_stream *s);
/* Flushes, fsyncs and closes; on success moves the digests into *out (may be NULL).
 * The stream is freed either way. On failure the file is unlinked. */
dsckpt_status ds_stream_finish(ds_stream *s, ds_digests *out);
/* Closes and unlinks the file; frees the stream. Accepts NULL. */
void ds_stream_abort(ds_stream *s);

/* Test hook: every stream's writes fail with `err` (e.g. ENOSPC) once `budget`
 * more bytes have been written in total (a write crossing the limit writes the
 * part that fits, as a full disk does). budget < 0 disarms. Process-wide.
 * Also armed at the first stream created when the environment variable
 * DSCKPT_TEST_FAIL_WRITE_AFTER=<bytes> is set (for CLI tests). */
void ds_fault_inject_write(int64_t budget, int err);
/* For every writer outside ds_stream (positional writes): how many of `n` bytes may
 * be written before the injected fault; sets *fail when the rest must fail with
 * ds_fault_errno(). */
size_t ds_fault_allow(size_t n, bool *fail);
int ds_fault_errno(void);

#endif /* DSCKPT_STREAM_H */
