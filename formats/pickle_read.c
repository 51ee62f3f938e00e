/*
 * pickle_read.c — the restricted pickle interpreter declared in pickle.h: a stack
 * machine over the opcodes torch.save and DeepSpeed produce (plus the protocol 3-5
 * and text forms that are cheap to read safely). Nothing is executed: GLOBAL
 * yields a name, and REDUCE / NEWOBJ / BUILD turn allow-listed names into typed
 * values and everything else into inert PK_OBJECT records. All objects live in one
 * arena owned by the pk_doc (pickle_obj.c). Bounds: MARK and object nesting
 * (max_depth), memo indices (max_memo), string / LONG lengths (max_str, max_long,
 * and the bytes left), objects (max_objects) and arena bytes (max_bytes).
 */
#include "pickle_internal.h"

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Name of a known opcode, NULL for bytes that are no opcode at all. */
static const char *op_name(int op) {
    switch (op) {
    case OP_MARK: return "MARK";
    case OP_STOP: return "STOP";
    case OP_POP: return "POP";
    case OP_POP_MARK: return "POP_MARK";
    case OP_DUP: return "DUP";
    case OP_FLOAT: return "FLOAT";
    case OP_INT: return "INT";
    case OP_BININT: return "BININT";
    case OP_BININT1: return "BININT1";
    case OP_LONG: return "LONG";
    case OP_BININT2: return "BININT2";
    case OP_NONE: return "NONE";
    case OP_PERSID: return "PERSID";
    case OP_BINPERSID: return "BINPERSID";
    case OP_REDUCE: return "REDUCE";
    case OP_STRING: return "STRING";
    case OP_BINSTRING: return "BINSTRING";
    case OP_SHORT_BINSTRING: return "SHORT_BINSTRING";
    case OP_UNICODE: return "UNICODE";
    case OP_BINUNICODE: return "BINUNICODE";
    case OP_APPEND: return "APPEND";
    case OP_BUILD: return "BUILD";
    case OP_GLOBAL: return "GLOBAL";
    case OP_DICT: return "DICT";
    case OP_EMPTY_DICT: return "EMPTY_DICT";
    case OP_APPENDS: return "APPENDS";
    case OP_GET: return "GET";
    case OP_BINGET: return "BINGET";
    case OP_INST: return "INST";
    case OP_LONG_BINGET: return "LONG_BINGET";
    case OP_LIST: return "LIST";
    case OP_EMPTY_LIST: return "EMPTY_LIST";
    case OP_OBJ: return "OBJ";
    case OP_PUT: return "PUT";
    case OP_BINPUT: return "BINPUT";
    case OP_LONG_BINPUT: return "LONG_BINPUT";
    case OP_SETITEM: return "SETITEM";
    case OP_TUPLE: return "TUPLE";
    case OP_EMPTY_TUPLE: return "EMPTY_TUPLE";
    case OP_SETITEMS: return "SETITEMS";
    case OP_BINFLOAT: return "BINFLOAT";
    case OP_PROTO: return "PROTO";
    case OP_NEWOBJ: return "NEWOBJ";
    case OP_EXT1: return "EXT1";
    case OP_EXT2: return "EXT2";
    case OP_EXT4: return "EXT4";
    case OP_TUPLE1: return "TUPLE1";
    case OP_TUPLE2: return "TUPLE2";
    case OP_TUPLE3: return "TUPLE3";
    case OP_NEWTRUE: return "NEWTRUE";
    case OP_NEWFALSE: return "NEWFALSE";
    case OP_LONG1: return "LONG1";
    case OP_LONG4: return "LONG4";
    case OP_BINBYTES: return "BINBYTES";
    case OP_SHORT_BINBYTES: return "SHORT_BINBYTES";
    case OP_SHORT_BINUNICODE: return "SHORT_BINUNICODE";
    case OP_BINUNICODE8: return "BINUNICODE8";
    case OP_BINBYTES8: return "BINBYTES8";
    case OP_EMPTY_SET: return "EMPTY_SET";
    case OP_ADDITEMS: return "ADDITEMS";
    case OP_FROZENSET: return "FROZENSET";
    case OP_NEWOBJ_EX: return "NEWOBJ_EX";
    case OP_STACK_GLOBAL: return "STACK_GLOBAL";
    case OP_MEMOIZE: return "MEMOIZE";
    case OP_FRAME: return "FRAME";
    case OP_BYTEARRAY8: return "BYTEARRAY8";
    case OP_NEXT_BUFFER: return "NEXT_BUFFER";
    case OP_READONLY_BUFFER: return "READONLY_BUFFER";
    }
    return NULL;
}

/* ======================================================================== */
/* Allow-listed names (the storage and dtype tables are in pickle_internal.h)   */
/* ======================================================================== */

static const char *const zero_stage_names[] = {"disabled", "optimizer_states", "gradients", "weights"};

static bool is_global(const pk_obj *o, const char *module, const char *name) {
    return o && (o->kind == PK_GLOBAL || o->kind == PK_DTYPE) && streq(o->module, module) && streq(o->name, name);
}

static bool is_builtin(const pk_obj *o, const char *name) {
    return is_global(o, "__builtin__", name) || is_global(o, "builtins", name);
}

/* ======================================================================== */
/* Reader                                                                   */
/* ======================================================================== */

typedef struct parser {
    const uint8_t *data;
    size_t len, pos;
    size_t op_pos; /* offset of the opcode being run, for messages */
    int op;
    const char *what;
    pk_limits lim;
    pk_doc *doc;
    pk_obj **stack;
    size_t sp, scap;
    size_t *marks; /* stack heights at each open MARK */
    size_t nmarks, mcap;
    pk_obj **memo;
    size_t memo_cap, memo_count;
} parser;

/* Records "<what>: <message> (opcode NAME at byte N)" and returns st. */
static dsckpt_status perr(const parser *p, dsckpt_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static dsckpt_status perr(const parser *p, dsckpt_status st, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *on = op_name(p->op);
    return ds_err(st, "%s: %s (opcode %s at byte %zu)", p->what, msg, on ? on : "?", p->op_pos);
}

/* The message for an arena failure (d->fail). */
static dsckpt_status doc_fail(const parser *p) {
    switch (p->doc->fail) {
    case FAIL_BYTES:
        return perr(p, DSCKPT_ECORRUPT, "the pickle needs more than max_bytes (%zu) of memory", p->lim.max_bytes);
    case FAIL_OBJECTS:
        return perr(p, DSCKPT_ECORRUPT, "more than max_objects (%zu) objects", p->lim.max_objects);
    default: return perr(p, DSCKPT_ENOMEM, "out of memory");
    }
}

#define MAKE(var, kind)                       \
    do {                                        \
        (var) = pk_obj_alloc(p->doc, (kind));        \
        if (!(var)) return doc_fail(p);         \
    } while (0)

/* ---- input ---- */

static dsckpt_status need(const parser *p, uint64_t n) {
    if (p->len - p->pos < n)
        return perr(p, DSCKPT_ECORRUPT, "truncated: %llu bytes needed, %zu left", (unsigned long long)n,
                    p->len - p->pos);
    return DSCKPT_OK;
}

static uint64_t rd_le(parser *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)p->data[p->pos + (size_t)i] << (8 * i);
    p->pos += (size_t)n;
    return v;
}

