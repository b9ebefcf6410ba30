/* backend.h: the operation table. The model's layer sequence (src/model/) is written once against this
 * table; the CPU backend (fp32, the readable reference) and the CUDA backend (bf16 compute, fp32
 * master weights) each fill it in.
 *
 * Conventions shared by every op:
 *  - All tensors are row-major. N is a number of positions (B*T, padding included).
 *  - "act" buffers hold the backend's activation dtype (fp32 on CPU, bf16 on CUDA), act_bytes per
 *    element; the compute copy of the weights uses the same dtype. `float *` buffers are always fp32:
 *    parameter gradients, master weights, AdamW moments, norm statistics, the raw input batch, the
 *    normalizer, the loss, and, because they are cheap and precision matters there, the prediction
 *    (the postnet's output, which the loss reads) and the residual stream's gradient dh.
 *  - Backward: parameter gradients ACCUMULATE (+=) when the op's `accumulate` is 1 and are ASSIGNED
 *    (=) when it is 0 (a step's first contribution: no separate zeroing pass over the gradients; the
 *    old contents, NaN included, are ignored). Activation gradients are ASSIGNED (=), with one
 *    exception: rmsnorm_backward adds into dinp, because a norm's input is the residual stream whose
 *    gradient already holds the skip connection's share.
 *  - Math ops are enqueued on the backend's compute stream and return nothing; an asynchronous failure
 *    is remembered and returned by the next sync/query. Ops that can fail on the spot return int.
 *  - Linear weights are [out, in] (PyTorch layout); every linear has a bias.
 *  - Attention reads qkv [B, T, 3C] (q | k | v, head h at columns h*hd .. h*hd+hd-1 of each part) and
 *    writes out [B, T, C]. Query t of row b attends key s iff s <= t and s < lens[b] (causal plus key
 *    padding; rows are right-padded; lens[b] >= 1).
 *  - RoPE rotates interleaved pairs (2i, 2i+1) of each head of q and k by angle t * theta^(-2i/hd),
 *    t = position in the row (from 0). The ops read the cosine and sine from `rope`, the model's fp32
 *    angle table (include/lcm/rope.h; on the device, covering every position the call touches).
 *  - SwiGLU reads gi [N, 2F] = gate | inner and writes silu(gate) * inner [N, F].
 */
#ifndef LCM_BACKEND_H
#define LCM_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "lcm/config.h"
#include "lcm/error.h"
#include "lcm/philox.h"

typedef struct lcm_backend lcm_backend;

typedef struct lcm_adamw_args {
    float lr;
    float beta1, beta2, eps;
    float weight_decay;  /* decoupled: master *= 1 - lr * weight_decay, before the Adam update */
    float grad_scale;    /* gradients are multiplied by this first (the clipping factor) */
    int64_t step;        /* 1-based, for the bias corrections */
} lcm_adamw_args;

