/*
 * test_rt_model.c — the runtime's GPT-2 model (runtime/model.c) against an
 * independent float64 reference written here: the loss, every gradient element of a
 * tiny model by central finite differences, directional derivatives on a model large
 * enough to cross every tile and panel edge of the matrix kernels; bitwise
 * independence of the OpenMP thread count; the parameter-hook protocol; exact
 * power-of-two gradient scaling; loss falling under Adam; bad inputs.
 */
#include "model.h"
#include "tutil.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- helpers ---- */

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

static double rng_normal(uint64_t *s) {
    double u1 = rng_uniform(s) + 0x1.0p-54, u2 = rng_uniform(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Parameters with magnitudes that exercise every nonlinearity (not GPT-2's tiny
 * init): weights N(0, 0.3), biases N(0, 0.1), LayerNorm weights 1 + N(0, 0.2). */
static float *random_params(const rt_model *m, uint64_t seed) {
    size_t np;
    const rt_param *ps = rt_model_params(m, &np);
    float *p = malloc(rt_model_numel(m) * sizeof(float));
    uint64_t s = seed;
    for (size_t k = 0; k < np; k++) {
        bool bias = strstr(ps[k].name, ".bias") != NULL, ln = strstr(ps[k].name, ".ln_") != NULL;
        for (uint64_t i = 0; i < ps[k].numel; i++) {
            double z = rng_normal(&s);
            p[ps[k].offset + i] = (float)(bias ? 0.1 * z : ln ? 1.0 + 0.2 * z : 0.3 * z);
        }
    }
    return p;
}

static int32_t *random_tokens(int V, int B, int T, uint64_t seed) {
    int32_t *t = malloc(sizeof(int32_t) * (size_t)B * (size_t)(T + 1));
    uint64_t s = seed;
    for (int i = 0; i < B * (T + 1); i++) t[i] = (int32_t)(rng_next(&s) % (uint64_t)V);
    return t;
}

/* ---- float64 reference, written independently of model.c ---- */

typedef struct ref_layout {
    size_t wte, wpe, blk0, blk_size, lnf, total;
    size_t off[12]; /* within a block: ln1 w/b, attn w/b, proj w/b, ln2 w/b, fc w/b, fcproj w/b */
} ref_layout;

static ref_layout ref_layout_of(const rt_model_cfg *c) {
    size_t V = (size_t)c->vocab_size, C = (size_t)c->n_embd, P = (size_t)c->n_ctx;
    size_t sizes[12] = {C, C, C * 3 * C, 3 * C, C * C, C, C, C, C * 4 * C, 4 * C, 4 * C * C, C};
    ref_layout r;
    r.wte = 0;
    r.wpe = V * C;
    r.blk0 = r.wpe + P * C;
    size_t o = 0;
    for (int i = 0; i < 12; i++) {
        r.off[i] = o;
        o += sizes[i];
    }
    r.blk_size = o;
    r.lnf = r.blk0 + (size_t)c->n_layer * o;
    r.total = r.lnf + 2 * C;
    return r;
}

static void ref_layernorm(int T, int C, const double *x, const double *w, const double *b, double *out) {
    for (int t = 0; t < T; t++) {
        const double *xr = x + (size_t)t * C;
        double mu = 0, var = 0;
        for (int c = 0; c < C; c++) mu += xr[c];
        mu /= C;
        for (int c = 0; c < C; c++) var += (xr[c] - mu) * (xr[c] - mu);
        var /= C;
        double rs = 1.0 / sqrt(var + 1e-5);
        for (int c = 0; c < C; c++) out[(size_t)t * C + c] = (xr[c] - mu) * rs * w[c] + b[c];
    }
}

/* out[T, O] = in[T, I]·W[I, O] + b */
static void ref_linear(int T, int I, int O, const double *in, const double *W, const double *b, double *out) {
    for (int t = 0; t < T; t++) {
        double *o = out + (size_t)t * O;
        for (int j = 0; j < O; j++) o[j] = b[j];
        for (int k = 0; k < I; k++) {
            double a = in[(size_t)t * I + k];
            const double *wr = W + (size_t)k * O;
            for (int j = 0; j < O; j++) o[j] += a * wr[j];
        }
    }
}

static double ref_loss(const rt_model_cfg *cfg, const double *P, const int32_t *tokens, int B, int T) {
    int V = cfg->vocab_size, C = cfg->n_embd, NH = cfg->n_head, hs = C / NH;
    ref_layout lay = ref_layout_of(cfg);
    double *x = malloc(sizeof(double) * (size_t)T * C), *ln = malloc(sizeof(double) * (size_t)T * C);
    double *qkv = malloc(sizeof(double) * (size_t)T * 3 * C), *y = malloc(sizeof(double) * (size_t)T * C);
    double *hbuf = malloc(sizeof(double) * (size_t)T * 4 * C), *tmp = malloc(sizeof(double) * (size_t)T * C);
    double *sc = malloc(sizeof(double) * (size_t)T), *logit = malloc(sizeof(double) * (size_t)V);
    double total = 0;
    for (int b = 0; b < B; b++) {
        const int32_t *row = tokens + (size_t)b * (T + 1);
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++)
                x[(size_t)t * C + c] = P[lay.wte + (size_t)row[t] * C + c] + P[lay.wpe + (size_t)t * C + c];
        for (int l = 0; l < cfg->n_layer; l++) {
            const double *w = P + lay.blk0 + (size_t)l * lay.blk_size;
            ref_layernorm(T, C, x, w + lay.off[0], w + lay.off[1], ln);
            ref_linear(T, C, 3 * C, ln, w + lay.off[2], w + lay.off[3], qkv);
            for (int h = 0; h < NH; h++)
                for (int t = 0; t < T; t++) {
                    const double *q = qkv + (size_t)t * 3 * C + h * hs;
                    double mx = -INFINITY;
                    for (int u = 0; u <= t; u++) {
                        const double *k = qkv + (size_t)u * 3 * C + C + h * hs;
                        double s = 0;
                        for (int i = 0; i < hs; i++) s += q[i] * k[i];
                        sc[u] = s / sqrt((double)hs);
                        if (sc[u] > mx) mx = sc[u];
                    }
                    double z = 0;
                    for (int u = 0; u <= t; u++) z += (sc[u] = exp(sc[u] - mx));
                    for (int i = 0; i < hs; i++) {
                        double acc = 0;
                        for (int u = 0; u <= t; u++) acc += sc[u] / z * qkv[(size_t)u * 3 * C + 2 * C + h * hs + i];
                        y[(size_t)t * C + h * hs + i] = acc;
                    }
                }
            ref_linear(T, C, C, y, w + lay.off[4], w + lay.off[5], tmp);
            for (size_t i = 0; i < (size_t)T * C; i++) x[i] += tmp[i];
            ref_layernorm(T, C, x, w + lay.off[6], w + lay.off[7], ln);
            ref_linear(T, C, 4 * C, ln, w + lay.off[8], w + lay.off[9], hbuf);
            for (size_t i = 0; i < (size_t)T * 4 * C; i++) {
                double v = hbuf[i];
                hbuf[i] = 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
            }
            ref_linear(T, 4 * C, C, hbuf, w + lay.off[10], w + lay.off[11], tmp);
            for (size_t i = 0; i < (size_t)T * C; i++) x[i] += tmp[i];
        }
        ref_layernorm(T, C, x, P + lay.lnf, P + lay.lnf + C, ln);
        for (int t = 0; t < T; t++) {
            double mx = -INFINITY;
            for (int v = 0; v < V; v++) {
                double s = 0;
                for (int c = 0; c < C; c++) s += ln[(size_t)t * C + c] * P[lay.wte + (size_t)v * C + c];
                logit[v] = s;
                if (s > mx) mx = s;
            }
            double z = 0;
            for (int v = 0; v < V; v++) z += exp(logit[v] - mx);
            total += log(z) + mx - logit[row[t + 1]];
        }
    }
    free(x), free(ln), free(qkv), free(y), free(hbuf), free(tmp), free(sc), free(logit);
    return total / ((double)B * T);
}

static double *to_double(const float *p, uint64_t n) {
    double *d = malloc(sizeof(double) * n);
    for (uint64_t i = 0; i < n; i++) d[i] = p[i];
    return d;
}

/* One forward_backward with dense hooks into freshly zeroed grads. */
static float run_fb(rt_model *m, const float *params, float *grads, const int32_t *tok, int B, int T, float scale) {
    rt_param_hooks h;
    rt_dense_ctx ctx;
    rt_dense_hooks(&h, &ctx, m, params, grads);
    memset(grads, 0, rt_model_numel(m) * sizeof(float));
    float loss = NAN;
    TU_ASSERT_OK(rt_model_forward_backward(m, &h, tok, B, T, scale, &loss));
    return loss;
}

static const rt_model_cfg TINY = {.vocab_size = 13, .n_ctx = 8, .n_layer = 2, .n_head = 2, .n_embd = 8};
enum { TINY_B = 3, TINY_T = 6 };
/* Crosses every kernel edge: B*T = 291 > KC = 256, 4C = 272 > KC, V = 261 > the
 * transpose panel (256), C = 68 is not a multiple of the 8-wide tiles, head size 17. */
static const rt_model_cfg MEDIUM = {.vocab_size = 261, .n_ctx = 100, .n_layer = 1, .n_head = 4, .n_embd = 68};
enum { MED_B = 3, MED_T = 97 };

/* ---- tests ---- */

static void test_param_table(void) {
    rt_model *m;
    TU_ASSERT_OK(rt_model_create(&TINY, 1, 8, &m));
    size_t n;
    const rt_param *ps = rt_model_params(m, &n);
    CU_ASSERT_EQUAL(n, 2 + 12 * 2 + 2);
    CU_ASSERT_STRING_EQUAL(ps[0].name, "transformer.wte.weight");
    CU_ASSERT_EQUAL(ps[0].shape[0], 13);
    CU_ASSERT_EQUAL(ps[0].shape[1], 8);
    CU_ASSERT_STRING_EQUAL(ps[1].name, "transformer.wpe.weight");
    CU_ASSERT_EQUAL(ps[1].shape[0], 8);
    CU_ASSERT_STRING_EQUAL(ps[2].name, "transformer.h.0.ln_1.weight");
    CU_ASSERT_STRING_EQUAL(ps[4].name, "transformer.h.0.attn.c_attn.weight");
    CU_ASSERT_EQUAL(ps[4].shape[0], 8);
    CU_ASSERT_EQUAL(ps[4].shape[1], 24);
    CU_ASSERT_STRING_EQUAL(ps[12].name, "transformer.h.0.mlp.c_proj.weight");
    CU_ASSERT_EQUAL(ps[12].shape[0], 32);
    CU_ASSERT_EQUAL(ps[12].shape[1], 8);
    CU_ASSERT_STRING_EQUAL(ps[25].name, "transformer.h.1.mlp.c_proj.bias");
    CU_ASSERT_EQUAL(ps[25].ndim, 1);
    CU_ASSERT_STRING_EQUAL(ps[27].name, "transformer.ln_f.bias");
    CU_ASSERT_EQUAL(ps[27].module, 3);
    /* Contiguous, in order, and each module a contiguous run matching module_range. */
    ref_layout lay = ref_layout_of(&TINY);
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(ps[i].offset, off);
        CU_ASSERT_EQUAL(ps[i].numel, ps[i].ndim == 2 ? (uint64_t)(ps[i].shape[0] * ps[i].shape[1])
                                                      : (uint64_t)ps[i].shape[0]);
        off += ps[i].numel;
    }
    CU_ASSERT_EQUAL(off, rt_model_numel(m));
    CU_ASSERT_EQUAL(off, lay.total);
    CU_ASSERT_EQUAL(rt_model_nmodules(m), 4);
    uint64_t s, c, next = 0;
    for (int mod = 0; mod < 4; mod++) {
        rt_model_module_range(m, mod, &s, &c);
        CU_ASSERT_EQUAL(s, next);
        uint64_t sum = 0;
        for (size_t i = 0; i < n; i++)
            if (ps[i].module == mod) {
                CU_ASSERT(ps[i].offset >= s && ps[i].offset + ps[i].numel <= s + c);
                sum += ps[i].numel;
            }
        CU_ASSERT_EQUAL(sum, c);
        next = s + c;
    }
    rt_model_module_range(m, 4, &s, &c);
    CU_ASSERT_EQUAL(s, 0);
    CU_ASSERT_EQUAL(c, 0);
    rt_model_module_range(m, -1, &s, &c);
    CU_ASSERT_EQUAL(c, 0);
    /* The workspace holds at least the activations documented in model.h. */
    size_t N = 8, C = 8, L = 2, V = 13, NH = 2;
    CU_ASSERT(rt_model_workspace_bytes(m) >= 4 * (N * (16 * C * L + V + 8 * C) + NH * N * N * L));
    rt_model_free(m);
    rt_model_free(NULL);

    /* GPT-2 small has 124,439,808 parameters (wte tied, no lm_head). */
    rt_model_cfg g2 = {.vocab_size = 50257, .n_ctx = 1024, .n_layer = 12, .n_head = 12, .n_embd = 768};
    TU_ASSERT_OK(rt_model_create(&g2, 1, 1, &m));
    CU_ASSERT_EQUAL(rt_model_numel(m), 124439808ull);
    ps = rt_model_params(m, &n);
    CU_ASSERT_EQUAL(n, 148);
    CU_ASSERT_STRING_EQUAL(ps[n - 3].name, "transformer.h.11.mlp.c_proj.bias");
    CU_ASSERT_STRING_EQUAL(RT_MODEL_LM_HEAD_ALIAS, "lm_head.weight");
    CU_ASSERT_STRING_EQUAL(RT_MODEL_LM_HEAD_TARGET, ps[0].name);
    rt_model_free(m);
}

