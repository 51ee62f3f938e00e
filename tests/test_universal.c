/*
 * test_universal.c — DeepSpeed's universal layout (reshard --format universal, and
 * universal checkpoints as a source): round trips ours -> universal -> ours are
 * bit-exact in every state of every tensor (DeepSpeed 0.14 and 0.19 fixtures,
 * native synth checkpoints at stages 1-3 with two parameter groups, 0-dim and
 * tiny parameters at stage 3 on 8 ranks); the files are laid out as
 * ds_to_universal writes them; hostile universal directories are refused with
 * the right status.
 */
#include "ckpt.h"
#include "pickle.h"
#include "tutil.h"
#include "zip.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Every tensor of a is in b with the same shape, kind, group and aliases, and
 * every applicable state holds the same bytes. */
static void assert_same_values(const dsckpt_ckpt *a, const dsckpt_ckpt *b) {
    CU_ASSERT_EQUAL_FATAL(a->ntensors, b->ntensors);
    CU_ASSERT_EQUAL(a->stage, b->stage);
    ds_fdset fa = {0}, fb = {0};
    TU_ASSERT_OK(ds_fdset_open(a, &fa));
    TU_ASSERT_OK(ds_fdset_open(b, &fb));
    for (size_t i = 0; i < a->ntensors; i++) {
        const ds_tensor *x = &a->tensors[i];
        size_t j = 0;
        while (j < b->ntensors && strcmp(b->tensors[j].name, x->name)) j++;
        if (j == b->ntensors) fprintf(stderr, "\n  tensor %s missing\n", x->name);
        CU_ASSERT_FATAL(j < b->ntensors);
        const ds_tensor *y = &b->tensors[j];
        CU_ASSERT_EQUAL(x->ndim, y->ndim);
        CU_ASSERT_EQUAL(x->numel, y->numel);
        for (int d = 0; d < x->ndim; d++) CU_ASSERT_EQUAL(x->shape[d], y->shape[d]);
        CU_ASSERT_EQUAL(x->trainable, y->trainable);
        CU_ASSERT_EQUAL(x->buffer, y->buffer);
        CU_ASSERT_EQUAL(x->group, y->group);
        CU_ASSERT_EQUAL(x->dtype, y->dtype);
        CU_ASSERT_EQUAL(x->naliases, y->naliases);
        for (int s = 0; s < DS_NSTATES; s++) {
            if (!ds_state_applies(x, (ds_state)s) || !x->numel) continue;
            dsckpt_dtype da = ds_ckpt_state_dtype(a, (ds_state)s, (uint32_t)i);
            CU_ASSERT_EQUAL_FATAL(da, ds_ckpt_state_dtype(b, (ds_state)s, (uint32_t)j));
            size_t bytes = (size_t)x->numel * dsckpt_dtype_size(da);
            uint8_t *va = malloc(bytes), *vb = malloc(bytes);
            CU_ASSERT_FATAL(va && vb);
            TU_ASSERT_OK(ds_ckpt_read(a, &fa, (ds_state)s, (uint32_t)i, 0, x->numel, va));
            TU_ASSERT_OK(ds_ckpt_read(b, &fb, (ds_state)s, (uint32_t)j, 0, x->numel, vb));
            if (memcmp(va, vb, bytes)) fprintf(stderr, "\n  %s state %s differs\n", x->name, ds_state_names[s]);
            CU_ASSERT(memcmp(va, vb, bytes) == 0);
            free(va);
            free(vb);
        }
    }
    ds_fdset_close(&fa);
    ds_fdset_close(&fb);
}

static dsckpt_status to_universal(const dsckpt_ckpt *c, const char *out) {
    dsckpt_reshard_opts o;
    dsckpt_reshard_opts_init(&o);
    o.format = DSCKPT_FORMAT_UNIVERSAL;
    o.threads = 2;
    return dsckpt_reshard(c, out, &o);
}