/* A little-endian unsigned field of n bytes. */
static dsckpt_status rd_uint(parser *p, int n, uint64_t *v) {
    DS_TRY(need(p, (uint64_t)n));
    *v = rd_le(p, n);
    return DSCKPT_OK;
}

/* A newline-terminated line of at most `max` bytes (newline excluded). */
static dsckpt_status rd_line(parser *p, size_t max, const char **s, size_t *n) {
    size_t left = p->len - p->pos, lim = left < max + 1 ? left : max + 1;
    const uint8_t *nl = memchr(p->data + p->pos, '\n', lim);
    if (!nl) {
        if (left <= max) return perr(p, DSCKPT_ECORRUPT, "truncated: line without a newline");
        return perr(p, DSCKPT_ECORRUPT, "line longer than %zu bytes", max);
    }
    *s = (const char *)p->data + p->pos;
    *n = (size_t)(nl - (p->data + p->pos));
    p->pos += *n + 1;
    return DSCKPT_OK;
}

/* ---- stack, marks, memo ---- */

static size_t fence(const parser *p) { return p->nmarks ? p->marks[p->nmarks - 1] : 0; }

static dsckpt_status push(parser *p, pk_obj *o) {
    if (p->sp == p->scap) {
        size_t nc = p->scap ? p->scap * 2 : 256;
        pk_obj **ns = realloc(p->stack, nc * sizeof *ns);
        if (!ns) return perr(p, DSCKPT_ENOMEM, "out of memory growing the stack");
        p->stack = ns;
        p->scap = nc;
    }
    p->stack[p->sp++] = o;
    return DSCKPT_OK;
}

static dsckpt_status pop(parser *p, pk_obj **o) {
    if (p->sp <= fence(p)) return perr(p, DSCKPT_ECORRUPT, "stack underflow");
    *o = p->stack[--p->sp];
    return DSCKPT_OK;
}

static dsckpt_status peek(parser *p, pk_obj **o) {
    if (p->sp <= fence(p)) return perr(p, DSCKPT_ECORRUPT, "stack underflow");
    *o = p->stack[p->sp - 1];
    return DSCKPT_OK;
}

/* Closes the innermost MARK; the items above it are stack[*start .. sp). */
static dsckpt_status pop_mark(parser *p, size_t *start) {
    if (!p->nmarks) return perr(p, DSCKPT_ECORRUPT, "no MARK to match");
    *start = p->marks[--p->nmarks];
    return DSCKPT_OK;
}

static dsckpt_status push_mark(parser *p) {
    if (p->nmarks >= p->lim.max_depth)
        return perr(p, DSCKPT_ECORRUPT, "MARKs nested deeper than max_depth (%zu)", p->lim.max_depth);
    if (p->nmarks == p->mcap) {
        size_t nc = p->mcap ? p->mcap * 2 : 64;
        size_t *nm = realloc(p->marks, nc * sizeof *nm);
        if (!nm) return perr(p, DSCKPT_ENOMEM, "out of memory growing the mark stack");
        p->marks = nm;
        p->mcap = nc;
    }
    p->marks[p->nmarks++] = p->sp;
    return DSCKPT_OK;
}

static dsckpt_status memo_put(parser *p, uint64_t idx) {
    pk_obj *o = NULL;
    DS_TRY(peek(p, &o));
    if (idx >= p->lim.max_memo)
        return perr(p, DSCKPT_ECORRUPT, "memo index %llu out of range (max_memo %zu)", (unsigned long long)idx,
                    p->lim.max_memo);
    if (idx >= p->memo_cap) {
        size_t nc = p->memo_cap ? p->memo_cap * 2 : 256;
        if (nc <= idx) nc = (size_t)idx + 1;
        if (nc > p->lim.max_memo) nc = p->lim.max_memo;
        pk_obj **nm = realloc(p->memo, nc * sizeof *nm);
        if (!nm) return perr(p, DSCKPT_ENOMEM, "out of memory growing the memo");
        memset(nm + p->memo_cap, 0, (nc - p->memo_cap) * sizeof *nm);
        p->memo = nm;
        p->memo_cap = nc;
    }
    if (!p->memo[idx]) p->memo_count++;
    p->memo[idx] = o;
    return DSCKPT_OK;
}

static dsckpt_status memo_get(parser *p, uint64_t idx) {
    if (idx >= p->memo_cap || !p->memo[idx])
        return perr(p, DSCKPT_ECORRUPT, "memo index %llu out of range (never stored)", (unsigned long long)idx);
    return push(p, p->memo[idx]);
}

/* ---- object graph rules ---- */

/* Records that `child` is now inside `parent`: bounds the nesting depth and
 * freezes the child. Freezing keeps the graph acyclic (a cycle needs an object
 * modified after it was stored somewhere) and keeps every recorded depth exact. */
static dsckpt_status adopt(parser *p, pk_obj *parent, pk_obj *child) {
    if (child == parent) return perr(p, DSCKPT_ECORRUPT, "a %s would contain itself", pk_kind_name(parent->kind));
    if (child->depth >= p->lim.max_depth)
        return perr(p, DSCKPT_ECORRUPT, "objects nested deeper than max_depth (%zu)", p->lim.max_depth);
    if (child->depth + 1 > parent->depth) parent->depth = child->depth + 1;
    child->sealed = true;
    return DSCKPT_OK;
}

static dsckpt_status check_mutable(parser *p, const pk_obj *o) {
    if (o->sealed)
        return perr(p, DSCKPT_ECORRUPT,
                    "modifies a %s that is already stored inside another object (cyclic structures are not "
                    "supported)",
                    pk_kind_name(o->kind));
    return DSCKPT_OK;
}

/* ---- leaves ---- */

static dsckpt_status leaf(parser *p, pk_obj **slot, pk_kind kind, bool b, pk_obj **out) {
    if (!*slot) {
        MAKE(*slot, kind);
        (*slot)->b = b;
        (*slot)->i = b;
    }
    *out = *slot;
    return DSCKPT_OK;
}

static dsckpt_status mk_int(parser *p, int64_t v, pk_obj **out) {
    if (v >= 0 && v < 256) {
        pk_obj **slot = &p->doc->small[v];
        if (!*slot) {
            MAKE(*slot, PK_INT);
            (*slot)->i = v;
        }
        *out = *slot;
        return DSCKPT_OK;
    }
    MAKE(*out, PK_INT);
    (*out)->i = v;
    return DSCKPT_OK;
}

