/*
 * test_manifest.c — manifest.json round trip and a catalogue of hostile manifests,
 * each refused with its own status and message and never crashing.
 */
#include "ckpt.h"
#include "manifest.h"
#include "tutil.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static char *g_dir, *g_text;
static size_t g_len;

static int setup(void) {
    g_dir = tu_mkdtemp();
    char *ck = tu_path(g_dir, "ck");
    dsckpt_synth_opts so;
    dsckpt_synth_opts_init(&so);
    so.params = 5000;
    so.world_size = 3;
    so.zero_stage = 3;
    if (dsckpt_synth(ck, &so) != DSCKPT_OK) return 1;
    char *mf = tu_path(ck, "global_step100/manifest.json");
    g_text = (char *)tu_read(mf, &g_len);
    free(mf);
    free(ck);
    return g_text ? 0 : 1;
}

static dsckpt_status parse(const char *text, dsckpt_ckpt **out) {
    dsckpt_ckpt *c = NULL;
    dsckpt_status st = ds_ckpt_new(&c);
    if (st) return st;
    c->dir = strdup("tagdir");
    st = ds_ckpt_parse_manifest(c, text, strlen(text), "manifest.json");
    if (st == DSCKPT_OK) st = ds_ckpt_index(c, NULL, NULL);
    if (out && st == DSCKPT_OK) *out = c;
    else dsckpt_ckpt_free(c);
    return st;
}

static void test_round_trip(void) {
    char *text = strndup(g_text, g_len);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(parse(text, &c));
    CU_ASSERT_EQUAL(c->world_size, 3);
    CU_ASSERT_EQUAL(c->stage, 3);
    CU_ASSERT_EQUAL(c->nfiles, 3);
    CU_ASSERT_STRING_EQUAL(c->tensors[0].name, "wte.weight");
    CU_ASSERT_EQUAL(c->tensors[0].naliases, 1);
    CU_ASSERT_FALSE(c->tensors[1].trainable);
    char *again = NULL;
    TU_ASSERT_OK(ds_ckpt_build_manifest(c, &again));
    /* Building from the parsed form gives the same JSON value back. */
    cJSON *a = cJSON_Parse(text), *b = cJSON_Parse(again);
    CU_ASSERT(cJSON_Compare(a, b, 1));
    cJSON_Delete(a);
    cJSON_Delete(b);
    free(again);
    dsckpt_ckpt_free(c);
    free(text);
}

typedef struct mutation {
    const char *what;
    void (*edit)(cJSON *root);
    dsckpt_status want;
    const char *msg;
} mutation;

static cJSON *tensor0(cJSON *r) { return cJSON_GetArrayItem(cJSON_GetObjectItem(r, "tensors"), 0); }
static cJSON *file0(cJSON *r) { return cJSON_GetArrayItem(cJSON_GetObjectItem(r, "files"), 0); }
static cJSON *frag0(cJSON *r, const char *s) {
    return cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "fragments"), s), 0);
}
static void set_num(cJSON *o, const char *k, double v) { cJSON_ReplaceItemInObject(o, k, cJSON_CreateNumber(v)); }
static void set_str(cJSON *o, const char *k, const char *v) { cJSON_ReplaceItemInObject(o, k, cJSON_CreateString(v)); }

