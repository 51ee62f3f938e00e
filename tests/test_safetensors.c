/*
 * test_safetensors.c — the safetensors reader and writer: a writer round trip
 * through a real file, the exact header bytes, a catalogue of hand-made corrupt
 * files (each expecting a status and a message fragment), the valid edge cases,
 * writer argument checks, and a small truncation/mutation sweep for the sanitizers.
 */
#include "safetensors.h"
#include "tutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

/* The reference writer's order: position in its Dtype enum, sorted descending. */
static int ref_rank(dsckpt_dtype t) {
    static const dsckpt_dtype order[] = {
        DSCKPT_BOOL, DSCKPT_U8,  DSCKPT_I8,  DSCKPT_I16, DSCKPT_U16, DSCKPT_F16, DSCKPT_BF16,
        DSCKPT_I32,  DSCKPT_U32, DSCKPT_F32, DSCKPT_F64, DSCKPT_I64, DSCKPT_U64};
    for (int i = 0; i < (int)(sizeof order / sizeof order[0]); i++)
        if (order[i] == t) return i;
    return -1;
}

/* Writes 8-byte N + json[0..jlen) + data_len pattern bytes to dir/name. N is
 * *n_override if given, else jlen. Returns the malloc'd path. */
static char *write_st(const char *dir, const char *name, const char *json, size_t jlen,
                      uint64_t data_len, const uint64_t *n_override) {
    size_t total = 8 + jlen + (size_t)data_len;
    uint8_t *buf = malloc(total);
    CU_ASSERT_FATAL(buf != NULL);
    ds_put_le64(buf, n_override ? *n_override : jlen);
    memcpy(buf + 8, json, jlen);
    for (uint64_t i = 0; i < data_len; i++) buf[8 + jlen + i] = (uint8_t)(i * 7 + 1);
    char *path = tu_path(dir, name);
    CU_ASSERT_FATAL(path != NULL);
    CU_ASSERT_FATAL(tu_write(path, buf, total) == 0);
    free(buf);
    return path;
}

/* ---- writer round trip ---- */

#define U48 (1ull << 48)

/* Tensors of every dtype and of odd names (escapes, UTF-8, control bytes), in no
 * particular order; the writer sorts them. */
static const st_entry rt_entries[] = {
    {"wte.weight", DSCKPT_BF16, 2, {4, 3}},
    {"ln.bias", DSCKPT_F32, 1, {3}},
    {"step", DSCKPT_I64, 0, {0}}, /* 0-dim: one element */
    {"empty", DSCKPT_F16, 2, {0, 5}},
    {"quote\"back\\slash/", DSCKPT_U8, 1, {5}},
    {"uni\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", DSCKPT_F32, 2, {2, 2}}, /* é € 😀 */
    {"ctl\x01\x1f\ttab\nnl\r\b\f\x7f", DSCKPT_BOOL, 1, {3}},
    {"b", DSCKPT_F32, 1, {1}},
    {"a", DSCKPT_F32, 1, {1}},
    {"B", DSCKPT_F32, 0, {0}},
    {"zero.u64", DSCKPT_U64, 1, {0}}, /* zero-size, sorts first, shares offset 0 */
    {"u64", DSCKPT_U64, 1, {2}},
    {"f64", DSCKPT_F64, 1, {1}},
    {"i32", DSCKPT_I32, 1, {3}},
    {"u32", DSCKPT_U32, 1, {1}},
    {"u16", DSCKPT_U16, 1, {2}},
    {"i16", DSCKPT_I16, 1, {1}},
    {"i8", DSCKPT_I8, 1, {2}},
};
#define RT_N (sizeof rt_entries / sizeof rt_entries[0])

/* The plan's header: 8-aligned, N right, metadata first, space padding only at the end. */
static void rt_check_header(const st_plan *p) {
    CU_ASSERT_EQUAL(p->n, RT_N);
    CU_ASSERT_EQUAL(p->header_bytes % 8, 0);
    CU_ASSERT_EQUAL(ds_get_le64(p->header), p->header_bytes - 8);
    const char *fmt_first = "{\"__metadata__\":{\"format\":\"pt\",\"aliases\":";
    CU_ASSERT(memcmp(p->header + 8, fmt_first, strlen(fmt_first)) == 0);
    /* Only spaces pad, and only at the end. */
    size_t jend = p->header_bytes;
    while (jend > 8 && p->header[jend - 1] == ' ') jend--;
    CU_ASSERT(p->header[jend - 1] == '}');
    CU_ASSERT(p->header_bytes - jend < 8);
}

/* The plan's data order: dtype descending in the reference enum, then name
 * byte-wise; offsets packed, sizes from the shapes. */
