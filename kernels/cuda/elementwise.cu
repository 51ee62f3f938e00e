/*
 * elementwise.cu — the CUDA twins of kernels/cast.c and runtime/adam.c: the four
 * casts, the fused Adam/AdamW step, scale, the exact sum of squares and the inf/NaN
 * check. Each is bitwise equal to its CPU reference:
 *   - the casts run the references' integer arithmetic on the bit patterns;
 *   - Adam and scale use explicitly rounded intrinsics (__fmul_rn, __fadd_rn, ...),
 *     which the compiler never fuses into FMAs, in the reference's order;
 *   - the sum of squares follows rt_grad_sumsq's definition (DSC_SUMSQ_BLOCK = RT_SUMSQ_BLOCK): each 4096-element block
 *     summed in index order in double on the device, the block sums added in block
 *     order on the host.
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
    extern "C" dsckpt_status name(dsc_ctx *c, const ST *src, DT *dst, size_t n) {         \
        DSC_CHECK_CTX(c);                                                                  \
        if (n == 0) return DSCKPT_OK;                                                      \
        if (!src || !dst) return ds_err(DSCKPT_EINVAL, #name ": NULL array");              \
        kern<<<dsc_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(src, dst, n);          \
        DSC_LAUNCHED(#name);                                                               \
        return DSCKPT_OK;                                                                  \
    }
CAST_ENTRY(dsc_cast_f32_to_bf16, k_f32_to_bf16, float, uint16_t)
CAST_ENTRY(dsc_cast_f32_to_f16, k_f32_to_f16, float, uint16_t)
CAST_ENTRY(dsc_cast_bf16_to_f32, k_bf16_to_f32, uint16_t, float)
CAST_ENTRY(dsc_cast_f16_to_f32, k_f16_to_f32, uint16_t, float)

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

extern "C" dsckpt_status dsc_adam_step(dsc_ctx *c, float *param, const float *grad, float *exp_avg,
                                       float *exp_avg_sq, size_t n, const dsc_adam_args *a) {
    DSC_CHECK_CTX(c);
    if (!a) return ds_err(DSCKPT_EINVAL, "dsc_adam_step: NULL arguments");
    if (n == 0) return DSCKPT_OK;
    if (!param || !grad || !exp_avg || !exp_avg_sq) return ds_err(DSCKPT_EINVAL, "dsc_adam_step: NULL array");
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
    return DSCKPT_OK;
}

__global__ void k_scale(float *__restrict__ x, size_t n, float s) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = __fmul_rn(x[i], s);
}

extern "C" dsckpt_status dsc_scale(dsc_ctx *c, float *x, size_t n, float s) {
    DSC_CHECK_CTX(c);
    if (n == 0) return DSCKPT_OK;
    if (!x) return ds_err(DSCKPT_EINVAL, "dsc_scale: NULL array");
    k_scale<<<dsc_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(x, n, s);
    DSC_LAUNCHED("dsc_scale");
    return DSCKPT_OK;
}

/* ---- sum of squares ----
 * One CUDA block of 32 x 8 threads handles 32 consecutive sum-blocks. The 32 rows
 * are read 32 columns at a time into a shared tile (coalesced: a warp reads 32
 * consecutive floats of one row); then thread x of warp 0 adds row x's 32 values to
 * its double accumulator in index order. */
#define SQ_ROWS 32
__global__ void __launch_bounds__(256) k_sumsq_blocks(const float *__restrict__ g, size_t n, size_t nblk,
                                                      double *__restrict__ part) {
    __shared__ float tile[SQ_ROWS][33];
    size_t row0 = (size_t)blockIdx.x * SQ_ROWS;
    int tx = threadIdx.x, ty = threadIdx.y;
    double acc = 0.0;
    size_t myrow = row0 + tx;
    size_t mylen = 0;
    if (myrow < nblk) {
        size_t s0 = myrow * DSC_SUMSQ_BLOCK;
        mylen = n - s0 < DSC_SUMSQ_BLOCK ? n - s0 : DSC_SUMSQ_BLOCK;
    }
    for (int k0 = 0; k0 < DSC_SUMSQ_BLOCK; k0 += 32) {
        for (int r = ty; r < SQ_ROWS; r += 8) {
            size_t idx = (row0 + r) * DSC_SUMSQ_BLOCK + k0 + tx;
            tile[r][tx] = (row0 + r < nblk && idx < n) ? g[idx] : 0.0f;
        }
        __syncthreads();
        if (ty == 0 && myrow < nblk) {
            for (int j = 0; j < 32 && (size_t)(k0 + j) < mylen; j++) {
                double v = (double)tile[tx][j];
                acc = __dadd_rn(acc, __dmul_rn(v, v));
            }
        }
        __syncthreads();
    }
    if (ty == 0 && myrow < nblk) part[myrow] = acc;
}

