/*
 * test_deepspeed19.c — checkpoints written by DeepSpeed 0.19.8 on torch 2.15
 * (fixtures/deepspeed-0.19/) read without Python: ZeRO-1, ZeRO-2 with
 * parameter_alignment, ZeRO-3 (fp32 groups pickled through
 * torch._tensor._rebuild_from_type_v2) and the Hugging Face Trainer's ZeRO-3
 * checkpoints. consolidate --dtype fp32 equals the engine's true values bit for
 * bit (bf16 = their round-to-nearest-even cast), the HF checkpoint equals
 * DeepSpeed's own zero_to_fp32 output (read with our zip + pickle readers), the
 * Adam moments reached through reshard equal the truth, reshard --format
 * deepspeed round-trips, every data.pkl re-serialises byte for byte, verify
 * passes and catches damage, and what is not supported is refused with exit 5.
 */
#include "cast.h"
#include "ckpt.h"
#include "fsutil.h"
#include "pickle.h"
#include "safetensors.h"
#include "stream.h"
#include "truth.h"
#include "tutil.h"
#include "zip.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Fixtures with an expected/truth.safetensors (save root = ckpt/). */
static const char *fixtures[] = {"z1_ws2_bf16", "z2_ws2_bf16_palign", "z3_ws2_bf16", "z0_ws2_bf16", "z0_ws2_fp32"};
#define NFIX (sizeof fixtures / sizeof fixtures[0])
/* The HF Trainer's DeepSpeed tag directories. */
static const char *hf_tags[] = {"hf_trainer_z3/output/checkpoint-4/global_step4",
                                "hf_trainer_z3/output/checkpoint-12/global_step12"};
#define NHF (sizeof hf_tags / sizeof hf_tags[0])

static char *fx_path(const char *rel) {
    char buf[1024];
    snprintf(buf, sizeof buf, "fixtures/deepspeed-0.19/%s", rel);
    return tu_src_path(buf);
}

static char *fixture_path(const char *fx, const char *rel) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", fx, rel);
    return fx_path(buf);
}

/* A consolidated file against fixture fx's truth (truth.h); no fixture here has
 * frozen tensors left out. */
static void check_against_truth(const char *fx, const char *outpath, dsckpt_dtype out) {
    char *tp = fixture_path(fx, "expected/truth.safetensors");
    tt_check_consolidated(fx, tp, outpath, out, true);
    free(tp);
}

static void consolidate_to(dsckpt_ckpt *c, const char *out, dsckpt_dtype dt) {
    dsckpt_consolidate_opts co;
    dsckpt_consolidate_opts_init(&co);
    co.dtype = dt;
    co.force = 1;
    TU_ASSERT_OK(dsckpt_consolidate(c, out, &co));
}

static void test_consolidate_equals_truth(void) {
    char *dir = tu_mkdtemp();
    for (size_t i = 0; i < NFIX; i++) {
        char *ck = fixture_path(fixtures[i], "ckpt");
        dsckpt_ckpt *c = NULL;
        dsckpt_status st = dsckpt_ckpt_open(ck, NULL, &c);
        if (st) fprintf(stderr, "\n  %s: %s\n", fixtures[i], dsckpt_last_error());
        CU_ASSERT_EQUAL_FATAL(st, DSCKPT_OK);
        CU_ASSERT_STRING_EQUAL(c->format, "deepspeed");
        static const dsckpt_dtype outs[] = {DSCKPT_F32, DSCKPT_BF16};
        for (int o = 0; o < 2; o++) {
            char *out = tu_path(dir, "out.safetensors");
            consolidate_to(c, out, outs[o]);
            check_against_truth(fixtures[i], out, outs[o]);
            free(out);
        }
        dsckpt_ckpt_free(c);
        free(ck);
    }
    tu_rmtree(dir);
    free(dir);
}

static void test_moments_through_reshard(void) {
    char *dir = tu_mkdtemp();
    for (size_t i = 0; i < NFIX; i++) {
        char *ck = fixture_path(fixtures[i], "ckpt"), *tp = fixture_path(fixtures[i], "expected/truth.safetensors");
        dsckpt_ckpt *c = NULL;
        TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
        tt_file truth;
        tt_open(tp, &truth);
        tt_check_states(fixtures[i], 0, c, &truth);
        static const int Ms[] = {1, 3};
        for (int mi = 0; mi < 2; mi++) tt_check_reshard_states(fixtures[i], c, &truth, dir, Ms[mi]);
        tt_close(&truth);
        dsckpt_ckpt_free(c);
        free(ck);
        free(tp);
    }
    tu_rmtree(dir);
    free(dir);
}

/* reshard --format deepspeed M = 1..4, then our reader: same bits, verify OK. */
static void test_deepspeed_round_trip(void) {
    char *dir = tu_mkdtemp();
    for (size_t i = 0; i < NFIX; i++) {
        char *ck = fixture_path(fixtures[i], "ckpt"), *tp = fixture_path(fixtures[i], "expected/truth.safetensors");
        dsckpt_ckpt *c = NULL;
        TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
        tt_file truth;
        tt_open(tp, &truth);
        for (int M = 1; M <= 4; M++) {
            char *out = tu_path(dir, "ds");
            dsckpt_reshard_opts ro;
            dsckpt_reshard_opts_init(&ro);
            ro.world_size = M;
            ro.format = DSCKPT_FORMAT_DEEPSPEED;
            ro.force = 1;
            TU_ASSERT_OK(dsckpt_reshard(c, out, &ro));
            dsckpt_ckpt *n = NULL;
            TU_ASSERT_OK(dsckpt_ckpt_open(out, NULL, &n));
            CU_ASSERT_STRING_EQUAL(n->format, "deepspeed");
            CU_ASSERT_EQUAL(n->world_size, M);
            CU_ASSERT_EQUAL(n->stage, c->stage);
            CU_ASSERT_EQUAL(n->step, c->step);
            tt_check_states(fixtures[i], M, n, &truth);
            char *cons = tu_path(dir, "cons.safetensors");
            consolidate_to(n, cons, DSCKPT_F32);
            check_against_truth(fixtures[i], cons, DSCKPT_F32);
            dsckpt_verify_report *rep = NULL;
            TU_ASSERT_OK(dsckpt_verify(out, NULL, NULL, &rep));
            CU_ASSERT_EQUAL(dsckpt_verify_report_result(rep), DSCKPT_VERIFY_OK);
            dsckpt_verify_report_free(rep);
            dsckpt_ckpt_free(n);
            free(cons);
            free(out);
        }
        tt_close(&truth);
        dsckpt_ckpt_free(c);
        free(ck);
        free(tp);
    }
    tu_rmtree(dir);
    free(dir);
}

