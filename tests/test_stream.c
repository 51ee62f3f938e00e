/*
 * test_stream.c — the output stream: chunked SHA-256 equals one-shot SHA-256 of each
 * chunk however the writes are cut, the file digest is the hash of the chunk
 * digests, an injected write failure is sticky and removes the file, and
 * ds_pwrite_full obeys the same fault hook; the copy engine writes what its fill
 * produces and its chunk and file digests equal the stream's, on several threads,
 * with chunks larger than one fill; a failing fill or a misfit unit stops it; the
 * allocator's blocks sit where reads into them run at full speed.
 */
#include "copyengine.h"
#include "fsutil.h"
#include "stream.h"
#include "tutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void fill(uint8_t *p, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (uint8_t)(seed >> 24);
    }
}

static void test_chunk_digests(void) {
    char *dir = tu_mkdtemp();
    static const size_t sizes[] = {0, 1, 4095, 4096, 4097, 3 * 4096, 100000, (2u << 20) + 17};
    static const size_t cuts[] = {1, 7, 4096, 65536, 1u << 21};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        uint8_t *data = malloc(n + 1);
        fill(data, n, (uint32_t)si);
        for (size_t ci = 0; ci < sizeof cuts / sizeof cuts[0]; ci++) {
            char *p = tu_path(dir, "f");
            ds_stream *s = NULL;
            TU_ASSERT_OK(ds_stream_create(p, 4096, &s));
            for (size_t off = 0; off < n; off += cuts[ci])
                TU_ASSERT_OK(ds_stream_write(s, data + off, DS_MIN(cuts[ci], n - off)));
            CU_ASSERT_EQUAL(ds_stream_pos(s), n);
            ds_digests dg = {0};
            TU_ASSERT_OK(ds_stream_finish(s, &dg));
            CU_ASSERT_EQUAL(dg.size, n);
            CU_ASSERT_EQUAL(dg.nchunks, (n + 4095) / 4096);
            for (size_t k = 0; k < dg.nchunks; k++) {
                uint8_t want[DS_SHA256_LEN];
                TU_ASSERT_OK(ds_sha256(data + k * 4096, DS_MIN(4096, n - k * 4096), want));
                CU_ASSERT_EQUAL(memcmp(want, dg.chunks[k], DS_SHA256_LEN), 0);
            }
            uint8_t want_file[DS_SHA256_LEN];
            TU_ASSERT_OK(ds_sha256_of_chunks((const uint8_t(*)[DS_SHA256_LEN])dg.chunks, dg.nchunks, want_file));
            CU_ASSERT_EQUAL(memcmp(want_file, dg.file, DS_SHA256_LEN), 0);
            size_t len;
            uint8_t *back = tu_read(p, &len);
            CU_ASSERT_EQUAL(len, n);
            CU_ASSERT(n == 0 || memcmp(back, data, n) == 0);
            free(back);
            ds_digests_clear(&dg);
            unlink(p);
            free(p);
        }
        free(data);
    }
    tu_rmtree(dir);
    free(dir);
}

/* ds_sha256_file streams (1 MiB pieces): equal to the one-shot digest of the
 * contents at sizes around the piece boundary; a directory is refused. */
static void test_sha256_file(void) {
    char *dir = tu_mkdtemp();
    static const size_t sizes[] = {0, 1, (1u << 20) - 1, 1u << 20, (1u << 20) + 3, 3u << 20};
    uint8_t *data = malloc(3u << 20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    for (size_t i = 0; i < (3u << 20); i++) data[i] = (uint8_t)(i * 2654435761u >> 13);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        char *p = tu_path(dir, "f");
        CU_ASSERT_EQUAL(tu_write(p, data, sizes[k]), 0);
        uint8_t want[DS_SHA256_LEN], got[DS_SHA256_LEN];
        TU_ASSERT_OK(ds_sha256(data, sizes[k], want));
        TU_ASSERT_OK(ds_sha256_file(p, got));
        CU_ASSERT_EQUAL(memcmp(want, got, DS_SHA256_LEN), 0);
        free(p);
    }
    uint8_t h[DS_SHA256_LEN];
    CU_ASSERT_NOT_EQUAL(ds_sha256_file(dir, h), DSCKPT_OK);
    free(data);
    tu_rmtree(dir);
    free(dir);
}

