/*
 * comm_cuda.c — collectives on device memory, two backends of comm.h:
 *
 *   NCCL ("nccl"): one rank per GPU. The communicator is bootstrapped through an
 *     existing host communicator (MPI, or self for W = 1): rank 0's ncclUniqueId is
 *     broadcast over it. Broadcast, all-gather-v and the point-to-point exchange are
 *     NCCL calls on the handle's stream; the reduce-scatter sum exchanges segments
 *     with ncclSend/ncclRecv and adds them on the device in rank order
 *     (dsc_sum_rank_order), so it keeps comm.c's rank-order bits: NCCL's own
 *     reductions are not used. Host buffers (the small double/flag reductions that
 *     comm.c gathers in host scratch) are staged through device scratch.
 *
 *   staged ("mpi+staged"): the MPI backend for device buffers, for several ranks on
 *     one GPU (NCCL refuses two ranks on one device). Device buffers are copied into
 *     page-locked host staging, handed to MPI, and copied back; host buffers pass
 *     straight through. Its reduce-scatter sum exchanges the segments over MPI and
 *     adds them on the host in rank order, as comm.c does.
 *
 * Both are synchronous at the op level, like the MPI backend: an op returns when its
 * result is in place (the NCCL ops synchronise the stream). Compiled, not run on a
 * GPU yet (docs/gpu.md).
 */
#include "comm_cuda.h"

#include "device_cuda.h"
#include "ds_cuda.h"
#include "internal.h"

#include <cuda_runtime_api.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#ifdef DSCKPT_HAVE_NCCL
/* nccl.h declares some functions without prototypes (f() for f(void)). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop
#endif

static dsckpt_status cuda_fail(cudaError_t e, const char *what) {
    return ds_err(DSCKPT_ECUDA, "%s: %s", what, cudaGetErrorString(e));
}

#define CU_TRY(call, what)                                  \
    do {                                                    \
        cudaError_t cu_e_ = (call);                         \
        if (cu_e_ != cudaSuccess) return cuda_fail(cu_e_, what); \
    } while (0)

static bool is_dev(const void *p) { return dsc_is_device_ptr(p); }

/* ---- staging buffers (pinned host, grown on demand) ---- */

typedef struct stage {
    void *p;
    size_t cap;
} stage;

static dsckpt_status stage_need(stage *s, size_t bytes) {
    if (bytes <= s->cap) return DSCKPT_OK;
    cudaFreeHost(s->p);
    s->p = NULL;
    s->cap = 0;
    CU_TRY(cudaMallocHost(&s->p, bytes), "cudaMallocHost (staging)");
    s->cap = bytes;
    return DSCKPT_OK;
}

static void stage_free(stage *s) {
    cudaFreeHost(s->p);
    s->p = NULL;
    s->cap = 0;
}

/* ======================= the staged MPI backend ======================= */

typedef struct staged_impl {
    const rt_comm_ops *inner;
    void *in;
    int rank, size;
    stage st;
    size_t *b1, *b2; /* W entries each */
    const void **sp;
    void **rp;
} staged_impl;

static dsckpt_status st_barrier(void *impl, void *stream) {
    staged_impl *s = impl;
    return s->inner->barrier(s->in, stream);
}

static dsckpt_status st_bcast(void *impl, void *stream, void *buf, size_t bytes, int root) {
    staged_impl *s = impl;
    if (!bytes || !is_dev(buf)) return s->inner->bcast(s->in, stream, buf, bytes, root);
    DS_TRY(stage_need(&s->st, bytes));
    if (s->rank == root) CU_TRY(cudaMemcpy(s->st.p, buf, bytes, cudaMemcpyDefault), "staging copy");
    DS_TRY(s->inner->bcast(s->in, stream, s->st.p, bytes, root));
    if (s->rank != root) CU_TRY(cudaMemcpy(buf, s->st.p, bytes, cudaMemcpyDefault), "staging copy");
    return DSCKPT_OK;
}

