/* schema.c: every configuration key, once: section, name, type, where it lands in lcm_config, default,
 * allowed range or values, and a one-line doc. Loading, writing, validation and the key reference
 * (`lcm config keys`) are all driven by this table.
 *
 * Defaults are the reference recipe (base_lcm_1_6B, pretrain/mse; see docs/config.md). Ranges are
 * inclusive; a bound of "> 0" is written as a tiny positive minimum. */
#include <stddef.h>
#include <string.h>

#include "config_internal.h"

/* Offset and byte width of a field of lcm_config, so that a row cannot name one field and size another. */
#define FIELD(f) offsetof(lcm_config, f), (int)sizeof(((lcm_config *)0)->f)

#define I LCM_KEY_INT
#define R LCM_KEY_FLOAT
#define B LCM_KEY_BOOL
#define S LCM_KEY_STRING
#define E LCM_KEY_ENUM

#define BIG 1e12       /* "no practical limit" for counts of steps, documents, concepts */
#define SEED_MAX 9223372036854775807.0

const lcm_key lcm_keys[] = {
    {"config", "base", S, FIELD(base), "", 0, 0, NULL,
     "file(s) this config extends, comma-separated, relative to this file; applied first, in order"},

    {"model", "sonar_dim", I, FIELD(model.sonar_dim), "1024", 1, 65536, NULL, "D: size of a concept (SONAR) embedding"},
    {"model", "model_dim", I, FIELD(model.model_dim), "2048", 1, 65536, NULL, "C: transformer width"},
    {"model", "num_layers", I, FIELD(model.num_layers), "32", 1, 1024, NULL, "L: decoder layers"},
    {"model", "num_heads", I, FIELD(model.num_heads), "16", 1, 1024, NULL,
     "H: attention heads; the head dim C/H must be an even integer (RoPE rotates pairs)"},
    {"model", "ffn_inner_dim", I, FIELD(model.ffn_inner_dim), "0", 0, 1048576, NULL,
     "F: SwiGLU inner size; 0 = ffn_multiple_of * ceil(int(8C/3) / ffn_multiple_of)"},
    {"model", "ffn_multiple_of", I, FIELD(model.ffn_multiple_of), "256", 1, 65536, NULL,
     "rounding multiple for the derived ffn_inner_dim"},
    {"model", "max_seq_len", I, FIELD(model.max_seq_len), "4096", 2, 1048576, NULL,
     "longest row (concepts) the model accepts; RoPE positions"},
    {"model", "dropout", R, FIELD(model.dropout), "0.1", 0, 0.99, NULL, "residual dropout probability (training only)"},
    {"model", "rope_theta", R, FIELD(model.rope_theta), "10000", 1, 1e9, NULL, "RoPE base frequency"},
    {"model", "norm_eps", R, FIELD(model.norm_eps), "1e-5", 1e-12, 1, NULL, "RMSNorm epsilon"},
    {"model", "normalizer", S, FIELD(model.normalizer), "dataset", 0, 0, NULL,
     "embedding normalizer: none, dataset (normalizer.safetensors beside data.train) or a path"},
    {"model", "attention", E, FIELD(model.attention), "auto", LCM_ATTENTION_AUTO, 0, "auto|cudnn|native",
     "attention on GPUs: cudnn (cuDNN's fused attention), native (lcm's kernels) or auto (cudnn where this build, "
     "the library and the GPU support it, else native); on the CPU only native (cudnn there is an error); same "
     "model either way"},

    {"data", "train", S, FIELD(data.train), "", 0, 0, NULL,
     "training dataset (.lcmd); \"\" = <trainer.output_dir>/data/train.lcmd (with data.synthesize)"},
    {"data", "valid", S, FIELD(data.valid), "", 0, 0, NULL, "validation dataset (.lcmd); \"\" = none (or the synthesized one)"},
    {"data", "max_seq_len", I, FIELD(data.max_seq_len), "128", 2, 1048576, NULL,
     "documents (+EOT) are wrapped into rows of at most this many concepts"},
    {"data", "max_tokens", I, FIELD(data.max_tokens), "7168", 1, BIG, NULL,
     "padded concepts (rows x longest row) per micro-batch per device"},
    {"data", "bucket_factor", I, FIELD(data.bucket_factor), "4", 1, 1024, NULL,
     "length buckets hold at least bucket_factor * max_tokens concepts"},
    {"data", "shuffle", B, FIELD(data.shuffle), "true", 0, 1, NULL, "shuffle rows into buckets and the batch order, every epoch"},
    {"data", "append_eot", B, FIELD(data.append_eot), "true", 0, 1, NULL,
     "append the dataset's end-of-text concept to every document"},
    {"data", "synthesize", B, FIELD(data.synthesize), "false", 0, 1, NULL,
     "with data.train empty: synthesize <output_dir>/data/{train,valid}.lcmd with [synth] unless there"},
    {"data", "check_finite", B, FIELD(data.check_finite), "true", 0, 1, NULL,
     "scan the whole dataset for NaN/Inf before training"},
    {"data", "global_batch_tokens", I, FIELD(data.global_batch_tokens), "0", 0, BIG, NULL,
     "padded concepts per optimizer step over all devices (devices x grad_accum x max_tokens): trainer.grad_accum "
     "follows from it, so the step does not depend on the device count; 0 = trainer.grad_accum decides"},

    {"synth", "dim", I, FIELD(synth.dim), "1024", 1, 65536, NULL, "embedding size D of the synthesized data"},
    {"synth", "dtype", E, FIELD(synth.dtype), "f16", LCM_F32, 0, "f32|f16|bf16", "storage type of the synthesized embeddings"},
    {"synth", "train_docs", I, FIELD(synth.train_docs), "2000", 1, BIG, NULL, "documents in the synthesized training set"},
    {"synth", "valid_docs", I, FIELD(synth.valid_docs), "100", 0, BIG, NULL,
     "documents in the synthesized validation set (0 = none)"},
    {"synth", "min_len", I, FIELD(synth.min_len), "4", 1, 1000000, NULL, "shortest document (concepts)"},
    {"synth", "max_len", I, FIELD(synth.max_len), "300", 1, 1000000, NULL, "longest document (concepts)"},
    {"synth", "mean_len", R, FIELD(synth.mean_len), "30", 1, 1000000, NULL, "mean document length, within [min_len, max_len]"},
    {"synth", "latent_dim", I, FIELD(synth.latent_dim), "32", 1, 65536, NULL, "size of the hidden state that drives a document"},
    {"synth", "persistence", R, FIELD(synth.persistence), "0.9", 0, 1, NULL,
     "share of the hidden state carried to the next concept"},
    {"synth", "noise", R, FIELD(synth.noise), "0.3", 0, 100, NULL, "observation noise, relative to synth.spread"},
    {"synth", "spread", R, FIELD(synth.spread), "0.006", 1e-12, 1e6, NULL,
     "per-dimension standard deviation of the embeddings (SONAR: about 0.006)"},
    {"synth", "seed", I, FIELD(synth.seed), "1", 0, SEED_MAX, NULL, "random seed of the synthesized data"},
    {"synth", "with_text", B, FIELD(synth.with_text), "false", 0, 1, NULL,
     "also write a text side file with a made-up sentence per concept"},

    {"trainer", "experiment_name", S, FIELD(trainer.experiment_name), "", 0, 0, NULL,
     "name of the run in train.log, metrics.jsonl and the checkpoints' stored config; \"\" = none"},
    {"trainer", "devices", S, FIELD(trainer.devices), "auto", 0, 0, NULL,
     "auto (all GPUs; the CPU only where no NVIDIA driver is present), cpu, cpu:N (N CPU workers) or GPU "
     "ordinals 0,2,3"},
    {"trainer", "output_dir", S, FIELD(trainer.output_dir), "runs/lcm", 0, 0, NULL,
     "run directory: checkpoints, metrics, logs"},
    {"trainer", "max_steps", I, FIELD(trainer.max_steps), "250000", 1, BIG, NULL, "optimizer steps in the whole run"},
    {"trainer", "grad_accum", I, FIELD(trainer.grad_accum), "1", 1, 65536, NULL, "micro-batches per device per step"},
    {"trainer", "seed", I, FIELD(trainer.seed), "1", 0, SEED_MAX, NULL, "seed of initialization, dropout and shuffling"},
    {"trainer", "log_every", I, FIELD(trainer.log_every), "10", 1, 1000000000, NULL, "steps between metrics lines"},
    {"trainer", "validate_every", I, FIELD(trainer.validate_every), "10000", 0, BIG, NULL, "steps between validations; 0 = never"},
    {"trainer", "validate_max_batches", I, FIELD(trainer.validate_max_batches), "0", 0, BIG, NULL,
     "validation batches per validation; 0 = the whole set"},
    {"trainer", "checkpoint_every", I, FIELD(trainer.checkpoint_every), "2000", 0, BIG, NULL,
     "steps between checkpoints; 0 = only at the end and on a signal"},
    {"trainer", "keep_last", I, FIELD(trainer.keep_last), "2", 1, 1000000, NULL, "checkpoints kept (older ones are deleted)"},
    {"trainer", "resume", S, FIELD(trainer.resume), "auto", 0, 0, NULL,
     "auto (latest checkpoint in output_dir, if any), never, or a checkpoint directory"},
    {"trainer", "init_from", S, FIELD(trainer.init_from), "", 0, 0, NULL,
     "weights (.safetensors) to start from; \"\" = fresh initialization"},
    {"trainer", "stop_at_step", I, FIELD(trainer.stop_at_step), "0", 0, BIG, NULL,
     "stop after this step with a checkpoint (the schedule still follows max_steps); a rerun once it is reached does "
     "nothing; 0 = off"},
    {"trainer", "hang_timeout_s", I, FIELD(trainer.hang_timeout_s), "1800", 0, BIG, NULL,
     "seconds a worker may make no progress (in one phase: loading, forward, backward, collective, optimizer, "
     "validation, checkpoint) before the watchdog aborts the run, and the longest wait for another process at "
     "start-up under mpirun; 0 = off"},
    {"trainer", "max_bad_steps", I, FIELD(trainer.max_bad_steps), "20", 1, 1000000, NULL,
     "NaN/Inf steps in a row (skipped) before the run stops"},
    {"trainer", "grad_reduce_dtype", E, FIELD(trainer.grad_reduce_dtype), "f32", LCM_GRAD_REDUCE_F32, 0, "f32|bf16",
     "type gradients are all-reduced in across GPUs"},
    {"trainer", "recompute", E, FIELD(trainer.recompute), "none", LCM_RECOMPUTE_NONE, 0, "none|layer",
     "activations: none keeps every layer's; layer keeps each layer's input and recomputes its forward just before "
     "its backward (same gradients, less memory, about one more forward of compute)"},
    {"trainer", "shard", I, FIELD(trainer.shard), "0", 0, 2, NULL,
     "0: every device keeps the whole training state; 1: each device keeps the AdamW moments (on GPUs also the fp32 "
     "master weights) of its slice of the flat parameter vector only and updates only that slice, gradients are "
     "all-reduced, the updated compute weights all-gathered; 2: as 1, gradients reduce-scattered into each "
     "device's slice (with grad_accum 1 no full gradient is kept); 1 and 2 need 2 or more devices"},
    {"trainer", "cpu_threads", I, FIELD(trainer.cpu_threads), "0", 0, 4096, NULL,
     "BLAS threads in total for CPU workers; 0 = all cores"},
    {"trainer", "plot", B, FIELD(trainer.plot), "true", 0, 1, NULL, "write metrics.png at the end (needs python3 + matplotlib)"},

    {"optim", "lr", R, FIELD(optim.lr), "4e-4", 1e-12, 10, NULL, "peak learning rate (AdamW)"},
    {"optim", "beta1", R, FIELD(optim.beta1), "0.9", 0, 0.999999, NULL, "AdamW first-moment decay"},
    {"optim", "beta2", R, FIELD(optim.beta2), "0.95", 0, 0.999999, NULL, "AdamW second-moment decay"},
    {"optim", "eps", R, FIELD(optim.eps), "1e-5", 1e-30, 1, NULL, "AdamW epsilon"},
    {"optim", "weight_decay", R, FIELD(optim.weight_decay), "0.1", 0, 10, NULL,
     "decoupled weight decay, applied to every parameter"},
    {"optim", "grad_clip", R, FIELD(optim.grad_clip), "25", 0, 1e9, NULL, "clip the global gradient L2 norm to this; 0 = no clipping"},
    {"optim", "schedule", E, FIELD(optim.schedule), "cosine", LCM_SCHEDULE_COSINE, 0, "cosine|constant",
     "learning rate after warmup: cosine decay to final_lr, or constant lr"},
    {"optim", "start_lr", R, FIELD(optim.start_lr), "1e-7", 0, 10, NULL, "learning rate at the first warmup step"},
    {"optim", "final_lr", R, FIELD(optim.final_lr), "1e-5", 0, 10, NULL, "learning rate the cosine decays to"},
    {"optim", "warmup_steps", I, FIELD(optim.warmup_steps), "10000", 0, BIG, NULL,
     "linear warmup from start_lr to lr over this many steps"},

    {"bench", "warmup_steps", I, FIELD(bench.warmup_steps), "3", 0, 1000000, NULL, "untimed steps before measuring"},
    {"bench", "steps", I, FIELD(bench.steps), "10", 1, 1000000, NULL, "timed steps"},
    {"bench", "peak_tflops", R, FIELD(bench.peak_tflops), "0", 0, 1e6, NULL,
     "device peak for the MFU figure; 0 = look the device up"},

    {"generate", "max_gen_len", I, FIELD(generate.max_gen_len), "200", 1, 1048576, NULL,
     "concepts generated per prompt at most (the reference generator's default; its evaluation uses 128)"},
    {"generate", "min_gen_len", I, FIELD(generate.min_gen_len), "1", 0, 1048576, NULL,
     "no end-of-text or repetition stop before this many generated concepts"},
    {"generate", "eos_threshold", R, FIELD(generate.eos_threshold), "0.9", -1, 2, NULL,
     "a row stops when the cosine of its new concept to the EOT embedding reaches this (> 1: never)"},
    {"generate", "repetition_threshold", R, FIELD(generate.repetition_threshold), "0", 0, 2, NULL,
     "a row stops when the cosine of its new concept to the previous one reaches this; 0 = off"},
    {"generate", "temperature", R, FIELD(generate.temperature), "0", 0, 100, NULL,
     "std of Gaussian noise added in normalized space; 0 = deterministic (the reference samples at 1)"},
    {"generate", "seed", I, FIELD(generate.seed), "0", 0, SEED_MAX, NULL, "seed of the generation noise"},
    {"generate", "batch_size", I, FIELD(generate.batch_size), "16", 1, 65536, NULL, "prompts per batch per device"},
};

