/*
 * test_access.c — the public listing and reading calls: dsckpt_tag_list_*,
 * dsckpt_tensor_*, dsckpt_reader_* / dsckpt_read_tensor (dtypes, slices,
 * bounds, progress, cancel), dsckpt_source_open on a .safetensors file, and
 * dsckpt_ckpt_state_json. Values are checked against the synth value rule.
 */
#include "dsckpt.h"
#include "tutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const uint64_t SEED = 7;

/* A synth save root at dir/name with the given step. */
static char *make_synth_n(const char *dir, const char *name, int64_t step, dsckpt_dtype dt, uint64_t params) {
    char *p = tu_path(dir, name);
    dsckpt_synth_opts o;
    dsckpt_synth_opts_init(&o);
    o.params = params;
    o.world_size = 3;
    o.zero_stage = 2;
    o.dtype = dt;
    o.seed = SEED;
    o.step = step;
    o.threads = 2;
    TU_ASSERT_OK(dsckpt_synth(p, &o));
    return p;
}

static char *make_synth(const char *dir, const char *name, int64_t step, dsckpt_dtype dt) {
    return make_synth_n(dir, name, step, dt, 30000);
}

static uint16_t bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

static void test_tensor_iteration(void) {
    char *d = tu_mkdtemp(), *root = make_synth(d, "run", 100, DSCKPT_BF16);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    size_t n = dsckpt_tensor_count(c);
    CU_ASSERT(n > 10);
    dsckpt_tensor_info t;
    TU_ASSERT_OK(dsckpt_tensor_get(c, 0, &t));
    CU_ASSERT_STRING_EQUAL(t.name, "wte.weight");
    CU_ASSERT_EQUAL(t.ndim, 2);
    CU_ASSERT_EQUAL(t.shape[0], 1031);
    CU_ASSERT_EQUAL(t.numel, t.shape[0] * t.shape[1]);
    CU_ASSERT(t.trainable);
    CU_ASSERT_EQUAL(t.states, (1u << DSCKPT_STATE_FP32) | (1u << DSCKPT_STATE_EXP_AVG) | (1u << DSCKPT_STATE_EXP_AVG_SQ));
    CU_ASSERT_EQUAL(t.weight_state, DSCKPT_STATE_FP32);
    TU_ASSERT_OK(dsckpt_tensor_get(c, 1, &t));
    CU_ASSERT_STRING_EQUAL(t.name, "wpe.weight");
    CU_ASSERT(!t.trainable);
    CU_ASSERT_EQUAL(t.states, 1u << DSCKPT_STATE_W16);
    CU_ASSERT_EQUAL(t.weight_state, DSCKPT_STATE_W16);
    dsckpt_dtype dt;
    TU_ASSERT_OK(dsckpt_tensor_state_dtype(c, 1, DSCKPT_STATE_W16, &dt));
    CU_ASSERT_EQUAL(dt, DSCKPT_BF16);
    CU_ASSERT_EQUAL(dsckpt_tensor_state_dtype(c, 1, DSCKPT_STATE_FP32, &dt), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(dsckpt_tensor_get(c, n, &t), DSCKPT_EINVAL);
    size_t ix = 99;
    TU_ASSERT_OK(dsckpt_tensor_find(c, "wpe.weight", &ix));
    CU_ASSERT_EQUAL(ix, 1);
    TU_ASSERT_OK(dsckpt_tensor_find(c, "lm_head.weight", &ix)); /* alias of wte */
    CU_ASSERT_EQUAL(ix, 0);
    CU_ASSERT_EQUAL(dsckpt_tensor_find(c, "nope", &ix), DSCKPT_ENOENT);
    CU_ASSERT(strstr(dsckpt_last_error(), "nope") != NULL);
    dsckpt_state s;
    TU_ASSERT_OK(dsckpt_state_parse("exp_avg_sq", &s));
    CU_ASSERT_EQUAL(s, DSCKPT_STATE_EXP_AVG_SQ);
    CU_ASSERT_STRING_EQUAL(dsckpt_state_name(DSCKPT_STATE_W16), "w16");
    CU_ASSERT_EQUAL(dsckpt_state_parse("moment", &s), DSCKPT_EINVAL);
    /* Non-tensor state as JSON. */
    char *js = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_state_json(c, &js));
    cJSON *j = cJSON_Parse(js);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(j, "step")->valuedouble, 100);
    CU_ASSERT(cJSON_IsObject(cJSON_GetObjectItem(j, "state")));
    CU_ASSERT(cJSON_IsObject(cJSON_GetObjectItem(j, "ds_config")));
    CU_ASSERT(cJSON_IsNumber(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "metrics"), "eval_loss")));
    cJSON_Delete(j);
    free(js);
    dsckpt_ckpt_free(c);
    tu_rmtree(d);
    free(root);
    free(d);
}

