/*
 * fuzz_safetensors.c — fuzz target for the strict safetensors header parser. The
 * input is a whole file: 8-byte length, header, data. Built for libFuzzer with
 * -DDSCKPT_FUZZ=ON (clang), and always as a corpus replay test (replay.c).
 */
#include "safetensors.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8) return 0;
    uint64_t n = ds_get_le64(data);
    if (n > size - 8) n = size - 8; /* the parser is told the real file size */
    st_header *h = NULL;
    if (st_parse_header(data + 8, n, size, "fuzz", &h) == DSCKPT_OK) {
        /* Touch what a reader uses. */
        for (size_t i = 0; i < h->n; i++) (void)st_find(h, h->tensors[i].name);
        (void)st_meta_get(h, "format");
        st_header_free(h);
    }
    return 0;
}
