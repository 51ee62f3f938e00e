/*
 * main.c — the `dsckpt` command line: consolidate, reshard, verify, inspect, synth.
 *
 * Exit codes (also in `dsckpt --help` and README.md):
 *   0  success (verify: the checkpoint is intact)
 *   1  the checkpoint is corrupt (verify found a problem; other commands met bad data)
 *   2  unreadable or environment failure (missing files, I/O error, disk full, memory)
 *   3  usage error (bad command line or option value)
 *   4  the output exists (pass --force to replace it)
 *   5  valid input that dsckpt does not support
 *  70  internal error (a bug: please report it)
 * 130 / 143  stopped by SIGINT / SIGTERM (temporaries removed, nothing written)
 */
#include "cli.h"
#include "dsckpt.h"
#include "progress.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *prog = "dsckpt";

int exit_for(dsckpt_status st) {
    switch (st) {
    case DSCKPT_OK: return EXIT_OKAY;
    case DSCKPT_EINVAL:
    case DSCKPT_EMISUSE: return EXIT_USAGE;
    case DSCKPT_EEXIST: return EXIT_EXISTS;
    case DSCKPT_ECORRUPT:
    case DSCKPT_ECHECKSUM: return EXIT_CORRUPT;
    case DSCKPT_EVERSION: /* a newer format version: valid, but not ours to read */
    case DSCKPT_EUNSUPPORTED: return EXIT_UNSUPPORTED;
    case DSCKPT_EINTERNAL: return EXIT_INTERNAL;
    default: return EXIT_UNREADABLE;
    }
}

/* SIGINT / SIGTERM while writing: the handler only asks the library to stop
 * (dsckpt_interrupt is one atomic store); the operation removes its temporaries
 * and returns, and the command exits 128 + the signal. A second signal kills at
 * once (default action restored). */
static void on_stop_signal(int sig) {
    dsckpt_interrupt(sig);
    signal(sig, SIG_DFL);
}

void catch_stop_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: blocking calls return EINTR and the loops look at the flag */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int fail(dsckpt_status st, const char *what) {
    const char *msg = dsckpt_last_error();
    if (dsckpt_interrupted()) {
        fprintf(stderr, "%s %s: interrupted by signal %d; temporaries removed, nothing written\n", prog, what,
                dsckpt_interrupted());
        return 128 + dsckpt_interrupted();
    }
    /* The library speaks of its calls; the command line's own spellings are added here. */
    const char *hint = st == DSCKPT_EEXIST && strstr(msg, "unless forced") ? "; pass --force to replace it"
                       : st == DSCKPT_ECHECKSUM && strstr(msg, "checks off")  ? " (--no-verify turns the checks off)"
                       : st == DSCKPT_EUNSUPPORTED && strstr(msg, "drop_unknown_objects")
                           ? "; reshard --format deepspeed --drop-unknown-objects leaves them out"
                                                                             : "";
    fprintf(stderr, "%s %s: error [%s]: %s%s\n", prog, what, dsckpt_status_name(st), *msg ? msg : "failed", hint);
    return exit_for(st);
}

int usage_error(const char *cmd, const char *fmt, const char *arg) {
    fprintf(stderr, "%s %s: ", prog, cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry '%s %s --help'.\n", prog, cmd);
    return EXIT_USAGE;
}

const char exit_codes_help[] =
    "Exit codes:\n"
    "  0  success (verify: intact)        3  usage error\n"
    "  1  checkpoint corrupt              4  output exists (use --force)\n"
    "  2  unreadable / I/O / disk full    5  unsupported input\n"
    " 70  internal error                130 / 143  stopped by SIGINT / SIGTERM\n";

/* Parses "5GB", "500MB", "2GiB", "1e9", "123" (decimal units as Hugging Face uses). */
bool parse_size(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) return false;
    static const struct { const char *suf; double mul; } units[] = {
        {"", 1},          {"B", 1},           {"KB", 1e3},        {"MB", 1e6},       {"GB", 1e9},
        {"TB", 1e12},     {"KIB", 1024.0},    {"MIB", 1048576.0}, {"GIB", 1073741824.0},
        {"TIB", 1099511627776.0}, {"K", 1e3}, {"M", 1e6},         {"G", 1e9},        {"T", 1e12},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(end, units[i].suf) == 0) {
            double r = v * units[i].mul;
            if (r < 1 || r > 1.8e19) return false;
            *out = (uint64_t)r;
            return true;
        }
    }
    return false;
}

bool parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* Options every command shares. */
typedef struct common {
    const char *tag, *out;
    int force, threads;
    bool quiet, json, no_verify;
} common;

/* The running command's long options and argv, for the nearest-option hint. */
static const struct option *cur_lo;
static char **cur_argv;
#define OPTS_BEGIN(lo, argv) (opterr = 0, cur_lo = (lo), cur_argv = (argv))

/* Handles a shared option. Returns true when the command must exit with *rc
 * (--help printed, or a usage error); false when the option was consumed. */
static bool common_opt(int c, const char *cmd, const char *help, common *co, int *rc) {
    long v;
    switch (c) {
    case 't': co->tag = optarg; return false;
    case 'o': co->out = optarg; return false;
    case 'f': co->force = 1; return false;
    case 'q': co->quiet = true; return false;
    case 'J': co->json = true; return false;
    case 'j':
        if (!parse_int(optarg, 1, 256, &v)) {
            *rc = usage_error(cmd, "--threads must be 1..256 (got '%s')", optarg);
            return true;
        }
        co->threads = (int)v;
        return false;
    case 'h':
        fputs(help, stdout);
        fputs(exit_codes_help, stdout);
        *rc = EXIT_OKAY;
        return true;
    default: *rc = bad_option(cmd, cur_lo, cur_argv); return true;
    }
}

/* ---------------- consolidate ---------------- */

