/*
 * partition.h — ZeRO partition arithmetic, identical to DeepSpeed's, in one place.
 * Every writer, `reshard`, and the runtime call these (DESIGN.md §3).
 *
 * Stages 1 and 2: a parameter group's trainable tensors are flattened in order into
 * one buffer of N elements, zero-padded to Npad = ceil(N / 2W) * 2W; each rank owns
 * a partition of P = Npad / W elements: rank r owns [r*P, (r+1)*P).
 * Stage 3: each tensor of n elements is split on its own: q = ceil(n / W), padded to
 * q*W; rank r owns [r*q, (r+1)*q) of it (zeros past n).
 * Stage 0: every rank holds everything; one copy is saved.
 */
#ifndef DSCKPT_PARTITION_H
#define DSCKPT_PARTITION_H

#include <stdint.h>

typedef struct ds_flat_part {
    uint64_t numel;  /* N */
    uint64_t padded; /* Npad */
    uint64_t part;   /* P, elements per rank */
} ds_flat_part;

/* Stage 1/2 partition of a flat group of N elements over W ranks (W >= 1). */
ds_flat_part ds_part_flat(uint64_t numel, int world_size);

/* Stage 3 piece length q = ceil(n / W) of a tensor of n elements (0 when n == 0). */
uint64_t ds_part_piece(uint64_t numel, int world_size);

/* The real (non-padding) elements of rank r's range [r*len, (r+1)*len) in a buffer
 * whose first `numel` elements are real: sets *start and *count (count 0 if none). */
void ds_part_real(uint64_t len, int rank, uint64_t numel, uint64_t *start, uint64_t *count);

/* Padding elements DeepSpeed strips from rank r's stage 1/2 fp32 partition
 * (`group_paddings`): P if the partition is all padding, the padded tail if it is
 * partly real, else 0. */
uint64_t ds_part_flat_padding(ds_flat_part p, int rank);

/* Rank r's share of one tensor: elements [start, start + count) of the tensor,
 * stored from element `at` of rank r's buffer of the tensor's group. */
typedef struct ds_slice {
    uint64_t start, count, at;
} ds_slice;

/* The partition walk, the one place that says which rank owns which elements
 * (layout, the DeepSpeed writer and the training engine all call it). A tensor of
 * `numel` elements at `off`:
 *  - stages 0-2: `off` is its offset in the group's flat buffer (the group's
 *    trainable tensors in order; the DeepSpeed writer adds its alignment padding),
 *    `part` the group's partition size (ds_part_flat(...).part; unused at stage 0,
 *    where rank r holds the whole buffer). Rank r owns [r*part, (r+1)*part) of the
 *    buffer, so the slice is the tensor's intersection with it (count 0 if none).
 *  - stage 3: `off` is the tensor's piece offset in every rank's buffer (the sum of
 *    the pieces before it), `part` unused: rank r owns the real elements of
 *    [r*q, (r+1)*q), q = ds_part_piece(numel, W), stored at `off`. */
ds_slice ds_part_slice(int stage, int world_size, int rank, uint64_t part, uint64_t off, uint64_t numel);

#endif /* DSCKPT_PARTITION_H */
