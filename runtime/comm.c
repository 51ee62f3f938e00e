/*
 * comm.c — the public collectives of comm.h built on a byte-moving backend: argument
 * checks, timing and byte accounting, splitting into messages below the cap, the
 * rank-order summation that makes the float collectives deterministic, and the
 * single-process ("self") backend.
 *
 * reduce_scatterv_f32 runs in rounds of at most `chunk` floats per segment: in each
 * round every rank sends the round's slice of segment r to rank r (point to point),
 * then the owner sums the W slices element by element in rank order. The scratch
 * holding the W-1 received slices is bounded (RS_SCRATCH_BYTES), so the memory
 * overhead does not grow with the buffer; the rounds do not change any bits, since
 * each element is summed on its own.
 */
#include "comm.h"
#include "device.h"
#include "internal.h"
#include "rt_time.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_MESSAGE ((size_t)1 << 30)
#define MIN_MAX_MESSAGE ((size_t)64)
#define MAX_MAX_MESSAGE ((size_t)INT_MAX & ~(size_t)63)
/* Bound on the receive scratch of one reduce-scatter round (W-1 slices). */
#define RS_SCRATCH_BYTES ((size_t)64 << 20)
/* Elements summed per block: the block's accumulator stays in L1. */
#define SUM_BLOCK 1024
/* Below this many elements the summation stays on one thread. */
#define SUM_PARALLEL_MIN ((size_t)1 << 16)

struct rt_comm {
    const rt_comm_ops *ops;
    void *impl;
    void *stream; /* handed to every backend op (rt_comm_set_stream) */
    int rank, size;
    size_t max_msg;
    double seconds;
    uint64_t bytes_sent;
    /* Scratch (grown on demand, contents not kept between calls). */
    void *scratch;
    size_t scratch_bytes;
    /* Per-rank work arrays, W entries each. */
    size_t *off;        /* element offsets of the segments */
    size_t *cnt;        /* allreduce split / piece counts */
    size_t *disp;       /* piece displacements */
    size_t *sbytes, *rbytes;
    const void **sends;
    void **recvs;
    const float **srcs;
    size_t *gcnt, *gdisp; /* a gather's block counts and displacements (root) */
    /* rt_comm_set_device: buffers of this table are staged through host memory. */
    const rt_device *dev;
    void *stage;
    size_t stage_bytes;
};

static dsckpt_status need_scratch(rt_comm *c, size_t bytes) {
    if (bytes <= c->scratch_bytes) return DSCKPT_OK;
    free(c->scratch);
    c->scratch = NULL;
    c->scratch_bytes = 0;
    DS_TRY(ds_malloc(bytes, &c->scratch));
    c->scratch_bytes = bytes;
    return DSCKPT_OK;
}

static bool overlap(const void *a, size_t na, const void *b, size_t nb) {
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return na && nb && pa < pb + nb && pb < pa + na;
}

/* ---- handle ------------------------------------------------------------------------ */

dsckpt_status rt_comm_create(const rt_comm_ops *ops, void *impl, int rank, int size,
                             rt_comm **out) {
    dsckpt_status st;
    rt_comm *c = NULL;
    if (!ops || !out || size < 1 || rank < 0 || rank >= size) {
        if (ops && ops->close) ops->close(impl);
        return ds_err(DSCKPT_EINVAL, "rt_comm_create: bad arguments (rank %d of %d)", rank, size);
    }
    *out = NULL;
    DS_TRYGOTO(ds_calloc(1, sizeof *c, &c), fail);
    c->ops = ops;
    c->impl = impl;
    c->rank = rank;
    c->size = size;
    c->max_msg = DEFAULT_MAX_MESSAGE;
    size_t W = (size_t)size;
    DS_TRYGOTO(ds_calloc(W, sizeof *c->off, &c->off), fail);
    DS_TRYGOTO(ds_calloc(W, sizeof *c->cnt, &c->cnt), fail);
    DS_TRYGOTO(ds_calloc(W, sizeof *c->disp, &c->disp), fail);
    DS_TRYGOTO(ds_calloc(W, sizeof *c->sbytes, &c->sbytes), fail);
    DS_TRYGOTO(ds_calloc(W, sizeof *c->rbytes, &c->rbytes), fail);
    DS_TRYGOTO(ds_calloc(W, sizeof *c->sends, &c->sends), fail);
    DS_TRYGOTO(ds_calloc(W, sizeof *c->recvs, &c->recvs), fail);
    DS_TRYGOTO(ds_calloc(W, sizeof *c->srcs, &c->srcs), fail);
    DS_TRYGOTO(ds_calloc(W, sizeof *c->gcnt, &c->gcnt), fail);
    DS_TRYGOTO(ds_calloc(W, sizeof *c->gdisp, &c->gdisp), fail);
    *out = c;
    return DSCKPT_OK;
fail:
    if (c) {
        c->impl = impl;
        rt_comm_close(c);
    } else if (ops->close) {
        ops->close(impl);
    }
    return st;
}

