/*
 * data.c — byte-level corpus: train/eval split, counter-based sampling of training
 * windows and the rank-sharded eval windows (see data.h for the exact rules).
 */
#include "data.h"

#include "fsutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN 0x9e3779b97f4a7c15ull
#define FIXED_ONE 4294967296.0   /* 2^32 */
#define LOSS_LIMIT 65536.0       /* 2^16 */

struct rt_data {
    uint8_t *bytes;
    uint64_t n, n_train, n_eval;
    uint64_t seq_len;
};

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

dsckpt_status rt_data_open(const char *path, uint64_t seq_len, double eval_fraction, rt_data **out) {
    *out = NULL;
    if (seq_len < 1 || seq_len > RT_DATA_MAX_SEQ_LEN)
        return ds_err(DSCKPT_EINVAL, "%s: seq_len %llu is out of range; use 1 to %u", path,
                      (unsigned long long)seq_len, RT_DATA_MAX_SEQ_LEN);
    if (!(eval_fraction > 0 && eval_fraction < 1))
        return ds_err(DSCKPT_EINVAL, "%s: eval fraction %g must be between 0 and 1 (exclusive); the default is %g",
                      path, eval_fraction, RT_DATA_EVAL_FRACTION_DEFAULT);
    char *text = NULL;
    size_t n = 0;
    dsckpt_status st = ds_read_small_file(path, RT_DATA_MAX_BYTES, &text, &n);
    if (st == DSCKPT_ECORRUPT) st = ds_err_prefix(DSCKPT_EINVAL, "training text too large; split it");
    if (st) return st;
    uint64_t n_eval = (uint64_t)floor((double)n * eval_fraction);
    if (n_eval > n) n_eval = n;
    uint64_t n_train = n - n_eval, need = seq_len + 1;
    if (n_train < need || n_eval < need) {
        free(text);
        return ds_err(DSCKPT_EINVAL,
                      "%s: %zu bytes split into train %llu + eval %llu (eval fraction %g), but each part needs at "
                      "least seq_len + 1 = %llu bytes; use a longer text file, a smaller seq_len or another eval "
                      "fraction", path, n, (unsigned long long)n_train, (unsigned long long)n_eval, eval_fraction,
                      (unsigned long long)need);
    }
    rt_data *d = NULL;
    st = ds_calloc(1, sizeof *d, &d);
    if (st) {
        free(text);
        return st;
    }
    d->bytes = (uint8_t *)text;
    d->n = n;
    d->n_train = n_train;
    d->n_eval = n_eval;
    d->seq_len = seq_len;
    *out = d;
    return DSCKPT_OK;
}

void rt_data_free(rt_data *d) {
    if (!d) return;
    free(d->bytes);
    free(d);
}

uint64_t rt_data_seq_len(const rt_data *d) { return d->seq_len; }
uint64_t rt_data_train_bytes(const rt_data *d) { return d->n_train; }
uint64_t rt_data_eval_bytes(const rt_data *d) { return d->n_eval; }
const uint8_t *rt_data_bytes(const rt_data *d) { return d->bytes; }

uint64_t rt_data_sample_offset(const rt_data *d, uint64_t seed, uint64_t k, uint64_t j) {
    uint64_t h = mix64(seed + GOLDEN);
    h = mix64(h + k + GOLDEN);
    h = mix64(h + j + GOLDEN);
    uint64_t starts = d->n_train - d->seq_len; /* windows of seq_len+1 that fit: >= 1 */
    return (uint64_t)(((unsigned __int128)h * starts) >> 64);
}

static void copy_row(const uint8_t *src, uint64_t n, int32_t *row) {
    for (uint64_t t = 0; t < n; t++) row[t] = src[t];
}

void rt_data_fill_sample(const rt_data *d, uint64_t seed, uint64_t k, uint64_t j, int32_t *row) {
    copy_row(d->bytes + rt_data_sample_offset(d, seed, k, j), d->seq_len + 1, row);
}

