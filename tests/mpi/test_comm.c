/*
 * test_comm.c — the collectives of runtime/comm.h on W MPI ranks (run through dsrun
 * with W = 1..4 by ctest). Every rank can compute every rank's input from a seed, so
 * each result is checked bitwise against a local expectation: reduce-scatter and
 * all-reduce against the rank-order float sum, all-reduce against reduce-scatter +
 * all-gather, uneven and zero counts, in-place calls, tens of MB, and the piecewise
 * paths under a tiny message cap. Prints one line per failure and exits non-zero.
 *
 *   test_comm_mpi            the test
 *   test_comm_mpi --huge     also buffers past 2 GiB (about 2.5 GiB per rank at W=2)
 *   test_comm_mpi --bench    reduce-scatter / all-reduce timings against plain MPI
 */
#include "comm.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static rt_comm *g_c;
static int g_rank, g_W;
static long g_fail, g_checks;

#define FAIL(...)                                                       \
    do {                                                                \
        g_fail++;                                                       \
        fprintf(stderr, "rank %d: FAIL %s:%d: ", g_rank, __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                                   \
        fputc('\n', stderr);                                            \
    } while (0)
#define CHECK(cond, ...)                \
    do {                                \
        g_checks++;                     \
        if (!(cond)) FAIL(__VA_ARGS__); \
    } while (0)
/* A collective that fails unexpectedly would leave the other ranks waiting: abort. */
#define OK(expr)                                                                        \
    do {                                                                                \
        dsckpt_status st_ = (expr);                                                     \
        if (st_ != DSCKPT_OK) {                                                         \
            fprintf(stderr, "rank %d: FATAL %s:%d: %s -> %s: %s\n", g_rank, __FILE__, __LINE__, \
                    #expr, dsckpt_status_name(st_), dsckpt_last_error());               \
            rt_comm_abort(g_c, 3);                                                      \
        }                                                                               \
    } while (0)

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "rank %d: out of memory (%zu bytes)\n", g_rank, n);
        rt_comm_abort(g_c, 4);
    }
    return p;
}

static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Rank r's float i under `seed`: random sign and mantissa, exponents 2^-10..2^10, so
 * the order of a sum shows in its bits. */
static float val(uint64_t seed, int r, size_t i) {
    uint64_t h = mix(seed * 0x100000001b3ull ^ ((uint64_t)r << 48) ^ (uint64_t)i);
    uint32_t bits = (uint32_t)(h & 0x807fffffu) | (uint32_t)(117 + (h >> 40) % 21) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static void fill(float *x, size_t n, uint64_t seed, int r, size_t first) {
    for (size_t i = 0; i < n; i++) x[i] = val(seed, r, first + i);
}

/* The rank-order sum of element i over all ranks. */
static float sum_ranks(uint64_t seed, size_t i) {
    float acc = val(seed, 0, i);
    for (int r = 1; r < g_W; r++) acc += val(seed, r, i);
    return acc;
}

static size_t first_bad(const void *a, const void *b, size_t n, size_t elem) {
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (memcmp(x + i * elem, y + i * elem, elem)) return i;
    return n;
}

static void fill_bytes(unsigned char *b, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)mix(seed ^ (i * 0x51ull));
}

/* ---- broadcast, all-gather ---------------------------------------------------------- */

static void test_bcast(const size_t *sizes, int nsizes) {
    for (int k = 0; k < nsizes; k++) {
        size_t n = sizes[k];
        unsigned char *buf = xmalloc(n), *want = xmalloc(n);
        for (int root = 0; root < g_W; root++) {
            fill_bytes(want, n, 1000 + (uint64_t)root * 7 + n);
            if (g_rank == root) memcpy(buf, want, n);
            else memset(buf, 0xA5, n);
            OK(rt_comm_bcast(g_c, buf, n, root));
            size_t bad = first_bad(buf, want, n, 1);
            CHECK(bad == n, "bcast %zu bytes from root %d: byte %zu differs", n, root, bad);
        }
        free(buf);
        free(want);
    }
    /* Argument errors are found before any communication: every rank fails alike. */
    unsigned char b = 0;
    CHECK(rt_comm_bcast(g_c, &b, 1, g_W) == DSCKPT_EINVAL, "bcast root W accepted");
    CHECK(rt_comm_bcast(g_c, &b, 1, -1) == DSCKPT_EINVAL, "bcast root -1 accepted");
    CHECK(rt_comm_bcast(g_c, NULL, 1, 0) == DSCKPT_EINVAL, "bcast NULL accepted");
    OK(rt_comm_bcast(g_c, NULL, 0, 0));
}

