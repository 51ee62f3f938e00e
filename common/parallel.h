/*
 * parallel.h — run independent jobs on a few threads, stop at the first failure,
 * and report progress from the calling thread.
 */
#ifndef DSCKPT_PARALLEL_H
#define DSCKPT_PARALLEL_H

#include "internal.h"

#include <stdatomic.h>

typedef struct ds_progress {
    atomic_uint_fast64_t done; /* bytes done, added to by jobs */
    uint64_t total;
    dsckpt_progress_fn fn;     /* may be NULL */
    void *user;
} ds_progress;

static inline void ds_progress_add(ds_progress *p, uint64_t n) {
    if (p) atomic_fetch_add(&p->done, n);
}

/* A job; `worker` is in [0, nthreads) and lets jobs use per-worker buffers. */
typedef dsckpt_status (*ds_job_fn)(void *user, size_t job, int worker);

/* Runs jobs 0..njobs-1 on min(nthreads, njobs) threads (the calling thread reports
 * progress every ~100 ms while it waits). After a failure no new job starts; the
 * first failure's status and message are returned; long jobs can call
 * ds_parallel_stopping() to return early once another job has failed. */
dsckpt_status ds_parallel_run(size_t njobs, int nthreads, ds_job_fn fn, void *user, ds_progress *prog);

/* True once some job of the ds_parallel_run the calling thread works for has
 * failed (for long jobs). `user_of_run` is not used: the run is the thread's. */
bool ds_parallel_stopping(void *user_of_run);

#endif /* DSCKPT_PARALLEL_H */