/* ---- the HF Trainer's checkpoints vs DeepSpeed's zero_to_fp32 ---- */

/* The parsed data.pkl of a torch.save file, with its zip. */
typedef struct tfile {
    int fd;
    zip_archive *z;
    pk_doc *doc;
    pk_obj *root;
} tfile;

static void tfile_open(const char *path, tfile *f) {
    f->fd = open(path, O_RDONLY);
    CU_ASSERT_FATAL(f->fd >= 0);
    TU_ASSERT_OK(zip_open_fd(f->fd, path, &f->z));
    const zip_member *m = zip_find_rel(f->z, "data.pkl");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    uint8_t *pkl = NULL;
    TU_ASSERT_OK(zip_read_member(f->fd, f->z, m, 64u << 20, path, &pkl));
    TU_ASSERT_OK(pk_parse(pkl, (size_t)m->size, path, NULL, &f->doc, &f->root));
    free(pkl);
}

static void tfile_close(tfile *f) {
    pk_doc_free(f->doc);
    zip_free(f->z);
    close(f->fd);
}

/* Bytes of a contiguous fp32 tensor of a torch.save file (malloc'd). */
static uint8_t *tensor_bytes(const tfile *f, const pk_obj *t, uint64_t *numel) {
    CU_ASSERT_EQUAL_FATAL(t->kind, PK_TENSOR);
    CU_ASSERT_EQUAL_FATAL(t->tensor.dtype, DSCKPT_F32);
    uint64_t n = 1;
    for (int d = 0; d < t->tensor.ndim; d++) n *= t->tensor.shape[d];
    char rel[300];
    snprintf(rel, sizeof rel, "data/%s", t->tensor.storage_key);
    const zip_member *m = zip_find_rel(f->z, rel);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_FATAL((t->tensor.offset + n) * 4 <= m->size);
    uint8_t *b = malloc(n * 4 + 1);
    CU_ASSERT_FATAL(pread(f->fd, b, n * 4, (off_t)(m->data_offset + t->tensor.offset * 4)) == (ssize_t)(n * 4));
    *numel = n;
    return b;
}

