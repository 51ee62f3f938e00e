/*
 * snapshot.cu — the device side of an asynchronous checkpoint: device partitions
 * copied into page-locked host buffers on a side stream, double-buffered, so that
 * training stalls only for what it must (an update waits until the copy has read
 * the partitions it is about to change) and the background writer reads host memory.
 *
 * Protocol (one training thread; the writer thread only reads a slot's host bytes):
 *   slot = begin(s, ctx, parts)   the side stream waits for everything enqueued on
 *                                 ctx's stream so far, then copies the parts, in
 *                                 order, into the slot's pinned buffer; returns at once
 *   fence(s, ctx)                 ctx's stream waits until the last copy has read the
 *                                 device memory (call before an update changes it)
 *   wait(s, slot, &host)          blocks until the slot's copy is complete
 *   release(s, slot)              the writer is done with the slot's bytes
 * begin on a slot that is not released fails with DSC_EMISUSE (two snapshots may
 * be in flight, one per buffer). wait and release may be called from the writer
 * thread; everything else from the training thread.
 */
#include "common.cuh"

#include <stdlib.h>

struct dsc_snapshot {
    int device;
    size_t cap;
    cudaStream_t side;
    void *buf[2];
    cudaEvent_t ready[2]; /* the ctx stream's work before begin */
    cudaEvent_t done[2];  /* the slot's copy is complete */
    bool busy[2];
    int next, last;
};

extern "C" void dsc_snapshot_free(dsc_snapshot *s) {
    if (!s) return;
    cudaSetDevice(s->device);
    if (s->side) cudaStreamSynchronize(s->side);
    for (int i = 0; i < 2; i++) {
        cudaFreeHost(s->buf[i]);
        if (s->ready[i]) cudaEventDestroy(s->ready[i]);
        if (s->done[i]) cudaEventDestroy(s->done[i]);
    }
    if (s->side) cudaStreamDestroy(s->side);
    free(s);
}

extern "C" dsc_status dsc_snapshot_create(int device, size_t cap_bytes, dsc_snapshot **out) {
    if (!out) return dsc_err(DSC_EINVAL, "dsc_snapshot_create: NULL out");
    *out = NULL;
    dsc_snapshot *s = (dsc_snapshot *)calloc(1, sizeof *s);
    if (!s) return dsc_err(DSC_ENOMEM, "out of memory (snapshot)");
    s->device = device;
    s->cap = cap_bytes;
    s->last = -1;
    dsc_status st = DSC_OK;
    cudaError_t e;
#define SN_CUDA(call, what)                        \
    do {                                           \
        e = (call);                                \
        if (e != cudaSuccess) {                    \
            st = dsc_cuda_fail(e, what);           \
            goto fail;                             \
        }                                          \
    } while (0)
    SN_CUDA(cudaSetDevice(device), "cudaSetDevice");
    SN_CUDA(cudaStreamCreateWithFlags(&s->side, cudaStreamNonBlocking), "cudaStreamCreate (snapshot)");
    for (int i = 0; i < 2; i++) {
        if (cap_bytes) /* 0: the caller's buffers (begin_into) */
            SN_CUDA(cudaMallocHost(&s->buf[i], cap_bytes), "cudaMallocHost (snapshot buffer)");
        SN_CUDA(cudaEventCreateWithFlags(&s->ready[i], cudaEventDisableTiming), "cudaEventCreate");
        SN_CUDA(cudaEventCreateWithFlags(&s->done[i], cudaEventDisableTiming), "cudaEventCreate");
    }
#undef SN_CUDA
    *out = s;
    return DSC_OK;
fail:
    dsc_snapshot_free(s);
    return st;
}

/* The copies of begin / begin_into: parts[i] to dst[i] (dst NULL: packed into the
 * slot's own buffer, checked against its capacity). */
