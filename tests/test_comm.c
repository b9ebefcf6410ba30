/* test_comm.c: the comm groups. Local all-reduce (f32, bf16) bitwise equal to a sequential rank-order
 * sum for 1..4 threads, also under random thread timing; size and dtype mismatches reported by every
 * rank; reduce-scatter and all-gather over ranges (owners get the all-reduce's bits, nobody else's
 * elements are touched, every owner's part gathered); host collectives; barrier reuse; abort before and during every kind of wait; NCCL group
 * creation errors (and, with a GPU, a real NCCL all-reduce and abort).
 *
 * Worker threads never use CHECK (the harness is single-threaded): they record what they saw and the
 * main thread checks it after joining them. Tests with threads arm alarm() so that a hang kills the
 * test binary (a failure) instead of blocking the run. */
#include <pthread.h>
#include <stdint.h>

#include "harness.h"
#include "lcm/backend.h"
#include "lcm/comm.h"
#include "lcm/half.h"

#if LCM_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#define MAX_RANKS 4
#define HANG_GUARD_S 60 /* far above any run of these tests, even under ThreadSanitizer */

/* ---- helpers -------------------------------------------------------------------------------- */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Signed values spread over 2^-20 .. 2^20: their float sum depends on the order of the additions. */
static float mixed_value(uint64_t *s) {
    uint64_t u = splitmix(s);
    float mant = (float)((u >> 40) & 0xffffff) / (float)(1 << 24) + 0.5f;
    int e = (int)((u >> 8) % 41) - 20;
    return (u & 1 ? -1.0f : 1.0f) * ldexpf(mant, e);
}

static void fill_mixed(float *x, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) x[i] = mixed_value(&seed);
}

/* The reference: element by element, buf_0 + buf_1 + ... + buf_{N-1} in float, in rank order. */
static void rank_order_sum(float *out, float *const *bufs, int nranks, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float s = bufs[0][i];
        for (int r = 1; r < nranks; r++) s += bufs[r][i];
        out[i] = s;
    }
}

typedef struct worker worker;
struct worker {
    lcm_comm *comm;
    void *shared;
    void (*fn)(worker *w);
    int rc, rc2;     /* statuses the test wants to look at */
    lcm_error err, err2;
    int bad;         /* wrong results this rank saw */
    pthread_t tid;
};

static void *worker_main(void *arg) {
    worker *w = arg;
    w->fn(w);
    return NULL;
}

/* One thread per rank of g running fn; returns when all have finished. */
static void run_workers(lcm_group *g, void (*fn)(worker *), void *shared, worker *ws) {
    int n = lcm_group_size(g);
    for (int r = 0; r < n; r++) {
        memset(&ws[r], 0, sizeof ws[r]);
        ws[r].comm = lcm_group_comm(g, r);
        ws[r].shared = shared;
        ws[r].fn = fn;
    }
    for (int r = 0; r < n; r++)
        if (pthread_create(&ws[r].tid, NULL, worker_main, &ws[r]) != 0) {
            perror("pthread_create");
            exit(2);
        }
    for (int r = 0; r < n; r++) pthread_join(ws[r].tid, NULL);
}

/* ---- f32 all-reduce ------------------------------------------------------------------------- */

typedef struct {
    float *bufs[MAX_RANKS];
    size_t n;
} f32_job;

static void allreduce_f32_worker(worker *w) {
    f32_job *job = w->shared;
    w->rc = w->comm->ops->allreduce(w->comm, job->bufs[w->comm->rank], job->n, LCM_RED_F32, &w->err);
}

TEST(allreduce_f32_is_the_rank_order_sum) {
    alarm(HANG_GUARD_S);
    /* 3001: several reduction blocks and slices of unequal size; 7: fewer elements than one block. */
    const size_t sizes[] = {3001, 7};
    for (int nranks = 1; nranks <= MAX_RANKS; nranks++) {
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            size_t n = sizes[si];
            lcm_error err = {0};
            lcm_group *g = NULL;
            CHECK_OK(lcm_group_create_local(&g, nranks, &err), &err);
            if (!g) continue;
            CHECK(lcm_group_size(g) == nranks);
            f32_job job = {.n = n};
            for (int r = 0; r < nranks; r++) {
                job.bufs[r] = malloc(n * sizeof(float));
                fill_mixed(job.bufs[r], n, 1000u * (uint64_t)nranks + 10u * (uint64_t)r + si);
            }
            float *want = malloc(n * sizeof(float));
            float *reversed = malloc(n * sizeof(float));
            rank_order_sum(want, job.bufs, nranks, n);
            /* The data is such that another order gives other bits, so the check below can fail. */
            for (size_t i = 0; i < n; i++) {
                float s = job.bufs[nranks - 1][i];
                for (int r = nranks - 2; r >= 0; r--) s += job.bufs[r][i];
                reversed[i] = s;
            }
            if (nranks >= 3) CHECKF(memcmp(want, reversed, n * sizeof(float)) != 0, "N=%d n=%zu", nranks, n);

            worker ws[MAX_RANKS];
            run_workers(g, allreduce_f32_worker, &job, ws);
            for (int r = 0; r < nranks; r++) {
                CHECKF(ws[r].rc == 0, "N=%d rank %d: %s", nranks, r, ws[r].err.msg);
                CHECKF(memcmp(job.bufs[r], want, n * sizeof(float)) == 0, "N=%d n=%zu rank %d differs", nranks, n,
                       r);
                free(job.bufs[r]);
            }
            free(want);
            free(reversed);
            lcm_group_destroy(g);
        }
    }
    alarm(0);
}

