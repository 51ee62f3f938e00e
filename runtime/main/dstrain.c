/*
 * dstrain.c — the training program: a GPT-2-style model on byte-level text with
 * ZeRO stages 0-3 over MPI (one process per rank; `dsrun` starts them), driven by
 * a DeepSpeed-style ds_config.json. Rank 0 writes one JSON line per optimizer step
 * to --log_file (and a summary to stderr every steps_per_print steps).
 */
#include "comm.h"
#include "config.h"
#include "data.h"
#include "engine.h"
#include "engine_ckpt.h"
#include "trainer.h"
#include "model.h"
#include "rt_time.h"
#include "savedir.h"
#include "stream.h"
#include "ckpt.h"
#include "fsutil.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

static const char help[] =
    "Usage: dstrain --deepspeed ds_config.json --data FILE [options]\n"
    "       dsrun --num_procs N dstrain --deepspeed ds_config.json --data FILE [options]\n"
    "\n"
    "Train a GPT-2-style model on the bytes of FILE with ZeRO stage 0-3 (the stage,\n"
    "precision, optimizer, schedule, batch sizes and clipping come from the DeepSpeed\n"
    "config; \"auto\" values are filled from the flags below, as with Hugging Face).\n"
    "\n"
    "Model and run:\n"
    "  --n_layer N --n_head N --n_embd N --seq_len N   model size (default 2, 2, 64, 64)\n"
    "  --max_steps N          optimizer steps to run (default 100)\n"
    "  --seed S               initialisation and data seed (default 1234)\n"
    "  --eval_steps N         evaluate every N steps (default 0 = only at the end)\n"
    "  --eval_windows N       eval windows used (default 64; 0 = all)\n"
    "  --log_file F           JSON lines from rank 0, one per optimizer step: step,\n"
    "                         loss, lr, grad_norm, loss_scale, skipped, tokens_per_s,\n"
    "                         step_s, comm_s (seconds in collectives), comm_bytes\n"
    "                         (bytes rank 0 sent); eval_loss on eval steps,\n"
    "                         save_stall_s on save steps, save_copy_s on steps whose\n"
    "                         update waited to copy what an async save had not yet\n"
    "                         read; the last line also\n"
    "                         master_sha256 / working_sha256, SHA-256 of the full\n"
    "                         fp32 master and 16-bit working weights\n"
    "  --print_memory         print each rank's bytes held (params, grads, optimizer)\n"
    "                         next to the ZeRO formulas, then exit\n"
    "Checkpoints (native format, readable by dsckpt):\n"
    "  --save_dir D           save root: D/global_step<N>/, D/latest, D/trainer_state.json\n"
    "  --save_steps N         save every N steps (and after the last step)\n"
    "  --save_total_limit K   keep the newest K checkpoints and the best (default: all)\n"
    "  --no_async_save        write checkpoints synchronously (default: a background\n"
    "                         thread writes the checkpoint while training goes on;\n"
    "                         the next optimizer update first copies whatever it has\n"
    "                         not written yet, into a host buffer of 12 bytes per\n"
    "                         parameter of the rank's partition, kept for the run)\n"
    "  --metric_for_best_model M  (default eval_loss; \"eval_\" is added when missing)\n"
    "  --greater_is_better    (default: false for metrics ending in \"loss\")\n"
    "  --load_best_model_at_end  reload the best checkpoint's weights at the end and\n"
    "                         write D/final/model.safetensors (16-bit) and its .sha256\n"
    "  --resume auto|TAG      continue from D/TAG, or (auto) the newest checkpoint in D\n"
    "                         that verifies (native or DeepSpeed's format), at any\n"
    "                         world size and ZeRO stage; the checkpoint must be of the\n"
    "                         model the flags describe. auto starts from scratch only\n"
    "                         when D holds no checkpoint; it stops with an error when\n"
    "                         D holds checkpoints it cannot use\n"
    "  --save_model OUT       after training, the final weights as 16-bit safetensors\n"
    "Hugging Face TrainingArguments (fill \"auto\" in the config):\n"
    "  --per_device_train_batch_size N  --gradient_accumulation_steps N\n"
    "  --learning_rate X  --weight_decay X  --adam_beta1 X  --adam_beta2 X\n"
    "  --adam_epsilon X  --max_grad_norm X  --warmup_steps N  --bf16  --fp16\n"
    "  -h, --help             this help\n"
    "\n"
    "Exit codes: 0 done, 1 the checkpoint to resume is corrupt (or --resume auto finds\n"
    "checkpoints but none that verifies), 2 bad input (config, data) or unreadable,\n"
    "3 usage (also: the checkpoint to resume is of another model than the flags say),\n"
    "5 a checkpoint dstrain cannot resume, 70 internal or MPI failure.\n";

