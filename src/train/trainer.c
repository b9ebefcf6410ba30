/* trainer.c: `lcm train` on the main thread: the run directory, the data (synthesized when asked),
 * the normalizer, the starting state (fresh, init_from weights, or the newest checkpoint), the devices
 * and their communicators, then one worker thread per device, and the summary once they are done.
 * Anything that can fail does so here, before a worker starts, with a message saying what to do. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lcm/gpumon.h"
#include "lcm/log.h"
#include "lcm/memplan.h"
#include "lcm/mpi.h"
#include "lcm/sbuf.h"
#include "lcm/synth.h"
#include "train_internal.h"

/* ---- the run directory and the starting point ------------------------------------------------- */

/* One trainer per run directory: an exclusive flock on <run_dir>/.lock, held (through the open
 * descriptor) until lcm_train returns or the process ends. The kernel drops it when the holder dies,
 * even by SIGKILL, so a stale lock never blocks. The holder's pid is written into the file for the
 * message the next trainer prints. Taken before anything in the run directory is written or removed. */
static int lock_run_dir(const char *run_dir, int *fd_out, lcm_error *err) {
    char path[LCM_PATH_MAX + 32];
    if (lcm_path_join(path, sizeof path, run_dir, ".lock") != 0)
        return lcm_fail(err, LCM_ERR_CONFIG, "trainer.output_dir is too long");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return lcm_fail(err, LCM_ERR_IO, "cannot create the lock file %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = e == EWOULDBLOCK ? pread(fd, pid, sizeof pid - 1, 0) : -1;
        close(fd);
        if (e != EWOULDBLOCK) return lcm_fail(err, LCM_ERR_IO, "cannot lock %s: %s", path, strerror(e));
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        return lcm_fail(err, LCM_ERR_IO,
                        "%s is in use by another lcm train (pid %s); wait for it to finish, stop it, or choose another "
                        "trainer.output_dir", run_dir, pid[0] ? pid : "unknown");
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        lcm_warn("cannot write the pid into %s: %s (the lock itself holds)", path, strerror(errno));
    *fd_out = fd;
    return 0;
}

/* metrics.jsonl after a resume from step `step` (0: a fresh start): the lines of steps past it were
 * written by a run that died before checkpointing them, and the resumed run writes those steps again.
 * They are dropped, and so is a torn last line; the file is replaced atomically. */
static int trim_metrics(const char *path, int64_t step, lcm_error *err) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0; /* none yet, or a device such as /dev/null */
    char *text = NULL;
    size_t size = 0;
    LCM_TRY(lcm_read_file(path, &text, &size, err));
    size_t kept = 0, dropped = 0;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        char *end = nl ? nl + 1 : line + strlen(line);
        const char *key = strstr(line, "\"step\":");
        int keep = nl && key && key < nl;
        if (keep) {
            char *after;
            long long v = strtoll(key + 7, &after, 10);
            keep = after != key + 7 && v <= step;
        }
        if (keep) {
            memmove(text + kept, line, (size_t)(end - line));
            kept += (size_t)(end - line);
        } else {
            dropped++;
        }
        line = end;
    }
    int rc = dropped ? lcm_write_file_atomic(path, text, kept, err) : 0;
    if (!rc && dropped)
        lcm_info("metrics.jsonl: dropped %zu line%s past step %" PRId64 " (written before the last checkpoint was)",
                 dropped, dropped > 1 ? "s" : "", step);
    free(text);
    return rc;
}

void lcm_run_metrics_line(lcm_run *run, const char *line) {
    if (!run->metrics || run->metrics_errno) return;
    if (fputs(line, run->metrics) < 0 || fflush(run->metrics) != 0) {
        run->metrics_errno = errno ? errno : EIO;
        lcm_warn("cannot write %s: %s; training goes on without metrics (checkpoints are unaffected) and "
                 "the run will exit with status 1", run->metrics_path, strerror(run->metrics_errno));
    }
}

static int config_text(const lcm_config *cfg, char **out, lcm_error *err) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    int rc = lcm_config_write(cfg, f);
    fclose(f);
    if (rc != 0) {
        free(buf);
        return lcm_fail(err, LCM_ERR_IO, "cannot render the effective config");
    }
    *out = buf;
    return 0;
}

/* The value of section.key in a config written by lcm_config_write (quoted values as written), or "". */
static void stored_value(const char *text, const char *section, const char *key, char *out, size_t cap) {
    out[0] = '\0';
    int in_section = 0;
    size_t nk = strlen(key);
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        size_t n = strcspn(line, "\n");
        if (line[0] == '[') {
            in_section = n == strlen(section) + 2 && strncmp(line + 1, section, strlen(section)) == 0;
        } else if (in_section && n > nk + 3 && strncmp(line, key, nk) == 0 && strncmp(line + nk, " = ", 3) == 0) {
            const char *v = line + nk + 3, *end = v;
            if (*v == '"' || *v == '\'') {
                const char *q = memchr(v + 1, *v, n - nk - 4);
                end = q ? q + 1 : line + n;
            } else {
                end = v + strcspn(v, "#\n");
            }
            while (end > v && end[-1] == ' ') end--;
            snprintf(out, cap, "%.*s", (int)(end - v), v);
            return;
        }
    }
}