/* Each rank regenerates every rank's data for a round (seeded by round and rank), so it can compute
 * the expected sum itself and count wrong rounds without sharing anything but the group. */
#define JITTER_N 1000
#define JITTER_ROUNDS 25

static void jitter_worker(worker *w) {
    int nranks = w->comm->size, me = w->comm->rank;
    float *mine = malloc(JITTER_N * sizeof(float));
    float *all[MAX_RANKS], *want = malloc(JITTER_N * sizeof(float));
    for (int r = 0; r < nranks; r++) all[r] = malloc(JITTER_N * sizeof(float));
    uint64_t sleep_seed = 77u + (uint64_t)me;
    for (int round = 0; round < JITTER_ROUNDS && w->rc == 0; round++) {
        for (int r = 0; r < nranks; r++) fill_mixed(all[r], JITTER_N, 5000u * (uint64_t)round + (uint64_t)r);
        rank_order_sum(want, all, nranks, JITTER_N);
        memcpy(mine, all[me], JITTER_N * sizeof(float));
        usleep((useconds_t)(splitmix(&sleep_seed) % 3000));
        w->rc = w->comm->ops->allreduce(w->comm, mine, JITTER_N, LCM_RED_F32, &w->err);
        if (memcmp(mine, want, JITTER_N * sizeof(float)) != 0) w->bad++;
    }
    for (int r = 0; r < nranks; r++) free(all[r]);
    free(mine);
    free(want);
}

TEST(allreduce_f32_bits_do_not_depend_on_thread_timing) {
    alarm(HANG_GUARD_S);
    for (int nranks = 2; nranks <= MAX_RANKS; nranks++) {
        lcm_error err = {0};
        lcm_group *g = NULL;
        CHECK_OK(lcm_group_create_local(&g, nranks, &err), &err);
        if (!g) continue;
        worker ws[MAX_RANKS];
        run_workers(g, jitter_worker, NULL, ws);
        for (int r = 0; r < nranks; r++) {
            CHECKF(ws[r].rc == 0, "N=%d rank %d: %s", nranks, r, ws[r].err.msg);
            CHECKF(ws[r].bad == 0, "N=%d rank %d: %d of %d rounds differ from the rank-order sum", nranks, r,
                   ws[r].bad, JITTER_ROUNDS);
        }
        lcm_group_destroy(g);
    }
    alarm(0);
}

TEST(allreduce_with_fewer_elements_than_ranks) {
    alarm(HANG_GUARD_S);
    lcm_error err = {0};
    lcm_group *g = NULL;
    CHECK_OK(lcm_group_create_local(&g, MAX_RANKS, &err), &err);
    if (!g) return;
    for (size_t n = 0; n < MAX_RANKS; n++) {
        f32_job job = {.n = n};
        float data[MAX_RANKS][MAX_RANKS], want[MAX_RANKS];
        for (int r = 0; r < MAX_RANKS; r++) {
            fill_mixed(data[r], MAX_RANKS, 99u + (uint64_t)r);
            job.bufs[r] = n == 0 ? NULL : data[r]; /* n = 0: no buffer needed */
        }
        float *rows[MAX_RANKS] = {data[0], data[1], data[2], data[3]};
        rank_order_sum(want, rows, MAX_RANKS, n);
        worker ws[MAX_RANKS];
        run_workers(g, allreduce_f32_worker, &job, ws);
        for (int r = 0; r < MAX_RANKS; r++) {
            CHECKF(ws[r].rc == 0, "n=%zu rank %d: %s", n, r, ws[r].err.msg);
            CHECKF(n == 0 || memcmp(data[r], want, n * sizeof(float)) == 0, "n=%zu rank %d differs", n, r);
        }
    }
    lcm_group_destroy(g);
    alarm(0);
}

/* ---- bf16 all-reduce ------------------------------------------------------------------------ */

typedef struct {
    uint16_t *bufs[MAX_RANKS];
    size_t n;
} bf16_job;

static void allreduce_bf16_worker(worker *w) {
    bf16_job *job = w->shared;
    w->rc = w->comm->ops->allreduce(w->comm, job->bufs[w->comm->rank], job->n, LCM_RED_BF16, &w->err);
}

