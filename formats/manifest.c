/*
 * manifest.c — parse and build the native manifest.json (see manifest.h).
 */
#include "manifest.h"

#include "fsutil.h"
#include "names.h"
#include "safetensors.h" /* ST_MAX_OFFSET: the bound on dimensions and element counts */
#include "zchunk.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SAFE_INT ((1ull << 53) - 1) /* JSON numbers are doubles in cJSON */
#define MAX_TENSORS 10000000ull
#define MAX_FILES 1000000ull
#define MAX_ALIASES 1024

static dsckpt_status bad(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static dsckpt_status bad(const char *what, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ds_err(DSCKPT_ECORRUPT, "%s: %s", what, msg);
}

static bool get_u64(const cJSON *it, uint64_t max, uint64_t *out) {
    if (!cJSON_IsNumber(it)) return false;
    double d = it->valuedouble;
    if (!(d >= 0) || d > (double)max || d != floor(d)) return false;
    *out = (uint64_t)d;
    return true;
}

static dsckpt_status field_u64(const cJSON *obj, const char *key, uint64_t max, uint64_t *out, const char *what,
                               const char *ctx) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it) return bad(what, "%s: missing \"%s\"", ctx, key);
    if (!get_u64(it, max, out)) return bad(what, "%s: \"%s\" must be an integer in [0, %llu]", ctx, key,
                                           (unsigned long long)max);
    return DSCKPT_OK;
}

static dsckpt_status field_str(const cJSON *obj, const char *key, const char **out, const char *what, const char *ctx) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsString(it) || !it->valuestring) return bad(what, "%s: \"%s\" must be a string", ctx, key);
    *out = it->valuestring;
    return DSCKPT_OK;
}

static int cmp_strp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Rejects duplicate strings among `names` (n entries); sorts a copy of pointers. */
static dsckpt_status check_unique(char **names, size_t n, const char *what, const char *kind) {
    if (n < 2) return DSCKPT_OK;
    char **tmp = malloc(n * sizeof *tmp);
    if (!tmp) return ds_err(DSCKPT_ENOMEM, "out of memory");
    memcpy(tmp, names, n * sizeof *tmp);
    qsort(tmp, n, sizeof *tmp, cmp_strp);
    dsckpt_status st = DSCKPT_OK;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(tmp[i - 1], tmp[i]) == 0) {
            st = bad(what, "duplicate %s '%s'", kind, tmp[i]);
            break;
        }
    }
    free(tmp);
    return st;
}

static dsckpt_status parse_tensor(const cJSON *jt, size_t i, int ngroups, ds_tensor *t, const char *what) {
    char ctx[64];
    snprintf(ctx, sizeof ctx, "tensors[%zu]", i);
    const char *name = NULL, *dt = NULL;
    DS_TRY(field_str(jt, "name", &name, what, ctx));
    if (!*name) return bad(what, "%s: empty name", ctx);
    t->name = ds_strdup(name);
    if (!t->name) return DSCKPT_ENOMEM;
    DS_TRY(field_str(jt, "dtype", &dt, what, ctx));
    /* Only the safetensors spellings ("BF16"), which are what we write. */
    bool known = false;
    for (int k = 0; k < DSCKPT_DTYPE_COUNT && !known; k++)
        if (!strcmp(dt, dsckpt_dtype_name((dsckpt_dtype)k))) {
            t->dtype = (dsckpt_dtype)k;
            known = true;
        }
    if (!known) return bad(what, "tensor '%s': unknown dtype '%s'", name, dt);
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(jt, "shape");
    if (!cJSON_IsArray(shape)) return bad(what, "tensor '%s': \"shape\" must be an array", name);
    int nd = cJSON_GetArraySize(shape);
    if (nd > ST_MAX_DIMS) return bad(what, "tensor '%s': %d dimensions (at most %d)", name, nd, ST_MAX_DIMS);
    t->ndim = nd;
    t->numel = 1;
    int d = 0;
    for (const cJSON *e = shape->child; e; e = e->next, d++) {
        if (!get_u64(e, ST_MAX_OFFSET, &t->shape[d])) return bad(what, "tensor '%s': bad dimension %d", name, d);
        if (ds_mul_overflow(t->numel, t->shape[d], &t->numel) || t->numel > ST_MAX_OFFSET)
            return bad(what, "tensor '%s': element count overflows", name);
    }
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(jt, "trainable");
    if (!cJSON_IsBool(tr)) return bad(what, "tensor '%s': \"trainable\" must be true or false", name);
    t->trainable = cJSON_IsTrue(tr);
    const cJSON *bf = cJSON_GetObjectItemCaseSensitive(jt, "buffer");
    if (bf && !cJSON_IsBool(bf)) return bad(what, "tensor '%s': \"buffer\" must be true or false", name);
    t->buffer = cJSON_IsTrue(bf);
    if (t->buffer && t->trainable) return bad(what, "tensor '%s': a buffer cannot be trainable", name);
    t->group = -1;
    if (t->trainable) {
        uint64_t g;
        DS_TRY(field_u64(jt, "group", (uint64_t)(ngroups > 0 ? ngroups - 1 : 0), &g, what, name));
        if (ngroups == 0) return bad(what, "tensor '%s' is trainable but the manifest has no groups", name);
        t->group = (int)g;
    }
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(jt, "aliases");
    if (al) {
        if (!cJSON_IsArray(al)) return bad(what, "tensor '%s': \"aliases\" must be an array", name);
        int na = cJSON_GetArraySize(al);
        if (na > MAX_ALIASES) return bad(what, "tensor '%s': too many aliases", name);
        if (na > 0) {
            DS_TRY(ds_calloc((size_t)na, sizeof *t->aliases, &t->aliases));
            for (const cJSON *e = al->child; e; e = e->next) {
                if (!cJSON_IsString(e) || !e->valuestring[0])
                    return bad(what, "tensor '%s': aliases must be non-empty strings", name);
                t->aliases[t->naliases] = ds_strdup(e->valuestring);
                if (!t->aliases[t->naliases]) return DSCKPT_ENOMEM;
                t->naliases++;
            }
        }
    }
    return DSCKPT_OK;
}

