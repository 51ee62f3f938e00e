/*
 * layers.cu — the CUDA twins of the model's layer kernels: LayerNorm forward and
 * backward, GELU (tanh form) forward and backward, bias rows and bias gradients,
 * the embedding forward and backward, and softmax + cross-entropy.
 *
 * Determinism: no float atomics. Row reductions (LayerNorm statistics, softmax sums)
 * use a fixed warp/block tree; column reductions (parameter gradients) are cut into
 * fixed chunks of rows, each chunk summed in row order, then the chunk sums added in
 * chunk order. The embedding backward adds each output element's contributions in
 * position order, exactly as the CPU does, so it gives the CPU's bits. Elementwise
 * arithmetic uses explicitly rounded intrinsics in the CPU's order, so the only
 * differences from the CPU come from the order of the parallel sums.
 */
#include "common.cuh"

#include <stdlib.h>
#include <string.h>

#define LN_EPS 1e-5f
#define GELU_K 0.7978845608028654f
#define GELU_A 0.044715f
#define COL_CHUNK 64 /* rows per chunk of a column reduction */

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Block-wide sum/max in a fixed tree; every thread gets the result. `sh` holds 32
 * floats. */
__device__ float block_sum(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    v = warp_sum(v);
    return v;
}

__device__ float block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    v = warp_max(v);
    return v;
}

/* ---- LayerNorm ---- */

/* One warp per row. */
__global__ void k_ln_fwd(int N, int C, const float *__restrict__ x, const float *__restrict__ w,
                         const float *__restrict__ b, float *__restrict__ out, float *__restrict__ mean,
                         float *__restrict__ rstd) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *xr = x + (size_t)row * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s = __fadd_rn(s, xr[c]);
    float mu = __fdiv_rn(warp_sum(s), (float)C);
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float d = __fsub_rn(xr[c], mu);
        v = __fadd_rn(v, __fmul_rn(d, d));
    }
    v = warp_sum(v);
    float rs = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(v, (float)C), LN_EPS)));
    float *o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(xr[c], mu), rs), w[c]), b[c]);
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = rs;
    }
}

extern "C" dsc_status dsc_layernorm_fwd(dsc_ctx *c, int N, int C, const float *x, const float *w,
                                           const float *b, float *out, float *mean, float *rstd) {
    DSC_CHECK_CTX(c);
    if (N < 0 || C < 1) return dsc_err(DSC_EINVAL, "dsc_layernorm_fwd: bad shape N=%d C=%d", N, C);
    if (N == 0) return DSC_OK;
    k_ln_fwd<<<(N + 7) / 8, 256, 0, c->stream>>>(N, C, x, w, b, out, mean, rstd);
    DSC_LAUNCHED("dsc_layernorm_fwd");
    return DSC_OK;
}

/* dx: one warp per row. */
__global__ void k_ln_bwd_dx(int N, int C, const float *__restrict__ dout, const float *__restrict__ x,
                            const float *__restrict__ mean, const float *__restrict__ rstd,
                            const float *__restrict__ w, float *__restrict__ dx) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *d = dout + (size_t)row * C, *xr = x + (size_t)row * C;
    float *o = dx + (size_t)row * C;
    float mu = mean[row], rs = rstd[row];
    float m1 = 0.0f, m2 = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float dn = __fmul_rn(d[c], w[c]);
        m1 = __fadd_rn(m1, dn);
        m2 = __fadd_rn(m2, __fmul_rn(dn, __fmul_rn(__fsub_rn(xr[c], mu), rs)));
    }
    m1 = __fdiv_rn(warp_sum(m1), (float)C);
    m2 = __fdiv_rn(warp_sum(m2), (float)C);
    for (int c = lane; c < C; c += 32) {
        float xh = __fmul_rn(__fsub_rn(xr[c], mu), rs);
        float t = __fsub_rn(__fsub_rn(__fmul_rn(d[c], w[c]), m1), __fmul_rn(xh, m2));
        o[c] = __fadd_rn(o[c], __fmul_rn(rs, t));
    }
}