/* A two's-complement little-endian integer of n bytes (n <= max_long). */
static dsckpt_status mk_long(parser *p, const uint8_t *b, size_t n, pk_obj **out) {
    bool neg = n && (b[n - 1] & 0x80);
    bool fits = true;
    if (n > 8) {
        uint8_t ext = neg ? 0xff : 0x00;
        for (size_t i = 8; i < n; i++)
            if (b[i] != ext) fits = false;
        if (((b[7] & 0x80) != 0) != neg) fits = false;
    }
    if (fits) {
        uint64_t u = 0;
        size_t m = n < 8 ? n : 8;
        for (size_t i = 0; i < m; i++) u |= (uint64_t)b[i] << (8 * i);
        if (neg && m < 8) u |= ~(uint64_t)0 << (8 * m);
        return mk_int(p, (int64_t)u, out);
    }
    MAKE(*out, PK_BIGINT);
    (*out)->s = pk_arena_strndup(p->doc, b, n);
    if (!(*out)->s) return doc_fail(p);
    (*out)->slen = n;
    return DSCKPT_OK;
}

/* A str (validated UTF-8) or bytes object of the next n input bytes. */
static dsckpt_status mk_text(parser *p, uint64_t n, pk_kind kind, pk_obj **out) {
    DS_TRY(need(p, n));
    if (n > p->lim.max_str)
        return perr(p, DSCKPT_ECORRUPT, "string of %llu bytes exceeds max_str (%zu)", (unsigned long long)n,
                    p->lim.max_str);
    const uint8_t *s = p->data + p->pos;
    /* As Python's decoder with 'surrogatepass' accepts it (CPython writes lone
     * surrogates that way). */
    if (kind == PK_STR && ds_utf8_valid_prefix(s, (size_t)n, true) != (size_t)n)
        return perr(p, DSCKPT_ECORRUPT, "string is not valid UTF-8");
    MAKE(*out, kind);
    (*out)->s = pk_arena_strndup(p->doc, s, (size_t)n);
    if (!(*out)->s) return doc_fail(p);
    (*out)->slen = (size_t)n;
    p->pos += (size_t)n;
    return DSCKPT_OK;
}

/* Module and class names: 1..256 printable ASCII bytes. */
static bool name_ok(const char *s, size_t n) {
    if (n == 0 || n > 256) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) return false;
    return true;
}

static dsckpt_status mk_global(parser *p, const char *mod, size_t ml, const char *name, size_t nl, pk_obj **out) {
    if (!name_ok(mod, ml) || !name_ok(name, nl))
        return perr(p, DSCKPT_ECORRUPT, "global name is empty, longer than 256 bytes or not printable ASCII");
    pk_kind kind = PK_GLOBAL;
    dsckpt_dtype dt = DSCKPT_DTYPE_COUNT;
    if (ml == 5 && !memcmp(mod, "torch", 5)) {
        for (size_t i = 0; i < sizeof torch_dtypes / sizeof torch_dtypes[0]; i++)
            if (strlen(torch_dtypes[i].name) == nl && !memcmp(torch_dtypes[i].name, name, nl)) {
                kind = PK_DTYPE;
                dt = torch_dtypes[i].dt;
            }
    }
    MAKE(*out, kind);
    (*out)->dtype = dt;
    (*out)->module = pk_arena_strndup(p->doc, mod, ml);
    (*out)->name = pk_arena_strndup(p->doc, name, nl);
    if (!(*out)->module || !(*out)->name) return doc_fail(p);
    return DSCKPT_OK;
}

/* Decimal int64 of a text opcode (INT, LONG, GET, PUT). */
static bool parse_dec(const char *s, size_t n, int64_t *v) {
    size_t i = 0;
    bool neg = false;
    if (i < n && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    if (i == n) return false;
    uint64_t u = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (u > (lim - d) / 10) return false;
        u = u * 10 + d;
    }
    *v = neg ? (int64_t)(0 - u) : (int64_t)u;
    return true;
}

/* ---- containers ---- */

/* A tuple of stack[start .. sp), popped. */
static dsckpt_status mk_tuple(parser *p, size_t start, pk_obj **out) {
    size_t n = p->sp - start;
    if (n == 0) return leaf(p, &p->doc->empty_tuple, PK_TUPLE, false, out);
    pk_obj *t;
    MAKE(t, PK_TUPLE);
    if (!pk_arr_reserve(p->doc, t, n)) return doc_fail(p);
    for (size_t i = 0; i < n; i++) {
        DS_TRY(adopt(p, t, p->stack[start + i]));
        t->items[i] = p->stack[start + i];
    }
    t->n = n;
    p->sp = start;
    *out = t;
    return DSCKPT_OK;
}

/* list.extend / set.update with stack[start .. sp), popped. */
static dsckpt_status add_items(parser *p, pk_obj *c, size_t start) {
    DS_TRY(check_mutable(p, c));
    for (size_t i = start; i < p->sp; i++) {
        DS_TRY(adopt(p, c, p->stack[i]));
        if (!pk_obj_append(p->doc, c, p->stack[i])) return doc_fail(p);
    }
    p->sp = start;
    return DSCKPT_OK;
}

/* dict.update with the key/value pairs stack[start .. sp), popped. */
static dsckpt_status set_items(parser *p, pk_obj *dict, size_t start) {
    if ((p->sp - start) % 2) return perr(p, DSCKPT_ECORRUPT, "odd number of items for a dict");
    DS_TRY(check_mutable(p, dict));
    for (size_t i = start; i < p->sp; i += 2) {
        DS_TRY(adopt(p, dict, p->stack[i]));
        DS_TRY(adopt(p, dict, p->stack[i + 1]));
        if (!pk_dict_put(p->doc, dict, p->stack[i], p->stack[i + 1])) return doc_fail(p);
    }
    p->sp = start;
    return DSCKPT_OK;
}

/* The container right below the innermost MARK, which APPENDS / SETITEMS /
 * ADDITEMS modify. */
static dsckpt_status below_mark(parser *p, size_t *start, pk_obj **c) {
    DS_TRY(pop_mark(p, start));
    if (*start <= fence(p)) return perr(p, DSCKPT_ECORRUPT, "stack underflow");
    *c = p->stack[*start - 1];
    return DSCKPT_OK;
}

/* ---- persistent ids and REDUCE targets ---- */

static bool as_nonneg(const pk_obj *o, uint64_t *v) {
    if (!o || o->kind != PK_INT || o->i < 0) return false;
    *v = (uint64_t)o->i;
    return true;
}

