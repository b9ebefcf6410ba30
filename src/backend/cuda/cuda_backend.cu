/* cuda_backend.cu: the CUDA backend's life cycle and plumbing: creation (device, streams, events,
 * cuBLASLt handle and workspace, reduction scratch), device and pinned memory with clear out-of-memory
 * messages, transfers, the stream hand-offs for overlapping the gradient all-reduce, sync/query with
 * the sticky first error, and the op table that points at the kernels of the other files.
 *
 * Activations and the compute copy of the weights are bf16 (act_bytes = 2); everything backend.h says
 * is fp32 stays fp32. All work is enqueued on the compute stream; the communication stream belongs to
 * NCCL, and the two meet only through the events below. */
#include <stdlib.h>

#include "cuda_backend.cuh"


/* ---- errors ---------------------------------------------------------------------------------- */

static const char *file_base(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

int cuda_note(cuda_backend *cb, const char *op, cudaError_t e, const char *file, int line) {
    if (e == cudaSuccess) return 0;
    lcm_status code = e == cudaErrorMemoryAllocation ? LCM_ERR_NOMEM : LCM_ERR_DEVICE;
    lcm_fail(&cb->sticky, code, "GPU %d: %s failed: %s (%s, %s:%d)", cb->gpu, op, cudaGetErrorString(e),
             cudaGetErrorName(e), file_base(file), line);
    return 1;
}

int cuda_note_lt(cuda_backend *cb, const char *op, cublasStatus_t s, const char *file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    lcm_fail(&cb->sticky, LCM_ERR_DEVICE, "GPU %d: %s: cuBLASLt failed: %s (%s:%d)", cb->gpu, op,
             cublasLtGetStatusString(s), file_base(file), line);
    return 1;
}

void cuda_note_msg(cuda_backend *cb, lcm_status code, const char *op, const char *msg) {
    lcm_fail(&cb->sticky, code, "GPU %d: %s: %s", cb->gpu, op, msg);
}

void cuda_enter(cuda_backend *cb, const char *op) {
    cb->last_op = op;
    CUDA_NOTE(cb, op, cudaSetDevice(cb->gpu));
}

/* Copy the sticky error into err; returns its code (0 when there is none). */
static int report_sticky(cuda_backend *cb, lcm_error *err) {
    if (cb->sticky.code == LCM_OK) return 0;
    return lcm_fail(err, cb->sticky.code, "%s", cb->sticky.msg);
}

/* A failure found while waiting comes from some op enqueued since the last wait. */
static void note_async(cuda_backend *cb, const char *where, cudaError_t e) {
    if (e == cudaSuccess) return;
    lcm_fail(&cb->sticky, LCM_ERR_DEVICE,
             "GPU %d: %s found a failed kernel or copy: %s (%s); it was enqueued after the previous sync, "
             "the last op enqueued was %s (rerun with CUDA_LAUNCH_BLOCKING=1 to name the failing op)",
             cb->gpu, where, cudaGetErrorString(e), cudaGetErrorName(e), cb->last_op ? cb->last_op : "none");
}

/* ---- memory ---------------------------------------------------------------------------------- */

static void format_bytes(char *out, size_t cap, double bytes) {
    if (bytes >= 1024.0 * 1024.0 * 1024.0)
        snprintf(out, cap, "%.1f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
    else
        snprintf(out, cap, "%.1f MiB", bytes / (1024.0 * 1024.0));
}

/* What the user can do about running out of memory for `what`. */
static const char *oom_hint(const char *what) {
    if (strstr(what, "activation")) return "lower data.max_tokens";
    return "train a smaller model, spread it over more GPUs, or free memory other processes hold (nvidia-smi)";
}

static int cuda_alloc(lcm_backend *be, void **out, size_t bytes, const char *what, lcm_error *err) {
    cuda_backend *cb = cuda_of(be);
    *out = NULL;
    cuda_enter(cb, "alloc");
    cudaError_t e = cudaMalloc(out, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* an out-of-memory error is not sticky: clear it for the launch checks */
        *out = NULL;
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        cudaGetLastError();
        char asked[32], avail[32], total[32];
        format_bytes(asked, sizeof asked, (double)bytes);
        format_bytes(avail, sizeof avail, (double)free_b);
        format_bytes(total, sizeof total, (double)total_b);
        if (e == cudaErrorMemoryAllocation)
            return lcm_fail(err, LCM_ERR_NOMEM, "GPU %d: out of memory allocating %s: asked %s, %s free of %s; %s",
                            cb->gpu, what, asked, avail, total, oom_hint(what));
        return lcm_fail(err, LCM_ERR_DEVICE, "GPU %d: allocating %s (%s) failed: %s", cb->gpu, what, asked,
                        cudaGetErrorString(e));
    }
    /* Zero-filled, in stream order: every later op on the compute stream sees the zeros. */
    if (CUDA_NOTE(cb, "alloc", cudaMemsetAsync(*out, 0, bytes, cb->compute))) {
        cudaFree(*out);
        *out = NULL;
        return report_sticky(cb, err);
    }
    return 0;
}

static void cuda_release(lcm_backend *be, void *p) {
    cuda_backend *cb = cuda_of(be);
    if (!p) return;
    cuda_enter(cb, "release");
    CUDA_NOTE(cb, "release", cudaFree(p));
}

static int cuda_host_alloc(lcm_backend *be, void **out, size_t bytes, lcm_error *err) {
    cuda_backend *cb = cuda_of(be);
    *out = NULL;
    cuda_enter(cb, "host_alloc");
    cudaError_t e = cudaMallocHost(out, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *out = NULL;
        char asked[32];
        format_bytes(asked, sizeof asked, (double)bytes);
        return lcm_fail(err, e == cudaErrorMemoryAllocation ? LCM_ERR_NOMEM : LCM_ERR_DEVICE,
                        "GPU %d: cannot allocate %s of pinned host memory for staging batches: %s", cb->gpu, asked,
                        cudaGetErrorString(e));
    }
    return 0;
}

static void cuda_host_release(lcm_backend *be, void *p) {
    cuda_backend *cb = cuda_of(be);
    if (!p) return;
    cuda_enter(cb, "host_release");
    CUDA_NOTE(cb, "host_release", cudaFreeHost(p));
}

static int cuda_upload(lcm_backend *be, void *dst, const void *src, size_t bytes, lcm_error *err) {
    cuda_backend *cb = cuda_of(be);
    cuda_enter(cb, "upload");
    if (bytes) CUDA_NOTE(cb, "upload", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cb->compute));
    return report_sticky(cb, err);
}

static int cuda_download(lcm_backend *be, void *dst, const void *src, size_t bytes, lcm_error *err) {
    cuda_backend *cb = cuda_of(be);
    cuda_enter(cb, "download");
    if (bytes) CUDA_NOTE(cb, "download", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cb->compute));
    note_async(cb, "download", cudaStreamSynchronize(cb->compute));
    return report_sticky(cb, err);
}

