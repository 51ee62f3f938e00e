/*
 * ds_cuda.h — the CUDA twins of the training-step kernels, behind a C API (the .cu
 * files are compiled by nvcc for sm_90; everything here is callable from C).
 *
 * Every kernel has a CPU reference (kernels/) and
 * tests/test_kernels_cuda.c compares the two on random data. Exactness, per kernel:
 *   casts                      bitwise equal to kernels/cast.c (RNE, the same NaN rules)
 *   AdamW, scale, add, inf/NaN bitwise equal to kernels/optim.h (no FMA contraction:
 *                              every operation is an explicitly rounded intrinsic)
 *   sum of squares             exact, the same integer buckets as ds_sumsq_exact
 *   embedding fwd/bwd          bitwise (each output element is summed in the CPU's order)
 *   layernorm, GELU, softmax + cross-entropy, attention, fp32 GEMM
 *                              fp32 relative error < 1e-5 (parallel reduction order)
 *   bf16/fp16 GEMM             fp32 accumulation; < 1e-2 against fp32 on the same
 *                              16-bit-rounded operands
 * Every reduction runs in a fixed order that does not depend on timing (no float
 * atomics), so a kernel gives the same bits on every run on the same device.
 *
 * Context. A dsc_ctx owns one CUDA stream, a cuBLAS and a cuBLASLt handle, the
 * cuBLASLt workspace and a scratch area that grows on demand (the first call at a
 * given size allocates; steady-state steps allocate nothing). Every kernel is
 * enqueued on the context's stream and returns without waiting; pointers are device
 * pointers unless the name says host. One context per thread.
 *
 * Errors. kernels/ depends on nothing, so this library has its own small status
 * type: every fallible call returns a dsc_status (DSC_OK = 0) whose values are those
 * of dsckpt_status (the runtime's CUDA table translates them once, at its boundary,
 * with dsc_last_error()'s text): DSC_ECUDA with the CUDA or cuBLAS error text,
 * DSC_EINVAL for bad arguments (checked before anything is enqueued). A launch
 * failure may surface at the next call that synchronises (dsc_sync), as CUDA
 * reports it.
 */
#ifndef DS_CUDA_H
#define DS_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The values of the same-named dsckpt_status codes. */
typedef int dsc_status;
enum { DSC_OK = 0, DSC_EINVAL = 1, DSC_EMISUSE = 2, DSC_ENOMEM = 12, DSC_ECUDA = 14 };
/* The calling thread's message for the last failure. */
const char *dsc_last_error(void);

typedef struct dsc_ctx dsc_ctx;


/* Element types of GEMM operands. */
typedef enum dsc_dtype { DSC_F32 = 0, DSC_BF16 = 1, DSC_F16 = 2 } dsc_dtype;

/* ---- devices, contexts, memory ---- */

/* The number of CUDA devices usable here; 0 (and DSC_OK) when there is no device
 * or no driver, so callers can skip rather than fail. *why (may be NULL) is set to a
 * static string naming the reason when the count is 0. */
dsc_status dsc_device_count(int *count, const char **why);
/* Device memory of the current device: free and total bytes (cudaMemGetInfo). */
dsc_status dsc_mem_info(size_t *free_bytes, size_t *total_bytes);
/* "NVIDIA H100 80GB HBM3, cc 9.0, 132 SMs, driver 13000, runtime 13000" into buf. */
dsc_status dsc_device_describe(int device, char *buf, size_t cap);

/* Selects `device` for the calling thread and creates a context on it. */
dsc_status dsc_ctx_create(int device, dsc_ctx **out);
void dsc_ctx_free(dsc_ctx *c); /* NULL is a no-op; waits for the stream first */
/* The context's stream, as a cudaStream_t (void * here so C callers need no CUDA
 * header). */
void *dsc_ctx_stream(dsc_ctx *c);
/* Waits for everything enqueued on the context's stream; reports deferred errors. */
dsc_status dsc_sync(dsc_ctx *c);

dsc_status dsc_malloc(void **p, size_t bytes);
void dsc_free(void *p); /* NULL is a no-op */
/* Page-locked host memory (for staging and snapshots). */
dsc_status dsc_host_alloc(void **p, size_t bytes);
void dsc_host_free(void *p);
/* Copies on the context's stream (asynchronous with respect to the host where the
 * host side is pinned). kind: 0 host->device, 1 device->host, 2 device->device. */
enum { DSC_H2D = 0, DSC_D2H = 1, DSC_D2D = 2 };
dsc_status dsc_memcpy(dsc_ctx *c, void *dst, const void *src, size_t bytes, int kind);
dsc_status dsc_memset(dsc_ctx *c, void *dst, int byte, size_t bytes);
/* True when p is device memory (cudaPointerGetAttributes); false for host memory,
 * pinned or not. */
bool dsc_is_device_ptr(const void *p);

