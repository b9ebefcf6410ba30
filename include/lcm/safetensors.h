/* safetensors.h: strict reader and atomic writer for the safetensors format (checkpoint interchange
 * with PyTorch and Hugging Face tools). The reader maps the file and rejects anything a strict reader
 * would: header length > 100,000,000, bad JSON, unknown dtype, offsets that do not tile the data section
 * exactly, a size mismatch. */
#ifndef LCM_SAFETENSORS_H
#define LCM_SAFETENSORS_H

#include <stdint.h>
#include <stddef.h>
#include "lcm/error.h"
#include "lcm/fileio.h"

typedef enum { LCM_ST_F32, LCM_ST_F16, LCM_ST_BF16, LCM_ST_F64, LCM_ST_I64, LCM_ST_I32, LCM_ST_U8 } lcm_st_dtype;

#define LCM_ST_MAX_DIMS 8

typedef struct lcm_st_tensor {
    char *name;
    lcm_st_dtype dtype;
    int ndim;
    int64_t shape[LCM_ST_MAX_DIMS];
    uint64_t numel;
    const uint8_t *data;  /* into the mapping */
    uint64_t nbytes;
} lcm_st_tensor;

typedef struct lcm_st_file {
    char path[LCM_PATH_MAX];
    lcm_mapping map;
    int n;
    lcm_st_tensor *tensors;
    int n_meta;
    char **meta_keys;
    char **meta_values;
} lcm_st_file;

int lcm_st_open(lcm_st_file *f, const char *path, lcm_error *err);
void lcm_st_close(lcm_st_file *f);
const lcm_st_tensor *lcm_st_find(const lcm_st_file *f, const char *name);
const char *lcm_st_meta(const lcm_st_file *f, const char *key); /* NULL when absent */
/* Convert a floating tensor (F32, F16, BF16, F64) to fp32. */
int lcm_st_to_f32(const lcm_st_tensor *t, float *out, lcm_error *err);
const char *lcm_st_dtype_name(lcm_st_dtype t);
size_t lcm_st_dtype_size(lcm_st_dtype t);

typedef struct lcm_st_writer lcm_st_writer;

lcm_st_writer *lcm_st_writer_new(void);
/* The data pointer is borrowed until lcm_st_write returns. Names must be unique. */
int lcm_st_add(lcm_st_writer *w, const char *name, lcm_st_dtype dtype, int ndim, const int64_t *shape,
               const void *data, lcm_error *err);
int lcm_st_add_meta(lcm_st_writer *w, const char *key, const char *value, lcm_error *err);
/* Atomic write: temp file, fsync, rename, directory fsync. */
int lcm_st_write(lcm_st_writer *w, const char *path, lcm_error *err);
void lcm_st_writer_free(lcm_st_writer *w);

#endif
