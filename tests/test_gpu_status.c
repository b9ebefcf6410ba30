/* test_gpu_status.c: the "GPUs usable / none / unusable" decision (gpu_status.c) with injected CUDA
 * error codes and driver findings, and what trainer.devices makes of each (devices.c). The point of
 * the decision is that a machine with an NVIDIA driver never falls back to the CPU without a word, so
 * each unusable case is checked to stop `auto` with its reason and the trainer.devices=cpu hint. */
#include <string.h>

#include "harness.h"
#include "lcm/gpu_status.h"
#include "lcm/train.h"

/* A CUDA build on a machine whose driver works, with two GPUs. */
static lcm_gpu_probe working(void) {
    lcm_gpu_probe p = {.cuda_built = 1, .dev_nodes = 1, .proc_driver = 1, .libcuda_loaded = 1,
                       .count_error = LCM_CUDA_SUCCESS, .count = 2, .driver_cuda_version = 13000,
                       .runtime_cuda_version = 13000};
    strcpy(p.driver_version, "580.65.06");
    strcpy(p.visible_devices, "(unset)");
    return p;
}

/* A machine with no NVIDIA driver at all: what cudart reports when libcuda is absent. */
static lcm_gpu_probe no_driver(void) {
    lcm_gpu_probe p = {.cuda_built = 1, .count_error = LCM_CUDA_ERR_INSUFFICIENT_DRIVER};
    strcpy(p.libcuda_error, "libcuda.so.1: cannot open shared object file");
    strcpy(p.visible_devices, "(unset)");
    return p;
}

TEST(working_driver_is_usable_with_its_count) {
    lcm_gpu_probe p = working();
    lcm_gpu_status st;
    lcm_gpu_decide(&p, &st);
    CHECK(st.state == LCM_GPU_USABLE && st.count == 2);
}

TEST(no_driver_is_none_not_an_error) {
    lcm_gpu_probe p = no_driver();
    lcm_gpu_status st;
    lcm_gpu_decide(&p, &st);
    CHECKF(st.state == LCM_GPU_NONE && st.count == 0, "state %d: %s", (int)st.state, st.why);
    p.count_error = LCM_CUDA_ERR_NO_DEVICE;
    lcm_gpu_decide(&p, &st);
    CHECKF(st.state == LCM_GPU_NONE, "state %d: %s", (int)st.state, st.why);
    /* a container on a GPU host sees /proc/driver/nvidia but was given no GPU and no libcuda */
    p.proc_driver = 1;
    lcm_gpu_decide(&p, &st);
    CHECKF(st.state == LCM_GPU_NONE, "state %d: %s", (int)st.state, st.why);
}

TEST(driver_too_old_is_unusable_and_says_so) {
    lcm_gpu_probe p = working();
    p.count_error = LCM_CUDA_ERR_INSUFFICIENT_DRIVER;
    p.count = 0;
    p.driver_cuda_version = 12040;
    strcpy(p.driver_version, "550.54.15");
    lcm_gpu_status st;
    lcm_gpu_decide(&p, &st);
    CHECK(st.state == LCM_GPU_UNUSABLE && st.count == 0);
    CHECKF(strstr(st.why, "550.54.15") && strstr(st.why, "12.4") && strstr(st.why, "13.0") &&
           strstr(st.why, "580") && strstr(st.why, "trainer.devices=cpu"), "%s", st.why);
}

TEST(driver_without_libcuda_is_unusable) {
    lcm_gpu_probe p = no_driver();
    p.dev_nodes = 1; /* the device nodes are there, the library is not */
    lcm_gpu_status st;
    lcm_gpu_decide(&p, &st);
    CHECK(st.state == LCM_GPU_UNUSABLE);
    CHECKF(strstr(st.why, "libcuda.so.1") && strstr(st.why, "cannot open"), "%s", st.why);
}

