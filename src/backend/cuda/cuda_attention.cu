/* cuda_attention.cu: causal self-attention with key padding, forward and backward, bf16 in and out,
 * fp32 softmax. Query t of row b attends key s iff s <= t and s < lens[b], so a query sees
 * nk = min(t + 1, lens[b]) keys (at least key 0).
 *
 * Saved for the backward (attention_saved_floats = 2 B H T fp32): the log-sum-exp of each query's
 * scaled scores, lse [B, H, T], and, written by the backward itself, delta = rowsum(dO * O) [B, H, T].
 * The backward recomputes the probabilities P = exp(score - lse) instead of storing them:
 *   dV_s = sum_t P_ts dO_t,   dS_ts = P_ts (dO_t . V_s - delta_t),
 *   dQ_t = scale sum_s dS_ts K_s,   dK_s = scale sum_t dS_ts Q_t.
 * dQ and dK/dV come from separate kernels, each output element owned by one thread that adds in a fixed
 * order: no atomics, the same bits every run.
 *
 * Three implementations of the same math, chosen by set_attention (model.attention):
 *  - cuDNN's fused attention (cuda_cudnn.cpp), in builds with cuDNN, for model.attention = cudnn, and
 *    for auto where the library, the GPU and the shape allow; it saves the same log-sum-exp in the same
 *    place, and a shape it cannot take under auto runs on the native kernels below (said once).
 *  - "flash" (native, head dim <= 128): a block of 8 warps handles 8 queries (or 8 keys in the
 *    dK/dV kernel), one per warp; tiles of 32 keys (queries) are staged in shared memory once for all
 *    8 warps; the softmax runs online over the tiles. Lane j scores key j of a tile; lane j then
 *    accumulates output dimensions j, j+32, ...
 *  - "simple" (native, any head dim; lcm_cuda_use_reference_attention for the tests): one block per
 *    query (per key in the dK/dV kernel), reading keys straight from global memory in tiles of 32, the
 *    softmax bookkeeping done by one thread. Slow and obviously right: the reference the flash kernels
 *    are tested against. */
#include <math.h>

#include "cuda_backend.cuh"
#include "cuda_kernels.cuh"
#if LCM_WITH_CUDNN
#include "cuda_cudnn.h"
#endif
extern "C" {
#include "lcm/log.h"
}

#define TILE 32 /* keys (queries) per tile: one per lane */

/* Where things are, for row b, position t, head h: qkv [B, T, 3C] (q | k | v), out [B, T, C],
 * saved [B, H, T]. */
struct attn_shape {
    int B, T, C, H, hd;
    float scale; /* 1 / sqrt(hd) */
    __device__ size_t qkv_at(int b, int t, int h) const { return ((size_t)b * T + t) * 3 * C + (size_t)h * hd; }
    __device__ size_t out_at(int b, int t, int h) const { return ((size_t)b * T + t) * C + (size_t)h * hd; }
    __device__ size_t stat_at(int b, int h, int t) const { return ((size_t)b * H + h) * T + t; }
};

/* delta[b, h, t] = sum_d dO[b, t, h, d] O[b, t, h, d]: one warp per (b, t, h). */
__global__ void attention_delta_kernel(float *delta, const bf16 *dout, const bf16 *out, attn_shape s) {
    size_t w = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (w >= (size_t)s.B * s.T * s.H) return;
    int h = (int)(w % s.H);
    size_t row = w / s.H;
    int b = (int)(row / s.T), t = (int)(row % s.T);
    const bf16 *o = out + s.out_at(b, t, h), *g = dout + s.out_at(b, t, h);
    float acc = 0.0f;
    for (int d = lane; d < s.hd; d += 32) acc += load1(g + d) * load1(o + d);
    acc = warp_sum(acc);
    if (lane == 0) delta[s.stat_at(b, h, t)] = acc;
}

/* ---- simple kernels: grid (T, H, B), SIMPLE_THREADS threads, one query (key) per block ---------- */

#define SIMPLE_THREADS 128

/* dot(x[0..hd), y[0..hd)) by one warp, x in shared fp32, y bf16 in global memory; all lanes get it. */
__device__ __forceinline__ float warp_dot(const float *x, const bf16 *y, int hd) {
    float acc = 0.0f;
    for (int d = threadIdx.x % 32; d < hd; d += 32) acc += x[d] * load1(y + d);
    return warp_sum(acc);
}

