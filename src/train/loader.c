/* loader.c: each worker's batch loader. A thread walks the training plan step by step (every loader
 * computes the same global steps from the same cursor), copies this device's micro-batches out of the
 * shared mapping into a small ring of staging buffers (pinned memory on CUDA, so uploads are truly
 * asynchronous), and hands them to the worker in order. The ring holds grad_accum + 1 slots: one step's
 * micro-batches in use while the next step's are filled. A slot is reused only after the worker
 * releases it, i.e. after the step that uploaded it has synchronised. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "train_internal.h"

/* A slot's three host buffers: raw embeddings, row lengths, document indices. */
static void slot_sizes(int64_t max_tokens, int max_rows, int D, size_t bytes[3]) {
    bytes[0] = (size_t)max_tokens * D * sizeof(float);
    bytes[1] = (size_t)max_rows * sizeof(int32_t);
    bytes[2] = (size_t)max_rows * sizeof(uint64_t);
}

/* One step's micro-batches in use while the next step's are filled. */
static int ring_slots(int accum) { return accum + 1; }

size_t lcm_staging_bytes(int accum, int validation, int64_t max_tokens, int max_rows, int D) {
    size_t b[3];
    slot_sizes(max_tokens, max_rows, D, b);
    return (size_t)(ring_slots(accum) + (validation ? 1 : 0)) * (b[0] + b[1] + b[2]);
}

int lcm_slot_alloc(lcm_slot *s, lcm_backend *be, int64_t max_tokens, int max_rows, int D, lcm_error *err) {
    memset(s, 0, sizeof *s);
    size_t b[3];
    slot_sizes(max_tokens, max_rows, D, b);
    LCM_TRY(be->ops->host_alloc(be, (void **)&s->x, b[0], err));
    LCM_TRY(be->ops->host_alloc(be, (void **)&s->lens, b[1], err));
    return be->ops->host_alloc(be, (void **)&s->docs, b[2], err);
}

void lcm_slot_free(lcm_slot *s, lcm_backend *be) {
    if (s->x) be->ops->host_release(be, s->x);
    if (s->lens) be->ops->host_release(be, s->lens);
    if (s->docs) be->ops->host_release(be, s->docs);
    memset(s, 0, sizeof *s);
}

/* Wait on the condition for at most 100 ms, so that an aborted group is noticed. */
static void timed_wait(lcm_loader *ld) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&ld->cv, &ld->mu, &ts);
}

/* Read with or without ld->mu: loader_main checks it between steps, outside the lock. */
static int should_stop(lcm_loader *ld) { return atomic_load(&ld->stop) || lcm_group_aborted(ld->run->group); }

/* The global step's micro-batches, and this rank's share of them into free slots. */
static int load_step(lcm_loader *ld) {
    lcm_run *run = ld->run;
    const int total = run->n * run->accum;
    lcm_error err = {0};
    if (lcm_plan_take(run->train.plan, &ld->cursor, total, ld->mbs, ld->rows, ld->rows_cap, &err) != 0) {
        pthread_mutex_lock(&ld->mu);
        ld->err = err;
        ld->failed = 1;
        pthread_cond_broadcast(&ld->cv);
        pthread_mutex_unlock(&ld->mu);
        return -1;
    }
    int64_t targets = 0, concepts = 0;
    double flops = 0;
    for (int i = 0; i < total; i++) {
        int64_t real = ld->mbs[i].n_targets + ld->mbs[i].n_rows;
        targets += ld->mbs[i].n_targets;
        concepts += real;
        flops += (double)real * lcm_model_flops_per_concept(&run->d, ld->mbs[i].max_len);
    }
    for (int a = 0; a < run->accum; a++) {
        pthread_mutex_lock(&ld->mu);
        while (ld->produced - ld->released >= (uint64_t)ld->n_slots && !should_stop(ld)) timed_wait(ld);
        if (should_stop(ld)) {
            pthread_mutex_unlock(&ld->mu);
            return -1;
        }
        lcm_slot *s = &ld->slots[ld->produced % (uint64_t)ld->n_slots];
        pthread_mutex_unlock(&ld->mu);

        const int j = ld->rank * run->accum + a;
        const lcm_microbatch *mb = &ld->mbs[j];
        lcm_batch_fill(&run->train.ds, mb, run->cfg->data.append_eot, s->x, s->lens, s->docs);
        s->B = mb->n_rows;
        s->T = mb->max_len;
        s->step = ld->next_step;
        s->microbatch = (uint32_t)j;
        s->step_targets = targets;
        s->step_concepts = concepts;
        s->step_flops = flops;
        s->cursor_after = ld->cursor;

        pthread_mutex_lock(&ld->mu);
        ld->produced++;
        pthread_cond_broadcast(&ld->cv);
        pthread_mutex_unlock(&ld->mu);
    }
    ld->next_step++;
    return 0;
}

