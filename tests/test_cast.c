/*
 * test_cast.c — tests for kernels/cast.{h,c}: the scalar references against
 * hand-picked values and against an independent nearest-even oracle, exhaustive
 * round trips of every fp16 and bf16 pattern, and every SIMD path the CPU supports
 * against the references bit for bit (odd lengths, misaligned pointers, NaN
 * payloads, canaries around the output).
 *
 * A SIMD path the CPU lacks cannot be tested; the test says so on a line starting
 * "SKIPPED:" and lists it again in the summary. Set DSCKPT_REQUIRE_AVX512=1 (or
 * DSCKPT_REQUIRE_AVX2=1) to turn such a skip into a failure, e.g. on a CI runner
 * known to have the instructions.
 */
#include "cast.h"
#include "tutil.h"

#ifdef DSCKPT_X86_SIMD
#include <cpuid.h>
#endif
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Mismatches printed per check before going quiet. */
#define MAX_REPORT 8

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bitsf(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* xorshift64*: fixed seed so a failure reproduces. */
static uint64_t g_rng = 0x2545F4914F6CDD1Dull;

static uint32_t rnd32(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (uint32_t)((g_rng * 0x2545F4914F6CDD1Dull) >> 32);
}

static int f32_is_nan(uint32_t u) { return (u & 0x7FFFFFFFu) > 0x7F800000u; }
static int f16_is_nan(uint16_t h) { return (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu); }
static int bf16_is_nan(uint16_t h) { return (h & 0x7F80u) == 0x7F80u && (h & 0x7Fu); }

/* Counts a mismatch and prints the first few. */
static void report16(unsigned *bad, const char *what, uint32_t in, uint16_t got, uint16_t want) {
    if ((*bad)++ < MAX_REPORT)
        fprintf(stderr, "\n  %s(0x%08X): got 0x%04X, want 0x%04X", what, in, got, want);
}

static void report32(unsigned *bad, const char *what, uint32_t in, uint32_t got, uint32_t want) {
    if ((*bad)++ < MAX_REPORT)
        fprintf(stderr, "\n  %s(0x%04X): got 0x%08X, want 0x%08X", what, in, got, want);
}

/* ---- skip bookkeeping ---- */

static char g_skipped[128];

static void skip_impl(const char *name) {
    printf("\n    SKIPPED: %s not supported by this CPU\n    ", name);
    fflush(stdout);
    size_t len = strlen(g_skipped);
    snprintf(g_skipped + len, sizeof g_skipped - len, "%s%s", len ? ", " : "", name);
    char env[64];
    snprintf(env, sizeof env, "DSCKPT_REQUIRE_%s", name);
    for (char *p = env; *p; p++)
        if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
    const char *req = getenv(env);
    if (req && *req && strcmp(req, "0") != 0) CU_FAIL("required implementation not supported");
}

/* ---- dispatcher ---- */

/* Expected dispatcher choice, worked out here independently of cast.c. */
static const char *expected_auto_impl(void) {
#ifndef DSCKPT_X86_SIMD
    return "ref"; /* a generic build (non-x86, or -DDSCKPT_FORCE_GENERIC=ON) has only the reference */
#else
    unsigned a, b, c, d;
    int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && f16c)
        return "avx512";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) return "avx2";
    return "ref";
#endif
}

/* Must run first: the dispatcher resolves on first use. */
static void test_dispatch(void) {
    const char *auto_impl = ds_cast_impl();
    printf("\n    auto-selected implementation: %s\n    ", auto_impl);
    CU_ASSERT_STRING_EQUAL(auto_impl, expected_auto_impl());

    CU_ASSERT_EQUAL(ds_cast_force_impl("bogus"), -1);
    CU_ASSERT_EQUAL(ds_cast_force_impl(NULL), -1);
    CU_ASSERT_STRING_EQUAL(ds_cast_impl(), auto_impl);

    CU_ASSERT_EQUAL(ds_cast_force_impl("ref"), 0);
    CU_ASSERT_STRING_EQUAL(ds_cast_impl(), "ref");
    float f = 1.5f;
    uint16_t h = 0;
    ds_cast_f32_to_f16(&f, &h, 1);
    CU_ASSERT_EQUAL(h, 0x3E00);

    CU_ASSERT_EQUAL(ds_cast_force_impl(auto_impl), 0);
    CU_ASSERT_STRING_EQUAL(ds_cast_impl(), auto_impl);
}