/* BINPERSID: ('storage', torch.<X>Storage, key, location, numel[, None]). */
static dsckpt_status persistent_load(parser *p, pk_obj *pid, pk_obj **out) {
    static const char shape_msg[] = "persistent id is not a ('storage', type, key, location, numel) tuple";
    if (pid->kind != PK_TUPLE || (pid->n != 5 && pid->n != 6)) return perr(p, DSCKPT_ECORRUPT, "%s", shape_msg);
    pk_obj **it = pid->items;
    if (it[0]->kind != PK_STR || !streq(it[0]->s, "storage") || it[2]->kind != PK_STR || it[3]->kind != PK_STR)
        return perr(p, DSCKPT_ECORRUPT, "%s", shape_msg);
    if (it[1]->kind != PK_GLOBAL) return perr(p, DSCKPT_ECORRUPT, "%s: storage type is a %s", shape_msg,
                                              pk_kind_name(it[1]->kind));
    dsckpt_dtype dt = DSCKPT_DTYPE_COUNT;
    if (streq(it[1]->module, "torch"))
        for (size_t i = 0; i < sizeof storage_types / sizeof storage_types[0]; i++)
            if (streq(it[1]->name, storage_types[i].name)) dt = storage_types[i].dt;
    if (dt == DSCKPT_DTYPE_COUNT)
        return perr(p, DSCKPT_EUNSUPPORTED, "storage type %s.%s is not supported", it[1]->module, it[1]->name);
    const pk_obj *key = it[2];
    bool key_ok = key->slen > 0 && key->slen <= 256;
    for (size_t i = 0; key_ok && i < key->slen; i++) {
        unsigned char c = (unsigned char)key->s[i];
        if (c < 0x21 || c > 0x7e || c == '/' || c == '\\') key_ok = false;
    }
    if (!key_ok) return perr(p, DSCKPT_ECORRUPT, "storage key is not a plain printable name");
    uint64_t numel, bytes;
    if (!as_nonneg(it[4], &numel)) return perr(p, DSCKPT_ECORRUPT, "%s: numel is not a non-negative int", shape_msg);
    if (ds_mul_overflow(numel, dsckpt_dtype_size(dt), &bytes))
        return perr(p, DSCKPT_ECORRUPT, "storage '%s' of %llu elements overflows", key->s,
                    (unsigned long long)numel);
    if (pid->n == 6 && it[5]->kind != PK_NONE)
        return perr(p, DSCKPT_EUNSUPPORTED, "storage views (legacy view_metadata) are not supported");
    pk_obj *o;
    MAKE(o, PK_STORAGE);
    o->tensor.storage_key = key->s;
    o->tensor.dtype = dt;
    o->dtype = dt;
    o->tensor.storage_numel = numel;
    o->s = it[3]->s;
    o->slen = it[3]->slen;
    o->args = pid;
    DS_TRY(adopt(p, o, pid));
    *out = o;
    return DSCKPT_OK;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) */
static dsckpt_status rebuild_tensor(parser *p, pk_obj *args, pk_obj *o) {
    if (args->n != 6 && args->n != 7)
        return perr(p, DSCKPT_ECORRUPT, "_rebuild_tensor_v2 expects 6 or 7 arguments, got %zu", args->n);
    pk_obj **a = args->items;
    if (a[0]->kind != PK_STORAGE)
        return perr(p, DSCKPT_ECORRUPT, "_rebuild_tensor_v2: argument 1 is a %s, not a storage",
                    pk_kind_name(a[0]->kind));
    pk_tensor *t = &o->tensor;
    const pk_tensor *s = &a[0]->tensor;
    t->storage_key = s->storage_key;
    t->dtype = s->dtype;
    t->storage_numel = s->storage_numel;
    o->dtype = s->dtype;
    if (!as_nonneg(a[1], &t->offset))
        return perr(p, DSCKPT_ECORRUPT, "_rebuild_tensor_v2: storage offset is not a non-negative int");
    if (a[2]->kind != PK_TUPLE || a[3]->kind != PK_TUPLE || a[2]->n != a[3]->n)
        return perr(p, DSCKPT_ECORRUPT, "_rebuild_tensor_v2: size and stride are not tuples of equal length");
    if (a[2]->n > 16) return perr(p, DSCKPT_EUNSUPPORTED, "tensor of %zu dimensions (at most 16)", a[2]->n);
    t->ndim = (int)a[2]->n;
    bool empty = false;
    for (int d = 0; d < t->ndim; d++) {
        const pk_obj *sz = a[2]->items[d], *st = a[3]->items[d];
        if (sz->kind != PK_INT || st->kind != PK_INT)
            return perr(p, DSCKPT_ECORRUPT, "_rebuild_tensor_v2: size or stride %d is not an int", d);
        if (sz->i < 0) return perr(p, DSCKPT_ECORRUPT, "negative size %lld in dimension %d", (long long)sz->i, d);
        if (st->i < 0)
            return perr(p, DSCKPT_ECORRUPT, "negative stride %lld in dimension %d", (long long)st->i, d);
        t->shape[d] = (uint64_t)sz->i;
        t->stride[d] = st->i;
        if (sz->i == 0) empty = true;
    }
    /* Elements the view touches: 1 + sum((shape-1)*stride), or none if empty. */
    uint64_t extent = empty ? 0 : 1, end;
    for (int d = 0; !empty && d < t->ndim; d++) {
        uint64_t span;
        if (ds_mul_overflow(t->shape[d] - 1, (uint64_t)t->stride[d], &span) || ds_add_overflow(extent, span, &extent))
            return perr(p, DSCKPT_ECORRUPT, "tensor extent overflows");
    }
    if (ds_add_overflow(t->offset, extent, &end) || end > t->storage_numel)
        return perr(p, DSCKPT_ECORRUPT,
                    "tensor needs elements [%llu, %llu + %llu) but storage '%s' has only %llu",
                    (unsigned long long)t->offset, (unsigned long long)t->offset, (unsigned long long)extent,
                    t->storage_key, (unsigned long long)t->storage_numel);
    if (a[4]->kind != PK_BOOL && !(a[4]->kind == PK_INT && (a[4]->i == 0 || a[4]->i == 1)))
        return perr(p, DSCKPT_ECORRUPT, "_rebuild_tensor_v2: requires_grad is not a bool");
    t->requires_grad = a[4]->kind == PK_BOOL ? a[4]->b : a[4]->i != 0;
    if (a[5]->kind != PK_DICT && a[5]->kind != PK_NONE)
        return perr(p, DSCKPT_ECORRUPT, "_rebuild_tensor_v2: backward hooks are a %s", pk_kind_name(a[5]->kind));
    return DSCKPT_OK;
}

