/* cuda_elementwise.cu: the element-wise ops: SwiGLU forward/backward, residual dropout (masks drawn by
 * the same Philox code as the CPU backend, so they are bit-identical), fp32 scaling, the fp32 <-> bf16
 * conversions and the fused AdamW step (fp32 master weights and moments, writing the bf16 compute copy).
 *
 * Each thread handles eight consecutive elements: one 16-byte access per array when the host found
 * every pointer aligned (`vec`), one element at a time otherwise and for the tail. */
#include <math.h>

#include "cuda_backend.cuh"
#include "cuda_kernels.cuh"

#define EW_THREADS 256

/* The first of the eight elements this thread handles. */
__device__ __forceinline__ size_t first_of_eight(void) {
    return ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
}

/* ---- SwiGLU: gi [N, 2F] = gate | inner ------------------------------------------------------- */

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

/* `vec` requires F % 8 == 0 (eight elements never cross a row) and aligned pointers. */
__global__ void swiglu_forward_kernel(bf16 *out, const bf16 *gi, size_t n, int F, int vec) {
    size_t i0 = first_of_eight();
    if (i0 >= n) return;
    if (vec && i0 + 8 <= n) {
        const bf16 *gate = gi + (i0 / F) * 2 * F + i0 % F;
        float g[8], u[8];
        load8(g, gate);
        load8(u, gate + F);
        for (int k = 0; k < 8; k++) g[k] = g[k] * sigmoidf_(g[k]) * u[k];
        store8(out + i0, g);
        return;
    }
    for (size_t i = i0; i < n && i < i0 + 8; i++) {
        const bf16 *gate = gi + (i / F) * 2 * F + i % F;
        float g = load1(gate), u = load1(gate + F);
        store1(out + i, g * sigmoidf_(g) * u);
    }
}

/* d silu(g)/dg = s (1 + g (1 - s)), s = sigmoid(g). */
__device__ __forceinline__ void swiglu_grad(float dy, float g, float u, float *dg, float *du) {
    float s = sigmoidf_(g);
    *dg = dy * u * s * (1.0f + g * (1.0f - s));
    *du = dy * g * s;
}

__global__ void swiglu_backward_kernel(bf16 *dgi, const bf16 *dout, const bf16 *gi, size_t n, int F, int vec) {
    size_t i0 = first_of_eight();
    if (i0 >= n) return;
    if (vec && i0 + 8 <= n) {
        size_t off = (i0 / F) * 2 * F + i0 % F;
        float dy[8], g[8], u[8], dg[8], du[8];
        load8(dy, dout + i0);
        load8(g, gi + off);
        load8(u, gi + off + F);
        for (int k = 0; k < 8; k++) swiglu_grad(dy[k], g[k], u[k], &dg[k], &du[k]);
        store8(dgi + off, dg);
        store8(dgi + off + F, du);
        return;
    }
    for (size_t i = i0; i < n && i < i0 + 8; i++) {
        size_t off = (i / F) * 2 * F + i % F;
        float dg, du;
        swiglu_grad(load1(dout + i), load1(gi + off), load1(gi + off + F), &dg, &du);
        store1(dgi + off, dg);
        store1(dgi + off + F, du);
    }
}

void cuda_swiglu_forward(lcm_backend *be, void *out, const void *gi, int N, int F) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "swiglu_forward";
    cuda_enter(cb, op);
    size_t n = (size_t)N * F;
    if (N <= 0 || F <= 0) return;
    int vec = F % 8 == 0 && aligned16(out) && aligned16(gi);
    swiglu_forward_kernel<<<grid_for(n, 8, EW_THREADS), EW_THREADS, 0, cb->compute>>>((bf16 *)out, (const bf16 *)gi,
                                                                                        n, F, vec);
    cuda_check_launch(cb, op);
}

void cuda_swiglu_backward(lcm_backend *be, void *dgi, const void *dout, const void *gi, int N, int F) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "swiglu_backward";
    cuda_enter(cb, op);
    size_t n = (size_t)N * F;
    if (N <= 0 || F <= 0) return;
    int vec = F % 8 == 0 && aligned16(dgi) && aligned16(dout) && aligned16(gi);
    swiglu_backward_kernel<<<grid_for(n, 8, EW_THREADS), EW_THREADS, 0, cb->compute>>>(
        (bf16 *)dgi, (const bf16 *)dout, (const bf16 *)gi, n, F, vec);
    cuda_check_launch(cb, op);
}

/* ---- residual dropout ------------------------------------------------------------------------ */

