/* cmd_data_batches.c: `lcm data batches`: prints the batch plan of one epoch of a split, micro-batch
 * by micro-batch (size, padding, first rows and, for N devices, which device takes it in which step),
 * so that data.max_tokens, data.max_seq_len and data.bucket_factor can be judged before training. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/cli.h"
#include "lcm/plan.h"

#define ROWS_SHOWN 3

static void usage(FILE *f) {
    fprintf(f,
            "usage: lcm data batches [config.ini] [section.key=value ...] [--split train|valid] [--epoch E]\n"
            "                        [--limit N] [--devices N]\n\n"
            "Prints the batch plan of epoch E (default 0) of data.train (--split train, the default) or\n"
            "data.valid: one line per micro-batch with its index, rows, T (longest row), padded concepts\n"
            "(rows x T), targets, fill (concepts / padded concepts) and its first rows as doc:start+len;\n"
            "then the epoch's totals.\n"
            "  --limit N    print the first N micro-batches (default 20; 0 = all)\n"
            "  --devices N  also show the global step and the device of each micro-batch for N devices and\n"
            "               trainer.grad_accum micro-batches per device per step (steps count from the\n"
            "               start of epoch 0, as in a run that starts fresh)\n"
            "The plan uses data.max_seq_len, data.max_tokens, data.bucket_factor, data.shuffle,\n"
            "data.append_eot and trainer.seed, exactly as `lcm train` does.\n");
}

typedef struct batches_args {
    int valid;
    uint64_t epoch;
    uint64_t limit;
    int devices; /* 0 = no device column */
} batches_args;

static const lcm_cli_args *parse_args(int argc, char **argv, batches_args *ba, lcm_error *err) {
    const char *split = NULL;
    int have_devices = 0;
    uint64_t devices = 0;
    *ba = (batches_args){.limit = 20};
    const lcm_cli_opt opts[] = {{"--split", .value = &split}, {"--epoch", .number = &ba->epoch, .max = UINT64_MAX - 1},
                                {"--limit", .number = &ba->limit},
                                {"--devices", .flag = &have_devices, .number = &devices, .max = 1024}};
    const lcm_cli_cmd cmd = {"data batches", 1, 0, NULL, opts, 4};
    const lcm_cli_args *a = lcm_cli_parse(&cmd, argc - 1, argv + 1, err);
    if (a && split && strcmp(split, "train") != 0 && strcmp(split, "valid") != 0)
        return lcm_cli_usage(err, cmd.name, "--split is train or valid, not '%s'", split), NULL;
    if (a && have_devices && devices == 0) return lcm_cli_usage(err, cmd.name, "--devices needs at least 1 device"), NULL;
    ba->valid = split && strcmp(split, "valid") == 0;
    ba->devices = (int)devices;
    return a;
}

static void print_rows(const lcm_microbatch *mb) {
    for (int j = 0; j < mb->n_rows && j < ROWS_SHOWN; j++)
        printf(" %llu:%u+%u", (unsigned long long)mb->rows[j].doc, mb->rows[j].start, mb->rows[j].len);
    if (mb->n_rows > ROWS_SHOWN) printf(" ...");
    printf("\n");
}

