/*
 * device_cuda.c — the CUDA device table (device.h) over kernels/cuda (ds_cuda.h): device
 * memory, one stream, and the CUDA twins of the step kernels. The kernels' own status
 * (dsc_status, the same values as dsckpt_status) is translated here, once: kernel ops
 * keep the first failure as a sticky error with its message, which sync and every
 * status-returning op report.
 *
 * Exactness against the CPU table: casts, Adam, scale, add, fp16 rounding, the exact
 * sum of squares, inf/NaN and the embedding are bitwise; GEMMs (cuBLASLt, fp32, no
 * TF32), LayerNorm, GELU, attention and cross-entropy agree within fp32 rounding of
 * differently associated sums (tests/test_kernels_cuda.c).
 *
 * Compiled, not run on a GPU yet (docs/gpu.md).
 */
#include "device_cuda.h"

#include "ds_cuda.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert((int)DSC_OK == (int)DSCKPT_OK && (int)DSC_EINVAL == (int)DSCKPT_EINVAL &&
                   (int)DSC_EMISUSE == (int)DSCKPT_EMISUSE && (int)DSC_ENOMEM == (int)DSCKPT_ENOMEM &&
                   (int)DSC_ECUDA == (int)DSCKPT_ECUDA,
               "dsc_status values must be dsckpt_status's");

typedef struct cuda_dev {
    rt_device table; /* first: the table's ctx points back here */
    dsc_ctx *c;
    int device;
    dsckpt_status sticky;
    char msg[512];
    dsc_dtype gemm_via; /* GEMM operands: DSC_F32, or rounded to BF16/F16 (set_gemm_dtype) */
    int32_t *tok_host; /* host copy of the last token batch (embedding backward) */
    dsc_snapshot *snap; /* side-stream snapshot copies (created at the first snap_begin) */
    int snap_slot;      /* its slot in flight, or -1 */
    dsc_snapshot *pipe; /* the offload's double-buffered gradient copies (pipe_begin) */
    size_t tok_cap;
} cuda_dev;

static dsckpt_status translate(dsc_status st) {
    if (st == DSC_OK) return DSCKPT_OK;
    return ds_err((dsckpt_status)st, "CUDA: %s", dsc_last_error());
}

/* Records the first kernel failure. */
static void stick(cuda_dev *d, dsc_status st) {
    if (st == DSC_OK || d->sticky != DSCKPT_OK) return;
    d->sticky = (dsckpt_status)st;
    snprintf(d->msg, sizeof d->msg, "%s", dsc_last_error());
}

static void stick_msg(cuda_dev *d, dsckpt_status st, const char *msg) {
    if (d->sticky != DSCKPT_OK) return;
    d->sticky = st;
    snprintf(d->msg, sizeof d->msg, "%s", msg);
}

static dsckpt_status sticky_status(cuda_dev *d) {
    if (d->sticky == DSCKPT_OK) return DSCKPT_OK;
    return ds_err(d->sticky, "CUDA (an earlier kernel): %s", d->msg);
}

/* ---- memory ---- */

static dsckpt_status cu_alloc(void *ctx, size_t bytes, void **out) {
    cuda_dev *d = ctx;
    void *p = NULL;
    DS_TRY(translate(dsc_malloc(&p, bytes ? bytes : 1)));
    dsckpt_status st = translate(dsc_memset(d->c, p, 0, bytes ? bytes : 1));
    if (st == DSCKPT_OK) st = translate(dsc_sync(d->c));
    if (st != DSCKPT_OK) {
        dsc_free(p);
        return st;
    }
    *out = p;
    return DSCKPT_OK;
}

/* Page-locked host memory, zeroed (every page touched). */
static dsckpt_status cu_alloc_host(void *ctx, size_t bytes, void **out) {
    DS_UNUSED(ctx);
    void *p = NULL;
    DS_TRY(translate(dsc_host_alloc(&p, bytes ? bytes : 1)));
    memset(p, 0, bytes ? bytes : 1);
    *out = p;
    return DSCKPT_OK;
}

static void cu_free_host(void *ctx, void *p) {
    DS_UNUSED(ctx);
    if (p) dsc_host_free(p);
}

static bool cu_is_device(void *ctx, const void *p) {
    DS_UNUSED(ctx);
    return dsc_is_device_ptr(p);
}

static dsckpt_status cu_mem_used(void *ctx, uint64_t *bytes) {
    cuda_dev *d = ctx;
    DS_TRY(translate(dsc_sync(d->c)));
    size_t fr = 0, tot = 0;
    DS_TRY(translate(dsc_mem_info(&fr, &tot)));
    *bytes = (uint64_t)(tot - fr);
    return DSCKPT_OK;
}

