/*
 * safetensors.c — the strict safetensors header reader and the planning writer
 * declared in safetensors.h. The byte layout and the reference implementation's
 * rules are in docs/formats/safetensors.md (sections 1.1-1.4).
 *
 * Reader pipeline (st_parse_header), each stage assuming the previous passed:
 *   1. sizes: N <= ST_MAX_HEADER and 8 + N <= file size;
 *   2. the header bytes are strict UTF-8 (no overlongs, surrogates, > U+10FFFF);
 *   3. JSON whitespace, then '{' (leading whitespace is accepted, as the newest
 *      reference reader does since #686; older readers refuse it, so our writer
 *      only pads at the end);
 *   4. cJSON parses the object; only JSON whitespace may follow it;
 *   5. a lexical pass over the raw text closes the gaps where cJSON is more lenient
 *      than serde_json (see lex_check);
 *   6. every entry is checked for shape, dtype and offsets, names for duplicates;
 *   7. tensors sorted by data_offsets must tile [0, last end) exactly, and
 *      8 + N + last end must be the file size.
 * Every violation has its own message naming the file, and the tensor and offset
 * where there is one.
 */
#include "safetensors.h"

#include "fsutil.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_LEN_BYTES 8 /* the little-endian u64 N at the start of the file */
#define ST_META_KEY "__metadata__"

/* Names go into messages through this bound so a hostile 1 MB name cannot push
 * the rest of the message out of the error buffer. */
#define NAMEF "%.200s"

typedef unsigned long long ull; /* for printf of uint64_t without PRIu64 noise */

/* ---- dtypes ---- */

/* Position in the reference's `Dtype` enum, whose declaration order is the sort
 * order its writer uses (descending). Only our dtypes; the gaps (F4, F8_*, C64...)
 * do not matter because only the relative order is used. */
static int dtype_rank(dsckpt_dtype t) {
    switch (t) {
    case DSCKPT_BOOL: return 0;
    case DSCKPT_U8: return 1;
    case DSCKPT_I8: return 2;
    case DSCKPT_I16: return 3;
    case DSCKPT_U16: return 4;
    case DSCKPT_F16: return 5;
    case DSCKPT_BF16: return 6;
    case DSCKPT_I32: return 7;
    case DSCKPT_U32: return 8;
    case DSCKPT_F32: return 9;
    case DSCKPT_F64: return 10;
    case DSCKPT_I64: return 11;
    case DSCKPT_U64: return 12;
    case DSCKPT_DTYPE_COUNT: break;
    }
    return -1;
}

/* Exact, case-sensitive safetensors spelling only: dsckpt_dtype_parse() also takes
 * aliases ("fp32"), which a file must not use. */
static bool dtype_from_name(const char *s, dsckpt_dtype *out) {
    for (int i = 0; i < DSCKPT_DTYPE_COUNT; i++) {
        if (strcmp(s, dsckpt_dtype_name((dsckpt_dtype)i)) == 0) {
            *out = (dsckpt_dtype)i;
            return true;
        }
    }
    return false;
}

/* ---- small helpers ---- */

static bool utf8_valid(const char *s) {
    size_t n = strlen(s);
    return ds_utf8_valid_prefix((const uint8_t *)s, n, false) == n;
}

/* JSON's whitespace set (RFC 8259): what serde_json skips. cJSON skips every byte
 * <= 0x20, which is why lex_check exists. */