static const char consolidate_help[] =
    "Usage: dsckpt consolidate CKPT [-t TAG] -o OUT [options]\n"
    "\n"
    "Write the full (unsharded) weights of a checkpoint as safetensors.\n"
    "CKPT is a save root (with 'latest'), a tag directory, a Hugging Face Trainer\n"
    "output_dir (holding checkpoint-N/) or one checkpoint-N/. OUT ending in\n"
    ".safetensors gives one file; anything else is a directory in the Hugging Face\n"
    "layout: model.safetensors, or model-0000k-of-0000n.safetensors plus\n"
    "model.safetensors.index.json when the weights exceed --max-shard-size.\n"
    "Only the fp32 master weights are read (16-bit weights for frozen tensors, which\n"
    "keep their dtype, except that --dtype fp32 writes every floating tensor as fp32,\n"
    "frozen ones upcast exactly, as DeepSpeed's zero_to_fp32 does; integer tensors\n"
    "are never converted). Tied weights are written once, under the owning name, and\n"
    "recorded in __metadata__ as \"alias.<name>\": \"<owner>\".\n"
    "\n"
    "A directory OUT is what transformers' from_pretrained(OUT) loads: with the\n"
    "weights go config.json (its dtype set to --dtype) and generation_config.json\n"
    "from the checkpoint folder, parsed strictly (duplicate keys refused), and the\n"
    "tokenizer text files (tokenizer.json, tokenizer_config.json,\n"
    "special_tokens_map.json, added_tokens.json, vocab.json, merges.txt,\n"
    "chat_template.jinja), validated (JSON / UTF-8) and copied. Binary files\n"
    "(tokenizer.model) and code are never copied. A dsckpt\n"
    "checkpoint that records its model (dstrain) gets a GPT-2 config.json.\n"
    "\n"
    "Options:\n"
    "  -t, --tag TAG            a tag, 'latest', 'best' (trainer_state.json's\n"
    "                           best_model_checkpoint) or a checkpoint-N (default:\n"
    "                           'latest'; in an output_dir the newest checkpoint-N)\n"
    "  -o, --output OUT         output file or directory (required)\n"
    "      --dtype D            bf16, fp16 or fp32 (default: the training dtype:\n"
    "                           an fp16 run gives fp16, fp32 gives fp32, else bf16)\n"
    "      --max-shard-size S   per-file limit for directory output (default 5GB;\n"
    "                           decimal units: 500MB, 5GB; binary: 2GiB)\n"
    "      --exclude-frozen     leave out frozen (non-trainable) tensors\n"
    "      --json               a summary of what was written as JSON on stdout\n"
    "  DeepSpeed / transformers spellings are accepted: --exclude_frozen_parameters,\n"
    "  --max_shard_size, --safe_serialization (always safetensors: no effect).\n"
    "  OUT names ending in .bin, .pt or .pth (PyTorch pickles) are refused: dsckpt\n"
    "  writes safetensors only.\n"
    "      --force              replace an existing output (only one dsckpt wrote:\n"
    "                           a directory holding other files is refused)\n"
    "      --no-verify          do not check the SHA-256 of each chunk read (native)\n"
    "                           or the CRC-32 of each zip member read (DeepSpeed)\n"
    "  -j, --threads N          worker threads (default: all CPUs)\n"
    "  -q, --quiet              no progress bar (the summary line stays)\n"
    "  -h, --help               this help\n"
    "\n"
    "Progress goes to stderr: a bar with elapsed time and ETA on a terminal,\n"
    "otherwise a line every 5 s (DSCKPT_PROGRESS_INTERVAL=seconds to change).\n"
    "Every chunk (or zip member) the weights are read from is checked against its\n"
    "digest as it is read; a mismatch stops with exit 1 naming the file and chunk,\n"
    "and nothing is written. The output is written under a temporary name and\n"
    "renamed into place when complete; a failed or interrupted run (SIGINT, SIGTERM)\n"
    "leaves nothing behind, and temporaries of runs that died are removed.\n";

/* An OUT named like a PyTorch pickle (.bin, .pt, .pth): says what to pass
 * instead and returns true. */
static bool pickle_name_refused(const char *out) {
    size_t n = strlen(out);
    static const char *const pickles[] = {".bin", ".pt", ".pth"};
    for (size_t i = 0; i < sizeof pickles / sizeof pickles[0]; i++) {
        size_t k = strlen(pickles[i]);
        if (n > k && !strcmp(out + n - k, pickles[i])) {
            fprintf(stderr,
                    "%s consolidate: '%s' is a PyTorch pickle name; dsckpt writes safetensors only:\n"
                    "  -o model.safetensors   one file\n"
                    "  -o DIR                 a Hugging Face folder (model.safetensors or shards + index,\n"
                    "                         config.json): what from_pretrained(DIR) loads\n",
                    prog, out);
            return true;
        }
    }
    return false;
}

/* The summary of a finished consolidate (what was written, read back from OUT):
 * JSON on stdout with --json, else one line on stderr. */
static void consolidate_summary(const dsckpt_info *info, const char *out, dsckpt_dtype dtype, bool json, double el) {
    cJSON *files = cJSON_CreateArray();
    cli_written w = {.file_names = files};
    dsckpt_status ws = cli_written_safetensors(out, &w);
    double gbs = el > 0 ? (double)w.bytes / el / 1e9 : 0;
    if (ws) {
        fprintf(stderr, "consolidated %s -> %s (could not read the output back: %s)\n", info->tag, out,
                dsckpt_last_error());
    } else if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "command", "consolidate");
        cJSON_AddStringToObject(j, "source", info->dir);
        cJSON_AddStringToObject(j, "tag", info->tag);
        cJSON_AddStringToObject(j, "output", out);
        cJSON_AddStringToObject(j, "dtype", dsckpt_dtype_name(dtype));
        cJSON_AddItemToObject(j, "files", files);
        files = NULL;
        cJSON_AddNumberToObject(j, "tensors", (double)w.tensors);
        cJSON_AddNumberToObject(j, "parameters", (double)w.params);
        cJSON_AddNumberToObject(j, "bytes", (double)w.bytes);
        cJSON_AddNumberToObject(j, "seconds", el);
        cJSON_AddNumberToObject(j, "gb_per_s", gbs);
        char *t = cJSON_Print(j);
        if (t) puts(t);
        free(t);
        cJSON_Delete(j);
    } else {
        char b[32];
        fprintf(stderr, "consolidated %s -> %s: %zu tensors, %" PRIu64 " parameters as %s, %zu file%s, %s in %.2f s (%.2f GB/s)\n",
                info->tag, out, w.tensors, w.params, dsckpt_dtype_name(dtype), w.files, w.files == 1 ? "" : "s",
                fmt_bytes(w.bytes, b, sizeof b), el, gbs);
    }
    cJSON_Delete(files);
}