static void test_hex(void) {
    uint8_t d[DS_SHA256_LEN], back[DS_SHA256_LEN];
    char hex[2 * DS_SHA256_LEN + 1];
    TU_ASSERT_OK(ds_sha256("abc", 3, d));
    ds_hex(d, DS_SHA256_LEN, hex);
    CU_ASSERT_STRING_EQUAL(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CU_ASSERT(ds_unhex32(hex, back));
    CU_ASSERT_EQUAL(memcmp(d, back, DS_SHA256_LEN), 0);
    hex[5] = 'g';
    CU_ASSERT(!ds_unhex32(hex, back));
    CU_ASSERT(!ds_unhex32("abcd", back));
}

static void test_existing_path_refused(void) {
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "x");
    CU_ASSERT_EQUAL(tu_write(p, "old", 3), 0);
    ds_stream *s = NULL;
    CU_ASSERT_EQUAL(ds_stream_create(p, 0, &s), DSCKPT_EEXIST);
    size_t len;
    uint8_t *b = tu_read(p, &len);
    CU_ASSERT(len == 3 && memcmp(b, "old", 3) == 0);
    free(b);
    tu_rmtree(dir);
    free(dir);
    free(p);
}

static void test_fault_sticky(void) {
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "f");
    uint8_t buf[10000];
    fill(buf, sizeof buf, 3);
    ds_stream *s = NULL;
    TU_ASSERT_OK(ds_stream_create(p, 4096, &s));
    ds_fault_inject_write(5000, ENOSPC);
    /* Buffered writes reach the disk in 1 MiB pieces or at finish. */
    TU_ASSERT_OK(ds_stream_write(s, buf, sizeof buf));
    dsckpt_status st = ds_stream_finish(s, NULL);
    CU_ASSERT_EQUAL(st, DSCKPT_ENOSPC);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), p));
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "No space"));
    CU_ASSERT(!tu_exists(p)); /* a failed stream removes its file */
    /* Sticky: once failed, every later write reports the same failure. */
    ds_fault_inject_write(0, EIO);
    TU_ASSERT_OK(ds_stream_create(p, 0, &s));
    static uint8_t big[2u << 20];
    CU_ASSERT_EQUAL(ds_stream_write(s, big, sizeof big), DSCKPT_EIO);
    ds_fault_inject_write(-1, 0);
    CU_ASSERT_EQUAL(ds_stream_write(s, buf, 10), DSCKPT_EIO);
    CU_ASSERT_EQUAL(ds_stream_write_zeros(s, 10), DSCKPT_EIO);
    CU_ASSERT_EQUAL(ds_stream_finish(s, NULL), DSCKPT_EIO);
    CU_ASSERT(!tu_exists(p));
    /* Positional writes obey the same hook. */
    int fd = open(p, O_RDWR | O_CREAT, 0644);
    ds_fault_inject_write(100, ENOSPC);
    CU_ASSERT_EQUAL(ds_pwrite_full(fd, buf, 50, 0, p), DSCKPT_OK);
    CU_ASSERT_EQUAL(ds_pwrite_full(fd, buf, 100, 50, p), DSCKPT_ENOSPC);
    ds_fault_inject_write(-1, 0);
    CU_ASSERT_EQUAL(ds_pwrite_full(fd, buf, 100, 50, p), DSCKPT_OK);
    close(fd);
    tu_rmtree(dir);
    free(dir);
    free(p);
}

