/*
 * dsckpt.h — the one public header of libckpt.
 *
 * libckpt reads and writes the checkpoints of sharded (ZeRO) data-parallel training.
 * A checkpoint is a *fragment map*: logical tensors, each with states (fp32 master,
 * Adam moments, or a 16-bit weight), each state stored as fragments (element ranges)
 * in per-rank files. Every operation is a streaming copy from one fragment map into
 * a planned output layout, so memory stays flat as models grow.
 *
 * Conventions
 * - Every fallible call returns dsckpt_status (0 = DSCKPT_OK); results go through
 *   out-parameters. On failure, dsckpt_last_error() gives a message for the calling
 *   thread naming the file, offset or tensor and, where known, the fix.
 * - Handles come in open/free pairs; every *_free accepts NULL.
 * - Untrusted input: every file is treated as hostile. Sizes are bounded and checked
 *   before anything is allocated; a bad file yields DSCKPT_ECORRUPT (or ECHECKSUM,
 *   EVERSION, EUNSUPPORTED), never a crash.
 * - Outputs are written under a temporary name in the destination directory and
 *   renamed into place only when complete; an existing output is never replaced
 *   unless the caller asks (force).
 * - Thread-safety: distinct handles may be used from distinct threads. One handle
 *   must not be used from two threads at once.
 */
#ifndef DSCKPT_H
#define DSCKPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DSCKPT_BUILDING) && defined(__GNUC__)
#define DSCKPT_API __attribute__((visibility("default")))
#else
#define DSCKPT_API
#endif

#define DSCKPT_VERSION_MAJOR 0
#define DSCKPT_VERSION_MINOR 1
#define DSCKPT_VERSION_PATCH 0

/* Status codes. The groups say whose fault a failure is. */
typedef enum dsckpt_status {
    DSCKPT_OK = 0,
    /* the caller */
    DSCKPT_EINVAL = 1,       /* a bad argument or option */
    DSCKPT_EMISUSE = 2,      /* a call out of order */
    DSCKPT_EEXIST = 3,       /* the output exists and force was not given */
    /* the environment */
    DSCKPT_EIO = 10,
    DSCKPT_ENOSPC = 11,
    DSCKPT_ENOMEM = 12,
    DSCKPT_ENOENT = 13,      /* a file or directory the operation needs is missing */
    DSCKPT_ECUDA = 14,
    DSCKPT_ENCCL = 15,
    DSCKPT_EMPI = 16,
    DSCKPT_EINTR = 17,       /* stopped by dsckpt_interrupt() (SIGINT/SIGTERM); temporaries removed */
    /* the data */
    DSCKPT_ECORRUPT = 20,    /* structure is wrong: bad header, bad offsets, bad coverage */
    DSCKPT_ECHECKSUM = 21,   /* a digest does not match */
    DSCKPT_EVERSION = 22,    /* a format version we do not read */
    DSCKPT_EUNSUPPORTED = 23,/* valid, but a feature we do not handle */
    /* us */
    DSCKPT_EINTERNAL = 30
} dsckpt_status;

/* Asks every running operation to stop at its next read or write, remove its
 * temporaries and return DSCKPT_EINTR. Async-signal-safe: call it from a SIGINT /
 * SIGTERM handler with the signal number. dsckpt_interrupted() returns that number
 * (0 if none). The request is process-wide and stays set. */
DSCKPT_API void dsckpt_interrupt(int signo);
DSCKPT_API int dsckpt_interrupted(void);

/* Static name of a status ("ECORRUPT", ...). Never NULL. */
DSCKPT_API const char *dsckpt_status_name(dsckpt_status st);

/* Message describing the last failure on the calling thread (empty if none).
 * Valid until the next libckpt call on this thread. */
DSCKPT_API const char *dsckpt_last_error(void);

/* Element types, with the safetensors spelling from dsckpt_dtype_name(). */
typedef enum dsckpt_dtype {
    DSCKPT_BF16 = 0,
    DSCKPT_F16,
    DSCKPT_F32,
    DSCKPT_F64,
    DSCKPT_I64,
    DSCKPT_I32,
    DSCKPT_I16,
    DSCKPT_I8,
    DSCKPT_U8,
    DSCKPT_BOOL,
    DSCKPT_U16,
    DSCKPT_U32,
    DSCKPT_U64,
    DSCKPT_DTYPE_COUNT
} dsckpt_dtype;