/* The chunk list of a compressed file (version 2 or 3): for raw chunk k,
 * [raw_offset, raw_size, stored_offset, stored_size, "zstd"|"raw"|"planes", width, "<sha256 of the stored bytes>"],
 * raw chunks in order, stored chunks back to back from offset 0 up to stored_size;
 * "planes" only in version 3. */
static dsckpt_status parse_zchunks(const cJSON *ch, const char *name, ds_file *f, uint64_t stored_size, uint64_t ver,
                                   const char *what) {
    DS_TRY(ds_calloc(f->dg.nchunks ? f->dg.nchunks : 1, sizeof *f->zc, &f->zc));
    uint64_t spos = 0;
    size_t k = 0;
    for (const cJSON *e = ch->child; e; e = e->next, k++) {
        uint64_t v[4], w;
        const cJSON *x = e->child;
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 7)
            return bad(what, "%s: chunks[%zu] must be [raw_offset, raw_size, stored_offset, stored_size, kind, width, sha256]",
                       name, k);
        for (int j = 0; j < 4; j++, x = x->next)
            if (!get_u64(x, MAX_SAFE_INT, &v[j]))
                return bad(what, "%s: chunks[%zu][%d] must be a non-negative integer", name, k, j);
        int kind = cJSON_IsString(x) ? ds_zchunk_kind_parse(x->valuestring) : -1;
        if (kind < 0) return bad(what, "%s: chunks[%zu]: kind must be \"zstd\", \"planes\" or \"raw\"", name, k);
        if (kind == DS_ZCHUNK_PLANES && ver < DS_MANIFEST_VERSION_PLANES)
            return bad(what, "%s: chunks[%zu]: kind \"planes\" in a version %llu manifest (it needs version %d)", name,
                       k, (unsigned long long)ver, DS_MANIFEST_VERSION_PLANES);
        x = x->next;
        if (!get_u64(x, 8, &w)) return bad(what, "%s: chunks[%zu]: bad shuffle width", name, k);
        x = x->next;
        if (!cJSON_IsString(x) || !ds_unhex32(x->valuestring, f->dg.chunks[k]))
            return bad(what, "%s: chunks[%zu]: digest is not 64 hex digits", name, k);
        uint64_t rb = (uint64_t)k * f->dg.chunk_size, rn = DS_MIN(f->dg.chunk_size, f->size - rb);
        if (v[0] != rb || v[1] != rn)
            return bad(what, "%s: chunks[%zu] covers raw bytes [%llu, +%llu); chunk %zu of %llu-byte chunks is [%llu, +%llu)",
                       name, k, (unsigned long long)v[0], (unsigned long long)v[1], k,
                       (unsigned long long)f->dg.chunk_size, (unsigned long long)rb, (unsigned long long)rn);
        if (v[2] != spos)
            return bad(what, "%s: chunks[%zu] is stored at byte %llu, right after the previous chunk is %llu", name, k,
                       (unsigned long long)v[2], (unsigned long long)spos);
        char cw[300];
        snprintf(cw, sizeof cw, "%s: %s: chunks[%zu]", what, name, k);
        DS_TRY(ds_zchunk_check((ds_zchunk_kind)kind, (int)w, v[3], rn, cw));
        f->zc[k] = (ds_zrec){.off = v[2], .size = v[3], .kind = (uint8_t)kind, .width = (uint8_t)w};
        spos += v[3]; /* each at most its raw size: no overflow */
    }
    if (spos != stored_size)
        return bad(what, "%s: the stored chunks end at byte %llu, but stored_size is %llu", name,
                   (unsigned long long)spos, (unsigned long long)stored_size);
    return DSCKPT_OK;
}

