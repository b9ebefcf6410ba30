/* test_cpu_ops.c: the CPU backend's forward math against independent oracles written here (naive loops
 * in double, hand-computed values), the masks (causal, key padding, loss targets, dropout), AdamW
 * against a scalar double implementation, memory ops, and two instances used from two threads.
 * The backward ops are checked against finite differences in test_cpu_grad.c. */
#include <pthread.h>
#include <stdint.h>

#include "harness.h"
#include "lcm/backend.h"
#include "lcm/half.h"
#include "lcm/philox.h"
#include "lcm/rope.h"

/* Huge allocation requests must come back as NULL (an error to report), not abort the sanitizers. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }
const char *__tsan_default_options(void);
const char *__tsan_default_options(void) { return "allocator_may_return_null=1"; }

static const double roundoff_u = 1.0 / 16777216.0; /* 2^-24, fp32's unit roundoff */

static lcm_backend *new_backend(int worker) {
    lcm_error err = {0};
    lcm_backend *be = NULL;
    if (lcm_cpu_backend_create(&be, worker, &err) != 0) {
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

/* The model's RoPE table for rows of up to T positions (free it). */
static float *rope_table(int T, int hd, float theta) {
    float *cs = fbuf(lcm_rope_table_floats(T, hd));
    lcm_rope_table(cs, T, hd, theta);
    return cs;
}

/* One BLAS thread everywhere: results do not depend on the machine's core count, and the test stays
 * light on a shared machine. */
__attribute__((constructor)) static void one_blas_thread(void) { lcm_cpu_set_blas_threads(1); }

/* ---- the table itself and memory -------------------------------------------------------------------- */

TEST(backend_identity_and_streams) {
    lcm_error err = {0};
    lcm_backend *be = new_backend(3);
    CHECK(strcmp(be->name, "cpu") == 0);
    CHECK(be->act_bytes == 4);
    CHECK(be->device == 3);
    CHECK(be->ops->sync(be, &err) == 0);
    CHECK(be->ops->query(be, &err) == 1);
    CHECK(be->ops->comm_stream(be) == NULL);
    be->ops->comm_wait_compute(be);
    be->ops->compute_wait_comm(be);
    size_t free_b = 0, total_b = 0;
    be->ops->mem_info(be, &free_b, &total_b);
    CHECK(total_b > 0);
    CHECK(free_b <= total_b);
    lcm_backend_destroy(be);
}

TEST(alloc_is_aligned_and_zeroed) {
    lcm_error err = {0};
    lcm_backend *be = new_backend(0);
    size_t sizes[4] = {0, 1, 100, 1 << 20};
    for (int i = 0; i < 4; i++) {
        unsigned char *p = NULL;
        CHECK_OK(be->ops->alloc(be, (void **)&p, sizes[i], "test buffer", &err), &err);
        CHECK(p != NULL);
        CHECK((uintptr_t)p % 64 == 0);
        size_t nonzero = 0;
        for (size_t j = 0; j < sizes[i]; j++) nonzero += p[j] != 0;
        CHECK(nonzero == 0);
        be->ops->release(be, p);
        void *h = NULL;
        CHECK_OK(be->ops->host_alloc(be, &h, sizes[i], &err), &err);
        CHECK(h != NULL && (uintptr_t)h % 64 == 0);
        be->ops->host_release(be, h);
    }
    lcm_backend_destroy(be);
}

TEST(alloc_failure_names_what_and_how_much) {
    lcm_error err = {0};
    lcm_backend *be = new_backend(0);
    void *p = (void *)1;
    size_t huge = (size_t)1 << 62; /* more than any address space */
    CHECK_FAILS(be->ops->alloc(be, &p, huge, "layer activations", &err), &err, LCM_ERR_NOMEM, "layer activations");
    CHECK(p == NULL);
    be->ops->alloc(be, &p, huge, "layer activations", &err);
    CHECKF(strstr(err.msg, "4611686018427387904") != NULL, "message does not give the size: %s", err.msg);
    CHECKF(strstr(err.msg, "data.max_tokens") != NULL, "message does not suggest smaller batches: %s", err.msg);
    lcm_error_clear(&err);
    CHECK_FAILS(be->ops->host_alloc(be, &p, huge, &err), &err, LCM_ERR_NOMEM, "data.max_tokens");
    lcm_backend_destroy(be);
}

/* The one op that can fail on CPU (growing attention's scratch) reports through sync and query, as an
 * asynchronous device error would. T = 2^30 asks for 2^62 bytes; the op fails before touching any
 * buffer, so none are passed. */
TEST(failed_op_is_reported_by_sync_and_query) {
    lcm_error err = {0};
    lcm_backend *be = new_backend(0);
    int32_t lens[1] = {1};
    be->ops->attention_backward(be, NULL, NULL, NULL, NULL, NULL, lens, 1, 1 << 30, 64, 1);
    CHECK_FAILS(be->ops->sync(be, &err), &err, LCM_ERR_NOMEM, "attention scratch");
    CHECK(be->ops->query(be, &err) < 0);
    CHECK(err.code == LCM_ERR_NOMEM);
    lcm_backend_destroy(be);
}

/* model.attention on the CPU: native is its only attention, so auto and native are accepted and cudnn is
 * a config error naming the key and what to set instead (never a silent substitute). */
TEST(attention_choice_on_the_cpu) {
    lcm_error err = {0};
    lcm_backend *be = new_backend(0);
    CHECK_OK(be->ops->set_attention(be, LCM_ATTENTION_AUTO, 64, &err), &err);
    CHECK_OK(be->ops->set_attention(be, LCM_ATTENTION_NATIVE, 64, &err), &err);
    CHECK_FAILS(be->ops->set_attention(be, LCM_ATTENTION_CUDNN, 64, &err), &err, LCM_ERR_CONFIG,
                "model.attention = cudnn, but the CPU backend has only the native attention: set model.attention=auto");
    lcm_backend_destroy(be);
}

TEST(copies_zero_and_conversions) {
    lcm_error err = {0};
    lcm_backend *be = new_backend(0);
    float host[5] = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f}, back[5] = {0};
    float *dev = NULL;
    CHECK_OK(be->ops->alloc(be, (void **)&dev, sizeof host, "x", &err), &err);
    CHECK_OK(be->ops->upload(be, dev, host, sizeof host, &err), &err);
    CHECK_OK(be->ops->sync(be, &err), &err);
    CHECK_OK(be->ops->download(be, back, dev, sizeof host, &err), &err);
    CHECK(memcmp(host, back, sizeof host) == 0);
    /* fp32 <-> act is the identity on CPU, also in place */
    be->ops->f32_to_act(be, dev, dev, 5);
    be->ops->act_to_f32(be, back, dev, 5);
    CHECK(memcmp(host, back, sizeof host) == 0);
    be->ops->zero(be, dev, 3 * sizeof(float));
    CHECK(dev[0] == 0 && dev[1] == 0 && dev[2] == 0 && dev[3] == host[3] && dev[4] == host[4]);
    be->ops->release(be, dev);

    /* bf16 by hand: 1 + 2^-8 lies halfway between bf16 1.0 (0x3f80) and 1 + 2^-7 (0x3f81) and rounds to
     * the even one; 1 + 3 * 2^-9 is above halfway; -2 is 0xc000 exactly. */
    float f[4] = {1.0f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 512, -2.0f};
    uint16_t h[4];
    be->ops->f32_to_bf16(be, h, f, 4);
    CHECK(h[0] == 0x3f80 && h[1] == 0x3f80 && h[2] == 0x3f81 && h[3] == 0xc000);
    float g[4];
    be->ops->bf16_to_f32(be, g, h, 4);
    CHECK(g[0] == 1.0f && g[1] == 1.0f && g[2] == 1.0f + 1.0f / 128 && g[3] == -2.0f);
    lcm_backend_destroy(be);
}

/* ---- forward math against oracles --------------------------------------------------------------------- */

TEST(normalize_matches_formula) {
    lcm_backend *be = new_backend(0);
    lcm_rng r;
    lcm_rng_init(&r, 1, 1);
    int N = 5, D = 33;
    float *x = fbuf((size_t)N * D), *xn = fbuf((size_t)N * D), center[33], scale[33];
    fill_uniform(&r, x, (size_t)N * D, -1, 1);
    fill_uniform(&r, center, D, -0.1f, 0.1f);
    fill_uniform(&r, scale, D, 0.01f, 0.1f);
    be->ops->normalize(be, xn, x, center, scale, N, D);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < D; i++) {
            double ref = ((double)x[n * D + i] - center[i]) / scale[i];
            /* one rounding for the subtraction, one for the division */
            CHECK_NEAR(xn[n * D + i], ref, 3 * roundoff_u * fabs(ref));
        }
    free(x); free(xn);
    lcm_backend_destroy(be);
}

