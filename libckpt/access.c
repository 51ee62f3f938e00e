/*
 * access.c — the public tensor-access calls (dsckpt.h, "Tensors: listing and
 * reading"): opening a .safetensors file as a weights-only source, iterating
 * tensors, the non-tensor state as JSON, and a reader that copies any slice of a
 * tensor state into a caller buffer in a requested dtype through a bounded
 * staging buffer.
 */
#include "cast.h"
#include "ckpt.h"
#include "fsutil.h"
#include "safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

_Static_assert((int)DSCKPT_STATE_FP32 == (int)DS_ST_FP32 && (int)DSCKPT_STATE_EXP_AVG == (int)DS_ST_EXP_AVG &&
                   (int)DSCKPT_STATE_EXP_AVG_SQ == (int)DS_ST_EXP_AVG_SQ && (int)DSCKPT_STATE_W16 == (int)DS_ST_W16 &&
                   (int)DSCKPT_STATE_COUNT == (int)DS_NSTATES,
               "public and internal state numbering agree");

/* Bytes of the staging buffer a reader converts through. */
#define STAGE_BYTES ((size_t)1 << 20)

const char *dsckpt_state_name(dsckpt_state s) {
    return (unsigned)s < DS_NSTATES ? ds_state_names[s] : "?";
}

dsckpt_status dsckpt_state_parse(const char *s, dsckpt_state *out) {
    int v = s ? ds_state_parse(s) : -1;
    if (v < 0) return ds_err(DSCKPT_EINVAL, "unknown state '%s' (fp32, exp_avg, exp_avg_sq or w16)", s ? s : "");
    *out = (dsckpt_state)v;
    return DSCKPT_OK;
}

/* ---- a .safetensors file as a source ---- */

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* The training dtype a weights file suggests: the dtype most of its elements have. */
static const char *dominant_dtype(const st_header *h) {
    uint64_t n[DSCKPT_DTYPE_COUNT] = {0};
    for (size_t i = 0; i < h->n; i++) n[h->tensors[i].dtype] += h->tensors[i].numel;
    if (n[DSCKPT_BF16] >= n[DSCKPT_F16] && n[DSCKPT_BF16] >= n[DSCKPT_F32] && n[DSCKPT_BF16]) return "bf16";
    if (n[DSCKPT_F16] >= n[DSCKPT_F32] && n[DSCKPT_F16]) return "fp16";
    return "fp32";
}

static dsckpt_status add_alias(ds_tensor *t, const char *alias) {
    char **v = realloc(t->aliases, (t->naliases + 1) * sizeof *v);
    if (!v) return ds_err(DSCKPT_ENOMEM, "out of memory");
    t->aliases = v;
    if (!(v[t->naliases] = ds_strdup(alias))) return DSCKPT_ENOMEM;
    t->naliases++;
    return DSCKPT_OK;
}

static dsckpt_status safetensors_fill(dsckpt_ckpt *c, const char *path, const st_header *h) {
    if (h->n >= UINT32_MAX) return ds_err(DSCKPT_EUNSUPPORTED, "%s: too many tensors (%zu)", path, h->n);
    if (!(c->format = ds_strdup("safetensors")) || !(c->dir = ds_strdup(path)) || !(c->tag = ds_basename(path)) ||
        !(c->train_dtype = ds_strdup(dominant_dtype(h))))
        return ds_err(DSCKPT_ENOMEM, "out of memory");
    c->step = 0;
    c->world_size = 1;
    c->stage = 0;
    c->ngroups = 0;
    c->no_read_check = true; /* no digests exist: the header was validated, data is read as is */
    DS_TRY(ds_calloc(1, sizeof *c->files, &c->files));
    c->nfiles = 1;
    if (!(c->files[0].name = ds_basename(path)) || !(c->files[0].path = ds_strdup(path)))
        return ds_err(DSCKPT_ENOMEM, "out of memory");
    c->files[0].size = h->file_size;
    if (h->n) {
        DS_TRY(ds_calloc(h->n, sizeof *c->tensors, &c->tensors));
        DS_TRY(ds_calloc(h->n, sizeof *c->frags[DS_ST_W16], &c->frags[DS_ST_W16]));
    }
    for (size_t i = 0; i < h->n; i++) {
        const st_tensor *s = &h->tensors[i];
        ds_tensor *t = &c->tensors[i];
        if (!(t->name = ds_strdup(s->name))) return DSCKPT_ENOMEM;
        c->ntensors = i + 1;
        t->dtype = s->dtype;
        t->ndim = s->ndim;
        memcpy(t->shape, s->shape, sizeof t->shape);
        t->numel = s->numel;
        t->trainable = false;
        t->group = -1;
        c->frags[DS_ST_W16][i] = (ds_frag){.tensor = (uint32_t)i, .file = 0, .start = 0, .numel = s->numel,
                                           .offset = h->data_start + s->begin, .dtype = s->dtype};
        c->nfrags[DS_ST_W16] = i + 1;
    }
    /* Tied weights written once by consolidate: "alias.<name>": "<owner>". */
    for (size_t m = 0; m < h->nmeta; m++) {
        if (strncmp(h->meta[m].key, "alias.", 6) || !h->meta[m].key[6]) continue;
        const char *alias = h->meta[m].key + 6;
        if (st_find(h, alias)) continue; /* a real tensor of that name wins */
        for (size_t i = 0; i < c->ntensors; i++)
            if (!strcmp(c->tensors[i].name, h->meta[m].value)) {
                DS_TRY(add_alias(&c->tensors[i], alias));
                break;
            }
    }
    cJSON *mf = cJSON_CreateObject();
    if (!mf) return ds_err(DSCKPT_ENOMEM, "out of memory");
    c->manifest = mf;
    cJSON_AddItemToObject(mf, "state", cJSON_CreateObject());
    cJSON_AddItemToObject(mf, "ds_config", cJSON_CreateObject());
    cJSON_AddItemToObject(mf, "metrics", cJSON_CreateObject());
    return DSCKPT_OK;
}