TEST(allreduce_bf16_sums_in_fp32_and_rounds_once) {
    alarm(HANG_GUARD_S);
    const size_t n = 2000;
    for (int nranks = 1; nranks <= MAX_RANKS; nranks++) {
        lcm_error err = {0};
        lcm_group *g = NULL;
        CHECK_OK(lcm_group_create_local(&g, nranks, &err), &err);
        if (!g) continue;
        bf16_job job = {.n = n};
        uint64_t seed = 4242u + (uint64_t)nranks;
        for (int r = 0; r < nranks; r++) {
            job.bufs[r] = malloc(n * sizeof(uint16_t));
            for (size_t i = 0; i < n; i++) job.bufs[r][i] = lcm_f32_to_bf16(mixed_value(&seed));
        }
        uint16_t *want = malloc(n * sizeof(uint16_t));
        int per_hop_differs = 0;
        for (size_t i = 0; i < n; i++) {
            float s = lcm_bf16_to_f32(job.bufs[0][i]);
            float hop = s;
            for (int r = 1; r < nranks; r++) {
                s += lcm_bf16_to_f32(job.bufs[r][i]);
                hop = lcm_bf16_to_f32(lcm_f32_to_bf16(hop + lcm_bf16_to_f32(job.bufs[r][i])));
            }
            want[i] = lcm_f32_to_bf16(s);
            per_hop_differs |= want[i] != lcm_f32_to_bf16(hop);
        }
        /* Rounding after every addition gives other bits here, so the check below can tell. */
        if (nranks >= 3) CHECKF(per_hop_differs, "N=%d", nranks);
        worker ws[MAX_RANKS];
        run_workers(g, allreduce_bf16_worker, &job, ws);
        for (int r = 0; r < nranks; r++) {
            CHECKF(ws[r].rc == 0, "N=%d rank %d: %s", nranks, r, ws[r].err.msg);
            CHECKF(memcmp(job.bufs[r], want, n * sizeof(uint16_t)) == 0, "N=%d rank %d differs", nranks, r);
            free(job.bufs[r]);
        }
        free(want);
        lcm_group_destroy(g);
    }
    alarm(0);
}

/* ---- mismatches ----------------------------------------------------------------------------- */

/* Call 1 has rank 2 disagree (count or dtype); call 2 is correct and must still work. */
typedef struct {
    int mismatch_dtype; /* 0: rank 2 passes n - 1; 1: rank 1 passes bf16 */
    float bufs[3][100];
} mismatch_job;

static void mismatch_worker(worker *w) {
    mismatch_job *job = w->shared;
    int r = w->comm->rank;
    size_t n = 100;
    lcm_red_dtype dt = LCM_RED_F32;
    if (!job->mismatch_dtype && r == 2) n = 99;
    if (job->mismatch_dtype && r == 1) dt = LCM_RED_BF16;
    w->rc = w->comm->ops->allreduce(w->comm, job->bufs[r], n, dt, &w->err);
    w->rc2 = w->comm->ops->allreduce(w->comm, job->bufs[r], 100, LCM_RED_F32, &w->err2);
}

TEST(mismatched_collectives_fail_on_every_rank) {
    alarm(HANG_GUARD_S);
    for (int dtype_case = 0; dtype_case <= 1; dtype_case++) {
        lcm_error err = {0};
        lcm_group *g = NULL;
        CHECK_OK(lcm_group_create_local(&g, 3, &err), &err);
        if (!g) continue;
        mismatch_job job = {.mismatch_dtype = dtype_case};
        for (int r = 0; r < 3; r++) fill_mixed(job.bufs[r], 100, 7u + (uint64_t)r);
        worker ws[3];
        run_workers(g, mismatch_worker, &job, ws);
        for (int r = 0; r < 3; r++) {
            CHECKF(ws[r].rc == LCM_ERR_INTERNAL, "rank %d: rc %d", r, ws[r].rc);
            CHECKF(strstr(ws[r].err.msg, "mismatch") != NULL, "rank %d: %s", r, ws[r].err.msg);
            if (dtype_case) {
                CHECKF(strstr(ws[r].err.msg, "f32") && strstr(ws[r].err.msg, "bf16"), "%s", ws[r].err.msg);
            } else {
                CHECKF(strstr(ws[r].err.msg, "100") && strstr(ws[r].err.msg, "99"), "%s", ws[r].err.msg);
            }
            CHECKF(strcmp(ws[r].err.msg, ws[0].err.msg) == 0, "rank %d reports differently: %s", r, ws[r].err.msg);
            CHECKF(ws[r].rc2 == 0, "rank %d: the next all-reduce failed: %s", r, ws[r].err2.msg);
        }
        lcm_group_destroy(g);
    }
    alarm(0);
}

static void bad_dtype_worker(worker *w) {
    float x = 1;
    w->rc = w->comm->ops->allreduce(w->comm, &x, 1, (lcm_red_dtype)7, &w->err);
}

TEST(unknown_dtype_is_an_error) {
    alarm(HANG_GUARD_S);
    lcm_error err = {0};
    lcm_group *g = NULL;
    CHECK_OK(lcm_group_create_local(&g, 2, &err), &err);
    if (!g) return;
    worker ws[2];
    run_workers(g, bad_dtype_worker, NULL, ws);
    for (int r = 0; r < 2; r++)
        CHECKF(ws[r].rc == LCM_ERR_INTERNAL && strstr(ws[r].err.msg, "unknown dtype 7"), "rank %d: %d %s", r,
               ws[r].rc, ws[r].err.msg);
    lcm_group_destroy(g);
    alarm(0);
}

/* ---- host collectives and barrier ----------------------------------------------------------- */

typedef struct {
    double vals[3][4];
    char bytes[3][40];
} host_job;

static void host_worker(worker *w) {
    host_job *job = w->shared;
    int r = w->comm->rank;
    w->rc = lcm_comm_sum_f64(w->comm, job->vals[r], 4, &w->err);
    if (w->rc == 0) w->rc = lcm_comm_broadcast(w->comm, job->bytes[r], sizeof job->bytes[r], 2, &w->err);
}

