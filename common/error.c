/*
 * error.c — status names, the thread-local error message, small allocation helpers,
 * and dtype names/sizes (UTF-8 validation is in utf8.c).
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#define DS_ERRBUF 2048
static _Thread_local char ds_errbuf[DS_ERRBUF];

const char *dsckpt_status_name(dsckpt_status st) {
    switch (st) {
    case DSCKPT_OK: return "OK";
    case DSCKPT_EINVAL: return "EINVAL";
    case DSCKPT_EMISUSE: return "EMISUSE";
    case DSCKPT_EEXIST: return "EEXIST";
    case DSCKPT_EIO: return "EIO";
    case DSCKPT_ENOSPC: return "ENOSPC";
    case DSCKPT_ENOMEM: return "ENOMEM";
    case DSCKPT_ENOENT: return "ENOENT";
    case DSCKPT_ECUDA: return "ECUDA";
    case DSCKPT_ENCCL: return "ENCCL";
    case DSCKPT_EMPI: return "EMPI";
    case DSCKPT_EINTR: return "EINTR";
    case DSCKPT_ECORRUPT: return "ECORRUPT";
    case DSCKPT_ECHECKSUM: return "ECHECKSUM";
    case DSCKPT_EVERSION: return "EVERSION";
    case DSCKPT_EUNSUPPORTED: return "EUNSUPPORTED";
    case DSCKPT_EINTERNAL: return "EINTERNAL";
    }
    return "EUNKNOWN";
}

const char *dsckpt_last_error(void) { return ds_errbuf; }

void ds_err_clear(void) { ds_errbuf[0] = '\0'; }

dsckpt_status ds_err(dsckpt_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ds_errbuf, sizeof ds_errbuf, fmt, ap);
    va_end(ap);
    return st;
}

static dsckpt_status status_from_errno(int e) {
    switch (e) {
    case ENOSPC:
#ifdef EDQUOT
    case EDQUOT:
#endif
        return DSCKPT_ENOSPC;
    case ENOMEM: return DSCKPT_ENOMEM;
    case ENOENT: return DSCKPT_ENOENT;
    case EEXIST: return DSCKPT_EEXIST;
    default: return DSCKPT_EIO;
    }
}

dsckpt_status ds_err_errno(int errnum, const char *fmt, ...) {
    char msg[DS_ERRBUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(ds_errbuf, sizeof ds_errbuf, "%.1900s: %.100s", msg, strerror(errnum));
    return status_from_errno(errnum);
}

dsckpt_status ds_err_prefix(dsckpt_status st, const char *fmt, ...) {
    char prefix[DS_ERRBUF], old[DS_ERRBUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, ds_errbuf, sizeof old);
    snprintf(ds_errbuf, sizeof ds_errbuf, "%.600s: %.1400s", prefix, old);
    return st;
}

/* Blocks of DS_ALIGN_FROM bytes and more start on a page (direct writes take
 * them as they are: DS_DIRECT_ALIGN, fsutil.h); blocks of
 * DS_HUGE and more on a 2 MiB boundary, rounded up to whole 2 MiB, advised for
 * transparent huge pages. These are pread() targets, hash inputs and the training
 * state. A read + SHA-256 took 1.4-1.9x as long on the machine measured when the
 * destination's offset in its page was 4-28 bytes past the file offset's (the
 * kernel's page-cache copy; bench/RESULTS.md), and malloc puts its large (mmap'ed) blocks
 * 16 bytes past a page: every read at a page-aligned file offset landed there. A
 * first touch costs one fault per 2 MiB instead of 512 of 4 KiB where the kernel
 * grants huge pages ("madvise" mode; without them, plain pages). free() frees
 * them all. */
enum { DS_ALIGN_FROM = 4096, DS_PAGE = 4096 };
#define DS_HUGE ((size_t)2 << 20)

dsckpt_status ds_malloc(size_t n, void *out_ptr) {
    void *p = NULL;
    if (n < DS_ALIGN_FROM) {
        p = malloc(n ? n : 1);
    } else if (n < DS_HUGE) {
        if (posix_memalign(&p, DS_PAGE, n) != 0) p = NULL;
    } else if (n <= SIZE_MAX - DS_HUGE) {
        size_t sz = (n + DS_HUGE - 1) / DS_HUGE * DS_HUGE;
        if (posix_memalign(&p, DS_HUGE, sz) != 0) p = NULL;
#ifdef MADV_HUGEPAGE
        else (void)madvise(p, sz, MADV_HUGEPAGE); /* advice only: refused, the pages stay 4 KiB */
#endif
    }
    if (!p) return ds_err(DSCKPT_ENOMEM, "out of memory allocating %zu bytes", n);
    *(void **)out_ptr = p;
    return DSCKPT_OK;
}

