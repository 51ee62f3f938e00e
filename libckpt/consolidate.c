/*
 * consolidate.c — full weights from a fragment map into safetensors: one file, or
 * the Hugging Face sharded layout (model-0000k-of-0000n.safetensors + index).
 *
 * The whole output layout (every file's header and every tensor's offset) is
 * planned before a byte is written; then the copy engine (copyengine.h) copies
 * disjoint blocks of elements on the worker threads: pread the fp32 (or w16)
 * fragments, convert, pwrite at the planned offset, start writeback. Memory is a few MiB per worker whatever the model size. Outputs are built
 * under temporary names and renamed into place only when complete.
 */
#include "cast.h"
#include "ckpt.h"
#include "copyengine.h"
#include "fsutil.h"
#include "hf_export.h"
#include "outsafe.h"
#include "parallel.h"
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK_ELEMS (1u << 20)
#define DEFAULT_MAX_SHARD 5000000000ull

void dsckpt_consolidate_opts_init(dsckpt_consolidate_opts *o) {
    memset(o, 0, sizeof *o);
    o->dtype = DSCKPT_BF16;
}

typedef struct out_tensor {
    uint32_t t;          /* source tensor */
    ds_state state;      /* FP32 or W16 */
    dsckpt_dtype src_dt, out_dt;
    size_t file;         /* output file index */
    uint64_t offset;     /* absolute byte offset in the output file */
} out_tensor;

typedef struct out_file {
    char *final;         /* final path */
    char *tmp;           /* where it is written */
    int fd;
    st_plan *plan;
} out_file;

typedef struct unit {
    size_t ot;           /* out_tensor index */
    uint64_t start, numel;
} unit;

typedef struct cons {
    const dsckpt_ckpt *c;
    ds_fdset fs;
    out_tensor *ots;
    size_t nots;
    out_file *files;
    size_t nfiles;
    unit *units;
    ds_copy_unit *cunits; /* the same units as byte ranges of the outputs */
    size_t nunits;
    float **inbuf;       /* per worker: BLOCK_ELEMS of the widest input */
    ds_progress prog;
} cons;

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* The engine's fill: output bytes [off, off+len) of unit j, elements of one
 * tensor read (pread, checked) and converted to the output dtype. */
static dsckpt_status fill_unit(void *u, size_t j, size_t file, uint64_t off, size_t len, void *buf, const void **out,
                               int worker) {
    (void)file;
    (void)out;
    cons *k = u;
    const unit *un = &k->units[j];
    const out_tensor *ot = &k->ots[un->ot];
    size_t ies = dsckpt_dtype_size(ot->src_dt), oes = dsckpt_dtype_size(ot->out_dt);
    uint64_t start = un->start + (off - k->cunits[j].offset) / oes, numel = len / oes;
    if (ies == oes) return ds_ckpt_read(k->c, &k->fs, ot->state, ot->t, start, numel, buf);
    void *in = k->inbuf[worker];
    DS_TRY(ds_ckpt_read(k->c, &k->fs, ot->state, ot->t, start, numel, in));
    if (ot->src_dt == DSCKPT_F32 && ot->out_dt == DSCKPT_BF16) ds_cast_f32_to_bf16(in, buf, (size_t)numel);
    else if (ot->src_dt == DSCKPT_F32 && ot->out_dt == DSCKPT_F16) ds_cast_f32_to_f16(in, buf, (size_t)numel);
    else if (ot->src_dt == DSCKPT_BF16 && ot->out_dt == DSCKPT_F32) ds_cast_bf16_to_f32(in, buf, (size_t)numel); /* exact */
    else if (ot->src_dt == DSCKPT_F16 && ot->out_dt == DSCKPT_F32) ds_cast_f16_to_f32(in, buf, (size_t)numel); /* exact */
    else
        return ds_err(DSCKPT_EINTERNAL, "no conversion from %s to %s", dsckpt_dtype_name(ot->src_dt),
                      dsckpt_dtype_name(ot->out_dt));
    return DSCKPT_OK;
}

