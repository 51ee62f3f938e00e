/*
 * engine.c — ZeRO stages 0-3 over the collectives seam (see engine.h). Every buffer
 * of the step is device memory of the engine's device table (device.h) and is touched
 * only through it; the host keeps the tokens, the norm accumulator and the
 * bookkeeping.
 */
#include "engine.h"
#include "engine_internal.h"

#include "adam.h"
#include "device.h"
#include "optim.h"
#include "rt_time.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A device scratch of at least `bytes` (contents not kept when it grows). */
static dsckpt_status grow(rt_engine *e, void *pp, size_t *cap, size_t bytes) {
    if (*cap >= bytes) return DSCKPT_OK;
    e->dev->free(e->dev->ctx, *(void **)pp);
    *(void **)pp = NULL;
    *cap = 0;
    DS_TRY(e->dev->alloc(e->dev->ctx, bytes, pp));
    *cap = bytes;
    return DSCKPT_OK;
}

static void to_f32(const rt_engine *e, const void *src, float *dst, uint64_t n) {
    e->dev->cast(e->dev->ctx, DSCKPT_F32, dst, e->wdt, src, (size_t)n);
}

static void from_f32(const rt_engine *e, const float *src, void *dst, uint64_t n) {
    e->dev->cast(e->dev->ctx, e->wdt, dst, DSCKPT_F32, src, (size_t)n);
}

static dsckpt_status dev_alloc(rt_engine *e, void *pp, uint64_t bytes, const char *what) {
    dsckpt_status st = e->dev->alloc(e->dev->ctx, (size_t)bytes, pp);
    if (st) ds_err_prefix(st, "engine: %s", what);
    return st;
}

/* Optimizer-state memory (e->odev: the device, or pinned host memory when offloaded). */
static dsckpt_status opt_alloc(rt_engine *e, void *pp, uint64_t bytes, const char *what) {
    dsckpt_status st = e->odev->alloc(e->odev->ctx, (size_t)bytes, pp);
    if (st) ds_err_prefix(st, "engine: %s", what);
    return st;
}

/* dst (optimizer-state memory) <- src (device). */
static dsckpt_status dev_to_opt(const rt_engine *e, void *dst, const void *src, size_t bytes) {
    return e->off ? e->dev->d2h(e->dev->ctx, dst, src, bytes) : e->dev->d2d(e->dev->ctx, dst, src, bytes);
}

/* dst (device, working dtype) <- elements [off, off + n) of group g's master. */
static dsckpt_status master_to_working(const rt_engine *e, int g, uint64_t off, void *dst, uint64_t n) {
    if (!e->off) {
        from_f32(e, e->master[g] + off, dst, n);
        return DSCKPT_OK;
    }
    uint8_t *h = e->hw[g] + off * e->ws;
    e->odev->cast(e->odev->ctx, e->wdt, h, DSCKPT_F32, e->master[g] + off, (size_t)n);
    return e->dev->h2d(e->dev->ctx, dst, h, (size_t)n * e->ws);
}

/* Stage 3: this rank's working pieces of group g from its master; with offload_param
 * they stay in host memory, cast there. */
static dsckpt_status master_to_w3(const rt_engine *e, int g) {
    if (!e->poff) return master_to_working(e, g, 0, e->w3[g], e->plen[g]);
    e->odev->cast(e->odev->ctx, e->wdt, e->w3[g], DSCKPT_F32, e->master[g], (size_t)e->plen[g]);
    return DSCKPT_OK;
}

/* This rank's (or rank r's) share of tensor T: elements [*s, *s + *n) at *poff of
 * the group partition. */
void rt_engine_own(const rt_engine *e, const et *T, int r, uint64_t *s, uint64_t *n, uint64_t *poff) {
    ds_slice sl = ds_part_slice(e->stage, e->W, r, e->fp[T->group].part, e->stage == 3 ? T->qoff : T->goff, T->numel);
    *s = sl.start;
    *n = sl.count;
    *poff = sl.at;
}

/* Sums tensors ts[0..n) of every rank's gradients (src[i] = tensor ts[i]'s full
 * gradient on this rank) into the owners' partition accumulators. */
static dsckpt_status reduce_owned(rt_engine *e, const size_t *ts, size_t n, const float *const *src) {
    size_t total = 0;
    for (int r = 0; r < e->W; r++) {
        e->counts[r] = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t s, c, p;
            rt_engine_own(e, &e->t[ts[i]], r, &s, &c, &p);
            e->counts[r] += (size_t)c;
        }
        total += e->counts[r];
    }
    DS_TRY(grow(e, &e->send, &e->send_cap, (total ? total : 1) * 4));
    DS_TRY(grow(e, &e->recv, &e->recv_cap, (e->counts[e->rank] ? e->counts[e->rank] : 1) * 4));
    size_t pos = 0;
    for (int r = 0; r < e->W; r++)
        for (size_t i = 0; i < n; i++) {
            uint64_t s, c, p;
            rt_engine_own(e, &e->t[ts[i]], r, &s, &c, &p);
            DS_TRY(e->dev->d2d(e->dev->ctx, e->send + pos, src[i] + s, (size_t)c * 4));
            pos += (size_t)c;
        }
    DS_TRY(rt_comm_reduce_scatterv_f32(e->comm, e->send, e->counts, e->recv));
    pos = 0;
    for (size_t i = 0; i < n; i++) {
        const et *T = &e->t[ts[i]];
        uint64_t s, c, p;
        rt_engine_own(e, T, e->rank, &s, &c, &p);
        e->dev->add(e->dev->ctx, e->gpart[T->group] + p, e->recv + pos, (size_t)c);
        pos += (size_t)c;
    }
    return DSCKPT_OK;
}