/* source -> universal -> (open) equals source; -> universal again equals; ->
 * native at M ranks equals. */
static void round_trip(const char *src_path) {
    char *tmp = tu_mkdtemp();
    char *u1 = tu_path(tmp, "u1"), *u2 = tu_path(tmp, "u2"), *nat = tu_path(tmp, "nat");
    dsckpt_ckpt *src = NULL, *cu1 = NULL, *cu2 = NULL, *cn = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(src_path, NULL, &src));
    TU_ASSERT_OK(to_universal(src, u1));
    TU_ASSERT_OK(dsckpt_ckpt_open(u1, NULL, &cu1)); /* through latest_universal */
    CU_ASSERT_STRING_EQUAL(cu1->format, "universal");
    CU_ASSERT_STRING_EQUAL(cu1->tag, src->tag);
    CU_ASSERT_EQUAL(cu1->step, src->step);
    assert_same_values(src, cu1);
    TU_ASSERT_OK(to_universal(cu1, u2));
    TU_ASSERT_OK(dsckpt_ckpt_open(u2, NULL, &cu2));
    assert_same_values(src, cu2);
    dsckpt_reshard_opts o;
    dsckpt_reshard_opts_init(&o);
    o.world_size = 3;
    TU_ASSERT_OK(dsckpt_reshard(cu1, nat, &o));
    TU_ASSERT_OK(dsckpt_ckpt_open(nat, NULL, &cn));
    assert_same_values(src, cn);
    dsckpt_verify_report *r = NULL;
    dsckpt_verify_opts vo = {0};
    TU_ASSERT_OK(dsckpt_verify(u1, NULL, &vo, &r));
    CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_OK);
    dsckpt_verify_report_free(r);
    dsckpt_ckpt_free(src);
    dsckpt_ckpt_free(cu1);
    dsckpt_ckpt_free(cu2);
    dsckpt_ckpt_free(cn);
    tu_rmtree(tmp);
    free(u1);
    free(u2);
    free(nat);
    free(tmp);
}

static void test_deepspeed_014_fixtures(void) {
    static const char *fx[] = {"z1_ws2_bf16", "z1_ws2_bf16opt", "z2_ws4_bf16_edge",
                               "z2_ws4_fp32", "z3_ws2_bf16",    "z3_ws4_fp32_1g"};
    for (size_t i = 0; i < sizeof fx / sizeof fx[0]; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "fixtures/deepspeed/%s/ckpt", fx[i]);
        char *p = tu_src_path(rel);
        round_trip(p);
        free(p);
    }
}

static void test_deepspeed_019_fixtures(void) {
    static const char *fx[] = {"z1_ws2_bf16", "z2_ws2_bf16_palign", "z3_ws2_bf16"};
    for (size_t i = 0; i < sizeof fx / sizeof fx[0]; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "fixtures/deepspeed-0.19/%s/ckpt", fx[i]);
        char *p = tu_src_path(rel);
        round_trip(p);
        free(p);
    }
}

static void test_native_synth(void) {
    for (int stage = 1; stage <= 3; stage++) {
        char *tmp = tu_mkdtemp(), *s = tu_path(tmp, "s");
        dsckpt_synth_opts so;
        dsckpt_synth_opts_init(&so);
        so.params = 60000;
        so.world_size = 3;
        so.zero_stage = stage;
        TU_ASSERT_OK(dsckpt_synth(s, &so));
        round_trip(s);
        tu_rmtree(tmp);
        free(s);
        free(tmp);
    }
}

/* 0-dim and 5-element parameters at stage 3 on 8 ranks (three ranks hold only
 * padding of the 5-element one: where ds_to_universal <= 0.19.2 wrote zeros). */