static void test_hf_trainer_equals_zero_to_fp32(void) {
    char *dir = tu_mkdtemp();
    char *ck = fx_path(hf_tags[0]), *ref = fx_path("hf_trainer_z3/expected/zero_to_fp32_checkpoint-4/pytorch_model.bin");
    dsckpt_ckpt *c = NULL;
    dsckpt_status st = dsckpt_ckpt_open(ck, NULL, &c);
    if (st) fprintf(stderr, "\n  %s\n", dsckpt_last_error());
    CU_ASSERT_EQUAL_FATAL(st, DSCKPT_OK);
    CU_ASSERT_EQUAL(c->stage, 3);
    CU_ASSERT_EQUAL(c->world_size, 2);
    CU_ASSERT_EQUAL(c->step, 4);
    char *out = tu_path(dir, "out.safetensors"), *out16 = tu_path(dir, "out16.safetensors");
    consolidate_to(c, out, DSCKPT_F32);
    consolidate_to(c, out16, DSCKPT_BF16);
    tt_file got, got16;
    tt_open(out, &got);
    tt_open(out16, &got16);
    tfile r;
    tfile_open(ref, &r);
    CU_ASSERT_EQUAL_FATAL(r.root->kind, PK_DICT);
    size_t matched = 0;
    for (size_t k = 0; k < r.root->n; k++) {
        const char *name = pk_as_str(r.root->keys[k]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(name);
        /* A tied name is written once, under its owner. */
        char key[300];
        snprintf(key, sizeof key, "alias.%s", name);
        const char *owner = st_meta_get(got.h, key);
        const char *look = owner ? owner : name;
        uint64_t n;
        uint8_t *want = tensor_bytes(&r, r.root->items[k], &n);
        const st_tensor *gt, *gt16;
        uint8_t *have = tt_bytes(&got, look, &gt), *have16 = tt_bytes(&got16, look, &gt16);
        if (!have || !have16) {
            fprintf(stderr, "\n  '%s' missing from the output\n", name);
            CU_FAIL("tensor missing");
        } else {
            CU_ASSERT_EQUAL(gt->dtype, DSCKPT_F32);
            CU_ASSERT_EQUAL(gt->numel, n);
            bool same = gt->numel == n && memcmp(have, want, n * 4) == 0;
            if (!same) fprintf(stderr, "\n  '%s' differs from zero_to_fp32\n", name);
            CU_ASSERT(same);
            size_t bad = 0;
            for (uint64_t e = 0; e < n && gt16->numel == n; e++) {
                float v;
                uint16_t h;
                memcpy(&v, want + 4 * e, 4);
                memcpy(&h, have16 + 2 * e, 2);
                bad += ds_f32_to_bf16_ref(v) != h;
            }
            CU_ASSERT_EQUAL(bad, 0);
            matched++;
        }
        free(want);
        free(have);
        free(have16);
    }
    CU_ASSERT(matched == r.root->n && matched >= 28);
    tfile_close(&r);
    tt_close(&got);
    tt_close(&got16);
    dsckpt_ckpt_free(c);
    free(out);
    free(out16);
    free(ck);
    free(ref);
    tu_rmtree(dir);
    free(dir);
}

/* Both HF tags: open, verify OK, round trip through reshard --format deepspeed
 * at M = 1..4 with every state equal to the source's. */
static void test_hf_tags_round_trip(void) {
    char *dir = tu_mkdtemp();
    for (size_t i = 0; i < NHF; i++) {
        char *ck = fx_path(hf_tags[i]);
        dsckpt_ckpt *c = NULL;
        TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
        CU_ASSERT_EQUAL(c->stage, 3);
        dsckpt_verify_report *rep = NULL;
        TU_ASSERT_OK(dsckpt_verify(ck, NULL, NULL, &rep));
        CU_ASSERT_EQUAL(dsckpt_verify_report_result(rep), DSCKPT_VERIFY_OK);
        dsckpt_verify_report_free(rep);
        char *a = tu_path(dir, "a.safetensors"), *b = tu_path(dir, "b.safetensors");
        consolidate_to(c, a, DSCKPT_F32);
        size_t la, lb;
        uint8_t *ba = tu_read(a, &la);
        CU_ASSERT_PTR_NOT_NULL_FATAL(ba);
        for (int M = 1; M <= 4; M++) {
            char *out = tu_path(dir, "ds");
            dsckpt_reshard_opts ro;
            dsckpt_reshard_opts_init(&ro);
            ro.world_size = M;
            ro.format = DSCKPT_FORMAT_DEEPSPEED;
            ro.force = 1;
            TU_ASSERT_OK(dsckpt_reshard(c, out, &ro));
            dsckpt_ckpt *n = NULL;
            TU_ASSERT_OK(dsckpt_ckpt_open(out, NULL, &n));
            CU_ASSERT_EQUAL(n->world_size, M);
            consolidate_to(n, b, DSCKPT_F32);
            uint8_t *bb = tu_read(b, &lb);
            CU_ASSERT(bb && la == lb && memcmp(ba, bb, la) == 0);
            free(bb);
            /* Moments too, element for element. */
            ds_fdset fc, fn;
            TU_ASSERT_OK(ds_fdset_open(c, &fc));
            TU_ASSERT_OK(ds_fdset_open(n, &fn));
            CU_ASSERT_EQUAL_FATAL(n->ntensors, c->ntensors);
            for (uint32_t t = 0; t < c->ntensors; t++) {
                if (!c->tensors[t].trainable) continue;
                CU_ASSERT_STRING_EQUAL_FATAL(n->tensors[t].name, c->tensors[t].name);
                size_t bytes = c->tensors[t].numel * 4;
                uint8_t *x = malloc(bytes + 1), *y = malloc(bytes + 1);
                for (int s = DS_ST_EXP_AVG; s <= DS_ST_EXP_AVG_SQ; s++) {
                    TU_ASSERT_OK(ds_ckpt_read(c, &fc, (ds_state)s, t, 0, c->tensors[t].numel, x));
                    TU_ASSERT_OK(ds_ckpt_read(n, &fn, (ds_state)s, t, 0, c->tensors[t].numel, y));
                    CU_ASSERT(memcmp(x, y, bytes) == 0);
                }
                free(x);
                free(y);
            }
            ds_fdset_close(&fc);
            ds_fdset_close(&fn);
            dsckpt_ckpt_free(n);
            free(out);
        }
        free(ba);
        free(a);
        free(b);
        dsckpt_ckpt_free(c);
        free(ck);
    }
    tu_rmtree(dir);
    free(dir);
}

/* reshard --format deepspeed of the parameter_alignment checkpoint at its own
 * world size lays the flat groups out as DeepSpeed did: the same
 * param_alignment_paddings, and every fp32 partition and Adam moment byte for
 * byte equal to the source's (padding included). */
static void test_palign_layout_kept(void) {
    char *dir = tu_mkdtemp();
    char *ck = fixture_path("z2_ws2_bf16_palign", "ckpt");
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
    char *out = tu_path(dir, "ds");
    dsckpt_reshard_opts ro;
    dsckpt_reshard_opts_init(&ro);
    ro.world_size = 2;
    ro.format = DSCKPT_FORMAT_DEEPSPEED;
    TU_ASSERT_OK(dsckpt_reshard(c, out, &ro));
    char *tagdir = tu_path(out, "global_step3");
    size_t nonzero_pads = 0;
    for (int r = 0; r < 2; r++) {
        char name[96];
        snprintf(name, sizeof name, "bf16_zero_pp_rank_%d_mp_rank_00_optim_states.pt", r);
        char *rel = tu_path("z2_ws2_bf16_palign/ckpt/global_step3", name), *sp = fx_path(rel), *op = tu_path(tagdir, name);
        tfile a, b;
        tfile_open(sp, &a);
        tfile_open(op, &b);
        pk_obj *oa = pk_get(a.root, "optimizer_state_dict"), *ob = pk_get(b.root, "optimizer_state_dict");
        pk_obj *pa = pk_get(oa, "param_alignment_paddings"), *pb = pk_get(ob, "param_alignment_paddings");
        CU_ASSERT_FATAL(pa && pb && pa->kind == PK_LIST && pb->kind == PK_LIST && pa->n == pb->n);
        for (size_t g = 0; g < pa->n; g++) {
            CU_ASSERT_EQUAL_FATAL(pa->items[g]->n, pb->items[g]->n);
            for (size_t k = 0; k < pa->items[g]->n; k++) {
                CU_ASSERT_EQUAL(pa->items[g]->items[k]->i, pb->items[g]->items[k]->i);
                nonzero_pads += pa->items[g]->items[k]->i != 0;
            }
        }
        pk_obj *fa = pk_get(oa, "single_partition_of_fp32_groups"), *fb = pk_get(ob, "single_partition_of_fp32_groups");
        pk_obj *sa = pk_get(pk_get(oa, "base_optimizer_state"), "state"), *sb = pk_get(pk_get(ob, "base_optimizer_state"), "state");
        CU_ASSERT_FATAL(fa && fb && fa->n == fb->n && sa && sb);
        for (size_t g = 0; g < fa->n; g++) {
            const pk_obj *ta[3] = {fa->items[g], pk_get(pk_get_int_key(sa, (int64_t)g), "exp_avg"),
                                   pk_get(pk_get_int_key(sa, (int64_t)g), "exp_avg_sq")};
            const pk_obj *tb[3] = {fb->items[g], pk_get(pk_get_int_key(sb, (int64_t)g), "exp_avg"),
                                   pk_get(pk_get_int_key(sb, (int64_t)g), "exp_avg_sq")};
            for (int k = 0; k < 3; k++) {
                CU_ASSERT_FATAL(ta[k] && tb[k]);
                uint64_t na, nb;
                uint8_t *ba = tensor_bytes(&a, ta[k], &na), *bb = tensor_bytes(&b, tb[k], &nb);
                CU_ASSERT(na == nb && memcmp(ba, bb, na * 4) == 0);
                free(ba);
                free(bb);
            }
        }
        tfile_close(&a);
        tfile_close(&b);
        free(rel);
        free(sp);
        free(op);
    }
    CU_ASSERT(nonzero_pads > 0);
    dsckpt_ckpt_free(c);
    free(tagdir);
    free(out);
    free(ck);
    tu_rmtree(dir);
    free(dir);
}

/* ---- pickles ---- */

/* Every torch.save file of the fixtures: data.pkl parses and re-serialises byte
 * for byte. */
static int roundtrip_tree(const char *path) {
    int count = 0;
    DIR *d = opendir(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char *p = tu_path(path, e->d_name);
        struct stat sb;
        CU_ASSERT_FATAL(lstat(p, &sb) == 0);
        size_t n = strlen(e->d_name);
        if (S_ISDIR(sb.st_mode)) count += roundtrip_tree(p);
        else if ((n > 3 && !strcmp(e->d_name + n - 3, ".pt")) || (n > 4 && !strcmp(e->d_name + n - 4, ".pth")) ||
                 (n > 4 && !strcmp(e->d_name + n - 4, ".bin"))) {
            tfile f;
            tfile_open(p, &f);
            const zip_member *m = zip_find_rel(f.z, "data.pkl");
            uint8_t *pkl = NULL, *out = NULL;
            size_t olen = 0;
            TU_ASSERT_OK(zip_read_member(f.fd, f.z, m, 64u << 20, p, &pkl));
            TU_ASSERT_OK(pk_serialize(f.root, &out, &olen));
            bool same = olen == m->size && memcmp(out, pkl, olen) == 0;
            if (!same) fprintf(stderr, "\n  %s: re-serialised data.pkl differs\n", p);
            CU_ASSERT(same);
            free(out);
            free(pkl);
            tfile_close(&f);
            count++;
        }
        free(p);
    }
    closedir(d);
    return count;
}

static void test_pickle_round_trip(void) {
    char *root = fx_path("");
    int n = roundtrip_tree(root);
    /* 3 + 3 + 4 + 1 + 1 DeepSpeed files; per HF checkpoint 4 DeepSpeed files, 2
     * rng states, scheduler, training_args; final's training_args;
     * zero_to_fp32's pytorch_model.bin. */
    CU_ASSERT_EQUAL(n, 12 + 2 * 8 + 1 + 1);
    free(root);
}

/* The ZeRO-3 fp32 groups are the wrapped tensors, and only they. */
static void test_zero3_wrapped_groups(void) {
    char *p = fixture_path("z3_ws2_bf16", "ckpt/global_step3/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt");
    tfile f;
    tfile_open(p, &f);
    pk_obj *osd = pk_get(f.root, "optimizer_state_dict");
    pk_obj *groups = pk_get(osd, "fp32_flat_groups");
    CU_ASSERT_PTR_NOT_NULL_FATAL(groups);
    CU_ASSERT_EQUAL_FATAL(groups->kind, PK_LIST);
    CU_ASSERT_EQUAL(groups->n, 2);
    for (size_t g = 0; g < groups->n; g++) {
        pk_obj *t = groups->items[g];
        CU_ASSERT_EQUAL(t->kind, PK_TENSOR);
        CU_ASSERT_STRING_EQUAL(t->name, "_rebuild_from_type_v2");
        CU_ASSERT_EQUAL(t->tensor.dtype, DSCKPT_F32);
        CU_ASSERT_EQUAL(t->tensor.ndim, 1);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t->args);
        CU_ASSERT_EQUAL(t->args->n, 4);
        CU_ASSERT_PTR_NOT_NULL(pk_as_str(pk_get(t->args->items[3], "ds_id")));
    }
    tfile_close(&f);
    free(p);
}

