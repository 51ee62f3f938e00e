/*
 * fuzz_tag.c — fuzz target for tag resolution: a save root cut from the input
 * (fuzz_util.h) with `latest`, trainer_state.json and tag directories, and the tag
 * a user would pass with -t taken from the piece named ".tag" (any bytes: slashes,
 * "..", control characters). ds_resolve_tag_dir must either refuse or return a
 * directory that is the root itself or root/<one plain component> and really is a
 * directory; anything else traps. What `dsckpt inspect` prints about the root
 * (latest, the tags, trainer_state.json's best_* fields) is then built, and the
 * checkpoint opened as inspect opens it.
 * Built for libFuzzer with -DDSCKPT_FUZZ=ON (clang), and always as a corpus replay
 * test (replay.c).
 */
#include "ckpt.h"
#include "fsutil.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
    char *tdir = NULL, *root = NULL;
    if (!fuzz_note("resolve", ds_resolve_tag_dir(dir, tag, &tdir, &root), dsckpt_last_error())) {
        size_t dl = strlen(dir);
        struct stat sb;
        if (!tdir || lstat(tdir, &sb) || !S_ISDIR(sb.st_mode)) __builtin_trap();
        if (strcmp(tdir, dir) != 0) {
            /* root/<name>: one component, not "." or "..". */
            const char *name = tdir + dl + 1;
            if (strncmp(tdir, dir, dl) || tdir[dl] != '/' || !ds_safe_name(name)) __builtin_trap();
            if (!root || strcmp(root, dir)) __builtin_trap();
        }
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
    if (dsckpt_ckpt_open(dir, tag, &c) == DSCKPT_OK) {
        char *json = NULL;
        if (dsckpt_ckpt_describe_json(c, &json) == DSCKPT_OK) free(json);
        dsckpt_ckpt_free(c);
    }
    free(tag);
    return 0;
}
