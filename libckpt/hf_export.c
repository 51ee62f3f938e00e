/*
 * hf_export.c — the Hugging Face files that go with consolidated weights and with
 * a resharded Trainer checkpoint (rules in hf_export.h).
 */
#include "hf_export.h"

#include "fsutil.h"
#include "hfjson.h"
#include "pickle.h"
#include "resolve.h"
#include "zip.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MODEL_JSON_MAX (16u << 20)     /* config.json, generation_config.json */
#define TOKENIZER_MAX (1024u << 20)    /* tokenizer.json of a large vocabulary */
#define TORCH_SMALL_MAX (64u << 20)    /* scheduler.pt, rng_state_*.pth, training_args.bin */

/* Tokenizer files copied after validation; json = parsed strictly, else UTF-8 text. */
static const struct {
    const char *name;
    bool json;
} tokenizer_files[] = {
    {"tokenizer.json", true},          {"tokenizer_config.json", true}, {"special_tokens_map.json", true},
    {"added_tokens.json", true},       {"vocab.json", true},            {"merges.txt", false},
    {"chat_template.jinja", false},
};

char *ds_hf_source_dir(const dsckpt_ckpt *c) { return c->root ? ds_strdup(c->root) : ds_dirname(c->dir); }

static const char *torch_dtype_name(dsckpt_dtype t) {
    return t == DSCKPT_BF16 ? "bfloat16" : t == DSCKPT_F16 ? "float16" : "float32";
}

/* src/name -> tmpdir/name, validated as a text or JSON file. Absent: nothing. */
static dsckpt_status copy_validated(const char *src, const char *tmpdir, const char *name, bool json, size_t max) {
    char *sp = ds_join(src, name), *dp = ds_join(tmpdir, name), *text = NULL;
    dsckpt_status st = sp && dp ? DSCKPT_OK : DSCKPT_ENOMEM;
    size_t len = 0;
    if (st == DSCKPT_OK && ds_exists(sp)) {
        st = ds_read_small_file(sp, max, &text, &len);
        cJSON *j = NULL;
        if (st == DSCKPT_OK) st = json ? ds_json_parse_strict(text, len, sp, &j) : ds_text_check(text, len, sp);
        cJSON_Delete(j);
        if (st == DSCKPT_OK) st = ds_write_file_atomic(dp, text, len);
    }
    free(text);
    free(sp);
    free(dp);
    return st;
}

/* src/name -> tmpdir/name, a JSON object read strictly. `edit` (may be NULL)
 * changes the tree and says whether it did: a changed tree is re-emitted through
 * cJSON (numbers as written), an unchanged file is copied byte for byte, so a
 * reshard round trip keeps the file identical. */
typedef dsckpt_status (*json_edit_fn)(cJSON *j, const char *what, void *user, bool *changed);

static dsckpt_status carry_json(const char *src, const char *tmpdir, const char *name, size_t max, json_edit_fn edit,
                                void *user) {
    char *sp = ds_join(src, name), *dp = ds_join(tmpdir, name), *text = NULL;
    dsckpt_status st = sp && dp ? DSCKPT_OK : DSCKPT_ENOMEM;
    size_t len = 0;
    if (st == DSCKPT_OK && ds_exists(sp)) {
        cJSON *j = NULL;
        bool changed = false;
        st = ds_read_small_file(sp, max, &text, &len);
        if (st == DSCKPT_OK) st = ds_json_parse_strict(text, len, sp, &j);
        if (st == DSCKPT_OK && !cJSON_IsObject(j)) st = ds_err(DSCKPT_ECORRUPT, "%s: not a JSON object", sp);
        if (st == DSCKPT_OK && edit) st = edit(j, sp, user, &changed);
        if (st == DSCKPT_OK) st = changed ? ds_json_write(dp, j) : ds_write_file_atomic(dp, text, len);
        cJSON_Delete(j);
    }
    free(text);
    free(sp);
    free(dp);
    return st;
}

