/* bench.c: `lcm bench`: the training step's speed and memory on the configured devices, measured on
 * random full-length rows (no dataset, no checkpoints) through the same worker and step code as
 * training: the benchmark is a worker loop (lcm_worker_loop) of its own. FLOPs per concept are
 * lcm_model_flops_per_concept (documented in docs/performance.md). */
#include <stdlib.h>
#include <string.h>

#include "lcm/log.h"
#include "lcm/memplan.h"
#include "train_internal.h"

/* The worker's part: grad_accum slots of random rows, filled once. */
static int bench_prepare(lcm_worker *w, lcm_error *err) {
    lcm_run *run = w->run;
    lcm_slot *slots = calloc((size_t)run->accum, sizeof *slots);
    if (!slots) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    w->loop_state = slots;
    for (int a = 0; a < run->accum; a++)
        LCM_TRY(lcm_slot_alloc(&slots[a], w->be, run->max_tokens, run->max_rows, run->d.D, err));
    return 0;
}

/* Full-length random rows, warm-up steps, then timed steps through the training step. */
static int bench_loop(lcm_worker *w, lcm_error *err) {
    lcm_run *run = w->run;
    const lcm_config *cfg = run->cfg;
    const int A = run->accum, B = run->max_rows, T = run->max_T, D = run->d.D;
    lcm_slot *slots[64];
    if (A > 64) return lcm_fail(err, LCM_ERR_CONFIG, "lcm bench supports trainer.grad_accum <= 64");
    const double per_mb_concepts = (double)B * T;
    lcm_rng rng;
    lcm_rng_init(&rng, cfg->trainer.seed, 1000 + (uint64_t)w->rank);
    for (int a = 0; a < A; a++) {
        lcm_slot *s = slots[a] = (lcm_slot *)w->loop_state + a;
        for (size_t i = 0; i < (size_t)B * T * D; i++) s->x[i] = 2.0f * lcm_rng_uniform(&rng) - 1.0f;
        for (int b = 0; b < B; b++) s->lens[b] = T;
        s->B = B;
        s->T = T;
        s->microbatch = (uint32_t)(w->rank * A + a);
        s->step_targets = (int64_t)run->n * A * B * (T - 1);
        s->step_concepts = (int64_t)(run->n * A * per_mb_concepts);
        s->step_flops = run->n * A * per_mb_concepts * lcm_model_flops_per_concept(&run->d, T);
    }
    const int warmup = cfg->bench.warmup_steps, steps = cfg->bench.steps;
    double t0 = 0;
    for (int i = 1; i <= warmup + steps; i++) {
        if (i == warmup + 1) {
            LCM_TRY(lcm_comm_barrier(w->comm, err));
            t0 = lcm_now();
        }
        for (int a = 0; a < A; a++) slots[a]->step = i;
        lcm_step_result r;
        LCM_TRY(lcm_worker_step(w, slots, &r, err));
    }
    const double dt = (lcm_now() - t0) / steps;
    if (w->rank == 0) {
        lcm_bench_result *o = run->loop_out;
        o->B = B;
        o->T = T;
        o->accum = A;
        o->step_s = dt;
        o->concepts_per_s = slots[0]->step_concepts / dt;
        o->tflops = slots[0]->step_flops / dt / 1e12;
        o->flops_per_concept = lcm_model_flops_per_concept(&run->d, T);
        o->params = w->model.t.count;
        o->model_gb = (double)lcm_model_device_bytes(&w->model) / 1e9;
        o->peak_tflops = run->peak_tflops;
        o->mfu = run->peak_tflops > 0 ? o->tflops / (run->n * run->peak_tflops) : -1;
        size_t free_b = 0, total_b = 0;
        w->be->ops->mem_info(w->be, &free_b, &total_b);
        o->mem_gb = w->dev.is_gpu ? (double)(total_b - free_b) / 1e9 : -1;
    }
    return 0;
}

static void bench_release(lcm_worker *w) {
    lcm_slot *slots = w->loop_state;
    for (int a = 0; slots && a < w->run->accum; a++) lcm_slot_free(&slots[a], w->be);
    free(slots);
    w->loop_state = NULL;
}

static const lcm_worker_loop bench_loop_ops = {bench_prepare, bench_loop, bench_release};

int lcm_bench(const lcm_config *cfg, lcm_bench_result *out, lcm_error *err) {
    memset(out, 0, sizeof *out);
    lcm_train_summary sum;
    memset(&sum, 0, sizeof sum);
    lcm_run run_storage, *run = &run_storage;
    memset(run, 0, sizeof *run);
    run->cfg = cfg;
    run->sum = &sum;
    run->loop = &bench_loop_ops;
    run->loop_out = out;
    run->on_stack = 1;
    run->accum = cfg->trainer.grad_accum;
    run->max_T = cfg->data.max_seq_len;
    run->max_tokens = cfg->data.max_tokens;
    run->max_rows = (int)(cfg->data.max_tokens / cfg->data.max_seq_len);
    int rc = lcm_dims_from_config(&run->d, &cfg->model, err);
    if (!rc && cfg->bench.steps < 1) rc = lcm_fail(err, LCM_ERR_CONFIG, "bench.steps must be at least 1");
    if (!rc) rc = lcm_normalizer_identity(&run->norm, run->d.D, err);
    if (!rc) rc = lcm_resolve_devices(cfg->trainer.devices, run->dev, &run->n, err);
    run->local_n = run->n; /* one process */
    if (!rc) rc = lcm_step_accum(cfg, run->n, &run->accum, err);
    lcm_param_table t;
    if (!rc) rc = lcm_param_table_build(&t, &run->d, err);
    if (!rc) {
        run->init_master = malloc(t.total * sizeof(float));
        if (!run->init_master) rc = lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for %zu parameters", t.total);
        else lcm_params_init(&t, run->init_master, cfg->trainer.seed);
        lcm_param_table_free(&t);
    }
    if (!rc) rc = lcm_run_make_group(run, err);
    if (!rc) {
        out->devices = run->n;
        out->is_gpu = run->dev[0].is_gpu;
        if (out->is_gpu) lcm_cuda_device_name(run->dev[0].index, out->device_name, sizeof out->device_name, err);
        else snprintf(out->device_name, sizeof out->device_name, "CPU (%d cores)", lcm_cpu_count());
        rc = lcm_run_workers(run, err);
    }
    lcm_run_free(run);
    return rc;
}
