/*
 * native_write.c — rank files, manifest and `latest` of a native checkpoint
 * (see native_write.h).
 */
#include "native_write.h"

#include "fsutil.h"
#include "manifest.h"
#include "zfile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FILL_BLOCK_BYTES (4u << 20)

void ds_native_out_free(ds_native_out *o) {
    if (!o) return;
    if (o->plans && o->layout)
        for (int r = 0; r < o->layout->nfiles; r++) ds_rank_plan_clear(&o->plans[r]);
    free(o->plans);
    ds_layout_free(o->layout);
    dsckpt_ckpt_free(o->c);
    free(o);
}

static dsckpt_status add_carried(cJSON *root, const char *key, const cJSON *v) {
    cJSON *d = v ? cJSON_Duplicate(v, 1) : cJSON_CreateObject();
    if (!d || !cJSON_AddItemToObject(root, key, d)) {
        cJSON_Delete(d);
        return ds_err(DSCKPT_ENOMEM, "out of memory");
    }
    return DSCKPT_OK;
}

dsckpt_status ds_native_prepare(const ds_native_spec *sp, const char *dir, ds_native_out **out) {
    ds_native_out *o = calloc(1, sizeof *o);
    if (!o) return ds_err(DSCKPT_ENOMEM, "out of memory");
    dsckpt_status st = ds_ckpt_new(&o->c);
    dsckpt_ckpt *c = o->c;
    o->compress_level = sp->compress_level;
    o->chunk_size = sp->chunk_size ? sp->chunk_size : o->compress_level ? DS_ZCHUNK_DEFAULT_CHUNK : DS_DEFAULT_CHUNK;
    if (st == DSCKPT_OK && !ds_safe_name(sp->tag)) st = ds_err(DSCKPT_EINVAL, "tag '%s' is not a plain directory name", sp->tag);
    if (st == DSCKPT_OK && o->compress_level && !ds_zchunk_level_ok(o->compress_level))
        st = ds_err(DSCKPT_EINVAL, "compression level %d (zstd levels are 1 to 22)", o->compress_level);
    if (st == DSCKPT_OK && o->compress_level && o->chunk_size > DS_ZCHUNK_MAX_RAW)
        st = ds_err(DSCKPT_EINVAL, "chunk size %llu: compressed chunks are at most %llu bytes",
                    (unsigned long long)o->chunk_size, (unsigned long long)DS_ZCHUNK_MAX_RAW);
    if (st == DSCKPT_OK) st = ds_layout_make(sp->tensors, sp->ntensors, sp->ngroups, sp->stage, sp->world_size, &o->layout);
    if (st) goto fail;
    c->format = ds_strdup("dsckpt");
    c->dir = ds_strdup(dir);
    c->tag = ds_strdup(sp->tag);
    c->train_dtype = ds_strdup(sp->train_dtype);
    if (!c->format || !c->dir || !c->tag || !c->train_dtype) goto nomem;
    c->step = sp->step;
    c->world_size = sp->world_size;
    c->stage = sp->stage;
    c->ngroups = sp->ngroups;
    DS_TRYGOTO(ds_calloc(sp->ntensors, sizeof *c->tensors, &c->tensors), fail);
    for (size_t i = 0; i < sp->ntensors; i++) {
        c->ntensors = i + 1;
        DS_TRYGOTO(ds_tensor_copy(&c->tensors[i], &sp->tensors[i]), fail);
    }
    c->ntensors = sp->ntensors;
    c->manifest = cJSON_CreateObject();
    if (!c->manifest) goto nomem;
    DS_TRYGOTO(add_carried(c->manifest, "state", sp->state), fail);
    DS_TRYGOTO(add_carried(c->manifest, "ds_config", sp->ds_config), fail);
    DS_TRYGOTO(add_carried(c->manifest, "metrics", sp->metrics), fail);
    if (sp->model) {
        c->model = *sp->model;
        c->has_model = true;
    }

    int nf = o->layout->nfiles;
    DS_TRYGOTO(ds_calloc((size_t)nf, sizeof *o->plans, &o->plans), fail);
    DS_TRYGOTO(ds_calloc((size_t)nf, sizeof *c->files, &c->files), fail);
    c->nfiles = (size_t)nf;
    /* Count fragments per state, then fill them from the plans. */
    size_t cnt[DS_NSTATES] = {0};
    for (int r = 0; r < nf; r++) {
        DS_TRYGOTO(ds_rank_plan_make(o->layout, c->tensors, r, sp->tag, &o->plans[r]), fail);
        char name[64];
        snprintf(name, sizeof name, DS_RANK_FILE_FMT, r);
        c->files[r].name = ds_strdup(name);
        c->files[r].path = ds_join(dir, name);
        if (!c->files[r].name || !c->files[r].path) goto nomem;
        c->files[r].rank = r;
        c->files[r].size = o->plans[r].plan->file_size;
        for (size_t e = 0; e < o->plans[r].n; e++)
            cnt[o->plans[r].entries[e].state] += o->layout->ranks[r].bufs[o->plans[r].entries[e].buf].npieces;
    }
    for (int s = 0; s < DS_NSTATES; s++) DS_TRYGOTO(ds_calloc(cnt[s], sizeof *c->frags[s], &c->frags[s]), fail);
    for (int r = 0; r < nf; r++) {
        const ds_rank_plan *rp = &o->plans[r];
        for (size_t e = 0; e < rp->n; e++) {
            const ds_buf *b = &o->layout->ranks[r].bufs[rp->entries[e].buf];
            ds_state s = rp->entries[e].state;
            uint64_t base = rp->plan->header_bytes + rp->plan->offset[e];
            size_t es = dsckpt_dtype_size(b->dtype);
            for (size_t k = 0; k < b->npieces; k++) {
                const ds_piece *p = &b->pieces[k];
                c->frags[s][c->nfrags[s]++] = (ds_frag){.tensor = p->tensor, .file = (uint32_t)r, .start = p->start,
                                                        .numel = p->numel, .offset = base + p->buf_off * es,
                                                        .dtype = b->dtype};
            }
        }
    }
    DS_TRYGOTO(ds_ckpt_index(c, NULL, NULL), fail);
    *out = o;
    return DSCKPT_OK;
nomem:
    st = ds_err(DSCKPT_ENOMEM, "out of memory planning a checkpoint");
fail:
    ds_native_out_free(o);
    return st;
}

