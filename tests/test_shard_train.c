/* test_shard_train.c: trainer.shard end to end on CPU worker threads (tiny model, tiny synthetic
 * dataset, a few steps): sharded runs against the replicated run of the same devices, bit for bit in
 * the weights and both AdamW moments; checkpoints of a shard=2 run on 4 devices resumed with the
 * same settings and on 1, 2 or 3 devices at another shard level; bad values; what a sharded model
 * allocates.
 *
 * Why bit for bit, not a tolerance. The gradient sums are the local all-reduce's rank-order sums in
 * both (reduce-scatter writes exactly those sums to the owner), AdamW is elementwise, and the
 * all-gather copies. The one computation grouped differently is the gradient norm: the replicated run
 * sums the squares of all P gradients in double, the sharded run sums each slice's and then adds the
 * N partial sums. The squares of floats are exact in double and every partial sum of P < 2^20 of them
 * is within P * 2^-53 < 1.2e-10 relative of the exact sum, so the two norms agree to about 1e-10; the
 * clipping factor is then rounded to float (spacing 6e-8 relative), which takes the same value
 * unless the exact factor lies within 1e-10 of a rounding boundary: with clipping active at all 8
 * steps that is a chance of about 8 x 2 x 1e-10 / 6e-8 ~ 3e-2 for some data, and for THIS data (fixed
 * seeds: the test is deterministic) it does not happen. Should a change of the data make it happen,
 * the difference is one float ulp of the clip factor, and these tests would need the tolerance of
 * test_train.c's data-parallel test instead. */
#include <sys/stat.h>

#include "harness.h"
#include "lcm/checkpoint.h"
#include "lcm/log.h"
#include "lcm/model.h"
#include "lcm/shard.h"
#include "lcm/synth.h"
#include "lcm/train.h"

/* Clipping at 0.05 is active at every step of this model (its gradient norms are ~8 to 14), so the
 * norm from the slices decides every update. */
static int tiny_config(lcm_config *cfg, const char *out_dir, const char *data_dir, int n_extra, const char **extra,
                       lcm_error *err) {
    char out[600], train[600], valid[600];
    snprintf(out, sizeof out, "trainer.output_dir=%s", out_dir);
    snprintf(train, sizeof train, "data.train=%s/train.lcmd", data_dir);
    snprintf(valid, sizeof valid, "data.valid=%s/valid.lcmd", data_dir);
    const char *base[] = {"model.sonar_dim=16", "synth.dim=16", "synth.latent_dim=8", "model.model_dim=16",
                          "model.num_layers=2", "model.num_heads=2", "model.ffn_inner_dim=32", "model.dropout=0.1",
                          "synth.train_docs=80", "synth.valid_docs=12", "synth.max_len=40", "synth.mean_len=12",
                          "data.max_seq_len=16", "data.max_tokens=96", "trainer.max_steps=8", "trainer.log_every=1",
                          "trainer.validate_every=0", "trainer.checkpoint_every=0", "trainer.plot=false",
                          "optim.warmup_steps=2", "optim.lr=3e-3", "optim.grad_clip=0.05", "trainer.devices=cpu", out,
                          train, valid};
    char *args[64];
    int n = 0;
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) args[n++] = (char *)base[i];
    for (int i = 0; i < n_extra; i++) args[n++] = (char *)extra[i];
    return lcm_config_load(cfg, NULL, n, args, err);
}

