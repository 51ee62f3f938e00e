/*
 * test_rt_config.c — ds_config.json parsing: DeepSpeed's defaults, "auto" filled
 * from Trainer-style arguments, batch-size derivation, the resolved JSON round trip,
 * and a catalogue of bad configs, each refused with EINVAL and a message naming the
 * file and the key path.
 */
#include "config.h"
#include "tutil.h"

#include <stdlib.h>
#include <string.h>

static dsckpt_status parse(const char *js, const rt_args *a, int world, rt_config *c) {
    return rt_config_parse(js, strlen(js), "ds.json", a, world, c);
}

static void test_defaults(void) {
    rt_config c;
    TU_ASSERT_OK(parse("{\"train_batch_size\": 8}", NULL, 2, &c));
    CU_ASSERT_EQUAL(c.train_batch_size, 8);
    CU_ASSERT_EQUAL(c.micro_batch, 4);
    CU_ASSERT_EQUAL(c.grad_accum, 1);
    CU_ASSERT_EQUAL(c.world_size, 2);
    CU_ASSERT_FALSE(c.optimizer.present);
    CU_ASSERT_EQUAL(c.optimizer.type, RT_OPT_ADAMW);
    CU_ASSERT_EQUAL(c.optimizer.lr, 1e-3);
    CU_ASSERT_EQUAL(c.optimizer.beta1, 0.9);
    CU_ASSERT_EQUAL(c.optimizer.beta2, 0.999);
    CU_ASSERT_EQUAL(c.optimizer.eps, 1e-8);
    CU_ASSERT_EQUAL(c.optimizer.weight_decay, 0);
    CU_ASSERT(c.optimizer.bias_correction && c.optimizer.decoupled);
    CU_ASSERT_EQUAL(c.scheduler.type, RT_SCHED_NONE);
    CU_ASSERT_FALSE(c.fp16.enabled || c.bf16.enabled);
    CU_ASSERT_EQUAL(c.fp16.loss_scale, 0);
    CU_ASSERT_EQUAL(c.fp16.initial_scale_power, 16);
    CU_ASSERT_EQUAL(c.fp16.loss_scale_window, 1000);
    CU_ASSERT_EQUAL(c.fp16.hysteresis, 2);
    CU_ASSERT_EQUAL(c.fp16.min_loss_scale, 1);
    CU_ASSERT_FALSE(c.fp16.dynamic_args_given);
    CU_ASSERT_EQUAL(c.zero.stage, 0);
    CU_ASSERT_FALSE(c.zero.overlap_comm); /* stage != 3 */
    CU_ASSERT(c.zero.contiguous_gradients && c.zero.reduce_scatter && c.zero.allgather_partitions);
    CU_ASSERT_EQUAL(c.zero.reduce_bucket_size, 500000000);
    CU_ASSERT_EQUAL(c.zero.allgather_bucket_size, 500000000);
    CU_ASSERT_EQUAL(c.zero.stage3_prefetch_bucket_size, 50000000);
    CU_ASSERT_EQUAL(c.zero.stage3_param_persistence_threshold, 100000);
    CU_ASSERT_EQUAL(c.zero.stage3_max_live_parameters, 1000000000);
    CU_ASSERT_EQUAL(c.zero.stage3_max_reuse_distance, 1000000000);
    CU_ASSERT_EQUAL(c.zero.sub_group_size, 1000000000);
    CU_ASSERT_EQUAL(c.zero.offload_optimizer.device, RT_OFFLOAD_NONE);
    CU_ASSERT_EQUAL(c.zero.offload_optimizer.ratio, 1.0);
    CU_ASSERT_EQUAL(c.zero.offload_param.buffer_count, 5);
    CU_ASSERT_EQUAL(c.gradient_clipping, 0);
    CU_ASSERT_EQUAL(c.steps_per_print, 0);
    CU_ASSERT_EQUAL(c.checkpoint.tag_validation, RT_TAG_WARN);
    CU_ASSERT_EQUAL(c.gradient_predivide_factor, 1.0);
    CU_ASSERT_PTR_NOT_NULL(c.resolved);
    rt_config_free(&c);
    rt_config_free(&c); /* idempotent */
    rt_config_free(NULL);
}

