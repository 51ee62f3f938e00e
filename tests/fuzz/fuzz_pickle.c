/*
 * fuzz_pickle.c — fuzz target for the restricted pickle reader and the writer.
 * The input is one pickle (bytes after STOP are ignored, as in the legacy torch
 * format). Whatever parses with the default limits is serialised again, which
 * walks the whole object graph. Built for libFuzzer with -DDSCKPT_FUZZ=ON (clang),
 * and always as a corpus replay test (replay.c).
 */
#include "pickle.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pk_doc *doc = NULL;
    pk_obj *root = NULL;
    size_t used = 0;
    if (pk_parse_ex(data, size, "fuzz", NULL, &doc, &root, &used) == DSCKPT_OK) {
        if (used > size) abort(); /* cannot happen: consumed is within the input */
        uint8_t *out = NULL;
        size_t len = 0;
        if (pk_serialize(root, &out, &len) == DSCKPT_OK) free(out);
        pk_doc_free(doc);
    }
    return 0;
}
