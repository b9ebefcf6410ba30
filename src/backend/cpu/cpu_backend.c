/* cpu_backend.c: the CPU backend's op table (include/lcm/backend.h): host memory standing in for device
 * memory, copies, and thin adapters from the table's signatures to the fp32 functions of cpu_ops.h.
 *
 * "Device" memory is ordinary host memory, every op runs to completion before it returns, so sync and
 * query have nothing to wait for; they only report the one failure an op can meet (growing the
 * attention backward's scratch). Each worker thread owns its backend instance; the instance holds all
 * mutable state, so workers never share any. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>

#include "cpu_ops.h"
#include "lcm/half.h"
#include "lcm/memplan.h"

#define CPU_ALIGN 64 /* a cache line; also what AVX-512 loads like */

typedef struct cpu_backend {
    lcm_backend be;
    lcm_error failed;     /* first failure of an op; every later sync/query reports it */
    float *scratch;       /* attention backward's (T, T) or cached attention's scores, grown on demand */
    size_t scratch_floats;
} cpu_backend;

static cpu_backend *cpu_of(lcm_backend *be) { return (cpu_backend *)be->impl; }

/* ---- memory --------------------------------------------------------------------------------------- */

/* Reads "Key:   123 kB" from /proc/meminfo; 0 if absent. */
static size_t meminfo_bytes(const char *text, const char *key) {
    const char *at = strstr(text, key);
    if (!at) return 0;
    unsigned long long kb = 0;
    if (sscanf(at + strlen(key), " %llu", &kb) != 1) return 0;
    return (size_t)kb * 1024;
}

/* Free is MemAvailable (what can be allocated without swapping), not MemFree (which ignores the page
 * cache the kernel would give back). Falls back to sysinfo where /proc is not mounted. */
void lcm_cpu_mem_info(size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = *total_bytes = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char text[4096];
        size_t n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[n] = '\0';
        *total_bytes = meminfo_bytes(text, "MemTotal:");
        *free_bytes = meminfo_bytes(text, "MemAvailable:");
    }
    if (*total_bytes == 0) {
        struct sysinfo si;
        if (sysinfo(&si) == 0) {
            *total_bytes = (size_t)si.totalram * si.mem_unit;
            *free_bytes = (size_t)(si.freeram + si.bufferram) * si.mem_unit;
        }
    }
}

static void cpu_mem_info(lcm_backend *be, size_t *free_bytes, size_t *total_bytes) {
    lcm_cpu_mem_info(free_bytes, total_bytes);
}

/* What every CPU backend of the process has allocated through alloc and host_alloc (never decreased),
 * and the largest attention scratch: the memory plan's figures are checked against these. */
static atomic_size_t allocated_total, scratch_peak;

void lcm_cpu_alloc_counters(size_t *allocated, size_t *scratch_largest) {
    *allocated = atomic_load(&allocated_total);
    *scratch_largest = atomic_load(&scratch_peak);
}

