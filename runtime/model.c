/*
 * model.c — GPT-2 forward and backward (see model.h for the parameter layout, the
 * module hooks and the numerics): the parameter table, the initialisation, and the
 * pass as a sequence of device-table kernels (device.h; on the CPU the OpenMP kernels
 * of kernels/, whose results do not depend on the thread count).
 *
 * Activations live in one device slab allocated by rt_model_create for max_batch x
 * seq_len positions; a step allocates nothing. The tokens are copied to the device
 * per call; the per-position losses come back to the host and are summed there in
 * double, in position order.
 */
#include "model.h"

#include "device.h"
#include "gemm.h"
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- layout ---- */

/* Tensors of a block module, in flat order. */
enum {
    P_LN1_W, P_LN1_B, P_ATTN_W, P_ATTN_B, P_APROJ_W, P_APROJ_B,
    P_LN2_W, P_LN2_B, P_FC_W, P_FC_B, P_FCPROJ_W, P_FCPROJ_B, P_BLOCK_N
};

/* One layer's saved activations (positions are rows b*T + t). */
typedef struct layer_acts {
    float *ln1, *ln1_mean, *ln1_rstd; /* [BT, C], [BT], [BT] */
    float *qkv;                       /* [BT, 3C] */
    float *att;                       /* [B, NH, T, T] softmax rows (t2 <= t used) */
    float *atty;                      /* [BT, C] attention output before c_proj */
    float *res2;                      /* [BT, C] residual after attention */
    float *ln2, *ln2_mean, *ln2_rstd;
    float *fch, *fchg;                /* [BT, 4C] before and after GELU */
    float *res3;                      /* [BT, C] block output */
} layer_acts;

struct rt_model {
    const rt_device *dev;
    rt_model_cfg cfg;
    int max_batch, seq_len;
    rt_param *params;
    size_t nparams;
    uint64_t numel;
    uint64_t *mod_start, *mod_numel; /* n_layer + 2 each */
    uint64_t blk_off[P_BLOCK_N];     /* module-local offsets inside a block */

    float *slab;
    size_t slab_bytes;
    float *enc;                       /* [BT, C] embedding output */
    layer_acts *layers;               /* n_layer */
    float *lnf, *lnf_mean, *lnf_rstd; /* [BT, C], [BT], [BT] */
    float *probs;                     /* [BT, V] logits -> probabilities -> dlogits */
    float *row_loss;                  /* [BT] */
    float *dres, *dc;                 /* [BT, C] residual gradient, scratch */
    float *d4c;                       /* [BT, 4C] scratch (also dqkv) */
    float *datt;                      /* [B * NH, T] (or [B * NH, T * T]) attention backward scratch */
    float *tpanel;                    /* ds_gemm_bt's transpose panel for K <= 4C */
    int32_t *tokens;                  /* [B, T + 1] device copy of the batch */
    float *host_row_loss;             /* [BT] row_loss copied back (host) */
};

/* Validates the model-shape fields; caps keep every derived size in range. */
static dsckpt_status check_cfg(const rt_model_cfg *cfg) {
    if (!cfg) return ds_err(DSCKPT_EINVAL, "model config is NULL");
    if (cfg->vocab_size < 1) return ds_err(DSCKPT_EINVAL, "vocab_size = %d must be >= 1", cfg->vocab_size);
    if (cfg->n_ctx < 1) return ds_err(DSCKPT_EINVAL, "n_ctx = %d must be >= 1", cfg->n_ctx);
    if (cfg->n_layer < 1) return ds_err(DSCKPT_EINVAL, "n_layer = %d must be >= 1", cfg->n_layer);
    if (cfg->n_head < 1) return ds_err(DSCKPT_EINVAL, "n_head = %d must be >= 1", cfg->n_head);
    if (cfg->n_embd < 1) return ds_err(DSCKPT_EINVAL, "n_embd = %d must be >= 1", cfg->n_embd);
    if (cfg->n_embd % cfg->n_head != 0)
        return ds_err(DSCKPT_EINVAL, "n_embd = %d is not a multiple of n_head = %d", cfg->n_embd, cfg->n_head);
    /* 4C is a row length and L + 2 a module count: both must be ints; ten million
     * layers leaves room in the 80-byte names. */
    if (cfg->n_embd > INT_MAX / 4)
        return ds_err(DSCKPT_EINVAL, "n_embd = %d is too large (max %d)", cfg->n_embd, INT_MAX / 4);
    if (cfg->n_layer > 10000000)
        return ds_err(DSCKPT_EINVAL, "n_layer = %d is too large (max 10000000)", cfg->n_layer);
    return DSCKPT_OK;
}

