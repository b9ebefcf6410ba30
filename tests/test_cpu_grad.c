/* test_cpu_grad.c: finite-difference checks of every backward op of the CPU backend.
 *
 * For an op y = f(x) and a random upstream gradient G, the scalar L(x) = sum_j G_j y_j (summed in
 * double) has gradient dL/dx = backward(G). We compare, along random directions v and along each
 * coordinate of small inputs,
 *   fd = L(x + h v) - L(x - h v)       with       an = <backward(G), (x + h v) - (x - h v)>,
 * using the perturbed inputs as actually rounded to fp32, so input rounding cancels out.
 *
 * Tolerance. fd carries the fp32 rounding of the forward: each output y_j is off by a few units of
 * roundoff u = 2^-24 relative to its size (more where a sum cancels), and only outputs that changed
 * between the two evaluations contribute, so |fd - an| <= K u S + trunc with
 *   S = sum over changed outputs of |G_j| (|y_j(x + h v)| + |y_j(x - h v)|).
 * K = 16: the largest error over all checks here is ~2.5 u S (0.15 of the tolerance; each op's worst
 * ratio is printed on stderr), so K leaves a 6x margin for other BLAS kernels' rounding.
 * For ops linear in x the central difference is exact (trunc = 0) and h = 0.5: the error is pure
 * roundoff. For nonlinear ops the central difference is off by h^3/3 L'''(v, v, v) next to the signal
 * 2h L'(v); with inputs O(1) the third derivatives are O(1) per unit |G|, so trunc = h^3 sum|G_j| over
 * the changed outputs, and h = 1e-2 keeps it about 1e-4 of the signal.
 * Sensitivity, tried by editing the backward: scaling attention's dS or SwiGLU's silu' term by 1.001,
 * or RMSNorm's (smaller) second term by 1.01, fails these checks. */
#include <stdint.h>

#include "harness.h"
#include "lcm/backend.h"
#include "lcm/philox.h"
#include "lcm/rope.h"

static const double roundoff_u = 1.0 / 16777216.0; /* 2^-24 */
static const double tol_k = 16.0;

/* ---- small helpers ---------------------------------------------------------------------------- */

static lcm_backend *new_backend(void) {
    lcm_error err = {0};
    lcm_backend *be = NULL;
    lcm_cpu_set_blas_threads(1);
    if (lcm_cpu_backend_create(&be, 0, &err) != 0) {
        fprintf(stderr, "cannot create the CPU backend: %s\n", err.msg);
        exit(2);
    }
    return be;
}

static float *fbuf(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) exit(2);
    return p;
}

static void fill_uniform(lcm_rng *r, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * lcm_rng_uniform(r);
}

/* ---- the checker -------------------------------------------------------------------------------- */

/* One op under test as a function of one input: writes y (ny floats) from x (nx floats); everything
 * else the op reads is in ctx. */
typedef struct gc_op {
    const char *name;
    void (*forward)(void *ctx, const float *x, float *y);
    void *ctx;
    size_t nx, ny;
    int smooth; /* nonlinear in x: truncation error matters, smaller h */
} gc_op;

typedef struct gc_result {
    double worst_ratio; /* max |fd - an| / tol */
    double worst_rel;   /* max |fd - an| / |an| over checks with an != 0 */
    int checks;
} gc_result;

/* fd and tol for one perturbation pair; returns |fd - an| / tol via the result. */
static void gc_compare(const gc_op *op, const float *xp, const float *xm, const float *grad,
                       const float *G, float *yp, float *ym, double h, gc_result *res, const char *where) {
    op->forward(op->ctx, xp, yp);
    op->forward(op->ctx, xm, ym);
    double fd = 0, s = 0, gsum = 0;
    for (size_t j = 0; j < op->ny; j++) {
        fd += (double)G[j] * yp[j] - (double)G[j] * ym[j];
        if (yp[j] != ym[j]) {
            s += fabs((double)G[j]) * (fabs((double)yp[j]) + fabs((double)ym[j]));
            gsum += fabs((double)G[j]);
        }
    }
    double an = 0;
    for (size_t i = 0; i < op->nx; i++) an += (double)grad[i] * ((double)xp[i] - (double)xm[i]);
    double tol = tol_k * roundoff_u * s + (op->smooth ? h * h * h * gsum : 0.0);
    double err = fabs(fd - an);
    /* A zero tolerance is only possible when nothing changed; then fd is exactly 0 and so must an be. */
    double ratio = tol > 0 ? err / tol : (err == 0 ? 0 : INFINITY);
    if (ratio > res->worst_ratio) res->worst_ratio = ratio;
    if (an != 0 && err / fabs(an) > res->worst_rel) res->worst_rel = err / fabs(an);
    res->checks++;
    CHECKF(ratio <= 1.0, "%s %s: finite difference %.9g vs analytic %.9g (error %.3g, tolerance %.3g)",
           op->name, where, fd, an, err, tol);
}

