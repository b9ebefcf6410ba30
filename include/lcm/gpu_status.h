/* gpu_status.h: can this process use CUDA, and if not, why. Three answers: usable GPUs; none (no
 * NVIDIA driver on this machine: CPU threads are the only choice and trainer.devices=auto uses them);
 * unusable (a driver is there but CUDA cannot use it: driver too old, libcuda missing, no device
 * reachable, or an lcm built without CUDA). "Unusable" is never turned into "train on the CPU" without
 * being asked: trainer.devices=auto stops with the reason, `lcm info` prints it, the GPU tests fail.
 *
 * The decision is a pure function of what was probed (lcm_gpu_decide), so that it is tested with
 * injected CUDA error codes on machines without a GPU; lcm_gpu_status_get probes this process (the CUDA
 * runtime in src/backend/cuda/cuda_info.c, or src/nocuda/no_cuda.c in a build without CUDA). */
#ifndef LCM_GPU_STATUS_H
#define LCM_GPU_STATUS_H

#include <stddef.h>

/* The cudaError_t values the decision tells apart (cuda_info.c checks them against the runtime's). */
#define LCM_CUDA_SUCCESS 0
#define LCM_CUDA_ERR_INSUFFICIENT_DRIVER 35
#define LCM_CUDA_ERR_NO_DEVICE 100

typedef enum { LCM_GPU_USABLE, LCM_GPU_NONE, LCM_GPU_UNUSABLE } lcm_gpu_state;

typedef struct lcm_gpu_probe {
    int cuda_built;             /* this lcm has the CUDA backend */
    int dev_nodes;              /* /dev/nvidiactl exists: the driver's device nodes reach this process */
    int proc_driver;            /* /proc/driver/nvidia/version exists: the kernel module is loaded (a
                                 * container sees this even without GPU access, so alone it proves little) */
    char driver_version[32];    /* the kernel driver's version ("580.65.06"), "" when unknown */
    int libcuda_loaded;         /* the driver's user-space library libcuda.so.1 loads (cuda builds) */
    char libcuda_error[160];    /* why not (dlerror), when it does not */
    int count_error;            /* cudaGetDeviceCount's cudaError_t */
    char count_error_text[160]; /* its cudaGetErrorString */
    int count;                  /* GPUs it counted, when count_error is LCM_CUDA_SUCCESS */
    int driver_cuda_version;    /* cudaDriverGetVersion: the newest CUDA the driver supports (12080 = 12.8), 0 if none */
    int runtime_cuda_version;   /* cudaRuntimeGetVersion: the CUDA this lcm was built against */
    char visible_devices[128];  /* CUDA_VISIBLE_DEVICES, "(unset)" when it is not set */
} lcm_gpu_probe;

typedef struct lcm_gpu_status {
    lcm_gpu_state state;
    int count;      /* usable GPUs (0 unless state is LCM_GPU_USABLE) */
    char why[640];  /* for NONE and UNUSABLE: one sentence, no trailing period */
} lcm_gpu_status;

/* The decision table (see gpu_status.c). */
void lcm_gpu_decide(const lcm_gpu_probe *p, lcm_gpu_status *st);
/* The parts of the probe that need no CUDA: device nodes, kernel driver, CUDA_VISIBLE_DEVICES (the rest
 * zeroed, libcuda_loaded included). */
void lcm_gpu_probe_host(lcm_gpu_probe *p);
/* Probe this process and decide. Cheap enough to call whenever a decision is needed. */
void lcm_gpu_status_get(lcm_gpu_status *st);

#endif
