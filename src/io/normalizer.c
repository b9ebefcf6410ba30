/* normalizer.c: the SONAR normalizer (xn = (x - center) / scale): allocation and the identity, saving
 * and loading it as safetensors, its file beside a dataset, and resolving model.normalizer.
 *
 * lcm writes F32 tensors "center" and "scale" of shape [dim]. Loading also accepts the names used by
 * the released reference checkpoints ("frontend.sonar_normalizer.center" / ".scale") and any floating
 * dtype, and refuses a normalizer that would make training produce NaN or Inf. */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/fileio.h"
#include "lcm/normalizer.h"
#include "lcm/safetensors.h"
#include "lcm/st_checksum.h"

#define REFERENCE_PREFIX "frontend.sonar_normalizer."

void lcm_normalizer_free(lcm_normalizer *n) {
    free(n->center);
    free(n->scale);
    memset(n, 0, sizeof *n);
}

int lcm_normalizer_alloc(lcm_normalizer *n, int dim, lcm_error *err) {
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
    LCM_TRY(lcm_normalizer_alloc(n, dim, err));
    for (int d = 0; d < dim; d++) {
        n->center[d] = 0.0f;
        n->scale[d] = 1.0f;
    }
    return 0;
}

void lcm_normalizer_path_for(const char *dataset_path, char *out, size_t cap) {
    char dir[LCM_PATH_MAX];
    lcm_dirname(dataset_path, dir, sizeof dir);
    if (lcm_path_join(out, cap, dir, "normalizer.safetensors") != 0 && cap > 0) out[0] = '\0';
}

/* An error naming the first value that would make (x - center) / scale non-finite. */
static int check_values(const char *path, const float *center, const float *scale, int dim, lcm_error *err) {
    for (int i = 0; i < dim; i++) {
        if (!isfinite(center[i]))
            return lcm_fail(err, LCM_ERR_DATA, "%s: normalizer center[%d] = %g (must be finite)", path, i,
                            (double)center[i]);
        if (!isfinite(scale[i]) || !(scale[i] > 0))
            return lcm_fail(err, LCM_ERR_DATA, "%s: normalizer scale[%d] = %g (must be finite and > 0)", path, i,
                            (double)scale[i]);
    }
    return 0;
}

int lcm_normalizer_save(const lcm_normalizer *n, const char *path, lcm_error *err) {
    if (n->dim <= 0 || !n->center || !n->scale)
        return lcm_fail(err, LCM_ERR_INTERNAL, "%s: cannot save an empty normalizer (dim %d)", path, n->dim);
    LCM_TRY(check_values(path, n->center, n->scale, n->dim, err));
    lcm_st_writer *w = lcm_st_writer_new();
    if (!w) return lcm_fail(err, LCM_ERR_NOMEM, "%s: out of memory", path);
    int64_t shape[1] = {n->dim};
    int rc = lcm_st_add_meta(w, "format", "pt", err);
    if (rc == 0) rc = lcm_st_add_meta(w, "convention", "normalized = (x - center) / scale, per dimension", err);
    if (rc == 0) rc = lcm_st_add(w, "center", LCM_ST_F32, 1, shape, n->center, err);
    if (rc == 0) rc = lcm_st_add(w, "scale", LCM_ST_F32, 1, shape, n->scale, err);
    if (rc == 0) rc = lcm_st_add_checksums(w, err);
    if (rc == 0) rc = lcm_st_write(w, path, err);
    lcm_st_writer_free(w);
    return rc;
}

/* "center" or "frontend.sonar_normalizer.center" (the plain name wins when both are present). */
static const lcm_st_tensor *find_part(const lcm_st_file *f, const char *part) {
    const lcm_st_tensor *t = lcm_st_find(f, part);
    if (t) return t;
    char ref[64];
    snprintf(ref, sizeof ref, REFERENCE_PREFIX "%s", part);
    return lcm_st_find(f, ref);
}

static int check_part(const lcm_st_file *f, const lcm_st_tensor *t, const char *part, lcm_error *err) {
    if (!t)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: no tensor \"%s\" (nor \"" REFERENCE_PREFIX "%s\"); is this a "
                        "normalizer file?", f->path, part, part);
    if (t->dtype != LCM_ST_F32 && t->dtype != LCM_ST_F16 && t->dtype != LCM_ST_BF16 && t->dtype != LCM_ST_F64)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s' is %s; a normalizer needs floating-point values",
                        f->path, t->name, lcm_st_dtype_name(t->dtype));
    if (t->ndim != 1)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s' has %d dimensions; a normalizer needs 1-D [dim]",
                        f->path, t->name, t->ndim);
    if (t->shape[0] <= 0 || t->shape[0] > INT_MAX)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s' has %" PRId64 " entries; a normalizer needs 1 to %d",
                        f->path, t->name, t->shape[0], INT_MAX);
    return 0;
}

static int load_open(lcm_normalizer *n, const lcm_st_file *f, int expect_dim, lcm_error *err) {
    const lcm_st_tensor *center = find_part(f, "center"), *scale = find_part(f, "scale");
    LCM_TRY(check_part(f, center, "center", err));
    LCM_TRY(check_part(f, scale, "scale", err));
    if (center->shape[0] != scale->shape[0])
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: center has %" PRId64 " entries but scale has %" PRId64, f->path,
                        center->shape[0], scale->shape[0]);
    int dim = (int)center->shape[0];
    if (expect_dim > 0 && dim != expect_dim)
        return lcm_fail(err, LCM_ERR_DATA, "%s: normalizer dimension is %d but the embeddings have dimension %d "
                        "(a normalizer fitted on other data?)", f->path, dim, expect_dim);
    n->center = malloc((size_t)dim * sizeof(float));
    n->scale = malloc((size_t)dim * sizeof(float));
    if (!n->center || !n->scale) return lcm_fail(err, LCM_ERR_NOMEM, "%s: out of memory", f->path);
    n->dim = dim;
    LCM_TRY(lcm_st_to_f32(center, n->center, err));
    LCM_TRY(lcm_st_to_f32(scale, n->scale, err));
    return check_values(f->path, n->center, n->scale, dim, err);
}

int lcm_normalizer_load(lcm_normalizer *n, const char *path, int expect_dim, lcm_error *err) {
    memset(n, 0, sizeof *n);
    lcm_st_file f;
    LCM_TRY(lcm_st_open(&f, path, err));
    int rc = lcm_st_verify(&f, LCM_ST_VERIFY_ALL, NULL, err);
    if (rc == 0) rc = load_open(n, &f, expect_dim, err);
    lcm_st_close(&f);
    if (rc != 0) {
        free(n->center);
        free(n->scale);
        memset(n, 0, sizeof *n);
    }
    return rc;
}

int lcm_normalizer_resolve(lcm_normalizer *n, const char *spec, const char *dataset_path, int D, lcm_error *err) {
    if (strcmp(spec, "none") == 0) return lcm_normalizer_identity(n, D, err);
    char path[LCM_PATH_MAX];
    if (strcmp(spec, "dataset") == 0) {
        lcm_normalizer_path_for(dataset_path, path, sizeof path);
        if (!lcm_file_exists(path))
            return lcm_fail(err, LCM_ERR_CONFIG,
                            "model.normalizer=dataset but %s does not exist: fit one with `lcm data fit-normalizer %s "
                            "-o %s`, or set model.normalizer=none", path, dataset_path, path);
    } else {
        snprintf(path, sizeof path, "%s", spec);
    }
    return lcm_normalizer_load(n, path, D, err);
}
