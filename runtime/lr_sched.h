/*
 * lr_sched.h — DeepSpeed's learning-rate schedules (WarmupLR, WarmupDecayLR,
 * WarmupCosineLR, or a constant lr) and its fp16 loss scalers, with the scaler
 * state saved and restored as JSON.
 *
 * Learning rate and the off-by-one. DeepSpeed builds the scheduler with
 * last_batch_iteration = -1 and, in that constructor, already writes get_lr() into
 * the optimizer: warmup_min_lr for WarmupLR/WarmupDecayLR, and 0.0 for
 * WarmupCosineLR (its get_lr() returns [0.0] before the first step). The engine
 * calls scheduler.step() (last_batch_iteration += 1, then the lr is recomputed) after
 * every optimizer step that was applied; a step skipped for an fp16 overflow does not
 * advance it. So the k-th applied optimizer step (k = 1, 2, ...) runs with the lr
 * computed at last_batch_iteration = k - 2:
 *
 *     rt_sched_lr(s, n) = lr the next optimizer step uses, where n = optimizer steps
 *                         applied so far = DeepSpeed's last_batch_iteration + 1.
 *
 *   n = 0: warmup_min_lr (WarmupLR/WarmupDecayLR), 0 (WarmupCosineLR), lr (none).
 *   n >= 1: the formula at it = n - 1. With log warmup, it = 0 gives log(1) = 0, so the
 *   first two applied steps both use warmup_min_lr (linear warmup: it/W = 0 too).
 *   Save n (or last_batch_iteration = n - 1) in a checkpoint; resuming sets it back.
 *
 * Formulas, W = max(2, warmup_num_steps), T = total_num_steps, it >= 0:
 *   gamma_warm(it) = log(it + 1) / log(W)   (log; computed as (1/log W) * log(it+1))
 *                  = it / W                 (linear)
 *   WarmupLR:       it < W: min + (max - min) * gamma_warm(it);  else max
 *   WarmupDecayLR:  it < W: as WarmupLR; else min + (max - min) * max(0, (T - it) / max(1, T - W))
 *   WarmupCosineLR: it < W: lr * (wmin + (1 - wmin) * gamma_warm(it))
 *                   else:   lr * max(0, cmin + (1 - cmin) * (1 + cos(pi * (it - W + 1) / (T - W))) / 2)
 *                   (lr = optimizer.params.lr; past T the cosine is not clamped and rises
 *                   again, as in DeepSpeed)
 * WarmupLR/WarmupDecayLR ignore optimizer.params.lr entirely (they overwrite it).
 *
 * Loss scaling (fp16 only; bf16 and fp32 use a static scale of 1 and never skip):
 *   RT_SCALER_STATIC: fp16.loss_scale > 0. The scale never changes; an overflowing
 *     step is still skipped by the caller (DeepSpeed checks overflow for every fp16 step).
 *   RT_SCALER_DYNAMIC: DeepSpeed's DynamicLossScaler, used by ZeRO stages 1-3.
 *     overflow:  if hysteresis == 1 or cur_hysteresis == 1: scale = max(scale / 2, min)
 *                (an overflow while scale == min is an error: DeepSpeed raises
 *                "Current loss scale already at minimum"); else cur_hysteresis -= 1.
 *                last_overflow_iter = cur_iter.
 *     no overflow: if consecutive_hysteresis, cur_hysteresis = hysteresis; if
 *                (cur_iter - last_overflow_iter) % window == 0: scale *= 2 and (without
 *                consecutive_hysteresis) cur_hysteresis = hysteresis.
 *     then cur_iter += 1. From a fresh start (last_overflow_iter = -1) the first
 *     doubling comes after `window` clean steps.
 *   RT_SCALER_FP16_OPTIMIZER: the stage-0 FP16_Optimizer (FusedAdam path): no
 *     hysteresis; overflow: scale = max(scale / 2, min), last_overflow_iter = cur_iter;
 *     no overflow: stable = cur_iter - last_overflow_iter - 1, double when stable > 0
 *     and stable % window == 0 (one step later than DynamicLossScaler); cur_iter += 1.
 *     (DeepSpeed's unfused optimizer, used with torch_adam, has other defaults; not
 *     modelled.)
 * The gradients of a step are unscaled by the scale that step's backward used: read
 * rt_scaler_scale() before rt_scaler_update().
 */
