/*
 * fsutil.h — file-system helpers: full preads, small-file reads, durable renames,
 * atomic small-file writes, output directories committed by rename, path checks.
 *
 * The durable-write rule everywhere: write to a temporary name in the destination
 * directory, fsync, rename, fsync the directory. On failure the temporary is
 * removed and the original output (if any) is untouched.
 */
#ifndef DSCKPT_FSUTIL_H
#define DSCKPT_FSUTIL_H

#include "internal.h"

#include <sys/types.h>

/* Reads exactly n bytes at offset (retrying short reads and EINTR). A read that
 * hits EOF early is DSCKPT_ECORRUPT ("truncated"), naming `what` and the offset. */
dsckpt_status ds_pread_full(int fd, void *buf, size_t n, uint64_t offset, const char *what);
dsckpt_status ds_pwrite_full(int fd, const void *buf, size_t n, uint64_t offset, const char *what);
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
/* A file name that is safe to join under a directory: non-empty, no '/', not "." or
 * "..", no NUL or control characters, at most 255 bytes. */
bool ds_safe_name(const char *name);

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

/* An output directory built under a temporary sibling and renamed into place. */
typedef struct ds_outdir {
    char *final;
    char *tmp;
    bool force;
} ds_outdir;
/* Refuses an existing `final` unless force (DSCKPT_EEXIST, with a hint about
 * --force); creates the temporary directory. */
dsckpt_status ds_outdir_begin(ds_outdir *od, const char *final, bool force);
/* The same for an output of `kind` (an outsafe.h ds_out_kind; ds_outdir_begin is
 * DS_OUT_SAVE_ROOT): stale temporaries of dead runs beside `final` are removed
 * first, and with force an existing `final` is replaced only if everything in it
 * is what dsckpt writes there (DSCKPT_EEXIST naming the first foreign entry). */
dsckpt_status ds_outdir_begin_kind(ds_outdir *od, const char *final, bool force, int kind);
/* fsyncs the temporary directory, renames it over `final` (moving an existing
 * one aside to ".<base>.old-<pid>-<n>" first and deleting it only after the new
 * one is in place). Fails with DSCKPT_EINTR, changing nothing, once
 * dsckpt_interrupt() was called. */
dsckpt_status ds_outdir_commit(ds_outdir *od);
/* Removes the temporary directory. Safe after a failed begin or after commit. */
void ds_outdir_abort(ds_outdir *od);

#endif /* DSCKPT_FSUTIL_H */