static dsc_status begin_copies(dsc_snapshot *s, dsc_ctx *c, void *const *dst, const void *const *parts,
                               const size_t *bytes, int nparts, int *slot) {
    DSC_CHECK_CTX(c);
    if (!s || !slot || nparts < 0 || (nparts && (!parts || !bytes)))
        return dsc_err(DSC_EINVAL, "dsc_snapshot_begin: bad arguments");
    int k = s->next;
    if (__atomic_load_n(&s->busy[k], __ATOMIC_ACQUIRE))
        return dsc_err(DSC_EMISUSE, "dsc_snapshot_begin: both snapshot slots are still held by the writer");
    size_t total = 0;
    for (int i = 0; i < nparts && !dst; i++) {
        if (bytes[i] > s->cap - total)
            return dsc_err(DSC_EINVAL, "dsc_snapshot_begin: parts exceed the buffer of %zu bytes", s->cap);
        total += bytes[i];
    }
    DSC_CUDA(cudaEventRecord(s->ready[k], c->stream), "cudaEventRecord (snapshot)");
    DSC_CUDA(cudaStreamWaitEvent(s->side, s->ready[k], 0), "cudaStreamWaitEvent (snapshot)");
    size_t off = 0;
    for (int i = 0; i < nparts; i++) {
        void *to = dst ? dst[i] : (char *)s->buf[k] + off;
        if (bytes[i])
            DSC_CUDA(cudaMemcpyAsync(to, parts[i], bytes[i], cudaMemcpyDeviceToHost, s->side),
                     "cudaMemcpyAsync (snapshot)");
        off += bytes[i];
    }
    DSC_CUDA(cudaEventRecord(s->done[k], s->side), "cudaEventRecord (snapshot done)");
    __atomic_store_n(&s->busy[k], true, __ATOMIC_RELAXED);
    s->last = k;
    s->next = 1 - k;
    *slot = k;
    return DSC_OK;
}

extern "C" dsc_status dsc_snapshot_begin(dsc_snapshot *s, dsc_ctx *c, const void *const *parts,
                                            const size_t *bytes, int nparts, int *slot) {
    return begin_copies(s, c, NULL, parts, bytes, nparts, slot);
}

extern "C" dsc_status dsc_snapshot_begin_into(dsc_snapshot *s, dsc_ctx *c, void *const *dst,
                                                 const void *const *parts, const size_t *bytes, int nparts,
                                                 int *slot) {
    if (nparts > 0 && !dst) return dsc_err(DSC_EINVAL, "dsc_snapshot_begin_into: NULL destinations");
    return begin_copies(s, c, nparts > 0 ? dst : NULL, parts, bytes, nparts, slot);
}

extern "C" dsc_status dsc_snapshot_fence(dsc_snapshot *s, dsc_ctx *c) {
    DSC_CHECK_CTX(c);
    if (!s) return dsc_err(DSC_EINVAL, "dsc_snapshot_fence: NULL snapshot");
    if (s->last < 0) return DSC_OK;
    DSC_CUDA(cudaStreamWaitEvent(c->stream, s->done[s->last], 0), "cudaStreamWaitEvent (snapshot fence)");
    return DSC_OK;
}

extern "C" dsc_status dsc_snapshot_wait(dsc_snapshot *s, int slot, const void **host) {
    if (!s || slot < 0 || slot > 1 || !__atomic_load_n(&s->busy[slot], __ATOMIC_ACQUIRE)) return dsc_err(DSC_EINVAL, "dsc_snapshot_wait: bad slot");
    cudaSetDevice(s->device); /* the writer thread may not have picked it */
    DSC_CUDA(cudaEventSynchronize(s->done[slot]), "cudaEventSynchronize (snapshot)");
    if (host) *host = s->buf[slot];
    return DSC_OK;
}

extern "C" void dsc_snapshot_release(dsc_snapshot *s, int slot) {
    if (s && slot >= 0 && slot < 2) __atomic_store_n(&s->busy[slot], false, __ATOMIC_RELEASE);
}
