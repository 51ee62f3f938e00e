/*
 * test_deepspeed.c — checkpoints written by real DeepSpeed (fixtures/deepspeed/,
 * DeepSpeed 0.14.5) read without Python: for every fixture, consolidate --dtype
 * fp32 equals the engine's true values (expected/truth.safetensors: the fp32,
 * frozen and buffer entries, the latter two in their own dtypes) bit for bit,
 * tied aliases included; bf16/fp16 outputs are the round-to-nearest-even cast of
 * the truth; the Adam moments reached through reshard equal the truth's exp_avg
 * and exp_avg_sq entries; verify passes and catches damage.
 */
#include "cast.h"
#include "ckpt.h"
#include "fsutil.h"
#include "safetensors.h"
#include "truth.h"
#include "tutil.h"
#include "zip.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *fixtures[] = {"z1_ws2_bf16",  "z1_ws2_bf16opt", "z2_ws4_bf16_edge",
                                 "z2_ws4_fp32",  "z3_ws2_bf16",    "z3_ws4_fp32_1g"};
#define NFIX (sizeof fixtures / sizeof fixtures[0])

static char *fixture_path(const char *fx, const char *rel) {
    char buf[512];
    snprintf(buf, sizeof buf, "fixtures/deepspeed/%s/%s", fx, rel);
    return tu_src_path(buf);
}

/* A consolidated file against fixture fx's truth (truth.h). */
static void check_against_truth(const char *fx, const char *outpath, dsckpt_dtype out, bool frozen_expected) {
    char *tp = fixture_path(fx, "expected/truth.safetensors");
    tt_check_consolidated(fx, tp, outpath, out, frozen_expected);
    free(tp);
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
        static const dsckpt_dtype outs[] = {DSCKPT_F32, DSCKPT_BF16, DSCKPT_F16};
        for (int o = 0; o < 3; o++) {
            char *out = tu_path(dir, "out.safetensors");
            dsckpt_consolidate_opts co;
            dsckpt_consolidate_opts_init(&co);
            co.dtype = outs[o];
            co.force = 1;
            TU_ASSERT_OK(dsckpt_consolidate(c, out, &co));
            check_against_truth(fixtures[i], out, outs[o], true);
            co.exclude_frozen = 1;
            TU_ASSERT_OK(dsckpt_consolidate(c, out, &co));
            check_against_truth(fixtures[i], out, outs[o], false);
            free(out);
        }
        dsckpt_ckpt_free(c);
        free(ck);
    }
    tu_rmtree(dir);
    free(dir);
}

/* Adam moments through reshard into the native format, for several M. */
static void test_moments_through_reshard(void) {
    char *dir = tu_mkdtemp();
    for (size_t i = 0; i < NFIX; i++) {
        char *ck = fixture_path(fixtures[i], "ckpt"), *tp = fixture_path(fixtures[i], "expected/truth.safetensors");
        dsckpt_ckpt *c = NULL;
        TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
        tt_file truth;
        tt_open(tp, &truth);
        static const int Ms[] = {1, 3, 4};
        for (int mi = 0; mi < 3; mi++) tt_check_reshard_states(fixtures[i], c, &truth, dir, Ms[mi]);
        tt_close(&truth);
        dsckpt_ckpt_free(c);
        free(ck);
        free(tp);
    }
    tu_rmtree(dir);
    free(dir);
}

/* DeepSpeed fixture -> reshard --to M --format deepspeed -> our reader: the same
 * bits (consolidated weights, frozen, buffers, ties; fp32 master and moments),
 * a clean verify, and the files DeepSpeed's loader looks for at world size M. */
