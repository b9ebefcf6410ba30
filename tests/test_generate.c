/* test_generate.c: generation (src/gen/generate.c) on the CPU backend: the KV-cache path against a full
 * forward over the growing prefix, the stop rules, prompt rows keeping their ground truth, determinism
 * and seeded noise, batching and device independence, and the checks on bad prompts. */
#include "harness.h"
#include "lcm/generate.h"
#include "model_util.h"

/* A small model with random weights (the reference init plus noise, so that biases and gains are not
 * trivial) and a random normalizer. */
typedef struct gen_fixture {
    lcm_dims d;
    lcm_param_table t;
    float *w;
    lcm_normalizer norm;
    float *prompt_data;
    uint64_t offsets[9];
    lcm_gen_prompts p;
} gen_fixture;

static void fixture_init(gen_fixture *f, const int *lens, int n, uint64_t seed) {
    memset(f, 0, sizeof *f);
    f->d = tiny_dims();
    lcm_error err = {0};
    CHECK_OK(lcm_param_table_build(&f->t, &f->d, &err), &err);
    f->w = calloc(f->t.total, sizeof(float));
    lcm_params_init(&f->t, f->w, seed);
    lcm_rng r;
    lcm_rng_init(&r, seed, 7);
    for (int i = 0; i < f->t.n; i++) {
        const lcm_param *p = &f->t.params[i];
        for (size_t j = 0; j < p->numel; j++) f->w[p->offset + j] += tiny_uniform(&r, 0.1f);
    }
    const int D = f->d.D;
    f->norm.dim = D;
    f->norm.center = malloc(D * sizeof(float));
    f->norm.scale = malloc(D * sizeof(float));
    for (int k = 0; k < D; k++) {
        f->norm.center[k] = tiny_uniform(&r, 0.05f);
        f->norm.scale[k] = 0.5f + lcm_rng_uniform(&r);
    }
    f->offsets[0] = 0;
    for (int i = 0; i < n; i++) f->offsets[i + 1] = f->offsets[i] + (uint64_t)lens[i];
    f->prompt_data = malloc(f->offsets[n] * D * sizeof(float));
    for (uint64_t k = 0; k < f->offsets[n] * D; k++) f->prompt_data[k] = tiny_uniform(&r, 1.0f);
    f->p = (lcm_gen_prompts){.n = n, .D = D, .data = f->prompt_data, .offsets = f->offsets};
}

static void fixture_free(gen_fixture *f) {
    lcm_param_table_free(&f->t);
    free(f->w);
    lcm_normalizer_free(&f->norm);
    free(f->prompt_data);
}

static lcm_gen_options opts(int max_gen, int batch) {
    lcm_gen_options o = {.max_gen_len = max_gen, .min_gen_len = 1, .eos_threshold = 2.0f, .repetition_threshold = 0,
                         .temperature = 0, .seed = 0, .batch_size = batch, .use_cache = 1};
    return o;
}

static int run(gen_fixture *f, const char *devices, const lcm_gen_options *o, const float *eot, lcm_gen_result *out,
               lcm_error *err) {
    memset(out, 0, sizeof(lcm_gen_result) * (size_t)f->p.n);
    return lcm_generate_all(devices, 1, &f->d, f->w, &f->norm, eot, o, &f->p, out, err);
}

/* Largest |a - b| / (|b| + 1) over two runs' concepts (same lengths required). */
static double max_diff(const lcm_gen_result *a, const lcm_gen_result *b, int n, int D) {
    double worst = 0;
    for (int i = 0; i < n; i++) {
        if (a[i].len != b[i].len) return INFINITY;
        for (int k = 0; k < a[i].len * D; k++) {
            double e = fabs((double)a[i].concepts[k] - b[i].concepts[k]) / (fabs((double)b[i].concepts[k]) + 1.0);
            if (e > worst) worst = e;
        }
    }
    return worst;
}

static const int mixed_lens[5] = {3, 7, 1, 5, 2};

/* (a) The KV cache gives what a full forward over the growing prefix gives. Both are fp32 with the
 * same ops in the same order except the attention products' blocking (a [S, pos] product instead of
 * rows of a [T, T] one), so single steps agree to ~1e-7 relative; the generated concept is fed back
 * for 12 steps, where a random model amplifies differences by a small factor per step. 1e-5 leaves
 * that room and fails for any wrong position (RoPE offset), a missing or misplaced cache entry or a
 * wrong mask: those are O(1) errors. */
