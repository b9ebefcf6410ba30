/* test_nccl_shard.c: the collectives through NCCL, and trainer.shard on two or more GPUs. Without two
 * GPUs the two-GPU tests SKIP; the one-rank test runs on any GPU.
 *
 * - A one-rank communicator's all-reduce, reduce-scatter and all-gather: on a one-GPU machine the only
 *   collectives that run, so tools/gpu_check.sh requires this test to pass.
 * - ncclReduceScatter / ncclAllGather (the whole padded vector) and the grouped ncclReduce /
 *   ncclBroadcast (a bucket's range) against values worked out on the host. The data are small
 *   integers, whose fp32 sums are exact in any order, so the comparison is exact.
 * - trainer.shard 1 and 2 on GPUs 0,1 against shard 0 on the same GPUs, bit for bit in the weights and
 *   moments. With two ranks every gradient element is a + b in fp32 whichever collective sums it
 *   (addition is commutative), AdamW is elementwise, and the gradient norm's double sum is grouped
 *   by slice, as in tests/test_shard_train.c (whose comment gives the argument and its one caveat). */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "gpu_gate.h"
#include "lcm/backend.h"
#include "lcm/checkpoint.h"
#include "lcm/comm.h"
#include "lcm/log.h"
#include "lcm/synth.h"
#include "lcm/train.h"

#define MAX_GPUS 8

static int gpu_count(void) {
    lcm_error err = {0};
    return gpu_gate_count(&err);
}

typedef struct rank_job {
    lcm_group *g;
    int rank, n;
    size_t slice, total, begin, end;
    float *host_in;   /* [total]: rank r's input, then what the collectives left on the device */
    float *host_out;
    int rc;
    lcm_error err;
} rank_job;

/* Reduce-scatter [begin, end) in place, then all-gather the whole padded vector, on this rank's GPU. */
static void *rank_main(void *arg) {
    rank_job *j = arg;
    lcm_backend *be = NULL;
    lcm_device dev = {.is_gpu = 1, .index = j->rank};
    float *buf = NULL;
    lcm_comm *c = lcm_group_comm(j->g, j->rank);
    const size_t bytes = j->total * sizeof(float);
    j->rc = lcm_backend_for_device(&be, dev, &j->err);
    if (!j->rc) j->rc = be->ops->alloc(be, (void **)&buf, bytes, "test vector", &j->err);
    if (!j->rc) j->rc = be->ops->upload(be, buf, j->host_in, bytes, &j->err);
    if (!j->rc) j->rc = be->ops->sync(be, &j->err);
    if (!j->rc) {
        lcm_comm_bind_stream(c, be->ops->comm_stream(be));
        j->rc = c->ops->reduce_scatter(c, buf + j->begin, buf + (size_t)j->rank * j->slice, j->begin, j->end, j->slice,
                                       LCM_RED_F32, &j->err);
    }
    if (!j->rc) j->rc = c->ops->all_gather(c, buf, 0, j->total, j->slice, LCM_RED_F32, &j->err);
    if (!j->rc) be->ops->compute_wait_comm(be);
    if (!j->rc) j->rc = be->ops->download(be, j->host_out, buf, bytes, &j->err);
    if (!j->rc) j->rc = be->ops->sync(be, &j->err);
    if (buf) be->ops->release(be, buf);
    if (be) lcm_backend_destroy(be);
    return NULL;
}

/* Sums over one rank are the input itself, so the data must come back bit for bit (NaN-poisoned host
 * buffer first, so a download that never happened fails too), and the communicator must report no
 * asynchronous error. 4 MiB of fp32, above NCCL's small-message protocol. */