/* ---- casts (bitwise twins of kernels/cast.c) ---- */
dsc_status dsc_cast_f32_to_bf16(dsc_ctx *c, const float *src, uint16_t *dst, size_t n);
dsc_status dsc_cast_f32_to_f16(dsc_ctx *c, const float *src, uint16_t *dst, size_t n);
dsc_status dsc_cast_bf16_to_f32(dsc_ctx *c, const uint16_t *src, float *dst, size_t n);
dsc_status dsc_cast_f16_to_f32(dsc_ctx *c, const uint16_t *src, float *dst, size_t n);

/* ---- optimizer and gradient checks (twins of runtime/adam.c) ---- */

/* One Adam/AdamW step over a flat partition, in place; the constants are those of
 * adam.h, computed by the caller: bc1, bc2 are the bias corrections (1 when off),
 * computed in double on the host and rounded once, as rt_adam_step does. */
typedef struct dsc_adam_args {
    float lr, beta1, beta2, eps, weight_decay;
    float bc1, bc2;
    bool adam_w_mode;
} dsc_adam_args;
dsc_status dsc_adam_step(dsc_ctx *c, float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                            size_t n, const dsc_adam_args *a);
/* x[i] *= s. */
dsc_status dsc_scale(dsc_ctx *c, float *x, size_t n, float s);
/* dst[i] += src[i]. */
dsc_status dsc_add(dsc_ctx *c, float *dst, const float *src, size_t n);
/* g[i] = (float)(fp16)g[i], round to nearest even (kernels/optim.h ds_round_f16). */
dsc_status dsc_round_f16(dsc_ctx *c, float *g, size_t n);
/* Adds g's exact squares into the HOST accumulator acc[2048] (kernels/optim.h
 * ds_sumsq_exact: the significand of each exact double square into the unsigned
 * 128-bit bucket of its biased exponent); synchronises. Same buckets as the CPU. */
dsc_status dsc_sumsq_exact(dsc_ctx *c, const float *g, size_t n, unsigned __int128 *acc);
/* *out_host = some g[i] is +-inf or NaN; synchronises. */
dsc_status dsc_has_inf_nan(dsc_ctx *c, const float *g, size_t n, bool *out_host);
/* out[i] = ((srcs[0][i] + srcs[1][i]) + ...) + srcs[W-1][i] for i < m: the
 * collectives' rank-order sum (runtime/comm.c), bitwise. srcs is a host array of W
 * device pointers; out may be srcs[0] (in place), never a shifted source. */
dsc_status dsc_sum_rank_order(dsc_ctx *c, float *out, const float *const *srcs, int W, size_t m);

/* ---- layers (twins of the model's CPU kernels; shapes as there) ---- */

/* out[N, C] = LayerNorm(x) * w + b (eps 1e-5); mean, rstd [N] are kept for the
 * backward. */
dsc_status dsc_layernorm_fwd(dsc_ctx *c, int N, int C, const float *x, const float *w, const float *b,
                                float *out, float *mean, float *rstd);
/* dx += LayerNorm backward of dout; dw, db += the parameter gradients (column sums
 * in a fixed order). */
dsc_status dsc_layernorm_bwd(dsc_ctx *c, int N, int C, const float *dout, const float *x, const float *mean,
                                const float *rstd, const float *w, float *dx, float *dw, float *db);
/* y = GELU(x) (tanh approximation, "gelu_new"); d *= GELU'(x). */
dsc_status dsc_gelu_fwd(dsc_ctx *c, int64_t n, const float *x, float *y);
dsc_status dsc_gelu_bwd(dsc_ctx *c, int64_t n, const float *x, float *d);
/* Each of N rows of out [N, C] = bias (+ res when res is not NULL). */
dsc_status dsc_rows_init(dsc_ctx *c, int N, int C, float *out, const float *bias, const float *res);
/* db[j] += sum over rows of d[r, j] (fixed order). */
dsc_status dsc_bias_grad(dsc_ctx *c, int N, int C, const float *d, float *db);

/* tokens: device int32, B rows of T+1 (inputs row[0..T), targets row[1..T]).
 * out[B*T, C] = wte[token] + wpe[t]. */
dsc_status dsc_embed_fwd(dsc_ctx *c, int B, int T, int C, const int32_t *tokens, const float *wte,
                            const float *wpe, float *out);
/* dwte[token] += dout, dwpe[t] += dout over every position, each output element
 * summed over positions in position order (bitwise the CPU's sums). tokens_host is
 * the same batch on the host: the positions are grouped by token there. */
dsc_status dsc_embed_bwd(dsc_ctx *c, int B, int T, int C, int V, const int32_t *tokens_host,
                            const float *dout, float *dwte, float *dwpe);

