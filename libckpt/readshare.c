/*
 * readshare.c — the reads of several readers of one checkpoint (the ranks of a
 * resume at another world size), each check unit read and hashed by one of them.
 *
 * A reader checks every chunk it reads whole, so a chunk that holds bytes of two
 * readers' shares is hashed twice: at 4 -> 3 ranks (bench/save.sh) the chunks where
 * two shares meet came to 15 % of the state, each hashed by two ranks. Here a unit
 * that several readers touch gets one checker, the reader with the most bytes of
 * it; the checker reads the others' pieces of it into a send buffer, and they
 * receive them (the caller's exchange) instead of reading them. The bytes moved
 * cost copies and memory, so each reader's sends plus receives stay within a
 * budget (memory the caller has idle), and units past it are read by each of
 * their readers, as without a plan.
 * Every reader plans from the same gathered extents, so all plans agree: the
 * bytes reader k sends to reader j are j's pieces of the units k checks, in
 * (file, unit, offset) order, and that is the order j expects them in.
 */
#include "ckpt.h"
#include "dsckpt_internal.h"

#include <stdlib.h>
#include <string.h>

/* One reader's extent cut at its file's unit boundaries. */
typedef struct {
    uint32_t file;
    int reader;
    uint64_t unit; /* UINT64_MAX: a file without fixed units, read by its reader alone */
    uint64_t offset, bytes;
    size_t run; /* its extent's index in the reader's list */
} share_piece;

static int piece_order(const void *a, const void *b) {
    const share_piece *x = a, *y = b;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    if (x->unit != y->unit) return x->unit < y->unit ? -1 : 1;
    if (x->reader != y->reader) return x->reader < y->reader ? -1 : 1;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->run < y->run ? -1 : x->run > y->run;
}

