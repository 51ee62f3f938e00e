/*
 * fsutil.c — full reads and writes, durable renames, atomic small files. See
 * fsutil.h (output directories committed by rename are in libckpt/outsafe.c).
 */
#include "fsutil.h"

#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

dsckpt_status ds_pread_full(int fd, void *buf, size_t n, uint64_t offset, const char *what) {
    uint8_t *p = buf;
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, p + done, n - done, (off_t)(offset + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            return ds_err_errno(errno, "%s: read of %zu bytes at offset %llu failed", what, n,
                                (unsigned long long)offset);
        }
        if (r == 0)
            return ds_err(DSCKPT_ECORRUPT, "%s: truncated: wanted %zu bytes at offset %llu, file ends at %llu",
                          what, n, (unsigned long long)offset, (unsigned long long)(offset + done));
        done += (size_t)r;
    }
    return DSCKPT_OK;
}

static _Atomic uint64_t direct_bytes;

uint64_t ds_direct_bytes(void) { return atomic_load(&direct_bytes); }

dsckpt_status ds_pwrite_direct(int fd, int dfd, const void *buf, size_t n, uint64_t offset, const char *what) {
    const uint8_t *p = buf;
    size_t done = 0;
    bool fault;
    if (ds_interrupted()) return ds_err_interrupted();
    size_t allow = ds_fault_allow(n, &fault); /* test hook; allow == n normally */
    while (done < n) {
        if (done == allow && fault)
            return ds_err_errno(ds_fault_errno(), "%s: write of %zu bytes at offset %llu failed", what, n,
                                (unsigned long long)offset);
        size_t want = allow - done;
        uint64_t at = offset + done;
        bool direct = false;
        if (dfd >= 0 && want >= DS_DIRECT_ALIGN && (uintptr_t)(p + done) % DS_DIRECT_ALIGN == at % DS_DIRECT_ALIGN) {
            size_t head = (size_t)((DS_DIRECT_ALIGN - at % DS_DIRECT_ALIGN) % DS_DIRECT_ALIGN);
            direct = head == 0;
            want = direct ? want - want % DS_DIRECT_ALIGN : head; /* the head, the tail through fd */
        }
        ssize_t w = pwrite(direct ? dfd : fd, p + done, want, (off_t)at);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (direct && errno == EINVAL) { /* the file system's alignment is coarser: page cache */
                dfd = -1;
                continue;
            }
            return ds_err_errno(errno, "%s: write of %zu bytes at offset %llu failed", what, n,
                                (unsigned long long)offset);
        }
        if (direct) atomic_fetch_add(&direct_bytes, (uint64_t)w);
        done += (size_t)w;
    }
    return DSCKPT_OK;
}

dsckpt_status ds_pwrite_full(int fd, const void *buf, size_t n, uint64_t offset, const char *what) {
    return ds_pwrite_direct(fd, -1, buf, n, offset, what);
}

/* fd reopened with O_DIRECT and `mode` (O_RDONLY or O_WRONLY) where the policy
 * allows it (fsutil.h), else -1. */
static int reopen_direct(int fd, int mode) {
    const char *env = getenv("DSCKPT_DIRECT_IO");
    if (env && strcmp(env, "0") == 0) return -1;
    struct statfs sf;
    bool local = fstatfs(fd, &sf) == 0 && (sf.f_type == 0xEF53 /* ext2/3/4 */ || sf.f_type == 0x58465342 /* XFS */);
    if (!local && !(env && strcmp(env, "1") == 0)) return -1;
    struct stat a, b;
    if (fstat(fd, &a) != 0 || !S_ISREG(a.st_mode)) return -1;
    /* The open file itself, not its name: nothing can be swapped in between. */
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    int dfd = open(self, mode | O_DIRECT | O_CLOEXEC | O_NOCTTY);
    if (dfd < 0) return -1;
    if (fstat(dfd, &b) != 0 || !S_ISREG(b.st_mode) || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
        close(dfd);
        return -1;
    }
    return dfd;
}

int ds_direct_fd(int fd) { return reopen_direct(fd, O_WRONLY); }

int ds_direct_read_fd(int fd) { return reopen_direct(fd, O_RDONLY); }

bool ds_page_cached(int fd, uint64_t offset) {
    /* mincore on a mapping of the page: asking through a read (RWF_NOWAIT) would
     * start readahead of what it finds missing. */
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), at = offset - offset % page;
    void *m = mmap(NULL, (size_t)page, PROT_READ, MAP_SHARED, fd, (off_t)at);
    if (m == MAP_FAILED) return true; /* cannot tell */
    unsigned char in = 1;
    bool cached = mincore(m, (size_t)page, &in) != 0 || (in & 1);
    munmap(m, (size_t)page);
    return cached;
}

static _Atomic uint64_t direct_read_bytes;

uint64_t ds_direct_read_bytes(void) { return atomic_load(&direct_read_bytes); }

ssize_t ds_pread_direct(int dfd, void *buf, size_t n, uint64_t offset) {
    for (;;) {
        ssize_t r = pread(dfd, buf, n, (off_t)offset);
        if (r < 0 && errno == EINTR) continue;
        if (r > 0) atomic_fetch_add(&direct_read_bytes, (uint64_t)r);
        return r;
    }
}

