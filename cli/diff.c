/*
 * diff.c — `dsckpt diff A B`: what differs between two checkpoints, or a
 * checkpoint and a .safetensors file: tensors added, removed, reshaped or of
 * another dtype; per tensor state the count of differing elements and the
 * largest absolute and relative difference; and the non-tensor state (step,
 * optimizer hyper-parameters, loss scale, scheduler, ds_config, metrics).
 *
 * Built on the library's tensor calls (dsckpt_source_open, dsckpt_tensor_*,
 * dsckpt_read_tensor): values are streamed in slices of SLICE elements, so
 * memory stays flat whatever the model size.
 */
#include "cli.h"
#include "progress.h"

#include <cjson/cJSON.h>

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLICE ((uint64_t)1 << 16) /* elements per read of each side (512 KiB as F64) */
#define DSCKPT_MIN_U64(a, b) ((a) < (b) ? (a) : (b))
#define DS_CLI_TRY(expr)                        \
    do {                                        \
        dsckpt_status try_st_ = (expr);         \
        if (try_st_ != DSCKPT_OK) return try_st_; \
    } while (0)

static const char diff_help[] =
    "Usage: dsckpt diff A B [options]\n"
    "\n"
    "Compare two checkpoints (save roots, tag directories, Hugging Face folders) or\n"
    "a checkpoint and a .safetensors file (or two files). Reports tensors only in A\n"
    "(removed) or only in B (added), tensors whose shape or stored dtype differ, and\n"
    "for every state both have (fp32, exp_avg, exp_avg_sq, w16; with a .safetensors\n"
    "file: the weights, i.e. fp32 master or w16) the number of elements that differ\n"
    "and the largest absolute and relative difference (in weights mode a dtype\n"
    "change is listed, the values decide). Then the non-tensor state:\n"
    "step, train dtype, optimizer and scheduler state, loss scaler, ds_config keys,\n"
    "metrics. World size, ZeRO stage, format and tag are shown but are layout, not\n"
    "differences: a checkpoint and its reshard compare equal.\n"
    "Elements a and b differ when |a - b| > atol + rtol * |b| (NaN equals NaN).\n"
    "Tensors are read in slices: memory stays flat (a few MiB) for any size.\n"
    "\n"
    "Options:\n"
    "  -t, --tag TAG        tag of A (default: latest)\n"
    "      --tag-b TAG      tag of B (default: latest)\n"
    "      --atol X         absolute tolerance (default 0: exact)\n"
    "      --rtol X         relative tolerance (default 0)\n"
    "      --max-list N     differing tensors listed in the text output (default 20)\n"
    "      --no-verify      do not check digests / CRC-32 of what is read\n"
    "      --json           the comparison as JSON on stdout\n"
    "  -q, --quiet          no progress bar and no text: only the exit code\n"
    "  -h, --help           this help\n"
    "\n"
    "Exit: 0 equal (within tolerance), 1 different (or corrupt input), 2 unreadable,\n"
    "3 usage.\n";

typedef struct side {
    const char *path;
    dsckpt_ckpt *c;
    dsckpt_reader *r;
    dsckpt_info info;
    bool weights_only; /* a .safetensors file */
} side;

typedef struct cmp_stat {
    uint64_t differing, numel;
    double max_abs, max_rel;
} cmp_stat;

typedef struct diff_ctx {
    side a, b;
    double atol, rtol;
    bool weights_mode;
    double *va, *vb;
    cli_progress *prog;
    uint64_t done_bytes, total_bytes;
    cJSON *tensors_differ, *added, *removed, *reshaped, *dtypes, *kinds, *nontensor;
    uint64_t compared, differences;
} diff_ctx;

static void compare_values(const double *a, const double *b, size_t n, double atol, double rtol, cmp_stat *s) {
    for (size_t i = 0; i < n; i++) {
        double x = a[i], y = b[i];
        if (isnan(x) || isnan(y)) {
            if (!(isnan(x) && isnan(y))) {
                s->differing++;
                s->max_abs = INFINITY;
                s->max_rel = INFINITY;
            }
            continue;
        }
        if (x == y) continue; /* equal infinities too */
        double d = fabs(x - y);
        double rel = y != 0 ? d / fabs(y) : INFINITY;
        if (isnan(d)) d = INFINITY; /* inf - inf of opposite signs cannot happen here; keep it safe */
        if (d > s->max_abs) s->max_abs = d;
        if (rel > s->max_rel) s->max_rel = rel;
        if (!(d <= atol + rtol * fabs(y))) s->differing++;
    }
}

