/* test_comm_mpi.c: comm groups that span processes (src/comm/mpi.c). The test `spanning_collectives`
 * gives every global rank its own data (a function of the rank only), runs each collective and checks
 * every local rank's result against the reference computed here from all ranks' data: all-reduce (f32,
 * bf16) and sum_f64 bitwise equal to the rank-order sum, reduce-scatter into the owners only, all-gather,
 * broadcast from a rank of another process, gather to rank 0, barriers. Run plainly it checks one
 * process (the local path); `under_mpirun` runs it under `mpirun -np 2` and `-np 3` (2 and 1 worker
 * threads per process), where the cross-process path must give the same bits, and a process that issues
 * a different collective must be named by the others. SKIP when mpirun or MPI is missing. Built
 * without MPI (make MPI=0), a launch of several processes is refused with the install command. */
#include <pthread.h>
#include <stdint.h>

#include "harness.h"
#include "lcm/comm.h"
#include "lcm/half.h"
#include "lcm/mpi.h"

#define MAX_LOCAL 4
#define N_ELEMS 1037 /* not a multiple of anything: uneven parts and slices */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Element i of global rank r: signed values over 2^-20 .. 2^20, so the float sum depends on the order. */
static float value(int r, size_t i) {
    uint64_t s = (uint64_t)r * 1000003u + i;
    uint64_t u = splitmix(&s);
    float mant = (float)((u >> 40) & 0xffffff) / (float)(1 << 24) + 0.5f;
    int e = (int)((u >> 8) % 41) - 20;
    return (u & 1 ? -1.0f : 1.0f) * ldexpf(mant, e);
}

typedef struct {
    lcm_comm *comm;
    int world, mismatch; /* mismatch: global rank 1 issues a broadcast where the others all-reduce */
    int fails;           /* checks that failed on this thread */
    int rc_mismatch;
    char msg[1400];
} rank_ctx;

