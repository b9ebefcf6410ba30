/* cmd_generate.c: `lcm generate`: continue prompts with a trained model (src/gen/generate.c), and
 * `lcm generate --bench`: generation speed with and without the KV cache on random weights.
 *
 * This file resolves what generation needs, each from one place, with one error line when it is wrong:
 * the checkpoint (a checkpoint directory, a run directory's newest checkpoint, or a weights file), the
 * config (the checkpoint's own unless a config file is given; overrides on top), the normalizer (the
 * checkpoint's, else --normalizer, else model.normalizer as in training), the EOT embedding (--eot,
 * else the prompts' dataset, else the training dataset), and the prompts (.lcmd, or .npy as
 * `lcm data import` takes them). The command-line options are all parsed in parse_options. */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lcm/checkpoint.h"
#include "lcm/cli.h"
#include "lcm/generate.h"
#include "lcm/half.h"
#include "lcm/log.h"
#include "lcm/npy.h"
#include "lcm/philox.h"
#include "lcm/train.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lcm generate <checkpoint-dir | run-dir | weights.safetensors> --prompts FILE -o OUT.lcmd\n"
            "                    [options] [config.ini] [key=value ...]\n"
            "       lcm generate --bench [config.ini] [key=value ...] [--prompt-len K]\n\n"
            "Continues every prompt with the model: each step predicts the next concept, adds noise of std\n"
            "generate.temperature (normalized space; 0 = none), and stops a prompt at the end-of-text embedding\n"
            "(cosine >= generate.eos_threshold), at a repetition (generate.repetition_threshold), or after\n"
            "generate.max_gen_len concepts. Settings: the [generate] keys (lcm config keys). A run directory\n"
            "means its newest checkpoint; the model config comes from the checkpoint unless a config is given.\n\n"
            "options:\n"
            "  --prompts FILE      prompts: a .lcmd (one prompt per document) or a .npy of embeddings [N, D]\n"
            "                      with --lengths\n"
            "  --lengths L.npy     .npy prompts: concepts per prompt ([n]), or offsets ([n + 1]) with --offsets\n"
            "  --offsets           --lengths holds offsets\n"
            "  --prompt-len K      use the first K concepts of each prompt\n"
            "  -o OUT.lcmd         one document per prompt: its continuation (f32)\n"
            "  --with-prompt       each output document starts with its prompt\n"
            "  --trim              leave out the end-of-text concept that stopped a prompt (kept when it is a\n"
            "                      document's only concept: a .lcmd has no empty documents)\n"
            "  --npy OUT.npy       also write the output as OUT.npy [N, D] f32 and OUT.lengths.npy (int64)\n"
            "  --eot FILE.npy      the end-of-text embedding [D] (default: the prompts' dataset, else the\n"
            "                      training dataset's); --eot none: no end-of-text stop\n"
            "  --normalizer P      the normalizer when the checkpoint has none: a .safetensors or none\n"
            "  --no-kv-cache       recompute the whole prefix each step (slow; for comparison)\n"
            "  --score             with .lcmd prompts cut by --prompt-len: l2 and cosine (raw space) of each\n"
            "                      generated position against the document's true continuation, and of the\n"
            "                      predict-the-mean baseline (the mean of those true concepts)\n"
            "  --bench             time generation on random weights and prompts of the config's model, with\n"
            "                      and without the KV cache (generated concepts/s, time per step by position)\n"
            "Devices: trainer.devices (prompts are split over them in batches of generate.batch_size).\n"
            "Docs: docs/generation.md (SONAR text <-> embeddings, every option).\n");
}

/* ---- options ------------------------------------------------------------------------------------- */

typedef struct gen_cli {
    const char *model;         /* checkpoint dir, run dir or weights file */
    const char *prompts, *lengths, *out, *npy, *eot, *normalizer;
    int offsets, with_prompt, trim, no_cache, bench, score, prompt_len_given;
    uint64_t prompt_len;       /* 0 = whole prompts */
    const lcm_cli_args *a;     /* config file, overrides, the checkpoint operand */
} gen_cli;