static int cmd_consolidate(int argc, char **argv) {
    static const struct option lo[] = {
        {"tag", required_argument, 0, 't'},      {"output", required_argument, 0, 'o'},
        {"dtype", required_argument, 0, 'd'},    {"max-shard-size", required_argument, 0, 'S'},
        {"exclude-frozen", no_argument, 0, 'x'}, {"force", no_argument, 0, 'f'},
        {"threads", required_argument, 0, 'j'},  {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},           {"no-verify", no_argument, 0, 'V'},
        {"json", no_argument, 0, 'J'},           {"exclude_frozen_parameters", no_argument, 0, 'x'},
        {"max_shard_size", required_argument, 0, 'S'}, {"safe_serialization", no_argument, 0, 'N'},
        {0, 0, 0, 0}};
    dsckpt_consolidate_opts o;
    dsckpt_consolidate_opts_init(&o);
    common co = {0};
    int c, rc;
    bool dtype_given = false;
    OPTS_BEGIN(lo, argv);
    while ((c = getopt_long(argc, argv, "t:o:j:qh", lo, NULL)) != -1) {
        switch (c) {
        case 'd':
            if (dsckpt_dtype_parse(optarg, &o.dtype) != DSCKPT_OK ||
                (o.dtype != DSCKPT_BF16 && o.dtype != DSCKPT_F16 && o.dtype != DSCKPT_F32))
                return usage_error("consolidate", "--dtype must be bf16, fp16 or fp32 (got '%s')", optarg);
            dtype_given = true;
            break;
        case 'N': break; /* --safe_serialization: the output is always safetensors */
        case 'S':
            if (!parse_size(optarg, &o.max_shard_size))
                return usage_error("consolidate", "--max-shard-size: cannot parse '%s' (e.g. 5GB, 500MB, 2GiB)", optarg);
            break;
        case 'x': o.exclude_frozen = 1; break;
        case 'V': co.no_verify = true; break;
        default:
            if (common_opt(c, "consolidate", consolidate_help, &co, &rc)) return rc;
        }
    }
    const char *tag = co.tag, *out = co.out;
    bool quiet = co.quiet;
    o.force = co.force;
    o.threads = co.threads;
    if (optind != argc - 1) return usage_error("consolidate", "%s", "expected exactly one checkpoint path");
    if (!out) return usage_error("consolidate", "%s", "-o OUT is required");
    if (pickle_name_refused(out)) return EXIT_USAGE;
    dsckpt_ckpt *ck;
    dsckpt_status st = dsckpt_ckpt_open(argv[optind], tag, &ck);
    if (st) return fail(st, "consolidate");
    dsckpt_ckpt_set_read_check(ck, !co.no_verify);
    dsckpt_info info;
    dsckpt_ckpt_info(ck, &info);
    if (!dtype_given) /* the training dtype: an fp16 run gives fp16, not a bf16/fp16 mix */
        o.dtype = info.train_dtype && !strcmp(info.train_dtype, "fp16")   ? DSCKPT_F16
                  : info.train_dtype && !strcmp(info.train_dtype, "fp32") ? DSCKPT_F32
                                                                          : DSCKPT_BF16;
    catch_stop_signals();
    cli_progress p;
    cli_progress_init(&p, "consolidate", quiet || co.json);
    o.progress = cli_progress_cb;
    o.progress_user = &p;
    st = dsckpt_consolidate(ck, out, &o);
    cli_progress_end(&p);
    if (st == DSCKPT_OK && !dsckpt_interrupted()) consolidate_summary(&info, out, o.dtype, co.json, cli_now() - p.t0);
    rc = st ? fail(st, "consolidate") : dsckpt_interrupted() ? 128 + dsckpt_interrupted() : EXIT_OKAY;
    dsckpt_ckpt_free(ck);
    return rc;
}

/* ---------------- reshard ---------------- */

static const char reshard_help[] =
    "Usage: dsckpt reshard [CKPT] --to M [-o OUT] [options]\n"
    "       dsckpt reshard [CKPT] --format universal [-o OUT] [options]\n"
    "\n"
    "CKPT defaults to the current directory. OUT defaults to a sibling of CKPT:\n"
    "<CKPT>_w<M> (e.g. run -> run_w16), or <CKPT>_universal with --format\n"
    "universal; an existing OUT is never replaced without --force (exit 4).\n"
    "\n"
    "Write a checkpoint for M ranks under the save root OUT (OUT/<tag>/,\n"
    "OUT/latest, and trainer_state.json when the source has one). Every state (fp32\n"
    "master, exp_avg, exp_avg_sq, 16-bit weights of frozen tensors) and all\n"
    "non-tensor state (optimizer step and hyper-parameters, scheduler, loss scaler,\n"
    "data position, RNG, ds_config, metrics) is carried over bit for bit.\n"
    "\n"
    "--format deepspeed writes DeepSpeed's own files (torch zip + pickle), which\n"
    "DeepSpeed's load_checkpoint accepts at world size M. From a DeepSpeed source the\n"
    "stage is kept and everything but the partitions (module weights, buffers,\n"
    "scheduler, loss scaler, hyper-parameters, client state) is carried from its\n"
    "files; from a native source the files are built from the tensors. ZeRO-0\n"
    "(stage 0) is one model-states file holding the optimizer, valid at any M.\n"
    "\n"
    "--format universal writes DeepSpeed's universal layout, as ds_to_universal.py\n"
    "does: OUT/<tag>_universal/zero/<param>/{fp32,exp_avg,exp_avg_sq,step}.pt,\n"
    "zero/optimizer_state.pt, the model-states files, and OUT/latest_universal.\n"
    "DeepSpeed loads it at any world size with \"checkpoint\": {\"load_universal\": true}\n"
    "(stages 1-3: from a ZeRO-0 source pass --stage 1-3 for the run's new stage;\n"
    "--to is not needed). Universal checkpoints are read as sources too.\n"
    "\n"
    "From a Hugging Face Trainer checkpoint-N the default format is deepspeed (what\n"
    "the Trainer resumes from; a note on stderr says so; --format native writes the\n"
    "native format), and OUT is the new checkpoint-N: the Trainer's\n"
    "trainer_state.json (best_model_checkpoint rewritten to OUT, or to\n"
    "OUT's sibling checkpoint-M), config.json, generation_config.json, tokenizer\n"
    "files and scheduler.pt (a restricted-pickle check: plain values only, else\n"
    "refused) are carried; rng_state_*.pth and training_args.bin hold numpy /\n"
    "transformers objects and are left out (the Trainer resumes without them).\n"
    "\n"
    "Options:\n"
    "  -t, --tag TAG       a tag, 'latest', 'best' or a checkpoint-N (as consolidate)\n"
    "      --to M          new data-parallel world size (>= 1; required unless universal)\n"
    "  -o, --output OUT    output save root (default: see above)\n"
    "      --stage S       ZeRO stage of the output (0-3; default: the source's)\n"
    "      --format F      native (default; deepspeed from a Trainer checkpoint-N),\n"
    "                      deepspeed or universal\n"
    "      --force         replace an existing output (only a save root dsckpt\n"
    "                      wrote: a directory holding other files is refused)\n"
    "      --no-verify     do not check the SHA-256 of each chunk read (native)\n"
    "                      or the CRC-32 of each zip member read (DeepSpeed)\n"
    "      --drop-unknown-objects\n"
    "                      --format deepspeed from a DeepSpeed source: leave out\n"
    "                      the entries whose pickles refer to anything outside the\n"
    "                      allow-list (a warning lists them) instead of refusing\n"
    "      --compress[=L]  native format: zstd-compressed rank files (byte-plane\n"
    "                      shuffled, level L 1-22, default " DS_STR(DSCKPT_COMPRESS_DEFAULT_LEVEL) "); readers\n"
    "                      decompress transparently (docs/native-format.md)\n"
    "  -j, --threads N     worker threads (default: all CPUs)\n"
    "      --json          a summary of what was written as JSON on stdout\n"
    "  -q, --quiet         no progress bar (the summary line stays)\n"
    "  -h, --help          this help\n"
    "\n"
    "Pickled objects outside the allow-list of what DeepSpeed and torch write\n"
    "(tensors, storages, OrderedDict, DeepSpeed's enums and loss scalers) are\n"
    "never copied: torch.load, which DeepSpeed uses, would call them. Such a\n"
    "source is refused (exit 5, naming each object and the key holding it).\n"
    "\n"
    "Every chunk (or zip member) read is checked against its digest; a mismatch\n"
    "stops with exit 1 naming the file and chunk, and nothing is written (the new\n"
    "checkpoint's fresh digests never cover damaged data). A failed or interrupted\n"
    "run (SIGINT, SIGTERM) leaves nothing behind.\n"
    "\n"
    "On ext4 and XFS the new rank files are written with direct I/O (O_DIRECT: the\n"
    "page cache neither slows the writes nor keeps the bytes);\n"
    "DSCKPT_DIRECT_IO=0 writes through the page cache, =1 tries direct I/O on any\n"
    "file system.\n";

