/*
 * dstrain.c — the training program: a GPT-2-style model on byte-level text with
 * ZeRO stages 0-3 over MPI (one process per rank; `dsrun` starts them), driven by
 * a DeepSpeed-style ds_config.json. Rank 0 writes one JSON line per optimizer step
 * to --log_file (and a summary to stderr every steps_per_print steps).
 *
 * main: arguments (args.c), the job's setup, the resume choice (resume), the
 * training loop (train, one step at a time: train_step), and the end (finish).
 * Checkpoint bookkeeping (best model, trainer_state.json, rotation) happens in one
 * place, on_commit, which the saver calls whenever a save is committed.
 */
#include "args.h"
#include "comm.h"
#include "config.h"
#include "data.h"
#include "device.h"
#include "engine.h"
#include "engine_ckpt.h"
#include "fsutil.h"
#include "model.h"
#include "rt_time.h"
#include "savedir.h"
#include "stream.h"
#include "trainer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

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
    dsckpt_info info;
    dsckpt_ckpt_info(c, &info);
    co.dtype = !strcmp(info.train_dtype, "fp16") ? DSCKPT_F16 : DSCKPT_BF16;
    if (!st) st = dsckpt_consolidate(c, target, &co);
    if (!st && name) { /* sha256sum-style digest file */
        uint8_t h[DS_SHA256_LEN];
        char hex[2 * DS_SHA256_LEN + 1], line[512];
        st = ds_sha256_file(target, h); /* streamed: the model is never all in memory */
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

/* One training job: the options, the pieces, and what rank 0 keeps of its saves. */
typedef struct run {
    rt_opts *o; /* max_steps is set from --num_train_epochs in setup */
    rt_comm *comm;
    int rank, W;
    rt_config cfg;
    rt_data *data;
    rt_model *model;
    rt_device *dev; /* --device */
    rt_comm *dcomm; /* --comm nccl: the engine's collectives (NULL: comm itself) */
    rt_engine *eng;
    rt_saver *saver; /* NULL without --save_dir */
    rt_tstate ts;    /* rank 0's trainer_state.json */
    FILE *log;       /* rank 0's --log_file */
    /* Bad input found before training: every rank reads the same files and reaches
     * the same verdict, so they all exit cleanly (no MPI_Abort noise). */
    bool clean_exit;
    /* Rank 0's stderr report. */
    uint64_t steps_per_epoch; /* optimizer steps in one pass over the train part */
    uint64_t k0;              /* the first batch of this run (after --resume) */
    double t_train;           /* when this run's first step began */
    double win_t, win_loss;   /* the logging window: start, loss sum ... */
    uint64_t win_n;           /* ... and steps in it */
    struct { uint64_t step; double t0; } saving[2]; /* the last two saves started, for the "saved" line */
    unsigned nsaves;
    char model_out[4][512];   /* 16-bit models written, for the summary */
    int n_model_out;
} run;

/* Seconds as "4.2s", "42s", "3m05s" or "2h03m". */
static void fmt_dur(char *b, size_t n, double s) {
    if (!(s >= 0) || s > 1e9) snprintf(b, n, "?");
    else if (s < 9.95) snprintf(b, n, "%.1fs", s);
    else if (s < 59.5) snprintf(b, n, "%.0fs", s);
    else if (s < 3600) snprintf(b, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(b, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
}

/* Notes the 16-bit model at `path` for the final summary (once per path). */
static void note_model(run *r, const char *path) {
    for (int i = 0; i < r->n_model_out; i++)
        if (!strcmp(r->model_out[i], path)) return;
    if (r->n_model_out < 4) snprintf(r->model_out[r->n_model_out++], sizeof r->model_out[0], "%s", path);
}

/* Reports the current error and returns `code` (dstrain's exit code). */
static int fail(const run *r, int code) {
    /* Bad input (exit 2) before training is the same verdict on every rank (they
     * read the same files): said once, by rank 0, not N times. */
    if (code == 2 && r->clean_exit && r->rank != 0) return code;
    if (code == 2 && r->clean_exit) fprintf(stderr, "dstrain: %s\n", dsckpt_last_error());
    else fprintf(stderr, "dstrain (rank %d): %s\n", r->rank, dsckpt_last_error());
    return code;
}

/* The saver's commit callback (rt_saver_on_commit): rank 0 tracks the best
 * checkpoint, writes trainer_state.json and rotates old checkpoints. */
static dsckpt_status on_commit(void *user, const char *tag, uint64_t step, const cJSON *metrics) {
    run *r = user;
    const rt_opts *o = r->o;
    if (r->rank != 0) return DSCKPT_OK;
    const cJSON *m = metrics ? cJSON_GetObjectItemCaseSensitive(metrics, o->metric) : NULL;
    rt_tstate_checkpoint(&r->ts, tag, step, cJSON_IsNumber(m) ? m->valuedouble : NAN, o->greater);
    DS_TRY(rt_tstate_save(&r->ts, o->save_dir, step, o->max_steps, o->eval_steps, o->save_steps,
                          r->cfg.train_batch_size));
    int deleted = 0;
    DS_TRY(rt_rotate(o->save_dir, o->save_limit, rt_tstate_best(&r->ts), tag, &deleted));
    double t0 = NAN;
    for (int i = 0; i < 2; i++)
        if (r->saving[i].step == step) t0 = r->saving[i].t0;
    int th = rt_saver_threads(r->saver);
    if (o->async_save && th == 1) fprintf(stderr, "dstrain: saved %s in %.2f s, async\n", tag, rt_now_s() - t0);
    else
        fprintf(stderr, "dstrain: saved %s in %.2f s, %s, %d thread%s a rank\n", tag, rt_now_s() - t0,
                o->async_save ? "async" : "sync", th, th == 1 ? "" : "s");
    if (r->cfg.zero.stage3_gather_16bit_weights_on_model_save) {
        /* As DeepSpeed's save_16bit_model under the Trainer: the consolidated 16-bit
         * weights next to the checkpoints, here save_dir/model.safetensors (of the
         * newest committed checkpoint) and its .sha256. */
        double t1 = rt_now_s();
        DS_TRY(write_final(o->save_dir, tag, o->save_dir, "model.safetensors"));
        char *path = ds_join(o->save_dir, "model.safetensors");
        if (!path) return ds_err(DSCKPT_ENOMEM, "out of memory");
        fprintf(stderr, "dstrain: wrote %s (16-bit, from %s; stage3_gather_16bit_weights_on_model_save) in %.2f s\n",
                path, tag, rt_now_s() - t1);
        note_model(r, path);
        free(path);
    }
    return DSCKPT_OK;
}

/* --print_memory: each rank's bytes held next to the ZeRO formulas, in rank order. */
static void print_memory(const run *r) {
    rt_mem_report have, want;
    rt_engine_memory(r->eng, &have);
    rt_engine_memory_formula(r->eng, &want);
    for (int q = 0; q < r->W; q++) {
        if (q == r->rank)
            printf("{\"rank\": %d, \"stage\": %d, \"world_size\": %d, \"numel\": %llu, \"params_bytes\": %llu, "
                   "\"grads_bytes\": %llu, \"optim_bytes\": %llu, \"formula_params_bytes\": %llu, "
                   "\"formula_grads_bytes\": %llu, \"formula_optim_bytes\": %llu",
                   r->rank, r->cfg.zero.stage, r->W, (unsigned long long)have.numel,
                   (unsigned long long)have.params_bytes, (unsigned long long)have.grads_bytes,
                   (unsigned long long)have.optim_bytes, (unsigned long long)want.params_bytes,
                   (unsigned long long)want.grads_bytes, (unsigned long long)want.optim_bytes);
        if (q == r->rank) {
            /* On a device: what the device holds now (model workspace and engine), and
             * whether the optimizer state went to the host (offload_optimizer). */
            uint64_t used = 0;
            if (r->dev->mem_used && !r->dev->mem_used(r->dev->ctx, &used))
                printf(", \"device\": \"%s\", \"device_used_bytes\": %llu, \"optim_on_host\": %s", r->dev->name,
                       (unsigned long long)used, rt_engine_offloaded(r->eng) ? "true" : "false");
            printf("}\n");
        }
        fflush(stdout);
        rt_comm_barrier(r->comm);
    }
}

/* The step to start from after loading save_dir/tag: the state's data.next_batch
 * when present (an integer in [0, 2^53 - 1]), else the optimizer steps taken. */
static dsckpt_status next_batch(const run *r, const cJSON *state, const char *tag, uint64_t *k0) {
    const cJSON *dj = cJSON_GetObjectItemCaseSensitive(state, "data");
    const cJSON *nb = dj ? cJSON_GetObjectItemCaseSensitive(dj, "next_batch") : NULL;
    *k0 = rt_engine_steps(r->eng);
    if (!nb) return DSCKPT_OK;
    double v = cJSON_IsNumber(nb) ? nb->valuedouble : -1;
    if (!(v >= 0) || v > 9007199254740991.0 || v != floor(v))
        return ds_err(DSCKPT_ECORRUPT, "%s/%s: state.data.next_batch must be an integer in [0, 2^53 - 1]",
                      r->o->save_dir, tag);
    *k0 = (uint64_t)v;
    return DSCKPT_OK;
}

/* --gemm_dtype: auto is the working type on a GPU (DeepSpeed's bf16/fp16 modes run
 * their matrix products in that type) and fp32 elsewhere. */
static dsckpt_dtype gemm_dtype(const rt_opts *o, const rt_config *cfg) {
    const char *g = o->gemm_dtype;
    if (!strcmp(g, "auto")) {
        if (strcmp(o->device, "cuda")) return DSCKPT_F32;
        return cfg->bf16.enabled ? DSCKPT_BF16 : cfg->fp16.enabled ? DSCKPT_F16 : DSCKPT_F32;
    }
    return !strcmp(g, "bf16") ? DSCKPT_BF16 : !strcmp(g, "fp16") ? DSCKPT_F16 : DSCKPT_F32;
}

/* The verdict of rank 0's scan, the same on every rank. */
static dsckpt_status share_pick(run *r, rt_resume_scan *scan, rt_resume_pick *pick) {
    if (r->rank == 0) rt_resume_scan_next(scan, pick);
    DS_TRY(rt_comm_bcast(r->comm, pick, sizeof *pick, 0));
    pick->tag[sizeof pick->tag - 1] = pick->msg[sizeof pick->msg - 1] = '\0';
    return DSCKPT_OK;
}

/* --resume: rank 0 offers the checkpoint (auto: newest first; an explicit tag)
 * after checking its structure and model, every rank loads it, and the load's
 * checked reads are the integrity check. A load that finds auto's pick damaged
 * (agreed by every rank) passes over it to the next one; a refusal ends every rank
 * with the same exit code. Returns -1 to go on (from *k0), else the exit code. */
static int resume(run *r, uint64_t *k0) {
    const rt_opts *o = r->o;
    dsckpt_status st = DSCKPT_OK;
    rt_resume_pick pick;
    /* Every rank here first, so that "opened in" times the pick, not how much
     * later than rank 0 the slowest rank finished starting up. */
    if (rt_comm_barrier(r->comm)) return fail(r, 70);
    double t0 = rt_now_s(); /* the pick's clock: from the scan's start, then from each rejection */
    rt_resume_scan *scan = r->rank == 0 ? rt_resume_scan_new(r->eng, o->save_dir, o->resume) : NULL;
    cJSON *state = NULL;
    double open_s = 0, load_s = 0, read_s = 0;
    int code = 0; /* the exit code of a failure here */
    for (;;) {
        if (share_pick(r, scan, &pick)) {
            code = 70;
            break;
        }
        open_s += rt_now_s() - t0;
        if (pick.exit_code || !pick.tag[0]) break;
        double t1 = rt_now_s();
        cJSON_Delete(state);
        state = NULL;
        if ((st = rt_engine_load(r->eng, o->save_dir, pick.tag, &state, &read_s))) code = exit_code(st);
        else if (rt_comm_barrier(r->comm)) code = 70;
        load_s = rt_now_s() - t1;
        if (code != 1 || !pick.fall_back) break;
        t0 = rt_now_s();
        /* Every rank failed as corrupt (the load agrees on that): each says what it
         * saw, and rank 0's scan passes over the checkpoint. */
        fprintf(stderr, "dstrain (rank %d): --resume auto: %s\n", r->rank, dsckpt_last_error());
        if (r->rank == 0) {
            char why[sizeof pick.msg];
            snprintf(why, sizeof why, "%.255s/%.255s: the load found damaged bytes (the ranks' messages above "
                     "say where)", o->save_dir, pick.tag);
            rt_resume_scan_reject(scan, 1, why);
        }
        code = 0;
    }
    /* What auto passed over as damaged is moved aside (rank 0), so that this run
     * can save those steps again; every rank learns whether that worked. */
    dsckpt_status ast = DSCKPT_OK;
    bool loaded = !code && pick.tag[0] && !pick.exit_code;
    if (loaded && r->rank == 0) ast = rt_resume_scan_set_aside(scan, pick.tag);
    rt_resume_scan_free(scan);
    bool aside_failed = ast != DSCKPT_OK;
    if (loaded && rt_comm_allreduce_or(r->comm, &aside_failed)) code = 70;
    if (loaded && !code && aside_failed) {
        if (r->rank == 0) fprintf(stderr, "dstrain: --resume auto: %s\n", dsckpt_last_error());
        cJSON_Delete(state);
        r->clean_exit = true;
        return 2;
    }
    if (code) {
        cJSON_Delete(state);
        return fail(r, code);
    }
    if (pick.exit_code) {
        if (r->rank == 0) fprintf(stderr, "dstrain: --resume %s: %s\n", o->resume, pick.msg);
        r->clean_exit = true;
        return pick.exit_code;
    }
    if (!pick.tag[0]) {
        if (r->rank == 0)
            fprintf(stderr, "dstrain: --resume auto: no checkpoint in %s yet; starting from scratch\n", o->save_dir);
        if ((st = rt_engine_init_weights(r->eng, o->seed))) return fail(r, 70);
        return -1;
    }
    st = next_batch(r, state, pick.tag, k0);
    cJSON_Delete(state);
    if (st) return fail(r, 1);
    if (r->rank == 0)
        fprintf(stderr, "dstrain: resumed from %s/%s%s at step %llu (opened in %.3f s, loaded in %.3f s: "
                "partitions read in %.3f s, working weights rebuilt in %.3f s)\n",
                o->save_dir, pick.tag, pick.deepspeed ? " (DeepSpeed format)" : "", (unsigned long long)*k0,
                open_s, load_s, read_s, load_s - read_s);
    return -1;
}

/* Starts saving after step s (batch k done): the trainer's state (data position,
 * RNG) and the last eval metric go with it. *stall gets the time it held training. */
static dsckpt_status save(run *r, uint64_t k, const rt_step_stats *s, double last_eval, double *stall) {
    const rt_opts *o = r->o;
    char tag[64];
    snprintf(tag, sizeof tag, "global_step%llu", (unsigned long long)s->step);
    cJSON *tstate = cJSON_CreateObject(), *mets = cJSON_CreateObject();
    cJSON *dj = cJSON_AddObjectToObject(tstate, "data");
    cJSON_AddNumberToObject(dj, "next_batch", (double)(k + 1));
    cJSON_AddNumberToObject(dj, "seed", (double)o->seed);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(tstate, "rng"), "seed", (double)o->seed);
    if (isfinite(last_eval)) cJSON_AddNumberToObject(mets, o->metric, last_eval);
    /* Two slots: the save in flight (committed inside rt_saver_start) and this one. */
    r->saving[r->nsaves & 1].step = s->step;
    r->saving[r->nsaves++ & 1].t0 = rt_now_s();
    /* A save still in flight is committed first (inside rt_saver_start). */
    dsckpt_status st = rt_saver_start(r->saver, o->save_dir, tag, tstate, mets, stall);
    cJSON_Delete(tstate);
    cJSON_Delete(mets);
    return st;
}

/* SHA-256 (hex) of the final fp32 master weights and of the working (16-bit)
 * weights in model order, for bit-identity checks: rank 0's (the one that logs);
 * every rank takes part. */
static dsckpt_status final_digests(const run *r, char *digest, char *wdigest) {
    uint8_t h[DS_SHA256_LEN];
    DS_TRY(rt_engine_digest(r->eng, false, h));
    ds_hex(h, DS_SHA256_LEN, digest);
    DS_TRY(rt_engine_digest(r->eng, true, h));
    ds_hex(h, DS_SHA256_LEN, wdigest);
    return DSCKPT_OK;
}

/* What one step reports: the --log_file line and the periodic stderr summary. */
typedef struct step_report {
    const rt_step_stats *s;
    bool do_eval;
    double eval_loss, stall, copy_s;
    const char *digest, *wdigest; /* "" except after the last step */
} step_report;

static void report_step(run *r, const step_report *p) {
    const rt_step_stats *s = p->s;
    if (r->rank != 0) return;
    if (r->log) {
        fprintf(r->log,
                "{\"step\": %llu, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, \"loss_scale\": %.9g, "
                "\"skipped\": %s, \"tokens_per_s\": %.6g, \"step_s\": %.6g, \"comm_s\": %.6g, \"comm_bytes\": %llu, "
                "\"epoch\": %.6g",
                (unsigned long long)s->step, s->loss, s->lr, isnan(s->grad_norm) ? -1.0 : s->grad_norm, s->loss_scale,
                s->skipped ? "true" : "false", s->tokens_per_s, s->seconds, s->comm_seconds,
                (unsigned long long)s->comm_bytes, (double)s->step / (double)r->steps_per_epoch);
        if (p->do_eval) fprintf(r->log, ", \"eval_loss\": %.9g", p->eval_loss);
        if (p->digest[0]) fprintf(r->log, ", \"master_sha256\": \"%s\", \"working_sha256\": \"%s\"", p->digest, p->wdigest);
        if (p->stall >= 0) fprintf(r->log, ", \"save_stall_s\": %.6g", p->stall);
        if (p->copy_s > 0) fprintf(r->log, ", \"save_copy_s\": %.6g", p->copy_s);
        fprintf(r->log, "}\n");
        fflush(r->log);
    }
    r->win_loss += s->loss;
    r->win_n++;
    if ((r->cfg.steps_per_print && s->step % r->cfg.steps_per_print == 0) || p->do_eval) {
        /* The loss is the mean over the steps since the last line (the logging
         * window, as the Trainer logs it); lr and grad_norm are this step's. */
        double now = rt_now_s(), win = now - r->win_t, done = (double)(s->step - r->k0);
        double samples = (double)r->win_n * (double)r->cfg.train_batch_size;
        char ev[64] = "", el[16], eta[16];
        if (p->do_eval) snprintf(ev, sizeof ev, " eval_loss %.4f", p->eval_loss);
        fmt_dur(el, sizeof el, now - r->t_train);
        fmt_dur(eta, sizeof eta, done > 0 ? (now - r->t_train) / done * (double)(r->o->max_steps - s->step) : NAN);
        fprintf(stderr, "step %llu/%llu: loss %.4f (mean of %llu) lr %.3g grad_norm %.3g%s%s | epoch %.2f | "
                "%.1f samples/s %.0f tok/s | %s elapsed, ETA %s\n",
                (unsigned long long)s->step, (unsigned long long)r->o->max_steps, r->win_loss / (double)r->win_n,
                (unsigned long long)r->win_n, s->lr, s->grad_norm, s->skipped ? " (skipped: overflow)" : "", ev,
                (double)s->step / (double)r->steps_per_epoch, win > 0 ? samples / win : 0.0,
                win > 0 ? samples * (double)r->o->seq_len / win : 0.0, el, eta);
        r->win_t = now;
        r->win_loss = 0;
        r->win_n = 0;
    }
}

/* Batch k: commit a finished save, the optimizer step, eval, save, report.
 * *last_eval carries the latest eval metric across steps. Returns -1 to go on,
 * else the exit code. */
static int train_step(run *r, uint64_t k, const char *fake_eval, double *last_eval) {
    const rt_opts *o = r->o;
    rt_step_stats s;
    if (r->saver && rt_saver_poll(r->saver, false, NULL)) return fail(r, 70);
    if (rt_engine_step(r->eng, r->data, o->seed, k, &s)) return fail(r, 70);
    step_report p = {.s = &s, .eval_loss = NAN, .stall = -1, .digest = "", .wdigest = ""};
    p.copy_s = rt_saver_take_copy_seconds(r->saver); /* this step's share of an async save's stall */
    p.do_eval = (o->eval_steps && (k + 1) % o->eval_steps == 0) || k + 1 == o->max_steps;
    double te = rt_now_s();
    if (p.do_eval && rt_engine_eval(r->eng, r->data, o->eval_windows, &p.eval_loss)) return fail(r, 70);
    r->win_t += rt_now_s() - te; /* the window's samples/s count training time, not eval's */
    if (p.do_eval && fake_eval) p.eval_loss = fake_metric(fake_eval, s.step, p.eval_loss);
    if (p.do_eval) *last_eval = p.eval_loss;
    if (r->rank == 0 && r->ts.root) {
        rt_tstate_log_train(&r->ts, s.step, s.loss, s.lr, s.grad_norm);
        if (p.do_eval) rt_tstate_log_eval(&r->ts, s.step, o->metric, p.eval_loss);
    }
    if (r->saver && ((o->save_steps && s.step % o->save_steps == 0) || k + 1 == o->max_steps) &&
        save(r, k, &s, *last_eval, &p.stall))
        return fail(r, 70);
    char digest[2 * DS_SHA256_LEN + 1] = "", wdigest[2 * DS_SHA256_LEN + 1] = "";
    if (k + 1 == o->max_steps && o->log_path) {
        if (final_digests(r, digest, wdigest)) return fail(r, 70);
        p.digest = digest;
        p.wdigest = wdigest;
    }
    report_step(r, &p);
    return -1;
}

/* Steps k0 .. max_steps-1. Returns -1 when done, else the exit code. */
static int train(run *r, uint64_t k0) {
    /* Test hook: DSTRAIN_TEST_EVAL="step:value,..." replaces the eval metric at those
     * steps (to plant a best checkpoint in tests); it is reported on stderr. */
    const char *fake_eval = ds_test_hook("DSTRAIN_TEST_EVAL");
    if (fake_eval && r->rank == 0)
        fprintf(stderr, "dstrain: DSTRAIN_TEST_EVAL is set: eval metrics overridden (%s)\n", fake_eval);
    double last_eval = NAN;
    r->k0 = k0;
    r->t_train = r->win_t = rt_now_s();
    if (k0 >= r->o->max_steps) {
        /* As the Trainer: a run already past --max_steps trains no step. */
        if (r->rank == 0)
            fprintf(stderr, "dstrain: --max_steps %llu is not above the resumed step %llu: nothing to train\n",
                    (unsigned long long)r->o->max_steps, (unsigned long long)k0);
        return -1;
    }
    for (uint64_t k = k0; k < r->o->max_steps; k++) {
        int rc = train_step(r, k, fake_eval, &last_eval);
        if (rc >= 0) return rc;
    }
    return -1;
}

/* Rank 0's last lines: steps, time, the best checkpoint and where the model is. */
static void summary(const run *r) {
    const rt_opts *o = r->o;
    uint64_t steps = rt_engine_steps(r->eng);
    double t = rt_now_s() - r->t_train;
    char el[16];
    fmt_dur(el, sizeof el, t);
    fprintf(stderr, "dstrain: done: %llu step(s) (%llu in this run, %.2f epoch(s)) in %s\n",
            (unsigned long long)steps, (unsigned long long)(steps > r->k0 ? steps - r->k0 : 0),
            (double)steps / (double)r->steps_per_epoch, el);
    if (o->save_dir) {
        const char *best = rt_tstate_best(&r->ts);
        if (best) fprintf(stderr, "dstrain: best checkpoint: %s/%s (%s)\n", o->save_dir, best, o->metric);
        fprintf(stderr, "dstrain: checkpoints in %s (dsckpt list %s)\n", o->save_dir, o->save_dir);
    }
    for (int i = 0; i < r->n_model_out; i++) fprintf(stderr, "dstrain: model (16-bit safetensors): %s\n", r->model_out[i]);
    if (!o->save_dir && !r->n_model_out)
        fprintf(stderr, "dstrain: nothing saved (no --save_dir / --output_dir, no --save_model)\n");
}

/* After training: the last save committed, then --load_best_model_at_end and
 * --save_model. Returns 0 or the exit code. */
static int finish(run *r) {
    const rt_opts *o = r->o;
    dsckpt_status st;
    if (r->saver && rt_saver_poll(r->saver, true, NULL)) return fail(r, 70);
    if (o->load_best) {
        char best[256] = "";
        if (r->rank == 0 && rt_tstate_best(&r->ts)) snprintf(best, sizeof best, "%s", rt_tstate_best(&r->ts));
        if (rt_comm_bcast(r->comm, best, sizeof best, 0)) return fail(r, 70);
        if (!best[0]) {
            ds_err(DSCKPT_ENOENT, "--load_best_model_at_end: no checkpoint with a metric was saved (use --eval_steps and --save_steps)");
            return fail(r, 2);
        }
        if (rt_engine_load_weights(r->eng, o->save_dir, best)) return fail(r, 70);
        double el = NAN;
        if (rt_engine_eval(r->eng, r->data, o->eval_windows, &el)) return fail(r, 70);
        if (r->rank == 0) {
            fprintf(stderr, "dstrain: loaded the best checkpoint %s/%s (%s %.6f) at %d rank(s)\n", o->save_dir, best,
                    o->metric, el, r->W);
            char *fin = ds_join(o->save_dir, "final");
            st = fin ? write_final(o->save_dir, best, fin, "model.safetensors") : DSCKPT_ENOMEM;
            free(fin);
            if (st) return fail(r, 70);
            char *fm = ds_join(o->save_dir, "final/model.safetensors");
            if (fm) note_model(r, fm);
            free(fm);
        }
    }
    if (o->save_model && r->rank == 0) {
        char tag[64];
        snprintf(tag, sizeof tag, "global_step%llu", (unsigned long long)rt_engine_steps(r->eng));
        if (write_final(o->save_dir, tag, o->save_model, NULL)) return fail(r, 70);
        note_model(r, o->save_model);
    }
    if (r->rank == 0) summary(r);
    return 0;
}

/* Rank 0: what the config asks for that this run does not do, one line each. */
static void config_warnings(const run *r) {
    const rt_opts *o = r->o;
    const cJSON *w;
    cJSON_ArrayForEach(w, r->cfg.warnings) if (cJSON_IsString(w))
        fprintf(stderr, "dstrain: warning: %s: %s\n", o->cfg_path, w->valuestring);
    const char *dev = rt_engine_device_name(r->eng);
    if (r->cfg.zero.offload_optimizer.device == RT_OFFLOAD_CPU && !strcmp(dev, "cpu"))
        fprintf(stderr, "dstrain: warning: %s: zero_optimization.offload_optimizer: no effect: this run trains on "
                "the CPU, where the optimizer state already lives in host memory\n", o->cfg_path);
    if (r->cfg.zero.offload_param.device == RT_OFFLOAD_CPU) {
        if (r->cfg.zero.stage != 3)
            fprintf(stderr, "dstrain: warning: %s: zero_optimization.offload_param: no effect below ZeRO stage 3 "
                    "(DeepSpeed uses it at stage 3 only)\n", o->cfg_path);
        else if (!strcmp(dev, "cpu"))
            fprintf(stderr, "dstrain: warning: %s: zero_optimization.offload_param: no effect: this run trains on the "
                    "CPU, where the parameters already live in host memory\n", o->cfg_path);
        else if (!rt_engine_params_offloaded(r->eng))
            fprintf(stderr, "dstrain: warning: %s: zero_optimization.offload_param: taken only with "
                    "offload_optimizer device cpu: the parameters stay in %s memory\n", o->cfg_path, dev);
    }
    if (r->cfg.zero.stage3_gather_16bit_weights_on_model_save && !o->save_dir)
        fprintf(stderr, "dstrain: warning: %s: zero_optimization.stage3_gather_16bit_weights_on_model_save: no "
                "effect without --save_dir / --output_dir (nothing is saved)\n", o->cfg_path);
}

/* Config, data, model and engine. Returns -1 to go on, else the exit code. */
static int setup(run *r) {
    rt_opts *o = r->o;
    dsckpt_status st;
    r->clean_exit = true;
    rt_args hf = o->hf;
    if (rt_data_open(o->data_path, o->seq_len, RT_DATA_EVAL_FRACTION_DEFAULT, &r->data)) return fail(r, 2);
    /* An epoch: as many samples as windows of seq_len + 1 tokens fit in the train part. */
    hf.samples_per_epoch = rt_data_train_bytes(r->data) / (o->seq_len + 1);
    if (rt_config_load(o->cfg_path, &hf, r->W, &r->cfg)) return fail(r, 2);
    r->steps_per_epoch = r->cfg.steps_per_epoch;
    if (r->cfg.max_steps_from_epochs) o->max_steps = r->cfg.max_steps_from_epochs; /* --num_train_epochs */
    if (o->logging_steps) r->cfg.steps_per_print = o->logging_steps; /* --logging_steps */
    rt_model_cfg mc = {.vocab_size = 256, .n_ctx = (int)o->seq_len, .n_layer = (int)o->n_layer,
                       .n_head = (int)o->n_head, .n_embd = (int)o->n_embd};
    /* The device table: rank r on device r (modulo the devices found); host
     * collectives stage its buffers through pinned host memory. */
    if ((st = rt_device_open_named(o->device, r->rank, &r->dev)))
        return fail(r, st == DSCKPT_EUNSUPPORTED ? 5 : 70);
    if ((st = rt_device_set_gemm_dtype(r->dev, gemm_dtype(o, &r->cfg))))
        return fail(r, st == DSCKPT_EUNSUPPORTED ? 5 : 70);
    rt_comm_set_device(r->comm, r->dev);
    if ((st = rt_comm_open_named(o->comm, r->comm, r->dev, &r->dcomm)))
        return fail(r, st == DSCKPT_EUNSUPPORTED ? 5 : 70);
    if (rt_model_create_on(r->dev, &mc, (int)r->cfg.micro_batch, (int)o->seq_len, &r->model)) return fail(r, 2);
    /* With --resume the weights come from the checkpoint: drawn from the seed only
     * if there is none (resume()). */
    rt_comm *ec = r->dcomm ? r->dcomm : r->comm;
    st = o->resume ? rt_engine_create_empty(&r->cfg, ec, r->model, &r->eng)
                   : rt_engine_create(&r->cfg, ec, r->model, o->seed, &r->eng);
    if (st) return fail(r, st == DSCKPT_EINVAL ? 2 : 70);
    r->clean_exit = false;
    if (r->rank == 0) config_warnings(r);
    return -1;
}

/* The checkpoint side: the log file, the saver (with on_commit), rank 0's trainer
 * state, and debris of killed saves removed. Returns -1 to go on, else the exit code. */
static int setup_saving(run *r) {
    const rt_opts *o = r->o;
    if (r->rank == 0 && o->log_path && !(r->log = fopen(o->log_path, "w"))) {
        fprintf(stderr, "dstrain: cannot open --log_file %s: %s\n", o->log_path, strerror(errno));
        rt_comm_abort(r->comm, 2);
        return 2;
    }
    if (r->rank == 0)
        fprintf(stderr, "dstrain: %llu parameters, ZeRO stage %d, %d rank(s), %s, batch %llu = %llu x %llu x %d\n",
                (unsigned long long)rt_model_numel(r->model), r->cfg.zero.stage, r->W,
                r->cfg.bf16.enabled ? "bf16" : r->cfg.fp16.enabled ? "fp16" : "fp32",
                (unsigned long long)r->cfg.train_batch_size, (unsigned long long)r->cfg.micro_batch,
                (unsigned long long)r->cfg.grad_accum, r->W);
    if (r->rank == 0 && strcmp(r->dev->name, "cpu"))
        fprintf(stderr, "dstrain: device %s%s\n", r->dev->name,
                rt_engine_params_offloaded(r->eng) ? ", optimizer and parameters offloaded to host memory (Adam on the CPU)"
                : rt_engine_offloaded(r->eng)      ? ", optimizer offloaded to host memory (Adam on the CPU)"
                                                   : "");
    if (!o->save_dir) return -1;
    if (rt_saver_create(r->eng, o->async_save, &r->saver)) return fail(r, 70);
    rt_saver_set_compress(r->saver, (int)o->save_compress);
    rt_saver_on_commit(r->saver, on_commit, r);
    dsckpt_status st;
    if (r->rank == 0 && (st = rt_tstate_load(o->save_dir, &r->ts)))
        return fail(r, exit_code(st)); /* a damaged trainer_state.json: 1, unreadable: 2 */
    r->ts.steps_per_epoch = r->steps_per_epoch;
    if (r->rank == 0) {
        int removed = rt_clean_debris(o->save_dir);
        if (removed)
            fprintf(stderr, "dstrain: removed %d temporary file(s) of killed saves from %s\n", removed, o->save_dir);
    }
    return -1;
}

int main(int argc, char **argv) {
    rt_opts o;
    int rc = rt_opts_parse(argc, argv, &o);
    if (rc >= 0) return rc;
    run r = {.o = &o};
    die_with_launcher();
    if (rt_comm_open_mpi(&argc, &argv, &r.comm)) {
        fprintf(stderr, "dstrain: %s\n", dsckpt_last_error());
        return 70;
    }
    r.rank = rt_comm_rank(r.comm);
    r.W = rt_comm_size(r.comm);
    uint64_t k0 = 0;
    rc = setup(&r);
    if (rc < 0 && o.print_memory) {
        print_memory(&r);
        rc = 0;
    }
    if (rc < 0) rc = setup_saving(&r);
    if (rc < 0 && o.resume) rc = resume(&r, &k0);
    if (rc < 0) rc = train(&r, k0);
    if (rc < 0) rc = finish(&r);
    if (r.log) fclose(r.log);
    rt_saver_free(r.saver);
    rt_tstate_free(&r.ts);
    rt_engine_free(r.eng);
    rt_model_free(r.model);
    rt_comm_close(r.dcomm); /* before its device */
    rt_comm_set_device(r.comm, NULL);
    rt_device_close_named(r.dev);
    rt_data_free(r.data);
    rt_config_free(&r.cfg);
    if (rc && !r.clean_exit) rt_comm_abort(r.comm, rc);
    rt_comm_close(r.comm);
    return rc;
}
