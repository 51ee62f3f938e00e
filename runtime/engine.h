/*
 * engine.h — the ZeRO training engine: one rank's share of the parameters, the
 * gradients and the AdamW state for ZeRO stages 0-3, driven through the model's
 * module hooks and the collectives seam (comm.h).
 *
 * Layout (the same arithmetic as libckpt/partition.h, so a checkpoint is a plain
 * dump of the engine's buffers in the native format):
 * - two parameter groups, as Hugging Face does: 0 = matrices and embeddings (decayed),
 *   1 = biases and LayerNorm weights (weight_decay 0);
 * - stages 1/2: each group's tensors flattened in model order, padded to 2W, rank r
 *   owns [r*P, (r+1)*P); stage 3: each tensor split in ceil(n/W) pieces; stage 0:
 *   every rank owns everything (the "partition" is the whole group).
 * Per rank the engine holds: the fp32 master weights and Adam moments of its
 * partition; the 16-bit (or fp32) working weights — whole at stages 0-2, this
 * rank's pieces at stage 3 (gathered per module just before use in forward and again
 * in backward, released after). At stages 1/2 16-bit working weights lie as
 * DeepSpeed's bit16 groups do, each group's padded flat whole, so the all-gather
 * after an update lands in place (no gather buffer the size of the model); fp32
 * ones, and stage 0's, in the model's layout, which the model reads in place. fp32 gradients — whole at stages 0/1 (reduced once
 * per optimizer step), only the partition at stages 2/3 (each module's gradient is
 * reduce-scattered to its owners as soon as its backward is done, in buckets of at
 * most reduce_bucket_size elements).
 *
 * Determinism: every reduction sums in rank order (comm.h), and the global gradient
 * norm is accumulated exactly (a per-exponent integer accumulator), so for the same
 * world size and one micro-batch per step, stages 0-3 produce bit-identical weights.
 *
 * Device seam: every buffer of the step is allocated, copied and computed on
 * through the model's device table (device.h, rt_model_create_on): the CPU table, a
 * CUDA one, or the cpu-strict test table (tests/rt_device_test.sh proves on the CPU
 * that nothing here touches device memory from the host). The checkpoint code goes
 * through the table too: a save copies the partitions into pinned host memory
 * (d2h, the whole stall of an async save on a device), a load reads into a host
 * buffer and copies up. The small collectives (loss, overflow flag, norm buckets)
 * pass host buffers; device buffers reach a host backend (MPI, self) through
 * rt_comm_set_device's staging. `offload_optimizer` device cpu keeps the fp32
 * master and moments in the table's pinned host memory and runs Adam on the CPU
 * kernels (gradient partition d2h, working weights h2d, not overlapped with compute
 * yet); on the CPU table it changes nothing, the state being host memory already,
 * and dstrain warns so. `offload_param` is accepted and has no effect (warned).
 */
#ifndef DSRT_ENGINE_H
#define DSRT_ENGINE_H

#include "comm.h"
#include "config.h"
#include "data.h"
#include "model.h"
#include "lr_sched.h"

typedef struct rt_engine rt_engine;

typedef struct rt_step_stats {
    uint64_t step;          /* optimizer steps taken (applied or skipped) after this one */
    double loss;            /* mean training loss of the global batch */
    double lr;              /* learning rate this step used */
    double grad_norm;       /* global gradient norm before clipping (unscaled) */
    double loss_scale;      /* scale used for this step (1 unless fp16) */
    bool skipped;           /* fp16 overflow: no update */
    double seconds;         /* wall time of the step */
    double comm_seconds;    /* of which inside collectives */
    uint64_t comm_bytes;    /* bytes this rank sent in collectives during the step */
    double tokens_per_s;    /* global tokens / second */
} rt_step_stats;

typedef struct rt_mem_report {
    uint64_t numel;         /* Ψ: trainable elements of the model */
    uint64_t params_bytes;  /* working (16-bit or fp32) weights held by this rank, padding included */
    uint64_t grads_bytes;   /* gradient buffers held between steps (fp32) */
    uint64_t optim_bytes;   /* fp32 master + exp_avg + exp_avg_sq */
    uint64_t part_numel;    /* elements of this rank's optimizer partition, padding included */
} rt_mem_report;

/* Creates the engine for `cfg` over `comm`; initialises the weights from `seed`
 * (the values of rt_model_init whatever the world size: at stages 1-3 each rank
 * draws its own share and the working weights are gathered, so this is
 * collective). `model` must outlive the engine. */
dsckpt_status rt_engine_create(const rt_config *cfg, rt_comm *comm, rt_model *model, uint64_t seed,
                               rt_engine **out);
/* rt_engine_create without the weights' initialisation (the partitions hold zeros):
 * for a run that loads a checkpoint next, so a resume does not first draw every
 * random weight of the model. rt_engine_init_weights(e, seed) then gives exactly
 * what rt_engine_create would have (for a run that finds nothing to resume). */
dsckpt_status rt_engine_create_empty(const rt_config *cfg, rt_comm *comm, rt_model *model, rt_engine **out);
dsckpt_status rt_engine_init_weights(rt_engine *e, uint64_t seed);
void rt_engine_free(rt_engine *e);
/* fn(ctx) is called on the training thread right before the engine changes its fp32
 * master partitions or Adam moments (the optimizer update, a checkpoint load); NULL
 * removes it. The async checkpoint writer uses it (engine_ckpt.h). */
void rt_engine_set_pre_update(rt_engine *e, void (*fn)(void *), void *ctx);

/* One optimizer step on global batch `k` of `data` (gradient accumulation, reduction,
 * clipping, loss scaling, AdamW, schedule). Collective: every rank calls it. */
dsckpt_status rt_engine_step(rt_engine *e, const rt_data *data, uint64_t data_seed, uint64_t k, rt_step_stats *st);

/* Mean eval loss over up to `cap` eval windows (0 = all), identical bits on every
 * world size and stage. Collective. */
dsckpt_status rt_engine_eval(rt_engine *e, const rt_data *data, uint64_t cap, double *loss);

void rt_engine_memory(const rt_engine *e, rt_mem_report *r);
/* What the ZeRO formulas predict for this stage, world size and dtype (same units). */
void rt_engine_memory_formula(const rt_engine *e, rt_mem_report *r);

uint64_t rt_engine_steps(const rt_engine *e);  /* optimizer steps taken */
const char *rt_engine_device_name(const rt_engine *e); /* where the step runs: "cpu", "cuda" */
/* Whether the optimizer state lives in host memory apart from the device
 * (offload_optimizer device cpu on a table whose memory is not host memory). */
bool rt_engine_offloaded(const rt_engine *e);
/* Stage 3 with offload_param device cpu on a device table (and the optimizer
 * offloaded): this rank's 16-bit parameter pieces live in pinned host memory and go
 * up module by module as they are gathered. */
bool rt_engine_params_offloaded(const rt_engine *e);

/* SHA-256 of the full fp32 master weights (working false) or of the working (16-bit
 * or fp32) weights as the forward pass sees them (working true), in model layout.
 * Collective: every rank calls it; the digest is written on rank 0 only. Gathers
 * one tensor at a time to rank 0 (engine_digest.c). For bit-identity checks. */
dsckpt_status rt_engine_digest(rt_engine *e, bool working, uint8_t out[32]);
size_t rt_engine_working_size(const rt_engine *e);

#endif /* DSRT_ENGINE_H */
