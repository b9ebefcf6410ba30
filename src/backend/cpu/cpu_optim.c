/* cpu_optim.c: what the optimizer step needs from the backend: the squared gradient norm, the clipping
 * scale, and AdamW (PyTorch's semantics: decoupled weight decay, bias-corrected moments). */
#include <math.h>

#include "cpu_ops.h"

/* Sequential double accumulation: the same inputs give the same bits, on any thread count. */
double cpu_sumsq(const float *x, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

void cpu_scale(float *x, float s, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

/* PyTorch's AdamW step, element by element:
 *   p *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *   p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps),  bc_i = 1 - b_i^step,  g = grad * grad_scale.
 * The per-step scalars are computed in double and rounded once, as PyTorch does on the host. */
void cpu_adamw(float *restrict master, const float *restrict grad, float *restrict m, float *restrict v,
               size_t n, const lcm_adamw_args *a) {
    double bc1 = 1.0 - pow((double)a->beta1, (double)a->step);
    double bc2 = 1.0 - pow((double)a->beta2, (double)a->step);
    float decay = (float)(1.0 - (double)a->lr * a->weight_decay);
    float step_size = (float)(a->lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float b1 = a->beta1, b2 = a->beta2, eps = a->eps, gs = a->grad_scale;
    float one_minus_b1 = (float)(1.0 - b1), one_minus_b2 = (float)(1.0 - b2);
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * gs;
        float mi = b1 * m[i] + one_minus_b1 * g;
        float vi = b2 * v[i] + one_minus_b2 * g * g;
        m[i] = mi;
        v[i] = vi;
        float decayed = master[i] * decay;
        master[i] = decayed - step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
    }
}
