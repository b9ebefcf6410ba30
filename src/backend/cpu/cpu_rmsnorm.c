/* cpu_rmsnorm.c: RMSNorm, out = x / sqrt(mean(x^2) + eps) * gain (no bias, no mean subtraction).
 * The row sums are accumulated in double: fp32 statistics are what the reference asks for, and the
 * double sum makes them the correctly rounded fp32 value rather than an order-dependent one. */
#include <math.h>

#include "cpu_ops.h"

void cpu_rmsnorm_forward(float *restrict out, float *restrict rstd, const float *restrict inp,
                         const float *restrict gain, int N, int C, float eps) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
        float r = (float)(1.0 / sqrt(ss / C + (double)eps));
        rstd[n] = r;
        for (int i = 0; i < C; i++) o[i] = x[i] * r * gain[i];
    }
}

/* With r = (mean(x^2) + eps)^(-1/2) and y_i = x_i r g_i:
 *   dL/dx_j = r g_j dy_j - x_j r^3 / C * sum_i dy_i g_i x_i,   dL/dg_i = sum_n dy_i x_i r. */
void cpu_rmsnorm_backward(float *restrict dinp, float *restrict dgain, const float *restrict dout,
                          const float *restrict inp, const float *restrict gain, const float *restrict rstd,
                          int N, int C, int accumulate) {
    if (!accumulate)
        for (int i = 0; i < C; i++) dgain[i] = 0.0f;
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        const float *dy = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float r = rstd[n];
        double dot = 0.0;
        for (int i = 0; i < C; i++) dot += (double)dy[i] * gain[i] * x[i];
        float coef = (float)(dot * r * r * r / C);
        for (int i = 0; i < C; i++) {
            dx[i] += r * gain[i] * dy[i] - x[i] * coef;
            dgain[i] += dy[i] * x[i] * r;
        }
    }
}
