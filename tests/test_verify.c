/*
 * test_verify.c — `verify` catches every kind of damage and says where it is.
 *
 * Each case makes a fresh small synthetic checkpoint (dsckpt_synth, ~20000
 * parameters), damages it in one way, runs dsckpt_verify and checks the verdict and
 * that a problem line names the damaged file and, where it applies, the chunk or the
 * tensor: bit flips in rank-file data, rank-file headers and the manifest;
 * truncation and extension; missing, stray, leftover-temporary, swapped and foreign
 * rank files; manifest edits (overlap, gap, out of range, digests); unreadable
 * paths; chunk-exact localisation with a 4 KiB chunk size written through the
 * internal writer; and lone safetensors files.
 *
 * Known library gaps are listed in known_gaps (run with DSCKPT_TEST_KNOWN_GAPS=1 to
 * turn them into failing assertions); by default they are printed, not counted.
 */
#include "fsutil.h"
#include "layout.h"
#include "manifest.h"
#include "native_write.h"
#include "stream.h"
#include "synth.h"
#include "tutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAG "global_step100"
#define PARAMS 20000

/* ---- helpers ---- */

static char *synth_root(const char *dir, const char *name, int ws, int stage, uint64_t seed, int64_t step) {
    char *root = tu_path(dir, name);
    CU_ASSERT_FATAL(root != NULL);
    dsckpt_synth_opts o;
    dsckpt_synth_opts_init(&o);
    o.params = PARAMS;
    o.world_size = ws;
    o.zero_stage = stage;
    o.seed = seed;
    o.step = step;
    o.threads = 2;
    TU_ASSERT_OK(dsckpt_synth(root, &o));
    return root;
}

/* malloc'd root/TAG/name */
static char *tag_file(const char *root, const char *name) {
    char *td = tu_path(root, TAG);
    CU_ASSERT_FATAL(td != NULL);
    char *p = tu_path(td, name);
    CU_ASSERT_FATAL(p != NULL);
    free(td);
    return p;
}

static char *rank_name(int r) {
    char buf[64];
    snprintf(buf, sizeof buf, DS_RANK_FILE_FMT, r);
    return strdup(buf);
}

static char *rank_path(const char *root, int r) {
    char *n = rank_name(r);
    char *p = tag_file(root, n);
    free(n);
    return p;
}

static uint64_t file_size(const char *path) {
    struct stat sb;
    CU_ASSERT_FATAL(stat(path, &sb) == 0);
    return (uint64_t)sb.st_size;
}

/* Offset of the data buffer of a safetensors file (8 + N). */
static uint64_t data_start(const char *path) {
    size_t len = 0;
    uint8_t *b = tu_read(path, &len);
    CU_ASSERT_FATAL(b != NULL && len >= 8);
    uint64_t n = ds_get_le64(b);
    free(b);
    return 8 + n;
}

static int copy_file(const char *src, const char *dst) {
    size_t len = 0;
    uint8_t *b = tu_read(src, &len);
    if (!b) return -1;
    int rc = tu_write(dst, b, len);
    free(b);
    return rc;
}

static dsckpt_verify_report *run_verify(const char *path, const char *tag) {
    dsckpt_verify_opts o;
    dsckpt_verify_opts_init(&o);
    o.threads = 2;
    dsckpt_verify_report *r = NULL;
    TU_ASSERT_OK(dsckpt_verify(path, tag, &o, &r));
    CU_ASSERT_FATAL(r != NULL);
    return r;
}

static void dump(const char *label, const dsckpt_verify_report *r) {
    fprintf(stderr, "\n  [%s] result %d, %zu problem(s):\n", label, (int)dsckpt_verify_report_result(r),
            dsckpt_verify_report_count(r));
    for (size_t i = 0; i < dsckpt_verify_report_count(r); i++)
        fprintf(stderr, "    - %s\n", dsckpt_verify_report_problem(r, i));
}

/* Index of the first problem containing every non-NULL needle, or -1. */
static long find_problem(const dsckpt_verify_report *r, const char *a, const char *b, const char *c) {
    for (size_t i = 0; i < dsckpt_verify_report_count(r); i++) {
        const char *p = dsckpt_verify_report_problem(r, i);
        if (p && (!a || strstr(p, a)) && (!b || strstr(p, b)) && (!c || strstr(p, c))) return (long)i;
    }
    return -1;
}

/* Verifies `path` and checks the verdict and (if a != NULL) that one problem line
 * contains a, b and c. Returns true if everything matched. */
static bool expect_v(const char *label, const char *path, const char *tag, dsckpt_verify_result want,
                     const char *a, const char *b, const char *c) {
    dsckpt_verify_report *r = run_verify(path, tag);
    bool ok = dsckpt_verify_report_result(r) == want;
    CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), want);
    if (want == DSCKPT_VERIFY_OK) {
        ok = ok && dsckpt_verify_report_count(r) == 0;
        CU_ASSERT_EQUAL(dsckpt_verify_report_count(r), 0);
    } else {
        ok = ok && dsckpt_verify_report_count(r) > 0;
        CU_ASSERT(dsckpt_verify_report_count(r) > 0);
    }
    if (a || b || c) {
        bool found = find_problem(r, a, b, c) >= 0;
        CU_ASSERT(found);
        if (!found) fprintf(stderr, "\n  [%s] no problem mentions '%s' + '%s' + '%s'", label, a ? a : "",
                            b ? b : "", c ? c : "");
        ok = ok && found;
    }
    if (!ok) dump(label, r);
    dsckpt_verify_report_free(r);
    return ok;
}

#define EXPECT(label, path, want, a, b, c) expect_v(label, path, NULL, want, a, b, c)

/* ---- manifest editing through cJSON ---- */

typedef void (*edit_fn)(cJSON *root, void *user);

static void edit_manifest(const char *root_dir, edit_fn fn, void *user) {
    char *mp = tag_file(root_dir, DS_MANIFEST_NAME);
    size_t len = 0;
    char *text = (char *)tu_read(mp, &len);
    CU_ASSERT_FATAL(text != NULL);
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    CU_ASSERT_FATAL(root != NULL);
    fn(root, user);
    /* Re-seal, as a deliberate (or malicious) editor would: the structural checks
     * must catch what the self-digest cannot. */
    cJSON_DeleteItemFromObjectCaseSensitive(root, "manifest_sha256");
    char *body = cJSON_PrintUnformatted(root), *out = NULL;
    cJSON_Delete(root);
    CU_ASSERT_FATAL(body != NULL);
    TU_ASSERT_OK(ds_manifest_seal(body, &out));
    free(body);
    CU_ASSERT_FATAL(tu_write(mp, out, strlen(out)) == 0);
    free(out);
    free(mp);
}

static cJSON *frag_array(cJSON *root, const char *state) {
    cJSON *fr = cJSON_GetObjectItemCaseSensitive(root, "fragments");
    cJSON *a = cJSON_GetObjectItemCaseSensitive(fr, state);
    CU_ASSERT_FATAL(cJSON_IsArray(a));
    return a;
}

static double fv(cJSON *frag, int j) { return cJSON_GetArrayItem(frag, j)->valuedouble; }
static void fset(cJSON *frag, int j, double v) { cJSON_SetNumberValue(cJSON_GetArrayItem(frag, j), v); }

/* A tensor whose fp32 state is split in two fragments: *k1 (start 0) and *k2 (the
 * continuation). */
static void find_split(cJSON *arr, cJSON **k1, cJSON **k2) {
    *k1 = *k2 = NULL;
    for (cJSON *a = arr->child; a; a = a->next)
        for (cJSON *b = arr->child; b; b = b->next)
            if (a != b && fv(a, 0) == fv(b, 0) && fv(a, 1) == 0 && fv(b, 1) == fv(a, 2)) {
                *k1 = a;
                *k2 = b;
                return;
            }
    CU_FAIL_FATAL("no tensor with two fp32 fragments");
}

