/*
 * zchunk.c — byte-plane shuffle + zstd per chunk (one frame, or one per plane),
 * and the hostile-input decoder (see zchunk.h).
 */
#include "zchunk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* For ZSTD_d_forceIgnoreChecksum (ds_zchunk_dec_set_verified): a parameter value
 * passed to the stable ZSTD_DCtx_setParameter, refused by a library without it. */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>
#include <zstd_errors.h>

/* The hash table (log2 entries) of plane frames at level 1; 0 leaves zstd's. */
#ifndef DS_ZCHUNK_PLANE_HASH_LOG
#define DS_ZCHUNK_PLANE_HASH_LOG 6
#endif

/* The decoder's window limit: a frame of DS_ZCHUNK_MAX_RAW bytes needs at most
 * this window; anything asking for more is refused by zstd itself. */
#define DEC_WINDOW_LOG_MAX 28

const char *ds_zchunk_kind_name(ds_zchunk_kind k) {
    return k == DS_ZCHUNK_ZSTD ? "zstd" : k == DS_ZCHUNK_PLANES ? "planes" : "raw";
}

int ds_zchunk_kind_parse(const char *s) {
    if (!s) return -1;
    if (!strcmp(s, "raw")) return DS_ZCHUNK_RAW;
    if (!strcmp(s, "zstd")) return DS_ZCHUNK_ZSTD;
    if (!strcmp(s, "planes")) return DS_ZCHUNK_PLANES;
    return -1;
}

bool ds_zchunk_width_ok(int w) { return w == 1 || w == 2 || w == 4 || w == 8; }

bool ds_zchunk_level_ok(int level) { return level >= 1 && level <= ZSTD_maxCLevel(); }

/* ---- shuffle ---- */

#if defined(__SSE2__)
#include <emmintrin.h>
/* SSE2 (every x86-64) versions of the widths 2 and 4 loops: 16 elements per step;
 * the elements past the last whole step go through the plain loops. Checked
 * against the plain versions in tests/test_zchunk.c. Return how many elements
 * they did. */
static size_t shuffle_sse2(uint8_t *dst, const uint8_t *src, size_t m, size_t w) {
    size_t i = 0;
    const __m128i lo = _mm_set1_epi16(0x00ff), lo32 = _mm_set1_epi32(0xff);
    if (w == 2) {
        for (; i + 16 <= m; i += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(src + 2 * i));
            __m128i b = _mm_loadu_si128((const __m128i *)(src + 2 * i + 16));
            __m128i e = _mm_packus_epi16(_mm_and_si128(a, lo), _mm_and_si128(b, lo));
            __m128i o = _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8));
            _mm_storeu_si128((__m128i *)(dst + i), e);
            _mm_storeu_si128((__m128i *)(dst + m + i), o);
        }
    } else if (w == 4) {
        for (; i + 16 <= m; i += 16) {
            __m128i v[4];
            for (int k = 0; k < 4; k++) v[k] = _mm_loadu_si128((const __m128i *)(src + 4 * i + 16 * k));
            for (int j = 0; j < 4; j++) {
                __m128i t[4];
                for (int k = 0; k < 4; k++) t[k] = _mm_and_si128(_mm_srli_epi32(v[k], 8 * j), lo32);
                __m128i a = _mm_packs_epi32(t[0], t[1]), b = _mm_packs_epi32(t[2], t[3]);
                _mm_storeu_si128((__m128i *)(dst + (size_t)j * m + i), _mm_packus_epi16(a, b));
            }
        }
    }
    return i;
}

/* Elements [0, cnt) of planes pl[j] (j < w) into dst, interleaved. */
static size_t unshuffle_sse2(uint8_t *dst, const uint8_t *const *pl, size_t cnt, size_t w) {
    size_t i = 0;
    if (w == 2) {
        for (; i + 16 <= cnt; i += 16) {
            __m128i p0 = _mm_loadu_si128((const __m128i *)(pl[0] + i));
            __m128i p1 = _mm_loadu_si128((const __m128i *)(pl[1] + i));
            _mm_storeu_si128((__m128i *)(dst + 2 * i), _mm_unpacklo_epi8(p0, p1));
            _mm_storeu_si128((__m128i *)(dst + 2 * i + 16), _mm_unpackhi_epi8(p0, p1));
        }
    } else if (w == 4) {
        for (; i + 16 <= cnt; i += 16) {
            __m128i p0 = _mm_loadu_si128((const __m128i *)(pl[0] + i));
            __m128i p1 = _mm_loadu_si128((const __m128i *)(pl[1] + i));
            __m128i p2 = _mm_loadu_si128((const __m128i *)(pl[2] + i));
            __m128i p3 = _mm_loadu_si128((const __m128i *)(pl[3] + i));
            __m128i a = _mm_unpacklo_epi8(p0, p1), b = _mm_unpackhi_epi8(p0, p1); /* bytes 0,1 */
            __m128i c = _mm_unpacklo_epi8(p2, p3), d = _mm_unpackhi_epi8(p2, p3); /* bytes 2,3 */
            _mm_storeu_si128((__m128i *)(dst + 4 * i), _mm_unpacklo_epi16(a, c));
            _mm_storeu_si128((__m128i *)(dst + 4 * i + 16), _mm_unpackhi_epi16(a, c));
            _mm_storeu_si128((__m128i *)(dst + 4 * i + 32), _mm_unpacklo_epi16(b, d));
            _mm_storeu_si128((__m128i *)(dst + 4 * i + 48), _mm_unpackhi_epi16(b, d));
        }
    }
    return i;
}
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
/* The x86-64 paths picked at run time below: SSSE3 shuffle, AVX2 streaming unshuffle. */
#define DS_HAVE_X86_PATHS 1
/* SSSE3 (picked at run time) width-4 shuffle: one byte shuffle groups each 16-byte
 * vector's bytes by plane (4 of each), and a 4 x 4 transpose of 32-bit lanes over
 * four vectors gives 16 bytes of each plane. About 4x the SSE2 loop (10 vs 2.4 GB/s
 * on 4 MiB, bench/RESULTS.md). */