static cJSON *shape_json(const dsckpt_tensor_info *t) {
    cJSON *a = cJSON_CreateArray();
    for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)t->shape[d]));
    return a;
}

static bool same_shape(const dsckpt_tensor_info *x, const dsckpt_tensor_info *y) {
    if (x->ndim != y->ndim) return false;
    for (int d = 0; d < x->ndim; d++)
        if (x->shape[d] != y->shape[d]) return false;
    return true;
}

/* Compares state sa of tensor ia (A) with state sb of tensor ib (B). */
static dsckpt_status compare_state(diff_ctx *x, size_t ia, dsckpt_state sa, size_t ib, dsckpt_state sb,
                                   const dsckpt_tensor_info *ta, cmp_stat *s) {
    memset(s, 0, sizeof *s);
    s->numel = ta->numel;
    dsckpt_dtype da;
    dsckpt_tensor_state_dtype(x->a.c, ia, sa, &da);
    for (uint64_t off = 0; off < ta->numel; off += SLICE) {
        uint64_t n = DSCKPT_MIN_U64(SLICE, ta->numel - off);
        dsckpt_status st = dsckpt_read_tensor(x->a.r, ia, sa, off, n, DSCKPT_F64, x->va, SLICE * sizeof(double));
        if (st == DSCKPT_OK) st = dsckpt_read_tensor(x->b.r, ib, sb, off, n, DSCKPT_F64, x->vb, SLICE * sizeof(double));
        if (st) return st;
        compare_values(x->va, x->vb, (size_t)n, x->atol, x->rtol, s);
        x->done_bytes += n * dsckpt_dtype_size(da);
        if (x->prog) cli_progress_cb(x->prog, x->done_bytes, x->total_bytes);
    }
    return DSCKPT_OK;
}

static void note_state(diff_ctx *x, const char *name, const char *state, const cmp_stat *s) {
    x->compared++;
    if (!s->differing) return;
    x->differences++;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "name", name);
    cJSON_AddStringToObject(e, "state", state);
    cJSON_AddNumberToObject(e, "numel", (double)s->numel);
    cJSON_AddNumberToObject(e, "differing", (double)s->differing);
    /* JSON has no infinity: a NaN against a number is reported as null. */
    if (isfinite(s->max_abs)) cJSON_AddNumberToObject(e, "max_abs", s->max_abs);
    else cJSON_AddNullToObject(e, "max_abs");
    if (isfinite(s->max_rel)) cJSON_AddNumberToObject(e, "max_rel", s->max_rel);
    else cJSON_AddNullToObject(e, "max_rel");
    cJSON_AddItemToArray(x->tensors_differ, e);
}

/* Compares tensor ia of A with tensor ib of B. */
static dsckpt_status compare_tensor(diff_ctx *x, size_t ia, size_t ib) {
    dsckpt_tensor_info ta, tb;
    DS_CLI_TRY(dsckpt_tensor_get(x->a.c, ia, &ta));
    DS_CLI_TRY(dsckpt_tensor_get(x->b.c, ib, &tb));
    if (!same_shape(&ta, &tb)) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", ta.name);
        cJSON_AddItemToObject(e, "shape_a", shape_json(&ta));
        cJSON_AddItemToObject(e, "shape_b", shape_json(&tb));
        cJSON_AddItemToArray(x->reshaped, e);
        x->differences++;
        return DSCKPT_OK;
    }
    if (x->weights_mode) {
        dsckpt_dtype da, db;
        dsckpt_tensor_state_dtype(x->a.c, ia, ta.weight_state, &da);
        dsckpt_tensor_state_dtype(x->b.c, ib, tb.weight_state, &db);
        if (da != db) {
            /* Exported weights are often in another dtype than the checkpoint's
             * master copy: listed, but the values (and the tolerances) decide. */
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", ta.name);
            cJSON_AddStringToObject(e, "state", "weights");
            cJSON_AddStringToObject(e, "a", dsckpt_dtype_name(da));
            cJSON_AddStringToObject(e, "b", dsckpt_dtype_name(db));
            cJSON_AddItemToArray(x->dtypes, e);
        }
        cmp_stat s;
        DS_CLI_TRY(compare_state(x, ia, ta.weight_state, ib, tb.weight_state, &ta, &s));
        note_state(x, ta.name, "weights", &s);
        return DSCKPT_OK;
    }
    if (ta.trainable != tb.trainable) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", ta.name);
        cJSON_AddStringToObject(e, "a", ta.trainable ? "trainable" : "frozen");
        cJSON_AddStringToObject(e, "b", tb.trainable ? "trainable" : "frozen");
        cJSON_AddItemToArray(x->kinds, e);
        x->differences++;
        /* Still compare the weights. */
        cmp_stat s;
        DS_CLI_TRY(compare_state(x, ia, ta.weight_state, ib, tb.weight_state, &ta, &s));
        note_state(x, ta.name, "weights", &s);
        return DSCKPT_OK;
    }
    for (int k = 0; k < DSCKPT_STATE_COUNT; k++) {
        if (!(ta.states & tb.states & (1u << k))) continue;
        dsckpt_dtype da, db;
        dsckpt_tensor_state_dtype(x->a.c, ia, (dsckpt_state)k, &da);
        dsckpt_tensor_state_dtype(x->b.c, ib, (dsckpt_state)k, &db);
        if (da != db) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", ta.name);
            cJSON_AddStringToObject(e, "state", dsckpt_state_name((dsckpt_state)k));
            cJSON_AddStringToObject(e, "a", dsckpt_dtype_name(da));
            cJSON_AddStringToObject(e, "b", dsckpt_dtype_name(db));
            cJSON_AddItemToArray(x->dtypes, e);
            x->differences++;
        }
        cmp_stat s;
        DS_CLI_TRY(compare_state(x, ia, (dsckpt_state)k, ib, (dsckpt_state)k, &ta, &s));
        note_state(x, ta.name, dsckpt_state_name((dsckpt_state)k), &s);
    }
    return DSCKPT_OK;
}

