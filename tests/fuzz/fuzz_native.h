/*
 * fuzz_native.h — writes a native checkpoint cut from the input (fuzz_util.h),
 * completing every manifest.json that has no "manifest_sha256" key: each listed
 * file present in the input gets its real size and chunk digests (chunk_size as the
 * manifest says, when it is 1 byte to 16 MiB), then the manifest is sealed
 * (ds_manifest_seal). So a mutated rank file or manifest still gets past the
 * digests, and the structural checks behind them are what the fuzzer explores.
 */
#ifndef DSCKPT_FUZZ_NATIVE_H
#define DSCKPT_FUZZ_NATIVE_H

#include "fuzz_util.h"
#include "manifest.h"

#include <cjson/cJSON.h>
#include <openssl/sha.h>

static inline void fuzz_hex(const uint8_t *d, char *out) {
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
    out[64] = '\0';
}

static inline void fuzz_set(cJSON *o, const char *k, cJSON *v) {
    if (!v) return;
    if (cJSON_GetObjectItemCaseSensitive(o, k)) cJSON_ReplaceItemInObjectCaseSensitive(o, k, v);
    else cJSON_AddItemToObject(o, k, v);
}

/* The file `prefix/name` among the pieces, or NULL. */
static inline const fuzz_file *fuzz_find(const fuzz_file *f, size_t n, const char *prefix, const char *name) {
    size_t pl = strlen(prefix);
    for (size_t i = 0; i < n; i++)
        if (!strncmp(f[i].name, prefix, pl) && !strcmp(f[i].name + pl, name)) return &f[i];
    return NULL;
}

/* malloc'd completed and sealed manifest, or NULL to write the piece as it is. */
static inline char *fuzz_fix_manifest(const fuzz_file *m, const fuzz_file *f, size_t n) {
    cJSON *root = cJSON_ParseWithLength((const char *)m->data, m->len);
    if (!cJSON_IsObject(root) || cJSON_GetObjectItemCaseSensitive(root, "manifest_sha256")) {
        cJSON_Delete(root);
        return NULL;
    }
    char prefix[101];
    size_t pl = strnlen(m->name, sizeof prefix - 1);
    memcpy(prefix, m->name, pl);
    prefix[pl] = '\0';
    char *slash = strrchr(prefix, '/');
    if (slash) slash[1] = '\0';
    else prefix[0] = '\0';
    cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files"), *it;
    cJSON_ArrayForEach(it, files) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
        const cJSON *cs = cJSON_GetObjectItemCaseSensitive(it, "chunk_size");
        if (!cJSON_IsString(nm) || !cJSON_IsNumber(cs) || cs->valuedouble < 1 || cs->valuedouble > (1 << 24)) continue;
        const fuzz_file *rf = fuzz_find(f, n, prefix, nm->valuestring);
        if (!rf) continue;
        size_t chunk = (size_t)cs->valuedouble, nch = (rf->len + chunk - 1) / chunk;
        uint8_t *all = malloc(nch * 32 + 1);
        cJSON *arr = cJSON_CreateArray();
        char hex[65];
        for (size_t k = 0; all && arr && k < nch; k++) {
            size_t l = rf->len - k * chunk < chunk ? rf->len - k * chunk : chunk;
            SHA256(rf->data + k * chunk, l, all + 32 * k);
            fuzz_hex(all + 32 * k, hex);
            cJSON_AddItemToArray(arr, cJSON_CreateString(hex));
        }
        if (all && arr) {
            uint8_t fd[32];
            SHA256(all, nch * 32, fd);
            fuzz_hex(fd, hex);
            fuzz_set(it, "chunks", arr);
            fuzz_set(it, "sha256", cJSON_CreateString(hex));
            fuzz_set(it, "size", cJSON_CreateNumber((double)rf->len));
        } else {
            cJSON_Delete(arr);
        }
        free(all);
    }
    char *text = cJSON_PrintUnformatted(root), *sealed = NULL;
    cJSON_Delete(root);
    if (text && ds_manifest_seal(text, &sealed) != DSCKPT_OK) sealed = NULL;
    free(text);
    return sealed;
}

/* Writes every piece under dir, manifests completed; returns how many. */
static inline size_t fuzz_write_native(const char *dir, const fuzz_file *f, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        const char *base = strrchr(f[i].name, '/');
        base = base ? base + 1 : f[i].name;
        char *fixed = strcmp(base, DS_MANIFEST_NAME) ? NULL : fuzz_fix_manifest(&f[i], f, n);
        if (fixed) w += fuzz_write(dir, f[i].name, fixed, strlen(fixed)) == 0;
        else w += fuzz_write(dir, f[i].name, f[i].data, f[i].len) == 0;
        free(fixed);
    }
    return w;
}

#endif /* DSCKPT_FUZZ_NATIVE_H */
