/*
 * hfjson.h — the JSON files that travel beside a checkpoint (trainer_state.json,
 * config.json, generation_config.json, tokenizer files) read strictly and written
 * back through cJSON, so that nothing opaque from a source reaches an output.
 *
 * Strict reading: a regular file of bounded size, valid UTF-8 with no NUL byte,
 * one JSON value (cJSON) and nothing but white space after it, no object with two
 * equal keys anywhere (cJSON would keep both; Python keeps the last: readers
 * would disagree). NaN, Infinity and -Infinity are read as numbers where a value
 * may stand, as Python's json module (the Trainer's writer) reads and writes them;
 * anywhere else they are refused.
 *
 * Numbers keep their source text: after the parse every number node becomes a
 * cJSON_Raw node holding the token exactly as written (valuedouble still set),
 * so re-emitting keeps 0.0 a float, 1e-05 as written, and integers past 2^53
 * exact. Read numbers with ds_json_number().
 */
#ifndef DSCKPT_HFJSON_H
#define DSCKPT_HFJSON_H

#include "internal.h"

#include <cjson/cJSON.h>

/* Parses text[0..len) as above. `what` names the source in messages. Malformed
 * input is DSCKPT_ECORRUPT. */
dsckpt_status ds_json_parse_strict(const char *text, size_t len, const char *what, cJSON **out);

/* Reads and parses the file at `path` (at most `max` bytes) as above. */
dsckpt_status ds_json_read_strict(const char *path, size_t max, cJSON **out);

/* True and *out set when `v` is a number node (plain or kept as its text). */
bool ds_json_number(const cJSON *v, double *out);

/* Writes `j` as indented JSON plus a newline to `path`, atomically. */
dsckpt_status ds_json_write(const char *path, const cJSON *j);

/* Checks that text[0..len) is valid UTF-8 without NUL bytes (text tokenizer files
 * such as merges.txt). DSCKPT_ECORRUPT naming `what` and the byte offset. */
dsckpt_status ds_text_check(const char *text, size_t len, const char *what);

#endif /* DSCKPT_HFJSON_H */
