/*
 * test_zip.c — the torch.save zip container: every DeepSpeed fixture opens with
 * the members Python's zipfile lists (one file checked entry by entry), 64-byte
 * aligned data and good CRCs; the writer re-creates each fixture byte for byte;
 * ZIP64 central entries parse; a catalogue of hand-made hostile archives (each
 * expecting a status and a message fragment); a truncation sweep and a mutation
 * sweep for the sanitizers; writer misuse. A > 4 GiB writer round trip runs only
 * with DSCKPT_TEST_ZIP64_LARGE=1 (it writes 4 GiB to $TMPDIR).
 */
#include "zip.h"

#include "fsutil.h"
#include "tutil.h"

#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

/* ---- helpers ---- */

/* An anonymous file holding `n` bytes of `data`. */
static int mem_fd(const void *data, size_t n) {
    int fd = memfd_create("test_zip", MFD_CLOEXEC);
    CU_ASSERT_FATAL(fd >= 0);
    const uint8_t *p = data;
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, p + done, n - done);
        CU_ASSERT_FATAL(w > 0);
        done += (size_t)w;
    }
    return fd;
}

/* Opens `n` bytes as an archive and checks the status and message fragment. On
 * DSCKPT_OK the archive is returned (and the fd through *fd_out) if asked for. */
static void expect_open(const char *label, const uint8_t *data, size_t n, dsckpt_status want, const char *frag,
                        zip_archive **keep, int *fd_out) {
    int fd = mem_fd(data, n);
    zip_archive *z = NULL;
    dsckpt_status st = zip_open_fd(fd, "t.pt", &z);
    const char *msg = dsckpt_last_error();
    bool ok = st == want && (want == DSCKPT_OK || (strstr(msg, frag) && strstr(msg, "t.pt")));
    if (!ok)
        fprintf(stderr, "\n  case '%s': got %s '%s', want %s '%s'\n", label, dsckpt_status_name(st),
                st ? msg : "", dsckpt_status_name(want), frag ? frag : "");
    CU_ASSERT(ok);
    CU_ASSERT((st == DSCKPT_OK) == (z != NULL));
    if (keep && z) {
        *keep = z;
        *fd_out = fd;
        return;
    }
    zip_free(z);
    close(fd);
}

static const char *msg_has(const char *frag) { return strstr(dsckpt_last_error(), frag); }

/* ---- a second, independent encoder of torch's layout, for hand-made archives ---- */

#define TB_MAX 8
typedef struct tlay {
    size_t n;
    size_t local[TB_MAX], data[TB_MAX], cent[TB_MAX];
    size_t cd_off, z64, loc, eocd, size;
} tlay;

typedef struct tbuf {
    uint8_t *p;
    size_t n, cap;
} tbuf;

