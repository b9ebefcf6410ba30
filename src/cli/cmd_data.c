/* cmd_data.c: `lcm data <synth|import|inspect|fit-normalizer|batches>`: the front ends of the dataset
 * module (src/data/). Each subcommand parses its own options, calls the library, prints results on
 * stdout, progress on stderr, and one line per error. `batches` belongs to the batch plan
 * (lcm_cmd_data_batches). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lcm/cli.h"
#include "lcm/config.h"
#include "lcm/dataset.h"
#include "lcm/inspect.h"
#include "lcm/npy.h"
#include "lcm/synth.h"
#include "lcm/train.h"

static void data_usage(FILE *f) {
    fprintf(f,
            "usage: lcm data <subcommand> ...\n\n"
            "subcommands:\n"
            "  synth          [config.ini] [synth.key=value ...] -o DIR\n"
            "                 write a synthetic dataset: DIR/train.lcmd, DIR/valid.lcmd, DIR/normalizer.safetensors\n"
            "  import         EMB.npy LENGTHS.npy [--offsets] [--eot EOT.npy] [--source-ids IDS.npy]\n"
            "                 [--dtype f32|f16|bf16] -o OUT.lcmd\n"
            "                 convert NumPy arrays (embeddings [N, D], concepts per document) into a dataset\n"
            "  inspect        FILE.lcmd [--show DOC] [--samples N]\n"
            "                 sizes, length histogram, norms, per-dimension statistics, NaN/Inf, EOT, text\n"
            "  fit-normalizer TRAIN.lcmd [-o OUT.safetensors] [--max-samples N] [--seed N]\n"
            "                 fit the SONAR normalizer (median, IQR / 1.349 per dimension)\n"
            "  batches        [config.ini] [key=value ...]  the batch plan of a config (lcm data batches --help)\n\n"
            "`lcm data <subcommand> --help` describes one. The file format: docs/dataset-format.md.\n"
            "Parquet files in the reference layout: tools/parquet_to_lcmd.py.\n");
}

static int help(const char *text) {
    fputs(text, stdout);
    return 0;
}

/* ---- progress on stderr ------------------------------------------------------------------------ */

typedef struct progress_line {
    const char *label;
    int tty;
    int last_pct;
    double t0;
} progress_line;

static void progress_init(progress_line *p, const char *label) {
    p->label = label;
    p->tty = isatty(2);
    p->last_pct = -1;
    p->t0 = lcm_now();
}

/* A terminal gets a live percentage; a log gets a line every 10% once the job has run for 2 s. */
static void progress_cb(void *ctx, double frac) {
    progress_line *p = ctx;
    int pct = (int)(frac * 100.0);
    if (pct == p->last_pct) return;
    double now = lcm_now();
    if (p->tty) {
        fprintf(stderr, "\r%s: %3d%%", p->label, pct);
        p->last_pct = pct;
    } else if (now - p->t0 > 2.0 && pct / 10 != p->last_pct / 10) {
        fprintf(stderr, "%s: %d%% (%.0f s)\n", p->label, pct, now - p->t0);
        p->last_pct = pct;
    }
}

static void progress_done(progress_line *p) {
    if (p->tty && p->last_pct >= 0) fprintf(stderr, "\r%s: done       \n", p->label);
}

static void print_dataset_line(const char *path) {
    lcm_error err = {0};
    lcm_dataset ds;
    if (lcm_dataset_open(&ds, path, &err) != 0) {
        printf("  %s (cannot reopen: %s)\n", path, err.msg);
        return;
    }
    printf("  %s: %llu documents, %llu concepts, dim %d, %s, %.1f MB%s\n", path, (unsigned long long)ds.n_docs,
           (unsigned long long)ds.n_concepts, ds.dim, lcm_dtype_name(ds.dtype), (double)ds.map.size / 1e6,
           ds.eot ? ", with EOT" : "");
    lcm_dataset_close(&ds);
}

/* ---- synth ---------------------------------------------------------------------------------------- */