/* shared: q[hd], acc[hd], p[TILE], stat[2] */
__global__ void attention_forward_simple_kernel(bf16 *out, float *lse, const bf16 *qkv, const int32_t *lens,
                                                attn_shape s) {
    extern __shared__ float sm[];
    int hd = s.hd;
    float *q = sm, *acc = q + hd, *p = acc + hd, *stat = p + TILE;
    int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    int tid = threadIdx.x, warp = tid / 32, nwarps = blockDim.x / 32;
    int nk = min(t + 1, lens[b]);
    const bf16 *keys = qkv + s.qkv_at(b, 0, h) + s.C, *values = keys + s.C;
    size_t stride = 3 * (size_t)s.C;
    for (int d = tid; d < hd; d += blockDim.x) {
        q[d] = load1(qkv + s.qkv_at(b, t, h) + d);
        acc[d] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f; /* kept by thread 0 */
    __syncthreads();
    for (int s0 = 0; s0 < nk; s0 += TILE) {
        int n = min(TILE, nk - s0);
        for (int j = warp; j < n; j += nwarps) {
            float dot = warp_dot(q, keys + (size_t)(s0 + j) * stride, hd);
            if (tid % 32 == 0) p[j] = dot * s.scale;
        }
        __syncthreads();
        if (tid == 0) {
            float mt = m;
            for (int j = 0; j < n; j++) mt = fmaxf(mt, p[j]);
            float corr = expf(m - mt), sum = 0.0f;
            for (int j = 0; j < n; j++) {
                p[j] = expf(p[j] - mt);
                sum += p[j];
            }
            l = l * corr + sum;
            m = mt;
            stat[0] = corr;
        }
        __syncthreads();
        float corr = stat[0];
        for (int d = tid; d < hd; d += blockDim.x) {
            float a = acc[d] * corr;
            for (int j = 0; j < n; j++) a += p[j] * load1(values + (size_t)(s0 + j) * stride + d);
            acc[d] = a;
        }
        __syncthreads();
    }
    if (tid == 0) {
        stat[1] = l;
        lse[s.stat_at(b, h, t)] = m + logf(l);
    }
    __syncthreads();
    float inv_l = 1.0f / stat[1];
    for (int d = tid; d < hd; d += blockDim.x) store1(out + s.out_at(b, t, h) + d, acc[d] * inv_l);
}

/* dQ for query t. shared: q[hd], dO[hd], dq[hd], ds[TILE] */
__global__ void attention_dq_simple_kernel(bf16 *dqkv, const bf16 *dout, const bf16 *qkv, const float *lse,
                                           const float *delta, const int32_t *lens, attn_shape s) {
    extern __shared__ float sm[];
    int hd = s.hd;
    float *q = sm, *go = q + hd, *dq = go + hd, *ds = dq + hd;
    int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    int tid = threadIdx.x, warp = tid / 32, nwarps = blockDim.x / 32;
    int nk = min(t + 1, lens[b]);
    const bf16 *keys = qkv + s.qkv_at(b, 0, h) + s.C, *values = keys + s.C;
    size_t stride = 3 * (size_t)s.C;
    for (int d = tid; d < hd; d += blockDim.x) {
        q[d] = load1(qkv + s.qkv_at(b, t, h) + d);
        go[d] = load1(dout + s.out_at(b, t, h) + d);
        dq[d] = 0.0f;
    }
    float lse_t = lse[s.stat_at(b, h, t)], delta_t = delta[s.stat_at(b, h, t)];
    __syncthreads();
    for (int s0 = 0; s0 < nk; s0 += TILE) {
        int n = min(TILE, nk - s0);
        for (int j = warp; j < n; j += nwarps) {
            float score = warp_dot(q, keys + (size_t)(s0 + j) * stride, hd) * s.scale;
            float dp = warp_dot(go, values + (size_t)(s0 + j) * stride, hd);
            if (tid % 32 == 0) ds[j] = expf(score - lse_t) * (dp - delta_t);
        }
        __syncthreads();
        for (int d = tid; d < hd; d += blockDim.x) {
            float a = dq[d];
            for (int j = 0; j < n; j++) a += ds[j] * load1(keys + (size_t)(s0 + j) * stride + d);
            dq[d] = a;
        }
        __syncthreads();
    }
    for (int d = tid; d < hd; d += blockDim.x) store1(dqkv + s.qkv_at(b, t, h) + d, dq[d] * s.scale);
}

/* dK and dV for key s (blockIdx.x). shared: k[hd], v[hd], dk[hd], dv[hd], p[TILE], ds[TILE] */
__global__ void attention_dkv_simple_kernel(bf16 *dqkv, const bf16 *dout, const bf16 *qkv, const float *lse,
                                            const float *delta, const int32_t *lens, attn_shape s) {
    extern __shared__ float sm[];
    int hd = s.hd;
    float *k = sm, *v = k + hd, *dk = v + hd, *dv = dk + hd, *p = dv + hd, *ds = p + TILE;
    int key = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    int tid = threadIdx.x, warp = tid / 32, nwarps = blockDim.x / 32;
    bf16 *dk_out = dqkv + s.qkv_at(b, key, h) + s.C, *dv_out = dk_out + s.C;
    if (key >= lens[b]) { /* a padding key: no query attends it */
        for (int d = tid; d < hd; d += blockDim.x) {
            store1(dk_out + d, 0.0f);
            store1(dv_out + d, 0.0f);
        }
        return;
    }
    const bf16 *queries = qkv + s.qkv_at(b, 0, h), *grads = dout + s.out_at(b, 0, h);
    size_t qstride = 3 * (size_t)s.C, gstride = s.C;
    for (int d = tid; d < hd; d += blockDim.x) {
        k[d] = load1(qkv + s.qkv_at(b, key, h) + s.C + d);
        v[d] = load1(qkv + s.qkv_at(b, key, h) + 2 * s.C + d);
        dk[d] = dv[d] = 0.0f;
    }
    __syncthreads();
    for (int t0 = key; t0 < s.T; t0 += TILE) { /* queries t >= key all attend it */
        int n = min(TILE, s.T - t0);
        for (int j = warp; j < n; j += nwarps) {
            int t = t0 + j;
            float score = warp_dot(k, queries + (size_t)t * qstride, hd) * s.scale;
            float dp = warp_dot(v, grads + (size_t)t * gstride, hd);
            if (tid % 32 == 0) {
                float pj = expf(score - lse[s.stat_at(b, h, t)]);
                p[j] = pj;
                ds[j] = pj * (dp - delta[s.stat_at(b, h, t)]);
            }
        }
        __syncthreads();
        for (int d = tid; d < hd; d += blockDim.x) {
            float a = dv[d], c = dk[d];
            for (int j = 0; j < n; j++) {
                a += p[j] * load1(grads + (size_t)(t0 + j) * gstride + d);
                c += ds[j] * load1(queries + (size_t)(t0 + j) * qstride + d);
            }
            dv[d] = a;
            dk[d] = c;
        }
        __syncthreads();
    }
    for (int d = tid; d < hd; d += blockDim.x) {
        store1(dk_out + d, dk[d] * s.scale);
        store1(dv_out + d, dv[d]);
    }
}

/* ---- flash kernels: grid (ceil(T / 8), H, B), 8 warps, one query (key) per warp ----------------- */

#define FLASH_WARPS 8
#define FLASH_THREADS (FLASH_WARPS * 32)

/* Row stride (in bf16) of a tile row in shared memory: an odd number of 4-byte words, so that 32 lanes
 * reading the same column of 32 rows hit 32 different banks. */
__host__ __device__ __forceinline__ int tile_stride(int hd) { return (hd / 2) % 2 ? hd : hd + 2; }

/* Copy rows first .. first+TILE-1 (row r at src + r * stride, hd elements) into a shared tile; rows at or
 * past `limit` become zeros (so that 0-probability rows never multiply garbage). All threads call it. */
__device__ __forceinline__ void load_tile(bf16 *tile, const bf16 *src, size_t stride, int first, int limit, int hd) {
    int ts = tile_stride(hd);
    for (int e = threadIdx.x; e < TILE * hd; e += blockDim.x) {
        int j = e / hd, d = e % hd;
        tile[j * ts + d] = first + j < limit ? src[(size_t)(first + j) * stride + d] : __float2bfloat16(0.0f);
    }
}

/* dot(x[0..hd) fp32 in shared, row[0..hd) bf16 in shared), by one thread, in pairs. */
__device__ __forceinline__ float row_dot(const float *x, const bf16 *row, int hd) {
    float acc = 0.0f;
    for (int d = 0; d < hd; d += 2) {
        float2 a = *reinterpret_cast<const float2 *>(x + d);
        float2 r = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(row + d));
        acc += a.x * r.x;
        acc += a.y * r.y;
    }
    return acc;
}

