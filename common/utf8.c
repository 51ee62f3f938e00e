/*
 * utf8.c — UTF-8 validation of names and strings read from files (internal.h).
 */
#include "internal.h"

/* Returns the length of the valid UTF-8 prefix of s[0..n): n when all of it is
 * valid. Rejects overlong forms, UTF-16 surrogates (U+D800..DFFF), code points
 * above U+10FFFF and truncated sequences, as Rust's str::from_utf8 does. */
size_t ds_utf8_valid_prefix(const uint8_t *s, size_t n, bool allow_surrogates) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0; /* overlong */
            if (c == 0xED && !allow_surrogates) hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90; /* overlong */
            if (c == 0xF4) hi = 0x8F; /* > U+10FFFF */
        } else {
            return i; /* continuation byte, C0/C1 overlong lead, or F5..FF */
        }
        if (n - i < len) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += len;
    }
    return n;
}
