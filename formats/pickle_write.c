/*
 * pickle_write.c — the protocol-2 pickle writer declared in pickle.h: a mirror of
 * CPython 3's C pickler (save_tuple, batch_list_exact, batch_dict_exact vs. the
 * generic batch_dict of reduce-built dicts, save_reduce with NEWOBJ, memoisation
 * by object identity) plus torch.save's persistent ids, so that parse -> serialize
 * reproduces CPython output byte for byte.
 */
#include "pickle_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================== */
/* Writer                                                                   */
/* ======================================================================== */

/* Memo table entries: an object identity, a global name, or a synthetic string
 * (the strings torch.save shares: 'storage', 'cpu', storage keys, 'latin1'). */
enum { W_EMPTY = 0, W_PTR, W_GLOBAL, W_STR };

typedef struct wslot {
    uint8_t tag;
    const void *ptr;
    const char *a, *b; /* W_GLOBAL: module, name; W_STR: a */
    uint64_t h;
    uint32_t idx;
} wslot;

typedef struct writer {
    uint8_t *buf;
    size_t n, cap;
    bool oom;
    wslot *tab;
    size_t tcap, tcount;
    uint64_t next; /* next memo index */
    int depth;
    pk_key_fn rename; /* pk_serialize_ex: storage keys renamed at first use */
    void *rename_user;
} writer;

#define BATCHSIZE 1000

static void w_bytes(writer *w, const void *p, size_t n) {
    if (w->oom) return;
    if (w->cap - w->n < n) {
        size_t nc = w->cap ? w->cap : 4096;
        while (nc - w->n < n) {
            if (nc > SIZE_MAX / 2) {
                w->oom = true;
                return;
            }
            nc *= 2;
        }
        uint8_t *nb = realloc(w->buf, nc);
        if (!nb) {
            w->oom = true;
            return;
        }
        w->buf = nb;
        w->cap = nc;
    }
    memcpy(w->buf + w->n, p, n);
    w->n += n;
}

static void w_op(writer *w, uint8_t op) { w_bytes(w, &op, 1); }

static void w_le(writer *w, uint64_t v, int n) {
    uint8_t b[8];
    for (int i = 0; i < n; i++) b[i] = (uint8_t)(v >> (8 * i));
    w_bytes(w, b, (size_t)n);
}

static uint64_t w_hash(uint8_t tag, const void *ptr, const char *a, const char *b) {
    if (tag == W_PTR) return pk_mix64((uint64_t)(uintptr_t)ptr);
    uint64_t h = pk_hash_bytes(a, strlen(a)) ^ ((uint64_t)tag << 60);
    if (b) h ^= pk_mix64(pk_hash_bytes(b, strlen(b)));
    return pk_mix64(h);
}

static bool w_match(const wslot *s, uint8_t tag, const void *ptr, const char *a, const char *b) {
    if (s->tag != tag) return false;
    if (tag == W_PTR) return s->ptr == ptr;
    return streq(s->a, a) && (tag != W_GLOBAL || streq(s->b, b));
}

static bool w_lookup(const writer *w, uint8_t tag, const void *ptr, const char *a, const char *b, uint32_t *idx) {
    if (!w->tcap) return false;
    uint64_t h = w_hash(tag, ptr, a, b);
    for (size_t j = (size_t)h & (w->tcap - 1); w->tab[j].tag != W_EMPTY; j = (j + 1) & (w->tcap - 1))
        if (w->tab[j].h == h && w_match(&w->tab[j], tag, ptr, a, b)) {
            *idx = w->tab[j].idx;
            return true;
        }
    return false;
}

