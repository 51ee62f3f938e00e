/*
 * test_commit.c — durability and "nothing lost" under failures.
 *
 * Writes are made to fail part-way in two ways:
 *   - ds_fault_inject_write(budget, ENOSPC): every write through ds_stream (rank
 *     files) or ds_pwrite_full (consolidate's outputs, the manifest, `latest`,
 *     trainer_state.json, ds_write_file_atomic) fails once `budget` more bytes
 *     have been written;
 *   - RLIMIT_FSIZE (SIGXFSZ ignored): a real EFBIG from the kernel for any write
 *     past the limit; it applies to root too, and lets one file (the manifest)
 *     fail while smaller ones succeed.
 * After each failure: the status and message name the failing file, the output path
 * does not exist (or the previous output is intact, byte for byte, when replacing
 * with force), no temporary sibling is left, and inputs still verify. Also: refusal
 * to replace without force, tag directories without a manifest (a crash before the
 * commit point) and ds_write_file_atomic.
 *
 * Known library gaps are listed through known_gap() (DSCKPT_TEST_KNOWN_GAPS=1 turns
 * them into failing assertions; by default they are printed, not counted).
 */
#include "fsutil.h"
#include "manifest.h"
#include "outsafe.h"
#include "stream.h"
#include "tutil.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAG "global_step100"
#define PARAMS 20000

/* ---- helpers ---- */


static void known_gap(bool holds, const char *what) {
    if (holds) return;
    fprintf(stderr, "\n  FAILED: %s", what);
    CU_FAIL("a closed gap is open again");
}

static void disarm(void) { ds_fault_inject_write(-1, 0); }

/* RLIMIT_FSIZE: writes past `n` bytes of any file fail with EFBIG. */
static struct rlimit saved_fsize;
static bool fsize_on;

static void fsize_limit(uint64_t n) {
    signal(SIGXFSZ, SIG_IGN);
    CU_ASSERT_FATAL(getrlimit(RLIMIT_FSIZE, &saved_fsize) == 0);
    struct rlimit r = saved_fsize;
    r.rlim_cur = (rlim_t)n;
    if (r.rlim_max != RLIM_INFINITY && r.rlim_cur > r.rlim_max) r.rlim_cur = r.rlim_max;
    CU_ASSERT_FATAL(setrlimit(RLIMIT_FSIZE, &r) == 0);
    fsize_on = true;
}

static void fsize_unlimit(void) {
    if (!fsize_on) return;
    setrlimit(RLIMIT_FSIZE, &saved_fsize);
    fsize_on = false;
}

static dsckpt_synth_opts synth_opts(int ws, int stage, uint64_t seed, int threads) {
    dsckpt_synth_opts o;
    dsckpt_synth_opts_init(&o);
    o.params = PARAMS;
    o.world_size = ws;
    o.zero_stage = stage;
    o.seed = seed;
    o.threads = threads;
    return o;
}

static char *synth_root(const char *dir, const char *name, int ws, int stage, uint64_t seed) {
    char *root = tu_path(dir, name);
    CU_ASSERT_FATAL(root != NULL);
    dsckpt_synth_opts o = synth_opts(ws, stage, seed, 2);
    TU_ASSERT_OK(dsckpt_synth(root, &o));
    return root;
}

static dsckpt_verify_result verify_result(const char *path, const char *tag) {
    dsckpt_verify_opts o;
    dsckpt_verify_opts_init(&o);
    o.threads = 2;
    dsckpt_verify_report *r = NULL;
    TU_ASSERT_OK(dsckpt_verify(path, tag, &o, &r));
    dsckpt_verify_result res = dsckpt_verify_report_result(r);
    if (res != DSCKPT_VERIFY_OK) {
        fprintf(stderr, "\n  verify %s: %d", path, (int)res);
        for (size_t i = 0; i < dsckpt_verify_report_count(r); i++)
            fprintf(stderr, "\n    - %s", dsckpt_verify_report_problem(r, i));
    }
    dsckpt_verify_report_free(r);
    return res;
}

/* Temporaries ("." name containing ".tmp-") anywhere under `path` (a directory),
 * at any depth; the names found are printed unless tmp_quiet. */
static bool tmp_quiet;

static int count_tmp(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = tu_path(path, e->d_name);
        if (e->d_name[0] == '.' && strstr(e->d_name, ".tmp-")) {
            if (!tmp_quiet) fprintf(stderr, "\n  leftover temporary: %s", p);
            n++;
        }
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) n += count_tmp(p);
        free(p);
    }
    closedir(d);
    return n;
}

/* A byte snapshot of a file or a directory tree (names, types, sizes, contents),
 * for "untouched" checks. malloc'd, *len set. */
static void snap_into(FILE *m, const char *path, const char *rel) {
    struct stat sb;
    if (lstat(path, &sb) != 0) {
        fprintf(m, "[missing %s]", rel);
        return;
    }
    if (S_ISDIR(sb.st_mode)) {
        struct dirent **ents = NULL;
        int n = scandir(path, &ents, NULL, alphasort);
        fprintf(m, "[dir %s %d]", rel, n);
        for (int i = 0; i < n; i++) {
            if (strcmp(ents[i]->d_name, ".") && strcmp(ents[i]->d_name, "..")) {
                char *p = tu_path(path, ents[i]->d_name), *r = tu_path(rel, ents[i]->d_name);
                snap_into(m, p, r);
                free(p);
                free(r);
            }
            free(ents[i]);
        }
        free(ents);
    } else {
        size_t len = 0;
        uint8_t *b = tu_read(path, &len);
        fprintf(m, "[file %s %zu %o]", rel, len, (unsigned)sb.st_mode);
        if (b) fwrite(b, 1, len, m);
        free(b);
    }
}

static char *snapshot(const char *path, size_t *len) {
    char *buf = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&buf, &n);
    CU_ASSERT_FATAL(m != NULL);
    snap_into(m, path, ".");
    fclose(m);
    *len = n;
    return buf;
}

static bool same_snapshot(const char *path, const char *before, size_t blen) {
    size_t alen = 0;
    char *after = snapshot(path, &alen);
    bool same = alen == blen && memcmp(after, before, blen) == 0;
    free(after);
    return same;
}

