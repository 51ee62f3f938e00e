/*
 * names.h — the one validator for names read from files, and for the keys of JSON
 * objects read from files.
 *
 * A name read from a file (a manifest's tag and file names, the text of `latest`,
 * a DeepSpeed tag directory, a Hugging Face best_model_checkpoint, a zip member
 * name, a trainer_state.json entry) is data, not a path, until it passes here:
 *
 *  - a *component* (joined under a directory) is 1..255 bytes of valid UTF-8, with
 *    no '/', no '\\', no NUL or other control character (below 0x20, or 0x7f),
 *    and is neither "." nor "..";
 *  - a *relative name* (a zip member such as "archive/data/0") is 1..4096 bytes,
 *    does not start with '/', and every '/'-separated part is a component.
 *
 * Lengths are explicit so that a NUL inside the bytes read is caught, not
 * silently ending the name. Only ds_read_latest touches the file system.
 */
#ifndef DSCKPT_NAMES_H
#define DSCKPT_NAMES_H

#include "internal.h"

#include <cjson/cJSON.h>

#define DS_NAME_MAX 255
#define DS_RELNAME_MAX 4096

/* NULL when name[0..len) is a safe component, else a static phrase saying why
 * not ("contains '/'", "is '..'", ...). */
const char *ds_name_problem(const char *name, size_t len);
/* The same for a relative name. */
const char *ds_relname_problem(const char *name, size_t len);

/* ds_name_problem(name, strlen(name)) == NULL; false for NULL. */
bool ds_safe_name(const char *name);

/* DSCKPT_OK, or `code` with "<where>: <kind> '<name>' is not a safe name: <why>"
 * (the name printed with control bytes escaped, at most 200 bytes of it). A name
 * read from a file is damage: pass DSCKPT_ECORRUPT; one typed by the user is a
 * usage error: DSCKPT_EINVAL. */
dsckpt_status ds_name_check(const char *name, size_t len, dsckpt_status code, const char *where, const char *kind);
dsckpt_status ds_relname_check(const char *name, size_t len, dsckpt_status code, const char *where,
                               const char *kind);

/* Reads the `latest` file at `path` (at most 4096 bytes, a regular file) into a
 * malloc'd tag: surrounding white space stripped, as DeepSpeed's readers strip it;
 * a NUL byte anywhere, or a tag that is not a safe name, is DSCKPT_ECORRUPT naming
 * the file (never silently truncated). */
dsckpt_status ds_read_latest(const char *path, char **tag_out);

/* No JSON object in the tree under `root` holds two equal keys (cJSON keeps both
 * as siblings, the first one wins its lookups; Python keeps the last: two readers
 * would disagree). `code` with "<where>: duplicate key "K" in one object"
 * otherwise. ds_json_object_unique checks one object's own keys only. */
dsckpt_status ds_json_unique_keys(const cJSON *root, dsckpt_status code, const char *where);
dsckpt_status ds_json_object_unique(const cJSON *obj, dsckpt_status code, const char *where);

#endif /* DSCKPT_NAMES_H */
