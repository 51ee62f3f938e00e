/*
 * test_hf.c — the Hugging Face Trainer layout: strict JSON beside checkpoints
 * (duplicate keys, numbers kept as written), CKPT resolution (output_dir,
 * checkpoint-N, -t best / latest / checkpoint-N / a tag, missing tags listing what
 * exists, hostile best_model_checkpoint), consolidate to a folder (config.json,
 * generation_config.json, tokenizer files; GPT-2 config.json for a dsckpt
 * checkpoint with a "model" object), reshard carrying the Trainer's files with
 * best_model_checkpoint rewritten, the Trainer pickles' plain-values check, and
 * (fixtures/deepspeed-0.19/hf_trainer_z3) the exported weights equal DeepSpeed's
 * zero_to_fp32 bit for bit.
 */
#include "cast.h"
#include "ckpt.h"
#include "fsutil.h"
#include "hf_export.h"
#include "hfjson.h"
#include "native_write.h"
#include "pickle.h"
#include "resolve.h"
#include "safetensors.h"
#include "tutil.h"
#include "zip.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char HF_FIX[] = "fixtures/deepspeed-0.19/hf_trainer_z3";

static void put(const char *dir, const char *name, const char *text) {
    char *p = tu_path(dir, name);
    CU_ASSERT_FATAL(tu_write(p, text, strlen(text)) == 0);
    free(p);
}

static void put_state(const char *ck, const char *best) {
    char buf[512];
    if (best) snprintf(buf, sizeof buf, "{\"best_metric\": 1.5, \"best_model_checkpoint\": \"%s\", \"global_step\": 4}\n", best);
    else snprintf(buf, sizeof buf, "{\"best_metric\": null, \"best_model_checkpoint\": null, \"global_step\": 4}\n");
    put(ck, "trainer_state.json", buf);
}

/* out/checkpoint-<step> as a DeepSpeed save root (synth, 2 ranks, stage 3). */
static char *make_ckpt(const char *outdir, int step, dsckpt_format fmt) {
    char name[64];
    snprintf(name, sizeof name, "checkpoint-%d", step);
    char *ck = tu_path(outdir, name);
    dsckpt_synth_opts o;
    dsckpt_synth_opts_init(&o);
    o.params = 20000;
    o.world_size = 2;
    o.zero_stage = 3;
    o.step = step;
    o.format = fmt;
    o.threads = 2;
    TU_ASSERT_OK(dsckpt_synth(ck, &o));
    return ck;
}

/* A Trainer output_dir: checkpoint-4 (best), checkpoint-12 (last), recorded best as
 * a stale absolute path. */
static char *make_output_dir(char **tmp_out) {
    char *tmp = tu_mkdtemp();
    char *out = tu_path(tmp, "output");
    CU_ASSERT_FATAL(mkdir(out, 0755) == 0);
    char *c4 = make_ckpt(out, 4, DSCKPT_FORMAT_DEEPSPEED), *c12 = make_ckpt(out, 12, DSCKPT_FORMAT_DEEPSPEED);
    put_state(c4, "/gone/elsewhere/output/checkpoint-4");
    put_state(c12, "/gone/elsewhere/output/checkpoint-4");
    free(c4);
    free(c12);
    *tmp_out = tmp;
    return out;
}

static const char *tag_of(const char *path, const char *tag, dsckpt_status *st) {
    static char buf[256];
    dsckpt_ckpt *c = NULL;
    *st = dsckpt_ckpt_open(path, tag, &c);
    if (*st) return NULL;
    char *base = ds_basename(c->root ? c->root : c->dir);
    snprintf(buf, sizeof buf, "%s/%s", base, c->tag);
    free(base);
    dsckpt_ckpt_free(c);
    return buf;
}

#define EXPECT_TAG(path, tag, want)                                                     \
    do {                                                                                \
        dsckpt_status st_;                                                              \
        const char *got_ = tag_of(path, tag, &st_);                                     \
        if (st_) fprintf(stderr, "\n  %s -t %s: %s\n", path, tag ? tag : "-", dsckpt_last_error()); \
        CU_ASSERT_EQUAL_FATAL(st_, DSCKPT_OK);                                          \
        CU_ASSERT_STRING_EQUAL(got_, want);                                             \
    } while (0)

/* ---- strict JSON ---- */

