/*
 * pickle.h — a restricted pickle interpreter for torch.save / DeepSpeed files, and
 * a writer for the same subset.
 *
 * Reader: interprets protocol 2-5 opcodes into an inert object tree. Nothing is
 * ever executed: GLOBAL only names a class or function; REDUCE / NEWOBJ / BUILD on
 * an allow-listed global produce the corresponding value (tensor, OrderedDict,
 * torch.Size, set, enum member, DeepSpeed object with its state); on any other
 * global they produce an opaque PK_OBJECT that records the class name and its
 * arguments, never code. Every length is bounded (nesting depth, memo size,
 * string and integer length, object count) by the limits and by the bytes left;
 * violations are DSCKPT_ECORRUPT naming the file, the byte offset and the opcode.
 *
 * Allow-list (everything else is opaque): torch._utils._rebuild_tensor_v2,
 * torch.<X>Storage (dtype), collections.OrderedDict, torch.Size, __builtin__.set /
 * builtins.set, __builtin__.getattr / builtins.getattr (enum members by name),
 * deepspeed.runtime.zero.config.ZeroStageEnum,
 * deepspeed.runtime.fp16.loss_scaler.LossScaler / DynamicLossScaler,
 * deepspeed.utils.tensor_fragment.fragment_address, torch.<dtype> (float16, ...),
 * _codecs.encode (bytes), torch._utils._rebuild_parameter.
 */
#ifndef DSCKPT_PICKLE_H
#define DSCKPT_PICKLE_H

#include "internal.h"

typedef enum pk_kind {
    PK_NONE = 0,
    PK_BOOL,
    PK_INT,     /* fits int64 (.i); larger LONGs are refused unless within limits -> PK_BIGINT */
    PK_BIGINT,  /* .s holds the little-endian two's-complement bytes, .slen their count */
    PK_FLOAT,
    PK_STR,     /* UTF-8, .s / .slen (NUL-terminated as well) */
    PK_BYTES,
    PK_TUPLE,   /* .items / .n */
    PK_LIST,
    PK_SET,
    PK_DICT,    /* .keys / .items / .n, insertion order; OrderedDict too (.ordered = true) */
    PK_GLOBAL,  /* a bare class/function reference: .module, .name */
    PK_TENSOR,  /* a rebuilt tensor: .tensor */
    PK_DTYPE,   /* torch.float16 etc.: .dtype */
    PK_SIZE,    /* torch.Size: .items (ints) */
    PK_ENUM,    /* enum member: .module, .name (class), .member (name, or NULL) and/or .i (value) */
    PK_OBJECT   /* anything else built from a global: .module, .name, .args (tuple or NULL), .state (or NULL) */
} pk_kind;

typedef struct pk_tensor {
    char *storage_key;     /* "0", "1", ...: the zip member data/<key> */
    dsckpt_dtype dtype;
    uint64_t storage_numel;/* elements in the storage */
    uint64_t offset;       /* storage offset, in elements */
    int ndim;
    uint64_t shape[16];
    int64_t stride[16];
    bool requires_grad;
} pk_tensor;

typedef struct pk_obj pk_obj;
struct pk_obj {
    pk_kind kind;
    bool b;
    bool ordered;          /* PK_DICT from collections.OrderedDict */
    int64_t i;
    double f;
    char *s;
    size_t slen;
    pk_obj **items;
    pk_obj **keys;         /* PK_DICT only */
    size_t n;
    char *module, *name, *member;
    pk_obj *args, *state;
    pk_tensor tensor;
    dsckpt_dtype dtype;
};

typedef struct pk_limits {
    size_t max_depth;      /* nesting of containers (default 1000) */
    size_t max_memo;       /* memo entries (default 1 << 20) */
    size_t max_str;        /* bytes in one string (default 64 MiB) */
    size_t max_long;       /* bytes of one LONG (default 64) */
    size_t max_objects;    /* objects in total (default 1 << 24) */
} pk_limits;
void pk_limits_default(pk_limits *l);

typedef struct pk_doc pk_doc; /* owns every object of one parse */
/* Parses one pickle (up to STOP) from data[0..len). `limits` may be NULL. The
 * root stays valid until pk_doc_free. */
dsckpt_status pk_parse(const uint8_t *data, size_t len, const char *what, const pk_limits *limits, pk_doc **out,
                       pk_obj **root);
void pk_doc_free(pk_doc *d);

/* Lookup helpers (NULL / false when absent or of another kind). */
pk_obj *pk_get(const pk_obj *dict, const char *key);       /* string key */
pk_obj *pk_get_int_key(const pk_obj *dict, int64_t key);    /* integer key */
bool pk_as_int(const pk_obj *o, int64_t *out);              /* PK_INT or PK_BOOL */
const char *pk_as_str(const pk_obj *o);

/* ---- writer ---- */
/* Serialises an object tree (the kinds above; PK_TENSOR as _rebuild_tensor_v2 with
 * a ('storage', <dtype>Storage, key, 'cpu', numel) persistent id) as protocol 2,
 * the way CPython's pickler and torch.save emit it (memoised globals, MARK/SETITEMS
 * batches of 1000, BINPUT after containers). The caller builds trees with the
 * constructors below; `d` owns them. */
pk_doc *pk_doc_new(void);
pk_obj *pk_new(pk_doc *d, pk_kind kind);
pk_obj *pk_new_int(pk_doc *d, int64_t v);
pk_obj *pk_new_float(pk_doc *d, double v);
pk_obj *pk_new_str(pk_doc *d, const char *s);
pk_obj *pk_new_bool(pk_doc *d, bool v);
bool pk_list_append(pk_doc *d, pk_obj *list_or_tuple, pk_obj *item);
bool pk_dict_set(pk_doc *d, pk_obj *dict, pk_obj *key, pk_obj *value);
dsckpt_status pk_serialize(const pk_obj *root, uint8_t **out, size_t *len);

#endif /* DSCKPT_PICKLE_H */
