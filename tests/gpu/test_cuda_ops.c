/* test_cuda_ops.c: the CUDA backend (bf16) against the CPU backend (fp32, the reference) through the
 * same op table, op by op. Each test makes fresh random inputs, rounds the act-dtype inputs to bf16 and
 * gives both backends those same values (so a comparison measures the op, not the input rounding),
 * poisons every output with NaN bytes first (an element an op forgets to write stays NaN and fails the
 * comparison), and compares with the relative error ||gpu - cpu|| / ||cpu||.
 *
 * Tolerances. bf16 keeps 8 significant bits: rounding a value to bf16 errs by at most 2^-8 = 0.0039
 * relative (the unit roundoff, 2^-9, times the two ways the last bit can go in the worst case counted
 * generously), and the norm-wise error of a whole output is no larger than its worst element. So
 * TOL_BF16 = 1e-2 for outputs stored in bf16, 2.5x the bound of one rounding, leaving room for an
 * intermediate bf16 value (attention's output feeds delta; the forward matmul rounds before its bias
 * on the unfused path). fp32 outputs of fp32 math from identical inputs differ only by the order of
 * additions: a sum of n terms errs by at most n 2^-24 relative to the sum of magnitudes, so sums of a
 * few hundred terms get TOL_F32_SUM = 1e-4 and element-wise fp32 math gets TOL_F32 = 1e-5.
 *
 * Without a GPU every test SKIPs; with a driver that CUDA cannot use, every test FAILs (gpu_gate.h). */
#include <stdint.h>
#include <stdlib.h>

#include "../harness.h"
#include "gpu_gate.h"
#include "lcm/backend.h"
#include "lcm/half.h"
#include "lcm/log.h"
#include "lcm/philox.h"
#include "lcm/rope.h"

#define TOL_BF16 1e-2
#define TOL_F32_SUM 1e-4
#define TOL_F32 1e-5

/* ---- backends --------------------------------------------------------------------------------- */

static lcm_backend *cpu, *gpu; /* shared by all tests, created on first use */
static lcm_error setup_err;

/* 0 when both backends are ready, -1 when there is no GPU (skip), 1 when creating them failed. */
static int backends(void) {
    static int state = 2;
    if (state != 2) return state;
    int n = 0;
    if (lcm_cuda_device_count(&n, &setup_err) != 0) return state = 1;
    if (n == 0) return state = -1;
    if (lcm_cpu_backend_create(&cpu, 0, &setup_err) != 0) return state = 1;
    if (lcm_cuda_backend_create(&gpu, 0, &setup_err) != 0) return state = 1;
    return state = 0;
}

#define NEED_GPU()                                                                     \
    do {                                                                               \
        int st_ = backends();                                                          \
        if (st_ < 0) SKIP(gpu_gate_reason(1, 0));                                       \
        if (st_ > 0) {                                                                 \
            CHECKF(0, "cannot create the backends: %s", setup_err.msg);                \
            return;                                                                    \
        }                                                                              \
    } while (0)

/* ---- memory: everything a test allocates is released by release_all() ------------------------- */

typedef struct allocation { lcm_backend *be; void *p; } allocation; /* be NULL: host malloc */
static allocation allocs[256];
static int nallocs;

static void track(lcm_backend *be, void *p) {
    if (nallocs < (int)(sizeof allocs / sizeof allocs[0])) {
        allocs[nallocs].be = be;
        allocs[nallocs++].p = p;
    } else {
        CHECKF(0, "the test allocates more buffers than the tracker holds");
    }
}

static void release_all(void) {
    for (int i = nallocs - 1; i >= 0; i--) {
        if (allocs[i].be) allocs[i].be->ops->release(allocs[i].be, allocs[i].p);
        else free(allocs[i].p);
    }
    nallocs = 0;
}

static float *host(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) {
        perror("calloc");
        exit(2);
    }
    track(NULL, p);
    return p;
}

static void *dev(lcm_backend *be, size_t bytes) {
    lcm_error err = {0};
    void *p = NULL;
    CHECK_OK(be->ops->alloc(be, &p, bytes, "test buffer", &err), &err);
    if (!p) exit(2);
    track(be, p);
    return p;
}

static void sync_ok(lcm_backend *be) {
    lcm_error err = {0};
    CHECK_OK(be->ops->sync(be, &err), &err);
}

static void upload(lcm_backend *be, void *dst, const void *src, size_t bytes) {
    lcm_error err = {0};
    CHECK_OK(be->ops->upload(be, dst, src, bytes, &err), &err);
    sync_ok(be); /* the source may change once this returns */
}

static void download(lcm_backend *be, void *dst, const void *src, size_t bytes) {
    lcm_error err = {0};
    CHECK_OK(be->ops->download(be, dst, src, bytes, &err), &err);
}

/* n values from h in the backend's act dtype, at `at` (a device buffer). */
static void put_act_at(lcm_backend *be, void *at, const float *h, size_t n) {
    if (be->act_bytes == 4) {
        upload(be, at, h, n * 4);
        return;
    }
    uint16_t *tmp = malloc(n * 2 + 2);
    for (size_t i = 0; i < n; i++) tmp[i] = lcm_f32_to_bf16(h[i]);
    upload(be, at, tmp, n * 2);
    free(tmp);
}

static void *put_act(lcm_backend *be, const float *h, size_t n) {
    void *d = dev(be, n * be->act_bytes);
    put_act_at(be, d, h, n);
    return d;
}

static float *put_f32(lcm_backend *be, const float *h, size_t n) {
    float *d = dev(be, n * 4);
    upload(be, d, h, n * 4);
    return d;
}

static int32_t *put_i32(lcm_backend *be, const int32_t *h, size_t n) {
    int32_t *d = dev(be, n * 4);
    upload(be, d, h, n * 4);
    return d;
}

static void get_act(lcm_backend *be, float *h, const void *d, size_t n) {
    if (be->act_bytes == 4) {
        download(be, h, d, n * 4);
        return;
    }
    uint16_t *tmp = malloc(n * 2 + 2);
    download(be, tmp, d, n * 2);
    for (size_t i = 0; i < n; i++) h[i] = lcm_bf16_to_f32(tmp[i]);
    free(tmp);
}

static void get_f32(lcm_backend *be, float *h, const float *d, size_t n) { download(be, h, d, n * 4); }

/* Fill `bytes` of device memory with 0xFF: NaN in fp32 and in bf16. */
static void poison(lcm_backend *be, void *d, size_t bytes) {
    unsigned char *tmp = malloc(bytes + 1);
    memset(tmp, 0xff, bytes);
    upload(be, d, tmp, bytes);
    free(tmp);
}

static void *poisoned(lcm_backend *be, size_t bytes) {
    void *d = dev(be, bytes);
    poison(be, d, bytes);
    return d;
}

/* ---- data ------------------------------------------------------------------------------------- */

static lcm_rng rng;

static void seed(uint64_t s) { lcm_rng_init(&rng, s, 7); }

