/*
 * config.c — ds_config.json into rt_config: "auto" filling from rt_args, DeepSpeed's
 * defaults and batch-size derivation, and one EINVAL per mistake with the key path
 * and the fix (see config.h for the rules).
 */
#include "config.h"

#include "fsutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONFIG_MAX_BYTES (16u << 20)
#define MAX_EXACT_INT 9007199254740992.0 /* 2^53: JSON numbers are doubles */
#define PATH_MAX_LEN 192

/* Problems that do not stop the parse (a flag that disagrees with an explicit
 * value): collected so that one run reports them all. */
typedef struct soft_errs {
    char text[1536];
    size_t len;
    int n;
} soft_errs;

typedef struct pctx {
    const char *file;
    const rt_args *a;
    int world;
    soft_errs *soft;
    cJSON *warnings; /* rt_config.warnings being built (NULL: not collected) */
} pctx;

/* A key accepted but not acted on, or a flag without effect: one line for the
 * caller to print ("<path>: <message>"). Dropped when out of memory. */
static void warn(const pctx *p, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void warn(const pctx *p, const char *path, const char *fmt, ...) {
    char msg[512], line[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(line, sizeof line, "%s%s%s", path, *path ? ": " : "", msg);
    if (p->warnings) cJSON_AddItemToArray(p->warnings, cJSON_CreateString(line));
}

static void soft(const pctx *p, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void soft(const pctx *p, const char *path, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    soft_errs *se = p->soft;
    if (!se) return;
    se->n++;
    if (se->len < sizeof se->text - 1) {
        int k = snprintf(se->text + se->len, sizeof se->text - se->len, "%s%s%s%s", se->len ? "\n  " : "", path,
                         *path ? ": " : "", msg);
        if (k > 0) se->len = DS_MIN(se->len + (size_t)k, sizeof se->text - 1);
    }
}

/* The Hugging Face Trainer's TrainingArguments defaults: what an "auto" becomes
 * when its flag is not given (transformers fills "auto" from TrainingArguments,
 * whose fields all have these defaults). */
static bool hf_default(const char *flag, double *v) {
    static const struct { const char *flag; double v; } d[] = {
        {"learning_rate", 5e-5}, {"adam_epsilon", 1e-8}, {"weight_decay", 0.0}, {"warmup_steps", 0},
        {"max_grad_norm", 1.0},  {"per_device_train_batch_size", 8}, {"gradient_accumulation_steps", 1},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (!strcmp(d[i].flag, flag)) {
            *v = d[i].v;
            return true;
        }
    return false;
}

static dsckpt_status bad(const pctx *p, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static dsckpt_status bad(const pctx *p, const char *path, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ds_err(DSCKPT_EINVAL, "%s: %s: %s", p->file, path, msg);
}

/* out = prefix "." key (or key alone), cut to PATH_MAX_LEN - 1 bytes. */
static void join(char *out, const char *prefix, const char *key) {
    size_t n = 0;
    const char *parts[3] = {prefix && *prefix ? prefix : "", prefix && *prefix ? "." : "", key};
    for (int i = 0; i < 3; i++)
        for (const char *s = parts[i]; *s && n < PATH_MAX_LEN - 1; s++) out[n++] = *s;
    out[n] = '\0';
}

/* Shortest "%g" form that reads back as the same double; a few rotating buffers so a
 * message can hold several. */
static const char *num(double d) {
    static __thread char bufs[4][32];
    static __thread unsigned next;
    char *b = bufs[next++ % 4];
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(b, 32, "%.*g", prec, d);
        if (strtod(b, NULL) == d) break;
    }
    return b;
}

static bool is_auto(const cJSON *it) {
    return cJSON_IsString(it) && it->valuestring && !strcmp(it->valuestring, "auto");
}

static const char *kind(const cJSON *it) {
    if (cJSON_IsBool(it)) return cJSON_IsTrue(it) ? "true" : "false";
    if (cJSON_IsNull(it)) return "null";
    if (cJSON_IsNumber(it)) return "a number";
    if (cJSON_IsString(it)) return "a string";
    if (cJSON_IsArray(it)) return "an array";
    if (cJSON_IsObject(it)) return "an object";
    return "an invalid value";
}

/* A value of the wrong JSON type; "auto" where nothing can fill it gets its own message. */
static dsckpt_status bad_type(const pctx *p, const char *path, const cJSON *it, const char *want) {
    if (is_auto(it))
        return bad(p, path, "\"auto\" cannot be filled here: no command-line flag sets this key; write %s", want);
    if (cJSON_IsString(it) && it->valuestring) {
        char *end;
        (void)strtod(it->valuestring, &end);
        bool numeric = *it->valuestring && !*end;
        bool boolean = !strcmp(it->valuestring, "true") || !strcmp(it->valuestring, "false");
        if (numeric || boolean) return bad(p, path, "must be %s, not the string \"%s\"; remove the quotes", want,
                                           it->valuestring);
    }
    return bad(p, path, "must be %s, not %s; write %s", want, kind(it), want);
}

/* ---- keys: known, duplicate, misspelt ---- */

/* Optimal-string-alignment distance, saturating at 3 (we only care about <= 2). */
static int edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 63 || m > 63) return 3;
    if ((n > m ? n - m : m - n) > 2) return 3;
    int d[64][64];
    for (size_t i = 0; i <= n; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        for (size_t j = 1; j <= m; j++) {
            int cost = a[i - 1] != b[j - 1];
            int v = DS_MIN(d[i - 1][j] + 1, d[i][j - 1] + 1);
            v = DS_MIN(v, d[i - 1][j - 1] + cost);
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) v = DS_MIN(v, d[i - 2][j - 2] + 1);
            d[i][j] = v;
        }
    }
    return DS_MIN(d[n][m], 3);
}

static bool in_list(const char *const *list, const char *s) {
    for (; list && *list; list++)
        if (!strcmp(*list, s)) return true;
    return false;
}

static bool in_list_ci(const char *const *list, const char *s) {
    for (; list && *list; list++)
        if (!strcasecmp(*list, s)) return true;
    return false;
}

/* DeepSpeed spells some ZeRO keys two ways; we take one. */
static const char *const ALIASES[][2] = {
    {"prefetch_bucket_size", "stage3_prefetch_bucket_size"},
    {"param_persistence_threshold", "stage3_param_persistence_threshold"},
    {"max_live_parameters", "stage3_max_live_parameters"},
    {"max_reuse_distance", "stage3_max_reuse_distance"},
    {"gather_16bit_weights_on_model_save", "stage3_gather_16bit_weights_on_model_save"},
    {"stage3_gather_fp16_weights_on_model_save", "stage3_gather_16bit_weights_on_model_save"},
    {NULL, NULL},
};

/* Options DeepSpeed has that this runtime does not implement (refused by name, so the
 * message does not call them typos). */
static const char *const DS_UNSUPPORTED[] = {
    "amp", "activation_checkpointing", "communication_data_type", "seq_parallel_communication_data_type", "sparse_attention",
    "pipeline", "data_efficiency", "compression_training", "elasticity", "autotuning", "aio",
    "zero_force_ds_cpu_optimizer", "memory_breakdown", "dump_state", "sparse_gradients",
    "disable_allgather", "nebula", "dataloader_drop_last", "eigenvalue", "progressive_layer_drop",
    "curriculum_learning", "quantize_training", "hybrid_engine", "weight_quantization", "timers",
    "tensor_parallel", "vocabulary_size", "graph_harvesting", "use_data_before_expert_parallel_",
    /* zero_optimization */
    "load_from_fp32_weights", "elastic_checkpoint", "ignore_unused_parameters", "legacy_stage1", "cpu_offload",
    "cpu_offload_param", "cpu_offload_use_pin_memory", "stage3_model_persistence_threshold",
    "stage3_module_granularity_threshold", "stage3_use_all_reduce_for_fetch_params",
    "use_multi_rank_bucket_allreduce", "zero_hpz_partition_size", "zero_quantized_weights",
    "zero_quantized_nontrainable_weights", "zero_quantized_gradients", "zeropp_loco_param", "mics_shard_size",
    "mics_hierarchical_params_gather", "memory_efficient_linear", "pipeline_loading_checkpoint",
    "override_module_apply", "log_trace_cache_warnings",
    /* fp16 / bf16 / optimizer / checkpoint */
    "fp16_master_weights_and_grads", "immediate_grad_update", "legacy_fusion", "parallel_write", NULL};

/* Monitoring and profiling sections: accepted (a config written for DeepSpeed keeps
 * working) and reported as not used; dstrain's record is --log_file. data_types
 * (grad_accum_dtype) is here too: gradients are always accumulated in fp32. */
static const char *const DS_NOT_USED[] = {"tensorboard", "wandb", "csv_monitor", "comet", "comms_logger",
                                          "flops_profiler", "data_types", NULL};

static dsckpt_status unknown_key(const pctx *p, const char *path, const char *key, const char *const *known) {
    for (size_t i = 0; ALIASES[i][0]; i++)
        if (!strcmp(key, ALIASES[i][0]) && in_list(known, ALIASES[i][1]))
            return bad(p, path, "DeepSpeed also accepts this spelling, dstrain only \"%s\"; rename the key",
                       ALIASES[i][1]);
    if (in_list(DS_UNSUPPORTED, key))
        return bad(p, path, "a DeepSpeed option that dstrain does not implement; remove it");
    const char *best = NULL;
    int bestd = 3;
    for (const char *const *k = known; *k; k++) {
        int d = edit_distance(key, *k);
        if (d < bestd) bestd = d, best = *k;
    }
    if (best) return bad(p, path, "unknown key; did you mean \"%s\"?", best);
    char list[768];
    size_t used = 0;
    list[0] = '\0';
    for (const char *const *k = known; *k && used < sizeof list; k++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", *k);
    return bad(p, path, "unknown key; the keys allowed here are: %s", list);
}

/* Refuses duplicate and unknown keys in `obj`. */
static dsckpt_status check_keys(const pctx *p, const cJSON *obj, const char *prefix, const char *const *known) {
    char path[PATH_MAX_LEN];
    for (const cJSON *c = obj->child; c; c = c->next) {
        const char *key = c->string ? c->string : "";
        join(path, prefix, key);
        for (const cJSON *d = obj->child; d != c; d = d->next)
            if (d->string && !strcmp(d->string, key)) return bad(p, path, "duplicate key; keep one of them");
        if (!in_list(known, key)) return unknown_key(p, path, key, known);
    }
    return DSCKPT_OK;
}

/* The top level: duplicates refused; monitoring sections accepted with a note;
 * a key DeepSpeed does not have either, close to a known key, is taken for a typo
 * (an error with the suggestion); any other unknown key is ignored, as DeepSpeed
 * ignores unknown top-level keys, with a warning naming it. (Inside sections,
 * unknown keys stay errors: DeepSpeed's section models forbid extra keys.) */
static dsckpt_status check_top_keys(const pctx *p, const cJSON *root, const char *const *known) {
    for (const cJSON *c = root->child; c; c = c->next) {
        const char *key = c->string ? c->string : "";
        for (const cJSON *d = root->child; d != c; d = d->next)
            if (d->string && !strcmp(d->string, key)) return bad(p, key, "duplicate key; keep one of them");
        if (in_list(known, key)) continue;
        if (in_list(DS_NOT_USED, key)) {
            warn(p, key, "not used by dstrain (accepted for DeepSpeed compatibility; dstrain's record is --log_file)");
            continue;
        }
        bool near = false;
        for (const char *const *k = known; *k && !near; k++) near = edit_distance(key, *k) < 3;
        for (size_t i = 0; ALIASES[i][0] && !near; i++) near = !strcmp(key, ALIASES[i][0]);
        if (near || in_list(DS_UNSUPPORTED, key)) return unknown_key(p, key, key, known);
        warn(p, key, "unknown key, ignored (DeepSpeed ignores unknown top-level keys too); check its spelling");
    }
    return DSCKPT_OK;
}

/* ---- typed getters: absent -> default ---- */

static dsckpt_status get_u64(const pctx *p, const cJSON *obj, const char *key, const char *prefix, uint64_t lo,
                             uint64_t hi, uint64_t def, uint64_t *out) {
    char path[PATH_MAX_LEN];
    join(path, prefix, key);
    const cJSON *it = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!it) {
        *out = def;
        return DSCKPT_OK;
    }
    if (!cJSON_IsNumber(it)) return bad_type(p, path, it, lo ? "a positive integer" : "a non-negative integer");
    double d = it->valuedouble;
    if (!isfinite(d) || d != floor(d)) return bad(p, path, "must be an integer, not %s; write a whole number", num(d));
    if (d < (double)lo || d > (double)hi || d > MAX_EXACT_INT) {
        if (lo > 0 && d <= 0) return bad(p, path, "must be at least %llu, not %s; use a positive value",
                                         (unsigned long long)lo, num(d));
        return bad(p, path, "%s is out of range; use a value from %llu to %llu", num(d), (unsigned long long)lo,
                   (unsigned long long)hi);
    }
    *out = (uint64_t)d;
    return DSCKPT_OK;
}

/* lo_open: the value must be > lo rather than >= lo; hi may be INFINITY. */
static dsckpt_status get_f64(const pctx *p, const cJSON *obj, const char *key, const char *prefix, double lo,
                             bool lo_open, double hi, double def, double *out) {
    char path[PATH_MAX_LEN];
    join(path, prefix, key);
    const cJSON *it = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!it) {
        *out = def;
        return DSCKPT_OK;
    }
    if (!cJSON_IsNumber(it)) return bad_type(p, path, it, "a number");
    double d = it->valuedouble;
    if (!isfinite(d) || d < lo || (lo_open && d == lo) || d > hi) {
        if (isinf(hi)) return bad(p, path, "%s is out of range; use a value %s %g", num(d), lo_open ? ">" : ">=", lo);
        return bad(p, path, "%s is out of range; use a value from %g%s to %g", num(d), lo,
                   lo_open ? " (exclusive)" : "",
                   hi);
    }
    *out = d;
    return DSCKPT_OK;
}

