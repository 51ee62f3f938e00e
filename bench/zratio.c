/*
 * zratio.c — compression ratio per state and codec throughput on one core, on the
 * values of a real checkpoint (bench/compress.sh).
 *
 * Usage: ds_zratio CKPT [LEVEL ...]   (default levels: 1 3)
 *
 * For each state (fp32, exp_avg, exp_avg_sq, w16 when present, and "w16 (cast)":
 * the fp32 master weights cast to the checkpoint's 16-bit training dtype, which
 * is what a 16-bit weight file or a bf16 checkpoint's working weights hold), the
 * state's bytes over every tensor, in tensor order, are cut into chunks of the
 * default compressed chunk size and each chunk is encoded as a compressed rank
 * file would store it (ds_zchunk_encode, shuffled by the element width), with the
 * single-frame codec of version 2 and the planes codec side by side. Prints raw
 * bytes and raw/stored per state and overall, and per level the encode and
 * decode throughput of one thread (GB/s of raw bytes per second of that thread's
 * CPU time, so a loaded machine does not count other processes' time; the best
 * of 3 passes, the codecs interleaved). ZRATIO_GAINS="0 20 50 ..." adds a table
 * of the planes codec at those least plane gains (per mille).
 *
 * Usage: ds_zratio --unshuffle MIB
 *
 * Unshuffle throughput into a destination of MIB MiB (far larger than the
 * caches, as a load's buffers are): one chunk's planes (4 MiB of random bytes)
 * read chunk after chunk over the whole destination through ds_zplanes_read and
 * ds_zplanes_read_stream, widths 4 and 2, with memcpy of the chunk's bytes as the
 * floor of the same run; GB/s of wall time, the best of 5 passes, interleaved.
 */
#include "cast.h"
#include "ckpt.h"
#include "zchunk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK ((size_t)DS_ZCHUNK_DEFAULT_CHUNK)
#define NCODEC_MAX 10

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* per core: CPU time of this thread */
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
    int width;
} buf;

