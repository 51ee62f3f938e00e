/*
 * fuzz_config.c — fuzz target for the DeepSpeed config reader (runtime/config.c).
 * Input: one selector byte, then the ds_config text. Selector bits: 0 = the
 * command-line arguments are given (a full Hugging Face-style set, so "auto"
 * values resolve and mismatches are checked), 1-2 = world size 1-4, 3 = fp16
 * instead of bf16 in those arguments. A config that resolves is also turned into
 * its lr schedule (evaluated over a range of steps) and loss scaler (a few updates,
 * its state saved and restored). Built for libFuzzer with -DDSCKPT_FUZZ=ON
 * (clang), and always as a corpus replay test (replay.c).
 */
#include "config.h"
#include "fuzz_util.h"
#include "lr_sched.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > (1u << 20)) return 0;
    uint8_t sel = data[0];
    rt_args a;
    rt_args_init(&a);
    a.has_per_device_train_batch_size = true;
    a.per_device_train_batch_size = 2;
    a.has_gradient_accumulation_steps = true;
    a.gradient_accumulation_steps = 2;
    a.has_learning_rate = true;
    a.learning_rate = 3e-4;
    a.has_weight_decay = true;
    a.weight_decay = 0.01;
    a.has_adam_beta1 = a.has_adam_beta2 = a.has_adam_epsilon = true;
    a.adam_beta1 = 0.9;
    a.adam_beta2 = 0.999;
    a.adam_epsilon = 1e-8;
    a.has_max_grad_norm = true;
    a.max_grad_norm = 1.0;
    a.has_warmup_steps = true;
    a.warmup_steps = 10;
    a.has_max_steps = true;
    a.max_steps = 100;
    a.has_bf16 = a.has_fp16 = true;
    a.bf16 = !(sel & 8);
    a.fp16 = (sel & 8) != 0;
    a.has_hidden_size = true;
    a.hidden_size = 64;
    rt_config cfg;
    if (rt_config_parse((const char *)data + 1, size - 1, "fuzz", (sel & 1) ? &a : NULL, 1 + ((sel >> 1) & 3), &cfg)) {
        fuzz_note("config", 1, dsckpt_last_error());
        return 0;
    }
    fuzz_note("config", 0, "");
    rt_sched sc;
    rt_sched_init(&sc, &cfg);
    static const uint64_t steps[] = {0, 1, 2, 3, 9, 10, 11, 99, 100, 101, 1000, 1u << 20, UINT64_MAX / 2, UINT64_MAX};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) (void)rt_sched_lr(&sc, steps[i]);
    rt_scaler s;
    rt_scaler_init_config(&s, &cfg);
    for (int i = 0; i < 8; i++)
        if (rt_scaler_update(&s, (i % 3) == 1) != DSCKPT_OK) break;
    cJSON *j = NULL;
    if (rt_scaler_state_to_json(&s, &j) == DSCKPT_OK) {
        (void)rt_scaler_state_from_json(&s, j);
        cJSON_Delete(j);
    }
    rt_config_free(&cfg);
    return 0;
}