uint64_t ds_native_total_bytes(const ds_native_out *o) {
    uint64_t t = 0;
    for (size_t i = 0; i < o->c->nfiles; i++) t += o->c->files[i].size;
    return t;
}

/* The rank file's output: a plain stream (hashed by fixed chunks) or the
 * compressing writer (hashing the stored chunks). */
typedef struct rank_out {
    ds_stream *s;
    ds_zwriter *z;
} rank_out;

static dsckpt_status out_write(rank_out *w, const void *p, size_t n) {
    return w->z ? ds_zwriter_write(w->z, p, n) : ds_stream_write(w->s, p, n);
}
static dsckpt_status out_zeros(rank_out *w, uint64_t n) {
    return w->z ? ds_zwriter_write_zeros(w->z, n) : ds_stream_write_zeros(w->s, n);
}
static uint64_t out_pos(const rank_out *w) { return w->z ? ds_zwriter_pos(w->z) : ds_stream_pos(w->s); }

dsckpt_status ds_native_write_rank(ds_native_out *o, int rank, ds_fill_fn fill, void *user, int worker,
                                   ds_progress *prog) {
    ds_file *f = &o->c->files[rank];
    const ds_rank_plan *rp = &o->plans[rank];
    const ds_rank_layout *rl = &o->layout->ranks[rank];
    char *tmp = ds_tmp_sibling(f->path);
    if (!tmp) return DSCKPT_ENOMEM;
    uint8_t *blk = NULL;
    rank_out w = {NULL, NULL};
    dsckpt_status st = ds_malloc(FILL_BLOCK_BYTES, &blk);
    if (st == DSCKPT_OK)
        st = o->compress_level ? ds_zwriter_create(tmp, o->chunk_size, o->compress_level, &w.z)
                               : ds_stream_create(tmp, o->chunk_size, &w.s);
    if (st) goto done;
    if (w.z) ds_zwriter_set_width(w.z, 1);
    DS_TRYGOTO(out_write(&w, rp->plan->header, rp->plan->header_bytes), done);
    for (size_t k = 0; k < rp->plan->n; k++) {
        size_t e = rp->plan->order[k];
        const ds_buf *b = &rl->bufs[rp->entries[e].buf];
        ds_state state = rp->entries[e].state;
        size_t es = dsckpt_dtype_size(b->dtype);
        if (w.z) ds_zwriter_set_width(w.z, (int)es);
        uint64_t pos = 0; /* element position in the buffer */
        for (size_t p = 0; p <= b->npieces; p++) {
            uint64_t next = p < b->npieces ? b->pieces[p].buf_off : b->len;
            if (next > pos) DS_TRYGOTO(out_zeros(&w, (next - pos) * es), done); /* padding */
            pos = next;
            if (p == b->npieces) break;
            const ds_piece *pc = &b->pieces[p];
            uint64_t per = FILL_BLOCK_BYTES / es;
            for (uint64_t i = 0; i < pc->numel; i += per) {
                if (ds_parallel_stopping(NULL)) {
                    st = ds_err(DSCKPT_EINTERNAL, "stopped after another worker failed");
                    goto done;
                }
                uint64_t n = DS_MIN(per, pc->numel - i);
                DS_TRYGOTO(fill(user, state, pc->tensor, pc->start + i, n, blk, worker), done);
                DS_TRYGOTO(out_write(&w, blk, (size_t)(n * es)), done);
                ds_progress_add(prog, n * es);
            }
            pos += pc->numel;
        }
    }
    if (out_pos(&w) != f->size) {
        st = ds_err(DSCKPT_EINTERNAL, "%s: wrote %llu bytes, planned %llu", f->path,
                    (unsigned long long)out_pos(&w), (unsigned long long)f->size);
        goto done;
    }
    ds_digests_clear(&f->dg);
    free(f->zc);
    f->zc = NULL;
    if (w.z) {
        st = ds_zwriter_finish(w.z, &f->dg, &f->zc, &f->stored_size);
        w.z = NULL;
        f->compressed = st == DSCKPT_OK;
    } else {
        st = ds_stream_finish(w.s, &f->dg);
        w.s = NULL;
        f->stored_size = f->size;
    }
    if (st == DSCKPT_OK) {
        f->has_digests = true;
        st = ds_rename_durable(tmp, f->path, true);
    }
done:
    ds_stream_abort(w.s);
    ds_zwriter_abort(w.z);
    if (st) unlink(tmp);
    free(tmp);
    free(blk);
    return st;
}