/* ---- module hooks ---- */

/* Records a hook's failure (sticky for the rest of the pass, with its message, which
 * the model's own error would otherwise replace) and returns NULL, so the model
 * stops at once. */
static void *hook_fail(rt_engine *e, dsckpt_status st) {
    if (!e->hook_err) {
        e->hook_err = st;
        snprintf(e->hook_msg, sizeof e->hook_msg, "%s", dsckpt_last_error());
    }
    return NULL;
}

/* The step's status after the model returned `st`: the hooks' sticky error first. */
static dsckpt_status pass_status(rt_engine *e, dsckpt_status st) {
    if (e->hook_err) return ds_err(e->hook_err, "%s", e->hook_msg);
    return st;
}

static const float *h_acquire(void *ctx, int m) {
    rt_engine *e = ctx;
    if (e->hook_err) return hook_fail(e, e->hook_err);
    int slot = e->scr_mod[0] < 0 ? 0 : e->scr_mod[1] < 0 ? 1 : -1;
    if (slot < 0) return hook_fail(e, ds_err(DSCKPT_EINTERNAL, "engine: more than two modules acquired"));
    float *dst = e->scr[slot];
    if (e->stage != 3) {
        e->scr_mod[slot] = m;
        if (!e->wgm) { /* the module's range, in the model's layout */
            const uint8_t *src = (const uint8_t *)e->w + e->mstart[m] * e->ws;
            if (e->wdt == DSCKPT_F32) return (const float *)src;
            to_f32(e, src, dst, e->mlen[m]);
            return dst;
        }
        /* By group: runs of the module's tensors that follow each other in both layouts. */
        for (size_t i = e->mod_t0[m], j; i < e->mod_t1[m]; i = j) {
            uint64_t n = e->t[i].numel;
            for (j = i + 1; j < e->mod_t1[m] && e->t[j].woff == e->t[i].woff + n && e->t[j].moff == e->t[i].moff + n; j++)
                n += e->t[j].numel;
            to_f32(e, (const uint8_t *)e->w + e->t[i].woff * e->ws, dst + (e->t[i].moff - e->mstart[m]), n);
        }
        return dst;
    }
    /* ZeRO-3: all-gather this module's pieces from every rank. */
    uint64_t per = 0;
    for (size_t i = e->mod_t0[m]; i < e->mod_t1[m]; i++) per += e->t[i].q;
    dsckpt_status st = grow(e, &e->gbuf, &e->gbuf_cap, (size_t)(per ? per : 1) * e->ws);
    if (!st) st = grow(e, &e->gbuf2, &e->gbuf2_cap, (size_t)(per ? per : 1) * e->ws * (size_t)e->W);
    uint64_t pos = 0;
    for (size_t i = e->mod_t0[m]; !st && i < e->mod_t1[m]; i++) {
        const et *T = &e->t[i];
        const void *piece = (uint8_t *)e->w3[T->group] + T->qoff * e->ws;
        st = e->poff ? e->dev->h2d(e->dev->ctx, e->gbuf + pos * e->ws, piece, (size_t)T->q * e->ws)
                     : e->dev->d2d(e->dev->ctx, e->gbuf + pos * e->ws, piece, (size_t)T->q * e->ws);
        pos += T->q;
    }
    if (!st) st = rt_comm_allgather(e->comm, e->gbuf, (size_t)per * e->ws, e->gbuf2);
    if (st) return hook_fail(e, st);
    for (int r = 0; r < e->W; r++) {
        uint64_t off = 0;
        for (size_t i = e->mod_t0[m]; i < e->mod_t1[m]; i++) {
            const et *T = &e->t[i];
            uint64_t s, c;
            ds_part_real(T->q, r, T->numel, &s, &c);
            to_f32(e, e->gbuf2 + ((uint64_t)r * per + off) * e->ws, dst + (T->moff - e->mstart[m]) + s, c);
            off += T->q;
        }
    }
    e->scr_mod[slot] = m;
    return dst;
}

static void h_release(void *ctx, int m) {
    rt_engine *e = ctx;
    if (e->scr_mod[0] == m) e->scr_mod[0] = -1;
    else if (e->scr_mod[1] == m) e->scr_mod[1] = -1;
}

static float *h_grad_buf(void *ctx, int m) {
    rt_engine *e = ctx;
    if (e->hook_err) return hook_fail(e, e->hook_err);
    if (e->stage < 2) return e->gfull + e->mstart[m];
    dsckpt_status st;
    if (m == 0) {
        if (!e->gscr0_live) {
            if ((st = e->dev->memzero(e->dev->ctx, e->gscr0, (size_t)e->mlen[0] * 4))) return hook_fail(e, st);
            e->gscr0_live = true;
        }
        return e->gscr0;
    }
    if (e->gscr_mod != m) {
        if ((st = e->dev->memzero(e->dev->ctx, e->gscr, (size_t)e->mlen[m] * 4))) return hook_fail(e, st);
        e->gscr_mod = m;
    }
    return e->gscr;
}

/* fp16 training keeps gradients in fp16, as DeepSpeed does: a value past the fp16
 * range becomes inf, which is how an overflowing step is detected. */
