/*
 * adam.c — Adam/AdamW step, squared gradient norm and inf/NaN check on fp32 arrays
 * (formulas and their order in adam.h), each as a plain reference and an OpenMP
 * version.
 *
 * Thread-count independence: every element of the step is computed by the same
 * scalar formula whatever thread runs it, and the OpenMP versions split the work in
 * blocks of a fixed size (not in thread-count-sized ranges), so the code path an
 * element takes (vector body or remainder) does not depend on the thread count
 * either. The sum of squares fixes its association by definition (adam.h).
 *
 * The file is compiled without FMA flags, so `a*b + c` is two roundings here; a
 * build that adds -mfma (with GCC's default -ffp-contract=fast in GNU mode) may
 * fuse them, which changes bits but keeps the reference and OpenMP versions equal.
 */
#include "adam.h"
#include "internal.h"

#include <math.h>
#include <string.h>

/* Elements per OpenMP work item of the step: 4096 floats x 4 arrays = 64 KiB. */
#define ADAM_BLOCK 4096
/* Blocks of the sum of squares computed per parallel batch (partials on the stack). */
#define SUMSQ_BATCH 1024
/* Below this many elements the OpenMP versions stay on one thread. */
#define PARALLEL_MIN ((size_t)1 << 15)

rt_adam_hparams rt_adam_defaults(void) {
    rt_adam_hparams h = {
        .lr = 1e-3f,
        .beta1 = 0.9f,
        .beta2 = 0.999f,
        .eps = 1e-8f,
        .weight_decay = 0.0f,
        .adam_w_mode = true,
        .bias_correction = true,
    };
    return h;
}

dsckpt_status rt_adam_check(const rt_adam_hparams *h) {
    if (!h) return ds_err(DSCKPT_EINVAL, "adam: NULL hyper-parameters");
    if (!isfinite(h->lr) || h->lr < 0) return ds_err(DSCKPT_EINVAL, "adam: invalid learning rate %g", h->lr);
    if (!isfinite(h->eps) || h->eps < 0) return ds_err(DSCKPT_EINVAL, "adam: invalid eps %g", h->eps);
    if (!(h->beta1 >= 0 && h->beta1 < 1))
        return ds_err(DSCKPT_EINVAL, "adam: invalid beta1 %g (need 0 <= beta1 < 1)", h->beta1);
    if (!(h->beta2 >= 0 && h->beta2 < 1))
        return ds_err(DSCKPT_EINVAL, "adam: invalid beta2 %g (need 0 <= beta2 < 1)", h->beta2);
    if (!isfinite(h->weight_decay) || h->weight_decay < 0)
        return ds_err(DSCKPT_EINVAL, "adam: invalid weight decay %g", h->weight_decay);
    return DSCKPT_OK;
}

/* The per-step constants. */
typedef struct adam_k {
    float lr, b1, b2, omb1, omb2, eps, wd, bc1, bc2;
    bool adamw;
} adam_k;

static dsckpt_status adam_prepare(const float *param, const float *grad, const float *m, const float *v,
                                  size_t n, const rt_adam_hparams *h, uint64_t step, adam_k *k) {
    DS_TRY(rt_adam_check(h));
    if (step == 0) return ds_err(DSCKPT_EINVAL, "adam: step is 1-based (the count after the increment), got 0");
    if (n && (!param || !grad || !m || !v)) return ds_err(DSCKPT_EINVAL, "adam: NULL array");
    k->lr = h->lr;
    k->b1 = h->beta1;
    k->b2 = h->beta2;
    k->omb1 = 1.0f - h->beta1;
    k->omb2 = 1.0f - h->beta2;
    k->eps = h->eps;
    k->wd = h->weight_decay;
    k->adamw = h->adam_w_mode;
    k->bc1 = 1.0f;
    k->bc2 = 1.0f;
    if (h->bias_correction) {
        /* In double, then rounded once, as FusedAdam's host code does. */
        k->bc1 = (float)(1.0 - pow((double)h->beta1, (double)step));
        k->bc2 = (float)(1.0 - pow((double)h->beta2, (double)step));
    }
    return DSCKPT_OK;
}