static dsckpt_status parse_file(const cJSON *jf, size_t i, uint64_t ver, ds_manifest *c, ds_file *f,
                                const char *what) {
    char ctx[64];
    snprintf(ctx, sizeof ctx, "files[%zu]", i);
    const char *name = NULL, *sha = NULL;
    DS_TRY(field_str(jf, "name", &name, what, ctx));
    DS_TRY(ds_name_check(name, strlen(name), DSCKPT_ECORRUPT, what, "file name"));
    f->name = ds_strdup(name);
    f->path = ds_join(c->dir, name);
    if (!f->name || !f->path) return DSCKPT_ENOMEM;
    uint64_t rank = 0, size = 0, chunk = 0; /* each set by field_u64 before any use */
    DS_TRY(field_u64(jf, "rank", 1000000, &rank, what, name));
    DS_TRY(field_u64(jf, "size", MAX_SAFE_INT, &size, what, name));
    DS_TRY(field_u64(jf, "chunk_size", MAX_SAFE_INT, &chunk, what, name));
    if (chunk == 0) return bad(what, "%s: chunk_size must be positive", name);
    f->rank = (int)rank;
    f->size = size;
    f->stored_size = size;
    const cJSON *jc = cJSON_GetObjectItemCaseSensitive(jf, "compression");
    if (jc) {
        if (ver < DS_MANIFEST_VERSION_COMPRESSED)
            return bad(what, "%s: \"compression\" in a version %llu manifest (compressed files need version %d)", name,
                       (unsigned long long)ver, DS_MANIFEST_VERSION_COMPRESSED);
        if (!cJSON_IsString(jc) || strcmp(jc->valuestring, "zstd") != 0)
            return ds_err(DSCKPT_EUNSUPPORTED, "%s: %s: compression '%.64s' (this dsckpt reads zstd)", what, name,
                          cJSON_IsString(jc) ? jc->valuestring : "?");
        if (chunk > DS_ZCHUNK_MAX_RAW)
            return bad(what, "%s: chunk_size %llu of a compressed file (at most %llu)", name, (unsigned long long)chunk,
                       (unsigned long long)DS_ZCHUNK_MAX_RAW);
        DS_TRY(field_u64(jf, "stored_size", MAX_SAFE_INT, &f->stored_size, what, name));
        f->compressed = true;
    }
    DS_TRY(field_str(jf, "sha256", &sha, what, name));
    if (!ds_unhex32(sha, f->dg.file)) return bad(what, "%s: \"sha256\" is not 64 hex digits", name);
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(jf, "chunks");
    if (!cJSON_IsArray(ch)) return bad(what, "%s: \"chunks\" must be an array", name);
    uint64_t want = ds_ceil_div(size, chunk);
    if ((uint64_t)cJSON_GetArraySize(ch) != want)
        return bad(what, "%s: %d chunk digests listed, but size %llu / chunk_size %llu needs %llu", name,
                   cJSON_GetArraySize(ch), (unsigned long long)size, (unsigned long long)chunk,
                   (unsigned long long)want);
    f->dg.size = size;
    f->dg.chunk_size = chunk;
    f->dg.nchunks = (size_t)want;
    if (want) DS_TRY(ds_calloc((size_t)want, sizeof *f->dg.chunks, &f->dg.chunks));
    if (f->compressed) {
        DS_TRY(parse_zchunks(ch, name, f, f->stored_size, ver, what));
        f->has_digests = true;
        return DSCKPT_OK;
    }
    size_t k = 0;
    for (const cJSON *e = ch->child; e; e = e->next, k++) {
        if (!cJSON_IsString(e) || !ds_unhex32(e->valuestring, f->dg.chunks[k]))
            return bad(what, "%s: chunk digest %zu is not 64 hex digits", name, k);
    }
    f->has_digests = true;
    return DSCKPT_OK;
}

