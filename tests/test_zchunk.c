/*
 * test_zchunk.c — the chunk codec (formats/zchunk.h) of compressed checkpoints: shuffle layout and
 * inverse, bit-exact round trips for every dtype (weight-like values and random
 * bytes, sizes that are not multiples of the width), incompressible chunks stored
 * raw, and the decoder refusing damaged, truncated, padded and size-lying chunks
 * and decompression bombs before allocating; the same for both codecs (one frame
 * per chunk as version 2 wrote, and planes: its header layout, raw and frame
 * planes, and hostile plane headers).
 */
#include "cast.h"
#include "tutil.h"
#include "zchunk.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

static uint32_t rng_next(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return *s;
}

/* Approximately normal (sum of uniforms), scaled like trained weights. */
static float gauss(uint32_t *s) {
    float a = 0;
    for (int i = 0; i < 4; i++) a += (float)(rng_next(s) >> 8) / 16777216.0f;
    return (a - 2.0f) * 0.02f;
}

static void random_bytes(uint8_t *p, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(rng_next(&seed) >> 24);
}

/* n bytes of values of dtype `dt` that look like a model's: weights for the float
 * types, small counts for the integer ones. */
static void weight_like(uint8_t *p, size_t n, dsckpt_dtype dt, uint32_t seed) {
    size_t es = dsckpt_dtype_size(dt);
    memset(p, 0, n);
    for (size_t i = 0; i + es <= n; i += es) {
        float f = gauss(&seed);
        switch (dt) {
        case DSCKPT_F32: memcpy(p + i, &f, 4); break;
        case DSCKPT_F64: {
            double d = f;
            memcpy(p + i, &d, 8);
            break;
        }
        case DSCKPT_BF16: {
            uint16_t h = ds_f32_to_bf16_ref(f);
            memcpy(p + i, &h, 2);
            break;
        }
        case DSCKPT_F16: {
            uint16_t h = ds_f32_to_f16_ref(f);
            memcpy(p + i, &h, 2);
            break;
        }
        default: {
            uint64_t v = rng_next(&seed) % 50;
            memcpy(p + i, &v, es); /* little-endian: the low bytes */
            break;
        }
        }
    }
    for (size_t i = n - n % es; i < n; i++) p[i] = (uint8_t)(rng_next(&seed) >> 24);
}

static void test_shuffle_layout(void) {
    const uint8_t src[11] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    uint8_t dst[11], back[11];
    ds_zchunk_shuffle(dst, src, 11, 4); /* two elements, three tail bytes */
    const uint8_t want4[11] = {0, 4, 1, 5, 2, 6, 3, 7, 8, 9, 10};
    CU_ASSERT_EQUAL(memcmp(dst, want4, 11), 0);
    ds_zchunk_unshuffle(back, dst, 11, 4);
    CU_ASSERT_EQUAL(memcmp(back, src, 11), 0);
    ds_zchunk_shuffle(dst, src, 11, 2);
    const uint8_t want2[11] = {0, 2, 4, 6, 8, 1, 3, 5, 7, 9, 10};
    CU_ASSERT_EQUAL(memcmp(dst, want2, 11), 0);
    ds_zchunk_unshuffle(back, dst, 11, 2);
    CU_ASSERT_EQUAL(memcmp(back, src, 11), 0);
    ds_zchunk_shuffle(dst, src, 11, 8);
    const uint8_t want8[11] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}; /* one element: planes of one byte */
    CU_ASSERT_EQUAL(memcmp(dst, want8, 11), 0);
    ds_zchunk_shuffle(dst, src, 11, 1);
    CU_ASSERT_EQUAL(memcmp(dst, src, 11), 0);
}

/* The fast shuffles equal the plain loops on random data, every width, sizes
 * around the vector steps and odd tails. */
static void shuffle_vs_ref(void);

static void test_shuffle_fast_vs_ref(void) {
    static const char *impls[] = {"sse2", "ssse3", NULL};
    for (int k = 0; k < 3; k++) {
        if (ds_zchunk_shuffle_impl(impls[k]) != 0) {
            printf("  (width-4 shuffle %s: not on this CPU, skipped)\n", impls[k]);
            continue;
        }
        shuffle_vs_ref();
    }
}

static void shuffle_vs_ref(void) {
    size_t big = (1u << 20) + 37;
    uint8_t *src = malloc(big), *a = malloc(big), *b = malloc(big);
    random_bytes(src, big, 99);
    for (int w = 1; w <= 8; w *= 2) {
        for (size_t n = 0; n <= big; n = n < 300 ? n + 1 : n == 300 ? big - 64 : n + 9) {
            ds_zchunk_shuffle(a, src, n, w);
            ds_zchunk_shuffle_ref(b, src, n, w);
            if (memcmp(a, b, n) != 0) {
                fprintf(stderr, "\n  shuffle width %d, %zu bytes differs from the plain loop", w, n);
                CU_FAIL("shuffle");
            }
            ds_zchunk_unshuffle(a, src, n, w);
            ds_zchunk_unshuffle_ref(b, src, n, w);
            if (memcmp(a, b, n) != 0) {
                fprintf(stderr, "\n  unshuffle width %d, %zu bytes differs from the plain loop", w, n);
                CU_FAIL("unshuffle");
            }
        }
    }
    free(src);
    free(a);
    free(b);
}

/* The chunk decoded to its shuffled form in shuf[0..raw_n): the view
 * (ds_zchunk_decode_view, shuf as its scratch) with what it reads in place copied
 * to its place in shuf. */
static dsckpt_status decode_shuffled(ds_zchunk_dec *d, ds_zchunk_kind kind, int width, const void *stored,
                                     size_t stored_n, uint8_t *shuf, size_t raw_n, const char *what) {
    ds_zplanes v;
    dsckpt_status st = ds_zchunk_decode_view(d, kind, width, stored, stored_n, shuf, raw_n, what, &v);
    if (st) return st;
    size_t w = (size_t)v.width, body = w > 1 ? v.m * w : raw_n;
    for (size_t j = 0; j < w; j++)
        if (v.m && v.plane[j] != shuf + j * v.m) memmove(shuf + j * v.m, v.plane[j], v.m);
    if (raw_n > body && v.tail != shuf + body) memcpy(shuf + body, v.tail, raw_n - body);
    return DSCKPT_OK;
}

/* unshuffle_range equals the matching slice of a whole unshuffle: every width,
 * chunk sizes with and without a tail, every start and length near element and
 * vector boundaries; it writes nothing outside dst[0..len). */
