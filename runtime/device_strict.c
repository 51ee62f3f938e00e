/*
 * device_strict.c — the "cpu-strict" device table (device.h): the CPU kernels over
 * "device" memory the host cannot touch. Every alloc is a mapping of its own, kept
 * PROT_NONE; an op makes every mapping readable and writable, runs the CPU table's
 * op, and closes them again. So a host access to device memory anywhere outside
 * the table's ops (the engine, the model, the checkpoint code, the collectives)
 * dies with SIGSEGV, and a run through this table that gives the CPU table's bits
 * shows that nothing but the table touched device memory, as a GPU build requires.
 *
 * Pointer kinds are checked too: h2d takes a host source and a device destination,
 * d2h the reverse, d2d / memzero / kernels device pointers only (a GPU would fault or
 * read garbage otherwise); a violation aborts with a message naming the op.
 * alloc_host is plain host memory.
 */
#include "device.h"

#include "internal.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct region {
    uint8_t *p;
    size_t len;   /* bytes asked for */
    size_t mlen;  /* bytes mapped (whole pages) */
} region;

typedef struct strict_dev {
    rt_device table;
    const rt_device *cpu;
    region *r;
    size_t nr, cap;
    int depth;            /* ops in progress (an op never calls another, but be safe) */
    dsckpt_dtype gemm_dt; /* GEMM operands: F32, or rounded to BF16/F16 first */
    unsigned long snaps, fences, waits; /* snapshot ops called (reported at close) */
    unsigned long pipes;                /* pipe_begin calls (reported at close) */
    unsigned long ups;                  /* h2d calls (reported at close) */
    bool pipe_busy[2];
    pthread_mutex_t mu;   /* the region list (is_device may be asked from the collectives) */
} strict_dev;

static void die(const char *op, const char *what, const void *p) {
    fprintf(stderr, "cpu-strict device: %s: %s (%p)\n", op, what, p);
    abort();
}

static void protect_all(strict_dev *d, int prot) {
    for (size_t i = 0; i < d->nr; i++)
        if (mprotect(d->r[i].p, d->r[i].mlen, prot)) die("mprotect", "failed", d->r[i].p);
}

static void open_all(strict_dev *d) {
    pthread_mutex_lock(&d->mu);
    if (d->depth++ == 0) protect_all(d, PROT_READ | PROT_WRITE);
    pthread_mutex_unlock(&d->mu);
}

static void close_all(strict_dev *d) {
    pthread_mutex_lock(&d->mu);
    if (--d->depth == 0) protect_all(d, PROT_NONE);
    pthread_mutex_unlock(&d->mu);
}

/* The region holding [p, p + bytes), or NULL when p is not device memory; dies when p
 * is device memory but the range runs past its allocation. */
static const region *find(strict_dev *d, const void *p, size_t bytes, const char *op) {
    const uint8_t *q = p;
    const region *hit = NULL;
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < d->nr && !hit; i++)
        if (q >= d->r[i].p && q < d->r[i].p + (d->r[i].len ? d->r[i].len : 1)) hit = &d->r[i];
    pthread_mutex_unlock(&d->mu);
    if (hit && (size_t)(hit->p + (hit->len ? hit->len : 1) - q) < bytes) die(op, "range past its device allocation", p);
    return hit;
}

static void need_dev(strict_dev *d, const void *p, size_t bytes, const char *op) {
    if (!bytes) return;
    if (!find(d, p, bytes, op)) die(op, "a host pointer where device memory is required", p);
}

static void need_host(strict_dev *d, const void *p, size_t bytes, const char *op) {
    if (bytes && find(d, p, 1, op)) die(op, "a device pointer where host memory is required", p);
}

/* ---- memory ---- */

