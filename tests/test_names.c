/*
 * test_names.c — the validator for names read from files (libckpt/names.h): path
 * components, relative (zip member) names, `latest` files, and duplicate JSON keys.
 */
#include "fsutil.h"
#include "names.h"
#include "resolve.h"
#include "tutil.h"

#include <stdlib.h>
#include <string.h>

#define OK_NAME(s) CU_ASSERT_PTR_NULL(ds_name_problem(s, sizeof(s) - 1))
#define BAD_NAME(s, why) CU_ASSERT(ds_name_problem(s, sizeof(s) - 1) && strstr(ds_name_problem(s, sizeof(s) - 1), why))

static void test_components(void) {
    OK_NAME("global_step100");
    OK_NAME("rank_00000.safetensors");
    OK_NAME("checkpoint-500");
    OK_NAME("..a");
    OK_NAME("a..");
    OK_NAME(".hidden");
    OK_NAME("sch\xc3\xa4tzung"); /* UTF-8 */
    OK_NAME("\xe6\xa8\xa1\xe5\x9e\x8b");
    BAD_NAME("", "empty");
    BAD_NAME(".", "'.'");
    BAD_NAME("..", "'..'");
    BAD_NAME("../../../../tmp/x", "'/'");
    BAD_NAME("/etc", "'/'");
    BAD_NAME("a/b", "'/'");
    BAD_NAME("a\\b", "'\\'");
    BAD_NAME("..\\x", "'\\'");
    BAD_NAME("glob\0al", "NUL");
    BAD_NAME("global_step1\0/../x", "NUL");
    BAD_NAME("a\nb", "control");
    BAD_NAME("a\tb", "control");
    BAD_NAME("a\x1b[2Jb", "control");
    BAD_NAME("a\x7f", "control");
    BAD_NAME("a\xff", "UTF-8");
    BAD_NAME("a\xc0\xaf", "UTF-8");          /* overlong '/' */
    BAD_NAME("a\xed\xa0\x80", "UTF-8");      /* a surrogate */
    BAD_NAME("a\xf4\x90\x80\x80", "UTF-8");  /* past U+10FFFF */
    BAD_NAME("a\xc3", "UTF-8");              /* cut sequence */
    char longn[300];
    memset(longn, 'a', sizeof longn);
    CU_ASSERT_PTR_NULL(ds_name_problem(longn, 255));
    CU_ASSERT_PTR_NOT_NULL(ds_name_problem(longn, 256));
    CU_ASSERT_PTR_NOT_NULL(ds_name_problem(NULL, 0));
    /* ds_safe_name is the same rule on a C string. */
    CU_ASSERT(ds_safe_name("global_step3"));
    CU_ASSERT(!ds_safe_name(NULL));
    CU_ASSERT(!ds_safe_name(".."));
    CU_ASSERT(!ds_safe_name("a\xff"));
}

#define OK_REL(s) CU_ASSERT_PTR_NULL(ds_relname_problem(s, sizeof(s) - 1))
#define BAD_REL(s, why) \
    CU_ASSERT(ds_relname_problem(s, sizeof(s) - 1) && strstr(ds_relname_problem(s, sizeof(s) - 1), why))

static void test_relative(void) {
    OK_REL("archive/data.pkl");
    OK_REL("archive/data/0");
    OK_REL("z1/.data/serialization_id");
    OK_REL("a");
    BAD_REL("", "empty");
    BAD_REL("/archive/data/0", "absolute");
    BAD_REL("archive/../../x", "'..' component");
    BAD_REL("archive/./x", "'.' component");
    BAD_REL("archive//x", "empty path component");
    BAD_REL("archive/", "empty path component");
    BAD_REL("archive\\..\\x", "'\\'");
    BAD_REL("arch\0ive/x", "NUL");
    BAD_REL("archive/\x01", "control");
    BAD_REL("archive/\xff", "UTF-8");
}

static void test_check_messages(void) {
    ds_err_clear();
    CU_ASSERT_EQUAL(ds_name_check("../../x", 7, DSCKPT_ECORRUPT, "m.json", "tag"), DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "m.json: tag '../../x' is not a safe name: it contains '/'"));
    /* Control bytes are shown escaped, not sent to the terminal. */
    CU_ASSERT_EQUAL(ds_name_check("a\x1b[2J", 5, DSCKPT_EINVAL, "x", "tag"), DSCKPT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "'a\\x1b[2J'"));
    CU_ASSERT_EQUAL(ds_name_check("ab\0cd", 5, DSCKPT_ECORRUPT, "latest", "the tag"), DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "'ab\\x00cd'"));
    char big[2000];
    memset(big, 'b', sizeof big);
    CU_ASSERT_EQUAL(ds_relname_check(big, sizeof big, DSCKPT_ECORRUPT, "z.pt", "member"), DSCKPT_ECORRUPT);
    CU_ASSERT(strlen(dsckpt_last_error()) < 400); /* the name is cut in the message */
    CU_ASSERT_EQUAL(ds_name_check("ok", 2, DSCKPT_ECORRUPT, "x", "tag"), DSCKPT_OK);
}