static float *uniform(size_t n, float lo, float hi) {
    float *p = host(n);
    for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * lcm_rng_uniform(&rng);
    return p;
}

/* Round in place to the nearest bf16, the values both backends then see. */
static float *bf16_round(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = lcm_bf16_to_f32(lcm_f32_to_bf16(p[i]));
    return p;
}

static float *uniform_bf16(size_t n, float lo, float hi) { return bf16_round(uniform(n, lo, hi), n); }

static double rel_err(const float *gpu_v, const float *cpu_v, size_t n) { return harness_rel_err(gpu_v, cpu_v, n); }

#define CHECK_CLOSE(what, gpu_v, cpu_v, n, tol)                                                    \
    do {                                                                                           \
        double e_ = rel_err((gpu_v), (cpu_v), (n));                                                \
        CHECKF(e_ <= (tol), "%s: relative error %.3g > %.3g", (what), e_, (double)(tol));          \
    } while (0)

#define CHECK_SAME_BITS(what, a, b, n)                                                             \
    CHECKF(memcmp((a), (b), (n) * sizeof(float)) == 0, "%s: two runs differ", (what))

/* ---- memory, transfers, errors ---------------------------------------------------------------- */

TEST(cuda_backend_basics) {
    NEED_GPU();
    CHECK(strcmp(gpu->name, "cuda") == 0);
    CHECK(gpu->act_bytes == 2);
    CHECK(gpu->device == 0);
    CHECK(gpu->ops->comm_stream(gpu) != NULL);
    size_t free_b = 0, total_b = 0;
    gpu->ops->mem_info(gpu, &free_b, &total_b);
    CHECK(total_b > 0 && free_b <= total_b);

    /* alloc zero-fills; upload/download round-trip; zero clears. */
    size_t n = 1000;
    float *d = dev(gpu, n * 4);
    float *h = host(n);
    get_f32(gpu, h, d, n);
    int zeros = 1;
    for (size_t i = 0; i < n; i++) zeros &= h[i] == 0.0f;
    CHECK(zeros);
    float *x = uniform(n, -1, 1);
    upload(gpu, d, x, n * 4);
    get_f32(gpu, h, d, n);
    CHECK(memcmp(h, x, n * 4) == 0);
    gpu->ops->zero(gpu, d, n * 4);
    get_f32(gpu, h, d, n);
    zeros = 1;
    for (size_t i = 0; i < n; i++) zeros &= h[i] == 0.0f;
    CHECK(zeros);

    /* pinned host memory works as an upload source */
    lcm_error err = {0};
    void *pinned = NULL;
    CHECK_OK(gpu->ops->host_alloc(gpu, &pinned, n * 4, &err), &err);
    if (pinned) {
        memcpy(pinned, x, n * 4);
        upload(gpu, d, pinned, n * 4);
        get_f32(gpu, h, d, n);
        CHECK(memcmp(h, x, n * 4) == 0);
        gpu->ops->host_release(gpu, pinned);
    }

    /* stream hand-offs and query */
    gpu->ops->comm_wait_compute(gpu);
    gpu->ops->compute_wait_comm(gpu);
    sync_ok(gpu);
    CHECK(gpu->ops->query(gpu, &err) == 1);
    release_all();
}

TEST(cuda_out_of_memory_is_reported_and_survived) {
    NEED_GPU();
    lcm_error err = {0};
    void *p = NULL;
    CHECK_FAILS(gpu->ops->alloc(gpu, &p, (size_t)1 << 50, "activations", &err), &err, LCM_ERR_NOMEM,
                "GPU 0: out of memory allocating activations: asked 1048576.0 GiB, ");
    CHECK(p == NULL);
    lcm_error_clear(&err);
    gpu->ops->alloc(gpu, &p, (size_t)1 << 50, "activations", &err);
    CHECKF(strstr(err.msg, " free of ") && strstr(err.msg, "; lower data.max_tokens"), "message: %s", err.msg);
    /* The failure is not sticky: the backend keeps working. */
    size_t n = 4096;
    float *x = uniform(n, -1, 1);
    float *d = put_f32(gpu, x, n);
    gpu->ops->scale_f32(gpu, d, 2.0f, n);
    float *h = host(n);
    get_f32(gpu, h, d, n);
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= h[i] == x[i] * 2.0f;
    CHECK(ok);
    sync_ok(gpu);
    release_all();
}

/* A failure inside an op is remembered and returned by the next sync, naming the op; a fresh backend
 * is used because the failure stays with it. */
TEST(cuda_failed_op_is_reported_by_sync) {
    NEED_GPU();
    lcm_error err = {0};
    lcm_backend *be = NULL;
    CHECK_OK(lcm_cuda_backend_create(&be, 0, &err), &err);
    if (!be) return;
    int B = 1, T = 2, C = 8000, H = 1; /* head dim 8000: more than the kernels' shared memory allows */
    void *qkv = NULL, *out = NULL;
    float *saved = NULL;
    int32_t lens[1] = {2};
    int32_t *dlens = NULL;
    CHECK_OK(be->ops->alloc(be, &qkv, (size_t)B * T * 3 * C * 2, "qkv", &err), &err);
    CHECK_OK(be->ops->alloc(be, &out, (size_t)B * T * C * 2, "out", &err), &err);
    size_t nsaved = be->ops->attention_saved_floats(be, B, T, H);
    CHECK_OK(be->ops->alloc(be, (void **)&saved, nsaved * 4, "saved", &err), &err);
    CHECK_OK(be->ops->alloc(be, (void **)&dlens, 4, "lens", &err), &err);
    CHECK_OK(be->ops->upload(be, dlens, lens, 4, &err), &err);
    be->ops->attention_forward(be, out, saved, qkv, dlens, B, T, C, H);
    CHECK_FAILS(be->ops->sync(be, &err), &err, LCM_ERR_INTERNAL, "attention_forward");
    be->ops->release(be, qkv);
    be->ops->release(be, out);
    be->ops->release(be, saved);
    be->ops->release(be, dlens);
    lcm_backend_destroy(be);
}