static const char *tensor_name(cJSON *root, int t) {
    cJSON *jt = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "tensors"), t);
    return cJSON_GetObjectItemCaseSensitive(jt, "name")->valuestring;
}

/* ---- known gaps ---- */


/* A known library gap: a failing assertion in strict mode, a note otherwise. */
/* Once a list of known gaps; all of them are closed now, so each is a plain
 * assertion that prints what failed. */
static void known_gap(bool holds, const char *what) {
    if (holds) return;
    fprintf(stderr, "\n  FAILED: %s", what);
    CU_FAIL("a closed gap is open again");
}

/* Writes the manifest text `z` with one bit flipped at `off` and a fresh
 * self-digest, as an editor who knows the format would: the checks behind the
 * digest must still catch the damage. */
static void write_resealed_flip(const char *mp, const char *z, uint64_t off, int bit) {
    const char *tail = strstr(z, ",\"manifest_sha256\":\"");
    CU_ASSERT_FATAL(tail != NULL && (uint64_t)(tail - z) > off);
    size_t n = (size_t)(tail - z);
    char *body = malloc(n + 2), *sealed = NULL;
    memcpy(body, z, n);
    body[n] = '}';
    body[n + 1] = '\0';
    body[off] ^= (char)(1 << bit);
    TU_ASSERT_OK(ds_manifest_seal(body, &sealed));
    CU_ASSERT_FATAL(tu_write(mp, sealed, strlen(sealed)) == 0);
    free(body);
    free(sealed);
}

/* ---- intact ---- */

static void test_intact(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    static const struct { int stage, ws; } cfg[] = {{0, 1}, {0, 3}, {1, 2}, {1, 4}, {2, 1}, {2, 3},
                                                    {3, 2}, {3, 5}};
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        char name[32], label[64];
        snprintf(name, sizeof name, "s%d_w%d", cfg[i].stage, cfg[i].ws);
        snprintf(label, sizeof label, "intact stage %d world %d", cfg[i].stage, cfg[i].ws);
        char *root = synth_root(dir, name, cfg[i].ws, cfg[i].stage, 7, 100);
        EXPECT(label, root, DSCKPT_VERIFY_OK, NULL, NULL, NULL);
        /* The tag directory itself and the root with an explicit tag verify too. */
        char *td = tu_path(root, TAG);
        EXPECT(label, td, DSCKPT_VERIFY_OK, NULL, NULL, NULL);
        CU_ASSERT(expect_v(label, root, TAG, DSCKPT_VERIFY_OK, NULL, NULL, NULL));
        dsckpt_verify_report *r = run_verify(root, NULL);
        int nfiles = cfg[i].stage == 0 ? 1 : cfg[i].ws;
        CU_ASSERT_EQUAL(dsckpt_verify_report_files(r), (size_t)nfiles);
        uint64_t total = 0;
        for (int k = 0; k < nfiles; k++) {
            char *p = rank_path(root, k);
            total += file_size(p);
            free(p);
        }
        CU_ASSERT_EQUAL(dsckpt_verify_report_bytes(r), total);
        dsckpt_verify_report_free(r);
        free(td);
        free(root);
    }
    tu_rmtree(dir);
    free(dir);
}

/* ---- rank-file bit flips ---- */

static void test_flip_rank_data(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    static const struct { int stage, ws, rank; } cfg[] = {{0, 2, 0}, {1, 2, 1}, {2, 3, 2}, {3, 4, 0}, {3, 4, 3}};
    static const int bits[] = {0, 3, 7};
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "s%d_w%d_r%d", cfg[i].stage, cfg[i].ws, cfg[i].rank);
        char *root = synth_root(dir, name, cfg[i].ws, cfg[i].stage, 3, 100);
        char *rp = rank_path(root, cfg[i].rank);
        char *rn = rank_name(cfg[i].rank);
        uint64_t ds = data_start(rp), size = file_size(rp);
        CU_ASSERT_FATAL(size > ds + 16);
        const uint64_t offs[] = {ds, ds + (size - ds) / 2, size - 1};
        for (size_t o = 0; o < 3; o++)
            for (size_t b = 0; b < 3; b++) {
                char label[96];
                snprintf(label, sizeof label, "stage %d ws %d: flip %s byte %llu bit %d", cfg[i].stage, cfg[i].ws,
                         rn, (unsigned long long)offs[o], bits[b]);
                CU_ASSERT_FATAL(tu_flip_bit(rp, offs[o], bits[b]) == 0);
                dsckpt_verify_report *r = run_verify(root, NULL);
                bool ok = dsckpt_verify_report_result(r) == DSCKPT_VERIFY_CORRUPT &&
                          dsckpt_verify_report_count(r) == 1 && find_problem(r, rn, "chunk 0", "SHA-256 mismatch") >= 0;
                CU_ASSERT(ok);
                if (!ok) dump(label, r);
                dsckpt_verify_report_free(r);
                /* Flipping back restores an intact checkpoint. */
                CU_ASSERT_FATAL(tu_flip_bit(rp, offs[o], bits[b]) == 0);
            }
        EXPECT("flipped back", root, DSCKPT_VERIFY_OK, NULL, NULL, NULL);
        free(rn);
        free(rp);
        free(root);
    }
    tu_rmtree(dir);
    free(dir);
}

