/*
 * elementwise.cu — the CUDA twins of kernels/cast.c and kernels/optim.h: the four
 * casts, the fused Adam/AdamW step, scale, add, fp16 rounding, the exact sum of
 * squares, the inf/NaN check, and the rank-order sum of the collectives. Each is
 * bitwise equal to its CPU reference:
 *   - the casts run the references' integer arithmetic on the bit patterns;
 *   - Adam and scale use explicitly rounded intrinsics (__fmul_rn, __fadd_rn, ...),
 *     which the compiler never fuses into FMAs, in the reference's order;
 *   - the sum of squares is exact (kernels/optim.h: integer buckets per exponent), so
 *     any order of additions gives the same buckets.
 */
#include "common.cuh"

#define EW_THREADS 256

/* ---- casts: the integer arithmetic of kernels/cast.c ---- */

__device__ __forceinline__ uint16_t f32_to_bf16(float f) {
    uint32_t b = __float_as_uint(f);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((b >> 16) | 0x0040u);
    b += 0x7FFFu + ((b >> 16) & 1u);
    return (uint16_t)(b >> 16);
}

__device__ __forceinline__ uint16_t f32_to_f16(float f) {
    uint32_t b = __float_as_uint(f);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000u);
    uint32_t a = b & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
    if (a >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);
    if (a >= 0x38800000u) {
        a += 0xFFFu + ((a >> 13) & 1u);
        a -= (uint32_t)(127 - 15) << 23;
        return (uint16_t)(sign | (a >> 13));
    }
    uint32_t e = a >> 23;
    uint32_t shift = 126 - e;
    if (shift >= 25) return sign;
    uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

__device__ __forceinline__ float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1Fu;
    uint32_t m = h & 0x3FFu;
    if (e == 0x1F) return __uint_as_float(m == 0 ? (sign | 0x7F800000u) : (sign | 0x7FC00000u | (m << 13)));
    if (e == 0) {
        if (m == 0) return __uint_as_float(sign);
        e = 113;
        while (!(m & 0x400u)) {
            m <<= 1;
            e--;
        }
        m &= 0x3FFu;
        return __uint_as_float(sign | (e << 23) | (m << 13));
    }
    return __uint_as_float(sign | ((e + 127 - 15) << 23) | (m << 13));
}

__global__ void k_f32_to_bf16(const float *__restrict__ s, uint16_t *__restrict__ d, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = f32_to_bf16(s[i]);
}
__global__ void k_f32_to_f16(const float *__restrict__ s, uint16_t *__restrict__ d, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = f32_to_f16(s[i]);
}
__global__ void k_bf16_to_f32(const uint16_t *__restrict__ s, float *__restrict__ d, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = __uint_as_float((uint32_t)s[i] << 16);
}
__global__ void k_f16_to_f32(const uint16_t *__restrict__ s, float *__restrict__ d, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = f16_to_f32(s[i]);
}

