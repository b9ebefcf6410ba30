/* test_gpumon.c: GPU monitoring without a GPU (gpumon.c): the sampling thread with a fake sampler (it
 * samples off the calling thread, keeps the latest round, stops promptly), the progress-line and
 * metrics.jsonl formats against hand-written strings, and an absent NVML: NULL monitor, no thread, one
 * notice per process however often it is asked. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "lcm/fileio.h"
#include "lcm/gpumon.h"
#include "lcm/sbuf.h"

typedef struct fake {
    pthread_t caller;
    int calls, off_thread, closed;
    pthread_mutex_t mu;
} fake;

static int fake_sample(void *ctx, int i, lcm_gpu_sample *out) {
    fake *f = ctx;
    pthread_mutex_lock(&f->mu);
    f->calls++;
    f->off_thread += !pthread_equal(pthread_self(), f->caller);
    pthread_mutex_unlock(&f->mu);
    if (i == 2) return -1; /* a device that cannot be read */
    *out = (lcm_gpu_sample){.valid = 1, .util_pct = 90 + i, .mem_used_gb = 10.0 * (i + 1), .mem_total_gb = 80,
                            .power_w = 300 + i, .temp_c = 60 + i};
    return 0;
}

static void fake_close(void *ctx) { ((fake *)ctx)->closed++; }

TEST(monitor_samples_off_the_caller_and_stops) {
    fake f = {.caller = pthread_self()};
    pthread_mutex_init(&f.mu, NULL);
    lcm_gpumon *m = NULL;
    lcm_error err = {0};
    CHECK_OK(lcm_gpumon_start(&m, (lcm_gpu_sampler){fake_sample, fake_close, &f}, 3, 0.005, &err), &err);
    lcm_gpu_sample s[3];
    int n = 0, rounds = 0;
    for (int tries = 0; tries < 2000; tries++) { /* up to 10 s for the first rounds on a loaded machine */
        n = lcm_gpumon_latest(m, s, 3);
        pthread_mutex_lock(&f.mu);
        rounds = f.calls / 3;
        pthread_mutex_unlock(&f.mu);
        if (rounds >= 3 && s[0].valid) break;
        usleep(5000);
    }
    CHECK(n == 3);
    CHECKF(rounds >= 3, "%d sampling rounds", rounds);
    CHECK(s[0].valid && s[0].util_pct == 90 && s[1].valid && s[1].mem_used_gb == 20.0 && !s[2].valid);
    const double t0 = lcm_now();
    lcm_gpumon_stop(m);
    CHECKF(lcm_now() - t0 < 2.0, "stop took %.2f s", lcm_now() - t0);
    CHECK(f.closed == 1);
    CHECKF(f.off_thread == f.calls && f.calls > 0, "%d of %d samples on the caller's thread", f.calls - f.off_thread,
           f.calls);
    /* a long period must not delay stopping: the thread waits on a condition, not in sleep() */
    f = (fake){.caller = pthread_self()};
    pthread_mutex_init(&f.mu, NULL);
    CHECK_OK(lcm_gpumon_start(&m, (lcm_gpu_sampler){fake_sample, fake_close, &f}, 1, 3600, &err), &err);
    const double t1 = lcm_now();
    lcm_gpumon_stop(m);
    CHECKF(lcm_now() - t1 < 2.0, "stop took %.2f s with a one-hour period", lcm_now() - t1);
    CHECK(f.closed == 1);
    CHECK(lcm_gpumon_latest(NULL, s, 3) == 0);
    lcm_gpumon_stop(NULL);
}

TEST(progress_line_format) {
    char out[128];
    lcm_gpu_sample one = {.valid = 1, .util_pct = 97, .mem_used_gb = 61.23, .mem_total_gb = 141.0, .power_w = 512.4,
                          .temp_c = 63};
    lcm_gpumon_format(&one, 1, out, sizeof out);
    CHECKF(strcmp(out, "GPU 97% 61.2/141.0GB 512W 63C") == 0, "%s", out);
    lcm_gpu_sample four[4] = {one, one, one, one};
    four[1].util_pct = 95, four[1].mem_used_gb = 70.04, four[1].temp_c = 65;
    four[2].power_w = -1; /* not reported: left out of the sum */
    four[3].util_pct = 98;
    lcm_gpumon_format(four, 4, out, sizeof out);
    CHECKF(strcmp(out, "4 GPUs 95-98% max 70.0/141.0GB 1537W max 65C") == 0, "%s", out);
    lcm_gpu_sample none[2] = {{0}, {0}};
    lcm_gpumon_format(none, 2, out, sizeof out);
    CHECKF(out[0] == '\0', "%s", out);
    one.power_w = -1, one.temp_c = -1;
    lcm_gpumon_format(&one, 1, out, sizeof out);
    CHECKF(strcmp(out, "GPU 97% 61.2/141.0GB") == 0, "%s", out);
}

TEST(metrics_json_format) {
    lcm_gpu_sample s[2] = {{.valid = 1, .util_pct = 97, .mem_used_gb = 61.5, .mem_total_gb = 141, .power_w = 512,
                            .temp_c = 63},
                           {0}};
    lcm_sbuf b = {0};
    int first = 0; /* after other keys: a comma first */
    lcm_gpumon_json(s, 2, &b, &first);
    CHECKF(b.s && strcmp(b.s, ",\"gpus\":[{\"util\":97,\"mem_used_gb\":61.5,\"mem_total_gb\":141,\"power_w\":512,"
                              "\"temp_c\":63},null]") == 0, "%s", b.s ? b.s : "(empty)");
    lcm_sbuf_free(&b);
}

TEST(absent_nvml_costs_nothing_and_says_so_once) {
    const int gpus[2] = {0, 1};
    lcm_gpu_sampler smp;
    char why[256] = "";
    CHECK(lcm_nvml_sampler_open("libnvidia-ml-absent-for-test.so.1", gpus, 2, &smp, why, sizeof why) == -1);
    CHECKF(strstr(why, "libnvidia-ml-absent-for-test.so.1") != NULL, "%s", why);
    CHECK(smp.sample == NULL && smp.ctx == NULL);

    /* the notice goes to the log (stderr): capture it */
    char path[512];
    snprintf(path, sizeof path, "%s/stderr", harness_tmpdir());
    fflush(stderr);
    const int saved = dup(2);
    FILE *cap = fopen(path, "w");
    CHECK(cap != NULL);
    if (!cap) return;
    dup2(fileno(cap), 2);
    lcm_gpumon *a = lcm_gpumon_open("libnvidia-ml-absent-for-test.so.1", gpus, 2);
    lcm_gpumon *b = lcm_gpumon_open("libnvidia-ml-absent-for-test.so.1", gpus, 2);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(cap);
    CHECK(a == NULL && b == NULL);
    FILE *in = fopen(path, "r");
    char line[1024];
    int lines = 0, notices = 0;
    while (in && fgets(line, sizeof line, in)) {
        lines++;
        notices += strstr(line, "GPU monitoring off") && strstr(line, "libnvidia-ml-absent-for-test.so.1");
    }
    if (in) fclose(in);
    CHECKF(lines == 1 && notices == 1, "%d lines, %d notices", lines, notices);
}
