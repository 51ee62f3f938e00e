/*
 * engine_ckpt.h — the running engine's checkpoints, in the native format
 * (docs/native-format.md), written and read through libckpt.
 *
 * Saving (collective): every rank writes its own rank file (temporary name, fsync,
 * rename) with the chunk digests computed on the way; the digests are gathered to
 * rank 0 alone, which writes manifest.json last, then replaces `latest` atomically
 * and broadcasts its verdict (committed or not) to every rank. With
 * async saving a background thread writes the rank's file from its live partitions
 * (fp32 master, exp_avg, exp_avg_sq) while training goes on; right before the next
 * optimizer update changes them, whatever the writer has not read yet is copied into
 * a host buffer (so a save written within one step costs no copy at all); the
 * commit (digests, manifest, latest) happens at the first step boundary where every
 * rank's writer has finished (rt_saver_poll), or when the next save or the end of
 * training waits for it. The background thread never calls MPI; only the training
 * thread does.
 *
 * Loading (collective): any checkpoint the fragment map can describe (native at any
 * world size and stage, or DeepSpeed's files with matching tensor names) is read
 * straight into this rank's partition: each rank reads only the byte ranges of
 * the elements it owns under the current stage and world size, and opens only the
 * files those ranges lie in (ds_fdset_open_lazy).
 */
#ifndef DSRT_ENGINE_CKPT_H
#define DSRT_ENGINE_CKPT_H

#include "engine.h"

#include <cjson/cJSON.h>

typedef struct rt_saver rt_saver;

dsckpt_status rt_saver_create(rt_engine *e, bool async, rt_saver **out);
/* Saves from now on write zstd-compressed rank files at `level` (0: plain; see
 * docs/native-format.md, version 2). */
void rt_saver_set_compress(rt_saver *s, int level);
/* Waits for a save in flight (without committing it) and frees. NULL is fine. */
void rt_saver_free(rt_saver *s);

/* Starts saving the engine's current state as save_dir/tag. `state` (the trainer's
 * part: data position, RNG) is merged into the manifest's "state"; `metrics` is
 * stored as is (both may be NULL). A save still in flight is finished and committed
 * first. *stall_s gets the time this call kept training from going on. */
dsckpt_status rt_saver_start(rt_saver *s, const char *save_dir, const char *tag, const cJSON *state,
                             const cJSON *metrics, double *stall_s);

/* Commits the save in flight once every rank has written its file; with `wait`,
 * waits for that. *committed (may be NULL) is set to the tag committed by this call
 * or NULL. Collective. */
dsckpt_status rt_saver_poll(rt_saver *s, bool wait, const char **committed);
bool rt_saver_busy(const rt_saver *s);
/* The threads a save's rank file is written on: for a synchronous save the
 * training threads (OpenMP's); for an async one, which writes beside training, one
 * while the optimizer state is in host memory, else the training threads but one. */
int rt_saver_threads(const rt_saver *s);

/* Called on every rank once a save is committed, wherever that happens (in
 * rt_saver_poll; in rt_saver_start for the save in flight it finishes first, and
 * for its own save when not async), with the save's tag, its step (from a
 * "global_step<N>" tag, else 0) and the metrics given to rt_saver_start (may be
 * NULL). Its failure is returned by the call that committed. */
typedef dsckpt_status (*rt_commit_fn)(void *user, const char *tag, uint64_t step, const cJSON *metrics);
void rt_saver_on_commit(rt_saver *s, rt_commit_fn fn, void *user);
/* Seconds training spent, since the last call, copying partitions that an async
 * writer had not read yet when the optimizer was about to change them (the part of
 * a save's stall that falls after rt_saver_start). */
double rt_saver_take_copy_seconds(rt_saver *s);

/* Loads the checkpoint at `path` (save root or tag directory; tag as in
 * dsckpt_ckpt_open) into the engine: weights, moments, optimizer step, loss scaler.
 * *state_out (may be NULL) gets a copy of the manifest's "state" (free with
 * cJSON_Delete). *read_s (may be NULL) gets the seconds this rank spent opening the
 * checkpoint and reading its partition, until every rank had read its own (the
 * rest is rebuilding the working weights from the new partitions). Collective.
 * A failed load (the verdict the same on every rank: corrupt on all when one found
 * damage) leaves the step counters and the loss scaler as they were and *state_out
 * NULL; the weights and moments are then undefined until a load succeeds. */
dsckpt_status rt_engine_load(rt_engine *e, const char *path, const char *tag, cJSON **state_out, double *read_s);

/* Whether checkpoint c holds this engine's model: its "model" object (when it has
 * one) equals the run's settings, and its tensors are exactly the model's
 * parameters with their shapes (module buffers aside). A mismatch is
 * DSCKPT_EINVAL naming both sides ("checkpoint has n_layer=4, this run
 * n_layer=2"); `what` names the checkpoint. rt_engine_load and
 * rt_engine_load_weights check this first. Not collective. */
dsckpt_status rt_engine_check_model(const rt_engine *e, const dsckpt_ckpt *c, const char *what);

/* Loads only the fp32 master weights (and the working weights from them) of a
 * checkpoint: load-best-at-end. Collective. */
dsckpt_status rt_engine_load_weights(rt_engine *e, const char *path, const char *tag);

#endif /* DSRT_ENGINE_CKPT_H */
