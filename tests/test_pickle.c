/*
 * test_pickle.c — the restricted pickle reader and the protocol-2 writer:
 * byte-identical round trips of every fixture data.pkl and of CPython-written
 * vectors (tests/vectors/pickle, made by make_vectors.py), structure checks on
 * real DeepSpeed pickles, trees built with the constructors compared with
 * CPython's bytes, the legacy multi-pickle stream, a catalogue of hostile
 * pickles (each with its status and message), and truncation / mutation sweeps
 * for the sanitizers.
 */
#include "pickle.h"
#include "tutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

static uint8_t *read_vector(const char *name, size_t *len) {
    char rel[512];
    snprintf(rel, sizeof rel, "tests/vectors/pickle/%s", name);
    char *path = tu_src_path(rel);
    uint8_t *data = tu_read(path, len);
    if (!data) fprintf(stderr, "\n  cannot read %s (set DSCKPT_SOURCE_DIR)\n", path);
    free(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    return data;
}

/* Limits that also admit the 256-byte integer in py_containers. */
static const pk_limits *wide_limits(void) {
    static pk_limits l;
    pk_limits_default(&l);
    l.max_long = 1024;
    return &l;
}

/* Parses and re-serialises; returns the malloc'd output. */
static uint8_t *reserialize(const uint8_t *data, size_t len, const char *what, size_t *out_len) {
    pk_doc *d = NULL;
    pk_obj *root = NULL;
    size_t used = 0;
    TU_ASSERT_OK(pk_parse_ex(data, len, what, wide_limits(), &d, &root, &used));
    CU_ASSERT_EQUAL(used, len);
    uint8_t *out = NULL;
    TU_ASSERT_OK(pk_serialize(root, &out, out_len));
    pk_doc_free(d);
    return out;
}

static bool same_bytes(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, const char *what) {
    if (na == nb && memcmp(a, b, na) == 0) return true;
    size_t k = 0;
    while (k < na && k < nb && a[k] == b[k]) k++;
    fprintf(stderr, "\n  %s: output differs at byte %zu (%zu vs %zu bytes)\n", what, k, na, nb);
    return false;
}

/* A growable byte string for hand-written pickles. */
typedef struct pb {
    uint8_t *b;
    size_t n, cap;
} pb;

static void pb_raw(pb *p, const void *s, size_t n) {
    if (p->cap - p->n < n) {
        size_t nc = p->cap ? p->cap : 256;
        while (nc - p->n < n) nc *= 2;
        p->b = realloc(p->b, nc);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p->b);
        p->cap = nc;
    }
    memcpy(p->b + p->n, s, n);
    p->n += n;
}

#define PB(p, lit) pb_raw((p), (lit), sizeof(lit) - 1)

static void pb_byte(pb *p, uint8_t c) { pb_raw(p, &c, 1); }

static void pb_le(pb *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) pb_byte(p, (uint8_t)(v >> (8 * i)));
}

static void pb_str(pb *p, const char *s) {
    pb_byte(p, 'X');
    pb_le(p, strlen(s), 4);
    pb_raw(p, s, strlen(s));
}

static void pb_global(pb *p, const char *mod, const char *name) {
    pb_byte(p, 'c');
    pb_raw(p, mod, strlen(mod));
    pb_byte(p, '\n');
    pb_raw(p, name, strlen(name));
    pb_byte(p, '\n');
}

static void pb_int(pb *p, int64_t v) {
    if (v >= 0 && v < 256) {
        pb_byte(p, 'K');
        pb_byte(p, (uint8_t)v);
    } else {
        pb_byte(p, 'J');
        pb_le(p, (uint64_t)v, 4);
    }
}

/* A tensor pickle: storage of `numel` elements of `cls`, a view with `ndim`
 * dims; `nargs` 5 drops the hooks, 7 adds metadata None. `pid` replaces the
 * persistent id when non-NULL (raw bytes that push one object). */
static void pb_tensor(pb *p, const char *cls, int64_t numel, int64_t offset, int ndim, const int64_t *shape,
                      const int64_t *stride, int nargs, const char *pid) {
    PB(p, "\x80\x02");
    pb_global(p, "torch._utils", "_rebuild_tensor_v2");
    pb_byte(p, '(');
    if (pid) pb_raw(p, pid, strlen(pid));
    else {
        pb_byte(p, '(');
        pb_str(p, "storage");
        pb_global(p, "torch", cls);
        pb_str(p, "0");
        pb_str(p, "cpu");
        pb_int(p, numel);
        pb_byte(p, 't');
    }
    pb_byte(p, 'Q');
    pb_int(p, offset);
    pb_byte(p, '(');
    for (int i = 0; i < ndim; i++) pb_int(p, shape[i]);
    pb_byte(p, 't');
    pb_byte(p, '(');
    for (int i = 0; i < ndim; i++) pb_int(p, stride[i]);
    pb_byte(p, 't');
    pb_byte(p, 0x89);
    if (nargs >= 6) {
        pb_global(p, "collections", "OrderedDict");
        PB(p, ")R");
    }
    if (nargs >= 7) pb_byte(p, 'N');
    PB(p, "tR.");
}

