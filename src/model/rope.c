/* rope.c: the RoPE angle table (include/lcm/rope.h).
 *
 * fairseq2 builds its table in fp32: indices 2i as fp32, divided by hd, 10000 ** that, 1 / that, times
 * the position, then torch.polar in fp32. Each step here is the same fp32 operation (one IEEE rounding
 * each under -std=c11, which contracts nothing into an FMA; powf is correctly rounded in nearly all
 * cases), so the angle is the reference's angle: at position 4000 it differs from the exact angle by
 * up to half an fp32 ulp of 4000 (1.2e-4 rad), and that difference is part of the model the reference
 * trained. The cosine and sine of that fp32 angle
 * are evaluated in double and rounded once: the correctly rounded value torch's fp32 sin/cos aim at.
 * This runs once per model on the host; no kernel computes an angle. */
#include <math.h>

#include "lcm/rope.h"

void lcm_rope_table(float *cs, int T, int hd, float theta) {
    const int half = hd / 2;
    for (int i = 0; i < half; i++) {
        const float e = (float)(2 * i) / (float)hd;
        const float inv = 1.0f / powf(theta, e);
        for (int t = 0; t < T; t++) {
            const float a = (float)t * inv;
            float *p = cs + ((size_t)t * half + i) * 2;
            p[0] = (float)cos((double)a);
            p[1] = (float)sin((double)a);
        }
    }
}
