/*
 * nn.c — the layer kernels of nn.h: OpenMP fast paths and their plain references.
 *
 * Determinism: every parallel loop runs over independent outputs — rows of an
 * activation, column chunks of a weight or bias gradient, (batch, head) pairs of
 * attention — and each output element is accumulated by one thread in an order fixed
 * by the indices alone. No float reductions across threads, no atomics. The references
 * are the same definitions written as plain serial loops, one output at a time.
 */
#include "nn.h"

#include "gemm.h"
#include "kernels_internal.h"

#include <math.h>
#include <string.h>

/* ---- bias ---- */

void ds_bias_rows(int N, int C, float *out, const float *bias, const float *res) {
#pragma omp parallel for schedule(static) if ((int64_t)N * C >= PAR_MIN_WORK)
    for (int r = 0; r < N; r++) {
        float *o = out + (ptrdiff_t)r * C;
        if (res) {
            const float *x = res + (ptrdiff_t)r * C;
#pragma omp simd
            for (int c = 0; c < C; c++) o[c] = x[c] + bias[c];
        } else {
            memcpy(o, bias, (size_t)C * sizeof(float));
        }
    }
}

void ds_bias_rows_ref(int N, int C, float *out, const float *bias, const float *res) {
    for (int r = 0; r < N; r++)
        for (int c = 0; c < C; c++)
            out[(ptrdiff_t)r * C + c] = res ? res[(ptrdiff_t)r * C + c] + bias[c] : bias[c];
}

/* Parallel over column chunks. */
void ds_bias_grad(int N, int C, const float *d, float *db) {
    enum { CB = 64 };
    int nch = (C + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (nch > 1 && (int64_t)N * C >= PAR_MIN_WORK)
    for (int ch = 0; ch < nch; ch++) {
        int c0 = ch * CB, cn = K_MIN(CB, C - c0);
        float acc[CB] = {0};
        for (int r = 0; r < N; r++) {
            const float *dr = d + (ptrdiff_t)r * C + c0;
#pragma omp simd
            for (int j = 0; j < cn; j++) acc[j] += dr[j];
        }
        for (int j = 0; j < cn; j++) db[c0 + j] += acc[j];
    }
}

void ds_bias_grad_ref(int N, int C, const float *d, float *db) {
    for (int c = 0; c < C; c++) {
        float s = 0.0f;
        for (int r = 0; r < N; r++) s += d[(ptrdiff_t)r * C + c];
        db[c] += s;
    }
}

/* ---- LayerNorm ---- */

void ds_layernorm_fwd(int N, int C, const float *x, const float *w, const float *b, float *out, float *mean,
                      float *rstd) {
#pragma omp parallel for schedule(static) if ((int64_t)N * C >= PAR_MIN_WORK)
    for (int r = 0; r < N; r++) {
        const float *xr = x + (ptrdiff_t)r * C;
        float *o = out + (ptrdiff_t)r * C;
        float s = 0.0f;
        for (int c = 0; c < C; c++) s += xr[c];
        float mu = s / (float)C;
        float v = 0.0f;
        for (int c = 0; c < C; c++) {
            float d = xr[c] - mu;
            v += d * d;
        }
        float rs = 1.0f / sqrtf(v / (float)C + DS_LN_EPS);
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] = (xr[c] - mu) * rs * w[c] + b[c];
        mean[r] = mu;
        rstd[r] = rs;
    }
}

void ds_layernorm_fwd_ref(int N, int C, const float *x, const float *w, const float *b, float *out, float *mean,
                          float *rstd) {
    for (int r = 0; r < N; r++) {
        const float *xr = x + (ptrdiff_t)r * C;
        float s = 0.0f, v = 0.0f;
        for (int c = 0; c < C; c++) s += xr[c];
        float mu = s / (float)C;
        for (int c = 0; c < C; c++) v += (xr[c] - mu) * (xr[c] - mu);
        float rs = 1.0f / sqrtf(v / (float)C + DS_LN_EPS);
        for (int c = 0; c < C; c++) out[(ptrdiff_t)r * C + c] = (xr[c] - mu) * rs * w[c] + b[c];
        mean[r] = mu;
        rstd[r] = rs;
    }
}

