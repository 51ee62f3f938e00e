/*
 * hfjson.c — strict reading and exact re-emission of the JSON files beside a
 * checkpoint (see hfjson.h).
 */
#include "hfjson.h"

#include "fsutil.h"
#include "names.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

dsckpt_status ds_text_check(const char *text, size_t len, const char *what) {
    const char *nul = memchr(text, '\0', len);
    if (nul) return ds_err(DSCKPT_ECORRUPT, "%s: a NUL byte at offset %zu (not a text file)", what, (size_t)(nul - text));
    size_t ok = ds_utf8_valid_prefix((const uint8_t *)text, len, false);
    if (ok != len) return ds_err(DSCKPT_ECORRUPT, "%s: not valid UTF-8 at byte %zu", what, ok);
    return DSCKPT_OK;
}

/* The number tokens of a JSON text, in document order. Outside strings, a number is
 * the only token that starts with '-' or a digit. Python's json module (which the
 * Trainer uses) also writes NaN, Infinity and -Infinity for non-finite floats (a
 * grad_norm of an overflowing fp16 step): these are numbers too, and are blanked
 * to "0" in `t` so that cJSON parses the text; the walk gives the nodes their
 * text and value back. A "\u0000" escape is refused: cJSON would end the string
 * there, so two distinct keys could read as one. */
typedef struct num_tok {
    size_t start, len;
    double nonfinite; /* the value of NaN / Infinity tokens; 0 for plain numbers */
    bool is_nonfinite;
} num_tok;

typedef struct num_tokens {
    num_tok *v;
    size_t n, cap;
} num_tokens;

static dsckpt_status scan_numbers(char *t, size_t len, const char *what, num_tokens *nt) {
    static const struct {
        const char *s;
        size_t n;
        double v;
    } special[] = {{"NaN", 3, NAN}, {"Infinity", 8, INFINITY}, {"-Infinity", 9, -INFINITY}};
    size_t i = 0;
    while (i < len) {
        char ch = t[i];
        if (ch == '"') {
            for (i++; i < len && t[i] != '"'; i++) {
                if (t[i] != '\\') continue;
                if (i + 5 < len && t[i + 1] == 'u' && !memcmp(t + i + 2, "0000", 4))
                    return ds_err(DSCKPT_ECORRUPT, "%s: a \\u0000 escape at byte %zu (refused: it would cut a string)",
                                  what, i);
                i++; /* skip the escaped character */
            }
            i++;
            continue;
        }
        num_tok tok = {.start = i};
        for (size_t k = 0; k < 3 && !tok.len; k++)
            if (len - i >= special[k].n && !memcmp(t + i, special[k].s, special[k].n)) {
                tok.len = special[k].n;
                tok.nonfinite = special[k].v;
                tok.is_nonfinite = true;
                t[i] = '0';
                memset(t + i + 1, ' ', tok.len - 1);
                i += tok.len;
            }
        if (!tok.len && (ch == '-' || (ch >= '0' && ch <= '9'))) {
            while (i < len && (t[i] == '-' || t[i] == '+' || t[i] == '.' || t[i] == 'e' || t[i] == 'E' ||
                               (t[i] >= '0' && t[i] <= '9')))
                i++;
            tok.len = i - tok.start;
        }
        if (!tok.len) {
            i++;
            continue;
        }
        if (nt->n == nt->cap) {
            size_t nc = nt->cap ? 2 * nt->cap : 64;
            num_tok *v = realloc(nt->v, nc * sizeof *v);
            if (!v) return ds_err(DSCKPT_ENOMEM, "out of memory reading %s", what);
            nt->v = v;
            nt->cap = nc;
        }
        nt->v[nt->n++] = tok;
    }
    return DSCKPT_OK;
}

/* Walks the tree in document order: numbers become raw nodes holding their token;
 * objects must not repeat a key. Depth is bounded by cJSON's nesting limit. */
