/*
 * test_integrity.c — reads are checked (a partly read chunk is hashed whole; the
 * check can be turned off; deferred verdicts for one reader reading a chunk in parts
 * fail at the chunk's last byte or at ds_fdset_finish), and verify reports "changed while verifying" instead
 * of "corrupt" when a writer replaces the checkpoint it is reading (made
 * deterministic with verify's test hook, which runs a forced reshard of the same
 * save root at a chosen point).
 */
#include "ckpt.h"
#include "fsutil.h"
#include "outsafe.h"
#include "tutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG "global_step100"

static char *synth_root(const char *dir, const char *name, int ws, uint64_t params) {
    char *root = tu_path(dir, name);
    CU_ASSERT_FATAL(root != NULL);
    dsckpt_synth_opts o;
    dsckpt_synth_opts_init(&o);
    o.params = params;
    o.world_size = ws;
    o.zero_stage = 2;
    o.threads = 2;
    TU_ASSERT_OK(dsckpt_synth(root, &o));
    return root;
}

/* A one-rank checkpoint under dir whose rank file is one chunk, opened. */
static dsckpt_ckpt *one_chunk_ckpt(const char *dir, char **root) {
    *root = synth_root(dir, "ck", 1, 20000);
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(*root, NULL, &c));
    CU_ASSERT_FATAL(c->nfiles == 1 && c->files[0].dg.nchunks == 1);
    CU_ASSERT_FATAL(c->nfrags[DS_ST_EXP_AVG] > 0);
    return c;
}

/* Flips a bit of the first exp_avg byte of c's rank file; returns the checkpoint
 * opened again (c is freed). */
static dsckpt_ckpt *damage_exp_avg(dsckpt_ckpt *c, const char *root) {
    uint64_t off = c->frags[DS_ST_EXP_AVG][0].offset;
    char *rank = ds_strdup(c->files[0].path);
    dsckpt_ckpt_free(c);
    CU_ASSERT_FATAL(rank && tu_flip_bit(rank, off, 3) == 0);
    free(rank);
    c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(root, NULL, &c));
    return c;
}

/* A byte of exp_avg (which consolidate never needs) in the chunk that also holds
 * fp32 data: the chunk is hashed whole, so consolidate still refuses. */
