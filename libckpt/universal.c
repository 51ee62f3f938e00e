/*
 * universal.c — writing DeepSpeed's universal checkpoint layout (what
 * deepspeed/checkpoint/ds_to_universal.py writes and load_universal reads):
 *
 *   OUT/latest_universal                 the tag directory's name
 *   OUT/<tag>_universal/
 *     zero/optimizer_state.pt            rank 0's ZeRO optimizer dict: stages 1/2 without
 *                                        base_optimizer_state, param_slice_mappings and
 *                                        single_partition_of_fp32_groups; stage 3 whole;
 *                                        plus 'param_groups' (the hyper-parameters)
 *     zero/<param>/fp32.pt, exp_avg.pt, exp_avg_sq.pt
 *                                        stages 1/2: {'cat_dim': 0, 'param': fp32 tensor of the
 *                                        parameter's shape}; stage 3: a flat fp32 tensor
 *     zero/<param>/step.pt               the step of the parameter's (sub-)group, as stored
 *     *_model_states.pt                  copied (stages 1/2: mp_rank_00; stage 3: every rank's)
 *
 * Everything is derived from a DeepSpeed-format fragment map: the source itself
 * when it is a DeepSpeed checkpoint, otherwise DeepSpeed files written first into
 * a scratch directory inside the temporary output (removed before the rename), so
 * model states and optimizer dict are exactly what DeepSpeed's writer produces.
 * Values are copied bit for bit.
 */
#include "ckpt.h"
#include "deepspeed.h"
#include "deepspeed_write.h"
#include "fsutil.h"
#include "native_write.h"
#include "outsafe.h"
#include "pickle.h"
#include "universal.h"
#include "unknown.h"
#include "zip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define UNI_CHUNK (1u << 20) /* elements per read */
#define UNI_PKL_MAX (256u << 20)

/* A .pt file of the template (read side). */
typedef struct uni_src {
    char *path;
    int fd;
    zip_archive *zip;
    pk_doc *doc;
    pk_obj *root;
} uni_src;

static void src_close(uni_src *s) {
    if (s->fd >= 0) close(s->fd);
    zip_free(s->zip);
    pk_doc_free(s->doc);
    free(s->path);
    memset(s, 0, sizeof *s);
    s->fd = -1;
}

static dsckpt_status src_open(const char *dir, const char *name, uni_src *s) {
    memset(s, 0, sizeof *s);
    s->fd = -1;
    if (!(s->path = ds_join(dir, name))) return DSCKPT_ENOMEM;
    DS_TRY(ds_open_read(s->path, &s->fd, NULL));
    DS_TRY(zip_open_fd(s->fd, s->path, &s->zip));
    const zip_member *m = zip_find_rel(s->zip, "data.pkl");
    if (!m) return ds_err(DSCKPT_ECORRUPT, "%s: no data.pkl member", s->path);
    uint8_t *pkl = NULL;
    DS_TRY(zip_read_member(s->fd, s->zip, m, UNI_PKL_MAX, s->path, &pkl));
    dsckpt_status st = pk_parse(pkl, (size_t)m->size, s->path, NULL, &s->doc, &s->root);
    free(pkl);
    if (st == DSCKPT_OK && (!s->root || s->root->kind != PK_DICT))
        st = ds_err(DSCKPT_ECORRUPT, "%s: the pickled object is not a dict", s->path);
    return st;
}

/* One output .pt: storages are either copies of a template member or one state of
 * one tensor of the fragment map. */
typedef struct uni_store {
    char key[40];
    char newkey[24];
    bool used;
    bool from_src;
    uint64_t off, bytes;   /* from_src */
    uint32_t crc;          /* from_src: the member's CRC-32 */
    ds_state s;            /* generated */
    uint32_t t;
} uni_store;