static void test_init(void) {
    rt_model_cfg cfg = {.vocab_size = 512, .n_ctx = 64, .n_layer = 3, .n_head = 2, .n_embd = 64};
    rt_model *m;
    TU_ASSERT_OK(rt_model_create(&cfg, 1, 1, &m));
    uint64_t n = rt_model_numel(m);
    float *a = malloc(n * 4), *b = malloc(n * 4), *c = malloc(n * 4);
    omp_set_num_threads(1);
    TU_ASSERT_OK(rt_model_init(&cfg, a, 42));
    omp_set_num_threads(2);
    TU_ASSERT_OK(rt_model_init(&cfg, b, 42));
    TU_ASSERT_OK(rt_model_init(&cfg, c, 43));
    CU_ASSERT_EQUAL(memcmp(a, b, n * 4), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(a, c, n * 4), 0);
    size_t np;
    const rt_param *ps = rt_model_params(m, &np);
    for (size_t k = 0; k < np; k++) {
        const float *v = a + ps[k].offset;
        double s = 0, s2 = 0;
        for (uint64_t i = 0; i < ps[k].numel; i++) s += v[i], s2 += (double)v[i] * v[i];
        double mean = s / (double)ps[k].numel, sd = sqrt(s2 / (double)ps[k].numel - mean * mean);
        const char *nm = ps[k].name;
        if (strstr(nm, ".bias")) {
            CU_ASSERT(s2 == 0.0);
        } else if (strstr(nm, ".ln_")) {
            CU_ASSERT(mean == 1.0 && sd == 0.0);
        } else {
            double want = strstr(nm, "c_proj") ? 0.02 / sqrt(6.0) : 0.02;
            /* >= 4096 samples each: the sample sd is within 5% with overwhelming odds. */
            CU_ASSERT(fabs(sd / want - 1.0) < 0.05);
            CU_ASSERT(fabs(mean) < 4 * want / sqrt((double)ps[k].numel) + 1e-6);
            /* Flat samples 2j and 2j + 1 are the two branches of one Box-Muller
             * pair: uncorrelated (|r| ~ 1/sqrt(n/2)), never the same value twice.
             * u: the tensor's first element at an even flat index. */
            const float *u = v + (ps[k].offset & 1);
            double cov = 0;
            uint64_t same = 0, pairs = (ps[k].numel - (ps[k].offset & 1)) / 2;
            for (uint64_t j = 0; j < pairs; j++) {
                cov += (double)u[2 * j] * u[2 * j + 1];
                same += u[2 * j] == u[2 * j + 1];
            }
            CU_ASSERT(fabs(cov / (double)pairs / (sd * sd)) < 5.0 / sqrt((double)pairs));
            CU_ASSERT_EQUAL(same, 0);
        }
    }
    /* Any slice drawn alone (a rank's share: across parameter boundaries, inside
     * one, empty, the whole) is that slice of the whole. */
    uint64_t cuts[][2] = {{0, n}, {0, 1}, {n - 1, 1}, {ps[1].offset - 7, 20}, {n / 3, n / 3}, {5, 0},
                          {ps[np - 1].offset, ps[np - 1].numel}};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        memset(c, 0xff, n * 4);
        TU_ASSERT_OK(rt_model_init_range(&cfg, 42, cuts[k][0], cuts[k][1], c));
        CU_ASSERT_EQUAL(memcmp(c, a + cuts[k][0], cuts[k][1] * 4), 0);
        if (cuts[k][1] < n) CU_ASSERT_EQUAL(((uint8_t *)c)[cuts[k][1] * 4], 0xff); /* nothing past it */
    }
    CU_ASSERT_EQUAL(rt_model_init_range(&cfg, 42, n - 1, 2, c), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(rt_model_init_range(&cfg, 42, n + 1, 0, c), DSCKPT_EINVAL);
    rt_model_cfg bad = cfg;
    bad.n_head = 3;
    CU_ASSERT_EQUAL(rt_model_init(&bad, a, 1), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(rt_model_init_range(&bad, 1, 0, 1, a), DSCKPT_EINVAL);
    free(a), free(b), free(c);
    rt_model_free(m);
}

static void check_loss_vs_reference(const rt_model_cfg *cfg, int B, int T, uint64_t seed) {
    rt_model *m;
    TU_ASSERT_OK(rt_model_create(cfg, B, T, &m));
    float *p = random_params(m, seed);
    int32_t *tok = random_tokens(cfg->vocab_size, B, T, seed + 1);
    double *pd = to_double(p, rt_model_numel(m));
    double ref = ref_loss(cfg, pd, tok, B, T);
    float *g = malloc(rt_model_numel(m) * 4);
    float lfb = run_fb(m, p, g, tok, B, T, 1.0f);
    rt_param_hooks h;
    rt_dense_ctx ctx;
    rt_dense_hooks(&h, &ctx, m, p, NULL);
    float lf = NAN;
    TU_ASSERT_OK(rt_model_forward(m, &h, tok, B, T, &lf));
    double rel = fabs(lf - ref) / fabs(ref);
    if (!(rel < 1e-5)) fprintf(stderr, "\n  loss %.9g vs reference %.12g (rel %.3g)\n", lf, ref, rel);
    CU_ASSERT(rel < 1e-5);
    CU_ASSERT(lf == lfb); /* eval and training forward are the same computation */
    /* Sanity: random parameters give a loss far from both 0 and ln(V). */
    CU_ASSERT(ref > 0.1);
    /* A shorter batch (B-1 rows, T-1 positions) in the same workspace. */
    if (B > 1 && T > 1) {
        int32_t *t2 = random_tokens(cfg->vocab_size, B - 1, T - 1, seed + 2);
        double r2 = ref_loss(cfg, pd, t2, B - 1, T - 1);
        TU_ASSERT_OK(rt_model_forward(m, &h, t2, B - 1, T - 1, &lf));
        CU_ASSERT(fabs(lf - r2) / fabs(r2) < 1e-5);
        free(t2);
    }
    free(g), free(pd), free(tok), free(p);
    rt_model_free(m);
}

static void test_forward_matches_reference(void) {
    check_loss_vs_reference(&TINY, TINY_B, TINY_T, 7);
    check_loss_vs_reference(&MEDIUM, MED_B, MED_T, 8);
}

/*
 * Every parameter element of the tiny model: the fp32 analytic gradient against a
 * central difference of the float64 reference loss, h = 1e-5. The difference's own
 * error is ~1e-10; the budget |a - n| <= 2e-6 + 1e-4 |n| is for fp32 rounding in the
 * model. wte gets both its uses (lookup and tied head), wpe its rows 0..T-1 and zero
 * for the rows past T.
 */
static void test_gradients_every_element(void) {
    rt_model *m;
    TU_ASSERT_OK(rt_model_create(&TINY, TINY_B, TINY_T, &m));
    uint64_t n = rt_model_numel(m);
    float *p = random_params(m, 11);
    int32_t *tok = random_tokens(TINY.vocab_size, TINY_B, TINY_T, 12);
    float *g = malloc(n * 4);
    run_fb(m, p, g, tok, TINY_B, TINY_T, 1.0f);
    double *pd = to_double(p, n);
    size_t np;
    const rt_param *ps = rt_model_params(m, &np);
    const double h = 1e-5;
    int bad = 0;
    double worst = 0;
    for (size_t k = 0; k < np; k++) {
        double gmax = 0;
        for (uint64_t i = 0; i < ps[k].numel; i++) {
            uint64_t e = ps[k].offset + i;
            double save = pd[e];
            pd[e] = save + h;
            double lp = ref_loss(&TINY, pd, tok, TINY_B, TINY_T);
            pd[e] = save - h;
            double lm = ref_loss(&TINY, pd, tok, TINY_B, TINY_T);
            pd[e] = save;
            double num = (lp - lm) / (2 * h), an = g[e];
            double err = fabs(an - num), tol = 2e-6 + 1e-4 * fabs(num);
            if (err / tol > worst) worst = err / tol;
            if (err > tol && bad++ < 10)
                fprintf(stderr, "\n  %s[%llu]: analytic %.9g numeric %.9g", ps[k].name, (unsigned long long)i, an,
                        num);
            if (fabs(num) > gmax) gmax = fabs(num);
        }
        /* Every tensor takes part in the loss (wpe and the biases included). */
        CU_ASSERT(gmax > 1e-4);
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(worst <= 1.0);
    free(pd), free(g), free(tok), free(p);
    rt_model_free(m);
}

/* Directional derivative of the reference loss along d (unit norm), central, eps 1e-4. */
static double ref_dir(const rt_model_cfg *cfg, double *pd, uint64_t off, uint64_t cnt, const double *d,
                      const int32_t *tok, int B, int T) {
    const double eps = 1e-4;
    double *save = malloc(sizeof(double) * cnt);
    memcpy(save, pd + off, sizeof(double) * cnt);
    for (uint64_t i = 0; i < cnt; i++) pd[off + i] = save[i] + eps * d[i];
    double lp = ref_loss(cfg, pd, tok, B, T);
    for (uint64_t i = 0; i < cnt; i++) pd[off + i] = save[i] - eps * d[i];
    double lm = ref_loss(cfg, pd, tok, B, T);
    memcpy(pd + off, save, sizeof(double) * cnt);
    free(save);
    return (lp - lm) / (2 * eps);
}

/*
 * The medium model (every tile, K-slice and panel edge of the kernels): for each
 * tensor, the analytic gradient g must predict the reference loss's directional
 * derivative along (1) g/|g| — which must equal |g| — (2) a random unit direction and
 * (3) the axis of g's largest element; each within 2e-5 |g| + 1e-7 (the errors seen
 * are ~2e-7 |g|; a gradient row left out shows in (2) at ~1e-3 |g|).
 */
static void test_gradients_tiled(void) {
    rt_model *m;
    TU_ASSERT_OK(rt_model_create(&MEDIUM, MED_B, MED_T, &m));
    uint64_t n = rt_model_numel(m);
    float *p = random_params(m, 21);
    /* Smaller weights keep this deeper-in-width model out of saturation. */
    for (uint64_t i = 0; i < n; i++) p[i] *= 0.5f;
    int32_t *tok = random_tokens(MEDIUM.vocab_size, MED_B, MED_T, 22);
    float *g = malloc(n * 4);
    run_fb(m, p, g, tok, MED_B, MED_T, 1.0f);
    double *pd = to_double(p, n);
    size_t np;
    const rt_param *ps = rt_model_params(m, &np);
    uint64_t s = 23;
    for (size_t k = 0; k < np; k++) {
        uint64_t off = ps[k].offset, cnt = ps[k].numel, imax = 0;
        double gn = 0;
        for (uint64_t i = 0; i < cnt; i++) {
            gn += (double)g[off + i] * g[off + i];
            if (fabs(g[off + i]) > fabs(g[off + imax])) imax = i;
        }
        gn = sqrt(gn);
        CU_ASSERT(gn > 1e-4);
        double *d = calloc(cnt, sizeof(double));
        double tol = 2e-5 * gn + 1e-7;
        for (int dir = 0; dir < 3; dir++) {
            double dn = 0;
            for (uint64_t i = 0; i < cnt; i++) {
                d[i] = dir == 0 ? g[off + i] : dir == 1 ? rng_normal(&s) : (i == imax);
                dn += d[i] * d[i];
            }
            dn = sqrt(dn);
            double an = 0;
            for (uint64_t i = 0; i < cnt; i++) {
                d[i] /= dn;
                an += d[i] * g[off + i];
            }
            double num = ref_dir(&MEDIUM, pd, off, cnt, d, tok, MED_B, MED_T);
            if (!(fabs(an - num) <= tol))
                fprintf(stderr, "\n  %s dir %d: analytic %.9g numeric %.9g (|g| %.3g)", ps[k].name, dir, an, num,
                        gn);
            CU_ASSERT(fabs(an - num) <= tol);
        }
        free(d);
    }
    free(pd), free(g), free(tok), free(p);
    rt_model_free(m);
}

static void test_thread_count_independence(void) {
    rt_model *m;
    TU_ASSERT_OK(rt_model_create(&MEDIUM, MED_B, MED_T, &m));
    uint64_t n = rt_model_numel(m);
    float *p = random_params(m, 31);
    int32_t *tok = random_tokens(MEDIUM.vocab_size, MED_B, MED_T, 32);
    float *g1 = malloc(n * 4), *gk = malloc(n * 4);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    float l1 = run_fb(m, p, g1, tok, MED_B, MED_T, 1.0f);
    for (int th = 2; th <= 3; th++) {
        omp_set_num_threads(th);
        float lk = run_fb(m, p, gk, tok, MED_B, MED_T, 1.0f);
        CU_ASSERT_EQUAL(memcmp(&l1, &lk, sizeof l1), 0);
        CU_ASSERT_EQUAL(memcmp(g1, gk, n * 4), 0);
        /* A batch shape that splits unevenly over the threads. */
        omp_set_num_threads(1);
        float a = run_fb(m, p, g1, tok, 2, 31, 1.0f);
        omp_set_num_threads(th);
        float b = run_fb(m, p, gk, tok, 2, 31, 1.0f);
        CU_ASSERT_EQUAL(memcmp(&a, &b, sizeof a), 0);
        CU_ASSERT_EQUAL(memcmp(g1, gk, n * 4), 0);
        omp_set_num_threads(1);
        l1 = run_fb(m, p, g1, tok, MED_B, MED_T, 1.0f);
    }
    omp_set_num_threads(saved);
    free(g1), free(gk), free(tok), free(p);
    rt_model_free(m);
}

/* ---- a recording hooks implementation ---- */

enum { REC_MAXMOD = 8, REC_GUARD = 64 };
#define REC_CANARY 12345.0f

typedef struct rec {
    const rt_model *m;
    const float *params;
    int nmod, fail_acquire; /* fail_acquire: the n-th acquire returns NULL (0 = never) */
    char log[2048];
    int nacq, nlive, max_live, violations;
    bool live[REC_MAXMOD];
    float *copy[REC_MAXMOD];
    float *dead[256];
    int ndead;
    float *gbuf[REC_MAXMOD]; /* REC_GUARD canaries on each side */
    float *gsnap[REC_MAXMOD];
    int gcalls[REC_MAXMOD], ready[REC_MAXMOD], order[REC_MAXMOD], nready;
} rec;

static void rec_log(rec *r, const char *ev, int mod) {
    size_t len = strlen(r->log);
    snprintf(r->log + len, sizeof r->log - len, "%s%d ", ev, mod);
}

static void rec_violation(rec *r, const char *what, int mod) {
    if (r->violations++ < 5) fprintf(stderr, "\n  hook protocol: %s (module %d)", what, mod);
}

static uint64_t rec_numel(rec *r, int mod, uint64_t *start) {
    uint64_t s, c;
    rt_model_module_range(r->m, mod, &s, &c);
    if (start) *start = s;
    return c;
}

static const float *rec_acquire(void *ctx, int mod) {
    rec *r = ctx;
    rec_log(r, "A", mod);
    if (mod < 0 || mod >= r->nmod) return rec_violation(r, "acquire out of range", mod), NULL;
    if (r->live[mod]) rec_violation(r, "acquire of a live module", mod);
    if (++r->nacq == r->fail_acquire) {
        ds_err(DSCKPT_EMPI, "simulated all-gather failure");
        return NULL;
    }
    uint64_t s, c = rec_numel(r, mod, &s);
    /* A fresh copy per acquire: poisoned at release, so a late read shows as NaN. */
    r->copy[mod] = malloc(c * sizeof(float));
    memcpy(r->copy[mod], r->params + s, c * sizeof(float));
    r->live[mod] = true;
    if (++r->nlive > r->max_live) r->max_live = r->nlive;
    return r->copy[mod];
}

static void rec_release(void *ctx, int mod) {
    rec *r = ctx;
    rec_log(r, "R", mod);
    if (mod < 0 || mod >= r->nmod || !r->live[mod]) {
        rec_violation(r, "release of a module not acquired", mod);
        return;
    }
    uint64_t c = rec_numel(r, mod, NULL);
    for (uint64_t i = 0; i < c; i++) r->copy[mod][i] = NAN;
    r->dead[r->ndead++] = r->copy[mod];
    r->copy[mod] = NULL;
    r->live[mod] = false;
    r->nlive--;
}

static float *rec_grad_buf(void *ctx, int mod) {
    rec *r = ctx;
    rec_log(r, "G", mod);
    if (mod < 0 || mod >= r->nmod) return rec_violation(r, "grad_buf out of range", mod), NULL;
    if (r->gcalls[mod]++) rec_violation(r, "grad_buf called twice", mod);
    if (r->ready[mod]) rec_violation(r, "grad_buf after grad_ready", mod);
    return r->gbuf[mod] + REC_GUARD;
}

static void rec_grad_ready(void *ctx, int mod) {
    rec *r = ctx;
    rec_log(r, "D", mod);
    if (mod < 0 || mod >= r->nmod) return rec_violation(r, "grad_ready out of range", mod);
    if (r->ready[mod]++) rec_violation(r, "grad_ready called twice", mod);
    if (!r->gcalls[mod]) rec_violation(r, "grad_ready without grad_buf", mod);
    if (r->live[mod]) rec_violation(r, "grad_ready while the module is acquired", mod);
    r->order[r->nready++] = mod;
    uint64_t c = rec_numel(r, mod, NULL);
    memcpy(r->gsnap[mod], r->gbuf[mod] + REC_GUARD, c * sizeof(float));
}

static void rec_init(rec *r, rt_param_hooks *h, const rt_model *m, const float *params) {
    memset(r, 0, sizeof *r);
    r->m = m;
    r->params = params;
    r->nmod = rt_model_nmodules(m);
    for (int mod = 0; mod < r->nmod; mod++) {
        uint64_t c = rec_numel(r, mod, NULL);
        r->gbuf[mod] = malloc((c + 2 * REC_GUARD) * sizeof(float));
        r->gsnap[mod] = malloc(c * sizeof(float));
        for (uint64_t i = 0; i < c + 2 * REC_GUARD; i++) r->gbuf[mod][i] = i < REC_GUARD || i >= c + REC_GUARD ? REC_CANARY : 0.0f;
    }
    h->ctx = r;
    h->acquire = rec_acquire;
    h->release = rec_release;
    h->grad_buf = rec_grad_buf;
    h->grad_ready = rec_grad_ready;
}

static void rec_free(rec *r) {
    for (int i = 0; i < r->ndead; i++) free(r->dead[i]);
    for (int mod = 0; mod < REC_MAXMOD; mod++) free(r->copy[mod]), free(r->gbuf[mod]), free(r->gsnap[mod]);
}

static void test_hook_protocol(void) {
    rt_model *m;
    TU_ASSERT_OK(rt_model_create(&TINY, TINY_B, TINY_T, &m));
    uint64_t n = rt_model_numel(m);
    int L = TINY.n_layer, nmod = rt_model_nmodules(m);
    float *p = random_params(m, 41);
    int32_t *tok = random_tokens(TINY.vocab_size, TINY_B, TINY_T, 42);
    float *dense = malloc(n * 4);
    float ldense = run_fb(m, p, dense, tok, TINY_B, TINY_T, 1.0f);

    rec r;
    rt_param_hooks h;
    rec_init(&r, &h, m, p);
    float loss = NAN;
    TU_ASSERT_OK(rt_model_forward_backward(m, &h, tok, TINY_B, TINY_T, 1.0f, &loss));
    /* The sequence documented in model.h, for L = 2. */
    CU_ASSERT_STRING_EQUAL(r.log, "A0 R0 A1 R1 A2 R2 A3 A0 G0 R0 G3 R3 D3 A2 G2 R2 D2 A1 G1 R1 D1 D0 ");
    CU_ASSERT_EQUAL(r.violations, 0);
    CU_ASSERT_EQUAL(r.nlive, 0);
    CU_ASSERT(r.max_live <= 2);
    CU_ASSERT_EQUAL(r.nready, nmod);
    for (int i = 0; i < r.nready; i++) CU_ASSERT_EQUAL(r.order[i], L + 1 - i);
    /* Same bits as the dense hooks; nothing written outside the buffers or after
     * grad_ready; no read of a released (NaN-poisoned) copy. */
    CU_ASSERT_EQUAL(memcmp(&loss, &ldense, sizeof loss), 0);
    for (int mod = 0; mod < nmod; mod++) {
        uint64_t s, c;
        rt_model_module_range(m, mod, &s, &c);
        CU_ASSERT_EQUAL(memcmp(r.gbuf[mod] + REC_GUARD, dense + s, c * 4), 0);
        CU_ASSERT_EQUAL(memcmp(r.gsnap[mod], dense + s, c * 4), 0);
        for (int i = 0; i < REC_GUARD; i++) {
            CU_ASSERT(r.gbuf[mod][i] == REC_CANARY);
            CU_ASSERT(r.gbuf[mod][REC_GUARD + c + (uint64_t)i] == REC_CANARY);
        }
    }
    rec_free(&r);

    /* Evaluation: one module at a time, no gradient hooks. */
    rec_init(&r, &h, m, p);
    h.grad_buf = NULL;
    h.grad_ready = NULL;
    TU_ASSERT_OK(rt_model_forward(m, &h, tok, TINY_B, TINY_T, &loss));
    CU_ASSERT_STRING_EQUAL(r.log, "A0 R0 A1 R1 A2 R2 A3 R3 A0 R0 ");
    CU_ASSERT_EQUAL(r.violations, 0);
    CU_ASSERT_EQUAL(r.max_live, 1);
    CU_ASSERT_EQUAL(memcmp(&loss, &ldense, sizeof loss), 0);
    rec_free(&r);

    /* A failing acquire — the 1st (embedding), the 5th (module 0 for the LM head,
     * while ln_f is held), the 6th and 7th (blocks in backward) — is an error naming
     * the module and carrying the hook's message, with nothing left acquired. */
    static const struct {
        int nth, module;
    } fails[] = {{1, 0}, {5, 0}, {6, 2}, {7, 1}};
    for (size_t f = 0; f < sizeof fails / sizeof fails[0]; f++) {
        rec_init(&r, &h, m, p);
        r.fail_acquire = fails[f].nth;
        dsckpt_status st = rt_model_forward_backward(m, &h, tok, TINY_B, TINY_T, 1.0f, &loss);
        CU_ASSERT_EQUAL(st, DSCKPT_EIO);
        char want[64];
        snprintf(want, sizeof want, "acquire(module %d)", fails[f].module);
        CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), want));
        CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "simulated all-gather failure"));
        CU_ASSERT_EQUAL(r.nlive, 0);
        CU_ASSERT_EQUAL(r.violations, 0);
        rec_free(&r);
    }
    free(dense), free(tok), free(p);
    rt_model_free(m);
}