static dsckpt_status st_alloc(void *ctx, size_t bytes, void **out) {
    strict_dev *d = ctx;
    long pg = sysconf(_SC_PAGESIZE);
    size_t mlen = ((bytes ? bytes : 1) + (size_t)pg - 1) / (size_t)pg * (size_t)pg;
    pthread_mutex_lock(&d->mu);
    if (d->nr == d->cap) {
        size_t nc = d->cap ? 2 * d->cap : 64;
        region *nr = realloc(d->r, nc * sizeof *nr);
        if (!nr) {
            pthread_mutex_unlock(&d->mu);
            return ds_err(DSCKPT_ENOMEM, "out of memory (cpu-strict region list)");
        }
        d->r = nr;
        d->cap = nc;
    }
    /* Fresh anonymous pages are zero, as alloc promises. */
    void *p = mmap(NULL, mlen, d->depth ? PROT_READ | PROT_WRITE : PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        pthread_mutex_unlock(&d->mu);
        return ds_err(DSCKPT_ENOMEM, "out of device memory (cpu-strict: %zu bytes)", bytes);
    }
    d->r[d->nr++] = (region){.p = p, .len = bytes, .mlen = mlen};
    pthread_mutex_unlock(&d->mu);
    *out = p;
    return DSCKPT_OK;
}

static void st_free(void *ctx, void *p) {
    strict_dev *d = ctx;
    if (!p) return;
    pthread_mutex_lock(&d->mu);
    size_t i = 0;
    while (i < d->nr && d->r[i].p != p) i++;
    if (i == d->nr) {
        pthread_mutex_unlock(&d->mu);
        die("free", "not the start of a device allocation", p);
    }
    munmap(d->r[i].p, d->r[i].mlen);
    d->r[i] = d->r[--d->nr];
    pthread_mutex_unlock(&d->mu);
}

typedef dsckpt_status (*copy_fn)(void *ctx, void *dst, const void *src, size_t bytes);

/* One copy: each side checked for its kind (device or host), then the CPU table's
 * copy with device memory open. */
static dsckpt_status strict_copy(strict_dev *d, copy_fn cpu_op, const char *name, bool dst_dev, bool src_dev,
                                 void *dst, const void *src, size_t bytes) {
    char what[32];
    snprintf(what, sizeof what, "%s destination", name);
    (dst_dev ? need_dev : need_host)(d, dst, bytes, what);
    snprintf(what, sizeof what, "%s source", name);
    (src_dev ? need_dev : need_host)(d, src, bytes, what);
    open_all(d);
    dsckpt_status st = cpu_op(NULL, dst, src, bytes);
    close_all(d);
    return st;
}

static dsckpt_status st_h2d(void *ctx, void *dst, const void *src, size_t bytes) {
    strict_dev *d = ctx;
    d->ups++;
    return strict_copy(d, d->cpu->h2d, "h2d", true, false, dst, src, bytes);
}

static dsckpt_status st_d2h(void *ctx, void *dst, const void *src, size_t bytes) {
    strict_dev *d = ctx;
    return strict_copy(d, d->cpu->d2h, "d2h", false, true, dst, src, bytes);
}

static dsckpt_status st_d2d(void *ctx, void *dst, const void *src, size_t bytes) {
    strict_dev *d = ctx;
    return strict_copy(d, d->cpu->d2d, "d2d", true, true, dst, src, bytes);
}

static dsckpt_status st_memzero(void *ctx, void *dst, size_t bytes) {
    strict_dev *d = ctx;
    need_dev(d, dst, bytes, "memzero");
    open_all(d);
    dsckpt_status st = d->cpu->memzero(NULL, dst, bytes);
    close_all(d);
    return st;
}

static dsckpt_status st_sync(void *ctx) {
    DS_UNUSED(ctx);
    return DSCKPT_OK;
}

static dsckpt_status st_alloc_host(void *ctx, size_t bytes, void **out) {
    const strict_dev *d = ctx;
    return d->cpu->alloc(NULL, bytes, out);
}

static void st_free_host(void *ctx, void *p) {
    strict_dev *d = ctx;
    if (p && find(d, p, 1, "free_host")) die("free_host", "a device pointer", p);
    d->cpu->free(NULL, p);
}

