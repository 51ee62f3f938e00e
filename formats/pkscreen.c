/*
 * pkscreen.c — the allow-list of globals a pickle dsckpt writes may refer to, and
 * the walk that finds (and optionally drops) references outside it (pickle.h).
 * Nothing here evaluates anything: the tree is inert data from pk_parse.
 */
#include "pickle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const torch_dtypes[] = {"float16", "bfloat16", "float32", "float64", "int64", "int32",
                                           "int16",   "int8",     "uint8",   "bool",    "uint16", "uint32",
                                           "uint64",  "half",     "float",   "double",  "long",   "int",
                                           "short",   "complex64", "complex128", "float8_e4m3fn", "float8_e5m2"};

static const struct {
    const char *module, *name;
} allowed[] = {
    {"torch._utils", "_rebuild_tensor_v2"},
    {"torch._utils", "_rebuild_parameter"},
    {"torch._utils", "_rebuild_parameter_with_state"},
    {"torch._tensor", "_rebuild_from_type_v2"},
    {"torch", "Tensor"},
    {"torch", "Size"},
    {"torch", "device"},
    {"torch.storage", "UntypedStorage"},
    {"torch.nn.parameter", "Parameter"},
    {"collections", "OrderedDict"},
    {"builtins", "set"},
    {"builtins", "frozenset"},
    {"builtins", "getattr"},
    {"builtins", "bytes"},
    {"__builtin__", "set"},
    {"__builtin__", "frozenset"},
    {"__builtin__", "getattr"},
    {"__builtin__", "bytes"},
    {"_codecs", "encode"},
    {"deepspeed.runtime.zero.config", "ZeroStageEnum"},
    {"deepspeed.runtime.fp16.loss_scaler", "LossScaler"},
    {"deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"},
    {"deepspeed.utils.tensor_fragment", "fragment_address"},
    {"argparse", "Namespace"},
};

bool pk_global_allowed(const char *module, const char *name) {
    if (!module || !name) return false;
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (!strcmp(module, allowed[i].module) && !strcmp(name, allowed[i].name)) return true;
    if (!strcmp(module, "torch")) {
        /* torch.FloatStorage, torch.BFloat16Storage, ...: storage classes of the
         * persistent ids (a plain name, "<Capitalised>Storage"). */
        size_t n = strlen(name);
        if (n > 7 && !strcmp(name + n - 7, "Storage") && name[0] >= 'A' && name[0] <= 'Z') {
            for (size_t i = 0; i < n; i++)
                if (!((name[i] >= 'A' && name[i] <= 'Z') || (name[i] >= 'a' && name[i] <= 'z') ||
                      (name[i] >= '0' && name[i] <= '9')))
                    return false;
            return true;
        }
        for (size_t i = 0; i < sizeof torch_dtypes / sizeof torch_dtypes[0]; i++)
            if (!strcmp(name, torch_dtypes[i])) return true;
    }
    return false;
}

/* ---- the walk ---- */

enum { V_NONE = 0, V_CLEAN, V_BAD };

typedef struct vslot {
    const pk_obj *o;
    unsigned char v;
} vslot;

typedef struct screen {
    bool drop;
    pk_report_fn report;
    void *user;
    size_t count;
    vslot *tab;
    size_t cap, used;
    char path[512];
    size_t plen;
    dsckpt_status err;
} screen;

static size_t slot_of(const screen *s, const pk_obj *o) {
    uintptr_t h = (uintptr_t)o;
    h ^= h >> 17;
    h *= 0x9E3779B97F4A7C15ull;
    size_t j = (size_t)(h >> 7) & (s->cap - 1);
    while (s->tab[j].o && s->tab[j].o != o) j = (j + 1) & (s->cap - 1);
    return j;
}

static unsigned char seen(const screen *s, const pk_obj *o) {
    return s->cap ? s->tab[slot_of(s, o)].v : V_NONE;
}

static bool remember(screen *s, const pk_obj *o, unsigned char v) {
    if ((s->used + 1) * 2 > s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 1024;
        vslot *old = s->tab;
        size_t oc = s->cap;
        if (!(s->tab = calloc(nc, sizeof *s->tab))) {
            s->tab = old;
            s->err = ds_err(DSCKPT_ENOMEM, "out of memory screening a pickle");
            return false;
        }
        s->cap = nc;
        for (size_t i = 0; i < oc; i++)
            if (old[i].o) s->tab[slot_of(s, old[i].o)] = old[i];
        free(old);
    }
    size_t j = slot_of(s, o);
    if (!s->tab[j].o) s->used++;
    s->tab[j].o = o;
    s->tab[j].v = v;
    return true;
}

static size_t append(screen *s, const char *seg) {
    size_t old = s->plen;
    int n = snprintf(s->path + s->plen, sizeof s->path - s->plen, "%s", seg);
    if (n > 0) s->plen = DS_MIN(s->plen + (size_t)n, sizeof s->path - 1);
    return old;
}

