/*
 * testhook.c — the one place where test hooks (environment variables that inject
 * faults or delays: DSCKPT_TEST_*, DSTRAIN_TEST_*) are read. They exist only in
 * builds configured with -DDSCKPT_TEST_HOOKS=ON (the builds scripts/build.sh and
 * scripts/test.sh make for the test suite); any other build ignores them.
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

bool ds_test_hooks_built(void) {
#ifdef DSCKPT_TEST_HOOKS
    return true;
#else
    return false;
#endif
}