TEST(cuda_conversions_round_like_the_host) {
    NEED_GPU();
    seed(11);
    size_t n = 1001; /* not a multiple of 8: exercises the tail */
    float *x = uniform(n, -100, 100);
    for (int offset = 0; offset < 2; offset++) { /* offset 1: misaligned, the one-at-a-time path */
        float *d32 = dev(gpu, (n + 1) * 4);
        uint16_t *d16 = dev(gpu, (n + 1) * 2);
        upload(gpu, d32 + offset, x, n * 4);
        gpu->ops->f32_to_bf16(gpu, d16 + offset, d32 + offset, n);
        uint16_t *h16 = malloc(n * 2);
        download(gpu, h16, d16 + offset, n * 2);
        int same = 1;
        for (size_t i = 0; i < n; i++) same &= h16[i] == lcm_f32_to_bf16(x[i]);
        CHECKF(same, "f32_to_bf16 (offset %d) differs from lcm_f32_to_bf16", offset);
        gpu->ops->zero(gpu, d32, (n + 1) * 4);
        gpu->ops->bf16_to_f32(gpu, d32 + offset, d16 + offset, n);
        float *back = host(n);
        get_f32(gpu, back, d32 + offset, n);
        same = 1;
        for (size_t i = 0; i < n; i++) same &= back[i] == lcm_bf16_to_f32(h16[i]);
        CHECKF(same, "bf16_to_f32 (offset %d) is not exact", offset);
        /* act conversions are the same on this backend */
        gpu->ops->f32_to_act(gpu, d16 + offset, d32 + offset, n);
        gpu->ops->act_to_f32(gpu, d32 + offset, d16 + offset, n);
        get_f32(gpu, back, d32 + offset, n);
        same = 1;
        for (size_t i = 0; i < n; i++) same &= back[i] == lcm_bf16_to_f32(h16[i]);
        CHECKF(same, "f32_to_act/act_to_f32 (offset %d)", offset);
        free(h16);
    }
    release_all();
}

TEST(cuda_scale_f32_is_exact) {
    NEED_GPU();
    seed(12);
    size_t n = 1003;
    float *x = uniform(n, -10, 10);
    for (int offset = 0; offset < 2; offset++) {
        float *d = dev(gpu, (n + 1) * 4);
        upload(gpu, d + offset, x, n * 4);
        gpu->ops->scale_f32(gpu, d + offset, 0.37f, n);
        float *h = host(n);
        get_f32(gpu, h, d + offset, n);
        int same = 1;
        for (size_t i = 0; i < n; i++) same &= h[i] == x[i] * 0.37f; /* one IEEE multiply on both sides */
        CHECKF(same, "scale_f32 (offset %d)", offset);
    }
    release_all();
}

/* ---- normalize, linear, rmsnorm --------------------------------------------------------------- */

TEST(cuda_normalize_matches_cpu) {
    NEED_GPU();
    seed(21);
    int shapes[][2] = {{37, 64}, {5, 13}};
    for (int s = 0; s < 2; s++) {
        int N = shapes[s][0], D = shapes[s][1];
        size_t n = (size_t)N * D;
        float *x = uniform(n, -0.05f, 0.05f), *center = uniform(D, -0.01f, 0.01f), *scale = uniform(D, 0.005f, 0.02f);
        float *res[2];
        lcm_backend *bes[2] = {cpu, gpu};
        for (int k = 0; k < 2; k++) {
            lcm_backend *be = bes[k];
            void *xn = poisoned(be, n * be->act_bytes);
            be->ops->normalize(be, xn, put_f32(be, x, n), put_f32(be, center, D), put_f32(be, scale, D), N, D);
            res[k] = host(n);
            get_act(be, res[k], xn, n);
        }
        CHECK_CLOSE("normalize", res[1], res[0], n, TOL_BF16);
    }
    release_all();
}

/* Forward and backward of one linear layer, with dw and dbias accumulating into non-zero buffers, and
 * assigned (accumulate 0: the dw matmul with beta 0 and, where cuBLASLt has it, the BGRADB epilogue)
 * into poisoned ones. */
static void check_linear(int N, int IC, int OC, int misaligned_bias) {
    float *inp = uniform_bf16((size_t)N * IC, -1, 1), *w = uniform_bf16((size_t)OC * IC, -0.2f, 0.2f);
    float *bias = uniform_bf16(OC, -0.5f, 0.5f), *dout = uniform_bf16((size_t)N * OC, -1, 1);
    float *dw0 = uniform((size_t)OC * IC, -1, 1), *db0 = uniform(OC, -1, 1);
    float *out[2], *out32[2], *dinp[2], *dw[2], *db[2], *dw_set[2], *db_set[2];
    lcm_backend *bes[2] = {cpu, gpu};
    for (int k = 0; k < 2; k++) {
        lcm_backend *be = bes[k];
        size_t ab = be->act_bytes;
        void *d_inp = put_act(be, inp, (size_t)N * IC), *d_w = put_act(be, w, (size_t)OC * IC);
        char *bias_buf = dev(be, (OC + 1) * ab);
        void *d_bias = bias_buf + (misaligned_bias ? ab : 0);
        put_act_at(be, d_bias, bias, OC);
        void *d_out = poisoned(be, (size_t)N * OC * ab);
        be->ops->linear_forward(be, d_out, d_inp, d_w, d_bias, N, IC, OC);
        out[k] = host((size_t)N * OC);
        get_act(be, out[k], d_out, (size_t)N * OC);
        float *d_out32 = poisoned(be, (size_t)N * OC * 4);
        be->ops->linear_forward_f32(be, d_out32, d_inp, d_w, d_bias, N, IC, OC);
        out32[k] = host((size_t)N * OC);
        get_f32(be, out32[k], d_out32, (size_t)N * OC);

        void *d_dout = put_act(be, dout, (size_t)N * OC);
        void *d_dinp = poisoned(be, (size_t)N * IC * ab);
        float *d_dw = put_f32(be, dw0, (size_t)OC * IC), *d_db = put_f32(be, db0, OC);
        be->ops->linear_backward(be, d_dinp, d_dw, d_db, d_dout, d_inp, d_w, N, IC, OC, 1);
        dinp[k] = host((size_t)N * IC);
        dw[k] = host((size_t)OC * IC);
        db[k] = host(OC);
        get_act(be, dinp[k], d_dinp, (size_t)N * IC);
        get_f32(be, dw[k], d_dw, (size_t)OC * IC);
        get_f32(be, db[k], d_db, OC);
        float *d_dw_set = poisoned(be, (size_t)OC * IC * 4), *d_db_set = poisoned(be, (size_t)OC * 4);
        be->ops->linear_backward(be, NULL, d_dw_set, d_db_set, d_dout, d_inp, d_w, N, IC, OC, 0);
        dw_set[k] = host((size_t)OC * IC);
        db_set[k] = host(OC);
        get_f32(be, dw_set[k], d_dw_set, (size_t)OC * IC);
        get_f32(be, db_set[k], d_db_set, OC);
        if (be == gpu) { /* determinism: the same inputs again give the same bits; and dinp = NULL */
            poison(be, d_dinp, (size_t)N * IC * ab);
            upload(be, d_dw, dw0, (size_t)OC * IC * 4);
            upload(be, d_db, db0, (size_t)OC * 4);
            be->ops->linear_backward(be, d_dinp, d_dw, d_db, d_dout, d_inp, d_w, N, IC, OC, 1);
            float *dinp2 = host((size_t)N * IC), *dw2 = host((size_t)OC * IC), *db2 = host(OC);
            get_act(be, dinp2, d_dinp, (size_t)N * IC);
            get_f32(be, dw2, d_dw, (size_t)OC * IC);
            get_f32(be, db2, d_db, OC);
            CHECK_SAME_BITS("linear_backward dinp", dinp2, dinp[k], (size_t)N * IC);
            CHECK_SAME_BITS("linear_backward dw", dw2, dw[k], (size_t)OC * IC);
            CHECK_SAME_BITS("linear_backward dbias", db2, db[k], (size_t)OC);
            upload(be, d_dw, dw0, (size_t)OC * IC * 4);
            upload(be, d_db, db0, (size_t)OC * 4);
            be->ops->linear_backward(be, NULL, d_dw, d_db, d_dout, d_inp, d_w, N, IC, OC, 1);
            get_f32(be, dw2, d_dw, (size_t)OC * IC);
            CHECK_SAME_BITS("linear_backward dw without dinp", dw2, dw[k], (size_t)OC * IC);
            poison(be, d_dw_set, (size_t)OC * IC * 4);
            poison(be, d_db_set, (size_t)OC * 4);
            be->ops->linear_backward(be, NULL, d_dw_set, d_db_set, d_dout, d_inp, d_w, N, IC, OC, 0);
            get_f32(be, dw2, d_dw_set, (size_t)OC * IC);
            get_f32(be, db2, d_db_set, OC);
            CHECK_SAME_BITS("linear_backward dw (assigned)", dw2, dw_set[k], (size_t)OC * IC);
            CHECK_SAME_BITS("linear_backward dbias (assigned)", db2, db_set[k], (size_t)OC);
        }
    }
    char what[96];
    snprintf(what, sizeof what, "linear N=%d IC=%d OC=%d%s", N, IC, OC, misaligned_bias ? " (unaligned bias)" : "");
    CHECK_CLOSE(what, out[1], out[0], (size_t)N * OC, TOL_BF16);
    /* the fp32 output: the same products of bf16 values summed in fp32 on both sides (bf16 storage
     * would be off by up to 2^-9) */
    CHECK_CLOSE(what, out32[1], out32[0], (size_t)N * OC, TOL_F32_SUM);
    CHECK_CLOSE(what, dinp[1], dinp[0], (size_t)N * IC, TOL_BF16);
    CHECK_CLOSE(what, dw[1], dw[0], (size_t)OC * IC, TOL_F32_SUM);
    CHECK_CLOSE(what, db[1], db[0], OC, TOL_F32_SUM);
    /* assigned: the poison is gone and the sums are the same as accumulated from zero */
    CHECK_CLOSE(what, dw_set[1], dw_set[0], (size_t)OC * IC, TOL_F32_SUM);
    CHECK_CLOSE(what, db_set[1], db_set[0], OC, TOL_F32_SUM);
}

