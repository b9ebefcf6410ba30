/* cpu_threads.c: how many cores, and how many OpenBLAS threads each CPU worker gets.
 * OpenBLAS's thread count is process-wide; the trainer decides it once (cores / CPU workers) so that
 * N workers never run N x cores BLAS threads, and keeps it fixed so a resumed run computes the same bits. */
#include <cblas.h>
#include <unistd.h>

#include "lcm/backend.h"

int lcm_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Under ThreadSanitizer OpenBLAS runs in the calling thread: its own worker threads are not
 * instrumented, so TSan would report their (synchronised) writes as races. */
void lcm_cpu_set_blas_threads(int n) {
#if defined(__SANITIZE_THREAD__)
    n = 1;
#endif
    openblas_set_num_threads(n > 0 ? n : 1);
}
