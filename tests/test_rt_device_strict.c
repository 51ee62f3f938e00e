/*
 * test_rt_device_strict.c — the cpu-strict device table (device.h) that
 * tests/rt_device_test.sh trains through: its ops give the CPU table's results, and
 * it does fail where a GPU would: a host read or write of device memory kills the
 * process, so do a copy in the wrong direction and a host pointer handed to a
 * kernel (each tried in a child process). Also the collectives' staging of device
 * buffers (rt_comm_set_device) on the self backend.
 */
#include "comm.h"
#include "device.h"
#include "tutil.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static rt_device *open_strict(void) {
    rt_device *d = NULL;
    TU_ASSERT_OK(rt_device_cpu_strict_open(&d));
    return d;
}

static void test_ops_match_cpu(void) {
    rt_device *d = open_strict();
    enum { N = 3000 };
    float h[N], g[N], out[N], ref[N];
    for (int i = 0; i < N; i++) {
        h[i] = (float)i * 0.25f - 100.0f;
        g[i] = (float)(i % 17) - 8.0f;
        ref[i] = h[i] + g[i];
    }
    float *dh = NULL, *dg = NULL, *dz = NULL;
    TU_ASSERT_OK(d->alloc(d->ctx, sizeof h, (void **)&dh));
    TU_ASSERT_OK(d->alloc(d->ctx, sizeof g, (void **)&dg));
    TU_ASSERT_OK(d->alloc(d->ctx, 0, (void **)&dz));
    CU_ASSERT_TRUE(d->is_device(d->ctx, dh));
    CU_ASSERT_TRUE(d->is_device(d->ctx, dg + N - 1));
    CU_ASSERT_FALSE(d->is_device(d->ctx, h));
    CU_ASSERT_FALSE(d->host_memory);
    TU_ASSERT_OK(d->h2d(d->ctx, dh, h, sizeof h));
    TU_ASSERT_OK(d->h2d(d->ctx, dg, g, sizeof g));
    d->add(d->ctx, dh, dg, N);
    TU_ASSERT_OK(d->sync(d->ctx));
    TU_ASSERT_OK(d->d2h(d->ctx, out, dh, sizeof out));
    CU_ASSERT_EQUAL(memcmp(out, ref, sizeof out), 0);
    ds_u128 acc[DS_SUMSQ_BUCKETS], acc_ref[DS_SUMSQ_BUCKETS];
    memset(acc, 0, sizeof acc);
    memset(acc_ref, 0, sizeof acc_ref);
    d->sumsq_exact(d->ctx, dg, N, acc);
    rt_device_cpu()->sumsq_exact(NULL, g, N, acc_ref);
    CU_ASSERT_EQUAL(memcmp(acc, acc_ref, sizeof acc), 0);
    /* Fresh device memory is zero. */
    float z[4] = {1, 1, 1, 1};
    float *dq = NULL;
    TU_ASSERT_OK(d->alloc(d->ctx, sizeof z, (void **)&dq));
    TU_ASSERT_OK(d->d2h(d->ctx, z, dq, sizeof z));
    CU_ASSERT_TRUE(z[0] == 0 && z[3] == 0);
    d->free(d->ctx, dq);
    d->free(d->ctx, dz);
    d->free(d->ctx, dg);
    d->free(d->ctx, dh);
    rt_device_cpu_strict_close(d);
}

/* Runs fn(dev, p) in a child; true when the child died (signal or failing exit)
 * instead of reaching _exit(0). */
static bool child_dies(void (*fn)(rt_device *, float *)) {
    rt_device *d = open_strict();
    float *p = NULL;
    TU_ASSERT_OK(d->alloc(d->ctx, 4096, (void **)&p));
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        fn(d, p);
        _exit(0);
    }
    int status = 0;
    CU_ASSERT_TRUE_FATAL(pid > 0);
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
    d->free(d->ctx, p);
    rt_device_cpu_strict_close(d);
    return WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0);
}

static void read_dev(rt_device *d, float *p) {
    (void)d;
    volatile float *v = p;
    float x = v[7];
    (void)x;
}

static void write_dev(rt_device *d, float *p) {
    (void)d;
    volatile float *v = p;
    v[100] = 1.0f;
}

static void h2d_from_device(rt_device *d, float *p) { (void)d->h2d(d->ctx, p, p + 512, 64); }

static void d2h_into_device(rt_device *d, float *p) {
    float h[16] = {0};
    (void)d->d2h(d->ctx, p + 512, h, sizeof h); /* src is host memory */
}

static void kernel_on_host(rt_device *d, float *p) {
    float h[16] = {0};
    d->add(d->ctx, p, h, 16);
}

static void past_the_end(rt_device *d, float *p) {
    float h[8] = {0};
    (void)d->h2d(d->ctx, p + 1020, h, sizeof h); /* 4096 bytes = 1024 floats */
}

