/*
 * dsckpt_internal.h — libckpt's internal API: everything code above libckpt in
 * this repository (the training runtime, runtime/) may use beyond the public
 * dsckpt.h, and the only libckpt header it includes (scripts/check-includes.sh).
 * Not installed. The checkpoint handle stays opaque here: accessors, not fields.
 *
 *  - reading: any checkpoint dsckpt_ckpt_open() opens (native, DeepSpeed,
 *    universal) is read by element range of a tensor's state, through the checks;
 *  - writing: a native checkpoint is prepared once, each rank writes its own file
 *    (from a fill callback), then rank 0 writes the manifest and `latest`;
 *  - the ZeRO partition arithmetic the writers use (partition.h).
 */
#ifndef DSCKPT_DSCKPT_INTERNAL_H
#define DSCKPT_DSCKPT_INTERNAL_H

#include "fragmap.h"
#include "internal.h"
#include "parallel.h"
#include "partition.h"
#include "stream.h"

#include <cjson/cJSON.h>

/* ---- reading ---- */

/* The handle's tensors (ds_tensor records, formats/fragmap.h), in checkpoint order. */
size_t ds_ckpt_ntensors(const dsckpt_ckpt *c);
const ds_tensor *ds_ckpt_tensor(const dsckpt_ckpt *c, size_t k);
/* The tag directory it was opened from. */
const char *ds_ckpt_dir(const dsckpt_ckpt *c);
/* The step it records (0 when none). */
int64_t ds_ckpt_step(const dsckpt_ckpt *c);
/* The native manifest's "state" object (optimizer, scheduler, loss scaler, data,
 * RNG), or NULL when it has none (DeepSpeed checkpoints). Valid until the handle
 * is freed. */
const cJSON *ds_ckpt_state_json(const dsckpt_ckpt *c);
/* The checkpoint's model settings, or NULL when it records none (a checkpoint
 * written by an older version, by synth, by DeepSpeed, or resharded from one). */
const ds_model_info *ds_ckpt_model(const dsckpt_ckpt *c);

/* Open read descriptors for every file of a checkpoint, shared by worker threads
 * (pread is thread-safe). */
typedef struct ds_vfile ds_vfile; /* readcheck.c */
typedef struct ds_zcache ds_zcache; /* zfile.h */
typedef struct ds_fdlazy ds_fdlazy; /* ckpt.c */
typedef struct ds_fdset {
    int *fd;
    size_t n;
    ds_vfile *vf; /* per file, when reads are checked or a file is compressed (else NULL) */
    ds_zcache *zcache; /* decoded chunks of compressed files, shared by the readers */
    ds_fdlazy *lazy; /* ds_fdset_open_lazy: each file's open state (else NULL) */
    bool deferred;   /* ds_fdset_defer_checks */
    bool stream;     /* ds_fdset_stream_reads */
} ds_fdset;
/* Opens every file now: its size checked against the manifest and, for a native
 * checkpoint, its safetensors header read (no fragment may point into it). */
dsckpt_status ds_fdset_open(const dsckpt_ckpt *c, ds_fdset *fs);
/* The same set, opening nothing yet: file i is opened and checked as above, and
 * its read checks set up, on its first read through ds_ckpt_read / ds_fdset_pread,
 * once, under a mutex of its own (thread-safe: readers of other files do not
 * wait; a failure is kept and returned by every later read of that file). For a
 * reader that touches a few files of many (a rank resuming from its share).
 * Read a lazy set only through those two calls (fs->fd[i] is -1 until then). */
dsckpt_status ds_fdset_open_lazy(const dsckpt_ckpt *c, ds_fdset *fs);
/* How many files of fs have been opened (all of them for ds_fdset_open; for a lazy
 * set those read so far, failed opens included), and whether file i has. */
