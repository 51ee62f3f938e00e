/*
 * native_write.h — writing native checkpoints: rank files streamed in plan order
 * with chunked SHA-256 computed on the way, then the manifest last, then `latest`.
 *
 * Commit protocol (DESIGN.md §4): each rank file goes to a temporary name, is
 * fsynced and renamed; once every rank file is in place the manifest is written
 * the same way and the directory fsynced; `latest` is replaced atomically after
 * that. A crash at any point leaves the previous checkpoint and `latest` intact.
 *
 * Data comes from a fill callback, so the same writer serves synth (computed
 * values), reshard (copied from another fragment map) and the training runtime
 * (its in-memory partitions).
 */
#ifndef DSCKPT_NATIVE_WRITE_H
#define DSCKPT_NATIVE_WRITE_H

#include "ckpt.h"
#include "layout.h"
#include "parallel.h"

/* Fills dst with elements [start, start+numel) of state s of tensor t, in the
 * state's stored dtype (F32 for fp32/exp_avg/exp_avg_sq, the tensor's dtype for
 * w16). `worker` identifies the calling worker thread. */
typedef dsckpt_status (*ds_fill_fn)(void *user, ds_state s, uint32_t t, uint64_t start, uint64_t numel, void *dst,
                                    int worker);

typedef struct ds_native_out {
    dsckpt_ckpt *c;        /* what the manifest will say: tensors, fragments, files */
    ds_layout *layout;
    ds_rank_plan *plans;   /* one per file */
    uint64_t chunk_size;
    int compress_level;    /* 0: plain rank files; else zstd level (zfile.h) */
} ds_native_out;

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

/* Plans a checkpoint to be written into the (existing) tag directory `dir`. */
dsckpt_status ds_native_prepare(const ds_native_spec *spec, const char *dir, ds_native_out **out);
void ds_native_out_free(ds_native_out *o);

/* Writes file `rank` (temporary name, fsync, rename). Thread-safe across ranks. */
dsckpt_status ds_native_write_rank(ds_native_out *o, int rank, ds_fill_fn fill, void *user, int worker,
                                   ds_progress *prog);
/* Writes every rank file on `threads` threads, then the manifest. */
dsckpt_status ds_native_write_all(ds_native_out *o, ds_fill_fn fill, void *user, int threads, ds_progress *prog);
/* Writes the manifest (after every rank file is durable). */
dsckpt_status ds_native_write_manifest(ds_native_out *o);
/* Replaces root/latest with `tag`, atomically. */
dsckpt_status ds_set_latest(const char *root, const char *tag);

/* Bytes of all rank files the plan will write. */
uint64_t ds_native_total_bytes(const ds_native_out *o);

#endif /* DSCKPT_NATIVE_WRITE_H */
