/*
 * args.h — dstrain's command line (args.c): what to train, on what, for how long,
 * where checkpoints go, and the Hugging Face TrainingArguments flags that fill
 * "auto" values of the DeepSpeed config (rt_args, config.h).
 */
#ifndef DSRT_ARGS_H
#define DSRT_ARGS_H

#include "config.h"

typedef struct rt_opts {
    const char *cfg_path;  /* --deepspeed */
    const char *data_path; /* --data */
    const char *log_path;  /* --log_file, or NULL */
    uint64_t n_layer, n_head, n_embd, seq_len;
    uint64_t max_steps, seed, eval_steps, eval_windows;
    bool print_memory;
    const char *device;    /* --device: "cpu" (default), "cuda", "cpu-strict" */
    const char *comm;      /* --comm: "mpi" (default), "nccl" */
    const char *gemm_dtype; /* --gemm_dtype: "auto" (default), "fp32", "bf16", "fp16" */
    /* Checkpoints. */
    const char *save_dir, *resume, *save_model; /* NULL when not given */
    uint64_t save_steps, save_limit;
    uint64_t save_compress; /* 0: plain rank files; else the zstd level (--save_compress) */
    bool async_save, load_best;
    char metric[128]; /* the metric for the best model ("eval_" prefixed) */
    bool greater;     /* whether a greater metric is better */
    uint64_t logging_steps; /* --logging_steps: the stderr summary every N steps (0 = the config's steps_per_print) */
    rt_args hf;       /* Hugging Face TrainingArguments given (hidden_size is n_embd) */
} rt_opts;

/* Parses dstrain's arguments into *o (which points into argv). Returns -1 when
 * dstrain should go on, otherwise its exit code: 0 after printing --help to stdout,
 * 3 after printing a usage error to stderr. */
int rt_opts_parse(int argc, char **argv, rt_opts *o);

#endif /* DSRT_ARGS_H */
