/* worker.c: one worker thread per device. It builds its backend and model (every allocation happens
 * before the first collective), then runs the steps: its share of the global step's micro-batches
 * through forward, loss and backward, gradient all-reduce in buckets while backward runs, the global
 * norm and clipping, AdamW, and on rank 0 the metrics, validation and checkpoints.
 *
 * Sharded (trainer.shard >= 1, include/lcm/shard.h): each rank holds the AdamW moments of its slice
 * only and updates only that slice of the master weights (which, where a separate compute copy carries
 * the weights, i.e. on CUDA, is all of the master copy it holds: lcm_model_master_at); the buckets are all-reduced (shard 1) or
 * reduce-scattered so that only the owner's elements are summed (shard 2); the gradient norm is the
 * rank-order sum of the slices' sums of squares (in the host all-reduce the step does anyway); after
 * AdamW the compute weights are all-gathered. The step's numbers are those of the replicated run: the
 * sums are the same rank-order sums, AdamW is elementwise, and only the norm's double-precision sum
 * is grouped differently (see tests/test_shard_train.c). Shard 2 with one micro-batch per step keeps
 * no full gradient: the model computes each bucket in a window of one bucket's size, which is
 * reduce-scattered into this rank's gradient slice before the next bucket takes the window. With
 * grad_accum > 1 the full fp32 gradient stays on every rank between micro-batches: the backward
 * accumulates into it (+=), and reducing after each micro-batch instead would change the order of the
 * additions and so the bits.
 *
 * Every worker takes the same decisions from the same numbers: the global target count comes from
 * the shared plan (and is checked against an all-reduce of the local counts), the gradient norm is
 * computed from the all-reduced gradients (identical on every rank), and rank 0's stop request (a
 * signal, to any process) travels in the same host all-reduce as the loss, so all ranks stop after the same
 * step. Across processes (include/lcm/mpi.h) rank 0 is in process 0, which alone writes. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lcm/gpumon.h"
#include "lcm/log.h"
#include "lcm/sbuf.h"
#include "train_internal.h"

/* ---- waiting for the device without hanging on a dead peer ----------------------------------- */

/* Poll instead of blocking: NCCL has no timeout, so a dead or hung peer would otherwise block this
 * thread forever. The poll notices the communicator's asynchronous error, an abort by another worker,
 * and a wait longer than trainer.hang_timeout_s (then the group is aborted, which aborts NCCL). */
static int wait_device(lcm_worker *w, lcm_error *err) {
    const double limit = (double)w->run->cfg->trainer.hang_timeout_s;
    double t0 = 0;
    for (long spins = 0;; spins++) {
        int q = w->be->ops->query(w->be, err);
        if (q < 0) return err->code ? (int)err->code : LCM_ERR_DEVICE;
        if (q == 1) return 0;
        if (w->comm->ops->check(w->comm, err) != 0) return (int)err->code;
        if (lcm_group_aborted(w->run->group))
            return lcm_fail(err, LCM_ERR_INTERRUPTED, "stopped: %s", lcm_group_abort_reason(w->run->group)->msg);
        if (spins == 100) t0 = lcm_now();
        if (spins > 100) {
            struct timespec ts = {0, 50 * 1000};
            nanosleep(&ts, NULL);
            if (limit > 0 && spins % 1000 == 0 && lcm_now() - t0 > limit)
                return lcm_fail(err, LCM_ERR_DEVICE,
                                "%s %d waited %.0f s for step %" PRId64 " to finish on the device: a GPU or a peer is "
                                "hung (trainer.hang_timeout_s); the last checkpoint is intact",
                                w->dev.is_gpu ? "GPU" : "CPU worker", w->dev.index, lcm_now() - t0, w->state.step + 1);
        }
    }
}

/* ---- gradient buckets ------------------------------------------------------------------------- */