void rt_comm_close(rt_comm *c) {
    if (!c) return;
    if (c->ops && c->ops->close) c->ops->close(c->impl);
    if (c->dev) c->dev->free_host(c->dev->ctx, c->stage);
    free(c->scratch);
    free(c->off);
    free(c->cnt);
    free(c->disp);
    free(c->sbytes);
    free(c->rbytes);
    free(c->sends);
    free(c->recvs);
    free(c->srcs);
    free(c->gcnt);
    free(c->gdisp);
    free(c);
}

void rt_comm_abort(rt_comm *c, int code) {
    if (c && c->ops && c->ops->abort) c->ops->abort(c->impl, code);
    /* No backend to end the job: this process is the job. */
    exit(code ? code : 1);
}

int rt_comm_rank(const rt_comm *c) { return c ? c->rank : 0; }
int rt_comm_size(const rt_comm *c) { return c ? c->size : 1; }
const char *rt_comm_backend(const rt_comm *c) { return c ? c->ops->name : "none"; }

void rt_comm_set_stream(rt_comm *c, void *stream) {
    if (c) c->stream = stream;
}

void *rt_comm_stream(const rt_comm *c) { return c ? c->stream : NULL; }

/* ---- device buffers staged through the host (rt_comm_set_device) ------------------- */

void rt_comm_set_device(rt_comm *c, const rt_device *dev) {
    if (!c) return;
    if (c->dev) c->dev->free_host(c->dev->ctx, c->stage);
    c->stage = NULL;
    c->stage_bytes = 0;
    c->dev = dev && dev->is_device ? dev : NULL; /* a host-memory table needs no staging */
}

static bool on_dev(const rt_comm *c, const void *p) { return c->dev && p && c->dev->is_device(c->dev->ctx, p); }

static dsckpt_status need_stage(rt_comm *c, size_t bytes) {
    if (bytes <= c->stage_bytes) return DSCKPT_OK;
    c->dev->free_host(c->dev->ctx, c->stage);
    c->stage = NULL;
    c->stage_bytes = 0;
    DS_TRY(c->dev->alloc_host(c->dev->ctx, bytes ? bytes : 1, &c->stage));
    c->stage_bytes = bytes;
    return DSCKPT_OK;
}

/* host <- src (device or host) and dst (device or host) <- host. */
static dsckpt_status stage_in(rt_comm *c, void *host, const void *src, size_t bytes) {
    if (!bytes) return DSCKPT_OK;
    if (on_dev(c, src)) return c->dev->d2h(c->dev->ctx, host, src, bytes);
    memcpy(host, src, bytes);
    return DSCKPT_OK;
}

static dsckpt_status stage_out(rt_comm *c, void *dst, const void *host, size_t bytes) {
    if (!bytes) return DSCKPT_OK;
    if (on_dev(c, dst)) return c->dev->h2d(c->dev->ctx, dst, host, bytes);
    memcpy(dst, host, bytes);
    return DSCKPT_OK;
}

/* dst <- src within this rank (a gather of one rank), each in device or host
 * memory. Device blocks do not overlap; host ones may. */
static dsckpt_status local_copy(rt_comm *c, void *dst, const void *src, size_t bytes) {
    if (!bytes || dst == src) return DSCKPT_OK;
    bool sd = on_dev(c, src), dd = on_dev(c, dst);
    if (sd && dd) return c->dev->d2d(c->dev->ctx, dst, src, bytes);
    if (sd) return c->dev->d2h(c->dev->ctx, dst, src, bytes);
    if (dd) return c->dev->h2d(c->dev->ctx, dst, src, bytes);
    memmove(dst, src, bytes);
    return DSCKPT_OK;
}

void rt_comm_stats(const rt_comm *c, double *seconds, uint64_t *bytes_sent) {
    if (seconds) *seconds = c ? c->seconds : 0.0;
    if (bytes_sent) *bytes_sent = c ? c->bytes_sent : 0;
}

void rt_comm_stats_reset(rt_comm *c) {
    if (!c) return;
    c->seconds = 0.0;
    c->bytes_sent = 0;
}

dsckpt_status rt_comm_set_max_message(rt_comm *c, size_t bytes) {
    if (!c) return ds_err(DSCKPT_EINVAL, "rt_comm_set_max_message: NULL handle");
    if (bytes < MIN_MAX_MESSAGE)
        return ds_err(DSCKPT_EINVAL, "rt_comm_set_max_message: %zu bytes is below the minimum %zu",
                      bytes, MIN_MAX_MESSAGE);
    c->max_msg = DS_MIN(bytes, MAX_MAX_MESSAGE);
    return DSCKPT_OK;
}

/* ---- internal collectives (no timing; the public wrappers time) ------------------- */

/* Gathers rank r's counts[r] bytes into recv + displs[r] on every rank, in pieces of at
 * most max_msg bytes per rank. send NULL: this rank's block is already in place. */
