/* mpi.c: lcm across processes (include/lcm/mpi.h): joining an MPI launcher's processes, the main
 * thread's agreements (layout, digests, broadcasts), and the cross-process level of a comm group
 * (lcm_group_span): the collectives of the CPU workers, and the host collectives of every group.
 *
 * A cross-process collective is run by local rank 0 of each process (the "leader", group.h) once its
 * process's ranks have filled their slots. Every collective starts with a header exchange between all
 * processes (kind, sizes, root), so that a process issuing another collective is reported by every
 * process instead of corrupting buffers; a barrier is that exchange alone. The data then moves by
 * point-to-point messages that the leader polls (MPI_Testsome): the poll sees the group's stop flag, so
 * an abort ends the wait, and it counts per peer what is still outstanding, which is what the watchdog
 * names when a peer hangs (lcm_group_waiting_on).
 *
 * Sums are those of one process holding every rank: each element is summed over the global ranks in
 * order 0..N-1 (bf16: in fp32, rounded once), so `mpirun -np 2 ... cpu:2` gives the bits of `cpu:4`.
 * All-reduce: process q sums the q-th part of the elements from every rank's buffer (each process sends
 * it its ranks' part q), then every process sends its summed part to all (reduce-scatter + all-gather).
 * Reduce-scatter: process q sums the elements its ranks own. All-gather: the owners' elements go to all.
 *
 * Thread use: the main thread before and after the workers, the leader during them, never both at once
 * (MPI_THREAD_SERIALIZED is enough; MULTIPLE is asked for because a watchdog may abort the process while
 * the leader is inside MPI). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "group.h"
#include "lcm/half.h"
#include "lcm/mpi.h"

/* The main thread's agreements carry a few bytes a process (digests, counts, node names, NCCL's id). */
#define MSG_MAX_BOOT (1 << 24)

/* A launcher's environment: Open MPI's mpirun, Hydra (MPICH) and Slurm's PMI2, PMIx. The size, when
 * the launcher says it, is only for the "built without MPI" message. */
static int launched(long *size) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS"};
    *size = 0;
    int any = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMI_RANK") || getenv("PMIX_RANK");
    for (int i = 0; i < 4 && any && *size == 0; i++)
        if (getenv(vars[i])) *size = strtol(getenv(vars[i]), NULL, 10);
    return any;
}

#if LCM_WITH_MPI
#include <mpi.h>

static struct {
    int started, rank, size;
    int seq; /* agreements so far: the tag of the next one's messages */
    char host[MPI_MAX_PROCESSOR_NAME];
    char (*hosts)[64]; /* every process's node name, for messages */
} proc = {0, 0, 1, 0, "", NULL};

int lcm_mpi_built(void) { return 1; }

static int mpi_fail(int code, lcm_error *err, const char *what) {
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(code, msg, &len);
    return lcm_fail(err, LCM_ERR_IO, "%s failed on process %d (node %s): %s", what, proc.rank, proc.host, msg);
}

int lcm_mpi_start(lcm_error *err) {
    long size;
    if (proc.started || !launched(&size)) return 0;
    int provided = 0;
    int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS) return lcm_fail(err, LCM_ERR_IO, "MPI_Init_thread failed (code %d): is this lcm started by a "
                                           "working mpirun or srun?", rc);
    proc.started = 1;
    /* Errors come back to us (a dead peer is then reported by name) instead of ending the process. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &proc.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &proc.size);
    int len = 0;
    MPI_Get_processor_name(proc.host, &len);
    if (provided < MPI_THREAD_SERIALIZED)
        return lcm_fail(err, LCM_ERR_IO, "this MPI library offers thread level %d, lcm needs MPI_THREAD_SERIALIZED or "
                        "more (worker threads take turns calling MPI); use an MPI built with thread support", provided);
    proc.hosts = calloc((size_t)proc.size, sizeof *proc.hosts);
    if (!proc.hosts) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    char mine[64];
    snprintf(mine, sizeof mine, "%.63s", proc.host);
    char (*all)[64] = calloc((size_t)proc.size, sizeof *all);
    if (!all) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    rc = lcm_mpi_allgather(mine, all, sizeof mine, "the exchange of node names", err);
    if (!rc) memcpy(proc.hosts, all, (size_t)proc.size * sizeof *all);
    free(all);
    return rc;
}

int lcm_mpi_rank(void) { return proc.rank; }
int lcm_mpi_size(void) { return proc.size; }
const char *lcm_mpi_host(void) { return proc.host; }

void lcm_mpi_describe(int p, char *out, size_t cap) {
    snprintf(out, cap, "process %d (node %s)", p, proc.hosts && p >= 0 && p < proc.size ? proc.hosts[p] : "?");
}

/* ---- the main thread's agreements, with a deadline ----------------------------------------------
 * Point-to-point messages on MPI_COMM_WORLD, tagged with the agreement's sequence number (the comm
 * groups' messages go on communicators of their own): process 0 collects every process's part and
 * sends the whole back. Waits are polled, so that a process that never arrives (hung, or stuck before
 * the agreement) is named after trainer.hang_timeout_s instead of holding the others for ever. */

