/* perf.c: peak dense bf16 throughput by device name, for MFU. Datasheet figures without sparsity;
 * `bench.peak_tflops` overrides (and is needed for parts not listed). */
#include <string.h>

#include "train_internal.h"

typedef struct peak_entry {
    const char *name_part;
    double tflops;
} peak_entry;

static const peak_entry peaks[] = {
    {"H200", 989.0}, {"H100", 989.0}, {"GH200", 989.0}, {"H800", 989.0}, {"A100", 312.0}, {"A800", 312.0},
    {"L40S", 362.0}, {"L40", 181.0},  {"RTX 4090", 165.2}, {"RTX 6000 Ada", 364.2}, {"A6000", 154.8},
    {"RTX 3090", 71.0}, {"A10", 125.0},
};

double lcm_peak_tflops(const char *device_name) {
    for (size_t i = 0; i < sizeof peaks / sizeof peaks[0]; i++)
        if (strstr(device_name, peaks[i].name_part)) return peaks[i].tflops;
    return 0;
}