__attribute__((target("ssse3"))) static size_t shuffle4_ssse3(uint8_t *dst, const uint8_t *src, size_t m) {
    const __m128i g = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    size_t i = 0;
    for (; i + 16 <= m; i += 16) {
        __m128i a = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(src + 4 * i)), g);
        __m128i b = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(src + 4 * i + 16)), g);
        __m128i c = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(src + 4 * i + 32)), g);
        __m128i d = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(src + 4 * i + 48)), g);
        __m128i ab0 = _mm_unpacklo_epi32(a, b), ab1 = _mm_unpackhi_epi32(a, b); /* planes 0,1 | 2,3 of a, b */
        __m128i cd0 = _mm_unpacklo_epi32(c, d), cd1 = _mm_unpackhi_epi32(c, d);
        _mm_storeu_si128((__m128i *)(dst + i), _mm_unpacklo_epi64(ab0, cd0));
        _mm_storeu_si128((__m128i *)(dst + m + i), _mm_unpackhi_epi64(ab0, cd0));
        _mm_storeu_si128((__m128i *)(dst + 2 * m + i), _mm_unpacklo_epi64(ab1, cd1));
        _mm_storeu_si128((__m128i *)(dst + 3 * m + i), _mm_unpackhi_epi64(ab1, cd1));
    }
    return i;
}
/* AVX2 (picked at run time) widths 2 and 4 unshuffle with non-temporal stores, for
 * a destination not read again soon (ds_zplanes_read_stream): 32 elements a step,
 * dst 32-byte aligned. The stores go around the cache, so writing a large
 * destination does not first read each of its lines in: about 1.7x the SSE2 loop
 * into a destination far larger than the caches (bench/RESULTS.md). Each 128-bit
 * lane of the byte and word unpacks holds elements 0-15 and 16-31 of the step, and
 * the lane permutes put them back in order. */
__attribute__((target("avx2"))) static size_t unshuffle_stream_avx2(uint8_t *dst, const uint8_t *const *pl,
                                                                    size_t cnt, size_t w) {
    size_t i = 0;
    if (w == 2) {
        for (; i + 32 <= cnt; i += 32) {
            __m256i p0 = _mm256_loadu_si256((const __m256i *)(pl[0] + i));
            __m256i p1 = _mm256_loadu_si256((const __m256i *)(pl[1] + i));
            __m256i lo = _mm256_unpacklo_epi8(p0, p1), hi = _mm256_unpackhi_epi8(p0, p1);
            _mm256_stream_si256((__m256i *)(dst + 2 * i), _mm256_permute2x128_si256(lo, hi, 0x20));
            _mm256_stream_si256((__m256i *)(dst + 2 * i + 32), _mm256_permute2x128_si256(lo, hi, 0x31));
        }
    } else if (w == 4) {
        for (; i + 32 <= cnt; i += 32) {
            __m256i p0 = _mm256_loadu_si256((const __m256i *)(pl[0] + i));
            __m256i p1 = _mm256_loadu_si256((const __m256i *)(pl[1] + i));
            __m256i p2 = _mm256_loadu_si256((const __m256i *)(pl[2] + i));
            __m256i p3 = _mm256_loadu_si256((const __m256i *)(pl[3] + i));
            __m256i a = _mm256_unpacklo_epi8(p0, p1), b = _mm256_unpackhi_epi8(p0, p1);
            __m256i c = _mm256_unpacklo_epi8(p2, p3), d = _mm256_unpackhi_epi8(p2, p3);
            __m256i r0 = _mm256_unpacklo_epi16(a, c), r1 = _mm256_unpackhi_epi16(a, c); /* 0-3|16-19, 4-7|20-23 */
            __m256i r2 = _mm256_unpacklo_epi16(b, d), r3 = _mm256_unpackhi_epi16(b, d); /* 8-11|24-27, 12-15|28-31 */
            _mm256_stream_si256((__m256i *)(dst + 4 * i), _mm256_permute2x128_si256(r0, r1, 0x20));
            _mm256_stream_si256((__m256i *)(dst + 4 * i + 32), _mm256_permute2x128_si256(r2, r3, 0x20));
            _mm256_stream_si256((__m256i *)(dst + 4 * i + 64), _mm256_permute2x128_si256(r0, r1, 0x31));
            _mm256_stream_si256((__m256i *)(dst + 4 * i + 96), _mm256_permute2x128_si256(r2, r3, 0x31));
        }
    }
    _mm_sfence(); /* the stores are weakly ordered: done before anyone is told */
    return i;
}
#endif