/* The mask factor of element i: 0 (dropped) or 1 / (1 - p). threshold 0 (p = 0) keeps everything. */
__device__ __forceinline__ float dropout_factor(lcm_dropout_key key, size_t i, uint32_t threshold, float keep_scale) {
    if (threshold == 0) return 1.0f;
    return lcm_dropout_keep(key, (uint64_t)i, threshold) ? keep_scale : 0.0f;
}

__global__ void dropout_add_kernel(bf16 *h_out, const bf16 *h_in, const bf16 *branch, size_t n,
                                   lcm_dropout_key key, uint32_t threshold, float keep_scale, int vec) {
    size_t i0 = first_of_eight();
    if (i0 >= n) return;
    if (vec && i0 + 8 <= n) {
        float h[8], b[8];
        load8(h, h_in + i0);
        load8(b, branch + i0);
        for (int k = 0; k < 8; k++) h[k] += b[k] * dropout_factor(key, i0 + k, threshold, keep_scale);
        store8(h_out + i0, h);
        return;
    }
    for (size_t i = i0; i < n && i < i0 + 8; i++)
        store1(h_out + i, load1(h_in + i) + load1(branch + i) * dropout_factor(key, i, threshold, keep_scale));
}

__global__ void dropout_backward_kernel(bf16 *dbranch, const float *dh, size_t n, lcm_dropout_key key,
                                        uint32_t threshold, float keep_scale, int vec) {
    size_t i0 = first_of_eight();
    if (i0 >= n) return;
    if (vec && i0 + 8 <= n) {
        float d[8];
        load8(d, dh + i0);
        for (int k = 0; k < 8; k++) d[k] *= dropout_factor(key, i0 + k, threshold, keep_scale);
        store8(dbranch + i0, d);
        return;
    }
    for (size_t i = i0; i < n && i < i0 + 8; i++)
        store1(dbranch + i, load1(dh + i) * dropout_factor(key, i, threshold, keep_scale));
}

void cuda_dropout_add(lcm_backend *be, void *h_out, const void *h_in, const void *branch, size_t n, float p,
                      lcm_dropout_key key) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "dropout_add";
    cuda_enter(cb, op);
    if (n == 0) return;
    uint32_t threshold = lcm_dropout_threshold(p);
    float keep_scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    int vec = aligned16(h_out) && aligned16(h_in) && aligned16(branch);
    dropout_add_kernel<<<grid_for(n, 8, EW_THREADS), EW_THREADS, 0, cb->compute>>>(
        (bf16 *)h_out, (const bf16 *)h_in, (const bf16 *)branch, n, key, threshold, keep_scale, vec);
    cuda_check_launch(cb, op);
}

void cuda_dropout_backward(lcm_backend *be, void *dbranch, const float *dh, size_t n, float p, lcm_dropout_key key) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "dropout_backward";
    cuda_enter(cb, op);
    if (n == 0) return;
    uint32_t threshold = lcm_dropout_threshold(p);
    float keep_scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    int vec = aligned16(dbranch) && aligned16(dh);
    dropout_backward_kernel<<<grid_for(n, 8, EW_THREADS), EW_THREADS, 0, cb->compute>>>(
        (bf16 *)dbranch, dh, n, key, threshold, keep_scale, vec);
    cuda_check_launch(cb, op);
}

/* ---- scaling and conversions ----------------------------------------------------------------- */

__global__ void scale_f32_kernel(float *x, float s, size_t n, int vec) {
    size_t i0 = first_of_eight();
    if (i0 >= n) return;
    if (vec && i0 + 8 <= n) {
        float v[8];
        load8(v, x + i0);
        for (int k = 0; k < 8; k++) v[k] *= s;
        store8(x + i0, v);
        return;
    }
    for (size_t i = i0; i < n && i < i0 + 8; i++) x[i] *= s;
}

/* dst = src converted (fp32 -> bf16 rounds to nearest even). */
template <typename Dst, typename Src> __global__ void convert_kernel(Dst *dst, const Src *src, size_t n, int vec) {
    size_t i0 = first_of_eight();
    if (i0 >= n) return;
    if (vec && i0 + 8 <= n) {
        float v[8];
        load8(v, src + i0);
        store8(dst + i0, v);
        return;
    }
    for (size_t i = i0; i < n && i < i0 + 8; i++) store1(dst + i, load1(src + i));
}

