/* test_cuda_model.c: the CUDA backend through the whole model and the whole trainer, against the CPU
 * backend: one model step (loss and every parameter gradient), a short training run (the loss curve
 * and the final validation loss), determinism (two GPU runs give identical losses; cuDNN's attention in
 * a build with cuDNN, and the native kernels against the CPU once more),
 * and, with two or more GPUs, data parallelism through NCCL. Without a GPU every test SKIPs.
 *
 * Tolerances. The CUDA backend stores activations and the compute copy of the weights in bf16 (8
 * significant bits, unit roundoff 2^-9); the CPU backend is fp32. Both start from the same
 * bf16-representable weights and the same inputs, so the differences come from rounding the ~12
 * activations a layer stores: each adds ~0.2% relative noise, they add up in quadrature through the
 * layers and again through the backward, giving ~1% on the loss and a few % on gradients. A wiring
 * error (a wrong buffer, a sign, a mask) changes them by O(1). So: loss 2e-2, the whole gradient
 * vector 5e-2, each tensor's gradient 1.5e-1 (small tensors average less noise away). Training curves
 * drift apart slowly because the runs take different rounding paths: 5% per step over 30 steps. */
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "../harness.h"
#include "gpu_gate.h"
#include "lcm/checkpoint.h"
#include "lcm/half.h"
#include "lcm/log.h"
#include "lcm/model.h"
#include "lcm/synth.h"
#include "lcm/train.h"


static float uniform(lcm_rng *r, float a) { return a * (2.0f * lcm_rng_uniform(r) - 1.0f); }

typedef struct side {
    lcm_backend *be;
    lcm_model m;
} side;

