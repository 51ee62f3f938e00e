/*
 * zip.c — the zip container of torch.save files: a strict central-directory
 * reader for hostile input and a writer that reproduces, byte for byte, the
 * layout torch's miniz-based writer produces (docs/formats/deepspeed.md 5.1).
 * See zip.h for the contracts.
 */
#include "zip.h"

#include "fsutil.h"
#include "names.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* ---- format constants (PKWARE APPNOTE 4.3, 4.4, 4.5.3) ---- */

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_DESCRIPTOR 0x08074b50u
#define SIG_EOCD 0x06054b50u
#define SIG_Z64_EOCD 0x06064b50u
#define SIG_Z64_LOCATOR 0x07064b50u

#define LOCAL_SIZE 30
#define CENTRAL_SIZE 46
#define EOCD_SIZE 22
#define Z64_EOCD_SIZE 56   /* with the record-size field counting 44 */
#define Z64_LOCATOR_SIZE 20
#define MAX_COMMENT 65535u
#define MAX_NAME 65535u

#define EXTRA_ZIP64 0x0001u
#define EXTRA_FB 0x4246u   /* "FB": torch's alignment padding field */
#define FB_PAD_BYTE 'Z'    /* what torch fills the padding with */
#define ALIGN 64           /* torch's kFieldAlignment */

#define U16_SAT 0xFFFFu      /* "see the ZIP64 record / extra field" */
#define U32_SAT 0xFFFFFFFFu

#define FLAG_ENCRYPTED 0x0001u
#define FLAG_DESCRIPTOR 0x0008u
#define FLAG_STRONG_ENCRYPTION 0x0040u
#define FLAG_UTF8 0x0800u
#define FLAG_CD_ENCRYPTED 0x2000u

/* What miniz writes in the ZIP64 end record ("made by" Unix 3.0, "needed" 4.5). */
#define Z64_MADE_BY 0x031Eu
#define Z64_NEEDED 0x002Du

/* A central directory larger than this is refused before it is read into memory
 * (a real torch file needs about 100 bytes per storage). */
#define CD_MAX (1ull << 30)
/* zip_check_crc reads members in pieces of this size. */
#define CRC_CHUNK ((size_t)1 << 20)

#define NAMEF "%.200s"

/* ---- little-endian helpers ---- */

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static void put16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static uint32_t sat32(uint64_t v) { return v >= U32_SAT ? U32_SAT : (uint32_t)v; }

/* zlib's crc32 takes a uInt length; feed it in pieces. */
static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n) {
    while (n > 0) {
        uInt k = (uInt)DS_MIN(n, (size_t)1 << 30);
        crc = (uint32_t)crc32(crc, p, k);
        p += k;
        n -= k;
    }
    return crc;
}

/* ---- member names ---- */


/* A printable rendering of a name (one names.h refused): bytes outside
 * printable ASCII as \xNN, cut after 100 input bytes. */
#define ESC_BUF 420
static const char *esc(const char *s, size_t n, char buf[ESC_BUF]) {
    size_t o = 0;
    for (size_t i = 0; i < n && i < 100; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f)
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, ESC_BUF - o, "\\x%02x", c);
    }
    if (n > 100) o += (size_t)snprintf(buf + o, ESC_BUF - o, "...");
    buf[o] = '\0';
    return buf;
}

/* ---- reader ---- */

/* What zip_open_fd hands out: the public struct first, so a zip_archive*
 * from zip_open_fd converts back. */
typedef struct zip_impl {
    zip_archive pub;
    char *names;               /* one pool holding every member name */
    const zip_member **by_name;/* members sorted by name (strcmp) */
} zip_impl;

/* Where the end records put the central directory. `limit` is the offset of the
 * first end record: the central directory must end at or before it. */
typedef struct cd_loc {
    uint64_t off, size, count, limit;
} cd_loc;

/* Finds the classic end record by scanning back over a possible comment, then
 * the ZIP64 locator and record before it, and cross-checks them. One piece: the
 * three records are read and checked against each other in file order. */