static void *loader_main(void *arg) {
    lcm_loader *ld = arg;
    while (ld->next_step <= ld->run->cfg->trainer.max_steps) {
        if (should_stop(ld) || load_step(ld) != 0) break;
    }
    return NULL;
}

int lcm_loader_start(lcm_loader *ld, lcm_run *run, int rank, lcm_backend *be, lcm_error *err) {
    memset(ld, 0, sizeof *ld);
    ld->run = run;
    ld->rank = rank;
    ld->be = be;
    ld->n_slots = ring_slots(run->accum);
    ld->cursor = run->start.cursor;
    ld->next_step = run->start.step + 1;
    const int total = run->n * run->accum;
    ld->rows_cap = (size_t)total * (size_t)run->max_rows;
    ld->mbs = calloc((size_t)total, sizeof *ld->mbs);
    ld->rows = calloc(ld->rows_cap, sizeof *ld->rows);
    ld->slots = calloc((size_t)ld->n_slots, sizeof *ld->slots);
    if (!ld->mbs || !ld->rows || !ld->slots) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory for the batch loader");
    for (int i = 0; i < ld->n_slots; i++)
        LCM_TRY(lcm_slot_alloc(&ld->slots[i], be, run->max_tokens, run->max_rows, run->d.D, err));
    pthread_mutex_init(&ld->mu, NULL);
    pthread_cond_init(&ld->cv, NULL);
    if (pthread_create(&ld->thread, NULL, loader_main, ld) != 0)
        return lcm_fail(err, LCM_ERR_INTERNAL, "cannot start the batch loader thread: %s", strerror(errno));
    char name[16];
    snprintf(name, sizeof name, "lcm-load%d", rank);
    pthread_setname_np(ld->thread, name);
    ld->started = 1;
    return 0;
}

int lcm_loader_next(lcm_loader *ld, lcm_slot **out, lcm_error *err) {
    pthread_mutex_lock(&ld->mu);
    while (ld->consumed == ld->produced && !ld->failed && !lcm_group_aborted(ld->run->group)) timed_wait(ld);
    int rc = 0;
    if (ld->consumed < ld->produced) {
        *out = &ld->slots[ld->consumed % (uint64_t)ld->n_slots];
        ld->consumed++;
    } else if (ld->failed) {
        *err = ld->err;
        rc = err->code ? (int)err->code : LCM_ERR_INTERNAL;
    } else {
        rc = lcm_fail(err, LCM_ERR_INTERRUPTED, "stopped: %s", lcm_group_abort_reason(ld->run->group)->msg);
    }
    pthread_mutex_unlock(&ld->mu);
    return rc;
}

void lcm_loader_release(lcm_loader *ld, int n) {
    pthread_mutex_lock(&ld->mu);
    ld->released += (uint64_t)n;
    pthread_cond_broadcast(&ld->cv);
    pthread_mutex_unlock(&ld->mu);
}

void lcm_loader_stop(lcm_loader *ld) {
    if (ld->started) {
        pthread_mutex_lock(&ld->mu); /* under the lock: the loader never misses the wake-up */
        atomic_store(&ld->stop, 1);
        pthread_cond_broadcast(&ld->cv);
        pthread_mutex_unlock(&ld->mu);
        pthread_join(ld->thread, NULL);
        pthread_mutex_destroy(&ld->mu);
        pthread_cond_destroy(&ld->cv);
    }
    if (ld->slots)
        for (int i = 0; i < ld->n_slots; i++) lcm_slot_free(&ld->slots[i], ld->be);
    free(ld->slots);
    free(ld->mbs);
    free(ld->rows);
    memset(ld, 0, sizeof *ld);
}
