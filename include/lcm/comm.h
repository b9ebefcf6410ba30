/* comm.h: collectives between the worker threads of one process, and of several processes.
 *
 * A group is created once, on the main thread, for N ranks (one per device); each worker thread then
 * uses only its own rank's lcm_comm. Under an MPI launcher (include/lcm/mpi.h) a group spans every
 * process: ranks are global (process 0's devices first, in order), each process holds the comms of its
 * own devices only, and lcm_group_span joins the processes' groups (src/comm/mpi.c). Two implementations:
 *  - local: CPU worker threads; buffers are reduced through shared memory in rank order 0..N-1, so the
 *    result never depends on thread timing.
 *  - nccl: GPUs; communicators from one ncclCommInitAll, device buffers reduced on the backend's
 *    communication stream.
 * Host-side values (loss sums, counts, flags) and barriers always go through shared memory, in both.
 *
 * Any rank can abort the group (lcm_group_abort): every rank waiting in a barrier or collective, now or
 * later, returns LCM_ERR_INTERRUPTED instead of hanging; NCCL communicators are aborted. */
#ifndef LCM_COMM_H
#define LCM_COMM_H

#include <stddef.h>
#include <stdint.h>
#include "lcm/error.h"

typedef struct lcm_group lcm_group;
typedef struct lcm_comm lcm_comm;

typedef enum { LCM_RED_F32, LCM_RED_BF16 } lcm_red_dtype;

typedef struct lcm_comm_ops {
    /* Sum over ranks, in place, of a DEVICE buffer. NCCL: enqueued on the stream bound with
     * lcm_comm_bind_stream; local: done when it returns. */
    int (*allreduce)(lcm_comm *c, void *buf, size_t n, lcm_red_dtype dtype, lcm_error *err);
    /* The sharded collectives work on a range [begin, end) of a flat DEVICE vector whose element i is
     * owned by rank i / slice (include/lcm/shard.h); every rank passes the same begin, end and slice.
     * Same stream rules as allreduce.
     * reduce_scatter: send holds elements [begin, end) of this rank's vector (send[0] is element
     * begin); the sum over ranks of each element i goes to its owner r only, at recv[i - r * slice]
     * (recv holds the owner's slice). In place when recv == send + (r * slice - begin). Local: the same
     * rank-order sums as allreduce, so the owners get an all-reduce's bits.
     * all_gather: in place on the whole vector: buf points at element begin, and each element of
     * [begin, end) is copied from its owner's buf into every rank's (the dtype gives only the element
     * size). NCCL: ncclReduceScatter / ncclAllGather when the range is [0, size * slice), else one
     * ncclReduce / ncclBroadcast per owner in a group (the owners' parts of a range differ in length). */
    int (*reduce_scatter)(lcm_comm *c, const void *send, void *recv, size_t begin, size_t end, size_t slice,
                          lcm_red_dtype dtype, lcm_error *err);
    int (*all_gather)(lcm_comm *c, void *buf, size_t begin, size_t end, size_t slice, lcm_red_dtype dtype,
                      lcm_error *err);
    /* NCCL: poll the communicator's asynchronous error (0 when healthy). Local: 0. */
    int (*check)(lcm_comm *c, lcm_error *err);
} lcm_comm_ops;

struct lcm_comm {
    const lcm_comm_ops *ops;
    lcm_group *group;
    int rank;
    int size;
    void *impl;
};

/* N ranks of CPU worker threads. */
int lcm_group_create_local(lcm_group **out, int n, lcm_error *err);
/* N GPUs (ordinals in gpus[], each at most once) through ncclCommInitAll. Sets NCCL_RUNTIME_CONNECT=0
 * first unless the user set it. Errors name the failing NCCL call. Needs a CUDA build. Under MPI with
 * more than one process: process 0 makes the NCCL unique id and broadcasts it over MPI, and each local
 * GPU joins one communicator over all processes' GPUs with ncclCommInitRank (global rank = the
 * process's first rank + its index here) inside one group call; lcm_group_span then adds the host
 * side. */
int lcm_group_create_nccl(lcm_group **out, int n, const int *gpus, lcm_error *err);
/* The comm of global rank `rank`, or NULL when that rank is not in this process. */
lcm_comm *lcm_group_comm(lcm_group *g, int rank);
/* Ranks in all processes; the first rank of this process and how many it holds. */
int lcm_group_size(const lcm_group *g);
int lcm_group_first_rank(const lcm_group *g);
int lcm_group_local_size(const lcm_group *g);
/* Join this process's group to those of the other MPI processes (a no-op in one process): every
 * process calls it on its main thread, with the group it made for its own devices. The local group's
 * host collectives, all-reduce, reduce-scatter and all-gather then cover every rank of every process,
 * with the same rank-order sums (so the bits are those of one process holding all the ranks). An NCCL
 * group made under MPI already spans the processes for device buffers; this adds the host side.
 * Returns an error (naming the processes) when the processes disagree on the group's kind. */
int lcm_group_span(lcm_group *g, lcm_error *err);
/* For the watchdog's message: the processes a cross-process collective in progress still waits for
 * ("process 1 (node b, ranks 2-3)"), or "" when none or in one process. Any thread, any time. */
void lcm_group_waiting_on(const lcm_group *g, char *out, size_t cap);
/* Raise the stop flag (first reason wins, kept for the final message) and abort NCCL communicators. */
void lcm_group_abort(lcm_group *g, const lcm_error *reason);
int lcm_group_aborted(const lcm_group *g);
/* The error that caused the abort (code LCM_OK when none). */
const lcm_error *lcm_group_abort_reason(const lcm_group *g);
void lcm_group_destroy(lcm_group *g);

/* NCCL ranks: the cudaStream_t (as void *) device collectives are enqueued on. */
void lcm_comm_bind_stream(lcm_comm *c, void *stream);

/* Host-side collectives (all ranks must call them, in the same order). */
int lcm_comm_barrier(lcm_comm *c, lcm_error *err);
/* Sum of n doubles over ranks, in rank order, into every rank's buf. */
int lcm_comm_sum_f64(lcm_comm *c, double *buf, int n, lcm_error *err);
/* Every rank's n bytes of src into rank 0's dst (dst_size bytes) at `offset` (each rank its own n and
 * offset; other ranks pass dst NULL). Host memory. */
int lcm_comm_gather(lcm_comm *c, const void *src, size_t n, void *dst, size_t dst_size, size_t offset,
                    lcm_error *err);
/* Rank `root`'s n bytes into every rank's buf. */
int lcm_comm_broadcast(lcm_comm *c, void *buf, size_t n, int root, lcm_error *err);

#endif
