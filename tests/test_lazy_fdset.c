/*
 * test_lazy_fdset.c — lazy file sets (ds_fdset_open_lazy), as a resuming rank uses
 * them: on a W=4 native checkpoint, plain and compressed,
 *  - opening opens nothing; reading one tensor range opens exactly the files that
 *    hold it (from the fragment map), and the bytes equal what was written;
 *  - eight threads reading every tensor at once through one lazy set (so several
 *    race to open the same file, compressed files' headers among them) read what an
 *    eager set reads;
 *  - a truncated rank file: the eager set refuses to open at all, the lazy set reads
 *    the other files and refuses that one (ECORRUPT), on every read of it;
 *  - memory lent to the chunk cache (ds_zcache_lend): slot buffers are carved from
 *    it while it lasts, then allocated, and only the allocated ones are freed (an
 *    interior pointer lent, so freeing a lent one fails under the sanitizers); a
 *    deferred reader of a compressed checkpoint with lent memory reads what was
 *    written.
 */
#include "ckpt.h"
#include "fsutil.h"
#include "native_write.h"
#include "synth.h"
#include "zfile.h"
#include "tutil.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define TAG "global_step3"
#define W 4

static float value(ds_state s, uint32_t t, uint64_t i) {
    uint64_t x = ((uint64_t)t << 40) ^ ((uint64_t)s << 36) ^ i;
    x = (x ^ (x >> 31)) * 0x9e3779b97f4a7c15ull;
    return (float)((x >> 40) & 0xffff) / 65536.0f - 0.5f;
}

static dsckpt_status fill(void *user, ds_state s, uint32_t t, uint64_t start, uint64_t numel, void *dst, int worker) {
    (void)worker;
    const ds_tensor *ts = user;
    for (uint64_t i = 0; i < numel; i++) {
        float f = value(s, t, start + i);
        if (s == DS_ST_W16 && ts[t].dtype != DSCKPT_F32) {
            uint16_t h = (uint16_t)((start + i) & 0x3fff) | 0x3c00;
            memcpy((uint8_t *)dst + 2 * i, &h, 2);
        } else {
            memcpy((uint8_t *)dst + 4 * i, &f, 4);
        }
    }
    return DSCKPT_OK;
}

/* A stage-2 checkpoint of W ranks under root (chunks of 64 KiB; compressed at
 * `level` when > 0); returns the tag directory (malloc'd). */
static char *write_ckpt(const char *root, int level) {
    ds_tensor *ts = NULL;
    size_t nt = 0;
    TU_ASSERT_OK(ds_synth_tensors(400000, DSCKPT_BF16, &ts, &nt));
    char *tagdir = tu_path(root, TAG);
    TU_ASSERT_OK(ds_mkdir(tagdir));
    ds_native_spec spec = {.tensors = ts, .ntensors = nt, .ngroups = 2, .stage = 2, .world_size = W, .tag = TAG,
                           .step = 3, .train_dtype = "bf16", .chunk_size = 65536, .compress_level = level};
    ds_native_out *no = NULL;
    TU_ASSERT_OK(ds_native_prepare(&spec, tagdir, &no));
    TU_ASSERT_OK(ds_native_write_all(no, fill, ts, 2, NULL));
    ds_native_out_free(no);
    ds_synth_tensors_free(ts, nt);
    return tagdir;
}

/* fp32 elements [start, start+n) of tensor t equal what fill() wrote. */
static int range_ok(const float *got, uint32_t t, uint64_t start, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        float want = value(DS_ST_FP32, t, start + i);
        if (memcmp(&got[i], &want, 4)) return 0;
    }
    return 1;
}

