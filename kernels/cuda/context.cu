/*
 * context.cu — device discovery, the dsc_ctx (stream, cuBLAS/cuBLASLt handles,
 * workspaces) and memory: device, pinned host, copies and memsets on the stream.
 */
#include "common.cuh"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static thread_local char g_msg[512];

dsc_status dsc_err(dsc_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return st;
}

extern "C" const char *dsc_last_error(void) { return g_msg; }

extern "C" dsc_status dsc_mem_info(size_t *free_bytes, size_t *total_bytes) {
    if (!free_bytes || !total_bytes) return dsc_err(DSC_EINVAL, "dsc_mem_info: NULL argument");
    DSC_CUDA(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
    return DSC_OK;
}

extern "C" dsc_status dsc_device_count(int *count, const char **why) {
    if (!count) return dsc_err(DSC_EINVAL, "dsc_device_count: NULL count");
    *count = 0;
    if (why) *why = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        /* No driver, no device, or a driver older than the runtime: not an error for
         * the caller, who skips. The sticky error is cleared by the query itself. */
        if (why) *why = cudaGetErrorString(e);
        (void)cudaGetLastError();
        return DSC_OK;
    }
    if (n == 0 && why) *why = "no CUDA device";
    *count = n;
    return DSC_OK;
}

extern "C" dsc_status dsc_device_describe(int device, char *buf, size_t cap) {
    if (!buf || cap == 0) return dsc_err(DSC_EINVAL, "dsc_device_describe: no buffer");
    cudaDeviceProp p;
    DSC_CUDA(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
    int drv = 0, rtv = 0;
    DSC_CUDA(cudaDriverGetVersion(&drv), "cudaDriverGetVersion");
    DSC_CUDA(cudaRuntimeGetVersion(&rtv), "cudaRuntimeGetVersion");
    snprintf(buf, cap, "%s, cc %d.%d, %d SMs, %.1f GiB, driver %d, runtime %d", p.name, p.major, p.minor,
             p.multiProcessorCount, (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), drv, rtv);
    return DSC_OK;
}

extern "C" void dsc_ctx_free(dsc_ctx *c) {
    if (!c) return;
    cudaSetDevice(c->device);
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->blas) cublasDestroy(c->blas);
    if (c->lt) cublasLtDestroy(c->lt);
    cudaFree(c->lt_ws);
    cudaFree(c->scratch);
    cudaFreeHost(c->pinned);
    cudaFreeHost(c->upload);
    if (c->upload_done) cudaEventDestroy(c->upload_done);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

extern "C" dsc_status dsc_ctx_create(int device, dsc_ctx **out) {
    if (!out) return dsc_err(DSC_EINVAL, "dsc_ctx_create: NULL out");
    *out = NULL;
    dsc_ctx *c = (dsc_ctx *)calloc(1, sizeof *c);
    if (!c) return dsc_err(DSC_ENOMEM, "out of memory (CUDA context)");
    c->device = device;
    dsc_status st = DSC_OK;
    cudaError_t e;
    int bs;
#define CTX_CUDA(call, what)                       \
    do {                                           \
        e = (call);                                \
        if (e != cudaSuccess) {                    \
            st = dsc_cuda_fail(e, what);           \
            goto fail;                             \
        }                                          \
    } while (0)
#define CTX_BLAS(call, what)                       \
    do {                                           \
        bs = (int)(call);                          \
        if (bs != 0) {                             \
            st = dsc_blas_fail(bs, what);          \
            goto fail;                             \
        }                                          \
    } while (0)
    CTX_CUDA(cudaSetDevice(device), "cudaSetDevice");
    CTX_CUDA(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    CTX_BLAS(cublasCreate(&c->blas), "cublasCreate");
    CTX_BLAS(cublasSetStream(c->blas, c->stream), "cublasSetStream");
    /* fp32 GEMMs stay fp32: the tests hold them to 1e-5 against the CPU. */
    CTX_BLAS(cublasSetMathMode(c->blas, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
    CTX_BLAS(cublasLtCreate(&c->lt), "cublasLtCreate");
    c->lt_ws_bytes = DSC_LT_WORKSPACE;
    CTX_CUDA(cudaMalloc(&c->lt_ws, c->lt_ws_bytes), "cudaMalloc (cuBLASLt workspace)");
    CTX_CUDA(cudaMallocHost(&c->pinned, DSC_PINNED_BYTES), "cudaMallocHost");
    c->pinned_bytes = DSC_PINNED_BYTES;
    CTX_CUDA(cudaEventCreateWithFlags(&c->upload_done, cudaEventDisableTiming), "cudaEventCreate");
#undef CTX_CUDA
#undef CTX_BLAS
    *out = c;
    return DSC_OK;
fail:
    dsc_ctx_free(c);
    return st;
}

extern "C" void *dsc_ctx_stream(dsc_ctx *c) { return c ? (void *)c->stream : NULL; }

extern "C" dsc_status dsc_sync(dsc_ctx *c) {
    DSC_CHECK_CTX(c);
    DSC_CUDA(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize");
    DSC_CUDA(cudaGetLastError(), "kernel");
    return DSC_OK;
}

extern "C" dsc_status dsc_malloc(void **p, size_t bytes) {
    if (!p) return dsc_err(DSC_EINVAL, "dsc_malloc: NULL out");
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *p = NULL;
        (void)cudaGetLastError();
        return dsc_err(e == cudaErrorMemoryAllocation ? DSC_ENOMEM : DSC_ECUDA,
                      "cudaMalloc of %zu bytes: %s", bytes, cudaGetErrorString(e));
    }
    return DSC_OK;
}

extern "C" void dsc_free(void *p) {
    if (p) cudaFree(p);
}

extern "C" dsc_status dsc_host_alloc(void **p, size_t bytes) {
    if (!p) return dsc_err(DSC_EINVAL, "dsc_host_alloc: NULL out");
    *p = NULL;
    cudaError_t e = cudaMallocHost(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *p = NULL;
        (void)cudaGetLastError();
        return dsc_err(DSC_ENOMEM, "cudaMallocHost of %zu bytes: %s", bytes, cudaGetErrorString(e));
    }
    return DSC_OK;
}

extern "C" void dsc_host_free(void *p) {
    if (p) cudaFreeHost(p);
}

extern "C" dsc_status dsc_memcpy(dsc_ctx *c, void *dst, const void *src, size_t bytes, int kind) {
    DSC_CHECK_CTX(c);
    if (bytes == 0) return DSC_OK;
    if (!dst || !src) return dsc_err(DSC_EINVAL, "dsc_memcpy: NULL pointer");
    cudaMemcpyKind k;
    switch (kind) {
    case DSC_H2D: k = cudaMemcpyHostToDevice; break;
    case DSC_D2H: k = cudaMemcpyDeviceToHost; break;
    case DSC_D2D: k = cudaMemcpyDeviceToDevice; break;
    default: return dsc_err(DSC_EINVAL, "dsc_memcpy: bad kind %d", kind);
    }
    DSC_CUDA(cudaMemcpyAsync(dst, src, bytes, k, c->stream), "cudaMemcpyAsync");
    return DSC_OK;
}

extern "C" dsc_status dsc_memset(dsc_ctx *c, void *dst, int byte, size_t bytes) {
    DSC_CHECK_CTX(c);
    if (bytes == 0) return DSC_OK;
    if (!dst) return dsc_err(DSC_EINVAL, "dsc_memset: NULL pointer");
    DSC_CUDA(cudaMemsetAsync(dst, byte, bytes, c->stream), "cudaMemsetAsync");
    return DSC_OK;
}

extern "C" bool dsc_is_device_ptr(const void *p) {
    if (!p) return false;
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}
