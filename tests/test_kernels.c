/*
 * test_kernels.c — every training kernel of kernels/ (gemm.h, nn.h, optim.h) against
 * its plain reference, bit for bit, on random data: odd and edge shapes (1, primes,
 * sizes just past the GEMM tiles and K-slices, lengths past the parallel thresholds),
 * at 1 and 3 OpenMP threads. The references themselves are checked against double
 * precision (or exact) computations within stated tolerances, so two copies of the
 * same mistake cannot pass. Also rt_adam_step / rt_adam_step_ref (runtime/adam.h).
 * In a -DDSCKPT_BLAS=ON build the GEMM fast paths are BLAS and are held to the
 * reference's double-precision tolerance instead of its bits.
 */
#include "tutil.h"

#include "adam.h"
#include "cast.h"
#include "gemm.h"
#include "kernels_internal.h"
#include "nn.h"
#include "optim.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint64_t next_u64(void) {
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-scale, scale). */
static float urand(float scale) { return scale * (float)((double)(next_u64() >> 11) * 0x1.0p-52 - 1.0); }

static float *rnd(size_t n, float scale) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    for (size_t i = 0; i < n; i++) p[i] = urand(scale);
    return p;
}

static float *dup(const float *a, size_t n) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    if (n) memcpy(p, a, n * sizeof *p);
    return p;
}

/* Bitwise equality, naming the first difference. */
static int same(const char *what, const float *got, const float *want, size_t n) {
    if (!n || memcmp(got, want, n * sizeof *got) == 0) return 1;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof *got) != 0) {
            fprintf(stderr, "\n  %s: element %zu of %zu: got %.9g, reference %.9g", what, i, n, (double)got[i],
                    (double)want[i]);
            break;
        }
    return 0;
}

/* Thread counts every fast path is run at. */
static const int g_threads[] = {1, 3};
#define NTHREADS (sizeof g_threads / sizeof g_threads[0])

static int32_t *rnd_tokens(int B, int T, int V) {
    int32_t *t = malloc((size_t)B * (size_t)(T + 1) * sizeof *t);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    for (int i = 0; i < B * (T + 1); i++) t[i] = (int32_t)(next_u64() % (uint64_t)V);
    return t;
}

/* ---- GEMM ---- */

/* Reference vs double: |C - exact| <= 1e-5 * sum |a*b| + tiny. */
static void check_gemm_vs_double(int M, int N, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                                 ptrdiff_t brs, ptrdiff_t bcs, const float *c0, const float *c, int add) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = add ? c0[(size_t)i * N + j] : 0.0, mag = fabs(s);
            for (int p = 0; p < K; p++) {
                double t = (double)a[i * ars + p * acs] * b[p * brs + j * bcs];
                s += t;
                mag += fabs(t);
            }
            if (fabs(c[(size_t)i * N + j] - s) > 1e-5 * mag + 1e-30) {
                CU_FAIL("gemm reference off its double-precision value");
                fprintf(stderr, "\n  gemm %dx%dx%d (%d,%d): %.9g vs %.9g", M, N, K, i, j, (double)c[(size_t)i * N + j], s);
                return;
            }
        }
}

static void gemm_case(int M, int N, int K, int transA, int add) {
    /* A stored [M, K] (or [K, M] read transposed), B [K, N], C [M, N]. */
    float *a = rnd((size_t)M * K, 1.0f), *b = rnd((size_t)K * N, 1.0f), *c0 = rnd((size_t)M * N, 1.0f);
    ptrdiff_t ars = transA ? 1 : K, acs = transA ? M : 1;
    float *want = dup(c0, (size_t)M * N);
    ds_gemm_ref(M, N, K, a, ars, acs, b, N, want, N, add);
    check_gemm_vs_double(M, N, K, a, ars, acs, b, N, 1, c0, want, add);
    for (size_t t = 0; t < NTHREADS; t++) {
        omp_set_num_threads(g_threads[t]);
        float *got = dup(c0, (size_t)M * N);
        ds_gemm(M, N, K, a, ars, acs, b, N, got, N, add);
#ifdef DSCKPT_BLAS /* BLAS sums in its own order: the same tolerance as the reference's */
        check_gemm_vs_double(M, N, K, a, ars, acs, b, N, 1, c0, got, add);
#else
        char what[96];
        snprintf(what, sizeof what, "gemm %dx%dx%d transA=%d add=%d threads=%d", M, N, K, transA, add, g_threads[t]);
        CU_ASSERT(same(what, got, want, (size_t)M * N));
#endif
        free(got);
    }
    /* A·Btᵀ with Bt = Bᵀ stored [N, K]. */
    if (!transA) {
        float *bt = malloc(((size_t)N * K + 1) * sizeof *bt);
        CU_ASSERT_PTR_NOT_NULL_FATAL(bt);
        for (int p = 0; p < K; p++)
            for (int j = 0; j < N; j++) bt[(size_t)j * K + p] = b[(size_t)p * N + j];
        float *want_bt = dup(c0, (size_t)M * N);
        ds_gemm_bt_ref(M, N, K, a, K, bt, K, want_bt, N, add, NULL);
        CU_ASSERT(same("gemm_bt_ref vs gemm_ref", want_bt, want, (size_t)M * N));
        float *panel = malloc(ds_gemm_bt_panel_floats(K) * sizeof *panel);
        CU_ASSERT_PTR_NOT_NULL_FATAL(panel);
        for (size_t t = 0; t < NTHREADS; t++) {
            omp_set_num_threads(g_threads[t]);
            float *got = dup(c0, (size_t)M * N);
            ds_gemm_bt(M, N, K, a, K, bt, K, got, N, add, panel);
#ifdef DSCKPT_BLAS
            check_gemm_vs_double(M, N, K, a, K, 1, b, N, 1, c0, got, add);
#else
            char what[96];
            snprintf(what, sizeof what, "gemm_bt %dx%dx%d add=%d threads=%d", M, N, K, add, g_threads[t]);
            CU_ASSERT(same(what, got, want, (size_t)M * N));
#endif
            free(got);
        }
        { /* no panel: the reference's loop (or BLAS) */
            float *got = dup(c0, (size_t)M * N);
            ds_gemm_bt(M, N, K, a, K, bt, K, got, N, add, NULL);
#ifdef DSCKPT_BLAS
            check_gemm_vs_double(M, N, K, a, K, 1, b, N, 1, c0, got, add);
#else
            CU_ASSERT(same("gemm_bt without panel", got, want, (size_t)M * N));
#endif
            free(got);
        }
        free(panel);
        free(want_bt);
        free(bt);
    }
    free(a), free(b), free(c0), free(want);
}

