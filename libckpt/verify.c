/*
 * verify.c — integrity checks of a native checkpoint or a safetensors file.
 *
 * For a checkpoint: the manifest is parsed strictly; every listed file must exist
 * with the listed size, be valid safetensors naming this checkpoint's tag, rank and
 * world size; every chunk's SHA-256 is recomputed on all cores (jobs are chunks, so
 * one large file still uses every core) and compared; the fragments of every state
 * must cover each tensor exactly once and lie inside their files' data; files in
 * the tag directory that the manifest does not list are reported. Every problem is
 * collected (file, chunk, tensor, offset), not just the first.
 */
#include "ckpt.h"
#include "deepspeed.h"
#include "fsutil.h"
#include "manifest.h"
#include "names.h"
#include "parallel.h"
#include "resolve.h"
#include "safetensors.h"
#include "stream.h"
#include "unknown.h"
#include "zchunk.h"
#include "zip.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_PIECE (4u << 20)

typedef struct vtag {
    char *name;
    dsckpt_verify_result result;
    bool changed;
} vtag;

struct dsckpt_verify_report {
    dsckpt_verify_result result;
    char **problems;
    size_t n, cap;
    uint64_t bytes;
    size_t files;
    pthread_mutex_t mu;
    vtag *tags;
    size_t ntags;
    bool changed;
};


void dsckpt_verify_opts_init(dsckpt_verify_opts *o) { memset(o, 0, sizeof *o); }

/* Which verdict wins when a report has several: unreadable, then corrupt, then
 * unsupported (intact but unsafe to pass on), then ok. */
static int sev_rank(dsckpt_verify_result v) {
    switch (v) {
    case DSCKPT_VERIFY_OK: return 0;
    case DSCKPT_VERIFY_UNSUPPORTED: return 1;
    case DSCKPT_VERIFY_CORRUPT: return 2;
    default: return 3;
    }
}

