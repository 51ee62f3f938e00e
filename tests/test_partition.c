/*
 * test_partition.c — ZeRO partition arithmetic and the native layout against brute
 * force: for W = 1..17 and odd sizes, every element of every tensor is owned by
 * exactly one rank, at the offset DeepSpeed's rules give, and padding is zero-sized
 * where DeepSpeed has none.
 */
#include "layout.h"
#include "partition.h"
#include "tutil.h"

#include <stdlib.h>
#include <string.h>

static void test_flat_formula(void) {
    for (int W = 1; W <= 17; W++) {
        for (uint64_t N = 0; N <= 300; N++) {
            ds_flat_part p = ds_part_flat(N, W);
            /* Npad is the smallest multiple of 2W that is >= N. */
            CU_ASSERT_EQUAL(p.padded % (2 * (uint64_t)W), 0);
            CU_ASSERT(p.padded >= N);
            CU_ASSERT(p.padded < N + 2 * (uint64_t)W || N == 0);
            CU_ASSERT_EQUAL(p.part * (uint64_t)W, p.padded);
            /* Brute force: each element index in [0, Npad) belongs to rank i / P. */
            uint64_t real_total = 0;
            for (int r = 0; r < W; r++) {
                uint64_t s, c;
                ds_part_real(p.part, r, N, &s, &c);
                CU_ASSERT_EQUAL(s, p.part * (uint64_t)r);
                uint64_t brute = 0;
                for (uint64_t i = 0; i < N; i++)
                    if (p.part && i / p.part == (uint64_t)r) brute++;
                CU_ASSERT_EQUAL(c, brute);
                CU_ASSERT_EQUAL(ds_part_flat_padding(p, r), p.part - brute);
                real_total += c;
            }
            CU_ASSERT_EQUAL(real_total, N);
        }
    }
    /* A known DeepSpeed case: N = 10, W = 4 -> Npad 16, P 4; rank 2 has 2 real, rank 3 none. */
    ds_flat_part p = ds_part_flat(10, 4);
    CU_ASSERT_EQUAL(p.padded, 16);
    CU_ASSERT_EQUAL(p.part, 4);
    CU_ASSERT_EQUAL(ds_part_flat_padding(p, 2), 2);
    CU_ASSERT_EQUAL(ds_part_flat_padding(p, 3), 4);
}

static void test_piece_formula(void) {
    for (int W = 1; W <= 17; W++) {
        for (uint64_t n = 0; n <= 200; n++) {
            uint64_t q = ds_part_piece(n, W);
            CU_ASSERT(q * (uint64_t)W >= n);
            CU_ASSERT(q == 0 || (q - 1) * (uint64_t)W < n);
            uint64_t covered = 0;
            for (int r = 0; r < W; r++) {
                uint64_t s, c;
                ds_part_real(q, r, n, &s, &c);
                CU_ASSERT_EQUAL(s, q * (uint64_t)r);
                uint64_t brute = 0;
                for (uint64_t i = 0; i < n; i++)
                    if (i / q == (uint64_t)r) brute++;
                CU_ASSERT_EQUAL(c, brute);
                covered += c;
            }
            CU_ASSERT_EQUAL(covered, n);
        }
    }
    /* n = 5 over W = 8: q = 1, ranks 5..7 are pure padding. */
    CU_ASSERT_EQUAL(ds_part_piece(5, 8), 1);
}

/* A tensor list with odd sizes, two trainable groups and frozen tensors. */
static ds_tensor *make_tensors(size_t *n) {
    static const uint64_t sizes[] = {7, 1, 13, 0, 33, 2, 5, 17, 64, 3};
    static const int groups[] = {0, 1, 0, 0, 1, -1, 0, -1, 1, 0};
    size_t nt = sizeof sizes / sizeof sizes[0];
    ds_tensor *ts = calloc(nt, sizeof *ts);
    for (size_t i = 0; i < nt; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%zu", i);
        ts[i].name = strdup(name);
        ts[i].dtype = DSCKPT_BF16;
        ts[i].ndim = 1;
        ts[i].shape[0] = sizes[i];
        ts[i].numel = sizes[i];
        ts[i].trainable = groups[i] >= 0;
        ts[i].group = groups[i];
    }
    *n = nt;
    return ts;
}

