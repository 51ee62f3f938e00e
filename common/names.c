/*
 * names.c — names read from files checked before any file-system call, and JSON
 * objects checked for repeated keys (see names.h).
 */
#include "names.h"

#include "fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *ds_name_problem(const char *name, size_t len) {
    if (!name || len == 0) return "it is empty";
    if (len > DS_NAME_MAX) return "it is longer than 255 bytes";
    if (len == 1 && name[0] == '.') return "it is '.'";
    if (len == 2 && name[0] == '.' && name[1] == '.') return "it is '..'";
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch == '/') return "it contains '/'";
        if (ch == '\\') return "it contains '\\'";
        if (ch == 0) return "it contains a NUL byte";
        if (ch < 0x20 || ch == 0x7f) return "it contains a control character";
    }
    if (ds_utf8_valid_prefix((const uint8_t *)name, len, false) != len) return "it is not valid UTF-8";
    return NULL;
}

const char *ds_relname_problem(const char *name, size_t len) {
    if (!name || len == 0) return "it is empty";
    if (len > DS_RELNAME_MAX) return "it is longer than 4096 bytes";
    if (name[0] == '/') return "it is an absolute path";
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && name[i] != '/') continue;
        size_t n = i - start;
        const char *c = name + start;
        if (n == 0) return "it has an empty path component";
        if (n == 1 && c[0] == '.') return "it has a '.' component";
        if (n == 2 && c[0] == '.' && c[1] == '.') return "it has a '..' component";
        const char *why = ds_name_problem(c, n);
        if (why) return why;
        start = i + 1;
    }
    return NULL;
}

bool ds_safe_name(const char *name) {
    return name && ds_name_problem(name, strlen(name)) == NULL;
}

/* The name for a message: printable ASCII and UTF-8 bytes as they are, anything
 * else as \xNN, at most 200 input bytes ("..." after a cut). */
static void printable(const char *name, size_t len, char *out, size_t cap) {
    size_t o = 0;
    size_t n = len > 200 ? 200 : len;
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch < 0x20 || ch == 0x7f || ch == '\'' || ch == '\\')
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", ch);
        else
            out[o++] = (char)ch;
    }
    if (n < len && o + 4 < cap) o += (size_t)snprintf(out + o, cap - o, "...");
    out[o] = '\0';
}

static dsckpt_status refuse(const char *name, size_t len, const char *why, dsckpt_status code, const char *where,
                            const char *kind) {
    char shown[4 * 200 + 8];
    printable(name ? name : "", name ? len : 0, shown, sizeof shown);
    return ds_err(code, "%s: %s '%s' is not a safe name: %s", where, kind, shown, why);
}

dsckpt_status ds_name_check(const char *name, size_t len, dsckpt_status code, const char *where, const char *kind) {
    const char *why = ds_name_problem(name, len);
    return why ? refuse(name, len, why, code, where, kind) : DSCKPT_OK;
}

dsckpt_status ds_relname_check(const char *name, size_t len, dsckpt_status code, const char *where,
                               const char *kind) {
    const char *why = ds_relname_problem(name, len);
    return why ? refuse(name, len, why, code, where, kind) : DSCKPT_OK;
}

static bool latest_space(char ch) {
    return ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t' || ch == '\v' || ch == '\f';
}

dsckpt_status ds_read_latest(const char *path, char **tag_out) {
    *tag_out = NULL;
    char *text = NULL;
    size_t len = 0;
    DS_TRY(ds_read_small_file(path, 4096, &text, &len));
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        dsckpt_status st = ds_err(DSCKPT_ECORRUPT, "%s: a NUL byte at offset %zu: not a tag name", path, (size_t)(nul - text));
        free(text);
        return st;
    }
    size_t b = 0, e = len;
    while (b < e && latest_space(text[b])) b++;
    while (e > b && latest_space(text[e - 1])) e--;
    memmove(text, text + b, e - b);
    text[e - b] = '\0';
    dsckpt_status st = ds_name_check(text, e - b, DSCKPT_ECORRUPT, path, "the tag");
    if (st) {
        free(text);
        return st;
    }
    *tag_out = text;
    return DSCKPT_OK;
}

static int cmp_key(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

dsckpt_status ds_json_object_unique(const cJSON *obj, dsckpt_status code, const char *where) {
    if (!cJSON_IsObject(obj)) return DSCKPT_OK;
    size_t n = 0;
    for (const cJSON *c = obj->child; c; c = c->next) n++;
    if (n < 2) return DSCKPT_OK;
    if (n <= 8) { /* the common small object: no allocation */
        for (const cJSON *a = obj->child; a; a = a->next)
            for (const cJSON *b = a->next; b; b = b->next)
                if (a->string && b->string && !strcmp(a->string, b->string))
                    return ds_err(code, "%s: duplicate key \"%.200s\" in one object", where, a->string);
        return DSCKPT_OK;
    }
    const char **keys = malloc(n * sizeof *keys);
    if (!keys) return ds_err(DSCKPT_ENOMEM, "out of memory reading %s", where);
    size_t k = 0;
    for (const cJSON *c = obj->child; c; c = c->next) keys[k++] = c->string ? c->string : "";
    qsort(keys, n, sizeof *keys, cmp_key);
    dsckpt_status st = DSCKPT_OK;
    for (k = 1; k < n && !st; k++)
        if (!strcmp(keys[k - 1], keys[k]))
            st = ds_err(code, "%s: duplicate key \"%.200s\" in one object", where, keys[k]);
    free(keys);
    return st;
}

dsckpt_status ds_json_unique_keys(const cJSON *root, dsckpt_status code, const char *where) {
    /* Depth is bounded by cJSON's nesting limit (CJSON_NESTING_LIMIT). */
    if (!root) return DSCKPT_OK;
    DS_TRY(ds_json_object_unique(root, code, where));
    if (cJSON_IsObject(root) || cJSON_IsArray(root))
        for (const cJSON *c = root->child; c; c = c->next) DS_TRY(ds_json_unique_keys(c, code, where));
    return DSCKPT_OK;
}