/* ---- ZeRO-0 ---- */

/* The ZeRO-0 file names no optimizer entry: each is matched to a module entry of
 * its shape. Here the two blocks' fc1.weight (same shape) are swapped in the
 * module's order, so module order alone would pair them with the wrong fp32
 * masters and moments; the fp32-master cast check must still pair them right. */
static void test_zero0_match_by_value(void) {
    char *dir = tu_mkdtemp();
    char *src = fixture_path("z0_ws2_bf16", "ckpt/global_step3/mp_rank_00_model_states.pt");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/ck/global_step3' && echo global_step3 > '%s/ck/latest'", dir, dir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    char *ck = tu_path(dir, "ck"), *dst = tu_path(dir, "ck/global_step3/mp_rank_00_model_states.pt");
    tfile f;
    tfile_open(src, &f);
    pk_obj *module = pk_get(f.root, "module");
    CU_ASSERT_PTR_NOT_NULL_FATAL(module);
    long a = -1, b = -1;
    for (size_t k = 0; k < module->n; k++) {
        const char *nm = pk_as_str(module->keys[k]);
        if (nm && !strcmp(nm, "blocks.0.fc1.weight")) a = (long)k;
        if (nm && !strcmp(nm, "blocks.1.fc1.weight")) b = (long)k;
    }
    CU_ASSERT_FATAL(a >= 0 && b > a);
    pk_obj *tk = module->keys[a], *ti = module->items[a];
    module->keys[a] = module->keys[b];
    module->items[a] = module->items[b];
    module->keys[b] = tk;
    module->items[b] = ti;
    uint8_t *pkl = NULL;
    size_t plen = 0;
    TU_ASSERT_OK(pk_serialize(f.root, &pkl, &plen));
    /* the same members, data.pkl replaced */
    ds_stream *s = NULL;
    zip_writer *zw = NULL;
    TU_ASSERT_OK(ds_stream_create(dst, 0, &s));
    TU_ASSERT_OK(zip_writer_new(s, f.z->prefix, &zw));
    size_t pl = strlen(f.z->prefix);
    for (size_t i = 0; i < f.z->n; i++) {
        const zip_member *m = &f.z->members[i];
        const char *rel = m->name + pl + 1;
        bool is_pkl = !strcmp(rel, "data.pkl");
        uint64_t size = is_pkl ? plen : m->size, off;
        uint8_t *buf = is_pkl ? pkl : malloc(m->size + 1);
        if (!is_pkl) CU_ASSERT_FATAL(pread(f.fd, buf, m->size, (off_t)m->data_offset) == (ssize_t)m->size);
        TU_ASSERT_OK(zip_writer_begin(zw, rel, size, &off));
        TU_ASSERT_OK(zip_writer_write(zw, buf, (size_t)size));
        TU_ASSERT_OK(zip_writer_end(zw));
        if (!is_pkl) free(buf);
    }
    TU_ASSERT_OK(zip_writer_finish(zw));
    zip_writer_free(zw);
    TU_ASSERT_OK(ds_stream_finish(s, NULL));
    free(pkl);
    tfile_close(&f);

    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
    CU_ASSERT_EQUAL(c->stage, 0);
    char *tp = fixture_path("z0_ws2_bf16", "expected/truth.safetensors");
    tt_file truth;
    tt_open(tp, &truth);
    tt_check_states("z0_ws2_bf16 (swapped module order)", 0, c, &truth);
    char *out = tu_path(dir, "out.safetensors");
    consolidate_to(c, out, DSCKPT_F32);
    check_against_truth("z0_ws2_bf16", out, DSCKPT_F32);
    tt_close(&truth);
    dsckpt_ckpt_free(c);
    free(out);
    free(tp);
    free(ck);
    free(dst);
    free(src);
    tu_rmtree(dir);
    free(dir);
}