static void test_json_strict(void) {
    cJSON *j = NULL;
    const char *ok = "{\"a\": 0.0, \"b\": 1e-05, \"c\": 12345678901234567890, \"d\": [1, -2.50, {\"e\": 3}], \"f\": \"x\\\"1\"}";
    TU_ASSERT_OK(ds_json_parse_strict(ok, strlen(ok), "t", &j));
    char *s = cJSON_PrintUnformatted(j);
    CU_ASSERT_STRING_EQUAL(s, "{\"a\":0.0,\"b\":1e-05,\"c\":12345678901234567890,\"d\":[1,-2.50,{\"e\":3}],\"f\":\"x\\\"1\"}");
    double v = 0;
    CU_ASSERT_TRUE(ds_json_number(cJSON_GetObjectItemCaseSensitive(j, "b"), &v));
    CU_ASSERT_EQUAL(v, 1e-05);
    free(s);
    cJSON_Delete(j);
    /* Python's non-finite floats (the Trainer logs a NaN grad_norm) as values. */
    const char *py = "{\"grad_norm\": NaN, \"x\": [Infinity, -Infinity, -1.5]}";
    TU_ASSERT_OK(ds_json_parse_strict(py, strlen(py), "t", &j));
    s = cJSON_PrintUnformatted(j);
    CU_ASSERT_STRING_EQUAL(s, "{\"grad_norm\":NaN,\"x\":[Infinity,-Infinity,-1.5]}");
    CU_ASSERT_TRUE(ds_json_number(cJSON_GetObjectItemCaseSensitive(j, "grad_norm"), &v) && isnan(v));
    CU_ASSERT_TRUE(ds_json_number(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "x"), 1), &v) &&
                   v == -INFINITY);
    free(s);
    cJSON_Delete(j);
    static const char *bad[] = {
        "{NaN: 1}",                           /* not a key */
        "[1Infinity]",                        /* glued to a number */
        "[NaNNaN]",
        "{\"a\": nan}",
        "{\"a\": 1, \"a\": 2}",                 /* duplicate key */
        "{\"x\": {\"k\": 1, \"j\": 2, \"k\": 3}}", /* nested duplicate */
        "{\"a\": 1} {}",                      /* trailing data */
        "{\"a\": \"\xff\"}",                  /* not UTF-8 */
        "{\"a\\u0000b\": 1, \"a\": 2}",       /* NUL escape */
        "{\"a\": 1",                          /* truncated */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = NULL;
        dsckpt_status st = ds_json_parse_strict(bad[i], strlen(bad[i]), "t", &j);
        if (st != DSCKPT_ECORRUPT) fprintf(stderr, "\n  accepted: %s\n", bad[i]);
        CU_ASSERT_EQUAL(st, DSCKPT_ECORRUPT);
        CU_ASSERT_PTR_NULL(j);
    }
    CU_ASSERT_EQUAL(ds_json_parse_strict("{\"a\":1}\0", 8, "t", &j), DSCKPT_ECORRUPT); /* NUL byte */
}

static void test_best_component(void) {
    char *c = NULL;
    static const char *ok[][2] = {{"output/checkpoint-4", "checkpoint-4"},
                                  {"/abs/stale/run/checkpoint-4/", "checkpoint-4"},
                                  {"checkpoint-4", "checkpoint-4"},
                                  {"C:\\runs\\out\\checkpoint-8", "checkpoint-8"},
                                  {"../../etc", "etc"}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        TU_ASSERT_OK(ds_best_component(ok[i][0], "t", &c));
        CU_ASSERT_STRING_EQUAL(c, ok[i][1]);
        free(c);
    }
    static const char *bad[] = {"", "/", "output/..", "..", "a/.", "x/bad\nname"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = NULL;
        CU_ASSERT_EQUAL(ds_best_component(bad[i], "t", &c), DSCKPT_ECORRUPT);
        CU_ASSERT_PTR_NULL(c);
    }
    uint64_t n = 0;
    CU_ASSERT_TRUE(ds_hf_checkpoint_name("checkpoint-12", &n));
    CU_ASSERT_EQUAL(n, 12);
    CU_ASSERT_FALSE(ds_hf_checkpoint_name("checkpoint-", NULL));
    CU_ASSERT_FALSE(ds_hf_checkpoint_name("checkpoint-1a", NULL));
    CU_ASSERT_FALSE(ds_hf_checkpoint_name("checkpoint--1", NULL));
    CU_ASSERT_FALSE(ds_hf_checkpoint_name("tmp-checkpoint-4", NULL));
}

/* ---- resolution ---- */

static void test_resolve_output_dir(void) {
    char *tmp, *out = make_output_dir(&tmp);
    char *c12 = tu_path(out, "checkpoint-12"), *c4 = tu_path(out, "checkpoint-4");
    EXPECT_TAG(out, NULL, "checkpoint-12/global_step12");      /* newest */
    EXPECT_TAG(out, "latest", "checkpoint-12/global_step12");
    EXPECT_TAG(out, "best", "checkpoint-4/global_step4");      /* stale absolute path, last component */
    EXPECT_TAG(out, "checkpoint-4", "checkpoint-4/global_step4");
    EXPECT_TAG(out, "global_step4", "checkpoint-4/global_step4");
    EXPECT_TAG(c12, NULL, "checkpoint-12/global_step12");
    EXPECT_TAG(c12, "latest", "checkpoint-12/global_step12");
    EXPECT_TAG(c12, "best", "checkpoint-4/global_step4");      /* the sibling */
    EXPECT_TAG(c12, "global_step12", "checkpoint-12/global_step12");
    EXPECT_TAG(c4, "best", "checkpoint-4/global_step4");       /* itself */
    char *td = tu_path(c4, "global_step4");
    EXPECT_TAG(td, NULL, "global_step4/global_step4");         /* a tag directory */
    free(td);

    /* An incomplete newest checkpoint (no 'latest', or 'latest' naming nothing) is
     * skipped by the default, and says so when named. */
    char *c20 = tu_path(out, "checkpoint-20"), *c16 = tu_path(out, "checkpoint-16");
    CU_ASSERT_FATAL(mkdir(c20, 0755) == 0 && mkdir(c16, 0755) == 0);
    put(c16, "latest", "global_step16\n");
    EXPECT_TAG(out, NULL, "checkpoint-12/global_step12");
    dsckpt_status st;
    CU_ASSERT_PTR_NULL(tag_of(out, "checkpoint-20", &st));
    CU_ASSERT_EQUAL(st, DSCKPT_ENOENT);

    /* Missing tags: ENOENT listing what exists. */
    CU_ASSERT_PTR_NULL(tag_of(out, "checkpoint-7", &st));
    CU_ASSERT_EQUAL(st, DSCKPT_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "checkpoint-4, checkpoint-12, checkpoint-16, checkpoint-20"));
    CU_ASSERT_PTR_NULL(tag_of(c12, "global_step9", &st));
    CU_ASSERT_EQUAL(st, DSCKPT_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "tags here: global_step12"));
    CU_ASSERT_PTR_NULL(tag_of(out, "global_step9", &st));
    CU_ASSERT_EQUAL(st, DSCKPT_ENOENT);
    CU_ASSERT_PTR_NULL(tag_of(out, "../checkpoint-4", &st)); /* from the user: usage */
    CU_ASSERT_EQUAL(st, DSCKPT_EINVAL);
    free(c20);
    free(c16);
    free(c4);
    free(c12);
    free(out);
    tu_rmtree(tmp);
    free(tmp);
}