extern "C" dsckpt_status dsc_grad_sumsq(dsc_ctx *c, const float *g, size_t n, double *out_host) {
    DSC_CHECK_CTX(c);
    if (!out_host) return ds_err(DSCKPT_EINVAL, "dsc_grad_sumsq: NULL result");
    *out_host = 0.0;
    if (n == 0) return DSCKPT_OK;
    if (!g) return ds_err(DSCKPT_EINVAL, "dsc_grad_sumsq: NULL array");
    size_t nblk = (n + DSC_SUMSQ_BLOCK - 1) / DSC_SUMSQ_BLOCK;
    void *scr = NULL, *hp = NULL;
    dsckpt_status st = dsc_scratch(c, nblk * sizeof(double), &scr);
    if (st) return st;
    st = dsc_pinned(c, nblk * sizeof(double), &hp);
    if (st) return st;
    size_t grid = (nblk + SQ_ROWS - 1) / SQ_ROWS;
    if (grid > 0x7FFFFFFFu) return ds_err(DSCKPT_EINVAL, "dsc_grad_sumsq: %zu elements is too many", n);
    k_sumsq_blocks<<<(unsigned)grid, dim3(32, 8), 0, c->stream>>>(g, n, nblk, (double *)scr);
    DSC_LAUNCHED("dsc_grad_sumsq");
    DSC_CUDA(cudaMemcpyAsync(hp, scr, nblk * sizeof(double), cudaMemcpyDeviceToHost, c->stream),
             "cudaMemcpyAsync (sumsq)");
    DSC_CUDA(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize (sumsq)");
    const double *part = (const double *)hp;
    double total = 0.0;
    for (size_t b = 0; b < nblk; b++) total += part[b]; /* block order, as rt_grad_sumsq */
    *out_host = total;
    return DSCKPT_OK;
}

/* ---- inf / NaN ---- */
__global__ void k_inf_nan(const float *__restrict__ g, size_t n, int *flag) {
    int any = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        any |= (__float_as_uint(g[i]) & 0x7f800000u) == 0x7f800000u;
    if (__syncthreads_or(any) && threadIdx.x == 0) atomicOr(flag, 1);
}

extern "C" dsckpt_status dsc_has_inf_nan(dsc_ctx *c, const float *g, size_t n, bool *out_host) {
    DSC_CHECK_CTX(c);
    if (!out_host) return ds_err(DSCKPT_EINVAL, "dsc_has_inf_nan: NULL result");
    *out_host = false;
    if (n == 0) return DSCKPT_OK;
    if (!g) return ds_err(DSCKPT_EINVAL, "dsc_has_inf_nan: NULL array");
    void *scr = NULL, *hp = NULL;
    dsckpt_status st = dsc_scratch(c, sizeof(int), &scr);
    if (st) return st;
    st = dsc_pinned(c, sizeof(int), &hp);
    if (st) return st;
    DSC_CUDA(cudaMemsetAsync(scr, 0, sizeof(int), c->stream), "cudaMemsetAsync (inf/nan)");
    k_inf_nan<<<dsc_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(g, n, (int *)scr);
    DSC_LAUNCHED("dsc_has_inf_nan");
    DSC_CUDA(cudaMemcpyAsync(hp, scr, sizeof(int), cudaMemcpyDeviceToHost, c->stream), "cudaMemcpyAsync (inf/nan)");
    DSC_CUDA(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize (inf/nan)");
    *out_host = *(const int *)hp != 0;
    return DSCKPT_OK;
}
