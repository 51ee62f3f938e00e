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
 *   gpu_bench offload [Mparams]          (default 124)
 *     floor:    the optimizer phase on the device: one fused AdamW over the fp32
 *               partition (kernels/cuda) and the bf16 cast of the new weights
 *     measured: the same phase offloaded (ZeRO-Offload's split): gradients copied
 *               to pinned host memory on a side stream in chunks, AdamW on the CPU
 *               (runtime/adam.c, OpenMP) with the fp32 master and moments in host
 *               memory, the bf16 weights cast on the CPU and copied back, chunk k's
 *               copies overlapping chunk k+1's CPU work
 *     memory:   device bytes per parameter with and without offload
 *   This measures the mechanism on synthetic partitions; dstrain does not offload
 *   yet (docs/gpu.md).
 *   Prints key=value lines; medians of 5 after a warm-up.
 *
 * Exit status: 0 done, 77 no CUDA device (printed as "SKIPPED:"), 1 failure.
 */
#include "ds_cuda.h"
#ifdef DS_GPU_BENCH_OFFLOAD
#include "adam.h"
#include "cast.h"
#endif

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

#ifdef DS_GPU_BENCH_OFFLOAD
#define OFF_CHUNK ((size_t)8 << 20) /* elements per pipelined chunk */

/* The optimizer phase offloaded, once: chunk k's gradients copied down from dg on
 * `side`, AdamW on the CPU over hp/hm/hv, its bf16 weights copied up into dw16;
 * D2H(k+1) is in flight while the CPU steps chunk k, H2D(k) after it. hg, hw:
 * two pinned buffers of OFF_CHUNK elements each. Returns 0, or 1 on a failure. */
static int offload_phase(dsc_ctx *side, const float *dg, uint16_t *dw16, float *hp, float *hm, float *hv,
                         float *const hg[2], uint16_t *const hw[2], size_t n, const rt_adam_hparams *h) {
    size_t nch = (n + OFF_CHUNK - 1) / OFF_CHUNK;
    CK(dsc_memcpy(side, hg[0], dg, (n < OFF_CHUNK ? n : OFF_CHUNK) * 4, DSC_D2H));
    for (size_t k = 0; k < nch; k++) {
        size_t i0 = k * OFF_CHUNK, len = n - i0 < OFF_CHUNK ? n - i0 : OFF_CHUNK;
        CK(dsc_sync(side)); /* chunk k's gradients (and chunk k-1's weights) done */
        if (k + 1 < nch) {
            size_t j0 = i0 + OFF_CHUNK, jl = n - j0 < OFF_CHUNK ? n - j0 : OFF_CHUNK;
            CK(dsc_memcpy(side, hg[(k + 1) & 1], dg + j0, jl * 4, DSC_D2H));
        }
        if (rt_adam_step(hp + i0, hg[k & 1], hm + i0, hv + i0, len, h, 3) != DSCKPT_OK) {
            fprintf(stderr, "gpu_bench: rt_adam_step: %s\n", dsckpt_last_error());
            return 1;
        }
        ds_cast_f32_to_bf16(hp + i0, hw[k & 1], len);
        CK(dsc_memcpy(side, dw16 + i0, hw[k & 1], len * 2, DSC_H2D));
    }
    CK(dsc_sync(side));
    return 0;
}

static int bench_offload(size_t n) {
    dsc_ctx *c = NULL;
    float *dp, *dg, *dm, *dv;
    uint16_t *dw16;
    CK(dsc_ctx_create(0, &c));
    CK(dsc_malloc((void **)&dp, n * 4));
    CK(dsc_malloc((void **)&dg, n * 4));
    CK(dsc_malloc((void **)&dm, n * 4));
    CK(dsc_malloc((void **)&dv, n * 4));
    CK(dsc_malloc((void **)&dw16, n * 2));
    float *hp, *hm, *hv, *hg[2];
    uint16_t *hw[2];
    CK(dsc_host_alloc((void **)&hp, n * 4));
    CK(dsc_host_alloc((void **)&hm, n * 4));
    CK(dsc_host_alloc((void **)&hv, n * 4));
    for (int i = 0; i < 2; i++) {
        CK(dsc_host_alloc((void **)&hg[i], OFF_CHUNK * 4));
        CK(dsc_host_alloc((void **)&hw[i], OFF_CHUNK * 2));
    }
    /* random-ish values: no zeros (METHOD: never time on zeros) */
    for (size_t i = 0; i < n; i++) {
        hp[i] = (float)((i * 2654435761u) % 1000u) * 1e-3f - 0.5f;
        hm[i] = 0.0f;
        hv[i] = 0.0f;
    }
    CK(dsc_memcpy(c, dp, hp, n * 4, DSC_H2D));
    CK(dsc_memcpy(c, dg, hp, n * 4, DSC_H2D)); /* gradients: the same pattern */
    CK(dsc_memset(c, dm, 0, n * 4));
    CK(dsc_memset(c, dv, 0, n * 4));
    CK(dsc_sync(c));
    rt_adam_hparams h = rt_adam_defaults();
    h.weight_decay = 0.1f;
    dsc_adam_args a = {h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, 0.1f, 0.001f, true};
    dsc_ctx *side = NULL; /* its own stream: the copies */
    CK(dsc_ctx_create(0, &side));
    double dev_t[REPS], off_t[REPS];
    for (int r = -1; r < REPS; r++) {
        double t0 = now_s();
        CK(dsc_adam_step(c, dp, dg, dm, dv, n, &a));
        CK(dsc_cast_f32_to_bf16(c, dp, dw16, n));
        CK(dsc_sync(c));
        double t1 = now_s();
        if (offload_phase(side, dg, dw16, hp, hm, hv, hg, hw, n, &h)) return 1;
        double t2 = now_s();
        if (r >= 0) {
            dev_t[r] = t1 - t0;
            off_t[r] = t2 - t1;
        }
    }
    double dt = median(dev_t, REPS), ot = median(off_t, REPS);
    printf("offload_params=%zu\n", n);
    printf("device_optimizer_s=%.5f\n", dt);
    printf("offload_optimizer_s=%.5f\n", ot);
    printf("offload_over_device=%.2f\n", ot / dt);
    printf("offload_host_GBps=%.2f (gradients down + bf16 weights up)\n", (double)n * 6 / 1e9 / ot);
    /* per parameter on the device: fp32 master + exp_avg + exp_avg_sq + fp32 grad +
     * bf16 weight = 18 bytes; offloaded: fp32 grad + bf16 weight = 6 bytes. The
     * ZeRO-Offload formula (16-bit grads on the device) gives 2 + 2 = 4. */
    printf("device_bytes_per_param=18 offload_bytes_per_param=6 zero_offload_formula=4\n");
    printf("device_bytes_saved=%zu\n", n * 12);
    dsc_ctx_free(side);
    dsc_free(dp), dsc_free(dg), dsc_free(dm), dsc_free(dv), dsc_free(dw16);
    dsc_host_free(hp), dsc_host_free(hm), dsc_host_free(hv);
    for (int i = 0; i < 2; i++) dsc_host_free(hg[i]), dsc_host_free(hw[i]);
    dsc_ctx_free(c);
    return 0;
}
#endif

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "snapshot") != 0 && strcmp(argv[1], "offload") != 0)) {
        fprintf(stderr, "usage: gpu_bench snapshot [MiB] | offload [Mparams]\n");
        return 3;
    }
    int n = 0;
    const char *why = NULL;
    if (dsc_device_count(&n, &why) != DSC_OK || n < 1) {
        printf("SKIPPED: no CUDA device (%s)\n", why ? why : "none found");
        return 77;
    }
    if (strcmp(argv[1], "offload") == 0) {
#ifdef DS_GPU_BENCH_OFFLOAD
        long mp = argc > 2 ? strtol(argv[2], NULL, 10) : 124;
        if (mp < 1 || mp > 16384) {
            fprintf(stderr, "gpu_bench: 1..16384 million parameters\n");
            return 3;
        }
        return bench_offload((size_t)mp * 1000000u);
#else
        printf("SKIPPED: gpu_bench built without the runtime (MPI/OpenMP): no CPU optimizer\n");
        return 77;
#endif
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