static void h_grad_ready(void *ctx, int m) {
    rt_engine *e = ctx;
    if (e->stage < 2 || e->hook_err) return;
    float *g = m == 0 ? e->gscr0 : e->gscr;
    if (e->wdt == DSCKPT_F16) e->dev->round_f16(e->dev->ctx, g, (size_t)e->mlen[m]);
    /* Buckets of whole tensors, at most reduce_bucket_size elements (a larger tensor alone). */
    size_t ts[64];
    const float *src[64];
    size_t n = 0;
    uint64_t in = 0;
    for (size_t i = e->mod_t0[m]; i <= e->mod_t1[m]; i++) {
        bool last = i == e->mod_t1[m];
        if (n && (last || n == 64 || in + e->t[i].numel > e->bucket)) {
            dsckpt_status st = reduce_owned(e, ts, n, src);
            if (st) {
                hook_fail(e, st);
                return;
            }
            n = 0;
            in = 0;
        }
        if (last) break;
        ts[n] = i;
        src[n] = g + (e->t[i].moff - e->mstart[m]);
        in += e->t[i].numel;
        n++;
    }
    if (m == 0) e->gscr0_live = false;
    else e->gscr_mod = -1;
}

static rt_param_hooks hooks(rt_engine *e) {
    return (rt_param_hooks){.ctx = e, .acquire = h_acquire, .release = h_release, .grad_buf = h_grad_buf,
                            .grad_ready = h_grad_ready};
}

/* ---- creation ---- */

static dsckpt_status alloc_f(rt_engine *e, float **p, uint64_t n, const char *what) {
    return dev_alloc(e, p, (n ? n : 1) * sizeof(float), what);
}

dsckpt_status rt_alloc_touched(void *pp, size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) return ds_err(DSCKPT_ENOMEM, "out of memory for %s (%zu bytes)", what, bytes);
    /* Zeroed and every page touched now, as the device table's host memory is. */
    ds_zero_touch(p, bytes ? bytes : 1);
    *(void **)pp = p;
    return DSCKPT_OK;
}


/* The device tables: the model's, and where the optimizer state lives (the CPU when
 * offloading to it). */
static void engine_devices(rt_engine *e, const rt_config *cfg, rt_model *model) {
    e->dev = rt_model_device(model);
    e->odev = e->dev;
    /* Offloading the optimizer to the CPU changes something only where the device's
     * memory is not host memory (on the CPU table the state is host memory already). */
    if (cfg->zero.offload_optimizer.device == RT_OFFLOAD_CPU && !e->dev->host_memory) {
        e->off = true;
        e->htab = *rt_device_cpu();
        e->htab.name = "cpu (offload)";
        e->htab.ctx = e->dev->ctx; /* the CPU kernels ignore it; alloc_host needs it */
        e->htab.alloc = e->dev->alloc_host;
        e->htab.free = e->dev->free_host;
        e->odev = &e->htab;
        /* 16 MiB of gradient per copy; test builds may ask for less, so that small
         * models go through several chunks (tests/rt_device_test.sh). */
        e->pipe_chunk = (uint64_t)4 << 20;
        const char *hc = ds_test_hook("DSTRAIN_TEST_PIPE_CHUNK");
        if (hc && strtoull(hc, NULL, 10) > 0) e->pipe_chunk = strtoull(hc, NULL, 10);
    }
}

/* Tensors, modules and groups: where each tensor sits in the model, its group and
 * its offset there, its stage-3 piece. */
static dsckpt_status engine_layout(rt_engine *e, rt_model *model) {
    size_t np;
    const rt_param *ps = rt_model_params(model, &np);
    e->nt = np;
    e->nmod = rt_model_nmodules(model);
    DS_TRY(ds_calloc(np, sizeof *e->t, &e->t));
    DS_TRY(ds_calloc((size_t)e->nmod, sizeof(size_t), &e->mod_t0));
    DS_TRY(ds_calloc((size_t)e->nmod, sizeof(size_t), &e->mod_t1));
    DS_TRY(ds_calloc((size_t)e->nmod, sizeof(uint64_t), &e->mstart));
    DS_TRY(ds_calloc((size_t)e->nmod, sizeof(uint64_t), &e->mlen));
    DS_TRY(ds_calloc((size_t)e->W, sizeof(size_t), &e->counts));
    for (int m = 0; m < e->nmod; m++) {
        rt_model_module_range(model, m, &e->mstart[m], &e->mlen[m]);
        if (e->mlen[m] > e->maxmod) e->maxmod = e->mlen[m];
        e->mod_t0[m] = SIZE_MAX;
    }
    for (size_t i = 0; i < np; i++) {
        et *T = &e->t[i];
        T->moff = ps[i].offset;
        T->numel = ps[i].numel;
        T->module = ps[i].module;
        T->group = ps[i].ndim >= 2 ? 0 : 1;
        T->goff = e->gnumel[T->group];
        e->gnumel[T->group] += T->numel;
        T->q = ds_part_piece(T->numel, e->W);
        if (e->mod_t0[T->module] == SIZE_MAX) e->mod_t0[T->module] = i;
        e->mod_t1[T->module] = i + 1;
    }
    for (size_t i = 0; i < np; i++) { /* stage 3 piece offsets, per group in model order */
        et *T = &e->t[i];
        T->qoff = e->plen[T->group];
        e->plen[T->group] += T->q;
    }
    return DSCKPT_OK;
}

/* Where the working weights lie (et.woff). At stages 1/2 with a 16-bit working
 * type, as DeepSpeed's bit16 groups: each group's flat buffer (its tensors in model
 * order, padded to W partitions) whole, at wbase[g], so that the all-gather of the
 * updated partitions lands in place: no gather buffer the size of the model, no
 * copy out of it (h_acquire casts a module's tensors from their places). fp32
 * working weights keep the model's layout, which the model reads in place; stage 0
 * gathers nothing. */