static int reduce_bucket(void *ctx, size_t begin, size_t end, lcm_error *err) {
    lcm_worker *w = ctx;
    if (w->run->n == 1 || end == begin) return 0;
    lcm_backend *be = w->be;
    const int scatter = w->run->cfg->trainer.shard == 2;
    const size_t n = end - begin, lo = w->shard.begin;
    /* Windowed: the model's gradients hold this bucket only, and the sums go to this rank's slice. */
    const int windowed = w->model.grad_window > 0;
    float *g = windowed ? w->model.grads : w->model.grads + begin;
    int rc;
    if (w->grad_bf16) {
        uint16_t *send = windowed ? w->grad_bf16 : w->grad_bf16 + begin;
        be->ops->f32_to_bf16(be, send, g, n);
        be->ops->comm_wait_compute(be);
        lcm_worker_beat(w, LCM_PHASE_COLLECTIVE);
        uint16_t *recv = windowed ? w->grad_bf16 + w->model.grad_window : w->grad_bf16 + lo;
        rc = scatter ? w->comm->ops->reduce_scatter(w->comm, send, recv, begin, end, w->shard.slice, LCM_RED_BF16, err)
                     : w->comm->ops->allreduce(w->comm, send, n, LCM_RED_BF16, err);
    } else {
        be->ops->comm_wait_compute(be);
        lcm_worker_beat(w, LCM_PHASE_COLLECTIVE);
        float *recv = windowed ? w->model.grad_slice : w->model.grads + lo;
        rc = scatter ? w->comm->ops->reduce_scatter(w->comm, g, recv, begin, end, w->shard.slice, LCM_RED_F32, err)
                     : w->comm->ops->allreduce(w->comm, g, n, LCM_RED_F32, err);
    }
    lcm_worker_beat(w, LCM_PHASE_BACKWARD);
    return rc;
}

/* ---- one step --------------------------------------------------------------------------------- */

static int64_t slot_targets(const lcm_slot *s) {
    int64_t n = 0;
    for (int b = 0; b < s->B; b++) n += s->lens[b] - 1;
    return n;
}