/* Column partial sums over chunks of COL_CHUNK rows: pw[chunk][col] = sum of
 * d * xhat, pb[chunk][col] = sum of d (rows in order). Threads = columns. */
__global__ void k_ln_bwd_partial(int N, int C, const float *__restrict__ dout, const float *__restrict__ x,
                                 const float *__restrict__ mean, const float *__restrict__ rstd,
                                 float *__restrict__ pw, float *__restrict__ pb) {
    int col = blockIdx.x * blockDim.x + threadIdx.x, chunk = blockIdx.y;
    if (col >= C) return;
    int r0 = chunk * COL_CHUNK, r1 = min(N, r0 + COL_CHUNK);
    float aw = 0.0f, ab = 0.0f;
    for (int r = r0; r < r1; r++) {
        float d = dout[(size_t)r * C + col];
        aw = __fadd_rn(aw, __fmul_rn(d, __fmul_rn(__fsub_rn(x[(size_t)r * C + col], mean[r]), rstd[r])));
        ab = __fadd_rn(ab, d);
    }
    pw[(size_t)chunk * C + col] = aw;
    if (pb) pb[(size_t)chunk * C + col] = ab;
}

/* dst[col] += sum over chunks (in chunk order) of part[chunk][col]. */
__global__ void k_col_finish(int nchunk, int C, const float *__restrict__ part, float *__restrict__ dst) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= C) return;
    float a = 0.0f;
    for (int k = 0; k < nchunk; k++) a = __fadd_rn(a, part[(size_t)k * C + col]);
    dst[col] = __fadd_rn(dst[col], a);
}

/* Bias gradient partials: part[chunk][col] = sum of d over the chunk's rows. */
__global__ void k_colsum_partial(int N, int C, const float *__restrict__ d, float *__restrict__ part) {
    int col = blockIdx.x * blockDim.x + threadIdx.x, chunk = blockIdx.y;
    if (col >= C) return;
    int r0 = chunk * COL_CHUNK, r1 = min(N, r0 + COL_CHUNK);
    float a = 0.0f;
    for (int r = r0; r < r1; r++) a = __fadd_rn(a, d[(size_t)r * C + col]);
    part[(size_t)chunk * C + col] = a;
}

extern "C" dsc_status dsc_layernorm_bwd(dsc_ctx *c, int N, int C, const float *dout, const float *x,
                                           const float *mean, const float *rstd, const float *w, float *dx,
                                           float *dw, float *db) {
    DSC_CHECK_CTX(c);
    if (N < 0 || C < 1) return dsc_err(DSC_EINVAL, "dsc_layernorm_bwd: bad shape N=%d C=%d", N, C);
    if (N == 0) return DSC_OK;
    int nchunk = (N + COL_CHUNK - 1) / COL_CHUNK;
    if (nchunk > 65535) return dsc_err(DSC_EINVAL, "dsc_layernorm_bwd: N=%d rows is too many", N);
    void *scr = NULL;
    dsc_status st = dsc_scratch(c, (size_t)2 * nchunk * C * sizeof(float), &scr);
    if (st) return st;
    float *pw = (float *)scr, *pb = pw + (size_t)nchunk * C;
    k_ln_bwd_dx<<<(N + 7) / 8, 256, 0, c->stream>>>(N, C, dout, x, mean, rstd, w, dx);
    DSC_LAUNCHED("dsc_layernorm_bwd (dx)");
    k_ln_bwd_partial<<<dim3((C + 127) / 128, nchunk), 128, 0, c->stream>>>(N, C, dout, x, mean, rstd, pw, pb);
    DSC_LAUNCHED("dsc_layernorm_bwd (partial)");
    k_col_finish<<<(C + 127) / 128, 128, 0, c->stream>>>(nchunk, C, pw, dw);
    DSC_LAUNCHED("dsc_layernorm_bwd (dw)");
    k_col_finish<<<(C + 127) / 128, 128, 0, c->stream>>>(nchunk, C, pb, db);
    DSC_LAUNCHED("dsc_layernorm_bwd (db)");
    return DSC_OK;
}