static dsckpt_status find_end(int fd, const char *what, uint64_t fsize, cd_loc *cd) {
    if (fsize < EOCD_SIZE)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: no end of central directory record: the file is only %llu bytes (truncated, or not a "
                      "zip file)",
                      what, (unsigned long long)fsize);
    size_t tail = (size_t)DS_MIN(fsize, (uint64_t)EOCD_SIZE + MAX_COMMENT);
    uint64_t tail_off = fsize - tail;
    uint8_t *buf;
    DS_TRY(ds_malloc(tail, &buf));
    dsckpt_status st = ds_pread_full(fd, buf, tail, tail_off, what);
    if (st) {
        free(buf);
        return st;
    }
    /* The record is followed by exactly its comment: a signature whose comment
     * length does not reach the end of the file is comment text, not the record. */
    size_t found = SIZE_MAX;
    for (size_t i = tail - EOCD_SIZE + 1; i-- > 0;) {
        if (ds_get_le32(buf + i) == SIG_EOCD && i + EOCD_SIZE + get16(buf + i + 20) == tail) {
            found = i;
            break;
        }
    }
    if (found == SIZE_MAX) {
        free(buf);
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: no end of central directory record in the last %zu bytes (truncated, or not a zip file)",
                      what, tail);
    }
    uint8_t e[EOCD_SIZE];
    memcpy(e, buf + found, EOCD_SIZE);
    free(buf);
    uint64_t eocd_off = tail_off + found;
    uint16_t disk = get16(e + 4), cd_disk = get16(e + 6);
    uint16_t n_disk = get16(e + 8), n_total = get16(e + 10);
    uint32_t size32 = ds_get_le32(e + 12), off32 = ds_get_le32(e + 16);

    uint8_t loc[Z64_LOCATOR_SIZE];
    bool z64 = false;
    if (eocd_off >= Z64_LOCATOR_SIZE) {
        DS_TRY(ds_pread_full(fd, loc, sizeof loc, eocd_off - Z64_LOCATOR_SIZE, what));
        z64 = ds_get_le32(loc) == SIG_Z64_LOCATOR;
    }
    if (!z64) {
        if (disk != 0 || cd_disk != 0 || n_disk != n_total)
            return ds_err(DSCKPT_EUNSUPPORTED,
                          "%s: multi-disk (split) zip archives are not supported (disk %u, central directory on "
                          "disk %u)",
                          what, disk, cd_disk);
        cd->count = n_total;
        cd->size = size32;
        cd->off = off32;
        cd->limit = eocd_off;
    } else {
        uint64_t loc_off = eocd_off - Z64_LOCATOR_SIZE;
        uint32_t z_disk = ds_get_le32(loc + 4), ndisks = ds_get_le32(loc + 16);
        uint64_t z_off = ds_get_le64(loc + 8);
        /* miniz writes 1 for the total; some writers write 0. */
        if (z_disk != 0 || ndisks > 1 || (disk != 0 && disk != U16_SAT) || (cd_disk != 0 && cd_disk != U16_SAT))
            return ds_err(DSCKPT_EUNSUPPORTED,
                          "%s: multi-disk (split) zip archives are not supported (ZIP64 locator: %u disks)", what,
                          ndisks);
        if (z_off > loc_off || loc_off - z_off < Z64_EOCD_SIZE)
            return ds_err(DSCKPT_ECORRUPT,
                          "%s: ZIP64 end of central directory record at offset %llu does not fit before its locator "
                          "at offset %llu",
                          what, (unsigned long long)z_off, (unsigned long long)loc_off);
        uint8_t r[Z64_EOCD_SIZE];
        DS_TRY(ds_pread_full(fd, r, sizeof r, z_off, what));
        if (ds_get_le32(r) != SIG_Z64_EOCD)
            return ds_err(DSCKPT_ECORRUPT, "%s: bad ZIP64 end of central directory signature at offset %llu", what,
                          (unsigned long long)z_off);
        uint64_t rec = ds_get_le64(r + 4);
        if (rec < Z64_EOCD_SIZE - 12 || rec > loc_off - z_off - 12)
            return ds_err(DSCKPT_ECORRUPT,
                          "%s: ZIP64 end of central directory record at offset %llu has a bad size %llu", what,
                          (unsigned long long)z_off, (unsigned long long)rec);
        uint64_t zn_disk = ds_get_le64(r + 24), zn_total = ds_get_le64(r + 32);
        if (ds_get_le32(r + 16) != 0 || ds_get_le32(r + 20) != 0 || zn_disk != zn_total)
            return ds_err(DSCKPT_EUNSUPPORTED,
                          "%s: multi-disk (split) zip archives are not supported (ZIP64 record: disk %u, central "
                          "directory on disk %u)",
                          what, ds_get_le32(r + 16), ds_get_le32(r + 20));
        cd->count = zn_total;
        cd->size = ds_get_le64(r + 40);
        cd->off = ds_get_le64(r + 48);
        cd->limit = z_off;
        /* The classic record holds the same values, or the saturated marker. */
        if ((n_total != U16_SAT && n_total != cd->count) || (size32 != U32_SAT && size32 != cd->size) ||
            (off32 != U32_SAT && off32 != cd->off))
            return ds_err(DSCKPT_ECORRUPT,
                          "%s: the end of central directory record (%u entries, %u bytes at offset %u) disagrees with "
                          "the ZIP64 record (%llu entries, %llu bytes at offset %llu)",
                          what, n_total, size32, off32, (unsigned long long)cd->count, (unsigned long long)cd->size,
                          (unsigned long long)cd->off);
    }
    if (cd->off > cd->limit || cd->size > cd->limit - cd->off)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: central directory at offset %llu (%llu bytes) lies beyond the end records at offset %llu "
                      "(file is %llu bytes)",
                      what, (unsigned long long)cd->off, (unsigned long long)cd->size,
                      (unsigned long long)cd->limit, (unsigned long long)fsize);
    if (cd->count == 0) return ds_err(DSCKPT_ECORRUPT, "%s: the archive has no members", what);
    if (cd->count > cd->size / CENTRAL_SIZE)
        return ds_err(DSCKPT_ECORRUPT, "%s: %llu entries cannot fit in a central directory of %llu bytes", what,
                      (unsigned long long)cd->count, (unsigned long long)cd->size);
    if (cd->size > CD_MAX)
        return ds_err(DSCKPT_EUNSUPPORTED, "%s: central directory of %llu bytes is larger than the %llu accepted",
                      what, (unsigned long long)cd->size, (unsigned long long)CD_MAX);
    return DSCKPT_OK;
}

/* Parses the central entry at cd[*pos] into *m (name copied to *pool), checking
 * everything that needs no other entry and no read. One piece: the entry's fields,
 * checked in record order. */