/* _rebuild_parameter(tensor, requires_grad, hooks[, state]): the tensor again. */
static dsckpt_status rebuild_parameter(parser *p, pk_obj *args, size_t nargs, pk_obj *o) {
    if (args->n != nargs)
        return perr(p, DSCKPT_ECORRUPT, "%s expects %zu arguments, got %zu", o->name, nargs, args->n);
    pk_obj **a = args->items;
    if (a[0]->kind != PK_TENSOR)
        return perr(p, DSCKPT_ECORRUPT, "%s: argument 1 is a %s, not a tensor", o->name, pk_kind_name(a[0]->kind));
    if (a[1]->kind != PK_BOOL) return perr(p, DSCKPT_ECORRUPT, "%s: requires_grad is not a bool", o->name);
    o->tensor = a[0]->tensor;
    o->tensor.requires_grad = a[1]->b;
    o->dtype = o->tensor.dtype;
    return DSCKPT_OK;
}

/* A value that carries no behaviour: None, bool, int, float, str, bytes. */
static bool plain_value(const pk_obj *o) {
    switch (o->kind) {
    case PK_NONE:
    case PK_BOOL:
    case PK_INT:
    case PK_BIGINT:
    case PK_FLOAT:
    case PK_STR:
    case PK_BYTES: return true;
    default: return false;
    }
}

/* torch._tensor._rebuild_from_type_v2(func, type, args, state): how torch pickles
 * a tensor that carries Python attributes (DeepSpeed's ZeRO-3 flat groups carry
 * `ds_id`): func(*args), converted to `type`, then its __dict__ set from `state`.
 * Accepted, as the tensor func(*args) describes, only when func is
 * torch._utils._rebuild_tensor_v2, type is torch.Tensor (no conversion) and state
 * is a dict of plain values keyed by strings (attributes with no behaviour).
 * Anything else leaves *done false, and the call stays an inert PK_OBJECT. */
static dsckpt_status rebuild_from_type(parser *p, pk_obj *args, pk_obj *o, bool *done) {
    *done = false;
    if (args->n != 4) return DSCKPT_OK;
    pk_obj **a = args->items;
    if (!is_global(a[0], "torch._utils", "_rebuild_tensor_v2") || a[0]->kind != PK_GLOBAL) return DSCKPT_OK;
    if (a[1]->kind != PK_GLOBAL || !is_global(a[1], "torch", "Tensor")) return DSCKPT_OK;
    if (a[2]->kind != PK_TUPLE) return DSCKPT_OK;
    if (a[3]->kind != PK_DICT || a[3]->ordered || a[3]->state) return DSCKPT_OK;
    for (size_t i = 0; i < a[3]->n; i++)
        if (a[3]->keys[i]->kind != PK_STR || !plain_value(a[3]->items[i])) return DSCKPT_OK;
    o->kind = PK_TENSOR;
    DS_TRY(rebuild_tensor(p, a[2], o));
    *done = true;
    return DSCKPT_OK;
}

/* _codecs.encode(str, 'latin1'): the str's code points as bytes. Returns false
 * (leave it opaque) for any other encoding. */
static dsckpt_status codecs_encode(parser *p, const pk_obj *args, pk_obj *o, bool *done) {
    *done = false;
    if (args->n != 2 || args->items[0]->kind != PK_STR || args->items[1]->kind != PK_STR) return DSCKPT_OK;
    const char *enc = args->items[1]->s;
    if (!streq(enc, "latin1") && !streq(enc, "latin-1") && !streq(enc, "latin_1")) return DSCKPT_OK;
    const uint8_t *s = (const uint8_t *)args->items[0]->s;
    size_t n = args->items[0]->slen, m = 0;
    uint8_t *b = pk_arena_alloc(p->doc, n + 1);
    if (!b) return doc_fail(p);
    for (size_t i = 0; i < n;) { /* valid UTF-8 already */
        if (s[i] < 0x80) b[m++] = s[i++];
        else if (s[i] == 0xc2 || s[i] == 0xc3) {
            b[m++] = (uint8_t)(((s[i] & 0x03) << 6) | (s[i + 1] & 0x3f));
            i += 2;
        } else
            return perr(p, DSCKPT_ECORRUPT, "_codecs.encode: character beyond latin1 in a bytes value");
    }
    b[m] = '\0';
    o->kind = PK_BYTES;
    o->s = (char *)b;
    o->slen = m;
    *done = true;
    return DSCKPT_OK;
}

/* REDUCE: callable(*args), evaluated only for allow-listed callables. */
static dsckpt_status reduce(parser *p, pk_obj *fn, pk_obj *args, pk_obj **out) {
    if (fn->kind != PK_GLOBAL)
        return perr(p, DSCKPT_EUNSUPPORTED, "REDUCE on a %s (only globals are callable here)",
                    pk_kind_name(fn->kind));
    if (args->kind != PK_TUPLE)
        return perr(p, DSCKPT_ECORRUPT, "REDUCE arguments are a %s, not a tuple", pk_kind_name(args->kind));
    pk_obj *o;
    MAKE(o, PK_OBJECT);
    o->module = fn->module;
    o->name = fn->name;
    o->args = args;
    o->dtype = DSCKPT_DTYPE_COUNT;
    DS_TRY(adopt(p, o, args));
    pk_obj **a = args->items;
    if (is_global(fn, "torch._utils", "_rebuild_tensor_v2")) {
        o->kind = PK_TENSOR;
        DS_TRY(rebuild_tensor(p, args, o));
    } else if (is_global(fn, "torch._utils", "_rebuild_parameter")) {
        o->kind = PK_TENSOR;
        DS_TRY(rebuild_parameter(p, args, 3, o));
    } else if (is_global(fn, "torch._utils", "_rebuild_parameter_with_state")) {
        o->kind = PK_TENSOR;
        DS_TRY(rebuild_parameter(p, args, 4, o));
    } else if (is_global(fn, "torch._tensor", "_rebuild_from_type_v2")) {
        bool done;
        DS_TRY(rebuild_from_type(p, args, o, &done));
    } else if (is_global(fn, "collections", "OrderedDict")) {
        if (args->n != 0) return perr(p, DSCKPT_EUNSUPPORTED, "OrderedDict with constructor arguments");
        o->kind = PK_DICT;
        o->ordered = true;
    } else if (is_global(fn, "torch", "Size")) {
        if (args->n != 1 || a[0]->kind != PK_TUPLE)
            return perr(p, DSCKPT_ECORRUPT, "torch.Size expects one tuple argument");
        for (size_t i = 0; i < a[0]->n; i++)
            if (a[0]->items[i]->kind != PK_INT)
                return perr(p, DSCKPT_ECORRUPT, "torch.Size: item %zu is a %s, not an int", i,
                            pk_kind_name(a[0]->items[i]->kind));
        o->kind = PK_SIZE;
        o->items = a[0]->items; /* shared, cap 0: copied before any write */
        o->n = a[0]->n;
    } else if (is_builtin(fn, "set") || is_builtin(fn, "frozenset")) {
        if (args->n > 1 || (args->n == 1 && a[0]->kind != PK_LIST && a[0]->kind != PK_TUPLE))
            return perr(p, DSCKPT_ECORRUPT, "%s expects no argument or one list", fn->name);
        o->kind = PK_SET;
        if (args->n == 1) {
            o->items = a[0]->items;
            o->n = a[0]->n;
        }
    } else if (is_builtin(fn, "getattr")) {
        if (args->n != 2 || a[0]->kind != PK_GLOBAL || a[1]->kind != PK_STR || !name_ok(a[1]->s, a[1]->slen))
            return perr(p, DSCKPT_EUNSUPPORTED, "getattr is supported only as getattr(<global>, '<name>')");
        o->kind = PK_ENUM;
        o->module = a[0]->module;
        o->name = a[0]->name;
        o->member = a[1]->s;
        o->i = -1;
        if (is_global(a[0], "deepspeed.runtime.zero.config", "ZeroStageEnum"))
            for (int i = 0; i < 4; i++)
                if (streq(o->member, zero_stage_names[i])) o->i = i;
    } else if (is_global(fn, "deepspeed.runtime.zero.config", "ZeroStageEnum")) {
        if (args->n != 1 || a[0]->kind != PK_INT) return perr(p, DSCKPT_ECORRUPT, "ZeroStageEnum expects (int,)");
        o->kind = PK_ENUM;
        o->i = a[0]->i;
    } else if (is_global(fn, "_codecs", "encode")) {
        bool done;
        DS_TRY(codecs_encode(p, args, o, &done));
    } else if (is_builtin(fn, "bytes") && args->n == 0) {
        o->kind = PK_BYTES;
        o->s = pk_arena_strndup(p->doc, "", 0);
        if (!o->s) return doc_fail(p);
    }
    /* Anything else stays an inert PK_OBJECT naming the callable. */
    *out = o;
    return DSCKPT_OK;
}