void cuda_scale_f32(lcm_backend *be, float *x, float s, size_t n) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "scale_f32";
    cuda_enter(cb, op);
    if (n == 0) return;
    scale_f32_kernel<<<grid_for(n, 8, EW_THREADS), EW_THREADS, 0, cb->compute>>>(x, s, n, aligned16(x));
    cuda_check_launch(cb, op);
}

void cuda_f32_to_bf16(lcm_backend *be, uint16_t *dst, const float *src, size_t n) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "f32_to_bf16";
    cuda_enter(cb, op);
    if (n == 0) return;
    int vec = aligned16(dst) && aligned16(src);
    convert_kernel<bf16, float><<<grid_for(n, 8, EW_THREADS), EW_THREADS, 0, cb->compute>>>((bf16 *)dst, src, n, vec);
    cuda_check_launch(cb, op);
}

void cuda_bf16_to_f32(lcm_backend *be, float *dst, const uint16_t *src, size_t n) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "bf16_to_f32";
    cuda_enter(cb, op);
    if (n == 0) return;
    int vec = aligned16(dst) && aligned16(src);
    convert_kernel<float, bf16><<<grid_for(n, 8, EW_THREADS), EW_THREADS, 0, cb->compute>>>(dst, (const bf16 *)src,
                                                                                             n, vec);
    cuda_check_launch(cb, op);
}

/* ---- AdamW ------------------------------------------------------------------------------------ */

/* PyTorch's AdamW, element by element (the CPU backend's formula):
 *   p *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *   p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps),  bc_i = 1 - b_i^step,  g = grad * grad_scale.
 * The per-step scalars are computed in double on the host and rounded once. */
typedef struct adamw_consts {
    float beta1, beta2, one_minus_beta1, one_minus_beta2, eps, grad_scale;
    float decay;     /* 1 - lr wd */
    float step_size; /* lr / bc1 */
    float bc2_sqrt;  /* sqrt(bc2) */
} adamw_consts;

__device__ __forceinline__ float adamw_one(float *w, float *m, float *v, float grad, const adamw_consts &c) {
    float g = grad * c.grad_scale;
    float mi = c.beta1 * *m + c.one_minus_beta1 * g;
    float vi = c.beta2 * *v + c.one_minus_beta2 * g * g;
    *m = mi;
    *v = vi;
    float p = *w * c.decay - c.step_size * (mi / (sqrtf(vi) / c.bc2_sqrt + c.eps));
    *w = p;
    return p;
}

__global__ void adamw_kernel(float *master, bf16 *param, const float *grad, float *m, float *v, size_t n,
                             adamw_consts c, int vec) {
    size_t i0 = first_of_eight();
    if (i0 >= n) return;
    if (vec && i0 + 8 <= n) {
        float w[8], g[8], mm[8], vv[8], out[8];
        load8(w, master + i0);
        load8(g, grad + i0);
        load8(mm, m + i0);
        load8(vv, v + i0);
        for (int k = 0; k < 8; k++) out[k] = adamw_one(&w[k], &mm[k], &vv[k], g[k], c);
        store8(master + i0, w);
        store8(m + i0, mm);
        store8(v + i0, vv);
        store8(param + i0, out);
        return;
    }
    for (size_t i = i0; i < n && i < i0 + 8; i++) store1(param + i, adamw_one(master + i, m + i, v + i, grad[i], c));
}

void cuda_adamw(lcm_backend *be, float *master, void *param, const float *grad, float *m, float *v, size_t n,
                const lcm_adamw_args *a) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "adamw";
    cuda_enter(cb, op);
    if (n == 0) return;
    double bc1 = 1.0 - pow((double)a->beta1, (double)a->step);
    double bc2 = 1.0 - pow((double)a->beta2, (double)a->step);
    adamw_consts c;
    c.beta1 = a->beta1;
    c.beta2 = a->beta2;
    c.one_minus_beta1 = (float)(1.0 - a->beta1);
    c.one_minus_beta2 = (float)(1.0 - a->beta2);
    c.eps = a->eps;
    c.grad_scale = a->grad_scale;
    c.decay = (float)(1.0 - (double)a->lr * a->weight_decay);
    c.step_size = (float)(a->lr / bc1);
    c.bc2_sqrt = (float)sqrt(bc2);
    int vec = aligned16(master) && aligned16(param) && aligned16(grad) && aligned16(m) && aligned16(v);
    adamw_kernel<<<grid_for(n, 8, EW_THREADS), EW_THREADS, 0, cb->compute>>>(master, (bf16 *)param, grad, m, v, n,
                                                                              c, vec);
    cuda_check_launch(cb, op);
}
