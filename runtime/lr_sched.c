/*
 * lr_sched.c — DeepSpeed's lr schedules and fp16 loss scalers (see sched.h for the
 * formulas and the off-by-one). Arithmetic is done in the order lr_schedules.py does
 * it so the doubles match Python's.
 */
#include "lr_sched.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define MAX_EXACT_INT 9007199254740992.0 /* 2^53 */

void rt_sched_init(rt_sched *s, const rt_config *c) {
    memset(s, 0, sizeof *s);
    s->type = c->scheduler.type;
    s->lr = c->optimizer.lr;
    s->min_lr = c->scheduler.warmup_min_lr;
    s->max_lr = c->scheduler.warmup_max_lr;
    s->warmup = DS_MAX(c->scheduler.warmup_num_steps, 2);
    s->total = c->scheduler.total_num_steps;
    s->warmup_type = c->scheduler.warmup_type;
    s->warmup_min_ratio = c->scheduler.warmup_min_ratio;
    s->cos_min_ratio = c->scheduler.cos_min_ratio;
}

/* The warmup fraction at iteration it < warmup. */
static double warm_gamma(const rt_sched *s, uint64_t it) {
    if (s->warmup_type == RT_WARMUP_LOG) {
        double inverse_log_warm_up = 1.0 / log((double)s->warmup);
        return inverse_log_warm_up * log((double)it + 1.0);
    }
    return (double)it / (double)s->warmup;
}

double rt_sched_lr(const rt_sched *s, uint64_t applied) {
    if (s->type == RT_SCHED_NONE) return s->lr;
    if (applied == 0) /* last_batch_iteration = -1: what the constructor wrote */
        return s->type == RT_SCHED_WARMUP_COSINE_LR ? 0.0 : s->min_lr;
    uint64_t it = applied - 1;
    double W = (double)s->warmup, T = (double)s->total, x = (double)it;
    switch (s->type) {
    case RT_SCHED_WARMUP_LR:
    case RT_SCHED_WARMUP_DECAY_LR: {
        double gamma;
        if (it < s->warmup) gamma = warm_gamma(s, it);
        else if (s->type == RT_SCHED_WARMUP_LR) gamma = 1.0;
        else gamma = fmax(0.0, (T - x) / fmax(1.0, T - W));
        return s->min_lr + (s->max_lr - s->min_lr) * gamma;
    }
    case RT_SCHED_WARMUP_COSINE_LR: {
        double ratio;
        if (it < s->warmup) {
            ratio = warm_gamma(s, it);
            ratio = s->warmup_min_ratio + ratio * (1.0 - s->warmup_min_ratio);
        } else {
            double real_last_step = x - W + 1.0, real_total_steps = T - W;
            ratio = (1.0 + cos(M_PI * real_last_step / real_total_steps)) / 2.0;
            ratio = fmax(0.0, s->cos_min_ratio + (1.0 - s->cos_min_ratio) * ratio);
        }
        return s->lr * ratio;
    }
    default: return s->lr;
    }
}

/* ---- loss scaling ---- */

static void scaler_base(rt_scaler *s, rt_scaler_kind kind, double scale) {
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->check_overflow = true;
    s->scale_factor = 2.0;
    s->scale_window = 1000;
    s->min_scale = 1.0;
    s->hysteresis = 1;
    s->st.cur_scale = scale;
    s->st.cur_iter = 0;
    s->st.last_overflow_iter = -1;
    s->st.cur_hysteresis = 1;
}

void rt_scaler_init_static(rt_scaler *s, double scale, bool check_overflow) {
    scaler_base(s, RT_SCALER_STATIC, scale);
    s->check_overflow = check_overflow;
}

void rt_scaler_init_dynamic(rt_scaler *s, double init_scale, uint64_t window, double min_scale, uint64_t hysteresis,
                            bool consecutive_hysteresis) {
    scaler_base(s, RT_SCALER_DYNAMIC, init_scale);
    s->scale_window = window ? window : 1;
    s->min_scale = min_scale;
    s->hysteresis = hysteresis ? hysteresis : 1;
    s->consecutive_hysteresis = consecutive_hysteresis;
    s->st.cur_hysteresis = s->hysteresis;
}

void rt_scaler_init_fp16_optimizer(rt_scaler *s, double init_scale, uint64_t window, double min_scale) {
    scaler_base(s, RT_SCALER_FP16_OPTIMIZER, init_scale);
    s->scale_window = window ? window : 1;
    s->min_scale = min_scale;
}

void rt_scaler_init_config(rt_scaler *s, const rt_config *c) {
    if (!c->fp16.enabled) {
        rt_scaler_init_static(s, 1.0, false);
        return;
    }
    if (c->fp16.loss_scale > 0) {
        rt_scaler_init_static(s, c->fp16.loss_scale, true);
        return;
    }
    bool given = c->fp16.dynamic_args_given;
    double init = ldexp(1.0, c->fp16.initial_scale_power);
    if (c->zero.stage == 0) {
        rt_scaler_init_fp16_optimizer(s, init, given ? c->fp16.loss_scale_window : 1000,
                                      given ? c->fp16.min_loss_scale : 1.0);
    } else if (given) {
        rt_scaler_init_dynamic(s, init, c->fp16.loss_scale_window, c->fp16.min_loss_scale, c->fp16.hysteresis,
                               c->fp16.consecutive_hysteresis);
    } else {
        rt_scaler_init_dynamic(s, ldexp(1.0, 32), 1000, 1.0, 1, false);
    }
}