TEST(model_step_matches_cpu) {
    NEED_GPUS(1);
    lcm_error err = {0};
    const lcm_dims d = {.D = 64, .C = 128, .L = 2, .H = 4, .F = 256, .max_seq_len = 64,
                        .dropout = 0.1f, .rope_theta = 10000.0f, .eps = 1e-5f};
    const int B = 4, T = 33;
    const int32_t lens[4] = {33, 20, 7, 2};
    side cpu = {0}, gpu = {0};
    CHECK_OK(lcm_cpu_backend_create(&cpu.be, 0, &err), &err);
    CHECK_OK(lcm_cuda_backend_create(&gpu.be, 0, &err), &err);
    if (err.code) return;
    CHECK_OK(lcm_model_create(&cpu.m, cpu.be, &d, (int64_t)B * T, B, T, 1, &err), &err);
    CHECK_OK(lcm_model_create(&gpu.m, gpu.be, &d, (int64_t)B * T, B, T, 1, &err), &err);
    if (err.code) return;
    const size_t P = cpu.m.t.total;
    float *w = calloc(P, sizeof(float));
    lcm_params_init(&cpu.m.t, w, 3);
    lcm_rng r;
    lcm_rng_init(&r, 17, 0);
    /* around the reference init, biases and gains made non-trivial, and bf16-representable so that both
     * backends compute with exactly the same weights */
    for (int i = 0; i < cpu.m.t.n; i++) {
        const lcm_param *p = &cpu.m.t.params[i];
        for (size_t j = 0; j < p->numel; j++) {
            float v = w[p->offset + j] + uniform(&r, 0.02f);
            w[p->offset + j] = lcm_bf16_to_f32(lcm_f32_to_bf16(v));
        }
    }
    float *x = calloc((size_t)B * T * d.D, sizeof(float));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < lens[b]; t++)
            for (int k = 0; k < d.D; k++) x[((size_t)b * T + t) * d.D + k] = uniform(&r, 1.0f);
    float center[64], scale[64];
    for (int k = 0; k < d.D; k++) {
        center[k] = uniform(&r, 0.1f);
        scale[k] = 0.5f + lcm_rng_uniform(&r);
    }
    lcm_normalizer norm = {.dim = d.D, .center = center, .scale = scale};
    int64_t targets = 0;
    for (int b = 0; b < B; b++) targets += lens[b] - 1;
    float loss[2] = {0, 0};
    float *grads[2] = {malloc(P * sizeof(float)), malloc(P * sizeof(float))};
    side *sides[2] = {&cpu, &gpu};
    lcm_dropout_key key = {.seed = 5, .step = 9, .microbatch = 1};
    for (int s = 0; s < 2; s++) {
        lcm_model *m = &sides[s]->m;
        lcm_backend *be = sides[s]->be;
        CHECK_OK(lcm_model_set_params(m, w, &err), &err);
        CHECK_OK(lcm_model_set_normalizer(m, &norm, &err), &err);
        CHECK_OK(lcm_model_upload_batch(m, x, lens, B, T, &err), &err);
        /* no zeroing: the backward assigns (accumulate 0), as a step's first micro-batch does */
        lcm_model_forward(m, B, T, d.dropout, key);
        lcm_model_loss(m, B, T, 1.0f / (float)targets);
        CHECK_OK(lcm_model_backward(m, B, T, d.dropout, key, 0, NULL, NULL, &err), &err);
        CHECK_OK(be->ops->sync(be, &err), &err);
        CHECK_OK(be->ops->download(be, &loss[s], m->loss, sizeof(float), &err), &err);
        CHECK_OK(be->ops->download(be, grads[s], m->grads, P * sizeof(float), &err), &err);
    }
    CHECKF(fabs(loss[1] - loss[0]) <= 2e-2 * fabs(loss[0]), "loss: gpu %.6g, cpu %.6g", loss[1], loss[0]);
    double all = harness_rel_err(grads[1], grads[0], P);
    CHECKF(all <= 5e-2, "all gradients: relative error %.3g", all);
    for (int i = 0; i < cpu.m.t.n; i++) {
        const lcm_param *p = &cpu.m.t.params[i];
        double rel = harness_rel_err(grads[1] + p->offset, grads[0] + p->offset, p->numel);
        CHECKF(rel <= 1.5e-1, "%s: relative error %.3g", p->name, rel);
    }
    /* The same step again on the GPU: bit-identical gradients (deterministic kernels). */
    float *again = malloc(P * sizeof(float));
    lcm_model_forward(&gpu.m, B, T, d.dropout, key);
    lcm_model_loss(&gpu.m, B, T, 1.0f / (float)targets);
    CHECK_OK(lcm_model_backward(&gpu.m, B, T, d.dropout, key, 0, NULL, NULL, &err), &err);
    CHECK_OK(gpu.be->ops->download(gpu.be, again, gpu.m.grads, P * sizeof(float), &err), &err);
    CHECK(memcmp(again, grads[1], P * sizeof(float)) == 0);
    free(again);
    free(grads[0]);
    free(grads[1]);
    free(w);
    free(x);
    lcm_model_destroy(&cpu.m);
    lcm_model_destroy(&gpu.m);
    lcm_backend_destroy(cpu.be);
    lcm_backend_destroy(gpu.be);
}

/* ---- whole runs ---------------------------------------------------------------------------------- */

static const char *data_dir(void) {
    static char dir[512];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s/data", harness_tmpdir());
    static lcm_config cfg;
    lcm_error err = {0};
    char *args[] = {"model.sonar_dim=64", "synth.dim=64", "synth.latent_dim=16", "synth.train_docs=400",
                    "synth.valid_docs=40", "synth.mean_len=20", "synth.max_len=80"};
    if (lcm_config_load(&cfg, NULL, 7, args, &err) != 0 || lcm_synth_write(&cfg.synth, dir, NULL, NULL, &err) != 0) {
        fprintf(stderr, "cannot synthesize the test data: %s\n", err.msg);
        exit(2);
    }
    return dir;
}