static double boot_timeout_s; /* 0: wait as long as it takes */

void lcm_mpi_set_timeout(double seconds) { boot_timeout_s = seconds > 0 ? seconds : 0; }

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Wait for n requests; peer[i] is request i's process. After the deadline: an error naming the first
 * process whose request is outstanding, as one who did not reach (or answer) `what`. */
static int boot_wait(MPI_Request *req, const int *peer, int n, const char *what, lcm_error *err) {
    const double t0 = now_s();
    for (;;) {
        int done = 0;
        int rc = MPI_Testall(n, req, &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, err, what);
        if (done) return 0;
        if (boot_timeout_s > 0 && now_s() - t0 > boot_timeout_s) {
            for (int i = 0; i < n; i++) {
                int one = 0;
                if (req[i] != MPI_REQUEST_NULL) MPI_Test(&req[i], &one, MPI_STATUS_IGNORE);
                if (req[i] == MPI_REQUEST_NULL || one) continue;
                char who[160];
                lcm_mpi_describe(peer[i], who, sizeof who);
                return lcm_fail(err, LCM_ERR_IO, "start-up: %s did not reach %s within %.0f s (trainer.hang_timeout_s), "
                                "waited for by process %d (node %s); the run is stopped", who, what, boot_timeout_s,
                                proc.rank, proc.host);
            }
        }
        struct timespec pause = {0, 1000000}; /* 1 ms: start-up waits, no hurry */
        nanosleep(&pause, NULL);
    }
}

/* Room for one agreement's requests and their processes, n of each. */
static int boot_requests(int n, MPI_Request **req, int **peer, lcm_error *err) {
    *req = calloc((size_t)n, sizeof **req);
    *peer = calloc((size_t)n, sizeof **peer);
    if (*req && *peer) return 0;
    free(*req);
    free(*peer);
    return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
}

int lcm_mpi_allgather(const void *mine, void *all, size_t n, const char *what, lcm_error *err) {
    memcpy((char *)all + (size_t)proc.rank * n, mine, n);
    if (!proc.started || proc.size == 1) return 0;
    const int P = proc.size, tag = 1 + proc.seq++ % 30000;
    if ((size_t)P * n > (size_t)MSG_MAX_BOOT)
        return lcm_fail(err, LCM_ERR_INTERNAL, "%s: %zu bytes from each of %d processes is too much", what, n, P);
    MPI_Request *req;
    int *peer;
    LCM_TRY(boot_requests(P, &req, &peer, err));
    int rc = 0, k = 0;
    if (proc.rank == 0) {
        for (int p = 1; p < P && !rc; p++, k++) {
            peer[k] = p;
            int e = MPI_Irecv((char *)all + (size_t)p * n, (int)n, MPI_BYTE, p, tag, MPI_COMM_WORLD, &req[k]);
            if (e != MPI_SUCCESS) rc = mpi_fail(e, err, what);
        }
        if (!rc) rc = boot_wait(req, peer, k, what, err);
        for (k = 0; !rc && k < P - 1; k++) {
            peer[k] = k + 1;
            int e = MPI_Isend(all, (int)((size_t)P * n), MPI_BYTE, k + 1, tag, MPI_COMM_WORLD, &req[k]);
            if (e != MPI_SUCCESS) rc = mpi_fail(e, err, what);
        }
        if (!rc) rc = boot_wait(req, peer, k, what, err);
    } else {
        peer[0] = peer[1] = 0;
        int e = MPI_Isend(mine, (int)n, MPI_BYTE, 0, tag, MPI_COMM_WORLD, &req[0]);
        if (e == MPI_SUCCESS) e = MPI_Irecv(all, (int)((size_t)P * n), MPI_BYTE, 0, tag, MPI_COMM_WORLD, &req[1]);
        rc = e != MPI_SUCCESS ? mpi_fail(e, err, what) : boot_wait(req, peer, 2, what, err);
    }
    free(req);
    free(peer);
    return rc;
}

int lcm_mpi_broadcast(void *buf, size_t n, int root, const char *what, lcm_error *err) {
    if (!proc.started || proc.size == 1) return 0;
    const int P = proc.size, tag = 1 + proc.seq++ % 30000;
    if (n > (size_t)MSG_MAX_BOOT) return lcm_fail(err, LCM_ERR_INTERNAL, "%s: %zu bytes is too much", what, n);
    MPI_Request *req;
    int *peer;
    LCM_TRY(boot_requests(P, &req, &peer, err));
    int rc = 0, k = 0;
    if (proc.rank == root) {
        for (int p = 0; p < P && !rc; p++) {
            if (p == root) continue;
            peer[k] = p;
            int e = MPI_Isend(buf, (int)n, MPI_BYTE, p, tag, MPI_COMM_WORLD, &req[k++]);
            if (e != MPI_SUCCESS) rc = mpi_fail(e, err, what);
        }
    } else {
        peer[k] = root;
        int e = MPI_Irecv(buf, (int)n, MPI_BYTE, root, tag, MPI_COMM_WORLD, &req[k++]);
        if (e != MPI_SUCCESS) rc = mpi_fail(e, err, what);
    }
    if (!rc) rc = boot_wait(req, peer, k, what, err);
    free(req);
    free(peer);
    return rc;
}