static void test_atomic_file(void) {
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "latest");
    TU_ASSERT_OK(ds_write_file_atomic(p, "a", 1));
    TU_ASSERT_OK(ds_write_file_atomic(p, "global_step2", 12));
    size_t len;
    uint8_t *b = tu_read(p, &len);
    CU_ASSERT(len == 12 && memcmp(b, "global_step2", 12) == 0);
    free(b);
    /* A failing replace keeps the old contents and leaves no temporary. */
    ds_fault_inject_write(3, ENOSPC);
    CU_ASSERT_EQUAL(ds_write_file_atomic(p, "global_step3", 12), DSCKPT_ENOSPC);
    ds_fault_inject_write(-1, 0);
    b = tu_read(p, &len);
    CU_ASSERT(len == 12 && memcmp(b, "global_step2", 12) == 0);
    free(b);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 1", dir);
    CU_ASSERT_EQUAL(system(cmd), 0);
    tu_rmtree(dir);
    free(dir);
    free(p);
}

static void test_path_helpers(void) {
    CU_ASSERT(ds_safe_name("rank_00000.safetensors"));
    CU_ASSERT(!ds_safe_name(".."));
    CU_ASSERT(!ds_safe_name("."));
    CU_ASSERT(!ds_safe_name("a/b"));
    CU_ASSERT(!ds_safe_name("../etc"));
    CU_ASSERT(!ds_safe_name(""));
    CU_ASSERT(!ds_safe_name("a\nb"));
    char *d = ds_dirname("a/b/c"), *b = ds_basename("a/b/c/");
    CU_ASSERT_STRING_EQUAL(d, "a/b");
    CU_ASSERT_STRING_EQUAL(b, "c");
    free(d);
    free(b);
    d = ds_dirname("c");
    CU_ASSERT_STRING_EQUAL(d, ".");
    free(d);
}

/* The engine's test fill: byte i of file f is a function of (f, i); unit 5 of a
 * "failing" run fails. */
static uint8_t engine_byte(size_t f, uint64_t i) { return (uint8_t)((i * 2654435761u >> 11) + 97 * f); }

static dsckpt_status engine_fill(void *user, size_t unit, size_t file, uint64_t off, size_t len, void *buf,
                                 const void **out, int worker) {
    (void)out;
    (void)worker;
    if (user && unit == 5) return ds_err(DSCKPT_EIO, "unit 5 failed on purpose");
    uint8_t *b = buf;
    for (size_t i = 0; i < len; i++) b[i] = engine_byte(file, off + i);
    return DSCKPT_OK;
}

