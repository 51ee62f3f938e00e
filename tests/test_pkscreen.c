/*
 * test_pkscreen.c — the allow-list of globals a written pickle may refer to, and
 * the screen that finds and drops everything else (formats/pickle.h, pk_screen).
 */
#include "pickle.h"
#include "tutil.h"

#include <stdlib.h>
#include <string.h>

typedef struct found {
    int n;
    char what[8][160];
} found;

static void collect(void *u, const char *module, const char *name, const char *path) {
    found *f = u;
    if (f->n < 8) snprintf(f->what[f->n], sizeof f->what[0], "%s.%s at %s", module, name, path);
    f->n++;
}

/* Parses `bytes` (a protocol-2 pickle written out by hand), screens it. */
static dsckpt_status screen(const char *bytes, size_t len, bool drop, found *f, size_t *count, pk_doc **doc,
                            pk_obj **root) {
    memset(f, 0, sizeof *f);
    TU_ASSERT_OK(pk_parse((const uint8_t *)bytes, len, "test.pkl", NULL, doc, root));
    return pk_screen(*root, drop, collect, f, count);
}

#define P(s) s, sizeof(s) - 1

static void test_allow_list(void) {
    CU_ASSERT(pk_global_allowed("torch._utils", "_rebuild_tensor_v2"));
    CU_ASSERT(pk_global_allowed("torch._tensor", "_rebuild_from_type_v2"));
    CU_ASSERT(pk_global_allowed("torch", "FloatStorage"));
    CU_ASSERT(pk_global_allowed("torch", "BFloat16Storage"));
    CU_ASSERT(pk_global_allowed("torch", "bfloat16"));
    CU_ASSERT(pk_global_allowed("torch", "Size"));
    CU_ASSERT(pk_global_allowed("collections", "OrderedDict"));
    CU_ASSERT(pk_global_allowed("__builtin__", "set"));
    CU_ASSERT(pk_global_allowed("deepspeed.runtime.zero.config", "ZeroStageEnum"));
    CU_ASSERT(pk_global_allowed("deepspeed.runtime.fp16.loss_scaler", "LossScaler"));
    CU_ASSERT(pk_global_allowed("deepspeed.utils.tensor_fragment", "fragment_address"));
    CU_ASSERT(!pk_global_allowed("posix", "system"));
    CU_ASSERT(!pk_global_allowed("os", "system"));
    CU_ASSERT(!pk_global_allowed("builtins", "eval"));
    CU_ASSERT(!pk_global_allowed("builtins", "exec"));
    CU_ASSERT(!pk_global_allowed("__builtin__", "__import__"));
    CU_ASSERT(!pk_global_allowed("torch", "load"));
    CU_ASSERT(!pk_global_allowed("torch", "Storage;x"));
    CU_ASSERT(!pk_global_allowed("torch", "storage"));
    CU_ASSERT(!pk_global_allowed("torch.serialization", "load"));
    CU_ASSERT(!pk_global_allowed("numpy.core.multiarray", "_reconstruct"));
    CU_ASSERT(!pk_global_allowed("subprocess", "Popen"));
    CU_ASSERT(!pk_global_allowed(NULL, "x"));
}

static void test_client_state_call(void) {
    /* {'a': 1, 'evil': posix.system('id')} */
    static const char pk[] = "\x80\x02}(X\x01\x00\x00\x00" "aK\x01X\x04\x00\x00\x00" "evilcposix\nsystem\n"
                             "X\x02\x00\x00\x00id\x85Ru.";
    found f;
    size_t n = 0;
    pk_doc *d = NULL;
    pk_obj *root = NULL;
    TU_ASSERT_OK(screen(P(pk), false, &f, &n, &d, &root));
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_STRING_EQUAL(f.what[0], "posix.system at ['evil']");
    CU_ASSERT_EQUAL(root->n, 2); /* nothing dropped without drop */
    TU_ASSERT_OK(pk_screen(root, true, collect, &f, &n));
    CU_ASSERT_EQUAL(root->n, 1);
    CU_ASSERT_PTR_NOT_NULL(pk_get(root, "a"));
    CU_ASSERT_PTR_NULL(pk_get(root, "evil"));
    uint8_t *out = NULL;
    size_t len = 0;
    TU_ASSERT_OK(pk_serialize(root, &out, &len));
    CU_ASSERT_PTR_NULL(memmem(out, len, "posix", 5));
    CU_ASSERT_PTR_NULL(memmem(out, len, "system", 6));
    pk_doc *d2 = NULL;
    pk_obj *r2 = NULL;
    TU_ASSERT_OK(pk_parse(out, len, "out.pkl", NULL, &d2, &r2));
    TU_ASSERT_OK(pk_screen(r2, false, NULL, NULL, &n));
    CU_ASSERT_EQUAL(n, 0);
    pk_doc_free(d2);
    free(out);
    pk_doc_free(d);
}