/* Directional checks along `dirs` random directions, then (when per_element) one check per input
 * coordinate. `grad` is dL/dx from the backward under test. */
static void gradcheck(const gc_op *op, const float *x, const float *grad, const float *G, int dirs,
                      int per_element, uint64_t seed) {
    double h = op->smooth ? 1e-2 : 0.5;
    float *xp = fbuf(op->nx), *xm = fbuf(op->nx), *yp = fbuf(op->ny), *ym = fbuf(op->ny), *v = fbuf(op->nx);
    lcm_rng r;
    lcm_rng_init(&r, seed, 77);
    gc_result res = {0};
    char where[64];
    for (int d = 0; d < dirs; d++) {
        fill_uniform(&r, v, op->nx, -1, 1);
        for (size_t i = 0; i < op->nx; i++) {
            xp[i] = (float)(x[i] + h * v[i]);
            xm[i] = (float)(x[i] - h * v[i]);
        }
        snprintf(where, sizeof where, "direction %d", d);
        gc_compare(op, xp, xm, grad, G, yp, ym, h, &res, where);
    }
    if (per_element) {
        memcpy(xp, x, op->nx * sizeof(float));
        memcpy(xm, x, op->nx * sizeof(float));
        for (size_t i = 0; i < op->nx; i++) {
            xp[i] = (float)(x[i] + h);
            xm[i] = (float)(x[i] - h);
            snprintf(where, sizeof where, "element %zu", i);
            gc_compare(op, xp, xm, grad, G, yp, ym, h, &res, where);
            xp[i] = xm[i] = x[i];
        }
    }
    fprintf(stderr, "  gradcheck %-24s %5d checks, worst error/tolerance %.3g, worst relative error %.3g\n",
            op->name, res.checks, res.worst_ratio, res.worst_rel);
    free(xp); free(xm); free(yp); free(ym); free(v);
}

/* ---- linear ------------------------------------------------------------------------------------- */

typedef struct linear_ctx {
    lcm_backend *be;
    const float *inp, *w, *bias;
    int N, IC, OC;
    int wrt; /* 0: inp, 1: w, 2: bias */
} linear_ctx;

static void linear_fwd(void *p, const float *x, float *y) {
    linear_ctx *c = p;
    c->be->ops->linear_forward(c->be, y, c->wrt == 0 ? x : c->inp, c->wrt == 1 ? x : c->w,
                               c->wrt == 2 ? x : c->bias, c->N, c->IC, c->OC);
}