/* attention: model.attention (auto: cuDNN's fused attention in a build with cuDNN, else native). */
static int run_with(const char *out, const char *devices, const char *accum, const char *attention,
                    lcm_train_summary *sum, lcm_error *err) {
    static lcm_config cfg;
    char o[600], tr[600], va[600], dv[64], ac[64], at[64];
    snprintf(at, sizeof at, "model.attention=%s", attention);
    snprintf(o, sizeof o, "trainer.output_dir=%s", out);
    snprintf(tr, sizeof tr, "data.train=%s/train.lcmd", data_dir());
    snprintf(va, sizeof va, "data.valid=%s/valid.lcmd", data_dir());
    snprintf(dv, sizeof dv, "trainer.devices=%s", devices);
    snprintf(ac, sizeof ac, "trainer.grad_accum=%s", accum);
    char *args[] = {"model.sonar_dim=64", "model.model_dim=128", "model.num_layers=2", "model.num_heads=4",
                    "model.ffn_inner_dim=256", "data.max_seq_len=32", "data.max_tokens=512",
                    "trainer.max_steps=30", "trainer.log_every=1", "trainer.validate_every=0",
                    "trainer.checkpoint_every=0", "trainer.plot=false", "optim.warmup_steps=5", "optim.lr=2e-3",
                    o, tr, va, dv, ac, at};
    LCM_TRY(lcm_config_load(&cfg, NULL, (int)(sizeof args / sizeof args[0]), args, err));
    return lcm_train(&cfg, sum, err);
}

/* cuDNN's attention where this lcm is built with it (explicitly: auto would leave these rows of at most 32
 * positions to the native kernels), else auto (native). */
static int run(const char *out, const char *devices, const char *accum, lcm_train_summary *sum, lcm_error *err) {
    return run_with(out, devices, accum, LCM_WITH_CUDNN ? "cudnn" : "auto", sum, err);
}

/* The training losses of steps 1..n from metrics.jsonl. */
static int read_losses(const char *out, double *loss, int n) {
    char path[700];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    char *text = NULL;
    lcm_error err = {0};
    if (lcm_read_file(path, &text, NULL, &err) != 0) return 0;
    int found = 0;
    for (int step = 1; step <= n; step++) {
        char key[48];
        snprintf(key, sizeof key, "{\"step\":%d,\"loss\":", step);
        const char *at = strstr(text, key);
        if (at) {
            loss[step - 1] = strtod(at + strlen(key), NULL);
            found++;
        }
    }
    free(text);
    return found;
}

/* A sharded model on one GPU (rank r of 3; the collectives are not needed to set weights): the fp32
 * master copy holds rank r's slice only, and lcm_model_set_params passes every weight through that
 * slice-sized buffer into the bf16 compute copy: the compute copy is the whole vector rounded to bf16,
 * the master slice the host's values exactly. */
TEST(sharded_model_keeps_the_master_slice_and_the_whole_compute_copy) {
    NEED_GPUS(1);
    lcm_error err = {0};
    const lcm_dims d = {.D = 64, .C = 128, .L = 2, .H = 4, .F = 256, .max_seq_len = 64,
                        .dropout = 0.1f, .rope_theta = 10000.0f, .eps = 1e-5f};
    lcm_backend *be = NULL;
    CHECK_OK(lcm_cuda_backend_create(&be, 0, &err), &err);
    if (err.code) return;
    for (int rank = 0; rank < 3; rank++) {
        lcm_model m;
        CHECK_OK(lcm_model_create_shard(&m, be, &d, 64, 4, 16, 3, rank, 0, &err), &err);
        if (err.code) break;
        const size_t P = m.t.total, n = m.opt_end - m.opt_begin;
        CHECK(m.master_sliced && n > 0 && n < P);
        float *w = malloc(P * sizeof(float)), *slice = malloc(n * sizeof(float));
        uint16_t *act = malloc(P * sizeof(uint16_t));
        if (!w || !slice || !act) exit(2);
        lcm_rng r;
        lcm_rng_init(&r, 7, (uint64_t)rank);
        for (size_t i = 0; i < P; i++) w[i] = uniform(&r, 0.5f);
        CHECK_OK(lcm_model_set_params(&m, w, &err), &err);
        CHECK_OK(be->ops->download(be, act, m.params, P * sizeof(uint16_t), &err), &err);
        CHECK_OK(be->ops->download(be, slice, lcm_model_master_at(&m, m.opt_begin), n * sizeof(float), &err), &err);
        int same = 1;
        for (size_t i = 0; i < P; i++) same &= act[i] == lcm_f32_to_bf16(w[i]);
        CHECKF(same, "rank %d: the compute copy is not the weights rounded to bf16", rank);
        CHECK(memcmp(slice, w + m.opt_begin, n * sizeof(float)) == 0);
        float *whole = malloc(P * sizeof(float));
        CHECK(lcm_model_get_params(&m, whole, &err) == LCM_ERR_INTERNAL); /* a slice cannot give the whole */
        free(whole);
        free(w);
        free(slice);
        free(act);
        lcm_model_destroy(&m);
    }
    lcm_backend_destroy(be);
}

