/*
 * deepspeed.c — read a DeepSpeed ZeRO checkpoint directory into the fragment map
 * (see deepspeed.h and docs/formats/deepspeed.md).
 *
 * Nothing is copied at open: each fragment records where a run of elements lives
 * inside a zip member of a .pt file. Rules, per stage:
 * - stages 1/2 (DeepSpeedZeroOptimizer, BF16_Optimizer): group g of W ranks; rank
 *   r's `single_partition_of_fp32_groups[g]` holds real elements followed (for
 *   BF16_Optimizer) by group_paddings[r] of padding; the real parts of ranks 0..W-1
 *   concatenated are the group's flat buffer, cut by param_shapes[g]. exp_avg and
 *   exp_avg_sq (base_optimizer_state.state[g]) share that layout.
 * - stage 3: sub-group s; each tensor of n elements is split in q = ceil(n/W)
 *   pieces; rank r's fp32_flat_groups[s] is its pieces in param_shapes[s] order.
 * - frozen parameters: stage 1 from `module`; stage 2 whole in
 *   frozen_param_fragments; stage 3 one piece per rank's model file.
 * - buffers (buffer_names) from `module`; tied weights from shared_params.
 */
#include "deepspeed.h"

#include "cast.h"
#include "fsutil.h"
#include "partition.h"
#include "pickle.h"
#include "safetensors.h"
#include "zip.h"

#include <ctype.h>
#include <math.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PKL_MAX (256u << 20)

typedef struct ds_pt {
    char *name;
    char *path;
    int fd;
    uint64_t size;
    zip_archive *zip;
    pk_doc *doc;
    pk_obj *root;
    int rank;       /* D, or 0 for mp_rank_00_model_states.pt */
    size_t file_index; /* index in c->files once registered */
} ds_pt;

typedef struct ds_open_ctx {
    dsckpt_ckpt *c;
    ds_pt *optim;   /* W entries, by rank */
    size_t noptim;
    ds_pt *model;   /* 1 entry (stage 0-2) or W entries (stage 3), by rank */
    size_t nmodel;
    size_t cap_frags[DS_NSTATES];
    int *z0_alias;  /* stage 0: module entry -> the entry it is a second name of, or -1 */
} ds_open_ctx;

/* ---- directory scan ---- */

/* Parses "<prefix><digits><suffix>" exactly; returns the number or -1. */
static long match_num(const char *s, const char *prefix, const char *suffix) {
    size_t lp = strlen(prefix), ls = strlen(suffix), n = strlen(s);
    if (n <= lp + ls || strncmp(s, prefix, lp) || strcmp(s + n - ls, suffix)) return -1;
    long v = 0;
    for (size_t i = lp; i < n - ls; i++) {
        if (!isdigit((unsigned char)s[i]) || v > 10000000) return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

bool ds_is_deepspeed_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        static const char *suffix[] = {"_optim_states.pt", "_model_states.pt"};
        size_t n = strlen(e->d_name);
        for (int k = 0; k < 2 && !found; k++) {
            size_t m = strlen(suffix[k]);
            found = n > m && !strcmp(e->d_name + n - m, suffix[k]);
        }
    }
    closedir(d);
    return found;
}

static void pt_close(ds_pt *p) {
    if (!p) return;
    if (p->fd >= 0) close(p->fd);
    zip_free(p->zip);
    pk_doc_free(p->doc);
    free(p->name);
    free(p->path);
    memset(p, 0, sizeof *p);
    p->fd = -1;
}

static dsckpt_status pt_load_ex(const char *dir, const char *name, int rank, ds_pt *p, bool want_dict);
static dsckpt_status pt_load(const char *dir, const char *name, int rank, ds_pt *p) {
    return pt_load_ex(dir, name, rank, p, true);
}

static dsckpt_status pt_load_ex(const char *dir, const char *name, int rank, ds_pt *p, bool want_dict) {
    memset(p, 0, sizeof *p);
    p->fd = -1;
    p->rank = rank;
    p->name = ds_strdup(name);
    p->path = ds_join(dir, name);
    if (!p->name || !p->path) return DSCKPT_ENOMEM;
    DS_TRY(ds_open_read(p->path, &p->fd, &p->size));
    uint8_t magic[4] = {0};
    if (p->size >= 4) DS_TRY(ds_pread_full(p->fd, magic, 4, 0, p->path));
    /* Judged by content: a zip (torch >= 1.6), a pickle stream (the legacy format:
     * PROTO 2..5 first), or neither (an empty file, a link to some text file). */
    if (p->size == 0) return ds_err(DSCKPT_ECORRUPT, "%s: empty file (0 bytes): not a torch checkpoint", p->path);
    if (p->size >= 2 && magic[0] == 0x80 && magic[1] >= 2 && magic[1] <= 5 && memcmp(magic, "PK\x03\x04", 4) != 0)
        return ds_err(DSCKPT_EUNSUPPORTED,
                      "%s: not a zip file: the legacy (pre-1.6) torch.save format is not supported; re-save with a current torch",
                      p->path);
    if (p->size < 4 || memcmp(magic, "PK\x03\x04", 4) != 0)
        return ds_err(DSCKPT_ECORRUPT, "%s: not a torch zip archive (%llu bytes starting %02x %02x %02x %02x; no zip signature)",
                      p->path, (unsigned long long)p->size, magic[0], magic[1], magic[2], magic[3]);
    DS_TRY(zip_open_fd(p->fd, p->path, &p->zip));
    zip_torch_meta meta;
    DS_TRY(zip_torch_meta_read(p->fd, p->zip, p->path, &meta)); /* big-endian: unsupported */
    const zip_member *m = zip_find_rel(p->zip, "data.pkl");
    if (!m) return ds_err(DSCKPT_ECORRUPT, "%s: no data.pkl member: not a torch.save file", p->path);
    uint8_t *pkl = NULL;
    DS_TRY(zip_read_member(p->fd, p->zip, m, PKL_MAX, p->path, &pkl));
    dsckpt_status st = pk_parse(pkl, (size_t)m->size, p->path, NULL, &p->doc, &p->root);
    free(pkl);
    if (st == DSCKPT_OK && want_dict && (!p->root || p->root->kind != PK_DICT))
        st = ds_err(DSCKPT_ECORRUPT, "%s: the pickled object is not a dict", p->path);
    return st;
}

typedef struct scan {
    char **optim;    /* by rank */
    size_t nopt;
    bool opt_bf16, opt_plain;
    char **model3;   /* zero_pp_rank_D model files, by rank */
    size_t nmod3;
    bool model_mp;   /* mp_rank_00_model_states.pt present */
} scan;

static dsckpt_status put_rank(char ***arr, size_t *n, long r, const char *name, const char *dir) {
    if (r >= 100000) return ds_err(DSCKPT_ECORRUPT, "%s: rank %ld in %s is implausibly large", dir, r, name);
    if ((size_t)r >= *n) {
        char **p = realloc(*arr, ((size_t)r + 1) * sizeof *p);
        if (!p) return ds_err(DSCKPT_ENOMEM, "out of memory");
        for (size_t i = *n; i <= (size_t)r; i++) p[i] = NULL;
        *arr = p;
        *n = (size_t)r + 1;
    }
    if ((*arr)[r])
        return ds_err(DSCKPT_ECORRUPT, "%s: two files for rank %ld (%s and %s): remove the stale one", dir, r,
                      (*arr)[r], name);
    (*arr)[r] = ds_strdup(name);
    return (*arr)[r] ? DSCKPT_OK : DSCKPT_ENOMEM;
}

static void scan_free(scan *s) {
    for (size_t i = 0; i < s->nopt; i++) free(s->optim[i]);
    for (size_t i = 0; i < s->nmod3; i++) free(s->model3[i]);
    free(s->optim);
    free(s->model3);
}

static dsckpt_status scan_dir(const char *dir, scan *s, bool need_optim) {
    memset(s, 0, sizeof *s);
    DIR *d = opendir(dir);
    if (!d) return ds_err_errno(errno, "%s: cannot list directory", dir);
    dsckpt_status st = DSCKPT_OK;
    struct dirent *e;
    while (st == DSCKPT_OK && (e = readdir(d))) {
        const char *n = e->d_name;
        long r;
        if (!strncmp(n, "layer_", 6) && strstr(n, "model_states.pt"))
            st = ds_err(DSCKPT_EUNSUPPORTED, "%s: pipeline-parallel checkpoint (found %s); only data-parallel ZeRO checkpoints are supported",
                        dir, n);
        else if ((!strncmp(n, "expert_", 7) || !strncmp(n, "expp_rank_", 10)) && strstr(n, ".pt"))
            st = ds_err(DSCKPT_EUNSUPPORTED, "%s: mixture-of-experts checkpoint (found %s); not supported", dir, n);
        else if (strstr(n, "_states.pt") && ((strstr(n, "_mp_rank_") && !strstr(n, "_mp_rank_00")) ||
                                             (!strncmp(n, "mp_rank_", 8) && strncmp(n, "mp_rank_00", 10))))
            st = ds_err(DSCKPT_EUNSUPPORTED, "%s: tensor/model-parallel checkpoint (found %s); only mp_rank_00 (no model parallelism) is supported",
                        dir, n);
        else if ((r = match_num(n, "bf16_zero_pp_rank_", "_mp_rank_00_optim_states.pt")) >= 0) {
            s->opt_bf16 = true;
            st = put_rank(&s->optim, &s->nopt, r, n, dir);
        } else if ((r = match_num(n, "zero_pp_rank_", "_mp_rank_00_optim_states.pt")) >= 0) {
            s->opt_plain = true;
            st = put_rank(&s->optim, &s->nopt, r, n, dir);
        } else if ((r = match_num(n, "zero_pp_rank_", "_mp_rank_00_model_states.pt")) >= 0) {
            st = put_rank(&s->model3, &s->nmod3, r, n, dir);
        } else if (!strcmp(n, "mp_rank_00_model_states.pt")) {
            s->model_mp = true;
        }
    }
    closedir(d);
    if (st == DSCKPT_OK && s->opt_bf16 && s->opt_plain)
        st = ds_err(DSCKPT_ECORRUPT, "%s: both bf16_ and plain optimizer files: two runs wrote here; remove the stale ones", dir);
    if (st == DSCKPT_OK && need_optim && s->nopt == 0)
        st = ds_err(DSCKPT_EUNSUPPORTED, "%s: no *_optim_states.pt files", dir);
    for (size_t i = 0; st == DSCKPT_OK && i < s->nopt; i++)
        if (!s->optim[i])
            st = ds_err(DSCKPT_ECORRUPT, "%s: optimizer file for rank %zu is missing (found ranks up to %zu)", dir, i,
                        s->nopt - 1);
    return st;
}