/* grad_scale = 2^k scales every gradient bit-exactly; the loss is unscaled; a second
 * call adds into the buffers (to rounding: a module's gradient may reach the buffer in
 * several partial sums, e.g. the LM head and then each embedding row). */
static void test_grad_scale(void) {
    rt_model *m;
    TU_ASSERT_OK(rt_model_create(&TINY, TINY_B, TINY_T, &m));
    uint64_t n = rt_model_numel(m);
    float *p = random_params(m, 51);
    int32_t *tok = random_tokens(TINY.vocab_size, TINY_B, TINY_T, 52);
    float *g1 = malloc(n * 4), *gs = malloc(n * 4);
    float l1 = run_fb(m, p, g1, tok, TINY_B, TINY_T, 1.0f);
    static const float scales[] = {8.0f, 0.25f, 65536.0f};
    size_t nonzero = 0;
    for (size_t k = 0; k < sizeof scales / sizeof scales[0]; k++) {
        float ls = run_fb(m, p, gs, tok, TINY_B, TINY_T, scales[k]);
        CU_ASSERT_EQUAL(memcmp(&l1, &ls, sizeof l1), 0);
        size_t mismatch = 0;
        for (uint64_t i = 0; i < n; i++) {
            float want = g1[i] * scales[k];
            if (memcmp(&want, &gs[i], 4) != 0) mismatch++;
        }
        CU_ASSERT_EQUAL(mismatch, 0);
    }
    for (uint64_t i = 0; i < n; i++) nonzero += g1[i] != 0.0f;
    CU_ASSERT(nonzero > n * 9 / 10);
    /* Accumulation: the buffers end at 2g, to fp32 rounding — of the partial sums,
     * which may cancel (a wpe row sums the batch's rows): relative to |g| plus a
     * floor relative to the largest gradient. */
    rt_param_hooks h;
    rt_dense_ctx ctx;
    rt_dense_hooks(&h, &ctx, m, p, gs);
    memcpy(gs, g1, n * 4);
    TU_ASSERT_OK(rt_model_forward_backward(m, &h, tok, TINY_B, TINY_T, 1.0f, NULL));
    size_t mismatch = 0;
    float gmax = 0.0f;
    for (uint64_t i = 0; i < n; i++) gmax = fmaxf(gmax, fabsf(g1[i]));
    for (uint64_t i = 0; i < n; i++)
        mismatch += !(fabsf(gs[i] - 2.0f * g1[i]) <= 1e-6f * fabsf(g1[i]) + 1e-7f * gmax + 1e-12f);
    CU_ASSERT_EQUAL(mismatch, 0);
    free(g1), free(gs), free(tok), free(p);
    rt_model_free(m);
}