DSCKPT_API const char *dsckpt_dtype_name(dsckpt_dtype t);     /* "BF16", "F32", ... */
DSCKPT_API size_t dsckpt_dtype_size(dsckpt_dtype t);          /* bytes per element */
/* Parses a safetensors dtype name ("BF16") or a short name ("bf16", "fp16", "fp32"). */
DSCKPT_API dsckpt_status dsckpt_dtype_parse(const char *s, dsckpt_dtype *out);

/* Progress callback: done and total are in bytes of the operation's main output
 * (or input, for verify). Called from the thread that runs the operation. */
typedef void (*dsckpt_progress_fn)(void *user, uint64_t done, uint64_t total);

/* ---------------------------------------------------------------------------
 * Opening a checkpoint
 * ------------------------------------------------------------------------- */

typedef struct dsckpt_ckpt dsckpt_ckpt;

/* Opens the checkpoint at `path`: a save root (with a `latest` file and tag
 * directories) or one tag directory. `tag` (may be NULL) picks a tag under a save
 * root; NULL means the tag named by `latest`. The manifest and file list are read
 * and validated; tensor data is read lazily by the operations below.
 * Free with dsckpt_ckpt_free(). */
DSCKPT_API dsckpt_status dsckpt_ckpt_open(const char *path, const char *tag, dsckpt_ckpt **out);
DSCKPT_API void dsckpt_ckpt_free(dsckpt_ckpt *c);

/* Whether operations reading tensor data from `c` check what they read (default
 * on): the SHA-256 of every native chunk and the CRC-32 of every DeepSpeed zip
 * member a read touches; a mismatch fails the operation with DSCKPT_ECHECKSUM
 * naming the file and chunk or member, and nothing is written. `on` = 0 turns the
 * checks off (the CLI's --no-verify). */
DSCKPT_API void dsckpt_ckpt_set_read_check(dsckpt_ckpt *c, int on); /* no effect on a .safetensors source */

/* Summary of an open checkpoint. Strings are owned by the handle. */
typedef struct dsckpt_info {
    const char *format;      /* "dsckpt" (native) */
    const char *dir;         /* the tag directory */
    const char *tag;
    int64_t step;
    int world_size;
    int zero_stage;
    const char *train_dtype; /* "bf16", "fp16" or "fp32" */
    size_t tensor_count;
    size_t file_count;
    uint64_t param_count;    /* elements over all logical tensors (tied counted once) */
} dsckpt_info;
DSCKPT_API void dsckpt_ckpt_info(const dsckpt_ckpt *c, dsckpt_info *out);

/* Writes a JSON description (what `dsckpt inspect --json` prints) into a malloc'd
 * string the caller frees with free(). */
DSCKPT_API dsckpt_status dsckpt_ckpt_describe_json(const dsckpt_ckpt *c, char **out_json);

/* ---------------------------------------------------------------------------
 * Operations
 * ------------------------------------------------------------------------- */

typedef struct dsckpt_consolidate_opts {
    dsckpt_dtype dtype;        /* output dtype for trainable weights: BF16, F16 or F32 */
    uint64_t max_shard_size;   /* bytes per output file in the HF layout; 0 = 5e9 */
    int exclude_frozen;        /* leave out frozen (non-trainable) tensors */
    int force;                 /* replace an existing output */
    int threads;               /* 0 = number of online CPUs */
    dsckpt_progress_fn progress;
    void *progress_user;
} dsckpt_consolidate_opts;
DSCKPT_API void dsckpt_consolidate_opts_init(dsckpt_consolidate_opts *o);

/* Writes full (unsharded) weights as safetensors. `out` ending in ".safetensors"
 * gives one file; anything else is a directory in the Hugging Face layout
 * (model.safetensors, or model-0000k-of-0000n.safetensors + index). Reads only
 * the fp32 master fragments (and w16 for frozen tensors). Tied weights are written
 * once, under the owning name; aliases are listed in __metadata__. */