/* dx rows in parallel; dw, db by column chunks in parallel. */
void ds_layernorm_bwd(int N, int C, const float *dout, const float *x, const float *mean, const float *rstd,
                      const float *w, float *dx, float *dw, float *db) {
#pragma omp parallel for schedule(static) if ((int64_t)N * C >= PAR_MIN_WORK)
    for (int r = 0; r < N; r++) {
        const float *d = dout + (ptrdiff_t)r * C, *xr = x + (ptrdiff_t)r * C;
        float *o = dx + (ptrdiff_t)r * C;
        float mu = mean[r], rs = rstd[r];
        float mean_dn = 0.0f, mean_dn_xh = 0.0f;
        for (int c = 0; c < C; c++) {
            float dn = d[c] * w[c];
            mean_dn += dn;
            mean_dn_xh += dn * ((xr[c] - mu) * rs);
        }
        mean_dn /= (float)C;
        mean_dn_xh /= (float)C;
#pragma omp simd
        for (int c = 0; c < C; c++) {
            float xh = (xr[c] - mu) * rs;
            o[c] += rs * (d[c] * w[c] - mean_dn - xh * mean_dn_xh);
        }
    }
    enum { CB = 32 };
    int nch = (C + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (nch > 1 && (int64_t)N * C >= PAR_MIN_WORK)
    for (int ch = 0; ch < nch; ch++) {
        int c0 = ch * CB, cn = K_MIN(CB, C - c0);
        float aw[CB] = {0}, ab[CB] = {0};
        for (int r = 0; r < N; r++) {
            const float *d = dout + (ptrdiff_t)r * C + c0, *xr = x + (ptrdiff_t)r * C + c0;
            float mu = mean[r], rs = rstd[r];
#pragma omp simd
            for (int j = 0; j < cn; j++) {
                aw[j] += d[j] * ((xr[j] - mu) * rs);
                ab[j] += d[j];
            }
        }
        for (int j = 0; j < cn; j++) {
            dw[c0 + j] += aw[j];
            db[c0 + j] += ab[j];
        }
    }
}

void ds_layernorm_bwd_ref(int N, int C, const float *dout, const float *x, const float *mean, const float *rstd,
                          const float *w, float *dx, float *dw, float *db) {
    for (int r = 0; r < N; r++) {
        const float *d = dout + (ptrdiff_t)r * C, *xr = x + (ptrdiff_t)r * C;
        float s1 = 0.0f, s2 = 0.0f;
        for (int c = 0; c < C; c++) {
            s1 += d[c] * w[c];
            s2 += d[c] * w[c] * ((xr[c] - mean[r]) * rstd[r]);
        }
        s1 /= (float)C;
        s2 /= (float)C;
        for (int c = 0; c < C; c++)
            dx[(ptrdiff_t)r * C + c] += rstd[r] * (d[c] * w[c] - s1 - ((xr[c] - mean[r]) * rstd[r]) * s2);
    }
    for (int c = 0; c < C; c++) {
        float sw = 0.0f, sb = 0.0f;
        for (int r = 0; r < N; r++) {
            float dv = dout[(ptrdiff_t)r * C + c];
            sw += dv * ((x[(ptrdiff_t)r * C + c] - mean[r]) * rstd[r]);
            sb += dv;
        }
        dw[c] += sw;
        db[c] += sb;
    }
}

/* ---- GELU ---- */

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

/* tanh(u) through one exp, as 1 - 2/(1 + exp(2u)): about four times cheaper than
 * tanhf, exact at 0 and +-inf, absolute error ~2e-7 — the error GELU sees, since it
 * uses 1 + tanh. exp is k_expf (kernels_internal.h), so the loops below vectorise
 * whole and the references compute the same bits element by element. */

/* Elements per block of the parallel GELU loops below. */
enum { GELU_BLK = 256 };

/* exp(2u), u = GELU_K * (v + GELU_A * v^3): the argument of the tanh. */
static inline float gelu_exp2u(float v) { return k_expf(2.0f * (GELU_K * (v + GELU_A * v * v * v))); }

/* The element loops that carry an exp, each written once: inlined into a baseline
 * function and, on x86-64, into an AVX2 one (8 lanes instead of SSE2's 4), picked
 * at run time. Only the width differs — the same IEEE operations on each element,
 * no FMA (-ffp-contract=off; target("avx2") does not enable it) — so both give the
 * references' bits. */
#define K_INLINE static inline __attribute__((always_inline))

K_INLINE void gelu_fwd_elems(int len, const float *xb, float *yb) {
#pragma omp simd
    for (int j = 0; j < len; j++) {
        float v = xb[j], th = 1.0f - 2.0f / (1.0f + gelu_exp2u(v));
        yb[j] = 0.5f * v * (1.0f + th);
    }
}

K_INLINE void gelu_bwd_elems(int len, const float *xb, float *db) {
#pragma omp simd
    for (int j = 0; j < len; j++) {
        float v = xb[j], th = 1.0f - 2.0f / (1.0f + gelu_exp2u(v));
        float dudx = GELU_K * (1.0f + 3.0f * GELU_A * v * v);
        db[j] *= 0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * dudx;
    }
}

/* z[i] = exp(z[i] - mx): the softmaxes' exp pass. */
K_INLINE void exp_shifted_elems(int n, float *z, float mx) {
#pragma omp simd
    for (int i = 0; i < n; i++) z[i] = k_expf(z[i] - mx);
}

#ifdef DSCKPT_X86_SIMD
#define K_AVX2 __attribute__((target("avx2")))
K_AVX2 static void gelu_fwd_avx2(int len, const float *xb, float *yb) { gelu_fwd_elems(len, xb, yb); }
K_AVX2 static void gelu_bwd_avx2(int len, const float *xb, float *db) { gelu_bwd_elems(len, xb, db); }
K_AVX2 static void exp_shifted_avx2(int n, float *z, float mx) { exp_shifted_elems(n, z, mx); }
#define K_PICK(avx2_call, plain_call)                                                                                  \
    do {                                                                                                               \
        if (__builtin_cpu_supports("avx2")) avx2_call;                                                                 \
        else plain_call;                                                                                               \
    } while (0)
#else
#define K_PICK(avx2_call, plain_call) plain_call
#endif

static void exp_shifted(int n, float *z, float mx) {
    K_PICK(exp_shifted_avx2(n, z, mx), exp_shifted_elems(n, z, mx));
}

void ds_gelu_fwd(int64_t n, const float *x, float *y) {
    int64_t nblk = (n + GELU_BLK - 1) / GELU_BLK;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN_WORK / 4)
    for (int64_t blk = 0; blk < nblk; blk++) {
        int64_t i0 = blk * GELU_BLK;
        int len = (int)K_MIN((int64_t)GELU_BLK, n - i0);
        K_PICK(gelu_fwd_avx2(len, x + i0, y + i0), gelu_fwd_elems(len, x + i0, y + i0));
    }
}