/* A Hugging Face style ZeRO-3 config, "auto" wherever the Trainer allows it. */
static const char *HF_Z3 =
    "{\n"
    "  \"fp16\": {\"enabled\": \"auto\", \"loss_scale\": 0, \"loss_scale_window\": 1000,\n"
    "           \"initial_scale_power\": 16, \"hysteresis\": 2, \"min_loss_scale\": 1},\n"
    "  \"bf16\": {\"enabled\": \"auto\"},\n"
    "  \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": \"auto\", \"betas\": \"auto\",\n"
    "                \"eps\": \"auto\", \"weight_decay\": \"auto\"}},\n"
    "  \"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": {\"warmup_min_lr\": \"auto\",\n"
    "                \"warmup_max_lr\": \"auto\", \"warmup_num_steps\": \"auto\", \"total_num_steps\": \"auto\"}},\n"
    "  \"zero_optimization\": {\"stage\": 3, \"offload_optimizer\": {\"device\": \"cpu\", \"pin_memory\": true},\n"
    "    \"offload_param\": {\"device\": \"cpu\", \"pin_memory\": true}, \"overlap_comm\": true,\n"
    "    \"contiguous_gradients\": true, \"sub_group_size\": 1e9, \"reduce_bucket_size\": \"auto\",\n"
    "    \"stage3_prefetch_bucket_size\": \"auto\", \"stage3_param_persistence_threshold\": \"auto\",\n"
    "    \"stage3_max_live_parameters\": 1e9, \"stage3_max_reuse_distance\": 1e9,\n"
    "    \"stage3_gather_16bit_weights_on_model_save\": true},\n"
    "  \"gradient_accumulation_steps\": \"auto\",\n"
    "  \"gradient_clipping\": \"auto\",\n"
    "  \"steps_per_print\": 2000,\n"
    "  \"train_batch_size\": \"auto\",\n"
    "  \"train_micro_batch_size_per_gpu\": \"auto\",\n"
    "  \"wall_clock_breakdown\": false\n"
    "}\n";

static rt_args hf_args(void) {
    rt_args a;
    rt_args_init(&a);
    a.has_per_device_train_batch_size = true, a.per_device_train_batch_size = 4;
    a.has_gradient_accumulation_steps = true, a.gradient_accumulation_steps = 2;
    a.has_learning_rate = true, a.learning_rate = 3e-4;
    a.has_weight_decay = true, a.weight_decay = 0.01;
    a.has_adam_beta1 = true, a.adam_beta1 = 0.9;
    a.has_adam_beta2 = true, a.adam_beta2 = 0.95;
    a.has_adam_epsilon = true, a.adam_epsilon = 1e-6;
    a.has_max_grad_norm = true, a.max_grad_norm = 1.0;
    a.has_warmup_steps = true, a.warmup_steps = 100;
    a.has_max_steps = true, a.max_steps = 5000;
    a.has_bf16 = true, a.bf16 = true;
    a.has_fp16 = true, a.fp16 = false;
    a.has_hidden_size = true, a.hidden_size = 256;
    return a;
}

static void test_hf_auto(void) {
    rt_args a = hf_args();
    rt_config c;
    TU_ASSERT_OK(parse(HF_Z3, &a, 4, &c));
    CU_ASSERT_EQUAL(c.micro_batch, 4);
    CU_ASSERT_EQUAL(c.grad_accum, 2);
    CU_ASSERT_EQUAL(c.train_batch_size, 32); /* 4 x 2 x 4 */
    CU_ASSERT(c.bf16.enabled && !c.fp16.enabled);
    CU_ASSERT(c.fp16.dynamic_args_given);
    CU_ASSERT_EQUAL(c.optimizer.lr, 3e-4);
    CU_ASSERT_EQUAL(c.optimizer.beta2, 0.95);
    CU_ASSERT_EQUAL(c.optimizer.eps, 1e-6);
    CU_ASSERT_EQUAL(c.optimizer.weight_decay, 0.01);
    CU_ASSERT_EQUAL(c.scheduler.type, RT_SCHED_WARMUP_DECAY_LR);
    CU_ASSERT_EQUAL(c.scheduler.warmup_min_lr, 0);
    CU_ASSERT_EQUAL(c.scheduler.warmup_max_lr, 3e-4);
    CU_ASSERT_EQUAL(c.scheduler.warmup_num_steps, 100);
    CU_ASSERT_EQUAL(c.scheduler.total_num_steps, 5000);
    CU_ASSERT_EQUAL(c.scheduler.warmup_type, RT_WARMUP_LOG);
    CU_ASSERT_EQUAL(c.gradient_clipping, 1.0);
    CU_ASSERT_EQUAL(c.zero.stage, 3);
    CU_ASSERT_EQUAL(c.zero.reduce_bucket_size, 65536);            /* 256^2 */
    CU_ASSERT_EQUAL(c.zero.stage3_prefetch_bucket_size, 58982);   /* floor(0.9 * 65536) */
    CU_ASSERT_EQUAL(c.zero.stage3_param_persistence_threshold, 2560);
    CU_ASSERT_EQUAL(c.zero.sub_group_size, 1000000000);           /* written 1e9 */
    CU_ASSERT_EQUAL(c.zero.offload_optimizer.device, RT_OFFLOAD_CPU);
    CU_ASSERT(c.zero.offload_param.pin_memory && c.zero.stage3_gather_16bit_weights_on_model_save);
    CU_ASSERT_EQUAL(c.steps_per_print, 2000);
    /* No "auto" is left in the resolved JSON. */
    char *txt = cJSON_PrintUnformatted(c.resolved);
    CU_ASSERT_PTR_NULL(strstr(txt, "auto"));
    CU_ASSERT_PTR_NOT_NULL(strstr(txt, "\"betas\":[0.9,0.95]"));
    CU_ASSERT_PTR_NOT_NULL(strstr(txt, "\"train_batch_size\":32"));
    free(txt);
    rt_config_free(&c);
}

static void test_resolved_round_trip(void) {
    rt_args a = hf_args();
    rt_config c, d;
    TU_ASSERT_OK(parse(HF_Z3, &a, 4, &c));
    char *txt = cJSON_Print(c.resolved);
    /* Re-read with no arguments at all: the same struct, the same JSON. */
    TU_ASSERT_OK(parse(txt, NULL, 4, &d));
    cJSON *rc = c.resolved, *rd = d.resolved;
    c.resolved = d.resolved = NULL;
    CU_ASSERT_EQUAL(cJSON_GetArraySize(c.warnings), 0);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(d.warnings), 0);
    rt_config_free(&c);
    rt_config_free(&d);
    CU_ASSERT_EQUAL(memcmp(&c, &d, sizeof c), 0);
    CU_ASSERT(cJSON_Compare(rc, rd, 1));
    /* And with the same arguments again: every given flag matches, no mismatch. */
    rt_config e;
    TU_ASSERT_OK(parse(txt, &a, 4, &e));
    CU_ASSERT(cJSON_Compare(rc, e.resolved, 1));
    rt_config_free(&e);
    cJSON_Delete(rc);
    cJSON_Delete(rd);
    free(txt);

    /* Through a file. */
    char *dir = tu_mkdtemp(), *path = tu_path(dir, "ds_config.json");
    CU_ASSERT_EQUAL_FATAL(tu_write(path, HF_Z3, strlen(HF_Z3)), 0);
    TU_ASSERT_OK(rt_config_load(path, &a, 4, &c));
    CU_ASSERT_EQUAL(c.train_batch_size, 32);
    rt_config_free(&c);
    char *missing = tu_path(dir, "nope.json");
    CU_ASSERT_EQUAL(rt_config_load(missing, &a, 4, &c), DSCKPT_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "nope.json"));
    CU_ASSERT_PTR_NULL(c.resolved);
    tu_rmtree(dir);
    free(missing);
    free(path);
    free(dir);
}