static bool st_is_device(void *ctx, const void *p) { return find(ctx, p, 1, "is_device") != NULL; }

static dsckpt_status st_mem_used(void *ctx, uint64_t *bytes) {
    strict_dev *d = ctx;
    uint64_t n = 0;
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < d->nr; i++) n += d->r[i].mlen;
    pthread_mutex_unlock(&d->mu);
    *bytes = n;
    return DSCKPT_OK;
}

/* ---- kernels: check every pointer, open, run the CPU kernel, close ---- */

#define F4(n) ((size_t)(n) * sizeof(float))
#define DEV(p, bytes) need_dev(d, (p), (bytes), __func__)
#define RUN(call)                                                                                                    \
    do {                                                                                                             \
        open_all(d);                                                                                                 \
        d->cpu->call;                                                                                                \
        close_all(d);                                                                                                \
    } while (0)

static void st_cast(void *ctx, dsckpt_dtype dst_dt, void *dst, dsckpt_dtype src_dt, const void *src, size_t n) {
    strict_dev *d = ctx;
    DEV(dst, n * dsckpt_dtype_size(dst_dt));
    DEV(src, n * dsckpt_dtype_size(src_dt));
    RUN(cast(NULL, dst_dt, dst, src_dt, src, n));
}

/* The snapshot ops, done at once (the copies are complete when snap_begin returns):
 * what they check is that the saver hands them device sources and host
 * destinations, and waits and fences where a GPU needs it. */
static dsckpt_status st_snap_begin(void *ctx, void *const *dst, const void *const *src, const size_t *bytes, int n) {
    strict_dev *d = ctx;
    for (int i = 0; i < n; i++)
        if (bytes[i]) DS_TRY(strict_copy(d, d->cpu->d2h, "snap_begin", false, true, dst[i], src[i], bytes[i]));
    d->snaps++;
    return DSCKPT_OK;
}

/* The offload's copies, done at once; slots are checked as a GPU's would be (two at
 * most in flight, each waited for once). */
static dsckpt_status st_pipe_begin(void *ctx, void *dst, const void *src, size_t bytes, int *slot) {
    strict_dev *d = ctx;
    int k = d->pipe_busy[0] ? 1 : 0;
    if (d->pipe_busy[k]) die("pipe_begin", "both slots are in flight", src);
    if (bytes) DS_TRY(strict_copy(d, d->cpu->d2h, "pipe_begin", false, true, dst, src, bytes));
    d->pipe_busy[k] = true;
    d->pipes++;
    *slot = k;
    return DSCKPT_OK;
}

static dsckpt_status st_pipe_wait(void *ctx, int slot) {
    strict_dev *d = ctx;
    if (slot < 0 || slot > 1 || !d->pipe_busy[slot]) die("pipe_wait", "slot not in flight", NULL);
    d->pipe_busy[slot] = false;
    return DSCKPT_OK;
}

static dsckpt_status st_snap_fence(void *ctx) {
    strict_dev *d = ctx;
    d->fences++;
    return DSCKPT_OK;
}

static dsckpt_status st_snap_wait(void *ctx) {
    strict_dev *d = ctx;
    d->waits++;
    return DSCKPT_OK;
}

static dsckpt_status st_set_gemm_dtype(void *ctx, dsckpt_dtype dt) {
    strict_dev *d = ctx;
    d->gemm_dt = dt;
    return DSCKPT_OK;
}

/* A host copy of src[0..n) rounded to d->gemm_dt (RNE) and widened back to fp32: the
 * operand a 16-bit GEMM multiplies. Called between open_all and close_all. */
static float *rounded_copy(strict_dev *d, const float *src, size_t n) {
    float *f = malloc(n * sizeof *f);
    uint16_t *h = malloc(n * sizeof *h);
    if (!f || !h) die("gemm", "out of memory rounding an operand", src);
    d->cpu->cast(NULL, d->gemm_dt, h, DSCKPT_F32, src, n);
    d->cpu->cast(NULL, DSCKPT_F32, f, d->gemm_dt, h, n);
    free(h);
    return f;
}

