/* gpu_gate.h: when a GPU test may skip. Only where the machine has fewer GPUs than the test needs, and
 * then with the reason "needs K GPU(s), N visible", which tools/gpu_check.sh accepts only when the
 * machine really has fewer than K. Where an NVIDIA driver is present but CUDA cannot be used
 * (lcm_cuda_device_count's error, include/lcm/gpu_status.h) the test FAILS with the reason: a broken
 * driver must not read as "no GPU here". */
#ifndef LCM_TESTS_GPU_GATE_H
#define LCM_TESTS_GPU_GATE_H

#include <stdio.h>

#include "lcm/backend.h"

/* The skip reason for a test needing k GPUs where n are visible. */
static inline const char *gpu_gate_reason(int k, int n) {
    static char why[64];
    snprintf(why, sizeof why, "needs %d GPU(s), %d visible", k, n);
    return why;
}

/* Visible GPUs; -1 with err set when a driver is present but CUDA cannot be used. */
static inline int gpu_gate_count(lcm_error *err) {
    int n = 0;
    return lcm_cuda_device_count(&n, err) != 0 ? -1 : n;
}

#define NEED_GPUS(k)                                                                    \
    do {                                                                                \
        lcm_error gate_err_ = {0};                                                      \
        const int gate_n_ = gpu_gate_count(&gate_err_);                                 \
        if (gate_n_ < 0) {                                                              \
            CHECKF(0, "%s", gate_err_.msg);                                             \
            return;                                                                     \
        }                                                                               \
        if (gate_n_ < (k)) SKIP(gpu_gate_reason((k), gate_n_));                         \
    } while (0)

#endif