size_t ds_fdset_opened(const ds_fdset *fs);
/* Deferred verdicts, for a set read by one thread only, that reads a native rank
 * file's chunks in parts, in order (a rank loading its share of a ZeRO-3
 * checkpoint: a slice of every tensor from every rank file, in turn): a part that
 * starts a chunk goes straight into the caller's buffer and starts that chunk's
 * SHA-256, the parts that follow it go in and continue it, and the chunk's verdict
 * comes with its last byte. Without this, the first part's read takes the rest of
 * the chunk into scratch for the hash and the next parts read it again. Bytes a
 * read returned may be unverified until ds_fdset_finish: the caller must call it,
 * and fail on its error, before using anything it read. */
void ds_fdset_defer_checks(ds_fdset *fs);
/* Lends the set's cache of decoded chunks (compressed files only; else nothing
 * happens) `bytes` of the caller's memory at `mem`, valid and otherwise unused
 * until ds_fdset_close, its contents overwritten: a buffer the caller has touched
 * and does not need while it reads spares the cache's fresh pages
 * (ds_zcache_lend). Before the first read. */
void ds_fdset_lend(ds_fdset *fs, void *mem, size_t bytes);
/* For a caller that does not read what it reads again soon (a load into buffers far
 * larger than the caches): a compressed file's chunks are unshuffled into its
 * buffers with stores that go around the cache (ds_zplanes_read_stream). Changes no
 * byte read. Before the first read. */
void ds_fdset_stream_reads(ds_fdset *fs);
/* Completes every chunk a deferred set left part-hashed (reading the rest of it),
 * returning the first failure (ECHECKSUM names the chunk). */
dsckpt_status ds_fdset_finish(const dsckpt_ckpt *c, const ds_fdset *fs);
bool ds_fdset_is_open(const ds_fdset *fs, size_t i);
void ds_fdset_close(ds_fdset *fs);

/* Reads elements [start, start+numel) of state s of tensor t, in the stored dtype
 * (all fragments of a state share one dtype), into dst. */
dsckpt_status ds_ckpt_read(const dsckpt_ckpt *c, const ds_fdset *fs, ds_state s, uint32_t t, uint64_t start,
                           uint64_t numel, void *dst);
/* A list of reads for a reader that knows its requests up front: ds_read_list_add
 * appends the byte ranges ds_ckpt_read would read, each merged into the run before
 * it when it continues that run in the same file and in memory; ds_read_list_run
 * reads the runs in order. ds_fdset_pread checks a chunk whole, reading the part
 * outside a request into scratch for its hash, so reading consecutive tensors one
 * call each reads the part of a chunk past each tensor boundary twice (once for
 * the hash, once for the next tensor); as one run, every byte is read once (a
 * rank's share of a parameter group: its tensors lie end to end in each rank file
 * and in the partition). */
typedef struct {
    uint32_t file;
    uint64_t offset;
    size_t bytes;
    uint8_t *dst;
    uint64_t send_at; /* ds_read_share: a piece for another reader, at this offset of the send buffer */
} ds_read_run;
typedef struct {
    ds_read_run *runs;
    size_t n, cap;
} ds_read_list;
dsckpt_status ds_read_list_add(ds_read_list *l, const dsckpt_ckpt *c, ds_state s, uint32_t t, uint64_t start,
                               uint64_t numel, void *dst);
dsckpt_status ds_read_list_run(const dsckpt_ckpt *c, const ds_fdset *fs, const ds_read_list *l);
/* The same reads on `threads` threads (one: ds_read_list_run). The runs are cut at
 * the files' check units (a native file's chunks), the pieces sorted by file and
 * offset, and each unit's pieces read by one thread in one pass
 * (ds_fdset_pread_parts); units go to threads as they come free. Reads of a file
 * whose units are not fixed chunks (a DeepSpeed file's zip members) go run by run.
 * The set's deferred verdicts (ds_fdset_defer_checks) are not used: every verdict
 * comes with its unit. */
