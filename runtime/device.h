/*
 * device.h — the device seam of the training runtime: one table of operations
 * (memory, copies, the kernels of the training step) through which model.c and
 * engine.c touch their buffers. The CPU table (device_cpu.c) is host memory and the
 * kernels of kernels/ (gemm.h, nn.h, optim.h, cast.h); a CUDA table supplies device
 * memory, a stream and CUDA twins of the same kernels.
 *
 * Pointers. "Device" pointers are those returned by alloc; every kernel and d2d/memset
 * take device pointers only. h2d/d2h copy between host and device memory. On the CPU
 * table device memory is host memory, so the two coincide.
 *
 * Ordering and errors. Operations are issued in order on the table's context (`ctx`:
 * the CUDA stream and library handles; NULL on the CPU) and may run asynchronously;
 * d2h, has_inf_nan and sumsq_exact return when their host result is ready, h2d once
 * its host source may be reused (staging and offload buffers are refilled at once). Kernels
 * return nothing: a backend keeps a sticky error that sync (and every op returning a
 * status) reports. Memory ops return dsckpt_status with the error idiom's message.
 *
 * Semantics of each kernel: the CPU kernel of the same name in kernels/ (shapes,
 * summation order). A CPU table gives exactly those bits; a CUDA table is held to
 * the kernels' tests within stated tolerances (its sums may associate differently).
 */
#ifndef DSRT_DEVICE_H
#define DSRT_DEVICE_H

#include "dsckpt.h"
#include "optim.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rt_device {
    const char *name; /* "cpu", "cpu-strict", "cuda" */
    void *ctx;        /* backend state, passed to every op */
    /* Device pointers are plain host pointers that the host may read and write
     * directly (the CPU table). Code that must also work on a GPU never relies on it
     * except to skip a copy (engine_ckpt.c's zero-copy snapshot). */
    bool host_memory;
    /* attention_bwd needs a scratch of B*NH*T*T floats, not B*NH*T: the CPU table
     * of a -DDSCKPT_BLAS=ON build, whose attention is per-pair matrix products
     * (ds_attention_fwd_mm / ds_attention_bwd_mm, kernels/nn.h). */
    bool attention_scratch_square;

    /* ---- memory ---- */
    /* *out = `bytes` (0 allowed: a valid unique pointer) of zeroed device memory. */
    dsckpt_status (*alloc)(void *ctx, size_t bytes, void **out);
    void (*free)(void *ctx, void *p); /* NULL is a no-op */
    dsckpt_status (*h2d)(void *ctx, void *dst, const void *src, size_t bytes);
    dsckpt_status (*d2h)(void *ctx, void *dst, const void *src, size_t bytes);
    dsckpt_status (*d2d)(void *ctx, void *dst, const void *src, size_t bytes); /* no overlap */
    dsckpt_status (*memzero)(void *ctx, void *dst, size_t bytes);
    /* Waits for everything issued; returns the sticky error, if any. */
    dsckpt_status (*sync)(void *ctx);
    /* Host memory the table copies to and from fastest (page-locked on CUDA), zeroed,
     * every page touched: snapshot buffers, the offloaded optimizer state. Freed with
     * free_host (NULL is a no-op). */
    dsckpt_status (*alloc_host)(void *ctx, size_t bytes, void **out);
    void (*free_host)(void *ctx, void *p);
    /* Whether p points into memory from this table's alloc (the collectives stage such
     * buffers through the host when their backend cannot reach them). NULL when
     * host_memory: every pointer is host memory. */
    bool (*is_device)(void *ctx, const void *p);
    /* Device memory in use now, in bytes (CUDA: the device's total minus free, every
     * context on it counted; cpu-strict: its mappings). NULL where unknown (the CPU). */
    dsckpt_status (*mem_used)(void *ctx, uint64_t *bytes);

    /* ---- asynchronous snapshot (optional: NULL where a save copies with d2h and
     * waits, as on the CPU tables with host memory) ----
     * snap_begin copies n device ranges src[i] into host memory dst[i] (from
     * alloc_host) after everything issued so far and returns at once; snap_fence
     * makes every op issued after it wait until those copies have read their sources
     * (before an update changes them); snap_wait blocks the calling thread (any
     * thread: the checkpoint writer) until the bytes are on the host. One snapshot
     * in flight at a time: begin waits for the previous one. */
    dsckpt_status (*snap_begin)(void *ctx, void *const *dst, const void *const *src, const size_t *bytes, int n);
    dsckpt_status (*snap_fence)(void *ctx);
    dsckpt_status (*snap_wait)(void *ctx);

    /* ---- double-buffered device -> host copies (optional: NULL where the offloaded
     * optimizer copies with d2h) ----
     * pipe_begin copies `bytes` of device memory src into host memory dst (from
     * alloc_host) after everything issued so far, on a copy stream, and returns at
     * once with a slot; at most two copies are in flight. pipe_wait blocks until the
     * slot's bytes are on the host and frees the slot. The offloaded optimizer step
     * runs Adam on one chunk of gradients while the next comes down. */
    dsckpt_status (*pipe_begin)(void *ctx, void *dst, const void *src, size_t bytes, int *slot);
    dsckpt_status (*pipe_wait)(void *ctx, int slot);

    /* ---- element types: dst[i] = src[i] converted (kernels/cast.h); F32, BF16, F16;
     * same type is a copy ---- */
    void (*cast)(void *ctx, dsckpt_dtype dst_dt, void *dst, dsckpt_dtype src_dt, const void *src, size_t n);

    /* ---- model kernels (kernels/gemm.h, kernels/nn.h) ---- */
    /* The operand type of gemm and gemm_bt from now on: DSCKPT_F32 (the default), or
     * BF16/F16: both operands rounded to that type (RNE) and multiplied with fp32
     * accumulation into the fp32 output, as a 16-bit GEMM on a GPU computes it
     * (DeepSpeed's bf16/fp16 modes); the CUDA table also takes the attention's
     * products in that type, cpu-strict rounds gemm/gemm_bt operands only. NULL where
     * only fp32 is supported (the CPU table); use rt_device_set_gemm_dtype. */
    dsckpt_status (*set_gemm_dtype)(void *ctx, dsckpt_dtype dt);
    void (*gemm)(void *ctx, int M, int N, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                 ptrdiff_t ldb, float *c, ptrdiff_t ldc, int add);
    /* panel: device scratch of ds_gemm_bt_panel_floats(K) floats (a backend may ignore it). */
    void (*gemm_bt)(void *ctx, int M, int N, int K, const float *a, ptrdiff_t lda, const float *bt,
                    ptrdiff_t ldbt, float *c, ptrdiff_t ldc, int add, float *panel);
    void (*bias_rows)(void *ctx, int N, int C, float *out, const float *bias, const float *res);
    void (*bias_grad)(void *ctx, int N, int C, const float *d, float *db);
    void (*layernorm_fwd)(void *ctx, int N, int C, const float *x, const float *w, const float *b, float *out,
                          float *mean, float *rstd);
    void (*layernorm_bwd)(void *ctx, int N, int C, const float *dout, const float *x, const float *mean,
                          const float *rstd, const float *w, float *dx, float *dw, float *db);
    void (*gelu_fwd)(void *ctx, int64_t n, const float *x, float *y);
    void (*gelu_bwd)(void *ctx, int64_t n, const float *x, float *d);
    void (*attention_fwd)(void *ctx, int B, int T, int C, int NH, const float *qkv, float *att, float *y);
    /* scratch: B*NH*T*T floats where attention_scratch_square, else B*NH*T. */
    void (*attention_bwd)(void *ctx, int B, int T, int C, int NH, const float *qkv, const float *att,
                          const float *dy, float *dqkv, float *scratch);
    /* tokens: a device copy of the B x (T+1) token rows. */
    void (*embed_fwd)(void *ctx, int B, int T, int C, const int32_t *tokens, const float *wte, const float *wpe,
                      float *out);
    void (*embed_bwd)(void *ctx, int B, int T, int C, const int32_t *tokens, const float *dout, float *dwte,
                      float *dwpe);
    void (*crossent)(void *ctx, int B, int T, int V, const int32_t *tokens, float *probs, float dscale,
                     float *row_loss);

    /* ---- optimizer kernels (kernels/optim.h) ---- */
    void (*adam)(void *ctx, const ds_adam_k *k, float *param, const float *grad, float *m, float *v, size_t n);
    void (*scale)(void *ctx, float *x, size_t n, float s);
    void (*add)(void *ctx, float *dst, const float *src, size_t n);
    void (*round_f16)(void *ctx, float *g, size_t n);
    /* Adds g's exact squares into the HOST accumulator acc[DS_SUMSQ_BUCKETS]. */
    void (*sumsq_exact)(void *ctx, const float *g, size_t n, ds_u128 *acc);
    bool (*has_inf_nan)(void *ctx, const float *g, size_t n);
} rt_device;

