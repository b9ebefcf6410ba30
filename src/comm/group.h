/* group.h (private to src/comm/): the state of a group that both implementations share. local.c owns
 * it: rank bookkeeping, the stop flag with its reason, the abortable barrier and the host-side
 * collectives. cuda/nccl.c builds an NCCL group on top of it and adds its communicators through
 * lcm_group_impl. */
#ifndef LCM_DIST_GROUP_H
#define LCM_DIST_GROUP_H

#include <pthread.h>
#include <stdatomic.h>

#include "lcm/comm.h"

/* The collectives, as the slots name them (local.c runs them in one process, mpi.c across processes). */
enum {
    COLL_ALLREDUCE_F32,
    COLL_ALLREDUCE_BF16,
    COLL_ALLREDUCE_BAD_DTYPE, /* root holds the dtype value that was passed */
    COLL_SUM_F64,
    COLL_BROADCAST,
    COLL_GATHER, /* lcm_comm_gather: n bytes of buf to rank 0's recv + begin (slice: recv's size) */
    COLL_RS_F32,
    COLL_RS_BF16,
    COLL_AG_F32,
    COLL_AG_BF16,
    COLL_SHARDED_BAD_DTYPE, /* root holds the dtype value that was passed */
    COLL_BARRIER_X,         /* a barrier's exchange across processes (never in a slot) */
};

typedef struct lcm_xproc lcm_xproc;

/* What one rank passed to the collective in progress. Written by that rank before the collective's
 * first barrier, read by every rank between its two barriers (the barrier's mutex orders both). */
typedef struct lcm_coll_slot {
    int kind;      /* which collective and element type (local.c) */
    void *buf;     /* sharded collectives: element begin of the range (reduce-scatter: the send buffer) */
    void *recv;    /* reduce-scatter: the rank's slice, element rank * slice first */
    long long n;   /* element count (bytes for broadcast), as the caller passed it; sharded: the range's end */
    long long begin, slice; /* sharded collectives: the range's begin and the elements each rank owns */
    int root;      /* broadcast: the root; an all-reduce of unknown dtype: that dtype (for the message) */
} lcm_coll_slot;

/* What an implementation adds to the shared group. NULL entries: nothing to do. */
typedef struct lcm_group_impl {
    void (*bind_stream)(lcm_comm *c, void *stream);
    /* Called once, by the first lcm_group_abort, after the stop flag is raised. */
    void (*abort)(lcm_group *g);
    /* Frees g->impl_state (the worker threads have been joined). */
    void (*destroy)(lcm_group *g);
} lcm_group_impl;

struct lcm_group {
    int size;                  /* ranks in this process */
    int rank0;                 /* the global rank of this process's first rank (0 in one process) */
    int world;                 /* ranks in all processes (size in one process) */
    lcm_comm *comms;           /* [size]; comms[i].rank = rank0 + i */
    lcm_coll_slot *slots;      /* [size], by local index */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;               /* ranks inside the current barrier generation */
    unsigned long generation;  /* advances when the last rank arrives */

    atomic_int stopped;        /* the stop flag; set once, under mu, after `reason` is written */
    lcm_error reason;

    const lcm_group_impl *impl;
    void *impl_state;

    /* Across processes (mpi.c; NULL in one process): after a collective's first barrier, local rank 0
     * exchanges the slots' data with the other processes and does the whole collective for its process
     * while the other local ranks wait; its verdict is left here for them. */
    lcm_xproc *xp;
    int xp_rc;
    lcm_error xp_err;
};

/* A group with the shared machinery ready and every rank's comm using `ops`; impl left NULL. */
int lcm_group_alloc(lcm_group **out, int n, const lcm_comm_ops *ops, lcm_error *err);
/* Fill err with LCM_ERR_INTERRUPTED: `what` on `rank` stopped because the group was aborted. */
int lcm_group_interrupted(const lcm_group *g, int rank, const char *what, lcm_error *err);

/* mpi.c: the cross-process part of a collective whose slots are filled, run by local rank 0 only.
 * local_rc: this process's own check of the slots (non-zero: the peers are told, nothing moves). */
int lcm_xproc_collective(lcm_group *g, int local_rc, lcm_error *err);
void lcm_xproc_free(lcm_xproc *xp);

#endif