/* ---- non-tensor state: flattened key paths ---- */

static bool json_equal(const cJSON *a, const cJSON *b) { return cJSON_Compare(a, b, 1); }

static void flat_diff(diff_ctx *x, const char *key, const cJSON *a, const cJSON *b) {
    if (cJSON_IsObject(a) && cJSON_IsObject(b)) {
        for (const cJSON *e = a->child; e; e = e->next) {
            char k[512];
            snprintf(k, sizeof k, "%s%s%s", key, *key ? "." : "", e->string ? e->string : "");
            flat_diff(x, k, e, cJSON_GetObjectItemCaseSensitive(b, e->string));
        }
        for (const cJSON *e = b->child; e; e = e->next)
            if (!cJSON_GetObjectItemCaseSensitive(a, e->string)) {
                char k[512];
                snprintf(k, sizeof k, "%s%s%s", key, *key ? "." : "", e->string ? e->string : "");
                flat_diff(x, k, NULL, e);
            }
        return;
    }
    if (cJSON_IsArray(a) && cJSON_IsArray(b) && cJSON_GetArraySize(a) == cJSON_GetArraySize(b)) {
        int i = 0;
        for (const cJSON *ea = a->child, *eb = b->child; ea && eb; ea = ea->next, eb = eb->next, i++) {
            char k[512];
            snprintf(k, sizeof k, "%s[%d]", key, i);
            flat_diff(x, k, ea, eb);
        }
        return;
    }
    if (a && b && json_equal(a, b)) return;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "key", key);
    cJSON_AddItemToObject(e, "a", a ? cJSON_Duplicate(a, 1) : cJSON_CreateNull());
    cJSON_AddItemToObject(e, "b", b ? cJSON_Duplicate(b, 1) : cJSON_CreateNull());
    if (!a) cJSON_AddStringToObject(e, "change", "added");
    else if (!b) cJSON_AddStringToObject(e, "change", "removed");
    else cJSON_AddStringToObject(e, "change", "changed");
    cJSON_AddItemToArray(x->nontensor, e);
    x->differences++;
}