static void cuda_zero(lcm_backend *be, void *p, size_t bytes) {
    cuda_backend *cb = cuda_of(be);
    cuda_enter(cb, "zero");
    if (bytes) CUDA_NOTE(cb, "zero", cudaMemsetAsync(p, 0, bytes, cb->compute));
}

static void cuda_f32_to_act(lcm_backend *be, void *dst, const float *src, size_t n) {
    cuda_f32_to_bf16(be, (uint16_t *)dst, src, n);
}

static void cuda_act_to_f32(lcm_backend *be, float *dst, const void *src, size_t n) {
    cuda_bf16_to_f32(be, dst, (const uint16_t *)src, n);
}

static void cuda_mem_info(lcm_backend *be, size_t *free_bytes, size_t *total_bytes) {
    cuda_backend *cb = cuda_of(be);
    cuda_enter(cb, "mem_info");
    *free_bytes = *total_bytes = 0;
    CUDA_NOTE(cb, "mem_info", cudaMemGetInfo(free_bytes, total_bytes));
}

/* ---- streams --------------------------------------------------------------------------------- */

static int cuda_sync(lcm_backend *be, lcm_error *err) {
    cuda_backend *cb = cuda_of(be);
    CUDA_NOTE(cb, "sync", cudaSetDevice(cb->gpu));
    note_async(cb, "sync", cudaStreamSynchronize(cb->compute));
    note_async(cb, "sync (communication stream)", cudaStreamSynchronize(cb->comm));
    return report_sticky(cb, err);
}