static int print_plan(lcm_plan *p, const lcm_dataset *ds, const lcm_plan_config *pc, const batches_args *a,
                      int grad_accum, lcm_error *err) {
    uint64_t n_mb;
    LCM_TRY(lcm_plan_epoch_size(p, a->epoch, &n_mb, err));
    /* Global steps count from the start of epoch 0: the micro-batches of the epochs before this one. */
    uint64_t before = 0;
    for (uint64_t e = 0; a->devices && e < a->epoch; e++) {
        uint64_t n;
        LCM_TRY(lcm_plan_epoch_size(p, e, &n, err));
        before += n;
    }
    uint64_t per_step = (uint64_t)a->devices * (uint64_t)grad_accum;

    printf("dataset %s: %llu documents, %llu concepts, dim %d, %s\n", ds->path, (unsigned long long)ds->n_docs,
           (unsigned long long)ds->n_concepts, ds->dim, lcm_dtype_name(ds->dtype));
    printf("rows: %llu (max_seq_len %d, EOT %s), %llu dropped (one concept, no target); %lld targets per epoch\n",
           (unsigned long long)lcm_plan_num_rows(p), pc->max_seq_len, pc->append_eot ? "appended" : "not appended",
           (unsigned long long)lcm_plan_num_dropped(p), (long long)lcm_plan_num_targets(p));
    if (pc->mode == LCM_PLAN_TRAIN)
        printf("plan: train, max_tokens %lld, buckets of >= %lld concepts, shuffle %s (seed %llu)\n",
               (long long)pc->max_tokens, (long long)pc->bucket_factor * pc->max_tokens, pc->shuffle ? "on" : "off",
               (unsigned long long)pc->seed);
    else
        printf("plan: eval, max_tokens %lld, dataset order, no shuffle\n", (long long)pc->max_tokens);
    printf("epoch %llu: %llu micro-batches (at most %d rows each)", (unsigned long long)a->epoch,
           (unsigned long long)n_mb, lcm_plan_max_rows(p));
    if (a->devices)
        printf("; %d device(s) x grad_accum %d = %llu micro-batches per step", a->devices, grad_accum,
               (unsigned long long)per_step);
    printf("\n\n%8s %5s %5s %8s %8s %5s", "batch", "rows", "T", "padded", "targets", "fill");
    if (a->devices) printf(" %8s %6s", "step", "device");
    printf("  first rows (doc:start+len)\n");

    lcm_row *rows = malloc((size_t)lcm_plan_max_rows(p) * sizeof *rows);
    if (!rows) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory for a micro-batch's rows");
    int64_t padded_all = 0, concepts_all = 0;
    uint64_t rows_all = 0;
    int rc = 0;
    for (uint64_t i = 0; i < n_mb && rc == 0; i++) {
        lcm_microbatch mb;
        rc = lcm_plan_get(p, a->epoch, i, &mb, rows, (size_t)lcm_plan_max_rows(p), err);
        if (rc != 0) break;
        int64_t padded = (int64_t)mb.n_rows * mb.max_len, concepts = mb.n_targets + mb.n_rows;
        padded_all += padded;
        concepts_all += concepts;
        rows_all += (uint64_t)mb.n_rows;
        if (a->limit && i >= a->limit) continue;
        printf("%8llu %5d %5d %8lld %8lld %4.0f%%", (unsigned long long)i, mb.n_rows, mb.max_len, (long long)padded,
               (long long)mb.n_targets, 100.0 * (double)concepts / (double)padded);
        if (a->devices) {
            uint64_t g = before + i;
            printf(" %8llu %6llu", (unsigned long long)(g / per_step),
                   (unsigned long long)(g % per_step / (uint64_t)grad_accum));
        }
        print_rows(&mb);
    }
    free(rows);
    if (rc != 0) return rc;
    if (a->limit && n_mb > a->limit)
        printf("%8s (%llu more; --limit 0 prints all)\n", "...", (unsigned long long)(n_mb - a->limit));
    printf("\nepoch %llu total: %llu micro-batches, %llu rows, %lld concepts in %lld padded positions "
           "(fill %.1f%%)\n", (unsigned long long)a->epoch, (unsigned long long)n_mb, (unsigned long long)rows_all,
           (long long)concepts_all, (long long)padded_all, 100.0 * (double)concepts_all / (double)padded_all);
    return 0;
}

int lcm_cmd_data_batches(int argc, char **argv) {
    if (argc > 1 && lcm_cli_is_help(argv[1])) {
        usage(stdout);
        return 0;
    }
    lcm_error err = {0};
    batches_args ba;
    static lcm_config config;
    lcm_config *cfg = &config;
    lcm_dataset ds;
    int ds_open = 0;
    lcm_plan *plan = NULL;
    const lcm_cli_args *a = parse_args(argc, argv, &ba, &err);
    int rc = a ? lcm_config_load(cfg, a->config_path, a->n_overrides, a->overrides, &err) : (int)err.code;
    const char *key = ba.valid ? "data.valid" : "data.train";
    const char *path = rc == 0 ? (ba.valid ? cfg->data.valid : cfg->data.train) : "";
    if (rc == 0 && !path[0])
        rc = lcm_fail(&err, LCM_ERR_CONFIG, "%s is not set; pass %s=<dataset.lcmd> (a run that synthesized its data "
                      "has it under %s/data/)", key, key, cfg->trainer.output_dir);
    if (rc == 0) {
        rc = lcm_dataset_open(&ds, path, &err);
        ds_open = rc == 0;
    }
    lcm_plan_config pc;
    if (rc == 0) {
        lcm_plan_config_from(&pc, cfg, ba.valid ? LCM_PLAN_EVAL : LCM_PLAN_TRAIN);
        rc = lcm_plan_create(&plan, &ds, &pc, &err);
    }
    if (rc == 0) rc = print_plan(plan, &ds, &pc, &ba, cfg->trainer.grad_accum, &err);
    lcm_plan_free(plan);
    if (ds_open) lcm_dataset_close(&ds);
    return rc == 0 ? 0 : lcm_cli_report(&err);
}