/* shared: K tile, V tile (bf16, TILE x tile_stride), q rows (fp32, FLASH_WARPS x hd).
 * DPL: output dimensions per lane (lane owns d = lane + 32 i, i < DPL). */
template <int DPL>
__global__ void __launch_bounds__(FLASH_THREADS)
attention_forward_flash_kernel(bf16 *out, float *lse, const bf16 *qkv, const int32_t *lens, attn_shape s) {
    extern __shared__ float sm[];
    int hd = s.hd, ts = tile_stride(hd);
    float *qs = sm;
    bf16 *ks = reinterpret_cast<bf16 *>(qs + FLASH_WARPS * hd), *vs = ks + TILE * ts;
    int h = blockIdx.y, b = blockIdx.z;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int t_first = blockIdx.x * FLASH_WARPS, t = t_first + warp;
    int len = lens[b];
    int active = t < s.T;
    int nk = active ? min(t + 1, len) : 0;
    int kmax = min(min(t_first + FLASH_WARPS, s.T), len); /* keys any warp of the block needs */
    float *q = qs + warp * hd;
    for (int d = lane; d < hd; d += 32) q[d] = active ? load1(qkv + s.qkv_at(b, t, h) + d) : 0.0f;
    const bf16 *keys = qkv + s.qkv_at(b, 0, h) + s.C, *values = keys + s.C;
    size_t stride = 3 * (size_t)s.C;
    float acc[DPL];
    for (int i = 0; i < DPL; i++) acc[i] = 0.0f;
    float m = -INFINITY, l = 0.0f; /* the same in every lane */
    for (int s0 = 0; s0 < kmax; s0 += TILE) {
        __syncthreads(); /* the previous tile is consumed (and q is written, on the first pass) */
        load_tile(ks, keys, stride, s0, kmax, hd);
        load_tile(vs, values, stride, s0, kmax, hd);
        __syncthreads();
        if (s0 >= nk) continue; /* warp-uniform: no key of this tile is visible to this query */
        float score = s0 + lane < nk ? row_dot(q, ks + lane * ts, hd) * s.scale : -INFINITY;
        float m_new = fmaxf(m, warp_max(score)); /* finite: key s0 + 0 < nk is visible */
        float corr = expf(m - m_new);
        float p = expf(score - m_new);
        l = l * corr + warp_sum(p);
        m = m_new;
        for (int i = 0; i < DPL; i++) acc[i] *= corr;
        int n = min(TILE, nk - s0);
        for (int j = 0; j < n; j++) {
            float pj = __shfl_sync(0xffffffffu, p, j);
            for (int i = 0; i < DPL; i++) {
                int d = lane + 32 * i;
                if (d < hd) acc[i] += pj * __bfloat162float(vs[j * ts + d]);
            }
        }
    }
    if (!active) return;
    float inv_l = 1.0f / l;
    for (int i = 0; i < DPL; i++) {
        int d = lane + 32 * i;
        if (d < hd) store1(out + s.out_at(b, t, h) + d, acc[i] * inv_l);
    }
    if (lane == 0) lse[s.stat_at(b, h, t)] = m + logf(l);
}