static void test_batch_derivation(void) {
    /* -1 = key absent. Expected values follow DeepSpeed's _set_batch_related_parameters. */
    static const struct {
        long tb, mb, ga;
        int world;
        uint64_t want_tb, want_mb, want_ga;
    } ok[] = {
        {32, 4, -1, 2, 32, 4, 4},   /* accum = 32 / 4 / 2 */
        {32, -1, 2, 4, 32, 4, 2},   /* micro = 32 / 4 / 2 */
        {-1, 3, 5, 2, 30, 3, 5},    /* batch = 3 x 5 x 2 */
        {16, -1, -1, 4, 16, 4, 1},  /* accum 1, micro = 16 / 4 */
        {-1, 2, -1, 3, 6, 2, 1},    /* accum 1, batch = 2 x 3 */
        {24, 3, 2, 4, 24, 3, 2},    /* all three, consistent */
        {7, 7, 1, 1, 7, 7, 1},
    };
    char js[256];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int n = snprintf(js, sizeof js, "{");
        if (ok[i].tb >= 0) n += snprintf(js + n, sizeof js - (size_t)n, "\"train_batch_size\": %ld,", ok[i].tb);
        if (ok[i].mb >= 0)
            n += snprintf(js + n, sizeof js - (size_t)n, "\"train_micro_batch_size_per_gpu\": %ld,", ok[i].mb);
        if (ok[i].ga >= 0)
            n += snprintf(js + n, sizeof js - (size_t)n, "\"gradient_accumulation_steps\": %ld,", ok[i].ga);
        js[n - 1] = '}';
        rt_config c;
        TU_ASSERT_OK(parse(js, NULL, ok[i].world, &c));
        CU_ASSERT_EQUAL(c.train_batch_size, ok[i].want_tb);
        CU_ASSERT_EQUAL(c.micro_batch, ok[i].want_mb);
        CU_ASSERT_EQUAL(c.grad_accum, ok[i].want_ga);
        rt_config_free(&c);
    }
    /* Inconsistent: the message gives the numbers and the fix. */
    rt_config c;
    CU_ASSERT_EQUAL(parse("{\"train_batch_size\": 24, \"train_micro_batch_size_per_gpu\": 3, "
                          "\"gradient_accumulation_steps\": 2}", NULL, 2, &c), DSCKPT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "24 != train_micro_batch_size_per_gpu 3 x "
                                                       "gradient_accumulation_steps 2 x world_size 2 (= 12)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "set train_batch_size to 12"));
    /* DeepSpeed's integer division leaves a remainder: 10 / 3 / 1 = 3, 3 x 3 = 9 != 10. */
    CU_ASSERT_EQUAL(parse("{\"train_batch_size\": 10, \"train_micro_batch_size_per_gpu\": 3}", NULL, 1, &c),
                    DSCKPT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "10 != "));
    /* Derived to zero. */
    CU_ASSERT_EQUAL(parse("{\"train_batch_size\": 2}", NULL, 4, &c), DSCKPT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "train_micro_batch_size_per_gpu"));
    /* "auto" batch from the arguments, batch size derived for the world size. */
    rt_args a;
    rt_args_init(&a);
    a.has_per_device_train_batch_size = true, a.per_device_train_batch_size = 4;
    a.has_gradient_accumulation_steps = true, a.gradient_accumulation_steps = 2;
    TU_ASSERT_OK(parse("{\"train_batch_size\": \"auto\", \"train_micro_batch_size_per_gpu\": \"auto\", "
                       "\"gradient_accumulation_steps\": \"auto\"}", &a, 2, &c));
    CU_ASSERT_EQUAL(c.train_batch_size, 16);
    rt_config_free(&c);
}