static void test_allgather(const size_t *sizes, int nsizes) {
    for (int k = 0; k < nsizes; k++) {
        size_t n = sizes[k], total = n * (size_t)g_W;
        unsigned char *send = xmalloc(n), *recv = xmalloc(total), *want = xmalloc(total);
        for (int r = 0; r < g_W; r++) fill_bytes(want + (size_t)r * n, n, 77 + (uint64_t)r * 1009 + n);
        /* Separate buffers. */
        memcpy(send, want + (size_t)g_rank * n, n);
        memset(recv, 0x5A, total);
        OK(rt_comm_allgather(g_c, send, n, recv));
        size_t bad = first_bad(recv, want, total, 1);
        CHECK(bad == total, "allgather %zu bytes/rank: byte %zu differs", n, bad);
        /* In place. */
        memset(recv, 0x5A, total);
        memcpy(recv + (size_t)g_rank * n, want + (size_t)g_rank * n, n);
        OK(rt_comm_allgather(g_c, recv + (size_t)g_rank * n, n, recv));
        bad = first_bad(recv, want, total, 1);
        CHECK(bad == total, "allgather in place %zu bytes/rank: byte %zu differs", n, bad);
        /* Overlap that is not in place is refused (on every rank alike when n > 0). */
        if (n > 1 && g_W > 1) {
            dsckpt_status st = rt_comm_allgather(g_c, recv + 1, n, recv);
            CHECK(st == DSCKPT_EINVAL, "allgather with overlapping send accepted (%d)", (int)st);
        }
        free(send);
        free(recv);
        free(want);
    }
}

static size_t prefix(const size_t *counts, int r) {
    size_t s = 0;
    for (int i = 0; i < r; i++) s += counts[i];
    return s;
}

/* ---- gather to one rank -------------------------------------------------------------- */

/* Rank r's block in a gatherv of scale n: uneven sizes, rank 1 sends nothing. */
static size_t gv_len(int r, size_t n) { return r == 1 ? 0 : n + (size_t)r * (n / 3 + 1); }

/* rt_comm_gatherv and rt_comm_gather to every root: blocks of uneven size in rank
 * order on the root, out of place and in place; only the root's buffer is written. */