static dsckpt_status newobj(parser *p, pk_obj *cls, pk_obj *args, pk_obj **out) {
    if (cls->kind != PK_GLOBAL) return perr(p, DSCKPT_EUNSUPPORTED, "NEWOBJ on a %s", pk_kind_name(cls->kind));
    if (args->kind != PK_TUPLE)
        return perr(p, DSCKPT_ECORRUPT, "NEWOBJ arguments are a %s, not a tuple", pk_kind_name(args->kind));
    pk_obj *o;
    MAKE(o, PK_OBJECT);
    o->module = cls->module;
    o->name = cls->name;
    o->args = args;
    o->newobj = true;
    o->dtype = DSCKPT_DTYPE_COUNT;
    DS_TRY(adopt(p, o, args));
    *out = o;
    return DSCKPT_OK;
}

static dsckpt_status build(parser *p, pk_obj *inst, pk_obj *state) {
    if (inst->kind != PK_OBJECT && !(inst->kind == PK_DICT && inst->ordered))
        return perr(p, DSCKPT_EUNSUPPORTED, "BUILD on a %s", pk_kind_name(inst->kind));
    DS_TRY(check_mutable(p, inst));
    if (inst->state) return perr(p, DSCKPT_ECORRUPT, "second BUILD on the same object");
    DS_TRY(adopt(p, inst, state));
    inst->state = state;
    return DSCKPT_OK;
}

/* ---- the interpreter loop ---- */

static dsckpt_status unsupported(parser *p) {
    return perr(p, DSCKPT_EUNSUPPORTED, "unsupported opcode %s", op_name(p->op));
}

