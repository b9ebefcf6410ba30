/* test_train.c: the trainer end to end on CPU worker threads, with a tiny model on a tiny synthetic
 * dataset: data-parallel equivalence over 1, 2 and 4 workers, bit-exact resume, what a damaged
 * checkpoint, mismatched init weights, a bad device list or NaN data do, and the LR schedule. */
#include <sys/stat.h>

#include "harness.h"
#include "lcm/checkpoint.h"
#include "lcm/log.h"
#include "lcm/memplan.h"
#include "lcm/synth.h"
#include "lcm/train.h"

/* A config of the embedded default shrunk to run in well under a second per few steps. */
static int tiny_config(lcm_config *cfg, const char *out_dir, const char *data_dir, int n_extra, const char **extra,
                       lcm_error *err) {
    char out[600], train[600], valid[600];
    snprintf(out, sizeof out, "trainer.output_dir=%s", out_dir);
    snprintf(train, sizeof train, "data.train=%s/train.lcmd", data_dir);
    snprintf(valid, sizeof valid, "data.valid=%s/valid.lcmd", data_dir);
    const char *base[] = {"model.sonar_dim=16", "synth.dim=16", "synth.latent_dim=8", "model.model_dim=16", "model.num_layers=2",
                          "model.num_heads=2", "model.ffn_inner_dim=32", "model.dropout=0.1",
                          "synth.train_docs=80", "synth.valid_docs=12", "synth.max_len=40", "synth.mean_len=12",
                          "data.max_seq_len=16", "data.max_tokens=96", "trainer.max_steps=8", "trainer.log_every=1",
                          "trainer.validate_every=4", "trainer.checkpoint_every=0", "trainer.plot=false",
                          "optim.warmup_steps=2", "optim.lr=3e-3", "trainer.devices=cpu", out, train, valid};
    char *args[64];
    int n = 0;
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) args[n++] = (char *)base[i];
    for (int i = 0; i < n_extra; i++) args[n++] = (char *)extra[i];
    return lcm_config_load(cfg, NULL, n, args, err);
}

/* The final weights of a run directory (newest checkpoint). */
static float *final_weights(const char *run_dir, const lcm_config *cfg, size_t *n, lcm_error *err) {
    char dir[1200];
    int found = 0;
    if (lcm_checkpoint_latest(run_dir, dir, sizeof dir, &found, err) != 0 || !found) return NULL;
    lcm_dims d;
    lcm_param_table t;
    if (lcm_dims_from_config(&d, &cfg->model, err) || lcm_param_table_build(&t, &d, err)) return NULL;
    float *w = malloc(t.total * sizeof(float));
    char path[1300];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (lcm_weights_load(path, &t, w, NULL, err) != 0) {
        free(w);
        w = NULL;
    }
    *n = t.total;
    lcm_param_table_free(&t);
    return w;
}

static const char *data_dir(void) {
    /* One synthetic dataset for every test (each run would otherwise synthesize its own). */
    static char dir[512];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s/data", harness_tmpdir());
    static lcm_config cfg;
    lcm_error err = {0};
    if (tiny_config(&cfg, "/tmp/unused", dir, 0, NULL, &err) != 0 || lcm_synth_write(&cfg.synth, dir, NULL, NULL, &err) != 0) {
        fprintf(stderr, "cannot synthesize the test data: %s\n", err.msg);
        exit(2);
    }
    return dir;
}

static float *train_and_get(const char *out_dir, int n_extra, const char **extra, size_t *n, lcm_train_summary *sum) {
    static lcm_config cfg;
    lcm_error err = {0};
    CHECK_OK(tiny_config(&cfg, out_dir, data_dir(), n_extra, extra, &err), &err);
    CHECK_OK(lcm_train(&cfg, sum, &err), &err);
    float *w = final_weights(out_dir, &cfg, n, &err);
    CHECKF(w != NULL, "no final weights in %s: %s", out_dir, err.msg);
    return w;
}