extern "C" dsc_status dsc_bias_grad(dsc_ctx *c, int N, int C, const float *d, float *db) {
    DSC_CHECK_CTX(c);
    if (N < 0 || C < 1) return dsc_err(DSC_EINVAL, "dsc_bias_grad: bad shape N=%d C=%d", N, C);
    if (N == 0) return DSC_OK;
    int nchunk = (N + COL_CHUNK - 1) / COL_CHUNK;
    if (nchunk > 65535) return dsc_err(DSC_EINVAL, "dsc_bias_grad: N=%d rows is too many", N);
    void *scr = NULL;
    dsc_status st = dsc_scratch(c, (size_t)nchunk * C * sizeof(float), &scr);
    if (st) return st;
    k_colsum_partial<<<dim3((C + 127) / 128, nchunk), 128, 0, c->stream>>>(N, C, d, (float *)scr);
    DSC_LAUNCHED("dsc_bias_grad (partial)");
    k_col_finish<<<(C + 127) / 128, 128, 0, c->stream>>>(nchunk, C, (const float *)scr, db);
    DSC_LAUNCHED("dsc_bias_grad");
    return DSC_OK;
}

__global__ void k_rows_init(int N, int C, float *__restrict__ out, const float *__restrict__ bias,
                            const float *__restrict__ res) {
    size_t n = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int col = (int)(i % C);
        out[i] = res ? __fadd_rn(res[i], bias[col]) : bias[col];
    }
}

extern "C" dsc_status dsc_rows_init(dsc_ctx *c, int N, int C, float *out, const float *bias, const float *res) {
    DSC_CHECK_CTX(c);
    if (N < 0 || C < 1) return dsc_err(DSC_EINVAL, "dsc_rows_init: bad shape N=%d C=%d", N, C);
    if (N == 0) return DSC_OK;
    k_rows_init<<<dsc_grid((size_t)N * C, 256), 256, 0, c->stream>>>(N, C, out, bias, res);
    DSC_LAUNCHED("dsc_rows_init");
    return DSC_OK;
}

/* ---- GELU ("gelu_new"), tanh through one expf as on the CPU ---- */

__device__ __forceinline__ float tanh_via_exp(float u) {
    return __fsub_rn(1.0f, __fdiv_rn(2.0f, __fadd_rn(1.0f, expf(__fmul_rn(2.0f, u)))));
}

__global__ void k_gelu_fwd(int64_t n, const float *__restrict__ x, float *__restrict__ y) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i];
        float cube = __fmul_rn(__fmul_rn(__fmul_rn(GELU_A, v), v), v);
        float th = tanh_via_exp(__fmul_rn(GELU_K, __fadd_rn(v, cube)));
        y[i] = __fmul_rn(__fmul_rn(0.5f, v), __fadd_rn(1.0f, th));
    }
}

__global__ void k_gelu_bwd(int64_t n, const float *__restrict__ x, float *__restrict__ d) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i];
        float cube = __fmul_rn(__fmul_rn(__fmul_rn(GELU_A, v), v), v);
        float th = tanh_via_exp(__fmul_rn(GELU_K, __fadd_rn(v, cube)));
        float dudx = __fmul_rn(GELU_K, __fadd_rn(1.0f, __fmul_rn(__fmul_rn(__fmul_rn(3.0f, GELU_A), v), v)));
        float a = __fmul_rn(0.5f, __fadd_rn(1.0f, th));
        float bb = __fmul_rn(__fmul_rn(__fmul_rn(0.5f, v), __fsub_rn(1.0f, __fmul_rn(th, th))), dudx);
        d[i] = __fmul_rn(d[i], __fadd_rn(a, bb));
    }
}

