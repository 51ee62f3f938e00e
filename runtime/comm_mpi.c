/*
 * comm_mpi.c — the MPI backend of comm.h: initialisation (MPI_THREAD_FUNNELED), a
 * private duplicate of MPI_COMM_WORLD with errors returned, and the byte-moving ops
 * (barrier, broadcast, all-gather-v, gather-v to one rank, point-to-point exchange). MPI error codes are
 * translated here, once, into DSCKPT_EMPI with MPI_Error_string's text.
 *
 * Every message handed to MPI is below INT_MAX bytes (comm.c splits at the message
 * cap). MPI_Allgatherv also needs its displacements to fit an int; when they do not,
 * the gather runs as point-to-point messages instead. A gather to one rank is
 * MPI_Gatherv; only the root sees its displacements, so when they do not fit an
 * int it receives the round packed (comm.c keeps a round below the cap) instead.
 */
#include "comm.h"
#include "internal.h"

#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

/* Tags of the point-to-point paths; each op completes all its requests before it
 * returns, and only one thread communicates, so messages of two calls never mix. */
#define TAG_EXCHANGE 0x4453
#define TAG_GATHER 0x4454

typedef struct mpi_impl {
    MPI_Comm comm;
    int rank, size;
    bool finalize; /* we called MPI_Init_thread */
    int *icounts, *idispls;
    MPI_Request *reqs;
    uint8_t *gscr; /* a gather round packed on the root (mpi_gatherv) */
    size_t gscr_cap;
} mpi_impl;

static dsckpt_status mpi_fail(int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
    msg[DS_MAX(0, DS_MIN(len, MPI_MAX_ERROR_STRING))] = '\0';
    return ds_err(DSCKPT_EMPI, "%s failed: %s (MPI error %d)", what, len ? msg : "unknown error", rc);
}

#define MPI_TRY(call, what)                          \
    do {                                             \
        int mpi_rc_ = (call);                        \
        if (mpi_rc_ != MPI_SUCCESS) return mpi_fail(mpi_rc_, what); \
    } while (0)

static dsckpt_status mpi_barrier(void *impl, void *stream) {
    mpi_impl *m = impl;
    DS_UNUSED(stream);
    MPI_TRY(MPI_Barrier(m->comm), "MPI_Barrier");
    return DSCKPT_OK;
}

static dsckpt_status mpi_bcast(void *impl, void *stream, void *buf, size_t bytes, int root) {
    mpi_impl *m = impl;
    DS_UNUSED(stream);
    if (bytes > INT_MAX) return ds_err(DSCKPT_EINTERNAL, "MPI broadcast piece of %zu bytes", bytes);
    MPI_TRY(MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, m->comm), "MPI_Bcast");
    return DSCKPT_OK;
}

static dsckpt_status wait_all(mpi_impl *m, int nreq, const char *what) {
    if (nreq == 0) return DSCKPT_OK;
    MPI_TRY(MPI_Waitall(nreq, m->reqs, MPI_STATUSES_IGNORE), what);
    return DSCKPT_OK;
}

static dsckpt_status mpi_allgatherv(void *impl, void *stream, const void *send, const size_t *counts,
                                    const size_t *displs, void *recv) {
    mpi_impl *m = impl;
    DS_UNUSED(stream);
    bool fits = true;
    for (int r = 0; r < m->size; r++) {
        if (counts[r] > INT_MAX) return ds_err(DSCKPT_EINTERNAL, "MPI gather piece of %zu bytes", counts[r]);
        if (displs[r] > (size_t)INT_MAX - counts[r]) fits = false;
    }
    uint8_t *rb = recv;
    if (fits) {
        for (int r = 0; r < m->size; r++) {
            m->icounts[r] = (int)counts[r];
            m->idispls[r] = (int)displs[r];
        }
        MPI_TRY(MPI_Allgatherv(send ? send : MPI_IN_PLACE, (int)counts[m->rank], MPI_BYTE, recv,
                               m->icounts, m->idispls, MPI_BYTE, m->comm),
                "MPI_Allgatherv");
        return DSCKPT_OK;
    }
    /* Displacements past INT_MAX (a gather of more than 2 GiB): each block travels as
     * its own message straight to its place. */
    const uint8_t *mine = send ? (const uint8_t *)send : rb + displs[m->rank];
    int nreq = 0;
    for (int r = 0; r < m->size; r++) {
        if (r == m->rank || counts[r] == 0) continue;
        MPI_TRY(MPI_Irecv(rb + displs[r], (int)counts[r], MPI_BYTE, r, TAG_GATHER, m->comm, &m->reqs[nreq++]),
                "MPI_Irecv (gather)");
    }
    for (int r = 0; r < m->size && counts[m->rank]; r++) {
        if (r == m->rank) continue;
        MPI_TRY(MPI_Isend(mine, (int)counts[m->rank], MPI_BYTE, r, TAG_GATHER, m->comm, &m->reqs[nreq++]),
                "MPI_Isend (gather)");
    }
    if (send && counts[m->rank]) memcpy(rb + displs[m->rank], send, counts[m->rank]);
    return wait_all(m, nreq, "MPI_Waitall (gather)");
}