static void test_good_variants(void) {
    rt_config c;
    /* "Adam" (any case) is AdamW maths unless adam_w_mode is false: DeepSpeed's rule. */
    TU_ASSERT_OK(parse("{\"train_batch_size\": 1, \"optimizer\": {\"type\": \"adam\"}}", NULL, 1, &c));
    CU_ASSERT(c.optimizer.type == RT_OPT_ADAM && c.optimizer.decoupled && c.optimizer.present);
    rt_config_free(&c);
    TU_ASSERT_OK(parse("{\"train_batch_size\": 1, \"optimizer\": {\"type\": \"Adam\", \"params\": "
                       "{\"adam_w_mode\": false, \"bias_correction\": false, \"torch_adam\": true}}}", NULL, 1, &c));
    CU_ASSERT(!c.optimizer.decoupled && !c.optimizer.bias_correction);
    rt_config_free(&c);
    TU_ASSERT_OK(parse("{\"train_batch_size\": 1, \"optimizer\": {\"type\": \"ADAMW\", \"params\": "
                       "{\"adam_w_mode\": false}}}", NULL, 1, &c));
    CU_ASSERT(c.optimizer.type == RT_OPT_ADAMW && c.optimizer.decoupled);
    rt_config_free(&c);
    /* Numbers as 5e8 or 500000000.0; stage-3 "auto"s below stage 3 take the defaults;
     * the old bfloat16 name; offload null = not set. */
    TU_ASSERT_OK(parse("{\"train_batch_size\": 2, \"bfloat16\": {\"enabled\": true}, \"zero_optimization\": "
                       "{\"stage\": 2, \"reduce_bucket_size\": 5e8, \"allgather_bucket_size\": 200000000.0, "
                       "\"stage3_prefetch_bucket_size\": \"auto\", \"stage3_param_persistence_threshold\": "
                       "\"auto\", \"offload_param\": null, \"round_robin_gradients\": true}, "
                       "\"checkpoint\": {\"tag_validation\": \"FAIL\", \"load_universal\": true}}",
                       NULL, 2, &c));
    CU_ASSERT(c.bf16.enabled);
    CU_ASSERT_EQUAL(c.zero.reduce_bucket_size, 500000000);
    CU_ASSERT_EQUAL(c.zero.allgather_bucket_size, 200000000);
    CU_ASSERT_EQUAL(c.zero.stage3_prefetch_bucket_size, 50000000);
    CU_ASSERT_EQUAL(c.zero.stage3_param_persistence_threshold, 100000);
    CU_ASSERT(c.zero.round_robin_gradients && !c.zero.overlap_comm);
    CU_ASSERT_EQUAL(c.checkpoint.tag_validation, RT_TAG_FAIL);
    CU_ASSERT(c.checkpoint.load_universal);
    char *txt = cJSON_PrintUnformatted(c.resolved);
    CU_ASSERT_PTR_NULL(strstr(txt, "auto"));
    free(txt);
    rt_config_free(&c);
    /* fp16 static scale, WarmupCosineLR defaults, stage 3 overlap_comm default on. */
    TU_ASSERT_OK(parse("{\"train_batch_size\": 2, \"fp16\": {\"enabled\": true, \"loss_scale\": 128}, "
                       "\"scheduler\": {\"type\": \"WarmupCosineLR\", \"params\": {\"total_num_steps\": 5000}}, "
                       "\"zero_optimization\": {\"stage\": 3}}", NULL, 1, &c));
    CU_ASSERT(c.fp16.enabled && c.fp16.loss_scale == 128 && !c.fp16.dynamic_args_given);
    CU_ASSERT_EQUAL(c.scheduler.type, RT_SCHED_WARMUP_COSINE_LR);
    CU_ASSERT_EQUAL(c.scheduler.warmup_num_steps, 1000);
    CU_ASSERT_EQUAL(c.scheduler.cos_min_ratio, 0.0001);
    CU_ASSERT_EQUAL(c.scheduler.warmup_min_ratio, 0);
    CU_ASSERT(c.zero.overlap_comm);
    rt_config_free(&c);
}

typedef struct bad_case {
    const char *json;
    const char *path;  /* the key path the message must name */
    const char *extra; /* and this, when set */
    int world;
    bool hf;           /* parse with hf_args() */
} bad_case;