static void cons_free(cons *k, int threads) {
    for (size_t i = 0; i < k->nfiles; i++) {
        out_file *f = &k->files[i];
        if (f->fd >= 0) close(f->fd);
        if (f->tmp) unlink(f->tmp); /* a no-op once renamed */
        free(f->tmp);
        free(f->final);
        st_plan_free(f->plan);
    }
    free(k->files);
    free(k->ots);
    free(k->units);
    free(k->cunits);
    if (k->inbuf)
        for (int i = 0; i < threads; i++) free(k->inbuf[i]);
    free(k->inbuf);
    ds_fdset_close(&k->fs);
}

/* Plans output file `fi` holding out-tensors [a, b). */
static dsckpt_status plan_file(cons *k, size_t fi, size_t a, size_t b) {
    const dsckpt_ckpt *c = k->c;
    size_t n = b - a, nal = 0;
    for (size_t i = a; i < b; i++) nal += c->tensors[k->ots[i].t].naliases;
    st_entry *ent = calloc(n ? n : 1, sizeof *ent);
    st_meta *meta = calloc(nal + 2, sizeof *meta);
    char **keys = calloc(nal + 1, sizeof *keys);
    dsckpt_status st = DSCKPT_OK;
    if (!ent || !meta || !keys) {
        st = ds_err(DSCKPT_ENOMEM, "out of memory planning the output");
        goto done;
    }
    size_t m = 0;
    meta[m++] = (st_meta){"dsckpt.source_tag", c->tag};
    for (size_t i = a; i < b; i++) {
        const ds_tensor *t = &c->tensors[k->ots[i].t];
        ent[i - a] = (st_entry){.name = t->name, .dtype = k->ots[i].out_dt, .ndim = t->ndim};
        memcpy(ent[i - a].shape, t->shape, sizeof t->shape);
        for (size_t al = 0; al < t->naliases; al++) {
            /* Tied weights: written once under the owning name; "alias.<name>" -> owner. */
            if (asprintf(&keys[m - 1], "alias.%s", t->aliases[al]) < 0) {
                keys[m - 1] = NULL;
                st = ds_err(DSCKPT_ENOMEM, "out of memory");
                goto done;
            }
            meta[m] = (st_meta){keys[m - 1], t->name};
            m++;
        }
    }
    st = st_plan_make(ent, n, meta, m, &k->files[fi].plan);
    /* Names and shapes come from the checkpoint: one the output format cannot hold
     * (an empty name, bad UTF-8) is the input's fault, not a usage error. */
    if (st == DSCKPT_EINVAL) st = ds_err_prefix(DSCKPT_ECORRUPT, "%s", k->c->dir);
    if (st == DSCKPT_OK)
        for (size_t i = a; i < b; i++) {
            k->ots[i].file = fi;
            k->ots[i].offset = k->files[fi].plan->header_bytes + k->files[fi].plan->offset[i - a];
        }
done:
    if (keys)
        for (size_t i = 0; i < nal; i++) free(keys[i]);
    free(keys);
    free(meta);
    free(ent);
    return st;
}

static dsckpt_status write_index(cons *k, const char *dir, uint64_t total) {
    cJSON *root = cJSON_CreateObject(), *md = cJSON_AddObjectToObject(root, "metadata"),
          *wm = cJSON_AddObjectToObject(root, "weight_map");
    bool ok = root && md && wm && cJSON_AddNumberToObject(md, "total_size", (double)total);
    for (size_t i = 0; ok && i < k->nots; i++) {
        char *base = ds_basename(k->files[k->ots[i].file].final);
        ok = base && cJSON_AddStringToObject(wm, k->c->tensors[k->ots[i].t].name, base);
        free(base);
    }
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return ds_err(DSCKPT_ENOMEM, "out of memory writing the index");
    char *p = ds_join(dir, "model.safetensors.index.json");
    dsckpt_status st = p ? ds_write_file_atomic(p, text, strlen(text)) : DSCKPT_ENOMEM;
    free(p);
    free(text);
    return st;
}

