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
#include "model.h"
#include "stream.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    "  --log_file F           JSON lines from rank 0: step, loss, lr, grad_norm,\n"
    "                         loss_scale, skipped, tokens_per_s, step_s, comm_s (and\n"
    "                         eval_loss; the last line also master_sha256, the SHA-256\n"
    "                         of the full fp32 master weights)\n"
    "  --print_memory         print each rank's bytes held (params, grads, optimizer)\n"
    "                         next to the ZeRO formulas, then exit\n"
    "Hugging Face TrainingArguments (fill \"auto\" in the config):\n"
    "  --per_device_train_batch_size N  --gradient_accumulation_steps N\n"
    "  --learning_rate X  --weight_decay X  --adam_beta1 X  --adam_beta2 X\n"
    "  --adam_epsilon X  --max_grad_norm X  --warmup_steps N  --bf16  --fp16\n"
    "  -h, --help             this help\n"
    "\n"
    "Exit codes: 0 done, 2 bad input (config, data), 3 usage, 70 internal or MPI failure.\n";

enum {
    O_DS = 256, O_DATA, O_NL, O_NH, O_NE, O_SEQ, O_STEPS, O_SEED, O_EVAL, O_EVALW, O_LOG, O_MEM,
    O_PDBS, O_GAS, O_LR, O_WD, O_B1, O_B2, O_EPS, O_MGN, O_WARM, O_BF16, O_FP16
};

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
        {"fp16", no_argument, 0, O_FP16}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
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
        default: return usage("%s", "unknown option");
        }
    }
    if (optind != argc) return usage("unexpected argument '%s'", argv[optind]);
    if (!cfg_path) return usage("%s", "--deepspeed ds_config.json is required");
    if (!data_path) return usage("%s", "--data FILE is required");
    a.has_hidden_size = true;
    a.hidden_size = ne;

    rt_comm *comm = NULL;
    rt_config cfg = {0};
    rt_data *data = NULL;
    rt_model *model = NULL;
    rt_engine *eng = NULL;
    FILE *log = NULL;
    int rc = 0;
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
    for (uint64_t k = 0; k < steps; k++) {
        rt_step_stats s;
        if ((st = rt_engine_step(eng, data, seed, k, &s))) FAIL(70);
        double el = NAN;
        bool do_eval = (eval_steps && (k + 1) % eval_steps == 0) || k + 1 == steps;
        if (do_eval && (st = rt_engine_eval(eng, data, eval_w, &el))) FAIL(70);
        char digest[2 * DS_SHA256_LEN + 1] = "";
        if (k + 1 == steps && log_path) { /* the final fp32 master weights, for bit-identity checks */
            uint64_t n = rt_model_numel(model);
            float *all = malloc((size_t)n * sizeof *all);
            uint8_t h[DS_SHA256_LEN];
            if (!all) {
                ds_err(DSCKPT_ENOMEM, "out of memory");
                FAIL(70);
            }
            st = rt_engine_gather_master(eng, all);
            if (!st) st = ds_sha256(all, (size_t)n * sizeof *all, h);
            free(all);
            if (st) FAIL(70);
            ds_hex(h, DS_SHA256_LEN, digest);
        }
        if (rank == 0 && log) {
            fprintf(log,
                    "{\"step\": %llu, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, \"loss_scale\": %.9g, "
                    "\"skipped\": %s, \"tokens_per_s\": %.6g, \"step_s\": %.6g, \"comm_s\": %.6g",
                    (unsigned long long)s.step, s.loss, s.lr, isnan(s.grad_norm) ? -1.0 : s.grad_norm, s.loss_scale,
                    s.skipped ? "true" : "false", s.tokens_per_s, s.seconds, s.comm_seconds);
            if (do_eval) fprintf(log, ", \"eval_loss\": %.9g", el);
            if (digest[0]) fprintf(log, ", \"master_sha256\": \"%s\"", digest);
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
done:
    if (log) fclose(log);
    rt_engine_free(eng);
    rt_model_free(model);
    rt_data_free(data);
    rt_config_free(&cfg);
    if (rc && !clean_exit) rt_comm_abort(comm, rc);
    rt_comm_close(comm);
    return rc;
}
