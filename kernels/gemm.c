/*
 * gemm.c — the fp32 matrix product (gemm.h): an OpenMP fast path on MR x NR register
 * tiles over DS_GEMM_KC-deep slices of K, and the plain reference.
 *
 * Element (i, j) is always summed over p in increasing order within a slice and slice
 * by slice, whatever the tiling of M and N, so edge tiles give the same bits as
 * interior ones and the result does not depend on the thread count. Products with Bᵀ
 * first transpose B panel by panel into a scratch buffer.
 *
 * A build with -DDSCKPT_BLAS=ON hands every product whose A is row- or column-major
 * to the system BLAS (cblas_sgemm, OpenBLAS on Debian). BLAS runs single-threaded
 * and the product is split over OpenMP's threads here, in row or column bands of C,
 * one cblas_sgemm per band: the step then has one pool of threads, not OpenMP's
 * and OpenBLAS's competing for the same cores (OpenBLAS's workers spin for a while
 * after each call, which on a 2-core machine stalls every OpenMP region between
 * GEMMs; measured in bench/RESULTS.md, issue 15). Inside a parallel region the
 * product's bands run in turn on the calling thread. That product does NOT follow
 * the summation order of gemm.h (BLAS blocks K its own way): results agree with the
 * reference to rounding, and training is reproducible for one build and world size
 * at any thread count, but not bit-identical to the native build. The references never use BLAS.
 */
#include "gemm.h"

#include "kernels_internal.h"

#include <stdint.h>
#include <string.h>

#ifdef DSCKPT_BLAS
#include <cblas.h>
#include <limits.h>
#include <omp.h>
#include <pthread.h>
#endif

enum { MR = 6, NR = 8, MC = 48, NC = 64, KC = DS_GEMM_KC, NP = 256, NP_LD = NP + 16 };

/* c[0..MR, 0..NR) (+)= a-strip · b-strip over kc; add = 0 overwrites c. */
static inline void ukernel_full(int kc, const float *restrict a, ptrdiff_t ars, ptrdiff_t acs,
                                const float *restrict b, ptrdiff_t ldb, float *restrict c, ptrdiff_t ldc, int add) {
    float acc[MR][NR];
    memset(acc, 0, sizeof acc);
    for (int p = 0; p < kc; p++) {
        const float *bp = b + p * ldb;
        const float *ap = a + p * acs;
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            float av = ap[i * ars];
#pragma omp simd
            for (int j = 0; j < NR; j++) acc[i][j] += av * bp[j];
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        if (add) {
#pragma omp simd
            for (int j = 0; j < NR; j++) c[i * ldc + j] += acc[i][j];
        } else {
#pragma omp simd
            for (int j = 0; j < NR; j++) c[i * ldc + j] = acc[i][j];
        }
    }
}

/* The same on a partial tile (mr <= MR, nr <= NR), with the same summation order. */
static void ukernel_edge(int mr, int nr, int kc, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                         ptrdiff_t ldb, float *c, ptrdiff_t ldc, int add) {
    float acc[MR][NR];
    memset(acc, 0, sizeof acc);
    for (int p = 0; p < kc; p++)
        for (int i = 0; i < mr; i++) {
            float av = a[i * ars + p * acs];
            for (int j = 0; j < nr; j++) acc[i][j] += av * b[p * ldb + j];
        }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) c[i * ldc + j] = add ? c[i * ldc + j] + acc[i][j] : acc[i][j];
}

#ifdef DSCKPT_BLAS
static pthread_once_t g_blas_once = PTHREAD_ONCE_INIT;

static void blas_one_thread(void) { openblas_set_num_threads(1); }

/* Bands of C are multiples of BLAS_BAND rows or columns (whole BLAS micro-tiles);
 * a product gets one band per BLAS_BAND_WORK multiply-adds, at most BLAS_BANDS. */
enum { BLAS_BAND = 16, BLAS_BANDS = 8 };
#define BLAS_BAND_WORK ((int64_t)1 << 21)

