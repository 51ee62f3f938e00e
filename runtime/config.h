/*
 * config.h — a DeepSpeed ds_config.json read into a typed struct, with Hugging Face
 * Trainer-style "auto" values filled from command-line arguments.
 *
 * Semantics follow DeepSpeed (deepspeed/runtime/config.py, zero/config.py,
 * zero/offload_config.py, lr_schedules.py) and the Hugging Face Trainer integration
 * (transformers/integrations/deepspeed.py) where "auto" is concerned:
 *
 *  - Batch sizes: train_batch_size = train_micro_batch_size_per_gpu x
 *    gradient_accumulation_steps x world_size. Missing ones are derived with
 *    DeepSpeed's rules (integer division, as DeepSpeed does) and the product is then
 *    checked; any of the three may be absent but not both batch sizes.
 *  - "auto": filled from the matching rt_args field when it is given, otherwise
 *    with the Trainer's default for that flag (TrainingArguments: learning_rate
 *    5e-5, adam_beta1/2 0.9/0.999, adam_epsilon 1e-8, weight_decay 0,
 *    warmup_steps 0, max_grad_norm 1, per_device_train_batch_size 8,
 *    gradient_accumulation_steps 1, fp16/bf16 off: --bf16 alone leaves
 *    fp16.enabled false); keys with no flag and no default (hidden_size) are an
 *    error naming the key and the flag. When a flag is given and the config has
 *    an explicit, different value, that is an error too (the Trainer's
 *    "mismatch" check); all of these, and the first problem of each section,
 *    are reported together in one message ("N problems:"). Keys and flags:
 *      train_micro_batch_size_per_gpu   per_device_train_batch_size
 *      gradient_accumulation_steps      gradient_accumulation_steps
 *      train_batch_size                 derived (micro x accum x world), as above
 *      gradient_clipping                max_grad_norm
 *      optimizer.params.lr              learning_rate
 *      optimizer.params.betas           adam_beta1 + adam_beta2
 *      optimizer.params.eps             adam_epsilon
 *      optimizer.params.weight_decay    weight_decay
 *      scheduler.params.warmup_min_lr   0 (the Trainer fills 0; no flag)
 *      scheduler.params.warmup_max_lr   learning_rate
 *      scheduler.params.warmup_num_steps  warmup_steps
 *      scheduler.params.total_num_steps   max_steps
 *      fp16.enabled / bf16.enabled      fp16 / bf16
 *      zero_optimization.reduce_bucket_size              hidden_size^2
 *      zero_optimization.stage3_prefetch_bucket_size     floor(0.9 hidden_size^2) (stage 3)
 *      zero_optimization.stage3_param_persistence_threshold  10 hidden_size  (stage 3)
 *    Below stage 3 the two stage3_* keys take DeepSpeed's defaults when "auto"
 *    (DeepSpeed's config models drop "auto" values).
 *  - Unknown keys inside a section are errors (DeepSpeed's pydantic sections
 *    forbid extras), with the closest known key suggested. At the top level, where
 *    DeepSpeed ignores unknown keys: one within 2 edits of a known key is taken for
 *    a typo (an error with the suggestion), a DeepSpeed feature dstrain lacks is an
 *    error naming it, the monitoring sections (tensorboard, wandb, csv_monitor,
 *    comet, comms_logger, flops_profiler, data_types) are accepted as "not used",
 *    and any other key is ignored with a warning (rt_config.warnings). Duplicate
 *    keys are errors (DeepSpeed loads with dict_raise_error_on_duplicate_keys).
 *
 * Every error is DSCKPT_EINVAL (ENOENT/EIO for an unreadable file) and its message
 * names the file, the key path ("zero_optimization.offload_optimizer.device"), what
 * is wrong and how to fix it.
 */
#ifndef DSRT_CONFIG_H
#define DSRT_CONFIG_H

#include "internal.h"

#include <cjson/cJSON.h>

/* Values given on the command line (TrainingArguments names). A field counts only
 * when its has_* flag is set; rt_args_init() clears them all. A CLI that wants the
 * Trainer's exact behaviour for store-true flags marks has_bf16/has_fp16 even when
 * the flag is absent (value false). */