static void test_unshuffle_range(void) {
    size_t sizes[] = {0, 1, 7, 64, 67, 1000, 4099};
    uint8_t *src = malloc(4099), *whole = malloc(4099), *part = malloc(4099 + 2);
    random_bytes(src, 4099, 7);
    for (int w = 1; w <= 8; w *= 2)
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
            size_t n = sizes[si];
            ds_zchunk_unshuffle_ref(whole, src, n, w);
            for (size_t off = 0; off <= n; off += off < 80 ? 1 : 61)
                for (size_t len = 0; off + len <= n; len += len < 80 ? 1 : 127) {
                    memset(part, 0xA5, len + 2);
                    ds_zchunk_unshuffle_range(part + 1, src, n, w, off, len);
                    if ((len && memcmp(part + 1, whole + off, len) != 0) || part[0] != 0xA5 ||
                        part[len + 1] != 0xA5) {
                        fprintf(stderr, "\n  unshuffle_range width %d, n %zu, off %zu, len %zu", w, n, off, len);
                        CU_FAIL("unshuffle_range");
                        goto out;
                    }
                }
        }
out:
    free(src);
    free(whole);
    free(part);
}

/* ds_zplanes_read_stream writes what ds_zplanes_read writes (non-temporal stores
 * on CPUs with AVX2, widths 2 and 4): every width, planes apart from each other,
 * destinations at every offset from a 32-byte boundary (whole elements from it or
 * not), starts and lengths around the 32-element steps and past several; nothing
 * outside dst[0..len) is written. */
static void test_stream_read(void) {
    enum { M = 1000, TAIL = 3 };
    uint8_t *raw = malloc(8 * M + TAIL), *shuf = malloc(8 * M + TAIL), *pl[8];
    uint8_t *part = aligned_alloc(64, (8 * M + TAIL + 128 + 63) / 64 * 64); /* a multiple of the alignment */
    random_bytes(raw, 8 * M + TAIL, 21);
    bool failed = false;
    for (int w = 1; w <= 8; w *= 2) {
        size_t n = (size_t)w * M + TAIL;
        ds_zchunk_shuffle_ref(shuf, raw, n, w);
        ds_zplanes v = {.n = n, .m = w > 1 ? n / (size_t)w : n, .width = w};
        for (int j = 0; j < w; j++) { /* each plane in its own allocation */
            pl[j] = malloc(v.m);
            memcpy(pl[j], shuf + (size_t)j * v.m, v.m);
            v.plane[j] = pl[j];
        }
        v.tail = shuf + (size_t)w * v.m;
        size_t offs[] = {0, 1, 2, 3, 4, 5, 8, 31, 32, 33, 64, 127, 128, 129, 2000, n - 100, n - 1, n};
        size_t miss[] = {0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 28, 30, 31, 32, 33};
        for (size_t oi = 0; oi < sizeof offs / sizeof *offs && !failed; oi++)
            for (size_t mi = 0; mi < sizeof miss / sizeof *miss && !failed; mi++)
                for (size_t len = 0; offs[oi] + len <= n; len += len < 40 ? 1 : len < 300 ? 37 : 1511) {
                    size_t off = offs[oi], mis = miss[mi];
                    memset(part, 0xA5, len + mis + 1);
                    ds_zplanes_read_stream(part + mis, &v, off, len);
                    bool bad = len && memcmp(part + mis, raw + off, len) != 0;
                    for (size_t i = 0; i < mis && !bad; i++) bad = part[i] != 0xA5;
                    if (bad || part[mis + len] != 0xA5) {
                        fprintf(stderr, "\n  zplanes_read_stream width %d off %zu len %zu dst +%zu", w, off, len, mis);
                        CU_FAIL("zplanes_read_stream");
                        failed = true;
                        break;
                    }
                }
        for (int j = 0; j < w; j++) free(pl[j]);
        if (failed) break;
    }
    free(raw);
    free(shuf);
    free(part);
}

/* decode_view: planes stored raw and the tail are read in place (pointers into
 * the stored bytes, nothing copied to scratch), zstd planes decoded into scratch;
 * every byte range read through the view equals the raw chunk, and nothing is
 * written outside the range; it refuses what decode refuses. */
static void test_decode_view(void) {
    size_t m = 5000, n = 4 * m + 3; /* width 4 with a 3-byte tail */
    uint8_t *raw = malloc(n), *scratch = malloc(n), *part = malloc(n + 2);
    uint32_t seed = 11;
    random_bytes(raw, n, 5);
    for (size_t i = 0; i < m; i++) raw[4 * i + 3] = (uint8_t)(0x3c + (rng_next(&seed) >> 30)); /* exponent-like */
    ds_zchunk_enc *e = NULL;
    ds_zchunk_dec *d = NULL;
    TU_ASSERT_OK(ds_zchunk_enc_new(1, &e));
    TU_ASSERT_OK(ds_zchunk_dec_new(&d));
    const uint8_t *stored;
    size_t sn;
    ds_zchunk_kind kind;
    TU_ASSERT_OK(ds_zchunk_encode(e, raw, n, 4, &stored, &sn, &kind));
    CU_ASSERT_EQUAL_FATAL(kind, DS_ZCHUNK_PLANES);
    memset(scratch, 0xA5, n);
    ds_zplanes v;
    TU_ASSERT_OK(ds_zchunk_decode_view(d, kind, 4, stored, sn, scratch, n, "c", &v));
    CU_ASSERT_EQUAL(v.width, 4);
    CU_ASSERT_EQUAL(v.m, m);
    for (int j = 0; j < 3; j++) /* random bytes: stored raw, read where they are */
        CU_ASSERT(v.plane[j] >= stored && v.plane[j] + m <= stored + sn);
    CU_ASSERT(v.plane[3] == scratch + 3 * m); /* the exponent plane: decoded */
    CU_ASSERT(v.tail >= stored && v.tail + 3 == stored + sn);
    CU_ASSERT_EQUAL(scratch[0], 0xA5); /* raw planes were not copied */
    for (size_t off = 0; off <= n; off += off < 70 ? 1 : 997)
        for (size_t len = 0; off + len <= n; len += len < 70 ? 1 : 1499) {
            memset(part, 0x5A, len + 2);
            ds_zplanes_read(part + 1, &v, off, len);
            if ((len && memcmp(part + 1, raw + off, len) != 0) || part[0] != 0x5A || part[len + 1] != 0x5A) {
                fprintf(stderr, "\n  zplanes_read off %zu len %zu", off, len);
                CU_FAIL("zplanes_read");
                goto out;
            }
        }
    /* A raw chunk is its own view; a frame chunk is decoded whole into scratch. */
    TU_ASSERT_OK(ds_zchunk_decode_view(d, DS_ZCHUNK_RAW, 1, raw, n, scratch, n, "c", &v));
    CU_ASSERT(v.width == 1 && v.plane[0] == raw);
    TU_ASSERT_OK(ds_zchunk_enc_set_codec(e, DS_ZCODEC_FRAME, 50));
    TU_ASSERT_OK(ds_zchunk_encode(e, raw, n, 4, &stored, &sn, &kind));
    CU_ASSERT_EQUAL_FATAL(kind, DS_ZCHUNK_ZSTD);
    TU_ASSERT_OK(ds_zchunk_decode_view(d, kind, 4, stored, sn, scratch, n, "c", &v));
    CU_ASSERT(v.plane[0] == scratch && v.plane[3] == scratch + 3 * m && v.tail == scratch + 4 * m);
    ds_zplanes_read(part, &v, 0, n);
    CU_ASSERT_EQUAL(memcmp(part, raw, n), 0);
    CU_ASSERT_EQUAL(ds_zchunk_decode_view(d, kind, 4, stored, sn - 1, scratch, n, "c", &v), DSCKPT_ECORRUPT);
    CU_ASSERT_EQUAL(ds_zchunk_decode_view(d, kind, 4, stored, sn, scratch, DS_ZCHUNK_MAX_RAW + 1, "c", &v),
                    DSCKPT_ECORRUPT);
out:
    ds_zchunk_enc_free(e);
    ds_zchunk_dec_free(d);
    free(raw);
    free(scratch);
    free(part);
}