/* What changed since the checkpoint in ways that alter the run from here on: said before training
 * starts (and so in train.log), never refused. Old checkpoints without the device line say less. */
static void resume_notices(const lcm_run *run, const char *ckpt) {
    const lcm_config *cfg = run->cfg;
    char *text = NULL, v[64];
    lcm_error ignored = {0};
    if (lcm_checkpoint_config_text(ckpt, &text, &ignored) != 0) return;
    stored_value(text, "trainer", "max_steps", v, sizeof v);
    int64_t old_max = v[0] ? strtoll(v, NULL, 10) : cfg->trainer.max_steps;
    if (old_max != cfg->trainer.max_steps && cfg->optim.schedule == LCM_SCHEDULE_COSINE)
        lcm_warn("trainer.max_steps changed from %" PRId64 " to %" PRId64 " since %s: the schedule bends at step %" PRId64
                 " (the cosine is recomputed over the new length: the learning rate goes from %.3g to %.3g at once, "
                 "not as the run began)", old_max, cfg->trainer.max_steps, ckpt, run->start.step + 1,
                 lcm_lr_at(&cfg->optim, old_max, run->start.step + 1), lcm_lr_at(&cfg->optim, cfg->trainer.max_steps, run->start.step + 1));
    else if (old_max != cfg->trainer.max_steps)
        lcm_info("trainer.max_steps changed from %" PRId64 " to %" PRId64 " since %s (the constant schedule is unchanged)",
                 old_max, cfg->trainer.max_steps, ckpt);
    /* The global batch: the checkpoint's micro-batches per step (train_state) of its data.max_tokens
     * (its stored config). Checkpoints from before the micro-batch count say nothing. */
    stored_value(text, "data", "max_tokens", v, sizeof v);
    const int64_t T = run->max_tokens, old_tokens = v[0] ? strtoll(v, NULL, 10) : T;
    const int64_t was = run->start.step_microbatches, now = (int64_t)run->n * run->accum;
    const int64_t old_batch = was * old_tokens, new_batch = now * T;
    if (was > 0 && old_batch != new_batch) {
        char keep[200];
        if (old_batch % ((int64_t)run->n * T) == 0)
            snprintf(keep, sizeof keep, "to keep it, set trainer.grad_accum=%" PRId64 " (or data.global_batch_tokens=%"
                     PRId64 ")", old_batch / ((int64_t)run->n * T), old_batch);
        else if (old_batch % now == 0)
            snprintf(keep, sizeof keep, "no whole trainer.grad_accum keeps it with %d devices; data.max_tokens=%" PRId64
                     " does", run->n, old_batch / now);
        else
            snprintf(keep, sizeof keep, "to keep it, set data.global_batch_tokens=%" PRId64 " on a device count that "
                     "divides it", old_batch);
        lcm_warn("the global batch changes from %" PRId64 " to %" PRId64 " concepts per step (micro-batches x "
                 "data.max_tokens: %" PRId64 " x %" PRId64 " when %s was written, %d device%s x grad_accum %d x %"
                 PRId64 " now); %s", old_batch, new_batch, was, old_tokens, ckpt, run->n, run->n > 1 ? "s" : "",
                 run->accum, T, keep);
    }
    free(text);
}

/* A checkpoint of another model: which keys differ, and what to do. Run before the weights are read
 * (their shapes would not match); with no key differing it passes unless `force` (the model hashes
 * differ, so something does). */
static int check_same_model(const lcm_run *run, const char *ckpt, int force, lcm_error *err) {
    char *text = NULL, diff[768] = "";
    lcm_error ignored = {0};
    if (lcm_checkpoint_config_text(ckpt, &text, &ignored) == 0) {
        lcm_model_config was_m = run->cfg->model;
        char was[LCM_STR_MAX], now[LCM_STR_MAX];
        stored_value(text, "model", "model_dim", was, sizeof was);
        if (was[0]) was_m.model_dim = atoi(was);
        stored_value(text, "model", "ffn_inner_dim", was, sizeof was);
        if (was[0]) was_m.ffn_inner_dim = atoi(was);
        stored_value(text, "model", "ffn_multiple_of", was, sizeof was);
        if (was[0]) was_m.ffn_multiple_of = atoi(was);
        int ffn_was = lcm_model_ffn_dim(&was_m), ffn_now = lcm_model_ffn_dim(&run->cfg->model);
        if (ffn_was != ffn_now) snprintf(diff, sizeof diff, "FFN inner size %d there, %d now", ffn_was, ffn_now);
        for (int i = 0; i < lcm_num_keys; i++) {
            const lcm_key *k = &lcm_keys[i];
            if (!lcm_config_key_in_model_hash(k)) continue;
            stored_value(text, k->section, k->name, was, sizeof was);
            stored_value(run->config_text, k->section, k->name, now, sizeof now);
            size_t len = strlen(diff);
            if (was[0] && strcmp(was, now) != 0 && len + 64 < sizeof diff)
                snprintf(diff + len, sizeof diff - len, "%s%s.%s %.40s there, %.40s now", len ? ", " : "", k->section,
                         k->name, was, now);
        }
        free(text);
    }
    if (!diff[0] && !force) return 0;
    return lcm_fail(err, LCM_ERR_USAGE,
                    "%s holds the run of another model (%s; its newest checkpoint: %s); to train this model choose a new "
                    "trainer.output_dir (the checkpoints there are never overwritten), or to continue that run restore "
                    "those settings", run->run_dir, diff[0] ? diff : "its model config differs", ckpt);
}

