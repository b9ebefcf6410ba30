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

const lcm_backend_traits lcm_cpu_traits = {"cpu", sizeof(float), cpu_saved, cpu_workspace};
const lcm_backend_traits lcm_cuda_traits = {"cuda", 2, cuda_saved, cuda_workspace};