TEST(kv_cache_matches_full_forward) {
    gen_fixture f;
    fixture_init(&f, mixed_lens, 5, 3);
    lcm_error err = {0};
    lcm_gen_options o = opts(12, 3);
    lcm_gen_result cached[5], full[5];
    CHECK_OK(run(&f, "cpu", &o, NULL, cached, &err), &err);
    o.use_cache = 0;
    CHECK_OK(run(&f, "cpu", &o, NULL, full, &err), &err);
    for (int i = 0; i < 5; i++) {
        CHECK(cached[i].len == 12 && cached[i].reason == LCM_STOP_MAX_GEN_LEN);
        CHECK(full[i].len == 12);
    }
    double e = max_diff(cached, full, 5, f.d.D);
    CHECKF(e <= 1e-5, "cached vs full forward: %.3g", e);
    /* and the generated values are not trivially equal (the model does something) */
    CHECK(fabs(cached[0].concepts[0] - cached[1].concepts[0]) > 1e-3);
    lcm_gen_results_free(cached, 5);
    lcm_gen_results_free(full, 5);
    fixture_free(&f);
}

/* Prompts longer than the prefill chunk exercise a prefill in several forwards. */
TEST(kv_cache_long_prompts_chunked_prefill) {
    gen_fixture f;
    const int lens[2] = {40, 9};
    fixture_init(&f, lens, 2, 5);
    f.d.max_seq_len = 64;
    lcm_error err = {0};
    lcm_gen_options o = opts(6, 2);
    lcm_gen_result cached[2], full[2];
    CHECK_OK(run(&f, "cpu", &o, NULL, cached, &err), &err);
    o.use_cache = 0;
    CHECK_OK(run(&f, "cpu", &o, NULL, full, &err), &err);
    double e = max_diff(cached, full, 2, f.d.D);
    CHECKF(e <= 1e-5, "cached vs full forward: %.3g", e);
    lcm_gen_results_free(cached, 2);
    lcm_gen_results_free(full, 2);
    fixture_free(&f);
}

/* (b) A row inside its prompt keeps the prompt: batched with shorter prompts (so the batch starts
 * predicting while it is still inside its prompt), each prompt's continuation equals its continuation
 * alone. If predictions replaced prompt concepts, the 7-concept prompt's continuation would change. */
TEST(batched_rows_keep_their_prompt) {
    gen_fixture f;
    fixture_init(&f, mixed_lens, 5, 11);
    lcm_error err = {0};
    lcm_gen_options o = opts(8, 5);
    lcm_gen_result together[5], alone[5];
    CHECK_OK(run(&f, "cpu", &o, NULL, together, &err), &err);
    o.batch_size = 1;
    CHECK_OK(run(&f, "cpu", &o, NULL, alone, &err), &err);
    /* different batch shapes change only the blocking of the products: see kv_cache_matches_full_forward */
    double e = max_diff(together, alone, 5, f.d.D);
    CHECKF(e <= 1e-5, "batched vs alone: %.3g", e);
    lcm_gen_results_free(together, 5);
    lcm_gen_results_free(alone, 5);
    fixture_free(&f);
}

/* Several CPU workers (trainer.devices=cpu:N) produce what one does: each prompt's noise and result
 * do not depend on the device it ran on. */
TEST(cpu_workers_match_one_worker) {
    gen_fixture f;
    fixture_init(&f, mixed_lens, 5, 13);
    lcm_error err = {0};
    lcm_gen_options o = opts(6, 2);
    o.temperature = 0.3f;
    o.seed = 9;
    lcm_gen_result one[5], three[5];
    CHECK_OK(run(&f, "cpu", &o, NULL, one, &err), &err);
    CHECK_OK(run(&f, "cpu:3", &o, NULL, three, &err), &err);
    double e = max_diff(one, three, 5, f.d.D);
    CHECKF(e == 0, "cpu vs cpu:3: %.3g", e);
    lcm_gen_results_free(one, 5);
    lcm_gen_results_free(three, 5);
    fixture_free(&f);
}

/* (c) Temperature 0 is deterministic; temperature > 0 is reproducible for a seed, differs for another
 * seed, and differs from temperature 0 (the noise is applied). */