static void test_partly_read_chunk(void) {
    char *dir = tu_mkdtemp(), *root = NULL;
    dsckpt_ckpt *c = one_chunk_ckpt(dir, &root);
    c = damage_exp_avg(c, root);
    char *out = tu_path(dir, "out.safetensors");
    dsckpt_consolidate_opts co;
    dsckpt_consolidate_opts_init(&co);
    dsckpt_status st = dsckpt_consolidate(c, out, &co);
    CU_ASSERT_EQUAL(st, DSCKPT_ECHECKSUM);
    CU_ASSERT(strstr(dsckpt_last_error(), "rank_00000.safetensors: chunk 0") != NULL);
    CU_ASSERT(!tu_exists(out));
    /* Checks off: the fp32 bytes are intact, so the output is written. */
    dsckpt_ckpt_set_read_check(c, 0);
    TU_ASSERT_OK(dsckpt_consolidate(c, out, &co));
    CU_ASSERT(tu_exists(out));
    dsckpt_ckpt_free(c);
    free(out);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* Deferred verdicts (one reader, parts in order): an intact chunk read in two parts
 * equals the immediate read; on a damaged one the first part succeeds, the part
 * that ends the chunk fails naming it, and so does ds_fdset_finish for a chunk left
 * part-read; a chunk known bad fails at once. */
static void test_deferred(void) {
    char *dir = tu_mkdtemp(), *root = NULL;
    dsckpt_ckpt *c = one_chunk_ckpt(dir, &root);
    size_t size = (size_t)c->files[0].size;
    uint8_t *want = malloc(size), *got = malloc(size);
    CU_ASSERT_FATAL(want && got);
    ds_fdset fs;
    TU_ASSERT_OK(ds_fdset_open(c, &fs));
    TU_ASSERT_OK(ds_fdset_pread(c, &fs, 0, want, size, 0)); /* immediate: the whole chunk */
    ds_fdset_close(&fs);
    TU_ASSERT_OK(ds_fdset_open(c, &fs));
    ds_fdset_defer_checks(&fs);
    TU_ASSERT_OK(ds_fdset_pread(c, &fs, 0, got, 100, 0));
    TU_ASSERT_OK(ds_fdset_pread(c, &fs, 0, got + 100, size - 100, 100));
    TU_ASSERT_OK(ds_fdset_finish(c, &fs));
    CU_ASSERT(memcmp(got, want, size) == 0);
    ds_fdset_close(&fs);
    uint64_t off = c->frags[DS_ST_EXP_AVG][0].offset;
    CU_ASSERT_FATAL(off > 200 && off < size);
    c = damage_exp_avg(c, root);
    /* The part that ends the chunk gives the verdict. */
    TU_ASSERT_OK(ds_fdset_open(c, &fs));
    ds_fdset_defer_checks(&fs);
    TU_ASSERT_OK(ds_fdset_pread(c, &fs, 0, got, 100, 0));
    CU_ASSERT_EQUAL(ds_fdset_pread(c, &fs, 0, got + 100, size - 100, 100), DSCKPT_ECHECKSUM);
    CU_ASSERT(strstr(dsckpt_last_error(), "rank_00000.safetensors: chunk 0") != NULL);
    CU_ASSERT_EQUAL(ds_fdset_pread(c, &fs, 0, got, 100, 0), DSCKPT_ECHECKSUM); /* known bad */
    TU_ASSERT_OK(ds_fdset_finish(c, &fs)); /* nothing left pending */
    ds_fdset_close(&fs);
    /* A chunk left part-read: ds_fdset_finish reads the rest and fails. */
    TU_ASSERT_OK(ds_fdset_open(c, &fs));
    ds_fdset_defer_checks(&fs);
    TU_ASSERT_OK(ds_fdset_pread(c, &fs, 0, got, 100, 0));
    CU_ASSERT_EQUAL(ds_fdset_finish(c, &fs), DSCKPT_ECHECKSUM);
    CU_ASSERT(strstr(dsckpt_last_error(), "rank_00000.safetensors: chunk 0") != NULL);
    ds_fdset_close(&fs);
    /* A reader going elsewhere in the file (not the continuation) settles the chunk
     * first. */
    TU_ASSERT_OK(ds_fdset_open(c, &fs));
    ds_fdset_defer_checks(&fs);
    TU_ASSERT_OK(ds_fdset_pread(c, &fs, 0, got, 100, 0));
    CU_ASSERT_EQUAL(ds_fdset_pread(c, &fs, 0, got, 50, 150), DSCKPT_ECHECKSUM);
    ds_fdset_close(&fs);
    dsckpt_ckpt_free(c);
    free(want);
    free(got);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* The hook: at `hook_phase`, replace the save root with a checkpoint resharded to
 * another world size (what a concurrent `reshard --force` does). */
static const char *hook_root, *hook_src;
static int hook_phase = -1, hook_calls;
static void replace_root(const char *tag_dir, int phase) {
    (void)tag_dir;
    if (phase != hook_phase || hook_calls++) return;
    dsckpt_ckpt *c = NULL;
    TU_ASSERT_OK(dsckpt_ckpt_open(hook_src, NULL, &c));
    dsckpt_reshard_opts ro;
    dsckpt_reshard_opts_init(&ro);
    ro.world_size = 3;
    ro.force = 1;
    TU_ASSERT_OK(dsckpt_reshard(c, hook_root, &ro));
    dsckpt_ckpt_free(c);
}

static void rewrite_latest(const char *tag_dir, int phase) {
    (void)tag_dir;
    if (phase != 1) return;
    hook_calls++;
    char *lp = tu_path(hook_root, "latest");
    TU_ASSERT_OK(ds_write_file_atomic(lp, TAG, strlen(TAG))); /* a new inode, same tag */
    free(lp);
}

static void test_changed_while_verifying(void) {
    char *dir = tu_mkdtemp();
    char *root = synth_root(dir, "ck", 2, 20000);
    char *src = synth_root(dir, "src", 4, 20000);
    hook_root = root;
    hook_src = src;
    CU_ASSERT_FATAL(ds_test_set_verify_hook(replace_root)); /* a -DDSCKPT_TEST_HOOKS=ON build */
    for (int phase = 0; phase < 2; phase++) {
        /* phase 0: the files of the manifest read first are gone or different by the
         * time they are hashed (this said "corrupt" before); phase 1: everything
         * read was consistent, but the checkpoint is no longer what was read. */
        hook_phase = phase;
        hook_calls = 0;
        for (int by_tag = 0; by_tag < 2; by_tag++) {
            hook_calls = 0;
            dsckpt_verify_report *r = NULL;
            TU_ASSERT_OK(dsckpt_verify(root, by_tag ? TAG : NULL, NULL, &r));
            CU_ASSERT_EQUAL(hook_calls, 1);
            CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_UNREADABLE);
            CU_ASSERT(dsckpt_verify_report_changed(r));
            CU_ASSERT_EQUAL_FATAL(dsckpt_verify_report_tag_count(r), 1);
            CU_ASSERT_STRING_EQUAL(dsckpt_verify_report_tag_name(r, 0), TAG);
            CU_ASSERT(dsckpt_verify_report_tag_changed(r, 0));
            bool said = false;
            for (size_t i = 0; i < dsckpt_verify_report_count(r); i++)
                said |= strstr(dsckpt_verify_report_problem(r, i), "changed while verifying") != NULL;
            CU_ASSERT(said);
            dsckpt_verify_report_free(r);
        }
    }
    /* A writer that only moves `latest` (a training run committing a new step)
     * changes nothing verify of a save root read: every tag keeps its verdict. */
    ds_test_set_verify_hook(rewrite_latest);
    hook_calls = 0;
    {
        dsckpt_verify_report *r = NULL;
        TU_ASSERT_OK(dsckpt_verify(root, NULL, NULL, &r));
        CU_ASSERT(hook_calls >= 1);
        CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_OK);
        CU_ASSERT(!dsckpt_verify_report_changed(r));
        dsckpt_verify_report_free(r);
    }
    /* Without a writer the replaced root verifies clean. */
    ds_test_set_verify_hook(NULL);
    dsckpt_verify_report *r = NULL;
    TU_ASSERT_OK(dsckpt_verify(root, NULL, NULL, &r));
    CU_ASSERT_EQUAL(dsckpt_verify_report_result(r), DSCKPT_VERIFY_OK);
    CU_ASSERT(!dsckpt_verify_report_changed(r));
    dsckpt_verify_report_free(r);
    free(src);
    free(root);
    tu_rmtree(dir);
    free(dir);
}