static dsckpt_status walk(cJSON *node, const char *text, const char *what, const num_tokens *nt, size_t *next) {
    if (cJSON_IsNumber(node)) {
        if (*next >= nt->n)
            return ds_err(DSCKPT_EINTERNAL, "%s: more numbers in the parse than number tokens in the text", what);
        const num_tok *tok = &nt->v[(*next)++];
        char *s = strndup(text + tok->start, tok->len);
        if (!s) return ds_err(DSCKPT_ENOMEM, "out of memory reading %s", what);
        node->type = cJSON_Raw;
        node->valuestring = s;
        if (tok->is_nonfinite) node->valuedouble = tok->nonfinite;
        return DSCKPT_OK;
    }
    DS_TRY(ds_json_object_unique(node, DSCKPT_ECORRUPT, what));
    if (cJSON_IsObject(node) || cJSON_IsArray(node))
        for (cJSON *c = node->child; c; c = c->next) DS_TRY(walk(c, text, what, nt, next));
    return DSCKPT_OK;
}

dsckpt_status ds_json_parse_strict(const char *text, size_t len, const char *what, cJSON **out) {
    *out = NULL;
    DS_TRY(ds_text_check(text, len, what));
    char *copy = malloc(len + 1);
    if (!copy) return ds_err(DSCKPT_ENOMEM, "out of memory reading %s", what);
    memcpy(copy, text, len);
    copy[len] = '\0';
    num_tokens nt = {0};
    size_t used = 0;
    cJSON *j = NULL;
    dsckpt_status st = scan_numbers(copy, len, what, &nt);
    const char *end = NULL;
    if (st == DSCKPT_OK && !(j = cJSON_ParseWithLengthOpts(copy, len, &end, false))) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= copy && at <= copy + len ? (size_t)(at - copy) : 0;
        st = ds_err(DSCKPT_ECORRUPT, "%s: not valid JSON (at byte %zu)", what, off);
    }
    if (st == DSCKPT_OK) {
        size_t rest = end ? (size_t)(end - copy) : len;
        while (rest < len && (copy[rest] == ' ' || copy[rest] == '\n' || copy[rest] == '\r' || copy[rest] == '\t'))
            rest++;
        if (rest != len) st = ds_err(DSCKPT_ECORRUPT, "%s: more data after the JSON value (at byte %zu)", what, rest);
    }
    if (st == DSCKPT_OK) st = walk(j, text, what, &nt, &used);
    if (st == DSCKPT_OK && used != nt.n)
        st = ds_err(DSCKPT_ECORRUPT, "%s: NaN or Infinity where JSON allows no number", what);
    free(nt.v);
    free(copy);
    if (st) {
        cJSON_Delete(j);
        return st;
    }
    *out = j;
    return DSCKPT_OK;
}

dsckpt_status ds_json_read_strict(const char *path, size_t max, cJSON **out) {
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    DS_TRY(ds_read_small_file(path, max, &text, &len));
    dsckpt_status st = ds_json_parse_strict(text, len, path, out);
    free(text);
    return st;
}

bool ds_json_number(const cJSON *v, double *out) {
    if (!v || !(cJSON_IsNumber(v) || (cJSON_IsRaw(v) && v->valuestring))) return false;
    *out = v->valuedouble;
    return true;
}

dsckpt_status ds_json_write(const char *path, const cJSON *j) {
    char *text = cJSON_Print(j);
    if (!text) return ds_err(DSCKPT_ENOMEM, "out of memory writing %s", path);
    size_t n = strlen(text);
    char *buf = realloc(text, n + 2);
    if (!buf) {
        free(text);
        return ds_err(DSCKPT_ENOMEM, "out of memory writing %s", path);
    }
    buf[n] = '\n';
    buf[n + 1] = '\0';
    dsckpt_status st = ds_write_file_atomic(path, buf, n + 1);
    free(buf);
    return st;
}