/* With 16-bit operands, *a and *b (spans of na, nb floats) replaced by rounded host
 * copies, which own[0], own[1] hold for the caller to free; else nothing. Called
 * between open_all and close_all. */
static void round_operands(strict_dev *d, const float **a, size_t na, const float **b, size_t nb, float **own) {
    if (d->gemm_dt == DSCKPT_F32) return;
    *a = own[0] = rounded_copy(d, *a, na);
    *b = own[1] = rounded_copy(d, *b, nb);
}

static void st_gemm(void *ctx, int M, int N, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                    ptrdiff_t ldb, float *c, ptrdiff_t ldc, int add) {
    strict_dev *d = ctx;
    bool any = M > 0 && N > 0 && K > 0;
    if (any) {
        DEV(a, 4);
        DEV(b, 4);
        DEV(c, 4);
    }
    float *own[2] = {NULL, NULL};
    open_all(d);
    if (any) round_operands(d, &a, (size_t)((M - 1) * ars + (K - 1) * acs + 1), &b, (size_t)((K - 1) * ldb + N), own);
    d->cpu->gemm(NULL, M, N, K, a, ars, acs, b, ldb, c, ldc, add);
    close_all(d);
    free(own[0]);
    free(own[1]);
}

static void st_gemm_bt(void *ctx, int M, int N, int K, const float *a, ptrdiff_t lda, const float *bt,
                       ptrdiff_t ldbt, float *c, ptrdiff_t ldc, int add, float *panel) {
    strict_dev *d = ctx;
    bool any = M > 0 && N > 0 && K > 0;
    if (any) {
        DEV(a, 4);
        DEV(bt, 4);
        DEV(c, 4);
        if (panel) DEV(panel, 4);
    }
    float *own[2] = {NULL, NULL};
    open_all(d);
    if (any) round_operands(d, &a, (size_t)((M - 1) * lda + K), &bt, (size_t)((N - 1) * ldbt + K), own);
    d->cpu->gemm_bt(NULL, M, N, K, a, lda, bt, ldbt, c, ldc, add, panel);
    close_all(d);
    free(own[0]);
    free(own[1]);
}

static void st_bias_rows(void *ctx, int N, int C, float *out, const float *bias, const float *res) {
    strict_dev *d = ctx;
    DEV(out, F4((size_t)N * C));
    DEV(bias, F4(C));
    if (res) DEV(res, F4((size_t)N * C));
    RUN(bias_rows(NULL, N, C, out, bias, res));
}

static void st_bias_grad(void *ctx, int N, int C, const float *dd, float *db) {
    strict_dev *d = ctx;
    DEV(dd, F4((size_t)N * C));
    DEV(db, F4(C));
    RUN(bias_grad(NULL, N, C, dd, db));
}

static void st_layernorm_fwd(void *ctx, int N, int C, const float *x, const float *w, const float *b, float *out,
                             float *mean, float *rstd) {
    strict_dev *d = ctx;
    DEV(x, F4((size_t)N * C));
    DEV(w, F4(C));
    DEV(b, F4(C));
    DEV(out, F4((size_t)N * C));
    DEV(mean, F4(N));
    DEV(rstd, F4(N));
    RUN(layernorm_fwd(NULL, N, C, x, w, b, out, mean, rstd));
}

static void st_layernorm_bwd(void *ctx, int N, int C, const float *dout, const float *x, const float *mean,
                             const float *rstd, const float *w, float *dx, float *dw, float *db) {
    strict_dev *d = ctx;
    DEV(dout, F4((size_t)N * C));
    DEV(x, F4((size_t)N * C));
    DEV(mean, F4(N));
    DEV(rstd, F4(N));
    DEV(w, F4(C));
    DEV(dx, F4((size_t)N * C));
    DEV(dw, F4(C));
    DEV(db, F4(C));
    RUN(layernorm_bwd(NULL, N, C, dout, x, mean, rstd, w, dx, dw, db));
}