static uint64_t file_size(const char *path) {
    struct stat sb;
    CU_ASSERT_FATAL(stat(path, &sb) == 0);
    return (uint64_t)sb.st_size;
}

/* Sum of the rank files' sizes of the checkpoint at root (its `latest` tag). */
static uint64_t rank_bytes(const char *root, uint64_t *first) {
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    dsckpt_info info;
    dsckpt_ckpt_info(c, &info);
    uint64_t total = 0;
    for (size_t i = 0; i < info.file_count; i++) {
        char name[64];
        snprintf(name, sizeof name, "rank_%05zu.safetensors", i);
        char *p = tu_path(info.dir, name);
        uint64_t s = file_size(p);
        if (i == 0 && first) *first = s;
        total += s;
        free(p);
    }
    dsckpt_ckpt_free(c);
    return total;
}

/* The budgets tried against a write of `total` bytes whose first file has `first`. */
static size_t budgets(uint64_t total, uint64_t first, int64_t *out) {
    size_t n = 0;
    const int64_t b[] = {0, 1, 7, 8, 100, 600, 700, 800, 4096, (int64_t)first / 2, (int64_t)first - 1,
                         (int64_t)first, (int64_t)first + 1, (int64_t)total / 2, (int64_t)total - 4096,
                         (int64_t)total - 2, (int64_t)total - 1};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        if (b[i] >= 0 && (uint64_t)b[i] < total) out[n++] = b[i];
    return n;
}

/* ---- synth under ENOSPC ---- */

/* Budgets that run out inside the rank files: ENOSPC naming a rank file, and
 * nothing left behind, with one writer thread and with two. */
static void synth_enospc_rank_files(const char *dir, const char *out, uint64_t total, uint64_t first) {
    int64_t bs[32];
    size_t nb = budgets(total, first, bs);
    CU_ASSERT_FATAL(nb >= 10);
    for (size_t i = 0; i < nb; i++) {
        for (int threads = 1; threads <= 2; threads++) {
            dsckpt_synth_opts o = synth_opts(2, 2, 1, threads);
            ds_fault_inject_write(bs[i], ENOSPC);
            dsckpt_status st = dsckpt_synth(out, &o);
            disarm();
            const char *msg = dsckpt_last_error();
            bool ok = st == DSCKPT_ENOSPC && strstr(msg, "rank_0000") && strstr(msg, ".safetensors") &&
                      strstr(msg, "No space left");
            CU_ASSERT(ok);
            CU_ASSERT(!tu_exists(out));
            CU_ASSERT_EQUAL(count_tmp(dir), 0);
            if (!ok || tu_exists(out))
                fprintf(stderr, "\n  synth budget %lld threads %d -> %s: %s", (long long)bs[i], threads,
                        dsckpt_status_name(st), msg);
            tu_rmtree(out);
        }
    }
}

/* After the rank files come the commit-point writes, also through the hook:
 * the manifest, then `latest`, then trainer_state.json. A failure in any of
 * them leaves nothing either. Returns the bytes of the whole save. */
static uint64_t synth_enospc_commit_files(const char *dir, const char *ref, const char *out, uint64_t total) {
    char *mp = tu_path(ref, TAG "/" DS_MANIFEST_NAME), *lp = tu_path(ref, "latest"),
         *tp = tu_path(ref, "trainer_state.json");
    uint64_t msize = file_size(mp), lsize = file_size(lp), tsize = file_size(tp);
    free(mp);
    free(lp);
    free(tp);
    const struct { uint64_t budget; const char *names; } late[] = {
        {total, DS_MANIFEST_NAME},
        {total + 1, DS_MANIFEST_NAME},
        {total + msize - 1, DS_MANIFEST_NAME},
        {total + msize, "latest"},
        {total + msize + lsize - 1, "latest"},
        {total + msize + lsize, "trainer_state.json"},
        {total + msize + lsize + tsize - 1, "trainer_state.json"},
    };
    for (size_t i = 0; i < sizeof late / sizeof late[0]; i++) {
        dsckpt_synth_opts o = synth_opts(2, 2, 1, 2);
        ds_fault_inject_write((int64_t)late[i].budget, ENOSPC);
        dsckpt_status st = dsckpt_synth(out, &o);
        disarm();
        const char *msg = dsckpt_last_error();
        bool ok = st == DSCKPT_ENOSPC && strstr(msg, late[i].names) && strstr(msg, "No space left");
        CU_ASSERT(ok);
        if (!ok) fprintf(stderr, "\n  synth budget %llu -> %s: %s", (unsigned long long)late[i].budget,
                         dsckpt_status_name(st), msg);
        CU_ASSERT(!tu_exists(out));
        CU_ASSERT_EQUAL(count_tmp(dir), 0);
        tu_rmtree(out);
    }
    return total + msize + lsize + tsize;
}

static void test_synth_enospc(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *ref = synth_root(dir, "ref", 2, 2, 1);
    uint64_t first = 0, total = rank_bytes(ref, &first);
    char *out = tu_path(dir, "new");
    synth_enospc_rank_files(dir, out, total, first);
    uint64_t all = synth_enospc_commit_files(dir, ref, out, total);
    /* Exactly enough for every byte: it succeeds. */
    dsckpt_synth_opts o = synth_opts(2, 2, 1, 2);
    ds_fault_inject_write((int64_t)all, ENOSPC);
    dsckpt_status st = dsckpt_synth(out, &o);
    disarm();
    TU_ASSERT_OK(st);
    CU_ASSERT_EQUAL(verify_result(out, NULL), DSCKPT_VERIFY_OK);
    CU_ASSERT_EQUAL(count_tmp(dir), 0);
    /* Another errno is reported as itself. */
    char *out2 = tu_path(dir, "new2");
    ds_fault_inject_write(first / 2, EIO);
    st = dsckpt_synth(out2, &o);
    disarm();
    CU_ASSERT_EQUAL(st, DSCKPT_EIO);
    CU_ASSERT(strstr(dsckpt_last_error(), "rank_0000") != NULL);
    CU_ASSERT(!tu_exists(out2));
    CU_ASSERT_EQUAL(count_tmp(dir), 0);
    free(out2);
    free(out);
    free(ref);
    tu_rmtree(dir);
    free(dir);
}