dsckpt_status dsckpt_source_open(const char *path, const char *tag, dsckpt_ckpt **out) {
    ds_err_clear();
    if (!path || !out) return ds_err(DSCKPT_EINVAL, "dsckpt_source_open: NULL argument");
    *out = NULL;
    struct stat sb;
    if (!(ends_with(path, ".safetensors") && stat(path, &sb) == 0 && S_ISREG(sb.st_mode)))
        return dsckpt_ckpt_open(path, tag, out);
    if (tag) return ds_err(DSCKPT_EINVAL, "%s: a .safetensors file has no tags (got tag '%s')", path, tag);
    st_header *h = NULL;
    DS_TRY(st_read_file(path, &h));
    dsckpt_ckpt *c = NULL;
    dsckpt_status st = ds_ckpt_new(&c);
    if (st == DSCKPT_OK) st = safetensors_fill(c, path, h);
    if (st == DSCKPT_OK) st = ds_ckpt_index(c, NULL, NULL);
    st_header_free(h);
    if (st) {
        dsckpt_ckpt_free(c);
        return st;
    }
    *out = c;
    return DSCKPT_OK;
}

/* ---- tensors ---- */

size_t dsckpt_tensor_count(const dsckpt_ckpt *c) { return c ? c->ntensors : 0; }

dsckpt_status dsckpt_tensor_get(const dsckpt_ckpt *c, size_t i, dsckpt_tensor_info *o) {
    if (!c || !o) return ds_err(DSCKPT_EINVAL, "dsckpt_tensor_get: NULL argument");
    if (i >= c->ntensors) return ds_err(DSCKPT_EINVAL, "tensor index %zu out of range (%zu tensors)", i, c->ntensors);
    const ds_tensor *t = &c->tensors[i];
    memset(o, 0, sizeof *o);
    o->name = t->name;
    o->dtype = t->dtype;
    o->ndim = t->ndim;
    o->shape = t->shape;
    o->numel = t->numel;
    o->trainable = t->trainable;
    for (int s = 0; s < DS_NSTATES; s++)
        if (ds_state_applies(t, (ds_state)s)) o->states |= 1u << s;
    o->weight_state = t->trainable ? DSCKPT_STATE_FP32 : DSCKPT_STATE_W16;
    return DSCKPT_OK;
}

dsckpt_status dsckpt_tensor_find(const dsckpt_ckpt *c, const char *name, size_t *index) {
    if (!c || !name || !index) return ds_err(DSCKPT_EINVAL, "dsckpt_tensor_find: NULL argument");
    for (size_t i = 0; i < c->ntensors; i++)
        if (!strcmp(c->tensors[i].name, name)) {
            *index = i;
            return DSCKPT_OK;
        }
    for (size_t i = 0; i < c->ntensors; i++)
        for (size_t a = 0; a < c->tensors[i].naliases; a++)
            if (!strcmp(c->tensors[i].aliases[a], name)) {
                *index = i;
                return DSCKPT_OK;
            }
    return ds_err(DSCKPT_ENOENT, "%s: no tensor '%s'", c->dir, name);
}