static void test_gemm(void) {
    /* Tiles are 6 x 8 in 48 x 64 blocks, K in slices of 256, Bt panels of 256 rows. */
    static const int shapes[][3] = {{1, 1, 1},   {1, 1, 0},    {5, 7, 3},     {6, 8, 256},  {7, 9, 257},
                                    {48, 64, 1}, {49, 65, 513}, {13, 300, 31}, {97, 131, 300}, {130, 70, 96}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int transA = 0; transA < 2; transA++)
            for (int add = 0; add < 2; add++) gemm_case(shapes[s][0], shapes[s][1], shapes[s][2], transA, add);
    omp_set_num_threads(1);
}

/* ---- layers ---- */

static void test_bias(void) {
    static const int shapes[][2] = {{1, 1}, {3, 5}, {17, 63}, {64, 65}, {300, 129}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], C = shapes[s][1];
        size_t nc = (size_t)N * C;
        float *bias = rnd((size_t)C, 1.0f), *res = rnd(nc, 1.0f), *d = rnd(nc, 1.0f), *db0 = rnd((size_t)C, 1.0f);
        float *want = rnd(nc, 1.0f), *want_nores = rnd(nc, 1.0f), *want_db = dup(db0, (size_t)C);
        ds_bias_rows_ref(N, C, want, bias, res);
        ds_bias_rows_ref(N, C, want_nores, bias, NULL);
        ds_bias_grad_ref(N, C, d, want_db);
        for (int c = 0; c < C; c++) { /* the reference against a double sum */
            double sd = db0[c];
            for (int r = 0; r < N; r++) sd += d[(size_t)r * C + c];
            CU_ASSERT(fabs(want_db[c] - sd) <= 1e-5 * (N + 1));
        }
        CU_ASSERT_EQUAL(want[nc - 1], res[nc - 1] + bias[C - 1]);
        for (size_t t = 0; t < NTHREADS; t++) {
            omp_set_num_threads(g_threads[t]);
            float *got = rnd(nc, 1.0f), *gdb = dup(db0, (size_t)C);
            ds_bias_rows(N, C, got, bias, res);
            CU_ASSERT(same("bias_rows", got, want, nc));
            ds_bias_rows(N, C, got, bias, NULL);
            CU_ASSERT(same("bias_rows (no residual)", got, want_nores, nc));
            ds_bias_grad(N, C, d, gdb);
            CU_ASSERT(same("bias_grad", gdb, want_db, (size_t)C));
            free(got), free(gdb);
        }
        free(bias), free(res), free(d), free(db0), free(want), free(want_nores), free(want_db);
    }
    omp_set_num_threads(1);
}