dsckpt_status ds_read_list_run_threads(const dsckpt_ckpt *c, const ds_fdset *fs, const ds_read_list *l, int threads);
void ds_read_list_free(ds_read_list *l);
/* The fixed size of file i's check units (its chunks) when it has them, else 0. */
uint64_t ds_ckpt_check_unit(const dsckpt_ckpt *c, uint32_t i);
/* A run [.., end) cut at check units of u bytes: the end of its piece that starts
 * at pos, and that piece's unit (u 0: the rest of the run, unit UINT64_MAX). */
static inline uint64_t ds_unit_piece_end(uint64_t u, uint64_t pos, uint64_t end) {
    return u ? DS_MIN(end, (pos / u + 1) * u) : end;
}
static inline uint64_t ds_unit_index(uint64_t u, uint64_t pos) { return u ? pos / u : UINT64_MAX; }

/* Several readers of one checkpoint (the ranks of a resume at another world size),
 * each check unit read and hashed by one of them (readshare.c). Each reader passes
 * its own list and every reader's runs as extents (`all`: reader 0's counts[0]
 * extents, then reader 1's, ...; the same array on every reader), and gets the
 * same plan as the others: a unit that one reader touches is its own; one that
 * several touch is read by the one of them with the most bytes of it (its
 * "checker"), which also reads the others' pieces of it into its send buffer, as
 * long as every reader's sends plus receives stay within `budget` bytes (units
 * past it are read by each reader that touches them). Reader k's block for reader j (send_bytes[j] bytes at send_off[j]) is
 * j's pieces of the units k checks in (file, unit, offset) order, which is what j
 * expects from k at recv_off[k] of its receive buffer (recv_bytes[k] bytes). The
 * readers' pieces must not overlap (partitioned shares). Use: plan; bind the send
 * buffer (send_total bytes); run `list` and check it whole (ds_fdset_finish);
 * exchange the blocks; scatter the receive buffer (recv_total bytes) into the
 * list's destinations. A reader's received bytes were checked by their sender:
 * the readers must agree that every one succeeded before any of them uses them. */
typedef struct {
    uint32_t file;
    uint64_t offset, bytes;
} ds_read_extent;
typedef struct {
    uint64_t at;
    size_t bytes;
    uint8_t *dst;
} ds_share_copy;
typedef struct {
    ds_read_list list;  /* what this reader reads (runs for others: dst NULL until bound) */
    int W;
    uint64_t *send_bytes, *recv_bytes, *send_off, *recv_off; /* W entries each */
    uint64_t send_total, recv_total;
    uint64_t shared_units; /* units that several readers touch (each read by one) */
    ds_share_copy *copies; /* receive buffer -> this reader's destinations */
    size_t ncopies, copies_cap;
} ds_read_share;
dsckpt_status ds_read_share_plan(const dsckpt_ckpt *c, const ds_read_list *mine, int me, int W,
                                 const ds_read_extent *all, const size_t *counts, uint64_t budget,
                                 ds_read_share *p);
/* Points the runs for other readers into `send` (send_total bytes). */
void ds_read_share_bind(ds_read_share *p, uint8_t *send);
/* Copies what was received (`recv`, recv_total bytes) to this reader's buffers. */
void ds_read_share_scatter(const ds_read_share *p, const uint8_t *recv);
void ds_read_share_free(ds_read_share *p);
/* The stored dtype of state s of tensor t. */
dsckpt_dtype ds_ckpt_state_dtype(const dsckpt_ckpt *c, ds_state s, uint32_t t);

/* What a tag directory holds: the one definition of a complete checkpoint. A
 * native checkpoint is complete once its manifest.json exists (every writer
 * writes it last, by rename); DeepSpeed's files carry no completion marker, so a
 * directory holding *_model_states.pt or *_optim_states.pt files is DeepSpeed's.
 * A directory with neither is an incomplete save. `dir` itself and the manifest
 * are not followed if they are symbolic links. */
