/* cuda_rope.cu: rotary position embedding on the q and k parts of qkv [B, T, 3C], in place, forward and
 * backward (the inverse rotation). Interleaved pairs (2i, 2i+1) of each head rotate by the angle
 * t * theta^(-2i/hd), t the position in the row (from pos0 for incremental inference). The angle is computed in double (pow and sincos are
 * accurate to an ulp there), so positions in the thousands lose nothing before the bf16 rounding. */
#include "cuda_backend.cuh"
#include "cuda_kernels.cuh"

/* One thread per (row, head, pair): it rotates the pair in q and the same pair in k. */
__global__ void rope_kernel(bf16 *qkv, int B, int T, int C, int H, float theta, int inverse, int pos0) {
    int hd = C / H, half = hd / 2;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * H * half) return;
    int i = (int)(idx % half);
    size_t rest = idx / half;
    int h = (int)(rest % H);
    size_t row = rest / H; /* b * T + t */
    int t = pos0 + (int)(row % T);
    double inv_freq = pow((double)theta, -2.0 * i / hd);
    double s, c;
    sincos((double)t * inv_freq, &s, &c);
    float cf = (float)c, sf = inverse ? -(float)s : (float)s;
    bf16 *q = qkv + row * 3 * (size_t)C + (size_t)h * hd + 2 * i;
    bf16 *k = q + C;
    float q0 = load1(q), q1 = load1(q + 1), k0 = load1(k), k1 = load1(k + 1);
    store1(q, q0 * cf - q1 * sf);
    store1(q + 1, q0 * sf + q1 * cf);
    store1(k, k0 * cf - k1 * sf);
    store1(k + 1, k0 * sf + k1 * cf);
}

static void rope(lcm_backend *be, const char *op, void *qkv, int B, int T, int C, int H, float theta, int inverse,
                 int pos0) {
    cuda_backend *cb = cuda_of(be);
    cuda_enter(cb, op);
    if (B <= 0 || T <= 0 || C <= 0 || H <= 0) return;
    if (C % H != 0 || (C / H) % 2 != 0) {
        cuda_note_msg(cb, LCM_ERR_INTERNAL, op, "the head dimension C/H must be a whole, even number");
        return;
    }
    size_t pairs = (size_t)B * T * H * (C / H / 2);
    rope_kernel<<<grid_for(pairs, 1, 256), 256, 0, cb->compute>>>((bf16 *)qkv, B, T, C, H, theta, inverse, pos0);
    cuda_check_launch(cb, op);
}

void cuda_rope_forward(lcm_backend *be, void *qkv, int B, int T, int C, int H, float theta) {
    rope(be, "rope_forward", qkv, B, T, C, H, theta, 0, 0);
}

void cuda_rope_backward(lcm_backend *be, void *dqkv, int B, int T, int C, int H, float theta) {
    rope(be, "rope_backward", dqkv, B, T, C, H, theta, 1, 0);
}

void cuda_rope_forward_at(lcm_backend *be, void *qkv, int B, int S, int C, int H, float theta, int pos0) {
    rope(be, "rope_forward_at", qkv, B, S, C, H, theta, 0, pos0);
}