TEST(cuda_linear_matches_cpu) {
    NEED_GPU();
    seed(31);
    check_linear(37, 40, 24, 0);
    check_linear(64, 128, 96, 0);
    check_linear(300, 64, 200, 1);
    check_linear(1, 16, 8, 0);
    check_linear(5, 7, 3, 1); /* odd sizes: leading dimensions not multiples of 8 */
    release_all();
}

static void check_rmsnorm(int N, int C) {
    float eps = 1e-5f;
    size_t n = (size_t)N * C;
    float *inp = uniform_bf16(n, -2, 2), *gain = uniform_bf16(C, 0.5f, 1.5f), *dout = uniform_bf16(n, -1, 1);
    float *dinp0 = uniform(n, -1, 1), *dgain0 = uniform(C, -1, 1); /* dinp: the fp32 residual gradient */
    float *out[2], *rstd[2], *dinp[2], *dgain[2], *dgain_set[2];
    lcm_backend *bes[2] = {cpu, gpu};
    for (int k = 0; k < 2; k++) {
        lcm_backend *be = bes[k];
        void *d_inp = put_act(be, inp, n), *d_gain = put_act(be, gain, C);
        void *d_out = poisoned(be, n * be->act_bytes);
        float *d_rstd = poisoned(be, N * 4);
        be->ops->rmsnorm_forward(be, d_out, d_rstd, d_inp, d_gain, N, C, eps);
        out[k] = host(n);
        rstd[k] = host(N);
        get_act(be, out[k], d_out, n);
        get_f32(be, rstd[k], d_rstd, N);

        /* Both backwards read the CPU's rstd, so the backward is compared alone. */
        float *d_rstd_ref = put_f32(be, rstd[0], N);
        void *d_dout = put_act(be, dout, n);
        float *d_dinp = put_f32(be, dinp0, n), *d_dgain = put_f32(be, dgain0, C);
        be->ops->rmsnorm_backward(be, d_dinp, d_dgain, d_dout, d_inp, d_gain, d_rstd_ref, N, C, 1);
        dinp[k] = host(n);
        dgain[k] = host(C);
        get_f32(be, dinp[k], d_dinp, n);
        get_f32(be, dgain[k], d_dgain, C);
        /* accumulate 0: the gain gradient is assigned over the poison (dinp still adds) */
        float *d_dgain_set = poisoned(be, (size_t)C * 4), *d_dinp_scratch = put_f32(be, dinp0, n);
        be->ops->rmsnorm_backward(be, d_dinp_scratch, d_dgain_set, d_dout, d_inp, d_gain, d_rstd_ref, N, C, 0);
        dgain_set[k] = host(C);
        get_f32(be, dgain_set[k], d_dgain_set, C);
        if (be == gpu) {
            upload(be, d_dinp, dinp0, n * 4);
            upload(be, d_dgain, dgain0, (size_t)C * 4);
            be->ops->rmsnorm_backward(be, d_dinp, d_dgain, d_dout, d_inp, d_gain, d_rstd_ref, N, C, 1);
            float *dinp2 = host(n), *dgain2 = host(C);
            get_f32(be, dinp2, d_dinp, n);
            get_f32(be, dgain2, d_dgain, C);
            CHECK_SAME_BITS("rmsnorm_backward dinp", dinp2, dinp[k], n);
            CHECK_SAME_BITS("rmsnorm_backward dgain", dgain2, dgain[k], (size_t)C);
        }
    }
    char what[64];
    snprintf(what, sizeof what, "rmsnorm N=%d C=%d", N, C);
    CHECK_CLOSE(what, out[1], out[0], n, TOL_BF16);
    CHECK_CLOSE(what, rstd[1], rstd[0], N, TOL_F32);
    /* dinp = dinp0 + dx: the += must keep dinp0 (a plain = would lose it). dinp is fp32 and both sides
     * compute dx in fp32 from the same bf16 values: sums of C terms, so TOL_F32_SUM (a dinp stored in
     * bf16 would be off by up to 2^-9). */
    CHECK_CLOSE(what, dinp[1], dinp[0], n, TOL_F32_SUM);
    CHECK_CLOSE(what, dgain[1], dgain[0], C, TOL_F32_SUM);
    CHECK_CLOSE(what, dgain_set[1], dgain_set[0], C, TOL_F32_SUM);
}

