/*
 * test_comm_cuda.c — the collectives on device buffers (runtime/cuda/comm_cuda.c), run
 * through dsrun on W ranks that share GPU 0:
 *   staged MPI backend: broadcast, all-gather, reduce-scatter-v and all-reduce on
 *     device buffers give exactly the rank-order sums computed here on the host
 *     (bitwise), and the small host reductions still work;
 *   NCCL backend (W = 1 only when there is one GPU, bootstrapped over the staged
 *     handle): the same checks.
 * Every rank fills its inputs from (rank, index) alone, so each rank can compute
 * every expected value itself.
 *
 * Without a CUDA device every rank prints "SKIPPED:" and exits 77 before MPI starts
 * (DSCKPT_REQUIRE_CUDA=1 turns that into a failure).
 */
#include "comm.h"
#include "comm_cuda.h"
#include "device_cuda.h"
#include "ds_cuda.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_fail;
#define CHECK(cond, ...)                                               \
    do {                                                               \
        if (!(cond)) {                                                 \
            g_fail++;                                                  \
            fprintf(stderr, "rank %d: FAIL %s:%d: ", g_rank, __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                              \
            fprintf(stderr, "\n");                                     \
        }                                                              \
    } while (0)
static int g_rank;

static float val(int rank, size_t i) { return (float)((int)((i * 2654435761u + (unsigned)rank * 40503u) % 2001u) - 1000) / 7.0f; }

static dsc_ctx *g_kc;

static int up(void *dst, const void *src, size_t bytes) {
    return dsc_memcpy(g_kc, dst, src, bytes, DSC_H2D) == DSC_OK && dsc_sync(g_kc) == DSC_OK ? 0 : -1;
}

static int down(void *dst, const void *src, size_t bytes) {
    return dsc_memcpy(g_kc, dst, src, bytes, DSC_D2H) == DSC_OK && dsc_sync(g_kc) == DSC_OK ? 0 : -1;
}

static float *dev_alloc(size_t n) {
    void *p = NULL;
    return dsc_malloc(&p, n * sizeof(float) + 4) == DSC_OK ? p : NULL;
}

static void run_checks(rt_comm *c, const char *name) {
    int W = rt_comm_size(c), me = rt_comm_rank(c);
    size_t *counts = calloc((size_t)W, sizeof *counts);
    size_t total = 0;
    for (int r = 0; r < W; r++) total += counts[r] = 1000 + (size_t)r * 37 + (r == W - 1 ? 0 : 5);
    float *h = malloc(total * sizeof(float)), *want = malloc(total * sizeof(float));
    float *got = malloc(total * sizeof(float));
    float *d = dev_alloc(total), *dr = dev_alloc(total);
    CHECK(counts && h && want && got && d && dr, "allocation");
    if (!(counts && h && want && got && d && dr)) return;
    /* reduce-scatter-v: segment r summed in rank order */
    for (size_t i = 0; i < total; i++) {
        h[i] = val(me, i);
        float a = val(0, i);
        for (int r = 1; r < W; r++) a += val(r, i);
        want[i] = a;
    }
    CHECK(up(d, h, total * 4) == 0, "%s: upload", name);
    size_t off = 0;
    for (int r = 0; r < me; r++) off += counts[r];
    dsckpt_status st = rt_comm_reduce_scatterv_f32(c, d, counts, dr);
    CHECK(st == DSCKPT_OK, "%s: reduce_scatterv: %s", name, dsckpt_last_error());
    CHECK(down(got, dr, counts[me] * 4) == 0, "%s: download", name);
    CHECK(memcmp(got, want + off, counts[me] * 4) == 0, "%s: reduce_scatterv differs from the rank-order sum", name);
    /* all-reduce in place */
    CHECK(up(d, h, total * 4) == 0, "%s: upload", name);
    st = rt_comm_allreduce_f32(c, d, total);
    CHECK(st == DSCKPT_OK, "%s: allreduce: %s", name, dsckpt_last_error());
    CHECK(down(got, d, total * 4) == 0, "%s: download", name);
    CHECK(memcmp(got, want, total * 4) == 0, "%s: allreduce differs from the rank-order sum", name);
    /* all-gather: block r = rank r's values */
    size_t blk = 777;
    CHECK(up(d, h, blk * 4) == 0, "%s: upload", name);
    float *dg = dev_alloc(blk * (size_t)W);
    st = rt_comm_allgather(c, d, blk * 4, dg);
    CHECK(st == DSCKPT_OK, "%s: allgather: %s", name, dsckpt_last_error());
    float *all = malloc(blk * (size_t)W * 4);
    CHECK(all && down(all, dg, blk * (size_t)W * 4) == 0, "%s: download", name);
    for (int r = 0; all && r < W; r++)
        for (size_t i = 0; i < blk; i++)
            if (all[(size_t)r * blk + i] != val(r, i)) {
                CHECK(0, "%s: allgather block %d element %zu", name, r, i);
                r = W;
                break;
            }
    /* broadcast from the last rank */
    CHECK(up(d, h, blk * 4) == 0, "%s: upload", name);
    st = rt_comm_bcast(c, d, blk * 4, W - 1);
    CHECK(st == DSCKPT_OK, "%s: bcast: %s", name, dsckpt_last_error());
    CHECK(down(got, d, blk * 4) == 0, "%s: download", name);
    for (size_t i = 0; i < blk; i++)
        if (got[i] != val(W - 1, i)) {
            CHECK(0, "%s: bcast element %zu", name, i);
            break;
        }
    /* small host reductions */
    double x[2] = {me + 0.5, -me};
    st = rt_comm_allreduce_f64(c, x, 2);
    CHECK(st == DSCKPT_OK && x[0] == W * (W - 1) / 2.0 + 0.5 * W, "%s: allreduce_f64", name);
    bool flag = me == W - 1;
    st = rt_comm_allreduce_or(c, &flag);
    CHECK(st == DSCKPT_OK && flag, "%s: allreduce_or", name);
    CHECK(rt_comm_barrier(c) == DSCKPT_OK, "%s: barrier", name);
    dsc_free(d), dsc_free(dr), dsc_free(dg);
    free(counts), free(h), free(want), free(got), free(all);
}

int main(int argc, char **argv) {
    int n = 0;
    const char *why = NULL;
    if (dsc_device_count(&n, &why) != DSC_OK || n < 1) {
        const char *req = getenv("DSCKPT_REQUIRE_CUDA");
        if (req && *req && strcmp(req, "0") != 0) {
            fprintf(stderr, "FAILED: DSCKPT_REQUIRE_CUDA is set but there is no CUDA device (%s)\n", why ? why : "none");
            return 1;
        }
        printf("SKIPPED: no CUDA device (%s)\n", why ? why : "none found");
        return 77;
    }
    rt_device *dev = NULL;
    if (rt_device_cuda_open(0, &dev) != DSCKPT_OK) {
        fprintf(stderr, "FAILED: CUDA device table: %s\n", dsckpt_last_error());
        return 1;
    }
    g_kc = rt_device_cuda_ctx(dev);
    rt_comm *c = NULL;
    if (rt_comm_open_mpi_staged(&argc, &argv, &c) != DSCKPT_OK) {
        fprintf(stderr, "FAILED: staged MPI communicator: %s\n", dsckpt_last_error());
        return 1;
    }
    g_rank = rt_comm_rank(c);
    rt_comm_set_max_message(c, 4096); /* the piecewise paths, on small buffers */
    run_checks(c, "mpi+staged");
    /* NCCL: one rank per device, so only when every rank can have its own GPU. */
    if (rt_comm_size(c) <= n) {
        rt_comm *nc = NULL;
        dsckpt_status st = rt_comm_open_nccl(c, dev, &nc);
        if (st == DSCKPT_EUNSUPPORTED) {
            if (g_rank == 0) printf("note: NCCL not built in: its checks not run\n");
        } else {
            CHECK(st == DSCKPT_OK, "rt_comm_open_nccl: %s", dsckpt_last_error());
            if (st == DSCKPT_OK) run_checks(nc, "nccl");
            rt_comm_close(nc);
        }
    } else if (g_rank == 0) {
        printf("note: %d ranks on %d GPU(s): NCCL checks need one GPU per rank, not run\n", rt_comm_size(c), n);
    }
    bool bad = g_fail != 0;
    rt_comm_allreduce_or(c, &bad);
    if (g_rank == 0) printf("%s: %s\n", bad ? "FAILED" : "passed", "device-buffer collectives");
    rt_comm_close(c);
    rt_device_cuda_close(dev);
    return bad ? 1 : 0;
}
