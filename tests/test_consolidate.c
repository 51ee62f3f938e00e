/*
 * test_consolidate.c — consolidate of synth checkpoints, for every stage and
 * several world sizes and dtypes, equals the generator's values (fp32 bitwise,
 * bf16/fp16 the round-to-nearest-even cast of them); sharded HF output, tied
 * weights and --exclude-frozen.
 */
#include "cast.h"
#include "ckpt.h"
#include "fsutil.h"
#include "safetensors.h"
#include "synth.h"
#include "tutil.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PARAMS 30000
#define SEED 7

/* Checks every tensor of a consolidated file against the synth rule. Returns the
 * number of tensors checked. */
static size_t check_file(const char *path, const ds_tensor *ts, size_t nt, dsckpt_dtype out, dsckpt_dtype train,
                         uint64_t seed) {
    st_header *h = NULL;
    TU_ASSERT_OK(st_read_file(path, &h));
    CU_ASSERT_STRING_EQUAL(st_meta_get(h, "format"), "pt");
    int fd = open(path, O_RDONLY);
    CU_ASSERT_FATAL(fd >= 0);
    size_t checked = 0;
    for (size_t i = 0; i < h->n; i++) {
        const st_tensor *st = &h->tensors[i];
        size_t t = nt;
        for (size_t k = 0; k < nt; k++)
            if (!strcmp(ts[k].name, st->name)) t = k;
        CU_ASSERT_FATAL(t < nt);
        CU_ASSERT_EQUAL(st->numel, ts[t].numel);
        CU_ASSERT_EQUAL(st->ndim, ts[t].ndim);
        for (int d = 0; d < st->ndim; d++) CU_ASSERT_EQUAL(st->shape[d], ts[t].shape[d]);
        /* frozen keep their dtype, except that fp32 output upcasts 16-bit ones */
        bool upcast = !ts[t].trainable && out == DSCKPT_F32 && train != DSCKPT_F32;
        dsckpt_dtype want_dt = ts[t].trainable ? out : upcast ? DSCKPT_F32 : train;
        CU_ASSERT_EQUAL(st->dtype, want_dt);
        size_t es = dsckpt_dtype_size(st->dtype);
        uint8_t *buf = malloc(st->numel * es + 1);
        CU_ASSERT_EQUAL(pread(fd, buf, st->numel * es, (off_t)(h->data_start + st->begin)), (ssize_t)(st->numel * es));
        ds_state s = ts[t].trainable ? DS_ST_FP32 : DS_ST_W16;
        size_t bad = 0;
        for (uint64_t e = 0; e < st->numel; e++) {
            float v = ds_synth_value(seed, (uint32_t)t, s, e);
            if (upcast) { /* the stored 16-bit value, widened exactly */
                uint16_t hv = train == DSCKPT_BF16 ? ds_f32_to_bf16_ref(v) : ds_f32_to_f16_ref(v);
                if (train == DSCKPT_BF16) ds_cast_bf16_to_f32_ref(&hv, &v, 1);
                else ds_cast_f16_to_f32_ref(&hv, &v, 1);
            }
            uint32_t want32;
            memcpy(&want32, &v, 4);
            if (st->dtype == DSCKPT_F32) {
                uint32_t got;
                memcpy(&got, buf + 4 * e, 4);
                bad += got != want32;
            } else {
                uint16_t got, want = st->dtype == DSCKPT_BF16 ? ds_f32_to_bf16_ref(v) : ds_f32_to_f16_ref(v);
                memcpy(&got, buf + 2 * e, 2);
                bad += got != want;
            }
        }
        CU_ASSERT_EQUAL(bad, 0);
        free(buf);
        checked++;
    }
    close(fd);
    st_header_free(h);
    return checked;
}

