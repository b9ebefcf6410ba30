/* philox.h: the counter-based random generator (Philox4x32-10, Salmon et al. 2011), the same code on
 * the host and in CUDA kernels, so every backend draws identical numbers for identical counters.
 *
 * Used for parameter initialisation (a stream keyed by the seed) and for residual-dropout masks, which
 * are a pure function of (seed, step, micro-batch of the step, layer, site, element): no generator
 * state to save, any backend or device reproduces any mask, and a resumed run draws the same masks. */
#ifndef LCM_PHILOX_H
#define LCM_PHILOX_H

#include <stdint.h>

#if defined(__CUDACC__)
#define LCM_HD __host__ __device__ __forceinline__
#else
#define LCM_HD static inline
#endif

typedef struct lcm_u32x4 { uint32_t v[4]; } lcm_u32x4;

LCM_HD void lcm_philox_mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

/* Ten rounds of Philox4x32 on counter c with 64-bit key k. */
LCM_HD lcm_u32x4 lcm_philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint64_t key) {
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, lo0, hi1, lo1;
        lcm_philox_mulhilo(0xD2511F53u, c0, &hi0, &lo0);
        lcm_philox_mulhilo(0xCD9E8D57u, c2, &hi1, &lo1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    lcm_u32x4 out;
    out.v[0] = c0; out.v[1] = c1; out.v[2] = c2; out.v[3] = c3;
    return out;
}

/* A uniform float in [0, 1) from 24 random bits (exact in fp32). */
LCM_HD float lcm_u32_to_unit(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

/* ---- residual dropout ------------------------------------------------------------------------ */

/* Which mask: everything but the element index. `microbatch` is the micro-batch's index within the
 * global step (0 .. devices*grad_accum-1), identical however the step is split over devices, so a run
 * on 1, 2 or 4 devices draws the same masks for the same rows. `site` is 0 after attention, 1 after FFN. */
typedef struct lcm_dropout_key {
    uint64_t seed;
    uint32_t step;
    uint32_t microbatch;
    uint32_t layer;
    uint32_t site;
} lcm_dropout_key;

/* Integer threshold: an element is dropped when its 32 random bits are < threshold. p = 0 drops none. */
LCM_HD uint32_t lcm_dropout_threshold(float p) {
    double t = (double)p * 4294967296.0;
    return t >= 4294967295.0 ? 0xffffffffu : (uint32_t)t;
}

/* 1 if element `idx` (row-major index into the micro-batch's [B, T, C] activation) is kept. */
LCM_HD int lcm_dropout_keep(lcm_dropout_key k, uint64_t idx, uint32_t threshold) {
    lcm_u32x4 r = lcm_philox4x32((uint32_t)(idx >> 2), (uint32_t)(idx >> 34) | (k.site << 30),
                                 k.step, (k.microbatch << 8) | (k.layer & 0xffu), k.seed);
    return r.v[idx & 3] >= threshold;
}

/* ---- a sequential stream for initialisation --------------------------------------------------- */

typedef struct lcm_rng {
    uint64_t key;
    uint64_t counter; /* blocks of 4 numbers drawn so far */
    uint32_t buf[4];
    int left;         /* unread numbers in buf */
} lcm_rng;

LCM_HD void lcm_rng_init(lcm_rng *r, uint64_t seed, uint64_t stream) {
    r->key = seed ^ (stream * 0x9E3779B97F4A7C15ull);
    r->counter = 0;
    r->left = 0;
}

LCM_HD uint32_t lcm_rng_u32(lcm_rng *r) {
    if (r->left == 0) {
        lcm_u32x4 x = lcm_philox4x32((uint32_t)r->counter, (uint32_t)(r->counter >> 32), 0x4c434d31u, 0u, r->key);
        r->buf[0] = x.v[0]; r->buf[1] = x.v[1]; r->buf[2] = x.v[2]; r->buf[3] = x.v[3];
        r->counter++;
        r->left = 4;
    }
    return r->buf[4 - r->left--];
}

/* Uniform in [0, 1). */
LCM_HD float lcm_rng_uniform(lcm_rng *r) { return lcm_u32_to_unit(lcm_rng_u32(r)); }

/* Uniform 64-bit integer. */
LCM_HD uint64_t lcm_rng_u64(lcm_rng *r) {
    uint64_t hi = lcm_rng_u32(r);
    return (hi << 32) | lcm_rng_u32(r);
}

#endif
