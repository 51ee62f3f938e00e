/*
 * fuzz_zip.c — fuzz target for the zip reader of torch.save files. The input is
 * a whole file; it goes to an anonymous memory file (the reader works on an fd),
 * is opened, every member's CRC is checked and every member looked up by name.
 * Built for libFuzzer with -DDSCKPT_FUZZ=ON (clang), and always as a corpus
 * replay test (replay.c).
 */
#include "zip.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("fuzz_zip", MFD_CLOEXEC);
    if (fd < 0) return 0;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) {
            close(fd);
            return 0;
        }
        done += (size_t)w;
    }
    zip_archive *z = NULL;
    if (zip_open_fd(fd, "fuzz", &z) == DSCKPT_OK) {
        size_t plen = strlen(z->prefix);
        for (size_t i = 0; i < z->n; i++) {
            const zip_member *m = &z->members[i];
            (void)zip_check_crc(fd, z, i, "fuzz");
            if (zip_find(z, m->name) != m) __builtin_trap();
            if (zip_find_rel(z, m->name + plen + 1) != m) __builtin_trap();
            uint8_t *buf = NULL;
            if (zip_read_member(fd, z, m, 1 << 16, "fuzz", &buf) == DSCKPT_OK) free(buf);
        }
        zip_free(z);
    }
    close(fd);
    return 0;
}