static dsckpt_status gatherv_bytes(rt_comm *c, const void *send, const size_t *counts,
                                   const size_t *displs, void *recv) {
    size_t W = (size_t)c->size, maxc = 0;
    for (size_t r = 0; r < W; r++) maxc = DS_MAX(maxc, counts[r]);
    if (maxc == 0) return DSCKPT_OK;
    /* Piece counts and displacements (the caller's arrays are c->cnt / c->disp). */
    size_t *pc = c->sbytes, *pd = c->rbytes;
    for (size_t base = 0; base < maxc; base += c->max_msg) {
        for (size_t r = 0; r < W; r++) {
            pc[r] = counts[r] > base ? DS_MIN(counts[r] - base, c->max_msg) : 0;
            pd[r] = displs[r] + (pc[r] ? base : 0);
        }
        const void *s = send ? (const uint8_t *)send + DS_MIN(base, counts[c->rank]) : NULL;
        DS_TRY(c->ops->allgatherv(c->impl, c->stream, s, pc, pd, recv));
    }
    c->bytes_sent += (uint64_t)counts[c->rank] * (W - 1);
    return DSCKPT_OK;
}

/* Bytes per rank in one gather round: at most the message cap arrives at the root
 * per round, so a backend may hand the whole round to MPI with int counts. */
static size_t gather_piece(const rt_comm *c) { return DS_MAX(c->max_msg / (size_t)c->size, (size_t)1); }

/* One gather round through the point-to-point exchange (a backend without a gather
 * op): every rank sends its piece to the root; the root receives each in place. */
static dsckpt_status gather_by_exchange(rt_comm *c, const void *send, size_t bytes, int root, void *recv,
                                        const size_t *counts, const size_t *displs) {
    for (int r = 0; r < c->size; r++) {
        bool take = c->rank == root && (r != root || send);
        c->sends[r] = r == root ? send : NULL;
        c->sbytes[r] = r == root && send ? bytes : 0;
        c->recvs[r] = take && counts[r] ? (uint8_t *)recv + displs[r] : NULL;
        c->rbytes[r] = take ? counts[r] : 0;
    }
    return c->ops->exchange(c->impl, c->stream, c->sends, c->sbytes, (void *const *)c->recvs, c->rbytes);
}

/* `rounds` gather rounds of gather_piece() bytes per rank: this rank's block is
 * send[0..bytes) (NULL on the root: already in place); on the root, rank r's
 * counts[r] bytes go to recv + displs[r]. */
static dsckpt_status gather_rounds(rt_comm *c, const void *send, size_t bytes, int root, void *recv,
                                   const size_t *counts, const size_t *displs, uint64_t rounds) {
    bool is_root = c->rank == root;
    size_t piece = gather_piece(c), *pc = c->cnt, *pd = c->off;
    for (uint64_t k = 0; k < rounds; k++) {
        size_t base = (size_t)k * piece;
        size_t mine = bytes > base ? DS_MIN(bytes - base, piece) : 0;
        for (int r = 0; is_root && r < c->size; r++) {
            pc[r] = counts[r] > base ? DS_MIN(counts[r] - base, piece) : 0;
            pd[r] = displs[r] + (pc[r] ? base : 0);
        }
        const void *s = send ? (const uint8_t *)send + (mine ? base : 0) : NULL;
        if (c->ops->gatherv)
            DS_TRY(c->ops->gatherv(c->impl, c->stream, s, mine, root, is_root ? recv : NULL, is_root ? pc : NULL,
                                   is_root ? pd : NULL));
        else
            DS_TRY(gather_by_exchange(c, s, mine, root, recv, pc, pd));
    }
    if (!is_root) c->bytes_sent += bytes;
    return DSCKPT_OK;
}

/* out[i] = ((srcs[0][i] + srcs[1][i]) + ...) + srcs[W-1][i] for i < m. out may be one
 * of the sources at the same index (in place), never a shifted one. */
static void sum_rank_order(float *out, const float *const *srcs, int W, size_t m) {
    size_t nblk = (m + SUM_BLOCK - 1) / SUM_BLOCK;
#pragma omp parallel for schedule(static) if (m >= SUM_PARALLEL_MIN)
    for (size_t b = 0; b < nblk; b++) {
        float acc[SUM_BLOCK];
        size_t i0 = b * SUM_BLOCK, len = DS_MIN((size_t)SUM_BLOCK, m - i0);
        const float *s0 = srcs[0] + i0;
        for (size_t j = 0; j < len; j++) acc[j] = s0[j];
        for (int s = 1; s < W; s++) {
            const float *sp = srcs[s] + i0;
            for (size_t j = 0; j < len; j++) acc[j] += sp[j];
        }
        memcpy(out + i0, acc, len * sizeof(float));
    }
}

static dsckpt_status check_segments(rt_comm *c, const float *send, const size_t *counts,
                                    float *recv, size_t *total_out) {
    size_t W = (size_t)c->size;
    uint64_t total = 0;
    for (size_t r = 0; r < W; r++) {
        c->off[r] = (size_t)total;
        uint64_t bytes;
        if (ds_add_overflow(total, counts[r], &total) || ds_mul_overflow(total, sizeof(float), &bytes) ||
            bytes > SIZE_MAX)
            return ds_err(DSCKPT_EINVAL, "reduce_scatterv: counts overflow at rank %zu", r);
    }
    if (total && !send) return ds_err(DSCKPT_EINVAL, "reduce_scatterv: NULL send buffer");
    size_t mine = counts[c->rank];
    if (mine && !recv) return ds_err(DSCKPT_EINVAL, "reduce_scatterv: NULL receive buffer");
    if (mine && recv != send + c->off[c->rank] &&
        overlap(send, (size_t)total * sizeof(float), recv, mine * sizeof(float)))
        return ds_err(DSCKPT_EINVAL,
                      "reduce_scatterv: recv overlaps send without being the rank's own segment");
    *total_out = (size_t)total;
    return DSCKPT_OK;
}