/* config.json of consolidated weights: the dtype keys name the weights' dtype. */
static dsckpt_status set_dtype(cJSON *j, const char *what, void *user, bool *changed) {
    const char *name = torch_dtype_name(*(const dsckpt_dtype *)user);
    static const char *keys[] = {"dtype", "torch_dtype"};
    for (size_t k = 0; k < 2; k++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[k]);
        if (!v || cJSON_IsNull(v)) continue;
        if (!cJSON_IsString(v)) return ds_err(DSCKPT_ECORRUPT, "%s: \"%s\" is not a string", what, keys[k]);
        if (!strcmp(v->valuestring, name)) continue;
        *changed = true;
        cJSON *s = cJSON_CreateString(name);
        if (!s || !cJSON_ReplaceItemInObjectCaseSensitive(j, keys[k], s)) {
            cJSON_Delete(s);
            return ds_err(DSCKPT_ENOMEM, "out of memory");
        }
    }
    return DSCKPT_OK;
}

/* ---- GPT-2 config.json for a dstrain checkpoint ---- */

/* The tensors must be exactly GPT2LMHeadModel's state dict (Conv1D weights as
 * [in, out]), lm_head.weight tied to transformer.wte.weight or (untied) its own. */
static dsckpt_status check_gpt2_tensors(const dsckpt_ckpt *c, const ds_model_info *m) {
    uint64_t L = m->n_layer, C = m->n_embd, V = m->vocab_size, P = m->n_positions;
    size_t want = 2 + 12 * (size_t)L + 2 + (m->tie_word_embeddings ? 0 : 1);
    if (L > 100000) return ds_err(DSCKPT_EUNSUPPORTED, "%s: n_layer %llu is too large to check", c->dir, (unsigned long long)L);
    if (c->ntensors != want)
        return ds_err(DSCKPT_ECORRUPT, "%s: the manifest's \"model\" (GPT-2, %llu layers) needs %zu tensors, the checkpoint has %zu",
                      c->dir, (unsigned long long)L, want, c->ntensors);
    static const struct {
        const char *suffix;
        uint64_t d0, d1; /* multiples of C; d1 == 0: 1-D */
    } blk[12] = {
        {"ln_1.weight", 1, 0},        {"ln_1.bias", 1, 0},          {"attn.c_attn.weight", 1, 3}, {"attn.c_attn.bias", 3, 0},
        {"attn.c_proj.weight", 1, 1}, {"attn.c_proj.bias", 1, 0},   {"ln_2.weight", 1, 0},        {"ln_2.bias", 1, 0},
        {"mlp.c_fc.weight", 1, 4},    {"mlp.c_fc.bias", 4, 0},      {"mlp.c_proj.weight", 4, 1},  {"mlp.c_proj.bias", 1, 0},
    };
    for (size_t k = 0; k < want; k++) {
        char name[96];
        uint64_t d0, d1;
        if (k == 0) snprintf(name, sizeof name, "transformer.wte.weight"), d0 = V, d1 = C;
        else if (k == 1) snprintf(name, sizeof name, "transformer.wpe.weight"), d0 = P, d1 = C;
        else if (k < 2 + 12 * L) {
            size_t i = (k - 2) / 12, j = (k - 2) % 12;
            snprintf(name, sizeof name, "transformer.h.%zu.%s", i, blk[j].suffix);
            d0 = blk[j].d0 * C;
            d1 = blk[j].d1 * C;
        } else if (k == 2 + 12 * L) snprintf(name, sizeof name, "transformer.ln_f.weight"), d0 = C, d1 = 0;
        else if (k == 3 + 12 * L) snprintf(name, sizeof name, "transformer.ln_f.bias"), d0 = C, d1 = 0;
        else snprintf(name, sizeof name, "lm_head.weight"), d0 = V, d1 = C;
        const ds_tensor *t = NULL;
        for (size_t i = 0; i < c->ntensors && !t; i++)
            if (!strcmp(c->tensors[i].name, name)) t = &c->tensors[i];
        if (!t)
            return ds_err(DSCKPT_ECORRUPT, "%s: the manifest's \"model\" is GPT-2 but there is no tensor '%s'", c->dir, name);
        int nd = d1 ? 2 : 1;
        if (t->ndim != nd || t->shape[0] != d0 || (nd == 2 && t->shape[1] != d1))
            return ds_err(DSCKPT_ECORRUPT, "%s: tensor '%s' does not have the shape the manifest's \"model\" gives", c->dir, name);
        for (size_t a = 0; a < t->naliases; a++)
            if (!(k == 0 && m->tie_word_embeddings && !strcmp(t->aliases[a], "lm_head.weight")))
                return ds_err(DSCKPT_ECORRUPT, "%s: tensor '%s' has an alias '%s' GPT2LMHeadModel does not have", c->dir,
                              name, t->aliases[a]);
    }
    return DSCKPT_OK;
}