#define CAST_ENTRY(name, kern, ST, DT)                                                     \
    extern "C" dsc_status name(dsc_ctx *c, const ST *src, DT *dst, size_t n) {         \
        DSC_CHECK_CTX(c);                                                                  \
        if (n == 0) return DSC_OK;                                                      \
        if (!src || !dst) return dsc_err(DSC_EINVAL, #name ": NULL array");              \
        kern<<<dsc_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(src, dst, n);          \
        DSC_LAUNCHED(#name);                                                               \
        return DSC_OK;                                                                  \
    }
CAST_ENTRY(dsc_cast_f32_to_bf16, k_f32_to_bf16, float, uint16_t)
CAST_ENTRY(dsc_cast_f32_to_f16, k_f32_to_f16, float, uint16_t)
CAST_ENTRY(dsc_cast_bf16_to_f32, k_bf16_to_f32, uint16_t, float)
CAST_ENTRY(dsc_cast_f16_to_f32, k_f16_to_f32, uint16_t, float)

/* rows x cols of a row-major fp32 matrix (row stride lds) cast to 16 bits at row
 * stride ldd: the same rounding as the casts above, element by element. */
__global__ void k_pack16(const float *__restrict__ s, size_t lds, uint16_t *__restrict__ d, size_t ldd, size_t rows,
                         size_t cols, int bf) {
    size_t n = rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / cols, k = i - r * cols;
        float v = s[r * lds + k];
        d[r * ldd + k] = bf ? f32_to_bf16(v) : f32_to_f16(v);
    }
}

dsc_status dsc_pack16(dsc_ctx *c, const float *src, size_t lds, uint16_t *dst, size_t ldd, size_t rows, size_t cols,
                      dsc_dtype to) {
    DSC_CHECK_CTX(c);
    if (rows == 0 || cols == 0) return DSC_OK;
    if (!src || !dst || lds < cols || ldd < cols || (to != DSC_BF16 && to != DSC_F16))
        return dsc_err(DSC_EINVAL, "dsc_pack16: bad arguments");
    k_pack16<<<dsc_grid(rows * cols, EW_THREADS), EW_THREADS, 0, c->stream>>>(src, lds, dst, ldd, rows, cols,
                                                                               to == DSC_BF16);
    DSC_LAUNCHED("dsc_pack16");
    return DSC_OK;
}

/* ---- Adam / AdamW: adam_elem of runtime/adam.c, operation by operation ---- */

struct adam_k {
    float lr, b1, b2, omb1, omb2, eps, wd, bc1, bc2;
    int adamw;
};

__global__ void k_adam(float *__restrict__ param, const float *__restrict__ grad, float *__restrict__ ma,
                       float *__restrict__ va, size_t n, adam_k k) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float p = param[i], g = grad[i], m = ma[i], v = va[i];
        if (!k.adamw) g = __fadd_rn(g, __fmul_rn(k.wd, p));
        m = __fadd_rn(__fmul_rn(k.b1, m), __fmul_rn(k.omb1, g));
        v = __fadd_rn(__fmul_rn(k.b2, v), __fmul_rn(__fmul_rn(k.omb2, g), g));
        float denom = __fadd_rn(__fsqrt_rn(__fdiv_rn(v, k.bc2)), k.eps);
        float update = __fdiv_rn(__fdiv_rn(m, k.bc1), denom);
        if (k.adamw) update = __fadd_rn(update, __fmul_rn(k.wd, p));
        param[i] = __fsub_rn(p, __fmul_rn(k.lr, update));
        ma[i] = m;
        va[i] = v;
    }
}

extern "C" dsc_status dsc_adam_step(dsc_ctx *c, float *param, const float *grad, float *exp_avg,
                                       float *exp_avg_sq, size_t n, const dsc_adam_args *a) {
    DSC_CHECK_CTX(c);
    if (!a) return dsc_err(DSC_EINVAL, "dsc_adam_step: NULL arguments");
    if (n == 0) return DSC_OK;
    if (!param || !grad || !exp_avg || !exp_avg_sq) return dsc_err(DSC_EINVAL, "dsc_adam_step: NULL array");
    adam_k k;
    k.lr = a->lr;
    k.b1 = a->beta1;
    k.b2 = a->beta2;
    k.omb1 = 1.0f - a->beta1; /* in float on the host, as adam_prepare does */
    k.omb2 = 1.0f - a->beta2;
    k.eps = a->eps;
    k.wd = a->weight_decay;
    k.bc1 = a->bc1;
    k.bc2 = a->bc2;
    k.adamw = a->adam_w_mode;
    k_adam<<<dsc_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(param, grad, exp_avg, exp_avg_sq, n, k);
    DSC_LAUNCHED("dsc_adam_step");
    return DSC_OK;
}

__global__ void k_scale(float *__restrict__ x, size_t n, float s) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = __fmul_rn(x[i], s);
}

extern "C" dsc_status dsc_scale(dsc_ctx *c, float *x, size_t n, float s) {
    DSC_CHECK_CTX(c);
    if (n == 0) return DSC_OK;
    if (!x) return dsc_err(DSC_EINVAL, "dsc_scale: NULL array");
    k_scale<<<dsc_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(x, n, s);
    DSC_LAUNCHED("dsc_scale");
    return DSC_OK;
}