static void check_linear(int N, int IC, int OC, int per_element, uint64_t seed) {
    lcm_backend *be = new_backend();
    lcm_rng r;
    lcm_rng_init(&r, seed, 1);
    float *inp = fbuf((size_t)N * IC), *w = fbuf((size_t)OC * IC), *bias = fbuf(OC), *G = fbuf((size_t)N * OC);
    fill_uniform(&r, inp, (size_t)N * IC, -1, 1);
    fill_uniform(&r, w, (size_t)OC * IC, -0.5f, 0.5f);
    fill_uniform(&r, bias, OC, -1, 1);
    fill_uniform(&r, G, (size_t)N * OC, -1, 1);

    /* dw and dbias start from non-zero values: the backward must add to them. */
    float *dinp = fbuf((size_t)N * IC), *dw = fbuf((size_t)OC * IC), *dbias = fbuf(OC);
    float *dw0 = fbuf((size_t)OC * IC), *dbias0 = fbuf(OC);
    fill_uniform(&r, dw0, (size_t)OC * IC, -3, 3);
    fill_uniform(&r, dbias0, OC, -3, 3);
    memcpy(dw, dw0, (size_t)OC * IC * sizeof(float));
    memcpy(dbias, dbias0, OC * sizeof(float));
    fill_uniform(&r, dinp, (size_t)N * IC, 100, 200); /* assigned: the old contents must vanish */
    be->ops->linear_backward(be, dinp, dw, dbias, G, inp, w, N, IC, OC, 1);
    for (size_t i = 0; i < (size_t)OC * IC; i++) dw[i] -= dw0[i];
    for (int i = 0; i < OC; i++) dbias[i] -= dbias0[i];

    /* The same backward assigning (accumulate 0, a step's first micro-batch) into dw/dbias full of NaN,
     * with dinp skipped (NULL), must give the same gradients: the old contents are ignored, not added.
     * Accumulating rounds dw0 + A once and subtracting dw0 again may round once more: at most
     * 2 u (|dw0| + |A|) per element; 4 u (...) leaves a margin. */
    float *dw_again = fbuf((size_t)OC * IC), *dbias_again = fbuf(OC);
    for (size_t i = 0; i < (size_t)OC * IC; i++) dw_again[i] = NAN;
    for (int i = 0; i < OC; i++) dbias_again[i] = NAN;
    be->ops->linear_backward(be, NULL, dw_again, dbias_again, G, inp, w, N, IC, OC, 0);
    for (size_t i = 0; i < (size_t)OC * IC; i++)
        CHECK_NEAR(dw[i], dw_again[i], 4 * roundoff_u * (fabs(dw0[i]) + fabs(dw_again[i])));
    for (int i = 0; i < OC; i++)
        CHECK_NEAR(dbias[i], dbias_again[i], 4 * roundoff_u * (fabs(dbias0[i]) + fabs(dbias_again[i])));

    linear_ctx c = {be, inp, w, bias, N, IC, OC, 0};
    gc_op op = {"linear dinp", linear_fwd, &c, (size_t)N * IC, (size_t)N * OC, 0};
    gradcheck(&op, inp, dinp, G, 4, per_element, seed + 1);
    c.wrt = 1;
    op.name = "linear dw (accumulated)";
    op.nx = (size_t)OC * IC;
    gradcheck(&op, w, dw_again, G, 4, per_element, seed + 2);
    c.wrt = 2;
    op.name = "linear dbias (accumulated)";
    op.nx = OC;
    gradcheck(&op, bias, dbias_again, G, 4, per_element, seed + 3);

    free(inp); free(w); free(bias); free(G); free(dinp); free(dw); free(dbias); free(dw0); free(dbias0);
    free(dw_again); free(dbias_again);
    lcm_backend_destroy(be);
}

TEST(grad_linear_small_per_element) { check_linear(3, 5, 4, 1, 11); }
TEST(grad_linear_directional) { check_linear(37, 64, 48, 0, 12); }

/* ---- rmsnorm ------------------------------------------------------------------------------------ */

typedef struct rmsnorm_ctx {
    lcm_backend *be;
    const float *inp, *gain;
    float *rstd;
    int N, C, wrt; /* 0: inp, 1: gain */
} rmsnorm_ctx;

static void rmsnorm_fwd(void *p, const float *x, float *y) {
    rmsnorm_ctx *c = p;
    c->be->ops->rmsnorm_forward(c->be, y, c->rstd, c->wrt == 0 ? x : c->inp, c->wrt == 1 ? x : c->gain, c->N,
                                c->C, 1e-5f);
}

