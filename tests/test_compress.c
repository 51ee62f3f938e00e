/*
 * test_compress.c — compressed native checkpoints (manifest versions 2 and 3):
 *  - a checkpoint with small chunks, some incompressible (stored raw) and some not,
 *    reads back bit-exact through ds_ckpt_read and through a read list (runs that
 *    continue each other merge), with the digest checks on and off,
 *    and equals the uncompressed one element for element; verify passes; written
 *    with planes chunks (version 3) and, through the test hook, with single-frame
 *    chunks as version 2 writers did (version 2);
 *  - an uncompressed write still says version 1 and has no "compression";
 *  - manifest edits (resealed, as a knowing editor would) are refused: chunk size
 *    past the limit, raw ranges, stored offsets, sizes, kinds, widths, an unknown
 *    compression, "compression" in version 1, "planes" in version 2, a planes
 *    chunk of width 1 or too small for its header, a newer version;
 *  - a flipped stored byte: verify names the chunk, reads fail (ECHECKSUM; with the
 *    checks off a flip in a zstd frame still fails, never returns wrong bytes);
 *  - a truncated file, and a stored chunk replaced by a frame claiming more raw
 *    bytes than its chunk (a decompression bomb, digests updated): refused.
 */
#include "ckpt.h"
#include "fsutil.h"
#include "manifest.h"
#include "native_write.h"
#include "synth.h"
#include "tutil.h"
#include "zchunk.h"
#include "zfile.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#define TAG "global_step7"

static uint32_t hash32(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return (uint32_t)x;
}

/* Element i of state s of tensor t: weight-like floats, except the fp32 state of
 * even tensors, which is random bits (incompressible). */
static float value(ds_state s, uint32_t t, uint64_t i) {
    uint32_t h = hash32(((uint64_t)t << 40) ^ ((uint64_t)s << 36) ^ i);
    if (s == DS_ST_FP32 && t % 2 == 0) {
        float f;
        memcpy(&f, &h, 4);
        return f;
    }
    return ((float)(h >> 8) / 16777216.0f - 0.5f) * 0.05f;
}

typedef struct fillctx {
    const ds_tensor *ts;
    long fail_tensor; /* >= 0: the fill of elements [fail_lo, fail_hi) of this tensor's fp32 state fails */
    uint64_t fail_lo, fail_hi;
} fillctx;

static dsckpt_status fill(void *user, ds_state s, uint32_t t, uint64_t start, uint64_t numel, void *dst, int worker) {
    (void)worker;
    fillctx *fc = user;
    if (fc->fail_tensor >= 0 && (long)t == fc->fail_tensor && s == DS_ST_FP32 && start < fc->fail_hi &&
        start + numel > fc->fail_lo)
        return ds_err(DSCKPT_EIO, "injected fill failure, tensor %u", t);
    for (uint64_t i = 0; i < numel; i++) {
        float f = value(s, t, start + i);
        if (s == DS_ST_W16 && fc->ts[t].dtype != DSCKPT_F32) {
            uint16_t h;
            memcpy(&h, &f, 2); /* any 16 bits will do: the bytes are what is compared */
            h = (uint16_t)(hash32(start + i) & 0x3fff) | 0x3c00;
            memcpy((uint8_t *)dst + 2 * i, &h, 2);
        } else {
            memcpy((uint8_t *)dst + 4 * i, &f, 4);
        }
    }
    return DSCKPT_OK;
}

/* Writes a stage-2, 2-rank checkpoint of about `params` parameters under root on
 * `threads` threads; with `frame` (test builds' hook) in single-frame chunks, as
 * version 2 did; with fail (fail->tensor >= 0) that part of the fp32 fill fails,
 * and so must the write (the status is returned). */
typedef struct failspec {
    long tensor;
    uint64_t lo, hi;
} failspec;
static dsckpt_status write_ckpt_full(const char *root, uint64_t params, int level, uint64_t chunk, bool frame,
                                     int threads, failspec fail) {
    ds_tensor *ts = NULL;
    size_t nt = 0;
    TU_ASSERT_OK(ds_synth_tensors(params, DSCKPT_BF16, &ts, &nt));
    char *tagdir = tu_path(root, TAG);
    CU_ASSERT_FATAL(ds_mkdir(root) == DSCKPT_OK || tu_exists(root));
    TU_ASSERT_OK(ds_mkdir(tagdir));
    ds_native_spec spec = {.tensors = ts, .ntensors = nt, .ngroups = 2, .stage = 2, .world_size = 2, .tag = TAG,
                           .step = 7, .train_dtype = "bf16", .chunk_size = chunk, .compress_level = level};
    ds_native_out *no = NULL;
    TU_ASSERT_OK(ds_native_prepare(&spec, tagdir, &no));
    fillctx fc = {ts, fail.tensor, fail.lo, fail.hi};
    if (frame) setenv("DSCKPT_TEST_ZCHUNK_FRAME", "1", 1);
    dsckpt_status st = ds_native_write_all(no, fill, &fc, threads, NULL);
    unsetenv("DSCKPT_TEST_ZCHUNK_FRAME");
    if (st == DSCKPT_OK) TU_ASSERT_OK(ds_set_latest(root, TAG));
    ds_native_out_free(no);
    ds_synth_tensors_free(ts, nt);
    free(tagdir);
    return st;
}

static void write_ckpt_codec(const char *root, uint64_t params, int level, uint64_t chunk, bool frame) {
    TU_ASSERT_OK(write_ckpt_full(root, params, level, chunk, frame, 2, (failspec){-1, 0, 0}));
}

static void write_ckpt(const char *root, uint64_t params, int level, uint64_t chunk) {
    write_ckpt_codec(root, params, level, chunk, false);
}

/* ds_read_list: each state's tensors end to end in one buffer, read as runs, equal
 * fill(); a range added in two halves, end to end in memory, plans the same runs as
 * the whole range (the halves merge), and with a gap in memory one run more.
 * Returns the number of mismatches. */
static int check_read_list(dsckpt_ckpt *c, ds_fdset *fs) {
    int bad = 0;
    fillctx fc = {c->tensors, -1, 0, 0};
    for (int s = 0; s < DS_NSTATES; s++) {
        uint64_t total = 0;
        for (uint32_t t = 0; t < c->ntensors; t++)
            if (ds_state_applies(&c->tensors[t], (ds_state)s))
                total += c->tensors[t].numel * dsckpt_dtype_size(ds_ckpt_state_dtype(c, (ds_state)s, t));
        if (!total) continue;
        uint8_t *got = malloc(total), *want = malloc(total);
        CU_ASSERT_FATAL(got && want);
        ds_read_list l = {0};
        uint64_t at = 0;
        for (uint32_t t = 0; t < c->ntensors; t++) {
            if (!ds_state_applies(&c->tensors[t], (ds_state)s)) continue;
            uint64_t n = c->tensors[t].numel;
            TU_ASSERT_OK(ds_read_list_add(&l, c, (ds_state)s, t, 0, n, got + at));
            TU_ASSERT_OK(fill(&fc, (ds_state)s, t, 0, n, want + at, 0));
            at += n * dsckpt_dtype_size(ds_ckpt_state_dtype(c, (ds_state)s, t));
        }
        TU_ASSERT_OK(ds_read_list_run(c, fs, &l));
        if (memcmp(got, want, total) != 0) bad++;
        ds_read_list_free(&l);
        for (uint32_t t = 0; t < c->ntensors; t++) {
            uint64_t n = c->tensors[t].numel, h = n / 2;
            if (!ds_state_applies(&c->tensors[t], (ds_state)s) || n < 4) continue;
            size_t es = dsckpt_dtype_size(ds_ckpt_state_dtype(c, (ds_state)s, t));
            ds_read_list whole = {0}, halves = {0}, gap = {0};
            TU_ASSERT_OK(ds_read_list_add(&whole, c, (ds_state)s, t, 0, n, got));
            TU_ASSERT_OK(ds_read_list_add(&halves, c, (ds_state)s, t, 0, h, got));
            TU_ASSERT_OK(ds_read_list_add(&halves, c, (ds_state)s, t, h, n - h, got + h * es));
            TU_ASSERT_OK(ds_read_list_add(&gap, c, (ds_state)s, t, 0, h, got));
            TU_ASSERT_OK(ds_read_list_add(&gap, c, (ds_state)s, t, h, n - h, got + (h + 1) * es));
            bool split = false; /* whether h falls inside a fragment (else it is a run boundary anyway) */
            size_t nf;
            const ds_frag *fr = ds_ckpt_frags(c, (ds_state)s, t, &nf);
            for (size_t k = 0; k < nf; k++) split |= fr[k].start < h && h < fr[k].start + fr[k].numel;
            CU_ASSERT_EQUAL(halves.n, whole.n);
            CU_ASSERT_EQUAL(gap.n, whole.n + (split ? 1 : 0));
            ds_read_list_free(&whole);
            ds_read_list_free(&halves);
            ds_read_list_free(&gap);
            break; /* one tensor per state */
        }
        free(got);
        free(want);
    }
    return bad;
}

