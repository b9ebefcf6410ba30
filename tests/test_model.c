/* test_model.c: the parameter table (names, sizes, the 1.6B count), initialisation, and the whole
 * model's gradients on the CPU backend (finite differences, bucket order, padding, batch splits). */
#include "harness.h"
#include "model_util.h"

TEST(param_count_base_lcm_1_6b) {
    /* docs/model.md: per layer 4(C^2 + C) + 3CF + 2F + C + 2C, plus DC + C + C + CD + D. */
    lcm_dims d = {.D = 1024, .C = 2048, .L = 32, .H = 16, .F = 5632, .max_seq_len = 4096};
    lcm_param_table t;
    lcm_error err = {0};
    CHECK_OK(lcm_param_table_build(&t, &d, &err), &err);
    CHECK(t.count == 1649185792u);
    CHECK(t.total >= t.count);
    /* 4 attention matrices + 4 attention biases + 2 norms + 3 FFN matrices + 3 FFN biases per layer,
     * plus pre (2), final norm (1), post (2). */
    CHECK(t.n == 32 * 16 + 5);
    CHECK(lcm_param_find(&t, "lcm.layers.31.ffn.inner_proj.bias") != NULL);
    CHECK(lcm_param_find(&t, "frontend.pre_linear.weight")->shape[0] == 2048);
    CHECK(lcm_param_find(&t, "frontend.pre_linear.weight")->shape[1] == 1024);
    CHECK(lcm_param_find(&t, "postnet.fc.weight")->shape[0] == 1024);
    lcm_param_table_free(&t);
}

