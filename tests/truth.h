/*
 * truth.h — test helpers for the DeepSpeed fixtures: a consolidated safetensors
 * file, or a checkpoint's optimizer states, against the fixture's
 * expected/truth.safetensors (the engine's true values: fp32/, exp_avg/,
 * exp_avg_sq/, frozen/ and buffer/ entries, tied aliases in its metadata).
 * Shared by test_deepspeed.c (DeepSpeed 0.14) and test_deepspeed19.c (0.19).
 */
#ifndef DSCKPT_TESTS_TRUTH_H
#define DSCKPT_TESTS_TRUTH_H

#include "ckpt.h"
#include "safetensors.h"

#include <stdbool.h>
#include <stdint.h>

/* A safetensors file open for reading tensors' bytes. */
typedef struct tt_file {
    st_header *h;
    int fd;
} tt_file;

void tt_open(const char *path, tt_file *f);
void tt_close(tt_file *f);
/* Bytes of tensor `name` (malloc'd), or NULL if absent; *out (if given) is its
 * entry, NULL when absent. */
uint8_t *tt_bytes(const tt_file *f, const char *name, const st_tensor **out);

/* The consolidated file at outpath against truth_path: fp32/ entries bit for bit
 * under out = fp32, their round-to-nearest-even cast under a 16-bit out; frozen/
 * and buffer/ entries in their own dtypes (16-bit ones upcast exactly under
 * fp32); frozen/ ones absent when !frozen_expected; nothing else; tied aliases
 * recorded as metadata, with no tensor of their own. fx names the fixture in
 * messages. */
void tt_check_consolidated(const char *fx, const char *truth_path, const char *outpath, dsckpt_dtype out,
                           bool frozen_expected);

/* fp32 master weights and both Adam moments of every trainable tensor of `n`
 * equal the truth's fp32/, exp_avg/ and exp_avg_sq/ entries bit for bit (M: the
 * world size n was resharded to, for messages). */
void tt_check_states(const char *fx, int M, const dsckpt_ckpt *n, const tt_file *truth);

/* c resharded to the native format at world size M (under dir, replaced if there):
 * the output keeps c's stage, has M ranks, and its states equal the truth's
 * (tt_check_states). */
void tt_check_reshard_states(const char *fx, dsckpt_ckpt *c, const tt_file *truth, const char *dir, int M);

#endif /* DSCKPT_TESTS_TRUTH_H */