static void set_param(rt_param *p, const char *name, int ndim, uint64_t d0, uint64_t d1, uint64_t offset,
                      int module) {
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->shape[0] = (int64_t)d0;
    p->shape[1] = ndim == 2 ? (int64_t)d1 : 0;
    p->numel = ndim == 2 ? d0 * d1 : d0;
    p->offset = offset;
    p->module = module;
}

/* Builds the parameter table of a checked cfg; *numel = total size. Overflow of the
 * 64-bit flat space is EINVAL. */
static dsckpt_status build_table(const rt_model_cfg *cfg, rt_param **out, size_t *nout, uint64_t *numel) {
    uint64_t V = (uint64_t)cfg->vocab_size, C = (uint64_t)cfg->n_embd, P = (uint64_t)cfg->n_ctx;
    int L = cfg->n_layer;
    size_t n = 2 + (size_t)P_BLOCK_N * (size_t)L + 2;
    /* Per-block size 12C^2 + 13C and the embedding sizes, overflow-checked. */
    uint64_t c2, blk, wte, wpe, total, t;
    if (ds_mul_overflow(C, C, &c2) || ds_mul_overflow(c2, 12, &blk) || ds_add_overflow(blk, 13 * C, &blk) ||
        ds_mul_overflow(V, C, &wte) || ds_mul_overflow(P, C, &wpe) || ds_add_overflow(wte, wpe, &total) ||
        ds_mul_overflow(blk, (uint64_t)L, &t) || ds_add_overflow(total, t, &total) ||
        ds_add_overflow(total, 2 * C, &total))
        return ds_err(DSCKPT_EINVAL, "model too large: the parameter count overflows 64 bits");
    rt_param *ps;
    DS_TRY(ds_calloc(n, sizeof *ps, &ps));
    size_t k = 0;
    uint64_t off = 0;
    char name[80];
    set_param(&ps[k++], "transformer.wte.weight", 2, V, C, off, 0);
    off += wte;
    set_param(&ps[k++], "transformer.wpe.weight", 2, P, C, off, 0);
    off += wpe;
    static const struct {
        const char *suffix;
        int ndim;
        int in_mul, out_mul; /* shape = [in_mul*C, out_mul*C] (2-D) or [out_mul*C] (1-D) */
    } blk_tensors[P_BLOCK_N] = {
        {"ln_1.weight", 1, 0, 1},        {"ln_1.bias", 1, 0, 1},
        {"attn.c_attn.weight", 2, 1, 3}, {"attn.c_attn.bias", 1, 0, 3},
        {"attn.c_proj.weight", 2, 1, 1}, {"attn.c_proj.bias", 1, 0, 1},
        {"ln_2.weight", 1, 0, 1},        {"ln_2.bias", 1, 0, 1},
        {"mlp.c_fc.weight", 2, 1, 4},    {"mlp.c_fc.bias", 1, 0, 4},
        {"mlp.c_proj.weight", 2, 4, 1},  {"mlp.c_proj.bias", 1, 0, 1},
    };
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < P_BLOCK_N; j++) {
            snprintf(name, sizeof name, "transformer.h.%d.%s", i, blk_tensors[j].suffix);
            if (blk_tensors[j].ndim == 2)
                set_param(&ps[k], name, 2, blk_tensors[j].in_mul * C, blk_tensors[j].out_mul * C, off, 1 + i);
            else
                set_param(&ps[k], name, 1, blk_tensors[j].out_mul * C, 0, off, 1 + i);
            off += ps[k++].numel;
        }
    }
    set_param(&ps[k++], "transformer.ln_f.weight", 1, C, 0, off, L + 1);
    off += C;
    set_param(&ps[k++], "transformer.ln_f.bias", 1, C, 0, off, L + 1);
    off += C;
    if (off != total) { /* the two computations must agree */
        free(ps);
        return ds_err(DSCKPT_EINTERNAL, "parameter table size %llu != %llu", (unsigned long long)off,
                      (unsigned long long)total);
    }
    *out = ps;
    *nout = n;
    *numel = total;
    return DSCKPT_OK;
}

/* ---- workspace slab ---- */

typedef struct slab {
    float *base; /* NULL while sizing */
    uint64_t used;
    bool overflow;
} slab;

