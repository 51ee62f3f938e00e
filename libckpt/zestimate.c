/*
 * zestimate.c — how large a checkpoint's states would be as a compressed native
 * checkpoint, from a deterministic sample of its chunks compressed with the codec
 * the writer uses (dsckpt_estimate_compressed, dsckpt.h).
 *
 * Each state's bytes, as a native rank file stores them (F32 for the trainable
 * states, the tensor's dtype for w16), are taken over every tensor in tensor
 * order: the order a rank file holds them at stages 1 and 2, where a rank's
 * partition is a contiguous piece of that stream. The stream is cut into chunks of
 * the compressed writer's default chunk size; up to `max_chunks` of them, spread
 * evenly from the first to the last, are read and encoded as the writer encodes a
 * chunk (byte-plane shuffle by the width most of its bytes have, one zstd frame,
 * raw when it does not shrink). The state's estimate is its bytes times the
 * sampled stored/raw ratio. Nothing is written.
 */
#include "ckpt.h"
#include "parallel.h"
#include "zchunk.h"

#include <stdlib.h>
#include <string.h>

/* One state's stream: the tensors holding it, their output dtype and where each
 * starts in the stream (bytes). */
typedef struct zstream {
    uint32_t *tensor;
    uint64_t *off; /* ntensors + 1 entries: off[k] = start of tensor[k]; off[n] = total */
    size_t n;
} zstream;

typedef struct zjob {
    int state;
    uint64_t chunk;
    uint64_t raw, stored; /* results */
} zjob;

typedef struct zctx {
    const dsckpt_ckpt *c;
    int level;
    uint64_t chunk_size;
    zstream streams[DS_NSTATES];
    zjob *jobs;
    size_t njobs;
    dsckpt_reader **readers; /* per worker, opened by its first job */
    ds_zchunk_enc **encs;
    uint8_t **bufs;
} zctx;

/* The dtype state s of tensor t has in a native rank file. */
static dsckpt_dtype out_dtype(const dsckpt_ckpt *c, int s, uint32_t t) {
    return s == DS_ST_W16 ? c->tensors[t].dtype : DSCKPT_F32;
}

static dsckpt_status build_stream(const dsckpt_ckpt *c, int s, zstream *z) {
    DS_TRY(ds_calloc(c->ntensors + 1, sizeof *z->tensor, &z->tensor));
    DS_TRY(ds_calloc(c->ntensors + 1, sizeof *z->off, &z->off));
    uint64_t pos = 0;
    for (size_t t = 0; t < c->ntensors; t++) {
        if (!ds_state_applies(&c->tensors[t], (ds_state)s)) continue;
        uint64_t b;
        if (ds_mul_overflow(c->tensors[t].numel, dsckpt_dtype_size(out_dtype(c, s, (uint32_t)t)), &b) ||
            ds_add_overflow(pos, b, &pos))
            return ds_err(DSCKPT_EINVAL, "state %s: byte count overflows", ds_state_names[s]);
        z->tensor[z->n] = (uint32_t)t;
        z->off[++z->n] = pos;
    }
    return DSCKPT_OK;
}

/* Reads the whole elements covering stream bytes [a, b) of state s into buf
 * (capacity b - a + 16) and encodes them: raw and stored sizes into j. */
static dsckpt_status sample_chunk(zctx *x, zjob *j, int worker) {
    const zstream *z = &x->streams[j->state];
    uint64_t total = z->off[z->n], a = j->chunk * x->chunk_size, b = DS_MIN(a + x->chunk_size, total);
    uint8_t *buf = x->bufs[worker];
    uint64_t wbytes[4] = {0}, fill = 0;
    size_t lo = 0, hi = z->n; /* the last tensor starting at or before a */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (z->off[mid] <= a) lo = mid;
        else hi = mid;
    }
    for (size_t k = lo; k < z->n && z->off[k] < b; k++) {
        uint32_t t = z->tensor[k];
        dsckpt_dtype dt = out_dtype(x->c, j->state, t);
        uint64_t es = dsckpt_dtype_size(dt), from = a > z->off[k] ? a - z->off[k] : 0;
        uint64_t to = DS_MIN(b, z->off[k + 1]) - z->off[k];
        uint64_t e0 = from / es, e1 = (to + es - 1) / es; /* whole elements only */
        if (e1 <= e0) continue;
        DS_TRY(dsckpt_read_tensor(x->readers[worker], t, (dsckpt_state)j->state, e0, e1 - e0, dt, buf + fill,
                                  (size_t)(x->chunk_size + 16 - fill)));
        fill += (e1 - e0) * es;
        wbytes[es >= 8 ? 3 : es >= 4 ? 2 : es >= 2 ? 1 : 0] += (e1 - e0) * es;
    }
    int best = 0; /* the width most of the chunk's bytes have, as the writer picks it */
    for (int i = 1; i < 4; i++)
        if (wbytes[i] > wbytes[best]) best = i;
    const uint8_t *stored;
    size_t sn;
    ds_zchunk_kind kind;
    DS_TRY(ds_zchunk_encode(x->encs[worker], buf, (size_t)fill, 1 << best, &stored, &sn, &kind));
    j->raw = fill;
    j->stored = sn;
    return DSCKPT_OK;
}