static void test_flip_rank_header(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *root = synth_root(dir, "ck", 2, 2, 3, 100);
    for (int rank = 0; rank < 2; rank++) {
        char *rp = rank_path(root, rank);
        char *rn = rank_name(rank);
        uint64_t ds = data_start(rp);
        size_t len = 0;
        char *text = (char *)tu_read(rp, &len);
        CU_ASSERT_FATAL(text != NULL);
        /* Where the JSON text ends (the rest up to ds is padding). */
        uint64_t jend = ds;
        while (jend > 8 && text[jend - 1] == ' ') jend--;
        const char *rk = strstr(text + 8, "\"dsckpt.rank\":\"");
        const char *ws = strstr(text + 8, "\"dsckpt.world_size\":\"");
        const char *tg = strstr(text + 8, "\"dsckpt.tag\":\"");
        const char *dt = strstr(text + 8, "\"dtype\":\"F32\"");
        CU_ASSERT_FATAL(rk && ws && tg && dt);
        const struct {
            uint64_t off;
            int bit;
            const char *why; /* a structural message besides the hash, or NULL */
        } cases[] = {
            {0, 0, NULL},                            /* N off by one */
            {0, 4, NULL},                            /* N off by 16 */
            {7, 7, "exceeds the limit"},             /* N enormous */
            {2, 1, "runs past the end"},             /* N past the end of the file */
            {8, 0, NULL},                            /* '{' -> 'z' */
            {8, 5, NULL},                            /* '{' -> '[' */
            {(uint64_t)(rk - text) + 15, 0, "metadata says rank"},
            {(uint64_t)(ws - text) + 21, 1, "metadata says world size"},
            {(uint64_t)(tg - text) + 14, 5, "metadata says tag"},
            {(uint64_t)(dt - text) + 10, 1, NULL},   /* dtype F32 -> F12 */
            {jend - 1, 0, NULL},                     /* the closing brace */
            {ds - 1, 0, NULL},                       /* last padding byte (or the brace) */
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            char label[128];
            snprintf(label, sizeof label, "header flip %s byte %llu bit %d", rn, (unsigned long long)cases[i].off,
                     cases[i].bit);
            CU_ASSERT_FATAL(tu_flip_bit(rp, cases[i].off, cases[i].bit) == 0);
            dsckpt_verify_report *r = run_verify(root, NULL);
            bool ok = dsckpt_verify_report_result(r) == DSCKPT_VERIFY_CORRUPT;
            /* The chunk digests always locate the damage... */
            ok = ok && find_problem(r, rn, "chunk 0", "SHA-256 mismatch") >= 0;
            /* ...and the structural check names the file and what is wrong. */
            if (cases[i].why) ok = ok && find_problem(r, rn, cases[i].why, NULL) >= 0;
            /* Only this file is reported. */
            char *other = rank_name(1 - rank);
            ok = ok && find_problem(r, other, NULL, NULL) < 0;
            free(other);
            CU_ASSERT(ok);
            if (!ok) dump(label, r);
            dsckpt_verify_report_free(r);
            CU_ASSERT_FATAL(tu_flip_bit(rp, cases[i].off, cases[i].bit) == 0);
        }
        EXPECT("header flipped back", root, DSCKPT_VERIFY_OK, NULL, NULL, NULL);
        free(text);
        free(rn);
        free(rp);
    }
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* ---- manifest bit flips ---- */

/* Byte positions whose every bit matters: JSON structure, header fields checked
 * against the rank files, file sizes, names, ranks and digests, tensor shapes
 * and dtypes. (The value picked is the character right after the anchor.) Each
 * of their 8 bits flipped makes the checkpoint at root corrupt. */
static void flip_manifest_targets(const char *root, const char *mp, const char *z) {
    static const struct { const char *anchor; int nth; } targets[] = {
        {"", 0},                        /* the opening brace */
        {"\"format\":\"", 0},           /* 'd' of dsckpt */
        {"\"tag\":\"", 0},              /* 'g' of global_step100 */
        {"\"world_size\":", 0},         /* 2 */
        {"\"train_dtype\":\"", 0},      /* 'b' of bf16 */
        {"\"tensors\":", 0},            /* '[' */
        {"\"shape\":[", 0},             /* first digit of wte's shape */
        {"\"dtype\":\"BF", 0},          /* '1' of BF16 (the parser also takes "bf16") */
        {"\"trainable\":", 0},          /* 't' of true */
        {"\"fragments\":", 0},          /* '{' */
        {"\"files\":[{\"name\":\"", 0}, /* 'r' of rank_00000 */
        {"\"rank\":", 1},               /* 1 */
        {"\"size\":", 0},               /* first digit of rank 0's size */
        {"\"size\":", 1},               /* first digit of rank 1's size */
        {"\"sha256\":\"", 0},           /* file digest, first hex digit */
        {"\"chunks\":[\"", 0},          /* chunk digest of rank 0 */
        {"\"chunks\":[\"", 1},          /* chunk digest of rank 1 */
    };
    size_t checked = 0;
    for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
        const char *p = z;
        if (targets[t].anchor[0]) {
            for (int k = 0; k <= targets[t].nth; k++) {
                p = strstr(k ? p + 1 : p, targets[t].anchor);
                CU_ASSERT_FATAL(p != NULL);
            }
            p += strlen(targets[t].anchor);
        }
        uint64_t off = (uint64_t)(p - z);
        for (int bit = 0; bit < 8; bit++) {
            char label[160];
            snprintf(label, sizeof label, "manifest flip byte %llu ('%c' after '%s') bit %d", (unsigned long long)off,
                     z[off], targets[t].anchor, bit);
            CU_ASSERT_FATAL(tu_flip_bit(mp, off, bit) == 0);
            /* A manifest that no longer parses, or that no longer matches the
             * files, is corrupt (not unreadable: it was read). */
            CU_ASSERT(EXPECT(label, root, DSCKPT_VERIFY_CORRUPT, NULL, NULL, NULL));
            CU_ASSERT_FATAL(tu_flip_bit(mp, off, bit) == 0);
            checked++;
        }
    }
    CU_ASSERT_EQUAL(checked, 8 * (sizeof targets / sizeof targets[0]));
}

/* Specific messages for flips re-sealed with a valid digest; the manifest (z,
 * len bytes) is written back at the end. */
static void flip_manifest_resealed(const char *root, const char *mp, const char *z, size_t len) {
    write_resealed_flip(mp, z, 0, 0); /* '{' -> 'z' */
    EXPECT("manifest not JSON", root, DSCKPT_VERIFY_CORRUPT, DS_MANIFEST_NAME, "not valid JSON", NULL);
    uint64_t off = (uint64_t)(strstr(z, "\"chunks\":[\"") - z) + strlen("\"chunks\":[\"");
    /* Flip a hex digit into another hex digit: then the digest parses and the
     * chunk hash no longer matches. */
    int bit = 0;
    char c = z[off];
    if (c == 'a' || c == 'f') bit = 2; /* a -> e, f -> b */
    write_resealed_flip(mp, z, off, bit);
    EXPECT("chunk digest changed", root, DSCKPT_VERIFY_CORRUPT, "rank_00000.safetensors", "chunk 0",
           "SHA-256 mismatch");
    EXPECT("chunk digest changed", root, DSCKPT_VERIFY_CORRUPT, "rank_00000.safetensors", "file digest", NULL);
    off = (uint64_t)(strstr(z, "\"size\":") - z) + 7; /* first digit of the size: '1' -> '3' */
    write_resealed_flip(mp, z, off, 1);
    EXPECT("size changed", root, DSCKPT_VERIFY_CORRUPT, "rank_00000.safetensors", "the manifest says",
           "truncated");
    const char *rk = strstr(strstr(z, "\"rank\":") + 1, "\"rank\":"); /* rank 1 -> 0 */
    off = (uint64_t)(rk - z) + 7;
    write_resealed_flip(mp, z, off, 0);
    EXPECT("rank changed", root, DSCKPT_VERIFY_CORRUPT, "rank_00001.safetensors", "metadata says rank 1",
           "manifest says 0");
    off = (uint64_t)(strstr(z, "\"zero_stage\":") - z) + strlen("\"zero_stage\":");
    write_resealed_flip(mp, z, off, 0); /* 2 -> 3 */
    EXPECT("stage changed", root, DSCKPT_VERIFY_CORRUPT, "rank_00000.safetensors", "metadata says ZeRO stage 2",
           NULL);
    CU_ASSERT_FATAL(tu_write(mp, z, len) == 0);
}

/* Known gap: the manifest has no digest of its own, and verify does not compare
 * it with what the rank files say beyond tag/rank/world size, so flips in
 * values nothing else records go unnoticed. */
static void flip_manifest_gaps(const char *root, const char *mp, const char *z) {
    static const struct {
        const char *anchor;
        int commas; /* skip this many commas after the anchor */
        int delta;  /* then this many bytes */
        int bit;
        const char *what;
    } gaps[] = {
        {"\"zero_stage\":", 0, 0, 0, "zero_stage 2 -> 3 (rank files record dsckpt.zero_stage; verify does not compare it)"},
        {"\"fp32\":[[", 3, 0, 0, "an fp32 fragment's file index 0 -> 1 (the fragment points into the wrong rank file)"},
        {"\"group\":", 0, 0, 0, "a tensor's parameter group 0 -> 1"},
        {"\"aliases\":[\"", 0, 0, 0, "an alias name"},
        {"{\"name\":\"h.0.", 0, 0, 0, "a trainable tensor's name"},
        {"\"step\":", 0, 0, 0, "step 100 -> 101"},
        {"\"eval_loss\":", 0, 2, 0, "metrics.eval_loss (carried state has no digest)"},
    };
    for (size_t g = 0; g < sizeof gaps / sizeof gaps[0]; g++) {
        const char *p = strstr(z, gaps[g].anchor);
        CU_ASSERT_FATAL(p != NULL);
        p += strlen(gaps[g].anchor);
        for (int k = 0; k < gaps[g].commas; k++) p = strchr(p, ',') + 1;
        uint64_t off = (uint64_t)(p - z) + (uint64_t)gaps[g].delta;
        CU_ASSERT_FATAL(tu_flip_bit(mp, off, gaps[g].bit) == 0);
        dsckpt_verify_report *r = run_verify(root, NULL);
        char msg[256];
        snprintf(msg, sizeof msg, "verify does not notice a flipped manifest bit: %s", gaps[g].what);
        known_gap(dsckpt_verify_report_result(r) == DSCKPT_VERIFY_CORRUPT, msg);
        dsckpt_verify_report_free(r);
        CU_ASSERT_FATAL(tu_flip_bit(mp, off, gaps[g].bit) == 0);
    }
}

