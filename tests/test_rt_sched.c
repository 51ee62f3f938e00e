/*
 * test_rt_sched.c — lr schedules against values worked out by hand from DeepSpeed's
 * lr_schedules.py, and the fp16 loss scalers against scripted overflow sequences
 * checked step by step against loss_scaler.py / fused_optimizer.py, plus the
 * scaler-state JSON round trip and its strict reader.
 */
#include "config.h"
#include "lr_sched.h"
#include "tutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void near(double got, double want, int line) {
    double tol = 1e-12 * fmax(1.0, fabs(want));
    if (!(fabs(got - want) <= tol)) fprintf(stderr, "\n  line %d: got %.17g, want %.17g\n", line, got, want);
    CU_ASSERT(fabs(got - want) <= tol);
}
#define NEAR(got, want) near((got), (want), __LINE__)

static rt_sched mk(rt_sched_type type, double lr, double min_lr, double max_lr, uint64_t warmup, uint64_t total,
                   rt_warmup_type wt, double wmin, double cmin) {
    rt_sched s = {type, lr, min_lr, max_lr, warmup < 2 ? 2 : warmup, total, wt, wmin, cmin};
    return s;
}

/* rt_sched_lr(s, n) = DeepSpeed's lr after n scheduler.step() calls, i.e. at
 * last_batch_iteration it = n - 1; n = 0 is what the constructor wrote. */
static void test_warmup_lr(void) {
    /* Log warmup, W = 100, min 0.001, max 0.011 (delta 0.01):
     *   n = 0: constructor, last_batch_iteration = -1 -> min_lrs = 0.001
     *   n = 1: it = 0, gamma = log(1)/log(100) = 0       -> 0.001 (second step, still min)
     *   n = 10: it = 9, gamma = log(10)/log(100) = 1/2   -> 0.001 + 0.005 = 0.006
     *   n = 100: it = 99, gamma = log(100)/log(100) = 1  -> 0.011
     *   n = 101: it = 100 >= W -> gamma = 1              -> 0.011
     *   n = 10^6: still 0.011 (WarmupLR never decays) */
    rt_sched s = mk(RT_SCHED_WARMUP_LR, 0.5, 0.001, 0.011, 100, 0, RT_WARMUP_LOG, 0, 0);
    NEAR(rt_sched_lr(&s, 0), 0.001);
    NEAR(rt_sched_lr(&s, 1), 0.001);
    NEAR(rt_sched_lr(&s, 10), 0.006);
    NEAR(rt_sched_lr(&s, 100), 0.011);
    CU_ASSERT_EQUAL(rt_sched_lr(&s, 101), 0.011);
    CU_ASSERT_EQUAL(rt_sched_lr(&s, 1000000), 0.011);
    /* log(it + 1) grows: n = 2 (it = 1): 0.001 + 0.01 * log(2)/log(100) */
    NEAR(rt_sched_lr(&s, 2), 0.001 + 0.01 * (log(2.0) / log(100.0)));

    /* Linear warmup, W = 4, 0 -> 0.1: gamma = it/4 -> n = 0..5: 0, 0, .025, .05, .075, .1 */
    s = mk(RT_SCHED_WARMUP_LR, 0.5, 0, 0.1, 4, 0, RT_WARMUP_LINEAR, 0, 0);
    static const double lin[] = {0, 0, 0.025, 0.05, 0.075, 0.1, 0.1};
    for (uint64_t n = 0; n < 7; n++) NEAR(rt_sched_lr(&s, n), lin[n]);

    /* warmup_num_steps 0 becomes max(2, 0) = 2: linear it = 1 -> gamma 1/2. */
    s = mk(RT_SCHED_WARMUP_LR, 0.5, 0.2, 0.4, 0, 0, RT_WARMUP_LINEAR, 0, 0);
    NEAR(rt_sched_lr(&s, 2), 0.3);
    NEAR(rt_sched_lr(&s, 3), 0.4);
}

