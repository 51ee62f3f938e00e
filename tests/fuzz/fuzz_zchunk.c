/*
 * fuzz_zchunk.c — fuzz target for the compressed-chunk reader (formats/zchunk.h).
 *
 * Input: byte 0 selects the mode and the chunk's kind and shuffle width, bytes 1-4
 * are the raw size the manifest would claim (little-endian), the rest is the chunk.
 * Byte 0: bit 0 zstd (else raw), bits 1-2 the width (1, 2, 4, 8), bit 3 the mode,
 * bit 4 planes (overrides bit 0; in round trip mode: the planes codec, else the
 * single frame), bit 7 claims 256 times more.
 *   mode "decode" (bit 3 clear): ds_zchunk_decode of the stored bytes as a
 *     (raw|zstd|planes, width) chunk of the claimed size. Claims past the chunk limit
 *     must be refused before anything is allocated (ds_zchunk_check); claims above
 *     4 MiB that pass are not decoded here (time). A chunk that decodes is encoded
 *     again and decoded again: the bytes must come back (traps otherwise).
 *   mode "round trip" (bit 3 set): the rest is raw data; encode, decode, compare.
 */
#include "zchunk.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_RAW (4u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ds_zchunk_enc *enc[2]; /* single frame, planes */
static ds_zchunk_dec *dec;

static void round_trip(const uint8_t *raw, size_t n, int width, int planes) {
    const uint8_t *stored;
    size_t sn;
    ds_zchunk_kind kind;
    if (ds_zchunk_encode(enc[planes], raw, n, width, &stored, &sn, &kind) != DSCKPT_OK) abort();
    if (sn > n || (kind != DS_ZCHUNK_RAW && sn >= n)) abort(); /* compression never costs space */
    if (kind == DS_ZCHUNK_PLANES && (!planes || width == 1)) abort();
    uint8_t *copy = malloc(sn ? sn : 1), *back = malloc(n ? n : 1);
    if (!copy || !back) abort();
    memcpy(copy, stored, sn);
    if (ds_zchunk_decode(dec, kind, kind == DS_ZCHUNK_RAW ? 1 : width, copy, sn, back, n, "fuzz") != DSCKPT_OK) abort();
    if (n && memcmp(back, raw, n) != 0) abort();
    free(copy);
    free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 5) return 0;
    for (int k = 0; k < 2; k++)
        if (!enc[k] && (ds_zchunk_enc_new(1, &enc[k]) != DSCKPT_OK ||
                        ds_zchunk_enc_set_codec(enc[k], k ? DS_ZCODEC_PLANES : DS_ZCODEC_FRAME,
                                                DS_ZCHUNK_PLANE_MIN_GAIN_PERMILLE) != DSCKPT_OK))
            abort();
    if (!dec && ds_zchunk_dec_new(&dec) != DSCKPT_OK) abort();
    static const int widths[4] = {1, 2, 4, 8};
    int width = widths[(data[0] >> 1) & 3], planes = (data[0] & 0x10) != 0;
    ds_zchunk_kind kind = planes ? DS_ZCHUNK_PLANES : (data[0] & 1) ? DS_ZCHUNK_ZSTD : DS_ZCHUNK_RAW;
    uint64_t claim = (uint64_t)data[1] | (uint64_t)data[2] << 8 | (uint64_t)data[3] << 16 | (uint64_t)data[4] << 24;
    if (data[0] & 0x80) claim <<= 8; /* reach past the chunk limit too */
    const uint8_t *body = data + 5;
    size_t n = size - 5;
    if (data[0] & 8) {
        round_trip(body, n, width, planes);
        return 0;
    }
    if (ds_zchunk_check(kind, width, n, claim, "fuzz") != DSCKPT_OK) {
        /* Refused from the sizes alone: decode must refuse too, without touching
         * the output (NULL). */
        if (ds_zchunk_decode(dec, kind, width, body, n, NULL, (size_t)claim, "fuzz") == DSCKPT_OK) abort();
        return 0;
    }
    if (claim > DS_ZCHUNK_MAX_RAW) abort(); /* the check let a bomb through */
    if (claim > FUZZ_MAX_RAW) return 0;
    uint8_t *raw = malloc(claim ? (size_t)claim : 1);
    if (!raw) abort();
    if (ds_zchunk_decode(dec, kind, width, body, n, raw, (size_t)claim, "fuzz") == DSCKPT_OK)
        round_trip(raw, (size_t)claim, width, planes);
    free(raw);
    return 0;
}
