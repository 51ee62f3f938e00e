/*
 * universal.h — DeepSpeed's universal checkpoint layout as an output (universal.c).
 * Reading it is ds_universal_open (deepspeed.h).
 */
#ifndef DSCKPT_UNIVERSAL_H
#define DSCKPT_UNIVERSAL_H

#include "ckpt.h"

/* Writes the save root `out` holding `<tag>_universal/` and `latest_universal`
 * from any fragment map (stages 1-3), atomically (temporary sibling + rename).
 * opts->world_size is not used: the layout does not depend on it. */
dsckpt_status ds_universal_reshard(const dsckpt_ckpt *c, const char *out, const dsckpt_reshard_opts *opts);

#endif /* DSCKPT_UNIVERSAL_H */