enum {
    O_DS = 256, O_DATA, O_NL, O_NH, O_NE, O_SEQ, O_STEPS, O_SEED, O_EVAL, O_EVALW, O_LOG, O_MEM,
    O_PDBS, O_GAS, O_LR, O_WD, O_B1, O_B2, O_EPS, O_MGN, O_WARM, O_BF16, O_FP16,
    O_SAVEDIR, O_SAVESTEPS, O_LIMIT, O_NOASYNC, O_METRIC, O_GREATER, O_LOADBEST, O_RESUME, O_SAVEMODEL
};

/* The exit code of a failure (the table of dsckpt's --help). */
static int exit_code(dsckpt_status st) {
    switch (st) {
    case DSCKPT_EINVAL:
    case DSCKPT_EMISUSE: return 3;
    case DSCKPT_EEXIST: return 4;
    case DSCKPT_ECORRUPT:
    case DSCKPT_ECHECKSUM:
    case DSCKPT_EVERSION: return 1;
    case DSCKPT_EUNSUPPORTED: return 5;
    case DSCKPT_EIO:
    case DSCKPT_ENOSPC:
    case DSCKPT_ENOENT: return 2;
    default: return 70;
    }
}

static int usage(const char *fmt, const char *arg) {
    fprintf(stderr, "dstrain: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(dstrain --help for usage)\n");
    return 3;
}

static bool num_u(const char *s, uint64_t lo, uint64_t hi, uint64_t *v) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || x < lo || x > hi) return false;
    *v = x;
    return true;
}

static bool num_d(const char *s, double *v) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(x)) return false;
    *v = x;
    return true;
}

static double fake_metric(const char *spec, uint64_t step, double dflt) {
    for (const char *p = spec; p && *p;) {
        char *end;
        unsigned long long st = strtoull(p, &end, 10);
        if (*end != ':') break;
        double v = strtod(end + 1, &end);
        if (st == step) return v;
        p = *end == ',' ? end + 1 : NULL;
    }
    return dflt;
}

/* Rank 0, once a checkpoint is committed: best tracking, trainer_state.json, rotation. */
static dsckpt_status on_commit(rt_tstate *ts, const char *save_dir, const char *tag, uint64_t step, double metric,
                               bool greater, uint64_t limit, uint64_t max_steps, uint64_t eval_steps,
                               uint64_t save_steps, uint64_t tbs) {
    rt_tstate_checkpoint(ts, tag, step, metric, greater);
    DS_TRY(rt_tstate_save(ts, save_dir, step, max_steps, eval_steps, save_steps, tbs));
    int deleted = 0;
    return rt_rotate(save_dir, limit, rt_tstate_best(ts), tag, &deleted);
}

/* The 16-bit weights of checkpoint save_dir/tag as one safetensors file: OUT (a
 * file), or OUT/NAME when name is given, plus NAME.sha256 beside it. */
