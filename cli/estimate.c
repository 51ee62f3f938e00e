/*
 * estimate.c — `dsckpt estimate`: model-state memory per GPU and per node, as
 * DeepSpeed's estimators compute it, and the size of a checkpoint on disk. No
 * model is built: the inputs are a parameter count (--params 7B) or an existing
 * checkpoint (its parameter count and largest tensor).
 *
 * The memory formulas are DeepSpeed's (deepspeed/runtime/zero/stage_1_and_2.py
 * estimate_zero2_model_states_mem_needs, stage3.py
 * estimate_zero3_model_states_mem_needs), bytes, with P = total parameters,
 * L = largest layer's parameters, G = total GPUs, g = GPUs per node, n = nodes,
 * b = additional_buffer_factor (1.5):
 *   ZeRO-2 (used for stages 1 and 2):
 *     offload_optimizer: gpu = 2P;                 cpu = P * max(4G, 16) * b
 *     none:              gpu = 4P + int(16P / G);  cpu = P * 4g * b
 *   ZeRO-3:
 *     offload_optimizer + offload_param: gpu = 4L
 *        cpu = zero_init ? P * 18/n * b : P * max(4g, 18/n) * b
 *     offload_optimizer:                 gpu = 4L + int(2P / G)
 *        cpu = zero_init ? P * 16/n * b : P * max(4g, 16/n) * b
 *     none:                              gpu = 4L + int(18P / G)
 *        cpu = zero_init ? L * 4g * b : P * 4g * b
 * Both estimators truncate their results with int(); "per CPU" is per node.
 * Stage 0 (nothing partitioned) is the ZeRO-2 formula at G = 1.
 *
 * --compress (with CKPT) estimates the size of the checkpoint as `reshard
 * --compress` would write it by compressing a sample of its chunks
 * (dsckpt_estimate_compressed). With --params there are no values to compress, and
 * the compressed size depends on them: the output says so instead of a figure.
 */
#include "cli.h"

#include <cjson/cJSON.h>

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct est_in {
    double P, L;
    int G, g, n, stage;
    bool off_opt, off_param, zero_init;
    double b;
} est_in;

typedef struct est_out {
    uint64_t gpu, cpu;
    const char *formula;
} est_out;

/* Python's int() of a non-negative float: truncation. */
static uint64_t trunc_u64(double v) { return v <= 0 ? 0 : (uint64_t)v; }

static est_out estimate(const est_in *x) {
    est_out r;
    double P = x->P, L = x->L, b = x->b, g = x->g, nf = 1.0 / x->n;
    if (x->stage <= 2) {
        double G = x->stage == 0 ? 1 : x->G;
        double gpu, cpu;
        if (x->off_opt) {
            gpu = 2 * P;
            cpu = P * fmax(4 * G, 16) * b;
        } else {
            gpu = 4 * P + (double)trunc_u64(16 * P / G);
            cpu = P * 4 * g * b;
        }
        r.gpu = trunc_u64(gpu);
        r.cpu = trunc_u64(cpu);
        r.formula = "estimate_zero2_model_states_mem_needs";
        return r;
    }
    double G = x->G, lm = 4 * L, gpu, cpu;
    if (x->off_opt && x->off_param) {
        gpu = lm;
        cpu = x->zero_init ? P * 18 * nf * b : P * fmax(4 * g, 18 * nf) * b;
    } else if (x->off_opt) {
        gpu = lm + (double)trunc_u64(2 * P / G);
        cpu = x->zero_init ? P * 16 * nf * b : P * fmax(4 * g, 16 * nf) * b;
    } else {
        gpu = lm + (double)trunc_u64(18 * P / G);
        cpu = x->zero_init ? L * 4 * g * b : P * 4 * g * b;
    }
    r.gpu = trunc_u64(gpu);
    r.cpu = trunc_u64(cpu);
    r.formula = "estimate_zero3_model_states_mem_needs";
    return r;
}