/* --compress[=LEVEL]: no value is the default level. */
bool parse_compress(const char *arg, int *level) {
    long v;
    if (!arg) {
        *level = DSCKPT_COMPRESS_DEFAULT_LEVEL;
        return true;
    }
    if (!parse_int(arg, 1, 22, &v)) return false;
    *level = (int)v;
    return true;
}

/* "native" or "deepspeed"; false for anything else. */
static bool parse_format(const char *s, dsckpt_format *f) {
    if (!strcmp(s, "native") || !strcmp(s, "dsckpt")) *f = DSCKPT_FORMAT_NATIVE;
    else if (!strcmp(s, "deepspeed")) *f = DSCKPT_FORMAT_DEEPSPEED;
    else if (!strcmp(s, "universal")) *f = DSCKPT_FORMAT_UNIVERSAL;
    else return false;
    return true;
}


/* Whether c is a DeepSpeed checkpoint inside a Hugging Face Trainer checkpoint-N
 * folder (its tag directory's parent is named checkpoint-<digits>). */
static bool in_hf_checkpoint(const dsckpt_ckpt *c) {
    dsckpt_info info;
    dsckpt_ckpt_info(c, &info);
    if (!info.format || strcmp(info.format, "deepspeed") || !info.dir) return false;
    size_t n = strlen(info.dir);
    while (n > 1 && info.dir[n - 1] == '/') n--;
    while (n > 0 && info.dir[n - 1] != '/') n--; /* drop the tag */
    while (n > 1 && info.dir[n - 1] == '/') n--;
    size_t e = n;
    while (n > 0 && info.dir[n - 1] != '/') n--;
    const char *b = info.dir + n, *pre = "checkpoint-";
    size_t len = e - n, lp = strlen(pre);
    if (len <= lp || strncmp(b, pre, lp)) return false;
    for (size_t i = lp; i < len; i++)
        if (b[i] < '0' || b[i] > '9') return false;
    return true;
}

/* reshard's arguments once parsed. */
typedef struct reshard_args {
    dsckpt_reshard_opts o;
    common co;
    bool format_given;
    const char *path, *out; /* out: -o OUT, or defout */
    char *defout;           /* the default OUT (malloc'd), or NULL */
} reshard_args;

/* Every problem with the arguments is collected and reported, not only the first. */
typedef struct arg_errs {
    char m[8][256];
    int n;
} arg_errs;
#define ARG_ERR(e, ...)                                                         \
    do {                                                                        \
        if ((e)->n < 8) snprintf((e)->m[(e)->n++], sizeof (e)->m[0], __VA_ARGS__); \
    } while (0)

/* The default OUT: the sibling <CKPT>_w<M> / <CKPT>_universal of CKPT's absolute
 * path, into a->defout. Returns -1, or the exit code after a message. */
static int reshard_default_out(reshard_args *a, bool universal, arg_errs *e) {
    char *abs = realpath(a->path, NULL);
    if (!abs) {
        fprintf(stderr, "%s reshard: %s: %s\n", prog, a->path, strerror(errno));
        return EXIT_UNREADABLE;
    }
    size_t n = strlen(abs) + 32;
    if (!strcmp(abs, "/")) {
        ARG_ERR(e, "%s", "-o OUT is required when CKPT is the root directory");
    } else if ((a->defout = malloc(n)) != NULL) {
        if (universal) snprintf(a->defout, n, "%s_universal", abs);
        else snprintf(a->defout, n, "%s_w%d", abs, a->o.world_size);
    }
    free(abs);
    if (!a->defout && !e->n) {
        fprintf(stderr, "%s reshard: out of memory\n", prog);
        return EXIT_INTERNAL;
    }
    a->out = a->defout;
    return -1;
}

/* Parses reshard's command line into a. Returns -1 to go on, or the exit code
 * (after --help, or the usage errors printed). */
static int reshard_parse(int argc, char **argv, reshard_args *a) {
    static const struct option lo[] = {
        {"tag", required_argument, 0, 't'},    {"to", required_argument, 0, 'M'},
        {"output", required_argument, 0, 'o'}, {"stage", required_argument, 0, 's'},
        {"force", no_argument, 0, 'f'},        {"threads", required_argument, 0, 'j'},
        {"quiet", no_argument, 0, 'q'},        {"help", no_argument, 0, 'h'},
        {"format", required_argument, 0, 'F'}, {"no-verify", no_argument, 0, 'V'},
        {"json", no_argument, 0, 'J'},         {"drop-unknown-objects", no_argument, 0, 'U'},
        {"compress", optional_argument, 0, 'Z'},
        {0, 0, 0, 0}};
    dsckpt_reshard_opts *o = &a->o;
    dsckpt_reshard_opts_init(o);
    o->world_size = 0;
    long v;
    int c, rc;
    arg_errs e = {.n = 0};
    bool format_bad = false;
    OPTS_BEGIN(lo, argv);
    while ((c = getopt_long(argc, argv, "t:o:j:qh", lo, NULL)) != -1) {
        switch (c) {
        case 'M':
            if (!parse_int(optarg, 1, 1000000, &v)) {
                ARG_ERR(&e, "--to must be 1..1000000 (got '%s')", optarg);
                o->world_size = -1;
            } else {
                o->world_size = (int)v;
            }
            break;
        case 's':
            if (!parse_int(optarg, 0, 3, &v)) ARG_ERR(&e, "--stage must be 0, 1, 2 or 3 (got '%s')", optarg);
            else o->zero_stage = (int)v;
            break;
        case 'F':
            if (!parse_format(optarg, &o->format)) {
                ARG_ERR(&e, "--format must be native, deepspeed or universal (got '%s')", optarg);
                format_bad = true;
            }
            a->format_given = true;
            break;
        case 'V': a->co.no_verify = true; break;
        case 'U': o->drop_unknown_objects = 1; break;
        case 'Z':
            if (!parse_compress(optarg, &o->compress_level))
                ARG_ERR(&e, "--compress=LEVEL: the level must be 1..22 (got '%s')", optarg);
            break;
        default:
            if (common_opt(c, "reshard", reshard_help, &a->co, &rc)) return rc;
        }
    }
    a->out = a->co.out;
    o->force = a->co.force;
    o->threads = a->co.threads;
    if (optind < argc - 1) ARG_ERR(&e, "expected at most one checkpoint path (got %d)", argc - optind);
    bool universal = o->format == DSCKPT_FORMAT_UNIVERSAL;
    if (!o->world_size && !universal && !format_bad) ARG_ERR(&e, "%s", "--to M is required");
    a->path = optind < argc ? argv[optind] : ".";
    if (!a->out && e.n == 0 && (rc = reshard_default_out(a, universal, &e)) >= 0) return rc;
    if (e.n) {
        for (int i = 0; i < e.n; i++) fprintf(stderr, "%s reshard: %s\n", prog, e.m[i]);
        fprintf(stderr, "Try '%s reshard --help'.\n", prog);
        return EXIT_USAGE;
    }
    if (universal && o->world_size <= 0) o->world_size = 1;
    return -1;
}
#undef ARG_ERR