static dsckpt_status reduce_scatterv(rt_comm *c, const float *send, const size_t *counts,
                                     float *recv, size_t total) {
    int W = c->size, me = c->rank;
    size_t mine = counts[me];
    const float *own = send + c->off[me];
    /* A backend's own sum first, at W = 1 too: its buffers may be device memory,
     * which the host copy below cannot touch. */
    if (c->ops->reduce_scatter_sum) {
        DS_TRY(c->ops->reduce_scatter_sum(c->impl, c->stream, send, counts, recv));
        c->bytes_sent += (uint64_t)(total - mine) * sizeof(float);
        return DSCKPT_OK;
    }
    if (W == 1) {
        if (mine && recv != own) memcpy(recv, own, mine * sizeof(float));
        return DSCKPT_OK;
    }
    size_t maxc = 0;
    for (int r = 0; r < W; r++) maxc = DS_MAX(maxc, counts[r]);
    if (maxc == 0) return DSCKPT_OK;
    /* Slice length per round: one message per peer, and W-1 slices in the scratch. */
    size_t chunk = DS_MIN(c->max_msg / sizeof(float), RS_SCRATCH_BYTES / sizeof(float) / (size_t)(W - 1));
    chunk = DS_MAX(chunk, (size_t)1);
    size_t slot_len = DS_MIN(chunk, mine);
    DS_TRY(need_scratch(c, DS_MAX(slot_len, (size_t)1) * sizeof(float) * (size_t)(W - 1)));
    float *scr = c->scratch;
    for (size_t base = 0; base < maxc; base += chunk) {
        size_t m = mine > base ? DS_MIN(mine - base, chunk) : 0;
        for (int r = 0; r < W; r++) {
            size_t k = counts[r] > base ? DS_MIN(counts[r] - base, chunk) : 0;
            int slot = r < me ? r : r - 1;
            if (r == me) {
                c->sbytes[r] = c->rbytes[r] = 0;
                c->sends[r] = NULL;
                c->recvs[r] = NULL;
                c->srcs[r] = own + base;
            } else {
                c->sends[r] = send + c->off[r] + base;
                c->sbytes[r] = k * sizeof(float);
                c->recvs[r] = scr + (size_t)slot * slot_len;
                c->rbytes[r] = m * sizeof(float);
                c->srcs[r] = scr + (size_t)slot * slot_len;
            }
        }
        DS_TRY(c->ops->exchange(c->impl, c->stream, c->sends, c->sbytes, (void *const *)c->recvs, c->rbytes));
        if (m) sum_rank_order(recv + base, c->srcs, W, m);
    }
    c->bytes_sent += (uint64_t)(total - mine) * sizeof(float);
    return DSCKPT_OK;
}

/* ---- public collectives ------------------------------------------------------------ */

#define CHECK_HANDLE(c, what) \
    if (!(c)) return ds_err(DSCKPT_EINVAL, "%s: NULL handle", what)

dsckpt_status rt_comm_barrier(rt_comm *c) {
    CHECK_HANDLE(c, "rt_comm_barrier");
    double t0 = rt_now_s();
    dsckpt_status st = c->ops->barrier(c->impl, c->stream);
    c->seconds += rt_now_s() - t0;
    return st;
}

dsckpt_status rt_comm_bcast(rt_comm *c, void *buf, size_t bytes, int root) {
    CHECK_HANDLE(c, "rt_comm_bcast");
    if (root < 0 || root >= c->size)
        return ds_err(DSCKPT_EINVAL, "rt_comm_bcast: root %d outside [0, %d)", root, c->size);
    if (bytes && !buf) return ds_err(DSCKPT_EINVAL, "rt_comm_bcast: NULL buffer");
    if (c->size == 1 || bytes == 0) return DSCKPT_OK;
    if (on_dev(c, buf)) {
        DS_TRY(need_stage(c, bytes));
        DS_TRY(stage_in(c, c->stage, buf, bytes));
        DS_TRY(rt_comm_bcast(c, c->stage, bytes, root));
        return stage_out(c, buf, c->stage, bytes);
    }
    double t0 = rt_now_s();
    dsckpt_status st = DSCKPT_OK;
    for (size_t off = 0; off < bytes && st == DSCKPT_OK; off += c->max_msg)
        st = c->ops->bcast(c->impl, c->stream, (uint8_t *)buf + off, DS_MIN(bytes - off, c->max_msg), root);
    if (st == DSCKPT_OK && c->rank == root) c->bytes_sent += (uint64_t)bytes * (uint64_t)(c->size - 1);
    c->seconds += rt_now_s() - t0;
    return st;
}

