/* gpumon.c: GPU monitoring (gpumon.h): the NVML sampler, loaded with dlopen, the one sampling thread,
 * and the progress-line and metrics.jsonl formats.
 *
 * NVML's header is not on our build machines (nor in Debian main), so the few functions and types used
 * are declared here from NVIDIA's NVML API reference; that ABI is stable across drivers. */
#include "lcm/gpumon.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lcm/backend.h"
#include "lcm/log.h"

/* ---- NVML, declared ------------------------------------------------------------------------------ */

typedef int nvml_return;          /* nvmlReturn_t: 0 is NVML_SUCCESS */
typedef struct nvml_device_st *nvml_device; /* nvmlDevice_t */
typedef struct {
    unsigned int gpu, memory;
} nvml_utilization;               /* nvmlUtilization_t */
typedef struct {
    unsigned long long total, free, used;
} nvml_memory;                    /* nvmlMemory_t (v1) */
#define NVML_TEMPERATURE_GPU 0

typedef struct nvml_api {
    void *lib;
    nvml_return (*init)(void);
    nvml_return (*shutdown)(void);
    const char *(*error_string)(nvml_return);
    nvml_return (*by_pci_bus_id)(const char *, nvml_device *);
    nvml_return (*utilization)(nvml_device, nvml_utilization *);
    nvml_return (*memory)(nvml_device, nvml_memory *);
    nvml_return (*power)(nvml_device, unsigned int *);
    nvml_return (*temperature)(nvml_device, int, unsigned int *);
    int n;
    nvml_device dev[];
} nvml_api;

static int nvml_sample(void *ctx, int i, lcm_gpu_sample *out) {
    nvml_api *a = ctx;
    nvml_utilization u;
    nvml_memory m;
    unsigned int mw = 0, t = 0;
    memset(out, 0, sizeof *out);
    if (a->utilization(a->dev[i], &u) != 0 || a->memory(a->dev[i], &m) != 0) return -1;
    out->valid = 1;
    out->util_pct = (int)u.gpu;
    out->mem_used_gb = (double)m.used / 1e9;
    out->mem_total_gb = (double)m.total / 1e9;
    out->power_w = a->power(a->dev[i], &mw) == 0 ? mw / 1000.0 : -1;
    out->temp_c = a->temperature(a->dev[i], NVML_TEMPERATURE_GPU, &t) == 0 ? (int)t : -1;
    return 0;
}

static void nvml_close(void *ctx) {
    nvml_api *a = ctx;
    a->shutdown();
    dlclose(a->lib);
    free(a);
}

int lcm_nvml_sampler_open(const char *libname, const int *gpus, int n, lcm_gpu_sampler *out, char *why, size_t cap) {
    memset(out, 0, sizeof *out);
    void *lib = dlopen(libname, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *e = dlerror();
        snprintf(why, cap, "%s", e ? e : "cannot be loaded");
        return -1;
    }
    nvml_api *a = calloc(1, sizeof *a + (size_t)n * sizeof(nvml_device));
    if (!a) {
        dlclose(lib);
        snprintf(why, cap, "out of memory");
        return -1;
    }
    a->lib = lib;
    a->n = n;
    /* dlsym returns void *; POSIX guarantees it converts to a function pointer */
    struct { void **fn; const char *name; } syms[] = {
        {(void **)&a->init, "nvmlInit_v2"},
        {(void **)&a->shutdown, "nvmlShutdown"},
        {(void **)&a->error_string, "nvmlErrorString"},
        {(void **)&a->by_pci_bus_id, "nvmlDeviceGetHandleByPciBusId_v2"},
        {(void **)&a->utilization, "nvmlDeviceGetUtilizationRates"},
        {(void **)&a->memory, "nvmlDeviceGetMemoryInfo"},
        {(void **)&a->power, "nvmlDeviceGetPowerUsage"},
        {(void **)&a->temperature, "nvmlDeviceGetTemperature"},
    };
    for (size_t k = 0; k < sizeof syms / sizeof syms[0]; k++) {
        *syms[k].fn = dlsym(lib, syms[k].name);
        if (!*syms[k].fn) {
            snprintf(why, cap, "%s lacks %s", libname, syms[k].name);
            dlclose(lib);
            free(a);
            return -1;
        }
    }
    nvml_return r = a->init();
    if (r != 0) {
        snprintf(why, cap, "nvmlInit_v2: %s", a->error_string(r));
        dlclose(lib);
        free(a);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char bus[64];
        lcm_error err = {0};
        if (lcm_cuda_pci_bus_id(gpus[i], bus, sizeof bus, &err) != 0) {
            snprintf(why, cap, "%s", err.msg);
            nvml_close(a);
            return -1;
        }
        r = a->by_pci_bus_id(bus, &a->dev[i]);
        if (r != 0) {
            snprintf(why, cap, "GPU %d (PCI %s): nvmlDeviceGetHandleByPciBusId_v2: %s", gpus[i], bus, a->error_string(r));
            nvml_close(a);
            return -1;
        }
    }
    *out = (lcm_gpu_sampler){.sample = nvml_sample, .close = nvml_close, .ctx = a};
    return 0;
}