static const char estimate_help[] =
    "Usage: dsckpt estimate --params N --world-size W [--stage S] [options]\n"
    "       dsckpt estimate CKPT [-t TAG] [--world-size W] [options]\n"
    "\n"
    "Model-state memory (parameters, gradients, optimizer states) per GPU and per\n"
    "node, computed with DeepSpeed's own formulas (estimate_zero2_model_states_mem_needs\n"
    "for stages 1 and 2, estimate_zero3_model_states_mem_needs for stage 3; stage 0\n"
    "is the ZeRO-2 formula on one GPU), and the size of a checkpoint on disk. No\n"
    "model is built. Activations and framework overhead are not included. Figures\n"
    "are in GiB (2^30 bytes) as DeepSpeed prints them; --json gives bytes.\n"
    "From CKPT the parameter count, largest tensor, stage, world size and dtype are\n"
    "read from the checkpoint (each may be overridden).\n"
    "\n"
    "Options:\n"
    "      --params N           parameters: 7B, 1.5B, 350M, 125K or 7e9\n"
    "      --world-size W       total GPUs (default: the checkpoint's)\n"
    "      --gpus-per-node g    GPUs per node (default: W up to 8; W must be a multiple)\n"
    "      --stage S            ZeRO stage 0-3 (default 3; from CKPT: its stage)\n"
    "      --offload-optimizer  optimizer states on the CPU (offload_optimizer)\n"
    "      --offload-param      parameters on the CPU too (stage 3; needs\n"
    "                           --offload-optimizer, as DeepSpeed's estimator)\n"
    "      --largest-layer N    parameters of the largest layer (stage 3; default:\n"
    "                           the largest tensor of CKPT, else 0 and a note)\n"
    "      --no-zero-init       the model is not built under zero.Init (stage 3)\n"
    "      --buffer-factor F    DeepSpeed's additional_buffer_factor (default 1.5)\n"
    "      --dtype D            training dtype bf16 (default), fp16 or fp32: sizes\n"
    "                           of the 16-bit weights on disk (the memory formulas\n"
    "                           are DeepSpeed's, for mixed precision)\n"
    "      --compress[=L]       with CKPT: also its size as a compressed native\n"
    "                           checkpoint (what reshard --compress[=L] writes; zstd\n"
    "                           level L 1-22, default " DS_STR(DSCKPT_COMPRESS_DEFAULT_LEVEL) "), per state and in total,\n"
    "                           ESTIMATED by compressing a sample of the\n"
    "                           checkpoint's chunks with the same codec (the output\n"
    "                           says how many bytes were sampled). With --params\n"
    "                           there are no values to compress: the output says\n"
    "                           that the compressed size depends on them and gives\n"
    "                           no figure (run it on a checkpoint instead)\n"
    "      --sample-chunks N    --compress: compress up to N chunks of 4 MiB per\n"
    "                           state, spread evenly over it (default 16; more is\n"
    "                           slower and closer)\n"
    "  -t, --tag TAG            with CKPT: which tag\n"
    "      --json               the estimate as JSON on stdout\n"
    "  -h, --help               this help\n";

static void gib(char *buf, size_t n, uint64_t b) { snprintf(buf, n, "%.2f GiB", (double)b / 1073741824.0); }

/* What --compress says with --params: no values, so no figure. */
static const char params_compress_note[] =
    "the compressed size depends on the values, which --params does not give; run "
    "`dsckpt estimate CKPT --compress` on a checkpoint (it compresses a sample of its chunks)";

static double ratio(uint64_t raw, uint64_t stored) { return stored ? (double)raw / (double)stored : 0.0; }