/* The manifest is the commit point: make only it fail (RLIMIT_FSIZE between the
 * rank files' size and the manifest's) and nothing may appear. */
static void test_synth_manifest_fails(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    /* 1000 parameters on 16 ranks at stage 3: rank files of ~3.5 KB, a manifest of ~17 KB. */
    dsckpt_synth_opts o;
    dsckpt_synth_opts_init(&o);
    o.params = 1000;
    o.world_size = 16;
    o.zero_stage = 3;
    o.threads = 2;
    char *ref = tu_path(dir, "ref");
    TU_ASSERT_OK(dsckpt_synth(ref, &o));
    uint64_t first = 0;
    rank_bytes(ref, &first);
    char *mp = tu_path(ref, TAG "/" DS_MANIFEST_NAME);
    uint64_t msize = file_size(mp);
    uint64_t largest = 0;
    for (int r = 0; r < 16; r++) {
        char name[64];
        snprintf(name, sizeof name, TAG "/rank_%05d.safetensors", r);
        char *p = tu_path(ref, name);
        uint64_t s = file_size(p);
        if (s > largest) largest = s;
        free(p);
    }
    CU_ASSERT_FATAL(largest < msize);
    const uint64_t limits[] = {largest, (largest + msize) / 2, msize - 1};
    char *out = tu_path(dir, "new");
    for (size_t i = 0; i < 3; i++) {
        fsize_limit(limits[i]);
        dsckpt_status st = dsckpt_synth(out, &o);
        fsize_unlimit();
        const char *msg = dsckpt_last_error();
        bool ok = st == DSCKPT_EIO && strstr(msg, DS_MANIFEST_NAME) && strstr(msg, "File too large");
        CU_ASSERT(ok);
        if (!ok) fprintf(stderr, "\n  limit %llu -> %s: %s", (unsigned long long)limits[i], dsckpt_status_name(st), msg);
        CU_ASSERT(!tu_exists(out));
        CU_ASSERT_EQUAL(count_tmp(dir), 0);
    }
    /* Replacing an existing root with force: the old one stays. */
    size_t blen = 0;
    char *before = snapshot(ref, &blen);
    o.force = 1;
    o.seed = 99;
    fsize_limit((largest + msize) / 2);
    dsckpt_status st = dsckpt_synth(ref, &o);
    fsize_unlimit();
    CU_ASSERT_EQUAL(st, DSCKPT_EIO);
    CU_ASSERT(same_snapshot(ref, before, blen));
    CU_ASSERT_EQUAL(verify_result(ref, NULL), DSCKPT_VERIFY_OK);
    CU_ASSERT_EQUAL(count_tmp(dir), 0);
    free(before);
    free(mp);
    free(out);
    free(ref);
    tu_rmtree(dir);
    free(dir);
}

/* ---- reshard under ENOSPC ---- */

/* Resharding `c` to ws/stage with every budget short of the rank files' bytes:
 * ENOSPC naming a rank file, and nothing left behind. */
static void reshard_enospc_to(dsckpt_ckpt *c, const char *dir, int ws, int stage) {
    dsckpt_reshard_opts ro;
    dsckpt_reshard_opts_init(&ro);
    ro.world_size = ws;
    ro.zero_stage = stage;
    ro.threads = 2;
    char *ref = tu_path(dir, "ref");
    TU_ASSERT_OK(dsckpt_reshard(c, ref, &ro));
    uint64_t first = 0, total = rank_bytes(ref, &first);
    tu_rmtree(ref);
    free(ref);
    int64_t bs[32];
    size_t nb = budgets(total, first, bs);
    char *out = tu_path(dir, "resharded");
    for (size_t i = 0; i < nb; i++) {
        ro.threads = 1 + (int)(i % 2);
        ds_fault_inject_write(bs[i], ENOSPC);
        dsckpt_status st = dsckpt_reshard(c, out, &ro);
        disarm();
        const char *msg = dsckpt_last_error();
        bool ok = st == DSCKPT_ENOSPC && strstr(msg, "rank_0000") && strstr(msg, "No space left");
        CU_ASSERT(ok);
        if (!ok) fprintf(stderr, "\n  reshard to %d, budget %lld -> %s: %s", ws, (long long)bs[i],
                         dsckpt_status_name(st), msg);
        CU_ASSERT(!tu_exists(out));
        CU_ASSERT_EQUAL(count_tmp(dir), 0);
        tu_rmtree(out);
    }
    free(out);
}

/* Only the output's manifest fails (RLIMIT_FSIZE): 16 small rank files, one
 * large manifest. */
static void reshard_manifest_fails(const char *dir) {
    dsckpt_synth_opts o;
    dsckpt_synth_opts_init(&o);
    o.params = 1000;
    o.world_size = 2;
    o.zero_stage = 2;
    o.threads = 2;
    char *small = tu_path(dir, "small");
    TU_ASSERT_OK(dsckpt_synth(small, &o));
    size_t smlen = 0;
    char *small_snap = snapshot(small, &smlen);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(small, NULL, &c));
    dsckpt_reshard_opts ro;
    dsckpt_reshard_opts_init(&ro);
    ro.world_size = 16;
    ro.zero_stage = 3;
    ro.threads = 2;
    char *out = tu_path(dir, "r16");
    fsize_limit(8192);
    dsckpt_status st = dsckpt_reshard(c, out, &ro);
    fsize_unlimit();
    CU_ASSERT_EQUAL(st, DSCKPT_EIO);
    CU_ASSERT(strstr(dsckpt_last_error(), DS_MANIFEST_NAME) != NULL);
    CU_ASSERT(!tu_exists(out));
    CU_ASSERT_EQUAL(count_tmp(dir), 0);
    dsckpt_ckpt_free(c);
    CU_ASSERT(same_snapshot(small, small_snap, smlen));
    CU_ASSERT_EQUAL(verify_result(small, NULL), DSCKPT_VERIFY_OK);
    free(out);
    free(small_snap);
    free(small);
}