static const char synth_usage[] =
    "usage: lcm data synth [config.ini] [synth.key=value ...] -o DIR\n\n"
    "Writes a synthetic dataset with learnable sequential structure and SONAR-like statistics into\n"
    "DIR: train.lcmd, valid.lcmd (synth.valid_docs > 0), normalizer.safetensors (fitted on train)\n"
    "and, with synth.with_text=true, a made-up sentence per concept (train.text, valid.text).\n"
    "The [synth] section of the config (default: the embedded default config) sets dim, dtype,\n"
    "train_docs, valid_docs, min_len, max_len, mean_len, latent_dim, persistence, noise, spread,\n"
    "seed, with_text; `lcm config keys` lists them. The same seed gives byte-identical files.\n";

static int cmd_synth(int argc, char **argv) {
    if (argc > 1 && lcm_cli_is_help(argv[1])) return help(synth_usage);
    const char *out = NULL;
    const lcm_cli_opt opts[] = {{"--output", "-o", .value = &out, .required = "the output directory with -o DIR"}};
    const lcm_cli_cmd cmd = {"data synth", 1, 0, NULL, opts, 1};
    lcm_error err = {0};
    static lcm_config cfg;
    const lcm_cli_args *a = lcm_cli_parse(&cmd, argc - 1, argv + 1, &err);
    int rc = a ? lcm_config_load(&cfg, a->config_path, a->n_overrides, a->overrides, &err) : (int)err.code;
    if (rc == 0) {
        progress_line p;
        progress_init(&p, "synth");
        double t0 = lcm_now();
        rc = lcm_synth_write(&cfg.synth, out, progress_cb, &p, &err);
        progress_done(&p);
        if (rc == 0) {
            double dt = lcm_now() - t0;
            char path[LCM_PATH_MAX];
            printf("lcm data synth: wrote %s in %.1f s (seed %llu)\n", out, dt, (unsigned long long)cfg.synth.seed);
            lcm_path_join(path, sizeof path, out, "train.lcmd");
            print_dataset_line(path);
            if (cfg.synth.valid_docs > 0) {
                lcm_path_join(path, sizeof path, out, "valid.lcmd");
                print_dataset_line(path);
            }
            lcm_path_join(path, sizeof path, out, "normalizer.safetensors");
            printf("  %s (fitted on train.lcmd)\n", path);
        }
    }
    return rc == 0 ? 0 : lcm_cli_report(&err);
}

/* ---- import --------------------------------------------------------------------------------------- */

static const char import_usage[] =
    "usage: lcm data import EMB.npy LENGTHS.npy [--offsets] [--eot EOT.npy] [--source-ids IDS.npy]\n"
    "                      [--dtype f32|f16|bf16] -o OUT.lcmd\n\n"
    "EMB.npy       float32 or float16 [N, D]: every concept (sentence embedding), documents back to back\n"
    "LENGTHS.npy   int32/int64 [n_docs]: concepts per document (each >= 1, summing to N), or with\n"
    "              --offsets, [n_docs + 1] offsets into EMB (0, ..., N, strictly increasing)\n"
    "--eot         [D] or [1, D]: the SONAR embedding of \"End of text.\", appended to every document in\n"
    "              training (data.append_eot); without it, train with data.append_eot=false\n"
    "--source-ids  integers [n_docs]: kept with each document (e.g. a row id of the source corpus)\n"
    "--dtype       storage type (default: that of EMB.npy); f16/bf16 halve the file\n"
    "-o            the dataset to write; it appears complete or not at all\n\n"
    "Every input is checked before anything is written. Parquet input: tools/parquet_to_lcmd.py.\n";