/* Takes a*b floats, rounded up to 16 floats (64 bytes) so rows start aligned. */
static float *slab_take(slab *s, uint64_t a, uint64_t b) {
    uint64_t n;
    if (ds_mul_overflow(a, b, &n) || ds_add_overflow(n, 15, &n)) {
        s->overflow = true;
        return NULL;
    }
    n &= ~(uint64_t)15;
    float *p = s->base ? s->base + s->used : NULL;
    if (ds_add_overflow(s->used, n, &s->used)) s->overflow = true;
    return p;
}

static void plan_slab(rt_model *m, slab *s) {
    uint64_t C = (uint64_t)m->cfg.n_embd, V = (uint64_t)m->cfg.vocab_size, NH = (uint64_t)m->cfg.n_head;
    uint64_t B = (uint64_t)m->max_batch, T = (uint64_t)m->seq_len, BT = B * T;
    m->enc = slab_take(s, BT, C);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        layer_acts *a = &m->layers[l];
        a->ln1 = slab_take(s, BT, C);
        a->ln1_mean = slab_take(s, BT, 1);
        a->ln1_rstd = slab_take(s, BT, 1);
        a->qkv = slab_take(s, BT, 3 * C);
        a->att = slab_take(s, B * NH, T * T);
        a->atty = slab_take(s, BT, C);
        a->res2 = slab_take(s, BT, C);
        a->ln2 = slab_take(s, BT, C);
        a->ln2_mean = slab_take(s, BT, 1);
        a->ln2_rstd = slab_take(s, BT, 1);
        a->fch = slab_take(s, BT, 4 * C);
        a->fchg = slab_take(s, BT, 4 * C);
        a->res3 = slab_take(s, BT, C);
    }
    m->lnf = slab_take(s, BT, C);
    m->lnf_mean = slab_take(s, BT, 1);
    m->lnf_rstd = slab_take(s, BT, 1);
    m->probs = slab_take(s, BT, V);
    m->row_loss = slab_take(s, BT, 1);
    m->dres = slab_take(s, BT, C);
    m->dc = slab_take(s, BT, C);
    m->d4c = slab_take(s, BT, 4 * C);
    m->datt = slab_take(s, B * NH, m->dev->attention_scratch_square ? T * T : T);
    m->tpanel = slab_take(s, ds_gemm_bt_panel_floats(4 * (int)C), 1); /* K is C, 3C or 4C */
    m->tokens = (int32_t *)slab_take(s, B, T + 1);                       /* int32: float-sized */
}

dsckpt_status rt_model_create(const rt_model_cfg *cfg, int max_batch, int seq_len, rt_model **out) {
    return rt_model_create_on(rt_device_cpu(), cfg, max_batch, seq_len, out);
}

dsckpt_status rt_model_create_on(const rt_device *dev, const rt_model_cfg *cfg, int max_batch, int seq_len,
                                 rt_model **out) {
    if (!out) return ds_err(DSCKPT_EINVAL, "rt_model_create: out is NULL");
    if (!dev) return ds_err(DSCKPT_EINVAL, "rt_model_create: device table is NULL");
    *out = NULL;
    DS_TRY(check_cfg(cfg));
    if (max_batch < 1) return ds_err(DSCKPT_EINVAL, "max_batch = %d must be >= 1", max_batch);
    if (seq_len < 1 || seq_len > cfg->n_ctx)
        return ds_err(DSCKPT_EINVAL, "seq_len = %d must be in [1, n_ctx = %d]", seq_len, cfg->n_ctx);
    /* Rows (positions) and (batch, head) pairs are loop indices of type int. */
    if ((int64_t)max_batch * seq_len > INT_MAX || (int64_t)max_batch * cfg->n_head > INT_MAX)
        return ds_err(DSCKPT_EINVAL, "max_batch = %d x seq_len = %d is too large", max_batch, seq_len);

    dsckpt_status st;
    rt_model *m;
    DS_TRY(ds_calloc(1, sizeof *m, &m));
    m->dev = dev;
    m->cfg = *cfg;
    m->max_batch = max_batch;
    m->seq_len = seq_len;
    int nmod = cfg->n_layer + 2;
    DS_TRYGOTO(build_table(cfg, &m->params, &m->nparams, &m->numel), fail);
    DS_TRYGOTO(ds_calloc((size_t)nmod, sizeof *m->mod_start, &m->mod_start), fail);
    DS_TRYGOTO(ds_calloc((size_t)nmod, sizeof *m->mod_numel, &m->mod_numel), fail);
    for (int i = 0; i < nmod; i++) m->mod_start[i] = UINT64_MAX;
    for (size_t i = 0; i < m->nparams; i++) {
        const rt_param *p = &m->params[i];
        if (m->mod_start[p->module] == UINT64_MAX) m->mod_start[p->module] = p->offset;
        m->mod_numel[p->module] += p->numel;
    }
    for (int j = 0; j < P_BLOCK_N; j++) m->blk_off[j] = m->params[2 + j].offset - m->mod_start[1];
    DS_TRYGOTO(ds_calloc((size_t)cfg->n_layer, sizeof *m->layers, &m->layers), fail);

    slab s = {0};
    plan_slab(m, &s);
    if (s.overflow || s.used > SIZE_MAX / sizeof(float)) {
        st = ds_err(DSCKPT_EINVAL, "activation workspace for max_batch = %d, seq_len = %d overflows", max_batch,
                    seq_len);
        goto fail;
    }
    st = dev->alloc(dev->ctx, (size_t)s.used * sizeof(float), (void **)&m->slab);
    if (st != DSCKPT_OK) {
        ds_err_prefix(st, "activation workspace (%.1f MiB for max_batch = %d, seq_len = %d)",
                      (double)s.used * 4 / 1048576.0, max_batch, seq_len);
        goto fail;
    }
    m->slab_bytes = (size_t)s.used * sizeof(float);
    s = (slab){.base = m->slab};
    plan_slab(m, &s);
    DS_TRYGOTO(ds_malloc((size_t)max_batch * (size_t)seq_len * sizeof(float), &m->host_row_loss), fail);
    *out = m;
    return DSCKPT_OK;
fail:
    rt_model_free(m);
    return st;
}