/* Where training starts: a checkpoint to resume (dir filled) or nothing (dir empty). */
static int choose_start(const lcm_config *cfg, const char *run_dir, char *dir, size_t cap, lcm_error *err) {
    dir[0] = '\0';
    const char *resume = cfg->trainer.resume;
    int found = 0;
    char latest[LCM_PATH_MAX + 64];
    if (strcmp(resume, "auto") == 0) { /* the newest checkpoint that verifies */
        LCM_TRY(lcm_checkpoint_latest_verified(run_dir, latest, sizeof latest, &found, err));
        if (found) snprintf(dir, cap, "%s", latest);
        return 0;
    }
    LCM_TRY(lcm_checkpoint_latest(run_dir, latest, sizeof latest, &found, err));
    if (strcmp(resume, "never") == 0) {
        if (found)
            return lcm_fail(err, LCM_ERR_CONFIG,
                            "%s already holds checkpoints (newest: %s) and trainer.resume=never; resume them with "
                            "trainer.resume=auto, or choose another trainer.output_dir (they are never overwritten)",
                            run_dir, latest);
        return 0;
    }
    if (!lcm_is_dir(resume))
        return lcm_fail(err, LCM_ERR_CONFIG, "trainer.resume = '%s': no such checkpoint directory (use auto, never or "
                        "a path like %s/checkpoints/step_000002000)", resume, run_dir);
    snprintf(dir, cap, "%s", resume);
    return 0;
}

/* ---- data ------------------------------------------------------------------------------------- */

static void synth_progress(void *ctx, double frac) {
    int *last = ctx;
    int pct = (int)(frac * 100);
    if (pct >= *last + 25 || pct == 100) {
        lcm_info("  synthesizing: %d%%", pct);
        *last = pct;
    }
}

/* The datasets to train on. data.synthesize fills the run directory's own data/ (when data.train is
 * empty) and nothing else: a data.train path that does not exist is an error, never a place to write
 * synthetic data into, so a mistyped path cannot silently train on fake data. */
static int resolve_data(const lcm_config *cfg, const char *run_dir, char *train, char *valid, size_t cap,
                        lcm_error *err) {
    if (cfg->data.train[0]) {
        snprintf(train, cap, "%s", cfg->data.train);
        snprintf(valid, cap, "%s", cfg->data.valid);
        if (!lcm_file_exists(train))
            return lcm_fail(err, LCM_ERR_IO, "data.train = '%s' does not exist (import data with `lcm data import`, "
                            "or leave data.train empty with data.synthesize=true for a synthetic dataset)", train);
        return 0;
    }
    if (!cfg->data.synthesize)
        return lcm_fail(err, LCM_ERR_CONFIG,
                        "no training data: set data.train=path/to/train.lcmd (see `lcm data import`), or "
                        "data.synthesize=true for a synthetic dataset");
    char dir[LCM_PATH_MAX];
    if (lcm_path_join(dir, sizeof dir, run_dir, "data") != 0 || lcm_path_join(train, cap, dir, "train.lcmd") != 0 ||
        lcm_path_join(valid, cap, dir, "valid.lcmd") != 0)
        return lcm_fail(err, LCM_ERR_CONFIG, "trainer.output_dir is too long");
    if (cfg->data.valid[0]) snprintf(valid, cap, "%s", cfg->data.valid);
    if (lcm_file_exists(train)) return 0;
    lcm_info("synthesizing a dataset into %s (%" PRId64 " training and %" PRId64 " validation documents, D %d)", dir,
             cfg->synth.train_docs, cfg->synth.valid_docs, cfg->synth.dim);
    int last = -100;
    double t0 = lcm_now();
    LCM_TRY(lcm_synth_write(&cfg->synth, dir, synth_progress, &last, err));
    lcm_info("  done in %.1fs", lcm_now() - t0);
    return 0;
}

/* Training's own rule on the data: synthesized data feeds the model, so it has the model's dimension.
 * (With data.train given, the dataset may already exist and its dimension is checked when it is opened.) */