static dsckpt_status parse_frags(const cJSON *jfr, ds_manifest *c, const char *what) {
    if (!cJSON_IsObject(jfr)) return bad(what, "\"fragments\" must be an object");
    for (const cJSON *js = jfr->child; js; js = js->next) {
        int s = ds_state_parse(js->string);
        if (s < 0) return bad(what, "fragments: unknown state '%s'", js->string);
        if (c->frags[s]) return bad(what, "fragments: state '%s' listed twice", js->string);
        if (!cJSON_IsArray(js)) return bad(what, "fragments.%s must be an array", js->string);
        size_t n = (size_t)cJSON_GetArraySize(js);
        DS_TRY(ds_calloc(n, sizeof *c->frags[s], &c->frags[s]));
        size_t k = 0;
        for (const cJSON *e = js->child; e; e = e->next, k++) {
            uint64_t v[5];
            if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 5)
                return bad(what, "fragments.%s[%zu] must be [tensor, start, numel, file, offset]", js->string, k);
            int j = 0;
            for (const cJSON *x = e->child; x; x = x->next, j++)
                if (!get_u64(x, MAX_SAFE_INT, &v[j]))
                    return bad(what, "fragments.%s[%zu][%d] must be a non-negative integer", js->string, k, j);
            if (v[0] >= c->ntensors) return bad(what, "fragments.%s[%zu]: tensor index %llu out of range",
                                                js->string, k, (unsigned long long)v[0]);
            if (v[3] >= c->nfiles) return bad(what, "fragments.%s[%zu]: file index %llu out of range", js->string,
                                              k, (unsigned long long)v[3]);
            const ds_tensor *t = &c->tensors[v[0]];
            ds_frag *f = &c->frags[s][k];
            *f = (ds_frag){.tensor = (uint32_t)v[0], .file = (uint32_t)v[3], .start = v[1], .numel = v[2],
                           .offset = v[4], .dtype = s == DS_ST_W16 ? t->dtype : DSCKPT_F32};
        }
        c->nfrags[s] = n;
    }
    return DSCKPT_OK;
}

dsckpt_status ds_manifest_parse_model(const cJSON *obj, const char *what, ds_model_info *out) {
    static const char *const keys[] = {"architecture", "n_layer",     "n_head",     "n_embd",
                                       "vocab_size",   "n_positions", "tie_word_embeddings"};
    enum { NKEYS = sizeof keys / sizeof keys[0] };
    if (!cJSON_IsObject(obj)) return bad(what, "\"model\" must be an object");
    ds_model_info m;
    memset(&m, 0, sizeof m);
    uint64_t *ints[] = {NULL, &m.n_layer, &m.n_head, &m.n_embd, &m.vocab_size, &m.n_positions, NULL};
    bool seen[NKEYS] = {false};
    for (const cJSON *it = obj->child; it; it = it->next) {
        int k = -1;
        for (int i = 0; i < NKEYS && k < 0; i++)
            if (it->string && !strcmp(it->string, keys[i])) k = i;
        if (k < 0) return bad(what, "model: unknown key \"%s\"", it->string ? it->string : "");
        if (seen[k]) return bad(what, "model: key \"%s\" appears twice", keys[k]);
        seen[k] = true;
        if (ints[k]) {
            if (!get_u64(it, DS_MODEL_MAX_DIM, ints[k]) || *ints[k] == 0)
                return bad(what, "model: \"%s\" must be an integer in [1, %llu]", keys[k], DS_MODEL_MAX_DIM);
        } else if (k == 0) {
            if (!cJSON_IsString(it) || !it->valuestring) return bad(what, "model: \"architecture\" must be a string");
            if (strcmp(it->valuestring, "gpt2") != 0)
                return ds_err(DSCKPT_EUNSUPPORTED, "%s: model architecture '%.64s' (this dsckpt knows gpt2)", what,
                              it->valuestring);
            snprintf(m.architecture, sizeof m.architecture, "%s", it->valuestring);
        } else {
            if (!cJSON_IsBool(it)) return bad(what, "model: \"tie_word_embeddings\" must be true or false");
            m.tie_word_embeddings = cJSON_IsTrue(it);
        }
    }
    for (int i = 0; i < NKEYS; i++)
        if (!seen[i]) return bad(what, "model: missing \"%s\"", keys[i]);
    if (m.n_embd % m.n_head != 0)
        return bad(what, "model: n_embd = %llu is not a multiple of n_head = %llu", (unsigned long long)m.n_embd,
                   (unsigned long long)m.n_head);
    *out = m;
    return DSCKPT_OK;
}