static void add_problem(dsckpt_verify_report *r, dsckpt_verify_result sev, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_problem(dsckpt_verify_report *r, dsckpt_verify_result sev, const char *fmt, ...) {
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
    va_end(ap);
    pthread_mutex_lock(&r->mu);
    if (sev_rank(sev) > sev_rank(r->result)) r->result = sev;
    if (msg && r->n == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 16;
        char **p = realloc(r->problems, ncap * sizeof *p);
        if (p) {
            r->problems = p;
            r->cap = ncap;
        }
    }
    if (msg && r->n < r->cap) r->problems[r->n++] = msg;
    else free(msg);
    pthread_mutex_unlock(&r->mu);
}

static void coverage_cb(void *user, const char *fmt, ...) {
    dsckpt_verify_report *r = user;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    add_problem(r, DSCKPT_VERIFY_CORRUPT, "coverage: %s", msg);
}

/* Severity of a failed status: data problems are corruption, the rest unreadable. */
static dsckpt_verify_result sev_of(dsckpt_status st) {
    return (st == DSCKPT_ECORRUPT || st == DSCKPT_ECHECKSUM || st == DSCKPT_EVERSION || st == DSCKPT_EUNSUPPORTED)
               ? DSCKPT_VERIFY_CORRUPT
               : DSCKPT_VERIFY_UNREADABLE;
}

typedef struct hash_job {
    size_t file;
    size_t chunk;   /* native: chunk index; DeepSpeed: zip member index */
} hash_job;

typedef struct vctx {
    const dsckpt_ckpt *c;
    dsckpt_verify_report *r;
    int *fds;           /* per file, -1 if not hashable */
    hash_job *jobs;
    size_t njobs;
    uint8_t **bufs;     /* per worker */
    EVP_MD_CTX **mds;   /* per worker */
    zip_archive **zips; /* DeepSpeed files: per file, NULL for native files */
    ds_progress prog;
} vctx;

/* DeepSpeed files carry no digests of ours: check each zip member's CRC-32. */
static dsckpt_status crc_one(vctx *v, const hash_job *hj) {
    const ds_file *f = &v->c->files[hj->file];
    const zip_archive *z = v->zips[hj->file];
    dsckpt_status st = zip_check_crc(v->fds[hj->file], z, hj->chunk, f->name);
    if (st == DSCKPT_ENOMEM || st == DSCKPT_EINTERNAL) return st;
    if (st) add_problem(v->r, sev_of(st), "%s", dsckpt_last_error());
    ds_progress_add(&v->prog, z->members[hj->chunk].size);
    return DSCKPT_OK;
}

/* Bytes [*beg, *end) of the file on disk that chunk k's digest covers: the
 * stored chunk of a compressed file (verify never decodes), else the chunk. */
static void chunk_bounds(const ds_file *f, size_t k, uint64_t *beg, uint64_t *end) {
    if (f->compressed) {
        *beg = f->zc[k].off;
        *end = f->zc[k].off + f->zc[k].size;
    } else {
        *beg = (uint64_t)k * f->dg.chunk_size;
        *end = DS_MIN(*beg + f->dg.chunk_size, f->size);
    }
}

/* Hashes bytes [off, cend) of file hj->file into md through a direct descriptor
 * when it is not in the page cache: reads of whole pages from the page
 * at or before off into the worker's buffer. Returns 1 when hashed, 0 when the
 * caller should read it as usual (cached, no direct descriptor, or the file system
 * refused the read before any byte was hashed), -1 when a problem was recorded. */
static int hash_direct(vctx *v, const hash_job *hj, const ds_file *f, uint64_t off, uint64_t cend, EVP_MD_CTX *md,
                       int worker) {
    int fd = v->fds[hj->file];
    /* Cached: the first page and the last (readahead past the chunk before can
     * bring in the first alone). */
    if (cend <= off || (ds_page_cached(fd, off) && ds_page_cached(fd, cend - 1))) return 0;
    int dfd = ds_direct_read_fd(fd);
    if (dfd < 0) return 0;
    int res = 1;
    for (uint64_t pos = off - off % DS_DIRECT_ALIGN; pos < cend;) {
        uint64_t left = cend - pos;
        size_t want = (size_t)DS_MIN((uint64_t)READ_PIECE, (left + DS_DIRECT_ALIGN - 1) / DS_DIRECT_ALIGN * DS_DIRECT_ALIGN);
        ssize_t r = ds_pread_direct(dfd, v->bufs[worker], want, pos);
        if (r < 0 && errno == EINVAL && pos < off + DS_DIRECT_ALIGN) { /* refused: read it as usual */
            res = 0;
            break;
        }
        uint64_t lo = DS_MAX(pos, off), hi = r > 0 ? DS_MIN(pos + (uint64_t)r, cend) : pos;
        if (r < 0) {
            dsckpt_status es = ds_err_errno(errno, "%s: chunk %zu: read at offset %llu failed", f->name, hj->chunk,
                                            (unsigned long long)pos);
            add_problem(v->r, sev_of(es), "%s", dsckpt_last_error());
            res = -1;
            break;
        }
        if (hi <= lo) {
            add_problem(v->r, DSCKPT_VERIFY_CORRUPT, "%s: chunk %zu: truncated: the file ends at %llu", f->name,
                        hj->chunk, (unsigned long long)(pos + (uint64_t)r));
            res = -1;
            break;
        }
        if (EVP_DigestUpdate(md, v->bufs[worker] + (lo - pos), (size_t)(hi - lo)) != 1) {
            add_problem(v->r, DSCKPT_VERIFY_CORRUPT, "%s: chunk %zu: OpenSSL: SHA-256 failed", f->name, hj->chunk);
            res = -1;
            break;
        }
        ds_progress_add(&v->prog, hi - lo);
        pos += (uint64_t)r;
    }
    close(dfd);
    return res;
}

static dsckpt_status hash_one(void *u, size_t j, int worker) {
    vctx *v = u;
    const hash_job *hj = &v->jobs[j];
    if (v->zips && v->zips[hj->file]) return crc_one(v, hj);
    const ds_file *f = &v->c->files[hj->file];
    uint64_t off, cend;
    chunk_bounds(f, hj->chunk, &off, &cend);
    uint64_t len = cend - off;
    EVP_MD_CTX *md = v->mds[worker];
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) return ds_err(DSCKPT_EINTERNAL, "OpenSSL: SHA-256 failed");
    /* A chunk not in the page cache (a save writes direct) is read direct. */
    int hs = hash_direct(v, hj, f, off, cend, md, worker);
    if (hs < 0) return DSCKPT_OK; /* a problem, recorded */
    if (hs > 0) goto digest;
    /* Map the chunk rather than pread it: hashing is the floor here, and copying
     * every byte out of the page cache first costs about as much again. */
    /* A file that shrinks while it is mapped raises SIGBUS; check right before
     * mapping (a shrink in the microseconds after remains possible: verify is not
     * meant to run beside a writer of the same checkpoint). */
    struct stat sb;
    if (fstat(v->fds[hj->file], &sb) != 0 || (uint64_t)sb.st_size < off + len) {
        add_problem(v->r, DSCKPT_VERIFY_CORRUPT, "%s: chunk %zu: the file shrank while being verified", f->name,
                    hj->chunk);
        return DSCKPT_OK;
    }
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), moff = off - off % page;
    size_t mlen = (size_t)(len + (off - moff));
    void *map = len ? mmap(NULL, mlen, PROT_READ, MAP_PRIVATE | MAP_POPULATE, v->fds[hj->file], (off_t)moff)
                    : MAP_FAILED;
    if (map != MAP_FAILED) {
        madvise(map, mlen, MADV_SEQUENTIAL);
        const uint8_t *p = (const uint8_t *)map + (off - moff);
        for (uint64_t done = 0; done < len;) {
            size_t n = (size_t)DS_MIN(READ_PIECE, len - done);
            if (EVP_DigestUpdate(md, p + done, n) != 1) {
                munmap(map, mlen);
                return ds_err(DSCKPT_EINTERNAL, "OpenSSL: SHA-256 failed");
            }
            done += n;
            ds_progress_add(&v->prog, n);
        }
        munmap(map, mlen);
    } else {
        for (uint64_t done = 0; done < len;) {
            size_t n = (size_t)DS_MIN(READ_PIECE, len - done);
            dsckpt_status st = ds_pread_full(v->fds[hj->file], v->bufs[worker], n, off + done, f->path);
            if (st) {
                add_problem(v->r, sev_of(st), "%s: chunk %zu: %s", f->name, hj->chunk, dsckpt_last_error());
                return DSCKPT_OK; /* recorded; keep checking the others */
            }
            if (EVP_DigestUpdate(md, v->bufs[worker], n) != 1) return ds_err(DSCKPT_EINTERNAL, "OpenSSL: SHA-256 failed");
            done += n;
            ds_progress_add(&v->prog, n);
        }
    }
