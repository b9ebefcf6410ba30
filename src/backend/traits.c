/* traits.c: what each backend needs besides the model's own buffers, described without a device
 * (include/lcm/memplan.h): the backends answer attention_saved_floats and size their workspaces from
 * here, and the memory plan reads the same numbers for a device it does not have. */
#include "lcm/memplan.h"

/* The CPU attention keeps its probabilities, (T, T) per row and head. */
static size_t cpu_saved(int B, int T, int H) { return (size_t)B * H * T * T; }

/* The attention backward's (T, T) scores, grown on demand up to the longest row. */
static size_t cpu_workspace(int max_T) { return (size_t)max_T * max_T * sizeof(float); }

/* The CUDA attention keeps each query's log-sum-exp and its output row sum: 2 per row, head and position. */
static size_t cuda_saved(int B, int T, int H) { return 2 * (size_t)B * H * T; }

static size_t cuda_workspace(int max_T) { return LCM_CUDA_LT_WORKSPACE_BYTES + LCM_CUDA_SCRATCH_BYTES; }

static size_t no_attention_workspace(int B, int T, int H, int hd) { return 0; }

#ifndef LCM_WITH_CUDNN
#define LCM_WITH_CUDNN 0
#endif

/* cuDNN's fused attention with the deterministic backward (src/backend/cuda/cuda_cudnn.cpp), which the
 * frontend serves with its dP-workspace path: a bf16 dP matrix of B x H x T x T with T padded to 64, fp32
 * softmax sums (B x H x T, padded), and a margin of 16 MiB for the engines' own scratch. A bound written
 * from the frontend's sizes, not measured: the backend checks each plan against it (docs/performance.md). */
static size_t cudnn_attention_workspace(int B, int T, int H, int hd) {
    if (!LCM_WITH_CUDNN || !LCM_CUDNN_HEAD_DIM_OK(hd)) return 0;
    const size_t P = ((size_t)T + 63) / 64 * 64, rows = (size_t)B * H;
    return rows * P * P * 2 + rows * P * sizeof(float) + ((size_t)16 << 20);
}

const lcm_backend_traits lcm_cpu_traits = {"cpu", sizeof(float), cpu_saved, cpu_workspace, no_attention_workspace};
const lcm_backend_traits lcm_cuda_traits = {"cuda", 2, cuda_saved, cuda_workspace, cudnn_attention_workspace};