/* The manifest ends with its own digest: the text is `BODY` with its closing brace
 * replaced by `,"manifest_sha256":"<hex>"}` where <hex> is the SHA-256 of BODY
 * (the compact JSON without that key). Any change to the manifest, even to a value
 * that nothing else cross-checks, fails this. */
#define DIGEST_KEY ",\"manifest_sha256\":\""
#define DIGEST_TAIL (sizeof DIGEST_KEY - 1 + 2 * DS_SHA256_LEN + 2) /* key, hex, '"', '}' */

static dsckpt_status check_self_digest(const char *text, size_t len, const char *what) {
    if (len < DIGEST_TAIL + 2 || memcmp(text + len - DIGEST_TAIL, DIGEST_KEY, sizeof DIGEST_KEY - 1) != 0 ||
        text[len - 2] != '"' || text[len - 1] != '}')
        return bad(what, "the manifest does not end with its \"manifest_sha256\" digest (truncated or edited)");
    uint8_t want[DS_SHA256_LEN], got[DS_SHA256_LEN];
    char hex[2 * DS_SHA256_LEN + 1];
    memcpy(hex, text + len - 2 - 2 * DS_SHA256_LEN, 2 * DS_SHA256_LEN);
    hex[2 * DS_SHA256_LEN] = '\0';
    if (!ds_unhex32(hex, want)) return bad(what, "\"manifest_sha256\" is not 64 hex digits");
    size_t body = len - DIGEST_TAIL; /* the body without its closing brace */
    char *tmp = malloc(body + 1);
    if (!tmp) return ds_err(DSCKPT_ENOMEM, "out of memory");
    memcpy(tmp, text, body);
    tmp[body] = '}';
    dsckpt_status st = ds_sha256(tmp, body + 1, got);
    free(tmp);
    DS_TRY(st);
    if (memcmp(want, got, DS_SHA256_LEN) != 0)
        return ds_err(DSCKPT_ECHECKSUM, "%s: SHA-256 mismatch: the manifest was changed after it was written", what);
    return DSCKPT_OK;
}

dsckpt_status ds_manifest_seal(const char *json, char **out) {
    size_t n = strlen(json);
    if (n < 2 || json[n - 1] != '}') return ds_err(DSCKPT_EINVAL, "ds_manifest_seal: not a JSON object");
    uint8_t dg[DS_SHA256_LEN];
    DS_TRY(ds_sha256(json, n, dg));
    char *o = malloc(n + DIGEST_TAIL);
    if (!o) return ds_err(DSCKPT_ENOMEM, "out of memory sealing a manifest");
    memcpy(o, json, n - 1); /* drop the closing brace */
    memcpy(o + n - 1, DIGEST_KEY, sizeof DIGEST_KEY - 1);
    ds_hex(dg, DS_SHA256_LEN, o + n - 1 + sizeof DIGEST_KEY - 1);
    memcpy(o + n - 1 + sizeof DIGEST_KEY - 1 + 2 * DS_SHA256_LEN, "\"}", 3);
    *out = o;
    return DSCKPT_OK;
}

void ds_manifest_clear(ds_manifest *m) {
    if (!m) return;
    free(m->format);
    free(m->tag);
    free(m->train_dtype);
    for (size_t i = 0; i < m->ntensors; i++) ds_tensor_clear(&m->tensors[i]);
    free(m->tensors);
    for (int s = 0; s < DS_NSTATES; s++) free(m->frags[s]);
    ds_files_free(m->files, m->nfiles);
    cJSON_Delete(m->json);
    const char *dir = m->dir;
    memset(m, 0, sizeof *m);
    m->dir = dir;
}