static void working_layout(rt_engine *e) {
    e->wgm = (e->stage == 1 || e->stage == 2) && e->wdt != DSCKPT_F32;
    e->wlen = e->wgm ? 0 : e->N;
    for (int g = 0; g < NG && e->wgm; g++) {
        e->wbase[g] = e->wlen;
        e->wlen += e->plen[g] * (uint64_t)e->W;
    }
    for (size_t i = 0; i < e->nt; i++) e->t[i].woff = e->wgm ? e->wbase[e->t[i].group] + e->t[i].goff : e->t[i].moff;
}

/* The partitions, gradients, working weights and scratch buffers of the stage. */
static dsckpt_status engine_buffers(rt_engine *e, const rt_config *cfg, rt_model *model) {
    for (int g = 0; g < NG; g++) {
        e->fp[g] = ds_part_flat(e->gnumel[g], e->stage == 0 ? 1 : e->W);
        if (e->stage != 3) e->plen[g] = e->fp[g].part;
        size_t pb = (size_t)e->plen[g] * sizeof(float);
        DS_TRY(opt_alloc(e, &e->master[g], pb, "the partitions"));
        DS_TRY(opt_alloc(e, &e->m1[g], pb, "the partitions"));
        DS_TRY(opt_alloc(e, &e->m2[g], pb, "the partitions"));
        DS_TRY(dev_alloc(e, &e->gpart[g], pb, "the partitions"));
        if (e->off) {
            DS_TRY(opt_alloc(e, &e->ghost[g], pb, "the offloaded gradients"));
            DS_TRY(opt_alloc(e, &e->hw[g], (e->plen[g] ? e->plen[g] : 1) * e->ws, "the offloaded weights"));
        }
        if (e->stage == 3) {
            uint64_t wb = (e->plen[g] ? e->plen[g] : 1) * e->ws;
            DS_TRY(e->poff ? opt_alloc(e, &e->w3[g], wb, "the offloaded weights") : dev_alloc(e, &e->w3[g], wb, "weights"));
        }
    }
    working_layout(e);
    if ((e->stage == 1 || e->stage == 2) && !e->wgm) /* gather_working's buffer, for the largest group */
        for (int g = 0; g < NG; g++)
            DS_TRY(grow(e, &e->gbuf2, &e->gbuf2_cap, (size_t)(e->plen[g] ? e->plen[g] : 1) * e->ws * (size_t)e->W));
    if (e->stage != 3) DS_TRY(dev_alloc(e, &e->w, (e->wlen ? e->wlen : 1) * e->ws, "the working weights"));
    if (e->stage < 2) DS_TRY(alloc_f(e, &e->gfull, e->N, "the gradients"));
    else {
        DS_TRY(alloc_f(e, &e->gscr0, e->mlen[0], "the gradient buffers"));
        DS_TRY(alloc_f(e, &e->gscr, e->maxmod, "the gradient buffers"));
    }
    DS_TRY(alloc_f(e, &e->scr[0], e->maxmod, "the parameter buffers"));
    DS_TRY(alloc_f(e, &e->scr[1], e->maxmod, "the parameter buffers"));
    const rt_model_cfg *mc = rt_model_config(model);
    return ds_calloc((size_t)cfg->micro_batch * (size_t)(mc->n_ctx + 1), sizeof(int32_t), &e->tokens);
}

/* The fp32 master the working weights are read back from (as DeepSpeed builds it):
 * master = fp32(working dtype(master)), on the optimizer's side (the CPU when
 * offloaded). */
static dsckpt_status round_trip_master(rt_engine *e) {
    const rt_device *od = e->odev;
    uint64_t most = 0;
    for (int g = 0; g < NG; g++) most = DS_MAX(most, e->plen[g]);
    /* In pieces through one small buffer: no partition-sized memory for a moment. */
    uint64_t piece = DS_MIN(most, (uint64_t)1 << 20);
    void *tmp = NULL;
    DS_TRY(opt_alloc(e, &tmp, (piece ? piece : 1) * e->ws, "a cast buffer"));
    for (int g = 0; g < NG; g++)
        for (uint64_t at = 0; at < e->plen[g]; at += piece) {
            size_t n = (size_t)DS_MIN(piece, e->plen[g] - at);
            od->cast(od->ctx, e->wdt, tmp, DSCKPT_F32, e->master[g] + at, n);
            od->cast(od->ctx, DSCKPT_F32, e->master[g] + at, e->wdt, tmp, n);
        }
    dsckpt_status st = od->sync(od->ctx);
    od->free(od->ctx, tmp);
    return st;
}

/* Stage 0 (every rank holds everything): the whole model initialised in fp32 (each
 * rank draws a W-th of it, all-gathered), cast to the working dtype, the master
 * read back from it. */
static dsckpt_status init_weights_whole(rt_engine *e, rt_model *model, uint64_t seed) {
    float *init = NULL, *dinit = NULL;
    dsckpt_status st = DSCKPT_OK;
    uint64_t W = (uint64_t)e->W, sl = (e->N + W - 1) / W, a = DS_MIN(e->N, (uint64_t)e->rank * sl);
    if (sl == 0) sl = 1;
    DS_TRYGOTO(ds_calloc((size_t)sl, sizeof(float), &init), out);
    DS_TRYGOTO(rt_model_init_range(rt_model_config(model), seed, a, DS_MIN(sl, e->N - a), init), out);
    DS_TRYGOTO(alloc_f(e, &dinit, sl * W, "the initial weights"), out);
    DS_TRYGOTO(e->dev->h2d(e->dev->ctx, dinit + (uint64_t)e->rank * sl, init, (size_t)sl * sizeof(float)), out);
    if (W > 1) DS_TRYGOTO(rt_comm_allgather(e->comm, dinit + (uint64_t)e->rank * sl, (size_t)sl * sizeof(float), dinit), out);
    for (size_t i = 0; i < e->nt; i++) {
        const et *T = &e->t[i];
        uint64_t s, c, p;
        rt_engine_own(e, T, e->rank, &s, &c, &p);
        DS_TRYGOTO(dev_to_opt(e, e->master[T->group] + p, dinit + T->moff + s, (size_t)c * 4), out);
    }
    DS_TRYGOTO(round_trip_master(e), out);
    from_f32(e, dinit, e->w, e->N);
    st = e->dev->sync(e->dev->ctx);
out:
    free(init);
    e->dev->free(e->dev->ctx, dinit);
    return st;
}