static dsckpt_status get_bool(const pctx *p, const cJSON *obj, const char *key, const char *prefix, bool def,
                              bool *out) {
    char path[PATH_MAX_LEN];
    join(path, prefix, key);
    const cJSON *it = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!it) {
        *out = def;
        return DSCKPT_OK;
    }
    if (!cJSON_IsBool(it)) return bad_type(p, path, it, "true or false");
    *out = cJSON_IsTrue(it);
    return DSCKPT_OK;
}

static dsckpt_status get_str(const pctx *p, const cJSON *obj, const char *key, const char *prefix, const char *def,
                             const char **out) {
    char path[PATH_MAX_LEN];
    join(path, prefix, key);
    const cJSON *it = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!it) {
        *out = def;
        return DSCKPT_OK;
    }
    if (!cJSON_IsString(it) || !it->valuestring) return bad_type(p, path, it, "a string");
    *out = it->valuestring;
    return DSCKPT_OK;
}

/* A section that must be an object when present (NULL when absent). */
static dsckpt_status get_section(const pctx *p, cJSON *obj, const char *key, const char *prefix, cJSON **out) {
    char path[PATH_MAX_LEN];
    join(path, prefix, key);
    cJSON *it = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    *out = NULL;
    if (!it) return DSCKPT_OK;
    if (!cJSON_IsObject(it)) return bad_type(p, path, it, "an object ({...})");
    *out = it;
    return DSCKPT_OK;
}

/* ---- "auto" ---- */

