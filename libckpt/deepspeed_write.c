/*
 * deepspeed_write.c — a fragment map written as DeepSpeed ZeRO checkpoint files
 * for M ranks (see deepspeed_write.h and docs/formats/deepspeed.md).
 *
 * Each output .pt file is a pickle tree plus the storages it names. The tree is
 * either a re-parsed template file edited in place or built here; new tensors get
 * generated storages ("g<n>") described by pieces of fragment-map states, template
 * storages are copied byte for byte. At serialisation every storage is renamed
 * "0", "1", ... in first-use order (as torch.save numbers them) and the zip holds
 * what torch 2.x writes, in its order: data.pkl, .format_version, .storage_alignment
 * (the template's, or 64; members aligned to it), byteorder, data/<key> in numeric
 * order, version, .data/serialization_id.
 * Partition arithmetic comes from partition.h, the same as the reader's.
 */
#include "deepspeed_write.h"

#include "cast.h"
#include "copyengine.h"
#include "deepspeed.h"
#include "fsutil.h"
#include "partition.h"
#include "pickle.h"
#include "stream.h"
#include "unknown.h"
#include "zip.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define DSW_PKL_MAX (256u << 20)
#define DSW_VERSION "0.14.5"  /* ds_version written into synthesized files */

/* ---- templates ---- */

typedef struct dsw_tpl {
    char *path;
    int fd;
    zip_archive *zip;
    uint8_t *pkl;
    size_t pkl_len;
} dsw_tpl;

static void tpl_close(dsw_tpl *t) {
    if (t->fd >= 0) close(t->fd);
    zip_free(t->zip);
    free(t->pkl);
    free(t->path);
    memset(t, 0, sizeof *t);
    t->fd = -1;
}

static dsckpt_status tpl_open(const char *dir, const char *name, dsw_tpl *t) {
    memset(t, 0, sizeof *t);
    t->fd = -1;
    if (!(t->path = ds_join(dir, name))) return DSCKPT_ENOMEM;
    DS_TRY(ds_open_read(t->path, &t->fd, NULL));
    DS_TRY(zip_open_fd(t->fd, t->path, &t->zip));
    const zip_member *m = zip_find_rel(t->zip, "data.pkl");
    if (!m) return ds_err(DSCKPT_ECORRUPT, "%s: no data.pkl member", t->path);
    DS_TRY(zip_read_member(t->fd, t->zip, m, DSW_PKL_MAX, t->path, &t->pkl));
    t->pkl_len = (size_t)m->size;
    return DSCKPT_OK;
}

static dsckpt_status tpl_parse(const dsw_tpl *t, pk_doc **doc, pk_obj **root) {
    DS_TRY(pk_parse(t->pkl, t->pkl_len, t->path, NULL, doc, root));
    if ((*root)->kind != PK_DICT) return ds_err(DSCKPT_ECORRUPT, "%s: top level is not a dict", t->path);
    return DSCKPT_OK;
}

/* The last path component of `path` (a pointer into it). */
static const char *ds_basename_ref(const char *path) {
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

/* Adds the template's pickled objects outside the allow-list to `l`. */
static dsckpt_status tpl_screen(const dsw_tpl *t, const char *label, ds_unknown_list *l) {
    pk_doc *d = NULL;
    pk_obj *root = NULL;
    dsckpt_status st = tpl_parse(t, &d, &root);
    if (!st) st = ds_unknown_in_tree(root, label, false, l);
    pk_doc_free(d);
    return st;
}

/* ---- groups ---- */

typedef struct dsw_group {
    uint32_t *t;      /* tensors in flat order */
    size_t n;
    uint64_t numel;   /* N (stages 1/2), or the per-rank length sum(q) (stage 3) */
    int pgroup;       /* the optimizer param group (stage 3 sub-groups) */
    ds_flat_part part;/* stages 1/2 */
    uint64_t *pad;    /* stages 1/2 with parameter_alignment: padding after each tensor, or NULL */
} dsw_group;

typedef struct dsw_ctx {
    const ds_dsw_spec *sp;
    int M, stage;
    dsw_group *g;      /* stages 1/2: param groups; stage 3: sub-groups for M ranks */
    size_t ng;
    size_t npg;        /* param groups */
    uint32_t *frozen;  /* frozen parameters (not buffers), in tensor order */
    size_t nfrozen;
    bool have_tpl;
    dsw_tpl tmodel;    /* mp_rank_00 / zero_pp_rank_0 model states */
    dsw_tpl toptim;    /* rank 0's optimizer file */
    char optim_prefix[8]; /* "bf16_" or "" */
    uint32_t align;    /* storage alignment: the template's .storage_alignment, or 64 */
    bool bf16_opt;
} dsw_ctx;

static bool is_param(const ds_tensor *t) { return !t->buffer; }

static dsckpt_status group_add(dsw_group *g, uint32_t t) {
    uint32_t *nt = realloc(g->t, (g->n + 1) * sizeof *nt);
    if (!nt) return ds_err(DSCKPT_ENOMEM, "out of memory");
    g->t = nt;
    g->t[g->n++] = t;
    return DSCKPT_OK;
}

static dsckpt_status new_group(dsw_ctx *x, int pg) {
    dsw_group *ng = realloc(x->g, (x->ng + 1) * sizeof *ng);
    if (!ng) return ds_err(DSCKPT_ENOMEM, "out of memory");
    x->g = ng;
    memset(&x->g[x->ng], 0, sizeof x->g[x->ng]);
    x->g[x->ng].pgroup = pg;
    x->ng++;
    return DSCKPT_OK;
}

/* param group of every trainable tensor: its .group, or at stage 3 with a
 * template the param group whose 'params' list names its source sub-group. */
static dsckpt_status param_groups_of(dsw_ctx *x, int **pg_out) {
    const ds_dsw_spec *sp = x->sp;
    int *pg = NULL;
    DS_TRY(ds_calloc(sp->ntensors ? sp->ntensors : 1, sizeof *pg, &pg));
    int maxsg = -1;
    for (size_t t = 0; t < sp->ntensors; t++) {
        pg[t] = sp->tensors[t].group;
        if (sp->tensors[t].trainable && sp->tensors[t].group > maxsg) maxsg = sp->tensors[t].group;
    }
    if (x->stage == 3 && x->have_tpl) {
        pk_doc *d = NULL;
        pk_obj *root = NULL;
        dsckpt_status st = tpl_parse(&x->toptim, &d, &root);
        pk_obj *pgs = pk_get(pk_get(pk_get(root, "optimizer_state_dict"), "optimizer_state_dict"), "param_groups");
        if (!st && (!pgs || pgs->kind != PK_LIST))
            st = ds_err(DSCKPT_ECORRUPT, "%s: no optimizer_state_dict.param_groups", x->toptim.path);
        int *map = NULL;
        if (!st) st = ds_calloc((size_t)maxsg + 2, sizeof *map, &map);
        for (int s = 0; !st && s <= maxsg; s++) map[s] = -1;
        for (size_t g = 0; !st && g < pgs->n; g++) {
            pk_obj *ps = pk_get(pgs->items[g], "params");
            for (size_t i = 0; ps && ps->kind == PK_LIST && i < ps->n; i++) {
                int64_t v;
                if (pk_as_int(ps->items[i], &v) && v >= 0 && v <= maxsg) map[v] = (int)g;
            }
        }
        for (size_t t = 0; !st && t < sp->ntensors; t++) {
            if (!sp->tensors[t].trainable) continue;
            int s = sp->tensors[t].group;
            if (s < 0 || s > maxsg || map[s] < 0)
                st = ds_err(DSCKPT_ECORRUPT, "%s: sub-group %d of '%s' is in no param group", x->toptim.path, s,
                            sp->tensors[t].name);
            else pg[t] = map[s];
        }
        free(map);
        pk_doc_free(d);
        if (st) {
            free(pg);
            return st;
        }
    }
    *pg_out = pg;
    return DSCKPT_OK;
}

static uint64_t cfg_sub_group_size(const ds_dsw_spec *sp) {
    if (sp->sub_group_size) return sp->sub_group_size;
    const cJSON *z = sp->ds_config ? cJSON_GetObjectItemCaseSensitive(sp->ds_config, "zero_optimization") : NULL;
    const cJSON *s = z ? cJSON_GetObjectItemCaseSensitive(z, "sub_group_size") : NULL;
    if (cJSON_IsNumber(s) && s->valuedouble >= 1) return (uint64_t)s->valuedouble;
    return 1000000000ull; /* DeepSpeed's default */
}

static dsckpt_status make_groups(dsw_ctx *x) {
    const ds_dsw_spec *sp = x->sp;
    int *pg = NULL;
    DS_TRY(param_groups_of(x, &pg));
    dsckpt_status st = DSCKPT_OK;
    int npg = 0;
    for (size_t t = 0; t < sp->ntensors; t++) {
        const ds_tensor *T = &sp->tensors[t];
        if (T->trainable && pg[t] + 1 > npg) npg = pg[t] + 1;
        if (!T->trainable && is_param(T)) {
            uint32_t *nf = realloc(x->frozen, (x->nfrozen + 1) * sizeof *nf);
            if (!nf) {
                st = ds_err(DSCKPT_ENOMEM, "out of memory");
                goto done;
            }
            x->frozen = nf;
            x->frozen[x->nfrozen++] = (uint32_t)t;
        }
    }
    x->npg = (size_t)npg;
    if (x->stage != 3) {
        for (int g = 0; g < npg; g++) DS_TRYGOTO(new_group(x, g), done);
        for (size_t t = 0; t < sp->ntensors; t++) {
            if (!sp->tensors[t].trainable) continue;
            dsw_group *G = &x->g[pg[t]];
            DS_TRYGOTO(group_add(G, (uint32_t)t), done);
            G->numel += sp->tensors[t].numel;
        }
        for (size_t g = 0; g < x->ng; g++) x->g[g].part = ds_part_flat(x->g[g].numel, x->M);
    } else {
        /* DeepSpeed's _create_fp16_sub_groups with partition_numel() = ceil(n/M). */
        uint64_t sgs = cfg_sub_group_size(sp);
        for (int g = 0; g < npg; g++) {
            uint64_t total = 0;
            size_t last = SIZE_MAX;
            for (size_t t = 0; t < sp->ntensors; t++)
                if (sp->tensors[t].trainable && pg[t] == g) {
                    total += ds_part_piece(sp->tensors[t].numel, x->M);
                    last = t;
                }
            if (last == SIZE_MAX) continue;
            DS_TRYGOTO(new_group(x, g), done);
            uint64_t local = 0;
            for (size_t t = 0; t < sp->ntensors; t++) {
                if (!sp->tensors[t].trainable || pg[t] != g) continue;
                dsw_group *G = &x->g[x->ng - 1];
                uint64_t q = ds_part_piece(sp->tensors[t].numel, x->M);
                DS_TRYGOTO(group_add(G, (uint32_t)t), done);
                G->numel += q;
                local += q;
                if (sgs < total && local >= sgs && t != last) {
                    DS_TRYGOTO(new_group(x, g), done);
                    local = 0;
                }
            }
        }
    }
done:
    free(pg);
    return st;
}

/* Stages 1/2 from a template written with zero_optimization.parameter_alignment:
 * the template's param_alignment_paddings[g][k] (padding after tensor k of group
 * g, a function of the tensor alone, the same at every world size) are kept, so
 * that the flat groups are laid out as DeepSpeed lays them out for that config.
 * Matched by name through the template model file's param_shapes. */
static dsckpt_status load_alignment(dsw_ctx *x) {
    pk_doc *dm = NULL, *dopt = NULL;
    pk_obj *rm = NULL, *ro = NULL;
    dsckpt_status st = tpl_parse(&x->toptim, &dopt, &ro);
    pk_obj *pa = st ? NULL : pk_get(pk_get(ro, "optimizer_state_dict"), "param_alignment_paddings");
    if (!pa || pa->kind == PK_NONE) goto done;
    DS_TRYGOTO(tpl_parse(&x->tmodel, &dm, &rm), done);
    pk_obj *shapes = pk_get(rm, "param_shapes");
    if (pa->kind != PK_LIST || pa->n != x->ng || !shapes || shapes->kind != PK_LIST || shapes->n != x->ng) {
        st = ds_err(DSCKPT_ECORRUPT, "%s: param_alignment_paddings does not have one list per parameter group",
                    x->toptim.path);
        goto done;
    }
    for (size_t g = 0; g < x->ng; g++) {
        dsw_group *G = &x->g[g];
        pk_obj *pl = pa->items[g], *sg = shapes->items[g];
        if (pl->kind != PK_LIST || sg->kind != PK_DICT || pl->n != sg->n || sg->n != G->n) {
            st = ds_err(DSCKPT_ECORRUPT, "%s: param_alignment_paddings[%zu] does not match the group's %zu parameters",
                        x->toptim.path, g, G->n);
            goto done;
        }
        DS_TRYGOTO(ds_calloc(G->n, sizeof *G->pad, &G->pad), done);
        G->numel = 0;
        for (size_t k = 0; k < G->n; k++) {
            const ds_tensor *T = &x->sp->tensors[G->t[k]];
            size_t i = 0;
            while (i < sg->n && !(pk_as_str(sg->keys[i]) && !strcmp(pk_as_str(sg->keys[i]), T->name))) i++;
            int64_t v;
            if (i == sg->n || !pk_as_int(pl->items[i], &v) || v < 0 || v > (1 << 20)) {
                st = ds_err(DSCKPT_ECORRUPT, "%s: no plausible alignment padding for '%s'", x->toptim.path, T->name);
                goto done;
            }
            G->pad[k] = (uint64_t)v;
            G->numel += T->numel + G->pad[k];
        }
        G->part = ds_part_flat(G->numel, x->M);
    }
done:
    pk_doc_free(dm);
    pk_doc_free(dopt);
    return st;
}

/* ---- output files: stores and the pickle tree ---- */

typedef struct dsw_piece {
    ds_state s;
    uint32_t t;
    uint64_t start, numel, at; /* elements of the tensor's state -> element `at` of the storage */
} dsw_piece;

typedef struct dsw_store {
    char key[32];        /* the key in the tree */
    char newkey[24];     /* the key written */
    bool used;
    dsckpt_dtype dtype;
    uint64_t numel;
    bool from_tpl;       /* bytes copied from the template file */
    uint64_t toff, tbytes;
    uint32_t tcrc;       /* the template member's CRC-32 (central directory) */
    const char *tname;   /* the template member's name */
    uint8_t inl[8];      /* small inline value (0-dim step) when ninl > 0 */
    size_t ninl;
    dsw_piece *pieces;
    size_t npieces;
} dsw_store;

typedef struct dsw_file {
    const dsw_ctx *x;
    const dsw_tpl *tpl;
    pk_doc *doc;
    pk_obj *root;
    dsw_store *st;
    size_t n, cap;
    size_t next_new;
    uint64_t next_gen;
    dsckpt_status err;
} dsw_file;

static void file_clear(dsw_file *f) {
    for (size_t i = 0; i < f->n; i++) free(f->st[i].pieces);
    free(f->st);
    pk_doc_free(f->doc);
    memset(f, 0, sizeof *f);
}

static dsw_store *store_add(dsw_file *f, const char *key) {
    if (f->n == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 64;
        dsw_store *ns = realloc(f->st, nc * sizeof *ns);
        if (!ns) return NULL;
        f->st = ns;
        f->cap = nc;
    }
    dsw_store *s = &f->st[f->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->key, sizeof s->key, "%s", key);
    return s;
}

static const char *rename_key(void *u, const char *key) {
    dsw_file *f = u;
    dsw_store *s = NULL;
    for (size_t i = 0; i < f->n && !s; i++)
        if (!strcmp(f->st[i].key, key)) s = &f->st[i];
    if (!s) { /* a storage of the template, copied as is */
        char rel[64];
        const zip_member *m = NULL;
        if (f->tpl && strlen(key) < 40) {
            snprintf(rel, sizeof rel, "data/%s", key);
            m = zip_find_rel(f->tpl->zip, rel);
        }
        if (!m) {
            f->err = ds_err(DSCKPT_ECORRUPT, "%s: storage '%s' has no data/%s member", f->tpl ? f->tpl->path : "output",
                            key, key);
            return NULL;
        }
        if (!(s = store_add(f, key))) {
            f->err = ds_err(DSCKPT_ENOMEM, "out of memory");
            return NULL;
        }
        s->from_tpl = true;
        s->toff = m->data_offset;
        s->tbytes = m->size;
        s->tcrc = m->crc32;
        s->tname = m->name;
    }
    if (!s->used) {
        s->used = true;
        snprintf(s->newkey, sizeof s->newkey, "%zu", f->next_new++);
    }
    return s->newkey;
}

#define OOM_IF(cond)                                   \
    do {                                               \
        if (cond) return ds_err(DSCKPT_ENOMEM, "out of memory"); \
    } while (0)

/* A new 1-D (or shaped) tensor over a fresh generated storage of `numel` elements. */
static dsckpt_status new_tensor(dsw_file *f, dsckpt_dtype dt, uint64_t numel, int ndim, const uint64_t *shape,
                                bool requires_grad, pk_obj **out, size_t *store) {
    char key[32];
    snprintf(key, sizeof key, "g%llu", (unsigned long long)f->next_gen++);
    dsw_store *s = store_add(f, key);
    OOM_IF(!s);
    s->dtype = dt;
    s->numel = numel;
    pk_obj *o = pk_new(f->doc, PK_TENSOR);
    OOM_IF(!o || !(o->tensor.storage_key = pk_strdup(f->doc, key)));
    o->dtype = dt;
    o->tensor.dtype = dt;
    o->tensor.storage_numel = numel;
    o->tensor.ndim = ndim;
    int64_t stride = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        o->tensor.shape[d] = shape[d];
        o->tensor.stride[d] = stride;
        stride *= (int64_t)(shape[d] ? shape[d] : 1);
    }
    o->tensor.requires_grad = requires_grad;
    *out = o;
    *store = (size_t)(s - f->st);
    return DSCKPT_OK;
}

