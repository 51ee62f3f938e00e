/*
 * outsafe.h — output directories committed by rename (ds_outdir), what an output
 * may replace, and cleaning what dead runs left.
 *
 * Temporaries: every output is built under "<dir>/.<base>.tmp-<pid>-<n>" and an
 * output replaced with --force is moved aside to "<dir>/.<base>.old-<pid>-<n>"
 * until the new one is in place (fsutil.h). A run killed by SIGKILL or a crash
 * leaves these behind; the next run that writes `<dir>/<base>` removes those whose
 * name matches the pattern exactly and whose pid is not alive (kill(pid, 0) fails
 * with ESRCH). A ".old-" copy is removed only when `<dir>/<base>` exists (it may be
 * the only copy of the previous output otherwise).
 *
 * Ownership (--force): only an output the tool itself wrote is replaced. "Ours":
 *  - a save root (reshard, synth): entries are `latest`, the Trainer files and
 *    Hugging Face model files reshard carries (trainer_state.json, scheduler.pt,
 *    training_args.bin, rng_state*.pth, config.json, generation_config.json,
 *    tokenizer text files; hf_export.h), our temporaries, and tag directories that hold only a manifest.json plus the files
 *    it lists (native), or only DeepSpeed checkpoint files (*_model_states.pt,
 *    *_optim_states.pt, the `zero_to_fp32.py` script) — plus our temporaries;
 *  - a Hugging Face directory (consolidate): model.safetensors,
 *    model-NNNNN-of-NNNNN.safetensors, model.safetensors.index.json, config.json,
 *    generation_config.json, the tokenizer text files (hf_export.h) and our
 *    temporaries.
 * Anything else in it is foreign and the replacement is refused (DSCKPT_EEXIST,
 * naming the first foreign entry), so --force never deletes a file it did not write.
 */
#ifndef DSCKPT_OUTSAFE_H
#define DSCKPT_OUTSAFE_H

#include "internal.h"

typedef enum ds_out_kind { DS_OUT_SAVE_ROOT, DS_OUT_HF_DIR } ds_out_kind;

/* Refuses (DSCKPT_EEXIST) to replace `final` unless it is a directory of `kind`
 * holding only what dsckpt writes there. OK when `final` does not exist. */
dsckpt_status ds_check_replaceable(const char *final, ds_out_kind kind);

/* Removes stale temporaries of `final` left by dead processes (best effort). */
void ds_clean_stale_temps(const char *final);

/* True if `name` is "<base>.tmp-<pid>-<n>" or "<base>.old-<pid>-<n>" with a
 * leading dot, for some non-empty base (when base is NULL) or exactly `base`;
 * *pid gets the pid and *old whether it is an ".old-" copy. */
bool ds_parse_temp_name(const char *name, const char *base, long *pid, bool *old);

/* malloc'd "<dir>/.<base>.old-<pid>-<n>" for an output moved aside. */
char *ds_old_sibling(const char *final);

/* An output directory built under a temporary sibling and renamed into place. */
typedef struct ds_outdir {
    char *final;
    char *tmp;
    bool force;
} ds_outdir;
/* Refuses an existing `final` unless force (DSCKPT_EEXIST, with a hint about
 * --force); creates the temporary directory. */
dsckpt_status ds_outdir_begin(ds_outdir *od, const char *final, bool force);
/* The same for an output of `kind` (a ds_out_kind; ds_outdir_begin is
 * DS_OUT_SAVE_ROOT): stale temporaries of dead runs beside `final` are removed first, and with force an existing `final` is replaced only if everything in it
 * is what dsckpt writes there (DSCKPT_EEXIST naming the first foreign entry). */
dsckpt_status ds_outdir_begin_kind(ds_outdir *od, const char *final, bool force, int kind);
/* fsyncs the temporary directory, renames it over `final` (moving an existing
 * one aside to ".<base>.old-<pid>-<n>" first and deleting it only after the new
 * one is in place). Fails with DSCKPT_EINTR, changing nothing, once
 * dsckpt_interrupt() was called. */
dsckpt_status ds_outdir_commit(ds_outdir *od);
/* Removes the temporary directory. Safe after a failed begin or after commit. */
void ds_outdir_abort(ds_outdir *od);

#endif /* DSCKPT_OUTSAFE_H */