void lcm_mpi_finish(int rc) {
    if (!proc.started) return;
    if (rc != 0) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, rc);
    }
    MPI_Finalize();
    free(proc.hosts);
    proc.hosts = NULL;
    proc.started = 0;
}

#else /* built without MPI */

int lcm_mpi_built(void) { return 0; }

int lcm_mpi_start(lcm_error *err) {
    long size;
    if (!launched(&size) || size == 1) return 0;
    return lcm_fail(err, LCM_ERR_USAGE,
                    "lcm was started by an MPI launcher as one of %ld processes, but this lcm was built without MPI; "
                    "install MPI (Debian: apt-get install openmpi-bin libopenmpi-dev) and rebuild with `make MPI=1`, "
                    "or run one process", size > 0 ? size : 2);
}

int lcm_mpi_rank(void) { return 0; }
int lcm_mpi_size(void) { return 1; }
const char *lcm_mpi_host(void) { return "localhost"; }
void lcm_mpi_describe(int p, char *out, size_t cap) { snprintf(out, cap, "process %d", p); }

void lcm_mpi_set_timeout(double seconds) {}

int lcm_mpi_allgather(const void *mine, void *all, size_t n, const char *what, lcm_error *err) {
    memcpy(all, mine, n);
    return 0;
}

int lcm_mpi_broadcast(void *buf, size_t n, int root, const char *what, lcm_error *err) { return 0; }
void lcm_mpi_finish(int rc) {}

#endif

int lcm_mpi_layout(int local_n, int *rank0, int *world, lcm_error *err) {
    const int P = lcm_mpi_size(), me = lcm_mpi_rank();
    int *counts = calloc((size_t)P, sizeof *counts);
    if (!counts) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    int rc = lcm_mpi_allgather(&local_n, counts, sizeof local_n, "the device layout (devices per process)", err);
    *rank0 = *world = 0;
    for (int p = 0; !rc && p < P; p++) {
        if (p == me) *rank0 = *world;
        *world += counts[p];
    }
    free(counts);
    return rc;
}

int lcm_mpi_agree(uint64_t digest, const char *what, const char *fix, lcm_error *err) {
    const int P = lcm_mpi_size();
    if (P == 1) return 0;
    uint64_t *all = calloc((size_t)P, sizeof *all);
    if (!all) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    int rc = lcm_mpi_allgather(&digest, all, sizeof digest, what, err);
    for (int p = 1; !rc && p < P; p++) {
        if (all[p] == all[0]) continue;
        char who[160];
        lcm_mpi_describe(p, who, sizeof who);
        rc = lcm_fail(err, LCM_ERR_CONFIG, "%s differs on %s from process 0's (digest %016llx there, %016llx on process "
                      "0); %s", what, who, (unsigned long long)all[p], (unsigned long long)all[0], fix);
    }
    free(all);
    return rc;
}

/* ---- the cross-process level of a group ------------------------------------------------------- */

#if LCM_WITH_MPI

#define HDR_MAGIC 0x6c636d78LL /* "lcmx" */
enum { TAG_HDR = 1, TAG_DATA, TAG_RESULT, TAG_DESC };
enum { H_MAGIC, H_KIND, H_N, H_BEGIN, H_SLICE, H_ROOT, H_BAD, H_LEN };
/* One message at most this many bytes (MPI counts are ints); bigger ones go in pieces. */
#define MSG_MAX (1 << 30)

struct lcm_xproc {
    int P, p;            /* processes, and this one */
    int *first, *count;  /* [P]: each process's first global rank and its rank count */
    MPI_Comm comm;       /* a duplicate of MPI_COMM_WORLD: the group's messages only */
    MPI_Request *req;
    int *req_peer;
    int nreq, cap;
    atomic_int *pending; /* [P]: requests with each process not yet complete (read by the watchdog) */
    const char *_Atomic what; /* the collective in progress, for the watchdog */
    long long (*hdr)[H_LEN]; /* [P] */
    char *tmp;
    size_t tmp_cap;
    const void **src;    /* [world]: where each global rank's elements are, during a sum */
};

static int proc_of(const lcm_xproc *x, long long rank) {
    for (int q = 0; q < x->P; q++)
        if (rank < x->first[q] + x->count[q]) return q;
    return x->P - 1;
}

/* "process 1 (node b, ranks 2-3)" */
static void who(const lcm_xproc *x, int q, char *out, size_t cap) {
    const char *host = proc.hosts && q >= 0 && q < proc.size ? proc.hosts[q] : "?";
    if (x->count[q] == 1) snprintf(out, cap, "process %d (node %s, rank %d)", q, host, x->first[q]);
    else snprintf(out, cap, "process %d (node %s, ranks %d-%d)", q, host, x->first[q], x->first[q] + x->count[q] - 1);
}