static dsckpt_status new_vec(dsw_file *f, dsckpt_dtype dt, uint64_t numel, uint64_t len, bool rg, pk_obj **out,
                             size_t *store) {
    DS_TRY(new_tensor(f, dt, numel, 1, &len, rg, out, store));
    return DSCKPT_OK;
}

static dsckpt_status add_piece(dsw_file *f, size_t store, ds_state s, uint32_t t, uint64_t start, uint64_t numel,
                               uint64_t at) {
    if (!numel) return DSCKPT_OK;
    dsw_store *S = &f->st[store];
    dsw_piece *np = realloc(S->pieces, (S->npieces + 1) * sizeof *np);
    OOM_IF(!np);
    S->pieces = np;
    S->pieces[S->npieces++] = (dsw_piece){s, t, start, numel, at};
    return DSCKPT_OK;
}

/* A copy of a template tensor (e.g. a 0-dim 'step') over a storage of its own. */
static dsckpt_status clone_tensor(dsw_file *f, const pk_obj *src, pk_obj **out) {
    if (!src || src->kind != PK_TENSOR) {
        *out = (pk_obj *)src;
        return DSCKPT_OK;
    }
    size_t si;
    pk_obj *o;
    DS_TRY(new_tensor(f, src->tensor.dtype, src->tensor.storage_numel, src->tensor.ndim, src->tensor.shape,
                      src->tensor.requires_grad, &o, &si));
    o->tensor.offset = src->tensor.offset;
    memcpy(o->tensor.stride, src->tensor.stride, sizeof o->tensor.stride);
    char rel[64];
    snprintf(rel, sizeof rel, "data/%s", src->tensor.storage_key);
    const zip_member *m = f->tpl ? zip_find_rel(f->tpl->zip, rel) : NULL;
    if (!m) return ds_err(DSCKPT_ECORRUPT, "%s: storage '%s' is missing", f->tpl ? f->tpl->path : "template", rel);
    f->st[si].from_tpl = true;
    f->st[si].toff = m->data_offset;
    f->st[si].tbytes = m->size;
    f->st[si].tcrc = m->crc32;
    f->st[si].tname = m->name;
    *out = o;
    return DSCKPT_OK;
}

/* ---- small tree constructors ---- */

static pk_obj *S(dsw_file *f, const char *s) { return pk_new_str(f->doc, s); }
static pk_obj *I(dsw_file *f, int64_t v) { return pk_new_int(f->doc, v); }

static dsckpt_status dset(dsw_file *f, pk_obj *d, const char *k, pk_obj *v) {
    OOM_IF(!v || !pk_dict_set(f->doc, d, S(f, k), v));
    return DSCKPT_OK;
}

static pk_obj *odict(dsw_file *f) {
    pk_obj *o = pk_new(f->doc, PK_DICT);
    if (o) {
        o->ordered = true;
        o->module = pk_strdup(f->doc, "collections");
        o->name = pk_strdup(f->doc, "OrderedDict");
    }
    return o;
}

static pk_obj *size_obj(dsw_file *f, const ds_tensor *t) {
    pk_obj *o = pk_new(f->doc, PK_SIZE);
    for (int d = 0; o && d < t->ndim; d++)
        if (!pk_list_append(f->doc, o, I(f, (int64_t)t->shape[d]))) return NULL;
    return o;
}