digest:;
    uint8_t dg[DS_SHA256_LEN];
    unsigned int dl = 0;
    if (EVP_DigestFinal_ex(md, dg, &dl) != 1) return ds_err(DSCKPT_EINTERNAL, "OpenSSL: SHA-256 failed");
    if (memcmp(dg, f->dg.chunks[hj->chunk], DS_SHA256_LEN) != 0)
        add_problem(v->r, DSCKPT_VERIFY_CORRUPT, "%s: chunk %zu (%sbytes %llu..%llu): SHA-256 mismatch", f->name,
                    hj->chunk, f->compressed ? "stored " : "", (unsigned long long)off, (unsigned long long)(off + len));
    return DSCKPT_OK;
}

/* Structure of one rank file: valid safetensors, names this checkpoint, and holds
 * the fragments that point into it. Returns false if it cannot be hashed. */
static bool check_file_structure(const dsckpt_ckpt *c, size_t i, int fd, dsckpt_verify_report *r) {
    const ds_file *f = &c->files[i];
    st_header *h = NULL;
    dsckpt_status st = f->compressed ? ds_file_read_header(f, fd, false, &h) : st_read_fd(fd, f->name, &h);
    if (st) {
        add_problem(r, sev_of(st), "%s", dsckpt_last_error());
        return true; /* still hash: the chunk digests locate the damage */
    }
    char want[32];
    const char *v;
    snprintf(want, sizeof want, "%d", f->rank);
    if (!(v = st_meta_get(h, "dsckpt.rank")) || strcmp(v, want) != 0)
        add_problem(r, DSCKPT_VERIFY_CORRUPT, "%s: metadata says rank %s, the manifest says %d (a stray file?)",
                    f->name, v ? v : "(none)", f->rank);
    snprintf(want, sizeof want, "%d", c->world_size);
    if (!(v = st_meta_get(h, "dsckpt.world_size")) || strcmp(v, want) != 0)
        add_problem(r, DSCKPT_VERIFY_CORRUPT, "%s: metadata says world size %s, the manifest says %d", f->name,
                    v ? v : "(none)", c->world_size);
    if (!(v = st_meta_get(h, "dsckpt.tag")) || strcmp(v, c->tag) != 0)
        add_problem(r, DSCKPT_VERIFY_CORRUPT, "%s: metadata says tag %s, the manifest says %s (from another checkpoint?)",
                    f->name, v ? v : "(none)", c->tag);
    snprintf(want, sizeof want, "%d", c->stage);
    if (!(v = st_meta_get(h, "dsckpt.zero_stage")) || strcmp(v, want) != 0)
        add_problem(r, DSCKPT_VERIFY_CORRUPT, "%s: metadata says ZeRO stage %s, the manifest says %d", f->name,
                    v ? v : "(none)", c->stage);
    snprintf(want, sizeof want, "%zu", c->nfiles);
    if (!(v = st_meta_get(h, "dsckpt.files")) || strcmp(v, want) != 0)
        add_problem(r, DSCKPT_VERIFY_CORRUPT, "%s: metadata says %s rank files, the manifest lists %zu", f->name,
                    v ? v : "(none)", c->nfiles);
    /* Fragments must point into the data buffer, not the header. */
    for (int s = 0; s < DS_NSTATES; s++)
        for (size_t k = 0; k < c->nfrags[s]; k++) {
            const ds_frag *fr = &c->frags[s][k];
            if (fr->file == i && fr->numel && fr->offset < h->data_start)
                add_problem(r, DSCKPT_VERIFY_CORRUPT, "%s: %s fragment of '%s' at byte %llu points into the header",
                            f->name, ds_state_names[s], c->tensors[fr->tensor].name, (unsigned long long)fr->offset);
        }
    st_header_free(h);
    return true;
}