/* dQ for 8 queries. shared: K tile, V tile (bf16), q and dO rows (fp32, FLASH_WARPS x hd each). */
template <int DPL>
__global__ void __launch_bounds__(FLASH_THREADS)
attention_dq_flash_kernel(bf16 *dqkv, const bf16 *dout, const bf16 *qkv, const float *lse, const float *delta,
                          const int32_t *lens, attn_shape s) {
    extern __shared__ float sm[];
    int hd = s.hd, ts = tile_stride(hd);
    float *qs = sm, *gs = qs + FLASH_WARPS * hd;
    bf16 *ks = reinterpret_cast<bf16 *>(gs + FLASH_WARPS * hd), *vs = ks + TILE * ts;
    int h = blockIdx.y, b = blockIdx.z;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int t_first = blockIdx.x * FLASH_WARPS, t = t_first + warp;
    int len = lens[b];
    int active = t < s.T;
    int nk = active ? min(t + 1, len) : 0;
    int kmax = min(min(t_first + FLASH_WARPS, s.T), len);
    float *q = qs + warp * hd, *go = gs + warp * hd;
    for (int d = lane; d < hd; d += 32) {
        q[d] = active ? load1(qkv + s.qkv_at(b, t, h) + d) : 0.0f;
        go[d] = active ? load1(dout + s.out_at(b, t, h) + d) : 0.0f;
    }
    float lse_t = active ? lse[s.stat_at(b, h, t)] : 0.0f, delta_t = active ? delta[s.stat_at(b, h, t)] : 0.0f;
    const bf16 *keys = qkv + s.qkv_at(b, 0, h) + s.C, *values = keys + s.C;
    size_t stride = 3 * (size_t)s.C;
    float acc[DPL];
    for (int i = 0; i < DPL; i++) acc[i] = 0.0f;
    for (int s0 = 0; s0 < kmax; s0 += TILE) {
        __syncthreads();
        load_tile(ks, keys, stride, s0, kmax, hd);
        load_tile(vs, values, stride, s0, kmax, hd);
        __syncthreads();
        if (s0 >= nk) continue;
        float ds = 0.0f;
        if (s0 + lane < nk) {
            float score = row_dot(q, ks + lane * ts, hd) * s.scale;
            float dp = row_dot(go, vs + lane * ts, hd);
            ds = expf(score - lse_t) * (dp - delta_t);
        }
        int n = min(TILE, nk - s0);
        for (int j = 0; j < n; j++) {
            float dsj = __shfl_sync(0xffffffffu, ds, j);
            for (int i = 0; i < DPL; i++) {
                int d = lane + 32 * i;
                if (d < hd) acc[i] += dsj * __bfloat162float(ks[j * ts + d]);
            }
        }
    }
    if (!active) return;
    for (int i = 0; i < DPL; i++) {
        int d = lane + 32 * i;
        if (d < hd) store1(dqkv + s.qkv_at(b, t, h) + d, acc[i] * s.scale);
    }
}

