/*
 * replay.c — runs a fuzz target over every file of the corpus directories given
 * on the command line (the checked-in corpus), so ctest exercises each parser on
 * the inputs fuzzing found, with the sanitizers of the build. Prints the plain
 * "N passed, 0 failed" line; a crash fails the test.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    size_t got = buf ? fread(buf, 1, (size_t)(n > 0 ? n : 0), f) : 0;
    fclose(f);
    if (!buf || got != (size_t)(n > 0 ? n : 0)) {
        free(buf);
        return -1;
    }
    /* An exactly sized copy, so ASan sees any read past the end. */
    uint8_t *exact = malloc(got ? got : 1);
    memcpy(exact, buf, got);
    LLVMFuzzerTestOneInput(exact, got);
    free(exact);
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    int passed = 0, failed = 0;
    for (int a = 1; a < argc; a++) {
        DIR *d = opendir(argv[a]);
        if (!d) {
            fprintf(stderr, "replay: cannot open corpus directory %s\n", argv[a]);
            failed++;
            continue;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[a], e->d_name);
            if (run_file(path) == 0) passed++;
            else {
                fprintf(stderr, "replay: cannot read %s\n", path);
                failed++;
            }
        }
        closedir(d);
    }
    if (passed == 0) failed++;
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