/* Brute-force owner of element e of tensor t at (stage, W): rank and offset within
 * that rank's buffer, computed from first principles. */
static void brute_owner(const ds_tensor *ts, size_t nt, size_t t, uint64_t e, int stage, int W, int *rank,
                        uint64_t *off) {
    if (!ts[t].trainable) {
        if (stage == 3) {
            uint64_t q = (ts[t].numel + W - 1) / W;
            *rank = (int)(e / q);
            *off = e % q;
        } else {
            *rank = 0;
            *off = e;
        }
        return;
    }
    int g = ts[t].group;
    if (stage == 3) {
        uint64_t q = (ts[t].numel + W - 1) / W;
        *rank = (int)(e / q);
        uint64_t before = 0; /* pieces of earlier tensors in the group */
        for (size_t i = 0; i < t; i++)
            if (ts[i].trainable && ts[i].group == g) before += (ts[i].numel + W - 1) / W;
        *off = before + e % q;
        return;
    }
    uint64_t flat = e, N = 0;
    for (size_t i = 0; i < nt; i++) {
        if (!ts[i].trainable || ts[i].group != g) continue;
        if (i < t) flat += ts[i].numel;
        N += ts[i].numel;
    }
    if (stage == 0) {
        *rank = 0;
        *off = flat;
        return;
    }
    uint64_t A = 2 * (uint64_t)W, P = ((N + A - 1) / A) * A / W;
    *rank = (int)(flat / P);
    *off = flat % P;
}

static void test_layout_brute(void) {
    size_t nt;
    ds_tensor *ts = make_tensors(&nt);
    for (int stage = 0; stage <= 3; stage++) {
        for (int W = 1; W <= 17; W++) {
            ds_layout *l = NULL;
            TU_ASSERT_OK(ds_layout_make(ts, nt, 2, stage, W, &l));
            CU_ASSERT_EQUAL(l->nfiles, stage == 0 ? 1 : W);
            for (size_t t = 0; t < nt; t++) {
                for (uint64_t e = 0; e < ts[t].numel; e++) {
                    int want_rank;
                    uint64_t want_off;
                    brute_owner(ts, nt, t, e, stage, W, &want_rank, &want_off);
                    int found = 0;
                    for (int r = 0; r < l->nfiles; r++)
                        for (size_t b = 0; b < l->ranks[r].nbufs; b++) {
                            const ds_buf *bf = &l->ranks[r].bufs[b];
                            if (bf->group != (ts[t].trainable ? ts[t].group : -1)) continue;
                            if (bf->group < 0 && bf->tensor != t) continue;
                            for (size_t k = 0; k < bf->npieces; k++) {
                                const ds_piece *p = &bf->pieces[k];
                                if (p->tensor == t && e >= p->start && e < p->start + p->numel) {
                                    found++;
                                    CU_ASSERT_EQUAL(r, want_rank);
                                    CU_ASSERT_EQUAL(p->buf_off + (e - p->start), want_off);
                                    CU_ASSERT(p->buf_off + p->numel <= bf->len);
                                }
                            }
                        }
                    CU_ASSERT_EQUAL(found, 1);
                }
            }
            /* Every rank's group buffer has the same length (stage 1-3), as DeepSpeed's do. */
            if (stage > 0)
                for (size_t b = 0; b < 2; b++)
                    for (int r = 1; r < W; r++)
                        CU_ASSERT_EQUAL(l->ranks[r].bufs[b].len, l->ranks[0].bufs[b].len);
            ds_layout_free(l);
        }
    }
    for (size_t i = 0; i < nt; i++) ds_tensor_clear(&ts[i]);
    free(ts);
}