TEST(linear_forward_matches_triple_loop) {
    lcm_backend *be = new_backend(0);
    lcm_rng r;
    lcm_rng_init(&r, 2, 1);
    int N = 13, IC = 70, OC = 21;
    float *inp = fbuf((size_t)N * IC), *w = fbuf((size_t)OC * IC), *bias = fbuf(OC), *out = fbuf((size_t)N * OC);
    fill_uniform(&r, inp, (size_t)N * IC, -1, 1);
    fill_uniform(&r, w, (size_t)OC * IC, -1, 1);
    fill_uniform(&r, bias, OC, -1, 1);
    fill_uniform(&r, out, (size_t)N * OC, 100, 200); /* assigned: the old contents must vanish */
    be->ops->linear_forward(be, out, inp, w, bias, N, IC, OC);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double ref = bias[o], mag = fabs((double)bias[o]);
            for (int i = 0; i < IC; i++) {
                ref += (double)inp[n * IC + i] * w[o * IC + i];
                mag += fabs((double)inp[n * IC + i] * w[o * IC + i]);
            }
            /* A float sum of IC + 1 terms in any order is within (IC + 1) u of sum |terms|. */
            CHECK_NEAR(out[n * OC + o], ref, (IC + 1) * roundoff_u * mag);
        }
    free(inp); free(w); free(bias); free(out);
    lcm_backend_destroy(be);
}

