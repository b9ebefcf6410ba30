/* test_loader.c: the training batch loader (src/train/loader.c) on its own. Two loaders over one plan
 * hand their workers exactly the micro-batches the plan gives for each global step, in order; a loader
 * stopped while its thread is producing ends cleanly. The second test is mostly for `make tsan`: the
 * stop used to be read by the loader thread outside its lock, a data race that only a stop in the middle
 * of a run (a signal, trainer.stop_at_step) could hit. */
#include "harness.h"
#include "lcm/backend.h"
#include "lcm/comm.h"
#include "lcm/synth.h"
#include "../src/train/train_internal.h"

typedef struct loader_fixture {
    lcm_config cfg;
    lcm_run run;
    lcm_backend *be;
} loader_fixture;

/* A tiny synthetic dataset and a run of `devices` CPU ranks, one micro-batch each per step. */
static int fixture_open(loader_fixture *f, int devices, int64_t max_steps, lcm_error *err) {
    memset(f, 0, sizeof *f);
    char dir[600], train[700], steps[64];
    snprintf(dir, sizeof dir, "%s/data", harness_tmpdir());
    snprintf(train, sizeof train, "%s/train.lcmd", dir);
    snprintf(steps, sizeof steps, "trainer.max_steps=%lld", (long long)max_steps);
    char *args[] = {"model.sonar_dim=16", "synth.dim=16", "synth.latent_dim=8", "synth.train_docs=60",
                    "synth.valid_docs=4", "synth.max_len=40", "synth.mean_len=12", "data.max_seq_len=16",
                    "data.max_tokens=96", "optim.warmup_steps=1", steps};
    LCM_TRY(lcm_config_load(&f->cfg, NULL, (int)(sizeof args / sizeof args[0]), args, err));
    LCM_TRY(lcm_synth_write(&f->cfg.synth, dir, NULL, NULL, err));
    lcm_run *run = &f->run;
    run->cfg = &f->cfg;
    run->n = run->local_n = devices;
    run->accum = 1;
    LCM_TRY(lcm_dims_from_config(&run->d, &f->cfg.model, err));
    LCM_TRY(lcm_split_open(&run->train, train, run->d.D, 0, &f->cfg, LCM_PLAN_TRAIN, err));
    run->max_tokens = f->cfg.data.max_tokens;
    run->max_rows = lcm_plan_max_rows(run->train.plan);
    LCM_TRY(lcm_group_create_local(&run->group, devices, err));
    return lcm_cpu_backend_create(&f->be, 0, err);
}

static void fixture_close(loader_fixture *f) {
    lcm_backend_destroy(f->be);
    if (f->run.group) lcm_group_destroy(f->run.group);
    lcm_split_close(&f->run.train);
}

TEST(loaders_hand_out_the_plans_micro_batches_step_by_step) {
    enum { DEVICES = 2, STEPS = 25 };
    loader_fixture f;
    lcm_error err = {0};
    if (fixture_open(&f, DEVICES, STEPS, &err) != 0) {
        CHECKF(0, "fixture: %s", err.msg);
        fixture_close(&f);
        return;
    }
    lcm_run *run = &f.run;
    lcm_loader ld[DEVICES];
    memset(ld, 0, sizeof ld);
    for (int r = 0; r < DEVICES; r++) CHECK_OK(lcm_loader_start(&ld[r], run, r, f.be, &err), &err);
    /* The expected batches, walked from the plan independently of the loaders. */
    lcm_cursor cur = run->start.cursor;
    lcm_microbatch mbs[DEVICES];
    const size_t cap = (size_t)DEVICES * (size_t)run->max_rows;
    lcm_row *rows = calloc(cap, sizeof *rows);
    const size_t xn = (size_t)run->max_tokens * (size_t)run->d.D;
    float *x = calloc(xn, sizeof *x);
    int32_t *lens = calloc((size_t)run->max_rows, sizeof *lens);
    uint64_t *docs = calloc((size_t)run->max_rows, sizeof *docs);
    int bad = 0;
    for (int64_t step = 1; step <= STEPS && !bad; step++) {
        CHECK_OK(lcm_plan_take(run->train.plan, &cur, DEVICES, mbs, rows, cap, &err), &err);
        int64_t targets = 0;
        for (int j = 0; j < DEVICES; j++) targets += mbs[j].n_targets;
        for (int r = 0; r < DEVICES && !bad; r++) {
            lcm_slot *s = NULL;
            CHECK_OK(lcm_loader_next(&ld[r], &s, &err), &err);
            if (!s) {
                bad = 1;
                break;
            }
            memset(x, 0, xn * sizeof *x);
            lcm_batch_fill(&run->train.ds, &mbs[r], f.cfg.data.append_eot, x, lens, docs);
            const size_t used = (size_t)mbs[r].n_rows * (size_t)mbs[r].max_len * (size_t)run->d.D;
            bad |= s->step != step || s->microbatch != (uint32_t)r || s->B != mbs[r].n_rows || s->T != mbs[r].max_len ||
                   s->step_targets != targets || s->cursor_after.epoch != cur.epoch ||
                   s->cursor_after.index != cur.index ||
                   memcmp(s->x, x, used * sizeof *x) != 0 ||
                   memcmp(s->lens, lens, (size_t)mbs[r].n_rows * sizeof *lens) != 0 ||
                   memcmp(s->docs, docs, (size_t)mbs[r].n_rows * sizeof *docs) != 0;
            if (bad) fprintf(stderr, "  rank %d, step %lld: the slot differs from the plan's micro-batch\n", r, (long long)step);
            lcm_loader_release(&ld[r], 1);
        }
    }
    CHECK(!bad);
    /* Past max_steps the loader has nothing more: it stops producing (next would wait for ever). */
    for (int r = 0; r < DEVICES; r++) {
        pthread_mutex_lock(&ld[r].mu);
        CHECK(ld[r].produced == STEPS && ld[r].consumed == STEPS);
        pthread_mutex_unlock(&ld[r].mu);
        lcm_loader_stop(&ld[r]);
        CHECK(ld[r].slots == NULL && !ld[r].started);
    }
    free(rows);
    free(x);
    free(lens);
    free(docs);
    fixture_close(&f);
}

TEST(loader_stopped_while_it_produces_ends_cleanly) {
    /* The worker takes a micro-batch, releases it, takes the next one (the loader has just produced it
     * and goes on to plan the step after) and stops the loader at once, as a worker does after a stop
     * request. Repeated so that the stop lands at different points of the loader's work. */
    loader_fixture f;
    lcm_error err = {0};
    if (fixture_open(&f, 1, 1000000, &err) != 0) {
        CHECKF(0, "fixture: %s", err.msg);
        fixture_close(&f);
        return;
    }
    int failures = 0;
    for (int i = 0; i < 1000 && !failures; i++) {
        lcm_loader ld;
        lcm_slot *s = NULL;
        failures += lcm_loader_start(&ld, &f.run, 0, f.be, &err) != 0;
        failures += lcm_loader_next(&ld, &s, &err) != 0 || !s || s->step != 1;
        lcm_loader_release(&ld, 1);
        failures += lcm_loader_next(&ld, &s, &err) != 0 || !s || s->step != 2;
        lcm_loader_stop(&ld);
        failures += ld.started || ld.slots != NULL;
    }
    CHECK(failures == 0);
    if (failures) fprintf(stderr, "  %s\n", err.msg);
    fixture_close(&f);
}