/* ---- helpers over the object trees ---- */

static pk_obj *need(const pk_obj *dict, const char *key, pk_kind kind, const char *what, dsckpt_status *st) {
    pk_obj *o = pk_get(dict, key);
    if (!o || o->kind != kind) {
        *st = ds_err(DSCKPT_ECORRUPT, "%s: '%s' missing or of the wrong type", what, key);
        return NULL;
    }
    return o;
}

static int stage_of(const pk_obj *zs) {
    if (!zs || zs->kind != PK_ENUM) return -1;
    if (zs->member) {
        if (!strcmp(zs->member, "optimizer_states")) return 1;
        if (!strcmp(zs->member, "gradients")) return 2;
        if (!strcmp(zs->member, "weights")) return 3;
        if (!strcmp(zs->member, "disabled")) return 0;
        return -1;
    }
    return zs->i >= 0 && zs->i <= 3 ? (int)zs->i : -1;
}

/* Byte offset of a tensor's first element inside `p`, after checking that it is a
 * contiguous tensor of `dt` whose elements lie inside its zip member. */
static dsckpt_status tensor_loc(const ds_pt *p, const pk_obj *t, dsckpt_dtype dt, uint64_t *off, uint64_t *numel,
                                const char *ctx) {
    if (t && t->kind == PK_OBJECT) { /* built by a callable the interpreter does not evaluate: valid, unknown */
        const pk_obj *ty = t->args && t->args->kind == PK_TUPLE && t->args->n == 4 ? t->args->items[1] : NULL;
        bool typed = ty && ty->kind == PK_GLOBAL && t->name && !strcmp(t->name, "_rebuild_from_type_v2");
        return ds_err(DSCKPT_EUNSUPPORTED, "%s: %s is built by %s.%s%s%s%s%s, not a plain tensor (not supported)", p->path,
                      ctx, t->module ? t->module : "?", t->name ? t->name : "?", typed ? " as a " : "",
                      typed ? ty->module : "", typed ? "." : "", typed ? ty->name : "");
    }
    if (!t || t->kind != PK_TENSOR) return ds_err(DSCKPT_ECORRUPT, "%s: %s is not a tensor", p->path, ctx);
    const pk_tensor *x = &t->tensor;
    if (dt != DSCKPT_DTYPE_COUNT && x->dtype != dt)
        return ds_err(DSCKPT_ECORRUPT, "%s: %s is %s, expected %s", p->path, ctx, dsckpt_dtype_name(x->dtype),
                      dsckpt_dtype_name(dt));
    uint64_t n = 1, expect = 1;
    for (int d = x->ndim - 1; d >= 0; d--) {
        if (x->shape[d] != 1 && x->stride[d] != (int64_t)expect)
            return ds_err(DSCKPT_EUNSUPPORTED, "%s: %s is not contiguous", p->path, ctx);
        expect *= x->shape[d];
        n *= x->shape[d];
    }
    char rel[64];
    snprintf(rel, sizeof rel, "data/%s", x->storage_key);
    const zip_member *m = zip_find_rel(p->zip, rel);
    if (!m) return ds_err(DSCKPT_ECORRUPT, "%s: %s: storage member %s is missing", p->path, ctx, rel);
    size_t es = dsckpt_dtype_size(x->dtype);
    uint64_t end;
    if (ds_add_overflow(x->offset, n, &end) || end * es > m->size || end > x->storage_numel)
        return ds_err(DSCKPT_ECORRUPT, "%s: %s: storage %s holds %llu bytes, shorter than the tensor needs", p->path, ctx,
                      rel, (unsigned long long)m->size);
    *off = m->data_offset + x->offset * es;
    *numel = n;
    return DSCKPT_OK;
}

static dsckpt_status add_frag(ds_open_ctx *x, ds_state s, uint32_t t, uint64_t start, uint64_t numel, size_t file,
                              uint64_t offset, dsckpt_dtype dt) {
    dsckpt_ckpt *c = x->c;
    if (numel == 0) return DSCKPT_OK;
    if (c->nfrags[s] == x->cap_frags[s]) {
        size_t nc = x->cap_frags[s] ? 2 * x->cap_frags[s] : 64;
        ds_frag *p = realloc(c->frags[s], nc * sizeof *p);
        if (!p) return ds_err(DSCKPT_ENOMEM, "out of memory");
        c->frags[s] = p;
        x->cap_frags[s] = nc;
    }
    c->frags[s][c->nfrags[s]++] =
        (ds_frag){.tensor = t, .file = (uint32_t)file, .start = start, .numel = numel, .offset = offset, .dtype = dt};
    return DSCKPT_OK;
}

static dsckpt_status add_tensor(dsckpt_ckpt *c, size_t *cap, const char *name, const pk_obj *shape, dsckpt_dtype dt,
                                bool trainable, bool buffer, int group, uint32_t *index) {
    for (size_t i = 0; i < c->ntensors; i++)
        if (!strcmp(c->tensors[i].name, name))
            return ds_err(DSCKPT_ECORRUPT, "%s: tensor '%s' listed twice", c->dir, name);
    if (c->ntensors == *cap) {
        size_t nc = *cap ? 2 * *cap : 64;
        ds_tensor *p = realloc(c->tensors, nc * sizeof *p);
        if (!p) return ds_err(DSCKPT_ENOMEM, "out of memory");
        c->tensors = p;
        *cap = nc;
    }
    ds_tensor *t = &c->tensors[c->ntensors];
    memset(t, 0, sizeof *t);
    t->name = ds_strdup(name);
    if (!t->name) return DSCKPT_ENOMEM;
    c->ntensors++;
    t->dtype = dt;
    t->trainable = trainable;
    t->buffer = buffer;
    t->group = trainable ? group : -1;
    t->numel = 1;
    if (shape->kind == PK_SIZE || shape->kind == PK_TUPLE) {
        if (shape->n > ST_MAX_DIMS) return ds_err(DSCKPT_EUNSUPPORTED, "%s: tensor '%s' has %zu dimensions", c->dir, name, shape->n);
        t->ndim = (int)shape->n;
        for (size_t d = 0; d < shape->n; d++) {
            int64_t v;
            if (!pk_as_int(shape->items[d], &v) || v < 0 || (uint64_t)v > ST_MAX_OFFSET)
                return ds_err(DSCKPT_ECORRUPT, "%s: tensor '%s': bad dimension", c->dir, name);
            t->shape[d] = (uint64_t)v;
            if (ds_mul_overflow(t->numel, t->shape[d], &t->numel) || t->numel > ST_MAX_OFFSET)
                return ds_err(DSCKPT_ECORRUPT, "%s: tensor '%s': element count overflows", c->dir, name);
        }
    } else if (shape->kind == PK_TENSOR) {
        t->ndim = shape->tensor.ndim;
        for (int d = 0; d < t->ndim; d++) {
            t->shape[d] = shape->tensor.shape[d];
            t->numel *= t->shape[d];
        }
    } else {
        return ds_err(DSCKPT_ECORRUPT, "%s: tensor '%s': shape is not a torch.Size", c->dir, name);
    }
    *index = (uint32_t)(c->ntensors - 1);
    return DSCKPT_OK;
}

static int find_tensor(const dsckpt_ckpt *c, const char *name) {
    for (size_t i = 0; i < c->ntensors; i++)
        if (!strcmp(c->tensors[i].name, name)) return (int)i;
    return -1;
}

/* JSON view of plain pickled data (dicts, lists, numbers, strings); other objects
 * become a descriptive string. Used for ds_config and hyper-parameters. */
static cJSON *to_json(const pk_obj *o, int depth) {
    if (!o || depth > 64) return cJSON_CreateNull();
    switch (o->kind) {
    case PK_NONE: return cJSON_CreateNull();
    case PK_BOOL: return cJSON_CreateBool(o->b);
    case PK_INT: return cJSON_CreateNumber((double)o->i);
    case PK_FLOAT:
        if (isfinite(o->f)) return cJSON_CreateNumber(o->f);
        { /* JSON has no infinity or NaN (e.g. steps_per_print: inf): a tagged object */
            cJSON *t = cJSON_CreateObject();
            cJSON_AddStringToObject(t, DS_JSON_FLOAT_TAG, isnan(o->f) ? "nan" : o->f > 0 ? "inf" : "-inf");
            return t;
        }
    case PK_STR: return cJSON_CreateString(o->s);
    case PK_TUPLE:
    case PK_LIST:
    case PK_SET:
    case PK_SIZE: {
        cJSON *a = cJSON_CreateArray();
        for (size_t i = 0; a && i < o->n; i++) cJSON_AddItemToArray(a, to_json(o->items[i], depth + 1));
        return a;
    }
    case PK_DICT: {
        cJSON *d = cJSON_CreateObject();
        for (size_t i = 0; d && i < o->n; i++) {
            char kbuf[32];
            const char *k = o->keys[i]->kind == PK_STR ? o->keys[i]->s : NULL;
            if (!k && o->keys[i]->kind == PK_INT) {
                snprintf(kbuf, sizeof kbuf, "%lld", (long long)o->keys[i]->i);
                k = kbuf;
            }
            if (k) cJSON_AddItemToObject(d, k, to_json(o->items[i], depth + 1));
        }
        return d;
    }
    case PK_ENUM: {
        char buf[512];
        if (o->member) snprintf(buf, sizeof buf, "%s.%s", o->name ? o->name : "?", o->member);
        else snprintf(buf, sizeof buf, "%s(%lld)", o->name ? o->name : "?", (long long)o->i);
        return cJSON_CreateString(buf);
    }
    case PK_OBJECT: {
        cJSON *d = cJSON_CreateObject();
        char cls[600];
        snprintf(cls, sizeof cls, "%s.%s", o->module ? o->module : "?", o->name ? o->name : "?");
        cJSON_AddStringToObject(d, "__class__", cls);
        if (o->state && o->state->kind == PK_DICT)
            for (size_t i = 0; i < o->state->n; i++)
                if (o->state->keys[i]->kind == PK_STR)
                    cJSON_AddItemToObject(d, o->state->keys[i]->s, to_json(o->state->items[i], depth + 1));
        return d;
    }
    case PK_DTYPE: return cJSON_CreateString(dsckpt_dtype_name(o->dtype));
    case PK_TENSOR: return cJSON_CreateString("<tensor>");
    default: return cJSON_CreateString("<object>");
    }
}

