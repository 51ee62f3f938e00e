/*
 * engine_internal.h — the engine's state, shared by engine.c (training) and
 * engine_ckpt.c (saving and loading checkpoints); not a public interface.
 */
#ifndef DSRT_ENGINE_INTERNAL_H
#define DSRT_ENGINE_INTERNAL_H

#include "adam.h"
#include "device.h"
#include "dsckpt_internal.h"
#include "engine.h"

typedef struct et {
    uint64_t moff, numel;
    int module, group;
    uint64_t goff;    /* offset in the group's flat buffer (stages 0-2) */
    uint64_t qoff, q; /* stage 3: offset of this tensor's piece in the partition, piece length */
    uint64_t woff;    /* stages 0-2: offset in the working weights (moff, or wbase[group] + goff) */
} et;

#define NG 2

struct rt_engine {
    const rt_config *cfg;
    rt_comm *comm;
    rt_model *model;
    int W, rank, stage;
    dsckpt_dtype wdt;  /* working weights: BF16, F16 or F32 */
    size_t ws;         /* its element size */
    uint64_t N;        /* model elements */
    et *t;
    size_t nt;
    int nmod;
    size_t *mod_t0, *mod_t1;    /* tensors [t0, t1) of each module */
    uint64_t *mstart, *mlen;
    uint64_t maxmod;
    ds_flat_part fp[NG];
    uint64_t gnumel[NG], plen[NG];
    float *master[NG], *m1[NG], *m2[NG], *gpart[NG];
    void *w;           /* stages 0-2: working weights (et.woff: the model's layout, or by group) */
    bool wgm;          /* w by group: each group's flat (padded, W partitions) at wbase[g] */
    uint64_t wbase[NG], wlen;
    void *w3[NG];      /* stage 3: this rank's pieces, partition layout */
    float *gfull;      /* stages 0/1: gradients, model layout */
    float *scr[2];     /* fp32 parameters of acquired modules */
    int scr_mod[2];
    float *gscr0, *gscr; /* stages 2/3: module gradients (module 0 kept for the whole backward) */
    int gscr_mod;
    bool gscr0_live;
    float *send, *recv;
    size_t send_cap, recv_cap;
    uint8_t *gbuf, *gbuf2; /* gather buffers (working dtype): stage 3, and stages 1/2 in fp32 */
    size_t gbuf_cap, gbuf2_cap;
    size_t *counts;
    int32_t *tokens;
    rt_sched sched;
    rt_scaler scaler;
    rt_adam_hparams hp[NG];
    uint64_t applied, nsteps;
    dsckpt_status hook_err; /* a hook's failure during the current pass (sticky) */
    char hook_msg[1024];    /* its message */
    const struct rt_device *dev; /* where every buffer of the step lives (device.h) */
    /* Where master, m1 and m2 live: dev, or with offload_optimizer device cpu on a
     * table whose memory is not host memory, `htab` (the CPU kernels over dev's
     * alloc_host memory): the gradient partition comes down (d2h into ghost), Adam
     * runs on the CPU, the working weights go up (cast into hw, h2d). */
    const struct rt_device *odev;
    bool off;
    bool poff;           /* stage 3 with offload_param cpu (and the optimizer offloaded): w3 in host memory */
    uint64_t pipe_chunk; /* off: elements of gradient per pipelined copy (offload_adam) */
    rt_device htab;
    float *ghost[NG];  /* offload: the gradient partitions on the host */
    uint8_t *hw[NG];   /* offload: the partitions cast to the working dtype on the host */
    uint64_t bucket;
    void (*pre_update)(void *); /* called right before master/m1/m2 change */
    void *pre_update_ctx;
};


/* Rank r's share of tensor T: elements [*s, *s + *n) at offset *poff of the group
 * partition (stage 0: the whole tensor). */
void rt_engine_own(const rt_engine *e, const et *T, int r, uint64_t *s, uint64_t *n, uint64_t *poff);
/* Recomputes the working weights from the fp32 master partitions (collective at
 * stages 1/2). */
dsckpt_status rt_engine_refresh_working(rt_engine *e);
/* *pp = a zeroed buffer of `bytes` whose pages are all touched now: long-lived
 * buffers used at every step (or by every async save) take their first-touch page
 * faults at start-up, not in a step, a save or a resume. `what` names it in the
 * out-of-memory error. */
dsckpt_status rt_alloc_touched(void *pp, size_t bytes, const char *what);
/* The fp32 master partitions or Adam moments are about to change. */
static inline void rt_engine_before_change(rt_engine *e) {
    if (e->pre_update) e->pre_update(e->pre_update_ctx);
}

#endif
