/*
 * pickle.h — a restricted pickle interpreter for torch.save / DeepSpeed files, and
 * a writer for the same subset. Three files: the object model and its arena
 * (pickle_obj.c), the interpreter (pickle_read.c), the writer (pickle_write.c).
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
 * The result is a graph, not always a tree: memo references (BINGET) make several
 * parents share one object, exactly as in the Python object the pickle describes
 * (tied tensors, repeated key strings). It is always acyclic: a container may not
 * be modified once it is inside another object, and nesting is bounded by
 * max_depth. Walkers that do not memoise should still bound their own work.
 *
 * Allow-list (everything else is opaque): torch._utils._rebuild_tensor_v2,
 * torch.<X>Storage (dtype), collections.OrderedDict, torch.Size, __builtin__.set /
 * builtins.set, __builtin__.getattr / builtins.getattr (enum members by name),
 * deepspeed.runtime.zero.config.ZeroStageEnum,
 * deepspeed.runtime.fp16.loss_scaler.LossScaler / DynamicLossScaler,
 * deepspeed.utils.tensor_fragment.fragment_address, torch.<dtype> (float16, ...),
 * _codecs.encode (bytes), torch._utils._rebuild_parameter, and
 * torch._tensor._rebuild_from_type_v2(_rebuild_tensor_v2, torch.Tensor, args, state)
 * with a state dict of plain values (a tensor with Python attributes, e.g.
 * DeepSpeed's `ds_id`): a PK_TENSOR whose .args keep the four arguments.
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
    PK_OBJECT,  /* anything else built from a global: .module, .name, .args (tuple or NULL), .state (or NULL) */
    PK_STORAGE  /* a persistent-id storage reference: .tensor.storage_key / .dtype / .storage_numel
                   (ndim 0), .s = location ("cpu"), .args = the persistent-id tuple */
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
    /* Bookkeeping (reader and writer). Objects built by REDUCE keep the callable in
     * .module/.name and the argument tuple in .args, so that the writer re-emits
     * them exactly: PK_TENSOR (.name "_rebuild_tensor_v2" or "_rebuild_parameter"),
     * PK_SIZE, PK_SET ("set" / "frozenset"), PK_BYTES (_codecs.encode), PK_ENUM
     * (.args = (class, member) for getattr, (value,) by value). PK_DICT .state holds
     * an OrderedDict's BUILD state (torch state_dict()._metadata). */
    bool newobj;           /* PK_OBJECT: built by NEWOBJ (cls.__new__(cls, *args)), not REDUCE */
    bool sealed;           /* reader: stored inside another object, so no longer modifiable */
    uint32_t depth;        /* reader: 1 + depth of the deepest child */
    size_t cap;            /* allocated slots of .items (and .keys); 0 = not owned */
};

typedef struct pk_limits {
    size_t max_depth;      /* nesting of containers (default 1000) */
    size_t max_memo;       /* memo entries (default 1 << 20) */
    size_t max_str;        /* bytes in one string (default 64 MiB) */
    size_t max_long;       /* bytes of one LONG (default 64) */
    size_t max_objects;    /* objects in total (default 1 << 24) */
    size_t max_bytes;      /* memory of one parse: objects, strings, arrays (default 2 GiB);
                              an object is ~450 bytes, so this, not max_objects, bounds
                              what a small hostile file can make us allocate */
} pk_limits;
/* Fills the defaults. In limits passed to pk_parse, a field of 0 means its default. */
void pk_limits_default(pk_limits *l);

typedef struct pk_doc pk_doc; /* owns every object of one parse */
/* Parses one pickle (up to STOP) from data[0..len). `limits` may be NULL. The
 * root stays valid until pk_doc_free. */
dsckpt_status pk_parse(const uint8_t *data, size_t len, const char *what, const pk_limits *limits, pk_doc **out,
                       pk_obj **root);
/* As pk_parse, and sets *consumed to the bytes read up to and including STOP.
 * Bytes after STOP are left alone (the legacy torch format is several pickles
 * back to back, followed by raw storage data). */
dsckpt_status pk_parse_ex(const uint8_t *data, size_t len, const char *what, const pk_limits *limits,
                          pk_doc **out, pk_obj **root, size_t *consumed);
void pk_doc_free(pk_doc *d);  /* frees every object of the doc; NULL is fine */

/* Name of a kind ("dict", "tensor", ...), for messages. */
const char *pk_kind_name(pk_kind k);

/* Lookup helpers (NULL / false when absent or of another kind; linear scans).
 * Dicts never hold two equal keys: as in Python, a repeated str / bytes / int /
 * bool / float key replaces the value in place (keys of other kinds are never
 * considered equal). */
pk_obj *pk_get(const pk_obj *dict, const char *key);       /* string key */
pk_obj *pk_get_int_key(const pk_obj *dict, int64_t key);    /* integer key */
bool pk_as_int(const pk_obj *o, int64_t *out);              /* PK_INT or PK_BOOL */
const char *pk_as_str(const pk_obj *o);