/* The CPU table: host memory (pages touched at allocation), the OpenMP kernels. */
const rt_device *rt_device_cpu(void);

/* The CPU table with "device" memory the host cannot touch (device_strict.c), for
 * tests of the engine's discipline: each alloc is its own mapping, kept PROT_NONE
 * except while one of the table's own ops runs, so any read or write of device
 * memory outside the table (by the engine, the model, the checkpoint code or the
 * collectives) dies with SIGSEGV, as it would fault (or read garbage) on a GPU.
 * Copies check the direction of their pointers (h2d: host -> device, ...), kernels
 * that every pointer they get is device memory (the host accumulator of
 * sumsq_exact and the adam constants aside); a violation aborts with a message.
 * Results are bitwise those of the CPU table. One thread issues ops. */
dsckpt_status rt_device_cpu_strict_open(rt_device **out);
void rt_device_cpu_strict_close(rt_device *dev); /* NULL is a no-op */

/* The table called `name` ("cpu", "cpu-strict", "cuda" where built with CUDA),
 * opened for local rank `local_rank` (the CUDA device is local_rank modulo the
 * device count). EUNSUPPORTED for "cuda" in a build without CUDA, EINVAL for an
 * unknown name. Close with rt_device_close_named. */
dsckpt_status rt_device_open_named(const char *name, int local_rank, rt_device **out);
void rt_device_close_named(rt_device *dev);

/* Sets the table's GEMM operand type (set_gemm_dtype above). DSCKPT_F32 always
 * succeeds; a 16-bit type on a table without set_gemm_dtype is EUNSUPPORTED. */
dsckpt_status rt_device_set_gemm_dtype(rt_device *dev, dsckpt_dtype dt);

#endif /* DSRT_DEVICE_H */