static void test_deepspeed_round_trip(void) {
    char *dir = tu_mkdtemp();
    for (size_t i = 0; i < NFIX; i++) {
        char *ck = fixture_path(fixtures[i], "ckpt"), *tp = fixture_path(fixtures[i], "expected/truth.safetensors");
        dsckpt_ckpt *c = NULL;
        TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
        tt_file truth;
        tt_open(tp, &truth);
        static const int Ms[] = {1, 2, 3, 4, 8};
        for (int mi = 0; mi < 5; mi++) {
            int M = Ms[mi];
            char *out = tu_path(dir, "ds");
            dsckpt_reshard_opts ro;
            dsckpt_reshard_opts_init(&ro);
            ro.world_size = M;
            ro.format = DSCKPT_FORMAT_DEEPSPEED;
            ro.force = 1;
            TU_ASSERT_OK(dsckpt_reshard(c, out, &ro));
            /* DeepSpeed's file names for M ranks, nothing else. */
            char *tagdir = tu_path(out, c->tag);
            bool bf16 = !strcmp(c->train_dtype, "bf16");
            size_t want_files = (size_t)M + (c->stage == 3 ? (size_t)M : 1), nfiles = 0;
            for (int r = 0; r < M; r++) {
                char name[128];
                snprintf(name, sizeof name, "%s/%szero_pp_rank_%d_mp_rank_00_optim_states.pt", tagdir, bf16 ? "bf16_" : "", r);
                CU_ASSERT(tu_exists(name));
                if (c->stage == 3) {
                    snprintf(name, sizeof name, "%s/zero_pp_rank_%d_mp_rank_00_model_states.pt", tagdir, r);
                    CU_ASSERT(tu_exists(name));
                }
            }
            DIR *dd = opendir(tagdir);
            CU_ASSERT_PTR_NOT_NULL_FATAL(dd);
            for (struct dirent *e; (e = readdir(dd));) nfiles += e->d_name[0] != '.';
            closedir(dd);
            CU_ASSERT_EQUAL(nfiles, want_files);

            dsckpt_ckpt *n = NULL;
            TU_ASSERT_OK(dsckpt_ckpt_open(out, NULL, &n));
            CU_ASSERT_STRING_EQUAL(n->format, "deepspeed");
            CU_ASSERT_EQUAL(n->world_size, M);
            CU_ASSERT_EQUAL(n->stage, c->stage);
            CU_ASSERT_EQUAL(n->step, c->step);
            CU_ASSERT_STRING_EQUAL(n->train_dtype, c->train_dtype);
            tt_check_states(fixtures[i], M, n, &truth);
            char *cons = tu_path(dir, "cons.safetensors");
            dsckpt_consolidate_opts co;
            dsckpt_consolidate_opts_init(&co);
            co.dtype = DSCKPT_F32;
            co.force = 1;
            TU_ASSERT_OK(dsckpt_consolidate(n, cons, &co));
            check_against_truth(fixtures[i], cons, DSCKPT_F32, true);
            dsckpt_verify_report *rep = NULL;
            TU_ASSERT_OK(dsckpt_verify(out, NULL, NULL, &rep));
            CU_ASSERT_EQUAL(dsckpt_verify_report_result(rep), DSCKPT_VERIFY_OK);
            dsckpt_verify_report_free(rep);
            dsckpt_ckpt_free(n);
            free(cons);
            free(tagdir);
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

/* a and b consolidate to the same bytes, as bf16 and as fp32. */
static void same_consolidation(const char *dir, dsckpt_ckpt *a, dsckpt_ckpt *b) {
    for (int o = 0; o < 2; o++) {
        char *pa = tu_path(dir, "a.safetensors"), *pb = tu_path(dir, "b.safetensors");
        dsckpt_consolidate_opts co;
        dsckpt_consolidate_opts_init(&co);
        co.dtype = o ? DSCKPT_F32 : DSCKPT_BF16;
        co.force = 1;
        TU_ASSERT_OK(dsckpt_consolidate(a, pa, &co));
        TU_ASSERT_OK(dsckpt_consolidate(b, pb, &co));
        CU_ASSERT(tu_same_file(pa, pb));
        free(pa);
        free(pb);
    }
}

/* Every state element of a and b equal through the fragment maps. */
static void same_states(dsckpt_ckpt *a, dsckpt_ckpt *b) {
    ds_fdset fa, fb;
    TU_ASSERT_OK(ds_fdset_open(a, &fa));
    TU_ASSERT_OK(ds_fdset_open(b, &fb));
    CU_ASSERT_EQUAL_FATAL(a->ntensors, b->ntensors);
    for (uint32_t t = 0; t < a->ntensors; t++) {
        int tb = -1;
        for (uint32_t u = 0; u < b->ntensors; u++)
            if (!strcmp(a->tensors[t].name, b->tensors[u].name)) tb = (int)u;
        CU_ASSERT_FATAL(tb >= 0);
        for (int s = 0; s < DS_NSTATES; s++) {
            if (!ds_state_applies(&a->tensors[t], (ds_state)s) || a->tensors[t].buffer) continue;
            size_t bytes = a->tensors[t].numel * dsckpt_dtype_size(ds_ckpt_state_dtype(a, (ds_state)s, t));
            uint8_t *x = malloc(bytes + 1), *y = malloc(bytes + 1);
            TU_ASSERT_OK(ds_ckpt_read(a, &fa, (ds_state)s, t, 0, a->tensors[t].numel, x));
            TU_ASSERT_OK(ds_ckpt_read(b, &fb, (ds_state)s, (uint32_t)tb, 0, a->tensors[t].numel, y));
            CU_ASSERT(memcmp(x, y, bytes) == 0);
            free(x);
            free(y);
        }
    }
    ds_fdset_close(&fa);
    ds_fdset_close(&fb);
}

/* One stage, dtype and world size W: native and DeepSpeed synth hold the same. */
static void synth_deepspeed_case(const char *dir, int stage, dsckpt_dtype dt, int W) {
    char *nat = tu_path(dir, "nat"), *dsd = tu_path(dir, "dsd");
    dsckpt_synth_opts so;
    dsckpt_synth_opts_init(&so);
    so.params = 150000;
    so.world_size = W;
    so.zero_stage = stage;
    so.dtype = dt;
    so.force = 1;
    TU_ASSERT_OK(dsckpt_synth(nat, &so));
    so.format = DSCKPT_FORMAT_DEEPSPEED;
    TU_ASSERT_OK(dsckpt_synth(dsd, &so));
    dsckpt_ckpt *a = NULL, *b = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(nat, NULL, &a));
    TU_ASSERT_OK(dsckpt_ckpt_open(dsd, NULL, &b));
    CU_ASSERT_STRING_EQUAL(b->format, "deepspeed");
    CU_ASSERT_EQUAL(b->stage, stage);
    CU_ASSERT_EQUAL(b->world_size, W);
    CU_ASSERT_STRING_EQUAL(b->train_dtype, a->train_dtype);
    same_consolidation(dir, a, b);
    same_states(a, b);
    /* DeepSpeed loads a checkpoint only at its own stage. */
    dsckpt_reshard_opts ro;
    dsckpt_reshard_opts_init(&ro);
    ro.world_size = 2;
    ro.format = DSCKPT_FORMAT_DEEPSPEED;
    ro.zero_stage = stage == 3 ? 2 : 3;
    char *bad = tu_path(dir, "bad");
    CU_ASSERT_EQUAL(dsckpt_reshard(b, bad, &ro), DSCKPT_EUNSUPPORTED);
    CU_ASSERT(strstr(dsckpt_last_error(), "stage") != NULL);
    CU_ASSERT(!tu_exists(bad));
    free(bad);
    dsckpt_ckpt_free(a);
    dsckpt_ckpt_free(b);
    free(nat);
    free(dsd);
}

/* synth --format deepspeed holds exactly what the native synth holds: for stages
 * 1-3 and each dtype, both consolidate to the same bytes and every state reads
 * back equal. A DeepSpeed stage cannot change through reshard. */
static void test_synth_deepspeed(void) {
    char *dir = tu_mkdtemp();
    static const int stages[] = {1, 2, 3};
    static const dsckpt_dtype dts[] = {DSCKPT_BF16, DSCKPT_F16, DSCKPT_F32};
    static const int Ws[] = {1, 3, 4};
    for (int si = 0; si < 3; si++)
        for (int di = 0; di < 3; di++) synth_deepspeed_case(dir, stages[si], dts[di], Ws[(si + di) % 3]);
    tu_rmtree(dir);
    free(dir);
}

static void test_inspect_and_verify(void) {
    for (size_t i = 0; i < NFIX; i++) {
        char *ck = fixture_path(fixtures[i], "ckpt"), *info = fixture_path(fixtures[i], "expected/info.json");
        size_t len;
        char *text = (char *)tu_read(info, &len);
        cJSON *j = cJSON_ParseWithLength(text, len);
        dsckpt_ckpt *c = NULL;
        TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
        CU_ASSERT_EQUAL(c->stage, cJSON_GetObjectItem(j, "zero_stage")->valueint);
        CU_ASSERT_EQUAL(c->world_size, cJSON_GetObjectItem(j, "world_size")->valueint);
        CU_ASSERT_STRING_EQUAL(c->tag, cJSON_GetObjectItem(j, "tag")->valuestring);
        char *desc = NULL;
        TU_ASSERT_OK(dsckpt_ckpt_describe_json(c, &desc));
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

/* Damage to a copy of a fixture: verify names it. */
static void test_verify_catches_damage(void) {
    char *dir = tu_mkdtemp();
    char *src = fixture_path("z2_ws4_fp32", "ckpt"), cmd[2048];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s/ck'", src, dir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    char *tagdir = tu_path(dir, "ck/global_step3"), *ck = tu_path(dir, "ck");
    char *opt1 = tu_path(tagdir, "zero_pp_rank_1_mp_rank_00_optim_states.pt");
    /* A flipped bit in a storage: the member's CRC-32 fails. */
    size_t len;
    uint8_t *orig = tu_read(opt1, &len);
    CU_ASSERT_FATAL(orig && len > 100000);
    CU_ASSERT_EQUAL(tu_flip_bit(opt1, len / 2, 3), 0);
    dsckpt_verify_report *r = NULL;
    TU_ASSERT_OK(dsckpt_verify(ck, NULL, NULL, &r));
    CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_CORRUPT);
    bool named = false;
    for (size_t k = 0; k < dsckpt_verify_report_count(r); k++)
        named |= strstr(dsckpt_verify_report_problem(r, k), "zero_pp_rank_1_mp_rank_00_optim_states.pt") &&
                 strstr(dsckpt_verify_report_problem(r, k), "CRC");
    CU_ASSERT(named);
    dsckpt_verify_report_free(r);
    CU_ASSERT_EQUAL(tu_write(opt1, orig, len), 0);
    /* A missing rank file. */
    char *moved = tu_path(dir, "moved.pt");
    CU_ASSERT_EQUAL(rename(opt1, moved), 0);
    TU_ASSERT_OK(dsckpt_verify(ck, NULL, NULL, &r));
    CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_CORRUPT);
    CU_ASSERT(dsckpt_verify_report_count(r) > 0 && strstr(dsckpt_verify_report_problem(r, 0), "rank 1"));
    dsckpt_verify_report_free(r);
    dsckpt_ckpt *c = NULL;
    CU_ASSERT_EQUAL(dsckpt_ckpt_open(ck, NULL, &c), DSCKPT_ECORRUPT);
    CU_ASSERT_EQUAL(rename(moved, opt1), 0);
    /* A stale extra rank file (a rank 4 from a bigger run). */
    char *extra = tu_path(tagdir, "zero_pp_rank_4_mp_rank_00_optim_states.pt");
    CU_ASSERT_EQUAL(tu_write(extra, orig, len), 0);
    CU_ASSERT_EQUAL(dsckpt_ckpt_open(ck, NULL, &c), DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "partition_count"));
    unlink(extra);
    /* A truncated file. */
    CU_ASSERT_EQUAL(tu_truncate(opt1, len - 100), 0);
    TU_ASSERT_OK(dsckpt_verify(ck, NULL, NULL, &r));
    CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_CORRUPT);
    dsckpt_verify_report_free(r);
    CU_ASSERT_EQUAL(tu_write(opt1, orig, len), 0);
    TU_ASSERT_OK(dsckpt_verify(ck, NULL, NULL, &r));
    CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_OK);
    dsckpt_verify_report_free(r);
    free(orig);
    free(extra);
    free(moved);
    free(opt1);
    free(tagdir);
    free(ck);
    free(src);
    tu_rmtree(dir);
    free(dir);
}