typedef struct write_job {
    ds_native_out *o;
    ds_fill_fn fill;
    void *user;
    ds_progress *prog;
} write_job;

static dsckpt_status write_job_fn(void *u, size_t job, int worker) {
    write_job *j = u;
    return ds_native_write_rank(j->o, (int)job, j->fill, j->user, worker, j->prog);
}

dsckpt_status ds_native_write_all(ds_native_out *o, ds_fill_fn fill, void *user, int threads, ds_progress *prog) {
    write_job j = {o, fill, user, prog};
    if (prog) prog->total = ds_native_total_bytes(o);
    DS_TRY(ds_parallel_run(o->c->nfiles, threads, write_job_fn, &j, prog));
    return ds_native_write_manifest(o);
}

/* A commit record: u64 raw size, chunk size, chunk count, compressed, stored size;
 * the file digest; the chunk digests; a compressed file's chunk records (the same
 * program writes and reads them, so the records travel as they are in memory). */
#define REC_HEAD (5 * sizeof(uint64_t) + DS_SHA256_LEN)

static size_t record_len(uint64_t nchunks, bool compressed) {
    return REC_HEAD + (size_t)nchunks * (DS_SHA256_LEN + (compressed ? sizeof(ds_zrec) : 0));
}

dsckpt_status ds_native_file_record(const ds_native_out *o, int file, uint8_t **out, size_t *len) {
    const ds_file *f = &o->c->files[file];
    size_t nc = f->dg.nchunks, n = record_len(nc, f->compressed);
    uint8_t *b = NULL;
    if (!f->has_digests) return ds_err(DSCKPT_EINTERNAL, "%s: not written in this process", f->path);
    DS_TRY(ds_malloc(n, &b));
    uint64_t hdr[5] = {f->dg.size, f->dg.chunk_size, nc, f->compressed, f->stored_size};
    memcpy(b, hdr, sizeof hdr);
    memcpy(b + sizeof hdr, f->dg.file, DS_SHA256_LEN);
    if (nc) memcpy(b + REC_HEAD, f->dg.chunks, nc * DS_SHA256_LEN);
    if (nc && f->compressed) memcpy(b + REC_HEAD + nc * DS_SHA256_LEN, f->zc, nc * sizeof *f->zc);
    *out = b;
    *len = n;
    return DSCKPT_OK;
}

