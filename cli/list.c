/*
 * list.c — `dsckpt list CKPT`: every tag of a save root or Hugging Face
 * output_dir as a table (or --json), from dsckpt_tag_list_open().
 */
#include "cli.h"

#include <cjson/cJSON.h>

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char list_help[] =
    "Usage: dsckpt list CKPT [--json]\n"
    "\n"
    "List every checkpoint under CKPT: a save root (dsckpt/dstrain or DeepSpeed),\n"
    "a Hugging Face Trainer output_dir (its checkpoint-N folders) or one tag\n"
    "directory. For each: step, metric (the manifest's, else the eval value\n"
    "trainer_state.json logged at that step), markers ('latest': what `latest`\n"
    "names, or the newest complete checkpoint-N; 'best': trainer_state.json's\n"
    "best_model_checkpoint), world size, ZeRO stage, training dtype, size on disk,\n"
    "and whether it is complete (its manifest, or DeepSpeed's files, open and cover\n"
    "every tensor; 'dsckpt verify' also hashes the data). Incomplete tags (a save\n"
    "that did not finish) are listed with the reason.\n"
    "\n"
    "Options:\n"
    "      --json      the list as JSON on stdout\n"
    "  -h, --help      this help\n";

static cJSON *tag_json(const dsckpt_tag *t) {
    cJSON *e = cJSON_CreateObject();
    if (!e) return NULL;
    cJSON_AddStringToObject(e, "name", t->name);
    cJSON_AddStringToObject(e, "dir", t->dir);
    if (t->format) cJSON_AddStringToObject(e, "format", t->format);
    else cJSON_AddNullToObject(e, "format");
    cJSON_AddBoolToObject(e, "complete", t->complete);
    if (t->problem) cJSON_AddStringToObject(e, "problem", t->problem);
    else cJSON_AddNullToObject(e, "problem");
    if (t->step >= 0) cJSON_AddNumberToObject(e, "step", (double)t->step);
    else cJSON_AddNullToObject(e, "step");
    if (t->complete) {
        cJSON_AddNumberToObject(e, "world_size", t->world_size);
        cJSON_AddNumberToObject(e, "zero_stage", t->zero_stage);
        cJSON_AddStringToObject(e, "train_dtype", t->train_dtype ? t->train_dtype : "");
        cJSON_AddNumberToObject(e, "param_count", (double)t->param_count);
    } else {
        cJSON_AddNullToObject(e, "world_size");
        cJSON_AddNullToObject(e, "zero_stage");
        cJSON_AddNullToObject(e, "train_dtype");
        cJSON_AddNullToObject(e, "param_count");
    }
    cJSON_AddNumberToObject(e, "bytes_on_disk", (double)t->bytes_on_disk);
    if (t->has_metric) {
        cJSON *m = cJSON_AddObjectToObject(e, "metric");
        cJSON_AddStringToObject(m, "name", t->metric_name ? t->metric_name : "");
        cJSON_AddNumberToObject(m, "value", t->metric);
    } else {
        cJSON_AddNullToObject(e, "metric");
    }
    cJSON_AddBoolToObject(e, "latest", t->is_latest);
    cJSON_AddBoolToObject(e, "best", t->is_best);
    return e;
}

static int print_json(const char *path, const dsckpt_tag_list *l) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return EXIT_INTERNAL;
    cJSON_AddStringToObject(o, "path", path);
    long b = dsckpt_tag_list_best(l), lt = dsckpt_tag_list_latest(l);
    if (lt >= 0) cJSON_AddStringToObject(o, "latest", dsckpt_tag_list_get(l, (size_t)lt)->name);
    else cJSON_AddNullToObject(o, "latest");
    if (b >= 0) cJSON_AddStringToObject(o, "best", dsckpt_tag_list_get(l, (size_t)b)->name);
    else cJSON_AddNullToObject(o, "best");
    cJSON *arr = cJSON_AddArrayToObject(o, "tags");
    for (size_t i = 0; i < dsckpt_tag_list_count(l); i++) cJSON_AddItemToArray(arr, tag_json(dsckpt_tag_list_get(l, i)));
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) {
        fprintf(stderr, "%s list: out of memory\n", prog);
        return EXIT_UNREADABLE;
    }
    puts(text);
    free(text);
    return EXIT_OKAY;
}

static void print_table(const char *path, const dsckpt_tag_list *l) {
    size_t n = dsckpt_tag_list_count(l), w = 4;
    for (size_t i = 0; i < n; i++) {
        size_t k = strlen(dsckpt_tag_list_get(l, i)->name);
        if (k > w) w = k;
    }
    if (w > 48) w = 48;
    printf("%-*s %8s  %-22s %-12s %5s %5s %-5s %10s  %s\n", (int)w, "TAG", "STEP", "METRIC", "MARK", "WORLD", "STAGE",
           "DTYPE", "SIZE", "STATUS");
    size_t incomplete = 0;
    for (size_t i = 0; i < n; i++) {
        const dsckpt_tag *t = dsckpt_tag_list_get(l, i);
        char step[24] = "-", metric[64] = "-", mark[16] = "", world[16] = "-", stage[8] = "-", size[32];
        if (t->step >= 0) snprintf(step, sizeof step, "%" PRId64, t->step);
        if (t->has_metric) snprintf(metric, sizeof metric, "%.12s=%.4g", t->metric_name ? t->metric_name : "", t->metric);
        snprintf(mark, sizeof mark, "%s%s%s", t->is_best ? "best" : "", t->is_best && t->is_latest ? "," : "",
                 t->is_latest ? "latest" : "");
        if (t->complete) {
            snprintf(world, sizeof world, "%d", t->world_size);
            snprintf(stage, sizeof stage, "%d", t->zero_stage);
        } else {
            incomplete++;
        }
        printf("%-*.*s %8s  %-22s %-12s %5s %5s %-5s %10s  %s\n", (int)w, (int)w, t->name, step, metric,
               mark[0] ? mark : "-", world, stage, t->complete && t->train_dtype ? t->train_dtype : "-",
               fmt_bytes(t->bytes_on_disk, size, sizeof size), t->complete ? "complete" : "INCOMPLETE");
    }
    for (size_t i = 0; i < n; i++) {
        const dsckpt_tag *t = dsckpt_tag_list_get(l, i);
        if (!t->complete && t->problem) printf("  %s: %s\n", t->name, t->problem);
    }
    long b = dsckpt_tag_list_best(l);
    printf("%zu checkpoint%s in %s", n, n == 1 ? "" : "s", path);
    if (incomplete) printf(", %zu incomplete", incomplete);
    if (b >= 0) printf("; best: %s", dsckpt_tag_list_get(l, (size_t)b)->name);
    printf("\n");
}

int cmd_list(int argc, char **argv) {
    static const struct option lo[] = {{"json", no_argument, 0, 'J'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    bool json = false;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        if (c == 'J') json = true;
        else if (c == 'h') {
            fputs(list_help, stdout);
            fputs(exit_codes_help, stdout);
            return EXIT_OKAY;
        } else {
            return bad_option("list", lo, argv);
        }
    }
    if (optind != argc - 1) return usage_error("list", "%s", "expected exactly one path (a save root, output_dir or tag directory)");
    const char *path = argv[optind];
    dsckpt_tag_list *l = NULL;
    dsckpt_status st = dsckpt_tag_list_open(path, &l);
    if (st) return fail(st, "list");
    int rc = EXIT_OKAY;
    if (json) rc = print_json(path, l);
    else print_table(path, l);
    dsckpt_tag_list_free(l);
    return rc;
}
