/* cuda_reduce.cu: the reductions, all deterministic (the same inputs and shapes give the same bits):
 * column sums for the bias and RMSNorm-gain gradients, the masked MSE loss (fp32, on the fp32
 * prediction) with its gradient, and the sum of squares for gradient clipping.
 *
 * No float atomics anywhere: each reduction writes per-block partial sums into the backend's scratch
 * buffer, and a second kernel adds them in a fixed order. How work is split over blocks depends only
 * on the shapes (never on the GPU's SM count), so two GPUs of a data-parallel run agree too. */
#include "cuda_backend.cuh"
#include "cuda_kernels.cuh"

/* ---- column sums ------------------------------------------------------------------------------ */

#define COLSUM_THREADS 256
#define COLSUM_MIN_ROWS 32    /* rows per chunk at least this, so the partials stay few */
#define COLSUM_MAX_CHUNKS 128

/* partial[chunk, c] (= or +=) sum over the chunk's rows of dout[r, c] (* inp[r, c] * rstd[r]). */
__global__ void column_partials_kernel(float *partial, int accumulate, const bf16 *dout, const bf16 *inp,
                                       const float *rstd, int N, int C, int rows_per_chunk) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int r0 = blockIdx.y * rows_per_chunk;
    int r1 = min(N, r0 + rows_per_chunk);
    float s = 0.0f;
    for (int r = r0; r < r1; r++) {
        size_t i = (size_t)r * C + c;
        float v = load1(dout + i);
        if (inp) v = v * load1(inp + i) * rstd[r];
        s += v;
    }
    float *dst = partial + (size_t)blockIdx.y * C + c;
    *dst = accumulate ? *dst + s : s;
}

/* dst[c] (= or +=) the chunks' partial sums, in chunk order. */
__global__ void column_finish_kernel(float *dst, int accumulate, const float *partial, int nchunks, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int j = 0; j < nchunks; j++) s += partial[(size_t)j * C + c];
    dst[c] = accumulate ? dst[c] + s : s;
}

void cuda_column_sums(cuda_backend *cb, const char *op, float *dst, const bf16 *dout, const bf16 *inp,
                      const float *rstd, int N, int C, int accumulate) {
    if (C <= 0) return;
    if (N <= 0) { /* an empty sum */
        if (!accumulate) CUDA_NOTE(cb, op, cudaMemsetAsync(dst, 0, (size_t)C * sizeof(float), cb->compute));
        return;
    }
    size_t fit = cb->scratch_bytes / sizeof(float) / (size_t)C; /* chunks whose partials fit the scratch */
    int nchunks = (N + COLSUM_MIN_ROWS - 1) / COLSUM_MIN_ROWS;
    if (nchunks > COLSUM_MAX_CHUNKS) nchunks = COLSUM_MAX_CHUNKS;
    if ((size_t)nchunks > fit) nchunks = (int)fit;
    unsigned col_blocks = (unsigned)((C + COLSUM_THREADS - 1) / COLSUM_THREADS);
    if (nchunks <= 1) { /* one chunk: straight into dst */
        column_partials_kernel<<<col_blocks, COLSUM_THREADS, 0, cb->compute>>>(dst, accumulate, dout, inp, rstd, N, C,
                                                                              N);
        cuda_check_launch(cb, op);
        return;
    }
    int rows = (N + nchunks - 1) / nchunks;
    nchunks = (N + rows - 1) / rows;
    float *partial = (float *)cb->scratch;
    column_partials_kernel<<<dim3(col_blocks, (unsigned)nchunks), COLSUM_THREADS, 0, cb->compute>>>(
        partial, 0, dout, inp, rstd, N, C, rows);
    cuda_check_launch(cb, op);
    column_finish_kernel<<<col_blocks, COLSUM_THREADS, 0, cb->compute>>>(dst, accumulate, partial, nchunks, C);
    cuda_check_launch(cb, op);
}

/* ---- sum of squares ------------------------------------------------------------------------- */

#define SUMSQ_BLOCKS 1024 /* fixed, so the order of additions never depends on the GPU */
#define SUMSQ_THREADS 256

/* fp32 only (fp64 runs at 1/64 rate on consumer GPUs). A thread's long strided sum (6,000 terms for
 * base_lcm) is compensated (Kahan), so it errs by about 2 roundings instead of thousands; the block
 * and partial trees add 18 levels: a relative error near 1e-6, plenty for a clipping norm. */
__device__ __forceinline__ void kahan_add(float &s, float &comp, float v) {
    float y = v * v - comp;
    float t = s + y;
    comp = (t - s) - y;
    s = t;
}