static int cuda_query(lcm_backend *be, lcm_error *err) {
    cuda_backend *cb = cuda_of(be);
    CUDA_NOTE(cb, "query", cudaSetDevice(cb->gpu));
    int done = 1;
    cudaStream_t streams[2] = {cb->compute, cb->comm};
    for (int i = 0; i < 2; i++) {
        cudaError_t e = cudaStreamQuery(streams[i]);
        if (e == cudaErrorNotReady) {
            cudaGetLastError(); /* "not ready" is an answer, not a failure */
            done = 0;
        } else {
            note_async(cb, "query", e);
        }
    }
    if (report_sticky(cb, err)) return -(int)cb->sticky.code;
    return done;
}

static void *cuda_comm_stream(lcm_backend *be) { return (void *)cuda_of(be)->comm; }

static void cuda_comm_wait_compute(lcm_backend *be) {
    cuda_backend *cb = cuda_of(be);
    cuda_enter(cb, "comm_wait_compute");
    CUDA_NOTE(cb, "comm_wait_compute", cudaEventRecord(cb->compute_done, cb->compute));
    CUDA_NOTE(cb, "comm_wait_compute", cudaStreamWaitEvent(cb->comm, cb->compute_done, 0));
}

static void cuda_compute_wait_comm(lcm_backend *be) {
    cuda_backend *cb = cuda_of(be);
    cuda_enter(cb, "compute_wait_comm");
    CUDA_NOTE(cb, "compute_wait_comm", cudaEventRecord(cb->comm_done, cb->comm));
    CUDA_NOTE(cb, "compute_wait_comm", cudaStreamWaitEvent(cb->compute, cb->comm_done, 0));
}

/* ---- life cycle ------------------------------------------------------------------------------ */

static void cuda_destroy(lcm_backend *be) {
    cuda_backend *cb = cuda_of(be);
    cudaSetDevice(cb->gpu);
    if (cb->compute) cudaStreamSynchronize(cb->compute);
    if (cb->comm) cudaStreamSynchronize(cb->comm);
    cuda_matmul_cache_clear(cb);
    cuda_attention_release(cb);
    if (cb->lt) cublasLtDestroy(cb->lt);
    cudaFree(cb->lt_workspace);
    cudaFree(cb->scratch);
    if (cb->host_result) cudaFreeHost(cb->host_result);
    if (cb->compute_done) cudaEventDestroy(cb->compute_done);
    if (cb->comm_done) cudaEventDestroy(cb->comm_done);
    if (cb->compute) cudaStreamDestroy(cb->compute);
    if (cb->comm) cudaStreamDestroy(cb->comm);
    cudaGetLastError();
    free(cb);
}

/* Each backend holds its own table (filled field by field, so the names show what goes where). */
static void fill_ops(lcm_backend_ops *o) {
    memset(o, 0, sizeof *o);
    o->alloc = cuda_alloc;
    o->release = cuda_release;
    o->host_alloc = cuda_host_alloc;
    o->host_release = cuda_host_release;
    o->upload = cuda_upload;
    o->download = cuda_download;
    o->zero = cuda_zero;
    o->f32_to_act = cuda_f32_to_act;
    o->act_to_f32 = cuda_act_to_f32;
    o->sync = cuda_sync;
    o->query = cuda_query;
    o->mem_info = cuda_mem_info;
    o->comm_stream = cuda_comm_stream;
    o->comm_wait_compute = cuda_comm_wait_compute;
    o->compute_wait_comm = cuda_compute_wait_comm;
    o->normalize = cuda_normalize;
    o->linear_forward = cuda_linear_forward;
    o->linear_forward_f32 = cuda_linear_forward_f32;
    o->linear_backward = cuda_linear_backward;
    o->rmsnorm_forward = cuda_rmsnorm_forward;
    o->rmsnorm_backward = cuda_rmsnorm_backward;
    o->rope_forward = cuda_rope_forward;
    o->rope_backward = cuda_rope_backward;
    o->set_attention = cuda_set_attention;
    o->attention_saved_floats = cuda_attention_saved_floats;
    o->attention_forward = cuda_attention_forward;
    o->attention_backward = cuda_attention_backward;
    o->rope_forward_at = cuda_rope_forward_at;
    o->kv_store = cuda_kv_store;
    o->attention_cached = cuda_attention_cached;
    o->swiglu_forward = cuda_swiglu_forward;
    o->swiglu_backward = cuda_swiglu_backward;
    o->dropout_add = cuda_dropout_add;
    o->dropout_backward = cuda_dropout_backward;
    o->mse_loss = cuda_mse_loss;
    o->sumsq = cuda_sumsq;
    o->scale_f32 = cuda_scale_f32;
    o->adamw = cuda_adamw;
    o->f32_to_bf16 = cuda_f32_to_bf16;
    o->bf16_to_f32 = cuda_bf16_to_f32;
    o->bf16_to_f32_sumsq = cuda_bf16_to_f32_sumsq;
    o->destroy = cuda_destroy;
}

