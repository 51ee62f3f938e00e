/*
 * unknown.h — finding pickled objects outside the writer's allow-list in a
 * DeepSpeed / universal checkpoint (see unknown.c and formats/pickle.h).
 */
#ifndef DSCKPT_UNKNOWN_H
#define DSCKPT_UNKNOWN_H

#include "internal.h"
#include "pickle.h"

/* What was found: "FILE: module.name at PATH; ..." (the first 20 in full, then
 * "; ..."), and how many in all. */
typedef struct ds_unknown_list {
    char *text;
    size_t len, cap;
    size_t count;
    bool oom;
} ds_unknown_list;
void ds_unknown_list_free(ds_unknown_list *l);

/* Screens one parsed tree (pk_screen; `drop` removes the entries holding them),
 * adding what it finds to `l` under `label`. */
dsckpt_status ds_unknown_in_tree(pk_obj *root, const char *label, bool drop, ds_unknown_list *l);
/* Reads data.pkl of the torch zip at `path` and screens it. */
dsckpt_status ds_unknown_in_file(const char *path, const char *label, ds_unknown_list *l);
/* Every *_states.pt of the tag directory `dir`, and zero/optimizer_state.pt. */
dsckpt_status ds_unknown_in_dir(const char *dir, ds_unknown_list *l);

#endif /* DSCKPT_UNKNOWN_H */
