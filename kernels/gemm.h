/*
 * gemm.h — the fp32 matrix product of the training step (CPU, OpenMP).
 *
 * Summation order (part of the definition, so that the fast path, the reference and
 * every thread count give the same bits): element (i, j) of A·B is summed over p in
 * slices [k0, k0 + DS_GEMM_KC) of K, in increasing p inside a slice, each slice's
 * partial sum starting from 0.0f; the first slice's sum is stored (or added to C
 * when add != 0), every later slice's sum is added to C. All float, round to nearest,
 * no fused multiply-add.
 *
 * Strides are in elements. A is read through arbitrary row/column strides, so Aᵀ·B
 * needs no copy; B is row-major; C is row-major with row stride ldc. M, N, K >= 0
 * (K == 0: C = add ? C : 0). C must not overlap A or B.
 */
#ifndef DSCKPT_KERNELS_GEMM_H
#define DSCKPT_KERNELS_GEMM_H

#include <stddef.h>

#define DS_GEMM_KC 256 /* the K-slice of the summation order above */

/* C[M, N] = (add ? C : 0) + A·B, A(i, p) = a[i*ars + p*acs], B(p, j) = b[p*ldb + j]. */
void ds_gemm(int M, int N, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b, ptrdiff_t ldb,
             float *c, ptrdiff_t ldc, int add);
void ds_gemm_ref(int M, int N, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                 ptrdiff_t ldb, float *c, ptrdiff_t ldc, int add);

/* C[M, N] = (add ? C : 0) + A·Btᵀ with A row-major [M, K] (row stride lda) and Bt
 * row-major [N, K] (row stride ldbt); same summation order as ds_gemm. The fast path
 * transposes Bt panel by panel into `panel`, a scratch of ds_gemm_bt_panel_floats(K)
 * floats (the reference ignores it and may be given NULL). With panel NULL the fast
 * path runs the reference's loop (the same bits, slower) unless BLAS takes the
 * product (-DDSCKPT_BLAS=ON), which needs no scratch. */
size_t ds_gemm_bt_panel_floats(int K);
void ds_gemm_bt(int M, int N, int K, const float *a, ptrdiff_t lda, const float *bt, ptrdiff_t ldbt, float *c,
                ptrdiff_t ldc, int add, float *panel);
void ds_gemm_bt_ref(int M, int N, int K, const float *a, ptrdiff_t lda, const float *bt, ptrdiff_t ldbt, float *c,
                    ptrdiff_t ldc, int add, float *panel);

#endif /* DSCKPT_KERNELS_GEMM_H */