/* Stages 1-3, and stage 0 at W = 1: each rank draws its own share of the
 * initialisation only (the values are a function of the flat index:
 * rt_model_init_range), reads its master back through the working dtype, and the
 * working weights come from the masters as after a load (all-gathered at stages
 * 1/2). The same bits as stage 0's whole initialisation, a W-th of the drawing per
 * rank. */
static dsckpt_status init_weights_shares(rt_engine *e, rt_model *model, uint64_t seed) {
    const rt_model_cfg *mc = rt_model_config(model);
    /* Host memory: drawn straight into the master partitions (zeroed at creation, so
     * the padding stays zero); otherwise through a host buffer. */
    bool direct = e->odev->host_memory;
    uint64_t most = 1;
    for (int g = 0; g < NG; g++) most = DS_MAX(most, e->plen[g]);
    float *hb = NULL;
    if (!direct) DS_TRY(ds_malloc((size_t)most * sizeof *hb, &hb));
    dsckpt_status st = DSCKPT_OK;
    for (int g = 0; g < NG && !st; g++) {
        float *dst = direct ? e->master[g] : hb;
        if (!direct) memset(hb, 0, (size_t)(e->plen[g] ? e->plen[g] : 1) * sizeof *hb); /* the padding stays zero */
        for (size_t i = 0; i < e->nt && !st; i++) {
            const et *T = &e->t[i];
            uint64_t s, c, p;
            if (T->group != g) continue;
            rt_engine_own(e, T, e->rank, &s, &c, &p);
            if (c) st = rt_model_init_range(mc, seed, T->moff + s, c, dst + p);
        }
        if (!st && !direct && e->plen[g])
            st = e->odev->h2d(e->odev->ctx, e->master[g], hb, (size_t)e->plen[g] * sizeof *hb);
    }
    free(hb);
    if (!st) st = e->odev->sync(e->odev->ctx);
    if (!st) st = round_trip_master(e);
    return st ? st : rt_engine_refresh_working(e);
}

static dsckpt_status engine_init_weights(rt_engine *e, rt_model *model, uint64_t seed) {
    /* Stage 0 on one rank has nothing to share out: its share is the whole model. */
    return e->stage == 0 && e->W > 1 ? init_weights_whole(e, model, seed) : init_weights_shares(e, model, seed);
}

static void engine_hparams(rt_engine *e, const rt_config *cfg) {
    rt_sched_init(&e->sched, cfg);
    rt_scaler_init_config(&e->scaler, cfg);
    for (int g = 0; g < NG; g++) {
        rt_adam_hparams *h = &e->hp[g];
        *h = rt_adam_defaults();
        h->beta1 = (float)cfg->optimizer.beta1;
        h->beta2 = (float)cfg->optimizer.beta2;
        h->eps = (float)cfg->optimizer.eps;
        h->weight_decay = g == 0 ? (float)cfg->optimizer.weight_decay : 0.0f;
        h->adam_w_mode = cfg->optimizer.decoupled;
        h->bias_correction = cfg->optimizer.bias_correction;
    }
}

dsckpt_status rt_engine_init_weights(rt_engine *e, uint64_t seed) {
    if (!e) return ds_err(DSCKPT_EINVAL, "rt_engine_init_weights: NULL engine");
    return engine_init_weights(e, e->model, seed);
}

dsckpt_status rt_engine_create(const rt_config *cfg, rt_comm *comm, rt_model *model, uint64_t seed, rt_engine **out) {
    rt_engine *e = NULL;
    DS_TRY(rt_engine_create_empty(cfg, comm, model, &e));
    dsckpt_status st = engine_init_weights(e, model, seed);
    if (st) {
        rt_engine_free(e);
        return st;
    }
    *out = e;
    return DSCKPT_OK;
}

dsckpt_status rt_engine_create_empty(const rt_config *cfg, rt_comm *comm, rt_model *model, rt_engine **out) {
    rt_engine *e = NULL;
    DS_TRY(ds_calloc(1, sizeof *e, &e));
    dsckpt_status st = DSCKPT_OK;
    e->cfg = cfg;
    engine_devices(e, cfg, model);
    e->comm = comm;
    e->model = model;
    e->W = rt_comm_size(comm);
    e->rank = rt_comm_rank(comm);
    e->stage = cfg->zero.stage;
    e->poff = e->off && e->stage == 3 && cfg->zero.offload_param.device == RT_OFFLOAD_CPU;
    e->wdt = cfg->bf16.enabled ? DSCKPT_BF16 : cfg->fp16.enabled ? DSCKPT_F16 : DSCKPT_F32;
    e->ws = dsckpt_dtype_size(e->wdt);
    e->N = rt_model_numel(model);
    e->scr_mod[0] = e->scr_mod[1] = -1;
    e->gscr_mod = -1;
    e->bucket = cfg->zero.reduce_bucket_size ? cfg->zero.reduce_bucket_size : 500000000ull;
    if (cfg->world_size != e->W) {
        st = ds_err(DSCKPT_EINVAL, "the config was resolved for %d ranks but %d are running", cfg->world_size, e->W);
        goto fail;
    }
    DS_TRYGOTO(engine_layout(e, model), fail);
    DS_TRYGOTO(engine_buffers(e, cfg, model), fail);
    engine_hparams(e, cfg);
    *out = e;
    return DSCKPT_OK;
fail:
    rt_engine_free(e);
    return st;
}