dsckpt_status rt_comm_allgather(rt_comm *c, const void *send, size_t bytes_per_rank, void *recv) {
    CHECK_HANDLE(c, "rt_comm_allgather");
    size_t W = (size_t)c->size;
    uint64_t total;
    if (ds_mul_overflow(bytes_per_rank, W, &total) || total > SIZE_MAX)
        return ds_err(DSCKPT_EINVAL, "rt_comm_allgather: %zu bytes x %zu ranks overflows",
                      bytes_per_rank, W);
    if (bytes_per_rank == 0) return DSCKPT_OK;
    if (!send || !recv) return ds_err(DSCKPT_EINVAL, "rt_comm_allgather: NULL buffer");
    uint8_t *mine = (uint8_t *)recv + (size_t)c->rank * bytes_per_rank;
    bool in_place = (const uint8_t *)send == mine;
    if (!in_place && overlap(send, bytes_per_rank, recv, (size_t)total))
        return ds_err(DSCKPT_EINVAL, "rt_comm_allgather: send overlaps recv without being in place");
    if (on_dev(c, send) || on_dev(c, recv)) {
        DS_TRY(need_stage(c, (size_t)total));
        uint8_t *h = c->stage;
        DS_TRY(stage_in(c, h + (size_t)c->rank * bytes_per_rank, send, bytes_per_rank));
        DS_TRY(rt_comm_allgather(c, h + (size_t)c->rank * bytes_per_rank, bytes_per_rank, h));
        return stage_out(c, recv, h, (size_t)total);
    }
    double t0 = rt_now_s();
    for (size_t r = 0; r < W; r++) {
        c->cnt[r] = bytes_per_rank;
        c->disp[r] = r * bytes_per_rank;
    }
    dsckpt_status st = gatherv_bytes(c, in_place ? NULL : send, c->cnt, c->disp, recv);
    c->seconds += rt_now_s() - t0;
    return st;
}

/* The root's half of rt_comm_gatherv's checks: counts, recv, overlap; the block
 * displacements into c->gdisp and the rounds the blocks need into *rounds. */
static dsckpt_status gather_root_args(rt_comm *c, const void *send, size_t bytes, const void *recv,
                                      const size_t *counts, size_t *total_out, uint64_t *rounds) {
    if (!counts) return ds_err(DSCKPT_EINVAL, "rt_comm_gatherv: NULL counts on the root");
    if (counts[c->rank] != bytes)
        return ds_err(DSCKPT_EINVAL, "rt_comm_gatherv: the root sends %zu bytes but counts says %zu", bytes,
                      counts[c->rank]);
    uint64_t total = 0;
    size_t maxc = 0;
    for (int r = 0; r < c->size; r++) {
        c->gdisp[r] = (size_t)total;
        if (ds_add_overflow(total, counts[r], &total) || total > SIZE_MAX)
            return ds_err(DSCKPT_EINVAL, "rt_comm_gatherv: counts overflow at rank %d", r);
        maxc = DS_MAX(maxc, counts[r]);
    }
    if (total && !recv) return ds_err(DSCKPT_EINVAL, "rt_comm_gatherv: NULL receive buffer on the root");
    const uint8_t *mine = (const uint8_t *)recv + c->gdisp[c->rank];
    if (bytes && (const uint8_t *)send != mine && overlap(send, bytes, recv, (size_t)total))
        return ds_err(DSCKPT_EINVAL, "rt_comm_gatherv: send overlaps recv without being in place");
    size_t piece = gather_piece(c);
    *rounds = maxc / piece + (maxc % piece != 0);
    *total_out = (size_t)total;
    return DSCKPT_OK;
}

/* Device buffers (rt_comm_set_device): the gather runs on host staging. */
static dsckpt_status gatherv_staged(rt_comm *c, const void *send, size_t bytes, int root, void *recv,
                                    const size_t *counts, size_t total) {
    bool is_root = c->rank == root;
    size_t at = is_root ? c->gdisp[root] : 0;
    DS_TRY(need_stage(c, is_root ? total : bytes));
    uint8_t *h = c->stage;
    DS_TRY(stage_in(c, h + at, send, bytes));
    DS_TRY(rt_comm_gatherv(c, h + at, bytes, root, is_root ? h : NULL, counts));
    return is_root ? stage_out(c, recv, h, total) : DSCKPT_OK;
}