#ifndef DSRT_SCHED_H
#define DSRT_SCHED_H

#include "config.h"

typedef struct rt_sched {
    rt_sched_type type;
    double lr;               /* optimizer.params.lr: the constant lr, and WarmupCosineLR's base */
    double min_lr, max_lr;   /* WarmupLR / WarmupDecayLR */
    uint64_t warmup;         /* max(2, warmup_num_steps) */
    uint64_t total;          /* total_num_steps */
    rt_warmup_type warmup_type;
    double warmup_min_ratio, cos_min_ratio;
} rt_sched;

void rt_sched_init(rt_sched *s, const rt_config *c);
/* The lr for the next optimizer step after `applied` steps (see above). */
double rt_sched_lr(const rt_sched *s, uint64_t applied);

typedef enum { RT_SCALER_STATIC = 0, RT_SCALER_DYNAMIC = 1, RT_SCALER_FP16_OPTIMIZER = 2 } rt_scaler_kind;

/* What a checkpoint stores. */
typedef struct rt_scaler_state {
    double cur_scale;
    uint64_t cur_iter;          /* update() calls so far (dynamic kinds) */
    int64_t last_overflow_iter; /* -1 = none yet */
    uint64_t cur_hysteresis;    /* DYNAMIC only; hysteresis otherwise */
} rt_scaler_state;

typedef struct rt_scaler {
    rt_scaler_kind kind;
    bool check_overflow;        /* fp16: overflowing steps are skipped; bf16/fp32: never */
    double scale_factor;        /* 2 */
    uint64_t scale_window;
    double min_scale;
    uint64_t hysteresis;        /* DeepSpeed's delayed_shift, >= 1 */
    bool consecutive_hysteresis;
    rt_scaler_state st;
} rt_scaler;

/* A fixed scale (1.0 for bf16/fp32). */
void rt_scaler_init_static(rt_scaler *s, double scale, bool check_overflow);
/* DynamicLossScaler(init_scale, 2, window, min_scale, hysteresis, consecutive). */
void rt_scaler_init_dynamic(rt_scaler *s, double init_scale, uint64_t window, double min_scale, uint64_t hysteresis,
                            bool consecutive_hysteresis);
/* The stage-0 FP16_Optimizer rules. */
void rt_scaler_init_fp16_optimizer(rt_scaler *s, double init_scale, uint64_t window, double min_scale);
/* The scaler DeepSpeed would build for this config: static 1 for bf16/fp32; for fp16
 * static loss_scale when > 0, else by stage: ZeRO 1-3 -> DYNAMIC with the fp16
 * values when the section names any dynamic key (fp16.dynamic_args_given), otherwise
 * DynamicLossScaler's own defaults (2^32, window 1000, min 1, hysteresis 1, no
 * consecutive); stage 0 -> FP16_OPTIMIZER with 2^initial_scale_power and the
 * window/min from the section when given, else 1000 and 1. */
void rt_scaler_init_config(rt_scaler *s, const rt_config *c);

static inline double rt_scaler_scale(const rt_scaler *s) { return s->st.cur_scale; }
/* Records one step's outcome (`overflow` = any inf/NaN in the gradients on any
 * rank). On overflow the caller skips the optimizer step and does not advance the
 * lr schedule. DSCKPT_EINVAL (state unchanged) when a DYNAMIC scaler overflows at
 * its minimum scale, as DeepSpeed raises there. */
dsckpt_status rt_scaler_update(rt_scaler *s, bool overflow);

/* {"cur_scale": s, "cur_iter": n, "last_overflow_iter": m, "cur_hysteresis": h};
 * *out is the caller's (cJSON_Delete). */
dsckpt_status rt_scaler_state_to_json(const rt_scaler *s, cJSON **out);
/* Restores the state into a scaler initialised from the same config. Strict: exactly
 * those four keys, integers where integers are due, cur_scale finite and > 0,
 * -1 <= last_overflow_iter < cur_iter, 1 <= cur_hysteresis <= hysteresis; otherwise
 * DSCKPT_ECORRUPT naming the key, and the scaler is unchanged. */
dsckpt_status rt_scaler_state_from_json(rt_scaler *s, const cJSON *j);

#endif /* DSRT_SCHED_H */