/* Reads one range of one tensor through a lazy set: exactly its files get opened. */
static void one_range(int level) {
    char *root = tu_mkdtemp(), *dir = write_ckpt(root, level);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(dir, NULL, &c));
    CU_ASSERT_EQUAL_FATAL(c->nfiles, W);
    ds_fdset fs;
    TU_ASSERT_OK(ds_fdset_open_lazy(c, &fs));
    CU_ASSERT_EQUAL(ds_fdset_opened(&fs), 0);
    /* The largest tensor, a range in its middle: the files its fragments name. */
    uint32_t t = 0;
    for (uint32_t k = 1; k < c->ntensors; k++)
        if (c->tensors[k].numel > c->tensors[t].numel) t = k;
    uint64_t start = c->tensors[t].numel / 2, n = 1000;
    bool want_open[W] = {false};
    size_t nf, nwant = 0;
    const ds_frag *fr = ds_ckpt_frags(c, DS_ST_FP32, t, &nf);
    for (size_t k = 0; k < nf; k++)
        if (fr[k].start < start + n && start < fr[k].start + fr[k].numel && !want_open[fr[k].file]) {
            want_open[fr[k].file] = true;
            nwant++;
        }
    CU_ASSERT(nwant >= 1 && nwant < W);
    float *got = malloc(n * sizeof *got);
    TU_ASSERT_OK(ds_ckpt_read(c, &fs, DS_ST_FP32, t, start, n, got));
    CU_ASSERT(range_ok(got, t, start, n));
    CU_ASSERT_EQUAL(ds_fdset_opened(&fs), nwant);
    for (size_t i = 0; i < W; i++) CU_ASSERT_EQUAL(ds_fdset_is_open(&fs, i), want_open[i]);
    /* Again: nothing more is opened. */
    TU_ASSERT_OK(ds_ckpt_read(c, &fs, DS_ST_FP32, t, start, n, got));
    CU_ASSERT_EQUAL(ds_fdset_opened(&fs), nwant);
    free(got);
    ds_fdset_close(&fs);
    dsckpt_ckpt_free(c);
    tu_rmtree(root);
    free(dir);
    free(root);
}

static void test_one_range_plain(void) { one_range(0); }
static void test_one_range_compressed(void) { one_range(1); }

typedef struct reader {
    const dsckpt_ckpt *c;
    const ds_fdset *fs;
    int id;
    int bad;
    dsckpt_status st;
} reader;

/* Every tensor's fp32 state, each thread starting at another tensor. */
static void *read_all(void *p) {
    reader *r = p;
    const dsckpt_ckpt *c = r->c;
    for (size_t j = 0; j < c->ntensors && !r->st; j++) {
        uint32_t t = (uint32_t)((j + (size_t)r->id * 7) % c->ntensors);
        uint64_t n = c->tensors[t].numel;
        if (!c->tensors[t].trainable) continue;
        float *got = malloc(n * sizeof *got + 1);
        r->st = ds_ckpt_read(c, r->fs, DS_ST_FP32, t, 0, n, got);
        if (!r->st && !range_ok(got, t, 0, n)) r->bad++;
        free(got);
    }
    return NULL;
}

static void threads(int level) {
    char *root = tu_mkdtemp(), *dir = write_ckpt(root, level);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(dir, NULL, &c));
    ds_fdset fs;
    TU_ASSERT_OK(ds_fdset_open_lazy(c, &fs));
    enum { NT = 8 };
    pthread_t th[NT];
    reader rd[NT];
    for (int i = 0; i < NT; i++) {
        rd[i] = (reader){.c = c, .fs = &fs, .id = i};
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, read_all, &rd[i]) == 0);
    }
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(rd[i].st, DSCKPT_OK);
        CU_ASSERT_EQUAL(rd[i].bad, 0);
    }
    CU_ASSERT_EQUAL(ds_fdset_opened(&fs), W);
    ds_fdset_close(&fs);
    dsckpt_ckpt_free(c);
    tu_rmtree(root);
    free(dir);
    free(root);
}

static void test_threads_plain(void) { threads(0); }
static void test_threads_compressed(void) { threads(1); }

