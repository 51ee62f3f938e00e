/*
 * zchunk.h — the chunk codec of compressed native checkpoints: byte-plane shuffle
 * by element width, then either one zstd frame per chunk ("zstd") or each plane on
 * its own, as a zstd frame when it shrinks enough and raw when not ("planes"); a
 * chunk that does not shrink is stored raw (docs/native-format.md, "Compressed
 * rank files").
 *
 * Shuffle: a chunk of n bytes holding elements of `width` bytes (1, 2, 4 or 8) is
 * rewritten as `width` planes, plane j holding byte j of every element, followed by
 * the n % width tail bytes unchanged. The exponent bytes of floats then sit next to
 * each other, where zstd finds them; the mantissa bytes it mostly leaves as
 * literals. Width 1 is the identity.
 *
 * Decoding treats the stored bytes and the claimed raw size as hostile: a raw size
 * above DS_ZCHUNK_MAX_RAW is refused before anything is allocated (a decompression
 * bomb), the frame must be one whole zstd frame whose header states exactly that
 * raw size, must be smaller than the raw chunk (otherwise it would have been stored
 * raw), and must decode to exactly that many bytes. A planes chunk's header is
 * checked whole before any plane is decoded: each plane's kind known, its stored
 * size exactly its raw size (raw) or positive and smaller (zstd), the sizes adding
 * up exactly to the stored bytes; each plane frame is then held to the same rules
 * as a chunk frame, at the plane's size. Nothing is allocated from a claimed size
 * beyond the chunk's checked raw size.
 *
 * Why planes: the mantissa planes of trained floats barely shrink, and a single
 * frame spends most of its time entropy-coding and decoding them; stored raw they
 * are a memcpy (bench/RESULTS.md, issue 15).
 *
 * Thread-safety: an encoder or decoder belongs to one thread at a time; keep one
 * per worker and reuse it (it holds the zstd context and its buffers).
 */
#ifndef DSCKPT_ZCHUNK_H
#define DSCKPT_ZCHUNK_H

#include "internal.h"

/* The largest raw chunk a compressed checkpoint may have (the chunk size limit). */
#define DS_ZCHUNK_MAX_RAW ((uint64_t)1 << 28)
/* The raw chunk size of a compressed rank file when none is given: smaller than an
 * uncompressed file's verify chunk (DS_DEFAULT_CHUNK) so that readers decode in
 * parallel at a finer grain and hold less (bench/compress.sh measured it). */
#ifndef DS_ZCHUNK_DEFAULT_CHUNK
#define DS_ZCHUNK_DEFAULT_CHUNK ((uint64_t)4 << 20)
#endif
/* The compression level used when none is given (bench/compress.sh measured it). */
#define DS_ZCHUNK_DEFAULT_LEVEL DSCKPT_COMPRESS_DEFAULT_LEVEL

typedef enum ds_zchunk_kind {
    DS_ZCHUNK_RAW = 0,  /* stored bytes are the raw bytes */
    DS_ZCHUNK_ZSTD = 1, /* stored bytes are one zstd frame of the shuffled raw bytes */
    DS_ZCHUNK_PLANES = 2, /* a plane header, then each plane raw or as a zstd frame, then the tail */
} ds_zchunk_kind;

/* Bytes of a planes chunk's header per plane: a kind byte, a u32 LE stored size. */
#define DS_ZCHUNK_PLANE_REC 5
/* A plane is stored as a zstd frame only when the frame saves at least this many
 * per mille of the plane's bytes; below that it is stored raw (decoding it is then
 * a memcpy). bench/compress.sh measured it (bench/RESULTS.md, issue 15). */
#ifndef DS_ZCHUNK_PLANE_MIN_GAIN_PERMILLE
#define DS_ZCHUNK_PLANE_MIN_GAIN_PERMILLE 50
#endif

/* How an encoder stores a chunk of width > 1 (width 1 is always one frame). */
typedef enum ds_zchunk_codec {
    DS_ZCODEC_PLANES = 0, /* planes (the default) */
    DS_ZCODEC_FRAME = 1,  /* one zstd frame, as version 2 writers did */
} ds_zchunk_codec;

