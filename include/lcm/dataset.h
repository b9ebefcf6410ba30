/* dataset.h: the concept dataset (.lcmd): a versioned binary file of sentence embeddings grouped into
 * documents, memory-mapped read-only once per process and shared by every worker thread.
 * The byte layout is documented in docs/dataset-format.md. Opening validates the header, every table
 * and the file size before anything is read through the mapping, so a truncated or corrupt file is an
 * error message, never a SIGBUS. */
#ifndef LCM_DATASET_H
#define LCM_DATASET_H

#include <stdint.h>
#include <stddef.h>
#include "lcm/crc32c.h" /* lcm_crc32, the format's checksum */
#include "lcm/error.h"
#include "lcm/fileio.h"
#include "lcm/half.h"
#include "lcm/normalizer.h"

const char *lcm_dtype_name(lcm_dtype t);            /* "f32", "f16", "bf16" */
int lcm_dtype_parse(const char *s, lcm_dtype *out); /* 0 on success */
size_t lcm_dtype_size(lcm_dtype t);

typedef struct lcm_dataset {
    char path[LCM_PATH_MAX];
    lcm_mapping map;
    uint32_t version;
    lcm_dtype dtype;
    int dim;
    uint64_t n_docs;
    uint64_t n_concepts;
    const uint64_t *doc_offsets; /* [n_docs + 1]: document i is concepts [doc_offsets[i], doc_offsets[i+1]) */
    const uint64_t *source_ids;  /* [n_docs], or NULL when the file has none */
    const float *eot;            /* [dim] end-of-text concept (fp32), or NULL when the file has none */
    const uint8_t *payload;      /* n_concepts * dim elements of dtype, row-major */
} lcm_dataset;

int lcm_dataset_open(lcm_dataset *ds, const char *path, lcm_error *err);
void lcm_dataset_close(lcm_dataset *ds);

static inline uint64_t lcm_dataset_doc_len(const lcm_dataset *ds, uint64_t doc) {
    return ds->doc_offsets[doc + 1] - ds->doc_offsets[doc];
}

/* Concepts [first, first + count) converted to fp32 into out[count * dim]. */
void lcm_dataset_read(const lcm_dataset *ds, uint64_t first, uint64_t count, float *out);

/* Scan every value; a NaN or Inf is an error naming the file, document and concept. */
int lcm_dataset_check_finite(const lcm_dataset *ds, lcm_error *err);

/* ---- writing (atomic: the file appears complete or not at all) -------------------------------- */

typedef struct lcm_dataset_writer lcm_dataset_writer;

int lcm_dataset_writer_open(lcm_dataset_writer **out, const char *path, lcm_dtype dtype, int dim, lcm_error *err);
/* Append one document of n concepts given as fp32 (converted to the file's dtype). */
int lcm_dataset_writer_add(lcm_dataset_writer *w, const float *emb, uint64_t n, lcm_error *err);
/* Append one document already in the file's dtype (n * dim elements). */
int lcm_dataset_writer_add_raw(lcm_dataset_writer *w, const void *data, uint64_t n, lcm_error *err);
/* Per-document source ids: once called, it must be called once per document, after its add. */
int lcm_dataset_writer_set_source(lcm_dataset_writer *w, uint64_t source_id, lcm_error *err);
int lcm_dataset_writer_set_eot(lcm_dataset_writer *w, const float *eot, lcm_error *err);
int lcm_dataset_writer_commit(lcm_dataset_writer *w, lcm_error *err); /* frees w */
void lcm_dataset_writer_abort(lcm_dataset_writer *w);                 /* frees w, removes the temp file */

/* ---- fitting the SONAR normalizer (include/lcm/normalizer.h) ------------------------------------- */

/* center = per-dimension median, scale = per-dimension IQR / 1.349 (the reference implementation's
 * "gaussian_robust" convention, sklearn RobustScaler(unit_variance=True); equals the standard
 * deviation for Gaussian data), from up to max_samples concepts drawn uniformly (seeded; 0 = all). */
int lcm_normalizer_fit(lcm_normalizer *n, const lcm_dataset *ds, uint64_t max_samples, uint64_t seed, lcm_error *err);

/* ---- the text side file: the sentence of each concept (written by the parquet tool and synth) ---- */

typedef struct lcm_text {
    char path[LCM_PATH_MAX];
    lcm_mapping map;
    uint64_t n;               /* sentences, one per concept of the dataset */
    const uint64_t *offsets;  /* [n + 1] byte offsets into bytes */
    const char *bytes;        /* UTF-8, not NUL-terminated */
} lcm_text;

/* "<path without .lcmd>.text" */
void lcm_text_path_for(const char *dataset_path, char *out, size_t cap);
/* expect_n > 0: the file must hold exactly that many sentences (the dataset's concept count). */
int lcm_text_open(lcm_text *t, const char *path, uint64_t expect_n, lcm_error *err);
void lcm_text_close(lcm_text *t);
static inline const char *lcm_text_get(const lcm_text *t, uint64_t i, size_t *len) {
    *len = (size_t)(t->offsets[i + 1] - t->offsets[i]);
    return t->bytes + t->offsets[i];
}

typedef struct lcm_text_writer lcm_text_writer;

int lcm_text_writer_open(lcm_text_writer **out, const char *path, lcm_error *err);
/* One sentence (valid UTF-8, n bytes, no NUL needed). */
int lcm_text_writer_add(lcm_text_writer *w, const char *s, size_t n, lcm_error *err);
int lcm_text_writer_commit(lcm_text_writer *w, lcm_error *err); /* frees w */
void lcm_text_writer_abort(lcm_text_writer *w);                 /* frees w, removes the temp file */

#endif