static void test_copy_engine(void) {
    char *dir = tu_mkdtemp();
    /* File 0 hashed in 9 MiB chunks (each filled in several pieces), file 1 in 4 KiB
     * chunks, file 2 not hashed (cut in 1000-byte units). */
    static const uint64_t sizes[] = {(20u << 20) + 17, 3 * 4096 + 5, 12345};
    static const uint64_t chunks[] = {9u << 20, 4096, 0};
    ds_copy_file files[3];
    char *paths[3];
    for (size_t f = 0; f < 3; f++) {
        char name[8] = {'f', (char)('0' + f), 0};
        paths[f] = tu_path(dir, name);
        files[f] = (ds_copy_file){.fd = open(paths[f], O_WRONLY | O_CREAT | O_EXCL, 0644), .name = paths[f],
                                  .size = sizes[f], .hash_chunk = chunks[f]};
        CU_ASSERT_FATAL(files[f].fd >= 0);
    }
    ds_copy_unit *units = NULL;
    size_t nunits = 0;
    TU_ASSERT_OK(ds_copy_chunk_units(files, 3, 1000, &units, &nunits));
    CU_ASSERT_EQUAL(nunits, 3 + 4 + 13);
    ds_copy_job job = {.files = files, .nfiles = 3, .units = units, .nunits = nunits, .fill = engine_fill,
                       .threads = 2};
    TU_ASSERT_OK(ds_copy_run(&job));
    for (size_t f = 0; f < 3; f++) {
        close(files[f].fd);
        size_t len;
        uint8_t *back = tu_read(paths[f], &len);
        CU_ASSERT_EQUAL_FATAL(len, sizes[f]);
        bool same = true;
        for (size_t i = 0; i < len; i++) same = same && back[i] == engine_byte(f, i);
        CU_ASSERT(same);
        if (chunks[f]) { /* the digests a stream writing the same bytes computes */
            ds_hasher *h = NULL;
            ds_digests want = {0}, got = {0};
            TU_ASSERT_OK(ds_hasher_new(chunks[f], &h));
            TU_ASSERT_OK(ds_hasher_update(h, back, len));
            TU_ASSERT_OK(ds_hasher_final(h, &want));
            TU_ASSERT_OK(ds_copy_digests(&files[f], &got));
            CU_ASSERT(got.nchunks == want.nchunks && got.size == want.size && got.chunk_size == want.chunk_size);
            CU_ASSERT_EQUAL(memcmp(got.chunks, want.chunks, want.nchunks * DS_SHA256_LEN), 0);
            CU_ASSERT_EQUAL(memcmp(got.file, want.file, DS_SHA256_LEN), 0);
            ds_digests_clear(&want);
            ds_digests_clear(&got);
            ds_hasher_free(h);
        }
        free(back);
        files[f].fd = open(paths[f], O_WRONLY);
    }
    /* A failing fill stops the run with its status and message (the digests were
     * handed over above: cut the files again). */
    free(units);
    TU_ASSERT_OK(ds_copy_chunk_units(files, 3, 1000, &units, &nunits));
    job.units = units;
    job.user = &job;
    CU_ASSERT_EQUAL(ds_copy_run(&job), DSCKPT_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "unit 5 failed"));
    /* A unit of a hashed file that is not exactly one of its chunks is refused. */
    job.user = NULL;
    ds_copy_unit bad = {.file = 1, .offset = 4096, .len = 100};
    job.units = &bad;
    job.nunits = 1;
    CU_ASSERT_EQUAL(ds_copy_run(&job), DSCKPT_EINTERNAL);
    for (size_t f = 0; f < 3; f++) {
        close(files[f].fd);
        ds_copy_file_clear(&files[f]);
        free(paths[f]);
    }
    free(units);
    tu_rmtree(dir);
    free(dir);
}

/* Reads back path and compares it with want[0, n). */
static bool file_is(const char *path, const uint8_t *want, size_t n) {
    size_t len = 0;
    uint8_t *back = tu_read(path, &len);
    bool same = back && len == n && (n == 0 || memcmp(back, want, n) == 0);
    free(back);
    return same;
}

static void no_direct_note(void) {
    fprintf(stderr, "\n  NOTE: this file system refuses O_DIRECT; only the page-cache fallback is tested\n");
}

/* Direct writes (fsutil.h). DSCKPT_DIRECT_IO=0 opens no direct descriptor; with =1,
 * where the file system takes O_DIRECT, the whole pages of a write go direct and
 * the partial ones at its ends through the page cache (also from a buffer at the
 * same offset in its page as the write in the file), a buffer placed otherwise goes
 * through the page cache whole, and an injected fault still cuts the write where it
 * says, with its errno. On a file system that refuses O_DIRECT only the fallback is
 * checked, and the test says so (here and in the two tests below). */
