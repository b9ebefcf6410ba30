/* test_config.c: the configuration module: schema, defaults, files with bases, overrides, error
 * messages (file and line, suggestions), iniparser's known defects, write/load round trip, the
 * built-in conf/ files and the cross-key rules. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "lcm/config.h"
#include "lcm/fileio.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

static char test_dir[512];

static void new_dir(void) { snprintf(test_dir, sizeof test_dir, "%s", harness_tmpdir()); }

/* Write test_dir/name (its directory too) and return its path (valid until the 8th next call). */
static const char *put(const char *name, const char *text) {
    static char paths[8][1024];
    static int next;
    char *path = paths[next++ % 8];
    snprintf(path, 1024, "%s/%s", test_dir, name);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    mkdir(path, 0755);
    *slash = '/';
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
    return path;
}

static const char *origin_of(const lcm_config *cfg, const char *section, const char *name) {
    return cfg->origin[lcm_config_find_key(section, name) - lcm_keys];
}

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), k = strlen(tail);
    return n >= k && strcmp(s + n - k, tail) == 0;
}

/* The field of key k, as raw bytes. */
static const void *field_of(const lcm_config *cfg, const lcm_key *k) { return (const char *)cfg + k->offset; }

static lcm_config cfg, cfg2; /* large: static rather than on every test's stack */
static lcm_error err;

/* ---- the schema ------------------------------------------------------------------------------- */

TEST(schema_has_one_key_per_field) {
    /* lcm_config has 77 configurable fields: base, model 12, data 10, synth 13, trainer 21, optim 10,
     * bench 3, generate 7 (count them in include/lcm/config.h). */
    CHECKF(lcm_num_keys == 77, "%d keys", lcm_num_keys);
    struct { const char *name; size_t begin, size; } sections[] = {
        {"config", offsetof(lcm_config, base), sizeof cfg.base},
        {"model", offsetof(lcm_config, model), sizeof cfg.model},
        {"data", offsetof(lcm_config, data), sizeof cfg.data},
        {"synth", offsetof(lcm_config, synth), sizeof cfg.synth},
        {"trainer", offsetof(lcm_config, trainer), sizeof cfg.trainer},
        {"optim", offsetof(lcm_config, optim), sizeof cfg.optim},
        {"bench", offsetof(lcm_config, bench), sizeof cfg.bench},
        {"generate", offsetof(lcm_config, generate), sizeof cfg.generate},
    };
    for (int i = 0; i < lcm_num_keys; i++) {
        const lcm_key *k = &lcm_keys[i];
        int inside = 0;
        for (size_t s = 0; s < sizeof sections / sizeof sections[0]; s++)
            if (strcmp(sections[s].name, k->section) == 0)
                inside = k->offset >= sections[s].begin && k->offset + (size_t)k->width <= sections[s].begin + sections[s].size;
        CHECKF(inside, "%s.%s lies outside its section's struct", k->section, k->name);
        for (int j = 0; j < i; j++) {
            const lcm_key *o = &lcm_keys[j];
            CHECKF(k->offset + (size_t)k->width <= o->offset || o->offset + (size_t)o->width <= k->offset,
                   "%s.%s overlaps %s.%s", k->section, k->name, o->section, o->name);
            CHECKF(strcmp(k->section, o->section) || strcmp(k->name, o->name), "%s.%s twice", k->section, k->name);
        }
        switch (k->type) {
        case LCM_KEY_INT: CHECKF(k->width == 4 || k->width == 8, "%s.%s width %d", k->section, k->name, k->width); break;
        case LCM_KEY_FLOAT:
        case LCM_KEY_BOOL: CHECKF(k->width == 4, "%s.%s width %d", k->section, k->name, k->width); break;
        case LCM_KEY_ENUM: CHECKF(k->choices && strstr(k->choices, k->def), "%s.%s: default not a choice", k->section, k->name); break;
        case LCM_KEY_STRING: CHECKF(k->width >= 8, "%s.%s width %d", k->section, k->name, k->width); break;
        }
        CHECKF(k->doc && k->doc[0], "%s.%s has no doc", k->section, k->name);
        CHECK(lcm_config_find_key(k->section, k->name) == k);
    }
    CHECK(lcm_config_find_key("model", "nope") == NULL);
    CHECK(lcm_config_find_key("nope", "num_heads") == NULL);
}

TEST(every_default_parses_as_its_own_value) {
    for (int i = 0; i < lcm_num_keys; i++) {
        const lcm_key *k = &lcm_keys[i];
        if (strcmp(k->section, "config") == 0) continue; /* config.base is not settable on the command line */
        char assignment[256];
        snprintf(assignment, sizeof assignment, "%s.%s=%s", k->section, k->name, k->def);
        lcm_error_clear(&err);
        CHECK_OK(lcm_config_set(&cfg, assignment, "test", &err), &err);
    }
}

TEST(defaults_are_the_reference_recipe) {
    lcm_config_defaults(&cfg);
    /* base_lcm_1_6B + pretrain/mse, from docs/model.md */
    CHECK(cfg.model.sonar_dim == 1024 && cfg.model.model_dim == 2048 && cfg.model.num_layers == 32);
    CHECK(cfg.model.num_heads == 16 && cfg.model.ffn_inner_dim == 0 && cfg.model.ffn_multiple_of == 256);
    CHECK(cfg.model.max_seq_len == 4096 && cfg.model.dropout == 0.1f && cfg.model.rope_theta == 10000.0f);
    CHECK(cfg.model.norm_eps == 1e-5f && strcmp(cfg.model.normalizer, "dataset") == 0);
    CHECK(cfg.data.train[0] == 0 && cfg.data.valid[0] == 0 && cfg.data.max_seq_len == 128 && cfg.data.max_tokens == 7168);
    CHECK(cfg.data.bucket_factor == 4 && cfg.data.shuffle == 1 && cfg.data.append_eot == 1);
    CHECK(cfg.data.synthesize == 0 && cfg.data.check_finite == 1);
    CHECK(cfg.synth.dim == 1024 && cfg.synth.dtype == LCM_F16 && cfg.synth.train_docs == 2000);
    CHECK(cfg.synth.valid_docs == 100 && cfg.synth.min_len == 4 && cfg.synth.max_len == 300 && cfg.synth.mean_len == 30.0f);
    CHECK(cfg.synth.latent_dim == 32 && cfg.synth.persistence == 0.9f && cfg.synth.noise == 0.3f);
    CHECK(cfg.synth.spread == 0.006f && cfg.synth.seed == 1 && cfg.synth.with_text == 0);
    CHECK(strcmp(cfg.trainer.devices, "auto") == 0 && strcmp(cfg.trainer.output_dir, "runs/lcm") == 0);
    CHECK(cfg.trainer.max_steps == 250000 && cfg.trainer.grad_accum == 1 && cfg.trainer.seed == 1);
    CHECK(cfg.trainer.log_every == 10 && cfg.trainer.validate_every == 10000 && cfg.trainer.validate_max_batches == 0);
    CHECK(cfg.trainer.checkpoint_every == 2000 && cfg.trainer.keep_last == 2 && strcmp(cfg.trainer.resume, "auto") == 0);
    CHECK(cfg.trainer.init_from[0] == 0 && cfg.trainer.max_bad_steps == 20 && cfg.trainer.grad_reduce_dtype == LCM_GRAD_REDUCE_F32);
    CHECK(cfg.trainer.cpu_threads == 0 && cfg.trainer.plot == 1);
    CHECK(cfg.optim.lr == 4e-4f && cfg.optim.beta1 == 0.9f && cfg.optim.beta2 == 0.95f && cfg.optim.eps == 1e-5f);
    CHECK(cfg.optim.weight_decay == 0.1f && cfg.optim.grad_clip == 25.0f && cfg.optim.schedule == LCM_SCHEDULE_COSINE);
    CHECK(cfg.optim.start_lr == 1e-7f && cfg.optim.final_lr == 1e-5f && cfg.optim.warmup_steps == 10000);
    CHECK(cfg.bench.warmup_steps == 3 && cfg.bench.steps == 10 && cfg.bench.peak_tflops == 0.0f);
    CHECK(cfg.base[0] == 0);
    for (int i = 0; i < lcm_num_keys; i++) CHECKF(strcmp(cfg.origin[i], "default") == 0, "origin %s", cfg.origin[i]);
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_validate(&cfg, &err), &err);
}