/* The shuffled form through the view is the shuffled chunk; unshuffling it gives the raw chunk;
 * it refuses what decode refuses. */
static void test_decode_shuffled(void) {
    size_t n = 100003;
    uint8_t *raw = malloc(n), *shuf = malloc(n), *want = malloc(n), *back = malloc(n);
    for (size_t i = 0; i < n; i++) raw[i] = (uint8_t)(i % 7 == 0 ? i * 31 : 0x3f);
    ds_zchunk_enc *e = NULL;
    ds_zchunk_dec *d = NULL;
    TU_ASSERT_OK(ds_zchunk_enc_new(1, &e));
    TU_ASSERT_OK(ds_zchunk_dec_new(&d));
    for (int planes = 0; planes < 2; planes++) {
        TU_ASSERT_OK(ds_zchunk_enc_set_codec(e, planes ? DS_ZCODEC_PLANES : DS_ZCODEC_FRAME, 50));
        const uint8_t *stored;
        size_t sn;
        ds_zchunk_kind kind;
        TU_ASSERT_OK(ds_zchunk_encode(e, raw, n, 2, &stored, &sn, &kind));
        CU_ASSERT_EQUAL(kind, planes ? DS_ZCHUNK_PLANES : DS_ZCHUNK_ZSTD);
        memset(shuf, 0xA5, n);
        TU_ASSERT_OK(decode_shuffled(d, kind, 2, stored, sn, shuf, n, "c"));
        ds_zchunk_shuffle_ref(want, raw, n, 2);
        CU_ASSERT_EQUAL(memcmp(shuf, want, n), 0);
        ds_zchunk_unshuffle_range(back, shuf, n, 2, 0, n);
        CU_ASSERT_EQUAL(memcmp(back, raw, n), 0);
        CU_ASSERT_EQUAL(decode_shuffled(d, kind, 2, stored, sn - 1, shuf, n, "c"), DSCKPT_ECORRUPT);
        CU_ASSERT_EQUAL(decode_shuffled(d, kind, 2, stored, sn, shuf, n - 1, "c"), DSCKPT_ECORRUPT);
        CU_ASSERT_EQUAL(decode_shuffled(d, kind, 2, stored, sn, shuf, DS_ZCHUNK_MAX_RAW + 1, "c"),
                        DSCKPT_ECORRUPT);
    }
    ds_zchunk_enc_free(e);
    ds_zchunk_dec_free(d);
    free(raw);
    free(shuf);
    free(want);
    free(back);
}

/* Encodes and decodes raw[0..n) with width w; returns the stored size and kind. */
static size_t round_trip(ds_zchunk_enc *e, ds_zchunk_dec *d, const uint8_t *raw, size_t n, int w,
                         ds_zchunk_kind *kind_out) {
    const uint8_t *stored = NULL;
    size_t sn = 0;
    ds_zchunk_kind kind;
    TU_ASSERT_OK(ds_zchunk_encode(e, raw, n, w, &stored, &sn, &kind));
    CU_ASSERT(sn <= n);
    if (kind == DS_ZCHUNK_RAW) {
        CU_ASSERT_PTR_EQUAL(stored, raw);
        CU_ASSERT_EQUAL(sn, n);
    } else {
        CU_ASSERT(sn < n);
    }
    uint8_t *copy = malloc(sn ? sn : 1), *back = malloc(n ? n : 1);
    memcpy(copy, stored, sn);
    memset(back, 0xA5, n);
    TU_ASSERT_OK(ds_zchunk_decode(d, kind, kind == DS_ZCHUNK_RAW ? 1 : w, copy, sn, back, n, "test chunk"));
    CU_ASSERT(n == 0 || memcmp(back, raw, n) == 0);
    free(copy);
    free(back);
    *kind_out = kind;
    return sn;
}

static void test_round_trip_every_dtype(void) {
    ds_zchunk_enc *e = NULL;
    ds_zchunk_dec *d = NULL;
    TU_ASSERT_OK(ds_zchunk_enc_new(DS_ZCHUNK_DEFAULT_LEVEL, &e));
    TU_ASSERT_OK(ds_zchunk_dec_new(&d));
    static const size_t sizes[] = {0, 1, 2, 3, 7, 100, 4097, 65536 + 3, (1u << 20) + 5};
    for (int codec = 0; codec < 2; codec++) {
    TU_ASSERT_OK(ds_zchunk_enc_set_codec(e, codec ? DS_ZCODEC_FRAME : DS_ZCODEC_PLANES,
                                         DS_ZCHUNK_PLANE_MIN_GAIN_PERMILLE));
    for (int dt = 0; dt < DSCKPT_DTYPE_COUNT; dt++) {
        int w = (int)dsckpt_dtype_size((dsckpt_dtype)dt);
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            size_t n = sizes[si];
            uint8_t *raw = malloc(n ? n : 1);
            ds_zchunk_kind kind;
            weight_like(raw, n, (dsckpt_dtype)dt, (uint32_t)(dt * 100 + si));
            size_t sn = round_trip(e, d, raw, n, w, &kind);
            /* Weight-like data of a megabyte always shrinks (the exponent planes):
             * as planes for width > 1 with the planes codec, else one frame. */
            if (n >= (1u << 20)) {
                CU_ASSERT_EQUAL(kind, codec == 0 && w > 1 ? DS_ZCHUNK_PLANES : DS_ZCHUNK_ZSTD);
                CU_ASSERT(sn < n);
            }
            /* Any width decodes what it encoded, whatever the data. */
            for (int ow = 1; ow <= 8; ow *= 2) (void)round_trip(e, d, raw, n, ow, &kind);
            free(raw);
        }
    }
    }
    ds_zchunk_enc_free(e);
    ds_zchunk_dec_free(d);
}

