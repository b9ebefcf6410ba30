/* trainer.c: `lcm train` on the main thread: the run directory, the data (synthesized when asked),
 * the normalizer, the starting state (fresh, init_from weights, or the newest checkpoint), the devices
 * and their communicators, then one worker thread per device, and the summary once they are done.
 * Anything that can fail does so here, before a worker starts, with a message saying what to do. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/log.h"
#include "lcm/sbuf.h"
#include "lcm/synth.h"
#include "train_internal.h"

/* ---- the run directory and the starting point ------------------------------------------------- */

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

static int open_data(lcm_run *run, const char *train, const char *valid, lcm_error *err) {
    const lcm_config *cfg = run->cfg;
    LCM_TRY(lcm_dataset_open(&run->train, train, err));
    run->have_train = 1;
    if (run->train.dim != run->d.D)
        return lcm_fail(err, LCM_ERR_CONFIG, "%s holds %d-dimensional concepts but model.sonar_dim is %d", train,
                        run->train.dim, run->d.D);
    if (cfg->data.check_finite) LCM_TRY(lcm_dataset_check_finite(&run->train, err));
    lcm_plan_config pc;
    lcm_plan_config_from(&pc, cfg, LCM_PLAN_TRAIN);
    LCM_TRY(lcm_plan_create(&run->train_plan, &run->train, &pc, err));
    if (lcm_plan_num_rows(run->train_plan) == 0)
        return lcm_fail(err, LCM_ERR_DATA, "%s has no row with a target (every document is a single concept)", train);
    run->max_rows = lcm_plan_max_rows(run->train_plan);
    if (valid[0]) {
        if (!lcm_file_exists(valid)) {
            lcm_warn("data.valid = '%s' does not exist: training without validation", valid);
        } else {
            LCM_TRY(lcm_dataset_open(&run->valid, valid, err));
            run->have_valid = 1;
            if (run->valid.dim != run->d.D)
                return lcm_fail(err, LCM_ERR_CONFIG, "%s holds %d-dimensional concepts but model.sonar_dim is %d", valid,
                                run->valid.dim, run->d.D);
            if (cfg->data.check_finite) LCM_TRY(lcm_dataset_check_finite(&run->valid, err));
            lcm_plan_config_from(&pc, cfg, LCM_PLAN_EVAL);
            LCM_TRY(lcm_plan_create(&run->valid_plan, &run->valid, &pc, err));
            if (lcm_plan_max_rows(run->valid_plan) > run->max_rows) run->max_rows = lcm_plan_max_rows(run->valid_plan);
        }
    }
    run->max_T = cfg->data.max_seq_len;
    run->max_tokens = cfg->data.max_tokens;
    return 0;
}

static int load_normalizer(lcm_run *run, const char *train, lcm_error *err) {
    const char *spec = run->cfg->model.normalizer;
    if (strcmp(spec, "none") == 0) return lcm_normalizer_identity(&run->norm, run->d.D, err);
    char path[LCM_PATH_MAX];
    if (strcmp(spec, "dataset") == 0) {
        lcm_normalizer_path_for(train, path, sizeof path);
        if (!lcm_file_exists(path))
            return lcm_fail(err, LCM_ERR_CONFIG,
                            "model.normalizer=dataset but %s does not exist: fit one with `lcm data fit-normalizer %s "
                            "-o %s`, or set model.normalizer=none", path, train, path);
    } else {
        snprintf(path, sizeof path, "%s", spec);
    }
    return lcm_normalizer_load(&run->norm, path, run->d.D, err);
}

/* ---- the run ---------------------------------------------------------------------------------- */

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
        if (!rc) rc = lcm_checkpoint_load(ckpt, &t, run->init_master, run->init_m, run->init_v, &saved, &run->start, err);
        if (!rc) rc = lcm_checkpoint_check_cursor(ckpt, &run->start, run->train_plan, err);
        if (!rc && run->start.config_hash != lcm_config_model_hash(cfg))
            rc = lcm_fail(err, LCM_ERR_CONFIG,
                          "%s was written with a different model or data layout (config hash %016" PRIx64 ", now %016" PRIx64
                          "); restore those settings (the checkpoint's config is in its metadata), or start a new run in "
                          "another trainer.output_dir", ckpt, run->start.config_hash, lcm_config_model_hash(cfg));
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
    if (!run->dev[0].is_gpu) {
        int cores = lcm_cpu_count();
        int total = run->cfg->trainer.cpu_threads > 0 ? run->cfg->trainer.cpu_threads : cores;
        int per = total / run->n;
        lcm_cpu_set_blas_threads(per > 0 ? per : 1);
        lcm_info("devices: %d CPU worker%s, %d BLAS thread%s each", run->n, run->n > 1 ? "s" : "", per > 0 ? per : 1,
                 per > 1 ? "s" : "");
        return lcm_group_create_local(&run->group, run->n, err);
    }
    int gpus[LCM_MAX_DEVICES];
    char name[256] = "";
    for (int i = 0; i < run->n; i++) gpus[i] = run->dev[i].index;
    LCM_TRY(lcm_cuda_device_name(gpus[0], name, sizeof name, err));
    run->peak_tflops = run->cfg->bench.peak_tflops > 0 ? run->cfg->bench.peak_tflops : lcm_peak_tflops(name);
    lcm_info("devices: %d GPU%s (%s%s), NCCL", run->n, run->n > 1 ? "s" : "", name, run->n > 1 ? ", ..." : "");
    return lcm_group_create_nccl(&run->group, run->n, gpus, err);
}

