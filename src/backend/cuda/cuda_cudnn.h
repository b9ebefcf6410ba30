/* cuda_cudnn.h: the C interface of cuda_cudnn.cpp, the one C++ file that speaks to cuDNN's fused
 * scaled-dot-product attention through NVIDIA's cuDNN frontend (headers only). It owns the cuDNN handle,
 * the execution plans (built once per shape, cached) and their workspace. It is compiled only when the
 * Makefile finds cuDNN and the frontend headers (LCM_WITH_CUDNN = 1).
 *
 * The attention it computes is the backend's (include/lcm/backend.h): query t of row b attends key s iff
 * s <= t and s < lens[b], on qkv [B, T, 3C] and out [B, T, C] in bf16, scale 1/sqrt(hd). The statistics
 * it saves are the native kernels' first half of `saved`: the log-sum-exp (natural log) of each query's
 * scaled scores, [B, H, T] fp32. */
#ifndef LCM_CUDA_CUDNN_H
#define LCM_CUDA_CUDNN_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lcm_cudnn lcm_cudnn;

/* What the attention calls return. */
enum {
    LCM_CUDNN_OK = 0,
    LCM_CUDNN_UNSUPPORTED = 1, /* cuDNN has no plan for this shape (or one over the planned workspace): why says */
    LCM_CUDNN_FAILED = -1      /* a cuDNN or CUDA call failed: why says which */
};

/* A handle on GPU `gpu` (current for the calling thread) working on `stream`. Non-zero with why filled
 * when cuDNN cannot be used there (library too old, GPU before sm_80, cudnnCreate failed). */
int lcm_cudnn_create(lcm_cudnn **out, int gpu, cudaStream_t stream, char *why, size_t cap);
void lcm_cudnn_destroy(lcm_cudnn *c);
/* "9.19.0": the version of the library loaded. */
void lcm_cudnn_version(char *out, size_t cap);

/* stats: [B, H, T] fp32. */
int lcm_cudnn_attention_forward(lcm_cudnn *c, void *out, float *stats, const void *qkv, const int32_t *lens, int B,
                                int T, int C, int H, char *why, size_t cap);
/* dqkv [B, T, 3C] (assigned) from dout [B, T, C], with the forward's qkv, out and stats. */
int lcm_cudnn_attention_backward(lcm_cudnn *c, void *dqkv, const void *dout, const void *qkv, const void *out,
                                 const float *stats, const int32_t *lens, int B, int T, int C, int H, char *why,
                                 size_t cap);

#ifdef __cplusplus
}
#endif

#endif
