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

/* One strided-batched product, column-major as cuBLAS takes it: fp32 operands
 * (PEDANTIC fp32, no TF32), or 16-bit operands (packed copies) with fp32
 * accumulation and fp32 output. */
static dsc_status bgemm(dsc_ctx *c, dsc_dtype via, cublasOperation_t oa, cublasOperation_t ob, int m, int n, int k,
                        float alpha, const void *A, int lda, long long sA, const void *B, int ldb, long long sB,
                        float *C, int ldc, long long sC, int batch, const char *what) {
    const float zero = 0.0f;
    if (via == DSC_F32)
        DSC_BLAS(cublasSgemmStridedBatched(c->blas, oa, ob, m, n, k, &alpha, (const float *)A, lda, sA,
                                           (const float *)B, ldb, sB, &zero, C, ldc, sC, batch),
                 what);
    else {
        /* The context's handle is PEDANTIC (its fp32 products: no TF32, no shortcuts),
         * which may keep 16-bit operands off the tensor cores; these products take the
         * default math, with fp32 accumulation all the same. */
        cudaDataType_t t = via == DSC_BF16 ? CUDA_R_16BF : CUDA_R_16F;
        DSC_BLAS(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
        int s = (int)cublasGemmStridedBatchedEx(c->blas, oa, ob, m, n, k, &alpha, A, t, lda, sA, B, t, ldb, sB, &zero,
                                                C, CUDA_R_32F, ldc, sC, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        DSC_BLAS(cublasSetMathMode(c->blas, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
        DSC_BLAS(s, what);
    }
    return DSC_OK;
}

/* The operand a product reads: src itself (fp32), or src's rows x T packed into the
 * 16-bit buf. */
static dsc_status operand(dsc_ctx *c, dsc_dtype via, const float *src, uint16_t *buf, size_t rows, int T,
                          const void **out) {
    *out = src;
    if (via == DSC_F32) return DSC_OK;
    *out = buf;
    return dsc_pack16(c, src, (size_t)T, buf, (size_t)T, rows, (size_t)T, via);
}

/* Scratch of the 16-bit path, carved from the context's one scratch area, each
 * piece 256-byte aligned. */
static size_t a256(size_t b) { return (b + 255) / 256 * 256; }

static dsc_status attention_fwd(dsc_ctx *c, int B, int T, int C, int NH, const float *qkv, float *att, float *y,
                                dsc_dtype via) {
    DSC_CHECK_CTX(c);
    dsc_status st = check_shape("dsc_attention_fwd", B, T, C, NH);
    if (st) return st;
    if (via != DSC_F32 && via != DSC_BF16 && via != DSC_F16) return dsc_err(DSC_EINVAL, "dsc_attention_fwd: bad type");
    if (B == 0 || T == 0) return DSC_OK;
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    long long sTT = (long long)T * T;
    const void *in = qkv; /* the operands the GEMMs read: qkv itself, or its 16-bit copy */
    uint16_t *p16 = NULL;
    size_t es = via == DSC_F32 ? sizeof(float) : sizeof(uint16_t);
    if (via != DSC_F32) {
        size_t nq = (size_t)B * T * C3;
        void *scr = NULL;
        if ((st = dsc_scratch(c, a256(nq * 2) + (size_t)NH * sTT * 2, &scr))) return st;
        uint16_t *q16 = (uint16_t *)scr;
        p16 = (uint16_t *)((char *)scr + a256(nq * 2));
        if ((st = dsc_pack16(c, qkv, (size_t)C3, q16, (size_t)C3, (size_t)B * T, (size_t)C3, via))) return st;
        in = q16;
    }
    for (int b = 0; b < B; b++) {
        const char *q = (const char *)in + (size_t)b * T * C3 * es, *k = q + C * es, *v = q + 2 * C * es;
        float *ab = att + (size_t)b * NH * sTT;
        /* S [T, T] = scale * Q Kᵀ, issued as Sᵀ = K Qᵀ */
        if ((st = bgemm(c, via, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, scale, k, C3, hs, q, C3, hs, ab, T, sTT, NH,
                        "strided-batched GEMM (QK^T)")))
            return st;
        k_causal_softmax<<<NH * T, softmax_threads(T), 0, c->stream>>>(T, ab);
        DSC_LAUNCHED("dsc_attention_fwd (softmax)");
        const void *pb; /* P, rounded for its product with V */
        if ((st = operand(c, via, ab, p16, (size_t)NH * T, T, &pb))) return st;
        /* Y [T, hs] = P V, issued as Yᵀ = Vᵀ Pᵀ */
        if ((st = bgemm(c, via, CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, 1.0f, v, C3, hs, pb, T, sTT, y + (size_t)b * T * C,
                        C, hs, NH, "strided-batched GEMM (PV)")))
            return st;
    }
    return DSC_OK;
}

extern "C" dsc_status dsc_attention_fwd(dsc_ctx *c, int B, int T, int C, int NH, const float *qkv, float *att,
                                           float *y) {
    return attention_fwd(c, B, T, C, NH, qkv, att, y, DSC_F32);
}

extern "C" dsc_status dsc_attention_fwd_via(dsc_ctx *c, int B, int T, int C, int NH, const float *qkv, float *att,
                                               float *y, dsc_dtype via) {
    return attention_fwd(c, B, T, C, NH, qkv, att, y, via);
}

static dsc_status attention_bwd(dsc_ctx *c, int B, int T, int C, int NH, const float *qkv, const float *att,
                                const float *dy, float *dqkv, dsc_dtype via) {
    DSC_CHECK_CTX(c);
    dsc_status st = check_shape("dsc_attention_bwd", B, T, C, NH);
    if (st) return st;
    if (via != DSC_F32 && via != DSC_BF16 && via != DSC_F16) return dsc_err(DSC_EINVAL, "dsc_attention_bwd: bad type");
    if (B == 0 || T == 0) return DSC_OK;
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    long long sTT = (long long)T * T;
    size_t es = via == DSC_F32 ? sizeof(float) : sizeof(uint16_t);
    size_t ndp = (size_t)NH * sTT, nq = (size_t)B * T * C3, ny = (size_t)B * T * C;
    size_t need = a256(ndp * 4) + (via == DSC_F32 ? 0 : a256(nq * 2) + a256(ny * 2) + a256(ndp * 2) + ndp * 2);
    void *scr = NULL;
    if ((st = dsc_scratch(c, need, &scr))) return st;
    float *dp = (float *)scr;
    const void *in = qkv, *dyin = dy;
    uint16_t *p16 = NULL, *ds16 = NULL;
    if (via != DSC_F32) {
        char *at = (char *)scr + a256(ndp * 4);
        uint16_t *q16 = (uint16_t *)at, *dy16 = (uint16_t *)(at + a256(nq * 2));
        p16 = (uint16_t *)(at + a256(nq * 2) + a256(ny * 2));
        ds16 = (uint16_t *)((char *)p16 + a256(ndp * 2));
        if ((st = dsc_pack16(c, qkv, (size_t)C3, q16, (size_t)C3, (size_t)B * T, (size_t)C3, via))) return st;
        if ((st = dsc_pack16(c, dy, (size_t)C, dy16, (size_t)C, (size_t)B * T, (size_t)C, via))) return st;
        in = q16, dyin = dy16;
    }
    for (int b = 0; b < B; b++) {
        const char *q = (const char *)in + (size_t)b * T * C3 * es, *k = q + C * es, *v = q + 2 * C * es;
        const float *ab = att + (size_t)b * NH * sTT;
        const char *dyb = (const char *)dyin + (size_t)b * T * C * es;
        float *dq = dqkv + (size_t)b * T * C3, *dk = dq + C, *dv = dq + 2 * C;
        const void *pb, *dsb;
        if ((st = operand(c, via, ab, p16, (size_t)NH * T, T, &pb))) return st;
        /* dP [T, T] = dY Vᵀ, issued as dPᵀ = V dYᵀ */
        if ((st = bgemm(c, via, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, 1.0f, v, C3, hs, dyb, C, hs, dp, T, sTT, NH,
                        "strided-batched GEMM (dY V^T)")))
            return st;
        /* dV [T, hs] = Pᵀ dY, issued as dVᵀ = dYᵀ P */
        if ((st = bgemm(c, via, CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, 1.0f, dyb, C, hs, pb, T, sTT, dv, C3, hs, NH,
                        "strided-batched GEMM (P^T dY)")))
            return st;
        k_causal_softmax_bwd<<<NH * T, softmax_threads(T), 0, c->stream>>>(T, ab, dp, scale);
        DSC_LAUNCHED("dsc_attention_bwd (softmax)");
        if ((st = operand(c, via, dp, ds16, (size_t)NH * T, T, &dsb))) return st; /* dS, for K and Q */
        /* dQ [T, hs] = dS K, issued as dQᵀ = Kᵀ dSᵀ */
        if ((st = bgemm(c, via, CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, 1.0f, k, C3, hs, dsb, T, sTT, dq, C3, hs, NH,
                        "strided-batched GEMM (dS K)")))
            return st;
        /* dK [T, hs] = dSᵀ Q, issued as dKᵀ = Qᵀ dS */
        if ((st = bgemm(c, via, CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, 1.0f, q, C3, hs, dsb, T, sTT, dk, C3, hs, NH,
                        "strided-batched GEMM (dS^T Q)")))
            return st;
    }
    return DSC_OK;
}

extern "C" dsc_status dsc_attention_bwd(dsc_ctx *c, int B, int T, int C, int NH, const float *qkv,
                                           const float *att, const float *dy, float *dqkv) {
    return attention_bwd(c, B, T, C, NH, qkv, att, dy, dqkv, DSC_F32);
}

extern "C" dsc_status dsc_attention_bwd_via(dsc_ctx *c, int B, int T, int C, int NH, const float *qkv,
                                               const float *att, const float *dy, float *dqkv, dsc_dtype via) {
    return attention_bwd(c, B, T, C, NH, qkv, att, dy, dqkv, via);
}
