/*
 * zchunk.c — byte-plane shuffle + zstd per chunk, and the hostile-input decoder
 * (see zchunk.h).
 */
#include "zchunk.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

/* The decoder's window limit: a frame of DS_ZCHUNK_MAX_RAW bytes needs at most
 * this window; anything asking for more is refused by zstd itself. */
#define DEC_WINDOW_LOG_MAX 28

const char *ds_zchunk_kind_name(ds_zchunk_kind k) { return k == DS_ZCHUNK_ZSTD ? "zstd" : "raw"; }

int ds_zchunk_kind_parse(const char *s) {
    if (!s) return -1;
    if (!strcmp(s, "raw")) return DS_ZCHUNK_RAW;
    if (!strcmp(s, "zstd")) return DS_ZCHUNK_ZSTD;
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

/* Elements [0, cnt) of planes src + j*m (j < w) into dst, interleaved. */
static size_t unshuffle_sse2(uint8_t *dst, const uint8_t *src, size_t m, size_t cnt, size_t w) {
    size_t i = 0;
    if (w == 2) {
        for (; i + 16 <= cnt; i += 16) {
            __m128i p0 = _mm_loadu_si128((const __m128i *)(src + i));
            __m128i p1 = _mm_loadu_si128((const __m128i *)(src + m + i));
            _mm_storeu_si128((__m128i *)(dst + 2 * i), _mm_unpacklo_epi8(p0, p1));
            _mm_storeu_si128((__m128i *)(dst + 2 * i + 16), _mm_unpackhi_epi8(p0, p1));
        }
    } else if (w == 4) {
        for (; i + 16 <= cnt; i += 16) {
            __m128i p0 = _mm_loadu_si128((const __m128i *)(src + i));
            __m128i p1 = _mm_loadu_si128((const __m128i *)(src + m + i));
            __m128i p2 = _mm_loadu_si128((const __m128i *)(src + 2 * m + i));
            __m128i p3 = _mm_loadu_si128((const __m128i *)(src + 3 * m + i));
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
#else
static size_t shuffle_sse2(uint8_t *dst, const uint8_t *src, size_t m, size_t w) {
    (void)dst, (void)src, (void)m, (void)w;
    return 0;
}
static size_t unshuffle_sse2(uint8_t *dst, const uint8_t *src, size_t m, size_t cnt, size_t w) {
    (void)dst, (void)src, (void)m, (void)cnt, (void)w;
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
    size_t i0 = shuffle_sse2(dst, src, m, w);
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

/* Elements [0, cnt) of the planes src + j*m (j < w, w > 1) into dst, interleaved:
 * fixed widths as their own loops, so the compiler can unroll them. */
static void unshuffle_elems(uint8_t *dst, const uint8_t *src, size_t m, size_t cnt, size_t w) {
    size_t i0 = unshuffle_sse2(dst, src, m, cnt, w);
    if (w == 2) {
        const uint8_t *p0 = src, *p1 = src + m;
        for (size_t i = i0; i < cnt; i++) {
            dst[2 * i] = p0[i];
            dst[2 * i + 1] = p1[i];
        }
    } else if (w == 4) {
        const uint8_t *p0 = src, *p1 = src + m, *p2 = src + 2 * m, *p3 = src + 3 * m;
        for (size_t i = i0; i < cnt; i++) {
            dst[4 * i] = p0[i];
            dst[4 * i + 1] = p1[i];
            dst[4 * i + 2] = p2[i];
            dst[4 * i + 3] = p3[i];
        }
    } else {
        for (size_t j = 0; j < w; j++)
            for (size_t i = 0; i < cnt; i++) dst[i * w + j] = src[j * m + i];
    }
}

void ds_zchunk_unshuffle(uint8_t *dst, const uint8_t *src, size_t n, int width) {
    size_t w = (size_t)width, m = w ? n / w : 0;
    if (w <= 1) {
        memcpy(dst, src, n);
        return;
    }
    unshuffle_elems(dst, src, m, m, w);
    memcpy(dst + m * w, src + m * w, n - m * w);
}

void ds_zchunk_unshuffle_range(uint8_t *dst, const uint8_t *src, size_t n, int width, size_t off, size_t len) {
    size_t w = (size_t)width, m = w > 1 ? n / w : 0, body = m * w, end = off + len, pos = off;
    if (w <= 1) {
        memcpy(dst, src + off, len);
        return;
    }
    /* Byte b < body is byte b % w of element b / w: plane b % w, index b / w. */
    for (; pos < end && pos < body && pos % w; pos++) dst[pos - off] = src[(pos % w) * m + pos / w];
    if (pos < body && end > pos) {
        size_t cnt = (DS_MIN(end, body) - pos) / w;
        unshuffle_elems(dst + (pos - off), src + pos / w, m, cnt, w);
        pos += cnt * w;
    }
    for (; pos < end && pos < body; pos++) dst[pos - off] = src[(pos % w) * m + pos / w];
    if (pos < end) memcpy(dst + (pos - off), src + pos, end - pos); /* the tail is stored as it is */
}

/* ---- encoder ---- */

struct ds_zchunk_enc {
    ZSTD_CCtx *cctx;
    uint8_t *shuf, *out;
    size_t cap; /* bytes of each buffer */
};

void ds_zchunk_enc_free(ds_zchunk_enc *e) {
    if (!e) return;
    ZSTD_freeCCtx(e->cctx);
    free(e->shuf);
    free(e->out);
    free(e);
}

dsckpt_status ds_zchunk_enc_new(int level, ds_zchunk_enc **out) {
    *out = NULL;
    if (!ds_zchunk_level_ok(level))
        return ds_err(DSCKPT_EINVAL, "compression level %d (zstd levels are 1 to %d)", level, ZSTD_maxCLevel());
    ds_zchunk_enc *e = calloc(1, sizeof *e);
    if (!e) return ds_err(DSCKPT_ENOMEM, "out of memory");
    e->cctx = ZSTD_createCCtx();
    if (!e->cctx) {
        free(e);
        return ds_err(DSCKPT_ENOMEM, "out of memory creating a zstd context");
    }
    /* The frame states its content size (the decoder checks it against the
     * manifest) and carries zstd's own checksum, so a damaged chunk read with the
     * SHA-256 checks off (--no-verify) still fails instead of decoding garbage. */
    if (ZSTD_isError(ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_compressionLevel, level)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_contentSizeFlag, 1)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_checksumFlag, 1))) {
        ds_zchunk_enc_free(e);
        return ds_err(DSCKPT_EINTERNAL, "zstd: cannot set the compression parameters");
    }
    *out = e;
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
    if (e->cap < n) {
        size_t c1 = e->cap, c2 = e->cap;
        DS_TRY(grow(&e->shuf, &c1, n));
        DS_TRY(grow(&e->out, &c2, n));
        e->cap = n;
    }
    const uint8_t *src = raw;
    if (width > 1) {
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
};

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
    if (kind != DS_ZCHUNK_ZSTD) return ds_err(DSCKPT_ECORRUPT, "%s: unknown chunk kind %d", what, (int)kind);
    if (stored_n == 0 || stored_n >= raw_n)
        return ds_err(DSCKPT_ECORRUPT, "%s: a zstd chunk of %llu bytes for %llu raw bytes (it must be smaller)",
                      what, (unsigned long long)stored_n, (unsigned long long)raw_n);
    return DSCKPT_OK;
}

dsckpt_status ds_zchunk_decode_shuffled(ds_zchunk_dec *d, ds_zchunk_kind kind, int width, const void *stored,
                                        size_t stored_n, void *shuf, size_t raw_n, const char *what) {
    DS_TRY(ds_zchunk_check(kind, width, stored_n, raw_n, what));
    if (kind == DS_ZCHUNK_RAW) {
        if (raw_n && shuf != stored) memcpy(shuf, stored, raw_n);
        return DSCKPT_OK;
    }
    /* One whole frame, exactly these bytes, stating exactly this size: checked
     * from the frame header before any byte is decoded. */
    unsigned long long fcs = ZSTD_getFrameContentSize(stored, stored_n);
    if (fcs == ZSTD_CONTENTSIZE_ERROR)
        return ds_err(DSCKPT_ECORRUPT, "%s: not a zstd frame", what);
    if (fcs == ZSTD_CONTENTSIZE_UNKNOWN)
        return ds_err(DSCKPT_ECORRUPT, "%s: the zstd frame does not state its size", what);
    if (fcs != (unsigned long long)raw_n)
        return ds_err(DSCKPT_ECORRUPT, "%s: the zstd frame states %llu raw bytes, the manifest %zu", what, fcs,
                      raw_n);
    size_t fsz = ZSTD_findFrameCompressedSize(stored, stored_n);
    if (ZSTD_isError(fsz) || fsz != stored_n)
        return ds_err(DSCKPT_ECORRUPT, "%s: the zstd frame is truncated or followed by other bytes", what);
    size_t r = ZSTD_decompressDCtx(d->dctx, shuf, raw_n, stored, stored_n);
    if (ZSTD_isError(r)) return ds_err(DSCKPT_ECORRUPT, "%s: zstd: %s", what, ZSTD_getErrorName(r));
    if (r != raw_n)
        return ds_err(DSCKPT_ECORRUPT, "%s: decoded %zu bytes, expected %zu", what, r, raw_n);
    return DSCKPT_OK;
}

dsckpt_status ds_zchunk_decode(ds_zchunk_dec *d, ds_zchunk_kind kind, int width, const void *stored,
                               size_t stored_n, void *raw, size_t raw_n, const char *what) {
    DS_TRY(ds_zchunk_check(kind, width, stored_n, raw_n, what));
    if (width <= 1) return ds_zchunk_decode_shuffled(d, kind, width, stored, stored_n, raw, raw_n, what);
    DS_TRY(grow(&d->buf, &d->cap, raw_n));
    DS_TRY(ds_zchunk_decode_shuffled(d, kind, width, stored, stored_n, d->buf, raw_n, what));
    ds_zchunk_unshuffle(raw, d->buf, raw_n, width);
    return DSCKPT_OK;
}