static void rt_check_order(const st_plan *p) {
    const st_entry *entries = rt_entries;
    const size_t n = RT_N;
    bool seen[64] = {0};
    uint64_t off = 0;
    for (size_t k = 0; k < n; k++) {
        size_t i = p->order[k];
        CU_ASSERT_FATAL(i < n);
        CU_ASSERT(!seen[i]);
        seen[i] = true;
        CU_ASSERT_EQUAL(p->offset[i], off);
        uint64_t numel = 1;
        for (int d = 0; d < entries[i].ndim; d++) numel *= entries[i].shape[d];
        CU_ASSERT_EQUAL(p->nbytes[i], numel * dsckpt_dtype_size(entries[i].dtype));
        off += p->nbytes[i];
        if (k) {
            const st_entry *a = &entries[p->order[k - 1]], *b = &entries[i];
            int ra = ref_rank(a->dtype), rb = ref_rank(b->dtype);
            CU_ASSERT(ra > rb || (ra == rb && strcmp(a->name, b->name) < 0));
        }
    }
    CU_ASSERT_EQUAL(p->data_size, off);
    CU_ASSERT_EQUAL(p->file_size, p->header_bytes + off);
    CU_ASSERT_STRING_EQUAL(entries[p->order[0]].name, "u64");               /* "u64" < "zero.u64" */
    CU_ASSERT_STRING_EQUAL(entries[p->order[n - 1]].name, entries[6].name); /* BOOL last */
    /* Within F32: "B" < "a" < "b" < "ln.bias" < "uni..." (byte order). */
    size_t f32_first = 0;
    while (entries[p->order[f32_first]].dtype != DSCKPT_F32) f32_first++;
    CU_ASSERT_STRING_EQUAL(entries[p->order[f32_first]].name, "B");
    CU_ASSERT_STRING_EQUAL(entries[p->order[f32_first + 1]].name, "a");
    CU_ASSERT_STRING_EQUAL(entries[p->order[f32_first + 2]].name, "b");
    CU_ASSERT_STRING_EQUAL(entries[p->order[f32_first + 3]].name, "ln.bias");
}

/* A file image of the plan: header, then data byte j of entry i = (i*31 + j). */
static uint8_t *rt_file_image(const st_plan *p) {
    uint8_t *file = malloc(p->file_size);
    CU_ASSERT_FATAL(file != NULL);
    memcpy(file, p->header, p->header_bytes);
    for (size_t i = 0; i < RT_N; i++)
        for (uint64_t j = 0; j < p->nbytes[i]; j++)
            file[p->header_bytes + p->offset[i] + j] = (uint8_t)(i * 31 + j);
    return file;
}

/* The header read back from the file matches the plan and the entries. */
static void rt_check_read(const st_header *h, const st_plan *p, const uint8_t *file) {
    const st_entry *entries = rt_entries;
    const size_t n = RT_N;
    CU_ASSERT_EQUAL(h->n, n);
    CU_ASSERT_EQUAL(h->header_len, p->header_bytes - 8);
    CU_ASSERT_EQUAL(h->data_start, p->header_bytes);
    CU_ASSERT_EQUAL(h->file_size, p->file_size);
    CU_ASSERT_EQUAL_FATAL(h->nmeta, 3);
    CU_ASSERT_STRING_EQUAL(h->meta[0].key, "format");
    CU_ASSERT_STRING_EQUAL(h->meta[0].value, "pt");
    CU_ASSERT_STRING_EQUAL(h->meta[1].key, "aliases");
    CU_ASSERT_STRING_EQUAL(h->meta[1].value, "lm_head.weight=wte.weight");
    CU_ASSERT_STRING_EQUAL(h->meta[2].key, "k\"ey\\");
    CU_ASSERT_STRING_EQUAL(h->meta[2].value, "v\xc3\xa9\n");
    CU_ASSERT_STRING_EQUAL(st_meta_get(h, "format"), "pt");
    CU_ASSERT_PTR_NULL(st_meta_get(h, "nope"));
    for (size_t k = 0; k < n; k++) {
        /* The header lists tensors in data order. */
        CU_ASSERT_STRING_EQUAL(h->tensors[k].name, entries[p->order[k]].name);
    }
    for (size_t i = 0; i < n; i++) {
        const st_entry *e = &entries[i];
        const st_tensor *t = st_find(h, e->name);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t);
        CU_ASSERT_STRING_EQUAL(t->name, e->name);
        CU_ASSERT_EQUAL(t->dtype, e->dtype);
        CU_ASSERT_EQUAL(t->ndim, e->ndim);
        for (int d = 0; d < e->ndim; d++) CU_ASSERT_EQUAL(t->shape[d], e->shape[d]);
        CU_ASSERT_EQUAL(t->begin, p->offset[i]);
        CU_ASSERT_EQUAL(t->end, p->offset[i] + p->nbytes[i]);
        CU_ASSERT_EQUAL(t->numel * dsckpt_dtype_size(t->dtype), p->nbytes[i]);
        for (uint64_t j = 0; j < p->nbytes[i]; j++)
            CU_ASSERT_EQUAL(file[h->data_start + t->begin + j], (uint8_t)(i * 31 + j));
    }
    CU_ASSERT_EQUAL(st_find(h, "step")->numel, 1);
    CU_ASSERT_EQUAL(st_find(h, "empty")->numel, 0);
    CU_ASSERT_PTR_NULL(st_find(h, "missing"));
    CU_ASSERT_PTR_NULL(st_find(h, "__metadata__"));
}