static void check_stray_files(const dsckpt_ckpt *c, dsckpt_verify_report *r) {
    DIR *d = opendir(c->dir);
    if (!d) {
        add_problem(r, DSCKPT_VERIFY_UNREADABLE, "%s: cannot list directory: %s", c->dir, strerror(errno));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, DS_MANIFEST_NAME)) continue;
        /* A universal checkpoint's zero/ holds its listed files (checked when opened). */
        if (c->format && !strcmp(c->format, "universal") && !strcmp(e->d_name, "zero")) continue;
        bool listed = false;
        for (size_t i = 0; i < c->nfiles && !listed; i++) listed = strcmp(c->files[i].name, e->d_name) == 0;
        if (!listed)
            add_problem(r, DSCKPT_VERIFY_CORRUPT, "%s: stray file not in the manifest%s", e->d_name,
                        strstr(e->d_name, ".tmp-") ? " (left by an interrupted write; safe to delete)" : "");
    }
    closedir(d);
}

/* Pickled callables outside the allow-list in a DeepSpeed or universal
 * checkpoint: DeepSpeed's torch.load would run them. */
static void check_unknown_objects(const dsckpt_ckpt *c, dsckpt_verify_report *r) {
    if (!c->format || (strcmp(c->format, "deepspeed") && strcmp(c->format, "universal"))) return;
    ds_unknown_list ul = {0};
    dsckpt_status st = ds_unknown_in_dir(c->dir, &ul);
    if (st) add_problem(r, sev_of(st), "%s", dsckpt_last_error());
    else if (ul.count)
        add_problem(r, DSCKPT_VERIFY_UNSUPPORTED,
                    "%zu pickled object%s outside the allow-list (torch.load would call %s; dsckpt does not "
                    "pass %s on): %s",
                    ul.count, ul.count == 1 ? "" : "s", ul.count == 1 ? "it" : "them",
                    ul.count == 1 ? "it" : "them", ul.text ? ul.text : "");
    ds_unknown_list_free(&ul);
}

/* Opens file i of the checkpoint for hashing: its digests agree with each other,
 * it exists with the listed size (asize[i] gets the actual one), and its structure
 * is sound; v->njobs counts its hash jobs (chunks, or zip members of a DeepSpeed
 * .pt file). Problems go to the report; v->fds[i] stays -1 when it cannot be read. */
static void open_one(vctx *v, size_t i, uint64_t *asize) {
    const dsckpt_ckpt *c = v->c;
    dsckpt_verify_report *r = v->r;
    const ds_file *f = &c->files[i];
    uint64_t size;
    v->fds[i] = -1;
    uint8_t dg[DS_SHA256_LEN];
    if (f->has_digests &&
        ds_sha256_of_chunks((const uint8_t(*)[DS_SHA256_LEN])f->dg.chunks, f->dg.nchunks, dg) == DSCKPT_OK &&
        memcmp(dg, f->dg.file, DS_SHA256_LEN) != 0)
        add_problem(r, DSCKPT_VERIFY_CORRUPT, "%s: the manifest's file digest does not match its chunk digests",
                    f->name);
    dsckpt_status st = ds_open_read(f->path, &v->fds[i], &size);
    if (st) {
        /* Missing: damage. Something else where the file should be (a FIFO, a
         * directory): unreadable, as every command reports it. */
        add_problem(r, st == DSCKPT_ENOENT ? DSCKPT_VERIFY_CORRUPT : sev_of(st), "%s: %s",
                    f->name,
                    st == DSCKPT_ENOENT ? "missing (listed in the manifest, not on disk)" : dsckpt_last_error());
        v->fds[i] = -1;
        return;
    }
    uint64_t want = ds_file_disk_size(f);
    if (size != want) {
        add_problem(r, DSCKPT_VERIFY_CORRUPT, "%s: %llu bytes, the manifest says %llu (%s)", f->name,
                    (unsigned long long)size, (unsigned long long)want, size < want ? "truncated" : "extended");
    }
    asize[i] = size;
    if (!f->has_digests) { /* a DeepSpeed .pt file: its zip members' CRC-32 */
        if (zip_open_fd(v->fds[i], f->path, &v->zips[i]) != DSCKPT_OK) {
            add_problem(r, DSCKPT_VERIFY_CORRUPT, "%s", dsckpt_last_error());
            close(v->fds[i]);
            v->fds[i] = -1;
            return;
        }
        v->njobs += v->zips[i]->n;
        return;
    }
    check_file_structure(c, i, v->fds[i], r);
    v->njobs += f->dg.nchunks;
}

/* The hash jobs of every readable file: its chunks (those a truncated file still
 * has) or its zip members. False when out of memory. */