static void check_rmsnorm(int N, int C, int per_element, uint64_t seed) {
    lcm_backend *be = new_backend();
    lcm_rng r;
    lcm_rng_init(&r, seed, 2);
    size_t nc = (size_t)N * C;
    float *inp = fbuf(nc), *gain = fbuf(C), *G = fbuf(nc), *out = fbuf(nc), *rstd = fbuf(N);
    fill_uniform(&r, inp, nc, -2, 2);
    fill_uniform(&r, gain, C, 0.5f, 1.5f);
    fill_uniform(&r, G, nc, -1, 1);
    be->ops->rmsnorm_forward(be, out, rstd, inp, gain, N, C, 1e-5f);

    /* dinp and dgain both accumulate: start them from known values and take the difference. The
     * subtraction adds at most u * |start| = u * 2 per element, far below the tolerances. */
    float *dinp = fbuf(nc), *dgain = fbuf(C), *dinp0 = fbuf(nc), *dgain0 = fbuf(C);
    fill_uniform(&r, dinp0, nc, -1, 1);
    fill_uniform(&r, dgain0, C, -1, 1);
    memcpy(dinp, dinp0, nc * sizeof(float));
    memcpy(dgain, dgain0, C * sizeof(float));
    be->ops->rmsnorm_backward(be, dinp, dgain, G, inp, gain, rstd, N, C, 1);
    for (size_t i = 0; i < nc; i++) dinp[i] -= dinp0[i];
    for (int i = 0; i < C; i++) dgain[i] -= dgain0[i];

    /* Assigning (accumulate 0) into a dgain full of NaN gives the same gain gradient. The gain sums add
     * row by row in fp32, from dgain0 or from 0: each of the 2N additions and the subtraction rounds at
     * most u (|dgain0| + S), S the sum of the rows' magnitudes. dinp still adds (its rows are
     * independent: 4 u as in check_linear). */
    float *dgain_set = fbuf(C), *dinp_zero = fbuf(nc);
    for (int i = 0; i < C; i++) dgain_set[i] = NAN;
    be->ops->rmsnorm_backward(be, dinp_zero, dgain_set, G, inp, gain, rstd, N, C, 0);
    for (int i = 0; i < C; i++) {
        double S = 0;
        for (int n = 0; n < N; n++) S += fabs((double)G[(size_t)n * C + i] * inp[(size_t)n * C + i] * rstd[n]);
        CHECK_NEAR(dgain[i], dgain_set[i], (2.0 * N + 1) * roundoff_u * (fabs(dgain0[i]) + S));
    }
    for (size_t i = 0; i < nc; i++)
        CHECK_NEAR(dinp[i], dinp_zero[i], 4 * roundoff_u * (fabs(dinp0[i]) + fabs(dinp_zero[i])));
    free(dgain_set); free(dinp_zero);

    rmsnorm_ctx c = {be, inp, gain, fbuf(N), N, C, 0};
    gc_op op = {"rmsnorm dinp (accumulated)", rmsnorm_fwd, &c, nc, nc, 1};
    gradcheck(&op, inp, dinp, G, 4, per_element, seed + 1);
    c.wrt = 1;
    op.name = "rmsnorm dgain (accumulated)";
    op.nx = C;
    op.smooth = 0; /* linear in the gain */
    gradcheck(&op, gain, dgain, G, 4, per_element, seed + 2);

    free(inp); free(gain); free(G); free(out); free(rstd); free(dinp); free(dgain); free(dinp0); free(dgain0);
    free(c.rstd);
    lcm_backend_destroy(be);
}

TEST(grad_rmsnorm_small_per_element) { check_rmsnorm(3, 8, 1, 21); }
TEST(grad_rmsnorm_directional) { check_rmsnorm(19, 96, 0, 22); }

/* ---- rope --------------------------------------------------------------------------------------- */

typedef struct rope_ctx {
    lcm_backend *be;
    int B, T, C, H;
    const float *table;
} rope_ctx;

static void rope_fwd(void *p, const float *x, float *y) {
    rope_ctx *c = p;
    memcpy(y, x, (size_t)c->B * c->T * 3 * c->C * sizeof(float));
    c->be->ops->rope_forward(c->be, y, c->table, c->B, c->T, c->C, c->H);
}

static void check_rope(int B, int T, int C, int H, int per_element, uint64_t seed) {
    lcm_backend *be = new_backend();
    lcm_rng r;
    lcm_rng_init(&r, seed, 3);
    size_t n = (size_t)B * T * 3 * C;
    float *qkv = fbuf(n), *G = fbuf(n), *dqkv = fbuf(n);
    fill_uniform(&r, qkv, n, -1, 1);
    fill_uniform(&r, G, n, -1, 1);
    memcpy(dqkv, G, n * sizeof(float));
    float *table = fbuf(lcm_rope_table_floats(T, C / H));
    lcm_rope_table(table, T, C / H, 10000.0f);
    be->ops->rope_backward(be, dqkv, table, B, T, C, H);
    rope_ctx c = {be, B, T, C, H, table};
    gc_op op = {"rope", rope_fwd, &c, n, n, 0};
    gradcheck(&op, qkv, dqkv, G, 4, per_element, seed + 1);
    free(qkv); free(G); free(dqkv); free(table);
    lcm_backend_destroy(be);
}

