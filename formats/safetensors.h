/*
 * safetensors.h — the safetensors byte format: a strict reader and a planning writer.
 *
 * Layout (docs/formats/safetensors.md): 8-byte little-endian header length N, N bytes of UTF-8
 * JSON, then the data buffer. `data_offsets` are relative to the data buffer.
 *
 * Reader: enforces every rule of the reference parser (header size cap, UTF-8,
 * JSON object of the right shape, offsets contiguous from 0 with no gap or overlap,
 * size == numel * dtype size with overflow checks, file covered exactly, no
 * duplicate names, __metadata__ string -> string only). Each violation returns
 * DSCKPT_ECORRUPT with a message that names the file, the tensor and the offset.
 *
 * Writer: st_plan_make() computes the exact header bytes and every tensor's offset
 * up front (the order of the reference writer: dtype descending, then name), so
 * callers can stream tensor data in plan order through any sink.
 */
#ifndef DSCKPT_SAFETENSORS_H
#define DSCKPT_SAFETENSORS_H

#include "internal.h"

#define ST_MAX_HEADER 100000000ull /* the reference parser's MAX_HEADER_SIZE */
#define ST_MAX_DIMS DS_MAX_DIMS
#define ST_MAX_OFFSET ((1ull << 48) - 1) /* schema: offsets and dims fit in 48 bits */

typedef struct st_tensor {
    char *name;
    dsckpt_dtype dtype;
    int ndim;
    uint64_t shape[ST_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end; /* relative to the data buffer; end is one past */
} st_tensor;

typedef struct st_meta {
    char *key;
    char *value;
} st_meta;

typedef struct st_header {
    st_tensor *tensors; /* in the order they appear in the header */
    size_t n;
    st_meta *meta;      /* __metadata__ entries, in header order */
    size_t nmeta;
    uint64_t header_len; /* N */
    uint64_t data_start; /* 8 + N: file offset of the data buffer */
    uint64_t file_size;
} st_header;

/* Parses and validates the JSON header `json` (N = n bytes) of a file of total size
 * `file_size`. `what` names the file in error messages. */
dsckpt_status st_parse_header(const uint8_t *json, uint64_t n, uint64_t file_size, const char *what,
                              st_header **out);
/* Reads and validates the header of an open file (size from fstat). */
dsckpt_status st_read_fd(int fd, const char *what, st_header **out);
/* Opens `path`, reads and validates its header. */
dsckpt_status st_read_file(const char *path, st_header **out);
void st_header_free(st_header *h);
const st_tensor *st_find(const st_header *h, const char *name); /* NULL if absent */
const char *st_meta_get(const st_header *h, const char *key);   /* NULL if absent */

/* ---- writer ---- */

typedef struct st_entry {
    const char *name;
    dsckpt_dtype dtype;
    int ndim;
    uint64_t shape[ST_MAX_DIMS];
} st_entry;

typedef struct st_plan {
    uint8_t *header;     /* the first header_bytes bytes of the file: 8-byte N + JSON + padding */
    size_t header_bytes; /* a multiple of 8 */
    size_t n;
    size_t *order;       /* order[k] = index into the entries of the k-th tensor in the data */
    uint64_t *offset;    /* offset[i] = data-relative offset of entry i */
    uint64_t *nbytes;    /* nbytes[i] = byte size of entry i */
    uint64_t data_size;
    uint64_t file_size;  /* header_bytes + data_size */
} st_plan;

/* Plans a file holding `n` tensors. `meta` entries go into __metadata__ after
 * {"format":"pt"} (which is always present; a caller-supplied "format" key is
 * refused). Duplicate or empty names, unsupported dtypes, and sizes over the
 * format's limits are refused with DSCKPT_EINVAL. */
dsckpt_status st_plan_make(const st_entry *entries, size_t n, const st_meta *meta, size_t nmeta,
                           st_plan **out);
void st_plan_free(st_plan *p);

#endif /* DSCKPT_SAFETENSORS_H */