static dsckpt_status replace(cJSON *obj, const char *key, cJSON *v) {
    if (!v) return ds_err(DSCKPT_ENOMEM, "out of memory");
    if (!cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v)) {
        cJSON_Delete(v);
        return ds_err(DSCKPT_ENOMEM, "out of memory");
    }
    return DSCKPT_OK;
}

/* obj[key] == "auto": becomes v when `has`, otherwise an error naming `flag`. With
 * must_match, an explicit number that differs from a given flag is an error (the
 * Trainer's "mismatch" check, fill_match); without it, as the Trainer's fill_only. */
static dsckpt_status fill_num(const pctx *p, cJSON *obj, const char *key, const char *prefix, bool has, double v,
                              const char *flag, bool must_match) {
    char path[PATH_MAX_LEN];
    join(path, prefix, key);
    cJSON *it = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!it) return DSCKPT_OK;
    if (is_auto(it)) {
        double dv;
        if (!has && hf_default(flag, &dv)) return replace(obj, key, cJSON_CreateNumber(dv)); /* the Trainer's default */
        if (!has) return bad(p, path, "is \"auto\" but --%s was not given; pass --%s or write a value", flag, flag);
        return replace(obj, key, cJSON_CreateNumber(v));
    }
    if (must_match && has && cJSON_IsNumber(it) && it->valuedouble != v)
        soft(p, path, "%s in the config but --%s=%s; make them equal or set the key to \"auto\"",
             num(it->valuedouble), flag, num(v));
    return DSCKPT_OK;
}

static dsckpt_status fill_bool(const pctx *p, cJSON *obj, const char *key, const char *prefix, bool has, bool v,
                               const char *flag) {
    char path[PATH_MAX_LEN];
    join(path, prefix, key);
    cJSON *it = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!it) return DSCKPT_OK;
    if (is_auto(it)) /* the Trainer's default: off unless the flag is given (--bf16 leaves fp16 off) */
        return replace(obj, key, cJSON_CreateBool(has && v));
    if (has && cJSON_IsBool(it) && (bool)cJSON_IsTrue(it) != v)
        soft(p, path, "%s in the config but --%s is %s; make them agree or set the key to \"auto\"",
             cJSON_IsTrue(it) ? "true" : "false", flag, v ? "given" : "not given");
    return DSCKPT_OK;
}

/* "auto" -> a fixed value, no flag involved. */
static dsckpt_status fill_const(cJSON *obj, const char *key, double v) {
    cJSON *it = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!is_auto(it)) return DSCKPT_OK;
    return replace(obj, key, cJSON_CreateNumber(v));
}

/* ---- sections ---- */

static const char *const FP16_KEYS[] = {"enabled",    "auto_cast",  "loss_scale",
                                        "initial_scale_power", "loss_scale_window", "hysteresis",
                                        "consecutive_hysteresis", "min_loss_scale", NULL};
static const char *const BF16_KEYS[] = {"enabled", NULL};

static dsckpt_status parse_fp16(const pctx *p, cJSON *root, rt_config *c) {
    cJSON *s;
    DS_TRY(get_section(p, root, "fp16", "", &s));
    if (s) {
        DS_TRY(check_keys(p, s, "fp16", FP16_KEYS));
        DS_TRY(fill_bool(p, s, "enabled", "fp16", p->a->has_fp16, p->a->fp16, "fp16"));
    }
    DS_TRY(get_bool(p, s, "enabled", "fp16", false, &c->fp16.enabled));
    DS_TRY(get_bool(p, s, "auto_cast", "fp16", false, &c->fp16.auto_cast));
    DS_TRY(get_f64(p, s, "loss_scale", "fp16", 0, false, INFINITY, 0, &c->fp16.loss_scale));
    uint64_t pw;
    DS_TRY(get_u64(p, s, "initial_scale_power", "fp16", 0, 64, 16, &pw));
    c->fp16.initial_scale_power = (int)pw;
    DS_TRY(get_u64(p, s, "loss_scale_window", "fp16", 1, UINT32_MAX, 1000, &c->fp16.loss_scale_window));
    DS_TRY(get_u64(p, s, "hysteresis", "fp16", 1, UINT32_MAX, 2, &c->fp16.hysteresis));
    DS_TRY(get_bool(p, s, "consecutive_hysteresis", "fp16", false, &c->fp16.consecutive_hysteresis));
    DS_TRY(get_f64(p, s, "min_loss_scale", "fp16", 0, true, INFINITY, 1, &c->fp16.min_loss_scale));
    static const char *const dyn[] = {"initial_scale_power", "loss_scale_window", "min_loss_scale", "hysteresis",
                                      "consecutive_hysteresis"};
    c->fp16.dynamic_args_given = false;
    for (size_t i = 0; s && i < sizeof dyn / sizeof dyn[0]; i++)
        if (cJSON_GetObjectItemCaseSensitive(s, dyn[i])) c->fp16.dynamic_args_given = true;

    /* bf16, or its old name bfloat16 (DeepSpeed reads either). */
    cJSON *b = NULL, *b_old = NULL;
    DS_TRY(get_section(p, root, "bf16", "", &b));
    DS_TRY(get_section(p, root, "bfloat16", "", &b_old));
    if (b && b_old) return bad(p, "bfloat16", "both bf16 and its old name bfloat16 are given; keep only bf16");
    const char *bname = b_old ? "bfloat16" : "bf16";
    if (b_old) b = b_old;
    if (b) {
        DS_TRY(check_keys(p, b, bname, BF16_KEYS));
        DS_TRY(fill_bool(p, b, "enabled", bname, p->a->has_bf16, p->a->bf16, "bf16"));
    }
    DS_TRY(get_bool(p, b, "enabled", bname, false, &c->bf16.enabled));
    if (c->fp16.enabled && c->bf16.enabled)
        return bad(p, "fp16.enabled", "fp16 and %s are both enabled (DeepSpeed: \"bfloat16 and fp16 modes cannot "
                   "be simultaneously enabled\"); disable one of them", bname);
    /* A precision flag whose section is absent: DeepSpeed takes the precision from
     * the config alone, so the flag would change nothing. */
    if (!s && p->a->has_fp16 && p->a->fp16) {
        if (c->bf16.enabled)
            soft(p, "bf16.enabled", "true in the config but --fp16 is given (the config has no fp16 section): the "
                 "run would train in bf16; drop --fp16, or write \"fp16\": {\"enabled\": \"auto\"} instead of bf16");
        else
            warn(p, "fp16", "--fp16 is given but the config has no \"fp16\" section: training in fp32; add "
                 "\"fp16\": {\"enabled\": \"auto\"} to train in fp16");
    }
    if (!b && p->a->has_bf16 && p->a->bf16) {
        if (c->fp16.enabled)
            soft(p, "fp16.enabled", "true in the config but --bf16 is given (the config has no bf16 section): the "
                 "run would train in fp16; drop --bf16, or write \"bf16\": {\"enabled\": \"auto\"} instead of fp16");
        else
            warn(p, "bf16", "--bf16 is given but the config has no \"bf16\" section: training in fp32; add "
                 "\"bf16\": {\"enabled\": \"auto\"} to train in bf16");
    }
    return DSCKPT_OK;
}

static const char *const OFFLOAD_OPT_KEYS[] = {"device",        "nvme_path",      "buffer_count", "pin_memory",
                                               "pipeline_read", "pipeline_write", "fast_init",    "ratio", NULL};
static const char *const OFFLOAD_PARAM_KEYS[] = {"device",     "nvme_path",  "buffer_count",
                                                 "buffer_size", "max_in_cpu", "pin_memory", NULL};