/* Registers a .pt file in c->files. */
static dsckpt_status register_file(dsckpt_ckpt *c, ds_pt *p) {
    ds_file *nf = realloc(c->files, (c->nfiles + 1) * sizeof *nf);
    if (!nf) return ds_err(DSCKPT_ENOMEM, "out of memory");
    c->files = nf;
    ds_file *f = &c->files[c->nfiles];
    memset(f, 0, sizeof *f);
    f->name = ds_strdup(p->name);
    f->path = ds_strdup(p->path);
    if (!f->name || !f->path) {
        free(f->name);
        free(f->path);
        return DSCKPT_ENOMEM;
    }
    f->rank = p->rank;
    f->size = p->size;
    p->file_index = c->nfiles++;
    return DSCKPT_OK;
}

/* Reads a 0-dim or 1-element `step` tensor, or an int. */
static double read_step(const ds_pt *p, const pk_obj *o) {
    int64_t v;
    if (pk_as_int(o, &v)) return (double)v;
    if (o && o->kind == PK_FLOAT) return o->f;
    uint64_t off, n;
    if (o && o->kind == PK_TENSOR && tensor_loc(p, o, DSCKPT_DTYPE_COUNT, &off, &n, "step") == DSCKPT_OK && n == 1) {
        if (o->tensor.dtype == DSCKPT_F32) {
            float f;
            if (ds_pread_full(p->fd, &f, 4, off, p->path) == DSCKPT_OK) return f;
        } else if (o->tensor.dtype == DSCKPT_I64) {
            int64_t i;
            if (ds_pread_full(p->fd, &i, 8, off, p->path) == DSCKPT_OK) return (double)i;
        }
    }
    return -1;
}

/* ds_config.zero_optimization.mics_shard_size of a model-states file (0 if unset). */
static dsckpt_status mics_shard_size(const char *dir, const char *model_file, int64_t *out) {
    ds_pt m;
    *out = 0;
    dsckpt_status st = pt_load(dir, model_file, 0, &m);
    if (st == DSCKPT_OK) {
        int64_t v;
        pk_obj *z = pk_get(pk_get(m.root, "ds_config"), "zero_optimization");
        if (z && z->kind == PK_DICT && pk_as_int(pk_get(z, "mics_shard_size"), &v) && v > 0) *out = v;
    }
    pt_close(&m);
    return st;
}

/* Layouts written by DeepSpeed features this reader does not fold back into one
 * data-parallel checkpoint: refused as unsupported, naming what was found. */
static dsckpt_status check_layout_markers(const ds_pt *m) {
    int64_t v;
    if (pk_as_int(pk_get(m->root, "mp_world_size"), &v) && v > 1)
        return ds_err(DSCKPT_EUNSUPPORTED, "%s: mp_world_size %lld: tensor/model-parallel checkpoints are not supported",
                      m->path, (long long)v);
    pk_obj *dims = pk_get(m->root, "checkpoint_parallel_dimensions");
    for (size_t i = 0; dims && dims->kind == PK_DICT && i < dims->n; i++)
        if (pk_as_str(dims->keys[i]) && pk_as_int(dims->items[i], &v) && v > 1)
            return ds_err(DSCKPT_EUNSUPPORTED,
                          "%s: checkpoint_parallel_dimensions %s = %lld: only data-parallel checkpoints are supported",
                          m->path, pk_as_str(dims->keys[i]), (long long)v);
    static const char *const autoep[] = {"ds_autoep_layers", "autoep_layers"};
    for (int k = 0; k < 2; k++) {
        pk_obj *l = pk_get(m->root, autoep[k]);
        if (!l || l->kind == PK_NONE || ((l->kind == PK_LIST || l->kind == PK_DICT) && l->n == 0)) continue;
        const char *fmt = NULL;
        for (size_t i = 0; l->kind == PK_LIST && i < l->n && !fmt; i++) fmt = pk_as_str(pk_get(l->items[i], "checkpoint_format"));
        return ds_err(DSCKPT_EUNSUPPORTED, "%s: AutoEP expert layers ('%s'%s%s%s): expert-parallel checkpoints are not supported",
                      m->path, autoep[k], fmt ? ", checkpoint_format '" : "", fmt ? fmt : "", fmt ? "'" : "");
    }
    return DSCKPT_OK;
}

/* For every `module` entry, the index of the earliest entry it is a second name
 * of (the same storage, offset, dtype, shape and strides: a tied weight pickled
 * twice), or -1. Sorted, so O(n log n) for any number of entries. */
typedef struct alias_key {
    const pk_tensor *t;
    size_t k;
} alias_key;

static int alias_cmp(const void *pa, const void *pb) {
    const alias_key *a = pa, *b = pb;
    int c = strcmp(a->t->storage_key, b->t->storage_key);
    if (c) return c;
    if (a->t->offset != b->t->offset) return a->t->offset < b->t->offset ? -1 : 1;
    if (a->t->dtype != b->t->dtype) return a->t->dtype < b->t->dtype ? -1 : 1;
    if (a->t->ndim != b->t->ndim) return a->t->ndim < b->t->ndim ? -1 : 1;
    for (int d = 0; d < a->t->ndim; d++) {
        if (a->t->shape[d] != b->t->shape[d]) return a->t->shape[d] < b->t->shape[d] ? -1 : 1;
        if (a->t->stride[d] != b->t->stride[d]) return a->t->stride[d] < b->t->stride[d] ? -1 : 1;
    }
    return a->k < b->k ? -1 : a->k > b->k;
}

static dsckpt_status module_aliases(const pk_obj *module, int **out) {
    size_t n = module && module->kind == PK_DICT ? module->n : 0, m = 0;
    int *al = NULL;
    alias_key *keys = NULL;
    DS_TRY(ds_calloc(n ? n : 1, sizeof *al, &al));
    dsckpt_status st = ds_calloc(n ? n : 1, sizeof *keys, &keys);
    if (st) {
        free(al);
        return st;
    }
    for (size_t k = 0; k < n; k++) {
        al[k] = -1;
        const pk_obj *t = module->items[k];
        if (t->kind != PK_TENSOR || !pk_as_str(module->keys[k]) || !t->tensor.storage_key) continue;
        uint64_t numel = 1;
        for (int d = 0; d < t->tensor.ndim; d++) numel *= t->tensor.shape[d];
        if (numel) keys[m++] = (alias_key){&t->tensor, k};
    }
    qsort(keys, m, sizeof *keys, alias_cmp);
    for (size_t i = 1; i < m; i++) {
        alias_key a = keys[i - 1], b = keys[i];
        b.k = a.k; /* equal up to the index: a second name of the run's first entry */
        if (alias_cmp(&a, &b) == 0) {
            size_t first = al[keys[i - 1].k] >= 0 ? (size_t)al[keys[i - 1].k] : keys[i - 1].k;
            al[keys[i].k] = (int)first;
        }
    }
    free(keys);
    *out = al;
    return DSCKPT_OK;
}

/* Stages 2/3: every frozen parameter of frozen_param_shapes from each model file's
 * frozen_param_fragments (whole at stage 2, one piece per rank at stage 3). */
static dsckpt_status frozen_frags(ds_open_ctx *x, size_t *tcap_p, int stage, size_t W) {
    dsckpt_ckpt *c = x->c;
    pk_obj *fshapes = pk_get(x->model[0].root, "frozen_param_shapes");
    if (stage < 2 || !fshapes || fshapes->kind != PK_DICT) return DSCKPT_OK;
    for (size_t k = 0; k < fshapes->n; k++) {
        const char *name = pk_as_str(fshapes->keys[k]);
        if (!name) continue;
        for (size_t r = 0; r < x->nmodel; r++) {
            pk_obj *frs = pk_get(x->model[r].root, "frozen_param_fragments");
            pk_obj *fr = frs ? pk_get(frs, name) : NULL;
            if (!fr || fr->kind != PK_TENSOR)
                return ds_err(DSCKPT_ECORRUPT, "%s: frozen parameter '%s' has no fragment", x->model[r].path, name);
            int ti = find_tensor(c, name);
            if (ti < 0) {
                uint32_t nt;
                DS_TRY(add_tensor(c, tcap_p, name, fshapes->items[k], fr->tensor.dtype, false, false, -1, &nt));
                ti = (int)nt;
            }
            char ctx[300];
            snprintf(ctx, sizeof ctx, "frozen parameter '%s'", name);
            uint64_t off, n, s0, cnt, tn = c->tensors[ti].numel;
            DS_TRY(tensor_loc(&x->model[r], fr, c->tensors[ti].dtype, &off, &n, ctx));
            if (stage == 3) ds_part_real(ds_part_piece(tn, (int)W), (int)r, tn, &s0, &cnt);
            else s0 = 0, cnt = tn;
            if (n < cnt)
                return ds_err(DSCKPT_ECORRUPT, "%s: %s holds %llu elements, needs %llu", x->model[r].path, ctx,
                              (unsigned long long)n, (unsigned long long)cnt);
            DS_TRY(add_frag(x, DS_ST_W16, (uint32_t)ti, s0, cnt, x->model[r].file_index, off, c->tensors[ti].dtype));
        }
    }
    return DSCKPT_OK;
}

/* From `module`: buffers, and at stage 1 the frozen parameters (stage 1 saves no
 * frozen metadata; they exist only there). Tied second names are skipped
 * (z0_alias: stage 0's, from storage sharing, or NULL). */