static void test_warmup_decay_lr(void) {
    /* Linear warmup W = 4, T = 12, min 0, max 0.1. After warmup
     * gamma = max(0, (T - it) / max(1, T - W)) = (12 - it) / 8:
     *   n = 5 (it 4): 8/8 = 1 -> 0.1      (first step past warmup is at the peak)
     *   n = 9 (it 8): 4/8     -> 0.05
     *   n = 12 (it 11): 1/8   -> 0.0125   (the lr of the 13th step)
     *   n = 13 (it 12 = T): 0 -> 0
     *   n = 21 (it 20): max(0, -8/8) = 0 -> 0 (clamped, stays at min) */
    rt_sched s = mk(RT_SCHED_WARMUP_DECAY_LR, 0.5, 0, 0.1, 4, 12, RT_WARMUP_LINEAR, 0, 0);
    NEAR(rt_sched_lr(&s, 0), 0);
    NEAR(rt_sched_lr(&s, 4), 0.075); /* it 3 < W: warmup 3/4 */
    NEAR(rt_sched_lr(&s, 5), 0.1);
    NEAR(rt_sched_lr(&s, 9), 0.05);
    NEAR(rt_sched_lr(&s, 12), 0.0125);
    CU_ASSERT_EQUAL(rt_sched_lr(&s, 13), 0.0);
    CU_ASSERT_EQUAL(rt_sched_lr(&s, 21), 0.0);
    /* A nonzero floor: min 0.01, max 0.11 -> it 8: 0.01 + 0.1 * 0.5 = 0.06; the end is min. */
    s = mk(RT_SCHED_WARMUP_DECAY_LR, 0.5, 0.01, 0.11, 4, 12, RT_WARMUP_LINEAR, 0, 0);
    NEAR(rt_sched_lr(&s, 9), 0.06);
    NEAR(rt_sched_lr(&s, 13), 0.01);
    NEAR(rt_sched_lr(&s, 0), 0.01); /* constructor: min */
    /* T - W < 1 is clamped to 1: W = T = 4 -> it 4: (4 - 4)/1 = 0 -> min. */
    s = mk(RT_SCHED_WARMUP_DECAY_LR, 0.5, 0.01, 0.11, 4, 4, RT_WARMUP_LINEAR, 0, 0);
    NEAR(rt_sched_lr(&s, 5), 0.01);
}

static void test_warmup_cosine_lr(void) {
    /* lr 0.1, linear warmup W = 4, T = 12, warmup_min_ratio 0.2, cos_min_ratio 0.1:
     *   n = 0: get_lr() before the first step returns [0.0] -> 0 (not 0.1 * 0.2!)
     *   n = 1 (it 0): ratio 0 -> 0.2 + 0 * 0.8 = 0.2          -> 0.02
     *   n = 3 (it 2): 2/4 = .5 -> 0.2 + 0.5 * 0.8 = 0.6       -> 0.06
     *   n = 5 (it 4): real_last = 4 - 4 + 1 = 1, real_total = 8,
     *          (1 + cos(pi/8))/2 = (1 + 0.92387953251128674)/2 = 0.96193976625564337
     *          ratio = 0.1 + 0.9 * 0.96193976625564337 = 0.96574578963007903 -> 0.096574578963007903
     *   n = 8 (it 7): real_last 4, cos(pi/2) = 0 -> 0.5 -> 0.1 + 0.45 = 0.55 -> 0.055
     *   n = 12 (it 11): real_last 8, cos(pi) = -1 -> 0 -> 0.1   -> 0.01 (the end)
     *   n = 16 (it 15): real_last 12, cos(3pi/2) = 0 -> 0.055 (DeepSpeed does not clamp
     *          past T: the cosine comes back up)
     *   n = 20 (it 19): real_last 16, cos(2pi) = 1 -> 1.0 -> 0.1 */
    rt_sched s = mk(RT_SCHED_WARMUP_COSINE_LR, 0.1, 0, 0, 4, 12, RT_WARMUP_LINEAR, 0.2, 0.1);
    CU_ASSERT_EQUAL(rt_sched_lr(&s, 0), 0.0);
    NEAR(rt_sched_lr(&s, 1), 0.02);
    NEAR(rt_sched_lr(&s, 3), 0.06);
    NEAR(rt_sched_lr(&s, 5), 0.096574578963007903);
    NEAR(rt_sched_lr(&s, 8), 0.055);
    NEAR(rt_sched_lr(&s, 12), 0.01);
    NEAR(rt_sched_lr(&s, 16), 0.055);
    NEAR(rt_sched_lr(&s, 20), 0.1);
    /* Log warmup W = 100: it 9 -> log 10 / log 100 = 0.5 -> 0.2 + 0.4 = 0.6 -> 0.06 */
    s = mk(RT_SCHED_WARMUP_COSINE_LR, 0.1, 0, 0, 100, 1000, RT_WARMUP_LOG, 0.2, 0.1);
    NEAR(rt_sched_lr(&s, 10), 0.06);
}