void rt_model_free(rt_model *m) {
    if (!m) return;
    if (m->slab) m->dev->free(m->dev->ctx, m->slab);
    free(m->host_row_loss);
    free(m->layers);
    free(m->mod_start);
    free(m->mod_numel);
    free(m->params);
    free(m);
}

const rt_model_cfg *rt_model_config(const rt_model *m) { return &m->cfg; }

const rt_device *rt_model_device(const rt_model *m) { return m->dev; }

size_t rt_model_workspace_bytes(const rt_model *m) { return m->slab_bytes; }

const rt_param *rt_model_params(const rt_model *m, size_t *n) {
    if (n) *n = m->nparams;
    return m->params;
}

uint64_t rt_model_numel(const rt_model *m) { return m->numel; }

int rt_model_nmodules(const rt_model *m) { return m->cfg.n_layer + 2; }

void rt_model_module_range(const rt_model *m, int module, uint64_t *start, uint64_t *numel) {
    bool ok = module >= 0 && module < m->cfg.n_layer + 2;
    if (start) *start = ok ? m->mod_start[module] : 0;
    if (numel) *numel = ok ? m->mod_numel[module] : 0;
}

/* ---- initialisation ---- */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Standard normal samples 2j and 2j + 1 of stream `key`: Box-Muller's two branches
 * from the j-th pair of uniforms (one log and one sincos per two samples). */
static void normal_pair(uint64_t key, uint64_t j, double out[2]) {
    uint64_t r1 = splitmix64(key ^ splitmix64(2 * j));
    uint64_t r2 = splitmix64(key ^ splitmix64(2 * j + 1));
    double u1 = (double)((r1 >> 11) + 1) * 0x1.0p-53; /* (0, 1] */
    double u2 = (double)(r2 >> 11) * 0x1.0p-53;       /* [0, 1) */
    double r = sqrt(-2.0 * log(u1)), s, c;
    sincos(6.283185307179586 * u2, &s, &c);
    out[0] = r * c;
    out[1] = r * s;
}

/* dst[0..cnt) = sd x samples [a, a + cnt) of stream `key`: sample i is branch i % 2
 * of pair i / 2, so any slice is drawn alone and comes out the same. */
static void normal_fill(uint64_t key, uint64_t a, int64_t cnt, double sd, float *dst) {
    int64_t j0 = (int64_t)(a >> 1), j1 = (int64_t)((a + (uint64_t)cnt + 1) >> 1);
#pragma omp parallel for schedule(static) if (cnt > 65536)
    for (int64_t j = j0; j < j1; j++) {
        double z[2];
        normal_pair(key, (uint64_t)j, z);
        for (int k = 0; k < 2; k++) {
            int64_t i = 2 * j + k - (int64_t)a;
            if (i >= 0 && i < cnt) dst[i] = (float)(sd * z[k]);
        }
    }
}

/* Flat elements [start, start + count) of the initialisation, into out, from the
 * parameter table ps[0..n) of a model of n_layer blocks. */
