/* local.c: the group shared by both comm implementations (ranks, stop flag and abort reason, the
 * abortable barrier, the host-side collectives) and the local implementation's all-reduce,
 * reduce-scatter and all-gather, which work on the worker threads' buffers through shared memory.
 *
 * Every collective is two barriers. Each rank publishes its arguments in its slot, then waits at the
 * first barrier; after it every rank checks all slots (so a mismatch is reported identically by every
 * rank instead of corrupting memory) and does its share of the work; the second barrier keeps each
 * rank's buffer and slot alive until nobody reads or writes them any more.
 * The first barrier is abortable. The second is not, on purpose: once every rank has passed the first,
 * each reaches the second after a finite loop that never blocks, and returning early from it would let
 * a caller free a buffer that another rank is still writing into. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "group.h"
#include "lcm/half.h"

static int is_sharded(int kind) { return kind >= COLL_RS_F32 && kind <= COLL_SHARDED_BAD_DTYPE; }

/* Elements summed per block: the per-element sum stays in rank order, while the block lets the
 * compiler vectorise across elements. */
#define REDUCE_BLOCK 256

static const lcm_error no_abort_reason = {LCM_OK, ""};

static int local_allreduce(lcm_comm *c, void *buf, size_t n, lcm_red_dtype dtype, lcm_error *err);
static int local_reduce_scatter(lcm_comm *c, const void *send, void *recv, size_t begin, size_t end, size_t slice,
                                lcm_red_dtype dtype, lcm_error *err);
static int local_all_gather(lcm_comm *c, void *buf, size_t begin, size_t end, size_t slice, lcm_red_dtype dtype,
                            lcm_error *err);
static int local_check(lcm_comm *c, lcm_error *err) { return 0; }

static const lcm_comm_ops local_ops = {
    .allreduce = local_allreduce,
    .reduce_scatter = local_reduce_scatter,
    .all_gather = local_all_gather,
    .check = local_check,
};

/* ---- group lifetime ------------------------------------------------------------------------- */

int lcm_group_alloc(lcm_group **out, int n, const lcm_comm_ops *ops, lcm_error *err) {
    *out = NULL;
    if (n < 1) return lcm_fail(err, LCM_ERR_INTERNAL, "a comm group needs at least one rank, got %d", n);
    lcm_group *g = calloc(1, sizeof *g);
    if (!g) return lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for a comm group of %d ranks", n);
    g->size = n;
    g->world = n;
    g->comms = calloc((size_t)n, sizeof *g->comms);
    g->slots = calloc((size_t)n, sizeof *g->slots);
    if (!g->comms || !g->slots) {
        free(g->comms);
        free(g->slots);
        free(g);
        return lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for a comm group of %d ranks", n);
    }
    if (pthread_mutex_init(&g->mu, NULL) != 0) {
        free(g->comms);
        free(g->slots);
        free(g);
        return lcm_fail(err, LCM_ERR_NOMEM, "pthread_mutex_init failed for a comm group of %d ranks", n);
    }
    if (pthread_cond_init(&g->cv, NULL) != 0) {
        pthread_mutex_destroy(&g->mu);
        free(g->comms);
        free(g->slots);
        free(g);
        return lcm_fail(err, LCM_ERR_NOMEM, "pthread_cond_init failed for a comm group of %d ranks", n);
    }
    atomic_init(&g->stopped, 0);
    for (int r = 0; r < n; r++) {
        g->comms[r].ops = ops;
        g->comms[r].group = g;
        g->comms[r].rank = r;
        g->comms[r].size = n;
    }
    *out = g;
    return 0;
}

int lcm_group_create_local(lcm_group **out, int n, lcm_error *err) {
    return lcm_group_alloc(out, n, &local_ops, err);
}

lcm_comm *lcm_group_comm(lcm_group *g, int rank) {
    if (!g || rank < g->rank0 || rank >= g->rank0 + g->size) return NULL;
    return &g->comms[rank - g->rank0];
}

int lcm_group_size(const lcm_group *g) { return g->world; }
int lcm_group_first_rank(const lcm_group *g) { return g->rank0; }
int lcm_group_local_size(const lcm_group *g) { return g->size; }

void lcm_group_destroy(lcm_group *g) {
    if (!g) return;
    if (g->impl && g->impl->destroy) g->impl->destroy(g);
    lcm_xproc_free(g->xp);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g->comms);
    free(g->slots);
    free(g);
}