static dsckpt_status st_allgatherv(void *impl, void *stream, const void *send, const size_t *counts,
                                   const size_t *displs, void *recv) {
    staged_impl *s = impl;
    int W = s->size, me = s->rank;
    if (!is_dev(recv) && !(send && is_dev(send))) return s->inner->allgatherv(s->in, stream, send, counts, displs, recv);
    size_t end = 0;
    for (int r = 0; r < W; r++)
        if (counts[r]) end = DS_MAX(end, displs[r] + counts[r]);
    if (!end) return DSCKPT_OK;
    DS_TRY(stage_need(&s->st, end));
    uint8_t *h = s->st.p;
    const uint8_t *mine = send ? send : (const uint8_t *)recv + displs[me];
    if (counts[me]) CU_TRY(cudaMemcpy(h + displs[me], mine, counts[me], cudaMemcpyDefault), "staging copy");
    DS_TRY(s->inner->allgatherv(s->in, stream, NULL, counts, displs, h));
    /* Every block goes back, this rank's too when it came from a separate send. */
    for (int r = 0; r < W; r++) {
        if (!counts[r] || (r == me && !send)) continue;
        CU_TRY(cudaMemcpy((uint8_t *)recv + displs[r], h + displs[r], counts[r], cudaMemcpyDefault),
               "staging copy");
    }
    return DSCKPT_OK;
}

/* One gather round: host buffers straight to MPI; device ones through staging
 * (the others' send, the root's whole receive). */
static dsckpt_status st_gatherv(void *impl, void *stream, const void *send, size_t bytes, int root, void *recv,
                                const size_t *counts, const size_t *displs) {
    staged_impl *s = impl;
    int W = s->size;
    bool is_root = s->rank == root;
    if (!(send && is_dev(send)) && !(is_root && is_dev(recv)))
        return s->inner->gatherv(s->in, stream, send, bytes, root, recv, counts, displs);
    size_t end = bytes, at = is_root ? displs[root] : 0;
    for (int r = 0; is_root && r < W; r++)
        if (counts[r]) end = DS_MAX(end, displs[r] + counts[r]);
    DS_TRY(stage_need(&s->st, DS_MAX(end, (size_t)1)));
    uint8_t *h = s->st.p;
    const void *mine = send ? send : (const uint8_t *)recv + at; /* send NULL only on the root */
    if (bytes) CU_TRY(cudaMemcpy(h + at, mine, bytes, cudaMemcpyDefault), "staging copy");
    DS_TRY(s->inner->gatherv(s->in, stream, is_root ? NULL : h, bytes, root, is_root ? h : NULL, counts, displs));
    for (int r = 0; is_root && r < W; r++) {
        if (!counts[r] || (r == root && !send)) continue;
        CU_TRY(cudaMemcpy((uint8_t *)recv + displs[r], h + displs[r], counts[r], cudaMemcpyDefault), "staging copy");
    }
    return DSCKPT_OK;
}

static dsckpt_status st_exchange(void *impl, void *stream, const void *const *sends, const size_t *send_bytes,
                                 void *const *recvs, const size_t *recv_bytes) {
    staged_impl *s = impl;
    int W = s->size;
    bool dev = false;
    size_t total = 0;
    for (int r = 0; r < W; r++) {
        if ((send_bytes[r] && is_dev(sends[r])) || (recv_bytes[r] && is_dev(recvs[r]))) dev = true;
        total += send_bytes[r] + recv_bytes[r];
    }
    if (!dev) return s->inner->exchange(s->in, stream, sends, send_bytes, recvs, recv_bytes);
    DS_TRY(stage_need(&s->st, DS_MAX(total, (size_t)1)));
    uint8_t *h = s->st.p;
    size_t off = 0;
    for (int r = 0; r < W; r++) {
        s->sp[r] = h + off;
        if (send_bytes[r])
            CU_TRY(cudaMemcpy(h + off, sends[r], send_bytes[r], cudaMemcpyDefault), "staging copy");
        off += send_bytes[r];
    }
    for (int r = 0; r < W; r++) {
        s->rp[r] = h + off;
        off += recv_bytes[r];
    }
    DS_TRY(s->inner->exchange(s->in, stream, s->sp, send_bytes, s->rp, recv_bytes));
    for (int r = 0; r < W; r++)
        if (recv_bytes[r]) CU_TRY(cudaMemcpy(recvs[r], s->rp[r], recv_bytes[r], cudaMemcpyDefault), "staging copy");
    return DSCKPT_OK;
}