static void *aligned_malloc(size_t bytes) {
    if (bytes > SIZE_MAX - CPU_ALIGN) return NULL;
    size_t rounded = bytes == 0 ? CPU_ALIGN : (bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
    void *p = NULL;
    return posix_memalign(&p, CPU_ALIGN, rounded) == 0 ? p : NULL;
}

static int cpu_alloc(lcm_backend *be, void **out, size_t bytes, const char *what, lcm_error *err) {
    *out = aligned_malloc(bytes);
    if (!*out) {
        size_t free_b, total_b;
        cpu_mem_info(be, &free_b, &total_b);
        return lcm_fail(err, LCM_ERR_NOMEM,
                        "out of host memory allocating %s: %zu bytes (%.2f GiB) asked for, %.2f GiB of %.2f "
                        "GiB available; lower data.max_tokens for smaller activation buffers, or use a "
                        "smaller model",
                        what, bytes, bytes / 1073741824.0, free_b / 1073741824.0, total_b / 1073741824.0);
    }
    memset(*out, 0, bytes);
    atomic_fetch_add(&allocated_total, bytes);
    return 0;
}

static void cpu_release(lcm_backend *be, void *p) { free(p); }

static int cpu_host_alloc(lcm_backend *be, void **out, size_t bytes, lcm_error *err) {
    *out = aligned_malloc(bytes);
    if (!*out)
        return lcm_fail(err, LCM_ERR_NOMEM,
                        "out of host memory allocating a %zu-byte staging buffer; lower data.max_tokens",
                        bytes);
    atomic_fetch_add(&allocated_total, bytes);
    return 0;
}

static void cpu_host_release(lcm_backend *be, void *p) { free(p); }

static void copy_bytes(void *dst, const void *src, size_t bytes) {
    if (dst != src) memcpy(dst, src, bytes);
}

static int cpu_upload(lcm_backend *be, void *dst, const void *src, size_t bytes, lcm_error *err) {
    copy_bytes(dst, src, bytes);
    return 0;
}

static int cpu_download(lcm_backend *be, void *dst, const void *src, size_t bytes, lcm_error *err) {
    copy_bytes(dst, src, bytes);
    return 0;
}

static void cpu_zero(lcm_backend *be, void *p, size_t bytes) { memset(p, 0, bytes); }

static void cpu_f32_to_act(lcm_backend *be, void *dst, const float *src, size_t n) {
    copy_bytes(dst, src, n * sizeof(float));
}

static void cpu_act_to_f32(lcm_backend *be, float *dst, const void *src, size_t n) {
    copy_bytes(dst, src, n * sizeof(float));
}

static int cpu_sync(lcm_backend *be, lcm_error *err) {
    cpu_backend *cb = cpu_of(be);
    if (cb->failed.code != LCM_OK) return lcm_fail(err, cb->failed.code, "%s", cb->failed.msg);
    return 0;
}

static int cpu_query(lcm_backend *be, lcm_error *err) { return cpu_sync(be, err) ? -1 : 1; }

static void *cpu_comm_stream(lcm_backend *be) { return NULL; }
static void cpu_comm_wait_compute(lcm_backend *be) {}
static void cpu_compute_wait_comm(lcm_backend *be) {}

/* ---- the model's operations ------------------------------------------------------------------------ */

static void cpu_op_normalize(lcm_backend *be, void *xn, const float *x, const float *center, const float *scale,
                             int N, int D) {
    cpu_normalize(xn, x, center, scale, N, D);
}

static void cpu_op_linear_forward(lcm_backend *be, void *out, const void *inp, const void *w, const void *bias,
                                  int N, int IC, int OC) {
    cpu_linear_forward(out, inp, w, bias, N, IC, OC);
}

/* Activations are fp32 already: the same op. */
static void cpu_op_linear_forward_f32(lcm_backend *be, float *out, const void *inp, const void *w, const void *bias,
                                      int N, int IC, int OC) {
    cpu_linear_forward(out, inp, w, bias, N, IC, OC);
}

static void cpu_op_linear_backward(lcm_backend *be, void *dinp, float *dw, float *dbias, const void *dout,
                                   const void *inp, const void *w, int N, int IC, int OC, int accumulate) {
    cpu_linear_backward(dinp, dw, dbias, dout, inp, w, N, IC, OC, accumulate);
}

static void cpu_op_rmsnorm_forward(lcm_backend *be, void *out, float *rstd, const void *inp, const void *gain,
                                   int N, int C, float eps) {
    cpu_rmsnorm_forward(out, rstd, inp, gain, N, C, eps);
}

static void cpu_op_rmsnorm_backward(lcm_backend *be, float *dinp, float *dgain, const void *dout,
                                    const void *inp, const void *gain, const float *rstd, int N, int C,
                                    int accumulate) {
    cpu_rmsnorm_backward(dinp, dgain, dout, inp, gain, rstd, N, C, accumulate);
}

static void cpu_op_rope_forward(lcm_backend *be, void *qkv, const float *rope, int B, int T, int C, int H) {
    cpu_rope_forward(qkv, rope, B, T, C, H);
}

static void cpu_op_rope_backward(lcm_backend *be, void *dqkv, const float *rope, int B, int T, int C, int H) {
    cpu_rope_backward(dqkv, rope, B, T, C, H);
}

/* The native attention is the CPU's only one: auto means it, and asking for cuDNN is a config error rather
 * than a silent substitute (a run that names cudnn expects a GPU). */
static int cpu_set_attention(lcm_backend *be, lcm_attention choice, int head_dim, lcm_error *err) {
    if (choice != LCM_ATTENTION_CUDNN) return 0;
    return lcm_fail(err, LCM_ERR_CONFIG,
                    "model.attention = cudnn, but the CPU backend has only the native attention: set "
                    "model.attention=auto (or native) to run on the CPU, or train on a GPU");
}

static size_t cpu_op_attention_saved_floats(lcm_backend *be, int B, int T, int H) {
    return lcm_cpu_traits.attention_saved_floats(B, T, H);
}

static void cpu_op_attention_forward(lcm_backend *be, void *out, float *saved, const void *qkv,
                                     const int32_t *lens, int B, int T, int C, int H) {
    cpu_attention_forward(out, saved, qkv, lens, B, T, C, H);
}

/* The attention scratch lives in the instance and grows to the largest size asked for; a failure to grow
 * is remembered and returned by the next sync, as an asynchronous device error would be. Returns NULL
 * then. */
static float *scratch_at_least(cpu_backend *cb, size_t need, const char *what) {
    if (need > cb->scratch_floats) {
        float *grown = aligned_malloc(need * sizeof(float));
        if (!grown) {
            lcm_fail(&cb->failed, LCM_ERR_NOMEM, "out of host memory growing the CPU attention scratch to %zu bytes (%s)",
                     need * sizeof(float), what);
            return NULL;
        }
        free(cb->scratch);
        cb->scratch = grown;
        cb->scratch_floats = need;
        size_t seen = atomic_load(&scratch_peak);
        while (need * sizeof(float) > seen && !atomic_compare_exchange_weak(&scratch_peak, &seen, need * sizeof(float))) {
        }
    }
    return cb->scratch;
}

static void cpu_op_attention_backward(lcm_backend *be, void *dqkv, const void *dout, const void *qkv,
                                      const void *out, const float *saved, const int32_t *lens, int B, int T,
                                      int C, int H) {
    float *scratch = scratch_at_least(cpu_of(be), (size_t)T * T, "backward; lower data.max_seq_len");
    if (scratch) cpu_attention_backward(dqkv, scratch, dout, qkv, saved, lens, B, T, C, H);
}

static void cpu_op_rope_forward_at(lcm_backend *be, void *qkv, const float *rope, int B, int S, int C, int H,
                                   int pos0) {
    cpu_rope_forward_at(qkv, rope, B, S, C, H, pos0);
}

static void cpu_op_kv_store(lcm_backend *be, void *kc, void *vc, const void *qkv, int B, int S, int C, int pos0,
                            int Tcap) {
    cpu_kv_store(kc, vc, qkv, B, S, C, pos0, Tcap);
}

static void cpu_op_attention_cached(lcm_backend *be, void *out, const void *qkv, const void *kc, const void *vc,
                                    int B, int S, int C, int H, int pos0, int Tcap) {
    float *scores = scratch_at_least(cpu_of(be), (size_t)S * (pos0 + S), "generation; lower the prompt length");
    if (scores) cpu_attention_cached(out, scores, qkv, kc, vc, B, S, C, H, pos0, Tcap);
}

static void cpu_op_swiglu_forward(lcm_backend *be, void *out, const void *gi, int N, int F) {
    cpu_swiglu_forward(out, gi, N, F);
}

static void cpu_op_swiglu_backward(lcm_backend *be, void *dgi, const void *dout, const void *gi, int N, int F) {
    cpu_swiglu_backward(dgi, dout, gi, N, F);
}

static void cpu_op_dropout_add(lcm_backend *be, void *h_out, const void *h_in, const void *branch, size_t n,
                               float p, lcm_dropout_key key) {
    cpu_dropout_add(h_out, h_in, branch, n, p, key);
}

static void cpu_op_dropout_backward(lcm_backend *be, void *dbranch, const float *dh, size_t n, float p,
                                    lcm_dropout_key key) {
    cpu_dropout_backward(dbranch, dh, n, p, key);
}

static void cpu_op_mse_loss(lcm_backend *be, void *dy, float *loss_sum, const float *y, const float *x,
                            const float *center, const float *scale, const int32_t *lens, int B, int T, int D,
                            float grad_scale) {
    cpu_mse_loss(dy, loss_sum, y, x, center, scale, lens, B, T, D, grad_scale);
}

static int cpu_op_sumsq(lcm_backend *be, double *out, const float *x, size_t n, lcm_error *err) {
    *out = cpu_sumsq(x, n);
    return 0;
}

static void cpu_op_scale_f32(lcm_backend *be, float *x, float s, size_t n) { cpu_scale(x, s, n); }

/* The trainer passes param == master on CPU (the compute copy is the master); a distinct param gets a
 * copy so that the table's contract holds either way. */
static void cpu_op_adamw(lcm_backend *be, float *master, void *param, const float *grad, float *m, float *v,
                         size_t n, const lcm_adamw_args *a) {
    cpu_adamw(master, grad, m, v, n, a);
    copy_bytes(param, master, n * sizeof(float));
}

static void cpu_op_f32_to_bf16(lcm_backend *be, uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = lcm_f32_to_bf16(src[i]);
}

static void cpu_op_bf16_to_f32(lcm_backend *be, float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = lcm_bf16_to_f32(src[i]);
}

/* One loop, as on CUDA; cpu_sumsq's order, so the same bits as the two ops. */
static int cpu_op_bf16_to_f32_sumsq(lcm_backend *be, float *dst, const uint16_t *src, size_t n, double *out,
                                    lcm_error *err) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        dst[i] = lcm_bf16_to_f32(src[i]);
        s += (double)dst[i] * dst[i];
    }
    *out = s;
    return 0;
}

