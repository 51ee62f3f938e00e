/*
 * cast.c — plain C reference casts (the bit-exact specification the SIMD paths in
 * cast_avx2.c / cast_avx512.c are tested against) and the run-time dispatcher.
 *
 * The references work on the IEEE bit patterns with integer arithmetic only, so the
 * result does not depend on the floating-point environment (rounding mode, FTZ/DAZ)
 * or on how the compiler evaluates float expressions.
 *
 * NaN rules (chosen to match what F16C hardware does, so the fast paths need no
 * fix-up for fp16):
 *   f32 -> bf16: (bits >> 16) | 0x0040           sign + top 6 payload bits, quiet
 *   f32 -> f16:  sign | 0x7E00 | (mant >> 13)      sign + top 9 payload bits, quiet
 *   bf16 -> f32: bits << 16                        exact, signalling NaNs stay so
 *   f16 -> f32:  sign | 0x7FC00000 | (mant << 13)  payload kept, quiet bit set
 *
 * The fast paths exist on x86-64 only: the build defines DSCKPT_X86_SIMD and compiles
 * cast_avx2.c / cast_avx512.c (with -mavx2 etc.) there. Elsewhere (aarch64, or an x86
 * build with -DDSCKPT_FORCE_GENERIC=ON) the dispatcher has the reference alone.
 */
#include "cast.h"

#if defined(DSCKPT_X86_SIMD) && !defined(__x86_64__)
#error "DSCKPT_X86_SIMD is set but the target is not x86-64"
#endif

#ifdef DSCKPT_X86_SIMD
#include <cpuid.h>
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- scalar references ---- */

uint16_t ds_f32_to_bf16_ref(float f) {
    uint32_t b = f32_bits(f);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((b >> 16) | 0x0040u);
    /* RNE on the 16 dropped bits: adding 0x7FFF rounds anything above half up, and
     * the extra +1 when the kept LSB is odd turns an exact tie into a round-up.
     * A carry out of the mantissa bumps the exponent, which is the right answer,
     * including 0x7F7F8000.. -> 0x7F80 (inf). Cannot wrap: the largest non-NaN
     * input is 0xFF800000. */
    b += 0x7FFFu + ((b >> 16) & 1u);
    return (uint16_t)(b >> 16);
}

uint16_t ds_f32_to_f16_ref(float f) {
    uint32_t b = f32_bits(f);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000u);
    uint32_t a = b & 0x7FFFFFFFu;

    if (a > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
    /* 0x477FF000 is 65520 = 65504 + half an fp16 ulp: the tie between the max
     * finite value (odd mantissa 0x3FF) and 2^16, which RNE sends up to inf. (The
     * carry in the normal path below would also give 0x7C00 up to 0x477FFFFF; the
     * test is needed for the larger exponents, whose rebias would overflow.) */
    if (a >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);
    if (a >= 0x38800000u) {
        /* Normal fp16 (>= 2^-14): same RNE trick as bf16 on the 13 dropped bits,
         * then rebias the exponent from 127 to 15. A mantissa carry lands in the
         * exponent field, which is correct; the bound above keeps it below 0x7C00. */
        a += 0xFFFu + ((a >> 13) & 1u);
        a -= (uint32_t)(127 - 15) << 23;
        return (uint16_t)(sign | (a >> 13));
    }
    /* fp16 subnormal range: result = |f| / 2^-24 rounded to an integer (0..0x400;
     * 0x400 is the smallest normal, which is the right encoding for a round-up).
     * |f| = m * 2^(e-150) with the implicit bit in m, so |f| / 2^-24 = m >> (126-e). */
    uint32_t e = a >> 23;
    uint32_t shift = 126 - e; /* >= 14 here since e <= 112 */
    /* shift >= 25: |f| < 2^24 * 2^-25 = 2^-25, i.e. below half the smallest
     * subnormal (never equal to it, m < 2^24), so it rounds to a signed zero.
     * This also covers zeros and fp32 subnormals. */
    if (shift >= 25) return sign;
    uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

float ds_bf16_to_f32_ref(uint16_t h) { return bits_f32((uint32_t)h << 16); }

float ds_f16_to_f32_ref(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1Fu;
    uint32_t m = h & 0x3FFu;

    if (e == 0x1F) {
        if (m == 0) return bits_f32(sign | 0x7F800000u);
        return bits_f32(sign | 0x7FC00000u | (m << 13));
    }
    if (e == 0) {
        if (m == 0) return bits_f32(sign);
        /* Subnormal m * 2^-24: normalise so the leading 1 reaches bit 10; every
         * fp16 subnormal is a normal fp32 value. */
        e = 113; /* fp32 biased exponent of 2^-14 */
        while (!(m & 0x400u)) {
            m <<= 1;
            e--;
        }
        m &= 0x3FFu;
        return bits_f32(sign | (e << 23) | (m << 13));
    }
    return bits_f32(sign | ((e + 127 - 15) << 23) | (m << 13));
}

void ds_cast_f32_to_bf16_ref(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = ds_f32_to_bf16_ref(src[i]);
}

void ds_cast_f32_to_f16_ref(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = ds_f32_to_f16_ref(src[i]);
}

void ds_cast_bf16_to_f32_ref(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = ds_bf16_to_f32_ref(src[i]);
}

void ds_cast_f16_to_f32_ref(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = ds_f16_to_f32_ref(src[i]);
}

#ifdef DSCKPT_X86_SIMD
/* ---- fast paths (defined in cast_avx2.c / cast_avx512.c) ----
 * Declared through __typeof__ of the reference so the prototypes cannot drift: the
 * ISA files declare their definitions the same way, so a signature change in cast.h
 * is a compile error there rather than a silent ABI mismatch. */
__typeof__(ds_cast_f32_to_bf16_ref) ds_cast_f32_to_bf16_avx2, ds_cast_f32_to_bf16_avx512;
__typeof__(ds_cast_f32_to_f16_ref) ds_cast_f32_to_f16_avx2, ds_cast_f32_to_f16_avx512;
__typeof__(ds_cast_bf16_to_f32_ref) ds_cast_bf16_to_f32_avx2, ds_cast_bf16_to_f32_avx512;
__typeof__(ds_cast_f16_to_f32_ref) ds_cast_f16_to_f32_avx2, ds_cast_f16_to_f32_avx512;
#endif

/* ---- dispatcher ---- */

typedef struct cast_impl {
    const char *name;
    int (*supported)(void);
    void (*f32_to_bf16)(const float *, uint16_t *, size_t);
    void (*f32_to_f16)(const float *, uint16_t *, size_t);
    void (*bf16_to_f32)(const uint16_t *, float *, size_t);
    void (*f16_to_f32)(const uint16_t *, float *, size_t);
} cast_impl;

#ifdef DSCKPT_X86_SIMD
/* __builtin_cpu_supports also checks that the OS saves the wider register state
 * (XCR0), so a "yes" means the instructions are actually usable. DQ is required
 * because cast_avx512.c is compiled with -mavx512dq and FMA because cast_avx2.c
 * is compiled with -mfma: the compiler may use them anywhere in those files. */
static int cpu_has_f16c(void) {
    /* Not via __builtin_cpu_supports: clang before 16 rejects "f16c" there. F16C
     * uses the AVX register state, whose OS support the avx2/avx512f checks that
     * always accompany this one have already established. */
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

static int cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           cpu_has_f16c();
}

static int cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
}
#endif