const int lcm_num_keys = (int)(sizeof lcm_keys / sizeof lcm_keys[0]);

_Static_assert(sizeof lcm_keys / sizeof lcm_keys[0] <= LCM_CONFIG_MAX_KEYS, "raise LCM_CONFIG_MAX_KEYS");

/* The reference trainer's names, read from its MSE pretraining recipe and its training-configuration
 * dataclass (TrainingConfig), plus the launcher group of its Hydra config; docs/reference-keys.md
 * explains each row (and is checked against this table by tests/test_reference_cli.sh). */
#define ALIAS(ref, ours) {ref, LCM_REF_ALIAS, ours, NULL, NULL}
#define NOT_NEEDED(ref, why) {ref, LCM_REF_NOT_NEEDED, NULL, NULL, why}
#define UNSUPPORTED(ref, why) {ref, LCM_REF_UNSUPPORTED, NULL, NULL, why}
#define ONE_PROCESS "lcm is one process with a thread per device; there is no job to launch or process group to set up"

const lcm_ref_key lcm_ref_keys[] = {
    ALIAS("trainer.lr", "optim.lr"),
    ALIAS("trainer.start_lr", "optim.start_lr"),
    ALIAS("trainer.final_lr", "optim.final_lr"),
    ALIAS("trainer.num_lr_warmup_steps", "optim.warmup_steps"),
    ALIAS("trainer.warmup_steps", "optim.warmup_steps"),
    {"trainer.lr_schedule", LCM_REF_ALIAS, "optim.schedule", "cosine=cosine|noop=constant",
     "myle (inverse square root) and wsd (warmup-stable-decay) are not implemented"},
    ALIAS("trainer.weight_decay", "optim.weight_decay"),
    ALIAS("trainer.adam_betas", "optim.beta1,optim.beta2"),
    ALIAS("trainer.adam_eps", "optim.eps"),
    ALIAS("trainer.max_grad_norm", "optim.grad_clip"),
    ALIAS("trainer.gradient_accumulation", "trainer.grad_accum"),
    ALIAS("trainer.validate_every_n_steps", "trainer.validate_every"),
    ALIAS("trainer.checkpoint_every_n_steps", "trainer.checkpoint_every"),
    {"trainer.save_model_every_n_steps", LCM_REF_ALIAS, "trainer.checkpoint_every", NULL,
     "every lcm checkpoint holds the whole (consolidated) model, so the two reference periods are one"},
    ALIAS("trainer.keep_last_n_checkpoints", "trainer.keep_last"),
    ALIAS("trainer.publish_metrics_every_n_steps", "trainer.log_every"),
    ALIAS("trainer.max_nans_or_infs", "trainer.max_bad_steps"),
    {"trainer.fsdp_fp32_reduce", LCM_REF_ALIAS, "trainer.grad_reduce_dtype", "true=f32|false=bf16", NULL},
    ALIAS("trainer.data_loading_config.max_tokens", "data.max_tokens"),

    NOT_NEEDED("launcher.*", ONE_PROCESS " (CUDA_VISIBLE_DEVICES and trainer.devices pick the GPUs)"),
    NOT_NEEDED("trainer.use_submitit", ONE_PROCESS " (nothing is submitted to a cluster)"),
    NOT_NEEDED("trainer.use_fsdp", ONE_PROCESS "; the devices' threads share one copy of the data and all-reduce the gradients"),
    NOT_NEEDED("trainer.fsdp_wrap_granularity", ONE_PROCESS " (no FSDP wrapping)"),
    NOT_NEEDED("trainer.fsdp_memory_policy", ONE_PROCESS " (no FSDP wrapping)"),
    NOT_NEEDED("trainer.requirements.*", ONE_PROCESS " (no cluster resources to request; trainer.devices uses this machine)"),
    NOT_NEEDED("trainer.log_folder", ONE_PROCESS " (no launcher output to redirect; train.log is in trainer.output_dir)"),
    NOT_NEEDED("trainer.fake_gang_device", ONE_PROCESS " (one device is trainer.devices=0 or trainer.devices=cpu)"),
    NOT_NEEDED("trainer.gc_every_n_steps", "Python garbage collection; lcm allocates everything before the first step"),
    NOT_NEEDED("trainer.use_submitit_requeue", ONE_PROCESS " (rerunning the same command resumes)"),
    NOT_NEEDED("trainer.dtype", "the backend fixes the precision: fp32 on the CPU, bf16 with fp32 master weights on GPUs"),
    NOT_NEEDED("trainer.use_optimizer_in_fp32", "the AdamW state is always fp32"),
    NOT_NEEDED("trainer.use_autocast", "the backend fixes the precision: fp32 on the CPU, bf16 with fp32 master weights on GPUs"),
    NOT_NEEDED("trainer.loss_scaler_init_scale", "bf16 needs no loss scaling"),
    NOT_NEEDED("trainer.loss_scaler_scale_window", "bf16 needs no loss scaling"),
    NOT_NEEDED("trainer.max_subword_length", "it bounds backpropagation through the SONAR decoder, which MSE training of "
               "Base-LCM never does"),
    NOT_NEEDED("trainer.preserve_consolidated_models", "every checkpoint holds the whole model"),
    NOT_NEEDED("trainer.wandb_project", "no tracking service: tools/metrics_to_tensorboard.py reads metrics.jsonl"),
    NOT_NEEDED("trainer.wandb_run_name", "no tracking service: trainer.experiment_name names the run"),
    NOT_NEEDED("trainer.wandb_entity", "no tracking service: tools/metrics_to_tensorboard.py reads metrics.jsonl"),
    NOT_NEEDED("trainer.tb_dir", "tools/metrics_to_tensorboard.py RUN_DIR writes the TensorBoard events"),

    UNSUPPORTED("trainer.model_arch", "pick the architecture with +pretrain=NAME or a config file whose base is a "
                "conf/model/*.ini (`lcm model info` prints one)"),
    UNSUPPORTED("trainer.model_arch_overrides.*", "set the model.* keys instead (`lcm config keys`)"),
    UNSUPPORTED("trainer.model_config_or_name", "set the model.* keys instead (`lcm config keys`)"),
    UNSUPPORTED("trainer.criterion.*", "the loss is fixed: the next-concept MSE of Base-LCM (docs/model.md)"),
    UNSUPPORTED("trainer.lr_stage_ratios", "the wsd schedule is not implemented (optim.schedule = cosine or constant)"),
    UNSUPPORTED("trainer.data_loading_config.batch_size", "batches are sized by concepts, not rows: data.max_tokens"),
    UNSUPPORTED("trainer.data_loading_config.*", "lcm's loader is configured by the data.* keys (docs/dataset-format.md)"),
    UNSUPPORTED("trainer.validation_data_loading_config.*", "validation batches use data.max_tokens and the data.* keys too; "
                "trainer.validate_max_batches bounds one validation"),
    UNSUPPORTED("trainer.training_data", "give a dataset file: data.train=PATH.lcmd (`lcm data import` makes one)"),
    UNSUPPORTED("trainer.validation_data", "give a dataset file: data.valid=PATH.lcmd (`lcm data import` makes one)"),
    UNSUPPORTED("trainer.pretrained_model", "give the weights as trainer.init_from=FILE.safetensors "
                "(tools/convert_reference.py to-lcm converts a fairseq2 checkpoint)"),
    UNSUPPORTED("trainer.turn_off_grad_normalization", "the loss is always the mean over the step's targets"),
    UNSUPPORTED("trainer.freeze_modules", "every parameter is trained"),
    UNSUPPORTED("trainer.freezing_strategy", "every parameter is trained"),
    UNSUPPORTED("trainer.profile", "no profiler: `lcm bench` measures step time, TFLOP/s and memory"),
    UNSUPPORTED("trainer.debug", "no debug mode: train.log records every step's warnings"),
    UNSUPPORTED("trainer.raise_oom", "an out-of-memory error stops the run (resume with a smaller data.max_tokens)"),
    UNSUPPORTED("trainer.max_ooms", "an out-of-memory error stops the run (resume with a smaller data.max_tokens)"),
    UNSUPPORTED("trainer.raise_nan_or_inf", "NaN/Inf steps are skipped; trainer.max_bad_steps in a row stop the run"),
};
const int lcm_num_ref_keys = (int)(sizeof lcm_ref_keys / sizeof lcm_ref_keys[0]);

