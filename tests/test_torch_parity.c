/* test_torch_parity.c: the CPU backend's loss and every parameter gradient against an independent
 * PyTorch implementation (tools/torch_ref.py) on a small model with padding, several rows and
 * residual dropout. Skipped (never passed) when no Python with torch is found. */
#include "harness.h"
#include "lcm/safetensors.h"
#include "model_util.h"

static const char *find_torch_python(void) {
    static char found[512];
    const char *env = getenv("LCM_PYTHON");
    const char *candidates[] = {env, "./.venv/bin/python", "/usr/bin/python3", "python3"};
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        if (!candidates[i]) continue;
        char *check[] = {(char *)candidates[i], "-c", "import torch, numpy", NULL};
        if (harness_run(check, 1)) {
            snprintf(found, sizeof found, "%s", candidates[i]);
            return found;
        }
    }
    return NULL;
}

static void write_weights(const char *path, const lcm_param_table *t, const float *host, lcm_error *err) {
    lcm_st_writer *w = lcm_st_writer_new();
    for (int i = 0; i < t->n; i++) {
        const lcm_param *p = &t->params[i];
        lcm_st_add(w, p->name, LCM_ST_F32, p->ndim, p->shape, host + p->offset, err);
    }
    lcm_st_write(w, path, err);
    lcm_st_writer_free(w);
}

static void run_parity(float p, int H) {
    const char *py = find_torch_python();
    if (!py) SKIP("no python with torch and numpy (install python3-torch python3-numpy, or set LCM_PYTHON)");
    lcm_error err = {0};
    lcm_dims d = tiny_dims();
    d.H = H;
    d.dropout = p;
    int32_t lens[4] = {9, 5, 2, 7};
    const int B = 4, T = 9;
    tiny tm;
    CHECK_OK(tiny_create(&tm, &d, B, T, lens, 21, &err), &err);
    lcm_dropout_key key = {.seed = 1234, .step = 17, .microbatch = 2};
    double obj = tiny_step(&tm, p, key, NULL, NULL, &err);
    const size_t P = tm.m.t.total;
    float *grads = malloc(P * sizeof(float));
    tm.be->ops->download(tm.be, grads, tm.m.grads, P * sizeof(float), &err);

    const char *dir = harness_tmpdir();
    char wpath[512], bpath[512], opath[512];
    snprintf(wpath, sizeof wpath, "%s/weights.safetensors", dir);
    snprintf(bpath, sizeof bpath, "%s/batch.safetensors", dir);
    snprintf(opath, sizeof opath, "%s/grads.safetensors", dir);
    write_weights(wpath, &tm.m.t, tm.params, &err);

    float *center = malloc(d.D * sizeof(float)), *scale = malloc(d.D * sizeof(float));
    tm.be->ops->download(tm.be, center, tm.m.center, d.D * sizeof(float), &err);
    tm.be->ops->download(tm.be, scale, tm.m.scale, d.D * sizeof(float), &err);
    lcm_st_writer *w = lcm_st_writer_new();
    int64_t xshape[3] = {B, T, d.D}, bshape[1] = {B}, dshape[1] = {d.D};
    lcm_st_add(w, "x", LCM_ST_F32, 3, xshape, tm.x, &err);
    lcm_st_add(w, "lens", LCM_ST_I32, 1, bshape, tm.lens, &err);
    lcm_st_add(w, "center", LCM_ST_F32, 1, dshape, center, &err);
    lcm_st_add(w, "scale", LCM_ST_F32, 1, dshape, scale, &err);
    char v[64];
#define META(k, fmt, val) (snprintf(v, sizeof v, fmt, val), lcm_st_add_meta(w, k, v, &err))
    META("num_heads", "%d", d.H);
    META("rope_theta", "%.9g", (double)d.rope_theta);
    META("norm_eps", "%.9g", (double)d.eps);
    META("dropout", "%.9g", (double)p);
    META("n_targets", "%lld", (long long)tm.n_targets);
    META("seed", "%llu", (unsigned long long)key.seed);
    META("step", "%u", key.step);
    META("microbatch", "%u", key.microbatch);
#undef META
    CHECK_OK(lcm_st_write(w, bpath, &err), &err);
    lcm_st_writer_free(w);

    char *run_ref[] = {(char *)py, "tools/torch_ref.py", "--weights", wpath, "--batch", bpath, "--out", opath, NULL};
    CHECKF(harness_run(run_ref, 0), "%s tools/torch_ref.py --weights %s --batch %s --out %s failed", py, wpath, bpath,
           opath);
    lcm_st_file ref;
    if (lcm_st_open(&ref, opath, &err) == 0) {
        /* fp32 on both sides, different summation orders: errors are ~1e-6 relative; 1e-4 leaves
         * room and still fails for any wrong sign, scale, pairing or mask (those are O(1) errors). */
        const lcm_st_tensor *lt = lcm_st_find(&ref, "loss");
        float ref_loss = 0;
        CHECK(lt && lcm_st_to_f32(lt, &ref_loss, &err) == 0);
        CHECKF(fabs(obj - ref_loss) <= 1e-4 * fabs(ref_loss), "loss %.9g vs torch %.9g", obj, (double)ref_loss);
        int compared = 0;
        for (int i = 0; i < tm.m.t.n; i++) {
            const lcm_param *prm = &tm.m.t.params[i];
            const lcm_st_tensor *rt = lcm_st_find(&ref, prm->name);
            CHECKF(rt && rt->numel == prm->numel, "torch has no gradient for %s", prm->name);
            if (!rt || rt->numel != prm->numel) continue;
            float *rg = malloc(prm->numel * sizeof(float));
            lcm_st_to_f32(rt, rg, &err);
            double rel = harness_rel_err(grads + prm->offset, rg, prm->numel);
            CHECKF(rel <= 1e-4, "%s: relative error %.3g", prm->name, rel);
            compared++;
            free(rg);
        }
        CHECK(compared == tm.m.t.n);
        lcm_st_close(&ref);
    } else {
        CHECKF(0, "reading torch's gradients: %s", err.msg);
    }
    free(center);
    free(scale);
    free(grads);
    tiny_free(&tm);
    lcm_rm_rf(dir, &err);
}

TEST(torch_parity_no_dropout) { run_parity(0.0f, 2); }
TEST(torch_parity_with_dropout) { run_parity(0.3f, 4); }
