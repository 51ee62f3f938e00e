/*
 * floor.c — the floors dsckpt's benchmarks are measured against, taken in the same
 * run as the command they judge (the machines are noisy, so only ratios count):
 *
 *   ds_floor io READ_BYTES WRITE_BYTES OUT_FILE IN_FILE...
 *       Plain read of READ_BYTES spread over the input files (each read from its
 *       start, in 8 MiB read() calls, in proportion to its size), then a plain write
 *       of WRITE_BYTES to OUT_FILE (8 MiB write() calls, fsync, unlink). Prints
 *       "read_s write_s total_s".
 *   ds_floor dwrite WRITE_BYTES OUT_FILE
 *       The same write with O_DIRECT (8 MiB page-aligned write() calls, the last
 *       rounded up to a page and the file cut back to WRITE_BYTES, fsync, unlink):
 *       the disk without the page cache. Prints "write_s".
 *   ds_floor sha MIB
 *       Single-core SHA-256 (OpenSSL EVP) over MIB MiB held in memory; prints GB/s.
 *   ds_floor checked THREADS CHUNK_BYTES IN_FILE...
 *       A checked read: every input file read whole, CHUNK_BYTES at a time (one
 *       pread() each) into a per-thread buffer, each chunk's SHA-256 taken, the
 *       chunks shared out over THREADS threads. Prints "seconds bytes" — the least
 *       a reader that hashes every byte it reads can take on those cores.
 *   ds_floor shifted SHIFT THREADS CHUNK_BYTES IN_FILE...
 *       The checked read into buffers placed SHIFT bytes past a page boundary (the
 *       file offsets stay multiples of CHUNK_BYTES): how much a destination's offset
 *       within its page costs the kernel's copy (bench/RESULTS.md).
 *   ds_floor rss CMD ARGS...
 *       Runs CMD and prints "wall_s max_rss_kib exit_code" (wait4 rusage).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IO_BUF (8u << 20)
#define PLACED_PIECE ((size_t)1 << 20) /* a load's checked read: libckpt/readcheck.c, PIECE */

/* Read and write buffers start on a page: a read whose destination sits 4-28
 * bytes past its source's offset in a page (malloc's large blocks are 16 bytes
 * past a page) took 1.4-1.9x as long (read + SHA-256) on the machine measured
 * (bench/RESULTS.md, `shifted`), and a floor must not be slowed by where its
 * buffer lies. */
static void *page_buffer(size_t n) {
    size_t sz = (n + 4095) / 4096 * 4096;
    return aligned_alloc(4096, sz ? sz : 4096);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int floor_io(int argc, char **argv) {
    if (argc < 5) return 2;
    uint64_t rbytes = strtoull(argv[1], NULL, 10), wbytes = strtoull(argv[2], NULL, 10);
    const char *out = argv[3];
    int nin = argc - 4;
    uint64_t total_in = 0;
    uint64_t *sizes = calloc((size_t)nin, sizeof *sizes);
    for (int i = 0; i < nin; i++) {
        struct stat sb;
        if (stat(argv[4 + i], &sb) != 0) {
            perror(argv[4 + i]);
            return 1;
        }
        sizes[i] = (uint64_t)sb.st_size;
        total_in += sizes[i];
    }
    char *buf = page_buffer(IO_BUF);
    memset(buf, 0x5a, IO_BUF);
    double t0 = now();
    uint64_t left = rbytes;
    for (int i = 0; i < nin && left > 0; i++) {
        uint64_t want = i == nin - 1 ? left : (uint64_t)((double)rbytes * (double)sizes[i] / (double)total_in);
        if (want > sizes[i]) want = sizes[i];
        if (want > left) want = left;
        int fd = open(argv[4 + i], O_RDONLY);
        if (fd < 0) return 1;
        uint64_t got = 0;
        while (got < want) {
            size_t n = want - got < IO_BUF ? (size_t)(want - got) : IO_BUF;
            ssize_t r = read(fd, buf, n);
            if (r <= 0) break;
            got += (uint64_t)r;
        }
        close(fd);
        left -= got;
    }
    double t1 = now();
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror(out);
        return 1;
    }
    for (uint64_t w = 0; w < wbytes;) {
        size_t n = wbytes - w < IO_BUF ? (size_t)(wbytes - w) : IO_BUF;
        ssize_t r = write(fd, buf, n);
        if (r <= 0) {
            perror("write");
            return 1;
        }
        w += (uint64_t)r;
    }
    fsync(fd);
    close(fd);
    double t2 = now();
    unlink(out);
    printf("%.4f %.4f %.4f\n", t1 - t0, t2 - t1, t2 - t0);
    free(buf);
    free(sizes);
    return 0;
}