/* ---- the sampling thread ------------------------------------------------------------------------ */

struct lcm_gpumon {
    lcm_gpu_sampler sampler;
    int n;
    double period_s;
    pthread_t thread;
    int started;           /* thread is running */
    pthread_mutex_t mu;
    pthread_cond_t wake;   /* signalled by lcm_gpumon_stop */
    int stopping;
    lcm_gpu_sample *latest; /* [n], under mu */
    lcm_gpu_sample *round;  /* [n], the thread's own */
};

static void *monitor_main(void *arg) {
    lcm_gpumon *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stopping) {
        pthread_mutex_unlock(&m->mu);
        /* NVML calls outside the lock: a slow driver call never blocks the logging worker */
        for (int i = 0; i < m->n; i++)
            if (m->sampler.sample(m->sampler.ctx, i, &m->round[i]) != 0) memset(&m->round[i], 0, sizeof m->round[i]);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        const double t = until.tv_sec + until.tv_nsec * 1e-9 + m->period_s;
        until.tv_sec = (time_t)t;
        until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
        pthread_mutex_lock(&m->mu);
        memcpy(m->latest, m->round, (size_t)m->n * sizeof *m->round);
        int rc = 0;
        while (!m->stopping && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&m->wake, &m->mu, &until);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

int lcm_gpumon_start(lcm_gpumon **out, lcm_gpu_sampler sampler, int n, double period_s, lcm_error *err) {
    *out = NULL;
    lcm_gpumon *m = calloc(1, sizeof *m);
    if (m) m->latest = calloc((size_t)n, sizeof *m->latest), m->round = calloc((size_t)n, sizeof *m->round);
    if (!m || !m->latest || !m->round) {
        if (m) free(m->latest), free(m->round);
        free(m);
        if (sampler.close) sampler.close(sampler.ctx);
        return lcm_fail(err, LCM_ERR_NOMEM, "out of memory for the GPU monitor");
    }
    m->sampler = sampler;
    m->n = n;
    m->period_s = period_s;
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->wake, &ca);
    pthread_condattr_destroy(&ca);
    int e = pthread_create(&m->thread, NULL, monitor_main, m);
    m->started = e == 0;
    if (m->started) pthread_setname_np(m->thread, "lcm-gpumon");
    if (e != 0) {
        lcm_gpumon_stop(m);
        return lcm_fail(err, LCM_ERR_INTERNAL, "cannot start the GPU monitor thread: %s", strerror(e));
    }
    *out = m;
    return 0;
}

lcm_gpumon *lcm_gpumon_open(const char *libname, const int *gpus, int n) {
    static int told; /* the notice is given once per process */
    lcm_gpu_sampler s;
    char why[512];
    lcm_error err = {0};
    lcm_gpumon *m = NULL;
    if (lcm_nvml_sampler_open(libname, gpus, n, &s, why, sizeof why) != 0) {
        if (!__atomic_exchange_n(&told, 1, __ATOMIC_RELAXED))
            lcm_info("GPU monitoring off: NVML (%s) cannot be used: %s", libname, why);
        return NULL;
    }
    if (lcm_gpumon_start(&m, s, n, 1.0, &err) != 0) {
        if (!__atomic_exchange_n(&told, 1, __ATOMIC_RELAXED)) lcm_info("GPU monitoring off: %s", err.msg);
        return NULL;
    }
    return m;
}

