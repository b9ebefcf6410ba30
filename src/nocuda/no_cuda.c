/* no_cuda.c: the CUDA entry points of a build made without the CUDA toolkit (CUDA=0, or no nvcc
 * found). Each reports that clearly instead of failing to link. */
#include <stdio.h>

#include "lcm/backend.h"
#include "lcm/comm.h"
#include "lcm/gpu_status.h"

static const char why[] =
    "this lcm was built without CUDA; rebuild with the CUDA toolkit installed (make CUDA=1, "
    "CUDA_HOME=/usr/local/cuda) or train on the CPU with trainer.devices=cpu";

int lcm_cuda_built(void) { return 0; }

int lcm_cuda_backend_create(lcm_backend **out, int gpu, lcm_error *err) {
    *out = NULL;
    return lcm_fail(err, LCM_ERR_DEVICE, "cannot use GPU %d: %s", gpu, why);
}

int lcm_cuda_use_reference_attention(lcm_backend *be, lcm_error *err) {
    return lcm_fail(err, LCM_ERR_DEVICE, "no reference CUDA attention: %s", why);
}

int lcm_cuda_device_count(int *n, lcm_error *err) {
    *n = 0;
    return 0;
}

int lcm_cuda_device_name(int gpu, char *out, size_t cap, lcm_error *err) {
    if (cap) out[0] = '\0';
    return lcm_fail(err, LCM_ERR_DEVICE, "cannot query GPU %d: %s", gpu, why);
}

int lcm_cuda_device_memory(int gpu, size_t *free_bytes, size_t *total_bytes, lcm_error *err) {
    *free_bytes = *total_bytes = 0;
    return lcm_fail(err, LCM_ERR_DEVICE, "cannot query GPU %d: %s", gpu, why);
}

int lcm_cuda_pci_bus_id(int gpu, char *out, size_t cap, lcm_error *err) {
    if (cap) out[0] = '\0';
    return lcm_fail(err, LCM_ERR_DEVICE, "cannot query GPU %d: %s", gpu, why);
}

void lcm_gpu_status_get(lcm_gpu_status *st) {
    lcm_gpu_probe p;
    lcm_gpu_probe_host(&p);
    lcm_gpu_decide(&p, st);
}

void lcm_cuda_print_info(FILE *f) {
    lcm_gpu_status st;
    lcm_gpu_status_get(&st);
    if (st.state == LCM_GPU_UNUSABLE) fprintf(f, "GPUs: CUDA cannot be used: %s\n", st.why);
    else fprintf(f, "GPUs: none usable (%s)\n", why);
}

int lcm_group_create_nccl(lcm_group **out, int n, const int *gpus, lcm_error *err) {
    *out = NULL;
    return lcm_fail(err, LCM_ERR_DEVICE, "cannot create NCCL communicators: %s", why);
}