/* Known gap: a fragment offset moved by one element inside its buffer. */
static void flip_manifest_frag_offset(const char *root, const char *mp, const char *z, size_t len) {
    const char *p = strstr(z, "\"fp32\":[[");
    CU_ASSERT_FATAL(p != NULL);
    const char *comma = p;
    for (int k = 0; k < 4; k++) comma = strchr(comma + 1, ',');
    uint64_t off = (uint64_t)(comma - z) + 1; /* first digit of the offset */
    char *edited = strdup(z);
    CU_ASSERT_FATAL(edited != NULL);
    unsigned long long ov = strtoull(edited + off, NULL, 10);
    char num[32];
    int nd = snprintf(num, sizeof num, "%llu", ov);
    int nd2 = snprintf(num, sizeof num, "%llu", ov + 4);
    if (nd == nd2) {
        memcpy(edited + off, num, (size_t)nd2);
        CU_ASSERT_FATAL(tu_write(mp, edited, len) == 0);
        dsckpt_verify_report *r = run_verify(root, NULL);
        known_gap(dsckpt_verify_report_result(r) == DSCKPT_VERIFY_CORRUPT,
                  "verify does not notice an fp32 fragment offset moved by one element (fragments are not "
                  "checked against the rank file's tensor entries)");
        dsckpt_verify_report_free(r);
        CU_ASSERT_FATAL(tu_write(mp, z, len) == 0);
    }
    free(edited);
}

static void test_flip_manifest(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *root = synth_root(dir, "ck", 2, 2, 3, 100);
    char *mp = tag_file(root, DS_MANIFEST_NAME);
    size_t len = 0;
    char *text = (char *)tu_read(mp, &len);
    CU_ASSERT_FATAL(text != NULL && len > 100);
    char *z = malloc(len + 1);
    CU_ASSERT_FATAL(z != NULL);
    memcpy(z, text, len);
    z[len] = '\0';
    flip_manifest_targets(root, mp, z);
    /* A raw flip anywhere fails the manifest's own digest. */
    CU_ASSERT_FATAL(tu_flip_bit(mp, 40, 3) == 0);
    EXPECT("manifest flip, digest", root, DSCKPT_VERIFY_CORRUPT, DS_MANIFEST_NAME, "SHA-256 mismatch", NULL);
    CU_ASSERT_FATAL(tu_flip_bit(mp, 40, 3) == 0);
    flip_manifest_resealed(root, mp, z, len);
    EXPECT("manifest flipped back", root, DSCKPT_VERIFY_OK, NULL, NULL, NULL);
    flip_manifest_gaps(root, mp, z);
    flip_manifest_frag_offset(root, mp, z, len);
    EXPECT("manifest restored", root, DSCKPT_VERIFY_OK, NULL, NULL, NULL);
    free(z);
    free(text);
    free(mp);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* ---- truncation, extension, missing ---- */

static void test_truncate_missing(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *root = synth_root(dir, "ck", 3, 3, 5, 100);
    for (int rank = 0; rank < 3; rank++) {
        char *rp = rank_path(root, rank);
        char *rn = rank_name(rank);
        uint64_t size = file_size(rp);
        size_t blen = 0;
        uint8_t *orig = tu_read(rp, &blen);
        CU_ASSERT_FATAL(orig != NULL && blen == size);
        const uint64_t to[] = {size - 1, size / 2, 8, 0};
        for (size_t i = 0; i < sizeof to / sizeof to[0]; i++) {
            char label[96];
            snprintf(label, sizeof label, "%s truncated to %llu", rn, (unsigned long long)to[i]);
            CU_ASSERT_FATAL(tu_truncate(rp, to[i]) == 0);
            CU_ASSERT(EXPECT(label, root, DSCKPT_VERIFY_CORRUPT, rn, "truncated", NULL));
            CU_ASSERT(EXPECT(label, root, DSCKPT_VERIFY_CORRUPT, rn, "chunk 0", "missing from the file"));
            CU_ASSERT_FATAL(tu_write(rp, orig, blen) == 0);
        }
        /* One byte more. */
        uint8_t *longer = malloc(blen + 1);
        CU_ASSERT_FATAL(longer != NULL);
        memcpy(longer, orig, blen);
        longer[blen] = 0;
        CU_ASSERT_FATAL(tu_write(rp, longer, blen + 1) == 0);
        CU_ASSERT(EXPECT("extended by one byte", root, DSCKPT_VERIFY_CORRUPT, rn, "extended", NULL));
        free(longer);
        /* Missing. */
        CU_ASSERT_FATAL(unlink(rp) == 0);
        CU_ASSERT(EXPECT("missing", root, DSCKPT_VERIFY_CORRUPT, rn, "missing", NULL));
        CU_ASSERT_FATAL(tu_write(rp, orig, blen) == 0);
        EXPECT("restored", root, DSCKPT_VERIFY_OK, NULL, NULL, NULL);
        free(orig);
        free(rn);
        free(rp);
    }
    /* Every rank file missing at once: each one is named. */
    for (int rank = 0; rank < 3; rank++) {
        char *rp = rank_path(root, rank);
        CU_ASSERT_FATAL(unlink(rp) == 0);
        free(rp);
    }
    dsckpt_verify_report *r = run_verify(root, NULL);
    CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_CORRUPT);
    for (int rank = 0; rank < 3; rank++) {
        char *rn = rank_name(rank);
        CU_ASSERT(find_problem(r, rn, "missing", NULL) >= 0);
        free(rn);
    }
    dsckpt_verify_report_free(r);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* ---- stray and leftover files ---- */

static void test_stray(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *root = synth_root(dir, "ck", 2, 1, 5, 100);
    char *extra = tag_file(root, "notes.txt");
    CU_ASSERT_FATAL(tu_write(extra, "hi", 2) == 0);
    CU_ASSERT(EXPECT("stray file", root, DSCKPT_VERIFY_CORRUPT, "notes.txt", "stray", NULL));
    {
        dsckpt_verify_report *r = run_verify(root, NULL);
        CU_ASSERT(find_problem(r, "interrupted write", NULL, NULL) < 0); /* not a temporary */
        dsckpt_verify_report_free(r);
    }
    CU_ASSERT_FATAL(unlink(extra) == 0);
    /* A rank file of a world size that is not this one's. */
    char *r2 = rank_path(root, 2);
    char *r0 = rank_path(root, 0);
    CU_ASSERT_FATAL(copy_file(r0, r2) == 0);
    CU_ASSERT(EXPECT("extra rank file", root, DSCKPT_VERIFY_CORRUPT, "rank_00002.safetensors", "stray", NULL));
    CU_ASSERT_FATAL(unlink(r2) == 0);
    /* What an interrupted write leaves behind. */
    char *tmp = tag_file(root, ".rank_00001.safetensors.tmp-1-2");
    CU_ASSERT_FATAL(tu_write(tmp, "partial", 7) == 0);
    CU_ASSERT(EXPECT("leftover temporary", root, DSCKPT_VERIFY_CORRUPT, ".rank_00001.safetensors.tmp-1-2", "stray",
                     "left by an interrupted write"));
    CU_ASSERT_FATAL(unlink(tmp) == 0);
    char *mtmp = tag_file(root, ".manifest.json.tmp-77-0");
    CU_ASSERT_FATAL(tu_write(mtmp, "{", 1) == 0);
    CU_ASSERT(EXPECT("leftover manifest temporary", root, DSCKPT_VERIFY_CORRUPT, ".manifest.json.tmp-77-0",
                     "interrupted write", NULL));
    CU_ASSERT_FATAL(unlink(mtmp) == 0);
    EXPECT("clean again", root, DSCKPT_VERIFY_OK, NULL, NULL, NULL);
    free(mtmp);
    free(tmp);
    free(r0);
    free(r2);
    free(extra);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* ---- swapped and foreign rank files ---- */

static void test_swapped(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    /* Stage 2 (unequal sizes) and stage 3 (files of equal size are possible). */
    static const struct { int stage, ws; } cfg[] = {{2, 2}, {3, 2}, {1, 4}};
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "s%d_w%d", cfg[i].stage, cfg[i].ws);
        char *root = synth_root(dir, name, cfg[i].ws, cfg[i].stage, 9, 100);
        char *a = rank_path(root, 0), *b = rank_path(root, 1), *t = tag_file(root, "swap.tmp");
        CU_ASSERT_FATAL(rename(a, t) == 0 && rename(b, a) == 0 && rename(t, b) == 0);
        /* Each file's own metadata names its real rank. */
        CU_ASSERT(EXPECT("swapped", root, DSCKPT_VERIFY_CORRUPT, "rank_00000.safetensors", "metadata says rank 1",
                         "manifest says 0"));
        CU_ASSERT(EXPECT("swapped", root, DSCKPT_VERIFY_CORRUPT, "rank_00001.safetensors", "metadata says rank 0",
                         "manifest says 1"));
        /* And the digests do not match either. */
        dsckpt_verify_report *r = run_verify(root, NULL);
        CU_ASSERT(find_problem(r, "rank_00000.safetensors", "SHA-256 mismatch", NULL) >= 0 ||
                  find_problem(r, "rank_00000.safetensors", "bytes, the manifest says", NULL) >= 0);
        dsckpt_verify_report_free(r);
        free(a);
        free(b);
        free(t);
        free(root);
    }
    tu_rmtree(dir);
    free(dir);
}