static void cu_free(void *ctx, void *p) {
    DS_UNUSED(ctx);
    dsc_free(p);
}

static dsckpt_status cu_h2d(void *ctx, void *dst, const void *src, size_t bytes) {
    cuda_dev *d = ctx;
    DS_TRY(sticky_status(d));
    /* The source may be pageable and reused at once: wait for the copy. */
    DS_TRY(translate(dsc_memcpy(d->c, dst, src, bytes, DSC_H2D)));
    return translate(dsc_sync(d->c));
}

static dsckpt_status cu_d2h(void *ctx, void *dst, const void *src, size_t bytes) {
    cuda_dev *d = ctx;
    DS_TRY(sticky_status(d));
    DS_TRY(translate(dsc_memcpy(d->c, dst, src, bytes, DSC_D2H)));
    return translate(dsc_sync(d->c));
}

static dsckpt_status cu_d2d(void *ctx, void *dst, const void *src, size_t bytes) {
    cuda_dev *d = ctx;
    DS_TRY(sticky_status(d));
    return translate(dsc_memcpy(d->c, dst, src, bytes, DSC_D2D));
}

static dsckpt_status cu_memzero(void *ctx, void *dst, size_t bytes) {
    cuda_dev *d = ctx;
    DS_TRY(sticky_status(d));
    return translate(dsc_memset(d->c, dst, 0, bytes));
}

static dsckpt_status cu_sync(void *ctx) {
    cuda_dev *d = ctx;
    stick(d, dsc_sync(d->c));
    return sticky_status(d);
}

static void cu_cast(void *ctx, dsckpt_dtype dst_dt, void *dst, dsckpt_dtype src_dt, const void *src, size_t n) {
    cuda_dev *d = ctx;
    if (dst_dt == src_dt) {
        stick(d, dsc_memcpy(d->c, dst, src, n * dsckpt_dtype_size(src_dt), DSC_D2D));
    } else if (src_dt == DSCKPT_F32 && dst_dt == DSCKPT_BF16) {
        stick(d, dsc_cast_f32_to_bf16(d->c, src, dst, n));
    } else if (src_dt == DSCKPT_F32 && dst_dt == DSCKPT_F16) {
        stick(d, dsc_cast_f32_to_f16(d->c, src, dst, n));
    } else if (src_dt == DSCKPT_BF16 && dst_dt == DSCKPT_F32) {
        stick(d, dsc_cast_bf16_to_f32(d->c, src, dst, n));
    } else if (src_dt == DSCKPT_F16 && dst_dt == DSCKPT_F32) {
        stick(d, dsc_cast_f16_to_f32(d->c, src, dst, n));
    } else {
        stick_msg(d, DSCKPT_EINVAL, "cast between these element types is not supported");
    }
}

/* ---- asynchronous snapshot: kernels/cuda/snapshot.cu into the saver's buffers ---- */

static dsckpt_status cu_snap_wait(void *ctx) {
    cuda_dev *d = ctx;
    if (d->snap_slot < 0) return DSCKPT_OK;
    dsckpt_status st = translate(dsc_snapshot_wait(d->snap, d->snap_slot, NULL));
    dsc_snapshot_release(d->snap, d->snap_slot);
    d->snap_slot = -1;
    return st;
}

static dsckpt_status cu_snap_begin(void *ctx, void *const *dst, const void *const *src, const size_t *bytes, int n) {
    cuda_dev *d = ctx;
    DS_TRY(sticky_status(d));
    DS_TRY(cu_snap_wait(d)); /* the previous one (its writer has waited for it already) */
    if (!d->snap) DS_TRY(translate(dsc_snapshot_create(d->device, 0, &d->snap)));
    int slot = -1;
    DS_TRY(translate(dsc_snapshot_begin_into(d->snap, d->c, dst, src, bytes, n, &slot)));
    d->snap_slot = slot;
    return DSCKPT_OK;
}

static dsckpt_status cu_snap_fence(void *ctx) {
    cuda_dev *d = ctx;
    if (!d->snap) return DSCKPT_OK;
    stick(d, dsc_snapshot_fence(d->snap, d->c));
    return sticky_status(d);
}