static bool json_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static bool is_hex(uint8_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* "[5, 4]". Callers have checked ndim <= ST_MAX_DIMS and every dim <= 2^48-1
 * (15 digits), so the text fits: 16 * 15 digits + 15 * ", " + "[]" = 272 bytes. */
#define SHAPE_BUF 288
static const char *fmt_shape(char *buf, const uint64_t *shape, int ndim) {
    size_t len = 1;
    buf[0] = '[';
    for (int d = 0; d < ndim && len < SHAPE_BUF; d++)
        len += (size_t)snprintf(buf + len, SHAPE_BUF - len, "%s%llu", d ? ", " : "", (ull)shape[d]);
    if (len < SHAPE_BUF) snprintf(buf + len, SHAPE_BUF - len, "]");
    return buf;
}

/* ======================================================================= */
/* Reader                                                                   */
/* ======================================================================= */

/* What st_parse_header hands out. `pub` is first so an st_header * is also an
 * st_header_impl *; st_header values must therefore only come from
 * st_parse_header (st_header_free relies on it). */
typedef struct st_header_impl {
    st_header pub;
    char *strings;   /* one arena holding every tensor name, metadata key and value */
    size_t *by_name; /* tensor indices sorted by name: duplicate check and st_find */
} st_header_impl;

void st_header_free(st_header *h) {
    if (!h) return;
    st_header_impl *hi = (st_header_impl *)h;
    free(h->tensors);
    free(h->meta);
    free(hi->strings);
    free(hi->by_name);
    free(hi);
}

/* Lexical pass over the raw header text [p, p + n), run after cJSON accepted it,
 * so the text is known to be JSON in cJSON's lenient sense. It refuses what
 * serde_json (and RFC 8259) refuse but cJSON lets through:
 *   - control bytes outside strings other than JSON whitespace (cJSON skips any
 *     byte <= 0x20 between tokens);
 *   - raw control bytes (< 0x20) inside strings;
 *   - \u escapes that are not 4 hex digits (cJSON decodes "\uZZZZ" as U+0000);
 *   - \u0000, which cJSON decodes into a C string cut short; the format allows
 *     it but a char * name cannot hold it, so it is EUNSUPPORTED.
 * Numbers are all dims or offsets in a valid header and must be plain
 * non-negative integers ("0" or [1-9][0-9]*): cJSON reads them with strtod, so
 * "2.0", "2e0", "007" and "-0" would pass as integers although serde refuses
 * them. The first such number is reported through *bad_num (offset into p) and
 * not as an error here, so that the entry checks, whose messages name the tensor,
 * speak first. `base` is the file offset of p, for messages. */
static dsckpt_status lex_check(const uint8_t *p, size_t n, uint64_t base, const char *what,
                               size_t *bad_num, size_t *bad_num_len) {
    *bad_num = SIZE_MAX;
    *bad_num_len = 0;
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c == '"') {
            for (i++; i < n && p[i] != '"'; i++) {
                if (p[i] < 0x20)
                    return ds_err(DSCKPT_ECORRUPT,
                                  "%s: header has a raw control character 0x%02x inside a string "
                                  "at file offset %llu",
                                  what, p[i], (ull)(base + i));
                if (p[i] != '\\') continue;
                if (i + 1 < n && p[i + 1] == 'u') {
                    if (n - i < 6 || !is_hex(p[i + 2]) || !is_hex(p[i + 3]) || !is_hex(p[i + 4]) ||
                        !is_hex(p[i + 5]))
                        return ds_err(DSCKPT_ECORRUPT,
                                      "%s: header has a malformed \\u escape at file offset %llu",
                                      what, (ull)(base + i));
                    if (memcmp(p + i + 2, "0000", 4) == 0)
                        return ds_err(DSCKPT_EUNSUPPORTED,
                                      "%s: header string has a NUL character (\\u0000) at file "
                                      "offset %llu; names with NUL are not supported",
                                      what, (ull)(base + i));
                    i += 5;
                } else {
                    i++; /* skip the escaped character (cJSON vetted it) */
                }
            }
            i++; /* closing quote */
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t s = i;
            while (i < n && (p[i] == '-' || p[i] == '+' || p[i] == '.' || p[i] == 'e' ||
                             p[i] == 'E' || (p[i] >= '0' && p[i] <= '9')))
                i++;
            bool plain = true;
            for (size_t k = s; k < i; k++)
                if (p[k] < '0' || p[k] > '9') plain = false;
            if (p[s] == '0' && i - s > 1) plain = false;
            if (!plain && *bad_num == SIZE_MAX) {
                *bad_num = s;
                *bad_num_len = i - s;
            }
        } else {
            if (c < 0x20 && !json_ws(c))
                return ds_err(DSCKPT_ECORRUPT,
                              "%s: header has a control character 0x%02x at file offset %llu", what,
                              c, (ull)(base + i));
            i++;
        }
    }
    return DSCKPT_OK;
}

/* Why a JSON value is not a valid dim/offset, or NULL if it is (value in *out).
 * cJSON keeps numbers as doubles; every integer up to 2^48 - 1 is exact in a
 * double, and lex_check refuses fractional or exponent spellings, so a value that
 * passes here is the integer written in the file. */
static const char *json_u48(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return "is not a number";
    double d = v->valuedouble;
    if (d < 0) return "is negative";
    if (!(d <= (double)ST_MAX_OFFSET)) return "exceeds 2^48-1";
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return "is not an integer";
    *out = u;
    return NULL;
}

static char *arena_put(char **cursor, const char *s) {
    size_t len = strlen(s) + 1;
    char *dst = *cursor;
    memcpy(dst, s, len);
    *cursor += len;
    return dst;
}