static void test_resolve_hostile_state(void) {
    char *tmp, *out = make_output_dir(&tmp);
    char *c12 = tu_path(out, "checkpoint-12");
    dsckpt_status st;
    /* The stored path's last component must be a checkpoint-N of this output_dir. */
    static const char *hostile[] = {"../../etc", "output/..", "..", "/etc/passwd", "output/checkpoint-4/../../../etc"};
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        put_state(c12, hostile[i]);
        CU_ASSERT_PTR_NULL(tag_of(out, "best", &st));
        CU_ASSERT_EQUAL(st, DSCKPT_ECORRUPT);
        CU_ASSERT_PTR_NULL(tag_of(c12, "best", &st));
        CU_ASSERT_EQUAL(st, DSCKPT_ECORRUPT);
    }
    /* Damaged trainer_state.json: duplicate keys (which one would a reader take?),
     * not JSON, not an object, best not a string. */
    static const char *bad[] = {
        "{\"best_model_checkpoint\": \"output/checkpoint-4\", \"best_model_checkpoint\": \"output/checkpoint-12\"}",
        "{\"best_model_checkpoint\": \"output/checkpoint-4\"",
        "[\"output/checkpoint-4\"]",
        "{\"best_model_checkpoint\": 4}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        put(c12, "trainer_state.json", bad[i]);
        CU_ASSERT_PTR_NULL(tag_of(out, "best", &st));
        CU_ASSERT_EQUAL(st, DSCKPT_ECORRUPT);
    }
    CU_ASSERT_PTR_NOT_NULL(tag_of(out, NULL, &st)); /* only `best` reads it */
    /* No best recorded: ENOENT, like a missing tag. */
    put_state(c12, NULL);
    CU_ASSERT_PTR_NULL(tag_of(out, "best", &st));
    CU_ASSERT_EQUAL(st, DSCKPT_ENOENT);
    /* A best checkpoint that rotation removed. */
    put_state(c12, "output/checkpoint-8");
    CU_ASSERT_PTR_NULL(tag_of(out, "best", &st));
    CU_ASSERT_EQUAL(st, DSCKPT_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "checkpoint-4, checkpoint-12"));
    free(c12);
    free(out);
    tu_rmtree(tmp);
    free(tmp);
}

static void test_resolve_native_best(void) {
    /* A dsckpt save root: best comes from the best tracking dstrain writes (a tag). */
    char *tmp = tu_mkdtemp(), *root = make_ckpt(tmp, 40, DSCKPT_FORMAT_NATIVE);
    EXPECT_TAG(root, "best", "checkpoint-40/global_step40");
    char *run = tu_path(tmp, "run");
    CU_ASSERT_FATAL(rename(root, run) == 0);
    free(root);
    root = run;
    EXPECT_TAG(root, "best", "run/global_step40");
    put_state(root, "/elsewhere/run/global_step20");
    dsckpt_status st;
    CU_ASSERT_PTR_NULL(tag_of(root, "best", &st));
    CU_ASSERT_EQUAL(st, DSCKPT_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "tags here: global_step40"));
    put_state(root, "..");
    CU_ASSERT_PTR_NULL(tag_of(root, "best", &st));
    CU_ASSERT_EQUAL(st, DSCKPT_ECORRUPT);
    free(root);
    tu_rmtree(tmp);
    free(tmp);
}

/* ---- consolidate to a folder ---- */

static cJSON *read_json(const char *dir, const char *name) {
    char *p = tu_path(dir, name);
    size_t n = 0;
    uint8_t *b = tu_read(p, &n);
    free(p);
    if (!b) return NULL;
    cJSON *j = cJSON_ParseWithLength((const char *)b, n);
    free(b);
    return j;
}

