/*
 * zchunk.h — the chunk codec of compressed native checkpoints: byte-plane shuffle
 * by element width, then one zstd frame per chunk; a chunk that does not shrink is
 * stored raw (docs/native-format.md, "Compressed rank files").
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
 * raw), and must decode to exactly that many bytes.
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
} ds_zchunk_kind;

/* "raw" / "zstd"; ds_zchunk_kind_parse returns -1 for anything else. */
const char *ds_zchunk_kind_name(ds_zchunk_kind k);
int ds_zchunk_kind_parse(const char *s);
/* Whether w is a shuffle width we write and read (1, 2, 4, 8). */
bool ds_zchunk_width_ok(int w);
/* Whether `level` is a zstd level we accept (1 .. ZSTD_maxCLevel()). */
bool ds_zchunk_level_ok(int level);

/* Byte-plane shuffle and its inverse (dst and src do not overlap); widths 2 and 4
 * use SSE2 where the compiler targets it. The _ref versions are the plain loops
 * the fast ones are tested against. */
void ds_zchunk_shuffle(uint8_t *dst, const uint8_t *src, size_t n, int width);
void ds_zchunk_unshuffle(uint8_t *dst, const uint8_t *src, size_t n, int width);
void ds_zchunk_shuffle_ref(uint8_t *dst, const uint8_t *src, size_t n, int width);
void ds_zchunk_unshuffle_ref(uint8_t *dst, const uint8_t *src, size_t n, int width);
/* Raw bytes [off, off+len) (off + len <= n) of the chunk whose shuffled form is
 * src[0..n): what ds_zchunk_unshuffle would write at dst - off, without the rest. */
void ds_zchunk_unshuffle_range(uint8_t *dst, const uint8_t *src, size_t n, int width, size_t off, size_t len);

typedef struct ds_zchunk_enc ds_zchunk_enc;
dsckpt_status ds_zchunk_enc_new(int level, ds_zchunk_enc **out);
void ds_zchunk_enc_free(ds_zchunk_enc *e); /* accepts NULL */
/* Encodes raw[0..n) (n <= DS_ZCHUNK_MAX_RAW) shuffled by `width`. On return
 * *stored points either into the encoder (valid until its next call) or at raw
 * itself, with *stored_n bytes and *kind saying which: DS_ZCHUNK_ZSTD only when the
 * frame is strictly smaller than n. */
dsckpt_status ds_zchunk_encode(ds_zchunk_enc *e, const void *raw, size_t n, int width, const uint8_t **stored,
                               size_t *stored_n, ds_zchunk_kind *kind);

/* Checks a chunk's claimed sizes before anything is allocated for it: raw_n at most
 * DS_ZCHUNK_MAX_RAW, a raw chunk's stored size equal to raw_n, a zstd chunk's
 * positive and smaller than raw_n, the width valid (1 for raw). DSCKPT_ECORRUPT
 * naming `what` otherwise. */
dsckpt_status ds_zchunk_check(ds_zchunk_kind kind, int width, uint64_t stored_n, uint64_t raw_n, const char *what);

typedef struct ds_zchunk_dec ds_zchunk_dec;
dsckpt_status ds_zchunk_dec_new(ds_zchunk_dec **out);
void ds_zchunk_dec_free(ds_zchunk_dec *d); /* accepts NULL */
/* Decodes one stored chunk into raw[0..raw_n) (the caller's buffer, raw_n bytes).
 * Runs ds_zchunk_check first; then a zstd chunk must be one frame covering exactly
 * stored_n bytes whose header states raw_n, and must decode to raw_n bytes.
 * DSCKPT_ECORRUPT naming `what` for anything else; raw is then unspecified. */
dsckpt_status ds_zchunk_decode(ds_zchunk_dec *d, ds_zchunk_kind kind, int width, const void *stored,
                               size_t stored_n, void *raw, size_t raw_n, const char *what);

/* As ds_zchunk_decode, but leaves the chunk in its shuffled form in shuf[0..raw_n)
 * (ds_zchunk_unshuffle_range reads raw bytes out of it), without a copy of the
 * decoder's own. A raw chunk is copied unless shuf is stored itself. */
dsckpt_status ds_zchunk_decode_shuffled(ds_zchunk_dec *d, ds_zchunk_kind kind, int width, const void *stored,
                                        size_t stored_n, void *shuf, size_t raw_n, const char *what);

#endif /* DSCKPT_ZCHUNK_H */