/* Every state of every tensor equals fill(); returns the number of mismatching tensors. */
static int check_reads(dsckpt_ckpt *c, int read_check) {
    dsckpt_ckpt_set_read_check(c, read_check);
    ds_fdset fs;
    TU_ASSERT_OK(ds_fdset_open(c, &fs));
    int bad = 0;
    fillctx fc = {c->tensors, -1, 0, 0};
    for (uint32_t t = 0; t < c->ntensors; t++)
        for (int s = 0; s < DS_NSTATES; s++) {
            if (!ds_state_applies(&c->tensors[t], (ds_state)s)) continue;
            uint64_t n = c->tensors[t].numel;
            size_t es = dsckpt_dtype_size(ds_ckpt_state_dtype(c, (ds_state)s, t));
            uint8_t *got = malloc(n * es + 1), *want = malloc(n * es + 1);
            TU_ASSERT_OK(ds_ckpt_read(c, &fs, (ds_state)s, t, 0, n, got));
            TU_ASSERT_OK(fill(&fc, (ds_state)s, t, 0, n, want, 0));
            if (memcmp(got, want, n * es) != 0) bad++;
            /* A read from the middle, crossing chunks. */
            if (n > 10) {
                TU_ASSERT_OK(ds_ckpt_read(c, &fs, (ds_state)s, t, n / 3, n / 2, got));
                if (memcmp(got, want + (n / 3) * es, (n / 2) * es) != 0) bad++;
            }
            free(got);
            free(want);
        }
    bad += check_read_list(c, &fs);
    ds_fdset_close(&fs);
    return bad;
}

static char *tag_file(const char *root, const char *name) {
    char *td = tu_path(root, TAG), *p = tu_path(td, name);
    free(td);
    return p;
}

/* A whole file as a NUL-terminated string (malloc'd). */
static char *read_text(const char *path) {
    size_t n = 0;
    uint8_t *b = tu_read(path, &n);
    CU_ASSERT_FATAL(b != NULL);
    char *t = malloc(n + 1);
    memcpy(t, b, n);
    t[n] = '\0';
    free(b);
    return t;
}

static void test_round_trip(void) {
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "p");
    write_ckpt(p, 300000, 0, 64 << 10);
    /* planes (version 3), then single frames (version 2, test builds only) */
    for (int frame = 0; frame < (ds_test_hooks_built() ? 2 : 1); frame++) {
        char *z = tu_path(dir, frame ? "z2" : "z3");
        write_ckpt_codec(z, 300000, 1, 64 << 10, frame);
        dsckpt_ckpt *c = NULL;
        TU_ASSERT_OK(dsckpt_ckpt_open(z, NULL, &c));
        size_t n[3] = {0};
        for (size_t i = 0; i < c->nfiles; i++) {
            CU_ASSERT(c->files[i].compressed);
            CU_ASSERT(c->files[i].stored_size < c->files[i].size);
            for (size_t k = 0; k < c->files[i].dg.nchunks; k++) n[c->files[i].zc[k].kind]++;
        }
        CU_ASSERT(n[DS_ZCHUNK_RAW] > 0); /* the random fp32 chunks did not shrink */
        CU_ASSERT(frame ? n[DS_ZCHUNK_ZSTD] > 0 && n[DS_ZCHUNK_PLANES] == 0 : n[DS_ZCHUNK_PLANES] > 0);
        CU_ASSERT_EQUAL(check_reads(c, 1), 0);
        CU_ASSERT_EQUAL(check_reads(c, 0), 0);
        dsckpt_ckpt_free(c);
        char *mz = tag_file(z, DS_MANIFEST_NAME), *tz = read_text(mz);
        CU_ASSERT(strstr(tz, frame ? "\"version\":2," : "\"version\":3,") != NULL);
        free(tz);
        free(mz);
        dsckpt_verify_report *r = NULL;
        TU_ASSERT_OK(dsckpt_verify(z, NULL, NULL, &r));
        CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_OK);
        dsckpt_verify_report_free(r);
        free(z);
    }
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(p, NULL, &c));
    CU_ASSERT(!c->files[0].compressed);
    CU_ASSERT_EQUAL(check_reads(c, 1), 0);
    dsckpt_ckpt_free(c);
    /* Versions: 1 when not compressed. */
    char *mp = tag_file(p, DS_MANIFEST_NAME), *tp = read_text(mp);
    CU_ASSERT(strstr(tp, "\"version\":1,") != NULL);
    CU_ASSERT(strstr(tp, "compression") == NULL);
    free(tp);
    free(mp);
    tu_rmtree(dir);
    free(p);
    free(dir);
}

/* ---- manifest edits ---- */

typedef void (*edit_fn)(cJSON *root);

static void edit_manifest(const char *root_dir, edit_fn fn) {
    char *mp = tag_file(root_dir, DS_MANIFEST_NAME);
    size_t len = 0;
    char *text = (char *)tu_read(mp, &len);
    CU_ASSERT_FATAL(text != NULL);
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    CU_ASSERT_FATAL(root != NULL);
    fn(root);
    cJSON_DeleteItemFromObjectCaseSensitive(root, "manifest_sha256");
    char *body = cJSON_PrintUnformatted(root), *out = NULL;
    cJSON_Delete(root);
    TU_ASSERT_OK(ds_manifest_seal(body, &out));
    free(body);
    CU_ASSERT_FATAL(tu_write(mp, out, strlen(out)) == 0);
    free(out);
    free(mp);
}

static cJSON *file0(cJSON *root) { return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "files"), 0); }
static cJSON *chunk_of(cJSON *root, int k) {
    return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(file0(root), "chunks"), k);
}
static void setnum(cJSON *o, const char *key, double v) {
    cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(o, key), v);
}
static void bump(cJSON *arr, int j, double by) {
    cJSON *x = cJSON_GetArrayItem(arr, j);
    cJSON_SetNumberValue(x, x->valuedouble + by);
}
static void e_chunk_huge(cJSON *r) { setnum(file0(r), "chunk_size", 1099511627776.0); }
static void e_raw_size(cJSON *r) { bump(chunk_of(r, 0), 1, 1); }
static void e_raw_off(cJSON *r) { bump(chunk_of(r, 1), 0, 8); }
static void e_stored_gap(cJSON *r) { bump(chunk_of(r, 1), 2, 1); }
static void e_stored_size(cJSON *r) { setnum(file0(r), "stored_size", cJSON_GetObjectItemCaseSensitive(file0(r), "stored_size")->valuedouble + 1); }
static void e_kind(cJSON *r) { cJSON_ReplaceItemInArray(chunk_of(r, 0), 4, cJSON_CreateString("lz4")); }
static void e_width(cJSON *r) { cJSON_ReplaceItemInArray(chunk_of(r, 1), 5, cJSON_CreateNumber(3)); }
/* The chunks of a compressed write are encoded on every worker and stored in
 * order: 1, 2 and 5 threads (more than the 2 files, so chunks of one file go side
 * by side) write the same bytes and chunk records, which read back. A fill that
 * fails in the middle of the last file fails the write with its own status and
 * message at every thread count (the workers holding the chunks after it, waiting
 * for their turn, are woken), and leaves no temporary file behind. */