static int cpu_always(void) { return 1; }

/* Fastest first: detection picks the first supported entry. */
static const cast_impl g_impls[] = {
#ifdef DSCKPT_X86_SIMD
    {"avx512", cpu_has_avx512, ds_cast_f32_to_bf16_avx512, ds_cast_f32_to_f16_avx512,
     ds_cast_bf16_to_f32_avx512, ds_cast_f16_to_f32_avx512},
    {"avx2", cpu_has_avx2, ds_cast_f32_to_bf16_avx2, ds_cast_f32_to_f16_avx2,
     ds_cast_bf16_to_f32_avx2, ds_cast_f16_to_f32_avx2},
#endif
    {"ref", cpu_always, ds_cast_f32_to_bf16_ref, ds_cast_f32_to_f16_ref,
     ds_cast_bf16_to_f32_ref, ds_cast_f16_to_f32_ref},
};

/* NULL until the first call resolves it. Readers only ever see NULL or a pointer
 * into g_impls (immutable), so acquire/release on the pointer is all the
 * synchronisation needed. */
static _Atomic(const cast_impl *) g_active;
static pthread_once_t g_detect_once = PTHREAD_ONCE_INIT;

static void detect(void) {
    const cast_impl *pick = &g_impls[sizeof g_impls / sizeof g_impls[0] - 1];
    for (size_t i = 0; i < sizeof g_impls / sizeof g_impls[0]; i++) {
        if (g_impls[i].supported()) {
            pick = &g_impls[i];
            break;
        }
    }
    /* A concurrent ds_cast_force_impl() may already have set a choice; keep it. */
    const cast_impl *expected = NULL;
    atomic_compare_exchange_strong_explicit(&g_active, &expected, pick, memory_order_acq_rel,
                                            memory_order_acquire);
}

static inline const cast_impl *active(void) {
    const cast_impl *p = atomic_load_explicit(&g_active, memory_order_acquire);
    if (__builtin_expect(p == NULL, 0)) {
        pthread_once(&g_detect_once, detect);
        p = atomic_load_explicit(&g_active, memory_order_acquire);
    }
    return p;
}

void ds_cast_f32_to_bf16(const float *src, uint16_t *dst, size_t n) {
    active()->f32_to_bf16(src, dst, n);
}

void ds_cast_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
    active()->f32_to_f16(src, dst, n);
}

void ds_cast_bf16_to_f32(const uint16_t *src, float *dst, size_t n) {
    active()->bf16_to_f32(src, dst, n);
}

void ds_cast_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
    active()->f16_to_f32(src, dst, n);
}

const char *ds_cast_impl(void) { return active()->name; }

int ds_cast_force_impl(const char *name) {
    if (!name) return -1;
    for (size_t i = 0; i < sizeof g_impls / sizeof g_impls[0]; i++) {
        if (strcmp(g_impls[i].name, name) != 0) continue;
        if (!g_impls[i].supported()) return -1;
        /* A detection still to come, or running now, only fills a NULL pointer
         * (see detect), so it cannot overwrite this choice. */
        atomic_store_explicit(&g_active, &g_impls[i], memory_order_release);
        return 0;
    }
    return -1;
}