TEST(rmsnorm_forward_matches_formula) {
    lcm_backend *be = new_backend(0);
    lcm_rng r;
    lcm_rng_init(&r, 3, 1);
    int N = 4, C = 48;
    float *x = fbuf((size_t)N * C), *out = fbuf((size_t)N * C), gain[48], rstd[4];
    fill_uniform(&r, x, (size_t)N * C, -3, 3);
    fill_uniform(&r, gain, C, 0.5f, 2);
    x[0] = 0; /* a zero entry is fine */
    be->ops->rmsnorm_forward(be, out, rstd, x, gain, N, C, 1e-5f);
    for (int n = 0; n < N; n++) {
        double ss = 0;
        for (int i = 0; i < C; i++) ss += (double)x[n * C + i] * x[n * C + i];
        double r_ref = 1.0 / sqrt(ss / C + 1e-5);
        /* rstd is the double value rounded once; out adds two fp32 products */
        CHECK_NEAR(rstd[n], r_ref, 2 * roundoff_u * r_ref);
        for (int i = 0; i < C; i++) {
            double ref = x[n * C + i] * r_ref * gain[i];
            CHECK_NEAR(out[n * C + i], ref, 4 * roundoff_u * fabs(ref));
        }
    }
    free(x); free(out);
    lcm_backend_destroy(be);
}

TEST(swiglu_forward_matches_formula_and_is_safe_for_large_gates) {
    lcm_backend *be = new_backend(0);
    lcm_rng r;
    lcm_rng_init(&r, 4, 1);
    int N = 3, F = 10;
    float gi[60], out[30], dgi[60], dout[30];
    fill_uniform(&r, gi, 60, -6, 6);
    gi[0] = -100.0f; gi[1] = 100.0f; gi[2] = -1000.0f; gi[3] = 1000.0f; /* gates of row 0 */
    for (int i = 0; i < 30; i++) dout[i] = 1.0f;
    be->ops->swiglu_forward(be, out, gi, N, F);
    be->ops->swiglu_backward(be, dgi, dout, gi, N, F);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < F; i++) {
            double g = gi[n * 2 * F + i], u = gi[n * 2 * F + F + i];
            double ref = g / (1.0 + exp(-g)) * u;
            /* expf is within ~1 ulp; with the division, the product and 1 + e: a few u */
            CHECK_NEAR(out[n * F + i], ref, 8 * roundoff_u * fabs(ref) + 1e-30);
        }
    for (int i = 0; i < 60; i++) CHECK(isfinite(dgi[i]));
    /* silu(-100) ~ -4e-42 and silu(-1000) underflow to (minus) zero; silu(100) = 100, silu(1000) = 1000 */
    float u1 = gi[F + 1], u3 = gi[F + 3];
    CHECK(fabsf(out[0]) <= 1e-38f && fabsf(out[2]) <= 1e-38f);
    CHECK_NEAR(out[1], 100.0 * u1, 1e-5 * fabs(100.0 * u1));
    CHECK_NEAR(out[3], 1000.0 * u3, 1e-5 * fabs(1000.0 * u3));
    lcm_backend_destroy(be);
}

/* ---- RoPE ------------------------------------------------------------------------------------------------ */

/* hd = 4 (H = 1, C = 4), theta = 100: pair 0 turns by t * 100^0 = t, pair 1 by t * 100^(-2/4) = t / 10.
 * Hand values: cos 1 = 0.5403023058681398, sin 1 = 0.8414709848078965, cos 0.1 = 0.9950041652780258,
 * sin 0.1 = 0.09983341664682815, cos 2 = -0.4161468365471424, sin 2 = 0.9092974268256817,
 * cos 0.2 = 0.9800665778412416, sin 0.2 = 0.19866933079506122.
 * Rotating (x0, x1) by a gives (x0 cos a - x1 sin a, x0 sin a + x1 cos a). */
TEST(rope_hand_example_interleaved_pairs) {
    lcm_backend *be = new_backend(0);
    const double c1 = 0.5403023058681398, s1 = 0.8414709848078965, c01 = 0.9950041652780258,
                 s01 = 0.09983341664682815, c2 = -0.4161468365471424, s2 = 0.9092974268256817,
                 c02 = 0.9800665778412416, s02 = 0.19866933079506122;
    /* q = (1, 0, 0, 1), k = (2, 1, -1, 3), v = (5, 6, 7, 8) at each of t = 0, 1, 2 */
    float qkv[3 * 12];
    for (int t = 0; t < 3; t++) {
        const float row[12] = {1, 0, 0, 1, 2, 1, -1, 3, 5, 6, 7, 8};
        memcpy(qkv + t * 12, row, sizeof row);
    }
    float *cs = rope_table(3, 4, 100.0f);
    be->ops->rope_forward(be, qkv, cs, 1, 3, 4, 1);
    const double expect[3][12] = {
        /* t = 0: no rotation */
        {1, 0, 0, 1, 2, 1, -1, 3, 5, 6, 7, 8},
        /* t = 1: pair (0,1) by 1, pair (2,3) by 0.1 */
        {c1, s1, -s01, c01, 2 * c1 - s1, 2 * s1 + c1, -c01 - 3 * s01, -s01 + 3 * c01, 5, 6, 7, 8},
        /* t = 2: by 2 and 0.2 */
        {c2, s2, -s02, c02, 2 * c2 - s2, 2 * s2 + c2, -c02 - 3 * s02, -s02 + 3 * c02, 5, 6, 7, 8},
    };
    /* The angles 1, 0.1, 2, 0.2 in fp32 are within 1e-8 of the exact ones; cos and sin are rounded to
     * fp32 (2^-25 relative) and the rotation is two fp32 products and a sum of values below 4 (three
     * roundings of at most 2.4e-7 each): within 8e-7. A half-split (NeoX) pairing or a wrong angle is
     * off by 1e-2 or more. */
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < 12; i++)
            CHECKF(fabs(qkv[t * 12 + i] - expect[t][i]) <= 8e-7, "t=%d col %d: got %.9g, expected %.9g", t, i,
                   qkv[t * 12 + i], expect[t][i]);
    free(cs);
    lcm_backend_destroy(be);
}

