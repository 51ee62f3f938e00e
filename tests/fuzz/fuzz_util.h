/*
 * fuzz_util.h — helpers shared by the fuzz targets that need files on disk: the
 * input is cut into named files, written into a per-process scratch directory that
 * is emptied before every run.
 *
 * Multi-file input format: pieces separated by FUZZ_SEP; each piece is
 * "<relative name>\n<bytes>". A name is one or more components joined by '/', each
 * made of [A-Za-z0-9._-], not "." or "..", at most 100 bytes in all; pieces with
 * another name are skipped (the harness never creates anything outside its scratch
 * directory). Directories on the way are created. tests/fuzz/fuzz.dict holds the
 * separator, so libFuzzer can add and drop files.
 *
 * The scratch directory is $TMPDIR/dsckpt-fuzz-XXXXXX (TMPDIR defaults to /tmp),
 * made on first use and removed at exit; scripts/fuzz.sh points TMPDIR at a
 * directory of its own, so even a crashed run leaves nothing behind.
 */
#ifndef DSCKPT_FUZZ_UTIL_H
#define DSCKPT_FUZZ_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_SEP "\n@@dsckpt-fuzz-next-file@@\n"
#define FUZZ_MAX_FILES 16

typedef struct fuzz_file {
    char name[101];
    const uint8_t *data;
    size_t len;
} fuzz_file;

static char fuzz_dir_path[4096];

static inline int fuzz_rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    if (ftw->level > 0) remove(p);
    return 0;
}

static inline void fuzz_dir_clear(void) {
    if (fuzz_dir_path[0]) nftw(fuzz_dir_path, fuzz_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static inline void fuzz_dir_remove(void) {
    fuzz_dir_clear();
    if (fuzz_dir_path[0]) rmdir(fuzz_dir_path);
}

/* The scratch directory, emptied. Aborts if it cannot be made (a harness bug or a
 * broken machine, not a finding). */
static inline const char *fuzz_dir(void) {
    if (!fuzz_dir_path[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/dsckpt-fuzz-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(fuzz_dir_path)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fuzz_dir_remove);
    }
    fuzz_dir_clear();
    return fuzz_dir_path;
}

static inline int fuzz_name_ok(const char *n) {
    if (!*n || strlen(n) > 100) return 0;
    const char *c = n;
    while (*c) {
        const char *e = strchr(c, '/');
        size_t l = e ? (size_t)(e - c) : strlen(c);
        if (l == 0 || (l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.')) return 0;
        for (size_t i = 0; i < l; i++) {
            char ch = c[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                  ch == '_' || ch == '-'))
                return 0;
        }
        if (!e) break;
        c = e + 1;
    }
    return 1;
}

/* With FUZZ_VERBOSE set, prints what a step returned (to see how far a seed gets). */
static inline int fuzz_note(const char *what, int st, const char *msg) {
    if (getenv("FUZZ_VERBOSE")) fprintf(stderr, "%s: %d %s\n", what, st, st ? msg : "");
    return st;
}

/* Cuts the input into named pieces; returns how many (at most FUZZ_MAX_FILES). */
static inline size_t fuzz_split(const uint8_t *data, size_t size, fuzz_file *out) {
    size_t n = 0, seplen = sizeof FUZZ_SEP - 1;
    const uint8_t *p = data, *end = data + size;
    while (p <= end && n < FUZZ_MAX_FILES) {
        const uint8_t *q = p;
        while (q + seplen <= end && memcmp(q, FUZZ_SEP, seplen) != 0) q++;
        if (q + seplen > end) q = end;
        const uint8_t *nl = memchr(p, '\n', (size_t)(q - p));
        if (nl && (size_t)(nl - p) <= 100) {
            fuzz_file *f = &out[n];
            memcpy(f->name, p, (size_t)(nl - p));
            f->name[nl - p] = '\0';
            f->data = nl + 1;
            f->len = (size_t)(q - nl - 1);
            if (fuzz_name_ok(f->name)) n++;
        }
        if (q == end) break;
        p = q + seplen;
    }
    return n;
}

/* Writes dir/name (making the directories on the way); 0 on success. */
static inline int fuzz_write(const char *dir, const char *name, const void *data, size_t len) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) return -1;
    for (char *s = path + strlen(dir) + 1; (s = strchr(s, '/')); s++) {
        *s = '\0';
        int r = mkdir(path, 0755);
        *s = '/';
        if (r && errno != EEXIST) return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    const uint8_t *b = data;
    while (len) {
        ssize_t w = write(fd, b, len);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        b += w;
        len -= (size_t)w;
    }
    close(fd);
    return 0;
}

/* Writes every piece under dir; returns how many were written. */
static inline size_t fuzz_write_all(const char *dir, const fuzz_file *f, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) w += fuzz_write(dir, f[i].name, f[i].data, f[i].len) == 0;
    return w;
}

#endif /* DSCKPT_FUZZ_UTIL_H */