static void test_foreign(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *root = synth_root(dir, "a", 2, 2, 1, 100);
    char *other = synth_root(dir, "b", 2, 2, 2, 100);   /* same shape, other values */
    char *later = synth_root(dir, "c", 2, 2, 1, 200);   /* same shape and values, other tag */
    for (int rank = 0; rank < 2; rank++) {
        char *rp = rank_path(root, rank), *op = rank_path(other, rank);
        char *rn = rank_name(rank);
        size_t blen = 0;
        uint8_t *orig = tu_read(rp, &blen);
        CU_ASSERT_FATAL(orig != NULL);
        CU_ASSERT_EQUAL(file_size(op), blen);
        CU_ASSERT_FATAL(copy_file(op, rp) == 0);
        /* Same header bytes, so only the digests tell. */
        dsckpt_verify_report *r = run_verify(root, NULL);
        bool ok = dsckpt_verify_report_result(r) == DSCKPT_VERIFY_CORRUPT &&
                  find_problem(r, rn, "chunk 0", "SHA-256 mismatch") >= 0 && dsckpt_verify_report_count(r) == 1;
        CU_ASSERT(ok);
        if (!ok) dump("other seed", r);
        dsckpt_verify_report_free(r);
        /* From a checkpoint with another tag. */
        char *lt = tu_path(later, "global_step200");
        char *lp = tu_path(lt, rn);
        CU_ASSERT_FATAL(copy_file(lp, rp) == 0);
        CU_ASSERT(EXPECT("other tag", root, DSCKPT_VERIFY_CORRUPT, rn, "metadata says tag global_step200",
                         "another checkpoint"));
        CU_ASSERT_FATAL(tu_write(rp, orig, blen) == 0);
        EXPECT("restored", root, DSCKPT_VERIFY_OK, NULL, NULL, NULL);
        free(lp);
        free(lt);
        free(orig);
        free(rn);
        free(rp);
        free(op);
    }
    /* A different world size's file of the same rank (same tag). */
    char *w3 = synth_root(dir, "w3", 3, 2, 1, 100);
    char *rp = rank_path(root, 1), *wp = rank_path(w3, 1);
    CU_ASSERT_FATAL(copy_file(wp, rp) == 0);
    CU_ASSERT(EXPECT("other world size", root, DSCKPT_VERIFY_CORRUPT, "rank_00001.safetensors",
                     "metadata says world size 3", NULL));
    free(rp);
    free(wp);
    free(w3);
    free(later);
    free(other);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* ---- manifest edits ---- */

typedef struct edit_ctx {
    const char *what;
    char tname[128];     /* the name of the tensor touched */
    double file_size;    /* size of rank file 0 */
    int ntensors;
} edit_ctx;

static void ed_overlap(cJSON *root, void *u) {
    edit_ctx *e = u;
    cJSON *k1, *k2;
    find_split(frag_array(root, "fp32"), &k1, &k2);
    snprintf(e->tname, sizeof e->tname, "%s", tensor_name(root, (int)fv(k1, 0)));
    fset(k2, 1, fv(k2, 1) - 1); /* starts one element early: [s-1, s) twice, the last one nowhere */
}
static void ed_gap(cJSON *root, void *u) {
    edit_ctx *e = u;
    cJSON *k1, *k2;
    find_split(frag_array(root, "exp_avg"), &k1, &k2);
    snprintf(e->tname, sizeof e->tname, "%s", tensor_name(root, (int)fv(k1, 0)));
    fset(k1, 2, fv(k1, 2) - 1); /* ends one element early */
}
static void ed_past_file(cJSON *root, void *u) {
    edit_ctx *e = u;
    cJSON *k1, *k2;
    find_split(frag_array(root, "fp32"), &k1, &k2);
    snprintf(e->tname, sizeof e->tname, "%s", tensor_name(root, (int)fv(k1, 0)));
    fset(k1, 3, 0);
    fset(k1, 4, e->file_size - 8); /* file 0, 8 bytes before its end, thousands of elements */
}
static void ed_past_tensor(cJSON *root, void *u) {
    edit_ctx *e = u;
    cJSON *k1, *k2;
    find_split(frag_array(root, "exp_avg_sq"), &k1, &k2);
    snprintf(e->tname, sizeof e->tname, "%s", tensor_name(root, (int)fv(k2, 0)));
    fset(k2, 2, fv(k2, 2) + 1);
}
static void ed_tensor_index(cJSON *root, void *u) {
    edit_ctx *e = u;
    fset(cJSON_GetArrayItem(frag_array(root, "fp32"), 1), 0, e->ntensors);
}
static void ed_file_index(cJSON *root, void *u) {
    (void)u;
    fset(cJSON_GetArrayItem(frag_array(root, "exp_avg"), 0), 3, 2);
}
static void ed_into_header(cJSON *root, void *u) {
    edit_ctx *e = u;
    cJSON *f = cJSON_GetArrayItem(frag_array(root, "w16"), 0);
    snprintf(e->tname, sizeof e->tname, "%s", tensor_name(root, (int)fv(f, 0)));
    fset(f, 4, 16);
}
static void ed_drop(cJSON *root, void *u) {
    edit_ctx *e = u;
    cJSON *arr = frag_array(root, "fp32");
    /* Drop the fragment of a tensor held in one piece (tensor 2, a LayerNorm weight). */
    int idx = 0;
    for (cJSON *a = arr->child; a; a = a->next, idx++)
        if (fv(a, 0) == 2) break;
    cJSON *f = cJSON_GetArrayItem(arr, idx);
    CU_ASSERT_FATAL(f != NULL);
    snprintf(e->tname, sizeof e->tname, "%s", tensor_name(root, 2));
    cJSON_DeleteItemFromArray(arr, idx);
}
static void ed_duplicate(cJSON *root, void *u) {
    edit_ctx *e = u;
    cJSON *arr = frag_array(root, "exp_avg_sq");
    cJSON *f = cJSON_GetArrayItem(arr, 3);
    snprintf(e->tname, sizeof e->tname, "%s", tensor_name(root, (int)fv(f, 0)));
    cJSON_AddItemToArray(arr, cJSON_Duplicate(f, 1));
}
static void ed_frozen_fp32(cJSON *root, void *u) {
    edit_ctx *e = u;
    cJSON *arr = frag_array(root, "fp32");
    cJSON *f = cJSON_Duplicate(cJSON_GetArrayItem(arr, 0), 1);
    fset(f, 0, 1); /* wpe.weight is frozen */
    fset(f, 1, 0);
    fset(f, 2, 1);
    snprintf(e->tname, sizeof e->tname, "%s", tensor_name(root, 1));
    cJSON_AddItemToArray(arr, f);
}
static void ed_chunk_size(cJSON *root, void *u) {
    (void)u;
    cJSON *f = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "files"), 0);
    cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(f, "chunk_size"), 4096);
}
static void ed_file_digest(cJSON *root, void *u) {
    (void)u;
    cJSON *f = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "files"), 1);
    cJSON_ReplaceItemInObjectCaseSensitive(f, "sha256", cJSON_CreateString(
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"));
}
static void ed_chunk_digest(cJSON *root, void *u) {
    (void)u;
    cJSON *f = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "files"), 1);
    cJSON *ch = cJSON_GetObjectItemCaseSensitive(f, "chunks");
    cJSON_ReplaceItemInArray(ch, 0, cJSON_CreateString(
        "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"));
}
static void ed_file_size(cJSON *root, void *u) {
    (void)u;
    cJSON *f = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "files"), 0);
    cJSON *s = cJSON_GetObjectItemCaseSensitive(f, "size");
    cJSON_SetNumberValue(s, s->valuedouble + 8);
}
static void ed_file_name(cJSON *root, void *u) {
    (void)u;
    cJSON *f = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "files"), 1);
    cJSON_ReplaceItemInObjectCaseSensitive(f, "name", cJSON_CreateString("../rank_00001.safetensors"));
}
static void ed_shape(cJSON *root, void *u) {
    edit_ctx *e = u;
    cJSON *t = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "tensors"), 2);
    snprintf(e->tname, sizeof e->tname, "%s", cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring);
    cJSON *sh = cJSON_GetObjectItemCaseSensitive(t, "shape");
    cJSON_SetNumberValue(cJSON_GetArrayItem(sh, 0), cJSON_GetArrayItem(sh, 0)->valuedouble - 1);
}
static void ed_version(cJSON *root, void *u) {
    (void)u;
    cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(root, "version"), 4);
}

