/*
 * progress.c — progress on stderr (see progress.h). The bar is redrawn at most
 * ~10 times a second: [=====>    ] 45%  1.23/2.70 GB  310 MB/s  0:04 elapsed
 * ETA 0:05. Once every byte is written the operation still flushes, fsyncs and
 * renames (seconds on a large output): the bar then says "syncing" instead of
 * standing at a silent 100%. The bar is cut to the terminal's width (never wraps).
 */
#include "progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *cli_hms(double s, char *buf, int n) {
    if (s < 0 || s > 359999999) s = 0;
    /* t <= 360000000 fits an unsigned; any unsigned prints in at most 14 bytes
     * ("1193046:28:15" and its NUL), so CLI_HMS_LEN bytes never cut it. */
    unsigned t = (unsigned)(s + 0.5);
    if (t >= 3600) snprintf(buf, (size_t)n, "%u:%02u:%02u", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, (size_t)n, "%u:%02u", t / 60, t % 60);
    return buf;
}

void cli_progress_init(cli_progress *p, const char *label, bool quiet) {
    p->label = label;
    p->t0 = cli_now();
    p->last = 0;
    p->drawn = 0;
    p->synced_note = false;
    p->done = p->total = 0;
    p->interval = 5;
    const char *iv = getenv("DSCKPT_PROGRESS_INTERVAL");
    if (iv && *iv) {
        char *end;
        double v = strtod(iv, &end);
        if (!*end && v >= 0 && v <= 86400) p->interval = v;
    }
    p->mode = quiet ? CLI_PROGRESS_OFF : isatty(2) ? CLI_PROGRESS_BAR : CLI_PROGRESS_LINES;
}

/* Writes "\r" + line + clear-to-end, the line cut to the terminal's width less one
 * column: a line that wrapped would leave its first row behind at every redraw. */
static void put_bar_line(char *line, const char *end) {
    struct winsize ws;
    if (ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && strlen(line) > (size_t)ws.ws_col - 1)
        line[ws.ws_col - 1] = '\0';
    fprintf(stderr, "\r%s\033[K%s", line, end);
}

static void draw_bar(cli_progress *p, double now) {
    double frac = (double)p->done / (double)p->total;
    if (frac > 1) frac = 1;
    double el = now - p->t0;
    int width = 24, fill = (int)(frac * width);
    char bar[32], e[CLI_HMS_LEN], eta[CLI_HMS_LEN];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[width] = '\0';
    bool all = p->done >= p->total;
    double rate = el > 0 ? (double)p->done / el : 0;
    if (!all && rate > 0) cli_hms((double)(p->total - p->done) / rate, eta, sizeof eta);
    char line[256];
    snprintf(line, sizeof line, "%-11s [%s] %3d%%  %.2f/%.2f GB  %4.0f MB/s  %s elapsed  %s%s", p->label, bar,
             (int)(frac * 100), (double)p->done / 1e9, (double)p->total / 1e9, rate / 1e6, cli_hms(el, e, sizeof e),
             all ? "syncing (flush, fsync, rename)" : rate > 0 ? "ETA " : "ETA --:--", all ? "" : rate > 0 ? eta : "");
    put_bar_line(line, "");
    fflush(stderr);
    p->drawn = 1;
}

static void draw_line(cli_progress *p, double now) {
    double el = now - p->t0;
    char e[CLI_HMS_LEN], eta[CLI_HMS_LEN];
    bool all = p->done >= p->total;
    double rate = el > 0 ? (double)p->done / el : 0;
    if (all) {
        fprintf(stderr, "%s: 100%% (%.2f GB) in %s, %.0f MB/s; syncing\n", p->label, (double)p->total / 1e9,
                cli_hms(el, e, sizeof e), rate / 1e6);
    } else {
        fprintf(stderr, "%s: %d%% (%.2f of %.2f GB), %.0f MB/s, %s elapsed, ETA %s\n", p->label,
                (int)((double)p->done / (double)p->total * 100), (double)p->done / 1e9, (double)p->total / 1e9,
                rate / 1e6, cli_hms(el, e, sizeof e), rate > 0 ? cli_hms((double)(p->total - p->done) / rate, eta, sizeof eta) : "--:--");
    }
    fflush(stderr);
}

void cli_progress_cb(void *user, uint64_t done, uint64_t total) {
    cli_progress *p = user;
    if (p->mode == CLI_PROGRESS_OFF || total == 0) return;
    p->done = done;
    p->total = total;
    double now = cli_now();
    bool all = done >= total;
    if (p->mode == CLI_PROGRESS_BAR) {
        if (all && p->synced_note) return;
        if (!all && p->last && now - p->last < 0.1) return;
        p->last = now;
        p->synced_note = all;
        draw_bar(p, now);
        return;
    }
    /* Plain lines: the first after `interval`, then every `interval`; 100% once. */
    if (all) {
        if (p->synced_note || now - p->t0 < p->interval) return;
        p->synced_note = true;
        draw_line(p, now);
        return;
    }
    double since = p->last ? now - p->last : now - p->t0;
    if (since < p->interval) return;
    p->last = now;
    draw_line(p, now);
}

void cli_progress_end(cli_progress *p) {
    if (p->mode == CLI_PROGRESS_BAR && p->drawn) {
        /* Leave the bar on screen with its final figures and time. */
        if (p->total) {
            p->synced_note = false;
            double el = cli_now() - p->t0;
            char e[CLI_HMS_LEN];
            bool all = p->done >= p->total;
            char line[256];
            snprintf(line, sizeof line, "%-11s [%s] %3d%%  %.2f/%.2f GB  %s elapsed", p->label,
                     all ? "========================" : "---------- stopped -----",
                     all ? 100 : (int)((double)p->done / (double)p->total * 100), (double)p->done / 1e9,
                     (double)p->total / 1e9, cli_hms(el, e, sizeof e));
            put_bar_line(line, "\n");
        } else {
            fprintf(stderr, "\n");
        }
    }
    p->drawn = 0;
}