TEST(ffn_dim_is_derived_like_the_reference) {
    /* 256 * ceil(int(8C/3) / 256): C = 2048 -> int(5461.3) = 5461 -> 22 * 256 */
    lcm_model_config m = {.model_dim = 2048, .ffn_multiple_of = 256};
    CHECK(lcm_model_ffn_dim(&m) == 5632);
    m.model_dim = 256; /* int(682.7) = 682 -> 3 * 256 */
    CHECK(lcm_model_ffn_dim(&m) == 768);
    m.model_dim = 1024; /* int(2730.7) = 2730 -> 11 * 256 */
    CHECK(lcm_model_ffn_dim(&m) == 2816);
    m.model_dim = 96, m.ffn_multiple_of = 1; /* 8 * 96 / 3 = 256 exactly */
    CHECK(lcm_model_ffn_dim(&m) == 256);
    m.ffn_inner_dim = 1000;
    CHECK(lcm_model_ffn_dim(&m) == 1000);
}

/* ---- files, bases, overrides ------------------------------------------------------------------ */

TEST(bases_then_file_then_command_line) {
    new_dir();
    put("common/a.ini", "[model]\nmodel_dim = 64\nnum_layers = 2\nnum_heads = 2\n[trainer]\nmax_steps = 10\nkeep_last = 7\n");
    put("common/b.ini", "[config]\nbase = a.ini\n[model]\nnum_layers = 3\n[trainer]\nmax_steps = 20\n");
    put("c.ini", "[trainer]\nmax_steps = 30\nlog_every = 3\n");
    const char *top = put("top.ini", "# top\n[config]\nbase = common/b.ini, c.ini\n\n[model]\nnum_layers = 4\n[optim]\nwarmup_steps = 1\n");
    char *ov[] = {"model.num_layers=5", "trainer.log_every=4"};
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_load(&cfg, top, 2, ov, &err), &err);
    CHECK(cfg.model.model_dim == 64);      /* only a.ini sets it */
    CHECK(cfg.trainer.keep_last == 7);     /* a.ini */
    CHECK(cfg.trainer.max_steps == 30);    /* a < b < c: bases apply in the order listed */
    CHECK(cfg.model.num_layers == 5);      /* a < b < top < command line */
    CHECK(cfg.trainer.log_every == 4);     /* c.ini, then the command line */
    CHECK(cfg.optim.warmup_steps == 1);
    CHECK(cfg.model.num_heads == 2);
    CHECK(strcmp(cfg.base, "common/b.ini, c.ini") == 0); /* the top file's own base line */
    CHECK(strcmp(cfg.source, top) == 0);
    CHECKF(ends_with(origin_of(&cfg, "model", "model_dim"), "common/a.ini:2"), "%s", origin_of(&cfg, "model", "model_dim"));
    CHECKF(ends_with(origin_of(&cfg, "trainer", "max_steps"), "/c.ini:2"), "%s", origin_of(&cfg, "trainer", "max_steps"));
    CHECKF(ends_with(origin_of(&cfg, "optim", "warmup_steps"), "top.ini:8"), "%s", origin_of(&cfg, "optim", "warmup_steps"));
    CHECK(strcmp(origin_of(&cfg, "model", "num_layers"), "command line") == 0);
    CHECK(strcmp(origin_of(&cfg, "model", "rope_theta"), "default") == 0);
}

TEST(three_override_spellings) {
    lcm_config_defaults(&cfg);
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_set(&cfg, "model.num_layers=7", "command line", &err), &err);
    CHECK(cfg.model.num_layers == 7);
    CHECK_OK(lcm_config_set(&cfg, "+model.num_layers=8", "command line", &err), &err);
    CHECK(cfg.model.num_layers == 8);
    CHECK_OK(lcm_config_set(&cfg, "++model.num_layers=9", "command line", &err), &err);
    CHECK(cfg.model.num_layers == 9);
    CHECK_OK(lcm_config_set(&cfg, "MODEL.Num_Layers=10", "command line", &err), &err); /* files are case-blind too */
    CHECK(cfg.model.num_layers == 10);
    CHECK_OK(lcm_config_set(&cfg, "trainer.output_dir=runs/a=b", "command line", &err), &err); /* split at the first '=' */
    CHECK(strcmp(cfg.trainer.output_dir, "runs/a=b") == 0);
    CHECK_FAILS(lcm_config_set(&cfg, "model=3", "command line", &err), &err, LCM_ERR_USAGE, "expected section.key=value");
    CHECK_FAILS(lcm_config_set(&cfg, "num_layers=3", "command line", &err), &err, LCM_ERR_USAGE, "expected section.key=value");
    CHECK_FAILS(lcm_config_set(&cfg, "model.=3", "command line", &err), &err, LCM_ERR_USAGE, "expected section.key=value");
    CHECK_FAILS(lcm_config_set(&cfg, ".num_layers=3", "command line", &err), &err, LCM_ERR_USAGE, "expected section.key=value");
    CHECK_FAILS(lcm_config_set(&cfg, "model.num_layers", "command line", &err), &err, LCM_ERR_USAGE, "expected section.key=value");
    CHECK_FAILS(lcm_config_set(&cfg, "config.base=x.ini", "command line", &err), &err, LCM_ERR_USAGE, "inside a config file");
    CHECK(cfg.model.num_layers == 10);
}