static const char *data_dir(void) {
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

/* The newest checkpoint's full state: weights and both moments, [P] each. */
typedef struct state {
    float *w, *m, *v;
    size_t n;
    int64_t step;
} state;

static void state_free(state *s) {
    free(s->w), free(s->m), free(s->v);
    memset(s, 0, sizeof *s);
}

static int load_state(const char *dir, const lcm_config *cfg, state *s, lcm_error *err) {
    lcm_dims d;
    lcm_param_table t;
    memset(s, 0, sizeof *s);
    if (lcm_dims_from_config(&d, &cfg->model, err) || lcm_param_table_build(&t, &d, err)) return 1;
    s->n = t.total;
    s->w = malloc(t.total * sizeof(float));
    s->m = malloc(t.total * sizeof(float));
    s->v = malloc(t.total * sizeof(float));
    lcm_normalizer norm = {0};
    lcm_train_state ts;
    int rc = lcm_checkpoint_load(dir, &t, s->w, s->m, s->v, &norm, &ts, err);
    s->step = ts.step;
    lcm_normalizer_free(&norm);
    lcm_param_table_free(&t);
    return rc;
}

/* Train (or resume) in out_dir; the state of its newest checkpoint. */
static state train_state(const char *out_dir, int n_extra, const char **extra, lcm_train_summary *sum) {
    static lcm_config cfg;
    lcm_error err = {0};
    state s = {0};
    CHECK_OK(tiny_config(&cfg, out_dir, data_dir(), n_extra, extra, &err), &err);
    CHECK_OK(lcm_train(&cfg, sum, &err), &err);
    char dir[1200];
    int found = 0;
    CHECK_OK(lcm_checkpoint_latest(out_dir, dir, sizeof dir, &found, &err), &err);
    CHECKF(found, "no checkpoint in %s", out_dir);
    if (found) CHECK_OK(load_state(dir, &cfg, &s, &err), &err);
    return s;
}

static int same_bits(const state *a, const state *b) {
    return a->n == b->n && a->w && b->w && memcmp(a->w, b->w, a->n * sizeof(float)) == 0 &&
           memcmp(a->m, b->m, a->n * sizeof(float)) == 0 && memcmp(a->v, b->v, a->n * sizeof(float)) == 0;
}

static void expect_same(const state *got, const state *want, const char *what) {
    CHECKF(same_bits(got, want), "%s: weights or moments differ from the replicated run (weights %.3g relative)",
           what, got->w && want->w && got->n == want->n ? harness_rel_err(got->w, want->w, got->n) : -1.0);
}

TEST(sharded_runs_equal_the_replicated_run_bit_for_bit) {
    lcm_log_set_quiet(1);
    const char *root = harness_tmpdir();
    /* cpu:2 with 2 micro-batches covers the full gradient kept between micro-batches; one micro-batch
     * per step, shard 2's gradient window (one bucket at a time into the slice); bf16 both of these
     * with the reduce-scatter of bf16 gradients. */
    const char *setups[][3] = {{"trainer.devices=cpu:2", "trainer.grad_accum=2", "trainer.grad_reduce_dtype=f32"},
                               {"trainer.devices=cpu:4", "trainer.grad_accum=1", "trainer.grad_reduce_dtype=f32"},
                               {"trainer.devices=cpu:2", "trainer.grad_accum=2", "trainer.grad_reduce_dtype=bf16"},
                               {"trainer.devices=cpu:3", "trainer.grad_accum=1", "trainer.grad_reduce_dtype=bf16"}};
    for (size_t si = 0; si < sizeof setups / sizeof setups[0]; si++) {
        state ref = {0};
        for (int shard = 0; shard <= 2; shard++) {
            char out[600], key[32];
            snprintf(out, sizeof out, "%s/eq%zu_s%d", root, si, shard);
            snprintf(key, sizeof key, "trainer.shard=%d", shard);
            const char *args[] = {setups[si][0], setups[si][1], setups[si][2], key};
            lcm_train_summary sum;
            state s = train_state(out, 4, args, &sum);
            CHECK(sum.final_step == 8);
            if (shard == 0) {
                ref = s;
                continue;
            }
            char what[160];
            snprintf(what, sizeof what, "%s %s %s shard=%d", setups[si][0], setups[si][1], setups[si][2], shard);
            expect_same(&s, &ref, what);
            state_free(&s);
        }
        /* The comparison can fail: a run with another learning rate differs in every tensor. */
        if (si == 0) {
            char out[600];
            snprintf(out, sizeof out, "%s/eq_other", root);
            const char *args[] = {setups[0][0], setups[0][1], "optim.lr=2e-3", "trainer.shard=2"};
            lcm_train_summary sum;
            state o = train_state(out, 4, args, &sum);
            CHECK(!same_bits(&o, &ref));
            state_free(&o);
        }
        state_free(&ref);
    }
}

/* Resume from `ckpt` into a fresh run directory. */
static state resume_from(const char *out, const char *ckpt, const char *devices, const char *accum, int shard) {
    char resume[1300], key[32];
    snprintf(resume, sizeof resume, "trainer.resume=%s", ckpt);
    snprintf(key, sizeof key, "trainer.shard=%d", shard);
    const char *args[] = {devices, accum, key, resume};
    lcm_train_summary sum;
    state s = train_state(out, 4, args, &sum);
    CHECKF(sum.final_step == 8 && sum.steps_done == 4, "%s shard=%d: steps %lld..%lld", devices, shard,
           (long long)(sum.final_step - sum.steps_done), (long long)sum.final_step);
    return s;
}

TEST(shard2_checkpoint_on_4_devices_resumes_exactly_and_anywhere) {
    lcm_log_set_quiet(1);
    const char *root = harness_tmpdir();
    char half[600], straight[600], ckpt[1200];
    snprintf(half, sizeof half, "%s/r_half", root);
    snprintf(straight, sizeof straight, "%s/r_straight", root);
    const char *run4[] = {"trainer.devices=cpu:4", "trainer.grad_accum=1", "trainer.shard=2", "trainer.stop_at_step=4"};
    lcm_train_summary sum;
    state h = train_state(half, 4, run4, &sum);
    CHECK(sum.final_step == 4 && sum.interrupted && h.step == 4);
    state_free(&h);
    lcm_error err = {0};
    int found = 0;
    CHECK_OK(lcm_checkpoint_latest(half, ckpt, sizeof ckpt, &found, &err), &err);
    if (!found) return;

    /* Same settings: bit-exact against the uninterrupted run. */
    const char *run4_full[] = {"trainer.devices=cpu:4", "trainer.grad_accum=1", "trainer.shard=2"};
    state st = train_state(straight, 3, run4_full, &sum);
    char out[600];
    snprintf(out, sizeof out, "%s/r_same", root);
    state same = resume_from(out, ckpt, "trainer.devices=cpu:4", "trainer.grad_accum=1", 2);
    CHECKF(same_bits(&same, &st), "shard=2 on 4 devices resumed differs from the uninterrupted run");
    state_free(&same);
    state_free(&st);

    /* Other device counts and shard levels: the replicated run resumed from the same checkpoint on
     * the same devices is the reference. */
    struct { const char *dev, *accum; int shard; } other[] = {{"trainer.devices=cpu:1", "trainer.grad_accum=4", 0},
                                                              {"trainer.devices=cpu:2", "trainer.grad_accum=2", 1},
                                                              {"trainer.devices=cpu:3", "trainer.grad_accum=1", 2}};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        char a[600], b[600];
        snprintf(a, sizeof a, "%s/r_other%zu", root, i);
        snprintf(b, sizeof b, "%s/r_other%zu_ref", root, i);
        state got = resume_from(a, ckpt, other[i].dev, other[i].accum, other[i].shard);
        state ref = resume_from(b, ckpt, other[i].dev, other[i].accum, 0);
        char what[160];
        snprintf(what, sizeof what, "resumed on %s shard=%d", other[i].dev, other[i].shard);
        expect_same(&got, &ref, what);
        state_free(&got);
        state_free(&ref);
    }
}

