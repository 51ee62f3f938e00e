/*
 * layout.c — native checkpoint layout per stage and world size (see layout.h).
 */
#include "layout.h"

#include "partition.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static dsckpt_status buf_add_piece(ds_buf *b, size_t *cap, uint32_t t, uint64_t start, uint64_t numel,
                                   uint64_t buf_off) {
    if (b->npieces == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        void *p = realloc(b->pieces, ncap * sizeof *b->pieces);
        if (!p) return ds_err(DSCKPT_ENOMEM, "out of memory planning a layout");
        b->pieces = p;
        *cap = ncap;
    }
    b->pieces[b->npieces++] = (ds_piece){.tensor = t, .start = start, .numel = numel, .buf_off = buf_off};
    return DSCKPT_OK;
}

static dsckpt_status rank_add_buf(ds_rank_layout *rl, ds_buf b) {
    void *p = realloc(rl->bufs, (rl->nbufs + 1) * sizeof *rl->bufs);
    if (!p) return ds_err(DSCKPT_ENOMEM, "out of memory planning a layout");
    rl->bufs = p;
    rl->bufs[rl->nbufs++] = b;
    return DSCKPT_OK;
}

/* Stage 0/1/2 group buffer of rank r: the rank's slice of the group's flat buffer. On failure
 * *out holds the pieces made so far (the caller frees out->pieces). */
static dsckpt_status flat_group_buf(const ds_tensor *ts, size_t nt, int g, int stage, int W, int r, ds_buf *out) {
    *out = (ds_buf){.group = g, .dtype = DSCKPT_F32}; /* no pieces yet: valid to free on any failure */
    uint64_t N = 0;
    for (size_t i = 0; i < nt; i++)
        if (ts[i].trainable && ts[i].group == g && ds_add_overflow(N, ts[i].numel, &N))
            return ds_err(DSCKPT_EINVAL, "group %d: element count overflows", g);
    uint64_t part = stage == 0 ? N : ds_part_flat(N, W).part;
    out->len = part;
    size_t cap = 0;
    uint64_t off = 0; /* running offset of each tensor in the flat buffer */
    for (size_t i = 0; i < nt; i++) {
        if (!ts[i].trainable || ts[i].group != g) continue;
        ds_slice sl = ds_part_slice(stage, W, r, part, off, ts[i].numel);
        off += ts[i].numel;
        if (sl.count) DS_TRY(buf_add_piece(out, &cap, (uint32_t)i, sl.start, sl.count, sl.at));
    }
    return DSCKPT_OK;
}

/* Stage 3 group buffer of rank r: its piece of every tensor of the group, in order. On
 * failure *out holds the pieces made so far (the caller frees out->pieces). */
static dsckpt_status piece_group_buf(const ds_tensor *ts, size_t nt, int g, int W, int r, ds_buf *out) {
    *out = (ds_buf){.group = g, .dtype = DSCKPT_F32};
    size_t cap = 0;
    for (size_t i = 0; i < nt; i++) {
        if (!ts[i].trainable || ts[i].group != g) continue;
        ds_slice sl = ds_part_slice(3, W, r, 0, out->len, ts[i].numel);
        if (sl.count) DS_TRY(buf_add_piece(out, &cap, (uint32_t)i, sl.start, sl.count, sl.at));
        out->len += ds_part_piece(ts[i].numel, W);
    }
    return DSCKPT_OK;
}