static void test_constant_and_config(void) {
    rt_sched s = mk(RT_SCHED_NONE, 3e-4, 0, 0, 0, 0, RT_WARMUP_LOG, 0, 0);
    CU_ASSERT_EQUAL(rt_sched_lr(&s, 0), 3e-4);
    CU_ASSERT_EQUAL(rt_sched_lr(&s, 12345), 3e-4);

    /* From a config: WarmupDecayLR with "auto"s filled from the args. */
    const char *js = "{\"train_batch_size\": 8, \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": \"auto\"}},"
                     " \"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": {\"warmup_min_lr\": \"auto\","
                     " \"warmup_max_lr\": \"auto\", \"warmup_num_steps\": \"auto\", \"total_num_steps\": \"auto\","
                     " \"warmup_type\": \"linear\"}}}";
    rt_args a;
    rt_args_init(&a);
    a.has_learning_rate = true, a.learning_rate = 0.1;
    a.has_warmup_steps = true, a.warmup_steps = 4;
    a.has_max_steps = true, a.max_steps = 12;
    rt_config c;
    TU_ASSERT_OK(rt_config_parse(js, strlen(js), "s.json", &a, 1, &c));
    rt_sched_init(&s, &c);
    CU_ASSERT_EQUAL(s.type, RT_SCHED_WARMUP_DECAY_LR);
    NEAR(rt_sched_lr(&s, 0), 0.0);
    NEAR(rt_sched_lr(&s, 9), 0.05); /* same numbers as test_warmup_decay_lr */
    rt_config_free(&c);

    /* No scheduler section: constant optimizer lr. */
    js = "{\"train_batch_size\": 8, \"optimizer\": {\"type\": \"Adam\", \"params\": {\"lr\": 0.002}}}";
    TU_ASSERT_OK(rt_config_parse(js, strlen(js), "s.json", NULL, 1, &c));
    rt_sched_init(&s, &c);
    CU_ASSERT_EQUAL(rt_sched_lr(&s, 0), 0.002);
    CU_ASSERT_EQUAL(rt_sched_lr(&s, 77), 0.002);
    rt_config_free(&c);
}

/* One scripted step: apply `ovf`, expect status, then the state. */
typedef struct step {
    bool ovf;
    dsckpt_status st;
    double scale;
    uint64_t iter;
    int64_t last;
    uint64_t hyst;
} step;

static void run_script(rt_scaler *s, const step *script, size_t n) {
    for (size_t i = 0; i < n; i++) {
        dsckpt_status st = rt_scaler_update(s, script[i].ovf);
        bool ok = st == script[i].st && s->st.cur_scale == script[i].scale && s->st.cur_iter == script[i].iter &&
                  s->st.last_overflow_iter == script[i].last && s->st.cur_hysteresis == script[i].hyst;
        if (!ok)
            fprintf(stderr, "\n  script step %zu (%s): st %d scale %g iter %llu last %lld hyst %llu\n", i,
                    script[i].ovf ? "overflow" : "clean", (int)st, s->st.cur_scale, (unsigned long long)s->st.cur_iter,
                    (long long)s->st.last_overflow_iter, (unsigned long long)s->st.cur_hysteresis);
        CU_ASSERT(ok);
    }
}

static void test_dynamic_scaler(void) {
    /* DynamicLossScaler(init 16, factor 2, window 4, min 2, delayed_shift 2, no
     * consecutive hysteresis). Before each update: cur_iter = i. Rules:
     *   overflow: shift == 1 or cur_hyst == 1 -> scale = max(scale/2, min) (error if
     *             scale == min already), else cur_hyst -= 1; last = i
     *   clean: (i - last) % 4 == 0 -> scale *= 2, cur_hyst = 2
     *   i += 1 */
    rt_scaler s;
    rt_scaler_init_dynamic(&s, 16, 4, 2, 2, false);
    CU_ASSERT_EQUAL(rt_scaler_scale(&s), 16);
    static const step script[] = {
        {false, 0, 16, 1, -1, 2}, /* i0: (0+1)%4 = 1 */
        {false, 0, 16, 2, -1, 2}, /* i1: 2 */
        {false, 0, 16, 3, -1, 2}, /* i2: 3 */
        {false, 0, 32, 4, -1, 2}, /* i3: 4%4 = 0 -> double after 4 clean steps */
        {true, 0, 32, 5, 4, 1},   /* i4: hysteresis 2 -> 1, scale kept */
        {true, 0, 16, 6, 5, 1},   /* i5: hysteresis 1 -> halve */
        {false, 0, 16, 7, 5, 1},  /* i6: (6-5) = 1; hysteresis NOT refilled (not consecutive) */
        {true, 0, 8, 8, 7, 1},    /* i7: hysteresis still 1 -> halve at once */
        {false, 0, 8, 9, 7, 1},   /* i8: 1 */
        {false, 0, 8, 10, 7, 1},  /* i9: 2 */
        {false, 0, 8, 11, 7, 1},  /* i10: 3 */
        {false, 0, 16, 12, 7, 2}, /* i11: (11-7) = 4 -> double, hysteresis refilled to 2 */
        {true, 0, 16, 13, 12, 1}, /* i12: 2 -> 1 */
        {true, 0, 8, 14, 13, 1},  /* i13: halve */
        {true, 0, 4, 15, 14, 1},  /* i14: halve */
        {true, 0, 2, 16, 15, 1},  /* i15: max(2/2... 4/2 = 2, min 2) = 2 */
        {true, DSCKPT_EINVAL, 2, 16, 15, 1}, /* i16: scale == min -> DeepSpeed raises; state unchanged */
        {false, 0, 2, 17, 15, 1}, /* i16 again, clean: (16-15) = 1 */
    };
    run_script(&s, script, sizeof script / sizeof script[0]);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "min_loss_scale"));
}