static dsckpt_status module_entries(ds_open_ctx *x, size_t *tcap_p, int stage, const int *z0_alias) {
    dsckpt_ckpt *c = x->c;
    const ds_pt *m0 = &x->model[0];
    pk_obj *module = pk_get(m0->root, "module");
    pk_obj *bufnames = pk_get(m0->root, "buffer_names");
    pk_obj *shared = pk_get(m0->root, "shared_params");
    for (size_t k = 0; module && module->kind == PK_DICT && k < module->n; k++) {
        const char *name = pk_as_str(module->keys[k]);
        pk_obj *t = module->items[k];
        if (!name || t->kind != PK_TENSOR || find_tensor(c, name) >= 0) continue;
        bool is_buffer = false;
        for (size_t b = 0; bufnames && bufnames->kind == PK_LIST && b < bufnames->n; b++)
            if (pk_as_str(bufnames->items[b]) && !strcmp(pk_as_str(bufnames->items[b]), name)) is_buffer = true;
        bool is_alias = (shared && shared->kind == PK_DICT && pk_get(shared, name)) ||
                        (z0_alias && z0_alias[k] >= 0);
        if (is_alias) continue;
        if (!is_buffer && stage > 1) continue; /* stage 2/3 frozen come from fragments */
        uint32_t ti;
        DS_TRY(add_tensor(c, tcap_p, name, t, t->tensor.dtype, false, is_buffer, -1, &ti));
        char ctx[300];
        snprintf(ctx, sizeof ctx, "module entry '%s'", name);
        uint64_t off, n;
        DS_TRY(tensor_loc(m0, t, t->tensor.dtype, &off, &n, ctx));
        DS_TRY(add_frag(x, DS_ST_W16, ti, 0, n, m0->file_index, off, t->tensor.dtype));
    }
    return DSCKPT_OK;
}

/* Tied weights: written once under the owner, aliases recorded (from
 * shared_params, or at stage 0, which saves none, from storage sharing:
 * z0_alias). */
static dsckpt_status tied_aliases(ds_open_ctx *x, const int *z0_alias) {
    dsckpt_ckpt *c = x->c;
    pk_obj *module = pk_get(x->model[0].root, "module");
    pk_obj *shared = pk_get(x->model[0].root, "shared_params");
    size_t nshared = shared && shared->kind == PK_DICT ? shared->n : 0;
    size_t nmod = z0_alias && module && module->kind == PK_DICT ? module->n : 0;
    for (size_t k = 0; k < nshared + nmod; k++) {
        const char *alias, *src;
        if (k < nshared) {
            alias = pk_as_str(shared->keys[k]);
            src = pk_as_str(shared->items[k]);
        } else {
            int a = z0_alias[k - nshared];
            if (a < 0) continue;
            alias = pk_as_str(module->keys[k - nshared]);
            src = pk_as_str(module->keys[a]);
        }
        int ti = src ? find_tensor(c, src) : -1;
        if (!alias || ti < 0 || find_tensor(c, alias) >= 0) continue;
        ds_tensor *t = &c->tensors[ti];
        char **al = realloc(t->aliases, (t->naliases + 1) * sizeof *al);
        if (!al) return ds_err(DSCKPT_ENOMEM, "out of memory");
        t->aliases = al;
        if (!(t->aliases[t->naliases] = ds_strdup(alias))) return DSCKPT_ENOMEM;
        t->naliases++;
    }
    return DSCKPT_OK;
}

/* The optimizer side of the carried non-tensor state. */
typedef struct optim_carry {
    const pk_obj *osd;    /* holds loss_scaler */
    const pk_obj *pgs;    /* the param groups (hyper-parameters) */
    const double *steps;  /* each group's step */
    const char *type;     /* the optimizer's name */
} optim_carry;

/* Non-tensor state, in the shape of the native manifest's carried objects:
 * c->manifest. */
static void carried_state(dsckpt_ckpt *c, const ds_pt *m0, const optim_carry *oc) {
    cJSON *root = cJSON_CreateObject(), *state = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "state", state);
    cJSON *opt = cJSON_AddObjectToObject(state, "optimizer");
    cJSON_AddStringToObject(opt, "type", oc->type);
    cJSON *jpg = cJSON_AddArrayToObject(opt, "param_groups");
    for (size_t g = 0; oc->pgs && oc->pgs->kind == PK_LIST && g < oc->pgs->n; g++) {
        cJSON *j = to_json(oc->pgs->items[g], 0);
        cJSON_DeleteItemFromObject(j, "params");
        cJSON_AddNumberToObject(j, "step", oc->steps[g]);
        cJSON_AddItemToArray(jpg, j);
    }
    pk_obj *ls = pk_get(oc->osd, "loss_scaler");
    if (ls) cJSON_AddItemToObject(state, "loss_scaler", to_json(ls, 0));
    pk_obj *sched = pk_get(m0->root, "lr_scheduler");
    if (sched) cJSON_AddItemToObject(state, "scheduler", to_json(sched, 0));
    pk_obj *ver = pk_get(m0->root, "ds_version");
    if (pk_as_str(ver)) cJSON_AddStringToObject(state, "ds_version", pk_as_str(ver));
    cJSON_AddNumberToObject(state, "global_samples", (double)({
                                int64_t v = 0;
                                pk_as_int(pk_get(m0->root, "global_samples"), &v);
                                v;
                            }));
    pk_obj *cfg = pk_get(m0->root, "ds_config");
    cJSON_AddItemToObject(root, "ds_config", cfg && cfg->kind == PK_DICT ? to_json(cfg, 0) : cJSON_CreateObject());
    cJSON_AddItemToObject(root, "metrics", cJSON_CreateObject());
    c->manifest = root;
}

/* Everything after the trainable tensors: frozen parameters, buffers, tied
 * weights, and the carried non-tensor state. x->model (x->nmodel files, by rank)
 * are registered; oc gives the optimizer's carried state. Shared by the
 * DeepSpeed and universal readers. */
static dsckpt_status model_tail(ds_open_ctx *x, size_t *tcap_p, int stage, size_t W, const optim_carry *oc) {
    const int *z0_alias = stage == 0 ? x->z0_alias : NULL; /* stage 0 saves no shared_params */
    DS_TRY(frozen_frags(x, tcap_p, stage, W));
    DS_TRY(module_entries(x, tcap_p, stage, z0_alias));
    DS_TRY(tied_aliases(x, z0_alias));
    carried_state(x->c, &x->model[0], oc);
    return DSCKPT_OK;
}

/* ---- ZeRO-0 (no partitioning) ---- */

/* Whether the 16-bit module tensor `lp` holds the round-to-nearest-even cast of
 * the fp32 master `hp` on their first elements (a cheap tie-break between
 * module entries of one shape; the full data is read, checked, later). */
static bool z0_prefix_matches(const ds_pt *m, const pk_obj *lp, const pk_obj *hp) {
    enum { NPRE = 64 };
    uint64_t loff = 0, ln = 0, hoff = 0, hn = 0; /* set by tensor_loc, used only when both succeed */
    if (lp->tensor.dtype != DSCKPT_BF16 && lp->tensor.dtype != DSCKPT_F16) return false;
    if (tensor_loc(m, lp, DSCKPT_DTYPE_COUNT, &loff, &ln, "module entry") != DSCKPT_OK ||
        tensor_loc(m, hp, DSCKPT_F32, &hoff, &hn, "fp32 master") != DSCKPT_OK) {
        ds_err_clear();
        return false;
    }
    size_t n = (size_t)DS_MIN(DS_MIN(ln, hn), (uint64_t)NPRE);
    float f[NPRE];
    uint16_t h[NPRE], want[NPRE];
    if (ds_pread_full(m->fd, f, n * 4, hoff, m->path) != DSCKPT_OK ||
        ds_pread_full(m->fd, h, n * 2, loff, m->path) != DSCKPT_OK) {
        ds_err_clear();
        return false;
    }
    if (lp->tensor.dtype == DSCKPT_BF16) ds_cast_f32_to_bf16(f, want, n);
    else ds_cast_f32_to_f16(f, want, n);
    return memcmp(h, want, n * 2) == 0;
}

static bool z0_same_shape(const pk_obj *t, const pk_obj *u) {
    if (t->kind != PK_TENSOR || u->kind != PK_TENSOR || t->tensor.ndim != u->tensor.ndim) return false;
    for (int d = 0; d < t->tensor.ndim; d++)
        if (t->tensor.shape[d] != u->tensor.shape[d]) return false;
    return true;
}

/* A ZeRO-0 checkpoint's optimizer entries as zero0_open matches them to the
 * entries of `module`. */
typedef struct z0_match {
    ds_open_ctx *x;
    size_t *tcap;
    const ds_pt *m;         /* mp_rank_00_model_states.pt */
    pk_obj *module;
    pk_obj *opt;            /* the optimizer's state_dict() */
    pk_obj *hp;             /* fp32_groups (FP16_UnfusedOptimizer), or NULL (fp32: torch's own) */
    pk_obj *state, *pgs;    /* torch's state (by running parameter index) and param_groups */
    int *owner;             /* module entry -> 1 + trainable index, 0 unmatched, -1 never a parameter */
    double *steps;          /* each group's step */
    dsckpt_dtype model_dt;  /* of the first matched module entry; DSCKPT_DTYPE_COUNT before */
} z0_match;

/* Finds, and checks the form of, m's `module` and `optimizer`: z->module, z->opt,
 * z->hp, z->state, z->pgs. */
static dsckpt_status z0_optimizer(z0_match *z) {
    dsckpt_status st = DSCKPT_OK;
    const char *what = z->m->path;
    pk_obj *module = need(z->m->root, "module", PK_DICT, what, &st);
    if (!module) return st;
    pk_obj *opt = pk_get(z->m->root, "optimizer");
    if (!opt || opt->kind == PK_NONE)
        return ds_err(DSCKPT_EUNSUPPORTED,
                      "%s: a ZeRO-0 checkpoint without optimizer state (saved with bf16 by DeepSpeed before 0.18.5, "
                      "which dropped it, or by an engine without optimizer): nothing to consolidate from fp32 masters",
                      what);
    if (opt->kind != PK_DICT) return ds_err(DSCKPT_ECORRUPT, "%s: 'optimizer' is not a dict", what);
    if (pk_get(opt, "fp32_groups_flat"))
        return ds_err(DSCKPT_EUNSUPPORTED,
                      "%s: ZeRO-0 state of FP16_Optimizer (fused Adam, fp32_groups_flat) is not supported", what);
    pk_obj *hp = pk_get(opt, "fp32_groups");
    pk_obj *inner = hp ? pk_get(opt, "optimizer_state_dict") : opt;
    pk_obj *state = inner ? pk_get(inner, "state") : NULL;
    pk_obj *pgs = inner ? pk_get(inner, "param_groups") : NULL;
    if (!state || state->kind != PK_DICT || !pgs || pgs->kind != PK_LIST)
        return ds_err(DSCKPT_EUNSUPPORTED, "%s: ZeRO-0 optimizer state of an unknown form (neither FP16_UnfusedOptimizer's "
                                           "nor a torch optimizer's state_dict)", what);
    if (hp && (hp->kind != PK_LIST || hp->n != pgs->n))
        return ds_err(DSCKPT_ECORRUPT, "%s: fp32_groups has %zu groups, param_groups %zu", what,
                      hp->kind == PK_LIST ? hp->n : 0, pgs->n);
    z->module = module;
    z->opt = opt;
    z->hp = hp;
    z->state = state;
    z->pgs = pgs;
    return DSCKPT_OK;
}

