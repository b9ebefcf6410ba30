/* comm_bench.c: the time of one all-reduce of the comm level, in one process or across processes
 * (docs/performance.md, "Several processes and machines"). Every rank all-reduces N fp32 values ITERS
 * times after 3 warm-ups; process 0 prints the mean time per all-reduce and the bytes per second each
 * rank's buffer moves (N x 4 / time).
 *
 *   build/tools/comm_bench RANKS N ITERS                  one process, RANKS worker threads
 *   mpirun -np P build/tools/comm_bench RANKS N ITERS     P processes of RANKS threads each */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "lcm/comm.h"
#include "lcm/mpi.h"

typedef struct {
    lcm_comm *comm;
    size_t n;
    int iters, rc;
    double seconds;
} rank_arg;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *rank_main(void *p) {
    rank_arg *a = p;
    lcm_error err = {0};
    float *buf = malloc(a->n * sizeof *buf);
    if (!buf) {
        a->rc = 1;
        return NULL;
    }
    for (size_t i = 0; i < a->n; i++) buf[i] = (float)(i % 1000) * 1e-3f;
    double t0 = 0;
    for (int it = -3; it < a->iters && !a->rc; it++) {
        if (it == 0) {
            a->rc = lcm_comm_barrier(a->comm, &err);
            t0 = now();
        }
        if (!a->rc) a->rc = a->comm->ops->allreduce(a->comm, buf, a->n, LCM_RED_F32, &err);
    }
    a->seconds = now() - t0;
    if (a->rc) fprintf(stderr, "comm_bench: %s\n", err.msg);
    free(buf);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: [mpirun -np P] comm_bench RANKS N ITERS\n");
        return 2;
    }
    const int ranks = atoi(argv[1]), iters = atoi(argv[3]);
    const size_t n = (size_t)atoll(argv[2]);
    if (ranks < 1 || ranks > 64 || iters < 1 || n < 1) {
        fprintf(stderr, "comm_bench: RANKS 1..64, N >= 1, ITERS >= 1\n");
        return 2;
    }
    lcm_error err = {0};
    lcm_group *g = NULL;
    if (lcm_mpi_start(&err) || lcm_group_create_local(&g, ranks, &err) || lcm_group_span(g, &err)) {
        fprintf(stderr, "comm_bench: %s\n", err.msg);
        lcm_mpi_finish(1);
        return 1;
    }
    rank_arg a[64] = {{0}};
    pthread_t th[64];
    for (int i = 0; i < ranks; i++) {
        a[i] = (rank_arg){lcm_group_comm(g, lcm_group_first_rank(g) + i), n, iters, 0, 0};
        pthread_create(&th[i], NULL, rank_main, &a[i]);
    }
    int rc = 0;
    for (int i = 0; i < ranks; i++) {
        pthread_join(th[i], NULL);
        rc |= a[i].rc;
    }
    if (!rc && lcm_mpi_rank() == 0)
        printf("%d process(es) x %d rank(s), %zu fp32 (%.1f MB): %.2f ms per all-reduce, %.2f GB/s per rank\n",
               lcm_mpi_size(), ranks, n, n * 4 / 1e6, a[0].seconds / iters * 1e3,
               n * 4.0 / (a[0].seconds / iters) / 1e9);
    lcm_group_destroy(g);
    lcm_mpi_finish(rc);
    return rc;
}