/* fp32 rounded as a step of its own: the reference's table is a chain of fp32 tensor operations. */
static float f32(double v) {
    volatile float f = (float)v;
    return f;
}

/* The table as fairseq2 builds it for base_lcm (hd 128, theta 1e4, 4096 positions): the angle is the
 * fp32 chain (2i as fp32) / hd -> theta ** that -> 1 / that -> t * that, and the table holds the
 * cosine and sine OF THAT fp32 ANGLE, to within an fp32 ulp (the reference's fp32 sin/cos is within
 * one). At large t the fp32 angle is up to 2.4e-4 away from the exact t * theta^(-2i/hd); wherever that
 * moves the cosine by more than 16 ulps the table must follow the fp32 angle, which an fp64-angle table
 * (what the kernels computed before) does not. */
TEST(rope_table_is_the_reference_fp32_angle_table) {
    const int T = 4096, hd = 128, half = hd / 2;
    const float theta = 10000.0f;
    float *cs = rope_table(T, hd, theta);
    const double ulp1 = 1.0 / 8388608.0; /* 2^-23: an fp32 ulp at 1, the largest |cos| and |sin| */
    long wrong = 0, distinguishing = 0;
    for (int i = 0; i < half; i++) {
        const float inv = f32(1.0 / (double)f32(pow((double)theta, (double)f32((double)(2 * i) / hd))));
        for (int t = 0; t < T; t++) {
            const double a32 = (double)f32((double)t * inv);
            const double exact = t * pow((double)theta, -2.0 * i / hd);
            const float *e = cs + ((size_t)t * half + i) * 2;
            if (fabs(e[0] - cos(a32)) > ulp1 || fabs(e[1] - sin(a32)) > ulp1) {
                if (wrong++ < 5)
                    fprintf(stderr, "  t=%d i=%d: table (%.9g, %.9g), cos/sin of the fp32 angle (%.9g, %.9g)\n", t,
                            i, e[0], e[1], cos(a32), sin(a32));
            }
            if (fabs(cos(a32) - cos(exact)) > 16 * ulp1) distinguishing++;
        }
    }
    CHECKF(wrong == 0, "%ld of %d table entries are not cos/sin of the reference's fp32 angle", wrong, T * half);
    CHECKF(distinguishing > 1000, "only %ld entries tell an fp32 angle from the exact one", distinguishing);
    /* position 0 is the identity, exactly */
    for (int i = 0; i < half; i++) CHECK(cs[2 * i] == 1.0f && cs[2 * i + 1] == 0.0f);
    free(cs);
}

TEST(rope_backward_inverts_forward) {
    lcm_backend *be = new_backend(0);
    lcm_rng r;
    lcm_rng_init(&r, 5, 1);
    int B = 2, T = 300, C = 64, H = 4;
    size_t n = (size_t)B * T * 3 * C;
    float *x = fbuf(n), *y = fbuf(n);
    fill_uniform(&r, x, n, -1, 1);
    memcpy(y, x, n * sizeof(float));
    float *cs = rope_table(T, C / H, 10000.0f);
    be->ops->rope_forward(be, y, cs, B, T, C, H);
    be->ops->rope_backward(be, y, cs, B, T, C, H);
    /* Both directions use the same fp32 cosine and sine, whose squares sum to 1 within 2 ulps; each
     * direction rounds three times (two products, one sum) on values up to 1.5 in size: the round trip
     * is within 8 roundings of 1.5, 7e-7. */
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)y[i] - x[i]));
    CHECKF(worst <= 8 * roundoff_u * 1.5, "round trip error %.3g", worst);
    free(x); free(y); free(cs);
    lcm_backend_destroy(be);
}

/* ---- attention ------------------------------------------------------------------------------------------- */

/* Naive masked attention in double: the oracle. */
static void attention_reference(double *out, const float *qkv, const int32_t *lens, int B, int T, int C, int H) {
    int hd = C / H;
    double *w = calloc((size_t)T, sizeof(double));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const float *q = qkv + ((size_t)b * T + t) * 3 * C + h * hd;
                double mx = -INFINITY, sum = 0;
                for (int s = 0; s <= t && s < lens[b]; s++) {
                    const float *k = qkv + ((size_t)b * T + s) * 3 * C + C + h * hd;
                    double dot = 0;
                    for (int i = 0; i < hd; i++) dot += (double)q[i] * k[i];
                    w[s] = dot / sqrt((double)hd);
                    mx = fmax(mx, w[s]);
                }
                for (int s = 0; s <= t && s < lens[b]; s++) sum += (w[s] = exp(w[s] - mx));
                for (int i = 0; i < hd; i++) {
                    double acc = 0;
                    for (int s = 0; s <= t && s < lens[b]; s++)
                        acc += w[s] / sum * qkv[((size_t)b * T + s) * 3 * C + 2 * C + h * hd + i];
                    out[((size_t)b * T + t) * C + h * hd + i] = acc;
                }
            }
    free(w);
}

