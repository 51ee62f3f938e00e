/*
 * fuzz_tag.c — fuzz target for resolving what the user names to a tag directory:
 * ds_resolve_tag_dir (a save root and its `latest`) and ds_resolve_ckpt (every
 * layout: tag directory, save root, Hugging Face output_dir / checkpoint-N, the
 * tags latest / best / checkpoint-N, trainer_state.json's best_model_checkpoint).
 * The input is a directory tree cut into named files (fuzz_util.h); the tag a user
 * would pass with -t is the content of the piece named ".tag" (any bytes:
 * slashes, "..", control characters); without one, no tag and then "best" are
 * tried. A resolved directory must be the scratch directory or lie below it
 * through plain name components, each a real directory; anything else traps.
 * What `dsckpt inspect` prints about the root (latest, the tags, trainer_state's
 * best_* fields) is then built on an empty handle, and the checkpoint opened as
 * every command opens it. Built for libFuzzer with -DDSCKPT_FUZZ=ON (clang), and
 * always as a corpus replay test (replay.c).
 */
#include "ckpt.h"
#include "fsutil.h"
#include "fuzz_util.h"
#include "resolve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Traps unless p is base, or base/<name>/<name>... with every prefix a directory
 * (not a symbolic link). */
static void check_inside(const char *base, const char *p) {
    size_t bl = strlen(base);
    if (!p || strncmp(p, base, bl) || (p[bl] && p[bl] != '/')) __builtin_trap();
    char buf[4300];
    if (strlen(p) >= sizeof buf) __builtin_trap();
    strcpy(buf, p);
    for (char *c = buf + bl; *c;) {
        char *name = c + 1, *e = strchr(name, '/');
        if (e) *e = '\0';
        if (!ds_safe_name(name)) __builtin_trap();
        struct stat sb;
        if (lstat(buf, &sb) || !S_ISDIR(sb.st_mode)) __builtin_trap();
        if (!e) break;
        *e = '/';
        c = e;
    }
}

static void resolve_and_open(const char *dir, const char *tag) {
    char *tdir = NULL, *root = NULL;
    if (!fuzz_note("resolve_tag_dir", ds_resolve_tag_dir(dir, tag, &tdir, &root), dsckpt_last_error())) {
        check_inside(dir, tdir);
        if (root) check_inside(dir, root);
    }
    free(tdir);
    free(root);
    tdir = root = NULL;
    if (!fuzz_note("resolve_ckpt", ds_resolve_ckpt(dir, tag, &tdir, &root), dsckpt_last_error())) {
        check_inside(dir, tdir);
        if (root) check_inside(dir, root);
        /* What inspect prints about the root, on an empty handle. */
        dsckpt_ckpt *e = NULL;
        if (ds_ckpt_new(&e) == DSCKPT_OK) {
            e->dir = tdir;
            e->root = root;
            tdir = root = NULL;
            char *json = NULL;
            if (dsckpt_ckpt_describe_json(e, &json) == DSCKPT_OK) free(json);
            dsckpt_ckpt_free(e);
        }
    }
    free(tdir);
    free(root);
    dsckpt_ckpt *c = NULL;
    if (!fuzz_note("open", dsckpt_ckpt_open(dir, tag, &c), dsckpt_last_error())) {
        char *json = NULL;
        if (dsckpt_ckpt_describe_json(c, &json) == DSCKPT_OK) free(json);
        dsckpt_ckpt_free(c);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_file f[FUZZ_MAX_FILES];
    size_t n = fuzz_split(data, size, f);
    const char *dir = fuzz_dir();
    char *tag = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(f[i].name, ".tag")) {
            free(tag);
            tag = strndup((const char *)f[i].data, f[i].len);
        } else {
            (void)fuzz_write(dir, f[i].name, f[i].data, f[i].len);
        }
    }
    if (tag) {
        resolve_and_open(dir, tag);
    } else {
        resolve_and_open(dir, NULL);
        resolve_and_open(dir, "best");
    }
    free(tag);
    return 0;
}