static dsckpt_status cu_pipe_begin(void *ctx, void *dst, const void *src, size_t bytes, int *slot) {
    cuda_dev *d = ctx;
    DS_TRY(sticky_status(d));
    if (!d->pipe) DS_TRY(translate(dsc_snapshot_create(d->device, 0, &d->pipe)));
    void *const dsts[1] = {dst};
    const void *const srcs[1] = {src};
    return translate(dsc_snapshot_begin_into(d->pipe, d->c, dsts, srcs, &bytes, 1, slot));
}

static dsckpt_status cu_pipe_wait(void *ctx, int slot) {
    cuda_dev *d = ctx;
    if (!d->pipe) return ds_err(DSCKPT_EMISUSE, "pipe_wait with no copy begun");
    dsckpt_status st = translate(dsc_snapshot_wait(d->pipe, slot, NULL));
    dsc_snapshot_release(d->pipe, slot);
    return st;
}

/* ---- model kernels ---- */

static bool fits_int(ptrdiff_t v) { return v >= 0 && v <= 0x7FFFFFFF; }

/* C[M, N] = (add ? C : 0) + A·B with A read through strides: a row-major A (acs 1)
 * or a transposed one (ars 1) is one cuBLASLt call; K = 0 clears C unless add. */
static void cu_gemm(void *ctx, int M, int N, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                    ptrdiff_t ldb, float *c, ptrdiff_t ldc, int add) {
    cuda_dev *d = ctx;
    if (M == 0 || N == 0) return;
    if (K == 0) {
        if (!add)
            for (int i = 0; i < M; i++) stick(d, dsc_memset(d->c, c + (ptrdiff_t)i * ldc, 0, (size_t)N * sizeof(float)));
        return;
    }
    bool ta;
    ptrdiff_t lda;
    if (acs == 1 && ars >= K) {
        ta = false;
        lda = ars;
    } else if (ars == 1 && acs >= M) {
        ta = true;
        lda = acs;
    } else {
        stick_msg(d, DSCKPT_EINVAL, "gemm: A must be row-major or transposed (a unit stride)");
        return;
    }
    if (!fits_int(lda) || !fits_int(ldb) || !fits_int(ldc)) {
        stick_msg(d, DSCKPT_EINVAL, "gemm: a leading dimension exceeds INT_MAX");
        return;
    }
    stick(d, dsc_gemm_f32_via(d->c, ta, false, M, N, K, 1.0f, a, (int)lda, b, (int)ldb, add ? 1.0f : 0.0f, c,
                              (int)ldc, d->gemm_via));
}

static void cu_gemm_bt(void *ctx, int M, int N, int K, const float *a, ptrdiff_t lda, const float *bt,
                       ptrdiff_t ldbt, float *c, ptrdiff_t ldc, int add, float *panel) {
    cuda_dev *d = ctx;
    DS_UNUSED(panel); /* cuBLASLt reads Btᵀ in place */
    if (M == 0 || N == 0) return;
    if (K == 0) {
        cu_gemm(ctx, M, N, 0, a, lda, 1, bt, N, c, ldc, add);
        return;
    }
    if (!fits_int(lda) || !fits_int(ldbt) || !fits_int(ldc)) {
        stick_msg(d, DSCKPT_EINVAL, "gemm_bt: a leading dimension exceeds INT_MAX");
        return;
    }
    stick(d, dsc_gemm_f32_via(d->c, false, true, M, N, K, 1.0f, a, (int)lda, bt, (int)ldbt, add ? 1.0f : 0.0f, c,
                              (int)ldc, d->gemm_via));
}

static dsckpt_status cu_set_gemm_dtype(void *ctx, dsckpt_dtype dt) {
    cuda_dev *d = ctx;
    d->gemm_via = dt == DSCKPT_BF16 ? DSC_BF16 : dt == DSCKPT_F16 ? DSC_F16 : DSC_F32;
    return DSCKPT_OK;
}

static void cu_bias_rows(void *ctx, int N, int C, float *out, const float *bias, const float *res) {
    cuda_dev *d = ctx;
    stick(d, dsc_rows_init(d->c, N, C, out, bias, res));
}

static void cu_bias_grad(void *ctx, int N, int C, const float *dd, float *db) {
    cuda_dev *d = ctx;
    stick(d, dsc_bias_grad(d->c, N, C, dd, db));
}

static void cu_layernorm_fwd(void *ctx, int N, int C, const float *x, const float *w, const float *b, float *out,
                             float *mean, float *rstd) {
    cuda_dev *d = ctx;
    stick(d, dsc_layernorm_fwd(d->c, N, C, x, w, b, out, mean, rstd));
}