static void test_layernorm(void) {
    static const int shapes[][2] = {{1, 1}, {2, 7}, {5, 32}, {33, 95}, {260, 200}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], C = shapes[s][1];
        size_t nc = (size_t)N * C;
        float *x = rnd(nc, 3.0f), *w = rnd((size_t)C, 1.0f), *b = rnd((size_t)C, 1.0f), *dout = rnd(nc, 1.0f);
        float *out = rnd(nc, 1.0f), *mean = rnd((size_t)N, 1.0f), *rstd = rnd((size_t)N, 1.0f);
        ds_layernorm_fwd_ref(N, C, x, w, b, out, mean, rstd);
        for (int r = 0; r < N; r++) { /* against double */
            double mu = 0, var = 0;
            for (int c = 0; c < C; c++) mu += x[(size_t)r * C + c];
            mu /= C;
            for (int c = 0; c < C; c++) var += (x[(size_t)r * C + c] - mu) * (x[(size_t)r * C + c] - mu);
            double rs = 1.0 / sqrt(var / C + 1e-5);
            CU_ASSERT(fabs(mean[r] - mu) <= 1e-5 * (1 + fabs(mu)));
            CU_ASSERT(fabs(rstd[r] - rs) <= 1e-4 * rs);
            for (int c = 0; c < C; c++) {
                double y = (x[(size_t)r * C + c] - mu) * rs * w[c] + b[c];
                CU_ASSERT(fabs(out[(size_t)r * C + c] - y) <= 1e-4 * (1 + fabs(y)));
            }
        }
        float *dx0 = rnd(nc, 1.0f), *dw0 = rnd((size_t)C, 1.0f), *db0 = rnd((size_t)C, 1.0f);
        float *wdx = dup(dx0, nc), *wdw = dup(dw0, (size_t)C), *wdb = dup(db0, (size_t)C);
        ds_layernorm_bwd_ref(N, C, dout, x, mean, rstd, w, wdx, wdw, wdb);
        for (size_t t = 0; t < NTHREADS; t++) {
            omp_set_num_threads(g_threads[t]);
            float *o = rnd(nc, 1.0f), *m = rnd((size_t)N, 1.0f), *rs = rnd((size_t)N, 1.0f);
            ds_layernorm_fwd(N, C, x, w, b, o, m, rs);
            CU_ASSERT(same("layernorm_fwd out", o, out, nc));
            CU_ASSERT(same("layernorm_fwd mean", m, mean, (size_t)N));
            CU_ASSERT(same("layernorm_fwd rstd", rs, rstd, (size_t)N));
            float *gdx = dup(dx0, nc), *gdw = dup(dw0, (size_t)C), *gdb = dup(db0, (size_t)C);
            ds_layernorm_bwd(N, C, dout, x, mean, rstd, w, gdx, gdw, gdb);
            CU_ASSERT(same("layernorm_bwd dx", gdx, wdx, nc));
            CU_ASSERT(same("layernorm_bwd dw", gdw, wdw, (size_t)C));
            CU_ASSERT(same("layernorm_bwd db", gdb, wdb, (size_t)C));
            free(o), free(m), free(rs), free(gdx), free(gdw), free(gdb);
        }
        /* The backward against a central difference of the forward (one row, double). */
        if (C > 1) {
            int r = N - 1;
            const float *xr = x + (size_t)r * C, *dr = dout + (size_t)r * C;
            for (int k = 0; k < C; k += (C > 8 ? C / 8 : 1)) {
                double h = 1e-3, lp = 0, lm = 0;
                for (int sgn = -1; sgn <= 1; sgn += 2) {
                    double mu = 0, var = 0, l = 0;
                    for (int c = 0; c < C; c++) mu += xr[c] + (c == k ? sgn * h : 0);
                    mu /= C;
                    for (int c = 0; c < C; c++) {
                        double v = xr[c] + (c == k ? sgn * h : 0) - mu;
                        var += v * v;
                    }
                    double rs2 = 1.0 / sqrt(var / C + 1e-5);
                    for (int c = 0; c < C; c++) l += dr[c] * ((xr[c] + (c == k ? sgn * h : 0) - mu) * rs2 * w[c] + b[c]);
                    if (sgn < 0) lm = l;
                    else lp = l;
                }
                double num = (lp - lm) / (2 * h), got = wdx[(size_t)r * C + k] - dx0[(size_t)r * C + k];
                CU_ASSERT(fabs(got - num) <= 2e-3 * (1 + fabs(num)));
            }
        }
        free(x), free(w), free(b), free(dout), free(out), free(mean), free(rstd);
        free(dx0), free(dw0), free(db0), free(wdx), free(wdw), free(wdb);
    }
    omp_set_num_threads(1);
}

/* ---- exp ---- */

/* k_expf against exp in double on one float bit pattern in 61 (all signs and
 * exponents, about 70M inputs): within 1 ulp of float where the result is normal,
 * within one subnormal step below that, +inf exactly where the float result
 * overflows; and the special values. */