void ds_gelu_fwd_ref(int64_t n, const float *x, float *y) {
    for (int64_t i = 0; i < n; i++) {
        float u = GELU_K * (x[i] + GELU_A * x[i] * x[i] * x[i]);
        float th = 1.0f - 2.0f / (1.0f + k_expf(2.0f * u));
        y[i] = 0.5f * x[i] * (1.0f + th);
    }
}

void ds_gelu_bwd(int64_t n, const float *x, float *d) {
    int64_t nblk = (n + GELU_BLK - 1) / GELU_BLK;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN_WORK / 4)
    for (int64_t blk = 0; blk < nblk; blk++) {
        int64_t i0 = blk * GELU_BLK;
        int len = (int)K_MIN((int64_t)GELU_BLK, n - i0);
        K_PICK(gelu_bwd_avx2(len, x + i0, d + i0), gelu_bwd_elems(len, x + i0, d + i0));
    }
}

void ds_gelu_bwd_ref(int64_t n, const float *x, float *d) {
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        float u = GELU_K * (v + GELU_A * v * v * v);
        float th = 1.0f - 2.0f / (1.0f + k_expf(2.0f * u));
        d[i] = d[i] * (0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * (GELU_K * (1.0f + 3.0f * GELU_A * v * v)));
    }
}