/* dK, dV for 8 keys. shared: Q tile, dO tile (bf16), k and v rows (fp32), lse and delta of the tile. */
template <int DPL>
__global__ void __launch_bounds__(FLASH_THREADS)
attention_dkv_flash_kernel(bf16 *dqkv, const bf16 *dout, const bf16 *qkv, const float *lse, const float *delta,
                           const int32_t *lens, attn_shape s) {
    extern __shared__ float sm[];
    int hd = s.hd, ts = tile_stride(hd);
    float *kr = sm, *vr = kr + FLASH_WARPS * hd, *lse_tile = vr + FLASH_WARPS * hd, *delta_tile = lse_tile + TILE;
    bf16 *qtile = reinterpret_cast<bf16 *>(delta_tile + TILE), *gtile = qtile + TILE * ts;
    int h = blockIdx.y, b = blockIdx.z;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int key_first = blockIdx.x * FLASH_WARPS, key = key_first + warp;
    int len = lens[b];
    int active = key < s.T;
    int visible = active && key < len; /* padding keys get zero gradients */
    float *k = kr + warp * hd, *v = vr + warp * hd;
    for (int d = lane; d < hd; d += 32) {
        k[d] = visible ? load1(qkv + s.qkv_at(b, key, h) + s.C + d) : 0.0f;
        v[d] = visible ? load1(qkv + s.qkv_at(b, key, h) + 2 * s.C + d) : 0.0f;
    }
    const bf16 *queries = qkv + s.qkv_at(b, 0, h), *grads = dout + s.out_at(b, 0, h);
    size_t qstride = 3 * (size_t)s.C, gstride = s.C;
    float dk[DPL], dv[DPL];
    for (int i = 0; i < DPL; i++) dk[i] = dv[i] = 0.0f;
    /* Queries before the block's first key see none of its keys; a block of padding keys has no work. */
    int t_end = key_first < len ? s.T : key_first;
    for (int t0 = key_first; t0 < t_end; t0 += TILE) {
        __syncthreads();
        load_tile(qtile, queries, qstride, t0, s.T, hd);
        load_tile(gtile, grads, gstride, t0, s.T, hd);
        if (threadIdx.x < TILE) {
            int t = t0 + threadIdx.x;
            lse_tile[threadIdx.x] = t < s.T ? lse[s.stat_at(b, h, t)] : 0.0f;
            delta_tile[threadIdx.x] = t < s.T ? delta[s.stat_at(b, h, t)] : 0.0f;
        }
        __syncthreads();
        int jlo = max(0, key - t0), jhi = min(TILE, s.T - t0); /* queries t0 + j with key <= t < T */
        if (!visible || jlo >= jhi) continue;
        float p = 0.0f, ds = 0.0f;
        if (lane >= jlo && lane < jhi) {
            float score = row_dot(k, qtile + lane * ts, hd) * s.scale;
            float dp = row_dot(v, gtile + lane * ts, hd);
            p = expf(score - lse_tile[lane]);
            ds = p * (dp - delta_tile[lane]);
        }
        for (int j = jlo; j < jhi; j++) {
            float pj = __shfl_sync(0xffffffffu, p, j), dsj = __shfl_sync(0xffffffffu, ds, j);
            for (int i = 0; i < DPL; i++) {
                int d = lane + 32 * i;
                if (d < hd) {
                    dv[i] += pj * __bfloat162float(gtile[j * ts + d]);
                    dk[i] += dsj * __bfloat162float(qtile[j * ts + d]);
                }
            }
        }
    }
    if (!active) return;
    for (int i = 0; i < DPL; i++) {
        int d = lane + 32 * i;
        if (d < hd) {
            store1(dqkv + s.qkv_at(b, key, h) + s.C + d, dk[i] * s.scale);
            store1(dqkv + s.qkv_at(b, key, h) + 2 * s.C + d, dv[i]);
        }
    }
}

/* ---- host side -------------------------------------------------------------------------------- */

#define SHARED_LIMIT (48 * 1024) /* what any block may use without opting in */

extern "C" int lcm_cuda_use_reference_attention(lcm_backend *be, lcm_error *err) {
    cuda_of(be)->attention = CUDA_ATTENTION_SIMPLE;
    return 0;
}

int cuda_set_attention(lcm_backend *be, lcm_attention choice, int head_dim, lcm_error *err) {
    cuda_backend *cb = cuda_of(be);
    cb->attention = CUDA_ATTENTION_FLASH;
    cb->attention_auto = 0;
    if (choice == LCM_ATTENTION_NATIVE) return 0;
    const int asked = choice == LCM_ATTENTION_CUDNN;
    char why[600] = "";
#if LCM_WITH_CUDNN
    const char *remedy = "";
    if (!LCM_CUDNN_HEAD_DIM_OK(head_dim)) {
        snprintf(why, sizeof why, "its fused attention takes head dims that are multiples of 8 up to 128, not %d",
                 head_dim);
    } else if (!cb->cudnn) {
        cuda_enter(cb, "set_attention");
        if (lcm_cudnn_create(&cb->cudnn, cb->gpu, cb->compute, why, sizeof why) != LCM_CUDNN_OK) cb->cudnn = NULL;
    }
    if (cb->cudnn && !why[0]) {
        char version[32];
        lcm_cudnn_version(version, sizeof version);
        cb->attention = CUDA_ATTENTION_CUDNN;
        cb->attention_auto = !asked;
        cb->attention_fallback_said = 0;
        lcm_info("GPU %d: attention by cuDNN %s (model.attention = %s)", cb->gpu, version, asked ? "cudnn" : "auto");
        return 0;
    }
#else
    const char *remedy = ", or rebuild lcm with cuDNN (tools/install-deps.sh --cudnn-frontend, then make)";
    snprintf(why, sizeof why, "this lcm was built without cuDNN (make says why: \"cuDNN attention off\")");
#endif
    if (asked)
        return lcm_fail(err, LCM_ERR_CONFIG, "model.attention = cudnn, but GPU %d cannot use cuDNN: %s; set "
                        "model.attention=auto or native%s", cb->gpu, why, remedy);
    lcm_info("GPU %d: attention by lcm's native kernels (model.attention = auto; no cuDNN: %s)", cb->gpu, why);
    return 0;
}