dsckpt_status ds_array_room(void *arr_ptr, size_t *cap, size_t n, size_t elem) {
    if (n < *cap) return DSCKPT_OK;
    size_t nc = *cap ? 2 * *cap : 16;
    if (nc < n + 1) nc = n + 1;
    if (elem && nc > SIZE_MAX / elem) return ds_err(DSCKPT_ENOMEM, "out of memory growing an array");
    void *p = realloc(*(void **)arr_ptr, nc * (elem ? elem : 1));
    if (!p) return ds_err(DSCKPT_ENOMEM, "out of memory growing an array to %zu entries", nc);
    *(void **)arr_ptr = p;
    *cap = nc;
    return DSCKPT_OK;
}

dsckpt_status ds_calloc(size_t n, size_t size, void *out_ptr) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) return ds_err(DSCKPT_ENOMEM, "out of memory allocating %zu x %zu bytes", n, size);
    *(void **)out_ptr = p;
    return DSCKPT_OK;
}

char *ds_strdup(const char *s) {
    char *p = strdup(s ? s : "");
    if (!p) ds_err(DSCKPT_ENOMEM, "out of memory copying a string");
    return p;
}

int ds_thread_count(int requested) {
    if (requested > 0) return requested > 256 ? 256 : requested;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > 256) n = 256;
    return (int)n;
}

/* ---- dtypes ---- */

static const struct {
    const char *name;
    size_t size;
} dtype_table[DSCKPT_DTYPE_COUNT] = {
    [DSCKPT_BF16] = {"BF16", 2}, [DSCKPT_F16] = {"F16", 2},   [DSCKPT_F32] = {"F32", 4},
    [DSCKPT_F64] = {"F64", 8},   [DSCKPT_I64] = {"I64", 8},   [DSCKPT_I32] = {"I32", 4},
    [DSCKPT_I16] = {"I16", 2},   [DSCKPT_I8] = {"I8", 1},     [DSCKPT_U8] = {"U8", 1},
    [DSCKPT_BOOL] = {"BOOL", 1}, [DSCKPT_U16] = {"U16", 2},   [DSCKPT_U32] = {"U32", 4},
    [DSCKPT_U64] = {"U64", 8},
};

const char *dsckpt_dtype_name(dsckpt_dtype t) {
    if ((unsigned)t >= DSCKPT_DTYPE_COUNT) return "?";
    return dtype_table[t].name;
}

size_t dsckpt_dtype_size(dsckpt_dtype t) {
    if ((unsigned)t >= DSCKPT_DTYPE_COUNT) return 0;
    return dtype_table[t].size;
}

dsckpt_status dsckpt_dtype_parse(const char *s, dsckpt_dtype *out) {
    if (!s) return ds_err(DSCKPT_EINVAL, "no dtype given");
    for (int i = 0; i < DSCKPT_DTYPE_COUNT; i++) {
        if (strcmp(s, dtype_table[i].name) == 0) {
            *out = (dsckpt_dtype)i;
            return DSCKPT_OK;
        }
    }
    static const struct { const char *alias; dsckpt_dtype t; } aliases[] = {
        {"bf16", DSCKPT_BF16}, {"bfloat16", DSCKPT_BF16}, {"fp16", DSCKPT_F16},
        {"f16", DSCKPT_F16},   {"float16", DSCKPT_F16},   {"half", DSCKPT_F16},
        {"fp32", DSCKPT_F32},  {"f32", DSCKPT_F32},       {"float32", DSCKPT_F32},
        {"float", DSCKPT_F32},
    };
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++) {
        if (strcasecmp(s, aliases[i].alias) == 0) {
            *out = aliases[i].t;
            return DSCKPT_OK;
        }
    }
    return ds_err(DSCKPT_EINVAL, "unknown dtype '%s' (expected bf16, fp16 or fp32)", s);
}