static int parse_options(int argc, char **argv, gen_cli *c, lcm_error *err) {
    memset(c, 0, sizeof *c);
    const lcm_cli_opt opts[] = {
        {"--prompts", .value = &c->prompts},  {"--lengths", .value = &c->lengths},
        {"--output", "-o", .value = &c->out}, {"--npy", .value = &c->npy},
        {"--eot", .value = &c->eot},          {"--normalizer", .value = &c->normalizer},
        {"--prompt-len", .number = &c->prompt_len, .max = 1048576, .flag = &c->prompt_len_given},
        {"--offsets", .flag = &c->offsets},   {"--with-prompt", .flag = &c->with_prompt},
        {"--trim", .flag = &c->trim},         {"--no-kv-cache", .flag = &c->no_cache},
        {"--bench", .flag = &c->bench},       {"--score", .flag = &c->score},
    };
    const lcm_cli_cmd cmd = {"generate", 1, 1, NULL, opts, (int)(sizeof opts / sizeof opts[0])};
    c->a = lcm_cli_parse(&cmd, argc - 1, argv + 1, err);
    if (!c->a) return err->code;
    if (c->prompt_len_given && c->prompt_len == 0)
        return lcm_cli_usage(err, "generate", "--prompt-len must be a whole number of concepts >= 1");
    if (c->bench) {
        if (c->a->n_operands > 0)
            return lcm_cli_usage(err, "generate", "--bench runs on random weights of the config's model and takes no "
                                 "checkpoint ('%s')", c->a->operands[0]);
        return 0;
    }
    if (c->a->n_operands != 1)
        return lcm_cli_usage(err, "generate", "give one checkpoint, run directory or weights file");
    c->model = c->a->operands[0];
    if (!c->prompts) return lcm_fail(err, LCM_ERR_USAGE, "give the prompts with --prompts FILE (.lcmd or .npy)");
    if (!c->out && !c->npy) return lcm_fail(err, LCM_ERR_USAGE, "give the output with -o OUT.lcmd (and/or --npy OUT.npy)");
    size_t pl = strlen(c->prompts);
    int is_npy = pl > 4 && strcmp(c->prompts + pl - 4, ".npy") == 0;
    if (is_npy && !c->lengths)
        return lcm_fail(err, LCM_ERR_USAGE, "--prompts %s is a .npy: give the prompt lengths with --lengths L.npy", c->prompts);
    if (!is_npy && c->lengths)
        return lcm_fail(err, LCM_ERR_USAGE, "--lengths goes with .npy prompts; %s is read as a .lcmd", c->prompts);
    if (c->score && (is_npy || c->prompt_len == 0))
        return lcm_fail(err, LCM_ERR_USAGE, "--score compares with the rest of each document: give .lcmd prompts cut "
                        "with --prompt-len K");
    if (c->npy && (strlen(c->npy) < 5 || strcmp(c->npy + strlen(c->npy) - 4, ".npy") != 0))
        return lcm_fail(err, LCM_ERR_USAGE, "--npy '%s': the name must end in .npy", c->npy);
    return 0;
}

/* ---- the model ------------------------------------------------------------------------------------ */

/* Where training read its data: data.train, or the synthesized <output_dir>/data/train.lcmd. */
static void training_data(const lcm_config *cfg, char *out, size_t cap) {
    if (cfg->data.train[0])
        snprintf(out, cap, "%s", cfg->data.train);
    else
        snprintf(out, cap, "%s/data/train.lcmd", cfg->trainer.output_dir);
}

static int same_normalizer(const lcm_normalizer *a, const lcm_normalizer *b) {
    if (a->dim != b->dim) return 0;
    for (int k = 0; k < a->dim; k++)
        if (a->center[k] != b->center[k] || a->scale[k] != b->scale[k]) return 0;
    return 1;
}

/* The checkpoint's normalizer is part of the model; a --normalizer that differs from it is refused
 * rather than silently ignored. Without one in the checkpoint: --normalizer, else model.normalizer. */
