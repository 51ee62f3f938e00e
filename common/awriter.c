/*
 * awriter.c — the writer thread: one write in flight (see awriter.h).
 */
#include "awriter.h"

#include "fsutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct ds_awriter {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool busy, stop;
    /* the write handed over */
    int fd, dfd;
    const void *p;
    size_t n;
    uint64_t at;
    const char *what;
    /* the first failure */
    dsckpt_status st;
    char msg[1024];
};

static void *writer_main(void *arg) {
    ds_awriter *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->busy && !w->stop) pthread_cond_wait(&w->cv, &w->mu);
        if (!w->busy) break; /* stopped, nothing left */
        int fd = w->fd, dfd = w->dfd;
        const void *p = w->p;
        size_t n = w->n;
        uint64_t at = w->at;
        const char *what = w->what;
        pthread_mutex_unlock(&w->mu);
        dsckpt_status st = ds_pwrite_direct(fd, dfd, p, n, at, what);
        /* Advisory: a failure here is reported by the caller's fsync. */
        if (st == DSCKPT_OK) (void)sync_file_range(fd, (off_t)at, (off_t)n, SYNC_FILE_RANGE_WRITE);
        pthread_mutex_lock(&w->mu);
        if (st && !w->st) {
            w->st = st;
            snprintf(w->msg, sizeof w->msg, "%s", dsckpt_last_error());
        }
        w->busy = false;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

dsckpt_status ds_awriter_new(ds_awriter **out) {
    *out = NULL;
    ds_awriter *w = calloc(1, sizeof *w);
    if (!w) return ds_err(DSCKPT_ENOMEM, "out of memory");
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    int rc = pthread_create(&w->th, NULL, writer_main, w);
    if (rc != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return ds_err_errno(rc, "cannot start a writer thread");
    }
    *out = w;
    return DSCKPT_OK;
}

/* With w->mu held: waits for the write in flight; the sticky failure, if any. */
static dsckpt_status wait_idle(ds_awriter *w) {
    while (w->busy) pthread_cond_wait(&w->cv, &w->mu);
    return w->st ? ds_err(w->st, "%s", w->msg) : DSCKPT_OK;
}

dsckpt_status ds_awriter_submit(ds_awriter *w, int fd, int dfd, const void *p, size_t n, uint64_t at,
                                const char *what) {
    pthread_mutex_lock(&w->mu);
    dsckpt_status st = wait_idle(w);
    if (st == DSCKPT_OK) {
        w->fd = fd;
        w->dfd = dfd;
        w->p = p;
        w->n = n;
        w->at = at;
        w->what = what;
        w->busy = true;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return st;
}

dsckpt_status ds_awriter_drain(ds_awriter *w) {
    pthread_mutex_lock(&w->mu);
    dsckpt_status st = wait_idle(w);
    pthread_mutex_unlock(&w->mu);
    return st;
}

void ds_awriter_free(ds_awriter *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->th, NULL); /* the write in flight finishes first */
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
