/*
 * optim.h — the optimizer-side kernels on flat fp32 partitions (CPU, OpenMP): the
 * AdamW / Adam element step, scaling, element-wise accumulation, the exact sum of
 * squares for the global gradient norm, the inf/NaN check, and fp16 rounding of
 * gradients. Each has a plain reference (`*_ref`) beside the fast path; the two give
 * the same bits at any thread count (work is split in fixed-size blocks, each element
 * takes the same scalar formula, and the sum of squares is exact).
 *
 * Arrays passed together must not overlap unless stated.
 */
#ifndef DSCKPT_KERNELS_OPTIM_H
#define DSCKPT_KERNELS_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Per-step constants of the Adam step (the host computes them: bc1 and bc2 are
 * 1 - beta^step in double rounded once, or 1 without bias correction). */
typedef struct ds_adam_k {
    float lr, beta1, beta2;
    float one_minus_beta1, one_minus_beta2; /* 1.0f - beta, in float */
    float eps, weight_decay;
    float bc1, bc2;
    bool adam_w_mode; /* true: decoupled decay (AdamW); false: L2 added to the gradient */
} ds_adam_k;

/* One step on n elements, in place on param, m (exp_avg) and v (exp_avg_sq); per
 * element, all in float, in this order (DeepSpeed FusedAdam's):
 *   if !adam_w_mode: g = g + wd*p
 *   m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g*g
 *   update = (m / bc1) / (sqrt(v / bc2) + eps);  if adam_w_mode: update += wd*p
 *   p = p - lr*update */
void ds_adam(const ds_adam_k *k, float *param, const float *grad, float *m, float *v, size_t n);
void ds_adam_ref(const ds_adam_k *k, float *param, const float *grad, float *m, float *v, size_t n);

/* x[i] *= s. */
void ds_scale(float *x, size_t n, float s);
void ds_scale_ref(float *x, size_t n, float s);

/* dst[i] += src[i]. */
void ds_add(float *dst, const float *src, size_t n);
void ds_add_ref(float *dst, const float *src, size_t n);

/* Exact sum of squares. Each (double)g*(double)g is exact in a double; its 53-bit
 * significand is added to the unsigned 128-bit bucket of its biased exponent
 * (DS_SUMSQ_BUCKETS of them). Integer additions are exact and associative, so
 * accumulators of any partition of the elements, on any rank, in any order add to
 * the same buckets, and ds_sumsq_value gives the same double. acc is ADDED to (the
 * caller zeroes it). inf/NaN squares land in bucket 2047 (their value is then inf,
 * meaningless: check ds_has_inf_nan first). */
#define DS_SUMSQ_BUCKETS 2048
typedef unsigned __int128 ds_u128;
void ds_sumsq_exact(const float *g, size_t n, ds_u128 *acc);
void ds_sumsq_exact_ref(const float *g, size_t n, ds_u128 *acc);
/* The buckets' value, summed in double from bucket 0 up (each ldexp'd bucket
 * rounded once). */
double ds_sumsq_value(const ds_u128 *acc);

/* True when some g[i] is +-inf or NaN. */
bool ds_has_inf_nan(const float *g, size_t n);
bool ds_has_inf_nan_ref(const float *g, size_t n);

/* g[i] = (float)(fp16)g[i] (round to nearest even; past the fp16 range -> +-inf):
 * fp16 training keeps gradients in fp16, which is how an overflowing step shows. */
void ds_round_f16(float *g, size_t n);
void ds_round_f16_ref(float *g, size_t n);

/* Zeroes the n bytes at p, writing every page: a new buffer's first-touch faults
 * (and the kernel's clearing of its pages) happen here, on every OpenMP thread
 * when n is large. Never turned into calloc (explicit_bzero). */
void ds_zero_touch(void *p, size_t n);

#endif /* DSCKPT_KERNELS_OPTIM_H */
