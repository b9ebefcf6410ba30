/* cuda_norm.cu: the input normalizer (fp32 SONAR embeddings -> bf16 normalized) and RMSNorm forward and
 * backward. Statistics in fp32; one warp per row; 16-byte loads when the rows allow them. The gain
 * gradient is a deterministic column sum (cuda_reduce.cu), assigned on a step's first contribution. */
#include "cuda_backend.cuh"
#include "cuda_kernels.cuh"

/* Up to eight consecutive elements p[0 .. count-1] (the rest read as 0): one 16-byte load when `vec`
 * (p aligned and count >= 8), else one at a time. */
template <typename T> __device__ __forceinline__ void load_upto8(float v[8], const T *p, int count, int vec) {
    if (vec && count >= 8) {
        load8(v, p);
        return;
    }
    for (int k = 0; k < 8; k++) v[k] = k < count ? load1(p + k) : 0.0f;
}
template <typename T> __device__ __forceinline__ void store_upto8(T *p, const float v[8], int count, int vec) {
    if (vec && count >= 8) {
        store8(p, v);
        return;
    }
    for (int k = 0; k < 8 && k < count; k++) store1(p + k, v[k]);
}

/* ---- normalize ------------------------------------------------------------------------------- */

/* Eight elements per thread; `vec` requires D % 8 == 0 and every pointer 16-byte aligned, so a group of
 * eight never crosses a row. */
__global__ void normalize_kernel(bf16 *xn, const float *x, const float *center, const float *scale, size_t n, int D,
                                 int vec) {
    size_t i0 = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i0 >= n) return;
    if (vec && i0 + 8 <= n) {
        int d0 = (int)(i0 % D);
        float v[8], c[8], s[8];
        load8(v, x + i0);
        load8(c, center + d0);
        load8(s, scale + d0);
        for (int k = 0; k < 8; k++) v[k] = (v[k] - c[k]) / s[k];
        store8(xn + i0, v);
        return;
    }
    for (size_t i = i0; i < n && i < i0 + 8; i++) {
        int d = (int)(i % D);
        store1(xn + i, (x[i] - center[d]) / scale[d]);
    }
}

void cuda_normalize(lcm_backend *be, void *xn, const float *x, const float *center, const float *scale, int N,
                    int D) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "normalize";
    cuda_enter(cb, op);
    size_t n = (size_t)N * D;
    if (n == 0) return;
    int vec = D % 8 == 0 && aligned16(xn) && aligned16(x) && aligned16(center) && aligned16(scale);
    normalize_kernel<<<grid_for(n, 8, 256), 256, 0, cb->compute>>>((bf16 *)xn, x, center, scale, n, D, vec);
    cuda_check_launch(cb, op);
}

/* ---- RMSNorm --------------------------------------------------------------------------------- */

#define NORM_THREADS 256 /* 8 warps, one row each */

/* Each lane covers columns lane*8 .. lane*8+7, then 256 further, and so on. */
__global__ void rmsnorm_forward_kernel(bf16 *out, float *rstd, const bf16 *inp, const bf16 *gain, int N, int C,
                                       float eps, int vec) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= N) return;
    const bf16 *x = inp + (size_t)row * C;
    bf16 *o = out + (size_t)row * C;
    float ss = 0.0f;
    for (int c0 = lane * 8; c0 < C; c0 += 256) {
        float v[8];
        load_upto8(v, x + c0, C - c0, vec);
        for (int k = 0; k < 8; k++) ss += v[k] * v[k];
    }
    ss = warp_sum(ss);
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    if (lane == 0) rstd[row] = r;
    for (int c0 = lane * 8; c0 < C; c0 += 256) {
        float v[8], g[8];
        load_upto8(v, x + c0, C - c0, vec);
        load_upto8(g, gain + c0, C - c0, vec);
        for (int k = 0; k < 8; k++) v[k] = v[k] * r * g[k];
        store_upto8(o + c0, v, C - c0, vec);
    }
}

/* y = x r g with r = (mean(x^2) + eps)^-1/2 gives
 *   dx = r g dy - x r^3 / C * sum_c(dy g x),
 * added into dinp, the residual stream's gradient (fp32: it sums every layer's share, which bf16 would
 * round after each of the 2L additions). */
__global__ void rmsnorm_backward_kernel(float *dinp, const bf16 *dout, const bf16 *inp, const bf16 *gain,
                                        const float *rstd, int N, int C, int vec) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= N) return;
    size_t base = (size_t)row * C;
    float dot = 0.0f;
    for (int c0 = lane * 8; c0 < C; c0 += 256) {
        float dy[8], x[8], g[8];
        load_upto8(dy, dout + base + c0, C - c0, vec);
        load_upto8(x, inp + base + c0, C - c0, vec);
        load_upto8(g, gain + c0, C - c0, vec);
        for (int k = 0; k < 8; k++) dot += dy[k] * g[k] * x[k];
    }
    dot = warp_sum(dot);
    float r = rstd[row];
    float coef = r * r * r * dot / (float)C;
    for (int c0 = lane * 8; c0 < C; c0 += 256) {
        float dy[8], x[8], g[8], dx[8];
        load_upto8(dy, dout + base + c0, C - c0, vec);
        load_upto8(x, inp + base + c0, C - c0, vec);
        load_upto8(g, gain + c0, C - c0, vec);
        load_upto8(dx, dinp + base + c0, C - c0, vec);
        for (int k = 0; k < 8; k++) dx[k] += r * g[k] * dy[k] - x[k] * coef;
        store_upto8(dinp + base + c0, dx, C - c0, vec);
    }
}

void cuda_rmsnorm_forward(lcm_backend *be, void *out, float *rstd, const void *inp, const void *gain, int N,
                          int C, float eps) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "rmsnorm_forward";
    cuda_enter(cb, op);
    if (N <= 0 || C <= 0) return;
    int vec = C % 8 == 0 && aligned16(out) && aligned16(inp) && aligned16(gain);
    unsigned blocks = (unsigned)((N + NORM_THREADS / 32 - 1) / (NORM_THREADS / 32));
    rmsnorm_forward_kernel<<<blocks, NORM_THREADS, 0, cb->compute>>>((bf16 *)out, rstd, (const bf16 *)inp,
                                                                     (const bf16 *)gain, N, C, eps, vec);
    cuda_check_launch(cb, op);
}

void cuda_rmsnorm_backward(lcm_backend *be, float *dinp, float *dgain, const void *dout, const void *inp,
                           const void *gain, const float *rstd, int N, int C, int accumulate) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "rmsnorm_backward";
    cuda_enter(cb, op);
    if (C <= 0) return;
    if (N > 0) {
        int vec = C % 8 == 0 && aligned16(dinp) && aligned16(dout) && aligned16(inp) && aligned16(gain);
        unsigned blocks = (unsigned)((N + NORM_THREADS / 32 - 1) / (NORM_THREADS / 32));
        rmsnorm_backward_kernel<<<blocks, NORM_THREADS, 0, cb->compute>>>(dinp, (const bf16 *)dout,
                                                                          (const bf16 *)inp, (const bf16 *)gain,
                                                                          rstd, N, C, vec);
        cuda_check_launch(cb, op);
    }
    cuda_column_sums(cb, op, dgain, (const bf16 *)dout, (const bf16 *)inp, rstd, N, C, accumulate);
}