TEST(data_parallel_runs_compute_the_same_function) {
    /* The same global batch: 1 worker x 4 micro-batches, 2 x 2, 4 x 1. The N-worker run sums gradients
     * in another order, so weights agree to rounding (fp32 sums of 4 terms: ~1e-7 relative per step;
     * Adam divides by sqrt(v) which damps it); 1e-5 relative is that with a wide margin, and far below
     * the effect of any difference in the batch (a different micro-batch changes the weights by ~1%). */
    lcm_log_set_quiet(1);
    const char *root = harness_tmpdir();
    const char *runs[3][2] = {{"trainer.devices=cpu:1", "trainer.grad_accum=4"},
                              {"trainer.devices=cpu:2", "trainer.grad_accum=2"},
                              {"trainer.devices=cpu:4", "trainer.grad_accum=1"}};
    float *w[3];
    size_t n = 0;
    double loss[3];
    for (int i = 0; i < 3; i++) {
        char out[600];
        snprintf(out, sizeof out, "%s/run%d", root, i);
        lcm_train_summary sum;
        w[i] = train_and_get(out, 2, runs[i], &n, &sum);
        loss[i] = sum.train_loss;
        CHECK(sum.final_step == 8);
    }
    for (int i = 1; i < 3; i++) {
        if (!w[0] || !w[i]) continue;
        double rel = harness_rel_err(w[i], w[0], n);
        CHECKF(rel < 1e-5, "%s: weights differ from one worker by %.3g relative", runs[i][0], rel);
        CHECK_NEAR(loss[i], loss[0], 1e-5 * fabs(loss[0]));
    }
    /* A different global batch (2 micro-batches instead of 4) must give clearly different weights,
     * or the comparison above proves nothing. */
    char out[600];
    snprintf(out, sizeof out, "%s/other", root);
    const char *other[] = {"trainer.devices=cpu:1", "trainer.grad_accum=2"};
    lcm_train_summary sum;
    size_t n2 = 0;
    float *w_other = train_and_get(out, 2, other, &n2, &sum);
    if (w_other && w[0]) CHECK(harness_rel_err(w_other, w[0], n) > 1e-3);
    for (int i = 0; i < 3; i++) free(w[i]);
    free(w_other);
}

TEST(resumed_run_is_bit_identical_to_an_uninterrupted_one) {
    lcm_log_set_quiet(1);
    const char *root = harness_tmpdir();
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/interrupted", root);
    snprintf(b, sizeof b, "%s/straight", root);
    const char *dev[] = {"trainer.devices=cpu:2", "trainer.stop_at_step=4"};
    size_t n = 0;
    lcm_train_summary s1, s2, s3;
    float *w_half = train_and_get(a, 2, dev, &n, &s1);
    CHECK(s1.final_step == 4 && s1.interrupted);
    free(w_half);
    float *w_resumed = train_and_get(a, 1, dev, &n, &s2); /* resume=auto picks up step 4 */
    CHECK(s2.final_step == 8 && s2.steps_done == 4);
    float *w_straight = train_and_get(b, 1, dev, &n, &s3);
    CHECK(s3.final_step == 8 && s3.steps_done == 8);
    CHECK(w_resumed && w_straight && memcmp(w_resumed, w_straight, n * sizeof(float)) == 0);
    CHECK(s2.train_loss == s3.train_loss);
    /* The metrics of steps 5..8 match to the last digit too. */
    char pa[700], pb[700];
    snprintf(pa, sizeof pa, "%s/metrics.jsonl", a);
    snprintf(pb, sizeof pb, "%s/metrics.jsonl", b);
    char *ta = NULL, *tb = NULL;
    lcm_error err = {0};
    CHECK_OK(lcm_read_file(pa, &ta, NULL, &err), &err);
    CHECK_OK(lcm_read_file(pb, &tb, NULL, &err), &err);
    for (int step = 5; ta && tb && step <= 8; step++) {
        char key[32];
        snprintf(key, sizeof key, "{\"step\":%d,\"loss\":", step);
        const char *la = strstr(ta, key), *lb = strstr(tb, key);
        CHECKF(la && lb && strncmp(la, lb, strcspn(la, ",") + 1 + strcspn(la + strcspn(la, ",") + 1, ",")) == 0,
               "step %d loss differs", step);
    }
    free(ta);
    free(tb);
    free(w_resumed);
    free(w_straight);
}