static void test_refusals(void) {
    char *dir = tu_mkdtemp();
    char *src = fixture_path("z1_ws2_bf16", "ckpt/global_step3"), cmd[2048];
    /* Tensor-parallel, pipeline and MoE layouts are refused with what was found. */
    static const struct { const char *extra; const char *msg; } cases[] = {
        {"mp_rank_01_model_states.pt", "tensor/model-parallel"},
        {"layer_01-model_00-model_states.pt", "pipeline-parallel"},
        {"expert_0_mp_rank_00_model_states.pt", "mixture-of-experts"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s/t' && cp -r '%s' '%s/t' && : > '%s/t/%s'", dir, src, dir, dir,
                 cases[i].extra);
        CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
        char *t = tu_path(dir, "t");
        dsckpt_ckpt *c = NULL;
        CU_ASSERT_EQUAL(dsckpt_ckpt_open(t, NULL, &c), DSCKPT_EUNSUPPORTED);
        CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), cases[i].msg));
        CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), cases[i].extra));
        free(t);
    }
    /* A legacy (non-zip) torch file: a pickle stream (PROTO 2 first; octal escapes,
     * as /bin/sh's printf has no \x). */
    snprintf(cmd, sizeof cmd, "rm -rf '%s/t' && cp -r '%s' '%s/t' && printf '\\200\\002legacy' > '%s/t/mp_rank_00_model_states.pt'",
             dir, src, dir, dir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    char *t = tu_path(dir, "t");
    dsckpt_ckpt *c = NULL;
    CU_ASSERT_EQUAL(dsckpt_ckpt_open(t, NULL, &c), DSCKPT_EUNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "legacy"));
    free(t);
    free(src);
    tu_rmtree(dir);
    free(dir);
}