static dsckpt_status latest_of(const char *dir, const void *text, size_t len, char **tag) {
    char *p = tu_path(dir, "latest");
    CU_ASSERT_FATAL(tu_write(p, text, len) == 0);
    dsckpt_status st = ds_read_latest(p, tag);
    free(p);
    return st;
}

static void test_latest(void) {
    char *dir = tu_mkdtemp(), *tag = NULL;
    TU_ASSERT_OK(latest_of(dir, "global_step7\n", 13, &tag));
    CU_ASSERT_STRING_EQUAL(tag, "global_step7");
    free(tag);
    TU_ASSERT_OK(latest_of(dir, " \tglobal_step7 \r\n\n", 18, &tag));
    CU_ASSERT_STRING_EQUAL(tag, "global_step7");
    free(tag);
    tag = NULL;
    /* A NUL inside is refused, not taken as the end of the name. */
    CU_ASSERT_EQUAL(latest_of(dir, "global_step7\0../../x", 20, &tag), DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NULL(tag);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "NUL byte at offset 12"));
    CU_ASSERT_EQUAL(latest_of(dir, "global_step7\n\0", 14, &tag), DSCKPT_ECORRUPT);
    CU_ASSERT_EQUAL(latest_of(dir, "../../../../tmp/x\n", 18, &tag), DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "latest: the tag '../../../../tmp/x' is not a safe name"));
    CU_ASSERT_EQUAL(latest_of(dir, "..\n", 3, &tag), DSCKPT_ECORRUPT);
    CU_ASSERT_EQUAL(latest_of(dir, "\n\n", 2, &tag), DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "it is empty"));
    CU_ASSERT_EQUAL(latest_of(dir, "global step7", 12, &tag), DSCKPT_OK); /* an inner space is a name */
    free(tag);
    tu_rmtree(dir);
    free(dir);
}

static dsckpt_status dup_check(const char *json) {
    cJSON *j = cJSON_Parse(json);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    dsckpt_status st = ds_json_unique_keys(j, DSCKPT_ECORRUPT, "f.json");
    cJSON_Delete(j);
    return st;
}

static void test_duplicate_keys(void) {
    TU_ASSERT_OK(dup_check("{\"a\":1,\"b\":2,\"c\":{\"a\":1}}"));
    TU_ASSERT_OK(dup_check("[{\"a\":1},{\"a\":2}]"));
    TU_ASSERT_OK(dup_check("{}"));
    CU_ASSERT_EQUAL(dup_check("{\"a\":1,\"a\":2}"), DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "f.json: duplicate key \"a\" in one object"));
    CU_ASSERT_EQUAL(dup_check("{\"x\":[1,{\"k\":{\"t\":1,\"t\":1}}]}"), DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "\"t\""));
    /* A large object (the sorted path) with one repeat at the end. */
    char buf[4096];
    size_t o = (size_t)snprintf(buf, sizeof buf, "{");
    for (int i = 0; i < 100; i++) o += (size_t)snprintf(buf + o, sizeof buf - o, "\"k%d\":%d,", i, i);
    snprintf(buf + o, sizeof buf - o, "\"k%d\":0}", 57);
    CU_ASSERT_EQUAL(dup_check(buf), DSCKPT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(dsckpt_last_error(), "\"k57\""));
    buf[o] = '\0';
    snprintf(buf + o, sizeof buf - o, "\"k%d\":0}", 100);
    TU_ASSERT_OK(dup_check(buf));
    /* Case matters, as in Python. */
    TU_ASSERT_OK(dup_check("{\"a\":1,\"A\":2}"));
}

int main(void) {
    static const tu_test tests[] = {{"path components", test_components},
                                    {"relative names (zip members)", test_relative},
                                    {"refusal messages name file, kind and name (escaped)", test_check_messages},
                                    {"latest: white space stripped, NUL and paths refused", test_latest},
                                    {"duplicate JSON keys at any depth", test_duplicate_keys},
                                    {NULL, NULL}};
    return tu_main("names", tests);
}