/* --drop-unknown-objects to DeepSpeed format: warns about what is left out.
 * Returns the status of looking for it. */
static dsckpt_status warn_dropped_objects(const dsckpt_ckpt *ck) {
    char *what = NULL;
    size_t n = 0;
    dsckpt_status st = dsckpt_ckpt_unknown_objects(ck, &what, &n);
    if (st) return st;
    if (n)
        fprintf(stderr, "%s reshard: warning: leaving out the entries holding %zu pickled object%s outside the "
                        "allow-list (--drop-unknown-objects): %s\n",
                prog, n, n == 1 ? "" : "s", what ? what : "");
    free(what);
    return DSCKPT_OK;
}

/* reshard --json: what was written, read back from OUT, on stdout. */
static void reshard_json_summary(const dsckpt_info *info, const char *out, const dsckpt_reshard_opts *o, double el) {
    dsckpt_ckpt *w = NULL;
    dsckpt_status ws = dsckpt_ckpt_open(out, NULL, &w);
    dsckpt_info wi;
    if (ws == DSCKPT_OK) dsckpt_ckpt_info(w, &wi);
    uint64_t bytes = cli_du(out, 0);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "command", "reshard");
    cJSON_AddStringToObject(j, "source", info->dir);
    cJSON_AddStringToObject(j, "tag", info->tag);
    cJSON_AddStringToObject(j, "output", out);
    cJSON_AddStringToObject(j, "format", ws ? "?" : wi.format);
    cJSON_AddNumberToObject(j, "from_world_size", info->world_size);
    cJSON_AddNumberToObject(j, "from_zero_stage", info->zero_stage);
    cJSON_AddNumberToObject(j, "world_size", ws ? o->world_size : wi.world_size);
    cJSON_AddNumberToObject(j, "zero_stage", ws ? (o->zero_stage < 0 ? info->zero_stage : o->zero_stage) : wi.zero_stage);
    cJSON_AddNumberToObject(j, "files", ws ? 0 : (double)wi.file_count);
    cJSON_AddNumberToObject(j, "tensors", ws ? 0 : (double)wi.tensor_count);
    cJSON_AddNumberToObject(j, "parameters", ws ? 0 : (double)wi.param_count);
    cJSON_AddNumberToObject(j, "bytes", (double)bytes);
    cJSON_AddNumberToObject(j, "seconds", el);
    cJSON_AddNumberToObject(j, "gb_per_s", el > 0 ? (double)bytes / el / 1e9 : 0);
    char *t = cJSON_Print(j);
    if (t) puts(t);
    free(t);
    cJSON_Delete(j);
    dsckpt_ckpt_free(w);
}

static int cmd_reshard(int argc, char **argv) {
    reshard_args a = {.format_given = false};
    int rc = reshard_parse(argc, argv, &a);
    if (rc >= 0) {
        free(a.defout);
        return rc;
    }
    dsckpt_reshard_opts o = a.o;
    const char *out = a.out;
    dsckpt_ckpt *ck;
    dsckpt_status st = dsckpt_ckpt_open(a.path, a.co.tag, &ck);
    if (st) {
        free(a.defout);
        return fail(st, "reshard");
    }
    dsckpt_ckpt_set_read_check(ck, !a.co.no_verify);
    if (!a.format_given && in_hf_checkpoint(ck)) {
        /* The Trainer resumes only from DeepSpeed's own files. */
        o.format = DSCKPT_FORMAT_DEEPSPEED;
        fprintf(stderr, "%s reshard: note: a Hugging Face Trainer checkpoint: writing DeepSpeed format (what the "
                        "Trainer resumes from); pass --format native for the native format\n", prog);
    }
    if (o.drop_unknown_objects && o.format == DSCKPT_FORMAT_DEEPSPEED && (st = warn_dropped_objects(ck))) {
        dsckpt_ckpt_free(ck);
        free(a.defout);
        return fail(st, "reshard");
    }
    catch_stop_signals();
    cli_progress p;
    cli_progress_init(&p, "reshard", a.co.quiet || a.co.json);
    o.progress = cli_progress_cb;
    o.progress_user = &p;
    st = dsckpt_reshard(ck, out, &o);
    cli_progress_end(&p);
    dsckpt_info info;
    dsckpt_ckpt_info(ck, &info);
    if (st == DSCKPT_OK && a.co.json && !dsckpt_interrupted())
        reshard_json_summary(&info, out, &o, cli_now() - p.t0);
    else if (st == DSCKPT_OK && o.format == DSCKPT_FORMAT_UNIVERSAL)
        fprintf(stderr, "resharded %s: %d ranks (stage %d) -> universal (any world size) in %s, %.2f s\n", info.tag,
                info.world_size, info.zero_stage, out, cli_now() - p.t0);
    else if (st == DSCKPT_OK)
        fprintf(stderr, "resharded %s: %d ranks (stage %d) -> %d ranks (stage %d) in %s, %.2f s\n", info.tag,
                info.world_size, info.zero_stage, o.world_size, o.zero_stage < 0 ? info.zero_stage : o.zero_stage, out,
                cli_now() - p.t0);
    rc = st ? fail(st, "reshard") : dsckpt_interrupted() ? 128 + dsckpt_interrupted() : EXIT_OKAY;
    dsckpt_ckpt_free(ck);
    free(a.defout);
    return rc;
}

/* ---------------- verify ---------------- */