static void test_threads(void) {
    char *dir = tu_mkdtemp();
    const int threads[] = {1, 2, 5};
    uint8_t *want[2] = {0};
    size_t want_n[2] = {0};
    failspec fail = {-1, 0, 0};
    for (int ti = 0; ti < 3; ti++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", threads[ti]);
        char *z = tu_path(dir, name);
        TU_ASSERT_OK(write_ckpt_full(z, 300000, 1, 16 << 10, false, threads[ti], (failspec){-1, 0, 0}));
        dsckpt_ckpt *c = NULL;
        TU_ASSERT_OK(dsckpt_ckpt_open(z, NULL, &c));
        CU_ASSERT_EQUAL_FATAL(c->nfiles, 2);
        /* the fill of the last file's largest fp32 fragment, many chunks before
         * the file's end, fails below */
        uint64_t best = 0;
        for (size_t j = 0; ti == 0 && j < c->nfrags[DS_ST_FP32]; j++) {
            const ds_frag *fr = &c->frags[DS_ST_FP32][j];
            if (fr->file == 1 && fr->numel > best && fr->offset + fr->numel * 4 + 10 * (16 << 10) < c->files[1].size) {
                best = fr->numel;
                fail = (failspec){fr->tensor, fr->start, fr->start + fr->numel};
            }
        }
        for (size_t i = 0; i < 2; i++) {
            CU_ASSERT(c->files[i].compressed && c->files[i].dg.nchunks > 20);
            size_t n = 0;
            uint8_t *b = tu_read(c->files[i].path, &n);
            CU_ASSERT_FATAL(b != NULL);
            CU_ASSERT_EQUAL(n, c->files[i].stored_size);
            if (ti == 0) {
                want[i] = b;
                want_n[i] = n;
                continue;
            }
            CU_ASSERT(n == want_n[i] && memcmp(b, want[i], n) == 0);
            free(b);
        }
        CU_ASSERT_EQUAL(check_reads(c, 1), 0);
        dsckpt_ckpt_free(c);
        free(z);
    }
    free(want[0]);
    free(want[1]);
    CU_ASSERT_FATAL(fail.tensor >= 0);
    for (int ti = 0; ti < 3; ti++) {
        char name[16];
        snprintf(name, sizeof name, "f%d", threads[ti]);
        char *z = tu_path(dir, name);
        dsckpt_status st = write_ckpt_full(z, 300000, 1, 16 << 10, false, threads[ti], fail);
        CU_ASSERT_EQUAL(st, DSCKPT_EIO);
        char want_msg[64];
        snprintf(want_msg, sizeof want_msg, "injected fill failure, tensor %ld", fail.tensor);
        CU_ASSERT(strstr(dsckpt_last_error(), want_msg) != NULL);
        char *td = tu_path(z, TAG);
        DIR *d = opendir(td);
        CU_ASSERT_FATAL(d != NULL);
        for (struct dirent *e; (e = readdir(d));) {
            if (e->d_name[0] != '.' || !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            fprintf(stderr, "\n  left behind: %s", e->d_name);
            CU_FAIL("a temporary file was left behind");
        }
        closedir(d);
        free(td);
        free(z);
    }
    tu_rmtree(dir);
    free(dir);
}

/* The first chunk of file 0 stored as `kind`. */
static cJSON *chunk_kind(cJSON *r, const char *kind) {
    cJSON *c0 = NULL;
    for (int k = 0; (c0 = chunk_of(r, k)); k++)
        if (!strcmp(cJSON_GetArrayItem(c0, 4)->valuestring, kind)) break;
    CU_ASSERT_FATAL(c0 != NULL);
    return c0;
}
static void e_not_smaller(cJSON *r) {
    /* a zstd chunk claiming as many stored bytes as raw ones (a planes chunk made one) */
    cJSON *c0 = chunk_kind(r, "planes");
    cJSON_ReplaceItemInArray(c0, 4, cJSON_CreateString("zstd"));
    cJSON_SetNumberValue(cJSON_GetArrayItem(c0, 3), cJSON_GetArrayItem(c0, 1)->valuedouble);
}
static void e_planes_not_smaller(cJSON *r) {
    cJSON *c0 = chunk_kind(r, "planes");
    cJSON_SetNumberValue(cJSON_GetArrayItem(c0, 3), cJSON_GetArrayItem(c0, 1)->valuedouble);
}
static void e_planes_tiny(cJSON *r) { cJSON_SetNumberValue(cJSON_GetArrayItem(chunk_kind(r, "planes"), 3), 9); }
static void e_planes_w1(cJSON *r) { cJSON_ReplaceItemInArray(chunk_kind(r, "planes"), 5, cJSON_CreateNumber(1)); }
static void e_planes_v2(cJSON *r) { setnum(r, "version", 2); }
static void e_short_entry(cJSON *r) { cJSON_DeleteItemFromArray(chunk_of(r, 0), 6); }
static void e_compression(cJSON *r) { cJSON_ReplaceItemInObject(file0(r), "compression", cJSON_CreateString("lz4")); }
static void e_v1(cJSON *r) { setnum(r, "version", 1); }
static void e_v4(cJSON *r) { setnum(r, "version", 4); }

static void test_manifest_edits(void) {
    static const struct {
        const char *name;
        edit_fn fn;
        dsckpt_status want;
        const char *msg;
        uint64_t chunk;
    } cases[] = {
        {"chunk size past the limit", e_chunk_huge, DSCKPT_ECORRUPT, "of a compressed file (at most", 0},
        {"raw size", e_raw_size, DSCKPT_ECORRUPT, "covers raw bytes", 64 << 10},
        {"raw offset", e_raw_off, DSCKPT_ECORRUPT, "covers raw bytes", 64 << 10},
        {"stored gap", e_stored_gap, DSCKPT_ECORRUPT, "right after the previous chunk", 64 << 10},
        {"stored_size", e_stored_size, DSCKPT_ECORRUPT, "stored_size is", 64 << 10},
        {"kind", e_kind, DSCKPT_ECORRUPT, "kind must be", 64 << 10},
        {"width", e_width, DSCKPT_ECORRUPT, "width", 64 << 10},
        {"zstd not smaller", e_not_smaller, DSCKPT_ECORRUPT, "it must be smaller", 64 << 10},
        {"planes not smaller", e_planes_not_smaller, DSCKPT_ECORRUPT, "a planes chunk of", 64 << 10},
        {"planes smaller than its header", e_planes_tiny, DSCKPT_ECORRUPT, "header and tail", 64 << 10},
        {"planes of width 1", e_planes_w1, DSCKPT_ECORRUPT, "a planes chunk of shuffle width 1", 64 << 10},
        {"planes in version 2", e_planes_v2, DSCKPT_ECORRUPT, "kind \"planes\" in a version 2 manifest", 64 << 10},
        {"short entry", e_short_entry, DSCKPT_ECORRUPT, "must be [raw_offset", 64 << 10},
        {"unknown compression", e_compression, DSCKPT_EUNSUPPORTED, "compression 'lz4'", 64 << 10},
        {"compression in version 1", e_v1, DSCKPT_ECORRUPT, "need version 2", 64 << 10},
        {"newer version", e_v4, DSCKPT_EVERSION, "manifest version 4", 64 << 10},
    };
    char *dir = tu_mkdtemp();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "c%zu", i);
        char *root = tu_path(dir, name);
        write_ckpt(root, 200000, 1, cases[i].chunk);
        edit_manifest(root, cases[i].fn);
        dsckpt_ckpt *c = NULL;
        dsckpt_status st = dsckpt_ckpt_open(root, NULL, &c);
        if (st != cases[i].want || !strstr(dsckpt_last_error(), cases[i].msg))
            fprintf(stderr, "\n  %s: %s: %s", cases[i].name, dsckpt_status_name(st), dsckpt_last_error());
        CU_ASSERT_EQUAL(st, cases[i].want);
        CU_ASSERT(strstr(dsckpt_last_error(), cases[i].msg) != NULL);
        dsckpt_ckpt_free(c);
        free(root);
    }
    tu_rmtree(dir);
    free(dir);
}