static const bad_case BAD[] = {
    /* Integers past what the engine takes (it was truncated to 32 bits: a micro
     * batch of 0). */
    {"{\"train_batch_size\":4294967296}", "train_batch_size", "at most 1048576", 1, 0},
    {"{\"train_batch_size\":4294967296,\"gradient_accumulation_steps\":1}", "train_batch_size", "at most 1048576", 1, 0},
    {"{\"train_micro_batch_size_per_gpu\":4294967297}", "train_micro_batch_size_per_gpu", "4294967297 is out of range", 1, 0},
    {"{\"train_micro_batch_size_per_gpu\":1,\"gradient_accumulation_steps\":4294967296}",
     "gradient_accumulation_steps", "at most 1048576", 1, 0},
    {"{\"train_batch_size\":4294967296,\"train_micro_batch_size_per_gpu\":1}", "train_batch_size",
     "gradient accumulation steps of 4294967296", 1, 0},
    {"{\"train_batch_size\":2,\"fp16\":{\"enabled\":true},\"bf16\":{\"enabled\":true}}", "fp16.enabled", "bf16", 1, 0},
    {"{\"train_batch_size\":8,\"train_micro_batch_size_per_gpu\":3,\"gradient_accumulation_steps\":1}",
     "train_batch_size", "8 != ", 2, 0},
    {"{\"train_batch_size\":2,\"zero_optimization\":{\"stage\":4}}", "zero_optimization.stage", "0, 1, 2 or 3", 1, 0},
    {"{\"train_batch_size\":2,\"zero_optimization\":{\"stage\":\"2\"}}", "zero_optimization.stage",
     "remove the quotes", 1, 0},
    {"{\"train_batch_size\":2,\"zero_optimization\":{\"stage\":1.5}}", "zero_optimization.stage", NULL, 1, 0},
    {"{\"train_batch_size\":2,\"zero_optimization\":true}", "zero_optimization", "stage", 1, 0},
    {"{\"train_batch_sizee\":2}", "train_batch_sizee", "did you mean \"train_batch_size\"", 1, 0},
    {"{\"train_batch_size\":2,\"zero_optimization\":{\"overlap_com\":true}}", "zero_optimization.overlap_com",
     "did you mean \"overlap_comm\"", 1, 0},
    {"{\"train_batch_size\":2,\"fp16\":{\"loss_scale_windw\":10}}", "fp16.loss_scale_windw", "\"loss_scale_window\"",
     1, 0},
    {"{\"train_batch_size\":2,\"checkpoint\":{\"frobnicate\":1}}", "checkpoint.frobnicate", "keys allowed here", 1, 0},
    {"{\"train_batch_size\":2,\"gradient_clippin\":1}", "gradient_clippin", "did you mean \"gradient_clipping\"", 1, 0},
    /* A precision flag against the config's other precision (the section of the flag absent). */
    {"{\"train_batch_size\":32,\"fp16\":{\"enabled\":true}}", "fp16.enabled", "--bf16 is given", 4, 1},
    {"{\"train_batch_size\":2,\"activation_checkpointing\":{}}", "activation_checkpointing", "does not implement", 1,
     0},
    {"{\"train_batch_size\":2,\"zero_optimization\":{\"stage\":3,\"prefetch_bucket_size\":10}}",
     "zero_optimization.prefetch_bucket_size", "stage3_prefetch_bucket_size", 1, 0},
    {"{\"train_batch_size\":2,\"train_batch_size\":2}", "train_batch_size", "duplicate", 1, 0},
    {"{\"train_batch_size\":2,\"gradient_clipping\":\"1.0\"}", "gradient_clipping", "remove the quotes", 1, 0},
    {"{\"train_batch_size\":2,\"wall_clock_breakdown\":1}", "wall_clock_breakdown", "true or false", 1, 0},
    {"{\"train_batch_size\":2,\"steps_per_print\":\"auto\"}", "steps_per_print", "no command-line flag", 1, 0},
    {"{\"train_batch_size\":2,\"zero_optimization\":{\"stage\":2,\"reduce_bucket_size\":\"auto\"}}",
     "zero_optimization.reduce_bucket_size", "--hidden_size", 1, 0},
    {"{\"train_batch_size\":2,\"zero_optimization\":{\"stage\":2,\"offload_optimizer\":{\"device\":\"nvme\"}}}",
     "zero_optimization.offload_optimizer.device", "not supported yet", 1, 0},
    {"{\"train_batch_size\":2,\"zero_optimization\":{\"stage\":3,\"offload_param\":{\"device\":\"gpu\"}}}",
     "zero_optimization.offload_param.device", "not an offload device", 1, 0},
    {"{\"train_batch_size\":2,\"zero_optimization\":{\"stage\":2,\"offload_optimizer\":{\"device\":\"cpu\","
     "\"ratio\":0.5}}}", "zero_optimization.offload_optimizer.ratio", "stage 3", 1, 0},
    {"{\"train_batch_size\":2,\"zero_optimization\":{\"offload_optimizer\":{\"device\":\"cpu\"}}}",
     "zero_optimization.offload_optimizer.device", "stage 1, 2 or 3", 1, 0},
    {"{\"train_batch_size\":2,\"zero_optimization\":{\"stage\":2,\"reduce_bucket_size\":-1}}",
     "zero_optimization.reduce_bucket_size", "positive", 1, 0},
    {"{\"train_batch_size\":2,\"zero_optimization\":{\"stage\":2,\"allgather_bucket_size\":0}}",
     "zero_optimization.allgather_bucket_size", "positive", 1, 0},
    {"{\"train_batch_size\":2,\"zero_optimization\":{\"stage\":3,\"sub_group_size\":0}}",
     "zero_optimization.sub_group_size", "positive", 1, 0},
    {"{\"train_micro_batch_size_per_gpu\":0}", "train_micro_batch_size_per_gpu", "positive", 1, 0},
    {"{\"train_batch_size\":-8}", "train_batch_size", NULL, 1, 0},
    {"{\"gradient_accumulation_steps\":4}", "train_batch_size", "neither", 1, 0},
    {"{\"train_batch_size\":2,\"steps_per_print\":1.5}", "steps_per_print", "integer", 1, 0},
    {"{\n  \"train_batch_size\": 2\n  \"fp16\": {}\n}", "line 3, column 3", "malformed JSON", 1, 0},
    {"{\"train_batch_size\": 2,}", "line 1", "malformed JSON", 1, 0},
    {"", "line 1, column 1", "malformed JSON", 1, 0},
    {"{\"train_batch_size\": 2} x", "line 1, column 25", "after the JSON", 1, 0},
    {"[1, 2]", "JSON object", NULL, 1, 0},
    {"{\"train_batch_size\":2,\"optimizer\":{\"type\":\"SGDX\"}}", "optimizer.type", "unknown optimizer", 1, 0},
    {"{\"train_batch_size\":2,\"optimizer\":{\"type\":\"Lamb\"}}", "optimizer.type", "does not implement", 1, 0},
    {"{\"train_batch_size\":2,\"optimizer\":{\"params\":{}}}", "optimizer.type", "missing", 1, 0},
    {"{\"train_batch_size\":2,\"optimizer\":{\"type\":\"AdamW\",\"params\":{\"betas\":[0.9]}}}",
     "optimizer.params.betas", "exactly two numbers", 1, 0},
    {"{\"train_batch_size\":2,\"optimizer\":{\"type\":\"AdamW\",\"params\":{\"betas\":[0.9,1.0]}}}",
     "optimizer.params.betas", "beta2", 1, 0},
    {"{\"train_batch_size\":2,\"optimizer\":{\"type\":\"AdamW\",\"params\":{\"max_grad_norm\":1}}}",
     "optimizer.params.max_grad_norm", "gradient_clipping", 1, 0},
    {"{\"train_batch_size\":2,\"optimizer\":{\"type\":\"AdamW\",\"params\":{\"amsgrad\":true}}}",
     "optimizer.params.amsgrad", NULL, 1, 0},
    {"{\"train_batch_size\":2,\"optimizer\":{\"type\":\"AdamW\",\"params\":{\"lr\":-1}}}", "optimizer.params.lr",
     "out of range", 1, 0},
    {"{\"train_batch_size\":2,\"scheduler\":{\"type\":\"OneCycleX\"}}", "scheduler.type", "unknown scheduler", 1, 0},
    {"{\"train_batch_size\":2,\"scheduler\":{\"type\":\"warmuplr\"}}", "scheduler.type", "\"WarmupLR\"", 1, 0},
    {"{\"train_batch_size\":2,\"scheduler\":{\"type\":\"OneCycle\"}}", "scheduler.type", "does not implement", 1, 0},
    {"{\"train_batch_size\":2,\"scheduler\":{\"type\":\"WarmupDecayLR\",\"params\":{}}}",
     "scheduler.params.total_num_steps", "missing", 1, 0},
    {"{\"train_batch_size\":2,\"scheduler\":{\"type\":\"WarmupLR\",\"params\":{\"warmup_type\":\"cosine\"}}}",
     "scheduler.params.warmup_type", "\"log\" or \"linear\"", 1, 0},
    {"{\"train_batch_size\":2,\"scheduler\":{\"type\":\"WarmupLR\",\"params\":{\"total_num_steps\":9}}}",
     "scheduler.params.total_num_steps", "unknown key", 1, 0},
    {"{\"train_batch_size\":2,\"scheduler\":{\"type\":\"WarmupLR\",\"params\":{\"last_batch_iteration\":5}}}",
     "scheduler.params.last_batch_iteration", "checkpoint", 1, 0},
    {"{\"train_batch_size\":2,\"scheduler\":{\"type\":\"WarmupCosineLR\",\"params\":{\"total_num_steps\":10,"
     "\"warmup_num_steps\":10}}}", "scheduler.params.total_num_steps", "warmup", 1, 0},
    {"{\"train_batch_size\":2,\"scheduler\":{\"type\":\"WarmupCosineLR\",\"params\":{\"total_num_steps\":100,"
     "\"cos_min_ratio\":2}}}", "scheduler.params.cos_min_ratio", "out of range", 1, 0},
    {"{\"train_batch_size\":2,\"checkpoint\":{\"tag_validation\":\"Maybe\"}}", "checkpoint.tag_validation",
     "\"Fail\"", 1, 0},
    {"{\"train_batch_size\":2,\"fp16\":{\"enabled\":true,\"hysteresis\":0}}", "fp16.hysteresis", "positive", 1, 0},
    {"{\"train_batch_size\":2,\"fp16\":{\"enabled\":true,\"loss_scale_window\":0}}", "fp16.loss_scale_window",
     "positive", 1, 0},
    {"{\"train_batch_size\":2,\"fp16\":{\"enabled\":true,\"min_loss_scale\":0}}", "fp16.min_loss_scale", NULL, 1, 0},
    {"{\"train_batch_size\":2,\"fp16\":true}", "fp16", "an object", 1, 0},
    {"{\"train_batch_size\":2,\"bf16\":{\"enabled\":true},\"bfloat16\":{\"enabled\":true}}", "bfloat16", "both", 1, 0},
    {"{\"train_batch_size\":2,\"gradient_predivide_factor\":0}", "gradient_predivide_factor", "out of range", 1, 0},
    /* Given flags that disagree with explicit values (the Trainer's mismatch check). */
    {"{\"train_batch_size\":32,\"optimizer\":{\"type\":\"AdamW\",\"params\":{\"lr\":0.001}}}",
     "optimizer.params.lr", "--learning_rate", 4, 1},
    {"{\"train_batch_size\":32,\"bf16\":{\"enabled\":false}}", "bf16.enabled", "--bf16", 4, 1},
    {"{\"train_batch_size\":32,\"train_micro_batch_size_per_gpu\":2}", "train_micro_batch_size_per_gpu",
     "--per_device_train_batch_size", 4, 1},
    {"{\"train_batch_size\":32,\"optimizer\":{\"type\":\"AdamW\",\"params\":{\"betas\":[0.9,0.999]}}}",
     "optimizer.params.betas", "--adam_beta2", 4, 1},
};