static int floor_dwrite(int argc, char **argv) {
    if (argc < 3) return 2;
    uint64_t wbytes = strtoull(argv[1], NULL, 10);
    const char *out = argv[2];
    char *buf = page_buffer(IO_BUF);
    memset(buf, 0x5a, IO_BUF);
    double t0 = now();
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0644);
    if (fd < 0) {
        perror(out);
        return 1;
    }
    for (uint64_t w = 0; w < wbytes;) {
        size_t n = wbytes - w < IO_BUF ? (size_t)(wbytes - w) : IO_BUF;
        n = (n + 4095) / 4096 * 4096;
        ssize_t r = write(fd, buf, n);
        if (r <= 0) {
            perror("write");
            return 1;
        }
        w += (uint64_t)r;
    }
    if (ftruncate(fd, (off_t)wbytes) != 0) perror("ftruncate");
    fsync(fd);
    close(fd);
    double t1 = now();
    unlink(out);
    printf("%.4f\n", t1 - t0);
    free(buf);
    return 0;
}

static int floor_sha(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 256;
    size_t n = mib << 20;
    unsigned char *buf = malloc(n), md[32];
    for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)(i * 131);
    unsigned int len;
    EVP_Digest(buf, 1u << 20, md, &len, EVP_sha256(), NULL); /* warm up */
    double t0 = now();
    EVP_Digest(buf, n, md, &len, EVP_sha256(), NULL);
    double t1 = now();
    printf("%.4f\n", (double)n / (t1 - t0) / 1e9);
    free(buf);
    return 0;
}

typedef struct {
    int nin;
    const int *fds;
    const uint64_t *sizes;
    uint64_t chunk, nchunks_total;
    size_t shift; /* the buffer's offset past a page boundary */
    const uint64_t *first; /* chunk index where each file starts */
    uint8_t *placed; /* `placed`: every file's bytes end to end, each chunk read into its place */
    const uint64_t *at; /* `placed`: where each file starts in it */
    atomic_uint_fast64_t next;
    atomic_int failed;
} checked_job;

static void *checked_worker(void *p) {
    checked_job *j = p;
    uint8_t *base = j->placed ? NULL : page_buffer((size_t)j->chunk + j->shift), *buf = base ? base + j->shift : NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if ((!buf && !j->placed) || !md) atomic_store(&j->failed, 1);
    for (uint64_t k; (buf || j->placed) && md && (k = atomic_fetch_add(&j->next, 1)) < j->nchunks_total;) {
        int f = 0;
        while (f + 1 < j->nin && j->first[f + 1] <= k) f++;
        uint64_t off = (k - j->first[f]) * j->chunk;
        size_t n = (size_t)(j->sizes[f] - off < j->chunk ? j->sizes[f] - off : j->chunk);
        unsigned char dg[32];
        unsigned int len;
        bool ok = EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
        /* placed: 1 MiB preads into the chunk's place, each hashed while in cache */
        size_t piece = j->placed ? PLACED_PIECE : n;
        for (size_t d = 0; ok && d < n; d += piece) {
            size_t m = n - d < piece ? n - d : piece;
            uint8_t *dst = j->placed ? j->placed + j->at[f] + off + d : buf;
            ok = pread(j->fds[f], dst, m, (off_t)(off + d)) == (ssize_t)m && EVP_DigestUpdate(md, dst, m) == 1;
        }
        if (!ok || EVP_DigestFinal_ex(md, dg, &len) != 1) {
            atomic_store(&j->failed, 1);
            break;
        }
    }
    EVP_MD_CTX_free(md);
    free(base);
    return NULL;
}