/* model.attention (issue 11 item 4): auto by default, each documented word lands as its enum. */
TEST(attention_key_values) {
    lcm_config_defaults(&cfg);
    lcm_error_clear(&err);
    CHECK(cfg.model.attention == LCM_ATTENTION_AUTO);
    CHECK_OK(lcm_config_set(&cfg, "model.attention=cudnn", "command line", &err), &err);
    CHECK(cfg.model.attention == LCM_ATTENTION_CUDNN);
    CHECK_OK(lcm_config_set(&cfg, "model.attention=native", "command line", &err), &err);
    CHECK(cfg.model.attention == LCM_ATTENTION_NATIVE);
    CHECK_OK(lcm_config_set(&cfg, "model.attention=auto", "command line", &err), &err);
    CHECK(cfg.model.attention == LCM_ATTENTION_AUTO);
    /* the old environment knob's words are not values of the key */
    CHECK_FAILS(lcm_config_set(&cfg, "model.attention=simple", "command line", &err), &err, LCM_ERR_CONFIG,
                "model.attention = 'simple': expected one of auto, cudnn, native");
    CHECK(cfg.model.attention == LCM_ATTENTION_AUTO);
}

TEST(unknown_key_in_file_suggests_the_closest) {
    new_dir();
    const char *p = put("x.ini", "# comment\n[trainer]\nmax_step = 5\n");
    char want[1200];
    snprintf(want, sizeof want, "unknown key trainer.max_step (%s:3); did you mean trainer.max_steps?", p);
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, want);
    p = put("y.ini", "[model]\nmax_tokens = 5\n"); /* right key, wrong section */
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "did you mean data.max_tokens?");
    p = put("z.ini", "[model]\ncompletely_unrelated_thing = 5\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "`lcm config keys` lists the keys");
    p = put("w.ini", "max_steps = 5\n[trainer]\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "w.ini:1: key max_steps comes before any [section]; did you mean it under [trainer]?");
}

TEST(unknown_key_on_command_line_suggests_the_closest) {
    char *ov[] = {"trainer.max_step=5"};
    CHECK_FAILS(lcm_config_load(&cfg, "model/toy.ini", 1, ov, &err), &err, LCM_ERR_CONFIG,
                "unknown key trainer.max_step (command line); did you mean trainer.max_steps?");
    char *ov2[] = {"optim.learning_rate=0.1"};
    CHECK_FAILS(lcm_config_load(&cfg, "model/toy.ini", 1, ov2, &err), &err, LCM_ERR_CONFIG, "unknown key optim.learning_rate");
}

TEST(unknown_section) {
    new_dir();
    const char *p = put("x.ini", "[model]\nnum_layers = 2\n\n[trainr]\nmax_steps = 5\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "unknown section [trainr] (");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "x.ini:4); did you mean [trainer]?");
    p = put("empty_section.ini", "[optimizer]\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "did you mean [optim]?");
    char *ov[] = {"trainr.max_steps=5"};
    CHECK_FAILS(lcm_config_load(&cfg, NULL, 1, ov, &err), &err, LCM_ERR_CONFIG,
                "unknown section in key trainr.max_steps (command line); did you mean trainer.max_steps?");
}

TEST(bad_values_name_file_line_key_and_what_is_allowed) {
    new_dir();
    struct { const char *text, *want; } cases[] = {
        {"[model]\nnum_heads = abc\n", ":2: model.num_heads = 'abc': expected an integer in [1, 1024]"},
        {"[model]\n\nnum_layers = 12abc\n", ":3: model.num_layers = '12abc': expected an integer in [1, 1024]"},
        {"[model]\nnum_layers = 0x10\n", "model.num_layers = '0x10': expected an integer"},
        {"[model]\nnum_layers = 1e3\n", "model.num_layers = '1e3': expected an integer"},
        {"[model]\nnum_layers =\n", "model.num_layers = '': expected an integer"},
        {"[model]\nnum_layers = \"\"\n", "model.num_layers = '': expected an integer"},
        {"[model]\ndropout = 0.1.2\n", ":2: model.dropout = '0.1.2': expected a number in [0, 0.99]"},
        {"[model]\ndropout = nan\n", "model.dropout = 'nan': expected a number"},
        {"[model]\nrope_theta = inf\n", "model.rope_theta = 'inf': expected a number"},
        {"[optim]\nlr = 0x1p-3\n", "optim.lr = '0x1p-3': expected a number"},
        {"[data]\nshuffle = maybe\n", ":2: data.shuffle = 'maybe': expected true or false"},
        {"[data]\nshuffle = t\n", "data.shuffle = 't': expected true or false"}, /* iniparser would take 't' */
        {"[data]\nshuffle = 2\n", "data.shuffle = '2': expected true or false"},
        {"[synth]\ndtype = fp16\n", ":2: synth.dtype = 'fp16': expected one of f32, f16, bf16"},
        {"[optim]\nschedule = linear\n", "optim.schedule = 'linear': expected one of cosine, constant"},
        {"[trainer]\ngrad_reduce_dtype = f16\n", "trainer.grad_reduce_dtype = 'f16': expected one of f32, bf16"},
        {"[model]\nattention = flash\n", ":2: model.attention = 'flash': expected one of auto, cudnn, native"},
        {"[model]\nattention =\n", "model.attention = '': expected one of auto, cudnn, native"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *p = put("bad.ini", cases[i].text);
        CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, cases[i].want);
    }
    char *ov[] = {"data.max_tokens=lots"};
    CHECK_FAILS(lcm_config_load(&cfg, NULL, 1, ov, &err), &err, LCM_ERR_CONFIG,
                "command line: data.max_tokens = 'lots': expected an integer in [1, 1e12]");
}

TEST(booleans_accept_only_the_documented_words) {
    const char *yes[] = {"true", "yes", "on", "1", "TRUE", "Yes"}, *no[] = {"false", "no", "off", "0", "False"};
    char a[64];
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        cfg.data.shuffle = 0;
        snprintf(a, sizeof a, "data.shuffle=%s", yes[i]);
        CHECK_OK(lcm_config_set(&cfg, a, "t", &err), &err);
        CHECKF(cfg.data.shuffle == 1, "%s", yes[i]);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        cfg.data.shuffle = 1;
        snprintf(a, sizeof a, "data.shuffle=%s", no[i]);
        CHECK_OK(lcm_config_set(&cfg, a, "t", &err), &err);
        CHECKF(cfg.data.shuffle == 0, "%s", no[i]);
    }
    CHECK_FAILS(lcm_config_set(&cfg, "data.shuffle=", "t", &err), &err, LCM_ERR_CONFIG, "expected true or false");
    CHECK_FAILS(lcm_config_set(&cfg, "data.shuffle=y", "t", &err), &err, LCM_ERR_CONFIG, "expected true or false");
}

TEST(ranges_are_inclusive_and_enforced) {
    lcm_config_defaults(&cfg);
    struct { const char *ok, *bad, *want; } cases[] = {
        {"model.num_heads=1", "model.num_heads=0", "expected an integer in [1, 1024]"},
        {"model.num_heads=1024", "model.num_heads=1025", "expected an integer in [1, 1024]"},
        {"model.dropout=0", "model.dropout=-0.1", "expected a number in [0, 0.99]"},
        {"model.dropout=0.99", "model.dropout=1", "expected a number in [0, 0.99]"},
        {"optim.lr=1e-12", "optim.lr=0", "expected a number in [1e-12, 10]"},
        {"trainer.keep_last=1", "trainer.keep_last=0", "expected an integer in [1, 1000000]"},
        {"data.max_tokens=1", "data.max_tokens=0", "expected an integer in [1, 1e12]"},
        {"trainer.max_steps=1000000000000", "trainer.max_steps=1000000000001", "expected an integer in [1, 1e12]"},
        {"synth.seed=9223372036854775807", "synth.seed=-1", "expected an integer >= 0"},
        {"synth.seed=0", "synth.seed=9223372036854775808", "expected an integer >= 0"}, /* beyond int64 */
        {"model.model_dim=65536", "model.model_dim=99999999999", "expected an integer in [1, 65536]"}, /* beyond int32 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lcm_error_clear(&err);
        CHECK_OK(lcm_config_set(&cfg, cases[i].ok, "command line", &err), &err);
        CHECK_FAILS(lcm_config_set(&cfg, cases[i].bad, "command line", &err), &err, LCM_ERR_CONFIG, cases[i].want);
    }
    CHECK(cfg.synth.seed == 0 && cfg.model.model_dim == 65536);
}

TEST(malformed_ini_names_file_and_line) {
    new_dir();
    const char *p = put("x.ini", "[model]\nnum_heads = 4\n\nthis line is not ini\n");
    char want[1200];
    snprintf(want, sizeof want, "%s:4: syntax error: 'this line is not ini'", p);
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, want);
    p = put("y.ini", "[model]\nnum_heads = 4\n[data\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "y.ini:3: syntax error");
    /* the same error in a base names the base */
    put("sub/bad_base.ini", "[model]\n\nnope\n");
    p = put("top.ini", "[config]\nbase = sub/bad_base.ini\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "sub/bad_base.ini:3: syntax error");
}

TEST(missing_file_and_missing_base) {
    new_dir();
    char missing[1100];
    snprintf(missing, sizeof missing, "%s/nope.ini", test_dir);
    CHECK_FAILS(lcm_config_load(&cfg, missing, 0, NULL, &err), &err, LCM_ERR_CONFIG, "not found");
    CHECK_FAILS(lcm_config_load(&cfg, missing, 0, NULL, &err), &err, LCM_ERR_CONFIG, "nope.ini");
    CHECK_FAILS(lcm_config_load(&cfg, test_dir, 0, NULL, &err), &err, LCM_ERR_CONFIG, "is a directory");
    const char *p = put("x.ini", "[model]\nnum_layers = 2\n[config]\nbase = gone.ini\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "x.ini:4: base gone.ini not found");
    p = put("y.ini", "[config]\nbase = model/toy.ini,\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "has an empty entry");
}

TEST(base_cycles_and_depth_are_refused) {
    new_dir();
    put("a.ini", "[config]\nbase = b.ini\n");
    put("b.ini", "[config]\nbase = ./a.ini\n");
    CHECK_FAILS(lcm_config_load(&cfg, put("top.ini", "[config]\nbase = a.ini\n"), 0, NULL, &err), &err, LCM_ERR_CONFIG,
                "base cycle: ");
    CHECK_FAILS(lcm_config_load(&cfg, put("top.ini", "[config]\nbase = a.ini\n"), 0, NULL, &err), &err, LCM_ERR_CONFIG,
                "b.ini -> ");
    CHECK_FAILS(lcm_config_load(&cfg, put("self.ini", "[config]\nbase = self.ini\n"), 0, NULL, &err), &err, LCM_ERR_CONFIG,
                "base cycle: ");
    /* the same base twice, not nested, is no cycle */
    put("m.ini", "[model]\nnum_layers = 3\n");
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_load(&cfg, put("twice.ini", "[config]\nbase = m.ini, m.ini\n"), 0, NULL, &err), &err);
    CHECK(cfg.model.num_layers == 3);
    /* a chain of 20 distinct files */
    for (int i = 0; i < 20; i++) {
        char name[32], text[96];
        snprintf(name, sizeof name, "d%d.ini", i);
        snprintf(text, sizeof text, "[config]\nbase = d%d.ini\n", i + 1);
        put(name, text);
    }
    put("d20.ini", "[model]\nnum_layers = 3\n");
    CHECK_FAILS(lcm_config_load(&cfg, put("deep.ini", "[config]\nbase = d0.ini\n"), 0, NULL, &err), &err, LCM_ERR_CONFIG,
                "bases nested more than 16 deep");
}

TEST(quoted_strings_keep_hash_and_semicolon) {
    new_dir();
    const char *p = put("x.ini", "[trainer]\noutput_dir = \"runs/a#b;c\"   # a comment\ninit_from = 'w #1.safetensors'\n"
                                 "resume = runs/x/ckpt # an unquoted value ends at '#'\n");
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_load(&cfg, p, 0, NULL, &err), &err);
    CHECK(strcmp(cfg.trainer.output_dir, "runs/a#b;c") == 0);
    CHECK(strcmp(cfg.trainer.init_from, "w #1.safetensors") == 0);
    CHECK(strcmp(cfg.trainer.resume, "runs/x/ckpt") == 0);
}

TEST(leading_zero_is_decimal_not_octal) {
    new_dir();
    const char *p = put("x.ini", "[model]\nnum_layers = 08\nnum_heads = 016\n[trainer]\nmax_steps = 0250000\n");
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_load(&cfg, p, 0, NULL, &err), &err);
    CHECK(cfg.model.num_layers == 8);
    CHECK(cfg.model.num_heads == 16); /* octal would be 14 */
    CHECK(cfg.trainer.max_steps == 250000);
}

TEST(key_named_like_a_section_does_not_crash) {
    /* CVE-2023-33461: iniparser_getint/getboolean on a key that is a section name dereference NULL.
     * Sections are dictionary entries with a NULL value; each shape below must end in an error. */
    new_dir();
    CHECK_FAILS(lcm_config_load(&cfg, put("a.ini", "[model]\n[config:base]\n"), 0, NULL, &err), &err, LCM_ERR_CONFIG,
                "unknown section [config:base]");
    CHECK_FAILS(lcm_config_load(&cfg, put("b.ini", "[model:num_heads]\n"), 0, NULL, &err), &err, LCM_ERR_CONFIG,
                "unknown section [model:num_heads]");
    CHECK_FAILS(lcm_config_load(&cfg, put("c.ini", "[model]\nmodel = 3\n"), 0, NULL, &err), &err, LCM_ERR_CONFIG,
                "unknown key model.model");
    CHECK_FAILS(lcm_config_load(&cfg, put("d.ini", "[trainer]\n[model]\ntrainer = 1\n"), 0, NULL, &err), &err, LCM_ERR_CONFIG,
                "unknown key model.trainer");
    CHECK_FAILS(lcm_config_load(&cfg, put("e.ini", "[config]\nbase\n"), 0, NULL, &err), &err, LCM_ERR_CONFIG, "syntax error");
    CHECK_FAILS(lcm_config_set(&cfg, "model=1", "command line", &err), &err, LCM_ERR_USAGE, "expected section.key=value");
}

TEST(duplicate_key_keeps_the_last_value_and_its_line) {
    new_dir();
    const char *p = put("x.ini", "[model]\nnum_layers = 2\nnum_layers = 6\n");
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_load(&cfg, p, 0, NULL, &err), &err);
    CHECK(cfg.model.num_layers == 6);
    CHECK(ends_with(origin_of(&cfg, "model", "num_layers"), "x.ini:3"));
}

TEST(continued_lines_keep_line_numbers_right) {
    new_dir();
    const char *p = put("x.ini", "[data]\ntrain = a\\\nb.lcmd\n\nmax_tokens = abc\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "x.ini:5: data.max_tokens = 'abc'");
}

TEST(strings_that_cannot_round_trip_are_refused) {
    lcm_config_defaults(&cfg);
    CHECK_FAILS(lcm_config_set(&cfg, "trainer.output_dir=a\nb", "command line", &err), &err, LCM_ERR_CONFIG, "control character");
    CHECK_FAILS(lcm_config_set(&cfg, "trainer.output_dir=it's \"x\"", "command line", &err), &err, LCM_ERR_CONFIG, "both");
    char longer[300] = "trainer.devices=";
    memset(longer + strlen(longer), '0', 270);
    CHECK_FAILS(lcm_config_set(&cfg, longer, "command line", &err), &err, LCM_ERR_CONFIG, "is too long");
    CHECK(strcmp(cfg.trainer.output_dir, "runs/lcm") == 0);
}

/* Issue 9 item 2: a section name of 128 bytes or more made the did-you-mean code dereference NULL. */
TEST(long_section_name_is_an_error_not_a_crash) {
    new_dir();
    char text[400] = "[";
    memset(text + 1, 'x', 200);
    strcpy(text + 201, "]\n");
    const char *p = put("long.ini", text);
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "unknown section [xxxxxxxx");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "long.ini:1); the sections are config, model");
    memset(text + 1, 'y', 127); /* exactly 128 with the 'x' that follows */
    p = put("long128.ini", text);
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "unknown section [yyyy");
    char ov[300] = "trainer.";
    memset(ov + 8, 'z', 140);
    strcpy(ov + 148, "=1");
    char *ovs[] = {ov};
    CHECK_FAILS(lcm_config_load(&cfg, NULL, 1, ovs, &err), &err, LCM_ERR_CONFIG, "unknown key trainer.zzzz");
}