static void test_every_stage_and_world_size(void) {
    char *dir = tu_mkdtemp();
    ds_tensor *ts;
    size_t nt;
    static const int worlds[] = {1, 2, 3, 5, 8};
    static const dsckpt_dtype trains[] = {DSCKPT_BF16, DSCKPT_F16, DSCKPT_F32};
    static const dsckpt_dtype outs[] = {DSCKPT_F32, DSCKPT_BF16, DSCKPT_F16};
    int run = 0;
    for (int stage = 0; stage <= 3; stage++) {
        for (size_t wi = 0; wi < sizeof worlds / sizeof worlds[0]; wi++) {
            dsckpt_dtype train = trains[(stage + wi) % 3];
            TU_ASSERT_OK(ds_synth_tensors(PARAMS, train, &ts, &nt));
            char name[64];
            snprintf(name, sizeof name, "ck%d", run++);
            char *ck = tu_path(dir, name);
            dsckpt_synth_opts so;
            dsckpt_synth_opts_init(&so);
            so.params = PARAMS;
            so.world_size = worlds[wi];
            so.zero_stage = stage;
            so.dtype = train;
            so.seed = SEED + (uint64_t)run;
            TU_ASSERT_OK(dsckpt_synth(ck, &so));
            dsckpt_ckpt *c = NULL;
            TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
            for (size_t oi = 0; oi < 3; oi++) {
                char *out = tu_path(dir, "out.safetensors");
                dsckpt_consolidate_opts co;
                dsckpt_consolidate_opts_init(&co);
                co.dtype = outs[oi];
                co.force = 1;
                co.threads = 1 + (int)(oi % 2);
                TU_ASSERT_OK(dsckpt_consolidate(c, out, &co));
                CU_ASSERT_EQUAL(check_file(out, ts, nt, outs[oi], train, so.seed), nt);
                free(out);
            }
            dsckpt_ckpt_free(c);
            ds_synth_tensors_free(ts, nt);
            free(ck);
        }
    }
    tu_rmtree(dir);
    free(dir);
}