TEST(determinism_and_seeded_noise) {
    gen_fixture f;
    fixture_init(&f, mixed_lens, 5, 17);
    lcm_error err = {0};
    lcm_gen_options o = opts(5, 3);
    lcm_gen_result a[5], b[5], c[5], z[5];
    CHECK_OK(run(&f, "cpu", &o, NULL, z, &err), &err);
    CHECK_OK(run(&f, "cpu", &o, NULL, a, &err), &err);
    CHECK(max_diff(a, z, 5, f.d.D) == 0);
    lcm_gen_results_free(a, 5);
    o.temperature = 0.5f;
    o.seed = 42;
    CHECK_OK(run(&f, "cpu", &o, NULL, a, &err), &err);
    CHECK_OK(run(&f, "cpu", &o, NULL, b, &err), &err);
    CHECK(max_diff(a, b, 5, f.d.D) == 0);
    CHECK(max_diff(a, z, 5, f.d.D) > 0.01);
    o.seed = 43;
    CHECK_OK(run(&f, "cpu", &o, NULL, c, &err), &err);
    CHECK(max_diff(a, c, 5, f.d.D) > 0.01);
    /* the noise has the asked-for size: the first generated concept of each prompt differs from the
     * deterministic one by temperature * scale per dimension in distribution; over 5 x 12 values the
     * sample std of (noisy - clean) / scale is within 40% of 0.5 (chi-square with 60 dof: far inside) */
    double ss = 0;
    int cnt = 0;
    for (int i = 0; i < 5; i++)
        for (int k = 0; k < f.d.D; k++) {
            double dz = (a[i].concepts[k] - z[i].concepts[k]) / f.norm.scale[k];
            ss += dz * dz;
            cnt++;
        }
    double sd = sqrt(ss / cnt);
    CHECKF(sd > 0.3 && sd < 0.7, "noise std %.3f, expected about 0.5", sd);
    lcm_gen_results_free(a, 5);
    lcm_gen_results_free(b, 5);
    lcm_gen_results_free(c, 5);
    lcm_gen_results_free(z, 5);
    fixture_free(&f);
}

/* A model that always predicts the same concept: every weight 0 except the PostNet bias, which is
 * then the prediction (normalized space); with the identity normalizer also in raw space. */
static void constant_model(gen_fixture *f, const float *value) {
    memset(f->w, 0, f->t.total * sizeof(float));
    for (int k = 0; k < f->d.D; k++) f->w[f->t.post_b + k] = value[k];
    for (int k = 0; k < f->d.D; k++) {
        f->norm.center[k] = 0;
        f->norm.scale[k] = 1;
    }
}

/* (b) stop rules with a constant prediction v: EOT = v stops at once (or at min_gen_len); EOT
 * orthogonal to v never stops, so max_gen_len does; the repetition rule fires at the second generated
 * concept (identical to the first) unless min_gen_len holds it back; model.max_seq_len caps a row. */