/* C = (add ? C : 0) + op(A)·op(B) through cblas_sgemm when the strides fit its
 * layouts; 0 when they do not (the native path then runs). The larger of M and N is
 * cut into bands, each one single-threaded call, spread over OpenMP's threads (run
 * in turn inside a parallel region). The bands depend on the shape alone, never on
 * the thread count: OpenBLAS picks its kernel by a call's size (small products take
 * another summation path), so the same calls give the same bits at any count. */
static int blas_gemm(int M, int N, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                     ptrdiff_t brs, int b_trans, float *c, ptrdiff_t ldc, int add) {
    if (M <= 0 || N <= 0 || K <= 0 || brs > INT_MAX || ldc > INT_MAX || ldc < N) return 0;
    CBLAS_TRANSPOSE ta;
    ptrdiff_t lda;
    if (acs == 1 && ars >= K && ars <= INT_MAX) {
        ta = CblasNoTrans;
        lda = ars;
    } else if (ars == 1 && acs >= M && acs <= INT_MAX) {
        ta = CblasTrans;
        lda = acs;
    } else {
        return 0;
    }
    if (brs < (b_trans ? K : N)) return 0;
    pthread_once(&g_blas_once, blas_one_thread);
    CBLAS_TRANSPOSE tb = b_trans ? CblasTrans : CblasNoTrans;
    float beta = add ? 1.0f : 0.0f;
    int split_m = M >= N, len = split_m ? M : N, units = len / BLAS_BAND;
    int64_t nb = (int64_t)M * N * K / BLAS_BAND_WORK;
    int nbands = (int)K_MIN(K_MIN(nb, (int64_t)BLAS_BANDS), (int64_t)units);
    if (nbands <= 1) {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, a, (int)lda, b, (int)brs, beta, c, (int)ldc);
        return 1;
    }
    /* Whole BLAS_BAND units spread evenly, the remainder rows on the last band. */
#pragma omp parallel for schedule(static)
    for (int t = 0; t < nbands; t++) {
        int u0 = (int)((int64_t)units * t / nbands), u1 = (int)((int64_t)units * (t + 1) / nbands);
        int i0 = u0 * BLAS_BAND, i1 = t == nbands - 1 ? len : u1 * BLAS_BAND;
        if (split_m) { /* rows i0..i1 of A and C */
            const float *ap = ta == CblasNoTrans ? a + (ptrdiff_t)i0 * lda : a + i0;
            cblas_sgemm(CblasRowMajor, ta, tb, i1 - i0, N, K, 1.0f, ap, (int)lda, b, (int)brs, beta,
                        c + (ptrdiff_t)i0 * ldc, (int)ldc);
        } else { /* columns i0..i1 of B and C */
            const float *bp = b_trans ? b + (ptrdiff_t)i0 * brs : b + i0;
            cblas_sgemm(CblasRowMajor, ta, tb, M, i1 - i0, K, 1.0f, a, (int)lda, bp, (int)brs, beta, c + i0,
                        (int)ldc);
        }
    }
    return 1;
}
#endif