static void test_stage3_tiny_on_8(void) {
    char *tmp = tu_mkdtemp(), *n8 = tu_path(tmp, "n8");
    char *edge = tu_src_path("fixtures/deepspeed/z2_ws4_bf16_edge/ckpt");
    dsckpt_ckpt *src = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(edge, NULL, &src));
    dsckpt_reshard_opts o;
    dsckpt_reshard_opts_init(&o);
    o.world_size = 8;
    o.zero_stage = 3;
    TU_ASSERT_OK(dsckpt_reshard(src, n8, &o));
    round_trip(n8);
    /* And as DeepSpeed files at 8 ranks, stage 3. */
    char *d8 = tu_path(tmp, "d8");
    o.format = DSCKPT_FORMAT_DEEPSPEED;
    o.zero_stage = -1;
    dsckpt_ckpt *c8 = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(n8, NULL, &c8));
    TU_ASSERT_OK(dsckpt_reshard(c8, d8, &o));
    round_trip(d8);
    dsckpt_ckpt_free(src);
    dsckpt_ckpt_free(c8);
    tu_rmtree(tmp);
    free(tmp);
    free(n8);
    free(d8);
    free(edge);
}

/* ---- the files, as ds_to_universal writes them ---- */

typedef struct pt {
    int fd;
    zip_archive *z;
    pk_doc *doc;
    pk_obj *root;
} pt;

static void pt_open(const char *path, pt *p) {
    p->fd = open(path, O_RDONLY);
    if (p->fd < 0) fprintf(stderr, "\n  cannot open %s\n", path);
    CU_ASSERT_FATAL(p->fd >= 0);
    TU_ASSERT_OK(zip_open_fd(p->fd, path, &p->z));
    for (size_t i = 0; i < p->z->n; i++) TU_ASSERT_OK(zip_check_crc(p->fd, p->z, i, path));
    const zip_member *m = zip_find_rel(p->z, "data.pkl");
    CU_ASSERT_FATAL(m != NULL);
    uint8_t *b = NULL;
    TU_ASSERT_OK(zip_read_member(p->fd, p->z, m, 1u << 26, path, &b));
    TU_ASSERT_OK(pk_parse(b, (size_t)m->size, path, NULL, &p->doc, &p->root));
    free(b);
}

static void pt_close(pt *p) {
    pk_doc_free(p->doc);
    zip_free(p->z);
    close(p->fd);
}

