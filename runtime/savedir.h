/*
 * savedir.h — what dstrain finds in its save directory before it trains: which
 * checkpoint --resume continues from (or why it must stop), and the debris of
 * killed saves that is safe to remove. Rank 0 only; the caller broadcasts.
 */
#ifndef DSRT_SAVEDIR_H
#define DSRT_SAVEDIR_H

#include "engine.h"

typedef struct rt_resume_pick {
    char tag[256];   /* the checkpoint to load; "" = start from scratch */
    bool deepspeed;  /* it is in DeepSpeed's format (libckpt reads it) */
    bool fall_back;  /* auto: when the load finds the checkpoint damaged, ask for the next */
    int exit_code;   /* nonzero: stop with this exit code (msg says why) */
    char msg[1536];
} rt_resume_pick;

/* Choosing what `--resume R` (R = "auto" or a tag) continues from in save_dir.
 * Every candidate's structure is checked here (the manifest, the files, and that it
 * holds this engine's model); its bytes are checked by the load's reads, against
 * their digests.
 * auto: candidates newest first (native or DeepSpeed's format), skipping with a
 * note on stderr incomplete saves (rank files but no manifest) and ones that do not
 * open; when the load finds the one picked damaged, rt_resume_scan_reject passes
 * over it and the next rt_resume_scan_next offers the next. So auto resumes the
 * newest checkpoint whose bytes the resume reads are intact. From scratch only
 * when the directory holds no checkpoint at all; it stops instead when the
 * directory holds checkpoints but none can be used (exit 1 corrupt, 2 unreadable)
 * or the usable one is of another model (exit 3: the checkpoint is intact, the
 * run's flags contradict it). An explicit tag is offered once. */
typedef struct rt_resume_scan rt_resume_scan;
rt_resume_scan *rt_resume_scan_new(const rt_engine *e, const char *save_dir, const char *resume);
/* The next checkpoint to load (out->tag), from scratch (tag ""), or the verdict
 * (out->exit_code, out->msg). A NULL scan (out of memory) gives exit 70. */
void rt_resume_scan_next(rt_resume_scan *s, rt_resume_pick *out);
/* The load of the checkpoint last offered failed with exit code `code` (1 or 2),
 * `msg` saying why: auto passes over it. */
void rt_resume_scan_reject(rt_resume_scan *s, int code, const char *msg);
/* After a resume from `resumed`: the checkpoints auto passed over as corrupt are
 * moved aside (TAG -> TAG.damaged, or TAG.damaged-N when that is taken; never
 * removed), so that this run can save those steps again, and `latest`, when it
 * named one of them, names `resumed` first. Says on stderr what it moved. */
dsckpt_status rt_resume_scan_set_aside(rt_resume_scan *s, const char *resumed);
void rt_resume_scan_free(rt_resume_scan *s);

/* Removes what killed saves left in save_dir: root-level `.latest.tmp-PID-N` and
 * `.trainer_state.json.tmp-PID-N`, and the rank-file and manifest temporaries
 * (`.rank_RRRRR.safetensors.tmp-PID-N`, `.manifest.json.tmp-PID-N`) inside
 * global_step<N> directories of the native format, when the name matches exactly and
 * process PID is gone (kill(PID, 0) fails with ESRCH, or PID is a zombie). Never anything else.
 * Returns the number of files removed. */
int rt_clean_debris(const char *save_dir);

/* Whether `name` is a temporary of the commit protocol (`.BASE.tmp-PID-N`, BASE a
 * plain name, PID and N decimal) whose writer is dead; *pid gets PID. */
bool rt_stale_temp(const char *name, long *pid);

/* Whether directory `dir` holds nothing but rank files (rank_*.safetensors) and
 * temporaries: what an incomplete save of dstrain leaves, safe to clear. */
bool rt_only_save_files(const char *dir);

#endif /* DSRT_SAVEDIR_H */