void rt_engine_free(rt_engine *e) {
    if (!e) return;
    if (e->dev) {
        const rt_device *d = e->dev;
        const rt_device *od = e->odev;
        for (int g = 0; g < NG; g++) {
            od->free(od->ctx, e->master[g]);
            od->free(od->ctx, e->m1[g]);
            od->free(od->ctx, e->m2[g]);
            od->free(od->ctx, e->ghost[g]);
            od->free(od->ctx, e->hw[g]);
            d->free(d->ctx, e->gpart[g]);
            const rt_device *wd = e->poff ? od : d; /* where the stage-3 pieces live */
            wd->free(wd->ctx, e->w3[g]);
        }
        d->free(d->ctx, e->w);
        d->free(d->ctx, e->gfull);
        d->free(d->ctx, e->scr[0]);
        d->free(d->ctx, e->scr[1]);
        d->free(d->ctx, e->gscr0);
        d->free(d->ctx, e->gscr);
        d->free(d->ctx, e->send);
        d->free(d->ctx, e->recv);
        d->free(d->ctx, e->gbuf);
        d->free(d->ctx, e->gbuf2);
    }
    free(e->counts);
    free(e->tokens);
    free(e->t);
    free(e->mod_t0);
    free(e->mod_t1);
    free(e->mstart);
    free(e->mlen);
    free(e);
}

/* ---- the optimizer step ---- */

/* Stages 0/3: the working weights from this rank's master partition. */
static dsckpt_status refresh_working(rt_engine *e, int g) {
    if (e->stage == 3) return master_to_w3(e, g);
    for (size_t i = 0; i < e->nt; i++) {
        const et *T = &e->t[i];
        if (T->group != g || e->stage != 0) continue;
        DS_TRY(master_to_working(e, g, T->goff, (uint8_t *)e->w + T->woff * e->ws, T->numel));
    }
    return DSCKPT_OK;
}

/* Stages 1/2: every rank's updated partition, cast, all-gathered into the working weights. */
static dsckpt_status gather_working(rt_engine *e, int g) {
    uint64_t P = e->plen[g];
    if (e->wgm) { /* cast into this rank's place in the group's flat, gathered in place */
        uint8_t *flat = (uint8_t *)e->w + e->wbase[g] * e->ws, *mine = flat + (size_t)e->rank * P * e->ws;
        DS_TRY(master_to_working(e, g, 0, mine, P));
        return rt_comm_allgather(e->comm, mine, (size_t)P * e->ws, flat);
    }
    DS_TRY(grow(e, &e->gbuf2, &e->gbuf2_cap, (size_t)(P ? P : 1) * e->ws * (size_t)e->W));
    uint8_t *mine = e->gbuf2 + (size_t)e->rank * P * e->ws; /* cast in place, gather in place */
    DS_TRY(master_to_working(e, g, 0, mine, P));
    DS_TRY(rt_comm_allgather(e->comm, mine, (size_t)P * e->ws, e->gbuf2));
    for (size_t i = 0; i < e->nt; i++) {
        const et *T = &e->t[i];
        if (T->group != g) continue;
        for (int r = 0; r < e->W; r++) {
            uint64_t s, c, p;
            rt_engine_own(e, T, r, &s, &c, &p);
            DS_TRY(e->dev->d2d(e->dev->ctx, (uint8_t *)e->w + (T->woff + s) * e->ws,
                               e->gbuf2 + ((uint64_t)r * P + p) * e->ws, (size_t)c * e->ws));
        }
    }
    return DSCKPT_OK;
}

/* Reduction of the accumulated gradients into the partitions (stages 2/3 reduced
 * them during backward). */
static dsckpt_status reduce_accumulated(rt_engine *e) {
    const rt_device *d = e->dev;
    if (e->stage == 0) {
        DS_TRY(rt_comm_allreduce_f32(e->comm, e->gfull, (size_t)e->N));
        for (size_t i = 0; i < e->nt; i++)
            DS_TRY(d->d2d(d->ctx, e->gpart[e->t[i].group] + e->t[i].goff, e->gfull + e->t[i].moff,
                          (size_t)e->t[i].numel * 4));
    } else if (e->stage == 1) {
        size_t *ts = NULL;
        const float **src = NULL;
        dsckpt_status st = ds_calloc(e->nt, sizeof *ts, &ts);
        if (!st) st = ds_calloc(e->nt, sizeof *src, &src);
        for (size_t i = 0; !st && i < e->nt; i++) {
            ts[i] = i;
            src[i] = e->gfull + e->t[i].moff;
        }
        if (!st) st = reduce_owned(e, ts, e->nt, src);
        free(ts);
        free((void *)src);
        DS_TRY(st);
    }
    return DSCKPT_OK;
}

/* The global norm of the scaled gradients, exact: host buckets, so the sums of all
 * ranks add without rounding. */
static dsckpt_status global_norm(rt_engine *e, double *norm) {
    const rt_device *d = e->dev;
    ds_u128 *acc = NULL, *all = NULL;
    DS_TRY(ds_calloc(DS_SUMSQ_BUCKETS, sizeof *acc, &acc));
    for (int g = 0; g < NG; g++) d->sumsq_exact(d->ctx, e->gpart[g], (size_t)e->plen[g], acc);
    if (e->stage != 0 && e->W > 1) {
        dsckpt_status st = ds_calloc((size_t)DS_SUMSQ_BUCKETS * (size_t)e->W, sizeof *all, &all);
        if (!st) st = rt_comm_allgather(e->comm, acc, DS_SUMSQ_BUCKETS * sizeof *acc, all);
        if (st) {
            free(acc);
            free(all);
            return st;
        }
        memset(acc, 0, DS_SUMSQ_BUCKETS * sizeof *acc);
        for (int r = 0; r < e->W; r++)
            for (int x = 0; x < DS_SUMSQ_BUCKETS; x++) acc[x] += all[(size_t)r * DS_SUMSQ_BUCKETS + x];
        free(all);
    }
    *norm = sqrt(ds_sumsq_value(acc));
    free(acc);
    return DSCKPT_OK;
}