/* Segments to their owners over MPI (pieces of at most 1 GiB), then the rank-order
 * sum on the host, element by element: ((x_0 + x_1) + x_2) + ... as comm.c. */
#define ST_PIECE ((size_t)1 << 28) /* floats per piece: 1 GiB */
static dsckpt_status st_reduce_scatter_sum(void *impl, void *stream, const float *send, const size_t *counts,
                                           float *recv) {
    staged_impl *s = impl;
    int W = s->size, me = s->rank;
    size_t total = 0, off_me = 0, maxc = 0;
    for (int r = 0; r < W; r++) {
        if (r == me) off_me = total;
        total += counts[r];
        maxc = DS_MAX(maxc, counts[r]);
    }
    size_t mine = counts[me];
    bool dev = is_dev(send);
    /* Host layout: [W slices received (own slice copied)] [the outgoing segments]. */
    for (size_t base = 0; base < maxc; base += ST_PIECE) {
        size_t m = mine > base ? DS_MIN(mine - base, ST_PIECE) : 0;
        size_t out_total = 0;
        for (int r = 0; r < W; r++) {
            size_t k = counts[r] > base ? DS_MIN(counts[r] - base, ST_PIECE) : 0;
            s->b1[r] = r == me ? 0 : k * sizeof(float);
            s->b2[r] = r == me ? 0 : m * sizeof(float);
            out_total += s->b1[r];
        }
        DS_TRY(stage_need(&s->st, ((size_t)W * m) * sizeof(float) + out_total + 1));
        float *slices = s->st.p;
        uint8_t *out = (uint8_t *)s->st.p + (size_t)W * m * sizeof(float);
        size_t o = 0, seg = 0;
        for (int r = 0; r < W; r++) {
            const float *src = send + seg + base;
            s->sp[r] = out + o;
            if (s->b1[r]) CU_TRY(cudaMemcpy(out + o, src, s->b1[r], cudaMemcpyDefault), "staging copy");
            o += s->b1[r];
            s->rp[r] = slices + (size_t)r * m;
            seg += counts[r];
        }
        if (m) CU_TRY(cudaMemcpy(slices + (size_t)me * m, send + off_me + base, m * sizeof(float), cudaMemcpyDefault),
                      "staging copy");
        DS_TRY(s->inner->exchange(s->in, stream, s->sp, s->b1, s->rp, s->b2));
        for (size_t i = 0; i < m; i++) {
            float a = slices[i];
            for (int r = 1; r < W; r++) a += slices[(size_t)r * m + i];
            slices[i] = a;
        }
        if (m) {
            if (dev) CU_TRY(cudaMemcpy(recv + base, slices, m * sizeof(float), cudaMemcpyDefault), "staging copy");
            else memcpy(recv + base, slices, m * sizeof(float));
        }
    }
    return DSCKPT_OK;
}

__attribute__((noreturn)) static void st_abort(void *impl, int code) {
    staged_impl *s = impl;
    s->inner->abort(s->in, code);
}

static void st_close(void *impl) {
    staged_impl *s = impl;
    if (!s) return;
    if (s->inner) s->inner->close(s->in);
    stage_free(&s->st);
    free(s->b1), free(s->b2), free(s->sp), free(s->rp);
    free(s);
}