void lcm_comm_bind_stream(lcm_comm *c, void *stream) {
    /* The local group computes on the calling thread: it has no stream to bind. */
    if (c->group->impl && c->group->impl->bind_stream) c->group->impl->bind_stream(c, stream);
}

/* ---- stop flag ------------------------------------------------------------------------------ */

/* Not async-signal-safe (it takes the group's mutex): a signal handler sets a flag that a thread
 * turns into this call. */
void lcm_group_abort(lcm_group *g, const lcm_error *reason) {
    int first = 0;
    pthread_mutex_lock(&g->mu);
    if (!atomic_load_explicit(&g->stopped, memory_order_relaxed)) {
        if (reason && reason->code != LCM_OK) {
            g->reason = *reason;
            g->reason.msg[sizeof g->reason.msg - 1] = '\0';
        } else {
            g->reason.code = LCM_ERR_INTERRUPTED;
            snprintf(g->reason.msg, sizeof g->reason.msg, "the run was stopped (no reason given)");
        }
        /* Release: whoever sees the flag also sees the reason, which is never written again. */
        atomic_store_explicit(&g->stopped, 1, memory_order_release);
        pthread_cond_broadcast(&g->cv);
        first = 1;
    }
    pthread_mutex_unlock(&g->mu);
    if (first && g->impl && g->impl->abort) g->impl->abort(g);
}

int lcm_group_aborted(const lcm_group *g) {
    return atomic_load_explicit(&((lcm_group *)g)->stopped, memory_order_acquire);
}

const lcm_error *lcm_group_abort_reason(const lcm_group *g) {
    return lcm_group_aborted(g) ? &g->reason : &no_abort_reason;
}

int lcm_group_interrupted(const lcm_group *g, int rank, const char *what, lcm_error *err) {
    const lcm_error *why = lcm_group_abort_reason(g);
    return lcm_fail(err, LCM_ERR_INTERRUPTED, "%s on rank %d interrupted because the run is stopping: %s", what,
                    rank, why->msg[0] ? why->msg : "the group was aborted");
}

/* ---- barrier -------------------------------------------------------------------------------- */

/* Wait until every rank has arrived. Abortable: returns LCM_ERR_INTERRUPTED if the group is (or
 * becomes) aborted before the last rank arrives. A barrier that completed counts as passed even when
 * an abort follows at once: the abort then shows at the next wait. */
static int group_wait(lcm_group *g, int rank, const char *what, int abortable, lcm_error *err) {
    int passed = 0;
    pthread_mutex_lock(&g->mu);
    if (!abortable || !atomic_load_explicit(&g->stopped, memory_order_relaxed)) {
        unsigned long gen = g->generation;
        if (++g->arrived == g->size) {
            g->arrived = 0;
            g->generation++;
            pthread_cond_broadcast(&g->cv);
        } else {
            while (gen == g->generation && !(abortable && atomic_load_explicit(&g->stopped, memory_order_relaxed)))
                pthread_cond_wait(&g->cv, &g->mu);
        }
        passed = gen != g->generation;
    }
    pthread_mutex_unlock(&g->mu);
    return passed ? 0 : lcm_group_interrupted(g, rank, what, err);
}

static int run_collective(lcm_comm *c, const lcm_coll_slot *mine, lcm_error *err);

int lcm_comm_barrier(lcm_comm *c, lcm_error *err) {
    if (c->group->xp) { /* across processes: a collective that moves no data */
        lcm_coll_slot s = {.kind = COLL_BARRIER_X};
        return run_collective(c, &s, err);
    }
    return group_wait(c->group, c->rank, "barrier", 1, err);
}

/* ---- collectives ---------------------------------------------------------------------------- */

static const char *coll_name(int kind) {
    switch (kind) {
    case COLL_ALLREDUCE_F32: return "all-reduce (f32)";
    case COLL_ALLREDUCE_BF16: return "all-reduce (bf16)";
    case COLL_ALLREDUCE_BAD_DTYPE: return "all-reduce (unknown dtype)";
    case COLL_SUM_F64: return "sum_f64";
    case COLL_BROADCAST: return "broadcast";
    case COLL_GATHER: return "gather";
    case COLL_BARRIER_X: return "barrier";
    case COLL_RS_F32: return "reduce-scatter (f32)";
    case COLL_RS_BF16: return "reduce-scatter (bf16)";
    case COLL_AG_F32: return "all-gather (f32)";
    case COLL_AG_BF16: return "all-gather (bf16)";
    case COLL_SHARDED_BAD_DTYPE: return "sharded collective (unknown dtype)";
    }
    return "collective";
}

