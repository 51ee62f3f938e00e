/*
 * fuzz_data.c — fuzz target for the byte-level data loader (runtime/data.c). Input:
 * 4 parameter bytes, then the training text. seq_len = 1 + byte0 % 64, eval
 * fraction = (1 + byte1) / 257, world size = 1 + byte2 % 4, micro-batch =
 * 1 + byte3 % 4. The text goes to a file in the scratch directory and is opened;
 * when it opens, training samples of a few global batches (every rank, every
 * micro-step) and every eval micro-batch are filled, and each token is checked to
 * be the file's byte at the documented offset (traps otherwise). Built for
 * libFuzzer with -DDSCKPT_FUZZ=ON (clang), and always as a corpus replay test
 * (replay.c).
 */
#include "data.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4) return 0;
    uint64_t seq = 1 + data[0] % 64, mb = 1 + data[3] % 4;
    double frac = (1.0 + data[1]) / 257.0;
    int world = 1 + data[2] % 4;
    const char *dir = fuzz_dir();
    if (fuzz_write(dir, "data.txt", data + 4, size - 4)) return 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/data.txt", dir);
    rt_data *d = NULL;
    if (fuzz_note("data open", rt_data_open(path, seq, frac, &d), dsckpt_last_error())) return 0;
    const uint8_t *bytes = rt_data_bytes(d);
    uint64_t ntrain = rt_data_train_bytes(d), neval = rt_data_eval_bytes(d);
    if (ntrain + neval != size - 4 || rt_data_seq_len(d) != seq) __builtin_trap();
    int32_t *tok = malloc(mb * (seq + 1) * sizeof *tok);
    uint64_t *ids = malloc(mb * sizeof *ids);
    if (!tok || !ids) goto out;
    for (uint64_t k = 0; k < 3; k++)
        for (int r = 0; r < world; r++)
            for (uint64_t a = 0; a < 2; a++) {
                if (rt_data_fill_micro(d, 1234, k, world, r, a, mb, tok) != DSCKPT_OK) continue;
                for (uint64_t i = 0; i < mb; i++) {
                    uint64_t off = rt_data_sample_offset(d, 1234, k, (a * (uint64_t)world + (uint64_t)r) * mb + i);
                    if (off + seq + 1 > ntrain) __builtin_trap();
                    for (uint64_t t = 0; t <= seq; t++)
                        if (tok[i * (seq + 1) + t] != bytes[off + t]) __builtin_trap();
                }
            }
    uint64_t nb = rt_data_eval_batches(d, 0, world, mb), nw = rt_data_eval_windows(d, 0);
    for (int r = 0; r < world; r++)
        for (uint64_t b = 0; b < nb && b < 64; b++) {
            uint64_t rows = 0;
            if (rt_data_fill_eval(d, 0, world, r, b, mb, tok, ids, &rows) != DSCKPT_OK) continue;
            if (rows > mb) __builtin_trap();
            for (uint64_t i = 0; i < rows; i++) {
                if (ids[i] >= nw) __builtin_trap();
                uint64_t off = rt_data_eval_window_offset(d, ids[i]);
                if (off < ntrain || off + seq + 1 > ntrain + neval) __builtin_trap();
                for (uint64_t t = 0; t <= seq; t++)
                    if (tok[i * (seq + 1) + t] != bytes[off + t]) __builtin_trap();
            }
        }
    rt_eval_sum es = {0};
    rt_eval_sum_add(&es, 2.5);
    rt_eval_sum_add(&es, (double)data[0] * 1e3);
    (void)rt_eval_sum_mean(&es);
out:
    free(tok);
    free(ids);
    rt_data_free(d);
    return 0;
}
