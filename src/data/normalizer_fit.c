/* normalizer_fit.c: fitting the SONAR normalizer on a dataset. Fitting follows the reference
 * implementation's default ("gaussian_robust", sklearn's RobustScaler with unit_variance): center =
 * per-dimension median, scale = per-dimension interquartile range / 1.349 (1.349 = the IQR of a
 * standard normal, so for Gaussian data the scale is the standard deviation), from a uniform sample.
 * Quantiles are numpy's default ("linear": the order statistics at floor and ceil of q * (m - 1),
 * interpolated), found by counting for f16/bf16 data and by selection for f32, never by sorting.
 * The normalizer itself (type, file, resolving model.normalizer) is src/io/normalizer.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/dataset.h"
#include "lcm/half.h"
#include "lcm/philox.h"

/* The interquartile range of the standard normal distribution: Phi^-1(0.75) - Phi^-1(0.25). */
#define NORMAL_IQR 1.3489795003921634

/* Dimensions are gathered a block at a time: each sampled concept contributes a short contiguous
 * run, and the gathered values go to only FIT_BLOCK_DIMS output streams, which keeps both sides in
 * cache (a whole 1024-dim row scattered to 1024 streams was 10x slower). The block's values must also
 * fit in FIT_BUDGET_BYTES. */
#define FIT_BLOCK_DIMS 64
#define FIT_PREFETCH 16
#define FIT_BUDGET_BYTES ((size_t)256 << 20)

/* Hoare quickselect: afterwards a[k] is the k-th smallest of a[lo..hi], everything before it is <= and
 * everything after it is >=. */