/* ---- damaged files ---- */

/* The first compressed (zstd or planes) chunk of file f after the one holding
 * the header. */
static size_t first_zstd(const ds_file *f) {
    for (size_t k = 1; k < f->dg.nchunks; k++)
        if (f->zc[k].kind != DS_ZCHUNK_RAW) return k;
    CU_FAIL_FATAL("no compressed chunk");
    return 0;
}

/* A file offset in the middle of a zstd frame of chunk k of f: the chunk's
 * middle, or for planes the middle of its first frame plane (a raw plane has no
 * check of its own: with the digests off a flip there reads as wrong bytes). */
static uint64_t frame_middle(const ds_file *f, size_t k) {
    const ds_zrec *z = &f->zc[k];
    if (z->kind != DS_ZCHUNK_PLANES) return z->off + z->size / 2;
    size_t n;
    uint8_t *b = tu_read(f->path, &n);
    CU_ASSERT_FATAL(b != NULL && z->off + z->size <= n);
    const uint8_t *h = b + z->off;
    uint64_t pos = (uint64_t)DS_ZCHUNK_PLANE_REC * z->width, at = 0;
    for (int j = 0; j < z->width && !at; j++) {
        const uint8_t *rec = h + DS_ZCHUNK_PLANE_REC * j;
        uint64_t sz = (uint64_t)rec[1] | (uint64_t)rec[2] << 8 | (uint64_t)rec[3] << 16 | (uint64_t)rec[4] << 24;
        if (rec[0] == DS_ZCHUNK_ZSTD) at = z->off + pos + sz / 2;
        pos += sz;
    }
    free(b);
    CU_ASSERT_FATAL(at != 0);
    return at;
}

static void test_flipped_stored_byte(void) {
    char *dir = tu_mkdtemp(), *root = tu_path(dir, "z");
    write_ckpt(root, 300000, 1, 64 << 10);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    const ds_file *f = &c->files[1];
    size_t k = first_zstd(f);
    uint64_t off = frame_middle(f, k);
    CU_ASSERT_FATAL(tu_flip_bit(f->path, off, 3) == 0);
    dsckpt_verify_report *r = NULL;
    TU_ASSERT_OK(dsckpt_verify(root, NULL, NULL, &r));
    CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_CORRUPT);
    char want[128];
    snprintf(want, sizeof want, "rank_00001.safetensors: chunk %zu (stored bytes", k);
    bool named = false;
    for (size_t i = 0; i < dsckpt_verify_report_count(r); i++)
        named |= strstr(dsckpt_verify_report_problem(r, i), want) != NULL;
    CU_ASSERT(named);
    dsckpt_verify_report_free(r);
    /* Reading every state hits the chunk: checked, it is a checksum failure naming
     * it; unchecked, zstd's own checks refuse it. */
    for (int check = 1; check >= 0; check--) {
        dsckpt_ckpt_set_read_check(c, check);
        ds_fdset fs;
        TU_ASSERT_OK(ds_fdset_open(c, &fs));
        dsckpt_status worst = DSCKPT_OK;
        for (uint32_t t = 0; t < c->ntensors && worst == DSCKPT_OK; t++)
            for (int s = 0; s < DS_NSTATES && worst == DSCKPT_OK; s++) {
                if (!ds_state_applies(&c->tensors[t], (ds_state)s)) continue;
                size_t es = dsckpt_dtype_size(ds_ckpt_state_dtype(c, (ds_state)s, t));
                uint8_t *b = malloc(c->tensors[t].numel * es + 1);
                worst = ds_ckpt_read(c, &fs, (ds_state)s, t, 0, c->tensors[t].numel, b);
                free(b);
            }
        CU_ASSERT_EQUAL(worst, check ? DSCKPT_ECHECKSUM : DSCKPT_ECORRUPT);
        snprintf(want, sizeof want, "chunk %zu", k);
        CU_ASSERT(strstr(dsckpt_last_error(), want) != NULL);
        ds_fdset_close(&fs);
    }
    /* A flip in the chunk holding the safetensors header: opening the files for
     * reading already fails, naming the chunk (checked) or through zstd (not). */
    const ds_file *f0 = &c->files[0];
    CU_ASSERT_FATAL(f0->zc[0].kind != DS_ZCHUNK_RAW);
    CU_ASSERT_FATAL(tu_flip_bit(f0->path, frame_middle(f0, 0), 5) == 0);
    for (int check = 1; check >= 0; check--) {
        dsckpt_ckpt_set_read_check(c, check);
        ds_fdset fs;
        CU_ASSERT_EQUAL(ds_fdset_open(c, &fs), check ? DSCKPT_ECHECKSUM : DSCKPT_ECORRUPT);
        CU_ASSERT(strstr(dsckpt_last_error(), "rank_00000.safetensors: chunk 0") != NULL);
    }
    /* consolidate refuses, and leaves nothing. */
    char *out = tu_path(dir, "out.safetensors");
    dsckpt_ckpt_set_read_check(c, 1);
    CU_ASSERT_EQUAL(dsckpt_consolidate(c, out, NULL), DSCKPT_ECHECKSUM);
    CU_ASSERT(!tu_exists(out));
    free(out);
    dsckpt_ckpt_free(c);
    tu_rmtree(dir);
    free(root);
    free(dir);
}

static void test_truncated(void) {
    char *dir = tu_mkdtemp(), *root = tu_path(dir, "z");
    write_ckpt(root, 300000, 1, 64 << 10);
    char *rf = tag_file(root, "rank_00000.safetensors");
    size_t n;
    free(tu_read(rf, &n));
    CU_ASSERT_FATAL(tu_truncate(rf, n - 100) == 0);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    ds_fdset fs;
    CU_ASSERT_EQUAL(ds_fdset_open(c, &fs), DSCKPT_ECORRUPT);
    CU_ASSERT(strstr(dsckpt_last_error(), "truncated or replaced") != NULL);
    dsckpt_verify_report *r = NULL;
    TU_ASSERT_OK(dsckpt_verify(root, NULL, NULL, &r));
    CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_CORRUPT);
    dsckpt_verify_report_free(r);
    dsckpt_ckpt_free(c);
    free(rf);
    tu_rmtree(dir);
    free(root);
    free(dir);
}

/* The last stored chunk of rank 0 replaced by a small frame of 4 MiB of zeros (a
 * bomb: the chunk holds far fewer raw bytes), with every digest and size in the
 * manifest updated and resealed. The decoder refuses it from the frame header. */
static int bomb_k;
static uint64_t bomb_off, bomb_len;
static char bomb_hex[65], file_hex[65];
static void e_bomb(cJSON *r) {
    cJSON *f = file0(r), *ch = chunk_of(r, bomb_k);
    cJSON_SetNumberValue(cJSON_GetArrayItem(ch, 3), (double)bomb_len);
    cJSON_ReplaceItemInArray(ch, 4, cJSON_CreateString("zstd"));
    cJSON_ReplaceItemInArray(ch, 5, cJSON_CreateNumber(1));
    cJSON_ReplaceItemInArray(ch, 6, cJSON_CreateString(bomb_hex));
    setnum(f, "stored_size", (double)(bomb_off + bomb_len));
    cJSON_ReplaceItemInObject(f, "sha256", cJSON_CreateString(file_hex));
}

