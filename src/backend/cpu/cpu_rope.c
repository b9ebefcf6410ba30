/* cpu_rope.c: rotary position embedding on q and k, GPT-J style: each head's interleaved pairs
 * (2i, 2i+1) are rotated by angle t * theta^(-2i/hd), t = the position within the row.
 *
 * The angle, its cosine and sine and the rotation itself are computed in double and rounded to fp32
 * once, so the result is (nearly always) the correctly rounded rotation, whatever t. The loops run
 * position-outermost so that one sin/cos pair serves every row and head at that position. */
#include <math.h>

#include "cpu_ops.h"

/* Rotates the q and k pairs of every head at positions pos0 .. pos0+T-1 by +angle (sign 1) or -angle
 * (sign -1). */
static void rope_rotate(float *qkv, int B, int T, int C, int H, float theta, double sign, int pos0) {
    int hd = C / H;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < hd / 2; i++) {
            double angle = (double)(pos0 + t) * pow((double)theta, -2.0 * i / hd);
            double c = cos(angle), s = sign * sin(angle);
            for (int b = 0; b < B; b++) {
                float *row = qkv + ((size_t)b * T + t) * 3 * C;
                for (int part = 0; part < 2; part++) { /* q, then k; v is not rotated */
                    for (int h = 0; h < H; h++) {
                        float *pair = row + part * C + h * hd + 2 * i;
                        double x0 = pair[0], x1 = pair[1];
                        pair[0] = (float)(x0 * c - x1 * s);
                        pair[1] = (float)(x0 * s + x1 * c);
                    }
                }
            }
        }
    }
}

void cpu_rope_forward(float *qkv, int B, int T, int C, int H, float theta) {
    rope_rotate(qkv, B, T, C, H, theta, 1.0, 0);
}

/* The rotation is orthogonal: its transpose (the gradient map) is the rotation by -angle. */
void cpu_rope_backward(float *dqkv, int B, int T, int C, int H, float theta) {
    rope_rotate(dqkv, B, T, C, H, theta, -1.0, 0);
}

void cpu_rope_forward_at(float *qkv, int B, int T, int C, int H, float theta, int pos0) {
    rope_rotate(qkv, B, T, C, H, theta, 1.0, pos0);
}
