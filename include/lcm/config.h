/* config.h: the run configuration, its key schema, INI loading, bases and overrides.
 *
 * Every key lives once in the schema table (src/config/schema.c): section, name, type, default, allowed
 * range or values, a one-line doc, and where its value lands in lcm_config. Loading starts from the
 * defaults, applies the config file (after the files it names as bases, recursively), then the
 * command-line overrides `section.key=value` (also `+section.key=value` and `++section.key=value`, the
 * reference tool's spellings). Unknown keys, bad values and malformed files are errors that name the
 * file and line (or "command line"), the key, the value and what is allowed. */
#ifndef LCM_CONFIG_H
#define LCM_CONFIG_H

#include <stdint.h>
#include <stdio.h>
#include "lcm/error.h"
#include "lcm/fileio.h"
#include "lcm/half.h"

#define LCM_STR_MAX LCM_PATH_MAX
#define LCM_CONFIG_MAX_KEYS 88   /* capacity of lcm_config.origin; the schema has fewer keys */
/* The longest line iniparser reads: 1022 characters and the newline (it reads lines with fgets into
 * 1024 bytes). Every line lcm writes into a config file fits, so a written config always loads back. */
#define LCM_INI_LINE_MAX 1022
#define LCM_ORIGIN_MAX 160       /* "default", "command line" or "<file>:<line>" (long paths keep their tail) */

/* model.attention: the implementation of the attention ops. auto = cuDNN's fused attention where this
 * build, the library and the GPU support it, else the native kernels; the CPU backend has only native. */
typedef enum { LCM_ATTENTION_AUTO, LCM_ATTENTION_CUDNN, LCM_ATTENTION_NATIVE } lcm_attention;

typedef struct lcm_model_config {
    int sonar_dim;          /* D: concept embedding size */
    int model_dim;          /* C */
    int num_layers;         /* L */
    int num_heads;          /* H; head dim = C / H */
    int ffn_inner_dim;      /* F; 0 = derive: ffn_multiple_of * ceil(int(4C * 2/3) / ffn_multiple_of) */
    int ffn_multiple_of;
    int max_seq_len;        /* longest row the model accepts (RoPE positions) */
    float dropout;          /* residual dropout p */
    float rope_theta;
    float norm_eps;
    char normalizer[LCM_STR_MAX]; /* "none", "dataset" (normalizer.safetensors beside data.train), or a path */
    lcm_attention attention;  /* auto | cudnn | native: how attention is computed (not which model) */
} lcm_model_config;

typedef struct lcm_data_config {
    char train[LCM_STR_MAX];  /* training dataset (.lcmd) */
    char valid[LCM_STR_MAX];  /* validation dataset (.lcmd); "" = none */
    int max_seq_len;          /* documents (+EOT) are wrapped into rows of at most this many concepts */
    int64_t max_tokens;       /* padded concepts (rows x longest row) per micro-batch per device */
    int bucket_factor;        /* length buckets hold >= bucket_factor * max_tokens concepts */
    int shuffle;              /* shuffle rows into buckets and batch order, per epoch */
    int append_eot;           /* append the dataset's end-of-text concept to every document */
    int synthesize;           /* when data.train does not exist, synthesize it with [synth] */
    int check_finite;         /* scan the whole dataset for NaN/Inf when opening it for training */
    int64_t global_batch_tokens; /* padded concepts per optimizer step over all devices; 0 = grad_accum decides */
} lcm_data_config;

/* Enum keys are stored as C enums: the value of a key's first choice is its schema min, the next
 * choices count up from there (schema.c lists the choices in the enums' order). */
typedef enum { LCM_GRAD_REDUCE_F32, LCM_GRAD_REDUCE_BF16 } lcm_grad_reduce;
typedef enum { LCM_SCHEDULE_COSINE, LCM_SCHEDULE_CONSTANT } lcm_schedule;
typedef enum { LCM_RECOMPUTE_NONE, LCM_RECOMPUTE_LAYER } lcm_recompute;

typedef struct lcm_synth_config {
    int dim;                  /* D */
    lcm_dtype dtype;          /* f32, f16, bf16 */
    int64_t train_docs;
    int64_t valid_docs;
    int min_len;              /* concepts per document */
    int max_len;
    float mean_len;
    int latent_dim;           /* dimension of the hidden state that drives each document */
    float persistence;        /* how much of the latent state carries to the next concept (0..1) */
    float noise;              /* observation noise, relative to the per-dimension spread */
    float spread;             /* per-dimension standard deviation of the embeddings (SONAR: ~0.006) */
    uint64_t seed;
    int with_text;            /* also write a text side file with a made-up sentence per concept */
} lcm_synth_config;