static dsckpt_status parse_offload(const pctx *p, cJSON *zero, const char *key, bool is_param, rt_offload_cfg *o) {
    char prefix[PATH_MAX_LEN];
    join(prefix, "zero_optimization", key);
    cJSON *s = NULL;
    cJSON *it = cJSON_GetObjectItemCaseSensitive(zero, key);
    if (!cJSON_IsNull(it)) DS_TRY(get_section(p, zero, key, "zero_optimization", &s)); /* null = not set */
    if (s) DS_TRY(check_keys(p, s, prefix, is_param ? OFFLOAD_PARAM_KEYS : OFFLOAD_OPT_KEYS));
    const char *dev = NULL; /* set by get_str, used only when it succeeds */
    char path[PATH_MAX_LEN];
    join(path, prefix, "device");
    DS_TRY(get_str(p, s, "device", prefix, "none", &dev));
    if (!strcmp(dev, "none")) o->device = RT_OFFLOAD_NONE;
    else if (!strcmp(dev, "cpu")) o->device = RT_OFFLOAD_CPU;
    else if (!strcmp(dev, "nvme"))
        return bad(p, path, "NVMe offload is not supported yet; use \"cpu\" or \"none\"");
    else return bad(p, path, "\"%s\" is not an offload device; use \"none\" or \"cpu\"", dev);
    const char *nvme; /* type-checked only: it matters for NVMe, which is refused */
    DS_TRY(get_str(p, s, "nvme_path", prefix, "", &nvme));
    DS_UNUSED(nvme);
    DS_TRY(get_bool(p, s, "pin_memory", prefix, false, &o->pin_memory));
    DS_TRY(get_u64(p, s, "buffer_count", prefix, 0, UINT32_MAX, is_param ? 5 : 4, &o->buffer_count));
    if (is_param) {
        DS_TRY(get_u64(p, s, "buffer_size", prefix, 0, (uint64_t)MAX_EXACT_INT, 100000000, &o->buffer_size));
        DS_TRY(get_u64(p, s, "max_in_cpu", prefix, 0, (uint64_t)MAX_EXACT_INT, 1000000000, &o->max_in_cpu));
        o->ratio = 1.0;
    } else {
        DS_TRY(get_bool(p, s, "pipeline_read", prefix, false, &o->pipeline_read));
        DS_TRY(get_bool(p, s, "pipeline_write", prefix, false, &o->pipeline_write));
        DS_TRY(get_bool(p, s, "fast_init", prefix, false, &o->fast_init));
        DS_TRY(get_f64(p, s, "ratio", prefix, 0, false, 1, 1, &o->ratio));
    }
    return DSCKPT_OK;
}

static const char *const ZERO_KEYS[] = {"stage",
                                        "offload_optimizer",
                                        "offload_param",
                                        "overlap_comm",
                                        "contiguous_gradients",
                                        "reduce_scatter",
                                        "reduce_bucket_size",
                                        "allgather_partitions",
                                        "allgather_bucket_size",
                                        "stage3_prefetch_bucket_size",
                                        "stage3_param_persistence_threshold",
                                        "stage3_max_live_parameters",
                                        "stage3_max_reuse_distance",
                                        "stage3_gather_16bit_weights_on_model_save",
                                        "sub_group_size",
                                        "round_robin_gradients",
                                        NULL};

static dsckpt_status parse_zero(const pctx *p, cJSON *root, rt_config *c) {
    const char *Z = "zero_optimization";
    cJSON *z = cJSON_GetObjectItemCaseSensitive(root, Z);
    if (cJSON_IsBool(z))
        return bad(p, Z, "the old boolean form is not supported; write {\"stage\": N} with N = 0..3");
    DS_TRY(get_section(p, root, Z, "", &z));
    if (z) DS_TRY(check_keys(p, z, Z, ZERO_KEYS));

    const cJSON *st = z ? cJSON_GetObjectItemCaseSensitive(z, "stage") : NULL;
    if (st && !cJSON_IsNumber(st)) return bad_type(p, "zero_optimization.stage", st, "an integer 0, 1, 2 or 3");
    if (st && (st->valuedouble != floor(st->valuedouble) || st->valuedouble < 0 || st->valuedouble > 3))
        return bad(p, "zero_optimization.stage", "%s is not a ZeRO stage; use 0, 1, 2 or 3", num(st->valuedouble));
    c->zero.stage = st ? (int)st->valuedouble : 0;

    /* The Trainer's hidden-size "auto"s; below stage 3 the stage3_* ones are dropped
     * by DeepSpeed, i.e. take their defaults. */
    if (z) {
        const rt_args *a = p->a;
        double h = (double)a->hidden_size;
        DS_TRY(fill_num(p, z, "reduce_bucket_size", Z, a->has_hidden_size, h * h, "hidden_size", false));
        if (c->zero.stage == 3) {
            DS_TRY(fill_num(p, z, "stage3_prefetch_bucket_size", Z, a->has_hidden_size, floor(0.9 * h * h),
                            "hidden_size", false));
            DS_TRY(fill_num(p, z, "stage3_param_persistence_threshold", Z, a->has_hidden_size, 10 * h,
                            "hidden_size", false));
        } else {
            DS_TRY(fill_const(z, "stage3_prefetch_bucket_size", 5e7));
            DS_TRY(fill_const(z, "stage3_param_persistence_threshold", 1e5));
        }
    }

    const uint64_t big = (uint64_t)MAX_EXACT_INT;
    DS_TRY(parse_offload(p, z, "offload_optimizer", false, &c->zero.offload_optimizer));
    DS_TRY(parse_offload(p, z, "offload_param", true, &c->zero.offload_param));
    DS_TRY(get_bool(p, z, "overlap_comm", Z, c->zero.stage == 3, &c->zero.overlap_comm));
    DS_TRY(get_bool(p, z, "contiguous_gradients", Z, true, &c->zero.contiguous_gradients));
    DS_TRY(get_bool(p, z, "reduce_scatter", Z, true, &c->zero.reduce_scatter));
    DS_TRY(get_u64(p, z, "reduce_bucket_size", Z, 1, big, 500000000, &c->zero.reduce_bucket_size));
    DS_TRY(get_bool(p, z, "allgather_partitions", Z, true, &c->zero.allgather_partitions));
    DS_TRY(get_u64(p, z, "allgather_bucket_size", Z, 1, big, 500000000, &c->zero.allgather_bucket_size));
    DS_TRY(get_u64(p, z, "stage3_prefetch_bucket_size", Z, 0, big, 50000000, &c->zero.stage3_prefetch_bucket_size));
    DS_TRY(get_u64(p, z, "stage3_param_persistence_threshold", Z, 0, big, 100000,
                   &c->zero.stage3_param_persistence_threshold));
    DS_TRY(get_u64(p, z, "stage3_max_live_parameters", Z, 0, big, 1000000000, &c->zero.stage3_max_live_parameters));
    DS_TRY(get_u64(p, z, "stage3_max_reuse_distance", Z, 0, big, 1000000000, &c->zero.stage3_max_reuse_distance));
    DS_TRY(get_bool(p, z, "stage3_gather_16bit_weights_on_model_save", Z, false,
                    &c->zero.stage3_gather_16bit_weights_on_model_save));
    DS_TRY(get_u64(p, z, "sub_group_size", Z, 1, big, 1000000000, &c->zero.sub_group_size));
    DS_TRY(get_bool(p, z, "round_robin_gradients", Z, false, &c->zero.round_robin_gradients));

    if (c->zero.offload_optimizer.ratio < 1.0 && c->zero.stage != 3)
        return bad(p, "zero_optimization.offload_optimizer.ratio",
                   "partial offload (ratio %g < 1) needs ZeRO stage 3 (DeepSpeed asserts this); set ratio to 1 or "
                   "stage to 3", c->zero.offload_optimizer.ratio);
    if (c->zero.offload_optimizer.device != RT_OFFLOAD_NONE && c->zero.stage == 0)
        return bad(p, "zero_optimization.offload_optimizer.device",
                   "optimizer offload needs ZeRO stage 1, 2 or 3; set zero_optimization.stage or device \"none\"");
    return DSCKPT_OK;
}

