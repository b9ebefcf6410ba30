/* nccl.c: the NCCL comm group (CUDA builds only): one worker thread per GPU, the communicators made up
 * front on the main thread: by one ncclCommInitAll in one process, or under MPI by ncclCommInitRank for
 * each local GPU inside one group call, with the unique id that process 0 broadcasts over MPI. Device buffers are summed by
 * ncclAllReduce (reduce-scatter and all-gather by their NCCL calls) on the stream each rank binds; barriers, host collectives and the stop flag are the
 * shared group machinery of local.c.
 *
 * Abort protocol. lcm_group_abort may run on any thread while the others are inside NCCL, and NCCL
 * frees every communicator of the clique once the last one is aborted, so an abort must never free a
 * communicator under a thread that is using it. Each rank's communicator therefore has a state:
 *   IDLE -> IN_CALL (its thread is inside an NCCL call) -> IDLE, or
 *   IDLE -> ABORTED (the aborter calls ncclCommAbort), or
 *   IN_CALL -> ABORT_PENDING (an abort came during the call) -> ABORTED (the rank's own thread calls
 *   ncclCommAbort when the call returns).
 * A compare-and-swap decides every transition, so each communicator is aborted exactly once, by
 * exactly one thread, never while in use. After an abort a rank's allreduce and check return
 * LCM_ERR_INTERRUPTED without touching the communicator; a thread must not use the ncclComm_t in any
 * other way (it is freed). Kernels already enqueued stop because ncclCommAbort tells them to, so a
 * thread blocked in cudaStreamSynchronize on them returns. */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../group.h"
#include "lcm/backend.h"
#include "lcm/mpi.h"

enum { RANK_IDLE, RANK_IN_CALL, RANK_ABORT_PENDING, RANK_ABORTED };

typedef struct nccl_rank {
    ncclComm_t comm;
    cudaStream_t stream; /* from lcm_comm_bind_stream; used by the rank's own thread only */
    int gpu;
    atomic_int state;    /* RANK_* (see the abort protocol above) */
} nccl_rank;

/* NCCL calls may change the calling thread's current device (a destroy or abort switches to the
 * communicator's GPU); the thread that called us keeps working on its own, so put it back. */
static void abort_comm(ncclComm_t comm) {
    int dev = -1;
    int have_dev = cudaGetDevice(&dev) == cudaSuccess;
    /* Nothing to report an abort failure to: the group is already stopping with its own reason, and
     * the communicator must not be touched again whatever the outcome. */
    (void)ncclCommAbort(comm);
    if (have_dev) (void)cudaSetDevice(dev);
}

static int rank_enter(lcm_comm *c, nccl_rank *nr, const char *what, lcm_error *err);
static void rank_leave(nccl_rank *nr);

static int nccl_allreduce(lcm_comm *c, void *buf, size_t n, lcm_red_dtype dtype, lcm_error *err) {
    nccl_rank *nr = c->impl;
    ncclDataType_t type;
    if (dtype == LCM_RED_F32) type = ncclFloat32;
    else if (dtype == LCM_RED_BF16) type = ncclBfloat16;
    else return lcm_fail(err, LCM_ERR_INTERNAL, "NCCL all-reduce on GPU %d: unknown dtype %d", nr->gpu, (int)dtype);
    if (!nr->stream)
        return lcm_fail(err, LCM_ERR_INTERNAL,
                        "NCCL all-reduce on GPU %d (rank %d): no stream bound; call lcm_comm_bind_stream first",
                        nr->gpu, c->rank);
    LCM_TRY(rank_enter(c, nr, "NCCL all-reduce", err));
    ncclResult_t r = ncclAllReduce(buf, buf, n, type, ncclSum, nr->comm, nr->stream);
    int rc = 0;
    if (r != ncclSuccess) {
        const char *last = ncclGetLastError(nr->comm);
        rc = lcm_fail(err, LCM_ERR_DEVICE, "ncclAllReduce of %zu %s elements on GPU %d (rank %d) failed: %s (%s)", n,
                      dtype == LCM_RED_F32 ? "f32" : "bf16", nr->gpu, c->rank, ncclGetErrorString(r),
                      last && last[0] ? last : "no detail from NCCL");
    }
    rank_leave(nr);
    /* An abort during the call cuts the enqueued all-reduce short: its result is not to be used. */
    if (rc == 0 && lcm_group_aborted(c->group)) rc = lcm_group_interrupted(c->group, c->rank, "NCCL all-reduce", err);
    return rc;
}

/* Sharded collectives (comm.h). The whole padded vector splits evenly: one ncclReduceScatter or
 * ncclAllGather. A bucket's range does not: each owner's part is reduced to it (ncclReduce) or
 * broadcast from it (ncclBroadcast), all in one group so that NCCL runs them as one launch. `send`
 * holds the range from element begin on; recv (reduce-scatter) is this rank's slice. */