static void init_table_range(int n_layer, const rt_param *ps, size_t n, uint64_t seed, uint64_t start,
                             uint64_t count, float *out) {
    uint64_t key = splitmix64(seed ^ 0x6770742d32696e69ull); /* "gpt-2ini" */
    double proj_std = 0.02 / sqrt(2.0 * n_layer);
    for (size_t k = 0; k < n; k++) {
        const rt_param *p = &ps[k];
        /* The part of this parameter in [start, start + count). */
        uint64_t a = DS_MAX(p->offset, start), b = DS_MIN(p->offset + p->numel, start + count);
        if (a >= b) continue;
        size_t len = strlen(p->name);
        bool is_weight = len > 7 && strcmp(p->name + len - 7, ".weight") == 0;
        bool is_ln = strstr(p->name, ".ln_") != NULL;
        float *dst = out + (a - start);
        int64_t cnt = (int64_t)(b - a);
        if (!is_weight) {
            memset(dst, 0, (size_t)cnt * sizeof(float));
        } else if (is_ln) {
            for (int64_t i = 0; i < cnt; i++) dst[i] = 1.0f;
        } else {
            double sd = strstr(p->name, ".c_proj.") ? proj_std : 0.02;
            normal_fill(key, a, cnt, sd, dst);
        }
    }
}

dsckpt_status rt_model_init_range(const rt_model_cfg *cfg, uint64_t seed, uint64_t start, uint64_t count,
                                  float *out) {
    DS_TRY(check_cfg(cfg));
    if (!out && count) return ds_err(DSCKPT_EINVAL, "rt_model_init_range: out is NULL");
    rt_param *ps;
    size_t n;
    uint64_t numel;
    DS_TRY(build_table(cfg, &ps, &n, &numel));
    dsckpt_status st = DSCKPT_OK;
    if (start > numel || count > numel - start)
        st = ds_err(DSCKPT_EINVAL, "rt_model_init_range: elements [%llu, +%llu) of a model of %llu",
                    (unsigned long long)start, (unsigned long long)count, (unsigned long long)numel);
    else
        init_table_range(cfg->n_layer, ps, n, seed, start, count, out);
    free(ps);
    return st;
}

dsckpt_status rt_model_init(const rt_model_cfg *cfg, float *flat, uint64_t seed) {
    DS_TRY(check_cfg(cfg));
    if (!flat) return ds_err(DSCKPT_EINVAL, "rt_model_init: flat is NULL");
    rt_param *ps;
    size_t n;
    uint64_t numel;
    DS_TRY(build_table(cfg, &ps, &n, &numel));
    init_table_range(cfg->n_layer, ps, n, seed, 0, numel, flat);
    free(ps);
    return DSCKPT_OK;
}

/* ---- the pass ---- */

typedef struct blk_params {
    const float *p[P_BLOCK_N];
} blk_params;

static blk_params block_view(const rt_model *m, const float *base) {
    blk_params v;
    for (int j = 0; j < P_BLOCK_N; j++) v.p[j] = base + m->blk_off[j];
    return v;
}

typedef struct blk_grads {
    float *g[P_BLOCK_N];
} blk_grads;

static void block_forward(rt_model *m, int l, const float *x, const blk_params *w, int B, int T) {
    const rt_device *d = m->dev;
    int C = m->cfg.n_embd, NH = m->cfg.n_head, BT = B * T;
    layer_acts *a = &m->layers[l];
    d->layernorm_fwd(d->ctx, BT, C, x, w->p[P_LN1_W], w->p[P_LN1_B], a->ln1, a->ln1_mean, a->ln1_rstd);
    d->bias_rows(d->ctx, BT, 3 * C, a->qkv, w->p[P_ATTN_B], NULL);
    d->gemm(d->ctx, BT, 3 * C, C, a->ln1, C, 1, w->p[P_ATTN_W], 3 * C, a->qkv, 3 * C, 1);
    d->attention_fwd(d->ctx, B, T, C, NH, a->qkv, a->att, a->atty);
    d->bias_rows(d->ctx, BT, C, a->res2, w->p[P_APROJ_B], x);
    d->gemm(d->ctx, BT, C, C, a->atty, C, 1, w->p[P_APROJ_W], C, a->res2, C, 1);
    d->layernorm_fwd(d->ctx, BT, C, a->res2, w->p[P_LN2_W], w->p[P_LN2_B], a->ln2, a->ln2_mean, a->ln2_rstd);
    d->bias_rows(d->ctx, BT, 4 * C, a->fch, w->p[P_FC_B], NULL);
    d->gemm(d->ctx, BT, 4 * C, C, a->ln2, C, 1, w->p[P_FC_W], 4 * C, a->fch, 4 * C, 1);
    d->gelu_fwd(d->ctx, (int64_t)BT * 4 * C, a->fch, a->fchg);
    d->bias_rows(d->ctx, BT, C, a->res3, w->p[P_FCPROJ_B], a->res2);
    d->gemm(d->ctx, BT, C, 4 * C, a->fchg, 4 * C, 1, w->p[P_FCPROJ_W], C, a->res3, C, 1);
}

