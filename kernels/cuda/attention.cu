/*
 * attention.cu — causal self-attention on the GPU: cuBLAS strided-batched fp32 GEMMs
 * (one batch of NH heads per sequence, PEDANTIC math: no TF32) around a causal
 * softmax kernel, and the backward in the same shape. Layouts are the CPU model's:
 * qkv [B*T, 3C] (q, k, v of head h at columns h*hs, C + h*hs, 2C + h*hs), att
 * [B, NH, T, T], y [B*T, C].
 *
 * cuBLAS is column-major: a row-major matrix X [r, c] with row stride ld is the
 * column-major matrix Xᵀ [c, r] with leading dimension ld, so each row-major product
 * below is issued as its transpose.
 */
#include "common.cuh"

/* Row t of a [T, T] score block: p = softmax over keys 0..t, zeros past t. One
 * block per row; scores were already scaled. */
__global__ void k_causal_softmax(int T, float *__restrict__ att) {
    __shared__ float sh[32];
    int t = blockIdx.x % T;
    float *row = att + (size_t)blockIdx.x * T;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) mx = fmaxf(mx, row[j]);
    /* block max (fixed tree) */
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    if (lane == 0) sh[w] = mx;
    __syncthreads();
    mx = lane < nw ? sh[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    __syncthreads();
    float s = 0.0f;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) {
        float e = expf(__fsub_rn(row[j], mx));
        row[j] = e;
        s = __fadd_rn(s, e);
    }
    for (int o = 16; o > 0; o >>= 1) s = __fadd_rn(s, __shfl_xor_sync(0xffffffffu, s, o));
    if (lane == 0) sh[w] = s;
    __syncthreads();
    s = lane < nw ? sh[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) s = __fadd_rn(s, __shfl_xor_sync(0xffffffffu, s, o));
    float inv = __fdiv_rn(1.0f, s);
    for (int j = threadIdx.x; j < T; j += blockDim.x) row[j] = j <= t ? __fmul_rn(row[j], inv) : 0.0f;
}

/* In place on dp: ds = p * (dp - sum_j p_j dp_j) * scale, over keys 0..t. */
__global__ void k_causal_softmax_bwd(int T, const float *__restrict__ att, float *__restrict__ dp, float scale) {
    __shared__ float sh[32];
    int t = blockIdx.x % T;
    const float *p = att + (size_t)blockIdx.x * T;
    float *d = dp + (size_t)blockIdx.x * T;
    float s = 0.0f;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) s = __fadd_rn(s, __fmul_rn(p[j], d[j]));
    for (int o = 16; o > 0; o >>= 1) s = __fadd_rn(s, __shfl_xor_sync(0xffffffffu, s, o));
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    if (lane == 0) sh[w] = s;
    __syncthreads();
    s = lane < nw ? sh[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) s = __fadd_rn(s, __shfl_xor_sync(0xffffffffu, s, o));
    for (int j = threadIdx.x; j < T; j += blockDim.x)
        d[j] = j <= t ? __fmul_rn(__fmul_rn(p[j], __fsub_rn(d[j], s)), scale) : 0.0f;
}

static dsc_status check_shape(const char *what, int B, int T, int C, int NH) {
    if (B < 0 || T < 0 || C < 1 || NH < 1 || C % NH)
        return dsc_err(DSC_EINVAL, "%s: bad shape B=%d T=%d C=%d NH=%d", what, B, T, C, NH);
    if ((long long)NH * T * T > 0x7FFFFFFFll || (long long)B * T * 3 * C > 0x7FFFFFFFll)
        return dsc_err(DSC_EINVAL, "%s: B=%d T=%d C=%d NH=%d is too large", what, B, T, C, NH);
    return DSC_OK;
}

static unsigned softmax_threads(int T) { return T >= 512 ? 512u : T >= 128 ? 128u : 32u; }