/* Issue 9 item 5: string values must be UTF-8 when read, not when the first checkpoint stores them. */
TEST(string_values_must_be_utf8) {
    new_dir();
    const char *p = put("latin1.ini", "[trainer]\nmax_steps = 3\noutput_dir = runs/caf\xe9\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG,
                "latin1.ini:3: trainer.output_dir = 'runs/caf\\xe9': is not valid UTF-8 (the bytes shown as \\xNN); "
                "save the config file as UTF-8");
    char *ov[] = {"data.train=d\xff.lcmd"};
    CHECK_FAILS(lcm_config_load(&cfg, NULL, 1, ov, &err), &err, LCM_ERR_CONFIG,
                "command line: data.train = 'd\\xff.lcmd': is not valid UTF-8");
    /* Valid UTF-8 is a fine value. */
    char *ok[] = {"trainer.output_dir=runs/caf\xc3\xa9"};
    CHECK_OK(lcm_config_load(&cfg, NULL, 1, ok, &err), &err);
    CHECK(strcmp(cfg.trainer.output_dir, "runs/caf\xc3\xa9") == 0);
}

/* Issue 9 item 4: text from a config file is escaped in messages. */
TEST(config_text_in_messages_is_escaped) {
    new_dir();
    const char *p = put("esc.ini", "[model]\nnum_layers = 2\x1b[2J\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "esc.ini:2: model.num_layers = '2\\x1b[2J'");
    p = put("esc_key.ini", "[model]\nnum_\x1blayers = 2\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "unknown key model.num_\\x1blayers");
    p = put("esc_base.ini", "[config]\nbase = no\x1b.ini\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "base no\\x1b.ini not found");
}

/* Issue 9 item 14: a NUL byte is named as such (iniparser said "line too long"). */
TEST(nul_byte_in_config_is_named) {
    new_dir();
    const char *p = put("nul.ini", "");
    FILE *f = fopen(p, "wb");
    CHECK(f && fwrite("[model]\nnum_layers = 2\n\0\n", 1, 26, f) == 26);
    if (f) fclose(f);
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "nul.ini:3: a NUL byte (byte 23 of the file): a config file is text");
}

/* A file given on the command line that never ends (/dev/zero) or a huge file is an error, not a read
 * until memory runs out. */
TEST(endless_config_is_refused) {
    new_dir();
    CHECK_FAILS(lcm_config_load(&cfg, "/dev/zero", 0, NULL, &err), &err, LCM_ERR_CONFIG,
                "/dev/zero: more than 1048576 bytes; a config file is a short text file");
}

/* A base must be a regular file: /dev/zero, a FIFO, /dev/stdin or an inherited pipe (/proc/self/fd/N,
 * found by fuzz_config: the loader read its own pipe forever) is refused at once, never read or waited
 * on. alarm(): the code before the fix waited on the FIFO forever; the alarm ends this test as a failure. */
TEST(base_that_is_not_a_regular_file_is_refused) {
    new_dir();
    alarm(60);
    const char *p = put("zero.ini", "[config]\nbase = /dev/zero\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG,
                "base /dev/zero is not a regular file (a character device): a base names a config file");
    char fifo[1024];
    snprintf(fifo, sizeof fifo, "%s/fifo.ini", test_dir);
    CHECK(mkfifo(fifo, 0600) == 0);
    p = put("fifo_base.ini", "[config]\nbase = fifo.ini\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "fifo.ini is not a regular file (a pipe)");
    int fds[2];
    CHECK(pipe(fds) == 0);
    char text[128];
    snprintf(text, sizeof text, "[config]\nbase = /proc/self/fd/%d\n", fds[0]);
    p = put("pipe_base.ini", text);
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "is not a regular file (a pipe)");
    close(fds[0]);
    close(fds[1]);
    alarm(0);
}

/* The file on the command line may be a pipe (`lcm train <(...)`): it is read to its end. */
TEST(config_from_a_pipe_loads) {
    new_dir();
    int fds[2];
    CHECK(pipe(fds) == 0);
    const char text[] = "[model]\nnum_layers = 3\n";
    CHECK(write(fds[1], text, sizeof text - 1) == (ssize_t)(sizeof text - 1));
    close(fds[1]);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fds[0]);
    CHECK_OK(lcm_config_load(&cfg, path, 0, NULL, &err), &err);
    CHECK(cfg.model.num_layers == 3);
    close(fds[0]);
}

/* Issue 9 item 14: a UTF-8 byte order mark (written by some editors) is skipped, lines still count. */
TEST(utf8_bom_is_skipped) {
    new_dir();
    const char *p = put("bom.ini", "\xef\xbb\xbf[model]\nnum_layers = 3\n");
    CHECK_OK(lcm_config_load(&cfg, p, 0, NULL, &err), &err);
    CHECK(cfg.model.num_layers == 3);
    CHECK(ends_with(origin_of(&cfg, "model", "num_layers"), "bom.ini:2"));
    /* Only at the very start: elsewhere it is text like any other. */
    p = put("bom2.ini", "[model]\n\xef\xbb\xbfnum_layers = 3\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "unknown key model.\\xef\\xbb\\xbfnum_layers");
}

/* Issue 9 item 14: spaces around '=' in an override are dropped, as around '=' in a file; before,
 * "trainer.max_steps =5" was "unknown key trainer.max_steps ; did you mean trainer.max_steps?". */
TEST(override_spaces_around_equals_are_dropped) {
    const char *forms[] = {"trainer.max_steps =500", "trainer.max_steps = 501", "trainer.max_steps= 502",
                           " trainer.max_steps\t=\t503 "};
    for (int i = 0; i < 4; i++) {
        char *ov[] = {(char *)forms[i]};
        CHECK_OK(lcm_config_load(&cfg, NULL, 1, ov, &err), &err);
        CHECKF(cfg.trainer.max_steps == 500 + i, "%s gave %lld", forms[i], (long long)cfg.trainer.max_steps);
    }
    char *ov[] = {"trainer.output_dir =  runs/a b  "};
    CHECK_OK(lcm_config_load(&cfg, NULL, 1, ov, &err), &err);
    CHECK(strcmp(cfg.trainer.output_dir, "runs/a b") == 0);
    char *bad[] = {"trainer. max_steps=500"};
    CHECK_FAILS(lcm_config_load(&cfg, NULL, 1, bad, &err), &err, LCM_ERR_CONFIG, "unknown key trainer. max_steps");
}

/* ---- writing ---------------------------------------------------------------------------------- */

TEST(write_then_load_gives_the_same_config) {
    new_dir();
    const char *p = put("x.ini", "[config]\nbase = model/toy.ini\n"
                                 "[trainer]\noutput_dir = \"runs/a#b;c\"\ninit_from = ' lead and trail '\nresume = \"it's\"\n"
                                 "devices = 0,2,3\nseed = 9223372036854775807\n"
                                 "[data]\ntrain = \"C:\\data\\\"\nvalid = '\"quoted\"'\n"
                                 "[optim]\nlr = 0.000345678912\nbeta2 = 0.999999\nstart_lr = 1e-7\neps = 3e-30\n"
                                 "[model]\ndropout = 0.99\nrope_theta = 123456.789\n[synth]\nmean_len = 7.3\n");
    char *ov[] = {"data.shuffle=off", "bench.peak_tflops=989.5", "synth.dtype=bf16"};
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_load(&cfg, p, 3, ov, &err), &err);
    CHECK(strcmp(cfg.data.train, "C:\\data\\") == 0); /* a trailing '\' must be quoted on writing */
    const char *out = put("written.ini", "");
    FILE *f = fopen(out, "w");
    CHECK(f && lcm_config_write(&cfg, f) == 0);
    fclose(f);
    CHECK_OK(lcm_config_load(&cfg2, out, 0, NULL, &err), &err);
    for (int i = 0; i < lcm_num_keys; i++) {
        const lcm_key *k = &lcm_keys[i];
        if (strcmp(k->section, "config") == 0) continue; /* written as a comment: the bases are merged */
        int same = k->type == LCM_KEY_STRING
                       ? strcmp(field_of(&cfg, k), field_of(&cfg2, k)) == 0
                       : memcmp(field_of(&cfg, k), field_of(&cfg2, k), (size_t)k->width) == 0;
        CHECKF(same, "%s.%s differs after write + load", k->section, k->name);
    }
    CHECK(strcmp(cfg2.base, "") == 0);
    CHECK(cfg2.trainer.seed == UINT64_C(9223372036854775807));
    CHECK(strcmp(cfg2.trainer.resume, "it's") == 0 && strcmp(cfg2.data.valid, "\"quoted\"") == 0);
    CHECK(strcmp(cfg2.trainer.init_from, " lead and trail ") == 0);
    CHECK(lcm_config_model_hash(&cfg) == lcm_config_model_hash(&cfg2));
}

/* Write cfg to path and load it back into cfg2 (what a checkpoint's config.ini goes through). */
static int write_and_reload(const char *path) {
    FILE *f = fopen(path, "w");
    if (!f || lcm_config_write(&cfg, f) != 0 || fclose(f) != 0) return -1;
    lcm_error_clear(&err);
    return lcm_config_load(&cfg2, path, 0, NULL, &err);
}

static char *repeat(char *buf, char c, size_t n) {
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

/* Found by fuzz_config: a long value from a file with a long path wrote a line iniparser cannot read
 * (the "# <file>:<line>" comment after it), and a value given on the command line could be longer
 * than any config line, so the config.ini written beside a checkpoint did not load. iniparser reads
 * 1022 characters a line: "output_dir = " leaves 1009 for a plain value, 1007 for a quoted one. */
TEST(longest_values_still_write_a_config_that_loads) {
    new_dir();
    char name[1024], value[1100], text[1200], ov_text[1200];
    /* A path of 1010 characters, in directories of at most 200 (a file name has at most 255). */
    size_t n = 0, target = 1010 - strlen(test_dir) - 1 - strlen("/l.ini");
    for (; n < target; n++) name[n] = n % 201 == 200 ? '/' : 'd';
    char dirs[1100];
    snprintf(dirs, sizeof dirs, "%s/%.*s", test_dir, (int)n, name);
    CHECK_OK(lcm_mkdir_p(dirs, &err), &err);
    snprintf(name + n, sizeof name - n, "/l.ini");
    snprintf(text, sizeof text, "[config]\nbase = model/toy.ini\n[trainer]\noutput_dir = %s\n", repeat(value, 'v', 1009));
    const char *p = put(name, text);
    CHECK(strlen(p) > 1000);
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_load(&cfg, p, 0, NULL, &err), &err);
    CHECK_OK(write_and_reload(put("w1.ini", "")), &err);
    CHECK(strcmp(cfg2.trainer.output_dir, value) == 0);

    char *ov[] = {ov_text};
    snprintf(ov_text, sizeof ov_text, "trainer.output_dir=%s", repeat(value, 'v', 1010));
    CHECK_FAILS(lcm_config_load(&cfg, NULL, 1, ov, &err), &err, LCM_ERR_CONFIG,
                "is too long (\"key = value\" must fit on one config line of at most 1022 characters)");
    repeat(value, 'v', 1008)[0] = '#'; /* quoted when written: 2 characters more */
    snprintf(ov_text, sizeof ov_text, "trainer.output_dir=%s", value);
    CHECK_FAILS(lcm_config_load(&cfg, NULL, 1, ov, &err), &err, LCM_ERR_CONFIG, "output_dir");
    repeat(value, 'v', 1007)[0] = '#';
    snprintf(ov_text, sizeof ov_text, "trainer.output_dir=%s", value);
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_load(&cfg, NULL, 1, ov, &err), &err);
    CHECK_OK(write_and_reload(put("w2.ini", "")), &err);
    CHECK(strcmp(cfg2.trainer.output_dir, value) == 0);
}