static void check_layout(const char *fixture, int stage) {
    char *tmp = tu_mkdtemp(), *u = tu_path(tmp, "u");
    char rel[256];
    snprintf(rel, sizeof rel, "fixtures/deepspeed/%s/ckpt", fixture);
    char *src_path = tu_src_path(rel);
    dsckpt_ckpt *src = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(src_path, NULL, &src));
    TU_ASSERT_OK(to_universal(src, u));
    char buf[1024];
    snprintf(buf, sizeof buf, "%s/latest_universal", u);
    size_t n = 0;
    uint8_t *latest = tu_read(buf, &n);
    CU_ASSERT_FATAL(latest != NULL);
    CU_ASSERT(n == strlen("global_step3_universal") && !memcmp(latest, "global_step3_universal", n));
    free(latest);
    snprintf(buf, sizeof buf, "%s/latest", u);
    CU_ASSERT(!tu_exists(buf)); /* only latest_universal, as ds_to_universal */
    snprintf(buf, sizeof buf, "%s/global_step3_universal/%s", u,
             stage == 3 ? "zero_pp_rank_1_mp_rank_00_model_states.pt" : "mp_rank_00_model_states.pt");
    CU_ASSERT(tu_exists(buf));
    /* optimizer_state.pt: rank 0's ZeRO dict + param_groups. */
    pt p;
    snprintf(buf, sizeof buf, "%s/global_step3_universal/zero/optimizer_state.pt", u);
    pt_open(buf, &p);
    pk_obj *pg = pk_get(p.root, "param_groups");
    CU_ASSERT_FATAL(pg && pg->kind == PK_LIST);
    CU_ASSERT_EQUAL(pg->n, 2);
    CU_ASSERT(pk_get(pg->items[0], "lr") != NULL);
    CU_ASSERT(pk_get(p.root, "loss_scaler") != NULL);
    CU_ASSERT(pk_get(p.root, "zero_stage") != NULL);
    if (stage < 3) {
        CU_ASSERT(pk_get(p.root, "base_optimizer_state") == NULL);
        CU_ASSERT(pk_get(p.root, "single_partition_of_fp32_groups") == NULL);
        CU_ASSERT(pk_get(p.root, "param_slice_mappings") == NULL);
    } else {
        CU_ASSERT(pk_get(p.root, "fp32_flat_groups") != NULL);
    }
    pt_close(&p);
    /* Every trainable parameter: fp32/exp_avg/exp_avg_sq of its shape (stages 1/2,
     * {'cat_dim': 0, 'param': T}) or flat (stage 3), and step. */
    for (size_t t = 0; t < src->ntensors; t++) {
        const ds_tensor *T = &src->tensors[t];
        if (!T->trainable) continue;
        static const char *const files[] = {"fp32.pt", "exp_avg.pt", "exp_avg_sq.pt"};
        for (int s = 0; s < 3; s++) {
            snprintf(buf, sizeof buf, "%s/global_step3_universal/zero/%s/%s", u, T->name, files[s]);
            pt_open(buf, &p);
            pk_obj *x = p.root;
            if (stage < 3) {
                CU_ASSERT_FATAL(x->kind == PK_DICT && x->n == 2);
                CU_ASSERT_STRING_EQUAL(pk_as_str(x->keys[0]), "cat_dim");
                int64_t cd = -1;
                CU_ASSERT(pk_as_int(x->items[0], &cd) && cd == 0);
                x = pk_get(x, "param");
                CU_ASSERT_FATAL(x && x->kind == PK_TENSOR);
                CU_ASSERT_EQUAL(x->tensor.ndim, T->ndim);
                for (int d = 0; d < T->ndim; d++) CU_ASSERT_EQUAL(x->tensor.shape[d], T->shape[d]);
            } else {
                CU_ASSERT_FATAL(x->kind == PK_TENSOR);
                CU_ASSERT_EQUAL(x->tensor.ndim, 1);
                CU_ASSERT_EQUAL(x->tensor.shape[0], T->numel);
            }
            CU_ASSERT_EQUAL(x->tensor.dtype, DSCKPT_F32);
            pt_close(&p);
        }
        snprintf(buf, sizeof buf, "%s/global_step3_universal/zero/%s/step.pt", u, T->name);
        CU_ASSERT(tu_exists(buf));
    }
    dsckpt_ckpt_free(src);
    tu_rmtree(tmp);
    free(tmp);
    free(u);
    free(src_path);
}

static void test_layout(void) {
    check_layout("z2_ws4_bf16_edge", 2);
    check_layout("z3_ws2_bf16", 3);
}

/* ---- hostile universal directories ---- */

/* A fresh universal copy of the stage-2 edge fixture; returns its tag dir. */
static char *make_universal(const char *tmp) {
    char *src_path = tu_src_path("fixtures/deepspeed/z2_ws4_bf16_edge/ckpt");
    char *u = tu_path(tmp, "u");
    dsckpt_ckpt *src = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(src_path, NULL, &src));
    TU_ASSERT_OK(to_universal(src, u));
    dsckpt_ckpt_free(src);
    free(src_path);
    char *tag = tu_path(u, "global_step3_universal");
    free(u);
    return tag;
}

static dsckpt_status open_status(const char *dir) {
    dsckpt_ckpt *c = NULL;
    dsckpt_status st = dsckpt_ckpt_open(dir, NULL, &c);
    dsckpt_ckpt_free(c);
    return st;
}