static void test_consolidate_folder_files(void) {
    char *tmp, *out = make_output_dir(&tmp);
    char *c12 = tu_path(out, "checkpoint-12"), *exp = tu_path(tmp, "export");
    put(c12, "config.json", "{\"model_type\": \"gpt2\", \"dtype\": \"bfloat16\", \"attn_pdrop\": 0.0, \"n_embd\": 64}");
    put(c12, "generation_config.json", "{\"bos_token_id\": 50256, \"eos_token_id\": 50256}");
    put(c12, "tokenizer_config.json", "{\"model_max_length\": 1024}");
    put(c12, "merges.txt", "#version: 0.2\n\xc4\xa0 t\n");
    put(c12, "tokenizer.model", "\x0a\x05binary");
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(out, NULL, &c));
    dsckpt_consolidate_opts o;
    dsckpt_consolidate_opts_init(&o);
    o.dtype = DSCKPT_F32;
    o.threads = 2;
    TU_ASSERT_OK(dsckpt_consolidate(c, exp, &o));
    cJSON *cfg = read_json(exp, "config.json");
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItemCaseSensitive(cfg, "dtype")->valuestring, "float32");
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItemCaseSensitive(cfg, "model_type")->valuestring, "gpt2");
    cJSON_Delete(cfg);
    char *p = tu_path(exp, "config.json");
    size_t n;
    char *text = (char *)tu_read(p, &n);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "0.0")); /* a float stays a float */
    free(text);
    free(p);
    p = tu_path(exp, "merges.txt");
    text = (char *)tu_read(p, &n);
    CU_ASSERT_EQUAL(n, strlen("#version: 0.2\n\xc4\xa0 t\n")); /* text copied byte for byte */
    free(text);
    free(p);
    char *tc = tu_path(exp, "tokenizer_config.json"), *gc = tu_path(exp, "generation_config.json"),
         *tm = tu_path(exp, "tokenizer.model"), *ms = tu_path(exp, "model.safetensors");
    CU_ASSERT_TRUE(tu_exists(tc) && tu_exists(gc) && tu_exists(ms));
    CU_ASSERT_FALSE(tu_exists(tm)); /* binary: not copied */
    free(tc);
    free(gc);
    free(tm);
    free(ms);
    /* A damaged config.json fails the export and leaves nothing behind. */
    tu_rmtree(exp);
    put(c12, "config.json", "{\"model_type\": \"gpt2\", \"model_type\": \"llama\"}");
    CU_ASSERT_EQUAL(dsckpt_consolidate(c, exp, &o), DSCKPT_ECORRUPT);
    CU_ASSERT_FALSE(tu_exists(exp));
    put(c12, "config.json", "{}");
    put(c12, "merges.txt", "a\0b");
    char *mp = tu_path(c12, "merges.txt");
    CU_ASSERT_FATAL(tu_write(mp, "a\0b", 3) == 0);
    free(mp);
    CU_ASSERT_EQUAL(dsckpt_consolidate(c, exp, &o), DSCKPT_ECORRUPT);
    CU_ASSERT_FALSE(tu_exists(exp));
    dsckpt_ckpt_free(c);
    free(exp);
    free(c12);
    free(out);
    tu_rmtree(tmp);
    free(tmp);
}

/* A tiny GPT-2 written as dstrain writes it: HF names, Conv1D [in, out] layout,
 * lm_head.weight an alias of transformer.wte.weight, and the manifest's "model". */
enum { GL = 2, GC = 8, GV = 11, GP = 6, GH = 2 };

typedef struct gfill {
    const ds_tensor *ts;
} gfill;

static float gval(uint32_t t, uint64_t i) { return (float)((int)((t * 131u + i * 7u) % 97u) - 48) / 64.0f; }

static dsckpt_status gpt2_fill(void *u, ds_state s, uint32_t t, uint64_t start, uint64_t numel, void *dst, int w) {
    (void)u;
    (void)w;
    float *d = dst;
    for (uint64_t i = 0; i < numel; i++) d[i] = s == DS_ST_FP32 ? gval(t, start + i) : 0.25f;
    return DSCKPT_OK;
}

static size_t gpt2_tensors(ds_tensor *ts) {
    size_t k = 0;
    char name[96];
#define T2(nm, a, b)                                                                                           \
    do {                                                                                                       \
        ts[k] = (ds_tensor){.name = strdup(nm), .dtype = DSCKPT_BF16, .ndim = ((b) != 0) ? 2 : 1, .trainable = true, \
                            .group = ((b) != 0) ? 0 : 1};                                                             \
        ts[k].shape[0] = (a);                                                                                  \
        ts[k].shape[1] = (b);                                                                                  \
        ts[k].numel = (uint64_t)(a) * (((b) != 0) ? (uint64_t)(b) : 1);                                              \
        k++;                                                                                                   \
    } while (0)
    T2("transformer.wte.weight", GV, GC);
    ts[0].aliases = calloc(1, sizeof(char *));
    ts[0].aliases[0] = strdup("lm_head.weight");
    ts[0].naliases = 1;
    T2("transformer.wpe.weight", GP, GC);
    for (int i = 0; i < GL; i++) {
        static const struct { const char *s; int a, b; } blk[12] = {
            {"ln_1.weight", 1, 0}, {"ln_1.bias", 1, 0}, {"attn.c_attn.weight", 1, 3}, {"attn.c_attn.bias", 3, 0},
            {"attn.c_proj.weight", 1, 1}, {"attn.c_proj.bias", 1, 0}, {"ln_2.weight", 1, 0}, {"ln_2.bias", 1, 0},
            {"mlp.c_fc.weight", 1, 4}, {"mlp.c_fc.bias", 4, 0}, {"mlp.c_proj.weight", 4, 1}, {"mlp.c_proj.bias", 1, 0}};
        for (int j = 0; j < 12; j++) {
            snprintf(name, sizeof name, "transformer.h.%d.%s", i, blk[j].s);
            T2(name, blk[j].a * GC, blk[j].b * GC);
        }
    }
    T2("transformer.ln_f.weight", GC, 0);
    T2("transformer.ln_f.bias", GC, 0);
#undef T2
    return k;
}

static char *write_gpt2(const char *tmp, const ds_model_info *m) {
    ds_tensor ts[2 + 12 * GL + 2];
    size_t nt = gpt2_tensors(ts);
    char *root = tu_path(tmp, "run"), *tagdir = tu_path(root, "global_step8");
    CU_ASSERT_FATAL(mkdir(root, 0755) == 0 && mkdir(tagdir, 0755) == 0);
    ds_native_spec spec = {.tensors = ts, .ntensors = nt, .ngroups = 2, .stage = 2, .world_size = 2,
                           .tag = "global_step8", .step = 8, .train_dtype = "bf16", .model = m};
    ds_native_out *no = NULL;
    TU_ASSERT_OK(ds_native_prepare(&spec, tagdir, &no));
    gfill g = {ts};
    TU_ASSERT_OK(ds_native_write_all(no, gpt2_fill, &g, 2, NULL));
    TU_ASSERT_OK(ds_set_latest(root, "global_step8"));
    ds_native_out_free(no);
    for (size_t i = 0; i < nt; i++) ds_tensor_clear(&ts[i]);
    free(tagdir);
    return root;
}