TEST(attention_forward_matches_naive_reference) {
    lcm_backend *be = new_backend(0);
    lcm_rng r;
    lcm_rng_init(&r, 6, 1);
    int B = 3, T = 11, C = 24, H = 3;
    int32_t lens[3] = {11, 6, 1};
    size_t n = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    float *qkv = fbuf(n), *out = fbuf(no), *saved = fbuf(be->ops->attention_saved_floats(be, B, T, H));
    double *ref = calloc(no, sizeof(double));
    fill_uniform(&r, qkv, n, -2, 2);
    be->ops->attention_forward(be, out, saved, qkv, lens, B, T, C, H);
    attention_reference(ref, qkv, lens, B, T, C, H);
    /* Outputs are convex combinations of values in [-2, 2]; the fp32 softmax and sums are good to a
     * few u relative per term, so 1e-6 absolute is ~8 u * 2 with room. */
    for (size_t i = 0; i < no; i++) CHECK_NEAR(out[i], ref[i], 1e-6);
    /* Saved probabilities: each row sums to 1 over its visible keys and is 0 elsewhere. */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const float *p = saved + (((size_t)b * H + h) * T + t) * T;
                double sum = 0;
                for (int s = 0; s < T; s++) {
                    int visible = s <= t && s < lens[b];
                    if (!visible) CHECK(p[s] == 0.0f);
                    sum += p[s];
                }
                CHECK_NEAR(sum, 1.0, T * roundoff_u * 2);
            }
    /* A query that sees only key 0 (t = 0, or any t of a one-concept row) returns v[0] exactly. */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            if (t > 0 && lens[b] > 1) continue;
            for (int i = 0; i < C; i++)
                CHECK(out[((size_t)b * T + t) * C + i] == qkv[(size_t)b * T * 3 * C + 2 * C + i]);
        }
    free(qkv); free(out); free(saved); free(ref);
    lcm_backend_destroy(be);
}

/* Query t of row b must not change when the keys and values it may not see (s > t or s >= lens[b])
 * change. Bitwise: masked probabilities are exactly 0 and padded keys are never read. */
TEST(attention_ignores_future_and_padded_keys) {
    lcm_backend *be = new_backend(0);
    lcm_rng r;
    lcm_rng_init(&r, 7, 1);
    int B = 2, T = 7, C = 8, H = 2;
    int32_t lens[2] = {7, 4};
    size_t n = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    size_t ns = be->ops->attention_saved_floats(be, B, T, H);
    float *qkv = fbuf(n), *changed = fbuf(n), *out = fbuf(no), *out2 = fbuf(no), *saved = fbuf(ns);
    fill_uniform(&r, qkv, n, -2, 2);
    be->ops->attention_forward(be, out, saved, qkv, lens, B, T, C, H);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            memcpy(changed, qkv, n * sizeof(float));
            for (int s = 0; s < T; s++) {
                if (s <= t && s < lens[b]) continue;
                float *row = changed + ((size_t)b * T + s) * 3 * C;
                fill_uniform(&r, row + C, 2 * (size_t)C, -50, 50); /* k and v */
            }
            be->ops->attention_forward(be, out2, saved, changed, lens, B, T, C, H);
            CHECKF(memcmp(out + ((size_t)b * T + t) * C, out2 + ((size_t)b * T + t) * C, C * sizeof(float)) == 0,
                   "row %d query %d changed when keys it must not see changed", b, t);
        }
    free(qkv); free(changed); free(out); free(out2); free(saved);
    lcm_backend_destroy(be);
}

/* ---- dropout --------------------------------------------------------------------------------------------- */

TEST(dropout_mask_is_lcm_dropout_keep_and_scales) {
    lcm_backend *be = new_backend(0);
    lcm_rng r;
    lcm_rng_init(&r, 8, 1);
    size_t n = 1003; /* not a multiple of 4 */
    float p = 0.3f;
    /* Large field values exercise every bit of the counter layout. */
    lcm_dropout_key key = {
        .seed = 0x1234567890abcdefull, .step = 123456, .microbatch = 77, .layer = 31, .site = 1};
    float *h_in = fbuf(n), *branch = fbuf(n), *h_out = fbuf(n), *dh = fbuf(n), *db = fbuf(n);
    fill_uniform(&r, h_in, n, -1, 1);
    fill_uniform(&r, branch, n, -1, 1);
    fill_uniform(&r, dh, n, -1, 1);
    be->ops->dropout_add(be, h_out, h_in, branch, n, p, key);
    be->ops->dropout_backward(be, db, dh, n, p, key);
    uint32_t thr = lcm_dropout_threshold(p);
    for (size_t i = 0; i < n; i++) {
        int keep = lcm_dropout_keep(key, i, thr);
        if (keep) {
            /* h_in + branch / 0.7, two fp32 roundings */
            double ref = h_in[i] + branch[i] / (1.0 - p);
            CHECK_NEAR(h_out[i], ref, 3 * roundoff_u * (fabs(h_in[i]) + fabs(branch[i] / (1.0 - p))));
            CHECK_NEAR(db[i], dh[i] / (1.0 - p), 2 * roundoff_u * fabs(dh[i] / (1.0 - p)));
        } else {
            CHECK(h_out[i] == h_in[i]);
            CHECK(db[i] == 0.0f);
        }
    }
    /* In place (h_out == h_in) gives the same result. */
    be->ops->dropout_add(be, h_in, h_in, branch, n, p, key);
    CHECK(memcmp(h_in, h_out, n * sizeof(float)) == 0);
    /* Another site, layer, step or micro-batch is another mask. */
    lcm_dropout_key other = key;
    other.site = 0;
    size_t same = 0;
    for (size_t i = 0; i < n; i++) same += lcm_dropout_keep(key, i, thr) == lcm_dropout_keep(other, i, thr);
    CHECK(same < n);
    free(h_in); free(branch); free(h_out); free(dh); free(db);
    lcm_backend_destroy(be);
}