static void test_expf(void) {
    double worst = 0.0;
    uint64_t bad = 0;
    for (uint64_t u = 0; u <= UINT32_MAX; u += 61) {
        float x;
        uint32_t b = (uint32_t)u;
        memcpy(&x, &b, 4);
        if (isnan(x)) continue;
        float y = k_expf(x);
        double ref = exp((double)x);
        if (isinf((float)ref)) {
            bad += !(isinf(y) && y > 0);
            continue;
        }
        double ulp = ref < 0x1p-126 ? 0x1p-149 : ldexp(1.0, ilogb(ref) - 23);
        double e = fabs((double)y - ref) / ulp;
        if (e > worst) worst = e;
        if (e > 1.0 && bad++ < 5) fprintf(stderr, "\n  k_expf(%a) = %a, exp = %a (%.3f ulp)", (double)x, (double)y, ref, e);
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(worst > 0.5 && worst <= 1.0); /* checked at all: not every result exact */
    CU_ASSERT(k_expf(0.0f) == 1.0f && k_expf(-0.0f) == 1.0f);
    CU_ASSERT(k_expf(-INFINITY) == 0.0f && !signbit(k_expf(-INFINITY)));
    CU_ASSERT(isinf(k_expf(INFINITY)) && k_expf(INFINITY) > 0);
    CU_ASSERT(isnan(k_expf(NAN)) && isnan(k_expf(-NAN)));
    CU_ASSERT(isfinite(k_expf(88.72f)) && fabs(k_expf(88.72f) / exp((double)88.72f) - 1.0) < 2e-7);
    CU_ASSERT(isinf(k_expf(88.73f)));
    CU_ASSERT(k_expf(-103.0f) > 0.0f && k_expf(-104.0f) == 0.0f);
}

static void test_gelu(void) {
    static const int64_t lens[] = {1, 7, 8193, 70001};
    for (size_t s = 0; s < sizeof lens / sizeof lens[0]; s++) {
        int64_t n = lens[s];
        float *x = rnd((size_t)n, 6.0f), *d0 = rnd((size_t)n, 1.0f);
        if (n > 3) x[0] = 0.0f, x[1] = 40.0f, x[2] = -40.0f; /* 0, saturated tails */
        float *y = rnd((size_t)n, 1.0f), *d = dup(d0, (size_t)n);
        ds_gelu_fwd_ref(n, x, y);
        ds_gelu_bwd_ref(n, x, d);
        for (int64_t i = 0; i < n; i++) {
            double v = x[i], u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
            double yy = 0.5 * v * (1 + tanh(u));
            double du = 0.7978845608028654 * (1 + 3 * 0.044715 * v * v);
            double dd = d0[i] * (0.5 * (1 + tanh(u)) + 0.5 * v * (1 - tanh(u) * tanh(u)) * du);
            CU_ASSERT(fabs(y[i] - yy) <= 1e-6 * (1 + fabs(yy)));
            CU_ASSERT(fabs(d[i] - dd) <= 1e-5 * (1 + fabs(dd)));
        }
        if (n > 3) CU_ASSERT(y[0] == 0.0f && y[1] == 40.0f && y[2] == -0.0f);
        for (size_t t = 0; t < NTHREADS; t++) {
            omp_set_num_threads(g_threads[t]);
            float *gy = rnd((size_t)n, 1.0f), *gd = dup(d0, (size_t)n);
            ds_gelu_fwd(n, x, gy);
            ds_gelu_bwd(n, x, gd);
            CU_ASSERT(same("gelu_fwd", gy, y, (size_t)n));
            CU_ASSERT(same("gelu_bwd", gd, d, (size_t)n));
            free(gy), free(gd);
        }
        free(x), free(d0), free(y), free(d);
    }
    omp_set_num_threads(1);
}

/* |got - want| <= tol * (1 + |want|) element by element, naming the first miss. */
static int close_to(const char *what, const float *got, const float *want, size_t n, double tol) {
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - want[i]) <= tol * (1.0 + fabs((double)want[i])))) {
            fprintf(stderr, "\n  %s: element %zu of %zu: got %.9g, reference %.9g", what, i, n, (double)got[i],
                    (double)want[i]);
            return 0;
        }
    return 1;
}

/* ds_attention_*_mm (GEMM order, so not bitwise) against the references' results
 * att, y, dqkv at the current thread count: within rounding, the upper triangle of
 * att exactly zero. Outputs and scratch start as garbage. */
static void attention_mm_case(int B, int T, int C, int NH, const float *qkv, const float *dy, const float *att,
                              const float *y, const float *dqkv) {
    size_t nqkv = (size_t)B * T * 3 * C, natt = (size_t)B * NH * T * T, ny = (size_t)B * T * C;
    float *gatt = rnd(natt, 1.0f), *gy = rnd(ny, 1.0f), *gd = rnd(nqkv, 1.0f), *gscr = rnd(natt, 1.0f);
    ds_attention_fwd_mm(B, T, C, NH, qkv, gatt, gy);
    CU_ASSERT(close_to("attention_fwd_mm att", gatt, att, natt, 1e-5));
    CU_ASSERT(close_to("attention_fwd_mm y", gy, y, ny, 1e-5));
    int upper_zero = 1;
    for (size_t bh = 0; bh < (size_t)B * NH; bh++)
        for (int t = 0; t < T; t++)
            for (int t2 = t + 1; t2 < T; t2++) upper_zero &= gatt[(bh * T + t) * T + t2] == 0.0f;
    CU_ASSERT(upper_zero);
    ds_attention_bwd_mm(B, T, C, NH, qkv, gatt, dy, gd, gscr);
    CU_ASSERT(close_to("attention_bwd_mm dqkv", gd, dqkv, nqkv, 1e-4));
    free(gatt), free(gy), free(gd), free(gscr);
}