static void test_roundtrip(void) {
    static const st_meta meta[] = {{"aliases", "lm_head.weight=wte.weight"},
                                   {"k\"ey\\", "v\xc3\xa9\n"}};
    st_plan *p = NULL;
    TU_ASSERT_OK(st_plan_make(rt_entries, RT_N, meta, 2, &p));
    rt_check_header(p);
    rt_check_order(p);
    uint8_t *file = rt_file_image(p);
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    char *path = tu_path(dir, "model.safetensors");
    CU_ASSERT_FATAL(tu_write(path, file, p->file_size) == 0);
    st_header *h = NULL;
    TU_ASSERT_OK(st_read_file(path, &h));
    rt_check_read(h, p, file);
    st_header_free(h);
    st_plan_free(p);
    free(file);
    free(path);
    tu_rmtree(dir);
    free(dir);
}

/* The exact bytes, escaping included, for a small plan. */
static void test_header_bytes(void) {
    static const st_entry entries[] = {
        {"a\"\\\x01\x1f\n", DSCKPT_BF16, 0, {0}},
        {"b", DSCKPT_F32, 2, {2, 3}},
    };
    static const st_meta meta[] = {{"x", "y"}};
    st_plan *p = NULL;
    TU_ASSERT_OK(st_plan_make(entries, 2, meta, 1, &p));
    const char *want = "{\"__metadata__\":{\"format\":\"pt\",\"x\":\"y\"},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                       "\"a\\\"\\\\\\u0001\\u001f\\n\":{\"dtype\":\"BF16\",\"shape\":[],"
                       "\"data_offsets\":[24,26]}}";
    size_t wl = strlen(want), padded = (wl + 7) / 8 * 8;
    CU_ASSERT_EQUAL(p->header_bytes, 8 + padded);
    CU_ASSERT_EQUAL(ds_get_le64(p->header), padded);
    CU_ASSERT(memcmp(p->header + 8, want, wl) == 0);
    for (size_t i = 8 + wl; i < p->header_bytes; i++) CU_ASSERT_EQUAL(p->header[i], ' ');
    CU_ASSERT_EQUAL(p->order[0], 1);
    CU_ASSERT_EQUAL(p->order[1], 0);
    CU_ASSERT_EQUAL(p->data_size, 26);
    /* And it parses back. */
    st_header *h = NULL;
    TU_ASSERT_OK(st_parse_header(p->header + 8, p->header_bytes - 8, p->file_size, "mem", &h));
    CU_ASSERT_PTR_NOT_NULL(st_find(h, entries[0].name));
    st_header_free(h);
    st_plan_free(p);

    /* No tensors, no caller metadata. */
    TU_ASSERT_OK(st_plan_make(NULL, 0, NULL, 0, &p));
    CU_ASSERT_EQUAL(p->header_bytes, 8 + 32);
    CU_ASSERT(memcmp(p->header + 8, "{\"__metadata__\":{\"format\":\"pt\"}}", 32) == 0);
    CU_ASSERT_EQUAL(p->file_size, 40);
    st_plan_free(p);
}

/* ---- writer argument checks ---- */

static void expect_plan_fail(const st_entry *e, size_t n, const st_meta *m, size_t nm,
                             const char *substr) {
    st_plan *p = (st_plan *)(uintptr_t)1;
    dsckpt_status st = st_plan_make(e, n, m, nm, &p);
    CU_ASSERT_EQUAL(st, DSCKPT_EINVAL);
    CU_ASSERT_PTR_NULL(p);
    if (st != DSCKPT_EINVAL || !strstr(dsckpt_last_error(), substr)) {
        fprintf(stderr, "\n  plan: want EINVAL '%s', got %s: %s\n", substr, dsckpt_status_name(st),
                dsckpt_last_error());
        CU_FAIL("wrong message");
    }
}