__global__ void sumsq_partials_kernel(float *partial, const float *x, size_t n) {
    __shared__ float shared[32];
    float s = 0.0f, comp = 0.0f;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) kahan_add(s, comp, x[i]);
    s = block_sum(s, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* The bf16 gradient reduction's conversion back to fp32 and the clipping norm's sum of squares in one
 * pass over the gradients instead of two. Each thread visits the elements sumsq_partials_kernel's
 * thread visits, in the same order, and bf16 -> fp32 is exact, so the result has the bits of
 * bf16_to_f32 followed by sumsq. */
__global__ void bf16_to_f32_sumsq_partials_kernel(float *partial, float *dst, const bf16 *src, size_t n) {
    __shared__ float shared[32];
    float s = 0.0f, comp = 0.0f;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float f = load1(src + i);
        dst[i] = f;
        kahan_add(s, comp, f);
    }
    s = block_sum(s, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* One block: *out = sum of the partials, in a fixed order. */
__global__ void sum_partials_kernel(float *out, const float *partial, int np) {
    __shared__ float shared[32];
    float s = 0.0f;
    for (int i = threadIdx.x; i < np; i += blockDim.x) s += partial[i];
    s = block_sum(s, shared);
    if (threadIdx.x == 0) *out = s;
}

/* The partials' sum, on the host. */
static int sumsq_finish(cuda_backend *cb, const char *op, double *out, lcm_error *err) {
    float *partial = (float *)cb->scratch;
    float *total = partial + SUMSQ_BLOCKS;
    sum_partials_kernel<<<1, 1024, 0, cb->compute>>>(total, partial, SUMSQ_BLOCKS);
    cuda_check_launch(cb, op);
    /* host_result is pinned and holds a double, so a float fits */
    CUDA_NOTE(cb, op, cudaMemcpyAsync(cb->host_result, total, sizeof(float), cudaMemcpyDeviceToHost, cb->compute));
    CUDA_NOTE(cb, op, cudaStreamSynchronize(cb->compute));
    if (cb->sticky.code != LCM_OK) return lcm_fail(err, cb->sticky.code, "%s", cb->sticky.msg);
    float total_h;
    memcpy(&total_h, cb->host_result, sizeof total_h);
    *out = total_h;
    return 0;
}

int cuda_sumsq(lcm_backend *be, double *out, const float *x, size_t n, lcm_error *err) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "sumsq";
    cuda_enter(cb, op);
    *out = 0.0;
    sumsq_partials_kernel<<<SUMSQ_BLOCKS, SUMSQ_THREADS, 0, cb->compute>>>((float *)cb->scratch, x, n);
    cuda_check_launch(cb, op);
    return sumsq_finish(cb, op, out, err);
}

int cuda_bf16_to_f32_sumsq(lcm_backend *be, float *dst, const uint16_t *src, size_t n, double *out, lcm_error *err) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "bf16_to_f32_sumsq";
    cuda_enter(cb, op);
    *out = 0.0;
    bf16_to_f32_sumsq_partials_kernel<<<SUMSQ_BLOCKS, SUMSQ_THREADS, 0, cb->compute>>>((float *)cb->scratch, dst,
                                                                                       (const bf16 *)src, n);
    cuda_check_launch(cb, op);
    return sumsq_finish(cb, op, out, err);
}

/* ---- masked next-concept MSE ---------------------------------------------------------------- */

#define LOSS_MAX_BLOCKS 1024
#define LOSS_THREADS 256

/* Block j handles rows j, j + gridDim.x, ...; its share of the loss goes to partial[j]. All in fp32,
 * as the reference computes its loss: a thread sums D / 256 squares of each of its block's rows (28 in
 * all for base_lcm at 7168 positions), then the block and the partials are summed as trees: at most
 * about 50 fp32 roundings of a sum of positive terms, a relative error below 3e-6. */
__global__ void mse_loss_kernel(float *partial, bf16 *dy, const float *y, const float *x, const float *center,
                                const float *scale, const int32_t *lens, int B, int T, int D, float grad_scale) {
    __shared__ float shared[32];
    float acc = 0.0f;
    int N = B * T;
    for (int r = blockIdx.x; r < N; r += gridDim.x) {
        int b = r / T, t = r % T;
        int has_target = t < lens[b] - 1;
        size_t row = (size_t)r * D;
        for (int d = threadIdx.x; d < D; d += blockDim.x) {
            float g = 0.0f;
            if (has_target) {
                float target = (x[row + D + d] - center[d]) / scale[d]; /* x[b, t+1] */
                float diff = y[row + d] - target;
                acc += diff * diff;
                g = 2.0f * diff * grad_scale;
            }
            store1(dy + row + d, g);
        }
    }
    acc = block_sum(acc, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

void cuda_mse_loss(lcm_backend *be, void *dy, float *loss_sum, const float *y, const float *x,
                   const float *center, const float *scale, const int32_t *lens, int B, int T, int D,
                   float grad_scale) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "mse_loss";
    cuda_enter(cb, op);
    int N = B * T;
    if (N <= 0 || D <= 0) {
        CUDA_NOTE(cb, op, cudaMemsetAsync(loss_sum, 0, sizeof(float), cb->compute));
        return;
    }
    int blocks = N < LOSS_MAX_BLOCKS ? N : LOSS_MAX_BLOCKS;
    float *partial = (float *)cb->scratch;
    mse_loss_kernel<<<blocks, LOSS_THREADS, 0, cb->compute>>>(partial, (bf16 *)dy, y, x, center, scale,
                                                             lens, B, T, D, grad_scale);
    cuda_check_launch(cb, op);
    sum_partials_kernel<<<1, 1024, 0, cb->compute>>>(loss_sum, partial, blocks);
    cuda_check_launch(cb, op);
}
