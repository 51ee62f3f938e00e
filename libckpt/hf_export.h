/*
 * hf_export.h — the Hugging Face files beside the weights: what `consolidate` puts
 * in an output folder so that transformers' from_pretrained(DIR) loads it, and what
 * `reshard` carries from a Trainer checkpoint-N so that the Trainer resumes from it.
 *
 * Nothing opaque from a source is copied into an output:
 *   - config.json, generation_config.json, trainer_state.json: read strictly
 *     (hfjson.h: one JSON object, duplicate keys refused); re-emitted through cJSON
 *     (numbers kept as written) when a value is changed (config.json's dtype,
 *     best_model_checkpoint), else copied byte for byte (a reshard round trip keeps
 *     them identical);
 *   - tokenizer text files (tokenizer.json, tokenizer_config.json,
 *     special_tokens_map.json, added_tokens.json, vocab.json: strict JSON;
 *     merges.txt, chat_template.jinja: UTF-8 text without NUL): validated, then
 *     copied byte for byte;
 *   - torch pickles of the Trainer (scheduler.pt, rng_state_*.pth,
 *     training_args.bin; reshard only): carried only when the zip container is
 *     sound (every member's CRC) and the restricted pickle interpreter finds plain
 *     values only (dicts, lists, numbers, strings, tensors — no object, class or
 *     enum of any library). scheduler.pt is needed to resume, so one that does not
 *     pass is refused (DSCKPT_EUNSUPPORTED, naming the class found); rng_state_*.pth
 *     (numpy's RNG state is a pickled numpy object; the states are per process of
 *     the old world size anyway) and training_args.bin (a pickled TrainingArguments)
 *     are left out when they do not pass: the Trainer resumes without them;
 *   - never copied: tokenizer.model and any other binary file (SentencePiece
 *     protobuf: we do not parse it), model.safetensors / pytorch_model.bin of the
 *     source folder (consolidate writes the weights; reshard writes global_stepN/),
 *     and code (zero_to_fp32.py).
 * Only regular files are opened (fsutil's ds_open_read).
 */
#ifndef DSCKPT_HF_EXPORT_H
#define DSCKPT_HF_EXPORT_H

#include "ckpt.h"

/* The folder whose model files travel with checkpoint c: its save root, or (opened
 * as a tag directory) the tag directory's parent. malloc'd. */
char *ds_hf_source_dir(const dsckpt_ckpt *c);

/* Consolidate to a directory: writes into `tmpdir` (the output being built)
 * config.json (a dsckpt checkpoint with a "model" object: a GPT-2 config built from
 * it, after checking that the tensors are exactly GPT2LMHeadModel's; otherwise the
 * source's, with "dtype"/"torch_dtype" set to `dtype`), generation_config.json and
 * the tokenizer text files found beside the checkpoint. `exclude_frozen` as in
 * the consolidate options. */
dsckpt_status ds_hf_export_files(const dsckpt_ckpt *c, const char *tmpdir, dsckpt_dtype dtype);

/* Reshard: carries the save root's trainer_state.json into `tmpdir` (the new save
 * root being built, to be renamed to `out`) and, from a Hugging Face checkpoint-N,
 * its model files and the Trainer's pickles (rules above). best_model_checkpoint
 * is rewritten to the new location: `out` itself when it named this checkpoint,
 * else the sibling of `out` with the same last component (as the Trainer writes
 * it: <output_dir>/checkpoint-N). */
dsckpt_status ds_hf_reshard_carry(const dsckpt_ckpt *c, const char *tmpdir, const char *out);

/* Checks a torch.save file (zip + pickle) as above: DSCKPT_OK when it holds plain
 * values only; DSCKPT_EUNSUPPORTED naming the first class/function found; other
 * errors for a damaged file. */
dsckpt_status ds_torch_plain_check(const char *path);

#endif /* DSCKPT_HF_EXPORT_H */