static dsckpt_status parse_central(const uint8_t *cd, const cd_loc *loc, uint64_t *pos, size_t idx,
                                   const char *what, char **pool, zip_member *m) {
    unsigned long long at = (unsigned long long)(loc->off + *pos);
    if (loc->size - *pos < CENTRAL_SIZE)
        return ds_err(DSCKPT_ECORRUPT, "%s: central directory entry %zu at offset %llu is truncated", what, idx, at);
    const uint8_t *h = cd + *pos;
    if (ds_get_le32(h) != SIG_CENTRAL)
        return ds_err(DSCKPT_ECORRUPT, "%s: bad central directory entry signature at offset %llu (entry %zu)", what,
                      at, idx);
    uint16_t flags = get16(h + 8), method = get16(h + 10);
    uint32_t crc = ds_get_le32(h + 16), csize32 = ds_get_le32(h + 20), usize32 = ds_get_le32(h + 24);
    uint16_t nlen = get16(h + 28), xlen = get16(h + 30), clen = get16(h + 32), disk = get16(h + 34);
    uint32_t lofs32 = ds_get_le32(h + 42);
    if ((uint64_t)CENTRAL_SIZE + nlen + xlen + clen > loc->size - *pos)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: central directory entry %zu at offset %llu runs past the end of the central directory",
                      what, idx, at);
    const char *raw = (const char *)h + CENTRAL_SIZE;
    /* Names are joined under directories and printed: the one validator (names.h). */
    const char *why = ds_relname_problem(raw, nlen);
    if (why) {
        char eb[ESC_BUF];
        return ds_err(DSCKPT_ECORRUPT, "%s: member name '%s' (central directory entry %zu) is not a safe name: %s", what,
                      esc(raw, nlen, eb), idx, why);
    }
    char *name = *pool;
    memcpy(name, raw, nlen);
    name[nlen] = '\0';
    *pool += nlen + 1;
    m->name = name;

    if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_CD_ENCRYPTED))
        return ds_err(DSCKPT_EUNSUPPORTED, "%s: member '" NAMEF "' is encrypted (flags 0x%04x)", what, name, flags);
    if (method != 0)
        return ds_err(DSCKPT_EUNSUPPORTED,
                      "%s: member '" NAMEF "' uses compression method %u; only STORED (0) members are supported",
                      what, name, method);

    /* ZIP64 extra field: only the saturated fields are present, in this order. */
    uint64_t usize = usize32, csize = csize32, lofs = lofs32;
    uint32_t dstart = disk;
    bool need_u = usize32 == U32_SAT, need_c = csize32 == U32_SAT, need_o = lofs32 == U32_SAT;
    bool need_d = disk == U16_SAT, seen = false;
    const uint8_t *x = h + CENTRAL_SIZE + nlen, *xend = x + xlen;
    while (xend - x >= 4) {
        uint16_t id = get16(x), len = get16(x + 2);
        if (len > xend - x - 4)
            return ds_err(DSCKPT_ECORRUPT, "%s: member '" NAMEF "': extra field 0x%04x runs past its extra data",
                          what, name, id);
        if (id == EXTRA_ZIP64) {
            if (seen)
                return ds_err(DSCKPT_ECORRUPT, "%s: member '" NAMEF "': two ZIP64 extra fields", what, name);
            seen = true;
            const uint8_t *p = x + 4;
            size_t need = 8u * (need_u + need_c + need_o) + 4u * need_d;
            if (len < need)
                return ds_err(DSCKPT_ECORRUPT,
                              "%s: member '" NAMEF "': ZIP64 extra field is %u bytes, %zu needed for its saturated "
                              "fields",
                              what, name, len, need);
            if (need_u) usize = ds_get_le64(p), p += 8;
            if (need_c) csize = ds_get_le64(p), p += 8;
            if (need_o) lofs = ds_get_le64(p), p += 8;
            if (need_d) dstart = ds_get_le32(p);
        }
        x += 4 + len;
    }
    if (x != xend)
        return ds_err(DSCKPT_ECORRUPT, "%s: member '" NAMEF "': %d stray bytes after its extra fields", what, name,
                      (int)(xend - x));
    if ((need_u || need_c || need_o || need_d) && !seen)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: member '" NAMEF "': a central directory field is saturated (0xFFFFFFFF) but there is no "
                      "ZIP64 extra field",
                      what, name);
    if (dstart != 0)
        return ds_err(DSCKPT_EUNSUPPORTED,
                      "%s: member '" NAMEF "' starts on disk %u: multi-disk archives are not supported", what, name,
                      dstart);
    if (csize != usize)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: member '" NAMEF "': compressed size %llu differs from size %llu in a STORED member", what,
                      name, (unsigned long long)csize, (unsigned long long)usize);
    m->size = usize;
    m->crc32 = crc;
    m->local_offset = lofs;
    *pos += (uint64_t)CENTRAL_SIZE + nlen + xlen + clen;
    return DSCKPT_OK;
}

/* Reads member m's local header, checks it against the central entry and sets
 * m->data_offset; the data must lie inside the file, before the central directory. */
static dsckpt_status check_local(int fd, const char *what, uint64_t fsize, const cd_loc *loc, uint8_t *scratch,
                                 zip_member *m) {
    size_t nlen = strlen(m->name);
    unsigned long long lo = (unsigned long long)m->local_offset;
    if (m->local_offset > fsize || fsize - m->local_offset < LOCAL_SIZE + nlen)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: member '" NAMEF "': local header at offset %llu runs past the end of the file (%llu bytes; "
                      "truncated?)",
                      what, m->name, lo, (unsigned long long)fsize);
    DS_TRY(ds_pread_full(fd, scratch, LOCAL_SIZE + nlen, m->local_offset, what));
    if (ds_get_le32(scratch) != SIG_LOCAL)
        return ds_err(DSCKPT_ECORRUPT, "%s: member '" NAMEF "': bad local header signature at offset %llu", what,
                      m->name, lo);
    uint16_t lnlen = get16(scratch + 26), lxlen = get16(scratch + 28);
    if (lnlen != nlen)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: member '" NAMEF "': local header name at offset %llu is %u bytes, the central directory's "
                      "%zu",
                      what, m->name, lo, lnlen, nlen);
    if (memcmp(scratch + LOCAL_SIZE, m->name, nlen) != 0) {
        char eb[ESC_BUF];
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: member '" NAMEF "': local header name at offset %llu differs from the central directory's "
                      "('%s')",
                      what, m->name, lo, esc((const char *)scratch + LOCAL_SIZE, nlen, eb));
    }
    if (get16(scratch + 8) != 0)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: member '" NAMEF "': local header says compression method %u, the central directory 0",
                      what, m->name, get16(scratch + 8));
    m->data_offset = m->local_offset + LOCAL_SIZE + lnlen + lxlen;
    uint64_t end;
    if (ds_add_overflow(m->data_offset, m->size, &end) || end > fsize)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: member '" NAMEF "': data at offset %llu (%llu bytes) runs past the end of the file (%llu "
                      "bytes; truncated?)",
                      what, m->name, (unsigned long long)m->data_offset, (unsigned long long)m->size,
                      (unsigned long long)fsize);
    if (end > loc->off)
        return ds_err(DSCKPT_ECORRUPT,
                      "%s: member '" NAMEF "': data [%llu, %llu) runs into the central directory at offset %llu", what,
                      m->name, (unsigned long long)m->data_offset, (unsigned long long)end,
                      (unsigned long long)loc->off);
    return DSCKPT_OK;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const zip_member *const *)a)->name, (*(const zip_member *const *)b)->name);
}
static int cmp_offset(const void *a, const void *b) {
    uint64_t x = (*(const zip_member *const *)a)->local_offset, y = (*(const zip_member *const *)b)->local_offset;
    return (x > y) - (x < y);
}

/* torch puts every member under one top folder and finds it from the first:
 * z->prefix gets it, and every member must be inside it. */
static dsckpt_status check_prefix(zip_archive *z, const char *what) {
    const char *first = z->members[0].name, *slash = strchr(first, '/');
    if (!slash) return ds_err(DSCKPT_ECORRUPT, "%s: first member '" NAMEF "' is not inside a top folder", what, first);
    size_t plen = (size_t)(slash - first);
    z->prefix = strndup(first, plen);
    if (!z->prefix) return ds_err(DSCKPT_ENOMEM, "out of memory reading %s", what);
    for (size_t i = 0; i < z->n; i++) {
        const char *nm = z->members[i].name;
        if (strncmp(nm, z->prefix, plen) != 0 || nm[plen] != '/')
            return ds_err(DSCKPT_ECORRUPT, "%s: member '" NAMEF "' is outside the archive's top folder '" NAMEF "'",
                          what, nm, z->prefix);
    }
    return DSCKPT_OK;
}