/* A failed setup call: the message names the step; the partly built backend is torn down. */
static int setup_failed(cuda_backend *cb, const char *step, const char *why, lcm_error *err) {
    int gpu = cb->gpu;
    cuda_destroy(&cb->base);
    return lcm_fail(err, LCM_ERR_DEVICE, "GPU %d: cannot set up the CUDA backend: %s failed: %s", gpu, step, why);
}

extern "C" int lcm_cuda_backend_create(lcm_backend **out, int gpu, lcm_error *err) {
    *out = NULL;
    int count = 0;
    LCM_TRY(lcm_cuda_device_count(&count, err));
    if (gpu < 0 || gpu >= count)
        return lcm_fail(err, LCM_ERR_DEVICE, "GPU %d does not exist: %d GPU(s) visible%s", gpu, count,
                        count ? " (numbered from 0; CUDA_VISIBLE_DEVICES may hide some)" : "");
    cuda_backend *cb = (cuda_backend *)calloc(1, sizeof *cb);
    if (!cb) return lcm_fail(err, LCM_ERR_NOMEM, "GPU %d: out of host memory for the backend state", gpu);
    cb->gpu = gpu;
    fill_ops(&cb->ops);
    cb->base.ops = &cb->ops;
    cb->base.name = "cuda";
    cb->base.act_bytes = lcm_cuda_traits.act_bytes;
    cb->base.traits = &lcm_cuda_traits;
    cb->base.device = gpu;
    cb->base.impl = cb;

    cudaError_t e;
    if ((e = cudaSetDevice(gpu)) != cudaSuccess) return setup_failed(cb, "cudaSetDevice", cudaGetErrorString(e), err);
    if ((e = cudaStreamCreateWithFlags(&cb->compute, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&cb->comm, cudaStreamNonBlocking)) != cudaSuccess)
        return setup_failed(cb, "cudaStreamCreate", cudaGetErrorString(e), err);
    if ((e = cudaEventCreateWithFlags(&cb->compute_done, cudaEventDisableTiming)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&cb->comm_done, cudaEventDisableTiming)) != cudaSuccess)
        return setup_failed(cb, "cudaEventCreate", cudaGetErrorString(e), err);
    cublasStatus_t s = cublasLtCreate(&cb->lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cb->lt = NULL;
        return setup_failed(cb, "cublasLtCreate", cublasLtGetStatusString(s), err);
    }
    cb->lt_workspace_bytes = LCM_CUDA_LT_WORKSPACE_BYTES;
    cb->scratch_bytes = LCM_CUDA_SCRATCH_BYTES;
    if ((e = cudaMalloc(&cb->lt_workspace, cb->lt_workspace_bytes)) != cudaSuccess ||
        (e = cudaMalloc(&cb->scratch, cb->scratch_bytes)) != cudaSuccess ||
        (e = cudaMallocHost((void **)&cb->host_result, sizeof(double))) != cudaSuccess) {
        cudaGetLastError();
        return setup_failed(cb, "allocating the cuBLASLt workspace and reduction scratch (48 MiB)",
                            cudaGetErrorString(e), err);
    }
    *out = &cb->base;
    return 0;
}