TEST(sum_f64_in_rank_order_and_broadcast) {
    alarm(HANG_GUARD_S);
    lcm_error err = {0};
    lcm_group *g = NULL;
    CHECK_OK(lcm_group_create_local(&g, 3, &err), &err);
    if (!g) return;
    /* Column 0: (1e16 + 1) + -1e16 = 0 in rank order, 1 in reverse order. */
    host_job job = {.vals = {{1e16, 0.1, 3, -2}, {1, 0.2, 1e-300, 5}, {-1e16, 0.3, -3, 1e300}}};
    double want[4];
    for (int k = 0; k < 4; k++) want[k] = (job.vals[0][k] + job.vals[1][k]) + job.vals[2][k];
    CHECK(want[0] == 0.0);
    char root_bytes[40];
    for (int r = 0; r < 3; r++) memset(job.bytes[r], 'a' + r, sizeof job.bytes[r]);
    memcpy(root_bytes, job.bytes[2], sizeof root_bytes);
    worker ws[3];
    run_workers(g, host_worker, &job, ws);
    for (int r = 0; r < 3; r++) {
        CHECKF(ws[r].rc == 0, "rank %d: %s", r, ws[r].err.msg);
        CHECKF(memcmp(job.vals[r], want, sizeof want) == 0, "rank %d: sum_f64 differs", r);
        CHECKF(memcmp(job.bytes[r], root_bytes, sizeof root_bytes) == 0, "rank %d: broadcast differs", r);
    }
    lcm_group_destroy(g);
    alarm(0);
}

#define BARRIER_ROUNDS 400

typedef struct {
    int stamp[MAX_RANKS];
} barrier_job;

/* Between two barriers no rank writes; after the first, every rank must see every stamp of this round. */
static void barrier_worker(worker *w) {
    barrier_job *job = w->shared;
    for (int it = 1; it <= BARRIER_ROUNDS && w->rc == 0; it++) {
        job->stamp[w->comm->rank] = it;
        w->rc = lcm_comm_barrier(w->comm, &w->err);
        for (int r = 0; r < w->comm->size && w->rc == 0; r++) w->bad += job->stamp[r] != it;
        if (w->rc == 0) w->rc = lcm_comm_barrier(w->comm, &w->err);
    }
}

TEST(barrier_is_reusable) {
    alarm(HANG_GUARD_S);
    lcm_error err = {0};
    lcm_group *g = NULL;
    CHECK_OK(lcm_group_create_local(&g, MAX_RANKS, &err), &err);
    if (!g) return;
    barrier_job job = {{0}};
    worker ws[MAX_RANKS];
    run_workers(g, barrier_worker, &job, ws);
    for (int r = 0; r < MAX_RANKS; r++) {
        CHECKF(ws[r].rc == 0, "rank %d: %s", r, ws[r].err.msg);
        CHECKF(ws[r].bad == 0, "rank %d saw %d stale stamps", r, ws[r].bad);
    }
    CHECK(!lcm_group_aborted(g));
    lcm_group_destroy(g);
    alarm(0);
}

/* ---- reduce-scatter and all-gather ----------------------------------------------------------- */

typedef struct {
    float *bufs[MAX_RANKS];
    uint16_t *hbufs[MAX_RANKS];
    size_t begin, end, slice;
} sharded_job;

static void reduce_scatter_worker(worker *w) {
    sharded_job *job = w->shared;
    int r = w->comm->rank;
    /* In place: each rank's slice of its own vector receives. */
    const size_t mine = (size_t)r * job->slice;
    w->rc = w->comm->ops->reduce_scatter(w->comm, job->bufs[r] + job->begin, job->bufs[r] + mine, job->begin, job->end,
                                         job->slice, LCM_RED_F32, &w->err);
    if (w->rc == 0)
        w->rc = w->comm->ops->reduce_scatter(w->comm, job->hbufs[r] + job->begin, job->hbufs[r] + mine, job->begin,
                                             job->end, job->slice, LCM_RED_BF16, &w->err);
}

static void all_gather_worker(worker *w) {
    sharded_job *job = w->shared;
    int r = w->comm->rank;
    w->rc = w->comm->ops->all_gather(w->comm, job->bufs[r] + job->begin, job->begin, job->end, job->slice, LCM_RED_F32,
                                     &w->err);
    if (w->rc == 0)
        w->rc = w->comm->ops->all_gather(w->comm, job->hbufs[r] + job->begin, job->begin, job->end, job->slice,
                                         LCM_RED_BF16, &w->err);
}

/* Ranges: the whole padded vector, one that ends inside the last slice (the real parameter count),
 * and buckets that start and end inside slices, inside one slice, or are empty. */
typedef struct { size_t begin, end; } range;