static void cpu_destroy(lcm_backend *be) {
    cpu_backend *cb = cpu_of(be);
    free(cb->scratch);
    free(cb);
}

static const lcm_backend_ops cpu_backend_ops = {
    .alloc = cpu_alloc,
    .release = cpu_release,
    .host_alloc = cpu_host_alloc,
    .host_release = cpu_host_release,
    .upload = cpu_upload,
    .download = cpu_download,
    .zero = cpu_zero,
    .f32_to_act = cpu_f32_to_act,
    .act_to_f32 = cpu_act_to_f32,
    .sync = cpu_sync,
    .query = cpu_query,
    .mem_info = cpu_mem_info,
    .comm_stream = cpu_comm_stream,
    .comm_wait_compute = cpu_comm_wait_compute,
    .compute_wait_comm = cpu_compute_wait_comm,
    .normalize = cpu_op_normalize,
    .linear_forward = cpu_op_linear_forward,
    .linear_forward_f32 = cpu_op_linear_forward_f32,
    .linear_backward = cpu_op_linear_backward,
    .rmsnorm_forward = cpu_op_rmsnorm_forward,
    .rmsnorm_backward = cpu_op_rmsnorm_backward,
    .rope_forward = cpu_op_rope_forward,
    .rope_backward = cpu_op_rope_backward,
    .set_attention = cpu_set_attention,
    .attention_saved_floats = cpu_op_attention_saved_floats,
    .attention_forward = cpu_op_attention_forward,
    .attention_backward = cpu_op_attention_backward,
    .rope_forward_at = cpu_op_rope_forward_at,
    .kv_store = cpu_op_kv_store,
    .attention_cached = cpu_op_attention_cached,
    .swiglu_forward = cpu_op_swiglu_forward,
    .swiglu_backward = cpu_op_swiglu_backward,
    .dropout_add = cpu_op_dropout_add,
    .dropout_backward = cpu_op_dropout_backward,
    .mse_loss = cpu_op_mse_loss,
    .sumsq = cpu_op_sumsq,
    .scale_f32 = cpu_op_scale_f32,
    .adamw = cpu_op_adamw,
    .f32_to_bf16 = cpu_op_f32_to_bf16,
    .bf16_to_f32 = cpu_op_bf16_to_f32,
    .bf16_to_f32_sumsq = cpu_op_bf16_to_f32_sumsq,
    .destroy = cpu_destroy,
};

int lcm_cpu_backend_create(lcm_backend **out, int worker, lcm_error *err) {
    *out = NULL;
    cpu_backend *cb = calloc(1, sizeof *cb);
    if (!cb)
        return lcm_fail(err, LCM_ERR_NOMEM, "out of host memory creating the CPU backend for worker %d", worker);
    cb->be.ops = &cpu_backend_ops;
    cb->be.name = "cpu";
    cb->be.act_bytes = lcm_cpu_traits.act_bytes;
    cb->be.traits = &lcm_cpu_traits;
    cb->be.device = worker;
    cb->be.impl = cb;
    *out = &cb->be;
    return 0;
}
