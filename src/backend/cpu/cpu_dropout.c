/* cpu_dropout.c: residual dropout, h_out = h_in + mask(branch) / (1 - p), and its backward.
 *
 * The mask is lcm_dropout_keep's (include/lcm/philox.h), a pure function of the key and the element
 * index. lcm_dropout_keep draws one Philox block of four numbers and uses one of them; elements
 * 4g .. 4g+3 share that block, so here one Philox call serves four elements. dropout_bits4 repeats
 * lcm_dropout_keep's counter layout for that reason; test_cpu_ops checks the two masks agree. */
#include "cpu_ops.h"

/* The random words of elements 4 * group .. 4 * group + 3, exactly as lcm_dropout_keep draws them. */
static lcm_u32x4 dropout_bits4(lcm_dropout_key k, uint64_t group) {
    return lcm_philox4x32((uint32_t)group, (uint32_t)(group >> 32) | (k.site << 30), k.step,
                          (k.microbatch << 8) | (k.layer & 0xffu), k.seed);
}

void cpu_dropout_add(float *h_out, const float *h_in, const float *branch, size_t n, float p,
                     lcm_dropout_key key) {
    if (p == 0.0f) {
        for (size_t i = 0; i < n; i++) h_out[i] = h_in[i] + branch[i];
        return;
    }
    uint32_t threshold = lcm_dropout_threshold(p);
    float keep_scale = 1.0f / (1.0f - p);
    for (size_t g = 0; g * 4 < n; g++) {
        lcm_u32x4 r = dropout_bits4(key, g);
        for (size_t j = 0, i = g * 4; j < 4 && i < n; j++, i++)
            h_out[i] = r.v[j] >= threshold ? h_in[i] + branch[i] * keep_scale : h_in[i];
    }
}

void cpu_dropout_backward(float *restrict dbranch, const float *restrict dh, size_t n, float p,
                          lcm_dropout_key key) {
    if (p == 0.0f) {
        for (size_t i = 0; i < n; i++) dbranch[i] = dh[i];
        return;
    }
    uint32_t threshold = lcm_dropout_threshold(p);
    float keep_scale = 1.0f / (1.0f - p);
    for (size_t g = 0; g * 4 < n; g++) {
        lcm_u32x4 r = dropout_bits4(key, g);
        for (size_t j = 0, i = g * 4; j < 4 && i < n; j++, i++)
            dbranch[i] = r.v[j] >= threshold ? dh[i] * keep_scale : 0.0f;
    }
}
