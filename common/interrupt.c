/*
 * interrupt.c — the process-wide stop request behind dsckpt_interrupt() (see
 * dsckpt.h). Only a lock-free atomic store happens in the signal handler; worker
 * threads poll ds_interrupted() at every read, write and job, and fail with
 * DSCKPT_EINTR so the ordinary failure paths remove every temporary.
 */
#include "internal.h"

#include <stdatomic.h>

static atomic_int stop_signal;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the stop flag must be lock-free to be set from a signal handler");

void dsckpt_interrupt(int signo) { atomic_store(&stop_signal, signo > 0 ? signo : 1); }

int dsckpt_interrupted(void) { return atomic_load(&stop_signal); }

bool ds_interrupted(void) { return atomic_load_explicit(&stop_signal, memory_order_relaxed) != 0; }

dsckpt_status ds_err_interrupted(void) {
    return ds_err(DSCKPT_EINTR, "interrupted by signal %d; stopping and removing temporaries", atomic_load(&stop_signal));
}