static void test_attention(void) {
    /* B, T, C, NH: head sizes 1, 3, 8, 13, 16 (dot8's tail and body). */
    static const int shapes[][4] = {{1, 1, 1, 1}, {1, 5, 6, 2}, {2, 7, 16, 2}, {3, 33, 39, 3}, {2, 64, 64, 4}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int B = shapes[s][0], T = shapes[s][1], C = shapes[s][2], NH = shapes[s][3], hs = C / NH;
        size_t nqkv = (size_t)B * T * 3 * C, natt = (size_t)B * NH * T * T, ny = (size_t)B * T * C;
        float *qkv = rnd(nqkv, 2.0f), *dy = rnd(ny, 1.0f);
        float *att = calloc(natt, sizeof *att), *y = rnd(ny, 1.0f);
        float *dqkv = rnd(nqkv, 1.0f), *scr = rnd((size_t)B * NH * T, 1.0f);
        CU_ASSERT_PTR_NOT_NULL_FATAL(att);
        ds_attention_fwd_ref(B, T, C, NH, qkv, att, y);
        ds_attention_bwd_ref(B, T, C, NH, qkv, att, dy, dqkv, scr);
        /* Forward against double: last position of the last (b, h). */
        {
            int b = B - 1, h = NH - 1, t = T - 1;
            double sc[256], mx = -INFINITY, sum = 0;
            for (int t2 = 0; t2 <= t; t2++) {
                double dot = 0;
                for (int i = 0; i < hs; i++)
                    dot += (double)qkv[((size_t)b * T + t) * 3 * C + (size_t)h * hs + i] *
                           qkv[((size_t)b * T + t2) * 3 * C + C + (size_t)h * hs + i];
                sc[t2] = dot / sqrt((double)hs);
                mx = sc[t2] > mx ? sc[t2] : mx;
            }
            for (int t2 = 0; t2 <= t; t2++) sum += exp(sc[t2] - mx);
            for (int i = 0; i < hs; i++) {
                double yy = 0;
                for (int t2 = 0; t2 <= t; t2++)
                    yy += exp(sc[t2] - mx) / sum * qkv[((size_t)b * T + t2) * 3 * C + 2 * C + (size_t)h * hs + i];
                CU_ASSERT(fabs(y[((size_t)b * T + t) * C + (size_t)h * hs + i] - yy) <= 1e-5 * (1 + fabs(yy)));
            }
        }
        /* Backward against a central difference of sum(dy * y) in one q, k and v element. */
        {
            int b = 0, h = NH - 1;
            for (int part = 0; part < 3; part++) {
                size_t idx = ((size_t)b * T + (T > 1 ? 1 : 0)) * 3 * C + (size_t)part * C + (size_t)h * hs;
                float save = qkv[idx];
                double f[2];
                float *att2 = calloc(natt, sizeof *att2), *y2 = rnd(ny, 1.0f);
                CU_ASSERT_PTR_NOT_NULL_FATAL(att2);
                for (int k = 0; k < 2; k++) {
                    qkv[idx] = save + (k ? 1e-2f : -1e-2f);
                    ds_attention_fwd_ref(B, T, C, NH, qkv, att2, y2);
                    f[k] = 0;
                    for (size_t i = 0; i < ny; i++) f[k] += (double)dy[i] * y2[i];
                }
                qkv[idx] = save;
                double num = (f[1] - f[0]) / ((double)(save + 1e-2f) - (double)(save - 1e-2f));
                CU_ASSERT(fabs(dqkv[idx] - num) <= 2e-2 * (1 + fabs(num)));
                free(att2), free(y2);
            }
        }
        for (size_t t = 0; t < NTHREADS; t++) {
            omp_set_num_threads(g_threads[t]);
            float *gatt = calloc(natt, sizeof *gatt), *gy = rnd(ny, 1.0f);
            float *gd = rnd(nqkv, 1.0f), *gscr = rnd((size_t)B * NH * T, 1.0f);
            CU_ASSERT_PTR_NOT_NULL_FATAL(gatt);
            ds_attention_fwd(B, T, C, NH, qkv, gatt, gy);
            CU_ASSERT(same("attention_fwd att", gatt, att, natt));
            CU_ASSERT(same("attention_fwd y", gy, y, ny));
            ds_attention_bwd(B, T, C, NH, qkv, att, dy, gd, gscr);
            CU_ASSERT(same("attention_bwd dqkv", gd, dqkv, nqkv));
            free(gatt), free(gy), free(gd), free(gscr);
            attention_mm_case(B, T, C, NH, qkv, dy, att, y, dqkv);
        }
        free(qkv), free(dy), free(att), free(y), free(dqkv), free(scr);
    }
    omp_set_num_threads(1);
}

static void test_embed(void) {
    static const int shapes[][4] = {{1, 1, 1, 1}, {2, 3, 5, 4}, {3, 17, 130, 11}, {4, 64, 96, 50}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int B = shapes[s][0], T = shapes[s][1], C = shapes[s][2], V = shapes[s][3];
        int32_t *tok = rnd_tokens(B, T, V); /* small V: tokens repeat, rows accumulate */
        float *wte = rnd((size_t)V * C, 1.0f), *wpe = rnd((size_t)T * C, 1.0f), *dout = rnd((size_t)B * T * C, 1.0f);
        float *out = rnd((size_t)B * T * C, 1.0f);
        float *dwte0 = rnd((size_t)V * C, 1.0f), *dwpe0 = rnd((size_t)T * C, 1.0f);
        float *wdwte = dup(dwte0, (size_t)V * C), *wdwpe = dup(dwpe0, (size_t)T * C);
        ds_embed_fwd_ref(B, T, C, tok, wte, wpe, out);
        ds_embed_bwd_ref(B, T, C, tok, dout, wdwte, wdwpe);
        CU_ASSERT_EQUAL(out[C - 1], wte[(size_t)tok[0] * C + C - 1] + wpe[C - 1]);
        for (size_t t = 0; t < NTHREADS; t++) {
            omp_set_num_threads(g_threads[t]);
            float *go = rnd((size_t)B * T * C, 1.0f);
            float *gte = dup(dwte0, (size_t)V * C), *gpe = dup(dwpe0, (size_t)T * C);
            ds_embed_fwd(B, T, C, tok, wte, wpe, go);
            CU_ASSERT(same("embed_fwd", go, out, (size_t)B * T * C));
            ds_embed_bwd(B, T, C, tok, dout, gte, gpe);
            CU_ASSERT(same("embed_bwd dwte", gte, wdwte, (size_t)V * C));
            CU_ASSERT(same("embed_bwd dwpe", gpe, wdwpe, (size_t)T * C));
            free(go), free(gte), free(gpe);
        }
        free(tok), free(wte), free(wpe), free(dout), free(out), free(dwte0), free(dwpe0), free(wdwte), free(wdwpe);
    }
    omp_set_num_threads(1);
}