static void test_gatherv(const size_t *sizes, int nsizes) {
    size_t W = (size_t)g_W, *counts = xmalloc(W * sizeof *counts);
    for (int k = 0; k < nsizes; k++) {
        size_t n = sizes[k], total = 0, mine = gv_len(g_rank, n);
        for (size_t r = 0; r < W; r++) total += counts[r] = gv_len((int)r, n);
        unsigned char *send = xmalloc(mine), *recv = xmalloc(total), *want = xmalloc(total);
        for (size_t r = 0, off = 0; r < W; off += counts[r], r++) fill_bytes(want + off, counts[r], 31 * r + n);
        memcpy(send, want + prefix(counts, g_rank), mine);
        for (int root = 0; root < g_W; root++) {
            bool is_root = g_rank == root;
            memset(recv, 0x5A, total);
            OK(rt_comm_gatherv(g_c, send, mine, root, is_root ? recv : NULL, is_root ? counts : NULL));
            size_t bad = first_bad(recv, want, total, 1);
            if (is_root) CHECK(bad == total, "gatherv %zu to root %d: byte %zu differs", n, root, bad);
            else CHECK(total == 0 || recv[0] == 0x5A, "gatherv %zu to root %d wrote a non-root's buffer", n, root);
            /* In place on the root. */
            memset(recv, 0x5A, total);
            unsigned char *s = is_root ? recv + prefix(counts, root) : send;
            if (is_root) memcpy(s, send, mine);
            OK(rt_comm_gatherv(g_c, s, mine, root, is_root ? recv : NULL, is_root ? counts : NULL));
            bad = first_bad(recv, want, total, 1);
            if (is_root) CHECK(bad == total, "gatherv in place %zu to root %d: byte %zu differs", n, root, bad);
        }
        free(send);
        free(recv);
        free(want);
        /* Equal blocks: rt_comm_gather (no broadcast of the rounds). */
        size_t eq = n + 5;
        send = xmalloc(eq), recv = xmalloc(eq * W), want = xmalloc(eq * W);
        for (size_t r = 0; r < W; r++) fill_bytes(want + r * eq, eq, 7 * r + n);
        memcpy(send, want + (size_t)g_rank * eq, eq);
        for (int root = 0; root < g_W; root++) {
            memset(recv, 0x5A, eq * W);
            OK(rt_comm_gather(g_c, send, eq, root, g_rank == root ? recv : NULL));
            size_t bad = first_bad(recv, want, eq * W, 1);
            if (g_rank == root) CHECK(bad == eq * W, "gather %zu to root %d: byte %zu differs", eq, root, bad);
        }
        free(send);
        free(recv);
        free(want);
    }
    /* The root's arguments are checked on the root only; a refusal there reaches
     * every rank (no rank is left waiting). */
    unsigned char b[4] = {0}, r4[64];
    for (size_t r = 0; r < W; r++) counts[r] = 1;
    counts[0] = 2; /* the root (0) sends 1 byte but says 2 */
    dsckpt_status st = rt_comm_gatherv(g_c, b, 1, 0, r4, counts);
    CHECK(g_W == 1 || st == DSCKPT_EINVAL, "gatherv with a wrong root count accepted on rank %d (%d)", g_rank, (int)st);
    CHECK(rt_comm_gatherv(g_c, b, 1, g_W, r4, counts) == DSCKPT_EINVAL, "gatherv root W accepted");
    CHECK(rt_comm_gather(g_c, b, 1, -1, r4) == DSCKPT_EINVAL, "gather root -1 accepted");
    free(counts);
}

/* rt_comm_exchangev: rank a's block for rank b has a size of its own (some empty,
 * the self block included), bytes that say who sent them to whom; every rank's
 * receive buffer holds its blocks in sender order, and nothing past them is
 * written. Under a small cap the larger blocks go in rounds. */
static size_t xv_len(int from, int to, size_t n) { return (from + 2 * to) % 3 == 1 ? 0 : n + (size_t)(from * 7 + to * 3); }

static void test_exchangev(const size_t *sizes, int nsizes) {
    size_t W = (size_t)g_W;
    uint64_t *sb = xmalloc(W * sizeof *sb), *rb = xmalloc(W * sizeof *rb);
    for (int k = 0; k < nsizes; k++) {
        size_t n = sizes[k], st = 0, rt = 0;
        for (size_t r = 0; r < W; r++) {
            st += sb[r] = xv_len(g_rank, (int)r, n);
            rt += rb[r] = xv_len((int)r, g_rank, n);
        }
        unsigned char *send = xmalloc(st), *recv = xmalloc(rt + 8), *want = xmalloc(rt);
        for (size_t r = 0, off = 0; r < W; off += sb[r], r++) fill_bytes(send + off, sb[r], 1000 * (size_t)g_rank + r + n);
        for (size_t r = 0, off = 0; r < W; off += rb[r], r++) fill_bytes(want + off, rb[r], 1000 * r + (size_t)g_rank + n);
        memset(recv, 0x5A, rt + 8);
        OK(rt_comm_exchangev(g_c, send, sb, recv, rb));
        size_t bad = first_bad(recv, want, rt, 1);
        CHECK(bad == rt, "exchangev %zu: byte %zu of %zu differs", n, bad, rt);
        CHECK(recv[rt] == 0x5A && recv[rt + 7] == 0x5A, "exchangev %zu wrote past its blocks", n);
        free(send);
        free(recv);
        free(want);
    }
    /* A self block of another size than the one it says it receives is refused
     * before anything is sent (every rank passes the same mistake). */
    unsigned char b[8] = {0};
    for (size_t r = 0; r < W; r++) sb[r] = rb[r] = 0;
    sb[g_rank] = 1;
    CHECK(rt_comm_exchangev(g_c, b, sb, b + 4, rb) == DSCKPT_EINVAL, "exchangev with unequal self blocks accepted");
    free(sb);
    free(rb);
}