/* ZeRO-0 to universal for a run going on under ZeRO 1-3: all three states of
 * every trainable tensor read back from the universal files equal the truth
 * (each stage written over the last with force: a universal output is one
 * dsckpt replaces); without --stage it is refused, and nothing is written. */
static void test_zero0_universal(void) {
    char *dir = tu_mkdtemp();
    static const char *const fxs[] = {"z0_ws2_bf16", "z0_ws2_fp32"};
    for (size_t i = 0; i < 2; i++) {
        char *ck = fixture_path(fxs[i], "ckpt"), *tp = fixture_path(fxs[i], "expected/truth.safetensors");
        dsckpt_ckpt *c = NULL;
        TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
        tt_file truth;
        tt_open(tp, &truth);
        char *out = tu_path(dir, "uni");
        dsckpt_reshard_opts ro;
        dsckpt_reshard_opts_init(&ro);
        ro.format = DSCKPT_FORMAT_UNIVERSAL;
        ro.force = 1;
        char *refused = tu_path(dir, "refused");
        CU_ASSERT_EQUAL(dsckpt_reshard(c, refused, &ro), DSCKPT_EUNSUPPORTED);
        CU_ASSERT_FALSE(ds_exists(refused));
        free(refused);
        for (int s = 1; s <= 3; s++) {
            ro.zero_stage = s;
            TU_ASSERT_OK(dsckpt_reshard(c, out, &ro));
            dsckpt_ckpt *n = NULL;
            TU_ASSERT_OK(dsckpt_ckpt_open(out, NULL, &n));
            CU_ASSERT_STRING_EQUAL(n->format, "universal");
            CU_ASSERT_EQUAL(n->stage, s);
            CU_ASSERT_EQUAL(n->step, c->step);
            tt_check_states(fxs[i], s, n, &truth);
            dsckpt_ckpt_free(n);
        }
        tt_close(&truth);
        dsckpt_ckpt_free(c);
        free(out);
        free(ck);
        free(tp);
    }
    tu_rmtree(dir);
    free(dir);
}

/* ---- inspect, verify ---- */

static void test_inspect_and_verify(void) {
    for (size_t i = 0; i < NFIX; i++) {
        char *ck = fixture_path(fixtures[i], "ckpt"), *info = fixture_path(fixtures[i], "expected/info.json");
        size_t len;
        char *text = (char *)tu_read(info, &len);
        cJSON *j = cJSON_ParseWithLength(text, len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(j);
        dsckpt_ckpt *c = NULL;
        TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
        CU_ASSERT_EQUAL(c->stage, cJSON_GetObjectItem(j, "zero_stage")->valueint);
        CU_ASSERT_EQUAL(c->world_size, cJSON_GetObjectItem(j, "world_size")->valueint);
        CU_ASSERT_STRING_EQUAL(c->tag, cJSON_GetObjectItem(j, "tag")->valuestring);
        char *desc = NULL;
        TU_ASSERT_OK(dsckpt_ckpt_describe_json(c, &desc));
        cJSON *dj = cJSON_Parse(desc);
        CU_ASSERT_PTR_NOT_NULL(dj); /* valid JSON */
        cJSON_Delete(dj);
        free(desc);
        dsckpt_verify_report *r = NULL;
        TU_ASSERT_OK(dsckpt_verify(ck, NULL, NULL, &r));
        if (dsckpt_verify_report_result(r) != DSCKPT_VERIFY_OK)
            for (size_t k = 0; k < dsckpt_verify_report_count(r); k++)
                fprintf(stderr, "\n  %s: %s", fixtures[i], dsckpt_verify_report_problem(r, k));
        CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_OK);
        dsckpt_verify_report_free(r);
        dsckpt_ckpt_free(c);
        cJSON_Delete(j);
        free(text);
        free(ck);
        free(info);
    }
}

/* A copy of a fixture tag directory under `dir`/ck/<tag>; returns dir/ck. */
static char *copy_fixture(const char *dir, const char *fx_tagdir) {
    char *src = fx_path(fx_tagdir), cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/ck' && mkdir '%s/ck' && cp -r '%s' '%s/ck/'", dir, dir, src, dir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    free(src);
    return tu_path(dir, "ck");
}

static void test_verify_catches_damage(void) {
    char *dir = tu_mkdtemp();
    char *root = copy_fixture(dir, "z3_ws2_bf16/ckpt/global_step3"), *ck = tu_path(root, "global_step3");
    char *opt1 = tu_path(ck, "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt");
    size_t len;
    uint8_t *orig = tu_read(opt1, &len);
    CU_ASSERT_FATAL(orig && len > 100000);
    dsckpt_verify_report *r = NULL;
    TU_ASSERT_OK(dsckpt_verify(ck, NULL, NULL, &r));
    CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_OK);
    dsckpt_verify_report_free(r);
    CU_ASSERT_EQUAL(tu_flip_bit(opt1, len / 2, 5), 0);
    TU_ASSERT_OK(dsckpt_verify(ck, NULL, NULL, &r));
    CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_CORRUPT);
    bool named = false;
    for (size_t k = 0; k < dsckpt_verify_report_count(r); k++)
        named |= strstr(dsckpt_verify_report_problem(r, k), "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt") != NULL;
    CU_ASSERT(named);
    dsckpt_verify_report_free(r);
    free(orig);
    free(opt1);
    free(ck);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* ---- edited copies of fixture files ---- */

/* Rewrites the torch.save file `path` with member `rel` replaced by `data` (or,
 * with rel NULL, data.pkl replaced by the serialised `root`), every other member
 * copied, in order, and storages aligned to `align`. */