static void json_zstate(cJSON *d, const dsckpt_zestimate_state *e) {
    cJSON_AddNumberToObject(d, "raw_bytes", (double)e->raw_bytes);
    cJSON_AddNumberToObject(d, "estimated_bytes", (double)e->estimated_bytes);
    cJSON_AddNumberToObject(d, "chunks", (double)e->chunks);
    cJSON_AddNumberToObject(d, "sampled_chunks", (double)e->sampled_chunks);
    cJSON_AddNumberToObject(d, "sampled_bytes", (double)e->sampled_raw);
    cJSON_AddNumberToObject(d, "sampled_stored_bytes", (double)e->sampled_stored);
}

/* "compressed": the estimate (z), or null and a note (z NULL: --params). */
static void json_compressed(cJSON *o, int level, const dsckpt_zestimate *z) {
    if (!z) {
        cJSON_AddNullToObject(o, "compressed");
        cJSON_AddStringToObject(o, "compressed_note", params_compress_note);
        return;
    }
    cJSON *d = cJSON_AddObjectToObject(o, "compressed");
    cJSON_AddBoolToObject(d, "estimate", true);
    cJSON_AddNumberToObject(d, "level", level);
    cJSON_AddNumberToObject(d, "chunk_size", (double)z->chunk_size);
    cJSON_AddNumberToObject(d, "raw_bytes", (double)z->raw_bytes);
    cJSON_AddNumberToObject(d, "estimated_bytes", (double)z->estimated_bytes);
    cJSON_AddNumberToObject(d, "sampled_bytes", (double)z->sampled_raw);
    cJSON_AddNumberToObject(d, "sampled_stored_bytes", (double)z->sampled_stored);
    cJSON *st = cJSON_AddObjectToObject(d, "states");
    for (int s = 0; s < DSCKPT_STATE_COUNT; s++)
        json_zstate(cJSON_AddObjectToObject(st, dsckpt_state_name((dsckpt_state)s)), &z->states[s]);
}

static void print_compressed(int level, const dsckpt_zestimate *z) {
    char a[32], b[32];
    if (!z) {
        printf("\ncompressed (--compress): %s\n", params_compress_note);
        return;
    }
    uint64_t chunks = 0, sampled = 0;
    for (int s = 0; s < DSCKPT_STATE_COUNT; s++) {
        chunks += z->states[s].chunks;
        sampled += z->states[s].sampled_chunks;
    }
    fmt_bytes(z->sampled_raw, a, sizeof a);
    fmt_bytes(z->raw_bytes, b, sizeof b);
    printf("\ncompressed native checkpoint (zstd level %d, as reshard --compress=%d writes it):\n"
           "an ESTIMATE from %" PRIu64 " of %" PRIu64 " chunks of %" PRIu64 " MiB compressed (%s of %s sampled)\n"
           "  state             raw    estimated  raw/stored\n",
           level, level, sampled, chunks, z->chunk_size >> 20, a, b);
    for (int s = 0; s < DSCKPT_STATE_COUNT; s++) {
        const dsckpt_zestimate_state *e = &z->states[s];
        if (!e->raw_bytes) continue;
        fmt_bytes(e->raw_bytes, a, sizeof a);
        fmt_bytes(e->estimated_bytes, b, sizeof b);
        printf("  %-10s %12s %12s %10.3fx\n", dsckpt_state_name((dsckpt_state)s), a, b,
               ratio(e->sampled_raw, e->sampled_stored));
    }
    fmt_bytes(z->raw_bytes, a, sizeof a);
    fmt_bytes(z->estimated_bytes, b, sizeof b);
    printf("  %-10s %12s %12s %10.3fx   (rank-file data; headers and manifest not counted)\n", "total", a, b,
           ratio(z->raw_bytes, z->estimated_bytes));
}

/* estimate's arguments, then what the checkpoint supplies. */
typedef struct est_args {
    est_in x;
    uint64_t params, largest;
    bool have_largest, json;
    long ws, gpn, nsample;
    int zlevel;                 /* --compress level, 0 without */
    const char *tag, *dtype_s, *ckpt;
    dsckpt_dtype dtype;
} est_args;

/* Parses estimate's command line into a. Returns -1 to go on, or the exit code
 * (after --help, or a usage error printed). */