static void nothing_wrong(rt_device *d, float *p) {
    float h[8] = {0};
    (void)d->h2d(d->ctx, p, h, sizeof h);
    d->scale(d->ctx, p, 8, 2.0f);
}

static void test_violations_die(void) {
    CU_ASSERT_TRUE(child_dies(read_dev));
    CU_ASSERT_TRUE(child_dies(write_dev));
    CU_ASSERT_TRUE(child_dies(h2d_from_device));
    CU_ASSERT_TRUE(child_dies(d2h_into_device));
    CU_ASSERT_TRUE(child_dies(kernel_on_host));
    CU_ASSERT_TRUE(child_dies(past_the_end));
    CU_ASSERT_FALSE(child_dies(nothing_wrong)); /* the harness itself does not kill */
}

/* The collectives take device buffers once told the table (self backend, W = 1:
 * the copies the shortcuts make on the host go through staging). */
static void test_comm_staging(void) {
    rt_device *d = open_strict();
    rt_comm *c = NULL;
    TU_ASSERT_OK(rt_comm_open_self(&c));
    rt_comm_set_device(c, d);
    float h[64], back[64];
    for (int i = 0; i < 64; i++) h[i] = (float)i + 0.5f;
    float *a = NULL, *b = NULL;
    TU_ASSERT_OK(d->alloc(d->ctx, sizeof h, (void **)&a));
    TU_ASSERT_OK(d->alloc(d->ctx, sizeof h, (void **)&b));
    TU_ASSERT_OK(d->h2d(d->ctx, a, h, sizeof h));
    TU_ASSERT_OK(rt_comm_allgather(c, a, sizeof h, b)); /* not in place: a copy */
    TU_ASSERT_OK(d->d2h(d->ctx, back, b, sizeof back));
    CU_ASSERT_EQUAL(memcmp(back, h, sizeof h), 0);
    size_t counts[1] = {64};
    TU_ASSERT_OK(d->memzero(d->ctx, b, sizeof h));
    TU_ASSERT_OK(rt_comm_reduce_scatterv_f32(c, a, counts, b));
    TU_ASSERT_OK(d->d2h(d->ctx, back, b, sizeof back));
    CU_ASSERT_EQUAL(memcmp(back, h, sizeof h), 0);
    TU_ASSERT_OK(rt_comm_allreduce_f32(c, a, 64));
    TU_ASSERT_OK(rt_comm_bcast(c, a, sizeof h, 0));
    /* Gathers of one rank copy device to device, device to host, host to device
     * (a host copy of device memory here would kill the test). */
    counts[0] = sizeof h;
    TU_ASSERT_OK(d->memzero(d->ctx, b, sizeof h));
    TU_ASSERT_OK(rt_comm_gatherv(c, a, sizeof h, 0, b, counts));
    TU_ASSERT_OK(d->d2h(d->ctx, back, b, sizeof back));
    CU_ASSERT_EQUAL(memcmp(back, h, sizeof h), 0);
    memset(back, 0, sizeof back);
    TU_ASSERT_OK(rt_comm_gather(c, a, sizeof h, 0, back));
    CU_ASSERT_EQUAL(memcmp(back, h, sizeof h), 0);
    TU_ASSERT_OK(d->memzero(d->ctx, b, sizeof h));
    TU_ASSERT_OK(rt_comm_gatherv(c, h, sizeof h, 0, b, counts));
    TU_ASSERT_OK(d->d2h(d->ctx, back, b, sizeof back));
    CU_ASSERT_EQUAL(memcmp(back, h, sizeof h), 0);
    /* Host buffers pass as before. */
    double v = 2.5;
    TU_ASSERT_OK(rt_comm_allreduce_f64(c, &v, 1));
    CU_ASSERT_EQUAL(v, 2.5);
    d->free(d->ctx, b);
    d->free(d->ctx, a);
    rt_comm_close(c);
    rt_device_cpu_strict_close(d);
}

/* 16-bit GEMM operands (set_gemm_dtype): cpu-strict gives, bit for bit, the CPU
 * table's product of the operands rounded to bf16 / fp16 first; the CPU table
 * refuses 16-bit operands and takes fp32. */