/* The width-4 shuffle in use: 1 = SSSE3, 0 = SSE2 / plain; -1 until first asked. */
static int g_shuffle_ssse3 = -1;

int ds_zchunk_shuffle_impl(const char *name) {
    if (!name) {
#ifdef DS_HAVE_X86_PATHS
        __atomic_store_n(&g_shuffle_ssse3, __builtin_cpu_supports("ssse3") ? 1 : 0, __ATOMIC_RELAXED);
#else
        __atomic_store_n(&g_shuffle_ssse3, 0, __ATOMIC_RELAXED);
#endif
        return 0;
    }
    if (!strcmp(name, "sse2")) {
        __atomic_store_n(&g_shuffle_ssse3, 0, __ATOMIC_RELAXED);
        return 0;
    }
#ifdef DS_HAVE_X86_PATHS
    if (!strcmp(name, "ssse3") && __builtin_cpu_supports("ssse3")) {
        __atomic_store_n(&g_shuffle_ssse3, 1, __ATOMIC_RELAXED);
        return 0;
    }
#endif
    return -1;
}

static bool use_ssse3(void) {
    int v = __atomic_load_n(&g_shuffle_ssse3, __ATOMIC_RELAXED);
    if (v < 0) {
        ds_zchunk_shuffle_impl(NULL);
        v = __atomic_load_n(&g_shuffle_ssse3, __ATOMIC_RELAXED);
    }
    return v == 1;
}

#if !defined(__SSE2__)
static size_t shuffle_sse2(uint8_t *dst, const uint8_t *src, size_t m, size_t w) {
    (void)dst, (void)src, (void)m, (void)w;
    return 0;
}
static size_t unshuffle_sse2(uint8_t *dst, const uint8_t *const *pl, size_t cnt, size_t w) {
    (void)dst, (void)pl, (void)cnt, (void)w;
    return 0;
}
#endif

void ds_zchunk_shuffle_ref(uint8_t *dst, const uint8_t *src, size_t n, int width) {
    size_t w = (size_t)width, m = w ? n / w : 0;
    if (w <= 1) {
        memcpy(dst, src, n);
        return;
    }
    for (size_t j = 0; j < w; j++)
        for (size_t i = 0; i < m; i++) dst[j * m + i] = src[i * w + j];
    memcpy(dst + m * w, src + m * w, n - m * w);
}

void ds_zchunk_unshuffle_ref(uint8_t *dst, const uint8_t *src, size_t n, int width) {
    size_t w = (size_t)width, m = w ? n / w : 0;
    if (w <= 1) {
        memcpy(dst, src, n);
        return;
    }
    for (size_t j = 0; j < w; j++)
        for (size_t i = 0; i < m; i++) dst[i * w + j] = src[j * m + i];
    memcpy(dst + m * w, src + m * w, n - m * w);
}

void ds_zchunk_shuffle(uint8_t *dst, const uint8_t *src, size_t n, int width) {
    size_t w = (size_t)width, m = w ? n / w : 0;
    if (w <= 1) {
        memcpy(dst, src, n);
        return;
    }
    /* Fixed widths as their own loops, so the compiler can unroll them. */
    size_t i0;
#ifdef DS_HAVE_X86_PATHS
    if (w == 4 && use_ssse3()) i0 = shuffle4_ssse3(dst, src, m);
    else
#endif
        i0 = shuffle_sse2(dst, src, m, w);
    if (w == 2) {
        uint8_t *p0 = dst, *p1 = dst + m;
        for (size_t i = i0; i < m; i++) {
            p0[i] = src[2 * i];
            p1[i] = src[2 * i + 1];
        }
    } else if (w == 4) {
        uint8_t *p0 = dst, *p1 = dst + m, *p2 = dst + 2 * m, *p3 = dst + 3 * m;
        for (size_t i = i0; i < m; i++) {
            p0[i] = src[4 * i];
            p1[i] = src[4 * i + 1];
            p2[i] = src[4 * i + 2];
            p3[i] = src[4 * i + 3];
        }
    } else {
        for (size_t j = 0; j < w; j++)
            for (size_t i = 0; i < m; i++) dst[j * m + i] = src[i * w + j];
    }
    memcpy(dst + m * w, src + m * w, n - m * w);
}

/* Elements [i0, cnt) of the planes pl[j] (j < w, w > 1) into dst, interleaved:
 * fixed widths as their own loops, so the compiler can unroll them. */
static void unshuffle_plain(uint8_t *dst, const uint8_t *const *pl, size_t i0, size_t cnt, size_t w) {
    if (w == 2) {
        const uint8_t *p0 = pl[0], *p1 = pl[1];
        for (size_t i = i0; i < cnt; i++) {
            dst[2 * i] = p0[i];
            dst[2 * i + 1] = p1[i];
        }
    } else if (w == 4) {
        const uint8_t *p0 = pl[0], *p1 = pl[1], *p2 = pl[2], *p3 = pl[3];
        for (size_t i = i0; i < cnt; i++) {
            dst[4 * i] = p0[i];
            dst[4 * i + 1] = p1[i];
            dst[4 * i + 2] = p2[i];
            dst[4 * i + 3] = p3[i];
        }
    } else {
        for (size_t j = 0; j < w; j++)
            for (size_t i = i0; i < cnt; i++) dst[i * w + j] = pl[j][i];
    }
}

