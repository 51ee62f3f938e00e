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
    int exit_code;   /* nonzero: stop with this exit code (msg says why) */
    char msg[1536];
} rt_resume_pick;

/* Decides what `--resume R` (R = "auto" or a tag) continues from in save_dir.
 * auto: the newest checkpoint (native or DeepSpeed's format) that verifies and
 * holds this engine's model, skipping (with a note on stderr) ones that do not
 * verify and incomplete saves (a tag directory with rank files but no manifest);
 * from scratch only when the directory holds no checkpoint at all. It stops
 * instead of training from scratch when the directory holds checkpoints but none
 * can be used (exit 1 corrupt, 2 unreadable) or the usable one is of another
 * model (exit 3: the checkpoint is intact, the run's flags contradict it). */
void rt_resume_pick_tag(const rt_engine *e, const char *save_dir, const char *resume, rt_resume_pick *out);

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
