/*
 * device_cpu.c — the CPU device table (device.h): host memory and the OpenMP kernels
 * of kernels/. Every op is the kernel of the same name with the context dropped.
 */
#include "device.h"

#include "cast.h"
#include "gemm.h"
#include "internal.h"
#include "nn.h"
#include "optim.h"

#include <stdlib.h>
#include <string.h>

/* Zeroed, with every page touched now: long-lived buffers take their first-touch
 * page faults at start-up, not inside a step. ds_malloc: line-aligned (the reads of
 * a resume land here) and on huge pages from 2 MiB up (a fault per 2 MiB). */
static dsckpt_status cpu_alloc(void *ctx, size_t bytes, void **out) {
    DS_UNUSED(ctx);
    void *p = NULL;
    DS_TRY(ds_malloc(bytes, &p));
    /* Zeroed and every page touched now, on every thread, so the memory is
     * committed here (an overcommitted machine fails at creation, not mid-run) and
     * no later pass pays the first-touch faults. */
    ds_zero_touch(p, bytes ? bytes : 1);
    *out = p;
    return DSCKPT_OK;
}

static void cpu_free(void *ctx, void *p) {
    DS_UNUSED(ctx);
    free(p);
}

static dsckpt_status cpu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    DS_UNUSED(ctx);
    if (bytes) memcpy(dst, src, bytes);
    return DSCKPT_OK;
}

static dsckpt_status cpu_memzero(void *ctx, void *dst, size_t bytes) {
    DS_UNUSED(ctx);
    if (bytes) memset(dst, 0, bytes);
    return DSCKPT_OK;
}

static dsckpt_status cpu_sync(void *ctx) {
    DS_UNUSED(ctx);
    return DSCKPT_OK;
}

static void cpu_cast(void *ctx, dsckpt_dtype dst_dt, void *dst, dsckpt_dtype src_dt, const void *src, size_t n) {
    DS_UNUSED(ctx);
    if (dst_dt == src_dt) {
        if (n) memcpy(dst, src, n * dsckpt_dtype_size(src_dt));
    } else if (src_dt == DSCKPT_F32 && dst_dt == DSCKPT_BF16) {
        ds_cast_f32_to_bf16(src, dst, n);
    } else if (src_dt == DSCKPT_F32 && dst_dt == DSCKPT_F16) {
        ds_cast_f32_to_f16(src, dst, n);
    } else if (src_dt == DSCKPT_BF16 && dst_dt == DSCKPT_F32) {
        ds_cast_bf16_to_f32(src, dst, n);
    } else if (src_dt == DSCKPT_F16 && dst_dt == DSCKPT_F32) {
        ds_cast_f16_to_f32(src, dst, n);
    }
    /* Other pairs are not used by the runtime (16-bit <-> 16-bit goes through fp32). */
}

static void cpu_gemm(void *ctx, int M, int N, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                     ptrdiff_t ldb, float *c, ptrdiff_t ldc, int add) {
    DS_UNUSED(ctx);
    ds_gemm(M, N, K, a, ars, acs, b, ldb, c, ldc, add);
}

static void cpu_gemm_bt(void *ctx, int M, int N, int K, const float *a, ptrdiff_t lda, const float *bt,
                        ptrdiff_t ldbt, float *c, ptrdiff_t ldc, int add, float *panel) {
    DS_UNUSED(ctx);
    ds_gemm_bt(M, N, K, a, lda, bt, ldbt, c, ldc, add, panel);
}

static void cpu_bias_rows(void *ctx, int N, int C, float *out, const float *bias, const float *res) {
    DS_UNUSED(ctx);
    ds_bias_rows(N, C, out, bias, res);
}

static void cpu_bias_grad(void *ctx, int N, int C, const float *d, float *db) {
    DS_UNUSED(ctx);
    ds_bias_grad(N, C, d, db);
}

static void cpu_layernorm_fwd(void *ctx, int N, int C, const float *x, const float *w, const float *b, float *out,
                              float *mean, float *rstd) {
    DS_UNUSED(ctx);
    ds_layernorm_fwd(N, C, x, w, b, out, mean, rstd);
}

static void cpu_layernorm_bwd(void *ctx, int N, int C, const float *dout, const float *x, const float *mean,
                              const float *rstd, const float *w, float *dx, float *dw, float *db) {
    DS_UNUSED(ctx);
    ds_layernorm_bwd(N, C, dout, x, mean, rstd, w, dx, dw, db);
}

static void cpu_gelu_fwd(void *ctx, int64_t n, const float *x, float *y) {
    DS_UNUSED(ctx);
    ds_gelu_fwd(n, x, y);
}

