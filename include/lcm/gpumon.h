/* gpumon.h: GPU monitoring during training: per device utilization, memory used/total, power and
 * temperature, read through NVML by one thread of its own (never a worker), and shown compactly in the
 * progress line and in full in metrics.jsonl. NVML is the driver's libnvidia-ml.so.1, loaded with dlopen:
 * where it is absent, monitoring costs nothing (no thread) and a notice says so once per process. */
#ifndef LCM_GPUMON_H
#define LCM_GPUMON_H

#include <stddef.h>

#include "lcm/error.h"
#include "lcm/sbuf.h"

typedef struct lcm_gpu_sample {
    int valid;              /* 0: not sampled yet, or the device could not be read */
    int util_pct;           /* GPU busy over NVML's last sample period, % */
    double mem_used_gb;     /* device memory in use (all processes), GB (1e9 bytes) */
    double mem_total_gb;
    double power_w;         /* board power; < 0 when the device does not report it */
    int temp_c;             /* GPU core temperature; < 0 when not reported */
} lcm_gpu_sample;

/* What the monitor thread calls to read device i (0..n-1): NVML's, or a test's. */
typedef struct lcm_gpu_sampler {
    int (*sample)(void *ctx, int i, lcm_gpu_sample *out); /* 0, or -1 when the device cannot be read */
    void (*close)(void *ctx);                             /* may be NULL */
    void *ctx;
} lcm_gpu_sampler;

/* NVML for these CUDA ordinals, mapped by PCI bus id (CUDA_VISIBLE_DEVICES renumbers CUDA's devices,
 * not NVML's). libname: "libnvidia-ml.so.1" (tests name an absent one). Returns 0 with *out filled, or
 * -1 with the reason in why[cap] when NVML cannot be used. */
int lcm_nvml_sampler_open(const char *libname, const int *gpus, int n, lcm_gpu_sampler *out, char *why, size_t cap);

typedef struct lcm_gpumon lcm_gpumon;

/* Start the sampling thread over n devices, one round every period_s; the sampler is owned from here
 * on (closed by lcm_gpumon_stop, or now on failure). */
int lcm_gpumon_start(lcm_gpumon **out, lcm_gpu_sampler sampler, int n, double period_s, lcm_error *err);
/* The monitor of a training run on these GPUs, through NVML at libname; NULL when NVML is absent or
 * cannot start (logged once per process, at info level: training goes on unmonitored). */
lcm_gpumon *lcm_gpumon_open(const char *libname, const int *gpus, int n);
#define LCM_NVML_LIB "libnvidia-ml.so.1"
/* The latest round: up to cap samples into out; returns how many devices (0 for NULL). */
int lcm_gpumon_latest(lcm_gpumon *m, lcm_gpu_sample *out, int cap);
/* Stops the thread and closes the sampler (NULL: nothing). */
void lcm_gpumon_stop(lcm_gpumon *m);

/* The progress line's part: "GPU 97% 61.2/141.0GB 512W 63C" for one device; for several the range of
 * utilization, the fullest memory, the summed power and the hottest: "4 GPUs 95-98% max 61.2/141.0GB
 * 2048W max 65C". Empty when no device has been read. */
void lcm_gpumon_format(const lcm_gpu_sample *s, int n, char *out, size_t cap);
/* metrics.jsonl's part: the key "gpus" and an array with one object per device (null for one that has
 * not been read): {"util":97,"mem_used_gb":61.2,"mem_total_gb":141,"power_w":512,"temp_c":63}. */
void lcm_gpumon_json(const lcm_gpu_sample *s, int n, lcm_sbuf *b, int *first);

#endif