static void test_bf16_exponents_compress(void) {
    /* The point of the shuffle: bf16 weights shrink more shuffled than not. */
    ds_zchunk_enc *e = NULL;
    TU_ASSERT_OK(ds_zchunk_enc_new(DS_ZCHUNK_DEFAULT_LEVEL, &e));
    size_t n = 4u << 20;
    uint8_t *raw = malloc(n);
    weight_like(raw, n, DSCKPT_BF16, 7);
    const uint8_t *st;
    size_t plain, shuf;
    ds_zchunk_kind k;
    TU_ASSERT_OK(ds_zchunk_encode(e, raw, n, 1, &st, &plain, &k));
    TU_ASSERT_OK(ds_zchunk_encode(e, raw, n, 2, &st, &shuf, &k));
    CU_ASSERT_EQUAL(k, DS_ZCHUNK_PLANES);
    CU_ASSERT(shuf < plain);
    TU_ASSERT_OK(ds_zchunk_enc_set_codec(e, DS_ZCODEC_FRAME, 0));
    TU_ASSERT_OK(ds_zchunk_encode(e, raw, n, 2, &st, &shuf, &k));
    CU_ASSERT_EQUAL(k, DS_ZCHUNK_ZSTD);
    CU_ASSERT(shuf < plain);
    free(raw);
    ds_zchunk_enc_free(e);
}

static void test_incompressible_stored_raw(void) {
    ds_zchunk_enc *e = NULL;
    ds_zchunk_dec *d = NULL;
    TU_ASSERT_OK(ds_zchunk_enc_new(19, &e));
    TU_ASSERT_OK(ds_zchunk_dec_new(&d));
    static const size_t sizes[] = {1, 2, 64, 4096, 1u << 20};
    for (int codec = 0; codec < 2; codec++) {
        TU_ASSERT_OK(ds_zchunk_enc_set_codec(e, codec ? DS_ZCODEC_FRAME : DS_ZCODEC_PLANES, 0));
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            uint8_t *raw = malloc(sizes[si]);
            random_bytes(raw, sizes[si], (uint32_t)si + 1);
            for (int w = 1; w <= 8; w *= 2) {
                ds_zchunk_kind kind;
                size_t sn = round_trip(e, d, raw, sizes[si], w, &kind);
                CU_ASSERT_EQUAL(kind, DS_ZCHUNK_RAW);
                CU_ASSERT_EQUAL(sn, sizes[si]);
            }
            free(raw);
        }
    }
    ds_zchunk_enc_free(e);
    ds_zchunk_dec_free(d);
}

/* A compressed chunk of weight-like F32 values (malloc'd copy of the frame). */
static uint8_t *make_frame(size_t n, uint8_t **raw_out, size_t *sn_out) {
    ds_zchunk_enc *e = NULL;
    TU_ASSERT_OK(ds_zchunk_enc_new(3, &e));
    TU_ASSERT_OK(ds_zchunk_enc_set_codec(e, DS_ZCODEC_FRAME, 0));
    uint8_t *raw = malloc(n);
    weight_like(raw, n, DSCKPT_F32, 42);
    const uint8_t *st;
    size_t sn;
    ds_zchunk_kind k;
    TU_ASSERT_OK(ds_zchunk_encode(e, raw, n, 4, &st, &sn, &k));
    CU_ASSERT_EQUAL_FATAL(k, DS_ZCHUNK_ZSTD);
    uint8_t *f = malloc(sn + 16);
    memcpy(f, st, sn);
    ds_zchunk_enc_free(e);
    *raw_out = raw;
    *sn_out = sn;
    return f;
}

/* ds_zchunk_dec_set_verified: a frame whose content checksum (its last 4 bytes)
 * is wrong is refused, unless the stored bytes were verified by their SHA-256;
 * then it decodes (the blocks are intact) to the right bytes; and refused again
 * once the decoder is told otherwise. */
static void test_verified_skips_frame_checksum(void) {
    ds_zchunk_dec *d = NULL;
    TU_ASSERT_OK(ds_zchunk_dec_new(&d));
    size_t n = 256u << 10, sn;
    uint8_t *raw, *f = make_frame(n, &raw, &sn), *back = malloc(n);
    f[sn - 2] ^= 0x40;
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 4, f, sn, back, n, "c"), DSCKPT_ECORRUPT);
    ds_zchunk_dec_set_verified(d, true);
    memset(back, 0, n);
    TU_ASSERT_OK(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 4, f, sn, back, n, "c"));
    CU_ASSERT_EQUAL(memcmp(back, raw, n), 0);
    /* The frame's structure is still checked. */
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 4, f, sn - 1, back, n, "c"), DSCKPT_ECORRUPT);
    ds_zchunk_dec_set_verified(d, false);
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 4, f, sn, back, n, "c"), DSCKPT_ECORRUPT);
    free(f);
    free(raw);
    free(back);
    ds_zchunk_dec_free(d);
}