/* ---- attention ---- */

/* Dot product with eight running sums combined in a fixed order, so it vectorises
 * and still gives the same bits everywhere. */
static inline float dot8(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
#pragma omp simd
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    }
    float tail = 0.0f;
    for (; i < n; i++) tail += a[i] * b[i];
    return (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))) + tail;
}

/* The same definition, lane by lane. */
static float dot8_ref(const float *a, const float *b, int n) {
    int nfull = n / 8 * 8;
    float lane[8];
    for (int j = 0; j < 8; j++) {
        lane[j] = 0.0f;
        for (int i = j; i < nfull; i += 8) lane[j] += a[i] * b[i];
    }
    float tail = 0.0f;
    for (int i = nfull; i < n; i++) tail += a[i] * b[i];
    return (((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]))) + tail;
}

/* Softmax of row t of the scaled scores over t2 <= t, in place, from the unscaled
 * dot products in arow[0..t]: scale, max, exp, sum, then each times 1/sum. The
 * vector and matrix-product attention kernels share it, so both compute the
 * same bits. */
static void causal_softmax_row(float *arow, int t, float scale) {
    float mx = -INFINITY;
    for (int t2 = 0; t2 <= t; t2++) {
        float s = arow[t2] * scale;
        arow[t2] = s;
        if (s > mx) mx = s;
    }
    exp_shifted(t + 1, arow, mx);
    float sum = 0.0f;
    for (int t2 = 0; t2 <= t; t2++) sum += arow[t2];
    float inv = 1.0f / sum;
    for (int t2 = 0; t2 <= t; t2++) arow[t2] = arow[t2] * inv;
}

void ds_attention_fwd(int B, int T, int C, int NH, const float *qkv, float *att, float *y) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    ptrdiff_t C3 = 3 * (ptrdiff_t)C;
#pragma omp parallel for schedule(static) if ((int64_t)B * T * T * C >= 2 * PAR_MIN_WORK)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *base = qkv + (ptrdiff_t)b * T * C3 + (ptrdiff_t)h * hs;
        for (int t = 0; t < T; t++) {
            const float *q = base + t * C3;
            float *arow = att + ((ptrdiff_t)bh * T + t) * T;
            for (int t2 = 0; t2 <= t; t2++) arow[t2] = dot8(q, base + t2 * C3 + C, hs);
            causal_softmax_row(arow, t, scale);
            float *yr = y + ((ptrdiff_t)b * T + t) * C + (ptrdiff_t)h * hs;
            memset(yr, 0, (size_t)hs * sizeof(float));
            for (int t2 = 0; t2 <= t; t2++) {
                float p = arow[t2];
                const float *v = base + t2 * C3 + 2 * C;
#pragma omp simd
                for (int i = 0; i < hs; i++) yr[i] += p * v[i];
            }
        }
    }
}

void ds_attention_fwd_ref(int B, int T, int C, int NH, const float *qkv, float *att, float *y) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    ptrdiff_t C3 = 3 * (ptrdiff_t)C;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float *q = qkv + ((ptrdiff_t)b * T + t) * C3 + (ptrdiff_t)h * hs;
                float *arow = att + (((ptrdiff_t)b * NH + h) * T + t) * T;
                float mx = -INFINITY, sum = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *k = qkv + ((ptrdiff_t)b * T + t2) * C3 + C + (ptrdiff_t)h * hs;
                    arow[t2] = dot8_ref(q, k, hs) * scale;
                    mx = arow[t2] > mx ? arow[t2] : mx;
                }
                for (int t2 = 0; t2 <= t; t2++) {
                    arow[t2] = k_expf(arow[t2] - mx);
                    sum += arow[t2];
                }
                float inv = 1.0f / sum;
                for (int t2 = 0; t2 <= t; t2++) arow[t2] = arow[t2] * inv;
                float *yr = y + ((ptrdiff_t)b * T + t) * C + (ptrdiff_t)h * hs;
                for (int i = 0; i < hs; i++) {
                    float s = 0.0f;
                    for (int t2 = 0; t2 <= t; t2++)
                        s += arow[t2] * qkv[((ptrdiff_t)b * T + t2) * C3 + 2 * C + (ptrdiff_t)h * hs + i];
                    yr[i] = s;
                }
            }
}

