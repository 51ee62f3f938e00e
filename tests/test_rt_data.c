/*
 * test_rt_data.c — the byte-level loader: global batch k holds the same samples
 * for every world size and accumulation split, batches differ across k and seeds,
 * the documented hash is what the code computes, eval windows tile the eval part
 * and shard by rank, the eval loss sum is world-size independent, and bad inputs
 * are refused with their own status and message.
 */
#include "data.h"
#include "tutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SEQ 64
#define ROW (SEQ + 1)

static rt_data *g_d;
static char *g_corpus, *g_dir;

static int setup(void) {
    g_corpus = tu_src_path("fixtures/corpus/licenses.txt");
    g_dir = tu_mkdtemp();
    return rt_data_open(g_corpus, SEQ, RT_DATA_EVAL_FRACTION_DEFAULT, &g_d) != DSCKPT_OK;
}

static void test_open_split(void) {
    size_t n = 0;
    uint8_t *all = tu_read(g_corpus, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(all);
    CU_ASSERT(n >= 200000);
    uint64_t ev = (uint64_t)floor((double)n * 0.1);
    CU_ASSERT_EQUAL(rt_data_eval_bytes(g_d), ev);
    CU_ASSERT_EQUAL(rt_data_train_bytes(g_d), n - ev);
    CU_ASSERT_EQUAL(rt_data_seq_len(g_d), SEQ);
    CU_ASSERT_EQUAL(memcmp(rt_data_bytes(g_d), all, n), 0);
    free(all);
}

static int cmp_row(const void *a, const void *b) { return memcmp(a, b, ROW * sizeof(int32_t)); }

/* All G rows of global batch k as split over (W, accum, mb), sorted. */
static int32_t *gather(uint64_t seed, uint64_t k, int W, uint64_t accum, uint64_t mb) {
    uint64_t G = (uint64_t)W * accum * mb;
    int32_t *rows = malloc(G * ROW * sizeof *rows);
    size_t at = 0;
    for (int r = 0; r < W; r++)
        for (uint64_t a = 0; a < accum; a++) {
            TU_ASSERT_OK(rt_data_fill_micro(g_d, seed, k, W, r, a, mb, rows + at * ROW));
            at += mb;
        }
    qsort(rows, G, ROW * sizeof(int32_t), cmp_row);
    return rows;
}

static void test_world_size_independent(void) {
    /* G = 24 split six ways. */
    static const struct {
        int W;
        uint64_t accum, mb;
    } splits[] = {{1, 1, 24}, {1, 3, 8}, {2, 1, 12}, {2, 4, 3}, {4, 3, 2}, {4, 6, 1}};
    for (uint64_t k = 0; k < 3; k++) {
        int32_t *ref = gather(7, k, 1, 1, 24);
        for (size_t s = 1; s < sizeof splits / sizeof splits[0]; s++) {
            int32_t *got = gather(7, k, splits[s].W, splits[s].accum, splits[s].mb);
            CU_ASSERT_EQUAL(memcmp(ref, got, 24 * ROW * sizeof(int32_t)), 0);
            free(got);
        }
        free(ref);
    }
    /* Stronger than the multiset: rank r, micro-step a, row i reads sample (a*W + r)*mb + i. */
    int32_t row[ROW], want[ROW * 3];
    TU_ASSERT_OK(rt_data_fill_micro(g_d, 7, 5, 4, 2, 1, 3, want)); /* (1*4 + 2)*3 = 18, 19, 20 */
    for (int i = 0; i < 3; i++) {
        rt_data_fill_sample(g_d, 7, 5, 18 + (uint64_t)i, row);
        CU_ASSERT_EQUAL(memcmp(row, want + i * ROW, sizeof row), 0);
    }
}

static void test_batches_differ(void) {
    int32_t *a = gather(7, 0, 2, 2, 6), *b = gather(7, 1, 2, 2, 6), *c = gather(8, 0, 2, 2, 6);
    CU_ASSERT_NOT_EQUAL(memcmp(a, b, 24 * ROW * sizeof(int32_t)), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(a, c, 24 * ROW * sizeof(int32_t)), 0);
    free(a);
    free(b);
    free(c);
    /* Offsets of consecutive batches rarely repeat: over 100 batches of 24 at most a
     * handful of the 2400 windows coincide (190k possible starts). */
    uint64_t seen = 0, dup = 0;
    uint64_t *offs = malloc(2400 * sizeof *offs);
    for (uint64_t k = 0; k < 100; k++)
        for (uint64_t j = 0; j < 24; j++) offs[seen++] = rt_data_sample_offset(g_d, 1, k, j);
    for (uint64_t i = 0; i < seen; i++)
        for (uint64_t m = i + 1; m < seen; m++) dup += offs[i] == offs[m];
    CU_ASSERT(dup < 60);
    free(offs);
}

/* The formula written in data.h, re-implemented here. */
static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void test_documented_hash(void) {
    const uint64_t C = 0x9e3779b97f4a7c15ull, starts = rt_data_train_bytes(g_d) - SEQ;
    const uint64_t seeds[] = {0, 1, 1234, UINT64_MAX};
    for (size_t s = 0; s < 4; s++)
        for (uint64_t k = 0; k < 50; k += 7)
            for (uint64_t j = 0; j < 40; j += 3) {
                uint64_t h = mix(mix(mix(seeds[s] + C) + k + C) + j + C);
                uint64_t want = (uint64_t)(((unsigned __int128)h * starts) >> 64);
                CU_ASSERT_EQUAL(rt_data_sample_offset(g_d, seeds[s], k, j), want);
            }
    /* Every window lies in the train part; starts spread over the whole range. */
    uint64_t lo = UINT64_MAX, hi = 0;
    double sum = 0;
    const uint64_t n = 100000;
    for (uint64_t j = 0; j < n; j++) {
        uint64_t o = rt_data_sample_offset(g_d, 3, j / 100, j % 100);
        CU_ASSERT_FATAL(o + ROW <= rt_data_train_bytes(g_d));
        lo = DS_MIN(lo, o), hi = DS_MAX(hi, o), sum += (double)o;
    }
    CU_ASSERT(lo < starts / 100 && hi > starts - starts / 100);
    CU_ASSERT(fabs(sum / (double)n / (double)starts - 0.5) < 0.01);
    /* A row is the bytes at its offset, widened. */
    int32_t row[ROW];
    rt_data_fill_sample(g_d, 9, 4, 2, row);
    const uint8_t *b = rt_data_bytes(g_d) + rt_data_sample_offset(g_d, 9, 4, 2);
    for (int t = 0; t < ROW; t++) CU_ASSERT_EQUAL(row[t], b[t]);
}

static void test_eval_windows(void) {
    const uint64_t N = rt_data_eval_windows(g_d, 0), n_train = rt_data_train_bytes(g_d);
    CU_ASSERT_EQUAL(N, rt_data_eval_bytes(g_d) / ROW);
    CU_ASSERT_EQUAL(rt_data_eval_windows(g_d, 10), 10);
    CU_ASSERT_EQUAL(rt_data_eval_windows(g_d, N + 5), N);
    /* W = 1: windows 0..N-1 in order, tiling the eval part without overlap. */
    uint64_t mb = 5, rows, ids[8], next = 0;
    int32_t tok[8 * ROW];
    uint64_t nb = rt_data_eval_batches(g_d, 0, 1, mb);
    CU_ASSERT_EQUAL(nb, (N + mb - 1) / mb);
    for (uint64_t b = 0; b < nb; b++) {
        TU_ASSERT_OK(rt_data_fill_eval(g_d, 0, 1, 0, b, mb, tok, ids, &rows));
        CU_ASSERT(rows == mb || b == nb - 1);
        for (uint64_t i = 0; i < rows; i++, next++) {
            CU_ASSERT_EQUAL(ids[i], next);
            uint64_t off = rt_data_eval_window_offset(g_d, ids[i]);
            CU_ASSERT_EQUAL(off, n_train + next * ROW); /* adjacent, disjoint */
            CU_ASSERT(off + ROW <= n_train + rt_data_eval_bytes(g_d));
            const uint8_t *src = rt_data_bytes(g_d) + off;
            for (int t = 0; t < ROW; t++) CU_ASSERT_EQUAL(tok[i * ROW + (uint64_t)t], src[t]);
        }
    }
    CU_ASSERT_EQUAL(next, N);
    /* W = 2, 3, 4: the union over ranks is the W = 1 list, each window once; all ranks
     * run the same number of micro-batches. */
    for (int W = 2; W <= 4; W++) {
        uint8_t *count = calloc(N, 1);
        nb = rt_data_eval_batches(g_d, 0, W, 4);
        for (int r = 0; r < W; r++)
            for (uint64_t b = 0; b < nb; b++) {
                TU_ASSERT_OK(rt_data_fill_eval(g_d, 0, W, r, b, 4, tok, ids, &rows));
                CU_ASSERT(rows <= 4);
                for (uint64_t i = 0; i < rows; i++) {
                    CU_ASSERT_FATAL(ids[i] < N);
                    CU_ASSERT_EQUAL(ids[i] % (uint64_t)W, (uint64_t)r);
                    count[ids[i]]++;
                }
            }
        for (uint64_t w = 0; w < N; w++) CU_ASSERT_EQUAL(count[w], 1);
        /* one batch past the end is empty, not an error */
        TU_ASSERT_OK(rt_data_fill_eval(g_d, 0, W, W - 1, nb, 4, tok, ids, &rows));
        CU_ASSERT_EQUAL(rows, 0);
        free(count);
    }
}

/* A stand-in for a model's per-window loss: any deterministic function of the window. */
static double window_loss(const int32_t *t) {
    double s = 0;
    for (int i = 0; i < ROW; i++) s += log1p((double)t[i]) / 3.0;
    return s / ROW;
}

static void test_eval_sum(void) {
    const uint64_t N = rt_data_eval_windows(g_d, 0);
    double mean[5] = {0}, naive = 0;
    int32_t tok[3 * ROW];
    uint64_t rows;
    for (int W = 1; W <= 4; W++) {
        rt_eval_sum total = {0};
        uint64_t nb = rt_data_eval_batches(g_d, 0, W, 3);
        for (int r = 0; r < W; r++) {
            rt_eval_sum mine = {0};
            for (uint64_t b = 0; b < nb; b++) {
                TU_ASSERT_OK(rt_data_fill_eval(g_d, 0, W, r, b, 3, tok, NULL, &rows));
                for (uint64_t i = 0; i < rows; i++) {
                    double l = window_loss(tok + i * ROW);
                    rt_eval_sum_add(&mine, l);
                    if (W == 1) naive += l;
                }
            }
            rt_eval_sum_merge(&total, &mine); /* what MPI_SUM does */
        }
        CU_ASSERT_EQUAL(total.windows, N);
        mean[W] = rt_eval_sum_mean(&total);
    }
    for (int W = 2; W <= 4; W++) CU_ASSERT_EQUAL(memcmp(&mean[1], &mean[W], sizeof(double)), 0);
    CU_ASSERT(fabs(mean[1] - naive / (double)N) < 1e-9);
    rt_eval_sum s = {0};
    CU_ASSERT(isnan(rt_eval_sum_mean(&s)));
    rt_eval_sum_add(&s, 2.5);
    CU_ASSERT_EQUAL(rt_eval_sum_mean(&s), 2.5);
    rt_eval_sum_add(&s, NAN);
    CU_ASSERT(isnan(rt_eval_sum_mean(&s)));
}

static void expect(dsckpt_status got, dsckpt_status want, const char *n1, const char *n2) {
    if (got != want || !strstr(dsckpt_last_error(), n1) || (n2 && !strstr(dsckpt_last_error(), n2)))
        fprintf(stderr, "\n  got %s: %s\n", dsckpt_status_name(got), dsckpt_last_error());
    CU_ASSERT_EQUAL(got, want);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), n1));
    if (n2) CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), n2));
}