static int check_data_rules(const lcm_config *cfg, lcm_error *err) {
    char a[LCM_DESCRIBE_MAX], b[LCM_DESCRIBE_MAX];
    if (cfg->data.synthesize && !cfg->data.train[0] && cfg->synth.dim != cfg->model.sonar_dim)
        return lcm_fail(err, LCM_ERR_CONFIG, "%s differs from %s: the synthesized data feeds the model (data.synthesize = true)",
                        lcm_config_describe(cfg, "synth", "dim", a, sizeof a),
                        lcm_config_describe(cfg, "model", "sonar_dim", b, sizeof b));
    return 0;
}

static int open_data(lcm_run *run, const char *train, const char *valid, lcm_error *err) {
    const lcm_config *cfg = run->cfg;
    LCM_TRY(lcm_split_open(&run->train, train, run->d.D, cfg->data.check_finite, cfg, LCM_PLAN_TRAIN, err));
    if (lcm_plan_num_rows(run->train.plan) == 0)
        return lcm_fail(err, LCM_ERR_DATA, "%s has no row with a target (every document is a single concept)", train);
    run->max_rows = lcm_plan_max_rows(run->train.plan);
    if (valid[0]) {
        if (!lcm_file_exists(valid)) {
            lcm_warn("data.valid = '%s' does not exist: training without validation", valid);
        } else {
            LCM_TRY(lcm_split_open(&run->valid, valid, run->d.D, cfg->data.check_finite, cfg, LCM_PLAN_EVAL, err));
            if (lcm_plan_max_rows(run->valid.plan) > run->max_rows) run->max_rows = lcm_plan_max_rows(run->valid.plan);
        }
    }
    run->max_T = cfg->data.max_seq_len;
    run->max_tokens = cfg->data.max_tokens;
    return 0;
}

/* ---- the run ---------------------------------------------------------------------------------- */

/* The memory plan of this run, printed; a device that lacks the memory stops the run here, before
 * anything is allocated, with the cheapest change that fits. CPU workers share the host's memory. */
static int check_memory(lcm_run *run, lcm_error *err) {
    const int gpu = run->dev[0].is_gpu;
    lcm_memplan_input in = {run->cfg, gpu ? &lcm_cuda_traits : &lcm_cpu_traits, run->n, run->cfg->trainer.shard,
                            run->max_rows, run->valid.open};
    lcm_memplan p;
    LCM_TRY(lcm_memplan_compute(&in, &p, err));
    lcm_info("memory plan: %.2f GB per device (weights %.2f, gradients %.2f, moments %.2f, activations %.2f; "
             "`lcm plan` itemizes it)", p.total / 1e9,
             (p.bytes[LCM_MEM_MASTER] + p.bytes[LCM_MEM_COMPUTE]) / 1e9, p.bytes[LCM_MEM_GRADS] / 1e9,
             p.bytes[LCM_MEM_MOMENTS] / 1e9, (p.bytes[LCM_MEM_ACTS] + p.bytes[LCM_MEM_ATT_SAVED]) / 1e9);
    size_t free_b = 0, total_b = 0;
    char who[64] = "";
    size_t need = p.total;
    if (gpu) {
        for (int i = 0; i < run->local_n; i++) {
            size_t f = 0, t = 0;
            LCM_TRY(lcm_cuda_device_memory(run->dev[i].index, &f, &t, err));
            if (i == 0 || f < free_b) {
                free_b = f;
                snprintf(who, sizeof who, "GPU %d", run->dev[i].index);
            }
        }
    } else {
        lcm_cpu_mem_info(&free_b, &total_b);
        need = p.total * (size_t)run->local_n + p.host; /* this process: its own workers and host buffers */
        snprintf(who, sizeof who, "the host (%d CPU worker%s)", run->local_n, run->local_n > 1 ? "s" : "");
    }
    char note[384];
    LCM_TRY(lcm_memplan_recompute_note(&in, free_b, note, sizeof note, err));
    if (note[0]) lcm_info("note: %s", note);
    if (free_b == 0 || need <= free_b) return 0;
    char advice[256];
    LCM_TRY(lcm_memplan_advice(&in, gpu ? free_b : free_b / (size_t)run->local_n, advice, sizeof advice, err));
    return lcm_fail(err, LCM_ERR_NOMEM, "%s needs %.2f GB for this run but has %.2f GB free; %s", who, need / 1e9,
                    free_b / 1e9,
                    advice[0] ? advice : "no cheaper setting fits: use devices with more memory or a smaller model");
}