/* Parses a malloc'd exact-size copy (so ASan sees any over-read). */
static dsckpt_status parse_copy(const uint8_t *data, size_t len, const pk_limits *lim, pk_doc **d, pk_obj **root) {
    uint8_t *copy = malloc(len ? len : 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
    if (len) memcpy(copy, data, len);
    dsckpt_status st = pk_parse(copy, len, "hostile", lim, d, root);
    free(copy);
    return st;
}

/* Expects `st` with `needle` in the message, nothing returned. */
static void expect_fail(const char *name, const uint8_t *data, size_t len, const pk_limits *lim,
                        dsckpt_status want, const char *needle) {
    pk_doc *d = (pk_doc *)1;
    pk_obj *root = (pk_obj *)1;
    dsckpt_status st = parse_copy(data, len, lim, &d, &root);
    const char *msg = dsckpt_last_error();
    bool ok = st == want && strstr(msg, needle) && strstr(msg, "hostile");
    if (!ok)
        fprintf(stderr, "\n  %s: got %s '%s', want %s containing '%s'\n", name, dsckpt_status_name(st), msg,
                dsckpt_status_name(want), needle);
    CU_ASSERT(ok);
    CU_ASSERT_PTR_NULL(d);
    CU_ASSERT_PTR_NULL(root);
    if (st == DSCKPT_OK) pk_doc_free(d);
}

static bool is_fixture_vector(const char *name) {
    size_t n = strlen(name);
    return n > 4 && !strcmp(name + n - 4, ".pkl") && name[0] == 'z';
}

/* ---- round trips ---- */

static void test_roundtrip_fixtures(void) {
    char *dir = tu_src_path("tests/vectors/pickle");
    DIR *dh = opendir(dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dh);
    struct dirent *e;
    int count = 0;
    while ((e = readdir(dh))) {
        if (!is_fixture_vector(e->d_name)) continue;
        size_t len, olen;
        uint8_t *data = read_vector(e->d_name, &len);
        uint8_t *out = reserialize(data, len, e->d_name, &olen);
        CU_ASSERT(same_bytes(out, olen, data, len, e->d_name));
        free(out);
        free(data);
        count++;
    }
    closedir(dh);
    free(dir);
    CU_ASSERT_EQUAL(count, 28); /* every data.pkl of fixtures/deepspeed */
}

static void test_roundtrip_cpython(void) {
    static const char *const same[] = {"py_containers.pkl", "py_deepspeed_like.pkl"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        size_t len, olen;
        uint8_t *data = read_vector(same[i], &len);
        uint8_t *out = reserialize(data, len, same[i], &olen);
        CU_ASSERT(same_bytes(out, olen, data, len, same[i]));
        free(out);
        free(data);
    }
    /* Protocol 4 (FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE, EMPTY_SET,
     * ADDITEMS, FROZENSET, SHORT_BINBYTES) comes out as CPython's protocol 2. */
    size_t l4, l2, olen;
    uint8_t *p4 = read_vector("py_containers_p4.pkl", &l4);
    uint8_t *p2 = read_vector("py_containers.pkl", &l2);
    uint8_t *out = reserialize(p4, l4, "p4", &olen);
    CU_ASSERT(same_bytes(out, olen, p2, l2, "py_containers_p4 -> protocol 2"));
    free(out);
    free(p4);
    free(p2);
}

/* ---- structure ---- */

static void check_tensor(const pk_obj *t, dsckpt_dtype dt, const char *key, uint64_t numel, uint64_t offset, int ndim,
                         uint64_t dim0, bool rg) {
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL_FATAL(t->kind, PK_TENSOR);
    CU_ASSERT_EQUAL(t->tensor.dtype, dt);
    CU_ASSERT_STRING_EQUAL(t->tensor.storage_key, key);
    CU_ASSERT_EQUAL(t->tensor.storage_numel, numel);
    CU_ASSERT_EQUAL(t->tensor.offset, offset);
    CU_ASSERT_EQUAL(t->tensor.ndim, ndim);
    if (ndim > 0) CU_ASSERT_EQUAL(t->tensor.shape[0], dim0);
    CU_ASSERT_EQUAL(t->tensor.requires_grad, rg);
}

/* The optimizer pickle's enum, counts and paddings. */
static void optim_enum_and_counts(pk_obj *osd) {
    pk_obj *zs = pk_get(osd, "zero_stage");
    CU_ASSERT_PTR_NOT_NULL_FATAL(zs);
    CU_ASSERT_EQUAL(zs->kind, PK_ENUM);
    CU_ASSERT_STRING_EQUAL(zs->module, "deepspeed.runtime.zero.config");
    CU_ASSERT_STRING_EQUAL(zs->name, "ZeroStageEnum");
    CU_ASSERT_STRING_EQUAL(zs->member, "gradients");
    CU_ASSERT_EQUAL(zs->i, 2);

    pk_obj *pc = pk_get(osd, "partition_count");
    CU_ASSERT_PTR_NOT_NULL_FATAL(pc);
    CU_ASSERT_EQUAL_FATAL(pc->kind, PK_LIST);
    CU_ASSERT_EQUAL_FATAL(pc->n, 2);
    int64_t v = 0;
    CU_ASSERT(pk_as_int(pc->items[0], &v) && v == 4);
    pk_obj *gp = pk_get(osd, "group_paddings");
    CU_ASSERT(gp && gp->n == 2 && pk_as_int(gp->items[1], &v) && v == 6);
    /* Lookups of the wrong kind find nothing. */
    CU_ASSERT_PTR_NULL(pk_get(zs, "x"));
    CU_ASSERT_PTR_NULL(pk_as_str(pc));
}

/* The optimizer pickle's tensors: fp32 partitions, Adam state, its storage. */
static void optim_tensors(pk_obj *osd) {
    pk_obj *fp32 = pk_get(osd, "single_partition_of_fp32_groups");
    CU_ASSERT_PTR_NOT_NULL_FATAL(fp32);
    CU_ASSERT_EQUAL_FATAL(fp32->n, 2);
    check_tensor(fp32->items[0], DSCKPT_F32, "6", 20528, 0, 1, 20528, true);
    check_tensor(fp32->items[1], DSCKPT_F32, "7", 452, 0, 1, 446, true); /* padding stripped view */
    CU_ASSERT_EQUAL(fp32->items[1]->tensor.stride[0], 1);
    CU_ASSERT_STRING_EQUAL(fp32->items[0]->name, "_rebuild_tensor_v2");

    pk_obj *st = pk_get(pk_get(osd, "base_optimizer_state"), "state");
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    pk_obj *g1 = pk_get_int_key(st, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g1);
    check_tensor(pk_get(g1, "step"), DSCKPT_F32, "3", 1, 0, 0, 0, false);
    check_tensor(pk_get(g1, "exp_avg"), DSCKPT_F32, "4", 452, 0, 1, 452, false);
    CU_ASSERT_PTR_NULL(pk_get_int_key(st, 2));
    /* The storage behind a tensor: the persistent-id record. */
    const pk_obj *sto = pk_get(g1, "exp_avg")->args->items[0];
    CU_ASSERT_EQUAL(sto->kind, PK_STORAGE);
    CU_ASSERT_STRING_EQUAL(sto->s, "cpu");
    CU_ASSERT_EQUAL(sto->args->n, 5);
}

/* The optimizer pickle's objects: the loss scaler and the fragment addresses. */
static void optim_objects(pk_obj *osd) {
    pk_obj *ls = pk_get(osd, "loss_scaler");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ls);
    CU_ASSERT_EQUAL(ls->kind, PK_OBJECT);
    CU_ASSERT(ls->newobj);
    CU_ASSERT_STRING_EQUAL(ls->module, "deepspeed.runtime.fp16.loss_scaler");
    CU_ASSERT_STRING_EQUAL(ls->name, "LossScaler");
    CU_ASSERT_EQUAL(pk_get(ls->state, "cur_scale")->f, 1.0);
    CU_ASSERT_EQUAL(pk_get(ls->state, "dynamic")->kind, PK_BOOL);

    pk_obj *psm = pk_get(osd, "param_slice_mappings");
    CU_ASSERT_PTR_NOT_NULL_FATAL(psm);
    CU_ASSERT_EQUAL_FATAL(psm->n, 2);
    CU_ASSERT(psm->items[0]->ordered);
    pk_obj *fa = pk_get(psm->items[0], "blocks.0.fc2.weight");
    CU_ASSERT_PTR_NOT_NULL_FATAL(fa);
    CU_ASSERT_EQUAL(fa->kind, PK_OBJECT);
    CU_ASSERT_STRING_EQUAL(fa->name, "fragment_address");
    int64_t v = 0;
    CU_ASSERT(pk_as_int(pk_get(fa->state, "numel"), &v) && v == 2368);
    CU_ASSERT(pk_as_int(pk_get(fa->state, "start"), &v) && v == 4784);
    /* Memo identity is kept: every fragment_address state uses one 'numel' key. */
    pk_obj *fb = pk_get(psm->items[1], "ln_f.bias");
    CU_ASSERT_PTR_NOT_NULL_FATAL(fb);
    CU_ASSERT_PTR_EQUAL(fa->state->keys[0], fb->state->keys[0]);
}

static void test_structure_optim(void) {
    size_t len;
    uint8_t *data = read_vector("z2_ws4_fp32_zero_pp_rank_3_mp_rank_00_optim_states.pkl", &len);
    pk_doc *d = NULL;
    pk_obj *root = NULL;
    TU_ASSERT_OK(pk_parse(data, len, "optim", NULL, &d, &root));
    CU_ASSERT_EQUAL_FATAL(root->kind, PK_DICT);
    CU_ASSERT_FALSE(root->ordered);
    pk_obj *osd = pk_get(root, "optimizer_state_dict");
    CU_ASSERT_PTR_NOT_NULL_FATAL(osd);
    CU_ASSERT_STRING_EQUAL(pk_as_str(pk_get(root, "ds_version")), "0.14.5");
    optim_enum_and_counts(osd);
    optim_tensors(osd);
    optim_objects(osd);
    CU_ASSERT_PTR_NULL(pk_get(osd, "no such key"));
    int64_t v = 0;
    CU_ASSERT_FALSE(pk_as_int(NULL, &v));
    pk_doc_free(d);
    free(data);
}

static void test_structure_model(void) {
    size_t len;
    uint8_t *data = read_vector("z2_ws4_bf16_edge_mp_rank_00_model_states.pkl", &len);
    pk_doc *d = NULL;
    pk_obj *root = NULL;
    TU_ASSERT_OK(pk_parse(data, len, "model", NULL, &d, &root));
    pk_obj *module = pk_get(root, "module");
    CU_ASSERT_PTR_NOT_NULL_FATAL(module);
    CU_ASSERT(module->kind == PK_DICT && module->ordered);
    CU_ASSERT(module->n > 0);
    for (size_t i = 0; i < module->n; i++) {
        CU_ASSERT_EQUAL(module->keys[i]->kind, PK_STR);
        CU_ASSERT_EQUAL(module->items[i]->kind, PK_TENSOR);
    }
    check_tensor(pk_get(module, "pos"), DSCKPT_BF16, "0", 1808, 0, 2, 19, false);
    /* state_dict()._metadata arrives as the OrderedDict's BUILD state. */
    CU_ASSERT_PTR_NOT_NULL_FATAL(module->state);
    CU_ASSERT_PTR_NOT_NULL(pk_get(module->state, "_metadata"));
    pk_obj *shapes = pk_get(root, "param_shapes");
    CU_ASSERT_PTR_NOT_NULL_FATAL(shapes);
    CU_ASSERT_EQUAL_FATAL(shapes->kind, PK_LIST);
    pk_obj *emb = pk_get(shapes->items[0], "embed.weight");
    CU_ASSERT_PTR_NOT_NULL_FATAL(emb);
    CU_ASSERT_EQUAL(emb->kind, PK_SIZE);
    CU_ASSERT_EQUAL_FATAL(emb->n, 2);
    int64_t v = 0;
    CU_ASSERT(pk_as_int(emb->items[0], &v) && v == 1000);
    CU_ASSERT(pk_as_int(emb->items[1], &v) && v == 64);
    pk_obj *sp = pk_get(root, "sparse_tensor_module_names");
    CU_ASSERT(sp && sp->kind == PK_SET && sp->n == 0);
    CU_ASSERT_EQUAL(pk_get(root, "optimizer")->kind, PK_NONE);
    pk_doc_free(d);
    free(data);
}