static void w_insert(writer *w, uint8_t tag, const void *ptr, const char *a, const char *b, uint32_t idx) {
    if (w->oom) return;
    if ((w->tcount + 1) * 2 > w->tcap) {
        size_t nc = w->tcap ? w->tcap * 2 : 256;
        wslot *nt = calloc(nc, sizeof *nt);
        if (!nt) {
            w->oom = true;
            return;
        }
        for (size_t i = 0; i < w->tcap; i++) {
            if (w->tab[i].tag == W_EMPTY) continue;
            size_t j = (size_t)w->tab[i].h & (nc - 1);
            while (nt[j].tag != W_EMPTY) j = (j + 1) & (nc - 1);
            nt[j] = w->tab[i];
        }
        free(w->tab);
        w->tab = nt;
        w->tcap = nc;
    }
    uint64_t h = w_hash(tag, ptr, a, b);
    size_t j = (size_t)h & (w->tcap - 1);
    while (w->tab[j].tag != W_EMPTY) j = (j + 1) & (w->tcap - 1);
    w->tab[j] = (wslot){tag, ptr, a, b, h, idx};
    w->tcount++;
}

/* BINPUT / LONG_BINPUT of the next memo index, which is returned. */
static dsckpt_status w_put(writer *w, uint32_t *idx) {
    if (w->next > UINT32_MAX) return ds_err(DSCKPT_EINVAL, "pk_serialize: more than 2^32 memo entries");
    *idx = (uint32_t)w->next++;
    if (*idx < 256) {
        w_op(w, OP_BINPUT);
        w_op(w, (uint8_t)*idx);
    } else {
        w_op(w, OP_LONG_BINPUT);
        w_le(w, *idx, 4);
    }
    return DSCKPT_OK;
}

static void w_get(writer *w, uint32_t idx) {
    if (idx < 256) {
        w_op(w, OP_BINGET);
        w_op(w, (uint8_t)idx);
    } else {
        w_op(w, OP_LONG_BINGET);
        w_le(w, idx, 4);
    }
}

static dsckpt_status w_memoize(writer *w, const pk_obj *o) {
    uint32_t idx = 0;
    DS_TRY(w_put(w, &idx));
    w_insert(w, W_PTR, o, NULL, NULL, idx);
    return DSCKPT_OK;
}

/* After REDUCE / NEWOBJ / TUPLE: CPython's check for an object that became
 * memoised while its arguments were written (only possible through a cycle):
 * drop what was built (`pops` POPs, or POP_MARK when pops is 0) and fetch it. */
static bool w_recursed(writer *w, const pk_obj *o, int pops) {
    uint32_t idx = 0;
    if (!o || !w_lookup(w, W_PTR, o, NULL, NULL, &idx)) return false;
    if (pops == 0) w_op(w, OP_POP_MARK);
    for (int i = 0; i < pops; i++) w_op(w, OP_POP);
    w_get(w, idx);
    return true;
}

static dsckpt_status w_save(writer *w, const pk_obj *o);