/* On entry m->dres holds the gradient of the block's output; on exit, of its input x. */
static void block_backward(rt_model *m, int l, const float *x, const blk_params *w, const blk_grads *g, int B,
                           int T) {
    const rt_device *d = m->dev;
    int C = m->cfg.n_embd, NH = m->cfg.n_head, BT = B * T;
    layer_acts *a = &m->layers[l];
    float *dres = m->dres, *dc = m->dc, *d4c = m->d4c;
    /* MLP: res3 = res2 + gelu(ln2·Wfc + bfc)·Wproj + bproj */
    d->gemm_bt(d->ctx, BT, 4 * C, C, dres, C, w->p[P_FCPROJ_W], C, d4c, 4 * C, 0, m->tpanel);
    d->gemm(d->ctx, 4 * C, C, BT, a->fchg, 1, 4 * C, dres, C, g->g[P_FCPROJ_W], C, 1);
    d->bias_grad(d->ctx, BT, C, dres, g->g[P_FCPROJ_B]);
    d->gelu_bwd(d->ctx, (int64_t)BT * 4 * C, a->fch, d4c);
    d->gemm_bt(d->ctx, BT, C, 4 * C, d4c, 4 * C, w->p[P_FC_W], 4 * C, dc, C, 0, m->tpanel);
    d->gemm(d->ctx, C, 4 * C, BT, a->ln2, 1, C, d4c, 4 * C, g->g[P_FC_W], 4 * C, 1);
    d->bias_grad(d->ctx, BT, 4 * C, d4c, g->g[P_FC_B]);
    d->layernorm_bwd(d->ctx, BT, C, dc, a->res2, a->ln2_mean, a->ln2_rstd, w->p[P_LN2_W], dres, g->g[P_LN2_W],
                  g->g[P_LN2_B]);
    /* Attention: res2 = x + attn(ln1(x))·Wproj + bproj */
    d->gemm_bt(d->ctx, BT, C, C, dres, C, w->p[P_APROJ_W], C, dc, C, 0, m->tpanel);
    d->gemm(d->ctx, C, C, BT, a->atty, 1, C, dres, C, g->g[P_APROJ_W], C, 1);
    d->bias_grad(d->ctx, BT, C, dres, g->g[P_APROJ_B]);
    float *dqkv = d4c; /* [BT, 3C] fits in [BT, 4C] */
    d->attention_bwd(d->ctx, B, T, C, NH, a->qkv, a->att, dc, dqkv, m->datt);
    d->gemm_bt(d->ctx, BT, C, 3 * C, dqkv, 3 * C, w->p[P_ATTN_W], 3 * C, dc, C, 0, m->tpanel);
    d->gemm(d->ctx, C, 3 * C, BT, a->ln1, 1, C, dqkv, 3 * C, g->g[P_ATTN_W], 3 * C, 1);
    d->bias_grad(d->ctx, BT, 3 * C, dqkv, g->g[P_ATTN_B]);
    d->layernorm_bwd(d->ctx, BT, C, dc, x, a->ln1_mean, a->ln1_rstd, w->p[P_LN1_W], dres, g->g[P_LN1_W], g->g[P_LN1_B]);
}

/* The mean of the per-position losses, summed on the host in double, in position order. */
static dsckpt_status mean_loss(rt_model *m, int BT, double *out) {
    DS_TRY(m->dev->d2h(m->dev->ctx, m->host_row_loss, m->row_loss, (size_t)BT * sizeof(float)));
    double total = 0.0;
    for (int r = 0; r < BT; r++) total += m->host_row_loss[r];
    *out = total / (double)BT;
    return DSCKPT_OK;
}

