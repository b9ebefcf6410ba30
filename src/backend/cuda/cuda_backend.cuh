/* cuda_backend.cuh: what the CUDA backend's files share: the backend's private state (streams, events,
 * the cuBLASLt handle and workspace, the matmul plan cache, the reduction scratch buffer, the sticky
 * error), the error-recording helpers, and the declarations of the ops each .cu file implements.
 *
 * The ops return nothing (backend.h): a failing CUDA or cuBLASLt call is recorded in the backend's
 * sticky error (the first one wins, it is the root cause) and returned by the next sync/query.
 * Every kernel launch is followed by cuda_check_launch(), which names the op. */
#ifndef LCM_CUDA_BACKEND_CUH
#define LCM_CUDA_BACKEND_CUH

/* The C headers of lcm declare C functions without extern "C" guards; their system includes are
 * pulled in first so that they are not wrapped. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

extern "C" {
#include "lcm/backend.h"
#include "lcm/error.h"
#include "lcm/memplan.h"
}

typedef __nv_bfloat16 bf16;

/* One cached cuBLASLt matmul: descriptors and the algorithm chosen for one shape and alignment. */
typedef enum {
    MATMUL_FORWARD,
    MATMUL_FORWARD_BIAS,
    MATMUL_FORWARD_F32,
    MATMUL_DINP,
    MATMUL_DW,
    MATMUL_DW_BGRADB, /* dw with the bias gradient from the epilogue (stored, so only with beta = 0) */
} matmul_kind;

typedef struct matmul_plan {
    int used;
    int unsupported;   /* MATMUL_DW_BGRADB only: cuBLASLt offered no algorithm; the caller falls back */
    matmul_kind kind;
    int m, n, k;
    uint32_t align[4]; /* byte alignment of the A, B, C, D pointers the algorithm was chosen for */
    uint32_t bias_align; /* and of the bias (gradient) pointer; 0 without one */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c, d;
    cublasLtMatmulAlgo_t algo;
} matmul_plan;

#define MATMUL_CACHE_SIZE 64

/* The attention kernels in use: the native fast ("flash") ones, the native reference ("simple") ones
 * the tests check the fast ones against, or cuDNN's fused attention (cuda_cudnn.cpp). */
typedef enum { CUDA_ATTENTION_FLASH, CUDA_ATTENTION_SIMPLE, CUDA_ATTENTION_CUDNN } cuda_attention_impl;

typedef struct cuda_backend {
    lcm_backend base;
    lcm_backend_ops ops;
    int gpu;
    cudaStream_t compute;
    cudaStream_t comm;
    cudaEvent_t compute_done; /* recorded on compute, waited on by comm */
    cudaEvent_t comm_done;    /* recorded on comm, waited on by compute */
    cublasLtHandle_t lt;
    void *lt_workspace;
    size_t lt_workspace_bytes;
    matmul_plan plans[MATMUL_CACHE_SIZE];
    int next_plan;              /* round-robin replacement once the cache is full */
    void *scratch;              /* partial sums of the deterministic reductions */
    size_t scratch_bytes;
    double *host_result;        /* pinned, for sumsq's result */
    cuda_attention_impl attention; /* native until set_attention says otherwise */
    int attention_auto;         /* model.attention = auto: a shape cuDNN cannot take runs native (said once) */
    int attention_fallback_said;
    struct lcm_cudnn *cudnn;    /* cuDNN's handle, plans and workspace when attention is cuDNN */
    const char *last_op;        /* the last op enqueued, named when a later sync finds a failure */
    lcm_error sticky;           /* the first asynchronous failure */
} cuda_backend;

static inline cuda_backend *cuda_of(lcm_backend *be) { return (cuda_backend *)be->impl; }

/* Record a failed CUDA call of `op` (no-op on success). Returns 1 when it failed. */
int cuda_note(cuda_backend *cb, const char *op, cudaError_t e, const char *file, int line);
int cuda_note_lt(cuda_backend *cb, const char *op, cublasStatus_t s, const char *file, int line);
/* Record a failure that is not a CUDA error code (a shape the kernels do not support). */
void cuda_note_msg(cuda_backend *cb, lcm_status code, const char *op, const char *msg);
/* Start an op: make the backend's GPU current for this thread (cheap when it already is). */
void cuda_enter(cuda_backend *cb, const char *op);

#define CUDA_NOTE(cb, op, call) cuda_note((cb), (op), (call), __FILE__, __LINE__)
#define LT_NOTE(cb, op, call) cuda_note_lt((cb), (op), (call), __FILE__, __LINE__)
#define cuda_check_launch(cb, op) cuda_note((cb), (op), cudaGetLastError(), __FILE__, __LINE__)