dsckpt_status rt_comm_gatherv(rt_comm *c, const void *send, size_t bytes, int root, void *recv,
                              const size_t *counts) {
    CHECK_HANDLE(c, "rt_comm_gatherv");
    if (root < 0 || root >= c->size)
        return ds_err(DSCKPT_EINVAL, "rt_comm_gatherv: root %d outside [0, %d)", root, c->size);
    if (bytes && !send) return ds_err(DSCKPT_EINVAL, "rt_comm_gatherv: NULL send buffer");
    bool is_root = c->rank == root;
    size_t total = 0;
    uint64_t rounds = 0;
    dsckpt_status ast = is_root ? gather_root_args(c, send, bytes, recv, counts, &total, &rounds) : DSCKPT_OK;
    if (c->size == 1) return ast ? ast : local_copy(c, recv, send, bytes);
    if (on_dev(c, send) || (is_root && on_dev(c, recv))) {
        if (!ast) return gatherv_staged(c, send, bytes, root, recv, counts, total);
        rounds = UINT64_MAX; /* tell the others before failing (below) */
    }
    double t0 = rt_now_s();
    /* Only the root knows every block's size: it says how many rounds, or that its
     * arguments were refused (UINT64_MAX), so that no rank waits for the others. */
    if (ast) rounds = UINT64_MAX;
    dsckpt_status st = c->ops->bcast(c->impl, c->stream, &rounds, sizeof rounds, root);
    if (!st && is_root) c->bytes_sent += sizeof rounds * (uint64_t)(c->size - 1);
    if (!st && rounds == UINT64_MAX)
        st = ast ? ast : ds_err(DSCKPT_EINVAL, "rt_comm_gatherv: the root refused its arguments");
    if (!st) {
        bool in_place = is_root && (const uint8_t *)send == (const uint8_t *)recv + c->gdisp[root];
        st = gather_rounds(c, in_place ? NULL : send, bytes, root, recv, counts, c->gdisp, rounds);
    }
    c->seconds += rt_now_s() - t0;
    return st;
}

dsckpt_status rt_comm_exchangev(rt_comm *c, const void *send, const uint64_t *send_bytes, void *recv,
                                const uint64_t *recv_bytes) {
    CHECK_HANDLE(c, "rt_comm_exchangev");
    int W = c->size, me = c->rank;
    uint64_t most = 0, sent = 0;
    for (int r = 0; r < W; r++) {
        if ((send_bytes[r] && !send) || (recv_bytes[r] && !recv))
            return ds_err(DSCKPT_EINVAL, "rt_comm_exchangev: NULL buffer");
        most = DS_MAX(most, DS_MAX(send_bytes[r], recv_bytes[r]));
        if (r != me) sent += send_bytes[r];
    }
    if (send_bytes[me] != recv_bytes[me])
        return ds_err(DSCKPT_EINVAL, "rt_comm_exchangev: sending %llu bytes to this rank but receiving %llu",
                      (unsigned long long)send_bytes[me], (unsigned long long)recv_bytes[me]);
    if (on_dev(c, send) || on_dev(c, recv)) return ds_err(DSCKPT_EINVAL, "rt_comm_exchangev: device buffer");
    /* Every rank runs the rounds that the largest block of any rank needs. */
    double rounds = (double)((most + c->max_msg - 1) / c->max_msg);
    DS_TRY(rt_comm_allreduce_max_f64(c, &rounds, 1));
    double t0 = rt_now_s();
    for (uint64_t i = 0, pos = 0; i < (uint64_t)rounds; i++, pos += c->max_msg) {
        uint64_t so = 0, ro = 0;
        for (int r = 0; r < W; r++) {
            uint64_t sb = send_bytes[r] > pos ? DS_MIN(send_bytes[r] - pos, (uint64_t)c->max_msg) : 0;
            uint64_t rb = recv_bytes[r] > pos ? DS_MIN(recv_bytes[r] - pos, (uint64_t)c->max_msg) : 0;
            c->sends[r] = sb ? (const uint8_t *)send + so + pos : NULL;
            c->sbytes[r] = (size_t)sb;
            c->recvs[r] = rb ? (uint8_t *)recv + ro + pos : NULL;
            c->rbytes[r] = (size_t)rb;
            so += send_bytes[r];
            ro += recv_bytes[r];
        }
        dsckpt_status st = c->ops->exchange(c->impl, c->stream, c->sends, c->sbytes, (void *const *)c->recvs, c->rbytes);
        if (st) {
            c->seconds += rt_now_s() - t0;
            return st;
        }
    }
    c->bytes_sent += sent;
    c->seconds += rt_now_s() - t0;
    return DSCKPT_OK;
}

dsckpt_status rt_comm_gather(rt_comm *c, const void *send, size_t bytes, int root, void *recv) {
    CHECK_HANDLE(c, "rt_comm_gather");
    if (root < 0 || root >= c->size)
        return ds_err(DSCKPT_EINVAL, "rt_comm_gather: root %d outside [0, %d)", root, c->size);
    uint64_t total;
    if (ds_mul_overflow(bytes, (uint64_t)c->size, &total) || total > SIZE_MAX)
        return ds_err(DSCKPT_EINVAL, "rt_comm_gather: %zu bytes x %d ranks overflows", bytes, c->size);
    if (bytes && (!send || (c->rank == root && !recv))) return ds_err(DSCKPT_EINVAL, "rt_comm_gather: NULL buffer");
    bool is_root = c->rank == root;
    uint8_t *mine = is_root ? (uint8_t *)recv + (size_t)root * bytes : NULL;
    if (bytes && is_root && (const uint8_t *)send != mine && overlap(send, bytes, recv, (size_t)total))
        return ds_err(DSCKPT_EINVAL, "rt_comm_gather: send overlaps recv without being in place");
    if (c->size == 1) return local_copy(c, recv, send, bytes);
    if (on_dev(c, send) || (is_root && on_dev(c, recv))) { /* through host staging, as the same gather */
        size_t at = is_root ? (size_t)root * bytes : 0;
        DS_TRY(need_stage(c, is_root ? (size_t)total : bytes));
        uint8_t *h = c->stage;
        DS_TRY(stage_in(c, h + at, send, bytes));
        DS_TRY(rt_comm_gather(c, h + at, bytes, root, is_root ? h : NULL));
        return is_root ? stage_out(c, recv, h, (size_t)total) : DSCKPT_OK;
    }
    double t0 = rt_now_s();
    for (int r = 0; r < c->size; r++) c->gcnt[r] = bytes;
    for (int r = 0; r < c->size; r++) c->gdisp[r] = (size_t)r * bytes;
    size_t piece = gather_piece(c);
    uint64_t rounds = bytes / piece + (bytes % piece != 0);
    dsckpt_status st = gather_rounds(c, is_root && send == mine ? NULL : send, bytes, root, recv, c->gcnt,
                                     c->gdisp, rounds);
    c->seconds += rt_now_s() - t0;
    return st;
}