static bool plan_jobs(vctx *v, const uint64_t *asize) {
    const dsckpt_ckpt *c = v->c;
    if (ds_calloc(v->njobs, sizeof *v->jobs, &v->jobs)) return false;
    v->njobs = 0;
    for (size_t i = 0; i < c->nfiles; i++) {
        if (v->fds[i] < 0) continue;
        const ds_file *f = &c->files[i];
        if (v->zips[i]) {
            for (size_t k = 0; k < v->zips[i]->n; k++) {
                v->jobs[v->njobs++] = (hash_job){i, k};
                v->prog.total += v->zips[i]->members[k].size;
            }
            continue;
        }
        for (size_t k = 0; k < f->dg.nchunks; k++) {
            uint64_t beg, end;
            chunk_bounds(f, k, &beg, &end);
            if (end > asize[i]) {
                /* Past the end of a truncated file: already reported by size. */
                add_problem(v->r, DSCKPT_VERIFY_CORRUPT, "%s: chunk %zu (bytes %llu..%llu) missing from the file",
                            f->name, k, (unsigned long long)beg, (unsigned long long)end);
                continue;
            }
            v->jobs[v->njobs++] = (hash_job){i, k};
            v->prog.total += end - beg;
        }
    }
    return true;
}

/* Runs the hash jobs on `threads` threads. False when out of memory. */
static bool hash_all(vctx *v, int threads, const dsckpt_verify_opts *o) {
    if (ds_calloc((size_t)threads, sizeof *v->bufs, &v->bufs) || ds_calloc((size_t)threads, sizeof *v->mds, &v->mds))
        return false;
    for (int i = 0; i < threads; i++) {
        if (ds_malloc(READ_PIECE, &v->bufs[i])) return false;
        if (!(v->mds[i] = EVP_MD_CTX_new())) return false;
    }
    v->prog.fn = o->progress;
    v->prog.user = o->progress_user;
    dsckpt_status st = ds_parallel_run(v->njobs, threads, hash_one, v, &v->prog);
    if (st) add_problem(v->r, DSCKPT_VERIFY_UNREADABLE, "%s", dsckpt_last_error());
    v->r->bytes = atomic_load(&v->prog.done);
    return true;
}

static void vctx_free(vctx *v, size_t nfiles, int threads) {
    if (v->fds)
        for (size_t i = 0; i < nfiles; i++)
            if (v->fds[i] >= 0) close(v->fds[i]);
    free(v->fds);
    if (v->zips)
        for (size_t i = 0; i < nfiles; i++) zip_free(v->zips[i]);
    free(v->zips);
    free(v->jobs);
    if (v->bufs)
        for (int i = 0; i < threads; i++) free(v->bufs[i]);
    if (v->mds)
        for (int i = 0; i < threads; i++) EVP_MD_CTX_free(v->mds[i]);
    free(v->bufs);
    free(v->mds);
}

static void verify_checkpoint(const char *path, const char *tag, const dsckpt_verify_opts *o,
                              dsckpt_verify_report *r) {
    dsckpt_ckpt *c = NULL;
    vctx v = {0};
    uint64_t *asize = NULL; /* actual size of each file */
    int threads = ds_thread_count(o->threads);
    dsckpt_status st = ds_ckpt_new(&c);
    if (st == DSCKPT_OK) st = ds_resolve_ckpt(path, tag, &c->dir, &c->root);
    if (st) {
        add_problem(r, st == DSCKPT_ECORRUPT ? DSCKPT_VERIFY_CORRUPT : DSCKPT_VERIFY_UNREADABLE, "%s",
                    dsckpt_last_error());
        goto done;
    }
    st = ds_ckpt_load(c);
    if (st) {
        add_problem(r, st == DSCKPT_ENOENT ? DSCKPT_VERIFY_UNREADABLE : sev_of(st), "%s", dsckpt_last_error());
        goto done;
    }
    ds_test_verify_point(c->dir, 0); /* test builds only (testhook.c) */
    st = ds_ckpt_index(c, coverage_cb, r);
    if (st) add_problem(r, sev_of(st), "%s", dsckpt_last_error());
    check_unknown_objects(c, r);
    check_stray_files(c, r);
    r->files = c->nfiles;
    v.c = c;
    v.r = r;
    bool ok = !ds_calloc(c->nfiles, sizeof *v.fds, &v.fds) && !ds_calloc(c->nfiles, sizeof *asize, &asize) &&
              !ds_calloc(c->nfiles, sizeof *v.zips, &v.zips);
    for (size_t i = 0; v.fds && i < c->nfiles; i++) v.fds[i] = -1; /* nothing to close yet */
    for (size_t i = 0; ok && i < c->nfiles; i++) open_one(&v, i, asize);
    if (!ok || !plan_jobs(&v, asize) || !hash_all(&v, threads, o))
        add_problem(r, DSCKPT_VERIFY_UNREADABLE, "out of memory while verifying");
done:
    vctx_free(&v, c ? c->nfiles : 0, threads);
    free(asize);
    dsckpt_ckpt_free(c);
}