static dsckpt_status check_rank(int world, int rank, uint64_t mb) {
    if (world < 1 || rank < 0 || rank >= world)
        return ds_err(DSCKPT_EINVAL, "data: rank %d of world size %d is out of range", rank, world);
    if (mb < 1) return ds_err(DSCKPT_EINVAL, "data: micro-batch size must be at least 1");
    return DSCKPT_OK;
}

dsckpt_status rt_data_fill_micro(const rt_data *d, uint64_t seed, uint64_t k, int world, int rank,
                                 uint64_t micro_step, uint64_t mb, int32_t *tokens) {
    DS_TRY(check_rank(world, rank, mb));
    uint64_t first, last;
    if (ds_mul_overflow(micro_step, (uint64_t)world, &first) || ds_add_overflow(first, (uint64_t)rank, &first) ||
        ds_mul_overflow(first, mb, &first) || ds_add_overflow(first, mb - 1, &last))
        return ds_err(DSCKPT_EINVAL, "data: sample index of micro-step %llu overflows",
                      (unsigned long long)micro_step);
    uint64_t L = d->seq_len + 1;
    for (uint64_t i = 0; i < mb; i++) rt_data_fill_sample(d, seed, k, first + i, tokens + i * L);
    return DSCKPT_OK;
}

uint64_t rt_data_eval_windows(const rt_data *d, uint64_t cap) {
    uint64_t n = d->n_eval / (d->seq_len + 1);
    return cap && cap < n ? cap : n;
}

uint64_t rt_data_eval_window_offset(const rt_data *d, uint64_t w) { return d->n_train + w * (d->seq_len + 1); }

uint64_t rt_data_eval_batches(const rt_data *d, uint64_t cap, int world, uint64_t mb) {
    if (world < 1 || mb < 1) return 0;
    uint64_t per_rank = ds_ceil_div(rt_data_eval_windows(d, cap), (uint64_t)world);
    return ds_ceil_div(per_rank, mb);
}

dsckpt_status rt_data_fill_eval(const rt_data *d, uint64_t cap, int world, int rank, uint64_t batch, uint64_t mb,
                                int32_t *tokens, uint64_t *window_ids, uint64_t *rows) {
    *rows = 0;
    DS_TRY(check_rank(world, rank, mb));
    uint64_t N = rt_data_eval_windows(d, cap), L = d->seq_len + 1, W = (uint64_t)world;
    uint64_t idx; /* index into this rank's list */
    if (ds_mul_overflow(batch, mb, &idx)) return DSCKPT_OK; /* far past the end: empty */
    for (uint64_t i = 0; i < mb; i++, idx++) {
        uint64_t w;
        if (ds_mul_overflow(idx, W, &w) || ds_add_overflow(w, (uint64_t)rank, &w) || w >= N) break;
        copy_row(d->bytes + rt_data_eval_window_offset(d, w), L, tokens + *rows * L);
        if (window_ids) window_ids[*rows] = w;
        ++*rows;
    }
    return DSCKPT_OK;
}

void rt_eval_sum_add(rt_eval_sum *s, double window_loss) {
    s->windows++;
    if (!isfinite(window_loss) || fabs(window_loss) >= LOSS_LIMIT) {
        s->nonfinite++;
        return;
    }
    int64_t v = llround(window_loss * FIXED_ONE);
    if (__builtin_add_overflow(s->fixed, v, &s->fixed)) s->nonfinite++;
}

void rt_eval_sum_merge(rt_eval_sum *s, const rt_eval_sum *o) {
    s->windows += o->windows;
    s->nonfinite += o->nonfinite;
    if (__builtin_add_overflow(s->fixed, o->fixed, &s->fixed)) s->nonfinite++;
}

double rt_eval_sum_mean(const rt_eval_sum *s) {
    if (s->windows == 0 || s->nonfinite) return NAN;
    return (double)s->fixed / FIXED_ONE / (double)s->windows;
}