static void test_sharded_hf_layout(void) {
    char *dir = tu_mkdtemp();
    char *ck = tu_path(dir, "ck"), *out = tu_path(dir, "hf");
    dsckpt_synth_opts so;
    dsckpt_synth_opts_init(&so);
    so.params = PARAMS;
    so.world_size = 3;
    so.zero_stage = 3;
    so.seed = 11;
    TU_ASSERT_OK(dsckpt_synth(ck, &so));
    ds_tensor *ts;
    size_t nt;
    TU_ASSERT_OK(ds_synth_tensors(PARAMS, DSCKPT_BF16, &ts, &nt));
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
    dsckpt_consolidate_opts co;
    dsckpt_consolidate_opts_init(&co);
    co.max_shard_size = 10000; /* bytes: forces several shards */
    TU_ASSERT_OK(dsckpt_consolidate(c, out, &co));
    char *idx = tu_path(out, "model.safetensors.index.json");
    size_t len;
    uint8_t *text = tu_read(idx, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    cJSON *j = cJSON_ParseWithLength((const char *)text, len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    cJSON *wm = cJSON_GetObjectItem(j, "weight_map");
    CU_ASSERT_EQUAL(cJSON_GetArraySize(wm), (int)nt);
    uint64_t total = 0;
    for (size_t i = 0; i < nt; i++) total += ts[i].numel * 2;
    CU_ASSERT_EQUAL((uint64_t)cJSON_GetObjectItem(cJSON_GetObjectItem(j, "metadata"), "total_size")->valuedouble, total);
    /* Every shard named in the map exists, holds exactly the tensors mapped to it,
     * respects the limit unless it is a single oversized tensor, and has the values. */
    int nshards = 0;
    for (int k = 1; k < 1000; k++) {
        char name[96];
        snprintf(name, sizeof name, "model-%05d-of-", k);
        int found = 0;
        char fname[128] = "";
        for (const cJSON *e = wm->child; e; e = e->next)
            if (!strncmp(e->valuestring, name, strlen(name))) {
                found++;
                snprintf(fname, sizeof fname, "%s", e->valuestring);
            }
        if (!found) break;
        nshards++;
        char *p = tu_path(out, fname);
        st_header *h = NULL;
        TU_ASSERT_OK(st_read_file(p, &h));
        CU_ASSERT_EQUAL(h->n, (size_t)found);
        uint64_t data = h->file_size - h->data_start;
        CU_ASSERT(data <= co.max_shard_size || h->n == 1);
        st_header_free(h);
        CU_ASSERT_EQUAL(check_file(p, ts, nt, DSCKPT_BF16, DSCKPT_BF16, so.seed), (size_t)found);
        free(p);
    }
    CU_ASSERT(nshards > 1);
    char total_name[96];
    snprintf(total_name, sizeof total_name, "-of-%05d.safetensors", nshards);
    CU_ASSERT_PTR_NOT_NULL(strstr(cJSON_GetObjectItem(wm, "wte.weight")->valuestring, total_name));
    /* The tied alias is not a weight_map entry (no tensor of that name exists). */
    CU_ASSERT_PTR_NULL(cJSON_GetObjectItem(wm, "lm_head.weight"));
    cJSON_Delete(j);
    free(text);
    free(idx);
    dsckpt_ckpt_free(c);
    ds_synth_tensors_free(ts, nt);
    tu_rmtree(dir);
    free(dir);
    free(ck);
    free(out);
}

static void test_single_dir_tied_and_frozen(void) {
    char *dir = tu_mkdtemp();
    char *ck = tu_path(dir, "ck"), *out = tu_path(dir, "hf"), *out2 = tu_path(dir, "nofrozen.safetensors");
    dsckpt_synth_opts so;
    dsckpt_synth_opts_init(&so);
    so.params = PARAMS;
    so.world_size = 4;
    so.zero_stage = 1;
    TU_ASSERT_OK(dsckpt_synth(ck, &so));
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
    dsckpt_consolidate_opts co;
    dsckpt_consolidate_opts_init(&co);
    TU_ASSERT_OK(dsckpt_consolidate(c, out, &co));
    char *single = tu_path(out, "model.safetensors"), *idx = tu_path(out, "model.safetensors.index.json");
    CU_ASSERT(tu_exists(single));
    CU_ASSERT(!tu_exists(idx)); /* one shard: no index, as Hugging Face writes it */
    st_header *h = NULL;
    TU_ASSERT_OK(st_read_file(single, &h));
    CU_ASSERT_PTR_NOT_NULL(st_find(h, "wte.weight"));
    CU_ASSERT_PTR_NULL(st_find(h, "lm_head.weight")); /* tied: written once */
    CU_ASSERT_STRING_EQUAL(st_meta_get(h, "alias.lm_head.weight"), "wte.weight");
    CU_ASSERT_PTR_NOT_NULL(st_find(h, "wpe.weight"));
    st_header_free(h);
    co.exclude_frozen = 1;
    TU_ASSERT_OK(dsckpt_consolidate(c, out2, &co));
    TU_ASSERT_OK(st_read_file(out2, &h));
    CU_ASSERT_PTR_NULL(st_find(h, "wpe.weight"));
    CU_ASSERT_EQUAL(h->n, c->ntensors - 1);
    st_header_free(h);
    /* Refuses to replace without force. */
    CU_ASSERT_EQUAL(dsckpt_consolidate(c, out2, &co), DSCKPT_EEXIST);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "not replaced unless forced"));
    CU_ASSERT_EQUAL(dsckpt_consolidate(c, out, &co), DSCKPT_EEXIST);
    co.dtype = DSCKPT_I32;
    CU_ASSERT_EQUAL(dsckpt_consolidate(c, out2, &co), DSCKPT_EINVAL);
    dsckpt_ckpt_free(c);
    free(single);
    free(idx);
    tu_rmtree(dir);
    free(dir);
    free(ck);
    free(out);
    free(out2);
}

int main(void) {
    static const tu_test tests[] = {
        {"consolidate = synth values, stages 0-3 x W 1,2,3,5,8 x fp32/bf16/fp16", test_every_stage_and_world_size},
        {"HF sharded layout: shards, index, limit, values", test_sharded_hf_layout},
        {"single-shard directory, tied weights once, --exclude-frozen, no overwrite", test_single_dir_tied_and_frozen},
        {NULL, NULL}};
    return tu_main("consolidate", tests);
}
