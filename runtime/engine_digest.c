/*
 * engine_digest.c — SHA-256 of the whole model's weights (fp32 master or working),
 * in model layout, for bit-identity checks (dstrain's --log_file), gathered to rank
 * 0 one tensor at a time: no rank holds more than the largest tensor besides its
 * own state, however large the model.
 */
#include "engine.h"
#include "engine_internal.h"

#include "device.h"
#include "stream.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    rt_engine *e;
    const rt_device *d; /* where the weights live */
    bool working;
    size_t es;          /* bytes per element */
    uint8_t *host;      /* rank 0: one tensor, in host memory, to hash */
    void *recv;         /* rank 0: one tensor gathered, in d's memory */
    void *up;           /* stage 3 with the parameters offloaded: this rank's piece on the device */
    size_t *counts;     /* rank 0: bytes from each rank */
    ds_hasher *h;       /* rank 0 */
} digest_run;

/* This rank's piece of tensor T (elements [s, s + c)): where it lies, in d's
 * memory (or in host memory, for offloaded stage 3 parameters). */
static const uint8_t *own_piece(const digest_run *x, const et *T, uint64_t *c) {
    const rt_engine *e = x->e;
    uint64_t s, p;
    rt_engine_own(e, T, e->rank, &s, c, &p);
    const uint8_t *base = x->working ? (const uint8_t *)e->w3[T->group] : (const uint8_t *)e->master[T->group];
    return base + p * x->es;
}

/* Rank 0's counts for tensor T; its pieces must follow each other in rank order. */
static dsckpt_status root_counts(const digest_run *x, const et *T) {
    uint64_t next = 0;
    for (int r = 0; r < x->e->W; r++) {
        uint64_t s, c, p;
        rt_engine_own(x->e, T, r, &s, &c, &p);
        if (c && s != next) return ds_err(DSCKPT_EINTERNAL, "engine digest: rank %d's piece starts at %llu, not %llu",
                                          r, (unsigned long long)s, (unsigned long long)next);
        next += c;
        x->counts[r] = (size_t)c * x->es;
    }
    if (next != T->numel) return ds_err(DSCKPT_EINTERNAL, "engine digest: the pieces do not cover a tensor");
    return DSCKPT_OK;
}

/* Tensor T into the hash (rank 0), every rank sending its piece when the weights
 * are partitioned. */
static dsckpt_status digest_tensor(digest_run *x, const et *T, bool whole) {
    rt_engine *e = x->e;
    const rt_device *d = x->d;
    size_t bytes = (size_t)T->numel * x->es;
    const void *src;
    if (whole) { /* every rank has it all: rank 0 alone reads it */
        if (e->rank != 0) return DSCKPT_OK;
        src = x->working ? (const uint8_t *)e->w + T->woff * x->es : (const void *)(e->master[T->group] + T->goff);
    } else {
        uint64_t c;
        const void *mine = own_piece(x, T, &c);
        if (x->up && c) { /* the collectives take device buffers */
            DS_TRY(e->dev->h2d(e->dev->ctx, x->up, mine, (size_t)c * x->es));
            mine = x->up;
        }
        if (e->rank == 0) DS_TRY(root_counts(x, T));
        DS_TRY(rt_comm_gatherv(e->comm, mine, (size_t)c * x->es, 0, x->recv, x->counts));
        if (e->rank != 0) return DSCKPT_OK;
        src = x->recv;
    }
    if (d->host_memory) return ds_hasher_update(x->h, src, bytes);
    DS_TRY(d->d2h(d->ctx, x->host, src, bytes));
    return ds_hasher_update(x->h, x->host, bytes);
}

static dsckpt_status digest_setup(digest_run *x, bool whole) {
    rt_engine *e = x->e;
    const rt_device *d = x->d;
    uint64_t most = 1, piece = 1;
    for (size_t i = 0; i < e->nt; i++) {
        uint64_t s, c, p;
        rt_engine_own(e, &e->t[i], e->rank, &s, &c, &p);
        most = DS_MAX(most, e->t[i].numel);
        piece = DS_MAX(piece, c);
    }
    if (!whole && x->working && e->poff)
        DS_TRY(e->dev->alloc(e->dev->ctx, (size_t)piece * x->es, &x->up));
    if (e->rank != 0) return DSCKPT_OK;
    DS_TRY(ds_hasher_new(UINT64_MAX, &x->h));
    if (!d->host_memory) DS_TRY(ds_malloc((size_t)most * x->es, &x->host));
    if (!whole) {
        DS_TRY(ds_calloc((size_t)e->W, sizeof *x->counts, &x->counts));
        DS_TRY(d->alloc(d->ctx, (size_t)most * x->es, &x->recv));
    }
    return DSCKPT_OK;
}

dsckpt_status rt_engine_digest(rt_engine *e, bool working, uint8_t out[DS_SHA256_LEN]) {
    digest_run x = {.e = e, .working = working, .d = working ? e->dev : e->odev, .es = working ? e->ws : 4};
    bool whole = working ? e->stage != 3 : e->stage == 0;
    /* A failure leaves the other ranks in a gather: dstrain then aborts the job. */
    dsckpt_status st = digest_setup(&x, whole);
    for (size_t i = 0; i < e->nt && !st; i++) st = digest_tensor(&x, &e->t[i], whole);
    if (!st && e->rank == 0) {
        ds_digests dg = {0};
        st = ds_hasher_final(x.h, &dg);
        if (!st && dg.nchunks != 1) st = ds_err(DSCKPT_EINTERNAL, "engine digest: %zu chunks hashed", dg.nchunks);
        if (!st) memcpy(out, dg.chunks[0], DS_SHA256_LEN); /* one chunk: the SHA-256 of every byte */
        ds_digests_clear(&dg);
    }
    ds_hasher_free(x.h);
    free(x.host);
    free(x.counts);
    if (x.recv) x.d->free(x.d->ctx, x.recv);
    if (x.up) e->dev->free(e->dev->ctx, x.up);
    return st;
}