static void test_crossent(void) {
    static const int shapes[][3] = {{1, 1, 1}, {1, 2, 3}, {2, 9, 50}, {3, 33, 517}};
    static const float dscales[] = {0.0f, 1.0f, 0.0078125f};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t k = 0; k < 3; k++) {
            int B = shapes[s][0], T = shapes[s][1], V = shapes[s][2], BT = B * T;
            float dscale = dscales[k];
            int32_t *tok = rnd_tokens(B, T, V);
            float *logits = rnd((size_t)BT * V, 8.0f);
            float *want = dup(logits, (size_t)BT * V), *wl = rnd((size_t)BT, 1.0f);
            ds_crossent_ref(B, T, V, tok, want, dscale, wl);
            for (int r = 0; r < BT; r++) { /* against double */
                const float *z = logits + (size_t)r * V;
                int tgt = tok[(r / T) * (T + 1) + r % T + 1];
                double mx = -INFINITY, sum = 0;
                for (int v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
                for (int v = 0; v < V; v++) sum += exp(z[v] - mx);
                double loss = log(sum) - (z[tgt] - mx);
                CU_ASSERT(fabs(wl[r] - loss) <= 1e-5 * (1 + fabs(loss)));
                if (dscale != 0.0f)
                    for (int v = 0; v < V; v++) {
                        double g = (exp(z[v] - mx) / sum - (v == tgt)) * dscale;
                        CU_ASSERT(fabs(want[(size_t)r * V + v] - g) <= 1e-6 * (1 + fabs(g)));
                    }
            }
            for (size_t t = 0; t < NTHREADS; t++) {
                omp_set_num_threads(g_threads[t]);
                float *got = dup(logits, (size_t)BT * V), *gl = rnd((size_t)BT, 1.0f);
                ds_crossent(B, T, V, tok, got, dscale, gl);
                CU_ASSERT(same("crossent probs", got, want, (size_t)BT * V));
                CU_ASSERT(same("crossent row_loss", gl, wl, (size_t)BT));
                free(got), free(gl);
            }
            free(tok), free(logits), free(want), free(wl);
        }
    omp_set_num_threads(1);
}

/* ---- optimizer kernels ---- */

static const size_t g_lens[] = {0, 1, 4095, 4096, 4097, 40000, 100003};
#define NLENS (sizeof g_lens / sizeof g_lens[0])

static ds_adam_k adam_k(bool adamw, float wd, uint64_t step) {
    rt_adam_hparams h = rt_adam_defaults();
    h.lr = 0.01f;
    h.beta1 = 0.9f;
    h.beta2 = 0.95f;
    h.weight_decay = wd;
    h.adam_w_mode = adamw;
    ds_adam_k k;
    CU_ASSERT_EQUAL(rt_adam_constants(&h, step, &k), DSCKPT_OK);
    return k;
}

static void test_adam_kernel(void) {
    for (size_t s = 0; s < NLENS; s++)
        for (int mode = 0; mode < 2; mode++) {
            size_t n = g_lens[s];
            ds_adam_k k = adam_k(mode, 0.1f, 3);
            float *p = rnd(n, 1.0f), *g = rnd(n, 1.0f), *m = rnd(n, 0.1f), *v = rnd(n, 0.01f);
            for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
            float *wp = dup(p, n), *wm = dup(m, n), *wv = dup(v, n);
            ds_adam_ref(&k, wp, g, wm, wv, n);
            for (size_t i = 0; i < n; i += 97) { /* against double */
                double gg = g[i] + (mode ? 0 : 0.1 * p[i]);
                double mm = 0.9 * m[i] + 0.1 * gg, vv = 0.95 * v[i] + 0.05 * gg * gg;
                double up = (mm / k.bc1) / (sqrt(vv / k.bc2) + 1e-8) + (mode ? 0.1 * p[i] : 0);
                double pp = p[i] - 0.01 * up;
                CU_ASSERT(fabs(wp[i] - pp) <= 1e-6 * (1 + fabs(pp)));
                CU_ASSERT(fabs(wm[i] - mm) <= 1e-6 * (1 + fabs(mm)));
            }
            for (size_t t = 0; t < NTHREADS; t++) {
                omp_set_num_threads(g_threads[t]);
                float *gp = dup(p, n), *gm = dup(m, n), *gv = dup(v, n);
                ds_adam(&k, gp, g, gm, gv, n);
                CU_ASSERT(same("adam param", gp, wp, n));
                CU_ASSERT(same("adam exp_avg", gm, wm, n));
                CU_ASSERT(same("adam exp_avg_sq", gv, wv, n));
                free(gp), free(gm), free(gv);
            }
            free(p), free(g), free(m), free(v), free(wp), free(wm), free(wv);
        }
    omp_set_num_threads(1);
}