static pk_obj *frag_addr(dsw_file *f, uint64_t numel, uint64_t start) {
    pk_obj *o = pk_new(f->doc, PK_OBJECT), *st = pk_new(f->doc, PK_DICT);
    if (!o || !st) return NULL;
    o->module = pk_strdup(f->doc, "deepspeed.utils.tensor_fragment");
    o->name = pk_strdup(f->doc, "fragment_address");
    o->newobj = true;
    o->args = pk_new(f->doc, PK_TUPLE);
    if (!o->args || !pk_dict_set(f->doc, st, S(f, "numel"), I(f, (int64_t)numel)) ||
        !pk_dict_set(f->doc, st, S(f, "start"), I(f, (int64_t)start)))
        return NULL;
    o->state = st;
    return o;
}

static pk_obj *from_json(dsw_file *f, const cJSON *j, int depth) {
    if (!j || depth > 64) return pk_new(f->doc, PK_NONE);
    if (cJSON_IsBool(j)) return pk_new_bool(f->doc, cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double v = j->valuedouble;
        if (v == (double)(int64_t)v && v > -9.0e15 && v < 9.0e15) return I(f, (int64_t)v);
        return pk_new_float(f->doc, v);
    }
    if (cJSON_IsString(j)) return S(f, j->valuestring);
    const cJSON *tag = cJSON_IsObject(j) && j->child && !j->child->next ? cJSON_GetObjectItemCaseSensitive(j, DS_JSON_FLOAT_TAG) : NULL;
    if (cJSON_IsString(tag)) { /* a float JSON cannot hold (see deepspeed.h) */
        const char *v = tag->valuestring;
        if (!strcmp(v, "inf")) return pk_new_float(f->doc, INFINITY);
        if (!strcmp(v, "-inf")) return pk_new_float(f->doc, -INFINITY);
        if (!strcmp(v, "nan")) return pk_new_float(f->doc, NAN);
    }
    if (cJSON_IsArray(j) || cJSON_IsObject(j)) {
        pk_obj *o = pk_new(f->doc, cJSON_IsArray(j) ? PK_LIST : PK_DICT);
        if (!o) return NULL;
        for (const cJSON *c = j->child; c; c = c->next) {
            pk_obj *v = from_json(f, c, depth + 1);
            if (!v) return NULL;
            if (cJSON_IsArray(j) ? !pk_list_append(f->doc, o, v) : !pk_dict_set(f->doc, o, S(f, c->string), v))
                return NULL;
        }
        return o;
    }
    return pk_new(f->doc, PK_NONE);
}

/* ---- synthesized files (no template) ---- */