/* z->owner, one slot per module entry: -1 for the entries that cannot be a
 * trainable parameter (no name, not a tensor, a tied second name, a buffer),
 * 0 for the others (matched later). Needs x->z0_alias. */
static dsckpt_status z0_owners(z0_match *z) {
    const pk_obj *module = z->module;
    pk_obj *bufnames = pk_get(z->m->root, "buffer_names");
    DS_TRY(ds_calloc(module->n ? module->n : 1, sizeof *z->owner, &z->owner));
    for (size_t j = 0; j < module->n; j++) {
        const char *nm = pk_as_str(module->keys[j]);
        if (!nm || module->items[j]->kind != PK_TENSOR || z->x->z0_alias[j] >= 0) z->owner[j] = -1;
    }
    for (size_t b = 0; bufnames && bufnames->kind == PK_LIST && b < bufnames->n; b++) {
        pk_obj *bi = pk_as_str(bufnames->items[b]) ? pk_get(module, pk_as_str(bufnames->items[b])) : NULL;
        for (size_t j = 0; bi && j < module->n; j++)
            if (module->items[j] == bi) z->owner[j] = -1;
    }
    return DSCKPT_OK;
}

/* The module entry an optimizer entry of shape_of's shape belongs to: among the
 * unmatched, non-buffer, non-alias module tensors of that shape, the first at or
 * after `prev` (wrapping), preferring one whose 16-bit weights are the cast of
 * `master` (NULL: fp32, no preference); -1 if there is none. */
static long z0_pick(const z0_match *z, const pk_obj *shape_of, const pk_obj *master, size_t prev) {
    const pk_obj *module = z->module;
    long pick = -1, first = -1;
    for (size_t s = 0; s < module->n && pick < 0; s++) {
        size_t j = (prev + s) % module->n;
        if (z->owner[j] || !z0_same_shape(module->items[j], shape_of)) continue;
        if (first < 0) first = (long)j;
        if (!master || z0_prefix_matches(z->m, module->items[j], master)) pick = (long)j;
    }
    return pick < 0 ? first : pick;
}

/* Trainable tensor ti's fp32 master, exp_avg and exp_avg_sq (src, in that
 * order): each one whole fragment of the tensor's element count. */
static dsckpt_status z0_states(z0_match *z, uint32_t ti, const pk_obj *const src[3]) {
    const ds_tensor *t = &z->x->c->tensors[ti];
    uint64_t n = t->numel, off[3], cnt[3];
    static const char *const kind[3] = {"fp32 master", "exp_avg", "exp_avg_sq"};
    static const ds_state sts[3] = {DS_ST_FP32, DS_ST_EXP_AVG, DS_ST_EXP_AVG_SQ};
    for (int q = 0; q < 3; q++) {
        char ctx[400];
        snprintf(ctx, sizeof ctx, "%s of '%s'", kind[q], t->name);
        DS_TRY(tensor_loc(z->m, src[q], DSCKPT_F32, &off[q], &cnt[q], ctx));
        if (cnt[q] != n)
            return ds_err(DSCKPT_ECORRUPT, "%s: %s holds %llu elements, the parameter %llu", z->m->path, ctx,
                          (unsigned long long)cnt[q], (unsigned long long)n);
        DS_TRY(add_frag(z->x, sts[q], ti, 0, n, z->m->file_index, off[q], DSCKPT_F32));
    }
    return DSCKPT_OK;
}

/* Param group g: each optimizer entry matched, in module order, to a module entry
 * of its shape, registered as a trainable tensor with its fp32 master and Adam
 * moments; z->steps[g] the group's step. */
static dsckpt_status z0_group(z0_match *z, size_t g) {
    const char *what = z->m->path;
    pk_obj *ids = pk_get(z->pgs->items[g], "params");
    pk_obj *hpg = z->hp ? z->hp->items[g] : NULL;
    if (!ids || ids->kind != PK_LIST || (hpg && (hpg->kind != PK_LIST || hpg->n != ids->n)))
        return ds_err(DSCKPT_ECORRUPT, "%s: param group %zu: 'params' missing or not matching fp32_groups[%zu]", what, g, g);
    z->steps[g] = -1;
    size_t prev = 0; /* module position after the group's previous match */
    for (size_t k = 0; k < ids->n; k++) {
        int64_t id;
        pk_obj *pst = pk_as_int(ids->items[k], &id) ? pk_get_int_key(z->state, id) : NULL;
        pk_obj *ea = pst ? pk_get(pst, "exp_avg") : NULL, *eas = pst ? pk_get(pst, "exp_avg_sq") : NULL;
        if (!pst || !ea || !eas)
            return ds_err(DSCKPT_EUNSUPPORTED, "%s: param group %zu entry %zu has no exp_avg/exp_avg_sq (an optimizer "
                                               "other than Adam, or a step never taken?)", what, g, k);
        if (z->steps[g] < 0) z->steps[g] = read_step(z->m, pk_get(pst, "step"));
        const pk_obj *master = hpg ? hpg->items[k] : NULL;
        const pk_obj *shape_of = master ? master : ea;
        long pick = z0_pick(z, shape_of, master, prev);
        if (pick < 0)
            return ds_err(DSCKPT_ECORRUPT, "%s: param group %zu entry %zu matches no parameter of its shape in 'module'",
                          what, g, k);
        const pk_obj *lp = z->module->items[pick];
        if (!master) master = lp; /* fp32: the module weights are the masters */
        if (z->model_dt == DSCKPT_DTYPE_COUNT) z->model_dt = lp->tensor.dtype;
        uint32_t ti;
        DS_TRY(add_tensor(z->x->c, z->tcap, pk_as_str(z->module->keys[pick]), lp, lp->tensor.dtype, true, false, (int)g,
                          &ti));
        z->owner[pick] = (int)ti + 1;
        prev = (size_t)pick + 1;
        const pk_obj *const src[3] = {master, ea, eas};
        DS_TRY(z0_states(z, ti, src));
    }
    return DSCKPT_OK;
}

/* A ZeRO-0 checkpoint: everything is in mp_rank_00_model_states.pt. `module`
 * holds the working weights, `optimizer` the optimizer's state_dict():
 * - bf16/fp16: FP16_UnfusedOptimizer's (fp32_groups[g][k], the fp32 master of
 *   the k-th parameter of group g; optimizer_state_dict: torch's, keyed by the
 *   running parameter index);
 * - fp32: torch's own (the module weights are the masters).
 * The file names no optimizer entry (param_shapes and shared_params are None), so
 * each is matched to the module entry of its shape, in module order within a
 * group; with fp32 masters the candidate whose 16-bit weights are their cast is
 * preferred. Module entries matched by no optimizer entry are frozen (or
 * buffers); a second name of one storage is a tied alias. */
static dsckpt_status zero0_open(dsckpt_ckpt *c, ds_open_ctx *x, size_t *tcap) {
    ds_pt *m = &x->model[0];
    z0_match z = {.x = x, .tcap = tcap, .m = m, .model_dt = DSCKPT_DTYPE_COUNT};
    DS_TRY(z0_optimizer(&z));
    int64_t W = 1;
    if (!pk_as_int(pk_get(m->root, "dp_world_size"), &W) || W < 1 || W > 1000000) W = 1;
    c->stage = 0;
    c->world_size = (int)W;
    int64_t gs = 0;
    pk_as_int(pk_get(m->root, "global_steps"), &gs);
    c->step = gs;
    c->ngroups = (int)z.pgs->n;
    DS_TRY(module_aliases(z.module, &x->z0_alias));
    dsckpt_status st = z0_owners(&z);
    if (st) goto done;
    DS_TRYGOTO(ds_calloc(z.pgs->n ? z.pgs->n : 1, sizeof *z.steps, &z.steps), done);
    for (size_t g = 0; g < z.pgs->n; g++) DS_TRYGOTO(z0_group(&z, g), done);
    if (z.model_dt == DSCKPT_DTYPE_COUNT) {
        st = ds_err(DSCKPT_EUNSUPPORTED, "%s: ZeRO-0 checkpoint with no trainable parameters", m->path);
        goto done;
    }
    c->train_dtype = ds_strdup(z.model_dt == DSCKPT_BF16 ? "bf16" : z.model_dt == DSCKPT_F16 ? "fp16" : "fp32");
    DS_TRYGOTO(model_tail(x, tcap, 0, (size_t)W,
                          &(optim_carry){z.opt, z.pgs, z.steps, z.hp ? "FP16_UnfusedOptimizer" : "torch.optim"}),
               done);
done:
    free(z.owner);
    free(z.steps);
    return st;
}

/* The model's dtype: that of the 16-bit (or fp32) weights in `module`. */
static dsckpt_dtype module_dtype(const pk_obj *module) {
    for (size_t i = 0; module && module->kind == PK_DICT && i < module->n; i++)
        if (module->items[i]->kind == PK_TENSOR) return module->items[i]->tensor.dtype;
    return DSCKPT_F32;
}

/* Stage, world size and optimizer kind, from rank 0's optimizer file. *W comes in
 * as the number of optimizer files found; under MiCS it becomes the shard size
 * (the partition count), and *nfiles keeps the number of rank files. */
