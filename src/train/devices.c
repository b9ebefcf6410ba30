/* devices.c: trainer.devices (parsed by lcm_parse_devices) -> the devices the workers run on:
 *   auto     every visible GPU (CUDA_VISIBLE_DEVICES applies), or one CPU worker when the machine has no
 *            NVIDIA driver; a driver that CUDA cannot use stops it with the reason (gpu_status.h), never
 *            a quiet fall back to the CPU
 *   cpu      one CPU worker;  cpu:N  N CPU workers (threads)
 *   0,2,3    these GPU ordinals (as numbered after CUDA_VISIBLE_DEVICES) */
#include "lcm/backend.h"
#include "lcm/gpu_status.h"
#include "lcm/train.h"

int lcm_resolve_devices_for(const char *spec, const lcm_gpu_status *gpus, lcm_device *out, int *n, lcm_error *err) {
    *n = 0;
    lcm_devices parsed;
    LCM_TRY(lcm_parse_devices(spec, &parsed, err));
    if (parsed.kind == LCM_DEVICES_CPU) {
        for (int i = 0; i < parsed.count; i++) out[i] = (lcm_device){.is_gpu = 0, .index = i};
        *n = parsed.count;
        return 0;
    }
    if (gpus->state == LCM_GPU_UNUSABLE)
        return lcm_fail(err, LCM_ERR_DEVICE, "trainer.devices = '%s' wants the GPUs but CUDA cannot be used: %s", spec,
                        gpus->why);
    int visible = gpus->count;
    if (parsed.kind == LCM_DEVICES_AUTO) {
        if (visible == 0) {
            out[0] = (lcm_device){.is_gpu = 0, .index = 0};
            *n = 1;
            return 0;
        }
        if (visible > LCM_MAX_DEVICES) visible = LCM_MAX_DEVICES;
        for (int i = 0; i < visible; i++) out[i] = (lcm_device){.is_gpu = 1, .index = i};
        *n = visible;
        return 0;
    }
    if (!lcm_cuda_built())
        return lcm_fail(err, LCM_ERR_DEVICE,
                        "trainer.devices = '%s' asks for GPUs but this lcm was built without CUDA; use "
                        "trainer.devices=cpu or rebuild with the CUDA toolkit", spec);
    for (int i = 0; i < parsed.count; i++) {
        const int g = parsed.gpus[i];
        if (g >= visible)
            return lcm_fail(err, LCM_ERR_DEVICE, "trainer.devices = '%s': GPU %d does not exist (%d visible%s)", spec, g,
                            visible, visible ? "; numbering follows CUDA_VISIBLE_DEVICES" : "; use trainer.devices=cpu");
        out[i] = (lcm_device){.is_gpu = 1, .index = g};
    }
    *n = parsed.count;
    return 0;
}

int lcm_resolve_devices(const char *spec, lcm_device *out, int *n, lcm_error *err) {
    lcm_gpu_status gpus;
    lcm_gpu_status_get(&gpus);
    return lcm_resolve_devices_for(spec, &gpus, out, n, err);
}

int lcm_backend_for_device(lcm_backend **out, lcm_device dev, lcm_error *err) {
    return dev.is_gpu ? lcm_cuda_backend_create(out, dev.index, err) : lcm_cpu_backend_create(out, dev.index, err);
}