static void describe(const lcm_coll_slot *s, char *out, size_t cap) {
    switch (s->kind) {
    case COLL_BROADCAST:
        snprintf(out, cap, "broadcast of %lld bytes from rank %d", s->n, s->root);
        break;
    case COLL_GATHER:
        snprintf(out, cap, "gather of %lld bytes to offset %lld", s->n, s->begin);
        break;
    case COLL_ALLREDUCE_BAD_DTYPE:
        snprintf(out, cap, "all-reduce of %lld elements of unknown dtype %d", s->n, s->root);
        break;
    case COLL_SHARDED_BAD_DTYPE:
        snprintf(out, cap, "sharded collective of elements [%lld, %lld) of unknown dtype %d", s->begin, s->n, s->root);
        break;
    case COLL_RS_F32:
    case COLL_RS_BF16:
    case COLL_AG_F32:
    case COLL_AG_BF16:
        snprintf(out, cap, "%s of elements [%lld, %lld) in slices of %lld", coll_name(s->kind), s->begin, s->n,
                 s->slice);
        break;
    default:
        snprintf(out, cap, "%s of %lld elements", coll_name(s->kind), s->n);
        break;
    }
}

/* Run after the first barrier by every rank on the same slots, so every rank reaches the same verdict
 * and reports it with the same message. */
static int check_slots(const lcm_group *g, lcm_error *err) {
    const lcm_coll_slot *s0 = &g->slots[0];
    char a[160], b[160];
    for (int r = 1; r < g->size; r++) {
        const lcm_coll_slot *s = &g->slots[r];
        if (s->kind != s0->kind || (s->n != s0->n && s->kind != COLL_GATHER) || (s->kind == COLL_BROADCAST && s->root != s0->root) ||
            (is_sharded(s->kind) && (s->begin != s0->begin || s->slice != s0->slice))) {
            describe(s0, a, sizeof a);
            describe(s, b, sizeof b);
            return lcm_fail(err, LCM_ERR_INTERNAL,
                            "collective mismatch: rank 0 called %s but rank %d called %s; every rank must issue "
                            "the same collectives in the same order with the same sizes",
                            a, r, b);
        }
    }
    if (s0->kind == COLL_ALLREDUCE_BAD_DTYPE)
        return lcm_fail(err, LCM_ERR_INTERNAL, "all-reduce called with unknown dtype %d (expected LCM_RED_F32 or "
                        "LCM_RED_BF16)", s0->root);
    if (s0->kind == COLL_SHARDED_BAD_DTYPE)
        return lcm_fail(err, LCM_ERR_INTERNAL, "reduce-scatter or all-gather called with unknown dtype %d (expected "
                        "LCM_RED_F32 or LCM_RED_BF16)", s0->root);
    if (is_sharded(s0->kind) && (s0->begin < 0 || s0->begin > s0->n || s0->slice < 1 ||
                                 (s0->n > 0 && (s0->n - 1) / s0->slice >= g->world))) {
        describe(s0, a, sizeof a);
        return lcm_fail(err, LCM_ERR_INTERNAL, "%s: the range must satisfy 0 <= begin <= end <= %d ranks x slice, "
                        "with slice >= 1", a, g->world);
    }
    if (s0->n < 0) {
        describe(s0, a, sizeof a);
        return lcm_fail(err, LCM_ERR_INTERNAL, "%s: the count is negative", a);
    }
    if (s0->kind == COLL_BROADCAST && (s0->root < 0 || s0->root >= g->world))
        return lcm_fail(err, LCM_ERR_INTERNAL, "broadcast from rank %d, but the group has ranks 0..%d", s0->root,
                        g->world - 1);
    for (int i = 0; i < g->size; i++) {
        const int r = g->rank0 + i;
        const lcm_coll_slot *s = &g->slots[i];
        if (s0->kind == COLL_GATHER) {
            /* Rank 0's receive buffer: its size is checked here when rank 0 is in this process (mpi.c
             * checks what comes from the others). */
            if (s->n < 0 || s->begin < 0 || (s->n > 0 && !s->buf) ||
                (g->rank0 == 0 && (!g->slots[0].recv || s->begin > g->slots[0].slice - s->n))) {
                describe(s, a, sizeof a);
                return lcm_fail(err, LCM_ERR_INTERNAL, "%s on rank %d does not fit rank 0's receive buffer of %lld "
                                "bytes", a, r, g->rank0 == 0 ? g->slots[0].slice : -1LL);
            }
            continue;
        }
        const int owns = (s0->kind == COLL_RS_F32 || s0->kind == COLL_RS_BF16) && s0->n > s0->begin &&
                         (long long)r * s0->slice < s0->n && (long long)(r + 1) * s0->slice > s0->begin;
        if (owns && !s->recv) {
            describe(s0, a, sizeof a);
            return lcm_fail(err, LCM_ERR_INTERNAL, "%s: rank %d owns part of the range but passed no receive buffer",
                            a, r);
        }
        if (s0->kind != COLL_BARRIER_X && (is_sharded(s0->kind) ? s0->n - s0->begin : s0->n) > 0 && !s->buf) {
            describe(s0, a, sizeof a);
            return lcm_fail(err, LCM_ERR_INTERNAL, "%s: rank %d passed a NULL buffer", a, r);
        }
    }
    return 0;
}

