/* test_cuda_generate.c: the CUDA KV-cache path (rope_forward_at, kv_store, attention_cached) against
 * the CPU backend, and against the CUDA backend's own full forward. Without a GPU every test SKIPs.
 *
 * Tolerances, as in test_cuda_model.c: bf16 activations (unit roundoff 2^-9) against fp32 give ~1%
 * relative differences in a 2-layer model's output; a wrong position, cache slot or mask gives O(1).
 * Per position, teacher forced (the same inputs on both sides, so no feedback): 3e-2. Generation feeds
 * its outputs back, so a few steps of it compare at 5e-2. */
#include <stdint.h>
#include <stdlib.h>

#include "../harness.h"
#include "gpu_gate.h"
#include "lcm/generate.h"
#include "lcm/half.h"
#include "lcm/model.h"

static float uniform(lcm_rng *r, float a) { return a * (2.0f * lcm_rng_uniform(r) - 1.0f); }

static const lcm_dims dims = {.D = 64, .C = 128, .L = 2, .H = 4, .F = 256, .max_seq_len = 64,
                              .dropout = 0.0f, .rope_theta = 10000.0f, .eps = 1e-5f};

/* Reference-init weights plus noise, rounded to bf16 so that both backends start from the same values. */
static float *weights(const lcm_param_table *t, uint64_t seed) {
    float *w = calloc(t->total, sizeof(float));
    lcm_params_init(t, w, seed);
    lcm_rng r;
    lcm_rng_init(&r, seed, 3);
    for (size_t i = 0; i < t->total; i++) w[i] = lcm_bf16_to_f32(lcm_f32_to_bf16(w[i] + uniform(&r, 0.02f)));
    return w;
}

/* Positions 0..T-1 of B rows fed one at a time through the cache (after a prefill of P), predictions of
 * every position into out[B, T, D]. */
static void cached_predictions(lcm_backend *be, const float *w, const lcm_normalizer *n, const float *x, int B, int T,
                               int P, float *out, lcm_error *err) {
    lcm_model m;
    lcm_kv_cache kv;
    const int D = dims.D;
    CHECK_OK(lcm_model_create(&m, be, &dims, (int64_t)B * P, B, P, 0, err), err);
    CHECK_OK(lcm_model_set_params(&m, w, err), err);
    CHECK_OK(lcm_model_set_normalizer(&m, n, err), err);
    CHECK_OK(lcm_kv_cache_create(&kv, &m, B, T, err), err);
    float *chunk = malloc((size_t)B * P * D * sizeof(float)), *pred = malloc((size_t)B * P * D * sizeof(float));
    for (int pos = 0; pos < T;) {
        int S = pos == 0 ? P : 1;
        for (int b = 0; b < B; b++)
            memcpy(chunk + (size_t)b * S * D, x + ((size_t)b * T + pos) * D, (size_t)S * D * sizeof(float));
        CHECK_OK(lcm_model_upload_positions(&m, chunk, B, S, err), err);
        lcm_model_forward_cached(&m, &kv, B, S, pos);
        CHECK_OK(lcm_model_predictions(&m, pred, B, S, err), err);
        for (int b = 0; b < B; b++)
            memcpy(out + ((size_t)b * T + pos) * D, pred + (size_t)b * S * D, (size_t)S * D * sizeof(float));
        pos += S;
    }
    free(chunk);
    free(pred);
    lcm_kv_cache_destroy(&kv, &m);
    lcm_model_destroy(&m);
}