/* train_batch_size / micro / accumulation: "auto" first, then DeepSpeed's derivation. */
static dsckpt_status parse_batch(const pctx *p, cJSON *root, rt_config *c) {
    const rt_args *a = p->a;
    DS_TRY(fill_num(p, root, "train_micro_batch_size_per_gpu", "", a->has_per_device_train_batch_size,
                    (double)a->per_device_train_batch_size, "per_device_train_batch_size", true));
    DS_TRY(fill_num(p, root, "gradient_accumulation_steps", "", a->has_gradient_accumulation_steps,
                    (double)a->gradient_accumulation_steps, "gradient_accumulation_steps", true));
    const uint64_t big = (uint64_t)MAX_EXACT_INT;
    cJSON *tb_it = cJSON_GetObjectItemCaseSensitive(root, "train_batch_size");
    bool tb_auto = is_auto(tb_it);
    bool has_tb = tb_it && !tb_auto, has_mb = cJSON_GetObjectItemCaseSensitive(root, "train_micro_batch_size_per_gpu");
    bool has_ga = cJSON_GetObjectItemCaseSensitive(root, "gradient_accumulation_steps");
    uint64_t tb = 0, mb = 0, ga = 0, W = (uint64_t)p->world;
    if (has_tb) DS_TRY(get_u64(p, root, "train_batch_size", "", 1, big, 0, &tb));
    if (has_mb) DS_TRY(get_u64(p, root, "train_micro_batch_size_per_gpu", "", 1, big, 0, &mb));
    if (has_ga) DS_TRY(get_u64(p, root, "gradient_accumulation_steps", "", 1, big, 0, &ga));

    if (has_tb && has_mb && has_ga) {
    } else if (has_tb && has_mb) {
        ga = tb / mb / W;
        if (ga == 0)
            return bad(p, "gradient_accumulation_steps",
                       "derived as train_batch_size %llu / train_micro_batch_size_per_gpu %llu / world_size %llu = 0; "
                       "make train_batch_size a multiple of micro batch x world size (%llu)",
                       (unsigned long long)tb, (unsigned long long)mb, (unsigned long long)W,
                       (unsigned long long)(mb * W));
    } else if (has_tb && has_ga) {
        mb = tb / W / ga;
        if (mb == 0)
            return bad(p, "train_micro_batch_size_per_gpu",
                       "derived as train_batch_size %llu / world_size %llu / gradient_accumulation_steps %llu = 0; "
                       "make train_batch_size a multiple of world size x accumulation steps (%llu)",
                       (unsigned long long)tb, (unsigned long long)W, (unsigned long long)ga,
                       (unsigned long long)(W * ga));
    } else if (has_mb && has_ga) {
        if (ds_mul_overflow(mb, ga, &tb) || ds_mul_overflow(tb, W, &tb) || tb > big)
            return bad(p, "train_batch_size", "micro batch x accumulation x world size overflows; use smaller values");
    } else if (has_tb) {
        ga = 1;
        mb = tb / W;
        if (mb == 0)
            return bad(p, "train_micro_batch_size_per_gpu",
                       "derived as train_batch_size %llu / world_size %llu = 0; make train_batch_size at least the "
                       "world size", (unsigned long long)tb, (unsigned long long)W);
    } else if (has_mb) {
        ga = 1;
        if (ds_mul_overflow(mb, W, &tb) || tb > big)
            return bad(p, "train_batch_size", "micro batch x world size overflows; use a smaller micro batch");
    } else {
        return bad(p, "train_batch_size",
                   "neither train_batch_size nor train_micro_batch_size_per_gpu is given; set one of them (or "
                   "\"auto\" with --per_device_train_batch_size)");
    }
    /* The engine and the model take the micro batch as an int (and allocate
     * micro batch x sequence tokens): bound it, and the accumulation steps, as the
     * command-line flags are, naming the key that gave or derived it. */
    if (mb > RT_MAX_MICRO_BATCH)
        return bad(p, has_mb ? "train_micro_batch_size_per_gpu" : "train_batch_size",
                   "%s%llu is out of range; the micro batch per rank can be at most %llu%s",
                   has_mb ? "" : "gives a micro batch per rank of ", (unsigned long long)mb,
                   (unsigned long long)RT_MAX_MICRO_BATCH,
                   has_mb ? "" : " (use gradient_accumulation_steps or more ranks)");
    if (ga > RT_MAX_GRAD_ACCUM)
        return bad(p, has_ga ? "gradient_accumulation_steps" : "train_batch_size",
                   "%s%llu is out of range; gradient accumulation can be at most %llu steps",
                   has_ga ? "" : "gives gradient accumulation steps of ", (unsigned long long)ga,
                   (unsigned long long)RT_MAX_GRAD_ACCUM);
    uint64_t prod;
    if (ds_mul_overflow(mb, ga, &prod) || ds_mul_overflow(prod, W, &prod) || prod != tb)
        return bad(p, "train_batch_size",
                   "%llu != train_micro_batch_size_per_gpu %llu x gradient_accumulation_steps %llu x world_size %llu "
                   "(= %llu); set train_batch_size to %llu, or leave one of the three out so it is derived",
                   (unsigned long long)tb, (unsigned long long)mb, (unsigned long long)ga, (unsigned long long)W,
                   (unsigned long long)prod, (unsigned long long)prod);
    c->train_batch_size = tb;
    c->micro_batch = mb;
    c->grad_accum = ga;
    if (tb_auto) DS_TRY(replace(root, "train_batch_size", cJSON_CreateNumber((double)tb)));
    return DSCKPT_OK;
}

static const char *const OPT_KEYS[] = {"type", "params", NULL};
static const char *const ADAM_KEYS[] = {"lr",          "betas",           "eps",     "weight_decay",
                                        "adam_w_mode", "bias_correction", "amsgrad", "torch_adam", NULL};
static const char *const DS_OTHER_OPTIMIZERS[] = {"adagrad",  "lamb",   "onebitadam", "zerooneadam", "onebitlamb",
                                                  "muadam",   "muadamw", "musgd",     "lion",        "sgd", NULL};

static dsckpt_status parse_betas(const pctx *p, cJSON *prm, rt_config *c) {
    const char *path = "optimizer.params.betas";
    const rt_args *a = p->a;
    cJSON *it = prm ? cJSON_GetObjectItemCaseSensitive(prm, "betas") : NULL;
    if (is_auto(it)) { /* each beta not given: the Trainer's default (0.9, 0.999) */
        double v[2] = {a->has_adam_beta1 ? a->adam_beta1 : 0.9, a->has_adam_beta2 ? a->adam_beta2 : 0.999};
        DS_TRY(replace(prm, "betas", cJSON_CreateDoubleArray(v, 2)));
        it = cJSON_GetObjectItemCaseSensitive(prm, "betas");
    }
    double b[2] = {a->has_adam_beta1 ? a->adam_beta1 : 0.9, a->has_adam_beta2 ? a->adam_beta2 : 0.999};
    if (it) {
        if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != 2 || !cJSON_IsNumber(it->child) ||
            !cJSON_IsNumber(it->child->next))
            return cJSON_IsArray(it) ? bad(p, path, "must hold exactly two numbers; write [beta1, beta2]")
                                     : bad_type(p, path, it, "an array [beta1, beta2]");
        double w[2] = {it->child->valuedouble, it->child->next->valuedouble};
        bool has[2] = {a->has_adam_beta1, a->has_adam_beta2};
        for (int i = 0; i < 2; i++) {
            if (has[i] && w[i] != b[i])
                return bad(p, path, "beta%d = %s in the config but --adam_beta%d=%s; make them equal or set "
                           "the key to \"auto\"", i + 1, num(w[i]), i + 1, num(b[i]));
            b[i] = w[i];
        }
    }
    for (int i = 0; i < 2; i++)
        if (!(b[i] >= 0 && b[i] < 1))
            return bad(p, path, "beta%d = %s is out of range; use 0 <= beta < 1", i + 1, num(b[i]));
    c->optimizer.beta1 = b[0];
    c->optimizer.beta2 = b[1];
    return DSCKPT_OK;
}