TEST(cuda_rmsnorm_matches_cpu) {
    NEED_GPU();
    seed(41);
    check_rmsnorm(37, 64);   /* the 16-byte path */
    check_rmsnorm(300, 264); /* rows longer than one warp's 256-column sweep */
    check_rmsnorm(5, 50);    /* C % 8 != 0: one element at a time */
    check_rmsnorm(1, 8);
    release_all();
}

/* ---- rope, attention ---------------------------------------------------------------------------- */

static void check_rope(int B, int T, int C, int H) {
    size_t n = (size_t)B * T * 3 * C;
    float *qkv = uniform_bf16(n, -1, 1), *dqkv = uniform_bf16(n, -1, 1);
    float *fwd[2], *bwd[2];
    /* one table, as the model builds it: the backends differ only in the rotation's arithmetic */
    float *table = host(lcm_rope_table_floats(T, C / H));
    lcm_rope_table(table, T, C / H, 10000.0f);
    lcm_backend *bes[2] = {cpu, gpu};
    for (int k = 0; k < 2; k++) {
        lcm_backend *be = bes[k];
        void *d = put_act(be, qkv, n), *g = put_act(be, dqkv, n);
        const float *cs = put_f32(be, table, lcm_rope_table_floats(T, C / H));
        be->ops->rope_forward(be, d, cs, B, T, C, H);
        be->ops->rope_backward(be, g, cs, B, T, C, H);
        fwd[k] = host(n);
        bwd[k] = host(n);
        get_act(be, fwd[k], d, n);
        get_act(be, bwd[k], g, n);
    }
    char what[64];
    snprintf(what, sizeof what, "rope B=%d T=%d C=%d H=%d", B, T, C, H);
    CHECK_CLOSE(what, fwd[1], fwd[0], n, TOL_BF16);
    CHECK_CLOSE(what, bwd[1], bwd[0], n, TOL_BF16);
    /* v is not rotated: bit-identical */
    int v_same = 1;
    for (size_t r = 0; r < (size_t)B * T; r++)
        for (int c = 2 * C; c < 3 * C; c++) v_same &= fwd[1][r * 3 * C + c] == qkv[r * 3 * C + c];
    CHECKF(v_same, "%s: v changed", what);
}

TEST(cuda_rope_matches_cpu) {
    NEED_GPU();
    seed(51);
    check_rope(3, 37, 64, 4);
    check_rope(2, 300, 32, 2);
    check_rope(1, 1, 16, 2);
    release_all();
}

/* The log-sum-exp the GPU saves, computed here in double from the same bf16 inputs. */
static void reference_lse(double *lse, const float *qkv, const int32_t *lens, int B, int T, int C, int H) {
    int hd = C / H;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                int nk = t + 1 < lens[b] ? t + 1 : lens[b];
                const float *q = qkv + ((size_t)b * T + t) * 3 * C + h * hd;
                double mx = -1e300, sum = 0;
                double *sc = malloc(sizeof(double) * (size_t)nk);
                for (int s = 0; s < nk; s++) {
                    const float *kk = qkv + ((size_t)b * T + s) * 3 * C + C + h * hd;
                    double dot = 0;
                    for (int d = 0; d < hd; d++) dot += (double)q[d] * kk[d];
                    sc[s] = dot / sqrt((double)hd);
                    if (sc[s] > mx) mx = sc[s];
                }
                for (int s = 0; s < nk; s++) sum += exp(sc[s] - mx);
                lse[((size_t)b * H + h) * T + t] = mx + log(sum);
                free(sc);
            }
}

/* Runs attention forward and backward (twice, for determinism) on `be`; results into out/dqkv/lse. */
static void run_attention(lcm_backend *be, float *out, float *dqkv, float *lse, const float *qkv, const float *dout,
                          const int32_t *lens, int B, int T, int C, int H) {
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, ab = be->act_bytes;
    size_t nsaved = be->ops->attention_saved_floats(be, B, T, H);
    void *d_qkv = put_act(be, qkv, nq), *d_dout = put_act(be, dout, no);
    int32_t *d_lens = put_i32(be, lens, B);
    void *d_out = poisoned(be, no * ab), *d_dqkv = poisoned(be, nq * ab);
    float *d_saved = poisoned(be, nsaved * 4);
    be->ops->attention_forward(be, d_out, d_saved, d_qkv, d_lens, B, T, C, H);
    be->ops->attention_backward(be, d_dqkv, d_dout, d_qkv, d_out, d_saved, d_lens, B, T, C, H);
    get_act(be, out, d_out, no);
    get_act(be, dqkv, d_dqkv, nq);
    if (lse) get_f32(be, lse, d_saved, (size_t)B * H * T);
    if (be != cpu) {
        poison(be, d_dqkv, nq * ab);
        be->ops->attention_backward(be, d_dqkv, d_dout, d_qkv, d_out, d_saved, d_lens, B, T, C, H);
        float *again = host(nq);
        get_act(be, again, d_dqkv, nq);
        CHECK_SAME_BITS("attention_backward", again, dqkv, nq);
    }
    sync_ok(be);
}

static void check_attention(lcm_backend *simple, int B, int T, int C, int H, const int32_t *lens) {
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, ns = (size_t)B * H * T;
    float *qkv = uniform_bf16(nq, -1.5f, 1.5f), *dout = uniform_bf16(no, -1, 1);
    float *out[3], *dqkv[3], *lse[3];
    lcm_backend *bes[3] = {cpu, gpu, simple};
    for (int k = 0; k < 3; k++) {
        out[k] = host(no);
        dqkv[k] = host(nq);
        lse[k] = k ? host(ns) : NULL;
        if (bes[k]) run_attention(bes[k], out[k], dqkv[k], lse[k], qkv, dout, lens, B, T, C, H);
    }
    double *ref = malloc(ns * sizeof(double));
    reference_lse(ref, qkv, lens, B, T, C, H);
    float *ref_f = host(ns);
    for (size_t i = 0; i < ns; i++) ref_f[i] = (float)ref[i];
    free(ref);
    char what[96];
    for (int k = 1; k < 3; k++) {
        if (!bes[k]) continue;
        snprintf(what, sizeof what, "attention (%s) B=%d T=%d C=%d H=%d", k == 1 ? "default" : "simple", B, T, C, H);
        CHECK_CLOSE(what, out[k], out[0], no, TOL_BF16);
        CHECK_CLOSE(what, dqkv[k], dqkv[0], nq, TOL_BF16);
        CHECK_CLOSE(what, lse[k], ref_f, ns, TOL_F32_SUM);
    }
    if (simple) {
        /* The two GPU implementations agree to within one bf16 rounding of each element. */
        snprintf(what, sizeof what, "attention flash vs simple B=%d T=%d C=%d H=%d", B, T, C, H);
        CHECK_CLOSE(what, out[1], out[2], no, 4e-3);
        CHECK_CLOSE(what, dqkv[1], dqkv[2], nq, 4e-3);
    }
}