DSCKPT_API dsckpt_status dsckpt_consolidate(const dsckpt_ckpt *c, const char *out,
                                            const dsckpt_consolidate_opts *opts);

/* The zstd level `--compress` uses when none is given (compress_level below;
 * chosen by bench/compress.sh, figures in bench/RESULTS.md). */
#define DSCKPT_COMPRESS_DEFAULT_LEVEL 1

/* On-disk format of a checkpoint written by reshard and synth. */
typedef enum dsckpt_format {
    DSCKPT_FORMAT_NATIVE = 0,   /* per-rank safetensors + manifest (docs/native-format.md) */
    DSCKPT_FORMAT_DEEPSPEED = 1, /* DeepSpeed's torch zip + pickle files (docs/formats/deepspeed.md) */
    DSCKPT_FORMAT_UNIVERSAL = 2  /* DeepSpeed's universal layout (ds_to_universal): out/<tag>_universal/,
                                    out/latest_universal; any world size loads it with load_universal */
} dsckpt_format;

typedef struct dsckpt_reshard_opts {
    int world_size;            /* M, the new world size (>= 1) */
    int zero_stage;            /* -1 = keep the source stage */
    dsckpt_format format;      /* DEEPSPEED: stages 1-3; from a DeepSpeed source the stage is kept */
    int force;
    int threads;               /* 0 = number of online CPUs */
    dsckpt_progress_fn progress;
    void *progress_user;
    int drop_unknown_objects;  /* DEEPSPEED from a DeepSpeed source: leave out the client-state
                                  entries holding pickled objects outside the allow-list
                                  (dsckpt_ckpt_unknown_objects) instead of refusing */
    int compress_level;        /* native format: 0 = plain rank files; 1..22 = zstd-compressed rank
                                  files at this level (manifest version 2, docs/native-format.md) */
} dsckpt_reshard_opts;
DSCKPT_API void dsckpt_reshard_opts_init(dsckpt_reshard_opts *o);

/* Writes a checkpoint for opts->world_size ranks under the save root `out`
 * (out/<tag>/..., out/latest). Every state and all non-tensor state is carried
 * over; values are bit-identical. With DSCKPT_FORMAT_DEEPSPEED the output is a
 * DeepSpeed checkpoint that DeepSpeed's load_checkpoint accepts at world size M:
 * from a DeepSpeed source everything but the partitions is carried from its
 * files; from a native source the files are built from the tensor list. */
DSCKPT_API dsckpt_status dsckpt_reshard(const dsckpt_ckpt *c, const char *out,
                                        const dsckpt_reshard_opts *opts);

/* Pickled objects in a DeepSpeed or universal checkpoint's files that refer to a
 * global outside the allow-list of what DeepSpeed and torch write (tensors,
 * storages, OrderedDict, DeepSpeed's own enums and loss scalers, ...): anything
 * torch.load(weights_only=False) would call, such as posix.system. *text_out is
 * "FILE: module.name at ['key']...; ..." (malloc'd, NULL when none; free() it),
 * *count_out their number. 0 for native checkpoints. Nothing is executed.
 * dsckpt_reshard to DEEPSPEED or UNIVERSAL refuses such a source with
 * DSCKPT_EUNSUPPORTED (DEEPSPEED: unless opts->drop_unknown_objects); dsckpt_verify
 * reports it as DSCKPT_VERIFY_UNSUPPORTED. */
DSCKPT_API dsckpt_status dsckpt_ckpt_unknown_objects(const dsckpt_ckpt *c, char **text_out, size_t *count_out);

/* ---------------------------------------------------------------------------
 * Verification
 * ------------------------------------------------------------------------- */

typedef enum dsckpt_verify_result {
    DSCKPT_VERIFY_OK = 0,          /* every check passed */
    DSCKPT_VERIFY_CORRUPT = 1,     /* readable, but something is wrong */
    DSCKPT_VERIFY_UNREADABLE = 2,  /* could not be read enough to check */
    DSCKPT_VERIFY_UNSUPPORTED = 3  /* intact, but holds what dsckpt does not pass on (a pickled
                                      object outside the allow-list); ranks below CORRUPT and
                                      UNREADABLE when a report has several verdicts */
} dsckpt_verify_result;

