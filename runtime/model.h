/*
 * model.h — the GPT-2 decoder of the training runtime: its parameter table (Hugging
 * Face names and shapes in one flat fp32 space, grouped into ZeRO modules), its
 * initialisation, and the forward/backward pass, run through a device table
 * (device.h: the CPU's OpenMP kernels unless another table is given).
 *
 * Flat parameter space. Parameters are concatenated, in this order, into one fp32
 * array (C = n_embd, V = vocab_size, L = n_layer; Conv1D convention y = x·W + b with
 * W shaped [in, out], row-major):
 *
 *   transformer.wte.weight [V, C]         transformer.wpe.weight [n_ctx, C]
 *   for i in 0..L-1:
 *     transformer.h.i.ln_1.weight [C]     transformer.h.i.ln_1.bias [C]
 *     transformer.h.i.attn.c_attn.weight [C, 3C]   .attn.c_attn.bias [3C]
 *     transformer.h.i.attn.c_proj.weight [C, C]    .attn.c_proj.bias [C]
 *     transformer.h.i.ln_2.weight [C]     transformer.h.i.ln_2.bias [C]
 *     transformer.h.i.mlp.c_fc.weight [C, 4C]      .mlp.c_fc.bias [4C]
 *     transformer.h.i.mlp.c_proj.weight [4C, C]    .mlp.c_proj.bias [C]
 *   transformer.ln_f.weight [C]           transformer.ln_f.bias [C]
 *
 * The LM head is tied to wte (logits = ln_f(h) · wteᵀ). It is not a parameter of its
 * own; checkpoints that want Hugging Face's key name it RT_MODEL_LM_HEAD_ALIAS, an
 * alias of RT_MODEL_LM_HEAD_TARGET.
 *
 * Modules (the unit of ZeRO gathering and gradient reduction): module 0 = {wte, wpe},
 * module 1+i = block i, module L+1 = {ln_f}. A module's parameters are contiguous in
 * the flat space; "module-local" offsets count from the module's first element.
 *
 * Numerics: fp32 throughout, LayerNorm eps 1e-5, GELU tanh approximation
 * ("gelu_new"), causal attention scaled by 1/sqrt(head size), loss = mean
 * cross-entropy over all B*T positions. Results (loss and every gradient element) are
 * bitwise identical for any OpenMP thread count: work is split over independent
 * outputs and each output is summed by one thread in a fixed order.
 *
 * Thread-safety: one rt_model must not be used from two threads at once (it owns the
 * activation workspace); distinct models are independent. Each call opens its own
 * OpenMP parallel regions.
 */
#ifndef DSRT_MODEL_H
#define DSRT_MODEL_H

#include "dsckpt.h"

#include <stddef.h>
#include <stdint.h>

#define RT_MODEL_LM_HEAD_ALIAS "lm_head.weight"
#define RT_MODEL_LM_HEAD_TARGET "transformer.wte.weight"

typedef struct rt_model_cfg {
    int vocab_size; /* V */
    int n_ctx;      /* rows of wpe: the longest sequence the model can take */
    int n_layer;    /* L */
    int n_head;
    int n_embd;     /* C, a multiple of n_head */
} rt_model_cfg;

/* One parameter tensor of the flat space. */
typedef struct rt_param {
    char name[80];      /* Hugging Face name, e.g. "transformer.h.3.mlp.c_fc.weight" */
    int ndim;           /* 1 or 2 */
    int64_t shape[2];   /* shape[1] is 0 for 1-D tensors */
    uint64_t numel;
    uint64_t offset;    /* flat element offset */
    int module;
} rt_param;

/*
 * Parameter hooks: the model never owns parameters or gradients. Every pointer it
 * gets through a hook is in the module-local layout (element 0 = the module's first
 * element in the flat space).
 *
 * acquire(m): fp32 parameters of module m, valid until release(m). Returns NULL on
 *   failure (the implementation may record a message with dsckpt's error idiom); the
 *   model then releases what it holds and fails with DSCKPT_EIO, the message prefixed
 *   with the module. An engine that keeps its own sticky error may report that instead.
 * release(m): the model no longer reads module m's parameters.
 * grad_buf(m): fp32 gradient buffer of module m. Called exactly once per module per
 *   backward, before the model writes to it; the pointer must stay valid until
 *   grad_ready(m). The model ADDS into it and never zeroes it, so gradients accumulate
 *   over micro-batches (to fp32 rounding: a module's contribution may arrive as several
 *   partial sums, e.g. wte's from the LM head and then from each embedding row). NULL
 *   is a failure, as for acquire.
 * grad_ready(m): module m's contribution for this backward is complete; the model
 *   does not touch the buffer again. Called exactly once per module per backward, in
 *   the order L+1, L, ..., 1, 0.
 *
 * Exact sequence of rt_model_forward_backward (A = acquire, R = release,
 * G = grad_buf, D = grad_ready):
 *
 *   A0 [embedding lookup] R0
 *   for m = 1..L: Am [block m-1 forward] Rm
 *   A(L+1) [ln_f forward]
 *   A0 G0 [logits, loss, LM-head gradient into G0, gradient of ln_f's output] R0
 *   G(L+1) [ln_f backward] R(L+1) D(L+1)
 *   for m = L..1: Am Gm [block m-1 backward] Rm Dm
 *   [embedding gradient into the module-0 buffer from G0] D0
 *
 * At most two modules are acquired at once (L+1 and 0, around the LM head). Module
 * 0's gradient buffer is live for the whole backward: the tied LM head writes it
 * first and the embedding lookup last; the embedding gradient needs no parameters,
 * so module 0 is not acquired again.
 *
 * rt_model_forward (evaluation) makes no gradient calls and holds one module at a time:
 *   A0 R0, A1 R1, ..., AL RL, A(L+1) R(L+1), A0 R0.
 *
 * If a hook fails, the model releases what it holds and returns at once: buffers
 * already obtained through grad_buf may hold partial sums, and grad_ready is not
 * called for the remaining modules, so the engine must discard the step.
 */