static dsckpt_status write_final(const char *save_dir, const char *tag, const char *out, const char *name) {
    dsckpt_ckpt *c = NULL;
    DS_TRY(dsckpt_ckpt_open(save_dir, tag, &c));
    dsckpt_consolidate_opts co;
    dsckpt_consolidate_opts_init(&co);
    co.force = 1;
    char *path = NULL;
    dsckpt_status st = DSCKPT_OK;
    if (name) {
        if (mkdir(out, 0755) && errno != EEXIST) st = ds_err_errno(errno, "cannot create %s", out);
        path = st ? NULL : ds_join(out, name);
        if (!st && !path) st = DSCKPT_ENOMEM;
    }
    const char *target = name ? path : out;
    co.dtype = !strcmp(c->train_dtype, "fp16") ? DSCKPT_F16 : DSCKPT_BF16;
    if (!st) st = dsckpt_consolidate(c, target, &co);
    if (!st && name) { /* sha256sum-style digest file */
        char *text = NULL;
        size_t len = 0;
        st = ds_read_small_file(target, (size_t)1 << 40, &text, &len);
        uint8_t h[DS_SHA256_LEN];
        char hex[2 * DS_SHA256_LEN + 1], line[512];
        if (!st) st = ds_sha256(text, len, h);
        free(text);
        if (!st) {
            ds_hex(h, DS_SHA256_LEN, hex);
            snprintf(line, sizeof line, "%s  %s\n", hex, name);
            char *sp = ds_join(out, "model.safetensors.sha256");
            st = sp ? ds_write_file_atomic(sp, line, strlen(line)) : DSCKPT_ENOMEM;
            free(sp);
        }
    }
    free(path);
    dsckpt_ckpt_free(c);
    return st;
}

/* Under a launcher (Open MPI's mpirun, or its orted on other nodes: each rank is
 * a direct child of one), a rank dies with it: when the launcher is killed the
 * kernel sends this rank SIGKILL at once, so no rank trains on, or commits a
 * checkpoint, after its launcher is gone (Open MPI alone notices only a second or
 * two later). Run without a launcher, nothing changes. */
static void die_with_launcher(void) {
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK")) return;
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return;
    if (getppid() != parent || parent == 1) raise(SIGKILL); /* it died before the line above */
}