typedef struct dsckpt_verify_report dsckpt_verify_report;

typedef struct dsckpt_verify_opts {
    int threads;               /* 0 = number of online CPUs */
    dsckpt_progress_fn progress;
    void *progress_user;
} dsckpt_verify_opts;
DSCKPT_API void dsckpt_verify_opts_init(dsckpt_verify_opts *o);

/* Verifies a checkpoint (save root or tag directory; `tag` as in dsckpt_ckpt_open)
 * or a single .safetensors file. Returns DSCKPT_OK when the verification ran (the
 * verdict is in the report, which lists every problem found); an error status only
 * for misuse or out-of-memory. Free the report with dsckpt_verify_report_free().
 * A save root without `tag` has EVERY tag directory checked (each with its own
 * verdict, dsckpt_verify_report_tag_*), and `latest` must name one of them; with
 * `tag` (or a tag directory) one tag is checked. Each tag is checked against a
 * snapshot: its directory listing (names, inodes, sizes, times) and `latest` are
 * recorded before and compared after; when they differ the tag's verdict is
 * DSCKPT_VERIFY_UNREADABLE with dsckpt_verify_report_tag_changed() true ("changed
 * while verifying": a writer replaced it; run verify again), not "corrupt". */
DSCKPT_API dsckpt_status dsckpt_verify(const char *path, const char *tag,
                                       const dsckpt_verify_opts *opts,
                                       dsckpt_verify_report **out);
DSCKPT_API dsckpt_verify_result dsckpt_verify_report_result(const dsckpt_verify_report *r);
DSCKPT_API size_t dsckpt_verify_report_count(const dsckpt_verify_report *r);
/* Problem i as one line of text; valid until the report is freed. */
DSCKPT_API const char *dsckpt_verify_report_problem(const dsckpt_verify_report *r, size_t i);
/* Problem i as data: the file (or tag directory) it is in, the chunk (-1 when
 * it is not about one chunk) and its kind, one of "checksum", "size",
 * "missing", "stray_file", "coverage", "metadata", "latest", "incomplete",
 * "changed", "unreadable", "structure". `message` is the line
 * dsckpt_verify_report_problem() gives; it and `kind` are valid until the
 * report is freed. DSCKPT_EINVAL for i >= count. */
typedef struct dsckpt_verify_problem {
    const char *message;
    const char *kind;
    char file[256];          /* "" when no file is named */
    int64_t chunk;
} dsckpt_verify_problem;
DSCKPT_API dsckpt_status dsckpt_verify_report_problem_info(const dsckpt_verify_report *r, size_t i,
                                                           dsckpt_verify_problem *out);
/* Bytes hashed and files checked. */
DSCKPT_API uint64_t dsckpt_verify_report_bytes(const dsckpt_verify_report *r);
DSCKPT_API size_t dsckpt_verify_report_files(const dsckpt_verify_report *r);
DSCKPT_API void dsckpt_verify_report_free(dsckpt_verify_report *r);
/* The tags checked, in name order (one for a tag directory or with `tag`). */
DSCKPT_API size_t dsckpt_verify_report_tag_count(const dsckpt_verify_report *r);
DSCKPT_API const char *dsckpt_verify_report_tag_name(const dsckpt_verify_report *r, size_t i);
DSCKPT_API dsckpt_verify_result dsckpt_verify_report_tag_result(const dsckpt_verify_report *r, size_t i);
DSCKPT_API int dsckpt_verify_report_tag_changed(const dsckpt_verify_report *r, size_t i);
/* True when some tag changed while being verified. */
DSCKPT_API int dsckpt_verify_report_changed(const dsckpt_verify_report *r);

/* ---------------------------------------------------------------------------
 * Listing the tags of a save root
 * ------------------------------------------------------------------------- */