static void test_layout_errors(void) {
    size_t nt;
    ds_tensor *ts = make_tensors(&nt);
    ds_layout *l = NULL;
    CU_ASSERT_EQUAL(ds_layout_make(ts, nt, 2, 4, 2, &l), DSCKPT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "stage"));
    CU_ASSERT_EQUAL(ds_layout_make(ts, nt, 2, 1, 0, &l), DSCKPT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "world size"));
    CU_ASSERT_PTR_NULL(l);
    for (size_t i = 0; i < nt; i++) ds_tensor_clear(&ts[i]);
    free(ts);
    /* A group whose element count overflows is refused before any piece is made,
     * at every stage with a flat buffer: nothing to free but what was set. */
    ds_tensor big[2] = {{.dtype = DSCKPT_F32, .ndim = 1, .numel = UINT64_C(1) << 63, .trainable = true},
                        {.dtype = DSCKPT_F32, .ndim = 1, .numel = UINT64_C(1) << 63, .trainable = true}};
    for (int stage = 0; stage <= 2; stage++) {
        CU_ASSERT_EQUAL(ds_layout_make(big, 2, 1, stage, 2, &l), DSCKPT_EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "overflows"));
        CU_ASSERT_PTR_NULL(l);
    }
}

/* ds_part_slice against element-by-element ownership: for every element j of a
 * tensor, the rank that owns it and where, by the rule of each stage; the slice of
 * rank r must be exactly the elements it owns, contiguous, at the right place. */
static void test_slice_brute(void) {
    static const uint64_t sizes[] = {0, 1, 2, 3, 7, 8, 13, 64, 65, 100};
    const size_t ns = sizeof sizes / sizeof sizes[0];
    for (int stage = 0; stage <= 3; stage++)
        for (int W = 1; W <= 9; W++) {
            uint64_t N = 0;
            for (size_t k = 0; k < ns; k++) N += sizes[k];
            uint64_t part = ds_part_flat(N, W).part;
            uint64_t off = 0, qoff = 0; /* flat offset (stages 0-2), piece offset (stage 3) */
            for (size_t k = 0; k < ns; k++) {
                uint64_t n = sizes[k], q = ds_part_piece(n, W);
                for (int r = 0; r < W; r++) {
                    ds_slice sl = ds_part_slice(stage, W, r, part, stage == 3 ? qoff : off, n);
                    uint64_t owned = 0, first = 0, at = 0;
                    for (uint64_t j = 0; j < n; j++) {
                        bool mine;
                        uint64_t pos;
                        if (stage == 0) mine = true, pos = off + j;
                        else if (stage == 3) mine = j / q == (uint64_t)r, pos = qoff + j - (uint64_t)r * q;
                        else mine = (off + j) / part == (uint64_t)r, pos = off + j - (uint64_t)r * part;
                        if (!mine) continue;
                        if (!owned) first = j, at = pos;
                        CU_ASSERT_EQUAL(j, first + owned); /* contiguous */
                        CU_ASSERT_EQUAL(pos, at + owned);
                        owned++;
                    }
                    CU_ASSERT_EQUAL(sl.count, owned);
                    if (owned) {
                        CU_ASSERT_EQUAL(sl.start, first);
                        CU_ASSERT_EQUAL(sl.at, at);
                    }
                }
                off += n;
                qoff += q;
            }
        }
}

int main(void) {
    static const tu_test tests[] = {{"flat partition vs brute force, W=1..17", test_flat_formula},
                                    {"stage-3 pieces vs brute force, W=1..17", test_piece_formula},
                                    {"slice of every rank vs element ownership, stages 0-3, W=1..9", test_slice_brute},
                                    {"layout owner of every element, stages 0-3, W=1..17", test_layout_brute},
                                    {"layout argument errors", test_layout_errors},
                                    {NULL, NULL}};
    return tu_main("partition", tests);
}
