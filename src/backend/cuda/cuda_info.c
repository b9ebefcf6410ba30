/* cuda_info.c: GPU discovery for `lcm info`, device selection and messages (CUDA builds only). */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdio.h>

#include "lcm/backend.h"

int lcm_cuda_built(void) { return 1; }

int lcm_cuda_device_count(int *n, lcm_error *err) {
    *n = 0;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
        cudaGetLastError(); /* clear the sticky "no device" state */
        return 0;
    }
    if (e != cudaSuccess)
        return lcm_fail(err, LCM_ERR_DEVICE, "cudaGetDeviceCount failed: %s", cudaGetErrorString(e));
    *n = count;
    return 0;
}

int lcm_cuda_device_name(int gpu, char *out, size_t cap, lcm_error *err) {
    struct cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, gpu);
    if (e != cudaSuccess)
        return lcm_fail(err, LCM_ERR_DEVICE, "cannot query GPU %d: %s", gpu, cudaGetErrorString(e));
    snprintf(out, cap, "%s", p.name);
    return 0;
}

int lcm_cuda_device_memory(int gpu, size_t *free_bytes, size_t *total_bytes, lcm_error *err) {
    *free_bytes = *total_bytes = 0;
    cudaError_t e = cudaSetDevice(gpu);
    if (e == cudaSuccess) e = cudaMemGetInfo(free_bytes, total_bytes);
    if (e != cudaSuccess)
        return lcm_fail(err, LCM_ERR_DEVICE, "cannot query the memory of GPU %d: %s", gpu, cudaGetErrorString(e));
    return 0;
}

void lcm_cuda_print_info(FILE *f) {
    int driver = 0, runtime = 0, nccl = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    ncclGetVersion(&nccl);
    fprintf(f, "CUDA driver %d.%d, runtime %d.%d, NCCL %d.%d.%d\n", driver / 1000, (driver % 1000) / 10,
            runtime / 1000, (runtime % 1000) / 10, nccl / 10000, (nccl % 10000) / 100, nccl % 100);
    int n = 0;
    lcm_error err = {0};
    if (lcm_cuda_device_count(&n, &err) != 0) {
        fprintf(f, "GPUs: cannot enumerate: %s\n", err.msg);
        return;
    }
    if (n == 0) {
        fprintf(f, "GPUs: none visible (no NVIDIA driver or no GPU; CUDA_VISIBLE_DEVICES may hide them); "
                   "lcm trains on CPU threads here\n");
        return;
    }
    fprintf(f, "GPUs: %d visible\n", n);
    for (int i = 0; i < n; i++) {
        struct cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
            fprintf(f, "  gpu%d: cannot query\n", i);
            continue;
        }
        fprintf(f, "  gpu%d: %s, %.1f GiB, compute capability %d.%d, %d SMs\n", i, p.name,
                (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), p.major, p.minor, p.multiProcessorCount);
    }
    if (n > 1) {
        fprintf(f, "peer access (row can read column):\n      ");
        for (int j = 0; j < n; j++) fprintf(f, " gpu%-2d", j);
        fprintf(f, "\n");
        for (int i = 0; i < n; i++) {
            fprintf(f, "  gpu%-2d", i);
            for (int j = 0; j < n; j++) {
                int ok = 0;
                if (i != j) cudaDeviceCanAccessPeer(&ok, i, j);
                fprintf(f, " %-5s", i == j ? "-" : ok ? "yes" : "no");
            }
            fprintf(f, "\n");
        }
    }
}