typedef struct rt_args {
    bool has_per_device_train_batch_size;
    uint64_t per_device_train_batch_size;
    bool has_gradient_accumulation_steps;
    uint64_t gradient_accumulation_steps;
    bool has_learning_rate;
    double learning_rate;
    bool has_weight_decay;
    double weight_decay;
    bool has_adam_beta1;
    double adam_beta1;
    bool has_adam_beta2;
    double adam_beta2;
    bool has_adam_epsilon;
    double adam_epsilon;
    bool has_max_grad_norm;
    double max_grad_norm;
    bool has_warmup_steps;
    uint64_t warmup_steps;
    bool has_max_steps; /* total optimizer steps, for the decaying schedules */
    uint64_t max_steps;
    bool has_bf16;
    bool bf16;
    bool has_fp16;
    bool fp16;
    const char *lr_scheduler_type; /* --lr_scheduler_type: linear, cosine, constant,
                                    * constant_with_warmup; used when the config has no
                                    * "scheduler" section (as the Trainer builds its own) */
    bool has_hidden_size; /* the model's hidden size, for the ZeRO bucket "auto"s */
    uint64_t hidden_size;
    bool has_num_train_epochs; /* --num_train_epochs: with max_steps not given, */
    double num_train_epochs;   /* max_steps = ceil(epochs x steps_per_epoch) (the Trainer's rule) */
    uint64_t samples_per_epoch; /* training samples in one epoch (0: unknown) */
} rt_args;

void rt_args_init(rt_args *a);

typedef enum { RT_OPT_ADAM = 0, RT_OPT_ADAMW = 1 } rt_opt_type;
typedef enum {
    RT_SCHED_NONE = 0, /* constant lr = optimizer lr */
    RT_SCHED_WARMUP_LR,
    RT_SCHED_WARMUP_DECAY_LR,
    RT_SCHED_WARMUP_COSINE_LR
} rt_sched_type;
typedef enum { RT_WARMUP_LOG = 0, RT_WARMUP_LINEAR = 1 } rt_warmup_type;
typedef enum { RT_OFFLOAD_NONE = 0, RT_OFFLOAD_CPU = 1 } rt_offload_device; /* nvme: refused */
typedef enum { RT_TAG_IGNORE = 0, RT_TAG_WARN = 1, RT_TAG_FAIL = 2 } rt_tag_validation;

typedef struct rt_offload_cfg {
    rt_offload_device device; /* default none */
    bool pin_memory;          /* default false */
    uint64_t buffer_count;    /* optimizer 4, param 5 (NVMe only; kept for fidelity) */
    uint64_t buffer_size;     /* param only: 1e8 */
    uint64_t max_in_cpu;      /* param only: 1e9 */
    bool pipeline_read, pipeline_write, fast_init; /* optimizer only: false */
    double ratio;             /* optimizer only: 1.0; < 1 needs stage 3 */
} rt_offload_cfg;

/* Bounds of the batch arithmetic (the same as dstrain's flags allow). */
#define RT_MAX_MICRO_BATCH (1ull << 20)
#define RT_MAX_GRAD_ACCUM (1ull << 20)