/* ---- exact sum of squares (kernels/optim.h's definition) ----
 * Each (double)g * (double)g is exact; its 53-bit significand is added to the
 * unsigned 128-bit bucket of its biased exponent. A block accumulates in shared
 * memory, then adds its non-zero buckets to the global ones; all additions are
 * integer (two 64-bit halves with an explicit carry), so their order cannot change
 * the result. */
#define SQ_BUCKETS 2048
#define SQ_THREADS 512

__device__ __forceinline__ void u128_atomic_add(unsigned long long *lo, unsigned long long *hi,
                                                unsigned long long v) {
    unsigned long long old = atomicAdd(lo, v);
    if (old + v < old) atomicAdd(hi, 1ull);
}

/* buckets: SQ_BUCKETS x {lo, hi}. */
__global__ void __launch_bounds__(SQ_THREADS) k_sumsq_exact(const float *__restrict__ g, size_t n,
                                                            unsigned long long *__restrict__ buckets) {
    __shared__ unsigned long long lo[SQ_BUCKETS], hi[SQ_BUCKETS];
    for (int i = threadIdx.x; i < SQ_BUCKETS; i += blockDim.x) lo[i] = hi[i] = 0;
    __syncthreads();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        double x = (double)g[i];
        unsigned long long b = (unsigned long long)__double_as_longlong(__dmul_rn(x, x));
        unsigned ex = (unsigned)(b >> 52) & 0x7ffu;
        unsigned long long mant = (b & ((1ull << 52) - 1)) | (ex ? 1ull << 52 : 0ull);
        if (mant) u128_atomic_add(&lo[ex], &hi[ex], mant);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < SQ_BUCKETS; i += blockDim.x) {
        if (lo[i]) u128_atomic_add(&buckets[2 * i], &buckets[2 * i + 1], lo[i]);
        if (hi[i]) atomicAdd(&buckets[2 * i + 1], hi[i]);
    }
}

extern "C" dsc_status dsc_sumsq_exact(dsc_ctx *c, const float *g, size_t n, unsigned __int128 *acc) {
    DSC_CHECK_CTX(c);
    if (!acc) return dsc_err(DSC_EINVAL, "dsc_sumsq_exact: NULL accumulator");
    if (n == 0) return DSC_OK;
    if (!g) return dsc_err(DSC_EINVAL, "dsc_sumsq_exact: NULL array");
    size_t bytes = (size_t)SQ_BUCKETS * 2 * sizeof(unsigned long long);
    void *scr = NULL, *hp = NULL;
    dsc_status st = dsc_scratch(c, bytes, &scr);
    if (st) return st;
    st = dsc_pinned(c, bytes, &hp);
    if (st) return st;
    int dev = 0, sms = 0;
    DSC_CUDA(cudaGetDevice(&dev), "cudaGetDevice");
    DSC_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
    unsigned grid = dsc_grid(n, SQ_THREADS);
    if (grid > (unsigned)(2 * sms)) grid = (unsigned)(2 * sms);
    DSC_CUDA(cudaMemsetAsync(scr, 0, bytes, c->stream), "cudaMemsetAsync (sumsq)");
    k_sumsq_exact<<<grid, SQ_THREADS, 0, c->stream>>>(g, n, (unsigned long long *)scr);
    DSC_LAUNCHED("dsc_sumsq_exact");
    DSC_CUDA(cudaMemcpyAsync(hp, scr, bytes, cudaMemcpyDeviceToHost, c->stream), "cudaMemcpyAsync (sumsq)");
    DSC_CUDA(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize (sumsq)");
    const unsigned long long *h = (const unsigned long long *)hp;
    for (int i = 0; i < SQ_BUCKETS; i++)
        if (h[2 * i] | h[2 * i + 1]) acc[i] += ((unsigned __int128)h[2 * i + 1] << 64) | h[2 * i];
    return DSC_OK;
}

/* ---- add, fp16 rounding, rank-order sums ---- */

__global__ void k_add(float *__restrict__ d, const float *__restrict__ s, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = __fadd_rn(d[i], s[i]);
}

extern "C" dsc_status dsc_add(dsc_ctx *c, float *dst, const float *src, size_t n) {
    DSC_CHECK_CTX(c);
    if (n == 0) return DSC_OK;
    if (!dst || !src) return dsc_err(DSC_EINVAL, "dsc_add: NULL array");
    k_add<<<dsc_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(dst, src, n);
    DSC_LAUNCHED("dsc_add");
    return DSC_OK;
}

__global__ void k_round_f16(float *__restrict__ g, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        g[i] = f16_to_f32(f32_to_f16(g[i]));
}

extern "C" dsc_status dsc_round_f16(dsc_ctx *c, float *g, size_t n) {
    DSC_CHECK_CTX(c);
    if (n == 0) return DSC_OK;
    if (!g) return dsc_err(DSC_EINVAL, "dsc_round_f16: NULL array");
    k_round_f16<<<dsc_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(g, n);
    DSC_LAUNCHED("dsc_round_f16");
    return DSC_OK;
}

#define RO_MAX 32
struct ro_srcs {
    const float *p[RO_MAX];
};

/* out[i] = (first ? s[0][i] : out[i]) + s[1][i] + ... in order. */
__global__ void k_sum_rank_order(float *__restrict__ out, ro_srcs s, int ns, int first, size_t m) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < m; i += (size_t)gridDim.x * blockDim.x) {
        float a = first ? s.p[0][i] : out[i];
        for (int k = first ? 1 : 0; k < ns; k++) a = __fadd_rn(a, s.p[k][i]);
        out[i] = a;
    }
}

