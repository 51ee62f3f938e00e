/*
 * fsutil.h — file-system helpers: full preads, small-file reads, durable renames,
 * atomic small-file writes, path checks. (Output directories committed by rename,
 * ds_outdir, are libckpt's: outsafe.h.)
 *
 * The durable-write rule everywhere: write to a temporary name in the destination
 * directory, fsync, rename, fsync the directory. On failure the temporary is
 * removed and the original output (if any) is untouched.
 */
#ifndef DSCKPT_FSUTIL_H
#define DSCKPT_FSUTIL_H

#include "internal.h"
#include "names.h" /* ds_safe_name */

#include <sys/types.h>

/* Reads exactly n bytes at offset (retrying short reads and EINTR). A read that
 * hits EOF early is DSCKPT_ECORRUPT ("truncated"), naming `what` and the offset. */
dsckpt_status ds_pread_full(int fd, void *buf, size_t n, uint64_t offset, const char *what);
dsckpt_status ds_pwrite_full(int fd, const void *buf, size_t n, uint64_t offset, const char *what);

/* Direct writes for large outputs. Writing through the page cache costs a kernel
 * copy into pages it must first find and, on a fresh machine or a virtual one that
 * hands free memory back to its host, commit: 0.3 GB/s per core where the disk
 * takes 1.5-2 GB/s (bench/RESULTS.md). An O_DIRECT descriptor beside the ordinary
 * one takes the whole pages of each write (ds_pwrite_direct); the partial pages at
 * its ends (a file's tail) go through the ordinary one, so the file's bytes are the
 * same either way. The caller's fsync
 * on either descriptor makes both kinds durable. */
#define DS_DIRECT_ALIGN 4096
/* A second descriptor with O_DIRECT for the regular file open for writing as fd,
 * or -1 where none is used: by default only on ext4 and XFS (local block file
 * systems; on network and other file systems direct writes can be slower or
 * refused); the environment variable DSCKPT_DIRECT_IO=0 turns them off, =1 tries
 * them on any file system. The caller closes it. */
int ds_direct_fd(int fd);
/* The same for reading (O_RDONLY | O_DIRECT), same policy. */
int ds_direct_read_fd(int fd);
/* Whether the page holding `offset` of fd is in the page cache (mincore): a
 * reader takes what is cached through it and what is not direct (1.2-1.4 GB/s
 * against 0.5-0.6 GB/s through the page cache on a cold file here). True where the
 * kernel cannot tell. */
bool ds_page_cached(int fd, uint64_t offset);
/* One pread on a direct descriptor (EINTR retried): buf, offset and n multiples of
 * DS_DIRECT_ALIGN; returns what pread returns (short at the end of the file). */
ssize_t ds_pread_direct(int dfd, void *buf, size_t n, uint64_t offset);
/* Bytes this process has read through direct descriptors (for tests). */
uint64_t ds_direct_read_bytes(void);
/* ds_pwrite_full through dfd (-1: none) for the whole pages of the range, where
 * buf sits at the same offset in its page as the range in the file (a buffer
 * placed so: buf + offset % DS_DIRECT_ALIGN), and through fd for the partial pages
 * at either end and for a buffer placed otherwise. A direct write the file system
 * refuses (EINVAL) is retried through fd. */
dsckpt_status ds_pwrite_direct(int fd, int dfd, const void *buf, size_t n, uint64_t offset, const char *what);
/* Bytes this process has written through direct descriptors (for tests). */
uint64_t ds_direct_bytes(void);
/* Opens `path` for reading only if it is a regular file: opened with O_NONBLOCK
 * (a FIFO never blocks the open), checked with fstat, then switched back to
 * blocking reads. Anything else (FIFO, directory, device, socket) is DSCKPT_EIO
 * "not a regular file (a FIFO)" naming the path. A symlink is followed: what it
 * points to is judged like any other file, by its type and then its content. */
dsckpt_status ds_open_read(const char *path, int *fd_out, uint64_t *size_out);
/* Reads a whole file of at most `max` bytes into a NUL-terminated malloc'd buffer. */
dsckpt_status ds_read_small_file(const char *path, size_t max, char **out, size_t *len_out);

bool ds_is_dir(const char *path);
bool ds_exists(const char *path);
/* malloc'd "a/b" (NULL + ENOMEM recorded on failure). */
char *ds_join(const char *a, const char *b);
/* malloc'd copy of the directory part ("." if none) / of the last component. */
char *ds_dirname(const char *path);
char *ds_basename(const char *path);

dsckpt_status ds_mkdir(const char *path);  /* mkdir 0755; EEXIST is an error */
dsckpt_status ds_fsync_dir(const char *dir);
/* rename(tmp, final) then fsync the directory of final. With noreplace, an
 * existing final is an error (DSCKPT_EEXIST) and nothing is changed. */
dsckpt_status ds_rename_durable(const char *tmp, const char *final, bool noreplace);
/* Removes a tree (best effort, no symlink following). */
void ds_rmtree(const char *path);
/* Writes `len` bytes to `path` atomically (temporary sibling, fsync, rename, fsync dir). */
dsckpt_status ds_write_file_atomic(const char *path, const void *data, size_t len);
/* malloc'd unique temporary sibling name of `final`: "<dir>/.<base>.tmp-<pid>-<n>". */
char *ds_tmp_sibling(const char *final);

#endif /* DSCKPT_FSUTIL_H */