static int start_state(lcm_run *run, const char *ckpt, lcm_error *err) {
    const lcm_config *cfg = run->cfg;
    lcm_param_table t;
    LCM_TRY(lcm_param_table_build(&t, &run->d, err));
    const size_t P = t.total;
    int rc = 0;
    run->init_master = calloc(P, sizeof(float));
    if (!run->init_master) rc = lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for %zu parameters", P);
    if (!rc && ckpt[0]) {
        run->init_m = calloc(P, sizeof(float));
        run->init_v = calloc(P, sizeof(float));
        lcm_normalizer saved = {0};
        if (!run->init_m || !run->init_v)
            rc = lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for the optimizer state");
        if (!rc) rc = check_same_model(run, ckpt, 0, err);
        if (!rc) rc = lcm_checkpoint_load(ckpt, &t, run->init_master, run->init_m, run->init_v, &saved, &run->start, err);
        if (!rc) rc = lcm_checkpoint_check_cursor(ckpt, &run->start, run->train.plan, err);
        if (!rc && run->start.config_hash != lcm_config_model_hash(cfg)) rc = check_same_model(run, ckpt, 1, err);
        if (!rc && saved.dim > 0) { /* the checkpoint's normalizer is part of the model: it wins */
            lcm_normalizer_free(&run->norm);
            run->norm = saved;
        }
        if (!rc) lcm_info("resuming from %s (step %" PRId64 ")", ckpt, run->start.step);
    } else if (!rc && cfg->trainer.init_from[0]) {
        rc = lcm_weights_load(cfg->trainer.init_from, &t, run->init_master, NULL, err);
        if (!rc) lcm_info("initial weights from %s", cfg->trainer.init_from);
    } else if (!rc) {
        lcm_params_init(&t, run->init_master, cfg->trainer.seed);
    }
    if (!rc) {
        run->start.config_hash = lcm_config_model_hash(cfg);
        lcm_info("model: %zu parameters (D %d, C %d, L %d, H %d, F %d)", t.count, run->d.D, run->d.C, run->d.L, run->d.H,
                 run->d.F);
    }
    lcm_param_table_free(&t);
    return rc;
}

int lcm_run_make_group(lcm_run *run, lcm_error *err) {
    /* From here on every thread started (OpenBLAS's new ones, NCCL's, the workers and theirs) inherits
     * SIGINT/SIGTERM blocked; the main thread takes them back while it watches the workers. */
    if (!run->sigmask_saved) {
        lcm_signals_block(&run->sigmask);
        run->sigmask_saved = 1;
    }
    const int shard = run->cfg->trainer.shard;
    if (shard > 0 && run->n < 2)
        return lcm_fail(err, LCM_ERR_CONFIG, "trainer.shard=%d splits the training state across devices, but "
                        "trainer.devices=%s gives one device: set trainer.shard=0 or list 2 or more devices", shard,
                        run->cfg->trainer.devices);
    if (!run->dev[0].is_gpu) {
        int cores = lcm_cpu_count();
        int total = run->cfg->trainer.cpu_threads > 0 ? run->cfg->trainer.cpu_threads : cores;
        int per = total / run->local_n;
        lcm_cpu_set_blas_threads(per > 0 ? per : 1);
        lcm_info("devices: %d CPU worker%s, %d BLAS thread%s each", run->local_n, run->local_n > 1 ? "s" : "",
                 per > 0 ? per : 1, per > 1 ? "s" : "");
        LCM_TRY(lcm_group_create_local(&run->group, run->local_n, err));
        return lcm_group_span(run->group, err);
    }
    int gpus[LCM_MAX_DEVICES];
    char name[256] = "";
    for (int i = 0; i < run->local_n; i++) gpus[i] = run->dev[i].index;
    LCM_TRY(lcm_cuda_device_name(gpus[0], name, sizeof name, err));
    run->peak_tflops = run->cfg->bench.peak_tflops > 0 ? run->cfg->bench.peak_tflops : lcm_peak_tflops(name);
    lcm_info("devices: %d GPU%s (%s%s), NCCL", run->local_n, run->local_n > 1 ? "s" : "", name,
             run->local_n > 1 ? ", ..." : "");
    run->gpumon = lcm_gpumon_open(LCM_NVML_LIB, gpus, run->local_n);
    LCM_TRY(lcm_group_create_nccl(&run->group, run->local_n, gpus, err));
    return lcm_group_span(run->group, err);
}

static const char *phase_name(int phase) {
    switch ((lcm_phase)phase) {
    case LCM_PHASE_SETUP: return "setup";
    case LCM_PHASE_LOADING: return "loading";
    case LCM_PHASE_FORWARD: return "forward";
    case LCM_PHASE_BACKWARD: return "backward";
    case LCM_PHASE_COLLECTIVE: return "collective";
    case LCM_PHASE_OPTIMIZER: return "optimizer";
    case LCM_PHASE_VALIDATION: return "validation";
    case LCM_PHASE_CHECKPOINT: return "checkpoint";
    }
    return "unknown";
}

/* Seconds the main thread waits, after aborting the group, for the workers to notice and return. A
 * thread stuck inside a BLAS call or a driver cannot be cancelled: after this it is left behind, and
 * the process ends. Exiting then never damages a checkpoint: a write goes to step_N.tmp and becomes
 * step_N by a rename (a leftover .tmp is removed by the next run), and a healthy worker that is still
 * writing one is given hang_timeout_s more to finish. */
#define WATCHDOG_GRACE_S 3.0

/* The main thread while the workers run: it takes SIGINT/SIGTERM (the workers block them) and watches
 * the workers' heartbeats. A worker whose heartbeat has not moved for trainer.hang_timeout_s is hung;
 * the group is aborted, which wakes every barrier and collective and aborts NCCL. Returns once every worker is done,
 * or, when one does not return within the grace period, with run->abandoned set. */