/* One element; the formula of adam.h, operation by operation. */
static inline void adam_elem(const adam_k *k, float *p_, float g, float *m_, float *v_) {
    float p = *p_, m = *m_, v = *v_;
    if (!k->adamw) g = g + k->wd * p;
    m = k->b1 * m + k->omb1 * g;
    v = k->b2 * v + k->omb2 * g * g;
    float denom = sqrtf(v / k->bc2) + k->eps;
    float update = (m / k->bc1) / denom;
    if (k->adamw) update = update + k->wd * p;
    *p_ = p - k->lr * update;
    *m_ = m;
    *v_ = v;
}

dsckpt_status rt_adam_step_ref(float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                               size_t n, const rt_adam_hparams *h, uint64_t step) {
    adam_k k;
    DS_TRY(adam_prepare(param, grad, exp_avg, exp_avg_sq, n, h, step, &k));
    for (size_t i = 0; i < n; i++) adam_elem(&k, &param[i], grad[i], &exp_avg[i], &exp_avg_sq[i]);
    return DSCKPT_OK;
}

dsckpt_status rt_adam_step(float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                           size_t n, const rt_adam_hparams *h, uint64_t step) {
    adam_k k;
    DS_TRY(adam_prepare(param, grad, exp_avg, exp_avg_sq, n, h, step, &k));
    size_t nblk = (n + ADAM_BLOCK - 1) / ADAM_BLOCK;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t b = 0; b < nblk; b++) {
        size_t i0 = b * ADAM_BLOCK, len = DS_MIN((size_t)ADAM_BLOCK, n - i0);
        float *restrict p = param + i0, *restrict m = exp_avg + i0, *restrict v = exp_avg_sq + i0;
        const float *restrict g = grad + i0;
        for (size_t j = 0; j < len; j++) adam_elem(&k, &p[j], g[j], &m[j], &v[j]);
    }
    return DSCKPT_OK;
}

/* ---- sum of squares ------------------------------------------------------------------ */

static double block_sumsq(const float *g, size_t len) {
    double s = 0.0;
    for (size_t j = 0; j < len; j++) s += (double)g[j] * (double)g[j];
    return s;
}

double rt_grad_sumsq_ref(const float *g, size_t n) {
    double total = 0.0;
    for (size_t i0 = 0; i0 < n; i0 += RT_SUMSQ_BLOCK)
        total += block_sumsq(g + i0, DS_MIN((size_t)RT_SUMSQ_BLOCK, n - i0));
    return total;
}

double rt_grad_sumsq(const float *g, size_t n) {
    double total = 0.0;
    size_t nblk = (n + RT_SUMSQ_BLOCK - 1) / RT_SUMSQ_BLOCK;
    double part[SUMSQ_BATCH];
    for (size_t b0 = 0; b0 < nblk; b0 += SUMSQ_BATCH) {
        size_t nb = DS_MIN((size_t)SUMSQ_BATCH, nblk - b0);
#pragma omp parallel for schedule(static) if (nb * RT_SUMSQ_BLOCK >= PARALLEL_MIN)
        for (size_t b = 0; b < nb; b++) {
            size_t i0 = (b0 + b) * RT_SUMSQ_BLOCK;
            part[b] = block_sumsq(g + i0, DS_MIN((size_t)RT_SUMSQ_BLOCK, n - i0));
        }
        /* Block order, as in the definition. */
        for (size_t b = 0; b < nb; b++) total += part[b];
    }
    return total;
}

/* ---- inf / NaN ------------------------------------------------------------------------ */

bool rt_has_inf_nan_ref(const float *g, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(g[i])) return true;
    return false;
}

/* The exponent bits all ones: +-inf or NaN. Branch-free, so the loop vectorises. */
static bool block_has_inf_nan(const float *g, size_t len) {
    uint32_t any = 0;
    for (size_t j = 0; j < len; j++) {
        uint32_t u;
        memcpy(&u, &g[j], sizeof u);
        any |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
    }
    return any != 0;
}

bool rt_has_inf_nan(const float *g, size_t n) {
    size_t nblk = (n + ADAM_BLOCK - 1) / ADAM_BLOCK;
    int found = 0;
#pragma omp parallel for schedule(static) reduction(| : found) if (n >= PARALLEL_MIN)
    for (size_t b = 0; b < nblk; b++) {
        size_t i0 = b * ADAM_BLOCK;
        found |= block_has_inf_nan(g + i0, DS_MIN((size_t)ADAM_BLOCK, n - i0));
    }
    return found != 0;
}