/* A damaged storage in the template's model-states file: reshard --format
 * deepspeed refuses with ECHECKSUM (a buffer or other carried member copied
 * through is checked against its source CRC-32 before its file is finished),
 * and leaves nothing behind. With read checks off it is written as read. */
static void test_reshard_template_damage(void) {
    char *dir = tu_mkdtemp();
    char *src = fixture_path("z2_ws4_fp32", "ckpt"), cmd[2048];
    char *ck = tu_path(dir, "ck"), *out = tu_path(dir, "out");
    char *pt = tu_path(dir, "ck/global_step3/mp_rank_00_model_states.pt");
    for (int k = 0; k < 5; k++) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' && cp -r '%s' '%s'", ck, out, src, ck);
        CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
        int fd = -1;
        zip_archive *z = NULL;
        TU_ASSERT_OK(ds_open_read(pt, &fd, NULL));
        TU_ASSERT_OK(zip_open_fd(fd, pt, &z));
        char rel[16];
        snprintf(rel, sizeof rel, "data/%d", k);
        const zip_member *m = zip_find_rel(z, rel);
        CU_ASSERT_FATAL(m != NULL && m->size > 0);
        uint64_t at = m->data_offset + m->size / 2;
        zip_free(z);
        close(fd);
        CU_ASSERT_EQUAL(tu_flip_bit(pt, (size_t)at, 1), 0);
        dsckpt_ckpt *c = NULL;
        TU_ASSERT_OK(dsckpt_ckpt_open(ck, NULL, &c));
        dsckpt_reshard_opts ro;
        dsckpt_reshard_opts_init(&ro);
        ro.world_size = 2;
        ro.format = DSCKPT_FORMAT_DEEPSPEED;
        CU_ASSERT_EQUAL(dsckpt_reshard(c, out, &ro), DSCKPT_ECHECKSUM);
        CU_ASSERT(strstr(dsckpt_last_error(), "CRC-32 mismatch") != NULL);
        snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -v '^ck$' | grep -q .", dir);
        CU_ASSERT_NOT_EQUAL(system(cmd), 0); /* no output, no temporary left beside it */
        dsckpt_ckpt_set_read_check(c, 0);
        TU_ASSERT_OK(dsckpt_reshard(c, out, &ro));
        dsckpt_ckpt_free(c);
    }
    tu_rmtree(dir);
    free(src);
    free(ck);
    free(out);
    free(pt);
    free(dir);
}

int main(void) {
    static const tu_test tests[] = {
        {"consolidate of every fixture = the engine's true values (fp32/bf16/fp16, frozen, buffers, ties)",
         test_consolidate_equals_truth},
        {"exp_avg / exp_avg_sq through reshard to native M = 1, 3, 4", test_moments_through_reshard},
        {"reshard --format deepspeed M = 1, 2, 3, 4, 8: same bits through our reader, verify OK", test_deepspeed_round_trip},
        {"synth --format deepspeed = native synth (stages 1-3, bf16/fp16/fp32); stage kept", test_synth_deepspeed},
        {"inspect matches info.json; verify passes on every fixture", test_inspect_and_verify},
        {"verify catches a flipped bit, a missing rank, a stale rank, truncation", test_verify_catches_damage},
        {"reshard --format deepspeed refuses a damaged template storage, leaves nothing", test_reshard_template_damage},
        {"TP / PP / MoE / legacy files refused with what was found", test_refusals},
        {NULL, NULL}};
    return tu_main("deepspeed", tests);
}