/* Elements [0, cnt) of the planes pl[j] (j < w, w > 1) into dst, interleaved. */
static void unshuffle_elems(uint8_t *dst, const uint8_t *const *pl, size_t cnt, size_t w) {
    unshuffle_plain(dst, pl, unshuffle_sse2(dst, pl, cnt, w), cnt, w);
}

/* As unshuffle_elems, with the non-temporal stores of unshuffle_stream_avx2 where
 * the CPU has AVX2 and dst can be brought to a 32-byte boundary by whole elements
 * (the elements before it go through the plain loop). */
static void unshuffle_elems_stream(uint8_t *dst, const uint8_t *const *pl, size_t cnt, size_t w) {
#ifdef DS_HAVE_X86_PATHS
    size_t mis = (size_t)((uintptr_t)dst & 31);
    if ((w == 2 || w == 4) && mis % w == 0 && __builtin_cpu_supports("avx2")) {
        size_t head = DS_MIN(cnt, ((32 - mis) & 31) / w);
        unshuffle_plain(dst, pl, 0, head, w);
        const uint8_t *at[4];
        for (size_t j = 0; j < w; j++) at[j] = pl[j] + head;
        size_t done = head + unshuffle_stream_avx2(dst + head * w, at, cnt - head, w);
        unshuffle_plain(dst, pl, done, cnt, w);
        return;
    }
#endif
    unshuffle_elems(dst, pl, cnt, w);
}

/* The view of a shuffled chunk held whole in src[0..n). */
static void contiguous_view(ds_zplanes *v, const uint8_t *src, size_t n, int width) {
    size_t w = width > 1 ? (size_t)width : 1, m = w > 1 ? n / w : n;
    v->n = n;
    v->m = m;
    v->width = (int)w;
    for (size_t j = 0; j < w; j++) v->plane[j] = src + j * m;
    v->tail = src + m * w;
}

void ds_zchunk_unshuffle(uint8_t *dst, const uint8_t *src, size_t n, int width) {
    if (width <= 1) {
        memcpy(dst, src, n);
        return;
    }
    ds_zplanes v;
    contiguous_view(&v, src, n, width);
    unshuffle_elems(dst, v.plane, v.m, (size_t)width);
    memcpy(dst + v.m * (size_t)width, v.tail, n - v.m * (size_t)width);
}

static void planes_read(uint8_t *dst, const ds_zplanes *v, size_t off, size_t len, bool stream) {
    size_t w = (size_t)v->width, m = v->m, body = w > 1 ? m * w : 0, end = off + len, pos = off;
    if (w <= 1) {
        memcpy(dst, v->plane[0] + off, len);
        return;
    }
    /* Byte b < body is byte b % w of element b / w: plane b % w, index b / w. */
    for (; pos < end && pos < body && pos % w; pos++) dst[pos - off] = v->plane[pos % w][pos / w];
    if (pos < body && end > pos) {
        size_t cnt = (DS_MIN(end, body) - pos) / w;
        const uint8_t *at[8];
        for (size_t j = 0; j < w; j++) at[j] = v->plane[j] + pos / w;
        if (stream) unshuffle_elems_stream(dst + (pos - off), at, cnt, w);
        else unshuffle_elems(dst + (pos - off), at, cnt, w);
        pos += cnt * w;
    }
    for (; pos < end && pos < body; pos++) dst[pos - off] = v->plane[pos % w][pos / w];
    if (pos < end) memcpy(dst + (pos - off), v->tail + (pos - body), end - pos); /* the tail is stored as it is */
}

void ds_zplanes_read(uint8_t *dst, const ds_zplanes *v, size_t off, size_t len) {
    planes_read(dst, v, off, len, false);
}

void ds_zplanes_read_stream(uint8_t *dst, const ds_zplanes *v, size_t off, size_t len) {
    planes_read(dst, v, off, len, true);
}

void ds_zchunk_unshuffle_range(uint8_t *dst, const uint8_t *src, size_t n, int width, size_t off, size_t len) {
    ds_zplanes v;
    contiguous_view(&v, src, n, width);
    ds_zplanes_read(dst, &v, off, len);
}

/* ---- encoder ---- */

struct ds_zchunk_enc {
    ZSTD_CCtx *cctx, *pctx; /* chunk frames, plane frames */
    uint8_t *shuf, *out;
    size_t cap; /* bytes of shuf; out has room for 8 plane records more */
    uint8_t *sample; /* DS_ZCHUNK_SAMPLE bytes: a large plane's sample */
    ds_zchunk_codec codec;
    int min_gain; /* per mille, planes only */
    ds_zchunk_stats stats;
};

void ds_zchunk_enc_free(ds_zchunk_enc *e) {
    if (!e) return;
    ZSTD_freeCCtx(e->cctx);
    ZSTD_freeCCtx(e->pctx);
    free(e->shuf);
    free(e->out);
    free(e->sample);
    free(e);
}