/* Checks one tensor entry `e` (key `name`) and fills *t (all but t->name). */
static dsckpt_status parse_entry(const cJSON *e, const char *name, const char *what, st_tensor *t) {
#define ENTRY_ERR(st, fmt, ...)                                                                    \
    ds_err(st, "%s: tensor '" NAMEF "': " fmt, what, name, ##__VA_ARGS__)
    if (!cJSON_IsObject(e)) return ENTRY_ERR(DSCKPT_ECORRUPT, "entry is not a JSON object");
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
    for (const cJSON *k = e->child; k; k = k->next) {
        const cJSON **slot;
        if (strcmp(k->string, "dtype") == 0)
            slot = &dtype;
        else if (strcmp(k->string, "shape") == 0)
            slot = &shape;
        else if (strcmp(k->string, "data_offsets") == 0)
            slot = &offs;
        else
            return ENTRY_ERR(DSCKPT_ECORRUPT,
                             "unknown key '" NAMEF "' (expected dtype, shape, data_offsets)",
                             k->string);
        if (*slot) return ENTRY_ERR(DSCKPT_ECORRUPT, "duplicate key '%s'", k->string);
        *slot = k;
    }
    if (!dtype) return ENTRY_ERR(DSCKPT_ECORRUPT, "missing key '%s'", "dtype");
    if (!shape) return ENTRY_ERR(DSCKPT_ECORRUPT, "missing key '%s'", "shape");
    if (!offs) return ENTRY_ERR(DSCKPT_ECORRUPT, "missing key '%s'", "data_offsets");

    if (!cJSON_IsString(dtype)) return ENTRY_ERR(DSCKPT_ECORRUPT, "dtype is not a string");
    /* Any name we do not know is EUNSUPPORTED rather than ECORRUPT: the reference
     * keeps adding dtypes (F8_*, F4, C64...), and a file using one is valid. */
    if (!dtype_from_name(dtype->valuestring, &t->dtype))
        return ENTRY_ERR(DSCKPT_EUNSUPPORTED, "unsupported dtype '" NAMEF "'", dtype->valuestring);

    if (!cJSON_IsArray(shape)) return ENTRY_ERR(DSCKPT_ECORRUPT, "shape is not an array");
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS)
        return ENTRY_ERR(DSCKPT_EUNSUPPORTED, "shape has %d dims (at most %d supported)", ndim,
                         ST_MAX_DIMS);
    t->ndim = 0;
    for (const cJSON *d = shape->child; d; d = d->next) {
        const char *why = json_u48(d, &t->shape[t->ndim]);
        if (why) return ENTRY_ERR(DSCKPT_ECORRUPT, "shape dim %d %s", t->ndim, why);
        t->ndim++;
    }

    if (!cJSON_IsArray(offs)) return ENTRY_ERR(DSCKPT_ECORRUPT, "data_offsets is not an array");
    int noffs = cJSON_GetArraySize(offs);
    if (noffs != 2)
        return ENTRY_ERR(DSCKPT_ECORRUPT, "data_offsets has %d elements (expected 2)", noffs);
    const char *why = json_u48(offs->child, &t->begin);
    if (why) return ENTRY_ERR(DSCKPT_ECORRUPT, "data_offsets begin %s", why);
    why = json_u48(offs->child->next, &t->end);
    if (why) return ENTRY_ERR(DSCKPT_ECORRUPT, "data_offsets end %s", why);
    if (t->begin > t->end)
        return ENTRY_ERR(DSCKPT_ECORRUPT, "data_offsets [%llu, %llu) has begin > end",
                         (ull)t->begin, (ull)t->end);

    char sh[SHAPE_BUF];
    t->numel = 1;
    for (int d = 0; d < t->ndim; d++)
        if (ds_mul_overflow(t->numel, t->shape[d], &t->numel))
            return ENTRY_ERR(DSCKPT_ECORRUPT, "element count of shape %s overflows 64 bits",
                             fmt_shape(sh, t->shape, t->ndim));
    uint64_t bytes;
    if (ds_mul_overflow(t->numel, dsckpt_dtype_size(t->dtype), &bytes))
        return ENTRY_ERR(DSCKPT_ECORRUPT, "byte size of shape %s x %s overflows 64 bits",
                         fmt_shape(sh, t->shape, t->ndim), dsckpt_dtype_name(t->dtype));
    if (bytes != t->end - t->begin)
        return ENTRY_ERR(DSCKPT_ECORRUPT,
                         "data_offsets [%llu, %llu) but shape %s x %s needs %llu bytes",
                         (ull)t->begin, (ull)t->end, fmt_shape(sh, t->shape, t->ndim),
                         dsckpt_dtype_name(t->dtype), (ull)bytes);
    return DSCKPT_OK;
#undef ENTRY_ERR
}

typedef struct name_ix {
    const char *name;
    size_t ix;
} name_ix;

static int cmp_name_ix(const void *a, const void *b) {
    const name_ix *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    return (x->ix > y->ix) - (x->ix < y->ix);
}

typedef struct span_ix {
    uint64_t begin, end;
    size_t ix;
} span_ix;

/* (begin, end) like the reference's sort_by_key(data_offsets): the secondary key
 * matters because a zero-size tensor [k, k) and the tensor [k, m) after it share
 * a begin, and only [k, k) first tiles. Header index last, for stable messages. */
static int cmp_span_ix(const void *a, const void *b) {
    const span_ix *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return (x->ix > y->ix) - (x->ix < y->ix);
}