TEST(grad_rope_small_per_element) { check_rope(2, 3, 8, 2, 1, 31); }
TEST(grad_rope_directional) { check_rope(3, 40, 64, 4, 0, 32); }

/* ---- attention ------------------------------------------------------------------------------------ */

typedef struct attention_ctx {
    lcm_backend *be;
    const int32_t *lens;
    float *saved;
    int B, T, C, H;
} attention_ctx;

static void attention_fwd(void *p, const float *x, float *y) {
    attention_ctx *c = p;
    c->be->ops->attention_forward(c->be, y, c->saved, x, c->lens, c->B, c->T, c->C, c->H);
}

static void check_attention(int B, int T, int C, int H, const int32_t *lens, int per_element, uint64_t seed) {
    lcm_backend *be = new_backend();
    lcm_error err = {0};
    lcm_rng r;
    lcm_rng_init(&r, seed, 4);
    size_t n = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    size_t ns = be->ops->attention_saved_floats(be, B, T, H);
    float *qkv = fbuf(n), *G = fbuf(no), *out = fbuf(no), *saved = fbuf(ns), *dqkv = fbuf(n);
    /* Logits of a few units: the softmax is far from uniform, so its Jacobian is exercised. */
    fill_uniform(&r, qkv, n, -2, 2);
    fill_uniform(&r, G, no, -1, 1);
    be->ops->attention_forward(be, out, saved, qkv, lens, B, T, C, H);
    fill_uniform(&r, dqkv, n, 100, 200); /* assigned: the old contents must vanish */
    be->ops->attention_backward(be, dqkv, G, qkv, out, saved, lens, B, T, C, H);
    CHECK_OK(be->ops->sync(be, &err), &err);

    /* Keys and values at padded positions are never read: their gradient is exactly zero. */
    int hd = C / H;
    for (int b = 0; b < B; b++)
        for (int t = lens[b]; t < T; t++)
            for (int i = C; i < 3 * C; i++) {
                float g = dqkv[((size_t)b * T + t) * 3 * C + i];
                CHECKF(g == 0.0f, "attention: dk/dv of padded b=%d t=%d col %d (head %d) is %g, not 0", b, t, i,
                       (i % C) / hd, g);
            }

    attention_ctx c = {be, lens, fbuf(ns), B, T, C, H};
    gc_op op = {"attention dqkv", attention_fwd, &c, n, no, 1};
    gradcheck(&op, qkv, dqkv, G, 4, per_element, seed + 1);
    free(qkv); free(G); free(out); free(saved); free(dqkv); free(c.saved);
    lcm_backend_destroy(be);
}

TEST(grad_attention_padded_small_per_element) {
    const int32_t lens[3] = {5, 2, 1}; /* full, padded, a single concept */
    check_attention(3, 5, 8, 2, lens, 1, 41);
}

TEST(grad_attention_padded_directional) {
    const int32_t lens[4] = {33, 17, 30, 1};
    check_attention(4, 33, 32, 4, lens, 0, 42);
}

/* ---- swiglu --------------------------------------------------------------------------------------- */

typedef struct swiglu_ctx {
    lcm_backend *be;
    int N, F;
} swiglu_ctx;

static void swiglu_fwd(void *p, const float *x, float *y) {
    swiglu_ctx *c = p;
    c->be->ops->swiglu_forward(c->be, y, x, c->N, c->F);
}

static void check_swiglu(int N, int F, int per_element, uint64_t seed) {
    lcm_backend *be = new_backend();
    lcm_rng r;
    lcm_rng_init(&r, seed, 5);
    size_t n = (size_t)N * 2 * F, no = (size_t)N * F;
    float *gi = fbuf(n), *G = fbuf(no), *dgi = fbuf(n);
    fill_uniform(&r, gi, n, -4, 4); /* both sigmoid tails and the middle */
    fill_uniform(&r, G, no, -1, 1);
    fill_uniform(&r, dgi, n, 100, 200);
    be->ops->swiglu_backward(be, dgi, G, gi, N, F);
    swiglu_ctx c = {be, N, F};
    gc_op op = {"swiglu dgi", swiglu_fwd, &c, n, no, 1};
    gradcheck(&op, gi, dgi, G, 4, per_element, seed + 1);
    free(gi); free(G); free(dgi);
    lcm_backend_destroy(be);
}

TEST(grad_swiglu_small_per_element) { check_swiglu(3, 7, 1, 51); }
TEST(grad_swiglu_directional) { check_swiglu(29, 96, 0, 52); }