TEST(reduce_scatter_gives_owners_the_allreduce_bits_and_touches_nothing_else) {
    alarm(HANG_GUARD_S);
    const size_t slice = 600; /* > 2 reduction blocks: blocks must stop at owner boundaries */
    for (int nranks = 1; nranks <= MAX_RANKS; nranks++) {
        const size_t total = slice * (size_t)nranks;
        const range ranges[] = {{0, total}, {0, total - 37}, {slice / 2, total - slice / 3}, {5, 9}, {7, 7}};
        for (size_t ri = 0; ri < sizeof ranges / sizeof ranges[0]; ri++) {
            lcm_error err = {0};
            lcm_group *g = NULL;
            CHECK_OK(lcm_group_create_local(&g, nranks, &err), &err);
            if (!g) continue;
            sharded_job job = {.begin = ranges[ri].begin, .end = ranges[ri].end, .slice = slice};
            float *orig[MAX_RANKS];
            uint16_t *horig[MAX_RANKS];
            for (int r = 0; r < nranks; r++) {
                job.bufs[r] = malloc(total * sizeof(float));
                orig[r] = malloc(total * sizeof(float));
                job.hbufs[r] = malloc(total * sizeof(uint16_t));
                horig[r] = malloc(total * sizeof(uint16_t));
                fill_mixed(orig[r], total, 77u * (uint64_t)nranks + (uint64_t)r + 1000u * ri);
                memcpy(job.bufs[r], orig[r], total * sizeof(float));
                for (size_t i = 0; i < total; i++) horig[r][i] = job.hbufs[r][i] = lcm_f32_to_bf16(orig[r][i]);
            }
            float *want = malloc(total * sizeof(float));
            rank_order_sum(want, orig, nranks, total);
            worker ws[MAX_RANKS];
            run_workers(g, reduce_scatter_worker, &job, ws);
            int bad = 0, hbad = 0;
            for (int r = 0; r < nranks; r++) {
                CHECKF(ws[r].rc == 0, "N=%d rank %d: %s", nranks, r, ws[r].err.msg);
                for (size_t i = 0; i < total; i++) {
                    int owned = i >= job.begin && i < job.end && i / slice == (size_t)r;
                    float expect = owned ? want[i] : orig[r][i];
                    if (memcmp(&job.bufs[r][i], &expect, sizeof expect) != 0) bad++;
                    uint16_t hexpect = horig[r][i];
                    if (owned) {
                        float acc = lcm_bf16_to_f32(horig[0][i]);
                        for (int q = 1; q < nranks; q++) acc += lcm_bf16_to_f32(horig[q][i]);
                        hexpect = lcm_f32_to_bf16(acc);
                    }
                    if (job.hbufs[r][i] != hexpect) hbad++;
                }
            }
            CHECKF(bad == 0 && hbad == 0, "N=%d range [%zu, %zu): %d f32 and %d bf16 elements wrong", nranks, job.begin,
                   job.end, bad, hbad);
            for (int r = 0; r < nranks; r++) free(job.bufs[r]), free(orig[r]), free(job.hbufs[r]), free(horig[r]);
            free(want);
            lcm_group_destroy(g);
        }
    }
    alarm(0);
}

/* The windowed form the trainer uses at shard 2: each rank sends only the bucket (a buffer of
 * end - begin elements) and receives into a buffer of its slice alone. */
typedef struct {
    float *send[MAX_RANKS], *recv[MAX_RANKS];
    size_t begin, end, slice;
    int null_recv_rank; /* -1: none */
} window_job;

static void window_worker(worker *w) {
    window_job *job = w->shared;
    int r = w->comm->rank;
    w->rc = w->comm->ops->reduce_scatter(w->comm, job->send[r], r == job->null_recv_rank ? NULL : job->recv[r],
                                         job->begin, job->end, job->slice, LCM_RED_F32, &w->err);
}

TEST(reduce_scatter_from_a_bucket_into_separate_slices) {
    alarm(HANG_GUARD_S);
    const size_t slice = 300, begin = 250, end = 1000; /* 4 ranks: touches slices 0 (end), 1, 2, 3 (start) */
    for (int bad = 0; bad <= 1; bad++) {
        lcm_error err = {0};
        lcm_group *g = NULL;
        CHECK_OK(lcm_group_create_local(&g, MAX_RANKS, &err), &err);
        if (!g) return;
        window_job job = {.begin = begin, .end = end, .slice = slice, .null_recv_rank = bad ? 2 : -1};
        for (int r = 0; r < MAX_RANKS; r++) {
            job.send[r] = malloc((end - begin) * sizeof(float));
            job.recv[r] = malloc(slice * sizeof(float));
            fill_mixed(job.send[r], end - begin, 555u + (uint64_t)r);
            for (size_t k = 0; k < slice; k++) job.recv[r][k] = -7.0f;
        }
        worker ws[MAX_RANKS];
        run_workers(g, window_worker, &job, ws);
        int wrong = 0;
        for (int r = 0; r < MAX_RANKS; r++) {
            if (bad) {
                CHECKF(ws[r].rc == LCM_ERR_INTERNAL && strstr(ws[r].err.msg, "rank 2 owns part of the range"),
                       "rank %d: %s", r, ws[r].err.msg);
                continue;
            }
            CHECKF(ws[r].rc == 0, "rank %d: %s", r, ws[r].err.msg);
            for (size_t k = 0; k < slice; k++) {
                size_t i = (size_t)r * slice + k;
                float want = -7.0f;
                if (i >= begin && i < end) {
                    want = job.send[0][i - begin];
                    for (int q = 1; q < MAX_RANKS; q++) want += job.send[q][i - begin];
                }
                if (memcmp(&job.recv[r][k], &want, sizeof want) != 0) wrong++;
            }
        }
        CHECKF(wrong == 0, "%d received elements wrong", wrong);
        for (int r = 0; r < MAX_RANKS; r++) free(job.send[r]), free(job.recv[r]);
        lcm_group_destroy(g);
    }
    alarm(0);
}