/* ---- reduce-scatter, all-reduce ------------------------------------------------------ */

/* reduce_scatterv with counts; checks bits against the rank-order sum, out of place
 * and in place. Returns how many elements of this rank's segment would differ if
 * summed in reverse rank order (the test's sensitivity). */
static size_t check_rs(const size_t *counts, uint64_t seed, const char *label) {
    size_t total = prefix(counts, g_W), off = prefix(counts, g_rank), mine = counts[g_rank];
    float *send = xmalloc(total * sizeof(float)), *recv = xmalloc(mine * sizeof(float));
    float *want = xmalloc(mine * sizeof(float));
    fill(send, total, seed, g_rank, 0);
    size_t order_sensitive = 0;
    for (size_t i = 0; i < mine; i++) {
        want[i] = sum_ranks(seed, off + i);
        float rev = val(seed, g_W - 1, off + i);
        for (int r = g_W - 2; r >= 0; r--) rev += val(seed, r, off + i);
        order_sensitive += memcmp(&rev, &want[i], sizeof rev) != 0;
    }
    for (size_t i = 0; i < mine; i++) recv[i] = -1.0f;
    OK(rt_comm_reduce_scatterv_f32(g_c, send, counts, recv));
    size_t bad = first_bad(recv, want, mine, sizeof(float));
    CHECK(bad == mine, "reduce_scatterv %s: element %zu of %zu differs (%a vs %a)", label, bad, mine,
          bad < mine ? (double)recv[bad] : 0.0, bad < mine ? (double)want[bad] : 0.0);
    /* The send buffer is not modified out of place. */
    for (size_t i = 0; i < total && i < 100000; i++)
        if (send[i] != val(seed, g_rank, i) && !(send[i] != send[i])) {
            FAIL("reduce_scatterv %s modified send[%zu]", label, i);
            break;
        }
    /* In place: recv is the own segment of send. */
    OK(rt_comm_reduce_scatterv_f32(g_c, send, counts, send + off));
    bad = first_bad(send + off, want, mine, sizeof(float));
    CHECK(bad == mine, "reduce_scatterv in place %s: element %zu of %zu differs", label, bad, mine);
    free(send);
    free(recv);
    free(want);
    return order_sensitive;
}

