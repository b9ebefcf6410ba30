/* normalizer.h: the SONAR normalizer, xn = (x - center) / scale per dimension: its type, the identity,
 * its safetensors file (load/save), where that file lives beside a dataset, and the one reading of
 * model.normalizer that training and evaluation share (lcm_normalizer_resolve). Fitting one on a
 * dataset is lcm_normalizer_fit in dataset.h (it reads a dataset; this header needs none). */
#ifndef LCM_NORMALIZER_H
#define LCM_NORMALIZER_H

#include <stddef.h>
#include "lcm/error.h"

typedef struct lcm_normalizer {
    int dim;
    float *center; /* [dim] */
    float *scale;  /* [dim] */
} lcm_normalizer;

/* center and scale of dim entries, values not set (for code that fills them). */
int lcm_normalizer_alloc(lcm_normalizer *n, int dim, lcm_error *err);
/* Identity (center 0, scale 1). */
int lcm_normalizer_identity(lcm_normalizer *n, int dim, lcm_error *err);
/* safetensors with F32 tensors "center" and "scale" of shape [dim]. */
int lcm_normalizer_save(const lcm_normalizer *n, const char *path, lcm_error *err);
/* Reads "center"/"scale" (or the reference names frontend.sonar_normalizer.{center,scale}).
 * expect_dim > 0 checks the dimension. */
int lcm_normalizer_load(lcm_normalizer *n, const char *path, int expect_dim, lcm_error *err);
void lcm_normalizer_free(lcm_normalizer *n);

/* The file name of the normalizer written beside a dataset ("<dir of dataset>/normalizer.safetensors"). */
void lcm_normalizer_path_for(const char *dataset_path, char *out, size_t cap);

/* The normalizer a model.normalizer value names, of dimension D: "none" is the identity, "dataset" the
 * file beside dataset_path (an error saying how to fit one when it is missing), anything else a path. */
int lcm_normalizer_resolve(lcm_normalizer *n, const char *spec, const char *dataset_path, int D, lcm_error *err);

#endif