static int cmd_import(int argc, char **argv) {
    if (argc > 1 && lcm_cli_is_help(argv[1])) return help(import_usage);
    const char *out = NULL, *eot = NULL, *ids = NULL, *dtype = NULL;
    int offsets = 0;
    const lcm_cli_opt opts[] = {{"--output", "-o", .value = &out, .required = "the output file with -o OUT.lcmd"},
                                {"--eot", .value = &eot}, {"--source-ids", .value = &ids}, {"--dtype", .value = &dtype},
                                {"--offsets", .flag = &offsets}};
    const lcm_cli_cmd cmd = {"data import", 0, 2, "EMB.npy and LENGTHS.npy", opts, 5};
    lcm_error err = {0};
    const lcm_cli_args *a = lcm_cli_parse(&cmd, argc - 1, argv + 1, &err);
    if (!a) return lcm_cli_report(&err);
    lcm_import_spec spec = {a->operands[0], a->operands[1], offsets, eot, ids, 0, out};
    if (dtype && lcm_dtype_parse(dtype, &spec.dtype) != 0 &&
        lcm_cli_usage(&err, cmd.name, "--dtype '%s': use f32, f16 or bf16", dtype))
        return lcm_cli_report(&err);
    lcm_import_result r;
    progress_line p;
    progress_init(&p, "import");
    double t0 = lcm_now();
    int rc = lcm_npy_import(&spec, progress_cb, &p, &r, &err);
    progress_done(&p);
    if (rc != 0) return lcm_cli_report(&err);
    double dt = lcm_now() - t0;
    printf("lcm data import: wrote %s: %llu documents, %llu concepts, dim %d, %s (%.1f MB payload, %.1f s, %.0f MB/s)\n",
           out, (unsigned long long)r.n_docs, (unsigned long long)r.n_concepts, r.dim, lcm_dtype_name(r.dtype),
           (double)r.payload_bytes / 1e6, dt, dt > 0 ? (double)r.payload_bytes / 1e6 / dt : 0.0);
    if (!eot)
        printf("note: no --eot given, so %s has no EOT concept; train on it with data.append_eot=false, or import "
               "again with --eot\n", out);
    return 0;
}

/* ---- inspect -------------------------------------------------------------------------------------- */

static void show_document(const lcm_dataset *ds, uint64_t doc, const lcm_text *text) {
    uint64_t first = ds->doc_offsets[doc], len = lcm_dataset_doc_len(ds, doc);
    printf("document %llu of %llu: %llu concepts (concepts %llu..%llu of the file)", (unsigned long long)doc,
           (unsigned long long)ds->n_docs, (unsigned long long)len, (unsigned long long)first,
           (unsigned long long)(first + len - 1));
    if (ds->source_ids) printf(", source id %llu", (unsigned long long)ds->source_ids[doc]);
    printf("\n%6s  %8s  %s\n", "#", "norm", text ? "sentence" : "(no text side file)");
    float *x = malloc((size_t)ds->dim * sizeof *x);
    if (!x) return;
    for (uint64_t t = 0; t < len; t++) {
        lcm_dataset_read(ds, first + t, 1, x);
        double ss = 0;
        for (int d = 0; d < ds->dim; d++) ss += (double)x[d] * x[d];
        printf("%6llu  %8.4f", (unsigned long long)t, sqrt(ss));
        if (text) {
            size_t n;
            const char *s = lcm_text_get(text, first + t, &n);
            printf("  %.*s", (int)n, s);
        }
        printf("\n");
    }
    free(x);
}

static void print_histogram(const lcm_inspect *r) {
    uint64_t peak = 0;
    int lo = LCM_LEN_BINS, hi = 0;
    for (int b = 0; b < LCM_LEN_BINS; b++)
        if (r->len_hist[b]) {
            peak = r->len_hist[b] > peak ? r->len_hist[b] : peak;
            lo = b < lo ? b : lo;
            hi = b;
        }
    for (int b = lo; b <= hi; b++) {
        char range[48];
        snprintf(range, sizeof range, "[%llu, %llu)", 1ull << b, 1ull << (b + 1));
        int bar = (int)((40 * r->len_hist[b] + peak - 1) / peak);
        printf("  %-14s %-22s %10llu  %.*s\n", b == lo ? "lengths" : "", range, (unsigned long long)r->len_hist[b],
               bar, "########################################");
    }
}

static const char inspect_usage[] =
    "usage: lcm data inspect FILE.lcmd [--show DOC] [--samples N]\n\n"
    "Validates the file and prints its sizes, document-length histogram, NaN/Inf count (every value),\n"
    "L2 norms and per-dimension mean/std (from a uniform sample of N concepts, default 100000; 0 = all),\n"
    "and whether it has an EOT vector, source ids and a text side file (FILE.text).\n"
    "--show DOC prints one document instead: each concept's norm and, with a text file, its sentence.\n";

