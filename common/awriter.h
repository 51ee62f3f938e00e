/*
 * awriter.h — one write in flight beside the thread that produces the bytes.
 *
 * A direct write (fsutil.h) returns when the device has the bytes, so a thread that
 * fills, hashes and then writes each piece leaves the disk idle while it computes
 * and its core idle while it waits. An awriter is a thread of its own that does the
 * writes: the producer fills one buffer while the previous one is written, and
 * hands over the next when that write is done (two buffers, one write in flight).
 * The copy engine and the output stream use one per worker / stream when they
 * write direct.
 */
#ifndef DSCKPT_AWRITER_H
#define DSCKPT_AWRITER_H

#include "internal.h"

typedef struct ds_awriter ds_awriter;

/* Starts the writer's thread. */
dsckpt_status ds_awriter_new(ds_awriter **out);
/* Waits for the write in flight, then hands over this one: bytes [p, p+n) to
 * offset `at` through ds_pwrite_direct(fd, dfd, ...), then sync_file_range on the
 * range (what went through the page cache starts its writeback). p must stay
 * untouched until the next submit or drain returns. Returns the first failure of
 * any earlier write (sticky; its message restored on this thread) and then takes
 * nothing more. `what` names the file in messages; it must outlive the write. */
dsckpt_status ds_awriter_submit(ds_awriter *w, int fd, int dfd, const void *p, size_t n, uint64_t at,
                                const char *what);
/* Waits for the write in flight; returns the first failure, if any. */
dsckpt_status ds_awriter_drain(ds_awriter *w);
/* Drains, stops and joins the thread, frees. Accepts NULL. */
void ds_awriter_free(ds_awriter *w);

#endif /* DSCKPT_AWRITER_H */
