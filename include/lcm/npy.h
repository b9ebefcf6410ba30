/* npy.h: NumPy .npy files (format versions 1.0, 2.0, 3.0), read through a validated mapping, and the
 * import of embeddings + document lengths from .npy files into a .lcmd dataset (`lcm data import`). */
#ifndef LCM_NPY_H
#define LCM_NPY_H

#include <stdint.h>
#include "lcm/dataset.h"
#include "lcm/error.h"
#include "lcm/fileio.h"

#define LCM_NPY_MAX_DIMS 8

/* The element types lcm accepts (all little-endian). Anything else is refused when opening. */
typedef enum lcm_npy_type { LCM_NPY_F32, LCM_NPY_F16, LCM_NPY_I32, LCM_NPY_I64, LCM_NPY_U32, LCM_NPY_U64 } lcm_npy_type;

typedef struct lcm_npy {
    char path[LCM_PATH_MAX];
    lcm_mapping map;
    lcm_npy_type type;
    char descr[16];               /* as written in the header, e.g. "<f4" */
    size_t elem;                  /* bytes per element */
    int ndim;
    uint64_t shape[LCM_NPY_MAX_DIMS];
    uint64_t numel;
    const uint8_t *data;          /* numel * elem bytes inside the mapping; may be unaligned */
} lcm_npy;

/* Parse and check the header (magic, version, dict with descr / fortran_order / shape) and that the
 * data fills the rest of the file exactly. Fortran order, big-endian and unsupported dtypes are errors
 * naming the dtype and the numpy call that converts it. */
int lcm_npy_open(lcm_npy *a, const char *path, lcm_error *err);
void lcm_npy_close(lcm_npy *a);
int lcm_npy_is_int(const lcm_npy *a);
/* Element i of an integer array, sign-extended (u64 values above INT64_MAX come back negative). */
int64_t lcm_npy_int(const lcm_npy *a, uint64_t i);
/* "(3, 1024)" */
void lcm_npy_shape_str(const lcm_npy *a, char *out, size_t cap);

typedef struct lcm_import_spec {
    const char *embeddings;  /* [N, D] float32 or float16: every concept, documents back to back */
    const char *lengths;     /* [n_docs] concepts per document, or [n_docs + 1] offsets (lengths_are_offsets) */
    int lengths_are_offsets;
    const char *eot;         /* [D] or [1, D] float32/float16: the end-of-text embedding; NULL = none */
    const char *source_ids;  /* [n_docs] integers >= 0; NULL = none */
    lcm_dtype dtype;         /* storage dtype; 0 = the embeddings' own (f32 or f16) */
    const char *output;      /* the .lcmd to write (atomically) */
} lcm_import_spec;

typedef struct lcm_import_result {
    uint64_t n_docs, n_concepts;
    int dim;
    lcm_dtype dtype;
    uint64_t payload_bytes;
} lcm_import_result;

/* Every input is checked before the first byte is written. progress (may be NULL) is called with the
 * fraction of concepts written so far. */
int lcm_npy_import(const lcm_import_spec *spec, void (*progress)(void *ctx, double frac), void *ctx,
                   lcm_import_result *result, lcm_error *err);

#endif
