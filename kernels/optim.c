/*
 * optim.c — the optimizer-side kernels of optim.h: OpenMP fast paths in fixed-size
 * blocks (so the code path an element takes does not depend on the thread count) and
 * plain references.
 *
 * Compiled without FMA flags (and with -ffp-contract=off), so `a*b + c` is two
 * roundings, in the fast paths and the references alike.
 */
#include "optim.h"

#include "cast.h"
#include "kernels_internal.h"

#include <math.h>
#include <string.h>

/* Elements per OpenMP work item: 4096 floats x 4 arrays = 64 KiB for the step. */
#define BLOCK 4096
/* Below this many elements the OpenMP versions stay on one thread. */
#define PARALLEL_MIN ((size_t)1 << 15)

/* ---- Adam ---- */

/* One element; the formula of optim.h, operation by operation. */
static inline void adam_elem(const ds_adam_k *k, int w_mode, float *p_, float g, float *m_, float *v_) {
    float p = *p_, m = *m_, v = *v_;
    if (!w_mode) g = g + k->weight_decay * p;
    m = k->beta1 * m + k->one_minus_beta1 * g;
    v = k->beta2 * v + k->one_minus_beta2 * g * g;
    float denom = sqrtf(v / k->bc2) + k->eps;
    float update = (m / k->bc1) / denom;
    if (w_mode) update = update + k->weight_decay * p;
    *p_ = p - k->lr * update;
    *m_ = m;
    *v_ = v;
}

void ds_adam(const ds_adam_k *k, float *param, const float *grad, float *m, float *v, size_t n) {
    size_t nblk = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t b = 0; b < nblk; b++) {
        size_t i0 = b * BLOCK, len = K_MIN((size_t)BLOCK, n - i0);
        float *restrict pb = param + i0, *restrict mb = m + i0, *restrict vb = v + i0;
        const float *restrict gb = grad + i0;
        /* A block-local copy of the constants: the stores through pb, mb and vb
         * cannot alias it, so they stay in registers and the loop vectorises. */
        const ds_adam_k kb = *k;
        if (kb.adam_w_mode) { /* the mode as a constant: no branch in the vector loop */
#pragma omp simd
            for (size_t j = 0; j < len; j++) adam_elem(&kb, 1, &pb[j], gb[j], &mb[j], &vb[j]);
        } else {
#pragma omp simd
            for (size_t j = 0; j < len; j++) adam_elem(&kb, 0, &pb[j], gb[j], &mb[j], &vb[j]);
        }
    }
}

void ds_adam_ref(const ds_adam_k *k, float *param, const float *grad, float *m, float *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        if (!k->adam_w_mode) g = g + k->weight_decay * param[i];
        m[i] = k->beta1 * m[i] + k->one_minus_beta1 * g;
        v[i] = k->beta2 * v[i] + k->one_minus_beta2 * g * g;
        float update = (m[i] / k->bc1) / (sqrtf(v[i] / k->bc2) + k->eps);
        if (k->adam_w_mode) update = update + k->weight_decay * param[i];
        param[i] = param[i] - k->lr * update;
    }
}

/* ---- scale, add ---- */

void ds_scale(float *x, size_t n, float s) {
    size_t nblk = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t b = 0; b < nblk; b++) {
        size_t i0 = b * BLOCK, len = K_MIN((size_t)BLOCK, n - i0);
        float *xb = x + i0;
#pragma omp simd
        for (size_t j = 0; j < len; j++) xb[j] *= s;
    }
}

void ds_scale_ref(float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] * s;
}

void ds_add(float *dst, const float *src, size_t n) {
    size_t nblk = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t b = 0; b < nblk; b++) {
        size_t i0 = b * BLOCK, len = K_MIN((size_t)BLOCK, n - i0);
        float *restrict d = dst + i0;
        const float *restrict s = src + i0;
#pragma omp simd
        for (size_t j = 0; j < len; j++) d[j] += s[j];
    }
}

void ds_add_ref(float *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = dst[i] + src[i];
}