static void test_rt_adam_step(void) {
    size_t n = 50001;
    rt_adam_hparams h = rt_adam_defaults();
    h.weight_decay = 0.01f;
    float *p = rnd(n, 1.0f), *g = rnd(n, 1.0f), *m = calloc(n, sizeof *m), *v = calloc(n, sizeof *v);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    float *p2 = dup(p, n), *m2 = dup(m, n), *v2 = dup(v, n);
    for (uint64_t step = 1; step <= 3; step++) {
        omp_set_num_threads(3);
        TU_ASSERT_OK(rt_adam_step(p, g, m, v, n, &h, step));
        TU_ASSERT_OK(rt_adam_step_ref(p2, g, m2, v2, n, &h, step));
        CU_ASSERT(same("rt_adam_step param", p, p2, n));
        CU_ASSERT(same("rt_adam_step exp_avg_sq", v, v2, n));
    }
    omp_set_num_threads(1);
    /* First step from zero moments, no decay: the update is g / (|g| + eps/...) ~ sign(g). */
    {
        rt_adam_hparams h1 = rt_adam_defaults();
        float pp = 0.5f, gg = 0.25f, mm = 0.0f, vv = 0.0f;
        TU_ASSERT_OK(rt_adam_step(&pp, &gg, &mm, &vv, 1, &h1, 1));
        CU_ASSERT(fabsf(pp - (0.5f - 1e-3f)) <= 1e-7f);
        CU_ASSERT_EQUAL(mm, (1.0f - 0.9f) * 0.25f);
    }
    /* Refusals. */
    CU_ASSERT_EQUAL(rt_adam_step(p, g, m, v, n, &h, 0), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(rt_adam_step_ref(p, g, m, v, n, &h, 0), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(rt_adam_step(NULL, g, m, v, n, &h, 1), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(rt_adam_step(NULL, NULL, NULL, NULL, 0, &h, 1), DSCKPT_OK);
    rt_adam_hparams bad = h;
    bad.beta2 = 1.0f;
    CU_ASSERT_EQUAL(rt_adam_step(p, g, m, v, n, &bad, 1), DSCKPT_EINVAL);
    bad = h;
    bad.lr = NAN;
    CU_ASSERT_EQUAL(rt_adam_step_ref(p, g, m, v, n, &bad, 1), DSCKPT_EINVAL);
    free(p), free(g), free(m), free(v), free(p2), free(m2), free(v2);
}

/* ds_zero_touch zeroes exactly its n bytes, whole 2 MiB pieces and a short last
 * one, on one thread and on several (from 16 MiB up it splits the work). */
static void test_zero_touch(void) {
    const size_t lens[] = {0, 1, 4095, (size_t)2 << 20, ((size_t)16 << 20) - 3, ((size_t)37 << 20) + 12345};
    for (size_t s = 0; s < sizeof lens / sizeof lens[0]; s++) {
        size_t n = lens[s];
        unsigned char *b = malloc(n + 64);
        CU_ASSERT_FATAL(b != NULL);
        for (size_t t = 0; t < NTHREADS; t++) {
            omp_set_num_threads(g_threads[t]);
            memset(b, 0xa5, n + 64);
            ds_zero_touch(b, n);
            size_t first_nonzero = n;
            for (size_t i = 0; i < n && first_nonzero == n; i++)
                if (b[i]) first_nonzero = i;
            CU_ASSERT_EQUAL(first_nonzero, n);
            size_t past = 0;
            for (size_t i = n; i < n + 64; i++) past += b[i] == 0xa5;
            CU_ASSERT_EQUAL(past, 64); /* nothing past n */
        }
        free(b);
    }
    omp_set_num_threads(1);
}

static void test_scale_add(void) {
    for (size_t s = 0; s < NLENS; s++) {
        size_t n = g_lens[s];
        float *x = rnd(n, 10.0f), *y = rnd(n, 10.0f);
        float *wx = dup(x, n), *wy = dup(y, n);
        ds_scale_ref(wx, n, 0.3f);
        ds_add_ref(wy, x, n);
        for (size_t i = 0; i < n; i++) {
            CU_ASSERT_EQUAL(wx[i], x[i] * 0.3f);
            CU_ASSERT_EQUAL(wy[i], y[i] + x[i]);
        }
        for (size_t t = 0; t < NTHREADS; t++) {
            omp_set_num_threads(g_threads[t]);
            float *gx = dup(x, n), *gy = dup(y, n);
            ds_scale(gx, n, 0.3f);
            ds_add(gy, x, n);
            CU_ASSERT(same("scale", gx, wx, n));
            CU_ASSERT(same("add", gy, wy, n));
            free(gx), free(gy);
        }
        free(x), free(y), free(wx), free(wy);
    }
    omp_set_num_threads(1);
}

static void test_sumsq(void) {
    size_t n = 300007;
    float *g = rnd(n, 1.0f);
    g[0] = 1e-30f, g[1] = 3e18f, g[2] = -0.0f, g[3] = 1.4e-45f; /* tiny, huge, zero, subnormal */
    static ds_u128 want[DS_SUMSQ_BUCKETS], got[DS_SUMSQ_BUCKETS], parts[DS_SUMSQ_BUCKETS];
    memset(want, 0, sizeof want);
    ds_sumsq_exact_ref(g, n, want);
    long double ld = 0;
    for (size_t i = 0; i < n; i++) ld += (long double)g[i] * g[i];
    double v = ds_sumsq_value(want);
    CU_ASSERT(fabsl((long double)v - ld) <= 1e-12L * ld);
    for (size_t t = 0; t < NTHREADS; t++) {
        omp_set_num_threads(g_threads[t]);
        memset(got, 0, sizeof got);
        ds_sumsq_exact(g, n, got);
        CU_ASSERT(memcmp(got, want, sizeof got) == 0);
    }
    /* Any partition, in any order, gives the same buckets. */
    memset(parts, 0, sizeof parts);
    size_t cuts[] = {0, 5, 4096, 77777, 200000, n};
    for (int k = 4; k >= 0; k--) ds_sumsq_exact(g + cuts[k], cuts[k + 1] - cuts[k], parts);
    CU_ASSERT(memcmp(parts, want, sizeof parts) == 0);
    CU_ASSERT_EQUAL(ds_sumsq_value(parts), v);
    /* Small exact cases. */
    memset(got, 0, sizeof got);
    float small[3] = {3.0f, 4.0f, 0.5f};
    ds_sumsq_exact(small, 3, got);
    CU_ASSERT_EQUAL(ds_sumsq_value(got), 25.25);
    memset(got, 0, sizeof got);
    ds_sumsq_exact(small, 0, got);
    CU_ASSERT_EQUAL(ds_sumsq_value(got), 0.0);
    omp_set_num_threads(1);
    free(g);
}

static void test_inf_nan(void) {
    for (size_t s = 0; s < NLENS; s++) {
        size_t n = g_lens[s];
        float *g = rnd(n, 1e30f);
        for (size_t t = 0; t < NTHREADS; t++) {
            omp_set_num_threads(g_threads[t]);
            CU_ASSERT_FALSE(ds_has_inf_nan(g, n));
            CU_ASSERT_FALSE(ds_has_inf_nan_ref(g, n));
            if (!n) continue;
            const float bad[] = {INFINITY, -INFINITY, NAN};
            const size_t at[] = {0, n / 2, n - 1};
            for (int b = 0; b < 3; b++)
                for (int a = 0; a < 3; a++) {
                    float save = g[at[a]];
                    g[at[a]] = bad[b];
                    CU_ASSERT_TRUE(ds_has_inf_nan(g, n));
                    CU_ASSERT_TRUE(ds_has_inf_nan_ref(g, n));
                    g[at[a]] = save;
                }
        }
        free(g);
    }
    omp_set_num_threads(1);
}

static void test_round_f16(void) {
    for (size_t s = 0; s < NLENS; s++) {
        size_t n = g_lens[s];
        float *g = rnd(n, 1e5f);
        if (n > 4) g[0] = 65519.0f, g[1] = 65520.0f, g[2] = 1e-8f, g[3] = NAN;
        float *want = dup(g, n);
        ds_round_f16_ref(want, n);
        if (n > 4) {
            CU_ASSERT_EQUAL(want[0], 65504.0f);
            CU_ASSERT(isinf(want[1]));
            CU_ASSERT_EQUAL(want[2], 0x1p-24f * roundf(1e-8f / 0x1p-24f));
            CU_ASSERT(isnan(want[3]));
        }
        for (size_t t = 0; t < NTHREADS; t++) {
            omp_set_num_threads(g_threads[t]);
            float *got = dup(g, n);
            ds_round_f16(got, n);
            CU_ASSERT(same("round_f16", got, want, n));
            free(got);
        }
        free(g), free(want);
    }
    omp_set_num_threads(1);
}

int main(void) {
    static const tu_test tests[] = {
        {"gemm and gemm_bt vs reference (edge tiles, K slices, A transposed)", test_gemm},
        {"bias rows and bias gradient vs reference", test_bias},
        {"LayerNorm forward/backward vs reference (and double, finite differences)", test_layernorm},
        {"k_expf vs double on sampled floats, special values", test_expf},
        {"GELU forward/backward vs reference (and double)", test_gelu},
        {"causal attention forward/backward vs reference (and double, finite differences; the GEMM form within rounding)", test_attention},
        {"embedding forward/backward vs reference (repeated tokens)", test_embed},
        {"softmax cross-entropy vs reference (and double)", test_crossent},
        {"Adam/AdamW element kernel vs reference (and double)", test_adam_kernel},
        {"rt_adam_step vs rt_adam_step_ref, first step, refusals", test_rt_adam_step},
        {"scale and add vs reference", test_scale_add},
        {"zero_touch: exactly n bytes, one thread and several", test_zero_touch},
        {"exact sum of squares: threads, partitions, order", test_sumsq},
        {"inf/NaN check at every position", test_inf_nan},
        {"fp16 rounding vs reference (overflow, subnormal, NaN)", test_round_f16},
        {NULL, NULL},
    };
    return tu_main("kernels", tests);
}