static double hp(const ds_dsw_spec *sp, size_t g, const char *key, int idx, double dflt) {
    const cJSON *o = sp->state ? cJSON_GetObjectItemCaseSensitive(sp->state, "optimizer") : NULL;
    const cJSON *pgs = o ? cJSON_GetObjectItemCaseSensitive(o, "param_groups") : NULL;
    const cJSON *pg = cJSON_GetArrayItem(pgs, (int)g);
    const cJSON *v = pg ? cJSON_GetObjectItemCaseSensitive(pg, key) : NULL;
    if (idx >= 0) v = cJSON_GetArrayItem(v, idx);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* Param group g as torch's AdamW writes it, from the spec's hyperparameters (or
 * AdamW's defaults), without its 'params' list. */
static dsckpt_status adamw_group(dsw_file *f, size_t g, pk_obj **out) {
    const ds_dsw_spec *sp = f->x->sp;
    pk_obj *p = pk_new(f->doc, PK_DICT), *betas = pk_new(f->doc, PK_TUPLE);
    OOM_IF(!p || !betas);
    OOM_IF(!pk_list_append(f->doc, betas, pk_new_float(f->doc, hp(sp, g, "betas", 0, 0.9))) ||
           !pk_list_append(f->doc, betas, pk_new_float(f->doc, hp(sp, g, "betas", 1, 0.999))));
    DS_TRY(dset(f, p, "weight_decay", pk_new_float(f->doc, hp(sp, g, "weight_decay", -1, 0.01))));
    DS_TRY(dset(f, p, "lr", pk_new_float(f->doc, hp(sp, g, "lr", -1, 1e-3))));
    DS_TRY(dset(f, p, "betas", betas));
    DS_TRY(dset(f, p, "eps", pk_new_float(f->doc, hp(sp, g, "eps", -1, 1e-8))));
    DS_TRY(dset(f, p, "amsgrad", pk_new_bool(f->doc, false)));
    DS_TRY(dset(f, p, "foreach", pk_new(f->doc, PK_NONE)));
    DS_TRY(dset(f, p, "maximize", pk_new_bool(f->doc, false)));
    DS_TRY(dset(f, p, "capturable", pk_new_bool(f->doc, false)));
    *out = p;
    return DSCKPT_OK;
}

static dsckpt_status synth_model_root(dsw_file *f, int rank) {
    const dsw_ctx *x = f->x;
    const ds_dsw_spec *sp = x->sp;
    pk_obj *root = pk_new(f->doc, PK_DICT), *module = odict(f), *bufs = pk_new(f->doc, PK_LIST);
    OOM_IF(!root || !module || !bufs);
    /* module: 16-bit weights (stages 1/2) or zero-element placeholders (stage 3);
     * buffers real everywhere; tied aliases share their owner's storage. */
    for (size_t t = 0; t < sp->ntensors; t++) {
        const ds_tensor *T = &sp->tensors[t];
        pk_obj *o;
        size_t si;
        bool placeholder = x->stage == 3 && is_param(T);
        dsckpt_dtype dt = T->trainable ? sp->model_dtype : T->dtype;
        uint64_t zero = 0;
        if (placeholder) DS_TRY(new_tensor(f, dt, 0, 1, &zero, false, &o, &si));
        else {
            DS_TRY(new_tensor(f, dt, T->numel, T->ndim, T->shape, false, &o, &si));
            DS_TRY(add_piece(f, si, T->trainable ? DS_ST_FP32 : DS_ST_W16, (uint32_t)t, 0, T->numel, 0));
        }
        DS_TRY(dset(f, module, T->name, o));
        if (T->buffer) OOM_IF(!pk_list_append(f->doc, bufs, S(f, T->name)));
        for (size_t a = 0; a < T->naliases; a++) {
            pk_obj *al = pk_new(f->doc, PK_TENSOR);
            OOM_IF(!al);
            al->tensor = o->tensor;
            al->dtype = o->dtype;
            DS_TRY(dset(f, module, T->aliases[a], al));
        }
    }
    DS_TRY(dset(f, root, "module", module));
    DS_TRY(dset(f, root, "buffer_names", bufs));
    DS_TRY(dset(f, root, "optimizer", pk_new(f->doc, PK_NONE)));
    DS_TRY(dset(f, root, "param_shapes", pk_new(f->doc, PK_LIST))); /* filled by edit_model */
    if (x->stage >= 2) {
        pk_obj *fs = odict(f), *ff = odict(f);
        OOM_IF(!fs || !ff);
        for (size_t i = 0; i < x->nfrozen; i++) {
            const ds_tensor *T = &sp->tensors[x->frozen[i]];
            DS_TRY(dset(f, fs, T->name, size_obj(f, T)));
            DS_TRY(dset(f, ff, T->name, pk_new(f->doc, PK_NONE))); /* filled by edit_model */
        }
        DS_TRY(dset(f, root, "frozen_param_shapes", fs));
        pk_obj *sh = pk_new(f->doc, PK_DICT);
        OOM_IF(!sh);
        for (size_t t = 0; t < sp->ntensors && (x->stage != 3 || rank == 0); t++)
            for (size_t a = 0; a < sp->tensors[t].naliases; a++)
                DS_TRY(dset(f, sh, sp->tensors[t].aliases[a], S(f, sp->tensors[t].name)));
        DS_TRY(dset(f, root, "shared_params", sh));
        DS_TRY(dset(f, root, "frozen_param_fragments", ff));
    } else {
        DS_TRY(dset(f, root, "frozen_param_shapes", pk_new(f->doc, PK_NONE)));
        pk_obj *sh = pk_new(f->doc, PK_DICT);
        OOM_IF(!sh);
        for (size_t t = 0; t < sp->ntensors; t++)
            for (size_t a = 0; a < sp->tensors[t].naliases; a++)
                DS_TRY(dset(f, sh, sp->tensors[t].aliases[a], S(f, sp->tensors[t].name)));
        DS_TRY(dset(f, root, "shared_params", sh));
        DS_TRY(dset(f, root, "frozen_param_fragments", pk_new(f->doc, PK_NONE)));
    }
    DS_TRY(dset(f, root, "lr_scheduler", pk_new(f->doc, PK_NONE)));
    DS_TRY(dset(f, root, "data_sampler", pk_new(f->doc, PK_NONE)));
    DS_TRY(dset(f, root, "random_ltd", pk_new(f->doc, PK_NONE)));
    pk_obj *set = pk_new(f->doc, PK_SET);
    OOM_IF(!set);
    DS_TRY(dset(f, root, "sparse_tensor_module_names", set));
    DS_TRY(dset(f, root, "skipped_steps", I(f, 0)));
    DS_TRY(dset(f, root, "global_steps", I(f, sp->step)));
    const cJSON *tbs = sp->ds_config ? cJSON_GetObjectItemCaseSensitive(sp->ds_config, "train_batch_size") : NULL;
    DS_TRY(dset(f, root, "global_samples", I(f, sp->step * (cJSON_IsNumber(tbs) ? (int64_t)tbs->valuedouble : 1))));
    DS_TRY(dset(f, root, "dp_world_size", I(f, x->M)));
    DS_TRY(dset(f, root, "mp_world_size", I(f, 1)));
    DS_TRY(dset(f, root, "ds_config", sp->ds_config ? from_json(f, sp->ds_config, 0) : pk_new(f->doc, PK_DICT)));
    DS_TRY(dset(f, root, "ds_version", S(f, DSW_VERSION)));
    f->root = root;
    return DSCKPT_OK;
}

static pk_obj *loss_scaler(dsw_file *f) {
    pk_obj *o = pk_new(f->doc, PK_OBJECT), *st = pk_new(f->doc, PK_DICT);
    if (!o || !st) return NULL;
    bool dyn = f->x->sp->model_dtype == DSCKPT_F16;
    o->module = pk_strdup(f->doc, "deepspeed.runtime.fp16.loss_scaler");
    o->name = pk_strdup(f->doc, dyn ? "DynamicLossScaler" : "LossScaler");
    o->newobj = true;
    o->args = pk_new(f->doc, PK_TUPLE);
    if (!o->args) return NULL;
    bool ok = pk_dict_set(f->doc, st, S(f, "cur_scale"), pk_new_float(f->doc, dyn ? 65536.0 : 1.0));
    if (dyn) {
        ok = ok && pk_dict_set(f->doc, st, S(f, "cur_iter"), I(f, f->x->sp->step)) &&
             pk_dict_set(f->doc, st, S(f, "last_overflow_iter"), I(f, -1)) &&
             pk_dict_set(f->doc, st, S(f, "scale_factor"), pk_new_float(f->doc, 2.0)) &&
             pk_dict_set(f->doc, st, S(f, "scale_window"), I(f, 1000)) &&
             pk_dict_set(f->doc, st, S(f, "min_scale"), pk_new_float(f->doc, 1.0)) &&
             pk_dict_set(f->doc, st, S(f, "delayed_shift"), I(f, 2)) &&
             pk_dict_set(f->doc, st, S(f, "cur_hysteresis"), I(f, 2)) &&
             pk_dict_set(f->doc, st, S(f, "consecutive_hysteresis"), pk_new_bool(f->doc, false)) &&
             pk_dict_set(f->doc, st, S(f, "raise_error_at_min_scale"), pk_new_bool(f->doc, true));
    }
    ok = ok && pk_dict_set(f->doc, st, S(f, "dynamic"), pk_new_bool(f->doc, dyn));
    if (dyn && ok) {
        pk_obj *dt = pk_new(f->doc, PK_DTYPE);
        if (!dt) return NULL;
        dt->dtype = DSCKPT_F16;
        ok = pk_dict_set(f->doc, st, S(f, "dtype"), dt);
    }
    if (!ok) return NULL;
    o->state = st;
    return o;
}

/* A 0-dim float32 'step' tensor, as torch.optim.AdamW keeps it: param group
 * pg's carried Adam step (native "state"), else the global step. */
static dsckpt_status step_tensor(dsw_file *f, size_t pg, pk_obj **out) {
    size_t si = 0; /* set by new_tensor, used only when it succeeds */
    DS_TRY(new_tensor(f, DSCKPT_F32, 1, 0, NULL, false, out, &si));
    float v = (float)hp(f->x->sp, pg, "step", -1, (double)f->x->sp->step);
    memcpy(f->st[si].inl, &v, 4);
    f->st[si].ninl = 4;
    return DSCKPT_OK;
}

static dsckpt_status synth_optim_root(dsw_file *f) {
    const dsw_ctx *x = f->x;
    const ds_dsw_spec *sp = x->sp;
    pk_obj *root = pk_new(f->doc, PK_DICT), *osd = pk_new(f->doc, PK_DICT);
    pk_obj *inner = pk_new(f->doc, PK_DICT), *state = pk_new(f->doc, PK_DICT), *pgs = pk_new(f->doc, PK_LIST);
    OOM_IF(!root || !osd || !inner || !state || !pgs);
    pk_obj *enm = NULL;
    if (!x->bf16_opt) {
        static const char *const names[] = {"disabled", "optimizer_states", "gradients", "weights"};
        OOM_IF(!(enm = pk_new(f->doc, PK_ENUM)));
        enm->module = pk_strdup(f->doc, "deepspeed.runtime.zero.config");
        enm->name = pk_strdup(f->doc, "ZeroStageEnum");
        enm->member = pk_strdup(f->doc, names[x->stage]);
        enm->i = x->stage;
        OOM_IF(!enm->module || !enm->name || !enm->member);
    }
    if (x->stage == 3) DS_TRY(dset(f, osd, "zero_stage", enm));
    DS_TRY(dset(f, osd, "loss_scaler", loss_scaler(f)));
    DS_TRY(dset(f, osd, "dynamic_loss_scale", pk_new_bool(f->doc, sp->model_dtype == DSCKPT_F16)));
    DS_TRY(dset(f, osd, "overflow", pk_new_bool(f->doc, false)));
    const cJSON *clip = sp->ds_config ? cJSON_GetObjectItemCaseSensitive(sp->ds_config, "gradient_clipping") : NULL;
    if (x->stage != 3) DS_TRY(dset(f, osd, "clip_grad", pk_new_float(f->doc, cJSON_IsNumber(clip) ? clip->valuedouble : 0.0)));
    /* torch AdamW state_dict: one state per flat group (sub-group at stage 3). */
    for (size_t g = 0; g < x->ng; g++) {
        pk_obj *e = pk_new(f->doc, PK_DICT), *stp;
        OOM_IF(!e);
        DS_TRY(step_tensor(f, (size_t)x->g[g].pgroup, &stp));
        DS_TRY(dset(f, e, "step", stp));
        DS_TRY(dset(f, e, "exp_avg", pk_new(f->doc, PK_NONE)));
        DS_TRY(dset(f, e, "exp_avg_sq", pk_new(f->doc, PK_NONE)));
        OOM_IF(!pk_dict_set(f->doc, state, I(f, (int64_t)g), e));
    }
    for (size_t g = 0; g < x->npg; g++) {
        pk_obj *p;
        DS_TRY(adamw_group(f, g, &p));
        DS_TRY(dset(f, p, "params", pk_new(f->doc, PK_LIST))); /* filled by edit_optim */
        OOM_IF(!pk_list_append(f->doc, pgs, p));
    }
    DS_TRY(dset(f, inner, "state", state));
    DS_TRY(dset(f, inner, "param_groups", pgs));
    if (x->stage == 3) {
        DS_TRY(dset(f, osd, "partition_count", I(f, x->M)));
        DS_TRY(dset(f, osd, "optimizer_state_dict", inner));
        DS_TRY(dset(f, osd, "fp32_flat_groups", pk_new(f->doc, PK_LIST)));
    } else {
        DS_TRY(dset(f, osd, "base_optimizer_state", inner));
        DS_TRY(dset(f, osd, "single_partition_of_fp32_groups", pk_new(f->doc, PK_LIST)));
        if (enm) DS_TRY(dset(f, osd, "zero_stage", enm));
        DS_TRY(dset(f, osd, "group_paddings", pk_new(f->doc, PK_LIST)));
        DS_TRY(dset(f, osd, "partition_count", pk_new(f->doc, PK_LIST)));
        DS_TRY(dset(f, osd, "ds_version", S(f, DSW_VERSION)));
        DS_TRY(dset(f, osd, "param_slice_mappings", pk_new(f->doc, PK_LIST)));
    }
    DS_TRY(dset(f, root, "optimizer_state_dict", osd));
    DS_TRY(dset(f, root, "ds_config", sp->ds_config ? from_json(f, sp->ds_config, 0) : pk_new(f->doc, PK_DICT)));
    DS_TRY(dset(f, root, "ds_version", S(f, DSW_VERSION)));
    f->root = root;
    return DSCKPT_OK;
}

/* ---- ZeRO-0: one model-states file holding everything ---- */

/* The param group dict `src` (a template's, reused) or a synthesized AdamW one,
 * with an empty 'params' list. */
static dsckpt_status z0_param_group(dsw_file *f, size_t g, pk_obj *src, pk_obj **out) {
    *out = NULL; /* set on every path (GCC's -Wmaybe-uninitialized cannot tell once inlined) */
    pk_obj *p = src;
    if (!p || p->kind != PK_DICT) DS_TRY(adamw_group(f, g, &p));
    pk_obj *ids = pk_new(f->doc, PK_LIST);
    OOM_IF(!ids);
    DS_TRY(dset(f, p, "params", ids));
    *out = p;
    return DSCKPT_OK;
}

/* The tree zero0_root starts from: the ZeRO-0 template's, or a synthesized
 * model-states root. */
static dsckpt_status zero0_base(dsw_file *f, pk_obj **root) {
    const dsw_ctx *x = f->x;
    if (x->have_tpl) {
        f->tpl = &x->tmodel;
        return tpl_parse(f->tpl, &f->doc, root);
    }
    OOM_IF(!(f->doc = pk_doc_new()));
    DS_TRY(synth_model_root(f, 0)); /* module rebuilt below; shapes / shared_params as DeepSpeed saves them at stage 0 */
    *root = f->root;
    DS_TRY(dset(f, *root, "param_shapes", pk_new(f->doc, PK_NONE)));
    return dset(f, *root, "shared_params", pk_new(f->doc, PK_NONE));
}

/* root['module']: every tensor in full; tied aliases share their owner's storage. */
static dsckpt_status zero0_module(dsw_file *f, pk_obj *root) {
    const ds_dsw_spec *sp = f->x->sp;
    pk_obj *module = odict(f);
    OOM_IF(!module);
    for (size_t t = 0; t < sp->ntensors; t++) {
        const ds_tensor *T = &sp->tensors[t];
        pk_obj *o;
        size_t si;
        DS_TRY(new_tensor(f, T->trainable ? sp->model_dtype : T->dtype, T->numel, T->ndim, T->shape, false, &o, &si));
        DS_TRY(add_piece(f, si, T->trainable ? DS_ST_FP32 : DS_ST_W16, (uint32_t)t, 0, T->numel, 0));
        DS_TRY(dset(f, module, T->name, o));
        for (size_t a = 0; a < T->naliases; a++) {
            pk_obj *al = pk_new(f->doc, PK_TENSOR);
            OOM_IF(!al);
            al->tensor = o->tensor;
            al->dtype = o->dtype;
            DS_TRY(dset(f, module, T->aliases[a], al));
        }
    }
    return dset(f, root, "module", module);
}

/* The optimizer state zero0_root builds, group by group. */
typedef struct z0_optim {
    pk_obj *inner;          /* torch's state_dict(): holds state and param_groups */
    pk_obj *state, *pgs;
    pk_obj *hpg;            /* fp32_groups: per group, the fp32 masters (wrapped only) */
    pk_obj *tstate, *tpgs;  /* the template's state and param_groups, or NULL */
    bool wrapped;           /* bf16/fp16: FP16_UnfusedOptimizer around torch's state_dict */
    int64_t idx;            /* running parameter index, through the groups in order */
} z0_optim;

/* Param group g: its dict appended to pgs, one Adam state per parameter in
 * `state` under the running index, and (wrapped) its fp32 masters as hpg[g]. */
static dsckpt_status zero0_group(dsw_file *f, z0_optim *z, size_t g) {
    const ds_dsw_spec *sp = f->x->sp;
    const dsw_group *G = &f->x->g[g];
    pk_obj *pg, *hl = pk_new(f->doc, PK_LIST);
    OOM_IF(!hl);
    DS_TRY(z0_param_group(f, g, z->tpgs && z->tpgs->kind == PK_LIST && g < z->tpgs->n ? z->tpgs->items[g] : NULL, &pg));
    pk_obj *ids = pk_get(pg, "params");
    for (size_t k = 0; k < G->n; k++, z->idx++) {
        const ds_tensor *T = &sp->tensors[G->t[k]];
        pk_obj *e = pk_new(f->doc, PK_DICT), *stp = NULL, *o;
        size_t si;
        OOM_IF(!e || !pk_list_append(f->doc, ids, I(f, z->idx)));
        pk_obj *te = z->tstate ? pk_get_int_key(z->tstate, z->idx) : NULL;
        if (te && pk_get(te, "step")) DS_TRY(clone_tensor(f, pk_get(te, "step"), &stp));
        else DS_TRY(step_tensor(f, g, &stp)); /* FP16_UnfusedOptimizer's is one ahead of the global step */
        DS_TRY(dset(f, e, "step", stp));
        static const ds_state ms[2] = {DS_ST_EXP_AVG, DS_ST_EXP_AVG_SQ};
        static const char *const mk[2] = {"exp_avg", "exp_avg_sq"};
        for (int q = 0; q < 2; q++) {
            DS_TRY(new_tensor(f, DSCKPT_F32, T->numel, T->ndim, T->shape, false, &o, &si));
            DS_TRY(add_piece(f, si, ms[q], G->t[k], 0, T->numel, 0));
            DS_TRY(dset(f, e, mk[q], o));
        }
        OOM_IF(!pk_dict_set(f->doc, z->state, I(f, z->idx), e));
        if (z->wrapped) {
            DS_TRY(new_tensor(f, DSCKPT_F32, T->numel, T->ndim, T->shape, true, &o, &si));
            DS_TRY(add_piece(f, si, DS_ST_FP32, G->t[k], 0, T->numel, 0));
            OOM_IF(!pk_list_append(f->doc, hl, o));
        }
    }
    OOM_IF(!pk_list_append(f->doc, z->pgs, pg) || !pk_list_append(f->doc, z->hpg, hl));
    return DSCKPT_OK;
}

/* bf16/fp16: FP16_UnfusedOptimizer's dict around torch's state_dict, its loss-scale
 * entries from the template optimizer `topt` when it is one, else fresh. */
static dsckpt_status zero0_wrap(dsw_file *f, const z0_optim *z, const pk_obj *topt, pk_obj **out) {
    const ds_dsw_spec *sp = f->x->sp;
    bool dyn = sp->model_dtype == DSCKPT_F16;
    pk_obj *opt = pk_new(f->doc, PK_DICT);
    OOM_IF(!opt);
    if (topt && pk_get(topt, "fp32_groups")) { /* the template's loss-scale entries, in its order */
        for (size_t i = 0; i < topt->n; i++) {
            const char *k = pk_as_str(topt->keys[i]);
            if (k && strcmp(k, "optimizer_state_dict") && strcmp(k, "fp32_groups"))
                OOM_IF(!pk_dict_set(f->doc, opt, topt->keys[i], topt->items[i]));
        }
    } else {
        DS_TRY(dset(f, opt, "dynamic_loss_scale", pk_new_bool(f->doc, dyn)));
        DS_TRY(dset(f, opt, "cur_scale", pk_new_float(f->doc, dyn ? 65536.0 : 1.0)));
        DS_TRY(dset(f, opt, "cur_iter", I(f, sp->step)));
        if (dyn) {
            DS_TRY(dset(f, opt, "last_overflow_iter", I(f, -1)));
            DS_TRY(dset(f, opt, "scale_factor", pk_new_float(f->doc, 2.0)));
            DS_TRY(dset(f, opt, "scale_window", I(f, 1000)));
        }
    }
    DS_TRY(dset(f, opt, "optimizer_state_dict", z->inner));
    DS_TRY(dset(f, opt, "fp32_groups", z->hpg));
    *out = opt;
    return DSCKPT_OK;
}

/* mp_rank_00_model_states.pt at ZeRO-0, as DeepSpeed 0.19 writes it: `module`
 * holds every weight (trainable ones cast from the fp32 masters), `optimizer`
 * the optimizer's state_dict() — FP16_UnfusedOptimizer's (fp32_groups: the
 * masters, one tensor per parameter) for bf16/fp16, torch's own for fp32 — with
 * one Adam state per parameter, numbered through the groups in order. With a
 * ZeRO-0 template everything else (scheduler, loss scale, hyper-parameters,
 * client state) is carried from it. */
static dsckpt_status zero0_root(dsw_file *f) {
    const dsw_ctx *x = f->x;
    pk_obj *root = NULL;
    DS_TRY(zero0_base(f, &root));
    /* The template's optimizer, and the torch state_dict inside it (or itself). */
    pk_obj *topt = x->have_tpl ? pk_get(root, "optimizer") : NULL;
    if (!topt || topt->kind != PK_DICT) topt = NULL;
    pk_obj *tinner = topt && pk_get(topt, "fp32_groups") ? pk_get(topt, "optimizer_state_dict") : topt;
    DS_TRY(zero0_module(f, root));
    z0_optim z = {.wrapped = x->sp->model_dtype != DSCKPT_F32};
    z.inner = pk_new(f->doc, PK_DICT);
    z.state = pk_new(f->doc, PK_DICT);
    z.pgs = pk_new(f->doc, PK_LIST);
    z.hpg = pk_new(f->doc, PK_LIST);
    OOM_IF(!z.inner || !z.state || !z.pgs || !z.hpg);
    z.tstate = tinner ? pk_get(tinner, "state") : NULL;
    z.tpgs = tinner ? pk_get(tinner, "param_groups") : NULL;
    for (size_t g = 0; g < x->ng; g++) DS_TRY(zero0_group(f, &z, g));
    DS_TRY(dset(f, z.inner, "state", z.state));
    DS_TRY(dset(f, z.inner, "param_groups", z.pgs));
    pk_obj *opt = z.inner;
    if (z.wrapped) DS_TRY(zero0_wrap(f, &z, topt, &opt));
    DS_TRY(dset(f, root, "optimizer", opt));
    DS_TRY(dset(f, root, "dp_world_size", I(f, x->M)));
    f->root = root;
    return DSCKPT_OK;
}

/* ---- per-rank edits (template or synthesized tree alike) ---- */

static pk_obj *need(const dsw_file *f, const pk_obj *d, const char *key, pk_kind kind, dsckpt_status *st) {
    pk_obj *o = pk_get(d, key);
    if (!o || o->kind != kind) {
        *st = ds_err(DSCKPT_ECORRUPT, "%s: '%s' is missing or not a %s", f->tpl ? f->tpl->path : "template", key,
                     pk_kind_name(kind));
        return NULL;
    }
    return o;
}

/* Resets a list to n slots (values set by the caller). */
static dsckpt_status list_reset(dsw_file *f, pk_obj *l, size_t n) {
    l->n = 0;
    for (size_t i = 0; i < n; i++) OOM_IF(!pk_list_append(f->doc, l, pk_new(f->doc, PK_NONE)));
    return DSCKPT_OK;
}

static pk_obj *find_size(const pk_obj *shapes_list, const char *name) {
    for (size_t g = 0; shapes_list && g < shapes_list->n; g++) {
        pk_obj *v = pk_get(shapes_list->items[g], name);
        if (v) return v;
    }
    return NULL;
}

static dsckpt_status edit_model(dsw_file *f, int rank) {
    const dsw_ctx *x = f->x;
    const ds_dsw_spec *sp = x->sp;
    dsckpt_status st = DSCKPT_OK;
    DS_TRY(dset(f, f->root, "dp_world_size", I(f, x->M)));
    pk_obj *shapes = need(f, f->root, "param_shapes", PK_LIST, &st);
    if (!shapes) return st;
    if (x->stage == 3 || !x->have_tpl) {
        /* One OrderedDict of torch.Size per flat group (sub-group at stage 3). */
        pk_obj *old = pk_new(f->doc, PK_LIST);
        OOM_IF(!old);
        for (size_t i = 0; i < shapes->n; i++) OOM_IF(!pk_list_append(f->doc, old, shapes->items[i]));
        shapes->n = 0;
        for (size_t g = 0; g < x->ng; g++) {
            pk_obj *d = odict(f);
            OOM_IF(!d);
            for (size_t k = 0; k < x->g[g].n; k++) {
                const ds_tensor *T = &sp->tensors[x->g[g].t[k]];
                pk_obj *sz = find_size(old, T->name);
                DS_TRY(dset(f, d, T->name, sz ? sz : size_obj(f, T)));
            }
            OOM_IF(!pk_list_append(f->doc, shapes, d));
        }
    }
    if (x->stage == 3) {
        if (rank > 0) {
            pk_obj *sh = pk_new(f->doc, PK_DICT);
            OOM_IF(!sh);
            DS_TRY(dset(f, f->root, "shared_params", sh));
        }
        pk_obj *ff = pk_get(f->root, "frozen_param_fragments");
        for (size_t i = 0; i < x->nfrozen; i++) {
            uint32_t t = x->frozen[i];
            const ds_tensor *T = &sp->tensors[t];
            if (!ff || ff->kind != PK_DICT) return ds_err(DSCKPT_ECORRUPT, "%s: frozen_param_fragments is missing",
                                                          f->tpl ? f->tpl->path : "template");
            uint64_t q = ds_part_piece(T->numel, x->M), s0, cnt;
            ds_part_real(q, rank, T->numel, &s0, &cnt);
            pk_obj *o;
            size_t si;
            DS_TRY(new_vec(f, T->dtype, q, q, false, &o, &si));
            DS_TRY(add_piece(f, si, DS_ST_W16, t, s0, cnt, 0));
            DS_TRY(dset(f, ff, T->name, o));
        }
    } else if (x->stage == 2 && !x->have_tpl) {
        pk_obj *ff = pk_get(f->root, "frozen_param_fragments");
        for (size_t i = 0; i < x->nfrozen; i++) {
            uint32_t t = x->frozen[i];
            const ds_tensor *T = &sp->tensors[t];
            pk_obj *o;
            size_t si;
            DS_TRY(new_tensor(f, T->dtype, T->numel, T->ndim, T->shape, false, &o, &si));
            DS_TRY(add_piece(f, si, DS_ST_W16, t, 0, T->numel, 0));
            DS_TRY(dset(f, ff, T->name, o));
        }
    }
    return DSCKPT_OK;
}

/* Stage 1/2 rank r of group g: the tensors intersecting [r*P, (r+1)*P). */
static dsckpt_status flat_pieces(dsw_file *f, const dsw_group *G, int r, size_t store, ds_state s) {
    uint64_t pos = 0;
    for (size_t k = 0; k < G->n; k++) {
        uint64_t n = f->x->sp->tensors[G->t[k]].numel;
        ds_slice sl = ds_part_slice(1, f->x->M, r, G->part.part, pos, n);
        if (sl.count) DS_TRY(add_piece(f, store, s, G->t[k], sl.start, sl.count, sl.at));
        pos += n + (G->pad ? G->pad[k] : 0);
    }
    return DSCKPT_OK;
}

static dsckpt_status stage3_pieces(dsw_file *f, const dsw_group *G, int r, size_t store, ds_state s) {
    uint64_t pos = 0;
    for (size_t k = 0; k < G->n; k++) {
        uint64_t n = f->x->sp->tensors[G->t[k]].numel;
        ds_slice sl = ds_part_slice(3, f->x->M, r, 0, pos, n);
        DS_TRY(add_piece(f, store, s, G->t[k], sl.start, sl.count, sl.at));
        pos += ds_part_piece(n, f->x->M);
    }
    return DSCKPT_OK;
}

/* One rank's optimizer tree as edit_optim rewrites it. */
typedef struct optim_edit {
    int r;           /* the rank */
    bool s3;         /* stage 3: sub-groups, fp32_flat_groups */
    bool rg;         /* requires_grad of the template's fp32 partitions */
    pk_obj *state;   /* the template's Adam state, by group */
    pk_obj *fp32;    /* the fp32 partitions, one slot per group */
    pk_obj *nstate;  /* the Adam state written, by group */
} optim_edit;

/* Flat group (sub-group) g: its fp32 partition, then its Adam state: the
 * template's entry (same group at stages 1/2, entry 0 for new stage-3
 * sub-groups), moments rebuilt, step cloned. */
static dsckpt_status edit_optim_group(dsw_file *f, const optim_edit *e, size_t g) {
    const dsw_ctx *x = f->x;
    const dsw_group *G = &x->g[g];
    bool s3 = e->s3;
    int r = e->r;
    uint64_t len = s3 ? G->numel : G->part.part;
    uint64_t shown = len; /* stripped of this rank's padding for DeepSpeedZeroOptimizer */
    if (!s3 && !x->bf16_opt) shown = len - ds_part_flat_padding(G->part, r);
    size_t si;
    DS_TRY(new_vec(f, DSCKPT_F32, len, shown, e->rg, &e->fp32->items[g], &si));
    DS_TRY(s3 ? stage3_pieces(f, G, r, si, DS_ST_FP32) : flat_pieces(f, G, r, si, DS_ST_FP32));
    pk_obj *tmpl = pk_get_int_key(e->state, s3 && x->have_tpl ? 0 : (int64_t)g);
    if (!tmpl || tmpl->kind != PK_DICT) return ds_err(DSCKPT_ECORRUPT, "%s: no optimizer state for group %zu",
                                                      f->tpl ? f->tpl->path : "template", g);
    pk_obj *ent = pk_new(f->doc, PK_DICT);
    OOM_IF(!ent);
    for (size_t k = 0; k < tmpl->n; k++) {
        const char *key = pk_as_str(tmpl->keys[k]);
        pk_obj *v = tmpl->items[k];
        if (key && (!strcmp(key, "exp_avg") || !strcmp(key, "exp_avg_sq"))) {
            ds_state s = !strcmp(key, "exp_avg") ? DS_ST_EXP_AVG : DS_ST_EXP_AVG_SQ;
            DS_TRY(new_vec(f, DSCKPT_F32, len, len, false, &v, &si));
            DS_TRY(s3 ? stage3_pieces(f, G, r, si, s) : flat_pieces(f, G, r, si, s));
        } else if (v->kind == PK_TENSOR && s3 && x->have_tpl) {
            DS_TRY(clone_tensor(f, v, &v)); /* each sub-group its own step tensor */
        }
        OOM_IF(!pk_dict_set(f->doc, ent, tmpl->keys[k], v));
    }
    OOM_IF(!pk_dict_set(f->doc, e->nstate, I(f, (int64_t)g), ent));
    return DSCKPT_OK;
}

/* param_groups[pg]['params']: the flat groups (sub-groups) of each param group
 * (at stages 1/2 with a template, its own lists are kept). */
static dsckpt_status edit_param_groups(dsw_file *f, pk_obj *pgs) {
    const dsw_ctx *x = f->x;
    bool s3 = x->stage == 3;
    if (pgs->n != x->npg && (s3 || !x->have_tpl))
        return ds_err(DSCKPT_ECORRUPT, "%s: %zu optimizer param groups, the tensors name %zu",
                      f->tpl ? f->tpl->path : "template", pgs->n, x->npg);
    for (size_t p = 0; p < pgs->n && (s3 || !x->have_tpl); p++) {
        pk_obj *l = pk_new(f->doc, PK_LIST);
        OOM_IF(!l);
        for (size_t g = 0; g < x->ng; g++)
            if ((size_t)x->g[g].pgroup == p) OOM_IF(!pk_list_append(f->doc, l, I(f, (int64_t)g)));
        OOM_IF(!pgs->items[p] || pgs->items[p]->kind != PK_DICT);
        DS_TRY(dset(f, pgs->items[p], "params", l));
    }
    return DSCKPT_OK;
}

/* Stages 1/2: param_slice_mappings, per group the address of each tensor's
 * elements inside rank r's partition. */
static dsckpt_status slice_mappings(dsw_file *f, pk_obj *psm, int r) {
    const dsw_ctx *x = f->x;
    DS_TRY(list_reset(f, psm, x->ng));
    for (size_t g = 0; g < x->ng; g++) {
        const dsw_group *G = &x->g[g];
        pk_obj *d = odict(f);
        OOM_IF(!d);
        uint64_t lo = (uint64_t)r * G->part.part, hi = lo + G->part.part, pos = 0;
        for (size_t k = 0; k < G->n; k++) {
            const ds_tensor *T = &x->sp->tensors[G->t[k]];
            uint64_t a = DS_MAX(pos, lo), b = DS_MIN(pos + T->numel, hi);
            if (a < b) DS_TRY(dset(f, d, T->name, frag_addr(f, b - a, a - lo)));
            pos += T->numel + (G->pad ? G->pad[k] : 0);
        }
        psm->items[g] = d;
    }
    return DSCKPT_OK;
}

/* Stages 1/2: the per-group lists of the optimizer dict osd for rank r
 * (group_paddings, partition_count, param_slice_mappings), where present. */
static dsckpt_status edit_flat_lists(dsw_file *f, pk_obj *osd, int r) {
    const dsw_ctx *x = f->x;
    pk_obj *pads = pk_get(osd, "group_paddings"), *pc = pk_get(osd, "partition_count");
    pk_obj *psm = pk_get(osd, "param_slice_mappings");
    if (pads && pads->kind == PK_LIST) {
        DS_TRY(list_reset(f, pads, x->ng));
        for (size_t g = 0; g < x->ng; g++) {
            const dsw_group *G = &x->g[g];
            uint64_t pad = x->bf16_opt ? (r == x->M - 1 ? G->part.padded - G->part.numel : 0)
                                       : ds_part_flat_padding(G->part, r);
            OOM_IF(!(pads->items[g] = I(f, (int64_t)pad)));
        }
    }
    if (pc && pc->kind == PK_LIST) {
        DS_TRY(list_reset(f, pc, x->ng));
        for (size_t g = 0; g < x->ng; g++) OOM_IF(!(pc->items[g] = I(f, x->M)));
    } else DS_TRY(dset(f, osd, "partition_count", I(f, x->M)));
    if (psm && psm->kind == PK_LIST) DS_TRY(slice_mappings(f, psm, r));
    return DSCKPT_OK;
}

static dsckpt_status edit_optim(dsw_file *f, int r) {
    const dsw_ctx *x = f->x;
    dsckpt_status st = DSCKPT_OK;
    pk_obj *osd = need(f, f->root, "optimizer_state_dict", PK_DICT, &st);
    if (!osd) return st;
    bool s3 = x->stage == 3;
    pk_obj *inner = need(f, osd, s3 ? "optimizer_state_dict" : "base_optimizer_state", PK_DICT, &st);
    pk_obj *state = inner ? need(f, inner, "state", PK_DICT, &st) : NULL;
    pk_obj *pgs = inner ? need(f, inner, "param_groups", PK_LIST, &st) : NULL;
    pk_obj *fp32 = need(f, osd, s3 ? "fp32_flat_groups" : "single_partition_of_fp32_groups", PK_LIST, &st);
    if (!state || !pgs || !fp32) return st;
    pk_obj *st0 = pk_get_int_key(state, 0);
    if (!st0 || st0->kind != PK_DICT) return ds_err(DSCKPT_ECORRUPT, "%s: optimizer state 0 is missing",
                                                    f->tpl ? f->tpl->path : "template");
    optim_edit e = {.r = r, .s3 = s3, .state = state, .fp32 = fp32};
    /* Template requires_grad flag of the fp32 partitions (True in DeepSpeed's files). */
    e.rg = fp32->n && fp32->items[0]->kind == PK_TENSOR ? fp32->items[0]->tensor.requires_grad : true;
    DS_TRY(list_reset(f, fp32, x->ng));
    e.nstate = pk_new(f->doc, PK_DICT);
    OOM_IF(!e.nstate);
    for (size_t g = 0; g < x->ng; g++) DS_TRY(edit_optim_group(f, &e, g));
    DS_TRY(dset(f, inner, "state", e.nstate));
    DS_TRY(edit_param_groups(f, pgs));
    if (s3) return dset(f, osd, "partition_count", I(f, x->M));
    return edit_flat_lists(f, osd, r);
}

/* ---- writing the .pt files: planned, then filled by the copy engine ----
 *
 * Every size is known before a byte is written, so each file's zip layout is
 * planned up front (zip_layout): the pickle, the metadata members and inline
 * values are written at once; every other storage (generated, or copied from the
 * template) is cut into units that the copy engine fills, CRCs and writes on
 * every worker, all files' units in one run, so a single big file uses all
 * cores; then each member's CRC-32 is combined from its units' (crc32_combine),
 * the headers, descriptors and central directory are written, and the file is
 * made durable. The files are the tag directory's (which the caller commits);
 * on failure every file created here is unlinked. */

#define DSW_UNIT (8u << 20) /* bytes of a storage per copy-engine unit */

typedef struct dsw_member {
    const dsw_store *s;
    size_t zi;           /* member number in the layout */
    uint64_t off, bytes; /* where its data goes */
    size_t u0, nu;       /* its units */
} dsw_member;

typedef struct dsw_out {
    dsw_file f;
    char name[128];
    char *path;
    int fd;
    bool created;        /* path is ours to unlink on failure */
    zip_layout *zl;
    size_t nz;           /* members added to zl */
    dsw_member *m;       /* storages the engine writes */
    size_t nm;
} dsw_out;

typedef struct dsw_unit {
    const dsw_member *m;
    uint32_t crc;        /* of the unit's bytes, written by the worker that fills it */
} dsw_unit;

typedef struct dsw_run {
    dsw_ctx *x;
    const char *dir;
    ds_progress *prog;
    size_t nmodel;       /* outputs [0, nmodel) are model-states files, then one optimizer file per rank */
    dsw_out *out;
    size_t nout;
    ds_copy_unit *cu;
    dsw_unit *u;
    size_t nu;
    float **f32;         /* per worker: DS_COPY_PIECE 16-bit elements as fp32 */
} dsw_run;

/* Pieces are sorted by `at`; checked here, once, so filling needs no checks. */
static dsckpt_status check_pieces(const dsw_ctx *x, const dsw_store *s) {
    uint64_t pos = 0;
    for (size_t i = 0; i < s->npieces; i++) {
        const dsw_piece *p = &s->pieces[i];
        if (p->at < pos || p->at + p->numel > s->numel) return ds_err(DSCKPT_EINTERNAL, "overlapping storage pieces");
        const ds_tensor *T = &x->sp->tensors[p->t];
        dsckpt_dtype have = p->s == DS_ST_W16 ? T->dtype : DSCKPT_F32;
        if (have != s->dtype && !(have == DSCKPT_F32 && (s->dtype == DSCKPT_BF16 || s->dtype == DSCKPT_F16)))
            return ds_err(DSCKPT_EUNSUPPORTED, "tensor '%s' is stored as %s, cannot write it as %s", T->name,
                          dsckpt_dtype_name(have), dsckpt_dtype_name(s->dtype));
        pos = p->at + p->numel;
    }
    return DSCKPT_OK;
}

/* `n` elements of piece p from element `start` of its state, in the store's dtype. */
static dsckpt_status fill_piece(const ds_dsw_spec *sp, const dsw_store *s, const dsw_piece *p, uint64_t start,
                                size_t n, uint8_t *dst, float *f32, int worker) {
    dsckpt_dtype have = p->s == DS_ST_W16 ? sp->tensors[p->t].dtype : DSCKPT_F32;
    if (have == s->dtype) return sp->fill(sp->fill_user, p->s, p->t, start, n, dst, worker);
    DS_TRY(sp->fill(sp->fill_user, p->s, p->t, start, n, f32, worker));
    if (s->dtype == DSCKPT_BF16) ds_cast_f32_to_bf16(f32, (uint16_t *)dst, n);
    else ds_cast_f32_to_f16(f32, (uint16_t *)dst, n);
    return DSCKPT_OK;
}

/* Bytes [rel, rel + len) of a generated storage: its pieces' values, zeros between. */
static dsckpt_status gen_bytes(const ds_dsw_spec *sp, const dsw_store *s, uint64_t rel, size_t len, uint8_t *buf,
                               float *f32, int worker) {
    size_t es = dsckpt_dtype_size(s->dtype);
    if (rel % es || len % es) return ds_err(DSCKPT_EINTERNAL, "storage range not on element boundaries");
    uint64_t e0 = rel / es, e = e0, end = e0 + len / es;
    size_t lo = 0, hi = s->npieces; /* the first piece ending after e0 */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->pieces[mid].at + s->pieces[mid].numel <= e0) lo = mid + 1;
        else hi = mid;
    }
    for (size_t i = lo; e < end;) {
        const dsw_piece *p = i < s->npieces ? &s->pieces[i] : NULL;
        uint8_t *dst = buf + (e - e0) * es;
        if (!p || p->at > e) {
            uint64_t z = p ? DS_MIN(p->at, end) : end;
            memset(dst, 0, (size_t)(z - e) * es);
            e = z;
            continue;
        }
        uint64_t n = DS_MIN(p->at + p->numel, end) - e;
        DS_TRY(fill_piece(sp, s, p, p->start + (e - p->at), (size_t)n, dst, f32, worker));
        e += n;
        if (e == p->at + p->numel) i++;
    }
    return DSCKPT_OK;
}