/* The members sorted by name (for lookups); a name twice is corrupt. */
static dsckpt_status index_names(zip_impl *zi, const char *what) {
    size_t n = zi->pub.n;
    DS_TRY(ds_calloc(n, sizeof *zi->by_name, &zi->by_name));
    for (size_t i = 0; i < n; i++) zi->by_name[i] = &zi->pub.members[i];
    qsort(zi->by_name, n, sizeof *zi->by_name, cmp_name);
    for (size_t i = 1; i < n; i++)
        if (strcmp(zi->by_name[i - 1]->name, zi->by_name[i]->name) == 0)
            return ds_err(DSCKPT_ECORRUPT, "%s: duplicate member name '" NAMEF "'", what, zi->by_name[i]->name);
    return DSCKPT_OK;
}

/* No two members' [local header, data end) ranges may share a byte. */
static dsckpt_status check_overlaps(const zip_archive *z, const char *what) {
    size_t n = z->n;
    const zip_member **by_off = NULL;
    DS_TRY(ds_calloc(n, sizeof *by_off, &by_off));
    for (size_t i = 0; i < n; i++) by_off[i] = &z->members[i];
    qsort(by_off, n, sizeof *by_off, cmp_offset);
    dsckpt_status st = DSCKPT_OK;
    for (size_t i = 1; i < n && !st; i++) {
        const zip_member *a = by_off[i - 1], *b = by_off[i];
        uint64_t a_end = a->data_offset + a->size;
        if (b->local_offset < a_end)
            st = ds_err(DSCKPT_ECORRUPT,
                        "%s: members '" NAMEF "' [%llu, %llu) and '" NAMEF "' [%llu, %llu) overlap", what, a->name,
                        (unsigned long long)a->local_offset, (unsigned long long)a_end, b->name,
                        (unsigned long long)b->local_offset, (unsigned long long)(b->data_offset + b->size));
    }
    free(by_off);
    return st;
}

dsckpt_status zip_open_fd(int fd, const char *what, zip_archive **out) {
    *out = NULL;
    struct stat sb;
    if (fstat(fd, &sb) != 0) return ds_err_errno(errno, "%s: cannot stat", what);
    uint64_t fsize = (uint64_t)sb.st_size;
    cd_loc loc = {0};
    DS_TRY(find_end(fd, what, fsize, &loc));

    dsckpt_status st;
    uint8_t *cd = NULL, *scratch = NULL;
    zip_impl *zi = NULL;
    size_t n = (size_t)loc.count; /* <= CD_MAX / CENTRAL_SIZE */
    DS_TRYGOTO(ds_calloc(1, sizeof *zi, &zi), fail);
    zip_archive *z = &zi->pub;
    z->file_size = fsize;
    DS_TRYGOTO(ds_malloc((size_t)loc.size, &cd), fail);
    DS_TRYGOTO(ds_pread_full(fd, cd, (size_t)loc.size, loc.off, what), fail);
    DS_TRYGOTO(ds_calloc(n, sizeof *z->members, &z->members), fail);
    /* Each name (+ NUL) is shorter than its >= 46-byte entry. */
    DS_TRYGOTO(ds_malloc((size_t)loc.size, &zi->names), fail);

    uint64_t pos = 0;
    char *pool = zi->names;
    for (size_t i = 0; i < n; i++) {
        DS_TRYGOTO(parse_central(cd, &loc, &pos, i, what, &pool, &z->members[i]), fail);
        z->n = i + 1;
    }
    if (pos != loc.size) {
        st = ds_err(DSCKPT_ECORRUPT, "%s: %llu bytes follow the last central directory entry", what,
                    (unsigned long long)(loc.size - pos));
        goto fail;
    }

    DS_TRYGOTO(check_prefix(z, what), fail);
    DS_TRYGOTO(index_names(zi, what), fail);

    DS_TRYGOTO(ds_malloc(LOCAL_SIZE + MAX_NAME, &scratch), fail);
    for (size_t i = 0; i < n; i++) DS_TRYGOTO(check_local(fd, what, fsize, &loc, scratch, &z->members[i]), fail);

    DS_TRYGOTO(check_overlaps(z, what), fail);
    free(scratch);
    free(cd);
    *out = z;
    return DSCKPT_OK;

fail:
    free(scratch);
    free(cd);
    if (zi) zip_free(&zi->pub);
    return st;
}

void zip_free(zip_archive *z) {
    if (!z) return;
    zip_impl *zi = (zip_impl *)z;
    free(zi->by_name);
    free(zi->names);
    free(z->members);
    free(z->prefix);
    free(zi);
}

/* strcmp(name, a + sep + b) without building the joined string. */
static int cmp_joined(const char *name, const char *a, char sep, const char *b) {
    const unsigned char *p = (const unsigned char *)name, *q;
    for (q = (const unsigned char *)a; *q; p++, q++)
        if (*p != *q) return *p - *q;
    if (*p != (unsigned char)sep) return *p - (unsigned char)sep;
    p++;
    for (q = (const unsigned char *)b; *q; p++, q++)
        if (*p != *q) return *p - *q;
    return *p;
}

/* Binary search of the name index with cmp_joined(name, a, sep, b); sep 0 means
 * the key is just `a`. */