static void test_consecutive_hysteresis(void) {
    /* Same scaler with consecutive_hysteresis: every clean step refills cur_hyst. */
    rt_scaler s;
    rt_scaler_init_dynamic(&s, 16, 4, 2, 2, true);
    static const step script[] = {
        {true, 0, 16, 1, 0, 1},  /* i0: 2 -> 1 */
        {false, 0, 16, 2, 0, 2}, /* i1: refilled to 2; (1-0)%4 != 0 */
        {true, 0, 16, 3, 2, 1},  /* i2: 2 -> 1 again, no halving (non-consecutive would halve here) */
        {true, 0, 8, 4, 3, 1},   /* i3: halve */
        {false, 0, 8, 5, 3, 2},  /* i4 */
        {false, 0, 8, 6, 3, 2},  /* i5 */
        {false, 0, 8, 7, 3, 2},  /* i6 */
        {false, 0, 16, 8, 3, 2}, /* i7: (7-3) = 4 -> double */
    };
    run_script(&s, script, sizeof script / sizeof script[0]);
}

static void test_fp16_optimizer_scaler(void) {
    /* Stage-0 FP16_Optimizer: init 16, window 4, min 2, no hysteresis.
     * clean: stable = i - last - 1; double when stable > 0 and stable % 4 == 0.
     * overflow: scale = max(scale/2, min), last = i (never an error). */
    rt_scaler s;
    rt_scaler_init_fp16_optimizer(&s, 16, 4, 2);
    static const step script[] = {
        {false, 0, 16, 1, -1, 1}, /* i0: stable 0 */
        {false, 0, 16, 2, -1, 1}, /* i1: 1 */
        {false, 0, 16, 3, -1, 1}, /* i2: 2 */
        {false, 0, 16, 4, -1, 1}, /* i3: 3 (DynamicLossScaler would double here) */
        {false, 0, 32, 5, -1, 1}, /* i4: 4 -> double after 5 clean steps */
        {true, 0, 16, 6, 5, 1},   /* i5: halve at once */
        {true, 0, 8, 7, 6, 1},
        {true, 0, 4, 8, 7, 1},
        {true, 0, 2, 9, 8, 1},
        {true, 0, 2, 10, 9, 1},   /* at min: stays, no error */
        {false, 0, 2, 11, 9, 1},  /* i10: stable 0 */
        {false, 0, 2, 12, 9, 1},
        {false, 0, 2, 13, 9, 1},
        {false, 0, 2, 14, 9, 1},
        {false, 0, 4, 15, 9, 1},  /* i14: stable 4 */
    };
    run_script(&s, script, sizeof script / sizeof script[0]);
}

