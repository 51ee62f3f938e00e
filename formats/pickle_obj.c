/*
 * pickle_obj.c — the pickle object model (pickle.h): pk_obj values, the arena
 * document that owns them (so every error path is a single pk_doc_free), the dict
 * key index that makes a repeated key replace the value as in Python, lookups and
 * constructors. The interpreter is pickle_read.c, the writer pickle_write.c.
 */
#include "pickle_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *pk_kind_name(pk_kind k) {
    switch (k) {
    case PK_NONE: return "None";
    case PK_BOOL: return "bool";
    case PK_INT: return "int";
    case PK_BIGINT: return "big int";
    case PK_FLOAT: return "float";
    case PK_STR: return "str";
    case PK_BYTES: return "bytes";
    case PK_TUPLE: return "tuple";
    case PK_LIST: return "list";
    case PK_SET: return "set";
    case PK_DICT: return "dict";
    case PK_GLOBAL: return "global";
    case PK_TENSOR: return "tensor";
    case PK_DTYPE: return "dtype";
    case PK_SIZE: return "torch.Size";
    case PK_ENUM: return "enum member";
    case PK_OBJECT: return "object";
    case PK_STORAGE: return "storage";
    }
    return "?";
}

pk_doc *pk_doc_create(size_t max_bytes, size_t max_objs) {
    pk_doc *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->max_bytes = max_bytes;
    d->max_objs = max_objs;
    return d;
}

void pk_doc_free(pk_doc *d) {
    if (!d) return;
    pk_block *b = d->blocks;
    while (b) {
        pk_block *n = b->next;
        free(b);
        b = n;
    }
    free(d->ktab);
    free(d);
}

/* Uninitialised arena memory, or NULL with d->fail set. */
void *pk_arena_alloc(pk_doc *d, size_t n) {
    if (n == 0) n = 1;
    if (n > SIZE_MAX / 2) {
        d->fail = FAIL_BYTES;
        return NULL;
    }
    n = (n + PK_ALIGN - 1) & ~(PK_ALIGN - 1);
    if (n > d->max_bytes - d->bytes) {
        d->fail = FAIL_BYTES;
        return NULL;
    }
    pk_block *b = d->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > PK_BLOCK_SIZE / 4 ? n : PK_BLOCK_SIZE;
        pk_block *nb = malloc(sizeof *nb + cap);
        if (!nb) {
            d->fail = FAIL_NOMEM;
            return NULL;
        }
        nb->used = 0;
        nb->cap = cap;
        if (b && cap == n) { /* a block of its own: keep filling the current one */
            nb->next = b->next;
            b->next = nb;
        } else {
            nb->next = b;
            d->blocks = nb;
        }
        b = nb;
    }
    void *p = (unsigned char *)b->data + b->used;
    b->used += n;
    d->bytes += n;
    return p;
}