static void test_hostile_fifo(void) {
    char *tmp = tu_mkdtemp(), *tag = make_universal(tmp);
    char buf[1024];
    snprintf(buf, sizeof buf, "%s/zero/tiny/exp_avg.pt", tag);
    CU_ASSERT_FATAL(unlink(buf) == 0 && mkfifo(buf, 0600) == 0);
    CU_ASSERT_EQUAL(open_status(tag), DSCKPT_EIO); /* unreadable, and does not block on the FIFO */
    CU_ASSERT(strstr(dsckpt_last_error(), "not a regular file") != NULL);
    /* A FIFO beside the parameter directories. */
    CU_ASSERT_FATAL(unlink(buf) == 0);
    snprintf(buf, sizeof buf, "%s/zero/fifo", tag);
    CU_ASSERT_FATAL(mkfifo(buf, 0600) == 0);
    CU_ASSERT_EQUAL(open_status(tag), DSCKPT_ECORRUPT);
    CU_ASSERT(strstr(dsckpt_last_error(), "not a parameter directory") != NULL);
    tu_rmtree(tmp);
    free(tag);
    free(tmp);
}

static void test_hostile_missing_state(void) {
    char *tmp = tu_mkdtemp(), *tag = make_universal(tmp);
    char buf[1024];
    snprintf(buf, sizeof buf, "%s/zero/gate/exp_avg_sq.pt", tag);
    CU_ASSERT_FATAL(unlink(buf) == 0);
    CU_ASSERT_EQUAL(open_status(tag), DSCKPT_ECORRUPT);
    CU_ASSERT(strstr(dsckpt_last_error(), "missing") != NULL);
    tu_rmtree(tmp);
    free(tag);
    free(tmp);
}

static void test_hostile_shape_mismatch(void) {
    char *tmp = tu_mkdtemp(), *tag = make_universal(tmp);
    char from[1024], to[1024];
    snprintf(from, sizeof from, "%s/zero/tiny/fp32.pt", tag);
    snprintf(to, sizeof to, "%s/zero/aux_out.weight/fp32.pt", tag);
    CU_ASSERT_FATAL(rename(from, to) == 0);
    CU_ASSERT_EQUAL(open_status(tag), DSCKPT_ECORRUPT);
    CU_ASSERT(strstr(dsckpt_last_error(), "param_shapes gives 'aux_out.weight'") != NULL);
    tu_rmtree(tmp);
    free(tag);
    free(tmp);
}

static void test_hostile_crc(void) {
    char *tmp = tu_mkdtemp(), *tag = make_universal(tmp);
    char buf[1024];
    snprintf(buf, sizeof buf, "%s/zero/embed.weight/exp_avg.pt", tag);
    /* A byte inside the storage member (after the 64-aligned data start of the pickle and metadata). */
    int fd = open(buf, O_RDONLY);
    CU_ASSERT_FATAL(fd >= 0);
    zip_archive *z = NULL;
    TU_ASSERT_OK(zip_open_fd(fd, buf, &z));
    const zip_member *m = zip_find_rel(z, "data/0");
    CU_ASSERT_FATAL(m != NULL);
    uint64_t off = m->data_offset + 100;
    zip_free(z);
    close(fd);
    CU_ASSERT_FATAL(tu_flip_bit(buf, off, 3) == 0);
    /* Storages are checked as they are read (not twice at open). */
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(tag, NULL, &c));
    char *out = tu_path(tmp, "out");
    dsckpt_reshard_opts o;
    dsckpt_reshard_opts_init(&o);
    o.world_size = 2;
    CU_ASSERT_EQUAL(dsckpt_reshard(c, out, &o), DSCKPT_ECHECKSUM);
    CU_ASSERT(!tu_exists(out));
    o.format = DSCKPT_FORMAT_UNIVERSAL;
    CU_ASSERT_EQUAL(dsckpt_reshard(c, out, &o), DSCKPT_ECHECKSUM);
    CU_ASSERT(!tu_exists(out));
    dsckpt_ckpt_free(c);
    free(out);
    /* The pickle of a state file is checked at open. */
    snprintf(buf, sizeof buf, "%s/zero/tiny/fp32.pt", tag);
    fd = open(buf, O_RDONLY);
    CU_ASSERT_FATAL(fd >= 0);
    TU_ASSERT_OK(zip_open_fd(fd, buf, &z));
    m = zip_find_rel(z, "data.pkl");
    CU_ASSERT_FATAL(m != NULL);
    off = m->data_offset + m->size - 1; /* the STOP opcode's byte */
    zip_free(z);
    close(fd);
    CU_ASSERT_FATAL(tu_flip_bit(buf, off, 0) == 0);
    CU_ASSERT_EQUAL(open_status(tag), DSCKPT_ECHECKSUM);
    tu_rmtree(tmp);
    free(tag);
    free(tmp);
}