dsckpt_status ds_layout_make(const ds_tensor *ts, size_t nt, int ngroups, int stage, int W, ds_layout **out) {
    if (stage < 0 || stage > 3) return ds_err(DSCKPT_EINVAL, "unknown ZeRO stage %d (expected 0, 1, 2 or 3)", stage);
    if (W < 1 || W > 1000000) return ds_err(DSCKPT_EINVAL, "world size %d out of range (1..1000000)", W);
    if (ngroups < 0 || ngroups > 4096) return ds_err(DSCKPT_EINVAL, "%d parameter groups out of range", ngroups);
    if (nt > UINT32_MAX) return ds_err(DSCKPT_EINVAL, "too many tensors");
    ds_layout *l = calloc(1, sizeof *l);
    if (!l) return ds_err(DSCKPT_ENOMEM, "out of memory planning a layout");
    l->stage = stage;
    l->world_size = W;
    l->nfiles = stage == 0 ? 1 : W;
    dsckpt_status st = ds_calloc((size_t)l->nfiles, sizeof *l->ranks, &l->ranks);
    if (st) {
        free(l);
        return st;
    }
    for (int r = 0; r < l->nfiles && st == DSCKPT_OK; r++) {
        ds_rank_layout *rl = &l->ranks[r];
        for (int g = 0; g < ngroups && st == DSCKPT_OK; g++) {
            ds_buf b;
            st = stage == 3 ? piece_group_buf(ts, nt, g, W, r, &b) : flat_group_buf(ts, nt, g, stage, W, r, &b);
            if (st == DSCKPT_OK) st = rank_add_buf(rl, b);
            else free(b.pieces);
        }
        for (size_t i = 0; i < nt && st == DSCKPT_OK; i++) {
            if (ts[i].trainable) continue;
            ds_buf b = {.group = -1, .tensor = (uint32_t)i, .dtype = ts[i].dtype};
            size_t cap = 0;
            if (stage == 3) {
                ds_slice sl = ds_part_slice(3, W, r, 0, 0, ts[i].numel);
                b.len = ds_part_piece(ts[i].numel, W);
                if (sl.count) st = buf_add_piece(&b, &cap, (uint32_t)i, sl.start, sl.count, sl.at);
            } else if (r == 0) {
                b.len = ts[i].numel;
                if (b.len) st = buf_add_piece(&b, &cap, (uint32_t)i, 0, b.len, 0);
            } else {
                continue;
            }
            if (st == DSCKPT_OK) st = rank_add_buf(rl, b);
            else free(b.pieces);
        }
    }
    if (st) {
        ds_layout_free(l);
        return st;
    }
    *out = l;
    return DSCKPT_OK;
}

void ds_layout_free(ds_layout *l) {
    if (!l) return;
    for (int r = 0; r < l->nfiles; r++) {
        for (size_t b = 0; b < l->ranks[r].nbufs; b++) free(l->ranks[r].bufs[b].pieces);
        free(l->ranks[r].bufs);
    }
    free(l->ranks);
    free(l);
}

void ds_rank_plan_clear(ds_rank_plan *p) {
    if (!p) return;
    st_plan_free(p->plan);
    free(p->entries);
    memset(p, 0, sizeof *p);
}

dsckpt_status ds_rank_plan_make(const ds_layout *l, const ds_tensor *ts, int rank, const char *tag,
                                ds_rank_plan *out) {
    memset(out, 0, sizeof *out);
    const ds_rank_layout *rl = &l->ranks[rank];
    size_t cap = rl->nbufs * 3;
    st_entry *ent = NULL;
    char **names = NULL;
    dsckpt_status st = ds_calloc(cap ? cap : 1, sizeof *ent, &ent);
    if (st == DSCKPT_OK) st = ds_calloc(cap ? cap : 1, sizeof *names, &names);
    if (st == DSCKPT_OK) st = ds_calloc(cap ? cap : 1, sizeof *out->entries, &out->entries);
    size_t n = 0;
    for (size_t b = 0; b < rl->nbufs && st == DSCKPT_OK; b++) {
        const ds_buf *bf = &rl->bufs[b];
        for (int s = 0; s < DS_NSTATES && st == DSCKPT_OK; s++) {
            bool group_state = s != DS_ST_W16;
            if ((bf->group >= 0) != group_state) continue;
            int k = bf->group >= 0 ? asprintf(&names[n], "%s.g%d", ds_state_names[s], bf->group)
                                   : asprintf(&names[n], "w16.%s", ts[bf->tensor].name);
            if (k < 0) {
                names[n] = NULL;
                st = ds_err(DSCKPT_ENOMEM, "out of memory planning rank %d", rank);
                break;
            }
            ent[n] = (st_entry){.name = names[n], .dtype = bf->dtype, .ndim = 1, .shape = {bf->len}};
            out->entries[n] = (ds_rank_entry){.buf = b, .state = (ds_state)s};
            n++;
        }
    }
    char srank[32], sworld[32], sfiles[32], sstage[16];
    snprintf(srank, sizeof srank, "%d", rank);
    snprintf(sworld, sizeof sworld, "%d", l->world_size);
    snprintf(sfiles, sizeof sfiles, "%d", l->nfiles);
    snprintf(sstage, sizeof sstage, "%d", l->stage);
    const st_meta meta[] = {
        {"dsckpt.format", "dsckpt-rank-v1"}, {"dsckpt.tag", (char *)tag},     {"dsckpt.rank", srank},
        {"dsckpt.world_size", sworld},       {"dsckpt.files", sfiles},       {"dsckpt.zero_stage", sstage},
    };
    if (st == DSCKPT_OK) st = st_plan_make(ent, n, meta, sizeof meta / sizeof meta[0], &out->plan);
    out->n = n;
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    free(ent);
    if (st) ds_rank_plan_clear(out);
    return st;
}