static dsckpt_status check_args(const rt_model *m, const rt_param_hooks *h, const int32_t *tokens, int B, int T,
                                bool backward) {
    if (!m) return ds_err(DSCKPT_EINVAL, "model is NULL");
    if (!h || !h->acquire || !h->release)
        return ds_err(DSCKPT_EINVAL, "parameter hooks missing (acquire and release are required)");
    if (backward && (!h->grad_buf || !h->grad_ready))
        return ds_err(DSCKPT_EINVAL, "forward_backward needs the grad_buf and grad_ready hooks");
    if (!tokens) return ds_err(DSCKPT_EINVAL, "tokens is NULL");
    if (B < 1 || B > m->max_batch)
        return ds_err(DSCKPT_EINVAL, "batch size B = %d is outside [1, max_batch = %d]", B, m->max_batch);
    if (T < 1 || T > m->seq_len)
        return ds_err(DSCKPT_EINVAL, "sequence length T = %d is outside [1, seq_len = %d]", T, m->seq_len);
    int V = m->cfg.vocab_size;
    for (int b = 0; b < B; b++)
        for (int t = 0; t <= T; t++) {
            int32_t tok = tokens[(ptrdiff_t)b * (T + 1) + t];
            if (tok < 0 || tok >= V)
                return ds_err(DSCKPT_EINVAL, "token %d at position (row %d, column %d) of the batch is outside [0, "
                                             "vocab_size = %d)", (int)tok, b, t, V);
        }
    return DSCKPT_OK;
}

/* Calls a pointer-returning hook; NULL becomes EIO with the hook's message, if any. */
static dsckpt_status hook_acquire(const rt_param_hooks *h, int module, const float **out) {
    ds_err_clear();
    *out = h->acquire(h->ctx, module);
    if (*out) return DSCKPT_OK;
    if (dsckpt_last_error()[0]) return ds_err_prefix(DSCKPT_EIO, "acquire(module %d) failed", module);
    return ds_err(DSCKPT_EIO, "acquire(module %d) returned NULL", module);
}

static dsckpt_status hook_grad(const rt_param_hooks *h, int module, float **out) {
    ds_err_clear();
    *out = h->grad_buf(h->ctx, module);
    if (*out) return DSCKPT_OK;
    if (dsckpt_last_error()[0]) return ds_err_prefix(DSCKPT_EIO, "grad_buf(module %d) failed", module);
    return ds_err(DSCKPT_EIO, "grad_buf(module %d) returned NULL", module);
}

/* The forward up to ln_f's output (m->lnf); module L+1 is left acquired in *lnf_w
 * (the caller releases it). */
static dsckpt_status forward_trunk(rt_model *m, const rt_param_hooks *h, const int32_t *tokens, int B, int T,
                                   const float **lnf_w) {
    const rt_device *d = m->dev;
    int C = m->cfg.n_embd, L = m->cfg.n_layer, V = m->cfg.vocab_size;
    const float *p;
    DS_TRY(d->h2d(d->ctx, m->tokens, tokens, (size_t)B * (size_t)(T + 1) * sizeof *tokens));
    DS_TRY(hook_acquire(h, 0, &p));
    d->embed_fwd(d->ctx, B, T, C, m->tokens, p, p + (ptrdiff_t)V * C, m->enc);
    h->release(h->ctx, 0);
    const float *x = m->enc;
    for (int l = 0; l < L; l++) {
        DS_TRY(hook_acquire(h, 1 + l, &p));
        blk_params w = block_view(m, p);
        block_forward(m, l, x, &w, B, T);
        h->release(h->ctx, 1 + l);
        x = m->layers[l].res3;
    }
    DS_TRY(hook_acquire(h, L + 1, &p));
    d->layernorm_fwd(d->ctx, B * T, C, x, p, p + C, m->lnf, m->lnf_mean, m->lnf_rstd);
    *lnf_w = p;
    return DSCKPT_OK;
}

dsckpt_status rt_model_forward(rt_model *m, const rt_param_hooks *h, const int32_t *tokens, int B, int T,
                               float *loss) {
    DS_TRY(check_args(m, h, tokens, B, T, false));
    const rt_device *d = m->dev;
    int C = m->cfg.n_embd, L = m->cfg.n_layer, V = m->cfg.vocab_size;
    const float *lnf_w, *wte;
    DS_TRY(forward_trunk(m, h, tokens, B, T, &lnf_w));
    h->release(h->ctx, L + 1);
    DS_TRY(hook_acquire(h, 0, &wte));
    d->gemm_bt(d->ctx, B * T, V, C, m->lnf, C, wte, C, m->probs, V, 0, m->tpanel);
    h->release(h->ctx, 0);
    d->crossent(d->ctx, B, T, V, m->tokens, m->probs, 0.0f, m->row_loss);
    double l;
    DS_TRY(mean_loss(m, B * T, &l));
    if (loss) *loss = (float)l;
    return DSCKPT_OK;
}