static void cu_layernorm_bwd(void *ctx, int N, int C, const float *dout, const float *x, const float *mean,
                             const float *rstd, const float *w, float *dx, float *dw, float *db) {
    cuda_dev *d = ctx;
    stick(d, dsc_layernorm_bwd(d->c, N, C, dout, x, mean, rstd, w, dx, dw, db));
}

static void cu_gelu_fwd(void *ctx, int64_t n, const float *x, float *y) {
    cuda_dev *d = ctx;
    stick(d, dsc_gelu_fwd(d->c, n, x, y));
}

static void cu_gelu_bwd(void *ctx, int64_t n, const float *x, float *dd) {
    cuda_dev *d = ctx;
    stick(d, dsc_gelu_bwd(d->c, n, x, dd));
}

static void cu_attention_fwd(void *ctx, int B, int T, int C, int NH, const float *qkv, float *att, float *y) {
    cuda_dev *d = ctx;
    stick(d, dsc_attention_fwd_via(d->c, B, T, C, NH, qkv, att, y, d->gemm_via));
}

static void cu_attention_bwd(void *ctx, int B, int T, int C, int NH, const float *qkv, const float *att,
                             const float *dy, float *dqkv, float *scratch) {
    cuda_dev *d = ctx;
    DS_UNUSED(scratch); /* the CUDA kernel keeps its own [NH, T, T] scratch */
    stick(d, dsc_attention_bwd_via(d->c, B, T, C, NH, qkv, att, dy, dqkv, d->gemm_via));
}

static void cu_embed_fwd(void *ctx, int B, int T, int C, const int32_t *tokens, const float *wte, const float *wpe,
                         float *out) {
    cuda_dev *d = ctx;
    stick(d, dsc_embed_fwd(d->c, B, T, C, tokens, wte, wpe, out));
}

/* The backward groups positions by token on the host, so the tokens come back from
 * the device (B x (T+1) int32, one small synchronous copy per backward). */
static void cu_embed_bwd(void *ctx, int B, int T, int C, const int32_t *tokens, const float *dout, float *dwte,
                         float *dwpe) {
    cuda_dev *d = ctx;
    if (B <= 0 || T <= 0) return;
    size_t n = (size_t)B * (size_t)(T + 1);
    if (n > d->tok_cap) {
        int32_t *p = realloc(d->tok_host, n * sizeof *p);
        if (!p) {
            stick_msg(d, DSCKPT_ENOMEM, "out of memory (token copy)");
            return;
        }
        d->tok_host = p;
        d->tok_cap = n;
    }
    dsc_status st = dsc_memcpy(d->c, d->tok_host, tokens, n * sizeof(int32_t), DSC_D2H);
    if (st == DSC_OK) st = dsc_sync(d->c);
    if (st != DSC_OK) {
        stick(d, st);
        return;
    }
    int32_t vmax = 0;
    for (size_t i = 0; i < n; i++) vmax = d->tok_host[i] > vmax ? d->tok_host[i] : vmax;
    stick(d, dsc_embed_bwd(d->c, B, T, C, vmax + 1, d->tok_host, dout, dwte, dwpe));
}

static void cu_crossent(void *ctx, int B, int T, int V, const int32_t *tokens, float *probs, float dscale,
                        float *row_loss) {
    cuda_dev *d = ctx;
    stick(d, dsc_crossentropy(d->c, B, T, V, tokens, probs, row_loss, dscale, NULL));
}

/* ---- optimizer kernels ---- */

static void cu_adam(void *ctx, const ds_adam_k *k, float *param, const float *grad, float *m, float *v, size_t n) {
    cuda_dev *d = ctx;
    dsc_adam_args a = {k->lr, k->beta1, k->beta2, k->eps, k->weight_decay, k->bc1, k->bc2, k->adam_w_mode};
    stick(d, dsc_adam_step(d->c, param, grad, m, v, n, &a));
}

static void cu_scale(void *ctx, float *x, size_t n, float s) {
    cuda_dev *d = ctx;
    stick(d, dsc_scale(d->c, x, n, s));
}

static void cu_add(void *ctx, float *dst, const float *src, size_t n) {
    cuda_dev *d = ctx;
    stick(d, dsc_add(d->c, dst, src, n));
}

static void cu_round_f16(void *ctx, float *g, size_t n) {
    cuda_dev *d = ctx;
    stick(d, dsc_round_f16(d->c, g, n));
}

static void cu_sumsq_exact(void *ctx, const float *g, size_t n, ds_u128 *acc) {
    cuda_dev *d = ctx;
    stick(d, dsc_sumsq_exact(d->c, g, n, acc));
}