void cuda_attention_release(cuda_backend *cb) {
#if LCM_WITH_CUDNN
    lcm_cudnn_destroy(cb->cudnn);
    cb->cudnn = NULL;
#endif
}

#if LCM_WITH_CUDNN
/* cuDNN for rows of T positions: always under cudnn; under auto from LCM_CUDNN_AUTO_MIN_T on (the
 * memory plan counts the same shapes). */
static int cudnn_for(const cuda_backend *cb, int T) {
    return cb->attention == CUDA_ATTENTION_CUDNN && (!cb->attention_auto || T >= LCM_CUDNN_AUTO_MIN_T);
}

/* After a cuDNN call: 1 when it is done (it ran, or its failure is recorded), 0 when this shape must run on
 * the native kernels (auto, and cuDNN cannot take it; said once per backend). */
static int cudnn_done(cuda_backend *cb, const char *op, int rc, const char *why, int B, int T) {
    char msg[900];
    if (rc == LCM_CUDNN_OK) return 1;
    if (rc == LCM_CUDNN_UNSUPPORTED && cb->attention_auto) {
        if (!cb->attention_fallback_said)
            lcm_warn("GPU %d: cuDNN's fused attention cannot take %d rows of %d positions (%s): such shapes run on "
                     "the native kernels", cb->gpu, B, T, why);
        cb->attention_fallback_said = 1;
        return 0;
    }
    if (rc == LCM_CUDNN_UNSUPPORTED) {
        snprintf(msg, sizeof msg, "model.attention = cudnn, but cuDNN cannot take %d rows of %d positions (%s); set "
                 "model.attention=auto (native kernels for such shapes) or native", B, T, why);
        cuda_note_msg(cb, LCM_ERR_CONFIG, op, msg);
    } else {
        cuda_note_msg(cb, LCM_ERR_DEVICE, op, why);
    }
    return 1;
}
#endif

size_t cuda_attention_saved_floats(lcm_backend *be, int B, int T, int H) {
    return lcm_cuda_traits.attention_saved_floats(B, T, H);
}

/* Checks the shape; fills s. Returns 0 when there is nothing to do or the shape is refused (recorded). */
static int attention_shape(cuda_backend *cb, const char *op, attn_shape *s, int B, int T, int C, int H) {
    if (B <= 0 || T <= 0 || C <= 0 || H <= 0) return 0;
    if (C % H != 0) {
        cuda_note_msg(cb, LCM_ERR_INTERNAL, op, "the model dimension C is not a multiple of the number of heads H");
        return 0;
    }
    s->B = B;
    s->T = T;
    s->C = C;
    s->H = H;
    s->hd = C / H;
    s->scale = (float)(1.0 / sqrt((double)s->hd));
    if ((4 * (size_t)s->hd + 2 * TILE) * sizeof(float) > SHARED_LIMIT) {
        cuda_note_msg(cb, LCM_ERR_INTERNAL, op,
                      "the head dimension C/H is too large for the attention kernels (at most 3000)");
        return 0;
    }
    return 1;
}

/* Dims per lane of the flash kernels for this head dim; 0 when only the simple kernels handle it. */
static int flash_dpl(const cuda_backend *cb, int hd) {
    if (cb->attention == CUDA_ATTENTION_SIMPLE || hd % 2 != 0) return 0;
    if (hd <= 32) return 1;
    if (hd <= 64) return 2;
    if (hd <= 128) return 4;
    return 0;
}

static size_t flash_tile_bytes(int hd) { return (size_t)TILE * tile_stride(hd) * sizeof(bf16); }

void cuda_attention_forward(lcm_backend *be, void *out, float *saved, const void *qkv, const int32_t *lens, int B,
                            int T, int C, int H) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "attention_forward";
    cuda_enter(cb, op);
    attn_shape s;
    if (!attention_shape(cb, op, &s, B, T, C, H)) return;
#if LCM_WITH_CUDNN
    if (cudnn_for(cb, T)) {
        char why[600] = "";
        int rc = lcm_cudnn_attention_forward(cb->cudnn, out, saved, qkv, lens, B, T, C, H, why, sizeof why);
        if (cudnn_done(cb, op, rc, why, B, T)) return;
    }
