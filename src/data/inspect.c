/* inspect.c: the numbers behind `lcm data inspect` (include/lcm/inspect.h). NaN/Inf are counted over
 * the whole payload from the exponent bits; norms and per-dimension statistics come from a uniform
 * sample, so inspecting a dataset of any size takes seconds. */
#include "lcm/inspect.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/philox.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void count_nonfinite(const lcm_dataset *ds, lcm_inspect *r) {
    uint64_t total = ds->n_concepts * (uint64_t)ds->dim;
    if (ds->dtype == LCM_F32) {
        const uint32_t *u = (const uint32_t *)ds->payload;
        for (uint64_t i = 0; i < total; i++)
            if ((u[i] & 0x7f800000u) == 0x7f800000u) {
                if (u[i] & 0x007fffffu) r->n_nan++; else r->n_inf++;
            }
    } else {
        const uint16_t *h = (const uint16_t *)ds->payload;
        uint16_t exp = ds->dtype == LCM_F16 ? 0x7c00u : 0x7f80u, man = ds->dtype == LCM_F16 ? 0x03ffu : 0x007fu;
        for (uint64_t i = 0; i < total; i++)
            if ((h[i] & exp) == exp) {
                if (h[i] & man) r->n_nan++; else r->n_inf++;
            }
    }
}

int lcm_dataset_inspect(const lcm_dataset *ds, uint64_t max_samples, uint64_t seed, lcm_inspect *r, lcm_error *err) {
    memset(r, 0, sizeof *r);
    int D = ds->dim;
    r->len_min = UINT64_MAX;
    for (uint64_t d = 0; d < ds->n_docs; d++) {
        uint64_t l = lcm_dataset_doc_len(ds, d);
        r->len_min = l < r->len_min ? l : r->len_min;
        r->len_max = l > r->len_max ? l : r->len_max;
        int b = 0;
        while (b + 1 < LCM_LEN_BINS && (l >> (b + 1)) != 0) b++;
        r->len_hist[b]++;
    }
    r->len_mean = (double)ds->n_concepts / (double)ds->n_docs;
    count_nonfinite(ds, r);

    uint64_t m = (max_samples == 0 || max_samples >= ds->n_concepts) ? ds->n_concepts : max_samples;
    double *sum = calloc((size_t)D, sizeof *sum), *sumsq = calloc((size_t)D, sizeof *sumsq);
    float *x = malloc((size_t)D * sizeof *x);
    if (!sum || !sumsq || !x) {
        free(sum);
        free(sumsq);
        free(x);
        return lcm_fail(err, LCM_ERR_NOMEM, "out of memory inspecting %s", ds->path);
    }
    lcm_rng rng;
    lcm_rng_init(&rng, seed, 0x696e7370ull);
    double nsum = 0, nsumsq = 0;
    r->norm_min = INFINITY;
    for (uint64_t j = 0; j < m; j++) {
        uint64_t c = m == ds->n_concepts ? j : lcm_rng_u64(&rng) % ds->n_concepts;
        lcm_dataset_read(ds, c, 1, x);
        double ss = 0;
        int finite = 1;
        for (int d = 0; d < D; d++) {
            finite &= isfinite(x[d]) != 0;
            ss += (double)x[d] * x[d];
        }
        if (!finite) continue;
        for (int d = 0; d < D; d++) {
            sum[d] += x[d];
            sumsq[d] += (double)x[d] * x[d];
        }
        double n = sqrt(ss);
        nsum += n;
        nsumsq += n * n;
        r->norm_min = n < r->norm_min ? n : r->norm_min;
        r->norm_max = n > r->norm_max ? n : r->norm_max;
        r->sampled++;
    }
    if (r->sampled > 0) {
        double k = (double)r->sampled;
        r->norm_mean = nsum / k;
        r->norm_std = sqrt(fmax(0.0, nsumsq / k - r->norm_mean * r->norm_mean));
        r->mean_min = INFINITY;
        r->mean_max = -INFINITY;
        for (int d = 0; d < D; d++) {
            double mu = sum[d] / k;
            r->mean_min = fmin(r->mean_min, mu);
            r->mean_max = fmax(r->mean_max, mu);
            r->mean_abs_mean += fabs(mu) / D;
            /* the per-dimension std goes into sumsq, to take its median */
            sumsq[d] = sqrt(fmax(0.0, sumsq[d] / k - mu * mu));
        }
        qsort(sumsq, (size_t)D, sizeof *sumsq, cmp_double);
        r->std_min = sumsq[0];
        r->std_max = sumsq[D - 1];
        r->std_median = D % 2 ? sumsq[D / 2] : 0.5 * (sumsq[D / 2 - 1] + sumsq[D / 2]);
    } else {
        r->norm_min = 0;
    }
    r->eot_norm = -1;
    if (ds->eot) {
        double ss = 0;
        for (int d = 0; d < D; d++) ss += (double)ds->eot[d] * ds->eot[d];
        r->eot_norm = sqrt(ss);
    }
    free(sum);
    free(sumsq);
    free(x);
    return 0;
}