typedef struct lcm_backend_ops {
    /* ---- memory and transfers ---- */
    /* Device memory, zero-filled. On failure (out of memory) the message says what was being
     * allocated (`what`), how much was asked for and how much was free. */
    int (*alloc)(lcm_backend *be, void **out, size_t bytes, const char *what, lcm_error *err);
    void (*release)(lcm_backend *be, void *p);
    /* Host memory for staging batches (pinned on CUDA). */
    int (*host_alloc)(lcm_backend *be, void **out, size_t bytes, lcm_error *err);
    void (*host_release)(lcm_backend *be, void *p);
    /* Host -> device, enqueued: src must stay unchanged until the next sync. */
    int (*upload)(lcm_backend *be, void *dst, const void *src, size_t bytes, lcm_error *err);
    /* Device -> host, returns when the data is there (waits for earlier work). */
    int (*download)(lcm_backend *be, void *dst, const void *src, size_t bytes, lcm_error *err);
    void (*zero)(lcm_backend *be, void *p, size_t bytes);
    /* Device-side dtype conversions over n elements. */
    void (*f32_to_act)(lcm_backend *be, void *dst, const float *src, size_t n);
    void (*act_to_f32)(lcm_backend *be, float *dst, const void *src, size_t n);
    /* Wait for all enqueued work; returns the first asynchronous error. */
    int (*sync)(lcm_backend *be, lcm_error *err);
    /* 1 when all enqueued work is done, 0 while some runs, negative with err set on failure. */
    int (*query)(lcm_backend *be, lcm_error *err);
    /* Free and total device memory in bytes. */
    void (*mem_info)(lcm_backend *be, size_t *free_bytes, size_t *total_bytes);

    /* ---- streams for overlapping gradient all-reduce with backward (no-ops on CPU) ---- */
    void *(*comm_stream)(lcm_backend *be);       /* cudaStream_t for NCCL, NULL on CPU */
    void (*comm_wait_compute)(lcm_backend *be);  /* comm stream waits for work enqueued so far */
    void (*compute_wait_comm)(lcm_backend *be);  /* compute stream waits for the comm stream */

    /* ---- the model's operations ---- */
    /* xn[N, D] (act) = (x - center) / scale */
    void (*normalize)(lcm_backend *be, void *xn, const float *x, const float *center, const float *scale,
                      int N, int D);
    /* out[N, OC] = inp[N, IC] @ w[OC, IC]^T + bias[OC] */
    void (*linear_forward)(lcm_backend *be, void *out, const void *inp, const void *w, const void *bias,
                           int N, int IC, int OC);
    /* linear_forward with an fp32 out (the postnet). */
    void (*linear_forward_f32)(lcm_backend *be, float *out, const void *inp, const void *w, const void *bias,
                               int N, int IC, int OC);
    /* dinp = dout @ w (skipped when dinp is NULL); dw (+)= dout^T @ inp; dbias (+)= column sums of dout */
    void (*linear_backward)(lcm_backend *be, void *dinp, float *dw, float *dbias, const void *dout,
                            const void *inp, const void *w, int N, int IC, int OC, int accumulate);
    /* rstd[n] = 1 / sqrt(mean(inp[n]^2) + eps) (fp32); out = inp * rstd * gain */
    void (*rmsnorm_forward)(lcm_backend *be, void *out, float *rstd, const void *inp, const void *gain,
                            int N, int C, float eps);
    /* dinp (fp32: the residual gradient) += d(out)/d(inp)^T dout; dgain (+)= sum_n dout * inp * rstd */
    void (*rmsnorm_backward)(lcm_backend *be, float *dinp, float *dgain, const void *dout, const void *inp,
                             const void *gain, const float *rstd, int N, int C, int accumulate);
    /* In place on the q and k parts of qkv[B, T, 3C]; backward applies the inverse rotation to dqkv. */
    void (*rope_forward)(lcm_backend *be, void *qkv, const float *rope, int B, int T, int C, int H);
    void (*rope_backward)(lcm_backend *be, void *dqkv, const float *rope, int B, int T, int C, int H);
    /* Which implementation attention_forward/backward use (model.attention), for heads of head_dim;
     * called once after the backend is made (until then: the native one). A choice the backend cannot
     * honour (cudnn on the CPU, or in a build, library or GPU without it) is an LCM_ERR_CONFIG error
     * naming the key; auto picks cudnn where it can and says which it picked (lcm_info). */
    int (*set_attention)(lcm_backend *be, lcm_attention choice, int head_dim, lcm_error *err);
    /* fp32 values attention_forward saves for its backward (probabilities on CPU, log-sum-exp on CUDA). */
    size_t (*attention_saved_floats)(lcm_backend *be, int B, int T, int H);
    /* out[B, T, C] = softmax(q k^T / sqrt(hd), masked) v per head; saves into `saved`. lens: device int32[B]. */
    void (*attention_forward)(lcm_backend *be, void *out, float *saved, const void *qkv, const int32_t *lens,
                              int B, int T, int C, int H);
    /* dqkv (assigned) from dout; needs the forward's qkv, out and saved values. */
    void (*attention_backward)(lcm_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                               const float *saved, const int32_t *lens, int B, int T, int C, int H);
    void (*swiglu_forward)(lcm_backend *be, void *out, const void *gi, int N, int F);
    void (*swiglu_backward)(lcm_backend *be, void *dgi, const void *dout, const void *gi, int N, int F);
    /* h_out = h_in + mask(branch) / (1 - p), mask from lcm_dropout_keep(key, element index, ...);
     * p = 0 is a plain add. h_out may equal h_in. */
    void (*dropout_add)(lcm_backend *be, void *h_out, const void *h_in, const void *branch, size_t n,
                        float p, lcm_dropout_key key);
    /* dbranch (act) = mask(dh) / (1 - p) (dbranch = dh when p = 0); dh is fp32. */
    void (*dropout_backward)(lcm_backend *be, void *dbranch, const float *dh, size_t n, float p,
                             lcm_dropout_key key);
    /* ---- incremental inference with a KV cache (generation) ----
     * S new positions pos0 .. pos0+S-1 of B rows. Generation feeds every row in lockstep, so all
     * positions up to pos0+S-1 are real: attention needs causality only, no key padding. A layer's cache
     * is kc, vc [B, Tcap, C] (act); positions < pos0 were stored by earlier calls. */
    /* RoPE forward on qkv[B, S, 3C] at positions pos0 + t (rope_forward is the case pos0 = 0). */
    void (*rope_forward_at)(lcm_backend *be, void *qkv, const float *rope, int B, int S, int C, int H, int pos0);
    /* kc[b, pos0 + t] = the k part of qkv[b, t]; vc[b, pos0 + t] = its v part. */
    void (*kv_store)(lcm_backend *be, void *kc, void *vc, const void *qkv, int B, int S, int C, int pos0,
                     int Tcap);
    /* out[B, S, C]: query t of row b (the q part of qkv[b, t], position pos0 + t) attends the cached
     * keys and values 0 .. pos0 + t; softmax(q k^T / sqrt(hd)) v per head, fp32 accumulation. */
    void (*attention_cached)(lcm_backend *be, void *out, const void *qkv, const void *kc, const void *vc, int B,
                             int S, int C, int H, int pos0, int Tcap);
    /* The masked next-concept squared error. For each row b and t < lens[b] - 1:
     *   target = (x[b, t+1] - center) / scale;  d = y[b, t] - target (fp32; y is fp32);
     *   *loss_sum (device fp32, assigned) = sum of d^2 over all such (b, t) and the D dims;
     *   dy[b, t] = 2 d * grad_scale; dy = 0 at every other position. */
    void (*mse_loss)(lcm_backend *be, void *dy, float *loss_sum, const float *y, const float *x,
                     const float *center, const float *scale, const int32_t *lens, int B, int T, int D,
                     float grad_scale);
    /* Sum of squares of x[n] (deterministic: the same inputs give the same bits), into *out on the host. */
    int (*sumsq)(lcm_backend *be, double *out, const float *x, size_t n, lcm_error *err);
    /* In place x *= s (fp32). */
    void (*scale_f32)(lcm_backend *be, float *x, float s, size_t n);
    /* One AdamW step over n parameters: updates master, m, v and writes the compute copy `param`
     * (act dtype; on CPU param == master and no copy is made). */
    void (*adamw)(lcm_backend *be, float *master, void *param, const float *grad, float *m, float *v, size_t n,
                  const lcm_adamw_args *a);
    /* For the bf16 all-reduce option: fp32 <-> bf16 on device. */
    void (*f32_to_bf16)(lcm_backend *be, uint16_t *dst, const float *src, size_t n);
    void (*bf16_to_f32)(lcm_backend *be, float *dst, const uint16_t *src, size_t n);
    /* bf16_to_f32, then sumsq of dst, in one pass where the backend can (the same bits as the two ops):
     * the reduced bf16 gradients' conversion carries the clipping norm's sum of squares. */
    int (*bf16_to_f32_sumsq)(lcm_backend *be, float *dst, const uint16_t *src, size_t n, double *out, lcm_error *err);

    void (*destroy)(lcm_backend *be);
} lcm_backend_ops;