/* The copy engine's fill: a piece of one storage, its CRC-32 carried on in its unit. */
static dsckpt_status fill_unit(void *user, size_t unit, size_t file, uint64_t offset, size_t len, void *buf,
                               const void **out, int worker) {
    (void)out;
    dsw_run *R = user;
    dsw_unit *u = &R->u[unit];
    const dsw_store *s = u->m->s;
    const dsw_out *o = &R->out[file];
    uint64_t rel = offset - u->m->off;
    dsckpt_status st;
    if (s->from_tpl) st = ds_pread_full(o->f.tpl->fd, buf, len, s->toff + rel, o->f.tpl->path);
    else st = gen_bytes(R->x->sp, s, rel, len, buf, R->f32[worker], worker);
    if (st) return ds_err_prefix(st, "writing %s", o->name);
    u->crc = (uint32_t)crc32_z(u->crc, buf, len);
    return DSCKPT_OK;
}

/* Numeric order of the decimal keys "0", "1", ..., "10" (torch 2.x's write order). */
static int cmp_newkey(const void *a, const void *b) {
    const dsw_store *x = *(const dsw_store *const *)a, *y = *(const dsw_store *const *)b;
    size_t lx = strlen(x->newkey), ly = strlen(y->newkey);
    return lx != ly ? (lx < ly ? -1 : 1) : strcmp(x->newkey, y->newkey);
}