int lcm_worker_step(lcm_worker *w, lcm_slot **slots, lcm_step_result *res, lcm_error *err) {
    lcm_run *run = w->run;
    const lcm_config *cfg = run->cfg;
    lcm_backend *be = w->be;
    lcm_model *m = &w->model;
    const int A = run->accum;
    const int64_t step = slots[0]->step;
    const float p = run->d.dropout;

    const int sharded = cfg->trainer.shard > 0;
    /* The elements this rank updates: its slice, or all of them. */
    const size_t lo = sharded ? w->shard.begin : 0, hi = sharded ? w->shard.end : m->t.total;

    /* Windowed (shard 2, one micro-batch): the backward zeroes each bucket's window itself; the slice
     * is zeroed in case a bucket boundary leaves a padding element out of every bucket. Otherwise the
     * first micro-batch's backward assigns the gradients: no zeroing pass (the padding between tensors
     * is zero from the allocation and nothing writes it). */
    const int windowed = m->grad_window > 0;
    float *gs = windowed ? w->model.grad_slice : m->grads + lo; /* the gradients of this rank's elements */
    if (windowed) {
        if (hi > lo) be->ops->zero(be, w->model.grad_slice, (hi - lo) * sizeof(float));
        if (w->grad_bf16) be->ops->zero(be, w->grad_bf16 + m->grad_window, w->shard.slice * sizeof(uint16_t));
    }
    double local[4] = {0, 0, 0, 0};
    for (int a = 0; a < A; a++) {
        lcm_slot *s = slots[a];
        lcm_dropout_key key = {.seed = cfg->trainer.seed, .step = (uint32_t)step, .microbatch = s->microbatch};
        lcm_worker_beat(w, LCM_PHASE_FORWARD);
        LCM_TRY(lcm_model_upload_batch(m, s->x, s->lens, s->B, s->T, err));
        /* The last step's weight all-gather ran on the comm stream alongside the gradient zeroing and
         * this upload; the forward must see its result. */
        if (sharded && a == 0) be->ops->compute_wait_comm(be);
        lcm_model_forward(m, s->B, s->T, p, key);
        lcm_model_loss(m, s->B, s->T, 1.0f / (float)s->step_targets);
        lcm_worker_beat(w, LCM_PHASE_BACKWARD);
        LCM_TRY(lcm_model_backward(m, s->B, s->T, p, key, a > 0, a == A - 1 ? reduce_bucket : NULL, w, err));
        LCM_TRY(wait_device(w, err));
        float loss = 0;
        LCM_TRY(be->ops->download(be, &loss, m->loss, sizeof loss, err));
        local[0] += loss;
        local[1] += (double)slot_targets(s);
    }
    if (run->n > 1) be->ops->compute_wait_comm(be);
    LCM_TRY(wait_device(w, err));
    /* Sharded: the slices' sums of squares travel in the host all-reduce below, summed in rank order,
     * so every rank gets the same norm. The bf16 reduction's conversion back to fp32 computes the sum
     * of squares in the same pass. */
    double sumsq = 0;
    if (hi > lo && run->n > 1 && w->grad_bf16)
        LCM_TRY(be->ops->bf16_to_f32_sumsq(be, gs, windowed ? w->grad_bf16 + m->grad_window : w->grad_bf16 + lo,
                                           hi - lo, &sumsq, err));
    else if (hi > lo)
        LCM_TRY(be->ops->sumsq(be, &sumsq, gs, hi - lo, err));
    /* A signal to any process (each has its own flag) stops every rank after this step. */
    local[2] = lcm_stop_requested() ? 1 : 0;
    if (cfg->trainer.stop_at_step > 0 && step >= cfg->trainer.stop_at_step) local[2] = 1; /* every rank: same */
    local[3] = sumsq;
    lcm_worker_beat(w, LCM_PHASE_COLLECTIVE);
    LCM_TRY(lcm_comm_sum_f64(w->comm, local, 4, err));
    if (sharded) sumsq = local[3];
    if ((int64_t)local[1] != slots[0]->step_targets)
        return lcm_fail(err, LCM_ERR_INTERNAL, "step %" PRId64 ": devices processed %.0f targets, the plan says %" PRId64,
                        step, local[1], slots[0]->step_targets);

    res->loss = local[0] / (double)slots[0]->step_targets;
    res->grad_norm = sqrt(sumsq);
    res->stop = local[2] > 0;
    res->lr = lcm_lr_at(&cfg->optim, cfg->trainer.max_steps, step);
    res->skipped = !isfinite(res->loss) || !isfinite(res->grad_norm);
    if (res->skipped) {
        w->state.bad_in_row++;
        w->state.bad_total++;
        if (w->state.bad_in_row >= cfg->trainer.max_bad_steps) {
            char intact[LCM_PATH_MAX + 128];
            lcm_checkpoint_describe_intact(run->run_dir, intact, sizeof intact);
            return lcm_fail(err, LCM_ERR_NUMERIC,
                            "step %" PRId64 ": loss or gradients are NaN/Inf for %" PRId64 " steps in a row "
                            "(trainer.max_bad_steps); lower optim.lr or check the data; %s", step, w->state.bad_in_row,
                            intact);
        }
    } else {
        w->state.bad_in_row = 0;
        const double clip = cfg->optim.grad_clip;
        lcm_adamw_args args = {
            .lr = (float)res->lr,
            .beta1 = cfg->optim.beta1,
            .beta2 = cfg->optim.beta2,
            .eps = cfg->optim.eps,
            .weight_decay = cfg->optim.weight_decay,
            .grad_scale = clip > 0 ? (float)fmin(1.0, clip / (res->grad_norm + 1e-6)) : 1.0f,
            .step = step - w->state.bad_total, /* updates applied so far, for the bias corrections */
        };
        lcm_worker_beat(w, LCM_PHASE_OPTIMIZER);
        if (hi > lo)
            be->ops->adamw(be, lcm_model_master_at(m, lo), lcm_act_at(be, m->params, lo), gs, m->m, m->v, hi - lo, &args);
        if (sharded) {
            be->ops->comm_wait_compute(be);
            lcm_worker_beat(w, LCM_PHASE_COLLECTIVE);
            LCM_TRY(w->comm->ops->all_gather(w->comm, m->params, 0, m->t.total, w->shard.slice,
                                             be->act_bytes == sizeof(float) ? LCM_RED_F32 : LCM_RED_BF16, err));
        }
        LCM_TRY(wait_device(w, err));
    }
    w->state.step = step;
    w->state.cursor = slots[0]->cursor_after;
    w->state.concepts_seen += slots[0]->step_targets;
    return 0;
}

/* ---- validation --------------------------------------------------------------------------------- */