static void test_structure_cpython(void) {
    size_t len;
    uint8_t *data = read_vector("py_deepspeed_like.pkl", &len);
    pk_doc *d = NULL;
    pk_obj *root = NULL;
    TU_ASSERT_OK(pk_parse(data, len, "py", NULL, &d, &root));
    pk_obj *osd = pk_get(root, "optimizer_state_dict");
    CU_ASSERT_PTR_NOT_NULL_FATAL(osd);
    pk_obj *ls = pk_get(osd, "loss_scaler");
    CU_ASSERT_STRING_EQUAL(ls->name, "DynamicLossScaler");
    pk_obj *dt = pk_get(ls->state, "dtype");
    CU_ASSERT(dt && dt->kind == PK_DTYPE && dt->dtype == DSCKPT_F16);
    dt = pk_get(osd, "dtype");
    CU_ASSERT(dt && dt->kind == PK_DTYPE && dt->dtype == DSCKPT_BF16);
    pk_obj *zs = pk_get(osd, "zero_stage");
    CU_ASSERT(zs->kind == PK_ENUM && zs->i == 2);
    CU_ASSERT_PTR_EQUAL(pk_get(osd, "zero_stage_again"), zs);
    pk_obj *by_value = pk_get(osd, "other_stage");
    CU_ASSERT(by_value->kind == PK_ENUM && by_value->member == NULL && by_value->i == 3);
    pk_obj *blob = pk_get(osd, "blob");
    CU_ASSERT(blob && blob->kind == PK_BYTES && blob->slen == 3 && !memcmp(blob->s, "\x01\x02\xfe", 3));
    pk_obj *sc = pk_get(osd, "scalar");
    check_tensor(sc, DSCKPT_I64, "1", 1, 0, 0, 0, false);
    pk_obj *em = pk_get(osd, "empty");
    check_tensor(em, DSCKPT_BF16, "2", 10, 10, 2, 0, false); /* empty view at the very end */
    pk_obj *g = pk_get(osd, "single_partition_of_fp32_groups");
    check_tensor(g->items[0], DSCKPT_F32, "0", 24, 0, 2, 2, true);
    check_tensor(g->items[1], DSCKPT_F32, "0", 24, 6, 1, 18, false);
    /* Shared storage: both tensors name the same key string object. */
    CU_ASSERT_PTR_EQUAL(g->items[0]->tensor.storage_key, g->items[1]->tensor.storage_key);
    pk_doc_free(d);
    free(data);

    /* Python dict semantics for repeated keys: 1 and True are one key. */
    data = read_vector("py_containers.pkl", &len);
    TU_ASSERT_OK(pk_parse(data, len, "py", wide_limits(), &d, &root));
    pk_obj *keys = pk_get(root, "keys");
    CU_ASSERT_PTR_NOT_NULL_FATAL(keys);
    CU_ASSERT_EQUAL(keys->n, 6);
    CU_ASSERT_STRING_EQUAL(pk_as_str(pk_get_int_key(keys, 1)), "bool");
    pk_obj *ints = pk_get(root, "ints");
    CU_ASSERT_EQUAL(ints->items[13]->kind, PK_INT);
    CU_ASSERT_EQUAL(ints->items[13]->i, INT64_MIN);
    CU_ASSERT_EQUAL(ints->items[14]->kind, PK_BIGINT); /* 2**63 */
    CU_ASSERT_EQUAL(ints->items[14]->slen, 9);
    pk_obj *floats = pk_get(root, "floats");
    CU_ASSERT(isnan(floats->items[6]->f));
    CU_ASSERT(signbit(floats->items[1]->f));
    pk_obj *strs = pk_get(root, "strs");
    CU_ASSERT_EQUAL(strs->items[5]->slen, 10); /* NUL inside */
    pk_obj *fs = pk_get(root, "frozenset");
    CU_ASSERT(fs->kind == PK_SET && fs->n == 1 && !strcmp(fs->name, "frozenset"));
    pk_doc_free(d);
    free(data);
}

/* ---- trees built with the constructors ---- */

static pk_obj *tensor(pk_doc *d, dsckpt_dtype dt, const char *key, uint64_t numel, uint64_t offset, int ndim,
                      const uint64_t *shape, const int64_t *stride, bool rg) {
    pk_obj *t = pk_new(d, PK_TENSOR);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    t->tensor.dtype = dt;
    t->tensor.storage_key = pk_strdup(d, key);
    t->tensor.storage_numel = numel;
    t->tensor.offset = offset;
    t->tensor.ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        t->tensor.shape[i] = shape[i];
        t->tensor.stride[i] = stride[i];
    }
    t->tensor.requires_grad = rg;
    return t;
}

static pk_obj *object(pk_doc *d, const char *module, const char *name) {
    pk_obj *o = pk_new(d, PK_OBJECT);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    o->module = pk_strdup(d, module);
    o->name = pk_strdup(d, name);
    o->newobj = true;
    o->state = pk_new(d, PK_DICT);
    return o;
}

static pk_obj *size_of(pk_doc *d, int n, const int64_t *v) {
    pk_obj *s = pk_new(d, PK_SIZE);
    for (int i = 0; i < n; i++) CU_ASSERT(pk_list_append(d, s, pk_new_int(d, v[i])));
    return s;
}

/* Key strings shared across the deepspeed_like() tree, as Python's interned
 * identifiers are: the sharing is what makes the memo references match. */
typedef struct like_keys {
    pk_obj *cur, *dyn, *dtype, *w, *b, *numel, *start;
} like_keys;

/* deepspeed_like(): the loss scalers and the ZeRO stage enums. */
static void like_scalers_enums(pk_doc *d, pk_obj *osd, const like_keys *k) {
    pk_obj *dls = object(d, "deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler");
    CU_ASSERT(pk_dict_set(d, dls->state, k->cur, pk_new_float(d, 65536.0)));
    CU_ASSERT(pk_dict_set(d, dls->state, k->dyn, pk_new_bool(d, true)));
    pk_obj *f16 = pk_new(d, PK_DTYPE);
    f16->dtype = DSCKPT_F16;
    CU_ASSERT(pk_dict_set(d, dls->state, k->dtype, f16));
    CU_ASSERT(pk_dict_set(d, osd, pk_new_str(d, "loss_scaler"), dls));
    pk_obj *ls = object(d, "deepspeed.runtime.fp16.loss_scaler", "LossScaler");
    CU_ASSERT(pk_dict_set(d, ls->state, k->cur, pk_new_float(d, 1.0)));
    CU_ASSERT(pk_dict_set(d, ls->state, k->dyn, pk_new_bool(d, false)));
    CU_ASSERT(pk_dict_set(d, osd, pk_new_str(d, "static_scaler"), ls));

    pk_obj *zs = pk_new(d, PK_ENUM);
    zs->module = pk_strdup(d, "deepspeed.runtime.zero.config");
    zs->name = pk_strdup(d, "ZeroStageEnum");
    zs->member = pk_strdup(d, "gradients");
    CU_ASSERT(pk_dict_set(d, osd, pk_new_str(d, "zero_stage"), zs));
    CU_ASSERT(pk_dict_set(d, osd, pk_new_str(d, "zero_stage_again"), zs));
    pk_obj *zv = pk_new(d, PK_ENUM);
    zv->module = zs->module;
    zv->name = zs->name;
    zv->i = 3;
    CU_ASSERT(pk_dict_set(d, osd, pk_new_str(d, "other_stage"), zv));
}

/* deepspeed_like(): tensors (views, a scalar, an empty one) and the fragment
 * addresses. */
static void like_tensors_mappings(pk_doc *d, pk_obj *osd, const like_keys *k) {
    pk_obj *groups = pk_new(d, PK_LIST);
    CU_ASSERT(pk_list_append(d, groups, tensor(d, DSCKPT_F32, "0", 24, 0, 2, (uint64_t[]){2, 3}, (int64_t[]){3, 1}, true)));
    CU_ASSERT(pk_list_append(d, groups, tensor(d, DSCKPT_F32, "0", 24, 6, 1, (uint64_t[]){18}, (int64_t[]){1}, false)));
    CU_ASSERT(pk_dict_set(d, osd, pk_new_str(d, "single_partition_of_fp32_groups"), groups));
    CU_ASSERT(pk_dict_set(d, osd, pk_new_str(d, "scalar"), tensor(d, DSCKPT_I64, "1", 1, 0, 0, NULL, NULL, false)));
    CU_ASSERT(pk_dict_set(d, osd, pk_new_str(d, "empty"),
                          tensor(d, DSCKPT_BF16, "2", 10, 10, 2, (uint64_t[]){0, 4}, (int64_t[]){4, 1}, false)));
    CU_ASSERT(pk_dict_set(d, osd, pk_new_str(d, "view"),
                          tensor(d, DSCKPT_BF16, "2", 10, 1, 2, (uint64_t[]){3, 3}, (int64_t[]){3, 1}, false)));

    pk_obj *psm = pk_new(d, PK_LIST), *od = pk_new(d, PK_DICT);
    od->ordered = true;
    pk_obj *fa = object(d, "deepspeed.utils.tensor_fragment", "fragment_address");
    CU_ASSERT(pk_dict_set(d, fa->state, k->numel, pk_new_int(d, 6)));
    CU_ASSERT(pk_dict_set(d, fa->state, k->start, pk_new_int(d, 0)));
    CU_ASSERT(pk_dict_set(d, od, k->w, fa));
    fa = object(d, "deepspeed.utils.tensor_fragment", "fragment_address");
    CU_ASSERT(pk_dict_set(d, fa->state, k->numel, pk_new_int(d, 18)));
    CU_ASSERT(pk_dict_set(d, fa->state, k->start, pk_new_int(d, 6)));
    CU_ASSERT(pk_dict_set(d, od, k->b, fa));
    CU_ASSERT(pk_list_append(d, psm, od));
    CU_ASSERT(pk_dict_set(d, osd, pk_new_str(d, "param_slice_mappings"), psm));
}