static int grow(lcm_xproc *x, int more, lcm_error *err) {
    if (x->nreq + more <= x->cap) return 0;
    int cap = (x->nreq + more) * 2;
    MPI_Request *r = realloc(x->req, (size_t)cap * sizeof *r);
    if (r) x->req = r;
    int *pe = realloc(x->req_peer, (size_t)cap * sizeof *pe);
    if (pe) x->req_peer = pe;
    if (!r || !pe) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory for MPI requests");
    x->cap = cap;
    return 0;
}

/* Post a send or receive of n bytes with process q, in pieces of at most MSG_MAX. */
static int post(lcm_xproc *x, int send, int q, void *buf, size_t n, int tag, lcm_error *err) {
    for (size_t off = 0; off < n || (n == 0 && off == 0);) {
        const size_t m = n - off < MSG_MAX ? n - off : MSG_MAX;
        LCM_TRY(grow(x, 1, err));
        MPI_Request *r = &x->req[x->nreq];
        int rc = send ? MPI_Isend((char *)buf + off, (int)m, MPI_BYTE, q, tag, x->comm, r)
                      : MPI_Irecv((char *)buf + off, (int)m, MPI_BYTE, q, tag, x->comm, r);
        if (rc != MPI_SUCCESS) {
            char peer[200], what[240];
            who(x, q, peer, sizeof peer);
            snprintf(what, sizeof what, "%s with %s", send ? "MPI_Isend" : "MPI_Irecv", peer);
            return mpi_fail(rc, err, what);
        }
        x->req_peer[x->nreq++] = q;
        atomic_fetch_add(&x->pending[q], 1);
        off += m;
        if (n == 0) break;
    }
    return 0;
}