static void test_plan_errors(void) {
    st_entry e[3] = {
        {"x", DSCKPT_F32, 1, {2}}, {"y", DSCKPT_BF16, 1, {2}}, {"x", DSCKPT_U8, 1, {2}}};
    expect_plan_fail(e, 3, NULL, 0, "duplicate tensor name 'x'");
    e[2].name = "";
    expect_plan_fail(e, 3, NULL, 0, "empty name");
    e[2].name = NULL;
    expect_plan_fail(e, 3, NULL, 0, "empty name");
    e[2].name = "bad\xff";
    expect_plan_fail(e, 3, NULL, 0, "not valid UTF-8");
    e[2].name = "__metadata__";
    expect_plan_fail(e, 3, NULL, 0, "reserved");
    e[2].name = "z";
    e[2].dtype = DSCKPT_DTYPE_COUNT;
    expect_plan_fail(e, 3, NULL, 0, "unknown dtype");
    e[2].dtype = DSCKPT_U8;
    e[2].ndim = ST_MAX_DIMS + 1;
    expect_plan_fail(e, 3, NULL, 0, "dims");
    e[2].ndim = -1;
    expect_plan_fail(e, 3, NULL, 0, "dims");
    e[2].ndim = 1;
    e[2].shape[0] = U48;
    expect_plan_fail(e, 3, NULL, 0, "exceeds 2^48-1");
    e[2].ndim = 2;
    e[2].shape[0] = e[2].shape[1] = 1ull << 40;
    expect_plan_fail(e, 3, NULL, 0, "element count overflows");
    e[2].ndim = 1;
    e[2].shape[0] = U48 - 1;
    e[1].shape[0] = 1;
    e[1].dtype = DSCKPT_U8;
    expect_plan_fail(e, 3, NULL, 0, "total data size");
    e[1].shape[0] = 2;
    e[1].dtype = DSCKPT_BF16;
    e[2].dtype = DSCKPT_F32;
    expect_plan_fail(e, 3, NULL, 0, "larger than 2^48-1 bytes");
    e[2].dtype = DSCKPT_U8;
    e[2].shape[0] = 2;
    st_meta m[2] = {{"format", "tf"}, {"k", "v"}};
    expect_plan_fail(e, 3, m, 2, "'format' is reserved");
    m[0].key = "k";
    expect_plan_fail(e, 3, m, 2, "duplicate metadata key 'k'");
    m[0].key = NULL;
    expect_plan_fail(e, 3, m, 2, "NULL key");
    m[0].key = "j";
    m[0].value = "\xc0\x80";
    expect_plan_fail(e, 3, m, 2, "not valid UTF-8");
    m[0].value = "ok";
    st_plan *p = NULL;
    TU_ASSERT_OK(st_plan_make(e, 3, m, 2, &p));
    st_plan_free(p);
    st_plan_free(NULL);
    st_header_free(NULL);
}

/* ---- reader: corrupt catalogue ---- */

typedef struct bad_case {
    const char *label;
    const char *json; /* NUL-terminated unless jlen != 0 */
    size_t jlen;
    uint64_t data_len;
    uint64_t n_override; /* 0 = use jlen */
    dsckpt_status st;
    const char *substr;
} bad_case;

#define T1(name, dtype, shape, b, e)                                                               \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