static void rewrite_pt(const char *path, const char *rel, const void *data, size_t len, uint32_t align) {
    int fd = open(path, O_RDONLY);
    CU_ASSERT_FATAL(fd >= 0);
    zip_archive *z = NULL;
    TU_ASSERT_OK(zip_open_fd(fd, path, &z));
    char *tmp = tu_path(path, "");
    tmp[strlen(tmp) - 1] = '\0';
    char out[1100];
    snprintf(out, sizeof out, "%s.new", tmp);
    free(tmp);
    ds_stream *s = NULL;
    zip_writer *w = NULL;
    TU_ASSERT_OK(ds_stream_create(out, 0, &s));
    TU_ASSERT_OK(zip_writer_new(s, z->prefix, &w));
    TU_ASSERT_OK(zip_writer_set_alignment(w, align));
    for (size_t i = 0; i < z->n; i++) {
        const zip_member *m = &z->members[i];
        const char *r = m->name + strlen(z->prefix) + 1;
        uint8_t *b = NULL;
        TU_ASSERT_OK(zip_read_member(fd, z, m, 64u << 20, path, &b));
        const void *src = b;
        size_t n = (size_t)m->size;
        if (rel && !strcmp(r, rel)) src = data, n = len;
        uint64_t off;
        TU_ASSERT_OK(zip_writer_begin(w, r, n, &off));
        TU_ASSERT_OK(zip_writer_write(w, src, n));
        TU_ASSERT_OK(zip_writer_end(w));
        free(b);
    }
    TU_ASSERT_OK(zip_writer_finish(w));
    TU_ASSERT_OK(ds_stream_finish(s, NULL));
    zip_writer_free(w);
    zip_free(z);
    close(fd);
    CU_ASSERT_EQUAL_FATAL(rename(out, path), 0);
}

/* Parses the data.pkl of `path`, lets `edit` change the tree, writes it back. */
static void edit_pickle(const char *path, void (*edit)(pk_doc *, pk_obj *)) {
    tfile f;
    tfile_open(path, &f);
    edit(f.doc, f.root);
    uint8_t *out = NULL;
    size_t n = 0;
    TU_ASSERT_OK(pk_serialize(f.root, &out, &n));
    tfile_close(&f);
    rewrite_pt(path, "data.pkl", out, n, 64);
    free(out);
}

/* Opens `ck` and expects DSCKPT_EUNSUPPORTED with every needle in the message. */
static void expect_unsupported(const char *ck, const char *n1, const char *n2) {
    dsckpt_ckpt *c = NULL;
    dsckpt_status st = dsckpt_ckpt_open(ck, NULL, &c);
    const char *msg = dsckpt_last_error();
    bool ok = st == DSCKPT_EUNSUPPORTED && strstr(msg, n1) && (!n2 || strstr(msg, n2));
    if (!ok) fprintf(stderr, "\n  got %s '%s', want EUNSUPPORTED with '%s' '%s'\n", dsckpt_status_name(st), msg, n1, n2 ? n2 : "");
    CU_ASSERT(ok);
    if (st == DSCKPT_OK) dsckpt_ckpt_free(c);
}

static void set_tp2(pk_doc *d, pk_obj *root) {
    pk_obj *dims = pk_get(root, "checkpoint_parallel_dimensions");
    CU_ASSERT_PTR_NOT_NULL_FATAL(dims);
    CU_ASSERT_FATAL(pk_dict_set(d, dims, pk_new_str(d, "tp_degree"), pk_new_int(d, 2)));
}

static void set_autoep(pk_doc *d, pk_obj *root) {
    pk_obj *l = pk_new(d, PK_LIST), *e = pk_new(d, PK_DICT);
    CU_ASSERT_FATAL(pk_dict_set(d, e, pk_new_str(d, "checkpoint_format"), pk_new_str(d, "zero3_partitioned")));
    CU_ASSERT_FATAL(pk_list_append(d, l, e));
    CU_ASSERT_FATAL(pk_dict_set(d, root, pk_new_str(d, "ds_autoep_layers"), l));
}

static void set_mp2(pk_doc *d, pk_obj *root) {
    CU_ASSERT_FATAL(pk_dict_set(d, root, pk_new_str(d, "mp_world_size"), pk_new_int(d, 2)));
}

static void set_param_type(pk_doc *d, pk_obj *root) {
    pk_obj *g = pk_get(pk_get(root, "optimizer_state_dict"), "fp32_flat_groups");
    CU_ASSERT_FATAL(g && g->kind == PK_LIST && g->n > 0 && g->items[0]->args && g->items[0]->args->n == 4);
    pk_obj *ty = g->items[0]->args->items[1];
    ty->module = pk_strdup(d, "torch.nn.parameter");
    ty->name = pk_strdup(d, "Parameter");
}

/* Big-endian files, unknown torch formats, TP/PP, AutoEP, a tensor subclass
 * where a tensor belongs: exit 5 naming them. */
static void test_refusals(void) {
    char *dir = tu_mkdtemp();
    static const char *tag = "z3_ws2_bf16/ckpt/global_step3";
    char *root = copy_fixture(dir, tag), *ck = tu_path(root, "global_step3");
    char *m1 = tu_path(ck, "zero_pp_rank_1_mp_rank_00_model_states.pt");
    char *o0 = tu_path(ck, "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt");
    /* The untouched copy opens, and so does one rewritten as is (the rewriting
     * itself changes nothing that matters). */
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
    dsckpt_ckpt_free(c);
    rewrite_pt(o0, "byteorder", "little", 6, 64);
    TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
    dsckpt_ckpt_free(c);

    rewrite_pt(o0, "byteorder", "big", 3, 64);
    expect_unsupported(ck, "big-endian", "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt");
    dsckpt_verify_report *r = NULL;
    TU_ASSERT_OK(dsckpt_verify(ck, NULL, NULL, &r));
    CU_ASSERT_NOT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_OK);
    dsckpt_verify_report_free(r);
    rewrite_pt(o0, "byteorder", "middle", 6, 64);
    CU_ASSERT_EQUAL(dsckpt_ckpt_open(ck, NULL, &c), DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "byteorder"));
    rewrite_pt(o0, "byteorder", "little", 6, 64);
    rewrite_pt(o0, ".format_version", "2", 1, 64);
    expect_unsupported(ck, "format version 2", NULL);
    rewrite_pt(o0, ".format_version", "1", 1, 64);
    rewrite_pt(o0, ".storage_alignment", "96", 2, 64);
    CU_ASSERT_EQUAL(dsckpt_ckpt_open(ck, NULL, &c), DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), ".storage_alignment"));
    rewrite_pt(o0, ".storage_alignment", "64", 2, 64);
    TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
    dsckpt_ckpt_free(c);

    /* Layout markers in the model-states file of rank 0 (copy 1 unchanged). */
    static const struct {
        void (*edit)(pk_doc *, pk_obj *);
        const char *n1, *n2;
    } marks[] = {
        {set_tp2, "checkpoint_parallel_dimensions", "tp_degree = 2"},
        {set_autoep, "AutoEP", "zero3_partitioned"},
        {set_mp2, "mp_world_size 2", NULL},
    };
    char *m0 = tu_path(ck, "zero_pp_rank_0_mp_rank_00_model_states.pt");
    size_t len;
    uint8_t *orig = tu_read(m0, &len);
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        edit_pickle(m0, marks[i].edit);
        expect_unsupported(ck, marks[i].n1, marks[i].n2);
        CU_ASSERT_EQUAL(tu_write(m0, orig, len), 0);
    }
    free(orig);
    /* The ZeRO-3 groups pickled as another type than torch.Tensor: inert objects,
     * so the file is valid but not supported. */
    orig = tu_read(o0, &len);
    edit_pickle(o0, set_param_type);
    expect_unsupported(ck, "fp32 partition of group 0", "_rebuild_from_type_v2 as a torch.nn.parameter.Parameter");
    CU_ASSERT_EQUAL(tu_write(o0, orig, len), 0);
    free(orig);
    free(m0);
    free(m1);
    free(o0);
    free(ck);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* The member list of a torch.save file written by us: torch 2.x's. */