typedef enum ds_tag_kind { DS_TAG_NONE, DS_TAG_INCOMPLETE, DS_TAG_NATIVE, DS_TAG_DEEPSPEED } ds_tag_kind;
ds_tag_kind ds_tag_classify(const char *dir);

/* ---- writing a native checkpoint ---- */

/* Fills dst with elements [start, start+numel) of state s of tensor t, in the
 * state's stored dtype (F32 for fp32/exp_avg/exp_avg_sq, the tensor's dtype for
 * w16). `worker` identifies the calling worker thread. */
typedef dsckpt_status (*ds_fill_fn)(void *user, ds_state s, uint32_t t, uint64_t start, uint64_t numel, void *dst,
                                    int worker);

/* Where elements [start, start+numel) of state s of tensor t already lie in memory,
 * end to end as the rank file stores them, or NULL where they do not (the writer
 * then fills them). A compressed rank file's chunk whose data lies in one run of
 * such memory is encoded from it in place instead of being filled into a buffer
 * first. The bytes must not change until the write returns: a caller whose memory
 * can change while it is written (an async save beside training) sets no view. */
typedef const void *(*ds_view_fn)(void *user, ds_state s, uint32_t t, uint64_t start, uint64_t numel);

typedef struct ds_native_spec {
    const ds_tensor *tensors;
    size_t ntensors;
    int ngroups;
    int stage;
    int world_size;
    const char *tag;
    int64_t step;
    const char *train_dtype;  /* "bf16", "fp16", "fp32" */
    const cJSON *state;       /* optimizer, scheduler, loss scaler, data, RNG (may be NULL) */
    const cJSON *ds_config;   /* may be NULL */
    const cJSON *metrics;     /* may be NULL */
    const ds_model_info *model; /* the manifest's "model"; NULL = none */
    uint64_t chunk_size;      /* 0 = DS_DEFAULT_CHUNK */
    int compress_level;       /* 0 = uncompressed (manifest version 1); 1..22: compressed
                                 rank files at this zstd level (version 2, zfile.h) */
} ds_native_spec;

typedef struct ds_native_out ds_native_out; /* native_write.h */

/* Plans a checkpoint to be written into the (existing) tag directory `dir`. */
dsckpt_status ds_native_prepare(const ds_native_spec *spec, const char *dir, ds_native_out **out);
void ds_native_out_free(ds_native_out *o);
/* Writes file `rank` (temporary name, fsync, rename) on `threads` threads; the fill
 * sees worker numbers from `worker` to worker + threads - 1. Thread-safe across
 * ranks. */
dsckpt_status ds_native_write_rank(ds_native_out *o, int rank, ds_fill_fn fill, void *user, int worker, int threads,
                                   ds_progress *prog);
/* The writes that follow read data in place through `view` (with the fill's user)
 * where it gives memory; NULL: fill everything. */
void ds_native_set_view(ds_native_out *o, ds_view_fn view);
/* A written file's commit record: what the manifest says of it (raw and stored
 * size, chunk digests, file digest, a compressed file's chunk records), as bytes
 * (malloc'd into *out) that the process which wrote the file hands to the one that
 * writes the manifest; there ds_native_file_record_set takes it in, checking it
 * against the plan (DSCKPT_EINTERNAL when it does not fit). */
dsckpt_status ds_native_file_record(const ds_native_out *o, int file, uint8_t **out, size_t *len);
dsckpt_status ds_native_file_record_set(ds_native_out *o, int file, const void *rec, size_t len);
/* Writes the manifest (after every rank file is durable and every file's digests
 * are known). */
dsckpt_status ds_native_write_manifest(ds_native_out *o);
/* Replaces root/latest with `tag`, atomically. */
dsckpt_status ds_set_latest(const char *root, const char *tag);

#endif /* DSCKPT_DSCKPT_INTERNAL_H */