static dsckpt_status read_topology(ds_open_ctx *x, const scan *sc, pk_obj **osd_out, int *stage_out, bool *bf16_out,
                                   size_t *W, size_t *nfiles) {
    dsckpt_ckpt *c = x->c;
    dsckpt_status st = DSCKPT_OK;
    const char *what = x->optim[0].path;
    pk_obj *osd = need(x->optim[0].root, "optimizer_state_dict", PK_DICT, what, &st);
    if (!osd) return st;
    pk_obj *zs = pk_get(osd, "zero_stage");
    int stage = zs ? stage_of(zs) : 1; /* BF16_Optimizer has no zero_stage: stage 1 */
    bool bf16_optimizer = zs == NULL;
    if (stage < 1) return ds_err(DSCKPT_EUNSUPPORTED, "%s: unknown zero_stage", what);
    if (bf16_optimizer && !pk_get(osd, "single_partition_of_fp32_groups"))
        return ds_err(DSCKPT_ECORRUPT, "%s: neither zero_stage nor single_partition_of_fp32_groups: not a ZeRO optimizer file", what);
    int64_t pc = 0;
    pk_obj *pco = pk_get(osd, "partition_count");
    if (pco && pco->kind == PK_LIST) {
        for (size_t i = 0; i < pco->n; i++) {
            int64_t v;
            if (pk_as_int(pco->items[i], &v) && v > pc) pc = v;
        }
    } else if (!pk_as_int(pco, &pc)) {
        return ds_err(DSCKPT_ECORRUPT, "%s: partition_count missing", what);
    }
    *nfiles = *W; /* rank files present; W becomes the partition count under MiCS */
    if (pc != (int64_t)*W) {
        int64_t mics = 0;
        if (stage == 3 && sc->nmod3 == *W && sc->model3[0]) DS_TRY(mics_shard_size(c->dir, sc->model3[0], &mics));
        if (!(mics > 0 && pc == mics && *W % (size_t)mics == 0))
            return ds_err(DSCKPT_ECORRUPT, "%s: partition_count says %lld ranks but %zu optimizer files were found",
                          c->dir, (long long)pc, *W);
        /* MiCS: ranks [0, S) hold one complete ZeRO-3 partitioning over S ranks;
         * the other shard groups hold replicas of it. */
        *W = (size_t)mics;
    }
    c->stage = stage;
    c->world_size = (int)*W;
    *osd_out = osd;
    *stage_out = stage;
    *bf16_out = bf16_optimizer;
    return DSCKPT_OK;
}

/* The model-states files: one per rank at stage 3, mp_rank_00 otherwise. */
static dsckpt_status open_model_files(ds_open_ctx *x, const scan *sc, int stage, size_t W, size_t nfiles) {
    dsckpt_ckpt *c = x->c;
    if (stage == 3) {
        if (sc->nmod3 != nfiles)
            return ds_err(DSCKPT_ECORRUPT, "%s: stage 3 needs %zu zero_pp_rank_*_model_states.pt files, found %zu",
                          c->dir, nfiles, sc->nmod3);
    } else if (!sc->model_mp) {
        return ds_err(DSCKPT_ECORRUPT, "%s: mp_rank_00_model_states.pt is missing", c->dir);
    }
    size_t nmodel = stage == 3 ? W : 1;
    DS_TRY(ds_calloc(nmodel, sizeof *x->model, &x->model));
    x->nmodel = nmodel; /* after the allocation: the caller closes x->model[0 .. nmodel) */
    for (size_t r = 0; r < x->nmodel; r++) x->model[r].fd = -1;
    for (size_t r = 0; r < x->nmodel; r++) {
        if (stage == 3 && !sc->model3[r])
            return ds_err(DSCKPT_ECORRUPT, "%s: model-states file for rank %zu is missing", c->dir, r);
        DS_TRY(pt_load(c->dir, stage == 3 ? sc->model3[r] : "mp_rank_00_model_states.pt", (int)r, &x->model[r]));
    }
    return DSCKPT_OK;
}

/* The trainable tensors of param_shapes, group by group (sub-group at stage 3),
 * in the model's dtype. */
static dsckpt_status add_trainable(dsckpt_ckpt *c, size_t *tcap, const pk_obj *shapes, dsckpt_dtype model_dt,
                                   const char *path) {
    for (size_t g = 0; g < shapes->n; g++) {
        pk_obj *sg = shapes->items[g];
        if (sg->kind != PK_DICT) return ds_err(DSCKPT_ECORRUPT, "%s: param_shapes[%zu] is not a dict", path, g);
        for (size_t k = 0; k < sg->n; k++) {
            uint32_t ti;
            if (sg->keys[k]->kind != PK_STR)
                return ds_err(DSCKPT_ECORRUPT, "%s: param_shapes[%zu] has a non-string name", path, g);
            DS_TRY(add_tensor(c, tcap, sg->keys[k]->s, sg->items[k], model_dt, true, false, (int)g, &ti));
        }
    }
    return DSCKPT_OK;
}

/* Where one rank's partitions of one group are: fp32, exp_avg, exp_avg_sq (byte
 * offset and elements in file p). */
typedef struct group_loc {
    const ds_pt *p;
    uint64_t off[3], n[3];
} group_loc;

/* The three fragments of tensor ti, elements [s0, s0+cnt), at element `pos` of
 * the rank's partitions. */
static dsckpt_status add_frags3(ds_open_ctx *x, const group_loc *L, int ti, uint64_t s0, uint64_t cnt, uint64_t pos) {
    static const ds_state sts[3] = {DS_ST_FP32, DS_ST_EXP_AVG, DS_ST_EXP_AVG_SQ};
    for (int k = 0; k < 3; k++)
        DS_TRY(add_frag(x, sts[k], (uint32_t)ti, s0, cnt, L->p->file_index, L->off[k] + pos * 4, DSCKPT_F32));
    return DSCKPT_OK;
}

/* Stage 3: rank r's piece of every tensor of group g, in order. */
static dsckpt_status stage3_frags(ds_open_ctx *x, const group_loc *L, size_t r, size_t W, size_t g, const pk_obj *sg) {
    dsckpt_ckpt *c = x->c;
    uint64_t pos = 0;
    for (size_t k = 0; k < sg->n; k++) {
        int ti = find_tensor(c, sg->keys[k]->s);
        uint64_t n = c->tensors[ti].numel, q = ds_part_piece(n, (int)W), s0, cnt;
        ds_part_real(q, (int)r, n, &s0, &cnt);
        if (pos + q > L->n[0] || pos + q > L->n[1] || pos + q > L->n[2])
            return ds_err(DSCKPT_ECORRUPT, "%s: group %zu partition holds %llu elements, fewer than its tensors need",
                          L->p->path, g, (unsigned long long)L->n[0]);
        DS_TRY(add_frags3(x, L, ti, s0, cnt, pos));
        pos += q;
    }
    return DSCKPT_OK;
}

/* Stages 1/2: the rank's `real` elements start at element `start` of group g's
 * flat buffer (DeepSpeed strips the padding); param_alignment_paddings[g][k]
 * (gpad, may be NULL) elements of padding follow tensor k (DeepSpeed >= 0.16). */
static dsckpt_status flat_frags(ds_open_ctx *x, const group_loc *L, size_t g, const pk_obj *sg, const pk_obj *gpad,
                                uint64_t start, uint64_t real) {
    dsckpt_ckpt *c = x->c;
    const char *path = L->p->path;
    if (gpad && (gpad->kind != PK_LIST || gpad->n != sg->n))
        return ds_err(DSCKPT_ECORRUPT, "%s: param_alignment_paddings[%zu] has %zu entries for %zu parameters", path, g,
                      gpad->kind == PK_LIST ? gpad->n : 0, sg->n);
    uint64_t tpos = 0; /* flat position of each tensor */
    for (size_t k = 0; k < sg->n; k++) {
        int ti = find_tensor(c, sg->keys[k]->s);
        uint64_t n = c->tensors[ti].numel;
        int64_t tpad = 0;
        if (gpad && (!pk_as_int(gpad->items[k], &tpad) || tpad < 0 || tpad > (1 << 20)))
            return ds_err(DSCKPT_ECORRUPT, "%s: param_alignment_paddings[%zu][%zu] is not a plausible padding", path, g, k);
        uint64_t a = DS_MAX(tpos, start), b = DS_MIN(tpos + n, start + real);
        if (a < b) DS_TRY(add_frags3(x, L, ti, a - tpos, b - a, a - start));
        tpos += n + (uint64_t)tpad;
    }
    if (start + real > tpos)
        return ds_err(DSCKPT_ECORRUPT, "%s: group %zu: ranks hold %llu real elements but param_shapes has only %llu",
                      path, g, (unsigned long long)(start + real), (unsigned long long)tpos);
    return DSCKPT_OK;
}

/* The fp32 master weights and Adam moments in rank r's optimizer file. Stages
 * 1/2: group_start[g] is where the next rank's real elements begin in group g's
 * flat buffer. */