const lcm_ref_key *lcm_config_find_ref_key(const char *key) {
    for (int i = 0; i < lcm_num_ref_keys; i++) {
        const char *n = lcm_ref_keys[i].name;
        size_t len = strlen(n);
        if (len > 2 && strcmp(n + len - 2, ".*") == 0) { /* the group itself, or a key under it */
            if (strncmp(key, n, len - 2) == 0 && (key[len - 2] == '\0' || key[len - 2] == '.')) return &lcm_ref_keys[i];
        } else if (strcmp(key, n) == 0) {
            return &lcm_ref_keys[i];
        }
    }
    return NULL;
}

const char *const lcm_config_sections[] = {"config", "model", "data", "synth", "trainer", "optim", "bench", "generate", NULL};

const lcm_key *lcm_config_find_key(const char *section, const char *name) {
    for (int i = 0; i < lcm_num_keys; i++)
        if (strcmp(lcm_keys[i].section, section) == 0 && strcmp(lcm_keys[i].name, name) == 0) return &lcm_keys[i];
    return NULL;
}

int lcm_config_is_section(const char *section) {
    for (int i = 0; lcm_config_sections[i]; i++)
        if (strcmp(lcm_config_sections[i], section) == 0) return 1;
    return 0;
}

int lcm_model_ffn_dim(const lcm_model_config *m) {
    if (m->ffn_inner_dim > 0) return m->ffn_inner_dim;
    /* The reference computes int(4 * C * 2 / 3) in floating point; for integer C that is floor(8C / 3). */
    int base = (int)((8LL * m->model_dim) / 3);
    int k = m->ffn_multiple_of;
    return k * ((base + k - 1) / k);
}