/* Checks the __metadata__ value and copies it into h. */
static dsckpt_status parse_meta(const cJSON *m, const char *what, st_header *h, char **cursor) {
    if (cJSON_IsNull(m)) return DSCKPT_OK; /* serde reads `null` as an absent Option */
    if (!cJSON_IsObject(m))
        return ds_err(DSCKPT_ECORRUPT, "%s: __metadata__ is not a JSON object", what);
    size_t n = (size_t)cJSON_GetArraySize(m);
    DS_TRY(ds_calloc(n, sizeof *h->meta, &h->meta));
    for (const cJSON *v = m->child; v; v = v->next) {
        if (!cJSON_IsString(v))
            return ds_err(DSCKPT_ECORRUPT,
                          "%s: __metadata__ value of '" NAMEF "' is not a string (metadata is a "
                          "string -> string map)",
                          what, v->string);
        st_meta *e = &h->meta[h->nmeta++];
        e->key = arena_put(cursor, v->string);
        e->value = arena_put(cursor, v->valuestring);
    }
    if (n < 2) return DSCKPT_OK;
    name_ix *keys;
    DS_TRY(ds_malloc(n * sizeof *keys, &keys));
    for (size_t i = 0; i < n; i++) keys[i] = (name_ix){h->meta[i].key, i};
    qsort(keys, n, sizeof *keys, cmp_name_ix);
    dsckpt_status st = DSCKPT_OK;
    for (size_t i = 1; i < n && st == DSCKPT_OK; i++)
        if (strcmp(keys[i - 1].name, keys[i].name) == 0)
            st = ds_err(DSCKPT_ECORRUPT, "%s: duplicate __metadata__ key '" NAMEF "'", what,
                        keys[i].name);
    free(keys);
    return st;
}

/* The tensors sorted by name (kept for st_find). cJSON keeps duplicate keys as
 * separate items; serde would keep the last one silently: refuse them. */
static dsckpt_status index_by_name(st_header_impl *hi, size_t ntensors, const char *what) {
    const st_header *h = &hi->pub;
    name_ix *byname;
    DS_TRY(ds_malloc(ntensors * sizeof *byname, &byname));
    for (size_t i = 0; i < ntensors; i++) byname[i] = (name_ix){h->tensors[i].name, i};
    qsort(byname, ntensors, sizeof *byname, cmp_name_ix);
    dsckpt_status st = ds_malloc(ntensors * sizeof *hi->by_name, &hi->by_name);
    for (size_t i = 0; i < ntensors && st == DSCKPT_OK; i++) {
        hi->by_name[i] = byname[i].ix;
        if (i && strcmp(byname[i - 1].name, byname[i].name) == 0)
            st = ds_err(DSCKPT_ECORRUPT, "%s: duplicate tensor name '" NAMEF "'", what,
                        byname[i].name);
    }
    free(byname);
    return st;
}

/* The tensors' data_offsets tile the data buffer from 0 with no gap and no
 * overlap; *end gets where the last one ends, *last that tensor (NULL if none). */
static dsckpt_status check_tiling(const st_header *h, const char *what, uint64_t *end, const st_tensor **last) {
    size_t ntensors = h->n;
    span_ix *spans;
    DS_TRY(ds_malloc(ntensors * sizeof *spans, &spans));
    for (size_t i = 0; i < ntensors; i++)
        spans[i] = (span_ix){h->tensors[i].begin, h->tensors[i].end, i};
    qsort(spans, ntensors, sizeof *spans, cmp_span_ix);
    dsckpt_status st = DSCKPT_OK;
    uint64_t pos = 0;
    const st_tensor *prev = NULL;
    for (size_t k = 0; k < ntensors && st == DSCKPT_OK; k++) {
        const st_tensor *t = &h->tensors[spans[k].ix];
        if (t->begin != pos && !prev) {
            st = ds_err(DSCKPT_ECORRUPT,
                        "%s: tensor '" NAMEF "': first tensor in the data buffer starts at "
                        "data offset %llu, not 0",
                        what, t->name, (ull)t->begin);
        } else if (t->begin > pos) {
            st = ds_err(DSCKPT_ECORRUPT,
                        "%s: tensor '" NAMEF "': gap of %llu bytes in the data buffer before it "
                        "(previous tensor '" NAMEF
                        "' ends at data offset %llu, this begins at %llu)",
                        what, t->name, (ull)(t->begin - pos), prev->name, (ull)pos, (ull)t->begin);
        } else if (t->begin < pos) {
            st = ds_err(DSCKPT_ECORRUPT,
                        "%s: tensor '" NAMEF "': data_offsets [%llu, %llu) overlap tensor '" NAMEF
                        "' [%llu, %llu)",
                        what, t->name, (ull)t->begin, (ull)t->end, prev->name, (ull)prev->begin,
                        (ull)prev->end);
        }
        pos = t->end;
        prev = t;
    }
    free(spans);
    *end = pos;
    *last = prev;
    return st;
}