static int resolve_normalizer(lcm_normalizer *norm, const gen_cli *c, const lcm_config *cfg, const char *weights, int D,
                              lcm_error *err) {
    lcm_normalizer flag = {0};
    if (c->normalizer) {
        if (strcmp(c->normalizer, "none") == 0)
            LCM_TRY(lcm_normalizer_identity(&flag, D, err));
        else
            LCM_TRY(lcm_normalizer_load(&flag, c->normalizer, D, err));
    }
    if (norm->dim > 0) {
        int same = !c->normalizer || same_normalizer(norm, &flag);
        lcm_normalizer_free(&flag);
        if (!same)
            return lcm_fail(err, LCM_ERR_CONFIG, "--normalizer %s differs from the normalizer stored in %s, which the model "
                            "was trained with; leave --normalizer out", c->normalizer, weights);
        return 0;
    }
    if (c->normalizer) {
        *norm = flag;
        return 0;
    }
    const char *spec = cfg->model.normalizer;
    if (strcmp(spec, "none") == 0) return lcm_normalizer_identity(norm, D, err);
    char path[LCM_PATH_MAX + 64];
    if (strcmp(spec, "dataset") == 0) {
        char train[LCM_PATH_MAX + 16];
        training_data(cfg, train, sizeof train);
        lcm_normalizer_path_for(train, path, sizeof path);
    } else {
        snprintf(path, sizeof path, "%s", spec);
    }
    if (!lcm_file_exists(path))
        return lcm_fail(err, LCM_ERR_CONFIG, "%s carries no normalizer and model.normalizer's file %s does not exist; "
                        "give it with --normalizer FILE.safetensors", weights, path);
    return lcm_normalizer_load(norm, path, D, err);
}

/* ---- prompts and EOT ------------------------------------------------------------------------------ */

typedef struct prompt_set {
    lcm_dataset ds;
    int have_ds;
    float *data;
    uint64_t *offsets;
    lcm_gen_prompts p;
} prompt_set;

static void prompt_set_free(prompt_set *s) {
    if (s->have_ds) lcm_dataset_close(&s->ds);
    free(s->data);
    free(s->offsets);
}

/* .npy prompts go through `lcm data import`'s checks into a temporary .lcmd, then are read as one. */
static int load_prompts(prompt_set *s, const gen_cli *c, lcm_error *err) {
    memset(s, 0, sizeof *s);
    const char *path = c->prompts;
    char tmp[LCM_PATH_MAX];
    tmp[0] = '\0';
    if (!lcm_file_exists(path)) return lcm_fail(err, LCM_ERR_IO, "--prompts '%s' does not exist", path);
    if (c->lengths) {
        const char *dir = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/lcm-generate-prompts-%ld.lcmd", dir && dir[0] ? dir : "/tmp", (long)getpid());
        lcm_import_spec spec = {.embeddings = path, .lengths = c->lengths, .lengths_are_offsets = c->offsets,
                                .dtype = LCM_F32, .output = tmp};
        lcm_import_result r;
        LCM_TRY(lcm_npy_import(&spec, NULL, NULL, &r, err));
        path = tmp;
    }
    int rc = lcm_dataset_open(&s->ds, path, err);
    if (tmp[0]) unlink(tmp); /* the mapping stays valid */
    if (rc) return rc;
    s->have_ds = 1;
    const uint64_t n = s->ds.n_docs;
    const int D = s->ds.dim;
    s->offsets = malloc((n + 1) * sizeof *s->offsets);
    if (!s->offsets) return lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for %" PRIu64 " prompts", n);
    s->offsets[0] = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len = lcm_dataset_doc_len(&s->ds, i);
        if (c->prompt_len > 0 && len > (uint64_t)c->prompt_len) len = (uint64_t)c->prompt_len;
        s->offsets[i + 1] = s->offsets[i] + len;
    }
    s->data = malloc((s->offsets[n] ? s->offsets[n] : 1) * (size_t)D * sizeof(float));
    if (!s->data) return lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for the prompts");
    for (uint64_t i = 0; i < n; i++)
        lcm_dataset_read(&s->ds, s->ds.doc_offsets[i], s->offsets[i + 1] - s->offsets[i],
                         s->data + s->offsets[i] * (size_t)D);
    s->p = (lcm_gen_prompts){.n = (int64_t)n, .D = D, .data = s->data, .offsets = s->offsets};
    return 0;
}