TEST(param_layout_is_adjacent_aligned_and_disjoint) {
    lcm_dims d = tiny_dims();
    d.C = 10; /* odd sizes force padding */
    d.H = 1;
    d.F = 7;
    lcm_param_table t;
    lcm_error err = {0};
    CHECK_OK(lcm_param_table_build(&t, &d, &err), &err);
    size_t end = 0;
    int aligned = 0;
    for (int i = 0; i < t.n; i++) {
        aligned += t.params[i].offset % 16 == 0;
        CHECK(t.params[i].offset >= end);
        end = t.params[i].offset + t.params[i].numel;
    }
    CHECK(end <= t.total);
    /* q|k|v and gate|inner (weights and biases) are each one contiguous block, whatever the sizes, so
     * one matmul computes them; every group starts aligned. */
    for (int l = 0; l < d.L; l++) {
        const lcm_layer_offsets *o = &t.layers[l];
        const char *groups[4][3] = {{"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"},
                                    {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"},
                                    {"ffn.gate_proj.weight", "ffn.inner_proj.weight", NULL},
                                    {"ffn.gate_proj.bias", "ffn.inner_proj.bias", NULL}};
        const size_t starts[4] = {o->qkv_w, o->qkv_b, o->gi_w, o->gi_b};
        for (int g = 0; g < 4; g++) {
            size_t expect = starts[g];
            CHECK(expect % 16 == 0);
            for (int k = 0; k < 3 && groups[g][k]; k++) {
                char name[96];
                snprintf(name, sizeof name, "lcm.layers.%d.%s", l, groups[g][k]);
                const lcm_param *p = lcm_param_find(&t, name);
                CHECKF(p && p->offset == expect, "%s is not adjacent to its group", name);
                if (p) expect += p->numel;
            }
        }
    }
    CHECK(aligned >= t.n - 6 * d.L); /* all but k, v (weight and bias) and inner (weight and bias) */
    CHECK(t.layers[0].begin > 0 && t.layers[0].end == t.layers[1].begin && t.layers[1].end == t.final_norm);
    lcm_param_table_free(&t);
}

TEST(init_follows_the_reference_rules) {
    lcm_dims d = {.D = 64, .C = 128, .L = 1, .H = 4, .F = 256, .max_seq_len = 16};
    lcm_param_table t;
    lcm_error err = {0};
    CHECK_OK(lcm_param_table_build(&t, &d, &err), &err);
    float *w = malloc(t.total * sizeof(float)), *w2 = malloc(t.total * sizeof(float));
    lcm_params_init(&t, w, 1);
    lcm_params_init(&t, w2, 1);
    CHECK(memcmp(w, w2, t.total * sizeof(float)) == 0);
    lcm_params_init(&t, w2, 2);
    CHECK(memcmp(w, w2, t.total * sizeof(float)) != 0);
    for (int i = 0; i < t.n; i++) {
        const lcm_param *p = &t.params[i];
        double bound = p->init == LCM_INIT_KAIMING_UNIFORM ? 1.0 / sqrt(p->fan_in)
                       : p->init == LCM_INIT_XAVIER_UNIFORM ? p->gain * sqrt(6.0 / (p->fan_in + p->fan_out))
                                                            : 0;
        double maxabs = 0, sumsq = 0;
        int ones = 1;
        for (size_t j = 0; j < p->numel; j++) {
            float v = w[p->offset + j];
            maxabs = fmax(maxabs, fabs(v));
            sumsq += (double)v * v;
            ones &= v == 1.0f;
        }
        if (p->init == LCM_INIT_ONES) {
            CHECKF(ones, "%s", p->name);
        } else if (p->init == LCM_INIT_ZEROS) {
            CHECKF(maxabs == 0, "%s", p->name);
        } else {
            /* U(-b, b) has variance b^2/3: with >= 128 samples the sample variance is within 40%
             * (its relative std is ~sqrt(0.8/n) <= 8%, so this is 5 sigma). */
            double var = sumsq / p->numel;
            CHECKF(maxabs <= bound, "%s: %g > %g", p->name, maxabs, bound);
            CHECKF(fabs(var / (bound * bound / 3) - 1) < 0.4, "%s: var %g vs %g", p->name, var, bound * bound / 3);
        }
    }
    /* q/k/v use gain 2^-0.5, the output projection gain 1. */
    CHECK_NEAR(lcm_param_find(&t, "lcm.layers.0.self_attn.k_proj.weight")->gain, 0.70710678, 1e-6);
    CHECK(lcm_param_find(&t, "lcm.layers.0.self_attn.output_proj.weight")->gain == 1.0f);
    free(w);
    free(w2);
    lcm_param_table_free(&t);
}

/* Directional finite differences of the whole model, one parameter tensor at a time: the analytic
 * <grad, v> against (L(theta + h v) - L(theta - h v)) / 2h for a random v supported on that tensor.
 * The op-level checks (tests/test_cpu_grad.c) are the sharp ones; this one catches wiring errors of
 * the layer sequence (a wrong buffer, a missing residual, a mismatched dropout key), which change a
 * tensor's gradient by far more than 1%.
 * Tolerance: the forward runs in fp32, so L carries a relative roundoff of ~1e-6 (measured: FD errors
 * scale like 1/h below h = 3e-2); at h = 3e-2 / |v| that noise is ~1e-6 |L| / 2h, and the truncation
 * error O(h^2) is below 1e-3 relative (measured). We allow 1% plus ten times the noise estimate. */
static void check_model_gradient(float p) {
    lcm_error err = {0};
    lcm_dims d = tiny_dims();
    int32_t lens[3] = {7, 4, 2};
    tiny tm;
    CHECK_OK(tiny_create(&tm, &d, 3, 7, lens, 5, &err), &err);
    lcm_dropout_key key = {.seed = 11, .step = 3, .microbatch = 1};
    const double L0 = tiny_step(&tm, p, key, NULL, NULL, &err);
    const size_t P = tm.m.t.total;
    float *g = malloc(P * sizeof(float)), *dir = calloc(P, sizeof(float)), *theta = malloc(P * sizeof(float));
    tm.be->ops->download(tm.be, g, tm.m.grads, P * sizeof(float), &err);
    lcm_rng r;
    lcm_rng_init(&r, 77, 1);
    for (int i = 0; i < tm.m.t.n; i++) {
        const lcm_param *prm = &tm.m.t.params[i];
        double dot = 0, vnorm = 0;
        memset(dir, 0, P * sizeof(float));
        for (size_t j = 0; j < prm->numel; j++) {
            dir[prm->offset + j] = tiny_uniform(&r, 1.0f);
            dot += (double)g[prm->offset + j] * dir[prm->offset + j];
            vnorm += (double)dir[prm->offset + j] * dir[prm->offset + j];
        }
        const double h = 3e-2 / sqrt(vnorm);
        for (size_t k = 0; k < P; k++) theta[k] = tm.params[k] + (float)(h * dir[k]);
        lcm_model_set_params(&tm.m, theta, &err);
        const double lp = tiny_objective(&tm, p, key);
        for (size_t k = 0; k < P; k++) theta[k] = tm.params[k] - (float)(h * dir[k]);
        lcm_model_set_params(&tm.m, theta, &err);
        const double lm = tiny_objective(&tm, p, key);
        const double fd = (lp - lm) / (2 * h), tol = 1e-2 * fabs(dot) + 10 * 1e-6 * fabs(L0) / (2 * h);
        CHECKF(fabs(fd - dot) <= tol, "p=%g %s: finite difference %.8g, analytic %.8g (tolerance %.3g)", (double)p,
               prm->name, fd, dot, tol);
    }
    lcm_model_set_params(&tm.m, tm.params, &err);
    free(g);
    free(dir);
    free(theta);
    tiny_free(&tm);
}

TEST(model_gradient_matches_finite_differences) { check_model_gradient(0.0f); }
TEST(model_gradient_matches_finite_differences_with_dropout) { check_model_gradient(0.25f); }

typedef struct bucket_log {
    int n;
    size_t begin[64], end[64];
} bucket_log;

static int log_bucket(void *ctx, size_t begin, size_t end, lcm_error *err) {
    bucket_log *log = ctx;
    log->begin[log->n] = begin;
    log->end[log->n++] = end;
    return 0;
}

TEST(backward_reports_buckets_in_fixed_order_covering_all_params) {
    lcm_error err = {0};
    lcm_dims d = tiny_dims();
    d.L = 3;
    int32_t lens[2] = {5, 3};
    tiny tm;
    CHECK_OK(tiny_create(&tm, &d, 2, 5, lens, 1, &err), &err);
    bucket_log log = {0};
    lcm_dropout_key key = {0};
    tiny_step(&tm, 0, key, log_bucket, &log, &err);
    CHECK(log.n == d.L + 2);
    /* postnet + final norm first, then layers from the last, then the prenet; together [0, total). */
    CHECK(log.begin[0] == tm.m.t.final_norm && log.end[0] == tm.m.t.total);
    for (int i = 1; i < log.n; i++) CHECK(log.end[i] == log.begin[i - 1]);
    CHECK(log.begin[log.n - 1] == 0);
    tiny_free(&tm);
}

TEST(padding_content_does_not_change_loss_or_gradients) {
    lcm_error err = {0};
    lcm_dims d = tiny_dims();
    int32_t lens[3] = {6, 2, 4};
    tiny tm;
    CHECK_OK(tiny_create(&tm, &d, 3, 6, lens, 9, &err), &err);
    lcm_dropout_key key = {.seed = 1};
    const size_t P = tm.m.t.total;
    double l1 = tiny_step(&tm, 0.1f, key, NULL, NULL, &err);
    float *g1 = malloc(P * sizeof(float)), *g2 = malloc(P * sizeof(float));
    tm.be->ops->download(tm.be, g1, tm.m.grads, P * sizeof(float), &err);
    for (int b = 0; b < 3; b++)
        for (int t = lens[b]; t < 6; t++)
            for (int k = 0; k < d.D; k++) tm.x[((size_t)b * 6 + t) * d.D + k] = 1e3f * (float)(k + t);
    lcm_model_upload_batch(&tm.m, tm.x, tm.lens, 3, 6, &err);
    double l2 = tiny_step(&tm, 0.1f, key, NULL, NULL, &err);
    tm.be->ops->download(tm.be, g2, tm.m.grads, P * sizeof(float), &err);
    CHECK(l1 == l2);
    CHECK(memcmp(g1, g2, P * sizeof(float)) == 0);
    free(g1);
    free(g2);
    tiny_free(&tm);
}

TEST(gradient_of_a_batch_is_the_sum_over_its_parts) {
    /* Data parallelism rests on this: rows split over devices, each loss scaled by 1 / (global target
     * count), gradients summed == the gradient of the whole batch. */
    lcm_error err = {0};
    lcm_dims d = tiny_dims();
    int32_t lens[4] = {6, 3, 5, 2};
    tiny whole;
    CHECK_OK(tiny_create(&whole, &d, 4, 6, lens, 3, &err), &err);
    lcm_dropout_key key = {0};
    tiny_step(&whole, 0, key, NULL, NULL, &err);
    const size_t P = whole.m.t.total;
    float *gw = malloc(P * sizeof(float)), *gs = calloc(P, sizeof(float)), *gp = malloc(P * sizeof(float));
    whole.be->ops->download(whole.be, gw, whole.m.grads, P * sizeof(float), &err);
    const float scale = 1.0f / (float)whole.n_targets;
    for (int part = 0; part < 2; part++) {
        tiny half;
        CHECK_OK(tiny_create(&half, &d, 2, 6, lens + 2 * part, 3, &err), &err);
        /* same seed: same parameters and normalizer; copy the rows of this part */
        lcm_model_set_params(&half.m, whole.params, &err);
        memcpy(half.x, whole.x + (size_t)2 * part * 6 * d.D, (size_t)2 * 6 * d.D * sizeof(float));
        lcm_model_upload_batch(&half.m, half.x, half.lens, 2, 6, &err);
        lcm_model_forward(&half.m, 2, 6, 0, key);
        lcm_model_loss(&half.m, 2, 6, scale);
        CHECK_OK(lcm_model_backward(&half.m, 2, 6, 0, key, 0, NULL, NULL, &err), &err);
        half.be->ops->download(half.be, gp, half.m.grads, P * sizeof(float), &err);
        for (size_t k = 0; k < P; k++) gs[k] += gp[k];
        tiny_free(&half);
    }
    /* Same math, different grouping of fp32 sums: relative error at the 1e-6 level. */
    double rel = harness_rel_err(gs, gw, P);
    CHECKF(rel < 1e-5, "relative error %g", rel);
    free(gw);
    free(gs);
    free(gp);
    tiny_free(&whole);
}

TEST(first_microbatch_assigns_the_gradients_and_later_ones_add) {
    /* The trainer no longer zeroes the gradients before a step: the first micro-batch's backward
     * (accumulate 0) must overwrite whatever the buffer holds (NaN here, in every real parameter) with
     * exactly the gradients a zeroed buffer would get, and a second backward (accumulate 1) must add. */
    lcm_error err = {0};
    lcm_dims d = tiny_dims();
    int32_t lens[2] = {6, 4};
    tiny tm;
    CHECK_OK(tiny_create(&tm, &d, 2, 6, lens, 8, &err), &err);
    const size_t P = tm.m.t.total;
    lcm_dropout_key key = {.seed = 2, .step = 1, .microbatch = 0};
    float *ref = malloc(P * sizeof(float)), *twice = malloc(P * sizeof(float));
    memset(tm.m.grads, 0, P * sizeof(float));
    tiny_objective(&tm, 0.2f, key);
    CHECK_OK(lcm_model_backward(&tm.m, tm.B, tm.T, 0.2f, key, 1, NULL, NULL, &err), &err);
    memcpy(ref, tm.m.grads, P * sizeof(float));
    for (int i = 0; i < tm.m.t.n; i++)
        for (size_t k = 0; k < tm.m.t.params[i].numel; k++) tm.m.grads[tm.m.t.params[i].offset + k] = NAN;
    tiny_objective(&tm, 0.2f, key);
    CHECK_OK(lcm_model_backward(&tm.m, tm.B, tm.T, 0.2f, key, 0, NULL, NULL, &err), &err);
    CHECK(memcmp(ref, tm.m.grads, P * sizeof(float)) == 0);
    CHECK_OK(lcm_model_backward(&tm.m, tm.B, tm.T, 0.2f, key, 1, NULL, NULL, &err), &err);
    memcpy(twice, tm.m.grads, P * sizeof(float));
    for (size_t k = 0; k < P; k++) ref[k] *= 2.0f;
    /* matmuls add the same product again (exactly twice); norm gains re-add row by row (fp32 sums) */
    double rel = harness_rel_err(twice, ref, P);
    CHECKF(rel < 1e-6, "two backwards: relative error %g against twice one", rel);
    free(ref);
    free(twice);
    tiny_free(&tm);
}

TEST(recompute_layer_gives_the_same_gradients_bit_for_bit) {
    /* trainer.recompute = layer reruns each layer's forward (dropout masks regenerated from the
     * counter-based RNG) just before its backward: on the deterministic CPU backend every gradient and
     * the loss must be the same bits as keeping all activations. Rows of different lengths (padding),
     * 3 layers, dropout on, two accumulated micro-batches with different dropout keys. */
    lcm_error err = {0};
    lcm_dims d = tiny_dims();
    d.L = 3;
    int32_t lens[3] = {7, 3, 5};
    tiny keep, rc;
    CHECK_OK(tiny_create_recompute(&keep, &d, 3, 7, lens, 21, LCM_RECOMPUTE_NONE, &err), &err);
    CHECK_OK(tiny_create_recompute(&rc, &d, 3, 7, lens, 21, LCM_RECOMPUTE_LAYER, &err), &err);
    const size_t P = keep.m.t.total;
    tiny *both[2] = {&keep, &rc};
    double loss[2][2];
    for (int i = 0; i < 2; i++) {
        tiny *tm = both[i];
        for (uint32_t mb = 0; mb < 2; mb++) {
            lcm_dropout_key key = {.seed = 5, .step = 3, .microbatch = mb};
            loss[i][mb] = tiny_objective(tm, 0.3f, key);
            CHECK_OK(lcm_model_backward(&tm->m, tm->B, tm->T, 0.3f, key, mb > 0, NULL, NULL, &err), &err);
        }
    }
    CHECK(loss[0][0] == loss[1][0] && loss[0][1] == loss[1][1]);
    size_t differ = 0;
    for (size_t i = 0; i < P; i++) differ += memcmp(&keep.m.grads[i], &rc.m.grads[i], sizeof(float)) != 0;
    CHECKF(differ == 0, "%zu of %zu gradients differ", differ, P);
    double norm = 0;
    for (size_t i = 0; i < P; i++) norm += (double)keep.m.grads[i] * keep.m.grads[i];
    CHECK(norm > 0); /* the comparison compared something */
    tiny_free(&keep);
    tiny_free(&rc);
}

TEST(recompute_layer_keeps_one_residual_state_per_layer) {
    /* What the activation allocation grows by per layer: with recompute = layer only that layer's input
     * (N*C act elements); without it the residual states and every inner buffer. The saved attention
     * values do not grow at all (one layer's worth). */
    lcm_error err = {0};
    lcm_dims d = tiny_dims();
    const int B = 4, T = 8;
    const size_t N = (size_t)B * T, C = (size_t)d.C, F = (size_t)d.F;
    lcm_model_bytes b[2][2]; /* [recompute][L = 2, 4] */
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 2; k++) {
            d.L = 2 + 2 * k;
            lcm_model_shape s = {d, (int64_t)B * T, B, T, 1, r ? LCM_RECOMPUTE_LAYER : LCM_RECOMPUTE_NONE, 0, 0, 0};
            CHECK_OK(lcm_model_plan(&s, &lcm_cpu_traits, &b[r][k], &err), &err);
        }
    CHECK(b[1][1].acts - b[1][0].acts == 2 * N * C * sizeof(float));
    CHECK(b[1][1].att_saved == b[1][0].att_saved);
    /* per layer without recompute: h_mid, h_out, anorm, 3C qkv, attn, fnorm, 2F gi, F sw, 2 rstd */
    CHECK(b[0][1].acts - b[0][0].acts == 2 * (N * (8 * C + 3 * F) + 2 * N) * sizeof(float));
    CHECK(b[0][1].att_saved == 2 * b[0][0].att_saved);
    CHECK(b[1][1].acts < b[0][1].acts);
    /* the model allocates what the plan says: its blocks lie inside the carved sizes */
    tiny tm;
    int32_t lens[4] = {8, 8, 8, 8};
    d.L = 4;
    CHECK_OK(tiny_create_recompute(&tm, &d, B, T, lens, 1, LCM_RECOMPUTE_LAYER, &err), &err);
    CHECK((char *)tm.m.dsw + N * F * sizeof(float) <= (char *)tm.m.acts + b[1][1].acts);
    tiny_free(&tm);
}
