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

#endif /* DSCKPT_PARTITION_H */
