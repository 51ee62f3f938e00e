/*
 * fragmap.h — the records of a checkpoint's fragment map (DESIGN.md §1), as every
 * format describes them: logical tensors, their states, the fragments (element
 * ranges stored at a byte offset of one file) and the files. The native manifest
 * (manifest.h) reads and writes them; libckpt's handle (ckpt.h) holds them.
 */
#ifndef DSCKPT_FRAGMAP_H
#define DSCKPT_FRAGMAP_H

#include "internal.h"
#include "stream.h"

typedef enum ds_state {
    DS_ST_FP32 = 0,
    DS_ST_EXP_AVG,
    DS_ST_EXP_AVG_SQ,
    DS_ST_W16,
    DS_NSTATES
} ds_state;

extern const char *const ds_state_names[DS_NSTATES]; /* "fp32", "exp_avg", "exp_avg_sq", "w16" */
int ds_state_parse(const char *s);                   /* -1 if unknown */

typedef struct ds_tensor {
    char *name;
    dsckpt_dtype dtype; /* the model's dtype for this tensor (w16 state is stored in it) */
    int ndim;
    uint64_t shape[DS_MAX_DIMS];
    uint64_t numel;
    bool trainable;
    bool buffer;        /* a module buffer (not a parameter): frozen, kept by --exclude-frozen */
    int group;          /* parameter group of a trainable tensor; -1 if frozen */
    char **aliases;     /* tied names that share this tensor's storage */
    size_t naliases;
} ds_tensor;

typedef struct ds_frag {
    uint32_t tensor;
    uint32_t file;
    uint64_t start, numel; /* elements of the flattened tensor */
    uint64_t offset;       /* absolute byte offset in the file */
    dsckpt_dtype dtype;    /* stored dtype */
} ds_frag;

/* Where raw chunk k of a compressed file is stored: `size` bytes at `off`, as
 * `kind` (ds_zchunk_kind, zchunk.h), shuffled by `width` (the manifest's per-chunk
 * entry). */
typedef struct ds_zrec {
    uint64_t off, size;
    uint8_t kind, width;
} ds_zrec;

typedef struct ds_file {
    char *name;   /* relative to the tag directory */
    char *path;   /* full path */
    int rank;
    uint64_t size;        /* raw bytes: what fragments point into */
    bool has_digests;
    ds_digests dg;        /* of the stored bytes, chunk by chunk */
    /* A compressed rank file (manifest version 2, libckpt/zfile.h): raw chunk k is
     * stored at zc[k] (dg.nchunks entries); the file on disk has stored_size bytes.
     * For an uncompressed file `compressed` is false and zc NULL. */
    bool compressed;
    uint64_t stored_size;
    ds_zrec *zc;
} ds_file;

/* The file's size on disk: stored_size for a compressed file, else size. */
static inline uint64_t ds_file_disk_size(const ds_file *f) { return f->compressed ? f->stored_size : f->size; }

/* The model a checkpoint was trained as: the manifest's optional "model" object
 * (docs/native-format.md), written by dstrain, carried unchanged by reshard and
 * every native writer. Every integer is in [1, DS_MODEL_MAX_DIM] and n_embd is a
 * multiple of n_head; architecture is "gpt2" (the only one any writer records). */
#define DS_MODEL_MAX_DIM 2147483647ull
typedef struct ds_model_info {
    char architecture[16];
    uint64_t n_layer, n_head, n_embd, vocab_size, n_positions;
    bool tie_word_embeddings;
} ds_model_info;

void ds_tensor_clear(ds_tensor *t);
dsckpt_status ds_tensor_copy(ds_tensor *dst, const ds_tensor *src);
/* Frees the names, paths and digests of files[0..n) and the array. */
void ds_files_free(ds_file *files, size_t n);

#endif /* DSCKPT_FRAGMAP_H */