static void test_native_gpt2_config(void) {
    char *tmp = tu_mkdtemp();
    ds_model_info m = {.architecture = "gpt2", .n_layer = GL, .n_head = GH, .n_embd = GC, .vocab_size = GV,
                       .n_positions = GP, .tie_word_embeddings = true};
    char *root = write_gpt2(tmp, &m), *exp = tu_path(tmp, "export");
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ds_ckpt_model(c));
    dsckpt_consolidate_opts o;
    dsckpt_consolidate_opts_init(&o);
    o.dtype = DSCKPT_F32;
    TU_ASSERT_OK(dsckpt_consolidate(c, exp, &o));
    cJSON *cfg = read_json(exp, "config.json");
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    static const struct { const char *k; double v; } nums[] = {
        {"n_layer", GL}, {"n_head", GH}, {"n_embd", GC}, {"vocab_size", GV}, {"n_positions", GP}, {"n_ctx", GP}};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, nums[i].k);
        CU_ASSERT_TRUE(cJSON_IsNumber(v) && v->valuedouble == nums[i].v);
    }
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItemCaseSensitive(cfg, "model_type")->valuestring, "gpt2");
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItemCaseSensitive(cfg, "torch_dtype")->valuestring, "float32");
    CU_ASSERT_STRING_EQUAL(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(cfg, "architectures"), 0)->valuestring,
                           "GPT2LMHeadModel");
    CU_ASSERT_TRUE(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "tie_word_embeddings")));
    cJSON_Delete(cfg);
    /* The weights carry GPT2LMHeadModel's keys and Conv1D shapes. */
    char *ms = tu_path(exp, "model.safetensors");
    st_header *h = NULL;
    TU_ASSERT_OK(st_read_file(ms, &h));
    CU_ASSERT_EQUAL(h->n, 2 + 12 * GL + 2);
    const st_tensor *t = st_find(h, "transformer.h.1.attn.c_attn.weight");
    CU_ASSERT_TRUE_FATAL(t != NULL);
    CU_ASSERT_TRUE(t->ndim == 2 && t->shape[0] == GC && t->shape[1] == 3 * GC);
    CU_ASSERT_STRING_EQUAL(st_meta_get(h, "alias.lm_head.weight"), "transformer.wte.weight");
    st_header_free(h);
    free(ms);
    dsckpt_ckpt_free(c);
    tu_rmtree(exp);

    /* A manifest whose "model" does not match the tensors: refused, nothing written. */
    tu_rmtree(root);
    free(root);
    m.n_embd = 2 * GC;
    root = write_gpt2(tmp, &m);
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    CU_ASSERT_EQUAL(dsckpt_consolidate(c, exp, &o), DSCKPT_ECORRUPT);
    CU_ASSERT_FALSE(tu_exists(exp));
    dsckpt_ckpt_free(c);
    tu_rmtree(root);
    free(root);
    m.n_embd = GC;
    m.tie_word_embeddings = false; /* untied, but no lm_head.weight of its own */
    root = write_gpt2(tmp, &m);
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    CU_ASSERT_EQUAL(dsckpt_consolidate(c, exp, &o), DSCKPT_ECORRUPT);
    dsckpt_ckpt_free(c);
    free(root);
    free(exp);
    tu_rmtree(tmp);
    free(tmp);
}

/* ---- the Trainer's pickles and reshard ---- */

static char *hf_fix(const char *rel) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", HF_FIX, rel);
    return tu_src_path(buf);
}

static void copy_file(const char *from, const char *to) {
    size_t n = 0;
    uint8_t *b = tu_read(from, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_FATAL(tu_write(to, b, n) == 0);
    free(b);
}

static void test_trainer_pickles(void) {
    char *sch = hf_fix("output/checkpoint-4/scheduler.pt"), *rng = hf_fix("output/checkpoint-4/rng_state_0.pth"),
         *args = hf_fix("output/checkpoint-4/training_args.bin");
    TU_ASSERT_OK(ds_torch_plain_check(sch));                                    /* LambdaLR state: plain */
    CU_ASSERT_EQUAL(ds_torch_plain_check(rng), DSCKPT_EUNSUPPORTED);            /* numpy objects */
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "numpy"));
    CU_ASSERT_EQUAL(ds_torch_plain_check(args), DSCKPT_EUNSUPPORTED);           /* TrainingArguments */
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "transformers"));
    /* A flipped bit in the pickle: the member's CRC. */
    char *tmp = tu_mkdtemp(), *p = tu_path(tmp, "scheduler.pt");
    copy_file(sch, p);
    size_t n;
    uint8_t *b = tu_read(p, &n);
    uint8_t *at = memmem(b, n, "base_lrs", 8);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    CU_ASSERT_FATAL(tu_flip_bit(p, (uint64_t)(at - b), 1) == 0);
    free(b);
    dsckpt_status st = ds_torch_plain_check(p);
    CU_ASSERT_TRUE(st == DSCKPT_ECHECKSUM || st == DSCKPT_ECORRUPT);
    free(p);
    tu_rmtree(tmp);
    free(tmp);
    free(sch);
    free(rng);
    free(args);
}