static void gemm_via_case(rt_device *d, dsckpt_dtype dt, bool bt) {
    enum { M = 5, K = 7, N = 6, LDA = 9, LDB = 8 };
    float a[M * LDA], b[K * LDB > N * LDB ? K * LDB : N * LDB], c[M * N], ref[M * N], ra[M * LDA], rb[sizeof b / 4];
    uint16_t h[sizeof b / 4 > M * LDA ? sizeof b / 4 : M * LDA];
    for (size_t i = 0; i < M * LDA; i++) a[i] = 1.0f + (float)i / 3.0f + 1e-4f * (float)(i % 7);
    for (size_t i = 0; i < sizeof b / 4; i++) b[i] = 0.5f - (float)i / 7.0f + 3e-5f * (float)(i % 5);
    const rt_device *cpu = rt_device_cpu();
    cpu->cast(NULL, dt, h, DSCKPT_F32, a, M * LDA);
    cpu->cast(NULL, DSCKPT_F32, ra, dt, h, M * LDA);
    cpu->cast(NULL, dt, h, DSCKPT_F32, b, sizeof b / 4);
    cpu->cast(NULL, DSCKPT_F32, rb, dt, h, sizeof b / 4);
    CU_ASSERT(memcmp(a, ra, sizeof a) != 0); /* the rounding changes the operands */
    if (bt) cpu->gemm_bt(NULL, M, N, K, ra, LDA, rb, LDB, ref, N, 0, NULL);
    else cpu->gemm(NULL, M, N, K, ra, LDA, 1, rb, LDB, ref, N, 0);
    float *da = NULL, *db = NULL, *dc = NULL;
    TU_ASSERT_OK(d->alloc(d->ctx, sizeof a, (void **)&da));
    TU_ASSERT_OK(d->alloc(d->ctx, sizeof b, (void **)&db));
    TU_ASSERT_OK(d->alloc(d->ctx, sizeof c, (void **)&dc));
    TU_ASSERT_OK(d->h2d(d->ctx, da, a, sizeof a));
    TU_ASSERT_OK(d->h2d(d->ctx, db, b, sizeof b));
    TU_ASSERT_OK(rt_device_set_gemm_dtype(d, dt));
    if (bt) d->gemm_bt(d->ctx, M, N, K, da, LDA, db, LDB, dc, N, 0, NULL);
    else d->gemm(d->ctx, M, N, K, da, LDA, 1, db, LDB, dc, N, 0);
    TU_ASSERT_OK(d->d2h(d->ctx, c, dc, sizeof c));
    CU_ASSERT(memcmp(c, ref, sizeof c) == 0);
    /* back to fp32: the unrounded product */
    TU_ASSERT_OK(rt_device_set_gemm_dtype(d, DSCKPT_F32));
    if (bt) cpu->gemm_bt(NULL, M, N, K, a, LDA, b, LDB, ref, N, 0, NULL);
    else cpu->gemm(NULL, M, N, K, a, LDA, 1, b, LDB, ref, N, 0);
    if (bt) d->gemm_bt(d->ctx, M, N, K, da, LDA, db, LDB, dc, N, 0, NULL);
    else d->gemm(d->ctx, M, N, K, da, LDA, 1, db, LDB, dc, N, 0);
    TU_ASSERT_OK(d->d2h(d->ctx, c, dc, sizeof c));
    CU_ASSERT(memcmp(c, ref, sizeof c) == 0);
    d->free(d->ctx, da);
    d->free(d->ctx, db);
    d->free(d->ctx, dc);
}

static void test_gemm_dtype(void) {
    rt_device *d = open_strict();
    for (int bt = 0; bt < 2; bt++) {
        gemm_via_case(d, DSCKPT_BF16, bt);
        gemm_via_case(d, DSCKPT_F16, bt);
    }
    rt_device_cpu_strict_close(d);
    rt_device *cpu = (rt_device *)rt_device_cpu();
    CU_ASSERT_EQUAL(rt_device_set_gemm_dtype(cpu, DSCKPT_BF16), DSCKPT_EUNSUPPORTED);
    CU_ASSERT_EQUAL(rt_device_set_gemm_dtype(cpu, DSCKPT_F16), DSCKPT_EUNSUPPORTED);
    CU_ASSERT_EQUAL(rt_device_set_gemm_dtype(cpu, DSCKPT_F32), DSCKPT_OK);
}

static void test_named(void) {
    rt_device *d = NULL;
    TU_ASSERT_OK(rt_device_open_named("cpu", 0, &d));
    CU_ASSERT_PTR_EQUAL(d, rt_device_cpu());
    CU_ASSERT_TRUE(d->host_memory);
    rt_device_close_named(d);
    TU_ASSERT_OK(rt_device_open_named("cpu-strict", 3, &d));
    CU_ASSERT_STRING_EQUAL(d->name, "cpu-strict");
    rt_device_close_named(d);
    CU_ASSERT_EQUAL(rt_device_open_named("tpu", 0, &d), DSCKPT_EINVAL);
#ifndef DSCKPT_HAVE_CUDA
    CU_ASSERT_EQUAL(rt_device_open_named("cuda", 0, &d), DSCKPT_EUNSUPPORTED);
#endif
}

int main(void) {
    static const tu_test tests[] = {{"ops give the CPU table's results", test_ops_match_cpu},
                                    {"host access, wrong copy directions and host pointers die", test_violations_die},
                                    {"collectives stage device buffers", test_comm_staging},
                                    {"tables by name", test_named},
                                    {"16-bit GEMM operands", test_gemm_dtype},
                                    {NULL, NULL}};
    return tu_main("rt_device_strict", tests);
}