extern "C" dsc_status dsc_gelu_fwd(dsc_ctx *c, int64_t n, const float *x, float *y) {
    DSC_CHECK_CTX(c);
    if (n < 0) return dsc_err(DSC_EINVAL, "dsc_gelu_fwd: n=%lld", (long long)n);
    if (n == 0) return DSC_OK;
    k_gelu_fwd<<<dsc_grid((size_t)n, 256), 256, 0, c->stream>>>(n, x, y);
    DSC_LAUNCHED("dsc_gelu_fwd");
    return DSC_OK;
}

extern "C" dsc_status dsc_gelu_bwd(dsc_ctx *c, int64_t n, const float *x, float *d) {
    DSC_CHECK_CTX(c);
    if (n < 0) return dsc_err(DSC_EINVAL, "dsc_gelu_bwd: n=%lld", (long long)n);
    if (n == 0) return DSC_OK;
    k_gelu_bwd<<<dsc_grid((size_t)n, 256), 256, 0, c->stream>>>(n, x, d);
    DSC_LAUNCHED("dsc_gelu_bwd");
    return DSC_OK;
}

/* ---- embedding ---- */

__global__ void k_embed_fwd(int B, int T, int C, const int32_t *__restrict__ tokens, const float *__restrict__ wte,
                            const float *__restrict__ wpe, float *__restrict__ out) {
    size_t n = (size_t)B * T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int col = (int)(i % C);
        int r = (int)(i / C), b = r / T, t = r % T;
        int tok = tokens[(size_t)b * (T + 1) + t];
        out[i] = __fadd_rn(wte[(size_t)tok * C + col], wpe[(size_t)t * C + col]);
    }
}

extern "C" dsc_status dsc_embed_fwd(dsc_ctx *c, int B, int T, int C, const int32_t *tokens, const float *wte,
                                       const float *wpe, float *out) {
    DSC_CHECK_CTX(c);
    if (B < 0 || T < 0 || C < 1) return dsc_err(DSC_EINVAL, "dsc_embed_fwd: bad shape B=%d T=%d C=%d", B, T, C);
    if (B == 0 || T == 0) return DSC_OK;
    k_embed_fwd<<<dsc_grid((size_t)B * T * C, 256), 256, 0, c->stream>>>(B, T, C, tokens, wte, wpe, out);
    DSC_LAUNCHED("dsc_embed_fwd");
    return DSC_OK;
}

/* dwte rows: thread (u, col) adds the positions of unique token u in order. */
__global__ void k_embed_bwd_wte(int nu, int C, const int32_t *__restrict__ uniq, const int32_t *__restrict__ off,
                                const int32_t *__restrict__ pos, const float *__restrict__ dout,
                                float *__restrict__ dwte) {
    int col = blockIdx.x * blockDim.x + threadIdx.x, u = blockIdx.y;
    if (col >= C || u >= nu) return;
    float *dst = dwte + (size_t)uniq[u] * C + col;
    float a = *dst;
    for (int k = off[u]; k < off[u + 1]; k++) a = __fadd_rn(a, dout[(size_t)pos[k] * C + col]);
    *dst = a;
}

/* dwpe rows: thread (t, col) adds positions b*T + t for b in order. */
__global__ void k_embed_bwd_wpe(int B, int T, int C, const float *__restrict__ dout, float *__restrict__ dwpe) {
    int col = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    if (col >= C) return;
    float *dst = dwpe + (size_t)t * C + col;
    float a = *dst;
    for (int b = 0; b < B; b++) a = __fadd_rn(a, dout[((size_t)b * T + t) * C + col]);
    *dst = a;
}

/* Counts the positions of each token of tokens_host (B rows of T + 1, the last
 * column not used): *count[V + 1] (the caller frees it) and *nu, the number of
 * distinct tokens. Refuses a token outside [0, V). */