/* clang-format off */
static const bad_case bad_cases[] = {
    {"N over limit", "{}", 0, 0, 100000001ull, DSCKPT_ECORRUPT, "exceeds the limit of 100000000"},
    {"N huge", "{}", 0, 0, UINT64_MAX, DSCKPT_ECORRUPT, "exceeds the limit"},
    {"N beyond EOF", "{}", 0, 0, 100, DSCKPT_ECORRUPT, "runs past the end of the file"},
    {"invalid UTF-8 0xff", "{\"a\xff\":1}", 0, 0, 0, DSCKPT_ECORRUPT, "not valid UTF-8 (byte 0xff at file offset 11)"},
    {"overlong UTF-8", "{\"\xc0\xaf\":1}", 0, 0, 0, DSCKPT_ECORRUPT, "not valid UTF-8"},
    {"overlong 3-byte", "{\"\xe0\x80\xaf\":1}", 0, 0, 0, DSCKPT_ECORRUPT, "not valid UTF-8"},
    {"UTF-8 surrogate", "{\"\xed\xa0\x80\":1}", 0, 0, 0, DSCKPT_ECORRUPT, "not valid UTF-8"},
    {"UTF-8 > U+10FFFF", "{\"\xf4\x90\x80\x80\":1}", 0, 0, 0, DSCKPT_ECORRUPT, "not valid UTF-8"},
    {"UTF-8 truncated", "{}\xe2\x82", 0, 0, 0, DSCKPT_ECORRUPT, "not valid UTF-8"},
    {"not JSON", "{\"a\":", 0, 0, 0, DSCKPT_ECORRUPT, "not valid JSON"},
    {"not JSON 2", "{\"a\" 1}", 0, 0, 0, DSCKPT_ECORRUPT, "not valid JSON"},
    {"JSON array", "[{}]", 0, 0, 0, DSCKPT_ECORRUPT, "not a JSON object (begins with '['"},
    {"JSON string", "\"x\"", 0, 0, 0, DSCKPT_ECORRUPT, "not a JSON object"},
    {"BOM", "\xef\xbb\xbf{}", 0, 0, 0, DSCKPT_ECORRUPT, "not a JSON object"},
    {"empty header", "", 0, 0, 0, DSCKPT_ECORRUPT, "header is empty"},
    {"only spaces", "    ", 0, 0, 0, DSCKPT_ECORRUPT, "header is empty"},
    {"data after object", "{} {}", 0, 0, 0, DSCKPT_ECORRUPT, "unexpected data after the header JSON object at file offset 11"},
    {"NUL padding", "{}\0\0", 4, 0, 0, DSCKPT_ECORRUPT, "unexpected data after"},
    {"control char between tokens", "{\x01}", 0, 0, 0, DSCKPT_ECORRUPT, "control character 0x01"},
    {"raw control in string", "{\"a\tb\":1}", 0, 0, 0, DSCKPT_ECORRUPT, "raw control character 0x09 inside a string"},
    {"malformed \\u escape", "{\"\\uZZZZ\":1}", 0, 0, 0, DSCKPT_ECORRUPT, "malformed \\u escape at file offset 10"},
    {"lone surrogate escape", "{\"\\ud800\":1}", 0, 0, 0, DSCKPT_ECORRUPT, "not valid JSON"},
    {"\\u0000 in name", "{\"a\\u0000b\":{}}", 0, 0, 0, DSCKPT_EUNSUPPORTED, "NUL character"},
    {"entry not object", "{\"a\":[1]}", 0, 0, 0, DSCKPT_ECORRUPT, "tensor 'a': entry is not a JSON object"},
    {"entry a string", "{\"a\":\"x\"}", 0, 0, 0, DSCKPT_ECORRUPT, "tensor 'a': entry is not a JSON object"},
    {"missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4, 0, DSCKPT_ECORRUPT, "tensor 'a': missing key 'dtype'"},
    {"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 0, 4, 0, DSCKPT_ECORRUPT, "missing key 'shape'"},
    {"missing data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 0, 4, 0, DSCKPT_ECORRUPT, "missing key 'data_offsets'"},
    {"extra key", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"foo\":1}}", 0, 4, 0, DSCKPT_ECORRUPT, "tensor 'a': unknown key 'foo'"},
    {"duplicate key in entry", "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4, 0, DSCKPT_ECORRUPT, "duplicate key 'dtype'"},
    {"dtype not string", "{" T1("a", "F32", "[1]", 0, 4) ",\"b\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[4,8]}}", 0, 8, 0, DSCKPT_ECORRUPT, "tensor 'b': dtype is not a string"},
    {"unknown dtype F8_E4M3", "{" T1("a", "F8_E4M3", "[1]", 0, 1) "}", 0, 1, 0, DSCKPT_EUNSUPPORTED, "tensor 'a': unsupported dtype 'F8_E4M3'"},
    {"lowercase dtype", "{" T1("a", "f32", "[1]", 0, 4) "}", 0, 4, 0, DSCKPT_EUNSUPPORTED, "unsupported dtype 'f32'"},
    {"shape not array", "{" T1("a", "F32", "4", 0, 4) "}", 0, 4, 0, DSCKPT_ECORRUPT, "shape is not an array"},
    {"shape negative", "{" T1("a", "F32", "[-1]", 0, 4) "}", 0, 4, 0, DSCKPT_ECORRUPT, "tensor 'a': shape dim 0 is negative"},
    {"shape non-integer", "{" T1("a", "F32", "[1,2.5]", 0, 4) "}", 0, 4, 0, DSCKPT_ECORRUPT, "tensor 'a': shape dim 1 is not an integer"},
    {"shape too large", "{" T1("a", "U8", "[281474976710656]", 0, 4) "}", 0, 4, 0, DSCKPT_ECORRUPT, "shape dim 0 exceeds 2^48-1"},
    {"shape 1e400", "{" T1("a", "U8", "[1e400]", 0, 4) "}", 0, 4, 0, DSCKPT_ECORRUPT, "shape dim 0 exceeds 2^48-1"},
    {"shape string dim", "{" T1("a", "U8", "[\"4\"]", 0, 4) "}", 0, 4, 0, DSCKPT_ECORRUPT, "shape dim 0 is not a number"},
    {"shape 17 dims", "{" T1("a", "U8", "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]", 0, 1) "}", 0, 1, 0, DSCKPT_EUNSUPPORTED, "17 dims"},
    {"integral float 2.0", "{" T1("a", "U8", "[2.0]", 0, 2) "}", 0, 2, 0, DSCKPT_ECORRUPT, "number '2.0' at file offset 36 is not a plain"},
    {"trailing dot 2.", "{" T1("a", "U8", "[2.]", 0, 2) "}", 0, 2, 0, DSCKPT_ECORRUPT, "number '2.'"},
    {"fraction rounding to an integer", "{" T1("a", "U8", "[281474976710655.00001,0]", 0, 0) "}", 0, 0, 0, DSCKPT_ECORRUPT, "number '281474976710655.00001'"},
    {"plus sign", "{" T1("a", "U8", "[+2]", 0, 2) "}", 0, 2, 0, DSCKPT_ECORRUPT, "not valid JSON"},
    {"exponent 2e0", "{" T1("a", "U8", "[2e0]", 0, 2) "}", 0, 2, 0, DSCKPT_ECORRUPT, "number '2e0'"},
    {"leading zero", "{" T1("a", "U8", "[02]", 0, 2) "}", 0, 2, 0, DSCKPT_ECORRUPT, "number '02'"},
    {"minus zero", "{" T1("a", "U8", "[2]", -0, 2) "}", 0, 2, 0, DSCKPT_ECORRUPT, "number '-0'"},
    {"data_offsets one element", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 0, 1, 0, DSCKPT_ECORRUPT, "data_offsets has 1 elements (expected 2)"},
    {"data_offsets three elements", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,1]}}", 0, 1, 0, DSCKPT_ECORRUPT, "data_offsets has 3 elements"},
    {"data_offsets not array", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":{}}}", 0, 1, 0, DSCKPT_ECORRUPT, "data_offsets is not an array"},
    {"data_offsets negative", "{" T1("a", "U8", "[1]", -1, 0) "}", 0, 1, 0, DSCKPT_ECORRUPT, "data_offsets begin is negative"},
    {"data_offsets end too big", "{" T1("a", "U8", "[1]", 0, 281474976710656) "}", 0, 1, 0, DSCKPT_ECORRUPT, "data_offsets end exceeds 2^48-1"},
    {"begin > end", "{" T1("a", "U8", "[0]", 8, 4) "}", 0, 8, 0, DSCKPT_ECORRUPT, "tensor 'a': data_offsets [8, 4) has begin > end"},
    {"size mismatch", "{" T1("wte.weight", "F32", "[5,4]", 0, 100) "}", 0, 100, 0, DSCKPT_ECORRUPT,
     "model.safetensors: tensor 'wte.weight': data_offsets [0, 100) but shape [5, 4] x F32 needs 80 bytes"},
    {"0-dim size mismatch", "{" T1("s", "I64", "[]", 0, 4) "}", 0, 4, 0, DSCKPT_ECORRUPT, "shape [] x I64 needs 8 bytes"},
    {"numel overflow", "{" T1("a", "U8", "[1099511627776,1099511627776]", 0, 4) "}", 0, 4, 0, DSCKPT_ECORRUPT, "element count of shape [1099511627776, 1099511627776] overflows 64 bits"},
    {"bytes overflow", "{" T1("a", "F32", "[4294967296,1073741824]", 0, 4) "}", 0, 4, 0, DSCKPT_ECORRUPT, "byte size of shape [4294967296, 1073741824] x F32 overflows"},
    {"first not at 0", "{" T1("a", "F32", "[1]", 4, 8) "}", 0, 8, 0, DSCKPT_ECORRUPT, "tensor 'a': first tensor in the data buffer starts at data offset 4, not 0"},
    {"gap", "{" T1("a", "F32", "[1]", 0, 4) "," T1("b", "F32", "[1]", 8, 12) "}", 0, 12, 0, DSCKPT_ECORRUPT, "tensor 'b': gap of 4 bytes"},
    {"overlap", "{" T1("b", "F32", "[1]", 4, 8) "," T1("a", "F32", "[2]", 0, 8) "}", 0, 8, 0, DSCKPT_ECORRUPT, "tensor 'b': data_offsets [4, 8) overlap tensor 'a' [0, 8)"},
    {"same range twice", "{" T1("a", "F32", "[1]", 0, 4) "," T1("b", "F32", "[1]", 0, 4) "}", 0, 4, 0, DSCKPT_ECORRUPT, "overlap"},
    {"trailing bytes", "{" T1("a", "F32", "[1]", 0, 4) "}", 0, 7, 0, DSCKPT_ECORRUPT, "3 trailing bytes after the data buffer"},
    {"trailing bytes, no tensors", "{}", 0, 1, 0, DSCKPT_ECORRUPT, "1 trailing bytes"},
    {"truncated data", "{" T1("a", "F32", "[1]", 0, 4) "}", 0, 3, 0, DSCKPT_ECORRUPT, "file is truncated: tensor 'a' ends at file offset"},
    {"duplicate tensor", "{" T1("a", "F32", "[1]", 0, 4) "," T1("a", "F32", "[1]", 4, 8) "}", 0, 8, 0, DSCKPT_ECORRUPT, "duplicate tensor name 'a'"},
    {"duplicate tensor via escape", "{" T1("\\u00e9", "F32", "[1]", 0, 4) "," T1("\xc3\xa9", "F32", "[1]", 4, 8) "}", 0, 8, 0, DSCKPT_ECORRUPT, "duplicate tensor name '\xc3\xa9'"},
    {"duplicate __metadata__", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, 0, 0, DSCKPT_ECORRUPT, "duplicate __metadata__ entry"},
    {"duplicate metadata key", "{\"__metadata__\":{\"format\":\"pt\",\"format\":\"tf\"}}", 0, 0, 0, DSCKPT_ECORRUPT, "duplicate __metadata__ key 'format'"},
    {"metadata non-string", "{\"__metadata__\":{\"format\":\"pt\",\"n\":1}}", 0, 0, 0, DSCKPT_ECORRUPT, "__metadata__ value of 'n' is not a string"},
    {"metadata nested", "{\"__metadata__\":{\"o\":{}}}", 0, 0, 0, DSCKPT_ECORRUPT, "value of 'o' is not a string"},
    {"metadata array", "{\"__metadata__\":[\"a\"]}", 0, 0, 0, DSCKPT_ECORRUPT, "__metadata__ is not a JSON object"},
};
/* clang-format on */

static void check_fail(const char *label, dsckpt_status st, st_header *h, dsckpt_status want,
                       const char *substr) {
    CU_ASSERT_PTR_NULL(h);
    st_header_free(h);
    if (st != want || !strstr(dsckpt_last_error(), substr)) {
        fprintf(stderr, "\n  [%s] want %s '%s'\n  got %s: %s\n", label, dsckpt_status_name(want),
                substr, dsckpt_status_name(st), dsckpt_last_error());
        CU_FAIL("wrong status or message");
    }
}

static void test_corrupt_catalogue(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);
    for (size_t c = 0; c < sizeof bad_cases / sizeof bad_cases[0]; c++) {
        const bad_case *bc = &bad_cases[c];
        size_t jlen = bc->jlen ? bc->jlen : strlen(bc->json);
        char *path = write_st(dir, "model.safetensors", bc->json, jlen, bc->data_len,
                              bc->n_override ? &bc->n_override : NULL);
        st_header *h = (st_header *)(uintptr_t)1;
        dsckpt_status st = st_read_file(path, &h);
        check_fail(bc->label, st, h, bc->st, bc->substr);
        /* Every message names the file. */
        if (!strstr(dsckpt_last_error(), "model.safetensors")) {
            fprintf(stderr, "\n  [%s] message does not name the file: %s\n", bc->label,
                    dsckpt_last_error());
            CU_FAIL("file not named");
        }
        free(path);
    }

    /* A file shorter than the 8-byte length. */
    char *path = tu_path(dir, "short.safetensors");
    CU_ASSERT_FATAL(tu_write(path, "\x02\0\0", 3) == 0);
    st_header *h = NULL;
    check_fail("short file", st_read_file(path, &h), h, DSCKPT_ECORRUPT,
               "file is too short (3 bytes)");
    CU_ASSERT_FATAL(tu_write(path, "", 0) == 0);
    check_fail("empty file", st_read_file(path, &h), h, DSCKPT_ECORRUPT, "too short (0 bytes)");
    free(path);

    path = tu_path(dir, "absent.safetensors");
    CU_ASSERT_EQUAL(st_read_file(path, &h), DSCKPT_ENOENT);
    CU_ASSERT_PTR_NULL(h);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "absent.safetensors"));
    free(path);

    /* st_parse_header checks its sizes itself too. */
    check_fail("parse: file < 8", st_parse_header((const uint8_t *)"{}", 2, 7, "m", &h), h,
               DSCKPT_ECORRUPT, "runs past the end");
    check_fail("parse: N > file", st_parse_header((const uint8_t *)"{}", 2, 9, "m", &h), h,
               DSCKPT_ECORRUPT, "runs past the end");
    tu_rmtree(dir);
    free(dir);
}