static const zip_member *lookup(const zip_archive *z, const char *a, char sep, const char *b) {
    if (!z || !a) return NULL;
    const zip_impl *zi = (const zip_impl *)z;
    size_t lo = 0, hi = z->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *nm = zi->by_name[mid]->name;
        int c = sep ? cmp_joined(nm, a, sep, b) : strcmp(nm, a);
        if (c == 0) return zi->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const zip_member *zip_find(const zip_archive *z, const char *name) { return lookup(z, name, 0, NULL); }

const zip_member *zip_find_rel(const zip_archive *z, const char *rel) {
    if (!z || !rel) return NULL;
    return lookup(z, z->prefix, '/', rel);
}

dsckpt_status zip_check_crc(int fd, const zip_archive *z, size_t i, const char *what) {
    if (!z || i >= z->n)
        return ds_err(DSCKPT_EINVAL, "%s: zip member index %zu out of range (%zu members)", what, i, z ? z->n : 0);
    const zip_member *m = &z->members[i];
    uint8_t *buf;
    DS_TRY(ds_malloc((size_t)DS_MIN(m->size, (uint64_t)CRC_CHUNK), &buf));
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
    for (uint64_t done = 0; done < m->size;) {
        size_t k = (size_t)DS_MIN(m->size - done, (uint64_t)CRC_CHUNK);
        dsckpt_status st = ds_pread_full(fd, buf, k, m->data_offset + done, what);
        if (st) {
            free(buf);
            return st;
        }
        crc = crc_update(crc, buf, k);
        done += k;
    }
    free(buf);
    if (crc != m->crc32)
        return ds_err(DSCKPT_ECHECKSUM,
                      "%s: member '" NAMEF "': CRC-32 mismatch (central directory 0x%08x, data 0x%08x)", what,
                      m->name, m->crc32, crc);
    return DSCKPT_OK;
}

/* The buffer gets a NUL after the data, so text members can be used as strings. */
dsckpt_status zip_read_member(int fd, const zip_archive *z, const zip_member *m, size_t max, const char *what,
                              uint8_t **out) {
    DS_UNUSED(z);
    *out = NULL;
    if (m->size > max || m->size >= SIZE_MAX)
        return ds_err(DSCKPT_ECORRUPT, "%s: member '" NAMEF "' is %llu bytes, more than the %zu allowed", what,
                      m->name, (unsigned long long)m->size, max);
    uint8_t *buf;
    DS_TRY(ds_malloc((size_t)m->size + 1, &buf));
    dsckpt_status st = ds_pread_full(fd, buf, (size_t)m->size, m->data_offset, what);
    /* Small members (pickles, text) are always checked: a flipped bit in a pickle
     * would otherwise be parsed, and copied into outputs under a fresh CRC. */
    uint32_t crc = st ? 0 : crc_update((uint32_t)crc32(0L, Z_NULL, 0), buf, (size_t)m->size);
    if (st == DSCKPT_OK && crc != m->crc32)
        st = ds_err(DSCKPT_ECHECKSUM, "%s: member '" NAMEF "': CRC-32 mismatch (central directory 0x%08x, data 0x%08x)",
                    what, m->name, m->crc32, crc);
    if (st) {
        free(buf);
        return st;
    }
    buf[m->size] = '\0';
    *out = buf;
    return DSCKPT_OK;
}

/* ---- torch metadata members ---- */

/* A small text member (at most 32 bytes), NUL-terminated in buf; *present false if absent. */
static dsckpt_status small_member(int fd, const zip_archive *z, const char *rel, const char *what, char buf[40],
                                  bool *present) {
    *present = false;
    const zip_member *m = zip_find_rel(z, rel);
    if (!m) return DSCKPT_OK;
    if (m->size > 32)
        return ds_err(DSCKPT_ECORRUPT, "%s: member '%s' is %llu bytes, not a short text", what, rel,
                      (unsigned long long)m->size);
    uint8_t *b = NULL;
    DS_TRY(zip_read_member(fd, z, m, 32, what, &b));
    memcpy(buf, b, (size_t)m->size);
    buf[m->size] = '\0';
    free(b);
    if (strlen(buf) != m->size) return ds_err(DSCKPT_ECORRUPT, "%s: member '%s' holds a NUL byte", what, rel);
    *present = true;
    return DSCKPT_OK;
}

/* A decimal number (optionally followed by one newline) in [lo, hi]. */
static bool small_number(const char *s, uint64_t lo, uint64_t hi, uint64_t *v) {
    uint64_t x = 0;
    size_t i = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        if (x > hi) return false;
        x = x * 10 + (uint64_t)(s[i] - '0');
    }
    if (i == 0 || (s[i] && !(s[i] == '\n' && !s[i + 1]))) return false;
    if (x < lo || x > hi) return false;
    *v = x;
    return true;
}

dsckpt_status zip_torch_meta_read(int fd, const zip_archive *z, const char *what, zip_torch_meta *out) {
    *out = (zip_torch_meta){.storage_alignment = ALIGN};
    char buf[40];
    bool present;
    uint64_t v;
    DS_TRY(small_member(fd, z, "byteorder", what, buf, &present));
    if (present) {
        out->has_byteorder = true;
        if (!strcmp(buf, "big"))
            return ds_err(DSCKPT_EUNSUPPORTED,
                          "%s: big-endian torch file (byteorder 'big'); only little-endian files are supported", what);
        if (strcmp(buf, "little"))
            return ds_err(DSCKPT_ECORRUPT, "%s: byteorder member is neither 'little' nor 'big'", what);
    }
    DS_TRY(small_member(fd, z, ".format_version", what, buf, &present));
    if (present) {
        if (!small_number(buf, 0, UINT32_MAX, &v))
            return ds_err(DSCKPT_ECORRUPT, "%s: .format_version is not a number", what);
        if (v != 1)
            return ds_err(DSCKPT_EUNSUPPORTED, "%s: torch serialization format version %llu (only 1 is known)", what,
                          (unsigned long long)v);
        out->format_version = (int)v;
    }
    DS_TRY(small_member(fd, z, ".storage_alignment", what, buf, &present));
    if (present) {
        if (!small_number(buf, 1, ZIP_MAX_ALIGN, &v) || (v & (v - 1)))
            return ds_err(DSCKPT_ECORRUPT, "%s: .storage_alignment '%s' is not a power of two up to %u", what, buf,
                          ZIP_MAX_ALIGN);
        out->storage_alignment = v;
        out->has_storage_alignment = true;
    }
    return DSCKPT_OK;
}

/* ---- writer ----
 *
 * The bytes torch 1.13 (miniz 2.x with MZ_ZIP_FLAG_WRITE_ZIP64, no timestamps)
 * writes for a member at archive offset `cursor`:
 *   local header: version needed 0, flags 0x0808 (0x0800 for an empty member),
 *     method 0, time/date 0, CRC and both sizes 0;
 *   name;
 *   a ZIP64 extra field, only if size >= 0xFFFFFFFF or cursor >= 0xFFFFFFFF:
 *     the size and a compressed size of 0 (miniz fills it in before it knows)
 *     when the size is large, then the cursor when it is large;
 *   the "FB" field: 'F' 'B', LE16 padding length, that many 'Z', so the data
 *     starts at a multiple of 64;
 *   data;
 *   a data descriptor unless the member is empty: signature, CRC, then both
 *     sizes as 32-bit, or as 64-bit when the local header has a ZIP64 field.
 * The central entry repeats flags/CRC, saturates sizes and offset at 0xFFFFFFFF
 * (version made by 0, needed 0, no attributes, no comment) with a ZIP64 extra
 * field holding size, size (if size >= 0xFFFFFFFF) and offset (if >= 0xFFFFFFFF).
 * Then a ZIP64 end record, its locator and the classic end record, always.
 */

