/*
 * cast_avx512.c — AVX-512 (F/BW/VL/DQ + F16C) versions of the casts in cast.h.
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mf16c; only called
 * through the dispatcher in cast.c after it has checked the CPU.
 *
 * Deliberately the AVX2 algorithm at 16 lanes and nothing cleverer: this path is
 * only exercised by the tests on AVX-512 hardware, so it should be correct by
 * inspection. Bit-identical to the *_ref functions; tails go through the reference.
 */
#include "cast.h"

#include <immintrin.h>

/* Typed from the references so a change in cast.h breaks the build here too. */
__typeof__(ds_cast_f32_to_bf16_ref) ds_cast_f32_to_bf16_avx512;
__typeof__(ds_cast_f32_to_f16_ref) ds_cast_f32_to_f16_avx512;
__typeof__(ds_cast_bf16_to_f32_ref) ds_cast_bf16_to_f32_avx512;
__typeof__(ds_cast_f16_to_f32_ref) ds_cast_f16_to_f32_avx512;

void ds_cast_f32_to_bf16_avx512(const float *src, uint16_t *dst, size_t n) {
    const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
    const __m512i inf = _mm512_set1_epi32(0x7F800000);
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i bias = _mm512_set1_epi32(0x7FFF);
    const __m512i quiet = _mm512_set1_epi32(0x40);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i x = _mm512_loadu_si512((const void *)(src + i));
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), one);
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(x, _mm512_add_epi32(bias, lsb)), 16);
        /* |x| fits in 31 bits, so the signed compare is an unsigned one here. */
        __mmask16 is_nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(x, abs_mask), inf);
        __m512i nan = _mm512_or_si512(_mm512_srli_epi32(x, 16), quiet);
        r = _mm512_mask_mov_epi32(r, is_nan, nan);
        /* vpmovdw truncates each lane to its low 16 bits, which hold the result. */
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(r));
    }
    ds_cast_f32_to_bf16_ref(src + i, dst + i, n - i);
}

void ds_cast_f32_to_f16_avx512(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    /* Explicit RNE immediate: independent of MXCSR.RC. */
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_si256((__m256i *)(dst + i), h);
    }
    ds_cast_f32_to_f16_ref(src + i, dst + i, n - i);
}

void ds_cast_bf16_to_f32_avx512(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(src + i));
        __m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
        _mm512_storeu_si512((void *)(dst + i), w);
    }
    ds_cast_bf16_to_f32_ref(src + i, dst + i, n - i);
}

void ds_cast_f16_to_f32_avx512(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(src + i));
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(h));
    }
    ds_cast_f16_to_f32_ref(src + i, dst + i, n - i);
}