/* One manifest edit and what it must produce; {T} in a needle stands for the
 * tensor the edit touched. */
typedef struct edit_case {
    const char *label;
    edit_fn fn;
    const char *a, *b;
    bool with_tensor;
} edit_case;

/* Applies k to the manifest of root and checks that verify and open refuse it
 * (dir receives a consolidate attempt). The caller restores the manifest. */
static void check_edit(const char *dir, const char *root, const edit_case *k, edit_ctx *e) {
    edit_manifest(root, k->fn, e);
    char quoted[160] = "";
    if (k->with_tensor) snprintf(quoted, sizeof quoted, "'%s'", e->tname);
    if (k->fn == ed_version) {
        /* A version this build does not read: not OK; CORRUPT today (arguably
         * UNREADABLE: nothing says the data is damaged). */
        dsckpt_verify_report *r = run_verify(root, NULL);
        CU_ASSERT(dsckpt_verify_report_result(r) != DSCKPT_VERIFY_OK);
        CU_ASSERT(find_problem(r, k->a, "upgrade", NULL) >= 0);
        dsckpt_verify_report_free(r);
    } else {
        CU_ASSERT(EXPECT(k->label, root, DSCKPT_VERIFY_CORRUPT, k->a, k->b, k->with_tensor ? quoted : NULL));
    }
    /* Opening it refuses too (structural problems are never silently read);
     * digests and sizes are checked by verify and when data is read. */
    dsckpt_ckpt *c = NULL;
    dsckpt_status st = dsckpt_ckpt_open(root, NULL, &c);
    bool data_only = k->fn == ed_file_digest || k->fn == ed_chunk_digest || k->fn == ed_file_size ||
                     k->fn == ed_into_header;
    if (!data_only) CU_ASSERT(st == DSCKPT_ECORRUPT || st == DSCKPT_EVERSION);
    if (k->fn == ed_into_header && st == DSCKPT_OK) {
        /* The rank files' headers are read when data is: consolidate refuses. */
        char *out = tu_path(dir, "hdr.safetensors");
        dsckpt_consolidate_opts co;
        dsckpt_consolidate_opts_init(&co);
        CU_ASSERT_EQUAL(dsckpt_consolidate(c, out, &co), DSCKPT_ECORRUPT);
        CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "points into the header"));
        CU_ASSERT(!tu_exists(out));
        free(out);
    }
    dsckpt_ckpt_free(c);
}

