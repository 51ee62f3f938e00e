/*
 * kernels_internal.h — private helpers of the OpenMP kernels (gemm.c, nn.c, optim.c).
 */
#ifndef DSCKPT_KERNELS_INTERNAL_H
#define DSCKPT_KERNELS_INTERNAL_H

#include <stdint.h>

/* Work (multiply-adds or element updates) below which a loop runs on the calling
 * thread: a parallel region costs microseconds, and far more when the cores are
 * oversubscribed. Only speed depends on it, never the results. */
#define PAR_MIN_WORK ((int64_t)1 << 15)

#define K_MIN(a, b) ((a) < (b) ? (a) : (b))

#endif /* DSCKPT_KERNELS_INTERNAL_H */