static bool cu_has_inf_nan(void *ctx, const float *g, size_t n) {
    cuda_dev *d = ctx;
    bool f = false;
    dsc_status st = dsc_has_inf_nan(d->c, g, n, &f);
    stick(d, st);
    return st != DSC_OK || f; /* a failed check must not pass a step as finite */
}

dsckpt_status rt_device_cuda_open(int device, rt_device **out) {
    if (!out) return ds_err(DSCKPT_EINVAL, "rt_device_cuda_open: NULL out");
    *out = NULL;
    int count = 0;
    const char *why = NULL;
    DS_TRY(translate(dsc_device_count(&count, &why)));
    if (count < 1)
        return ds_err(DSCKPT_ECUDA, "no CUDA device (%s)", why ? why : "none found");
    if (device < 0 || device >= count)
        return ds_err(DSCKPT_EINVAL, "CUDA device %d does not exist (%d found)", device, count);
    cuda_dev *d = calloc(1, sizeof *d);
    if (!d) return ds_err(DSCKPT_ENOMEM, "out of memory (CUDA device table)");
    dsckpt_status st = translate(dsc_ctx_create(device, &d->c));
    if (st != DSCKPT_OK) {
        free(d);
        return st;
    }
    d->device = device;
    d->snap_slot = -1;
    rt_device *t = &d->table;
    t->name = "cuda";
    t->ctx = d;
    t->alloc = cu_alloc;
    t->free = cu_free;
    t->host_memory = false;
    t->alloc_host = cu_alloc_host;
    t->free_host = cu_free_host;
    t->is_device = cu_is_device;
    t->mem_used = cu_mem_used;
    t->h2d = cu_h2d;
    t->d2h = cu_d2h;
    t->d2d = cu_d2d;
    t->memzero = cu_memzero;
    t->sync = cu_sync;
    t->cast = cu_cast;
    t->pipe_begin = cu_pipe_begin;
    t->pipe_wait = cu_pipe_wait;
    t->snap_begin = cu_snap_begin;
    t->snap_fence = cu_snap_fence;
    t->snap_wait = cu_snap_wait;
    t->set_gemm_dtype = cu_set_gemm_dtype;
    t->gemm = cu_gemm;
    t->gemm_bt = cu_gemm_bt;
    t->bias_rows = cu_bias_rows;
    t->bias_grad = cu_bias_grad;
    t->layernorm_fwd = cu_layernorm_fwd;
    t->layernorm_bwd = cu_layernorm_bwd;
    t->gelu_fwd = cu_gelu_fwd;
    t->gelu_bwd = cu_gelu_bwd;
    t->attention_fwd = cu_attention_fwd;
    t->attention_bwd = cu_attention_bwd;
    t->embed_fwd = cu_embed_fwd;
    t->embed_bwd = cu_embed_bwd;
    t->crossent = cu_crossent;
    t->adam = cu_adam;
    t->scale = cu_scale;
    t->add = cu_add;
    t->round_f16 = cu_round_f16;
    t->sumsq_exact = cu_sumsq_exact;
    t->has_inf_nan = cu_has_inf_nan;
    *out = t;
    return DSCKPT_OK;
}

dsckpt_status rt_device_cuda_open_local(int local_rank, rt_device **out) {
    int count = 0;
    const char *why = NULL;
    DS_TRY(translate(dsc_device_count(&count, &why)));
    if (count < 1) return ds_err(DSCKPT_ECUDA, "no CUDA device (%s)", why ? why : "none found");
    return rt_device_cuda_open((local_rank < 0 ? 0 : local_rank) % count, out);
}

void rt_device_cuda_close(rt_device *dev) {
    if (!dev) return;
    cuda_dev *d = dev->ctx;
    dsc_snapshot_free(d->snap); /* waits for copies in flight */
    dsc_snapshot_free(d->pipe);
    dsc_ctx_free(d->c);
    free(d->tok_host);
    free(d);
}

void *rt_device_cuda_stream(const rt_device *dev) {
    if (!dev || !dev->name || strcmp(dev->name, "cuda") != 0) return NULL;
    const cuda_dev *d = dev->ctx;
    return dsc_ctx_stream(d->c);
}

dsc_ctx *rt_device_cuda_ctx(const rt_device *dev) {
    if (!dev || !dev->name || strcmp(dev->name, "cuda") != 0) return NULL;
    const cuda_dev *d = dev->ctx;
    return d->c;
}