static dsckpt_status parse_optimizer(const pctx *p, cJSON *root, rt_config *c) {
    const rt_args *a = p->a;
    cJSON *o, *prm = NULL;
    DS_TRY(get_section(p, root, "optimizer", "", &o));
    c->optimizer.present = o != NULL;
    c->optimizer.type = RT_OPT_ADAMW;
    if (o) {
        DS_TRY(check_keys(p, o, "optimizer", OPT_KEYS));
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
        if (!t) return bad(p, "optimizer.type", "missing; write \"type\": \"AdamW\" (or \"Adam\")");
        if (!cJSON_IsString(t)) return bad_type(p, "optimizer.type", t, "\"Adam\" or \"AdamW\"");
        if (!strcasecmp(t->valuestring, "adam")) c->optimizer.type = RT_OPT_ADAM;
        else if (!strcasecmp(t->valuestring, "adamw")) c->optimizer.type = RT_OPT_ADAMW;
        else {
            if (in_list_ci(DS_OTHER_OPTIMIZERS, t->valuestring))
                return bad(p, "optimizer.type", "\"%s\" is a DeepSpeed optimizer that dstrain does not implement; "
                           "use \"Adam\" or \"AdamW\"", t->valuestring);
            return bad(p, "optimizer.type", "unknown optimizer \"%s\"; use \"Adam\" or \"AdamW\"", t->valuestring);
        }
        DS_TRY(get_section(p, o, "params", "optimizer", &prm));
        if (prm) {
            if (cJSON_GetObjectItemCaseSensitive(prm, "max_grad_norm"))
                return bad(p, "optimizer.params.max_grad_norm",
                           "not an optimizer parameter in DeepSpeed; use the top-level \"gradient_clipping\"");
            DS_TRY(check_keys(p, prm, "optimizer.params", ADAM_KEYS));
            DS_TRY(fill_num(p, prm, "lr", "optimizer.params", a->has_learning_rate, a->learning_rate,
                            "learning_rate", true));
            DS_TRY(fill_num(p, prm, "eps", "optimizer.params", a->has_adam_epsilon, a->adam_epsilon, "adam_epsilon",
                            true));
            DS_TRY(fill_num(p, prm, "weight_decay", "optimizer.params", a->has_weight_decay, a->weight_decay,
                            "weight_decay", true));
        }
    }
    /* Without a section the Trainer builds AdamW from its arguments; FusedAdam defaults
     * otherwise. */
    const char *P = "optimizer.params";
    DS_TRY(get_f64(p, prm, "lr", P, 0, false, INFINITY, a->has_learning_rate ? a->learning_rate : 1e-3,
                   &c->optimizer.lr));
    DS_TRY(parse_betas(p, prm, c));
    DS_TRY(get_f64(p, prm, "eps", P, 0, false, INFINITY, a->has_adam_epsilon ? a->adam_epsilon : 1e-8,
                   &c->optimizer.eps));
    DS_TRY(get_f64(p, prm, "weight_decay", P, 0, false, INFINITY, a->has_weight_decay ? a->weight_decay : 0,
                   &c->optimizer.weight_decay));
    DS_TRY(get_bool(p, prm, "adam_w_mode", P, true, &c->optimizer.adam_w_mode));
    DS_TRY(get_bool(p, prm, "bias_correction", P, true, &c->optimizer.bias_correction));
    bool amsgrad, torch_adam;
    DS_TRY(get_bool(p, prm, "amsgrad", P, false, &amsgrad));
    if (amsgrad) return bad(p, "optimizer.params.amsgrad", "AMSGrad is not supported (FusedAdam refuses it too); "
                            "set it to false");
    DS_TRY(get_bool(p, prm, "torch_adam", P, false, &torch_adam)); /* same maths either way */
    c->optimizer.decoupled = c->optimizer.type == RT_OPT_ADAMW || c->optimizer.adam_w_mode;
    return DSCKPT_OK;
}

static const char *const SCHED_KEYS[] = {"type", "params", NULL};
static const char *const WARMUP_LR_KEYS[] = {"warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "warmup_type",
                                             NULL};
static const char *const WARMUP_DECAY_KEYS[] = {"warmup_min_lr", "warmup_max_lr", "warmup_num_steps",
                                                "warmup_type",   "total_num_steps", NULL};
static const char *const WARMUP_COSINE_KEYS[] = {"total_num_steps", "warmup_min_ratio", "warmup_num_steps",
                                                 "cos_min_ratio",   "warmup_type", NULL};

/* The config has no "scheduler" section: warns when --warmup_steps has no effect,
 * and with a --lr_scheduler_type other than constant adds the matching section to
 * root (*s). */
static dsckpt_status scheduler_from_args(const pctx *p, cJSON *root, cJSON **s) {
    const rt_args *a = p->a;
    if (a->has_warmup_steps && a->warmup_steps &&
        (!a->lr_scheduler_type || !strcmp(a->lr_scheduler_type, "constant")))
        warn(p, "scheduler", "--warmup_steps %llu has no effect: the config has no \"scheduler\" section and "
             "--lr_scheduler_type is %s (a constant learning rate); pass --lr_scheduler_type linear, cosine or "
             "constant_with_warmup, or add a scheduler section", (unsigned long long)a->warmup_steps,
             a->lr_scheduler_type ? "constant" : "not given");
    if (a->lr_scheduler_type && strcmp(a->lr_scheduler_type, "constant")) {
        /* No section: the Trainer's own schedule from --lr_scheduler_type, written
         * as the DeepSpeed scheduler that matches it (linear warmup, then linear or
         * cosine decay to 0, or constant after warmup); it lands in the resolved
         * config like any other section. */
        const char *lt = a->lr_scheduler_type;
        const char *type = !strcmp(lt, "linear") ? "WarmupDecayLR" : !strcmp(lt, "cosine") ? "WarmupCosineLR"
                                                                                                : "WarmupLR";
        cJSON *ns = cJSON_CreateObject(), *np = ns ? cJSON_AddObjectToObject(ns, "params") : NULL;
        if (!np) {
            cJSON_Delete(ns);
            return ds_err(DSCKPT_ENOMEM, "out of memory");
        }
        cJSON_AddStringToObject(ns, "type", type);
        cJSON_AddNumberToObject(np, "warmup_num_steps", a->has_warmup_steps ? (double)a->warmup_steps : 0);
        cJSON_AddStringToObject(np, "warmup_type", "linear");
        if (!strcmp(type, "WarmupCosineLR")) {
            cJSON_AddNumberToObject(np, "warmup_min_ratio", 0);
            cJSON_AddNumberToObject(np, "cos_min_ratio", 0);
        } else {
            cJSON_AddNumberToObject(np, "warmup_min_lr", 0);
            cJSON_AddNumberToObject(np, "warmup_max_lr", a->has_learning_rate ? a->learning_rate : 5e-5);
        }
        if (strcmp(type, "WarmupLR")) cJSON_AddNumberToObject(np, "total_num_steps", a->has_max_steps ? (double)a->max_steps : 0);
        cJSON_AddItemToObject(root, "scheduler", ns);
        *s = ns;
    }
    return DSCKPT_OK;
}

/* scheduler.type (one of the three DeepSpeed schedulers dstrain implements) into
 * c; *keys: the keys its params may hold. */