/* One piece: the manifest's keys, each checked in schema order. */
dsckpt_status ds_manifest_parse(const char *text, size_t len, const char *what, ds_manifest *c) {
    DS_TRY(check_self_digest(text, len, what));
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) return bad(what, "not valid JSON (near byte %td)", cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - text : 0);
    c->json = root;
    if (!cJSON_IsObject(root)) return bad(what, "the manifest must be a JSON object");
    DS_TRY(ds_json_unique_keys(root, DSCKPT_ECORRUPT, what));
    const char *fmt = NULL, *tag = NULL, *tdt = NULL;
    DS_TRY(field_str(root, "format", &fmt, what, "manifest"));
    if (strcmp(fmt, "dsckpt") != 0) return bad(what, "format is '%s', expected 'dsckpt'", fmt);
    uint64_t ver = 0, step = 0, ws = 0, stage = 0, ngroups = 0; /* each set by field_u64 before any use */
    DS_TRY(field_u64(root, "version", 1000, &ver, what, "manifest"));
    if (ver < DS_MANIFEST_VERSION || ver > DS_MANIFEST_VERSION_PLANES)
        return ds_err(DSCKPT_EVERSION, "%s: manifest version %llu; this dsckpt reads versions %d to %d (upgrade dsckpt)",
                      what, (unsigned long long)ver, DS_MANIFEST_VERSION, DS_MANIFEST_VERSION_PLANES);
    DS_TRY(field_str(root, "tag", &tag, what, "manifest"));
    /* The tag names the output directory of reshard and universal: data, not a path. */
    DS_TRY(ds_name_check(tag, strlen(tag), DSCKPT_ECORRUPT, what, "tag"));
    DS_TRY(field_u64(root, "step", MAX_SAFE_INT, &step, what, "manifest"));
    DS_TRY(field_u64(root, "world_size", 1000000, &ws, what, "manifest"));
    DS_TRY(field_u64(root, "zero_stage", 3, &stage, what, "manifest"));
    DS_TRY(field_u64(root, "groups", 4096, &ngroups, what, "manifest"));
    DS_TRY(field_str(root, "train_dtype", &tdt, what, "manifest"));
    if (ws == 0) return bad(what, "world_size must be at least 1");
    if (strcmp(tdt, "bf16") && strcmp(tdt, "fp16") && strcmp(tdt, "fp32"))
        return bad(what, "train_dtype '%s' (expected bf16, fp16 or fp32)", tdt);
    c->format = ds_strdup("dsckpt");
    c->tag = ds_strdup(tag);
    c->train_dtype = ds_strdup(tdt);
    if (!c->format || !c->tag || !c->train_dtype) return DSCKPT_ENOMEM;
    c->step = (int64_t)step;
    c->world_size = (int)ws;
    c->stage = (int)stage;
    c->ngroups = (int)ngroups;

    const cJSON *jt = cJSON_GetObjectItemCaseSensitive(root, "tensors");
    if (!cJSON_IsArray(jt)) return bad(what, "\"tensors\" must be an array");
    size_t nt = (size_t)cJSON_GetArraySize(jt);
    if (nt > MAX_TENSORS) return bad(what, "%zu tensors (at most %llu)", nt, MAX_TENSORS);
    DS_TRY(ds_calloc(nt, sizeof *c->tensors, &c->tensors));
    size_t i = 0;
    for (const cJSON *e = jt->child; e; e = e->next, i++) {
        c->ntensors = i + 1; /* so a failure frees what was parsed */
        if (!cJSON_IsObject(e)) return bad(what, "tensors[%zu] must be an object", i);
        DS_TRY(parse_tensor(e, i, c->ngroups, &c->tensors[i], what));
    }
    c->ntensors = nt;
    /* Names and aliases share one namespace: an output holds both. */
    size_t nnames = nt;
    for (i = 0; i < nt; i++) nnames += c->tensors[i].naliases;
    char **names = malloc((nnames ? nnames : 1) * sizeof *names);
    if (!names) return ds_err(DSCKPT_ENOMEM, "out of memory");
    size_t k = 0;
    for (i = 0; i < nt; i++) {
        names[k++] = c->tensors[i].name;
        for (size_t a = 0; a < c->tensors[i].naliases; a++) names[k++] = c->tensors[i].aliases[a];
    }
    dsckpt_status st = check_unique(names, nnames, what, "tensor name or alias");
    free(names);
    DS_TRY(st);

    const cJSON *jf = cJSON_GetObjectItemCaseSensitive(root, "files");
    if (!cJSON_IsArray(jf)) return bad(what, "\"files\" must be an array");
    size_t nf = (size_t)cJSON_GetArraySize(jf);
    if (nf > MAX_FILES) return bad(what, "too many files");
    DS_TRY(ds_calloc(nf, sizeof *c->files, &c->files));
    i = 0;
    for (const cJSON *e = jf->child; e; e = e->next, i++) {
        c->nfiles = i + 1;
        if (!cJSON_IsObject(e)) return bad(what, "files[%zu] must be an object", i);
        DS_TRY(parse_file(e, i, ver, c, &c->files[i], what));
    }
    c->nfiles = nf;
    char **fnames = malloc((nf ? nf : 1) * sizeof *fnames);
    if (!fnames) return ds_err(DSCKPT_ENOMEM, "out of memory");
    for (i = 0; i < nf; i++) fnames[i] = c->files[i].name;
    st = check_unique(fnames, nf, what, "file");
    free(fnames);
    DS_TRY(st);
    if (nf && strcmp(c->files[0].name, DS_MANIFEST_NAME) == 0) return bad(what, "the manifest lists itself");

    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (jm) {
        DS_TRY(ds_manifest_parse_model(jm, what, &c->model));
        c->has_model = true;
    }

    return parse_frags(cJSON_GetObjectItemCaseSensitive(root, "fragments"), c, what);
}

