/*
 * rt_time.h — the runtime's one clock: monotonic seconds, for step, collective,
 * save and load timings.
 */
#ifndef DSRT_TIME_H
#define DSRT_TIME_H

#include <time.h>

static inline double rt_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