static dsckpt_status scheduler_type(const pctx *p, const cJSON *s, rt_config *c, const cJSON **tp,
                                    const char *const **keys) {
    *keys = NULL;
    DS_TRY(check_keys(p, s, "scheduler", SCHED_KEYS));
    const cJSON *t = *tp = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (!t) return bad(p, "scheduler.type", "missing; write \"type\": \"WarmupLR\", \"WarmupDecayLR\" or "
                       "\"WarmupCosineLR\", or drop the scheduler section for a constant lr");
    if (!cJSON_IsString(t))
        return bad_type(p, "scheduler.type", t, "\"WarmupLR\", \"WarmupDecayLR\" or \"WarmupCosineLR\"");
    static const char *const names[] = {"WarmupLR", "WarmupDecayLR", "WarmupCosineLR"};
    for (int i = 0; i < 3; i++) {
        if (!strcmp(t->valuestring, names[i])) {
            c->scheduler.type = (rt_sched_type)(RT_SCHED_WARMUP_LR + i);
            *keys = i == 0 ? WARMUP_LR_KEYS : i == 1 ? WARMUP_DECAY_KEYS : WARMUP_COSINE_KEYS;
        } else if (!strcasecmp(t->valuestring, names[i])) {
            return bad(p, "scheduler.type", "unknown scheduler \"%s\" (DeepSpeed matches the name exactly); did you "
                       "mean \"%s\"?", t->valuestring, names[i]);
        }
    }
    if (!*keys) {
        if (!strcmp(t->valuestring, "OneCycle") || !strcmp(t->valuestring, "LRRangeTest"))
            return bad(p, "scheduler.type", "\"%s\" is a DeepSpeed scheduler that dstrain does not implement; use "
                       "WarmupLR, WarmupDecayLR or WarmupCosineLR", t->valuestring);
        return bad(p, "scheduler.type", "unknown scheduler \"%s\"; use WarmupLR, WarmupDecayLR or WarmupCosineLR",
                   t->valuestring);
    }
    return DSCKPT_OK;
}

static dsckpt_status parse_scheduler(const pctx *p, cJSON *root, rt_config *c) {
    const rt_args *a = p->a;
    cJSON *s, *prm = NULL;
    DS_TRY(get_section(p, root, "scheduler", "", &s));
    c->scheduler.type = RT_SCHED_NONE;
    if (!s) DS_TRY(scheduler_from_args(p, root, &s));
    if (!s) return DSCKPT_OK;
    const cJSON *t = NULL;
    const char *const *keys = NULL;
    DS_TRY(scheduler_type(p, s, c, &t, &keys));
    DS_TRY(get_section(p, s, "params", "scheduler", &prm));
    const char *P = "scheduler.params";
    if (prm) {
        if (cJSON_GetObjectItemCaseSensitive(prm, "last_batch_iteration"))
            return bad(p, "scheduler.params.last_batch_iteration",
                       "not supported: the step is restored from the checkpoint; remove it");
        DS_TRY(check_keys(p, prm, P, keys));
        DS_TRY(fill_const(prm, "warmup_min_lr", 0));
        DS_TRY(fill_num(p, prm, "warmup_max_lr", P, a->has_learning_rate, a->learning_rate, "learning_rate", true));
        DS_TRY(fill_num(p, prm, "warmup_num_steps", P, a->has_warmup_steps, (double)a->warmup_steps,
                        "warmup_steps", true));
    }
    if (a->has_warmup_steps && !(prm && cJSON_GetObjectItemCaseSensitive(prm, "warmup_num_steps")))
        warn(p, "scheduler.params.warmup_num_steps", "absent, so DeepSpeed's default (1000) is used and "
             "--warmup_steps %llu has no effect; set the key to \"auto\"", (unsigned long long)a->warmup_steps);
    if (prm) {
        DS_TRY(fill_num(p, prm, "total_num_steps", P, a->has_max_steps, (double)a->max_steps, "max_steps", true));
    }
    const uint64_t big = (uint64_t)MAX_EXACT_INT;
    DS_TRY(get_f64(p, prm, "warmup_min_lr", P, 0, false, INFINITY, 0, &c->scheduler.warmup_min_lr));
    DS_TRY(get_f64(p, prm, "warmup_max_lr", P, 0, false, INFINITY, 0.001, &c->scheduler.warmup_max_lr));
    DS_TRY(get_u64(p, prm, "warmup_num_steps", P, 0, big, 1000, &c->scheduler.warmup_num_steps));
    const char *wt;
    DS_TRY(get_str(p, prm, "warmup_type", P, "log", &wt));
    if (!strcmp(wt, "log")) c->scheduler.warmup_type = RT_WARMUP_LOG;
    else if (!strcmp(wt, "linear")) c->scheduler.warmup_type = RT_WARMUP_LINEAR;
    else return bad(p, "scheduler.params.warmup_type", "\"%s\" is not a warmup type; use \"log\" or \"linear\"", wt);
    DS_TRY(get_f64(p, prm, "warmup_min_ratio", P, 0, false, 1, 0, &c->scheduler.warmup_min_ratio));
    DS_TRY(get_f64(p, prm, "cos_min_ratio", P, 0, false, 1, 0.0001, &c->scheduler.cos_min_ratio));
    if (c->scheduler.type != RT_SCHED_WARMUP_LR) {
        if (!prm || !cJSON_GetObjectItemCaseSensitive(prm, "total_num_steps"))
            return bad(p, "scheduler.params.total_num_steps", "missing: %s needs it; write the number of optimizer "
                       "steps (or \"auto\" with --max_steps)", t->valuestring);
        DS_TRY(get_u64(p, prm, "total_num_steps", P, 1, big, 0, &c->scheduler.total_num_steps));
    }
    uint64_t w_eff = DS_MAX(c->scheduler.warmup_num_steps, 2);
    if (c->scheduler.type == RT_SCHED_WARMUP_COSINE_LR && c->scheduler.total_num_steps == w_eff)
        return bad(p, "scheduler.params.total_num_steps",
                   "equals the warmup length %llu (DeepSpeed divides by total - warmup and fails); make "
                   "total_num_steps larger than warmup_num_steps", (unsigned long long)w_eff);
    return DSCKPT_OK;
}

static const char *const CKPT_KEYS[] = {"tag_validation", "load_universal", "use_node_local_storage", NULL};

static dsckpt_status parse_misc(const pctx *p, cJSON *root, rt_config *c) {
    const rt_args *a = p->a;
    DS_TRY(fill_num(p, root, "gradient_clipping", "", a->has_max_grad_norm, a->max_grad_norm, "max_grad_norm", true));
    DS_TRY(get_f64(p, root, "gradient_clipping", "", 0, false, INFINITY, 0, &c->gradient_clipping));
    DS_TRY(get_u64(p, root, "steps_per_print", "", 1, (uint64_t)MAX_EXACT_INT, 0, &c->steps_per_print));
    DS_TRY(get_bool(p, root, "wall_clock_breakdown", "", false, &c->wall_clock_breakdown));
    DS_TRY(get_bool(p, root, "zero_allow_untested_optimizer", "", false, &c->zero_allow_untested_optimizer));
    DS_TRY(get_bool(p, root, "prescale_gradients", "", false, &c->prescale_gradients));
    DS_TRY(get_f64(p, root, "gradient_predivide_factor", "", 0, true, INFINITY, 1.0, &c->gradient_predivide_factor));

    cJSON *ck;
    DS_TRY(get_section(p, root, "checkpoint", "", &ck));
    if (ck) DS_TRY(check_keys(p, ck, "checkpoint", CKPT_KEYS));
    const char *tv;
    DS_TRY(get_str(p, ck, "tag_validation", "checkpoint", "Warn", &tv));
    if (!strcasecmp(tv, "ignore")) c->checkpoint.tag_validation = RT_TAG_IGNORE;
    else if (!strcasecmp(tv, "warn")) c->checkpoint.tag_validation = RT_TAG_WARN;
    else if (!strcasecmp(tv, "fail")) c->checkpoint.tag_validation = RT_TAG_FAIL;
    else return bad(p, "checkpoint.tag_validation", "\"%s\" is not a mode; use \"Ignore\", \"Warn\" or \"Fail\"", tv);
    DS_TRY(get_bool(p, ck, "load_universal", "checkpoint", false, &c->checkpoint.load_universal));
    DS_TRY(get_bool(p, ck, "use_node_local_storage", "checkpoint", false, &c->checkpoint.use_node_local_storage));
    return DSCKPT_OK;
}

