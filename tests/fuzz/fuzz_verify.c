/*
 * fuzz_verify.c — fuzz target for `dsckpt verify` on a native checkpoint built from
 * the input: a save root cut into named files (fuzz_util.h), typically `latest`,
 * <tag>/manifest.json and <tag>/rank_RRRRR.safetensors. A manifest without a
 * "manifest_sha256" key is completed first: the size and chunk digests of every
 * listed file present in the input are recomputed and the manifest is sealed, so
 * the fuzzer gets past the digests to the structure (rank-file headers, metadata,
 * fragments against files). A manifest that has the key is written as it is.
 * Verify runs; when the checkpoint opens it is also described, read into memory
 * and consolidated. Built for libFuzzer with -DDSCKPT_FUZZ=ON (clang), and always
 * as a corpus replay test (replay.c).
 */
#include "fuzz_ckpt_common.h"
#include "fuzz_native.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_file f[FUZZ_MAX_FILES];
    size_t n = fuzz_split(data, size, f);
    const char *dir = fuzz_dir();
    if (!fuzz_write_native(dir, f, n)) return 0;
    dsckpt_verify_opts vo;
    dsckpt_verify_opts_init(&vo);
    vo.threads = 1;
    dsckpt_verify_report *r = NULL;
    if (dsckpt_verify(dir, NULL, &vo, &r) == DSCKPT_OK) {
        fuzz_note("verify", (int)dsckpt_verify_report_result(r), dsckpt_verify_report_count(r) ? dsckpt_verify_report_problem(r, 0) : "");
        for (size_t i = 0; i < dsckpt_verify_report_count(r); i++) (void)dsckpt_verify_report_problem(r, i);
        (void)dsckpt_verify_report_bytes(r);
        dsckpt_verify_report_free(r);
    }
    dsckpt_ckpt *c = NULL;
    if (!fuzz_note("open", dsckpt_ckpt_open(dir, NULL, &c), dsckpt_last_error())) {
        fuzz_use_ckpt(c, dir);
        dsckpt_ckpt_free(c);
    }
    return 0;
}
