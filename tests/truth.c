/*
 * truth.c — the DeepSpeed fixtures' true values as a test oracle (truth.h).
 */
#include "truth.h"

#include "cast.h"
#include "tutil.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void tt_open(const char *path, tt_file *f) {
    TU_ASSERT_OK(st_read_file(path, &f->h));
    f->fd = open(path, O_RDONLY);
    CU_ASSERT_FATAL(f->fd >= 0);
}

void tt_close(tt_file *f) {
    st_header_free(f->h);
    close(f->fd);
}

uint8_t *tt_bytes(const tt_file *f, const char *name, const st_tensor **out) {
    const st_tensor *t = st_find(f->h, name);
    if (out) *out = t;
    if (!t) return NULL;
    uint8_t *b = malloc(t->end - t->begin + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_FATAL(pread(f->fd, b, t->end - t->begin, (off_t)(f->h->data_start + t->begin)) ==
                    (ssize_t)(t->end - t->begin));
    return b;
}

/* One output tensor (gt, bytes have) against its truth entry tn (tt, bytes
 * want): trainable fp32 values cast to the output dtype `out` by
 * round-to-nearest-even; 16-bit frozen/buffer tensors upcast exactly under
 * --dtype fp32; anything else byte for byte. */
static void truth_compare(const char *fx, const char *tn, const st_tensor *tt, const st_tensor *gt,
                          const uint8_t *want, const uint8_t *have, bool is_fp32, dsckpt_dtype out) {
    CU_ASSERT_EQUAL(gt->ndim, tt->ndim);
    for (int d = 0; d < tt->ndim && d < gt->ndim; d++) CU_ASSERT_EQUAL(gt->shape[d], tt->shape[d]);
    if (is_fp32 && out != DSCKPT_F32) {
        CU_ASSERT_EQUAL(gt->dtype, out);
        size_t bad = 0;
        for (uint64_t e = 0; e < tt->numel; e++) {
            float v;
            memcpy(&v, want + 4 * e, 4);
            uint16_t w = out == DSCKPT_BF16 ? ds_f32_to_bf16_ref(v) : ds_f32_to_f16_ref(v), h;
            memcpy(&h, have + 2 * e, 2);
            bad += w != h;
        }
        CU_ASSERT_EQUAL(bad, 0);
    } else if (out == DSCKPT_F32 && (tt->dtype == DSCKPT_BF16 || tt->dtype == DSCKPT_F16)) {
        /* frozen / buffer: --dtype fp32 upcasts 16-bit tensors exactly (as zero_to_fp32) */
        CU_ASSERT_EQUAL(gt->dtype, DSCKPT_F32);
        size_t bad = 0;
        for (uint64_t e = 0; e < tt->numel; e++) {
            uint16_t h;
            float w, g;
            memcpy(&h, want + 2 * e, 2);
            if (tt->dtype == DSCKPT_BF16) ds_cast_bf16_to_f32_ref(&h, &w, 1);
            else ds_cast_f16_to_f32_ref(&h, &w, 1);
            memcpy(&g, have + 4 * e, 4);
            bad += memcmp(&w, &g, 4) != 0;
        }
        CU_ASSERT_EQUAL(bad, 0);
    } else {
        CU_ASSERT_EQUAL(gt->dtype, tt->dtype);
        bool same = gt->end - gt->begin == tt->end - tt->begin &&
                    memcmp(want, have, tt->end - tt->begin) == 0;
        if (!same) fprintf(stderr, "\n  %s: '%s' differs from the truth\n", fx, tn);
        CU_ASSERT(same);
    }
}

/* Tied aliases recorded in got as in the truth's metadata, with no tensor of
 * their own. */
static void truth_check_aliases(const tt_file *truth, const tt_file *got) {
    cJSON *al = cJSON_Parse(st_meta_get(truth->h, "aliases"));
    for (cJSON *e = al ? al->child : NULL; e; e = e->next) {
        char key[300];
        snprintf(key, sizeof key, "alias.%s", e->string);
        const char *v = st_meta_get(got->h, key);
        CU_ASSERT_PTR_NOT_NULL(v);
        if (v) CU_ASSERT_STRING_EQUAL(v, e->valuestring);
        CU_ASSERT_PTR_NULL(st_find(got->h, e->string));
    }
    cJSON_Delete(al);
}

void tt_check_consolidated(const char *fx, const char *truth_path, const char *outpath, dsckpt_dtype out,
                           bool frozen_expected) {
    tt_file truth, got;
    tt_open(truth_path, &truth);
    tt_open(outpath, &got);
    size_t expected = 0;
    for (size_t i = 0; i < truth.h->n; i++) {
        const char *tn = truth.h->tensors[i].name;
        const char *slash = strchr(tn, '/');
        CU_ASSERT_FATAL(slash != NULL);
        size_t plen = (size_t)(slash - tn);
        const char *name = slash + 1;
        bool is_fp32 = !strncmp(tn, "fp32", plen) && plen == 4;
        bool is_frozen = !strncmp(tn, "frozen", plen) && plen == 6;
        bool is_buffer = !strncmp(tn, "buffer", plen) && plen == 6;
        if (!is_fp32 && !is_frozen && !is_buffer) continue;
        if (is_frozen && !frozen_expected) {
            CU_ASSERT_PTR_NULL(st_find(got.h, name));
            continue;
        }
        expected++;
        const st_tensor *tt, *gt;
        uint8_t *want = tt_bytes(&truth, tn, &tt), *have = tt_bytes(&got, name, &gt);
        CU_ASSERT_PTR_NOT_NULL_FATAL(want); /* tn is one of truth's own names */
        if (!have) {
            fprintf(stderr, "\n  %s: '%s' missing from the output\n", fx, name);
            CU_FAIL("tensor missing");
            free(want);
            continue;
        }
        truth_compare(fx, tn, tt, gt, want, have, is_fp32, out);
        free(want);
        free(have);
    }
    /* Nothing extra, and tied aliases recorded as in the truth's metadata. */
    CU_ASSERT_EQUAL(got.h->n, expected);
    truth_check_aliases(&truth, &got);
    tt_close(&truth);
    tt_close(&got);
}

void tt_check_states(const char *fx, int M, const dsckpt_ckpt *n, const tt_file *truth) {
    ds_fdset fs;
    TU_ASSERT_OK(ds_fdset_open(n, &fs));
    size_t checked = 0;
    for (uint32_t t = 0; t < n->ntensors; t++) {
        if (!n->tensors[t].trainable) continue;
        static const ds_state sts[] = {DS_ST_FP32, DS_ST_EXP_AVG, DS_ST_EXP_AVG_SQ};
        static const char *pre[] = {"fp32/", "exp_avg/", "exp_avg_sq/"};
        for (int s = 0; s < 3; s++) {
            char key[300];
            snprintf(key, sizeof key, "%s%s", pre[s], n->tensors[t].name);
            const st_tensor *tt;
            uint8_t *want = tt_bytes(truth, key, &tt);
            CU_ASSERT_PTR_NOT_NULL_FATAL(want);
            uint8_t *have = malloc(n->tensors[t].numel * 4 + 1);
            TU_ASSERT_OK(ds_ckpt_read(n, &fs, sts[s], t, 0, n->tensors[t].numel, have));
            bool same = tt->end - tt->begin == n->tensors[t].numel * 4 && memcmp(want, have, n->tensors[t].numel * 4) == 0;
            if (!same) fprintf(stderr, "\n  %s M=%d: %s differs\n", fx, M, key);
            CU_ASSERT(same);
            checked++;
            free(want);
            free(have);
        }
    }
    CU_ASSERT(checked > 0);
    ds_fdset_close(&fs);
}

void tt_check_reshard_states(const char *fx, dsckpt_ckpt *c, const tt_file *truth, const char *dir, int M) {
    char *out = tu_path(dir, "native");
    dsckpt_reshard_opts ro;
    dsckpt_reshard_opts_init(&ro);
    ro.world_size = M;
    ro.force = 1;
    TU_ASSERT_OK(dsckpt_reshard(c, out, &ro));
    dsckpt_ckpt *n = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(out, NULL, &n));
    CU_ASSERT_EQUAL(n->world_size, M);
    CU_ASSERT_EQUAL(n->stage, c->stage);
    tt_check_states(fx, M, n, truth);
    dsckpt_ckpt_free(n);
    free(out);
}