/* Only names of exactly our pattern are ever treated as our temporaries. */
static void test_temp_names(void) {
    long pid = 0;
    bool old = true;
    CU_ASSERT(ds_parse_temp_name(".model.safetensors.tmp-1234-0", "model.safetensors", &pid, &old));
    CU_ASSERT_EQUAL(pid, 1234);
    CU_ASSERT(!old);
    CU_ASSERT(ds_parse_temp_name(".out.old-77-12", "out", &pid, &old));
    CU_ASSERT(old && pid == 77);
    CU_ASSERT(ds_parse_temp_name(".a.tmp-5-6", NULL, NULL, NULL));
    static const char *const no[] = {
        "model.safetensors.tmp-1234-0",   /* no leading dot */
        ".model.safetensors.tmp-1234-",   /* no counter */
        ".model.safetensors.tmp--0",      /* no pid */
        ".model.safetensors.tmp-12x4-0",  /* not digits */
        ".model.safetensors.tmp-0-0",     /* pid 0 */
        ".model.safetensors.tmp-99999999999-0", /* pid out of range */
        ".model.safetensors.temp-1234-0", /* another word */
        ".tmp-1234-0",                    /* empty base */
        ".model.safetensors.tmp-1234-0-", /* trailing garbage */
        "..tmp-1-2",
        "",
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) CU_ASSERT(!ds_parse_temp_name(no[i], NULL, NULL, NULL));
    /* The base must match exactly. */
    CU_ASSERT(!ds_parse_temp_name(".model.safetensors.tmp-1234-0", "model", NULL, NULL));
    CU_ASSERT(!ds_parse_temp_name(".xmodel.tmp-1234-0", "model", NULL, NULL));
}

int main(void) {
    static const tu_test tests[] = {
        {"a partly read chunk is hashed whole; checks can be turned off", test_partly_read_chunk},
        {"deferred verdicts: at the chunk's last byte or at ds_fdset_finish", test_deferred},
        {"verify under a concurrent forced reshard says 'changed', not 'corrupt'", test_changed_while_verifying},
        {"temporary names: our pattern exactly", test_temp_names},
        {NULL, NULL},
    };
    return tu_main("integrity", tests);
}