static void tb_put(tbuf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
        CU_ASSERT_FATAL(b->p != NULL);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void tb_u16(tbuf *b, uint32_t v) {
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    tb_put(b, x, 2);
}
static void tb_u32(tbuf *b, uint32_t v) {
    tb_u16(b, v & 0xFFFF);
    tb_u16(b, v >> 16);
}
static void tb_u64(tbuf *b, uint64_t v) {
    tb_u32(b, (uint32_t)v);
    tb_u32(b, (uint32_t)(v >> 32));
}
static void p16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void p32(uint8_t *p, uint32_t v) {
    p16(p, v & 0xFFFF);
    p16(p + 2, v >> 16);
}
static uint32_t g32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

static uint8_t pattern(size_t member, size_t k) { return (uint8_t)(member * 37 + k * 11 + 5); }

/* Local headers (64-byte aligned data, as torch pads with an "FB" extra field),
 * pattern data and data descriptors; crcs[i] receives each member's CRC-32. */
static void tb_locals(tbuf *b, const char *const *names, const size_t *sizes, size_t n, tlay *L, uint32_t *crcs) {
    for (size_t i = 0; i < n; i++) {
        size_t nlen = strlen(names[i]);
        L->local[i] = b->n;
        size_t pad = (64 - (b->n + 30 + nlen + 4) % 64) % 64;
        tb_u32(b, 0x04034b50);
        tb_u16(b, 0);
        tb_u16(b, sizes[i] ? 0x0808 : 0x0800);
        for (int k = 0; k < 18; k++) tb_put(b, "", 1); /* method, time, date, CRC, sizes: zero */
        tb_u16(b, (uint32_t)nlen);
        tb_u16(b, (uint32_t)(4 + pad));
        tb_put(b, names[i], nlen);
        tb_put(b, "FB", 2);
        tb_u16(b, (uint32_t)pad);
        for (size_t k = 0; k < pad; k++) tb_put(b, "Z", 1);
        L->data[i] = b->n;
        uLong crc = crc32(0L, Z_NULL, 0);
        for (size_t k = 0; k < sizes[i]; k++) {
            uint8_t c = pattern(i, k);
            tb_put(b, &c, 1);
            crc = crc32(crc, &c, 1);
        }
        crcs[i] = (uint32_t)crc;
        if (sizes[i]) {
            tb_u32(b, 0x08074b50);
            tb_u32(b, crcs[i]);
            tb_u32(b, (uint32_t)sizes[i]);
            tb_u32(b, (uint32_t)sizes[i]);
        }
    }
}

/* The central directory; with z64_central, saturated sizes and offsets and a
 * ZIP64 extra field in every entry. */
static void tb_central(tbuf *b, const char *const *names, const size_t *sizes, size_t n, bool z64_central,
                       tlay *L, const uint32_t *crcs) {
    L->cd_off = b->n;
    for (size_t i = 0; i < n; i++) {
        size_t nlen = strlen(names[i]);
        L->cent[i] = b->n;
        tb_u32(b, 0x02014b50);
        tb_u16(b, 0);
        tb_u16(b, 0);
        tb_u16(b, sizes[i] ? 0x0808 : 0x0800);
        tb_u16(b, 0);
        tb_u32(b, 0);
        tb_u32(b, crcs[i]);
        tb_u32(b, z64_central ? 0xFFFFFFFFu : (uint32_t)sizes[i]);
        tb_u32(b, z64_central ? 0xFFFFFFFFu : (uint32_t)sizes[i]);
        tb_u16(b, (uint32_t)nlen);
        tb_u16(b, z64_central ? 28 : 0);
        tb_u16(b, 0);
        tb_u16(b, 0);
        tb_u16(b, 0);
        tb_u32(b, 0);
        tb_u32(b, z64_central ? 0xFFFFFFFFu : (uint32_t)L->local[i]);
        tb_put(b, names[i], nlen);
        if (z64_central) {
            tb_u16(b, 1);
            tb_u16(b, 24);
            tb_u64(b, sizes[i]);
            tb_u64(b, sizes[i]);
            tb_u64(b, L->local[i]);
        }
    }
}

/* The end records: with z64_end the ZIP64 end record and its locator, then the
 * classic end record. */
static void tb_end(tbuf *b, size_t n, bool z64_end, tlay *L) {
    size_t cd_size = b->n - L->cd_off;
    if (z64_end) {
        L->z64 = b->n;
        tb_u32(b, 0x06064b50);
        tb_u64(b, 44);
        tb_u16(b, 0x031E);
        tb_u16(b, 0x2D);
        tb_u32(b, 0);
        tb_u32(b, 0);
        tb_u64(b, n);
        tb_u64(b, n);
        tb_u64(b, cd_size);
        tb_u64(b, L->cd_off);
        L->loc = b->n;
        tb_u32(b, 0x07064b50);
        tb_u32(b, 0);
        tb_u64(b, L->z64);
        tb_u32(b, 1);
    }
    L->eocd = b->n;
    tb_u32(b, 0x06054b50);
    tb_u32(b, 0);
    tb_u16(b, (uint32_t)n);
    tb_u16(b, (uint32_t)n);
    tb_u32(b, (uint32_t)cd_size);
    tb_u32(b, (uint32_t)L->cd_off);
    tb_u16(b, 0);
}

/* Members names[i] with sizes[i] pattern bytes, laid out as torch does. With
 * z64_central every central entry has saturated sizes and offset and a ZIP64
 * extra field; without z64_end there is only the classic end record. */
static uint8_t *tb_build(const char *const *names, const size_t *sizes, size_t n, bool z64_central, bool z64_end,
                         tlay *L) {
    CU_ASSERT_FATAL(n <= TB_MAX);
    tbuf b = {0};
    uint32_t crcs[TB_MAX];
    memset(L, 0, sizeof *L);
    L->n = n;
    tb_locals(&b, names, sizes, n, L, crcs);
    tb_central(&b, names, sizes, n, z64_central, L, crcs);
    tb_end(&b, n, z64_end, L);
    L->size = b.n;
    return b.p;
}

static const char *const BASE_NAMES[] = {"arch/data.pkl", "arch/data/0", "arch/data/1", "arch/version"};
static const size_t BASE_SIZES[] = {100, 64, 3, 2};
#define BASE_N 4

static uint8_t *base(tlay *L) { return tb_build(BASE_NAMES, BASE_SIZES, BASE_N, false, true, L); }

/* Replaces member i's name (same length) in the central entry and local header. */
static void rename_member(uint8_t *b, const tlay *L, size_t i, const char *name, size_t len) {
    CU_ASSERT_FATAL(len == strlen(BASE_NAMES[i]));
    memcpy(b + L->cent[i] + 46, name, len);
    memcpy(b + L->local[i] + 30, name, len);
}

/* ---- fixtures ---- */

typedef struct fx_expect {
    const char *path;
    size_t n;
    uint64_t total; /* sum of member sizes */
} fx_expect;

/* From Python's zipfile (member count, sum of file_size) for every fixture. */
static const fx_expect FIXTURES[] = {
    {"deepspeed/z1_ws2_bf16/ckpt/global_step3/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", 10, 505333},
    {"deepspeed/z1_ws2_bf16/ckpt/global_step3/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt", 10, 506104},
    {"deepspeed/z1_ws2_bf16/ckpt/global_step3/mp_rank_00_model_states.pt", 7, 172815},
    {"deepspeed/z1_ws2_bf16opt/ckpt/global_step3/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", 10, 505113},
    {"deepspeed/z1_ws2_bf16opt/ckpt/global_step3/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt", 10, 505884},
    {"deepspeed/z1_ws2_bf16opt/ckpt/global_step3/mp_rank_00_model_states.pt", 7, 172882},
    {"deepspeed/z2_ws4_bf16_edge/ckpt/global_step3/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", 10, 253958},
    {"deepspeed/z2_ws4_bf16_edge/ckpt/global_step3/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt", 10, 253926},
    {"deepspeed/z2_ws4_bf16_edge/ckpt/global_step3/bf16_zero_pp_rank_2_mp_rank_00_optim_states.pt", 10, 254126},
    {"deepspeed/z2_ws4_bf16_edge/ckpt/global_step3/bf16_zero_pp_rank_3_mp_rank_00_optim_states.pt", 10, 254571},
    {"deepspeed/z2_ws4_bf16_edge/ckpt/global_step3/mp_rank_00_model_states.pt", 7, 173589},
    {"deepspeed/z2_ws4_fp32/ckpt/global_step3/mp_rank_00_model_states.pt", 7, 341816},
    {"deepspeed/z2_ws4_fp32/ckpt/global_step3/zero_pp_rank_0_mp_rank_00_optim_states.pt", 10, 253560},
    {"deepspeed/z2_ws4_fp32/ckpt/global_step3/zero_pp_rank_1_mp_rank_00_optim_states.pt", 10, 253560},
    {"deepspeed/z2_ws4_fp32/ckpt/global_step3/zero_pp_rank_2_mp_rank_00_optim_states.pt", 10, 253696},
    {"deepspeed/z2_ws4_fp32/ckpt/global_step3/zero_pp_rank_3_mp_rank_00_optim_states.pt", 10, 254204},
    {"deepspeed/z3_ws2_bf16/ckpt/global_step3/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", 10, 505031},
    {"deepspeed/z3_ws2_bf16/ckpt/global_step3/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt", 10, 505031},
    {"deepspeed/z3_ws2_bf16/ckpt/global_step3/zero_pp_rank_0_mp_rank_00_model_states.pt", 26, 4842},
    {"deepspeed/z3_ws2_bf16/ckpt/global_step3/zero_pp_rank_1_mp_rank_00_model_states.pt", 26, 4798},
    {"deepspeed/z3_ws4_fp32_1g/ckpt/global_step3/zero_pp_rank_0_mp_rank_00_model_states.pt", 26, 4826},
    {"deepspeed/z3_ws4_fp32_1g/ckpt/global_step3/zero_pp_rank_0_mp_rank_00_optim_states.pt", 6, 252989},
    {"deepspeed/z3_ws4_fp32_1g/ckpt/global_step3/zero_pp_rank_1_mp_rank_00_model_states.pt", 26, 4782},
    {"deepspeed/z3_ws4_fp32_1g/ckpt/global_step3/zero_pp_rank_1_mp_rank_00_optim_states.pt", 6, 252989},
    {"deepspeed/z3_ws4_fp32_1g/ckpt/global_step3/zero_pp_rank_2_mp_rank_00_model_states.pt", 26, 4782},
    {"deepspeed/z3_ws4_fp32_1g/ckpt/global_step3/zero_pp_rank_2_mp_rank_00_optim_states.pt", 6, 252989},
    {"deepspeed/z3_ws4_fp32_1g/ckpt/global_step3/zero_pp_rank_3_mp_rank_00_model_states.pt", 26, 4782},
    {"deepspeed/z3_ws4_fp32_1g/ckpt/global_step3/zero_pp_rank_3_mp_rank_00_optim_states.pt", 6, 252989},
};
#define N_FIXTURES (sizeof FIXTURES / sizeof FIXTURES[0])

/* Python's zipfile on z3_ws2_bf16/.../zero_pp_rank_0_mp_rank_00_model_states.pt:
 * (name without the top folder, header_offset, file_size, CRC), in order. */
static const struct {
    const char *rel;
    uint64_t local_offset, size;
    uint32_t crc;
} Z3_MODEL[] = {
    {"data.pkl", 0, 4346, 0x68403cdbu},   {"data/0", 4490, 0, 0x00000000u},     {"data/1", 4608, 38, 0x9b8fa954u},
    {"data/10", 4790, 0, 0x00000000u},    {"data/11", 4928, 0, 0x00000000u},    {"data/12", 5056, 0, 0x00000000u},
    {"data/13", 5184, 0, 0x00000000u},    {"data/14", 5312, 0, 0x00000000u},    {"data/15", 5440, 0, 0x00000000u},
    {"data/16", 5568, 0, 0x00000000u},    {"data/17", 5696, 0, 0x00000000u},    {"data/18", 5824, 0, 0x00000000u},
    {"data/19", 5952, 0, 0x00000000u},    {"data/2", 6080, 0, 0x00000000u},     {"data/20", 6208, 0, 0x00000000u},
    {"data/21", 6336, 0, 0x00000000u},    {"data/22", 6464, 448, 0x6d6e94d5u},  {"data/23", 7056, 8, 0x3f7267d9u},
    {"data/3", 7192, 0, 0x00000000u},     {"data/4", 7296, 0, 0x00000000u},     {"data/5", 7424, 0, 0x00000000u},
    {"data/6", 7552, 0, 0x00000000u},     {"data/7", 7680, 0, 0x00000000u},     {"data/8", 7808, 0, 0x00000000u},
    {"data/9", 7936, 0, 0x00000000u},     {"version", 8064, 2, 0x55679ed1u},
};
#define Z3_MODEL_PATH "deepspeed/z3_ws2_bf16/ckpt/global_step3/zero_pp_rank_0_mp_rank_00_model_states.pt"

static void open_fixture(const char *rel, int *fd, zip_archive **z) {
    char *path = tu_src_path("fixtures");
    char *full = tu_path(path, rel);
    uint64_t size;
    TU_ASSERT_OK(ds_open_read(full, fd, &size));
    TU_ASSERT_OK(zip_open_fd(*fd, full, z));
    CU_ASSERT_EQUAL((*z)->file_size, size);
    free(full);
    free(path);
}

static void test_fixtures(void) {
    /* The table covers every fixture on disk. */
    char *dir = tu_src_path("fixtures/deepspeed");
    char *pat = tu_path(dir, "*/ckpt/global_step*/*.pt");
    glob_t g;
    CU_ASSERT_FATAL(glob(pat, 0, NULL, &g) == 0);
    CU_ASSERT_EQUAL(g.gl_pathc, N_FIXTURES);
    globfree(&g);
    free(pat);
    free(dir);

    for (size_t f = 0; f < N_FIXTURES; f++) {
        int fd;
        zip_archive *z;
        open_fixture(FIXTURES[f].path, &fd, &z);
        CU_ASSERT_EQUAL(z->n, FIXTURES[f].n);
        /* The top folder is the file's name without ".pt". */
        const char *base = strrchr(FIXTURES[f].path, '/') + 1;
        CU_ASSERT(strlen(base) == strlen(z->prefix) + 3 && strncmp(base, z->prefix, strlen(z->prefix)) == 0);
        uint64_t total = 0;
        for (size_t i = 0; i < z->n; i++) {
            const zip_member *m = &z->members[i];
            total += m->size;
            CU_ASSERT_EQUAL(m->data_offset % 64, 0);
            CU_ASSERT(zip_find(z, m->name) == m);
            CU_ASSERT(zip_find_rel(z, m->name + strlen(z->prefix) + 1) == m);
            TU_ASSERT_OK(zip_check_crc(fd, z, i, FIXTURES[f].path));
        }
        CU_ASSERT_EQUAL(total, FIXTURES[f].total);
        CU_ASSERT(zip_find_rel(z, "data.pkl") == &z->members[0]);
        CU_ASSERT(zip_find_rel(z, "version") == &z->members[z->n - 1]);
        uint8_t *v = NULL;
        TU_ASSERT_OK(zip_read_member(fd, z, zip_find_rel(z, "version"), 16, "v", &v));
        CU_ASSERT_STRING_EQUAL((char *)v, "3\n");
        free(v);
        zip_free(z);
        close(fd);
    }
}

static void test_fixture_entries(void) {
    int fd;
    zip_archive *z;
    open_fixture(Z3_MODEL_PATH, &fd, &z);
    const size_t n = sizeof Z3_MODEL / sizeof Z3_MODEL[0];
    CU_ASSERT_FATAL(z->n == n);
    CU_ASSERT_STRING_EQUAL(z->prefix, "zero_pp_rank_0_mp_rank_00_model_states");
    for (size_t i = 0; i < n; i++) {
        const zip_member *m = &z->members[i];
        char want[128];
        snprintf(want, sizeof want, "%s/%s", z->prefix, Z3_MODEL[i].rel);
        CU_ASSERT_STRING_EQUAL(m->name, want);
        CU_ASSERT_EQUAL(m->local_offset, Z3_MODEL[i].local_offset);
        CU_ASSERT_EQUAL(m->size, Z3_MODEL[i].size);
        CU_ASSERT_EQUAL(m->crc32, Z3_MODEL[i].crc);
    }
    /* Data offsets seen with xxd: header 30 + name + FB field. */
    CU_ASSERT_EQUAL(z->members[0].data_offset, 128);
    CU_ASSERT_EQUAL(z->members[1].data_offset, 4608);
    CU_ASSERT_EQUAL(z->members[n - 1].data_offset, 8192);
    /* Lookups. */
    CU_ASSERT(zip_find_rel(z, "data/22") == &z->members[16]);
    CU_ASSERT(zip_find(z, "zero_pp_rank_0_mp_rank_00_model_states/data/9") == &z->members[24]);
    CU_ASSERT(zip_find(z, "data/9") == NULL);
    CU_ASSERT(zip_find_rel(z, "data/24") == NULL);
    CU_ASSERT(zip_find_rel(z, "data") == NULL);
    CU_ASSERT(zip_find_rel(z, "") == NULL);
    CU_ASSERT(zip_find_rel(z, "data/1/") == NULL);
    CU_ASSERT(zip_find(z, "zero_pp_rank_0_mp_rank_00_model_states") == NULL);
    /* data.pkl is a protocol-2 pickle; a too-small limit is refused. */
    uint8_t *pkl = NULL;
    TU_ASSERT_OK(zip_read_member(fd, z, &z->members[0], 1 << 20, "f", &pkl));
    CU_ASSERT(pkl[0] == 0x80 && pkl[1] == 2 && pkl[4345] == '.');
    free(pkl);
    CU_ASSERT_EQUAL(zip_read_member(fd, z, &z->members[0], 4345, "f", &pkl), DSCKPT_ECORRUPT);
    CU_ASSERT(msg_has("is 4346 bytes, more than the 4345 allowed") != NULL);
    CU_ASSERT(pkl == NULL);
    CU_ASSERT_EQUAL(zip_check_crc(fd, z, n, "f"), DSCKPT_EINVAL);
    zip_free(z);
    close(fd);
}

/* ---- writer ---- */

/* Re-writes every member of fixture `rel` (same names, bytes, order) with the
 * writer into dir and compares the whole file. */
static void roundtrip_one(const char *dir, const char *rel, int k) {
    int fd;
    zip_archive *z;
    open_fixture(rel, &fd, &z);
    char name[32];
    snprintf(name, sizeof name, "rt%d.pt", k);
    char *out = tu_path(dir, name);
    ds_stream *s = NULL;
    TU_ASSERT_OK(ds_stream_create(out, 0, &s));
    zip_writer *w = NULL;
    TU_ASSERT_OK(zip_writer_new(s, z->prefix, &w));
    for (size_t i = 0; i < z->n; i++) {
        const zip_member *m = &z->members[i];
        uint8_t *data = NULL;
        TU_ASSERT_OK(zip_read_member(fd, z, m, (size_t)m->size, rel, &data));
        uint64_t off = 0;
        TU_ASSERT_OK(zip_writer_begin(w, m->name + strlen(z->prefix) + 1, m->size, &off));
        CU_ASSERT_EQUAL(off, m->data_offset);
        /* In two pieces, to exercise the running CRC. */
        size_t half = (size_t)m->size / 2;
        TU_ASSERT_OK(zip_writer_write(w, data, half));
        TU_ASSERT_OK(zip_writer_write(w, data + half, (size_t)m->size - half));
        TU_ASSERT_OK(zip_writer_end(w));
        free(data);
    }
    TU_ASSERT_OK(zip_writer_finish(w));
    zip_writer_free(w);
    TU_ASSERT_OK(ds_stream_finish(s, NULL));

    char *src_dir = tu_src_path("fixtures");
    char *src = tu_path(src_dir, rel);
    size_t la = 0, lb = 0;
    uint8_t *a = tu_read(src, &la), *b = tu_read(out, &lb);
    CU_ASSERT_FATAL(a && b);
    CU_ASSERT_EQUAL(la, lb);
    bool same = la == lb && memcmp(a, b, la) == 0;
    if (!same) {
        size_t d = 0;
        while (d < la && d < lb && a[d] == b[d]) d++;
        fprintf(stderr, "\n  %s: first difference at byte %zu\n", rel, d);
    }
    CU_ASSERT(same);
    free(a);
    free(b);
    free(src);
    free(src_dir);
    unlink(out);
    free(out);
    zip_free(z);
    close(fd);
}

static void test_writer_roundtrip(void) {
    char *dir = tu_mkdtemp();
    for (size_t f = 0; f < N_FIXTURES; f++) roundtrip_one(dir, FIXTURES[f].path, (int)f);
    tu_rmtree(dir);
    free(dir);
}

/* The writer and the test's own encoder agree, and the result reads back. */
static void test_writer_matches_builder(void) {
    tlay L;
    uint8_t *want = base(&L);
    char *dir = tu_mkdtemp();
    char *out = tu_path(dir, "w.pt");
    ds_stream *s = NULL;
    TU_ASSERT_OK(ds_stream_create(out, 0, &s));
    zip_writer *w = NULL;
    TU_ASSERT_OK(zip_writer_new(s, "arch", &w));
    for (size_t i = 0; i < BASE_N; i++) {
        uint64_t off;
        TU_ASSERT_OK(zip_writer_begin(w, BASE_NAMES[i] + 5, BASE_SIZES[i], &off));
        CU_ASSERT_EQUAL(off, L.data[i]);
        for (size_t k = 0; k < BASE_SIZES[i]; k++) {
            uint8_t c = pattern(i, k);
            TU_ASSERT_OK(zip_writer_write(w, &c, 1));
        }
        TU_ASSERT_OK(zip_writer_end(w));
    }
    TU_ASSERT_OK(zip_writer_finish(w));
    zip_writer_free(w);
    TU_ASSERT_OK(ds_stream_finish(s, NULL));
    size_t n = 0;
    uint8_t *got = tu_read(out, &n);
    CU_ASSERT_FATAL(got != NULL);
    CU_ASSERT(n == L.size && memcmp(got, want, n) == 0);
    zip_archive *z = NULL;
    int fd = -1;
    expect_open("writer output", got, n, DSCKPT_OK, NULL, &z, &fd);
    CU_ASSERT_FATAL(z != NULL);
    CU_ASSERT_STRING_EQUAL(z->prefix, "arch");
    for (size_t i = 0; i < BASE_N; i++) {
        CU_ASSERT_STRING_EQUAL(z->members[i].name, BASE_NAMES[i]);
        CU_ASSERT_EQUAL(z->members[i].size, BASE_SIZES[i]);
        TU_ASSERT_OK(zip_check_crc(fd, z, i, "w"));
    }
    zip_free(z);
    close(fd);
    free(got);
    free(want);
    tu_rmtree(dir);
    free(out);
    free(dir);
}

static void test_writer_misuse(void) {
    char *dir = tu_mkdtemp();
    char *out = tu_path(dir, "m.pt");
    ds_stream *s = NULL;
    TU_ASSERT_OK(ds_stream_create(out, 0, &s));
    zip_writer *w = NULL;
    CU_ASSERT_EQUAL(zip_writer_new(s, "a/b", &w), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(zip_writer_new(s, "..", &w), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(zip_writer_new(s, "", &w), DSCKPT_EINVAL);
    CU_ASSERT(w == NULL);
    TU_ASSERT_OK(zip_writer_new(s, "top", &w));
    uint64_t off;
    CU_ASSERT_EQUAL(zip_writer_finish(w), DSCKPT_EMISUSE); /* no members */
    CU_ASSERT(msg_has("no members") != NULL);
    CU_ASSERT_EQUAL(zip_writer_begin(w, "../x", 1, &off), DSCKPT_EINVAL);
    CU_ASSERT(msg_has("'..'") != NULL);
    CU_ASSERT_EQUAL(zip_writer_begin(w, "", 1, &off), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(zip_writer_begin(w, "a\\b", 1, &off), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(zip_writer_begin(w, "a//b", 1, &off), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(zip_writer_write(w, "x", 1), DSCKPT_EMISUSE); /* nothing open */
    CU_ASSERT_EQUAL(zip_writer_end(w), DSCKPT_EMISUSE);
    TU_ASSERT_OK(zip_writer_begin(w, "data.pkl", 3, &off));
    CU_ASSERT_EQUAL(off, 64);
    CU_ASSERT_EQUAL(zip_writer_begin(w, "other", 1, &off), DSCKPT_EMISUSE); /* still open */
    CU_ASSERT_EQUAL(zip_writer_write(w, "abcd", 4), DSCKPT_EINVAL);     /* too many */
    TU_ASSERT_OK(zip_writer_write(w, "ab", 2));
    CU_ASSERT_EQUAL(zip_writer_end(w), DSCKPT_EMISUSE); /* too few */
    CU_ASSERT(msg_has("2 of its 3 bytes") != NULL);
    CU_ASSERT_EQUAL(zip_writer_finish(w), DSCKPT_EMISUSE); /* still open */
    TU_ASSERT_OK(zip_writer_write(w, "c", 1));
    TU_ASSERT_OK(zip_writer_end(w));
    TU_ASSERT_OK(zip_writer_begin(w, "data.pkl", 0, &off)); /* duplicate: caught at finish */
    TU_ASSERT_OK(zip_writer_end(w));
    CU_ASSERT_EQUAL(zip_writer_finish(w), DSCKPT_EINVAL);
    CU_ASSERT(msg_has("duplicate member name 'top/data.pkl'") != NULL);
    CU_ASSERT_EQUAL(zip_writer_begin(w, "x", 0, &off), DSCKPT_EMISUSE); /* unusable now */
    zip_writer_free(w);
    /* A stream that already holds bytes. */
    TU_ASSERT_OK(ds_stream_write(s, "x", 1));
    w = NULL;
    CU_ASSERT_EQUAL(zip_writer_new(s, "top", &w), DSCKPT_EINVAL);
    CU_ASSERT(w == NULL);
    ds_stream_abort(s);
    zip_writer_free(NULL);
    tu_rmtree(dir);
    free(out);
    free(dir);
}

/* ---- ZIP64 central entries ---- */

static void test_zip64_central(void) {
    tlay L;
    uint8_t *b = tb_build(BASE_NAMES, BASE_SIZES, BASE_N, true, true, &L);
    /* The sizes and offsets come from the ZIP64 extra fields. */
    zip_archive *z = NULL;
    int fd = -1;
    expect_open("zip64 central", b, L.size, DSCKPT_OK, NULL, &z, &fd);
    CU_ASSERT_FATAL(z != NULL);
    for (size_t i = 0; i < BASE_N; i++) {
        CU_ASSERT_EQUAL(z->members[i].size, BASE_SIZES[i]);
        CU_ASSERT_EQUAL(z->members[i].local_offset, L.local[i]);
        CU_ASSERT_EQUAL(z->members[i].data_offset, L.data[i]);
        TU_ASSERT_OK(zip_check_crc(fd, z, i, "t"));
    }
    zip_free(z);
    close(fd);

    /* 64-bit values are used as such: > 4 GiB sizes / offsets run past the file. */
    size_t x1 = L.cent[1] + 46 + strlen(BASE_NAMES[1]); /* member 1's extra field */
    uint8_t *c = malloc(L.size);
    memcpy(c, b, L.size);
    ds_put_le64(c + x1 + 4, 5ull << 30);
    ds_put_le64(c + x1 + 12, 5ull << 30);
    expect_open("zip64 size 5 GiB", c, L.size, DSCKPT_ECORRUPT, "(5368709120 bytes) runs past the end of the file",
                NULL, NULL);
    memcpy(c, b, L.size);
    ds_put_le64(c + x1 + 20, 1ull << 33);
    expect_open("zip64 offset 8 GiB", c, L.size, DSCKPT_ECORRUPT,
                "local header at offset 8589934592 runs past the end of the file", NULL, NULL);
    memcpy(c, b, L.size);
    ds_put_le64(c + x1 + 4, 64); /* sizes differ */
    ds_put_le64(c + x1 + 12, 65);
    expect_open("zip64 sizes differ", c, L.size, DSCKPT_ECORRUPT, "compressed size 65 differs from size 64", NULL,
                NULL);
    memcpy(c, b, L.size);
    p16(c + x1 + 2, 16); /* too short for three saturated fields */
    expect_open("zip64 extra short", c, L.size, DSCKPT_ECORRUPT, "ZIP64 extra field is 16 bytes, 24 needed", NULL,
                NULL);
    memcpy(c, b, L.size);
    p16(c + x1 + 2, 200);
    expect_open("extra past its data", c, L.size, DSCKPT_ECORRUPT, "extra field 0x0001 runs past its extra data",
                NULL, NULL);
    memcpy(c, b, L.size);
    p16(c + x1, 0x5455); /* not a ZIP64 field: the saturated values are unexplained */
    expect_open("saturated, no zip64", c, L.size, DSCKPT_ECORRUPT, "no ZIP64 extra field", NULL, NULL);
    free(c);
    free(b);
}

/* ---- hostile catalogue ---- */

typedef size_t (*mutator)(uint8_t *b, size_t n, const tlay *L);

static size_t m_no_eocd(uint8_t *b, size_t n, const tlay *L) {
    p32(b + L->eocd, 0x06054b51);
    return n;
}
static size_t m_cut_eocd(uint8_t *b, size_t n, const tlay *L) {
    DS_UNUSED(b), DS_UNUSED(n);
    return L->eocd + 10;
}
static size_t m_cut_central(uint8_t *b, size_t n, const tlay *L) {
    DS_UNUSED(b), DS_UNUSED(n);
    return L->cent[2] + 5;
}
static size_t m_comment_missing(uint8_t *b, size_t n, const tlay *L) {
    p16(b + L->eocd + 20, 256); /* a comment length, but no comment follows */
    return n;
}
static size_t m_cd_beyond_eof(uint8_t *b, size_t n, const tlay *L) {
    ds_put_le64(b + L->z64 + 48, L->size + 1000);
    p32(b + L->eocd + 16, 0xFFFFFFFF);
    return n;
}
static size_t m_cd_size_beyond(uint8_t *b, size_t n, const tlay *L) {
    ds_put_le64(b + L->z64 + 40, L->size);
    p32(b + L->eocd + 12, 0xFFFFFFFF);
    return n;
}
static size_t m_count_huge(uint8_t *b, size_t n, const tlay *L) {
    ds_put_le64(b + L->z64 + 24, 1ull << 40);
    ds_put_le64(b + L->z64 + 32, 1ull << 40);
    p16(b + L->eocd + 8, 0xFFFF);
    p16(b + L->eocd + 10, 0xFFFF);
    return n;
}
static size_t m_count_zero(uint8_t *b, size_t n, const tlay *L) {
    ds_put_le64(b + L->z64 + 24, 0);
    ds_put_le64(b + L->z64 + 32, 0);
    p16(b + L->eocd + 8, 0);
    p16(b + L->eocd + 10, 0);
    return n;
}
static size_t m_count_short(uint8_t *b, size_t n, const tlay *L) {
    ds_put_le64(b + L->z64 + 24, 3);
    ds_put_le64(b + L->z64 + 32, 3);
    p16(b + L->eocd + 8, 3);
    p16(b + L->eocd + 10, 3);
    return n;
}
static size_t m_records_disagree(uint8_t *b, size_t n, const tlay *L) {
    p32(b + L->eocd + 16, (uint32_t)L->cd_off + 1);
    return n;
}
static size_t m_multidisk(uint8_t *b, size_t n, const tlay *L) {
    p32(b + L->loc + 16, 3);
    return n;
}
static size_t m_multidisk_z64(uint8_t *b, size_t n, const tlay *L) {
    p32(b + L->z64 + 16, 1);
    return n;
}
static size_t m_z64_sig(uint8_t *b, size_t n, const tlay *L) {
    p32(b + L->z64, 0x06064b51);
    return n;
}
static size_t m_z64_recsize(uint8_t *b, size_t n, const tlay *L) {
    ds_put_le64(b + L->z64 + 4, 40);
    return n;
}
static size_t m_z64_offset(uint8_t *b, size_t n, const tlay *L) {
    ds_put_le64(b + L->loc + 8, L->loc - 10);
    return n;
}
static size_t m_central_sig(uint8_t *b, size_t n, const tlay *L) {
    p32(b + L->cent[1], 0x02014b51);
    return n;
}
static size_t m_central_overrun(uint8_t *b, size_t n, const tlay *L) {
    p16(b + L->cent[3] + 30, 1000);
    return n;
}
static size_t m_data_past_eof(uint8_t *b, size_t n, const tlay *L) {
    p32(b + L->cent[3] + 20, 1u << 20);
    p32(b + L->cent[3] + 24, 1u << 20);
    return n;
}
static size_t m_data_into_cd(uint8_t *b, size_t n, const tlay *L) {
    uint32_t sz = (uint32_t)(L->cd_off - L->data[3] + 1);
    p32(b + L->cent[3] + 20, sz);
    p32(b + L->cent[3] + 24, sz);
    return n;
}
static size_t m_overlap(uint8_t *b, size_t n, const tlay *L) {
    uint32_t sz = 64 + 100; /* member 1's data now covers member 2's local header */
    p32(b + L->cent[1] + 20, sz);
    p32(b + L->cent[1] + 24, sz);
    return n;
}
#define RENAME(fn, idx, lit)                                       \
    static size_t fn(uint8_t *b, size_t n, const tlay *L) {        \
        rename_member(b, L, idx, lit, sizeof lit - 1);             \
        return n;                                                  \
    }
RENAME(m_dotdot, 1, "../evil/abc")
RENAME(m_abs, 1, "/abs/data/0")
RENAME(m_backslash, 1, "arch\\data\\0")
RENAME(m_nul, 1, "arch/dat\0/0")
RENAME(m_ctl, 1, "arch/dat\x01/0")
RENAME(m_utf8, 1, "arch/dat\xff/0")
RENAME(m_overlong, 1, "arch/da\xc0\xaf/0")
RENAME(m_empty_comp, 1, "arch//ata/0")
RENAME(m_dot, 1, "arch/./ta/0")
RENAME(m_trailing_slash, 1, "arch/data0/")
RENAME(m_dup, 2, "arch/data/0")
RENAME(m_outside, 2, "arcX/data/1")
RENAME(m_no_top, 0, "archXdata.pkl")
static size_t m_empty_name(uint8_t *b, size_t n, const tlay *L) {
    p16(b + L->cent[1] + 28, 0);
    return n;
}
static size_t m_method8(uint8_t *b, size_t n, const tlay *L) {
    p16(b + L->cent[1] + 10, 8);
    return n;
}
static size_t m_encrypted(uint8_t *b, size_t n, const tlay *L) {
    p16(b + L->cent[1] + 8, 0x0809);
    return n;
}
static size_t m_local_name(uint8_t *b, size_t n, const tlay *L) {
    b[L->local[1] + 30 + 10] = '7';
    return n;
}
static size_t m_local_name_len(uint8_t *b, size_t n, const tlay *L) {
    p16(b + L->local[1] + 26, 10);
    return n;
}
static size_t m_local_sig(uint8_t *b, size_t n, const tlay *L) {
    p32(b + L->local[2], 0x04034b51);
    return n;
}
static size_t m_local_method(uint8_t *b, size_t n, const tlay *L) {
    p16(b + L->local[1] + 8, 8);
    return n;
}
static size_t m_local_past_eof(uint8_t *b, size_t n, const tlay *L) {
    p32(b + L->cent[3] + 42, (uint32_t)(L->size - 10));
    return n;
}
static size_t m_csize(uint8_t *b, size_t n, const tlay *L) {
    p32(b + L->cent[1] + 20, 63);
    return n;
}
static size_t m_disk_start(uint8_t *b, size_t n, const tlay *L) {
    p16(b + L->cent[1] + 34, 2);
    return n;
}

static const struct {
    const char *label;
    mutator fn;
    dsckpt_status want;
    const char *frag;
} CATALOGUE[] = {
    {"end record missing", m_no_eocd, DSCKPT_ECORRUPT, "no end of central directory record"},
    {"cut inside the end record", m_cut_eocd, DSCKPT_ECORRUPT, "no end of central directory record"},
    {"cut inside the central directory", m_cut_central, DSCKPT_ECORRUPT, "no end of central directory record"},
    {"comment length without comment", m_comment_missing, DSCKPT_ECORRUPT, "no end of central directory record"},
    {"central directory offset beyond EOF", m_cd_beyond_eof, DSCKPT_ECORRUPT, "lies beyond the end records"},
    {"central directory size beyond EOF", m_cd_size_beyond, DSCKPT_ECORRUPT, "lies beyond the end records"},
    {"entry count huge", m_count_huge, DSCKPT_ECORRUPT, "1099511627776 entries cannot fit"},
    {"entry count zero", m_count_zero, DSCKPT_ECORRUPT, "has no members"},
    {"entry count short", m_count_short, DSCKPT_ECORRUPT, "bytes follow the last central directory entry"},
    {"end records disagree", m_records_disagree, DSCKPT_ECORRUPT, "disagrees with the ZIP64 record"},
    {"multi-disk locator", m_multidisk, DSCKPT_EUNSUPPORTED, "multi-disk"},
    {"multi-disk ZIP64 record", m_multidisk_z64, DSCKPT_EUNSUPPORTED, "multi-disk"},
    {"bad ZIP64 end signature", m_z64_sig, DSCKPT_ECORRUPT, "bad ZIP64 end of central directory signature"},
    {"bad ZIP64 record size", m_z64_recsize, DSCKPT_ECORRUPT, "has a bad size 40"},
    {"ZIP64 record overlaps locator", m_z64_offset, DSCKPT_ECORRUPT, "does not fit before its locator"},
    {"bad central signature", m_central_sig, DSCKPT_ECORRUPT, "bad central directory entry signature"},
    {"central entry overruns", m_central_overrun, DSCKPT_ECORRUPT, "runs past the end of the central directory"},
    {"data past EOF", m_data_past_eof, DSCKPT_ECORRUPT, "runs past the end of the file"},
    {"data into central directory", m_data_into_cd, DSCKPT_ECORRUPT, "runs into the central directory"},
    {"overlapping members", m_overlap, DSCKPT_ECORRUPT, "members 'arch/data/0' [180, 420) and 'arch/data/1' [336, 387) overlap"},
    {"../evil", m_dotdot, DSCKPT_ECORRUPT, "member name '../evil/abc' (central directory entry 1) is not a safe name: it has a '..' component"},
    {"/abs", m_abs, DSCKPT_ECORRUPT, "'/abs/data/0' (central directory entry 1) is not a safe name: it is an absolute path"},
    {"backslash", m_backslash, DSCKPT_ECORRUPT, "it contains '\\'"},
    {"NUL in name", m_nul, DSCKPT_ECORRUPT, "'arch/dat\\x00/0' (central directory entry 1) is not a safe name: it contains a NUL byte"},
    {"control character", m_ctl, DSCKPT_ECORRUPT, "contains a control character"},
    {"bad UTF-8", m_utf8, DSCKPT_ECORRUPT, "'arch/dat\\xff/0' (central directory entry 1) is not a safe name: it is not valid UTF-8"},
    {"overlong UTF-8", m_overlong, DSCKPT_ECORRUPT, "is not valid UTF-8"},
    {"empty component", m_empty_comp, DSCKPT_ECORRUPT, "has an empty path component"},
    {"dot component", m_dot, DSCKPT_ECORRUPT, "has a '.' component"},
    {"directory entry", m_trailing_slash, DSCKPT_ECORRUPT, "has an empty path component"},
    {"empty name", m_empty_name, DSCKPT_ECORRUPT, "(central directory entry 1) is not a safe name: it is empty"},
    {"duplicate names", m_dup, DSCKPT_ECORRUPT, "duplicate member name 'arch/data/0'"},
    {"outside the top folder", m_outside, DSCKPT_ECORRUPT, "'arcX/data/1' is outside the archive's top folder 'arch'"},
    {"no top folder", m_no_top, DSCKPT_ECORRUPT, "first member 'archXdata.pkl' is not inside a top folder"},
    {"method 8", m_method8, DSCKPT_EUNSUPPORTED, "'arch/data/0' uses compression method 8"},
    {"encrypted", m_encrypted, DSCKPT_EUNSUPPORTED, "'arch/data/0' is encrypted"},
    {"local name differs", m_local_name, DSCKPT_ECORRUPT, "differs from the central directory's ('arch/data/7')"},
    {"local name length differs", m_local_name_len, DSCKPT_ECORRUPT, "is 10 bytes, the central directory's 11"},
    {"bad local signature", m_local_sig, DSCKPT_ECORRUPT, "'arch/data/1': bad local header signature at offset"},
    {"local method differs", m_local_method, DSCKPT_ECORRUPT, "local header says compression method 8"},
    {"local header past EOF", m_local_past_eof, DSCKPT_ECORRUPT, "'arch/version': local header at offset"},
    {"compressed size differs", m_csize, DSCKPT_ECORRUPT, "compressed size 63 differs from size 64"},
    {"starts on another disk", m_disk_start, DSCKPT_EUNSUPPORTED, "starts on disk 2"},
};

static void test_hostile_catalogue(void) {
    for (size_t c = 0; c < sizeof CATALOGUE / sizeof CATALOGUE[0]; c++) {
        tlay L;
        uint8_t *b = base(&L);
        size_t n = CATALOGUE[c].fn(b, L.size, &L);
        expect_open(CATALOGUE[c].label, b, n, CATALOGUE[c].want, CATALOGUE[c].frag, NULL, NULL);
        free(b);
    }
}

static void test_crc_mismatch(void) {
    tlay L;
    uint8_t *b = base(&L);
    b[L.data[2] + 1] ^= 0x40; /* flip a data bit: open is fine, the CRC is not */
    zip_archive *z = NULL;
    int fd = -1;
    expect_open("crc", b, L.size, DSCKPT_OK, NULL, &z, &fd);
    CU_ASSERT_FATAL(z != NULL);
    TU_ASSERT_OK(zip_check_crc(fd, z, 1, "t.pt"));
    CU_ASSERT_EQUAL(zip_check_crc(fd, z, 2, "t.pt"), DSCKPT_ECHECKSUM);
    CU_ASSERT(msg_has("t.pt: member 'arch/data/1': CRC-32 mismatch") != NULL);
    zip_free(z);
    close(fd);
    free(b);
}

/* Valid variations: a classic-only archive, a comment (also one that contains
 * an end-record signature), members in any order of offsets. */
static void test_valid_variants(void) {
    tlay L;
    uint8_t *b = tb_build(BASE_NAMES, BASE_SIZES, BASE_N, false, false, &L);
    expect_open("classic end record only", b, L.size, DSCKPT_OK, NULL, NULL, NULL);
    free(b);

    b = base(&L);
    const char comment[] = "xxPK\x05\x06 a fake end record in the comment";
    size_t cl = sizeof comment - 1;
    uint8_t *c = malloc(L.size + cl);
    memcpy(c, b, L.size);
    memcpy(c + L.size, comment, cl);
    p16(c + L.eocd + 20, (uint32_t)cl);
    zip_archive *z = NULL;
    int fd = -1;
    expect_open("comment", c, L.size + cl, DSCKPT_OK, NULL, &z, &fd);
    CU_ASSERT_FATAL(z != NULL);
    CU_ASSERT_EQUAL(z->n, BASE_N);
    zip_free(z);
    close(fd);
    free(c);

    /* Central entries in reverse offset order are fine (only overlap is not). */
    uint8_t *r = malloc(L.size);
    memcpy(r, b, L.size);
    size_t e0 = L.cent[1] - L.cent[0], e1 = L.cent[2] - L.cent[1];
    memcpy(r + L.cent[0], b + L.cent[1], e1);
    memcpy(r + L.cent[0] + e1, b + L.cent[0], e0);
    /* the first entry is now arch/data/0: still under "arch" */
    expect_open("reordered central directory", r, L.size, DSCKPT_OK, NULL, &z, &fd);
    CU_ASSERT_FATAL(z != NULL);
    CU_ASSERT_STRING_EQUAL(z->members[0].name, "arch/data/0");
    CU_ASSERT(zip_find_rel(z, "data.pkl") == &z->members[1]);
    zip_free(z);
    close(fd);
    free(r);
    free(b);

    /* Names with multi-byte UTF-8 and a single member. */
    const char *nm[] = {"t\xc3\xa9st/data.pkl"};
    const size_t sz[] = {5};
    b = tb_build(nm, sz, 1, false, true, &L);
    expect_open("utf-8 name", b, L.size, DSCKPT_OK, NULL, &z, &fd);
    CU_ASSERT_FATAL(z != NULL);
    CU_ASSERT_STRING_EQUAL(z->prefix, "t\xc3\xa9st");
    zip_free(z);
    close(fd);
    free(b);
}

/* ---- sweeps ---- */

/* Every prefix of a real file (from `step`) is refused cleanly. */
static void truncation_sweep(const char *rel, size_t step) {
    char *dir = tu_src_path("fixtures");
    char *path = tu_path(dir, rel);
    size_t n = 0;
    uint8_t *b = tu_read(path, &n);
    CU_ASSERT_FATAL(b != NULL);
    int fd = mem_fd(b, n);
    size_t bad = 0;
    /* Shrink the same file from the end: ftruncate keeps the prefix. */
    for (size_t len = n - 1;; len = len >= step ? len - step : 0) {
        CU_ASSERT_FATAL(ftruncate(fd, (off_t)len) == 0);
        zip_archive *z = NULL;
        dsckpt_status st = zip_open_fd(fd, "p", &z);
        if (st != DSCKPT_ECORRUPT ||
            (!msg_has("no end of central directory") && !msg_has("truncated"))) {
            if (bad++ < 5)
                fprintf(stderr, "\n  %s cut at %zu: %s %s\n", rel, len, dsckpt_status_name(st),
                        dsckpt_last_error());
        }
        zip_free(z);
        if (len == 0) break;
    }
    CU_ASSERT_EQUAL(bad, 0);
    close(fd);
    free(b);
    free(path);
    free(dir);
}

static void test_truncation_sweep(void) {
    truncation_sweep("deepspeed/z3_ws4_fp32_1g/ckpt/global_step3/zero_pp_rank_1_mp_rank_00_model_states.pt", 1);
    truncation_sweep("deepspeed/z3_ws4_fp32_1g/ckpt/global_step3/zero_pp_rank_0_mp_rank_00_optim_states.pt", 97);
}

/* Every byte of the headers, central directory and end records set to a few
 * values: whatever happens must be a clean status (the sanitizers watch). */
static void test_mutation_sweep(void) {
    tlay L;
    uint8_t *b = tb_build(BASE_NAMES, BASE_SIZES, BASE_N, true, true, &L);
    static const uint8_t vals[] = {0x00, 0xFF, 0x7F, 0x80, 0x01};
    size_t ok = 0, refused = 0;
    for (size_t pos = 0; pos < L.size; pos++) {
        bool header = pos >= L.cd_off;
        for (size_t i = 0; i < BASE_N && !header; i++) header = pos >= L.local[i] && pos < L.data[i];
        if (!header) continue;
        for (size_t v = 0; v < sizeof vals; v++) {
            if (b[pos] == vals[v]) continue;
            uint8_t old = b[pos];
            b[pos] = vals[v];
            int fd = mem_fd(b, L.size);
            zip_archive *z = NULL;
            dsckpt_status st = zip_open_fd(fd, "m", &z);
            if (st == DSCKPT_OK) {
                ok++;
                for (size_t i = 0; i < z->n; i++) {
                    dsckpt_status c = zip_check_crc(fd, z, i, "m");
                    CU_ASSERT(c == DSCKPT_OK || c == DSCKPT_ECHECKSUM);
                    CU_ASSERT(z->members[i].data_offset + z->members[i].size <= L.size);
                }
            } else {
                refused++;
                CU_ASSERT(st == DSCKPT_ECORRUPT || st == DSCKPT_EUNSUPPORTED);
                CU_ASSERT(strstr(dsckpt_last_error(), "m: ") == dsckpt_last_error());
            }
            zip_free(z);
            close(fd);
            b[pos] = old;
        }
    }
    CU_ASSERT(refused > 0 && ok > 0);
    free(b);
}

/* ---- > 4 GiB (opt-in) ---- */

static void test_large_zip64(void) {
    if (!getenv("DSCKPT_TEST_ZIP64_LARGE")) {
        fprintf(stderr, " (skipped: set DSCKPT_TEST_ZIP64_LARGE=1 to write a 4 GiB archive) ");
        return;
    }
    const uint64_t big = (4ull << 30) + 3; /* size >= 0xFFFFFFFF */
    char *dir = tu_mkdtemp();
    char *out = tu_path(dir, "big.pt");
    ds_stream *s = NULL;
    TU_ASSERT_OK(ds_stream_create(out, 0, &s));
    zip_writer *w = NULL;
    TU_ASSERT_OK(zip_writer_new(s, "big", &w));
    uint64_t off[4];
    TU_ASSERT_OK(zip_writer_begin(w, "data.pkl", 10, &off[0]));
    TU_ASSERT_OK(zip_writer_write(w, "0123456789", 10));
    TU_ASSERT_OK(zip_writer_end(w));
    TU_ASSERT_OK(zip_writer_begin(w, "data/0", big, &off[1]));
    size_t chunk = 1 << 20;
    uint8_t *buf = malloc(chunk);
    for (size_t k = 0; k < chunk; k++) buf[k] = (uint8_t)(k * 7);
    for (uint64_t done = 0; done < big;) {
        size_t k = (size_t)(big - done < chunk ? big - done : chunk);
        TU_ASSERT_OK(zip_writer_write(w, buf, k));
        done += k;
    }
    free(buf);
    TU_ASSERT_OK(zip_writer_end(w));
    TU_ASSERT_OK(zip_writer_begin(w, "data/1", 5, &off[2])); /* local offset >= 4 GiB */
    TU_ASSERT_OK(zip_writer_write(w, "abcde", 5));
    TU_ASSERT_OK(zip_writer_end(w));
    TU_ASSERT_OK(zip_writer_begin(w, "version", 2, &off[3]));
    TU_ASSERT_OK(zip_writer_write(w, "3\n", 2));
    TU_ASSERT_OK(zip_writer_end(w));
    TU_ASSERT_OK(zip_writer_finish(w));
    zip_writer_free(w);
    TU_ASSERT_OK(ds_stream_finish(s, NULL));

    int fd;
    uint64_t size;
    TU_ASSERT_OK(ds_open_read(out, &fd, &size));
    zip_archive *z = NULL;
    TU_ASSERT_OK(zip_open_fd(fd, out, &z));
    CU_ASSERT_FATAL(z->n == 4);
    CU_ASSERT_EQUAL(z->members[1].size, big);
    CU_ASSERT(z->members[2].local_offset > 0xFFFFFFFFull);
    for (size_t i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(z->members[i].data_offset, off[i]);
        CU_ASSERT_EQUAL(z->members[i].data_offset % 64, 0);
        TU_ASSERT_OK(zip_check_crc(fd, z, i, out));
    }
    /* torch's local ZIP64 fields: size and a zero compressed size; the offset. */
    uint8_t h[30 + 10 + 20];
    TU_ASSERT_OK(ds_pread_full(fd, h, sizeof h, z->members[1].local_offset, out));
    CU_ASSERT_EQUAL(g32(h + 40), 0x00100001u); /* id 1, 16 bytes */
    CU_ASSERT_EQUAL(ds_get_le64(h + 44), big);
    CU_ASSERT_EQUAL(ds_get_le64(h + 52), 0);
    TU_ASSERT_OK(ds_pread_full(fd, h, sizeof h, z->members[2].local_offset, out));
    CU_ASSERT_EQUAL(g32(h + 40), 0x00080001u); /* id 1, 8 bytes: the offset */
    CU_ASSERT_EQUAL(ds_get_le64(h + 44), z->members[2].local_offset);
    /* 64-bit data descriptor after the big member. */
    uint8_t d[24];
    TU_ASSERT_OK(ds_pread_full(fd, d, sizeof d, off[1] + big, out));
    CU_ASSERT_EQUAL(g32(d), 0x08074b50);
    CU_ASSERT_EQUAL(ds_get_le64(d + 8), big);
    CU_ASSERT_EQUAL(ds_get_le64(d + 16), big);
    TU_ASSERT_OK(ds_pread_full(fd, d, 24, off[2] + 5, out));
    CU_ASSERT_EQUAL(g32(d), 0x08074b50);
    CU_ASSERT_EQUAL(ds_get_le64(d + 8), 5);
    zip_free(z);
    close(fd);
    if (getenv("DSCKPT_TEST_ZIP64_KEEP"))
        fprintf(stderr, " (kept %s) ", out);
    else
        tu_rmtree(dir);
    free(out);
    free(dir);
}

/* ---- the planned writer ---- */

/* BASE's members (and an empty one) through the streaming writer at `align`. */
static uint8_t *streamed(const char *path, uint32_t align, size_t *n) {
    ds_stream *s = NULL;
    zip_writer *w = NULL;
    TU_ASSERT_OK(ds_stream_create(path, 0, &s));
    TU_ASSERT_OK(zip_writer_new(s, "arch", &w));
    TU_ASSERT_OK(zip_writer_set_alignment(w, align));
    for (size_t i = 0; i <= BASE_N; i++) {
        size_t sz = i < BASE_N ? BASE_SIZES[i] : 0;
        TU_ASSERT_OK(zip_writer_begin(w, i < BASE_N ? BASE_NAMES[i] + 5 : "empty", sz, NULL));
        for (size_t k = 0; k < sz; k++) {
            uint8_t c = pattern(i, k);
            TU_ASSERT_OK(zip_writer_write(w, &c, 1));
        }
        TU_ASSERT_OK(zip_writer_end(w));
    }
    TU_ASSERT_OK(zip_writer_finish(w));
    zip_writer_free(w);
    TU_ASSERT_OK(ds_stream_finish(s, NULL));
    return tu_read(path, n);
}

/* The same members planned, their data written last member first: the same bytes. */
static void test_layout_matches_writer(void) {
    char *dir = tu_mkdtemp();
    char *a = tu_path(dir, "a.pt"), *b = tu_path(dir, "b.pt");
    static const uint32_t aligns[] = {64, 1, 4096};
    for (size_t t = 0; t < sizeof aligns / sizeof *aligns; t++) {
        unlink(a);
        unlink(b);
        size_t na = 0, nb = 0;
        uint8_t *want = streamed(a, aligns[t], &na);
        zip_layout *l = NULL;
        TU_ASSERT_OK(zip_layout_new("arch", aligns[t], &l));
        uint64_t off[BASE_N + 1];
        for (size_t i = 0; i <= BASE_N; i++)
            TU_ASSERT_OK(zip_layout_add(l, i < BASE_N ? BASE_NAMES[i] + 5 : "empty", i < BASE_N ? BASE_SIZES[i] : 0, &off[i]));
        int fd = open(b, O_WRONLY | O_CREAT | O_EXCL, 0644);
        CU_ASSERT_FATAL(fd >= 0);
        for (size_t i = BASE_N; i-- > 0;) {
            uint8_t data[128];
            for (size_t k = 0; k < BASE_SIZES[i]; k++) data[k] = pattern(i, k);
            TU_ASSERT_OK(ds_pwrite_full(fd, data, BASE_SIZES[i], off[i], b));
            zip_layout_set_crc(l, i, (uint32_t)crc32(0L, data, (uInt)BASE_SIZES[i]));
        }
        TU_ASSERT_OK(zip_layout_write(l, fd, b));
        close(fd);
        zip_layout_free(l);
        uint8_t *got = tu_read(b, &nb);
        CU_ASSERT_FATAL(want && got);
        CU_ASSERT(na == nb && memcmp(want, got, na) == 0);
        free(want);
        free(got);
    }
    /* Duplicate names are refused, as by the streaming writer. */
    zip_layout *l = NULL;
    TU_ASSERT_OK(zip_layout_new("arch", 64, &l));
    TU_ASSERT_OK(zip_layout_add(l, "data/0", 1, NULL));
    TU_ASSERT_OK(zip_layout_add(l, "data/0", 1, NULL));
    CU_ASSERT_EQUAL(zip_layout_write(l, -1, "dup"), DSCKPT_EINVAL);
    CU_ASSERT(strstr(dsckpt_last_error(), "duplicate member name 'arch/data/0'") != NULL);
    zip_layout_free(l);
    CU_ASSERT_EQUAL(zip_layout_new("arch", 48, &l), DSCKPT_EINVAL);
    CU_ASSERT_EQUAL(zip_layout_new("a/b", 64, &l), DSCKPT_EINVAL);
    zip_layout_free(NULL);
    tu_rmtree(dir);
    free(a);
    free(b);
    free(dir);
}

/* ZIP64 from the planned writer without writing 4 GiB: the big member's data is
 * a hole (its CRC is not checked here), the structure is read back. */
static void test_layout_zip64_sparse(void) {
    const uint64_t big = (4ull << 30) + 3;
    char *dir = tu_mkdtemp();
    char *out = tu_path(dir, "big.pt");
    zip_layout *l = NULL;
    uint64_t off[3];
    TU_ASSERT_OK(zip_layout_new("big", 64, &l));
    TU_ASSERT_OK(zip_layout_add(l, "data.pkl", 10, &off[0]));
    TU_ASSERT_OK(zip_layout_add(l, "data/0", big, &off[1]));
    TU_ASSERT_OK(zip_layout_add(l, "data/1", 5, &off[2])); /* local offset >= 4 GiB */
    int fd = open(out, O_RDWR | O_CREAT | O_EXCL, 0644);
    CU_ASSERT_FATAL(fd >= 0);
    TU_ASSERT_OK(ds_pwrite_full(fd, "0123456789", 10, off[0], out));
    TU_ASSERT_OK(ds_pwrite_full(fd, "abcde", 5, off[2], out));
    zip_layout_set_crc(l, 0, (uint32_t)crc32(0L, (const Bytef *)"0123456789", 10));
    zip_layout_set_crc(l, 2, (uint32_t)crc32(0L, (const Bytef *)"abcde", 5));
    TU_ASSERT_OK(zip_layout_write(l, fd, out));
    zip_layout_free(l);
    zip_archive *z = NULL;
    TU_ASSERT_OK(zip_open_fd(fd, out, &z));
    CU_ASSERT_FATAL(z->n == 3);
    CU_ASSERT_EQUAL(z->members[1].size, big);
    CU_ASSERT(z->members[2].local_offset > 0xFFFFFFFFull);
    for (size_t i = 0; i < 3; i++) CU_ASSERT_EQUAL(z->members[i].data_offset, off[i]);
    TU_ASSERT_OK(zip_check_crc(fd, z, 0, out));
    TU_ASSERT_OK(zip_check_crc(fd, z, 2, out));
    uint8_t d[24];
    TU_ASSERT_OK(ds_pread_full(fd, d, sizeof d, off[1] + big, out));
    CU_ASSERT_EQUAL(g32(d), 0x08074b50);
    CU_ASSERT_EQUAL(ds_get_le64(d + 8), big);
    zip_free(z);
    close(fd);
    tu_rmtree(dir);
    free(out);
    free(dir);
}

int main(void) {
    static const tu_test tests[] = {
        {"every fixture opens; members, alignment, CRC", test_fixtures},
        {"one fixture entry by entry (Python zipfile)", test_fixture_entries},
        {"writer re-creates every fixture byte for byte", test_writer_roundtrip},
        {"writer equals an independent encoder", test_writer_matches_builder},
        {"writer misuse", test_writer_misuse},
        {"ZIP64 central entries", test_zip64_central},
        {"hostile catalogue", test_hostile_catalogue},
        {"CRC mismatch", test_crc_mismatch},
        {"valid variants", test_valid_variants},
        {"truncation sweep", test_truncation_sweep},
        {"mutation sweep", test_mutation_sweep},
        {"> 4 GiB writer round trip (opt-in)", test_large_zip64},
        {"planned writer equals the streaming writer", test_layout_matches_writer},
        {"planned writer ZIP64 (sparse)", test_layout_zip64_sparse},
        {NULL, NULL},
    };
    return tu_main("zip", tests);
}