TEST(dropout_keep_rate_is_one_minus_p) {
    lcm_backend *be = new_backend(0);
    size_t n = (size_t)1 << 20;
    float *zeros = fbuf(n), *ones = fbuf(n), *out = fbuf(n);
    for (size_t i = 0; i < n; i++) ones[i] = 1.0f;
    lcm_dropout_key key = {.seed = 1, .step = 2, .microbatch = 0, .layer = 1, .site = 0};
    be->ops->dropout_add(be, out, zeros, ones, n, 0.3f, key);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (out[i] != 0.0f) {
            kept++;
            CHECK_NEAR(out[i], 1.0 / 0.7, 2 * roundoff_u * 1.5);
        }
    }
    /* Binomial: the standard deviation of the kept fraction is sqrt(0.3 * 0.7 / 2^20) = 4.5e-4; allow
     * five of them. */
    double rate = (double)kept / n;
    CHECKF(fabs(rate - 0.7) <= 5 * sqrt(0.21 / n), "kept fraction %.5f, expected 0.7", rate);
    free(zeros); free(ones); free(out);
    lcm_backend_destroy(be);
}

TEST(dropout_p0_is_plain_add_and_copy) {
    lcm_backend *be = new_backend(0);
    float a[5] = {1, 2, 3, 4, 5}, b[5] = {0.5f, -1, 2, 0, 8}, out[5], d[5];
    lcm_dropout_key key = {0};
    be->ops->dropout_add(be, out, a, b, 5, 0.0f, key);
    be->ops->dropout_backward(be, d, b, 5, 0.0f, key);
    for (int i = 0; i < 5; i++) {
        CHECK(out[i] == a[i] + b[i]);
        CHECK(d[i] == b[i]);
    }
    lcm_backend_destroy(be);
}

/* ---- loss -------------------------------------------------------------------------------------------- */

TEST(mse_loss_matches_reference_and_ignores_non_targets) {
    lcm_backend *be = new_backend(0);
    lcm_rng r;
    lcm_rng_init(&r, 9, 1);
    int B = 3, T = 5, D = 7;
    int32_t lens[3] = {5, 3, 1}; /* 4, 2 and 0 targets */
    size_t n = (size_t)B * T * D;
    float *y = fbuf(n), *x = fbuf(n), *dy = fbuf(n), *y2 = fbuf(n), *x2 = fbuf(n), *dy2 = fbuf(n);
    float center[7], scale[7];
    fill_uniform(&r, y, n, -1, 1);
    fill_uniform(&r, x, n, -1, 1);
    fill_uniform(&r, center, D, -0.1f, 0.1f);
    fill_uniform(&r, scale, D, 0.5f, 2);
    fill_uniform(&r, dy, n, 100, 200); /* assigned everywhere */
    float loss = -1, grad_scale = 0.25f;
    be->ops->mse_loss(be, dy, &loss, y, x, center, scale, lens, B, T, D, grad_scale);
    double ref = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < D; i++) {
                size_t at = ((size_t)b * T + t) * D + i;
                if (t < lens[b] - 1) {
                    double target = ((double)x[at + D] - center[i]) / scale[i];
                    double d = y[at] - target;
                    ref += d * d;
                    /* the fp32 target and difference: a few u of |y| + |target| */
                    double tol = 2 * grad_scale * 4 * roundoff_u * (fabs(y[at]) + fabs(target));
                    CHECK_NEAR(dy[at], 2 * d * grad_scale, tol);
                } else {
                    CHECKF(dy[at] == 0.0f, "dy at b=%d t=%d (lens %d) is %g, not 0", b, t, lens[b], dy[at]);
                }
            }
    CHECK_NEAR(loss, ref, 1e-5 * ref);

    /* Changing the predictions at non-target positions, the inputs at padded positions and at
     * position 0 (an input, never a target) leaves the loss bit-identical. */
    memcpy(y2, y, n * sizeof(float));
    memcpy(x2, x, n * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < D; i++) {
                size_t at = ((size_t)b * T + t) * D + i;
                if (t >= lens[b] - 1) y2[at] = 1000.0f + t;
                if (t >= lens[b] || t == 0) x2[at] = -1000.0f - t;
            }
    float loss2 = -1;
    be->ops->mse_loss(be, dy2, &loss2, y2, x2, center, scale, lens, B, T, D, grad_scale);
    CHECK(loss2 == loss);
    CHECK(memcmp(dy, dy2, n * sizeof(float)) == 0);
    free(y); free(x); free(dy); free(y2); free(x2); free(dy2);
    lcm_backend_destroy(be);
}

