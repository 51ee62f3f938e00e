/*
 * nn.h — the layer kernels of the GPT-2 training step on the CPU (OpenMP): bias
 * broadcast and bias gradient, LayerNorm, GELU, causal self-attention, token +
 * position embedding, softmax cross-entropy, forward and backward.
 *
 * Every kernel has a plain serial reference (`*_ref`) beside the OpenMP version; the
 * two give the same bits at any thread count: the parallel loops run over independent
 * outputs (rows, column chunks, (batch, head) pairs) and each output is accumulated by
 * one thread in an order fixed by the indices alone. All arithmetic is float, round
 * to nearest, no fused multiply-add (the kernels are compiled with -ffp-contract=off).
 *
 * Shapes: N rows of C columns, row-major; positions are rows b*T + t. Token arrays
 * are B rows of T+1 int32 (row b at tokens + b*(T+1)): inputs row[0..T), targets
 * row[1..T]; every token must lie in [0, V) — the kernels do not check.
 */
#ifndef DSCKPT_KERNELS_NN_H
#define DSCKPT_KERNELS_NN_H

#include <stddef.h>
#include <stdint.h>

#define DS_LN_EPS 1e-5f

/* out[r, :] = bias (+ res[r, :] when res is not NULL), for each of N rows. */
void ds_bias_rows(int N, int C, float *out, const float *bias, const float *res);
void ds_bias_rows_ref(int N, int C, float *out, const float *bias, const float *res);

/* db[j] += sum over the N rows of d[r, j] (r in increasing order, from 0.0f). */
void ds_bias_grad(int N, int C, const float *d, float *db);
void ds_bias_grad_ref(int N, int C, const float *d, float *db);

/* LayerNorm over rows: out = (x - mean) * rstd * w + b, eps DS_LN_EPS; mean[r] and
 * rstd[r] are saved for the backward. */
void ds_layernorm_fwd(int N, int C, const float *x, const float *w, const float *b, float *out, float *mean,
                      float *rstd);
void ds_layernorm_fwd_ref(int N, int C, const float *x, const float *w, const float *b, float *out, float *mean,
                          float *rstd);
/* dx += LayerNorm backward of dout; dw, db += the parameter gradients. x, mean, rstd
 * are the forward's input and statistics. */
void ds_layernorm_bwd(int N, int C, const float *dout, const float *x, const float *mean, const float *rstd,
                      const float *w, float *dx, float *dw, float *db);
void ds_layernorm_bwd_ref(int N, int C, const float *dout, const float *x, const float *mean, const float *rstd,
                          const float *w, float *dx, float *dw, float *db);

/* GELU, tanh approximation ("gelu_new"), tanh computed as 1 - 2/(1 + exp(2u)). */
void ds_gelu_fwd(int64_t n, const float *x, float *y);
void ds_gelu_fwd_ref(int64_t n, const float *x, float *y);
/* d[i] *= gelu'(x[i]). */
void ds_gelu_bwd(int64_t n, const float *x, float *d);
void ds_gelu_bwd_ref(int64_t n, const float *x, float *d);

/* Causal self-attention, NH heads of C/NH: qkv [B*T, 3C] (q | k | v) -> att
 * [B, NH, T, T] (softmax rows; only t2 <= t written) and y [B*T, C]. Scores are
 * dot products in eight running sums combined pairwise ((0+4)+(1+5))+((2+6)+(3+7)),
 * then the tail, scaled by 1/sqrt(C/NH). */
void ds_attention_fwd(int B, int T, int C, int NH, const float *qkv, float *att, float *y);
void ds_attention_fwd_ref(int B, int T, int C, int NH, const float *qkv, float *att, float *y);
/* dqkv = attention backward of dy (overwritten). scratch: B*NH*T floats. */
void ds_attention_bwd(int B, int T, int C, int NH, const float *qkv, const float *att, const float *dy,
                      float *dqkv, float *scratch);
void ds_attention_bwd_ref(int B, int T, int C, int NH, const float *qkv, const float *att, const float *dy,
                          float *dqkv, float *scratch);

/* The same attention as per-(batch, head) matrix products (ds_gemm, ds_gemm_bt):
 * faster where the GEMM is BLAS, but the scores and the weighted sums follow the
 * GEMM's summation order, not dot8's and not the loops' — the results agree with
 * the references to rounding, not bit for bit (and with BLAS depend on its
 * blocking). att gets the full T x T block per pair, zeros above the diagonal;
 * the backward expects att so (as ds_attention_fwd_mm writes it) and a scratch of
 * B*NH*T*T floats. The CPU device table uses these when the GEMM is BLAS. */
void ds_attention_fwd_mm(int B, int T, int C, int NH, const float *qkv, float *att, float *y);
void ds_attention_bwd_mm(int B, int T, int C, int NH, const float *qkv, const float *att, const float *dy,
                         float *dqkv, float *scratch);

/* out[b*T + t, :] = wte[token(b, t), :] + wpe[t, :]. */
void ds_embed_fwd(int B, int T, int C, const int32_t *tokens, const float *wte, const float *wpe, float *out);
void ds_embed_fwd_ref(int B, int T, int C, const int32_t *tokens, const float *wte, const float *wpe, float *out);
/* dwte[token(b, t), :] += dout[b*T + t, :] and dwpe[t, :] += the same, positions in
 * increasing order (positions sharing a token or t add to the same row). */
void ds_embed_bwd(int B, int T, int C, const int32_t *tokens, const float *dout, float *dwte, float *dwpe);
void ds_embed_bwd_ref(int B, int T, int C, const int32_t *tokens, const float *dout, float *dwte, float *dwpe);

/* Softmax cross-entropy per position: probs [B*T, V] holds logits on entry;
 * row_loss[r] = log(sum exp(z - max)) - (z_target - max). With dscale != 0, probs
 * becomes dlogits = (softmax - onehot(target)) * dscale; with dscale == 0 it is left
 * holding exp(z - max). Targets are tokens row[1..T]. The mean loss is the caller's
 * (a double sum of row_loss in row order). */
void ds_crossent(int B, int T, int V, const int32_t *tokens, float *probs, float dscale, float *row_loss);
void ds_crossent_ref(int B, int T, int V, const int32_t *tokens, float *probs, float dscale, float *row_loss);

#endif /* DSCKPT_KERNELS_NN_H */