#define EXPECT(cond)                                                                                 \
    do {                                                                                             \
        if (!(cond)) {                                                                               \
            if (!t->fails) snprintf(t->msg, sizeof t->msg, "rank %d: line %d: %s", r, __LINE__, #cond); \
            t->fails++;                                                                              \
        }                                                                                            \
    } while (0)

static void *rank_main(void *arg) {
    rank_ctx *t = arg;
    lcm_comm *c = t->comm;
    const int r = c->rank, W = t->world;
    lcm_error err = {0};
    if (t->mismatch) {
        float x[4] = {0};
        t->rc_mismatch = r == 1 ? lcm_comm_broadcast(c, x, sizeof x, 0, &err) : c->ops->allreduce(c, x, 4, LCM_RED_F32, &err);
        snprintf(t->msg, sizeof t->msg, "%s", err.msg);
        return NULL;
    }
    float *buf = malloc(N_ELEMS * sizeof *buf), *ref = malloc(N_ELEMS * sizeof *ref);
    uint16_t *hb = malloc(N_ELEMS * sizeof *hb), *href = malloc(N_ELEMS * sizeof *href);
    float *recv = malloc(N_ELEMS * sizeof *recv);
    if (!buf || !ref || !hb || !href || !recv) {
        t->fails++;
        return NULL;
    }
    /* all-reduce f32 and bf16: the rank-order sums */
    for (size_t i = 0; i < N_ELEMS; i++) {
        buf[i] = value(r, i);
        hb[i] = lcm_f32_to_bf16(value(r, i));
        float s = value(0, i), sh = lcm_bf16_to_f32(lcm_f32_to_bf16(value(0, i)));
        for (int q = 1; q < W; q++) s += value(q, i), sh += lcm_bf16_to_f32(lcm_f32_to_bf16(value(q, i)));
        ref[i] = s;
        href[i] = lcm_f32_to_bf16(sh);
    }
    EXPECT(c->ops->allreduce(c, buf, N_ELEMS, LCM_RED_F32, &err) == 0);
    EXPECT(memcmp(buf, ref, N_ELEMS * sizeof *buf) == 0);
    EXPECT(c->ops->allreduce(c, hb, N_ELEMS, LCM_RED_BF16, &err) == 0);
    EXPECT(memcmp(hb, href, N_ELEMS * sizeof *hb) == 0);
    /* sum_f64 */
    double d[3] = {r + 0.25, 1.0 / (r + 1), -r * 1e10}, dref[3] = {0, 0, 0};
    for (int q = 0; q < W; q++) dref[0] += q + 0.25, dref[1] += 1.0 / (q + 1), dref[2] += -q * 1e10;
    EXPECT(lcm_comm_sum_f64(c, d, 3, &err) == 0);
    EXPECT(memcmp(d, dref, sizeof d) == 0);
    /* reduce-scatter of the range [100, N_ELEMS) in slices of ceil(N / W): owners get the sums, the rest
     * of their receive buffer stays untouched */
    const size_t slice = (N_ELEMS + (size_t)W - 1) / (size_t)W, begin = 100;
    for (size_t i = 0; i < N_ELEMS; i++) buf[i] = value(r, i), recv[i] = -1.0f;
    EXPECT(c->ops->reduce_scatter(c, buf + begin, recv, begin, N_ELEMS, slice, LCM_RED_F32, &err) == 0);
    for (size_t i = 0; i < slice; i++) {
        const size_t e = (size_t)r * slice + i;
        const float want = e >= begin && e < N_ELEMS ? ref[e] : -1.0f;
        EXPECT(memcmp(&recv[i], &want, sizeof want) == 0);
    }
    /* all-gather of the same range: each element from its owner (whose value is value(owner, i)) */
    for (size_t i = 0; i < N_ELEMS; i++) buf[i] = value(r, i);
    EXPECT(c->ops->all_gather(c, buf + begin, begin, N_ELEMS, slice, LCM_RED_F32, &err) == 0);
    for (size_t i = 0; i < N_ELEMS; i++) {
        const float want = i < begin ? value(r, i) : value((int)(i / slice), i);
        EXPECT(memcmp(&buf[i], &want, sizeof want) == 0);
    }
    /* broadcast from the last rank (another process's, under mpirun) */
    for (size_t i = 0; i < N_ELEMS; i++) buf[i] = value(r, i);
    EXPECT(lcm_comm_broadcast(c, buf, N_ELEMS * sizeof *buf, W - 1, &err) == 0);
    for (size_t i = 0; i < N_ELEMS; i++) EXPECT(buf[i] == value(W - 1, i));
    /* gather: rank q's 3 + q floats at offset 10 * q of rank 0's buffer */
    float mine[MAX_LOCAL * 8 + 3];
    for (int i = 0; i < 3 + r; i++) mine[i] = value(r, (size_t)i);
    for (size_t i = 0; i < N_ELEMS; i++) recv[i] = -1.0f;
    EXPECT(lcm_comm_gather(c, mine, (size_t)(3 + r) * sizeof(float), r == 0 ? recv : NULL,
                           r == 0 ? N_ELEMS * sizeof(float) : 0, (size_t)r * 10 * sizeof(float), &err) == 0);
    if (r == 0)
        for (int q = 0; q < W; q++)
            for (int i = 0; i < 10; i++) EXPECT(recv[q * 10 + i] == (i < 3 + q ? value(q, (size_t)i) : -1.0f));
    EXPECT(lcm_comm_barrier(c, &err) == 0);
    if (t->fails && err.msg[0]) snprintf(t->msg + strlen(t->msg), sizeof t->msg - strlen(t->msg), " (%s)", err.msg);
    free(buf);
    free(ref);
    free(hb);
    free(href);
    free(recv);
    return NULL;
}

/* A group of `local` ranks in this process, spanning the others; every rank runs rank_main. */
static void run_group(int local, int mismatch) {
    lcm_error err = {0};
    lcm_group *g = NULL;
    CHECK_OK(lcm_group_create_local(&g, local, &err), &err);
    if (!g) return;
    CHECK_OK(lcm_group_span(g, &err), &err);
    const int W = lcm_group_size(g), r0 = lcm_group_first_rank(g);
    CHECK(lcm_group_local_size(g) == local);
    CHECK(W == local * lcm_mpi_size());
    rank_ctx t[MAX_LOCAL];
    pthread_t th[MAX_LOCAL];
    memset(t, 0, sizeof t);
    alarm(60); /* a hang fails the test */
    for (int i = 0; i < local; i++) {
        t[i].comm = lcm_group_comm(g, r0 + i);
        t[i].world = W;
        t[i].mismatch = mismatch;
        pthread_create(&th[i], NULL, rank_main, &t[i]);
    }
    for (int i = 0; i < local; i++) pthread_join(th[i], NULL);
    alarm(0);
    for (int i = 0; i < local; i++) {
        CHECKF(t[i].fails == 0, "%d checks failed; first: %s", t[i].fails, t[i].msg);
        if (mismatch) {
            /* every rank fails, and the message says what each side called */
            CHECKF(t[i].rc_mismatch == LCM_ERR_INTERNAL, "rank %d: %d", r0 + i, t[i].rc_mismatch);
            CHECKF(strstr(t[i].msg, "mismatch") && strstr(t[i].msg, "broadcast"), "rank %d: %s", r0 + i, t[i].msg);
        }
    }
    lcm_group_destroy(g);
}

TEST(spanning_collectives) {
    lcm_error err = {0};
    CHECK_OK(lcm_mpi_start(&err), &err);
    for (int local = 1; local <= 3; local++) run_group(local, 0);
    if (lcm_mpi_size() > 1) run_group(1, 1); /* rank 1 is in another process */
    lcm_mpi_finish(0);
}

/* mpirun found in PATH, or NULL. */
static const char *find_mpirun(void) {
    static char path[512];
    const char *p = getenv("PATH");
    while (p && *p) {
        size_t n = strcspn(p, ":");
        snprintf(path, sizeof path, "%.*s/mpirun", (int)n, p);
        if (access(path, X_OK) == 0) return path;
        p += n + (p[n] == ':');
    }
    return NULL;
}

TEST(under_mpirun) {
    if (lcm_mpi_size() > 1) SKIP("already under mpirun");
    if (!lcm_mpi_built()) SKIP("built without MPI (apt-get install openmpi-bin libopenmpi-dev; make MPI=1)");
    const char *mpirun = find_mpirun();
    if (!mpirun) SKIP("no mpirun in PATH (apt-get install openmpi-bin)");
    char self[512];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(n > 0);
    if (n <= 0) return;
    self[n] = '\0';
    /* Root (CI) needs Open MPI's consent; more processes than cores need --oversubscribe. */
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    /* Under ASan: Open MPI keeps allocations to the end (its plugins are unloaded at MPI_Finalize, so
     * LeakSanitizer cannot even name them for a suppression); the leak check is for the one-process runs. */
    char asan[512];
    const char *was = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof asan, "%s%sdetect_leaks=0", was ? was : "", was && was[0] ? ":" : "");
    setenv("ASAN_OPTIONS", asan, 1);
#ifdef __SANITIZE_THREAD__
    /* Open MPI's TCP transport takes two of its own mutexes in both orders (ThreadSanitizer reports it
     * inside mca_btl_tcp); one machine needs only shared memory. */
    setenv("OMPI_MCA_btl", "self,vader", 0);
#endif
    char log[300];
    snprintf(log, sizeof log, "%s/mpirun.log", harness_tmpdir());
    for (int np = 2; np <= 3; np++) {
        char nps[16];
        snprintf(nps, sizeof nps, "%d", np);
        char *argv[] = {(char *)mpirun, "--oversubscribe", "-np", nps, self, "spanning_collectives", NULL};
        /* The processes' PASS/FAIL lines go to a log (they are not this test's lines): every process
         * must print PASS, and mpirun must exit 0. */
        extern char **environ;
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
        pid_t pid;
        int status = -1;
        if (posix_spawn(&pid, mpirun, &fa, NULL, argv, environ) == 0) waitpid(pid, &status, 0);
        posix_spawn_file_actions_destroy(&fa);
        char *text = NULL;
        size_t len = 0;
        FILE *f = fopen(log, "r");
        if (f) {
            text = calloc(1, 1 << 20);
            if (text) len = fread(text, 1, (1 << 20) - 1, f);
            fclose(f);
        }
        int passes = 0;
        for (const char *q = text; q && (q = strstr(q, "PASS spanning_collectives")); q++) passes++;
        CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0 && passes == np,
               "mpirun -np %d %s spanning_collectives: status %d, %d of %d processes passed; output:\n%.*s", np, self,
               status, passes, np, (int)len, text ? text : "");
        free(text);
    }
}

TEST(without_mpi_a_launch_is_refused) {
    if (lcm_mpi_built()) SKIP("built with MPI (make MPI=0 builds the case this checks)");
    lcm_error err = {0};
    setenv("OMPI_COMM_WORLD_SIZE", "3", 1);
    CHECK_FAILS(lcm_mpi_start(&err), &err, LCM_ERR_USAGE, "one of 3 processes, but this lcm was built without MPI; "
                "install MPI (Debian: apt-get install openmpi-bin libopenmpi-dev) and rebuild with `make MPI=1`");
    setenv("OMPI_COMM_WORLD_SIZE", "1", 1); /* one process under a launcher: nothing to refuse */
    CHECK_OK(lcm_mpi_start(&err), &err);
    unsetenv("OMPI_COMM_WORLD_SIZE");
    CHECK_OK(lcm_mpi_start(&err), &err);
    CHECK(lcm_mpi_size() == 1 && lcm_mpi_rank() == 0);
}