/* One gather round (comm.h): MPI_Gatherv, the root's own block in place. The
 * round's counts sum to at most the message cap (below INT_MAX), but its
 * displacements may not fit an int (blocks placed past 2 GiB): the root then
 * receives the round packed into scratch and moves each block to its place. */
static dsckpt_status mpi_gatherv(void *impl, void *stream, const void *send, size_t bytes, int root, void *recv,
                                 const size_t *counts, const size_t *displs) {
    mpi_impl *m = impl;
    DS_UNUSED(stream);
    static const uint8_t none = 0;
    if (bytes > INT_MAX) return ds_err(DSCKPT_EINTERNAL, "MPI gather piece of %zu bytes", bytes);
    if (m->rank != root) {
        MPI_TRY(MPI_Gatherv(send ? send : &none, (int)bytes, MPI_BYTE, NULL, NULL, NULL, MPI_BYTE, root, m->comm),
                "MPI_Gatherv");
        return DSCKPT_OK;
    }
    uint8_t *rb = recv;
    if (send && bytes) memmove(rb + displs[root], send, bytes);
    bool fits = true;
    size_t packed = 0;
    for (int r = 0; r < m->size; r++) {
        if (counts[r] > INT_MAX || (r != root && counts[r] > (size_t)INT_MAX - packed))
            return ds_err(DSCKPT_EINTERNAL, "MPI gather round of more than %d bytes", INT_MAX);
        if (displs[r] > (size_t)INT_MAX - counts[r]) fits = false;
        m->icounts[r] = (int)counts[r];
        m->idispls[r] = (int)packed;
        if (r != root) packed += counts[r];
    }
    if (fits) {
        for (int r = 0; r < m->size; r++) m->idispls[r] = (int)displs[r];
        MPI_TRY(MPI_Gatherv(MPI_IN_PLACE, 0, MPI_BYTE, rb, m->icounts, m->idispls, MPI_BYTE, root, m->comm),
                "MPI_Gatherv");
        return DSCKPT_OK;
    }
    m->icounts[root] = 0;
    if (packed > m->gscr_cap) {
        free(m->gscr);
        m->gscr_cap = 0;
        DS_TRY(ds_malloc(packed, &m->gscr));
        m->gscr_cap = packed;
    }
    MPI_TRY(MPI_Gatherv(MPI_IN_PLACE, 0, MPI_BYTE, m->gscr, m->icounts, m->idispls, MPI_BYTE, root, m->comm),
            "MPI_Gatherv (packed)");
    for (int r = 0; r < m->size; r++)
        if (r != root && counts[r]) memcpy(rb + displs[r], m->gscr + m->idispls[r], counts[r]);
    return DSCKPT_OK;
}

static dsckpt_status mpi_exchange(void *impl, void *stream, const void *const *sends, const size_t *send_bytes,
                                  void *const *recvs, const size_t *recv_bytes) {
    mpi_impl *m = impl;
    DS_UNUSED(stream);
    int nreq = 0;
    /* Receives first, so that every send finds its receive posted. */
    for (int r = 0; r < m->size; r++) {
        if (r == m->rank || recv_bytes[r] == 0) continue;
        if (recv_bytes[r] > INT_MAX) return ds_err(DSCKPT_EINTERNAL, "MPI message of %zu bytes", recv_bytes[r]);
        MPI_TRY(MPI_Irecv(recvs[r], (int)recv_bytes[r], MPI_BYTE, r, TAG_EXCHANGE, m->comm, &m->reqs[nreq++]),
                "MPI_Irecv (exchange)");
    }
    /* Sends in the order rank+1, rank+2, ...: the ranks do not all hit rank 0 first. */
    for (int k = 1; k < m->size; k++) {
        int r = (m->rank + k) % m->size;
        if (send_bytes[r] == 0) continue;
        if (send_bytes[r] > INT_MAX) return ds_err(DSCKPT_EINTERNAL, "MPI message of %zu bytes", send_bytes[r]);
        MPI_TRY(MPI_Isend(sends[r], (int)send_bytes[r], MPI_BYTE, r, TAG_EXCHANGE, m->comm, &m->reqs[nreq++]),
                "MPI_Isend (exchange)");
    }
    int me = m->rank;
    if (send_bytes[me] != recv_bytes[me])
        return ds_err(DSCKPT_EINTERNAL, "exchange with self: sending %zu bytes but receiving %zu",
                      send_bytes[me], recv_bytes[me]);
    if (send_bytes[me]) memmove(recvs[me], sends[me], send_bytes[me]);
    return wait_all(m, nreq, "MPI_Waitall (exchange)");
}

