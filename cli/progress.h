/*
 * progress.h — progress of a long `dsckpt` command on stderr: a one-line bar
 * with elapsed time and ETA when stderr is a terminal; otherwise (logs, CI) a
 * plain line every few seconds. Nothing with --quiet (or --json, for the
 * commands whose JSON goes to stdout).
 */
#ifndef DSCKPT_CLI_PROGRESS_H
#define DSCKPT_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef enum cli_progress_mode { CLI_PROGRESS_OFF = 0, CLI_PROGRESS_BAR, CLI_PROGRESS_LINES } cli_progress_mode;

typedef struct cli_progress {
    const char *label;
    cli_progress_mode mode;
    double t0;
    double last;        /* when the bar or a line was last drawn */
    double interval;    /* seconds between plain lines */
    int drawn;          /* the bar is on screen (needs a newline) */
    bool synced_note;   /* "syncing" was shown */
    uint64_t done, total;
} cli_progress;

/* Mode: OFF when quiet; BAR when stderr is a terminal; else LINES every
 * DSCKPT_PROGRESS_INTERVAL seconds (environment; default 5, 0 = every update). */
void cli_progress_init(cli_progress *p, const char *label, bool quiet);
/* dsckpt_progress_fn-compatible callback; user = cli_progress*. */
void cli_progress_cb(void *user, uint64_t done, uint64_t total);
void cli_progress_end(cli_progress *p);
double cli_now(void);
/* "1:05" / "1:02:03" for s seconds into buf (n bytes); a buffer of CLI_HMS_LEN
 * bytes holds any of them whole. */
#define CLI_HMS_LEN 16
const char *cli_hms(double s, char *buf, int n);

#endif