TEST(stop_rules) {
    gen_fixture f;
    const int lens[2] = {2, 4};
    fixture_init(&f, lens, 2, 19);
    const int D = f.d.D;
    float v[12], eot_same[12], eot_orth[12];
    for (int k = 0; k < 12; k++) {
        v[k] = k < 6 ? 1.0f : 0.0f;
        eot_same[k] = 2.0f * v[k];                 /* cosine 1 */
        eot_orth[k] = k < 6 ? 0.0f : 1.0f;          /* cosine 0 */
    }
    constant_model(&f, v);
    lcm_error err = {0};
    lcm_gen_result r[2];

    lcm_gen_options o = opts(10, 2);
    o.eos_threshold = 0.9f;
    CHECK_OK(run(&f, "cpu", &o, eot_same, r, &err), &err);
    for (int i = 0; i < 2; i++) {
        CHECK(r[i].len == 1 && r[i].reason == LCM_STOP_EOT);
        CHECK(r[i].concepts[0] == 1.0f && r[i].concepts[D - 1] == 0.0f); /* the EOT concept stays */
    }
    lcm_gen_results_free(r, 2);

    o.min_gen_len = 4;
    CHECK_OK(run(&f, "cpu", &o, eot_same, r, &err), &err);
    for (int i = 0; i < 2; i++) CHECK(r[i].len == 4 && r[i].reason == LCM_STOP_EOT);
    lcm_gen_results_free(r, 2);

    o.min_gen_len = 1;
    CHECK_OK(run(&f, "cpu", &o, eot_orth, r, &err), &err);
    for (int i = 0; i < 2; i++) CHECK(r[i].len == 10 && r[i].reason == LCM_STOP_MAX_GEN_LEN);
    lcm_gen_results_free(r, 2);

    o.repetition_threshold = 0.99f;
    CHECK_OK(run(&f, "cpu", &o, eot_orth, r, &err), &err);
    for (int i = 0; i < 2; i++) CHECK(r[i].len == 2 && r[i].reason == LCM_STOP_REPETITION);
    lcm_gen_results_free(r, 2);
    o.min_gen_len = 5;
    CHECK_OK(run(&f, "cpu", &o, eot_orth, r, &err), &err);
    for (int i = 0; i < 2; i++) CHECK(r[i].len == 5 && r[i].reason == LCM_STOP_REPETITION);
    lcm_gen_results_free(r, 2);

    /* max_seq_len 8: prompt 2 + 6 generated, prompt 4 + 4 generated */
    o = opts(7, 2);
    f.d.max_seq_len = 8;
    CHECK_OK(run(&f, "cpu", &o, NULL, r, &err), &err);
    CHECK(r[0].len == 6 && r[0].reason == LCM_STOP_MAX_SEQ_LEN);
    CHECK(r[1].len == 4 && r[1].reason == LCM_STOP_MAX_SEQ_LEN);
    lcm_gen_results_free(r, 2);
    fixture_free(&f);
}

/* (b) Rows stop independently: in one batch, a row whose prompt ends in a concept parallel to the
 * prediction stops by repetition at its first generated concept while the other goes on to
 * max_gen_len. */
TEST(rows_stop_independently) {
    gen_fixture f;
    const int lens[2] = {3, 3};
    fixture_init(&f, lens, 2, 23);
    const int D = f.d.D;
    float v[12];
    for (int k = 0; k < 12; k++) v[k] = (float)(k + 1);
    constant_model(&f, v);
    memcpy(f.prompt_data + 2 * D, v, D * sizeof(float)); /* prompt 0's last concept = the prediction */
    lcm_error err = {0};
    lcm_gen_result r[2];
    lcm_gen_options o = opts(6, 2);
    o.repetition_threshold = 0.999f;
    o.min_gen_len = 1;
    /* prompt 1: make its first generated concept differ from its last prompt concept */
    for (int k = 0; k < D; k++) f.prompt_data[5 * D + k] = (k % 2) ? -1.0f : 1.0f;
    CHECK_OK(run(&f, "cpu", &o, NULL, r, &err), &err);
    CHECK(r[0].len == 1 && r[0].reason == LCM_STOP_REPETITION);
    CHECK(r[1].len == 2 && r[1].reason == LCM_STOP_REPETITION);
    lcm_gen_results_free(r, 2);
    o.repetition_threshold = 0;
    CHECK_OK(run(&f, "cpu", &o, NULL, r, &err), &err);
    CHECK(r[0].len == 6 && r[1].len == 6);
    lcm_gen_results_free(r, 2);
    fixture_free(&f);
}

TEST(bad_prompts_are_errors) {
    gen_fixture f;
    const int lens[3] = {2, 0, 3};
    fixture_init(&f, lens, 3, 29);
    lcm_error err = {0};
    lcm_gen_options o = opts(4, 2);
    lcm_gen_result r[3];
    CHECK_FAILS(run(&f, "cpu", &o, NULL, r, &err), &err, LCM_ERR_DATA, "prompt 1 is empty");
    f.offsets[1] = 1; /* lengths 1, 1, 3 */
    f.p.D = 7;
    CHECK_FAILS(run(&f, "cpu", &o, NULL, r, &err), &err, LCM_ERR_DATA, "7-dimensional");
    f.p.D = f.d.D;
    o.max_gen_len = 64;
    CHECK_FAILS(run(&f, "cpu", &o, NULL, r, &err), &err, LCM_ERR_CONFIG, "generate.max_gen_len = 64");
    o.max_gen_len = 4;
    f.d.max_seq_len = 3;
    CHECK_FAILS(run(&f, "cpu", &o, NULL, r, &err), &err, LCM_ERR_CONFIG, "max_gen_len");
    o.max_gen_len = 1;
    CHECK_FAILS(run(&f, "cpu", &o, NULL, r, &err), &err, LCM_ERR_DATA, "prompt 2 has 3 concepts");
    f.d.max_seq_len = 64;
    f.prompt_data[0] = NAN;
    CHECK_FAILS(run(&f, "cpu", &o, NULL, r, &err), &err, LCM_ERR_DATA, "NaN");
    lcm_gen_results_free(r, 3);
    f.prompt_data[0] = 0;
    f.w[f.t.post_b] = INFINITY; /* a diverged model */
    CHECK_FAILS(run(&f, "cpu", &o, NULL, r, &err), &err, LCM_ERR_NUMERIC, "predicted NaN or Inf for prompt 0");
    lcm_gen_results_free(r, 3);
    fixture_free(&f);
}

