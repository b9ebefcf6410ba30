/* hang_sgemm.c: an LD_PRELOAD shim for tests/test_fault_run.sh around cblas_sgemm.
 *   LCM_TEST_HANG_SGEMM=N     the Nth call in the process never returns, in whichever thread makes it:
 *                             a worker stuck inside BLAS, which no one can cancel
 *   LCM_TEST_HANG_MARK=FILE   written when that call hangs: the name of the thread (lcm-cpu<N>); its
 *                             time is when the hang began
 *   LCM_TEST_SLOW_SGEMM_US=U  every call sleeps U microseconds first: slow steps that cost no CPU
 * Every call (that returns) goes to the real cblas_sgemm. Built by the test with cc -shared. */
#define _GNU_SOURCE
#include <cblas.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

typedef void (*sgemm_fn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE, const enum CBLAS_TRANSPOSE,
                         const blasint, const blasint, const blasint, const float, const float *, const blasint,
                         const float *, const blasint, const float, float *, const blasint);

static atomic_long calls;

void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta, const enum CBLAS_TRANSPOSE tb,
                 const blasint m, const blasint n, const blasint k, const float alpha, const float *a,
                 const blasint lda, const float *b, const blasint ldb, const float beta, float *c,
                 const blasint ldc) {
    const char *env = getenv("LCM_TEST_HANG_SGEMM");
    if (env && atomic_fetch_add(&calls, 1) + 1 == atol(env)) {
        const char *mark = getenv("LCM_TEST_HANG_MARK");
        if (mark) {
            char name[32] = "?";
            pthread_getname_np(pthread_self(), name, sizeof name);
            FILE *f = fopen(mark, "w");
            if (f) fprintf(f, "%s\n", name), fclose(f);
        }
        for (;;) sleep(1000);
    }
    const char *slow = getenv("LCM_TEST_SLOW_SGEMM_US");
    if (slow) usleep((useconds_t)atol(slow));
    static sgemm_fn real;
    if (!real) real = (sgemm_fn)dlsym(RTLD_NEXT, "cblas_sgemm");
    real(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