static dsckpt_status compare_nontensor(diff_ctx *x, cJSON *layout) {
    char *ta = NULL, *tb = NULL;
    DS_CLI_TRY(dsckpt_ckpt_state_json(x->a.c, &ta));
    dsckpt_status st = dsckpt_ckpt_state_json(x->b.c, &tb);
    if (st) {
        free(ta);
        return st;
    }
    cJSON *ja = cJSON_Parse(ta), *jb = cJSON_Parse(tb);
    free(ta);
    free(tb);
    if (!ja || !jb) {
        cJSON_Delete(ja);
        cJSON_Delete(jb);
        return DSCKPT_ENOMEM;
    }
    /* Layout, shown but not a difference. */
    static const char *layout_keys[] = {"format", "tag", "world_size", "zero_stage"};
    for (size_t i = 0; i < sizeof layout_keys / sizeof layout_keys[0]; i++) {
        cJSON *va = cJSON_DetachItemFromObjectCaseSensitive(ja, layout_keys[i]);
        cJSON *vb = cJSON_DetachItemFromObjectCaseSensitive(jb, layout_keys[i]);
        cJSON *e = cJSON_AddObjectToObject(layout, layout_keys[i]);
        cJSON_AddItemToObject(e, "a", va ? va : cJSON_CreateNull());
        cJSON_AddItemToObject(e, "b", vb ? vb : cJSON_CreateNull());
    }
    if (!x->weights_mode) flat_diff(x, "", ja, jb);
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    return DSCKPT_OK;
}

static dsckpt_status open_side(side *s, const char *path, const char *tag, bool check) {
    s->path = path;
    DS_CLI_TRY(dsckpt_source_open(path, tag, &s->c));
    dsckpt_ckpt_set_read_check(s->c, check);
    dsckpt_ckpt_info(s->c, &s->info);
    s->weights_only = s->info.format && !strcmp(s->info.format, "safetensors");
    return dsckpt_reader_open(s->c, &s->r);
}

static void print_value(const cJSON *v) {
    char *t = v ? cJSON_PrintUnformatted(v) : NULL;
    printf("%s", t ? t : "(absent)");
    free(t);
}

static void print_text(const diff_ctx *x, const cJSON *layout, long max_list) {
    printf("A: %s (%s %s, world size %d, stage %d)\n", x->a.path, x->a.info.format, x->a.info.tag,
           x->a.info.world_size, x->a.info.zero_stage);
    printf("B: %s (%s %s, world size %d, stage %d)\n", x->b.path, x->b.info.format, x->b.info.tag,
           x->b.info.world_size, x->b.info.zero_stage);
    if (x->weights_mode) printf("comparing weights only (a .safetensors file holds no optimizer state)\n");
    (void)layout;
    const cJSON *e;
    cJSON_ArrayForEach(e, x->removed) printf("- %s (only in A)\n", e->valuestring);
    cJSON_ArrayForEach(e, x->added) printf("+ %s (only in B)\n", e->valuestring);
    cJSON_ArrayForEach(e, x->reshaped) {
        printf("! %s reshaped ", cJSON_GetObjectItem(e, "name")->valuestring);
        print_value(cJSON_GetObjectItem(e, "shape_a"));
        printf(" -> ");
        print_value(cJSON_GetObjectItem(e, "shape_b"));
        printf("\n");
    }
    cJSON_ArrayForEach(e, x->kinds)
        printf("! %s %s -> %s\n", cJSON_GetObjectItem(e, "name")->valuestring, cJSON_GetObjectItem(e, "a")->valuestring,
               cJSON_GetObjectItem(e, "b")->valuestring);
    cJSON_ArrayForEach(e, x->dtypes)
        printf("! %s %s dtype %s -> %s\n", cJSON_GetObjectItem(e, "name")->valuestring,
               cJSON_GetObjectItem(e, "state")->valuestring, cJSON_GetObjectItem(e, "a")->valuestring,
               cJSON_GetObjectItem(e, "b")->valuestring);
    long k = 0;
    cJSON_ArrayForEach(e, x->tensors_differ) {
        if (k++ >= max_list) {
            printf("  ... %d more differing tensor states (--json lists all)\n", cJSON_GetArraySize(x->tensors_differ) - (int)max_list);
            break;
        }
        const cJSON *ma = cJSON_GetObjectItem(e, "max_abs"), *mr = cJSON_GetObjectItem(e, "max_rel");
        printf("~ %s %s: %.0f of %.0f elements differ (max abs ", cJSON_GetObjectItem(e, "name")->valuestring,
               cJSON_GetObjectItem(e, "state")->valuestring, cJSON_GetObjectItem(e, "differing")->valuedouble,
               cJSON_GetObjectItem(e, "numel")->valuedouble);
        if (cJSON_IsNumber(ma)) printf("%.3g", ma->valuedouble);
        else printf("inf/NaN");
        printf(", max rel ");
        if (cJSON_IsNumber(mr)) printf("%.3g", mr->valuedouble);
        else printf("inf");
        printf(")\n");
    }
    cJSON_ArrayForEach(e, x->nontensor) {
        printf("state %s: ", cJSON_GetObjectItem(e, "key")->valuestring);
        print_value(cJSON_GetObjectItem(e, "a"));
        printf(" -> ");
        print_value(cJSON_GetObjectItem(e, "b"));
        printf("\n");
    }
    printf("%" PRIu64 " tensor state%s compared, %d added, %d removed, %d reshaped: %s (%" PRIu64 " difference%s)\n",
           x->compared, x->compared == 1 ? "" : "s", cJSON_GetArraySize(x->added), cJSON_GetArraySize(x->removed),
           cJSON_GetArraySize(x->reshaped), x->differences ? "DIFFERENT" : "equal", x->differences,
           x->differences == 1 ? "" : "s");
}