/* The EOT embedding into eot[D]; *have = 0 for --eot none. */
static int resolve_eot(float *eot, int *have, const gen_cli *c, const prompt_set *s, const lcm_config *cfg, int D,
                       lcm_error *err) {
    *have = 1;
    if (c->eot && strcmp(c->eot, "none") == 0) {
        *have = 0;
        return 0;
    }
    if (c->eot) {
        lcm_npy a;
        LCM_TRY(lcm_npy_open(&a, c->eot, err));
        int rc = 0;
        if (a.numel != (uint64_t)D || lcm_npy_is_int(&a))
            rc = lcm_fail(err, LCM_ERR_DATA, "--eot %s must hold %d floats (the model's concept size), not %" PRIu64 " %s",
                          c->eot, D, a.numel, a.descr);
        for (int k = 0; !rc && k < D; k++) {
            if (a.type == LCM_NPY_F32) {
                memcpy(&eot[k], a.data + (size_t)k * 4, 4);
            } else {
                uint16_t h;
                memcpy(&h, a.data + (size_t)k * 2, 2);
                eot[k] = lcm_f16_to_f32(h);
            }
            if (!isfinite(eot[k])) rc = lcm_fail(err, LCM_ERR_DATA, "--eot %s holds a NaN or Inf", c->eot);
        }
        lcm_npy_close(&a);
        return rc;
    }
    if (s->ds.eot) {
        memcpy(eot, s->ds.eot, (size_t)D * sizeof(float));
        return 0;
    }
    char train[LCM_PATH_MAX + 16];
    training_data(cfg, train, sizeof train);
    if (lcm_file_exists(train)) {
        lcm_dataset ds;
        LCM_TRY(lcm_dataset_open(&ds, train, err));
        int ok = ds.eot && ds.dim == D;
        if (ok) memcpy(eot, ds.eot, (size_t)D * sizeof(float));
        lcm_dataset_close(&ds);
        if (ok) {
            lcm_info("end-of-text embedding from the training data %s", train);
            return 0;
        }
    }
    return lcm_fail(err, LCM_ERR_CONFIG, "no end-of-text embedding: neither %s nor the training data %s carries one; give "
                    "it with --eot EOT.npy (the SONAR embedding of \"End of text.\"), or --eot none to stop on length only",
                    c->prompts, train);
}

/* ---- output --------------------------------------------------------------------------------------- */

/* A .npy of a little-endian array: descr "<f4" or "<i8", shape (rows, cols) or (rows,) when cols = 0. */
static int npy_write(const char *path, const char *descr, uint64_t rows, int cols, const void *data, size_t bytes,
                     lcm_error *err) {
    char header[128];
    int n = cols > 0 ? snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (%" PRIu64 ", %d), }",
                                descr, rows, cols)
                     : snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (%" PRIu64 ",), }",
                                descr, rows);
    int total = 10 + n + 1, pad = (64 - total % 64) % 64;
    char pre[10 + 128 + 64];
    memcpy(pre, "\x93NUMPY\x01\x00", 8);
    uint16_t hlen = (uint16_t)(n + pad + 1);
    memcpy(pre + 8, &hlen, 2);
    memcpy(pre + 10, header, (size_t)n);
    memset(pre + 10 + n, ' ', (size_t)pad);
    pre[10 + n + pad] = '\n';
    lcm_afile af;
    LCM_TRY(lcm_afile_open(&af, path, err));
    int rc = lcm_afile_write(&af, pre, (size_t)(total + pad), err);
    if (!rc && bytes) rc = lcm_afile_write(&af, data, bytes, err);
    if (!rc) return lcm_afile_commit(&af, err);
    lcm_afile_abort(&af);
    return rc;
}

