/*
 * deepspeed_write.h — writing a fragment map as a DeepSpeed ZeRO checkpoint (torch
 * zip + pickle files) for M data-parallel ranks, laid out as DeepSpeed 0.14 and
 * torch.save write them, so DeepSpeed's own load_checkpoint accepts it at world
 * size M (same stage) and zero_to_fp32 / ds_to_universal read it.
 *
 * Two sources of everything that is not a partition:
 * - a template: the DeepSpeed tag directory the fragment map was read from. Its
 *   model-states file(s) and rank 0's optimizer file are re-parsed and carried
 *   over (module weights and buffers, scheduler, loss scaler, hyper-parameters,
 *   ds_config, client state, step), with every partition-dependent entry rebuilt
 *   for M ranks: dp_world_size, partition_count, fp32 partitions, Adam moments,
 *   group_paddings, param_slice_mappings, frozen fragments, stage-3 sub-groups
 *   and param_shapes, shared_params (rank 0 only at stage 3);
 * - no template (synth, or a native checkpoint): the same files are built from
 *   the tensor list, with 16-bit module weights cast (round-to-nearest-even) from
 *   the fp32 master weights and torch.optim.AdamW-shaped optimizer state.
 * Files are written into `tagdir` (a fresh directory, normally inside a
 * temporary save root that the caller renames into place).
 */
#ifndef DSCKPT_DEEPSPEED_WRITE_H
#define DSCKPT_DEEPSPEED_WRITE_H

#include "ckpt.h"
#include "native_write.h"

typedef struct ds_dsw_spec {
    const ds_tensor *tensors;
    size_t ntensors;
    int stage;               /* 0, 1, 2 or 3 (0: one model-states file, no optimizer files) */
    int world_size;          /* M */
    int64_t step;
    dsckpt_dtype model_dtype;/* BF16, F16 or F32: the 16-bit (or fp32) working weights */
    bool bf16_optimizer;     /* stage 1 files in BF16_Optimizer's form (no template only) */
    const char *template_dir;/* DeepSpeed tag directory to carry from, or NULL */
    const cJSON *ds_config;  /* no template: stored as ds_config (may be NULL) */
    const cJSON *state;      /* no template: optimizer hyper-parameters (native "state"; may be NULL) */
    uint64_t sub_group_size; /* stage 3; 0 = ds_config's zero_optimization.sub_group_size or 1e9 */
    ds_fill_fn fill;         /* values of fp32 / exp_avg / exp_avg_sq (F32) and w16 (tensor dtype) */
    void *fill_user;
    int threads;
    bool check_reads;        /* CRC-32 of every template member copied through */
    bool drop_unknown;       /* with a template: leave out the entries holding pickled objects
                                outside the allow-list (else such a template is refused) */
} ds_dsw_spec;

dsckpt_status ds_deepspeed_write(const ds_dsw_spec *spec, const char *tagdir, ds_progress *prog);

#endif /* DSCKPT_DEEPSPEED_WRITE_H */