/* diff's options. */
typedef struct diff_args {
    const char *tag_a, *tag_b;
    double atol, rtol;
    long max_list;
    bool json, quiet, check;
} diff_args;

/* Parses diff's command line into a. Returns -1 to go on, or the exit code
 * (after --help, or a usage error printed). */
static int diff_parse(int argc, char **argv, diff_args *a) {
    static const struct option lo[] = {
        {"tag", required_argument, 0, 't'},     {"tag-b", required_argument, 0, 'T'},
        {"atol", required_argument, 0, 'a'},    {"rtol", required_argument, 0, 'r'},
        {"max-list", required_argument, 0, 'm'}, {"no-verify", no_argument, 0, 'V'},
        {"json", no_argument, 0, 'J'},          {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "t:qh", lo, NULL)) != -1) {
        switch (c) {
        case 't': a->tag_a = optarg; break;
        case 'T': a->tag_b = optarg; break;
        case 'a':
        case 'r': {
            char *end;
            double v = strtod(optarg, &end);
            if (*end || end == optarg || !(v >= 0) || !isfinite(v))
                return usage_error("diff", c == 'a' ? "--atol must be a number >= 0 (got '%s')"
                                                    : "--rtol must be a number >= 0 (got '%s')", optarg);
            if (c == 'a') a->atol = v;
            else a->rtol = v;
            break;
        }
        case 'm':
            if (!parse_int(optarg, 0, 1000000000, &a->max_list)) return usage_error("diff", "--max-list must be >= 0 (got '%s')", optarg);
            break;
        case 'V': a->check = false; break;
        case 'J': a->json = true; break;
        case 'q': a->quiet = true; break;
        case 'h':
            fputs(diff_help, stdout);
            fputs(exit_codes_help, stdout);
            return EXIT_OKAY;
        default: return bad_option("diff", lo, argv);
        }
    }
    if (optind != argc - 2) return usage_error("diff", "%s", "expected two paths: A B");
    return -1;
}

/* Compares every tensor of A with its namesake in B, and lists the tensors only
 * one side has. */
static dsckpt_status compare_tensors(diff_ctx *x) {
    size_t na = dsckpt_tensor_count(x->a.c), nb = dsckpt_tensor_count(x->b.c);
    for (size_t i = 0; i < na; i++) {
        dsckpt_tensor_info t;
        dsckpt_tensor_get(x->a.c, i, &t);
        x->total_bytes += t.numel * 4 * (x->weights_mode ? 1 : 3);
    }
    bool *matched = calloc(nb ? nb : 1, sizeof *matched);
    if (!matched) return DSCKPT_ENOMEM;
    dsckpt_status st = DSCKPT_OK;
    for (size_t i = 0; st == DSCKPT_OK && i < na; i++) {
        dsckpt_tensor_info ta;
        dsckpt_tensor_get(x->a.c, i, &ta);
        size_t j;
        if (dsckpt_tensor_find(x->b.c, ta.name, &j) != DSCKPT_OK) {
            cJSON_AddItemToArray(x->removed, cJSON_CreateString(ta.name));
            x->differences++;
            continue;
        }
        matched[j] = true;
        st = compare_tensor(x, i, j);
    }
    /* B's tensors no A tensor was matched to: an alias in A (tied weights written
     * as separate tensors) is compared; anything else was added. */
    for (size_t j = 0; st == DSCKPT_OK && j < nb; j++) {
        if (matched[j]) continue;
        dsckpt_tensor_info tb;
        dsckpt_tensor_get(x->b.c, j, &tb);
        size_t i;
        if (dsckpt_tensor_find(x->a.c, tb.name, &i) == DSCKPT_OK) {
            st = compare_tensor(x, i, j);
        } else {
            cJSON_AddItemToArray(x->added, cJSON_CreateString(tb.name));
            x->differences++;
        }
    }
    free(matched);
    return st;
}