int lcm_gpumon_latest(lcm_gpumon *m, lcm_gpu_sample *out, int cap) {
    if (!m) return 0;
    const int k = m->n < cap ? m->n : cap;
    pthread_mutex_lock(&m->mu);
    memcpy(out, m->latest, (size_t)k * sizeof *out);
    pthread_mutex_unlock(&m->mu);
    return m->n;
}

void lcm_gpumon_stop(lcm_gpumon *m) {
    if (!m) return;
    if (m->started) {
        pthread_mutex_lock(&m->mu);
        m->stopping = 1;
        pthread_cond_signal(&m->wake);
        pthread_mutex_unlock(&m->mu);
        pthread_join(m->thread, NULL);
    }
    if (m->sampler.close) m->sampler.close(m->sampler.ctx);
    pthread_cond_destroy(&m->wake);
    pthread_mutex_destroy(&m->mu);
    free(m->latest);
    free(m->round);
    free(m);
}

/* ---- formats ------------------------------------------------------------------------------------ */

void lcm_gpumon_format(const lcm_gpu_sample *s, int n, char *out, size_t cap) {
    int valid = 0, umin = 0, umax = 0, tmax = -1, power_known = 0;
    double mem_used = 0, mem_total = 0, power = 0;
    for (int i = 0; i < n; i++) {
        if (!s[i].valid) continue;
        if (!valid || s[i].util_pct < umin) umin = s[i].util_pct;
        if (!valid || s[i].util_pct > umax) umax = s[i].util_pct;
        if (!valid || s[i].mem_used_gb > mem_used) mem_used = s[i].mem_used_gb, mem_total = s[i].mem_total_gb;
        if (s[i].temp_c > tmax) tmax = s[i].temp_c;
        if (s[i].power_w >= 0) power += s[i].power_w, power_known++;
        valid++;
    }
    if (!valid) {
        if (cap) out[0] = '\0';
        return;
    }
    char util[32], pw[32] = "", temp[32] = "";
    if (n == 1) snprintf(util, sizeof util, "GPU %d%%", umax);
    else if (umin == umax) snprintf(util, sizeof util, "%d GPUs %d%%", n, umax);
    else snprintf(util, sizeof util, "%d GPUs %d-%d%%", n, umin, umax);
    if (power_known) snprintf(pw, sizeof pw, " %.0fW", power);
    if (tmax >= 0) snprintf(temp, sizeof temp, " %s%dC", n > 1 ? "max " : "", tmax);
    snprintf(out, cap, "%s %s%.1f/%.1fGB%s%s", util, n > 1 ? "max " : "", mem_used, mem_total, pw, temp);
}

void lcm_gpumon_json(const lcm_gpu_sample *s, int n, lcm_sbuf *b, int *first) {
    lcm_json_key(b, first, "gpus");
    lcm_sbuf_puts(b, "[");
    for (int i = 0; i < n; i++) {
        if (i) lcm_sbuf_puts(b, ",");
        if (!s[i].valid) {
            lcm_sbuf_puts(b, "null");
            continue;
        }
        int f = 1;
        lcm_sbuf_puts(b, "{");
        lcm_json_key(b, &f, "util"), lcm_sbuf_printf(b, "%d", s[i].util_pct);
        lcm_json_key(b, &f, "mem_used_gb"), lcm_json_num(b, s[i].mem_used_gb);
        lcm_json_key(b, &f, "mem_total_gb"), lcm_json_num(b, s[i].mem_total_gb);
        if (s[i].power_w >= 0) lcm_json_key(b, &f, "power_w"), lcm_json_num(b, s[i].power_w);
        if (s[i].temp_c >= 0) lcm_json_key(b, &f, "temp_c"), lcm_sbuf_printf(b, "%d", s[i].temp_c);
        lcm_sbuf_puts(b, "}");
    }
    lcm_sbuf_puts(b, "]");
}