typedef struct zw_entry {
    char *name;
    uint64_t local_offset, data_offset, size;
    uint32_t crc;
    uint16_t flags;
    bool z64_local; /* the local header has a ZIP64 field: 64-bit descriptor */
} zw_entry;

/* The members of an archive being written, in order: the streaming writer's and
 * the planned one's (one encoder for both, so both write the same bytes). */
struct zip_layout {
    char *prefix;
    uint32_t align;  /* member data alignment (torch's .storage_alignment), ALIGN by default */
    zw_entry *e;
    size_t n, cap;
    uint64_t end;    /* planned: where the next local header (or the central directory) goes */
};

struct zip_writer {
    ds_stream *s;
    zip_layout l;
    bool open;       /* l.e[l.n-1] is being written */
    uint64_t written;/* bytes of l.e[l.n-1] so far */
    bool failed;     /* bytes went out but a call failed: the archive is unusable */
    bool finished;
};

/* The extra field of a local header: a ZIP64 field (4 + 16 + 8) and the FB field
 * (4 + up to align - 1). */
#define LOCAL_EXTRA_MAX (4 + 16 + 8 + 4 + ZIP_MAX_ALIGN)
/* A central entry's ZIP64 extra field at most. */
#define CENTRAL_EXTRA_MAX (4 + 24)
#define END_RECORDS (Z64_EOCD_SIZE + Z64_LOCATOR_SIZE + EOCD_SIZE)

static dsckpt_status layout_init(zip_layout *l, const char *prefix) {
    const char *why = ds_name_problem(prefix, strlen(prefix));
    if (why) {
        char eb[ESC_BUF];
        return ds_err(DSCKPT_EINVAL, "zip writer: top folder '%s' is not a safe name: %s", esc(prefix, strlen(prefix), eb), why);
    }
    *l = (zip_layout){.align = ALIGN, .prefix = strdup(prefix)};
    if (!l->prefix) return ds_err(DSCKPT_ENOMEM, "out of memory starting a zip writer");
    return DSCKPT_OK;
}

static void layout_clear(zip_layout *l) {
    for (size_t i = 0; i < l->n; i++) free(l->e[i].name);
    free(l->e);
    free(l->prefix);
    memset(l, 0, sizeof *l);
}

static dsckpt_status check_align(uint32_t align) {
    if (align == 0 || align > ZIP_MAX_ALIGN || (align & (align - 1)))
        return ds_err(DSCKPT_EINVAL, "zip writer: alignment %u is not a power of two up to %u", align, ZIP_MAX_ALIGN);
    return DSCKPT_OK;
}

/* The local header of e: its fixed part into h and its extra field into x;
 * returns the extra field's length. */
static size_t local_header(const zw_entry *e, uint32_t align, uint8_t h[LOCAL_SIZE], uint8_t x[LOCAL_EXTRA_MAX]) {
    size_t nlen = strlen(e->name), xl = 0;
    bool big_size = e->size >= U32_SAT, big_ofs = e->local_offset >= U32_SAT;
    if (e->z64_local) {
        put16(x, EXTRA_ZIP64);
        xl = 4;
        if (big_size) {
            ds_put_le64(x + xl, e->size);
            ds_put_le64(x + xl + 8, 0); /* miniz writes the compressed size before knowing it */
            xl += 16;
        }
        if (big_ofs) {
            ds_put_le64(x + xl, e->local_offset);
            xl += 8;
        }
        put16(x + 2, (uint32_t)(xl - 4));
    }
    uint64_t start = e->local_offset + LOCAL_SIZE + nlen + xl + 4;
    size_t pad = (size_t)((align - start % align) % align);
    put16(x + xl, EXTRA_FB);
    put16(x + xl + 2, (uint32_t)pad);
    memset(x + xl + 4, FB_PAD_BYTE, pad);
    xl += 4 + pad;
    memset(h, 0, LOCAL_SIZE);
    ds_put_le32(h, SIG_LOCAL);
    put16(h + 6, e->flags);
    put16(h + 26, (uint32_t)nlen);
    put16(h + 28, (uint32_t)xl);
    return xl;
}

/* Appends member prefix/rel of `size` bytes whose local header starts at
 * `cursor`; sets its data offset. */
static dsckpt_status entry_add(zip_layout *l, const char *rel, uint64_t size, uint64_t cursor) {
    size_t plen = strlen(l->prefix), rlen = strlen(rel), nlen = plen + 1 + rlen;
    char *name = malloc(nlen + 1);
    if (!name) return ds_err(DSCKPT_ENOMEM, "out of memory adding zip member " NAMEF, rel);
    memcpy(name, l->prefix, plen);
    name[plen] = '/';
    memcpy(name + plen + 1, rel, rlen + 1);
    const char *why = nlen > MAX_NAME ? "it is longer than 65535 bytes" : ds_relname_problem(name, nlen);
    if (why) {
        char eb[ESC_BUF];
        dsckpt_status st = ds_err(DSCKPT_EINVAL, "zip writer: member name '%s' is not a safe name: %s", esc(name, nlen, eb), why);
        free(name);
        return st;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        zw_entry *e = realloc(l->e, cap * sizeof *e);
        if (!e) {
            free(name);
            return ds_err(DSCKPT_ENOMEM, "out of memory adding zip member " NAMEF, rel);
        }
        l->e = e;
        l->cap = cap;
    }
    zw_entry *e = &l->e[l->n++];
    *e = (zw_entry){.name = name, .local_offset = cursor, .size = size,
                    .flags = (uint16_t)(FLAG_UTF8 | (size ? FLAG_DESCRIPTOR : 0)),
                    .z64_local = size >= U32_SAT || cursor >= U32_SAT};
    uint8_t h[LOCAL_SIZE], x[LOCAL_EXTRA_MAX];
    e->data_offset = cursor + LOCAL_SIZE + nlen + local_header(e, l->align, h, x);
    return DSCKPT_OK;
}

/* The data descriptor after e's data (none for an empty member: miniz writes
 * none); returns its length. */