dsckpt_status ds_zchunk_enc_new(int level, ds_zchunk_enc **out) {
    *out = NULL;
    if (!ds_zchunk_level_ok(level))
        return ds_err(DSCKPT_EINVAL, "compression level %d (zstd levels are 1 to %d)", level, ZSTD_maxCLevel());
    ds_zchunk_enc *e = calloc(1, sizeof *e);
    if (!e) return ds_err(DSCKPT_ENOMEM, "out of memory");
    e->cctx = ZSTD_createCCtx();
    e->pctx = ZSTD_createCCtx();
    e->sample = malloc(DS_ZCHUNK_SAMPLE);
    if (!e->cctx || !e->pctx || !e->sample) {
        ds_zchunk_enc_free(e);
        return ds_err(DSCKPT_ENOMEM, "out of memory creating a zstd context");
    }
    /* The frame states its content size (the decoder checks it against the
     * manifest) and carries zstd's own checksum, so a damaged chunk read with the
     * SHA-256 checks off (--no-verify) still fails instead of decoding garbage. */
    bool ok = true;
    for (int i = 0; i < 2; i++) {
        ZSTD_CCtx *cc = i ? e->pctx : e->cctx;
        ok &= !ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level)) &&
              !ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 1)) &&
              !ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1));
    }
    /* Plane frames at level 1: the planes that shrink are mostly exponent bytes of
     * low entropy, which zstd codes best as Huffman literals; the short matches its
     * default level-1 table finds there cost ratio and (encoding and decoding)
     * speed. A 64-entry table and 7-byte matches keep the long repeats (zeros,
     * small integers) and drop the rest (bench/RESULTS.md, issue 15, measured). */
    if (level == 1 && DS_ZCHUNK_PLANE_HASH_LOG > 0)
        ok &= !ZSTD_isError(ZSTD_CCtx_setParameter(e->pctx, ZSTD_c_hashLog, DS_ZCHUNK_PLANE_HASH_LOG)) &&
              !ZSTD_isError(ZSTD_CCtx_setParameter(e->pctx, ZSTD_c_minMatch, 7));
    if (!ok) {
        ds_zchunk_enc_free(e);
        return ds_err(DSCKPT_EINTERNAL, "zstd: cannot set the compression parameters");
    }
    e->codec = DS_ZCODEC_PLANES;
    e->min_gain = DS_ZCHUNK_PLANE_MIN_GAIN_PERMILLE;
    *out = e;
    return DSCKPT_OK;
}

dsckpt_status ds_zchunk_enc_set_codec(ds_zchunk_enc *e, ds_zchunk_codec codec, int min_gain_permille) {
    if ((codec != DS_ZCODEC_PLANES && codec != DS_ZCODEC_FRAME) || min_gain_permille < 0 || min_gain_permille > 999)
        return ds_err(DSCKPT_EINVAL, "chunk codec %d, least plane gain %d per mille", (int)codec, min_gain_permille);
    e->codec = codec;
    e->min_gain = min_gain_permille;
    return DSCKPT_OK;
}

static dsckpt_status grow(uint8_t **buf, size_t *cap, size_t n) {
    if (n <= *cap) return DSCKPT_OK;
    uint8_t *p = realloc(*buf, n);
    if (!p) return ds_err(DSCKPT_ENOMEM, "out of memory (%zu bytes for a chunk)", n);
    *buf = p;
    *cap = n;
    return DSCKPT_OK;
}

/* The longest frame of m bytes that saves min_gain per mille of them: the
 * capacity handed to zstd, which gives up (dstSize_tooSmall) as soon as the bytes
 * cannot make the gain. */
static size_t frame_keep(size_t m, int min_gain) { return m - (m * (size_t)min_gain + 999) / 1000; }

/* Whether a zstd frame of `plane` (m bytes) can save e->min_gain per mille of it,
 * judged on a sample when the plane is large: DS_ZCHUNK_SAMPLE_SLICES slices spread
 * evenly over it, compressed as one. A plane whose sample cannot make the gain is
 * stored raw without zstd running over the whole of it: the mantissa planes of
 * trained floats never shrink, and trying them was a third of the encoding time
 * (bench/RESULTS.md, issue 15). The answer depends on the plane's bytes alone, so
 * a chunk's stored bytes do not depend on the chunks encoded before it (chunks
 * of a file are encoded on several threads: native_write.c). */
static dsckpt_status plane_worth_trying(ds_zchunk_enc *e, const uint8_t *plane, size_t m, bool *yes) {
    *yes = true;
    if (m < 4 * (size_t)DS_ZCHUNK_SAMPLE) return DSCKPT_OK;
    size_t slice = DS_ZCHUNK_SAMPLE / DS_ZCHUNK_SAMPLE_SLICES;
    for (size_t i = 0; i < DS_ZCHUNK_SAMPLE_SLICES; i++)
        memcpy(e->sample + i * slice, plane + (m - slice) * i / (DS_ZCHUNK_SAMPLE_SLICES - 1), slice);
    size_t r = ZSTD_compress2(e->pctx, e->shuf, frame_keep(DS_ZCHUNK_SAMPLE, e->min_gain), e->sample, DS_ZCHUNK_SAMPLE);
    if (ZSTD_isError(r)) {
        if (ZSTD_getErrorCode(r) != ZSTD_error_dstSize_tooSmall)
            return ds_err(DSCKPT_EINTERNAL, "zstd compression failed: %s", ZSTD_getErrorName(r));
        *yes = false;
    }
    e->stats.sampled++;
    if (!*yes) e->stats.skipped++;
    return DSCKPT_OK;
}