static int cmd_inspect(int argc, char **argv) {
    if (argc > 1 && lcm_cli_is_help(argv[1])) return help(inspect_usage);
    int show = 0;
    uint64_t doc = 0, max_samples = 100000;
    const lcm_cli_opt opts[] = {{"--show", .flag = &show, .number = &doc}, {"--samples", .number = &max_samples}};
    const lcm_cli_cmd cmd = {"data inspect", 0, 1, "the dataset file", opts, 2};
    lcm_error err = {0};
    const lcm_cli_args *a = lcm_cli_parse(&cmd, argc - 1, argv + 1, &err);
    if (!a) return lcm_cli_report(&err);
    const char *path = a->operands[0];
    lcm_dataset ds;
    if (lcm_dataset_open(&ds, path, &err) != 0) return lcm_cli_report(&err);
    char text_path[LCM_PATH_MAX], text_note[LCM_PATH_MAX + 1100];
    lcm_text text;
    int have_text = 0;
    lcm_text_path_for(path, text_path, sizeof text_path);
    if (!lcm_file_exists(text_path)) {
        snprintf(text_note, sizeof text_note, "absent");
    } else if (lcm_text_open(&text, text_path, ds.n_concepts, &err) != 0) {
        snprintf(text_note, sizeof text_note, "unusable: %s", err.msg);
        lcm_error_clear(&err);
    } else {
        have_text = 1;
        snprintf(text_note, sizeof text_note, "present (%s)", text_path);
    }
    int status = 0;
    if (show) {
        if (doc >= ds.n_docs) {
            fprintf(stderr, "lcm: usage error: lcm data inspect: --show %llu: %s has documents 0..%llu\n",
                    (unsigned long long)doc, path, (unsigned long long)(ds.n_docs - 1));
            status = 2;
        } else {
            show_document(&ds, doc, have_text ? &text : NULL);
        }
    } else {
        lcm_inspect r;
        if (lcm_dataset_inspect(&ds, max_samples, 1, &r, &err) != 0) {
            status = lcm_cli_report(&err);
        } else {
            printf("%s: lcm dataset, format version %u, %.1f MB\n", path, ds.version, (double)ds.map.size / 1e6);
            printf("  %-14s %s\n", "dtype", lcm_dtype_name(ds.dtype));
            printf("  %-14s %d\n", "dim", ds.dim);
            printf("  %-14s %llu\n", "documents", (unsigned long long)ds.n_docs);
            printf("  %-14s %llu (per document: min %llu, mean %.1f, max %llu)\n", "concepts",
                   (unsigned long long)ds.n_concepts, (unsigned long long)r.len_min, r.len_mean,
                   (unsigned long long)r.len_max);
            print_histogram(&r);
            printf("  %-14s %llu NaN, %llu Inf (every value)%s\n", "non-finite", (unsigned long long)r.n_nan,
                   (unsigned long long)r.n_inf,
                   r.n_nan + r.n_inf ? ": the dataset is corrupt; training refuses it" : "");
            printf("  %-14s from %llu concepts%s\n", "statistics", (unsigned long long)r.sampled,
                   r.sampled < ds.n_concepts ? " (uniform sample; --samples 0 for all)" : " (all)");
            printf("  %-14s min %.4g, mean %.4g, max %.4g, std %.3g\n", "L2 norm", r.norm_min, r.norm_mean,
                   r.norm_max, r.norm_std);
            printf("  %-14s min %.3g, max %.3g, mean |.| %.3g\n", "dim means", r.mean_min, r.mean_max,
                   r.mean_abs_mean);
            printf("  %-14s min %.3g, median %.3g, max %.3g\n", "dim stds", r.std_min, r.std_median, r.std_max);
            if (r.eot_norm >= 0) printf("  %-14s present (L2 norm %.4g)\n", "EOT", r.eot_norm);
            else printf("  %-14s absent (train with data.append_eot=false, or import again with --eot)\n", "EOT");
            printf("  %-14s %s\n", "source ids", ds.source_ids ? "present" : "absent");
            printf("  %-14s %s\n", "text", text_note);
            /* A corrupt dataset is a failed inspection: scripts that gate on the exit status must see it. */
            if (r.n_nan + r.n_inf > 0 && lcm_dataset_check_finite(&ds, &err) != 0) status = lcm_cli_report(&err);
        }
    }
    if (have_text) lcm_text_close(&text);
    lcm_dataset_close(&ds);
    return status;
}

