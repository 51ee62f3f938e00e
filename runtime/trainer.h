/*
 * trainer.h — the Hugging Face-style bookkeeping around checkpoints (rank 0 only):
 * trainer_state.json (global_step, log_history, best_metric, best_global_step,
 * best_model_checkpoint, ...), best-checkpoint tracking, and rotation of old
 * checkpoints that never deletes the best, `latest`, or anything it cannot prove
 * complete and older.
 */
#ifndef DSRT_TRAINER_H
#define DSRT_TRAINER_H

#include "internal.h"

#include <cjson/cJSON.h>

typedef struct rt_tstate {
    cJSON *root;  /* the trainer_state.json object */
    uint64_t steps_per_epoch; /* > 0: entries and the state get "epoch" (step / it),
                               * the state "num_train_epochs" (ceil(max_steps / it)),
                               * as the Trainer's; 0: no epoch fields */
} rt_tstate;

/* Reads save_dir/trainer_state.json, or starts a fresh one when there is none
 * (steps_per_epoch is set to 0: the caller sets it).
 * A file that is not a JSON object is DSCKPT_ECORRUPT naming it. */
dsckpt_status rt_tstate_load(const char *save_dir, rt_tstate *ts);
void rt_tstate_free(rt_tstate *ts);

/* Appends a training-log entry ({"step", "loss", "learning_rate", "grad_norm"}) or
 * an eval entry ({"step", <metric>: value}), each with "epoch" when
 * steps_per_epoch is set. */
void rt_tstate_log_train(rt_tstate *ts, uint64_t step, double loss, double lr, double grad_norm);
void rt_tstate_log_eval(rt_tstate *ts, uint64_t step, const char *metric, double value);

/* The metric name with Hugging Face's "eval_" prefix added when missing. */
void rt_metric_name(const char *given, char *out, size_t n);
/* Default of greater_is_better: false for names ending in "loss". */
bool rt_metric_greater_default(const char *metric);

/* Records a committed checkpoint `tag` at `step` whose metric is `value` (NaN =
 * no metric); updates best_* when it is better. Returns true when it became best. */
bool rt_tstate_checkpoint(rt_tstate *ts, const char *tag, uint64_t step, double value, bool greater);
const char *rt_tstate_best(const rt_tstate *ts); /* best_model_checkpoint, or NULL */

/* Writes save_dir/trainer_state.json atomically with global_step / max_steps set. */
dsckpt_status rt_tstate_save(rt_tstate *ts, const char *save_dir, uint64_t global_step, uint64_t max_steps,
                             uint64_t eval_steps, uint64_t save_steps, uint64_t train_batch_size);

/* Deletes complete checkpoints (a manifest.json that parses) older than the newest
 * complete one, keeping the newest `limit`, `best` and `keep` (the tag `latest`
 * names). limit 0 keeps everything. Directories without a manifest are left alone.
 * *deleted (may be NULL) counts what was removed. */
dsckpt_status rt_rotate(const char *save_dir, uint64_t limit, const char *best, const char *keep, int *deleted);

/* Complete checkpoints (tag directories named global_step<N> holding a manifest),
 * newest first; *tags is malloc'd, each entry too. */
dsckpt_status rt_list_checkpoints(const char *save_dir, char ***tags, size_t *n);
void rt_free_list(char **tags, size_t n);

#endif /* DSRT_TRAINER_H */