/* A parameter name in param_shapes that is not one path component ("../"): the
 * model-states pickle is patched in place (same length). */
static void test_hostile_name(void) {
    char *tmp = tu_mkdtemp(), *tag = make_universal(tmp);
    char buf[1024];
    snprintf(buf, sizeof buf, "%s/mp_rank_00_model_states.pt", tag);
    size_t n = 0;
    uint8_t *b = tu_read(buf, &n);
    CU_ASSERT_FATAL(b != NULL);
    /* BINUNICODE 'X' + length 3 + "pos" */
    static const uint8_t pat[] = {'X', 3, 0, 0, 0, 'p', 'o', 's'};
    int hits = 0;
    for (size_t i = 0; i + sizeof pat <= n; i++)
        if (!memcmp(b + i, pat, sizeof pat)) {
            memcpy(b + i + 5, "../", 3);
            hits++;
        }
    CU_ASSERT_FATAL(hits > 0);
    /* The pickle's CRC-32 (central directory and data descriptor) follows the edit. */
    int fd = open(buf, O_RDONLY);
    CU_ASSERT_FATAL(fd >= 0);
    zip_archive *z = NULL;
    TU_ASSERT_OK(zip_open_fd(fd, buf, &z));
    const zip_member *m = zip_find_rel(z, "data.pkl");
    CU_ASSERT_FATAL(m != NULL);
    uint8_t oldc[4], newc[4];
    uint32_t nc = (uint32_t)crc32(0L, b + m->data_offset, (uInt)m->size);
    for (int k = 0; k < 4; k++) {
        oldc[k] = (uint8_t)(m->crc32 >> (8 * k));
        newc[k] = (uint8_t)(nc >> (8 * k));
    }
    zip_free(z);
    close(fd);
    for (size_t i = 0; i + 4 <= n; i++)
        if (!memcmp(b + i, oldc, 4)) memcpy(b + i, newc, 4);
    CU_ASSERT_FATAL(tu_write(buf, b, n) == 0);
    free(b);
    CU_ASSERT_EQUAL(open_status(tag), DSCKPT_ECORRUPT);
    CU_ASSERT(strstr(dsckpt_last_error(), "not a plain directory name") != NULL);
    tu_rmtree(tmp);
    free(tag);
    free(tmp);
}

int main(void) {
    static const tu_test tests[] = {
        {"round trip: DeepSpeed 0.14 fixtures", test_deepspeed_014_fixtures},
        {"round trip: DeepSpeed 0.19 fixtures", test_deepspeed_019_fixtures},
        {"round trip: native synth, stages 1-3", test_native_synth},
        {"round trip: 0-dim and tiny at stage 3 on 8 ranks", test_stage3_tiny_on_8},
        {"layout as ds_to_universal writes it", test_layout},
        {"hostile: FIFOs", test_hostile_fifo},
        {"hostile: missing state file", test_hostile_missing_state},
        {"hostile: shape mismatch", test_hostile_shape_mismatch},
        {"hostile: CRC-32", test_hostile_crc},
        {"hostile: parameter name", test_hostile_name},
        {NULL, NULL}};
    return tu_main("universal", tests);
}