static void check_torch2_members(const char *path, uint64_t align) {
    int fd = open(path, O_RDONLY);
    CU_ASSERT_FATAL(fd >= 0);
    zip_archive *z = NULL;
    TU_ASSERT_OK(zip_open_fd(fd, path, &z));
    CU_ASSERT_FATAL(z->n >= 6);
    const char *want[] = {"data.pkl", ".format_version", ".storage_alignment", "byteorder"};
    size_t pl = strlen(z->prefix) + 1;
    for (int i = 0; i < 4; i++) CU_ASSERT_STRING_EQUAL(z->members[i].name + pl, want[i]);
    CU_ASSERT_STRING_EQUAL(z->members[z->n - 2].name + pl, "version");
    CU_ASSERT_STRING_EQUAL(z->members[z->n - 1].name + pl, ".data/serialization_id");
    CU_ASSERT_EQUAL(z->members[z->n - 1].size, 40);
    for (size_t i = 4; i < z->n - 2; i++) {
        char want_key[32];
        snprintf(want_key, sizeof want_key, "data/%zu", i - 4); /* numeric order */
        CU_ASSERT_STRING_EQUAL(z->members[i].name + pl, want_key);
    }
    for (size_t i = 0; i < z->n; i++) CU_ASSERT_EQUAL(z->members[i].data_offset % align, 0);
    zip_torch_meta meta;
    TU_ASSERT_OK(zip_torch_meta_read(fd, z, path, &meta));
    CU_ASSERT(meta.has_byteorder && meta.has_storage_alignment && meta.format_version == 1);
    CU_ASSERT_EQUAL(meta.storage_alignment, align);
    zip_free(z);
    close(fd);
}

/* reshard --format deepspeed writes torch 2.x's members; a source declaring
 * .storage_alignment 128 gets its storages aligned to 128. */
static void test_writer_members(void) {
    char *dir = tu_mkdtemp();
    char *root = copy_fixture(dir, "z1_ws2_bf16/ckpt/global_step3"), *ck = tu_path(root, "global_step3");
    for (int pass = 0; pass < 2; pass++) {
        uint32_t align = pass ? 128 : 64;
        if (pass) {
            static const char *const files[] = {"bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
                                                "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
                                                "mp_rank_00_model_states.pt"};
            for (int i = 0; i < 3; i++) {
                char *p = tu_path(ck, files[i]);
                rewrite_pt(p, ".storage_alignment", "128", 3, 128);
                free(p);
            }
        }
        dsckpt_ckpt *c = NULL;
        TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
        char *out = tu_path(dir, "ds");
        dsckpt_reshard_opts ro;
        dsckpt_reshard_opts_init(&ro);
        ro.world_size = 3;
        ro.format = DSCKPT_FORMAT_DEEPSPEED;
        ro.force = 1;
        TU_ASSERT_OK(dsckpt_reshard(c, out, &ro));
        char *tagdir = tu_path(out, "global_step3");
        static const char *const outs[] = {"bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
                                           "bf16_zero_pp_rank_2_mp_rank_00_optim_states.pt",
                                           "mp_rank_00_model_states.pt"};
        for (int i = 0; i < 3; i++) {
            char *p = tu_path(tagdir, outs[i]);
            check_torch2_members(p, align);
            free(p);
        }
        dsckpt_ckpt *n = NULL;
        TU_ASSERT_OK(dsckpt_ckpt_open(out, NULL, &n));
        dsckpt_ckpt_free(n);
        free(tagdir);
        free(out);
        dsckpt_ckpt_free(c);
    }
    /* synth --format deepspeed too (no template: 64). */
    char *sy = tu_path(dir, "synth");
    dsckpt_synth_opts so;
    dsckpt_synth_opts_init(&so);
    so.params = 20000;
    so.world_size = 2;
    so.zero_stage = 3;
    so.format = DSCKPT_FORMAT_DEEPSPEED;
    TU_ASSERT_OK(dsckpt_synth(sy, &so));
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(sy, NULL, &c));
    for (size_t i = 0; i < c->nfiles; i++) check_torch2_members(c->files[i].path, 64);
    dsckpt_ckpt_free(c);
    free(sy);
    free(ck);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

static void set_inf(pk_doc *d, pk_obj *root) {
    pk_obj *cfg = pk_get(root, "ds_config");
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    CU_ASSERT_FATAL(pk_dict_set(d, cfg, pk_new_str(d, "steps_per_print"), pk_new_float(d, INFINITY)));
}

/* ds_config's steps_per_print: inf (a float infinity in the pickle): valid JSON
 * everywhere, and a float infinity again in DeepSpeed files written from it,
 * also through the native format. */