TEST(all_gather_copies_each_owners_part_to_every_rank) {
    alarm(HANG_GUARD_S);
    const size_t slice = 600;
    for (int nranks = 1; nranks <= MAX_RANKS; nranks++) {
        const size_t total = slice * (size_t)nranks;
        const range ranges[] = {{0, total}, {0, total - 37}, {slice / 2, total - slice / 3}, {5, 9}};
        for (size_t ri = 0; ri < sizeof ranges / sizeof ranges[0]; ri++) {
            lcm_error err = {0};
            lcm_group *g = NULL;
            CHECK_OK(lcm_group_create_local(&g, nranks, &err), &err);
            if (!g) continue;
            sharded_job job = {.begin = ranges[ri].begin, .end = ranges[ri].end, .slice = slice};
            /* Rank r's value of element i is 1000 r + i (exact in float): the owner is visible in it. */
            for (int r = 0; r < nranks; r++) {
                job.bufs[r] = malloc(total * sizeof(float));
                job.hbufs[r] = malloc(total * sizeof(uint16_t));
                for (size_t i = 0; i < total; i++) {
                    job.bufs[r][i] = (float)(100000 * r + (int)i);
                    job.hbufs[r][i] = (uint16_t)(r * 4096 + (int)i % 4096);
                }
            }
            worker ws[MAX_RANKS];
            run_workers(g, all_gather_worker, &job, ws);
            int bad = 0;
            for (int r = 0; r < nranks; r++) {
                CHECKF(ws[r].rc == 0, "N=%d rank %d: %s", nranks, r, ws[r].err.msg);
                for (size_t i = 0; i < total; i++) {
                    int from = i >= job.begin && i < job.end ? (int)(i / slice) : r;
                    if (job.bufs[r][i] != (float)(100000 * from + (int)i)) bad++;
                    if (job.hbufs[r][i] != (uint16_t)(from * 4096 + (int)i % 4096)) bad++;
                }
            }
            CHECKF(bad == 0, "N=%d range [%zu, %zu): %d elements wrong", nranks, job.begin, job.end, bad);
            for (int r = 0; r < nranks; r++) free(job.bufs[r]), free(job.hbufs[r]);
            lcm_group_destroy(g);
        }
    }
    alarm(0);
}

static void bad_sharded_worker(worker *w) {
    float x[8] = {0};
    int r = w->comm->rank;
    /* slot 0: a range past the last slice; then rank 1 passes another slice; then an unknown dtype */
    w->rc = w->comm->ops->reduce_scatter(w->comm, x, x, 0, 7, 3, LCM_RED_F32, &w->err);
    w->rc2 = w->comm->ops->all_gather(w->comm, x, 0, 4, r == 1 ? 3 : 2, LCM_RED_F32, &w->err2);
    lcm_error e3 = {0};
    int rc3 = w->comm->ops->all_gather(w->comm, x, 0, 4, 2, (lcm_red_dtype)9, &e3);
    if (rc3 != LCM_ERR_INTERNAL || !strstr(e3.msg, "unknown dtype 9")) w->bad++;
}

TEST(sharded_collectives_reject_bad_ranges_and_mismatches_on_every_rank) {
    alarm(HANG_GUARD_S);
    lcm_error err = {0};
    lcm_group *g = NULL;
    CHECK_OK(lcm_group_create_local(&g, 2, &err), &err);
    if (!g) return;
    worker ws[2];
    run_workers(g, bad_sharded_worker, NULL, ws);
    for (int r = 0; r < 2; r++) {
        CHECKF(ws[r].rc == LCM_ERR_INTERNAL && strstr(ws[r].err.msg, "[0, 7)") && strstr(ws[r].err.msg, "slices of 3"),
               "rank %d: %d %s", r, ws[r].rc, ws[r].err.msg);
        CHECKF(ws[r].rc2 == LCM_ERR_INTERNAL && strstr(ws[r].err2.msg, "mismatch"), "rank %d: %s", r, ws[r].err2.msg);
        CHECKF(strcmp(ws[r].err2.msg, ws[0].err2.msg) == 0, "rank %d reports differently", r);
        CHECKF(ws[r].bad == 0, "rank %d: the unknown dtype was not reported", r);
    }
    lcm_group_destroy(g);
    alarm(0);
}

/* ---- abort ---------------------------------------------------------------------------------- */

enum { WAIT_BARRIER, WAIT_ALLREDUCE, WAIT_SUM_F64, WAIT_BROADCAST, WAIT_REDUCE_SCATTER, WAIT_ALL_GATHER, WAIT_KINDS };

typedef struct {
    int kind;
    int absent;        /* the rank that never joins the wait, so only an abort can end it */
    int main_aborts;   /* 1: the main thread aborts; 0: the absent rank does */
    lcm_group *g;
} abort_job;

