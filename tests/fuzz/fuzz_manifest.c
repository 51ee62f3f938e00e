/*
 * fuzz_manifest.c — fuzz target for the manifest parser and fragment index. The
 * input is sealed with a fresh self-digest first, so the fuzzer reaches the
 * structural checks instead of stopping at the digest.
 */
#include "ckpt.h"
#include "manifest.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 20)) return 0;
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *sealed = NULL;
    /* Only NUL-free object text can be sealed; anything else goes in as it is. */
    if (strlen(text) == size && ds_manifest_seal(text, &sealed) == DSCKPT_OK) {
        free(text);
        text = sealed;
        size = strlen(text);
    }
    dsckpt_ckpt *c = NULL;
    if (ds_ckpt_new(&c) == DSCKPT_OK) {
        c->dir = strdup("fuzz");
        if (c->dir && ds_ckpt_parse_manifest(c, text, size, "fuzz") == DSCKPT_OK) (void)ds_ckpt_index(c, NULL, NULL);
        dsckpt_ckpt_free(c);
    }
    free(text);
    return 0;
}