static dsckpt_status rank_frags(ds_open_ctx *x, size_t r, size_t W, int stage, bool bf16_optimizer,
                                const pk_obj *shapes, uint64_t *group_start) {
    ds_pt *p = &x->optim[r];
    pk_obj *od = pk_get(p->root, "optimizer_state_dict");
    pk_obj *fp32 = stage == 3 ? pk_get(od, "fp32_flat_groups") : pk_get(od, "single_partition_of_fp32_groups");
    pk_obj *inner = stage == 3 ? pk_get(od, "optimizer_state_dict") : pk_get(od, "base_optimizer_state");
    pk_obj *state = inner ? pk_get(inner, "state") : NULL;
    pk_obj *pads = pk_get(od, "group_paddings");
    pk_obj *palign = stage == 3 ? NULL : pk_get(od, "param_alignment_paddings");
    if (palign && palign->kind == PK_NONE) palign = NULL;
    if (palign && (palign->kind != PK_LIST || palign->n != shapes->n))
        return ds_err(DSCKPT_ECORRUPT, "%s: param_alignment_paddings is not a list of %zu groups", p->path, shapes->n);
    if (!fp32 || fp32->kind != PK_LIST || fp32->n != shapes->n)
        return ds_err(DSCKPT_ECORRUPT, "%s: %zu fp32 partitions for %zu parameter groups", p->path,
                      fp32 && fp32->kind == PK_LIST ? fp32->n : 0, shapes->n);
    if (!state || state->kind != PK_DICT)
        return ds_err(DSCKPT_EUNSUPPORTED, "%s: optimizer state is not the rigid per-group form (elastic checkpoints are not supported)",
                      p->path);
    for (size_t g = 0; g < shapes->n; g++) {
        char ctx[64];
        group_loc L = {.p = p};
        snprintf(ctx, sizeof ctx, "fp32 partition of group %zu", g);
        DS_TRY(tensor_loc(p, fp32->items[g], DSCKPT_F32, &L.off[0], &L.n[0], ctx));
        pk_obj *gst = pk_get_int_key(state, (int64_t)g);
        static const char *mk[2] = {"exp_avg", "exp_avg_sq"};
        for (int k = 0; k < 2; k++) {
            snprintf(ctx, sizeof ctx, "%s of group %zu", mk[k], g);
            pk_obj *t = gst ? pk_get(gst, mk[k]) : NULL;
            if (!t)
                return ds_err(DSCKPT_EUNSUPPORTED, "%s: no %s for group %zu (an optimizer other than Adam?)", p->path, mk[k], g);
            DS_TRY(tensor_loc(p, t, DSCKPT_F32, &L.off[k + 1], &L.n[k + 1], ctx));
        }
        pk_obj *sg = shapes->items[g];
        if (stage == 3) {
            DS_TRY(stage3_frags(x, &L, r, W, g, sg));
            continue;
        }
        /* Real elements of this rank: all of a stripped partition, or the
         * partition less its recorded padding (BF16_Optimizer). */
        uint64_t real = L.n[0];
        int64_t pad = 0;
        if (bf16_optimizer && pads && pads->kind == PK_LIST && g < pads->n && pk_as_int(pads->items[g], &pad)) {
            if (pad < 0 || (uint64_t)pad > L.n[0])
                return ds_err(DSCKPT_ECORRUPT, "%s: group_paddings[%zu] = %lld is out of range", p->path, g, (long long)pad);
            real = L.n[0] - (uint64_t)pad;
        }
        if (L.n[1] < real || L.n[2] < real)
            return ds_err(DSCKPT_ECORRUPT, "%s: Adam moments of group %zu are shorter than its fp32 partition", p->path, g);
        /* Rank r's real elements follow those of ranks 0..r-1 in the flat group. */
        uint64_t start = group_start[g];
        group_start[g] += real;
        DS_TRY(flat_frags(x, &L, g, sg, palign ? palign->items[g] : NULL, start, real));
    }
    return DSCKPT_OK;
}

/* ZeRO-0: the one model-states file, registered, read by zero0_open. */
static dsckpt_status open_zero0(ds_open_ctx *x, size_t *tcap) {
    dsckpt_ckpt *c = x->c;
    DS_TRY(ds_calloc(1, sizeof *x->model, &x->model));
    x->model[0].fd = -1;
    x->nmodel = 1;
    DS_TRY(pt_load(c->dir, "mp_rank_00_model_states.pt", 0, &x->model[0]));
    DS_TRY(register_file(c, &x->model[0]));
    DS_TRY(check_layout_markers(&x->model[0]));
    return zero0_open(c, x, tcap);
}

/* Stages 1-3: the optimizer files (one per rank) and the model-states files,
 * registered; the trainable tensors of param_shapes with their fragments in
 * every rank's partitions; each param group's step (rank 0's); then model_tail. */
static dsckpt_status open_partitioned(ds_open_ctx *x, const scan *sc, size_t *tcap) {
    dsckpt_ckpt *c = x->c;
    dsckpt_status st = DSCKPT_OK;
    uint64_t *group_start = NULL;
    double *steps = NULL;
    pk_obj *osd = NULL;
    int stage = 0;
    bool bf16_optimizer = false;
    size_t W = sc->nopt, nfiles = 0;
    DS_TRY(ds_calloc(W, sizeof *x->optim, &x->optim));
    for (size_t r = 0; r < W; r++) x->optim[r].fd = -1;
    x->noptim = W;
    for (size_t r = 0; r < W; r++) DS_TRY(pt_load(c->dir, sc->optim[r], (int)r, &x->optim[r]));
    DS_TRY(read_topology(x, sc, &osd, &stage, &bf16_optimizer, &W, &nfiles));
    DS_TRY(open_model_files(x, sc, stage, W, nfiles));
    for (size_t r = 0; r < W; r++) DS_TRY(register_file(c, &x->optim[r]));
    for (size_t r = 0; r < x->nmodel; r++) DS_TRY(register_file(c, &x->model[r]));

    const ds_pt *m0 = &x->model[0];
    DS_TRY(check_layout_markers(m0));
    pk_obj *module = pk_get(m0->root, "module");
    pk_obj *shapes = need(m0->root, "param_shapes", PK_LIST, m0->path, &st);
    if (!shapes) return st;
    int64_t gs = 0;
    pk_as_int(pk_get(m0->root, "global_steps"), &gs);
    c->step = gs;
    c->ngroups = (int)shapes->n;
    dsckpt_dtype model_dt = module_dtype(module);
    c->train_dtype = ds_strdup(model_dt == DSCKPT_BF16 ? "bf16" : model_dt == DSCKPT_F16 ? "fp16" : "fp32");
    DS_TRY(add_trainable(c, tcap, shapes, model_dt, m0->path));
    DS_TRYGOTO(ds_calloc(shapes->n, sizeof *group_start, &group_start), done);
    for (size_t r = 0; r < W; r++) DS_TRYGOTO(rank_frags(x, r, W, stage, bf16_optimizer, shapes, group_start), done);

    pk_obj *inner = stage == 3 ? pk_get(osd, "optimizer_state_dict") : pk_get(osd, "base_optimizer_state");
    pk_obj *pgs = inner ? pk_get(inner, "param_groups") : NULL;
    size_t ng = pgs && pgs->kind == PK_LIST ? pgs->n : 0;
    DS_TRYGOTO(ds_calloc(ng ? ng : 1, sizeof *steps, &steps), done);
    for (size_t g = 0; g < ng; g++) {
        pk_obj *gst = pk_get_int_key(pk_get(inner, "state"), (int64_t)g);
        steps[g] = read_step(&x->optim[0], gst ? pk_get(gst, "step") : NULL);
    }
    const char *type = stage == 3       ? "DeepSpeedZeroOptimizer_Stage3"
                       : bf16_optimizer ? "BF16_Optimizer"
                                        : "DeepSpeedZeroOptimizer";
    DS_TRYGOTO(model_tail(x, tcap, stage, W, &(optim_carry){osd, pgs, steps, type}), done);
done:
    free(group_start);
    free(steps);
    return st;
}

dsckpt_status ds_deepspeed_open(dsckpt_ckpt *c) {
    scan sc;
    ds_open_ctx x = {.c = c};
    size_t tcap = 0;
    dsckpt_status st = scan_dir(c->dir, &sc, false);
    if (st) goto done;
    if (sc.nopt == 0 && sc.model_mp && sc.nmod3 == 0) /* ZeRO-0: one model-states file */
        st = open_zero0(&x, &tcap);
    else if (sc.nopt == 0)
        st = ds_err(DSCKPT_EUNSUPPORTED, "%s: no *_optim_states.pt files%s: not a ZeRO checkpoint this tool reads", c->dir,
                    sc.model_mp ? "" : " and no mp_rank_00_model_states.pt");
    else
        st = open_partitioned(&x, &sc, &tcap);
    if (st) goto done;
    c->format = ds_strdup("deepspeed");
    if (!c->tag) {
        c->tag = ds_basename(c->dir);
        if (!c->tag) st = DSCKPT_ENOMEM;
    }
    if (!c->format || !c->train_dtype) st = ds_err(DSCKPT_ENOMEM, "out of memory");
done:
    for (size_t r = 0; r < x.noptim; r++) pt_close(&x.optim[r]);
    for (size_t r = 0; r < x.nmodel; r++) pt_close(&x.model[r]);
    free(x.optim);
    free(x.model);
    free(x.z0_alias);
    scan_free(&sc);
    return st;
}

/* ---- DeepSpeed universal checkpoints (ds_to_universal's layout) ---- */

bool ds_is_universal_dir(const char *dir) {
    char *z = ds_join(dir, "zero");
    char *o = z ? ds_join(z, "optimizer_state.pt") : NULL;
    bool ok = o && ds_is_dir(z) && ds_exists(o);
    free(z);
    free(o);
    return ok;
}

/* The zip members of p against their CRC-32: all of them, or (storages_too
 * false) all but the tensor storages (data/...), which every command's reads
 * check anyway (readcheck.c), so large states are not read twice. */
static dsckpt_status pt_check_crcs(const ds_pt *p, bool storages_too) {
    size_t pl = p->zip->prefix ? strlen(p->zip->prefix) : 0;
    for (size_t i = 0; i < p->zip->n; i++) {
        const char *rel = p->zip->members[i].name + (pl && !strncmp(p->zip->members[i].name, p->zip->prefix, pl) ? pl + 1 : 0);
        if (!storages_too && !strncmp(rel, "data/", 5)) continue;
        DS_TRY(zip_check_crc(p->fd, p->zip, i, p->path));
    }
    return DSCKPT_OK;
}

/* zero/<name>/<file>: loaded, its members CRC-checked (storages of the large
 * states are left to the checked reads); a missing file is damage. */
static dsckpt_status uni_load(const char *dir, const char *name, const char *file, ds_pt *p) {
    if (!ds_safe_name(name))
        return ds_err(DSCKPT_ECORRUPT, "%s: parameter name '%s' is not a plain directory name", dir, name);
    char rel[600];
    if ((size_t)snprintf(rel, sizeof rel, "zero/%s/%s", name, file) >= sizeof rel)
        return ds_err(DSCKPT_ECORRUPT, "%s: parameter name '%s' is too long", dir, name);
    dsckpt_status st = pt_load_ex(dir, rel, 0, p, false);
    if (st == DSCKPT_ENOENT) st = ds_err(DSCKPT_ECORRUPT, "%s/%s: missing (every trainable parameter needs it)", dir, rel);
    if (st == DSCKPT_OK) st = pt_check_crcs(p, !strcmp(file, "step.pt"));
    return st;
}

/* Entries of zero/: optimizer_state.pt and one directory per parameter, each a
 * plain name; anything else (a FIFO, a link, a file) is refused. */