static void test_bomb_chunk(void) {
    char *dir = tu_mkdtemp(), *root = tu_path(dir, "z");
    write_ckpt(root, 300000, 1, 64 << 10);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    const ds_file *f = &c->files[0];
    bomb_k = (int)f->dg.nchunks - 1;
    bomb_off = f->zc[bomb_k].off;
    uint64_t raw_last = f->size - (uint64_t)bomb_k * f->dg.chunk_size;
    size_t zn = 4u << 20, cap = ZSTD_compressBound(zn);
    uint8_t *zeros = calloc(zn, 1), *fr = malloc(cap);
    bomb_len = ZSTD_compress(fr, cap, zeros, zn, 1);
    CU_ASSERT_FATAL(!ZSTD_isError(bomb_len) && bomb_len < raw_last);
    /* The file: everything before the last chunk, then the frame. */
    size_t n;
    uint8_t *bytes = tu_read(f->path, &n), *nb = malloc(bomb_off + bomb_len);
    memcpy(nb, bytes, bomb_off);
    memcpy(nb + bomb_off, fr, bomb_len);
    CU_ASSERT_FATAL(tu_write(f->path, nb, bomb_off + bomb_len) == 0);
    uint8_t dg[DS_SHA256_LEN], (*chunks)[DS_SHA256_LEN] = malloc(f->dg.nchunks * DS_SHA256_LEN);
    memcpy(chunks, f->dg.chunks, f->dg.nchunks * DS_SHA256_LEN);
    TU_ASSERT_OK(ds_sha256(fr, bomb_len, chunks[bomb_k]));
    ds_hex(chunks[bomb_k], DS_SHA256_LEN, bomb_hex);
    TU_ASSERT_OK(ds_sha256_of_chunks((const uint8_t(*)[DS_SHA256_LEN])chunks, f->dg.nchunks, dg));
    ds_hex(dg, DS_SHA256_LEN, file_hex);
    dsckpt_ckpt_free(c);
    edit_manifest(root, e_bomb);
    /* verify: digests and sizes all agree (it hashes, never decodes). */
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    ds_fdset fs;
    TU_ASSERT_OK(ds_fdset_open(c, &fs));
    dsckpt_status worst = DSCKPT_OK;
    for (uint32_t t = 0; t < c->ntensors && worst == DSCKPT_OK; t++)
        for (int s = 0; s < DS_NSTATES && worst == DSCKPT_OK; s++) {
            if (!ds_state_applies(&c->tensors[t], (ds_state)s)) continue;
            size_t es = dsckpt_dtype_size(ds_ckpt_state_dtype(c, (ds_state)s, t));
            uint8_t *b = malloc(c->tensors[t].numel * es + 1);
            worst = ds_ckpt_read(c, &fs, (ds_state)s, t, 0, c->tensors[t].numel, b);
            free(b);
        }
    CU_ASSERT_EQUAL(worst, DSCKPT_ECORRUPT);
    CU_ASSERT(strstr(dsckpt_last_error(), "the zstd frame states 4194304 raw bytes") != NULL);
    ds_fdset_close(&fs);
    dsckpt_ckpt_free(c);
    free(chunks);
    free(bytes);
    free(nb);
    free(zeros);
    free(fr);
    tu_rmtree(dir);
    free(root);
    free(dir);
}

/* A read list of the middle half of every state of every tensor, tensors in
 * reverse order (so the runs are not in file order), each in its own place of
 * *buf; *want is what fill() gives there. */
static ds_read_list middle_list(dsckpt_ckpt *c, uint8_t **buf, uint8_t **want, size_t *total) {
    ds_read_list l = {0};
    fillctx fc = {c->tensors, -1, 0, 0};
    size_t n = 0;
    for (uint32_t t = 0; t < c->ntensors; t++)
        for (int s = 0; s < DS_NSTATES; s++)
            if (ds_state_applies(&c->tensors[t], (ds_state)s))
                n += c->tensors[t].numel * dsckpt_dtype_size(ds_ckpt_state_dtype(c, (ds_state)s, t));
    *buf = calloc(n, 1);
    *want = calloc(n, 1);
    CU_ASSERT_FATAL(*buf && *want);
    size_t at = 0;
    for (uint32_t t = c->ntensors; t-- > 0;)
        for (int s = 0; s < DS_NSTATES; s++) {
            if (!ds_state_applies(&c->tensors[t], (ds_state)s)) continue;
            uint64_t numel = c->tensors[t].numel, lo = numel / 4, cnt = numel / 2;
            size_t es = dsckpt_dtype_size(ds_ckpt_state_dtype(c, (ds_state)s, t));
            if (cnt) {
                TU_ASSERT_OK(ds_read_list_add(&l, c, (ds_state)s, t, lo, cnt, *buf + at));
                TU_ASSERT_OK(fill(&fc, (ds_state)s, t, lo, cnt, *want + at, 0));
            }
            at += numel * es;
        }
    *total = n;
    return l;
}

/* A damaged header chunk (compressed c, two files): on several threads the lazy
 * set's files are opened before the reads, side by side, and the first that
 * fails in file order fails the run with its own message; one thread reads in
 * the list's order, which meets file 1 first. Damages c's files. */
static void check_damaged_headers(dsckpt_ckpt *c, const ds_read_list *l) {
    CU_ASSERT_FATAL(c->nfiles == 2);
    for (int f = 1; f >= 0; f--) {
        const ds_file *df = &c->files[f];
        CU_ASSERT_FATAL(tu_flip_bit(df->path, df->zc[0].off + df->zc[0].size / 2, 4) == 0);
        char want_msg[64];
        snprintf(want_msg, sizeof want_msg, "rank_0000%d.safetensors: chunk 0 (stored bytes", f);
        for (int th = 1; th <= 3; th++) {
            ds_fdset fs;
            TU_ASSERT_OK(ds_fdset_open_lazy(c, &fs));
            ds_fdset_defer_checks(&fs);
            CU_ASSERT_EQUAL(ds_read_list_run_threads(c, &fs, l, th), DSCKPT_ECHECKSUM);
            CU_ASSERT(strstr(dsckpt_last_error(),
                             th == 1 ? "rank_00001.safetensors: chunk 0 (stored bytes" : want_msg) != NULL);
            ds_fdset_close(&fs);
        }
    }
}

/* A checkpoint of about 300k parameters in 16 KiB chunks under dir (plain, or
 * compressed at `level`), opened; *root is its path (the caller frees it). */
static dsckpt_ckpt *small_ckpt(const char *dir, int level, char **root) {
    *root = tu_path(dir, level ? "z" : "p");
    write_ckpt(*root, 300000, level, 16 << 10);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(*root, NULL, &c));
    return c;
}

/* ds_read_list_run_threads: the middle half of every state (parts of most chunks,
 * the runs out of file order) on 1, 2 and 3 threads, from eager and lazy sets,
 * plain and compressed, equals fill(); a flipped byte that the list does not ask
 * for, in a chunk it reads part of, fails the read on every thread count, naming
 * the chunk, as a single read's check does; a damaged header chunk fails the run,
 * naming the first damaged file in file order (on one thread: in the list's). */