/* Everything after the JSON parse: entries, duplicates, tiling, coverage. */
static dsckpt_status check_tree(const cJSON *root, const uint8_t *text, uint64_t text_base,
                                size_t bad_num, size_t bad_num_len, uint64_t n, uint64_t file_size,
                                const char *what, st_header_impl *hi) {
    st_header *h = &hi->pub;
    const cJSON *meta = NULL;
    size_t ntensors = 0, arena = 1;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, ST_META_KEY) == 0) {
            if (meta) return ds_err(DSCKPT_ECORRUPT, "%s: duplicate __metadata__ entry", what);
            meta = c;
            if (!cJSON_IsObject(c)) continue; /* parse_meta reports it */
            for (const cJSON *v = c->child; v; v = v->next)
                arena +=
                    strlen(v->string) + 1 + (cJSON_IsString(v) ? strlen(v->valuestring) + 1 : 0);
        } else {
            ntensors++;
            arena += strlen(c->string) + 1;
        }
    }
    /* Every string is a piece of the header text, so the arena is bounded by N. */
    DS_TRY(ds_malloc(arena, &hi->strings));
    char *cursor = hi->strings;
    if (meta) DS_TRY(parse_meta(meta, what, h, &cursor));

    DS_TRY(ds_calloc(ntensors, sizeof *h->tensors, &h->tensors));
    for (const cJSON *c = root->child; c; c = c->next) {
        if (c == meta) continue;
        st_tensor *t = &h->tensors[h->n++];
        t->name = arena_put(&cursor, c->string);
        DS_TRY(parse_entry(c, t->name, what, t));
    }
    if (bad_num != SIZE_MAX)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: header number '%.*s' at file offset %llu is not a plain non-negative "
                      "integer",
                      what, (int)DS_MIN(bad_num_len, 40), (const char *)text + bad_num,
                      (ull)(text_base + bad_num));

    DS_TRY(index_by_name(hi, ntensors, what));
    uint64_t pos = 0;
    const st_tensor *prev = NULL;
    DS_TRY(check_tiling(h, what, &pos, &prev));

    /* pos <= 2^48 and n <= 1e8: no overflow. */
    uint64_t want = ST_LEN_BYTES + n + pos;
    if (want < file_size)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: %llu trailing bytes after the data buffer (data ends at file offset "
                      "%llu, file size %llu)",
                      what, (ull)(file_size - want), (ull)want, (ull)file_size);
    if (want > file_size)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: file is truncated: tensor '" NAMEF "' ends at file offset %llu but the "
                      "file has %llu bytes",
                      what, prev ? prev->name : "", (ull)want, (ull)file_size);
    return DSCKPT_OK;
}

dsckpt_status st_parse_header(const uint8_t *json, uint64_t n, uint64_t file_size, const char *what,
                              st_header **out) {
    *out = NULL;
    if (!what) what = "safetensors";
    if (n > ST_MAX_HEADER)
        return ds_err(DSCKPT_ECORRUPT, "%s: header length %llu exceeds the limit of %llu bytes",
                      what, (ull)n, (ull)ST_MAX_HEADER);
    if (file_size < ST_LEN_BYTES || n > file_size - ST_LEN_BYTES)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: header length %llu runs past the end of the file (%llu bytes)", what,
                      (ull)n, (ull)file_size);

    size_t good = ds_utf8_valid_prefix(json, (size_t)n, false);
    if (good != n)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: header is not valid UTF-8 (byte 0x%02x at file offset %llu)", what,
                      json[good], (ull)(ST_LEN_BYTES + good));

    size_t start = 0;
    while (start < n && json_ws(json[start])) start++;
    if (start == n)
        return ds_err(DSCKPT_ECORRUPT, "%s: header is empty (%llu bytes of whitespace)", what,
                      (ull)n);
    if (json[start] != '{')
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: header is not a JSON object (begins with '%c' at file offset %llu, "
                      "expected '{')",
                      what, json[start] >= 0x20 && json[start] < 0x7f ? json[start] : '?',
                      (ull)(ST_LEN_BYTES + start));

    const char *text = (const char *)json + start;
    size_t len = (size_t)n - start;
    uint64_t base = ST_LEN_BYTES + start;
    const char *end = NULL;
    /* Not require_null_terminated: with an explicit length cJSON would then insist
     * on a NUL *inside* the buffer. The tail is checked below instead. Note cJSON
     * also records a failure position in a process-global (cJSON_GetErrorPtr), a
     * write we cannot avoid; we read the position from `end` instead. */
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) /* cJSON reports out-of-memory the same way; rare enough to accept */
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: header is not valid JSON (parse error near file offset %llu)", what,
                      (ull)(base + (end ? (uint64_t)(end - text) : 0)));
    dsckpt_status st = DSCKPT_OK;
    st_header_impl *hi = NULL;
    size_t used = end ? (size_t)(end - text) : len;
    for (size_t i = used; i < len; i++) {
        if (!json_ws((uint8_t)text[i])) {
            st = ds_err(DSCKPT_ECORRUPT,
                        "%s: unexpected data after the header JSON object at file offset %llu",
                        what, (ull)(base + i));
            goto done;
        }
    }
    size_t bad_num, bad_num_len;
    DS_TRYGOTO(lex_check((const uint8_t *)text, used, base, what, &bad_num, &bad_num_len), done);
    if (!cJSON_IsObject(root)) { /* unreachable after the '{' check; kept as a guard */
        st = ds_err(DSCKPT_ECORRUPT, "%s: header is not a JSON object", what);
        goto done;
    }
    DS_TRYGOTO(ds_calloc(1, sizeof *hi, &hi), done);
    hi->pub.header_len = n;
    hi->pub.data_start = ST_LEN_BYTES + n;
    hi->pub.file_size = file_size;
    DS_TRYGOTO(
        check_tree(root, (const uint8_t *)text, base, bad_num, bad_num_len, n, file_size, what, hi),
        done);
    *out = &hi->pub;
    hi = NULL;