static void watch_workers(lcm_run *run, int started) {
    const double limit = (double)run->cfg->trainer.hang_timeout_s;
    long long *seen = calloc((size_t)started, sizeof *seen);
    double *since = calloc((size_t)started, sizeof *since);
    double aborted_at = -1;
    int hung = -1;
    const double t0 = lcm_now();
    for (int r = 0; r < started && since; r++) since[r] = t0;
    for (;;) {
        int running = 0;
        for (int r = 0; r < started; r++) running += !atomic_load(&run->workers[r].done);
        if (!running) break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        const double now = lcm_now();
        if (aborted_at >= 0) {
            /* A bench's caller keeps the run on its stack: wait. A healthy worker still writing a
             * checkpoint (rotation included) gets up to hang_timeout_s more to finish it. */
            int writing = 0;
            for (int r = 0; r < started; r++)
                writing |= r != hung && !atomic_load(&run->workers[r].done) &&
                           atomic_load_explicit(&run->workers[r].phase, memory_order_relaxed) == LCM_PHASE_CHECKPOINT;
            double grace = WATCHDOG_GRACE_S + (writing ? limit : 0);
            if (!run->on_stack && now - aborted_at > grace) {
                run->abandoned = 1;
                break;
            }
            continue;
        }
        if (limit <= 0 || !seen || !since) continue;
        /* Fires when some worker has been stalled for longer than the limit. The culprit is the stalled
         * worker that is not waiting for the others, even when it stalled after them (its peers may have
         * reached the collective before it reached its last phase); when every stalled worker waits in a
         * collective, the one stalled longest. */
        int oldest = -1, culprit = -1;
        for (int r = 0; r < started; r++) {
            lcm_worker *w = &run->workers[r];
            long long b = atomic_load_explicit(&w->beats, memory_order_acquire);
            if (b != seen[r] || atomic_load(&w->done)) {
                seen[r] = b;
                since[r] = now;
                continue;
            }
            if (oldest < 0 || since[r] < since[oldest]) oldest = r;
            if (atomic_load_explicit(&w->phase, memory_order_relaxed) != LCM_PHASE_COLLECTIVE &&
                (culprit < 0 || since[r] < since[culprit]))
                culprit = r;
        }
        if (oldest < 0 || now - since[oldest] <= limit) continue;
        if (culprit < 0) culprit = oldest;
        lcm_worker *w = &run->workers[culprit];
        lcm_error e = {0};
        /* Across processes, a collective that does not end names the processes it still waits for. */
        char peers[400] = "", where[480] = "";
        lcm_group_waiting_on(run->group, peers, sizeof peers);
        if (peers[0]) snprintf(where, sizeof where, "; it waits for %s, which did not answer", peers);
        lcm_fail(&e, LCM_ERR_DEVICE,
                 "watchdog: %s %d made no progress for %.1f s in phase %s of step %lld "
                 "(trainer.hang_timeout_s=%.0f)%s; the run is aborted and the last checkpoint is intact",
                 w->dev.is_gpu ? "GPU" : "CPU worker", w->dev.index, now - since[culprit],
                 phase_name(atomic_load_explicit(&w->phase, memory_order_relaxed)),
                 (long long)atomic_load(&w->heartbeat_step) + 1, limit, where);
        lcm_group_abort(run->group, &e);
        aborted_at = now;
        hung = culprit;
    }
    free(seen);
    free(since);
}

/* Start one worker per device, wait for all, and return the root cause of a failure. */
int lcm_run_workers(lcm_run *run, lcm_error *err) {
    run->workers = calloc((size_t)run->local_n, sizeof *run->workers);
    if (!run->workers) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    int started = 0, rc = 0;
    if (!run->sigmask_saved) {
        lcm_signals_block(&run->sigmask);
        run->sigmask_saved = 1;
    }
    for (int r = 0; r < run->local_n; r++) {
        lcm_worker *w = &run->workers[r];
        w->run = run;
        w->rank = run->rank0 + r;
        w->dev = run->dev[r];
        w->comm = lcm_group_comm(run->group, w->rank);
        if (pthread_create(&w->thread, NULL, lcm_worker_main, w) != 0) {
            lcm_error e = {0};
            lcm_fail(&e, LCM_ERR_INTERNAL, "cannot start worker thread %d: %s", r, strerror(errno));
            lcm_group_abort(run->group, &e);
            break;
        }
        char name[16];
        snprintf(name, sizeof name, "lcm-%s%d", w->dev.is_gpu ? "gpu" : "cpu", w->dev.index);
        pthread_setname_np(w->thread, name);
        started++;
    }
    pthread_sigmask(SIG_SETMASK, &run->sigmask, NULL); /* signals now reach this thread only */
    run->sigmask_saved = 0;
    watch_workers(run, started);
    if (run->abandoned) {
        /* Threads that ended are joined; the hung ones and their loaders are detached: nothing waits
         * for them, and the process ends next. */
        for (int r = 0; r < started; r++) {
            lcm_worker *w = &run->workers[r];
            if (atomic_load(&w->done)) {
                pthread_join(w->thread, NULL);
                continue;
            }
            pthread_detach(w->thread);
            /* Its loader ends on the abort; detached too, unless the worker is stopping it itself. */
            int live = LCM_LOADER_LIVE;
            if (atomic_compare_exchange_strong(&w->loader_state, &live, LCM_LOADER_REAPED))
                pthread_detach(w->loader.thread);
        }
        *err = *lcm_group_abort_reason(run->group);
        return err->code ? (int)err->code : LCM_ERR_INTERNAL;
    }
    for (int r = 0; r < started; r++) pthread_join(run->workers[r].thread, NULL);
    const lcm_error *reason = lcm_group_abort_reason(run->group);
    if (started < run->local_n || reason->code != LCM_OK) {
        *err = *reason;
        return reason->code ? (int)reason->code : LCM_ERR_INTERNAL;
    }
    for (int r = 0; r < run->local_n; r++)
        if (run->workers[r].rc) {
            *err = run->workers[r].err;
            return run->workers[r].rc;
        }
    return rc;
}