/* --json: the result on stdout. The lists (and *layout) move into `out`; their
 * pointers are cleared. */
static void print_json(diff_ctx *x, const diff_args *da, cJSON *out, cJSON **layout) {
    cJSON *a = cJSON_AddObjectToObject(out, "a"), *b = cJSON_AddObjectToObject(out, "b");
    cJSON_AddStringToObject(a, "path", x->a.path);
    cJSON_AddStringToObject(b, "path", x->b.path);
    cJSON_AddBoolToObject(out, "equal", x->differences == 0);
    cJSON_AddNumberToObject(out, "differences", (double)x->differences);
    cJSON_AddStringToObject(out, "mode", x->weights_mode ? "weights" : "all_states");
    cJSON_AddNumberToObject(out, "atol", da->atol);
    cJSON_AddNumberToObject(out, "rtol", da->rtol);
    cJSON_AddNumberToObject(out, "states_compared", (double)x->compared);
    cJSON_AddItemToObject(out, "layout", *layout);
    *layout = NULL;
    cJSON_AddItemToObject(out, "added", x->added);
    cJSON_AddItemToObject(out, "removed", x->removed);
    cJSON_AddItemToObject(out, "reshaped", x->reshaped);
    cJSON_AddItemToObject(out, "dtype_changed", x->dtypes);
    cJSON_AddItemToObject(out, "trainable_changed", x->kinds);
    cJSON_AddItemToObject(out, "tensors", x->tensors_differ);
    cJSON_AddItemToObject(out, "non_tensor", x->nontensor);
    x->added = x->removed = x->reshaped = x->dtypes = x->kinds = x->tensors_differ = x->nontensor = NULL;
    char *text = cJSON_Print(out);
    if (text) puts(text);
    free(text);
}

int cmd_diff(int argc, char **argv) {
    diff_args da = {.max_list = 20, .check = true};
    int rc = diff_parse(argc, argv, &da);
    if (rc >= 0) return rc;
    diff_ctx x;
    memset(&x, 0, sizeof x);
    x.atol = da.atol;
    x.rtol = da.rtol;
    rc = EXIT_OKAY;
    dsckpt_status st = open_side(&x.a, argv[optind], da.tag_a, da.check);
    if (st == DSCKPT_OK) st = open_side(&x.b, argv[optind + 1], da.tag_b, da.check);
    cJSON *out = cJSON_CreateObject(), *layout = cJSON_CreateObject();
    x.va = malloc(SLICE * sizeof(double));
    x.vb = malloc(SLICE * sizeof(double));
    if (st == DSCKPT_OK && (!out || !layout || !x.va || !x.vb)) st = DSCKPT_ENOMEM;
    if (st) {
        rc = fail(st, "diff");
        goto done;
    }
    x.weights_mode = x.a.weights_only || x.b.weights_only;
    x.tensors_differ = cJSON_CreateArray();
    x.added = cJSON_CreateArray();
    x.removed = cJSON_CreateArray();
    x.reshaped = cJSON_CreateArray();
    x.dtypes = cJSON_CreateArray();
    x.kinds = cJSON_CreateArray();
    x.nontensor = cJSON_CreateArray();
    catch_stop_signals();
    cli_progress p;
    cli_progress_init(&p, "diff", da.quiet || da.json);
    x.prog = &p;
    st = compare_tensors(&x);
    if (st == DSCKPT_OK) st = compare_nontensor(&x, layout);
    cli_progress_end(&p);
    if (st) {
        rc = fail(st, "diff");
        goto done;
    }
    rc = x.differences ? EXIT_CORRUPT : EXIT_OKAY; /* 1 = different */
    if (da.json) print_json(&x, &da, out, &layout);
    else if (!da.quiet) print_text(&x, layout, da.max_list);
done:
    cJSON_Delete(x.added);
    cJSON_Delete(x.removed);
    cJSON_Delete(x.reshaped);
    cJSON_Delete(x.dtypes);
    cJSON_Delete(x.kinds);
    cJSON_Delete(x.tensors_differ);
    cJSON_Delete(x.nontensor);
    cJSON_Delete(layout);
    cJSON_Delete(out);
    free(x.va);
    free(x.vb);
    dsckpt_reader_free(x.a.r);
    dsckpt_reader_free(x.b.r);
    dsckpt_ckpt_free(x.a.c);
    dsckpt_ckpt_free(x.b.c);
    return rc;
}
