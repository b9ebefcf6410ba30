/* cpu_rope.c: rotary position embedding on q and k, GPT-J style: each head's interleaved pairs
 * (2i, 2i+1) are rotated by the angle of (t, i) in the model's table (include/lcm/rope.h), t = the
 * position within the row.
 *
 * The rotation is fp32 arithmetic on the table's fp32 cosine and sine, as the reference's complex64
 * product is. The loops run position-outermost so that one table entry serves every row and head at
 * that position. */
#include "cpu_ops.h"

/* Rotates the q and k pairs of every head at positions pos0 .. pos0+T-1 by +angle (sign 1) or -angle
 * (sign -1). */
static void rope_rotate(float *qkv, const float *rope, int B, int T, int C, int H, float sign, int pos0) {
    const int hd = C / H, half = hd / 2;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            const float *cs = rope + ((size_t)(pos0 + t) * half + i) * 2;
            const float c = cs[0], s = sign * cs[1];
            for (int b = 0; b < B; b++) {
                float *row = qkv + ((size_t)b * T + t) * 3 * C;
                for (int part = 0; part < 2; part++) { /* q, then k; v is not rotated */
                    for (int h = 0; h < H; h++) {
                        float *pair = row + part * C + h * hd + 2 * i;
                        const float x0 = pair[0], x1 = pair[1];
                        pair[0] = x0 * c - x1 * s;
                        pair[1] = x0 * s + x1 * c;
                    }
                }
            }
        }
    }
}

void cpu_rope_forward(float *qkv, const float *rope, int B, int T, int C, int H) {
    rope_rotate(qkv, rope, B, T, C, H, 1.0f, 0);
}

/* The rotation is orthogonal: its transpose (the gradient map) is the rotation by -angle. */
void cpu_rope_backward(float *dqkv, const float *rope, int B, int T, int C, int H) {
    rope_rotate(dqkv, rope, B, T, C, H, -1.0f, 0);
}

void cpu_rope_forward_at(float *qkv, const float *rope, int B, int T, int C, int H, int pos0) {
    rope_rotate(qkv, rope, B, T, C, H, 1.0f, pos0);
}