static int wait_once(lcm_comm *c, int kind, lcm_error *err) {
    float f[8] = {0};
    double d[2] = {0};
    switch (kind) {
    case WAIT_BARRIER: return lcm_comm_barrier(c, err);
    case WAIT_ALLREDUCE: return c->ops->allreduce(c, f, 8, LCM_RED_F32, err);
    case WAIT_SUM_F64: return lcm_comm_sum_f64(c, d, 2, err);
    case WAIT_REDUCE_SCATTER: return c->ops->reduce_scatter(c, f, f + 2 * c->rank, 0, 8, 2, LCM_RED_F32, err);
    case WAIT_ALL_GATHER: return c->ops->all_gather(c, f + 1, 1, 7, 2, LCM_RED_F32, err);
    default: return lcm_comm_broadcast(c, f, sizeof f, 0, err);
    }
}

static void abort_the_group(lcm_group *g) {
    usleep(20000); /* most likely the others are waiting by now; the test passes either way */
    lcm_error why = {0};
    lcm_fail(&why, LCM_ERR_IO, "a worker failed: disk full (test)");
    lcm_group_abort(g, &why);
}

static void abort_worker(worker *w) {
    abort_job *job = w->shared;
    if (w->comm->rank != job->absent) {
        w->rc = wait_once(w->comm, job->kind, &w->err);
    } else if (!job->main_aborts) {
        abort_the_group(job->g);
    }
}

TEST(abort_interrupts_every_kind_of_wait) {
    alarm(HANG_GUARD_S);
    for (int kind = 0; kind < WAIT_KINDS; kind++) {
        for (int variant = 0; variant < 3; variant++) {
            /* rank 1 aborts; rank 3 aborts; rank 0 is absent and the main thread aborts */
            abort_job job = {.kind = kind, .absent = variant == 0 ? 1 : variant == 1 ? 3 : 0,
                             .main_aborts = variant == 2};
            lcm_error err = {0};
            CHECK_OK(lcm_group_create_local(&job.g, MAX_RANKS, &err), &err);
            if (!job.g) continue;
            CHECK(lcm_group_abort_reason(job.g)->code == LCM_OK);
            worker ws[MAX_RANKS];
            for (int r = 0; r < MAX_RANKS; r++) {
                memset(&ws[r], 0, sizeof ws[r]);
                ws[r].comm = lcm_group_comm(job.g, r);
                ws[r].shared = &job;
                ws[r].fn = abort_worker;
                if (pthread_create(&ws[r].tid, NULL, worker_main, &ws[r]) != 0) {
                    perror("pthread_create");
                    exit(2);
                }
            }
            if (job.main_aborts) abort_the_group(job.g);
            for (int r = 0; r < MAX_RANKS; r++) pthread_join(ws[r].tid, NULL);
            for (int r = 0; r < MAX_RANKS; r++) {
                if (r == job.absent) continue;
                CHECKF(ws[r].rc == LCM_ERR_INTERRUPTED, "kind %d variant %d rank %d: rc %d %s", kind, variant, r,
                       ws[r].rc, ws[r].err.msg);
                CHECKF(strstr(ws[r].err.msg, "disk full (test)") != NULL, "rank %d: %s", r, ws[r].err.msg);
            }
            CHECK(lcm_group_aborted(job.g));
            CHECK(lcm_group_abort_reason(job.g)->code == LCM_ERR_IO);
            lcm_group_destroy(job.g);
        }
    }
    alarm(0);
}

TEST(abort_before_a_wait_interrupts_it) {
    alarm(HANG_GUARD_S);
    lcm_error err = {0};
    lcm_group *g = NULL;
    CHECK_OK(lcm_group_create_local(&g, 2, &err), &err);
    if (!g) return;
    lcm_error first = {0}, second = {0};
    lcm_fail(&first, LCM_ERR_NUMERIC, "first reason");
    lcm_fail(&second, LCM_ERR_IO, "second reason");
    lcm_group_abort(g, &first);
    lcm_group_abort(g, &second);
    CHECK(lcm_group_aborted(g));
    CHECK(lcm_group_abort_reason(g)->code == LCM_ERR_NUMERIC);
    CHECK(strcmp(lcm_group_abort_reason(g)->msg, "first reason") == 0);
    /* Rank 1 never arrives: only the stop flag can end these waits. */
    for (int kind = 0; kind < WAIT_KINDS; kind++)
        CHECK_FAILS(wait_once(lcm_group_comm(g, 0), kind, &err), &err, LCM_ERR_INTERRUPTED, "first reason");
    CHECK(lcm_group_comm(g, 0)->ops->check(lcm_group_comm(g, 0), &err) == 0);
    lcm_group_destroy(g);

    CHECK_OK(lcm_group_create_local(&g, 2, &err), &err);
    if (!g) return;
    lcm_group_abort(g, NULL);
    CHECK(lcm_group_abort_reason(g)->code == LCM_ERR_INTERRUPTED);
    CHECK_FAILS(lcm_comm_barrier(lcm_group_comm(g, 1), &err), &err, LCM_ERR_INTERRUPTED, "no reason given");
    lcm_group_destroy(g);
    alarm(0);
}

TEST(group_arguments) {
    lcm_error err = {0};
    lcm_group *g = (lcm_group *)&err;
    CHECK_FAILS(lcm_group_create_local(&g, 0, &err), &err, LCM_ERR_INTERNAL, "at least one rank");
    CHECK(g == NULL);
    CHECK_OK(lcm_group_create_local(&g, 2, &err), &err);
    if (!g) return;
    CHECK(lcm_group_comm(g, 2) == NULL && lcm_group_comm(g, -1) == NULL);
    CHECK(lcm_group_comm(g, 1)->rank == 1 && lcm_group_comm(g, 1)->size == 2 && lcm_group_comm(g, 1)->group == g);
    lcm_group_destroy(g);
}