/* The cache is sized up front: one that cannot fit is an error naming what to lower. */
TEST(kv_cache_too_big_is_an_error) {
    lcm_error err = {0};
    lcm_backend *be = NULL;
    CHECK_OK(lcm_cpu_backend_create(&be, 0, &err), &err);
    lcm_dims d = tiny_dims();
    d.C = 1 << 14;
    d.H = 1;
    d.L = 64;
    d.max_seq_len = 1 << 20;
    lcm_model m;
    memset(&m, 0, sizeof m);
    m.d = d;
    m.be = be;
    lcm_kv_cache kv;
    CHECK_FAILS(lcm_kv_cache_create(&kv, &m, 4096, 1 << 20, &err), &err, LCM_ERR_NOMEM, "generate.batch_size");
    lcm_backend_destroy(be);
}

/* --score's numbers on a hand-made case: true continuations (1,0), (0,1), (-1,0) after a 2-concept
 * prompt and (0,-1) after another; their mean is (0,0), at l2 1 from each and cosine 0 (zero vector).
 * The generated concepts hit, miss by 1 (same direction) and point the opposite way. Positions beyond
 * a document's end and documents without a continuation are not scored. */
TEST(score_against_true_continuation) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/docs.lcmd", dir);
    const float doc0[10] = {5, 5, 6, 6, 1, 0, 0, 1, -1, 0}, doc1[6] = {7, 7, 8, 8, 0, -1}, doc2[4] = {2, 2, 3, 3};
    lcm_dataset_writer *w = NULL;
    CHECK_OK(lcm_dataset_writer_open(&w, path, LCM_F32, 2, &err), &err);
    CHECK_OK(lcm_dataset_writer_add(w, doc0, 5, &err), &err);
    CHECK_OK(lcm_dataset_writer_add(w, doc1, 3, &err), &err);
    CHECK_OK(lcm_dataset_writer_add(w, doc2, 2, &err), &err);
    CHECK_OK(lcm_dataset_writer_commit(w, &err), &err);
    lcm_dataset ds;
    CHECK_OK(lcm_dataset_open(&ds, path, &err), &err);
    float g0[8] = {1, 0, 0, 2, 1, 0, 9, 9}, g1[4] = {0, -1, 5, 5}, g2[2] = {3, 3};
    lcm_gen_result r[3] = {{g0, 4, LCM_STOP_MAX_GEN_LEN}, {g1, 2, LCM_STOP_MAX_GEN_LEN}, {g2, 1, LCM_STOP_MAX_GEN_LEN}};
    lcm_gen_score s;
    CHECK_OK(lcm_gen_score_compute(&s, &ds, 2, r, 3, &err), &err);
    CHECK(s.pairs[0] == 2 && s.pairs[1] == 1 && s.pairs[2] == 1 && s.pairs[3] == 0);
    CHECK_NEAR(s.l2[0][0], 0.0, 1e-12);
    CHECK_NEAR(s.cos[0][0], 2.0, 1e-12);
    CHECK_NEAR(s.l2[1][0], 1.0, 1e-12);
    CHECK_NEAR(s.cos[1][0], 1.0, 1e-12);
    CHECK_NEAR(s.l2[2][0], 2.0, 1e-12);
    CHECK_NEAR(s.cos[2][0], -1.0, 1e-12);
    for (int b = 0; b < 3; b++) {
        CHECK_NEAR(s.l2[b][1], s.pairs[b], 1e-12);
        CHECK_NEAR(s.cos[b][1], 0.0, 1e-12);
    }
    lcm_dataset_close(&ds);
    lcm_rm_rf(dir, &err);
}