/* Wait for every posted request, polling so that an abort of the group ends the wait. */
static int wait_all(lcm_group *g, const char *what, lcm_error *err) {
    lcm_xproc *x = g->xp;
    int left = x->nreq, rc = 0;
    int *idx = malloc((size_t)(x->nreq ? x->nreq : 1) * sizeof *idx);
    MPI_Status *st = malloc((size_t)(x->nreq ? x->nreq : 1) * sizeof *st);
    if (!idx || !st) rc = lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    atomic_store(&x->what, what);
    for (long spins = 0; !rc && left > 0; spins++) {
        int done = 0;
        int e = MPI_Testsome(x->nreq, x->req, &done, idx, st);
        if (e != MPI_SUCCESS) {
            /* A failed request names its peer; MPI_ERR_IN_STATUS says which ones failed. */
            int q = -1;
            for (int i = 0; e == MPI_ERR_IN_STATUS && i < done && q < 0; i++)
                if (st[i].MPI_ERROR != MPI_SUCCESS) q = x->req_peer[idx[i]], e = st[i].MPI_ERROR;
            char msg[MPI_MAX_ERROR_STRING] = "", peer[200] = "a peer process";
            int len = 0;
            MPI_Error_string(e, msg, &len);
            if (q >= 0) who(x, q, peer, sizeof peer);
            rc = lcm_fail(err, LCM_ERR_IO, "%s across processes failed while talking to %s: %s; the run stops (the "
                          "last checkpoint is intact)", what, peer, msg);
            break;
        }
        if (done == MPI_UNDEFINED) break;
        for (int i = 0; i < done; i++) atomic_fetch_sub(&x->pending[x->req_peer[idx[i]]], 1);
        left -= done;
        if (left == 0) break;
        if (lcm_group_aborted(g)) {
            rc = lcm_group_interrupted(g, g->rank0, what, err);
            break;
        }
        if (spins > 200) {
            struct timespec ts = {0, 20 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    free(idx);
    free(st);
    if (rc == 0) {
        x->nreq = 0;
        for (int q = 0; q < x->P; q++) atomic_store(&x->pending[q], 0);
    }
    /* After a failure the requests stay posted (their buffers may still be in use by MPI): the run is
     * stopping, and the process ends through lcm_mpi_finish's MPI_Abort. */
    return rc;
}

static int tmp_reserve(lcm_xproc *x, size_t n, lcm_error *err) {
    if (n <= x->tmp_cap) return 0;
    char *t = realloc(x->tmp, n);
    if (!t) return lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for a cross-process collective (%zu bytes)", n);
    x->tmp = t;
    x->tmp_cap = n;
    return 0;
}

static size_t esize_of(int kind) {
    switch (kind) {
    case COLL_ALLREDUCE_BF16:
    case COLL_RS_BF16:
    case COLL_AG_BF16: return 2;
    case COLL_SUM_F64: return 8;
    case COLL_BROADCAST:
    case COLL_GATHER: return 1;
    default: return 4;
    }
}

/* The part [lo, hi) of elements [begin, end) that process q sums (all-reduce: even parts) or whose
 * ranks own them (sharded: element i belongs to rank i / slice). */
static void part_of(const lcm_xproc *x, int q, int by_owner, long long begin, long long end, long long slice,
                    long long *lo, long long *hi) {
    if (by_owner) {
        long long a = (long long)x->first[q] * slice, b = (long long)(x->first[q] + x->count[q]) * slice;
        *lo = a > begin ? a : begin;
        *hi = b < end ? b : end;
        if (*hi < *lo) *hi = *lo;
    } else {
        const long long n = end - begin;
        *lo = begin + n * q / x->P;
        *hi = begin + n * (q + 1) / x->P;
    }
}

/* Sum elements [lo, hi) over every global rank in order (x->src[r]: rank r's element lo) into each
 * local rank's buffer, which holds element `first` at [0] (all-reduce), or into the owner's receive
 * buffer (reduce-scatter). */
static void sum_part(lcm_group *g, int kind, long long first, long long lo, long long hi, long long slice) {
    lcm_xproc *x = g->xp;
    const int W = g->world;
    const int scatter = kind == COLL_RS_F32 || kind == COLL_RS_BF16;
    for (long long i0 = lo; i0 < hi;) {
        long long stop = hi;
        if (scatter && (i0 / slice + 1) * slice < stop) stop = (i0 / slice + 1) * slice;
        const size_t m = (size_t)(stop - i0 < 256 ? stop - i0 : 256), at = (size_t)(i0 - first), s = (size_t)(i0 - lo);
        if (kind == COLL_SUM_F64) {
            double acc[256];
            for (size_t k = 0; k < m; k++) acc[k] = ((const double *)x->src[0])[s + k];
            for (int r = 1; r < W; r++)
                for (size_t k = 0; k < m; k++) acc[k] += ((const double *)x->src[r])[s + k];
            for (int i = 0; i < g->size; i++) memcpy((double *)g->slots[i].buf + at, acc, m * sizeof(double));
        } else if (kind == COLL_ALLREDUCE_F32 || kind == COLL_RS_F32) {
            float acc[256];
            for (size_t k = 0; k < m; k++) acc[k] = ((const float *)x->src[0])[s + k];
            for (int r = 1; r < W; r++)
                for (size_t k = 0; k < m; k++) acc[k] += ((const float *)x->src[r])[s + k];
            if (scatter) {
                const long long owner = i0 / slice;
                memcpy((float *)g->slots[owner - g->rank0].recv + (i0 - owner * slice), acc, m * sizeof(float));
            } else {
                for (int i = 0; i < g->size; i++) memcpy((float *)g->slots[i].buf + at, acc, m * sizeof(float));
            }
        } else { /* bf16: in fp32, rounded once */
            float acc[256];
            uint16_t out[256];
            for (size_t k = 0; k < m; k++) acc[k] = lcm_bf16_to_f32(((const uint16_t *)x->src[0])[s + k]);
            for (int r = 1; r < W; r++)
                for (size_t k = 0; k < m; k++) acc[k] += lcm_bf16_to_f32(((const uint16_t *)x->src[r])[s + k]);
            for (size_t k = 0; k < m; k++) out[k] = lcm_f32_to_bf16(acc[k]);
            if (scatter) {
                const long long owner = i0 / slice;
                memcpy((uint16_t *)g->slots[owner - g->rank0].recv + (i0 - owner * slice), out, m * sizeof(uint16_t));
            } else {
                for (int i = 0; i < g->size; i++) memcpy((uint16_t *)g->slots[i].buf + at, out, m * sizeof(uint16_t));
            }
        }
        i0 += (long long)m;
    }
}

/* All-reduce (and sum_f64) and reduce-scatter: every process sends each other process its ranks' part
 * of that process's elements, sums its own part over all ranks, and (all-reduce) sends the sums back. */
static int reduce(lcm_group *g, int kind, long long begin, long long end, long long slice, lcm_error *err) {
    lcm_xproc *x = g->xp;
    const int P = x->P, p = x->p, scatter = kind == COLL_RS_F32 || kind == COLL_RS_BF16;
    const size_t es = esize_of(kind);
    long long lo, hi, mlo, mhi;
    part_of(x, p, scatter, begin, end, slice, &mlo, &mhi);
    const size_t mine = (size_t)(mhi - mlo);
    LCM_TRY(tmp_reserve(x, (size_t)(g->world - g->size) * mine * es, err));
    /* Receives first (each other rank's copy of my part into tmp, in rank order), then the sends. */
    size_t at = 0;
    for (int r = 0; r < g->world; r++) {
        const int q = proc_of(x, r);
        if (q == p) {
            x->src[r] = (const char *)g->slots[r - g->rank0].buf + (size_t)(mlo - begin) * es;
            continue;
        }
        x->src[r] = x->tmp + at;
        if (mine) LCM_TRY(post(x, 0, q, x->tmp + at, mine * es, TAG_DATA, err));
        at += mine * es;
    }
    for (int q = 0; q < P; q++) {
        part_of(x, q, scatter, begin, end, slice, &lo, &hi);
        if (q == p || hi == lo) continue;
        for (int i = 0; i < g->size; i++)
            LCM_TRY(post(x, 1, q, (char *)g->slots[i].buf + (size_t)(lo - begin) * es, (size_t)(hi - lo) * es, TAG_DATA,
                         err));
    }
    LCM_TRY(wait_all(g, "reduction", err));
    sum_part(g, kind, begin, mlo, mhi, slice);
    if (scatter) return 0;
    /* All-reduce: my sums are in local rank 0's buffer; exchange the parts. */
    for (int q = 0; q < P; q++) {
        part_of(x, q, 0, begin, end, slice, &lo, &hi);
        if (q == p || hi == lo) continue;
        LCM_TRY(post(x, 0, q, (char *)g->slots[0].buf + (size_t)(lo - begin) * es, (size_t)(hi - lo) * es, TAG_RESULT,
                     err));
        if (mhi > mlo)
            LCM_TRY(post(x, 1, q, (char *)g->slots[0].buf + (size_t)(mlo - begin) * es, mine * es, TAG_RESULT, err));
    }
    LCM_TRY(wait_all(g, "reduction", err));
    for (int q = 0; q < P; q++) {
        part_of(x, q, 0, begin, end, slice, &lo, &hi);
        if (q == p || hi == lo) continue;
        for (int i = 1; i < g->size; i++)
            memcpy((char *)g->slots[i].buf + (size_t)(lo - begin) * es, (char *)g->slots[0].buf + (size_t)(lo - begin) * es,
                   (size_t)(hi - lo) * es);
    }
    return 0;
}

/* All-gather: each owner's elements of [begin, end) go to every rank's buffer. What comes from other
 * processes lands in local rank 0's buffer first, then every local copy is made. */
static int all_gather(lcm_group *g, int kind, long long begin, long long end, long long slice, lcm_error *err) {
    lcm_xproc *x = g->xp;
    const size_t es = esize_of(kind);
    for (long long o = begin / slice; o * slice < end; o++) {
        const long long lo = o * slice > begin ? o * slice : begin, hi = (o + 1) * slice < end ? (o + 1) * slice : end;
        const int q = proc_of(x, o), local = q == x->p;
        const size_t off = (size_t)(lo - begin) * es, n = (size_t)(hi - lo) * es;
        for (int t = 0; t < x->P; t++) {
            if (t == x->p || (!local && t != q)) continue;
            /* an owner here sends to every other process; an owner elsewhere sends to us */
            LCM_TRY(post(x, local, local ? t : q, (char *)g->slots[local ? o - g->rank0 : 0].buf + off, n, TAG_DATA, err));
        }
    }
    LCM_TRY(wait_all(g, "all-gather", err));
    for (long long o = begin / slice; o * slice < end; o++) {
        const long long lo = o * slice > begin ? o * slice : begin, hi = (o + 1) * slice < end ? (o + 1) * slice : end;
        const int from = proc_of(x, o) == x->p ? (int)(o - g->rank0) : 0;
        const size_t off = (size_t)(lo - begin) * es, n = (size_t)(hi - lo) * es;
        for (int i = 0; i < g->size; i++)
            if (i != from) memcpy((char *)g->slots[i].buf + off, (char *)g->slots[from].buf + off, n);
    }
    return 0;
}

static int broadcast(lcm_group *g, long long n, int root, lcm_error *err) {
    lcm_xproc *x = g->xp;
    const int rp = proc_of(x, root), from = rp == x->p ? root - g->rank0 : 0;
    for (int q = 0; q < x->P && n > 0; q++) {
        if (q == x->p || (rp != x->p && q != rp)) continue;
        LCM_TRY(post(x, rp == x->p, q, g->slots[from].buf, (size_t)n, TAG_DATA, err));
    }
    LCM_TRY(wait_all(g, "broadcast", err));
    for (int i = 0; i < g->size && n > 0; i++)
        if (i != from) memcpy(g->slots[i].buf, g->slots[from].buf, (size_t)n);
    return 0;
}

/* Gather to global rank 0 (process 0): the others first say where each of their ranks' bytes go. */
static int gather(lcm_group *g, lcm_error *err) {
    lcm_xproc *x = g->xp;
    long long *desc = NULL;
    int rc = 0;
    if (x->p != 0) {
        desc = malloc((size_t)g->size * 2 * sizeof *desc);
        if (!desc) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
        for (int i = 0; i < g->size; i++) desc[2 * i] = g->slots[i].begin, desc[2 * i + 1] = g->slots[i].n;
        rc = post(x, 1, 0, desc, (size_t)g->size * 2 * sizeof *desc, TAG_DESC, err);
        for (int i = 0; !rc && i < g->size; i++)
            if (g->slots[i].n > 0) rc = post(x, 1, 0, g->slots[i].buf, (size_t)g->slots[i].n, TAG_DATA, err);
        if (!rc) rc = wait_all(g, "gather", err);
        if (!rc) free(desc); /* after a failure MPI may still read it; the process is ending */
        return rc;
    }
    const size_t others = (size_t)(g->world - g->size);
    desc = malloc((others ? others : 1) * 2 * sizeof *desc);
    if (!desc) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    size_t at = 0;
    for (int q = 1; !rc && q < x->P; q++) {
        rc = post(x, 0, q, desc + 2 * at, (size_t)x->count[q] * 2 * sizeof *desc, TAG_DESC, err);
        at += (size_t)x->count[q];
    }
    if (!rc) rc = wait_all(g, "gather", err);
    char *dst = g->slots[0].recv;
    const long long cap = g->slots[0].slice;
    at = 0;
    for (int q = 1; !rc && q < x->P; q++)
        for (int j = 0; !rc && j < x->count[q]; j++, at++) {
            const long long off = desc[2 * at], n = desc[2 * at + 1];
            if (n < 0 || off < 0 || off > cap - n) {
                char peer[200];
                who(x, q, peer, sizeof peer);
                rc = lcm_fail(err, LCM_ERR_INTERNAL, "gather: rank %d of %s sends %lld bytes to offset %lld of rank 0's "
                              "buffer of %lld bytes", x->first[q] + j, peer, n, off, cap);
            } else if (n > 0) {
                rc = post(x, 0, q, dst + off, (size_t)n, TAG_DATA, err);
            }
        }
    for (int i = 0; !rc && i < g->size; i++) /* rank 0 may pass its part in place */
        if (g->slots[i].n > 0 && dst + g->slots[i].begin != (char *)g->slots[i].buf)
            memcpy(dst + g->slots[i].begin, g->slots[i].buf, (size_t)g->slots[i].n);
    if (!rc) rc = wait_all(g, "gather", err);
    if (!rc) free(desc);
    return rc;
}

static const char *kind_name(long long kind) {
    switch (kind) {
    case COLL_ALLREDUCE_F32: return "all-reduce (f32)";
    case COLL_ALLREDUCE_BF16: return "all-reduce (bf16)";
    case COLL_SUM_F64: return "sum_f64";
    case COLL_BROADCAST: return "broadcast";
    case COLL_GATHER: return "gather";
    case COLL_RS_F32: return "reduce-scatter (f32)";
    case COLL_RS_BF16: return "reduce-scatter (bf16)";
    case COLL_AG_F32: return "all-gather (f32)";
    case COLL_AG_BF16: return "all-gather (bf16)";
    case COLL_BARRIER_X: return "barrier";
    }
    return "a collective";
}

int lcm_xproc_collective(lcm_group *g, int local_rc, lcm_error *err) {
    lcm_xproc *x = g->xp;
    const lcm_coll_slot *s = &g->slots[0];
    long long *h = x->hdr[x->p];
    h[H_MAGIC] = HDR_MAGIC;
    h[H_KIND] = s->kind;
    /* A gather's sizes differ by rank (comm.h); the rest must agree everywhere. */
    const int sized = s->kind != COLL_GATHER && s->kind != COLL_BARRIER_X;
    h[H_N] = sized ? s->n : 0;
    h[H_BEGIN] = sized ? s->begin : 0;
    h[H_SLICE] = sized ? s->slice : 0;
    h[H_ROOT] = s->kind == COLL_BROADCAST ? s->root : 0;
    h[H_BAD] = local_rc != 0;
    for (int q = 0; q < x->P; q++) {
        if (q == x->p) continue;
        LCM_TRY(post(x, 0, q, x->hdr[q], sizeof x->hdr[q], TAG_HDR, err));
        LCM_TRY(post(x, 1, q, h, sizeof x->hdr[q], TAG_HDR, err));
    }
    LCM_TRY(wait_all(g, kind_name(s->kind), err));
    if (local_rc) return local_rc; /* the peers were told; this process's ranks keep their own error */
    for (int q = 0; q < x->P; q++) {
        const long long *o = x->hdr[q];
        if (q == x->p) continue;
        char peer[200];
        who(x, q, peer, sizeof peer);
        if (o[H_MAGIC] != HDR_MAGIC)
            return lcm_fail(err, LCM_ERR_INTERNAL, "%s sent a message that is not an lcm collective header: are the "
                            "processes running the same lcm?", peer);
        if (o[H_BAD])
            return lcm_fail(err, LCM_ERR_INTERNAL, "%s stopped a %s on wrong arguments (its own message says which)",
                            peer, kind_name(o[H_KIND]));
        if (memcmp(o + H_KIND, h + H_KIND, (H_BAD - H_KIND) * sizeof *h) != 0) {
            char me[200];
            who(x, x->p, me, sizeof me);
            return lcm_fail(err, LCM_ERR_INTERNAL,
                            "collective mismatch across processes: %s called %s of %lld elements [%lld..) in slices of "
                            "%lld, %s called %s of %lld elements [%lld..) in slices of %lld; every process must issue "
                            "the same collectives in the same order with the same sizes",
                            me, kind_name(h[H_KIND]), h[H_N], h[H_BEGIN], h[H_SLICE], peer, kind_name(o[H_KIND]),
                            o[H_N], o[H_BEGIN], o[H_SLICE]);
        }
    }
    switch (s->kind) {
    case COLL_BARRIER_X: return 0;
    case COLL_BROADCAST: return broadcast(g, s->n, s->root, err);
    case COLL_GATHER: return gather(g, err);
    case COLL_AG_F32:
    case COLL_AG_BF16: return s->n > s->begin ? all_gather(g, s->kind, s->begin, s->n, s->slice, err) : 0;
    case COLL_RS_F32:
    case COLL_RS_BF16: return s->n > s->begin ? reduce(g, s->kind, s->begin, s->n, s->slice, err) : 0;
    case COLL_ALLREDUCE_F32:
    case COLL_ALLREDUCE_BF16:
    case COLL_SUM_F64: return s->n > 0 ? reduce(g, s->kind, 0, s->n, 1, err) : 0;
    }
    return lcm_fail(err, LCM_ERR_INTERNAL, "%s has no cross-process form", kind_name(s->kind));
}

void lcm_xproc_free(lcm_xproc *x) {
    if (!x) return;
    /* Requests left posted by a failed collective may still write into these buffers until the process
     * ends (lcm_mpi_finish aborts it next): leave them be. */
    if (x->nreq) return;
    if (x->comm != MPI_COMM_NULL) MPI_Comm_free(&x->comm);
    free(x->first);
    free(x->count);
    free(x->req);
    free(x->req_peer);
    free(x->pending);
    free(x->hdr);
    free(x->tmp);
    free(x->src);
    free(x);
}

int lcm_group_span(lcm_group *g, lcm_error *err) {
    const int P = lcm_mpi_size();
    if (P == 1 || g->xp) return 0;
    int rank0 = 0, world = 0;
    LCM_TRY(lcm_mpi_layout(g->size, &rank0, &world, err));
    if (g->world != g->size && (g->rank0 != rank0 || g->world != world))
        return lcm_fail(err, LCM_ERR_INTERNAL, "the group's ranks %d.. of %d differ from the MPI layout's %d.. of %d",
                        g->rank0, g->world, rank0, world);
    lcm_xproc *x = calloc(1, sizeof *x);
    if (!x) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    x->comm = MPI_COMM_NULL;
    x->P = P;
    x->p = lcm_mpi_rank();
    x->first = calloc((size_t)P, sizeof *x->first);
    x->count = calloc((size_t)P, sizeof *x->count);
    x->pending = calloc((size_t)P, sizeof *x->pending);
    x->hdr = calloc((size_t)P, sizeof *x->hdr);
    x->src = calloc((size_t)world, sizeof *x->src);
    int rc = 0;
    if (!x->first || !x->count || !x->pending || !x->hdr || !x->src) rc = lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    if (!rc) rc = lcm_mpi_allgather(&g->size, x->count, sizeof g->size, "the comm group's layout", err);
    for (int q = 1; !rc && q < P; q++) x->first[q] = x->first[q - 1] + x->count[q - 1];
    if (!rc) {
        int e = MPI_Comm_dup(MPI_COMM_WORLD, &x->comm);
        if (e != MPI_SUCCESS) rc = mpi_fail(e, err, "MPI_Comm_dup");
        else MPI_Comm_set_errhandler(x->comm, MPI_ERRORS_RETURN);
    }
    if (rc) {
        lcm_xproc_free(x);
        return rc;
    }
    for (int q = 0; q < P; q++) atomic_init(&x->pending[q], 0);
    atomic_init(&x->what, NULL);
    g->rank0 = rank0;
    g->world = world;
    for (int i = 0; i < g->size; i++) {
        g->comms[i].rank = rank0 + i;
        g->comms[i].size = world;
    }
    g->xp = x;
    return 0;
}

void lcm_group_waiting_on(const lcm_group *g, char *out, size_t cap) {
    out[0] = '\0';
    lcm_xproc *x = g->xp;
    if (!x) return;
    const char *what = atomic_load(&x->what);
    size_t len = 0;
    for (int q = 0; q < x->P && len + 1 < cap; q++) {
        if (q == x->p || atomic_load(&x->pending[q]) == 0) continue;
        char peer[200];
        who(x, q, peer, sizeof peer);
        len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? ", " : "", peer);
    }
    if (len && what && len + 1 < cap) snprintf(out + len, cap - len, " (in a %s)", what);
}

#else /* built without MPI: one process, so a group never spans processes */

int lcm_xproc_collective(lcm_group *g, int local_rc, lcm_error *err) {
    return lcm_fail(err, LCM_ERR_INTERNAL, "a cross-process collective in an lcm built without MPI");
}
void lcm_xproc_free(lcm_xproc *x) {}
int lcm_group_span(lcm_group *g, lcm_error *err) { return 0; }
void lcm_group_waiting_on(const lcm_group *g, char *out, size_t cap) { out[0] = '\0'; }

#endif