void lcm_run_free(lcm_run *run) {
    if (run->sigmask_saved) pthread_sigmask(SIG_SETMASK, &run->sigmask, NULL);
    lcm_gpumon_stop(run->gpumon);
    if (run->group) lcm_group_destroy(run->group);
    lcm_split_close(&run->train);
    lcm_split_close(&run->valid);
    lcm_normalizer_free(&run->norm);
    if (run->metrics) fclose(run->metrics);
    free(run->init_master);
    free(run->init_m);
    free(run->init_v);
    free(run->config_text);
    /* Checkpoint staging is freed here, once every worker is joined, not by each worker: in a sharded
     * run the other ranks copy into rank 0's, and after an abort rank 0 may leave before they finish. */
    for (int r = 0; run->workers && r < run->local_n; r++) {
        free(run->workers[r].host_master);
        free(run->workers[r].host_m);
        free(run->workers[r].host_v);
    }
    free(run->workers);
}

int lcm_train(const lcm_config *cfg, lcm_train_summary *sum, lcm_error *err) {
    memset(sum, 0, sizeof *sum);
    /* On the heap: a hung worker thread the watchdog leaves behind still points at the run. */
    lcm_run *run = calloc(1, sizeof *run);
    if (!run) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    run->cfg = cfg;
    run->sum = sum;
    run->loop = &lcm_train_loop;
    run->accum = cfg->trainer.grad_accum;
    char ckpt[LCM_PATH_MAX + 64], train[LCM_PATH_MAX], valid[LCM_PATH_MAX], path[LCM_PATH_MAX + 32];
    int lock_fd = -1;
    lcm_signals_install(); /* until the workers run, a signal removes temporary files and ends the process */
    snprintf(run->run_dir, sizeof run->run_dir, "%s", cfg->trainer.output_dir);
    /* Under an MPI launcher (mpi.h) process 0 alone writes the run directory (lock, log, config,
     * metrics, checkpoints); the others read it and say only warnings and errors. */
    lcm_mpi_set_timeout((double)cfg->trainer.hang_timeout_s);
    int rc = lcm_mpi_start(err);
    const int writer = lcm_mpi_rank() == 0;
    if (!writer) lcm_log_set_level(LCM_LOG_WARN);
    if (!rc) rc = lcm_dims_from_config(&run->d, &cfg->model, err);
    if (!rc) rc = check_data_rules(cfg, err);
    if (!rc) rc = lcm_mkdir_p(run->run_dir, err);
    if (!rc && writer) rc = lock_run_dir(run->run_dir, &lock_fd, err);
    if (!rc) rc = choose_start(cfg, run->run_dir, ckpt, sizeof ckpt, err);
    if (!rc) rc = lcm_resolve_devices(cfg->trainer.devices, run->dev, &run->n, err);
    if (!rc) {
        lcm_path_join(path, sizeof path, run->run_dir, "train.log");
        if (writer && lcm_log_set_file(path) != 0) lcm_warn("cannot write the log file %s: %s", path, strerror(errno));
        if (cfg->trainer.experiment_name[0]) lcm_info("experiment %s", cfg->trainer.experiment_name);
        rc = config_text(cfg, &run->config_text, err);
    }
    if (!rc) rc = lcm_run_join_processes(run, err);
    if (!rc && writer) {
        lcm_path_join(path, sizeof path, run->run_dir, "config.ini");
        rc = lcm_write_file_atomic(path, run->config_text, strlen(run->config_text), err);
    }
    /* Synthesized data: process 0 writes it first; the others then find it (shared run directory) or,
     * on a node of their own, synthesize the same bytes from the same seed. */
    if (!rc && writer) rc = resolve_data(cfg, run->run_dir, train, valid, sizeof train, err);
    if (!rc && lcm_mpi_size() > 1) rc = lcm_mpi_broadcast(&rc, sizeof rc, 0, "process 0's data set-up", err);
    if (!rc && !writer) rc = resolve_data(cfg, run->run_dir, train, valid, sizeof train, err);
    if (!rc) rc = open_data(run, train, valid, err);
    if (!rc) rc = lcm_run_agree(run, ckpt, err);
    if (!rc) rc = lcm_normalizer_resolve(&run->norm, cfg->model.normalizer, train, run->d.D, err);
    if (!rc) rc = start_state(run, ckpt, err);
    if (!rc) rc = lcm_step_accum(cfg, run->n, &run->accum, err);
    if (!rc && ckpt[0]) resume_notices(run, ckpt);
    if (!rc) {
        run->start.step_microbatches = (int64_t)run->n * run->accum;
        rc = check_memory(run, err);
    }
    if (!rc && run->valid.open) {
        rc = lcm_eval_mean_baseline(&run->valid.ds, run->valid.plan, cfg->data.append_eot, run->norm.center,
                                    run->norm.scale, &run->baseline, err);
        run->have_baseline = !rc;
        sum->baseline = run->baseline;
    }
    if (!rc) rc = lcm_run_make_group(run, err);
    if (!rc && writer) {
        lcm_path_join(run->metrics_path, sizeof run->metrics_path, run->run_dir, "metrics.jsonl");
        rc = trim_metrics(run->metrics_path, run->start.step, err);
    }
    if (!rc && writer) {
        run->metrics = fopen(run->metrics_path, "a");
        if (!run->metrics) rc = lcm_fail(err, LCM_ERR_IO, "cannot write %s: %s", run->metrics_path, strerror(errno));
    }
    if (!rc) { /* where each run (fresh or resumed) began: the plot marks resumes */
        lcm_sbuf b = {0};
        lcm_sbuf_printf(&b, "{\"step\":%" PRId64 ",\"event\":\"%s\"", run->start.step, ckpt[0] ? "resume" : "start");
        if (cfg->trainer.experiment_name[0]) {
            lcm_sbuf_printf(&b, ",\"experiment\":");
            lcm_json_str(&b, cfg->trainer.experiment_name);
        }
        lcm_sbuf_printf(&b, "}\n");
        if (b.s) lcm_run_metrics_line(run, b.s);
        lcm_sbuf_free(&b);
    }
    if (!rc && run->have_baseline) {
        char line[128];
        snprintf(line, sizeof line, "{\"step\":%" PRId64 ",\"baseline\":%.9g}\n", run->start.step, run->baseline);
        lcm_run_metrics_line(run, line);
    }
    const int64_t stop_at = cfg->trainer.stop_at_step;
    if (!rc && (run->start.step >= cfg->trainer.max_steps || (stop_at > 0 && run->start.step >= stop_at))) {
        /* the CLI says "nothing to do", and why */
        sum->final_step = run->start.step;
        sum->stop_at_step_reached = run->start.step < cfg->trainer.max_steps;
        snprintf(sum->checkpoint, sizeof sum->checkpoint, "%s", ckpt);
    } else if (!rc) {
        lcm_info("training %s for %" PRId64 " steps (%d device%s x %d micro-batch%s of <= %" PRId64 " concepts), run dir %s",
                 train, cfg->trainer.max_steps, run->n, run->n > 1 ? "s" : "", run->accum, run->accum > 1 ? "es" : "",
                 run->max_tokens, run->run_dir);
        run->t_start = lcm_now();
        lcm_signals_stop_mode(1);
        rc = lcm_run_workers(run, err);
        lcm_signals_stop_mode(0);
        if (run->abandoned) {
            /* The thread left behind still uses the run, the log and the lock, and may yet write the
             * summary: read none of it; the process must end. */
            sum->threads_left = 1;
            return rc;
        }
        if (!rc && sum->interrupted && !sum->stop_at_step_reached)
            lcm_info("stopped by %s after step %" PRId64 ", with a checkpoint; the same command resumes",
                     lcm_stop_signal() == SIGTERM ? "SIGTERM" : lcm_stop_signal() == SIGINT ? "SIGINT"
                     : lcm_mpi_size() > 1 ? "a signal to another process" : "a signal", sum->final_step);
        if (!sum->checkpoint[0] && ckpt[0]) snprintf(sum->checkpoint, sizeof sum->checkpoint, "%s", ckpt);
    }
    lcm_signals_restore();
    if (run->metrics) {
        if (fclose(run->metrics) != 0 && !run->metrics_errno) run->metrics_errno = errno ? errno : EIO;
        run->metrics = NULL;
    }
    char log_path[LCM_PATH_MAX];
    int log_errno = lcm_log_file_error(log_path, sizeof log_path);
    if (run->metrics_errno)
        snprintf(sum->write_error, sizeof sum->write_error, "%s could not be written (%s)", run->metrics_path,
                 strerror(run->metrics_errno));
    else if (log_errno)
        snprintf(sum->write_error, sizeof sum->write_error, "%s could not be written (%s)", log_path,
                 strerror(log_errno));
    lcm_run_free(run);
    free(run);
    lcm_log_set_file(NULL);
    if (lock_fd >= 0) close(lock_fd);
    return rc;
}
