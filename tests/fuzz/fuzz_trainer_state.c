/*
 * fuzz_trainer_state.c — fuzz target for dstrain's rank-0 bookkeeping
 * (runtime/trainer.c): a save root cut from the input (fuzz_util.h) with
 * trainer_state.json, `latest` and tag directories. trainer_state.json is loaded,
 * a training and an eval entry are logged, a checkpoint is recorded, the state is
 * saved again, and the checkpoints are rotated down to one with the best (read
 * from the file) and the tag `latest` names kept — as dstrain does after a save.
 * Rotation must never delete the newest complete checkpoint, the best or the one
 * `latest` names; if it does, the target traps. Built for libFuzzer with
 * -DDSCKPT_FUZZ=ON (clang), and always as a corpus replay test (replay.c).
 */
#include "fsutil.h"
#include "fuzz_util.h"
#include "trainer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool fuzz_is_dir(const char *root, const char *name) {
    char p[4300];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", root, name);
    return !lstat(p, &sb) && S_ISDIR(sb.st_mode);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_file f[FUZZ_MAX_FILES];
    size_t n = fuzz_split(data, size, f);
    const char *dir = fuzz_dir();
    (void)fuzz_write_all(dir, f, n);
    rt_tstate ts;
    if (fuzz_note("load", rt_tstate_load(dir, &ts), dsckpt_last_error())) return 0;
    rt_tstate_log_train(&ts, 7, 2.5, 1e-3, 0.75);
    char metric[64];
    rt_metric_name("loss", metric, sizeof metric);
    bool greater = rt_metric_greater_default(metric);
    rt_tstate_log_eval(&ts, 7, metric, 2.25);
    (void)rt_tstate_checkpoint(&ts, "global_step7", 7, 2.25, greater);
    (void)rt_tstate_save(&ts, dir, 7, 10, 1, 1, 4);
    /* `latest`, stripped as the readers strip it. */
    char keep[256] = "";
    for (size_t i = 0; i < n; i++)
        if (!strcmp(f[i].name, "latest")) {
            size_t l = f[i].len < sizeof keep - 1 ? f[i].len : sizeof keep - 1;
            memcpy(keep, f[i].data, l);
            keep[l] = '\0';
            keep[strcspn(keep, " \t\r\n")] = '\0';
        }
    char **tags = NULL;
    size_t nt = 0;
    char newest[256] = "";
    if (rt_list_checkpoints(dir, &tags, &nt) == DSCKPT_OK) {
        if (nt) snprintf(newest, sizeof newest, "%s", tags[0]);
        rt_free_list(tags, nt);
    }
    const char *best = rt_tstate_best(&ts);
    bool had_best = best && ds_safe_name(best) && fuzz_is_dir(dir, best);
    bool had_keep = keep[0] && ds_safe_name(keep) && fuzz_is_dir(dir, keep);
    int deleted = 0;
    fuzz_note("rotate", rt_rotate(dir, 1, best, keep[0] ? keep : NULL, &deleted), dsckpt_last_error());
    if (had_best && !fuzz_is_dir(dir, best)) __builtin_trap();
    if (had_keep && !fuzz_is_dir(dir, keep)) __builtin_trap();
    if (newest[0] && !fuzz_is_dir(dir, newest)) __builtin_trap();
    rt_tstate_free(&ts);
    return 0;
}