/* Softmax cross-entropy over logits [B*T, V] (overwritten): row_loss [B*T] gets
 * log(sum exp) - z_target; with dscale != 0 the logits become
 * (softmax - onehot(target)) * dscale. *loss_host (may be NULL; synchronises) = the
 * mean of row_loss summed in row order in double. tokens: device, as for embed. */
dsc_status dsc_crossentropy(dsc_ctx *c, int B, int T, int V, const int32_t *tokens, float *logits,
                               float *row_loss, float dscale, double *loss_host);

/* Causal self-attention, qkv [B*T, 3C] -> att [B, NH, T, T] (row t holds the
 * probabilities of keys 0..t, zeros past t), y [B*T, C]. Batched GEMMs through
 * cuBLAS (fp32, no TF32) and a softmax kernel. */
dsc_status dsc_attention_fwd(dsc_ctx *c, int B, int T, int C, int NH, const float *qkv, float *att, float *y);
/* dqkv [B*T, 3C] = attention backward of dy (overwritten). */
dsc_status dsc_attention_bwd(dsc_ctx *c, int B, int T, int C, int NH, const float *qkv, const float *att,
                                const float *dy, float *dqkv);

/* The same with the four products' operands rounded to `via` (DSC_BF16 / DSC_F16:
 * qkv, P, dY and dS packed to 16 bits first; fp32 accumulation, fp32 att / y / dqkv;
 * the softmax and its backward in fp32), as a GPU's bf16 mode computes attention.
 * DSC_F32 is the functions above. Against the fp32 reference: < 1e-2. */
dsc_status dsc_attention_fwd_via(dsc_ctx *c, int B, int T, int C, int NH, const float *qkv, float *att, float *y,
                                    dsc_dtype via);
dsc_status dsc_attention_bwd_via(dsc_ctx *c, int B, int T, int C, int NH, const float *qkv, const float *att,
                                    const float *dy, float *dqkv, dsc_dtype via);

/* ---- GEMM through cuBLASLt ----
 * Row-major: C[M, N] = alpha * op(A) · op(B) + beta * C, op(A) [M, K], op(B) [K, N];
 * ta/tb true means the stored matrix is the transpose (A stored [K, M], B stored
 * [N, K]). lda, ldb, ldc are row strides of the stored matrices. A and B have type
 * ab, C has type ct (DSC_F32, or ab's 16-bit type); accumulation is fp32 (pure
 * fp32 for DSC_F32 operands: no TF32). */
dsc_status dsc_gemm(dsc_ctx *c, bool ta, bool tb, int M, int N, int K, float alpha, const void *A, int lda,
                       const void *B, int ldb, float beta, void *C, int ldc, dsc_dtype ab, dsc_dtype ct);

/* The same product of fp32 matrices with both operands rounded to `via` first (RNE,
 * the casts above, into the context's scratch), then one 16-bit GEMM with fp32
 * accumulation into the fp32 C: the step's GEMMs in bf16/fp16 as DeepSpeed's bf16 and
 * fp16 modes compute them. via DSC_F32 is dsc_gemm in pure fp32. Its reference is
 * the CPU GEMM of the rounded operands (< 1e-2 relative; summation order differs). */
dsc_status dsc_gemm_f32_via(dsc_ctx *c, bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                               const float *B, int ldb, float beta, float *C, int ldc, dsc_dtype via);

/* ---- asynchronous snapshot (kernels/cuda/snapshot.cu) ----
 * Device partitions copied into one of two page-locked host buffers on a side
 * stream: begin returns at once (the copy starts after everything already enqueued
 * on ctx's stream); fence makes ctx's stream wait until the last copy has read the
 * device memory (before an update changes it); wait blocks until a slot's bytes are
 * on the host; release hands the slot back (the writer is done). wait and release
 * may be called from another thread than begin and fence. */
typedef struct dsc_snapshot dsc_snapshot;
dsc_status dsc_snapshot_create(int device, size_t cap_bytes, dsc_snapshot **out);
void dsc_snapshot_free(dsc_snapshot *s); /* NULL is a no-op; waits for copies in flight */
dsc_status dsc_snapshot_begin(dsc_snapshot *s, dsc_ctx *c, const void *const *parts, const size_t *bytes,
                                 int nparts, int *slot);
dsc_status dsc_snapshot_fence(dsc_snapshot *s, dsc_ctx *c);
dsc_status dsc_snapshot_wait(dsc_snapshot *s, int slot, const void **host);
void dsc_snapshot_release(dsc_snapshot *s, int slot);
/* begin into the caller's page-locked host memory: parts[i] to dst[i] (a snapshot
 * created with cap_bytes 0 has no buffers of its own; wait's *host is then NULL). */
dsc_status dsc_snapshot_begin_into(dsc_snapshot *s, dsc_ctx *c, void *const *dst, const void *const *parts,
                                      const size_t *bytes, int nparts, int *slot);

#ifdef __cplusplus
}
#endif

#endif /* DS_CUDA_H */