static int estimate_parse(int argc, char **argv, est_args *a) {
    static const struct option lo[] = {
        {"params", required_argument, 0, 'P'},     {"world-size", required_argument, 0, 'W'},
        {"gpus-per-node", required_argument, 0, 'g'}, {"stage", required_argument, 0, 's'},
        {"offload-optimizer", no_argument, 0, 'O'}, {"offload-param", no_argument, 0, 'A'},
        {"largest-layer", required_argument, 0, 'L'}, {"no-zero-init", no_argument, 0, 'Z'},
        {"buffer-factor", required_argument, 0, 'B'}, {"dtype", required_argument, 0, 'd'},
        {"tag", required_argument, 0, 't'},         {"json", no_argument, 0, 'J'},
        {"compress", optional_argument, 0, 'C'},    {"sample-chunks", required_argument, 0, 'S'},
        {"help", no_argument, 0, 'h'},              {0, 0, 0, 0}};
    est_in *x = &a->x;
    long v;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "t:h", lo, NULL)) != -1) {
        switch (c) {
        case 'P':
            if (!parse_count(optarg, &a->params)) return usage_error("estimate", "--params: cannot parse '%s' (e.g. 7B, 350M, 7e9)", optarg);
            break;
        case 'W':
            if (!parse_int(optarg, 1, 1000000, &a->ws)) return usage_error("estimate", "--world-size must be 1..1000000 (got '%s')", optarg);
            break;
        case 'g':
            if (!parse_int(optarg, 1, 1024, &a->gpn)) return usage_error("estimate", "--gpus-per-node must be 1..1024 (got '%s')", optarg);
            break;
        case 's':
            if (!parse_int(optarg, 0, 3, &v)) return usage_error("estimate", "--stage must be 0, 1, 2 or 3 (got '%s')", optarg);
            x->stage = (int)v;
            break;
        case 'O': x->off_opt = true; break;
        case 'A': x->off_param = true; break;
        case 'Z': x->zero_init = false; break;
        case 'L':
            if (!parse_count(optarg, &a->largest)) return usage_error("estimate", "--largest-layer: cannot parse '%s'", optarg);
            a->have_largest = true;
            break;
        case 'B': {
            char *end;
            x->b = strtod(optarg, &end);
            if (*end || end == optarg || !(x->b >= 1 && x->b <= 100))
                return usage_error("estimate", "--buffer-factor must be a number from 1 to 100 (got '%s')", optarg);
            break;
        }
        case 'd':
            if (dsckpt_dtype_parse(optarg, &a->dtype) != DSCKPT_OK ||
                (a->dtype != DSCKPT_BF16 && a->dtype != DSCKPT_F16 && a->dtype != DSCKPT_F32))
                return usage_error("estimate", "--dtype must be bf16, fp16 or fp32 (got '%s')", optarg);
            a->dtype_s = optarg;
            break;
        case 't': a->tag = optarg; break;
        case 'J': a->json = true; break;
        case 'C':
            if (!parse_compress(optarg, &a->zlevel)) return usage_error("estimate", "--compress=LEVEL: the level must be 1..22 (got '%s')", optarg);
            break;
        case 'S':
            if (!parse_int(optarg, 1, 1000000, &a->nsample)) return usage_error("estimate", "--sample-chunks must be 1..1000000 (got '%s')", optarg);
            break;
        case 'h':
            fputs(estimate_help, stdout);
            fputs(exit_codes_help, stdout);
            return EXIT_OKAY;
        default: return bad_option("estimate", lo, argv);
        }
    }
    if (optind < argc - 1) return usage_error("estimate", "unexpected argument '%s'", argv[optind + 1]);
    a->ckpt = optind < argc ? argv[optind] : NULL;
    if (a->ckpt && a->params) return usage_error("estimate", "%s", "give either CKPT or --params, not both");
    if (!a->ckpt && !a->params) return usage_error("estimate", "%s", "--params N (e.g. 7B) or a checkpoint path is required");
    if (!a->ckpt && a->tag) return usage_error("estimate", "%s", "-t TAG needs a checkpoint path");
    if (a->nsample && !a->zlevel) return usage_error("estimate", "%s", "--sample-chunks needs --compress");
    return -1;
}