TEST(written_config_says_where_values_came_from) {
    char *ov[] = {"trainer.max_steps=123"};
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_load(&cfg, NULL, 1, ov, &err), &err);
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    CHECK(lcm_config_write(&cfg, f) == 0);
    fclose(f);
    CHECK(strstr(text, "max_steps = 123") != NULL);
    CHECK(strstr(text, "# command line") != NULL);
    CHECK(strstr(text, "# <embedded>/model/toy.ini:") != NULL);
    CHECK(strstr(text, "config.base = model/toy.ini") != NULL);
    CHECK(strstr(text, "\n[model]\n") && strstr(text, "\n[bench]\n"));
    free(text);
}

TEST(key_reference_lists_every_key) {
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    lcm_config_print_keys(f, 1);
    fclose(f);
    int rows = 0;
    for (char *s = text; (s = strstr(s, "\n| `")); s++) rows++;
    CHECK(rows == lcm_num_keys);
    CHECK(strncmp(text, "| key | type | default | allowed | description |\n|---|", 30) == 0);
    CHECK(strstr(text, "| `synth.dtype` | enum | `f16` | f32, f16, bf16 |") != NULL); /* no '|' inside a cell */
    CHECK(strstr(text, "| `model.num_heads` | int | `16` | [1, 1024] |") != NULL);
    free(text);
    f = open_memstream(&text, &size);
    lcm_config_print_keys(f, 0);
    fclose(f);
    CHECK(strstr(text, "optim.warmup_steps") && strstr(text, "true/false"));
    free(text);
}