static dsc_status embed_count(int B, int T, int V, const int32_t *tokens_host, int32_t **count_out, int *nu_out) {
    size_t BT = (size_t)B * T;
    int32_t *count = (int32_t *)calloc((size_t)V + 1, sizeof(int32_t));
    if (!count) return dsc_err(DSC_ENOMEM, "out of memory (embedding backward)");
    for (size_t r = 0; r < BT; r++) {
        int32_t tok = tokens_host[(r / T) * (T + 1) + r % T];
        if (tok < 0 || tok >= V) {
            free(count);
            return dsc_err(DSC_EINVAL, "dsc_embed_bwd: token %d outside [0, %d)", (int)tok, V);
        }
        count[tok]++;
    }
    int nu = 0;
    for (int v = 0; v < V; v++) nu += count[v] != 0;
    *count_out = count;
    *nu_out = nu;
    return DSC_OK;
}

/* Makes c->upload, the pinned staging buffer, at least `bytes` long, once the
 * previous call's upload from it has finished (it may still be in flight). */
static dsc_status embed_staging(dsc_ctx *c, size_t bytes) {
    cudaError_t e = cudaEventSynchronize(c->upload_done);
    if (e != cudaSuccess) return dsc_cuda_fail(e, "cudaEventSynchronize (embedding upload)");
    if (bytes > c->upload_bytes) {
        cudaFreeHost(c->upload);
        c->upload = NULL;
        c->upload_bytes = 0;
        e = cudaMallocHost(&c->upload, bytes);
        if (e != cudaSuccess) return dsc_cuda_fail(e, "cudaMallocHost (embedding upload)");
        c->upload_bytes = bytes;
    }
    return DSC_OK;
}

/* Fills h with uniq[nu], off[nu + 1], pos[B * T]: the positions grouped by token
 * (a counting sort keeps each token's positions in increasing order). count, from
 * embed_count, is used up as the next free slot of each token. */
static void embed_group(int32_t *h, int nu, int B, int T, int V, const int32_t *tokens_host, int32_t *count) {
    size_t BT = (size_t)B * T;
    int32_t *uniq = h, *off = h + nu, *pos = off + nu + 1;
    int u = 0, run = 0;
    for (int v = 0; v < V; v++) {
        if (!count[v]) continue;
        uniq[u] = v;
        off[u] = run;
        int k = count[v];
        count[v] = run; /* now the next free slot of token v */
        run += k;
        u++;
    }
    off[nu] = run;
    for (size_t r = 0; r < BT; r++) {
        int32_t tok = tokens_host[(r / T) * (T + 1) + r % T];
        pos[count[tok]++] = (int32_t)r;
    }
}

extern "C" dsc_status dsc_embed_bwd(dsc_ctx *c, int B, int T, int C, int V, const int32_t *tokens_host,
                                       const float *dout, float *dwte, float *dwpe) {
    DSC_CHECK_CTX(c);
    if (B < 0 || T < 0 || C < 1 || V < 1 || T > 65535)
        return dsc_err(DSC_EINVAL, "dsc_embed_bwd: bad shape B=%d T=%d C=%d V=%d", B, T, C, V);
    if (B == 0 || T == 0) return DSC_OK;
    if (!tokens_host) return dsc_err(DSC_EINVAL, "dsc_embed_bwd: NULL tokens");
    size_t BT = (size_t)B * T;
    if (BT > INT32_MAX / 2) return dsc_err(DSC_EINVAL, "dsc_embed_bwd: %zu positions is too many", BT);
    /* Group the positions by token on the host, upload the index, then one kernel
     * for the token rows and one for the position rows. */
    int32_t *count = NULL;
    int nu = 0;
    dsc_status st = embed_count(B, T, V, tokens_host, &count, &nu);
    if (st) return st;
    size_t words = (size_t)nu + (size_t)nu + 1 + BT;
    st = embed_staging(c, words * sizeof(int32_t));
    if (st) {
        free(count);
        return st;
    }
    int32_t *h = (int32_t *)c->upload;
    embed_group(h, nu, B, T, V, tokens_host, count);
    free(count);
    void *dev = NULL;
    st = dsc_scratch(c, words * sizeof(int32_t), &dev);
    if (st) return st;
    DSC_CUDA(cudaMemcpyAsync(dev, h, words * sizeof(int32_t), cudaMemcpyHostToDevice, c->stream),
             "cudaMemcpyAsync (embedding index)");
    DSC_CUDA(cudaEventRecord(c->upload_done, c->stream), "cudaEventRecord");
    const int32_t *d = (const int32_t *)dev;
    if (nu > 0) {
        for (int u0 = 0; u0 < nu; u0 += 65535) {
            int nb = nu - u0 < 65535 ? nu - u0 : 65535;
            k_embed_bwd_wte<<<dim3((C + 127) / 128, nb), 128, 0, c->stream>>>(nb, C, d + u0, d + nu + u0,
                                                                              d + 2 * nu + 1, dout, dwte);
            DSC_LAUNCHED("dsc_embed_bwd (wte)");
        }
    }
    k_embed_bwd_wpe<<<dim3((C + 127) / 128, T), 128, 0, c->stream>>>(B, T, C, dout, dwpe);
    DSC_LAUNCHED("dsc_embed_bwd (wpe)");
    return DSC_OK;
}