static void m_format(cJSON *r) { set_str(r, "format", "pytorch"); }
static void m_version(cJSON *r) { set_num(r, "version", 4); }
static void m_step_neg(cJSON *r) { set_num(r, "step", -1); }
static void m_step_frac(cJSON *r) { set_num(r, "step", 1.5); }
static void m_world0(cJSON *r) { set_num(r, "world_size", 0); }
static void m_stage5(cJSON *r) { set_num(r, "zero_stage", 5); }
static void m_dtype(cJSON *r) { set_str(r, "train_dtype", "int4"); }
static void m_no_tensors(cJSON *r) { cJSON_DeleteItemFromObject(r, "tensors"); }
static void m_dup_name(cJSON *r) { set_str(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "tensors"), 2), "name", "wte.weight"); }
static void m_alias_clash(cJSON *r) {
    cJSON *al = cJSON_GetObjectItem(tensor0(r), "aliases");
    cJSON_ReplaceItemInArray(al, 0, cJSON_CreateString("wpe.weight"));
}
static void m_bad_tensor_dtype(cJSON *r) { set_str(tensor0(r), "dtype", "F8_E4M3"); }
static void m_huge_dim(cJSON *r) {
    cJSON *sh = cJSON_GetObjectItem(tensor0(r), "shape");
    cJSON_ReplaceItemInArray(sh, 0, cJSON_CreateNumber(140737488355328.0)); /* 2^47 x d > 2^48 */
}
static void m_group_oob(cJSON *r) { set_num(tensor0(r), "group", 7); }
static void m_path_file(cJSON *r) { set_str(file0(r), "name", "../../etc/passwd"); }
static void m_abs_file(cJSON *r) { set_str(file0(r), "name", "/etc/passwd"); }
static void m_tag_escape(cJSON *r) { set_str(r, "tag", "../../../../tmp/x"); }
static void m_tag_dot(cJSON *r) { set_str(r, "tag", ".."); }
static void m_tag_ctl(cJSON *r) { set_str(r, "tag", "global\nstep"); }
static void m_dup_top(cJSON *r) { cJSON_AddStringToObject(r, "tag", "global_step9"); }
static void m_dup_file_key(cJSON *r) { cJSON_AddNumberToObject(file0(r), "rank", 1); }
static void m_dup_file(cJSON *r) {
    set_str(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "files"), 1), "name", "rank_00000.safetensors");
}
static void m_chunks(cJSON *r) { cJSON_DeleteItemFromArray(cJSON_GetObjectItem(file0(r), "chunks"), 0); }
static void m_hex(cJSON *r) { set_str(file0(r), "sha256", "xyz"); }
static void m_chunk0(cJSON *r) { set_num(file0(r), "chunk_size", 0); }
static void m_frag_tensor(cJSON *r) { cJSON_ReplaceItemInArray(frag0(r, "fp32"), 0, cJSON_CreateNumber(99999)); }
static void m_frag_file(cJSON *r) { cJSON_ReplaceItemInArray(frag0(r, "fp32"), 3, cJSON_CreateNumber(42)); }
static void m_frag_shape(cJSON *r) { cJSON_DeleteItemFromArray(frag0(r, "fp32"), 4); }
static void m_frag_past_file(cJSON *r) { cJSON_ReplaceItemInArray(frag0(r, "fp32"), 4, cJSON_CreateNumber(1e12)); }
static void m_frag_past_tensor(cJSON *r) { cJSON_ReplaceItemInArray(frag0(r, "fp32"), 1, cJSON_CreateNumber(1e9)); }
static void m_frag_gap(cJSON *r) { cJSON_DeleteItemFromArray(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "fragments"), "exp_avg"), 0); }
static void m_frag_dup(cJSON *r) {
    cJSON *arr = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "fragments"), "exp_avg_sq");
    cJSON_AddItemToArray(arr, cJSON_Duplicate(cJSON_GetArrayItem(arr, 0), 1));
}
static void m_state_name(cJSON *r) {
    cJSON *fr = cJSON_GetObjectItem(r, "fragments");
    cJSON_AddItemToObject(fr, "momentum", cJSON_CreateArray());
}
static void m_frozen_fp32(cJSON *r) {
    /* A frozen tensor (ordinal 1) given fp32 fragments. */
    cJSON *arr = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "fragments"), "fp32");
    cJSON *f = cJSON_Duplicate(cJSON_GetArrayItem(arr, 0), 1);
    cJSON_ReplaceItemInArray(f, 0, cJSON_CreateNumber(1));
    cJSON_ReplaceItemInArray(f, 2, cJSON_CreateNumber(1));
    cJSON_AddItemToArray(arr, f);
}

/* The "model" object (docs/native-format.md): optional, strict. */
static cJSON *good_model(void) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "architecture", "gpt2");
    cJSON_AddNumberToObject(m, "n_layer", 4);
    cJSON_AddNumberToObject(m, "n_head", 4);
    cJSON_AddNumberToObject(m, "n_embd", 128);
    cJSON_AddNumberToObject(m, "vocab_size", 256);
    cJSON_AddNumberToObject(m, "n_positions", 64);
    cJSON_AddBoolToObject(m, "tie_word_embeddings", true);
    return m;
}
static cJSON *add_model(cJSON *r) {
    cJSON *m = good_model();
    cJSON_AddItemToObject(r, "model", m);
    return m;
}
static void m_model_not_obj(cJSON *r) { cJSON_AddItemToObject(r, "model", cJSON_CreateArray()); }
static void m_model_unknown(cJSON *r) { cJSON_AddNumberToObject(add_model(r), "n_inner", 512); }
static void m_model_dup(cJSON *r) { cJSON_AddNumberToObject(add_model(r), "n_layer", 2); }
static void m_model_missing(cJSON *r) { cJSON_DeleteItemFromObject(add_model(r), "vocab_size"); }
static void m_model_zero(cJSON *r) { set_num(add_model(r), "n_layer", 0); }
static void m_model_neg(cJSON *r) { set_num(add_model(r), "n_head", -4); }
static void m_model_frac(cJSON *r) { set_num(add_model(r), "n_embd", 128.5); }
static void m_model_huge(cJSON *r) { set_num(add_model(r), "vocab_size", 4294967296.0); }
static void m_model_str(cJSON *r) { set_str(add_model(r), "n_positions", "64"); }
static void m_model_tie(cJSON *r) { set_num(add_model(r), "tie_word_embeddings", 1); }
static void m_model_heads(cJSON *r) { set_num(add_model(r), "n_head", 3); }
static void m_model_arch(cJSON *r) { set_str(add_model(r), "architecture", "llama"); }
static void m_model_arch_num(cJSON *r) { set_num(add_model(r), "architecture", 2); }