TEST(cuda_attention_matches_cpu) {
    NEED_GPU();
    seed(61);
    /* The reference kernels, on a second backend. */
    lcm_backend *simple = NULL;
    lcm_error err = {0};
    CHECK_OK(lcm_cuda_backend_create(&simple, 0, &err), &err);
    if (simple) CHECK_OK(lcm_cuda_use_reference_attention(simple, &err), &err);
    int32_t lens_a[3] = {37, 20, 1}; /* a full row, a padded row, a row of one concept */
    check_attention(simple, 3, 37, 64, 4, lens_a);   /* hd 16; T not a multiple of 8 or 32 */
    int32_t lens_b[2] = {1, 1};
    check_attention(simple, 2, 1, 32, 2, lens_b);    /* T = 1 */
    int32_t lens_c[2] = {300, 123};
    check_attention(simple, 2, 300, 256, 2, lens_c); /* hd 128, several key tiles */
    int32_t lens_d[2] = {45, 33};
    check_attention(simple, 2, 45, 96, 2, lens_d);   /* hd 48: lanes past the head dim idle */
    int32_t lens_e[1] = {70};
    check_attention(simple, 1, 70, 320, 2, lens_e);  /* hd 160: the simple kernels on both */
    int32_t lens_f[2] = {64, 40};
    check_attention(simple, 2, 64, 64, 1, lens_f);   /* hd 64, T a multiple of the tiles */
    release_all();
    lcm_backend_destroy(simple);
}

/* ---- cuDNN's fused attention (model.attention = cudnn) ------------------------------------------ */

/* A CUDA backend with cuDNN's attention for head dim hd; NULL with a SKIP/failure recorded otherwise. In a
 * build without cuDNN the request must be refused as a config error naming the key. */
static lcm_backend *cudnn_backend(int hd) {
    lcm_error err = {0};
    lcm_backend *be = NULL;
    CHECK_OK(lcm_cuda_backend_create(&be, 0, &err), &err);
    if (!be) return NULL;
    int rc = be->ops->set_attention(be, LCM_ATTENTION_CUDNN, hd, &err);
    if (!LCM_WITH_CUDNN) {
        CHECKF(rc == LCM_ERR_CONFIG && strstr(err.msg, "model.attention = cudnn") && strstr(err.msg, "built without cuDNN"),
               "cudnn asked of a build without it: %d: %s", rc, err.msg);
        lcm_backend_destroy(be);
        return NULL;
    }
    CHECK_OK(rc, &err);
    if (rc) {
        lcm_backend_destroy(be);
        return NULL;
    }
    return be;
}

/* cuDNN against the CPU (out, dqkv), its saved log-sum-exp against the double-precision reference, and
 * the backward's bits: twice on one backend (run_attention) and once more on a second backend with plans
 * built afresh (`again`), which must all be identical, since the backward is asked to be deterministic. */
static void check_cudnn_attention(lcm_backend *cud, lcm_backend *again, int B, int T, int C, int H,
                                  const int32_t *lens) {
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, ns = (size_t)B * H * T;
    float *qkv = uniform_bf16(nq, -1.5f, 1.5f), *dout = uniform_bf16(no, -1, 1);
    float *out[3], *dqkv[3], *lse[3];
    lcm_backend *bes[3] = {cpu, cud, again};
    for (int k = 0; k < 3; k++) {
        out[k] = host(no);
        dqkv[k] = host(nq);
        lse[k] = k ? host(ns) : NULL;
        run_attention(bes[k], out[k], dqkv[k], lse[k], qkv, dout, lens, B, T, C, H);
    }
    double *ref = malloc(ns * sizeof(double));
    reference_lse(ref, qkv, lens, B, T, C, H);
    float *ref_f = host(ns);
    for (size_t i = 0; i < ns; i++) ref_f[i] = (float)ref[i];
    free(ref);
    char what[96];
    snprintf(what, sizeof what, "cudnn attention B=%d T=%d C=%d H=%d", B, T, C, H);
    CHECK_CLOSE(what, out[1], out[0], no, TOL_BF16);
    CHECK_CLOSE(what, dqkv[1], dqkv[0], nq, TOL_BF16);
    CHECK_CLOSE(what, lse[1], ref_f, ns, TOL_F32_SUM);
    snprintf(what, sizeof what, "cudnn attention, second backend, B=%d T=%d C=%d H=%d", B, T, C, H);
    CHECK_SAME_BITS(what, out[2], out[1], no);
    CHECK_SAME_BITS(what, dqkv[2], dqkv[1], nq);
}

TEST(cuda_cudnn_attention_matches_cpu_and_is_deterministic) {
    NEED_GPU();
    seed(62);
    /* the plans' real workspace against the memory plan's bound, one line per shape (on stderr) */
    lcm_log_set_level(LCM_LOG_DEBUG);
    lcm_backend *cud = cudnn_backend(16), *again = cud ? cudnn_backend(16) : NULL;
    if (!cud || !again) {
        if (cud) lcm_backend_destroy(cud);
        lcm_log_set_level(LCM_LOG_INFO);
        return; /* refused as it must be (no cuDNN in this build), or the failure is recorded */
    }
    /* set_attention's head dim only decides the choice; each call's shape gets its own plans */
    int32_t lens_a[3] = {37, 20, 1}; /* a full row, a padded row, a row of one concept */
    check_cudnn_attention(cud, again, 3, 37, 64, 4, lens_a);   /* hd 16; T not a multiple of the tiles */
    int32_t lens_b[2] = {1, 1};
    check_cudnn_attention(cud, again, 2, 1, 32, 2, lens_b);    /* T = 1 */
    int32_t lens_c[2] = {300, 123};
    check_cudnn_attention(cud, again, 2, 300, 256, 2, lens_c); /* hd 128, several tiles, padding */
    int32_t lens_d[2] = {45, 33};
    check_cudnn_attention(cud, again, 2, 45, 96, 2, lens_d);   /* hd 48 */
    int32_t lens_e[4] = {128, 128, 97, 5};
    check_cudnn_attention(cud, again, 4, 128, 1024, 16, lens_e); /* base_lcm_1_6b's heads: hd 64, H 16 */
    release_all();
    lcm_backend_destroy(cud);
    lcm_backend_destroy(again);
    lcm_log_set_level(LCM_LOG_INFO);
}

/* A head dim cuDNN does not take: cudnn is refused up front naming the key; auto keeps the native kernels
 * and still matches the CPU. */
