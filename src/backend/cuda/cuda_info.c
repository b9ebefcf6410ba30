/* cuda_info.c: GPU discovery for `lcm info`, device selection and messages (CUDA builds only): the
 * CUDA half of the probe that gpu_status.c decides on. */
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <nccl.h>
#include <stdio.h>
#include <string.h>

#include "lcm/backend.h"
#include "lcm/gpu_status.h"

_Static_assert(LCM_CUDA_SUCCESS == (int)cudaSuccess, "cudaSuccess");
_Static_assert(LCM_CUDA_ERR_INSUFFICIENT_DRIVER == (int)cudaErrorInsufficientDriver, "cudaErrorInsufficientDriver");
_Static_assert(LCM_CUDA_ERR_NO_DEVICE == (int)cudaErrorNoDevice, "cudaErrorNoDevice");

int lcm_cuda_built(void) { return 1; }

void lcm_gpu_status_get(lcm_gpu_status *st) {
    lcm_gpu_probe p;
    lcm_gpu_probe_host(&p);
    p.cuda_built = 1;
    void *libcuda = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (libcuda) {
        p.libcuda_loaded = 1;
        dlclose(libcuda);
    } else {
        const char *why = dlerror();
        snprintf(p.libcuda_error, sizeof p.libcuda_error, "%s", why ? why : "not found");
    }
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    p.count_error = (int)e;
    p.count = e == cudaSuccess ? count : 0;
    snprintf(p.count_error_text, sizeof p.count_error_text, "%s", cudaGetErrorString(e));
    if (e != cudaSuccess) cudaGetLastError(); /* clear the sticky error for later calls */
    cudaDriverGetVersion(&p.driver_cuda_version);
    cudaRuntimeGetVersion(&p.runtime_cuda_version);
    lcm_gpu_decide(&p, st);
}

int lcm_cuda_device_count(int *n, lcm_error *err) {
    lcm_gpu_status st;
    lcm_gpu_status_get(&st);
    *n = st.count;
    if (st.state == LCM_GPU_UNUSABLE) return lcm_fail(err, LCM_ERR_DEVICE, "CUDA cannot be used: %s", st.why);
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

int lcm_cuda_pci_bus_id(int gpu, char *out, size_t cap, lcm_error *err) {
    cudaError_t e = cudaDeviceGetPCIBusId(out, (int)cap, gpu);
    if (e != cudaSuccess)
        return lcm_fail(err, LCM_ERR_DEVICE, "cannot query the PCI bus id of GPU %d: %s", gpu, cudaGetErrorString(e));
    return 0;
}

void lcm_cuda_print_info(FILE *f) {
    int driver = 0, runtime = 0, nccl = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    ncclGetVersion(&nccl);
    fprintf(f, "CUDA driver %d.%d, runtime %d.%d, NCCL %d.%d.%d\n", driver / 1000, (driver % 1000) / 10,
            runtime / 1000, (runtime % 1000) / 10, nccl / 10000, (nccl % 10000) / 100, nccl % 100);
    lcm_gpu_status st;
    lcm_gpu_status_get(&st);
    if (st.state == LCM_GPU_NONE) {
        fprintf(f, "GPUs: none (%s); lcm trains on CPU threads here\n", st.why);
        return;
    }
    if (st.state == LCM_GPU_UNUSABLE) {
        fprintf(f, "GPUs: CUDA cannot be used: %s\n", st.why);
        return;
    }
    const int n = st.count;
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