static dsckpt_status uni_check_listing(const char *dir) {
    char *z = ds_join(dir, "zero");
    if (!z) return DSCKPT_ENOMEM;
    DIR *d = opendir(z);
    if (!d) {
        dsckpt_status st = ds_err_errno(errno, "%s: cannot list directory", z);
        free(z);
        return st;
    }
    dsckpt_status st = DSCKPT_OK;
    struct dirent *e;
    while (st == DSCKPT_OK && (e = readdir(d))) {
        const char *n = e->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..") || !strcmp(n, "optimizer_state.pt")) continue;
        if (!ds_safe_name(n)) {
            st = ds_err(DSCKPT_ECORRUPT, "%s: entry '%s' is not a plain name", z, n);
            break;
        }
        char *ep = ds_join(z, n);
        struct stat sb;
        if (!ep) st = DSCKPT_ENOMEM;
        else if (lstat(ep, &sb) != 0) st = ds_err_errno(errno, "%s: cannot stat", ep);
        else if (!S_ISDIR(sb.st_mode))
            st = ds_err(DSCKPT_ECORRUPT, "%s: not a parameter directory (a universal checkpoint has one directory per parameter)",
                        ep);
        free(ep);
    }
    closedir(d);
    free(z);
    return st;
}

/* A universal checkpoint's model-states files (one per rank at stage 3, *W gets
 * their number; mp_rank_00 otherwise), opened and registered. */
static dsckpt_status uni_open_models(ds_open_ctx *x, const scan *sc, int stage, size_t *W) {
    dsckpt_ckpt *c = x->c;
    if (stage == 3) {
        *W = sc->nmod3;
        for (size_t r = 0; r < *W; r++)
            if (!sc->model3[r]) return ds_err(DSCKPT_ECORRUPT, "%s: model-states file for rank %zu is missing", c->dir, r);
        if (!*W)
            return ds_err(DSCKPT_ECORRUPT, "%s: stage 3 universal checkpoint without zero_pp_rank_*_model_states.pt", c->dir);
    } else if (!sc->model_mp) {
        return ds_err(DSCKPT_ECORRUPT, "%s: mp_rank_00_model_states.pt is missing", c->dir);
    }
    DS_TRY(ds_calloc(*W, sizeof *x->model, &x->model));
    x->nmodel = *W; /* after the allocation: the caller closes x->model[0 .. nmodel) */
    for (size_t r = 0; r < *W; r++) x->model[r].fd = -1;
    for (size_t r = 0; r < *W; r++) {
        DS_TRY(pt_load(c->dir, stage == 3 ? sc->model3[r] : "mp_rank_00_model_states.pt", (int)r, &x->model[r]));
        DS_TRY(register_file(c, &x->model[r]));
    }
    return DSCKPT_OK;
}

/* Tensor ti (`name`)'s fp32, exp_avg and exp_avg_sq: zero/<name>/<state>.pt, each
 * one fragment of the whole tensor. *tp is the file being read (closed after each,
 * left open on failure for the caller to close). */
static dsckpt_status uni_tensor_states(ds_open_ctx *x, ds_pt *tp, const char *name, uint32_t ti) {
    static const char *const files[3] = {"fp32.pt", "exp_avg.pt", "exp_avg_sq.pt"};
    dsckpt_ckpt *c = x->c;
    const ds_tensor *T = &c->tensors[ti];
    for (int s = 0; s < 3; s++) {
        DS_TRY(uni_load(c->dir, name, files[s], tp));
        pk_obj *t = tp->root;
        bool dict_form = t && t->kind == PK_DICT;
        if (dict_form) t = pk_get(t, "param");
        char ctx[64];
        snprintf(ctx, sizeof ctx, "%s 'param'", ds_state_names[s]);
        uint64_t off, n;
        DS_TRY(tensor_loc(tp, t, DSCKPT_F32, &off, &n, ctx));
        bool same = n == T->numel;
        /* The dict form (stages 1/2) keeps the parameter's shape; stage 3's
         * raw tensors are flat. */
        if (same && dict_form && t->tensor.ndim != T->ndim) same = !(T->ndim == 0 && t->tensor.ndim == 1);
        for (int d2 = 0; same && dict_form && d2 < T->ndim && d2 < t->tensor.ndim; d2++)
            same = t->tensor.shape[d2] == T->shape[d2];
        if (!same)
            return ds_err(DSCKPT_ECORRUPT, "%s: holds %llu elements%s, but param_shapes gives '%s' %llu elements",
                          tp->path, (unsigned long long)n, dict_form ? " (or another shape)" : "", name,
                          (unsigned long long)T->numel);
        DS_TRY(register_file(c, tp));
        DS_TRY(add_frag(x, (ds_state)s, ti, 0, n, tp->file_index, off, DSCKPT_F32));
        pt_close(tp);
    }
    return DSCKPT_OK;
}

/* A group's optimizer step: zero/<name>/step.pt of one of its tensors, when there. */
static dsckpt_status uni_group_step(const dsckpt_ckpt *c, ds_pt *tp, const char *name, double *step) {
    char rel[600];
    snprintf(rel, sizeof rel, "zero/%s/step.pt", name);
    char *sp = ds_join(c->dir, rel);
    if (!sp) return DSCKPT_ENOMEM;
    bool have = ds_exists(sp);
    free(sp);
    if (!have) return DSCKPT_OK;
    DS_TRY(uni_load(c->dir, name, "step.pt", tp));
    *step = read_step(tp, tp->root);
    pt_close(tp);
    return DSCKPT_OK;
}

/* The trainable tensors of param_shapes, group by group, with their states and
 * (steps[g] for g < ngroups, -1 until found) each group's step. */
static dsckpt_status uni_trainable(ds_open_ctx *x, ds_pt *tp, size_t *tcap, const pk_obj *shapes, dsckpt_dtype model_dt,
                                   size_t ngroups, double *steps) {
    dsckpt_ckpt *c = x->c;
    const char *path = x->model[0].path;
    for (size_t g = 0; g < shapes->n; g++) {
        pk_obj *sg = shapes->items[g];
        if (sg->kind != PK_DICT) return ds_err(DSCKPT_ECORRUPT, "%s: param_shapes[%zu] is not a dict", path, g);
        for (size_t k = 0; k < sg->n; k++) {
            const char *name = pk_as_str(sg->keys[k]);
            uint32_t ti;
            if (!name) return ds_err(DSCKPT_ECORRUPT, "%s: param_shapes[%zu] has a non-string name", path, g);
            DS_TRY(add_tensor(c, tcap, name, sg->items[k], model_dt, true, false, (int)g, &ti));
            DS_TRY(uni_tensor_states(x, tp, name, ti));
            if (g < ngroups && steps[g] < 0) DS_TRY(uni_group_step(c, tp, name, &steps[g]));
        }
    }
    return DSCKPT_OK;
}

dsckpt_status ds_universal_open(dsckpt_ckpt *c) {
    scan sc;
    memset(&sc, 0, sizeof sc);
    ds_open_ctx x = {.c = c};
    ds_pt os, tp;
    memset(&os, 0, sizeof os);
    memset(&tp, 0, sizeof tp);
    os.fd = tp.fd = -1;
    size_t tcap = 0;
    double *steps = NULL;
    dsckpt_status st = uni_check_listing(c->dir);
    if (st) goto done;
    DS_TRYGOTO(pt_load(c->dir, "zero/optimizer_state.pt", 0, &os), done);
    DS_TRYGOTO(pt_check_crcs(&os, true), done);
    DS_TRYGOTO(register_file(c, &os), done);
    pk_obj *zs = pk_get(os.root, "zero_stage");
    int stage = zs ? stage_of(zs) : 1;
    if (stage < 1) {
        st = ds_err(DSCKPT_EUNSUPPORTED, "%s: zero_stage %s is not one of 1, 2, 3", os.path, zs->member ? zs->member : "?");
        goto done;
    }
    pk_obj *pgs = pk_get(os.root, "param_groups");
    if (!pgs || pgs->kind != PK_LIST) {
        st = ds_err(DSCKPT_ECORRUPT, "%s: 'param_groups' missing or not a list", os.path);
        goto done;
    }
    DS_TRYGOTO(scan_dir(c->dir, &sc, false), done);
    size_t W = 1;
    DS_TRYGOTO(uni_open_models(&x, &sc, stage, &W), done);
    const ds_pt *m0 = &x.model[0];
    DS_TRYGOTO(check_layout_markers(m0), done);
    int64_t v = 0;
    if (stage < 3 && pk_as_int(pk_get(m0->root, "dp_world_size"), &v) && v >= 1 && v <= 1000000) W = (size_t)v;
    c->stage = stage;
    c->world_size = (int)W;
    pk_obj *module = pk_get(m0->root, "module");
    pk_obj *shapes = need(m0->root, "param_shapes", PK_LIST, m0->path, &st);
    if (!shapes) goto done;
    v = 0;
    pk_as_int(pk_get(m0->root, "global_steps"), &v);
    c->step = v;
    c->ngroups = (int)shapes->n;
    dsckpt_dtype model_dt = module_dtype(module);
    c->train_dtype = ds_strdup(model_dt == DSCKPT_BF16 ? "bf16" : model_dt == DSCKPT_F16 ? "fp16" : "fp32");
    DS_TRYGOTO(ds_calloc(pgs->n ? pgs->n : 1, sizeof *steps, &steps), done);
    for (size_t g = 0; g < pgs->n; g++) steps[g] = -1;

    DS_TRYGOTO(uni_trainable(&x, &tp, &tcap, shapes, model_dt, pgs->n, steps), done);
    const char *type = stage == 3 ? "DeepSpeedZeroOptimizer_Stage3"
                       : !zs      ? "BF16_Optimizer" /* the only ZeRO dict without zero_stage */
                                  : "DeepSpeedZeroOptimizer";
    DS_TRYGOTO(model_tail(&x, &tcap, stage, W, &(optim_carry){os.root, pgs, steps, type}), done);
    c->format = ds_strdup("universal");
    /* The tag is the directory name less ds_to_universal's "_universal" suffix, so
     * a reshard from it writes the original tag again. */
    if (!c->tag && (c->tag = ds_basename(c->dir)) != NULL) {
        size_t tl = strlen(c->tag), sl = strlen("_universal");
        if (tl > sl && !strcmp(c->tag + tl - sl, "_universal")) c->tag[tl - sl] = '\0';
    }
    if (!c->tag) st = DSCKPT_ENOMEM;
    if (!c->format || !c->train_dtype) st = ds_err(DSCKPT_ENOMEM, "out of memory");
done:
    pt_close(&os);
    pt_close(&tp);
    for (size_t r = 0; r < x.nmodel; r++) pt_close(&x.model[r]);
    free(x.model);
    free(steps);
    scan_free(&sc);
    return st;
}