static int run_order(const void *a, const void *b) {
    const ds_read_run *x = a, *y = b;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static dsckpt_status cut_pieces(const dsckpt_ckpt *c, int W, const ds_read_extent *all, const size_t *counts,
                                share_piece **out, size_t *nout) {
    share_piece *pc = NULL;
    size_t n = 0, cap = 0, at = 0;
    for (int r = 0; r < W; r++) {
        for (size_t k = 0; k < counts[r]; k++, at++) {
            const ds_read_extent *x = &all[at];
            if (x->file >= c->nfiles || x->bytes == 0 || x->offset > UINT64_MAX - x->bytes) {
                free(pc);
                return ds_err(DSCKPT_EINTERNAL, "%s: read plan: reader %d's extent %zu is not in a file", c->dir, r, k);
            }
            uint64_t u = ds_ckpt_check_unit(c, (uint32_t)x->file), end = x->offset + x->bytes;
            for (uint64_t pos = x->offset; pos < end;) {
                uint64_t b = ds_unit_piece_end(u, pos, end);
                dsckpt_status st = ds_array_room(&pc, &cap, n, sizeof *pc);
                if (st) {
                    free(pc);
                    return st;
                }
                pc[n++] = (share_piece){.file = (uint32_t)x->file, .reader = r, .unit = ds_unit_index(u, pos),
                                        .offset = pos, .bytes = b - pos, .run = k};
                pos = b;
            }
        }
    }
    if (n) qsort(pc, n, sizeof *pc, piece_order);
    *out = pc;
    *nout = n;
    return DSCKPT_OK;
}

/* One shared unit (pieces [i, j)): its checker is the reader with the most bytes
 * of it, so that the fewest bytes move (on a tie, the one whose units add up to
 * the fewest bytes so far, then the lowest). The unit is shared only if the bytes
 * it moves keep every reader's sends plus receives within the budget; otherwise
 * each of its readers reads its own pieces (-1). `has` is W zeroed entries, left
 * zeroed. */
static int share_unit(int W, const share_piece *pc, size_t i, size_t j, const uint64_t *load, uint64_t *used,
                      uint64_t budget, uint64_t *has) {
    int who = -1;
    for (size_t k = i; k < j; k++) has[pc[k].reader] += pc[k].bytes;
    for (int r = 0; r < W; r++)
        if (has[r] && (who < 0 || has[r] > has[who] || (has[r] == has[who] && load[r] < load[who]))) who = r;
    uint64_t out = 0;
    bool fits = true;
    for (int r = 0; r < W; r++)
        if (r != who && has[r]) {
            out += has[r];
            fits = fits && has[r] <= budget - used[r];
        }
    fits = fits && out <= budget - used[who];
    for (int r = 0; r < W && fits; r++)
        if (r != who) used[r] += has[r];
    if (fits) used[who] += out;
    memset(has, 0, (size_t)W * sizeof *has);
    return fits ? who : -1;
}

/* checker[i] for the unit of piece i (the same for all of a shared unit's
 * pieces): its only reader, or for a unit several readers touch the one
 * share_unit picks (the units of one reader alone counted first), or each
 * piece's own reader where the budget ran out. */
static dsckpt_status pick_checkers(const dsckpt_ckpt *c, int W, const share_piece *pc, size_t n, uint64_t budget,
                                   int *checker, uint64_t *shared_units) {
    uint64_t *load = NULL;
    dsckpt_status st = ds_calloc((size_t)W * 3, sizeof *load, &load);
    uint64_t *used = load + W, *has = load + 2 * W;
    for (int pass = 0; pass < 2 && !st; pass++) {
        for (size_t i = 0, j; i < n; i = j) {
            for (j = i + 1; j < n && pc[j].file == pc[i].file && pc[j].unit == pc[i].unit; j++) {}
            if (pc[i].unit == UINT64_MAX) { /* one piece each, read by its reader */
                for (size_t k = i; k < j; k++) checker[k] = pc[k].reader;
                continue;
            }
            bool sole = pc[j - 1].reader == pc[i].reader;
            if (sole != (pass == 0)) continue;
            uint64_t ub = ds_ckpt_check_unit(c, pc[i].file);
            int who = sole ? pc[i].reader : share_unit(W, pc, i, j, load, used, budget, has);
            if (who >= 0 && !sole) (*shared_units)++;
            for (size_t k = i; k < j; k++) {
                checker[k] = who >= 0 ? who : pc[k].reader;
                if (who < 0 && (k == i || pc[k].reader != pc[k - 1].reader)) load[pc[k].reader] += ub;
            }
            if (who >= 0) load[who] += ub;
        }
    }
    free(load);
    return st;
}

/* The reads of this reader (into its own buffers, or for the send buffer at
 * send_at), sorted by file and offset and merged where they continue each other. */
static dsckpt_status plan_reads(ds_read_share *p, const ds_read_list *mine, int me, const share_piece *pc, size_t n,
                                const int *checker, uint64_t *sent) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (checker[i] == me) m++;
    ds_read_run *runs = NULL;
    if (m) DS_TRY(ds_calloc(m, sizeof *runs, &runs));
    m = 0;
    for (size_t i = 0; i < n; i++) {
        if (checker[i] != me) continue;
        ds_read_run *r = &runs[m++];
        r->file = pc[i].file;
        r->offset = pc[i].offset;
        r->bytes = (size_t)pc[i].bytes;
        if (pc[i].reader == me) {
            const ds_read_run *src = &mine->runs[pc[i].run];
            r->dst = src->dst + (pc[i].offset - src->offset);
        } else { /* the send buffer's offset, until ds_read_share_bind */
            r->dst = NULL;
            r->send_at = p->send_off[pc[i].reader] + sent[pc[i].reader];
            sent[pc[i].reader] += pc[i].bytes;
        }
    }
    if (m) qsort(runs, m, sizeof *runs, run_order);
    for (size_t i = 1; i < m; i++)
        if (runs[i].file == runs[i - 1].file && runs[i].offset < runs[i - 1].offset + runs[i - 1].bytes) {
            dsckpt_status st = ds_err(DSCKPT_EINTERNAL, "read plan: two pieces of file %u overlap at byte %llu",
                                      runs[i].file, (unsigned long long)runs[i].offset);
            free(runs);
            return st;
        }
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        ds_read_run *last = k ? &runs[k - 1] : NULL;
        if (last && last->dst && runs[i].dst && last->file == runs[i].file &&
            last->offset + last->bytes == runs[i].offset && last->dst + last->bytes == runs[i].dst) {
            last->bytes += runs[i].bytes;
            continue;
        }
        runs[k++] = runs[i];
    }
    p->list = (ds_read_list){.runs = runs, .n = k, .cap = m};
    return DSCKPT_OK;
}

/* What this reader receives: its pieces of the units another reader checks, each
 * at its place in that reader's block of the receive buffer. */
