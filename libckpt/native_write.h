/*
 * native_write.h — writing native checkpoints: rank files with chunked SHA-256
 * computed on the way, then the manifest last, then `latest`. Plain rank files go
 * through the copy engine (copyengine.h): every chunk of every file is filled,
 * hashed and written on all worker threads. Compressed ones too: each chunk is
 * filled, encoded and hashed on whichever worker took it, and each file's chunks
 * are stored in index order through the compressing writer (zfile.h), so a
 * reshard to fewer files than threads still uses every thread, and the bytes do
 * not depend on the number of threads.
 *
 * Commit protocol (DESIGN.md §4): each rank file goes to a temporary name, is
 * fsynced and renamed; once every rank file is in place the manifest is written
 * the same way and the directory fsynced; `latest` is replaced atomically after
 * that. A crash at any point leaves the previous checkpoint and `latest` intact.
 *
 * Data comes from a fill callback, so the same writer serves synth (computed
 * values), reshard (copied from another fragment map) and the training runtime
 * (its in-memory partitions). A caller whose data already lies in memory that
 * stays still through the write can also give a view (ds_native_set_view): a
 * compressed chunk lying in one run of it is encoded from there, not filled. The calls the runtime uses (prepare, write a rank,
 * write the manifest, set latest) are declared in dsckpt_internal.h.
 */
#ifndef DSCKPT_NATIVE_WRITE_H
#define DSCKPT_NATIVE_WRITE_H

#include "ckpt.h"
#include "dsckpt_internal.h"
#include "layout.h"
#include "parallel.h"

struct ds_native_out {
    dsckpt_ckpt *c;        /* what the manifest will say: tensors, fragments, files */
    ds_layout *layout;
    ds_rank_plan *plans;   /* one per file */
    uint64_t chunk_size;
    int compress_level;    /* 0: plain rank files; else zstd level (zfile.h) */
    ds_view_fn view;       /* ds_native_set_view; NULL: every byte filled */
};

/* Writes every rank file on `threads` threads, then the manifest. */
dsckpt_status ds_native_write_all(ds_native_out *o, ds_fill_fn fill, void *user, int threads, ds_progress *prog);

/* Bytes of all rank files the plan will write. */
uint64_t ds_native_total_bytes(const ds_native_out *o);

#endif /* DSCKPT_NATIVE_WRITE_H */