static void test_reduce_scatterv(size_t scale) {
    size_t W = (size_t)g_W;
    size_t *counts = xmalloc(W * sizeof *counts);
    size_t sensitive = 0;
    /* equal */
    for (size_t r = 0; r < W; r++) counts[r] = 1000;
    sensitive += check_rs(counts, 1, "equal");
    /* uneven */
    for (size_t r = 0; r < W; r++) counts[r] = (r * 7919 + 13) % 1000 + r;
    sensitive += check_rs(counts, 2, "uneven");
    /* every other rank gets nothing */
    for (size_t r = 0; r < W; r++) counts[r] = r % 2 ? 0 : 777;
    sensitive += check_rs(counts, 3, "zeros");
    for (size_t r = 0; r < W; r++) counts[r] = r % 2 ? 5 : 0;
    check_rs(counts, 4, "zeros (rank 0 none)");
    /* all empty */
    for (size_t r = 0; r < W; r++) counts[r] = 0;
    check_rs(counts, 5, "empty");
    /* the last rank gets everything */
    for (size_t r = 0; r < W; r++) counts[r] = r == W - 1 ? 50000 : 0;
    sensitive += check_rs(counts, 6, "one owner");
    /* large and uneven: about `scale` floats in all */
    for (size_t r = 0; r < W; r++) counts[r] = scale / W + (r * 104729) % 4099 - (r % 2 ? 2049 : 0);
    sensitive += check_rs(counts, 7, "large");
    if (g_W >= 3) CHECK(sensitive > 0, "inputs are not sensitive to the summation order");
    /* Argument errors. */
    for (size_t r = 0; r < W; r++) counts[r] = 10;
    float x[64] = {0};
    CHECK(rt_comm_reduce_scatterv_f32(g_c, x, NULL, x) == DSCKPT_EINVAL, "NULL counts accepted");
    CHECK(rt_comm_reduce_scatterv_f32(g_c, NULL, counts, x) == DSCKPT_EINVAL, "NULL send accepted");
    counts[0] = SIZE_MAX / 2;
    counts[W - 1] = SIZE_MAX / 2 + 10;
    if (W > 1) CHECK(rt_comm_reduce_scatterv_f32(g_c, x, counts, x) == DSCKPT_EINVAL, "overflowing counts accepted");
    free(counts);
}

static void test_allreduce_f32(const size_t *sizes, int nsizes) {
    size_t W = (size_t)g_W;
    size_t *counts = xmalloc(W * sizeof *counts);
    for (int k = 0; k < nsizes; k++) {
        size_t n = sizes[k];
        uint64_t seed = 100 + n;
        float *buf = xmalloc(n * sizeof(float)), *want = xmalloc(n * sizeof(float));
        fill(buf, n, seed, g_rank, 0);
        for (size_t i = 0; i < n; i++) want[i] = sum_ranks(seed, i);
        OK(rt_comm_allreduce_f32(g_c, buf, n));
        size_t bad = first_bad(buf, want, n, sizeof(float));
        CHECK(bad == n, "allreduce_f32 n=%zu: element %zu differs", n, bad);
        /* The same bits as reduce_scatterv over the documented split, then all-gather. */
        for (size_t r = 0; r < W; r++) counts[r] = n / W + (r < n % W);
        size_t off = prefix(counts, g_rank);
        fill(buf, n, seed, g_rank, 0);
        float *seg = xmalloc(counts[g_rank] * sizeof(float));
        OK(rt_comm_reduce_scatterv_f32(g_c, buf, counts, seg));
        bad = first_bad(seg, want + off, counts[g_rank], sizeof(float));
        CHECK(bad == counts[g_rank], "reduce_scatterv vs allreduce n=%zu: element %zu differs", n, bad);
        free(seg);
        free(buf);
        free(want);
        /* With an equal split the public all-gather rebuilds the whole vector. */
        size_t q = n / W + 1, m = q * W;
        float *a = xmalloc(m * sizeof(float)), *b = xmalloc(m * sizeof(float));
        fill(a, m, seed + 1, g_rank, 0);
        memcpy(b, a, m * sizeof(float));
        for (size_t r = 0; r < W; r++) counts[r] = q;
        OK(rt_comm_reduce_scatterv_f32(g_c, a, counts, a + q * (size_t)g_rank));
        OK(rt_comm_allgather(g_c, a + q * (size_t)g_rank, q * sizeof(float), a));
        OK(rt_comm_allreduce_f32(g_c, b, m));
        bad = first_bad(a, b, m, sizeof(float));
        CHECK(bad == m, "allreduce != reduce_scatterv + allgather, n=%zu: element %zu", m, bad);
        free(a);
        free(b);
    }
    free(counts);
}