char *pk_arena_strndup(pk_doc *d, const void *s, size_t n) {
    if (n == SIZE_MAX) {
        d->fail = FAIL_BYTES;
        return NULL;
    }
    char *p = pk_arena_alloc(d, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* A zeroed object of `kind`, counted against max_objects. */
pk_obj *pk_obj_alloc(pk_doc *d, pk_kind kind) {
    if (d->nobjs >= d->max_objs) {
        d->fail = FAIL_OBJECTS;
        return NULL;
    }
    pk_obj *o = pk_arena_alloc(d, sizeof *o);
    if (!o) return NULL;
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->depth = 1;
    d->nobjs++;
    return o;
}

/* Makes room for `need` items (and keys, for dicts). Arrays with cap 0 are shared
 * with another object and are copied before the first write. */
bool pk_arr_reserve(pk_doc *d, pk_obj *o, size_t need) {
    if (need <= o->cap) return true;
    size_t nc = o->cap ? o->cap * 2 : 4;
    if (nc < need) nc = need;
    if (nc > SIZE_MAX / sizeof(pk_obj *)) {
        d->fail = FAIL_BYTES;
        return false;
    }
    pk_obj **ni = pk_arena_alloc(d, nc * sizeof *ni);
    if (!ni) return false;
    if (o->n) memcpy(ni, o->items, o->n * sizeof *ni);
    if (o->kind == PK_DICT) {
        pk_obj **nk = pk_arena_alloc(d, nc * sizeof *nk);
        if (!nk) return false;
        if (o->n) memcpy(nk, o->keys, o->n * sizeof *nk);
        o->keys = nk;
    }
    o->items = ni;
    o->cap = nc;
    return true;
}

bool pk_obj_append(pk_doc *d, pk_obj *c, pk_obj *item) {
    if (!pk_arr_reserve(d, c, c->n + 1)) return false;
    c->items[c->n++] = item;
    return true;
}

/* ---- dict keys ---- */

/* Key classes that Python would compare equal within (numbers with numbers,
 * str with str, ...); KEY_NONE_CLASS means "never equal to another key". */
enum { KEY_UNHASHED = 0, KEY_NUM, KEY_FLOATBITS, KEY_STR, KEY_BYTES, KEY_NONE_CLASS };

static int key_class(const pk_obj *k, int64_t *iv) {
    switch (k->kind) {
    case PK_INT: *iv = k->i; return KEY_NUM;
    case PK_BOOL: *iv = k->b; return KEY_NUM;
    case PK_FLOAT:
        if (isnan(k->f)) return KEY_UNHASHED; /* nan != nan */
        if (k->f >= -9.2e18 && k->f <= 9.2e18 && k->f == (double)(int64_t)k->f) {
            *iv = (int64_t)k->f; /* 1.0 == 1 == True, and -0.0 == 0 */
            return KEY_NUM;
        }
        memcpy(iv, &k->f, sizeof *iv);
        return KEY_FLOATBITS;
    case PK_STR: return KEY_STR;
    case PK_BYTES: return KEY_BYTES;
    case PK_NONE: return KEY_NONE_CLASS;
    default: return KEY_UNHASHED;
    }
}

uint64_t pk_mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

uint64_t pk_hash_bytes(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t key_hash(const pk_obj *dict, const pk_obj *k, int cls, int64_t iv) {
    uint64_t h = pk_mix64((uint64_t)(uintptr_t)dict) ^ ((uint64_t)cls << 56);
    if (cls == KEY_STR || cls == KEY_BYTES) return h ^ pk_mix64(pk_hash_bytes(k->s, k->slen));
    if (cls == KEY_NONE_CLASS) return h;
    return h ^ pk_mix64((uint64_t)iv);
}

static bool key_eq(const pk_obj *a, int ca, int64_t ia, const pk_obj *b) {
    int64_t ib = 0;
    int cb = key_class(b, &ib);
    if (ca != cb) return false;
    if (ca == KEY_STR || ca == KEY_BYTES) return a->slen == b->slen && (a->slen == 0 || !memcmp(a->s, b->s, a->slen));
    if (ca == KEY_NONE_CLASS) return true;
    return ia == ib;
}

static bool ktab_grow(pk_doc *d) {
    size_t nc = d->kcap ? d->kcap * 2 : 64;
    if (nc > SIZE_MAX / sizeof(kslot) || nc * sizeof(kslot) > d->max_bytes - d->bytes) {
        d->fail = FAIL_BYTES;
        return false;
    }
    kslot *nt = calloc(nc, sizeof *nt);
    if (!nt) {
        d->fail = FAIL_NOMEM;
        return false;
    }
    for (size_t i = 0; i < d->kcap; i++) {
        if (!d->ktab[i].dict) continue;
        size_t j = (size_t)d->ktab[i].h & (nc - 1);
        while (nt[j].dict) j = (j + 1) & (nc - 1);
        nt[j] = d->ktab[i];
    }
    d->bytes -= d->kcap * sizeof(kslot);
    d->bytes += nc * sizeof(kslot);
    free(d->ktab);
    d->ktab = nt;
    d->kcap = nc;
    return true;
}

/* dict[key] = value with Python semantics (an equal key keeps its position and
 * gets the new value). Returns false with d->fail set when memory runs out. */
bool pk_dict_put(pk_doc *d, pk_obj *dict, pk_obj *key, pk_obj *value) {
    int64_t iv = 0;
    int cls = key_class(key, &iv);
    uint64_t h = 0;
    if (cls != KEY_UNHASHED) {
        h = key_hash(dict, key, cls, iv);
        if (d->kcap) {
            for (size_t j = (size_t)h & (d->kcap - 1); d->ktab[j].dict; j = (j + 1) & (d->kcap - 1)) {
                const kslot *s = &d->ktab[j];
                if (s->h == h && s->dict == dict && key_eq(key, cls, iv, dict->keys[s->idx])) {
                    dict->items[s->idx] = value;
                    return true;
                }
            }
        }
        if ((d->kcount + 1) * 2 > d->kcap && !ktab_grow(d)) return false;
    }
    if (!pk_arr_reserve(d, dict, dict->n + 1)) return false;
    dict->keys[dict->n] = key;
    dict->items[dict->n] = value;
    if (cls != KEY_UNHASHED) {
        size_t j = (size_t)h & (d->kcap - 1);
        while (d->ktab[j].dict) j = (j + 1) & (d->kcap - 1);
        d->ktab[j] = (kslot){dict, dict->n, h};
        d->kcount++;
    }
    dict->n++;
    return true;
}

/* ---- lookups ---- */

pk_obj *pk_get(const pk_obj *dict, const char *key) {
    if (!dict || dict->kind != PK_DICT || !key) return NULL;
    size_t kl = strlen(key);
    for (size_t i = 0; i < dict->n; i++) {
        const pk_obj *k = dict->keys[i];
        if (k->kind == PK_STR && k->slen == kl && !memcmp(k->s, key, kl)) return dict->items[i];
    }
    return NULL;
}

pk_obj *pk_get_int_key(const pk_obj *dict, int64_t key) {
    if (!dict || dict->kind != PK_DICT) return NULL;
    for (size_t i = 0; i < dict->n; i++) {
        int64_t v;
        if (pk_as_int(dict->keys[i], &v) && v == key) return dict->items[i];
    }
    return NULL;
}

bool pk_as_int(const pk_obj *o, int64_t *out) {
    if (!o) return false;
    if (o->kind == PK_INT) *out = o->i;
    else if (o->kind == PK_BOOL) *out = o->b;
    else return false;
    return true;
}

const char *pk_as_str(const pk_obj *o) { return o && o->kind == PK_STR ? o->s : NULL; }

/* ======================================================================== */
/* Constructors                                                             */
/* ======================================================================== */

pk_doc *pk_doc_new(void) {
    pk_doc *d = pk_doc_create(SIZE_MAX / 2, SIZE_MAX);
    if (!d) ds_err(DSCKPT_ENOMEM, "out of memory creating a pickle document");
    return d;
}

static void *ctor_fail(void) {
    ds_err(DSCKPT_ENOMEM, "out of memory building a pickle object");
    return NULL;
}

pk_obj *pk_new(pk_doc *d, pk_kind kind) {
    if (!d) return NULL;
    pk_obj *o = pk_obj_alloc(d, kind);
    if (!o) return ctor_fail();
    o->dtype = DSCKPT_DTYPE_COUNT;
    o->tensor.dtype = DSCKPT_DTYPE_COUNT;
    return o;
}

pk_obj *pk_new_int(pk_doc *d, int64_t v) {
    pk_obj *o = pk_new(d, PK_INT);
    if (o) o->i = v;
    return o;
}

pk_obj *pk_new_float(pk_doc *d, double v) {
    pk_obj *o = pk_new(d, PK_FLOAT);
    if (o) o->f = v;
    return o;
}

pk_obj *pk_new_bool(pk_doc *d, bool v) {
    pk_obj *o = pk_new(d, PK_BOOL);
    if (o) o->b = v;
    return o;
}

static pk_obj *new_text(pk_doc *d, pk_kind kind, const void *s, size_t n) {
    pk_obj *o = pk_new(d, kind);
    if (!o) return NULL;
    o->s = pk_arena_strndup(d, s, n);
    if (!o->s) return ctor_fail();
    o->slen = n;
    return o;
}

pk_obj *pk_new_str(pk_doc *d, const char *s) { return new_text(d, PK_STR, s ? s : "", s ? strlen(s) : 0); }

pk_obj *pk_new_bytes(pk_doc *d, const void *data, size_t len) {
    return new_text(d, PK_BYTES, data ? data : "", data ? len : 0);
}

char *pk_strdup(pk_doc *d, const char *s) {
    if (!d || !s) return NULL;
    char *r = pk_arena_strndup(d, s, strlen(s));
    return r ? r : ctor_fail();
}

bool pk_list_append(pk_doc *d, pk_obj *c, pk_obj *item) {
    if (!d || !c || !item) return false;
    if (c->kind != PK_LIST && c->kind != PK_TUPLE && c->kind != PK_SET && c->kind != PK_SIZE) return false;
    if (!pk_obj_append(d, c, item)) {
        ctor_fail();
        return false;
    }
    if (item->depth + 1 > c->depth) c->depth = item->depth + 1;
    return true;
}

bool pk_dict_set(pk_doc *d, pk_obj *dict, pk_obj *key, pk_obj *value) {
    if (!d || !dict || !key || !value || dict->kind != PK_DICT) return false;
    if (!pk_dict_put(d, dict, key, value)) {
        ctor_fail();
        return false;
    }
    return true;
}