/* What CKPT supplies: parameter count, largest tensor, stage, world size (into
 * *ck_ws), dtype, each unless given; with --compress the estimate into ze.
 * Returns -1 to go on, or the exit code after a message. */
static int estimate_read_ckpt(est_args *a, int *ck_ws, dsckpt_zestimate *ze) {
    dsckpt_ckpt *ck = NULL;
    dsckpt_status st = dsckpt_source_open(a->ckpt, a->tag, &ck);
    if (st) return fail(st, "estimate");
    dsckpt_info info;
    dsckpt_ckpt_info(ck, &info);
    a->params = info.param_count;
    uint64_t big = 0;
    for (size_t i = 0; i < dsckpt_tensor_count(ck); i++) {
        dsckpt_tensor_info ti;
        if (dsckpt_tensor_get(ck, i, &ti) == DSCKPT_OK && ti.numel > big) big = ti.numel;
    }
    if (!a->have_largest) {
        a->largest = big;
        a->have_largest = true;
    }
    if (a->x.stage < 0) a->x.stage = info.zero_stage;
    *ck_ws = info.world_size;
    if (!a->dtype_s && info.train_dtype) dsckpt_dtype_parse(info.train_dtype, &a->dtype);
    if (a->zlevel && a->params)
        st = dsckpt_estimate_compressed(ck, a->zlevel, a->nsample ? (unsigned)a->nsample : 16, 0, ze);
    dsckpt_ckpt_free(ck);
    if (st) return fail(st, "estimate");
    if (!a->params) {
        fprintf(stderr, "%s estimate: %s holds no parameters\n", prog, a->ckpt);
        return EXIT_UNSUPPORTED;
    }
    return -1;
}

/* The world size, GPUs per node and stage to use, checked. Returns -1 to go on,
 * or the exit code after a message. */
static int estimate_layout(est_args *a, int ck_ws) {
    est_in *x = &a->x;
    if (!a->ws) a->ws = ck_ws;
    if (!a->ws) return usage_error("estimate", "%s", "--world-size W is required");
    if (x->stage < 0) x->stage = 3;
    if (!a->gpn) a->gpn = a->ws < 8 ? a->ws : 8;
    if (a->ws % a->gpn) {
        char m[128];
        snprintf(m, sizeof m, "--world-size %ld is not a multiple of --gpus-per-node %ld", a->ws, a->gpn);
        return usage_error("estimate", "%s", m);
    }
    if (x->off_param && x->stage != 3) return usage_error("estimate", "%s", "--offload-param applies to stage 3 only");
    if (x->off_param && !x->off_opt) {
        fprintf(stderr, "%s estimate: DeepSpeed's estimator has no figure for --offload-param without "
                        "--offload-optimizer; add --offload-optimizer\n", prog);
        return EXIT_UNSUPPORTED;
    }
    x->P = (double)a->params;
    x->L = (double)a->largest;
    x->G = (int)a->ws;
    x->g = (int)a->gpn;
    x->n = (int)(a->ws / a->gpn);
    return -1;
}

/* One offload combination and its figures. */
typedef struct est_row {
    bool oo, op, zi;
    est_out r;
} est_row;

/* DeepSpeed prints every offload combination: so do we. Returns the row count
 * (at most 6). */