static void test_manifest_edits(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *root = synth_root(dir, "ck", 2, 2, 4, 100);
    char *mp = tag_file(root, DS_MANIFEST_NAME);
    char *r0 = rank_path(root, 0);
    size_t mlen = 0;
    uint8_t *orig = tu_read(mp, &mlen);
    CU_ASSERT_FATAL(orig != NULL);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    dsckpt_info info;
    dsckpt_ckpt_info(c, &info);
    dsckpt_ckpt_free(c);
    static const edit_case cases[] = {
        {"fragments overlap", ed_overlap, "coverage", "are in two fragments", true},
        {"fragments leave a gap", ed_gap, "coverage", "are in no fragment", true},
        {"fragment past the end of its file", ed_past_file, "lies outside", "rank_00000.safetensors", true},
        {"fragment past the end of its tensor", ed_past_tensor, "lies outside its", "elements", true},
        {"tensor index out of range", ed_tensor_index, "tensor index", "out of range", false},
        {"file index out of range", ed_file_index, "file index 2", "out of range", false},
        {"fragment inside the header", ed_into_header, "rank_00000.safetensors", "points into the header", true},
        {"fragment dropped", ed_drop, "coverage", "are in no fragment", true},
        {"fragment duplicated", ed_duplicate, "coverage", "are in two fragments", true},
        {"frozen tensor with fp32 fragments", ed_frozen_fp32, "is frozen but has fp32 fragments", NULL, true},
        {"chunk_size without matching digests", ed_chunk_size, "chunk digests listed", "rank_00000.safetensors",
         false},
        {"file digest replaced", ed_file_digest, "rank_00001.safetensors", "file digest does not match", false},
        {"chunk digest replaced", ed_chunk_digest, "rank_00001.safetensors", "chunk 0", false},
        {"file size changed", ed_file_size, "rank_00000.safetensors", "the manifest says", false},
        {"file name with ..", ed_file_name, "is not a safe name", NULL, false},
        {"tensor shape changed", ed_shape, "lies outside its", NULL, true},
        {"unknown version", ed_version, "manifest version 4", NULL, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        edit_ctx e = {.what = cases[i].label, .file_size = (double)file_size(r0), .ntensors = (int)info.tensor_count};
        check_edit(dir, root, &cases[i], &e);
        CU_ASSERT_FATAL(tu_write(mp, orig, mlen) == 0);
    }
    EXPECT("manifest restored", root, DSCKPT_VERIFY_OK, NULL, NULL, NULL);
    free(orig);
    free(r0);
    free(mp);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* ---- unreadable ---- */

static void test_unreadable(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *nothing = tu_path(dir, "does-not-exist");
    CU_ASSERT(EXPECT("missing path", nothing, DSCKPT_VERIFY_UNREADABLE, "does-not-exist", "no such file", NULL));
    char *root = synth_root(dir, "ck", 2, 2, 4, 100);
    char *latest = tu_path(root, "latest");
    CU_ASSERT_FATAL(tu_write(latest, "global_step999\n", 15) == 0);
    CU_ASSERT(EXPECT("latest names a missing tag", root, DSCKPT_VERIFY_UNREADABLE, "global_step999",
                     "does not exist", NULL));
    CU_ASSERT(expect_v("explicit missing tag", root, "global_step7", DSCKPT_VERIFY_UNREADABLE, "global_step7", NULL,
                       NULL));
    /* An explicit tag still works while `latest` is wrong. */
    CU_ASSERT(expect_v("explicit tag", root, TAG, DSCKPT_VERIFY_OK, NULL, NULL, NULL));
    CU_ASSERT_FATAL(unlink(latest) == 0);
    CU_ASSERT(EXPECT("no latest", root, DSCKPT_VERIFY_UNREADABLE, "latest", NULL, NULL));
    /* A tag directory without its manifest: nothing to check against. */
    CU_ASSERT_FATAL(tu_write(latest, TAG, strlen(TAG)) == 0);
    char *mp = tag_file(root, DS_MANIFEST_NAME);
    CU_ASSERT_FATAL(unlink(mp) == 0);
    CU_ASSERT(EXPECT("no manifest", root, DSCKPT_VERIFY_UNREADABLE, "no manifest", "incomplete", NULL));
    /* An empty directory. */
    char *empty = tu_path(dir, "empty");
    CU_ASSERT_FATAL(mkdir(empty, 0755) == 0);
    CU_ASSERT(EXPECT("empty dir", empty, DSCKPT_VERIFY_UNREADABLE, NULL, NULL, NULL));
    free(empty);
    free(mp);
    free(latest);
    free(root);
    free(nothing);
    tu_rmtree(dir);
    free(dir);
}

/* ---- chunk-exact localisation with a small chunk size ---- */

typedef struct fill_ctx {
    const ds_tensor *ts;
} fill_ctx;

static dsckpt_status pattern_fill(void *u, ds_state s, uint32_t t, uint64_t start, uint64_t numel, void *dst,
                                  int worker) {
    (void)worker;
    fill_ctx *f = u;
    size_t es = s == DS_ST_W16 ? dsckpt_dtype_size(f->ts[t].dtype) : 4;
    uint8_t *p = dst;
    for (uint64_t i = 0; i < numel * es; i++) p[i] = (uint8_t)(t * 31 + s * 7 + (start * es + i) * 13 + 1);
    return DSCKPT_OK;
}

/* The chunk size of test_multichunk's checkpoint. */
#define MC_CH ((uint64_t)4096)

/* A 2-rank checkpoint in td written through the internal writer with 4 KiB
 * chunks; its manifest records the chunk size. */
static void multichunk_write(const char *td) {
    ds_tensor *ts = NULL;
    size_t nt = 0;
    TU_ASSERT_OK(ds_synth_tensors(PARAMS, DSCKPT_BF16, &ts, &nt));
    ds_native_spec spec = {.tensors = ts, .ntensors = nt, .ngroups = 2, .stage = 2, .world_size = 2,
                           .tag = "t4k", .step = 1, .train_dtype = "bf16", .chunk_size = MC_CH};
    ds_native_out *no = NULL;
    TU_ASSERT_OK(ds_native_prepare(&spec, td, &no));
    fill_ctx fc = {ts};
    TU_ASSERT_OK(ds_native_write_all(no, pattern_fill, &fc, 2, NULL));
    ds_native_out_free(no);
    ds_synth_tensors_free(ts, nt);
}

/* One bit flipped at a time in rank file rp (name rn, data from byte ds): verify
 * names exactly the chunk that holds it. */
static void multichunk_single_flips(const char *td, const char *rn, const char *rp, uint64_t size, uint64_t ds) {
    const uint64_t CH = MC_CH, nchunks = (size + CH - 1) / CH;
    const uint64_t offs[] = {ds + 1, CH, CH - 1, 5 * CH + 123, 5 * CH + CH - 1, (nchunks - 1) * CH, size - 1,
                             (nchunks / 2) * CH + 17};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        uint64_t off = offs[i];
        char want[64], label[96];
        snprintf(want, sizeof want, ": chunk %llu (bytes %llu..", (unsigned long long)(off / CH),
                 (unsigned long long)(off / CH * CH));
        snprintf(label, sizeof label, "%s byte %llu", rn, (unsigned long long)off);
        CU_ASSERT_FATAL(tu_flip_bit(rp, off, (int)(i % 8)) == 0);
        dsckpt_verify_report *r = run_verify(td, NULL);
        /* Data-region flips give exactly one problem: that chunk. (A flip
         * in the header also breaks the header's structure.) */
        bool in_data = off >= ds;
        long k = find_problem(r, rn, want, "SHA-256 mismatch");
        bool ok = dsckpt_verify_report_result(r) == DSCKPT_VERIFY_CORRUPT && k >= 0;
        size_t nmis = 0;
        for (size_t j = 0; j < dsckpt_verify_report_count(r); j++)
            nmis += strstr(dsckpt_verify_report_problem(r, j), "SHA-256 mismatch") != NULL;
        ok = ok && nmis == 1;
        if (in_data) ok = ok && dsckpt_verify_report_count(r) == 1;
        CU_ASSERT(ok);
        if (!ok) dump(label, r);
        dsckpt_verify_report_free(r);
        CU_ASSERT_FATAL(tu_flip_bit(rp, off, (int)(i % 8)) == 0);
    }
}

/* Two damaged chunks of rank file rp: both named, nothing else. Then the file
 * truncated in the middle: the chunks past the end are named as missing. */
static void multichunk_two_and_cut(const char *td, const char *rn, const char *rp, uint64_t nchunks) {
    const uint64_t CH = MC_CH;
    uint64_t a = 2 * CH + 5, b = (nchunks - 2) * CH + 9;
    CU_ASSERT_FATAL(tu_flip_bit(rp, a, 1) == 0 && tu_flip_bit(rp, b, 6) == 0);
    dsckpt_verify_report *r = run_verify(td, NULL);
    char wa[48], wb[48];
    snprintf(wa, sizeof wa, ": chunk %llu ", (unsigned long long)(a / CH));
    snprintf(wb, sizeof wb, ": chunk %llu ", (unsigned long long)(b / CH));
    bool ok = dsckpt_verify_report_count(r) == 2 && find_problem(r, rn, wa, NULL) >= 0 &&
              find_problem(r, rn, wb, NULL) >= 0;
    CU_ASSERT(ok);
    if (!ok) dump("two chunks", r);
    dsckpt_verify_report_free(r);
    CU_ASSERT_FATAL(tu_flip_bit(rp, a, 1) == 0 && tu_flip_bit(rp, b, 6) == 0);
    size_t blen = 0;
    uint8_t *orig = tu_read(rp, &blen);
    CU_ASSERT_FATAL(orig != NULL);
    uint64_t cut = 3 * CH + 100;
    CU_ASSERT_FATAL(tu_truncate(rp, cut) == 0);
    r = run_verify(td, NULL);
    char w3[48], wl[48];
    snprintf(w3, sizeof w3, ": chunk 3 (bytes %llu..", (unsigned long long)(3 * CH));
    snprintf(wl, sizeof wl, ": chunk %llu ", (unsigned long long)(nchunks - 1));
    ok = dsckpt_verify_report_result(r) == DSCKPT_VERIFY_CORRUPT && find_problem(r, rn, "truncated", NULL) >= 0 &&
         find_problem(r, rn, w3, "missing from the file") >= 0 &&
         find_problem(r, rn, wl, "missing from the file") >= 0 &&
         find_problem(r, rn, ": chunk 2 ", NULL) < 0; /* chunks 0-2 are whole and intact */
    CU_ASSERT(ok);
    if (!ok) dump("truncated 4k", r);
    dsckpt_verify_report_free(r);
    CU_ASSERT_FATAL(tu_write(rp, orig, blen) == 0);
    free(orig);
}

static void test_multichunk(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *td = tu_path(dir, "t4k");
    CU_ASSERT_FATAL(mkdir(td, 0755) == 0);
    multichunk_write(td);
    /* The manifest records the chunk size and one digest per 4 KiB. */
    char *mp = tu_path(td, DS_MANIFEST_NAME);
    size_t mlen = 0;
    char *mt = (char *)tu_read(mp, &mlen);
    CU_ASSERT_FATAL(mt != NULL);
    CU_ASSERT(strstr(mt, "\"chunk_size\":4096") != NULL);
    free(mt);
    EXPECT("4k chunks intact", td, DSCKPT_VERIFY_OK, NULL, NULL, NULL);
    for (int rank = 0; rank < 2; rank++) {
        char *rn = rank_name(rank);
        char *rp = tu_path(td, rn);
        uint64_t size = file_size(rp), ds = data_start(rp);
        uint64_t nchunks = (size + MC_CH - 1) / MC_CH;
        CU_ASSERT_FATAL(nchunks >= 10);
        multichunk_single_flips(td, rn, rp, size, ds);
        multichunk_two_and_cut(td, rn, rp, nchunks);
        free(rp);
        free(rn);
    }
    EXPECT("4k restored", td, DSCKPT_VERIFY_OK, NULL, NULL, NULL);
    free(mp);
    free(td);
    tu_rmtree(dir);
    free(dir);
}

/* ---- a lone safetensors file ---- */

static void test_safetensors_file(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *root = synth_root(dir, "ck", 2, 3, 4, 100);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    char *out = tu_path(dir, "model.safetensors");
    dsckpt_consolidate_opts co;
    dsckpt_consolidate_opts_init(&co);
    co.threads = 2;
    TU_ASSERT_OK(dsckpt_consolidate(c, out, &co));
    dsckpt_ckpt_free(c);
    CU_ASSERT(EXPECT("consolidated file", out, DSCKPT_VERIFY_OK, NULL, NULL, NULL));
    dsckpt_verify_report *r = run_verify(out, NULL);
    CU_ASSERT_EQUAL(dsckpt_verify_report_files(r), 1);
    CU_ASSERT_EQUAL(dsckpt_verify_report_bytes(r), file_size(out));
    dsckpt_verify_report_free(r);
    size_t blen = 0;
    uint8_t *orig = tu_read(out, &blen);
    CU_ASSERT_FATAL(orig != NULL);
    char *cp = tu_path(dir, "copy.safetensors");
    const uint64_t to[] = {blen - 1, blen / 2, 9, 7, 0};
    for (size_t i = 0; i < sizeof to / sizeof to[0]; i++) {
        char label[64];
        snprintf(label, sizeof label, "safetensors truncated to %llu", (unsigned long long)to[i]);
        CU_ASSERT_FATAL(tu_write(cp, orig, (size_t)to[i]) == 0);
        CU_ASSERT(EXPECT(label, cp, DSCKPT_VERIFY_CORRUPT, "copy.safetensors", NULL, NULL));
    }
    /* Damaged header. */
    CU_ASSERT_FATAL(tu_write(cp, orig, blen) == 0);
    CU_ASSERT_FATAL(tu_flip_bit(cp, 8, 0) == 0);
    CU_ASSERT(EXPECT("safetensors header flip", cp, DSCKPT_VERIFY_CORRUPT, "copy.safetensors", NULL, NULL));
    /* One byte too many. */
    uint8_t *longer = malloc(blen + 1);
    CU_ASSERT_FATAL(longer != NULL);
    memcpy(longer, orig, blen);
    longer[blen] = 0;
    CU_ASSERT_FATAL(tu_write(cp, longer, blen + 1) == 0);
    CU_ASSERT(EXPECT("safetensors extended", cp, DSCKPT_VERIFY_CORRUPT, "copy.safetensors", "trailing", NULL));
    free(longer);
    free(cp);
    free(orig);
    free(out);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* Chunks a save wrote direct are not in the page cache: verify reads them direct
 * (fsutil.h, ds_page_cached), with the same verdicts: intact, and a byte changed
 * inside a chunk (written back direct, so the chunk stays out of the cache) named
 * as that chunk's mismatch. On a file system that refuses O_DIRECT the test says so
 * and checks the verdicts alone. */
static void test_direct_reads(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    setenv("DSCKPT_DIRECT_IO", "1", 1);
    char *root = tu_path(dir, "ck");
    dsckpt_synth_opts o;
    dsckpt_synth_opts_init(&o);
    o.params = 5000000; /* about 35 MB a rank: three 16 MiB chunks */
    o.world_size = 2;
    o.zero_stage = 2;
    o.seed = 5;
    o.step = 100;
    o.threads = 2;
    TU_ASSERT_OK(dsckpt_synth(root, &o));
    char *rp = rank_path(root, 0);
    int fd = open(rp, O_RDWR);
    CU_ASSERT_FATAL(fd >= 0);
    int dfd = ds_direct_fd(fd);
    bool on = dfd >= 0;
    if (!on) fprintf(stderr, "\n  NOTE: this file system refuses O_DIRECT; direct reads are not tested\n");
    uint64_t r0 = ds_direct_read_bytes();
    EXPECT("written direct", root, DSCKPT_VERIFY_OK, NULL, NULL, NULL);
    /* Chunk 0 holds the header, which verify reads first: cached, so mapped. */
    if (on) CU_ASSERT(ds_direct_read_bytes() - r0 >= (16u << 20));
    /* One byte in the middle of chunk 1, its page written back direct. */
    const uint64_t page = (20u << 20) + 8192;
    CU_ASSERT_FATAL(file_size(rp) > page + 4096);
    uint8_t *buf = NULL;
    TU_ASSERT_OK(ds_malloc(4096, &buf));
    CU_ASSERT_FATAL(pread(fd, buf, 4096, (off_t)page) == 4096);
    buf[100] ^= 0x10;
    TU_ASSERT_OK(ds_pwrite_direct(fd, dfd, buf, 4096, page, rp));
    r0 = ds_direct_read_bytes();
    EXPECT("a byte of chunk 1 changed", root, DSCKPT_VERIFY_CORRUPT, "rank_00000", "chunk 1", "SHA-256 mismatch");
    if (on) CU_ASSERT(ds_direct_read_bytes() - r0 >= (16u << 20));
    buf[100] ^= 0x10;
    TU_ASSERT_OK(ds_pwrite_direct(fd, dfd, buf, 4096, page, rp));
    EXPECT("changed back", root, DSCKPT_VERIFY_OK, NULL, NULL, NULL);
    if (dfd >= 0) close(dfd);
    close(fd);
    unsetenv("DSCKPT_DIRECT_IO");
    free(buf);
    free(rp);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

int main(void) {
    static const tu_test tests[] = {
        {"intact checkpoints, stages 0-3", test_intact},
        {"bit flips in rank-file data", test_flip_rank_data},
        {"bit flips in rank-file headers", test_flip_rank_header},
        {"bit flips in the manifest", test_flip_manifest},
        {"truncated, extended and missing rank files", test_truncate_missing},
        {"stray files and leftover temporaries", test_stray},
        {"swapped rank files", test_swapped},
        {"rank files from other checkpoints", test_foreign},
        {"manifest edits: coverage, ranges, digests", test_manifest_edits},
        {"unreadable paths", test_unreadable},
        {"chunk-exact localisation (4 KiB chunks)", test_multichunk},
        {"a lone safetensors file", test_safetensors_file},
        {"chunks out of the page cache read direct, same verdicts", test_direct_reads},
        {NULL, NULL},
    };
    return tu_main("verify", tests);
}