typedef struct lcm_trainer_config {
    char experiment_name[128]; /* names the run in train.log, metrics.jsonl and the checkpoints' config */
    char devices[256];        /* auto | cpu | cpu:N | 0,2,3 (GPU ordinals, after CUDA_VISIBLE_DEVICES) */
    char output_dir[LCM_STR_MAX];
    int64_t max_steps;
    int grad_accum;           /* micro-batches per device per step */
    uint64_t seed;
    int log_every;
    int64_t validate_every;   /* 0 = never */
    int64_t validate_max_batches; /* 0 = the whole validation set */
    int64_t checkpoint_every; /* 0 = only at the end and on a signal */
    int keep_last;
    char resume[LCM_STR_MAX]; /* auto | never | path of a checkpoint directory */
    char init_from[LCM_STR_MAX]; /* weights (.safetensors) to start from; "" = initialise */
    int64_t stop_at_step;     /* stop after this step, with a checkpoint, as if interrupted; 0 = off */
    int64_t hang_timeout_s;   /* a device wait longer than this aborts the run (hung GPU or peer); 0 = off */
    int max_bad_steps;        /* NaN/Inf steps in a row before the run stops */
    lcm_grad_reduce grad_reduce_dtype; /* f32 | bf16 */
    int shard;                /* 0 replicated | 1 master weights and moments sharded | 2 and gradients reduce-scattered */
    int cpu_threads;          /* BLAS threads in total for CPU workers; 0 = all cores */
    int plot;                 /* write metrics.png at the end (needs python3 + matplotlib) */
    lcm_recompute recompute;  /* none | layer: keep each layer's input only, recompute the rest in backward */
} lcm_trainer_config;

typedef struct lcm_optim_config {
    float lr;                 /* peak learning rate */
    float beta1, beta2, eps;
    float weight_decay;       /* decoupled, applied to every parameter */
    float grad_clip;          /* global L2 norm; 0 = no clipping */
    lcm_schedule schedule;    /* cosine | constant */
    float start_lr;           /* warmup starts here */
    float final_lr;           /* cosine ends here */
    int64_t warmup_steps;
} lcm_optim_config;

typedef struct lcm_bench_config {
    int warmup_steps;
    int steps;
    float peak_tflops;        /* 0 = look the device up in the table */
} lcm_bench_config;

typedef struct lcm_generate_config {
    int max_gen_len;          /* concepts generated per prompt at most */
    int min_gen_len;          /* no EOT/repetition stop before this many */
    float eos_threshold;      /* cosine to the EOT embedding that stops a row */
    float repetition_threshold; /* cosine to the previous concept that stops a row; 0 = off */
    float temperature;        /* noise standard deviation in normalized space; 0 = deterministic */
    uint64_t seed;            /* of the noise */
    int batch_size;           /* prompts per batch per device */
} lcm_generate_config;

typedef struct lcm_config {
    char base[LCM_STR_MAX];   /* [config] base: the file(s) this config extends (as written) */
    lcm_model_config model;
    lcm_data_config data;
    lcm_synth_config synth;
    lcm_trainer_config trainer;
    lcm_optim_config optim;
    lcm_bench_config bench;
    lcm_generate_config generate;
    char source[LCM_STR_MAX]; /* the config file loaded ("<embedded>/default.ini" for the default) */
    /* Where each key's value came from, indexed like lcm_keys[]: "default", "conf/x.ini:12" or
     * "command line". Bookkeeping, not configuration: lcm_config_write prints it as comments. */
    char origin[LCM_CONFIG_MAX_KEYS][LCM_ORIGIN_MAX];
} lcm_config;

/* ---- schema ----------------------------------------------------------------------------------- */

typedef enum { LCM_KEY_INT, LCM_KEY_FLOAT, LCM_KEY_BOOL, LCM_KEY_STRING, LCM_KEY_ENUM } lcm_key_type;

typedef struct lcm_key {
    const char *section;
    const char *name;
    lcm_key_type type;
    size_t offset;        /* offsetof(lcm_config, ...) */
    int width;            /* bytes of the field: 4 or 8 for ints, 4 for floats, capacity for strings */
    const char *def;      /* default, as it would be written in an INI file */
    double min, max;      /* numeric range (inclusive) */
    const char *choices;  /* LCM_KEY_ENUM: "a|b|c", stored as the int min, min + 1, ... (a C enum) */
    const char *doc;
} lcm_key;

extern const lcm_key lcm_keys[];
extern const int lcm_num_keys;

const lcm_key *lcm_config_find_key(const char *section, const char *name);

/* The reference trainer's (large_concept_model, Hydra) key names, as they appear on its command line
 * (`trainer.lr`, `trainer.data_loading_config.max_tokens`, `launcher`): one table in schema.c, printed
 * by `lcm config refkeys` and documented in docs/reference-keys.md. Only command-line overrides are
 * looked up in it; config files use lcm's own names. */