static const rt_comm_ops staged_ops = {
    .name = "mpi+staged",
    .barrier = st_barrier,
    .bcast = st_bcast,
    .allgatherv = st_allgatherv,
    .exchange = st_exchange,
    .gatherv = st_gatherv,
    .reduce_scatter_sum = st_reduce_scatter_sum,
    .abort = st_abort,
    .close = st_close,
};

dsckpt_status rt_comm_open_mpi_staged(int *argc, char ***argv, rt_comm **out) {
    if (!out) return ds_err(DSCKPT_EINVAL, "rt_comm_open_mpi_staged: NULL out");
    *out = NULL;
    staged_impl *s = calloc(1, sizeof *s);
    if (!s) return ds_err(DSCKPT_ENOMEM, "out of memory (staged communicator)");
    dsckpt_status st = rt_comm_mpi_backend(argc, argv, &s->inner, &s->in, &s->rank, &s->size);
    if (st != DSCKPT_OK) {
        free(s);
        return st;
    }
    size_t W = (size_t)s->size;
    s->b1 = calloc(W, sizeof *s->b1);
    s->b2 = calloc(W, sizeof *s->b2);
    s->sp = calloc(W, sizeof *s->sp);
    s->rp = calloc(W, sizeof *s->rp);
    if (!s->b1 || !s->b2 || !s->sp || !s->rp) {
        st_close(s);
        return ds_err(DSCKPT_ENOMEM, "out of memory (staged communicator)");
    }
    return rt_comm_create(&staged_ops, s, s->rank, s->size, out);
}

/* ======================= the NCCL backend ======================= */

#ifdef DSCKPT_HAVE_NCCL

typedef struct nccl_impl {
    ncclComm_t comm;
    rt_comm *boot; /* not owned: barriers and aborts */
    dsc_ctx *kc;   /* the device table's kernels context (rank-order sums) */
    int rank, size;
    void *dscr; /* device scratch */
    size_t dscr_cap;
    float **srcs;
} nccl_impl;

static dsckpt_status nccl_fail(ncclResult_t r, const char *what) {
    return ds_err(DSCKPT_ENCCL, "%s: %s", what, ncclGetErrorString(r));
}

#define NC_TRY(call, what)                                  \
    do {                                                    \
        ncclResult_t nc_r_ = (call);                        \
        if (nc_r_ != ncclSuccess) return nccl_fail(nc_r_, what); \
    } while (0)

static dsckpt_status dscr_need(nccl_impl *n, size_t bytes) {
    if (bytes <= n->dscr_cap) return DSCKPT_OK;
    cudaFree(n->dscr);
    n->dscr = NULL;
    n->dscr_cap = 0;
    CU_TRY(cudaMalloc(&n->dscr, bytes), "cudaMalloc (NCCL scratch)");
    n->dscr_cap = bytes;
    return DSCKPT_OK;
}

static dsckpt_status nc_sync(void *stream) {
    CU_TRY(cudaStreamSynchronize((cudaStream_t)stream), "cudaStreamSynchronize");
    return DSCKPT_OK;
}

static dsckpt_status nc_barrier(void *impl, void *stream) {
    nccl_impl *n = impl;
    DS_TRY(nc_sync(stream));
    return rt_comm_barrier(n->boot);
}

static dsckpt_status nc_bcast(void *impl, void *stream, void *buf, size_t bytes, int root) {
    nccl_impl *n = impl;
    if (!bytes) return DSCKPT_OK;
    void *d = buf;
    bool host = !is_dev(buf);
    if (host) {
        DS_TRY(dscr_need(n, bytes));
        d = n->dscr;
        if (n->rank == root) CU_TRY(cudaMemcpyAsync(d, buf, bytes, cudaMemcpyHostToDevice, stream), "staging copy");
    }
    NC_TRY(ncclBroadcast(d, d, bytes, ncclUint8, root, n->comm, (cudaStream_t)stream), "ncclBroadcast");
    if (host) CU_TRY(cudaMemcpyAsync(buf, d, bytes, cudaMemcpyDeviceToHost, stream), "staging copy");
    return nc_sync(stream);
}