/* The planes form of raw[0..n) into e->out: the header, then each plane as a frame
 * when that saves at least e->min_gain per mille of it and raw otherwise, then the
 * tail. The chunk is shuffled straight into e->out after the header, as if every
 * plane were raw: a raw plane stays where it is (moved down only after an earlier
 * plane shrank), a framed one is compressed into e->shuf and copied over its own
 * bytes, which it no longer needs. Leaves the outputs (already saying raw) alone
 * when the whole is not smaller than n. */
static dsckpt_status encode_planes(ds_zchunk_enc *e, const void *raw, size_t n, int width, const uint8_t **stored,
                                   size_t *stored_n, ds_zchunk_kind *kind) {
    size_t w = (size_t)width, m = n / w, tail = n - m * w, hdr = DS_ZCHUNK_PLANE_REC * w;
    if (m == 0 || hdr + tail >= n) return DSCKPT_OK;
    uint8_t *lay = e->out + hdr; /* plane j at lay + j * m, then the tail */
    ds_zchunk_shuffle(lay, raw, n, width);
    size_t pos = hdr, room = n - 1; /* the whole must end up smaller than n */
    size_t keep = frame_keep(m, e->min_gain); /* a frame is kept only when at most this long */
    for (size_t j = 0; j < w; j++) {
        const uint8_t *plane = lay + j * m; /* pos <= hdr + j * m: nothing written past it yet */
        uint8_t *rec = e->out + DS_ZCHUNK_PLANE_REC * j;
        if (pos >= room) return DSCKPT_OK;
        size_t cap = DS_MIN(keep, room - pos), r = 0;
        bool tried = cap > 0;
        if (tried) DS_TRY(plane_worth_trying(e, plane, m, &tried));
        if (tried) {
            e->stats.planes_tried++;
            r = ZSTD_compress2(e->pctx, e->shuf, cap, plane, m);
            if (ZSTD_isError(r)) {
                if (ZSTD_getErrorCode(r) != ZSTD_error_dstSize_tooSmall)
                    return ds_err(DSCKPT_EINTERNAL, "zstd compression failed: %s", ZSTD_getErrorName(r));
                r = 0;
            }
        }
        bool framed = r > 0 && r < m;
        if (framed) { /* r < m: ends before the next plane's bytes */
            rec[0] = DS_ZCHUNK_ZSTD;
            ds_put_le32(rec + 1, (uint32_t)r);
            memcpy(e->out + pos, e->shuf, r);
            pos += r;
            continue;
        }
        if (m > room - pos) return DSCKPT_OK;
        rec[0] = DS_ZCHUNK_RAW;
        ds_put_le32(rec + 1, (uint32_t)m);
        if (e->out + pos != plane) memmove(e->out + pos, plane, m);
        pos += m;
    }
    if (tail > room - pos) return DSCKPT_OK;
    if (e->out + pos != lay + m * w) memmove(e->out + pos, lay + m * w, tail);
    pos += tail;
    *stored = e->out;
    *stored_n = pos;
    *kind = DS_ZCHUNK_PLANES;
    return DSCKPT_OK;
}

ds_zchunk_stats ds_zchunk_enc_stats(const ds_zchunk_enc *e) { return e->stats; }

dsckpt_status ds_zchunk_encode(ds_zchunk_enc *e, const void *raw, size_t n, int width, const uint8_t **stored,
                               size_t *stored_n, ds_zchunk_kind *kind) {
    if (!ds_zchunk_width_ok(width)) return ds_err(DSCKPT_EINVAL, "shuffle width %d (1, 2, 4 or 8)", width);
    if ((uint64_t)n > DS_ZCHUNK_MAX_RAW)
        return ds_err(DSCKPT_EINVAL, "chunk of %zu bytes (compressed chunks are at most %llu)", n,
                      (unsigned long long)DS_ZCHUNK_MAX_RAW);
    *stored = raw;
    *stored_n = n;
    *kind = DS_ZCHUNK_RAW;
    if (n < 2) return DSCKPT_OK;
    if (e->cap < n) { /* out: room for a planes header before the n shuffled bytes */
        size_t c1 = e->cap, c2 = e->cap ? e->cap + DS_ZCHUNK_PLANE_REC * 8 : 0;
        DS_TRY(grow(&e->shuf, &c1, n));
        DS_TRY(grow(&e->out, &c2, n + DS_ZCHUNK_PLANE_REC * 8));
        e->cap = n;
    }
    const uint8_t *src = raw;
    if (width > 1) {
        if (e->codec == DS_ZCODEC_PLANES) return encode_planes(e, raw, n, width, stored, stored_n, kind);
        ds_zchunk_shuffle(e->shuf, raw, n, width);
        src = e->shuf;
    }
    /* Room for n - 1 bytes only: a frame that would not be smaller fails with
     * dstSize_tooSmall and the chunk is stored raw. */
    size_t r = ZSTD_compress2(e->cctx, e->out, n - 1, src, n);
    if (ZSTD_isError(r)) {
        if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall) return DSCKPT_OK;
        return ds_err(DSCKPT_EINTERNAL, "zstd compression failed: %s", ZSTD_getErrorName(r));
    }
    *stored = e->out;
    *stored_n = r;
    *kind = DS_ZCHUNK_ZSTD;
    return DSCKPT_OK;
}