typedef enum {
    LCM_REF_ALIAS,       /* another name for our key(s) `target` */
    LCM_REF_NOT_NEEDED,  /* no meaning in one process: accepted, with a notice saying `why` */
    LCM_REF_UNSUPPORTED  /* refused, with `why` */
} lcm_ref_kind;
typedef struct lcm_ref_key {
    const char *name;    /* "trainer.lr"; "launcher.*" matches launcher and every key under it */
    lcm_ref_kind kind;
    const char *target;  /* LCM_REF_ALIAS: "optim.lr"; two keys "optim.beta1,optim.beta2" take a list [a, b] */
    const char *values;  /* LCM_REF_ALIAS: reference value to ours, "noop=constant|cosine=cosine"; NULL = as is */
    const char *why;     /* the reason (NOT_NEEDED, UNSUPPORTED) or a note on the mapping (ALIAS, may be NULL) */
} lcm_ref_key;
extern const lcm_ref_key lcm_ref_keys[];
extern const int lcm_num_ref_keys;
/* The entry for a key as typed (lower case, without + or ++), or NULL. */
const lcm_ref_key *lcm_config_find_ref_key(const char *key);

/* Levenshtein distance (names of at most 127 bytes; longer ones are "far"): the did-you-mean helpers. */
int lcm_edit_distance(const char *a, const char *b);
/* The candidate closest to typed when it is close enough to suggest, else NULL. */
const char *lcm_closest_name(const char *typed, const char *const *candidates, int n);

/* ---- loading ---------------------------------------------------------------------------------- */

/* All keys at their defaults. */
void lcm_config_defaults(lcm_config *cfg);

/* Load `path` (NULL = the embedded conf/default.ini) over the defaults, then apply the overrides.
 * A path that does not exist on disk is looked up among the embedded conf/ files
 * (e.g. "model/toy.ini" or "conf/model/toy.ini"). Then validates cross-key rules (C divisible by H,
 * head dim even for RoPE, ...). */
int lcm_config_load(lcm_config *cfg, const char *path, int n_overrides, char *const *overrides, lcm_error *err);

/* Apply one override "section.key=value" (or +/++ spellings); `origin` names where it came from. */
int lcm_config_set(lcm_config *cfg, const char *assignment, const char *origin, lcm_error *err);

/* Cross-key validation (also run by lcm_config_load). Rules that hold for one command only (training's
 * data) are checked by that command. */
int lcm_config_validate(const lcm_config *cfg, lcm_error *err);

/* A key as messages name it: "model.model_dim = 2000 (conf/x.ini:3)"; buf of LCM_DESCRIBE_MAX. */
#define LCM_DESCRIBE_MAX (LCM_STR_MAX + LCM_ORIGIN_MAX + 64)
const char *lcm_config_describe(const lcm_config *cfg, const char *section, const char *name, char *buf, size_t cap);

/* The effective configuration as an INI file that lcm can load back (every key, with its value). */
int lcm_config_write(const lcm_config *cfg, FILE *f);
/* The key reference: section, key, type, default, range/values, doc. markdown = 1 for README tables. */
void lcm_config_print_keys(FILE *f, int markdown);

/* A hash of the keys that define the model and its data layout (resuming a run with a different
 * model is refused). */
uint64_t lcm_config_model_hash(const lcm_config *cfg);
/* 1 when key k enters lcm_config_model_hash (the model.* keys but model.attention, data.max_seq_len and
 * data.append_eot); the FFN keys enter through the derived FFN size instead. */
int lcm_config_key_in_model_hash(const lcm_key *k);

/* Derived sizes. */
int lcm_model_ffn_dim(const lcm_model_config *m);

/* trainer.devices, parsed: "auto", "cpu" (one CPU worker), "cpu:N" (N = 1..256 CPU workers) or a comma
 * list of distinct GPU ordinals 0..255 ("0,2,3"). lcm_config_validate checks the syntax with this. */
typedef enum { LCM_DEVICES_AUTO, LCM_DEVICES_CPU, LCM_DEVICES_GPU } lcm_devices_kind;
typedef struct lcm_devices {
    lcm_devices_kind kind;
    int count;            /* CPU workers, or GPUs listed; 0 for auto */
    int gpus[256];        /* LCM_DEVICES_GPU: the ordinals, in the order written */
} lcm_devices;
int lcm_parse_devices(const char *spec, lcm_devices *out, lcm_error *err);

/* The conf/ tree compiled into the binary (tools/embed_conf.sh). Terminated by {NULL, NULL, 0}. */
typedef struct lcm_embedded_file {
    const char *path;     /* relative to conf/, e.g. "model/toy.ini" */
    const char *data;
    size_t size;
} lcm_embedded_file;
extern const lcm_embedded_file lcm_embedded_conf[];

#endif