/* The first fp32 tensor range held by file `file` alone: *t, *start. */
static void range_in_file(const dsckpt_ckpt *c, uint32_t file, uint32_t *t, uint64_t *start, uint64_t *n) {
    for (uint32_t k = 0; k < c->ntensors; k++) {
        size_t nf;
        const ds_frag *fr = ds_ckpt_frags(c, DS_ST_FP32, k, &nf);
        for (size_t j = 0; j < nf; j++)
            if (fr[j].file == file && fr[j].numel) {
                *t = k;
                *start = fr[j].start;
                *n = fr[j].numel;
                return;
            }
    }
    CU_FAIL_FATAL("no fragment in that file");
}

static void test_truncated_file(void) {
    char *root = tu_mkdtemp(), *dir = write_ckpt(root, 0);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(dir, NULL, &c));
    CU_ASSERT_FATAL(tu_truncate(c->files[2].path, 1000) == 0);
    ds_fdset fs;
    CU_ASSERT_EQUAL(ds_fdset_open(c, &fs), DSCKPT_ECORRUPT);
    TU_ASSERT_OK(ds_fdset_open_lazy(c, &fs));
    uint32_t t;
    uint64_t start, n;
    range_in_file(c, 0, &t, &start, &n);
    float *got = malloc(n * sizeof *got);
    TU_ASSERT_OK(ds_ckpt_read(c, &fs, DS_ST_FP32, t, start, n, got));
    CU_ASSERT(range_ok(got, t, start, n));
    free(got);
    range_in_file(c, 2, &t, &start, &n);
    got = malloc(n * sizeof *got);
    for (int k = 0; k < 2; k++) {
        CU_ASSERT_EQUAL(ds_ckpt_read(c, &fs, DS_ST_FP32, t, start, n, got), DSCKPT_ECORRUPT);
        CU_ASSERT(strstr(dsckpt_last_error(), "rank_00002") != NULL);
    }
    CU_ASSERT(ds_fdset_is_open(&fs, 0) && ds_fdset_is_open(&fs, 2) && !ds_fdset_is_open(&fs, 1));
    free(got);
    ds_fdset_close(&fs);
    dsckpt_ckpt_free(c);
    tu_rmtree(root);
    free(dir);
    free(root);
}

/* p lies in [lo, lo + n). */
static int inside(const void *p, const uint8_t *lo, size_t n) {
    return (const uint8_t *)p >= lo && (const uint8_t *)p < lo + n;
}

static void test_lent_slots(void) {
    enum { MB = 1 << 20 };
    uint8_t *block = calloc(4, MB);
    CU_ASSERT_FATAL(block != NULL);
    uint8_t *lent = block + 100; /* not a block of its own: free() on it would fail */
    size_t lent_n = 3 * MB + 64;
    ds_zcache *z = NULL;
    TU_ASSERT_OK(ds_zcache_new(2, &z));
    ds_zcache_lend(z, lent, lent_n);
    ds_zcache_lend(z, block, 10); /* too small to carve a line from: ignored */
    bool must[2];
    ds_zslot *s0 = ds_zcache_acquire(z, 0, 0, &must[0]);
    ds_zslot *s1 = ds_zcache_acquire(z, 0, 1, &must[1]);
    CU_ASSERT_FATAL(s0 && s1 && s0 != s1 && must[0] && must[1]);
    TU_ASSERT_OK(ds_zslot_reserve(z, s0, MB, MB));
    TU_ASSERT_OK(ds_zslot_reserve(z, s1, MB, MB));
    /* 3 MiB lent: three buffers carved from it, on 64-byte lines; the fourth allocated. */
    CU_ASSERT(inside(s0->raw, lent, lent_n) && inside(s0->stored, lent, lent_n) && inside(s1->raw, lent, lent_n));
    CU_ASSERT(s0->raw_lent && s0->stored_lent && s1->raw_lent && !s1->stored_lent);
    CU_ASSERT(!inside(s1->stored, block, 4 * MB));
    CU_ASSERT((uintptr_t)s0->raw % 64 == 0 && (uintptr_t)s0->stored % 64 == 0 && (uintptr_t)s1->raw % 64 == 0);
    CU_ASSERT(s0->stored >= s0->raw + MB && s1->raw >= s0->stored + MB); /* no overlap */
    memset(s0->raw, 1, MB);
    memset(s0->stored, 2, MB);
    memset(s1->raw, 3, MB);
    memset(s1->stored, 4, MB);
    uint8_t *r0 = s0->raw;
    /* Growing a lent buffer past what is left allocates it (the lent part is dropped, not freed). */
    TU_ASSERT_OK(ds_zslot_reserve(z, s0, 2 * MB, MB));
    CU_ASSERT(!s0->raw_lent && !inside(s0->raw, block, 4 * MB) && s0->stored_lent);
    memset(s0->raw, 5, 2 * MB);
    ds_zcache_loaded(z, s0, true);
    ds_zcache_loaded(z, s1, true);
    ds_zcache_release(z, s0);
    ds_zcache_release(z, s1);
    ds_zcache_free(z);
    CU_ASSERT(r0[0] == 1 && r0[MB - 1] == 1 && block[99] == 0); /* the lender's memory, as the cache left it */
    free(block);
}

