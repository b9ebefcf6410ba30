/* gpu_status.c: the decision "GPUs usable / none / unusable, and why" from a probe (gpu_status.h), and
 * the host half of the probe (device nodes, kernel driver version, CUDA_VISIBLE_DEVICES). The CUDA half
 * is filled by cuda_info.c, or not at all in a build without CUDA. */
#include "lcm/gpu_status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CPU_HINT "(to train on the CPU instead, pass trainer.devices=cpu)"

/* "driver 580.65.06" or "driver" when its version is unknown. */
static void driver_name(const lcm_gpu_probe *p, char *out, size_t cap) {
    if (p->driver_version[0]) snprintf(out, cap, "driver %s", p->driver_version);
    else snprintf(out, cap, "driver");
}

void lcm_gpu_decide(const lcm_gpu_probe *p, lcm_gpu_status *st) {
    memset(st, 0, sizeof *st);
    char drv[64];
    driver_name(p, drv, sizeof drv);
    /* A driver is "present" when its device nodes reach us, or when the kernel module is loaded and its
     * library loads: /proc alone is visible inside containers that were given no GPU. */
    const int present = p->dev_nodes || (p->proc_driver && p->libcuda_loaded);
    st->state = LCM_GPU_UNUSABLE;
    if (!p->cuda_built) {
        if (present) {
            snprintf(st->why, sizeof st->why,
                     "an NVIDIA %s is on this machine but this lcm was built without CUDA: rebuild it with the "
                     "CUDA toolkit (make CUDA=1) to use the GPUs " CPU_HINT, drv);
        } else {
            st->state = LCM_GPU_NONE;
            snprintf(st->why, sizeof st->why, "no NVIDIA driver on this machine (and this lcm was built without CUDA)");
        }
        return;
    }
    switch (p->count_error) {
    case LCM_CUDA_SUCCESS:
        if (p->count > 0) {
            st->state = LCM_GPU_USABLE;
            st->count = p->count;
            return;
        }
        /* a driver that counts zero devices is "no device" */
        /* fall through */
    case LCM_CUDA_ERR_NO_DEVICE:
        if (!present) {
            st->state = LCM_GPU_NONE;
            snprintf(st->why, sizeof st->why, "no NVIDIA driver and no GPU on this machine");
        } else {
            snprintf(st->why, sizeof st->why,
                     "the NVIDIA %s is loaded but CUDA reaches no GPU (CUDA_VISIBLE_DEVICES=%s; the /dev/nvidia* "
                     "device nodes must be accessible to this process) " CPU_HINT, drv, p->visible_devices);
        }
        return;
    case LCM_CUDA_ERR_INSUFFICIENT_DRIVER:
        if (!present) {
            st->state = LCM_GPU_NONE;
            snprintf(st->why, sizeof st->why, "no NVIDIA driver on this machine");
        } else if (!p->libcuda_loaded) {
            snprintf(st->why, sizeof st->why,
                     "the NVIDIA %s is loaded but its library libcuda.so.1 cannot be loaded (%s): install the "
                     "driver's user-space part, or start the container with GPU access " CPU_HINT,
                     drv, p->libcuda_error[0] ? p->libcuda_error : "not found");
        } else {
            snprintf(st->why, sizeof st->why,
                     "the NVIDIA %s supports CUDA up to %d.%d but this lcm was built with CUDA %d.%d: update the "
                     "driver (CUDA 13 needs driver 580 or later) " CPU_HINT,
                     drv, p->driver_cuda_version / 1000, (p->driver_cuda_version % 1000) / 10,
                     p->runtime_cuda_version / 1000, (p->runtime_cuda_version % 1000) / 10);
        }
        return;
    default:
        snprintf(st->why, sizeof st->why, "CUDA cannot start: cudaGetDeviceCount failed: %s (error %d; %s%s) " CPU_HINT,
                 p->count_error_text[0] ? p->count_error_text : "unknown error", p->count_error,
                 present ? "NVIDIA " : "no NVIDIA driver found", present ? drv : "");
        return;
    }
}

void lcm_gpu_probe_host(lcm_gpu_probe *p) {
    memset(p, 0, sizeof *p);
    p->dev_nodes = access("/dev/nvidiactl", F_OK) == 0;
    FILE *f = fopen("/proc/driver/nvidia/version", "r");
    if (f) {
        p->proc_driver = 1;
        /* "NVRM version: NVIDIA UNIX [Open Kernel Module for] x86_64 [Kernel Module]  580.65.06  <date>":
         * the version is the first word that starts with a digit and has a dot. */
        char line[256], *save = NULL;
        if (fgets(line, sizeof line, f)) {
            for (char *w = strtok_r(line, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
                if (w[0] >= '0' && w[0] <= '9' && strchr(w, '.')) {
                    snprintf(p->driver_version, sizeof p->driver_version, "%s", w);
                    break;
                }
            }
        }
        fclose(f);
    }
    const char *vis = getenv("CUDA_VISIBLE_DEVICES");
    snprintf(p->visible_devices, sizeof p->visible_devices, "%s", vis ? vis : "(unset)");
}