typedef struct uni_out {
    const dsckpt_ckpt *d;
    const ds_fdset *fs;
    const uni_src *src;    /* template for storages not generated (may be NULL) */
    uni_store st[8];
    size_t n;
    size_t next;
    dsckpt_status err;
    float *buf;
    uni_store *more;       /* template storages (optimizer_state.pt at stage 3 holds many) */
    size_t nmore, capmore;
} uni_out;

static uni_store *find_store(uni_out *o, const char *key) {
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->st[i].key, key)) return &o->st[i];
    for (size_t i = 0; i < o->nmore; i++)
        if (!strcmp(o->more[i].key, key)) return &o->more[i];
    return NULL;
}

static const char *rename_key(void *u, const char *key) {
    uni_out *o = u;
    uni_store *s = find_store(o, key);
    if (!s) {
        char rel[64];
        const zip_member *m = NULL;
        if (o->src && strlen(key) < 40) {
            snprintf(rel, sizeof rel, "data/%s", key);
            m = zip_find_rel(o->src->zip, rel);
        }
        if (!m) {
            o->err = ds_err(DSCKPT_ECORRUPT, "%s: storage '%s' has no data member", o->src ? o->src->path : "output", key);
            return NULL;
        }
        if (o->nmore == o->capmore) {
            size_t nc = o->capmore ? 2 * o->capmore : 16;
            uni_store *p = realloc(o->more, nc * sizeof *p);
            if (!p) {
                o->err = ds_err(DSCKPT_ENOMEM, "out of memory");
                return NULL;
            }
            o->more = p;
            o->capmore = nc;
        }
        s = &o->more[o->nmore++];
        memset(s, 0, sizeof *s);
        snprintf(s->key, sizeof s->key, "%s", key);
        s->from_src = true;
        s->off = m->data_offset;
        s->bytes = m->size;
        s->crc = m->crc32;
    }
    if (!s->used) {
        s->used = true;
        snprintf(s->newkey, sizeof s->newkey, "%zu", o->next++);
    }
    return s->newkey;
}

static int cmp_newkey(const void *a, const void *b) {
    const uni_store *x = *(const uni_store *const *)a, *y = *(const uni_store *const *)b;
    size_t lx = strlen(x->newkey), ly = strlen(y->newkey);
    return lx != ly ? (lx < ly ? -1 : 1) : strcmp(x->newkey, y->newkey);
}

static dsckpt_status small_member(zip_writer *zw, const char *rel, const void *data, size_t n) {
    uint64_t off;
    DS_TRY(zip_writer_begin(zw, rel, n, &off));
    DS_TRY(zip_writer_write(zw, data, n));
    return zip_writer_end(zw);
}

static dsckpt_status write_store(uni_out *o, const uni_store *s, zip_writer *zw, ds_progress *prog) {
    if (s->from_src) { /* copied through, its CRC-32 checked as every read is */
        uint8_t *b = (uint8_t *)o->buf;
        uLong crc = crc32(0L, Z_NULL, 0);
        for (uint64_t done = 0; done < s->bytes;) {
            size_t n = (size_t)DS_MIN(s->bytes - done, (uint64_t)UNI_CHUNK * 4);
            DS_TRY(ds_pread_full(o->src->fd, b, n, s->off + done, o->src->path));
            crc = crc32(crc, b, (uInt)n);
            DS_TRY(zip_writer_write(zw, b, n));
            done += n;
        }
        if (!o->d->no_read_check && (uint32_t)crc != s->crc)
            return ds_err(DSCKPT_ECHECKSUM, "%s: storage '%s': CRC-32 mismatch (central directory 0x%08x, data 0x%08x)",
                          o->src->path, s->key, s->crc, (unsigned)crc);
        return DSCKPT_OK;
    }
    const ds_tensor *T = &o->d->tensors[s->t];
    for (uint64_t off = 0; off < T->numel; off += UNI_CHUNK) {
        size_t n = (size_t)DS_MIN(T->numel - off, (uint64_t)UNI_CHUNK);
        DS_TRY(ds_ckpt_read(o->d, o->fs, s->s, s->t, off, n, o->buf));
        DS_TRY(zip_writer_write(zw, o->buf, n * 4));
        ds_progress_add(prog, n * 4);
    }
    return DSCKPT_OK;
}