static size_t descriptor(const zw_entry *e, uint8_t d[24]) {
    if (e->size == 0) return 0;
    ds_put_le32(d, SIG_DESCRIPTOR);
    ds_put_le32(d + 4, e->crc);
    if (e->z64_local) {
        ds_put_le64(d + 8, e->size);
        ds_put_le64(d + 16, e->size);
        return 24;
    }
    ds_put_le32(d + 8, (uint32_t)e->size);
    ds_put_le32(d + 12, (uint32_t)e->size);
    return 16;
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp((*(const zw_entry *const *)a)->name, (*(const zw_entry *const *)b)->name);
}

/* The reader refuses duplicates; refuse to write them. */
static dsckpt_status check_duplicates(const zip_layout *l) {
    if (l->n == 0) return ds_err(DSCKPT_EMISUSE, "zip writer: the archive has no members");
    const zw_entry **sorted = malloc(l->n * sizeof *sorted);
    if (!sorted) return ds_err(DSCKPT_ENOMEM, "out of memory finishing a zip archive");
    for (size_t i = 0; i < l->n; i++) sorted[i] = &l->e[i];
    qsort(sorted, l->n, sizeof *sorted, cmp_entry_name);
    dsckpt_status st = DSCKPT_OK;
    for (size_t i = 1; i < l->n && st == DSCKPT_OK; i++)
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0)
            st = ds_err(DSCKPT_EINVAL, "zip writer: duplicate member name '" NAMEF "'", sorted[i]->name);
    free(sorted);
    return st;
}

/* One central entry into p; returns its length. */
static size_t central_entry(const zw_entry *e, uint8_t *p) {
    size_t nlen = strlen(e->name);
    bool big_size = e->size >= U32_SAT, big_ofs = e->local_offset >= U32_SAT;
    uint8_t *x = p + CENTRAL_SIZE + nlen;
    size_t xl = 0;
    if (big_size || big_ofs) {
        put16(x, EXTRA_ZIP64);
        xl = 4;
        if (big_size) {
            ds_put_le64(x + xl, e->size);     /* uncompressed */
            ds_put_le64(x + xl + 8, e->size); /* compressed (STORED) */
            xl += 16;
        }
        if (big_ofs) {
            ds_put_le64(x + xl, e->local_offset);
            xl += 8;
        }
        put16(x + 2, (uint32_t)(xl - 4));
    }
    memset(p, 0, CENTRAL_SIZE);
    ds_put_le32(p, SIG_CENTRAL);
    put16(p + 8, e->flags);
    ds_put_le32(p + 16, e->crc);
    ds_put_le32(p + 20, sat32(e->size));
    ds_put_le32(p + 24, sat32(e->size));
    put16(p + 28, (uint32_t)nlen);
    put16(p + 30, (uint32_t)xl);
    ds_put_le32(p + 42, sat32(e->local_offset));
    memcpy(p + CENTRAL_SIZE, e->name, nlen);
    return CENTRAL_SIZE + nlen + xl;
}

static void end_records(size_t n, uint64_t cd_off, uint64_t cd_size, uint8_t r[END_RECORDS]) {
    memset(r, 0, END_RECORDS);
    uint8_t *z = r, *l = r + Z64_EOCD_SIZE, *e = l + Z64_LOCATOR_SIZE;
    ds_put_le32(z, SIG_Z64_EOCD);
    ds_put_le64(z + 4, Z64_EOCD_SIZE - 12);
    put16(z + 12, Z64_MADE_BY);
    put16(z + 14, Z64_NEEDED);
    ds_put_le64(z + 24, n);
    ds_put_le64(z + 32, n);
    ds_put_le64(z + 40, cd_size);
    ds_put_le64(z + 48, cd_off);
    ds_put_le32(l, SIG_Z64_LOCATOR);
    ds_put_le64(l + 8, cd_off + cd_size);
    ds_put_le32(l + 16, 1); /* total number of disks */
    ds_put_le32(e, SIG_EOCD);
    put16(e + 8, n >= U16_SAT ? U16_SAT : (uint32_t)n);
    put16(e + 10, n >= U16_SAT ? U16_SAT : (uint32_t)n);
    ds_put_le32(e + 12, sat32(cd_size));
    ds_put_le32(e + 16, sat32(cd_off));
}

/* The central directory starting at cd_off and the end records, malloc'd. */
static dsckpt_status central_dir(const zip_layout *l, uint64_t cd_off, uint8_t **out, size_t *len) {
    size_t cap = END_RECORDS;
    for (size_t i = 0; i < l->n; i++) cap += CENTRAL_SIZE + strlen(l->e[i].name) + CENTRAL_EXTRA_MAX;
    uint8_t *buf = malloc(cap);
    if (!buf) return ds_err(DSCKPT_ENOMEM, "out of memory finishing a zip archive");
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++) k += central_entry(&l->e[i], buf + k);
    end_records(l->n, cd_off, k, buf + k);
    *out = buf;
    *len = k + END_RECORDS;
    return DSCKPT_OK;
}

/* ---- the streaming writer ---- */

static dsckpt_status writer_usable(const zip_writer *w) {
    if (!w) return ds_err(DSCKPT_EINVAL, "zip writer: NULL writer");
    if (w->failed) return ds_err(DSCKPT_EMISUSE, "zip writer: unusable after an earlier failure");
    if (w->finished) return ds_err(DSCKPT_EMISUSE, "zip writer: the archive is already finished");
    return DSCKPT_OK;
}

static dsckpt_status wr(zip_writer *w, const void *p, size_t n) {
    dsckpt_status st = ds_stream_write(w->s, p, n);
    if (st) w->failed = true;
    return st;
}

dsckpt_status zip_writer_new(ds_stream *s, const char *prefix, zip_writer **out) {
    *out = NULL;
    if (!s || !prefix) return ds_err(DSCKPT_EINVAL, "zip writer: NULL stream or prefix");
    /* Offsets in the archive are stream positions: it must start the file. */
    if (ds_stream_pos(s) != 0)
        return ds_err(DSCKPT_EINVAL, "zip writer: the stream is at offset %llu, not at its start",
                      (unsigned long long)ds_stream_pos(s));
    zip_writer *w;
    DS_TRY(ds_calloc(1, sizeof *w, &w));
    w->s = s;
    dsckpt_status st = layout_init(&w->l, prefix);
    if (st) {
        free(w);
        return st;
    }
    *out = w;
    return DSCKPT_OK;
}

dsckpt_status zip_writer_set_alignment(zip_writer *w, uint32_t align) {
    DS_TRY(writer_usable(w));
    DS_TRY(check_align(align));
    w->l.align = align;
    return DSCKPT_OK;
}