TEST(training_follows_cpu_and_is_deterministic) {
    NEED_GPUS(1);
    lcm_log_set_quiet(1);
    const char *root = harness_tmpdir();
    char a[600], b[600], c[600];
    snprintf(a, sizeof a, "%s/cpu", root);
    snprintf(b, sizeof b, "%s/gpu1", root);
    snprintf(c, sizeof c, "%s/gpu2", root);
    lcm_error err = {0};
    lcm_train_summary sc, s1, s2;
    CHECK_OK(run(a, "cpu", "1", &sc, &err), &err);
    CHECK_OK(run(b, "0", "1", &s1, &err), &err);
    CHECK_OK(run(c, "0", "1", &s2, &err), &err);
    double lc[30], l1[30], l2[30];
    CHECK(read_losses(a, lc, 30) == 30 && read_losses(b, l1, 30) == 30 && read_losses(c, l2, 30) == 30);
    for (int i = 0; i < 30; i++) {
        CHECKF(fabs(l1[i] - lc[i]) <= 5e-2 * lc[i], "step %d: gpu loss %.6g, cpu %.6g", i + 1, l1[i], lc[i]);
        CHECKF(l1[i] == l2[i], "step %d: two GPU runs differ (%.9g vs %.9g)", i + 1, l1[i], l2[i]);
    }
    CHECKF(lc[29] < 0.9 * lc[0], "the loss should fall (%.4g -> %.4g)", lc[0], lc[29]);
    /* the native kernels follow the CPU too (the runs above used cuDNN where it is built) */
    char d[600];
    snprintf(d, sizeof d, "%s/gpu_native", root);
    lcm_train_summary sn;
    double ln[30];
    CHECK_OK(run_with(d, "0", "1", "native", &sn, &err), &err);
    CHECK(read_losses(d, ln, 30) == 30);
    for (int i = 0; i < 30; i++)
        CHECKF(fabs(ln[i] - lc[i]) <= 5e-2 * lc[i], "step %d: native gpu loss %.6g, cpu %.6g", i + 1, ln[i], lc[i]);
    CHECK(s1.have_valid && sc.have_valid);
    CHECKF(fabs(s1.valid.loss - sc.valid.loss) <= 3e-2 * sc.valid.loss, "validation loss: gpu %.6g, cpu %.6g",
           s1.valid.loss, sc.valid.loss);
}

TEST(two_gpus_compute_what_one_gpu_computes) {
    NEED_GPUS(2);
    lcm_log_set_quiet(1);
    const char *root = harness_tmpdir();
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/one", root);
    snprintf(b, sizeof b, "%s/two", root);
    lcm_error err = {0};
    lcm_train_summary s1, s2;
    CHECK_OK(run(a, "0", "2", &s1, &err), &err);     /* 1 GPU x 2 micro-batches */
    CHECK_OK(run(b, "0,1", "1", &s2, &err), &err);   /* 2 GPUs x 1, through NCCL */
    double l1[30], l2[30];
    CHECK(read_losses(a, l1, 30) == 30 && read_losses(b, l2, 30) == 30);
    /* Same function, different summation order of the fp32 gradients: bf16 activations are computed
     * identically per micro-batch, so the curves agree far more tightly than GPU vs CPU. */
    for (int i = 0; i < 30; i++)
        CHECKF(fabs(l1[i] - l2[i]) <= 1e-3 * l1[i], "step %d: 1 GPU %.7g, 2 GPUs %.7g", i + 1, l1[i], l2[i]);
}