/* ---- optimizer ----------------------------------------------------------------------------------------- */

TEST(sumsq_value_and_determinism) {
    lcm_error err = {0};
    lcm_backend *be = new_backend(0);
    size_t n = 1001;
    float *x = fbuf(n);
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * (float)i * (i % 2 ? 1 : -1);
    /* sum (i/2)^2 = (n-1) n (2n-1) / 24, exact in double at this size */
    double expect = (double)(n - 1) * n * (2 * n - 1) / 24.0, got = 0, again = 0;
    CHECK_OK(be->ops->sumsq(be, &got, x, n, &err), &err);
    CHECK(got == expect);
    lcm_rng r;
    lcm_rng_init(&r, 10, 1);
    fill_uniform(&r, x, n, -1, 1);
    CHECK_OK(be->ops->sumsq(be, &got, x, n, &err), &err);
    CHECK_OK(be->ops->sumsq(be, &again, x, n, &err), &err);
    CHECK(memcmp(&got, &again, sizeof got) == 0);
    double ref = 0;
    for (size_t i = n; i-- > 0;) ref += (double)x[i] * x[i]; /* another order: within n double ulps */
    CHECK_NEAR(got, ref, 1e-13 * ref);
    be->ops->scale_f32(be, x, 0.5f, n);
    CHECK_OK(be->ops->sumsq(be, &again, x, n, &err), &err);
    CHECK(again == got * 0.25); /* scaling by a power of two is exact */
    free(x);
    lcm_backend_destroy(be);
}

/* The reduced bf16 gradients' conversion with the clipping norm's sum of squares in the same pass:
 * the converted values are the bf16 values exactly, and the sum the bits of sumsq over them (the worker
 * takes it instead of the two ops, so the norm must not move). The values sum(k^2 / 4) for k < n are
 * exact in bf16 (k <= 256 has at most 8 significant bits) and their sum exact in double. */
TEST(bf16_to_f32_sumsq_is_the_conversion_then_sumsq) {
    lcm_error err = {0};
    lcm_backend *be = new_backend(0);
    const size_t n = 257;
    uint16_t *src = calloc(n, sizeof *src);
    float *dst = fbuf(n), *two = fbuf(n);
    for (size_t i = 0; i < n; i++) src[i] = lcm_f32_to_bf16(0.5f * (float)i * (i % 2 ? 1 : -1));
    double got = -1, expect = (double)(n - 1) * n * (2 * n - 1) / 24.0;
    CHECK_OK(be->ops->bf16_to_f32_sumsq(be, dst, src, n, &got, &err), &err);
    CHECK(got == expect);
    for (size_t i = 0; i < n; i++) CHECK(dst[i] == 0.5f * (float)i * (i % 2 ? 1 : -1));
    lcm_rng r;
    lcm_rng_init(&r, 11, 1);
    for (size_t i = 0; i < n; i++) src[i] = lcm_f32_to_bf16(lcm_rng_uniform(&r) * 2 - 1);
    double ref = 0;
    CHECK_OK(be->ops->bf16_to_f32_sumsq(be, dst, src, n, &got, &err), &err);
    be->ops->bf16_to_f32(be, two, src, n);
    CHECK_OK(be->ops->sumsq(be, &ref, two, n, &err), &err);
    CHECK(memcmp(&got, &ref, sizeof got) == 0 && got > 0);
    CHECK(memcmp(dst, two, n * sizeof *dst) == 0);
    free(src);
    free(dst);
    free(two);
    lcm_backend_destroy(be);
}

/* PyTorch's AdamW written out in double for one scalar parameter. */
typedef struct adamw_ref { double p, m, v; } adamw_ref;

static void adamw_ref_step(adamw_ref *s, double grad, const lcm_adamw_args *a) {
    double g = grad * a->grad_scale;
    s->p *= 1.0 - (double)a->lr * a->weight_decay;
    s->m = a->beta1 * s->m + (1.0 - a->beta1) * g;
    s->v = a->beta2 * s->v + (1.0 - a->beta2) * g * g;
    double bc1 = 1.0 - pow(a->beta1, (double)a->step), bc2 = 1.0 - pow(a->beta2, (double)a->step);
    s->p -= a->lr / bc1 * s->m / (sqrt(s->v) / sqrt(bc2) + a->eps);
}