TEST(model_hash_follows_the_model_keys_only) {
    lcm_config_defaults(&cfg);
    uint64_t h = lcm_config_model_hash(&cfg);
    cfg2 = cfg;
    cfg2.model.ffn_inner_dim = 5632; /* what 0 derives for C = 2048 */
    CHECK(lcm_config_model_hash(&cfg2) == h);
    cfg2.trainer.max_steps = 7, cfg2.optim.lr = 1e-3f, cfg2.data.max_tokens = 100000;
    strcpy(cfg2.origin[3], "elsewhere");
    CHECK(lcm_config_model_hash(&cfg2) == h);
    cfg2 = cfg, cfg2.model.num_layers = 31;
    CHECK(lcm_config_model_hash(&cfg2) != h);
    cfg2 = cfg, cfg2.model.ffn_multiple_of = 128; /* F = 5504 */
    CHECK(lcm_config_model_hash(&cfg2) != h);
    cfg2 = cfg, cfg2.data.max_seq_len = 64;
    CHECK(lcm_config_model_hash(&cfg2) != h);
    cfg2 = cfg, cfg2.data.append_eot = 0;
    CHECK(lcm_config_model_hash(&cfg2) != h);
    cfg2 = cfg, strcpy(cfg2.model.normalizer, "none");
    CHECK(lcm_config_model_hash(&cfg2) != h);
    /* how attention is computed is not the model: a run can resume with another implementation */
    cfg2 = cfg, cfg2.model.attention = LCM_ATTENTION_CUDNN;
    CHECK(lcm_config_model_hash(&cfg2) == h);
    cfg2.model.attention = LCM_ATTENTION_NATIVE;
    CHECK(lcm_config_model_hash(&cfg2) == h);
    CHECK(!lcm_config_key_in_model_hash(lcm_config_find_key("model", "attention")));
    CHECK(lcm_config_key_in_model_hash(lcm_config_find_key("model", "num_heads")));
    CHECK(lcm_config_key_in_model_hash(lcm_config_find_key("data", "append_eot")));
    CHECK(!lcm_config_key_in_model_hash(lcm_config_find_key("model", "ffn_inner_dim")));
    CHECK(!lcm_config_key_in_model_hash(lcm_config_find_key("data", "max_tokens")));
}