static int nccl_sharded(lcm_comm *c, const void *send, void *recv, size_t begin, size_t end, size_t slice,
                        lcm_red_dtype dtype, int gather, lcm_error *err) {
    nccl_rank *nr = c->impl;
    const char *what = gather ? "NCCL all-gather" : "NCCL reduce-scatter";
    ncclDataType_t type;
    size_t esize;
    if (dtype == LCM_RED_F32) type = ncclFloat32, esize = 4;
    else if (dtype == LCM_RED_BF16) type = ncclBfloat16, esize = 2;
    else return lcm_fail(err, LCM_ERR_INTERNAL, "%s on GPU %d: unknown dtype %d", what, nr->gpu, (int)dtype);
    if (slice == 0 || begin > end || (end > 0 && (end - 1) / slice >= (size_t)c->size))
        return lcm_fail(err, LCM_ERR_INTERNAL, "%s on GPU %d: range [%zu, %zu) does not fit %d slices of %zu", what,
                        nr->gpu, begin, end, c->size, slice);
    if (!nr->stream)
        return lcm_fail(err, LCM_ERR_INTERNAL, "%s on GPU %d (rank %d): no stream bound; call lcm_comm_bind_stream "
                        "first", what, nr->gpu, c->rank);
    if (begin == end) return 0;
    LCM_TRY(rank_enter(c, nr, what, err));
    const char *src = send;
    char *dst = recv;
    ncclResult_t r = ncclSuccess;
    const char *call = gather ? "ncclAllGather" : "ncclReduceScatter";
    if (begin == 0 && end == (size_t)c->size * slice) {
        r = gather ? ncclAllGather(src + (size_t)c->rank * slice * esize, (void *)src, slice, type, nr->comm, nr->stream)
                   : ncclReduceScatter(src, dst, slice, type, ncclSum, nr->comm, nr->stream);
    } else {
        call = gather ? "ncclBroadcast" : "ncclReduce";
        r = ncclGroupStart();
        for (size_t owner = begin / slice; r == ncclSuccess && owner * slice < end; owner++) {
            size_t lo = owner * slice > begin ? owner * slice : begin;
            size_t hi = (owner + 1) * slice < end ? (owner + 1) * slice : end;
            const char *p = src + (lo - begin) * esize;
            /* recvbuff counts only on the root, the owner */
            char *q = (size_t)c->rank == owner ? dst + (lo - owner * slice) * esize : NULL;
            r = gather ? ncclBroadcast(p, (void *)p, hi - lo, type, (int)owner, nr->comm, nr->stream)
                       : ncclReduce(p, q, hi - lo, type, ncclSum, (int)owner, nr->comm, nr->stream);
        }
        ncclResult_t e = ncclGroupEnd();
        if (r == ncclSuccess) r = e;
    }
    int rc = 0;
    if (r != ncclSuccess) {
        const char *last = ncclGetLastError(nr->comm);
        rc = lcm_fail(err, LCM_ERR_DEVICE, "%s of elements [%zu, %zu) (%s) on GPU %d (rank %d) failed: %s (%s)", call,
                      begin, end, dtype == LCM_RED_F32 ? "f32" : "bf16", nr->gpu, c->rank, ncclGetErrorString(r),
                      last && last[0] ? last : "no detail from NCCL");
    }
    rank_leave(nr);
    if (rc == 0 && lcm_group_aborted(c->group)) rc = lcm_group_interrupted(c->group, c->rank, what, err);
    return rc;
}

static int nccl_reduce_scatter(lcm_comm *c, const void *send, void *recv, size_t begin, size_t end, size_t slice,
                               lcm_red_dtype dtype, lcm_error *err) {
    return nccl_sharded(c, send, recv, begin, end, slice, dtype, 0, err);
}

static int nccl_all_gather(lcm_comm *c, void *buf, size_t begin, size_t end, size_t slice, lcm_red_dtype dtype,
                           lcm_error *err) {
    return nccl_sharded(c, buf, NULL, begin, end, slice, dtype, 1, err);
}

static int nccl_check(lcm_comm *c, lcm_error *err) {
    nccl_rank *nr = c->impl;
    LCM_TRY(rank_enter(c, nr, "NCCL error check", err));
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(nr->comm, &state);
    int rc = 0;
    if (r != ncclSuccess) {
        rc = lcm_fail(err, LCM_ERR_DEVICE, "ncclCommGetAsyncError on GPU %d (rank %d) failed: %s (%s)", nr->gpu,
                      c->rank, ncclGetErrorString(r), ncclGetLastError(nr->comm));
    } else if (state != ncclSuccess && state != ncclInProgress) {
        rc = lcm_fail(err, LCM_ERR_DEVICE, "NCCL communicator of GPU %d (rank %d) failed: %s (%s)", nr->gpu, c->rank,
                      ncclGetErrorString(state), ncclGetLastError(nr->comm));
    }
    rank_leave(nr);
    return rc;
}

