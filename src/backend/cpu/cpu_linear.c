/* cpu_linear.c: the fully connected layer, out = inp @ w^T + bias with w in PyTorch's [out, in] layout,
 * through OpenBLAS's sgemm. */
#include <cblas.h>

#include "cpu_ops.h"

void cpu_linear_forward(float *restrict out, const float *restrict inp, const float *restrict w,
                        const float *restrict bias, int N, int IC, int OC) {
    /* Seed every row with the bias and let sgemm accumulate onto it (beta = 1): one pass fewer than
     * adding the bias afterwards. */
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * OC;
        for (int j = 0; j < OC; j++) o[j] = bias[j];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, w, IC, 1.0f, out, OC);
}

void cpu_linear_backward(float *restrict dinp, float *restrict dw, float *restrict dbias,
                         const float *restrict dout, const float *restrict inp, const float *restrict w,
                         int N, int IC, int OC, int accumulate) {
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1.0f, dout, OC, w, IC, 0.0f,
                    dinp, IC);
    /* beta = 0 ignores dw's old contents (NaN included), as a zeroed buffer plus beta = 1 would. */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1.0f, dout, OC, inp, IC,
                accumulate ? 1.0f : 0.0f, dw, IC);
    /* Column sums in double over strips of columns, added to dbias once: one rounding per element
     * whatever N, while each row still reads contiguous memory. */
    enum { STRIP = 64 };
    for (int o0 = 0; o0 < OC; o0 += STRIP) {
        int width = OC - o0 < STRIP ? OC - o0 : STRIP;
        double acc[STRIP] = {0};
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * OC + o0;
            for (int j = 0; j < width; j++) acc[j] += d[j];
        }
        for (int j = 0; j < width; j++) dbias[o0 + j] = (accumulate ? dbias[o0 + j] : 0.0f) + (float)acc[j];
    }
}