static void st_gelu_fwd(void *ctx, int64_t n, const float *x, float *y) {
    strict_dev *d = ctx;
    DEV(x, F4(n));
    DEV(y, F4(n));
    RUN(gelu_fwd(NULL, n, x, y));
}

static void st_gelu_bwd(void *ctx, int64_t n, const float *x, float *dd) {
    strict_dev *d = ctx;
    DEV(x, F4(n));
    DEV(dd, F4(n));
    RUN(gelu_bwd(NULL, n, x, dd));
}

static void st_attention_fwd(void *ctx, int B, int T, int C, int NH, const float *qkv, float *att, float *y) {
    strict_dev *d = ctx;
    DEV(qkv, F4((size_t)B * T * 3 * C));
    DEV(att, F4((size_t)B * NH * T * T));
    DEV(y, F4((size_t)B * T * C));
    RUN(attention_fwd(NULL, B, T, C, NH, qkv, att, y));
}

static void st_attention_bwd(void *ctx, int B, int T, int C, int NH, const float *qkv, const float *att,
                             const float *dy, float *dqkv, float *scratch) {
    strict_dev *d = ctx;
    DEV(qkv, F4((size_t)B * T * 3 * C));
    DEV(att, F4((size_t)B * NH * T * T));
    DEV(dy, F4((size_t)B * T * C));
    DEV(dqkv, F4((size_t)B * T * 3 * C));
    if (scratch) DEV(scratch, F4((size_t)B * NH * T * (d->cpu->attention_scratch_square ? (size_t)T : 1)));
    RUN(attention_bwd(NULL, B, T, C, NH, qkv, att, dy, dqkv, scratch));
}

static void st_embed_fwd(void *ctx, int B, int T, int C, const int32_t *tokens, const float *wte, const float *wpe,
                         float *out) {
    strict_dev *d = ctx;
    DEV(tokens, (size_t)B * (size_t)(T + 1) * sizeof *tokens);
    DEV(wte, 4);
    DEV(wpe, F4((size_t)T * C));
    DEV(out, F4((size_t)B * T * C));
    RUN(embed_fwd(NULL, B, T, C, tokens, wte, wpe, out));
}

static void st_embed_bwd(void *ctx, int B, int T, int C, const int32_t *tokens, const float *dout, float *dwte,
                         float *dwpe) {
    strict_dev *d = ctx;
    DEV(tokens, (size_t)B * (size_t)(T + 1) * sizeof *tokens);
    DEV(dout, F4((size_t)B * T * C));
    DEV(dwte, 4);
    DEV(dwpe, F4((size_t)T * C));
    RUN(embed_bwd(NULL, B, T, C, tokens, dout, dwte, dwpe));
}

static void st_crossent(void *ctx, int B, int T, int V, const int32_t *tokens, float *probs, float dscale,
                        float *row_loss) {
    strict_dev *d = ctx;
    DEV(tokens, (size_t)B * (size_t)(T + 1) * sizeof *tokens);
    DEV(probs, F4((size_t)B * T * V));
    DEV(row_loss, F4((size_t)B * T));
    RUN(crossent(NULL, B, T, V, tokens, probs, dscale, row_loss));
}

static void st_adam(void *ctx, const ds_adam_k *k, float *param, const float *grad, float *m, float *v, size_t n) {
    strict_dev *d = ctx;
    need_host(d, k, sizeof *k, "adam constants");
    DEV(param, F4(n));
    DEV(grad, F4(n));
    DEV(m, F4(n));
    DEV(v, F4(n));
    RUN(adam(NULL, k, param, grad, m, v, n));
}

static void st_scale(void *ctx, float *x, size_t n, float s) {
    strict_dev *d = ctx;
    DEV(x, F4(n));
    RUN(scale(NULL, x, n, s));
}

static void st_add(void *ctx, float *dst, const float *src, size_t n) {
    strict_dev *d = ctx;
    DEV(dst, F4(n));
    DEV(src, F4(n));
    RUN(add(NULL, dst, src, n));
}

