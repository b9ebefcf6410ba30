/* blas_kernels.h: make OpenBLAS use the kernels the CPU can run. Call lcm_blas_pick_kernels(argv)
 * first thing in main().
 *
 * Debian's OpenBLAS picks its kernels by CPU model when the library loads. On CPUs it does not know
 * (many cloud VMs report a generic "Intel Xeon Processor") it falls back to its generic "Prescott"
 * kernels even when AVX2/AVX-512 are there, and matmuls run 2-5x slower. It reads OPENBLAS_CORETYPE
 * only at load time, before main(), and glibc resets the environment between an executable's
 * pre-initialisers and the libraries' constructors, so the one dependable fix is to set the variable
 * and exec the program again. This happens only when OpenBLAS reports that fallback on a CPU with
 * AVX2 (and never when the user set OPENBLAS_CORETYPE); gdb follows the exec. The choice depends only
 * on the CPU, so a resumed run on the same machine computes the same bits. */
#ifndef LCM_BLAS_KERNELS_H
#define LCM_BLAS_KERNELS_H

#include <cblas.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

static void lcm_blas_pick_kernels(char **argv) {
#if defined(__x86_64__) && defined(__linux__)
    if (getenv("OPENBLAS_CORETYPE")) return;
    const char *core = openblas_get_corename();
    if (!core || strcasecmp(core, "prescott") != 0) return;
    __builtin_cpu_init();
    const char *better = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        better = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        better = "Haswell";
    if (!better) return;
    setenv("OPENBLAS_CORETYPE", better, 1);
    execv("/proc/self/exe", argv); /* returns only on failure: then run with the slow kernels */
#else
    (void)argv;
#endif
}

#endif