typedef struct rt_param_hooks {
    void *ctx;
    const float *(*acquire)(void *ctx, int module);
    void (*release)(void *ctx, int module);
    float *(*grad_buf)(void *ctx, int module);
    void (*grad_ready)(void *ctx, int module);
} rt_param_hooks;

typedef struct rt_model rt_model;

/* Validates cfg (positive sizes, n_embd % n_head == 0, sizes that fit) and allocates
 * the activation workspace for up to max_batch sequences of up to seq_len tokens
 * (seq_len <= n_ctx). Nothing is allocated per step afterwards. EINVAL names the bad
 * field; ENOMEM if the workspace does not fit.
 *
 * The workspace holds every activation the backward needs, about
 *   4 bytes x (N x (16 C x L + V + 8 C) + max_batch x n_head x seq_len^2 x L)
 * for N = max_batch x seq_len positions (the attention matrices are the T^2 term). */
dsckpt_status rt_model_create(const rt_model_cfg *cfg, int max_batch, int seq_len, rt_model **out);
/* The same on a given device table (rt_model_create uses rt_device_cpu()): the
 * workspace is device memory, and every pointer the hooks hand over must be device
 * memory of that table. `dev` must outlive the model. */
struct rt_device;
dsckpt_status rt_model_create_on(const struct rt_device *dev, const rt_model_cfg *cfg, int max_batch, int seq_len,
                                 rt_model **out);
void rt_model_free(rt_model *m); /* NULL is a no-op */
/* The device table the model computes on (its workspace and the hooks' buffers). */
const struct rt_device *rt_model_device(const rt_model *m);
size_t rt_model_workspace_bytes(const rt_model *m);

const rt_model_cfg *rt_model_config(const rt_model *m);
/* The parameter table in flat order; valid until rt_model_free. */
const rt_param *rt_model_params(const rt_model *m, size_t *n);
uint64_t rt_model_numel(const rt_model *m);            /* size of the flat space */
int rt_model_nmodules(const rt_model *m);               /* n_layer + 2 */
/* Flat start and size of a module; 0, 0 for a module out of range. */
void rt_model_module_range(const rt_model *m, int module, uint64_t *start, uint64_t *numel);

/* Fills flat[0 .. numel) with GPT-2's initialisation: weights N(0, 0.02), the two
 * c_proj weights of each block N(0, 0.02/sqrt(2L)), biases 0, LayerNorm weights 1 and
 * biases 0. Each value is a function of (seed, flat index) only (a counter-based
 * generator), so it does not depend on threads, and a rank can initialise any slice
 * by itself. EINVAL on a bad cfg. */
dsckpt_status rt_model_init(const rt_model_cfg *cfg, float *flat, uint64_t seed);
/* The same values for flat elements [start, start + count) only, into out[0 ..
 * count): what a rank draws for its own partition. EINVAL on a bad cfg or a range
 * past the model. */
dsckpt_status rt_model_init_range(const rt_model_cfg *cfg, uint64_t seed, uint64_t start, uint64_t count,
                                  float *out);

/* tokens: B rows of T+1 int32 tokens, row b at tokens + b*(T+1); inputs are
 * row[0..T), targets row[1..T]. Every token must lie in [0, vocab_size).
 * 1 <= B <= max_batch, 1 <= T <= seq_len.
 *
 * forward_backward: *loss (if loss is not NULL) = mean cross-entropy (unscaled); the
 * gradient of loss * grad_scale is ADDED into the grad_buf buffers. A power-of-two
 * grad_scale scales every gradient element exactly (barring overflow/underflow).
 * Hooks are called as documented at rt_param_hooks. Bad arguments fail with EINVAL
 * before any hook is called. */
dsckpt_status rt_model_forward_backward(rt_model *m, const rt_param_hooks *h, const int32_t *tokens, int B,
                                        int T, float grad_scale, float *loss);
/* Evaluation: loss only; grad_buf and grad_ready may be NULL and are not called. */
dsckpt_status rt_model_forward(rt_model *m, const rt_param_hooks *h, const int32_t *tokens, int B, int T,
                               float *loss);

/* Ready-made hooks over one dense flat parameter array and one dense flat gradient
 * array, for tests and single-process training. grads may be NULL for evaluation only
 * (forward_backward then fails cleanly at the first grad_buf). ctx must outlive the
 * hooks; the arrays must hold rt_model_numel(m) elements. */
typedef struct rt_dense_ctx {
    const rt_model *model;
    const float *params;
    float *grads;
} rt_dense_ctx;
void rt_dense_hooks(rt_param_hooks *h, rt_dense_ctx *ctx, const rt_model *m, const float *params, float *grads);

#endif /* DSRT_MODEL_H */
