/*
 * copyengine.h — the one copy engine: output files written as independent units
 * (byte ranges) on every worker thread. Each unit is produced piece by piece by a
 * caller's fill callback (which reads and converts source bytes), hashed when its
 * file is hashed, written with pwrite at its offset, and its writeback started at
 * once (sync_file_range), so the disk works while the workers go on reading,
 * converting and hashing.
 *
 * Hashed files are cut into fixed chunks (the chunked SHA-256 of stream.h); a unit
 * of such a file is exactly one chunk, so chunk digests are computed on all cores
 * and the file digest, SHA-256 over the chunk digests in order, needs no sequential
 * pass over the data. Consolidate (safetensors outputs, not hashed) and the native
 * writer (rank files, hashed) both write through it.
 *
 * The caller opens the files (any fd open for writing) and afterwards fsyncs,
 * closes and renames them; the engine only writes. Fault injection (stream.h) and
 * interruption apply to every write (ds_pwrite_full).
 */
#ifndef DSCKPT_COPYENGINE_H
#define DSCKPT_COPYENGINE_H

#include "parallel.h"
#include "stream.h"

/* Bytes one fill call produces at most (and each worker's buffer): 1 MiB, so a
 * piece is filled, hashed and copied into the page cache while it is still in the
 * CPU cache (4 MiB pieces cost reshard 4 -> 2 about a third more CPU time). */
#define DS_COPY_PIECE (1u << 20)

typedef struct ds_copy_file {
    int fd;
    const char *name;       /* for messages; not owned */
    uint64_t size;          /* bytes the units cover (for ds_copy_chunk_units) */
    uint64_t hash_chunk;    /* 0: not hashed; else the chunk size, and units are its chunks */
    uint8_t (*digests)[DS_SHA256_LEN]; /* owned: chunk digests (ds_copy_chunk_units allocates) */
} ds_copy_file;

typedef struct ds_copy_unit {
    size_t file;            /* index into the files */
    uint64_t offset, len;   /* byte range of that file */
} ds_copy_unit;

/* Produces bytes [offset, offset+len) of file `file` (a piece of unit `unit`,
 * len <= DS_COPY_PIECE) into `buf`, or sets *out to other memory holding them
 * (valid until the next call on this worker); *out starts as `buf`. Called
 * concurrently from the workers; `worker` is in [0, threads). */
typedef dsckpt_status (*ds_copy_fill_fn)(void *user, size_t unit, size_t file, uint64_t offset, size_t len,
                                         void *buf, const void **out, int worker);

typedef struct ds_copy_job {
    ds_copy_file *files;
    size_t nfiles;
    const ds_copy_unit *units;
    size_t nunits;
    ds_copy_fill_fn fill;
    void *user;
    int threads;
    ds_progress *prog;      /* may be NULL; every written byte is added */
} ds_copy_job;

/* Cuts each file into units: its hash chunks when hashed, else `unit_bytes`
 * pieces; allocates each hashed file's digests. *units is the caller's to free. */
dsckpt_status ds_copy_chunk_units(ds_copy_file *files, size_t nfiles, uint64_t unit_bytes, ds_copy_unit **units,
                                  size_t *nunits);

/* Writes every unit on min(threads, nunits) threads, the workers spread over far
 * apart parts of the output; stops at the first failure. */
dsckpt_status ds_copy_run(const ds_copy_job *job);

/* A hashed file's digests once every unit is written (moves its chunk digests
 * into *out, which the caller clears). */
dsckpt_status ds_copy_digests(ds_copy_file *f, ds_digests *out);

/* Frees a file's digests (the fd is the caller's). Accepts NULL. */
void ds_copy_file_clear(ds_copy_file *f);

#endif /* DSCKPT_COPYENGINE_H */