/* "raw" / "zstd" / "planes"; ds_zchunk_kind_parse returns -1 for anything else. */
const char *ds_zchunk_kind_name(ds_zchunk_kind k);
int ds_zchunk_kind_parse(const char *s);
/* Whether w is a shuffle width we write and read (1, 2, 4, 8). */
bool ds_zchunk_width_ok(int w);
/* Whether `level` is a zstd level we accept (1 .. ZSTD_maxCLevel()). */
bool ds_zchunk_level_ok(int level);

/* Byte-plane shuffle and its inverse (dst and src do not overlap); widths 2 and 4
 * use SSE2 where the compiler targets it, the width-4 shuffle SSSE3 where the CPU
 * has it. The _ref versions are the plain loops
 * the fast ones are tested against. */
void ds_zchunk_shuffle(uint8_t *dst, const uint8_t *src, size_t n, int width);
void ds_zchunk_unshuffle(uint8_t *dst, const uint8_t *src, size_t n, int width);
void ds_zchunk_shuffle_ref(uint8_t *dst, const uint8_t *src, size_t n, int width);
/* The width-4 shuffle's implementation: "ssse3" (x86-64 CPUs that have it), "sse2",
 * or NULL for the best this CPU has (the default). 0, or -1 when not available.
 * For tests and benchmarks. */
int ds_zchunk_shuffle_impl(const char *name);
void ds_zchunk_unshuffle_ref(uint8_t *dst, const uint8_t *src, size_t n, int width);
/* Raw bytes [off, off+len) (off + len <= n) of the chunk whose shuffled form is
 * src[0..n): what ds_zchunk_unshuffle would write at dst - off, without the rest. */
void ds_zchunk_unshuffle_range(uint8_t *dst, const uint8_t *src, size_t n, int width, size_t off, size_t len);

/* A chunk in its shuffled form whose planes need not be next to each other: plane
 * j (j < width) is the m bytes at plane[j], the n - m·width tail bytes at tail.
 * Width 1: the raw bytes are the n bytes at plane[0]. ds_zchunk_decode_view points
 * a raw plane at the stored bytes themselves (no copy). */
typedef struct ds_zplanes {
    const uint8_t *plane[8], *tail;
    size_t n, m;
    int width;
} ds_zplanes;
/* Raw bytes [off, off+len) (off + len <= v->n) of the chunk v into dst. */
void ds_zplanes_read(uint8_t *dst, const ds_zplanes *v, size_t off, size_t len);
/* The same bytes, for a destination that is not read again soon (a load into
 * buffers far larger than the caches): on x86-64 CPUs with AVX2, widths 2 and 4
 * are written with non-temporal stores, which do not read each destination line
 * into the cache first. Elsewhere as ds_zplanes_read. */
void ds_zplanes_read_stream(uint8_t *dst, const ds_zplanes *v, size_t off, size_t len);

typedef struct ds_zchunk_enc ds_zchunk_enc;
dsckpt_status ds_zchunk_enc_new(int level, ds_zchunk_enc **out);
void ds_zchunk_enc_free(ds_zchunk_enc *e); /* accepts NULL */
/* Sets how chunks of width > 1 are stored and, for planes, the least gain (per
 * mille of a plane's bytes) that stores a plane as a frame (0 .. 999). New
 * encoders use DS_ZCODEC_PLANES and DS_ZCHUNK_PLANE_MIN_GAIN_PERMILLE. */
dsckpt_status ds_zchunk_enc_set_codec(ds_zchunk_enc *e, ds_zchunk_codec codec, int min_gain_permille);
/* Encodes raw[0..n) (n <= DS_ZCHUNK_MAX_RAW) shuffled by `width`. On return
 * *stored points either into the encoder (valid until its next call) or at raw
 * itself, with *stored_n bytes and *kind saying which: DS_ZCHUNK_ZSTD (width 1, or
 * the frame codec) or DS_ZCHUNK_PLANES (width > 1) only when strictly smaller
 * than n. */
