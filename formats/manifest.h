/*
 * manifest.h — the native checkpoint manifest (manifest.json), version 1.
 *
 * Schema (docs/formats.md has the full description):
 *   format "dsckpt", version 1, tag, step, world_size, zero_stage, train_dtype, groups,
 *   tensors   [{name, shape, dtype, trainable, group, aliases}]
 *   fragments {state: [[tensor, start, numel, file, offset], ...]}  (fp32/exp_avg/
 *             exp_avg_sq stored as F32; w16 in the tensor's dtype)
 *   files     [{name, rank, size, chunk_size, sha256, chunks: [hex, ...]}]
 *   model     optional {architecture, n_layer, n_head, n_embd, vocab_size,
 *             n_positions, tie_word_embeddings} (ds_model_info), carried unchanged.
 *   state, ds_config, metrics: objects carried verbatim (optimizer, scheduler, loss
 *             scaler, data position, RNG; the config used; eval metrics).
 *   manifest_sha256: last key, the SHA-256 of the manifest without it (see
 *             ds_manifest_seal), so any edit or bit flip is detected.
 *
 * The parser treats the manifest as hostile: every number is range-checked, every
 * name validated, every fragment checked against its tensor and its file.
 */
#ifndef DSCKPT_MANIFEST_H
#define DSCKPT_MANIFEST_H

#include "ckpt.h"

#define DS_MANIFEST_NAME "manifest.json"
#define DS_MANIFEST_MAX (512u << 20)
#define DS_MANIFEST_VERSION 1

/* Fills c's header fields, tensors, fragments and files (file `path`s joined onto
 * c->dir, which must be set) from the manifest text. `what` names it in errors.
 * Takes ownership of nothing; c->manifest receives the parsed tree. */
dsckpt_status ds_manifest_parse(const char *text, size_t len, const char *what, dsckpt_ckpt *c);

/* Validates a manifest's "model" object into *out: exactly the seven keys, each
 * once, integers in [1, DS_MODEL_MAX_DIM], n_embd a multiple of n_head. An unknown
 * architecture is DSCKPT_EUNSUPPORTED, anything else wrong DSCKPT_ECORRUPT. */
dsckpt_status ds_manifest_parse_model(const cJSON *obj, const char *what, ds_model_info *out);
/* The "model" object for m (NULL when out of memory). */
cJSON *ds_manifest_model_json(const ds_model_info *m);

/* Appends the manifest's self-digest to compact JSON text `json` (an object):
 * `...,"manifest_sha256":"<SHA-256 of json>"}`. The parser refuses a manifest
 * whose digest is missing or does not match (DSCKPT_ECHECKSUM). */
dsckpt_status ds_manifest_seal(const char *json, char **out);

/* Serialises c (header, tensors, fragments, files with digests, and the state,
 * ds_config and metrics objects of c->manifest if present, and "model" when
 * c->has_model) into a malloc'd string. */
dsckpt_status ds_manifest_build(const dsckpt_ckpt *c, char **json_out);

#endif /* DSCKPT_MANIFEST_H */