/* Each element is read from every buffer, summed in rank order 0..N-1 and written back to every
 * buffer by exactly one rank, so the bits never depend on which rank ran first. */
static void reduce_f32(lcm_group *g, size_t lo, size_t hi) {
    float acc[REDUCE_BLOCK];
    for (size_t i0 = lo; i0 < hi; i0 += REDUCE_BLOCK) {
        size_t m = hi - i0 < REDUCE_BLOCK ? hi - i0 : REDUCE_BLOCK;
        const float *b0 = (const float *)g->slots[0].buf + i0;
        for (size_t k = 0; k < m; k++) acc[k] = b0[k];
        for (int r = 1; r < g->size; r++) {
            const float *br = (const float *)g->slots[r].buf + i0;
            for (size_t k = 0; k < m; k++) acc[k] += br[k];
        }
        for (int r = 0; r < g->size; r++) memcpy((float *)g->slots[r].buf + i0, acc, m * sizeof(float));
    }
}

/* bf16: summed in fp32 and rounded to bf16 once, at the end. */
static void reduce_bf16(lcm_group *g, size_t lo, size_t hi) {
    float acc[REDUCE_BLOCK];
    uint16_t out[REDUCE_BLOCK];
    for (size_t i0 = lo; i0 < hi; i0 += REDUCE_BLOCK) {
        size_t m = hi - i0 < REDUCE_BLOCK ? hi - i0 : REDUCE_BLOCK;
        const uint16_t *b0 = (const uint16_t *)g->slots[0].buf + i0;
        for (size_t k = 0; k < m; k++) acc[k] = lcm_bf16_to_f32(b0[k]);
        for (int r = 1; r < g->size; r++) {
            const uint16_t *br = (const uint16_t *)g->slots[r].buf + i0;
            for (size_t k = 0; k < m; k++) acc[k] += lcm_bf16_to_f32(br[k]);
        }
        for (size_t k = 0; k < m; k++) out[k] = lcm_f32_to_bf16(acc[k]);
        for (int r = 0; r < g->size; r++) memcpy((uint16_t *)g->slots[r].buf + i0, out, m * sizeof(uint16_t));
    }
}

/* The sharded forms: element i belongs to rank i / slice, and only that rank's buffer is written.
 * Buffers hold the range from element `first` on. The sums are the all-reduce's (same order, same
 * rounding); blocks stop at owner boundaries. */
static void reduce_scatter_f32(lcm_group *g, size_t first, size_t lo, size_t hi, size_t slice) {
    float acc[REDUCE_BLOCK];
    for (size_t i0 = lo; i0 < hi;) {
        const size_t owner = i0 / slice, stop = (owner + 1) * slice < hi ? (owner + 1) * slice : hi;
        size_t m = stop - i0 < REDUCE_BLOCK ? stop - i0 : REDUCE_BLOCK;
        const float *b0 = (const float *)g->slots[0].buf + (i0 - first);
        for (size_t k = 0; k < m; k++) acc[k] = b0[k];
        for (int r = 1; r < g->size; r++) {
            const float *br = (const float *)g->slots[r].buf + (i0 - first);
            for (size_t k = 0; k < m; k++) acc[k] += br[k];
        }
        memcpy((float *)g->slots[owner].recv + (i0 - owner * slice), acc, m * sizeof(float));
        i0 += m;
    }
}