static void test_direct_pwrite(void) {
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "d");
    const size_t n = 3 * 4096 + 100;
    uint8_t *buf = NULL, *want = NULL;
    TU_ASSERT_OK(ds_malloc(2 * n + 8192, &buf));
    TU_ASSERT_OK(ds_malloc(2 * n + 8192, &want));
    CU_ASSERT_EQUAL_FATAL((uintptr_t)buf % DS_DIRECT_ALIGN, 0);
    fill(buf, 2 * n + 8192, 11);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
    CU_ASSERT_FATAL(fd >= 0);
    setenv("DSCKPT_DIRECT_IO", "0", 1);
    CU_ASSERT_EQUAL(ds_direct_fd(fd), -1);
    setenv("DSCKPT_DIRECT_IO", "1", 1);
    int dfd = ds_direct_fd(fd);
    bool on = dfd >= 0;
    if (!on) no_direct_note();
    /* Aligned buffer at 4096: three pages direct, the last 100 bytes not. */
    uint64_t d0 = ds_direct_bytes();
    TU_ASSERT_OK(ds_pwrite_direct(fd, dfd, buf, n, 4096, p));
    CU_ASSERT_EQUAL(ds_direct_bytes() - d0, on ? 3 * 4096 : 0);
    /* A buffer one byte past a page: none direct. */
    d0 = ds_direct_bytes();
    TU_ASSERT_OK(ds_pwrite_direct(fd, dfd, buf + 1, 4096, 0, p));
    CU_ASSERT_EQUAL(ds_direct_bytes(), d0);
    memcpy(want, buf + 1, 4096);
    memcpy(want + 4096, buf, n);
    CU_ASSERT(file_is(p, want, 4096 + n));
    /* One byte past a page at a file offset one past a page (after a gap of zeros):
     * the first 4095 bytes cached, the next page direct, the last 2 cached. */
    d0 = ds_direct_bytes();
    TU_ASSERT_OK(ds_pwrite_direct(fd, dfd, buf + 1, 2 * 4096 + 1, 5 * 4096 + 1, p));
    CU_ASSERT_EQUAL(ds_direct_bytes() - d0, on ? 4096 : 0);
    memset(want + 4096 + n, 0, 5 * 4096 + 1 - (4096 + n));
    memcpy(want + 5 * 4096 + 1, buf + 1, 2 * 4096 + 1);
    const size_t flen = 7 * 4096 + 2;
    CU_ASSERT(file_is(p, want, flen));
    /* An injected fault 5000 bytes in: one page direct, 904 bytes through the page
     * cache, then the injected error; the bytes before it are in the file. */
    ds_fault_inject_write(5000, ENOSPC);
    d0 = ds_direct_bytes();
    CU_ASSERT_EQUAL(ds_pwrite_direct(fd, dfd, buf + 8192, 3 * 4096, 0, p), DSCKPT_ENOSPC);
    ds_fault_inject_write(-1, 0);
    CU_ASSERT_EQUAL(ds_direct_bytes() - d0, on ? 4096 : 0);
    memcpy(want, buf + 8192, 5000);
    CU_ASSERT(file_is(p, want, flen));
    if (dfd >= 0) close(dfd);
    close(fd);
    unsetenv("DSCKPT_DIRECT_IO");
    free(buf);
    free(want);
    tu_rmtree(dir);
    free(dir);
    free(p);
}

/* Whether this file system takes direct writes (DSCKPT_DIRECT_IO=1 set). */
static bool direct_here(const char *dir) {
    char *p = tu_path(dir, "probe");
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644), dfd = fd >= 0 ? ds_direct_fd(fd) : -1;
    if (dfd >= 0) close(dfd);
    if (fd >= 0) close(fd);
    unlink(p);
    free(p);
    if (dfd < 0) no_direct_note();
    return dfd >= 0;
}

/* The stream with direct writes: whole buffers go direct (all but the last one's
 * final partial page), and the file holds exactly the bytes written. */