/* Writes `root` as torch.save does (torch 2.x members, 64-byte alignment) to
 * dir/name; the archive's top folder is the file name without ".pt". */
static dsckpt_status write_pt(uni_out *o, const pk_obj *root, const char *dir, const char *name, ds_progress *prog) {
    uint8_t *pkl = NULL;
    size_t pkl_len = 0;
    char *path = NULL, *prefix = NULL;
    uni_store **order = NULL;
    ds_stream *s = NULL;
    zip_writer *zw = NULL;
    dsckpt_status st = pk_serialize_ex(root, rename_key, o, &pkl, &pkl_len);
    if (o->err) st = o->err;
    if (st) goto done;
    if (!(path = ds_join(dir, name)) || !(prefix = ds_strdup(name))) {
        st = DSCKPT_ENOMEM;
        goto done;
    }
    char *dot = strrchr(prefix, '.');
    if (dot) *dot = '\0';
    size_t total = o->n + o->nmore, nu = 0;
    DS_TRYGOTO(ds_calloc(total ? total : 1, sizeof *order, &order), done);
    for (size_t i = 0; i < o->n; i++)
        if (o->st[i].used) order[nu++] = &o->st[i];
    for (size_t i = 0; i < o->nmore; i++)
        if (o->more[i].used) order[nu++] = &o->more[i];
    qsort(order, nu, sizeof *order, cmp_newkey);
    DS_TRYGOTO(ds_stream_create(path, 0, &s), done);
    /* A state file of a large parameter is many MiB written piece after piece;
     * 8 MiB writer buffers (from its second MiB on) keep the disk's writes from
     * holding up the reads and conversions (bench/RESULTS.md, issue 15). */
    ds_stream_set_big_buffers(s, (size_t)8 << 20);
    DS_TRYGOTO(zip_writer_new(s, prefix, &zw), done);
    DS_TRYGOTO(small_member(zw, "data.pkl", pkl, pkl_len), done);
    DS_TRYGOTO(small_member(zw, ".format_version", "1", 1), done);
    DS_TRYGOTO(small_member(zw, ".storage_alignment", "64", 2), done);
    DS_TRYGOTO(small_member(zw, "byteorder", "little", 6), done);
    for (size_t i = 0; i < nu; i++) {
        const uni_store *d = order[i];
        uint64_t bytes = d->from_src ? d->bytes : o->d->tensors[d->t].numel * 4, off;
        char rel[48];
        snprintf(rel, sizeof rel, "data/%s", d->newkey);
        DS_TRYGOTO(zip_writer_begin(zw, rel, bytes, &off), done);
        DS_TRYGOTO(write_store(o, d, zw, prog), done);
        DS_TRYGOTO(zip_writer_end(zw), done);
    }
    DS_TRYGOTO(small_member(zw, "version", "3\n", 2), done);
    /* torch writes a random id; here it comes from data.pkl, so equal inputs give equal files. */
    uint8_t md[DS_SHA256_LEN];
    DS_TRYGOTO(ds_sha256(pkl, pkl_len, md), done);
    uint64_t a = 0, b = 0;
    for (int i = 0; i < 8; i++) {
        a = a << 8 | md[i];
        b = b << 8 | md[8 + i];
    }
    char sid[48];
    snprintf(sid, sizeof sid, "%020llu%020llu", (unsigned long long)a, (unsigned long long)b);
    DS_TRYGOTO(small_member(zw, ".data/serialization_id", sid, 40), done);
    DS_TRYGOTO(zip_writer_finish(zw), done);
    st = ds_stream_finish(s, NULL);
    s = NULL;
done:
    zip_writer_free(zw);
    ds_stream_abort(s);
    free(pkl);
    free(path);
    free(prefix);
    free(order);
    return st;
}