/* One checkpoint (tag) found under a save root or a Hugging Face output_dir.
 * Strings are owned by the list and valid until dsckpt_tag_list_free(); they are
 * NULL where the field is unknown. */
typedef struct dsckpt_tag {
    const char *name;        /* the tag directory's name ("global_step40"); in an
                                output_dir the folder's ("checkpoint-40") */
    const char *dir;         /* the directory holding the checkpoint's files */
    const char *format;      /* "dsckpt", "deepspeed", "universal"; NULL when incomplete */
    int complete;            /* 1: the manifest (or DeepSpeed's files) opens and covers
                                every tensor; data is not hashed (see dsckpt_verify) */
    const char *problem;     /* why it is incomplete (the library's message), else NULL */
    int64_t step;            /* -1 when unknown */
    int world_size;          /* 0 when unknown */
    int zero_stage;          /* -1 when unknown */
    const char *train_dtype; /* "bf16", "fp16", "fp32" */
    uint64_t param_count;    /* elements over all tensors (0 when incomplete) */
    uint64_t bytes_on_disk;  /* regular files under dir (an output_dir's checkpoint-N:
                                the whole folder) */
    int has_metric;
    const char *metric_name; /* e.g. "eval_loss": from the manifest's metrics, else from
                                trainer_state.json's log_history at this step */
    double metric;
    int is_latest;           /* named by `latest` (output_dir: the newest complete one) */
    int is_best;             /* named by trainer_state.json's best_model_checkpoint */
} dsckpt_tag;

typedef struct dsckpt_tag_list dsckpt_tag_list;

/* Lists every tag under `path`: a save root (tag directories, complete or not:
 * a directory holding rank files or temporaries but no manifest is listed as
 * incomplete), a Hugging Face output_dir (its checkpoint-N folders) or a single
 * tag directory (one entry). Each tag is opened to read its step, world size,
 * stage and dtype; a tag that fails to open is listed with complete = 0 and the
 * reason, it does not fail the call. Order: by step, then name (unknown steps
 * first). Errors: DSCKPT_ENOENT when `path` does not exist or holds no
 * checkpoint at all. Free with dsckpt_tag_list_free(). */
DSCKPT_API dsckpt_status dsckpt_tag_list_open(const char *path, dsckpt_tag_list **out);
DSCKPT_API size_t dsckpt_tag_list_count(const dsckpt_tag_list *l);
/* Entry i (< count), or NULL; owned by the list. */
DSCKPT_API const dsckpt_tag *dsckpt_tag_list_get(const dsckpt_tag_list *l, size_t i);
/* Index of the best tag (trainer_state.json's best_model_checkpoint) or of the
 * latest one; -1 when none is recorded. */
DSCKPT_API long dsckpt_tag_list_best(const dsckpt_tag_list *l);
DSCKPT_API long dsckpt_tag_list_latest(const dsckpt_tag_list *l);
DSCKPT_API void dsckpt_tag_list_free(dsckpt_tag_list *l);

/* ---------------------------------------------------------------------------
 * Tensors: listing and reading
 * ------------------------------------------------------------------------- */

/* The states a tensor's data is kept in. A trainable tensor has FP32 (the master
 * weights), EXP_AVG and EXP_AVG_SQ (Adam's moments); a frozen tensor (and every
 * tensor of a .safetensors file) has W16, its weights in their own dtype. */
typedef enum dsckpt_state {
    DSCKPT_STATE_FP32 = 0,
    DSCKPT_STATE_EXP_AVG,
    DSCKPT_STATE_EXP_AVG_SQ,
    DSCKPT_STATE_W16,
    DSCKPT_STATE_COUNT
} dsckpt_state;
DSCKPT_API const char *dsckpt_state_name(dsckpt_state s); /* "fp32", "exp_avg", ...; "?" if out of range */
DSCKPT_API dsckpt_status dsckpt_state_parse(const char *s, dsckpt_state *out);

