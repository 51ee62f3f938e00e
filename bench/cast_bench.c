/*
 * cast_bench.c — micro-benchmark for the cast kernels (not a test, not built by
 * CMake): throughput of each implementation the CPU supports, next to a plain
 * memcpy measured in the same run so the numbers can be compared across machines.
 *
 * Two sizes: a cache-resident one (shows the kernel's compute cost) and a large
 * one (shows whether it keeps up with memory). Throughput is reported in GB/s of
 * fp32-side bytes (n * 4 per call, whichever direction), and the ratio column is
 * that figure over memcpy of the same n * 4 bytes: 1.0 means "as fast as copying
 * the fp32 array". A cast moves 6n bytes against memcpy's 8n, so memory-bound
 * fast paths can exceed 1.
 *
 * Build from the repository root (no other project sources needed):
 *   gcc -std=gnu11 -O2 -D_GNU_SOURCE -Ikernels -c kernels/cast_avx2.c -mavx2 -mf16c -mfma -o cast_avx2.o
 *   gcc -std=gnu11 -O2 -D_GNU_SOURCE -Ikernels -c kernels/cast_avx512.c \
 *       -mavx512f -mavx512bw -mavx512vl -mavx512dq -mf16c -o cast_avx512.o
 *   gcc -std=gnu11 -O2 -D_GNU_SOURCE -DDSCKPT_X86_SIMD -Ikernels bench/cast_bench.c kernels/cast.c \
 *       cast_avx2.o cast_avx512.o -lpthread -o cast_bench
 *   ./cast_bench [large_elements]     (default 16M elements)
 */
#include "cast.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Called through a volatile pointer so the compiler cannot drop or merge copies. */
static void *(*volatile g_memcpy)(void *, const void *, size_t) = memcpy;

typedef struct {
    float *f32, *f32_out;
    uint16_t *u16, *u16_out;
    size_t n;
} bufs;

enum { OP_MEMCPY, OP_F32_BF16, OP_F32_F16, OP_BF16_F32, OP_F16_F32 };
static const char *const op_names[] = {"memcpy", "f32->bf16", "f32->f16", "bf16->f32",
                                       "f16->f32"};

static void run_op(int op, const bufs *b) {
    switch (op) {
    case OP_MEMCPY: g_memcpy(b->f32_out, b->f32, b->n * sizeof(float)); break;
    case OP_F32_BF16: ds_cast_f32_to_bf16(b->f32, b->u16_out, b->n); break;
    case OP_F32_F16: ds_cast_f32_to_f16(b->f32, b->u16_out, b->n); break;
    case OP_BF16_F32: ds_cast_bf16_to_f32(b->u16, b->f32_out, b->n); break;
    case OP_F16_F32: ds_cast_f16_to_f32(b->u16, b->f32_out, b->n); break;
    }
}

/* Best time of several batches, each long enough (>= ~20 ms) to time reliably. */
static double best_seconds_per_call(int op, const bufs *b) {
    size_t reps = 1;
    for (;;) {
        double t0 = now_s();
        for (size_t r = 0; r < reps; r++) run_op(op, b);
        if (now_s() - t0 >= 0.02) break;
        reps *= 2;
    }
    double best = 1e30;
    for (int batch = 0; batch < 7; batch++) {
        double t0 = now_s();
        for (size_t r = 0; r < reps; r++) run_op(op, b);
        double t = (now_s() - t0) / (double)reps;
        if (t < best) best = t;
    }
    return best;
}

static void *xalloc(size_t bytes) {
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    memset(p, 0, bytes); /* fault the pages in before timing */
    return p;
}

static void bench_size(size_t n) {
    bufs b = {xalloc(n * 4), xalloc(n * 4), xalloc(n * 2), xalloc(n * 2), n};
    /* Typical weights: finite values of moderate size, a few tiny ones. */
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        b.f32[i] = ((float)(s >> 40) / (float)(1u << 24) - 0.5f) * ((i % 97) ? 4.0f : 1e-6f);
    }
    ds_cast_f32_to_f16_ref(b.f32, b.u16, n); /* valid fp16 and bf16-ish inputs */

    double mc = best_seconds_per_call(OP_MEMCPY, &b);
    double bytes = (double)n * 4;
    printf("\n%zu elements (%.0f KiB of fp32)\n", n, bytes / 1024);
    printf("  %-8s %-10s %8.2f GB/s  (baseline)\n", "-", "memcpy", bytes / mc * 1e-9);

    static const char *const impls[] = {"ref", "avx2", "avx512"};
    for (size_t k = 0; k < sizeof impls / sizeof impls[0]; k++) {
        if (ds_cast_force_impl(impls[k]) != 0) {
            printf("  %-8s (not supported by this CPU)\n", impls[k]);
            continue;
        }
        for (int op = OP_F32_BF16; op <= OP_F16_F32; op++) {
            double t = best_seconds_per_call(op, &b);
            printf("  %-8s %-10s %8.2f GB/s  %5.2fx memcpy\n", impls[k], op_names[op],
                   bytes / t * 1e-9, mc / t);
        }
    }
    free(b.f32);
    free(b.f32_out);
    free(b.u16);
    free(b.u16_out);
}

int main(int argc, char **argv) {
    size_t large = argc > 1 ? strtoull(argv[1], NULL, 0) : (size_t)16 << 20;
    printf("cast_bench: auto-selected implementation: %s\n", ds_cast_impl());
    printf("GB/s counts fp32-side bytes (n*4) per call; ratio = memcpy(n*4) time / cast time\n");
    bench_size(8192); /* 32 KiB + 16 KiB: cache-resident */
    bench_size(large);
    return 0;
}