static dsckpt_status nc_allgatherv(void *impl, void *stream, const void *send, const size_t *counts,
                                   const size_t *displs, void *recv) {
    nccl_impl *n = impl;
    int W = n->size, me = n->rank;
    size_t end = 0;
    for (int r = 0; r < W; r++)
        if (counts[r]) end = DS_MAX(end, displs[r] + counts[r]);
    if (!end) return DSCKPT_OK;
    uint8_t *d = recv;
    bool host = !is_dev(recv);
    if (host) { /* small host gathers (comm.c's gather_small) */
        DS_TRY(dscr_need(n, end));
        d = n->dscr;
    }
    const void *mine = send ? send : (const uint8_t *)recv + displs[me];
    if (counts[me] && (host || send))
        CU_TRY(cudaMemcpyAsync(d + displs[me], mine, counts[me], cudaMemcpyDefault, stream), "staging copy");
    NC_TRY(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < W; r++) {
        if (!counts[r]) continue;
        ncclResult_t rc = ncclBroadcast(d + displs[r], d + displs[r], counts[r], ncclUint8, r, n->comm,
                                        (cudaStream_t)stream);
        if (rc != ncclSuccess) {
            ncclGroupEnd();
            return nccl_fail(rc, "ncclBroadcast (all-gather)");
        }
    }
    NC_TRY(ncclGroupEnd(), "ncclGroupEnd");
    if (host)
        for (int r = 0; r < W; r++)
            if (counts[r])
                CU_TRY(cudaMemcpyAsync((uint8_t *)recv + displs[r], d + displs[r], counts[r], cudaMemcpyDeviceToHost,
                                       stream), "staging copy");
    return nc_sync(stream);
}

static dsckpt_status nc_exchange(void *impl, void *stream, const void *const *sends, const size_t *send_bytes,
                                 void *const *recvs, const size_t *recv_bytes) {
    nccl_impl *n = impl;
    int W = n->size, me = n->rank;
    for (int r = 0; r < W; r++)
        if ((send_bytes[r] && !is_dev(sends[r])) || (recv_bytes[r] && !is_dev(recvs[r])))
            return ds_err(DSCKPT_EINVAL, "NCCL exchange: buffers must be device memory");
    if (send_bytes[me] != recv_bytes[me])
        return ds_err(DSCKPT_EINTERNAL, "exchange with self: sending %zu bytes but receiving %zu", send_bytes[me],
                      recv_bytes[me]);
    if (send_bytes[me])
        CU_TRY(cudaMemcpyAsync(recvs[me], sends[me], send_bytes[me], cudaMemcpyDeviceToDevice, stream), "self copy");
    NC_TRY(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < W; r++) {
        if (r == me) continue;
        ncclResult_t rc = ncclSuccess;
        if (send_bytes[r]) rc = ncclSend(sends[r], send_bytes[r], ncclUint8, r, n->comm, (cudaStream_t)stream);
        if (rc == ncclSuccess && recv_bytes[r])
            rc = ncclRecv(recvs[r], recv_bytes[r], ncclUint8, r, n->comm, (cudaStream_t)stream);
        if (rc != ncclSuccess) {
            ncclGroupEnd();
            return nccl_fail(rc, "ncclSend/ncclRecv");
        }
    }
    NC_TRY(ncclGroupEnd(), "ncclGroupEnd");
    return nc_sync(stream);
}

/* One gather round as NCCL point-to-point calls (NCCL has no gather): every rank
 * sends its piece to the root, which receives each in place. Host buffers (the
 * commit records of a save) are staged through device scratch. */