static void w_int(writer *w, int64_t v) {
    if (v >= 0 && v < 256) {
        w_op(w, OP_BININT1);
        w_op(w, (uint8_t)v);
    } else if (v >= 0 && v < 65536) {
        w_op(w, OP_BININT2);
        w_le(w, (uint64_t)v, 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        w_op(w, OP_BININT);
        w_le(w, (uint64_t)v, 4);
    } else { /* LONG1, minimal two's complement (as CPython's save_long) */
        uint64_t u = (uint64_t)v;
        int n = 8;
        while (n > 1) {
            uint8_t top = (uint8_t)(u >> (8 * (n - 1))), next = (uint8_t)(u >> (8 * (n - 2)));
            if ((top == 0x00 && !(next & 0x80)) || (top == 0xff && (next & 0x80))) n--;
            else break;
        }
        w_op(w, OP_LONG1);
        w_op(w, (uint8_t)n);
        w_le(w, u, n);
    }
}

static void w_float(writer *w, double f) {
    uint64_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint8_t b[9] = {OP_BINFLOAT};
    for (int i = 0; i < 8; i++) b[1 + i] = (uint8_t)(bits >> (8 * (7 - i)));
    w_bytes(w, b, sizeof b);
}

static dsckpt_status w_unicode(writer *w, const void *s, size_t n) {
    if (n > UINT32_MAX) return ds_err(DSCKPT_EINVAL, "pk_serialize: string of %zu bytes (protocol 2 limit is 4 GiB)", n);
    w_op(w, OP_BINUNICODE);
    w_le(w, n, 4);
    w_bytes(w, s, n);
    return DSCKPT_OK;
}

/* A string torch.save shares by identity (an interned literal or one key string
 * per storage): written once, then fetched. */
static dsckpt_status w_shared_str(writer *w, const char *s) {
    uint32_t idx = 0;
    if (w_lookup(w, W_STR, NULL, s, NULL, &idx)) {
        w_get(w, idx);
        return DSCKPT_OK;
    }
    DS_TRY(w_unicode(w, s, strlen(s)));
    DS_TRY(w_put(w, &idx));
    w_insert(w, W_STR, NULL, s, NULL, idx);
    return DSCKPT_OK;
}

/* A fresh (unshared) string that CPython memoises anonymously. */
static dsckpt_status w_fresh_str(writer *w, const void *s, size_t n) {
    uint32_t idx = 0;
    DS_TRY(w_unicode(w, s, n));
    return w_put(w, &idx);
}

/* GLOBAL module\nname\n, memoised by name (and by `o`'s identity if given). */
static dsckpt_status w_global(writer *w, const char *module, const char *name, const pk_obj *o) {
    uint32_t idx = 0;
    if (!module || !name || strchr(module, '\n') || strchr(name, '\n') || !*module || !*name)
        return ds_err(DSCKPT_EINVAL, "pk_serialize: a global without a valid module and name");
    if (streq(module, "builtins")) module = "__builtin__"; /* protocol 2 spelling (fix_imports) */
    if (o && w_lookup(w, W_PTR, o, NULL, NULL, &idx)) {
        w_get(w, idx);
        return DSCKPT_OK;
    }
    if (w_lookup(w, W_GLOBAL, NULL, module, name, &idx)) {
        w_get(w, idx);
        if (o) w_insert(w, W_PTR, o, NULL, NULL, idx);
        return DSCKPT_OK;
    }
    w_op(w, OP_GLOBAL);
    w_bytes(w, module, strlen(module));
    w_op(w, '\n');
    w_bytes(w, name, strlen(name));
    w_op(w, '\n');
    DS_TRY(w_put(w, &idx));
    w_insert(w, W_GLOBAL, NULL, module, name, idx);
    if (o) w_insert(w, W_PTR, o, NULL, NULL, idx);
    return DSCKPT_OK;
}

/* CPython's batch_list_exact: one item -> APPEND, else MARK..APPENDS per 1000. */
static dsckpt_status w_list_items(writer *w, pk_obj *const *items, size_t n) {
    if (n == 1) {
        DS_TRY(w_save(w, items[0]));
        w_op(w, OP_APPEND);
        return DSCKPT_OK;
    }
    size_t i = 0;
    while (i < n) {
        w_op(w, OP_MARK);
        for (size_t k = 0; k < BATCHSIZE && i < n; k++, i++) DS_TRY(w_save(w, items[i]));
        w_op(w, OP_APPENDS);
    }
    return DSCKPT_OK;
}

/* CPython's batch_dict_exact (a plain dict): one item -> SETITEM, else
 * MARK..SETITEMS per 1000, and a trailing empty MARK SETITEMS when the last batch
 * was full (the C pickler loops while the batch it wrote was full). */
static dsckpt_status w_dict_items_exact(writer *w, const pk_obj *o) {
    if (o->n == 0) return DSCKPT_OK;
    if (o->n == 1) {
        DS_TRY(w_save(w, o->keys[0]));
        DS_TRY(w_save(w, o->items[0]));
        w_op(w, OP_SETITEM);
        return DSCKPT_OK;
    }
    size_t i = 0, batch;
    do {
        w_op(w, OP_MARK);
        for (batch = 0; i < o->n && batch < BATCHSIZE; i++, batch++) {
            DS_TRY(w_save(w, o->keys[i]));
            DS_TRY(w_save(w, o->items[i]));
        }
        w_op(w, OP_SETITEMS);
    } while (batch == BATCHSIZE);
    return DSCKPT_OK;
}

/* CPython's generic batch_dict (dictitems of a reduce, e.g. OrderedDict): batches
 * of up to 1000 in MARK..SETITEMS, and a lone remaining item as SETITEM. */
static dsckpt_status w_dict_items_generic(writer *w, const pk_obj *o) {
    size_t i = 0;
    while (i < o->n) {
        if (o->n - i == 1) {
            DS_TRY(w_save(w, o->keys[i]));
            DS_TRY(w_save(w, o->items[i]));
            w_op(w, OP_SETITEM);
            break;
        }
        w_op(w, OP_MARK);
        for (size_t k = 0; k < BATCHSIZE && i < o->n; k++, i++) {
            DS_TRY(w_save(w, o->keys[i]));
            DS_TRY(w_save(w, o->items[i]));
        }
        w_op(w, OP_SETITEMS);
    }
    return DSCKPT_OK;
}

/* save_tuple: `self` is the tuple object (NULL for one CPython builds on the fly,
 * which is memoised anonymously). */
static dsckpt_status w_tuple_items(writer *w, pk_obj *const *items, size_t n, const pk_obj *self) {
    uint32_t idx = 0;
    if (n == 0) {
        w_op(w, OP_EMPTY_TUPLE);
        return DSCKPT_OK;
    }
    if (n <= 3) {
        for (size_t i = 0; i < n; i++) DS_TRY(w_save(w, items[i]));
        if (w_recursed(w, self, (int)n)) return DSCKPT_OK;
        w_op(w, (uint8_t)(OP_TUPLE1 + n - 1));
    } else {
        w_op(w, OP_MARK);
        for (size_t i = 0; i < n; i++) DS_TRY(w_save(w, items[i]));
        if (w_recursed(w, self, 0)) return DSCKPT_OK;
        w_op(w, OP_TUPLE);
    }
    if (self) return w_memoize(w, self);
    return w_put(w, &idx);
}

/* A tuple of ints built on the fly (tensor size / stride). */
static dsckpt_status w_int_tuple(writer *w, const uint64_t *u, const int64_t *s, int n) {
    uint32_t idx = 0;
    if (n == 0) {
        w_op(w, OP_EMPTY_TUPLE);
        return DSCKPT_OK;
    }
    if (n > 3) w_op(w, OP_MARK);
    for (int i = 0; i < n; i++) w_int(w, u ? (int64_t)u[i] : s[i]);
    w_op(w, n > 3 ? OP_TUPLE : (uint8_t)(OP_TUPLE1 + n - 1));
    return w_put(w, &idx);
}

/* REDUCE / NEWOBJ tail of save_reduce: memoise (or resolve a cycle), then state. */
static dsckpt_status w_reduce_tail(writer *w, const pk_obj *o, uint8_t op, bool with_state) {
    w_op(w, op);
    if (w_recursed(w, o, 1)) return DSCKPT_OK;
    DS_TRY(w_memoize(w, o));
    if (o->kind == PK_DICT) DS_TRY(w_dict_items_generic(w, o));
    if (with_state && o->state) {
        DS_TRY(w_save(w, o->state));
        w_op(w, OP_BUILD);
    }
    return DSCKPT_OK;
}

static const char *storage_name(dsckpt_dtype dt) {
    for (size_t i = 0; i < sizeof storage_types / sizeof storage_types[0]; i++)
        if (storage_types[i].dt == dt) return storage_types[i].name;
    return NULL;
}

/* torch.save's persistent id for a storage described by `t` (no pid tuple kept). */
static dsckpt_status w_storage_synth(writer *w, const pk_tensor *t, const char *location) {
    const char *cls = storage_name(t->dtype);
    if (!cls) return ds_err(DSCKPT_EINVAL, "pk_serialize: no torch storage type for dtype %s", dsckpt_dtype_name(t->dtype));
    if (!t->storage_key || !*t->storage_key) return ds_err(DSCKPT_EINVAL, "pk_serialize: tensor without a storage key");
    if (t->storage_numel > INT64_MAX) return ds_err(DSCKPT_EINVAL, "pk_serialize: storage numel out of range");
    uint32_t idx = 0;
    w_op(w, OP_MARK);
    DS_TRY(w_shared_str(w, "storage"));
    DS_TRY(w_global(w, "torch", cls, NULL));
    const char *key = t->storage_key;
    if (w->rename && !(key = w->rename(w->rename_user, t->storage_key)))
        return ds_err(DSCKPT_ENOMEM, "pk_serialize: could not rename storage '%s'", t->storage_key);
    DS_TRY(w_shared_str(w, key));
    DS_TRY(w_shared_str(w, location && *location ? location : "cpu"));
    w_int(w, (int64_t)t->storage_numel);
    w_op(w, OP_TUPLE);
    DS_TRY(w_put(w, &idx));
    w_op(w, OP_BINPERSID);
    return DSCKPT_OK;
}

/* _rebuild_tensor_v2 for a tensor described only by .tensor. */
static dsckpt_status w_tensor_synth(writer *w, const pk_obj *o) {
    const pk_tensor *t = &o->tensor;
    uint32_t idx = 0;
    if (t->ndim < 0 || t->ndim > 16) return ds_err(DSCKPT_EINVAL, "pk_serialize: tensor with %d dimensions", t->ndim);
    if (t->offset > INT64_MAX) return ds_err(DSCKPT_EINVAL, "pk_serialize: storage offset out of range");
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] > INT64_MAX) return ds_err(DSCKPT_EINVAL, "pk_serialize: tensor size out of range");
    DS_TRY(w_global(w, "torch._utils", "_rebuild_tensor_v2", NULL));
    w_op(w, OP_MARK);
    DS_TRY(w_storage_synth(w, t, NULL));
    w_int(w, (int64_t)t->offset);
    DS_TRY(w_int_tuple(w, t->shape, NULL, t->ndim));
    DS_TRY(w_int_tuple(w, NULL, t->stride, t->ndim));
    w_op(w, t->requires_grad ? OP_NEWTRUE : OP_NEWFALSE);
    DS_TRY(w_global(w, "collections", "OrderedDict", NULL)); /* backward_hooks = OrderedDict() */
    w_op(w, OP_EMPTY_TUPLE);
    w_op(w, OP_REDUCE);
    DS_TRY(w_put(w, &idx));
    w_op(w, OP_TUPLE);
    DS_TRY(w_put(w, &idx));
    return w_reduce_tail(w, o, OP_REDUCE, false);
}