/* A rank's reader: one thread, deferred verdicts, the cache on lent memory, and
 * (stream) the chunks unshuffled with stores around the cache, as dstrain's load
 * reads; every tensor's fp32 state in order equals what was written. */
static void lent_deferred_reader(bool stream) {
    char *root = tu_mkdtemp(), *dir = write_ckpt(root, 1);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(dir, NULL, &c));
    ds_fdset fs;
    TU_ASSERT_OK(ds_fdset_open_lazy(c, &fs));
    ds_fdset_defer_checks(&fs);
    size_t lent_n = (size_t)8 << 20;
    uint8_t *lent = malloc(lent_n);
    CU_ASSERT_FATAL(lent != NULL);
    memset(lent, 0xa5, lent_n);
    ds_fdset_lend(&fs, lent + 1, lent_n - 1);
    if (stream) ds_fdset_stream_reads(&fs);
    int bad = 0;
    for (uint32_t t = 0; t < c->ntensors; t++) {
        uint64_t n = c->tensors[t].numel;
        if (!c->tensors[t].trainable) continue;
        float *got = malloc(n * sizeof *got + 1);
        TU_ASSERT_OK(ds_ckpt_read(c, &fs, DS_ST_FP32, t, 0, n, got));
        bad += !range_ok(got, t, 0, n);
        free(got);
    }
    TU_ASSERT_OK(ds_fdset_finish(c, &fs));
    CU_ASSERT_EQUAL(bad, 0);
    size_t changed = 0;
    for (size_t i = 0; i < lent_n; i++) changed += lent[i] != 0xa5;
    CU_ASSERT(changed > ((size_t)64 << 10)); /* the chunks (64 KiB each) went there */
    CU_ASSERT_EQUAL(lent[0], 0xa5);           /* nothing before what was lent */
    ds_fdset_close(&fs);
    free(lent);
    dsckpt_ckpt_free(c);
    tu_rmtree(root);
    free(dir);
    free(root);
}

static void test_lent_deferred_reader(void) { lent_deferred_reader(false); }
static void test_lent_deferred_stream_reader(void) { lent_deferred_reader(true); }

int main(void) {
    static const tu_test tests[] = {
        {"one range opens only its files", test_one_range_plain},
        {"one range opens only its files, compressed", test_one_range_compressed},
        {"eight threads open files as they read", test_threads_plain},
        {"eight threads open files as they read, compressed", test_threads_compressed},
        {"a truncated file fails only its reads", test_truncated_file},
        {"the chunk cache carves lent memory, frees only its own", test_lent_slots},
        {"a deferred reader on lent memory reads what was written", test_lent_deferred_reader},
        {"the same reader, unshuffling around the cache", test_lent_deferred_stream_reader},
        {NULL, NULL},
    };
    return tu_main("lazy_fdset", tests);
}