TEST(cuda_cudnn_attention_head_dim_it_cannot_take) {
    NEED_GPU();
    seed(63);
    lcm_error err = {0};
    lcm_backend *be = NULL;
    CHECK_OK(lcm_cuda_backend_create(&be, 0, &err), &err);
    if (!be) return;
    CHECK_FAILS(be->ops->set_attention(be, LCM_ATTENTION_CUDNN, 160, &err), &err, LCM_ERR_CONFIG,
                "model.attention=auto or native");
    CHECK_OK(be->ops->set_attention(be, LCM_ATTENTION_AUTO, 160, &err), &err);
    int B = 1, T = 70, C = 320, H = 2;
    int32_t lens[1] = {70};
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    float *qkv = uniform_bf16(nq, -1.5f, 1.5f), *dout = uniform_bf16(no, -1, 1);
    float *out[2] = {host(no), host(no)}, *dqkv[2] = {host(nq), host(nq)};
    run_attention(cpu, out[0], dqkv[0], NULL, qkv, dout, lens, B, T, C, H);
    run_attention(be, out[1], dqkv[1], NULL, qkv, dout, lens, B, T, C, H);
    CHECK_CLOSE("attention hd 160 under auto", out[1], out[0], no, TOL_BF16);
    CHECK_CLOSE("attention hd 160 under auto", dqkv[1], dqkv[0], nq, TOL_BF16);
    release_all();
    lcm_backend_destroy(be);
}

/* ---- swiglu, dropout ---------------------------------------------------------------------------- */

static void check_swiglu(int N, int F) {
    size_t n = (size_t)N * F;
    float *gi = uniform_bf16(2 * n, -4, 4), *dout = uniform_bf16(n, -1, 1);
    float *out[2], *dgi[2];
    lcm_backend *bes[2] = {cpu, gpu};
    for (int k = 0; k < 2; k++) {
        lcm_backend *be = bes[k];
        void *d_gi = put_act(be, gi, 2 * n), *d_dout = put_act(be, dout, n);
        void *d_out = poisoned(be, n * be->act_bytes), *d_dgi = poisoned(be, 2 * n * be->act_bytes);
        be->ops->swiglu_forward(be, d_out, d_gi, N, F);
        be->ops->swiglu_backward(be, d_dgi, d_dout, d_gi, N, F);
        out[k] = host(n);
        dgi[k] = host(2 * n);
        get_act(be, out[k], d_out, n);
        get_act(be, dgi[k], d_dgi, 2 * n);
    }
    char what[64];
    snprintf(what, sizeof what, "swiglu N=%d F=%d", N, F);
    CHECK_CLOSE(what, out[1], out[0], n, TOL_BF16);
    CHECK_CLOSE(what, dgi[1], dgi[0], 2 * n, TOL_BF16);
}

TEST(cuda_swiglu_matches_cpu) {
    NEED_GPU();
    seed(71);
    check_swiglu(37, 40);
    check_swiglu(5, 13);
    check_swiglu(300, 176);
    release_all();
}

TEST(cuda_dropout_masks_match_cpu) {
    NEED_GPU();
    seed(81);
    size_t n = 4099; /* a tail that is not a multiple of 4 or 8 */
    lcm_dropout_key key = {.seed = 1234567, .step = 17, .microbatch = 3, .layer = 5, .site = 1};
    float *h_in = uniform_bf16(n, -1, 1), *branch = uniform_bf16(n, 0.25f, 1), *dh = uniform_bf16(n, 0.25f, 1);
    float *zeros = host(n);
    float ps[3] = {0.0f, 0.1f, 0.5f};
    for (int pi = 0; pi < 3; pi++) {
        float p = ps[pi];
        uint32_t threshold = lcm_dropout_threshold(p);
        for (int offset = 0; offset < 2; offset++) { /* offset 1: misaligned, the one-at-a-time path */
            float *sum[2], *masked[2], *dbranch[2];
            lcm_backend *bes[2] = {cpu, gpu};
            for (int k = 0; k < 2; k++) {
                lcm_backend *be = bes[k];
                size_t ab = be->act_bytes;
                char *b_in = dev(be, (n + 1) * ab), *b_br = dev(be, (n + 1) * ab), *b_out = dev(be, (n + 1) * ab);
                float *b_dh = dev(be, (n + 1) * sizeof(float)); /* the residual gradient is fp32 */
                char *b_db = dev(be, (n + 1) * ab);
                void *d_in = b_in + offset * ab, *d_br = b_br + offset * ab, *d_out = b_out + offset * ab;
                float *d_dh = b_dh + offset;
                void *d_db = b_db + offset * ab;
                put_act_at(be, d_br, branch, n);
                upload(be, d_dh, dh, n * sizeof(float));
                /* h_in = 0: the output is zero exactly where the mask dropped */
                put_act_at(be, d_in, zeros, n);
                poison(be, b_out, (n + 1) * ab);
                be->ops->dropout_add(be, d_out, d_in, d_br, n, p, key);
                masked[k] = host(n);
                get_act(be, masked[k], d_out, n);
                /* in place, h_out == h_in */
                put_act_at(be, d_in, h_in, n);
                be->ops->dropout_add(be, d_in, d_in, d_br, n, p, key);
                sum[k] = host(n);
                get_act(be, sum[k], d_in, n);
                poison(be, b_db, (n + 1) * ab);
                be->ops->dropout_backward(be, d_db, d_dh, n, p, key);
                dbranch[k] = host(n);
                get_act(be, dbranch[k], d_db, n);
            }
            int same_mask = 1, mask_is_philox = 1, grad_mask = 1;
            for (size_t i = 0; i < n; i++) {
                int kept_gpu = masked[1][i] != 0.0f, kept_cpu = masked[0][i] != 0.0f;
                same_mask &= kept_gpu == kept_cpu;
                mask_is_philox &= kept_gpu == (p == 0.0f || lcm_dropout_keep(key, i, threshold));
                grad_mask &= (dbranch[1][i] != 0.0f) == kept_gpu;
            }
            CHECKF(same_mask, "dropout p=%g offset %d: the GPU mask differs from the CPU's", p, offset);
            CHECKF(mask_is_philox, "dropout p=%g offset %d: the mask is not lcm_dropout_keep's", p, offset);
            CHECKF(grad_mask, "dropout p=%g offset %d: the backward's mask differs from the forward's", p, offset);
            CHECK_CLOSE("dropout_add", sum[1], sum[0], n, TOL_BF16);
            CHECK_CLOSE("dropout_add (h_in 0)", masked[1], masked[0], n, TOL_BF16);
            CHECK_CLOSE("dropout_backward", dbranch[1], dbranch[0], n, TOL_BF16);
        }
    }
    release_all();
}

/* ---- loss, sumsq, adamw --------------------------------------------------------------------------- */