/* deepspeed_like(): counts, torch.Size shapes, an empty set, a dtype, bytes. */
static void like_shapes_misc(pk_doc *d, pk_obj *osd, const like_keys *k) {
    pk_obj *pc = pk_new(d, PK_LIST);
    CU_ASSERT(pk_list_append(d, pc, pk_new_int(d, 2)));
    CU_ASSERT(pk_dict_set(d, osd, pk_new_str(d, "partition_count"), pc));
    pk_obj *shapes = pk_new(d, PK_LIST), *sd = pk_new(d, PK_DICT);
    sd->ordered = true;
    CU_ASSERT(pk_dict_set(d, sd, k->w, size_of(d, 2, (int64_t[]){2, 3})));
    CU_ASSERT(pk_dict_set(d, sd, k->b, size_of(d, 1, (int64_t[]){18})));
    CU_ASSERT(pk_list_append(d, shapes, sd));
    CU_ASSERT(pk_dict_set(d, osd, pk_new_str(d, "param_shapes"), shapes));
    CU_ASSERT(pk_dict_set(d, osd, pk_new_str(d, "sparse_tensor_module_names"), pk_new(d, PK_SET)));
    pk_obj *bf16 = pk_new(d, PK_DTYPE);
    bf16->dtype = DSCKPT_BF16;
    CU_ASSERT(pk_dict_set(d, osd, k->dtype, bf16));
    CU_ASSERT(pk_dict_set(d, osd, pk_new_str(d, "blob"), pk_new_bytes(d, "\x01\x02\xfe", 3)));
}

/* The object make_vectors.py's deepspeed_like() pickles, built here from
 * scratch: the writer must produce CPython's bytes (tensors via the synthetic
 * persistent ids, enums both ways, objects by NEWOBJ + BUILD, bytes by
 * _codecs.encode, set([]), torch.Size). Key strings that Python shares (interned
 * identifiers) are shared here too, which is what makes the memo references match. */
static void test_build_matches_cpython(void) {
    pk_doc *d = pk_doc_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    like_keys k;
    k.cur = pk_new_str(d, "cur_scale");
    k.dyn = pk_new_str(d, "dynamic");
    k.dtype = pk_new_str(d, "dtype");
    k.w = pk_new_str(d, "w");
    k.b = pk_new_str(d, "b");
    k.numel = pk_new_str(d, "numel");
    k.start = pk_new_str(d, "start");
    pk_obj *osd = pk_new(d, PK_DICT);
    like_scalers_enums(d, osd, &k);
    like_tensors_mappings(d, osd, &k);
    like_shapes_misc(d, osd, &k);
    pk_obj *root = pk_new(d, PK_DICT);
    CU_ASSERT(pk_dict_set(d, root, pk_new_str(d, "optimizer_state_dict"), osd));
    CU_ASSERT(pk_dict_set(d, root, pk_new_str(d, "ds_version"), pk_new_str(d, "0.14.5")));

    uint8_t *out = NULL;
    size_t olen = 0, len = 0;
    TU_ASSERT_OK(pk_serialize(root, &out, &olen));
    uint8_t *want = read_vector("py_deepspeed_like.pkl", &len);
    CU_ASSERT(same_bytes(out, olen, want, len, "built tree vs CPython"));
    free(want);
    free(out);
    pk_doc_free(d);
}

/* Writer shapes checked against CPython's own bytes for the same objects. */

/* Self-referencing containers; returns the list l = [1, l]. */
static pk_obj *writer_cycles(pk_doc *d) {
    uint8_t *out = NULL;
    size_t n = 0;
    /* l = [1]; l.append(l) */
    pk_obj *l = pk_new(d, PK_LIST);
    CU_ASSERT(pk_list_append(d, l, pk_new_int(d, 1)));
    CU_ASSERT(pk_list_append(d, l, l));
    TU_ASSERT_OK(pk_serialize(l, &out, &n));
    static const char self_list[] = "\x80\x02]q\x00(K\x01h\x00" "e.";
    CU_ASSERT(same_bytes(out, n, (const uint8_t *)self_list, sizeof self_list - 1, "self list"));
    free(out);

    /* t = ([],); t[0].append(t): the tuple is memoised while its items are written */
    pk_obj *t = pk_new(d, PK_TUPLE), *inner = pk_new(d, PK_LIST);
    CU_ASSERT(pk_list_append(d, t, inner));
    CU_ASSERT(pk_list_append(d, inner, t));
    TU_ASSERT_OK(pk_serialize(t, &out, &n));
    static const char cyc_tuple[] = "\x80\x02]q\x00h\x00\x85q\x01" "a0h\x01.";
    CU_ASSERT(same_bytes(out, n, (const uint8_t *)cyc_tuple, sizeof cyc_tuple - 1, "cyclic tuple"));
    free(out);
    return l;
}

/* Bytes objects and integers at every width boundary. */
static void writer_bytes_ints(pk_doc *d) {
    uint8_t *out = NULL;
    size_t n = 0;
    /* [b'a', b'b', b''] shares the 'latin1' string and the encode global */
    pk_obj *bl = pk_new(d, PK_LIST);
    CU_ASSERT(pk_list_append(d, bl, pk_new_bytes(d, "a", 1)));
    CU_ASSERT(pk_list_append(d, bl, pk_new_bytes(d, "b", 1)));
    CU_ASSERT(pk_list_append(d, bl, pk_new_bytes(d, "", 0)));
    TU_ASSERT_OK(pk_serialize(bl, &out, &n));
    static const char bytes_list[] =
        "\x80\x02]q\x00(c_codecs\nencode\nq\x01X\x01\x00\x00\x00" "aq\x02X\x06\x00\x00\x00latin1q\x03\x86q\x04"
        "Rq\x05h\x01X\x01\x00\x00\x00" "bq\x06h\x03\x86q\x07Rq\x08" "c__builtin__\nbytes\nq\t)Rq\ne.";
    CU_ASSERT(same_bytes(out, n, (const uint8_t *)bytes_list, sizeof bytes_list - 1, "bytes list"));
    free(out);

    /* ints at every width boundary, as CPython writes them */
    pk_obj *il = pk_new(d, PK_LIST);
    static const int64_t iv[] = {-1, -300, 255, 256, 65535, 65536, INT32_MAX, (int64_t)INT32_MAX + 1, INT32_MIN,
                                 (int64_t)INT32_MIN - 1};
    for (size_t i = 0; i < sizeof iv / sizeof iv[0]; i++) CU_ASSERT(pk_list_append(d, il, pk_new_int(d, iv[i])));
    TU_ASSERT_OK(pk_serialize(il, &out, &n));
    static const char int_list[] =
        "\x80\x02]q\x00(J\xff\xff\xff\xffJ\xd4\xfe\xff\xffK\xffM\x00\x01M\xff\xffJ\x00\x00\x01\x00J\xff\xff\xff\x7f"
        "\x8a\x05\x00\x00\x00\x80\x00J\x00\x00\x00\x80\x8a\x05\xff\xff\xff\x7f\xff" "e.";
    CU_ASSERT(same_bytes(out, n, (const uint8_t *)int_list, sizeof int_list - 1, "int list"));
    free(out);
}

/* Writer refusals: NULL item, a tensor dtype torch has no storage class for,
 * nesting beyond PK_WRITE_MAX_DEPTH, a tuple that contains itself. */