void ds_attention_bwd(int B, int T, int C, int NH, const float *qkv, const float *att, const float *dy,
                      float *dqkv, float *scratch) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    ptrdiff_t C3 = 3 * (ptrdiff_t)C;
#pragma omp parallel for schedule(static) if ((int64_t)B * T * T * C >= 2 * PAR_MIN_WORK)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        ptrdiff_t off = (ptrdiff_t)b * T * C3 + (ptrdiff_t)h * hs;
        const float *base = qkv + off;
        float *dbase = dqkv + off;
        float *da = scratch + (ptrdiff_t)bh * T;
        for (int t = 0; t < T; t++) {
            float *dq = dbase + t * C3;
            memset(dq, 0, (size_t)hs * sizeof(float));
            memset(dq + C, 0, (size_t)hs * sizeof(float));
            memset(dq + 2 * C, 0, (size_t)hs * sizeof(float));
        }
        for (int t = 0; t < T; t++) {
            const float *arow = att + ((ptrdiff_t)bh * T + t) * T;
            const float *dyr = dy + ((ptrdiff_t)b * T + t) * C + (ptrdiff_t)h * hs;
            const float *q = base + t * C3;
            float *dq = dbase + t * C3;
            float dot = 0.0f; /* sum over t2 of p * dp */
            for (int t2 = 0; t2 <= t; t2++) {
                const float *v = base + t2 * C3 + 2 * C;
                float *dv = dbase + t2 * C3 + 2 * C;
                float s = dot8(dyr, v, hs);
                da[t2] = s;
                dot += arow[t2] * s;
                float p = arow[t2];
#pragma omp simd
                for (int i = 0; i < hs; i++) dv[i] += p * dyr[i];
            }
            for (int t2 = 0; t2 <= t; t2++) {
                float ds = arow[t2] * (da[t2] - dot) * scale;
                const float *k = base + t2 * C3 + C;
                float *dk = dbase + t2 * C3 + C;
#pragma omp simd
                for (int i = 0; i < hs; i++) {
                    dq[i] += ds * k[i];
                    dk[i] += ds * q[i];
                }
            }
        }
    }
}

/* Per (b, h): for t = 0.., first every dv[t2] (t2 <= t) gets p*dy[t], then dq[t] and
 * dk[t2] get ds*k[t2] and ds*q[t] — the accumulation order of the definition. */
void ds_attention_bwd_ref(int B, int T, int C, int NH, const float *qkv, const float *att, const float *dy,
                          float *dqkv, float *scratch) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    ptrdiff_t C3 = 3 * (ptrdiff_t)C;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int part = 0; part < 3; part++)
                for (int i = 0; i < hs * NH; i++) dqkv[((ptrdiff_t)b * T + t) * C3 + part * C + i] = 0.0f;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            float *dp = scratch + ((ptrdiff_t)b * NH + h) * T;
#define ROW(t, part) (((ptrdiff_t)b * T + (t)) * C3 + (part) * (ptrdiff_t)C + (ptrdiff_t)h * hs)
            for (int t = 0; t < T; t++) {
                const float *p = att + (((ptrdiff_t)b * NH + h) * T + t) * T;
                const float *dyr = dy + ((ptrdiff_t)b * T + t) * C + (ptrdiff_t)h * hs;
                float pdp = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    dp[t2] = dot8_ref(dyr, qkv + ROW(t2, 2), hs);
                    pdp += p[t2] * dp[t2];
                    for (int i = 0; i < hs; i++) dqkv[ROW(t2, 2) + i] += p[t2] * dyr[i];
                }
                for (int t2 = 0; t2 <= t; t2++) {
                    float ds = p[t2] * (dp[t2] - pdp) * scale;
                    for (int i = 0; i < hs; i++) {
                        dqkv[ROW(t, 0) + i] += ds * qkv[ROW(t2, 1) + i];
                        dqkv[ROW(t2, 1) + i] += ds * qkv[ROW(t, 0) + i];
                    }
                }
            }
