/*
 * ckpt.h — the in-memory fragment map of a checkpoint (DESIGN.md §1), shared by
 * every source reader (native manifest; DeepSpeed files later) and every operation.
 *
 * A checkpoint is a list of logical tensors; each tensor has states (fp32 master,
 * exp_avg, exp_avg_sq for trainable tensors; w16 for frozen ones); each state is
 * stored as fragments: element ranges [start, start+numel) of the flattened tensor
 * found at a byte offset of one file, in a stored dtype. After ds_ckpt_index()
 * the fragments of each state are sorted by (tensor, start) and tindex[s][t] ..
 * tindex[s][t+1] delimits tensor t's fragments.
 */
#ifndef DSCKPT_CKPT_H
#define DSCKPT_CKPT_H

#include <cjson/cJSON.h>

#include "dsckpt_internal.h"
#include "fragmap.h"
#include "internal.h"
#include "stream.h"

typedef struct st_header st_header; /* safetensors.h */
/* The safetensors header of a native rank file's raw bytes (decoded from its
 * first chunks when compressed, their digests checked first when `check`),
 * opened as fd. */
dsckpt_status ds_file_read_header(const ds_file *f, int fd, bool check, st_header **out);

struct dsckpt_ckpt {
    char *format;      /* "dsckpt" (native) or "deepspeed" */
    char *root;        /* save root, or NULL when opened as a tag directory */
    char *dir;         /* tag directory */
    char *tag;
    int64_t step;
    int world_size;
    int stage;
    char *train_dtype; /* "bf16", "fp16", "fp32" */
    ds_tensor *tensors;
    size_t ntensors;
    int ngroups;
    ds_frag *frags[DS_NSTATES];
    size_t nfrags[DS_NSTATES];
    size_t *tindex[DS_NSTATES]; /* ntensors + 1 entries, built by ds_ckpt_index */
    ds_file *files;
    size_t nfiles;
    cJSON *manifest;   /* the parsed manifest; "state", "ds_config", "metrics" are carried over */
    bool has_model;    /* the manifest has a (validated) "model" object */
    ds_model_info model;
    bool no_read_check; /* dsckpt_ckpt_set_read_check(c, 0): reads skip the digest / CRC-32 checks */
};

/* Sorts fragments by (tensor, start) and builds tindex. Checks that every fragment
 * lies inside its tensor and its file, and (when `coverage_problem` is NULL) that
 * each state covers each tensor that should have it exactly once: trainable
 * tensors need fp32/exp_avg/exp_avg_sq, frozen ones w16. With a callback, every
 * coverage problem is reported to it instead of failing on the first. */
typedef void (*ds_problem_fn)(void *user, const char *fmt, ...);
dsckpt_status ds_ckpt_index(dsckpt_ckpt *c, ds_problem_fn coverage_problem, void *user);

/* The fragments of state s of tensor t (after ds_ckpt_index). */
static inline const ds_frag *ds_ckpt_frags(const dsckpt_ckpt *c, ds_state s, uint32_t t, size_t *n) {
    *n = c->tindex[s][t + 1] - c->tindex[s][t];
    /* A state with no fragments at all (no frozen tensors: no w16) has frags NULL,
     * and NULL + 0 is undefined behaviour. */
    return c->frags[s] ? c->frags[s] + c->tindex[s][t] : NULL;
}

/* Whether state s applies to tensor t. */
static inline bool ds_state_applies(const ds_tensor *t, ds_state s) {
    return t->trainable ? s != DS_ST_W16 : s == DS_ST_W16;
}


/* Checked reads (readcheck.c). Every byte a command reads from a checkpoint is
 * covered by a check unit: a native file's manifest chunk (SHA-256) or a DeepSpeed
 * file's zip member (CRC-32). The first read that touches a unit claims it and
 * reads the WHOLE unit once, hashing it and copying the requested part straight
 * into the caller's buffer (so the requested bytes are read only once); later reads
 * of a claimed unit are plain preads. A mismatch is DSCKPT_ECHECKSUM naming the
 * file and the chunk (or member), and every later read of that unit fails too.
 * Readers write only temporaries until the end, so a unit still being checked by
 * another thread is harmless: the run fails before anything is renamed into place.
 * A set read by one thread in order may defer the verdicts instead
 * (ds_fdset_defer_checks, dsckpt_internal.h). */
dsckpt_status ds_fdset_check_init(const dsckpt_ckpt *c, ds_fdset *fs);
void ds_fdset_check_free(ds_fdset *fs);
/* ds_fdset_check_init in two steps, for lazy sets: the per-file array and the
 * chunk cache (check_alloc), then file i, once it is open (check_file; it writes
 * only fs->vf[i], so files may be set up concurrently, each by one thread). */
dsckpt_status ds_fdset_check_alloc(const dsckpt_ckpt *c, ds_fdset *fs);
dsckpt_status ds_fdset_check_file(const dsckpt_ckpt *c, const ds_fdset *fs, size_t i);
/* A lazy set (ds_fdset_open_lazy): opens file i on its first use, once, under that
 * file's own mutex; called by ds_fdset_pread before it takes any other lock. */
dsckpt_status ds_fdset_ensure(const dsckpt_ckpt *c, const ds_fdset *fs, uint32_t i);
/* Reads n bytes at `offset` of file `file` through the checks (plain pread when off). */
dsckpt_status ds_fdset_pread(const dsckpt_ckpt *c, const ds_fdset *fs, uint32_t file, void *dst, size_t n,
                             uint64_t offset);
/* Bytes [offset, offset+bytes) of a file, to dst. */
typedef struct {
    uint64_t offset;
    size_t bytes;
    uint8_t *dst;
} ds_read_part;
/* Reads parts[0..np) of file `file` through the checks. Parts that lie in one
 * check unit of a checked native or DeepSpeed file, in order and apart, are read
 * in one pass over the unit (each byte once: the parts into their buffers, the
 * bytes between them through scratch for the hash); any other parts one by one as
 * ds_fdset_pread reads them. Never deferred, so threads may read parts of one set
 * at once (ds_read_list_run_threads). */
dsckpt_status ds_fdset_pread_parts(const dsckpt_ckpt *c, const ds_fdset *fs, uint32_t file, const ds_read_part *parts,
                                   size_t np);


/* Allocates an empty checkpoint handle. */
dsckpt_status ds_ckpt_new(dsckpt_ckpt **out);

/* Fills c (dir set) from whatever c->dir holds: a native manifest, or DeepSpeed
 * files. */
dsckpt_status ds_ckpt_load(dsckpt_ckpt *c);

/* Fills c (c->dir set) from a native manifest's text (formats/manifest.h);
 * `what` names it in errors. */
dsckpt_status ds_ckpt_parse_manifest(dsckpt_ckpt *c, const char *text, size_t len, const char *what);
/* c's manifest.json text (ds_manifest_build over c's fields). */
dsckpt_status ds_ckpt_build_manifest(const dsckpt_ckpt *c, char **json_out);

/* Opens a native checkpoint's tag directory `dir` (manifest.json). */
dsckpt_status ds_native_open(const char *dir, dsckpt_ckpt *c);

/* Resolves a save root or tag directory plus optional tag to the tag directory:
 * root/<tag>, root/<contents of latest>, or `path` itself when it holds a
 * manifest. Tags are checked with ds_safe_name. */
dsckpt_status ds_resolve_tag_dir(const char *path, const char *tag, char **dir_out, char **root_out);


#endif /* DSCKPT_CKPT_H */