#endif
    int dpl = flash_dpl(cb, s.hd);
    bf16 *o = (bf16 *)out;
    const bf16 *x = (const bf16 *)qkv;
    if (dpl) {
        dim3 grid((unsigned)((T + FLASH_WARPS - 1) / FLASH_WARPS), (unsigned)H, (unsigned)B);
        size_t smem = FLASH_WARPS * s.hd * sizeof(float) + 2 * flash_tile_bytes(s.hd);
        if (dpl == 1)
            attention_forward_flash_kernel<1><<<grid, FLASH_THREADS, smem, cb->compute>>>(o, saved, x, lens, s);
        else if (dpl == 2)
            attention_forward_flash_kernel<2><<<grid, FLASH_THREADS, smem, cb->compute>>>(o, saved, x, lens, s);
        else
            attention_forward_flash_kernel<4><<<grid, FLASH_THREADS, smem, cb->compute>>>(o, saved, x, lens, s);
    } else {
        dim3 grid((unsigned)T, (unsigned)H, (unsigned)B);
        size_t smem = (2 * (size_t)s.hd + TILE + 2) * sizeof(float);
        attention_forward_simple_kernel<<<grid, SIMPLE_THREADS, smem, cb->compute>>>(o, saved, x, lens, s);
    }
    cuda_check_launch(cb, op);
}

void cuda_attention_backward(lcm_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                             const float *saved, const int32_t *lens, int B, int T, int C, int H) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "attention_backward";
    cuda_enter(cb, op);
    attn_shape s;
    if (!attention_shape(cb, op, &s, B, T, C, H)) return;
#if LCM_WITH_CUDNN
    if (cudnn_for(cb, T)) {
        char why[600] = "";
        int rc = lcm_cudnn_attention_backward(cb->cudnn, dqkv, dout, qkv, out, saved, lens, B, T, C, H, why,
                                              sizeof why);
        if (cudnn_done(cb, op, rc, why, B, T)) return;
    }
#endif
    const float *lse = saved;
    /* The second half of the saved buffer is the backward's own: the forward leaves it alone. */
    float *delta = (float *)saved + (size_t)B * H * T;
    size_t warps = (size_t)B * T * H;
    const bf16 *g = (const bf16 *)dout, *x = (const bf16 *)qkv;
    attention_delta_kernel<<<grid_for(warps, 1, 8), 256, 0, cb->compute>>>(delta, g, (const bf16 *)out, s);
    if (cuda_check_launch(cb, op)) return;

    bf16 *dx = (bf16 *)dqkv;
    int dpl = flash_dpl(cb, s.hd);
    if (dpl) {
        dim3 grid((unsigned)((T + FLASH_WARPS - 1) / FLASH_WARPS), (unsigned)H, (unsigned)B);
        size_t rows = FLASH_WARPS * s.hd * sizeof(float);
        size_t smem_dq = 2 * rows + 2 * flash_tile_bytes(s.hd);
        size_t smem_kv = 2 * rows + 2 * TILE * sizeof(float) + 2 * flash_tile_bytes(s.hd);
        if (dpl == 1)
            attention_dq_flash_kernel<1><<<grid, FLASH_THREADS, smem_dq, cb->compute>>>(dx, g, x, lse, delta, lens, s);
        else if (dpl == 2)
            attention_dq_flash_kernel<2><<<grid, FLASH_THREADS, smem_dq, cb->compute>>>(dx, g, x, lse, delta, lens, s);
        else
            attention_dq_flash_kernel<4><<<grid, FLASH_THREADS, smem_dq, cb->compute>>>(dx, g, x, lse, delta, lens, s);
        if (cuda_check_launch(cb, op)) return;
        if (dpl == 1)
            attention_dkv_flash_kernel<1><<<grid, FLASH_THREADS, smem_kv, cb->compute>>>(dx, g, x, lse, delta, lens, s);
        else if (dpl == 2)
            attention_dkv_flash_kernel<2><<<grid, FLASH_THREADS, smem_kv, cb->compute>>>(dx, g, x, lse, delta, lens, s);
        else
            attention_dkv_flash_kernel<4><<<grid, FLASH_THREADS, smem_kv, cb->compute>>>(dx, g, x, lse, delta, lens, s);
    } else {
        dim3 grid((unsigned)T, (unsigned)H, (unsigned)B);
        size_t smem_dq = (3 * (size_t)s.hd + TILE) * sizeof(float);
        size_t smem_kv = (4 * (size_t)s.hd + 2 * TILE) * sizeof(float);
        attention_dq_simple_kernel<<<grid, SIMPLE_THREADS, smem_dq, cb->compute>>>(dx, g, x, lse, delta, lens, s);
        if (cuda_check_launch(cb, op)) return;
        attention_dkv_simple_kernel<<<grid, SIMPLE_THREADS, smem_kv, cb->compute>>>(dx, g, x, lse, delta, lens, s);
    }
    cuda_check_launch(cb, op);
}

/* ---- incremental inference: queries against the KV cache ------------------------------------------ */