dsckpt_status ds_native_file_record_set(ds_native_out *o, int file, const void *rec, size_t len) {
    ds_file *f = &o->c->files[file];
    const uint8_t *b = rec;
    uint64_t hdr[5] = {0};
    if (len >= REC_HEAD) memcpy(hdr, b, sizeof hdr);
    bool ok = len >= REC_HEAD && hdr[0] == f->size && hdr[1] > 0 && hdr[2] == ds_ceil_div(hdr[0], hdr[1]) &&
              hdr[3] <= 1 && hdr[2] <= SIZE_MAX / DS_SHA256_LEN && len == record_len(hdr[2], hdr[3]);
    if (!ok) return ds_err(DSCKPT_EINTERNAL, "%s: malformed commit record from the writing rank (%zu bytes)", f->path, len);
    size_t nc = (size_t)hdr[2];
    ds_digests_clear(&f->dg);
    free(f->zc);
    f->zc = NULL;
    f->has_digests = false;
    DS_TRY(ds_calloc(nc ? nc : 1, DS_SHA256_LEN, &f->dg.chunks));
    if (hdr[3]) DS_TRY(ds_calloc(nc ? nc : 1, sizeof *f->zc, &f->zc));
    f->dg.size = hdr[0];
    f->dg.chunk_size = hdr[1];
    f->dg.nchunks = nc;
    f->compressed = hdr[3] != 0;
    f->stored_size = hdr[4];
    memcpy(f->dg.file, b + 5 * sizeof(uint64_t), DS_SHA256_LEN);
    if (nc) memcpy(f->dg.chunks, b + REC_HEAD, nc * DS_SHA256_LEN);
    if (nc && f->compressed) memcpy(f->zc, b + REC_HEAD + nc * DS_SHA256_LEN, nc * sizeof *f->zc);
    f->has_digests = true;
    return DSCKPT_OK;
}

dsckpt_status ds_native_write_manifest(ds_native_out *o) {
    char *text = NULL;
    DS_TRY(ds_ckpt_build_manifest(o->c, &text));
    char *path = ds_join(o->c->dir, DS_MANIFEST_NAME);
    dsckpt_status st = path ? ds_write_file_atomic(path, text, strlen(text)) : DSCKPT_ENOMEM;
    free(path);
    free(text);
    return st;
}

dsckpt_status ds_set_latest(const char *root, const char *tag) {
    if (!ds_safe_name(tag)) return ds_err(DSCKPT_EINVAL, "tag '%s' is not a plain directory name", tag);
    char *p = ds_join(root, "latest");
    if (!p) return DSCKPT_ENOMEM;
    dsckpt_status st = ds_write_file_atomic(p, tag, strlen(tag));
    free(p);
    return st;
}