/* ---- softmax + cross-entropy: one block per row ---- */

#define CE_THREADS 512
__global__ void __launch_bounds__(CE_THREADS) k_crossentropy(int T, int V, const int32_t *__restrict__ tokens,
                                                             float *__restrict__ logits,
                                                             float *__restrict__ row_loss, float dscale) {
    __shared__ float sh[32];
    int r = blockIdx.x, b = r / T, t = r % T;
    int target = tokens[(size_t)b * (T + 1) + t + 1];
    float *row = logits + (size_t)r * V;
    /* Read before the barrier in block_max: after it, other threads overwrite the row. */
    float z_target = row[target];
    float mx = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, row[v]);
    mx = block_max(mx, sh);
    float zt = __fsub_rn(z_target, mx);
    float s = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float e = expf(__fsub_rn(row[v], mx));
        row[v] = e;
        s = __fadd_rn(s, e);
    }
    s = block_sum(s, sh);
    if (threadIdx.x == 0) row_loss[r] = __fsub_rn(logf(s), zt);
    if (dscale != 0.0f) {
        float inv = __fdiv_rn(1.0f, s);
        for (int v = threadIdx.x; v < V; v += blockDim.x) {
            float p = __fmul_rn(__fmul_rn(row[v], inv), dscale);
            row[v] = v == target ? __fsub_rn(p, dscale) : p;
        }
    }
}

extern "C" dsc_status dsc_crossentropy(dsc_ctx *c, int B, int T, int V, const int32_t *tokens, float *logits,
                                          float *row_loss, float dscale, double *loss_host) {
    DSC_CHECK_CTX(c);
    if (B < 0 || T < 0 || V < 1) return dsc_err(DSC_EINVAL, "dsc_crossentropy: bad shape B=%d T=%d V=%d", B, T, V);
    if (loss_host) *loss_host = 0.0;
    int BT = B * T;
    if (BT == 0) return DSC_OK;
    k_crossentropy<<<BT, CE_THREADS, 0, c->stream>>>(T, V, tokens, logits, row_loss, dscale);
    DSC_LAUNCHED("dsc_crossentropy");
    if (!loss_host) return DSC_OK;
    void *hp = NULL;
    dsc_status st = dsc_pinned(c, (size_t)BT * sizeof(float), &hp);
    if (st) return st;
    DSC_CUDA(cudaMemcpyAsync(hp, row_loss, (size_t)BT * sizeof(float), cudaMemcpyDeviceToHost, c->stream),
             "cudaMemcpyAsync (row losses)");
    DSC_CUDA(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize (loss)");
    const float *rl = (const float *)hp;
    double total = 0.0; /* row order, in double, as the CPU */
    for (int r = 0; r < BT; r++) total += rl[r];
    *loss_host = total / (double)BT;
    return DSC_OK;
}