/* Appends "['<key>']" (printable ASCII kept, other bytes as '?'); returns the old
 * length to restore with pop. */
static size_t push_key(screen *s, const char *str, size_t slen) {
    char seg[96];
    size_t k = 0;
    seg[k++] = '[';
    seg[k++] = '\'';
    for (size_t i = 0; i < slen && i < 60; i++) {
        unsigned char ch = (unsigned char)str[i];
        seg[k++] = ch >= 0x20 && ch < 0x7f && ch != '\'' ? (char)ch : '?';
    }
    if (slen > 60) k += (size_t)snprintf(seg + k, sizeof seg - k, "...");
    seg[k++] = '\'';
    seg[k++] = ']';
    seg[k] = '\0';
    return append(s, seg);
}

static size_t push_index(screen *s, long long i) {
    char seg[32];
    snprintf(seg, sizeof seg, "[%lld]", i);
    return append(s, seg);
}

static void pop(screen *s, size_t old) {
    s->plen = old;
    s->path[old] = '\0';
}

static bool walk(screen *s, pk_obj *o);

static bool walk_items(screen *s, pk_obj *o) {
    bool bad = false;
    for (size_t i = 0; i < o->n && !s->err; i++) {
        size_t old = push_index(s, (long long)i);
        bad |= walk(s, o->items[i]);
        pop(s, old);
    }
    return bad;
}

static bool flag(screen *s, const char *module, const char *name) {
    s->count++;
    if (s->report) s->report(s->user, module ? module : "?", name ? name : "?", s->plen ? s->path : "(top level)");
    return true;
}

static bool walk_dict(screen *s, pk_obj *d) {
    bool bad = false;
    size_t keep = 0;
    for (size_t i = 0; i < d->n && !s->err; i++) {
        pk_obj *k = d->keys[i];
        size_t old;
        if (k && k->kind == PK_STR) {
            old = push_key(s, k->s, k->slen);
        } else if (k && (k->kind == PK_INT || k->kind == PK_BOOL)) {
            old = push_index(s, (long long)k->i);
        } else {
            char seg[48];
            snprintf(seg, sizeof seg, "[<%s key>]", k ? pk_kind_name(k->kind) : "null");
            old = append(s, seg);
        }
        bool eb = walk(s, k);
        eb |= walk(s, d->items[i]);
        pop(s, old);
        if (eb && s->drop) continue; /* the entry is dropped */
        bad |= eb;
        if (s->drop) {
            d->keys[keep] = d->keys[i];
            d->items[keep] = d->items[i];
            keep++;
        }
    }
    if (s->drop && !s->err && keep != d->n) {
        if (d->cap == 0) {
            /* Arrays shared with another object (never the case for parsed dicts). */
            s->err = ds_err(DSCKPT_EUNSUPPORTED, "cannot drop entries of a shared dict at %s", s->path);
            return true;
        }
        d->n = keep;
    }
    return bad;
}

static bool walk(screen *s, pk_obj *o) {
    if (!o || s->err) return false;
    switch (o->kind) {
    case PK_NONE: case PK_BOOL: case PK_INT: case PK_BIGINT: case PK_FLOAT: case PK_STR: case PK_BYTES:
        return false;
    default: break;
    }
    unsigned char v = seen(s, o);
    if (v) return v == V_BAD;
    bool bad = false;
    if (o->kind == PK_GLOBAL || o->kind == PK_OBJECT || o->kind == PK_ENUM) {
        /* A class or function reference: the GLOBAL itself, or the callable /
         * class an object was built from. */
        if (!pk_global_allowed(o->module, o->name)) bad = flag(s, o->module, o->name);
    }
    if (o->kind != PK_GLOBAL && o->kind != PK_DTYPE) {
        /* Containers, and what objects were built from: arguments and state. */
        if (o->kind == PK_DICT) bad |= walk_dict(s, o);
        else if (o->kind != PK_SIZE) bad |= walk_items(s, o);
        if (o->args) {
            size_t old = append(s, ".args");
            bad |= walk(s, o->args);
            pop(s, old);
        }
        if (o->state) {
            size_t old = append(s, ".state");
            bad |= walk(s, o->state);
            pop(s, old);
        }
    }
    /* With drop, a dict's bad entries are gone: what is left is clean unless the
     * object itself (a PK_OBJECT of an unknown class) or a non-dict path holds one. */
    remember(s, o, bad ? V_BAD : V_CLEAN);
    return bad;
}

dsckpt_status pk_screen(pk_obj *root, bool drop, pk_report_fn report, void *user, size_t *count) {
    screen s = {.drop = drop, .report = report, .user = user};
    s.path[0] = '\0';
    bool bad = walk(&s, root);
    free(s.tab);
    if (count) *count = s.count;
    if (s.err) return s.err;
    if (drop && bad)
        return ds_err(DSCKPT_EUNSUPPORTED, "an unknown pickled object is not inside any dict entry: it cannot be dropped");
    return DSCKPT_OK;
}
