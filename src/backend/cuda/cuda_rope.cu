/* cuda_rope.cu: rotary position embedding on the q and k parts of qkv [B, T, 3C], in place, forward and
 * backward (the inverse rotation). Interleaved pairs (2i, 2i+1) of each head rotate by the angle of
 * (t, i), t the position in the row (from pos0 for incremental inference). The cosine and sine come
 * from the model's fp32 table (include/lcm/rope.h), built once on the host exactly as the CPU backend
 * reads it: no angle, power or sine is computed here, so no fp64 unit is touched (1/64 rate on
 * consumer GPUs). */
#include "cuda_backend.cuh"
#include "cuda_kernels.cuh"

/* One thread per (row, head, pair): it rotates the pair in q and the same pair in k. */
__global__ void rope_kernel(bf16 *qkv, const float *rope, int B, int T, int C, int H, int inverse, int pos0) {
    int hd = C / H, half = hd / 2;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * H * half) return;
    int i = (int)(idx % half);
    size_t rest = idx / half;
    int h = (int)(rest % H);
    size_t row = rest / H; /* b * T + t */
    int t = pos0 + (int)(row % T);
    const float *cs = rope + ((size_t)t * half + i) * 2;
    float cf = cs[0], sf = inverse ? -cs[1] : cs[1];
    bf16 *q = qkv + row * 3 * (size_t)C + (size_t)h * hd + 2 * i;
    bf16 *k = q + C;
    float q0 = load1(q), q1 = load1(q + 1), k0 = load1(k), k1 = load1(k + 1);
    store1(q, q0 * cf - q1 * sf);
    store1(q + 1, q0 * sf + q1 * cf);
    store1(k, k0 * cf - k1 * sf);
    store1(k + 1, k0 * sf + k1 * cf);
}

static void rope(lcm_backend *be, const char *op, void *qkv, const float *table, int B, int T, int C, int H,
                 int inverse, int pos0) {
    cuda_backend *cb = cuda_of(be);
    cuda_enter(cb, op);
    if (B <= 0 || T <= 0 || C <= 0 || H <= 0) return;
    if (C % H != 0 || (C / H) % 2 != 0) {
        cuda_note_msg(cb, LCM_ERR_INTERNAL, op, "the head dimension C/H must be a whole, even number");
        return;
    }
    size_t pairs = (size_t)B * T * H * (C / H / 2);
    rope_kernel<<<grid_for(pairs, 1, 256), 256, 0, cb->compute>>>((bf16 *)qkv, table, B, T, C, H, inverse, pos0);
    cuda_check_launch(cb, op);
}

void cuda_rope_forward(lcm_backend *be, void *qkv, const float *table, int B, int T, int C, int H) {
    rope(be, "rope_forward", qkv, table, B, T, C, H, 0, 0);
}

void cuda_rope_backward(lcm_backend *be, void *dqkv, const float *table, int B, int T, int C, int H) {
    rope(be, "rope_backward", dqkv, table, B, T, C, H, 1, 0);
}

void cuda_rope_forward_at(lcm_backend *be, void *qkv, const float *table, int B, int S, int C, int H, int pos0) {
    rope(be, "rope_forward_at", qkv, table, B, S, C, H, 0, pos0);
}