/* ---- writer ---- */
/* Serialises an object tree (the kinds above; PK_TENSOR as _rebuild_tensor_v2 with
 * a ('storage', <dtype>Storage, key, 'cpu', numel) persistent id) as protocol 2,
 * the way CPython's pickler and torch.save emit it (memoised globals, MARK/SETITEMS
 * batches of 1000, BINPUT after containers). The caller builds trees with the
 * constructors below; `d` owns them.
 *
 * Exactness: the output is what CPython 3's C pickler (protocol 2) and
 * torch.save would write for the Python object the tree describes, so a parsed
 * CPython pickle re-serialises byte for byte (checked on every fixture, and on
 * CPython 3.11 output of the other constructs). Memoisation follows object identity
 * as in CPython: an object reached twice (the same pk_obj pointer) is written once
 * and then fetched with BINGET; two equal strings that are distinct pk_objs are
 * written twice. Globals are memoised by name (CPython has one object per name);
 * for trees built here, tensors share the 'storage' / 'cpu' strings and one key
 * string per storage key, as torch.save does. Enums with .member are written by
 * name, getattr(cls, 'member') (Python >= 3.12, as in the fixtures), without it by
 * value, cls(value) (Python <= 3.11).
 * Bytes use _codecs.encode(latin1 str, 'latin1') (b'' as bytes()), as protocol 2
 * requires. The module 'builtins' is written as '__builtin__'. Nesting deeper than
 * PK_WRITE_MAX_DEPTH is refused (EINVAL). *out is malloc'd; free() it. */
#define PK_WRITE_MAX_DEPTH 4000
pk_doc *pk_doc_new(void);
pk_obj *pk_new(pk_doc *d, pk_kind kind);
pk_obj *pk_new_int(pk_doc *d, int64_t v);
pk_obj *pk_new_float(pk_doc *d, double v);
pk_obj *pk_new_str(pk_doc *d, const char *s);
pk_obj *pk_new_bool(pk_doc *d, bool v);
pk_obj *pk_new_bytes(pk_doc *d, const void *data, size_t len);
/* A copy of `s` owned by `d` (for .module, .name, .member, .tensor.storage_key). */
char *pk_strdup(pk_doc *d, const char *s);
/* The constructors return NULL (with an ENOMEM message) when memory runs out. */
bool pk_list_append(pk_doc *d, pk_obj *list_or_tuple, pk_obj *item);
bool pk_dict_set(pk_doc *d, pk_obj *dict, pk_obj *key, pk_obj *value);
dsckpt_status pk_serialize(const pk_obj *root, uint8_t **out, size_t *len);
/* As pk_serialize, with every storage's key passed through `rename` where its
 * persistent id is written (parsed storages are then re-emitted from their
 * fields). Called in stream order, so a caller that hands out "0", "1", ... at
 * first use numbers storages exactly as torch.save does. `rename` returns the
 * key to write (owned by the caller, valid until pk_serialize_ex returns), or
 * NULL to fail. */
typedef const char *(*pk_key_fn)(void *user, const char *key);
dsckpt_status pk_serialize_ex(const pk_obj *root, pk_key_fn rename, void *user, uint8_t **out, size_t *len);

/* ---- screening (pkscreen.c) ----
 * What the DeepSpeed writer may emit: a pickle it writes refers only to these
 * globals, which are what DeepSpeed and torch.save themselves write (checked on
 * every fixture): torch._utils._rebuild_tensor_v2 / _rebuild_parameter /
 * _rebuild_parameter_with_state, torch._tensor._rebuild_from_type_v2, torch.Tensor,
 * torch.Size, torch.device, torch.<dtype>, torch.<X>Storage,
 * torch.storage.UntypedStorage, torch.nn.parameter.Parameter,
 * collections.OrderedDict, builtins / __builtin__ set, frozenset, getattr, bytes,
 * _codecs.encode, deepspeed.runtime.zero.config.ZeroStageEnum,
 * deepspeed.runtime.fp16.loss_scaler.LossScaler / DynamicLossScaler,
 * deepspeed.utils.tensor_fragment.fragment_address, and argparse.Namespace (the
 * `args` Megatron-DeepSpeed keeps in its client state; it only sets attributes).
 * Anything else (posix.system, builtins.eval, a user's class) is an unknown
 * object: torch.load(weights_only=False), which DeepSpeed uses, would call it. */
bool pk_global_allowed(const char *module, const char *name);

/* Reports every reference to a global outside the allow-list in the graph under
 * `root` (PK_GLOBAL, and the class of PK_OBJECT / PK_ENUM), with where it was
 * found as a key path ("['client']['hook'].args[0]"). `report` (may be NULL) gets
 * each one once; *count the number found.
 * With drop, each dict entry whose key or value holds one is removed (the nearest
 * enclosing entry), so the tree no longer refers to any; an unknown object not
 * inside any dict cannot be dropped (DSCKPT_EUNSUPPORTED). After a drop the
 * dicts' lookup index is stale: only read or serialise the tree afterwards.
 * Shared objects are visited once; work is linear in the graph's size. */
typedef void (*pk_report_fn)(void *user, const char *module, const char *name, const char *path);
dsckpt_status pk_screen(pk_obj *root, bool drop, pk_report_fn report, void *user, size_t *count);

#endif /* DSCKPT_PICKLE_H */
