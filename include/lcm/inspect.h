/* inspect.h: what `lcm data inspect` reports about a dataset: sizes, the document-length histogram,
 * NaN/Inf counts over the whole payload, and embedding statistics (L2 norms, per-dimension mean and
 * standard deviation) from a uniform sample of concepts. */
#ifndef LCM_INSPECT_H
#define LCM_INSPECT_H

#include <stdint.h>
#include "lcm/dataset.h"
#include "lcm/error.h"

#define LCM_LEN_BINS 64 /* bin b: document lengths in [2^b, 2^(b+1)) */

typedef struct lcm_inspect {
    uint64_t len_min, len_max;
    double len_mean;
    uint64_t len_hist[LCM_LEN_BINS];
    uint64_t n_nan, n_inf;      /* values, over every concept */
    uint64_t sampled;           /* finite concepts the statistics below come from */
    double norm_min, norm_mean, norm_max, norm_std;
    double mean_min, mean_max, mean_abs_mean;   /* of the per-dimension means */
    double std_min, std_median, std_max;        /* of the per-dimension standard deviations */
    double eot_norm;            /* -1 when the dataset has no EOT */
} lcm_inspect;

/* max_samples 0 = every concept. */
int lcm_dataset_inspect(const lcm_dataset *ds, uint64_t max_samples, uint64_t seed, lcm_inspect *out, lcm_error *err);

#endif