static void reduce_scatter_bf16(lcm_group *g, size_t first, size_t lo, size_t hi, size_t slice) {
    float acc[REDUCE_BLOCK];
    for (size_t i0 = lo; i0 < hi;) {
        const size_t owner = i0 / slice, stop = (owner + 1) * slice < hi ? (owner + 1) * slice : hi;
        size_t m = stop - i0 < REDUCE_BLOCK ? stop - i0 : REDUCE_BLOCK;
        const uint16_t *b0 = (const uint16_t *)g->slots[0].buf + (i0 - first);
        for (size_t k = 0; k < m; k++) acc[k] = lcm_bf16_to_f32(b0[k]);
        for (int r = 1; r < g->size; r++) {
            const uint16_t *br = (const uint16_t *)g->slots[r].buf + (i0 - first);
            for (size_t k = 0; k < m; k++) acc[k] += lcm_bf16_to_f32(br[k]);
        }
        uint16_t *out = (uint16_t *)g->slots[owner].recv + (i0 - owner * slice);
        for (size_t k = 0; k < m; k++) out[k] = lcm_f32_to_bf16(acc[k]);
        i0 += m;
    }
}

static void all_gather_elems(lcm_group *g, size_t first, size_t lo, size_t hi, size_t slice, size_t esize) {
    for (size_t i0 = lo; i0 < hi;) {
        const size_t owner = i0 / slice, stop = (owner + 1) * slice < hi ? (owner + 1) * slice : hi;
        const char *src = (const char *)g->slots[owner].buf + (i0 - first) * esize;
        for (int r = 0; r < g->size; r++)
            if ((size_t)r != owner) memcpy((char *)g->slots[r].buf + (i0 - first) * esize, src, (stop - i0) * esize);
        i0 = stop;
    }
}

static void reduce_f64(lcm_group *g, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) {
        double s = ((const double *)g->slots[0].buf)[i];
        for (int r = 1; r < g->size; r++) s += ((const double *)g->slots[r].buf)[i];
        for (int r = 0; r < g->size; r++) ((double *)g->slots[r].buf)[i] = s;
    }
}

static int run_collective(lcm_comm *c, const lcm_coll_slot *mine, lcm_error *err) {
    lcm_group *g = c->group;
    const char *what = coll_name(mine->kind);
    const int me = c->rank - g->rank0;
    g->slots[me] = *mine;
    LCM_TRY(group_wait(g, c->rank, what, 1, err));

    int rc = check_slots(g, err);
    if (g->xp) {
        /* Local rank 0 does the whole collective with the other processes (group.h); the others wait
         * for it without the abort (its exchange polls the stop flag, so the wait ends). */
        if (me == 0) g->xp_rc = lcm_xproc_collective(g, rc, &g->xp_err);
        group_wait(g, c->rank, what, 0, err);
        if (rc == 0 && g->xp_rc != 0) {
            rc = g->xp_rc;
            *err = g->xp_err;
        }
    } else if (rc == 0 && mine->kind == COLL_GATHER) {
        char *to = (char *)g->slots[0].recv + mine->begin; /* rank 0 may pass its part in place */
        if (mine->n > 0 && to != (char *)mine->buf) memcpy(to, mine->buf, (size_t)mine->n);
    } else if (rc == 0 && mine->kind == COLL_BROADCAST) {
        if (c->rank != mine->root && mine->n > 0) memcpy(mine->buf, g->slots[mine->root].buf, (size_t)mine->n);
    } else if (rc == 0) {
        /* This rank's share of the elements: contiguous, sizes differing by at most one. */
        const size_t first = is_sharded(mine->kind) ? (size_t)mine->begin : 0;
        size_t n = (size_t)mine->n - first, per = n / (size_t)g->size, extra = n % (size_t)g->size, r = (size_t)me;
        size_t lo = first + r * per + (r < extra ? r : extra);
        size_t hi = lo + per + (r < extra ? 1 : 0);
        const size_t slice = (size_t)mine->slice;
        switch (mine->kind) {
        case COLL_ALLREDUCE_F32: reduce_f32(g, lo, hi); break;
        case COLL_ALLREDUCE_BF16: reduce_bf16(g, lo, hi); break;
        case COLL_RS_F32: reduce_scatter_f32(g, first, lo, hi, slice); break;
        case COLL_RS_BF16: reduce_scatter_bf16(g, first, lo, hi, slice); break;
        case COLL_AG_F32: all_gather_elems(g, first, lo, hi, slice, sizeof(float)); break;
        case COLL_AG_BF16: all_gather_elems(g, first, lo, hi, slice, sizeof(uint16_t)); break;
        default: reduce_f64(g, lo, hi); break;
        }
    }
    group_wait(g, c->rank, what, 0, err); /* not abortable: see the header comment */
    return rc;
}