/* Whether a run directory's train.log holds `text`. */
static int log_has(const char *run_dir, const char *text) {
    char path[700];
    snprintf(path, sizeof path, "%s/train.log", run_dir);
    char *t = NULL;
    lcm_error err = {0};
    if (lcm_read_file(path, &t, NULL, &err) != 0) return 0;
    int found = strstr(t, text) != NULL;
    free(t);
    return found;
}

TEST(global_batch_tokens_gives_the_same_steps_on_any_device_count) {
    /* One config, data.global_batch_tokens = 4 x data.max_tokens: grad_accum follows (4, 2, 1 on 1, 2
     * and 4 workers), so every run takes the same 4 micro-batches per step. Same tolerance as
     * data_parallel_runs_compute_the_same_function (only the summation order differs); the run on one
     * worker without the key (grad_accum 1: a quarter of the batch) must differ clearly. */
    lcm_log_set_quiet(1);
    const char *root = harness_tmpdir();
    const char *dev[3] = {"trainer.devices=cpu:1", "trainer.devices=cpu:2", "trainer.devices=cpu:4"};
    float *w[3];
    size_t n = 0;
    double loss[3];
    for (int i = 0; i < 3; i++) {
        char out[600];
        snprintf(out, sizeof out, "%s/global%d", root, i);
        const char *extra[] = {dev[i], "data.global_batch_tokens=384"};
        lcm_train_summary sum;
        w[i] = train_and_get(out, 2, extra, &n, &sum);
        loss[i] = sum.train_loss;
        CHECK(sum.final_step == 8);
    }
    for (int i = 1; i < 3; i++) {
        if (!w[0] || !w[i]) continue;
        double rel = harness_rel_err(w[i], w[0], n);
        CHECKF(rel < 1e-5, "%s: weights differ from one worker by %.3g relative", dev[i], rel);
        CHECK_NEAR(loss[i], loss[0], 1e-5 * fabs(loss[0]));
    }
    char out[600];
    snprintf(out, sizeof out, "%s/global_off", root);
    lcm_train_summary sum;
    float *w_off = train_and_get(out, 1, &dev[0], &n, &sum);
    if (w_off && w[0]) CHECK(harness_rel_err(w_off, w[0], n) > 1e-3);
    for (int i = 0; i < 3; i++) free(w[i]);
    free(w_off);
}

TEST(global_batch_tokens_that_does_not_divide_names_what_does) {
    lcm_log_set_quiet(1);
    static lcm_config cfg;
    lcm_error err = {0};
    char out[600];
    snprintf(out, sizeof out, "%s/global_bad", harness_tmpdir());
    /* 288 = 3 x 96: not on 2 devices; on 1 or 3 it is, and on 2 devices max_tokens 72 (x2) or 144 (x1) */
    const char *extra[] = {"trainer.devices=cpu:2", "data.global_batch_tokens=288"};
    CHECK_OK(tiny_config(&cfg, out, data_dir(), 2, extra, &err), &err);
    lcm_train_summary sum;
    CHECK_FAILS(lcm_train(&cfg, &sum, &err), &err, LCM_ERR_CONFIG,
                "data.global_batch_tokens = 288 is not a whole number of micro-batches of data.max_tokens = 96 on 2 "
                "devices: it divides evenly on 1 or 3 devices, or use data.max_tokens=72 (grad_accum 2) or 144 "
                "(grad_accum 1)");
    int accum = 0;
    CHECK_OK(lcm_step_accum(&cfg, 3, &accum, &err), &err);
    CHECK(accum == 1);
}