static void test_bad_catalogue(void) {
    rt_args hf = hf_args();
    size_t n = sizeof BAD / sizeof BAD[0];
    CU_ASSERT(n >= 20);
    for (size_t i = 0; i < n; i++) {
        rt_config c;
        memset(&c, 0xab, sizeof c);
        dsckpt_status st = parse(BAD[i].json, BAD[i].hf ? &hf : NULL, BAD[i].world, &c);
        const char *m = dsckpt_last_error();
        bool ok = st == DSCKPT_EINVAL && strncmp(m, "ds.json: ", 9) == 0 && strstr(m, BAD[i].path) &&
                  (!BAD[i].extra || strstr(m, BAD[i].extra)) && c.resolved == NULL;
        if (!ok) fprintf(stderr, "\n  bad config %zu: %s\n    -> %s: %s\n", i, BAD[i].json, dsckpt_status_name(st), m);
        CU_ASSERT(ok);
    }
}

/* "auto" without its flag takes the Hugging Face Trainer's default
 * (TrainingArguments): lr 5e-5, betas (0.9, 0.999), eps 1e-8, weight decay 0,
 * warmup 0, max_grad_norm 1, micro batch 8, accumulation 1, fp16/bf16 off. */
static void test_hf_defaults(void) {
    rt_config c;
    rt_args a;
    rt_args_init(&a);
    a.has_bf16 = true, a.bf16 = true; /* --bf16 only: fp16 "auto" is false */
    TU_ASSERT_OK(parse("{\"train_batch_size\": \"auto\", \"train_micro_batch_size_per_gpu\": \"auto\", "
                       "\"gradient_accumulation_steps\": \"auto\", \"gradient_clipping\": \"auto\", "
                       "\"fp16\": {\"enabled\": \"auto\"}, \"bf16\": {\"enabled\": \"auto\"}, "
                       "\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": \"auto\", \"betas\": \"auto\", "
                       "\"eps\": \"auto\", \"weight_decay\": \"auto\"}}, \"scheduler\": {\"type\": \"WarmupLR\", "
                       "\"params\": {\"warmup_min_lr\": \"auto\", \"warmup_max_lr\": \"auto\", "
                       "\"warmup_num_steps\": \"auto\"}}}", &a, 2, &c));
    CU_ASSERT(!c.fp16.enabled && c.bf16.enabled);
    CU_ASSERT_EQUAL(c.train_batch_size, 16); /* 8 per GPU x 1 x 2 ranks */
    CU_ASSERT_DOUBLE_EQUAL(c.optimizer.lr, 5e-5, 0);
    CU_ASSERT_DOUBLE_EQUAL(c.optimizer.beta1, 0.9, 0);
    CU_ASSERT_DOUBLE_EQUAL(c.optimizer.beta2, 0.999, 0);
    CU_ASSERT_DOUBLE_EQUAL(c.optimizer.eps, 1e-8, 0);
    CU_ASSERT_DOUBLE_EQUAL(c.optimizer.weight_decay, 0, 0);
    CU_ASSERT_DOUBLE_EQUAL(c.gradient_clipping, 1.0, 0);
    CU_ASSERT_EQUAL(c.scheduler.warmup_num_steps, 0);
    char *txt = cJSON_PrintUnformatted(c.resolved);
    CU_ASSERT_PTR_NULL(strstr(txt, "auto"));
    free(txt);
    rt_config_free(&c);
}