static void test_errors(void) {
    rt_data *d = NULL;
    char *missing = tu_path(g_dir, "no-such.txt");
    expect(rt_data_open(missing, SEQ, 0.1, &d), DSCKPT_ENOENT, "no-such.txt", NULL);
    CU_ASSERT_PTR_NULL(d);
    /* 1000 bytes, seq_len 64, eval 0.05: eval = 50 < 65. */
    char *small = tu_path(g_dir, "small.txt");
    char buf[1000];
    memset(buf, 'a', sizeof buf);
    CU_ASSERT_EQUAL_FATAL(tu_write(small, buf, sizeof buf), 0);
    expect(rt_data_open(small, SEQ, 0.05, &d), DSCKPT_EINVAL, "small.txt", "eval 50");
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "seq_len + 1 = 65"));
    /* eval 0.95: train 50 < 65 */
    expect(rt_data_open(small, SEQ, 0.95, &d), DSCKPT_EINVAL, "small.txt", "train 50");
    /* Exactly enough: 130 bytes at 0.5 -> 65 + 65 works; 129 does not. */
    char *edge = tu_path(g_dir, "edge.txt");
    CU_ASSERT_EQUAL_FATAL(tu_write(edge, buf, 130), 0);
    TU_ASSERT_OK(rt_data_open(edge, SEQ, 0.5, &d));
    CU_ASSERT_EQUAL(rt_data_train_bytes(d), 65);
    CU_ASSERT_EQUAL(rt_data_sample_offset(d, 1, 2, 3), 0); /* one possible window */
    CU_ASSERT_EQUAL(rt_data_eval_windows(d, 0), 1);
    rt_data_free(d);
    d = NULL;
    CU_ASSERT_EQUAL_FATAL(tu_write(edge, buf, 129), 0);
    expect(rt_data_open(edge, SEQ, 0.5, &d), DSCKPT_EINVAL, "edge.txt", "129 bytes");
    CU_ASSERT_EQUAL_FATAL(tu_write(edge, buf, 0), 0);
    expect(rt_data_open(edge, SEQ, 0.5, &d), DSCKPT_EINVAL, "edge.txt", "0 bytes");
    /* Arguments. */
    expect(rt_data_open(g_corpus, 0, 0.1, &d), DSCKPT_EINVAL, "seq_len", NULL);
    expect(rt_data_open(g_corpus, SEQ, 0.0, &d), DSCKPT_EINVAL, "eval fraction", NULL);
    expect(rt_data_open(g_corpus, SEQ, 1.0, &d), DSCKPT_EINVAL, "eval fraction", NULL);
    expect(rt_data_open(g_corpus, SEQ, NAN, &d), DSCKPT_EINVAL, "eval fraction", NULL);
    expect(rt_data_open(g_dir, SEQ, 0.1, &d), DSCKPT_EIO, "not a regular file (a directory)", NULL);
    CU_ASSERT_PTR_NULL(d);
    int32_t tok[ROW];
    uint64_t rows;
    expect(rt_data_fill_micro(g_d, 1, 0, 2, 2, 0, 1, tok), DSCKPT_EINVAL, "rank 2", NULL);
    expect(rt_data_fill_micro(g_d, 1, 0, 0, 0, 0, 1, tok), DSCKPT_EINVAL, "world size 0", NULL);
    expect(rt_data_fill_micro(g_d, 1, 0, 1, 0, 0, 0, tok), DSCKPT_EINVAL, "micro-batch", NULL);
    expect(rt_data_fill_micro(g_d, 1, 0, 4, 1, UINT64_MAX / 2, 8, tok), DSCKPT_EINVAL, "overflows", NULL);
    expect(rt_data_fill_eval(g_d, 0, 2, -1, 0, 1, tok, NULL, &rows), DSCKPT_EINVAL, "rank -1", NULL);
    rt_data_free(NULL);
    free(missing);
    free(small);
    free(edge);
}

int main(void) {
    if (setup()) {
        fprintf(stderr, "cannot open the corpus: %s\n", dsckpt_last_error());
        return 2;
    }
    static const tu_test tests[] = {{"open: train/eval split of the corpus", test_open_split},
                                    {"global batch k: same samples for W=1,2,4 and any accumulation",
                                     test_world_size_independent},
                                    {"different k and seeds give different batches", test_batches_differ},
                                    {"the documented hash, window bounds and spread", test_documented_hash},
                                    {"eval windows tile the eval part; ranks shard them", test_eval_windows},
                                    {"eval loss sum: same bits for every world size", test_eval_sum},
                                    {"errors: missing, too short, bad arguments", test_errors},
                                    {NULL, NULL}};
    int rc = tu_main("rt_data", tests);
    rt_data_free(g_d);
    tu_rmtree(g_dir);
    free(g_dir);
    free(g_corpus);
    return rc;
}