extern "C" dsc_status dsc_sum_rank_order(dsc_ctx *c, float *out, const float *const *srcs, int W, size_t m) {
    DSC_CHECK_CTX(c);
    if (W < 1 || !srcs) return dsc_err(DSC_EINVAL, "dsc_sum_rank_order: W=%d", W);
    if (m == 0) return DSC_OK;
    /* Sources in groups of RO_MAX: later groups add onto out, which keeps the order. */
    for (int k0 = 0; k0 < W; k0 += RO_MAX) {
        ro_srcs s;
        int ns = W - k0 < RO_MAX ? W - k0 : RO_MAX;
        for (int k = 0; k < ns; k++) s.p[k] = srcs[k0 + k];
        k_sum_rank_order<<<dsc_grid(m, EW_THREADS), EW_THREADS, 0, c->stream>>>(out, s, ns, k0 == 0, m);
        DSC_LAUNCHED("dsc_sum_rank_order");
    }
    return DSC_OK;
}

/* ---- inf / NaN ---- */
__global__ void k_inf_nan(const float *__restrict__ g, size_t n, int *flag) {
    int any = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        any |= (__float_as_uint(g[i]) & 0x7f800000u) == 0x7f800000u;
    if (__syncthreads_or(any) && threadIdx.x == 0) atomicOr(flag, 1);
}

extern "C" dsc_status dsc_has_inf_nan(dsc_ctx *c, const float *g, size_t n, bool *out_host) {
    DSC_CHECK_CTX(c);
    if (!out_host) return dsc_err(DSC_EINVAL, "dsc_has_inf_nan: NULL result");
    *out_host = false;
    if (n == 0) return DSC_OK;
    if (!g) return dsc_err(DSC_EINVAL, "dsc_has_inf_nan: NULL array");
    void *scr = NULL, *hp = NULL;
    dsc_status st = dsc_scratch(c, sizeof(int), &scr);
    if (st) return st;
    st = dsc_pinned(c, sizeof(int), &hp);
    if (st) return st;
    DSC_CUDA(cudaMemsetAsync(scr, 0, sizeof(int), c->stream), "cudaMemsetAsync (inf/nan)");
    k_inf_nan<<<dsc_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(g, n, (int *)scr);
    DSC_LAUNCHED("dsc_has_inf_nan");
    DSC_CUDA(cudaMemcpyAsync(hp, scr, sizeof(int), cudaMemcpyDeviceToHost, c->stream), "cudaMemcpyAsync (inf/nan)");
    DSC_CUDA(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize (inf/nan)");
    *out_host = *(const int *)hp != 0;
    return DSC_OK;
}