/* One piece: the interpreter's dispatch, one short case per opcode. */
static dsckpt_status run(parser *p, pk_obj **result) {
    pk_doc *d = p->doc;
    for (;;) {
        if (p->pos >= p->len)
            return ds_err(DSCKPT_ECORRUPT, "%s: truncated: data ends at byte %zu before STOP", p->what, p->pos);
        p->op_pos = p->pos;
        p->op = p->data[p->pos++];
        pk_obj *o = NULL, *a = NULL, *b = NULL;
        uint64_t u = 0;
        size_t start = 0, n = 0;
        const char *line = NULL;
        switch (p->op) {
        case OP_PROTO:
            DS_TRY(rd_uint(p, 1, &u));
            if (u > 5) return perr(p, DSCKPT_EVERSION, "unsupported pickle protocol %llu", (unsigned long long)u);
            break;
        case OP_FRAME: /* frames only help buffering; the data is contiguous here */
            DS_TRY(rd_uint(p, 8, &u));
            if (u > p->len - p->pos)
                return perr(p, DSCKPT_ECORRUPT, "frame of %llu bytes exceeds the data", (unsigned long long)u);
            break;
        case OP_STOP:
            if (p->nmarks) return perr(p, DSCKPT_ECORRUPT, "STOP with an unmatched MARK");
            if (p->sp != 1)
                return perr(p, DSCKPT_ECORRUPT, "STOP with %zu objects on the stack (expected 1)", p->sp);
            *result = p->stack[0];
            return DSCKPT_OK;
        case OP_MARK: DS_TRY(push_mark(p)); break;
        case OP_POP:
            if (p->sp > fence(p)) p->sp--;
            else if (p->nmarks) p->nmarks--; /* CPython pops the mark itself */
            else return perr(p, DSCKPT_ECORRUPT, "stack underflow");
            break;
        case OP_POP_MARK:
            DS_TRY(pop_mark(p, &start));
            p->sp = start;
            break;
        case OP_DUP:
            DS_TRY(peek(p, &o));
            DS_TRY(push(p, o));
            break;
        /* ---- scalars ---- */
        case OP_NONE: DS_TRY(leaf(p, &d->none, PK_NONE, false, &o)); DS_TRY(push(p, o)); break;
        case OP_NEWTRUE: DS_TRY(leaf(p, &d->yes, PK_BOOL, true, &o)); DS_TRY(push(p, o)); break;
        case OP_NEWFALSE: DS_TRY(leaf(p, &d->no, PK_BOOL, false, &o)); DS_TRY(push(p, o)); break;
        case OP_BININT1: DS_TRY(rd_uint(p, 1, &u)); DS_TRY(mk_int(p, (int64_t)u, &o)); DS_TRY(push(p, o)); break;
        case OP_BININT2: DS_TRY(rd_uint(p, 2, &u)); DS_TRY(mk_int(p, (int64_t)u, &o)); DS_TRY(push(p, o)); break;
        case OP_BININT:
            DS_TRY(rd_uint(p, 4, &u));
            DS_TRY(mk_int(p, (int64_t)(int32_t)(uint32_t)u, &o));
            DS_TRY(push(p, o));
            break;
        case OP_LONG1:
        case OP_LONG4:
            if (p->op == OP_LONG1) DS_TRY(rd_uint(p, 1, &u));
            else {
                DS_TRY(rd_uint(p, 4, &u));
                if ((int32_t)(uint32_t)u < 0) return perr(p, DSCKPT_ECORRUPT, "negative LONG4 length");
            }
            if (u > p->lim.max_long)
                return perr(p, DSCKPT_ECORRUPT, "integer of %llu bytes exceeds max_long (%zu)",
                            (unsigned long long)u, p->lim.max_long);
            DS_TRY(need(p, u));
            DS_TRY(mk_long(p, p->data + p->pos, (size_t)u, &o));
            p->pos += (size_t)u;
            DS_TRY(push(p, o));
            break;
        case OP_INT:
        case OP_LONG: {
            int64_t v = 0;
            DS_TRY(rd_line(p, 64, &line, &n));
            if (p->op == OP_INT && n == 2 && line[0] == '0' && (line[1] == '0' || line[1] == '1')) {
                DS_TRY(leaf(p, line[1] == '1' ? &d->yes : &d->no, PK_BOOL, line[1] == '1', &o));
            } else {
                if (p->op == OP_LONG && n && line[n - 1] == 'L') n--;
                if (!parse_dec(line, n, &v))
                    return perr(p, DSCKPT_EUNSUPPORTED, "integer text is malformed or beyond 64 bits");
                DS_TRY(mk_int(p, v, &o));
            }
            DS_TRY(push(p, o));
            break;
        }
        case OP_BINFLOAT: {
            DS_TRY(need(p, 8));
            uint64_t bits = 0;
            for (int i = 0; i < 8; i++) bits = bits << 8 | p->data[p->pos + (size_t)i];
            p->pos += 8;
            MAKE(o, PK_FLOAT);
            memcpy(&o->f, &bits, sizeof o->f);
            DS_TRY(push(p, o));
            break;
        }
        case OP_FLOAT: {
            char buf[80];
            DS_TRY(rd_line(p, sizeof buf - 1, &line, &n));
            memcpy(buf, line, n);
            buf[n] = '\0';
            locale_t c = newlocale(LC_ALL_MASK, "C", (locale_t)0);
            if (!c) return perr(p, DSCKPT_ENOMEM, "out of memory (locale)");
            char *end;
            double v = strtod_l(buf, &end, c);
            freelocale(c);
            if (n == 0 || end != buf + n) return perr(p, DSCKPT_ECORRUPT, "malformed float text");
            MAKE(o, PK_FLOAT);
            o->f = v;
            DS_TRY(push(p, o));
            break;
        }
        /* ---- strings ---- */
        case OP_BINUNICODE:
        case OP_SHORT_BINUNICODE:
        case OP_BINUNICODE8:
        case OP_BINSTRING:
        case OP_SHORT_BINSTRING:
        case OP_BINBYTES:
        case OP_SHORT_BINBYTES:
        case OP_BINBYTES8:
        case OP_BYTEARRAY8: {
            int w = 4;
            pk_kind k = PK_STR;
            switch (p->op) {
            case OP_SHORT_BINUNICODE: case OP_SHORT_BINSTRING: w = 1; break;
            case OP_BINUNICODE8: w = 8; break;
            case OP_SHORT_BINBYTES: w = 1; k = PK_BYTES; break;
            case OP_BINBYTES: k = PK_BYTES; break;
            case OP_BINBYTES8: case OP_BYTEARRAY8: w = 8; k = PK_BYTES; break;
            default: break;
            }
            DS_TRY(rd_uint(p, w, &u));
            if (p->op == OP_BINSTRING && (int32_t)(uint32_t)u < 0)
                return perr(p, DSCKPT_ECORRUPT, "negative BINSTRING length");
            DS_TRY(mk_text(p, u, k, &o));
            DS_TRY(push(p, o));
            break;
        }
        case OP_STRING:
        case OP_UNICODE:
        case OP_PERSID:
        case OP_INST:
        case OP_OBJ:
        case OP_EXT1:
        case OP_EXT2:
        case OP_EXT4:
        case OP_NEXT_BUFFER:
        case OP_READONLY_BUFFER: return unsupported(p);
        /* ---- containers ---- */
        case OP_EMPTY_TUPLE: DS_TRY(leaf(p, &d->empty_tuple, PK_TUPLE, false, &o)); DS_TRY(push(p, o)); break;
        case OP_TUPLE:
            DS_TRY(pop_mark(p, &start));
            DS_TRY(mk_tuple(p, start, &o));
            DS_TRY(push(p, o));
            break;
        case OP_TUPLE1:
        case OP_TUPLE2:
        case OP_TUPLE3:
            n = (size_t)(p->op - OP_TUPLE1 + 1);
            if (p->sp - fence(p) < n) return perr(p, DSCKPT_ECORRUPT, "stack underflow");
            DS_TRY(mk_tuple(p, p->sp - n, &o));
            DS_TRY(push(p, o));
            break;
        case OP_EMPTY_LIST: MAKE(o, PK_LIST); DS_TRY(push(p, o)); break;
        case OP_EMPTY_DICT: MAKE(o, PK_DICT); DS_TRY(push(p, o)); break;
        case OP_EMPTY_SET: MAKE(o, PK_SET); DS_TRY(push(p, o)); break;
        case OP_LIST:
        case OP_FROZENSET:
            DS_TRY(pop_mark(p, &start));
            MAKE(o, p->op == OP_LIST ? PK_LIST : PK_SET);
            if (p->op == OP_FROZENSET) {
                o->module = pk_arena_strndup(d, "builtins", 8);
                o->name = pk_arena_strndup(d, "frozenset", 9);
                if (!o->module || !o->name) return doc_fail(p);
            }
            DS_TRY(add_items(p, o, start));
            DS_TRY(push(p, o));
            break;
        case OP_DICT:
            DS_TRY(pop_mark(p, &start));
            MAKE(o, PK_DICT);
            DS_TRY(set_items(p, o, start));
            DS_TRY(push(p, o));
            break;
        case OP_APPEND:
            DS_TRY(pop(p, &a));
            DS_TRY(peek(p, &o));
            if (o->kind != PK_LIST) return perr(p, DSCKPT_ECORRUPT, "APPEND to a %s", pk_kind_name(o->kind));
            DS_TRY(check_mutable(p, o));
            DS_TRY(adopt(p, o, a));
            if (!pk_obj_append(d, o, a)) return doc_fail(p);
            break;
        case OP_APPENDS:
        case OP_ADDITEMS:
            DS_TRY(below_mark(p, &start, &o));
            if (o->kind != (p->op == OP_APPENDS ? PK_LIST : PK_SET))
                return perr(p, DSCKPT_ECORRUPT, "%s to a %s", op_name(p->op), pk_kind_name(o->kind));
            DS_TRY(add_items(p, o, start));
            break;
        case OP_SETITEM:
            DS_TRY(pop(p, &b));
            DS_TRY(pop(p, &a));
            DS_TRY(peek(p, &o));
            if (o->kind != PK_DICT) return perr(p, DSCKPT_ECORRUPT, "SETITEM on a %s", pk_kind_name(o->kind));
            DS_TRY(check_mutable(p, o));
            DS_TRY(adopt(p, o, a));
            DS_TRY(adopt(p, o, b));
            if (!pk_dict_put(d, o, a, b)) return doc_fail(p);
            break;
        case OP_SETITEMS:
            DS_TRY(below_mark(p, &start, &o));
            if (o->kind != PK_DICT) return perr(p, DSCKPT_ECORRUPT, "SETITEMS on a %s", pk_kind_name(o->kind));
            DS_TRY(set_items(p, o, start));
            break;
        /* ---- memo ---- */
        case OP_BINPUT: DS_TRY(rd_uint(p, 1, &u)); DS_TRY(memo_put(p, u)); break;
        case OP_LONG_BINPUT: DS_TRY(rd_uint(p, 4, &u)); DS_TRY(memo_put(p, u)); break;
        case OP_MEMOIZE: DS_TRY(memo_put(p, p->memo_count)); break;
        case OP_BINGET: DS_TRY(rd_uint(p, 1, &u)); DS_TRY(memo_get(p, u)); break;
        case OP_LONG_BINGET: DS_TRY(rd_uint(p, 4, &u)); DS_TRY(memo_get(p, u)); break;
        case OP_PUT:
        case OP_GET: {
            int64_t v = 0;
            DS_TRY(rd_line(p, 32, &line, &n));
            if (!parse_dec(line, n, &v) || v < 0) return perr(p, DSCKPT_ECORRUPT, "malformed memo index");
            DS_TRY(p->op == OP_PUT ? memo_put(p, (uint64_t)v) : memo_get(p, (uint64_t)v));
            break;
        }
        /* ---- globals and objects ---- */
        case OP_GLOBAL: {
            const char *mod = NULL, *name = NULL;
            size_t ml = 0, nl = 0;
            DS_TRY(rd_line(p, 256, &mod, &ml));
            DS_TRY(rd_line(p, 256, &name, &nl));
            DS_TRY(mk_global(p, mod, ml, name, nl, &o));
            DS_TRY(push(p, o));
            break;
        }
        case OP_STACK_GLOBAL:
            DS_TRY(pop(p, &b));
            DS_TRY(pop(p, &a));
            if (a->kind != PK_STR || b->kind != PK_STR)
                return perr(p, DSCKPT_ECORRUPT, "STACK_GLOBAL needs two strings");
            DS_TRY(mk_global(p, a->s, a->slen, b->s, b->slen, &o));
            DS_TRY(push(p, o));
            break;
        case OP_REDUCE:
            DS_TRY(pop(p, &b));
            DS_TRY(pop(p, &a));
            DS_TRY(reduce(p, a, b, &o));
            DS_TRY(push(p, o));
            break;
        case OP_NEWOBJ:
            DS_TRY(pop(p, &b));
            DS_TRY(pop(p, &a));
            DS_TRY(newobj(p, a, b, &o));
            DS_TRY(push(p, o));
            break;
        case OP_NEWOBJ_EX: {
            pk_obj *kw = NULL;
            DS_TRY(pop(p, &kw));
            DS_TRY(pop(p, &b));
            DS_TRY(pop(p, &a));
            if (kw->kind != PK_DICT || kw->n != 0)
                return perr(p, DSCKPT_EUNSUPPORTED, "NEWOBJ_EX with keyword arguments");
            DS_TRY(newobj(p, a, b, &o));
            DS_TRY(push(p, o));
            break;
        }
        case OP_BUILD:
            DS_TRY(pop(p, &b));
            DS_TRY(peek(p, &o));
            DS_TRY(build(p, o, b));
            break;
        case OP_BINPERSID:
            DS_TRY(pop(p, &a));
            DS_TRY(persistent_load(p, a, &o));
            DS_TRY(push(p, o));
            break;
        default:
            return ds_err(DSCKPT_ECORRUPT, "%s: unknown opcode 0x%02x at byte %zu", p->what, (unsigned)p->op,
                          p->op_pos);
        }
    }
}