static void test_reshard_enospc(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *src = synth_root(dir, "src", 2, 2, 5);
    size_t slen = 0;
    char *src_snap = snapshot(src, &slen);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(src, NULL, &c));
    static const struct { int ws, stage; } cfg[] = {{3, -1}, {4, 3}, {1, 0}};
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) reshard_enospc_to(c, dir, cfg[k].ws, cfg[k].stage);
    dsckpt_ckpt_free(c);
    /* The source is untouched and intact. */
    CU_ASSERT(same_snapshot(src, src_snap, slen));
    CU_ASSERT_EQUAL(verify_result(src, NULL), DSCKPT_VERIFY_OK);
    reshard_manifest_fails(dir);
    free(src_snap);
    free(src);
    tu_rmtree(dir);
    free(dir);
}

/* ---- replacing with force while the write fails ---- */

/* synth over an existing root: every failed forced replace leaves it byte for
 * byte; a successful one does replace it (values of seed 2). */
static void force_synth(const char *dir, const char *root, const int64_t *bs, size_t nbs) {
    size_t blen = 0;
    char *before = snapshot(root, &blen);
    for (size_t i = 0; i < nbs; i++) {
        dsckpt_synth_opts o = synth_opts(2, 2, 2 /* other values */, 2);
        o.force = 1;
        ds_fault_inject_write(bs[i], ENOSPC);
        dsckpt_status st = dsckpt_synth(root, &o);
        disarm();
        CU_ASSERT_EQUAL(st, DSCKPT_ENOSPC);
        CU_ASSERT(same_snapshot(root, before, blen));
        CU_ASSERT_EQUAL(count_tmp(dir), 0);
    }
    CU_ASSERT_EQUAL(verify_result(root, NULL), DSCKPT_VERIFY_OK);
    dsckpt_synth_opts o = synth_opts(2, 2, 2, 2);
    o.force = 1;
    TU_ASSERT_OK(dsckpt_synth(root, &o));
    CU_ASSERT(!same_snapshot(root, before, blen));
    CU_ASSERT_EQUAL(verify_result(root, NULL), DSCKPT_VERIFY_OK);
    CU_ASSERT_EQUAL(count_tmp(dir), 0);
    free(before);
}

/* reshard over an existing output: every failed forced replace leaves it. */
static void force_reshard(const char *dir, dsckpt_ckpt *c, const int64_t *bs, size_t nbs) {
    dsckpt_reshard_opts ro;
    dsckpt_reshard_opts_init(&ro);
    ro.world_size = 3;
    ro.threads = 2;
    char *rs = tu_path(dir, "resharded");
    TU_ASSERT_OK(dsckpt_reshard(c, rs, &ro));
    size_t blen = 0;
    char *before = snapshot(rs, &blen);
    ro.world_size = 5;
    ro.force = 1;
    for (size_t i = 0; i < nbs; i++) {
        ds_fault_inject_write(bs[i], ENOSPC);
        dsckpt_status st = dsckpt_reshard(c, rs, &ro);
        disarm();
        CU_ASSERT_EQUAL(st, DSCKPT_ENOSPC);
        CU_ASSERT(same_snapshot(rs, before, blen));
        CU_ASSERT_EQUAL(count_tmp(dir), 0);
    }
    CU_ASSERT_EQUAL(verify_result(rs, NULL), DSCKPT_VERIFY_OK);
    free(before);
    free(rs);
}

/* consolidate over an existing file and directory (RLIMIT_FSIZE: its writes
 * do not go through ds_stream) */
static void force_consolidate(const char *dir, dsckpt_ckpt *c) {
    dsckpt_consolidate_opts co;
    dsckpt_consolidate_opts_init(&co);
    co.threads = 2;
    char *file = tu_path(dir, "model.safetensors");
    char *hf = tu_path(dir, "hf");
    TU_ASSERT_OK(dsckpt_consolidate(c, file, &co));
    co.max_shard_size = 8192; /* several shards + index */
    TU_ASSERT_OK(dsckpt_consolidate(c, hf, &co));
    uint64_t fsz = file_size(file);
    size_t flen = 0, hlen = 0;
    char *fbefore = snapshot(file, &flen), *hbefore = snapshot(hf, &hlen);
    co.force = 1;
    co.dtype = DSCKPT_F32; /* a different (larger) output */
    const uint64_t limits[] = {0, 100, 1000, fsz / 2, fsz - 1};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        co.max_shard_size = 0;
        fsize_limit(limits[i]);
        dsckpt_status st = dsckpt_consolidate(c, file, &co);
        fsize_unlimit();
        const char *msg = dsckpt_last_error();
        bool ok = st == DSCKPT_EIO && strstr(msg, "model.safetensors") && strstr(msg, "File too large");
        CU_ASSERT(ok);
        if (!ok) fprintf(stderr, "\n  consolidate limit %llu -> %s: %s", (unsigned long long)limits[i],
                         dsckpt_status_name(st), msg);
        CU_ASSERT(same_snapshot(file, fbefore, flen));
        CU_ASSERT_EQUAL(count_tmp(dir), 0);
        co.max_shard_size = 8192;
        fsize_limit(limits[i]);
        st = dsckpt_consolidate(c, hf, &co);
        fsize_unlimit();
        CU_ASSERT_EQUAL(st, DSCKPT_EIO);
        CU_ASSERT(strstr(dsckpt_last_error(), "model-") != NULL);
        CU_ASSERT(same_snapshot(hf, hbefore, hlen));
        CU_ASSERT_EQUAL(count_tmp(dir), 0);
    }
    CU_ASSERT_EQUAL(verify_result(file, NULL), DSCKPT_VERIFY_OK);
    free(fbefore);
    free(hbefore);
    free(file);
    free(hf);
}

