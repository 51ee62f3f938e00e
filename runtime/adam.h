/*
 * adam.h — the optimizer's hyper-parameters (Adam / AdamW with DeepSpeed FusedAdam
 * semantics), their checks, the per-step constants handed to the element kernel
 * (kernels/optim.h: ds_adam, OpenMP, and ds_adam_ref, the plain loop; the two give
 * the same bits at any thread count), and a host step over one partition.
 *
 * The step, all in float (IEEE single, round to nearest, no fused multiply-add),
 * in this order — the order of DeepSpeed's FusedAdam kernel (csrc/adam/
 * multi_tensor_adam.cu, inherited from apex), which is also what torch.optim.Adam /
 * AdamW compute up to rounding (torch orders the same algebra differently, so the
 * two agree to a few ulp, not bitwise):
 *
 *     bc1 = bias_correction ? (float)(1 - pow((double)beta1, step)) : 1
 *     bc2 = bias_correction ? (float)(1 - pow((double)beta2, step)) : 1
 *     per element, with g = grad[i], p = param[i], m = exp_avg[i], v = exp_avg_sq[i]:
 *       Adam  (adam_w_mode false, L2):  g = g + wd * p
 *       m = beta1 * m + (1 - beta1) * g
 *       v = beta2 * v + ((1 - beta2) * g) * g
 *       denom  = sqrt(v / bc2) + eps
 *       update = (m / bc1) / denom
 *       AdamW (adam_w_mode true, decoupled):  update = update + wd * p
 *       p = p - lr * update
 *
 * AdamW therefore decays with the parameter from before the step (p - lr*wd*p,
 * folded into one update), as FusedAdam does. `step` is the 1-based count after the
 * increment (the first call passes 1), as in DeepSpeed's state['step'].
 */
#ifndef DS_RT_ADAM_H
#define DS_RT_ADAM_H

#include "dsckpt.h"
#include "optim.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rt_adam_hparams {
    float lr;
    float beta1, beta2;
    float eps;
    float weight_decay;
    bool adam_w_mode;     /* true: AdamW (decoupled decay); false: Adam with L2 in the gradient */
    bool bias_correction; /* DeepSpeed's bias_correction flag (default true) */
} rt_adam_hparams;

/* DeepSpeed's FusedAdam defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay
 * 0, adam_w_mode true, bias_correction true. */
rt_adam_hparams rt_adam_defaults(void);

/* Checks the hyper-parameters the way torch does (0 <= lr, 0 <= eps, 0 <= beta < 1,
 * 0 <= weight_decay, all finite): EINVAL with a message otherwise. */
dsckpt_status rt_adam_check(const rt_adam_hparams *h);

/* The constants of step `step` (1-based) for the element kernel: EINVAL for bad
 * hyper-parameters or step 0. */
dsckpt_status rt_adam_constants(const rt_adam_hparams *h, uint64_t step, ds_adam_k *k);

/* One step on n elements, in place on param, exp_avg and exp_avg_sq (grad is read
 * only). The four arrays must not overlap. EINVAL for bad hyper-parameters, step 0
 * or NULL arrays with n > 0. rt_adam_step splits the elements over OpenMP threads
 * in fixed blocks; rt_adam_step_ref is the plain loop; results are bitwise equal. */
dsckpt_status rt_adam_step(float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                           size_t n, const rt_adam_hparams *h, uint64_t step);
dsckpt_status rt_adam_step_ref(float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                               size_t n, const rt_adam_hparams *h, uint64_t step);

#endif /* DS_RT_ADAM_H */