TEST(resume_on_another_device_count_keeps_or_notes_the_global_batch) {
    lcm_log_set_quiet(1);
    const char *root = harness_tmpdir();
    char a[600], b[600], c[600];
    snprintf(a, sizeof a, "%s/resume_keyed", root);
    snprintf(b, sizeof b, "%s/resume_plain", root);
    snprintf(c, sizeof c, "%s/resume_straight", root);
    size_t n = 0;
    lcm_train_summary s;
    /* With the key: 2 workers to step 4, then 4 workers; the same steps as 2 workers straight through. */
    const char *k2[] = {"trainer.devices=cpu:2", "data.global_batch_tokens=384", "trainer.stop_at_step=4"};
    const char *k4[] = {"trainer.devices=cpu:4", "data.global_batch_tokens=384"};
    free(train_and_get(a, 3, k2, &n, &s));
    float *w_resumed = train_and_get(a, 2, k4, &n, &s);
    CHECK(s.final_step == 8 && s.steps_done == 4);
    CHECK(!log_has(a, "the global batch changes"));
    float *w_straight = train_and_get(c, 2, k2, &n, &s); /* stop_at_step 4 < 8: reuse, then finish */
    const char *k2_rest[] = {"trainer.devices=cpu:2", "data.global_batch_tokens=384"};
    free(w_straight);
    w_straight = train_and_get(c, 2, k2_rest, &n, &s);
    if (w_resumed && w_straight) CHECK(harness_rel_err(w_resumed, w_straight, n) < 1e-5);
    free(w_resumed);
    free(w_straight);
    /* Without it: 2 workers x grad_accum 2 to step 4, resumed on 1 worker x 2: one line says so, and how. */
    const char *p2[] = {"trainer.devices=cpu:2", "trainer.grad_accum=2", "trainer.stop_at_step=4"};
    const char *p1[] = {"trainer.devices=cpu:1", "trainer.grad_accum=2"};
    free(train_and_get(b, 3, p2, &n, &s));
    CHECK(!log_has(b, "the global batch changes"));
    free(train_and_get(b, 2, p1, &n, &s));
    CHECK(log_has(b, "the global batch changes from 384 to 192 concepts per step (micro-batches x data.max_tokens: 4 x "
                     "96 when "));
    CHECK(log_has(b, "1 device x grad_accum 2 x 96 now); to keep it, set trainer.grad_accum=4 (or "
                     "data.global_batch_tokens=384)"));
}

TEST(recompute_layer_trains_to_the_same_bits) {
    /* The whole trainer (2 workers, 2 micro-batches each, dropout 0.1, validation) with trainer.recompute
     * = layer ends with the same weights, bit for bit, as keeping every activation. */
    lcm_log_set_quiet(1);
    const char *root = harness_tmpdir();
    float *w[2];
    size_t n = 0;
    double loss[2];
    for (int r = 0; r < 2; r++) {
        char out[600];
        snprintf(out, sizeof out, "%s/recompute%d", root, r);
        const char *extra[] = {"trainer.devices=cpu:2", "trainer.grad_accum=2",
                               r ? "trainer.recompute=layer" : "trainer.recompute=none"};
        lcm_train_summary sum;
        w[r] = train_and_get(out, 3, extra, &n, &sum);
        loss[r] = sum.train_loss;
    }
    CHECK(w[0] && w[1] && memcmp(w[0], w[1], n * sizeof(float)) == 0);
    CHECK(loss[0] == loss[1]);
    free(w[0]);
    free(w[1]);
}