static dsckpt_status write_gpt2_config(const dsckpt_ckpt *c, const ds_model_info *m, const char *tmpdir,
                                       dsckpt_dtype dtype) {
    DS_TRY(check_gpt2_tensors(c, m));
    cJSON *j = cJSON_CreateObject(), *arch = cJSON_CreateArray();
    bool ok = j && arch && cJSON_AddItemToObject(j, "architectures", arch);
    if (!ok) cJSON_Delete(arch);
    ok = ok && cJSON_AddItemToArray(arch, cJSON_CreateString("GPT2LMHeadModel"));
    ok = ok && cJSON_AddStringToObject(j, "model_type", "gpt2");
    /* Sizes from the manifest; numerics dstrain trains with (runtime/model.h). */
    ok = ok && cJSON_AddNumberToObject(j, "n_layer", (double)m->n_layer);
    ok = ok && cJSON_AddNumberToObject(j, "n_head", (double)m->n_head);
    ok = ok && cJSON_AddNumberToObject(j, "n_embd", (double)m->n_embd);
    ok = ok && cJSON_AddNumberToObject(j, "vocab_size", (double)m->vocab_size);
    ok = ok && cJSON_AddNumberToObject(j, "n_positions", (double)m->n_positions);
    ok = ok && cJSON_AddNumberToObject(j, "n_ctx", (double)m->n_positions);
    ok = ok && cJSON_AddNullToObject(j, "n_inner");
    ok = ok && cJSON_AddStringToObject(j, "activation_function", "gelu_new");
    ok = ok && cJSON_AddRawToObject(j, "layer_norm_epsilon", "1e-05");
    ok = ok && cJSON_AddRawToObject(j, "attn_pdrop", "0.0");
    ok = ok && cJSON_AddRawToObject(j, "embd_pdrop", "0.0");
    ok = ok && cJSON_AddRawToObject(j, "resid_pdrop", "0.0");
    ok = ok && cJSON_AddTrueToObject(j, "scale_attn_weights");
    ok = ok && cJSON_AddFalseToObject(j, "scale_attn_by_inverse_layer_idx");
    ok = ok && cJSON_AddFalseToObject(j, "reorder_and_upcast_attn");
    ok = ok && cJSON_AddBoolToObject(j, "tie_word_embeddings", m->tie_word_embeddings);
    ok = ok && cJSON_AddStringToObject(j, "torch_dtype", torch_dtype_name(dtype));
    char *p = ok ? ds_join(tmpdir, "config.json") : NULL;
    dsckpt_status st = !ok ? ds_err(DSCKPT_ENOMEM, "out of memory") : p ? ds_json_write(p, j) : DSCKPT_ENOMEM;
    free(p);
    cJSON_Delete(j);
    return st;
}

dsckpt_status ds_hf_export_files(const dsckpt_ckpt *c, const char *tmpdir, dsckpt_dtype dtype) {
    char *src = ds_hf_source_dir(c);
    if (!src) return DSCKPT_ENOMEM;
    dsckpt_status st = DSCKPT_OK;
    const ds_model_info *m = ds_ckpt_model(c);
    if (m && !strcmp(m->architecture, "gpt2")) st = write_gpt2_config(c, m, tmpdir, dtype);
    else if (m) st = ds_err(DSCKPT_EUNSUPPORTED, "%s: model architecture '%s': no config.json is written for it", c->dir,
                            m->architecture);
    else st = carry_json(src, tmpdir, "config.json", MODEL_JSON_MAX, set_dtype, &dtype);
    if (st == DSCKPT_OK) st = carry_json(src, tmpdir, "generation_config.json", MODEL_JSON_MAX, NULL, NULL);
    for (size_t i = 0; st == DSCKPT_OK && i < sizeof tokenizer_files / sizeof tokenizer_files[0]; i++)
        st = copy_validated(src, tmpdir, tokenizer_files[i].name, tokenizer_files[i].json, TOKENIZER_MAX);
    free(src);
    return st;
}

/* ---- torch pickles of the Trainer ---- */

typedef struct plain_walk {
    size_t visits;
    const pk_obj *bad;
} plain_walk;

