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