static void test_force_replace_fails(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *root = synth_root(dir, "root", 2, 2, 1);
    uint64_t first = 0, total = rank_bytes(root, &first);
    const int64_t bs[] = {0, 500, (int64_t)first - 1, (int64_t)first + 10, (int64_t)total - 1};
    force_synth(dir, root, bs, sizeof bs / sizeof bs[0]);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    force_reshard(dir, c, bs, sizeof bs / sizeof bs[0]);
    force_consolidate(dir, c);
    dsckpt_ckpt_free(c);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* ---- consolidate: the fault hook, unwritable destinations ---- */

/* The bytes of a consolidated file and of an HF directory (4 KiB shards, at
 * least three, and an index) made from c. */
static void consolidate_sizes(const char *dir, dsckpt_ckpt *c, dsckpt_consolidate_opts *co, uint64_t *fsz,
                              uint64_t *dtotal) {
    char *ref = tu_path(dir, "ref.safetensors");
    TU_ASSERT_OK(dsckpt_consolidate(c, ref, co));
    *fsz = file_size(ref);
    char *refdir = tu_path(dir, "refdir");
    co->max_shard_size = 4096;
    TU_ASSERT_OK(dsckpt_consolidate(c, refdir, co));
    *dtotal = 0;
    DIR *d = opendir(refdir);
    CU_ASSERT_FATAL(d != NULL);
    struct dirent *e;
    int nshards = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *p = tu_path(refdir, e->d_name);
        *dtotal += file_size(p);
        nshards += strstr(e->d_name, "model-") != NULL;
        free(p);
    }
    closedir(d);
    CU_ASSERT_FATAL(nshards >= 3);
    free(refdir);
    free(ref);
}

/* The fault hook reaches consolidate's positional writes (ds_pwrite_full):
 * budgets from nothing to one byte short, into a new file and a new HF
 * directory (several shards and an index); exactly enough succeeds. */
static void consolidate_hook(const char *dir, dsckpt_ckpt *c, dsckpt_consolidate_opts *co) {
    uint64_t fsz = 0, dtotal = 0;
    consolidate_sizes(dir, c, co, &fsz, &dtotal);
    const uint64_t fb[] = {0, 1, 8, 100, 1000, fsz / 2, fsz - 1};
    char *out = tu_path(dir, "hooked.safetensors");
    for (size_t i = 0; i < sizeof fb / sizeof fb[0]; i++) {
        co->max_shard_size = 0;
        ds_fault_inject_write((int64_t)fb[i], ENOSPC);
        dsckpt_status st = dsckpt_consolidate(c, out, co);
        disarm();
        const char *msg = dsckpt_last_error();
        bool ok = st == DSCKPT_ENOSPC && strstr(msg, "hooked.safetensors") && strstr(msg, "No space left");
        CU_ASSERT(ok);
        if (!ok) fprintf(stderr, "\n  consolidate budget %llu -> %s: %s", (unsigned long long)fb[i],
                         dsckpt_status_name(st), msg);
        CU_ASSERT(!tu_exists(out));
        CU_ASSERT_EQUAL(count_tmp(dir), 0);
    }
    char *hd = tu_path(dir, "hooked");
    const uint64_t db[] = {0, 1, 4096, dtotal / 2, dtotal - 2, dtotal - 1};
    for (size_t i = 0; i < sizeof db / sizeof db[0]; i++) {
        co->max_shard_size = 4096;
        ds_fault_inject_write((int64_t)db[i], ENOSPC);
        dsckpt_status st = dsckpt_consolidate(c, hd, co);
        disarm();
        const char *msg = dsckpt_last_error();
        bool ok = st == DSCKPT_ENOSPC && strstr(msg, "hooked") &&
                  (strstr(msg, "model-") || strstr(msg, "model.safetensors.index.json"));
        CU_ASSERT(ok);
        if (!ok) fprintf(stderr, "\n  consolidate dir budget %llu -> %s: %s", (unsigned long long)db[i],
                         dsckpt_status_name(st), msg);
        CU_ASSERT(!tu_exists(hd));
        CU_ASSERT_EQUAL(count_tmp(dir), 0);
    }
    /* Exactly enough: it succeeds. */
    co->max_shard_size = 0;
    ds_fault_inject_write((int64_t)fsz, ENOSPC);
    dsckpt_status st = dsckpt_consolidate(c, out, co);
    disarm();
    TU_ASSERT_OK(st);
    co->max_shard_size = 4096;
    ds_fault_inject_write((int64_t)dtotal, ENOSPC);
    st = dsckpt_consolidate(c, hd, co);
    disarm();
    TU_ASSERT_OK(st);
    CU_ASSERT_EQUAL(verify_result(out, NULL), DSCKPT_VERIFY_OK);
    free(hd);
    free(out);
}

/* Mid-write failure (RLIMIT_FSIZE: a real EFBIG from the kernel) into a new
 * file and a new directory. */
static void consolidate_efbig(const char *dir, dsckpt_ckpt *c, dsckpt_consolidate_opts *co) {
    char *file = tu_path(dir, "new.safetensors");
    char *hf = tu_path(dir, "newdir");
    const uint64_t limits[] = {0, 8, 64, 4096, 20000};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        co->max_shard_size = 0;
        fsize_limit(limits[i]);
        dsckpt_status st = dsckpt_consolidate(c, file, co);
        fsize_unlimit();
        CU_ASSERT_EQUAL(st, DSCKPT_EIO);
        CU_ASSERT(strstr(dsckpt_last_error(), "new.safetensors") != NULL);
        CU_ASSERT(!tu_exists(file));
        co->max_shard_size = 4096;
        fsize_limit(limits[i]);
        st = dsckpt_consolidate(c, hf, co);
        fsize_unlimit();
        CU_ASSERT_EQUAL(st, DSCKPT_EIO);
        CU_ASSERT(strstr(dsckpt_last_error(), "newdir") != NULL);
        CU_ASSERT(!tu_exists(hf));
        CU_ASSERT_EQUAL(count_tmp(dir), 0);
    }
    free(file);
    free(hf);
}

/* An output directory that cannot be written. Root ignores permission bits,
 * so then the "directory" is a regular file (creation fails with ENOTDIR). */