static void test_read_list_threads(void) {
    char *dir = tu_mkdtemp();
    for (int level = 0; level <= 1; level++) {
        char *root;
        dsckpt_ckpt *c = small_ckpt(dir, level, &root);
        uint8_t *buf, *want;
        size_t total;
        ds_read_list l = middle_list(c, &buf, &want, &total);
        CU_ASSERT(l.n > 8);
        for (int th = 1; th <= 3; th++)
            for (int lazy = 0; lazy <= 1; lazy++) {
                ds_fdset fs;
                TU_ASSERT_OK(lazy ? ds_fdset_open_lazy(c, &fs) : ds_fdset_open(c, &fs));
                if (lazy) ds_fdset_defer_checks(&fs); /* as dstrain's load sets it */
                memset(buf, 0, total);
                TU_ASSERT_OK(ds_read_list_run_threads(c, &fs, &l, th));
                TU_ASSERT_OK(ds_fdset_finish(c, &fs));
                CU_ASSERT(memcmp(buf, want, total) == 0);
                ds_fdset_close(&fs);
            }
        if (level == 0) {
            /* The element before the middle of the largest tensor's fp32 state: in a
             * chunk that the list reads part of (its next element), but not asked. */
            uint32_t big = 0;
            for (uint32_t t = 1; t < c->ntensors; t++)
                if (c->tensors[t].trainable && c->tensors[t].numel > c->tensors[big].numel) big = t;
            uint64_t e = c->tensors[big].numel / 4 - 1;
            ds_read_list one = {0}, next = {0};
            float f;
            TU_ASSERT_OK(ds_read_list_add(&one, c, DS_ST_FP32, big, e, 1, (uint8_t *)&f));
            TU_ASSERT_OK(ds_read_list_add(&next, c, DS_ST_FP32, big, e + 1, 1, (uint8_t *)&f));
            CU_ASSERT_FATAL(one.n == 1 && next.n == 1);
            uint64_t chunk = c->files[one.runs[0].file].dg.chunk_size, off = one.runs[0].offset;
            CU_ASSERT_FATAL(next.runs[0].file == one.runs[0].file && next.runs[0].offset / chunk == off / chunk);
            char *path = ds_strdup(c->files[one.runs[0].file].path), want_msg[64];
            snprintf(want_msg, sizeof want_msg, "chunk %llu (bytes", (unsigned long long)(off / chunk));
            ds_read_list_free(&one);
            ds_read_list_free(&next);
            CU_ASSERT_FATAL(tu_flip_bit(path, off, 2) == 0);
            for (int th = 1; th <= 3; th++) {
                ds_fdset fs;
                TU_ASSERT_OK(ds_fdset_open_lazy(c, &fs));
                ds_fdset_defer_checks(&fs);
                dsckpt_status st = ds_read_list_run_threads(c, &fs, &l, th);
                if (st == DSCKPT_OK) st = ds_fdset_finish(c, &fs);
                CU_ASSERT_EQUAL(st, DSCKPT_ECHECKSUM);
                CU_ASSERT(strstr(dsckpt_last_error(), want_msg) != NULL);
                ds_fdset_close(&fs);
            }
            free(path);
        } else {
            check_damaged_headers(c, &l);
        }
        ds_read_list_free(&l);
        free(buf);
        free(want);
        dsckpt_ckpt_free(c);
        free(root);
    }
    tu_rmtree(dir);
    free(dir);
}

/* ds_read_share: NR readers, reader r asking for the r-th of NR slices of every
 * state of every tensor (the shares of a resume at NR ranks), each into its own
 * buffer. Each reader's plan, its send block for every peer handed to that peer
 * (the exchange), and the scatter give each reader fill()'s bytes; every check
 * unit the lists touch is read by exactly one plan; the plans read as many bytes
 * as the lists ask for, no more. */
#define NR 3
typedef struct share_reader {
    uint8_t *buf, *want, *send, *recv;
    size_t total;
    ds_read_list l;
    ds_read_share p;
} share_reader;

static void share_lists(dsckpt_ckpt *c, share_reader *rd) {
    fillctx fc = {c->tensors, -1, 0, 0};
    for (int r = 0; r < NR; r++) {
        share_reader *x = &rd[r];
        *x = (share_reader){0};
        for (int pass = 0; pass < 2; pass++) {
            size_t at = 0;
            for (uint32_t t = 0; t < c->ntensors; t++)
                for (int s = 0; s < DS_NSTATES; s++) {
                    if (!ds_state_applies(&c->tensors[t], (ds_state)s)) continue;
                    uint64_t n = c->tensors[t].numel, lo = n * (uint64_t)r / NR, hi = n * (uint64_t)(r + 1) / NR;
                    size_t es = dsckpt_dtype_size(ds_ckpt_state_dtype(c, (ds_state)s, t));
                    if (pass && hi > lo) {
                        TU_ASSERT_OK(ds_read_list_add(&x->l, c, (ds_state)s, t, lo, hi - lo, x->buf + at));
                        TU_ASSERT_OK(fill(&fc, (ds_state)s, t, lo, hi - lo, x->want + at, 0));
                    }
                    at += (hi - lo) * es;
                }
            if (!pass) {
                x->total = at;
                x->buf = calloc(at ? at : 1, 1);
                x->want = calloc(at ? at : 1, 1);
                CU_ASSERT_FATAL(x->buf && x->want);
            }
        }
    }
}

static void share_plans(dsckpt_ckpt *c, share_reader *rd, uint64_t budget) {
    size_t counts[NR], total = 0;
    for (int r = 0; r < NR; r++) total += counts[r] = rd[r].l.n;
    ds_read_extent *all = calloc(total, sizeof *all);
    CU_ASSERT_FATAL(all != NULL);
    for (int r = 0, at = 0; r < NR; r++)
        for (size_t i = 0; i < rd[r].l.n; i++, at++)
            all[at] = (ds_read_extent){rd[r].l.runs[i].file, rd[r].l.runs[i].offset, rd[r].l.runs[i].bytes};
    for (int r = 0; r < NR; r++) {
        TU_ASSERT_OK(ds_read_share_plan(c, &rd[r].l, r, NR, all, counts, budget, &rd[r].p));
        rd[r].send = malloc(rd[r].p.send_total + 1);
        rd[r].recv = malloc(rd[r].p.recv_total + 1);
        CU_ASSERT_FATAL(rd[r].send && rd[r].recv);
        ds_read_share_bind(&rd[r].p, rd[r].send);
    }
    free(all);
}

/* Runs every reader's plan (threads each); returns how many failed, each with
 * ECHECKSUM (*who: the last that did). */
static int share_run(dsckpt_ckpt *c, share_reader *rd, int threads, int *who) {
    int failed = 0;
    for (int r = 0; r < NR; r++) {
        ds_fdset fs;
        TU_ASSERT_OK(ds_fdset_open_lazy(c, &fs));
        ds_fdset_defer_checks(&fs);
        memset(rd[r].buf, 0, rd[r].total);
        dsckpt_status st = ds_read_list_run_threads(c, &fs, &rd[r].p.list, threads);
        if (!st) st = ds_fdset_finish(c, &fs);
        ds_fdset_close(&fs);
        if (st) {
            CU_ASSERT_EQUAL(st, DSCKPT_ECHECKSUM);
            CU_ASSERT(strstr(dsckpt_last_error(), "chunk") != NULL);
            failed++;
            *who = r;
        }
    }
    for (int k = 0; k < NR; k++) /* the exchange: k's block for j into j's buffer */
        for (int j = 0; j < NR; j++) {
            CU_ASSERT_FATAL(rd[k].p.send_bytes[j] == rd[j].p.recv_bytes[k]);
            if (k != j && rd[k].p.send_bytes[j])
                memcpy(rd[j].recv + rd[j].p.recv_off[k], rd[k].send + rd[k].p.send_off[j], rd[k].p.send_bytes[j]);
        }
    for (int r = 0; r < NR; r++) ds_read_share_scatter(&rd[r].p, rd[r].recv);
    return failed;
}

static int u64_cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Check units of a list (file << 32 | unit, sorted, distinct) and its bytes. */
static size_t list_units(const dsckpt_ckpt *c, const ds_read_list *l, uint64_t *units, uint64_t *bytes) {
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++) {
        uint64_t u = ds_ckpt_check_unit(c, l->runs[i].file);
        *bytes += l->runs[i].bytes;
        for (uint64_t k = l->runs[i].offset / u; k * u < l->runs[i].offset + l->runs[i].bytes; k++)
            units[n++] = (uint64_t)l->runs[i].file << 32 | k;
    }
    qsort(units, n, sizeof *units, u64_cmp);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!m || units[m - 1] != units[i]) units[m++] = units[i];
    return m;
}

