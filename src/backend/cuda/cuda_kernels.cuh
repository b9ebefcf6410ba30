/* cuda_kernels.cuh: device helpers shared by the CUDA backend's kernels: bf16 <-> fp32 loads and
 * stores (one element, or eight through one 16-byte access), and warp and block sums whose order of
 * additions is fixed by the thread layout alone (so the same launch always gives the same bits). */
#ifndef LCM_CUDA_KERNELS_CUH
#define LCM_CUDA_KERNELS_CUH

#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float load1(const bf16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ float load1(const float *p) { return *p; }
__device__ __forceinline__ void store1(bf16 *p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void store1(float *p, float v) { *p = v; }

/* Eight consecutive elements; p must be 16-byte aligned. */
__device__ __forceinline__ void load8(float v[8], const bf16 *p) {
    uint4 raw = *reinterpret_cast<const uint4 *>(p);
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&raw);
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(h[i]);
        v[2 * i] = f.x;
        v[2 * i + 1] = f.y;
    }
}
__device__ __forceinline__ void load8(float v[8], const float *p) {
    float4 a = reinterpret_cast<const float4 *>(p)[0];
    float4 b = reinterpret_cast<const float4 *>(p)[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void store8(bf16 *p, const float v[8]) {
    uint4 raw;
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&raw);
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    *reinterpret_cast<uint4 *>(p) = raw;
}
__device__ __forceinline__ void store8(float *p, const float v[8]) {
    reinterpret_cast<float4 *>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4 *>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

/* Sum over the 32 lanes of a warp (a butterfly: every lane gets the same total). */
template <typename T> __device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <typename T> __device__ __forceinline__ T warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
 * `shared` holds 32 values. Contains __syncthreads: call it from every thread of the block. */
template <typename T> __device__ T block_sum(T v, T *shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* shared may still be read by a previous call */
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < nwarps ? shared[lane] : (T)0;
    return warp_sum(v);
}

#endif