/* A lone safetensors file: strict structure, and every byte readable. */
static void verify_safetensors(const char *path, dsckpt_verify_report *r) {
    int fd;
    uint64_t size;
    dsckpt_status st = ds_open_read(path, &fd, &size);
    if (st) {
        add_problem(r, DSCKPT_VERIFY_UNREADABLE, "%s", dsckpt_last_error());
        return;
    }
    r->files = 1;
    st_header *h = NULL;
    st = st_read_fd(fd, path, &h);
    if (st) {
        add_problem(r, sev_of(st), "%s", dsckpt_last_error());
    } else {
        uint8_t *buf = NULL;
        if (ds_malloc(READ_PIECE, &buf)) {
            add_problem(r, DSCKPT_VERIFY_UNREADABLE, "out of memory");
        } else {
            for (uint64_t off = 0; off < size;) {
                size_t n = (size_t)DS_MIN(READ_PIECE, size - off);
                st = ds_pread_full(fd, buf, n, off, path);
                if (st) {
                    add_problem(r, sev_of(st), "%s", dsckpt_last_error());
                    break;
                }
                off += n;
                r->bytes += n;
            }
            free(buf);
        }
        st_header_free(h);
    }
    close(fd);
}

/* ---- snapshots and tags ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf *b, const char *fmt, ...) {
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int k = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (k < 0) {
        b->oom = true;
        return;
    }
    if (b->n + (size_t)k + 1 > b->cap) {
        size_t nc = (b->cap + (size_t)k + 1) * 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            free(s);
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, (size_t)k + 1);
    b->n += (size_t)k;
    free(s);
}

static void sb_stat(sbuf *b, const char *label, const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) {
        sb_add(b, "%s -\n", label);
        return;
    }
    sb_add(b, "%s %llu %llu %llu %ld.%09ld %ld.%09ld\n", label, (unsigned long long)sb.st_dev,
           (unsigned long long)sb.st_ino, (unsigned long long)sb.st_size, (long)sb.st_mtim.tv_sec,
           (long)sb.st_mtim.tv_nsec, (long)sb.st_ctim.tv_sec, (long)sb.st_ctim.tv_nsec);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* What a tag's verdict depends on, as text: `latest` (identity and contents) when
 * the tag is reached through it, the tag directory's identity, and
 * every entry of it (identity, size, times). Replacing any file, the manifest, the
 * directory or `latest` changes it. NULL when out of memory. */
static char *snapshot_of(const char *path, const char *tag) {
    sbuf b = {0};
    char *dir = NULL, *root = NULL;
    dsckpt_status st = ds_resolve_ckpt(path, tag, &dir, &root);
    sb_add(&b, "resolve %d %s\n", (int)st, dir ? dir : "");
    if (root && (!tag || !strcmp(tag, "latest"))) { /* reached through `latest` */
        char *lp = ds_join(root, "latest");
        if (lp) {
            sb_stat(&b, "latest", lp);
            char *text = NULL;
            if (ds_read_small_file(lp, 4096, &text, NULL) == DSCKPT_OK) sb_add(&b, "latest=%s\n", text);
            free(text);
        }
        free(lp);
    }
    if (dir) {
        sb_stat(&b, ".", dir);
        DIR *d = opendir(dir);
        char **names = NULL;
        size_t n = 0, cap = 0;
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue; /* the parent may change freely */
            if (n == cap) {
                cap = cap ? cap * 2 : 32;
                char **nn = realloc(names, cap * sizeof *nn);
                if (!nn) {
                    b.oom = true;
                    break;
                }
                names = nn;
            }
            if (!(names[n] = strdup(e->d_name))) {
                b.oom = true;
                break;
            }
            n++;
        }
        if (d) closedir(d);
        if (n) qsort(names, n, sizeof *names, cmp_str);
        for (size_t i = 0; i < n; i++) {
            char *fp = ds_join(dir, names[i]);
            if (fp) sb_stat(&b, names[i], fp);
            free(fp);
            free(names[i]);
        }
        free(names);
    }
    free(dir);
    free(root);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p ? b.p : strdup("");
}

static dsckpt_verify_report *report_new(void) {
    dsckpt_verify_report *r = calloc(1, sizeof *r);
    if (r) pthread_mutex_init(&r->mu, NULL);
    return r;
}

/* Checks one tag (`tag` under the save root `path`, or the tag directory `path`
 * when tag is NULL) against a snapshot taken before and after, and adds its
 * verdict as `label` to r; problems are prefixed with the label when `prefix`. */
