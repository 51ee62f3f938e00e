/*
 * test_save_protocol.c — the commit protocol of a save into an existing save root
 * (what the training runtime does every few steps): a write that fails at any
 * point leaves the previous checkpoint verifiable and `latest` naming it; the
 * failed tag has no manifest, so it is never taken for a checkpoint.
 */
#include "ckpt.h"
#include "fsutil.h"
#include "native_write.h"
#include "synth.h"
#include "tutil.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static dsckpt_status fill_const(void *u, ds_state s, uint32_t t, uint64_t start, uint64_t numel, void *dst,
                                int worker) {
    (void)s, (void)worker, (void)start;
    const ds_tensor *ts = u;
    dsckpt_dtype dt = s == DS_ST_W16 ? ts[t].dtype : DSCKPT_F32;
    memset(dst, (int)(t + 1), numel * dsckpt_dtype_size(dt));
    return DSCKPT_OK;
}

/* Saves tag `tag` into `root` through the native writer, then points latest at it. */
static dsckpt_status save(const char *root, const char *tag, const ds_tensor *ts, size_t nt) {
    char *dir = ds_join(root, tag);
    dsckpt_status st = ds_mkdir(dir);
    ds_native_out *o = NULL;
    ds_native_spec spec = {.tensors = ts, .ntensors = nt, .ngroups = 2, .stage = 2, .world_size = 3, .tag = tag,
                           .step = 1, .train_dtype = "bf16", .chunk_size = 4096};
    if (st == DSCKPT_OK) st = ds_native_prepare(&spec, dir, &o);
    if (st == DSCKPT_OK) st = ds_native_write_all(o, fill_const, (void *)ts, 2, NULL);
    if (st == DSCKPT_OK) st = ds_set_latest(root, tag);
    ds_native_out_free(o);
    free(dir);
    return st;
}

static void test_failed_save_keeps_previous(void) {
    ds_tensor *ts;
    size_t nt;
    TU_ASSERT_OK(ds_synth_tensors(20000, DSCKPT_BF16, &ts, &nt));
    char *root = tu_mkdtemp();
    TU_ASSERT_OK(save(root, "global_step1", ts, nt));
    char *latest = tu_path(root, "latest");
    /* Fail the next save after k bytes, for k across the whole save (rank files,
     * manifest, latest). */
    int failures = 0;
    for (int64_t k = 0; k < 400000; k += 9973) {
        char tag[32];
        snprintf(tag, sizeof tag, "global_step%lld", (long long)(k + 2));
        ds_fault_inject_write(k, ENOSPC);
        dsckpt_status st = save(root, tag, ts, nt);
        ds_fault_inject_write(-1, 0);
        if (st == DSCKPT_OK) {
            /* The budget outlasted the save: restore the baseline for the next trial. */
            TU_ASSERT_OK(ds_set_latest(root, "global_step1"));
            continue;
        }
        failures++;
        CU_ASSERT_EQUAL(st, DSCKPT_ENOSPC);
        size_t len;
        char *l = (char *)tu_read(latest, &len);
        CU_ASSERT(l && len == strlen("global_step1") && !memcmp(l, "global_step1", len));
        free(l);
        dsckpt_verify_report *r = NULL;
        TU_ASSERT_OK(dsckpt_verify(root, NULL, NULL, &r));
        CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_OK);
        dsckpt_verify_report_free(r);
        /* The failed tag is not a checkpoint: opening it says it is incomplete. */
        dsckpt_ckpt *c = NULL;
        dsckpt_status ost = dsckpt_ckpt_open(root, tag, &c);
        CU_ASSERT_NOT_EQUAL(ost, DSCKPT_OK);
        if (ost == DSCKPT_ENOENT) CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "incomplete"));
        dsckpt_ckpt_free(c);
    }
    CU_ASSERT(failures > 10);
    free(latest);
    tu_rmtree(root);
    free(root);
    ds_synth_tensors_free(ts, nt);
}

int main(void) {
    static const tu_test tests[] = {
        {"a save failing at any byte keeps the previous checkpoint and latest", test_failed_save_keeps_previous},
        {NULL, NULL}};
    return tu_main("save protocol", tests);
}