/* Which tensors, from which state, in which dtype; *total gets the output bytes. */
static dsckpt_status select_tensors(cons *k, const dsckpt_consolidate_opts *opts, uint64_t *total) {
    const dsckpt_ckpt *c = k->c;
    DS_TRY(ds_calloc(c->ntensors, sizeof *k->ots, &k->ots));
    for (size_t i = 0; i < c->ntensors; i++) {
        const ds_tensor *t = &c->tensors[i];
        if (!t->trainable && !t->buffer && opts->exclude_frozen) continue; /* buffers stay, as in DeepSpeed */
        out_tensor *ot = &k->ots[k->nots++];
        ot->t = (uint32_t)i;
        ot->state = t->trainable ? DS_ST_FP32 : DS_ST_W16;
        ot->src_dt = ds_ckpt_state_dtype(c, ot->state, (uint32_t)i);
        /* Frozen tensors and buffers keep their stored dtype, except that --dtype
         * fp32 upcasts 16-bit ones too (exact), as DeepSpeed's zero_to_fp32 writes
         * every floating tensor in fp32; integer tensors are never converted. */
        ot->out_dt = t->trainable ? opts->dtype : ot->src_dt;
        if (!t->trainable && opts->dtype == DSCKPT_F32 && (ot->src_dt == DSCKPT_BF16 || ot->src_dt == DSCKPT_F16))
            ot->out_dt = DSCKPT_F32;
        *total += t->numel * dsckpt_dtype_size(ot->out_dt);
    }
    return DSCKPT_OK;
}

/* Shards: greedy in tensor order, a tensor larger than the limit alone (one file
 * when `single`); each file's safetensors plan. */
static dsckpt_status plan_shards(cons *k, bool single, uint64_t max_shard) {
    const dsckpt_ckpt *c = k->c;
    size_t *bounds = NULL; /* file f holds ots [bounds[f], bounds[f+1]) */
    DS_TRY(ds_calloc(k->nots + 2, sizeof *bounds, &bounds));
    size_t nf = 1;
    if (!single) {
        uint64_t cur = 0;
        for (size_t i = 0; i < k->nots; i++) {
            uint64_t b = c->tensors[k->ots[i].t].numel * dsckpt_dtype_size(k->ots[i].out_dt);
            if (cur > 0 && cur + b > max_shard) {
                bounds[nf++] = i;
                cur = 0;
            }
            cur += b;
        }
    }
    bounds[nf] = k->nots;
    dsckpt_status st = ds_calloc(nf, sizeof *k->files, &k->files);
    if (!st) {
        k->nfiles = nf;
        for (size_t f = 0; f < nf; f++) k->files[f].fd = -1;
        for (size_t f = 0; f < nf && st == DSCKPT_OK; f++) st = plan_file(k, f, bounds[f], bounds[f + 1]);
    }
    free(bounds);
    return st;
}

/* The outputs under temporary names (beside `out`, or in od's temporary
 * directory), each starting with its safetensors header. */