static void direct_stream(size_t big) {
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "d");
    setenv("DSCKPT_DIRECT_IO", "1", 1);
    bool on = direct_here(dir);
    /* The stream: writes cut at odd sizes, one larger than its buffer. */
    static const size_t cuts[] = {1, 4095, 70000, (1u << 20) + 3, 5, 2u << 20};
    size_t total = 0;
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) total += cuts[i];
    uint8_t *data = NULL;
    TU_ASSERT_OK(ds_malloc(total, &data));
    fill(data, total, 5);
    ds_stream *s = NULL;
    TU_ASSERT_OK(ds_stream_create(p, 4096, &s));
    if (big) ds_stream_set_big_buffers(s, big);
    uint64_t d0 = ds_direct_bytes();
    for (size_t i = 0, off = 0; i < sizeof cuts / sizeof *cuts; off += cuts[i], i++)
        TU_ASSERT_OK(ds_stream_write(s, data + off, cuts[i]));
    ds_digests dg = {0};
    TU_ASSERT_OK(ds_stream_finish(s, &dg));
    /* Every buffer went direct but the last one's final partial page. */
    CU_ASSERT_EQUAL(ds_direct_bytes() - d0, on ? total / 4096 * 4096 : 0);
    CU_ASSERT(file_is(p, data, total));
    CU_ASSERT_EQUAL(dg.size, total);
    ds_digests_clear(&dg);
    unlink(p);
    /* A write failing on the writer thread: the stream reports it, with its
     * message, and removes the file. */
    TU_ASSERT_OK(ds_stream_create(p, 4096, &s));
    if (big) ds_stream_set_big_buffers(s, big);
    ds_fault_inject_write((int64_t)(1u << 20) + 100, ENOSPC);
    dsckpt_status st = DSCKPT_OK;
    for (size_t off = 0; st == DSCKPT_OK && off < total; off += 70000)
        st = ds_stream_write(s, data + off, DS_MIN((size_t)70000, total - off));
    if (st == DSCKPT_OK) st = ds_stream_finish(s, NULL);
    else ds_stream_abort(s);
    ds_fault_inject_write(-1, 0);
    CU_ASSERT_EQUAL(st, DSCKPT_ENOSPC);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "No space"));
    CU_ASSERT(!tu_exists(p));
    unsetenv("DSCKPT_DIRECT_IO");
    free(data);
    tu_rmtree(dir);
    free(dir);
    free(p);
}

/* The same with the writer's buffers larger than a MiB (a compressed file's, by
 * ds_stream_set_big_buffers): 1 MiB + 8 KiB, so that several fill and go direct. */
static void test_direct_stream(void) {
    direct_stream(0);
    direct_stream((1u << 20) + 8192);
}

/* The copy engine with direct writes, through its writer threads: a file cut into
 * page-multiple chunks goes direct but its tail; a file of units at any offset goes
 * through the page cache; both hold exactly what the fill produced; a write that
 * fails on a writer thread fails the run with its message. */
static void test_direct_copy_engine(void) {
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "d");
    setenv("DSCKPT_DIRECT_IO", "1", 1);
    bool on = direct_here(dir);
    uint8_t *data = NULL;
    TU_ASSERT_OK(ds_malloc((3u << 20) + 5, &data));
    /* File 0 hashed in 1 MiB chunks (its pieces direct, the 5-byte tail unit not);
     * file 1 not hashed, cut in units of 1000003 bytes (none direct). */
    char *p1 = tu_path(dir, "d1");
    ds_copy_file cf[2] = {
        {.fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644), .name = p, .size = (2u << 20) + 5, .hash_chunk = 1u << 20},
        {.fd = open(p1, O_WRONLY | O_CREAT | O_EXCL, 0644), .name = p1, .size = (3u << 20) + 5}};
    CU_ASSERT_FATAL(cf[0].fd >= 0 && cf[1].fd >= 0);
    ds_copy_unit *units = NULL;
    size_t nunits = 0;
    TU_ASSERT_OK(ds_copy_chunk_units(cf, 2, 1000003, &units, &nunits));
    CU_ASSERT_EQUAL(nunits, 3 + 4);
    ds_copy_job job = {.files = cf, .nfiles = 2, .units = units, .nunits = nunits, .fill = engine_fill, .threads = 2};
    uint64_t d0 = ds_direct_bytes();
    TU_ASSERT_OK(ds_copy_run(&job));
    uint64_t dn = ds_direct_bytes() - d0;
    CU_ASSERT_EQUAL(dn, on ? 2u << 20 : 0);
    for (size_t f = 0; f < 2; f++) {
        close(cf[f].fd);
        for (size_t i = 0; i < cf[f].size; i++) data[i] = engine_byte(f, i);
        CU_ASSERT(file_is(f ? p1 : p, data, (size_t)cf[f].size));
        ds_copy_file_clear(&cf[f]);
    }
    /* A write failing on a writer thread fails the run, with its message. */
    for (size_t f = 0; f < 2; f++) cf[f].fd = open(f ? p1 : p, O_WRONLY);
    free(units);
    TU_ASSERT_OK(ds_copy_chunk_units(cf, 2, 1000003, &units, &nunits));
    ds_fault_inject_write((int64_t)(3u << 20), ENOSPC);
    job.units = units;
    job.nunits = nunits;
    CU_ASSERT_EQUAL(ds_copy_run(&job), DSCKPT_ENOSPC);
    ds_fault_inject_write(-1, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "No space"));
    for (size_t f = 0; f < 2; f++) {
        close(cf[f].fd);
        ds_copy_file_clear(&cf[f]);
    }
    free(units);
    free(p1);
    unsetenv("DSCKPT_DIRECT_IO");
    free(data);
    tu_rmtree(dir);
    free(dir);
    free(p);
}