static void st_round_f16(void *ctx, float *g, size_t n) {
    strict_dev *d = ctx;
    DEV(g, F4(n));
    RUN(round_f16(NULL, g, n));
}

static void st_sumsq_exact(void *ctx, const float *g, size_t n, ds_u128 *acc) {
    strict_dev *d = ctx;
    DEV(g, F4(n));
    need_host(d, acc, sizeof *acc, "sumsq_exact accumulator");
    RUN(sumsq_exact(NULL, g, n, acc));
}

static bool st_has_inf_nan(void *ctx, const float *g, size_t n) {
    strict_dev *d = ctx;
    DEV(g, F4(n));
    open_all(d);
    bool r = d->cpu->has_inf_nan(NULL, g, n);
    close_all(d);
    return r;
}

dsckpt_status rt_device_cpu_strict_open(rt_device **out) {
    if (!out) return ds_err(DSCKPT_EINVAL, "rt_device_cpu_strict_open: NULL out");
    strict_dev *d = calloc(1, sizeof *d);
    if (!d) return ds_err(DSCKPT_ENOMEM, "out of memory (cpu-strict device table)");
    if (pthread_mutex_init(&d->mu, NULL)) {
        free(d);
        return ds_err(DSCKPT_EINTERNAL, "cannot create the cpu-strict table's lock");
    }
    d->cpu = rt_device_cpu();
    d->gemm_dt = DSCKPT_F32;
    rt_device *t = &d->table;
    *t = (rt_device){
        .name = "cpu-strict", .ctx = d, .host_memory = false,
        .attention_scratch_square = d->cpu->attention_scratch_square,
        .alloc = st_alloc, .free = st_free, .h2d = st_h2d, .d2h = st_d2h, .d2d = st_d2d, .memzero = st_memzero,
        .sync = st_sync, .alloc_host = st_alloc_host, .free_host = st_free_host, .is_device = st_is_device, .mem_used = st_mem_used,
        .pipe_begin = st_pipe_begin, .pipe_wait = st_pipe_wait,
        .snap_begin = st_snap_begin, .snap_fence = st_snap_fence, .snap_wait = st_snap_wait,
        .set_gemm_dtype = st_set_gemm_dtype, .cast = st_cast, .gemm = st_gemm, .gemm_bt = st_gemm_bt, .bias_rows = st_bias_rows,
        .bias_grad = st_bias_grad, .layernorm_fwd = st_layernorm_fwd, .layernorm_bwd = st_layernorm_bwd,
        .gelu_fwd = st_gelu_fwd, .gelu_bwd = st_gelu_bwd, .attention_fwd = st_attention_fwd,
        .attention_bwd = st_attention_bwd, .embed_fwd = st_embed_fwd, .embed_bwd = st_embed_bwd,
        .crossent = st_crossent, .adam = st_adam, .scale = st_scale, .add = st_add, .round_f16 = st_round_f16,
        .sumsq_exact = st_sumsq_exact, .has_inf_nan = st_has_inf_nan,
    };
    *out = t;
    return DSCKPT_OK;
}

void rt_device_cpu_strict_close(rt_device *dev) {
    if (!dev) return;
    strict_dev *d = dev->ctx;
    if (d->nr) fprintf(stderr, "cpu-strict device: %zu device allocation(s) not freed at close\n", d->nr);
    if (d->pipes) fprintf(stderr, "cpu-strict device: %lu offload copies pipelined\n", d->pipes);
    fprintf(stderr, "cpu-strict device: %lu host-to-device copies\n", d->ups);
    if (d->snaps)
        fprintf(stderr, "cpu-strict device: %lu snapshot(s) begun, %lu waited for, %lu fence(s)\n", d->snaps, d->waits,
                d->fences);
    for (size_t i = 0; i < d->nr; i++) munmap(d->r[i].p, d->r[i].mlen);
    free(d->r);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