struct lcm_backend {
    const lcm_backend_ops *ops;
    const char *name;   /* "cpu" or "cuda" */
    size_t act_bytes;   /* 4 (fp32) on CPU, 2 (bf16) on CUDA */
    const struct lcm_backend_traits *traits; /* the same, for planning (lcm/memplan.h) */
    int device;         /* GPU ordinal, or CPU worker index */
    void *impl;
};

/* Pointer to element `i` of an act buffer. */
static inline void *lcm_act_at(const lcm_backend *be, void *base, size_t i) {
    return (char *)base + i * be->act_bytes;
}
static inline const void *lcm_act_at_c(const lcm_backend *be, const void *base, size_t i) {
    return (const char *)base + i * be->act_bytes;
}

/* ---- the CPU backend ---- */
int lcm_cpu_backend_create(lcm_backend **out, int worker, lcm_error *err);
/* Free (MemAvailable) and total host memory: what CPU workers allocate from. */
void lcm_cpu_mem_info(size_t *free_bytes, size_t *total_bytes);
/* Bytes the process's CPU backends have allocated (alloc and host_alloc, summed, never decreased) and
 * the largest attention scratch any has grown to. */
void lcm_cpu_alloc_counters(size_t *allocated, size_t *scratch_largest);
/* OpenBLAS threads for the whole process (decide once: cores / CPU workers). */
void lcm_cpu_set_blas_threads(int n);
int lcm_cpu_count(void);

/* ---- the CUDA backend (these return an error in a build without CUDA) ---- */
int lcm_cuda_backend_create(lcm_backend **out, int gpu, lcm_error *err);
/* Tests: the slow reference attention kernels ("simple", one block per query) instead of the native fast
 * ones, to check the fast ones against (tests/gpu/test_cuda_ops.c). */
int lcm_cuda_use_reference_attention(lcm_backend *be, lcm_error *err);
/* Number of visible GPUs (0 with no driver or no GPU; err set only for real failures). */
int lcm_cuda_device_count(int *n, lcm_error *err);
/* Device name, for MFU tables and messages. */
int lcm_cuda_device_name(int gpu, char *out, size_t cap, lcm_error *err);
/* Free and total memory of a GPU, before any backend exists (the memory plan's check). */
int lcm_cuda_device_memory(int gpu, size_t *free_bytes, size_t *total_bytes, lcm_error *err);
/* PCI bus id ("0000:3b:00.0") of a CUDA ordinal: how NVML finds the same device (gpumon.c). */
int lcm_cuda_pci_bus_id(int gpu, char *out, size_t cap, lcm_error *err);
/* `lcm info`: every visible GPU, the peer-access matrix, driver/runtime/NCCL versions. */
void lcm_cuda_print_info(FILE *f);
int lcm_cuda_built(void);

static inline void lcm_backend_destroy(lcm_backend *be) {
    if (be) be->ops->destroy(be);
}

#endif