/* ---- decoder ---- */

struct ds_zchunk_dec {
    ZSTD_DCtx *dctx;
    uint8_t *buf; /* the shuffled bytes before unshuffling */
    size_t cap;
    bool verified; /* ds_zchunk_dec_set_verified: as dctx was last told */
};

void ds_zchunk_dec_set_verified(ds_zchunk_dec *d, bool verified) {
    if (d->verified == verified) return;
    size_t r = ZSTD_DCtx_setParameter(d->dctx, ZSTD_d_forceIgnoreChecksum,
                                      verified ? ZSTD_d_ignoreChecksum : ZSTD_d_validateChecksum);
    if (!ZSTD_isError(r)) d->verified = verified;
}

void ds_zchunk_dec_free(ds_zchunk_dec *d) {
    if (!d) return;
    ZSTD_freeDCtx(d->dctx);
    free(d->buf);
    free(d);
}

dsckpt_status ds_zchunk_dec_new(ds_zchunk_dec **out) {
    *out = NULL;
    ds_zchunk_dec *d = calloc(1, sizeof *d);
    if (!d) return ds_err(DSCKPT_ENOMEM, "out of memory");
    d->dctx = ZSTD_createDCtx();
    if (!d->dctx) {
        free(d);
        return ds_err(DSCKPT_ENOMEM, "out of memory creating a zstd context");
    }
    if (ZSTD_isError(ZSTD_DCtx_setParameter(d->dctx, ZSTD_d_windowLogMax, DEC_WINDOW_LOG_MAX))) {
        ds_zchunk_dec_free(d);
        return ds_err(DSCKPT_EINTERNAL, "zstd: cannot set the window limit");
    }
    *out = d;
    return DSCKPT_OK;
}

dsckpt_status ds_zchunk_check(ds_zchunk_kind kind, int width, uint64_t stored_n, uint64_t raw_n, const char *what) {
    if (raw_n > DS_ZCHUNK_MAX_RAW)
        return ds_err(DSCKPT_ECORRUPT, "%s: claims %llu raw bytes (a compressed chunk holds at most %llu)", what,
                      (unsigned long long)raw_n, (unsigned long long)DS_ZCHUNK_MAX_RAW);
    if (!ds_zchunk_width_ok(width))
        return ds_err(DSCKPT_ECORRUPT, "%s: shuffle width %d (1, 2, 4 or 8)", what, width);
    if (kind == DS_ZCHUNK_RAW) {
        if (stored_n != raw_n)
            return ds_err(DSCKPT_ECORRUPT, "%s: stored raw, but %llu stored bytes for %llu raw bytes", what,
                          (unsigned long long)stored_n, (unsigned long long)raw_n);
        if (width != 1) return ds_err(DSCKPT_ECORRUPT, "%s: stored raw, but shuffle width %d", what, width);
        return DSCKPT_OK;
    }
    if (kind == DS_ZCHUNK_PLANES) {
        if (width < 2)
            return ds_err(DSCKPT_ECORRUPT, "%s: a planes chunk of shuffle width %d (2, 4 or 8)", what, width);
        uint64_t w = (uint64_t)width, min = DS_ZCHUNK_PLANE_REC * w + raw_n % w;
        if (stored_n < min || stored_n >= raw_n)
            return ds_err(DSCKPT_ECORRUPT,
                          "%s: a planes chunk of %llu bytes for %llu raw bytes (it must be smaller, and hold its "
                          "%llu-byte header and tail)",
                          what, (unsigned long long)stored_n, (unsigned long long)raw_n, (unsigned long long)min);
        return DSCKPT_OK;
    }
    if (kind != DS_ZCHUNK_ZSTD) return ds_err(DSCKPT_ECORRUPT, "%s: unknown chunk kind %d", what, (int)kind);
    if (stored_n == 0 || stored_n >= raw_n)
        return ds_err(DSCKPT_ECORRUPT, "%s: a zstd chunk of %llu bytes for %llu raw bytes (it must be smaller)",
                      what, (unsigned long long)stored_n, (unsigned long long)raw_n);
    return DSCKPT_OK;
}

/* Decodes the zstd frame src[0..sn) into dst[0..n): one whole frame, exactly these
 * bytes, stating exactly n raw bytes (checked from the frame header before any
 * byte is decoded), decoding to exactly n bytes. `plane` >= 0 names the plane. */
