/*
 * synth.h — the tensor list and value rule of synthetic checkpoints (internal use
 * by synth.c and tests).
 */
#ifndef DSCKPT_SYNTH_H
#define DSCKPT_SYNTH_H

#include "ckpt.h"

/* Builds the GPT-like tensor list for about `params` parameters in `dtype`.
 * Two parameter groups: 0 = matrices, 1 = vectors. Frees with ds_synth_tensors_free. */
dsckpt_status ds_synth_tensors(uint64_t params, dsckpt_dtype dtype, ds_tensor **out, size_t *n);
void ds_synth_tensors_free(ds_tensor *t, size_t n);

/* The deterministic element value rule (docs/synth.md). */
float ds_synth_value(uint64_t seed, uint32_t tensor, ds_state s, uint64_t index);

#endif