static const mutation mutations[] = {
    {"model not an object", m_model_not_obj, DSCKPT_ECORRUPT, "\"model\" must be an object"},
    {"model: unknown key", m_model_unknown, DSCKPT_ECORRUPT, "model: unknown key \"n_inner\""},
    {"model: duplicate key", m_model_dup, DSCKPT_ECORRUPT, "duplicate key \"n_layer\" in one object"},
    {"tag that escapes", m_tag_escape, DSCKPT_ECORRUPT, "tag '../../../../tmp/x' is not a safe name: it contains '/'"},
    {"tag ..", m_tag_dot, DSCKPT_ECORRUPT, "tag '..' is not a safe name: it is '..'"},
    {"tag with a newline", m_tag_ctl, DSCKPT_ECORRUPT, "tag 'global\\x0astep' is not a safe name: it contains a control"},
    {"duplicate top-level key", m_dup_top, DSCKPT_ECORRUPT, "duplicate key \"tag\" in one object"},
    {"duplicate key in a file entry", m_dup_file_key, DSCKPT_ECORRUPT, "duplicate key \"rank\" in one object"},
    {"model: missing key", m_model_missing, DSCKPT_ECORRUPT, "model: missing \"vocab_size\""},
    {"model: n_layer 0", m_model_zero, DSCKPT_ECORRUPT, "\"n_layer\" must be an integer in [1, 2147483647]"},
    {"model: negative", m_model_neg, DSCKPT_ECORRUPT, "\"n_head\" must be an integer"},
    {"model: fractional", m_model_frac, DSCKPT_ECORRUPT, "\"n_embd\" must be an integer"},
    {"model: 2^32", m_model_huge, DSCKPT_ECORRUPT, "\"vocab_size\" must be an integer"},
    {"model: string number", m_model_str, DSCKPT_ECORRUPT, "\"n_positions\" must be an integer"},
    {"model: tie not a bool", m_model_tie, DSCKPT_ECORRUPT, "\"tie_word_embeddings\" must be true or false"},
    {"model: heads do not divide", m_model_heads, DSCKPT_ECORRUPT, "not a multiple of n_head = 3"},
    {"model: unknown architecture", m_model_arch, DSCKPT_EUNSUPPORTED, "architecture 'llama'"},
    {"model: architecture not a string", m_model_arch_num, DSCKPT_ECORRUPT, "\"architecture\" must be a string"},
    {"wrong format", m_format, DSCKPT_ECORRUPT, "expected 'dsckpt'"},
    {"newer version", m_version, DSCKPT_EVERSION, "version 4"},
    {"negative step", m_step_neg, DSCKPT_ECORRUPT, "\"step\""},
    {"fractional step", m_step_frac, DSCKPT_ECORRUPT, "\"step\""},
    {"world size 0", m_world0, DSCKPT_ECORRUPT, "world_size"},
    {"stage 5", m_stage5, DSCKPT_ECORRUPT, "zero_stage"},
    {"training dtype", m_dtype, DSCKPT_ECORRUPT, "train_dtype"},
    {"no tensors", m_no_tensors, DSCKPT_ECORRUPT, "\"tensors\""},
    {"duplicate tensor name", m_dup_name, DSCKPT_ECORRUPT, "duplicate tensor name"},
    {"alias equal to a tensor name", m_alias_clash, DSCKPT_ECORRUPT, "duplicate tensor name or alias 'wpe.weight'"},
    {"unknown dtype", m_bad_tensor_dtype, DSCKPT_ECORRUPT, "unknown dtype"},
    {"element count past 2^48", m_huge_dim, DSCKPT_ECORRUPT, "overflows"},
    {"group out of range", m_group_oob, DSCKPT_ECORRUPT, "\"group\""},
    {"file name with ..", m_path_file, DSCKPT_ECORRUPT, "is not a safe name"},
    {"absolute file name", m_abs_file, DSCKPT_ECORRUPT, "is not a safe name"},
    {"duplicate file", m_dup_file, DSCKPT_ECORRUPT, "duplicate file"},
    {"chunk count", m_chunks, DSCKPT_ECORRUPT, "chunk digests listed"},
    {"bad hex digest", m_hex, DSCKPT_ECORRUPT, "64 hex digits"},
    {"chunk size 0", m_chunk0, DSCKPT_ECORRUPT, "chunk_size"},
    {"fragment tensor index", m_frag_tensor, DSCKPT_ECORRUPT, "tensor index 99999 out of range"},
    {"fragment file index", m_frag_file, DSCKPT_ECORRUPT, "file index 42 out of range"},
    {"fragment arity", m_frag_shape, DSCKPT_ECORRUPT, "[tensor, start, numel, file, offset]"},
    {"fragment past the file", m_frag_past_file, DSCKPT_ECORRUPT, "lies outside rank_00000"},
    {"fragment past the tensor", m_frag_past_tensor, DSCKPT_ECORRUPT, "lies outside its"},
    {"coverage gap", m_frag_gap, DSCKPT_ECORRUPT, "are in no fragment"},
    {"coverage overlap", m_frag_dup, DSCKPT_ECORRUPT, "are in two fragments"},
    {"unknown state", m_state_name, DSCKPT_ECORRUPT, "unknown state 'momentum'"},
    {"frozen tensor with fp32 state", m_frozen_fp32, DSCKPT_ECORRUPT, "is frozen but has fp32 fragments"},
};