TEST(driver_reaching_no_device_is_unusable) {
    lcm_gpu_probe p = working();
    p.count_error = LCM_CUDA_ERR_NO_DEVICE;
    p.count = 0;
    strcpy(p.visible_devices, "");
    lcm_gpu_status st;
    lcm_gpu_decide(&p, &st);
    CHECK(st.state == LCM_GPU_UNUSABLE);
    CHECKF(strstr(st.why, "CUDA_VISIBLE_DEVICES=") && strstr(st.why, "/dev/nvidia"), "%s", st.why);
    /* success with zero devices is the same case */
    p.count_error = LCM_CUDA_SUCCESS;
    lcm_gpu_decide(&p, &st);
    CHECK(st.state == LCM_GPU_UNUSABLE);
}

TEST(any_other_cuda_error_is_unusable_with_its_text) {
    lcm_gpu_probe p = working();
    p.count_error = 3; /* cudaErrorInitializationError */
    p.count = 0;
    strcpy(p.count_error_text, "initialization error");
    lcm_gpu_status st;
    lcm_gpu_decide(&p, &st);
    CHECK(st.state == LCM_GPU_UNUSABLE);
    CHECKF(strstr(st.why, "initialization error") && strstr(st.why, "error 3"), "%s", st.why);
    /* even where no driver was found: an error that is not "no driver" is not hidden */
    p = no_driver();
    p.count_error = 34; /* cudaErrorStubLibrary */
    strcpy(p.count_error_text, "CUDA driver is a stub library");
    lcm_gpu_decide(&p, &st);
    CHECK(st.state == LCM_GPU_UNUSABLE);
}

TEST(build_without_cuda_on_a_gpu_machine_is_unusable) {
    lcm_gpu_probe p = working();
    p.cuda_built = 0;
    lcm_gpu_status st;
    lcm_gpu_decide(&p, &st);
    CHECK(st.state == LCM_GPU_UNUSABLE);
    CHECKF(strstr(st.why, "built without CUDA") && strstr(st.why, "make CUDA=1"), "%s", st.why);
    p = no_driver();
    p.cuda_built = 0;
    lcm_gpu_decide(&p, &st);
    CHECK(st.state == LCM_GPU_NONE);
}

TEST(auto_follows_the_decision) {
    lcm_device dev[LCM_MAX_DEVICES];
    int n = -1;
    lcm_error err = {0};
    lcm_gpu_probe p = working();
    lcm_gpu_status st;
    lcm_gpu_decide(&p, &st);
    CHECK_OK(lcm_resolve_devices_for("auto", &st, dev, &n, &err), &err);
    CHECK(n == 2 && dev[0].is_gpu && dev[1].is_gpu && dev[1].index == 1);

    p = no_driver();
    lcm_gpu_decide(&p, &st);
    CHECK_OK(lcm_resolve_devices_for("auto", &st, dev, &n, &err), &err);
    CHECK(n == 1 && !dev[0].is_gpu);

    p = working();
    p.count_error = LCM_CUDA_ERR_INSUFFICIENT_DRIVER;
    p.driver_cuda_version = 12040;
    lcm_gpu_decide(&p, &st);
    n = -1;
    CHECK_FAILS(lcm_resolve_devices_for("auto", &st, dev, &n, &err), &err, LCM_ERR_DEVICE, "trainer.devices=cpu");
    CHECK(n == 0);
    CHECK_FAILS(lcm_resolve_devices_for("auto", &st, dev, &n, &err), &err, LCM_ERR_DEVICE, "supports CUDA up to 12.4");
    CHECK_FAILS(lcm_resolve_devices_for("0", &st, dev, &n, &err), &err, LCM_ERR_DEVICE, "CUDA cannot be used");
    /* asking for the CPU is always honoured */
    CHECK_OK(lcm_resolve_devices_for("cpu:2", &st, dev, &n, &err), &err);
    CHECK(n == 2 && !dev[0].is_gpu && !dev[1].is_gpu);
}

TEST(host_probe_reads_this_machine) {
    /* Whatever this machine has, the host probe leaves the CUDA half for cuda_info.c to fill and
     * reports CUDA_VISIBLE_DEVICES as it is. */
    lcm_gpu_probe p;
    lcm_gpu_probe_host(&p);
    CHECK(p.cuda_built == 0 && p.libcuda_loaded == 0 && p.count == 0);
    const char *vis = getenv("CUDA_VISIBLE_DEVICES");
    CHECK(strcmp(p.visible_devices, vis ? vis : "(unset)") == 0);
}