static dsckpt_status run_job(void *user, size_t job, int worker) {
    zctx *x = user;
    if (!x->readers[worker]) DS_TRY(dsckpt_reader_open(x->c, &x->readers[worker]));
    if (!x->encs[worker]) DS_TRY(ds_zchunk_enc_new(x->level, &x->encs[worker]));
    if (!x->bufs[worker]) DS_TRY(ds_malloc((size_t)x->chunk_size + 16, &x->bufs[worker]));
    return sample_chunk(x, &x->jobs[job], worker);
}

/* The sampled chunks of every state: min(chunks, max_chunks) per state, chunk
 * k_i = floor((2i + 1) * chunks / (2 * sampled)), the middle of each of `sampled`
 * equal stretches (every chunk when all are sampled). */
static dsckpt_status plan_jobs(zctx *x, unsigned max_chunks, dsckpt_zestimate *out) {
    size_t cap = 0;
    for (int s = 0; s < DS_NSTATES; s++) {
        dsckpt_zestimate_state *e = &out->states[s];
        e->raw_bytes = x->streams[s].off[x->streams[s].n];
        e->chunks = (e->raw_bytes + x->chunk_size - 1) / x->chunk_size;
        e->sampled_chunks = DS_MIN(e->chunks, (uint64_t)max_chunks);
        cap += (size_t)e->sampled_chunks;
    }
    DS_TRY(ds_calloc(cap ? cap : 1, sizeof *x->jobs, &x->jobs));
    for (int s = 0; s < DS_NSTATES; s++) {
        const dsckpt_zestimate_state *e = &out->states[s];
        for (uint64_t i = 0; i < e->sampled_chunks; i++)
            x->jobs[x->njobs++] = (zjob){.state = s, .chunk = (2 * i + 1) * e->chunks / (2 * e->sampled_chunks)};
    }
    return DSCKPT_OK;
}

/* Sums the jobs into out (in job order, so the figures do not depend on threads). */
static void tally(const zctx *x, dsckpt_zestimate *out) {
    for (size_t i = 0; i < x->njobs; i++) {
        dsckpt_zestimate_state *e = &out->states[x->jobs[i].state];
        e->sampled_raw += x->jobs[i].raw;
        e->sampled_stored += x->jobs[i].stored;
    }
    for (int s = 0; s < DS_NSTATES; s++) {
        dsckpt_zestimate_state *e = &out->states[s];
        e->estimated_bytes =
            e->sampled_raw ? (uint64_t)((double)e->raw_bytes * (double)e->sampled_stored / (double)e->sampled_raw + 0.5)
                           : 0;
        out->raw_bytes += e->raw_bytes;
        out->sampled_raw += e->sampled_raw;
        out->sampled_stored += e->sampled_stored;
        out->estimated_bytes += e->estimated_bytes;
    }
}

dsckpt_status dsckpt_estimate_compressed(const dsckpt_ckpt *c, int level, unsigned max_chunks, int threads,
                                         dsckpt_zestimate *out) {
    ds_err_clear();
    if (!c || !out) return ds_err(DSCKPT_EINVAL, "dsckpt_estimate_compressed: NULL argument");
    if (!ds_zchunk_level_ok(level)) return ds_err(DSCKPT_EINVAL, "compression level %d (zstd levels are 1 to 22)", level);
    if (max_chunks < 1) return ds_err(DSCKPT_EINVAL, "dsckpt_estimate_compressed: max_chunks must be at least 1");
    memset(out, 0, sizeof *out);
    out->level = level;
    out->chunk_size = DS_ZCHUNK_DEFAULT_CHUNK;
    int nth = ds_thread_count(threads);
    zctx x = {.c = c, .level = level, .chunk_size = DS_ZCHUNK_DEFAULT_CHUNK};
    dsckpt_status st = DSCKPT_OK;
    for (int s = 0; s < DS_NSTATES && st == DSCKPT_OK; s++) st = build_stream(c, s, &x.streams[s]);
    if (st == DSCKPT_OK) st = plan_jobs(&x, max_chunks, out);
    if (st == DSCKPT_OK && (ds_calloc((size_t)nth, sizeof *x.readers, &x.readers) ||
                            ds_calloc((size_t)nth, sizeof *x.encs, &x.encs) ||
                            ds_calloc((size_t)nth, sizeof *x.bufs, &x.bufs)))
        st = DSCKPT_ENOMEM;
    if (st == DSCKPT_OK) st = ds_parallel_run(x.njobs, nth, run_job, &x, NULL);
    if (st == DSCKPT_OK) tally(&x, out);
    for (int w = 0; w < nth; w++) {
        if (x.readers) dsckpt_reader_free(x.readers[w]);
        if (x.encs) ds_zchunk_enc_free(x.encs[w]);
        if (x.bufs) free(x.bufs[w]);
    }
    free(x.readers);
    free(x.encs);
    free(x.bufs);
    free(x.jobs);
    for (int s = 0; s < DS_NSTATES; s++) {
        free(x.streams[s].tensor);
        free(x.streams[s].off);
    }
    return st;
}