TEST(cuda_mse_loss_matches_cpu) {
    NEED_GPU();
    seed(91);
    int B = 3, T = 37, D = 64;
    int32_t lens[3] = {37, 20, 1};
    size_t n = (size_t)B * T * D;
    float *x = uniform(n, -0.05f, 0.05f), *center = uniform(D, -0.01f, 0.01f), *scale = uniform(D, 0.005f, 0.02f);
    float *y = uniform(n, -3, 3); /* fp32: the prediction is fp32 on both backends */
    float grad_scale = 1.0f / 53.0f;
    float loss[2], *dy[2];
    lcm_backend *bes[2] = {cpu, gpu};
    for (int k = 0; k < 2; k++) {
        lcm_backend *be = bes[k];
        void *d_dy = poisoned(be, n * be->act_bytes);
        float *d_loss = poisoned(be, 4);
        be->ops->mse_loss(be, d_dy, d_loss, put_f32(be, y, n), put_f32(be, x, n), put_f32(be, center, D),
                          put_f32(be, scale, D), put_i32(be, lens, B), B, T, D, grad_scale);
        dy[k] = host(n);
        get_act(be, dy[k], d_dy, n);
        get_f32(be, &loss[k], d_loss, 1);
    }
    /* The same fp32 differences on both sides (a bf16 prediction would be off by 2^-9 relative); the
     * CPU sums in double, the GPU in fp32 over at most a few dozen terms per thread and two trees:
     * within 50 fp32 roundings of a sum of positive terms, 3e-6 relative. A double reference checks
     * the masking too. */
    double ref = 0;
    int zero_elsewhere = 1;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int d = 0; d < D; d++) {
                size_t i = ((size_t)b * T + t) * D + d;
                if (t < lens[b] - 1) {
                    float diff = y[i] - (x[i + D] - center[d]) / scale[d];
                    ref += (double)diff * diff;
                } else {
                    zero_elsewhere &= dy[1][i] == 0.0f;
                }
            }
    CHECK_NEAR(loss[1], ref, 3e-6 * ref);
    CHECK_NEAR(loss[1], loss[0], 3e-6 * ref);
    CHECK(zero_elsewhere);
    CHECK_CLOSE("mse_loss dy", dy[1], dy[0], n, TOL_BF16);
    release_all();
}

TEST(cuda_sumsq_is_accurate_and_deterministic) {
    NEED_GPU();
    seed(101);
    size_t n = 1000003;
    float *x = uniform(n, -3, 3);
    double ref = 0;
    for (size_t i = 0; i < n; i++) ref += (double)x[i] * x[i];
    lcm_error err = {0};
    float *d = put_f32(gpu, x, n);
    double a = 0, b = 0, c = 0;
    CHECK_OK(gpu->ops->sumsq(gpu, &a, d, n, &err), &err);
    CHECK_OK(gpu->ops->sumsq(gpu, &b, d, n, &err), &err);
    /* fp32 on the GPU: each square rounds once, each thread's compensated sum about twice more, and
     * the block and partial trees add 18 levels: about 22 roundings of 2^-24, 1.3e-6; 3e-6 allows
     * for the final rounding to fp32. The CPU sums in double (exact to 1e-10). */
    CHECK_NEAR(a, ref, 3e-6 * ref);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    float *dc = put_f32(cpu, x, n);
    CHECK_OK(cpu->ops->sumsq(cpu, &c, dc, n, &err), &err);
    CHECK_NEAR(a, c, 3e-6 * ref);
    CHECK_OK(gpu->ops->sumsq(gpu, &a, d, 0, &err), &err);
    CHECK(a == 0.0);
    release_all();
}

/* The bf16 reduction's conversion with the sum of squares in the same pass (the worker's path with
 * trainer.grad_reduce_dtype = bf16): the same fp32 values as bf16_to_f32 and the same bits as sumsq
 * over them (each thread visits the same elements in the same order), and the CPU's value to the
 * double-summation bound of the test above. */
TEST(cuda_bf16_to_f32_sumsq_is_the_two_ops) {
    NEED_GPU();
    seed(103);
    size_t n = 1000003;
    float *x = uniform(n, -3, 3);
    uint16_t *h16 = malloc(n * sizeof *h16);
    if (!h16) exit(2);
    track(NULL, h16);
    for (size_t i = 0; i < n; i++) h16[i] = lcm_f32_to_bf16(x[i]);
    lcm_error err = {0};
    uint16_t *d16 = dev(gpu, n * sizeof *h16);
    upload(gpu, d16, h16, n * sizeof *h16);
    float *fused = dev(gpu, n * 4), *two = dev(gpu, n * 4);
    double a = -1, b = -1, c = -1;
    CHECK_OK(gpu->ops->bf16_to_f32_sumsq(gpu, fused, d16, n, &a, &err), &err);
    gpu->ops->bf16_to_f32(gpu, two, d16, n);
    CHECK_OK(gpu->ops->sumsq(gpu, &b, two, n, &err), &err);
    CHECK(memcmp(&a, &b, sizeof a) == 0 && a > 0);
    float *hf = host(n), *ht = host(n);
    download(gpu, hf, fused, n * 4);
    download(gpu, ht, two, n * 4);
    CHECK(memcmp(hf, ht, n * 4) == 0);
    int exact = 1;
    for (size_t i = 0; i < n; i++) exact &= hf[i] == lcm_bf16_to_f32(h16[i]);
    CHECK(exact);
    float *cf = dev(cpu, n * 4);
    CHECK_OK(cpu->ops->bf16_to_f32_sumsq(cpu, cf, h16, n, &c, &err), &err);
    CHECK_NEAR(a, c, 1e-10 * c);
    release_all();
}

TEST(cuda_adamw_matches_cpu) {
    NEED_GPU();
    seed(111);
    size_t n = 1003;
    float *master0 = uniform(n, -1, 1), *m0 = uniform(n, -0.01f, 0.01f), *v0 = uniform(n, 0, 1e-4f);
    lcm_adamw_args a = {.lr = 4e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-5f, .weight_decay = 0.1f,
                        .grad_scale = 0.8f, .step = 1};
    float *master[2], *m[2], *v[2], *param = host(n);
    lcm_backend *bes[2] = {cpu, gpu};
    for (int k = 0; k < 2; k++) {
        lcm_backend *be = bes[k];
        float *d_master = put_f32(be, master0, n), *d_m = put_f32(be, m0, n), *d_v = put_f32(be, v0, n);
        void *d_param = be == cpu ? (void *)d_master : poisoned(be, n * be->act_bytes);
        seed(112); /* the same gradients on both */
        for (int step = 1; step <= 3; step++) {
            a.step = step;
            float *grad = uniform(n, -0.1f, 0.1f);
            be->ops->adamw(be, d_master, d_param, put_f32(be, grad, n), d_m, d_v, n, &a);
        }
        master[k] = host(n);
        m[k] = host(n);
        v[k] = host(n);
        get_f32(be, master[k], d_master, n);
        get_f32(be, m[k], d_m, n);
        get_f32(be, v[k], d_v, n);
        if (be == gpu) get_act(be, param, d_param, n);
    }
    CHECK_CLOSE("adamw master", master[1], master[0], n, TOL_F32);
    CHECK_CLOSE("adamw m", m[1], m[0], n, TOL_F32);
    CHECK_CLOSE("adamw v", v[1], v[0], n, TOL_F32);
    /* the bf16 compute copy is the rounded master */
    int rounded = 1;
    for (size_t i = 0; i < n; i++) rounded &= param[i] == lcm_bf16_to_f32(lcm_f32_to_bf16(master[1][i]));
    CHECK(rounded);
    release_all();
}
