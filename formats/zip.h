/*
 * zip.h — the zip container of torch.save files (DeepSpeed checkpoints): a strict
 * central-directory reader and a writer that lays members out as torch does.
 *
 * Reader: finds the end of central directory (classic and ZIP64), reads every
 * central entry, and checks each member against its local header. Only STORED
 * members are accepted (torch never compresses; anything else is
 * DSCKPT_EUNSUPPORTED naming the member). Hostile input is refused with
 * DSCKPT_ECORRUPT naming the file and member: counts and sizes bounded by the file,
 * no member outside the file, no two members' data overlapping, no "..", absolute
 * or backslash names, no duplicate names, local header name equal to the central
 * one. CRC-32 (zlib) is checked on demand (zip_check_crc), since reading every
 * byte is verify's job, not open's.
 *
 * Writer: members are STORED with general-purpose flags 0x0808 (data descriptor,
 * UTF-8), local-header CRC and sizes zero, data aligned to 64 bytes (or as set) with an "FB"
 * (0x4246) extra field, and a ZIP64 end record + locator + classic end record, as
 * torch's writer (miniz) produces. All bytes go through a ds_stream; the planned
 * writer (zip_layout) writes the same bytes at planned offsets instead.
 */
#ifndef DSCKPT_ZIP_H
#define DSCKPT_ZIP_H

#include "internal.h"
#include "stream.h"

typedef struct zip_member {
    char *name;           /* full name, e.g. "mp_rank_00_model_states/data/0" */
    uint64_t data_offset; /* absolute offset of the member's bytes */
    uint64_t size;        /* bytes (STORED: compressed == uncompressed) */
    uint32_t crc32;       /* from the central directory */
    uint64_t local_offset;/* offset of the local header */
} zip_member;

typedef struct zip_archive {
    zip_member *members;  /* in central-directory order */
    size_t n;
    uint64_t file_size;
    char *prefix;         /* the top folder of the first member ("archive", ...) */
} zip_archive;

/* Reads the central directory of the open file `fd` (size from fstat). `what`
 * names the file in messages. */
dsckpt_status zip_open_fd(int fd, const char *what, zip_archive **out);
void zip_free(zip_archive *z);
/* Member by full name, or by name relative to the prefix ("data.pkl",
 * "data/0"); NULL if absent. */
const zip_member *zip_find(const zip_archive *z, const char *name);
const zip_member *zip_find_rel(const zip_archive *z, const char *rel);
/* Reads member i and compares its CRC-32 with the central directory's
 * (DSCKPT_ECHECKSUM naming file and member on mismatch). */
dsckpt_status zip_check_crc(int fd, const zip_archive *z, size_t i, const char *what);
/* Reads a whole (small) member into a malloc'd buffer; refuses members over `max`. */
dsckpt_status zip_read_member(int fd, const zip_archive *z, const zip_member *m, size_t max, const char *what,
                              uint8_t **out);

/* torch >= 2.1 metadata members, all optional: `byteorder` ("little"; "big" is
 * DSCKPT_EUNSUPPORTED, anything else DSCKPT_ECORRUPT), `.format_version` (1;
 * another number is DSCKPT_EUNSUPPORTED) and `.storage_alignment` (a power of two
 * up to ZIP_MAX_ALIGN: the alignment of the storages' data; 64 when absent).
 * `.data/serialization_id` carries no meaning for reading and is not checked. */
#define ZIP_MAX_ALIGN 4096u
typedef struct zip_torch_meta {
    uint64_t storage_alignment;
    bool has_storage_alignment;
    int format_version;   /* 0 when absent */
    bool has_byteorder;
} zip_torch_meta;
dsckpt_status zip_torch_meta_read(int fd, const zip_archive *z, const char *what, zip_torch_meta *out);

/* ---- writer ---- */
typedef struct zip_writer zip_writer;
/* Starts an archive whose members live under `prefix/`, written to `s`. */
dsckpt_status zip_writer_new(ds_stream *s, const char *prefix, zip_writer **out);
/* Data alignment of the members begun from now on: a power of two up to
 * ZIP_MAX_ALIGN (64 by default, torch's). */
dsckpt_status zip_writer_set_alignment(zip_writer *w, uint32_t align);
/* Starts member prefix/rel of exactly `size` bytes; returns the absolute offset
 * its data will start at (aligned to 64, or the alignment set). */
dsckpt_status zip_writer_begin(zip_writer *w, const char *rel, uint64_t size, uint64_t *data_offset);
dsckpt_status zip_writer_write(zip_writer *w, const void *data, size_t n);
dsckpt_status zip_writer_write_zeros(zip_writer *w, uint64_t n);
/* Ends the current member (checks that exactly `size` bytes came). */
dsckpt_status zip_writer_end(zip_writer *w);
/* Writes the central directory and end records. Does not finish the stream. */
dsckpt_status zip_writer_finish(zip_writer *w);
void zip_writer_free(zip_writer *w);

/* ---- planned writer ----
 * The same bytes as the writer above, for a caller that writes the members' data
 * itself, at their offsets, in any order and on any number of threads: every
 * member is added up front with its size, which fixes every offset; the caller
 * sets each member's CRC-32 once its data is written, and zip_layout_write then
 * writes the rest (local headers, data descriptors, central directory, end
 * records) with positional writes (ds_pwrite_full: fault hook and interruption
 * apply). Not thread-safe itself; the caller's data writes may be concurrent. */
typedef struct zip_layout zip_layout;
/* An empty layout for members under `prefix/`, data aligned to `align` (a power
 * of two up to ZIP_MAX_ALIGN). */
dsckpt_status zip_layout_new(const char *prefix, uint32_t align, zip_layout **out);
/* Adds member prefix/rel of exactly `size` bytes after the previous one (member
 * numbers count from 0 in the order added); sets where its data goes. */
dsckpt_status zip_layout_add(zip_layout *l, const char *rel, uint64_t size, uint64_t *data_offset);
/* The CRC-32 of member `member`'s data (0 until set, which fits an empty member). */
void zip_layout_set_crc(zip_layout *l, size_t member, uint32_t crc);
/* Writes everything but the members' data into `fd` (`what` names it in messages);
 * refuses duplicate names. */
dsckpt_status zip_layout_write(const zip_layout *l, int fd, const char *what);
void zip_layout_free(zip_layout *l); /* accepts NULL */

#endif /* DSCKPT_ZIP_H */
