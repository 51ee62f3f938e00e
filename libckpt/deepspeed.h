/*
 * deepspeed.h — DeepSpeed checkpoints (torch zip + pickle files) as a fragment map.
 *
 * A DeepSpeed tag directory holds one optimizer file per data-parallel rank
 * ([bf16_]zero_pp_rank_<D>_mp_rank_00_optim_states.pt) and model-states files
 * (mp_rank_00_model_states.pt at stages 0-2; zero_pp_rank_<D>_mp_rank_00_model_states.pt
 * at stage 3). ds_deepspeed_open reads their pickles with the restricted
 * interpreter (no code runs), finds every storage inside the zip members, and
 * describes the fp32 master weights, Adam moments, frozen parameters and buffers
 * as fragments at absolute byte offsets of the .pt files, so every dsckpt command
 * reads them like a native checkpoint. Layout rules: docs/formats/deepspeed.md.
 */
#ifndef DSCKPT_DEEPSPEED_H
#define DSCKPT_DEEPSPEED_H

#include "ckpt.h"

/* True when `dir` looks like a DeepSpeed tag directory (has *_optim_states.pt or
 * *_model_states.pt). */
bool ds_is_deepspeed_dir(const char *dir);

/* Fills c (whose dir is set) from the DeepSpeed files in c->dir. Tensor/pipeline-
 * parallel and MoE checkpoints are refused with DSCKPT_EUNSUPPORTED saying what
 * was found; a missing or extra rank file is DSCKPT_ECORRUPT. */
dsckpt_status ds_deepspeed_open(dsckpt_ckpt *c);

/* Pickled floats that JSON cannot hold (inf, -inf, nan; e.g. ds_config's
 * `steps_per_print: inf`) are carried in the manifest's JSON as the object
 * {"__float__": "inf" | "-inf" | "nan"}, and written back as floats. */
#define DS_JSON_FLOAT_TAG "__float__"

/* DeepSpeed's universal layout (ds_to_universal.py): a tag directory holding
 * zero/optimizer_state.pt, zero/<param>/{fp32,exp_avg,exp_avg_sq[,step]}.pt and
 * the model-states file(s). */
bool ds_is_universal_dir(const char *dir);
/* Fills c (dir set) from a universal directory. Parameter names from param_shapes
 * must be plain path components; every file is a regular file whose zip members
 * match their CRC-32; each state holds exactly its parameter's elements (F32).
 * Missing or malformed files are DSCKPT_ECORRUPT. */
dsckpt_status ds_universal_open(dsckpt_ckpt *c);

#endif /* DSCKPT_DEEPSPEED_H */