TEST(memory_plan_is_what_the_cpu_workers_allocate) {
    /* Every byte the CPU backends allocate during a run (the model's blocks, bf16 gradients, staging
     * slots) is counted by the backend; the plan, computed before, must say exactly that (times the
     * workers), for both recompute modes, with validation and the bf16 reduce buffer; the attention
     * scratch grows on demand up to the plan's workspace. */
    lcm_log_set_quiet(1);
    const char *modes[2] = {"trainer.recompute=none", "trainer.recompute=layer"};
    size_t totals[2];
    for (int r = 0; r < 2; r++) {
        static lcm_config cfg;
        lcm_error err = {0};
        char out[600];
        snprintf(out, sizeof out, "%s/plan%d", harness_tmpdir(), r);
        const char *extra[] = {"trainer.devices=cpu:2", "trainer.grad_accum=2", "trainer.grad_reduce_dtype=bf16",
                               "trainer.max_steps=4", modes[r]};
        CHECK_OK(tiny_config(&cfg, out, data_dir(), 5, extra, &err), &err);
        size_t before = 0, after = 0, scratch = 0;
        lcm_cpu_alloc_counters(&before, &scratch);
        lcm_train_summary sum;
        CHECK_OK(lcm_train(&cfg, &sum, &err), &err);
        lcm_cpu_alloc_counters(&after, &scratch);
        /* the plan as the trainer made it: the training and validation plans' longest micro-batch */
        char train[700], valid[700];
        snprintf(train, sizeof train, "%s/train.lcmd", data_dir());
        snprintf(valid, sizeof valid, "%s/valid.lcmd", data_dir());
        int max_rows = 0;
        for (int k = 0; k < 2; k++) {
            lcm_dataset ds;
            lcm_plan *plan = NULL;
            lcm_plan_config pc;
            lcm_plan_config_from(&pc, &cfg, k ? LCM_PLAN_EVAL : LCM_PLAN_TRAIN);
            CHECK_OK(lcm_dataset_open(&ds, k ? valid : train, &err), &err);
            CHECK_OK(lcm_plan_create(&plan, &ds, &pc, &err), &err);
            if (lcm_plan_max_rows(plan) > max_rows) max_rows = lcm_plan_max_rows(plan);
            lcm_plan_free(plan);
            lcm_dataset_close(&ds);
        }
        lcm_memplan_input in = {&cfg, &lcm_cpu_traits, 2, 0, max_rows, 1};
        lcm_memplan p;
        CHECK_OK(lcm_memplan_compute(&in, &p, &err), &err);
        CHECK(p.bytes[LCM_MEM_COMM] > 0);
        CHECKF(after - before == 2 * (p.total - p.bytes[LCM_MEM_WORKSPACE]), "allocated %zu, the plan says 2 x %zu",
               after - before, p.total - p.bytes[LCM_MEM_WORKSPACE]);
        CHECK(scratch > 0 && scratch <= p.bytes[LCM_MEM_WORKSPACE]);
        totals[r] = p.total;
    }
    CHECK(totals[1] < totals[0]);
}

/* Issue 11 item 4: cuDNN's attention workspace is in the plan's workspaces, at the largest any micro-batch
 * shape asks (here a stand-in size, B T^2 + 1000 H + hd, whose maximum over rows of T <= 128 concepts
 * with B = 7168 / T rows is at T = 128: 56 x 128^2 + 16000 + 128 = 933632, by hand), and not with
 * model.attention = native. */
static size_t fake_attention_workspace(int B, int T, int H, int hd) {
    return (size_t)B * T * T + 1000 * (size_t)H + (size_t)hd;
}

static size_t fake_rows(int B, int T, int H, int hd) { return (size_t)B; }

TEST(memory_plan_counts_the_fused_attention_workspace) {
    static lcm_config cfg;
    lcm_error err = {0};
    lcm_config_defaults(&cfg); /* base_lcm_1_6b: H 16, hd 128; data.max_tokens 7168, data.max_seq_len 128 */
    lcm_backend_traits bt = lcm_cuda_traits;
    bt.attention_workspace_bytes = fake_attention_workspace;
    lcm_memplan_input in = {&cfg, &bt, 1, 0, 0, 0};
    lcm_memplan p;
    CHECK_OK(lcm_memplan_compute(&in, &p, &err), &err);
    const size_t fixed = bt.workspace_bytes(cfg.data.max_seq_len);
    CHECKF(p.bytes[LCM_MEM_WORKSPACE] == fixed + 933632, "workspaces %zu", p.bytes[LCM_MEM_WORKSPACE]);
    cfg.model.attention = LCM_ATTENTION_NATIVE;
    CHECK_OK(lcm_memplan_compute(&in, &p, &err), &err);
    CHECK(p.bytes[LCM_MEM_WORKSPACE] == fixed);
    /* auto leaves rows shorter than 64 to the native kernels, cudnn takes every row: with a stand-in of
     * one byte per row, the most rows are 7168 / 64 = 112 under auto and 7168 (rows of 1) under cudnn */
    bt.attention_workspace_bytes = fake_rows;
    cfg.model.attention = LCM_ATTENTION_AUTO;
    CHECK_OK(lcm_memplan_compute(&in, &p, &err), &err);
    CHECK(p.bytes[LCM_MEM_WORKSPACE] == fixed + 112);
    cfg.model.attention = LCM_ATTENTION_CUDNN;
    CHECK_OK(lcm_memplan_compute(&in, &p, &err), &err);
    CHECK(p.bytes[LCM_MEM_WORKSPACE] == fixed + 7168);
    /* the real sizes: none on the CPU or without cuDNN; with it, the deterministic backward's bf16 dP
     * (896 x 128 x 128 x 2), fp32 sums (896 x 128 x 4) and 16 MiB, for 56 rows of 128, 16 heads of 64;
     * rows of 100 pad to 128; none for a head dim cuDNN is not used for */
    CHECK(lcm_cpu_traits.attention_workspace_bytes(56, 128, 16, 64) == 0);
    CHECK(lcm_cuda_traits.attention_workspace_bytes(56, 128, 16, 64) ==
          (LCM_WITH_CUDNN ? (size_t)29360128 + 458752 + 16777216 : 0));
    CHECK(lcm_cuda_traits.attention_workspace_bytes(56, 100, 16, 64) ==
          lcm_cuda_traits.attention_workspace_bytes(56, 128, 16, 64));
    CHECK(lcm_cuda_traits.attention_workspace_bytes(56, 128, 2, 160) == 0);
}