/* 1 when p is aligned to 16 bytes (the vectorized paths load 16 bytes at a time). */
static inline int aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* Blocks of `threads` threads covering `n` items of `per_thread` elements each. */
static inline unsigned grid_for(size_t n, size_t per_thread, unsigned threads) {
    size_t items = (n + per_thread - 1) / per_thread;
    return (unsigned)((items + threads - 1) / threads);
}

/* ---- the ops, one group per file ---- */

/* cuda_matmul.cu */
void cuda_linear_forward(lcm_backend *be, void *out, const void *inp, const void *w, const void *bias, int N,
                         int IC, int OC);
void cuda_linear_forward_f32(lcm_backend *be, float *out, const void *inp, const void *w, const void *bias, int N,
                             int IC, int OC);
void cuda_linear_backward(lcm_backend *be, void *dinp, float *dw, float *dbias, const void *dout,
                          const void *inp, const void *w, int N, int IC, int OC, int accumulate);
void cuda_matmul_cache_clear(cuda_backend *cb);

/* cuda_reduce.cu: deterministic reductions (fixed order, no float atomics) */
/* dst[c] (+= with accumulate, else =) sum_n dout[n, c] * (inp ? inp[n, c] * rstd[n] : 1) over N rows
 * of C columns. */
void cuda_column_sums(cuda_backend *cb, const char *op, float *dst, const bf16 *dout, const bf16 *inp,
                      const float *rstd, int N, int C, int accumulate);
int cuda_sumsq(lcm_backend *be, double *out, const float *x, size_t n, lcm_error *err);
int cuda_bf16_to_f32_sumsq(lcm_backend *be, float *dst, const uint16_t *src, size_t n, double *out, lcm_error *err);
void cuda_mse_loss(lcm_backend *be, void *dy, float *loss_sum, const float *y, const float *x,
                   const float *center, const float *scale, const int32_t *lens, int B, int T, int D,
                   float grad_scale);

/* cuda_norm.cu */
void cuda_normalize(lcm_backend *be, void *xn, const float *x, const float *center, const float *scale, int N,
                    int D);
void cuda_rmsnorm_forward(lcm_backend *be, void *out, float *rstd, const void *inp, const void *gain, int N,
                          int C, float eps);
void cuda_rmsnorm_backward(lcm_backend *be, float *dinp, float *dgain, const void *dout, const void *inp,
                           const void *gain, const float *rstd, int N, int C, int accumulate);

/* cuda_rope.cu */
void cuda_rope_forward(lcm_backend *be, void *qkv, const float *table, int B, int T, int C, int H);
void cuda_rope_backward(lcm_backend *be, void *dqkv, const float *table, int B, int T, int C, int H);
void cuda_rope_forward_at(lcm_backend *be, void *qkv, const float *table, int B, int S, int C, int H, int pos0);

/* cuda_attention.cu */
int cuda_set_attention(lcm_backend *be, lcm_attention choice, int head_dim, lcm_error *err);
void cuda_attention_release(cuda_backend *cb); /* cuDNN's state, at destroy */
size_t cuda_attention_saved_floats(lcm_backend *be, int B, int T, int H);
void cuda_attention_forward(lcm_backend *be, void *out, float *saved, const void *qkv, const int32_t *lens,
                            int B, int T, int C, int H);
void cuda_attention_backward(lcm_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                             const float *saved, const int32_t *lens, int B, int T, int C, int H);
void cuda_kv_store(lcm_backend *be, void *kc, void *vc, const void *qkv, int B, int S, int C, int pos0, int Tcap);
void cuda_attention_cached(lcm_backend *be, void *out, const void *qkv, const void *kc, const void *vc, int B, int S,
                           int C, int H, int pos0, int Tcap);

/* cuda_elementwise.cu */
void cuda_swiglu_forward(lcm_backend *be, void *out, const void *gi, int N, int F);
void cuda_swiglu_backward(lcm_backend *be, void *dgi, const void *dout, const void *gi, int N, int F);
void cuda_dropout_add(lcm_backend *be, void *h_out, const void *h_in, const void *branch, size_t n, float p,
                      lcm_dropout_key key);
void cuda_dropout_backward(lcm_backend *be, void *dbranch, const float *dh, size_t n, float p,
                           lcm_dropout_key key);
void cuda_scale_f32(lcm_backend *be, float *x, float s, size_t n);
void cuda_f32_to_bf16(lcm_backend *be, uint16_t *dst, const float *src, size_t n);
void cuda_bf16_to_f32(lcm_backend *be, float *dst, const uint16_t *src, size_t n);
void cuda_adamw(lcm_backend *be, float *master, void *param, const float *grad, float *m, float *v, size_t n,
                const lcm_adamw_args *a);

#endif