static const char *const TOP_KEYS[] = {"train_batch_size",
                                       "train_micro_batch_size_per_gpu",
                                       "gradient_accumulation_steps",
                                       "optimizer",
                                       "scheduler",
                                       "fp16",
                                       "bf16",
                                       "bfloat16",
                                       "zero_optimization",
                                       "gradient_clipping",
                                       "steps_per_print",
                                       "wall_clock_breakdown",
                                       "checkpoint",
                                       "zero_allow_untested_optimizer",
                                       "prescale_gradients",
                                       "gradient_predivide_factor",
                                       NULL};

/* 1-based line and column of byte `off` in text. */
static void line_col(const char *text, size_t off, unsigned long *line, unsigned long *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') ++*line, *col = 1;
        else ++*col;
    }
}

void rt_args_init(rt_args *a) { memset(a, 0, sizeof *a); }

/* Steps per epoch from the batch, and max_steps from --num_train_epochs when
 * --max_steps is not given (then *a carries it to the scheduler's "auto"). */
static void epochs(rt_args *a, rt_config *c) {
    c->steps_per_epoch = 1;
    if (a->samples_per_epoch && c->train_batch_size && a->samples_per_epoch / c->train_batch_size > 1)
        c->steps_per_epoch = a->samples_per_epoch / c->train_batch_size;
    if (!a->has_num_train_epochs || a->has_max_steps) return;
    double n = ceil(a->num_train_epochs * (double)c->steps_per_epoch);
    c->max_steps_from_epochs = n < 1 ? 1 : n > 1099511627776.0 ? 1099511627776u : (uint64_t)n;
    a->has_max_steps = true;
    a->max_steps = c->max_steps_from_epochs;
}

/* The text as one JSON value and nothing after it; errors give line and column. */
static dsckpt_status parse_json_text(const char *text, size_t len, const char *file, cJSON **root_out) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    unsigned long line, col;
    if (!root) {
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        line_col(text, off, &line, &col);
        return ds_err(DSCKPT_EINVAL, "%s: line %lu, column %lu: malformed JSON%s; fix the syntax there (a missing "
                      "comma, quote or bracket, or a trailing comma)", file, line, col,
                      off >= len ? " (the text ends too early)" : "");
    }
    size_t off = (size_t)(end - text);
    while (off < len && (text[off] == ' ' || text[off] == '\t' || text[off] == '\n' || text[off] == '\r')) off++;
    if (off < len) {
        cJSON_Delete(root);
        line_col(text, off, &line, &col);
        return ds_err(DSCKPT_EINVAL, "%s: line %lu, column %lu: unexpected text after the JSON object; remove it",
                      file, line, col);
    }
    *root_out = root;
    return DSCKPT_OK;
}

/* Every section is parsed even after another failed, so one run reports every
 * problem (each section's first, and every flag that disagrees). */
static dsckpt_status parse_sections(pctx *p, cJSON *root, rt_config *out, rt_args *a) {
    static dsckpt_status (*const sections[])(const pctx *, cJSON *, rt_config *) = {
        parse_fp16, parse_zero, parse_batch, parse_optimizer, parse_scheduler, parse_misc};
    soft_errs se = {.len = 0};
    p->soft = &se;
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        dsckpt_status s1 = sections[i](p, root, out);
        if (sections[i] == parse_batch && s1 == DSCKPT_OK) epochs(a, out);
        if (s1 == DSCKPT_EINVAL) {
            /* "<file>: <path>: <message>": keep the part after the file name. */
            const char *m = dsckpt_last_error(), *pfx = strstr(m, ": ");
            soft(p, "", "%s", pfx && !strncmp(m, p->file, (size_t)(pfx - m)) ? pfx + 2 : m);
        } else if (s1) {
            p->soft = NULL;
            return s1;
        }
    }
    dsckpt_status st = DSCKPT_OK;
    /* One problem: the message as before ("<file>: <path>: <message>"). */
    if (se.n == 1) st = ds_err(DSCKPT_EINVAL, "%s: %s", p->file, se.text);
    if (se.n > 1) st = ds_err(DSCKPT_EINVAL, "%s: %d problems:\n  %s", p->file, se.n, se.text);
    p->soft = NULL;
    return st;
}

dsckpt_status rt_config_parse(const char *text, size_t len, const char *name_for_errors, const rt_args *args,
                              int world_size, rt_config *out) {
    memset(out, 0, sizeof *out);
    rt_args none;
    rt_args_init(&none);
    pctx p = {name_for_errors ? name_for_errors : "ds_config", args ? args : &none, world_size, NULL, NULL};
    if (world_size < 1) return ds_err(DSCKPT_EINVAL, "%s: world size %d must be at least 1", p.file, world_size);
    if (!text) return ds_err(DSCKPT_EINVAL, "%s: no text", p.file);
    cJSON *root = NULL;
    DS_TRY(parse_json_text(text, len, p.file, &root));
    dsckpt_status st;
    if (!cJSON_IsObject(root)) {
        st = ds_err(DSCKPT_EINVAL, "%s: the config must be a JSON object ({...}), not %s", p.file, kind(root));
        goto fail;
    }
    /* DeepSpeed (Python's json) keeps the last of two equal keys, cJSON the first:
     * a repeated key would train with a setting other than DeepSpeed's. */
    if ((st = ds_json_unique_keys(root, DSCKPT_EINVAL, p.file))) goto fail;
    out->world_size = world_size;
    if (!(out->warnings = p.warnings = cJSON_CreateArray())) {
        st = ds_err(DSCKPT_ENOMEM, "out of memory");
        goto fail;
    }
    DS_TRYGOTO(check_top_keys(&p, root, TOP_KEYS), fail);
    rt_args a = *p.a; /* max_steps may come from the epochs */
    p.a = &a;
    DS_TRYGOTO(parse_sections(&p, root, out, &a), fail);
    out->resolved = root;
    return DSCKPT_OK;
fail:
    cJSON_Delete(root);
    cJSON_Delete(out->warnings);
    memset(out, 0, sizeof *out);
    return st;
}

dsckpt_status rt_config_load(const char *path, const rt_args *args, int world_size, rt_config *out) {
    memset(out, 0, sizeof *out);
    char *text = NULL;
    size_t len = 0;
    dsckpt_status st = ds_read_small_file(path, CONFIG_MAX_BYTES, &text, &len);
    if (st == DSCKPT_ECORRUPT) st = ds_err_prefix(DSCKPT_EINVAL, "DeepSpeed config");
    if (st) return st;
    st = rt_config_parse(text, len, path, args, world_size, out);
    free(text);
    return st;
}

void rt_config_free(rt_config *c) {
    if (!c) return;
    cJSON_Delete(c->resolved);
    cJSON_Delete(c->warnings);
    c->resolved = c->warnings = NULL;
}

const char *rt_opt_type_name(rt_opt_type t) { return t == RT_OPT_ADAM ? "Adam" : "AdamW"; }

const char *rt_sched_type_name(rt_sched_type t) {
    switch (t) {
    case RT_SCHED_WARMUP_LR: return "WarmupLR";
    case RT_SCHED_WARMUP_DECAY_LR: return "WarmupDecayLR";
    case RT_SCHED_WARMUP_COSINE_LR: return "WarmupCosineLR";
    default: return "none";
    }
}