TEST(damaged_checkpoint_is_a_clear_error) {
    lcm_log_set_quiet(1);
    const char *root = harness_tmpdir();
    char out[600], ckpt[1200], path[1300];
    snprintf(out, sizeof out, "%s/run", root);
    size_t n = 0;
    lcm_train_summary sum;
    free(train_and_get(out, 0, NULL, &n, &sum));
    lcm_error err = {0};
    int found = 0;
    CHECK_OK(lcm_checkpoint_latest(out, ckpt, sizeof ckpt, &found, &err), &err);
    snprintf(path, sizeof path, "%s/model.safetensors", ckpt);
    CHECK(truncate(path, 1000) == 0);
    static lcm_config cfg;
    const char *more[] = {"trainer.max_steps=12"};
    CHECK_OK(tiny_config(&cfg, out, data_dir(), 1, more, &err), &err);
    CHECK_FAILS(lcm_train(&cfg, &sum, &err), &err, LCM_ERR_FORMAT, "model.safetensors");
    /* resume=never refuses to start over a run that has checkpoints (it would rotate them away). */
    const char *never[] = {"trainer.resume=never"};
    CHECK_OK(tiny_config(&cfg, out, data_dir(), 1, never, &err), &err);
    CHECK_FAILS(lcm_train(&cfg, &sum, &err), &err, LCM_ERR_CONFIG, "already holds checkpoints");
}

TEST(init_from_checks_names_and_shapes) {
    lcm_log_set_quiet(1);
    const char *root = harness_tmpdir();
    char out[600], ckpt[1200], arg[1400];
    snprintf(out, sizeof out, "%s/three_layers", root);
    const char *three[] = {"model.num_layers=3", "trainer.max_steps=3"};
    size_t n = 0;
    lcm_train_summary sum;
    free(train_and_get(out, 2, three, &n, &sum));
    lcm_error err = {0};
    int found = 0;
    CHECK_OK(lcm_checkpoint_latest(out, ckpt, sizeof ckpt, &found, &err), &err);
    snprintf(arg, sizeof arg, "trainer.init_from=%s/model.safetensors", ckpt);
    static lcm_config cfg;
    char out2[600];
    snprintf(out2, sizeof out2, "%s/two_layers", root);
    const char *extra[] = {arg};
    CHECK_OK(tiny_config(&cfg, out2, data_dir(), 1, extra, &err), &err);
    CHECK_FAILS(lcm_train(&cfg, &sum, &err), &err, LCM_ERR_FORMAT, "unexpected (lcm.layers.2.");
    const char *wide[] = {arg, "model.model_dim=32", "model.num_layers=3"};
    snprintf(out2, sizeof out2, "%s/wide", root);
    CHECK_OK(tiny_config(&cfg, out2, data_dir(), 3, wide, &err), &err);
    CHECK_FAILS(lcm_train(&cfg, &sum, &err), &err, LCM_ERR_FORMAT, "of the wrong shape (frontend.pre_linear.weight is [16, 16], model needs [32, 16]");
    /* The matching model starts from those weights: step 0 evaluates like the source run's end. */
    const char *same[] = {arg, "model.num_layers=3", "trainer.max_steps=1", "optim.warmup_steps=0"};
    snprintf(out2, sizeof out2, "%s/same", root);
    CHECK_OK(tiny_config(&cfg, out2, data_dir(), 4, same, &err), &err);
    CHECK_OK(lcm_train(&cfg, &sum, &err), &err);
}