static void consolidate_unwritable(const char *dir, dsckpt_ckpt *c, dsckpt_consolidate_opts *co) {
    char *parent = tu_path(dir, "ro");
    bool as_root = geteuid() == 0;
    if (as_root) {
        CU_ASSERT_FATAL(tu_write(parent, "not a directory", 15) == 0);
    } else {
        CU_ASSERT_FATAL(mkdir(parent, 0755) == 0);
        CU_ASSERT_FATAL(chmod(parent, 0555) == 0);
    }
    size_t plen = 0;
    char *psnap = snapshot(parent, &plen);
    char *pf = tu_path(parent, "model.safetensors");
    char *pd = tu_path(parent, "hf");
    co->max_shard_size = 0;
    dsckpt_status st = dsckpt_consolidate(c, pf, co);
    CU_ASSERT(st != DSCKPT_OK);
    CU_ASSERT(st == DSCKPT_EIO || st == DSCKPT_ENOENT);
    CU_ASSERT(strstr(dsckpt_last_error(), "model.safetensors") != NULL);
    CU_ASSERT(!tu_exists(pf));
    st = dsckpt_consolidate(c, pd, co);
    CU_ASSERT(st == DSCKPT_EIO || st == DSCKPT_ENOENT);
    CU_ASSERT(strstr(dsckpt_last_error(), "hf") != NULL);
    CU_ASSERT(!tu_exists(pd));
    /* reshard and synth refuse the same way */
    dsckpt_reshard_opts ro;
    dsckpt_reshard_opts_init(&ro);
    ro.threads = 2;
    st = dsckpt_reshard(c, pd, &ro);
    CU_ASSERT(st == DSCKPT_EIO || st == DSCKPT_ENOENT);
    dsckpt_synth_opts so = synth_opts(2, 2, 1, 2);
    st = dsckpt_synth(pd, &so);
    CU_ASSERT(st == DSCKPT_EIO || st == DSCKPT_ENOENT);
    CU_ASSERT(same_snapshot(parent, psnap, plen));
    CU_ASSERT_EQUAL(count_tmp(dir), 0);
    if (!as_root) chmod(parent, 0755);
    free(psnap);
    free(pf);
    free(pd);
    free(parent);
}

