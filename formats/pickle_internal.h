/*
 * pickle_internal.h — what the three parts of the pickle module share (not a
 * public interface): the opcodes, and the document arena of pickle_obj.c that
 * the interpreter (pickle_read.c) and the writer (pickle_write.c) build on.
 */
#ifndef DSCKPT_PICKLE_INTERNAL_H
#define DSCKPT_PICKLE_INTERNAL_H

#include "pickle.h"

/* ======================================================================== */
/* Opcodes                                                                  */
/* ======================================================================== */

enum {
    OP_MARK = '(', OP_STOP = '.', OP_POP = '0', OP_POP_MARK = '1', OP_DUP = '2', OP_FLOAT = 'F',
    OP_INT = 'I', OP_BININT = 'J', OP_BININT1 = 'K', OP_LONG = 'L', OP_BININT2 = 'M', OP_NONE = 'N',
    OP_PERSID = 'P', OP_BINPERSID = 'Q', OP_REDUCE = 'R', OP_STRING = 'S', OP_BINSTRING = 'T',
    OP_SHORT_BINSTRING = 'U', OP_UNICODE = 'V', OP_BINUNICODE = 'X', OP_APPEND = 'a', OP_BUILD = 'b',
    OP_GLOBAL = 'c', OP_DICT = 'd', OP_EMPTY_DICT = '}', OP_APPENDS = 'e', OP_GET = 'g', OP_BINGET = 'h',
    OP_INST = 'i', OP_LONG_BINGET = 'j', OP_LIST = 'l', OP_EMPTY_LIST = ']', OP_OBJ = 'o', OP_PUT = 'p',
    OP_BINPUT = 'q', OP_LONG_BINPUT = 'r', OP_SETITEM = 's', OP_TUPLE = 't', OP_EMPTY_TUPLE = ')',
    OP_SETITEMS = 'u', OP_BINFLOAT = 'G',
    /* protocol 2 */
    OP_PROTO = 0x80, OP_NEWOBJ = 0x81, OP_EXT1 = 0x82, OP_EXT2 = 0x83, OP_EXT4 = 0x84, OP_TUPLE1 = 0x85,
    OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87, OP_NEWTRUE = 0x88, OP_NEWFALSE = 0x89, OP_LONG1 = 0x8a,
    OP_LONG4 = 0x8b,
    /* protocol 3 */
    OP_BINBYTES = 'B', OP_SHORT_BINBYTES = 'C',
    /* protocol 4 */
    OP_SHORT_BINUNICODE = 0x8c, OP_BINUNICODE8 = 0x8d, OP_BINBYTES8 = 0x8e, OP_EMPTY_SET = 0x8f,
    OP_ADDITEMS = 0x90, OP_FROZENSET = 0x91, OP_NEWOBJ_EX = 0x92, OP_STACK_GLOBAL = 0x93,
    OP_MEMOIZE = 0x94, OP_FRAME = 0x95,
    /* protocol 5 */
    OP_BYTEARRAY8 = 0x96, OP_NEXT_BUFFER = 0x97, OP_READONLY_BUFFER = 0x98
};

/* ======================================================================== */
/* Arena and document                                                       */
/* ======================================================================== */

#define PK_BLOCK_SIZE ((size_t)64 * 1024)
#define PK_ALIGN ((size_t)16)

typedef struct pk_block {
    struct pk_block *next;
    size_t used, cap;
    max_align_t data[]; /* aligned for any object */
} pk_block;

/* Why the last arena allocation failed; the parser turns it into a message. */
enum { FAIL_NONE = 0, FAIL_NOMEM, FAIL_BYTES, FAIL_OBJECTS };

/* One slot of the dict-key index: key `idx` of `dict`. Empty when dict is NULL. */
typedef struct kslot {
    const pk_obj *dict;
    size_t idx;
    uint64_t h;
} kslot;

struct pk_doc {
    pk_block *blocks;
    size_t bytes, max_bytes;  /* arena bytes handed out (plus the key index), and the cap */
    size_t nobjs, max_objs;
    int fail;
    /* Shared immutable leaves: a pickle's None / True / False / () / small ints carry
     * no identity that the writer would memoise, so one object each is enough. */
    pk_obj *none, *yes, *no, *empty_tuple;
    pk_obj *small[256];
    /* Index of every hashable dict key, so that a repeated key replaces the value
     * as in Python, without a quadratic scan. */
    kslot *ktab;
    size_t kcap, kcount;
};

#include <string.h>

static inline bool streq(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

/* Allow-listed names, shared by the interpreter and the writer. */
static const struct {
    const char *name;
    dsckpt_dtype dt;
} storage_types[] = {
    {"FloatStorage", DSCKPT_F32}, {"HalfStorage", DSCKPT_F16},  {"BFloat16Storage", DSCKPT_BF16},
    {"DoubleStorage", DSCKPT_F64}, {"LongStorage", DSCKPT_I64}, {"IntStorage", DSCKPT_I32},
    {"ShortStorage", DSCKPT_I16}, {"CharStorage", DSCKPT_I8},  {"ByteStorage", DSCKPT_U8},
    {"BoolStorage", DSCKPT_BOOL},
};

/* torch.<name> dtype objects; the first spelling of each dtype is the one torch
 * pickles (dtype.__reduce__ returns the canonical name). */
static const struct {
    const char *name;
    dsckpt_dtype dt;
} torch_dtypes[] = {
    {"float16", DSCKPT_F16}, {"bfloat16", DSCKPT_BF16}, {"float32", DSCKPT_F32}, {"float64", DSCKPT_F64},
    {"int64", DSCKPT_I64},   {"int32", DSCKPT_I32},     {"int16", DSCKPT_I16},   {"int8", DSCKPT_I8},
    {"uint8", DSCKPT_U8},    {"bool", DSCKPT_BOOL},     {"uint16", DSCKPT_U16},  {"uint32", DSCKPT_U32},
    {"uint64", DSCKPT_U64},  {"half", DSCKPT_F16},      {"float", DSCKPT_F32},   {"double", DSCKPT_F64},
    {"long", DSCKPT_I64},    {"int", DSCKPT_I32},       {"short", DSCKPT_I16},
};

/* Hashing of the dict key index and the writer's memo table. */
uint64_t pk_mix64(uint64_t x);
uint64_t pk_hash_bytes(const void *p, size_t n);

/* A document with the given caps (NULL when out of memory). */
pk_doc *pk_doc_create(size_t max_bytes, size_t max_objs);
/* Uninitialised arena memory, or NULL with d->fail set. */
void *pk_arena_alloc(pk_doc *d, size_t n);
/* A NUL-terminated arena copy of s[0..n), or NULL with d->fail set. */
char *pk_arena_strndup(pk_doc *d, const void *s, size_t n);
/* A zeroed object of `kind`, counted against max_objects (NULL with d->fail set). */
pk_obj *pk_obj_alloc(pk_doc *d, pk_kind kind);
/* Makes room for `need` items (and keys, for dicts); false with d->fail set. */
bool pk_arr_reserve(pk_doc *d, pk_obj *o, size_t need);
bool pk_obj_append(pk_doc *d, pk_obj *c, pk_obj *item);
/* dict[key] = value; a key equal to an existing one (as Python compares keys)
 * replaces its value. False with d->fail set. */
bool pk_dict_put(pk_doc *d, pk_obj *dict, pk_obj *key, pk_obj *value);

#endif /* DSCKPT_PICKLE_INTERNAL_H */