TEST(bad_device_lists_are_errors) {
    lcm_log_set_quiet(1);
    const char *root = harness_tmpdir();
    static lcm_config cfg;
    lcm_error err = {0};
    lcm_train_summary sum;
    const char *gpu[] = {"trainer.devices=0"};
    CHECK_OK(tiny_config(&cfg, root, data_dir(), 1, gpu, &err), &err);
    int visible = 0;
    lcm_cuda_device_count(&visible, &err);
    if (visible == 0)
        CHECK_FAILS(lcm_train(&cfg, &sum, &err), &err, LCM_ERR_DEVICE, "trainer.devices = '0'");
    const char *twice[] = {"trainer.devices=1,1"};
    CHECK_FAILS(tiny_config(&cfg, root, data_dir(), 1, twice, &err), &err, LCM_ERR_CONFIG, "trainer.devices");
    const char *zero[] = {"trainer.devices=cpu:0"};
    CHECK_FAILS(tiny_config(&cfg, root, data_dir(), 1, zero, &err), &err, LCM_ERR_CONFIG, "trainer.devices");
}

/* A training-only rule, checked by lcm_train (not by the config, which `lcm data synth` and others load):
 * data that training synthesizes feeds the model, so it must have the model's dimension. */
TEST(synthesized_data_must_have_the_model_dimension) {
    lcm_log_set_quiet(1);
    char out[600];
    snprintf(out, sizeof out, "%s/run", harness_tmpdir());
    static lcm_config cfg;
    lcm_error err = {0};
    lcm_train_summary sum;
    const char *extra[] = {"data.train=", "data.valid=", "data.synthesize=true", "synth.dim=32"};
    CHECK_OK(tiny_config(&cfg, out, data_dir(), 4, extra, &err), &err);
    CHECK_FAILS(lcm_train(&cfg, &sum, &err), &err, LCM_ERR_CONFIG,
                "synth.dim = 32 (command line) differs from model.sonar_dim = 16 (command line)");
    struct stat st;
    CHECK(stat(out, &st) != 0); /* refused before the run directory is made */
}

TEST(nan_in_the_data_stops_before_training) {
    lcm_log_set_quiet(1);
    const char *root = harness_tmpdir();
    char src[600], dst[700], out[600], valid[600], norm[600];
    snprintf(src, sizeof src, "%s/train.lcmd", data_dir());
    snprintf(valid, sizeof valid, "%s/valid.lcmd", data_dir());
    snprintf(norm, sizeof norm, "%s/normalizer.safetensors", data_dir());
    snprintf(dst, sizeof dst, "%s/nan", root);
    mkdir(dst, 0777);
    char *cp[] = {"cp", src, valid, norm, dst, NULL};
    CHECK(harness_run(cp, 0));
    lcm_error err = {0};
    lcm_dataset ds;
    snprintf(dst, sizeof dst, "%s/nan/train.lcmd", root);
    CHECK_OK(lcm_dataset_open(&ds, dst, &err), &err);
    /* The payload is not checksummed (it is too big to verify at every open), so a NaN written into
     * it passes the open and must be found by the finite scan. f16 NaN: 0x7e00 at concept 5, dim 3. */
    const uint64_t off = (uint64_t)(ds.payload - ds.map.data) + (5 * 16 + 3) * 2;
    lcm_dataset_close(&ds);
    FILE *f = fopen(dst, "r+b");
    const unsigned char nan16[2] = {0x00, 0x7e};
    CHECK(f && fseek(f, (long)off, SEEK_SET) == 0 && fwrite(nan16, 1, 2, f) == 2);
    if (f) fclose(f);
    static lcm_config cfg;
    snprintf(out, sizeof out, "%s/run", root);
    snprintf(dst, sizeof dst, "%s/nan", root);
    CHECK_OK(tiny_config(&cfg, out, dst, 0, NULL, &err), &err);
    lcm_train_summary sum;
    CHECK_FAILS(lcm_train(&cfg, &sum, &err), &err, LCM_ERR_DATA, "train.lcmd");

    /* With the scan off and every value NaN, each step is skipped; after trainer.max_bad_steps in a
     * row both workers stop, with one error naming the step. */
    snprintf(dst, sizeof dst, "%s/nan/train.lcmd", root);
    CHECK_OK(lcm_dataset_open(&ds, dst, &err), &err);
    const uint64_t begin = (uint64_t)(ds.payload - ds.map.data), bytes = ds.n_concepts * (uint64_t)ds.dim * 2;
    lcm_dataset_close(&ds);
    f = fopen(dst, "r+b");
    CHECK(f && fseek(f, (long)begin, SEEK_SET) == 0);
    for (uint64_t i = 0; f && i < bytes / 2; i++) fwrite(nan16, 1, 2, f);
    if (f) fclose(f);
    const char *flood[] = {"data.check_finite=false", "trainer.max_bad_steps=3", "trainer.devices=cpu:2"};
    snprintf(dst, sizeof dst, "%s/nan", root);
    CHECK_OK(tiny_config(&cfg, out, dst, 3, flood, &err), &err);
    CHECK_FAILS(lcm_train(&cfg, &sum, &err), &err, LCM_ERR_NUMERIC, "step 3: loss or gradients are NaN/Inf for 3 steps");
}