/* Adam (written here) on a repeated byte string: the loss starts at ~ln(256) and
 * falls well below 1. */
static void test_loss_falls(void) {
    rt_model_cfg cfg = {.vocab_size = 256, .n_ctx = 32, .n_layer = 2, .n_head = 4, .n_embd = 48};
    enum { B = 4, T = 32, STEPS = 100 };
    rt_model *m;
    TU_ASSERT_OK(rt_model_create(&cfg, B, T, &m));
    uint64_t n = rt_model_numel(m);
    float *p = malloc(n * 4), *g = malloc(n * 4), *m1 = calloc(n, 4), *m2 = calloc(n, 4);
    TU_ASSERT_OK(rt_model_init(&cfg, p, 1234));
    static const char text[] = "dsckpt trains a tiny gpt-2 on the cpu; ";
    int period = (int)strlen(text);
    int32_t tok[B * (T + 1)];
    rt_param_hooks h;
    rt_dense_ctx ctx;
    rt_dense_hooks(&h, &ctx, m, p, g);
    float first = 0, last = 0;
    const float lr = 3e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f;
    double t0 = now_s();
    for (int step = 1; step <= STEPS; step++) {
        for (int b = 0; b < B; b++) {
            int start = (step * 7 + b * 11) % period;
            for (int t = 0; t <= T; t++) tok[b * (T + 1) + t] = (uint8_t)text[(start + t) % period];
        }
        memset(g, 0, n * 4);
        float loss;
        TU_ASSERT_OK(rt_model_forward_backward(m, &h, tok, B, T, 1.0f, &loss));
        if (step == 1) first = loss;
        last = loss;
        float c1 = 1.0f - powf(b1, (float)step), c2 = 1.0f - powf(b2, (float)step);
        for (uint64_t i = 0; i < n; i++) {
            m1[i] = b1 * m1[i] + (1 - b1) * g[i];
            m2[i] = b2 * m2[i] + (1 - b2) * g[i] * g[i];
            p[i] -= lr * (m1[i] / c1) / (sqrtf(m2[i] / c2) + eps);
        }
    }
    double dt = now_s() - t0;
    CU_ASSERT(fabsf(first - logf(256.0f)) < 0.1f);
    if (!(last < 0.5f)) fprintf(stderr, "\n  loss %.4f -> %.4f after %d steps", first, last, STEPS);
    CU_ASSERT(last < 0.5f);
    fprintf(stderr, "[loss %.3f -> %.3f in %d steps, %.2fs] ", first, last, STEPS, dt);
    free(p), free(g), free(m1), free(m2);
    rt_model_free(m);
}

