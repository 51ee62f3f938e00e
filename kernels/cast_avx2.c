/*
 * cast_avx2.c — AVX2 + F16C versions of the casts in cast.h. Compiled with
 * -mavx2 -mf16c -mfma; only ever called through the dispatcher in cast.c after it
 * has checked the CPU, so nothing here may run on older hardware.
 *
 * Each function must be bit-identical to its *_ref counterpart for every input
 * (tests/test_cast.c checks this). Tails shorter than a vector go through the
 * scalar reference rather than masked loads: simpler, and obviously identical.
 * Unaligned loads/stores throughout; callers pass arbitrary element offsets.
 */
#include "cast.h"

#include <immintrin.h>

/* Typed from the references so a change in cast.h breaks the build here too. */
__typeof__(ds_cast_f32_to_bf16_ref) ds_cast_f32_to_bf16_avx2;
__typeof__(ds_cast_f32_to_f16_ref) ds_cast_f32_to_f16_avx2;
__typeof__(ds_cast_bf16_to_f32_ref) ds_cast_bf16_to_f32_avx2;
__typeof__(ds_cast_f16_to_f32_ref) ds_cast_f16_to_f32_avx2;

/* 8 floats -> 8 bf16 in the low 16 bits of each 32-bit lane. Same integer RNE as
 * ds_f32_to_bf16_ref, NaN lanes replaced by (bits >> 16) | 0x40. */
static inline __m256i bf16_round8(__m256i x) {
    const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
    const __m256i inf = _mm256_set1_epi32(0x7F800000);
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i bias = _mm256_set1_epi32(0x7FFF);
    const __m256i quiet = _mm256_set1_epi32(0x40);

    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), one);
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(bias, lsb)), 16);
    /* |x| fits in 31 bits, so the signed compare is an unsigned one here. */
    __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs_mask), inf);
    __m256i nan = _mm256_or_si256(_mm256_srli_epi32(x, 16), quiet);
    return _mm256_blendv_epi8(r, nan, is_nan);
}

void ds_cast_f32_to_bf16_avx2(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a = bf16_round8(_mm256_loadu_si256((const __m256i *)(src + i)));
        __m256i b = bf16_round8(_mm256_loadu_si256((const __m256i *)(src + i + 8)));
        /* Lanes hold 0..0xFFFF, so unsigned saturation never clips. packus works per
         * 128-bit half (a0 b0 a1 b1 in 64-bit units); the permute restores order. */
        __m256i p = _mm256_packus_epi32(a, b);
        p = _mm256_permute4x64_epi64(p, _MM_SHUFFLE(3, 1, 2, 0));
        _mm256_storeu_si256((__m256i *)(dst + i), p);
    }
    if (i + 8 <= n) {
        __m256i a = bf16_round8(_mm256_loadu_si256((const __m256i *)(src + i)));
        __m128i p = _mm_packus_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
        _mm_storeu_si128((__m128i *)(dst + i), p);
        i += 8;
    }
    ds_cast_f32_to_bf16_ref(src + i, dst + i, n - i);
}

void ds_cast_f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    /* vcvtps2ph with an explicit RNE immediate ignores MXCSR.RC. Its NaN output
     * (quiet bit set, top payload kept) is what the reference implements. */
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        __m128i b = _mm256_cvtps_ph(_mm256_loadu_ps(src + i + 8), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(dst + i), a);
        _mm_storeu_si128((__m128i *)(dst + i + 8), b);
    }
    if (i + 8 <= n) {
        __m128i a = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(dst + i), a);
        i += 8;
    }
    ds_cast_f32_to_f16_ref(src + i, dst + i, n - i);
}

void ds_cast_bf16_to_f32_avx2(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(h)), 16);
        __m256i hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1)), 16);
        _mm256_storeu_si256((__m256i *)(dst + i), lo);
        _mm256_storeu_si256((__m256i *)(dst + i + 8), hi);
    }
    if (i + 8 <= n) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        i += 8;
    }
    ds_cast_bf16_to_f32_ref(src + i, dst + i, n - i);
}

void ds_cast_f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i)));
        __m256 b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i + 8)));
        _mm256_storeu_ps(dst + i, a);
        _mm256_storeu_ps(dst + i + 8, b);
    }
    if (i + 8 <= n) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
        i += 8;
    }
    ds_cast_f16_to_f32_ref(src + i, dst + i, n - i);
}