TEST(lr_schedule_matches_the_reference_formula) {
    lcm_optim_config o = {.lr = 4e-4f, .start_lr = 1e-7f, .final_lr = 1e-5f, .warmup_steps = 10000};
    o.schedule = LCM_SCHEDULE_COSINE;
    const int64_t max_steps = 250000;
    const double lr = o.lr, start = o.start_lr, final = o.final_lr; /* the fp32 values the config holds */
    /* step 1 uses e = 0: the start LR; the warmup is linear in e. */
    CHECK_NEAR(lcm_lr_at(&o, max_steps, 1), start, 1e-15);
    CHECK_NEAR(lcm_lr_at(&o, max_steps, 5001), start + (lr - start) * 0.5, 1e-15);
    /* e = warmup: the peak; then cosine over cycle = max_steps - warmup + 1 steps. */
    CHECK_NEAR(lcm_lr_at(&o, max_steps, 10001), lr, 1e-15);
    const double cycle = max_steps - 10000 + 1, e = 130000 - 1;
    CHECK_NEAR(lcm_lr_at(&o, max_steps, 130000), final + 0.5 * (lr - final) * (1 + cos(M_PI * (e - 10000) / cycle)),
               1e-15);
    /* the last step is a hair above final_lr (the cycle is one step longer than the steps left) */
    CHECK(lcm_lr_at(&o, max_steps, max_steps) > final && lcm_lr_at(&o, max_steps, max_steps) < final + 1e-12);
    o.schedule = LCM_SCHEDULE_CONSTANT;
    CHECK_NEAR(lcm_lr_at(&o, max_steps, 200000), lr, 1e-15);
}

TEST(bf16_gradient_reduce_is_close_to_f32) {
    /* Two workers summing gradients in bf16 (8 significant bits, rounded once after an fp32 sum) instead
     * of fp32: the weights after 8 AdamW steps move by a few lr x 2^-8 per step at most, far below 1%
     * of their size; but the run must really use bf16 (the weights differ from the fp32 run's). */
    lcm_log_set_quiet(1);
    const char *root = harness_tmpdir();
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/f32", root);
    snprintf(b, sizeof b, "%s/bf16", root);
    const char *f32[] = {"trainer.devices=cpu:2", "trainer.grad_reduce_dtype=f32"};
    const char *bf16[] = {"trainer.devices=cpu:2", "trainer.grad_reduce_dtype=bf16"};
    size_t n = 0;
    lcm_train_summary s;
    float *wa = train_and_get(a, 2, f32, &n, &s);
    float *wb = train_and_get(b, 2, bf16, &n, &s);
    if (wa && wb) {
        double rel = harness_rel_err(wb, wa, n);
        CHECKF(rel > 0 && rel < 1e-2, "bf16 vs f32 reduction: weights differ by %.3g relative", rel);
    }
    free(wa);
    free(wb);
}