typedef struct rt_config {
    int world_size;
    /* Batch: all three resolved and consistent. */
    uint64_t train_batch_size;
    uint64_t micro_batch; /* train_micro_batch_size_per_gpu */
    uint64_t grad_accum;  /* gradient_accumulation_steps */

    struct {
        bool present;         /* an "optimizer" section was given; otherwise AdamW from the args */
        rt_opt_type type;     /* "Adam"/"AdamW", case-insensitive */
        double lr;            /* FusedAdam defaults: 1e-3, (0.9, 0.999), 1e-8, 0 */
        double beta1, beta2, eps, weight_decay;
        bool adam_w_mode;     /* params.adam_w_mode as written, default true */
        bool decoupled;       /* AdamW maths: type == AdamW || adam_w_mode (DeepSpeed's rule,
                               * so plain "Adam" is AdamW unless adam_w_mode is false) */
        bool bias_correction; /* default true */
    } optimizer;

    struct {
        rt_sched_type type;
        double warmup_min_lr;      /* WarmupLR/WarmupDecayLR: default 0 */
        double warmup_max_lr;      /* default 0.001 */
        uint64_t warmup_num_steps; /* as written, default 1000 (the schedules use max(2, n)) */
        uint64_t total_num_steps;  /* WarmupDecayLR/WarmupCosineLR: required */
        rt_warmup_type warmup_type;/* default log */
        double warmup_min_ratio;   /* WarmupCosineLR: default 0 */
        double cos_min_ratio;      /* WarmupCosineLR: default 0.0001 */
    } scheduler;

    struct {
        bool enabled;
        bool auto_cast;
        double loss_scale;             /* 0 = dynamic (default) */
        int initial_scale_power;       /* 16 */
        uint64_t loss_scale_window;    /* 1000 */
        uint64_t hysteresis;           /* 2 */
        bool consecutive_hysteresis;   /* false */
        double min_loss_scale;         /* 1 */
        /* True when the fp16 section names any of initial_scale_power,
         * loss_scale_window, min_loss_scale, hysteresis, consecutive_hysteresis.
         * DeepSpeed passes the five values to its loss scaler only then; otherwise
         * the ZeRO optimizers build DynamicLossScaler with its constructor defaults
         * (2^32, window 1000, min 1, hysteresis 1). rt_scaler_init_config() applies
         * this rule. */
        bool dynamic_args_given;
    } fp16;

    struct {
        bool enabled;
    } bf16;

    struct {
        int stage;                       /* 0..3, default 0 */
        rt_offload_cfg offload_optimizer;
        rt_offload_cfg offload_param;    /* used by stage 3 only, as in DeepSpeed */
        bool overlap_comm;               /* default: stage == 3 */
        bool contiguous_gradients;       /* true */
        bool reduce_scatter;             /* true */
        uint64_t reduce_bucket_size;     /* 5e8 */
        bool allgather_partitions;       /* true */
        uint64_t allgather_bucket_size;  /* 5e8 */
        uint64_t stage3_prefetch_bucket_size;        /* 5e7 */
        uint64_t stage3_param_persistence_threshold; /* 1e5 */
        uint64_t stage3_max_live_parameters;         /* 1e9 */
        uint64_t stage3_max_reuse_distance;          /* 1e9 */
        bool stage3_gather_16bit_weights_on_model_save; /* false */
        uint64_t sub_group_size;         /* 1e9 */
        bool round_robin_gradients;      /* false */
    } zero;

    /* Epochs, when args.samples_per_epoch is given: steps_per_epoch =
     * max(1, floor(samples_per_epoch / train_batch_size)), as the Trainer's
     * len(dataloader) // gradient_accumulation_steps; otherwise 1. With
     * num_train_epochs given and max_steps not, max_steps_from_epochs =
     * ceil(num_train_epochs x steps_per_epoch) (at least 1), which also fills
     * scheduler.params.total_num_steps "auto"; otherwise 0. */
    uint64_t steps_per_epoch;
    uint64_t max_steps_from_epochs;

    double gradient_clipping;        /* 0 = off */
    uint64_t steps_per_print;        /* 0 = never (DeepSpeed's current default, None) */
    bool wall_clock_breakdown;
    struct {
        rt_tag_validation tag_validation; /* "Ignore"|"Warn"|"Fail", case-insensitive; Warn */
        bool load_universal;
        bool use_node_local_storage;
    } checkpoint;
    bool zero_allow_untested_optimizer;
    bool prescale_gradients;
    double gradient_predivide_factor; /* 1.0 */

    /* The config as written with every "auto" replaced by its value: what a
     * checkpoint stores. Owned by the struct; freed by rt_config_free. */
    cJSON *resolved;
    /* Lines for the user, each "<key path>: <message>" (a JSON array of strings,
     * owned, freed by rt_config_free): keys accepted but not used (monitoring),
     * unknown top-level keys ignored, flags without effect (a precision flag
     * whose section is absent, --warmup_steps without a warmup to set). */
    cJSON *warnings;
} rt_config;

/* Reads and resolves `path` (at most 16 MiB). `args` may be NULL (no flags given).
 * world_size >= 1. On success *out owns `resolved`; on failure *out holds nothing
 * to free (it is zeroed). */
dsckpt_status rt_config_load(const char *path, const rt_args *args, int world_size, rt_config *out);
/* The same for text in memory (need not be NUL-terminated); name_for_errors
 * starts every message. */
dsckpt_status rt_config_parse(const char *text, size_t len, const char *name_for_errors, const rt_args *args,
                              int world_size, rt_config *out);
/* Frees what the struct owns; NULL and zeroed structs are fine. */
void rt_config_free(rt_config *c);

const char *rt_opt_type_name(rt_opt_type t);     /* "Adam", "AdamW" */
const char *rt_sched_type_name(rt_sched_type t); /* "none", "WarmupLR", ... */

#endif /* DSRT_CONFIG_H */