static dsckpt_status plan_copies(ds_read_share *p, const ds_read_list *mine, int me, const share_piece *pc, size_t n,
                                 const int *checker, uint64_t *got) {
    for (size_t i = 0; i < n; i++) {
        if (pc[i].reader != me || checker[i] == me) continue;
        DS_TRY(ds_array_room(&p->copies, &p->copies_cap, p->ncopies, sizeof *p->copies));
        const ds_read_run *src = &mine->runs[pc[i].run];
        int k = checker[i];
        p->copies[p->ncopies++] = (ds_share_copy){.at = p->recv_off[k] + got[k], .bytes = (size_t)pc[i].bytes,
                                                  .dst = src->dst + (pc[i].offset - src->offset)};
        got[k] += pc[i].bytes;
    }
    return DSCKPT_OK;
}

/* Sizes of each peer's block, then the blocks' offsets (peers in rank order). */
static void plan_sizes(ds_read_share *p, int me, const share_piece *pc, size_t n, const int *checker) {
    for (size_t i = 0; i < n; i++) {
        if (checker[i] == me && pc[i].reader != me) p->send_bytes[pc[i].reader] += pc[i].bytes;
        if (pc[i].reader == me && checker[i] != me) p->recv_bytes[checker[i]] += pc[i].bytes;
    }
    for (int r = 0; r < p->W; r++) {
        p->send_off[r] = p->send_total;
        p->send_total += p->send_bytes[r];
        p->recv_off[r] = p->recv_total;
        p->recv_total += p->recv_bytes[r];
    }
}

static bool same_extents(const ds_read_list *mine, const ds_read_extent *x, size_t n) {
    if (mine->n != n) return false;
    for (size_t i = 0; i < n; i++)
        if (mine->runs[i].file != x[i].file || mine->runs[i].offset != x[i].offset || mine->runs[i].bytes != x[i].bytes)
            return false;
    return true;
}

dsckpt_status ds_read_share_plan(const dsckpt_ckpt *c, const ds_read_list *mine, int me, int W,
                                 const ds_read_extent *all, const size_t *counts, uint64_t budget, ds_read_share *p) {
    *p = (ds_read_share){.W = W};
    if (W < 1 || me < 0 || me >= W) return ds_err(DSCKPT_EINTERNAL, "read plan: reader %d of %d", me, W);
    size_t before = 0;
    for (int r = 0; r < me; r++) before += counts[r];
    if (!same_extents(mine, all + before, counts[me]))
        return ds_err(DSCKPT_EINTERNAL, "%s: read plan: this reader's gathered extents are not its list", c->dir);
    share_piece *pc = NULL;
    size_t n = 0;
    int *checker = NULL;
    uint64_t *moved = NULL;
    dsckpt_status st = cut_pieces(c, W, all, counts, &pc, &n);
    if (!st && n) st = ds_calloc(n, sizeof *checker, &checker);
    if (!st) st = ds_calloc((size_t)W * 5, sizeof *moved, &moved);
    if (!st) st = pick_checkers(c, W, pc, n, budget, checker, &p->shared_units);
    if (!st) {
        p->send_bytes = moved;
        p->recv_bytes = moved + W;
        p->send_off = moved + 2 * W;
        p->recv_off = moved + 3 * W;
        uint64_t *scratch = moved + 4 * W;
        moved = NULL;
        plan_sizes(p, me, pc, n, checker);
        st = plan_reads(p, mine, me, pc, n, checker, scratch);
        memset(scratch, 0, (size_t)W * sizeof *scratch);
        if (!st) st = plan_copies(p, mine, me, pc, n, checker, scratch);
    }
    free(pc);
    free(checker);
    free(moved);
    if (st) ds_read_share_free(p);
    return st;
}

void ds_read_share_bind(ds_read_share *p, uint8_t *send) {
    for (size_t i = 0; i < p->list.n; i++)
        if (!p->list.runs[i].dst) p->list.runs[i].dst = send + p->list.runs[i].send_at;
}

void ds_read_share_scatter(const ds_read_share *p, const uint8_t *recv) {
    for (size_t i = 0; i < p->ncopies; i++) memcpy(p->copies[i].dst, recv + p->copies[i].at, p->copies[i].bytes);
}

void ds_read_share_free(ds_read_share *p) {
    ds_read_list_free(&p->list);
    free(p->send_bytes);
    free(p->copies);
    *p = (ds_read_share){0};
}