/* kc/vc [B, Tcap, C] at positions pos0 + t <- the k/v parts of qkv [B, S, 3C]; one element per thread. */
__global__ void kv_store_kernel(bf16 *kc, bf16 *vc, const bf16 *qkv, int B, int S, int C, int pos0, int Tcap) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t n = (size_t)B * S * C;
    if (idx >= n) return;
    int c = (int)(idx % C);
    size_t row = idx / C; /* b * S + t */
    int b = (int)(row / S), t = (int)(row % S);
    size_t dst = ((size_t)b * Tcap + pos0 + t) * C + c;
    kc[dst] = qkv[row * 3 * C + C + c];
    vc[dst] = qkv[row * 3 * C + 2 * C + c];
}

void cuda_kv_store(lcm_backend *be, void *kc, void *vc, const void *qkv, int B, int S, int C, int pos0, int Tcap) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "kv_store";
    cuda_enter(cb, op);
    size_t n = (size_t)B * S * C;
    if (n == 0) return;
    kv_store_kernel<<<grid_for(n, 1, 256), 256, 0, cb->compute>>>((bf16 *)kc, (bf16 *)vc, (const bf16 *)qkv, B, S, C,
                                                                   pos0, Tcap);
    cuda_check_launch(cb, op);
}

/* One block per (query t, head h, row b), as the simple forward kernel: keys and values from the cache
 * (row stride C), online softmax in fp32, the output rounded to bf16 once. A generation step has S = 1,
 * so the grid is B x H blocks each walking pos0 + 1 keys. shared: q[hd], acc[hd], p[TILE], stat[2] */
__global__ void attention_cached_kernel(bf16 *out, const bf16 *qkv, const bf16 *kc, const bf16 *vc, int S, int C,
                                        int H, int pos0, int Tcap, float scale) {
    extern __shared__ float sm[];
    int hd = C / H;
    float *q = sm, *acc = q + hd, *p = acc + hd, *stat = p + TILE;
    int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    int tid = threadIdx.x, warp = tid / 32, nwarps = blockDim.x / 32;
    int nk = pos0 + t + 1;
    const bf16 *keys = kc + (size_t)b * Tcap * C + (size_t)h * hd;
    const bf16 *values = vc + (size_t)b * Tcap * C + (size_t)h * hd;
    const bf16 *qrow = qkv + ((size_t)b * S + t) * 3 * C + (size_t)h * hd;
    for (int d = tid; d < hd; d += blockDim.x) {
        q[d] = load1(qrow + d);
        acc[d] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f; /* kept by thread 0 */
    __syncthreads();
    for (int s0 = 0; s0 < nk; s0 += TILE) {
        int n = min(TILE, nk - s0);
        for (int j = warp; j < n; j += nwarps) {
            float dot = warp_dot(q, keys + (size_t)(s0 + j) * C, hd);
            if (tid % 32 == 0) p[j] = dot * scale;
        }
        __syncthreads();
        if (tid == 0) {
            float mt = m;
            for (int j = 0; j < n; j++) mt = fmaxf(mt, p[j]);
            float corr = expf(m - mt), sum = 0.0f;
            for (int j = 0; j < n; j++) {
                p[j] = expf(p[j] - mt);
                sum += p[j];
            }
            l = l * corr + sum;
            m = mt;
            stat[0] = corr;
        }
        __syncthreads();
        float corr = stat[0];
        for (int d = tid; d < hd; d += blockDim.x) {
            float a = acc[d] * corr;
            for (int j = 0; j < n; j++) a += p[j] * load1(values + (size_t)(s0 + j) * C + d);
            acc[d] = a;
        }
        __syncthreads();
    }
    if (tid == 0) stat[1] = l;
    __syncthreads();
    float inv_l = 1.0f / stat[1];
    bf16 *o = out + ((size_t)b * S + t) * C + (size_t)h * hd;
    for (int d = tid; d < hd; d += blockDim.x) store1(o + d, acc[d] * inv_l);
}

void cuda_attention_cached(lcm_backend *be, void *out, const void *qkv, const void *kc, const void *vc, int B, int S,
                           int C, int H, int pos0, int Tcap) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "attention_cached";
    cuda_enter(cb, op);
    if (B <= 0 || S <= 0) return;
    if (H <= 0 || C % H != 0 || pos0 + S > Tcap) {
        cuda_note_msg(cb, LCM_ERR_INTERNAL, op, "bad shape: C must divide by H and pos0 + S fit the cache");
        return;
    }
    int hd = C / H;
    dim3 grid((unsigned)S, (unsigned)H, (unsigned)B);
    size_t smem = (2 * (size_t)hd + TILE + 2) * sizeof(float);
    attention_cached_kernel<<<grid, SIMPLE_THREADS, smem, cb->compute>>>(
        (bf16 *)out, (const bf16 *)qkv, (const bf16 *)kc, (const bf16 *)vc, S, C, H, pos0, Tcap,
        (float)(1.0 / sqrt((double)hd)));
    cuda_check_launch(cb, op);
}