/* The output documents: [prompt +] continuation, minus the EOT concept that stopped it with --trim,
 * except where that would leave a document empty (the .lcmd format has none). */
static uint64_t out_len(const gen_cli *c, const prompt_set *s, const lcm_gen_result *r, int64_t i) {
    uint64_t n = (uint64_t)r[i].len;
    if (c->trim && r[i].reason == LCM_STOP_EOT && (c->with_prompt || n > 1)) n--;
    if (c->with_prompt) n += s->offsets[i + 1] - s->offsets[i];
    return n;
}

static const float *out_concept(const gen_cli *c, const prompt_set *s, const lcm_gen_result *r, int64_t i, uint64_t j) {
    const int D = s->p.D;
    const uint64_t plen = s->offsets[i + 1] - s->offsets[i];
    if (c->with_prompt) {
        if (j < plen) return s->data + (s->offsets[i] + j) * (size_t)D;
        j -= plen;
    }
    return r[i].concepts + j * (size_t)D;
}

static int write_outputs(const gen_cli *c, const prompt_set *s, const lcm_gen_result *r, const float *eot,
                         lcm_error *err) {
    const int D = s->p.D;
    const int64_t n = s->p.n;
    uint64_t total = 0, longest = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t len = out_len(c, s, r, i);
        total += len;
        if (len > longest) longest = len;
    }
    float *doc = malloc((longest ? longest : 1) * (size_t)D * sizeof(float));
    if (!doc) return lcm_fail(err, LCM_ERR_NOMEM, "out of host memory");
    int rc = 0;
    if (c->out) {
        lcm_dataset_writer *w = NULL;
        rc = lcm_dataset_writer_open(&w, c->out, LCM_F32, D, err);
        for (int64_t i = 0; !rc && i < n; i++) {
            uint64_t len = out_len(c, s, r, i);
            for (uint64_t j = 0; j < len; j++) memcpy(doc + j * D, out_concept(c, s, r, i, j), (size_t)D * sizeof(float));
            rc = lcm_dataset_writer_add(w, doc, len, err);
        }
        if (!rc && eot) rc = lcm_dataset_writer_set_eot(w, eot, err);
        if (!rc) rc = lcm_dataset_writer_commit(w, err);
        else if (w) lcm_dataset_writer_abort(w);
    }
    free(doc);
    if (!rc && c->npy) {
        float *all = malloc((total ? total : 1) * (size_t)D * sizeof(float));
        int64_t *lens = malloc((size_t)(n ? n : 1) * sizeof *lens);
        if (!all || !lens) rc = lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for --npy");
        uint64_t at = 0;
        for (int64_t i = 0; !rc && i < n; i++) {
            lens[i] = (int64_t)out_len(c, s, r, i);
            for (uint64_t j = 0; j < (uint64_t)lens[i]; j++, at++)
                memcpy(all + at * D, out_concept(c, s, r, i, j), (size_t)D * sizeof(float));
        }
        char lpath[LCM_PATH_MAX + 16];
        snprintf(lpath, sizeof lpath, "%.*s.lengths.npy", (int)(strlen(c->npy) - 4), c->npy);
        if (!rc) rc = npy_write(c->npy, "<f4", total, D, all, total * (size_t)D * sizeof(float), err);
        if (!rc) rc = npy_write(lpath, "<i8", (uint64_t)n, 0, lens, (size_t)n * sizeof *lens, err);
        free(all);
        free(lens);
    }
    return rc;
}

/* ---- --score ------------------------------------------------------------------------------------ */