/* ---- fit-normalizer --------------------------------------------------------------------------------- */

static const char fit_normalizer_usage[] =
    "usage: lcm data fit-normalizer TRAIN.lcmd [-o OUT.safetensors] [--max-samples N] [--seed N]\n\n"
    "Fits the SONAR normalizer on a training set: center = per-dimension median, scale =\n"
    "per-dimension interquartile range / 1.349 (the reference's robust convention: the standard\n"
    "deviation for Gaussian data), from a uniform sample of N concepts (default 1000000; 0 = all).\n"
    "Writes F32 tensors \"center\" and \"scale\" [D] to OUT (default: normalizer.safetensors beside\n"
    "TRAIN), which model.normalizer = dataset (or its path) uses.\n";

static int cmd_fit_normalizer(int argc, char **argv) {
    if (argc > 1 && lcm_cli_is_help(argv[1])) return help(fit_normalizer_usage);
    const char *out = NULL;
    uint64_t max_samples = 1000000, seed = 0;
    const lcm_cli_opt opts[] = {{"--output", "-o", .value = &out}, {"--max-samples", .number = &max_samples},
                                {"--seed", .number = &seed}};
    const lcm_cli_cmd cmd = {"data fit-normalizer", 0, 1, "the training dataset", opts, 3};
    lcm_error err = {0};
    const lcm_cli_args *a = lcm_cli_parse(&cmd, argc - 1, argv + 1, &err);
    if (!a) return lcm_cli_report(&err);
    const char *train = a->operands[0];
    char path[LCM_PATH_MAX];
    if (out) snprintf(path, sizeof path, "%s", out);
    else lcm_normalizer_path_for(train, path, sizeof path);
    lcm_dataset ds;
    if (lcm_dataset_open(&ds, train, &err) != 0) return lcm_cli_report(&err);
    lcm_normalizer nz;
    double t0 = lcm_now();
    int rc = lcm_normalizer_fit(&nz, &ds, max_samples, seed, &err);
    if (rc == 0) {
        rc = lcm_normalizer_save(&nz, path, &err);
        lcm_normalizer_free(&nz);
    }
    uint64_t used = max_samples == 0 || max_samples > ds.n_concepts ? ds.n_concepts : max_samples;
    if (rc == 0)
        printf("lcm data fit-normalizer: wrote %s (dim %d, from %llu of %llu concepts, %.1f s)\n", path, ds.dim,
               (unsigned long long)used, (unsigned long long)ds.n_concepts, lcm_now() - t0);
    lcm_dataset_close(&ds);
    return rc == 0 ? 0 : lcm_cli_report(&err);
}

/* ---- dispatch ------------------------------------------------------------------------------------- */

int lcm_cmd_data(int argc, char **argv) {
    if (argc < 2) {
        data_usage(stderr);
        return 2;
    }
    if (lcm_cli_is_help(argv[1])) {
        data_usage(stdout);
        return 0;
    }
    const char *sub = argv[1];
    /* The writing commands: Ctrl-C or SIGTERM must not leave their *.tmp.<pid> files behind. */
    if (strcmp(sub, "synth") == 0 || strcmp(sub, "import") == 0 || strcmp(sub, "fit-normalizer") == 0)
        lcm_signals_install();
    if (strcmp(sub, "synth") == 0) return cmd_synth(argc - 1, argv + 1);
    if (strcmp(sub, "import") == 0) return cmd_import(argc - 1, argv + 1);
    if (strcmp(sub, "inspect") == 0) return cmd_inspect(argc - 1, argv + 1);
    if (strcmp(sub, "fit-normalizer") == 0) return cmd_fit_normalizer(argc - 1, argv + 1);
    if (strcmp(sub, "batches") == 0) return lcm_cmd_data_batches(argc - 1, argv + 1);
    fprintf(stderr, "lcm: usage error: unknown subcommand 'lcm data %s'; run `lcm data --help`\n", sub);
    return 2;
}