/* A member written at once (pickle, metadata, inline values). */
static dsckpt_status put_small(dsw_out *o, const char *rel, const void *data, size_t n) {
    uint64_t off;
    DS_TRY(zip_layout_add(o->zl, rel, n, &off));
    zip_layout_set_crc(o->zl, o->nz++, (uint32_t)crc32_z(0L, data, n));
    return n ? ds_pwrite_full(o->fd, data, n, off, o->path) : DSCKPT_OK;
}

static dsckpt_status serialization_id(const uint8_t *pkl, size_t n, char out[48]) {
    uint8_t md[DS_SHA256_LEN];
    DS_TRY(ds_sha256(pkl, n, md));
    uint64_t a = 0, b = 0;
    for (int i = 0; i < 8; i++) {
        a = a << 8 | md[i];
        b = b << 8 | md[8 + i];
    }
    snprintf(out, 48, "%020llu%020llu", (unsigned long long)a, (unsigned long long)b);
    return DSCKPT_OK;
}

static int cmp_piece(const void *a, const void *b) {
    const dsw_piece *x = a, *y = b;
    return x->at < y->at ? -1 : x->at > y->at;
}

/* The storages in the order torch 2.x writes them (malloc'd), pieces sorted. */
static dsckpt_status used_stores(dsw_file *f, const dsw_store ***order, size_t *n) {
    DS_TRY(ds_calloc(f->n ? f->n : 1, sizeof **order, order));
    size_t nu = 0;
    for (size_t i = 0; i < f->n; i++) {
        if (!f->st[i].used) continue;
        if (f->st[i].npieces > 1) qsort(f->st[i].pieces, f->st[i].npieces, sizeof *f->st[i].pieces, cmp_piece);
        if (!f->st[i].from_tpl && !f->st[i].ninl) DS_TRY(check_pieces(f->x, &f->st[i]));
        (*order)[nu++] = &f->st[i];
    }
    qsort(*order, nu, sizeof **order, cmp_newkey);
    *n = nu;
    return DSCKPT_OK;
}

