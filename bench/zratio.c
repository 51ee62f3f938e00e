/*
 * zratio.c — compression ratio per state and codec throughput on one core, on the
 * values of a real checkpoint (bench/compress.sh).
 *
 * Usage: ds_zratio CKPT [LEVEL ...]   (default levels: 1 3)
 *
 * For each state (fp32, exp_avg, exp_avg_sq, w16 when present, and "w16 (cast)":
 * the fp32 master weights cast to the checkpoint's 16-bit training dtype, which
 * is what a 16-bit weight file or a bf16 checkpoint's working weights hold), the
 * state's bytes over every tensor, in tensor order, are cut into 16 MiB chunks
 * and each chunk is encoded as a compressed rank file would store it
 * (ds_zchunk_encode, shuffled by the element width). Prints raw bytes, stored
 * bytes and raw/stored per state and overall, and per level the encode and
 * decode throughput of one thread (GB/s of raw bytes per second of that thread's
 * CPU time, so a loaded machine does not count other processes' time; the best
 * of 3 passes).
 */
#include "cast.h"
#include "ckpt.h"
#include "zchunk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK ((size_t)16 << 20)

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

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CKPT [LEVEL ...]\n", argv[0]);
        return 3;
    }
    dsckpt_ckpt *c = NULL;
    if (dsckpt_ckpt_open(argv[1], NULL, &c) != DSCKPT_OK) {
        fprintf(stderr, "%s\n", dsckpt_last_error());
        return 2;
    }
    ds_fdset fs;
    if (ds_fdset_open(c, &fs) != DSCKPT_OK) {
        fprintf(stderr, "%s\n", dsckpt_last_error());
        return 2;
    }
    dsckpt_dtype w16 = !strcmp(c->train_dtype, "fp16") ? DSCKPT_F16 : DSCKPT_BF16;
    enum { NROW = DS_NSTATES + 1 };
    buf rows[NROW];
    memset(rows, 0, sizeof rows);
    const char *names[NROW] = {"fp32", "exp_avg", "exp_avg_sq", "w16", "w16 (cast from fp32)"};
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
    int nlev = argc > 2 ? argc - 2 : 2;
    int levels[16] = {1, 3};
    for (int i = 0; i < nlev && i < 16; i++) levels[i] = argc > 2 ? atoi(argv[2 + i]) : levels[i];
    printf("checkpoint %s: %zu tensors, train dtype %s\n", argv[1], c->ntensors, c->train_dtype);
    ds_zchunk_dec *dec = NULL;
    ds_zchunk_dec_new(&dec);
    uint8_t *back = malloc(CHUNK), *stored = malloc(CHUNK);
    for (int li = 0; li < nlev; li++) {
        ds_zchunk_enc *enc = NULL;
        if (ds_zchunk_enc_new(levels[li], &enc) != DSCKPT_OK) {
            fprintf(stderr, "%s\n", dsckpt_last_error());
            return 3;
        }
        printf("\nlevel %d\n| state | raw MB | stored MB | ratio | encode GB/s/core | decode GB/s/core |\n"
               "|---|---:|---:|---:|---:|---:|\n",
               levels[li]);
        uint64_t tot_raw = 0, tot_st = 0;
        for (int r = 0; r < NROW; r++) {
            if (!rows[r].n) continue;
            uint64_t st_bytes = 0;
            double best_e = 1e30, best_d = 1e30;
            for (int pass = 0; pass < 3; pass++) {
                double te = 0, td = 0;
                st_bytes = 0;
                for (size_t off = 0; off < rows[r].n; off += CHUNK) {
                    size_t n = DS_MIN(CHUNK, rows[r].n - off);
                    const uint8_t *sp;
                    size_t sn;
                    ds_zchunk_kind k;
                    double t0 = now();
                    if (ds_zchunk_encode(enc, rows[r].p + off, n, rows[r].width, &sp, &sn, &k) != DSCKPT_OK) return 2;
                    te += now() - t0;
                    memcpy(stored, sp, sn);
                    st_bytes += sn;
                    t0 = now();
                    if (ds_zchunk_decode(dec, k, k == DS_ZCHUNK_RAW ? 1 : rows[r].width, stored, sn, back, n, "b") !=
                            DSCKPT_OK ||
                        memcmp(back, rows[r].p + off, n) != 0) {
                        fprintf(stderr, "round trip failed\n");
                        return 1;
                    }
                    td += now() - t0;
                }
                if (te < best_e) best_e = te;
                if (td < best_d) best_d = td;
            }
            if (r != NROW - 1) { /* the cast row is not part of the checkpoint */
                tot_raw += rows[r].n;
                tot_st += st_bytes;
            }
            printf("| %s | %.2f | %.2f | %.3f | %.2f | %.2f |\n", names[r], rows[r].n / 1e6, st_bytes / 1e6,
                   (double)rows[r].n / (double)st_bytes, rows[r].n / best_e / 1e9, rows[r].n / best_d / 1e9);
        }
        printf("| all states stored | %.2f | %.2f | %.3f | | |\n", tot_raw / 1e6, tot_st / 1e6,
               (double)tot_raw / (double)tot_st);
        ds_zchunk_enc_free(enc);
    }
    free(back);
    free(stored);
    ds_zchunk_dec_free(dec);
    for (int r = 0; r < NROW; r++) free(rows[r].p);
    dsckpt_ckpt_free(c);
    return 0;
}