dsckpt_status ds_open_read(const char *path, int *fd_out, uint64_t *size_out) {
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return ds_err_errno(errno, "%s: cannot open", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        dsckpt_status st = ds_err_errno(errno, "%s: cannot stat", path);
        close(fd);
        return st;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        /* Unreadable as a file (exit 2), whatever it is: a FIFO would block a
         * reader, a device would stream forever, a directory has no bytes. */
        const char *kind = S_ISFIFO(sb.st_mode)  ? "a FIFO"
                           : S_ISDIR(sb.st_mode)  ? "a directory"
                           : S_ISSOCK(sb.st_mode) ? "a socket"
                           : S_ISCHR(sb.st_mode)  ? "a character device"
                           : S_ISBLK(sb.st_mode)  ? "a block device"
                                                  : "not a file";
        return ds_err(DSCKPT_EIO, "%s: not a regular file (%s)", path, kind);
    }
    /* Back to blocking reads: O_NONBLOCK was only for the open itself. */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    *fd_out = fd;
    if (size_out) *size_out = (uint64_t)sb.st_size;
    return DSCKPT_OK;
}

dsckpt_status ds_read_small_file(const char *path, size_t max, char **out, size_t *len_out) {
    int fd;
    uint64_t size;
    DS_TRY(ds_open_read(path, &fd, &size));
    if (size > max) {
        close(fd);
        return ds_err(DSCKPT_ECORRUPT, "%s: %llu bytes, more than the %zu this file may have", path,
                      (unsigned long long)size, max);
    }
    char *buf = malloc((size_t)size + 1);
    if (!buf) {
        close(fd);
        return ds_err(DSCKPT_ENOMEM, "out of memory reading %s", path);
    }
    dsckpt_status st = ds_pread_full(fd, buf, (size_t)size, 0, path);
    close(fd);
    if (st) {
        free(buf);
        return st;
    }
    buf[size] = '\0';
    *out = buf;
    if (len_out) *len_out = (size_t)size;
    return DSCKPT_OK;
}

bool ds_is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

bool ds_exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

char *ds_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    bool slash = la > 0 && a[la - 1] != '/';
    char *p = malloc(la + lb + 2);
    if (!p) {
        ds_err(DSCKPT_ENOMEM, "out of memory joining paths");
        return NULL;
    }
    memcpy(p, a, la);
    if (slash) p[la++] = '/';
    memcpy(p + la, b, lb + 1);
    return p;
}

static size_t strip_trailing_slashes(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    return n;
}

char *ds_dirname(const char *path) {
    size_t n = strip_trailing_slashes(path);
    while (n > 0 && path[n - 1] != '/') n--;
    if (n == 0) return ds_strdup(".");
    while (n > 1 && path[n - 1] == '/') n--;
    char *p = strndup(path, n);
    if (!p) ds_err(DSCKPT_ENOMEM, "out of memory");
    return p;
}

char *ds_basename(const char *path) {
    size_t n = strip_trailing_slashes(path);
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    char *p = strndup(path + b, n - b);
    if (!p) ds_err(DSCKPT_ENOMEM, "out of memory");
    return p;
}

dsckpt_status ds_mkdir(const char *path) {
    if (mkdir(path, 0755) != 0) return ds_err_errno(errno, "%s: cannot create directory", path);
    return DSCKPT_OK;
}

dsckpt_status ds_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ds_err_errno(errno, "%s: cannot open directory to fsync", dir);
    dsckpt_status st = DSCKPT_OK;
    /* Some file systems refuse fsync on directories (EINVAL); the rename is still
     * as durable as that file system can make it. */
    if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS)
        st = ds_err_errno(errno, "%s: fsync of directory failed", dir);
    close(fd);
    return st;
}

dsckpt_status ds_rename_durable(const char *tmp, const char *final, bool noreplace) {
    if (noreplace) {
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE) != 0) {
            if (errno == EEXIST) return ds_err(DSCKPT_EEXIST, "%s: already exists", final);
            if (errno != EINVAL && errno != ENOSYS)
                return ds_err_errno(errno, "%s: cannot rename into place", final);
            /* File system without RENAME_NOREPLACE: link()+unlink() keeps the
             * no-clobber guarantee for files; directories fall back to a check. */
            if (ds_exists(final)) return ds_err(DSCKPT_EEXIST, "%s: already exists", final);
            if (rename(tmp, final) != 0) return ds_err_errno(errno, "%s: cannot rename into place", final);
        }
    } else if (rename(tmp, final) != 0) {
        return ds_err_errno(errno, "%s: cannot rename into place", final);
    }
    char *dir = ds_dirname(final);
    if (!dir) return DSCKPT_ENOMEM;
    dsckpt_status st = ds_fsync_dir(dir);
    free(dir);
    return st;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void ds_rmtree(const char *path) {
    if (path && ds_exists(path)) nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static atomic_uint tmp_counter;

char *ds_tmp_sibling(const char *final) {
    char *dir = ds_dirname(final), *base = ds_basename(final), *p = NULL;
    if (dir && base &&
        asprintf(&p, "%s/.%s.tmp-%ld-%u", dir, base, (long)getpid(), atomic_fetch_add(&tmp_counter, 1)) < 0)
        p = NULL;
    if (!p) ds_err(DSCKPT_ENOMEM, "out of memory");
    free(dir);
    free(base);
    return p;
}

dsckpt_status ds_write_file_atomic(const char *path, const void *data, size_t len) {
    char *tmp = ds_tmp_sibling(path);
    if (!tmp) return DSCKPT_ENOMEM;
    dsckpt_status st = DSCKPT_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = ds_err_errno(errno, "%s: cannot create", tmp);
        free(tmp);
        return st;
    }
    st = ds_pwrite_full(fd, data, len, 0, path);
    if (st == DSCKPT_OK && fsync(fd) != 0) st = ds_err_errno(errno, "%s: fsync failed", path);
    if (close(fd) != 0 && st == DSCKPT_OK) st = ds_err_errno(errno, "%s: close failed", path);
    if (st == DSCKPT_OK) st = ds_rename_durable(tmp, path, false);
    if (st != DSCKPT_OK) unlink(tmp);
    free(tmp);
    return st;
}