dsckpt_status zip_writer_begin(zip_writer *w, const char *rel, uint64_t size, uint64_t *data_offset) {
    DS_TRY(writer_usable(w));
    if (!rel) return ds_err(DSCKPT_EINVAL, "zip writer: NULL member name");
    if (w->open) return ds_err(DSCKPT_EMISUSE, "zip writer: member '" NAMEF "' is still open", w->l.e[w->l.n - 1].name);
    DS_TRY(entry_add(&w->l, rel, size, ds_stream_pos(w->s)));
    const zw_entry *e = &w->l.e[w->l.n - 1];
    w->open = true;
    w->written = 0;
    uint8_t h[LOCAL_SIZE], x[LOCAL_EXTRA_MAX];
    size_t xl = local_header(e, w->l.align, h, x);
    DS_TRY(wr(w, h, sizeof h));
    DS_TRY(wr(w, e->name, strlen(e->name)));
    DS_TRY(wr(w, x, xl));
    if (data_offset) *data_offset = ds_stream_pos(w->s);
    return DSCKPT_OK;
}

dsckpt_status zip_writer_write(zip_writer *w, const void *data, size_t n) {
    DS_TRY(writer_usable(w));
    if (!w->open) return ds_err(DSCKPT_EMISUSE, "zip writer: no member is open");
    zw_entry *e = &w->l.e[w->l.n - 1];
    if (n > e->size - w->written)
        return ds_err(DSCKPT_EINVAL, "zip writer: member '" NAMEF "': %zu more bytes would exceed its %llu bytes",
                      e->name, n, (unsigned long long)e->size);
    if (n == 0) return DSCKPT_OK;
    e->crc = crc_update(e->crc, data, n);
    DS_TRY(wr(w, data, n));
    w->written += n;
    return DSCKPT_OK;
}

dsckpt_status zip_writer_write_zeros(zip_writer *w, uint64_t n) {
    static const uint8_t zeros[65536];
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        DS_TRY(zip_writer_write(w, zeros, k));
        n -= k;
    }
    return DSCKPT_OK;
}

dsckpt_status zip_writer_end(zip_writer *w) {
    DS_TRY(writer_usable(w));
    if (!w->open) return ds_err(DSCKPT_EMISUSE, "zip writer: no member is open");
    const zw_entry *e = &w->l.e[w->l.n - 1];
    if (w->written != e->size)
        return ds_err(DSCKPT_EMISUSE, "zip writer: member '" NAMEF "': %llu of its %llu bytes written", e->name,
                      (unsigned long long)w->written, (unsigned long long)e->size);
    w->open = false;
    uint8_t d[24];
    size_t dl = descriptor(e, d);
    return dl ? wr(w, d, dl) : DSCKPT_OK;
}

dsckpt_status zip_writer_finish(zip_writer *w) {
    DS_TRY(writer_usable(w));
    if (w->open) return ds_err(DSCKPT_EMISUSE, "zip writer: member '" NAMEF "' is still open", w->l.e[w->l.n - 1].name);
    dsckpt_status st = check_duplicates(&w->l);
    if (st) {
        if (st == DSCKPT_EINVAL) w->failed = true; /* a duplicate name */
        return st;
    }
    uint8_t *cd;
    size_t len;
    DS_TRY(central_dir(&w->l, ds_stream_pos(w->s), &cd, &len));
    st = wr(w, cd, len);
    free(cd);
    if (st == DSCKPT_OK) w->finished = true;
    return st;
}

void zip_writer_free(zip_writer *w) {
    if (!w) return;
    layout_clear(&w->l);
    free(w);
}

/* ---- the planned writer ---- */

dsckpt_status zip_layout_new(const char *prefix, uint32_t align, zip_layout **out) {
    *out = NULL;
    if (!prefix) return ds_err(DSCKPT_EINVAL, "zip writer: NULL prefix");
    DS_TRY(check_align(align));
    zip_layout *l;
    DS_TRY(ds_calloc(1, sizeof *l, &l));
    dsckpt_status st = layout_init(l, prefix);
    if (st) {
        free(l);
        return st;
    }
    l->align = align;
    *out = l;
    return DSCKPT_OK;
}

dsckpt_status zip_layout_add(zip_layout *l, const char *rel, uint64_t size, uint64_t *data_offset) {
    if (!l || !rel) return ds_err(DSCKPT_EINVAL, "zip writer: NULL layout or member name");
    DS_TRY(entry_add(l, rel, size, l->end));
    const zw_entry *e = &l->e[l->n - 1];
    uint8_t d[24];
    l->end = e->data_offset + e->size + descriptor(e, d);
    if (data_offset) *data_offset = e->data_offset;
    return DSCKPT_OK;
}

void zip_layout_set_crc(zip_layout *l, size_t member, uint32_t crc) {
    if (l && member < l->n) l->e[member].crc = crc;
}

dsckpt_status zip_layout_write(const zip_layout *l, int fd, const char *what) {
    if (!l) return ds_err(DSCKPT_EINVAL, "zip writer: NULL layout");
    DS_TRY(check_duplicates(l));
    uint8_t *buf = NULL;
    size_t len = 0;
    dsckpt_status st = DSCKPT_OK;
    for (size_t i = 0; i < l->n && st == DSCKPT_OK; i++) {
        const zw_entry *e = &l->e[i];
        size_t nlen = strlen(e->name);
        uint8_t *p = realloc(buf, LOCAL_SIZE + nlen + LOCAL_EXTRA_MAX);
        if (!p) {
            st = ds_err(DSCKPT_ENOMEM, "out of memory writing %s", what);
            break;
        }
        buf = p;
        size_t xl = local_header(e, l->align, buf, buf + LOCAL_SIZE + nlen);
        memcpy(buf + LOCAL_SIZE, e->name, nlen);
        st = ds_pwrite_full(fd, buf, LOCAL_SIZE + nlen + xl, e->local_offset, what);
        uint8_t d[24];
        size_t dl = descriptor(e, d);
        if (st == DSCKPT_OK && dl) st = ds_pwrite_full(fd, d, dl, e->data_offset + e->size, what);
    }
    free(buf);
    buf = NULL;
    if (st == DSCKPT_OK) st = central_dir(l, l->end, &buf, &len);
    if (st == DSCKPT_OK) st = ds_pwrite_full(fd, buf, len, l->end, what);
    free(buf);
    return st;
}

void zip_layout_free(zip_layout *l) {
    if (!l) return;
    layout_clear(l);
    free(l);
}