static dsckpt_status create_outputs(cons *k, const char *out, bool single, bool force, ds_outdir *od) {
    size_t nf = k->nfiles;
    if (single) {
        ds_clean_stale_temps(out);
        k->files[0].final = ds_strdup(out);
        k->files[0].tmp = ds_tmp_sibling(out);
        if (!k->files[0].final || !k->files[0].tmp) return DSCKPT_ENOMEM;
    } else {
        DS_TRY(ds_outdir_begin_kind(od, out, force, DS_OUT_HF_DIR));
        for (size_t f = 0; f < nf; f++) {
            char name[96];
            if (nf == 1) snprintf(name, sizeof name, "model.safetensors");
            else snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", f + 1, nf);
            k->files[f].final = ds_join(out, name);
            k->files[f].tmp = ds_join(od->tmp, name);
            if (!k->files[f].final || !k->files[f].tmp) return DSCKPT_ENOMEM;
        }
    }
    for (size_t f = 0; f < nf; f++) {
        out_file *of = &k->files[f];
        of->fd = open(of->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (of->fd < 0) return ds_err_errno(errno, "%s: cannot create", of->tmp);
        DS_TRY(ds_pwrite_full(of->fd, of->plan->header, of->plan->header_bytes, 0, of->final));
    }
    return DSCKPT_OK;
}

/* Where a unit's elements are stored (file UINT32_MAX where no fragment holds
 * them: their read reports it), and the unit's index before sorting. */
typedef struct src_key {
    uint32_t file;
    uint64_t offset;
    size_t unit;
} src_key;

/* The units of out-tensor i (each at most BLOCK_ELEMS elements from one source
 * fragment, so that it reads one file forwards) into un[] and their sources into
 * key[], numbered from `first` (un NULL: only counted). Returns how many. */
static size_t tensor_units(const cons *k, size_t i, unit *un, src_key *key, size_t first) {
    const out_tensor *ot = &k->ots[i];
    uint64_t numel = k->c->tensors[ot->t].numel;
    size_t nf, m = 0, f = 0;
    const ds_frag *fr = ds_ckpt_frags(k->c, ot->state, ot->t, &nf);
    for (uint64_t pos = 0; pos < numel;) {
        while (f < nf && fr[f].start + fr[f].numel <= pos) f++;
        bool in = f < nf && fr[f].start <= pos;
        uint64_t lim = in ? fr[f].start + fr[f].numel : f < nf ? fr[f].start : numel;
        uint64_t n = DS_MIN(DS_MIN((uint64_t)BLOCK_ELEMS, lim - pos), numel - pos);
        if (un) {
            un[m] = (unit){i, pos, n};
            key[m] = in ? (src_key){fr[f].file, fr[f].offset + (pos - fr[f].start) * dsckpt_dtype_size(fr[f].dtype),
                                    first + m}
                        : (src_key){UINT32_MAX, 0, first + m};
        }
        m++;
        pos += n;
    }
    return m;
}

static int cmp_src_key(const void *a, const void *b) {
    const src_key *x = a, *y = b;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->unit < y->unit ? -1 : x->unit > y->unit;
}

/* Every out-tensor's units, in the order their sources lie in the source files:
 * the copy engine's workers, each taking a stretch of units, then read forwards
 * through far-apart parts of the sources, and a compressed source's chunks are
 * decoded once (in output order, units spanning the rank files of a ZeRO-3
 * source decoded 1.65x the bytes they needed on one thread and 2.1x on two;
 * bench/RESULTS.md, issue 15). The output bytes do not depend on the order. */
static dsckpt_status plan_units(cons *k) {
    size_t nu = 0;
    for (size_t i = 0; i < k->nots; i++) nu += tensor_units(k, i, NULL, NULL, 0);
    unit *un = NULL;
    src_key *key = NULL;
    dsckpt_status st = ds_calloc(nu ? nu : 1, sizeof *un, &un);
    if (st == DSCKPT_OK) st = ds_calloc(nu ? nu : 1, sizeof *key, &key);
    if (st == DSCKPT_OK) st = ds_calloc(nu ? nu : 1, sizeof *k->units, &k->units);
    if (st == DSCKPT_OK) st = ds_calloc(nu ? nu : 1, sizeof *k->cunits, &k->cunits);
    if (st == DSCKPT_OK) {
        size_t m = 0;
        for (size_t i = 0; i < k->nots; i++) m += tensor_units(k, i, un + m, key + m, m);
        qsort(key, nu, sizeof *key, cmp_src_key);
        for (size_t u = 0; u < nu; u++) {
            const unit *x = &un[key[u].unit];
            const out_tensor *ot = &k->ots[x->ot];
            uint64_t oes = dsckpt_dtype_size(ot->out_dt);
            k->units[u] = *x;
            k->cunits[u] = (ds_copy_unit){.file = ot->file, .offset = ot->offset + x->start * oes, .len = x->numel * oes};
        }
        k->nunits = nu;
    }
    free(un);
    free(key);
    return st;
}

/* Every tensor's data, in work units of at most BLOCK_ELEMS elements of one
 * tensor, through the copy engine on `threads` threads. */
static dsckpt_status copy_all(cons *k, int threads, uint64_t total, const dsckpt_consolidate_opts *opts) {
    DS_TRY(plan_units(k));
    DS_TRY(ds_calloc((size_t)threads, sizeof *k->inbuf, &k->inbuf));
    for (int i = 0; i < threads; i++) DS_TRY(ds_malloc(BLOCK_ELEMS * sizeof(double), &k->inbuf[i]));
    ds_copy_file *cf = NULL;
    DS_TRY(ds_calloc(k->nfiles, sizeof *cf, &cf));
    for (size_t f = 0; f < k->nfiles; f++)
        cf[f] = (ds_copy_file){.fd = k->files[f].fd, .name = k->files[f].final, .size = k->files[f].plan->file_size};
    k->prog.total = total;
    k->prog.fn = opts->progress;
    k->prog.user = opts->progress_user;
    ds_copy_job job = {.files = cf, .nfiles = k->nfiles, .units = k->cunits, .nunits = k->nunits, .fill = fill_unit,
                       .user = k, .threads = threads, .prog = &k->prog};
    dsckpt_status st = ds_copy_run(&job);
    free(cf);
    return st;
}

/* Durable, then into place (with the index and the Hugging Face side files in a
 * directory output). */
static dsckpt_status commit_outputs(cons *k, const char *out, bool single, bool force, ds_outdir *od, uint64_t total,
                                    dsckpt_dtype dtype) {
    size_t nf = k->nfiles;
    for (size_t f = 0; f < nf; f++) {
        out_file *of = &k->files[f];
        if (fsync(of->fd) != 0) return ds_err_errno(errno, "%s: fsync failed", of->final);
        int fd = of->fd;
        of->fd = -1;
        if (close(fd) != 0) return ds_err_errno(errno, "%s: close failed", of->final);
    }
    if (single) {
        if (ds_interrupted()) return ds_err_interrupted();
        DS_TRY(ds_rename_durable(k->files[0].tmp, out, !force));
        free(k->files[0].tmp);
        k->files[0].tmp = NULL;
        return DSCKPT_OK;
    }
    if (nf > 1) DS_TRY(write_index(k, od->tmp, total));
    /* config.json, generation_config.json, tokenizer files: from_pretrained(out). */
    DS_TRY(ds_hf_export_files(k->c, od->tmp, dtype));
    DS_TRY(ds_outdir_commit(od));
    for (size_t f = 0; f < nf; f++) { /* now inside `out`; nothing to unlink */
        free(k->files[f].tmp);
        k->files[f].tmp = NULL;
    }
    return DSCKPT_OK;
}

dsckpt_status dsckpt_consolidate(const dsckpt_ckpt *c, const char *out, const dsckpt_consolidate_opts *opts) {
    ds_err_clear();
    if (!c || !out || !*out) return ds_err(DSCKPT_EINVAL, "dsckpt_consolidate: no checkpoint or output path");
    if (c->format && !strcmp(c->format, "safetensors"))
        return ds_err(DSCKPT_EUNSUPPORTED, "%s: a .safetensors file holds weights only; it cannot be consolidated", c->dir);
    dsckpt_consolidate_opts defaults;
    if (!opts) {
        dsckpt_consolidate_opts_init(&defaults);
        opts = &defaults;
    }
    if (opts->dtype != DSCKPT_BF16 && opts->dtype != DSCKPT_F16 && opts->dtype != DSCKPT_F32)
        return ds_err(DSCKPT_EINVAL, "output dtype must be bf16, fp16 or fp32 (got %s)", dsckpt_dtype_name(opts->dtype));
    uint64_t max_shard = opts->max_shard_size ? opts->max_shard_size : DEFAULT_MAX_SHARD;
    bool single = ends_with(out, ".safetensors");
    int threads = ds_thread_count(opts->threads);
    cons k = {.c = c};
    ds_outdir od = {0};
    dsckpt_status st = DSCKPT_OK;
    uint64_t total = 0;
    if (single && ds_exists(out) && !opts->force)
        return ds_err(DSCKPT_EEXIST, "%s: output already exists (not replaced unless forced)", out);
    if (single) {
        /* Named as the caller named it, not by the temporary written beside it. */
        char *parent = ds_dirname(out);
        bool ok = parent && ds_is_dir(parent);
        free(parent);
        if (!ok) return ds_err(DSCKPT_ENOENT, "%s: the parent directory does not exist", out);
    }
    DS_TRYGOTO(select_tensors(&k, opts, &total), done);
    DS_TRYGOTO(plan_shards(&k, single, max_shard), done);
    DS_TRYGOTO(ds_fdset_open(c, &k.fs), done);
    DS_TRYGOTO(create_outputs(&k, out, single, opts->force != 0, &od), done);
    DS_TRYGOTO(copy_all(&k, threads, total, opts), done);
    DS_TRYGOTO(commit_outputs(&k, out, single, opts->force != 0, &od, total, opts->dtype), done);
done:
    ds_outdir_abort(&od);
    cons_free(&k, threads);
    return st;
}