/* Opens a checkpoint as dsckpt_ckpt_open does, or, when `path` is a regular file
 * ending in ".safetensors", that file as a weights-only source: every tensor is
 * frozen with state W16 in its stored dtype, format "safetensors", world size 1.
 * Such a handle lists and reads tensors (and describes itself); consolidate and
 * reshard refuse it with DSCKPT_EUNSUPPORTED. A safetensors file has no digests:
 * its header is validated strictly, its data is read unchecked. */
DSCKPT_API dsckpt_status dsckpt_source_open(const char *path, const char *tag, dsckpt_ckpt **out);

/* One tensor of an open checkpoint. Strings and `shape` are owned by the handle
 * and valid until dsckpt_ckpt_free(). */
typedef struct dsckpt_tensor_info {
    const char *name;
    dsckpt_dtype dtype;      /* the model's dtype (W16 is stored in it) */
    int ndim;
    const uint64_t *shape;   /* ndim entries */
    uint64_t numel;
    int trainable;
    unsigned states;         /* bit (1u << s) set for each dsckpt_state stored */
    dsckpt_state weight_state; /* where the weights are: FP32 if trainable, else W16 */
} dsckpt_tensor_info;

/* Tensors are numbered 0 .. count-1 in the checkpoint's order. */
DSCKPT_API size_t dsckpt_tensor_count(const dsckpt_ckpt *c);
/* DSCKPT_EINVAL when i >= count. */
DSCKPT_API dsckpt_status dsckpt_tensor_get(const dsckpt_ckpt *c, size_t i, dsckpt_tensor_info *out);
/* The index of the tensor named `name` (aliases of tied tensors included);
 * DSCKPT_ENOENT when there is none. */
DSCKPT_API dsckpt_status dsckpt_tensor_find(const dsckpt_ckpt *c, const char *name, size_t *index);
/* The dtype state s of tensor i is stored in (DSCKPT_EINVAL for a state the
 * tensor does not have). */
DSCKPT_API dsckpt_status dsckpt_tensor_state_dtype(const dsckpt_ckpt *c, size_t i, dsckpt_state s,
                                                   dsckpt_dtype *out);

/* The non-tensor state of a checkpoint as a JSON object in a malloc'd string the
 * caller frees with free(): {"format", "tag", "step", "world_size", "zero_stage",
 * "train_dtype", "state": {optimizer hyper-parameters, loss scaler, scheduler,
 * ...}, "ds_config": {...}, "metrics": {...}} (objects empty when the source has
 * none). */
DSCKPT_API dsckpt_status dsckpt_ckpt_state_json(const dsckpt_ckpt *c, char **out_json);

/* Cancel callback: return non-zero to stop the operation, which then fails with
 * DSCKPT_EINTR ("cancelled"). Called from the thread running the operation. */
typedef int (*dsckpt_cancel_fn)(void *user);

/* A reader: open files of one checkpoint, for reading tensor data. Reads are
 * checked as the operations' are (dsckpt_ckpt_set_read_check; set it before
 * opening the reader). The checkpoint handle must outlive the reader. A reader
 * may be used by one thread at a time; distinct readers of one checkpoint may be
 * used from distinct threads. Free with dsckpt_reader_free(). */
typedef struct dsckpt_reader dsckpt_reader;
DSCKPT_API dsckpt_status dsckpt_reader_open(const dsckpt_ckpt *c, dsckpt_reader **out);
DSCKPT_API void dsckpt_reader_free(dsckpt_reader *r);
/* Progress (done and total in elements of the current read) and cancel callbacks
 * for the reads that follow; either may be NULL. */
DSCKPT_API void dsckpt_reader_set_callbacks(dsckpt_reader *r, dsckpt_progress_fn progress,
                                            dsckpt_cancel_fn cancel, void *user);

/* Reads elements [start, start + count) of the flattened state s of tensor i
 * into `buf` (buf_size bytes, at least count * dsckpt_dtype_size(dtype)),
 * converted to `dtype`. Conversions: the same dtype (any); between BF16, F16,
 * F32 and F64 (rounding to nearest even; F64 -> F32 and wider -> 16-bit may
 * overflow to infinity); integer and BOOL states to F32 or F64. Anything else is
 * DSCKPT_EUNSUPPORTED. Memory: a bounded staging buffer (1 MiB), whatever the
 * count; the data is read in slices. A range past the tensor is DSCKPT_EINVAL. */