/* ---- reader: valid edge cases ---- */

static st_header *read_ok(const char *dir, const char *json, size_t jlen, uint64_t data_len) {
    char *path = write_st(dir, "ok.safetensors", json, jlen ? jlen : strlen(json), data_len, NULL);
    st_header *h = NULL;
    TU_ASSERT_OK(st_read_file(path, &h));
    free(path);
    return h;
}

static void test_valid_edges(void) {
    char *dir = tu_mkdtemp();
    CU_ASSERT_FATAL(dir != NULL);

    st_header *h = read_ok(dir, "{}", 0, 0);
    CU_ASSERT_EQUAL(h->n, 0);
    CU_ASSERT_EQUAL(h->nmeta, 0);
    CU_ASSERT_EQUAL(h->data_start, 10);
    CU_ASSERT_EQUAL(h->file_size, 10);
    CU_ASSERT_PTR_NULL(st_find(h, "a"));
    st_header_free(h);

    /* Leading and trailing JSON whitespace (the reference's #686 and its tests). */
    h = read_ok(dir, "\t\n {}\r \t\n", 0, 0);
    CU_ASSERT_EQUAL(h->n, 0);
    st_header_free(h);

    h = read_ok(dir, "  {" T1("s", "I64", "[]", 0, 8) "}   ", 0, 8);
    CU_ASSERT_EQUAL_FATAL(h->n, 1);
    CU_ASSERT_EQUAL(h->tensors[0].ndim, 0);
    CU_ASSERT_EQUAL(h->tensors[0].numel, 1);
    CU_ASSERT_EQUAL(h->tensors[0].dtype, DSCKPT_I64);
    st_header_free(h);

    /* Zero-size tensors, at the start, in the middle and at the end, listed out of
     * order; a zero-size tensor shares its begin with the next one. */
    h = read_ok(dir,
                "{" T1("c", "BF16", "[3,0]", 4, 4) "," T1("b", "F32", "[1]", 0, 4) "," T1(
                    "z", "U8", "[0]", 0, 0) "," T1("d", "U8", "[2]", 4,
                                                   6) "," T1("e", "I8", "[0,7]", 6,
                                                             6) ",\"__metadata__\":null}",
                0, 6);
    CU_ASSERT_EQUAL(h->n, 5);
    CU_ASSERT_EQUAL(h->nmeta, 0);
    CU_ASSERT_STRING_EQUAL(h->tensors[0].name, "c"); /* header order is kept */
    CU_ASSERT_EQUAL(st_find(h, "c")->numel, 0);
    CU_ASSERT_EQUAL(st_find(h, "c")->shape[1], 0);
    CU_ASSERT_EQUAL(st_find(h, "e")->begin, 6);
    CU_ASSERT_EQUAL(st_find(h, "d")->end, 6);
    st_header_free(h);

    /* A zero-size tensor alone, no data. */
    h = read_ok(dir, "{" T1("z", "F16", "[0]", 0, 0) "}", 0, 0);
    CU_ASSERT_EQUAL(h->n, 1);
    st_header_free(h);

    /* Metadata without "format" (the reader does not insist), escapes in keys. */
    h = read_ok(dir, "{\"__metadata__\":{\"k\\u00e9\":\"v\\\"\\n\",\"a\":\"\"}}", 0, 0);
    CU_ASSERT_EQUAL_FATAL(h->nmeta, 2);
    CU_ASSERT_STRING_EQUAL(h->meta[0].key, "k\xc3\xa9");
    CU_ASSERT_STRING_EQUAL(h->meta[0].value, "v\"\n");
    CU_ASSERT_STRING_EQUAL(st_meta_get(h, "a"), "");
    CU_ASSERT_PTR_NULL(st_meta_get(h, "format"));
    st_header_free(h);

    /* Largest legal dim, as an offset too. */
    h = read_ok(dir, "{" T1("z", "U8", "[281474976710655,0]", 0, 0) "}", 0, 0);
    CU_ASSERT_EQUAL(h->tensors[0].shape[0], U48 - 1);
    st_header_free(h);

    /* Empty tensor name and a surrogate pair escape are legal. */
    h = read_ok(dir, "{" T1("", "U8", "[1]", 0, 1) "," T1("\\ud83d\\ude00", "U8", "[1]", 1, 2) "}",
                0, 2);
    CU_ASSERT_PTR_NOT_NULL(st_find(h, ""));
    CU_ASSERT_PTR_NOT_NULL(st_find(h, "\xf0\x9f\x98\x80"));
    st_header_free(h);

    tu_rmtree(dir);
    free(dir);
}