dsckpt_status rt_comm_reduce_scatterv_f32(rt_comm *c, const float *send, const size_t *counts,
                                          float *recv) {
    CHECK_HANDLE(c, "rt_comm_reduce_scatterv_f32");
    if (!counts) return ds_err(DSCKPT_EINVAL, "rt_comm_reduce_scatterv_f32: NULL counts");
    size_t total = 0;
    DS_TRY(check_segments(c, send, counts, recv, &total));
    if (on_dev(c, send) || on_dev(c, recv)) {
        size_t mine = counts[c->rank];
        DS_TRY(need_stage(c, (total + mine) * sizeof(float)));
        float *h = c->stage;
        DS_TRY(stage_in(c, h, send, total * sizeof(float)));
        DS_TRY(rt_comm_reduce_scatterv_f32(c, h, counts, h + total));
        return stage_out(c, recv, h + total, mine * sizeof(float));
    }
    double t0 = rt_now_s();
    dsckpt_status st = reduce_scatterv(c, send, counts, recv, total);
    c->seconds += rt_now_s() - t0;
    return st;
}

dsckpt_status rt_comm_allreduce_f32(rt_comm *c, float *buf, size_t n) {
    CHECK_HANDLE(c, "rt_comm_allreduce_f32");
    if (n && !buf) return ds_err(DSCKPT_EINVAL, "rt_comm_allreduce_f32: NULL buffer");
    if (n > SIZE_MAX / sizeof(float))
        return ds_err(DSCKPT_EINVAL, "rt_comm_allreduce_f32: %zu floats overflow", n);
    size_t W = (size_t)c->size;
    if (W == 1 || n == 0) return DSCKPT_OK;
    if (on_dev(c, buf)) {
        DS_TRY(need_stage(c, n * sizeof(float)));
        DS_TRY(stage_in(c, c->stage, buf, n * sizeof(float)));
        DS_TRY(rt_comm_allreduce_f32(c, c->stage, n));
        return stage_out(c, buf, c->stage, n * sizeof(float));
    }
    double t0 = rt_now_s();
    /* c->cnt is the split (elements), then the gather's byte counts; c->off the offsets. */
    size_t acc = 0;
    for (size_t r = 0; r < W; r++) {
        c->cnt[r] = n / W + (r < n % W);
        c->off[r] = acc;
        acc += c->cnt[r];
    }
    /* The own segment is reduced in place, then gathered in place. */
    dsckpt_status st = reduce_scatterv(c, buf, c->cnt, buf + c->off[c->rank], n);
    if (st == DSCKPT_OK) {
        for (size_t r = 0; r < W; r++) {
            c->disp[r] = c->off[r] * sizeof(float);
            c->cnt[r] *= sizeof(float);
        }
        st = gatherv_bytes(c, NULL, c->cnt, c->disp, buf);
    }
    c->seconds += rt_now_s() - t0;
    return st;
}

/* Gathers vals[0..n) of every rank, as raw bytes of `elem` size, into the scratch. */
static dsckpt_status gather_small(rt_comm *c, const void *vals, size_t n, size_t elem,
                                  const uint8_t **all) {
    size_t W = (size_t)c->size, blk;
    uint64_t total;
    if (ds_mul_overflow(n, elem, &total) || ds_mul_overflow(total, W, &total) || total > SIZE_MAX)
        return ds_err(DSCKPT_EINVAL, "collective of %zu values overflows", n);
    blk = n * elem;
    DS_TRY(need_scratch(c, DS_MAX((size_t)total, (size_t)1)));
    uint8_t *scr = c->scratch;
    memcpy(scr + (size_t)c->rank * blk, vals, blk);
    for (size_t r = 0; r < W; r++) {
        c->cnt[r] = blk;
        c->disp[r] = r * blk;
    }
    DS_TRY(gatherv_bytes(c, NULL, c->cnt, c->disp, scr));
    *all = scr;
    return DSCKPT_OK;
}