TEST(shard_needs_two_devices_and_a_known_level) {
    lcm_log_set_quiet(1);
    static lcm_config cfg;
    lcm_error err = {0};
    char out[600];
    snprintf(out, sizeof out, "%s/bad", harness_tmpdir());
    const char *one[] = {"trainer.devices=cpu:1", "trainer.shard=2"};
    CHECK_OK(tiny_config(&cfg, out, data_dir(), 2, one, &err), &err);
    lcm_train_summary sum;
    CHECK(lcm_train(&cfg, &sum, &err) == LCM_ERR_CONFIG);
    CHECKF(strstr(err.msg, "trainer.shard=2") && strstr(err.msg, "one device") && strstr(err.msg, "trainer.shard=0"),
           "%s", err.msg);
    const char *bad[][1] = {{"trainer.shard=3"}, {"trainer.shard=-1"}, {"trainer.shard=full"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        CHECKF(tiny_config(&cfg, out, data_dir(), 1, bad[i], &err) == LCM_ERR_CONFIG && strstr(err.msg, "trainer.shard"),
               "%s: %s", bad[i][0], err.msg);
    }
}

/* The allocations shrink: a sharded model allocates moments for its slice only, and the windowed one
 * (shard 2, one micro-batch) a gradient window of the largest bucket plus the slice instead of the
 * full gradient; lcm_model_device_bytes (what lcm bench prints) counts exactly those blocks. */
TEST(sharded_models_allocate_their_slice) {
    lcm_backend *be = NULL;
    lcm_error err = {0};
    CHECK_OK(lcm_cpu_backend_create(&be, 0, &err), &err);
    if (!be) return;
    lcm_dims d = {.D = 16, .C = 16, .L = 2, .H = 2, .F = 32, .max_seq_len = 16, .rope_theta = 10000, .eps = 1e-5f};
    lcm_model full, s1, s2;
    CHECK_OK(lcm_model_create(&full, be, &d, 96, 8, 16, 1, &err), &err);
    CHECK_OK(lcm_model_create_shard(&s1, be, &d, 96, 8, 16, 4, 1, 0, &err), &err);
    CHECK_OK(lcm_model_create_shard(&s2, be, &d, 96, 8, 16, 4, 1, 1, &err), &err);
    const size_t P = full.t.total;
    lcm_shard sh = lcm_shard_of(P, 4, 1, LCM_SHARD_ALIGN);
    CHECK(s1.opt_begin == sh.begin && s1.opt_end == sh.end && sh.end > sh.begin && sh.end - sh.begin < P);
    /* The largest bucket is a layer: gain C + qkv 3C x C + 3C + out C x C + C + gain C + gate|inner
     * 2F x C + 2F + down C x F + C = 16 + 768 + 48 + 256 + 16 + 16 + 1024 + 64 + 512 + 16 = 2736 (every
     * group a multiple of 16 already); the postnet bucket is 288, the prenet's 272. */
    CHECKF(s2.grad_window == 2736, "window %zu", s2.grad_window);
    CHECK(s1.grad_window == 0 && s1.grad_slice == NULL && s2.grad_slice != NULL);
    const size_t f = sizeof(float), slice = sh.end - sh.begin;
    CHECK(lcm_model_device_bytes(&full) == 4 * P * f);
    CHECK(lcm_model_device_bytes(&s1) == 2 * P * f + 2 * slice * f);
    CHECK(lcm_model_device_bytes(&s2) == P * f + s2.grad_window * f + 3 * slice * f);
    lcm_model_destroy(&full);
    lcm_model_destroy(&s1);
    lcm_model_destroy(&s2);
    lcm_backend_destroy(be);
}

/* The CUDA backend's bf16 compute copy carries every weight, so a sharded model there holds the fp32
 * master weights of its slice only (its AdamW updates nothing else); the CPU backend computes on the
 * master copy, which stays whole. The plan is the model's own carve (lcm_model_plan), so this is
 * also what `lcm plan --backend cuda` shows. */
TEST(sharded_cuda_models_hold_the_master_slice_only) {
    lcm_error err = {0};
    lcm_dims d = {.D = 16, .C = 16, .L = 2, .H = 2, .F = 32, .max_seq_len = 16, .rope_theta = 10000, .eps = 1e-5f};
    const size_t f = sizeof(float);
    for (int n = 2; n <= 4; n++) {
        for (int rank = 0; rank < n; rank++) {
            lcm_model_shape s = {d, 96, 8, 16, 1, LCM_RECOMPUTE_NONE, n, rank, 0};
            lcm_model_bytes cuda, cpu;
            CHECK_OK(lcm_model_plan(&s, &lcm_cuda_traits, &cuda, &err), &err);
            CHECK_OK(lcm_model_plan(&s, &lcm_cpu_traits, &cpu, &err), &err);
            const size_t P = cuda.params;
            lcm_shard sh = lcm_shard_of(P, n, rank, LCM_SHARD_ALIGN);
            CHECKF(cuda.master == (sh.end - sh.begin) * f, "n %d rank %d: master %zu, slice %zu", n, rank, cuda.master,
                   sh.end - sh.begin);
            CHECK(cuda.master == cuda.moments / 2 && cuda.compute == P * 2);
            CHECK(cpu.master == P * f && cpu.compute == 0);
        }
    }
    /* unsharded: whole on both */
    lcm_model_shape s = {d, 96, 8, 16, 1, LCM_RECOMPUTE_NONE, 0, 0, 0};
    lcm_model_bytes cuda;
    CHECK_OK(lcm_model_plan(&s, &lcm_cuda_traits, &cuda, &err), &err);
    CHECK(cuda.master == cuda.params * f);
}
