/* cpu_swiglu.c: the FFN's gated activation, out = silu(gate) * inner with gi = gate | inner per row.
 *
 * sigmoid(g) = 1 / (1 + exp(-g)) needs no branch for safety in fp32: for large negative g, exp(-g)
 * overflows to inf and the sigmoid is exactly 0 (silu = -0); for large positive g it is exactly 1. */
#include <math.h>

#include "cpu_ops.h"

void cpu_swiglu_forward(float *restrict out, const float *restrict gi, int N, int F) {
    for (int n = 0; n < N; n++) {
        const float *gate = gi + (size_t)n * 2 * F;
        const float *inner = gate + F;
        float *o = out + (size_t)n * F;
        for (int i = 0; i < F; i++) {
            float g = gate[i];
            o[i] = g / (1.0f + expf(-g)) * inner[i];
        }
    }
}

/* silu'(g) = sig(g) (1 + g (1 - sig(g))). */
void cpu_swiglu_backward(float *restrict dgi, const float *restrict dout, const float *restrict gi, int N,
                         int F) {
    for (int n = 0; n < N; n++) {
        const float *gate = gi + (size_t)n * 2 * F;
        const float *inner = gate + F;
        const float *d = dout + (size_t)n * F;
        float *dgate = dgi + (size_t)n * 2 * F;
        float *dinner = dgate + F;
        for (int i = 0; i < F; i++) {
            float g = gate[i];
            float sig = 1.0f / (1.0f + expf(-g));
            dgate[i] = d[i] * inner[i] * sig * (1.0f + g * (1.0f - sig));
            dinner[i] = d[i] * g * sig;
        }
    }
}