static const lcm_comm_ops nccl_ops = {
    .allreduce = nccl_allreduce,
    .reduce_scatter = nccl_reduce_scatter,
    .all_gather = nccl_all_gather,
    .check = nccl_check,
};

static int rank_enter(lcm_comm *c, nccl_rank *nr, const char *what, lcm_error *err) {
    int expected = RANK_IDLE;
    if (!atomic_compare_exchange_strong(&nr->state, &expected, RANK_IN_CALL))
        return lcm_group_interrupted(c->group, c->rank, what, err);
    /* Stopped but not yet aborted: do not start new work on a group that is going down. */
    if (lcm_group_aborted(c->group)) {
        rank_leave(nr);
        return lcm_group_interrupted(c->group, c->rank, what, err);
    }
    return 0;
}

static void rank_leave(nccl_rank *nr) {
    int expected = RANK_IN_CALL;
    if (atomic_compare_exchange_strong(&nr->state, &expected, RANK_IDLE)) return;
    /* ABORT_PENDING: an abort came while this thread was inside NCCL; finishing it is ours. */
    atomic_store(&nr->state, RANK_ABORTED);
    abort_comm(nr->comm);
}

/* Abort every communicator that is not in use now; leave the others to their threads. */
static void abort_idle_comms(lcm_group *g) {
    nccl_rank *ranks = g->impl_state;
    for (int r = 0; r < g->size; r++) {
        int s = atomic_load(&ranks[r].state);
        for (;;) {
            if (s == RANK_IDLE) {
                if (atomic_compare_exchange_strong(&ranks[r].state, &s, RANK_ABORTED)) {
                    abort_comm(ranks[r].comm);
                    break;
                }
            } else if (s == RANK_IN_CALL) {
                if (atomic_compare_exchange_strong(&ranks[r].state, &s, RANK_ABORT_PENDING)) break;
            } else {
                break;
            }
        }
    }
}

static void nccl_bind_stream(lcm_comm *c, void *stream) { ((nccl_rank *)c->impl)->stream = (cudaStream_t)stream; }

/* The worker threads have been joined and their streams synchronised. */
static void nccl_destroy(lcm_group *g) {
    nccl_rank *ranks = g->impl_state;
    if (!ranks) return;
    int dev = -1;
    int have_dev = cudaGetDevice(&dev) == cudaSuccess;
    if (lcm_group_aborted(g)) {
        /* Normally all aborted already; this catches an abort whose hook has not reached them. */
        abort_idle_comms(g);
    } else {
        /* One thread destroys them all: NCCL finishes the clique when its last communicator goes.
         * A failure here has no one left to report to: the run's result is already decided. */
        for (int r = 0; r < g->size; r++) (void)ncclCommDestroy(ranks[r].comm);
    }
    if (have_dev) (void)cudaSetDevice(dev);
    free(ranks);
    g->impl_state = NULL;
}

static const lcm_group_impl nccl_impl = {
    .bind_stream = nccl_bind_stream,
    .abort = abort_idle_comms,
    .destroy = nccl_destroy,
};

static int check_gpus(int n, const int *gpus, lcm_error *err) {
    if (n < 1) return lcm_fail(err, LCM_ERR_INTERNAL, "an NCCL group needs at least one GPU, got %d", n);
    if (!gpus) return lcm_fail(err, LCM_ERR_INTERNAL, "an NCCL group of %d ranks needs a GPU list, got NULL", n);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < i; j++) {
            if (gpus[i] == gpus[j])
                return lcm_fail(err, LCM_ERR_CONFIG,
                                "GPU %d is listed twice (ranks %d and %d); each rank needs a GPU of its own: list "
                                "every GPU at most once in trainer.devices",
                                gpus[i], j, i);
        }
    }
    int count = 0;
    LCM_TRY(lcm_cuda_device_count(&count, err));
    if (count == 0)
        return lcm_fail(err, LCM_ERR_DEVICE,
                        "no GPU is visible (no NVIDIA driver or no GPU; CUDA_VISIBLE_DEVICES may hide them); train "
                        "on the CPU with trainer.devices=cpu");
    if (n > count)
        return lcm_fail(err, LCM_ERR_DEVICE, "%d GPUs asked for but only %d visible; list at most %d in "
                        "trainer.devices", n, count, count);
    for (int i = 0; i < n; i++) {
        if (gpus[i] < 0 || gpus[i] >= count)
            return lcm_fail(err, LCM_ERR_DEVICE, "GPU %d (rank %d) does not exist: the visible GPUs are 0..%d",
                            gpus[i], i, count - 1);
    }
    return 0;
}