/* Plain values only. The object graph may share nodes (memo), so the work is
 * bounded by a visit budget rather than trusted to be a tree. */
static bool plain(const pk_obj *o, plain_walk *w) {
    if (!o) return true;
    if (++w->visits > (1u << 22)) {
        w->bad = o;
        return false;
    }
    switch (o->kind) {
    case PK_NONE: case PK_BOOL: case PK_INT: case PK_BIGINT: case PK_FLOAT: case PK_STR: case PK_BYTES:
    case PK_DTYPE: case PK_SIZE: case PK_TENSOR:
        return true;
    case PK_TUPLE: case PK_LIST: case PK_SET: case PK_DICT:
        for (size_t i = 0; i < o->n; i++)
            if ((o->kind == PK_DICT && !plain(o->keys[i], w)) || !plain(o->items[i], w)) return false;
        return o->kind != PK_DICT || !o->state || plain(o->state, w);
    default:
        w->bad = o;
        return false;
    }
}

dsckpt_status ds_torch_plain_check(const char *path) {
    int fd = -1;
    uint64_t size = 0;
    zip_archive *z = NULL;
    uint8_t *pkl = NULL;
    pk_doc *doc = NULL;
    pk_obj *root = NULL;
    dsckpt_status st = ds_open_read(path, &fd, &size);
    if (st) return st;
    uint8_t magic[4] = {0};
    if (size < 4 || (st = ds_pread_full(fd, magic, 4, 0, path)) != DSCKPT_OK || memcmp(magic, "PK\x03\x04", 4)) {
        if (st == DSCKPT_OK) st = ds_err(DSCKPT_EUNSUPPORTED, "%s: not a torch.save zip file", path);
        goto done;
    }
    DS_TRYGOTO(zip_open_fd(fd, path, &z), done);
    for (size_t i = 0; i < z->n; i++) DS_TRYGOTO(zip_check_crc(fd, z, i, path), done);
    const zip_member *m = zip_find_rel(z, "data.pkl");
    if (!m) {
        st = ds_err(DSCKPT_ECORRUPT, "%s: no data.pkl member: not a torch.save file", path);
        goto done;
    }
    DS_TRYGOTO(zip_read_member(fd, z, m, TORCH_SMALL_MAX, path, &pkl), done);
    DS_TRYGOTO(pk_parse(pkl, (size_t)m->size, path, NULL, &doc, &root), done);
    plain_walk w = {0};
    if (!plain(root, &w)) {
        const pk_obj *b = w.bad;
        if (w.visits > (1u << 22))
            st = ds_err(DSCKPT_EUNSUPPORTED, "%s: too many shared objects to check", path);
        else
            st = ds_err(DSCKPT_EUNSUPPORTED, "%s: holds a pickled %s %s%s%s (only plain values are carried)", path,
                        pk_kind_name(b->kind), b->module ? b->module : "", b->module && b->name ? "." : "",
                        b->name ? b->name : "");
    }
done:
    pk_doc_free(doc);
    free(pkl);
    zip_free(z);
    if (fd >= 0) close(fd);
    return st;
}

/* ---- reshard of a Trainer checkpoint ---- */

typedef struct best_edit {
    const char *src_base; /* the source checkpoint folder's name */
    const char *out;      /* the new location, as the caller gave it */
    bool hf;
} best_edit;