static void writer_refusals(pk_doc *d) {
    uint8_t stale = 0, *out = &stale; /* a failed pk_serialize must reset it */
    size_t n = 0;
    pk_obj *bad = pk_new(d, PK_LIST);
    CU_ASSERT(pk_list_append(d, bad, pk_new(d, PK_NONE)));
    bad->items[0] = NULL;
    CU_ASSERT_EQUAL(pk_serialize(bad, &out, &n), DSCKPT_EINVAL);
    CU_ASSERT_PTR_NULL(out);
    pk_obj *u16 = tensor(d, DSCKPT_U16, "0", 4, 0, 1, (uint64_t[]){4}, (int64_t[]){1}, false);
    CU_ASSERT_EQUAL(pk_serialize(u16, &out, &n), DSCKPT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "storage type"));
    pk_obj *deep = pk_new(d, PK_LIST);
    for (int i = 0; i < PK_WRITE_MAX_DEPTH + 10; i++) {
        pk_obj *up = pk_new(d, PK_LIST);
        CU_ASSERT_FATAL(pk_list_append(d, up, deep));
        deep = up;
    }
    CU_ASSERT_EQUAL(pk_serialize(deep, &out, &n), DSCKPT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "deeper"));
    pk_obj *selft = pk_new(d, PK_TUPLE);
    CU_ASSERT(pk_list_append(d, selft, selft));
    CU_ASSERT_EQUAL(pk_serialize(selft, &out, &n), DSCKPT_EINVAL);
}

/* pk_dict_set replaces an equal key in place (1 == True == 1.0); l is a list. */
static void dict_set_replaces(pk_doc *d, pk_obj *l) {
    pk_obj *dict = pk_new(d, PK_DICT);
    CU_ASSERT(pk_dict_set(d, dict, pk_new_int(d, 1), pk_new_str(d, "a")));
    CU_ASSERT(pk_dict_set(d, dict, pk_new_str(d, "k"), pk_new_str(d, "b")));
    CU_ASSERT(pk_dict_set(d, dict, pk_new_bool(d, true), pk_new_str(d, "c")));
    CU_ASSERT(pk_dict_set(d, dict, pk_new_float(d, 1.0), pk_new_str(d, "d")));
    CU_ASSERT(pk_dict_set(d, dict, pk_new_str(d, "k"), pk_new_str(d, "e")));
    CU_ASSERT_EQUAL(dict->n, 2);
    CU_ASSERT_STRING_EQUAL(pk_as_str(pk_get_int_key(dict, 1)), "d");
    CU_ASSERT_STRING_EQUAL(pk_as_str(pk_get(dict, "k")), "e");
    CU_ASSERT_FALSE(pk_dict_set(d, l, dict, dict)); /* not a dict */
    CU_ASSERT_FALSE(pk_list_append(d, dict, l));    /* not a list */
}

static void test_writer_cpython_shapes(void) {
    pk_doc *d = pk_doc_new();
    pk_obj *l = writer_cycles(d);
    writer_bytes_ints(d);
    writer_refusals(d);
    dict_set_replaces(d, l);
    CU_ASSERT_STRING_EQUAL(pk_kind_name(PK_TENSOR), "tensor");
    pk_doc_free(d);
    pk_doc_free(NULL);
}

/* ---- legacy stream: several pickles back to back, then raw data ---- */

static void test_legacy_stream(void) {
    size_t len, off = 0, used = 0;
    uint8_t *data = read_vector("py_legacy_stream.bin", &len);
    pk_doc *d = NULL;
    pk_obj *root = NULL;

    TU_ASSERT_OK(pk_parse_ex(data, len, "legacy", NULL, &d, &root, &used));
    CU_ASSERT_EQUAL(root->kind, PK_BIGINT); /* magic 0x1950a86a20f9469cfc6c */
    CU_ASSERT_EQUAL(root->slen, 10);
    CU_ASSERT_EQUAL((uint8_t)root->s[0], 0x6c);
    pk_doc_free(d);
    off += used;
    TU_ASSERT_OK(pk_parse_ex(data + off, len - off, "legacy", NULL, &d, &root, &used));
    CU_ASSERT(root->kind == PK_INT && root->i == 1001);
    pk_doc_free(d);
    off += used;
    TU_ASSERT_OK(pk_parse_ex(data + off, len - off, "legacy", NULL, &d, &root, &used));
    int64_t v = 0;
    CU_ASSERT(pk_as_int(pk_get(root, "protocol_version"), &v) && v == 1001);
    pk_doc_free(d);
    off += used;
    TU_ASSERT_OK(pk_parse_ex(data + off, len - off, "legacy", NULL, &d, &root, &used));
    pk_obj *w = pk_get(root, "w");
    check_tensor(w, DSCKPT_F32, "0", 4, 0, 2, 2, false);
    CU_ASSERT_EQUAL(w->args->items[0]->args->n, 6); /* 6-tuple persistent id */
    size_t olen;
    uint8_t *out = reserialize(data + off, used, "legacy object", &olen);
    CU_ASSERT(same_bytes(out, olen, data + off, used, "legacy object"));
    free(out);
    pk_doc_free(d);
    off += used;
    TU_ASSERT_OK(pk_parse_ex(data + off, len - off, "legacy", NULL, &d, &root, &used));
    CU_ASSERT(root->kind == PK_LIST && root->n == 1 && !strcmp(pk_as_str(root->items[0]), "0"));
    pk_doc_free(d);
    off += used;
    CU_ASSERT_EQUAL(len - off, 8 + 16); /* numel record + 4 floats */
    CU_ASSERT_EQUAL(ds_get_le64(data + off), 4);
    free(data);
}

/* ---- hostile input ---- */