static void check_share_units(const dsckpt_ckpt *c, const share_reader *rd) {
    uint64_t *asked = calloc(1 << 16, sizeof *asked), *read = calloc(1 << 16, sizeof *read);
    CU_ASSERT_FATAL(asked && read);
    size_t na = 0, nr = 0;
    uint64_t asked_bytes = 0, read_bytes = 0;
    for (int r = 0; r < NR; r++) {
        na += list_units(c, &rd[r].l, asked + na, &asked_bytes);
        nr += list_units(c, &rd[r].p.list, read + nr, &read_bytes);
        CU_ASSERT(na < (1 << 15) && nr < (1 << 15));
    }
    qsort(read, nr, sizeof *read, u64_cmp);
    qsort(asked, na, sizeof *asked, u64_cmp);
    size_t distinct = 0;
    for (size_t i = 0; i < na; i++) distinct += !i || asked[i] != asked[i - 1];
    for (size_t i = 1; i < nr; i++) CU_ASSERT(read[i] != read[i - 1]); /* no unit read twice */
    CU_ASSERT_EQUAL(nr, distinct);                                     /* and every one read */
    CU_ASSERT(na > distinct);                                          /* the lists did share units */
    CU_ASSERT_EQUAL(read_bytes, asked_bytes);
    free(asked);
    free(read);
}

static void share_unplan(share_reader *rd) {
    for (int r = 0; r < NR; r++) {
        ds_read_share_free(&rd[r].p);
        free(rd[r].send);
        free(rd[r].recv);
        rd[r].send = rd[r].recv = NULL;
    }
}

/* Plans under a budget (rd: planned without one): half the most any reader moved
 * keeps every reader's sends plus receives within it and still shares units;
 * none shares nothing (each reader reads what it asked for); either way every
 * reader gets its bytes. */
static void check_share_budget(dsckpt_ckpt *c, share_reader *rd) {
    uint64_t most = 0, shared = rd[0].p.shared_units;
    for (int r = 0; r < NR; r++) most = DS_MAX(most, rd[r].p.send_total + rd[r].p.recv_total);
    CU_ASSERT_FATAL(most > 0);
    for (int k = 0; k < 2; k++) {
        uint64_t budget = k ? 0 : most / 2;
        share_unplan(rd);
        share_plans(c, rd, budget);
        for (int r = 0; r < NR; r++) {
            CU_ASSERT(rd[r].p.send_total + rd[r].p.recv_total <= budget);
            CU_ASSERT_EQUAL(rd[r].p.shared_units, rd[0].p.shared_units);
            if (k) {
                uint64_t asked = 0, read = 0;
                for (size_t i = 0; i < rd[r].l.n; i++) asked += rd[r].l.runs[i].bytes;
                for (size_t i = 0; i < rd[r].p.list.n; i++) read += rd[r].p.list.runs[i].bytes;
                CU_ASSERT_EQUAL(read, asked);
            }
        }
        CU_ASSERT(k ? rd[0].p.shared_units == 0 : rd[0].p.shared_units > 0 && rd[0].p.shared_units < shared);
        int who = -1;
        CU_ASSERT_EQUAL(share_run(c, rd, 1, &who), 0);
        for (int r = 0; r < NR; r++) CU_ASSERT(memcmp(rd[r].buf, rd[r].want, rd[r].total) == 0);
    }
}

static void test_read_share(void) {
    char *dir = tu_mkdtemp();
    for (int level = 0; level <= 1; level++) {
        char *root;
        dsckpt_ckpt *c = small_ckpt(dir, level, &root);
        share_reader rd[NR];
        share_lists(c, rd);
        share_plans(c, rd, UINT64_MAX);
        CU_ASSERT(rd[0].p.shared_units > 0);
        check_share_units(c, rd);
        int who = -1;
        for (int th = 1; th <= 2; th++) {
            CU_ASSERT_EQUAL(share_run(c, rd, th, &who), 0);
            for (int r = 0; r < NR; r++) CU_ASSERT(memcmp(rd[r].buf, rd[r].want, rd[r].total) == 0);
        }
        check_share_budget(c, rd);
        share_unplan(rd);
        share_plans(c, rd, UINT64_MAX);
        /* A byte of reader 1's share in a unit reader 0 or 2 checks, damaged: the
         * checker's read fails, naming the chunk; reader 1 reads nothing of it. */
        const ds_share_copy *cp = rd[1].p.ncopies ? &rd[1].p.copies[0] : NULL;
        CU_ASSERT_FATAL(cp != NULL);
        size_t i = 0;
        while (i < rd[1].l.n && !(cp->dst >= rd[1].l.runs[i].dst && cp->dst < rd[1].l.runs[i].dst + rd[1].l.runs[i].bytes)) i++;
        CU_ASSERT_FATAL(i < rd[1].l.n);
        const ds_read_run *run = &rd[1].l.runs[i];
        if (level == 0) {
            CU_ASSERT_FATAL(tu_flip_bit(c->files[run->file].path, run->offset + (uint64_t)(cp->dst - run->dst), 3) == 0);
            CU_ASSERT_EQUAL(share_run(c, rd, 1, &who), 1);
            CU_ASSERT(who != 1);
        }
        /* Two readers asking for the same bytes: refused. */
        ds_read_share dup;
        ds_read_extent twice[2] = {{run->file, run->offset, run->bytes}, {run->file, run->offset, run->bytes}};
        size_t one[2] = {1, 1};
        ds_read_list l1 = {.runs = (ds_read_run *)run, .n = 1};
        CU_ASSERT_EQUAL(ds_read_share_plan(c, &l1, 0, 2, twice, one, UINT64_MAX, &dup), DSCKPT_EINTERNAL);
        share_unplan(rd);
        for (int r = 0; r < NR; r++) {
            ds_read_list_free(&rd[r].l);
            free(rd[r].buf);
            free(rd[r].want);
        }
        dsckpt_ckpt_free(c);
        free(root);
    }
    tu_rmtree(dir);
    free(dir);
}
#undef NR

/* ds_native_set_view: the fp32 and moment states of every trainable tensor in
 * memory, each group's tensors in index order, end to end as a training
 * runtime's flat partitions hold them except for a gap before every third. */
typedef struct viewctx {
    fillctx fc; /* first: fill() takes the same user */
    const ds_tensor *ts;
    float *block[3][2];
    uint64_t *off; /* each tensor's first element in its group's block */
    uint64_t views, filled;
} viewctx;

static const void *view_in_place(void *user, ds_state s, uint32_t t, uint64_t start, uint64_t numel) {
    viewctx *v = user;
    (void)numel;
    if (s > DS_ST_EXP_AVG_SQ || v->ts[t].group < 0) return NULL;
    __atomic_fetch_add(&v->views, 1, __ATOMIC_RELAXED);
    return v->block[s][v->ts[t].group] + v->off[t] + start;
}

static dsckpt_status counting_fill(void *user, ds_state s, uint32_t t, uint64_t start, uint64_t numel, void *dst,
                                   int worker) {
    viewctx *v = user;
    if (s <= DS_ST_EXP_AVG_SQ) __atomic_fetch_add(&v->filled, numel * 4, __ATOMIC_RELAXED);
    return fill(&v->fc, s, t, start, numel, dst, worker);
}

/* A compressed checkpoint written with its data read in place where the view has
 * it (chunks within one run of memory) is byte for byte the one written through
 * the fill alone, at 1 and 3 threads, and most chunks were encoded in place (the
 * fill gave under half the bytes of those states). */