/* Start one worker per device, wait for all, and return the root cause of a failure. */
int lcm_run_workers(lcm_run *run, lcm_error *err) {
    run->workers = calloc((size_t)run->n, sizeof *run->workers);
    if (!run->workers) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    int started = 0, rc = 0;
    for (int r = 0; r < run->n; r++) {
        lcm_worker *w = &run->workers[r];
        w->run = run;
        w->rank = r;
        w->dev = run->dev[r];
        w->comm = lcm_group_comm(run->group, r);
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
    for (int r = 0; r < started; r++) pthread_join(run->workers[r].thread, NULL);
    const lcm_error *reason = lcm_group_abort_reason(run->group);
    if (started < run->n || reason->code != LCM_OK) {
        *err = *reason;
        return reason->code ? (int)reason->code : LCM_ERR_INTERNAL;
    }
    for (int r = 0; r < run->n; r++)
        if (run->workers[r].rc) {
            *err = run->workers[r].err;
            return run->workers[r].rc;
        }
    return rc;
}

void lcm_run_free(lcm_run *run) {
    if (run->group) lcm_group_destroy(run->group);
    if (run->train_plan) lcm_plan_free(run->train_plan);
    if (run->valid_plan) lcm_plan_free(run->valid_plan);
    if (run->have_train) lcm_dataset_close(&run->train);
    if (run->have_valid) lcm_dataset_close(&run->valid);
    lcm_normalizer_free(&run->norm);
    if (run->metrics) fclose(run->metrics);
    free(run->init_master);
    free(run->init_m);
    free(run->init_v);
    free(run->config_text);
    free(run->workers);
}

int lcm_train(const lcm_config *cfg, lcm_train_summary *sum, lcm_error *err) {
    memset(sum, 0, sizeof *sum);
    lcm_run run_storage, *run = &run_storage;
    memset(run, 0, sizeof *run);
    run->cfg = cfg;
    run->sum = sum;
    run->accum = cfg->trainer.grad_accum;
    char ckpt[LCM_PATH_MAX + 64], train[LCM_PATH_MAX], valid[LCM_PATH_MAX], path[LCM_PATH_MAX + 32];
    int rc = lcm_dims_from_config(&run->d, &cfg->model, err);
    if (!rc) {
        snprintf(run->run_dir, sizeof run->run_dir, "%s", cfg->trainer.output_dir);
        rc = lcm_mkdir_p(run->run_dir, err);
    }
    if (!rc) rc = choose_start(cfg, run->run_dir, ckpt, sizeof ckpt, err);
    if (!rc) {
        lcm_path_join(path, sizeof path, run->run_dir, "train.log");
        if (lcm_log_set_file(path) != 0) lcm_warn("cannot write the log file %s: %s", path, strerror(errno));
        rc = config_text(cfg, &run->config_text, err);
    }
    if (!rc) {
        lcm_path_join(path, sizeof path, run->run_dir, "config.ini");
        rc = lcm_write_file_atomic(path, run->config_text, strlen(run->config_text), err);
    }
    if (!rc) rc = resolve_data(cfg, run->run_dir, train, valid, sizeof train, err);
    if (!rc) rc = open_data(run, train, valid, err);
    if (!rc) rc = load_normalizer(run, train, err);
    if (!rc) rc = start_state(run, ckpt, err);
    if (!rc) rc = lcm_resolve_devices(cfg->trainer.devices, run->dev, &run->n, err);
    if (!rc && run->have_valid) {
        rc = lcm_eval_mean_baseline(&run->valid, run->valid_plan, cfg->data.append_eot, run->norm.center,
                                    run->norm.scale, &run->baseline, err);
        run->have_baseline = !rc;
        sum->baseline = run->baseline;
    }
    if (!rc) rc = lcm_run_make_group(run, err);
    if (!rc) {
        lcm_path_join(path, sizeof path, run->run_dir, "metrics.jsonl");
        run->metrics = fopen(path, "a");
        if (!run->metrics) rc = lcm_fail(err, LCM_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        else if (run->have_baseline)
            fprintf(run->metrics, "{\"step\":%" PRId64 ",\"baseline\":%.9g}\n", run->start.step, run->baseline);
    }
    if (!rc && run->start.step >= cfg->trainer.max_steps) { /* the CLI says "nothing to do" */
        sum->final_step = run->start.step;
        snprintf(sum->checkpoint, sizeof sum->checkpoint, "%s", ckpt);
    } else if (!rc) {
        lcm_info("training %s for %" PRId64 " steps (%d device%s x %d micro-batch%s of <= %" PRId64 " concepts), run dir %s",
                 train, cfg->trainer.max_steps, run->n, run->n > 1 ? "s" : "", run->accum, run->accum > 1 ? "es" : "",
                 run->max_tokens, run->run_dir);
        run->t_start = lcm_now();
        lcm_signals_install();
        rc = lcm_run_workers(run, err);
        lcm_signals_restore();
        if (!sum->checkpoint[0] && ckpt[0]) snprintf(sum->checkpoint, sizeof sum->checkpoint, "%s", ckpt);
    }
    lcm_run_free(run);
    lcm_log_set_file(NULL);
    return rc;
}