static void expect_einval(dsckpt_status st, const char *needle) {
    CU_ASSERT_EQUAL(st, DSCKPT_EINVAL);
    if (!strstr(dsckpt_last_error(), needle))
        fprintf(stderr, "\n  message \"%s\" lacks \"%s\"", dsckpt_last_error(), needle);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), needle));
}

static void test_bad_inputs(void) {
    rt_model *m = (rt_model *)&m; /* must be reset to NULL on failure */
    rt_model_cfg c = TINY;
    c.n_head = 3;
    expect_einval(rt_model_create(&c, 1, 4, &m), "n_head");
    CU_ASSERT_PTR_NULL(m);
    c = TINY, c.n_embd = 0;
    expect_einval(rt_model_create(&c, 1, 4, &m), "n_embd");
    c = TINY, c.vocab_size = -5;
    expect_einval(rt_model_create(&c, 1, 4, &m), "vocab_size");
    c = TINY, c.n_layer = 0;
    expect_einval(rt_model_create(&c, 1, 4, &m), "n_layer");
    c = TINY, c.n_ctx = 0;
    expect_einval(rt_model_create(&c, 1, 1, &m), "n_ctx");
    expect_einval(rt_model_create(&TINY, 1, TINY.n_ctx + 1, &m), "seq_len");
    expect_einval(rt_model_create(&TINY, 0, 4, &m), "max_batch");
    expect_einval(rt_model_create(NULL, 1, 4, &m), "NULL");
    /* Sizes whose products overflow: caught, not allocated. */
    c = (rt_model_cfg){.vocab_size = 2000000000, .n_ctx = 2000000000, .n_layer = 10000000, .n_head = 1,
                       .n_embd = 500000000};
    CU_ASSERT_EQUAL(rt_model_create(&c, 1, 1, &m), DSCKPT_EINVAL);
    CU_ASSERT(strlen(dsckpt_last_error()) > 0);
    c = (rt_model_cfg){.vocab_size = 16, .n_ctx = 2000000000, .n_layer = 1, .n_head = 1, .n_embd = 8};
    CU_ASSERT_EQUAL(rt_model_create(&c, 2000000000, 2000000000, &m), DSCKPT_EINVAL);

    TU_ASSERT_OK(rt_model_create(&TINY, TINY_B, TINY_T, &m));
    uint64_t n = rt_model_numel(m);
    float *p = random_params(m, 61), *g = calloc(n, 4);
    int32_t *tok = random_tokens(TINY.vocab_size, TINY_B, TINY_T, 62);
    rt_param_hooks h;
    rt_dense_ctx ctx;
    rt_dense_hooks(&h, &ctx, m, p, g);
    float loss = 0;
    int32_t saved = tok[1 * (TINY_T + 1) + 4];
    tok[1 * (TINY_T + 1) + 4] = TINY.vocab_size;
    expect_einval(rt_model_forward_backward(m, &h, tok, TINY_B, TINY_T, 1.0f, &loss), "row 1, column 4");
    expect_einval(rt_model_forward(m, &h, tok, TINY_B, TINY_T, &loss), "token 13");
    tok[1 * (TINY_T + 1) + 4] = -1;
    expect_einval(rt_model_forward(m, &h, tok, TINY_B, TINY_T, &loss), "token -1");
    tok[1 * (TINY_T + 1) + 4] = saved;
    /* The last target of the last row is checked too. */
    tok[TINY_B * (TINY_T + 1) - 1] = 99;
    expect_einval(rt_model_forward(m, &h, tok, TINY_B, TINY_T, &loss), "column 6");
    tok[TINY_B * (TINY_T + 1) - 1] = 0;
    expect_einval(rt_model_forward_backward(m, &h, tok, TINY_B + 1, TINY_T, 1.0f, &loss), "max_batch");
    expect_einval(rt_model_forward_backward(m, &h, tok, 0, TINY_T, 1.0f, &loss), "batch size");
    expect_einval(rt_model_forward_backward(m, &h, tok, TINY_B, TINY_T + 1, 1.0f, &loss), "seq_len");
    expect_einval(rt_model_forward(m, &h, tok, TINY_B, 0, &loss), "sequence length");
    expect_einval(rt_model_forward_backward(m, &h, tok, TINY_B, TINY_T, NAN, &loss), "grad_scale");
    expect_einval(rt_model_forward_backward(m, NULL, tok, TINY_B, TINY_T, 1.0f, &loss), "hooks");
    expect_einval(rt_model_forward(m, &h, NULL, TINY_B, TINY_T, &loss), "tokens");
    h.grad_ready = NULL;
    expect_einval(rt_model_forward_backward(m, &h, tok, TINY_B, TINY_T, 1.0f, &loss), "grad_ready");
    /* None of the failures touched the gradients. */
    size_t touched = 0;
    for (uint64_t i = 0; i < n; i++) touched += g[i] != 0.0f;
    CU_ASSERT_EQUAL(touched, 0);
    /* Dense hooks without a gradient array: a clean error, nothing held. */
    rt_dense_hooks(&h, &ctx, m, p, NULL);
    CU_ASSERT_EQUAL(rt_model_forward_backward(m, &h, tok, TINY_B, TINY_T, 1.0f, &loss), DSCKPT_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "without a gradient array"));
    TU_ASSERT_OK(rt_model_forward(m, &h, tok, TINY_B, TINY_T, &loss));
    CU_ASSERT(isfinite(loss));
    free(p), free(g), free(tok);
    rt_model_free(m);
}

int main(void) {
    static const tu_test tests[] = {
        {"param_table", test_param_table},
        {"init, and any slice of it drawn alone", test_init},
        {"forward_matches_reference", test_forward_matches_reference},
        {"gradients_every_element", test_gradients_every_element},
        {"gradients_tiled", test_gradients_tiled},
        {"thread_count_independence", test_thread_count_independence},
        {"hook_protocol", test_hook_protocol},
        {"grad_scale", test_grad_scale},
        {"loss_falls", test_loss_falls},
        {"bad_inputs", test_bad_inputs},
        {NULL, NULL},
    };
    return tu_main("rt_model", tests);
}