static void test_nested_and_shared(void) {
    /* {'keep': {'ok': 1, 'hook': builtins.eval}, 'l': [1, builtins.eval]}: the
     * nearest dict entry is dropped, a list's whole entry. */
    static const char pk[] = "\x80\x02}(X\x04\x00\x00\x00keep}(X\x02\x00\x00\x00okK\x01X\x04\x00\x00\x00hook"
                             "cbuiltins\neval\nq\x00uX\x01\x00\x00\x00l](K\x01h\x00" "eu.";
    found f;
    size_t n = 0;
    pk_doc *d = NULL;
    pk_obj *root = NULL;
    TU_ASSERT_OK(screen(P(pk), false, &f, &n, &d, &root));
    CU_ASSERT_EQUAL(n, 1); /* one object, memoised: reported once */
    CU_ASSERT_STRING_EQUAL(f.what[0], "builtins.eval at ['keep']['hook']");
    TU_ASSERT_OK(pk_screen(root, true, NULL, NULL, &n));
    pk_obj *keep = pk_get(root, "keep");
    CU_ASSERT_PTR_NOT_NULL_FATAL(keep);
    CU_ASSERT_EQUAL(keep->n, 1);
    CU_ASSERT_PTR_NOT_NULL(pk_get(keep, "ok"));
    CU_ASSERT_PTR_NULL(pk_get(root, "l")); /* the shared object was reached again there */
    uint8_t *out = NULL;
    size_t len = 0;
    TU_ASSERT_OK(pk_serialize(root, &out, &len));
    CU_ASSERT_PTR_NULL(memmem(out, len, "eval", 4));
    free(out);
    pk_doc_free(d);
}

static void test_reported_places(void) {
    /* In an object's arguments and state, in a dict key, and as an object's class:
     * {'o': collections.OrderedDict() with BUILD state {'x': os.system},
     *  (os.getcwd,): 1, 'c': NEWOBJ(mymod.Thing)} */
    static const char pk[] = "\x80\x02}(X\x01\x00\x00\x00occollections\nOrderedDict\n)R}X\x01\x00\x00\x00x"
                             "cos\nsystem\nsbcos\ngetcwd\n\x85K\x01X\x01\x00\x00\x00" "ccmymod\nThing\n)\x81u.";
    found f;
    size_t n = 0;
    pk_doc *d = NULL;
    pk_obj *root = NULL;
    TU_ASSERT_OK(screen(P(pk), false, &f, &n, &d, &root));
    CU_ASSERT_EQUAL(n, 3);
    CU_ASSERT_STRING_EQUAL(f.what[0], "os.system at ['o'].state['x']");
    CU_ASSERT_STRING_EQUAL(f.what[1], "os.getcwd at [<tuple key>][0]");
    CU_ASSERT_STRING_EQUAL(f.what[2], "mymod.Thing at ['c']");
    TU_ASSERT_OK(pk_screen(root, true, NULL, NULL, &n));
    /* The nearest dict entries: state['x'] inside 'o' (which stays), the tuple-keyed
     * entry and 'c'. */
    CU_ASSERT_EQUAL_FATAL(root->n, 1);
    pk_obj *o = pk_get(root, "o");
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o->state);
    CU_ASSERT_EQUAL(o->state->n, 0);
    pk_doc_free(d);
    /* Not inside any dict: cannot be dropped. */
    static const char top[] = "\x80\x02](cos\nsystem\ne.";
    TU_ASSERT_OK(pk_parse((const uint8_t *)top, sizeof top - 1, "t.pkl", NULL, &d, &root));
    CU_ASSERT_EQUAL(pk_screen(root, true, NULL, NULL, &n), DSCKPT_EUNSUPPORTED);
    pk_doc_free(d);
    /* Only allow-listed globals: nothing found. */
    static const char okp[] = "\x80\x02}X\x01\x00\x00\x00" "dccollections\nOrderedDict\n)Rs.";
    TU_ASSERT_OK(pk_parse((const uint8_t *)okp, sizeof okp - 1, "ok.pkl", NULL, &d, &root));
    TU_ASSERT_OK(pk_screen(root, false, NULL, NULL, &n));
    CU_ASSERT_EQUAL(n, 0);
    pk_doc_free(d);
}

int main(void) {
    static const tu_test tests[] = {{"allow-list", test_allow_list},
                                    {"a call in client state: found, dropped, re-serialised clean", test_client_state_call},
                                    {"nested and shared objects: nearest dict entry dropped", test_nested_and_shared},
                                    {"arguments, state, keys, classes; undroppable; clean", test_reported_places},
                                    {NULL, NULL}};
    return tu_main("pkscreen", tests);
}