static const char verify_help[] =
    "Usage: dsckpt verify PATH [-t TAG] [--json]\n"
    "\n"
    "Check the integrity of a checkpoint (save root or tag directory) or of a single\n"
    ".safetensors file. A save root has every tag checked (or only --tag TAG), each\n"
    "named with its verdict, and 'latest' must name one of them; the exit code is\n"
    "the worst verdict. Each tag is snapshotted (its files, manifest and 'latest')\n"
    "before and after: if a writer changed it meanwhile the verdict is \"changed\n"
    "while verifying\" (exit 2), not \"corrupt\". For a checkpoint: every file listed in the manifest must\n"
    "exist with its size and be valid safetensors naming this checkpoint; the SHA-256\n"
    "of every chunk is recomputed on all cores; fragments must cover every tensor\n"
    "exactly once and fit their files; files the manifest does not list are reported.\n"
    "For a .safetensors file: the header is checked with every rule of the reference\n"
    "parser and every byte is read. All problems are reported, not only the first.\n"
    "\n"
    "Options:\n"
    "  -t, --tag TAG     check only this tag: a tag, 'latest', 'best' or a checkpoint-N\n"
    "                    (default: every tag of a save root)\n"
    "      --json        print the report as JSON on stdout (\"tags\": each verdict)\n"
    "  -j, --threads N   hashing threads (default: all CPUs)\n"
    "  -q, --quiet       no progress bar, no report text when intact\n"
    "  -h, --help        this help\n"
    "\n"
    "On ext4 and XFS, chunks not in the page cache are read with direct I/O\n"
    "(DSCKPT_DIRECT_IO=0: through the page cache).\n"
    "\n";

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static int cmd_verify(int argc, char **argv) {
    static const struct option lo[] = {{"tag", required_argument, 0, 't'}, {"json", no_argument, 0, 'J'},
                                       {"threads", required_argument, 0, 'j'}, {"quiet", no_argument, 0, 'q'},
                                       {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    dsckpt_verify_opts o;
    dsckpt_verify_opts_init(&o);
    common co = {0};
    int c, rc;
    OPTS_BEGIN(lo, argv);
    while ((c = getopt_long(argc, argv, "t:j:qh", lo, NULL)) != -1)
        if (common_opt(c, "verify", verify_help, &co, &rc)) return rc;
    const char *tag = co.tag;
    bool json = co.json, quiet = co.quiet;
    o.threads = co.threads;
    if (optind != argc - 1) return usage_error("verify", "%s", "expected exactly one path");
    const char *path = argv[optind];
    cli_progress p;
    cli_progress_init(&p, "verify", quiet || json);
    o.progress = cli_progress_cb;
    o.progress_user = &p;
    dsckpt_verify_report *r;
    dsckpt_status st = dsckpt_verify(path, tag, &o, &r);
    cli_progress_end(&p);
    if (st) return fail(st, "verify");
    double el = cli_now() - p.t0;
    dsckpt_verify_result res = dsckpt_verify_report_result(r);
    static const char *names[] = {"ok", "corrupt", "unreadable", "unsupported (unsafe to pass on)"};
    static const char *jnames[] = {"ok", "corrupt", "unreadable", "unsupported"};
    size_t n = dsckpt_verify_report_count(r), nt = dsckpt_verify_report_tag_count(r);
    bool changed = dsckpt_verify_report_changed(r) != 0;
    const char *verdict = changed && res == DSCKPT_VERIFY_UNREADABLE ? "changed while verifying" : names[res];
    if (json) {
        printf("{\"path\":");
        json_str(stdout, path);
        printf(",\"result\":\"%s\",\"changed\":%s,\"files\":%zu,\"bytes_hashed\":%" PRIu64 ",\"seconds\":%.3f,\"tags\":[",
               jnames[res], changed ? "true" : "false", dsckpt_verify_report_files(r), dsckpt_verify_report_bytes(r), el);
        for (size_t i = 0; i < nt; i++) {
            printf("%s{\"tag\":", i ? "," : "");
            json_str(stdout, dsckpt_verify_report_tag_name(r, i));
            printf(",\"result\":\"%s\",\"changed\":%s}", jnames[dsckpt_verify_report_tag_result(r, i)],
                   dsckpt_verify_report_tag_changed(r, i) ? "true" : "false");
        }
        printf("],\"gb_per_s\":%.3f,\"problems\":[", el > 0 ? (double)dsckpt_verify_report_bytes(r) / el / 1e9 : 0.0);
        for (size_t i = 0; i < n; i++) {
            dsckpt_verify_problem pi;
            if (dsckpt_verify_report_problem_info(r, i, &pi)) continue;
            printf("%s{\"file\":", i ? "," : "");
            json_str(stdout, pi.file);
            if (pi.chunk >= 0) printf(",\"chunk\":%" PRId64, pi.chunk);
            else printf(",\"chunk\":null");
            printf(",\"kind\":\"%s\",\"message\":", pi.kind);
            json_str(stdout, pi.message);
            putchar('}');
        }
        printf("]}\n");
    } else {
        for (size_t i = 0; i < n; i++) printf("problem: %s\n", dsckpt_verify_report_problem(r, i));
        for (size_t i = 0; i < nt && (res != DSCKPT_VERIFY_OK || !quiet); i++)
            printf("tag %s: %s\n", dsckpt_verify_report_tag_name(r, i),
                   dsckpt_verify_report_tag_changed(r, i) ? "changed while verifying"
                                                          : names[dsckpt_verify_report_tag_result(r, i)]);
        if (res != DSCKPT_VERIFY_OK || !quiet)
            printf("%s: %s (%zu file%s, %.2f GB checked in %.2f s, %zu problem%s)\n", path, verdict,
                   dsckpt_verify_report_files(r), dsckpt_verify_report_files(r) == 1 ? "" : "s",
                   (double)dsckpt_verify_report_bytes(r) / 1e9, el, n, n == 1 ? "" : "s");
    }
    dsckpt_verify_report_free(r);
    return res == DSCKPT_VERIFY_OK            ? EXIT_OKAY
           : res == DSCKPT_VERIFY_CORRUPT     ? EXIT_CORRUPT
           : res == DSCKPT_VERIFY_UNSUPPORTED ? EXIT_UNSUPPORTED
                                              : EXIT_UNREADABLE;
}

/* ---------------- inspect ---------------- */

static const char inspect_help[] =
    "Usage: dsckpt inspect CKPT [-t TAG] [--json]\n"
    "       dsckpt inspect FILE.safetensors [--json]\n"
    "\n"
    "Describe a checkpoint: tags and latest, step, ZeRO stage, world size, training\n"
    "dtype, tensor count and shapes, bytes per state and per rank file, eval metrics,\n"
    "and the best checkpoint recorded in trainer_state.json.\n"
    "\n"
    "Options:\n"
    "  -t, --tag TAG   a tag, 'latest', 'best' or a checkpoint-N (as consolidate)\n"
    "      --json      the full description as JSON on stdout\n"
    "      --tensors   list every tensor in the text output\n"
    "  -q, --quiet     one summary line\n"
    "  -h, --help      this help\n";

/* Compact one-line JSON of `v` (malloc'd) for the text view. */
static char *compact(const cJSON *v) { return v ? cJSON_PrintUnformatted(v) : NULL; }

static double jget(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Text view of the description dsckpt_ckpt_describe_json() produced. */
static void print_inspect_text(const cJSON *d, bool tensors) {
    printf("checkpoint   %s\n", jstr(d, "dir"));
    printf("format       %s\n", jstr(d, "format"));
    printf("tag          %s (step %.0f)\n", jstr(d, "tag"), jget(d, "step"));
    if (jstr(d, "latest")) printf("latest       %s\n", jstr(d, "latest"));
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(d, "tags");
    if (cJSON_GetArraySize(tags) > 0) {
        char *t = compact(tags);
        printf("tags         %s\n", t ? t : "");
        free(t);
    }
    printf("zero stage   %.0f\n", jget(d, "zero_stage"));
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(d, "files");
    printf("world size   %.0f (%d rank file%s)\n", jget(d, "world_size"), cJSON_GetArraySize(files),
           cJSON_GetArraySize(files) == 1 ? "" : "s");
    printf("train dtype  %s\n", jstr(d, "train_dtype"));
    printf("tensors      %.0f in %.0f parameter group%s\n", jget(d, "tensor_count"), jget(d, "param_groups"),
           jget(d, "param_groups") == 1 ? "" : "s");
    printf("parameters   %.0f (%.0f trainable, %.0f frozen)\n", jget(d, "param_count"), jget(d, "trainable_params"),
           jget(d, "frozen_params"));
    printf("state bytes ");
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(d, "bytes_per_state");
    for (const cJSON *e = bs ? bs->child : NULL; e; e = e->next) printf(" %s=%.2f MB", e->string, e->valuedouble / 1e6);
    printf("\n");
    for (const cJSON *f = files ? files->child : NULL; f; f = f->next) {
        printf("  %-28s rank %-5.0f %12.0f bytes", jstr(f, "name"), jget(f, "rank"), jget(f, "size"));
        if (jstr(f, "compression"))
            printf(" (%s: %.0f stored, %.3fx)", jstr(f, "compression"), jget(f, "stored_size"),
                   jget(f, "stored_size") > 0 ? jget(f, "size") / jget(f, "stored_size") : 0.0);
        printf("\n");
    }
    char *m = compact(cJSON_GetObjectItemCaseSensitive(d, "metrics"));
    printf("metrics      %s\n", m ? m : "{}");
    free(m);
    const cJSON *best = cJSON_GetObjectItemCaseSensitive(d, "best");
    if (best && jstr(best, "best_model_checkpoint"))
        printf("best         %s (best_metric %g)\n", jstr(best, "best_model_checkpoint"), jget(best, "best_metric"));
    if (tensors) {
        const cJSON *tl = cJSON_GetObjectItemCaseSensitive(d, "tensors");
        for (const cJSON *t = tl ? tl->child : NULL; t; t = t->next) {
            char *sh = compact(cJSON_GetObjectItemCaseSensitive(t, "shape"));
            printf("  %-40s %-5s %-14s %s\n", jstr(t, "name"), jstr(t, "dtype"), sh ? sh : "",
                   cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(t, "trainable")) ? "trainable" : "frozen");
            free(sh);
        }
    }
}

static int cmd_inspect(int argc, char **argv) {
    static const struct option lo[] = {{"tag", required_argument, 0, 't'}, {"json", no_argument, 0, 'J'},
                                       {"tensors", no_argument, 0, 'T'}, {"help", no_argument, 0, 'h'},
                                       {"quiet", no_argument, 0, 'q'},   {0, 0, 0, 0}};
    common co = {0};
    bool tensors = false;
    int c, rc;
    OPTS_BEGIN(lo, argv);
    while ((c = getopt_long(argc, argv, "t:qh", lo, NULL)) != -1) {
        if (c == 'T') tensors = true;
        else if (common_opt(c, "inspect", inspect_help, &co, &rc)) return rc;
    }
    const char *tag = co.tag;
    bool json = co.json;
    if (optind != argc - 1) return usage_error("inspect", "%s", "expected exactly one checkpoint path");
    dsckpt_ckpt *ck;
    dsckpt_status st = dsckpt_source_open(argv[optind], tag, &ck);
    if (st) return fail(st, "inspect");
    if (co.quiet && !json) {
        dsckpt_info in;
        dsckpt_ckpt_info(ck, &in);
        printf("%s: %s %s, step %" PRId64 ", world size %d, stage %d, %s, %zu tensors, %" PRIu64 " parameters\n",
               argv[optind], in.format, in.tag, in.step, in.world_size, in.zero_stage, in.train_dtype, in.tensor_count,
               in.param_count);
        dsckpt_ckpt_free(ck);
        return EXIT_OKAY;
    }
    char *text = NULL;
    st = dsckpt_ckpt_describe_json(ck, &text);
    if (st) {
        dsckpt_ckpt_free(ck);
        return fail(st, "inspect");
    }
    if (json) {
        fputs(text, stdout);
        fputc('\n', stdout);
    } else {
        cJSON *d = cJSON_Parse(text);
        if (!d) {
            free(text);
            dsckpt_ckpt_free(ck);
            fprintf(stderr, "%s inspect: out of memory\n", prog);
            return EXIT_UNREADABLE;
        }
        print_inspect_text(d, tensors);
        cJSON_Delete(d);
    }
    free(text);
    dsckpt_ckpt_free(ck);
    return EXIT_OKAY;
}

/* ---------------- synth ---------------- */

static const char synth_help[] =
    "Usage: dsckpt synth -o DIR --params N --world-size W --stage S [options]\n"
    "\n"
    "Write a checkpoint with a GPT-like tensor list (token embedding tied to the LM\n"
    "head, a frozen position embedding, per-layer matrices, odd-length biases) and\n"
    "deterministic values (rule in docs/synth.md), under the save root DIR: native\n"
    "(default) or, with --format deepspeed, DeepSpeed's files (stages 1-3).\n"
    "\n"
    "Options:\n"
    "  -o, --output DIR      output save root (required)\n"
    "      --params N        approximate parameter count (default 1M; 7B, 500M, 125K,\n"
    "                        1e9: K = 1e3, M = 1e6, B = 1e9)\n"
    "      --world-size W    data-parallel world size (default 2)\n"
    "      --stage S         ZeRO stage 0-3 (default 2)\n"
    "      --dtype D         training dtype bf16 (default), fp16 or fp32\n"
    "      --seed N          value seed (default 1)\n"
    "      --step N          step; the tag is global_step<N> (default 100)\n"
    "      --format F        native (default) or deepspeed\n"
    "      --compress[=L]    zstd-compressed rank files (native; level 1-22,\n"
    "                        default " DS_STR(DSCKPT_COMPRESS_DEFAULT_LEVEL) ")\n"
    "      --force           replace an existing output\n"
    "  -j, --threads N       worker threads (default: all CPUs)\n"
    "  -q, --quiet           no progress bar (the summary line stays)\n"
    "  -h, --help            this help\n";

static int cmd_synth(int argc, char **argv) {
    static const struct option lo[] = {
        {"output", required_argument, 0, 'o'}, {"params", required_argument, 0, 'P'},
        {"world-size", required_argument, 0, 'W'}, {"stage", required_argument, 0, 's'},
        {"dtype", required_argument, 0, 'd'}, {"seed", required_argument, 0, 'S'},
        {"step", required_argument, 0, 'n'}, {"force", no_argument, 0, 'f'},
        {"threads", required_argument, 0, 'j'}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'}, {"format", required_argument, 0, 'F'},
        {"compress", optional_argument, 0, 'Z'}, {0, 0, 0, 0}};
    dsckpt_synth_opts o;
    dsckpt_synth_opts_init(&o);
    common co = {0};
    long v;
    uint64_t u;
    int c, rc;
    OPTS_BEGIN(lo, argv);
    while ((c = getopt_long(argc, argv, "o:j:qh", lo, NULL)) != -1) {
        switch (c) {
        case 'P':
            if (!parse_count(optarg, &u)) return usage_error("synth", "--params: cannot parse '%s' (e.g. 7B, 350M, 125K, 1e9)", optarg);
            if (u < 1000 || u > (1ull << 40)) return usage_error("synth", "--params must be 1000 .. 2^40 (got '%s')", optarg);
            o.params = u;
            break;
        case 'W':
            if (!parse_int(optarg, 1, 1000000, &v)) return usage_error("synth", "--world-size must be 1..1000000 (got '%s')", optarg);
            o.world_size = (int)v;
            break;
        case 's':
            if (!parse_int(optarg, 0, 3, &v)) return usage_error("synth", "--stage must be 0, 1, 2 or 3 (got '%s')", optarg);
            o.zero_stage = (int)v;
            break;
        case 'd':
            if (dsckpt_dtype_parse(optarg, &o.dtype) != DSCKPT_OK ||
                (o.dtype != DSCKPT_BF16 && o.dtype != DSCKPT_F16 && o.dtype != DSCKPT_F32))
                return usage_error("synth", "--dtype must be bf16, fp16 or fp32 (got '%s')", optarg);
            break;
        case 'S': {
            char *end;
            errno = 0;
            o.seed = strtoull(optarg, &end, 10);
            if (errno || *end || end == optarg) return usage_error("synth", "--seed must be an integer (got '%s')", optarg);
            break;
        }
        case 'n':
            if (!parse_int(optarg, 0, 1L << 53, &v)) return usage_error("synth", "--step must be a non-negative integer (got '%s')", optarg);
            o.step = v;
            break;
        case 'F':
            if (!parse_format(optarg, &o.format))
                return usage_error("synth", "--format must be native or deepspeed (got '%s')", optarg);
            break;
        case 'Z':
            if (!parse_compress(optarg, &o.compress_level))
                return usage_error("synth", "--compress=LEVEL: the level must be 1..22 (got '%s')", optarg);
            break;
        default:
            if (common_opt(c, "synth", synth_help, &co, &rc)) return rc;
        }
    }
    const char *out = co.out;
    bool quiet = co.quiet;
    o.force = co.force;
    o.threads = co.threads;
    if (optind != argc) return usage_error("synth", "unexpected argument '%s'", argv[optind]);
    if (!out) return usage_error("synth", "%s", "-o DIR is required");
    double t0 = cli_now();
    catch_stop_signals();
    cli_progress p;
    cli_progress_init(&p, "synth", quiet);
    o.progress = cli_progress_cb;
    o.progress_user = &p;
    dsckpt_status st = dsckpt_synth(out, &o);
    cli_progress_end(&p);
    if (st) return fail(st, "synth");
    if (dsckpt_interrupted()) return 128 + dsckpt_interrupted();
    fprintf(stderr, "synthesized %s: ~%" PRIu64 " params, world size %d, stage %d, %s, in %.2f s\n", out, o.params,
                o.world_size, o.zero_stage, dsckpt_dtype_name(o.dtype), cli_now() - t0);
    return EXIT_OKAY;
}

/* ---------------- main ---------------- */

static const char main_help[] =
    "Usage: dsckpt COMMAND [options]\n"
    "\n"
    "Consolidate, reshard, verify and inspect sharded (ZeRO) training checkpoints.\n"
    "\n"
    "Commands:\n"
    "  consolidate   full weights as safetensors (one file or HF sharded layout)\n"
    "  reshard       a checkpoint for another world size / ZeRO stage\n"
    "  verify        check hashes, structure and fragment coverage\n"
    "  inspect       describe a checkpoint (--json for data)\n"
    "  synth         write a synthetic checkpoint of any size\n"
    "  list          every tag: step, metric, best, world size, size, complete\n"
    "  diff          compare two checkpoints (or a checkpoint and a .safetensors)\n"
    "  estimate      model-state memory per GPU / node and checkpoint size\n"
    "  version       print the version\n"
    "\n"
    "Run 'dsckpt COMMAND --help' for a command's options.\n"
    "\n";

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(main_help, stderr);
        fputs(exit_codes_help, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(main_help, stdout);
        fputs(exit_codes_help, stdout);
        return EXIT_OKAY;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("dsckpt %d.%d.%d\n", DSCKPT_VERSION_MAJOR, DSCKPT_VERSION_MINOR, DSCKPT_VERSION_PATCH);
        return EXIT_OKAY;
    }
    argc--;
    argv++;
    /* getopt names argv[0] in its messages: make that "dsckpt COMMAND". */
    static char self[64];
    snprintf(self, sizeof self, "%s %s", prog, cmd);
    argv[0] = self;
    optind = 1;
    if (!strcmp(cmd, "consolidate")) return cmd_consolidate(argc, argv);
    if (!strcmp(cmd, "reshard")) return cmd_reshard(argc, argv);
    if (!strcmp(cmd, "verify")) return cmd_verify(argc, argv);
    if (!strcmp(cmd, "inspect")) return cmd_inspect(argc, argv);
    if (!strcmp(cmd, "synth")) return cmd_synth(argc, argv);
    if (!strcmp(cmd, "list")) return cmd_list(argc, argv);
    if (!strcmp(cmd, "estimate")) return cmd_estimate(argc, argv);
    if (!strcmp(cmd, "diff")) return cmd_diff(argc, argv);
    fprintf(stderr, "%s: unknown command '%s'\nRun '%s --help' for the list.\n", prog, cmd, prog);
    return EXIT_USAGE;
}