static const char *dtype_torch_name(dsckpt_dtype dt) {
    for (size_t i = 0; i < sizeof torch_dtypes / sizeof torch_dtypes[0]; i++)
        if (torch_dtypes[i].dt == dt) return torch_dtypes[i].name; /* first = canonical */
    return NULL;
}

/* Everything that is memoised by identity, once the memo missed. */
/* One piece: one case per object kind, as CPython's save() dispatches. */
static dsckpt_status w_save_new(writer *w, const pk_obj *o) {
    uint32_t idx = 0;
    switch (o->kind) {
    case PK_STR:
        DS_TRY(w_unicode(w, o->s ? o->s : "", o->s ? o->slen : 0));
        return w_memoize(w, o);
    case PK_BYTES:
        if (o->args) {
            DS_TRY(w_global(w, o->module ? o->module : "_codecs", o->name ? o->name : "encode", NULL));
            DS_TRY(w_save(w, o->args));
        } else if (o->slen == 0) {
            DS_TRY(w_global(w, "__builtin__", "bytes", NULL));
            w_op(w, OP_EMPTY_TUPLE);
        } else { /* _codecs.encode(bytes.decode('latin1'), 'latin1') */
            DS_TRY(w_global(w, "_codecs", "encode", NULL));
            if (o->slen > SIZE_MAX / 2) return ds_err(DSCKPT_EINVAL, "pk_serialize: bytes too long");
            uint8_t *u = malloc(o->slen * 2);
            if (!u) return ds_err(DSCKPT_ENOMEM, "pk_serialize: out of memory");
            size_t m = 0;
            for (size_t i = 0; i < o->slen; i++) {
                uint8_t c = (uint8_t)o->s[i];
                if (c < 0x80) u[m++] = c;
                else {
                    u[m++] = (uint8_t)(0xc0 | (c >> 6));
                    u[m++] = (uint8_t)(0x80 | (c & 0x3f));
                }
            }
            dsckpt_status st = w_fresh_str(w, u, m);
            free(u);
            DS_TRY(st);
            DS_TRY(w_shared_str(w, "latin1"));
            w_op(w, OP_TUPLE2);
            DS_TRY(w_put(w, &idx));
        }
        return w_reduce_tail(w, o, OP_REDUCE, false);
    case PK_TUPLE: return w_tuple_items(w, o->items, o->n, o);
    case PK_LIST:
        w_op(w, OP_EMPTY_LIST);
        DS_TRY(w_memoize(w, o));
        return w_list_items(w, o->items, o->n);
    case PK_DICT:
        if (o->ordered) { /* OrderedDict.__reduce__: (cls, (), state, None, items) */
            DS_TRY(w_global(w, "collections", "OrderedDict", NULL));
            w_op(w, OP_EMPTY_TUPLE);
            return w_reduce_tail(w, o, OP_REDUCE, true);
        }
        w_op(w, OP_EMPTY_DICT);
        DS_TRY(w_memoize(w, o));
        return w_dict_items_exact(w, o);
    case PK_SET: /* protocol 2: set([items]) */
        DS_TRY(w_global(w, o->module ? o->module : "__builtin__", o->name ? o->name : "set", NULL));
        if (o->args) DS_TRY(w_save(w, o->args));
        else {
            w_op(w, OP_EMPTY_LIST);
            DS_TRY(w_put(w, &idx));
            DS_TRY(w_list_items(w, o->items, o->n));
            w_op(w, OP_TUPLE1);
            DS_TRY(w_put(w, &idx));
        }
        return w_reduce_tail(w, o, OP_REDUCE, false);
    case PK_GLOBAL: return w_global(w, o->module, o->name, o);
    case PK_DTYPE:
        if (o->module && o->name) return w_global(w, o->module, o->name, o);
        if (!dtype_torch_name(o->dtype)) return ds_err(DSCKPT_EINVAL, "pk_serialize: dtype object without a dtype");
        return w_global(w, "torch", dtype_torch_name(o->dtype), o);
    case PK_TENSOR:
        if (!o->args) return w_tensor_synth(w, o);
        DS_TRY(w_global(w, o->module ? o->module : "torch._utils", o->name ? o->name : "_rebuild_tensor_v2", NULL));
        DS_TRY(w_save(w, o->args));
        return w_reduce_tail(w, o, OP_REDUCE, false);
    case PK_SIZE: /* torch.Size.__reduce__: (Size, (tuple(self),)) */
        DS_TRY(w_global(w, "torch", "Size", NULL));
        if (o->args) DS_TRY(w_save(w, o->args));
        else {
            DS_TRY(w_tuple_items(w, o->items, o->n, NULL));
            w_op(w, OP_TUPLE1);
            DS_TRY(w_put(w, &idx));
        }
        return w_reduce_tail(w, o, OP_REDUCE, false);
    case PK_ENUM:
        if (o->member) { /* Python >= 3.12: getattr(cls, name) */
            DS_TRY(w_global(w, "__builtin__", "getattr", NULL));
            if (o->args) DS_TRY(w_save(w, o->args));
            else {
                DS_TRY(w_global(w, o->module, o->name, NULL));
                DS_TRY(w_fresh_str(w, o->member, strlen(o->member)));
                w_op(w, OP_TUPLE2);
                DS_TRY(w_put(w, &idx));
            }
        } else { /* by value: cls(value) */
            DS_TRY(w_global(w, o->module, o->name, NULL));
            if (o->args) DS_TRY(w_save(w, o->args));
            else {
                w_int(w, o->i);
                w_op(w, OP_TUPLE1);
                DS_TRY(w_put(w, &idx));
            }
        }
        return w_reduce_tail(w, o, OP_REDUCE, false);
    case PK_OBJECT:
        DS_TRY(w_global(w, o->module, o->name, NULL));
        if (o->args) DS_TRY(w_save(w, o->args));
        else w_op(w, OP_EMPTY_TUPLE);
        return w_reduce_tail(w, o, o->newobj ? OP_NEWOBJ : OP_REDUCE, true);
    default: return ds_err(DSCKPT_EINVAL, "pk_serialize: object of unknown kind %d", (int)o->kind);
    }
}

