/*
 * progress.h — the progress bar `dsckpt` draws on stderr when it is a terminal.
 */
#ifndef DSCKPT_CLI_PROGRESS_H
#define DSCKPT_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct cli_progress {
    const char *label;
    bool enabled;
    double t0;
    int drawn;
} cli_progress;

void cli_progress_init(cli_progress *p, const char *label, bool quiet);
/* dsckpt_progress_fn-compatible callback; user = cli_progress*. */
void cli_progress_cb(void *user, uint64_t done, uint64_t total);
void cli_progress_end(cli_progress *p);
double cli_now(void);

#endif