/* Globals that would run code under pickle.load are inert records here. */
static void test_hostile_globals(void) {
    static const char os_system[] = "\x80\x02" "cos\nsystem\nX\x0a\x00\x00\x00" "echo pwned\x85R.";
    static const char eval_[] = "\x80\x02" "c__builtin__\neval\nX\x10\x00\x00\x00__import__('os')\x85R.";
    static const char eval3[] = "\x80\x03" "cbuiltins\neval\nX\x01\x00\x00\x00" "1\x85R}b.";
    static const char newobj_[] = "\x80\x02" "cos\nPopen\n)\x81}X\x01\x00\x00\x00" "aK\x01sb.";
    static const struct {
        const char *data;
        size_t len;
        const char *module, *name;
    } cases[] = {
        {os_system, sizeof os_system - 1, "os", "system"},
        {eval_, sizeof eval_ - 1, "__builtin__", "eval"},
        {eval3, sizeof eval3 - 1, "builtins", "eval"},
        {newobj_, sizeof newobj_ - 1, "os", "Popen"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pk_doc *d = NULL;
        pk_obj *root = NULL;
        TU_ASSERT_OK(parse_copy((const uint8_t *)cases[i].data, cases[i].len, NULL, &d, &root));
        CU_ASSERT_EQUAL(root->kind, PK_OBJECT); /* a consumer sees an unknown class and refuses it */
        CU_ASSERT_STRING_EQUAL(root->module, cases[i].module);
        CU_ASSERT_STRING_EQUAL(root->name, cases[i].name);
        CU_ASSERT_PTR_NOT_NULL(root->args);
        /* Re-serialising stays inert too (and protocol 2 spells builtins as __builtin__). */
        uint8_t *out = NULL;
        size_t n = 0;
        TU_ASSERT_OK(pk_serialize(root, &out, &n));
        free(out);
        pk_doc_free(d);
    }
}

/* Hand-made hostile pickles, each with the status and message it must get;
 * small_limits: parsed with max_str 16 and max_objects 10. */
static const char big_unicode[] = "\x80\x02X\x20\x00\x00\x00" "0123456789abcdef0123456789abcdef.";
static const struct hostile_case {
    const char *name;
    const char *data;
    size_t len;
    bool small_limits;
    dsckpt_status st;
    const char *needle;
} hostile_cases[] = {
#define C(name, lit, st, needle) {name, lit, sizeof(lit) - 1, false, st, needle}
    C("BINGET unset index", "\x80\x02Nq\x05h\x06.", DSCKPT_ECORRUPT, "memo index 6 out of range"),
    C("BINGET before any PUT", "\x80\x02h\x00.", DSCKPT_ECORRUPT, "memo index 0 out of range"),
    C("LONG_BINGET far", "\x80\x02Nq\x00j\xff\xff\xff\x7f.", DSCKPT_ECORRUPT, "memo index 2147483647 out of range"),
    C("LONG_BINPUT beyond max_memo", "\x80\x02Nr\xff\xff\xff\xff.", DSCKPT_ECORRUPT, "out of range (max_memo"),
    C("PUT on empty stack", "\x80\x02q\x00N.", DSCKPT_ECORRUPT, "stack underflow"),
    C("LONG4 of 2^31 bytes", "\x80\x02\x8b\x00\x00\x00\x80.", DSCKPT_ECORRUPT, "negative LONG4 length"),
    C("LONG4 of 2^31-1 bytes", "\x80\x02\x8b\xff\xff\xff\x7f.", DSCKPT_ECORRUPT, "exceeds max_long"),
    C("LONG1 of 255 bytes", "\x80\x02\x8a\xff", DSCKPT_ECORRUPT, "exceeds max_long (64)"),
    C("BINUNICODE beyond data", "\x80\x02X\x10\x00\x00\x00" "abc.", DSCKPT_ECORRUPT, "truncated"),
    C("BINUNICODE8 of 2^64-1", "\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xff.", DSCKPT_ECORRUPT, "truncated"),
    C("BINSTRING negative", "\x80\x02T\xff\xff\xff\xff.", DSCKPT_ECORRUPT, "negative BINSTRING length"),
    C("invalid UTF-8", "\x80\x02X\x02\x00\x00\x00\xc3\x28.", DSCKPT_ECORRUPT, "not valid UTF-8"),
    C("SETITEM on empty stack", "\x80\x02s.", DSCKPT_ECORRUPT, "stack underflow"),
    C("SETITEM on a non-dict", "\x80\x02NNNs.", DSCKPT_ECORRUPT, "SETITEM on a None"),
    C("SETITEM missing dict", "\x80\x02NNs.", DSCKPT_ECORRUPT, "stack underflow"),
    C("APPEND to a dict", "\x80\x02}Na.", DSCKPT_ECORRUPT, "APPEND to a dict"),
    C("APPENDS below fence", "\x80\x02(Ne.", DSCKPT_ECORRUPT, "stack underflow"),
    C("SETITEMS odd", "\x80\x02}(Nu.", DSCKPT_ECORRUPT, "odd number"),
    C("TUPLE without MARK", "\x80\x02Nt.", DSCKPT_ECORRUPT, "no MARK to match"),
    C("TUPLE3 short", "\x80\x02NN\x87.", DSCKPT_ECORRUPT, "stack underflow"),
    C("STOP with 2 items", "\x80\x02NN.", DSCKPT_ECORRUPT, "STOP with 2 objects"),
    C("STOP with none", "\x80\x02.", DSCKPT_ECORRUPT, "STOP with 0 objects"),
    C("STOP inside MARK", "\x80\x02N(.", DSCKPT_ECORRUPT, "unmatched MARK"),
    C("no STOP", "\x80\x02N", DSCKPT_ECORRUPT, "before STOP"),
    C("empty input", "", DSCKPT_ECORRUPT, "before STOP"),
    C("unknown opcode", "\x80\x02\xff.", DSCKPT_ECORRUPT, "unknown opcode 0xff at byte 2"),
    C("protocol 6", "\x80\x06N.", DSCKPT_EVERSION, "unsupported pickle protocol 6"),
    C("text STRING", "\x80\x02S'a'\n.", DSCKPT_EUNSUPPORTED, "unsupported opcode STRING"),
    C("EXT1", "\x80\x02\x82\x01.", DSCKPT_EUNSUPPORTED, "unsupported opcode EXT1"),
    C("GLOBAL non-printable", "\x80\x02" "cos\x01\nsystem\n.", DSCKPT_ECORRUPT, "not printable ASCII"),
    C("GLOBAL empty name", "\x80\x02" "cos\n\n.", DSCKPT_ECORRUPT, "global name is empty"),
    C("GLOBAL unterminated", "\x80\x02" "cos\nsys", DSCKPT_ECORRUPT, "line without a newline"),
    C("STACK_GLOBAL non-str", "\x80\x04NN\x93.", DSCKPT_ECORRUPT, "STACK_GLOBAL needs two strings"),
    C("REDUCE on None", "\x80\x02N)R.", DSCKPT_EUNSUPPORTED, "REDUCE on a None"),
    C("REDUCE args not tuple", "\x80\x02" "cos\nsystem\nNR.", DSCKPT_ECORRUPT, "not a tuple"),
    C("BUILD on a list", "\x80\x02]Nb.", DSCKPT_EUNSUPPORTED, "BUILD on a list"),
    C("BUILD twice", "\x80\x02" "cx\ny\n)\x81NbNb.", DSCKPT_ECORRUPT, "second BUILD"),
    C("NEWOBJ_EX kwargs", "\x80\x04" "cx\ny\n)}NNs\x92.", DSCKPT_EUNSUPPORTED, "keyword arguments"),
    C("list contains itself", "\x80\x02]q\x00h\x00" "a.", DSCKPT_ECORRUPT, "would contain itself"),
    C("cycle through two lists", "\x80\x02]q\x00]q\x01h\x00" "a0h\x01" "a.", DSCKPT_ECORRUPT,
      "already stored inside"),
    C("FRAME beyond data", "\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00N.", DSCKPT_ECORRUPT, "frame of 255"),
    C("persistent id not a tuple", "\x80\x02X\x03\x00\x00\x00" "abcQ.", DSCKPT_ECORRUPT,
      "persistent id is not a"),
    C("persistent id wrong tag",
      "\x80\x02(X\x03\x00\x00\x00" "abcctorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x01tQ.",
      DSCKPT_ECORRUPT, "persistent id is not a"),
    C("storage type unknown",
      "\x80\x02(X\x07\x00\x00\x00storagectorch\nComplexFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00"
      "cpuK\x01tQ.",
      DSCKPT_EUNSUPPORTED, "storage type torch.ComplexFloatStorage is not supported"),
    C("storage key with a slash",
      "\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x04\x00\x00\x00../0X\x03\x00\x00\x00"
      "cpuK\x01tQ.",
      DSCKPT_ECORRUPT, "storage key"),
    C("storage numel negative",
      "\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00"
      "cpuJ\xff\xff\xff\xfftQ.",
      DSCKPT_ECORRUPT, "numel"),
    C("storage numel overflows bytes",
      "\x80\x02(X\x07\x00\x00\x00storagectorch\nDoubleStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00"
      "cpu\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x7ftQ.",
      DSCKPT_ECORRUPT, "overflows"),
    C("legacy storage view",
      "\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00"
      "cpuK\x01K\x01tQ.",
      DSCKPT_EUNSUPPORTED, "storage views"),
    C("torch.Size of str", "\x80\x02" "ctorch\nSize\nX\x01\x00\x00\x00" "a\x85\x85R.", DSCKPT_ECORRUPT,
      "torch.Size"),
    C("getattr on an int", "\x80\x02" "c__builtin__\ngetattr\nK\x01X\x01\x00\x00\x00" "a\x86R.",
      DSCKPT_EUNSUPPORTED, "getattr"),
    C("codecs non-latin1", "\x80\x02" "c_codecs\nencode\nX\x03\x00\x00\x00\xe2\x82\xacX\x06\x00\x00\x00latin1\x86R.",
      DSCKPT_ECORRUPT, "beyond latin1"),
    C("OrderedDict with args", "\x80\x02" "ccollections\nOrderedDict\n]\x85R.", DSCKPT_EUNSUPPORTED,
      "OrderedDict with constructor arguments"),
    C("_rebuild_parameter of a str",
      "\x80\x02" "ctorch._utils\n_rebuild_parameter\nX\x01\x00\x00\x00" "a\x88}\x87R.", DSCKPT_ECORRUPT,
      "not a tensor"),
#undef C
    {"BINUNICODE beyond max_str", big_unicode, sizeof big_unicode - 1, true, DSCKPT_ECORRUPT,
     "exceeds max_str (16)"},
};

/* Hostile pickles built by loops: too many objects, a long LONG1 and a long
 * GLOBAL name; `small` has max_objects 10. */
static void hostile_built(const pk_limits *small) {
    /* More objects than max_objects (10): twenty floats in a list. */
    pb p = {0};
    PB(&p, "\x80\x02(");
    for (int i = 0; i < 20; i++) PB(&p, "G\x3f\xf0\x00\x00\x00\x00\x00\x00");
    PB(&p, "l.");
    expect_fail("max_objects", p.b, p.n, small, DSCKPT_ECORRUPT, "more than max_objects (10) objects");
    free(p.b);

    /* LONG1 of 255 real bytes: refused before reading them. */
    p = (pb){0};
    PB(&p, "\x80\x02\x8a\xff");
    for (int i = 0; i < 255; i++) pb_byte(&p, 0x11);
    pb_byte(&p, '.');
    expect_fail("LONG1 255 bytes", p.b, p.n, NULL, DSCKPT_ECORRUPT, "integer of 255 bytes exceeds max_long (64)");
    free(p.b);

    /* GLOBAL names longer than 256 bytes. */
    p = (pb){0};
    PB(&p, "\x80\x02" "c");
    for (int i = 0; i < 300; i++) pb_byte(&p, 'a');
    PB(&p, "\nb\n.");
    expect_fail("GLOBAL 300 bytes", p.b, p.n, NULL, DSCKPT_ECORRUPT, "longer than 256 bytes");
    free(p.b);
}

static void test_hostile_catalogue(void) {
    pk_limits small;
    pk_limits_default(&small);
    small.max_str = 16;
    small.max_objects = 10;
    for (size_t i = 0; i < sizeof hostile_cases / sizeof hostile_cases[0]; i++) {
        const struct hostile_case *k = &hostile_cases[i];
        expect_fail(k->name, (const uint8_t *)k->data, k->len, k->small_limits ? &small : NULL, k->st, k->needle);
    }
    hostile_built(&small);

    /* max_bytes: a real pickle in a 4 KiB budget. */
    size_t len;
    uint8_t *data = read_vector("z2_ws4_fp32_zero_pp_rank_3_mp_rank_00_optim_states.pkl", &len);
    pk_limits tiny;
    pk_limits_default(&tiny);
    tiny.max_bytes = 4096;
    expect_fail("max_bytes", data, len, &tiny, DSCKPT_ECORRUPT, "max_bytes (4096)");
    free(data);
}

static void test_hostile_nesting(void) {
    /* 100k MARKs */
    pb p = {0};
    PB(&p, "\x80\x02");
    for (int i = 0; i < 100000; i++) pb_byte(&p, '(');
    PB(&p, "N.");
    expect_fail("100k MARKs", p.b, p.n, NULL, DSCKPT_ECORRUPT, "MARKs nested deeper than max_depth (1000)");
    free(p.b);

    /* 100k empty lists appended into each other: nesting without any MARK */
    p = (pb){0};
    PB(&p, "\x80\x02");
    for (int i = 0; i < 100000; i++) pb_byte(&p, ']');
    for (int i = 0; i < 99999; i++) pb_byte(&p, 'a');
    pb_byte(&p, '.');
    expect_fail("nested lists", p.b, p.n, NULL, DSCKPT_ECORRUPT, "objects nested deeper than max_depth (1000)");
    free(p.b);

    /* TUPLE1 of TUPLE1 of ... */
    p = (pb){0};
    PB(&p, "\x80\x02N");
    for (int i = 0; i < 5000; i++) pb_byte(&p, 0x85);
    pb_byte(&p, '.');
    expect_fail("nested tuples", p.b, p.n, NULL, DSCKPT_ECORRUPT, "nested deeper");
    free(p.b);

    /* Deep but within limits: parses, and the writer handles it. */
    p = (pb){0};
    PB(&p, "\x80\x02");
    for (int i = 0; i < 900; i++) pb_byte(&p, ']');
    for (int i = 0; i < 899; i++) pb_byte(&p, 'a');
    pb_byte(&p, '.');
    pk_doc *d = NULL;
    pk_obj *root = NULL;
    TU_ASSERT_OK(pk_parse(p.b, p.n, "deep", NULL, &d, &root));
    CU_ASSERT_EQUAL(root->depth, 900);
    uint8_t *out = NULL;
    size_t n = 0;
    TU_ASSERT_OK(pk_serialize(root, &out, &n));
    free(out);
    pk_doc_free(d);
    free(p.b);

    /* Sharing through the memo is fine (no cycle): [x, x] with x = [] */
    static const char shared[] = "\x80\x02]q\x00(]q\x01h\x01" "e.";
    TU_ASSERT_OK(pk_parse((const uint8_t *)shared, sizeof shared - 1, "shared", NULL, &d, &root));
    CU_ASSERT_PTR_EQUAL(root->items[0], root->items[1]);
    TU_ASSERT_OK(pk_serialize(root, &out, &n));
    CU_ASSERT(same_bytes(out, n, (const uint8_t *)shared, sizeof shared - 1, "shared list"));
    free(out);
    pk_doc_free(d);
}

static void test_hostile_tensors(void) {
    static const int64_t s22[] = {2, 2}, st21[] = {2, 1}, negst[] = {-1, 1}, s0[] = {0, 5}, big[] = {1 << 30, 1 << 30};
    pb p = {0};
    /* fits exactly: offset 0, extent 4 in 4 */
    pb_tensor(&p, "FloatStorage", 4, 0, 2, s22, st21, 6, NULL);
    pk_doc *d = NULL;
    pk_obj *root = NULL;
    TU_ASSERT_OK(pk_parse(p.b, p.n, "t", NULL, &d, &root));
    check_tensor(root, DSCKPT_F32, "0", 4, 0, 2, 2, false);
    pk_doc_free(d);
    free(p.b);

    p = (pb){0};
    pb_tensor(&p, "FloatStorage", 4, 1, 2, s22, st21, 6, NULL);
    expect_fail("storage too short", p.b, p.n, NULL, DSCKPT_ECORRUPT, "storage '0' has only 4");
    free(p.b);

    p = (pb){0};
    pb_tensor(&p, "FloatStorage", 4, 0, 2, s22, negst, 6, NULL);
    expect_fail("negative stride", p.b, p.n, NULL, DSCKPT_ECORRUPT, "negative stride -1 in dimension 0");
    free(p.b);

    p = (pb){0};
    pb_tensor(&p, "FloatStorage", 100, 0, 2, big, big, 6, NULL);
    expect_fail("extent beyond storage", p.b, p.n, NULL, DSCKPT_ECORRUPT, "has only 100");
    free(p.b);

    p = (pb){0};
    pb_tensor(&p, "HalfStorage", 4, 0, 2, s22, st21, 5, NULL);
    expect_fail("5 arguments", p.b, p.n, NULL, DSCKPT_ECORRUPT, "_rebuild_tensor_v2 expects 6 or 7 arguments, got 5");
    free(p.b);

    p = (pb){0};
    pb_tensor(&p, "FloatStorage", 4, 0, 2, s22, st21, 6, "K\x05");
    expect_fail("pid not a storage tuple", p.b, p.n, NULL, DSCKPT_ECORRUPT, "persistent id is not a");
    free(p.b);

    /* 7 arguments (metadata), empty views at the end of the storage, bool */
    p = (pb){0};
    pb_tensor(&p, "BoolStorage", 3, 3, 2, s0, st21, 7, NULL);
    TU_ASSERT_OK(pk_parse(p.b, p.n, "t", NULL, &d, &root));
    check_tensor(root, DSCKPT_BOOL, "0", 3, 3, 2, 0, false);
    pk_doc_free(d);
    free(p.b);

    /* the tensor argument is not a storage */
    static const char not_storage[] = "\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n(NK\x00))\x89N" "tR.";
    expect_fail("tensor of None", (const uint8_t *)not_storage, sizeof not_storage - 1, NULL, DSCKPT_ECORRUPT,
                "argument 1 is a None, not a storage");
}

/* torch._tensor._rebuild_from_type_v2(func, type, (storage, 0, (4,), (1,), False,
 * OrderedDict()), state): `func`, `type` are "module\nname\n" pairs, `args` raw
 * bytes pushing the inner argument tuple (NULL: the valid one), `state` raw bytes
 * pushing the state (NULL: {'ds_id': '1_18'}). */
static void pb_wrapped(pb *p, const char *func, const char *type, const char *args, const char *state) {
    PB(p, "\x80\x02" "ctorch._tensor\n_rebuild_from_type_v2\n(");
    pb_byte(p, 'c');
    pb_raw(p, func, strlen(func));
    pb_byte(p, 'c');
    pb_raw(p, type, strlen(type));
    if (args) pb_raw(p, args, strlen(args));
    else {
        PB(p, "((");
        pb_str(p, "storage");
        pb_global(p, "torch", "FloatStorage");
        pb_str(p, "0");
        pb_str(p, "cpu");
        pb_int(p, 4);
        PB(p, "tQK\x00K\x04\x85K\x01\x85\x89" "ccollections\nOrderedDict\n)Rt");
    }
    if (state) pb_raw(p, state, strlen(state));
    else {
        pb_byte(p, '}');
        pb_str(p, "ds_id");
        pb_str(p, "1_18");
        pb_byte(p, 's');
    }
    PB(p, "tR.");
}

/* Parses `p` and expects an inert PK_OBJECT naming _rebuild_from_type_v2. */
static void expect_opaque_wrapper(const char *name, const pb *p) {
    pk_doc *d = NULL;
    pk_obj *root = NULL;
    dsckpt_status st = parse_copy(p->b, p->n, NULL, &d, &root);
    if (st) fprintf(stderr, "\n  %s: %s\n", name, dsckpt_last_error());
    CU_ASSERT_EQUAL_FATAL(st, DSCKPT_OK);
    bool ok = root->kind == PK_OBJECT && !strcmp(root->name, "_rebuild_from_type_v2");
    if (!ok) fprintf(stderr, "\n  %s: became a %s\n", name, pk_kind_name(root->kind));
    CU_ASSERT(ok);
    pk_doc_free(d);
}

static void test_hostile_wrapped_tensors(void) {
    static const char f_ok[] = "torch._utils\n_rebuild_tensor_v2\n", t_ok[] = "torch\nTensor\n";
    /* The shape torch writes for a tensor with Python attributes: a tensor. */
    pb p = {0};
    pb_wrapped(&p, f_ok, t_ok, NULL, NULL);
    pk_doc *d = NULL;
    pk_obj *root = NULL;
    TU_ASSERT_OK(parse_copy(p.b, p.n, NULL, &d, &root));
    check_tensor(root, DSCKPT_F32, "0", 4, 0, 1, 4, false);
    CU_ASSERT_EQUAL(root->args->n, 4);
    /* ... and the writer re-emits the wrapper, not a bare _rebuild_tensor_v2. */
    uint8_t *out = NULL;
    size_t olen = 0;
    TU_ASSERT_OK(pk_serialize(root, &out, &olen));
    pk_doc *d2 = NULL;
    pk_obj *r2 = NULL;
    TU_ASSERT_OK(pk_parse(out, olen, "re", NULL, &d2, &r2));
    CU_ASSERT(r2->kind == PK_TENSOR && !strcmp(r2->name, "_rebuild_from_type_v2"));
    pk_doc_free(d2);
    free(out);
    pk_doc_free(d);
    free(p.b);
    /* An empty state dict and plain values of every kind are fine too. */
    static const char *plain[] = {"}", "}(\x8c\x01" "aN\x8c\x01" "bK\x07\x8c\x01" "c\x88\x8c\x01" "dG\x3f\xf0\x01\x01\x01\x01\x01\x01\x8c\x01" "e\x8c\x03" "stru"};
    for (size_t i = 0; i < 2; i++) {
        p = (pb){0};
        pb_wrapped(&p, f_ok, t_ok, NULL, plain[i]);
        TU_ASSERT_OK(parse_copy(p.b, p.n, NULL, &d, &root));
        CU_ASSERT_EQUAL(root->kind, PK_TENSOR);
        pk_doc_free(d);
        free(p.b);
    }
    /* Anything else stays an inert object (never a tensor, nothing run). */
    static const struct {
        const char *name, *func, *type, *state;
    } opaque[] = {
        {"type is a Parameter", f_ok, "torch.nn.parameter\nParameter\n", NULL},
        {"type is another class", f_ok, "os\nsystem\n", NULL},
        {"func is os.system", "os\nsystem\n", t_ok, NULL},
        {"func is _rebuild_parameter", "torch._utils\n_rebuild_parameter\n", t_ok, NULL},
        {"nested wrapper", "torch._tensor\n_rebuild_from_type_v2\n", t_ok, NULL},
        {"state holds code", f_ok, t_ok, "}\x8c\x01" "acos\nsystem\n\x8c\x02" "ls\x85Rs"},
        {"state holds a global", f_ok, t_ok, "}\x8c\x01" "acos\nsystem\ns"},
        {"state holds a dict", f_ok, t_ok, "}\x8c\x01" "a}s"},
        {"state holds a tuple", f_ok, t_ok, "}\x8c\x01" "aK\x01\x85s"},
        {"state key is an int", f_ok, t_ok, "}K\x01K\x02s"},
        {"state is a list", f_ok, t_ok, "]"},
        {"state is (dict, slots)", f_ok, t_ok, "}}\x86"},
        {"state is an OrderedDict", f_ok, t_ok, "ccollections\nOrderedDict\n)R"},
    };
    for (size_t i = 0; i < sizeof opaque / sizeof opaque[0]; i++) {
        p = (pb){0};
        pb_wrapped(&p, opaque[i].func, opaque[i].type, NULL, opaque[i].state);
        expect_opaque_wrapper(opaque[i].name, &p);
        free(p.b);
    }
    /* Three arguments, or arguments that are not a tuple: inert as well. */
    p = (pb){0};
    PB(&p, "\x80\x02" "ctorch._tensor\n_rebuild_from_type_v2\n(ctorch._utils\n_rebuild_tensor_v2\nctorch\nTensor\n}tR.");
    expect_opaque_wrapper("3 arguments", &p);
    free(p.b);
    p = (pb){0};
    pb_wrapped(&p, f_ok, t_ok, "N", NULL);
    expect_opaque_wrapper("args None", &p);
    free(p.b);
    /* The right wrapper around broken tensor arguments is corrupt, as bare. */
    p = (pb){0};
    pb_wrapped(&p, f_ok, t_ok, "(NK\x01))\x89Nt", NULL);
    expect_fail("wrapped tensor of None", p.b, p.n, NULL, DSCKPT_ECORRUPT, "argument 1 is a None, not a storage");
    free(p.b);
    p = (pb){0};
    pb_wrapped(&p, f_ok, t_ok, "(K\x01t", NULL);
    expect_fail("wrapped, 1 argument", p.b, p.n, NULL, DSCKPT_ECORRUPT, "_rebuild_tensor_v2 expects 6 or 7 arguments, got 1");
    free(p.b);
}

/* ---- sweeps (for the sanitizers) ---- */

static void test_truncation_sweep(void) {
    static const char *const names[] = {"z2_ws4_bf16_edge_mp_rank_00_model_states.pkl", "py_deepspeed_like.pkl"};
    for (size_t f = 0; f < sizeof names / sizeof names[0]; f++) {
        size_t len;
        uint8_t *data = read_vector(names[f], &len);
        for (size_t cut = 0; cut < len; cut++) {
            pk_doc *d = (pk_doc *)1;
            pk_obj *root = (pk_obj *)1;
            dsckpt_status st = parse_copy(data, cut, NULL, &d, &root);
            CU_ASSERT_NOT_EQUAL(st, DSCKPT_OK);
            CU_ASSERT(strstr(dsckpt_last_error(), "hostile") != NULL);
            CU_ASSERT_PTR_NULL(d);
            if (st == DSCKPT_OK) pk_doc_free(d);
        }
        free(data);
    }
}

/* Every byte replaced by a few values: whatever parses must serialise, and the
 * serialisation must be a fixed point (parse + serialise gives it back). */
static void test_mutation_sweep(void) {
    size_t len;
    uint8_t *data = read_vector("z3_ws4_fp32_1g_zero_pp_rank_0_mp_rank_00_optim_states.pkl", &len);
    static const uint8_t subs[] = {0x00, 0x01, 0x7f, 0x80, 0xff, '(', ')', '.', 'N', 'R', 'b', 'h', 'q', 't', 'u', 0x85};
    size_t runs = 0, ok = 0;
    uint8_t *buf = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    for (size_t pos = 0; pos < len; pos++) {
        for (size_t s = 0; s < sizeof subs; s++) {
            if (data[pos] == subs[s]) continue;
            memcpy(buf, data, len);
            buf[pos] = subs[s];
            pk_doc *d = NULL;
            pk_obj *root = NULL;
            runs++;
            if (pk_parse(buf, len, "mut", NULL, &d, &root) != DSCKPT_OK) {
                CU_ASSERT(dsckpt_last_error()[0] != '\0');
                continue;
            }
            ok++;
            uint8_t *o1 = NULL, *o2 = NULL;
            size_t n1 = 0, n2 = 0;
            TU_ASSERT_OK(pk_serialize(root, &o1, &n1));
            pk_doc_free(d);
            TU_ASSERT_OK(pk_parse(o1, n1, "mut2", NULL, &d, &root));
            TU_ASSERT_OK(pk_serialize(root, &o2, &n2));
            CU_ASSERT(n1 == n2 && memcmp(o1, o2, n1) == 0);
            pk_doc_free(d);
            free(o1);
            free(o2);
        }
    }
    CU_ASSERT(runs > 10000);
    CU_ASSERT(ok > 0 && ok < runs);
    free(buf);
    free(data);
}

int main(void) {
    static const tu_test tests[] = {
        {"round trip: every fixture data.pkl byte for byte", test_roundtrip_fixtures},
        {"round trip: CPython vectors (protocol 2 and 4)", test_roundtrip_cpython},
        {"structure: ZeRO-2 optimizer file", test_structure_optim},
        {"structure: model-states file", test_structure_model},
        {"structure: CPython deepspeed-like and container vectors", test_structure_cpython},
        {"writer: built tree equals CPython's bytes", test_build_matches_cpython},
        {"writer: CPython shapes and refusals", test_writer_cpython_shapes},
        {"legacy stream of pickles", test_legacy_stream},
        {"hostile: code-running globals stay inert", test_hostile_globals},
        {"hostile: catalogue", test_hostile_catalogue},
        {"hostile: nesting", test_hostile_nesting},
        {"hostile: tensors", test_hostile_tensors},
        {"hostile: _rebuild_from_type_v2 wrappers (only Tensor + plain state is a tensor)", test_hostile_wrapped_tensors},
        {"sweep: truncation at every byte", test_truncation_sweep},
        {"sweep: byte mutations", test_mutation_sweep},
        {NULL, NULL},
    };
    return tu_main("pickle", tests);
}