TEST(cached_forward_matches_cpu_and_full_forward) {
    NEED_GPUS(1);
    lcm_error err = {0};
    const int B = 3, T = 40, P = 7, D = dims.D;
    lcm_param_table t;
    CHECK_OK(lcm_param_table_build(&t, &dims, &err), &err);
    float *w = weights(&t, 5);
    lcm_rng r;
    lcm_rng_init(&r, 5, 4);
    float center[64], scale[64];
    for (int k = 0; k < D; k++) center[k] = uniform(&r, 0.05f), scale[k] = 0.5f + lcm_rng_uniform(&r);
    lcm_normalizer n = {.dim = D, .center = center, .scale = scale};
    float *x = malloc((size_t)B * T * D * sizeof(float));
    for (size_t k = 0; k < (size_t)B * T * D; k++) x[k] = uniform(&r, 1.0f);
    float *cpu = malloc((size_t)B * T * D * sizeof(float)), *gpu = malloc((size_t)B * T * D * sizeof(float));
    float *full = malloc((size_t)B * T * D * sizeof(float));
    lcm_backend *cb = NULL, *gb = NULL;
    CHECK_OK(lcm_cpu_backend_create(&cb, 0, &err), &err);
    CHECK_OK(lcm_cuda_backend_create(&gb, 0, &err), &err);
    if (!err.code) {
        cached_predictions(cb, w, &n, x, B, T, P, cpu, &err);
        cached_predictions(gb, w, &n, x, B, T, P, gpu, &err);
        /* the GPU's own training forward over all T positions */
        lcm_model m;
        int32_t lens[3] = {T, T, T};
        CHECK_OK(lcm_model_create(&m, gb, &dims, (int64_t)B * T, B, T, 0, &err), &err);
        CHECK_OK(lcm_model_set_params(&m, w, &err), &err);
        CHECK_OK(lcm_model_set_normalizer(&m, &n, &err), &err);
        CHECK_OK(lcm_model_upload_batch(&m, x, lens, B, T, &err), &err);
        lcm_dropout_key none = {0};
        lcm_model_forward(&m, B, T, 0.0f, none);
        CHECK_OK(lcm_model_predictions(&m, full, B, T, &err), &err);
        lcm_model_destroy(&m);
        for (int b = 0; b < B; b++)
            for (int pos = 0; pos < T; pos++) {
                size_t at = ((size_t)b * T + pos) * D;
                double e1 = harness_rel_err(gpu + at, cpu + at, D), e2 = harness_rel_err(gpu + at, full + at, D);
                CHECKF(e1 <= 3e-2, "row %d position %d: GPU cached vs CPU cached %.3g", b, pos, e1);
                CHECKF(e2 <= 3e-2, "row %d position %d: GPU cached vs GPU full forward %.3g", b, pos, e2);
            }
    }
    lcm_backend_destroy(cb);
    lcm_backend_destroy(gb);
    lcm_param_table_free(&t);
    free(w);
    free(x);
    free(cpu);
    free(gpu);
    free(full);
}

TEST(generation_matches_cpu) {
    NEED_GPUS(1);
    lcm_error err = {0};
    const int D = dims.D, NP = 4;
    lcm_param_table t;
    CHECK_OK(lcm_param_table_build(&t, &dims, &err), &err);
    float *w = weights(&t, 7);
    lcm_normalizer n = {0};
    CHECK_OK(lcm_normalizer_identity(&n, D, &err), &err);
    uint64_t off[5] = {0, 5, 6, 15, 18};
    float *x = malloc(off[NP] * D * sizeof(float));
    lcm_rng r;
    lcm_rng_init(&r, 7, 4);
    for (size_t k = 0; k < off[NP] * D; k++) x[k] = uniform(&r, 1.0f);
    lcm_gen_prompts p = {.n = NP, .D = D, .data = x, .offsets = off};
    lcm_gen_options o = {.max_gen_len = 4, .min_gen_len = 1, .eos_threshold = 2.0f, .batch_size = 3, .use_cache = 1};
    lcm_gen_result a[4], b[4];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    CHECK_OK(lcm_generate_all("cpu", 0, &dims, w, &n, NULL, &o, &p, a, &err), &err);
    CHECK_OK(lcm_generate_all("0", 0, &dims, w, &n, NULL, &o, &p, b, &err), &err);
    for (int i = 0; i < NP && !err.code; i++) {
        CHECK(a[i].len == 4 && b[i].len == 4);
        double e = harness_rel_err(b[i].concepts, a[i].concepts, (size_t)4 * D);
        CHECKF(e <= 5e-2, "prompt %d: GPU vs CPU generation %.3g", i, e);
    }
    lcm_gen_results_free(a, NP);
    lcm_gen_results_free(b, NP);
    lcm_normalizer_free(&n);
    lcm_param_table_free(&t);
    free(w);
    free(x);
}