static dsckpt_status nc_gatherv(void *impl, void *stream, const void *send, size_t bytes, int root, void *recv,
                                const size_t *counts, const size_t *displs) {
    nccl_impl *n = impl;
    int W = n->size;
    bool is_root = n->rank == root;
    bool host = is_root ? !is_dev(recv) : (bytes && !is_dev(send));
    size_t end = bytes, at = is_root ? displs[root] : 0;
    for (int r = 0; is_root && r < W; r++)
        if (counts[r]) end = DS_MAX(end, displs[r] + counts[r]);
    uint8_t *d = is_root ? recv : (uint8_t *)(uintptr_t)send;
    if (host) {
        DS_TRY(dscr_need(n, DS_MAX(end, (size_t)1)));
        d = n->dscr;
    }
    if (bytes && (host || (is_root && send)))
        CU_TRY(cudaMemcpyAsync(d + at, send ? send : (const uint8_t *)recv + at, bytes, cudaMemcpyDefault, stream),
               "staging copy");
    NC_TRY(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < W; r++) {
        ncclResult_t rc = ncclSuccess;
        if (!is_root && r == root && bytes) rc = ncclSend(d, bytes, ncclUint8, root, n->comm, (cudaStream_t)stream);
        if (is_root && r != root && counts[r])
            rc = ncclRecv(d + displs[r], counts[r], ncclUint8, r, n->comm, (cudaStream_t)stream);
        if (rc != ncclSuccess) {
            ncclGroupEnd();
            return nccl_fail(rc, "ncclSend/ncclRecv (gather)");
        }
    }
    NC_TRY(ncclGroupEnd(), "ncclGroupEnd");
    for (int r = 0; host && is_root && r < W; r++)
        if (counts[r])
            CU_TRY(cudaMemcpyAsync((uint8_t *)recv + displs[r], d + displs[r], counts[r], cudaMemcpyDeviceToHost,
                                   stream), "staging copy");
    return nc_sync(stream);
}

/* The W slices (W-1 received, the own one copied) land in device scratch, then one
 * kernel adds them in rank order into recv: comm.c's bits, on the device. */
static dsckpt_status nc_reduce_scatter_sum(void *impl, void *stream, const float *send, const size_t *counts,
                                           float *recv) {
    nccl_impl *n = impl;
    int W = n->size, me = n->rank;
    size_t mine = counts[me], off_me = 0, seg = 0;
    for (int r = 0; r < me; r++) off_me += counts[r];
    if (!is_dev(send) || (mine && !is_dev(recv)))
        return ds_err(DSCKPT_EINVAL, "NCCL reduce-scatter: buffers must be device memory");
    /* W slices in scratch, this rank's own copied in too: recv may be the own
     * segment of send (in place), and the sum must not read what it overwrote. */
    DS_TRY(dscr_need(n, DS_MAX((size_t)W * mine * sizeof(float), (size_t)1)));
    float *scr = n->dscr;
    if (mine)
        CU_TRY(cudaMemcpyAsync(scr + (size_t)me * mine, send + off_me, mine * sizeof(float), cudaMemcpyDeviceToDevice,
                               (cudaStream_t)stream), "own slice copy");
    NC_TRY(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < W; r++) {
        ncclResult_t rc = ncclSuccess;
        if (r != me) {
            if (counts[r]) rc = ncclSend(send + seg, counts[r], ncclFloat32, r, n->comm, (cudaStream_t)stream);
            if (rc == ncclSuccess && mine)
                rc = ncclRecv(scr + (size_t)r * mine, mine, ncclFloat32, r, n->comm, (cudaStream_t)stream);
        }
        n->srcs[r] = scr + (size_t)r * mine;
        if (rc != ncclSuccess) {
            ncclGroupEnd();
            return nccl_fail(rc, "ncclSend/ncclRecv (reduce-scatter)");
        }
        seg += counts[r];
    }
    NC_TRY(ncclGroupEnd(), "ncclGroupEnd");
    if (mine) {
        if (dsc_ctx_stream(n->kc) != stream)
            CU_TRY(cudaStreamSynchronize((cudaStream_t)stream), "cudaStreamSynchronize");
        dsc_status ks = dsc_sum_rank_order(n->kc, recv, (const float *const *)n->srcs, W, mine);
        if (ks != DSC_OK) return ds_err((dsckpt_status)ks, "rank-order sum: %s", dsc_last_error());
        if (dsc_sync(n->kc) != DSC_OK) return ds_err(DSCKPT_ECUDA, "rank-order sum: %s", dsc_last_error());
    }
    return nc_sync(stream);
}