static int local_allreduce(lcm_comm *c, void *buf, size_t n, lcm_red_dtype dtype, lcm_error *err) {
    lcm_coll_slot s = {.buf = buf, .n = n > (size_t)LLONG_MAX ? -1 : (long long)n};
    if (dtype == LCM_RED_F32) {
        s.kind = COLL_ALLREDUCE_F32;
    } else if (dtype == LCM_RED_BF16) {
        s.kind = COLL_ALLREDUCE_BF16;
    } else {
        s.kind = COLL_ALLREDUCE_BAD_DTYPE;
        s.root = (int)dtype;
    }
    return run_collective(c, &s, err);
}

static int sharded(lcm_comm *c, void *buf, void *recv, size_t begin, size_t end, size_t slice, lcm_red_dtype dtype,
                   int kind_f32, int kind_bf16, lcm_error *err) {
    lcm_coll_slot s = {.buf = buf,
                       .recv = recv,
                       .n = end > (size_t)LLONG_MAX ? -1 : (long long)end,
                       .begin = begin > (size_t)LLONG_MAX ? -1 : (long long)begin,
                       .slice = slice > (size_t)LLONG_MAX ? -1 : (long long)slice};
    if (dtype == LCM_RED_F32) {
        s.kind = kind_f32;
    } else if (dtype == LCM_RED_BF16) {
        s.kind = kind_bf16;
    } else {
        s.kind = COLL_SHARDED_BAD_DTYPE;
        s.root = (int)dtype;
    }
    return run_collective(c, &s, err);
}

static int local_reduce_scatter(lcm_comm *c, const void *send, void *recv, size_t begin, size_t end, size_t slice,
                                lcm_red_dtype dtype, lcm_error *err) {
    /* The send buffer is only read (the slot's pointer is not const because broadcast writes through it). */
    return sharded(c, (void *)send, recv, begin, end, slice, dtype, COLL_RS_F32, COLL_RS_BF16, err);
}

static int local_all_gather(lcm_comm *c, void *buf, size_t begin, size_t end, size_t slice, lcm_red_dtype dtype,
                            lcm_error *err) {
    return sharded(c, buf, NULL, begin, end, slice, dtype, COLL_AG_F32, COLL_AG_BF16, err);
}

int lcm_comm_sum_f64(lcm_comm *c, double *buf, int n, lcm_error *err) {
    lcm_coll_slot s = {.kind = COLL_SUM_F64, .buf = buf, .n = n};
    return run_collective(c, &s, err);
}

int lcm_comm_gather(lcm_comm *c, const void *src, size_t n, void *dst, size_t dst_size, size_t offset,
                    lcm_error *err) {
    lcm_coll_slot s = {.kind = COLL_GATHER,
                       .buf = (void *)src, /* only read (the slot's pointer is not const: see above) */
                       .recv = dst,
                       .n = n > (size_t)LLONG_MAX ? -1 : (long long)n,
                       .begin = offset > (size_t)LLONG_MAX ? -1 : (long long)offset,
                       .slice = dst_size > (size_t)LLONG_MAX ? -1 : (long long)dst_size};
    return run_collective(c, &s, err);
}

int lcm_comm_broadcast(lcm_comm *c, void *buf, size_t n, int root, lcm_error *err) {
    lcm_coll_slot s = {.kind = COLL_BROADCAST, .buf = buf, .n = n > (size_t)LLONG_MAX ? -1 : (long long)n,
                       .root = root};
    return run_collective(c, &s, err);
}