DSCKPT_API dsckpt_status dsckpt_read_tensor(dsckpt_reader *r, size_t i, dsckpt_state s, uint64_t start,
                                            uint64_t count, dsckpt_dtype dtype, void *buf, size_t buf_size);

/* ---------------------------------------------------------------------------
 * Estimating a compressed checkpoint's size
 * ------------------------------------------------------------------------- */

/* How large the states of `c` would be in a compressed native checkpoint (what
 * dsckpt_reshard with compress_level = `level` writes), estimated by compressing a
 * sample of them with the writer's codec. Each state's bytes, as a native rank
 * file stores them (F32 for the trainable states, the tensor's dtype for w16), are
 * taken over all tensors in order and cut into chunks of the compressed writer's
 * chunk size (chunk_size); up to `max_chunks` chunks per state, spread evenly from
 * first to last (the same ones every time), are read and compressed, and the state's
 * estimate is raw_bytes x sampled_stored / sampled_raw. Safetensors headers, zero
 * padding and the manifest are not counted. `threads` 0 = all CPUs. Reads are
 * checked as dsckpt_read_tensor's are. Nothing is written. */
typedef struct dsckpt_zestimate_state {
    uint64_t raw_bytes;       /* the state's bytes uncompressed */
    uint64_t chunks;          /* chunks of chunk_size in raw_bytes */
    uint64_t sampled_chunks;  /* min(chunks, max_chunks) */
    uint64_t sampled_raw;     /* raw bytes compressed for the estimate */
    uint64_t sampled_stored;  /* what they compressed to */
    uint64_t estimated_bytes; /* the estimate of the state's compressed size */
} dsckpt_zestimate_state;
typedef struct dsckpt_zestimate {
    int level;
    uint64_t chunk_size;
    dsckpt_zestimate_state states[DSCKPT_STATE_COUNT]; /* indexed by dsckpt_state */
    uint64_t raw_bytes, sampled_raw, sampled_stored, estimated_bytes; /* sums over the states */
} dsckpt_zestimate;
DSCKPT_API dsckpt_status dsckpt_estimate_compressed(const dsckpt_ckpt *c, int level, unsigned max_chunks,
                                                    int threads, dsckpt_zestimate *out);

/* ---------------------------------------------------------------------------
 * Synthetic checkpoints (tests and benchmarks)
 * ------------------------------------------------------------------------- */

typedef struct dsckpt_synth_opts {
    uint64_t params;           /* approximate parameter count (>= 1000) */
    int world_size;
    int zero_stage;            /* 0..3 */
    dsckpt_dtype dtype;        /* training dtype: BF16, F16 or F32 */
    uint64_t seed;
    int64_t step;              /* tag is global_step<step>; default 100 */
    dsckpt_format format;      /* DEEPSPEED: DeepSpeed's layout (stages 1-3) */
    int force;
    int threads;
    dsckpt_progress_fn progress; /* bytes of rank files written (may be NULL) */
    void *progress_user;
    int compress_level;        /* native format: 0 = plain; 1..22 = zstd-compressed rank files */
} dsckpt_synth_opts;
DSCKPT_API void dsckpt_synth_opts_init(dsckpt_synth_opts *o);

/* Writes a checkpoint (native, or DeepSpeed's layout) with a GPT-like tensor list
 * and deterministic values under the save root `out`. The value rule is documented in docs/synth.md and is
 * exposed by dsckpt_synth_value() so tests can check any element. */
DSCKPT_API dsckpt_status dsckpt_synth(const char *out, const dsckpt_synth_opts *opts);

/* The fp32 value of element `index` of state `state` ("fp32", "exp_avg",
 * "exp_avg_sq", "w16") of the tensor with ordinal `tensor_index` in a synth
 * checkpoint made with `seed`. */
DSCKPT_API float dsckpt_synth_value(uint64_t seed, uint32_t tensor_index, const char *state,
                                    uint64_t index);

#ifdef __cplusplus
}
#endif
#endif /* DSCKPT_H */
