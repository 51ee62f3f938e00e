/*
 * test_rt_engine_load.c — dstrain's checkpoint load (rt_engine_load) on one rank
 * (self collectives) refuses step counts in the manifest's "state" that are not
 * whole numbers from 0 to 2^53 (1e300, -5, 2.5), as ECORRUPT, instead of
 * converting them to uint64 (undefined behaviour, found by fuzz_engine_load), and
 * still loads good ones (the engine continues at that step). A load that finds a
 * damaged partition leaves the step counters as they were and hands back no state,
 * so the load after it (--resume auto's next candidate) is the same as a first one.
 */
#include "cast.h"
#include "engine.h"
#include "engine_ckpt.h"
#include "manifest.h"
#include "stream.h"
#include "tutil.h"

#include <stdlib.h>
#include <string.h>

static const char CFG[] =
    "{\"train_batch_size\": 2, \"train_micro_batch_size_per_gpu\": 2, \"bf16\": {\"enabled\": true},"
    " \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.003}}, \"zero_optimization\": {\"stage\": 1}}";

static rt_config g_cfg;
static rt_comm *g_comm;
static rt_model *g_model;
static rt_engine *g_e;
static char *g_root, *g_manifest;
static uint8_t *g_orig;
static size_t g_orig_len;

/* Rewrites the saved manifest with state.engine.applied_steps = `applied` (JSON
 * text; NULL removes state.engine) and param_groups[0].step = `pg_step` (NULL:
 * unchanged), sealed again. */
static void edit_manifest(const char *applied, const char *pg_step) {
    cJSON *m = cJSON_ParseWithLength((const char *)g_orig, g_orig_len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    cJSON_DeleteItemFromObjectCaseSensitive(m, "manifest_sha256");
    cJSON *state = cJSON_GetObjectItemCaseSensitive(m, "state");
    if (applied) {
        cJSON *eng = cJSON_GetObjectItemCaseSensitive(state, "engine");
        cJSON_ReplaceItemInObjectCaseSensitive(eng, "applied_steps", cJSON_Parse(applied));
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(state, "engine");
    }
    if (pg_step) {
        cJSON *pg = cJSON_GetArrayItem(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(state, "optimizer"), "param_groups"), 0);
        cJSON_ReplaceItemInObjectCaseSensitive(pg, "step", cJSON_Parse(pg_step));
    }
    char *text = cJSON_PrintUnformatted(m), *sealed = NULL;
    cJSON_Delete(m);
    TU_ASSERT_OK(ds_manifest_seal(text, &sealed));
    CU_ASSERT_EQUAL(tu_write(g_manifest, sealed, strlen(sealed)), 0);
    free(text);
    free(sealed);
}

static int setup(void) {
    rt_model_cfg mc = {.vocab_size = 256, .n_ctx = 8, .n_layer = 1, .n_head = 1, .n_embd = 8};
    if (rt_config_parse(CFG, sizeof CFG - 1, "test config", NULL, 1, &g_cfg) || rt_comm_open_self(&g_comm) ||
        rt_model_create(&mc, 2, 8, &g_model) || rt_engine_create(&g_cfg, g_comm, g_model, 1, &g_e))
        return 1;
    g_root = tu_mkdtemp();
    rt_saver *s = NULL;
    if (rt_saver_create(g_e, false, &s) || rt_saver_start(s, g_root, "global_step3", NULL, NULL, NULL)) return 1;
    rt_saver_free(s);
    g_manifest = tu_path(g_root, "global_step3/manifest.json");
    g_orig = tu_read(g_manifest, &g_orig_len);
    return g_orig == NULL;
}

static void test_bad_applied_steps(void) {
    static const char *bad[] = {"1e300", "-5", "2.5", "18446744073709551616"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        edit_manifest(bad[i], NULL);
        CU_ASSERT_EQUAL(rt_engine_load(g_e, g_root, NULL, NULL, NULL), DSCKPT_ECORRUPT);
        CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "applied_steps"));
    }
}

static void test_bad_optimizer_step(void) {
    edit_manifest(NULL, "1e300");
    CU_ASSERT_EQUAL(rt_engine_load(g_e, g_root, NULL, NULL, NULL), DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "param_groups[0].step"));
}

static void test_good_steps(void) {
    edit_manifest("7", NULL);
    TU_ASSERT_OK(rt_engine_load(g_e, g_root, NULL, NULL, NULL));
    CU_ASSERT_EQUAL(rt_engine_steps(g_e), 0); /* global_steps is still 0 as saved */
    edit_manifest(NULL, "9");
    TU_ASSERT_OK(rt_engine_load(g_e, g_root, NULL, NULL, NULL));
    CU_ASSERT_EQUAL(rt_engine_steps(g_e), 9);
}