static int run_validation(lcm_worker *w, lcm_eval_result *out, lcm_error *err) {
    lcm_run *run = w->run;
    lcm_eval_sums sums = {0};
    LCM_TRY(lcm_eval_loop(&w->eval, w->rank, run->n, run->cfg->trainer.validate_max_batches, &sums, err));
    double v[LCM_EVAL_NSUMS] = {sums.loss_sum, sums.l2_sum, sums.ca_sum, sums.ca_count,
                                sums.n_targets, sums.par_sum, sums.par_count};
    LCM_TRY(lcm_comm_sum_f64(w->comm, v, LCM_EVAL_NSUMS, err));
    lcm_eval_sums total = {v[0], v[1], v[2], v[3], v[4], v[5], v[6]};
    lcm_eval_finish(&total, out);
    return 0;
}

/* ---- rank 0: checkpoints and metrics ---------------------------------------------------------- */

/* Sharded runs: every rank calls this. Each copies its slice of the master weights and moments into
 * rank 0's staging, then rank 0 writes the usual full tensors. The others go on to the next step
 * without waiting: its collectives hold them until rank 0 has written, so they cannot overwrite the
 * staging under it. */
static int save_checkpoint(lcm_worker *w, lcm_error *err) {
    lcm_run *run = w->run;
    lcm_backend *be = w->be;
    const size_t bytes = w->model.t.total * sizeof(float);
    LCM_TRY(wait_device(w, err));
    if (run->cfg->trainer.shard > 0 && lcm_group_local_size(run->group) < run->n) {
        /* Across processes: each rank's slices through its staging into rank 0's, by a gather. */
        const size_t lo = w->shard.begin, n = (w->shard.end - lo) * sizeof(float);
        float *stage[3] = {w->host_master, w->host_m, w->host_v};
        const float *dev[3] = {lcm_model_master_at(&w->model, lo), w->model.m, w->model.v};
        for (int k = 0; k < 3; k++) {
            float *mine = w->rank == 0 ? stage[k] + lo : stage[k];
            if (n > 0) LCM_TRY(be->ops->download(be, mine, dev[k], n, err));
            lcm_worker_beat(w, LCM_PHASE_COLLECTIVE);
            LCM_TRY(lcm_comm_gather(w->comm, mine, n, w->rank == 0 ? stage[k] : NULL, w->rank == 0 ? bytes : 0,
                                    lo * sizeof(float), err));
        }
        lcm_worker_beat(w, LCM_PHASE_CHECKPOINT);
        if (w->rank != 0) return 0;
    } else if (run->cfg->trainer.shard > 0) {
        const lcm_worker *w0 = &run->workers[0];
        const size_t lo = w->shard.begin, n = (w->shard.end - lo) * sizeof(float);
        if (n > 0) {
            LCM_TRY(be->ops->download(be, w0->host_master + lo, lcm_model_master_at(&w->model, lo), n, err));
            LCM_TRY(be->ops->download(be, w0->host_m + lo, w->model.m, n, err));
            LCM_TRY(be->ops->download(be, w0->host_v + lo, w->model.v, n, err));
        }
        lcm_worker_beat(w, LCM_PHASE_COLLECTIVE);
        LCM_TRY(lcm_comm_barrier(w->comm, err));
        lcm_worker_beat(w, LCM_PHASE_CHECKPOINT);
        if (w->rank != 0) return 0;
    } else {
        LCM_TRY(lcm_model_get_params(&w->model, w->host_master, err));
        LCM_TRY(be->ops->download(be, w->host_m, w->model.m, bytes, err));
        LCM_TRY(be->ops->download(be, w->host_v, w->model.v, bytes, err));
    }
    w->state.elapsed_s = run->start.elapsed_s + (lcm_now() - run->t_start);
    char dir[LCM_PATH_MAX + 64];
    double t0 = lcm_now();
    LCM_TRY(lcm_checkpoint_save(run->run_dir, &w->model.t, w->host_master, w->host_m, w->host_v, &run->norm, &w->state,
                                run->config_text, run->cfg->trainer.keep_last, dir, sizeof dir, err));
    snprintf(run->sum->checkpoint, sizeof run->sum->checkpoint, "%s", dir);
    lcm_info("checkpoint: %s (%.1fs)", dir, lcm_now() - t0);
    return 0;
}

