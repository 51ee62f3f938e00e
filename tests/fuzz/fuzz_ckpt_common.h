/*
 * fuzz_ckpt_common.h — what the checkpoint fuzz targets do with a checkpoint that
 * opened: describe it, read every state of every tensor into memory (what
 * consolidate and reshard read; then again as one read list on two threads, as a
 * dstrain load reads), and consolidate it to a file in the scratch directory. Shared by fuzz_deepspeed.c and fuzz_verify.c.
 */
#ifndef DSCKPT_FUZZ_CKPT_COMMON_H
#define DSCKPT_FUZZ_CKPT_COMMON_H

#include "ckpt.h"
#include "fuzz_util.h"

static inline void fuzz_use_ckpt(dsckpt_ckpt *c, const char *scratch) {
    char *json = NULL;
    if (dsckpt_ckpt_describe_json(c, &json) == DSCKPT_OK) free(json);
    dsckpt_info info;
    dsckpt_ckpt_info(c, &info);
    ds_fdset fs;
    if (ds_fdset_open(c, &fs) == DSCKPT_OK) {
        static uint8_t buf[1 << 16];
        for (uint32_t t = 0; t < c->ntensors; t++)
            for (int s = 0; s < DS_NSTATES; s++) {
                if (!ds_state_applies(&c->tensors[t], (ds_state)s)) continue;
                size_t es = dsckpt_dtype_size(ds_ckpt_state_dtype(c, (ds_state)s, t));
                uint64_t numel = c->tensors[t].numel, step = sizeof buf / (es ? es : 1);
                if (numel > (1u << 22)) continue; /* bounded by the input anyway */
                for (uint64_t p = 0; p < numel; p += step)
                    if (ds_ckpt_read(c, &fs, (ds_state)s, t, p, DS_MIN(step, numel - p), buf) != DSCKPT_OK) break;
            }
        ds_fdset_close(&fs);
    }
    /* Every state of every tensor as one read list, on two threads (a dstrain
     * load's reads: the runs cut at the chunks, each chunk's pieces in one pass). */
    if (ds_fdset_open_lazy(c, &fs) == DSCKPT_OK) {
        static uint8_t lbuf[1 << 20];
        ds_read_list l = {0};
        size_t at = 0;
        dsckpt_status st = DSCKPT_OK;
        for (uint32_t t = 0; t < c->ntensors && !st; t++)
            for (int s = 0; s < DS_NSTATES && !st; s++) {
                if (!ds_state_applies(&c->tensors[t], (ds_state)s)) continue;
                size_t es = dsckpt_dtype_size(ds_ckpt_state_dtype(c, (ds_state)s, t));
                uint64_t numel = c->tensors[t].numel;
                if (!es || numel > (sizeof lbuf - at) / es) continue;
                st = ds_read_list_add(&l, c, (ds_state)s, t, 0, numel, lbuf + at);
                at += (size_t)numel * es;
            }
        ds_fdset_defer_checks(&fs);
        if (!st) st = ds_read_list_run_threads(c, &fs, &l, 2);
        if (!st) st = ds_fdset_finish(c, &fs);
        fuzz_note("read list", st, dsckpt_last_error());
        ds_read_list_free(&l);
        ds_fdset_close(&fs);
    }
    char out[4200];
    snprintf(out, sizeof out, "%s/out.safetensors", scratch);
    dsckpt_consolidate_opts o;
    dsckpt_consolidate_opts_init(&o);
    o.threads = 1;
    o.force = 1;
    fuzz_note("consolidate", dsckpt_consolidate(c, out, &o), dsckpt_last_error());
}

#endif /* DSCKPT_FUZZ_CKPT_COMMON_H */