dsckpt_status ds_zchunk_encode(ds_zchunk_enc *e, const void *raw, size_t n, int width, const uint8_t **stored,
                               size_t *stored_n, ds_zchunk_kind *kind);

/* A plane of at least 4 * DS_ZCHUNK_SAMPLE bytes goes through zstd only when a
 * sample of it (DS_ZCHUNK_SAMPLE_SLICES slices spread evenly, DS_ZCHUNK_SAMPLE bytes
 * in all) compressed makes the least gain; smaller planes are always tried. So a
 * chunk's stored bytes are a function of its raw bytes, width and the encoder's
 * level and codec alone (zchunk.c, plane_worth_trying). */
#define DS_ZCHUNK_SAMPLE (64 * 1024)
#define DS_ZCHUNK_SAMPLE_SLICES 4
/* What an encoder has done so far, for tests and benchmarks: planes whose sample
 * was compressed, planes a sample ruled out, planes compressed whole. */
typedef struct ds_zchunk_stats {
    uint64_t sampled, skipped, planes_tried;
} ds_zchunk_stats;
ds_zchunk_stats ds_zchunk_enc_stats(const ds_zchunk_enc *e);

/* Checks a chunk's claimed sizes before anything is allocated for it: raw_n at most
 * DS_ZCHUNK_MAX_RAW, a raw chunk's stored size equal to raw_n, a zstd chunk's
 * positive and smaller than raw_n, a planes chunk's smaller than raw_n and at least
 * its header and tail, the width valid (1 for raw, 2, 4 or 8 for planes).
 * DSCKPT_ECORRUPT naming `what` otherwise. */
dsckpt_status ds_zchunk_check(ds_zchunk_kind kind, int width, uint64_t stored_n, uint64_t raw_n, const char *what);

typedef struct ds_zchunk_dec ds_zchunk_dec;
dsckpt_status ds_zchunk_dec_new(ds_zchunk_dec **out);
void ds_zchunk_dec_free(ds_zchunk_dec *d); /* accepts NULL */
/* Whether the stored bytes of the decodes that follow were checked against their
 * SHA-256 (the manifest's chunk digest) right before: then zstd's own content
 * checksum in each frame adds nothing and is not computed (about a tenth of a
 * plane's decode time). Off by default, and for any read with the checks off, so
 * that a damaged frame still fails instead of decoding into wrong bytes. Where
 * the linked libzstd cannot skip it, it is still checked. */
void ds_zchunk_dec_set_verified(ds_zchunk_dec *d, bool verified);
/* Decodes one stored chunk into raw[0..raw_n) (the caller's buffer, raw_n bytes).
 * Runs ds_zchunk_check first; then a zstd chunk must be one frame covering exactly
 * stored_n bytes whose header states raw_n, and must decode to raw_n bytes; a
 * planes chunk's header must pass the checks above, each plane frame held to the
 * same rules at the plane's size.
 * DSCKPT_ECORRUPT naming `what` for anything else; raw is then unspecified. */
dsckpt_status ds_zchunk_decode(ds_zchunk_dec *d, ds_zchunk_kind kind, int width, const void *stored,
                               size_t stored_n, void *raw, size_t raw_n, const char *what);

/* As ds_zchunk_decode, but leaves the chunk in its shuffled form, as *view: planes
 * stored raw (and a raw chunk's bytes) are read where they are in `stored`; zstd
 * planes (or a zstd chunk's shuffled bytes) are decoded into scratch[0..raw_n),
 * plane j at scratch + j·m. The view is valid while stored and scratch are. */
dsckpt_status ds_zchunk_decode_view(ds_zchunk_dec *d, ds_zchunk_kind kind, int width, const void *stored,
                                    size_t stored_n, void *scratch, size_t raw_n, const char *what, ds_zplanes *view);

#endif /* DSCKPT_ZCHUNK_H */