static void print_score(const prompt_set *s, const lcm_gen_result *r, long K, lcm_error *err) {
    lcm_gen_score sc;
    if (lcm_gen_score_compute(&sc, &s->ds, K, r, s->p.n, err) != 0) {
        fprintf(stderr, "  (no score: %s)\n", err->msg);
        return;
    }
    fprintf(stderr, "  score against the true continuation (raw space; mean = the mean true concept):\n"
                    "  %-9s %8s %10s %10s %10s %10s\n", "position", "pairs", "l2", "l2 mean", "cos", "cos mean");
    double tot[5] = {0};
    for (int b = 0; b <= LCM_GEN_SCORE_POSITIONS; b++) {
        const double n = sc.pairs[b];
        if (n == 0) continue;
        char label[16];
        snprintf(label, sizeof label, b < LCM_GEN_SCORE_POSITIONS ? "%d" : ">%d",
                 b < LCM_GEN_SCORE_POSITIONS ? b + 1 : LCM_GEN_SCORE_POSITIONS);
        fprintf(stderr, "  %-9s %8.0f %10.5f %10.5f %10.4f %10.4f\n", label, n, sc.l2[b][0] / n, sc.l2[b][1] / n,
                sc.cos[b][0] / n, sc.cos[b][1] / n);
        tot[0] += n, tot[1] += sc.l2[b][0], tot[2] += sc.l2[b][1], tot[3] += sc.cos[b][0], tot[4] += sc.cos[b][1];
    }
    if (tot[0] > 0)
        fprintf(stderr, "  %-9s %8.0f %10.5f %10.5f %10.4f %10.4f\n", "all", tot[0], tot[1] / tot[0], tot[2] / tot[0],
                tot[3] / tot[0], tot[4] / tot[0]);
    else
        fprintf(stderr, "  (no document continues past --prompt-len %ld)\n", K);
}

/* ---- generate --------------------------------------------------------------------------------------- */

static int generate(const gen_cli *c, lcm_error *err) {
    static lcm_config cfg;
    char weights[LCM_PATH_MAX + 64];
    LCM_TRY(lcm_cli_resolve_weights(c->model, weights, sizeof weights, err));
    if (c->a->config_path)
        LCM_TRY(lcm_config_load(&cfg, c->a->config_path, c->a->n_overrides, c->a->overrides, err));
    else
        LCM_TRY(lcm_cli_load_stored_config(&cfg, weights, c->a, err));
    lcm_dims d;
    LCM_TRY(lcm_dims_from_config(&d, &cfg.model, err));
    lcm_param_table t;
    LCM_TRY(lcm_param_table_build(&t, &d, err));
    float *w = malloc(t.total * sizeof(float));
    lcm_normalizer norm = {0};
    prompt_set ps;
    memset(&ps, 0, sizeof ps);
    lcm_gen_result *res = NULL;
    float *eot = malloc((size_t)d.D * sizeof(float));
    int have_eot = 0, rc = 0;
    if (!w || !eot) rc = lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for the weights");
    if (!rc) rc = lcm_weights_load(weights, &t, w, &norm, err);
    if (!rc) rc = resolve_normalizer(&norm, c, &cfg, weights, d.D, err);
    if (!rc) rc = load_prompts(&ps, c, err);
    if (!rc && ps.p.D != d.D)
        rc = lcm_fail(err, LCM_ERR_DATA, "%s holds %d-dimensional concepts but the model's (model.sonar_dim) are %d",
                      c->prompts, ps.p.D, d.D);
    if (!rc) rc = resolve_eot(eot, &have_eot, c, &ps, &cfg, d.D, err);
    lcm_gen_options o;
    lcm_gen_options_from_config(&o, &cfg.generate);
    o.use_cache = !c->no_cache;
    if (!rc) {
        res = calloc((size_t)ps.p.n + 1, sizeof *res);
        if (!res) rc = lcm_fail(err, LCM_ERR_NOMEM, "out of host memory");
    }
    double t0 = lcm_now();
    if (!rc)
        rc = lcm_generate_all(cfg.trainer.devices, cfg.trainer.cpu_threads, &d, w, &norm, have_eot ? eot : NULL, &o,
                              &ps.p, res, err);
    double secs = lcm_now() - t0;
    if (!rc) rc = write_outputs(c, &ps, res, have_eot ? eot : NULL, err);
    if (!rc) {
        int64_t reasons[LCM_STOP_COUNT] = {0}, total = 0;
        int shortest = INT32_MAX, longest = 0;
        for (int64_t i = 0; i < ps.p.n; i++) {
            reasons[res[i].reason]++;
            total += res[i].len;
            if (res[i].len < shortest) shortest = res[i].len;
            if (res[i].len > longest) longest = res[i].len;
        }
        fprintf(stderr, "lcm generate: %" PRId64 " prompts, %" PRId64 " concepts generated (per prompt: mean %.1f, min %d, "
                "max %d) in %.2fs (%.0f concepts/s)\n", ps.p.n, total, (double)total / (double)ps.p.n, shortest, longest,
                secs, total / (secs > 0 ? secs : 1e-9));
        fprintf(stderr, "  stopped by:");
        for (int r = 0; r < LCM_STOP_COUNT; r++)
            fprintf(stderr, " %s %" PRId64 "%s", lcm_stop_reason_name((lcm_stop_reason)r), reasons[r],
                    r + 1 < LCM_STOP_COUNT ? "," : "\n");
        if (c->out) fprintf(stderr, "  wrote %s%s\n", c->out, c->with_prompt ? " (prompt + continuation)" : " (continuations)");
        if (c->npy) fprintf(stderr, "  wrote %s and its .lengths.npy\n", c->npy);
        if (c->score) print_score(&ps, res, c->prompt_len, err);
    }
    if (res) lcm_gen_results_free(res, ps.p.n);
    free(res);
    prompt_set_free(&ps);
    lcm_normalizer_free(&norm);
    lcm_param_table_free(&t);
    free(w);
    free(eot);
    return rc;
}