/* ---- NCCL ----------------------------------------------------------------------------------- */

TEST(nccl_group_creation_errors) {
    lcm_error err = {0};
    lcm_group *g = (lcm_group *)&err;
    int gpus[2] = {0, 0};
    if (!lcm_cuda_built()) {
        CHECK_FAILS(lcm_group_create_nccl(&g, 1, gpus, &err), &err, LCM_ERR_DEVICE, "built without CUDA");
        CHECK(g == NULL);
        return;
    }
    CHECK_FAILS(lcm_group_create_nccl(&g, 2, gpus, &err), &err, LCM_ERR_CONFIG, "GPU 0 is listed twice");
    CHECK(g == NULL);
    int count = 0;
    CHECK_OK(lcm_cuda_device_count(&count, &err), &err);
    if (count == 0) {
        CHECK_FAILS(lcm_group_create_nccl(&g, 1, gpus, &err), &err, LCM_ERR_DEVICE, "no GPU is visible");
    } else {
        int missing[1] = {count};
        CHECK_FAILS(lcm_group_create_nccl(&g, 1, missing, &err), &err, LCM_ERR_DEVICE, "does not exist");
    }
    CHECK(g == NULL);
}

#if LCM_WITH_CUDA
#define NCCL_N 4099

typedef struct {
    int gpus[MAX_RANKS];
    lcm_group *g;
} nccl_job;

/* Rank r holds r + 1 everywhere; the sum of small integers is exact in any order. Then rank 0 aborts
 * and every other rank must be interrupted, and no rank may touch its aborted communicator. */
static void nccl_worker(worker *w) {
    nccl_job *job = w->shared;
    lcm_comm *c = w->comm;
    int n = c->size, me = c->rank;
    float *host = malloc(NCCL_N * sizeof(float)), *dev = NULL;
    cudaStream_t s = NULL;
    for (int i = 0; i < NCCL_N; i++) host[i] = (float)(me + 1);
    if (cudaSetDevice(job->gpus[me]) != cudaSuccess || cudaStreamCreate(&s) != cudaSuccess ||
        cudaMalloc((void **)&dev, NCCL_N * sizeof(float)) != cudaSuccess ||
        cudaMemcpy(dev, host, NCCL_N * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess)
        w->bad++;
    lcm_comm_bind_stream(c, s);
    /* Every allocation is done before the first collective (engineering notes, NCCL). */
    w->rc = lcm_comm_barrier(c, &w->err);
    if (w->rc == 0) w->rc = c->ops->allreduce(c, dev, NCCL_N, LCM_RED_F32, &w->err);
    if (cudaStreamSynchronize(s) != cudaSuccess) w->bad++;
    if (w->rc == 0) w->rc = c->ops->check(c, &w->err);
    if (cudaMemcpy(host, dev, NCCL_N * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess) w->bad++;
    for (int i = 0; i < NCCL_N; i++) w->bad += host[i] != (float)(n * (n + 1) / 2);
    if (w->rc == 0) w->rc = lcm_comm_barrier(c, &w->err);
    if (me == 0) {
        lcm_error why = {0};
        lcm_fail(&why, LCM_ERR_DEVICE, "rank 0 gave up (test)");
        lcm_group_abort(job->g, &why);
    } else {
        w->rc2 = lcm_comm_barrier(c, &w->err2);
    }
    lcm_error after = {0};
    if (c->ops->check(c, &after) != LCM_ERR_INTERRUPTED) w->bad++;
    if (c->ops->allreduce(c, dev, NCCL_N, LCM_RED_F32, &after) != LCM_ERR_INTERRUPTED) w->bad++;
    cudaFree(dev);
    cudaStreamDestroy(s);
    free(host);
}

TEST(nccl_allreduce_and_abort_on_gpus) {
    lcm_error err = {0};
    int count = 0;
    if (lcm_cuda_device_count(&count, &err) != 0 || count == 0) SKIP("no GPU visible");
    alarm(HANG_GUARD_S);
    nccl_job job = {.g = NULL};
    int n = count < MAX_RANKS ? count : MAX_RANKS;
    for (int r = 0; r < n; r++) job.gpus[r] = r;
    CHECK_OK(lcm_group_create_nccl(&job.g, n, job.gpus, &err), &err);
    if (!job.g) return;
    worker ws[MAX_RANKS];
    run_workers(job.g, nccl_worker, &job, ws);
    for (int r = 0; r < n; r++) {
        CHECKF(ws[r].rc == 0, "rank %d: %s", r, ws[r].err.msg);
        CHECKF(ws[r].bad == 0, "rank %d: %d wrong values or failed CUDA calls", r, ws[r].bad);
        if (r > 0)
            CHECKF(ws[r].rc2 == LCM_ERR_INTERRUPTED && strstr(ws[r].err2.msg, "gave up (test)"), "rank %d: %s", r,
                   ws[r].err2.msg);
    }
    lcm_group_destroy(job.g);
    alarm(0);
}
#endif