static void test_reshard_carries_trainer_files(void) {
    char *tmp, *out = make_output_dir(&tmp);
    char *c12 = tu_path(out, "checkpoint-12");
    static const char *carry[] = {"scheduler.pt", "rng_state_0.pth", "rng_state_1.pth", "training_args.bin"};
    for (size_t i = 0; i < 4; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "output/checkpoint-4/%s", carry[i]);
        char *from = hf_fix(rel), *to = tu_path(c12, carry[i]);
        copy_file(from, to);
        free(from);
        free(to);
    }
    put(c12, "config.json", "{\"model_type\": \"gpt2\", \"dtype\": \"bfloat16\"}");
    char *w4 = tu_path(tmp, "w4"), *dst12 = tu_path(w4, "checkpoint-12"), *dst4 = tu_path(w4, "checkpoint-4");
    CU_ASSERT_FATAL(mkdir(w4, 0755) == 0);
    dsckpt_reshard_opts o;
    dsckpt_reshard_opts_init(&o);
    o.world_size = 4;
    o.format = DSCKPT_FORMAT_DEEPSPEED;
    o.threads = 2;
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(out, NULL, &c));
    TU_ASSERT_OK(dsckpt_reshard(c, dst12, &o));
    dsckpt_ckpt_free(c);
    cJSON *ts = read_json(dst12, "trainer_state.json");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ts);
    char want[1024];
    snprintf(want, sizeof want, "%s/checkpoint-4", w4); /* the sibling at the new location */
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItemCaseSensitive(ts, "best_model_checkpoint")->valuestring, want);
    cJSON_Delete(ts);
    char *f;
    CU_ASSERT_TRUE(tu_exists(f = tu_path(dst12, "scheduler.pt")));
    free(f);
    CU_ASSERT_TRUE(tu_exists(f = tu_path(dst12, "config.json")));
    free(f);
    CU_ASSERT_FALSE(tu_exists(f = tu_path(dst12, "rng_state_0.pth")));
    free(f);
    CU_ASSERT_FALSE(tu_exists(f = tu_path(dst12, "training_args.bin")));
    free(f);
    char *a = tu_path(c12, "scheduler.pt"), *bb = tu_path(dst12, "scheduler.pt");
    CU_ASSERT_TRUE(tu_same_file(a, bb));
    free(bb);
    EXPECT_TAG(dst12, NULL, "checkpoint-12/global_step12");
    TU_ASSERT_OK(dsckpt_ckpt_open(dst12, NULL, &c));
    CU_ASSERT_EQUAL(c->world_size, 4);
    dsckpt_ckpt_free(c);

    /* The best checkpoint itself resharded: best names the new location. */
    TU_ASSERT_OK(dsckpt_ckpt_open(out, "best", &c));
    TU_ASSERT_OK(dsckpt_reshard(c, dst4, &o));
    dsckpt_ckpt_free(c);
    ts = read_json(dst4, "trainer_state.json");
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItemCaseSensitive(ts, "best_model_checkpoint")->valuestring, dst4);
    cJSON_Delete(ts);
    EXPECT_TAG(w4, "best", "checkpoint-4/global_step4"); /* the new output_dir resolves */

    /* scheduler.pt is needed to resume: one holding objects is refused (5). */
    char *rng = hf_fix("output/checkpoint-4/rng_state_0.pth"), *other = tu_path(tmp, "w4b");
    copy_file(rng, a);
    TU_ASSERT_OK(dsckpt_ckpt_open(out, NULL, &c));
    CU_ASSERT_EQUAL(dsckpt_reshard(c, other, &o), DSCKPT_EUNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "scheduler.pt"));
    CU_ASSERT_FALSE(tu_exists(other));
    dsckpt_ckpt_free(c);
    free(other);
    free(rng);
    free(a);
    free(dst4);
    free(dst12);
    free(w4);
    free(c12);
    free(out);
    tu_rmtree(tmp);
    free(tmp);
}

/* ---- the real Trainer output (DeepSpeed 0.19.8, ZeRO-3, GPT-2) ---- */

/* name -> fp32 data of DeepSpeed's zero_to_fp32 pytorch_model.bin, read with our
 * zip + restricted pickle reader. */
typedef struct bin_sd {
    int fd;
    zip_archive *z;
    pk_doc *doc;
    pk_obj *root;
} bin_sd;

static void bin_open(const char *path, bin_sd *b) {
    uint64_t size;
    TU_ASSERT_OK(ds_open_read(path, &b->fd, &size));
    TU_ASSERT_OK(zip_open_fd(b->fd, path, &b->z));
    const zip_member *m = zip_find_rel(b->z, "data.pkl");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    uint8_t *pkl = NULL;
    TU_ASSERT_OK(zip_read_member(b->fd, b->z, m, 1u << 26, path, &pkl));
    TU_ASSERT_OK(pk_parse(pkl, (size_t)m->size, path, NULL, &b->doc, &b->root));
    free(pkl);
    CU_ASSERT_EQUAL_FATAL(b->root->kind, PK_DICT);
}