/* ---- the built-in and repository configs ------------------------------------------------------ */

TEST(embedded_default_is_the_toy_on_synthetic_data) {
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_load(&cfg, NULL, 0, NULL, &err), &err);
    CHECK(strcmp(cfg.source, "<embedded>/default.ini") == 0);
    CHECK(cfg.model.model_dim == 256 && cfg.model.num_layers == 4 && cfg.model.num_heads == 4);
    CHECK(lcm_model_ffn_dim(&cfg.model) == 768);
    CHECK(cfg.data.synthesize == 1 && cfg.data.train[0] == 0 && strcmp(cfg.trainer.output_dir, "runs/default") == 0);
    CHECK(cfg.trainer.max_steps == 300);
}

TEST(embedded_pretrain_mse_is_the_1_6b_recipe) {
    /* "pretrain_mse.ini" is not on disk relative to the tests' directory (the repo root): built in. */
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_load(&cfg, "pretrain_mse.ini", 0, NULL, &err), &err);
    CHECK(strcmp(cfg.source, "<embedded>/pretrain_mse.ini") == 0);
    CHECK(ends_with(origin_of(&cfg, "model", "num_layers"), "<embedded>/model/base_lcm_1_6b.ini:8"));
    CHECK(cfg.model.model_dim == 2048 && cfg.model.num_layers == 32 && cfg.model.num_heads == 16);
    CHECK(lcm_model_ffn_dim(&cfg.model) == 5632 && cfg.model.sonar_dim == 1024 && cfg.model.max_seq_len == 4096);
    CHECK(cfg.data.max_tokens == 7168 && cfg.data.max_seq_len == 128 && cfg.optim.lr == 4e-4f);
    CHECK(cfg.optim.warmup_steps == 10000 && cfg.trainer.max_steps == 250000 && cfg.optim.grad_clip == 25.0f);
    CHECK(cfg.optim.start_lr == 1e-7f && cfg.optim.final_lr == 1e-5f && cfg.trainer.keep_last == 2);
    CHECK(cfg.trainer.checkpoint_every == 2000 && cfg.trainer.validate_every == 10000 && cfg.data.synthesize == 0);
    CHECK_OK(lcm_config_load(&cfg2, "conf/model/toy.ini", 0, NULL, &err), &err); /* conf/ prefix also accepted */
    CHECK_OK(lcm_config_load(&cfg2, "model/medium.ini", 0, NULL, &err), &err);
    CHECK(cfg2.model.model_dim == 1024 && lcm_model_ffn_dim(&cfg2.model) == 2816);
}

