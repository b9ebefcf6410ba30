/* harness.h: the test harness. A test file defines TEST(name) { ... } blocks; the harness runs them
 * (or only those named on the command line) and prints one line per test:
 *   PASS name | FAIL name | SKIP name: reason
 * tests/run.sh counts those lines. A test fails when any CHECK fails; it keeps running after a failed
 * CHECK so that one run shows every broken expectation. */
#ifndef LCM_TEST_HARNESS_H
#define LCM_TEST_HARNESS_H

#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lcm/blas_kernels.h"
#include "lcm/error.h"

typedef void (*harness_fn)(void);
typedef struct harness_test { const char *name; harness_fn fn; } harness_test;

static harness_test harness_tests[512];
static int harness_n;
static int harness_failed;
static const char *harness_skip;

#define TEST(tname)                                                                         \
    static void test_##tname(void);                                                         \
    __attribute__((constructor)) static void register_##tname(void) {                       \
        harness_tests[harness_n].name = #tname;                                             \
        harness_tests[harness_n++].fn = test_##tname;                                       \
    }                                                                                       \
    static void test_##tname(void)

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);     \
            harness_failed = 1;                                                             \
        }                                                                                   \
    } while (0)

#define CHECKF(cond, ...)                                                                   \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "  %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);      \
            fprintf(stderr, __VA_ARGS__);                                                   \
            fprintf(stderr, "\n");                                                          \
            harness_failed = 1;                                                             \
        }                                                                                   \
    } while (0)

/* |a - b| <= tol */
#define CHECK_NEAR(a, b, tol)                                                               \
    do {                                                                                    \
        double ha_ = (double)(a), hb_ = (double)(b), ht_ = (double)(tol);                   \
        if (!(fabs(ha_ - hb_) <= ht_)) {                                                    \
            fprintf(stderr, "  %s:%d: %s = %.9g, %s = %.9g, differ by %.3g > %.3g\n",       \
                    __FILE__, __LINE__, #a, ha_, #b, hb_, fabs(ha_ - hb_), ht_);            \
            harness_failed = 1;                                                             \
        }                                                                                   \
    } while (0)

/* An lcm call that must succeed. */
#define CHECK_OK(expr, errp)                                                                \
    do {                                                                                    \
        int hrc_ = (expr);                                                                  \
        if (hrc_ != 0) {                                                                    \
            fprintf(stderr, "  %s:%d: %s failed (%d): %s\n", __FILE__, __LINE__, #expr,     \
                    hrc_, (errp)->msg);                                                     \
            harness_failed = 1;                                                             \
        }                                                                                   \
    } while (0)

/* An lcm call that must fail with `code` and a message containing `needle`. */
#define CHECK_FAILS(expr, errp, code, needle)                                               \
    do {                                                                                    \
        lcm_error_clear(errp);                                                              \
        int hrc_ = (expr);                                                                  \
        if (hrc_ != (int)(code) || !strstr((errp)->msg, (needle))) {                        \
            fprintf(stderr, "  %s:%d: %s: expected error %d containing \"%s\", got %d: %s\n",\
                    __FILE__, __LINE__, #expr, (int)(code), (needle), hrc_, (errp)->msg);   \
            harness_failed = 1;                                                             \
        }                                                                                   \
        lcm_error_clear(errp);                                                              \
    } while (0)

#define SKIP(reason)                                                                        \
    do {                                                                                    \
        harness_skip = (reason);                                                            \
        return;                                                                             \
    } while (0)

/* ||a - b|| / ||b|| over n floats (0 when both are zero). */
static inline double harness_rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    if (den == 0) return sqrt(num);
    return sqrt(num / den);
}

/* A fresh temporary directory for a test (removed by the OS's tmp cleaning; tests may rm it). */
static inline const char *harness_tmpdir(void) {
    static char dir[256];
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/lcm-test-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(2);
    }
    return dir;
}

/* Run argv[0] (searched in PATH) with its arguments, never through a shell; its stdout and stderr go
 * to /dev/null when quiet. Returns 1 when it exited with status 0. */
static inline int harness_run(char *const argv[], int quiet) {
    extern char **environ;
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0) return 0;
    if (quiet) {
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    }
    pid_t pid;
    int ok = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ) == 0;
    posix_spawn_file_actions_destroy(&fa);
    int status = 0;
    while (ok && waitpid(pid, &status, 0) < 0) ok = 0;
    return ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main(int argc, char **argv) {
    lcm_blas_pick_kernels(argv);
    int failed = 0;
    for (int i = 0; i < harness_n; i++) {
        if (argc > 1) {
            int wanted = 0;
            for (int a = 1; a < argc; a++) wanted |= strcmp(argv[a], harness_tests[i].name) == 0;
            if (!wanted) continue;
        }
        harness_failed = 0;
        harness_skip = NULL;
        harness_tests[i].fn();
        if (harness_failed) {
            printf("FAIL %s\n", harness_tests[i].name);
            failed++;
        } else if (harness_skip) {
            printf("SKIP %s: %s\n", harness_tests[i].name, harness_skip);
        } else {
            printf("PASS %s\n", harness_tests[i].name);
        }
        fflush(stdout);
    }
    return failed ? 1 : 0;
}

#endif