/* Chunk c of group g's gradient partition down into its host copy (pipe_begin). */
static dsckpt_status pipe_chunk(rt_engine *e, int g, uint64_t c, int *slot) {
    uint64_t o = c * e->pipe_chunk, len = DS_MIN(e->pipe_chunk, e->plen[g] - o);
    return e->dev->pipe_begin(e->dev->ctx, e->ghost[g] + o, e->gpart[g] + o, (size_t)len * 4, slot);
}

/* Elements [o, o + len) of group g's offloaded state: the landed gradients
 * unscaled, then AdamW (on the CPU). */
static void host_adam(rt_engine *e, int g, const ds_adam_k *ak, float inv, uint64_t o, uint64_t len) {
    const rt_device *od = e->odev;
    od->scale(od->ctx, e->ghost[g] + o, (size_t)len, inv);
    od->adam(od->ctx, ak, e->master[g] + o, e->ghost[g] + o, e->m1[g] + o, e->m2[g] + o, (size_t)len);
}

/* The offloaded optimizer on group g: the gradient partition comes down to the CPU
 * and is unscaled and stepped there. Where the table pipelines copies, it comes in
 * chunks, two in flight, and each chunk is stepped as it lands while the next ones
 * copy; unscale and AdamW are elementwise, so the bits are those of one pass. */
static dsckpt_status offload_adam(rt_engine *e, int g, const ds_adam_k *ak, float inv) {
    const rt_device *d = e->dev;
    uint64_t n = e->plen[g];
    if (!d->pipe_begin) {
        DS_TRY(d->d2h(d->ctx, e->ghost[g], e->gpart[g], (size_t)n * 4));
        host_adam(e, g, ak, inv, 0, n);
        return DSCKPT_OK;
    }
    uint64_t nc = (n + e->pipe_chunk - 1) / e->pipe_chunk;
    int slot[2] = {-1, -1};
    dsckpt_status st = DSCKPT_OK;
    for (uint64_t c = 0; c < nc && c < 2 && !st; c++) st = pipe_chunk(e, g, c, &slot[c]);
    for (uint64_t c = 0; c < nc && !st; c++) {
        int k = (int)(c & 1);
        st = d->pipe_wait(d->ctx, slot[k]);
        slot[k] = -1;
        if (st) break;
        uint64_t o = c * e->pipe_chunk;
        host_adam(e, g, ak, inv, o, DS_MIN(e->pipe_chunk, n - o));
        if (c + 2 < nc) st = pipe_chunk(e, g, c + 2, &slot[k]);
    }
    for (int k = 0; k < 2; k++) /* after a failure: no copy left landing in ghost */
        if (slot[k] >= 0) (void)d->pipe_wait(d->ctx, slot[k]);
    return st;
}

/* The optimizer step on every group: unscale and clip (one factor), AdamW on the
 * partitions (on the CPU when offloaded), then the working weights rebuilt. */
static dsckpt_status apply_update(rt_engine *e, double scale, double total_norm, double lr) {
    const rt_device *d = e->dev;
    double combined = scale;
    if (e->cfg->gradient_clipping > 0) {
        double clip = ((total_norm / scale) + 1e-6) / e->cfg->gradient_clipping;
        if (clip > 1) combined = clip * scale;
    }
    float inv = (float)(1.0 / combined);
    rt_engine_before_change(e);
    e->applied++;
    for (int g = 0; g < NG; g++) {
        ds_adam_k ak;
        e->hp[g].lr = (float)lr;
        DS_TRY(rt_adam_constants(&e->hp[g], e->applied, &ak));
        if (e->off) { /* the gradient partition down, Adam on the CPU */
            DS_TRY(offload_adam(e, g, &ak, inv));
        } else {
            d->scale(d->ctx, e->gpart[g], (size_t)e->plen[g], inv);
            d->adam(d->ctx, &ak, e->master[g], e->gpart[g], e->m1[g], e->m2[g], (size_t)e->plen[g]);
        }
        if (e->stage == 1 || e->stage == 2) DS_TRY(gather_working(e, g));
        else DS_TRY(refresh_working(e, g));
    }
    return d->sync(d->ctx);
}

