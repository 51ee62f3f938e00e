/*
 * args.c — dstrain's command line: the help text, the option table, and parsing
 * into rt_opts (args.h). Hugging Face TrainingArguments flags fill rt_args, which
 * rt_config_load uses for the config's "auto" values.
 */
#include "args.h"

#include "fsutil.h"
#include "trainer.h"

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
    "  --max_steps N          optimizer steps to run (default 100, or from\n"
    "                         --num_train_epochs; given with it, --max_steps wins)\n"
    "  --num_train_epochs X   train X epochs (X > 0, may be fractional): max_steps =\n"
    "                         ceil(X x steps per epoch), an epoch being as many\n"
    "                         samples as windows of seq_len + 1 bytes fit in the\n"
    "                         train part of --data, over train_batch_size\n"
    "                         (samples are drawn at random offsets; see data.h)\n"
    "  --seed S               initialisation and data seed (default 1234)\n"
    "  --eval_steps N         evaluate every N steps (default 0 = only at the end)\n"
    "  --eval_windows N       eval windows used (default 64; 0 = all)\n"
    "  --log_file F           JSON lines from rank 0, one per optimizer step: step,\n"
    "                         loss, lr, grad_norm, loss_scale, skipped, tokens_per_s,\n"
    "                         step_s, comm_s (seconds in collectives), comm_bytes\n"
    "                         (bytes rank 0 sent), epoch (step / steps per epoch,\n"
    "                         see --num_train_epochs); eval_loss on eval steps,\n"
    "                         save_stall_s on save steps, save_copy_s on steps whose\n"
    "                         update waited to copy what an async save had not yet\n"
    "                         read; the last line also\n"
    "                         master_sha256 / working_sha256, SHA-256 of the full\n"
    "                         fp32 master and 16-bit working weights\n"
    "  --device cpu|cuda|cpu-strict  where the step runs (default cpu). cuda: rank r on\n"
    "                         GPU r modulo the GPUs found (a build with CUDA), device\n"
    "                         buffers staged through pinned host memory for MPI;\n"
    "                         cpu-strict: the CPU kernels on memory the host may not\n"
    "                         touch (a test of the device discipline; same bits as cpu)\n"
    "  --comm mpi|nccl        the engine's collectives (default mpi: the launcher's MPI,\n"
    "                         device buffers staged through pinned host memory, so\n"
    "                         several ranks may share one GPU); nccl: NCCL over the\n"
    "                         ranks, one GPU each (needs --device cuda and a build\n"
    "                         with NCCL; sums added in rank order, as mpi does)\n"
    "  --gemm_dtype auto|fp32|bf16|fp16  the operands of the step's matrix products\n"
    "                         (default auto: the config's bf16/fp16 on --device cuda,\n"
    "                         as DeepSpeed computes, fp32 on the CPU). bf16/fp16:\n"
    "                         both operands rounded to that type, fp32 accumulation\n"
    "                         (cuda; cpu-strict emulates it; cpu computes in fp32 only)\n"
    "  --print_memory         print each rank's bytes held (params, grads, optimizer)\n"
    "                         next to the ZeRO formulas, then exit\n"
    "Progress on stderr (rank 0): every --logging_steps steps (or the config's\n"
    "steps_per_print) and on eval steps, one line: step/max_steps, the loss averaged\n"
    "over the steps since the previous line (the logging window), this step's lr\n"
    "and grad_norm, eval_loss, epoch, samples/s and tokens/s over the window (its\n"
    "wall time less evaluation; saves count), elapsed and ETA; a line per\n"
    "committed save (\"saved global_step40 in 0.80 s, async\"); at the end a\n"
    "summary (steps, time, best checkpoint, where the checkpoints and models are).\n"
    "Config keys dstrain accepts but does not act on (monitoring sections, offload\n"
    "on a CPU run, unknown top-level keys) and flags without effect are each named\n"
    "in a warning line.\n"
    "Checkpoints (native format, readable by dsckpt):\n"
    "  --save_dir D           save root: D/global_step<N>/, D/latest, D/trainer_state.json\n"
    "  --save_steps N         save every N steps (and after the last step)\n"
    "  --save_total_limit K   keep the newest K checkpoints and the best (default: all)\n"
    "  --no_async_save        write checkpoints synchronously, each rank's file on its\n"
    "                         training threads (OMP_NUM_THREADS; default: a background\n"
    "                         writer writes it while training goes on, on one thread,\n"
    "                         or on all the training threads but one when the model\n"
    "                         and the optimizer are on the GPU;\n"
    "                         the next optimizer update first copies whatever it has\n"
    "                         not written yet, into a host buffer of 12 bytes per\n"
    "                         parameter of the rank's partition, kept for the run);\n"
    "                         either way the rank files are written with direct I/O\n"
    "                         on ext4 and XFS (DSCKPT_DIRECT_IO=0: page cache)\n"
    "  --save_compress[=L]    zstd-compressed rank files (byte-plane shuffled; level L\n"
    "                         1-22, default 1); dsckpt and --resume read them\n"
    "                         transparently (docs/native-format.md, version 3)\n"
    "  --metric_for_best_model M  (default eval_loss; \"eval_\" is added when missing)\n"
    "  --greater_is_better    (default: false for metrics ending in \"loss\")\n"
    "  --load_best_model_at_end  reload the best checkpoint's weights at the end and\n"
    "                         write D/final/model.safetensors (16-bit) and its .sha256\n"
    "  --resume auto|TAG      continue from D/TAG, or (auto) the newest checkpoint in D\n"
    "                         that is intact (native or DeepSpeed's format), at any\n"
    "                         world size and ZeRO stage; the checkpoint must be of the\n"
    "                         model the flags describe. Each rank reads its share on\n"
    "                         its training threads, and every byte a resume reads is\n"
    "                         checked against its SHA-256 (or CRC-32) as it is read;\n"
    "                         when auto's pick turns out damaged, it says where, goes\n"
    "                         on to the next older checkpoint, and once resumed moves\n"
    "                         the damaged one aside whole to D/TAG.damaged (so its\n"
    "                         steps can be saved again). auto starts from\n"
    "                         scratch only when D holds no checkpoint; it stops with\n"
    "                         an error when D holds checkpoints it cannot use\n"
    "  --save_model OUT       after training, the final weights as 16-bit safetensors\n"
    "  (zero_optimization.stage3_gather_16bit_weights_on_model_save true in the\n"
    "  config: at every committed save, D/model.safetensors and its .sha256, the\n"
    "  16-bit weights of that checkpoint, as DeepSpeed's save_16bit_model)\n"
    "  (--resume with --max_steps not above the checkpoint's step trains nothing,\n"
    "  says so and exits 0, as the Trainer)\n"
    "Hugging Face TrainingArguments (fill \"auto\" in the config):\n"
    "  --per_device_train_batch_size N  --gradient_accumulation_steps N\n"
    "  --learning_rate X  --weight_decay X  --adam_beta1 X  --adam_beta2 X\n"
    "  --adam_epsilon X  --max_grad_norm X  --warmup_steps N  --bf16  --fp16\n"
    "  (an \"auto\" whose flag is not given takes the Trainer's default: lr 5e-5,\n"
    "  betas 0.9/0.999, eps 1e-8, weight decay 0, warmup 0, max_grad_norm 1,\n"
    "  batch 8 per device, accumulation 1, fp16/bf16 off; all config problems are\n"
    "  reported in one run)\n"
    "  --output_dir D         the same as --save_dir\n"
    "  --logging_steps N      the stderr summary line every N steps (default: the\n"
    "                         config's steps_per_print)\n"
    "  --save_strategy steps|no  --eval_strategy steps|no  (dstrain counts steps)\n"
    "  --lr_scheduler_type linear|cosine|constant|constant_with_warmup\n"
    "                         the schedule when the config has no \"scheduler\"\n"
    "                         section (linear warmup over --warmup_steps, then\n"
    "                         linear or cosine decay to 0 at --max_steps)\n"
    "  -h, --help             this help\n"
    "\n"
    "Exit codes: 0 done, 1 the checkpoint to resume is corrupt (or --resume auto finds\n"
    "checkpoints but none intact), 2 bad input (config, data) or unreadable,\n"
    "3 usage (also: the checkpoint to resume is of another model than the flags say),\n"
    "5 a checkpoint dstrain cannot resume, 70 internal or MPI failure.\n";