static void test_damaged_refused(void) {
    ds_zchunk_dec *d = NULL;
    TU_ASSERT_OK(ds_zchunk_dec_new(&d));
    size_t n = 256u << 10, sn;
    uint8_t *raw, *f = make_frame(n, &raw, &sn), *back = malloc(n);
    TU_ASSERT_OK(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 4, f, sn, back, n, "c"));
    CU_ASSERT_EQUAL(memcmp(back, raw, n), 0);
    /* A flipped bit in the blocks or the checksum: the frame structure or zstd's
     * checksum catches it. */
    size_t where[] = {0, sn / 3, sn / 2, sn - 5, sn - 1};
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        f[where[i]] ^= 0x10;
        CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 4, f, sn, back, n, "c"), DSCKPT_ECORRUPT);
        f[where[i]] ^= 0x10;
    }
    /* Some header bits are ignored by zstd (the frame descriptor's unused bit):
     * wherever a flip lands, the chunk is refused or decodes to the right bytes,
     * never to wrong ones. (The manifest's SHA-256 of the stored bytes catches
     * every flip; this is the last line behind it.) */
    for (size_t i = 0; i < sn; i += 1 + sn / 97) {
        for (int bit = 0; bit < 8; bit += 3) {
            f[i] ^= (uint8_t)(1u << bit);
            memset(back, 0, n);
            dsckpt_status st = ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 4, f, sn, back, n, "c");
            CU_ASSERT(st == DSCKPT_ECORRUPT || (st == DSCKPT_OK && memcmp(back, raw, n) == 0));
            f[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* Truncated; followed by other bytes; the wrong width decodes but differs. */
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 4, f, sn - 1, back, n, "c"), DSCKPT_ECORRUPT);
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 4, f, 10, back, n, "c"), DSCKPT_ECORRUPT);
    f[sn] = 0;
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 4, f, sn + 1, back, n, "c"), DSCKPT_ECORRUPT);
    /* The manifest's raw size disagreeing with the frame's, either way. */
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 4, f, sn, back, n - 4, "c"), DSCKPT_ECORRUPT);
    uint8_t *big = malloc(n + 4);
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 4, f, sn, big, n + 4, "c"), DSCKPT_ECORRUPT);
    free(big);
    /* Flag and sizes that cannot be: raw with another size or a width, zstd not smaller, bad width. */
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_RAW, 1, f, sn, back, n, "c"), DSCKPT_ECORRUPT);
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_RAW, 4, raw, n, back, n, "c"), DSCKPT_ECORRUPT);
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 3, f, sn, back, n, "c"), DSCKPT_ECORRUPT);
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 4, raw, n, back, n, "c"), DSCKPT_ECORRUPT);
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, (ds_zchunk_kind)7, 1, raw, n, back, n, "c"), DSCKPT_ECORRUPT);
    /* Not a frame at all. */
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 4, raw, 100, back, n, "c"), DSCKPT_ECORRUPT);
    CU_ASSERT(strstr(dsckpt_last_error(), "c: ") == dsckpt_last_error());
    free(f);
    free(raw);
    free(back);
    ds_zchunk_dec_free(d);
}

static void test_bomb_refused(void) {
    ds_zchunk_dec *d = NULL;
    TU_ASSERT_OK(ds_zchunk_dec_new(&d));
    /* A claimed raw size past the limit is refused from the sizes alone: the
     * output buffer is never touched (NULL here), nothing is allocated. */
    uint8_t small[16] = {0};
    CU_ASSERT_EQUAL(ds_zchunk_check(DS_ZCHUNK_ZSTD, 4, 16, DS_ZCHUNK_MAX_RAW + 1, "bomb"), DSCKPT_ECORRUPT);
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 4, small, 16, NULL, (size_t)1 << 40, "bomb"),
                    DSCKPT_ECORRUPT);
    CU_ASSERT(strstr(dsckpt_last_error(), "claims") != NULL);
    TU_ASSERT_OK(ds_zchunk_check(DS_ZCHUNK_ZSTD, 4, 16, DS_ZCHUNK_MAX_RAW, "ok"));
    /* A tiny frame of 64 MiB of zeros, offered as a 1 MiB chunk: refused from its
     * header, before a byte is decoded (the 1 MiB buffer is never overrun). */
    size_t zn = 64u << 20, cap = ZSTD_compressBound(zn);
    uint8_t *zeros = calloc(zn, 1), *fr = malloc(cap);
    size_t fsn = ZSTD_compress(fr, cap, zeros, zn, 1);
    CU_ASSERT_FATAL(!ZSTD_isError(fsn));
    CU_ASSERT(fsn < 4096);
    size_t rn = 1u << 20;
    uint8_t *out = malloc(rn);
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 1, fr, fsn, out, rn, "bomb"), DSCKPT_ECORRUPT);
    CU_ASSERT(strstr(dsckpt_last_error(), "states 67108864 raw bytes") != NULL);
    /* A frame that states no size at all (streamed) is refused too. */
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
    ZSTD_outBuffer ob = {fr, cap, 0};
    ZSTD_inBuffer ib = {zeros, rn, 0};
    size_t rem = ZSTD_compressStream2(cc, &ob, &ib, ZSTD_e_end);
    CU_ASSERT_EQUAL(rem, 0);
    ZSTD_freeCCtx(cc);
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_ZSTD, 1, fr, ob.pos, out, rn, "bomb"), DSCKPT_ECORRUPT);
    CU_ASSERT(strstr(dsckpt_last_error(), "does not state its size") != NULL);
    free(zeros);
    free(fr);
    free(out);
    ds_zchunk_dec_free(d);
}

/* ---- planes ---- */

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* The planes chunk of raw[0..n) at width w and least gain `gain` (a malloc'd copy
 * with 16 spare bytes); *kind says what the encoder chose. */
static uint8_t *make_planes(const uint8_t *raw, size_t n, int w, int gain, size_t *sn, ds_zchunk_kind *kind) {
    ds_zchunk_enc *e = NULL;
    TU_ASSERT_OK(ds_zchunk_enc_new(1, &e));
    TU_ASSERT_OK(ds_zchunk_enc_set_codec(e, DS_ZCODEC_PLANES, gain));
    const uint8_t *st;
    TU_ASSERT_OK(ds_zchunk_encode(e, raw, n, w, &st, sn, kind));
    uint8_t *c = malloc(*sn + 16);
    memcpy(c, st, *sn);
    ds_zchunk_enc_free(e);
    return c;
}

/* Encodes raw (width 4) through e, checks it decodes back, and returns the kind
 * of plane `j` in the stored chunk (DS_ZCHUNK_RAW / DS_ZCHUNK_ZSTD); the stored
 * bytes are copied to *copy when copy is not NULL (malloc'd, *copy_n bytes). */
static int plane_kind(ds_zchunk_enc *e, ds_zchunk_dec *d, const uint8_t *raw, size_t n, size_t j, uint8_t *back,
                      uint8_t **copy, size_t *copy_n) {
    const uint8_t *st;
    size_t sn;
    ds_zchunk_kind kind;
    TU_ASSERT_OK(ds_zchunk_encode(e, raw, n, 4, &st, &sn, &kind));
    CU_ASSERT_EQUAL_FATAL(kind, DS_ZCHUNK_PLANES);
    if (copy) {
        *copy = malloc(sn);
        memcpy(*copy, st, sn);
        *copy_n = sn;
    }
    int k = st[DS_ZCHUNK_PLANE_REC * j];
    TU_ASSERT_OK(ds_zchunk_decode(d, kind, 4, st, sn, back, n, "c"));
    CU_ASSERT_EQUAL(memcmp(back, raw, n), 0);
    return k;
}