static void out_reset(uni_out *o, const uni_src *src) {
    o->n = 0;
    o->nmore = 0;
    o->next = 0;
    o->err = DSCKPT_OK;
    o->src = src;
}

/* A fresh fp32 tensor over generated storage "g" holding state s of tensor t. */
static pk_obj *state_tensor(pk_doc *doc, uni_out *o, ds_state s, uint32_t t, bool shaped) {
    const ds_tensor *T = &o->d->tensors[t];
    uni_store *u = &o->st[o->n++];
    memset(u, 0, sizeof *u);
    snprintf(u->key, sizeof u->key, "g%zu", o->n);
    u->s = s;
    u->t = t;
    pk_obj *x = pk_new(doc, PK_TENSOR);
    if (!x || !(x->tensor.storage_key = pk_strdup(doc, u->key))) return NULL;
    x->dtype = x->tensor.dtype = DSCKPT_F32;
    x->tensor.storage_numel = T->numel;
    if (shaped) {
        x->tensor.ndim = T->ndim;
        int64_t stride = 1;
        for (int d = T->ndim - 1; d >= 0; d--) {
            x->tensor.shape[d] = T->shape[d];
            x->tensor.stride[d] = stride;
            stride *= (int64_t)(T->shape[d] ? T->shape[d] : 1);
        }
    } else {
        x->tensor.ndim = 1;
        x->tensor.shape[0] = T->numel;
        x->tensor.stride[0] = 1;
    }
    /* The fp32 master partitions DeepSpeed saves carry requires_grad; the moments do not. */
    x->tensor.requires_grad = s == DS_ST_FP32;
    return x;
}

