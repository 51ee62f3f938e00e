/*
 * common.cuh — what the CUDA kernel files share: the context layout, the error
 * translation (CUDA / cuBLAS status -> DSC_ECUDA with the library's text, once,
 * at this boundary), launch sizing and the growable scratch area.
 */
#ifndef DS_CUDA_COMMON_CUH
#define DS_CUDA_COMMON_CUH

#include "ds_cuda.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* Records a message for the calling thread (dsc_last_error) and returns st. */
dsc_status dsc_err(dsc_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

struct dsc_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    void *lt_ws;
    size_t lt_ws_bytes;
    void *scratch; /* grows on demand, see dsc_scratch */
    size_t scratch_bytes;
    void *pinned;  /* pinned host buffer for results read back, grows on demand */
    size_t pinned_bytes;
    void *upload;  /* pinned host staging for small uploads (embedding index) */
    size_t upload_bytes;
    cudaEvent_t upload_done; /* the last upload from `upload` has been copied */
};

#define DSC_LT_WORKSPACE (32u << 20)
#define DSC_PINNED_BYTES 4096

static inline dsc_status dsc_cuda_fail(cudaError_t e, const char *what) {
    return dsc_err(DSC_ECUDA, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

static inline dsc_status dsc_blas_fail(int st, const char *what) {
    return dsc_err(DSC_ECUDA, "%s: cuBLAS status %d", what, st);
}

#define DSC_CUDA(call, what)                                       \
    do {                                                           \
        cudaError_t dsc_e_ = (call);                               \
        if (dsc_e_ != cudaSuccess) return dsc_cuda_fail(dsc_e_, what); \
    } while (0)

#define DSC_BLAS(call, what)                                       \
    do {                                                           \
        int dsc_s_ = (int)(call);                                  \
        if (dsc_s_ != 0) return dsc_blas_fail(dsc_s_, what);       \
    } while (0)

/* After a launch: a bad configuration is reported at once, a fault later. */
#define DSC_LAUNCHED(what) DSC_CUDA(cudaGetLastError(), what)

#define DSC_CHECK_CTX(c)                                           \
    do {                                                           \
        if (!(c)) return dsc_err(DSC_EINVAL, "CUDA context is NULL"); \
    } while (0)

/* Grid size for n elements, threads per block t, capped (grid-stride loops). */
static inline unsigned dsc_grid(size_t n, unsigned t) {
    size_t g = (n + t - 1) / t;
    if (g < 1) g = 1;
    if (g > 65535u * 8u) g = 65535u * 8u;
    return (unsigned)g;
}

/* rows x cols of the fp32 matrix src (row stride lds) rounded to `to` (DSC_BF16 or
 * DSC_F16, RNE as the casts) into dst at row stride ldd (elementwise.cu). */
dsc_status dsc_pack16(dsc_ctx *c, const float *src, size_t lds, uint16_t *dst, size_t ldd, size_t rows, size_t cols,
                      dsc_dtype to);

/* At least `bytes` of device scratch, valid until the next call that asks for more.
 * Growing frees the old area (after the stream drains), so callers must not keep a
 * scratch pointer across kernels of another call. */
static inline dsc_status dsc_scratch(dsc_ctx *c, size_t bytes, void **out) {
    if (bytes > c->scratch_bytes) {
        if (c->scratch) {
            DSC_CUDA(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize (scratch)");
            cudaFree(c->scratch);
            c->scratch = NULL;
            c->scratch_bytes = 0;
        }
        size_t want = bytes + bytes / 4;
        DSC_CUDA(cudaMalloc(&c->scratch, want), "cudaMalloc (scratch)");
        c->scratch_bytes = want;
    }
    *out = c->scratch;
    return DSC_OK;
}

/* At least `bytes` of pinned host memory for results read back (the stream must be
 * idle before it is reused: every user synchronises before reading it). */
static inline dsc_status dsc_pinned(dsc_ctx *c, size_t bytes, void **out) {
    if (bytes > c->pinned_bytes) {
        DSC_CUDA(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize (pinned)");
        cudaFreeHost(c->pinned);
        c->pinned = NULL;
        c->pinned_bytes = 0;
        DSC_CUDA(cudaMallocHost(&c->pinned, bytes), "cudaMallocHost (results)");
        c->pinned_bytes = bytes;
    }
    *out = c->pinned;
    return DSC_OK;
}

#endif /* DS_CUDA_COMMON_CUH */
