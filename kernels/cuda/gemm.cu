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

static cudaDataType_t lt_type(dsc_dtype t) {
    switch (t) {
    case DSC_BF16: return CUDA_R_16BF;
    case DSC_F16: return CUDA_R_16F;
    default: return CUDA_R_32F;
    }
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