static bool name_ends(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* Copies a .pt file; with `check`, each of its zip members is first checked
 * against its CRC-32. */
static dsckpt_status copy_file(const char *from, const char *to, bool check) {
    int fd = -1;
    uint64_t size = 0;
    ds_stream *s = NULL;
    uint8_t *buf = NULL;
    dsckpt_status st = ds_open_read(from, &fd, &size);
    if (st) return st;
    if (check) {
        zip_archive *z = NULL;
        st = zip_open_fd(fd, from, &z);
        for (size_t i = 0; st == DSCKPT_OK && i < z->n; i++) st = zip_check_crc(fd, z, i, from);
        zip_free(z);
        if (st) {
            close(fd);
            return st;
        }
    }
    DS_TRYGOTO(ds_malloc(UNI_CHUNK, &buf), done);
    DS_TRYGOTO(ds_stream_create(to, 0, &s), done);
    for (uint64_t off = 0; off < size;) {
        size_t n = (size_t)DS_MIN(size - off, (uint64_t)UNI_CHUNK);
        DS_TRYGOTO(ds_pread_full(fd, buf, n, off, from), done);
        DS_TRYGOTO(ds_stream_write(s, buf, n), done);
        off += n;
    }
    st = ds_stream_finish(s, NULL);
    s = NULL;
done:
    ds_stream_abort(s);
    free(buf);
    close(fd);
    return st;
}

/* zero/<param>/{fp32,exp_avg,exp_avg_sq,step}.pt for every trainable tensor of d.
 * step.pt comes from the (sub-)group's entry of `states` in the optimizer file
 * `opt`, or, with opt NULL (a universal source), is copied from d's own. */
static dsckpt_status write_params(const dsckpt_ckpt *d, uni_out *o, const uni_src *opt, const pk_obj *states,
                                  const char *zdir, ds_progress *prog) {
    dsckpt_status st = DSCKPT_OK;
    pk_doc *doc = NULL;
    char *pdir = NULL;
    /* zero/<param>/... */
    static const char *const files[3] = {"fp32.pt", "exp_avg.pt", "exp_avg_sq.pt"};
    for (uint32_t t = 0; t < d->ntensors; t++) {
        const ds_tensor *T = &d->tensors[t];
        if (!T->trainable) continue;
        if (!ds_safe_name(T->name)) {
            st = ds_err(DSCKPT_EUNSUPPORTED, "parameter name '%s' cannot be a directory name in the universal layout",
                        T->name);
            goto done;
        }
        free(pdir);
        if (!(pdir = ds_join(zdir, T->name))) {
            st = DSCKPT_ENOMEM;
            goto done;
        }
        DS_TRYGOTO(ds_mkdir(pdir), done);
        for (int s = 0; s < 3; s++) {
            pk_doc_free(doc);
            if (!(doc = pk_doc_new())) {
                st = ds_err(DSCKPT_ENOMEM, "out of memory");
                goto done;
            }
            out_reset(o, NULL);
            pk_obj *x = state_tensor(doc, o, (ds_state)s, t, d->stage != 3), *root = x;
            if (x && d->stage != 3) {
                root = pk_new(doc, PK_DICT);
                if (root && (!pk_dict_set(doc, root, pk_new_str(doc, "cat_dim"), pk_new_int(doc, 0)) ||
                             !pk_dict_set(doc, root, pk_new_str(doc, "param"), x)))
                    root = NULL;
            }
            if (!root) {
                st = ds_err(DSCKPT_ENOMEM, "out of memory");
                goto done;
            }
            DS_TRYGOTO(write_pt(o, root, pdir, files[s], prog), done);
        }
        /* step.pt: the (sub-)group's step as rank 0 stored it (an int or a 0-dim tensor). */
        if (!opt) {
            char rel[600];
            snprintf(rel, sizeof rel, "zero/%s/step.pt", T->name);
            char *from = ds_join(d->dir, rel), *to = ds_join(pdir, "step.pt");
            st = !from || !to ? DSCKPT_ENOMEM : ds_exists(from) ? copy_file(from, to, !d->no_read_check) : DSCKPT_OK;
            free(from);
            free(to);
            if (st) goto done;
            continue;
        }
        pk_obj *gst = pk_get_int_key(states, (int64_t)T->group);
        pk_obj *step = gst ? pk_get(gst, "step") : NULL;
        if (step) {
            out_reset(o, opt);
            DS_TRYGOTO(write_pt(o, step, pdir, "step.pt", prog), done);
        }
    }
done:
    pk_doc_free(doc);
    free(pdir);
    return st;
}

/* Copies every *_model_states.pt of d into tagdir as it is; *opt_name: rank 0's
 * optimizer file (NULL when d has none). */
static dsckpt_status copy_model_states(const dsckpt_ckpt *d, const char *tagdir, const char **opt_name) {
    *opt_name = NULL;
    for (size_t i = 0; i < d->nfiles; i++) {
        const ds_file *f = &d->files[i];
        if (name_ends(f->name, "_model_states.pt")) {
            char *to = ds_join(tagdir, f->name);
            if (!to) return DSCKPT_ENOMEM;
            dsckpt_status st = copy_file(f->path, to, !d->no_read_check);
            free(to);
            if (st) return st;
        } else if (name_ends(f->name, "_optim_states.pt") && f->rank == 0) {
            *opt_name = f->name;
        }
    }
    return DSCKPT_OK;
}

/* zero/optimizer_state.pt from rank 0's optimizer file `opt` (see the top of the
 * file); *states: the inner optimizer's per-group state in opt, for step.pt. */
static dsckpt_status write_optimizer_state(const dsckpt_ckpt *d, uni_out *o, const uni_src *opt, const char *zdir,
                                           ds_progress *prog, pk_obj **states) {
    pk_obj *osd = pk_get(opt->root, "optimizer_state_dict");
    pk_obj *inner = d->stage == 3 ? pk_get(osd, "optimizer_state_dict") : pk_get(osd, "base_optimizer_state");
    pk_obj *pgs = inner ? pk_get(inner, "param_groups") : NULL;
    *states = inner ? pk_get(inner, "state") : NULL;
    if (!osd || osd->kind != PK_DICT || !pgs || !*states)
        return ds_err(DSCKPT_ECORRUPT, "%s: no optimizer_state_dict with param_groups and state", opt->path);
    pk_doc *doc = pk_doc_new();
    if (!doc) return ds_err(DSCKPT_ENOMEM, "out of memory");
    dsckpt_status st = DSCKPT_OK;
    pk_obj *od = pk_new(doc, PK_DICT);
    if (!od) {
        st = DSCKPT_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < osd->n; i++) {
        const char *k = pk_as_str(osd->keys[i]);
        if (d->stage != 3 && k &&
            (!strcmp(k, "base_optimizer_state") || !strcmp(k, "param_slice_mappings") ||
             !strcmp(k, "single_partition_of_fp32_groups")))
            continue;
        if (!pk_dict_set(doc, od, osd->keys[i], osd->items[i])) {
            st = DSCKPT_ENOMEM;
            goto done;
        }
    }
    if (!pk_dict_set(doc, od, pk_new_str(doc, "param_groups"), pgs)) {
        st = DSCKPT_ENOMEM;
        goto done;
    }
    out_reset(o, opt);
    st = write_pt(o, od, zdir, "optimizer_state.pt", prog);
done:
    pk_doc_free(doc);
    return st;
}

/* Writes the universal tag directory `tagdir` (fresh) from map d: a DeepSpeed
 * checkpoint, or a universal one (`from_universal`), whose model states,
 * optimizer_state.pt and step.pt files are copied as they are. */
static dsckpt_status write_universal(const dsckpt_ckpt *d, bool from_universal, const char *tagdir, ds_progress *prog) {
    ds_fdset fs = {0};
    uni_src opt = {.fd = -1};
    uni_out o = {.d = d, .fs = &fs};
    char *zdir = NULL;
    pk_obj *states = NULL;
    dsckpt_status st = ds_fdset_open(d, &fs);
    if (st) return st;
    DS_TRYGOTO(ds_malloc((size_t)UNI_CHUNK * 4, &o.buf), done);
    /* Model states, copied; rank 0's optimizer file. */
    const char *opt_name = NULL;
    DS_TRYGOTO(copy_model_states(d, tagdir, &opt_name), done);
    if (from_universal) opt_name = "zero/optimizer_state.pt";
    if (!opt_name) {
        st = ds_err(DSCKPT_EINTERNAL, "%s: no rank-0 optimizer file", d->dir);
        goto done;
    }
    if (!(zdir = ds_join(tagdir, "zero"))) {
        st = DSCKPT_ENOMEM;
        goto done;
    }
    DS_TRYGOTO(ds_mkdir(zdir), done);
    if (from_universal) {
        char *from = ds_join(d->dir, opt_name), *to = ds_join(zdir, "optimizer_state.pt");
        st = from && to ? copy_file(from, to, !d->no_read_check) : DSCKPT_ENOMEM;
        free(from);
        free(to);
        if (st) goto done;
        DS_TRYGOTO(write_params(d, &o, NULL, NULL, zdir, prog), done);
        goto done;
    }
    DS_TRYGOTO(src_open(d->dir, opt_name, &opt), done);
    DS_TRYGOTO(write_optimizer_state(d, &o, &opt, zdir, prog, &states), done);
    DS_TRYGOTO(write_params(d, &o, &opt, states, zdir, prog), done);
done:
    src_close(&opt);
    ds_fdset_close(&fs);
    free(o.buf);
    free(o.more);
    free(zdir);
    return st;
}

typedef struct uni_fill {
    const dsckpt_ckpt *c;
    ds_fdset fs;
} uni_fill;

static dsckpt_status fill_fn(void *u, ds_state s, uint32_t t, uint64_t start, uint64_t numel, void *dst, int worker) {
    (void)worker;
    uni_fill *f = u;
    dsckpt_dtype want = s == DS_ST_W16 ? f->c->tensors[t].dtype : DSCKPT_F32;
    if (ds_ckpt_state_dtype(f->c, s, t) != want)
        return ds_err(DSCKPT_EUNSUPPORTED, "%s: tensor '%s' state %s is stored as %s, not %s", f->c->dir,
                      f->c->tensors[t].name, ds_state_names[s], dsckpt_dtype_name(ds_ckpt_state_dtype(f->c, s, t)),
                      dsckpt_dtype_name(want));
    return ds_ckpt_read(f->c, &f->fs, s, t, start, numel, dst);
}

static const cJSON *carried(const dsckpt_ckpt *c, const char *key) {
    return c->manifest ? cJSON_GetObjectItemCaseSensitive(c->manifest, key) : NULL;
}

/* Whether c can be written in the universal layout at ZeRO `stage`; *from_ds:
 * c's own DeepSpeed files are the template (else they are written first). */
static dsckpt_status check_universal_source(const dsckpt_ckpt *c, int stage, bool *from_ds_out) {
    bool from_ds = c->format && !strcmp(c->format, "deepspeed");
    if (from_ds && c->stage == 0) {
        /* DeepSpeed has no universal load at stage 0; for a run going on under
         * ZeRO 1-3 the universal files are built from the tensors, as from a
         * native source (the ZeRO-0 file is no template for stages 1-3). */
        if (stage == 0)
            return ds_err(DSCKPT_EUNSUPPORTED,
                          "the universal format from a ZeRO-0 checkpoint: DeepSpeed loads universal checkpoints only "
                          "under ZeRO stages 1-3, so choose the stage (1, 2 or 3) the run goes on with, or write "
                          "DeepSpeed's format for the new world size (ZeRO-0 state is not partitioned: it resumes at "
                          "any world size)");
        from_ds = false;
    }
    if (from_ds && stage != c->stage)
        return ds_err(DSCKPT_EUNSUPPORTED, "the universal format keeps the ZeRO stage of a DeepSpeed checkpoint (%d); keep the stage",
                      c->stage);
    if (stage < 1 || stage > 3)
        return ds_err(DSCKPT_EUNSUPPORTED, "the universal format holds ZeRO stages 1-3; this checkpoint is stage %d "
                                           "(ask for stage 1, 2 or 3)", stage);
    *from_ds_out = from_ds;
    if (from_ds || (c->format && !strcmp(c->format, "universal"))) {
        /* Model-states files are copied as they are: nothing opaque may ride along. */
        ds_unknown_list ul = {0};
        dsckpt_status ust = ds_unknown_in_dir(c->dir, &ul);
        if (!ust && ul.count)
            ust = ds_err(DSCKPT_EUNSUPPORTED,
                         "%s: %zu pickled object%s outside the allow-list (DeepSpeed's torch.load would call %s) would "
                         "be copied into the output: %s; write the DeepSpeed format with drop_unknown_objects first",
                         c->dir, ul.count, ul.count == 1 ? "" : "s", ul.count == 1 ? "it" : "them",
                         ul.text ? ul.text : "");
        ds_unknown_list_free(&ul);
        if (ust) return ust;
    }
    return DSCKPT_OK;
}

/* Writes c's DeepSpeed files at its world size and ZeRO `stage` into the scratch
 * folder *sdir = root/tmp (root: the temporary output) and opens them as
 * *scratch, the fragment map the universal files are then built from. The
 * caller frees *sdir and *scratch, also on failure. */
static dsckpt_status write_scratch(const dsckpt_ckpt *c, int stage, const char *root, int threads, ds_progress *prog,
                                   char **sdir, dsckpt_ckpt **scratch) {
    uni_fill uf = {.c = c};
    char *stag = NULL;
    dsckpt_status st = DSCKPT_OK;
    if (!(*sdir = ds_join(root, "tmp")) || !(stag = ds_join(*sdir, c->tag))) {
        st = DSCKPT_ENOMEM;
        goto done;
    }
    DS_TRYGOTO(ds_mkdir(*sdir), done);
    DS_TRYGOTO(ds_mkdir(stag), done);
    DS_TRYGOTO(ds_fdset_open(c, &uf.fs), done);
    ds_dsw_spec ds = {.tensors = c->tensors, .ntensors = c->ntensors, .stage = stage,
                      .world_size = c->world_size > 0 ? c->world_size : 1, .step = c->step,
                      .model_dtype = !c->train_dtype ? DSCKPT_F32
                                     : !strcmp(c->train_dtype, "bf16") ? DSCKPT_BF16
                                     : !strcmp(c->train_dtype, "fp16") ? DSCKPT_F16 : DSCKPT_F32,
                      .ds_config = carried(c, "ds_config"), .state = carried(c, "state"), .fill = fill_fn,
                      .fill_user = &uf, .threads = threads};
    DS_TRYGOTO(ds_deepspeed_write(&ds, stag, prog), done);
    ds_fdset_close(&uf.fs);
    DS_TRYGOTO(ds_ckpt_new(scratch), done);
    if (!((*scratch)->dir = ds_strdup(stag)) || !((*scratch)->tag = ds_strdup(c->tag))) {
        st = DSCKPT_ENOMEM;
        goto done;
    }
    (*scratch)->no_read_check = true; /* files we have just written from checked reads */
    DS_TRYGOTO(ds_deepspeed_open(*scratch), done);
    DS_TRYGOTO(ds_ckpt_index(*scratch, NULL, NULL), done);
done:
    ds_fdset_close(&uf.fs);
    free(stag);
    return st;
}

dsckpt_status ds_universal_reshard(const dsckpt_ckpt *c, const char *out, const dsckpt_reshard_opts *opts) {
    int stage = opts->zero_stage < 0 ? c->stage : opts->zero_stage;
    bool from_ds = false;
    DS_TRY(check_universal_source(c, stage, &from_ds));
    ds_outdir od = {0};
    dsckpt_ckpt *scratch = NULL;
    char *tagname = NULL, *tagdir = NULL, *sdir = NULL;
    dsckpt_status st = DSCKPT_OK;
    size_t tl = strlen(c->tag) + sizeof "_universal";
    DS_TRYGOTO(ds_malloc(tl, &tagname), done);
    snprintf(tagname, tl, "%s_universal", c->tag);
    if (!ds_safe_name(tagname)) {
        st = ds_err(DSCKPT_EUNSUPPORTED, "tag '%s' is too long for the universal directory name", c->tag);
        goto done;
    }
    DS_TRYGOTO(ds_outdir_begin(&od, out, opts->force != 0), done);
    if (!(tagdir = ds_join(od.tmp, tagname))) {
        st = DSCKPT_ENOMEM;
        goto done;
    }
    DS_TRYGOTO(ds_mkdir(tagdir), done);
    ds_progress prog = {.fn = opts->progress, .user = opts->progress_user};
    const dsckpt_ckpt *d = c;
    bool from_uni = c->format && !strcmp(c->format, "universal") && stage == c->stage;
    for (size_t t = 0; t < c->ntensors; t++) /* the scratch files are written too */
        if (c->tensors[t].trainable) prog.total += 12 * c->tensors[t].numel * (from_ds || from_uni ? 1 : 2);
    if (!from_ds && !from_uni) {
        /* DeepSpeed files first, at the source's world size, in a scratch folder
         * of the temporary output. */
        DS_TRYGOTO(write_scratch(c, stage, od.tmp, opts->threads, &prog, &sdir, &scratch), done);
        d = scratch;
    }
    DS_TRYGOTO(write_universal(d, from_uni, tagdir, &prog), done);
    if (sdir) ds_rmtree(sdir);
    char *lp = ds_join(od.tmp, "latest_universal");
    if (!lp) {
        st = DSCKPT_ENOMEM;
        goto done;
    }
    st = ds_write_file_atomic(lp, tagname, strlen(tagname));
    free(lp);
    if (st) goto done;
    st = ds_outdir_commit(&od);
done:
    dsckpt_ckpt_free(scratch);
    ds_outdir_abort(&od);
    free(tagname);
    free(tagdir);
    free(sdir);
    return st;
}