TEST(every_conf_file_loads_from_disk_and_built_in) {
    int n = 0;
    for (const lcm_embedded_file *e = lcm_embedded_conf; e->path; e++, n++) {
        lcm_error_clear(&err);
        CHECK_OK(lcm_config_load(&cfg, e->path, 0, NULL, &err), &err);
        char disk[1100];
        snprintf(disk, sizeof disk, "conf/%s", e->path);
        struct stat st;
        if (stat(disk, &st) != 0) continue; /* tests not run from the repository root */
        CHECK_OK(lcm_config_load(&cfg2, disk, 0, NULL, &err), &err);
        CHECKF(strcmp(cfg2.source, disk) == 0, "%s", cfg2.source);
        CHECKF(lcm_config_model_hash(&cfg) == lcm_config_model_hash(&cfg2), "%s: disk and built-in differ", e->path);
    }
    CHECK(n >= 5); /* default, pretrain_mse, model/{base_lcm_1_6b,toy,medium} */
}

TEST(a_base_not_on_disk_is_found_built_in) {
    new_dir();
    const char *p = put("mine.ini", "[config]\nbase = model/toy.ini\n[trainer]\nmax_steps = 40\n[optim]\nwarmup_steps = 4\n");
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_load(&cfg, p, 0, NULL, &err), &err);
    CHECK(cfg.model.model_dim == 256 && cfg.trainer.max_steps == 40);
    CHECK(strcmp(origin_of(&cfg, "model", "model_dim"), "<embedded>/model/toy.ini:6") == 0);
}

/* ---- cross-key rules -------------------------------------------------------------------------- */

static void expect_invalid(const char *a1, const char *a2, const char *needle) {
    lcm_config_defaults(&cfg);
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_set(&cfg, a1, "command line", &err), &err);
    if (a2) CHECK_OK(lcm_config_set(&cfg, a2, "command line", &err), &err);
    CHECK_FAILS(lcm_config_validate(&cfg, &err), &err, LCM_ERR_CONFIG, needle);
}

static void expect_valid(const char *a1, const char *a2) {
    lcm_config_defaults(&cfg);
    lcm_error_clear(&err);
    CHECK_OK(lcm_config_set(&cfg, a1, "command line", &err), &err);
    if (a2) CHECK_OK(lcm_config_set(&cfg, a2, "command line", &err), &err);
    CHECK_OK(lcm_config_validate(&cfg, &err), &err);
}

TEST(cross_key_rules) {
    expect_invalid("model.model_dim=2050", NULL,
                   "model.model_dim = 2050 (command line) is not a multiple of model.num_heads = 16 (default)");
    expect_invalid("model.model_dim=2040", "model.num_heads=24", "head dim 85");
    expect_valid("model.model_dim=2048", "model.num_heads=1024"); /* head dim 2 */
    expect_invalid("data.max_tokens=100", NULL, "data.max_tokens = 100 (command line) is less than data.max_seq_len = 128");
    expect_valid("data.max_tokens=128", NULL);
    expect_invalid("data.max_seq_len=8192", "data.max_tokens=8192", "is more than model.max_seq_len = 4096");
    expect_invalid("optim.warmup_steps=250000", NULL, "must be less than trainer.max_steps = 250000");
    expect_valid("optim.warmup_steps=249999", NULL);
    expect_valid("optim.warmup_steps=250000", "optim.schedule=constant");
    expect_invalid("optim.start_lr=1e-3", NULL, "optim.start_lr = 0.001 (command line) is above the peak optim.lr");
    expect_valid("optim.start_lr=1e-3", "optim.warmup_steps=0");
    expect_invalid("optim.final_lr=1e-3", NULL, "optim.final_lr");
    expect_valid("optim.final_lr=1e-3", "optim.schedule=constant");
    expect_valid("optim.final_lr=4e-4", NULL); /* equal to lr is fine */
    expect_invalid("synth.min_len=400", NULL, "synth.min_len = 400 (command line) is more than synth.max_len = 300");
    expect_invalid("synth.mean_len=3", NULL, "synth.mean_len = 3 (command line) is outside");
    expect_invalid("synth.mean_len=301", NULL, "is outside [synth.min_len, synth.max_len] = [4, 300]");
    expect_valid("synth.mean_len=300", NULL);
    /* synth.dim = model.sonar_dim is training's rule (test_train.c): `lcm data synth` loads this config too */
    expect_valid("data.synthesize=true", "synth.dim=512");
    expect_invalid("trainer.output_dir=", NULL, "trainer.output_dir is empty");
    expect_invalid("model.normalizer=", NULL, "model.normalizer is empty");
}

TEST(cross_key_errors_name_the_file_lines) {
    new_dir();
    const char *p = put("x.ini", "[model]\nmodel_dim = 100\n\nnum_heads = 3\n");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "x.ini:2) is not a multiple of model.num_heads = 3 (");
    CHECK_FAILS(lcm_config_load(&cfg, p, 0, NULL, &err), &err, LCM_ERR_CONFIG, "x.ini:4)");
}

TEST(validate_catches_fields_set_in_code) {
    lcm_config_defaults(&cfg);
    cfg.model.num_heads = 0;
    CHECK_FAILS(lcm_config_validate(&cfg, &err), &err, LCM_ERR_CONFIG, "model.num_heads = '0': expected an integer in [1, 1024]");
    lcm_config_defaults(&cfg);
    cfg.synth.dtype = (lcm_dtype)7; /* not one of the enum's values */
    CHECK_FAILS(lcm_config_validate(&cfg, &err), &err, LCM_ERR_CONFIG, "synth.dtype = '7': expected one of f32, f16, bf16");
}

TEST(devices_syntax) {
    const char *good[] = {"auto", "cpu", "cpu:1", "cpu:256", "0", "7", "0,2,3", "255,0"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        lcm_devices d;
        lcm_error_clear(&err);
        CHECKF(lcm_parse_devices(good[i], &d, &err) == 0, "%s: %s", good[i], err.msg);
    }
    const char *bad[] = {"", "gpu", "cpu:0", "cpu:257", "cpu:", "cpu:x", "0,0", "1,,2", "1,", ",1", "256", "-1", "0, 1", "+1", "cuda:0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lcm_devices d;
        CHECK_FAILS(lcm_parse_devices(bad[i], &d, &err), &err, LCM_ERR_CONFIG, "expected auto, cpu, cpu:N");
    }
    lcm_devices d;
    CHECK(lcm_parse_devices("auto", &d, &err) == 0 && d.kind == LCM_DEVICES_AUTO && d.count == 0);
    CHECK(lcm_parse_devices("cpu", &d, &err) == 0 && d.kind == LCM_DEVICES_CPU && d.count == 1);
    CHECK(lcm_parse_devices("cpu:12", &d, &err) == 0 && d.kind == LCM_DEVICES_CPU && d.count == 12);
    CHECK(lcm_parse_devices("3,0,2", &d, &err) == 0 && d.kind == LCM_DEVICES_GPU && d.count == 3);
    CHECK(d.gpus[0] == 3 && d.gpus[1] == 0 && d.gpus[2] == 2);
    CHECK_FAILS(lcm_parse_devices("0,2,0", &d, &err), &err, LCM_ERR_CONFIG, "listed twice");
    expect_invalid("trainer.devices=gpu0", NULL, "command line: trainer.devices = 'gpu0'");
}