typedef struct cb_state {
    int progress_calls;
    uint64_t last_done, last_total;
    int cancel_after; /* cancel once this many progress calls were seen; -1 never */
} cb_state;

static void on_progress(void *u, uint64_t done, uint64_t total) {
    cb_state *s = u;
    s->progress_calls++;
    CU_ASSERT(done <= total);
    CU_ASSERT(done > s->last_done || s->progress_calls == 1);
    s->last_done = done;
    s->last_total = total;
}

static int on_cancel(void *u) {
    cb_state *s = u;
    return s->cancel_after >= 0 && s->progress_calls >= s->cancel_after;
}

static void test_read_tensor(void) {
    /* 2M parameters: wte (1031 x d) has more elements than one staging slice. */
    char *d = tu_mkdtemp(), *root = make_synth_n(d, "run", 100, DSCKPT_BF16, 2000000);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    dsckpt_reader *r = NULL;
    TU_ASSERT_OK(dsckpt_reader_open(c, &r));
    dsckpt_tensor_info t;
    TU_ASSERT_OK(dsckpt_tensor_get(c, 0, &t));
    /* Whole tensor, fp32 master, as F32: every element follows the value rule. */
    float *f = malloc(t.numel * sizeof *f);
    TU_ASSERT_OK(dsckpt_read_tensor(r, 0, DSCKPT_STATE_FP32, 0, t.numel, DSCKPT_F32, f, t.numel * sizeof *f));
    size_t bad = 0;
    for (uint64_t e = 0; e < t.numel; e++) bad += f[e] != dsckpt_synth_value(SEED, 0, "fp32", e);
    CU_ASSERT_EQUAL(bad, 0);
    /* A slice crossing rank boundaries (world size 3), as F64 and as BF16. */
    uint64_t start = t.numel / 3 - 17, cnt = t.numel / 3 + 40;
    double *g = malloc(cnt * sizeof *g);
    uint16_t *h = malloc(cnt * sizeof *h);
    TU_ASSERT_OK(dsckpt_read_tensor(r, 0, DSCKPT_STATE_EXP_AVG, start, cnt, DSCKPT_F64, g, cnt * sizeof *g));
    TU_ASSERT_OK(dsckpt_read_tensor(r, 0, DSCKPT_STATE_FP32, start, cnt, DSCKPT_BF16, h, cnt * sizeof *h));
    bad = 0;
    for (uint64_t e = 0; e < cnt; e++) {
        bad += g[e] != (double)dsckpt_synth_value(SEED, 0, "exp_avg", start + e);
        bad += h[e] != bf16_of(dsckpt_synth_value(SEED, 0, "fp32", start + e));
    }
    CU_ASSERT_EQUAL(bad, 0);
    /* Frozen w16 (stored BF16) widened to F32 is the rounded synth value. */
    dsckpt_tensor_info w;
    TU_ASSERT_OK(dsckpt_tensor_get(c, 1, &w));
    float *wf = malloc(w.numel * sizeof *wf);
    TU_ASSERT_OK(dsckpt_read_tensor(r, 1, DSCKPT_STATE_W16, 0, w.numel, DSCKPT_F32, wf, w.numel * sizeof *wf));
    bad = 0;
    for (uint64_t e = 0; e < w.numel; e++) bad += bf16_of(wf[e]) != bf16_of(dsckpt_synth_value(SEED, 1, "w16", e));
    CU_ASSERT_EQUAL(bad, 0);
    /* Bounds, buffer size, states and dtypes refused. */
    CU_ASSERT_EQUAL(dsckpt_read_tensor(r, 0, DSCKPT_STATE_FP32, t.numel - 1, 2, DSCKPT_F32, f, 8), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(dsckpt_read_tensor(r, 0, DSCKPT_STATE_FP32, 0, 4, DSCKPT_F32, f, 15), DSCKPT_EINVAL);
    CU_ASSERT(strstr(dsckpt_last_error(), "buffer") != NULL);
    CU_ASSERT_EQUAL(dsckpt_read_tensor(r, 0, DSCKPT_STATE_W16, 0, 4, DSCKPT_F32, f, 16), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(dsckpt_read_tensor(r, 0, DSCKPT_STATE_FP32, 0, 4, DSCKPT_I32, f, 16), DSCKPT_EUNSUPPORTED);
    CU_ASSERT_EQUAL(dsckpt_read_tensor(r, dsckpt_tensor_count(c), DSCKPT_STATE_FP32, 0, 1, DSCKPT_F32, f, 4), DSCKPT_EINVAL);
    /* Progress is reported per slice and reaches the total. */
    cb_state cs = {.cancel_after = -1};
    dsckpt_reader_set_callbacks(r, on_progress, on_cancel, &cs);
    TU_ASSERT_OK(dsckpt_read_tensor(r, 0, DSCKPT_STATE_FP32, 0, t.numel, DSCKPT_F64, g = realloc(g, t.numel * 8), t.numel * 8));
    CU_ASSERT(t.numel * 8 > (1u << 20));
    CU_ASSERT(cs.progress_calls >= 2); /* numel * 8 bytes exceed one 1 MiB staging slice */
    CU_ASSERT_EQUAL(cs.last_done, t.numel);
    CU_ASSERT_EQUAL(cs.last_total, t.numel);
    /* Cancel stops the read with EINTR after the first slice. */
    cb_state cc = {.cancel_after = 1};
    dsckpt_reader_set_callbacks(r, on_progress, on_cancel, &cc);
    CU_ASSERT_EQUAL(dsckpt_read_tensor(r, 0, DSCKPT_STATE_FP32, 0, t.numel, DSCKPT_F64, g, t.numel * 8), DSCKPT_EINTR);
    CU_ASSERT_EQUAL(cc.progress_calls, 1);
    CU_ASSERT(strstr(dsckpt_last_error(), "cancel") != NULL);
    CU_ASSERT(strstr(dsckpt_last_error(), "--") == NULL); /* library wording, not the CLI's */
    dsckpt_reader_free(r);
    dsckpt_reader_free(NULL);
    free(f);
    free(g);
    free(h);
    free(wf);
    dsckpt_ckpt_free(c);
    tu_rmtree(d);
    free(root);
    free(d);
}

static void test_read_detects_damage(void) {
    char *d = tu_mkdtemp(), *root = make_synth(d, "run", 100, DSCKPT_BF16);
    char *tag = tu_path(root, "global_step100"), *rf = tu_path(tag, "rank_00001.safetensors");
    size_t len = 0;
    uint8_t *bytes = tu_read(rf, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bytes);
    free(bytes);
    CU_ASSERT_EQUAL(tu_flip_bit(rf, len - 5, 3), 0); /* in the data, not the header */
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    dsckpt_reader *r = NULL;
    TU_ASSERT_OK(dsckpt_reader_open(c, &r));
    /* Reading everything meets the damaged chunk: ECHECKSUM, naming the file. */
    dsckpt_status worst = DSCKPT_OK;
    for (size_t i = 0; i < dsckpt_tensor_count(c) && worst == DSCKPT_OK; i++) {
        dsckpt_tensor_info t;
        TU_ASSERT_OK(dsckpt_tensor_get(c, i, &t));
        double *buf = malloc((t.numel ? t.numel : 1) * 8);
        for (int s = 0; s < DSCKPT_STATE_COUNT && worst == DSCKPT_OK; s++)
            if (t.states & (1u << s)) worst = dsckpt_read_tensor(r, i, (dsckpt_state)s, 0, t.numel, DSCKPT_F64, buf, t.numel * 8);
        free(buf);
    }
    CU_ASSERT_EQUAL(worst, DSCKPT_ECHECKSUM);
    CU_ASSERT(strstr(dsckpt_last_error(), "rank_00001") != NULL);
    dsckpt_reader_free(r);
    dsckpt_ckpt_free(c);
    tu_rmtree(d);
    free(rf);
    free(tag);
    free(root);
    free(d);
}

static void test_safetensors_source(void) {
    char *d = tu_mkdtemp(), *root = make_synth(d, "run", 100, DSCKPT_BF16);
    char *out = tu_path(d, "w.safetensors");
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    dsckpt_consolidate_opts co;
    dsckpt_consolidate_opts_init(&co);
    co.dtype = DSCKPT_F32;
    TU_ASSERT_OK(dsckpt_consolidate(c, out, &co));
    dsckpt_ckpt *s = NULL;
    TU_ASSERT_OK(dsckpt_source_open(out, NULL, &s));
    dsckpt_info info;
    dsckpt_ckpt_info(s, &info);
    CU_ASSERT_STRING_EQUAL(info.format, "safetensors");
    CU_ASSERT_EQUAL(dsckpt_tensor_count(s), dsckpt_tensor_count(c));
    size_t ix;
    TU_ASSERT_OK(dsckpt_tensor_find(s, "lm_head.weight", &ix)); /* the alias from __metadata__ */
    dsckpt_tensor_info t;
    TU_ASSERT_OK(dsckpt_tensor_get(s, ix, &t));
    CU_ASSERT_STRING_EQUAL(t.name, "wte.weight");
    CU_ASSERT_EQUAL(t.states, 1u << DSCKPT_STATE_W16);
    dsckpt_reader *r = NULL;
    TU_ASSERT_OK(dsckpt_reader_open(s, &r));
    float *f = malloc(t.numel * 4);
    TU_ASSERT_OK(dsckpt_read_tensor(r, ix, DSCKPT_STATE_W16, 0, t.numel, DSCKPT_F32, f, t.numel * 4));
    size_t bad = 0;
    for (uint64_t e = 0; e < t.numel; e++) bad += f[e] != dsckpt_synth_value(SEED, 0, "fp32", e);
    CU_ASSERT_EQUAL(bad, 0);
    free(f);
    dsckpt_reader_free(r);
    /* Weights only: consolidate and reshard refuse it. */
    char *o2 = tu_path(d, "again.safetensors"), *o3 = tu_path(d, "rs");
    CU_ASSERT_EQUAL(dsckpt_consolidate(s, o2, &co), DSCKPT_EUNSUPPORTED);
    dsckpt_reshard_opts ro;
    dsckpt_reshard_opts_init(&ro);
    ro.world_size = 2;
    CU_ASSERT_EQUAL(dsckpt_reshard(s, o3, &ro), DSCKPT_EUNSUPPORTED);
    CU_ASSERT(!tu_exists(o2) && !tu_exists(o3));
    /* A tag makes no sense for a file; a damaged header is ECORRUPT. */
    dsckpt_ckpt *bad_c = NULL;
    CU_ASSERT_EQUAL(dsckpt_source_open(out, "global_step100", &bad_c), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(tu_flip_bit(out, 0, 6), 0); /* header length */
    CU_ASSERT_EQUAL(dsckpt_source_open(out, NULL, &bad_c), DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NULL(bad_c);
    /* Not a .safetensors path: the checkpoint opener's answer. */
    CU_ASSERT_EQUAL(dsckpt_source_open(o2, NULL, &bad_c), DSCKPT_ENOENT);
    dsckpt_ckpt_free(s);
    dsckpt_ckpt_free(c);
    tu_rmtree(d);
    free(o2);
    free(o3);
    free(out);
    free(root);
    free(d);
}

static void test_tag_list(void) {
    char *d = tu_mkdtemp(), *a = make_synth(d, "a", 100, DSCKPT_BF16), *b = make_synth(d, "b", 40, DSCKPT_BF16);
    /* One save root with tags 40 and 100 (latest and best: 100), and an unfinished 200. */
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cp -r '%s/global_step40' '%s/' && mkdir '%s/global_step200' && "
                              "printf x > '%s/global_step200/rank_00000.safetensors' && mkdir '%s/notes'",
             b, a, a, a, a);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    dsckpt_tag_list *l = NULL;
    TU_ASSERT_OK(dsckpt_tag_list_open(a, &l));
    CU_ASSERT_EQUAL_FATAL(dsckpt_tag_list_count(l), 3);
    const dsckpt_tag *t0 = dsckpt_tag_list_get(l, 0), *t1 = dsckpt_tag_list_get(l, 1), *t2 = dsckpt_tag_list_get(l, 2);
    CU_ASSERT_STRING_EQUAL(t0->name, "global_step40");
    CU_ASSERT_STRING_EQUAL(t1->name, "global_step100");
    CU_ASSERT_STRING_EQUAL(t2->name, "global_step200");
    CU_ASSERT(t0->complete && t1->complete && !t2->complete);
    CU_ASSERT_PTR_NOT_NULL(t2->problem);
    CU_ASSERT_PTR_NULL(t2->format);
    CU_ASSERT_EQUAL(t2->step, 200);
    CU_ASSERT_EQUAL(t1->step, 100);
    CU_ASSERT_EQUAL(t1->world_size, 3);
    CU_ASSERT_EQUAL(t1->zero_stage, 2);
    CU_ASSERT_STRING_EQUAL(t1->train_dtype, "bf16");
    CU_ASSERT_STRING_EQUAL(t1->format, "dsckpt");
    CU_ASSERT(t1->bytes_on_disk > 12 * 30000 * 9 / 10);
    CU_ASSERT(t1->has_metric && t0->has_metric);
    CU_ASSERT_STRING_EQUAL(t1->metric_name, "eval_loss");
    CU_ASSERT(t1->is_latest && t1->is_best && !t0->is_latest && !t0->is_best);
    CU_ASSERT_EQUAL(dsckpt_tag_list_best(l), 1);
    CU_ASSERT_EQUAL(dsckpt_tag_list_latest(l), 1);
    CU_ASSERT_PTR_NULL(dsckpt_tag_list_get(l, 3));
    dsckpt_tag_list_free(l);
    dsckpt_tag_list_free(NULL);
    /* A tag directory alone: one entry. */
    char *td = tu_path(a, "global_step40");
    TU_ASSERT_OK(dsckpt_tag_list_open(td, &l));
    CU_ASSERT_EQUAL(dsckpt_tag_list_count(l), 1);
    CU_ASSERT_EQUAL(dsckpt_tag_list_get(l, 0)->step, 40);
    dsckpt_tag_list_free(l);
    /* Nothing there. */
    char *none = tu_path(d, "missing"), *empty = tu_path(d, "empty");
    CU_ASSERT_EQUAL(dsckpt_tag_list_open(none, &l), DSCKPT_ENOENT);
    CU_ASSERT_PTR_NULL(l);
    mkdir(empty, 0755);
    CU_ASSERT_EQUAL(dsckpt_tag_list_open(empty, &l), DSCKPT_ENOENT);
    CU_ASSERT(strstr(dsckpt_last_error(), "no checkpoints") != NULL);
    /* A Hugging Face output_dir from the fixture: checkpoint-4 best, checkpoint-12 latest. */
    char *hf = tu_src_path("fixtures/deepspeed-0.19/hf_trainer_z3/output");
    TU_ASSERT_OK(dsckpt_tag_list_open(hf, &l));
    CU_ASSERT_EQUAL_FATAL(dsckpt_tag_list_count(l), 2);
    CU_ASSERT_STRING_EQUAL(dsckpt_tag_list_get(l, 0)->name, "checkpoint-4");
    CU_ASSERT(dsckpt_tag_list_get(l, 0)->is_best);
    CU_ASSERT(dsckpt_tag_list_get(l, 1)->is_latest);
    CU_ASSERT_STRING_EQUAL(dsckpt_tag_list_get(l, 1)->format, "deepspeed");
    CU_ASSERT_EQUAL(dsckpt_tag_list_get(l, 1)->zero_stage, 3);
    CU_ASSERT(dsckpt_tag_list_get(l, 0)->has_metric);
    CU_ASSERT(fabs(dsckpt_tag_list_get(l, 0)->metric - 6.713221549987793) < 1e-12);
    dsckpt_tag_list_free(l);
    tu_rmtree(d);
    free(hf);
    free(none);
    free(empty);
    free(td);
    free(a);
    free(b);
    free(d);
}

/* The library's messages speak of its calls and options, never of the command
 * line's spellings ("--force", "--to"): the CLI adds those. */
static void test_messages_without_cli_wording(void) {
    char *d = tu_mkdtemp(), *root = make_synth(d, "run", 100, DSCKPT_BF16), *out = tu_path(d, "o");
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    dsckpt_reshard_opts ro;
    dsckpt_reshard_opts_init(&ro);
    ro.world_size = 0;
    CU_ASSERT_EQUAL(dsckpt_reshard(c, out, &ro), DSCKPT_EINVAL);
    CU_ASSERT(strstr(dsckpt_last_error(), "--") == NULL);
    ro.world_size = 2;
    ro.zero_stage = 0;
    ro.format = DSCKPT_FORMAT_UNIVERSAL;
    CU_ASSERT_EQUAL(dsckpt_reshard(c, out, &ro), DSCKPT_EUNSUPPORTED);
    CU_ASSERT(strstr(dsckpt_last_error(), "--") == NULL);
    ro.format = DSCKPT_FORMAT_NATIVE;
    CU_ASSERT_EQUAL(dsckpt_reshard(c, root, &ro), DSCKPT_EEXIST); /* exists, not forced */
    CU_ASSERT(strstr(dsckpt_last_error(), "--") == NULL);
    dsckpt_synth_opts so;
    dsckpt_synth_opts_init(&so);
    so.params = 10;
    CU_ASSERT_EQUAL(dsckpt_synth(out, &so), DSCKPT_EINVAL);
    CU_ASSERT(strstr(dsckpt_last_error(), "--") == NULL);
    dsckpt_ckpt_free(c);
    tu_rmtree(d);
    free(out);
    free(root);
    free(d);
}

int main(void) {
    static const tu_test tests[] = {{"tensor_iteration", test_tensor_iteration},
                                    {"read_tensor", test_read_tensor},
                                    {"read_detects_damage", test_read_detects_damage},
                                    {"safetensors_source", test_safetensors_source},
                                    {"tag_list", test_tag_list},
                                    {"messages_without_cli_wording", test_messages_without_cli_wording},
                                    {NULL, NULL}};
    return tu_main("access", tests);
}