/* Large planes go through zstd only when a sample spread over the plane can make
 * the least gain: random planes are sampled and skipped (zstd never runs over them
 * whole), a plane random in its first half and zeros in the second is tried and
 * stored as a frame (a sample from its head alone would skip it); small planes are
 * always tried; a chunk's stored bytes do not depend on what the encoder did
 * before. */
static void test_plane_sample(void) {
    size_t m = 8 * (size_t)DS_ZCHUNK_SAMPLE, n = 4 * m;
    uint8_t *rnd = malloc(n), *half = malloc(n), *back = malloc(n);
    random_bytes(rnd, n, 3);
    for (size_t i = 0; i < m; i++) rnd[4 * i + 3] = (uint8_t)(0x3c + (i % 3)); /* exponent plane shrinks */
    memcpy(half, rnd, n);
    for (size_t i = m / 2; i < m; i++) half[4 * i] = 0; /* plane 0: random, then zeros */
    ds_zchunk_enc *e = NULL;
    ds_zchunk_dec *d = NULL;
    TU_ASSERT_OK(ds_zchunk_enc_new(1, &e));
    TU_ASSERT_OK(ds_zchunk_dec_new(&d));

    uint8_t *first = NULL;
    size_t first_n = 0;
    CU_ASSERT_EQUAL(plane_kind(e, d, rnd, n, 0, back, &first, &first_n), DS_ZCHUNK_RAW);
    ds_zchunk_stats s = ds_zchunk_enc_stats(e);
    CU_ASSERT_EQUAL(s.sampled, 4);
    CU_ASSERT_EQUAL(s.skipped, 3);      /* planes 0-2 */
    CU_ASSERT_EQUAL(s.planes_tried, 1); /* plane 3 only */

    CU_ASSERT_EQUAL(plane_kind(e, d, half, n, 0, back, NULL, NULL), DS_ZCHUNK_ZSTD);
    s = ds_zchunk_enc_stats(e);
    CU_ASSERT_EQUAL(s.skipped, 5);      /* planes 1-2 again */
    CU_ASSERT_EQUAL(s.planes_tried, 3); /* planes 0 and 3 */

    /* small planes: tried without a sample */
    size_t sm = 4 * (size_t)DS_ZCHUNK_SAMPLE - 4, sn4 = 4 * sm;
    CU_ASSERT_EQUAL(plane_kind(e, d, rnd, sn4, 0, back, NULL, NULL), DS_ZCHUNK_RAW);
    ds_zchunk_stats s2 = ds_zchunk_enc_stats(e);
    CU_ASSERT_EQUAL(s2.sampled, s.sampled);
    CU_ASSERT_EQUAL(s2.planes_tried, s.planes_tried + 4);

    /* the same chunk again, after others and through a fresh encoder: the same bytes */
    uint8_t *again = NULL, *fresh = NULL;
    size_t again_n = 0, fresh_n = 0;
    (void)plane_kind(e, d, rnd, n, 0, back, &again, &again_n);
    ds_zchunk_enc *e2 = NULL;
    TU_ASSERT_OK(ds_zchunk_enc_new(1, &e2));
    (void)plane_kind(e2, d, rnd, n, 0, back, &fresh, &fresh_n);
    CU_ASSERT(again_n == first_n && memcmp(again, first, first_n) == 0);
    CU_ASSERT(fresh_n == first_n && memcmp(fresh, first, first_n) == 0);
    ds_zchunk_enc_free(e2);
    free(first);
    free(again);
    free(fresh);
    ds_zchunk_enc_free(e);
    ds_zchunk_dec_free(d);
    free(rnd);
    free(half);
    free(back);
}

/* The header says what the bytes are: per plane a kind and a stored size; raw
 * planes are the shuffled plane itself, frame planes one frame stating the
 * plane's size; the sizes add up; the tail comes last, as it is. fp32 weights:
 * the low mantissa planes do not shrink (raw), the sign/exponent plane does;
 * small integers: every plane shrinks. Both round-trip bit for bit. */
static void test_planes_layout(void) {
    ds_zchunk_dec *d = NULL;
    TU_ASSERT_OK(ds_zchunk_dec_new(&d));
    size_t n = (1u << 20) + 3, m = n / 4;
    uint8_t *raw = malloc(n), *shuf = malloc(n), *back = malloc(n);
    static const dsckpt_dtype dts[2] = {DSCKPT_F32, DSCKPT_I32};
    for (int t = 0; t < 2; t++) {
        weight_like(raw, n, dts[t], 11);
        random_bytes(raw + n - 3, 3, 5); /* a tail that is not zeros */
        ds_zchunk_shuffle_ref(shuf, raw, n, 4);
        size_t sn;
        ds_zchunk_kind kind;
        uint8_t *c = make_planes(raw, n, 4, DS_ZCHUNK_PLANE_MIN_GAIN_PERMILLE, &sn, &kind);
        CU_ASSERT_EQUAL_FATAL(kind, DS_ZCHUNK_PLANES);
        size_t pos = 4 * DS_ZCHUNK_PLANE_REC;
        int nraw = 0;
        for (size_t j = 0; j < 4; j++) {
            const uint8_t *rec = c + DS_ZCHUNK_PLANE_REC * j;
            size_t sz = rd32(rec + 1);
            if (rec[0] == DS_ZCHUNK_RAW) {
                nraw++;
                CU_ASSERT_EQUAL(sz, m);
                CU_ASSERT_EQUAL(memcmp(c + pos, shuf + j * m, m), 0);
            } else {
                CU_ASSERT_EQUAL(rec[0], DS_ZCHUNK_ZSTD);
                CU_ASSERT(sz > 0 && sz <= m - m / 20); /* saves at least the least gain */
                CU_ASSERT_EQUAL(ZSTD_getFrameContentSize(c + pos, sz), m);
                CU_ASSERT_EQUAL(ZSTD_findFrameCompressedSize(c + pos, sz), sz);
            }
            pos += sz;
        }
        CU_ASSERT_EQUAL(pos + 3, sn);
        CU_ASSERT_EQUAL(memcmp(c + pos, raw + n - 3, 3), 0);
        if (t == 0) {
            CU_ASSERT(nraw >= 2); /* the two low mantissa planes */
            CU_ASSERT_EQUAL(c[3 * DS_ZCHUNK_PLANE_REC], DS_ZCHUNK_ZSTD); /* sign and exponent */
        } else {
            CU_ASSERT_EQUAL(nraw, 0);
        }
        memset(back, 0xA5, n);
        TU_ASSERT_OK(decode_shuffled(d, kind, 4, c, sn, back, n, "c"));
        CU_ASSERT_EQUAL(memcmp(back, shuf, n), 0);
        TU_ASSERT_OK(ds_zchunk_decode(d, kind, 4, c, sn, back, n, "c"));
        CU_ASSERT_EQUAL(memcmp(back, raw, n), 0);
        free(c);
    }
    /* The least gain decides: 0 keeps every frame that is smaller (no larger
     * than the default), 999 keeps none, and all-raw planes do not make the
     * chunk smaller: it is stored raw. */
    weight_like(raw, n, DSCKPT_F32, 11);
    size_t s0, s50, s999;
    ds_zchunk_kind k0, k50, k999;
    free(make_planes(raw, n, 4, 0, &s0, &k0));
    free(make_planes(raw, n, 4, 50, &s50, &k50));
    free(make_planes(raw, n, 4, 999, &s999, &k999));
    CU_ASSERT(k0 == DS_ZCHUNK_PLANES && k50 == DS_ZCHUNK_PLANES && s0 <= s50);
    CU_ASSERT_EQUAL(k999, DS_ZCHUNK_RAW);
    CU_ASSERT_EQUAL(s999, n);
    /* Width 1 is one frame whatever the codec. */
    free(make_planes(raw, n, 1, 50, &s0, &k0));
    CU_ASSERT_EQUAL(k0, DS_ZCHUNK_ZSTD);
    free(raw);
    free(shuf);
    free(back);
    ds_zchunk_dec_free(d);
}