done:
    cJSON_Delete(root);
    if (hi) st_header_free(&hi->pub);
    return st;
}

/* pread exactly len bytes at off, retrying short reads and EINTR. A file that ends
 * early (it shrank since fstat) is ECORRUPT. */
static dsckpt_status pread_full(int fd, void *buf, size_t len, uint64_t off, const char *what) {
    uint8_t *p = buf;
    while (len) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return ds_err_errno(errno, "%s: read of %zu bytes at offset %llu failed", what, len,
                                (ull)off);
        }
        if (r == 0)
            return ds_err(DSCKPT_ECORRUPT,
                          "%s: unexpected end of file at offset %llu (did the file shrink?)", what,
                          (ull)off);
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return DSCKPT_OK;
}

dsckpt_status st_read_fd(int fd, const char *what, st_header **out) {
    *out = NULL;
    if (!what) what = "safetensors";
    struct stat sb;
    if (fstat(fd, &sb) != 0) return ds_err_errno(errno, "%s: fstat failed", what);
    uint64_t size = sb.st_size > 0 ? (uint64_t)sb.st_size : 0;
    if (size < ST_LEN_BYTES)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: file is too short (%llu bytes) to hold the 8-byte header length", what,
                      (ull)size);
    uint8_t lenbuf[ST_LEN_BYTES];
    DS_TRY(pread_full(fd, lenbuf, sizeof lenbuf, 0, what));
    uint64_t n = ds_get_le64(lenbuf);
    /* Bound N before allocating anything. */
    if (n > ST_MAX_HEADER)
        return ds_err(DSCKPT_ECORRUPT, "%s: header length %llu exceeds the limit of %llu bytes",
                      what, (ull)n, (ull)ST_MAX_HEADER);
    if (n > size - ST_LEN_BYTES)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: header length %llu runs past the end of the file (%llu bytes)", what,
                      (ull)n, (ull)size);
    uint8_t *buf;
    DS_TRY(ds_malloc((size_t)n, &buf));
    dsckpt_status st = pread_full(fd, buf, (size_t)n, ST_LEN_BYTES, what);
    if (st == DSCKPT_OK) st = st_parse_header(buf, n, size, what, out);
    free(buf);
    return st;
}

dsckpt_status st_read_file(const char *path, st_header **out) {
    *out = NULL;
    int fd = -1;
    DS_TRY(ds_open_read(path, &fd, NULL)); /* regular files only */
    dsckpt_status st = st_read_fd(fd, path, out);
    close(fd);
    return st;
}