TEST(nccl_one_rank_collectives_run) {
    NEED_GPUS(1);
    const int gpus[1] = {0};
    lcm_group *g = NULL;
    lcm_error err = {0};
    CHECK_OK(lcm_group_create_nccl(&g, 1, gpus, &err), &err);
    if (!g) return;
    lcm_comm *c = lcm_group_comm(g, 0);
    const size_t n = (size_t)1 << 20, bytes = n * sizeof(float);
    float *in = malloc(bytes), *out = malloc(bytes), *buf = NULL;
    for (size_t i = 0; i < n; i++) in[i] = (float)((int)(i % 97) - 48), out[i] = NAN;
    lcm_backend *be = NULL;
    int rc = lcm_backend_for_device(&be, (lcm_device){.is_gpu = 1, .index = 0}, &err);
    if (!rc) rc = be->ops->alloc(be, (void **)&buf, bytes, "test vector", &err);
    if (!rc) rc = be->ops->upload(be, buf, in, bytes, &err);
    if (!rc) rc = be->ops->sync(be, &err);
    if (!rc) {
        lcm_comm_bind_stream(c, be->ops->comm_stream(be));
        rc = c->ops->allreduce(c, buf, n, LCM_RED_F32, &err);
    }
    if (!rc) rc = c->ops->reduce_scatter(c, buf, buf, 0, n, n, LCM_RED_F32, &err);
    if (!rc) rc = c->ops->all_gather(c, buf, 0, n, n, LCM_RED_F32, &err);
    if (!rc) be->ops->compute_wait_comm(be);
    if (!rc) rc = be->ops->download(be, out, buf, bytes, &err);
    if (!rc) rc = be->ops->sync(be, &err);
    if (!rc) rc = c->ops->check(c, &err);
    CHECKF(rc == 0, "%s", err.msg);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(&out[i], &in[i], sizeof(float)) != 0;
    CHECKF(rc != 0 || bad == 0, "%zu of %zu elements changed by one-rank collectives", bad, n);
    if (buf) be->ops->release(be, buf);
    lcm_backend_destroy(be);
    lcm_group_destroy(g);
    free(in);
    free(out);
}

TEST(nccl_reduce_scatter_and_all_gather_are_exact) {
    NEED_GPUS(2);
    int n = gpu_count();
    if (n > MAX_GPUS) n = MAX_GPUS;
    const size_t slice = 1024, total = slice * (size_t)n;
    /* The whole vector (ncclReduceScatter) and a bucket crossing slice boundaries (grouped ncclReduce). */
    const size_t ranges[][2] = {{0, total}, {slice / 2, total - slice / 3}};
    for (int ri = 0; ri < 2; ri++) {
        int gpus[MAX_GPUS];
        for (int r = 0; r < n; r++) gpus[r] = r;
        lcm_group *g = NULL;
        lcm_error err = {0};
        CHECK_OK(lcm_group_create_nccl(&g, n, gpus, &err), &err);
        if (!g) return;
        rank_job jobs[MAX_GPUS];
        pthread_t tids[MAX_GPUS];
        for (int r = 0; r < n; r++) {
            jobs[r] = (rank_job){.g = g, .rank = r, .n = n, .slice = slice, .total = total, .begin = ranges[ri][0],
                                 .end = ranges[ri][1]};
            jobs[r].host_in = malloc(total * sizeof(float));
            jobs[r].host_out = malloc(total * sizeof(float));
            for (size_t i = 0; i < total; i++) jobs[r].host_in[i] = (float)((int)(i % 97) - 48 + 3 * r);
        }
        for (int r = 0; r < n; r++) pthread_create(&tids[r], NULL, rank_main, &jobs[r]);
        for (int r = 0; r < n; r++) pthread_join(tids[r], NULL);
        int bad = 0;
        for (int r = 0; r < n; r++) {
            CHECKF(jobs[r].rc == 0, "rank %d: %s", r, jobs[r].err.msg);
            for (size_t i = 0; i < total; i++) {
                /* After the gather every rank holds the owner's element: the sum inside the range,
                 * the owner's own input outside it. */
                int owner = (int)(i / slice);
                float want = (float)((int)(i % 97) - 48 + 3 * owner);
                if (i >= ranges[ri][0] && i < ranges[ri][1]) {
                    want = 0;
                    for (int q = 0; q < n; q++) want += (float)((int)(i % 97) - 48 + 3 * q);
                }
                if (jobs[r].host_out[i] != want) bad++;
            }
        }
        CHECKF(bad == 0, "range %d: %d elements wrong", ri, bad);
        for (int r = 0; r < n; r++) free(jobs[r].host_in), free(jobs[r].host_out);
        lcm_group_destroy(g);
    }
}

