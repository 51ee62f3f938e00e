/*
 * testhook.c — the one place where test hooks (environment variables that inject
 * faults or delays: DSCKPT_TEST_*, DSTRAIN_TEST_*) are read. They exist only in
 * builds configured with -DDSCKPT_TEST_HOOKS=ON (the builds scripts/build.sh and
 * scripts/test.sh make for the test suite); any other build ignores them. The
 * same holds for verify's in-process hook (ds_test_set_verify_hook).
 */
#include "internal.h"

#include <stdlib.h>

const char *ds_test_hook(const char *name) {
#ifdef DSCKPT_TEST_HOOKS
    const char *v = getenv(name);
    return v && *v ? v : NULL;
#else
    (void)name;
    return NULL;
#endif
}

#ifdef DSCKPT_TEST_HOOKS
static ds_verify_hook_fn verify_hook;
#endif

bool ds_test_set_verify_hook(ds_verify_hook_fn fn) {
#ifdef DSCKPT_TEST_HOOKS
    verify_hook = fn;
    return true;
#else
    (void)fn;
    return false;
#endif
}

void ds_test_verify_point(const char *tag_dir, int phase) {
#ifdef DSCKPT_TEST_HOOKS
    if (verify_hook) verify_hook(tag_dir, phase);
#else
    (void)tag_dir;
    (void)phase;
#endif
}

bool ds_test_hooks_built(void) {
#ifdef DSCKPT_TEST_HOOKS
    return true;
#else
    return false;
#endif
}