static dsckpt_status w_save(writer *w, const pk_obj *o) {
    if (!o) return ds_err(DSCKPT_EINVAL, "pk_serialize: NULL object in the tree");
    if (w->oom) return ds_err(DSCKPT_ENOMEM, "pk_serialize: out of memory");
    if (w->depth >= PK_WRITE_MAX_DEPTH)
        return ds_err(DSCKPT_EINVAL, "pk_serialize: objects nested deeper than %d (or a cycle through a tuple)",
                      PK_WRITE_MAX_DEPTH);
    w->depth++;
    dsckpt_status st = DSCKPT_OK;
    uint32_t idx = 0;
    /* Atoms are never memoised (CPython checks them before the memo), nor are
     * persistent ids (checked first of all). */
    switch (o->kind) {
    case PK_NONE: w_op(w, OP_NONE); break;
    case PK_BOOL: w_op(w, o->b ? OP_NEWTRUE : OP_NEWFALSE); break;
    case PK_INT: w_int(w, o->i); break;
    case PK_BIGINT:
        if (o->slen < 256) {
            w_op(w, OP_LONG1);
            w_op(w, (uint8_t)o->slen);
        } else if (o->slen <= INT32_MAX) {
            w_op(w, OP_LONG4);
            w_le(w, o->slen, 4);
        } else {
            st = ds_err(DSCKPT_EINVAL, "pk_serialize: integer too long");
            break;
        }
        w_bytes(w, o->s, o->slen);
        break;
    case PK_FLOAT: w_float(w, o->f); break;
    case PK_STORAGE:
        if (o->args && !w->rename) st = w_save(w, o->args);
        else st = w_storage_synth(w, &o->tensor, o->s);
        if (st == DSCKPT_OK && o->args && !w->rename) w_op(w, OP_BINPERSID);
        break;
    default:
        if (w_lookup(w, W_PTR, o, NULL, NULL, &idx)) w_get(w, idx);
        else st = w_save_new(w, o);
        break;
    }
    w->depth--;
    if (st == DSCKPT_OK && w->oom) st = ds_err(DSCKPT_ENOMEM, "pk_serialize: out of memory");
    return st;
}

dsckpt_status pk_serialize(const pk_obj *root, uint8_t **out, size_t *len) {
    return pk_serialize_ex(root, NULL, NULL, out, len);
}

dsckpt_status pk_serialize_ex(const pk_obj *root, pk_key_fn rename, void *user, uint8_t **out, size_t *len) {
    if (!out || !len) return ds_err(DSCKPT_EINVAL, "pk_serialize: bad arguments");
    *out = NULL;
    *len = 0;
    writer w = {.rename = rename, .rename_user = user};
    w_op(&w, OP_PROTO);
    w_op(&w, 2);
    dsckpt_status st = w_save(&w, root);
    w_op(&w, OP_STOP);
    if (st == DSCKPT_OK && w.oom) st = ds_err(DSCKPT_ENOMEM, "pk_serialize: out of memory");
    free(w.tab);
    if (st != DSCKPT_OK) {
        free(w.buf);
        return st;
    }
    *out = w.buf;
    *len = w.n;
    return DSCKPT_OK;
}
