/*
 * adam.c — Adam/AdamW hyper-parameters: defaults, checks, the per-step constants of
 * the element kernel (kernels/optim.c, formulas and their order in adam.h), and the
 * host step over one partition.
 */
#include "adam.h"
#include "internal.h"

#include <math.h>
#include <string.h>

rt_adam_hparams rt_adam_defaults(void) {
    rt_adam_hparams h = {
        .lr = 1e-3f,
        .beta1 = 0.9f,
        .beta2 = 0.999f,
        .eps = 1e-8f,
        .weight_decay = 0.0f,
        .adam_w_mode = true,
        .bias_correction = true,
    };
    return h;
}

dsckpt_status rt_adam_check(const rt_adam_hparams *h) {
    if (!h) return ds_err(DSCKPT_EINVAL, "adam: NULL hyper-parameters");
    if (!isfinite(h->lr) || h->lr < 0) return ds_err(DSCKPT_EINVAL, "adam: invalid learning rate %g", h->lr);
    if (!isfinite(h->eps) || h->eps < 0) return ds_err(DSCKPT_EINVAL, "adam: invalid eps %g", h->eps);
    if (!(h->beta1 >= 0 && h->beta1 < 1))
        return ds_err(DSCKPT_EINVAL, "adam: invalid beta1 %g (need 0 <= beta1 < 1)", h->beta1);
    if (!(h->beta2 >= 0 && h->beta2 < 1))
        return ds_err(DSCKPT_EINVAL, "adam: invalid beta2 %g (need 0 <= beta2 < 1)", h->beta2);
    if (!isfinite(h->weight_decay) || h->weight_decay < 0)
        return ds_err(DSCKPT_EINVAL, "adam: invalid weight decay %g", h->weight_decay);
    return DSCKPT_OK;
}

dsckpt_status rt_adam_constants(const rt_adam_hparams *h, uint64_t step, ds_adam_k *k) {
    DS_TRY(rt_adam_check(h));
    if (step == 0) return ds_err(DSCKPT_EINVAL, "adam: step is 1-based (the count after the increment), got 0");
    k->lr = h->lr;
    k->beta1 = h->beta1;
    k->beta2 = h->beta2;
    k->one_minus_beta1 = 1.0f - h->beta1;
    k->one_minus_beta2 = 1.0f - h->beta2;
    k->eps = h->eps;
    k->weight_decay = h->weight_decay;
    k->adam_w_mode = h->adam_w_mode;
    k->bc1 = 1.0f;
    k->bc2 = 1.0f;
    if (h->bias_correction) {
        /* In double, then rounded once, as FusedAdam's host code does. */
        k->bc1 = (float)(1.0 - pow((double)h->beta1, (double)step));
        k->bc2 = (float)(1.0 - pow((double)h->beta2, (double)step));
    }
    return DSCKPT_OK;
}

static dsckpt_status adam_prepare(const float *param, const float *grad, const float *m, const float *v, size_t n,
                                  const rt_adam_hparams *h, uint64_t step, ds_adam_k *k) {
    DS_TRY(rt_adam_constants(h, step, k));
    if (n && (!param || !grad || !m || !v)) return ds_err(DSCKPT_EINVAL, "adam: NULL array");
    return DSCKPT_OK;
}

dsckpt_status rt_adam_step_ref(float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                               size_t n, const rt_adam_hparams *h, uint64_t step) {
    ds_adam_k k;
    DS_TRY(adam_prepare(param, grad, exp_avg, exp_avg_sq, n, h, step, &k));
    ds_adam_ref(&k, param, grad, exp_avg, exp_avg_sq, n);
    return DSCKPT_OK;
}

dsckpt_status rt_adam_step(float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                           size_t n, const rt_adam_hparams *h, uint64_t step) {
    ds_adam_k k;
    DS_TRY(adam_prepare(param, grad, exp_avg, exp_avg_sq, n, h, step, &k));
    ds_adam(&k, param, grad, exp_avg, exp_avg_sq, n);
    return DSCKPT_OK;
}