static void select_kth(float *a, int64_t lo, int64_t hi, int64_t k) {
    while (hi > lo) {
        int64_t mid = lo + (hi - lo) / 2;
        float t;
        if (a[mid] < a[lo]) { t = a[mid]; a[mid] = a[lo]; a[lo] = t; }
        if (a[hi] < a[lo]) { t = a[hi]; a[hi] = a[lo]; a[lo] = t; }
        if (a[hi] < a[mid]) { t = a[hi]; a[hi] = a[mid]; a[mid] = t; }
        float pivot = a[mid];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                t = a[i]; a[i] = a[j]; a[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return;
    }
}

static float min_of(const float *a, int64_t lo, int64_t hi) {
    float m = a[lo];
    for (int64_t i = lo + 1; i <= hi; i++) m = a[i] < m ? a[i] : m;
    return m;
}

/* Quantile q of a[0..m-1] (numpy "linear"); a[lo..hi] must contain the order statistic it needs, with
 * everything before lo smaller and everything after hi larger. Reorders a. */
static double quantile(float *a, int64_t m, double q, int64_t lo, int64_t hi) {
    double pos = q * (double)(m - 1);
    int64_t k = (int64_t)floor(pos);
    double frac = pos - (double)k;
    select_kth(a, lo, hi, k);
    double v = a[k];
    if (frac > 0 && k + 1 < m) v += frac * ((double)min_of(a, k + 1, m - 1) - v);
    return v;
}

static int cmp_u64(const void *x, const void *y) {
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

/* Order statistics of 16-bit data by counting: a histogram over the 65536 bit patterns, mapped to keys
 * that sort like the values they encode (for f16 and bf16 alike: flip all bits of negatives, set the
 * sign bit of positives). Linear in m and branch-free, where selection on fp32 copies is not. */
static uint16_t ordered_key(uint16_t h) { return (h & 0x8000u) ? (uint16_t)~h : (uint16_t)(h | 0x8000u); }

static float key_value(uint16_t key, lcm_dtype dt) {
    uint16_t h = (key & 0x8000u) ? (uint16_t)(key & 0x7fffu) : (uint16_t)~key;
    return dt == LCM_F16 ? lcm_f16_to_f32(h) : lcm_bf16_to_f32(h);
}

/* The quantiles q[0..2] (numpy "linear") of m keys. hist: 65536 counters, zero on entry and on return
 * (cleared through the keys, and only the range of keys present is scanned: embeddings occupy a small
 * part of the 16-bit patterns, so small samples do not pay for all 65536). */
static void key_quantiles(const uint16_t *keys, uint64_t m, lcm_dtype dt, uint32_t *hist, const double *q, double *out) {
    uint32_t lo = 0xffffu, hi = 0;
    for (uint64_t j = 0; j < m; j++) {
        hist[keys[j]]++;
        lo = keys[j] < lo ? keys[j] : lo;
        hi = keys[j] > hi ? keys[j] : hi;
    }
    /* Ranks wanted: floor(q (m - 1)) and the next one, for each q. */
    uint64_t rank[6];
    double val[6];
    for (int i = 0; i < 3; i++) {
        rank[2 * i] = (uint64_t)floor(q[i] * (double)(m - 1));
        rank[2 * i + 1] = rank[2 * i] + 1 < m ? rank[2 * i] + 1 : rank[2 * i];
    }
    /* Visit the six ranks in ascending order (for tiny m they repeat and interleave). */
    int order[6] = {0, 1, 2, 3, 4, 5};
    for (int i = 1; i < 6; i++)
        for (int j = i; j > 0 && rank[order[j]] < rank[order[j - 1]]; j--) {
            int tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    uint64_t below = 0;
    int t = 0;
    for (uint32_t key = lo; key <= hi && t < 6; key++) {
        below += hist[key];
        while (t < 6 && rank[order[t]] < below) val[order[t++]] = key_value((uint16_t)key, dt);
    }
    for (uint64_t j = 0; j < m; j++) hist[keys[j]] = 0;
    for (int i = 0; i < 3; i++) {
        double pos = q[i] * (double)(m - 1), frac = pos - floor(pos);
        out[i] = val[2 * i] + (frac > 0 ? frac * (val[2 * i + 1] - val[2 * i]) : 0.0);
    }
}

/* The same three quantiles of fp32 values by selection (reorders a). */
static void float_quantiles(float *a, uint64_t m, double *out) {
    int64_t mm = (int64_t)m;
    /* The median first; the quartiles then lie on its two sides, selected in disjoint ranges so that
     * neither selection disturbs the other's. */
    int64_t kmed = (int64_t)floor(0.5 * (double)(mm - 1));
    int64_t k1 = (int64_t)floor(0.25 * (double)(mm - 1)), k3 = (int64_t)floor(0.75 * (double)(mm - 1));
    out[1] = quantile(a, mm, 0.5, 0, mm - 1);
    out[2] = quantile(a, mm, 0.75, k3 > kmed ? kmed + 1 : kmed, mm - 1);
    out[0] = quantile(a, mm, 0.25, 0, k1 < kmed ? kmed - 1 : kmed);
}

int lcm_normalizer_fit(lcm_normalizer *n, const lcm_dataset *ds, uint64_t max_samples, uint64_t seed, lcm_error *err) {
    memset(n, 0, sizeof *n);
    uint64_t m = (max_samples == 0 || max_samples >= ds->n_concepts) ? ds->n_concepts : max_samples;
    int dim = ds->dim;
    uint64_t *idx = NULL;
    if (m < ds->n_concepts) {
        /* Uniform with replacement, sorted so that the mapping is read front to back. */
        idx = malloc((size_t)m * sizeof *idx);
        if (!idx) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory sampling %llu concepts", (unsigned long long)m);
        lcm_rng r;
        lcm_rng_init(&r, seed, 0x6e6f726dull);
        for (uint64_t i = 0; i < m; i++) idx[i] = lcm_rng_u64(&r) % ds->n_concepts;
        qsort(idx, (size_t)m, sizeof *idx, cmp_u64);
    }
    int half = ds->dtype != LCM_F32;
    size_t elem = lcm_dtype_size(ds->dtype);
    size_t block = FIT_BUDGET_BYTES / ((size_t)m * elem);
    if (block > FIT_BLOCK_DIMS) block = FIT_BLOCK_DIMS;
    if (block < 1) block = 1;
    if (block > (size_t)dim) block = (size_t)dim;
    void *vals = malloc(block * (size_t)m * elem);
    uint32_t *hist = half ? calloc(65536, sizeof *hist) : NULL;
    int rc = 0;
    if (!vals || (half && !hist))
        rc = lcm_fail(err, LCM_ERR_NOMEM, "out of memory fitting the normalizer (%zu x %llu values)", block,
                      (unsigned long long)m);
    if (rc == 0) rc = lcm_normalizer_alloc(n, dim, err);
    uint32_t exp_mask = ds->dtype == LCM_F32 ? 0x7f800000u : ds->dtype == LCM_F16 ? 0x7c00u : 0x7f80u;
    static const double qs[3] = {0.25, 0.5, 0.75};
    for (size_t d0 = 0; rc == 0 && d0 < (size_t)dim; d0 += block) {
        size_t nb = (size_t)dim - d0 < block ? (size_t)dim - d0 : block;
        for (uint64_t j = 0; j < m && rc == 0; j++) {
            uint64_t c = idx ? idx[j] : j;
            const uint8_t *row = ds->payload + (c * (uint64_t)dim + d0) * elem;
            if (j + FIT_PREFETCH < m) {
                /* Rows are dim * elem bytes apart: too far for the hardware prefetcher to follow. */
                uint64_t cn = idx ? idx[j + FIT_PREFETCH] : j + FIT_PREFETCH;
                const uint8_t *next = ds->payload + (cn * (uint64_t)dim + d0) * elem;
                for (size_t b = 0; b < nb * elem; b += 64) __builtin_prefetch(next + b);
            }
            for (size_t d = 0; d < nb; d++) {
                uint32_t bits;
                if (half) {
                    uint16_t h = ((const uint16_t *)row)[d];
                    bits = h;
                    ((uint16_t *)vals)[d * m + j] = ordered_key(h);
                } else {
                    memcpy(&bits, row + 4 * d, 4);
                    memcpy((float *)vals + d * m + j, &bits, 4);
                }
                if ((bits & exp_mask) == exp_mask) {
                    rc = lcm_fail(err, LCM_ERR_DATA,
                                  "%s: concept %llu, dimension %zu is not finite; run `lcm data inspect` to find the "
                                  "document, and re-create the dataset",
                                  ds->path, (unsigned long long)c, d0 + d);
                    break;
                }
            }
        }
        for (size_t d = 0; rc == 0 && d < nb; d++) {
            double q[3];
            if (half) key_quantiles((uint16_t *)vals + d * m, m, ds->dtype, hist, qs, q);
            else float_quantiles((float *)vals + d * m, m, q);
            double scale = (q[2] - q[0]) / NORMAL_IQR;
            n->center[d0 + d] = (float)q[1];
            /* A constant dimension has no spread; 1 leaves it centred at 0 instead of dividing by 0. */
            n->scale[d0 + d] = scale > 0 ? (float)scale : 1.0f;
        }
    }
    free(vals);
    free(hist);
    free(idx);
    if (rc != 0) lcm_normalizer_free(n);
    return rc;
}