int main(int argc, char **argv) {
    static const struct option lo[] = {
        {"deepspeed", required_argument, 0, O_DS}, {"data", required_argument, 0, O_DATA},
        {"n_layer", required_argument, 0, O_NL}, {"n_head", required_argument, 0, O_NH},
        {"n_embd", required_argument, 0, O_NE}, {"seq_len", required_argument, 0, O_SEQ},
        {"max_steps", required_argument, 0, O_STEPS}, {"seed", required_argument, 0, O_SEED},
        {"eval_steps", required_argument, 0, O_EVAL}, {"eval_windows", required_argument, 0, O_EVALW},
        {"log_file", required_argument, 0, O_LOG}, {"print_memory", no_argument, 0, O_MEM},
        {"per_device_train_batch_size", required_argument, 0, O_PDBS},
        {"gradient_accumulation_steps", required_argument, 0, O_GAS},
        {"learning_rate", required_argument, 0, O_LR}, {"weight_decay", required_argument, 0, O_WD},
        {"adam_beta1", required_argument, 0, O_B1}, {"adam_beta2", required_argument, 0, O_B2},
        {"adam_epsilon", required_argument, 0, O_EPS}, {"max_grad_norm", required_argument, 0, O_MGN},
        {"warmup_steps", required_argument, 0, O_WARM}, {"bf16", no_argument, 0, O_BF16},
        {"fp16", no_argument, 0, O_FP16}, {"help", no_argument, 0, 'h'},
        {"save_dir", required_argument, 0, O_SAVEDIR}, {"save_steps", required_argument, 0, O_SAVESTEPS},
        {"save_total_limit", required_argument, 0, O_LIMIT}, {"no_async_save", no_argument, 0, O_NOASYNC},
        {"metric_for_best_model", required_argument, 0, O_METRIC}, {"greater_is_better", no_argument, 0, O_GREATER},
        {"load_best_model_at_end", no_argument, 0, O_LOADBEST}, {"resume", required_argument, 0, O_RESUME},
        {"save_model", required_argument, 0, O_SAVEMODEL}, {0, 0, 0, 0}};
    const char *save_dir = NULL, *resume = NULL, *save_model = NULL, *metric_arg = NULL;
    uint64_t save_steps = 0, save_limit = 0;
    bool async_save = true, greater_given = false, load_best = false;
    const char *cfg_path = NULL, *data_path = NULL, *log_path = NULL;
    uint64_t nl = 2, nh = 2, ne = 64, seq = 64, steps = 100, seed = 1234, eval_steps = 0, eval_w = 64;
    bool print_mem = false;
    rt_args a;
    rt_args_init(&a);
    int c;
    uint64_t u;
    double d;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(help, stdout);
            return 0;
        }
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case O_DS: cfg_path = optarg; break;
        case O_DATA: data_path = optarg; break;
        case O_LOG: log_path = optarg; break;
        case O_MEM: print_mem = true; break;
        case O_NL: if (!num_u(optarg, 1, 1000, &nl)) return usage("--n_layer must be 1..1000 (got '%s')", optarg); break;
        case O_NH: if (!num_u(optarg, 1, 1024, &nh)) return usage("--n_head must be 1..1024 (got '%s')", optarg); break;
        case O_NE: if (!num_u(optarg, 1, 65536, &ne)) return usage("--n_embd must be 1..65536 (got '%s')", optarg); break;
        case O_SEQ: if (!num_u(optarg, 1, 1 << 20, &seq)) return usage("--seq_len must be 1..1048576 (got '%s')", optarg); break;
        case O_STEPS: if (!num_u(optarg, 0, 1ull << 40, &steps)) return usage("--max_steps must be >= 0 (got '%s')", optarg);
            a.has_max_steps = true;
            a.max_steps = steps;
            break;
        case O_SEED: if (!num_u(optarg, 0, UINT64_MAX, &seed)) return usage("--seed must be an integer >= 0 (got '%s')", optarg); break;
        case O_EVAL: if (!num_u(optarg, 0, 1ull << 40, &eval_steps)) return usage("--eval_steps must be >= 0 (got '%s')", optarg); break;
        case O_EVALW: if (!num_u(optarg, 0, 1ull << 40, &eval_w)) return usage("--eval_windows must be >= 0 (got '%s')", optarg); break;
        case O_PDBS: if (!num_u(optarg, 1, 1 << 20, &u)) return usage("--per_device_train_batch_size must be >= 1 (got '%s')", optarg);
            a.has_per_device_train_batch_size = true, a.per_device_train_batch_size = u;
            break;
        case O_GAS: if (!num_u(optarg, 1, 1 << 20, &u)) return usage("--gradient_accumulation_steps must be >= 1 (got '%s')", optarg);
            a.has_gradient_accumulation_steps = true, a.gradient_accumulation_steps = u;
            break;
        case O_WARM: if (!num_u(optarg, 0, 1ull << 40, &u)) return usage("--warmup_steps must be >= 0 (got '%s')", optarg);
            a.has_warmup_steps = true, a.warmup_steps = u;
            break;
        case O_LR: if (!num_d(optarg, &d)) return usage("--learning_rate: not a number ('%s')", optarg);
            a.has_learning_rate = true, a.learning_rate = d;
            break;
        case O_WD: if (!num_d(optarg, &d)) return usage("--weight_decay: not a number ('%s')", optarg);
            a.has_weight_decay = true, a.weight_decay = d;
            break;
        case O_B1: if (!num_d(optarg, &d)) return usage("--adam_beta1: not a number ('%s')", optarg);
            a.has_adam_beta1 = true, a.adam_beta1 = d;
            break;
        case O_B2: if (!num_d(optarg, &d)) return usage("--adam_beta2: not a number ('%s')", optarg);
            a.has_adam_beta2 = true, a.adam_beta2 = d;
            break;
        case O_EPS: if (!num_d(optarg, &d)) return usage("--adam_epsilon: not a number ('%s')", optarg);
            a.has_adam_epsilon = true, a.adam_epsilon = d;
            break;
        case O_MGN: if (!num_d(optarg, &d)) return usage("--max_grad_norm: not a number ('%s')", optarg);
            a.has_max_grad_norm = true, a.max_grad_norm = d;
            break;
        case O_BF16: a.has_bf16 = true, a.bf16 = true; break;
        case O_FP16: a.has_fp16 = true, a.fp16 = true; break;
        case O_SAVEDIR: save_dir = optarg; break;
        case O_SAVESTEPS: if (!num_u(optarg, 0, 1ull << 40, &save_steps)) return usage("--save_steps must be >= 0 (got '%s')", optarg); break;
        case O_LIMIT: if (!num_u(optarg, 0, 1ull << 40, &save_limit)) return usage("--save_total_limit must be >= 0 (got '%s')", optarg); break;
        case O_NOASYNC: async_save = false; break;
        case O_METRIC: metric_arg = optarg; break;
        case O_GREATER: greater_given = true; break;
        case O_LOADBEST: load_best = true; break;
        case O_RESUME: resume = optarg; break;
        case O_SAVEMODEL: save_model = optarg; break;
        default: return usage("%s", "unknown option");
        }
    }
    if (optind != argc) return usage("unexpected argument '%s'", argv[optind]);
    if (!cfg_path) return usage("%s", "--deepspeed ds_config.json is required");
    if (!data_path) return usage("%s", "--data FILE is required");
    if ((resume || load_best || save_model || save_steps || save_limit) && !save_dir)
        return usage("%s", "--resume, --save_steps, --save_total_limit, --load_best_model_at_end and --save_model need --save_dir");
    if (resume && strcmp(resume, "auto") && !ds_safe_name(resume))
        return usage("--resume takes 'auto' or a tag directory name (got '%s')", resume);
    char metric[128];
    rt_metric_name(metric_arg, metric, sizeof metric);
    if (strcmp(metric, "eval_loss"))
        return usage("--metric_for_best_model: dstrain computes eval_loss only (got '%s')", metric);
    bool greater = greater_given || rt_metric_greater_default(metric);
    a.has_hidden_size = true;
    a.hidden_size = ne;

    rt_comm *comm = NULL;
    rt_config cfg = {0};
    rt_data *data = NULL;
    rt_model *model = NULL;
    rt_engine *eng = NULL;
    rt_saver *saver = NULL;
    rt_tstate ts = {0};
    FILE *log = NULL;
    int rc = 0;
    die_with_launcher();
    dsckpt_status st = rt_comm_open_mpi(&argc, &argv, &comm);
    if (st) {
        fprintf(stderr, "dstrain: %s\n", dsckpt_last_error());
        return 70;
    }
    int rank = rt_comm_rank(comm), W = rt_comm_size(comm);