static void test_consolidate_failures(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *root = synth_root(dir, "root", 2, 3, 1);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    dsckpt_consolidate_opts co;
    dsckpt_consolidate_opts_init(&co);
    co.threads = 2;
    consolidate_hook(dir, c, &co);
    consolidate_efbig(dir, c, &co);
    consolidate_unwritable(dir, c, &co);
    /* A parent directory that does not exist. */
    char *gone = tu_path(dir, "no/such/dir/model.safetensors");
    dsckpt_status st = dsckpt_consolidate(c, gone, &co);
    CU_ASSERT_EQUAL(st, DSCKPT_ENOENT);
    CU_ASSERT(!tu_exists(gone));
    free(gone);
    dsckpt_ckpt_free(c);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* ---- existing outputs without force ---- */

static void test_eexist(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *root = synth_root(dir, "root", 2, 1, 1);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    dsckpt_consolidate_opts co;
    dsckpt_consolidate_opts_init(&co);
    co.threads = 2;
    dsckpt_reshard_opts ro;
    dsckpt_reshard_opts_init(&ro);
    ro.world_size = 3;
    ro.threads = 2;

    /* Outputs that exist as what the operation makes, and as something else. */
    char *file = tu_path(dir, "model.safetensors");
    char *hf = tu_path(dir, "hf");
    char *rs = tu_path(dir, "rs");
    char *junkfile = tu_path(dir, "junk.safetensors");
    char *junkdir = tu_path(dir, "junkdir");
    TU_ASSERT_OK(dsckpt_consolidate(c, file, &co));
    TU_ASSERT_OK(dsckpt_consolidate(c, hf, &co));
    TU_ASSERT_OK(dsckpt_reshard(c, rs, &ro));
    CU_ASSERT_FATAL(tu_write(junkfile, "keep me", 7) == 0);
    CU_ASSERT_FATAL(mkdir(junkdir, 0755) == 0);
    char *jf = tu_path(junkdir, "keep.txt");
    CU_ASSERT_FATAL(tu_write(jf, "keep me too", 11) == 0);
    free(jf);

    size_t dlen = 0;
    char *before = snapshot(dir, &dlen);
    const char *targets[] = {file, junkfile, hf, junkdir, rs, root};
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        co.force = 0;
        ro.force = 0;
        dsckpt_status st = dsckpt_consolidate(c, targets[i], &co);
        CU_ASSERT_EQUAL(st, DSCKPT_EEXIST);
        CU_ASSERT(strstr(dsckpt_last_error(), "already exists") != NULL);
        CU_ASSERT(strstr(dsckpt_last_error(), "force") != NULL);
        st = dsckpt_reshard(c, targets[i], &ro);
        CU_ASSERT_EQUAL(st, DSCKPT_EEXIST);
        CU_ASSERT(strstr(dsckpt_last_error(), "already exists") != NULL);
        dsckpt_synth_opts so = synth_opts(2, 2, 9, 2);
        st = dsckpt_synth(targets[i], &so);
        CU_ASSERT_EQUAL(st, DSCKPT_EEXIST);
        CU_ASSERT(strstr(dsckpt_last_error(), "already exists") != NULL);
        CU_ASSERT(same_snapshot(dir, before, dlen));
    }
    /* A dangling symlink counts as existing too (nothing is written through it). */
    char *link = tu_path(dir, "link.safetensors");
    char *target = tu_path(dir, "elsewhere.safetensors");
    CU_ASSERT_FATAL(symlink(target, link) == 0);
    CU_ASSERT_EQUAL(dsckpt_consolidate(c, link, &co), DSCKPT_EEXIST);
    CU_ASSERT(!tu_exists(target));
    free(link);
    free(target);
    CU_ASSERT_EQUAL(verify_result(root, NULL), DSCKPT_VERIFY_OK);
    dsckpt_ckpt_free(c);
    free(before);
    free(file);
    free(hf);
    free(rs);
    free(junkfile);
    free(junkdir);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* ---- a crash before the commit point: tag directory without a manifest ---- */

static int copy_tree(const char *src, const char *dst) {
    struct stat sb;
    if (lstat(src, &sb) != 0) return -1;
    if (S_ISDIR(sb.st_mode)) {
        if (mkdir(dst, 0755) != 0) return -1;
        DIR *d = opendir(src);
        if (!d) return -1;
        struct dirent *e;
        int rc = 0;
        while (rc == 0 && (e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *s = tu_path(src, e->d_name), *t = tu_path(dst, e->d_name);
            rc = copy_tree(s, t);
            free(s);
            free(t);
        }
        closedir(d);
        return rc;
    }
    size_t len = 0;
    uint8_t *b = tu_read(src, &len);
    if (!b) return -1;
    int rc = tu_write(dst, b, len);
    free(b);
    return rc;
}

static void test_incomplete_tag(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *root = synth_root(dir, "root", 2, 2, 1);
    char *td = tu_path(root, TAG);

    /* A newer tag whose save stopped after the rank files (no manifest; one rank
     * file still under its temporary name). `latest` still names the old tag. */
    char *newer = tu_path(root, "global_step200");
    CU_ASSERT_FATAL(copy_tree(td, newer) == 0);
    char *nm = tu_path(newer, DS_MANIFEST_NAME);
    CU_ASSERT_FATAL(unlink(nm) == 0);
    char *r1 = tu_path(newer, "rank_00001.safetensors");
    char *r1tmp = tu_path(newer, ".rank_00001.safetensors.tmp-4242-7");
    CU_ASSERT_FATAL(rename(r1, r1tmp) == 0);

    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    dsckpt_info info;
    dsckpt_ckpt_info(c, &info);
    CU_ASSERT_STRING_EQUAL(info.tag, TAG);
    CU_ASSERT_EQUAL(info.step, 100);
    dsckpt_ckpt_free(c);
    CU_ASSERT_EQUAL(verify_result(root, NULL), DSCKPT_VERIFY_OK);

    /* Asking for the incomplete tag: ENOENT, saying it is incomplete. */
    c = NULL;
    dsckpt_status st = dsckpt_ckpt_open(root, "global_step200", &c);
    CU_ASSERT_EQUAL(st, DSCKPT_ENOENT);
    CU_ASSERT(c == NULL);
    CU_ASSERT(strstr(dsckpt_last_error(), "incomplete") != NULL);
    CU_ASSERT(strstr(dsckpt_last_error(), "global_step200") != NULL);
    /* Opening the tag directory itself. */
    st = dsckpt_ckpt_open(newer, NULL, &c);
    CU_ASSERT_EQUAL(st, DSCKPT_ENOENT);
    CU_ASSERT(c == NULL);
    known_gap(strstr(dsckpt_last_error(), "incomplete") != NULL,
              "opening a tag directory that has rank files but no manifest says 'neither a tag directory nor a "
              "save root' instead of 'incomplete'");
    /* verify: unreadable (there is nothing to check the files against). */
    dsckpt_verify_report *r = NULL;
    TU_ASSERT_OK(dsckpt_verify(root, "global_step200", NULL, &r));
    CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_UNREADABLE);
    CU_ASSERT(dsckpt_verify_report_count(r) >= 1 &&
              strstr(dsckpt_verify_report_problem(r, 0), "incomplete") != NULL);
    dsckpt_verify_report_free(r);

    /* The same crash on the only tag: `latest` names it, and open says incomplete. */
    char *m = tu_path(td, DS_MANIFEST_NAME);
    CU_ASSERT_FATAL(unlink(m) == 0);
    st = dsckpt_ckpt_open(root, NULL, &c);
    CU_ASSERT_EQUAL(st, DSCKPT_ENOENT);
    CU_ASSERT(strstr(dsckpt_last_error(), "incomplete") != NULL);
    CU_ASSERT(c == NULL);
    free(m);

    /* A save root whose `latest` is a leftover temporary only (crash while
     * replacing it): the old `latest` is what counts. */
    char *root2 = synth_root(dir, "root2", 2, 2, 1);
    char *ltmp = tu_path(root2, ".latest.tmp-99-1");
    CU_ASSERT_FATAL(tu_write(ltmp, "global_step200", 14) == 0);
    TU_ASSERT_OK(dsckpt_ckpt_open(root2, NULL, &c));
    dsckpt_ckpt_info(c, &info);
    CU_ASSERT_STRING_EQUAL(info.tag, TAG);
    dsckpt_ckpt_free(c);
    free(ltmp);
    free(root2);

    free(r1);
    free(r1tmp);
    free(nm);
    free(newer);
    free(td);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* ---- ds_write_file_atomic ---- */

/* p holds exactly the n bytes want. */
static bool holds(const char *p, const char *want, size_t n) {
    size_t len = 0;
    uint8_t *b = tu_read(p, &len);
    bool same = b && len == n && memcmp(b, want, n) == 0;
    free(b);
    return same;
}

/* A replace whose write fails part-way, first through the fault hook, then
 * with RLIMIT_FSIZE: the old file stays. Exactly enough budget succeeds. */
static void write_atomic_fails(const char *dir, const char *p) {
    TU_ASSERT_OK(ds_write_file_atomic(p, "old contents", 12));
    const char *nw = "new contents, longer";
    const int64_t hb[] = {0, 1, 12, (int64_t)strlen(nw) - 1};
    for (size_t i = 0; i < sizeof hb / sizeof hb[0]; i++) {
        ds_fault_inject_write(hb[i], ENOSPC);
        dsckpt_status st = ds_write_file_atomic(p, nw, strlen(nw));
        disarm();
        CU_ASSERT_EQUAL(st, DSCKPT_ENOSPC);
        CU_ASSERT(strstr(dsckpt_last_error(), "state.json") != NULL);
        CU_ASSERT(holds(p, "old contents", 12));
        CU_ASSERT_EQUAL(count_tmp(dir), 0);
    }
    ds_fault_inject_write((int64_t)strlen(nw), ENOSPC);
    dsckpt_status st = ds_write_file_atomic(p, nw, strlen(nw));
    disarm();
    TU_ASSERT_OK(st);
    CU_ASSERT(holds(p, nw, strlen(nw)));
    CU_ASSERT_EQUAL(count_tmp(dir), 0);
    TU_ASSERT_OK(ds_write_file_atomic(p, "old contents", 12));
    char big[8192];
    memset(big, 'x', sizeof big);
    const uint64_t limits[] = {0, 1, 12, 4096, sizeof big - 1};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        fsize_limit(limits[i]);
        st = ds_write_file_atomic(p, big, sizeof big);
        fsize_unlimit();
        CU_ASSERT_EQUAL(st, DSCKPT_EIO);
        CU_ASSERT(strstr(dsckpt_last_error(), "state.json") != NULL);
        CU_ASSERT(holds(p, "old contents", 12));
        CU_ASSERT_EQUAL(count_tmp(dir), 0);
    }
    /* A new file whose write fails: nothing appears. */
    char *q = tu_path(dir, "new.json");
    fsize_limit(100);
    st = ds_write_file_atomic(q, big, sizeof big);
    fsize_unlimit();
    CU_ASSERT_EQUAL(st, DSCKPT_EIO);
    CU_ASSERT(!tu_exists(q));
    CU_ASSERT_EQUAL(count_tmp(dir), 0);
    free(q);
}

static void test_write_file_atomic(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *p = tu_path(dir, "state.json");
    TU_ASSERT_OK(ds_write_file_atomic(p, "first", 5));
    CU_ASSERT(holds(p, "first", 5));
    TU_ASSERT_OK(ds_write_file_atomic(p, "second, longer", 14));
    CU_ASSERT(holds(p, "second, longer", 14));
    TU_ASSERT_OK(ds_write_file_atomic(p, "", 0));
    CU_ASSERT(holds(p, "", 0));
    CU_ASSERT_EQUAL(count_tmp(dir), 0);
    write_atomic_fails(dir, p);
    /* Into a directory that does not exist. */
    char *r = tu_path(dir, "missing/x.json");
    dsckpt_status st = ds_write_file_atomic(r, "x", 1);
    CU_ASSERT_EQUAL(st, DSCKPT_ENOENT);
    CU_ASSERT(!tu_exists(r));
    /* Replacing a file that is read-only by mode still works (the directory entry
     * is replaced, not the file written in place). */
    CU_ASSERT_FATAL(chmod(p, 0444) == 0);
    TU_ASSERT_OK(ds_write_file_atomic(p, "third", 5));
    CU_ASSERT(holds(p, "third", 5));
    CU_ASSERT_EQUAL(count_tmp(dir), 0);
    free(r);
    free(p);
    tu_rmtree(dir);
    free(dir);
}

/* ---- output directories: begin/commit/abort ---- */

static void test_outdir(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *out = tu_path(dir, "out");
    ds_outdir od;
    TU_ASSERT_OK(ds_outdir_begin(&od, out, false));
    CU_ASSERT(!tu_exists(out));
    CU_ASSERT(od.tmp && tu_exists(od.tmp));
    char *f = tu_path(od.tmp, "latest");
    CU_ASSERT_FATAL(tu_write(f, "A", 1) == 0);
    free(f);
    TU_ASSERT_OK(ds_outdir_commit(&od));
    ds_outdir_abort(&od); /* safe after commit */
    f = tu_path(out, "latest");
    CU_ASSERT(tu_exists(f));
    free(f);
    /* Aborted replacement: the old one stays, the temporary goes. */
    TU_ASSERT_OK(ds_outdir_begin(&od, out, true));
    char *tmp = strdup(od.tmp);
    ds_outdir_abort(&od);
    CU_ASSERT(!tu_exists(tmp));
    free(tmp);
    f = tu_path(out, "latest");
    CU_ASSERT(tu_exists(f));
    free(f);
    /* Committed replacement: only the new contents. */
    TU_ASSERT_OK(ds_outdir_begin(&od, out, true));
    f = tu_path(od.tmp, "trainer_state.json");
    CU_ASSERT_FATAL(tu_write(f, "B", 1) == 0);
    free(f);
    TU_ASSERT_OK(ds_outdir_commit(&od));
    ds_outdir_abort(&od);
    f = tu_path(out, "latest");
    CU_ASSERT(!tu_exists(f));
    free(f);
    f = tu_path(out, "trainer_state.json");
    CU_ASSERT(tu_exists(f));
    free(f);
    CU_ASSERT_EQUAL(count_tmp(dir), 0);
    /* Without force an existing output is refused before anything is created. */
    CU_ASSERT_EQUAL(ds_outdir_begin(&od, out, false), DSCKPT_EEXIST);
    ds_outdir_abort(&od);
    CU_ASSERT_EQUAL(count_tmp(dir), 0);
    /* The detectors themselves: a temporary two levels down is found, and a
     * one-bit change is a different snapshot. */
    f = tu_path(out, ".b.tmp-1-2");
    CU_ASSERT_FATAL(tu_write(f, "", 0) == 0);
    tmp_quiet = true;
    CU_ASSERT_EQUAL(count_tmp(dir), 1);
    tmp_quiet = false;
    CU_ASSERT_FATAL(unlink(f) == 0);
    free(f);
    size_t blen = 0;
    char *before = snapshot(dir, &blen);
    CU_ASSERT(same_snapshot(dir, before, blen));
    f = tu_path(out, "trainer_state.json");
    CU_ASSERT_FATAL(tu_flip_bit(f, 0, 0) == 0);
    CU_ASSERT(!same_snapshot(dir, before, blen));
    free(f);
    free(before);
    free(out);
    tu_rmtree(dir);
    free(dir);
}

int main(void) {
    static const tu_test tests[] = {
        {"synth into a new path under ENOSPC", test_synth_enospc},
        {"synth whose manifest write fails", test_synth_manifest_fails},
        {"reshard into a new path under ENOSPC", test_reshard_enospc},
        {"forced replacement that fails keeps the old output", test_force_replace_fails},
        {"consolidate: fault hook, unwritable destinations", test_consolidate_failures},
        {"existing outputs without force", test_eexist},
        {"tag directory without a manifest", test_incomplete_tag},
        {"ds_write_file_atomic", test_write_file_atomic},
        {"ds_outdir begin/commit/abort", test_outdir},
        {NULL, NULL},
    };
    int rc = tu_main("commit", tests);
    disarm();
    fsize_unlimit();
    return rc;
}