static void format_duration(char *out, size_t cap, double s) {
    if (!(s >= 0) || s > 1e8) snprintf(out, cap, "?");
    else if (s < 60) snprintf(out, cap, "%.0fs", s);
    else if (s < 3600) snprintf(out, cap, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(out, cap, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

typedef struct log_window {
    double t0;
    int64_t targets;
    double flops;
    int steps;
} log_window;

static void log_step(lcm_worker *w, const lcm_step_result *r, const lcm_slot *s, log_window *win) {
    lcm_run *run = w->run;
    const lcm_config *cfg = run->cfg;
    win->targets += s->step_targets;
    win->flops += s->step_flops;
    win->steps++;
    const int64_t step = w->state.step;
    if (step % cfg->trainer.log_every != 0 && step != cfg->trainer.max_steps && !r->stop) return;
    const double now = lcm_now(), dt = now - win->t0;
    const double cps = dt > 0 ? (double)win->targets / dt : 0;
    const double eta = dt > 0 ? (double)(cfg->trainer.max_steps - step) * dt / win->steps : -1;
    const double elapsed = run->start.elapsed_s + (now - run->t_start);
    double mfu = -1, mem_gb = -1;
    if (w->dev.is_gpu) {
        size_t free_b = 0, total_b = 0;
        w->be->ops->mem_info(w->be, &free_b, &total_b);
        mem_gb = (double)(total_b - free_b) / 1e9;
        if (run->peak_tflops > 0 && dt > 0) mfu = win->flops / dt / (run->n * run->peak_tflops * 1e12);
    }
    char eta_s[32], mfu_s[32] = "", gpu_s[128] = "";
    format_duration(eta_s, sizeof eta_s, eta);
    if (mfu >= 0) snprintf(mfu_s, sizeof mfu_s, " | MFU %.1f%% | %.1f GB", 100 * mfu, mem_gb);
    lcm_gpu_sample gpus[LCM_MAX_DEVICES];
    const int ngpus = lcm_gpumon_latest(run->gpumon, gpus, LCM_MAX_DEVICES);
    if (ngpus) {
        char g[112];
        lcm_gpumon_format(gpus, ngpus, g, sizeof g);
        if (g[0]) snprintf(gpu_s, sizeof gpu_s, " | %s", g);
    }
    lcm_info("step %" PRId64 "/%" PRId64 " | loss %.4f | lr %.3g | grad norm %.3g | %.0f concepts/s%s%s | ETA %s%s", step,
             cfg->trainer.max_steps, r->loss, r->lr, r->grad_norm, cps, mfu_s, gpu_s, eta_s,
             r->skipped ? " | SKIPPED (NaN/Inf)" : "");
    if (run->metrics) {
        lcm_sbuf b = {0};
        int first = 1;
        lcm_sbuf_puts(&b, "{");
        lcm_json_key(&b, &first, "step"), lcm_sbuf_printf(&b, "%" PRId64, step);
        lcm_json_key(&b, &first, "loss"), lcm_json_num(&b, r->loss);
        lcm_json_key(&b, &first, "lr"), lcm_json_num(&b, r->lr);
        lcm_json_key(&b, &first, "grad_norm"), lcm_json_num(&b, r->grad_norm);
        lcm_json_key(&b, &first, "concepts_per_s"), lcm_json_num(&b, cps);
        lcm_json_key(&b, &first, "elapsed_s"), lcm_json_num(&b, elapsed);
        if (mfu >= 0) lcm_json_key(&b, &first, "mfu"), lcm_json_num(&b, mfu);
        if (mem_gb >= 0) lcm_json_key(&b, &first, "mem_gb"), lcm_json_num(&b, mem_gb);
        if (ngpus) lcm_gpumon_json(gpus, ngpus, &b, &first);
        if (r->skipped) lcm_json_key(&b, &first, "skipped"), lcm_sbuf_puts(&b, "true");
        lcm_sbuf_puts(&b, "}\n");
        if (b.s) lcm_run_metrics_line(run, b.s);
        lcm_sbuf_free(&b);
    }
    win->t0 = now;
    win->targets = 0;
    win->flops = 0;
    win->steps = 0;
}

static void log_validation(lcm_worker *w, const lcm_eval_result *v) {
    lcm_run *run = w->run;
    lcm_info("validation at step %" PRId64 ": loss %.4f (predict-the-mean baseline %.4f) | l2 %.4f | CA %.2f%% | "
             "PAR %.3f | %" PRId64 " targets",
             w->state.step, v->loss, run->baseline, v->l2, 100 * v->ca, v->par, v->n_targets);
    if (!run->metrics) return;
    char line[512];
    snprintf(line, sizeof line, "{\"step\":%" PRId64 ",\"split\":\"valid\",\"loss\":%.9g,\"l2\":%.9g,\"ca\":%.9g,"
             "\"par\":%.9g,\"n_targets\":%" PRId64 "}\n", w->state.step, v->loss, v->l2, v->ca, v->par, v->n_targets);
    lcm_run_metrics_line(run, line);
}

/* ---- the worker thread ------------------------------------------------------------------------ */

static int setup(lcm_worker *w, lcm_error *err) {
    lcm_run *run = w->run;
    LCM_TRY(lcm_backend_for_device(&w->be, w->dev, err));
    lcm_backend *be = w->be;
    LCM_TRY(be->ops->set_attention(be, run->cfg->model.attention, run->d.C / run->d.H, err));
    /* Shard 2 with one micro-batch keeps one bucket of gradients plus its slice; with more, the full
     * gradient accumulates the micro-batches (see the header comment). */
    const int shard = run->cfg->trainer.shard;
    lcm_model_shape shape = {run->d, run->max_tokens, run->max_rows, run->max_T, 1, run->cfg->trainer.recompute,
                             shard > 0 ? run->n : 0, w->rank, shard == 2 && run->accum == 1};
    LCM_TRY(lcm_model_create_shape(&w->model, be, &shape, err));
    if (shard > 0) w->shard = lcm_shard_of(w->model.t.total, run->n, w->rank, LCM_SHARD_ALIGN);
    LCM_TRY(lcm_model_set_params(&w->model, run->init_master, err));
    LCM_TRY(lcm_model_set_normalizer(&w->model, &run->norm, err));
    /* The moments of this rank's elements (all of them unless sharded): the checkpoint's, scattered. */
    const size_t lo = w->model.opt_begin, bytes = (w->model.opt_end - lo) * sizeof(float);
    if (run->init_m && bytes > 0) {
        LCM_TRY(be->ops->upload(be, w->model.m, run->init_m + lo, bytes, err));
        LCM_TRY(be->ops->upload(be, w->model.v, run->init_v + lo, bytes, err));
    }
    if (run->n > 1 && run->cfg->trainer.grad_reduce_dtype == LCM_GRAD_REDUCE_BF16)
        LCM_TRY(be->ops->alloc(be, (void **)&w->grad_bf16,
                               (w->model.grad_window ? w->model.grad_window + w->shard.slice : w->model.t.total) *
                                   sizeof(uint16_t), "bf16 gradients", err));
    if (run->valid.open) {
        LCM_TRY(lcm_eval_ctx_init(&w->eval, &w->model, &run->valid, run->cfg->data.append_eot, &run->norm, err));
        w->eval.beats = &w->beats;
    }
    LCM_TRY(be->ops->sync(be, err));
    w->state = run->start;
    lcm_comm_bind_stream(w->comm, be->ops->comm_stream(be));
    return 0;
}

static int due(int64_t step, int64_t every) { return every > 0 && step % every == 0; }

static int train_loop(lcm_worker *w, lcm_error *err) {
    lcm_run *run = w->run;
    const lcm_config *cfg = run->cfg;
    const int A = run->accum;
    lcm_slot **slots = calloc((size_t)A, sizeof *slots);
    if (!slots) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    log_window win = {.t0 = lcm_now()};
    int rc = 0, stopped = 0;
    while (w->state.step < cfg->trainer.max_steps) {
        lcm_worker_beat(w, LCM_PHASE_LOADING);
        for (int a = 0; a < A && !rc; a++) rc = lcm_loader_next(&w->loader, &slots[a], err);
        lcm_step_result r;
        if (!rc) rc = lcm_worker_step(w, slots, &r, err);
        if (rc) break;
        const lcm_slot done = *slots[0]; /* the step's figures; the slot itself goes back to the loader */
        lcm_loader_release(&w->loader, A);
        atomic_store(&w->heartbeat_step, w->state.step);
        w->last_loss = r.loss;
        if (w->rank == 0) log_step(w, &r, &done, &win);
        const int64_t step = w->state.step;
        const int last = step == cfg->trainer.max_steps;
        if (run->valid.open && (due(step, cfg->trainer.validate_every) || last)) {
            lcm_eval_result v;
            lcm_worker_beat(w, LCM_PHASE_VALIDATION);
            if ((rc = run_validation(w, &v, err))) break;
            if (w->rank == 0) {
                log_validation(w, &v);
                run->sum->valid = v;
                run->sum->have_valid = 1;
            }
        }
        if ((r.stop || last || due(step, cfg->trainer.checkpoint_every)) && (w->rank == 0 || cfg->trainer.shard > 0)) {
            lcm_worker_beat(w, LCM_PHASE_CHECKPOINT);
            if ((rc = save_checkpoint(w, err))) break;
        }
        if (r.stop) {
            stopped = 1;
            break;
        }
    }
    if (w->rank == 0) {
        run->sum->final_step = w->state.step;
        run->sum->steps_done = w->state.step - run->start.step;
        run->sum->train_loss = w->last_loss;
        run->sum->interrupted = stopped;
        run->sum->stop_at_step_reached =
            stopped && cfg->trainer.stop_at_step > 0 && w->state.step >= cfg->trainer.stop_at_step;
    }
    free(slots);
    return rc;
}

/* Training's part of the worker: rank 0's checkpoint staging and the batch loader. */
static int train_prepare(lcm_worker *w, lcm_error *err) {
    size_t bytes = w->model.t.total * sizeof(float);
    /* Sharded across processes, the other ranks stage their slices for the gather to rank 0 (+1: a
     * rank whose slice is empty still gets a buffer). */
    const int stage_slice = w->rank != 0 && w->run->cfg->trainer.shard > 0 &&
                            lcm_group_local_size(w->run->group) < w->run->n;
    if (stage_slice) bytes = (w->shard.end - w->shard.begin) * sizeof(float) + 1;
    if (w->rank == 0 || stage_slice) {
        w->host_master = malloc(bytes);
        w->host_m = malloc(bytes);
        w->host_v = malloc(bytes);
        if (!w->host_master || !w->host_m || !w->host_v)
            return lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for checkpoint staging (3 x %.2f GB)", bytes / 1e9);
    }
    LCM_TRY(lcm_loader_start(&w->loader, w->run, w->rank, w->be, err));
    atomic_store(&w->loader_state, LCM_LOADER_LIVE); /* after loader.thread is set: the main thread reads it */
    return 0;
}

static void train_release(lcm_worker *w) {
    /* The checkpoint staging is freed by lcm_run_free, after the join. A loader the main thread has
     * detached (it gave up on this worker, and the process is ending) is left as it is. */
    int live = LCM_LOADER_LIVE;
    if (atomic_compare_exchange_strong(&w->loader_state, &live, LCM_LOADER_REAPED) || live == LCM_LOADER_NONE)
        lcm_loader_stop(&w->loader);
}

const lcm_worker_loop lcm_train_loop = {train_prepare, train_loop, train_release};

void *lcm_worker_main(void *arg) {
    lcm_worker *w = arg;
    lcm_run *run = w->run;
    int rc = setup(w, &w->err);
    if (!rc) rc = run->loop->prepare(w, &w->err);
    /* The first collective: every worker has allocated everything it will use. */
    lcm_worker_beat(w, LCM_PHASE_COLLECTIVE);
    if (!rc) rc = lcm_comm_barrier(w->comm, &w->err);
    if (!rc) rc = run->loop->run(w, &w->err);
    if (rc && w->err.code != LCM_ERR_INTERRUPTED) lcm_group_abort(run->group, &w->err);
    w->rc = rc;
    run->loop->release(w);
    if (w->be) {
        lcm_eval_ctx_free(&w->eval);
        if (w->grad_bf16) w->be->ops->release(w->be, w->grad_bf16);
        lcm_model_destroy(&w->model);
        lcm_backend_destroy(w->be);
        w->be = NULL;
    }
    atomic_store(&w->done, 1);
    return NULL;
}