/* Decodes c[0..sn) as a planes chunk of n raw bytes at width w: must be refused
 * as corrupt, naming the chunk and saying `msg`. */
static void expect_refused(ds_zchunk_dec *d, const uint8_t *c, size_t sn, size_t n, int w, const char *msg) {
    uint8_t *out = malloc(n);
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_PLANES, w, c, sn, out, n, "f.safetensors: chunk 3"),
                    DSCKPT_ECORRUPT);
    const char *e = dsckpt_last_error();
    CU_ASSERT(strstr(e, "f.safetensors: chunk 3") == e);
    if (!strstr(e, msg)) fprintf(stderr, "\n    error '%s' does not say '%s'\n", e, msg);
    CU_ASSERT(strstr(e, msg) != NULL);
    free(out);
}

/* A real planes chunk edited: sizes, kinds, bombs and bit flips. */
static void planes_hostile_edits(ds_zchunk_dec *d) {
    size_t n = 256u << 10, m = n / 4, sn;
    uint8_t *raw = malloc(n), *back = malloc(n);
    weight_like(raw, n, DSCKPT_F32, 3);
    ds_zchunk_kind kind;
    uint8_t *c = make_planes(raw, n, 4, DS_ZCHUNK_PLANE_MIN_GAIN_PERMILLE, &sn, &kind);
    CU_ASSERT_EQUAL_FATAL(kind, DS_ZCHUNK_PLANES);
    uint8_t *rz = c + 3 * DS_ZCHUNK_PLANE_REC, *rr = c; /* the frame of the exponents, a raw plane */
    while (rr < rz && rr[0] != DS_ZCHUNK_RAW) rr += DS_ZCHUNK_PLANE_REC;
    CU_ASSERT_FATAL(rz[0] == DS_ZCHUNK_ZSTD && rr[0] == DS_ZCHUNK_RAW);
    uint32_t fz = rd32(rz + 1);
    TU_ASSERT_OK(ds_zchunk_decode(d, kind, 4, c, sn, back, n, "c"));
    CU_ASSERT_EQUAL(memcmp(back, raw, n), 0);
    /* Sizes that do not add up: one plane shorter, the chunk truncated or padded. */
    wr32(rz + 1, fz - 1);
    expect_refused(d, c, sn, n, 4, "add up");
    wr32(rz + 1, fz);
    expect_refused(d, c, sn - 1, n, 4, "add up");
    c[sn] = 0;
    expect_refused(d, c, sn + 1, n, 4, "add up");
    expect_refused(d, c, 4 * DS_ZCHUNK_PLANE_REC - 1, n, 4, "header");
    /* A raw plane of another size; a frame plane claiming huge or no size; a kind
     * that does not exist. */
    wr32(rr + 1, (uint32_t)m + 1);
    expect_refused(d, c, sn, n, 4, "stored raw in");
    wr32(rr + 1, (uint32_t)m);
    wr32(rz + 1, 0xffffffffu);
    expect_refused(d, c, sn, n, 4, "must be smaller");
    wr32(rz + 1, 0);
    expect_refused(d, c, sn, n, 4, "must be smaller");
    wr32(rz + 1, fz);
    rr[0] = 7;
    expect_refused(d, c, sn, n, 4, "unknown kind 7");
    rr[0] = DS_ZCHUNK_RAW;
    /* Planes need a width of 2 or more, and must be smaller than the chunk. */
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_PLANES, 1, c, sn, back, n, "c"), DSCKPT_ECORRUPT);
    CU_ASSERT_EQUAL(ds_zchunk_check(DS_ZCHUNK_PLANES, 4, n, n, "c"), DSCKPT_ECORRUPT);
    /* Bombs: a claimed raw size past the limit is refused from the sizes alone
     * (the output, NULL here, is never touched). */
    CU_ASSERT_EQUAL(ds_zchunk_decode(d, DS_ZCHUNK_PLANES, 4, c, sn, NULL, (size_t)1 << 40, "bomb"),
                    DSCKPT_ECORRUPT);
    /* Flips in the header or the frame: refused, or (a bit zstd ignores) the right
     * bytes, never wrong ones. Raw planes have no check of their own: the
     * manifest's SHA-256 of the stored bytes is what catches a flip there. */
    size_t fpos = sn - fz;
    for (size_t i = 0; i < sn; i += (i < 4 * DS_ZCHUNK_PLANE_REC ? 1 : 1 + fz / 61)) {
        if (i >= 4 * DS_ZCHUNK_PLANE_REC && i < fpos) i = fpos;
        for (int bit = 0; bit < 8; bit += 3) {
            c[i] ^= (uint8_t)(1u << bit);
            memset(back, 0, n);
            dsckpt_status st = ds_zchunk_decode(d, DS_ZCHUNK_PLANES, 4, c, sn, back, n, "c");
            CU_ASSERT(st == DSCKPT_ECORRUPT || (st == DSCKPT_OK && memcmp(back, raw, n) == 0));
            c[i] ^= (uint8_t)(1u << bit);
        }
    }
    free(c);
    free(raw);
    free(back);
}