dsckpt_status dsckpt_tensor_state_dtype(const dsckpt_ckpt *c, size_t i, dsckpt_state s, dsckpt_dtype *out) {
    if (!c || !out) return ds_err(DSCKPT_EINVAL, "dsckpt_tensor_state_dtype: NULL argument");
    if (i >= c->ntensors) return ds_err(DSCKPT_EINVAL, "tensor index %zu out of range (%zu tensors)", i, c->ntensors);
    if ((unsigned)s >= DS_NSTATES || !ds_state_applies(&c->tensors[i], (ds_state)s))
        return ds_err(DSCKPT_EINVAL, "tensor '%s' has no state %s", c->tensors[i].name, dsckpt_state_name(s));
    *out = ds_ckpt_state_dtype(c, (ds_state)s, (uint32_t)i);
    return DSCKPT_OK;
}

dsckpt_status dsckpt_ckpt_state_json(const dsckpt_ckpt *c, char **out_json) {
    ds_err_clear();
    if (!c || !out_json) return ds_err(DSCKPT_EINVAL, "dsckpt_ckpt_state_json: NULL argument");
    cJSON *o = cJSON_CreateObject();
    if (!o) return ds_err(DSCKPT_ENOMEM, "out of memory");
    cJSON_AddStringToObject(o, "format", c->format ? c->format : "?");
    cJSON_AddStringToObject(o, "tag", c->tag ? c->tag : "");
    cJSON_AddNumberToObject(o, "step", (double)c->step);
    cJSON_AddNumberToObject(o, "world_size", c->world_size);
    cJSON_AddNumberToObject(o, "zero_stage", c->stage);
    cJSON_AddStringToObject(o, "train_dtype", c->train_dtype ? c->train_dtype : "");
    static const char *keys[] = {"state", "ds_config", "metrics"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const cJSON *v = c->manifest ? cJSON_GetObjectItemCaseSensitive(c->manifest, keys[k]) : NULL;
        cJSON_AddItemToObject(o, keys[k], cJSON_IsObject(v) ? cJSON_Duplicate(v, 1) : cJSON_CreateObject());
    }
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) return ds_err(DSCKPT_ENOMEM, "out of memory");
    *out_json = text;
    return DSCKPT_OK;
}

/* ---- the reader ---- */

struct dsckpt_reader {
    const dsckpt_ckpt *c;
    ds_fdset fs;
    uint8_t *stage;
    dsckpt_progress_fn progress;
    dsckpt_cancel_fn cancel;
    void *user;
};

dsckpt_status dsckpt_reader_open(const dsckpt_ckpt *c, dsckpt_reader **out) {
    ds_err_clear();
    if (!c || !out) return ds_err(DSCKPT_EINVAL, "dsckpt_reader_open: NULL argument");
    *out = NULL;
    dsckpt_reader *r = calloc(1, sizeof *r);
    if (!r) return ds_err(DSCKPT_ENOMEM, "out of memory");
    r->c = c;
    dsckpt_status st = ds_malloc(STAGE_BYTES, &r->stage);
    if (st == DSCKPT_OK) st = ds_fdset_open(c, &r->fs);
    if (st) {
        free(r->stage);
        free(r);
        return st;
    }
    *out = r;
    return DSCKPT_OK;
}

void dsckpt_reader_free(dsckpt_reader *r) {
    if (!r) return;
    ds_fdset_close(&r->fs);
    free(r->stage);
    free(r);
}

void dsckpt_reader_set_callbacks(dsckpt_reader *r, dsckpt_progress_fn progress, dsckpt_cancel_fn cancel, void *user) {
    if (!r) return;
    r->progress = progress;
    r->cancel = cancel;
    r->user = user;
}

static bool is_float(dsckpt_dtype t) { return t == DSCKPT_BF16 || t == DSCKPT_F16 || t == DSCKPT_F32 || t == DSCKPT_F64; }