static void cpu_gelu_bwd(void *ctx, int64_t n, const float *x, float *d) {
    DS_UNUSED(ctx);
    ds_gelu_bwd(n, x, d);
}

static void cpu_attention_fwd(void *ctx, int B, int T, int C, int NH, const float *qkv, float *att, float *y) {
    DS_UNUSED(ctx);
#ifdef DSCKPT_BLAS
    ds_attention_fwd_mm(B, T, C, NH, qkv, att, y);
#else
    ds_attention_fwd(B, T, C, NH, qkv, att, y);
#endif
}

static void cpu_attention_bwd(void *ctx, int B, int T, int C, int NH, const float *qkv, const float *att,
                              const float *dy, float *dqkv, float *scratch) {
    DS_UNUSED(ctx);
#ifdef DSCKPT_BLAS
    ds_attention_bwd_mm(B, T, C, NH, qkv, att, dy, dqkv, scratch);
#else
    ds_attention_bwd(B, T, C, NH, qkv, att, dy, dqkv, scratch);
#endif
}

static void cpu_embed_fwd(void *ctx, int B, int T, int C, const int32_t *tokens, const float *wte,
                          const float *wpe, float *out) {
    DS_UNUSED(ctx);
    ds_embed_fwd(B, T, C, tokens, wte, wpe, out);
}

static void cpu_embed_bwd(void *ctx, int B, int T, int C, const int32_t *tokens, const float *dout, float *dwte,
                          float *dwpe) {
    DS_UNUSED(ctx);
    ds_embed_bwd(B, T, C, tokens, dout, dwte, dwpe);
}

static void cpu_crossent(void *ctx, int B, int T, int V, const int32_t *tokens, float *probs, float dscale,
                         float *row_loss) {
    DS_UNUSED(ctx);
    ds_crossent(B, T, V, tokens, probs, dscale, row_loss);
}

static void cpu_adam(void *ctx, const ds_adam_k *k, float *param, const float *grad, float *m, float *v,
                     size_t n) {
    DS_UNUSED(ctx);
    ds_adam(k, param, grad, m, v, n);
}

static void cpu_scale(void *ctx, float *x, size_t n, float s) {
    DS_UNUSED(ctx);
    ds_scale(x, n, s);
}

static void cpu_add(void *ctx, float *dst, const float *src, size_t n) {
    DS_UNUSED(ctx);
    ds_add(dst, src, n);
}

static void cpu_round_f16(void *ctx, float *g, size_t n) {
    DS_UNUSED(ctx);
    ds_round_f16(g, n);
}

static void cpu_sumsq_exact(void *ctx, const float *g, size_t n, ds_u128 *acc) {
    DS_UNUSED(ctx);
    ds_sumsq_exact(g, n, acc);
}

static bool cpu_has_inf_nan(void *ctx, const float *g, size_t n) {
    DS_UNUSED(ctx);
    return ds_has_inf_nan(g, n);
}

static dsckpt_status cpu_alloc_host(void *ctx, size_t bytes, void **out) { return cpu_alloc(ctx, bytes, out); }

static void cpu_free_host(void *ctx, void *p) { cpu_free(ctx, p); }

static const rt_device cpu_device = {
    .name = "cpu",
    .ctx = NULL,
    .host_memory = true,
#ifdef DSCKPT_BLAS
    .attention_scratch_square = true,
#endif
    .alloc_host = cpu_alloc_host,
    .free_host = cpu_free_host,
    .is_device = NULL,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .h2d = cpu_copy,
    .d2h = cpu_copy,
    .d2d = cpu_copy,
    .memzero = cpu_memzero,
    .sync = cpu_sync,
    .cast = cpu_cast,
    .gemm = cpu_gemm,
    .gemm_bt = cpu_gemm_bt,
    .bias_rows = cpu_bias_rows,
    .bias_grad = cpu_bias_grad,
    .layernorm_fwd = cpu_layernorm_fwd,
    .layernorm_bwd = cpu_layernorm_bwd,
    .gelu_fwd = cpu_gelu_fwd,
    .gelu_bwd = cpu_gelu_bwd,
    .attention_fwd = cpu_attention_fwd,
    .attention_bwd = cpu_attention_bwd,
    .embed_fwd = cpu_embed_fwd,
    .embed_bwd = cpu_embed_bwd,
    .crossent = cpu_crossent,
    .adam = cpu_adam,
    .scale = cpu_scale,
    .add = cpu_add,
    .round_f16 = cpu_round_f16,
    .sumsq_exact = cpu_sumsq_exact,
    .has_inf_nan = cpu_has_inf_nan,
};

const rt_device *rt_device_cpu(void) { return &cpu_device; }