#undef ROW
        }
}

/* ---- attention as matrix products ---- */

/* Per (batch, head) pair: S = Q·Kᵀ into att (ds_gemm_bt), softmax by rows, Y = P·V
 * (ds_gemm) — the causal half of S and of P·V is computed and thrown away (zeros),
 * which costs less than the vector loops of ds_attention_fwd once the products are
 * BLAS. Pairs run in parallel; each pair's products run on its thread. */
void ds_attention_fwd_mm(int B, int T, int C, int NH, const float *qkv, float *att, float *y) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    ptrdiff_t C3 = 3 * (ptrdiff_t)C;
#pragma omp parallel for schedule(static) if (B * NH > 1 && (int64_t)B * T * T * C >= 2 * PAR_MIN_WORK)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *base = qkv + (ptrdiff_t)b * T * C3 + (ptrdiff_t)h * hs;
        float *p = att + (ptrdiff_t)bh * T * T;
        ds_gemm_bt(T, T, hs, base, C3, base + C, C3, p, T, 0, NULL);
        for (int t = 0; t < T; t++) { /* the row's softmax, zeros after t (P·V reads them) */
            float *prow = p + (ptrdiff_t)t * T;
            causal_softmax_row(prow, t, scale);
            if (t + 1 < T) memset(prow + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
        }
        ds_gemm(T, hs, T, p, T, 1, base + 2 * C, C3, y + (ptrdiff_t)b * T * C + (ptrdiff_t)h * hs, C, 0);
    }
}

/* Per pair: dP = dY·Vᵀ (scratch), dV = Pᵀ·dY, dS = P∘(dP - rowsum(P∘dP))·scale in
 * place of dP, dQ = dS·K, dK = dSᵀ·Q. */
void ds_attention_bwd_mm(int B, int T, int C, int NH, const float *qkv, const float *att, const float *dy,
                         float *dqkv, float *scratch) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    ptrdiff_t C3 = 3 * (ptrdiff_t)C;
#pragma omp parallel for schedule(static) if (B * NH > 1 && (int64_t)B * T * T * C >= 2 * PAR_MIN_WORK)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        ptrdiff_t off = (ptrdiff_t)b * T * C3 + (ptrdiff_t)h * hs;
        const float *q = qkv + off, *k = q + C, *v = q + 2 * C;
        float *dq = dqkv + off, *dk = dq + C, *dv = dq + 2 * C;
        const float *p = att + (ptrdiff_t)bh * T * T, *dyb = dy + (ptrdiff_t)b * T * C + (ptrdiff_t)h * hs;
        float *dp = scratch + (ptrdiff_t)bh * T * T;
        ds_gemm_bt(T, T, hs, dyb, C, v, C3, dp, T, 0, NULL);
        ds_gemm(T, hs, T, p, 1, T, dyb, C, dv, C3, 0);
        for (int t = 0; t < T; t++) {
            const float *prow = p + (ptrdiff_t)t * T;
            float *drow = dp + (ptrdiff_t)t * T;
            float dot = 0.0f;
            for (int t2 = 0; t2 <= t; t2++) dot += prow[t2] * drow[t2];
            for (int t2 = 0; t2 <= t; t2++) drow[t2] = prow[t2] * (drow[t2] - dot) * scale;
            if (t + 1 < T) memset(drow + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
        }
        ds_gemm(T, hs, T, dp, T, 1, k, C3, dq, C3, 0);
        ds_gemm(T, hs, T, dp, 1, T, q, C3, dk, C3, 0);
    }
}

/* ---- embedding ---- */