static void test_float_infinity_in_config(void) {
    char *dir = tu_mkdtemp();
    char *root = copy_fixture(dir, "z2_ws2_bf16_palign/ckpt/global_step3"), *ck = tu_path(root, "global_step3");
    char *m = tu_path(ck, "mp_rank_00_model_states.pt");
    edit_pickle(m, set_inf);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
    char *desc = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_describe_json(c, &desc));
    cJSON *j = cJSON_Parse(desc);
    CU_ASSERT_PTR_NOT_NULL(j);
    cJSON_Delete(j);
    free(desc);
    /* DeepSpeed -> native -> DeepSpeed. */
    char *nat = tu_path(dir, "nat"), *ds = tu_path(dir, "ds");
    dsckpt_reshard_opts ro;
    dsckpt_reshard_opts_init(&ro);
    ro.world_size = 2;
    ro.force = 1;
    TU_ASSERT_OK(dsckpt_reshard(c, nat, &ro));
    dsckpt_ckpt *n = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(nat, NULL, &n));
    /* The native manifest is valid JSON holding the tagged float. */
    char *ntag = tu_path(nat, c->tag), *man = tu_path(ntag, "manifest.json");
    size_t mlen;
    char *mtext = (char *)tu_read(man, &mlen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mtext);
    cJSON *mj = cJSON_ParseWithLength(mtext, mlen);
    CU_ASSERT_PTR_NOT_NULL(mj);
    cJSON *spj = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(mj, "ds_config"), "steps_per_print");
    CU_ASSERT(cJSON_IsObject(spj) && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(spj, "__float__")) &&
              !strcmp(cJSON_GetObjectItemCaseSensitive(spj, "__float__")->valuestring, "inf"));
    cJSON_Delete(mj);
    free(mtext);
    free(man);
    free(ntag);
    ro.format = DSCKPT_FORMAT_DEEPSPEED;
    TU_ASSERT_OK(dsckpt_reshard(n, ds, &ro));
    char *tagdir = tu_path(ds, c->tag), *mm = tu_path(tagdir, "mp_rank_00_model_states.pt");
    tfile f;
    tfile_open(mm, &f);
    pk_obj *spp = pk_get(pk_get(f.root, "ds_config"), "steps_per_print");
    CU_ASSERT_PTR_NOT_NULL_FATAL(spp);
    CU_ASSERT_EQUAL(spp->kind, PK_FLOAT);
    CU_ASSERT(isinf(spp->f) && spp->f > 0);
    tfile_close(&f);
    dsckpt_ckpt_free(n);
    dsckpt_ckpt_free(c);
    free(mm);
    free(tagdir);
    free(nat);
    free(ds);
    free(m);
    free(ck);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

static void set_mics2(pk_doc *d, pk_obj *root) {
    pk_obj *z = pk_get(pk_get(root, "ds_config"), "zero_optimization");
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    CU_ASSERT_FATAL(pk_dict_set(d, z, pk_new_str(d, "mics_shard_size"), pk_new_int(d, 2)));
}

/* MiCS over 4 ranks with mics_shard_size 2: ranks 2 and 3 replicate ranks 0 and
 * 1, and the checkpoint reads as ZeRO-3 over 2 ranks. Without mics_shard_size the
 * same files are a partition_count mismatch (corrupt). */
static void test_mics(void) {
    char *dir = tu_mkdtemp();
    char *root = copy_fixture(dir, "z3_ws2_bf16/ckpt/global_step3"), *ck = tu_path(root, "global_step3"), cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && for r in 0 1; do cp bf16_zero_pp_rank_${r}_mp_rank_00_optim_states.pt "
             "bf16_zero_pp_rank_$((r+2))_mp_rank_00_optim_states.pt && cp zero_pp_rank_${r}_mp_rank_00_model_states.pt "
             "zero_pp_rank_$((r+2))_mp_rank_00_model_states.pt; done",
             ck);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    dsckpt_ckpt *c = NULL;
    CU_ASSERT_EQUAL(dsckpt_ckpt_open(ck, NULL, &c), DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "partition_count"));
    char *m0 = tu_path(ck, "zero_pp_rank_0_mp_rank_00_model_states.pt");
    edit_pickle(m0, set_mics2);
    TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
    CU_ASSERT_EQUAL(c->world_size, 2);
    CU_ASSERT_EQUAL(c->stage, 3);
    char *out = tu_path(dir, "out.safetensors");
    consolidate_to(c, out, DSCKPT_F32);
    check_against_truth("z3_ws2_bf16", out, DSCKPT_F32);
    dsckpt_ckpt_free(c);
    free(out);
    free(m0);
    free(ck);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

int main(void) {
    static const tu_test tests[] = {
        {"consolidate of every 0.19 fixture = the engine's true values (fp32 bitwise, bf16 RNE)",
         test_consolidate_equals_truth},
        {"exp_avg / exp_avg_sq as read, and through reshard to native M = 1, 3", test_moments_through_reshard},
        {"reshard --format deepspeed M = 1..4: same bits through our reader, verify OK", test_deepspeed_round_trip},
        {"HF Trainer ZeRO-3 checkpoint-4 = DeepSpeed's zero_to_fp32 (bitwise fp32, RNE bf16)",
         test_hf_trainer_equals_zero_to_fp32},
        {"HF Trainer checkpoint-4 / -12: verify OK, reshard --format deepspeed M = 1..4 same bits",
         test_hf_tags_round_trip},
        {"parameter_alignment kept by reshard --format deepspeed (partitions byte-equal at W = 2)", test_palign_layout_kept},
        {"every torch.save file of the 0.19 fixtures re-serialises byte for byte", test_pickle_round_trip},
        {"ZeRO-3 fp32 groups: _rebuild_from_type_v2 tensors with ds_id", test_zero3_wrapped_groups},
        {"inspect matches info.json (valid JSON); verify passes", test_inspect_and_verify},
        {"verify catches a flipped byte in a 0.19 ZeRO-3 file", test_verify_catches_damage},
        {"big-endian / unknown torch format / TP / AutoEP / mp_world_size refused as unsupported, naming them",
         test_refusals},
        {"reshard / synth --format deepspeed write torch 2.x's members; .storage_alignment honoured", test_writer_members},
        {"ds_config steps_per_print: inf -> valid JSON, a float infinity again through native", test_float_infinity_in_config},
        {"MiCS (mics_shard_size 2 over 4 ranks) reads as ZeRO-3 over 2", test_mics},
        {"ZeRO-0: same-shape parameters told apart by the fp32 masters' cast, not module order",
         test_zero0_match_by_value},
        {"ZeRO-0 to universal: refused without --stage, all states equal the truth at --stage 1-3",
         test_zero0_universal},
        {NULL, NULL}};
    return tu_main("deepspeed19", tests);
}
