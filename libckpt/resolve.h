/*
 * resolve.h — from what the user names (CKPT and -t TAG) to one tag directory,
 * for every command. CKPT may be:
 *   - a tag directory (manifest.json, or DeepSpeed's *_states.pt files);
 *   - a save root (a `latest` file and tag directories): dsckpt/dstrain, DeepSpeed,
 *     or one Hugging Face Trainer `checkpoint-N/` (a DeepSpeed save root holding
 *     trainer_state.json, config.json, ...);
 *   - a Hugging Face Trainer `output_dir/` holding `checkpoint-N/` folders.
 * TAG may be a tag, `latest`, `best`, or a `checkpoint-N` name:
 *   - `latest` (or no TAG): the tag `latest` names; in an output_dir, the newest
 *     complete checkpoint-N (highest N whose `latest` names a tag directory);
 *   - `best`: trainer_state.json's best_model_checkpoint, matched by its last path
 *     component only (the stored path may be absolute and stale, or relative to
 *     another working directory). In an output_dir or a checkpoint-N it must name a
 *     checkpoint-N folder of the output_dir (the newest complete checkpoint's
 *     trainer_state.json is read); in a dsckpt save root it names a tag (the best
 *     tracking dstrain writes);
 *   - `checkpoint-N`: that folder of the output_dir (from a checkpoint-N, its
 *     sibling);
 *   - any other tag: root/TAG; in an output_dir, the one checkpoint-N holding it.
 * Every name read from a file or a directory listing is checked as one plain path
 * component before any file-system call uses it. A missing tag is DSCKPT_ENOENT
 * with the tags (or checkpoints) that exist; a hostile name read from a file is
 * DSCKPT_ECORRUPT; a bad name from the user is DSCKPT_EINVAL.
 */
#ifndef DSCKPT_RESOLVE_H
#define DSCKPT_RESOLVE_H

#include "internal.h"

/* *dir_out = the tag directory; *root_out = its save root (NULL when CKPT is a
 * tag directory). Both malloc'd. */
dsckpt_status ds_resolve_ckpt(const char *path, const char *tag, char **dir_out, char **root_out);

/* True for "checkpoint-<N>" (N: 1 to 18 decimal digits); *n = N (n may be NULL). */
bool ds_hf_checkpoint_name(const char *name, uint64_t *n);

/* The last path component of a best_model_checkpoint value ('/' and '\\' both
 * separate; trailing separators ignored), checked as a plain name: malloc'd into
 * *out. A value whose last component is not a plain name is DSCKPT_ECORRUPT
 * naming `where`. */
dsckpt_status ds_best_component(const char *value, const char *where, char **out);

/* Reads `dir`/trainer_state.json strictly (hfjson.h). *best = the last component
 * of best_model_checkpoint (malloc'd), or NULL when the file records none (key
 * absent or null) or does not exist (*have_state false). */
dsckpt_status ds_trainer_best(const char *dir, char **best, bool *have_state);

/* Bound on the size of trainer_state.json (its log history grows with the run). */
#define DS_TRAINER_STATE_MAX (256u << 20)

#endif /* DSCKPT_RESOLVE_H */