/* ds_malloc's placement (error.c): what reads land in starts on a page,
 * large blocks on a 2 MiB boundary; every block is writable to its last byte
 * (ASan checks the bounds) and freed by free(); a size that cannot be rounded up
 * to 2 MiB fails as ENOMEM without allocating. */
static void test_malloc_placement(void) {
    static const size_t sizes[] = {0, 1, 4095, 4096, 4097, 131072 + 5, (2u << 20) - 1, 2u << 20, (2u << 20) + 1,
                                   (5u << 20) + 3};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        uint8_t *p = NULL;
        CU_ASSERT_EQUAL_FATAL(ds_malloc(sizes[i], &p), DSCKPT_OK);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        uintptr_t a = (uintptr_t)p;
        if (sizes[i] >= 4096) CU_ASSERT_EQUAL(a % 4096, 0);
        if (sizes[i] >= (2u << 20)) CU_ASSERT_EQUAL(a % (2u << 20), 0);
        if (sizes[i]) {
            memset(p, 0xa5, sizes[i]);
            CU_ASSERT_EQUAL(p[sizes[i] - 1], 0xa5);
        }
        free(p);
    }
    void *q = (void *)&q;
    CU_ASSERT_EQUAL(ds_malloc(SIZE_MAX - 5, &q), DSCKPT_ENOMEM);
    CU_ASSERT_PTR_EQUAL(q, (void *)&q); /* not written on failure */
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "out of memory"));
}

int main(void) {
    static const tu_test tests[] = {{"ds_malloc: pages from 4 KiB, 2 MiB boundaries from 2 MiB", test_malloc_placement},
                                    {"chunk digests = one-shot SHA-256 per chunk, any write cuts", test_chunk_digests},
                                    {"SHA-256 of a file, streamed, = one-shot digest", test_sha256_file},
                                    {"hex encode/decode, known SHA-256 vector", test_hex},
                                    {"stream refuses an existing path", test_existing_path_refused},
                                    {"injected write failure: sticky, file removed; pwrite hook", test_fault_sticky},
                                    {"copy engine: bytes and chunk digests as a stream's, failures stop it", test_copy_engine},
                                    {"direct writes: whole pages direct, the rest cached, same bytes; faults cut them", test_direct_pwrite},
                                    {"stream with direct writes: whole buffers direct, same bytes", test_direct_stream},
                                    {"copy engine with direct writes: chunked files direct, same bytes, failures reported", test_direct_copy_engine},
                                    {"atomic small-file replace keeps the old file on failure", test_atomic_file},
                                    {"safe names and path helpers", test_path_helpers},
                                    {NULL, NULL}};
    return tu_main("stream", tests);
}