static int estimate_rows(const est_in *x, est_row rows[6]) {
    int nrows = 0;
    if (x->stage == 3) {
        for (int oo = 1; oo >= 0; oo--)
            for (int op = 1; op >= 0; op--) {
                if (!oo && op) continue;
                for (int zi = 1; zi >= 0; zi--) {
                    est_in y = *x;
                    y.off_opt = oo;
                    y.off_param = op;
                    y.zero_init = zi;
                    rows[nrows++] = (est_row){oo, op, zi, estimate(&y)};
                }
            }
    } else {
        for (int oo = 1; oo >= 0; oo--) {
            est_in y = *x;
            y.off_opt = oo;
            rows[nrows++] = (est_row){oo, false, false, estimate(&y)};
        }
    }
    return nrows;
}

/* On disk (bytes): native = fp32 master + two Adam moments (12 P); DeepSpeed's
 * files add the 16-bit module weights in the model-states files below stage 3
 * (2 P, or 4 P for fp32 training); consolidated weights = P in the dtype. */
typedef struct est_disk {
    uint64_t native, ds, cons;
    const char *dname;
} est_disk;

static est_disk disk_sizes(const est_args *a) {
    uint64_t wbytes = dsckpt_dtype_size(a->dtype), P = a->params;
    return (est_disk){.native = 12 * P,
                      .ds = 12 * P + (a->x.stage < 3 ? wbytes * P : 0),
                      .cons = wbytes * P,
                      .dname = a->dtype == DSCKPT_BF16 ? "bf16" : a->dtype == DSCKPT_F16 ? "fp16" : "fp32"};
}

static int estimate_json(const est_args *a, const est_out *r, const est_row *rows, int nrows,
                         const dsckpt_zestimate *ze) {
    const est_in *x = &a->x;
    est_disk dk = disk_sizes(a);
    cJSON *o = cJSON_CreateObject();
    if (!o) return EXIT_INTERNAL;
    if (a->ckpt) cJSON_AddStringToObject(o, "checkpoint", a->ckpt);
    cJSON_AddNumberToObject(o, "params", (double)a->params);
    cJSON_AddNumberToObject(o, "largest_layer_params", (double)a->largest);
    cJSON_AddNumberToObject(o, "world_size", (double)a->ws);
    cJSON_AddNumberToObject(o, "gpus_per_node", (double)a->gpn);
    cJSON_AddNumberToObject(o, "nodes", x->n);
    cJSON_AddNumberToObject(o, "stage", x->stage);
    cJSON_AddStringToObject(o, "dtype", dk.dname);
    cJSON_AddBoolToObject(o, "offload_optimizer", x->off_opt);
    cJSON_AddBoolToObject(o, "offload_param", x->off_param);
    cJSON_AddBoolToObject(o, "zero_init", x->zero_init);
    cJSON_AddNumberToObject(o, "buffer_factor", x->b);
    cJSON_AddStringToObject(o, "formula", r->formula);
    cJSON_AddNumberToObject(o, "per_gpu_bytes", (double)r->gpu);
    cJSON_AddNumberToObject(o, "per_node_gpu_bytes", (double)r->gpu * (double)a->gpn);
    cJSON_AddNumberToObject(o, "per_node_cpu_bytes", (double)r->cpu);
    cJSON *d = cJSON_AddObjectToObject(o, "checkpoint_bytes");
    cJSON_AddNumberToObject(d, "native", (double)dk.native);
    cJSON_AddNumberToObject(d, "deepspeed", (double)dk.ds);
    cJSON_AddNumberToObject(d, "consolidated", (double)dk.cons);
    if (a->zlevel) json_compressed(o, a->zlevel, ze);
    cJSON *all = cJSON_AddArrayToObject(o, "all_options");
    for (int i = 0; i < nrows; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddBoolToObject(e, "offload_optimizer", rows[i].oo);
        if (x->stage == 3) {
            cJSON_AddBoolToObject(e, "offload_param", rows[i].op);
            cJSON_AddBoolToObject(e, "zero_init", rows[i].zi);
        }
        cJSON_AddNumberToObject(e, "per_gpu_bytes", (double)rows[i].r.gpu);
        cJSON_AddNumberToObject(e, "per_node_cpu_bytes", (double)rows[i].r.cpu);
        cJSON_AddItemToArray(all, e);
    }
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return EXIT_INTERNAL;
    puts(text);
    free(text);
    return EXIT_OKAY;
}