/* Every problem in one run: flags that disagree with explicit values, and one
 * problem per section, all in one message with their count. */
static void test_all_problems_at_once(void) {
    rt_config c;
    rt_args a;
    rt_args_init(&a);
    a.has_learning_rate = true, a.learning_rate = 1e-3;
    a.has_max_grad_norm = true, a.max_grad_norm = 0.5;
    a.has_fp16 = true, a.fp16 = true;
    CU_ASSERT_EQUAL(parse("{\"train_batch_size\": 2, \"gradient_clipping\": 1.0, \"fp16\": {\"enabled\": false}, "
                          "\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 1e-4}}, "
                          "\"zero_optimization\": {\"stage\": 4}}", &a, 1, &c),
                    DSCKPT_EINVAL);
    const char *m = dsckpt_last_error();
    CU_ASSERT_PTR_NOT_NULL(strstr(m, "4 problems"));
    CU_ASSERT_PTR_NOT_NULL(strstr(m, "optimizer.params.lr"));
    CU_ASSERT_PTR_NOT_NULL(strstr(m, "gradient_clipping"));
    CU_ASSERT_PTR_NOT_NULL(strstr(m, "fp16.enabled"));
    CU_ASSERT_PTR_NOT_NULL(strstr(m, "zero_optimization.stage"));
    CU_ASSERT_PTR_NULL(c.resolved);
}

/* Keys accepted but not acted on, and flags without effect: a warning each, the
 * parse succeeds (and the key stays in the resolved config). */
