/*
 * internal.h — the bottom layer (common/) every other layer may use: errors,
 * allocation, overflow-checked arithmetic, interruption, UTF-8 validation, test
 * hooks, little-endian helpers; not installed. (dsckpt.h, the public API, gives
 * the status and dtype enums.)
 *
 * Error handling: a failing function records a message with ds_err() (which also
 * returns the status, so `return ds_err(DSCKPT_ECORRUPT, "...")` is the idiom) and
 * its callers propagate the status with DS_TRY / DS_TRYGOTO. The message lives in a
 * thread-local buffer read by dsckpt_last_error().
 */
#ifndef DSCKPT_INTERNAL_H
#define DSCKPT_INTERNAL_H

#include "dsckpt.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DS_UNUSED(x) ((void)(x))
#define DS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define DS_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Most dimensions a tensor may have (safetensors headers, checkpoint tensors). */
#define DS_MAX_DIMS 16

/* Records a formatted message for the calling thread and returns `st`. */
dsckpt_status ds_err(dsckpt_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Like ds_err, with ": <strerror(errnum)>" appended; maps errnum to a status
 * (ENOSPC/EDQUOT -> ENOSPC, ENOMEM -> ENOMEM, ENOENT -> ENOENT, EEXIST -> EEXIST,
 * anything else -> EIO). */
dsckpt_status ds_err_errno(int errnum, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends "<prefix>: " to the current message, keeping the status. */
dsckpt_status ds_err_prefix(dsckpt_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ds_err_clear(void);

#define DS_TRY(expr)                                 \
    do {                                             \
        dsckpt_status ds_try_st_ = (expr);           \
        if (ds_try_st_ != DSCKPT_OK) return ds_try_st_; \
    } while (0)

/* Requires a `dsckpt_status st` and a label in scope. */
#define DS_TRYGOTO(expr, label)                      \
    do {                                             \
        st = (expr);                                 \
        if (st != DSCKPT_OK) goto label;             \
    } while (0)

/* Overflow-checked arithmetic: return true on overflow. */
static inline bool ds_mul_overflow(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_mul_overflow(a, b, out);
}
static inline bool ds_add_overflow(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_add_overflow(a, b, out);
}
static inline uint64_t ds_ceil_div(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }

/* True once dsckpt_interrupt() was called; long loops check it and return
 * ds_err_interrupted() (DSCKPT_EINTR), so the usual failure paths remove the
 * temporaries. */
bool ds_interrupted(void);
dsckpt_status ds_err_interrupted(void);

/* Allocation that records ENOMEM with a message. ds_malloc's blocks of 4 KiB and
 * more are 64-byte aligned, and those of 2 MiB and more 2 MiB-aligned and advised
 * for huge pages (error.c): use it for large buffers that reads, hashes and copies
 * go through. free() frees them. */
dsckpt_status ds_malloc(size_t n, void *out_ptr);
dsckpt_status ds_calloc(size_t n, size_t size, void *out_ptr);
/* Room for element n of a doubling array (*arr_ptr, *cap elements of elem bytes,
 * n of them used): grows it when n == *cap (to 16 the first time). On ENOMEM the
 * array is as it was. */
dsckpt_status ds_array_room(void *arr_ptr, size_t *cap, size_t n, size_t elem);
char *ds_strdup(const char *s); /* NULL on failure (and records ENOMEM) */

/* Number of worker threads to use when the caller asked for `requested` (0 = auto). */
int ds_thread_count(int requested);

/* Length of the valid UTF-8 prefix of s[0..n) (n when all valid): overlongs,
 * code points past U+10FFFF and truncated sequences are invalid, and so are
 * UTF-16 surrogates unless allow_surrogates (Python's 'surrogatepass', which
 * pickles of lone surrogates need). */
size_t ds_utf8_valid_prefix(const uint8_t *s, size_t n, bool allow_surrogates);

/* A test hook's value (an environment variable such as DSCKPT_TEST_FAIL_WRITE_AFTER),
 * or NULL when it is unset or empty, or when this build was configured without
 * -DDSCKPT_TEST_HOOKS=ON: release builds ignore every hook. Read hooks only
 * through this. */
const char *ds_test_hook(const char *name);
bool ds_test_hooks_built(void);
/* verify.c's in-process test hook: phase 0 after a tag's manifest is loaded,
 * phase 1 after its data is checked. Only -DDSCKPT_TEST_HOOKS=ON builds keep it:
 * elsewhere ds_test_set_verify_hook returns false and ds_test_verify_point does
 * nothing. Tests only (no environment variable reaches it). */
typedef void (*ds_verify_hook_fn)(const char *tag_dir, int phase);
bool ds_test_set_verify_hook(ds_verify_hook_fn fn);
void ds_test_verify_point(const char *tag_dir, int phase);

/* Little-endian helpers. */
static inline void ds_put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint64_t ds_get_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static inline void ds_put_le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t ds_get_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#endif /* DSCKPT_INTERNAL_H */