static double load_f64(dsckpt_dtype t, const uint8_t *p, size_t i) {
    switch (t) {
    case DSCKPT_BF16: { uint16_t v; memcpy(&v, p + 2 * i, 2); return ds_bf16_to_f32_ref(v); }
    case DSCKPT_F16: { uint16_t v; memcpy(&v, p + 2 * i, 2); return ds_f16_to_f32_ref(v); }
    case DSCKPT_F32: { float v; memcpy(&v, p + 4 * i, 4); return v; }
    case DSCKPT_F64: { double v; memcpy(&v, p + 8 * i, 8); return v; }
    case DSCKPT_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); return (double)v; }
    case DSCKPT_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case DSCKPT_I16: { int16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case DSCKPT_I8: return (int8_t)p[i];
    case DSCKPT_U8: return p[i];
    case DSCKPT_BOOL: return p[i] != 0;
    case DSCKPT_U16: { uint16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case DSCKPT_U32: { uint32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case DSCKPT_U64: { uint64_t v; memcpy(&v, p + 8 * i, 8); return (double)v; }
    default: return NAN;
    }
}

/* n elements of `from` at src to `to` at dst (float targets only, or equal types). */
static void convert(dsckpt_dtype from, const uint8_t *src, dsckpt_dtype to, uint8_t *dst, size_t n) {
    if (from == to) {
        memcpy(dst, src, n * dsckpt_dtype_size(from));
        return;
    }
    if (from == DSCKPT_BF16 && to == DSCKPT_F32) return ds_cast_bf16_to_f32((const uint16_t *)src, (float *)dst, n);
    if (from == DSCKPT_F16 && to == DSCKPT_F32) return ds_cast_f16_to_f32((const uint16_t *)src, (float *)dst, n);
    if (from == DSCKPT_F32 && to == DSCKPT_BF16) return ds_cast_f32_to_bf16((const float *)src, (uint16_t *)dst, n);
    if (from == DSCKPT_F32 && to == DSCKPT_F16) return ds_cast_f32_to_f16((const float *)src, (uint16_t *)dst, n);
    for (size_t i = 0; i < n; i++) {
        double v = load_f64(from, src, i);
        switch (to) {
        case DSCKPT_F64: memcpy(dst + 8 * i, &v, 8); break;
        case DSCKPT_F32: { float f = (float)v; memcpy(dst + 4 * i, &f, 4); break; }
        case DSCKPT_BF16: { uint16_t h = ds_f32_to_bf16_ref((float)v); memcpy(dst + 2 * i, &h, 2); break; }
        case DSCKPT_F16: { uint16_t h = ds_f32_to_f16_ref((float)v); memcpy(dst + 2 * i, &h, 2); break; }
        default: break; /* excluded by the caller */
        }
    }
}

dsckpt_status dsckpt_read_tensor(dsckpt_reader *r, size_t i, dsckpt_state s, uint64_t start, uint64_t count,
                                 dsckpt_dtype dtype, void *buf, size_t buf_size) {
    ds_err_clear();
    if (!r || (!buf && count)) return ds_err(DSCKPT_EINVAL, "dsckpt_read_tensor: NULL argument");
    const dsckpt_ckpt *c = r->c;
    if ((unsigned)dtype >= DSCKPT_DTYPE_COUNT) return ds_err(DSCKPT_EINVAL, "dsckpt_read_tensor: bad dtype %d", (int)dtype);
    dsckpt_dtype from;
    DS_TRY(dsckpt_tensor_state_dtype(c, i, s, &from));
    const ds_tensor *t = &c->tensors[i];
    uint64_t end, need;
    if (ds_add_overflow(start, count, &end) || end > t->numel)
        return ds_err(DSCKPT_EINVAL, "tensor '%s': elements [%llu, +%llu) are outside its %llu elements", t->name,
                      (unsigned long long)start, (unsigned long long)count, (unsigned long long)t->numel);
    if (ds_mul_overflow(count, dsckpt_dtype_size(dtype), &need) || need > buf_size)
        return ds_err(DSCKPT_EINVAL, "tensor '%s': %llu elements of %s need %llu bytes; the buffer has %zu", t->name,
                      (unsigned long long)count, dsckpt_dtype_name(dtype), (unsigned long long)need, buf_size);
    if (from != dtype && !is_float(dtype))
        return ds_err(DSCKPT_EUNSUPPORTED, "tensor '%s' state %s is %s: it converts to BF16, F16, F32 or F64, not %s",
                      t->name, dsckpt_state_name(s), dsckpt_dtype_name(from), dsckpt_dtype_name(dtype));
    /* Slices small enough for the staging buffer in the stored dtype. */
    size_t es = dsckpt_dtype_size(from), ds = dsckpt_dtype_size(dtype);
    uint64_t slice = STAGE_BYTES / (es > ds ? es : ds);
    uint8_t *out = buf;
    for (uint64_t done = 0; done < count;) {
        if (ds_interrupted()) return ds_err_interrupted();
        if (r->cancel && r->cancel(r->user)) return ds_err(DSCKPT_EINTR, "cancelled by the caller");
        uint64_t n = DS_MIN(slice, count - done);
        if (from == dtype) {
            DS_TRY(ds_ckpt_read(c, &r->fs, (ds_state)s, (uint32_t)i, start + done, n, out + done * ds));
        } else {
            DS_TRY(ds_ckpt_read(c, &r->fs, (ds_state)s, (uint32_t)i, start + done, n, r->stage));
            convert(from, r->stage, dtype, out + done * ds, (size_t)n);
        }
        done += n;
        if (r->progress) r->progress(r->user, done, count);
    }
    return DSCKPT_OK;
}