void ds_embed_fwd(int B, int T, int C, const int32_t *tokens, const float *wte, const float *wpe, float *out) {
#pragma omp parallel for schedule(static) if ((int64_t)B * T * C >= PAR_MIN_WORK)
    for (int r = 0; r < B * T; r++) {
        int b = r / T, t = r % T;
        const float *e = wte + (ptrdiff_t)tokens[(ptrdiff_t)b * (T + 1) + t] * C, *pe = wpe + (ptrdiff_t)t * C;
        float *o = out + (ptrdiff_t)r * C;
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] = e[c] + pe[c];
    }
}

void ds_embed_fwd_ref(int B, int T, int C, const int32_t *tokens, const float *wte, const float *wpe, float *out) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++)
                out[((ptrdiff_t)b * T + t) * C + c] =
                    wte[(ptrdiff_t)tokens[(ptrdiff_t)b * (T + 1) + t] * C + c] + wpe[(ptrdiff_t)t * C + c];
}

/* Parallel over column chunks, positions in order. */
void ds_embed_bwd(int B, int T, int C, const int32_t *tokens, const float *dout, float *dwte, float *dwpe) {
    enum { CB = 64 };
    int nch = (C + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (nch > 1 && (int64_t)B * T * C >= PAR_MIN_WORK)
    for (int ch = 0; ch < nch; ch++) {
        int c0 = ch * CB, cn = K_MIN(CB, C - c0);
        for (int r = 0; r < B * T; r++) {
            int b = r / T, t = r % T;
            const float *d = dout + (ptrdiff_t)r * C + c0;
            float *ge = dwte + (ptrdiff_t)tokens[(ptrdiff_t)b * (T + 1) + t] * C + c0;
            float *gp = dwpe + (ptrdiff_t)t * C + c0;
            for (int j = 0; j < cn; j++) {
                ge[j] += d[j];
                gp[j] += d[j];
            }
        }
    }
}

void ds_embed_bwd_ref(int B, int T, int C, const int32_t *tokens, const float *dout, float *dwte, float *dwpe) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int32_t tok = tokens[(ptrdiff_t)b * (T + 1) + t];
            for (int c = 0; c < C; c++) {
                dwte[(ptrdiff_t)tok * C + c] += dout[((ptrdiff_t)b * T + t) * C + c];
                dwpe[(ptrdiff_t)t * C + c] += dout[((ptrdiff_t)b * T + t) * C + c];
            }
        }
}

/* ---- softmax cross-entropy ---- */

void ds_crossent(int B, int T, int V, const int32_t *tokens, float *probs, float dscale, float *row_loss) {
#pragma omp parallel for schedule(static) if ((int64_t)B * T * V >= PAR_MIN_WORK / 4)
    for (int r = 0; r < B * T; r++) {
        int b = r / T, t = r % T;
        int target = tokens[(ptrdiff_t)b * (T + 1) + t + 1];
        float *row = probs + (ptrdiff_t)r * V;
        float mx = -INFINITY;
        for (int v = 0; v < V; v++) mx = row[v] > mx ? row[v] : mx;
        float zt = row[target] - mx;
        exp_shifted(V, row, mx);
        float sum = 0.0f;
        for (int v = 0; v < V; v++) sum += row[v];
        row_loss[r] = logf(sum) - zt;
        if (dscale != 0.0f) {
            float inv = 1.0f / sum;
#pragma omp simd
            for (int v = 0; v < V; v++) row[v] = row[v] * inv * dscale;
            row[target] -= dscale;
        }
    }
}

void ds_crossent_ref(int B, int T, int V, const int32_t *tokens, float *probs, float dscale, float *row_loss) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *z = probs + ((ptrdiff_t)b * T + t) * V;
            int target = tokens[(ptrdiff_t)b * (T + 1) + t + 1];
            float mx = -INFINITY, sum = 0.0f;
            for (int v = 0; v < V; v++)
                if (z[v] > mx) mx = z[v];
            float zt = z[target] - mx;
            for (int v = 0; v < V; v++) {
                z[v] = k_expf(z[v] - mx);
                sum += z[v];
            }
            row_loss[(ptrdiff_t)b * T + t] = logf(sum) - zt;
            if (dscale == 0.0f) continue;
            for (int v = 0; v < V; v++) z[v] = z[v] * (1.0f / sum) * dscale;
            z[target] = z[target] - dscale;
        }
}