static void verify_tag(const char *path, const char *tag, const char *label, bool prefix,
                       const dsckpt_verify_opts *o, dsckpt_verify_report *r) {
    dsckpt_verify_report *sr = report_new();
    char *before = snapshot_of(path, tag);
    if (!sr || !before) {
        add_problem(r, DSCKPT_VERIFY_UNREADABLE, "out of memory while verifying");
        free(before);
        dsckpt_verify_report_free(sr);
        return;
    }
    verify_checkpoint(path, tag, o, sr);
    char *dir = NULL, *root = NULL;
    if (ds_test_hooks_built() && ds_resolve_ckpt(path, tag, &dir, &root) == DSCKPT_OK) ds_test_verify_point(dir, 1);
    free(dir);
    free(root);
    char *after = snapshot_of(path, tag);
    bool changed = !after || strcmp(before, after) != 0;
    free(before);
    free(after);
    const char *pre = prefix ? label : NULL;
    if (changed) {
        /* What was read may mix two versions: the problems found say nothing. */
        add_problem(r, DSCKPT_VERIFY_UNREADABLE,
                    "%s%s%s: changed while verifying (a writer replaced files, the manifest or 'latest'); "
                    "the result is not meaningful: run verify again when nothing writes to it",
                    pre ? pre : "", pre ? ": " : "", tag ? tag : path);
        r->changed = true;
    } else {
        for (size_t i = 0; i < sr->n; i++)
            add_problem(r, DSCKPT_VERIFY_OK, "%s%s%s", /* severity merged below */
                        pre ? pre : "", pre ? ": " : "", sr->problems[i]);
        pthread_mutex_lock(&r->mu);
        if (sev_rank(sr->result) > sev_rank(r->result)) r->result = sr->result;
        pthread_mutex_unlock(&r->mu);
    }
    r->files += sr->files;
    r->bytes += sr->bytes;
    vtag *nt = realloc(r->tags, (r->ntags + 1) * sizeof *nt);
    if (nt) {
        r->tags = nt;
        nt[r->ntags] = (vtag){.name = strdup(label), .result = changed ? DSCKPT_VERIFY_UNREADABLE : sr->result,
                              .changed = changed};
        if (nt[r->ntags].name) r->ntags++;
    }
    dsckpt_verify_report_free(sr);
}

/* Tag directories of a save root: subdirectories (not hidden) holding a manifest,
 * DeepSpeed files or rank files (an unfinished save), sorted by name. */
static size_t list_tags(const char *root, char ***out, dsckpt_verify_report *r) {
    *out = NULL;
    DIR *d = opendir(root);
    if (!d) return 0;
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !ds_safe_name(e->d_name)) continue;
        char *dir = ds_join(root, e->d_name);
        if (!dir) break;
        bool is_tag = false, partial = false;
        if (ds_is_dir(dir)) {
            char *mp = ds_join(dir, DS_MANIFEST_NAME);
            is_tag = (mp && ds_exists(mp)) || ds_is_deepspeed_dir(dir);
            free(mp);
            DIR *td = is_tag ? NULL : opendir(dir);
            struct dirent *te;
            while (td && !partial && (te = readdir(td)))
                partial = !strncmp(te->d_name, "rank_", 5) || !strncmp(te->d_name, ".rank_", 6);
            if (td) closedir(td);
        }
        if (partial) /* listed, not a verdict: a save that did not finish is no checkpoint */
            add_problem(r, DSCKPT_VERIFY_OK, "%s: not checked: rank files without a manifest (a save that did not finish)",
                        dir);
        free(dir);
        if (!is_tag) continue;
        char **nn = realloc(names, (n + 1) * sizeof *nn);
        if (!nn) break;
        names = nn;
        if (!(names[n] = strdup(e->d_name))) break;
        n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_str);
    *out = names;
    return n;
}

/* A save root without a tag: every tag, and `latest` must name one of them. */
static void verify_root(const char *path, const dsckpt_verify_opts *o, dsckpt_verify_report *r) {
    char **tags = NULL;
    size_t n = list_tags(path, &tags, r);
    if (n == 0) { /* nothing that looks like a tag: the single-tag messages say why */
        verify_tag(path, NULL, path, false, o, r);
        return;
    }
    char *lp = ds_join(path, "latest"), *latest = NULL;
    if (lp && !ds_exists(lp)) { /* a save root of universal checkpoints */
        free(lp);
        lp = ds_join(path, "latest_universal");
    }
    dsckpt_status lst = lp && ds_exists(lp) ? ds_read_latest(lp, &latest) : DSCKPT_ENOENT;
    if (lst == DSCKPT_OK) {
        bool found = false;
        for (size_t i = 0; i < n && !found; i++) found = !strcmp(tags[i], latest);
        if (!found)
            add_problem(r, DSCKPT_VERIFY_UNREADABLE, "%s: 'latest' names '%.200s': tag directory does not exist", path,
                        latest);
    } else if (lst == DSCKPT_ENOENT) {
        add_problem(r, DSCKPT_VERIFY_UNREADABLE, "%s: no 'latest' file (every tag below was checked)", path);
    } else {
        add_problem(r, lst == DSCKPT_ECORRUPT ? DSCKPT_VERIFY_CORRUPT : DSCKPT_VERIFY_UNREADABLE, "%s",
                    dsckpt_last_error());
    }
    free(lp);
    free(latest);
    for (size_t i = 0; i < n; i++) {
        verify_tag(path, tags[i], tags[i], true, o, r);
        free(tags[i]);
    }
    free(tags);
}