/* ---- build ---- */

static cJSON *num(uint64_t v) { return cJSON_CreateNumber((double)v); }

cJSON *ds_manifest_model_json(const ds_model_info *m) {
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    ok = ok && cJSON_AddStringToObject(o, "architecture", m->architecture) != NULL;
    ok = ok && cJSON_AddItemToObject(o, "n_layer", num(m->n_layer));
    ok = ok && cJSON_AddItemToObject(o, "n_head", num(m->n_head));
    ok = ok && cJSON_AddItemToObject(o, "n_embd", num(m->n_embd));
    ok = ok && cJSON_AddItemToObject(o, "vocab_size", num(m->vocab_size));
    ok = ok && cJSON_AddItemToObject(o, "n_positions", num(m->n_positions));
    ok = ok && cJSON_AddBoolToObject(o, "tie_word_embeddings", m->tie_word_embeddings) != NULL;
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* One piece: the manifest's keys, written in schema order. */
dsckpt_status ds_manifest_build(const ds_manifest *c, char **json_out) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return ds_err(DSCKPT_ENOMEM, "out of memory building a manifest");
    bool ok = true;
    ok &= cJSON_AddStringToObject(root, "format", "dsckpt") != NULL;
    bool compressed = false, planes = false;
    for (size_t i = 0; i < c->nfiles; i++) {
        const ds_file *f = &c->files[i];
        compressed |= f->compressed;
        for (size_t k = 0; f->compressed && k < f->dg.nchunks; k++) planes |= f->zc[k].kind == DS_ZCHUNK_PLANES;
    }
    /* Version 2 only when a file is compressed, 3 only when a chunk is stored as
     * planes: an uncompressed checkpoint stays byte for byte what version 1
     * writers wrote, and readable by them; one without planes chunks stays
     * readable by version 2 readers, which refuse version 3 as newer. */
    ok &= cJSON_AddItemToObject(root, "version",
                                num(planes       ? DS_MANIFEST_VERSION_PLANES
                                    : compressed ? DS_MANIFEST_VERSION_COMPRESSED
                                                 : DS_MANIFEST_VERSION));
    ok &= cJSON_AddStringToObject(root, "tag", c->tag) != NULL;
    ok &= cJSON_AddItemToObject(root, "step", num((uint64_t)c->step));
    ok &= cJSON_AddItemToObject(root, "world_size", num((uint64_t)c->world_size));
    ok &= cJSON_AddItemToObject(root, "zero_stage", num((uint64_t)c->stage));
    ok &= cJSON_AddStringToObject(root, "train_dtype", c->train_dtype) != NULL;
    ok &= cJSON_AddItemToObject(root, "groups", num((uint64_t)c->ngroups));
    cJSON *jt = cJSON_AddArrayToObject(root, "tensors");
    ok &= jt != NULL;
    for (size_t i = 0; ok && i < c->ntensors; i++) {
        const ds_tensor *t = &c->tensors[i];
        cJSON *o = cJSON_CreateObject(), *sh = cJSON_CreateArray();
        ok &= o && sh && cJSON_AddItemToArray(jt, o);
        if (!ok) {
            cJSON_Delete(o);
            cJSON_Delete(sh);
            break;
        }
        ok &= cJSON_AddStringToObject(o, "name", t->name) != NULL;
        for (int d = 0; d < t->ndim; d++) ok &= cJSON_AddItemToArray(sh, num(t->shape[d]));
        ok &= cJSON_AddItemToObject(o, "shape", sh);
        ok &= cJSON_AddStringToObject(o, "dtype", dsckpt_dtype_name(t->dtype)) != NULL;
        ok &= cJSON_AddBoolToObject(o, "trainable", t->trainable) != NULL;
        if (t->buffer) ok &= cJSON_AddBoolToObject(o, "buffer", true) != NULL;
        if (t->trainable) ok &= cJSON_AddItemToObject(o, "group", num((uint64_t)t->group));
        if (t->naliases) {
            cJSON *al = cJSON_AddArrayToObject(o, "aliases");
            ok &= al != NULL;
            for (size_t a = 0; ok && a < t->naliases; a++)
                ok &= cJSON_AddItemToArray(al, cJSON_CreateString(t->aliases[a]));
        }
    }
    cJSON *jfr = cJSON_AddObjectToObject(root, "fragments");
    ok &= jfr != NULL;
    for (int s = 0; ok && s < DS_NSTATES; s++) {
        if (!c->nfrags[s]) continue;
        cJSON *arr = cJSON_AddArrayToObject(jfr, ds_state_names[s]);
        ok &= arr != NULL;
        for (size_t k = 0; ok && k < c->nfrags[s]; k++) {
            const ds_frag *f = &c->frags[s][k];
            cJSON *e = cJSON_CreateArray();
            ok &= e && cJSON_AddItemToArray(arr, e);
            if (!ok) {
                cJSON_Delete(e);
                break;
            }
            ok &= cJSON_AddItemToArray(e, num(f->tensor));
            ok &= cJSON_AddItemToArray(e, num(f->start));
            ok &= cJSON_AddItemToArray(e, num(f->numel));
            ok &= cJSON_AddItemToArray(e, num(f->file));
            ok &= cJSON_AddItemToArray(e, num(f->offset));
        }
    }
    cJSON *jf = cJSON_AddArrayToObject(root, "files");
    ok &= jf != NULL;
    for (size_t i = 0; ok && i < c->nfiles; i++) {
        const ds_file *f = &c->files[i];
        cJSON *o = cJSON_CreateObject();
        ok &= o && cJSON_AddItemToArray(jf, o);
        if (!ok) {
            cJSON_Delete(o);
            break;
        }
        char hex[2 * DS_SHA256_LEN + 1];
        ok &= cJSON_AddStringToObject(o, "name", f->name) != NULL;
        ok &= cJSON_AddItemToObject(o, "rank", num((uint64_t)f->rank));
        ok &= cJSON_AddItemToObject(o, "size", num(f->size));
        ok &= cJSON_AddItemToObject(o, "chunk_size", num(f->dg.chunk_size));
        if (f->compressed) {
            ok &= cJSON_AddStringToObject(o, "compression", "zstd") != NULL;
            ok &= cJSON_AddItemToObject(o, "stored_size", num(f->stored_size));
        }
        ds_hex(f->dg.file, DS_SHA256_LEN, hex);
        ok &= cJSON_AddStringToObject(o, "sha256", hex) != NULL;
        cJSON *ch = cJSON_AddArrayToObject(o, "chunks");
        ok &= ch != NULL;
        for (size_t k = 0; ok && k < f->dg.nchunks; k++) {
            ds_hex(f->dg.chunks[k], DS_SHA256_LEN, hex);
            if (!f->compressed) {
                ok &= cJSON_AddItemToArray(ch, cJSON_CreateString(hex));
                continue;
            }
            const ds_zrec *z = &f->zc[k];
            uint64_t rb = (uint64_t)k * f->dg.chunk_size;
            cJSON *e = cJSON_CreateArray();
            ok &= e && cJSON_AddItemToArray(ch, e);
            if (!ok) {
                cJSON_Delete(e);
                break;
            }
            ok &= cJSON_AddItemToArray(e, num(rb));
            ok &= cJSON_AddItemToArray(e, num(DS_MIN(f->dg.chunk_size, f->size - rb)));
            ok &= cJSON_AddItemToArray(e, num(z->off));
            ok &= cJSON_AddItemToArray(e, num(z->size));
            ok &= cJSON_AddItemToArray(e, cJSON_CreateString(ds_zchunk_kind_name((ds_zchunk_kind)z->kind)));
            ok &= cJSON_AddItemToArray(e, num(z->width));
            ok &= cJSON_AddItemToArray(e, cJSON_CreateString(hex));
        }
    }
    if (ok && c->has_model) {
        cJSON *m = ds_manifest_model_json(&c->model);
        ok &= m && cJSON_AddItemToObject(root, "model", m);
        if (!ok) cJSON_Delete(m);
    }
    static const char *carried[] = {"state", "ds_config", "metrics"};
    for (size_t i = 0; ok && i < sizeof carried / sizeof carried[0]; i++) {
        const cJSON *src = c->json ? cJSON_GetObjectItemCaseSensitive(c->json, carried[i]) : NULL;
        cJSON *dup = src ? cJSON_Duplicate(src, 1) : cJSON_CreateObject();
        ok &= dup && cJSON_AddItemToObject(root, carried[i], dup);
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) return ds_err(DSCKPT_ENOMEM, "out of memory building a manifest");
    dsckpt_status st = ds_manifest_seal(text, json_out);
    free(text);
    return st;

}