/* ---- sweep: every truncation and many one-byte mutations of a real header ---- */

static void test_mutation_sweep(void) {
    static const st_entry entries[] = {{"w", DSCKPT_BF16, 2, {2, 2}},
                                       {"b\\\"\xc3\xa9", DSCKPT_F32, 1, {2}},
                                       {"s", DSCKPT_I64, 0, {0}}};
    static const st_meta meta[] = {{"m", "v"}};
    st_plan *p = NULL;
    TU_ASSERT_OK(st_plan_make(entries, 3, meta, 1, &p));
    size_t n = p->header_bytes - 8;
    size_t jlen = n;
    while (jlen && p->header[8 + jlen - 1] == ' ') jlen--;
    uint64_t fsize = p->file_size;
    /* Exact-size heap copies, so ASan sees any read past the header. */
    for (size_t len = 0; len < jlen; len++) {
        uint8_t *buf = malloc(len ? len : 1);
        memcpy(buf, p->header + 8, len);
        st_header *h = NULL;
        dsckpt_status st = st_parse_header(buf, len, fsize - n + len, "t", &h);
        CU_ASSERT_NOT_EQUAL(st, DSCKPT_OK);
        CU_ASSERT_PTR_NULL(h);
        st_header_free(h);
        free(buf);
    }
    static const uint8_t subs[] = {0,   0x01, ' ', '"', ',', ':', '[', ']',  '{',  '}',  '\\',
                                   '-', '.',  '0', '1', '9', 'e', 'u', 0x7f, 0x80, 0xc3, 0xff};
    size_t ok = 0, runs = 0;
    for (size_t pos = 0; pos < n; pos++) {
        for (size_t s = 0; s < sizeof subs; s++) {
            uint8_t *buf = malloc(n);
            memcpy(buf, p->header + 8, n);
            if (buf[pos] == subs[s]) {
                free(buf);
                continue;
            }
            buf[pos] = subs[s];
            st_header *h = NULL;
            dsckpt_status st = st_parse_header(buf, n, fsize, "t", &h);
            runs++;
            if (st == DSCKPT_OK) {
                ok++;
                CU_ASSERT_PTR_NOT_NULL(h);
                /* Whatever was accepted is self-consistent. */
                uint64_t total = 0;
                for (size_t i = 0; h && i < h->n; i++)
                    total += h->tensors[i].end - h->tensors[i].begin;
                CU_ASSERT(h == NULL || h->data_start + total == fsize);
            } else {
                CU_ASSERT_PTR_NULL(h);
                CU_ASSERT(dsckpt_last_error()[0] != '\0');
            }
            st_header_free(h);
            free(buf);
        }
    }
    CU_ASSERT(runs > 0);
    CU_ASSERT(ok < runs);
    st_plan_free(p);
}

int main(void) {
    static const tu_test tests[] = {
        {"writer round trip through a file", test_roundtrip},
        {"writer header bytes", test_header_bytes},
        {"writer argument checks", test_plan_errors},
        {"reader corrupt catalogue", test_corrupt_catalogue},
        {"reader valid edge cases", test_valid_edges},
        {"reader truncation and mutation sweep", test_mutation_sweep},
        {NULL, NULL},
    };
    return tu_main("safetensors", tests);
}