/* The storages' members: inline values written, the others left to the engine. */
static dsckpt_status plan_stores(dsw_out *o, const dsw_store **order, size_t n) {
    DS_TRY(ds_calloc(n ? n : 1, sizeof *o->m, &o->m));
    for (size_t i = 0; i < n; i++) {
        const dsw_store *d = order[i];
        char rel[40];
        snprintf(rel, sizeof rel, "data/%s", d->newkey);
        if (d->ninl && !d->from_tpl) {
            DS_TRY(put_small(o, rel, d->inl, d->ninl));
            continue;
        }
        dsw_member *m = &o->m[o->nm++];
        *m = (dsw_member){.s = d, .zi = o->nz++, .bytes = d->from_tpl ? d->tbytes : d->numel * dsckpt_dtype_size(d->dtype)};
        DS_TRY(zip_layout_add(o->zl, rel, m->bytes, &m->off));
    }
    return DSCKPT_OK;
}

/* Creates the file and writes all but the storages' data (their CRCs come later). */
static dsckpt_status plan_pt(dsw_out *o, const char *dir) {
    dsw_file *f = &o->f;
    uint8_t *pkl = NULL;
    size_t pkl_len = 0, nu = 0;
    const dsw_store **order = NULL;
    char prefix[sizeof o->name];
    snprintf(prefix, sizeof prefix, "%s", o->name);
    char *dot = strrchr(prefix, '.');
    if (dot) *dot = '\0';
    dsckpt_status st = pk_serialize_ex(f->root, rename_key, f, &pkl, &pkl_len);
    if (f->err) st = f->err;
    if (!st && !(o->path = ds_join(dir, o->name))) st = DSCKPT_ENOMEM;
    if (!st) st = used_stores(f, &order, &nu);
    if (!st) st = zip_layout_new(prefix, f->x->align, &o->zl);
    if (!st && (o->fd = open(o->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0)
        st = ds_err_errno(errno, "%s: cannot create", o->path);
    o->created = !st;
    char alignbuf[16], sid[48];
    snprintf(alignbuf, sizeof alignbuf, "%u", (unsigned)f->x->align);
    if (!st) st = put_small(o, "data.pkl", pkl, pkl_len);
    /* torch 2.x's metadata members, in its order. */
    if (!st) st = put_small(o, ".format_version", "1", 1);
    if (!st) st = put_small(o, ".storage_alignment", alignbuf, strlen(alignbuf));
    if (!st) st = put_small(o, "byteorder", "little", 6);
    if (!st) st = plan_stores(o, order, nu);
    if (!st) st = put_small(o, "version", "3\n", 2);
    /* torch writes two zero-padded 64-bit numbers; here they come from the
     * SHA-256 of data.pkl, so equal inputs give equal files. */
    if (!st) st = serialization_id(pkl, pkl_len, sid);
    if (!st) st = put_small(o, ".data/serialization_id", sid, 40);
    free(pkl);
    free(order);
    return st;
}

/* Output j's pickle tree, built or edited from its template. */
static dsckpt_status build_tree(dsw_run *R, size_t j, dsw_out *o) {
    dsw_ctx *x = R->x;
    dsw_file *f = &o->f;
    bool model = j < R->nmodel;
    int rank = (int)(model ? j : j - R->nmodel);
    if (model) {
        if (x->stage == 3) snprintf(o->name, sizeof o->name, "zero_pp_rank_%d_mp_rank_00_model_states.pt", rank);
        else snprintf(o->name, sizeof o->name, "mp_rank_00_model_states.pt");
    } else {
        snprintf(o->name, sizeof o->name, "%szero_pp_rank_%d_mp_rank_00_optim_states.pt", x->optim_prefix, rank);
    }
    *f = (dsw_file){.x = x};
    dsckpt_status st;
    if (x->stage == 0) {
        st = zero0_root(f);
    } else if (x->have_tpl) {
        f->tpl = model ? &x->tmodel : &x->toptim;
        st = tpl_parse(f->tpl, &f->doc, &f->root);
    } else {
        f->doc = pk_doc_new();
        st = f->doc ? (model ? synth_model_root(f, rank) : synth_optim_root(f)) : ds_err(DSCKPT_ENOMEM, "out of memory");
    }
    if (!st && x->stage != 0) st = model ? edit_model(f, rank) : edit_optim(f, rank);
    if (!st && x->have_tpl && x->sp->drop_unknown) { /* find_templates listed them */
        ds_unknown_list ul = {0};
        st = ds_unknown_in_tree(f->root, f->tpl->path, true, &ul);
        ds_unknown_list_free(&ul);
    }
    return st;
}

/* Phase 1, one job per output file. */
static dsckpt_status plan_job(void *u, size_t j, int worker) {
    (void)worker;
    dsw_run *R = u;
    dsw_out *o = &R->out[j];
    dsckpt_status st = build_tree(R, j, o);
    if (!st) st = plan_pt(o, R->dir);
    pk_doc_free(o->f.doc); /* serialized: the tree is no longer needed */
    o->f.doc = NULL;
    o->f.root = NULL;
    if (st) ds_err_prefix(st, "writing %s", o->name);
    return st;
}

/* Phase 2: every engine-written storage of every file, in units of DSW_UNIT bytes
 * (element-aligned: a multiple of every dtype size), through the copy engine. */
static dsckpt_status copy_stores(dsw_run *R, int threads) {
    size_t n = 0;
    for (size_t j = 0; j < R->nout; j++)
        for (size_t i = 0; i < R->out[j].nm; i++) n += (size_t)ds_ceil_div(R->out[j].m[i].bytes, DSW_UNIT);
    DS_TRY(ds_calloc(n ? n : 1, sizeof *R->cu, &R->cu));
    DS_TRY(ds_calloc(n ? n : 1, sizeof *R->u, &R->u));
    for (size_t j = 0; j < R->nout; j++)
        for (size_t i = 0; i < R->out[j].nm; i++) {
            dsw_member *m = &R->out[j].m[i];
            m->u0 = R->nu;
            for (uint64_t off = 0; off < m->bytes; off += DSW_UNIT) {
                R->cu[R->nu] = (ds_copy_unit){.file = j, .offset = m->off + off, .len = DS_MIN(DSW_UNIT, m->bytes - off)};
                R->u[R->nu++] = (dsw_unit){.m = m};
            }
            m->nu = R->nu - m->u0;
        }
    DS_TRY(ds_calloc((size_t)threads, sizeof *R->f32, &R->f32));
    for (int i = 0; i < threads; i++) DS_TRY(ds_malloc((size_t)DS_COPY_PIECE * 2, &R->f32[i]));
    ds_copy_file *cf = NULL;
    DS_TRY(ds_calloc(R->nout, sizeof *cf, &cf));
    for (size_t j = 0; j < R->nout; j++) cf[j] = (ds_copy_file){.fd = R->out[j].fd, .name = R->out[j].path};
    ds_copy_job cj = {.files = cf, .nfiles = R->nout, .units = R->cu, .nunits = R->nu, .fill = fill_unit, .user = R,
                      .threads = threads, .prog = R->prog};
    dsckpt_status st = ds_copy_run(&cj);
    free(cf);
    return st;
}

/* Phase 3 for one file: CRCs (a member copied through must match its source's,
 * so a damaged member is never written out under a fresh, valid CRC), headers,
 * descriptors, central directory; then durable. */
static dsckpt_status finish_pt(const dsw_run *R, dsw_out *o) {
    for (size_t i = 0; i < o->nm; i++) {
        const dsw_member *m = &o->m[i];
        uLong crc = crc32(0L, Z_NULL, 0);
        for (size_t k = m->u0; k < m->u0 + m->nu; k++) crc = crc32_combine(crc, R->u[k].crc, (z_off_t)R->cu[k].len);
        if (m->s->from_tpl && R->x->sp->check_reads && (uint32_t)crc != m->s->tcrc)
            return ds_err(DSCKPT_ECHECKSUM,
                          "%s: member '%.200s': CRC-32 mismatch: the file is damaged (reading with checks off reads it anyway)",
                          o->f.tpl->path, m->s->tname);
        zip_layout_set_crc(o->zl, m->zi, (uint32_t)crc);
    }
    DS_TRY(zip_layout_write(o->zl, o->fd, o->path));
    if (fsync(o->fd) != 0) return ds_err_errno(errno, "%s: fsync failed", o->path);
    int fd = o->fd;
    o->fd = -1;
    if (close(fd) != 0) return ds_err_errno(errno, "%s: close failed", o->path);
    return DSCKPT_OK;
}

static dsckpt_status finish_job(void *u, size_t j, int worker) {
    (void)worker;
    dsw_run *R = u;
    dsckpt_status st = finish_pt(R, &R->out[j]);
    if (st) ds_err_prefix(st, "writing %s", R->out[j].name);
    return st;
}

/* Frees the run; with `failed`, first unlinks every file it created. */
static void run_clear(dsw_run *R, int threads, bool failed) {
    for (size_t j = 0; R->out && j < R->nout; j++) {
        dsw_out *o = &R->out[j];
        if (o->fd >= 0) close(o->fd);
        if (failed && o->created) unlink(o->path);
        free(o->path);
        free(o->m);
        zip_layout_free(o->zl);
        file_clear(&o->f);
    }
    for (int i = 0; R->f32 && i < threads; i++) free(R->f32[i]);
    free(R->f32);
    free(R->out);
    free(R->cu);
    free(R->u);
}

/* Every output file: planned in parallel (one job per file), filled by the copy
 * engine, finished in parallel. */
static dsckpt_status write_files(dsw_run *R, int threads) {
    DS_TRY(ds_calloc(R->nout, sizeof *R->out, &R->out));
    for (size_t j = 0; j < R->nout; j++) R->out[j].fd = -1;
    dsckpt_status st = ds_parallel_run(R->nout, threads, plan_job, R, NULL);
    if (!st) st = copy_stores(R, threads);
    if (!st) st = ds_parallel_run(R->nout, threads, finish_job, R, NULL);
    run_clear(R, threads, st != DSCKPT_OK);
    return st;
}

/* Nothing opaque is copied through: a pickled object outside the allow-list in
 * what is carried (client state, ...) is refused before anything is written,
 * unless drop_unknown (then each file's entries holding one are left out when it
 * is written). */
static dsckpt_status screen_templates(const dsw_ctx *x) {
    ds_unknown_list ul = {0};
    dsckpt_status st = tpl_screen(&x->tmodel, ds_basename_ref(x->tmodel.path), &ul);
    if (!st && x->toptim.zip) st = tpl_screen(&x->toptim, ds_basename_ref(x->toptim.path), &ul);
    if (!st && ul.count && !x->sp->drop_unknown)
        st = ds_err(DSCKPT_EUNSUPPORTED,
                    "%s: %zu pickled object%s outside the allow-list (DeepSpeed's torch.load would call %s) would be "
                    "carried into the output: %s (drop_unknown_objects leaves out the entries holding %s)",
                    x->sp->template_dir, ul.count, ul.count == 1 ? "" : "s", ul.count == 1 ? "it" : "them",
                    ul.text ? ul.text : "", ul.count == 1 ? "it" : "them");
    ds_unknown_list_free(&ul);
    return st;
}

static dsckpt_status find_templates(dsw_ctx *x) {
    const char *dir = x->sp->template_dir;
    const char *model = x->stage == 3 ? "zero_pp_rank_0_mp_rank_00_model_states.pt" : "mp_rank_00_model_states.pt";
    DS_TRY(tpl_open(dir, model, &x->tmodel));
    char *p = ds_join(dir, "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt");
    if (!p) return DSCKPT_ENOMEM;
    bool bf16 = ds_exists(p);
    free(p);
    snprintf(x->optim_prefix, sizeof x->optim_prefix, "%s", bf16 ? "bf16_" : "");
    char name[96];
    snprintf(name, sizeof name, "%szero_pp_rank_0_mp_rank_00_optim_states.pt", x->optim_prefix);
    DS_TRY(tpl_open(dir, name, &x->toptim));
    zip_torch_meta meta;
    DS_TRY(zip_torch_meta_read(x->toptim.fd, x->toptim.zip, x->toptim.path, &meta));
    x->align = (uint32_t)meta.storage_alignment;
    /* BF16_Optimizer files have no zero_stage. */
    pk_doc *d = NULL;
    pk_obj *root = NULL;
    DS_TRY(tpl_parse(&x->toptim, &d, &root));
    pk_obj *osd = pk_get(root, "optimizer_state_dict");
    x->bf16_opt = x->stage != 3 && osd && !pk_get(osd, "zero_stage");
    pk_doc_free(d);
    return screen_templates(x);
}

dsckpt_status ds_deepspeed_write(const ds_dsw_spec *sp, const char *tagdir, ds_progress *prog) {
    if (!sp || !tagdir || !sp->fill) return ds_err(DSCKPT_EINVAL, "ds_deepspeed_write: NULL argument");
    if (sp->stage < 0 || sp->stage > 3)
        return ds_err(DSCKPT_EUNSUPPORTED, "DeepSpeed files are written for ZeRO stages 0-3 (asked for stage %d)",
                      sp->stage);
    if (sp->world_size < 1) return ds_err(DSCKPT_EINVAL, "world size must be at least 1");
    dsw_ctx x = {.sp = sp, .M = sp->world_size, .stage = sp->stage, .have_tpl = sp->template_dir != NULL, .align = 64};
    x.tmodel.fd = x.toptim.fd = -1;
    dsckpt_status st = DSCKPT_OK;
    if (x.have_tpl && x.stage == 0) {
        DS_TRYGOTO(tpl_open(sp->template_dir, "mp_rank_00_model_states.pt", &x.tmodel), done);
        zip_torch_meta meta;
        DS_TRYGOTO(zip_torch_meta_read(x.tmodel.fd, x.tmodel.zip, x.tmodel.path, &meta), done);
        x.align = (uint32_t)meta.storage_alignment;
        DS_TRYGOTO(screen_templates(&x), done);
    } else if (x.have_tpl) DS_TRYGOTO(find_templates(&x), done);
    else {
        snprintf(x.optim_prefix, sizeof x.optim_prefix, "%s", sp->model_dtype == DSCKPT_BF16 ? "bf16_" : "");
        x.bf16_opt = sp->bf16_optimizer && sp->stage == 1;
    }
    DS_TRYGOTO(make_groups(&x), done);
    if (x.have_tpl && x.stage != 3 && x.stage != 0) DS_TRYGOTO(load_alignment(&x), done);
    if (x.ng == 0) {
        st = ds_err(DSCKPT_EUNSUPPORTED, "no trainable parameters: DeepSpeed writes no optimizer partitions");
        goto done;
    }
    if (prog && !prog->total) {
        /* For the progress bar: fp32 master + two moments per trainable element,
         * and the module weights in their dtype (an estimate: padding excluded). */
        for (size_t i = 0; i < sp->ntensors; i++)
            prog->total += sp->tensors[i].numel * ((sp->tensors[i].trainable ? 12 : 0) + dsckpt_dtype_size(sp->tensors[i].dtype));
    }
    dsw_run R = {.x = &x, .dir = tagdir, .prog = prog, .nmodel = sp->stage == 3 ? (size_t)x.M : 1};
    /* ZeRO-0 writes no optimizer files: its one model-states file holds the optimizer. */
    R.nout = R.nmodel + (sp->stage == 0 ? 0 : (size_t)x.M);
    st = write_files(&R, ds_thread_count(sp->threads));
done:
    for (size_t g = 0; g < x.ng; g++) {
        free(x.g[g].t);
        free(x.g[g].pad);
    }
    free(x.g);
    free(x.frozen);
    tpl_close(&x.tmodel);
    tpl_close(&x.toptim);
    return st;
}