static dsckpt_status decode_frame(ds_zchunk_dec *d, const uint8_t *src, size_t sn, uint8_t *dst, size_t n,
                                  const char *what, long plane) {
    char pl[40] = "";
    if (plane >= 0) snprintf(pl, sizeof pl, " (plane %ld)", plane);
    unsigned long long fcs = ZSTD_getFrameContentSize(src, sn);
    if (fcs == ZSTD_CONTENTSIZE_ERROR) return ds_err(DSCKPT_ECORRUPT, "%s%s: not a zstd frame", what, pl);
    if (fcs == ZSTD_CONTENTSIZE_UNKNOWN)
        return ds_err(DSCKPT_ECORRUPT, "%s%s: the zstd frame does not state its size", what, pl);
    if (fcs != (unsigned long long)n)
        return ds_err(DSCKPT_ECORRUPT, "%s%s: the zstd frame states %llu raw bytes, the %s %zu", what, pl, fcs,
                      plane >= 0 ? "plane holds" : "manifest", n);
    size_t fsz = ZSTD_findFrameCompressedSize(src, sn);
    if (ZSTD_isError(fsz) || fsz != sn)
        return ds_err(DSCKPT_ECORRUPT, "%s%s: the zstd frame is truncated or followed by other bytes", what, pl);
    size_t r = ZSTD_decompressDCtx(d->dctx, dst, n, src, sn);
    if (ZSTD_isError(r)) return ds_err(DSCKPT_ECORRUPT, "%s%s: zstd: %s", what, pl, ZSTD_getErrorName(r));
    if (r != n) return ds_err(DSCKPT_ECORRUPT, "%s%s: decoded %zu bytes, expected %zu", what, pl, r, n);
    return DSCKPT_OK;
}

/* A planes chunk (ds_zchunk_check passed: stored_n >= its header and tail) as a
 * view: the whole header is checked before any plane is decoded; zstd planes are
 * decoded into scratch + j·m, raw planes and the tail are read in place. */
static dsckpt_status decode_planes(ds_zchunk_dec *d, int width, const uint8_t *src, size_t stored_n,
                                   uint8_t *scratch, size_t raw_n, const char *what, ds_zplanes *v) {
    size_t w = (size_t)width, m = raw_n / w, tail = raw_n - m * w, hdr = DS_ZCHUNK_PLANE_REC * w;
    uint64_t sum = hdr + tail; /* at most 8 planes of < 2^32 bytes: no overflow */
    for (size_t j = 0; j < w; j++) {
        const uint8_t *rec = src + DS_ZCHUNK_PLANE_REC * j;
        uint64_t sz = ds_get_le32(rec + 1);
        if (rec[0] == DS_ZCHUNK_RAW && sz != m)
            return ds_err(DSCKPT_ECORRUPT, "%s: plane %zu stored raw in %llu bytes, but the plane holds %zu", what, j,
                          (unsigned long long)sz, m);
        if (rec[0] == DS_ZCHUNK_ZSTD && (sz == 0 || sz >= m))
            return ds_err(DSCKPT_ECORRUPT, "%s: plane %zu is a zstd frame of %llu bytes for %zu raw bytes (it must "
                          "be smaller)", what, j, (unsigned long long)sz, m);
        if (rec[0] != DS_ZCHUNK_RAW && rec[0] != DS_ZCHUNK_ZSTD)
            return ds_err(DSCKPT_ECORRUPT, "%s: plane %zu has unknown kind %d", what, j, rec[0]);
        sum += sz;
    }
    if (sum != stored_n)
        return ds_err(DSCKPT_ECORRUPT, "%s: the planes' header, planes and tail add up to %llu bytes, the chunk "
                      "has %zu", what, (unsigned long long)sum, stored_n);
    v->n = raw_n;
    v->m = m;
    v->width = width;
    size_t pos = hdr;
    for (size_t j = 0; j < w; j++) {
        const uint8_t *rec = src + DS_ZCHUNK_PLANE_REC * j;
        size_t sz = ds_get_le32(rec + 1);
        if (rec[0] == DS_ZCHUNK_RAW) {
            v->plane[j] = src + pos;
        } else {
            DS_TRY(decode_frame(d, src + pos, sz, scratch + j * m, m, what, (long)j));
            v->plane[j] = scratch + j * m;
        }
        pos += sz;
    }
    v->tail = src + pos;
    return DSCKPT_OK;
}

dsckpt_status ds_zchunk_decode_view(ds_zchunk_dec *d, ds_zchunk_kind kind, int width, const void *stored,
                                    size_t stored_n, void *scratch, size_t raw_n, const char *what, ds_zplanes *view) {
    DS_TRY(ds_zchunk_check(kind, width, stored_n, raw_n, what));
    if (kind == DS_ZCHUNK_RAW) {
        contiguous_view(view, stored, raw_n, 1);
        return DSCKPT_OK;
    }
    if (kind == DS_ZCHUNK_PLANES) return decode_planes(d, width, stored, stored_n, scratch, raw_n, what, view);
    DS_TRY(decode_frame(d, stored, stored_n, scratch, raw_n, what, -1));
    contiguous_view(view, scratch, raw_n, width);
    return DSCKPT_OK;
}

dsckpt_status ds_zchunk_decode(ds_zchunk_dec *d, ds_zchunk_kind kind, int width, const void *stored,
                               size_t stored_n, void *raw, size_t raw_n, const char *what) {
    DS_TRY(ds_zchunk_check(kind, width, stored_n, raw_n, what)); /* before anything is allocated */
    uint8_t *scratch = raw; /* width 1: a frame decodes straight into raw */
    if (width > 1) {
        DS_TRY(grow(&d->buf, &d->cap, raw_n));
        scratch = d->buf;
    }
    ds_zplanes v;
    DS_TRY(ds_zchunk_decode_view(d, kind, width, stored, stored_n, scratch, raw_n, what, &v));
    if (v.plane[0] != raw) ds_zplanes_read(raw, &v, 0, raw_n);
    return DSCKPT_OK;
}
