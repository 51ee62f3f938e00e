/*
 * reshard.c — a native checkpoint for M ranks (and optionally another ZeRO stage)
 * from any fragment map: the new layout is computed with the shared partition
 * arithmetic and each new rank file is streamed from the intersecting source
 * fragments. Every state and all non-tensor state are carried over bit for bit.
 */
#include "ckpt.h"
#include "deepspeed_write.h"
#include "universal.h"
#include "fsutil.h"
#include "hf_export.h"
#include "native_write.h"
#include "outsafe.h"
#include "zchunk.h"

#include <stdlib.h>
#include <string.h>

void dsckpt_reshard_opts_init(dsckpt_reshard_opts *o) {
    memset(o, 0, sizeof *o);
    o->world_size = 1;
    o->zero_stage = -1;
}

typedef struct reshard_fill {
    const dsckpt_ckpt *c;
    ds_fdset fs;
} reshard_fill;

static dsckpt_status reshard_fill_fn(void *u, ds_state s, uint32_t t, uint64_t start, uint64_t numel, void *dst,
                                     int worker) {
    (void)worker;
    reshard_fill *rf = u;
    dsckpt_dtype want = s == DS_ST_W16 ? rf->c->tensors[t].dtype : DSCKPT_F32;
    if (ds_ckpt_state_dtype(rf->c, s, t) != want)
        return ds_err(DSCKPT_EUNSUPPORTED, "%s: tensor '%s' state %s is stored as %s; a native checkpoint keeps it as %s",
                      rf->c->dir, rf->c->tensors[t].name, ds_state_names[s],
                      dsckpt_dtype_name(ds_ckpt_state_dtype(rf->c, s, t)), dsckpt_dtype_name(want));
    return ds_ckpt_read(rf->c, &rf->fs, s, t, start, numel, dst);
}

static const cJSON *carried(const dsckpt_ckpt *c, const char *key) {
    return c->manifest ? cJSON_GetObjectItemCaseSensitive(c->manifest, key) : NULL;
}

dsckpt_status dsckpt_reshard(const dsckpt_ckpt *c, const char *out, const dsckpt_reshard_opts *opts) {
    ds_err_clear();
    if (!c || !out || !*out || !opts) return ds_err(DSCKPT_EINVAL, "dsckpt_reshard: NULL argument");
    if (c->format && !strcmp(c->format, "safetensors"))
        return ds_err(DSCKPT_EUNSUPPORTED, "%s: a .safetensors file holds weights only; it cannot be resharded", c->dir);
    if (opts->world_size < 1 || opts->world_size > 1000000)
        return ds_err(DSCKPT_EINVAL, "the world size must be between 1 and 1000000 (got %d)", opts->world_size);
    if (opts->compress_level && opts->format != DSCKPT_FORMAT_NATIVE)
        return ds_err(DSCKPT_EINVAL, "--compress writes the native format only");
    if (opts->compress_level < 0 || (opts->compress_level && !ds_zchunk_level_ok(opts->compress_level)))
        return ds_err(DSCKPT_EINVAL, "compression level %d (zstd levels are 1 to 22)", opts->compress_level);
    if (opts->format == DSCKPT_FORMAT_UNIVERSAL) return ds_universal_reshard(c, out, opts);
    int stage = opts->zero_stage < 0 ? c->stage : opts->zero_stage;
    if (stage > 3) return ds_err(DSCKPT_EINVAL, "the ZeRO stage must be 0, 1, 2 or 3 (got %d)", stage);
    reshard_fill rf = {.c = c};
    ds_outdir od = {0};
    ds_native_out *no = NULL;
    char *tagdir = NULL;
    dsckpt_status st = ds_fdset_open(c, &rf.fs);
    if (st) return st;
    DS_TRYGOTO(ds_outdir_begin(&od, out, opts->force != 0), done);
    tagdir = ds_join(od.tmp, c->tag);
    if (!tagdir) {
        st = DSCKPT_ENOMEM;
        goto done;
    }
    DS_TRYGOTO(ds_mkdir(tagdir), done);
    ds_progress prog = {.fn = opts->progress, .user = opts->progress_user};
    if (opts->format == DSCKPT_FORMAT_DEEPSPEED) {
        bool from_ds = c->format && !strcmp(c->format, "deepspeed");
        if (from_ds && stage != c->stage) {
            st = ds_err(DSCKPT_EUNSUPPORTED,
                        "DeepSpeed's format keeps the ZeRO stage of a DeepSpeed checkpoint (%d): DeepSpeed loads "
                        "a checkpoint only at the stage it was saved with; keep the stage, or write the native format",
                        c->stage);
            goto done;
        }
        const cJSON *cfg = carried(c, "ds_config");
        ds_dsw_spec ds = {.tensors = c->tensors, .ntensors = c->ntensors, .stage = stage,
                          .world_size = opts->world_size, .step = c->step,
                          .model_dtype = !c->train_dtype ? DSCKPT_F32
                                         : !strcmp(c->train_dtype, "bf16") ? DSCKPT_BF16
                                         : !strcmp(c->train_dtype, "fp16") ? DSCKPT_F16 : DSCKPT_F32,
                          .template_dir = from_ds ? c->dir : NULL, .ds_config = cfg, .state = carried(c, "state"),
                          .fill = reshard_fill_fn, .fill_user = &rf, .threads = opts->threads,
                          .check_reads = !c->no_read_check, .drop_unknown = opts->drop_unknown_objects != 0};
        for (size_t t = 0; t < c->ntensors; t++)
            if (c->tensors[t].trainable) prog.total += 12 * c->tensors[t].numel;
        DS_TRYGOTO(ds_deepspeed_write(&ds, tagdir, &prog), done);
    } else {
    ds_native_spec spec = {.tensors = c->tensors, .ntensors = c->ntensors, .ngroups = c->ngroups, .stage = stage,
                           .world_size = opts->world_size, .tag = c->tag, .step = c->step,
                           .train_dtype = c->train_dtype, .state = carried(c, "state"),
                           .ds_config = carried(c, "ds_config"), .metrics = carried(c, "metrics"),
                           .model = ds_ckpt_model(c), .compress_level = opts->compress_level};
    DS_TRYGOTO(ds_native_prepare(&spec, tagdir, &no), done);
    DS_TRYGOTO(ds_native_write_all(no, reshard_fill_fn, &rf, ds_thread_count(opts->threads), &prog), done);
    }
    DS_TRYGOTO(ds_set_latest(od.tmp, c->tag), done);
    /* The save root's trainer state (best checkpoint, history) travels along; from a
     * Hugging Face checkpoint-N, its model files and Trainer files too. */
    DS_TRYGOTO(ds_hf_reshard_carry(c, od.tmp, out), done);
    st = ds_outdir_commit(&od);
done:
    ds_outdir_abort(&od);
    ds_native_out_free(no);
    ds_fdset_close(&rf.fs);
    free(tagdir);
    return st;
}