/* ---- hand-picked reference values ---- */

typedef struct {
    uint32_t in;
    uint16_t want;
} narrow_case;

static void check_narrow_cases(const char *what, uint16_t (*fn)(float), const narrow_case *c,
                               size_t n) {
    unsigned bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t got = fn(bitsf(c[i].in));
        if (got != c[i].want) report16(&bad, what, c[i].in, got, c[i].want);
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_bf16_ref_values(void) {
    static const narrow_case c[] = {
        {0x3F800000, 0x3F80}, /* 1.0 */
        {0xBF800000, 0xBF80}, /* -1.0 */
        {0x3F808000, 0x3F80}, /* tie, kept LSB even: down */
        {0x3F818000, 0x3F82}, /* tie, kept LSB odd: up */
        {0xBF818000, 0xBF82}, /* same, negative */
        {0x3F808001, 0x3F81}, /* just above a tie */
        {0x3F807FFF, 0x3F80}, /* just below a tie */
        {0x3F817FFF, 0x3F81},
        {0x3F818001, 0x3F82},
        {0x3F80FFFF, 0x3F81},
        {0x3FFF8000, 0x4000}, /* tie carries into the exponent */
        {0x7F7F0000, 0x7F7F}, /* max finite bf16 */
        {0x7F7F7FFF, 0x7F7F}, /* just below the overflow tie */
        {0x7F7F8000, 0x7F80}, /* overflow tie, odd LSB: inf */
        {0x7F7FFFFF, 0x7F80}, /* FLT_MAX: inf */
        {0xFF7FFFFF, 0xFF80}, /* -FLT_MAX: -inf */
        {0x7F800000, 0x7F80}, /* inf */
        {0xFF800000, 0xFF80}, /* -inf */
        {0x00000000, 0x0000},
        {0x80000000, 0x8000}, /* -0.0 keeps its sign */
        {0x00000001, 0x0000}, /* fp32 denormals */
        {0x80000001, 0x8000},
        {0x00008000, 0x0000}, /* denormal tie, even: down */
        {0x00018000, 0x0002}, /* denormal tie, odd: up */
        {0x00010000, 0x0001}, /* smallest bf16 denormal */
        {0x00400000, 0x0040},
        {0x007F0000, 0x007F}, /* largest bf16 denormal */
        {0x007F8000, 0x0080}, /* tie: rounds up into the smallest normal */
        {0x007FFFFF, 0x0080},
        {0x00800000, 0x0080}, /* FLT_MIN */
        {0x7FC00000, 0x7FC0}, /* quiet NaN */
        {0xFFC00000, 0xFFC0}, /* negative quiet NaN */
        {0x7F800001, 0x7FC0}, /* signalling NaN, payload only in dropped bits */
        {0x7FA00000, 0x7FE0}, /* signalling NaN: quietened, payload kept */
        {0xFF812345, 0xFFC1},
        {0x7FBFFFFF, 0x7FFF}, /* NaN that RNE would carry into the sign without the rule */
        {0x7FFFFFFF, 0x7FFF},
    };
    check_narrow_cases("bf16_ref", ds_f32_to_bf16_ref, c, sizeof c / sizeof c[0]);
}

static void test_f16_ref_values(void) {
    static const narrow_case c[] = {
        {0x3F800000, 0x3C00}, /* 1.0 */
        {0xC0000000, 0xC000}, /* -2.0 */
        {0x3F801000, 0x3C00}, /* 1 + 2^-11: tie, even: down */
        {0x3F803000, 0x3C02}, /* 1 + 3*2^-11: tie, odd: up */
        {0xBF803000, 0xBC02},
        {0x3F801001, 0x3C01}, /* just above a tie */
        {0x3F800FFF, 0x3C00}, /* just below a tie */
        {0x3F802FFF, 0x3C01},
        {0x3F803001, 0x3C02},
        {0x3FFFF000, 0x4000}, /* tie carries into the exponent */
        {0x477FE000, 0x7BFF}, /* 65504: max finite */
        {0x477FEFFF, 0x7BFF}, /* 65519.996: just below the overflow tie */
        {0x477FF000, 0x7C00}, /* 65520: overflow tie, odd LSB: inf */
        {0xC77FF000, 0xFC00}, /* -65520: -inf */
        {0xC77FEFFF, 0xFBFF},
        {0x47800000, 0x7C00}, /* 65536 */
        {0x501502F9, 0x7C00}, /* 1e10 */
        {0x7F7FFFFF, 0x7C00}, /* FLT_MAX */
        {0xFF7FFFFF, 0xFC00},
        {0x7F800000, 0x7C00}, /* inf */
        {0xFF800000, 0xFC00}, /* -inf */
        {0x38800000, 0x0400}, /* 2^-14: smallest normal */
        {0x387FC000, 0x03FF}, /* 1023*2^-24: largest subnormal */
        {0x387FE000, 0x0400}, /* 1023.5*2^-24: tie, odd: up into the normal range */
        {0x387FDFFF, 0x03FF}, /* just below that tie */
        {0x387FA000, 0x03FE}, /* 1022.5*2^-24: tie, even: down */
        {0x387FA001, 0x03FF},
        {0x33800000, 0x0001}, /* 2^-24: smallest subnormal */
        {0xB3800000, 0x8001},
        {0x33000000, 0x0000}, /* 2^-25: half the smallest, tie, even: 0 */
        {0xB3000000, 0x8000}, /* same, sign kept */
        {0x33000001, 0x0001}, /* just above half: rounds up */
        {0x32FFFFFF, 0x0000}, /* just below half */
        {0xB2FFFFFF, 0x8000},
        {0x32800000, 0x0000}, /* 2^-26 */
        {0x33C00000, 0x0002}, /* 1.5*2^-24: tie, odd: up */
        {0x34200000, 0x0002}, /* 2.5*2^-24: tie, even: down */
        {0x34600000, 0x0004}, /* 3.5*2^-24: tie, odd: up */
        {0x35800000, 0x0010}, /* 2^-20 */
        {0x35800001, 0x0010},
        {0x00000001, 0x0000}, /* fp32 denormals */
        {0x80000001, 0x8000},
        {0x007FFFFF, 0x0000},
        {0x00000000, 0x0000},
        {0x80000000, 0x8000}, /* -0.0 */
        {0x7FC00000, 0x7E00}, /* quiet NaN */
        {0xFFC00000, 0xFE00},
        {0x7F800001, 0x7E00}, /* signalling NaN, payload only in dropped bits */
        {0x7FA00000, 0x7F00}, /* signalling NaN: quietened, top payload kept */
        {0xFF802000, 0xFE01},
        {0x7FFFFFFF, 0x7FFF},
        {0x7FBFE000, 0x7FFF},
    };
    check_narrow_cases("f16_ref", ds_f32_to_f16_ref, c, sizeof c / sizeof c[0]);
}

typedef struct {
    uint16_t in;
    uint32_t want;
} widen_case;

static void check_widen_cases(const char *what, float (*fn)(uint16_t), const widen_case *c,
                              size_t n) {
    unsigned bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t got = fbits(fn(c[i].in));
        if (got != c[i].want) report32(&bad, what, c[i].in, got, c[i].want);
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_widen_ref_values(void) {
    static const widen_case f16[] = {
        {0x3C00, 0x3F800000}, {0xC000, 0xC0000000},
        {0x0001, 0x33800000}, /* 2^-24 */
        {0x8001, 0xB3800000},
        {0x03FF, 0x387FC000}, /* largest subnormal */
        {0x0200, 0x38000000}, /* 2^-15 */
        {0x0400, 0x38800000}, /* smallest normal */
        {0x7BFF, 0x477FE000}, /* 65504 */
        {0x7C00, 0x7F800000}, {0xFC00, 0xFF800000},
        {0x0000, 0x00000000}, {0x8000, 0x80000000},
        {0x7E00, 0x7FC00000}, /* quiet NaN */
        {0x7D00, 0x7FE00000}, /* signalling NaN: quietened, payload kept */
        {0xFC01, 0xFFC02000},
        {0x7FFF, 0x7FFFE000},
    };
    static const widen_case bf16[] = {
        {0x3F80, 0x3F800000}, {0x0001, 0x00010000}, {0x8000, 0x80000000},
        {0x7F7F, 0x7F7F0000}, {0x7F80, 0x7F800000}, {0xFF80, 0xFF800000},
        {0x7FC0, 0x7FC00000},
        {0x7F81, 0x7F810000}, /* bf16 widening is a shift: signalling stays signalling */
    };
    check_widen_cases("f16_to_f32_ref", ds_f16_to_f32_ref, f16, sizeof f16 / sizeof f16[0]);
    check_widen_cases("bf16_to_f32_ref", ds_bf16_to_f32_ref, bf16, sizeof bf16 / sizeof bf16[0]);
}

/* ---- exhaustive 16-bit round trips ---- */

/* Value of a non-NaN, finite fp16 pattern, decoded from the definition. */
static double f16_value(uint16_t h) {
    int e = (h >> 10) & 0x1F;
    int m = h & 0x3FF;
    double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    return (h & 0x8000) ? -v : v;
}

static double bf16_value(uint16_t h) {
    int e = (h >> 7) & 0xFF;
    int m = h & 0x7F;
    double v = e ? ldexp(128 + m, e - 134) : ldexp(m, -133);
    return (h & 0x8000) ? -v : v;
}

static void test_f16_exhaustive(void) {
    unsigned bad = 0;
    for (uint32_t i = 0; i < 0x10000; i++) {
        uint16_t h = (uint16_t)i;
        float f = ds_f16_to_f32_ref(h);
        uint32_t fb = fbits(f);
        uint16_t back = ds_f32_to_f16_ref(f);
        if ((fb >> 31) != (uint32_t)(h >> 15)) report32(&bad, "f16_to_f32_ref sign", h, fb, 0);
        if (f16_is_nan(h)) {
            uint32_t want = ((uint32_t)(h & 0x8000) << 16) | 0x7FC00000u | ((h & 0x3FFu) << 13);
            if (fb != want) report32(&bad, "f16_to_f32_ref", h, fb, want);
            /* Widening quietens, narrowing keeps the payload: sNaN comes back quiet. */
            if (back != (h | 0x0200)) report16(&bad, "f16 NaN round trip", h, back, h | 0x0200);
        } else if ((h & 0x7C00) == 0x7C00) {
            if (!isinf(f)) report32(&bad, "f16_to_f32_ref inf", h, fb, 0);
            if (back != h) report16(&bad, "f16 inf round trip", h, back, h);
        } else {
            if ((double)f != f16_value(h)) report32(&bad, "f16_to_f32_ref value", h, fb, 0);
            if (back != h) report16(&bad, "f16 round trip", h, back, h);
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_bf16_exhaustive(void) {
    unsigned bad = 0;
    for (uint32_t i = 0; i < 0x10000; i++) {
        uint16_t h = (uint16_t)i;
        float f = ds_bf16_to_f32_ref(h);
        uint32_t fb = fbits(f);
        uint16_t back = ds_f32_to_bf16_ref(f);
        if (fb != (uint32_t)h << 16) report32(&bad, "bf16_to_f32_ref", h, fb, (uint32_t)h << 16);
        if (bf16_is_nan(h)) {
            if (back != (h | 0x0040)) report16(&bad, "bf16 NaN round trip", h, back, h | 0x0040);
        } else {
            if ((h & 0x7F80) != 0x7F80 && (double)f != bf16_value(h))
                report32(&bad, "bf16_to_f32_ref value", h, fb, 0);
            if (back != h) report16(&bad, "bf16 round trip", h, back, h);
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
}

/* ---- independent nearest-even oracle ----
 * Values of the non-negative finite codes 0..max in increasing order, plus one
 * entry past max holding the first value of the next binade (2^16 for fp16, 2^128
 * for bf16) under the infinity code: IEEE RNE overflows exactly when rounding with
 * an unbounded exponent would reach that value. The oracle finds the two codes
 * bracketing |x| by binary search and picks the nearer, the even code on a tie.
 * Differences are exact in double (both operands have few significant bits and
 * nearby exponents), so the comparison has no rounding of its own. */
typedef struct {
    double *val;
    uint32_t count; /* finite codes + 1 */
} oracle_table;

static oracle_table make_table(double (*value)(uint16_t), uint16_t inf_code, double past_max) {
    oracle_table t = {malloc(((size_t)inf_code + 1) * sizeof(double)), (uint32_t)inf_code + 1};
    if (!t.val) return t;
    for (uint32_t c = 0; c < inf_code; c++) t.val[c] = value((uint16_t)c);
    t.val[inf_code] = past_max;
    return t;
}

static uint16_t oracle_round(const oracle_table *t, uint32_t bits) {
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    double v = fabs((double)bitsf(bits));
    if (v >= t->val[t->count - 1]) return (uint16_t)(sign | (t->count - 1));
    uint32_t lo = 0, hi = t->count - 1; /* invariant: val[lo] <= v < val[hi] */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (t->val[mid] <= v) lo = mid;
        else hi = mid;
    }
    double dlo = v - t->val[lo], dhi = t->val[hi] - v;
    uint32_t pick = dlo < dhi ? lo : dhi < dlo ? hi : (lo & 1u) ? hi : lo;
    return (uint16_t)(sign | pick);
}

/* Sign x exponent x mantissas with the low bits set just below, at and above every
 * bit position, with both parities of the bit above: every tie and near-tie for
 * every output precision, including the shifting subnormal ones. Also used as a
 * special-value array for the SIMD comparison (exponent 255 gives inf and NaNs
 * with many payloads, quiet and signalling). Returns a malloc'd array. */
static uint32_t *boundary_patterns(size_t *count) {
    uint32_t mants[6 * 23 + 4];
    size_t nm = 0;
    for (int k = 0; k < 23; k++) {
        uint32_t b = 1u << k, b3 = 3u << k;
        mants[nm++] = b;
        mants[nm++] = b - 1;
        mants[nm++] = b + 1;
        mants[nm++] = b3 & 0x7FFFFFu;
        mants[nm++] = (b3 - 1) & 0x7FFFFFu;
        mants[nm++] = (b3 + 1) & 0x7FFFFFu;
    }
    mants[nm++] = 0x7FFFFF;
    mants[nm++] = 0x7FFFFE;
    mants[nm++] = 0x400000;
    mants[nm++] = 0x3FFFFF;
    uint32_t *out = malloc(2 * 256 * nm * sizeof *out);
    if (!out) return NULL;
    size_t n = 0;
    for (uint32_t s = 0; s < 2; s++)
        for (uint32_t e = 0; e < 256; e++)
            for (size_t i = 0; i < nm; i++) out[n++] = (s << 31) | (e << 23) | mants[i];
    *count = n;
    return out;
}

#define ORACLE_RANDOM (1u << 21)

/* Compares a narrowing reference with the oracle (NaNs: with nan_rule) on the
 * boundary patterns, ORACLE_RANDOM uniform patterns and ORACLE_RANDOM patterns
 * whose exponent lies in [exp_lo, exp_hi] (where the interesting roundings are). */
static void check_against_oracle(const char *what, uint16_t (*ref)(float), const oracle_table *t,
                                 uint16_t (*nan_rule)(uint32_t), uint32_t exp_lo, uint32_t exp_hi) {
    CU_ASSERT_PTR_NOT_NULL_FATAL(t->val);
    size_t nb = 0;
    uint32_t *pats = boundary_patterns(&nb);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pats);
    unsigned bad = 0;
    size_t total = nb + 2 * (size_t)ORACLE_RANDOM;
    for (size_t i = 0; i < total; i++) {
        uint32_t x;
        if (i < nb) {
            x = pats[i];
        } else if (i < nb + ORACLE_RANDOM) {
            x = rnd32();
        } else {
            x = rnd32();
            uint32_t e = exp_lo + ((x >> 23) & 0xFF) % (exp_hi - exp_lo + 1);
            x = (x & 0x807FFFFFu) | (e << 23);
        }
        uint16_t got = ref(bitsf(x));
        uint16_t want = f32_is_nan(x) ? nan_rule(x) : oracle_round(t, x);
        if (got != want) report16(&bad, what, x, got, want);
    }
    free(pats);
    CU_ASSERT_EQUAL(bad, 0);
}

static uint16_t f16_nan_rule(uint32_t x) {
    return (uint16_t)(((x >> 16) & 0x8000u) | 0x7E00u | ((x >> 13) & 0x3FFu));
}

static uint16_t bf16_nan_rule(uint32_t x) { return (uint16_t)((x >> 16) | 0x0040u); }

static void test_f16_oracle(void) {
    oracle_table t = make_table(f16_value, 0x7C00, 65536.0);
    /* fp32 exponents 2^-27 .. 2^17 span underflow to zero through overflow. */
    check_against_oracle("f16_ref vs oracle", ds_f32_to_f16_ref, &t, f16_nan_rule, 127 - 27,
                         127 + 17);
    free(t.val);
}

static void test_bf16_oracle(void) {
    oracle_table t = make_table(bf16_value, 0x7F80, ldexp(1.0, 128));
    /* bf16 shares fp32's exponent range: bias towards denormals and the top. */
    check_against_oracle("bf16_ref vs oracle", ds_f32_to_bf16_ref, &t, bf16_nan_rule, 0, 254);
    free(t.val);
}

/* ---- SIMD paths vs reference ---- */

#define CANARY16 0xA5A5u
#define CANARY32 0xA5A5A5A5u
#define PAD 16 /* elements of canary after the output */

static float *g_f32_src; /* scratch, sized for the largest array */
static uint16_t *g_u16_src;
static uint16_t *g_u16_out, *g_u16_want;
static uint32_t *g_u32_out, *g_u32_want;

/* Runs all 4 dispatched casts on f32[0..n) / u16[0..n) (already offset as the
 * caller wants) into outputs offset by dst_off, and compares with the references
 * bit for bit, also checking the canaries around each output. */
static void compare_one(const char *impl, const float *f32, const uint16_t *u16, size_t n,
                        size_t dst_off, unsigned *bad) {
    uint16_t *o16 = g_u16_out + dst_off;
    float *o32 = (float *)(g_u32_out + dst_off);

    static const char *const names[2] = {"f32_to_bf16", "f32_to_f16"};
    for (int which = 0; which < 2; which++) {
        for (size_t i = 0; i < n + dst_off + PAD; i++) g_u16_out[i] = CANARY16;
        if (which == 0) {
            ds_cast_f32_to_bf16(f32, o16, n);
            ds_cast_f32_to_bf16_ref(f32, g_u16_want, n);
        } else {
            ds_cast_f32_to_f16(f32, o16, n);
            ds_cast_f32_to_f16_ref(f32, g_u16_want, n);
        }
        for (size_t i = 0; i < n; i++) {
            if (o16[i] != g_u16_want[i]) {
                if ((*bad)++ < MAX_REPORT)
                    fprintf(stderr, "\n  %s %s(0x%08X) n=%zu i=%zu: got 0x%04X, ref 0x%04X", impl,
                            names[which], fbits(f32[i]), n, i, o16[i], g_u16_want[i]);
            }
        }
        for (size_t i = 0; i < dst_off; i++)
            if (g_u16_out[i] != CANARY16 && (*bad)++ < MAX_REPORT)
                fprintf(stderr, "\n  %s %s n=%zu: wrote before dst", impl, names[which], n);
        for (size_t i = n; i < n + PAD; i++)
            if (o16[i] != CANARY16 && (*bad)++ < MAX_REPORT)
                fprintf(stderr, "\n  %s %s n=%zu: wrote past dst[n] at +%zu", impl, names[which], n,
                        i - n);
    }

    static const char *const wnames[2] = {"bf16_to_f32", "f16_to_f32"};
    for (int which = 0; which < 2; which++) {
        for (size_t i = 0; i < n + dst_off + PAD; i++) g_u32_out[i] = CANARY32;
        float *want = (float *)g_u32_want;
        if (which == 0) {
            ds_cast_bf16_to_f32(u16, o32, n);
            ds_cast_bf16_to_f32_ref(u16, want, n);
        } else {
            ds_cast_f16_to_f32(u16, o32, n);
            ds_cast_f16_to_f32_ref(u16, want, n);
        }
        const uint32_t *got = g_u32_out + dst_off;
        for (size_t i = 0; i < n; i++) {
            if (got[i] != g_u32_want[i] && (*bad)++ < MAX_REPORT)
                fprintf(stderr, "\n  %s %s(0x%04X) n=%zu i=%zu: got 0x%08X, ref 0x%08X", impl,
                        wnames[which], u16[i], n, i, got[i], g_u32_want[i]);
        }
        for (size_t i = 0; i < dst_off; i++)
            if (g_u32_out[i] != CANARY32 && (*bad)++ < MAX_REPORT)
                fprintf(stderr, "\n  %s %s n=%zu: wrote before dst", impl, wnames[which], n);
        for (size_t i = n; i < n + PAD; i++)
            if (got[i] != CANARY32 && (*bad)++ < MAX_REPORT)
                fprintf(stderr, "\n  %s %s n=%zu: wrote past dst[n] at +%zu", impl, wnames[which],
                        n, i - n);
    }
}

/* Random fp32 pattern: a mix of uniform bits, values near the fp16 range (where
 * subnormal and overflow rounding happen) and exact ties. */
static uint32_t random_f32_pattern(void) {
    uint32_t x = rnd32();
    switch (x & 3) {
    case 0:
    case 1: return rnd32();
    case 2: {
        uint32_t e = 127 - 27 + (x >> 8) % 45;
        return (rnd32() & 0x807FFFFFu) | (e << 23);
    }
    default: {
        uint32_t y = rnd32();
        /* Clear the dropped bits and set the half bit: a tie for bf16 or fp16. */
        return (x & 4) ? ((y & 0xFFFF0000u) | 0x8000u) : ((y & 0xFFFFE000u) | 0x1000u);
    }
    }
}

/* Runs compare_one() on copies of the n-element inputs at src offsets 0 and 1 and
 * dst offsets 0 and 1 (offset 1 is misaligned for every vector width). */
static void compare_all_offsets(const char *impl, const uint32_t *f32bits, const uint16_t *u16,
                                size_t n, unsigned *bad) {
    for (size_t so = 0; so < 2; so++) {
        memcpy(g_f32_src + so, f32bits, n * sizeof(float));
        memcpy(g_u16_src + so, u16, n * sizeof(uint16_t));
        for (size_t dof = 0; dof < 2; dof++)
            compare_one(impl, g_f32_src + so, g_u16_src + so, n, dof, bad);
    }
}

#define MAX_N 100003

/* Scratch elements: room for the longest input (random, all 16-bit patterns or
 * the boundary patterns) plus the offset and canaries. */
static size_t scratch_elems(void) {
    size_t m = 2 * 256 * (6 * 23 + 4); /* boundary_patterns() count */
    if (m < MAX_N) m = MAX_N;
    if (m < 0x10000) m = 0x10000;
    return m + 2 * PAD;
}

/* 64-byte aligned (so offset 0 is aligned for every vector width and offset 1
 * misaligned for all of them); aligned_alloc wants a multiple of the alignment. */
static void *alloc64(size_t bytes) { return aligned_alloc(64, (bytes + 63) & ~(size_t)63); }

static void simd_vs_ref(const char *impl) {
    if (ds_cast_force_impl(impl) != 0) {
        skip_impl(impl);
        return;
    }
    CU_ASSERT_STRING_EQUAL(ds_cast_impl(), impl);

    size_t cap = scratch_elems();
    g_f32_src = alloc64(cap * sizeof(float));
    g_u16_src = alloc64(cap * sizeof(uint16_t));
    g_u16_out = alloc64(cap * sizeof(uint16_t));
    g_u16_want = malloc(cap * sizeof(uint16_t));
    g_u32_out = alloc64(cap * sizeof(uint32_t));
    g_u32_want = malloc(cap * sizeof(uint32_t));
    uint32_t *in32 = malloc(cap * sizeof(uint32_t));
    uint16_t *in16 = malloc(cap * sizeof(uint16_t));
    CU_ASSERT_FATAL(g_f32_src && g_u16_src && g_u16_out && g_u16_want && g_u32_out && g_u32_want &&
                    in32 && in16);

    unsigned bad = 0;
    /* Random arrays, odd lengths for the tails. */
    static const size_t lens[] = {0, 1, 7, 8, 15, 16, 17, 31, 33, 1000, MAX_N};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        size_t n = lens[li];
        for (size_t i = 0; i < n; i++) {
            in32[i] = random_f32_pattern();
            in16[i] = (uint16_t)rnd32();
        }
        compare_all_offsets(impl, in32, in16, n, &bad);
    }

    /* Every 16-bit pattern for the widening casts (all fp16/bf16 NaN payloads,
     * subnormals, infinities); the same values as fp32 bits shifted up for the
     * narrowing ones. */
    for (uint32_t i = 0; i < 0x10000; i++) {
        in16[i] = (uint16_t)i;
        in32[i] = (i << 16) | (rnd32() & 0xFFFFu);
    }
    compare_all_offsets(impl, in32, in16, 0x10000, &bad);

    /* Boundary patterns: ties at every bit, subnormals, inf, NaN payloads
     * (signalling ones included) for the narrowing casts. */
    size_t nb = 0;
    uint32_t *pats = boundary_patterns(&nb);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pats);
    for (size_t i = 0; i < nb; i++) in16[i] = (uint16_t)(pats[i] ^ (pats[i] >> 16));
    compare_all_offsets(impl, pats, in16, nb, &bad);
    free(pats);

    CU_ASSERT_EQUAL(bad, 0);
    free(g_f32_src);
    free(g_u16_src);
    free(g_u16_out);
    free(g_u16_want);
    free(g_u32_out);
    free(g_u32_want);
    free(in32);
    free(in16);
    ds_cast_force_impl(expected_auto_impl());
}

static void test_avx2_vs_ref(void) { simd_vs_ref("avx2"); }
static void test_avx512_vs_ref(void) { simd_vs_ref("avx512"); }

/* ---- concurrency: casts racing with ds_cast_force_impl ---- */

#define RACE_THREADS 4
#define RACE_ITERS 200
#define RACE_N 257

static float g_race_in[RACE_N];
static uint16_t g_race_want[RACE_N];

static void *race_worker(void *arg) {
    uintptr_t *bad = arg;
    uint16_t out[RACE_N];
    for (int it = 0; it < RACE_ITERS; it++) {
        ds_cast_f32_to_bf16(g_race_in, out, RACE_N);
        if (memcmp(out, g_race_want, sizeof out) != 0) (*bad)++;
    }
    return NULL;
}

/* Whatever the switching thread does, every call must use some complete
 * implementation, and they all agree bit for bit. */
static void test_concurrent_dispatch(void) {
    for (int i = 0; i < RACE_N; i++) g_race_in[i] = bitsf(random_f32_pattern());
    ds_cast_f32_to_bf16_ref(g_race_in, g_race_want, RACE_N);
    pthread_t th[RACE_THREADS];
    uintptr_t bad[RACE_THREADS] = {0};
    int started = 0;
    for (int i = 0; i < RACE_THREADS; i++)
        if (pthread_create(&th[i], NULL, race_worker, &bad[i]) == 0) started++;
    CU_ASSERT_EQUAL(started, RACE_THREADS);
    static const char *const impls[] = {"ref", "avx2", "avx512"};
    for (int it = 0; it < RACE_ITERS; it++) ds_cast_force_impl(impls[it % 3]);
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(bad[i], 0);
    }
    CU_ASSERT_EQUAL(ds_cast_force_impl(expected_auto_impl()), 0);
}

int main(void) {
    static const tu_test tests[] = {
        {"dispatcher picks the best supported implementation", test_dispatch},
        {"bf16 reference: hand-picked values", test_bf16_ref_values},
        {"fp16 reference: hand-picked values", test_f16_ref_values},
        {"widening references: hand-picked values", test_widen_ref_values},
        {"fp16: all 65536 patterns widen exactly and round-trip", test_f16_exhaustive},
        {"bf16: all 65536 patterns widen exactly and round-trip", test_bf16_exhaustive},
        {"fp16 reference vs nearest-even oracle", test_f16_oracle},
        {"bf16 reference vs nearest-even oracle", test_bf16_oracle},
        {"avx2 path vs reference, bit for bit", test_avx2_vs_ref},
        {"avx512 path vs reference, bit for bit", test_avx512_vs_ref},
        {"casts racing with ds_cast_force_impl", test_concurrent_dispatch},
        {NULL, NULL},
    };
    int rc = tu_main("cast", tests);
    if (g_skipped[0])
        printf("\nSKIPPED (not supported by this CPU, untested): %s\n", g_skipped);
    return rc;
}