static void test_small_reductions(void) {
    enum { N = 37 };
    double v[N], want[N];
    for (int i = 0; i < N; i++) {
        v[i] = (double)val(9, g_rank, (size_t)i) * (1.0 + 1e-9 * g_rank);
        double s = (double)val(9, 0, (size_t)i);
        for (int r = 1; r < g_W; r++) s += (double)val(9, r, (size_t)i) * (1.0 + 1e-9 * r);
        want[i] = s;
    }
    OK(rt_comm_allreduce_f64(g_c, v, N));
    CHECK(first_bad(v, want, N, sizeof(double)) == N, "allreduce_f64 differs from the rank-order sum");
    /* max, with NaN on the last rank at index 3 and -inf everywhere at 4 */
    for (int i = 0; i < N; i++) v[i] = (double)(g_rank * 10 + i % 7) - (i == 5 ? 100.0 * g_rank : 0.0);
    if (g_rank == g_W - 1) v[3] = NAN;
    v[4] = -INFINITY;
    OK(rt_comm_allreduce_max_f64(g_c, v, N));
    for (int i = 0; i < N; i++) {
        double w = i == 3 ? NAN : i == 4 ? -INFINITY : i == 5 ? (double)(i % 7) : (double)((g_W - 1) * 10 + i % 7);
        CHECK(w != w ? v[i] != v[i] : v[i] == w, "allreduce_max_f64[%d] = %g, want %g", i, v[i], w);
    }
    bool f = g_rank == g_W - 1;
    OK(rt_comm_allreduce_or(g_c, &f));
    CHECK(f, "or: the last rank's true was lost");
    f = false;
    OK(rt_comm_allreduce_or(g_c, &f));
    CHECK(!f, "or of all false is true");
    OK(rt_comm_allreduce_f64(g_c, NULL, 0));
    CHECK(rt_comm_allreduce_f64(g_c, NULL, 1) == DSCKPT_EINVAL, "allreduce_f64 NULL accepted");
}

static void test_stats(void) {
    rt_comm_stats_reset(g_c);
    double s;
    uint64_t bytes;
    rt_comm_stats(g_c, &s, &bytes);
    CHECK(s == 0 && bytes == 0, "stats not reset");
    size_t n = 4096 * (size_t)g_W;
    float *x = xmalloc(n * sizeof(float));
    fill(x, n, 11, g_rank, 0);
    size_t *counts = xmalloc((size_t)g_W * sizeof *counts);
    for (int r = 0; r < g_W; r++) counts[r] = 4096;
    OK(rt_comm_reduce_scatterv_f32(g_c, x, counts, x + 4096 * (size_t)g_rank));
    rt_comm_stats(g_c, &s, &bytes);
    CHECK(bytes == (uint64_t)(g_W - 1) * 4096 * sizeof(float), "reduce_scatterv sent %llu bytes",
          (unsigned long long)bytes);
    CHECK(s > 0 || g_W == 1, "no time counted");
    OK(rt_comm_allgather(g_c, x + 4096 * (size_t)g_rank, 4096 * sizeof(float), x));
    rt_comm_stats(g_c, NULL, &bytes);
    CHECK(bytes == 2 * (uint64_t)(g_W - 1) * 4096 * sizeof(float), "allgather: %llu bytes in all",
          (unsigned long long)bytes);
    /* A gather to one rank: each rank sends its block once, only to the root. */
    rt_comm_stats_reset(g_c);
    unsigned char *gr = xmalloc(4096 * (size_t)g_W);
    OK(rt_comm_gather(g_c, x, 4096, 0, g_rank == 0 ? gr : NULL));
    free(gr);
    rt_comm_stats(g_c, NULL, &bytes);
    CHECK(bytes == (g_rank == 0 ? 0 : 4096), "gather: rank %d sent %llu bytes", g_rank, (unsigned long long)bytes);
    free(x);
    free(counts);
}

static void run_all(size_t big_bytes, size_t big_floats) {
    size_t bsizes[] = {0, 1, 13, 4099, big_bytes};
    test_bcast(bsizes, 5);
    size_t gsizes[] = {0, 1, 7, 1000, big_bytes / (size_t)g_W};
    test_allgather(gsizes, 5);
    test_gatherv(gsizes, 5);
    test_exchangev(gsizes, 5);
    test_reduce_scatterv(big_floats);
    size_t asizes[] = {0, 1, (size_t)g_W - 1, (size_t)g_W + 1, 1000003, big_floats};
    test_allreduce_f32(asizes, 6);
    test_small_reductions();
}

