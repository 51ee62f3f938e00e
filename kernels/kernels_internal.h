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

/* exp(x) in float arithmetic alone, written for `omp simd` loops: the same
 * multiplies and adds on every target and vector width (the kernels build with
 * -ffp-contract=off), so a vector loop and a scalar reference that both call it
 * agree bit for bit, and no libm call stops the loop from vectorising.
 *
 * x = k ln2 + r, k = round(x / ln2), ln2 split in two (the high part has 9
 * significant bits, so k * high is exact for |k| < 2^15); e^r by the degree-6
 * polynomial of Cephes' expf on |r| <= ln2/2; then times 2^k as two powers of two,
 * 2^(k>>1) (exact) and 2^(k - (k>>1)) (one rounding), so results in the
 * subnormal range and the overflow to +inf round once, like any product.
 * Relative error within 2 ulp of float (tests/test_kernels.c checks it against
 * double on the whole range); exp(0) = 1, exp(-inf) = +0, exp(+inf) = +inf,
 * exp(NaN) = NaN. */
/* c ? a : b on the bits, so a loop using it has no branch to vectorise around
 * (a float ternary is one under the default -ftrapping-math). */
static inline float k_selectf(int c, float a, float b) {
    int32_t m = -(int32_t)(c != 0), ia, ib;
    __builtin_memcpy(&ia, &a, 4);
    __builtin_memcpy(&ib, &b, 4);
    int32_t r = (ia & m) | (ib & ~m);
    float f;
    __builtin_memcpy(&f, &r, 4);
    return f;
}

static inline float k_expf(float x) {
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const float shift = 12582912.0f; /* 1.5 * 2^23: x + shift rounds x to an integer */
    float xc = k_selectf(x < -110.0f, -110.0f, x); /* NaN passes both, and stays NaN */
    xc = k_selectf(xc > 90.0f, 90.0f, xc);
    float t = xc * log2e + shift;
    float kf = t - shift;
    int32_t ti, si;
    __builtin_memcpy(&ti, &t, 4);
    __builtin_memcpy(&si, &shift, 4);
    int32_t k = ti - si, k1 = k >> 1, k2 = k - k1;
    float r = (xc - kf * ln2_hi) - kf * ln2_lo;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = (p * (r * r) + r) + 1.0f;
    /* unsigned: a NaN's k is out of range, and a signed shift would be undefined */
    uint32_t b1 = (uint32_t)(k1 + 127) << 23, b2 = (uint32_t)(k2 + 127) << 23;
    float s1, s2;
    __builtin_memcpy(&s1, &b1, 4);
    __builtin_memcpy(&s2, &b2, 4);
    return (p * s1) * s2;
}

#endif /* DSCKPT_KERNELS_INTERNAL_H */