static void test_catalogue(void) {
    for (size_t i = 0; i < sizeof mutations / sizeof mutations[0]; i++) {
        cJSON *root = cJSON_ParseWithLength(g_text, g_len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(root);
        mutations[i].edit(root);
        cJSON_DeleteItemFromObjectCaseSensitive(root, "manifest_sha256");
        char *body = cJSON_PrintUnformatted(root), *text = NULL;
        TU_ASSERT_OK(ds_manifest_seal(body, &text));
        free(body);
        dsckpt_status st = parse(text, NULL);
        if (st != mutations[i].want || !strstr(dsckpt_last_error(), mutations[i].msg))
            fprintf(stderr, "\n  %s: got %s: %s\n", mutations[i].what, dsckpt_status_name(st), dsckpt_last_error());
        CU_ASSERT_EQUAL(st, mutations[i].want);
        CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), mutations[i].msg));
        free(text);
        cJSON_Delete(root);
    }
}

static char *reseal(cJSON *root) {
    cJSON_DeleteItemFromObjectCaseSensitive(root, "manifest_sha256");
    char *body = cJSON_PrintUnformatted(root), *text = NULL;
    TU_ASSERT_OK(ds_manifest_seal(body, &text));
    free(body);
    return text;
}

static void test_model(void) {
    /* Absent (synth writes none): no model, and the rebuilt manifest has none either. */
    dsckpt_ckpt *c = NULL;
    char *text = strndup(g_text, g_len);
    TU_ASSERT_OK(parse(text, &c));
    CU_ASSERT_PTR_NULL(ds_ckpt_model(c));
    dsckpt_ckpt_free(c);
    c = NULL;
    free(text);
    /* Present: parsed into the accessor, and built back unchanged. */
    cJSON *root = cJSON_ParseWithLength(g_text, g_len);
    add_model(root);
    text = reseal(root);
    TU_ASSERT_OK(parse(text, &c));
    const ds_model_info *m = ds_ckpt_model(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL(m->architecture, "gpt2");
    CU_ASSERT_EQUAL(m->n_layer, 4);
    CU_ASSERT_EQUAL(m->n_head, 4);
    CU_ASSERT_EQUAL(m->n_embd, 128);
    CU_ASSERT_EQUAL(m->vocab_size, 256);
    CU_ASSERT_EQUAL(m->n_positions, 64);
    CU_ASSERT_TRUE(m->tie_word_embeddings);
    char *again = NULL;
    TU_ASSERT_OK(ds_ckpt_build_manifest(c, &again));
    /* The same value (key order, hence the self-digest, may differ). */
    cJSON *a = cJSON_Parse(text), *b = cJSON_Parse(again);
    cJSON_DeleteItemFromObject(a, "manifest_sha256");
    cJSON_DeleteItemFromObject(b, "manifest_sha256");
    CU_ASSERT(cJSON_Compare(a, b, 1));
    cJSON_Delete(a);
    cJSON_Delete(b);
    free(again);
    dsckpt_ckpt_free(c);
    cJSON_Delete(root);
    free(text);
}

/* reshard carries "model" through unchanged; a source without one gives none. */
static void test_model_reshard(void) {
    char *ck = tu_path(g_dir, "ck"), *mf = tu_path(ck, "global_step100/manifest.json");
    char *out1 = tu_path(g_dir, "rs-none"), *out2 = tu_path(g_dir, "rs-model");
    dsckpt_reshard_opts ro;
    dsckpt_reshard_opts_init(&ro);
    ro.world_size = 2;
    dsckpt_ckpt *c = NULL, *r = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
    TU_ASSERT_OK(dsckpt_reshard(c, out1, &ro));
    dsckpt_ckpt_free(c);
    TU_ASSERT_OK(dsckpt_ckpt_open(out1, NULL, &r));
    CU_ASSERT_PTR_NULL(ds_ckpt_model(r));
    dsckpt_ckpt_free(r);

    cJSON *root = cJSON_ParseWithLength(g_text, g_len);
    set_num(add_model(root), "n_layer", 7);
    char *text = reseal(root);
    CU_ASSERT_EQUAL_FATAL(tu_write(mf, text, strlen(text)), 0);
    TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
    TU_ASSERT_OK(dsckpt_reshard(c, out2, &ro));
    dsckpt_ckpt_free(c);
    TU_ASSERT_OK(dsckpt_ckpt_open(out2, NULL, &r));
    const ds_model_info *m = ds_ckpt_model(r);
    CU_ASSERT_PTR_NOT_NULL(m);
    if (m) {
        CU_ASSERT_EQUAL(m->n_layer, 7);
        CU_ASSERT_EQUAL(m->n_embd, 128);
    }
    CU_ASSERT_EQUAL(r->world_size, 2);
    dsckpt_ckpt_free(r);
    CU_ASSERT_EQUAL(tu_write(mf, g_text, g_len), 0); /* leave the shared fixture as it was */
    cJSON_Delete(root);
    free(text);
    free(ck);
    free(mf);
    free(out1);
    free(out2);
}

static void test_self_digest(void) {
    /* Any byte changed without re-sealing: a checksum failure naming the manifest. */
    char *text = strndup(g_text, g_len);
    char *p = strstr(text, "\"step\":100");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    p[8] = '2'; /* step 100 -> 200: still valid JSON, still a valid manifest */
    CU_ASSERT_EQUAL(parse(text, NULL), DSCKPT_ECHECKSUM);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "manifest.json: SHA-256 mismatch"));
    free(text);
    /* No digest at all (e.g. pretty-printed by an editor): refused. */
    cJSON *root = cJSON_ParseWithLength(g_text, g_len);
    char *pretty = cJSON_Print(root);
    CU_ASSERT_EQUAL(parse(pretty, NULL), DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "manifest_sha256"));
    free(pretty);
    cJSON_Delete(root);
}

static void test_not_json(void) {
    static const char *bad[] = {"", "{", "[1,2]", "null", "{\"format\": \"dsckpt\"", "\xff\xfe"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) CU_ASSERT_EQUAL(parse(bad[i], NULL), DSCKPT_ECORRUPT);
    /* Every truncation of a real manifest is refused without a crash. */
    for (size_t n = 0; n < g_len; n += 1 + n / 8) {
        char *t = strndup(g_text, n);
        CU_ASSERT_NOT_EQUAL(parse(t, NULL), DSCKPT_OK);
        free(t);
    }
}

int main(void) {
    if (setup()) return 2;
    static const tu_test tests[] = {{"build -> parse -> build round trip", test_round_trip},
                                    {"hostile manifest catalogue, one error each", test_catalogue},
                                    {"self-digest: edits and a missing digest refused", test_self_digest},
                                    {"model object: absent, present, round trip", test_model},
                                    {"model object: carried by reshard", test_model_reshard},
                                    {"not JSON, truncations", test_not_json},
                                    {NULL, NULL}};
    int rc = tu_main("manifest", tests);
    free(g_text);
    tu_rmtree(g_dir);
    free(g_dir);
    return rc;
}