static void test_view_in_place(void) {
    char *dir = tu_mkdtemp(), *ref = tu_path(dir, "ref");
    write_ckpt(ref, 300000, 1, 16 << 10);
    ds_tensor *ts = NULL;
    size_t nt = 0;
    TU_ASSERT_OK(ds_synth_tensors(300000, DSCKPT_BF16, &ts, &nt));
    viewctx v = {.fc = {ts, -1, 0, 0}, .ts = ts};
    v.off = calloc(nt, sizeof *v.off);
    uint64_t len[2] = {0}, total = 0;
    for (size_t t = 0; t < nt; t++)
        if (ts[t].group >= 0) {
            if (t % 3 == 0) len[ts[t].group] += 8; /* a gap: chunks over it are filled */
            v.off[t] = len[ts[t].group];
            len[ts[t].group] += ts[t].numel;
        }
    for (int s = 0; s < 3; s++)
        for (int g = 0; g < 2; g++) {
            v.block[s][g] = malloc((len[g] ? len[g] : 1) * sizeof(float));
            CU_ASSERT_FATAL(v.block[s][g] != NULL);
            total += len[g] * 4;
        }
    for (size_t t = 0; t < nt; t++)
        for (int s = 0; s < 3 && ts[t].group >= 0; s++)
            for (uint64_t i = 0; i < ts[t].numel; i++)
                v.block[s][ts[t].group][v.off[t] + i] = value((ds_state)s, (uint32_t)t, i);
    for (int threads = 1; threads <= 3; threads += 2) {
        char *root = tu_path(dir, threads == 1 ? "v1" : "v3"), *tagdir = tu_path(root, TAG);
        TU_ASSERT_OK(ds_mkdir(root));
        TU_ASSERT_OK(ds_mkdir(tagdir));
        ds_native_spec spec = {.tensors = ts, .ntensors = nt, .ngroups = 2, .stage = 2, .world_size = 2, .tag = TAG,
                               .step = 7, .train_dtype = "bf16", .chunk_size = 16 << 10, .compress_level = 1};
        ds_native_out *no = NULL;
        TU_ASSERT_OK(ds_native_prepare(&spec, tagdir, &no));
        ds_native_set_view(no, view_in_place);
        v.views = v.filled = 0;
        TU_ASSERT_OK(ds_native_write_all(no, counting_fill, &v, threads, NULL));
        ds_native_out_free(no);
        CU_ASSERT(v.views > 0);
        CU_ASSERT(v.filled > 0 && v.filled < total / 2);
        for (int r = 0; r < 2; r++) {
            char name[64];
            snprintf(name, sizeof name, DS_RANK_FILE_FMT, r);
            char *a = tag_file(ref, name), *b = tag_file(root, name);
            CU_ASSERT(tu_same_file(a, b));
            free(a);
            free(b);
        }
        free(tagdir);
        free(root);
    }
    for (int s = 0; s < 3; s++)
        for (int g = 0; g < 2; g++) free(v.block[s][g]);
    free(v.off);
    ds_synth_tensors_free(ts, nt);
    tu_rmtree(dir);
    free(ref);
    free(dir);
}

/* ds_zfile_reader and the lazy open: with 128-byte chunks the safetensors header
 * lies over several chunks. Reads of a compressed rank file's raw bytes in
 * uneven pieces, forwards, backwards and across chunks, equal the plain rank
 * file of the same checkpoint; a lazy set opens the files (the header decoded
 * there) and reads every state right; a flipped bit in a later chunk of the
 * header fails the lazy open with the checks on, naming that chunk. */
static void test_header_over_chunks(void) {
    char *dir = tu_mkdtemp(), *zroot = tu_path(dir, "z"), *proot = tu_path(dir, "p");
    write_ckpt(zroot, 20000, 1, 128);
    write_ckpt(proot, 20000, 0, 128);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(zroot, NULL, &c));
    const ds_file *f = &c->files[0];
    CU_ASSERT_FATAL(f->compressed);
    char *plain = tag_file(proot, "rank_00000.safetensors");
    size_t pn;
    uint8_t *want = tu_read(plain, &pn);
    CU_ASSERT_FATAL(want != NULL && pn == f->size);
    uint64_t hlen = ds_get_le64(want);
    CU_ASSERT_FATAL(8 + hlen > 3 * 128); /* the header spans at least four chunks */
    /* The header's chunks are zstd frames; planes chunks and raw ones follow. */
    size_t nk[3] = {0};
    for (size_t k = 0; k < f->dg.nchunks; k++) nk[f->zc[k].kind]++;
    CU_ASSERT_FATAL(f->zc[0].kind == DS_ZCHUNK_ZSTD && f->zc[2].kind == DS_ZCHUNK_ZSTD);
    CU_ASSERT_FATAL(nk[DS_ZCHUNK_PLANES] > 0 && nk[DS_ZCHUNK_RAW] > 0);
    uint8_t *got = calloc(pn, 1);
    CU_ASSERT_FATAL(got != NULL);
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    CU_ASSERT_FATAL(fd >= 0);
    for (int check = 0; check <= 1; check++) {
        ds_zfile_reader r;
        const uint8_t(*dg)[DS_SHA256_LEN] = check ? (const uint8_t(*)[DS_SHA256_LEN])f->dg.chunks : NULL;
        ds_zfile_reader_init(&r, fd, f->zc, f->dg.nchunks, f->dg.chunk_size, f->size, dg, f->path);
        memset(got, 0, pn);
        /* The length, the header, then the rest in pieces of 1000 bytes from the
         * end backwards, and one read over a whole chunk and parts of two. */
        TU_ASSERT_OK(ds_zfile_reader_read(&r, got, 8, 0));
        TU_ASSERT_OK(ds_zfile_reader_read(&r, got + 8, (size_t)hlen, 8));
        for (uint64_t end = pn; end > 8 + hlen;) {
            uint64_t lo = end >= 8 + hlen + 1000 ? end - 1000 : 8 + hlen;
            TU_ASSERT_OK(ds_zfile_reader_read(&r, got + lo, (size_t)(end - lo), lo));
            end = lo;
        }
        CU_ASSERT(memcmp(got, want, pn) == 0);
        memset(got, 0, pn);
        TU_ASSERT_OK(ds_zfile_reader_read(&r, got + 300, 200, 300));
        CU_ASSERT(memcmp(got + 300, want + 300, 200) == 0);
        /* Past the end: refused, nothing read. */
        CU_ASSERT_EQUAL(ds_zfile_reader_read(&r, got, 2, pn - 1), DSCKPT_ECORRUPT);
        ds_zfile_reader_clear(&r);
    }
    close(fd);
    ds_fdset fs;
    TU_ASSERT_OK(ds_fdset_open_lazy(c, &fs));
    CU_ASSERT_EQUAL(check_read_list(c, &fs), 0);
    ds_fdset_close(&fs);
    /* A flip in the stored bytes of the header's third chunk. */
    CU_ASSERT_FATAL(tu_flip_bit(f->path, f->zc[2].off + f->zc[2].size / 2, 1) == 0);
    TU_ASSERT_OK(ds_fdset_open_lazy(c, &fs));
    CU_ASSERT_EQUAL(ds_fdset_ensure(c, &fs, 0), DSCKPT_ECHECKSUM);
    CU_ASSERT(strstr(dsckpt_last_error(), "rank_00000.safetensors: chunk 2 (stored bytes") != NULL);
    ds_fdset_close(&fs);
    free(got);
    free(want);
    free(plain);
    dsckpt_ckpt_free(c);
    tu_rmtree(dir);
    free(zroot);
    free(proot);
    free(dir);
}

int main(void) {
    static const tu_test tests[] = {
        {"round trip, raw, zstd and planes chunks, checks on and off", test_round_trip},
        {"chunks on every worker: the same bytes at 1, 2 and 5 threads; a failed fill fails the write cleanly",
         test_threads},
        {"manifest edits refused", test_manifest_edits},
        {"flipped stored byte named and refused", test_flipped_stored_byte},
        {"truncated compressed file refused", test_truncated},
        {"bomb chunk refused from its frame header", test_bomb_chunk},
        {"read lists on 1, 2 and 3 threads: the same bytes; an unasked flipped byte still refused", test_read_list_threads},
        {"read plans of 3 readers: each shared chunk read by one, its pieces exchanged; the same bytes",
         test_read_share},
        {"data read in place through a view: the same bytes as through the fill", test_view_in_place},
        {"a header over several chunks: uncached reads in any order equal the plain file; a lazy open checks it",
         test_header_over_chunks},
        {NULL, NULL},
    };
    return tu_main("compress", tests);
}
