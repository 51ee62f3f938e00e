/*
 * manifest.h — the native checkpoint manifest (manifest.json), version 1.
 *
 * Schema (docs/native-format.md has the full description):
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

#include "fragmap.h"

#include <cjson/cJSON.h>

#define DS_MANIFEST_NAME "manifest.json"
#define DS_MANIFEST_MAX (512u << 20)
#define DS_MANIFEST_VERSION 1
/* Written only when some rank file is compressed (docs/native-format.md); version
 * 1 readers refuse it. */
#define DS_MANIFEST_VERSION_COMPRESSED 2
/* Written only when some chunk is stored as planes (docs/native-format.md); version
 * 2 readers refuse it as a newer version. */
#define DS_MANIFEST_VERSION_PLANES 3

/* A parsed manifest: the header fields, tensors, fragments and files it lists, its
 * "model" object, and the parsed tree (whose "state", "ds_config" and "metrics"
 * objects are carried over). libckpt moves it into its handle (ckpt.c). */
typedef struct ds_manifest {
    const char *dir;   /* in: the tag directory file paths are joined onto */
    char *format;      /* "dsckpt" */
    char *tag;
    int64_t step;
    int world_size;
    int stage;
    char *train_dtype;
    int ngroups;
    ds_tensor *tensors;
    size_t ntensors;
    ds_frag *frags[DS_NSTATES];
    size_t nfrags[DS_NSTATES];
    ds_file *files;
    size_t nfiles;
    bool has_model;
    ds_model_info model;
    cJSON *json;       /* the parsed tree */
} ds_manifest;

/* Fills m (m->dir set, everything else zero) from the manifest text. `what` names
 * it in errors. On failure m holds what was parsed; ds_manifest_clear frees it. */
dsckpt_status ds_manifest_parse(const char *text, size_t len, const char *what, ds_manifest *m);
/* Frees what m owns (not m->dir) and zeroes it. */
void ds_manifest_clear(ds_manifest *m);

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

/* Serialises m (header, tensors, fragments, files with digests, and the state,
 * ds_config and metrics objects of m->json if present, and "model" when
 * m->has_model) into a malloc'd string. */
dsckpt_status ds_manifest_build(const ds_manifest *m, char **json_out);

#endif /* DSCKPT_MANIFEST_H */