/* best_model_checkpoint -> the corresponding path at the new location. */
static dsckpt_status rewrite_best(cJSON *j, const char *what, void *user, bool *changed) {
    const best_edit *e = user;
    cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "best_model_checkpoint");
    if (!b || cJSON_IsNull(b)) return DSCKPT_OK;
    if (!cJSON_IsString(b)) return ds_err(DSCKPT_ECORRUPT, "%s: best_model_checkpoint is not a string", what);
    char *comp = NULL, *nv = NULL;
    DS_TRY(ds_best_component(b->valuestring, what, &comp));
    if (!e->hf) { /* a dsckpt save root: a tag, which reshard keeps */
        free(comp);
        return DSCKPT_OK;
    }
    dsckpt_status st = DSCKPT_OK;
    if (!ds_hf_checkpoint_name(comp, NULL)) {
        st = ds_err(DSCKPT_ECORRUPT, "%s: best_model_checkpoint '%.200s' does not name a checkpoint-N folder", what,
                    b->valuestring);
        free(comp);
        return st;
    }
    size_t n = strlen(e->out);
    while (n > 1 && e->out[n - 1] == '/') n--;
    if (!strcmp(comp, e->src_base)) {
        nv = strndup(e->out, n);
    } else {
        size_t s = n;
        while (s > 0 && e->out[s - 1] != '/') s--;
        if (s == 0) nv = ds_strdup(comp);
        else if (asprintf(&nv, "%.*s%s", (int)s, e->out, comp) < 0) nv = NULL;
    }
    free(comp);
    if (nv && !strcmp(nv, b->valuestring)) { /* already there */
        free(nv);
        return DSCKPT_OK;
    }
    *changed = true;
    cJSON *v = nv ? cJSON_CreateString(nv) : NULL;
    free(nv);
    if (!v || !cJSON_ReplaceItemInObjectCaseSensitive(j, "best_model_checkpoint", v)) {
        cJSON_Delete(v);
        return ds_err(DSCKPT_ENOMEM, "out of memory");
    }
    return DSCKPT_OK;
}

/* A Trainer pickle: carried when plain; `needed` ones are refused otherwise,
 * the others left out. Damage is an error either way. */
static dsckpt_status carry_pickle(const char *src, const char *tmpdir, const char *name, bool needed) {
    char *sp = ds_join(src, name), *dp = ds_join(tmpdir, name), *data = NULL;
    dsckpt_status st = sp && dp ? DSCKPT_OK : DSCKPT_ENOMEM;
    size_t len = 0;
    if (st == DSCKPT_OK && ds_exists(sp)) {
        st = ds_torch_plain_check(sp);
        if (st == DSCKPT_EUNSUPPORTED && !needed) {
            st = DSCKPT_OK; /* left out: the Trainer resumes without it */
        } else if (st == DSCKPT_EUNSUPPORTED) {
            ds_err_prefix(st, "cannot carry the Trainer's %s (a resumed Trainer needs it)", name);
        } else if (st == DSCKPT_OK) {
            st = ds_read_small_file(sp, TORCH_SMALL_MAX, &data, &len);
            if (st == DSCKPT_OK) st = ds_write_file_atomic(dp, data, len);
        }
    }
    free(data);
    free(sp);
    free(dp);
    return st;
}

static bool is_rng_state(const char *name) {
    size_t n = strlen(name);
    return !strncmp(name, "rng_state", 9) && n >= 13 && !strcmp(name + n - 4, ".pth");
}

dsckpt_status ds_hf_reshard_carry(const dsckpt_ckpt *c, const char *tmpdir, const char *out) {
    if (!c->root) return DSCKPT_OK;
    char *base = ds_basename(c->root);
    if (!base) return DSCKPT_ENOMEM;
    best_edit e = {.src_base = base, .out = out, .hf = ds_hf_checkpoint_name(base, NULL)};
    dsckpt_status st = carry_json(c->root, tmpdir, "trainer_state.json", DS_TRAINER_STATE_MAX, rewrite_best, &e);
    if (st == DSCKPT_OK && e.hf) {
        st = carry_json(c->root, tmpdir, "config.json", MODEL_JSON_MAX, NULL, NULL);
        if (st == DSCKPT_OK) st = carry_json(c->root, tmpdir, "generation_config.json", MODEL_JSON_MAX, NULL, NULL);
        for (size_t i = 0; st == DSCKPT_OK && i < sizeof tokenizer_files / sizeof tokenizer_files[0]; i++)
            st = copy_validated(c->root, tmpdir, tokenizer_files[i].name, tokenizer_files[i].json, TOKENIZER_MAX);
        if (st == DSCKPT_OK) st = carry_pickle(c->root, tmpdir, "scheduler.pt", true);
        if (st == DSCKPT_OK) st = carry_pickle(c->root, tmpdir, "training_args.bin", false);
        DIR *d = st == DSCKPT_OK ? opendir(c->root) : NULL;
        struct dirent *de;
        while (d && st == DSCKPT_OK && (de = readdir(d)))
            if (ds_safe_name(de->d_name) && is_rng_state(de->d_name))
                st = carry_pickle(c->root, tmpdir, de->d_name, false);
        if (d) closedir(d);
    }
    free(base);
    return st;
}