/* ---- bench ---------------------------------------------------------------------------------------- */

/* One device's generator on random weights: prefill, then max_gen_len steps per batch, timing each
 * forward by the position it feeds. */
static int bench_once(const lcm_config *cfg, const lcm_dims *d, const float *w, const lcm_normalizer *norm,
                      const lcm_gen_prompts *p, int use_cache, double *step_s, double *total_s, int64_t *generated,
                      lcm_error *err) {
    lcm_device dev[LCM_MAX_DEVICES];
    int n = 0;
    LCM_TRY(lcm_resolve_devices(cfg->trainer.devices, dev, &n, err));
    lcm_backend *be = NULL;
    if (dev[0].is_gpu)
        LCM_TRY(lcm_cuda_backend_create(&be, dev[0].index, err));
    else
        LCM_TRY(lcm_cpu_backend_create(&be, 0, err));
    if (!dev[0].is_gpu) lcm_cpu_set_blas_threads(cfg->trainer.cpu_threads > 0 ? cfg->trainer.cpu_threads : lcm_cpu_count());
    lcm_gen_options o;
    lcm_gen_options_from_config(&o, &cfg->generate);
    o.use_cache = use_cache;
    o.batch_size = (int)p->n;
    lcm_generator g;
    int max_prompt = 0;
    int rc = lcm_gen_check_prompts(p, d, &o, &max_prompt, err);
    if (!rc) rc = lcm_generator_init(&g, be, d, w, norm, NULL, &o, max_prompt, err);
    lcm_gen_result *res = calloc((size_t)p->n, sizeof *res);
    if (!rc && !res) rc = lcm_fail(err, LCM_ERR_NOMEM, "out of host memory");
    if (!rc) {
        g.step_s = step_s;
        double t0 = lcm_now();
        rc = lcm_generate_batch(&g, p, 0, (int)p->n, res, err);
        *total_s = lcm_now() - t0;
        *generated = 0;
        for (int64_t i = 0; !rc && i < p->n; i++) *generated += res[i].len;
        lcm_generator_free(&g);
    }
    if (res) lcm_gen_results_free(res, p->n);
    free(res);
    lcm_backend_destroy(be);
    return rc;
}