/* ---- the self backend, in process --------------------------------------------------- */

static void test_self(void) {
    rt_comm *s = NULL;
    OK(rt_comm_open_self(&s));
    CHECK(rt_comm_rank(s) == 0 && rt_comm_size(s) == 1, "self: rank/size");
    CHECK(strcmp(rt_comm_backend(s), "self") == 0, "self: backend name");
    float x[5] = {1, 2, 3, 4, 5}, y[5] = {0};
    size_t cnt = 5;
    OK(rt_comm_reduce_scatterv_f32(s, x, &cnt, y));
    CHECK(memcmp(x, y, sizeof x) == 0, "self: reduce_scatterv is a copy");
    OK(rt_comm_allreduce_f32(s, x, 5));
    CHECK(x[4] == 5, "self: allreduce changed the data");
    OK(rt_comm_allgather(s, x, sizeof x, y));
    float g[5] = {0};
    size_t gc = sizeof x;
    OK(rt_comm_gatherv(s, x, sizeof x, 0, g, &gc));
    CHECK(memcmp(g, x, sizeof x) == 0, "self: gatherv is a copy");
    CHECK(rt_comm_gatherv(s, x, sizeof x, 0, g, NULL) == DSCKPT_EINVAL, "self: gatherv without counts accepted");
    uint64_t xb = 3 * sizeof(float);
    float z[5] = {0};
    OK(rt_comm_exchangev(s, x, &xb, z, &xb));
    CHECK(memcmp(z, x, 3 * sizeof(float)) == 0 && z[3] == 0, "self: exchangev is a copy of the self block");
    OK(rt_comm_barrier(s));
    CHECK(rt_comm_bcast(s, x, 4, 1) == DSCKPT_EINVAL, "self: root 1 accepted");
    rt_comm_close(s);
    rt_comm_close(NULL);
}

/* ---- buffers past 2 GiB (opt-in) ------------------------------------------------------ */

static void test_huge(void) {
    /* An all-reduce of 600M floats: at W=2 the all-gather's second block starts past
     * INT_MAX bytes, so the point-to-point gather path runs; the broadcast goes in
     * three pieces. */
    size_t n = (size_t)600 << 20;
    float *buf = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) buf[i] = (float)((i % 1000) * (size_t)(g_rank + 1));
    OK(rt_comm_allreduce_f32(g_c, buf, n));
    float f = (float)(g_W * (g_W + 1) / 2);
    size_t bad = n;
    for (size_t i = 0; i < n; i++)
        if (buf[i] != (float)(i % 1000) * f) { bad = i; break; }
    CHECK(bad == n, "huge allreduce: element %zu differs", bad);
    if (g_rank == 0)
        for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 0xffff);
    OK(rt_comm_bcast(g_c, buf, n * sizeof(float), 0));
    bad = n;
    for (size_t i = 0; i < n; i++)
        if (buf[i] != (float)(i & 0xffff)) { bad = i; break; }
    CHECK(bad == n, "huge bcast: element %zu differs", bad);
    free(buf);
}

