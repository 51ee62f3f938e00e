/*
 * fuzz_deepspeed.c — fuzz target for the DeepSpeed tag reader as a whole. The input
 * is a save root cut into named files (fuzz_util.h): typically `latest` and a tag
 * directory of [bf16_]zero_pp_rank_<D>_mp_rank_00_optim_states.pt and
 * [zero_pp_rank_<D>_]mp_rank_00_model_states.pt files. They are written into the
 * scratch directory, which is opened like `dsckpt inspect` does (latest, then the
 * tag directory: zip members, pickles, storages, partition arithmetic); whatever
 * opens is described, read whole into memory and consolidated, and verified.
 * Built for libFuzzer with -DDSCKPT_FUZZ=ON (clang), and always as a corpus replay
 * test (replay.c).
 */
#include "fuzz_ckpt_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_file f[FUZZ_MAX_FILES];
    size_t n = fuzz_split(data, size, f);
    const char *dir = fuzz_dir();
    if (!fuzz_write_all(dir, f, n)) return 0;
    dsckpt_ckpt *c = NULL;
    if (!fuzz_note("open", dsckpt_ckpt_open(dir, NULL, &c), dsckpt_last_error())) {
        fuzz_use_ckpt(c, dir);
        dsckpt_ckpt_free(c);
        dsckpt_verify_opts vo;
        dsckpt_verify_opts_init(&vo);
        vo.threads = 1;
        dsckpt_verify_report *r = NULL;
        if (dsckpt_verify(dir, NULL, &vo, &r) == DSCKPT_OK) {
            fuzz_note("verify", (int)dsckpt_verify_report_result(r), dsckpt_verify_report_count(r) ? dsckpt_verify_report_problem(r, 0) : "");
            for (size_t i = 0; i < dsckpt_verify_report_count(r); i++) (void)dsckpt_verify_report_problem(r, i);
            dsckpt_verify_report_free(r);
        }
    }
    return 0;
}
