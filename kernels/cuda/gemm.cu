/*
 * gemm.cu — matrix products through cuBLASLt: bf16/fp16 operands with fp32
 * accumulation (fp32 or 16-bit output), and pure fp32 (CUBLAS_COMPUTE_32F, no TF32).
 *
 * The API is row-major (the model's layout); cuBLASLt is column-major, so
 * C[M, N] = op(A) op(B) is issued as Cᵀ[N, M] = op(B)ᵀ op(A)ᵀ, where each stored
 * row-major matrix is read as its column-major transpose.
 *
 * The algorithm is cuBLASLt's first heuristic for the shape; for a given shape,
 * device and library version the choice is fixed, so results repeat bit for bit.
 */
#include "common.cuh"

#include <limits.h>

static cudaDataType_t lt_type(dsc_dtype t) {
    switch (t) {
    case DSC_BF16: return CUDA_R_16BF;
    case DSC_F16: return CUDA_R_16F;
    default: return CUDA_R_32F;
    }
}

/* The largest power of two up to 256 that divides p's address: cuBLASLt's heuristic
 * assumes 256-byte aligned matrices unless told, and an algorithm picked on that
 * assumption fails on a matrix that starts inside a row of another (an attention
 * head, a slice of qkv). */
static uint32_t align_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t r = 256;
    while (r > 1 && a % r) r >>= 1;
    return r;
}

extern "C" dsc_status dsc_gemm(dsc_ctx *c, bool ta, bool tb, int M, int N, int K, float alpha, const void *A,
                                  int lda, const void *B, int ldb, float beta, void *C, int ldc, dsc_dtype ab,
                                  dsc_dtype ct) {
    DSC_CHECK_CTX(c);
    if (M < 0 || N < 0 || K < 0) return dsc_err(DSC_EINVAL, "dsc_gemm: bad shape M=%d N=%d K=%d", M, N, K);
    if (ab != DSC_F32 && ab != DSC_BF16 && ab != DSC_F16) return dsc_err(DSC_EINVAL, "dsc_gemm: bad operand type");
    if (ct != DSC_F32 && ct != ab) return dsc_err(DSC_EINVAL, "dsc_gemm: output type must be fp32 or the operands'");
    /* Row strides of the stored matrices: A is [M, K] or [K, M], B [K, N] or [N, K]. */
    if (ldc < (N > 0 ? N : 1) || lda < ((ta ? M : K) > 0 ? (ta ? M : K) : 1) ||
        ldb < ((tb ? K : N) > 0 ? (tb ? K : N) : 1))
        return dsc_err(DSC_EINVAL, "dsc_gemm: leading dimension too small (lda=%d ldb=%d ldc=%d)", lda, ldb, ldc);
    if (M == 0 || N == 0) return DSC_OK;
    if (K == 0) return dsc_err(DSC_EINVAL, "dsc_gemm: K = 0 (nothing to sum) is not supported");
    if (!A || !B || !C) return dsc_err(DSC_EINVAL, "dsc_gemm: NULL matrix");

    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    dsc_status st = DSC_OK;
    int s;
    cublasComputeType_t ctype = CUBLAS_COMPUTE_32F;
    cudaDataType_t at = lt_type(ab), cty = lt_type(ct);
    /* column-major operands: first = B (rows N of Cᵀ), second = A */
    cublasOperation_t o1 = tb ? CUBLAS_OP_T : CUBLAS_OP_N, o2 = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    uint64_t r1 = tb ? (uint64_t)K : (uint64_t)N, c1 = tb ? (uint64_t)N : (uint64_t)K; /* stored, col-major */
    uint64_t r2 = ta ? (uint64_t)M : (uint64_t)K, c2 = ta ? (uint64_t)K : (uint64_t)M;
    cublasLtMatmulHeuristicResult_t heur;
    int nres = 0;
    size_t ws = c->lt_ws_bytes;
#define LT(call, what)                             \
    do {                                           \
        s = (int)(call);                           \
        if (s != 0) {                              \
            st = dsc_blas_fail(s, what);           \
            goto done;                             \
        }                                          \
    } while (0)
    LT(cublasLtMatmulDescCreate(&op, ctype, CUDA_R_32F), "cublasLtMatmulDescCreate");
    LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &o1, sizeof o1), "cublasLt TRANSA");
    LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &o2, sizeof o2), "cublasLt TRANSB");
    LT(cublasLtMatrixLayoutCreate(&la, at, r1, c1, ldb), "cublasLtMatrixLayoutCreate (B)");
    LT(cublasLtMatrixLayoutCreate(&lb, at, r2, c2, lda), "cublasLtMatrixLayoutCreate (A)");
    LT(cublasLtMatrixLayoutCreate(&lc, cty, (uint64_t)N, (uint64_t)M, ldc), "cublasLtMatrixLayoutCreate (C)");
    LT(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws),
       "cublasLt workspace preference");
    {
        uint32_t a1 = align_of(B), a2 = align_of(A), ac = align_of(C); /* column-major order: B first */
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a1, sizeof a1),
           "cublasLt alignment preference (B)");
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &a2, sizeof a2),
           "cublasLt alignment preference (A)");
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof ac),
           "cublasLt alignment preference (C)");
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof ac),
           "cublasLt alignment preference (D)");
    }
    LT(cublasLtMatmulAlgoGetHeuristic(c->lt, op, la, lb, lc, lc, pref, 1, &heur, &nres),
       "cublasLtMatmulAlgoGetHeuristic");
    if (nres < 1) {
        st = dsc_err(DSC_ECUDA, "cuBLASLt has no algorithm for M=%d N=%d K=%d", M, N, K);
        goto done;
    }
    LT(cublasLtMatmul(c->lt, op, &alpha, B, la, A, lb, &beta, C, lc, C, lc, &heur.algo, c->lt_ws, ws, c->stream),
       "cublasLtMatmul");