static void estimate_text(const est_args *a, const est_out *r, const est_row *rows, int nrows,
                          const dsckpt_zestimate *ze) {
    const est_in *x = &a->x;
    est_disk dk = disk_sizes(a);
    long ws = a->ws, gpn = a->gpn;
    char b1[32], b2[32], b3[32];
    printf("Model states for %.3gB parameters (%" PRIu64 "), ZeRO stage %d, %s\n", (double)a->params / 1e9, a->params,
           x->stage, dk.dname);
    printf("HW: %ld GPU%s = %d node%s x %ld GPU%s per node\n", ws, ws == 1 ? "" : "s", x->n, x->n == 1 ? "" : "s", gpn,
           gpn == 1 ? "" : "s");
    if (x->stage == 3) {
        printf("largest layer: %" PRIu64 " parameters%s\n", a->largest,
               a->have_largest ? "" : " (not given: pass --largest-layer; its 4 bytes per parameter are not counted)");
    }
    printf("formula: DeepSpeed %s%s\n", r->formula, x->stage == 0 ? " at 1 GPU (stage 0 partitions nothing)" : "");
    gib(b1, sizeof b1, r->gpu);
    gib(b2, sizeof b2, r->gpu * (uint64_t)gpn);
    gib(b3, sizeof b3, r->cpu);
    printf("\nthis setup (offload_optimizer=%s%s%s):\n", x->off_opt ? "cpu" : "none",
           x->stage == 3 ? (x->off_param ? ", offload_param=cpu" : ", offload_param=none") : "",
           x->stage == 3 ? (x->zero_init ? ", zero_init=1" : ", zero_init=0") : "");
    printf("  per GPU      %s\n  per node     %s GPU, %s CPU\n", b1, b2, b3);
    printf("\nall options (as DeepSpeed prints them):\n   per CPU  |  per GPU  | options\n");
    for (int i = 0; i < nrows; i++) {
        printf(" %8.2fGiB | %7.2fGiB | offload_optimizer=%s", (double)rows[i].r.cpu / 1073741824.0,
               (double)rows[i].r.gpu / 1073741824.0, rows[i].oo ? "cpu " : "none");
        if (x->stage == 3) printf(", offload_param=%s, zero_init=%d", rows[i].op ? "cpu " : "none", rows[i].zi);
        printf("\n");
    }
    fmt_bytes(dk.native, b1, sizeof b1);
    fmt_bytes(dk.ds, b2, sizeof b2);
    fmt_bytes(dk.cons, b3, sizeof b3);
    printf("\ncheckpoint on disk: %s native (fp32 master + Adam moments), %s DeepSpeed files%s,\n"
           "                    %s consolidated %s weights\n",
           b1, b2, x->stage < 3 ? " (+ 16-bit module weights)" : "", b3, dk.dname);
    if (a->zlevel) print_compressed(a->zlevel, ze);
}

int cmd_estimate(int argc, char **argv) {
    est_args a = {.x = {.stage = -1, .zero_init = true, .b = 1.5}, .dtype = DSCKPT_BF16};
    dsckpt_zestimate ze;
    int ck_ws = 0, rc = estimate_parse(argc, argv, &a);
    if (rc < 0 && a.ckpt) rc = estimate_read_ckpt(&a, &ck_ws, &ze);
    if (rc < 0) rc = estimate_layout(&a, ck_ws);
    if (rc >= 0) return rc;
    est_out r = estimate(&a.x);
    est_row rows[6];
    int nrows = estimate_rows(&a.x, rows);
    const dsckpt_zestimate *z = a.ckpt ? &ze : NULL;
    if (a.json) return estimate_json(&a, &r, rows, nrows, z);
    estimate_text(&a, &r, rows, nrows, z);
    return EXIT_OKAY;
}