const st_tensor *st_find(const st_header *h, const char *name) {
    if (!h || !name) return NULL;
    const st_header_impl *hi = (const st_header_impl *)h;
    size_t lo = 0, hi_ix = h->n;
    while (lo < hi_ix) {
        size_t mid = lo + (hi_ix - lo) / 2;
        const st_tensor *t = &h->tensors[hi->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0)
            hi_ix = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *st_meta_get(const st_header *h, const char *key) {
    if (!h || !key) return NULL;
    for (size_t i = 0; i < h->nmeta; i++)
        if (strcmp(h->meta[i].key, key) == 0) return h->meta[i].value;
    return NULL;
}

/* ======================================================================= */
/* Writer                                                                   */
/* ======================================================================= */

/* Growable byte buffer with a sticky out-of-memory flag, for the header JSON. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const void *s, size_t n) {
    if (b->oom) return;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf *b, uint64_t v) {
    char tmp[24];
    int w = snprintf(tmp, sizeof tmp, "%llu", (ull)v);
    sb_put(b, tmp, (size_t)w);
}

/* A JSON string literal, escaped exactly as serde_json does so that our headers are
 * byte-identical to the reference writer's: \" and \\, the short forms \b \t \n \f
 * \r, other bytes < 0x20 as \u00xx (lowercase hex); everything else, UTF-8 and DEL
 * included, verbatim. */
static void sb_json_str(sbuf *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    sb_put(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *esc = NULL;
        char u[7];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\t': esc = "\\t"; break;
        case '\n': esc = "\\n"; break;
        case '\f': esc = "\\f"; break;
        case '\r': esc = "\\r"; break;
        default:
            if (c < 0x20) {
                memcpy(u, "\\u00", 4);
                u[4] = hex[c >> 4];
                u[5] = hex[c & 15];
                u[6] = '\0';
                esc = u;
            }
        }
        if (!esc) continue;
        sb_put(b, run, (size_t)(s - run));
        sb_str(b, esc);
        run = s + 1;
    }
    sb_put(b, run, (size_t)(s - run));
    sb_put(b, "\"", 1);
}

void st_plan_free(st_plan *p) {
    if (!p) return;
    free(p->header);
    free(p->order);
    free(p->offset);
    free(p->nbytes);
    free(p);
}

/* Sort context for the writer: qsort has no user pointer, so the keys are copied. */
typedef struct plan_ix {
    const char *name;
    int rank;
    size_t ix;
} plan_ix;

static int cmp_plan_ix(const void *a, const void *b) {
    const plan_ix *x = a, *y = b;
    if (x->rank != y->rank) return x->rank > y->rank ? -1 : 1; /* dtype descending */
    return strcmp(x->name, y->name); /* byte-wise, like Rust's String Ord; names are unique */
}

static dsckpt_status check_entries(const st_entry *entries, size_t n, uint64_t *nbytes) {
    for (size_t i = 0; i < n; i++) {
        const st_entry *e = &entries[i];
        if (!e->name || !*e->name)
            return ds_err(DSCKPT_EINVAL, "safetensors plan: entry %zu has an empty name", i);
        if (!utf8_valid(e->name))
            return ds_err(DSCKPT_EINVAL, "safetensors plan: entry %zu name is not valid UTF-8", i);
        if (strcmp(e->name, ST_META_KEY) == 0)
            return ds_err(DSCKPT_EINVAL,
                          "safetensors plan: '%s' is reserved and cannot name a tensor",
                          ST_META_KEY);
        if (dtype_rank(e->dtype) < 0)
            return ds_err(DSCKPT_EINVAL,
                          "safetensors plan: tensor '" NAMEF "' has unknown dtype %d", e->name,
                          (int)e->dtype);
        if (e->ndim < 0 || e->ndim > ST_MAX_DIMS)
            return ds_err(DSCKPT_EINVAL, "safetensors plan: tensor '" NAMEF "' has %d dims (0..%d)",
                          e->name, e->ndim, ST_MAX_DIMS);
        uint64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            if (e->shape[d] > ST_MAX_OFFSET)
                return ds_err(DSCKPT_EINVAL,
                              "safetensors plan: tensor '" NAMEF "' dim %d = %llu exceeds 2^48-1",
                              e->name, d, (ull)e->shape[d]);
            if (ds_mul_overflow(numel, e->shape[d], &numel))
                return ds_err(DSCKPT_EINVAL,
                              "safetensors plan: tensor '" NAMEF "' element count overflows",
                              e->name);
        }
        if (ds_mul_overflow(numel, dsckpt_dtype_size(e->dtype), &nbytes[i]) ||
            nbytes[i] > ST_MAX_OFFSET)
            return ds_err(DSCKPT_EINVAL,
                          "safetensors plan: tensor '" NAMEF "' is larger than 2^48-1 bytes",
                          e->name);
    }
    return DSCKPT_OK;
}

static dsckpt_status check_meta(const st_meta *meta, size_t nmeta) {
    for (size_t i = 0; i < nmeta; i++) {
        if (!meta[i].key || !meta[i].value)
            return ds_err(DSCKPT_EINVAL,
                          "safetensors plan: metadata entry %zu has a NULL key or value", i);
        if (!utf8_valid(meta[i].key) || !utf8_valid(meta[i].value))
            return ds_err(DSCKPT_EINVAL, "safetensors plan: metadata entry %zu is not valid UTF-8",
                          i);
        if (strcmp(meta[i].key, "format") == 0)
            return ds_err(DSCKPT_EINVAL,
                          "safetensors plan: metadata key 'format' is reserved (always \"pt\")");
        /* Metadata is a handful of entries: quadratic is fine here. */
        for (size_t j = 0; j < i; j++)
            if (strcmp(meta[i].key, meta[j].key) == 0)
                return ds_err(DSCKPT_EINVAL, "safetensors plan: duplicate metadata key '" NAMEF "'",
                              meta[i].key);
    }
    return DSCKPT_OK;
}

/* The header's compact JSON in the reference writer's layout: __metadata__
 * first, then the tensors in data order (p->order, p->offset, p->nbytes). */