extern "C" dsc_status dsc_attention_fwd(dsc_ctx *c, int B, int T, int C, int NH, const float *qkv, float *att,
                                           float *y) {
    DSC_CHECK_CTX(c);
    dsc_status st = check_shape("dsc_attention_fwd", B, T, C, NH);
    if (st) return st;
    if (B == 0 || T == 0) return DSC_OK;
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs), one = 1.0f, zero = 0.0f;
    long long sTT = (long long)T * T;
    for (int b = 0; b < B; b++) {
        const float *q = qkv + (size_t)b * T * C3, *k = q + C, *v = q + 2 * C;
        float *ab = att + (size_t)b * NH * sTT;
        /* S [T, T] = scale * Q Kᵀ, issued as Sᵀ = K Qᵀ */
        DSC_BLAS(cublasSgemmStridedBatched(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, &scale, k, C3, hs, q, C3,
                                           hs, &zero, ab, T, sTT, NH),
                 "cublasSgemmStridedBatched (QK^T)");
        k_causal_softmax<<<NH * T, softmax_threads(T), 0, c->stream>>>(T, ab);
        DSC_LAUNCHED("dsc_attention_fwd (softmax)");
        /* Y [T, hs] = P V, issued as Yᵀ = Vᵀ Pᵀ */
        DSC_BLAS(cublasSgemmStridedBatched(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, &one, v, C3, hs, ab, T, sTT,
                                           &zero, y + (size_t)b * T * C, C, hs, NH),
                 "cublasSgemmStridedBatched (PV)");
    }
    return DSC_OK;
}

extern "C" dsc_status dsc_attention_bwd(dsc_ctx *c, int B, int T, int C, int NH, const float *qkv,
                                           const float *att, const float *dy, float *dqkv) {
    DSC_CHECK_CTX(c);
    dsc_status st = check_shape("dsc_attention_bwd", B, T, C, NH);
    if (st) return st;
    if (B == 0 || T == 0) return DSC_OK;
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs), one = 1.0f, zero = 0.0f;
    long long sTT = (long long)T * T;
    void *scr = NULL;
    st = dsc_scratch(c, (size_t)NH * sTT * sizeof(float), &scr);
    if (st) return st;
    float *dp = (float *)scr;
    for (int b = 0; b < B; b++) {
        const float *q = qkv + (size_t)b * T * C3, *k = q + C, *v = q + 2 * C;
        const float *ab = att + (size_t)b * NH * sTT;
        const float *dyb = dy + (size_t)b * T * C;
        float *dq = dqkv + (size_t)b * T * C3, *dk = dq + C, *dv = dq + 2 * C;
        /* dP [T, T] = dY Vᵀ, issued as dPᵀ = V dYᵀ */
        DSC_BLAS(cublasSgemmStridedBatched(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, &one, v, C3, hs, dyb, C, hs,
                                           &zero, dp, T, sTT, NH),
                 "cublasSgemmStridedBatched (dY V^T)");
        /* dV [T, hs] = Pᵀ dY, issued as dVᵀ = dYᵀ P */
        DSC_BLAS(cublasSgemmStridedBatched(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, &one, dyb, C, hs, ab, T, sTT,
                                           &zero, dv, C3, hs, NH),
                 "cublasSgemmStridedBatched (P^T dY)");
        k_causal_softmax_bwd<<<NH * T, softmax_threads(T), 0, c->stream>>>(T, ab, dp, scale);
        DSC_LAUNCHED("dsc_attention_bwd (softmax)");
        /* dQ [T, hs] = dS K, issued as dQᵀ = Kᵀ dSᵀ */
        DSC_BLAS(cublasSgemmStridedBatched(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, &one, k, C3, hs, dp, T, sTT,
                                           &zero, dq, C3, hs, NH),
                 "cublasSgemmStridedBatched (dS K)");
        /* dK [T, hs] = dSᵀ Q, issued as dKᵀ = Qᵀ dS */
        DSC_BLAS(cublasSgemmStridedBatched(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, &one, q, C3, hs, dp, T, sTT,
                                           &zero, dk, C3, hs, NH),
                 "cublasSgemmStridedBatched (dS^T Q)");
    }
    return DSC_OK;
}