dsckpt_status dsckpt_verify(const char *path, const char *tag, const dsckpt_verify_opts *opts,
                            dsckpt_verify_report **out) {
    ds_err_clear();
    if (!path || !out) return ds_err(DSCKPT_EINVAL, "dsckpt_verify: NULL argument");
    dsckpt_verify_opts defaults;
    if (!opts) {
        dsckpt_verify_opts_init(&defaults);
        opts = &defaults;
    }
    if (tag) DS_TRY(ds_name_check(tag, strlen(tag), DSCKPT_EINVAL, path, "tag"));
    dsckpt_verify_report *r = report_new();
    if (!r) return ds_err(DSCKPT_ENOMEM, "out of memory");
    if (!ds_exists(path)) {
        add_problem(r, DSCKPT_VERIFY_UNREADABLE, "%s: no such file or directory", path);
    } else if (ds_is_dir(path)) {
        char *mp = ds_join(path, DS_MANIFEST_NAME);
        bool tag_dir = (mp && ds_exists(mp)) || ds_is_deepspeed_dir(path);
        free(mp);
        if (tag) {
            verify_tag(path, tag, tag, false, opts, r);
        } else if (tag_dir) {
            char *base = ds_basename(path);
            verify_tag(path, NULL, base ? base : path, false, opts, r);
            free(base);
        } else {
            verify_root(path, opts, r);
        }
    } else {
        verify_safetensors(path, r);
    }
    *out = r;
    return DSCKPT_OK;
}

size_t dsckpt_verify_report_tag_count(const dsckpt_verify_report *r) { return r->ntags; }
const char *dsckpt_verify_report_tag_name(const dsckpt_verify_report *r, size_t i) {
    return i < r->ntags ? r->tags[i].name : NULL;
}
dsckpt_verify_result dsckpt_verify_report_tag_result(const dsckpt_verify_report *r, size_t i) {
    return i < r->ntags ? r->tags[i].result : DSCKPT_VERIFY_UNREADABLE;
}
int dsckpt_verify_report_tag_changed(const dsckpt_verify_report *r, size_t i) {
    return i < r->ntags && r->tags[i].changed;
}
int dsckpt_verify_report_changed(const dsckpt_verify_report *r) { return r->changed; }

dsckpt_verify_result dsckpt_verify_report_result(const dsckpt_verify_report *r) { return r->result; }
size_t dsckpt_verify_report_count(const dsckpt_verify_report *r) { return r->n; }
const char *dsckpt_verify_report_problem(const dsckpt_verify_report *r, size_t i) {
    return i < r->n ? r->problems[i] : NULL;
}
/* The kind of a problem, from the wording verify.c gives each (kept in step
 * with the messages above; tests/cli_ux_test.sh checks the common ones). */
static const char *problem_kind(const char *m) {
    static const struct { const char *needle, *kind; } rules[] = {
        {"SHA-256 mismatch", "checksum"}, {"CRC-32", "checksum"},       {"digest does not match", "checksum"},
        {"stray file", "stray_file"},     {"changed while", "changed"}, {"shrank", "size"},
        {"the manifest says", "size"},    {"truncated", "size"},         {"missing", "missing"},
        {"no such file", "missing"},      {"coverage: ", "coverage"},    {"metadata says", "metadata"},
        {"'latest'", "latest"},           {"not checked", "incomplete"}, {"out of memory", "unreadable"},
        {"cannot ", "unreadable"},
    };
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (strstr(m, rules[i].needle)) return rules[i].kind;
    return "structure";
}

dsckpt_status dsckpt_verify_report_problem_info(const dsckpt_verify_report *r, size_t i, dsckpt_verify_problem *out) {
    if (!r || !out || i >= r->n) return ds_err(DSCKPT_EINVAL, "verify problem index %zu out of range", i);
    const char *m = r->problems[i];
    memset(out, 0, sizeof *out);
    out->message = m;
    out->chunk = -1;
    out->kind = problem_kind(m);
    /* "chunk N" anywhere. */
    const char *ck = strstr(m, "chunk ");
    if (ck && ck[6] >= '0' && ck[6] <= '9') {
        int64_t v = 0;
        for (const char *d = ck + 6; *d >= '0' && *d <= '9' && v < ((int64_t)1 << 50); d++) v = v * 10 + (*d - '0');
        out->chunk = v;
    }
    /* The file: the last "<name>: " segment before the description that looks
     * like a file or directory name (no blank; not "chunk N", not "coverage"). */
    const char *p = m;
    while (1) {
        const char *sep = strstr(p, ": ");
        if (!sep) break;
        size_t len = (size_t)(sep - p);
        bool name = len > 0 && len < sizeof out->file && memchr(p, ' ', len) == NULL && strncmp(p, "coverage", len);
        if (name) {
            memcpy(out->file, p, len);
            out->file[len] = '\0';
        } else if (strncmp(p, "chunk ", 6)) {
            break; /* the description has started */
        }
        p = sep + 2;
    }
    return DSCKPT_OK;
}

uint64_t dsckpt_verify_report_bytes(const dsckpt_verify_report *r) { return r->bytes; }
size_t dsckpt_verify_report_files(const dsckpt_verify_report *r) { return r->files; }

void dsckpt_verify_report_free(dsckpt_verify_report *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) free(r->problems[i]);
    free(r->problems);
    for (size_t i = 0; i < r->ntags; i++) free(r->tags[i].name);
    free(r->tags);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
