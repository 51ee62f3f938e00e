/*
 * synth.c — synthetic native checkpoints of any size with a GPT-like tensor list
 * and deterministic values, for tests and benchmarks (docs/synth.md).
 */
#include "synth.h"
#include "parallel.h"

#include "deepspeed_write.h"

#include "cast.h"
#include "fsutil.h"
#include "native_write.h"
#include "outsafe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYNTH_VOCAB 1031
#define SYNTH_POSITIONS 128

static inline uint64_t mix64(uint64_t z) {
    /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t synth_key(uint64_t seed, uint32_t tensor, ds_state s) {
    return mix64(seed * 0x9E3779B97F4A7C15ull + ((uint64_t)tensor + 1) * 0xD1B54A32D192ED03ull +
                 ((uint64_t)s + 1) * 0x8CB92BA72F3D8DD7ull);
}

static inline float synth_from_key(uint64_t key, ds_state s, uint64_t index) {
    uint64_t h = mix64(key + index * 0x9E3779B97F4A7C15ull);
    float u = (float)(h >> 40) * (1.0f / 16777216.0f); /* [0, 1), exact in fp32 */
    switch (s) {
    case DS_ST_EXP_AVG: return (2.0f * u - 1.0f) * 1e-3f;
    case DS_ST_EXP_AVG_SQ: return u * 1e-6f;
    default: return (2.0f * u - 1.0f) * 0.05f;
    }
}

float ds_synth_value(uint64_t seed, uint32_t tensor, ds_state s, uint64_t index) {
    return synth_from_key(synth_key(seed, tensor, s), s, index);
}

float dsckpt_synth_value(uint64_t seed, uint32_t tensor_index, const char *state, uint64_t index) {
    int s = ds_state_parse(state);
    if (s < 0) return NAN;
    return ds_synth_value(seed, tensor_index, (ds_state)s, index);
}

void ds_synth_tensors_free(ds_tensor *t, size_t n) {
    if (!t) return;
    for (size_t i = 0; i < n; i++) ds_tensor_clear(&t[i]);
    free(t);
}

static dsckpt_status add_tensor(ds_tensor *ts, size_t *n, const char *name, dsckpt_dtype dt, int ndim, uint64_t d0,
                                uint64_t d1, bool trainable) {
    ds_tensor *t = &ts[(*n)++];
    memset(t, 0, sizeof *t);
    t->name = ds_strdup(name);
    if (!t->name) return DSCKPT_ENOMEM;
    t->dtype = dt;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->numel = ndim == 2 ? d0 * d1 : d0;
    t->trainable = trainable;
    t->group = trainable ? (ndim == 2 ? 0 : 1) : -1;
    return DSCKPT_OK;
}

dsckpt_status ds_synth_tensors(uint64_t params, dsckpt_dtype dt, ds_tensor **out, size_t *nout) {
    if (params < 1000) return ds_err(DSCKPT_EINVAL, "the parameter count must be at least 1000");
    if (params > (1ull << 40)) return ds_err(DSCKPT_EINVAL, "the parameter count must be at most 2^40");
    int L = params < 1000000 ? 2 : params < 100000000 ? 4 : 8;
    /* Solve 12 L d^2 + (13 L + V + S + 2) d = params for d, then make d odd so the
     * biases and LayerNorm vectors have odd lengths. */
    double a = 12.0 * L, b = 13.0 * L + SYNTH_VOCAB + SYNTH_POSITIONS + 2;
    double dd = (-b + sqrt(b * b + 4 * a * (double)params)) / (2 * a);
    uint64_t d = dd < 3 ? 3 : (uint64_t)dd;
    d |= 1;
    size_t cap = 4 + 12 * (size_t)L;
    ds_tensor *ts = calloc(cap, sizeof *ts);
    if (!ts) return ds_err(DSCKPT_ENOMEM, "out of memory");
    size_t n = 0;
    dsckpt_status st = add_tensor(ts, &n, "wte.weight", dt, 2, SYNTH_VOCAB, d, true);
    if (st == DSCKPT_OK) st = add_tensor(ts, &n, "wpe.weight", dt, 2, SYNTH_POSITIONS, d, false);
    for (int l = 0; l < L && st == DSCKPT_OK; l++) {
        static const struct { const char *name; int ndim; int r0; int r1; } layer[] = {
            {"ln_1.weight", 1, 1, 0},     {"ln_1.bias", 1, 1, 0},        {"attn.c_attn.weight", 2, 3, 1},
            {"attn.c_attn.bias", 1, 3, 0}, {"attn.c_proj.weight", 2, 1, 1}, {"attn.c_proj.bias", 1, 1, 0},
            {"ln_2.weight", 1, 1, 0},     {"ln_2.bias", 1, 1, 0},        {"mlp.c_fc.weight", 2, 4, 1},
            {"mlp.c_fc.bias", 1, 4, 0},   {"mlp.c_proj.weight", 2, 1, 4}, {"mlp.c_proj.bias", 1, 1, 0},
        };
        for (size_t k = 0; k < sizeof layer / sizeof layer[0] && st == DSCKPT_OK; k++) {
            char name[128];
            snprintf(name, sizeof name, "h.%d.%s", l, layer[k].name);
            st = add_tensor(ts, &n, name, dt, layer[k].ndim, layer[k].r0 * d, layer[k].r1 * d, true);
        }
    }
    if (st == DSCKPT_OK) st = add_tensor(ts, &n, "ln_f.weight", dt, 1, d, 0, true);
    if (st == DSCKPT_OK) st = add_tensor(ts, &n, "ln_f.bias", dt, 1, d, 0, true);
    /* The LM head is tied to the token embedding, as in GPT-2. */
    if (st == DSCKPT_OK) {
        ts[0].aliases = calloc(1, sizeof *ts[0].aliases);
        if (ts[0].aliases) ts[0].aliases[0] = ds_strdup("lm_head.weight");
        if (!ts[0].aliases || !ts[0].aliases[0]) st = ds_err(DSCKPT_ENOMEM, "out of memory");
        else ts[0].naliases = 1;
    }
    if (st) {
        ds_synth_tensors_free(ts, n);
        return st;
    }
    *out = ts;
    *nout = n;
    return DSCKPT_OK;
}

void dsckpt_synth_opts_init(dsckpt_synth_opts *o) {
    memset(o, 0, sizeof *o);
    o->params = 1000000;
    o->world_size = 2;
    o->zero_stage = 2;
    o->dtype = DSCKPT_BF16;
    o->seed = 1;
    o->step = 100;
}

typedef struct synth_fill {
    uint64_t seed;
    const ds_tensor *ts;
    float **scratch; /* per worker, for 16-bit w16 */
} synth_fill;

static dsckpt_status synth_fill_fn(void *u, ds_state s, uint32_t t, uint64_t start, uint64_t numel, void *dst,
                                   int worker) {
    synth_fill *sf = u;
    uint64_t key = synth_key(sf->seed, t, s);
    dsckpt_dtype dt = s == DS_ST_W16 ? sf->ts[t].dtype : DSCKPT_F32;
    float *f = dt == DSCKPT_F32 ? dst : sf->scratch[worker];
    for (uint64_t i = 0; i < numel; i++) f[i] = synth_from_key(key, s, start + i);
    if (dt == DSCKPT_BF16) ds_cast_f32_to_bf16(f, dst, (size_t)numel);
    else if (dt == DSCKPT_F16) ds_cast_f32_to_f16(f, dst, (size_t)numel);
    return DSCKPT_OK;
}

static const char *dtype_short(dsckpt_dtype d) {
    return d == DSCKPT_BF16 ? "bf16" : d == DSCKPT_F16 ? "fp16" : "fp32";
}

/* Non-tensor state of a synthetic run: what a real trainer would carry. */
static dsckpt_status synth_extras(const dsckpt_synth_opts *o, uint32_t eval_bits, cJSON **state, cJSON **cfg,
                                  cJSON **metrics) {
    char buf[2048];
    double eval_loss = 2.0 + (double)(eval_bits % 1000) / 1000.0;
    snprintf(buf, sizeof buf,
             "{\"optimizer\":{\"type\":\"AdamW\",\"param_groups\":["
             "{\"lr\":0.0003,\"betas\":[0.9,0.95],\"eps\":1e-8,\"weight_decay\":0.1,\"step\":%lld},"
             "{\"lr\":0.0003,\"betas\":[0.9,0.95],\"eps\":1e-8,\"weight_decay\":0.0,\"step\":%lld}]},"
             "\"scheduler\":{\"type\":\"WarmupLR\",\"last_batch_iteration\":%lld},"
             "\"loss_scaler\":%s,"
             "\"data\":{\"consumed_samples\":%lld,\"seed\":%llu},"
             "\"rng\":{\"seed\":%llu}}",
             (long long)o->step, (long long)o->step, (long long)o->step - 1,
             o->dtype == DSCKPT_F16 ? "{\"cur_scale\":65536.0,\"cur_iter\":0,\"last_overflow_iter\":-1,"
                                      "\"scale_factor\":2.0,\"scale_window\":1000}"
                                    : "null",
             (long long)o->step * 8 * o->world_size, (unsigned long long)o->seed, (unsigned long long)o->seed);
    *state = cJSON_Parse(buf);
    snprintf(buf, sizeof buf,
             "{\"train_batch_size\":%d,\"train_micro_batch_size_per_gpu\":8,\"gradient_accumulation_steps\":1,"
             "\"zero_optimization\":{\"stage\":%d},\"bf16\":{\"enabled\":%s},\"fp16\":{\"enabled\":%s}}",
             8 * o->world_size, o->zero_stage, o->dtype == DSCKPT_BF16 ? "true" : "false",
             o->dtype == DSCKPT_F16 ? "true" : "false");
    *cfg = cJSON_Parse(buf);
    snprintf(buf, sizeof buf, "{\"eval_loss\":%.3f}", eval_loss);
    *metrics = cJSON_Parse(buf);
    if (!*state || !*cfg || !*metrics) return ds_err(DSCKPT_ENOMEM, "out of memory");
    return DSCKPT_OK;
}

/* root/trainer_state.json of a synthetic run: tag is the best and the last
 * checkpoint, at metrics' eval_loss. */
static dsckpt_status write_trainer_state(const char *root, const dsckpt_synth_opts *o, const char *tag,
                                         const cJSON *metrics) {
    char buf[1024];
    const cJSON *el = cJSON_GetObjectItemCaseSensitive(metrics, "eval_loss");
    snprintf(buf, sizeof buf,
             "{\n  \"best_global_step\": %lld,\n  \"best_metric\": %.3f,\n  \"best_model_checkpoint\": \"%s\",\n"
             "  \"global_step\": %lld,\n  \"log_history\": [\n    {\n      \"eval_loss\": %.3f,\n      \"step\": %lld\n    }\n  ],\n"
             "  \"max_steps\": %lld\n}\n",
             (long long)o->step, el->valuedouble, tag, (long long)o->step, el->valuedouble, (long long)o->step,
             (long long)o->step);
    char *ts_path = ds_join(root, "trainer_state.json");
    if (!ts_path) return DSCKPT_ENOMEM;
    dsckpt_status st = ds_write_file_atomic(ts_path, buf, strlen(buf));
    free(ts_path);
    return st;
}

dsckpt_status dsckpt_synth(const char *out, const dsckpt_synth_opts *o) {
    ds_err_clear();
    if (!out || !o) return ds_err(DSCKPT_EINVAL, "dsckpt_synth: NULL argument");
    if (o->dtype != DSCKPT_BF16 && o->dtype != DSCKPT_F16 && o->dtype != DSCKPT_F32)
        return ds_err(DSCKPT_EINVAL, "training dtype must be bf16, fp16 or fp32");
    if (o->step < 0) return ds_err(DSCKPT_EINVAL, "step must be non-negative");
    ds_tensor *ts = NULL;
    size_t nt = 0;
    cJSON *state = NULL, *cfg = NULL, *metrics = NULL;
    ds_native_out *no = NULL;
    ds_outdir od = {0};
    char *tagdir = NULL;
    float **scratch = NULL;
    int threads = ds_thread_count(o->threads);
    char tag[64];
    snprintf(tag, sizeof tag, "global_step%lld", (long long)o->step);
    dsckpt_status st = ds_synth_tensors(o->params, o->dtype, &ts, &nt);
    if (st) return st;
    DS_TRYGOTO(synth_extras(o, (uint32_t)mix64(o->seed), &state, &cfg, &metrics), done);
    DS_TRYGOTO(ds_outdir_begin(&od, out, o->force != 0), done);
    tagdir = ds_join(od.tmp, tag);
    if (!tagdir) {
        st = DSCKPT_ENOMEM;
        goto done;
    }
    DS_TRYGOTO(ds_mkdir(tagdir), done);
    DS_TRYGOTO(ds_calloc((size_t)threads, sizeof *scratch, &scratch), done);
    for (int i = 0; i < threads; i++) DS_TRYGOTO(ds_malloc(8u << 20, &scratch[i]), done); /* 2M elements as fp32 */
    synth_fill sf = {.seed = o->seed, .ts = ts, .scratch = scratch};
    ds_progress prog = {.fn = o->progress, .user = o->progress_user};
    if (o->format == DSCKPT_FORMAT_DEEPSPEED && o->compress_level) {
        st = ds_err(DSCKPT_EINVAL, "--compress writes the native format only");
        goto done;
    }
    if (o->format == DSCKPT_FORMAT_DEEPSPEED) {
        ds_dsw_spec ds = {.tensors = ts, .ntensors = nt, .stage = o->zero_stage, .world_size = o->world_size,
                          .step = o->step, .model_dtype = o->dtype, .ds_config = cfg, .state = state,
                          .fill = synth_fill_fn, .fill_user = &sf, .threads = threads};
        DS_TRYGOTO(ds_deepspeed_write(&ds, tagdir, &prog), done);
    } else {
        ds_native_spec spec = {.tensors = ts, .ntensors = nt, .ngroups = 2, .stage = o->zero_stage,
                               .world_size = o->world_size, .tag = tag, .step = o->step,
                               .train_dtype = dtype_short(o->dtype), .state = state, .ds_config = cfg,
                               .metrics = metrics, .compress_level = o->compress_level};
        DS_TRYGOTO(ds_native_prepare(&spec, tagdir, &no), done);
        DS_TRYGOTO(ds_native_write_all(no, synth_fill_fn, &sf, threads, &prog), done);
    }
    /* Every byte is written; what follows (fsync, rename) shows as "syncing". */
    if (prog.fn && prog.total) prog.fn(prog.user, prog.total, prog.total);
    DS_TRYGOTO(ds_set_latest(od.tmp, tag), done);
    DS_TRYGOTO(write_trainer_state(od.tmp, o, tag, metrics), done);
    st = ds_outdir_commit(&od);
done:
    ds_outdir_abort(&od);
    if (scratch)
        for (int i = 0; i < threads; i++) free(scratch[i]);
    free(scratch);
    free(tagdir);
    ds_native_out_free(no);
    cJSON_Delete(state);
    cJSON_Delete(cfg);
    cJSON_Delete(metrics);
    ds_synth_tensors_free(ts, nt);
    return st;
}