#undef LT
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
    return st;
}

/* Row stride of a packed 16-bit copy: cols rounded up to 8 elements (16 bytes, as
 * cuBLASLt's tensor-core kernels want). */
static size_t ld16(int cols) { return ((size_t)cols + 7) / 8 * 8; }

extern "C" dsc_status dsc_gemm_f32_via(dsc_ctx *c, bool ta, bool tb, int M, int N, int K, float alpha,
                                          const float *A, int lda, const float *B, int ldb, float beta, float *C,
                                          int ldc, dsc_dtype via) {
    DSC_CHECK_CTX(c);
    if (via == DSC_F32) return dsc_gemm(c, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, DSC_F32, DSC_F32);
    if (via != DSC_BF16 && via != DSC_F16) return dsc_err(DSC_EINVAL, "dsc_gemm_f32_via: bad operand type");
    if (M < 0 || N < 0 || K <= 0) return dsc_err(DSC_EINVAL, "dsc_gemm_f32_via: bad shape M=%d N=%d K=%d", M, N, K);
    if (M == 0 || N == 0) return DSC_OK;
    if (!A || !B) return dsc_err(DSC_EINVAL, "dsc_gemm_f32_via: NULL matrix");
    /* The stored shapes: A is [M, K] (or [K, M] when ta), B [K, N] (or [N, K]). */
    int ra = ta ? K : M, ca = ta ? M : K, rb = tb ? N : K, cb = tb ? K : N;
    if (lda < ca || ldb < cb) return dsc_err(DSC_EINVAL, "dsc_gemm_f32_via: leading dimension too small");
    size_t la = ld16(ca), lb = ld16(cb);
    if (la > INT_MAX || lb > INT_MAX) return dsc_err(DSC_EINVAL, "dsc_gemm_f32_via: rows too long");
    size_t offb = ((size_t)ra * la * sizeof(uint16_t) + 255) / 256 * 256; /* B's copy 256-byte aligned */
    void *scr = NULL;
    dsc_status st = dsc_scratch(c, offb + (size_t)rb * lb * sizeof(uint16_t), &scr);
    if (st != DSC_OK) return st;
    uint16_t *a16 = (uint16_t *)scr, *b16 = (uint16_t *)((char *)scr + offb);
    if ((st = dsc_pack16(c, A, (size_t)lda, a16, la, (size_t)ra, (size_t)ca, via)) != DSC_OK) return st;
    if ((st = dsc_pack16(c, B, (size_t)ldb, b16, lb, (size_t)rb, (size_t)cb, via)) != DSC_OK) return st;
    return dsc_gemm(c, ta, tb, M, N, K, alpha, a16, (int)la, b16, (int)lb, beta, C, ldc, via, DSC_F32);
}