static int floor_checked(int argc, char **argv, size_t shift, bool placed) {
    if (argc < 4) return 2;
    int threads = atoi(argv[1]);
    uint64_t chunk = strtoull(argv[2], NULL, 10);
    int nin = argc - 3;
    if (threads < 1 || threads > 256 || chunk == 0) return 2;
    int *fds = calloc((size_t)nin, sizeof *fds);
    uint64_t *sizes = calloc((size_t)nin, sizeof *sizes), *first = calloc((size_t)nin + 1, sizeof *first);
    uint64_t *at = calloc((size_t)nin + 1, sizeof *at);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    if (!fds || !sizes || !first || !tids || !at) return 1;
    uint64_t total = 0;
    for (int i = 0; i < nin; i++) {
        struct stat sb;
        if ((fds[i] = open(argv[3 + i], O_RDONLY)) < 0 || fstat(fds[i], &sb) != 0) {
            perror(argv[3 + i]);
            return 1;
        }
        sizes[i] = (uint64_t)sb.st_size;
        total += sizes[i];
        first[i + 1] = first[i] + (sizes[i] + chunk - 1) / chunk;
        at[i + 1] = at[i] + sizes[i];
    }
    uint8_t *big = NULL;
    if (placed) { /* written through before the clock starts: a load's state is committed at start-up */
        if (!(big = page_buffer((size_t)total))) return 1;
        memset(big, 1, (size_t)total);
    }
    checked_job j = {.nin = nin, .fds = fds, .sizes = sizes, .chunk = chunk, .nchunks_total = first[nin],
                     .shift = shift, .first = first, .placed = big, .at = at};
    atomic_init(&j.next, 0);
    atomic_init(&j.failed, 0);
    double t0 = now();
    for (int t = 0; t < threads; t++)
        if (pthread_create(&tids[t], NULL, checked_worker, &j) != 0) return 1;
    for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    double t1 = now();
    if (atomic_load(&j.failed)) {
        fprintf(stderr, "ds_floor checked: a read or a digest failed\n");
        return 1;
    }
    printf("%.4f %llu\n", t1 - t0, (unsigned long long)total);
    for (int i = 0; i < nin; i++) close(fds[i]);
    free(fds);
    free(sizes);
    free(first);
    free(at);
    free(tids);
    free(big);
    return 0;
}

static int floor_rss(int argc, char **argv) {
    if (argc < 2) return 2;
    double t0 = now();
    pid_t pid = fork();
    if (pid == 0) {
        execvp(argv[1], argv + 1);
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) return 1;
    double t1 = now();
    printf("%.4f %ld %d\n", t1 - t0, ru.ru_maxrss, WIFEXITED(status) ? WEXITSTATUS(status) : 128);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "io")) return floor_io(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "dwrite")) return floor_dwrite(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "sha")) return floor_sha(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "checked")) return floor_checked(argc - 1, argv + 1, 0, false);
    if (argc >= 2 && !strcmp(argv[1], "placed")) return floor_checked(argc - 1, argv + 1, 0, true);
    if (argc >= 3 && !strcmp(argv[1], "shifted"))
        return floor_checked(argc - 2, argv + 2, (size_t)strtoul(argv[2], NULL, 10), false);
    if (argc >= 2 && !strcmp(argv[1], "rss")) return floor_rss(argc - 1, argv + 1);
    fprintf(stderr, "usage: ds_floor io READ WRITE OUT IN... | dwrite WRITE OUT | sha MIB | checked THREADS CHUNK IN... | shifted SHIFT THREADS CHUNK IN... | rss CMD...\n");
    return 2;
}