static void planes_lying_frames(ds_zchunk_dec *d) {
    uint8_t *back = malloc(2 * 4096);
    /* Hand-made width-2 chunks of m2 = 4096-byte planes: plane 0 raw, plane 1 a
     * frame that lies: stating another size (more and less: a bomb is refused
     * from the frame header), stating none, followed by another byte. */
    size_t m2 = 4096, n2 = 2 * m2, zn = 64u << 20, cap = ZSTD_compressBound(zn);
    uint8_t *zeros = calloc(zn, 1), *fr = malloc(cap), *hc = malloc(n2 + cap);
    const size_t lies[3] = {m2 + 2, m2 - 2, zn};
    for (int li = 0; li < 4; li++) {
        size_t fsn;
        if (li < 3) {
            fsn = ZSTD_compress(fr, cap, zeros, lies[li], 1);
        } else {
            ZSTD_CCtx *cc = ZSTD_createCCtx();
            ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
            ZSTD_outBuffer ob = {fr, cap, 0};
            ZSTD_inBuffer ib = {zeros, m2, 0};
            CU_ASSERT_EQUAL(ZSTD_compressStream2(cc, &ob, &ib, ZSTD_e_end), 0);
            ZSTD_freeCCtx(cc);
            fsn = ob.pos;
        }
        CU_ASSERT_FATAL(!ZSTD_isError(fsn) && fsn < 4096);
        hc[0] = DS_ZCHUNK_RAW;
        wr32(hc + 1, (uint32_t)m2);
        hc[5] = DS_ZCHUNK_ZSTD;
        wr32(hc + 6, (uint32_t)fsn);
        random_bytes(hc + 10, m2, 9);
        memcpy(hc + 10 + m2, fr, fsn);
        size_t hsn = 10 + m2 + fsn;
        if (li == 0) expect_refused(d, hc, hsn, n2, 2, "(plane 1): the zstd frame states 4098 raw bytes, the plane holds 4096");
        if (li == 1) expect_refused(d, hc, hsn, n2, 2, "states 4094 raw bytes");
        if (li == 2) expect_refused(d, hc, hsn, n2, 2, "states 67108864 raw bytes");
        if (li == 3) expect_refused(d, hc, hsn, n2, 2, "does not state its size");
    }
    /* A true frame of the plane, then one more byte counted in its size. */
    size_t fsn = ZSTD_compress(fr, cap, zeros, m2, 1);
    memcpy(hc + 10 + m2, fr, fsn);
    hc[10 + m2 + fsn] = 0;
    wr32(hc + 6, (uint32_t)fsn + 1);
    expect_refused(d, hc, 10 + m2 + fsn + 1, n2, 2, "truncated or followed by other bytes");
    wr32(hc + 6, (uint32_t)fsn);
    TU_ASSERT_OK(decode_shuffled(d, DS_ZCHUNK_PLANES, 2, hc, 10 + m2 + fsn, back, n2, "c"));
    CU_ASSERT_EQUAL(memcmp(back, hc + 10, m2), 0);
    CU_ASSERT_EQUAL(memcmp(back + m2, zeros, m2), 0);
    free(zeros);
    free(fr);
    free(hc);
    free(back);
}

static void test_planes_hostile(void) {
    ds_zchunk_dec *d = NULL;
    TU_ASSERT_OK(ds_zchunk_dec_new(&d));
    planes_hostile_edits(d);
    planes_lying_frames(d);
    ds_zchunk_dec_free(d);
}

static void test_levels_and_names(void) {
    ds_zchunk_enc *e = NULL;
    CU_ASSERT_EQUAL(ds_zchunk_enc_new(0, &e), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(ds_zchunk_enc_new(ZSTD_maxCLevel() + 1, &e), DSCKPT_EINVAL);
    CU_ASSERT_PTR_NULL(e);
    TU_ASSERT_OK(ds_zchunk_enc_new(ZSTD_maxCLevel(), &e));
    uint8_t b[8] = {0};
    const uint8_t *st;
    size_t sn;
    ds_zchunk_kind k;
    CU_ASSERT_EQUAL(ds_zchunk_encode(e, b, 8, 3, &st, &sn, &k), DSCKPT_EINVAL);
    ds_zchunk_enc_free(e);
    ds_zchunk_enc_free(NULL);
    ds_zchunk_dec_free(NULL);
    CU_ASSERT_EQUAL(ds_zchunk_kind_parse("zstd"), DS_ZCHUNK_ZSTD);
    CU_ASSERT_EQUAL(ds_zchunk_kind_parse("raw"), DS_ZCHUNK_RAW);
    CU_ASSERT_EQUAL(ds_zchunk_kind_parse("lz4"), -1);
    CU_ASSERT_EQUAL(ds_zchunk_kind_parse(NULL), -1);
    CU_ASSERT_STRING_EQUAL(ds_zchunk_kind_name(DS_ZCHUNK_ZSTD), "zstd");
    CU_ASSERT_EQUAL(ds_zchunk_kind_parse("planes"), DS_ZCHUNK_PLANES);
    CU_ASSERT_STRING_EQUAL(ds_zchunk_kind_name(DS_ZCHUNK_PLANES), "planes");
    TU_ASSERT_OK(ds_zchunk_enc_new(1, &e));
    CU_ASSERT_EQUAL(ds_zchunk_enc_set_codec(e, DS_ZCODEC_PLANES, 1000), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(ds_zchunk_enc_set_codec(e, (ds_zchunk_codec)5, 0), DSCKPT_EINVAL);
    ds_zchunk_enc_free(e);
}

int main(void) {
    static const tu_test tests[] = {
        {"shuffle layout and inverse", test_shuffle_layout},
        {"fast shuffles equal the plain loops", test_shuffle_fast_vs_ref},
        {"unshuffle of a byte range", test_unshuffle_range},
        {"decode to the shuffled form", test_decode_shuffled},
        {"decode to a view: raw planes read in place", test_decode_view},
        {"streaming reads through a view equal the plain ones", test_stream_read},
        {"round trip, every dtype and width", test_round_trip_every_dtype},
        {"bf16 exponent planes compress", test_bf16_exponents_compress},
        {"incompressible chunks stored raw", test_incompressible_stored_raw},
        {"damaged, truncated, padded chunks refused", test_damaged_refused},
        {"a verified chunk's frames skip zstd's checksum, others keep it", test_verified_skips_frame_checksum},
        {"decompression bombs refused before allocating", test_bomb_refused},
        {"planes: header layout, raw and frame planes, least gain", test_planes_layout},
        {"planes: a sample spread over a large plane decides whether zstd runs over it", test_plane_sample},
        {"planes: hostile headers and frames refused", test_planes_hostile},
        {"levels, widths, kind names", test_levels_and_names},
        {NULL, NULL},
    };
    return tu_main("zchunk", tests);
}