static void header_json(sbuf *b, const st_entry *entries, const st_meta *meta, size_t nmeta, const st_plan *p) {
    size_t n = p->n;
    sb_str(b, "{\"" ST_META_KEY "\":{\"format\":\"pt\"");
    for (size_t i = 0; i < nmeta; i++) {
        sb_put(b, ",", 1);
        sb_json_str(b, meta[i].key);
        sb_put(b, ":", 1);
        sb_json_str(b, meta[i].value);
    }
    sb_put(b, "}", 1);
    for (size_t k = 0; k < n; k++) {
        const st_entry *e = &entries[p->order[k]];
        sb_put(b, ",", 1);
        sb_json_str(b, e->name);
        sb_str(b, ":{\"dtype\":\"");
        sb_str(b, dsckpt_dtype_name(e->dtype));
        sb_str(b, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            if (d) sb_put(b, ",", 1);
            sb_u64(b, e->shape[d]);
        }
        sb_str(b, "],\"data_offsets\":[");
        sb_u64(b, p->offset[p->order[k]]);
        sb_put(b, ",", 1);
        sb_u64(b, p->offset[p->order[k]] + p->nbytes[p->order[k]]);
        sb_str(b, "]}");
    }
    sb_put(b, "}", 1);
}

dsckpt_status st_plan_make(const st_entry *entries, size_t n, const st_meta *meta, size_t nmeta,
                           st_plan **out) {
    *out = NULL;
    if ((n && !entries) || (nmeta && !meta))
        return ds_err(DSCKPT_EINVAL, "safetensors plan: NULL entries or metadata");
    dsckpt_status st;
    st_plan *p = NULL;
    plan_ix *keys = NULL;
    sbuf b = {0};
    DS_TRYGOTO(ds_calloc(1, sizeof *p, &p), fail);
    DS_TRYGOTO(ds_calloc(n, sizeof *p->order, &p->order), fail);
    DS_TRYGOTO(ds_calloc(n, sizeof *p->offset, &p->offset), fail);
    DS_TRYGOTO(ds_calloc(n, sizeof *p->nbytes, &p->nbytes), fail);
    DS_TRYGOTO(ds_malloc(n * sizeof *keys, &keys), fail);
    p->n = n;
    DS_TRYGOTO(check_entries(entries, n, p->nbytes), fail);
    DS_TRYGOTO(check_meta(meta, nmeta), fail);

    /* Duplicates first, by name alone: in the dtype order they need not be adjacent. */
    for (size_t i = 0; i < n; i++) keys[i] = (plan_ix){entries[i].name, 0, i};
    qsort(keys, n, sizeof *keys, cmp_plan_ix);
    for (size_t i = 1; i < n; i++)
        if (strcmp(keys[i - 1].name, keys[i].name) == 0) {
            st = ds_err(DSCKPT_EINVAL, "safetensors plan: duplicate tensor name '" NAMEF "'",
                        keys[i].name);
            goto fail;
        }
    for (size_t i = 0; i < n; i++)
        keys[i] = (plan_ix){entries[i].name, dtype_rank(entries[i].dtype), i};
    qsort(keys, n, sizeof *keys, cmp_plan_ix);

    uint64_t off = 0;
    for (size_t k = 0; k < n; k++) {
        size_t i = keys[k].ix;
        p->order[k] = i;
        p->offset[i] = off;
        if (ds_add_overflow(off, p->nbytes[i], &off) || off > ST_MAX_OFFSET) {
            st = ds_err(DSCKPT_EINVAL, "safetensors plan: total data size exceeds 2^48-1 bytes");
            goto fail;
        }
    }
    p->data_size = off;

    header_json(&b, entries, meta, nmeta, p);
    if (b.oom) {
        st = ds_err(DSCKPT_ENOMEM, "safetensors plan: out of memory building a %zu-byte header",
                    b.len);
        goto fail;
    }
    /* Pad with spaces to a multiple of 8 so the data buffer (and, given the dtype
     * order, every tensor) starts 8-byte aligned. */
    size_t hlen = (b.len + 7) & ~(size_t)7;
    if (hlen > ST_MAX_HEADER) {
        st = ds_err(DSCKPT_EINVAL, "safetensors plan: header would be %zu bytes (limit %llu)", hlen,
                    (ull)ST_MAX_HEADER);
        goto fail;
    }
    DS_TRYGOTO(ds_malloc(ST_LEN_BYTES + hlen, &p->header), fail);
    ds_put_le64(p->header, hlen);
    memcpy(p->header + ST_LEN_BYTES, b.p, b.len);
    memset(p->header + ST_LEN_BYTES + b.len, ' ', hlen - b.len);
    p->header_bytes = ST_LEN_BYTES + hlen;
    p->file_size = p->header_bytes + p->data_size;
    free(b.p);
    free(keys);
    *out = p;
    return DSCKPT_OK;
fail:
    free(b.p);
    free(keys);
    st_plan_free(p);
    return st;
}