static void test_failed_load_changes_no_counter(void) {
    edit_manifest(NULL, "9");
    TU_ASSERT_OK(rt_engine_load(g_e, g_root, NULL, NULL, NULL));
    CU_ASSERT_EQUAL(rt_engine_steps(g_e), 9);
    /* The counters of the next load are valid; one of its partitions is damaged. */
    edit_manifest(NULL, "4");
    char *rank = tu_path(g_root, "global_step3/rank_00000.safetensors");
    size_t len = 0;
    uint8_t *orig = tu_read(rank, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(orig);
    CU_ASSERT_EQUAL(tu_flip_bit(rank, len - 5, 3), 0);
    cJSON *state = NULL;
    dsckpt_status st = rt_engine_load(g_e, g_root, NULL, &state, NULL);
    CU_ASSERT(st == DSCKPT_ECHECKSUM || st == DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "rank_00000.safetensors"));
    CU_ASSERT_PTR_NULL(state);
    CU_ASSERT_EQUAL(rt_engine_steps(g_e), 9);
    /* Mended, it loads, and the engine continues at its step. */
    CU_ASSERT_EQUAL(tu_write(rank, orig, len), 0);
    TU_ASSERT_OK(rt_engine_load(g_e, g_root, NULL, &state, NULL));
    CU_ASSERT_PTR_NOT_NULL(state);
    CU_ASSERT_EQUAL(rt_engine_steps(g_e), 4);
    cJSON_Delete(state);
    free(orig);
    free(rank);
}

/* A fresh engine's fp32 master is the initialisation read back through bf16, in
 * model layout, however it was drawn: at stage 0 on one rank and at stage 1 (each
 * straight into the master partitions), with a group of more than 1M elements, so
 * that the round trip through bf16 goes in several pieces. */
static void test_init_master(void) {
    rt_model_cfg mc = {.vocab_size = 8192, .n_ctx = 8, .n_layer = 1, .n_head = 1, .n_embd = 256};
    rt_model *m = NULL;
    TU_ASSERT_OK(rt_model_create(&mc, 2, 8, &m));
    uint64_t n = rt_model_numel(m);
    float *flat = malloc(n * sizeof *flat);
    uint16_t *h = malloc(n * sizeof *h);
    CU_ASSERT_FATAL(flat && h);
    TU_ASSERT_OK(rt_model_init(&mc, flat, 7));
    ds_cast_f32_to_bf16(flat, h, n);
    ds_cast_bf16_to_f32(h, flat, n);
    uint8_t want[DS_SHA256_LEN], got[DS_SHA256_LEN];
    TU_ASSERT_OK(ds_sha256(flat, n * sizeof *flat, want));
    for (int stage = 0; stage <= 1; stage++) {
        char text[256];
        snprintf(text, sizeof text,
                 "{\"train_batch_size\": 2, \"bf16\": {\"enabled\": true}, \"optimizer\": {\"type\": \"AdamW\"},"
                 " \"zero_optimization\": {\"stage\": %d}}",
                 stage);
        rt_config cfg;
        rt_engine *e = NULL;
        TU_ASSERT_OK(rt_config_parse(text, strlen(text), "test config", NULL, 1, &cfg));
        TU_ASSERT_OK(rt_engine_create(&cfg, g_comm, m, 7, &e));
        memset(got, 0, sizeof got);
        TU_ASSERT_OK(rt_engine_digest(e, false, got));
        CU_ASSERT_EQUAL(memcmp(got, want, sizeof want), 0);
        rt_engine_free(e);
        rt_config_free(&cfg);
    }
    free(flat);
    free(h);
    rt_model_free(m);
}

int main(void) {
    if (setup()) {
        fprintf(stderr, "test_rt_engine_load: setup failed: %s\n", dsckpt_last_error());
        return 1;
    }
    static const tu_test tests[] = {{"bad applied_steps", test_bad_applied_steps},
                                    {"bad optimizer step", test_bad_optimizer_step},
                                    {"good steps", test_good_steps},
                                    {"a failed load changes no counter", test_failed_load_changes_no_counter},
                                    {"a fresh master: the initialisation through bf16", test_init_master},
                                    {NULL, NULL}};
    int rc = tu_main("rt_engine_load", tests);
    rt_engine_free(g_e);
    rt_model_free(g_model);
    rt_comm_close(g_comm);
    rt_config_free(&g_cfg);
    tu_rmtree(g_root);
    free(g_root);
    free(g_manifest);
    free(g_orig);
    return rc;
}
