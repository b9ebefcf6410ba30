/* model_util.h: helpers shared by the model tests: a tiny model on the CPU backend with random
 * parameters, a random padded batch, and one forward/loss/backward. */
#ifndef LCM_TEST_MODEL_UTIL_H
#define LCM_TEST_MODEL_UTIL_H

#include "lcm/model.h"
#include "lcm/philox.h"

typedef struct tiny {
    lcm_backend *be;
    lcm_model m;
    int B, T;
    int32_t lens[8];
    float *x;        /* [B*T*D] */
    float *params;   /* host copy [t.total] */
    int64_t n_targets;
} tiny;

static inline lcm_dims tiny_dims(void) {
    lcm_dims d = {.D = 12, .C = 16, .L = 2, .H = 2, .F = 24, .max_seq_len = 64,
                  .dropout = 0.0f, .rope_theta = 10000.0f, .eps = 1e-5f};
    return d;
}

static inline float tiny_uniform(lcm_rng *r, float a) { return a * (2.0f * lcm_rng_uniform(r) - 1.0f); }

/* Random parameters around the reference init (gains and biases made non-trivial), a random batch of
 * B rows with the given lengths, a random normalizer. Returns 0 or an lcm_status. */
static inline int tiny_create_recompute(tiny *tm, const lcm_dims *d, int B, int T, const int32_t *lens,
                                        uint64_t seed, lcm_recompute recompute, lcm_error *err) {
    memset(tm, 0, sizeof *tm);
    LCM_TRY(lcm_cpu_backend_create(&tm->be, 0, err));
    lcm_model_shape shape = {*d, (int64_t)B * T, B, T, 1, recompute, 0, 0, 0};
    LCM_TRY(lcm_model_create_shape(&tm->m, tm->be, &shape, err));
    tm->B = B;
    tm->T = T;
    lcm_rng r;
    lcm_rng_init(&r, seed, 99);
    tm->params = calloc(tm->m.t.total, sizeof(float));
    lcm_params_init(&tm->m.t, tm->params, seed);
    for (int i = 0; i < tm->m.t.n; i++) {
        const lcm_param *p = &tm->m.t.params[i];
        for (size_t j = 0; j < p->numel; j++) tm->params[p->offset + j] += tiny_uniform(&r, 0.1f);
    }
    LCM_TRY(lcm_model_set_params(&tm->m, tm->params, err));
    lcm_normalizer n = {.dim = d->D, .center = malloc(sizeof(float) * d->D), .scale = malloc(sizeof(float) * d->D)};
    for (int i = 0; i < d->D; i++) {
        n.center[i] = tiny_uniform(&r, 0.05f);
        n.scale[i] = 0.5f + lcm_rng_uniform(&r);
    }
    int rc = lcm_model_set_normalizer(&tm->m, &n, err);
    free(n.center);
    free(n.scale);
    if (rc) return rc;
    tm->x = calloc((size_t)B * T * d->D, sizeof(float));
    for (int b = 0; b < B; b++) {
        tm->lens[b] = lens[b];
        tm->n_targets += lens[b] - 1;
        for (int t = 0; t < lens[b]; t++)
            for (int k = 0; k < d->D; k++) tm->x[((size_t)b * T + t) * d->D + k] = tiny_uniform(&r, 1.0f);
    }
    return lcm_model_upload_batch(&tm->m, tm->x, tm->lens, B, T, err);
}

static inline int tiny_create(tiny *tm, const lcm_dims *d, int B, int T, const int32_t *lens, uint64_t seed,
                              lcm_error *err) {
    return tiny_create_recompute(tm, d, B, T, lens, seed, LCM_RECOMPUTE_NONE, err);
}

static inline void tiny_free(tiny *tm) {
    lcm_model_destroy(&tm->m);
    lcm_backend_destroy(tm->be);
    free(tm->x);
    free(tm->params);
}

/* The objective (loss sum / n_targets) at the model's current parameters, forward only. */
static inline double tiny_objective(tiny *tm, float p, lcm_dropout_key key) {
    lcm_model_forward(&tm->m, tm->B, tm->T, p, key);
    lcm_model_loss(&tm->m, tm->B, tm->T, 1.0f / (float)tm->n_targets);
    float loss = 0;
    lcm_error err = {0};
    tm->be->ops->download(tm->be, &loss, tm->m.loss, sizeof loss, &err);
    return (double)loss / (double)tm->n_targets;
}

/* Forward + loss + backward as a step's first micro-batch (the gradients are assigned); returns the
 * objective. */
static inline double tiny_step(tiny *tm, float p, lcm_dropout_key key, lcm_grads_ready_fn ready, void *ctx,
                               lcm_error *err) {
    double obj = tiny_objective(tm, p, key);
    if (lcm_model_backward(&tm->m, tm->B, tm->T, p, key, 0, ready, ctx, err) != 0) return NAN;
    return obj;
}

#endif