static void test_warnings(void) {
    static const struct {
        const char *json;
        const char *line; /* expected warning */
        bool bf16, warmup;
    } W[] = {
        {"{\"train_batch_size\":2,\"tensorboard\":{\"enabled\":true}}", "tensorboard: not used by dstrain", 0, 0},
        {"{\"train_batch_size\":2,\"wandb\":{}}", "wandb: not used by dstrain", 0, 0},
        {"{\"train_batch_size\":2,\"csv_monitor\":{}}", "csv_monitor: not used by dstrain", 0, 0},
        {"{\"train_batch_size\":2,\"comms_logger\":{}}", "comms_logger: not used by dstrain", 0, 0},
        {"{\"train_batch_size\":2,\"flops_profiler\":{}}", "flops_profiler: not used by dstrain", 0, 0},
        {"{\"train_batch_size\":2,\"data_types\":{\"grad_accum_dtype\":\"fp32\"}}", "data_types: not used", 0, 0},
        {"{\"train_batch_size\":2,\"frobnicate\":1}", "frobnicate: unknown key, ignored", 0, 0},
        {"{\"train_batch_size\":2}", "bf16: --bf16 is given but the config has no \"bf16\" section", 1, 0},
        {"{\"train_batch_size\":2}", "scheduler: --warmup_steps 7 has no effect", 0, 1},
        {"{\"train_batch_size\":2,\"scheduler\":{\"type\":\"WarmupLR\"}}",
         "scheduler.params.warmup_num_steps: absent, so DeepSpeed's default (1000) is used", 0, 1},
    };
    for (size_t i = 0; i < sizeof W / sizeof W[0]; i++) {
        rt_args a;
        rt_args_init(&a);
        a.has_bf16 = a.bf16 = W[i].bf16;
        a.has_warmup_steps = W[i].warmup;
        a.warmup_steps = 7;
        rt_config c;
        TU_ASSERT_OK(parse(W[i].json, &a, 1, &c));
        bool found = false;
        const cJSON *w;
        cJSON_ArrayForEach(w, c.warnings) found |= cJSON_IsString(w) && strstr(w->valuestring, W[i].line) != NULL;
        if (!found) fprintf(stderr, "\n  config %zu: no warning '%s'\n", i, W[i].line);
        CU_ASSERT(found);
        CU_ASSERT_EQUAL(cJSON_GetArraySize(c.warnings), 1);
        rt_config_free(&c);
    }
    /* A clean config: none. */
    rt_config c;
    TU_ASSERT_OK(parse("{\"train_batch_size\":2,\"bf16\":{\"enabled\":true}}", NULL, 1, &c));
    CU_ASSERT_EQUAL(cJSON_GetArraySize(c.warnings), 0);
    rt_config_free(&c);
}

/* --num_train_epochs: max_steps = ceil(epochs x max(1, samples / train_batch_size))
 * when max_steps is not given; it fills total_num_steps "auto". */
static void test_epochs(void) {
    const char *js = "{\"train_batch_size\":4,\"scheduler\":{\"type\":\"WarmupDecayLR\",\"params\":"
                     "{\"total_num_steps\":\"auto\",\"warmup_num_steps\":0}}}";
    rt_args a;
    rt_args_init(&a);
    a.samples_per_epoch = 81; /* 20 steps of 4 */
    a.has_num_train_epochs = true;
    a.num_train_epochs = 0.26;
    rt_config c;
    TU_ASSERT_OK(parse(js, &a, 1, &c));
    CU_ASSERT_EQUAL(c.steps_per_epoch, 20);
    CU_ASSERT_EQUAL(c.max_steps_from_epochs, 6);
    CU_ASSERT_EQUAL(c.scheduler.total_num_steps, 6);
    rt_config_free(&c);
    a.num_train_epochs = 3;
    TU_ASSERT_OK(parse(js, &a, 1, &c));
    CU_ASSERT_EQUAL(c.max_steps_from_epochs, 60);
    rt_config_free(&c);
    /* --max_steps given: it wins. */
    a.has_max_steps = true;
    a.max_steps = 9;
    TU_ASSERT_OK(parse(js, &a, 1, &c));
    CU_ASSERT_EQUAL(c.max_steps_from_epochs, 0);
    CU_ASSERT_EQUAL(c.scheduler.total_num_steps, 9);
    rt_config_free(&c);
    /* Fewer samples than one batch: one step per epoch. */
    a.has_max_steps = false;
    a.samples_per_epoch = 3;
    a.num_train_epochs = 2.5;
    TU_ASSERT_OK(parse(js, &a, 1, &c));
    CU_ASSERT_EQUAL(c.steps_per_epoch, 1);
    CU_ASSERT_EQUAL(c.max_steps_from_epochs, 3);
    rt_config_free(&c);
    /* Without epochs, total_num_steps "auto" still needs --max_steps. */
    a.has_num_train_epochs = false;
    CU_ASSERT_EQUAL(parse(js, &a, 1, &c), DSCKPT_EINVAL);
}

int main(void) {
    static const tu_test tests[] = {{"defaults as DeepSpeed's", test_defaults},
                                    {"\"auto\" without a flag: the Trainer's defaults", test_hf_defaults},
                                    {"every problem reported in one run", test_all_problems_at_once},
                                    {"Hugging Face ZeRO-3 config: every \"auto\" filled from the args", test_hf_auto},
                                    {"resolved JSON round trip (memory and file)", test_resolved_round_trip},
                                    {"batch-size derivation and its errors", test_batch_derivation},
                                    {"good variants: Adam modes, 5e8, aliases, fp16, cosine", test_good_variants},
                                    {"catalogue of bad configs: EINVAL naming file and key path", test_bad_catalogue},
                                    {"accepted-but-ignored keys and flags without effect: warnings", test_warnings},
                                    {"--num_train_epochs: max_steps from epochs", test_epochs},
                                    {NULL, NULL}};
    return tu_main("rt_config", tests);
}