dsckpt_status rt_engine_step(rt_engine *e, const rt_data *data, uint64_t data_seed, uint64_t k, rt_step_stats *out) {
    double t0 = rt_now_s(), c0, c1;
    uint64_t b0, b1;
    rt_comm_stats(e->comm, &c0, &b0);
    const rt_config *cfg = e->cfg;
    const rt_device *d = e->dev;
    int T = (int)rt_data_seq_len(data);
    int mb = (int)cfg->micro_batch;
    uint64_t gas = cfg->grad_accum;
    if (e->stage < 2) DS_TRY(d->memzero(d->ctx, e->gfull, (size_t)e->N * 4));
    for (int g = 0; g < NG; g++) DS_TRY(d->memzero(d->ctx, e->gpart[g], (size_t)e->plen[g] * 4));
    double scale = rt_scaler_scale(&e->scaler);
    float grad_scale = (float)(scale / ((double)gas * e->W));
    double loss_sum = 0;
    rt_param_hooks h = hooks(e);
    for (uint64_t a = 0; a < gas; a++) {
        DS_TRY(rt_data_fill_micro(data, data_seed, k, e->W, e->rank, a, (uint64_t)mb, e->tokens));
        float loss = 0;
        e->hook_err = DSCKPT_OK;
        DS_TRY(pass_status(e, rt_model_forward_backward(e->model, &h, e->tokens, mb, T, grad_scale, &loss)));
        if (e->stage < 2 && e->wdt == DSCKPT_F16) d->round_f16(d->ctx, e->gfull, (size_t)e->N);
        loss_sum += loss;
    }
    DS_TRY(reduce_accumulated(e));
    /* Only fp16 skips overflowing steps (DeepSpeed never checks bf16 / fp32). */
    bool overflow = false;
    if (e->scaler.check_overflow) {
        for (int g = 0; g < NG; g++) overflow |= d->has_inf_nan(d->ctx, e->gpart[g], (size_t)e->plen[g]);
        DS_TRY(rt_comm_allreduce_or(e->comm, &overflow));
    }
    double total_norm = NAN;
    if (!overflow) DS_TRY(global_norm(e, &total_norm));
    double lr = rt_sched_lr(&e->sched, e->applied);
    if (!overflow) DS_TRY(apply_update(e, scale, total_norm, lr));
    DS_TRY(rt_scaler_update(&e->scaler, overflow));
    e->nsteps++;
    double lsum = loss_sum / (double)gas;
    DS_TRY(rt_comm_allreduce_f64(e->comm, &lsum, 1));
    rt_comm_stats(e->comm, &c1, &b1);
    double dt = rt_now_s() - t0;
    if (out) {
        out->step = e->nsteps;
        out->loss = lsum / e->W;
        out->lr = lr;
        out->grad_norm = overflow ? NAN : total_norm / scale;
        out->loss_scale = scale;
        out->skipped = overflow;
        out->seconds = dt;
        out->comm_seconds = c1 - c0;
        out->comm_bytes = b1 - b0;
        out->tokens_per_s = (double)cfg->train_batch_size * T / dt;
    }
    return DSCKPT_OK;
}

dsckpt_status rt_engine_eval(rt_engine *e, const rt_data *data, uint64_t cap, double *loss) {
    int T = (int)rt_data_seq_len(data);
    uint64_t nb = rt_data_eval_batches(data, cap, e->W, 1);
    rt_eval_sum sum = {0};
    rt_param_hooks h = hooks(e);
    for (uint64_t b = 0; b < nb; b++) {
        uint64_t rows = 0;
        DS_TRY(rt_data_fill_eval(data, cap, e->W, e->rank, b, 1, e->tokens, NULL, &rows));
        if (!rows) memset(e->tokens, 0, (size_t)(T + 1) * sizeof *e->tokens); /* keep collectives matched */
        float l = 0;
        e->hook_err = DSCKPT_OK;
        DS_TRY(pass_status(e, rt_model_forward(e->model, &h, e->tokens, 1, T, &l)));
        if (rows) rt_eval_sum_add(&sum, l);
    }
    rt_eval_sum *all = NULL;
    DS_TRY(ds_calloc((size_t)e->W, sizeof *all, &all));
    dsckpt_status st = rt_comm_allgather(e->comm, &sum, sizeof sum, all);
    if (!st) {
        rt_eval_sum tot = {0};
        for (int r = 0; r < e->W; r++) rt_eval_sum_merge(&tot, &all[r]);
        *loss = rt_eval_sum_mean(&tot);
    }
    free(all);
    return st;
}

void rt_engine_memory(const rt_engine *e, rt_mem_report *r) {
    memset(r, 0, sizeof *r);
    r->numel = e->N;
    for (int g = 0; g < NG; g++) r->part_numel += e->plen[g];
    r->params_bytes = (e->stage == 3 ? r->part_numel : e->wlen) * e->ws;
    r->grads_bytes = e->stage < 2 ? e->N * 4 : r->part_numel * 4;
    r->optim_bytes = r->part_numel * 12;
}

void rt_engine_memory_formula(const rt_engine *e, rt_mem_report *r) {
    memset(r, 0, sizeof *r);
    uint64_t psi = e->N, W = (uint64_t)e->W;
    r->numel = psi;
    r->part_numel = e->stage == 0 ? psi : ds_ceil_div(psi, W);
    r->params_bytes = (e->stage == 3 ? ds_ceil_div(psi, W) : psi) * e->ws;
    r->grads_bytes = (e->stage >= 2 ? ds_ceil_div(psi, W) : psi) * 4;
    r->optim_bytes = (e->stage >= 1 ? ds_ceil_div(psi, W) : psi) * 12;
}

uint64_t rt_engine_steps(const rt_engine *e) { return e->nsteps; }
const char *rt_engine_device_name(const rt_engine *e) { return e->dev->name; }

bool rt_engine_offloaded(const rt_engine *e) { return e->off; }
bool rt_engine_params_offloaded(const rt_engine *e) { return e->poff; }

void rt_engine_set_pre_update(rt_engine *e, void (*fn)(void *), void *ctx) {
    e->pre_update = fn;
    e->pre_update_ctx = ctx;
}

dsckpt_status rt_engine_refresh_working(rt_engine *e) {
    for (int g = 0; g < NG; g++) {
        if (e->stage == 1 || e->stage == 2) DS_TRY(gather_working(e, g));
        else DS_TRY(refresh_working(e, g));
    }
    return e->dev->sync(e->dev->ctx);
}

size_t rt_engine_working_size(const rt_engine *e) { return e->ws; }