static void test_static_and_from_config(void) {
    rt_scaler s;
    rt_scaler_init_static(&s, 128, true);
    for (int i = 0; i < 5; i++) TU_ASSERT_OK(rt_scaler_update(&s, i % 2));
    CU_ASSERT_EQUAL(rt_scaler_scale(&s), 128);
    CU_ASSERT_EQUAL(s.st.cur_iter, 0);

    struct {
        const char *json;
        rt_scaler_kind kind;
        double scale;
        uint64_t window, hyst;
        double min;
        bool check;
    } cases[] = {
        /* fp16 with no dynamic keys under ZeRO: DynamicLossScaler's own defaults */
        {"{\"train_batch_size\":4,\"fp16\":{\"enabled\":true},\"zero_optimization\":{\"stage\":2}}",
         RT_SCALER_DYNAMIC, 4294967296.0, 1000, 1, 1, true},
        /* any dynamic key: the config's values with its defaults (2^16, hysteresis 2) */
        {"{\"train_batch_size\":4,\"fp16\":{\"enabled\":true,\"loss_scale_window\":500},"
         "\"zero_optimization\":{\"stage\":3}}",
         RT_SCALER_DYNAMIC, 65536, 500, 2, 1, true},
        {"{\"train_batch_size\":4,\"fp16\":{\"enabled\":true,\"initial_scale_power\":12,\"hysteresis\":3,"
         "\"min_loss_scale\":0.5},\"zero_optimization\":{\"stage\":1}}",
         RT_SCALER_DYNAMIC, 4096, 1000, 3, 0.5, true},
        /* stage 0: FP16_Optimizer with 2^initial_scale_power */
        {"{\"train_batch_size\":4,\"fp16\":{\"enabled\":true}}", RT_SCALER_FP16_OPTIMIZER, 65536, 1000, 1, 1, true},
        /* static */
        {"{\"train_batch_size\":4,\"fp16\":{\"enabled\":true,\"loss_scale\":256},\"zero_optimization\":{\"stage\":2}}",
         RT_SCALER_STATIC, 256, 1000, 1, 1, true},
        /* bf16 / fp32: scale 1, no overflow skipping */
        {"{\"train_batch_size\":4,\"bf16\":{\"enabled\":true},\"zero_optimization\":{\"stage\":2}}",
         RT_SCALER_STATIC, 1, 1000, 1, 1, false},
        {"{\"train_batch_size\":4}", RT_SCALER_STATIC, 1, 1000, 1, 1, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rt_config c;
        TU_ASSERT_OK(rt_config_parse(cases[i].json, strlen(cases[i].json), "f.json", NULL, 1, &c));
        rt_scaler_init_config(&s, &c);
        bool ok = s.kind == cases[i].kind && s.st.cur_scale == cases[i].scale && s.check_overflow == cases[i].check;
        if (s.kind != RT_SCALER_STATIC)
            ok = ok && s.scale_window == cases[i].window && s.hysteresis == cases[i].hyst &&
                 s.min_scale == cases[i].min && s.st.cur_hysteresis == cases[i].hyst;
        if (!ok) fprintf(stderr, "\n  case %zu: kind %d scale %g window %llu hyst %llu min %g\n", i, (int)s.kind,
                         s.st.cur_scale, (unsigned long long)s.scale_window, (unsigned long long)s.hysteresis,
                         s.min_scale);
        CU_ASSERT(ok);
        rt_config_free(&c);
    }
}

static void test_state_json(void) {
    rt_scaler a, b;
    rt_scaler_init_dynamic(&a, 1024, 3, 1, 2, false);
    const bool events[] = {false, true, false, false, false, true, true, false};
    for (size_t i = 0; i < sizeof events; i++) TU_ASSERT_OK(rt_scaler_update(&a, events[i]));
    cJSON *j = NULL;
    TU_ASSERT_OK(rt_scaler_state_to_json(&a, &j));
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    cJSON *back = cJSON_Parse(text);
    rt_scaler_init_dynamic(&b, 1024, 3, 1, 2, false);
    TU_ASSERT_OK(rt_scaler_state_from_json(&b, back));
    CU_ASSERT_EQUAL(memcmp(&a.st, &b.st, sizeof a.st), 0);
    /* Both continue identically. */
    for (int i = 0; i < 20; i++) {
        bool o = (i * 7) % 5 == 0;
        CU_ASSERT_EQUAL(rt_scaler_update(&a, o), rt_scaler_update(&b, o));
        CU_ASSERT_EQUAL(memcmp(&a.st, &b.st, sizeof a.st), 0);
    }
    cJSON_Delete(back);
    free(text);

    /* The strict reader: each of these is ECORRUPT, names its key, and changes nothing. */
    static const struct {
        const char *json, *needle;
    } bad[] = {
        {"[1]", "object"},
        {"{\"cur_scale\":8,\"cur_iter\":3,\"last_overflow_iter\":1}", "cur_hysteresis"},
        {"{\"cur_scale\":8,\"cur_iter\":3,\"last_overflow_iter\":1,\"cur_hysteresis\":1,\"x\":0}", "\"x\""},
        {"{\"cur_scale\":8,\"cur_iter\":3,\"cur_iter\":3,\"last_overflow_iter\":1,\"cur_hysteresis\":1}", "duplicate"},
        {"{\"cur_scale\":0,\"cur_iter\":3,\"last_overflow_iter\":1,\"cur_hysteresis\":1}", "cur_scale"},
        {"{\"cur_scale\":\"8\",\"cur_iter\":3,\"last_overflow_iter\":1,\"cur_hysteresis\":1}", "cur_scale"},
        {"{\"cur_scale\":8,\"cur_iter\":-1,\"last_overflow_iter\":-1,\"cur_hysteresis\":1}", "cur_iter"},
        {"{\"cur_scale\":8,\"cur_iter\":2.5,\"last_overflow_iter\":1,\"cur_hysteresis\":1}", "cur_iter"},
        {"{\"cur_scale\":8,\"cur_iter\":3,\"last_overflow_iter\":3,\"cur_hysteresis\":1}", "last_overflow_iter"},
        {"{\"cur_scale\":8,\"cur_iter\":3,\"last_overflow_iter\":-2,\"cur_hysteresis\":1}", "last_overflow_iter"},
        {"{\"cur_scale\":8,\"cur_iter\":3,\"last_overflow_iter\":1,\"cur_hysteresis\":0}", "cur_hysteresis"},
        {"{\"cur_scale\":8,\"cur_iter\":3,\"last_overflow_iter\":1,\"cur_hysteresis\":3}", "cur_hysteresis"},
        {"{\"cur_scale\":8,\"cur_iter\":3,\"last_overflow_iter\":1,\"cur_hysteresis\":true}", "cur_hysteresis"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *x = cJSON_Parse(bad[i].json);
        CU_ASSERT_PTR_NOT_NULL_FATAL(x);
        rt_scaler_state before = b.st;
        dsckpt_status st = rt_scaler_state_from_json(&b, x);
        if (st != DSCKPT_ECORRUPT || !strstr(dsckpt_last_error(), bad[i].needle))
            fprintf(stderr, "\n  bad state %zu: %s -> %d %s\n", i, bad[i].json, (int)st, dsckpt_last_error());
        CU_ASSERT_EQUAL(st, DSCKPT_ECORRUPT);
        CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), bad[i].needle));
        CU_ASSERT_EQUAL(memcmp(&before, &b.st, sizeof before), 0);
        cJSON_Delete(x);
    }
}

int main(void) {
    static const tu_test tests[] = {{"WarmupLR: log and linear warmup, W = max(2, n)", test_warmup_lr},
                                    {"WarmupDecayLR: peak, decay, end and clamp", test_warmup_decay_lr},
                                    {"WarmupCosineLR: 0 before the first step, cosine, past T", test_warmup_cosine_lr},
                                    {"constant lr and schedules built from a config", test_constant_and_config},
                                    {"DynamicLossScaler script: hysteresis 2, window 4, min 2", test_dynamic_scaler},
                                    {"DynamicLossScaler with consecutive_hysteresis", test_consecutive_hysteresis},
                                    {"stage-0 FP16_Optimizer scaler script", test_fp16_optimizer_scaler},
                                    {"static scaler; the scaler built per config", test_static_and_from_config},
                                    {"scaler state JSON round trip and strict reader", test_state_json},
                                    {NULL, NULL}};
    return tu_main("rt_sched", tests);
}