enum {
    O_DS = 256, O_DATA, O_NL, O_NH, O_NE, O_SEQ, O_STEPS, O_SEED, O_EVAL, O_EVALW, O_LOG, O_MEM,
    O_PDBS, O_GAS, O_LR, O_WD, O_B1, O_B2, O_EPS, O_MGN, O_WARM, O_BF16, O_FP16,
    O_SAVEDIR, O_SAVESTEPS, O_LIMIT, O_NOASYNC, O_COMPRESS, O_METRIC, O_GREATER, O_LOADBEST, O_RESUME, O_SAVEMODEL,
    O_LOGSTEPS, O_SAVESTRAT, O_EVALSTRAT, O_SCHED, O_EPOCHS, O_DEVICE, O_COMM, O_GEMMDT
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

/* One piece: one case per option, then the checks that span options. */
int rt_opts_parse(int argc, char **argv, rt_opts *o) {
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
        {"save_compress", optional_argument, 0, O_COMPRESS},
        {"device", required_argument, 0, O_DEVICE},
        {"comm", required_argument, 0, O_COMM},
        {"gemm_dtype", required_argument, 0, O_GEMMDT},
        {"metric_for_best_model", required_argument, 0, O_METRIC}, {"greater_is_better", no_argument, 0, O_GREATER},
        {"load_best_model_at_end", no_argument, 0, O_LOADBEST}, {"resume", required_argument, 0, O_RESUME},
        {"save_model", required_argument, 0, O_SAVEMODEL},
        /* Hugging Face TrainingArguments spellings. */
        {"output_dir", required_argument, 0, O_SAVEDIR}, {"logging_steps", required_argument, 0, O_LOGSTEPS},
        {"save_strategy", required_argument, 0, O_SAVESTRAT}, {"eval_strategy", required_argument, 0, O_EVALSTRAT},
        {"evaluation_strategy", required_argument, 0, O_EVALSTRAT},
        {"lr_scheduler_type", required_argument, 0, O_SCHED}, {"num_train_epochs", required_argument, 0, O_EPOCHS},
        {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->n_layer = 2, o->n_head = 2, o->n_embd = 64, o->seq_len = 64, o->max_steps = 100, o->seed = 1234;
    o->eval_windows = 64;
    o->async_save = true;
    o->device = "cpu";
    o->comm = "mpi";
    o->gemm_dtype = "auto";
    rt_args_init(&o->hf);
    const char *metric_arg = NULL, *save_strategy = NULL, *eval_strategy = NULL;
    bool greater_given = false;
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
        case O_DS: o->cfg_path = optarg; break;
        case O_DATA: o->data_path = optarg; break;
        case O_LOG: o->log_path = optarg; break;
        case O_MEM: o->print_memory = true; break;
        case O_NL: if (!num_u(optarg, 1, 1000, &o->n_layer)) return usage("--n_layer must be 1..1000 (got '%s')", optarg); break;
        case O_NH: if (!num_u(optarg, 1, 1024, &o->n_head)) return usage("--n_head must be 1..1024 (got '%s')", optarg); break;
        case O_NE: if (!num_u(optarg, 1, 65536, &o->n_embd)) return usage("--n_embd must be 1..65536 (got '%s')", optarg); break;
        case O_SEQ: if (!num_u(optarg, 1, 1 << 20, &o->seq_len)) return usage("--seq_len must be 1..1048576 (got '%s')", optarg); break;
        case O_STEPS: if (!num_u(optarg, 0, 1ull << 40, &o->max_steps)) return usage("--max_steps must be >= 0 (got '%s')", optarg);
            o->hf.has_max_steps = true;
            o->hf.max_steps = o->max_steps;
            break;
        case O_SEED: if (!num_u(optarg, 0, UINT64_MAX, &o->seed)) return usage("--seed must be an integer >= 0 (got '%s')", optarg); break;
        case O_EVAL: if (!num_u(optarg, 0, 1ull << 40, &o->eval_steps)) return usage("--eval_steps must be >= 0 (got '%s')", optarg); break;
        case O_EVALW: if (!num_u(optarg, 0, 1ull << 40, &o->eval_windows)) return usage("--eval_windows must be >= 0 (got '%s')", optarg); break;
        case O_PDBS: if (!num_u(optarg, 1, 1 << 20, &u)) return usage("--per_device_train_batch_size must be >= 1 (got '%s')", optarg);
            o->hf.has_per_device_train_batch_size = true, o->hf.per_device_train_batch_size = u;
            break;
        case O_GAS: if (!num_u(optarg, 1, 1 << 20, &u)) return usage("--gradient_accumulation_steps must be >= 1 (got '%s')", optarg);
            o->hf.has_gradient_accumulation_steps = true, o->hf.gradient_accumulation_steps = u;
            break;
        case O_WARM: if (!num_u(optarg, 0, 1ull << 40, &u)) return usage("--warmup_steps must be >= 0 (got '%s')", optarg);
            o->hf.has_warmup_steps = true, o->hf.warmup_steps = u;
            break;
        case O_LR: if (!num_d(optarg, &d)) return usage("--learning_rate: not a number ('%s')", optarg);
            o->hf.has_learning_rate = true, o->hf.learning_rate = d;
            break;
        case O_WD: if (!num_d(optarg, &d)) return usage("--weight_decay: not a number ('%s')", optarg);
            o->hf.has_weight_decay = true, o->hf.weight_decay = d;
            break;
        case O_B1: if (!num_d(optarg, &d)) return usage("--adam_beta1: not a number ('%s')", optarg);
            o->hf.has_adam_beta1 = true, o->hf.adam_beta1 = d;
            break;
        case O_B2: if (!num_d(optarg, &d)) return usage("--adam_beta2: not a number ('%s')", optarg);
            o->hf.has_adam_beta2 = true, o->hf.adam_beta2 = d;
            break;
        case O_EPS: if (!num_d(optarg, &d)) return usage("--adam_epsilon: not a number ('%s')", optarg);
            o->hf.has_adam_epsilon = true, o->hf.adam_epsilon = d;
            break;
        case O_MGN: if (!num_d(optarg, &d)) return usage("--max_grad_norm: not a number ('%s')", optarg);
            o->hf.has_max_grad_norm = true, o->hf.max_grad_norm = d;
            break;
        case O_BF16: o->hf.has_bf16 = true, o->hf.bf16 = true; break;
        case O_FP16: o->hf.has_fp16 = true, o->hf.fp16 = true; break;
        case O_SAVEDIR: o->save_dir = optarg; break;
        case O_SAVESTEPS: if (!num_u(optarg, 0, 1ull << 40, &o->save_steps)) return usage("--save_steps must be >= 0 (got '%s')", optarg); break;
        case O_LIMIT: if (!num_u(optarg, 0, 1ull << 40, &o->save_limit)) return usage("--save_total_limit must be >= 0 (got '%s')", optarg); break;
        case O_NOASYNC: o->async_save = false; break;
        case O_COMPRESS:
            if (!optarg) o->save_compress = DSCKPT_COMPRESS_DEFAULT_LEVEL;
            else if (!num_u(optarg, 1, 22, &o->save_compress))
                return usage("--save_compress=LEVEL: the level must be 1..22 (got '%s')", optarg);
            break;
        case O_DEVICE:
            if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda") && strcmp(optarg, "cpu-strict"))
                return usage("--device must be cpu, cuda or cpu-strict (got '%s')", optarg);
            o->device = optarg;
            break;
        case O_COMM:
            if (strcmp(optarg, "mpi") && strcmp(optarg, "nccl"))
                return usage("--comm must be mpi or nccl (got '%s')", optarg);
            o->comm = optarg;
            break;
        case O_GEMMDT:
            if (strcmp(optarg, "auto") && strcmp(optarg, "fp32") && strcmp(optarg, "bf16") && strcmp(optarg, "fp16"))
                return usage("--gemm_dtype must be auto, fp32, bf16 or fp16 (got '%s')", optarg);
            o->gemm_dtype = optarg;
            break;
        case O_METRIC: metric_arg = optarg; break;
        case O_GREATER: greater_given = true; break;
        case O_LOADBEST: o->load_best = true; break;
        case O_RESUME: o->resume = optarg; break;
        case O_SAVEMODEL: o->save_model = optarg; break;
        case O_LOGSTEPS: if (!num_u(optarg, 1, 1ull << 40, &o->logging_steps)) return usage("--logging_steps must be >= 1 (got '%s')", optarg); break;
        case O_SAVESTRAT:
        case O_EVALSTRAT:
            /* dstrain counts steps: "steps" (what --save_steps / --eval_steps use) or "no". */
            if (strcmp(optarg, "steps") && strcmp(optarg, "no"))
                return usage(c == O_SAVESTRAT ? "--save_strategy takes steps or no (dstrain counts steps, not epochs; got '%s')"
                                              : "--eval_strategy takes steps or no (dstrain counts steps, not epochs; got '%s')", optarg);
            if (c == O_SAVESTRAT) save_strategy = optarg;
            else eval_strategy = optarg;
            break;
        case O_EPOCHS:
            if (!num_d(optarg, &d) || !(d > 0) || d > 1e9)
                return usage("--num_train_epochs must be a number > 0 (got '%s')", optarg);
            o->hf.has_num_train_epochs = true, o->hf.num_train_epochs = d;
            break;
        case O_SCHED:
            if (strcmp(optarg, "linear") && strcmp(optarg, "cosine") && strcmp(optarg, "constant") &&
                strcmp(optarg, "constant_with_warmup"))
                return usage("--lr_scheduler_type takes linear, cosine, constant or constant_with_warmup (got '%s')", optarg);
            o->hf.lr_scheduler_type = optarg;
            break;
        default: return usage("%s", "unknown option");
        }
    }
    if (optind != argc) return usage("unexpected argument '%s'", argv[optind]);
    if (save_strategy && !strcmp(save_strategy, "no")) {
        if (o->save_steps) return usage("%s", "--save_strategy no with --save_steps: pick one");
        if (o->load_best) return usage("%s", "--load_best_model_at_end needs saves: not with --save_strategy no");
    }
    if (eval_strategy && !strcmp(eval_strategy, "no")) {
        if (o->eval_steps) return usage("%s", "--eval_strategy no with --eval_steps: pick one");
        if (o->load_best) return usage("%s", "--load_best_model_at_end needs evaluations: not with --eval_strategy no");
    }
    /* As the Trainer: the best model can only be one that was saved when evaluated. */
    if (o->load_best && o->eval_steps && o->save_steps && o->save_steps % o->eval_steps) {
        char m[160];
        snprintf(m, sizeof m, "--load_best_model_at_end needs --save_steps (%llu) to be a round multiple of --eval_steps (%llu)",
                 (unsigned long long)o->save_steps, (unsigned long long)o->eval_steps);
        return usage("%s", m);
    }
    if (!strcmp(o->comm, "nccl") && strcmp(o->device, "cuda"))
        return usage("--comm nccl needs --device cuda (got --device %s)", o->device);
    if (!o->cfg_path) return usage("%s", "--deepspeed ds_config.json is required");
    if (!o->data_path) return usage("%s", "--data FILE is required");
    if ((o->resume || o->load_best || o->save_model || o->save_steps || o->save_limit) && !o->save_dir)
        return usage("%s", "--resume, --save_steps, --save_total_limit, --load_best_model_at_end and --save_model need --save_dir");
    if (o->resume && strcmp(o->resume, "auto") && !ds_safe_name(o->resume))
        return usage("--resume takes 'auto' or a tag directory name (got '%s')", o->resume);
    rt_metric_name(metric_arg, o->metric, sizeof o->metric);
    if (strcmp(o->metric, "eval_loss"))
        return usage("--metric_for_best_model: dstrain computes eval_loss only (got '%s')", o->metric);
    o->greater = greater_given || rt_metric_greater_default(o->metric);
    o->hf.has_hidden_size = true;
    o->hf.hidden_size = o->n_embd;
    return -1;
}
