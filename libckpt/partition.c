/*
 * partition.c — ZeRO partition arithmetic (see partition.h and DESIGN.md §3).
 */
#include "partition.h"

ds_flat_part ds_part_flat(uint64_t numel, int world_size) {
    ds_flat_part p;
    uint64_t w = world_size > 0 ? (uint64_t)world_size : 1;
    uint64_t align = 2 * w; /* DeepSpeed's nccl_start_alignment_factor (2) times W */
    p.numel = numel;
    p.padded = (numel / align + (numel % align != 0)) * align;
    p.part = p.padded / w;
    return p;
}

uint64_t ds_part_piece(uint64_t numel, int world_size) {
    uint64_t w = world_size > 0 ? (uint64_t)world_size : 1;
    return numel / w + (numel % w != 0);
}

void ds_part_real(uint64_t len, int rank, uint64_t numel, uint64_t *start, uint64_t *count) {
    uint64_t s = len * (uint64_t)rank;
    *start = s;
    if (s >= numel) {
        *count = 0;
    } else {
        uint64_t left = numel - s;
        *count = left < len ? left : len;
    }
}

ds_slice ds_part_slice(int stage, int world_size, int rank, uint64_t part, uint64_t off, uint64_t numel) {
    ds_slice sl = {0, 0, 0};
    if (stage == 0) return (ds_slice){0, numel, off};
    if (stage == 3) {
        ds_part_real(ds_part_piece(numel, world_size), rank, numel, &sl.start, &sl.count);
        sl.at = off;
        return sl;
    }
    uint64_t lo = part * (uint64_t)rank, hi = lo + part;
    uint64_t a = off > lo ? off : lo, b = off + numel < hi ? off + numel : hi;
    if (a < b) sl = (ds_slice){a - off, b - a, a - lo};
    return sl;
}

uint64_t ds_part_flat_padding(ds_flat_part p, int rank) {
    uint64_t start, count;
    ds_part_real(p.part, rank, p.numel, &start, &count);
    return p.part - count;
}