/* Parallel over MC x NC tiles of C; each tile is computed by one thread. */
void ds_gemm(int M, int N, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b, ptrdiff_t ldb,
             float *c, ptrdiff_t ldc, int add) {
#ifdef DSCKPT_BLAS
    if (blas_gemm(M, N, K, a, ars, acs, b, ldb, 0, c, ldc, add)) return;
#endif
    int nmt = (M + MC - 1) / MC, nnt = (N + NC - 1) / NC;
    int64_t ntiles = (int64_t)nmt * nnt;
    if (K == 0) { /* nothing to sum: C = add ? C : 0 */
        if (!add)
            for (int i = 0; i < M; i++) memset(c + (ptrdiff_t)i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
#pragma omp parallel for schedule(static) if (ntiles > 1 && (int64_t)M * N * K >= 32 * PAR_MIN_WORK)
    for (int64_t t = 0; t < ntiles; t++) {
        /* Consecutive tiles share a column panel of B, which then stays in cache. */
        int i0 = (int)(t % nmt) * MC, j0 = (int)(t / nmt) * NC;
        int i1 = K_MIN(i0 + MC, M), j1 = K_MIN(j0 + NC, N);
        for (int k0 = 0; k0 < K; k0 += KC) {
            int kc = K_MIN(KC, K - k0);
            int add_here = add || k0 > 0;
            for (int j = j0; j < j1; j += NR) {
                for (int i = i0; i < i1; i += MR) {
                    const float *ap = a + (ptrdiff_t)i * ars + (ptrdiff_t)k0 * acs;
                    const float *bp = b + (ptrdiff_t)k0 * ldb + j;
                    float *cp = c + (ptrdiff_t)i * ldc + j;
                    if (i + MR <= i1 && j + NR <= j1)
                        ukernel_full(kc, ap, ars, acs, bp, ldb, cp, ldc, add_here);
                    else
                        ukernel_edge(K_MIN(MR, i1 - i), K_MIN(NR, j1 - j), kc, ap, ars, acs, bp, ldb, cp, ldc,
                                     add_here);
                }
            }
        }
    }
}

size_t ds_gemm_bt_panel_floats(int K) { return (size_t)(K > 0 ? K : 1) * NP_LD; }

void ds_gemm_bt(int M, int N, int K, const float *a, ptrdiff_t lda, const float *bt, ptrdiff_t ldbt, float *c,
                ptrdiff_t ldc, int add, float *panel) {
#ifdef DSCKPT_BLAS
    if (blas_gemm(M, N, K, a, lda, 1, bt, ldbt, 1, c, ldc, add)) return;
#endif
    if (!panel) { /* no scratch: the reference's loop, same bits */
        ds_gemm_bt_ref(M, N, K, a, lda, bt, ldbt, c, ldc, add, NULL);
        return;
    }
    for (int n0 = 0; n0 < N; n0 += NP) {
        int np = K_MIN(NP, N - n0);
        int nkb = (K + 31) / 32;
#pragma omp parallel for schedule(static) if (nkb > 1 && (int64_t)np * K >= PAR_MIN_WORK)
        for (int kb = 0; kb < nkb; kb++) {
            int k0 = kb * 32, k1 = K_MIN(k0 + 32, K);
            for (int j = 0; j < np; j++) {
                const float *src = bt + (ptrdiff_t)(n0 + j) * ldbt;
                for (int k = k0; k < k1; k++) panel[(ptrdiff_t)k * NP_LD + j] = src[k];
            }
        }
        ds_gemm(M, np, K, a, lda, 1, panel, NP_LD, c + n0, ldc, add);
    }
}

/* ---- references ---- */

/* B(p, j) = b[p*brs + j*bcs]; the summation order of gemm.h, one element at a time. */
static void gemm_ref(int M, int N, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                     ptrdiff_t brs, ptrdiff_t bcs, float *c, ptrdiff_t ldc, int add) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float *cij = c + (ptrdiff_t)i * ldc + j;
            if (K == 0 && !add) *cij = 0.0f;
            for (int k0 = 0; k0 < K; k0 += KC) {
                int k1 = K_MIN(k0 + KC, K);
                float s = 0.0f;
                for (int p = k0; p < k1; p++) s += a[(ptrdiff_t)i * ars + (ptrdiff_t)p * acs] * b[p * brs + j * bcs];
                *cij = (add || k0 > 0) ? *cij + s : s;
            }
        }
}

void ds_gemm_ref(int M, int N, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                 ptrdiff_t ldb, float *c, ptrdiff_t ldc, int add) {
    gemm_ref(M, N, K, a, ars, acs, b, ldb, 1, c, ldc, add);
}

void ds_gemm_bt_ref(int M, int N, int K, const float *a, ptrdiff_t lda, const float *bt, ptrdiff_t ldbt, float *c,
                    ptrdiff_t ldc, int add, float *panel) {
    (void)panel;
    gemm_ref(M, N, K, a, lda, 1, bt, 1, ldbt, c, ldc, add);
}