static float *bin_tensor(const bin_sd *b, const pk_obj *t, uint64_t *numel) {
    CU_ASSERT_EQUAL_FATAL(t->kind, PK_TENSOR);
    CU_ASSERT_EQUAL_FATAL(t->tensor.dtype, DSCKPT_F32);
    uint64_t n = 1;
    int64_t stride = 1;
    for (int d = t->tensor.ndim - 1; d >= 0; d--) { /* contiguous */
        CU_ASSERT_EQUAL_FATAL(t->tensor.stride[d], stride);
        stride *= (int64_t)t->tensor.shape[d];
        n *= t->tensor.shape[d];
    }
    char rel[64];
    snprintf(rel, sizeof rel, "data/%s", t->tensor.storage_key);
    const zip_member *m = zip_find_rel(b->z, rel);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_TRUE_FATAL((t->tensor.offset + n) * 4 <= m->size);
    float *v = malloc(n * 4 + 4);
    CU_ASSERT_FATAL(pread(b->fd, v, n * 4, (off_t)(m->data_offset + t->tensor.offset * 4)) == (ssize_t)(n * 4));
    *numel = n;
    return v;
}

static void bin_close(bin_sd *b) {
    pk_doc_free(b->doc);
    zip_free(b->z);
    close(b->fd);
}

static bool hf_fixture_readable(void) {
    char *out = hf_fix("output");
    dsckpt_ckpt *c = NULL;
    dsckpt_status st = dsckpt_ckpt_open(out, "checkpoint-4", &c);
    dsckpt_ckpt_free(c);
    free(out);
    return st == DSCKPT_OK;
}

static void test_real_trainer_resolution(void) {
    char *out = hf_fix("output"), *c12 = hf_fix("output/checkpoint-12");
    if (!hf_fixture_readable()) {
        /* ZeRO-3 files of DeepSpeed 0.19 need the reader that handles them. */
        fprintf(stderr, "\n  hf_trainer_z3 not readable yet: %s\n", dsckpt_last_error());
        CU_FAIL("fixtures/deepspeed-0.19/hf_trainer_z3 cannot be opened");
        free(out);
        free(c12);
        return;
    }
    EXPECT_TAG(out, NULL, "checkpoint-12/global_step12");
    EXPECT_TAG(out, "latest", "checkpoint-12/global_step12");
    EXPECT_TAG(out, "best", "checkpoint-4/global_step4"); /* "output/checkpoint-4", relative to another cwd */
    EXPECT_TAG(out, "checkpoint-4", "checkpoint-4/global_step4");
    EXPECT_TAG(c12, "best", "checkpoint-4/global_step4");
    dsckpt_status st;
    CU_ASSERT_PTR_NULL(tag_of(out, "checkpoint-8", &st)); /* rotated away */
    CU_ASSERT_EQUAL(st, DSCKPT_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "checkpoint-4, checkpoint-12"));
    free(out);
    free(c12);
}

/* An export's fp32 and bf16 model.safetensors, open for reading. */
typedef struct export_pair {
    st_header *h, *h16;
    int fd, fd16;
} export_pair;

/* One tensor of the reference state dict (item, `name`) against its export
 * entries t (fp32: bit for bit) and t16 (bf16: round-to-nearest-even of it). */
static void export_check_tensor(const export_pair *e, const bin_sd *b, const pk_obj *item, const char *name,
                                const st_tensor *t, const st_tensor *t16) {
    uint64_t n = 0;
    float *want = bin_tensor(b, item, &n);
    CU_ASSERT_EQUAL_FATAL(t->numel, n);
    CU_ASSERT_EQUAL_FATAL(t->dtype, DSCKPT_F32);
    float *got = malloc(n * 4 + 4);
    uint16_t *got16 = malloc(n * 2 + 2), *rne = malloc(n * 2 + 2);
    CU_ASSERT_FATAL(pread(e->fd, got, n * 4, (off_t)(e->h->data_start + t->begin)) == (ssize_t)(n * 4));
    CU_ASSERT_FATAL(pread(e->fd16, got16, n * 2, (off_t)(e->h16->data_start + t16->begin)) == (ssize_t)(n * 2));
    ds_cast_f32_to_bf16_ref(want, rne, n);
    if (memcmp(got, want, n * 4)) fprintf(stderr, "\n  fp32 differs: %s\n", name);
    CU_ASSERT_EQUAL(memcmp(got, want, n * 4), 0);
    CU_ASSERT_EQUAL(memcmp(got16, rne, n * 2), 0);
    free(got);
    free(got16);
    free(rne);
    free(want);
}

/* Weights: every key of zero_to_fp32's state dict, bit for bit; the tied
 * lm_head.weight is an alias (from_pretrained re-ties it). */