/* ---- benchmark ------------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median over ranks-max of `reps` timed runs (a barrier before each). */
static double time_it(int which, float *send, float *recv, size_t n, int *rc_counts, size_t *counts,
                      int reps) {
    double *t = xmalloc((size_t)reps * sizeof *t);
    for (int k = -2; k < reps; k++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = now_s();
        switch (which) {
        case 0: OK(rt_comm_reduce_scatterv_f32(g_c, send, counts, recv)); break;
        case 1: MPI_Reduce_scatter(send, recv, rc_counts, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); break;
        case 2: OK(rt_comm_allreduce_f32(g_c, send, n)); break;
        case 3: MPI_Allreduce(MPI_IN_PLACE, send, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); break;
        }
        double dt = now_s() - t0, mx = 0;
        MPI_Allreduce(&dt, &mx, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (k >= 0) t[k] = mx;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    double med = t[reps / 2];
    free(t);
    return med;
}

static void bench(size_t bytes, int reps) {
    size_t n = bytes / sizeof(float) / (size_t)g_W * (size_t)g_W, W = (size_t)g_W;
    float *send = xmalloc(n * sizeof(float)), *recv = xmalloc(n / W * sizeof(float));
    size_t *counts = xmalloc(W * sizeof *counts);
    int *rc = xmalloc(W * sizeof *rc);
    for (size_t r = 0; r < W; r++) {
        counts[r] = n / W;
        rc[r] = (int)(n / W);
    }
    fill(send, n, 5, g_rank, 0);
    const char *names[] = {"rt_comm_reduce_scatterv_f32", "MPI_Reduce_scatter", "rt_comm_allreduce_f32",
                           "MPI_Allreduce"};
    for (int which = 0; which < 4; which++) {
        double t = time_it(which, send, recv, n, rc, counts, reps);
        if (g_rank == 0)
            printf("W=%d %-28s %6.1f MiB  %8.3f ms  %6.2f GB/s (buffer bytes / time)\n", g_W, names[which],
                   (double)(n * sizeof(float)) / (1 << 20), t * 1e3, (double)(n * sizeof(float)) / t / 1e9);
    }
    free(send);
    free(recv);
    free(counts);
    free(rc);
}

int main(int argc, char **argv) {
    dsckpt_status st = rt_comm_open_mpi(&argc, &argv, &g_c);
    if (st != DSCKPT_OK) {
        fprintf(stderr, "test_comm: rt_comm_open_mpi: %s: %s\n", dsckpt_status_name(st), dsckpt_last_error());
        return 2;
    }
    g_rank = rt_comm_rank(g_c);
    g_W = rt_comm_size(g_c);
    int huge = 0, do_bench = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--huge")) huge = 1;
        else if (!strcmp(argv[i], "--bench")) do_bench = 1;
        else {
            if (g_rank == 0) fprintf(stderr, "usage: test_comm_mpi [--huge] [--bench]\n");
            rt_comm_close(g_c);
            return 2;
        }
    }
    if (do_bench) {
        bench((size_t)32 << 20, 21);
        rt_comm_close(g_c);
        return 0;
    }

    int mpi_rank = -1, mpi_size = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &mpi_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &mpi_size);
    CHECK(mpi_rank == g_rank && mpi_size == g_W, "rank/size %d/%d vs MPI %d/%d", g_rank, g_W, mpi_rank, mpi_size);
    CHECK(strcmp(rt_comm_backend(g_c), "mpi") == 0, "backend name");
    OK(rt_comm_barrier(g_c));
    test_stats();

    /* Default message cap: tens of MB. */
    run_all((size_t)24 << 20 | 3, (size_t)8 << 20 | 5);
    /* A cap of 4100 bytes: every path in pieces (1025-float reduce-scatter rounds). */
    OK(rt_comm_set_max_message(g_c, 4100));
    run_all(300001, 300007);
    /* The smallest cap, on small buffers. */
    OK(rt_comm_set_max_message(g_c, 64));
    run_all(5003, 5003);
    CHECK(rt_comm_set_max_message(g_c, 63) == DSCKPT_EINVAL, "cap 63 accepted");
    OK(rt_comm_set_max_message(g_c, (size_t)1 << 30));

    if (huge) test_huge();
    test_self();

    /* Everyone learns whether anyone failed. */
    double failed = (double)g_fail;
    OK(rt_comm_allreduce_max_f64(g_c, &failed, 1));
    if (g_rank == 0)
        printf("test_comm: W=%d, %ld checks on rank 0, %s\n", g_W, g_checks,
               failed > 0 ? "FAILED (see messages above)" : "all passed");
    rt_comm_close(g_c);
    return failed > 0 ? 1 : 0;
}
