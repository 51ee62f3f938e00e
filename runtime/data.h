/*
 * data.h — byte-level training data: the tokens are the bytes of one text file
 * (vocabulary 256). The file is split into a train part (the first bytes) and an
 * eval part (the last eval_fraction of them).
 *
 * Training samples. A sample is a window of seq_len + 1 consecutive tokens of the
 * train part (inputs = row[0..seq_len), targets = row[1..seq_len]). Global batch k
 * (k = 0, 1, ... one per optimizer step) is G = train_batch_size samples numbered
 * j = 0..G-1, and sample (seed, k, j) starts at
 *
 *     h = mix(mix(mix(seed + C) + k + C) + j + C)          (mod 2^64)
 *     offset = (h * (n_train - seq_len)) >> 64            (128-bit product)
 *
 * where C = 0x9e3779b97f4a7c15 and mix is splitmix64's finaliser
 * (z ^= z >> 30; z *= 0xbf58476d1ce4e5b9; z ^= z >> 27; z *= 0x94d049bb133111eb;
 * z ^= z >> 31). The bias of the multiply-shift is below (n_train / 2^64).
 *
 * Rank r of W, on micro-step a (0 <= a < gradient_accumulation_steps), row i of its
 * micro-batch of mb rows, reads sample j = (a*W + r)*mb + i. Hence the set of samples
 * in global batch k depends only on (seed, k) and G = mb x accumulation x W — never
 * on how G is split into world size and accumulation steps. That is the point of the
 * design: a run resumed on a different number of ranks (same train_batch_size) sees
 * exactly the same batches.
 *
 * Loader state = the index k of the next global batch (a uint64). Nothing else is
 * kept: to resume, set k to the number of global batches already consumed (one per
 * optimizer step attempted, including fp16-skipped ones if the engine consumed their
 * data) and keep the seed.
 *
 * Evaluation. The eval part is cut into non-overlapping windows of seq_len + 1
 * tokens, window w at byte n_train + w*(seq_len+1), w = 0..N-1 with
 * N = min(cap, floor(n_eval / (seq_len+1))) (cap 0 = no cap). Rank r takes windows
 * r, r+W, r+2W, ... in micro-batches of mb rows; every rank runs the same number of
 * eval micro-batches (rt_data_eval_batches), the last ones possibly short or empty,
 * so collectives stay matched. The eval loss is the mean over all N windows of each
 * window's mean token loss. Accumulate it in an rt_eval_sum: it sums in 2^-32 fixed
 * point, so summing per rank and then across ranks (MPI_SUM of the three 64-bit
 * integers) gives the same bits for every world size, provided each window's loss
 * does not depend on which other rows share its micro-batch. (The sum stays exact
 * while N x the mean loss < 2^31, e.g. 2^25 windows at loss 64.)
 *
 * An rt_data is read-only after open and may be shared by threads.
 */
#ifndef DSRT_DATA_H
#define DSRT_DATA_H

#include "internal.h"

#define RT_DATA_EVAL_FRACTION_DEFAULT 0.1
#define RT_DATA_MAX_SEQ_LEN (1u << 24)
#define RT_DATA_MAX_BYTES ((size_t)1 << 34) /* 16 GiB */

typedef struct rt_data rt_data;

/* Reads the whole file. 0 < eval_fraction < 1; the eval part is the last
 * floor(size * eval_fraction) bytes. Both parts must hold at least seq_len + 1 bytes
 * (DSCKPT_EINVAL naming the file, the sizes and the fix); a missing file is
 * DSCKPT_ENOENT. */
dsckpt_status rt_data_open(const char *path, uint64_t seq_len, double eval_fraction, rt_data **out);
void rt_data_free(rt_data *d); /* NULL is fine */

uint64_t rt_data_seq_len(const rt_data *d);
uint64_t rt_data_train_bytes(const rt_data *d);
uint64_t rt_data_eval_bytes(const rt_data *d);
/* The bytes of the whole file (train part first); valid until rt_data_free. */
const uint8_t *rt_data_bytes(const rt_data *d);

/* Byte offset (into the train part, which starts the file) of sample (seed, k, j). */
uint64_t rt_data_sample_offset(const rt_data *d, uint64_t seed, uint64_t k, uint64_t j);
/* Writes sample (seed, k, j) as seq_len + 1 tokens. */
void rt_data_fill_sample(const rt_data *d, uint64_t seed, uint64_t k, uint64_t j, int32_t *row);
/* Fills mb rows of seq_len + 1 tokens (row-major) for rank `rank` of `world` on
 * micro-step `micro_step` of global batch k. DSCKPT_EINVAL on a bad rank/world/mb or
 * a sample index that overflows. */
dsckpt_status rt_data_fill_micro(const rt_data *d, uint64_t seed, uint64_t k, int world, int rank,
                                 uint64_t micro_step, uint64_t mb, int32_t *tokens);

/* N, the number of eval windows (cap 0 = all that fit). */
uint64_t rt_data_eval_windows(const rt_data *d, uint64_t cap);
/* Byte offset in the file of eval window w (< N). */
uint64_t rt_data_eval_window_offset(const rt_data *d, uint64_t w);
/* Eval micro-batches every rank runs: ceil(ceil(N / world) / mb); 0 if N == 0. */
uint64_t rt_data_eval_batches(const rt_data *d, uint64_t cap, int world, uint64_t mb);
/* Fills eval micro-batch `batch` of rank `rank`: up to mb rows of seq_len + 1 tokens,
 * the windows rank + world*(batch*mb + i) that are < N. *rows gets how many (0..mb);
 * window_ids (may be NULL) gets their window numbers. */
dsckpt_status rt_data_fill_eval(const rt_data *d, uint64_t cap, int world, int rank, uint64_t batch, uint64_t mb,
                                int32_t *tokens, uint64_t *window_ids, uint64_t *rows);

/* World-size-independent eval loss accumulator (see above). Zero-initialise it. */
typedef struct rt_eval_sum {
    int64_t fixed;      /* sum of round(window_loss * 2^32) */
    uint64_t windows;   /* windows added */
    uint64_t nonfinite; /* windows whose loss was NaN, infinite or |loss| >= 2^16 */
} rt_eval_sum;

/* Adds one window's mean token loss. */
void rt_eval_sum_add(rt_eval_sum *s, double window_loss);
/* Adds another accumulator (the reduction, done by hand). */
void rt_eval_sum_merge(rt_eval_sum *s, const rt_eval_sum *other);
/* Mean window loss; NaN when no windows or any non-finite one. */
double rt_eval_sum_mean(const rt_eval_sum *s);

#endif /* DSRT_DATA_H */