static void put(buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

enum { NROW = DS_NSTATES + 1 };

/* rows[s]: state s's bytes over every tensor of c, in tensor order; rows[NROW - 1]:
 * the fp32 master weights cast to w16. Returns an exit code (0 = read). */
static int read_rows(const dsckpt_ckpt *c, dsckpt_dtype w16, buf rows[NROW]) {
    ds_fdset fs;
    if (ds_fdset_open(c, &fs) != DSCKPT_OK) {
        fprintf(stderr, "%s\n", dsckpt_last_error());
        return 2;
    }
    for (uint32_t t = 0; t < c->ntensors; t++)
        for (int s = 0; s < DS_NSTATES; s++) {
            if (!ds_state_applies(&c->tensors[t], (ds_state)s)) continue;
            uint64_t n = c->tensors[t].numel;
            dsckpt_dtype dt = ds_ckpt_state_dtype(c, (ds_state)s, t);
            size_t es = dsckpt_dtype_size(dt);
            uint8_t *tmp = malloc(n * es + 1);
            if (!tmp || ds_ckpt_read(c, &fs, (ds_state)s, t, 0, n, tmp) != DSCKPT_OK) {
                fprintf(stderr, "%s\n", dsckpt_last_error());
                return 2;
            }
            put(&rows[s], tmp, n * es);
            rows[s].width = (int)es;
            if (s == DS_ST_FP32) {
                uint16_t *h = malloc(n * 2 + 1);
                if (w16 == DSCKPT_F16) ds_cast_f32_to_f16((const float *)tmp, h, n);
                else ds_cast_f32_to_bf16((const float *)tmp, h, n);
                put(&rows[NROW - 1], h, n * 2);
                rows[NROW - 1].width = 2;
                free(h);
            }
            free(tmp);
        }
    ds_fdset_close(&fs);
    return 0;
}

/* The codecs side by side: 0 the single frame (version 2), 1 planes at the
 * default least gain, then planes at each ZRATIO_GAINS per mille. Returns their
 * number. */
static int parse_gains(int gains[NCODEC_MAX]) {
    int ncodec = 2;
    gains[0] = 0;
    gains[1] = DS_ZCHUNK_PLANE_MIN_GAIN_PERMILLE;
    const char *ge = getenv("ZRATIO_GAINS");
    for (char *q = (char *)ge; q && *q && ncodec < NCODEC_MAX;) {
        char *e;
        long g = strtol(q, &e, 10);
        if (e == q) break;
        gains[ncodec++] = (int)g;
        q = e;
    }
    return ncodec;
}

/* One row through each codec and back, chunk by chunk, 3 passes: st_bytes[k]
 * stored, best_e[k] and best_d[k] the fastest pass's encode and decode CPU
 * seconds. stored and back: CHUNK bytes each. Returns an exit code (1: the
 * round trip changed the bytes). */
static int measure_row(ds_zchunk_enc *const *enc, int ncodec, ds_zchunk_dec *dec, const buf *row, uint8_t *stored,
                       uint8_t *back, uint64_t *st_bytes, double *best_e, double *best_d) {
    for (int k = 0; k < ncodec; k++) best_e[k] = best_d[k] = 1e30;
    /* The codecs interleaved pass by pass, so a change in load hits all. */
    for (int pass = 0; pass < 3; pass++)
        for (int k = 0; k < ncodec; k++) {
            double te = 0, td = 0;
            st_bytes[k] = 0;
            for (size_t off = 0; off < row->n; off += CHUNK) {
                size_t n = DS_MIN(CHUNK, row->n - off);
                const uint8_t *sp;
                size_t sn;
                ds_zchunk_kind kd;
                double t0 = now();
                if (ds_zchunk_encode(enc[k], row->p + off, n, row->width, &sp, &sn, &kd) != DSCKPT_OK)
                    return 2;
                te += now() - t0;
                memcpy(stored, sp, sn);
                st_bytes[k] += sn;
                t0 = now();
                if (ds_zchunk_decode(dec, kd, kd == DS_ZCHUNK_RAW ? 1 : row->width, stored, sn, back, n, "b") !=
                        DSCKPT_OK ||
                    memcmp(back, row->p + off, n) != 0) {
                    fprintf(stderr, "round trip failed\n");
                    return 1;
                }
                td += now() - t0;
            }
            if (te < best_e[k]) best_e[k] = te;
            if (td < best_d[k]) best_d[k] = td;
        }
    return 0;
}

/* The ZRATIO_GAINS table of one level: the planes codecs 1..ncodec-1. */
static void print_gains(int level, const int *gains, int ncodec, const char *const *names, const buf *rows,
                        double (*ratio)[NCODEC_MAX], double (*enc_gbs)[NCODEC_MAX], double (*dec_gbs)[NCODEC_MAX],
                        uint64_t tot_raw, const uint64_t *tot_st) {
    printf("\nlevel %d, planes by least gain (per mille): ratio / encode / decode GB/s/core\n| state |", level);
    for (int k = 1; k < ncodec; k++) printf(" %d |", gains[k]);
    printf("\n|---|");
    for (int k = 1; k < ncodec; k++) printf("---:|");
    printf("\n");
    for (int r = 0; r < NROW; r++) {
        if (!rows[r].n) continue;
        printf("| %s |", names[r]);
        for (int k = 1; k < ncodec; k++) printf(" %.3f / %.2f / %.2f |", ratio[r][k], enc_gbs[r][k], dec_gbs[r][k]);
        printf("\n");
    }
    printf("| all states stored |");
    for (int k = 1; k < ncodec; k++) printf(" %.3f |", (double)tot_raw / (double)tot_st[k]);
    printf("\n");
}

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ds_zratio --unshuffle MIB (see the top of this file). */
static int unshuffle_bench(size_t mib) {
    size_t total = (mib << 20) / CHUNK * CHUNK;
    uint8_t *src = malloc(CHUNK), *dst = aligned_alloc(4096, total ? total : CHUNK);
    if (!src || !dst || !total) {
        fprintf(stderr, "out of memory, or MIB under a chunk\n");
        return 2;
    }
    for (size_t i = 0; i < CHUNK; i++) src[i] = (uint8_t)(i * 2654435761u >> 13);
    memset(dst, 1, total); /* touched: no first-touch faults in the passes */
    const char *names[3] = {"memcpy (floor)", "ds_zplanes_read", "ds_zplanes_read_stream"};
    for (int w = 4; w >= 2; w /= 2) {
        ds_zplanes v = {.n = CHUNK, .m = CHUNK / (size_t)w, .width = w};
        for (int j = 0; j < w; j++) v.plane[j] = src + (size_t)j * v.m;
        v.tail = src + CHUNK;
        double best[3] = {0, 0, 0};
        for (int rep = 0; rep < 5; rep++)
            for (int k = 0; k < 3; k++) {
                double t = wall();
                for (size_t at = 0; at < total; at += CHUNK) {
                    if (k == 0) memcpy(dst + at, src, CHUNK);
                    else if (k == 1) ds_zplanes_read(dst + at, &v, 0, CHUNK);
                    else ds_zplanes_read_stream(dst + at, &v, 0, CHUNK);
                }
                double gbs = (double)total / (wall() - t) / 1e9;
                if (gbs > best[k]) best[k] = gbs;
            }
        printf("width %d into %zu MiB:", w, total >> 20);
        for (int k = 0; k < 3; k++) printf("  %s %.2f GB/s (%.2f of the floor)", names[k], best[k], best[k] / best[0]);
        printf("\n");
    }
    free(src);
    free(dst);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--unshuffle")) return unshuffle_bench((size_t)strtoul(argv[2], NULL, 10));
    if (argc < 2) {
        fprintf(stderr, "usage: %s CKPT [LEVEL ...] | --unshuffle MIB\n", argv[0]);
        return 3;
    }
    dsckpt_ckpt *c = NULL;
    if (dsckpt_ckpt_open(argv[1], NULL, &c) != DSCKPT_OK) {
        fprintf(stderr, "%s\n", dsckpt_last_error());
        return 2;
    }
    dsckpt_dtype w16 = !strcmp(c->train_dtype, "fp16") ? DSCKPT_F16 : DSCKPT_BF16;
    buf rows[NROW];
    memset(rows, 0, sizeof rows);
    const char *names[NROW] = {"fp32", "exp_avg", "exp_avg_sq", "w16", "w16 (cast from fp32)"};
    int rc = read_rows(c, w16, rows);
    if (rc) return rc;
    int nlev = argc > 2 ? argc - 2 : 2;
    int levels[16] = {1, 3};
    for (int i = 0; i < nlev && i < 16; i++) levels[i] = argc > 2 ? atoi(argv[2 + i]) : levels[i];
    int gains[NCODEC_MAX], ncodec = parse_gains(gains);
    printf("checkpoint %s: %zu tensors, train dtype %s; %zu-byte chunks\n", argv[1], c->ntensors, c->train_dtype,
           CHUNK);
    ds_zchunk_dec *dec = NULL;
    ds_zchunk_dec_new(&dec);
    uint8_t *back = malloc(CHUNK), *stored = malloc(CHUNK);
    for (int li = 0; li < nlev; li++) {
        ds_zchunk_enc *enc[NCODEC_MAX];
        for (int k = 0; k < ncodec; k++)
            if (ds_zchunk_enc_new(levels[li], &enc[k]) != DSCKPT_OK ||
                ds_zchunk_enc_set_codec(enc[k], k == 0 ? DS_ZCODEC_FRAME : DS_ZCODEC_PLANES, gains[k]) != DSCKPT_OK) {
                fprintf(stderr, "%s\n", dsckpt_last_error());
                return 3;
            }
        printf("\nlevel %d: frame = one zstd frame per chunk (version 2), planes = each plane a frame when it "
               "saves >= %d per mille, else raw\n"
               "| state | raw MB | ratio frame | ratio planes | encode GB/s/core frame | planes | decode GB/s/core "
               "frame | planes |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
               levels[li], gains[1]);
        uint64_t tot_raw = 0, tot_st[NCODEC_MAX] = {0};
        double ratio[NROW][NCODEC_MAX], enc_gbs[NROW][NCODEC_MAX], dec_gbs[NROW][NCODEC_MAX];
        for (int r = 0; r < NROW; r++) {
            if (!rows[r].n) continue;
            uint64_t st_bytes[NCODEC_MAX] = {0};
            double best_e[NCODEC_MAX], best_d[NCODEC_MAX];
            if ((rc = measure_row(enc, ncodec, dec, &rows[r], stored, back, st_bytes, best_e, best_d))) return rc;
            for (int k = 0; k < ncodec; k++) {
                ratio[r][k] = (double)rows[r].n / (double)st_bytes[k];
                enc_gbs[r][k] = rows[r].n / best_e[k] / 1e9;
                dec_gbs[r][k] = rows[r].n / best_d[k] / 1e9;
                if (r != NROW - 1) tot_st[k] += st_bytes[k]; /* the cast row is not part of the checkpoint */
            }
            if (r != NROW - 1) tot_raw += rows[r].n;
            printf("| %s | %.2f | %.3f | %.3f | %.2f | %.2f | %.2f | %.2f |\n", names[r], rows[r].n / 1e6,
                   ratio[r][0], ratio[r][1], enc_gbs[r][0], enc_gbs[r][1], dec_gbs[r][0], dec_gbs[r][1]);
        }
        printf("| all states stored | %.2f | %.3f | %.3f | | | | |\n", tot_raw / 1e6,
               (double)tot_raw / (double)tot_st[0], (double)tot_raw / (double)tot_st[1]);
        if (ncodec > 2) print_gains(levels[li], gains, ncodec, names, rows, ratio, enc_gbs, dec_gbs, tot_raw, tot_st);
        for (int k = 0; k < ncodec; k++) ds_zchunk_enc_free(enc[k]);
    }
    free(back);
    free(stored);
    ds_zchunk_dec_free(dec);
    for (int r = 0; r < NROW; r++) free(rows[r].p);
    dsckpt_ckpt_free(c);
    return 0;
}