dsckpt_status rt_model_forward_backward(rt_model *m, const rt_param_hooks *h, const int32_t *tokens, int B, int T,
                                        float grad_scale, float *loss) {
    DS_TRY(check_args(m, h, tokens, B, T, true));
    if (!isfinite(grad_scale)) return ds_err(DSCKPT_EINVAL, "grad_scale = %g is not finite", (double)grad_scale);
    const rt_device *d = m->dev;
    int C = m->cfg.n_embd, L = m->cfg.n_layer, V = m->cfg.vocab_size, BT = B * T;
    dsckpt_status st;
    double l;
    const float *lnf_w, *wte, *p;
    float *g0, *g;
    DS_TRY(forward_trunk(m, h, tokens, B, T, &lnf_w));
    DS_TRYGOTO(hook_acquire(h, 0, &wte), fail_lnf);
    DS_TRYGOTO(hook_grad(h, 0, &g0), fail_both);
    d->gemm_bt(d->ctx, BT, V, C, m->lnf, C, wte, C, m->probs, V, 0, m->tpanel);
    d->crossent(d->ctx, B, T, V, m->tokens, m->probs, grad_scale / (float)BT, m->row_loss);
    DS_TRYGOTO(mean_loss(m, BT, &l), fail_both);
    /* Tied LM head: dwte += dlogitsᵀ·lnf; d(lnf) = dlogits·wte. */
    d->gemm(d->ctx, V, C, BT, m->probs, 1, V, m->lnf, C, g0, C, 1);
    d->gemm(d->ctx, BT, C, V, m->probs, V, 1, wte, C, m->dc, C, 0);
    h->release(h->ctx, 0);
    DS_TRYGOTO(hook_grad(h, L + 1, &g), fail_lnf);
    st = d->memzero(d->ctx, m->dres, (size_t)BT * (size_t)C * sizeof(float));
    if (st != DSCKPT_OK) {
        h->release(h->ctx, L + 1);
        return st;
    }
    const float *xL = m->layers[L - 1].res3;
    d->layernorm_bwd(d->ctx, BT, C, m->dc, xL, m->lnf_mean, m->lnf_rstd, lnf_w, m->dres, g, g + C);
    h->release(h->ctx, L + 1);
    h->grad_ready(h->ctx, L + 1);
    for (int i = L - 1; i >= 0; i--) {
        DS_TRY(hook_acquire(h, 1 + i, &p));
        st = hook_grad(h, 1 + i, &g);
        if (st != DSCKPT_OK) {
            h->release(h->ctx, 1 + i);
            return st;
        }
        blk_params w = block_view(m, p);
        blk_grads gv;
        for (int j = 0; j < P_BLOCK_N; j++) gv.g[j] = g + m->blk_off[j];
        block_backward(m, i, i > 0 ? m->layers[i - 1].res3 : m->enc, &w, &gv, B, T);
        h->release(h->ctx, 1 + i);
        h->grad_ready(h->ctx, 1 + i);
    }
    d->embed_bwd(d->ctx, B, T, C, m->tokens, m->dres, g0, g0 + (ptrdiff_t)V * C);
    h->grad_ready(h->ctx, 0);
    DS_TRY(d->sync(d->ctx));
    if (loss) *loss = (float)l;
    return DSCKPT_OK;
fail_both:
    h->release(h->ctx, 0);
fail_lnf:
    h->release(h->ctx, L + 1);
    return st;
}

/* ---- dense hooks ---- */

static const float *dense_acquire(void *ctx, int module) {
    rt_dense_ctx *d = ctx;
    uint64_t start;
    rt_model_module_range(d->model, module, &start, NULL);
    return d->params + start;
}

static void dense_release(void *ctx, int module) { DS_UNUSED(ctx), DS_UNUSED(module); }

static float *dense_grad_buf(void *ctx, int module) {
    rt_dense_ctx *d = ctx;
    if (!d->grads) {
        ds_err(DSCKPT_EMISUSE, "dense hooks were set up without a gradient array");
        return NULL;
    }
    uint64_t start;
    rt_model_module_range(d->model, module, &start, NULL);
    return d->grads + start;
}

static void dense_grad_ready(void *ctx, int module) { DS_UNUSED(ctx), DS_UNUSED(module); }

void rt_dense_hooks(rt_param_hooks *h, rt_dense_ctx *ctx, const rt_model *m, const float *params, float *grads) {
    ctx->model = m;
    ctx->params = params;
    ctx->grads = grads;
    h->ctx = ctx;
    h->acquire = dense_acquire;
    h->release = dense_release;
    h->grad_buf = dense_grad_buf;
    h->grad_ready = dense_grad_ready;
}