int lcm_group_create_nccl(lcm_group **out, int n, const int *gpus, lcm_error *err) {
    *out = NULL;
    if (check_gpus(n, gpus, err) != 0)
        return lcm_error_context(err, "cannot create NCCL communicators for %d GPU%s", n, n == 1 ? "" : "s");

    /* Make every connection inside ncclCommInitAll rather than lazily at a rank's first collective:
     * a lazy connect allocates device memory while peers may already run NCCL kernels, which can
     * deadlock (engineering notes, NCCL). setenv happens here, on the main thread, before any worker
     * or NCCL thread reads the environment; overwrite=0 keeps a value the user set. */
    if (setenv("NCCL_RUNTIME_CONNECT", "0", 0) != 0)
        return lcm_fail(err, LCM_ERR_NOMEM, "cannot set NCCL_RUNTIME_CONNECT=0 in the environment");

    lcm_group *g = NULL;
    LCM_TRY(lcm_group_alloc(&g, n, &nccl_ops, err));
    nccl_rank *ranks = calloc((size_t)n, sizeof *ranks);
    ncclComm_t *comms = calloc((size_t)n, sizeof *comms);
    if (!ranks || !comms) {
        free(ranks);
        free(comms);
        lcm_group_destroy(g);
        return lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for %d NCCL communicators", n);
    }

    /* Several processes: global rank = the process's first rank + the local index (engineering rule:
     * one ncclCommInitRank per local GPU, all inside one group, with process 0's unique id). */
    int rank0 = 0, world = n, rc = 0;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (lcm_mpi_size() > 1) {
        rc = lcm_mpi_layout(n, &rank0, &world, err);
        ncclResult_t u = ncclSuccess;
        if (!rc && lcm_mpi_rank() == 0) u = ncclGetUniqueId(&id);
        /* Broadcast even after a failed ncclGetUniqueId (an id of zeros), so no process waits forever;
         * process 0 then reports the failure. */
        if (!rc) rc = lcm_mpi_broadcast(&id, sizeof id, 0, "the NCCL unique id from process 0", err);
        if (!rc && u != ncclSuccess)
            rc = lcm_fail(err, LCM_ERR_DEVICE, "ncclGetUniqueId failed on process 0: %s", ncclGetErrorString(u));
        if (rc) {
            free(ranks);
            free(comms);
            lcm_group_destroy(g);
            return rc;
        }
    }
    ncclResult_t r = ncclSuccess;
    if (world == n) {
        r = ncclCommInitAll(comms, n, gpus);
    } else {
        int dev = -1;
        int have_dev = cudaGetDevice(&dev) == cudaSuccess;
        r = ncclGroupStart();
        for (int i = 0; i < n && r == ncclSuccess; i++) {
            if (cudaSetDevice(gpus[i]) != cudaSuccess) r = ncclUnhandledCudaError;
            else r = ncclCommInitRank(&comms[i], world, id, rank0 + i);
        }
        ncclResult_t e = ncclGroupEnd();
        if (r == ncclSuccess) r = e;
        if (have_dev) (void)cudaSetDevice(dev);
    }
    if (r != ncclSuccess) {
        const char *last = ncclGetLastError(NULL);
        char list[256] = "";
        for (int i = 0, len = 0; i < n && len < (int)sizeof list; i++)
            len += snprintf(list + len, sizeof list - (size_t)len, "%s%d", i ? "," : "", gpus[i]);
        if (world == n)
            lcm_fail(err, LCM_ERR_DEVICE, "ncclCommInitAll for GPUs %s failed: %s (%s); NCCL_DEBUG=WARN shows more",
                     list, ncclGetErrorString(r), last && last[0] ? last : "no detail from NCCL");
        else
            lcm_fail(err, LCM_ERR_DEVICE, "ncclCommInitRank for GPUs %s (global ranks %d-%d of %d) on node %s failed: "
                     "%s (%s); NCCL_DEBUG=WARN shows more (README: several machines)", list, rank0, rank0 + n - 1,
                     world, lcm_mpi_host(), ncclGetErrorString(r), last && last[0] ? last : "no detail from NCCL");
        for (int i = 0; i < n; i++)
            if (comms[i]) abort_comm(comms[i]); /* already failing: the init error is the one to report */
        free(comms);
        free(ranks);
        lcm_group_destroy(g);
        return LCM_ERR_DEVICE;
    }

    g->rank0 = rank0;
    g->world = world;
    for (int i = 0; i < n; i++) {
        ranks[i].comm = comms[i];
        ranks[i].gpu = gpus[i];
        atomic_init(&ranks[i].state, RANK_IDLE);
        g->comms[i].impl = &ranks[i];
        g->comms[i].rank = rank0 + i;
        g->comms[i].size = world;
    }
    free(comms);
    g->impl_state = ranks;
    g->impl = &nccl_impl;
    *out = g;
    return 0;
}