static const char *data_dir(void) {
    static char dir[512];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s/data", harness_tmpdir());
    static lcm_config cfg;
    lcm_error err = {0};
    char *args[] = {"synth.dim=64", "synth.latent_dim=16", "synth.train_docs=200", "synth.valid_docs=20",
                    "synth.max_len=40", "synth.mean_len=20", "model.sonar_dim=64"};
    if (lcm_config_load(&cfg, NULL, 7, args, &err) != 0 || lcm_synth_write(&cfg.synth, dir, NULL, NULL, &err) != 0) {
        fprintf(stderr, "cannot synthesize the test data: %s\n", err.msg);
        exit(2);
    }
    return dir;
}

static int run(const char *out, int shard, float *w, float *m, float *v, lcm_error *err) {
    static lcm_config cfg;
    char o[700], tr[600], va[600], sh[64];
    snprintf(o, sizeof o, "trainer.output_dir=%s", out);
    snprintf(tr, sizeof tr, "data.train=%s/train.lcmd", data_dir());
    snprintf(va, sizeof va, "data.valid=%s/valid.lcmd", data_dir());
    snprintf(sh, sizeof sh, "trainer.shard=%d", shard);
    char *args[] = {"model.sonar_dim=64", "model.model_dim=128", "model.num_layers=2", "model.num_heads=4",
                    "model.ffn_inner_dim=256", "data.max_seq_len=32", "data.max_tokens=512",
                    "trainer.max_steps=10", "trainer.log_every=1", "trainer.validate_every=0",
                    "trainer.checkpoint_every=0", "trainer.plot=false", "optim.warmup_steps=2", "optim.lr=2e-3",
                    "optim.grad_clip=0.05", "trainer.devices=0,1", o, tr, va, sh};
    LCM_TRY(lcm_config_load(&cfg, NULL, (int)(sizeof args / sizeof args[0]), args, err));
    lcm_train_summary sum;
    LCM_TRY(lcm_train(&cfg, &sum, err));
    char dir[1200];
    int found = 0;
    LCM_TRY(lcm_checkpoint_latest(out, dir, sizeof dir, &found, err));
    if (!found) return lcm_fail(err, LCM_ERR_IO, "no checkpoint in %s", out);
    lcm_dims d;
    lcm_param_table t;
    LCM_TRY(lcm_dims_from_config(&d, &cfg.model, err));
    LCM_TRY(lcm_param_table_build(&t, &d, err));
    lcm_normalizer norm = {0};
    lcm_train_state ts;
    int rc = lcm_checkpoint_load(dir, &t, w, m, v, &norm, &ts, err);
    lcm_normalizer_free(&norm);
    lcm_param_table_free(&t);
    return rc;
}

TEST(sharded_training_on_two_gpus_equals_replicated) {
    NEED_GPUS(2);
    lcm_log_set_quiet(1);
    const size_t cap = 1 << 20; /* far above this model's parameter count */
    float *st[3][3];
    for (int s = 0; s < 3; s++)
        for (int k = 0; k < 3; k++) st[s][k] = calloc(cap, sizeof(float));
    const char *root = harness_tmpdir();
    for (int s = 0; s < 3; s++) {
        char out[600];
        snprintf(out, sizeof out, "%s/shard%d", root, s);
        lcm_error err = {0};
        CHECK_OK(run(out, s, st[s][0], st[s][1], st[s][2], &err), &err);
    }
    const char *what[] = {"weights", "first moments", "second moments"};
    for (int s = 1; s < 3; s++)
        for (int k = 0; k < 3; k++)
            CHECKF(memcmp(st[s][k], st[0][k], cap * sizeof(float)) == 0, "shard=%d: %s differ from shard=0", s,
                   what[k]);
    for (int s = 0; s < 3; s++)
        for (int k = 0; k < 3; k++) free(st[s][k]);
}
