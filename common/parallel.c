/*
 * parallel.c — a minimal job runner over pthreads (see parallel.h).
 */
#include "parallel.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct run {
    size_t njobs;
    atomic_size_t next;
    atomic_int failed;
    ds_job_fn fn;
    void *user;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled when a worker exits */
    dsckpt_status st;
    char msg[2048];
    atomic_int running;
} run;

typedef struct worker_arg {
    run *r;
    int id;
} worker_arg;

/* The run whose jobs the current thread executes (for ds_parallel_stopping). */
static _Thread_local run *current_run;

bool ds_parallel_stopping(void *user_of_run) {
    (void)user_of_run;
    return current_run && atomic_load(&current_run->failed);
}

static void *worker(void *p) {
    worker_arg *a = p;
    run *r = a->r;
    current_run = r;
    for (;;) {
        if (atomic_load(&r->failed)) break;
        size_t j = atomic_fetch_add(&r->next, 1);
        if (j >= r->njobs) break;
        dsckpt_status st = ds_interrupted() ? ds_err_interrupted() : r->fn(r->user, j, a->id);
        if (st != DSCKPT_OK) {
            pthread_mutex_lock(&r->mu);
            if (!atomic_load(&r->failed)) {
                r->st = st;
                strncpy(r->msg, dsckpt_last_error(), sizeof r->msg - 1);
                atomic_store(&r->failed, 1);
            }
            pthread_mutex_unlock(&r->mu);
            break;
        }
    }
    current_run = NULL;
    pthread_mutex_lock(&r->mu);
    atomic_fetch_sub(&r->running, 1);
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static void report(ds_progress *prog) {
    if (prog && prog->fn) prog->fn(prog->user, atomic_load(&prog->done), prog->total);
}

dsckpt_status ds_parallel_run(size_t njobs, int nthreads, ds_job_fn fn, void *user, ds_progress *prog) {
    if (njobs == 0) {
        report(prog);
        return DSCKPT_OK;
    }
    if (nthreads < 1) nthreads = 1;
    if ((size_t)nthreads > njobs) nthreads = (int)njobs;
    run r = {.njobs = njobs, .fn = fn, .user = user, .st = DSCKPT_OK};
    atomic_init(&r.next, 0);
    atomic_init(&r.failed, 0);
    atomic_init(&r.running, nthreads);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    pthread_t *th = calloc((size_t)nthreads, sizeof *th);
    worker_arg *args = calloc((size_t)nthreads, sizeof *args);
    if (!th || !args) {
        free(th);
        free(args);
        pthread_mutex_destroy(&r.mu);
        pthread_cond_destroy(&r.cv);
        return ds_err(DSCKPT_ENOMEM, "out of memory starting worker threads");
    }
    int started = 0;
    for (int i = 0; i < nthreads; i++) {
        args[i] = (worker_arg){.r = &r, .id = i};
        if (pthread_create(&th[i], NULL, worker, &args[i]) != 0) break;
        started++;
    }
    atomic_fetch_sub(&r.running, nthreads - started);
    if (started == 0) {
        /* No thread could start: run everything here. */
        atomic_store(&r.running, 1);
        args[0] = (worker_arg){.r = &r, .id = 0};
        worker(&args[0]);
    }
    pthread_mutex_lock(&r.mu);
    while (atomic_load(&r.running) > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&r.cv, &r.mu, &ts);
        pthread_mutex_unlock(&r.mu);
        report(prog);
        pthread_mutex_lock(&r.mu);
    }
    pthread_mutex_unlock(&r.mu);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    report(prog);
    free(th);
    free(args);
    pthread_mutex_destroy(&r.mu);
    pthread_cond_destroy(&r.cv);
    if (r.st != DSCKPT_OK) return ds_err(r.st, "%s", r.msg);
    return DSCKPT_OK;
}
