/* cpu_loss.c: the SONAR normalizer applied to the input batch, and the masked next-concept squared
 * error. Both normalize with the same fp32 expression (x - center) / scale, so a target is bit-for-bit
 * the normalized input the model saw at that position. */
#include "cpu_ops.h"

void cpu_normalize(float *restrict xn, const float *restrict x, const float *restrict center,
                   const float *restrict scale, int N, int D) {
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * D;
        float *out = xn + (size_t)n * D;
        for (int i = 0; i < D; i++) out[i] = (xr[i] - center[i]) / scale[i];
    }
}

void cpu_mse_loss(float *dy, float *loss_sum, const float *y, const float *restrict x,
                  const float *restrict center, const float *restrict scale, const int32_t *lens, int B,
                  int T, int D, float grad_scale) {
    double sum = 0.0;
    for (int b = 0; b < B; b++) {
        int targets = lens[b] - 1; /* position t predicts t + 1; the last real position has no target */
        for (int t = 0; t < T; t++) {
            size_t row = ((size_t)b * T + t) * D;
            float *dyr = dy + row;
            if (t >= targets) {
                for (int i = 0; i < D; i++) dyr[i] = 0.0f;
                continue;
            }
            const float *yr = y + row;
            const float *next = x + row + D;
            for (int i = 0; i < D; i++) {
                float d = yr[i] - (next[i] - center[i]) / scale[i];
                sum += (double)d * d;
                dyr[i] = 2.0f * d * grad_scale;
            }
        }
    }
    *loss_sum = (float)sum;
}