dsckpt_status rt_comm_allreduce_f64(rt_comm *c, double *vals, size_t n) {
    CHECK_HANDLE(c, "rt_comm_allreduce_f64");
    if (n && !vals) return ds_err(DSCKPT_EINVAL, "rt_comm_allreduce_f64: NULL buffer");
    if (c->size == 1 || n == 0) return DSCKPT_OK;
    double t0 = rt_now_s();
    const uint8_t *all = NULL;
    dsckpt_status st = gather_small(c, vals, n, sizeof(double), &all);
    if (st == DSCKPT_OK) {
        const double *a = (const double *)(const void *)all;
        for (size_t i = 0; i < n; i++) {
            double s = a[i];
            for (int r = 1; r < c->size; r++) s += a[(size_t)r * n + i];
            vals[i] = s;
        }
    }
    c->seconds += rt_now_s() - t0;
    return st;
}

dsckpt_status rt_comm_allreduce_max_f64(rt_comm *c, double *vals, size_t n) {
    CHECK_HANDLE(c, "rt_comm_allreduce_max_f64");
    if (n && !vals) return ds_err(DSCKPT_EINVAL, "rt_comm_allreduce_max_f64: NULL buffer");
    if (c->size == 1 || n == 0) return DSCKPT_OK;
    double t0 = rt_now_s();
    const uint8_t *all = NULL;
    dsckpt_status st = gather_small(c, vals, n, sizeof(double), &all);
    if (st == DSCKPT_OK) {
        const double *a = (const double *)(const void *)all;
        for (size_t i = 0; i < n; i++) {
            double m = a[i];
            for (int r = 1; r < c->size; r++) {
                double v = a[(size_t)r * n + i];
                if (m != m) break; /* NaN sticks */
                if (v != v || v > m) m = v;
            }
            vals[i] = m;
        }
    }
    c->seconds += rt_now_s() - t0;
    return st;
}

dsckpt_status rt_comm_allreduce_or(rt_comm *c, bool *flag) {
    CHECK_HANDLE(c, "rt_comm_allreduce_or");
    if (!flag) return ds_err(DSCKPT_EINVAL, "rt_comm_allreduce_or: NULL flag");
    if (c->size == 1) return DSCKPT_OK;
    double t0 = rt_now_s();
    uint8_t v = *flag ? 1 : 0;
    const uint8_t *all = NULL;
    dsckpt_status st = gather_small(c, &v, 1, 1, &all);
    if (st == DSCKPT_OK) {
        bool any = false;
        for (int r = 0; r < c->size; r++) any = any || all[r];
        *flag = any;
    }
    c->seconds += rt_now_s() - t0;
    return st;
}

/* ---- the self backend: a world of one -------------------------------------------- */

static dsckpt_status self_barrier(void *impl, void *stream) {
    DS_UNUSED(impl), DS_UNUSED(stream);
    return DSCKPT_OK;
}

static dsckpt_status self_bcast(void *impl, void *stream, void *buf, size_t bytes, int root) {
    DS_UNUSED(impl), DS_UNUSED(stream), DS_UNUSED(buf), DS_UNUSED(bytes), DS_UNUSED(root);
    return DSCKPT_OK;
}

static dsckpt_status self_allgatherv(void *impl, void *stream, const void *send, const size_t *counts,
                                     const size_t *displs, void *recv) {
    DS_UNUSED(impl), DS_UNUSED(stream);
    if (send && counts[0]) memmove((uint8_t *)recv + displs[0], send, counts[0]);
    return DSCKPT_OK;
}

static dsckpt_status self_gatherv(void *impl, void *stream, const void *send, size_t bytes, int root, void *recv,
                                  const size_t *counts, const size_t *displs) {
    DS_UNUSED(impl), DS_UNUSED(stream), DS_UNUSED(root), DS_UNUSED(counts);
    if (send && bytes) memmove((uint8_t *)recv + displs[0], send, bytes);
    return DSCKPT_OK;
}

static dsckpt_status self_exchange(void *impl, void *stream, const void *const *sends, const size_t *send_bytes,
                                   void *const *recvs, const size_t *recv_bytes) {
    DS_UNUSED(impl), DS_UNUSED(stream);
    if (send_bytes[0] != recv_bytes[0])
        return ds_err(DSCKPT_EINTERNAL, "self exchange: sending %zu bytes but receiving %zu",
                      send_bytes[0], recv_bytes[0]);
    if (send_bytes[0]) memmove(recvs[0], sends[0], send_bytes[0]);
    return DSCKPT_OK;
}

__attribute__((noreturn)) static void self_abort(void *impl, int code) {
    DS_UNUSED(impl);
    exit(code ? code : 1);
}

static void self_close(void *impl) { DS_UNUSED(impl); }

static const rt_comm_ops self_ops = {
    .name = "self",
    .barrier = self_barrier,
    .bcast = self_bcast,
    .allgatherv = self_allgatherv,
    .exchange = self_exchange,
    .gatherv = self_gatherv,
    .abort = self_abort,
    .close = self_close,
};

dsckpt_status rt_comm_open_self(rt_comm **out) {
    if (!out) return ds_err(DSCKPT_EINVAL, "rt_comm_open_self: NULL out");
    return rt_comm_create(&self_ops, NULL, 0, 1, out);
}