__attribute__((noreturn)) static void mpi_abort(void *impl, int code) {
    mpi_impl *m = impl;
    MPI_Abort(m ? m->comm : MPI_COMM_WORLD, code ? code : 1);
    _Exit(code ? code : 1); /* MPI_Abort should not return */
}

static void mpi_close(void *impl) {
    mpi_impl *m = impl;
    if (!m) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
        if (m->comm != MPI_COMM_NULL) MPI_Comm_free(&m->comm);
        if (m->finalize) MPI_Finalize();
    }
    free(m->icounts);
    free(m->idispls);
    free(m->reqs);
    free(m->gscr);
    free(m);
}

static const rt_comm_ops mpi_ops = {
    .name = "mpi",
    .barrier = mpi_barrier,
    .bcast = mpi_bcast,
    .allgatherv = mpi_allgatherv,
    .exchange = mpi_exchange,
    .gatherv = mpi_gatherv,
    .abort = mpi_abort,
    .close = mpi_close,
};

/* Initialises MPI (unless done) and the backend state on a duplicate of
 * MPI_COMM_WORLD. */
static dsckpt_status mpi_open_impl(int *argc, char ***argv, mpi_impl **out) {
    dsckpt_status st;
    mpi_impl *m = NULL;
    int inited = 0, finalized = 0, provided = MPI_THREAD_SINGLE, rc;
    MPI_Finalized(&finalized);
    if (finalized) return ds_err(DSCKPT_EMISUSE, "MPI was already finalized");
    DS_TRY(ds_calloc(1, sizeof *m, &m));
    m->comm = MPI_COMM_NULL;
    MPI_Initialized(&inited);
    if (!inited) {
        /* Errors in MPI_Init are fatal by MPI's default handler; it prints its own. */
        rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) {
            free(m);
            return mpi_fail(rc, "MPI_Init_thread");
        }
        m->finalize = true;
    } else {
        MPI_Query_thread(&provided);
    }
    if (provided < MPI_THREAD_FUNNELED) {
        st = ds_err(DSCKPT_EMPI, "MPI provides thread level %d, below MPI_THREAD_FUNNELED (%d)",
                    provided, MPI_THREAD_FUNNELED);
        goto fail;
    }
    if ((rc = MPI_Comm_dup(MPI_COMM_WORLD, &m->comm)) != MPI_SUCCESS) {
        st = mpi_fail(rc, "MPI_Comm_dup");
        goto fail;
    }
    if ((rc = MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN)) != MPI_SUCCESS ||
        (rc = MPI_Comm_rank(m->comm, &m->rank)) != MPI_SUCCESS ||
        (rc = MPI_Comm_size(m->comm, &m->size)) != MPI_SUCCESS) {
        st = mpi_fail(rc, "MPI communicator setup");
        goto fail;
    }
    size_t W = (size_t)m->size;
    DS_TRYGOTO(ds_calloc(W, sizeof *m->icounts, &m->icounts), fail);
    DS_TRYGOTO(ds_calloc(W, sizeof *m->idispls, &m->idispls), fail);
    DS_TRYGOTO(ds_calloc(2 * W, sizeof *m->reqs, &m->reqs), fail);
    *out = m;
    return DSCKPT_OK;
fail:
    mpi_close(m);
    return st;
}

dsckpt_status rt_comm_open_mpi(int *argc, char ***argv, rt_comm **out) {
    if (!out) return ds_err(DSCKPT_EINVAL, "rt_comm_open_mpi: NULL out");
    *out = NULL;
    mpi_impl *m = NULL;
    DS_TRY(mpi_open_impl(argc, argv, &m));
    /* rt_comm_create closes m on failure. */
    return rt_comm_create(&mpi_ops, m, m->rank, m->size, out);
}

dsckpt_status rt_comm_mpi_backend(int *argc, char ***argv, const rt_comm_ops **ops, void **impl, int *rank,
                                  int *size) {
    if (!ops || !impl || !rank || !size) return ds_err(DSCKPT_EINVAL, "rt_comm_mpi_backend: NULL argument");
    mpi_impl *m = NULL;
    DS_TRY(mpi_open_impl(argc, argv, &m));
    *ops = &mpi_ops;
    *impl = m;
    *rank = m->rank;
    *size = m->size;
    return DSCKPT_OK;
}