/* ---- dropout ---------------------------------------------------------------------------------------- */

typedef struct dropout_ctx {
    lcm_backend *be;
    const float *h_in;
    size_t n;
    float p;
    lcm_dropout_key key;
} dropout_ctx;

static void dropout_fwd(void *ctxp, const float *x, float *y) {
    dropout_ctx *c = ctxp;
    c->be->ops->dropout_add(c->be, y, c->h_in, x, c->n, c->p, c->key);
}

static void check_dropout(size_t n, float p, int per_element, uint64_t seed) {
    lcm_backend *be = new_backend();
    lcm_rng r;
    lcm_rng_init(&r, seed, 6);
    float *h_in = fbuf(n), *branch = fbuf(n), *G = fbuf(n), *dbranch = fbuf(n);
    fill_uniform(&r, h_in, n, -1, 1);
    fill_uniform(&r, branch, n, -1, 1);
    fill_uniform(&r, G, n, -1, 1);
    lcm_dropout_key key = {.seed = seed, .step = 7, .microbatch = 3, .layer = 2, .site = 1};
    be->ops->dropout_backward(be, dbranch, G, n, p, key);
    dropout_ctx c = {be, h_in, n, p, key};
    char name[48];
    snprintf(name, sizeof name, "dropout p=%.1f dbranch", p);
    gc_op op = {name, dropout_fwd, &c, n, n, 0};
    gradcheck(&op, branch, dbranch, G, 4, per_element, seed + 1);
    free(h_in); free(branch); free(G); free(dbranch);
    lcm_backend_destroy(be);
}

TEST(grad_dropout_small_per_element) { check_dropout(23, 0.3f, 1, 61); }
TEST(grad_dropout_directional) { check_dropout(5003, 0.3f, 0, 62); }
TEST(grad_dropout_p0) { check_dropout(17, 0.0f, 1, 63); }

/* ---- mse loss --------------------------------------------------------------------------------------- */

typedef struct mse_ctx {
    lcm_backend *be;
    float *dy_scratch;
    const float *x, *center, *scale;
    const int32_t *lens;
    int B, T, D;
    float grad_scale;
} mse_ctx;

/* The op's scalar output, times grad_scale: dy is documented as d(loss_sum)/dy * grad_scale. */
static void mse_fwd(void *p, const float *yin, float *out) {
    mse_ctx *c = p;
    float loss = 0;
    c->be->ops->mse_loss(c->be, c->dy_scratch, &loss, yin, c->x, c->center, c->scale, c->lens, c->B, c->T, c->D,
                         c->grad_scale);
    out[0] = loss * c->grad_scale;
}

static void check_mse(int B, int T, int D, const int32_t *lens, int per_element, uint64_t seed) {
    lcm_backend *be = new_backend();
    lcm_rng r;
    lcm_rng_init(&r, seed, 7);
    size_t n = (size_t)B * T * D;
    float *y = fbuf(n), *x = fbuf(n), *center = fbuf(D), *scale = fbuf(D), *dy = fbuf(n);
    fill_uniform(&r, y, n, -1, 1);
    fill_uniform(&r, x, n, -1, 1);
    fill_uniform(&r, center, D, -0.2f, 0.2f);
    fill_uniform(&r, scale, D, 0.5f, 2.0f);
    float loss = 0, grad_scale = 0.375f, one = 1.0f;
    be->ops->mse_loss(be, dy, &loss, y, x, center, scale, lens, B, T, D, grad_scale);
    mse_ctx c = {be, fbuf(n), x, center, scale, lens, B, T, D, grad_scale};
    /* The loss is quadratic in y: the central difference is exact, any h works. */
    gc_op op = {"mse_loss dy (grad_scale)", mse_fwd, &c, n, 1, 0};
    gradcheck(&op, y, dy, &one, 4, per_element, seed + 1);
    free(y); free(x); free(center); free(scale); free(dy); free(c.dy_scratch);
    lcm_backend_destroy(be);
}

TEST(grad_mse_loss_small_per_element) {
    const int32_t lens[3] = {4, 2, 1};
    check_mse(3, 4, 5, lens, 1, 71);
}

TEST(grad_mse_loss_directional) {
    const int32_t lens[2] = {9, 5};
    check_mse(2, 9, 64, lens, 0, 72);
}