TEST(adamw_matches_scalar_double_reference) {
    lcm_backend *be = new_backend(0);
    lcm_rng r;
    lcm_rng_init(&r, 11, 1);
    enum { P = 6, STEPS = 8 };
    float master[P], m[P] = {0}, v[P] = {0}, grad[P];
    adamw_ref ref[P];
    fill_uniform(&r, master, P, -2, 2);
    master[5] = 0.0f;
    for (int i = 0; i < P; i++) ref[i] = (adamw_ref){master[i], 0, 0};
    lcm_adamw_args a = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-5f, .weight_decay = 0.1f,
                        .grad_scale = 0.5f, .step = 0};
    for (int step = 1; step <= STEPS; step++) {
        a.step = step;
        fill_uniform(&r, grad, P, -1, 1);
        grad[4] = 1e-6f * grad[4]; /* tiny gradients: the eps regime */
        be->ops->adamw(be, master, master, grad, m, v, P, &a);
        for (int i = 0; i < P; i++) adamw_ref_step(&ref[i], grad[i], &a);
    }
    /* Each step adds a few fp32 roundings of |p| and of the update (lr times a ratio of size <= ~3);
     * over 8 steps 1e-6 absolute is a ~10x margin, while a wrong bias correction or decay moves p by
     * ~1e-3 or more. */
    for (int i = 0; i < P; i++) {
        CHECK_NEAR(master[i], ref[i].p, 1e-6);
        CHECK_NEAR(m[i], ref[i].m, 1e-6 * fmax(1, fabs(ref[i].m)));
        CHECK_NEAR(v[i], ref[i].v, 1e-6 * fabs(ref[i].v) + 1e-20);
    }

    /* A compute copy distinct from the master is written too. */
    float copy[P];
    memset(copy, 0, sizeof copy);
    a.step = STEPS + 1;
    be->ops->adamw(be, master, copy, grad, m, v, P, &a);
    CHECK(memcmp(copy, master, sizeof copy) == 0);
    lcm_backend_destroy(be);
}

/* ---- threads -------------------------------------------------------------------------------------------- */

/* A small forward and backward through most ops, as one worker would run it. */
typedef struct pipeline {
    int worker;
    float out[2 * 9 * 16], dqkv[2 * 9 * 48], dw[48 * 16], norm[2 * 9 * 16], gate[2 * 9 * 8];
    double sumsq;
} pipeline;

static void *run_pipeline(void *arg) {
    pipeline *pl = arg;
    lcm_error err = {0};
    lcm_backend *be = new_backend(pl->worker);
    enum { B = 2, T = 9, C = 16, H = 2, N = B * T };
    int32_t lens[B] = {9, 5};
    lcm_rng r;
    lcm_rng_init(&r, 12, 1); /* same data in every worker */
    float *x = fbuf(N * C), *w = fbuf(3 * C * C), *bias = fbuf(3 * C), *qkv = fbuf(N * 3 * C), *dout = fbuf(N * C);
    float *saved = fbuf(be->ops->attention_saved_floats(be, B, T, H)), rstd[N], gain[C], dbias[3 * C] = {0};
    fill_uniform(&r, x, N * C, -1, 1);
    fill_uniform(&r, w, 3 * C * C, -0.5f, 0.5f);
    fill_uniform(&r, bias, 3 * C, -0.1f, 0.1f);
    fill_uniform(&r, dout, N * C, -1, 1);
    fill_uniform(&r, gain, C, 0.5f, 1.5f);
    memset(pl->dw, 0, sizeof pl->dw);
    be->ops->linear_forward(be, qkv, x, w, bias, N, C, 3 * C);
    float *cs = rope_table(T, C / H, 10000.0f);
    be->ops->rope_forward(be, qkv, cs, B, T, C, H);
    be->ops->attention_forward(be, pl->out, saved, qkv, lens, B, T, C, H);
    be->ops->attention_backward(be, pl->dqkv, dout, qkv, pl->out, saved, lens, B, T, C, H);
    be->ops->rope_backward(be, pl->dqkv, cs, B, T, C, H);
    be->ops->linear_backward(be, NULL, pl->dw, dbias, pl->dqkv, x, w, N, C, 3 * C, 1);
    be->ops->rmsnorm_forward(be, pl->norm, rstd, pl->out, gain, N, C, 1e-5f);
    be->ops->swiglu_forward(be, pl->gate, pl->norm, N, C / 2);
    CHECK_OK(be->ops->sumsq(be, &pl->sumsq, pl->dw, 48 * 16, &err), &err);
    CHECK_OK(be->ops->sync(be, &err), &err);
    free(x); free(w); free(bias); free(qkv); free(dout); free(saved); free(cs);
    lcm_backend_destroy(be);
    return NULL;
}

TEST(two_instances_in_two_threads_agree) {
    static pipeline alone, a, b;
    alone.worker = 0;
    run_pipeline(&alone);
    a.worker = 1;
    b.worker = 2;
    pthread_t ta, tb;
    CHECK(pthread_create(&ta, NULL, run_pipeline, &a) == 0);
    CHECK(pthread_create(&tb, NULL, run_pipeline, &b) == 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    const pipeline *both[2] = {&a, &b};
    for (int k = 0; k < 2; k++) {
        const pipeline *p = both[k];
        CHECK(memcmp(p->out, alone.out, sizeof alone.out) == 0);
        CHECK(memcmp(p->dqkv, alone.dqkv, sizeof alone.dqkv) == 0);
        CHECK(memcmp(p->dw, alone.dw, sizeof alone.dw) == 0);
        CHECK(memcmp(p->gate, alone.gate, sizeof alone.gate) == 0);
        CHECK(p->sumsq == alone.sumsq && alone.sumsq > 0);
    }
}
