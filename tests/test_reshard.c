/*
 * test_reshard.c — reshard keeps every state bit for bit: W -> M -> W gives the
 * original files byte for byte (same manifest, same rank files), every state of
 * the M-rank checkpoint equals the generator's values, stage changes preserve
 * values, and non-tensor state is carried over.
 */
#include "cast.h"
#include "ckpt.h"
#include "fsutil.h"
#include "synth.h"
#include "tutil.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define PARAMS 25000

static void synth(const char *path, int W, int stage, dsckpt_dtype dt, uint64_t seed) {
    dsckpt_synth_opts so;
    dsckpt_synth_opts_init(&so);
    so.params = PARAMS;
    so.world_size = W;
    so.zero_stage = stage;
    so.dtype = dt;
    so.seed = seed;
    TU_ASSERT_OK(dsckpt_synth(path, &so));
}

static void reshard(const char *src, const char *dst, int M, int stage) {
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(src, NULL, &c));
    dsckpt_reshard_opts ro;
    dsckpt_reshard_opts_init(&ro);
    ro.world_size = M;
    ro.zero_stage = stage;
    TU_ASSERT_OK(dsckpt_reshard(c, dst, &ro));
    dsckpt_ckpt_free(c);
}

/* Every element of every applicable state equals the synth rule. */
static void check_values(const char *path, uint64_t seed, int want_W, int want_stage) {
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(path, NULL, &c));
    CU_ASSERT_EQUAL(c->world_size, want_W);
    CU_ASSERT_EQUAL(c->stage, want_stage);
    CU_ASSERT_EQUAL(c->nfiles, want_stage == 0 ? 1u : (size_t)want_W);
    ds_fdset fs;
    TU_ASSERT_OK(ds_fdset_open(c, &fs));
    size_t bad = 0, checked = 0;
    for (size_t t = 0; t < c->ntensors; t++) {
        for (int s = 0; s < DS_NSTATES; s++) {
            if (!ds_state_applies(&c->tensors[t], (ds_state)s)) continue;
            dsckpt_dtype dt = ds_ckpt_state_dtype(c, (ds_state)s, (uint32_t)t);
            size_t es = dsckpt_dtype_size(dt);
            uint64_t n = c->tensors[t].numel;
            uint8_t *buf = malloc(n * es + 1);
            TU_ASSERT_OK(ds_ckpt_read(c, &fs, (ds_state)s, (uint32_t)t, 0, n, buf));
            for (uint64_t e = 0; e < n; e++) {
                float v = ds_synth_value(seed, (uint32_t)t, (ds_state)s, e);
                if (dt == DSCKPT_F32) {
                    bad += memcmp(buf + 4 * e, &v, 4) != 0;
                } else {
                    uint16_t want = dt == DSCKPT_BF16 ? ds_f32_to_bf16_ref(v) : ds_f32_to_f16_ref(v);
                    bad += memcmp(buf + 2 * e, &want, 2) != 0;
                }
            }
            checked += n;
            free(buf);
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(checked > 3 * PARAMS / 2);
    ds_fdset_close(&fs);
    dsckpt_ckpt_free(c);
}

/* Compares every file of the tag directories and the save roots' latest. */
static void assert_identical(const char *root_a, const char *root_b, int nfiles) {
    char *la = tu_path(root_a, "latest"), *lb = tu_path(root_b, "latest");
    CU_ASSERT(tu_same_file(la, lb));
    char rel[128];
    snprintf(rel, sizeof rel, "global_step100/manifest.json");
    char *ma = tu_path(root_a, rel), *mb = tu_path(root_b, rel);
    CU_ASSERT(tu_same_file(ma, mb));
    for (int r = 0; r < nfiles; r++) {
        snprintf(rel, sizeof rel, "global_step100/rank_%05d.safetensors", r);
        char *fa = tu_path(root_a, rel), *fb = tu_path(root_b, rel);
        CU_ASSERT(tu_same_file(fa, fb));
        free(fa);
        free(fb);
    }
    free(la);
    free(lb);
    free(ma);
    free(mb);
}

static void test_round_trip_bit_identical(void) {
    char *dir = tu_mkdtemp();
    static const struct { int W, M, stage; } cases[] = {
        {4, 2, 1}, {4, 3, 2}, {2, 5, 3}, {3, 1, 2}, {1, 8, 3}, {7, 4, 1}, {2, 2, 3}, {4, 1, 0}, {5, 17, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *a = tu_path(dir, "a"), *b = tu_path(dir, "b"), *c = tu_path(dir, "c");
        uint64_t seed = 100 + i;
        synth(a, cases[i].W, cases[i].stage, i % 2 ? DSCKPT_F16 : DSCKPT_BF16, seed);
        reshard(a, b, cases[i].M, -1);
        check_values(b, seed, cases[i].M, cases[i].stage);
        reshard(b, c, cases[i].W, -1);
        assert_identical(a, c, cases[i].stage == 0 ? 1 : cases[i].W);
        /* trainer_state.json travels with the checkpoint. */
        char *ta = tu_path(a, "trainer_state.json"), *tc = tu_path(c, "trainer_state.json");
        CU_ASSERT(tu_same_file(ta, tc));
        free(ta);
        free(tc);
        tu_rmtree(a);
        tu_rmtree(b);
        tu_rmtree(c);
        free(a);
        free(b);
        free(c);
    }
    tu_rmtree(dir);
    free(dir);
}

static void test_stage_change(void) {
    char *dir = tu_mkdtemp();
    char *a = tu_path(dir, "a"), *b = tu_path(dir, "b"), *c = tu_path(dir, "c"), *d = tu_path(dir, "d");
    synth(a, 4, 3, DSCKPT_BF16, 5);
    reshard(a, b, 2, 2);   /* W=4 stage 3 -> W=2 stage 2 */
    check_values(b, 5, 2, 2);
    reshard(b, c, 3, 1);   /* -> W=3 stage 1 */
    check_values(c, 5, 3, 1);
    reshard(c, d, 4, 3);   /* back to W=4 stage 3: identical to the original */
    assert_identical(a, d, 4);
    tu_rmtree(dir);
    free(dir);
    free(a);
    free(b);
    free(c);
    free(d);
}

static void test_non_tensor_state_carried(void) {
    char *dir = tu_mkdtemp();
    char *a = tu_path(dir, "a"), *b = tu_path(dir, "b");
    synth(a, 2, 2, DSCKPT_F16, 9);
    reshard(a, b, 3, -1);
    dsckpt_ckpt *ca = NULL, *cb = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(a, NULL, &ca));
    TU_ASSERT_OK(dsckpt_ckpt_open(b, NULL, &cb));
    static const char *keys[] = {"state", "ds_config", "metrics"};
    for (int i = 0; i < 3; i++) {
        cJSON *x = cJSON_GetObjectItem(ca->manifest, keys[i]), *y = cJSON_GetObjectItem(cb->manifest, keys[i]);
        CU_ASSERT_PTR_NOT_NULL(x);
        CU_ASSERT(cJSON_Compare(x, y, 1));
    }
    /* The fp16 loss scaler state is among it. */
    CU_ASSERT_PTR_NOT_NULL(cJSON_GetObjectItem(cJSON_GetObjectItem(cb->manifest, "state"), "loss_scaler"));
    CU_ASSERT_EQUAL(ca->step, cb->step);
    CU_ASSERT_STRING_EQUAL(ca->tag, cb->tag);
    CU_ASSERT_STRING_EQUAL(ca->train_dtype, cb->train_dtype);
    /* Argument errors. */
    dsckpt_reshard_opts ro;
    dsckpt_reshard_opts_init(&ro);
    ro.world_size = 0;
    CU_ASSERT_EQUAL(dsckpt_reshard(ca, b, &ro), DSCKPT_EINVAL);
    ro.world_size = 2;
    CU_ASSERT_EQUAL(dsckpt_reshard(ca, b, &ro), DSCKPT_EEXIST);
    ro.zero_stage = 4;
    ro.force = 1;
    CU_ASSERT_EQUAL(dsckpt_reshard(ca, b, &ro), DSCKPT_EINVAL);
    dsckpt_ckpt_free(ca);
    dsckpt_ckpt_free(cb);
    tu_rmtree(dir);
    free(dir);
    free(a);
    free(b);
}

int main(void) {
    static const tu_test tests[] = {{"W -> M -> W is byte-identical; M-rank states = synth values",
                                     test_round_trip_bit_identical},
                                    {"stage 3 -> 2 -> 1 -> 3 with world-size changes", test_stage_change},
                                    {"non-tensor state carried, argument errors", test_non_tensor_state_carried},
                                    {NULL, NULL}};
    return tu_main("reshard", tests);
}