static void export_check_weights(const char *exp, const char *exp16) {
    char *ms = tu_path(exp, "model.safetensors"), *ms16 = tu_path(exp16, "model.safetensors"),
         *bin = hf_fix("expected/zero_to_fp32_checkpoint-4/pytorch_model.bin");
    export_pair e = {NULL, NULL, -1, -1};
    TU_ASSERT_OK(st_read_file(ms, &e.h));
    TU_ASSERT_OK(st_read_file(ms16, &e.h16));
    e.fd = open(ms, O_RDONLY);
    e.fd16 = open(ms16, O_RDONLY);
    CU_ASSERT_FATAL(e.fd >= 0 && e.fd16 >= 0);
    bin_sd b = {0};
    bin_open(bin, &b);
    size_t found = 0, aliased = 0;
    for (size_t i = 0; i < b.root->n; i++) {
        const char *name = pk_as_str(b.root->keys[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(name);
        const st_tensor *t = st_find(e.h, name), *t16 = st_find(e.h16, name);
        if (!t) {
            char key[300];
            snprintf(key, sizeof key, "alias.%s", name);
            const char *owner = st_meta_get(e.h, key);
            if (!owner) fprintf(stderr, "\n  missing in the export: %s\n", name);
            CU_ASSERT_PTR_NOT_NULL_FATAL(owner);
            t = st_find(e.h, owner);
            t16 = st_find(e.h16, owner);
            aliased++;
        }
        CU_ASSERT_PTR_NOT_NULL_FATAL(t);
        export_check_tensor(&e, &b, b.root->items[i], name, t, t16);
        found++;
    }
    CU_ASSERT_EQUAL(found + 0, b.root->n);
    CU_ASSERT_EQUAL(aliased, 1); /* lm_head.weight */
    CU_ASSERT_EQUAL(e.h->n, b.root->n - aliased); /* nothing extra: no unexpected keys */
    bin_close(&b);
    close(e.fd);
    close(e.fd16);
    st_header_free(e.h);
    st_header_free(e.h16);
    free(ms);
    free(ms16);
    free(bin);
}

static void test_real_trainer_export(void) {
    if (!hf_fixture_readable()) {
        CU_FAIL("fixtures/deepspeed-0.19/hf_trainer_z3 cannot be opened");
        return;
    }
    char *out = hf_fix("output"), *tmp = tu_mkdtemp(), *exp = tu_path(tmp, "export"), *exp16 = tu_path(tmp, "export16");
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(out, "best", &c));
    dsckpt_consolidate_opts o;
    dsckpt_consolidate_opts_init(&o);
    o.dtype = DSCKPT_F32;
    o.threads = 2;
    TU_ASSERT_OK(dsckpt_consolidate(c, exp, &o));
    o.dtype = DSCKPT_BF16;
    TU_ASSERT_OK(dsckpt_consolidate(c, exp16, &o));
    dsckpt_ckpt_free(c);
    /* config.json: the checkpoint's, with the dtype of the weights. */
    cJSON *cfg = read_json(exp, "config.json");
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItemCaseSensitive(cfg, "dtype")->valuestring, "float32");
    CU_ASSERT_EQUAL(cJSON_GetObjectItemCaseSensitive(cfg, "n_embd")->valuedouble, 64);
    cJSON_Delete(cfg);
    char *gc = tu_path(exp, "generation_config.json");
    CU_ASSERT_TRUE(tu_exists(gc));
    free(gc);
    export_check_weights(exp, exp16);
    free(exp);
    free(exp16);
    free(out);
    tu_rmtree(tmp);
    free(tmp);
}

static void test_real_trainer_reshard(void) {
    if (!hf_fixture_readable()) {
        CU_FAIL("fixtures/deepspeed-0.19/hf_trainer_z3 cannot be opened");
        return;
    }
    char *out = hf_fix("output"), *tmp = tu_mkdtemp(), *dst = tu_path(tmp, "checkpoint-12");
    dsckpt_ckpt *c = NULL, *r = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(out, NULL, &c));
    dsckpt_reshard_opts o;
    dsckpt_reshard_opts_init(&o);
    o.world_size = 3;
    o.format = DSCKPT_FORMAT_DEEPSPEED;
    o.threads = 2;
    TU_ASSERT_OK(dsckpt_reshard(c, dst, &o));
    TU_ASSERT_OK(dsckpt_ckpt_open(dst, NULL, &r));
    CU_ASSERT_EQUAL(r->world_size, 3);
    CU_ASSERT_STRING_EQUAL(r->tag, "global_step12");
    cJSON *ts = read_json(dst, "trainer_state.json");
    char want[1024];
    snprintf(want, sizeof want, "%s/checkpoint-4", tmp);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItemCaseSensitive(ts, "best_model_checkpoint")->valuestring, want);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(ts, "log_history")), 15);
    cJSON_Delete(ts);
    static const char *present[] = {"scheduler.pt", "config.json", "generation_config.json", "latest"};
    static const char *absent[] = {"rng_state_0.pth", "training_args.bin", "zero_to_fp32.py", "model.safetensors"};
    for (size_t i = 0; i < 4; i++) {
        char *p = tu_path(dst, present[i]), *q = tu_path(dst, absent[i]);
        CU_ASSERT_TRUE(tu_exists(p));
        CU_ASSERT_FALSE(tu_exists(q));
        free(p);
        free(q);
    }
    dsckpt_ckpt_free(r);
    dsckpt_ckpt_free(c);
    free(dst);
    free(out);
    tu_rmtree(tmp);
    free(tmp);
}

int main(void) {
    static const tu_test tests[] = {
        {"strict JSON: duplicate keys, NaN, trailing data, UTF-8 refused; numbers kept as written", test_json_strict},
        {"best_model_checkpoint: last component, checked", test_best_component},
        {"output_dir / checkpoint-N / tag dir; -t best, latest, checkpoint-N, tag; missing tags listed",
         test_resolve_output_dir},
        {"hostile or damaged trainer_state.json refused", test_resolve_hostile_state},
        {"dsckpt save root: -t best from the best tracking", test_resolve_native_best},
        {"consolidate to a folder: config.json (dtype set), generation_config, tokenizer text; not binaries",
         test_consolidate_folder_files},
        {"dsckpt GPT-2 with a model object: config.json for GPT2LMHeadModel, mismatches refused",
         test_native_gpt2_config},
        {"Trainer pickles: scheduler plain, rng_state/training_args not, damage caught", test_trainer_pickles},
        {"reshard of a checkpoint-N: Trainer files carried, best rewritten, needed pickle refused",
         test_reshard_carries_trainer_files},
        {"real Trainer output_dir: default, latest, best, checkpoint-4, missing", test_real_trainer_resolution},
        {"real Trainer export: keys and fp32 bits of zero_to_fp32, bf16 = RNE, config.json", test_real_trainer_export},
        {"real Trainer reshard to 3: usable checkpoint-12", test_real_trainer_reshard},
        {NULL, NULL}};
    return tu_main("hf", tests);
}