__attribute__((noreturn)) static void nc_abort(void *impl, int code) {
    nccl_impl *n = impl;
    ncclCommAbort(n->comm);
    rt_comm_abort(n->boot, code);
}

static void nc_close(void *impl) {
    nccl_impl *n = impl;
    if (!n) return;
    if (n->comm) ncclCommDestroy(n->comm);
    cudaFree(n->dscr);
    free(n->srcs);
    free(n);
}

static const rt_comm_ops nccl_ops = {
    .name = "nccl",
    .barrier = nc_barrier,
    .bcast = nc_bcast,
    .allgatherv = nc_allgatherv,
    .exchange = nc_exchange,
    .gatherv = nc_gatherv,
    .reduce_scatter_sum = nc_reduce_scatter_sum,
    .abort = nc_abort,
    .close = nc_close,
};

dsckpt_status rt_comm_open_nccl(rt_comm *boot, const rt_device *dev, rt_comm **out) {
    if (!boot || !dev || !out) return ds_err(DSCKPT_EINVAL, "rt_comm_open_nccl: NULL argument");
    *out = NULL;
    dsc_ctx *kc = rt_device_cuda_ctx(dev);
    if (!kc) return ds_err(DSCKPT_EINVAL, "rt_comm_open_nccl: the device table is not a CUDA one");
    nccl_impl *n = calloc(1, sizeof *n);
    if (!n) return ds_err(DSCKPT_ENOMEM, "out of memory (NCCL communicator)");
    n->boot = boot;
    n->kc = kc;
    n->rank = rt_comm_rank(boot);
    n->size = rt_comm_size(boot);
    n->srcs = calloc((size_t)n->size, sizeof *n->srcs);
    dsckpt_status st = DSCKPT_OK;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t rc;
    if (!n->srcs) {
        st = ds_err(DSCKPT_ENOMEM, "out of memory (NCCL communicator)");
        goto fail;
    }
    if (n->rank == 0 && (rc = ncclGetUniqueId(&id)) != ncclSuccess) {
        st = nccl_fail(rc, "ncclGetUniqueId");
        /* the other ranks wait in the broadcast: end the job */
        rt_comm_abort(boot, 70);
    }
    if ((st = rt_comm_bcast(boot, &id, sizeof id, 0)) != DSCKPT_OK) goto fail;
    if ((rc = ncclCommInitRank(&n->comm, n->size, id, n->rank)) != ncclSuccess) {
        st = nccl_fail(rc, "ncclCommInitRank");
        goto fail;
    }
    st = rt_comm_create(&nccl_ops, n, n->rank, n->size, out);
    if (st == DSCKPT_OK) rt_comm_set_stream(*out, rt_device_cuda_stream(dev));
    return st;
fail:
    nc_close(n);
    return st;
}

#else /* !DSCKPT_HAVE_NCCL */

dsckpt_status rt_comm_open_nccl(rt_comm *boot, const rt_device *dev, rt_comm **out) {
    DS_UNUSED(boot), DS_UNUSED(dev);
    if (out) *out = NULL;
    return ds_err(DSCKPT_EUNSUPPORTED, "this build has no NCCL (CMake did not find nccl.h and libnccl)");
}

#endif
