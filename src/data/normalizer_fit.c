/* normalizer_fit.c: the SONAR normalizer's values and where its file lives. Fitting follows the reference
 * implementation's default ("gaussian_robust", sklearn's RobustScaler with unit_variance): center =
 * per-dimension median, scale = per-dimension interquartile range / 1.349 (1.349 = the IQR of a
 * standard normal, so for Gaussian data the scale is the standard deviation), from a uniform sample.
 * Quantiles are numpy's default ("linear": the order statistics at floor and ceil of q * (m - 1),
 * interpolated), found by selection, not by sorting each dimension.
 * Reading and writing the .safetensors file is src/io/'s job (lcm_normalizer_save / _load). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/dataset.h"
#include "lcm/half.h"
#include "lcm/philox.h"

/* The interquartile range of the standard normal distribution: Phi^-1(0.75) - Phi^-1(0.25). */
#define NORMAL_IQR 1.3489795003921634

/* The sampled values of a block of dimensions are held at once: at most this many bytes. */
#define FIT_BUDGET_BYTES ((size_t)256 << 20)

void lcm_normalizer_path_for(const char *dataset_path, char *out, size_t cap) {
    char dir[LCM_PATH_MAX];
    lcm_dirname(dataset_path, dir, sizeof dir);
    if (lcm_path_join(out, cap, dir, "normalizer.safetensors") != 0 && cap > 0) out[0] = '\0';
}

void lcm_normalizer_free(lcm_normalizer *n) {
    free(n->center);
    free(n->scale);
    memset(n, 0, sizeof *n);
}

static int normalizer_alloc(lcm_normalizer *n, int dim, lcm_error *err) {
    memset(n, 0, sizeof *n);
    n->center = malloc((size_t)dim * sizeof *n->center);
    n->scale = malloc((size_t)dim * sizeof *n->scale);
    if (!n->center || !n->scale) {
        lcm_normalizer_free(n);
        return lcm_fail(err, LCM_ERR_NOMEM, "out of memory for a normalizer of dimension %d", dim);
    }
    n->dim = dim;
    return 0;
}

int lcm_normalizer_identity(lcm_normalizer *n, int dim, lcm_error *err) {
    LCM_TRY(normalizer_alloc(n, dim, err));
    for (int d = 0; d < dim; d++) {
        n->center[d] = 0.0f;
        n->scale[d] = 1.0f;
    }
    return 0;
}

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

int lcm_normalizer_fit(lcm_normalizer *n, const lcm_dataset *ds, uint64_t max_samples, uint64_t seed, lcm_error *err) {
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
    size_t block = FIT_BUDGET_BYTES / ((size_t)m * sizeof(float));
    if (block < 1) block = 1;
    if (block > (size_t)dim) block = (size_t)dim;
    float *vals = malloc(block * (size_t)m * sizeof *vals);
    if (!vals) {
        free(idx);
        return lcm_fail(err, LCM_ERR_NOMEM, "out of memory fitting the normalizer (%zu x %llu values)", block,
                        (unsigned long long)m);
    }
    int rc = normalizer_alloc(n, dim, err);
    size_t elem = lcm_dtype_size(ds->dtype);
    for (size_t d0 = 0; rc == 0 && d0 < (size_t)dim; d0 += block) {
        size_t nb = (size_t)dim - d0 < block ? (size_t)dim - d0 : block;
        for (uint64_t j = 0; j < m && rc == 0; j++) {
            uint64_t c = idx ? idx[j] : j;
            const uint8_t *row = ds->payload + (c * (uint64_t)dim + d0) * elem;
            for (size_t d = 0; d < nb; d++) {
                float v;
                if (ds->dtype == LCM_F32) memcpy(&v, row + 4 * d, 4);
                else if (ds->dtype == LCM_F16) v = lcm_f16_to_f32(((const uint16_t *)row)[d]);
                else v = lcm_bf16_to_f32(((const uint16_t *)row)[d]);
                if (!isfinite(v)) {
                    rc = lcm_fail(err, LCM_ERR_DATA,
                                  "%s: concept %llu, dimension %zu is not finite; run `lcm data inspect` to find the "
                                  "document, and re-create the dataset",
                                  ds->path, (unsigned long long)c, d0 + d);
                    break;
                }
                vals[d * m + j] = v;
            }
        }
        for (size_t d = 0; rc == 0 && d < nb; d++) {
            float *a = vals + d * m;
            int64_t mm = (int64_t)m;
            /* The median first; the quartiles then lie on its two sides, selected in disjoint ranges
             * so that neither selection disturbs the other's. */
            int64_t kmed = (int64_t)floor(0.5 * (double)(mm - 1));
            int64_t k1 = (int64_t)floor(0.25 * (double)(mm - 1)), k3 = (int64_t)floor(0.75 * (double)(mm - 1));
            double med = quantile(a, mm, 0.5, 0, mm - 1);
            double q3 = quantile(a, mm, 0.75, k3 > kmed ? kmed + 1 : kmed, mm - 1);
            double q1 = quantile(a, mm, 0.25, 0, k1 < kmed ? kmed - 1 : kmed);
            double scale = (q3 - q1) / NORMAL_IQR;
            n->center[d0 + d] = (float)med;
            /* A constant dimension has no spread; 1 leaves it centred at 0 instead of dividing by 0. */
            n->scale[d0 + d] = scale > 0 ? (float)scale : 1.0f;
        }
    }
    free(vals);
    free(idx);
    if (rc != 0) lcm_normalizer_free(n);
    return rc;
}