void pk_limits_default(pk_limits *l) {
    l->max_depth = 1000;
    l->max_memo = (size_t)1 << 20;
    l->max_str = (size_t)64 << 20;
    l->max_long = 64;
    l->max_objects = (size_t)1 << 24;
    l->max_bytes = (size_t)2 << 30;
}

dsckpt_status pk_parse_ex(const uint8_t *data, size_t len, const char *what, const pk_limits *limits,
                          pk_doc **out, pk_obj **root, size_t *consumed) {
    if (out) *out = NULL;
    if (root) *root = NULL;
    if (consumed) *consumed = 0;
    if (!out || !root || (!data && len)) return ds_err(DSCKPT_EINVAL, "pk_parse: bad arguments");
    parser p = {.data = data, .len = len, .what = what ? what : "pickle", .op = -1};
    pk_limits_default(&p.lim);
    if (limits) { /* zero fields keep the default */
        if (limits->max_depth) p.lim.max_depth = limits->max_depth;
        if (limits->max_memo) p.lim.max_memo = limits->max_memo;
        if (limits->max_str) p.lim.max_str = limits->max_str;
        if (limits->max_long) p.lim.max_long = limits->max_long;
        if (limits->max_objects) p.lim.max_objects = limits->max_objects;
        if (limits->max_bytes) p.lim.max_bytes = limits->max_bytes;
    }
    if (p.lim.max_depth > UINT32_MAX - 1) p.lim.max_depth = UINT32_MAX - 1; /* pk_obj.depth is 32-bit */
    p.doc = pk_doc_create(p.lim.max_bytes, p.lim.max_objects);
    if (!p.doc) return ds_err(DSCKPT_ENOMEM, "%s: out of memory", p.what);
    pk_obj *result = NULL;
    dsckpt_status st = run(&p, &result);
    free(p.stack);
    free(p.marks);
    free(p.memo);
    if (st != DSCKPT_OK) {
        pk_doc_free(p.doc);
        return st;
    }
    *out = p.doc;
    *root = result;
    if (consumed) *consumed = p.pos;
    return DSCKPT_OK;
}

dsckpt_status pk_parse(const uint8_t *data, size_t len, const char *what, const pk_limits *limits, pk_doc **out,
                       pk_obj **root) {
    return pk_parse_ex(data, len, what, limits, out, root, NULL);
}