dsckpt_status rt_scaler_update(rt_scaler *s, bool overflow) {
    rt_scaler_state *t = &s->st;
    switch (s->kind) {
    case RT_SCALER_STATIC: return DSCKPT_OK;
    case RT_SCALER_DYNAMIC:
        if (overflow) {
            if (s->hysteresis == 1 || t->cur_hysteresis == 1) {
                if (t->cur_scale == s->min_scale)
                    return ds_err(DSCKPT_EINVAL,
                                  "fp16 overflow at step %llu with the loss scale already at its minimum %g "
                                  "(DeepSpeed stops here: \"Current loss scale already at minimum\"); lower "
                                  "fp16.min_loss_scale or the learning rate, or train in bf16",
                                  (unsigned long long)t->cur_iter, s->min_scale);
                t->cur_scale = fmax(t->cur_scale / s->scale_factor, s->min_scale);
            } else {
                t->cur_hysteresis -= 1;
            }
            t->last_overflow_iter = (int64_t)t->cur_iter;
        } else {
            if (s->consecutive_hysteresis) t->cur_hysteresis = s->hysteresis;
            if (((int64_t)t->cur_iter - t->last_overflow_iter) % (int64_t)s->scale_window == 0) {
                if (!s->consecutive_hysteresis) t->cur_hysteresis = s->hysteresis;
                t->cur_scale *= s->scale_factor;
            }
        }
        t->cur_iter++;
        return DSCKPT_OK;
    case RT_SCALER_FP16_OPTIMIZER:
        if (overflow) {
            t->cur_scale = fmax(t->cur_scale / s->scale_factor, s->min_scale);
            t->last_overflow_iter = (int64_t)t->cur_iter;
        } else {
            int64_t stable = (int64_t)t->cur_iter - t->last_overflow_iter - 1;
            if (stable > 0 && stable % (int64_t)s->scale_window == 0) t->cur_scale *= s->scale_factor;
        }
        t->cur_iter++;
        return DSCKPT_OK;
    }
    return ds_err(DSCKPT_EINTERNAL, "loss scaler of unknown kind %d", (int)s->kind);
}

dsckpt_status rt_scaler_state_to_json(const rt_scaler *s, cJSON **out) {
    *out = NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddNumberToObject(o, "cur_scale", s->st.cur_scale) ||
        !cJSON_AddNumberToObject(o, "cur_iter", (double)s->st.cur_iter) ||
        !cJSON_AddNumberToObject(o, "last_overflow_iter", (double)s->st.last_overflow_iter) ||
        !cJSON_AddNumberToObject(o, "cur_hysteresis", (double)s->st.cur_hysteresis)) {
        cJSON_Delete(o);
        return ds_err(DSCKPT_ENOMEM, "out of memory building the loss scaler state");
    }
    *out = o;
    return DSCKPT_OK;
}

static bool get_int(const cJSON *o, const char *key, double lo, double hi, double *out) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it)) return false;
    double d = it->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < lo || d > hi) return false;
    *out = d;
    return true;
}

dsckpt_status rt_scaler_state_from_json(rt_scaler *s, const cJSON *j) {
    static const char *const keys[] = {"cur_scale", "cur_iter", "last_overflow_iter", "cur_hysteresis"};
    const char *what = "loss scaler state";
    if (!cJSON_IsObject(j)) return ds_err(DSCKPT_ECORRUPT, "%s: not a JSON object", what);
    for (const cJSON *c = j->child; c; c = c->next) {
        bool known = false;
        for (size_t i = 0; i < 4; i++) known |= c->string && !strcmp(c->string, keys[i]);
        if (!known) return ds_err(DSCKPT_ECORRUPT, "%s: unexpected key \"%s\"", what, c->string ? c->string : "");
        for (const cJSON *d = j->child; d != c; d = d->next)
            if (!strcmp(d->string, c->string))
                return ds_err(DSCKPT_ECORRUPT, "%s: duplicate key \"%s\"", what, c->string);
    }
    for (size_t i = 0; i < 4; i++)
        if (!cJSON_GetObjectItemCaseSensitive(j, keys[i]))
            return ds_err(DSCKPT_ECORRUPT, "%s: missing \"%s\"", what, keys[i]);
    rt_scaler_state st;
    const cJSON *cs = cJSON_GetObjectItemCaseSensitive(j, "cur_scale");
    if (!cJSON_IsNumber(cs) || !isfinite(cs->valuedouble) || !(cs->valuedouble > 0))
        return ds_err(DSCKPT_ECORRUPT, "%s: \"cur_scale\" must be a finite number > 0", what);
    st.cur_scale = cs->valuedouble;
    double it, lo, hy;
    if (!get_int(j, "cur_iter", 0, MAX_EXACT_INT, &it))
        return ds_err(DSCKPT_ECORRUPT, "%s: \"cur_iter\" must be an integer >= 0", what);
    if (!get_int(j, "last_overflow_iter", -1, it - 1, &lo))
        return ds_err(DSCKPT_ECORRUPT, "%s: \"last_overflow_iter\" must be an integer from -1 to cur_iter - 1 (%.0f)",
                      what, it - 1);
    if (!get_int(j, "cur_hysteresis", 1, (double)s->hysteresis, &hy))
        return ds_err(DSCKPT_ECORRUPT, "%s: \"cur_hysteresis\" must be an integer from 1 to the configured "
                      "hysteresis %llu", what, (unsigned long long)s->hysteresis);
    st.cur_iter = (uint64_t)it;
    st.last_overflow_iter = (int64_t)lo;
    st.cur_hysteresis = (uint64_t)hy;
    s->st = st;
    return DSCKPT_OK;
}
