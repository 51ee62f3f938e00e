/*
 * layout.h — where every element of every state lives in a native checkpoint for a
 * given ZeRO stage and world size, and the safetensors plan of each rank file.
 *
 * A rank file holds, per trainable parameter group g, three flat F32 buffers
 * "fp32.g<g>", "exp_avg.g<g>", "exp_avg_sq.g<g>" (this rank's partition, padding
 * included, per partition.h), and per frozen tensor one buffer "w16.<name>" in the
 * tensor's dtype (the whole tensor on rank 0 at stages 0-2, this rank's piece at
 * stage 3). Stage 0 writes one file (rank 0) whatever the world size.
 */
#ifndef DSCKPT_LAYOUT_H
#define DSCKPT_LAYOUT_H

#include "ckpt.h"
#include "safetensors.h"

typedef struct ds_piece {
    uint32_t tensor;
    uint64_t start, numel; /* real elements of the tensor */
    uint64_t buf_off;      /* element offset inside the buffer */
} ds_piece;

typedef struct ds_buf {
    int group;          /* trainable group, or -1 for a frozen tensor's buffer */
    uint32_t tensor;    /* the frozen tensor (group == -1) */
    dsckpt_dtype dtype; /* F32 for groups; the tensor's dtype for frozen buffers */
    uint64_t len;       /* elements, padding included */
    ds_piece *pieces;   /* sorted by buf_off; gaps are zero padding */
    size_t npieces;
} ds_buf;

typedef struct ds_rank_layout {
    ds_buf *bufs;
    size_t nbufs;
} ds_rank_layout;

typedef struct ds_layout {
    int stage;
    int world_size;
    int nfiles;          /* 1 at stage 0, else world_size */
    ds_rank_layout *ranks; /* nfiles entries */
} ds_layout;

dsckpt_status ds_layout_make(const ds_tensor *tensors, size_t ntensors, int ngroups, int stage, int world_size,
                             ds_layout **out);
void ds_layout_free(ds_layout *l);

/* One safetensors entry of a rank file: buffer `buf` holding state `state`. */
typedef struct ds_rank_entry {
    size_t buf;
    ds_state state;
} ds_rank_entry;

typedef struct ds_rank_plan {
    st_plan *plan;
    ds_rank_entry *entries; /* entries[i] describes plan entry i */
    size_t n;
} ds_rank_plan;

/* Plans rank r's file: entry names, dtypes, shapes, offsets and header (with the
 * __metadata__ that names format, tag, rank and world size). */
dsckpt_status ds_rank_plan_make(const ds_layout *l, const ds_tensor *tensors, int rank, const char *tag,
                                ds_rank_plan *out);
void ds_rank_plan_clear(ds_rank_plan *p);

#define DS_RANK_FILE_FMT "rank_%05d.safetensors"

#endif /* DSCKPT_LAYOUT_H */
