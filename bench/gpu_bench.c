/*
 * gpu_bench.c — device-side figures for scripts/gpu-check.sh, each as a ratio to a
 * floor measured in the same run:
 *
 *   gpu_bench snapshot [MiB]
 *     floor:    one cudaMemcpy of the whole buffer into page-locked host memory
 *     measured: the snapshot path (kernels/cuda/snapshot.cu: 8 partitions copied
 *               on the side stream into the double buffer), begin -> wait
 *     stall:    what the training thread spends in begin + fence while a copy of
 *               that size is enqueued, against a synchronous save (copy, then
 *               write the bytes to a file and fsync it)
 *   Prints key=value lines; medians of 5 after a warm-up.
 *
 * Exit status: 0 done, 77 no CUDA device (printed as "SKIPPED:"), 1 failure.
 */
#include "ds_cuda.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REPS 5

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[n / 2];
}

#define CK(call)                                                                   \
    do {                                                                           \
        dsc_status st_ = (call);                                                \
        if (st_ != DSC_OK) {                                                    \
            fprintf(stderr, "gpu_bench: %s failed: %s\n", #call, dsc_last_error()); \
            return 1;                                                              \
        }                                                                          \
    } while (0)

static int bench_snapshot(size_t mib) {
    size_t bytes = mib << 20;
    dsc_ctx *c = NULL;
    dsc_snapshot *s = NULL;
    void *dev = NULL, *host = NULL;
    CK(dsc_ctx_create(0, &c));
    CK(dsc_malloc(&dev, bytes));
    CK(dsc_host_alloc(&host, bytes));
    CK(dsc_memset(c, dev, 0x5A, bytes));
    CK(dsc_sync(c));
    CK(dsc_snapshot_create(0, bytes, &s));
    enum { PARTS = 8 };
    const void *parts[PARTS];
    size_t pb[PARTS];
    for (int i = 0; i < PARTS; i++) {
        size_t a = bytes / PARTS * (size_t)i, b = i == PARTS - 1 ? bytes : bytes / PARTS * (size_t)(i + 1);
        parts[i] = (const char *)dev + a;
        pb[i] = b - a;
    }
    double floor_t[REPS], snap_t[REPS], stall_t[REPS], sync_t[REPS];
    char path[] = "/tmp/gpu_bench_save_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("gpu_bench: mkstemp");
        return 1;
    }
    for (int r = -1; r < REPS; r++) { /* r = -1: warm-up */
        double t0 = now_s();
        CK(dsc_memcpy(c, host, dev, bytes, DSC_D2H));
        CK(dsc_sync(c));
        double t1 = now_s();
        int slot;
        CK(dsc_snapshot_begin(s, c, parts, pb, PARTS, &slot));
        CK(dsc_snapshot_fence(s, c));
        double t2 = now_s();
        const void *h;
        CK(dsc_snapshot_wait(s, slot, &h));
        double t3 = now_s();
        if (memcmp(h, host, bytes) != 0) {
            fprintf(stderr, "gpu_bench: snapshot bytes differ from the direct copy\n");
            return 1;
        }
        dsc_snapshot_release(s, slot);
        /* synchronous save: copy, write, fsync */
        double t4 = now_s();
        CK(dsc_memcpy(c, host, dev, bytes, DSC_D2H));
        CK(dsc_sync(c));
        if (pwrite(fd, host, bytes, 0) != (ssize_t)bytes || fsync(fd) != 0) {
            perror("gpu_bench: write");
            return 1;
        }
        double t5 = now_s();
        if (r >= 0) {
            floor_t[r] = t1 - t0;
            snap_t[r] = t3 - t1;
            stall_t[r] = t2 - t1;
            sync_t[r] = t5 - t4;
        }
    }
    close(fd);
    unlink(path);
    double f = median(floor_t, REPS), sn = median(snap_t, REPS), st = median(stall_t, REPS),
           sy = median(sync_t, REPS);
    double gb = (double)bytes / 1e9;
    printf("snapshot_bytes=%zu\n", bytes);
    printf("pinned_copy_GBps=%.2f\n", gb / f);
    printf("snapshot_GBps=%.2f\n", gb / sn);
    printf("snapshot_over_pinned=%.3f\n", f / sn);
    printf("async_stall_s=%.6f\n", st);
    printf("sync_save_s=%.6f\n", sy);
    printf("stall_over_sync_save=%.4f\n", st / sy);
    dsc_snapshot_free(s);
    dsc_host_free(host);
    dsc_free(dev);
    dsc_ctx_free(c);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "snapshot") != 0) {
        fprintf(stderr, "usage: gpu_bench snapshot [MiB]\n");
        return 3;
    }
    int n = 0;
    const char *why = NULL;
    if (dsc_device_count(&n, &why) != DSC_OK || n < 1) {
        printf("SKIPPED: no CUDA device (%s)\n", why ? why : "none found");
        return 77;
    }
    long mib = argc > 2 ? strtol(argv[2], NULL, 10) : 1024;
    if (mib < 1 || mib > 65536) {
        fprintf(stderr, "gpu_bench: size must be 1..65536 MiB\n");
        return 3;
    }
    char desc[256];
    if (dsc_device_describe(0, desc, sizeof desc) == DSC_OK) printf("device=%s\n", desc);
    return bench_snapshot((size_t)mib);
}
