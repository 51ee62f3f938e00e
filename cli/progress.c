/*
 * progress.c — a one-line progress bar on stderr (only when stderr is a TTY and
 * --quiet was not given), redrawn at most ~10 times a second.
 */
#include "progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void cli_progress_init(cli_progress *p, const char *label, bool quiet) {
    p->label = label;
    p->enabled = !quiet && isatty(2);
    p->t0 = cli_now();
    p->drawn = 0;
}

void cli_progress_cb(void *user, uint64_t done, uint64_t total) {
    cli_progress *p = user;
    if (!p->enabled || total == 0) return;
    double frac = (double)done / (double)total;
    if (frac > 1) frac = 1;
    double el = cli_now() - p->t0;
    int width = 30, fill = (int)(frac * width);
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[width] = '\0';
    fprintf(stderr, "\r%-12s [%s] %3d%%  %.2f/%.2f GB  %.0f MB/s ", p->label, bar, (int)(frac * 100),
            (double)done / 1e9, (double)total / 1e9, el > 0 ? (double)done / el / 1e6 : 0.0);
    fflush(stderr);
    p->drawn = 1;
}

void cli_progress_end(cli_progress *p) {
    if (p->drawn) fprintf(stderr, "\n");
    p->drawn = 0;
}