static int bench(const gen_cli *c, lcm_error *err) {
    static lcm_config cfg;
    LCM_TRY(lcm_config_load(&cfg, c->a->config_path, c->a->n_overrides, c->a->overrides, err));
    lcm_dims d;
    LCM_TRY(lcm_dims_from_config(&d, &cfg.model, err));
    lcm_param_table t;
    LCM_TRY(lcm_param_table_build(&t, &d, err));
    const int B = cfg.generate.batch_size, P = c->prompt_len > 0 ? (int)c->prompt_len : 16;
    float *w = malloc(t.total * sizeof(float));
    float *x = malloc((size_t)B * P * d.D * sizeof(float));
    uint64_t *off = malloc(((size_t)B + 1) * sizeof *off);
    const int T = P + cfg.generate.max_gen_len;
    double *steps[2] = {calloc((size_t)T, sizeof(double)), calloc((size_t)T, sizeof(double))};
    lcm_normalizer norm = {0};
    int rc = (!w || !x || !off || !steps[0] || !steps[1]) ? lcm_fail(err, LCM_ERR_NOMEM, "out of host memory") : 0;
    if (!rc) rc = lcm_normalizer_identity(&norm, d.D, err);
    if (!rc) {
        lcm_params_init(&t, w, cfg.trainer.seed);
        lcm_rng r;
        lcm_rng_init(&r, cfg.trainer.seed, 1);
        for (size_t k = 0; k < (size_t)B * P * d.D; k++) x[k] = 2.0f * lcm_rng_uniform(&r) - 1.0f;
        for (int b = 0; b <= B; b++) off[b] = (uint64_t)b * P;
    }
    lcm_gen_prompts p = {.n = B, .D = d.D, .data = x, .offsets = off};
    double secs[2] = {0, 0};
    int64_t gen[2] = {0, 0};
    for (int k = 0; !rc && k < 2; k++) rc = bench_once(&cfg, &d, w, &norm, &p, 1 - k, steps[k], &secs[k], &gen[k], err);
    if (!rc) {
        printf("lcm generate --bench: model D %d C %d L %d H %d F %d (%zu parameters), %d prompts of %d concepts, %d "
               "generated each, devices %s\n",
               d.D, d.C, d.L, d.H, d.F, t.count, B, P, cfg.generate.max_gen_len, cfg.trainer.devices);
        for (int k = 0; k < 2; k++)
            printf("  %-12s %8.1f generated concepts/s  (%.3f s for %" PRId64 " concepts, prefill included)\n",
                   k == 0 ? "KV cache" : "no KV cache", gen[k] / secs[k], secs[k], gen[k]);
        printf("  mean time per step (ms) over positions fed:\n  %-13s %12s %12s\n", "positions", "KV cache", "no KV cache");
        const int last = P + cfg.generate.max_gen_len - 2 < d.max_seq_len - 2 ? P + cfg.generate.max_gen_len - 2 : d.max_seq_len - 2;
        const int bins = 8, width = (last - P + 1 + bins - 1) / bins > 0 ? (last - P + 1 + bins - 1) / bins : 1;
        for (int lo = P; lo <= last; lo += width) {
            int hi = lo + width - 1 < last ? lo + width - 1 : last;
            double sum[2] = {0, 0};
            for (int pos = lo; pos <= hi; pos++) sum[0] += steps[0][pos], sum[1] += steps[1][pos];
            char range[32];
            snprintf(range, sizeof range, "%d-%d", lo, hi);
            printf("  %-13s %12.3f %12.3f\n", range, 1e3 * sum[0] / (hi - lo + 1), 1e3 * sum[1] / (hi - lo + 1));
        }
    }
    lcm_normalizer_free(&norm);
    lcm_param_table_free(&t);
    free(w);
    free(x);
    free(off);
    free(steps[0]);
    free(steps[1]);
    return rc;
}

int lcm_cmd_generate(int argc, char **argv) {
    if (argc < 2 || lcm_cli_is_help(argv[1])) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    lcm_error err = {0};
    gen_cli c;
    int rc = parse_options(argc, argv, &c, &err);
    if (!rc) rc = c.bench ? bench(&c, &err) : generate(&c, &err);
    return rc ? lcm_cli_report(&err) : 0;
}
