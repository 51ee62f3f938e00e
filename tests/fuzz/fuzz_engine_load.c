/*
 * fuzz_engine_load.c — fuzz target for dstrain's checkpoint load
 * (runtime/engine_ckpt.c: rt_engine_load) on one rank without MPI (the self
 * collectives backend). The engine is a fixed tiny model (1 layer, 1 head, 8
 * wide, 8 tokens, vocabulary 256; ZeRO stage 1, bf16), built once. The input is a
 * save root cut into named files (fuzz_util.h): `latest`, <tag>/manifest.json and
 * <tag>/rank_00000.safetensors, as dstrain writes them for that model (the seeds
 * are such checkpoints); manifests without "manifest_sha256" are completed and
 * sealed as in fuzz_verify.c, so the manifest's "state" (optimizer step, loss
 * scaler, engine counters) and the fragments reach the engine. Built for libFuzzer
 * with -DDSCKPT_FUZZ=ON (clang), and always as a corpus replay test (replay.c).
 */
#include "engine.h"
#include "engine_ckpt.h"
#include "fuzz_native.h"

#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fuzz_engine_cfg[] =
    "{\"train_batch_size\": 2, \"train_micro_batch_size_per_gpu\": 2, \"bf16\": {\"enabled\": true},"
    " \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.003, \"weight_decay\": 0.01}},"
    " \"gradient_clipping\": 1.0, \"zero_optimization\": {\"stage\": 1}}";

static rt_engine *fuzz_engine(void) {
    static rt_engine *e;
    static rt_config cfg;
    static rt_comm *comm;
    static rt_model *model;
    if (e) return e;
    rt_model_cfg mc = {.vocab_size = 256, .n_ctx = 8, .n_layer = 1, .n_head = 1, .n_embd = 8};
    if (rt_config_parse(fuzz_engine_cfg, sizeof fuzz_engine_cfg - 1, "fuzz config", NULL, 1, &cfg) ||
        rt_comm_open_self(&comm) || rt_model_create(&mc, (int)cfg.micro_batch, 8, &model) ||
        rt_engine_create(&cfg, comm, model, 1234, &e)) {
        fprintf(stderr, "fuzz_engine_load: cannot build the engine: %s\n", dsckpt_last_error());
        abort();
    }
    return e;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    rt_engine *e = fuzz_engine();
    fuzz_file f[FUZZ_MAX_FILES];
    size_t n = fuzz_split(data, size, f);
    const char *dir = fuzz_dir();
    if (!fuzz_write_native(dir, f, n)) return 0;
    cJSON *state = NULL;
    if (!fuzz_note("load", rt_engine_load(e, dir, NULL, &state, NULL), dsckpt_last_error())) cJSON_Delete(state);
    fuzz_note("load weights", rt_engine_load_weights(e, dir, NULL), dsckpt_last_error());
    return 0;
}