/* ---- exact sum of squares ---- */

static inline void sumsq_one(float x, ds_u128 *acc) {
    double d = (double)x * (double)x; /* exact: 24 x 24 bits fit 53 */
    uint64_t b;
    memcpy(&b, &d, 8);
    unsigned ex = (unsigned)(b >> 52) & 0x7ff;
    uint64_t mant = (b & ((1ull << 52) - 1)) | (ex ? 1ull << 52 : 0);
    acc[ex] += mant;
}

void ds_sumsq_exact_ref(const float *g, size_t n, ds_u128 *acc) {
    for (size_t i = 0; i < n; i++) sumsq_one(g[i], acc);
}

/* Per-thread buckets (32 KiB), merged under a critical section: integer sums, so the
 * merge order does not matter. */
void ds_sumsq_exact(const float *g, size_t n, ds_u128 *acc) {
    if (n < 4 * PARALLEL_MIN) {
        ds_sumsq_exact_ref(g, n, acc);
        return;
    }
    size_t nblk = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel
    {
        ds_u128 mine[DS_SUMSQ_BUCKETS];
        memset(mine, 0, sizeof mine);
#pragma omp for schedule(static)
        for (size_t b = 0; b < nblk; b++) {
            size_t i0 = b * BLOCK, len = K_MIN((size_t)BLOCK, n - i0);
            for (size_t j = 0; j < len; j++) sumsq_one(g[i0 + j], mine);
        }
#pragma omp critical(ds_sumsq_merge)
        for (int x = 0; x < DS_SUMSQ_BUCKETS; x++) acc[x] += mine[x];
    }
}

double ds_sumsq_value(const ds_u128 *acc) {
    double s = 0;
    for (int ex = 0; ex < DS_SUMSQ_BUCKETS; ex++) {
        if (!acc[ex]) continue;
        int sh = (ex ? ex : 1) - 1075;
        s += ldexp((double)acc[ex], sh);
    }
    return s;
}

/* ---- inf / NaN ---- */

bool ds_has_inf_nan_ref(const float *g, size_t n) {
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

bool ds_has_inf_nan(const float *g, size_t n) {
    size_t nblk = (n + BLOCK - 1) / BLOCK;
    int found = 0;
#pragma omp parallel for schedule(static) reduction(| : found) if (n >= PARALLEL_MIN)
    for (size_t b = 0; b < nblk; b++) {
        size_t i0 = b * BLOCK;
        found |= block_has_inf_nan(g + i0, K_MIN((size_t)BLOCK, n - i0));
    }
    return found != 0;
}

/* ---- fp16 rounding ---- */

void ds_round_f16(float *g, size_t n) {
    size_t nblk = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t b = 0; b < nblk; b++) {
        size_t i0 = b * BLOCK, len = K_MIN((size_t)BLOCK, n - i0);
        uint16_t tmp[BLOCK];
        ds_cast_f32_to_f16(g + i0, tmp, len);
        ds_cast_f16_to_f32(tmp, g + i0, len);
    }
}

void ds_round_f16_ref(float *g, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] = ds_f16_to_f32_ref(ds_f32_to_f16_ref(g[i]));
}

/* ---- first touch ---- */

/* Pieces of a huge page: a thread faults whole 2 MiB pages of a buffer on them. */
#define TOUCH_PIECE ((size_t)2 << 20)
/* Below this the zeroing stays on one thread. */
#define TOUCH_PARALLEL_MIN ((size_t)16 << 20)

void ds_zero_touch(void *p, size_t n) {
    unsigned char *b = p;
    size_t pieces = (n + TOUCH_PIECE - 1) / TOUCH_PIECE;
#pragma omp parallel for schedule(static) if (n >= TOUCH_PARALLEL_MIN)
    for (size_t i = 0; i < pieces; i++) {
        size_t at = i * TOUCH_PIECE;
        explicit_bzero(b + at, n - at < TOUCH_PIECE ? n - at : TOUCH_PIECE);
    }
}