#define FAIL(code)                                                                 \
    do {                                                                           \
        fprintf(stderr, "dstrain (rank %d): %s\n", rank, dsckpt_last_error());     \
        rc = (code);                                                               \
        goto done;                                                                 \
    } while (0)
    /* Bad input found before training: every rank reads the same files and reaches
     * the same verdict, so they all exit cleanly (no MPI_Abort noise). */
    bool clean_exit = true;
    if ((st = rt_config_load(cfg_path, &a, W, &cfg))) FAIL(2);
    if ((st = rt_data_open(data_path, seq, RT_DATA_EVAL_FRACTION_DEFAULT, &data))) FAIL(2);
    rt_model_cfg mc = {.vocab_size = 256, .n_ctx = (int)seq, .n_layer = (int)nl, .n_head = (int)nh, .n_embd = (int)ne};
    if ((st = rt_model_create(&mc, (int)cfg.micro_batch, (int)seq, &model))) FAIL(2);
    if ((st = rt_engine_create(&cfg, comm, model, seed, &eng))) FAIL(st == DSCKPT_EINVAL ? 2 : 70);
    clean_exit = false;
    if (print_mem) {
        rt_mem_report have, want;
        rt_engine_memory(eng, &have);
        rt_engine_memory_formula(eng, &want);
        for (int r = 0; r < W; r++) {
            if (r == rank)
                printf("{\"rank\": %d, \"stage\": %d, \"world_size\": %d, \"numel\": %llu, \"params_bytes\": %llu, "
                       "\"grads_bytes\": %llu, \"optim_bytes\": %llu, \"formula_params_bytes\": %llu, "
                       "\"formula_grads_bytes\": %llu, \"formula_optim_bytes\": %llu}\n",
                       rank, cfg.zero.stage, W, (unsigned long long)have.numel,
                       (unsigned long long)have.params_bytes, (unsigned long long)have.grads_bytes,
                       (unsigned long long)have.optim_bytes, (unsigned long long)want.params_bytes,
                       (unsigned long long)want.grads_bytes, (unsigned long long)want.optim_bytes);
            fflush(stdout);
            rt_comm_barrier(comm);
        }
        goto done;
    }
    if (rank == 0 && log_path && !(log = fopen(log_path, "w"))) {
        fprintf(stderr, "dstrain: cannot open --log_file %s: %s\n", log_path, strerror(errno));
        rc = 2;
        rt_comm_abort(comm, 2);
    }
    if (rank == 0)
        fprintf(stderr, "dstrain: %llu parameters, ZeRO stage %d, %d rank(s), %s, batch %llu = %llu x %llu x %d\n",
                (unsigned long long)rt_model_numel(model), cfg.zero.stage, W,
                cfg.bf16.enabled ? "bf16" : cfg.fp16.enabled ? "fp16" : "fp32", (unsigned long long)cfg.train_batch_size,
                (unsigned long long)cfg.micro_batch, (unsigned long long)cfg.grad_accum, W);
    /* Checkpoints: the saver, rank 0's trainer state, and --resume. */
    if (save_dir) {
        if ((st = rt_saver_create(eng, async_save, &saver))) FAIL(70);
        if (rank == 0 && (st = rt_tstate_load(save_dir, &ts))) FAIL(70);
    }
    uint64_t k0 = 0;
    if (save_dir && rank == 0) {
        int removed = rt_clean_debris(save_dir);
        if (removed)
            fprintf(stderr, "dstrain: removed %d temporary file(s) of killed saves from %s\n", removed, save_dir);
    }
    if (resume) {
        /* Rank 0 decides (verify, model check); every rank gets the verdict and a
         * refusal ends them all with the same exit code. */
        rt_resume_pick pick;
        double verify_s = rt_now_s();
        if (rank == 0) rt_resume_pick_tag(eng, save_dir, resume, &pick);
        verify_s = rt_now_s() - verify_s;
        if ((st = rt_comm_bcast(comm, &pick, sizeof pick, 0))) FAIL(70);
        pick.tag[sizeof pick.tag - 1] = pick.msg[sizeof pick.msg - 1] = '\0';
        if (pick.exit_code) {
            if (rank == 0) fprintf(stderr, "dstrain: --resume %s: %s\n", resume, pick.msg);
            rc = pick.exit_code;
            clean_exit = true;
            goto done;
        }
        if (pick.tag[0]) {
            cJSON *state = NULL;
            double tl0 = rt_now_s();
            double read_s = 0;
            if ((st = rt_engine_load(eng, save_dir, pick.tag, &state, &read_s))) FAIL(exit_code(st));
            if ((st = rt_comm_barrier(comm))) FAIL(70);
            double load_s = rt_now_s() - tl0;
            const cJSON *dj = cJSON_GetObjectItemCaseSensitive(state, "data");
            const cJSON *nb = dj ? cJSON_GetObjectItemCaseSensitive(dj, "next_batch") : NULL;
            k0 = rt_engine_steps(eng);
            if (nb) {
                double v = cJSON_IsNumber(nb) ? nb->valuedouble : -1;
                if (!(v >= 0) || v > 9007199254740991.0 || v != floor(v)) {
                    cJSON_Delete(state);
                    ds_err(DSCKPT_ECORRUPT, "%s/%s: state.data.next_batch must be an integer in [0, 2^53 - 1]",
                           save_dir, pick.tag);
                    FAIL(1);
                }
                k0 = (uint64_t)v;
            }
            cJSON_Delete(state);
            if (rank == 0)
                fprintf(stderr, "dstrain: resumed from %s/%s%s at step %llu (verified in %.3f s, loaded in %.3f s: "
                        "partitions read in %.3f s, working weights rebuilt in %.3f s)\n",
                        save_dir, pick.tag, pick.deepspeed ? " (DeepSpeed format)" : "", (unsigned long long)k0,
                        verify_s, load_s, read_s, load_s - read_s);
        } else if (rank == 0) {
            fprintf(stderr, "dstrain: --resume auto: no checkpoint in %s yet; starting from scratch\n", save_dir);
        }
    }
    /* Test hook: DSTRAIN_TEST_EVAL="step:value,..." replaces the eval metric at those
     * steps (to plant a best checkpoint in tests); it is reported on stderr. */
    const char *fake_eval = ds_test_hook("DSTRAIN_TEST_EVAL");
    if (fake_eval && rank == 0) fprintf(stderr, "dstrain: DSTRAIN_TEST_EVAL is set: eval metrics overridden (%s)\n", fake_eval);
    double last_eval = NAN, pending_metric = NAN;
    uint64_t pending_step = 0;
    for (uint64_t k = k0; k < steps; k++) {
        rt_step_stats s;
        const char *committed = NULL;
        if (saver && (st = rt_saver_poll(saver, false, &committed))) FAIL(70);
        if (committed && rank == 0 && (st = on_commit(&ts, save_dir, committed, pending_step, pending_metric, greater,
                                                      save_limit, steps, eval_steps, save_steps, cfg.train_batch_size)))
            FAIL(70);
        if ((st = rt_engine_step(eng, data, seed, k, &s))) FAIL(70);
        double copy_s = rt_saver_take_copy_seconds(saver); /* this step's share of an async save's stall */
        double el = NAN;
        bool do_eval = (eval_steps && (k + 1) % eval_steps == 0) || k + 1 == steps;
        if (do_eval && (st = rt_engine_eval(eng, data, eval_w, &el))) FAIL(70);
        if (do_eval && fake_eval) el = fake_metric(fake_eval, s.step, el);
        if (do_eval) last_eval = el;
        if (rank == 0 && ts.root) {
            rt_tstate_log_train(&ts, s.step, s.loss, s.lr, s.grad_norm);
            if (do_eval) rt_tstate_log_eval(&ts, s.step, metric, el);
        }
        double stall = -1;
        if (saver && ((save_steps && s.step % save_steps == 0) || k + 1 == steps)) {
            char tag[64];
            snprintf(tag, sizeof tag, "global_step%llu", (unsigned long long)s.step);
            cJSON *tstate = cJSON_CreateObject(), *mets = cJSON_CreateObject();
            cJSON *dj = cJSON_AddObjectToObject(tstate, "data");
            cJSON_AddNumberToObject(dj, "next_batch", (double)(k + 1));
            cJSON_AddNumberToObject(dj, "seed", (double)seed);
            cJSON_AddNumberToObject(cJSON_AddObjectToObject(tstate, "rng"), "seed", (double)seed);
            if (isfinite(last_eval)) cJSON_AddNumberToObject(mets, metric, last_eval);
            /* A save still in flight is committed first (inside rt_saver_start). */
            bool had = rt_saver_busy(saver);
            uint64_t prev_step = pending_step;
            double prev_metric = pending_metric;
            char prev_tag[64];
            snprintf(prev_tag, sizeof prev_tag, "global_step%llu", (unsigned long long)prev_step);
            st = rt_saver_start(saver, save_dir, tag, tstate, mets, &stall);
            cJSON_Delete(tstate);
            cJSON_Delete(mets);
            if (st) FAIL(70);
            if (had && rank == 0 && (st = on_commit(&ts, save_dir, prev_tag, prev_step, prev_metric, greater, save_limit,
                                                    steps, eval_steps, save_steps, cfg.train_batch_size)))
                FAIL(70);
            pending_step = s.step;
            pending_metric = last_eval;
            if (!async_save && rank == 0 && (st = on_commit(&ts, save_dir, tag, pending_step, pending_metric, greater,
                                                            save_limit, steps, eval_steps, save_steps,
                                                            cfg.train_batch_size)))
                FAIL(70);
        }
        char digest[2 * DS_SHA256_LEN + 1] = "", wdigest[2 * DS_SHA256_LEN + 1] = "";
        if (k + 1 == steps && log_path) {
            /* Digests of the final fp32 master weights and of the working (16-bit)
             * weights in model order, for bit-identity checks. */
            uint64_t n = rt_model_numel(model);
            float *all = malloc((size_t)n * sizeof *all);
            uint8_t h[DS_SHA256_LEN];
            if (!all) {
                ds_err(DSCKPT_ENOMEM, "out of memory");
                FAIL(70);
            }
            st = rt_engine_gather_master(eng, all);
            if (!st) st = ds_sha256(all, (size_t)n * sizeof *all, h);
            if (!st) ds_hex(h, DS_SHA256_LEN, digest);
            if (!st) st = rt_engine_gather_working(eng, all);
            if (!st) st = ds_sha256(all, (size_t)n * rt_engine_working_size(eng), h);
            if (!st) ds_hex(h, DS_SHA256_LEN, wdigest);
            free(all);
            if (st) FAIL(70);
        }
        if (rank == 0 && log) {
            fprintf(log,
                    "{\"step\": %llu, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, \"loss_scale\": %.9g, "
                    "\"skipped\": %s, \"tokens_per_s\": %.6g, \"step_s\": %.6g, \"comm_s\": %.6g, \"comm_bytes\": %llu",
                    (unsigned long long)s.step, s.loss, s.lr, isnan(s.grad_norm) ? -1.0 : s.grad_norm, s.loss_scale,
                    s.skipped ? "true" : "false", s.tokens_per_s, s.seconds, s.comm_seconds,
                    (unsigned long long)s.comm_bytes);
            if (do_eval) fprintf(log, ", \"eval_loss\": %.9g", el);
            if (digest[0]) fprintf(log, ", \"master_sha256\": \"%s\", \"working_sha256\": \"%s\"", digest, wdigest);
            if (stall >= 0) fprintf(log, ", \"save_stall_s\": %.6g", stall);
            if (copy_s > 0) fprintf(log, ", \"save_copy_s\": %.6g", copy_s);
            fprintf(log, "}\n");
            fflush(log);
        }
        if (rank == 0 && ((cfg.steps_per_print && s.step % cfg.steps_per_print == 0) || do_eval))
            fprintf(stderr, "step %llu: loss %.4f lr %.3g grad_norm %.3g%s%s %.0f tok/s\n", (unsigned long long)s.step,
                    s.loss, s.lr, s.grad_norm, s.skipped ? " (skipped: overflow)" : "",
                    do_eval ? ({
                        static char b[64];
                        snprintf(b, sizeof b, " eval_loss %.4f", el);
                        b;
                    })
                            : "",
                    s.tokens_per_s);
    }
    /* The last save, committed before anything reads it. */
    if (saver) {
        bool had = async_save && rt_saver_busy(saver);
        const char *committed = NULL;
        if ((st = rt_saver_poll(saver, true, &committed))) FAIL(70);
        if (had && committed && rank == 0 &&
            (st = on_commit(&ts, save_dir, committed, pending_step, pending_metric, greater, save_limit, steps,
                            eval_steps, save_steps, cfg.train_batch_size)))
            FAIL(70);
    }
    if (load_best) {
        char best[256] = "";
        if (rank == 0 && rt_tstate_best(&ts)) snprintf(best, sizeof best, "%s", rt_tstate_best(&ts));
        if ((st = rt_comm_bcast(comm, best, sizeof best, 0))) FAIL(70);
        if (!best[0]) {
            ds_err(DSCKPT_ENOENT, "--load_best_model_at_end: no checkpoint with a metric was saved (use --eval_steps and --save_steps)");
            FAIL(2);
        }
        if ((st = rt_engine_load_weights(eng, save_dir, best))) FAIL(70);
        double el = NAN;
        if ((st = rt_engine_eval(eng, data, eval_w, &el))) FAIL(70);
        if (rank == 0) {
            fprintf(stderr, "dstrain: loaded the best checkpoint %s/%s (%s %.6f) at %d rank(s)\n", save_dir, best,
                    metric, el, W);
            char *fin = ds_join(save_dir, "final");
            st = fin ? write_final(save_dir, best, fin, "model.safetensors") : DSCKPT_ENOMEM;
            free(fin);
            if (st) FAIL(70);
        }
    }
    if (save_model && rank == 0) {
        char tag[64];
        snprintf(tag, sizeof tag, "global_step%llu", (unsigned long long)rt_engine_steps(eng));
        if ((st = write_final(save_dir, tag, save_model, NULL))) FAIL(70);
    }
done:
    if (log) fclose(log);
    rt_saver_free(saver);
    rt_tstate_free(&ts);
    rt_engine_free(eng);
    rt_model_free(model);
    rt_data_free(data);
    rt_config_free(&cfg);
    if (rc && !clean_exit) rt_comm_abort(comm, rc);
    rt_comm_close(comm);
    return rc;
}
