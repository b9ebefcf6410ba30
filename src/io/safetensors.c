/* safetensors.c: the strict safetensors reader and the streaming, atomic writer (safetensors.h).
 *
 * Layout: u64 little-endian N, N bytes of JSON header, then the data section. The reader maps the
 * file and checks everything before handing out a pointer into the mapping: header length, JSON,
 * every entry's dtype/shape/offsets, that the tensors tile the data section exactly, and the file size.
 * The writer emits "__metadata__" first, then the tensors in the order added, pads the header with
 * spaces to a multiple of 8, and streams each tensor from the caller's memory into a temporary file
 * that is renamed into place (no copy of the whole checkpoint is ever made).
 *
 * Names and strings from a file reach messages only through lcm_escape (escape.h). */
#include "lcm/safetensors.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/crc32c.h"
#include "lcm/escape.h"
#include "lcm/half.h"
#include "lcm/json.h"
#include "lcm/sbuf.h"
#include "lcm/st_checksum.h"

/* The limit every safetensors reader applies (a larger header is a corrupt or hostile file). */
#define ST_MAX_HEADER 100000000ull
#define ST_METADATA_KEY "__metadata__"

static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {
    [LCM_ST_F32] = {"F32", 4}, [LCM_ST_F16] = {"F16", 2}, [LCM_ST_BF16] = {"BF16", 2}, [LCM_ST_F64] = {"F64", 8},
    [LCM_ST_I64] = {"I64", 8}, [LCM_ST_I32] = {"I32", 4}, [LCM_ST_U8] = {"U8", 1},
};
#define ST_N_DTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))

static int dtype_valid(lcm_st_dtype t) { return (int)t >= 0 && (int)t < ST_N_DTYPES; }

const char *lcm_st_dtype_name(lcm_st_dtype t) { return dtype_valid(t) ? st_dtypes[t].name : "invalid"; }

size_t lcm_st_dtype_size(lcm_st_dtype t) { return dtype_valid(t) ? st_dtypes[t].size : 0; }

static int dtype_parse(const char *s, lcm_st_dtype *out) {
    for (int i = 0; i < ST_N_DTYPES; i++) {
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *out = (lcm_st_dtype)i;
            return 0;
        }
    }
    return -1;
}

/* numel and bytes of a shape, or -1 when either overflows 64 bits. */
static int shape_size(int ndim, const int64_t *shape, lcm_st_dtype dtype, uint64_t *numel, uint64_t *nbytes) {
    uint64_t n = 1;
    for (int d = 0; d < ndim; d++)
        if (__builtin_mul_overflow(n, (uint64_t)shape[d], &n)) return -1;
    *numel = n;
    return __builtin_mul_overflow(n, (uint64_t)lcm_st_dtype_size(dtype), nbytes) ? -1 : 0;
}

/* "a number", "an object": for messages. */
static const char *json_kind(lcm_json_type t) {
    switch (t) {
    case LCM_JSON_NULL: return "null";
    case LCM_JSON_BOOL: return "a boolean";
    case LCM_JSON_NUMBER: return "a number";
    case LCM_JSON_STRING: return "a string";
    case LCM_JSON_ARRAY: return "an array";
    case LCM_JSON_OBJECT: return "an object";
    }
    return "unknown";
}

static void format_shape(char *out, size_t cap, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(out, cap, "[");
    for (int d = 0; d < ndim && k < cap; d++)
        k += (size_t)snprintf(out + k, cap - k, d ? ", %" PRId64 : "%" PRId64, shape[d]);
    if (k < cap) snprintf(out + k, cap - k, "]");
}

/* ---- reader ------------------------------------------------------------------------------------ */

/* One tensor's place in the data section, kept until the tiling check. */
typedef struct st_span {
    uint64_t begin, end;
    int index;
} st_span;

static int read_meta(lcm_st_file *f, const lcm_json *meta, lcm_error *err) {
    if (meta->type != LCM_JSON_OBJECT)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: \"__metadata__\" is %s; it must be an object of strings", f->path,
                        json_kind(meta->type));
    if (meta->n == 0) return 0;
    f->meta_keys = calloc(meta->n, sizeof *f->meta_keys);
    f->meta_values = calloc(meta->n, sizeof *f->meta_values);
    if (!f->meta_keys || !f->meta_values) return lcm_fail(err, LCM_ERR_NOMEM, "%s: out of memory", f->path);
    for (size_t i = 0; i < meta->n; i++) {
        const lcm_json *v = &meta->items[i];
        char key[LCM_ESC_CAP];
        lcm_escape(key, sizeof key, v->key, v->key_len);
        if (v->type != LCM_JSON_STRING)
            return lcm_fail(err, LCM_ERR_FORMAT, "%s: \"__metadata__\" value of \"%s\" is %s; metadata values "
                            "must be strings", f->path, key, json_kind(v->type));
        if (strlen(v->str) != v->len)
            return lcm_fail(err, LCM_ERR_FORMAT, "%s: \"__metadata__\" value of \"%s\" contains a NUL character",
                            f->path, key);
        int m = f->n_meta++;
        f->meta_keys[m] = strdup(v->key);
        f->meta_values[m] = strdup(v->str);
        if (!f->meta_keys[m] || !f->meta_values[m]) return lcm_fail(err, LCM_ERR_NOMEM, "%s: out of memory", f->path);
    }
    return 0;
}

/* A JSON array of non-negative integers (at most `max` of them) into out; *count gets the length. */
static int read_uint_array(const lcm_json *a, uint64_t *out, int max, int *count) {
    if (a->type != LCM_JSON_ARRAY || a->n > (size_t)max) return -1;
    for (size_t i = 0; i < a->n; i++) {
        if (a->items[i].type != LCM_JSON_NUMBER || !a->items[i].is_uint) return -1;
        out[i] = a->items[i].uint;
    }
    *count = (int)a->n;
    return 0;
}

static int read_tensor_entry(lcm_st_file *f, const lcm_json *e, lcm_st_tensor *t, st_span *span, lcm_error *err) {
    const char *path = f->path;
    char name[LCM_ESC_CAP];
    lcm_escape_str(name, sizeof name, t->name);
    if (e->type != LCM_JSON_OBJECT)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s': entry is %s, not an object", path, name,
                        json_kind(e->type));
    for (size_t i = 0; i < e->n; i++) {
        const char *k = e->items[i].key;
        char shown[LCM_ESC_CAP / 2];
        if (strcmp(k, "dtype") != 0 && strcmp(k, "shape") != 0 && strcmp(k, "data_offsets") != 0)
            return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s': unknown field \"%s\" (expected dtype, "
                            "shape, data_offsets)", path, name, lcm_escape_str(shown, sizeof shown, k));
    }
    const lcm_json *dtype = lcm_json_get(e, "dtype");
    const lcm_json *shape = lcm_json_get(e, "shape");
    const lcm_json *offsets = lcm_json_get(e, "data_offsets");
    if (!dtype || !shape || !offsets)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s': missing \"%s\"", path, name,
                        !dtype ? "dtype" : !shape ? "shape" : "data_offsets");
    if (dtype->type != LCM_JSON_STRING)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s': dtype is %s, not a string", path, name,
                        json_kind(dtype->type));
    /* The length check keeps "F32\u0000junk" from passing as F32. */
    if (strlen(dtype->str) != dtype->len || dtype_parse(dtype->str, &t->dtype) != 0) {
        char shown[64];
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s': unknown dtype \"%s\" (lcm reads F32, F16, BF16, "
                        "F64, I64, I32, U8)", path, name, lcm_escape(shown, sizeof shown, dtype->str, dtype->len));
    }
    uint64_t dims[LCM_ST_MAX_DIMS];
    if (shape->type == LCM_JSON_ARRAY && shape->n > LCM_ST_MAX_DIMS)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s': %zu dimensions (lcm supports at most %d)", path,
                        name, shape->n, LCM_ST_MAX_DIMS);
    if (read_uint_array(shape, dims, LCM_ST_MAX_DIMS, &t->ndim) != 0)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s': shape must be an array of non-negative integers",
                        path, name);
    for (int d = 0; d < t->ndim; d++) {
        if (dims[d] > (uint64_t)INT64_MAX)
            return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s': shape entry %" PRIu64 " is too large", path,
                            name, dims[d]);
        t->shape[d] = (int64_t)dims[d];
    }
    char shown[256];
    format_shape(shown, sizeof shown, t->ndim, t->shape);
    if (shape_size(t->ndim, t->shape, t->dtype, &t->numel, &t->nbytes) != 0)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s': shape %s overflows 64-bit sizes", path, name, shown);
    uint64_t off[2];
    int n_off = 0;
    if (read_uint_array(offsets, off, 2, &n_off) != 0 || n_off != 2)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s': data_offsets must be [begin, end], two "
                        "non-negative integers", path, name);
    if (off[1] < off[0])
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end "
                        "before they begin", path, name, off[0], off[1]);
    if (off[1] - off[0] != t->nbytes)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] span %"
                        PRIu64 " bytes but %s %s needs %" PRIu64, path, name, off[0], off[1], off[1] - off[0],
                        st_dtypes[t->dtype].name, shown, t->nbytes);
    span->begin = off[0];
    span->end = off[1];
    return 0;
}

static int cmp_span(const void *a, const void *b) {
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Sorted by offset, the tensors must cover [0, data_len) exactly once: no hole, no overlap, nothing after. */
static int check_tiling(lcm_st_file *f, st_span *spans, uint64_t data_len, lcm_error *err) {
    qsort(spans, (size_t)f->n, sizeof *spans, cmp_span);
    uint64_t covered = 0;
    int have_prev = 0;
    char name[LCM_ESC_CAP], prev[LCM_ESC_CAP];
    for (int i = 0; i < f->n; i++) {
        lcm_escape_str(name, sizeof name, f->tensors[spans[i].index].name);
        if (spans[i].begin > covered) {
            if (!have_prev)
                return lcm_fail(err, LCM_ERR_FORMAT, "%s: data bytes [0, %" PRIu64 ") before tensor '%s' belong "
                                "to no tensor (a hole)", f->path, spans[i].begin, name);
            return lcm_fail(err, LCM_ERR_FORMAT, "%s: data bytes [%" PRIu64 ", %" PRIu64 ") between tensors "
                            "'%s' and '%s' belong to no tensor (a hole)", f->path, covered, spans[i].begin,
                            prev, name);
        }
        if (spans[i].begin < covered)
            return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s' (data bytes [%" PRIu64 ", %" PRIu64 ")) "
                            "overlaps tensor '%s' (which ends at %" PRIu64 ")", f->path, name, spans[i].begin,
                            spans[i].end, prev, covered);
        if (spans[i].end > data_len)
            return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s' ends at data byte %" PRIu64 " but the data "
                            "section holds only %" PRIu64 " bytes (truncated file?)", f->path, name, spans[i].end,
                            data_len);
        covered = spans[i].end;
        memcpy(prev, name, sizeof prev);
        have_prev = 1;
    }
    if (covered != data_len) {
        if (!have_prev)
            return lcm_fail(err, LCM_ERR_FORMAT, "%s: %" PRIu64 " data bytes after the header but no tensors "
                            "(trailing bytes)", f->path, data_len);
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: %" PRIu64 " trailing bytes after the last tensor '%s' (the "
                        "file is %" PRIu64 " bytes, the tensors end at %" PRIu64 ")", f->path, data_len - covered,
                        prev, f->map.size, f->map.size - data_len + covered);
    }
    return 0;
}

static int read_header(lcm_st_file *f, const lcm_json *root, uint64_t header_len, lcm_error *err) {
    size_t n_tensors = root->n - (lcm_json_get(root, ST_METADATA_KEY) ? 1 : 0);
    if (n_tensors > (size_t)INT32_MAX)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: %zu tensors is more than lcm supports", f->path, n_tensors);
    f->tensors = calloc(n_tensors + 1, sizeof *f->tensors);
    st_span *spans = calloc(n_tensors + 1, sizeof *spans);
    int rc = 0;
    if (!f->tensors || !spans) rc = lcm_fail(err, LCM_ERR_NOMEM, "%s: out of memory", f->path);
    for (size_t i = 0; rc == 0 && i < root->n; i++) {
        const lcm_json *e = &root->items[i];
        /* Keys hold no NUL (json.h) and are unique, so exactly one entry can be the metadata. */
        if (e->key_len == sizeof ST_METADATA_KEY - 1 && memcmp(e->key, ST_METADATA_KEY, e->key_len) == 0) {
            rc = read_meta(f, e, err);
            continue;
        }
        lcm_st_tensor *t = &f->tensors[f->n];
        t->name = strdup(e->key);
        if (!t->name) {
            rc = lcm_fail(err, LCM_ERR_NOMEM, "%s: out of memory", f->path);
            break;
        }
        spans[f->n].index = f->n;
        f->n++;
        rc = read_tensor_entry(f, e, t, &spans[f->n - 1], err);
    }
    uint64_t data_len = f->map.size - 8 - header_len;
    if (rc == 0) rc = check_tiling(f, spans, data_len, err);
    if (rc == 0) {
        const uint8_t *data = f->map.data + 8 + header_len;
        for (int i = 0; i < f->n; i++) f->tensors[spans[i].index].data = data + spans[i].begin;
    }
    free(spans);
    return rc;
}

static int read_file(lcm_st_file *f, lcm_error *err) {
    const uint64_t size = f->map.size;
    if (size < 8)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: %" PRIu64 " bytes is too short for a safetensors file (the 8-byte "
                        "header length alone is missing)", f->path, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | f->map.data[i];
    if (n > ST_MAX_HEADER)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: header length %" PRIu64 " exceeds the safetensors limit of %llu "
                        "bytes (not a safetensors file, or corrupt)", f->path, n, ST_MAX_HEADER);
    if (n > size - 8)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: header length %" PRIu64 " runs past the end of the file (%"
                        PRIu64 " bytes; truncated?)", f->path, n, size);
    const char *header = (const char *)f->map.data + 8;
    if (n == 0 || header[0] != '{')
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: the header does not start with '{' (not a safetensors file?)",
                        f->path);
    lcm_json *root = NULL;
    int rc = lcm_json_parse(header, (size_t)n, &root, err);
    if (rc != 0) {
        lcm_error_context(err, "%s: header JSON (byte 0 is file byte 8)", f->path);
        return rc;
    }
    rc = read_header(f, root, n, err);
    lcm_json_free(root);
    return rc;
}

int lcm_st_open(lcm_st_file *f, const char *path, lcm_error *err) {
    memset(f, 0, sizeof *f);
    if (strlen(path) >= sizeof f->path) return lcm_fail(err, LCM_ERR_IO, "%.200s...: path too long", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    LCM_TRY(lcm_map_file(&f->map, path, err));
    int rc = read_file(f, err);
    if (rc != 0) lcm_st_close(f);
    return rc;
}

void lcm_st_close(lcm_st_file *f) {
    if (f->tensors)
        for (int i = 0; i < f->n; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    lcm_unmap_file(&f->map);
    memset(f, 0, sizeof *f);
}

const lcm_st_tensor *lcm_st_find(const lcm_st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *lcm_st_meta(const lcm_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

/* Element loads go through memcpy: the data section need not be aligned in the mapping. */
int lcm_st_to_f32(const lcm_st_tensor *t, float *out, lcm_error *err) {
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case LCM_ST_F32:
        if (t->nbytes) memcpy(out, p, (size_t)t->nbytes);
        return 0;
    case LCM_ST_F16:
    case LCM_ST_BF16:
        for (uint64_t i = 0; i < t->numel; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = t->dtype == LCM_ST_F16 ? lcm_f16_to_f32(h) : lcm_bf16_to_f32(h);
        }
        return 0;
    case LCM_ST_F64:
        for (uint64_t i = 0; i < t->numel; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        }
        return 0;
    default: {
        char name[LCM_ESC_CAP];
        return lcm_fail(err, LCM_ERR_FORMAT, "tensor '%s' is %s, not a floating-point type",
                        lcm_escape_str(name, sizeof name, t->name), lcm_st_dtype_name(t->dtype));
    }
    }
}

/* ---- writer ------------------------------------------------------------------------------------ */

typedef struct st_entry {
    char *name;
    lcm_st_dtype dtype;
    int ndim;
    int64_t shape[LCM_ST_MAX_DIMS];
    uint64_t nbytes;
    const void *data; /* borrowed */
} st_entry;

struct lcm_st_writer {
    st_entry *tensors;
    int n, cap;
    char **meta_keys, **meta_values;
    int n_meta, cap_meta;
};

lcm_st_writer *lcm_st_writer_new(void) { return calloc(1, sizeof(lcm_st_writer)); }

void lcm_st_writer_free(lcm_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->tensors[i].name);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->tensors);
    free(w->meta_keys);
    free(w->meta_values);
    free(w);
}

/* Tensor names and metadata keys: non-empty, valid UTF-8 (the header is JSON). */
static int check_name(const char *what, const char *s, lcm_error *err) {
    if (!s || !s[0]) return lcm_fail(err, LCM_ERR_INTERNAL, "safetensors writer: empty %s", what);
    if (!lcm_utf8_valid(s, strlen(s)))
        return lcm_fail(err, LCM_ERR_INTERNAL, "safetensors writer: %s '%.200s' is not valid UTF-8", what, s);
    return 0;
}

int lcm_st_add(lcm_st_writer *w, const char *name, lcm_st_dtype dtype, int ndim, const int64_t *shape,
               const void *data, lcm_error *err) {
    LCM_TRY(check_name("tensor name", name, err));
    if (strcmp(name, ST_METADATA_KEY) == 0)
        return lcm_fail(err, LCM_ERR_INTERNAL, "safetensors writer: \"__metadata__\" cannot be a tensor name");
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return lcm_fail(err, LCM_ERR_INTERNAL, "safetensors writer: tensor '%.200s' added twice", name);
    if (!dtype_valid(dtype))
        return lcm_fail(err, LCM_ERR_INTERNAL, "safetensors writer: tensor '%.200s': invalid dtype %d", name,
                        (int)dtype);
    if (ndim < 0 || ndim > LCM_ST_MAX_DIMS)
        return lcm_fail(err, LCM_ERR_INTERNAL, "safetensors writer: tensor '%.200s': %d dimensions (0 to %d allowed)",
                        name, ndim, LCM_ST_MAX_DIMS);
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0)
            return lcm_fail(err, LCM_ERR_INTERNAL, "safetensors writer: tensor '%.200s': negative size %" PRId64
                            " in dimension %d", name, shape[d], d);
    uint64_t numel, nbytes;
    if (shape_size(ndim, shape, dtype, &numel, &nbytes) != 0)
        return lcm_fail(err, LCM_ERR_INTERNAL, "safetensors writer: tensor '%.200s': shape overflows", name);
    if (nbytes > 0 && !data)
        return lcm_fail(err, LCM_ERR_INTERNAL, "safetensors writer: tensor '%.200s' has no data", name);
    if (w->n == w->cap) {
        int cap = w->cap ? w->cap * 2 : 16;
        st_entry *t = realloc(w->tensors, (size_t)cap * sizeof *t);
        if (!t) return lcm_fail(err, LCM_ERR_NOMEM, "safetensors writer: out of memory");
        w->tensors = t;
        w->cap = cap;
    }
    st_entry *e = &w->tensors[w->n];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    if (!e->name) return lcm_fail(err, LCM_ERR_NOMEM, "safetensors writer: out of memory");
    e->dtype = dtype;
    e->ndim = ndim;
    for (int d = 0; d < ndim; d++) e->shape[d] = shape[d];
    e->nbytes = nbytes;
    e->data = data;
    w->n++;
    return 0;
}

int lcm_st_add_meta(lcm_st_writer *w, const char *key, const char *value, lcm_error *err) {
    LCM_TRY(check_name("metadata key", key, err));
    if (!value || !lcm_utf8_valid(value, strlen(value)))
        return lcm_fail(err, LCM_ERR_INTERNAL, "safetensors writer: metadata value of '%.200s' is not a UTF-8 "
                        "string", key);
    for (int i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta_keys[i], key) == 0)
            return lcm_fail(err, LCM_ERR_INTERNAL, "safetensors writer: metadata key '%.200s' added twice", key);
    if (w->n_meta == w->cap_meta) {
        int cap = w->cap_meta ? w->cap_meta * 2 : 8;
        char **k = realloc(w->meta_keys, (size_t)cap * sizeof *k);
        if (k) w->meta_keys = k;
        char **v = realloc(w->meta_values, (size_t)cap * sizeof *v);
        if (v) w->meta_values = v;
        if (!k || !v) return lcm_fail(err, LCM_ERR_NOMEM, "safetensors writer: out of memory");
        w->cap_meta = cap;
    }
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return lcm_fail(err, LCM_ERR_NOMEM, "safetensors writer: out of memory");
    }
    w->meta_keys[w->n_meta] = k;
    w->meta_values[w->n_meta] = v;
    w->n_meta++;
    return 0;
}

/* The checksum metadata of st_checksum.h: one CRC-32C per tensor, then the header's. */
int lcm_st_add_checksums(lcm_st_writer *w, lcm_error *err) {
    lcm_st_tensor *ts = calloc((size_t)w->n + 1, sizeof *ts);
    if (!ts) return lcm_fail(err, LCM_ERR_NOMEM, "safetensors writer: out of memory");
    int rc = 0;
    for (int i = 0; rc == 0 && i < w->n; i++) {
        const st_entry *e = &w->tensors[i];
        ts[i] = (lcm_st_tensor){.name = e->name, .dtype = e->dtype, .ndim = e->ndim};
        memcpy(ts[i].shape, e->shape, sizeof ts[i].shape);
        lcm_sbuf key = {0};
        char value[16];
        lcm_sbuf_printf(&key, LCM_ST_CRC_PREFIX "%s", e->name);
        snprintf(value, sizeof value, "%08" PRIx32, lcm_crc32c(0, e->data, (size_t)e->nbytes));
        rc = key.oom ? lcm_fail(err, LCM_ERR_NOMEM, "safetensors writer: out of memory")
                     : lcm_st_add_meta(w, key.s, value, err);
        lcm_sbuf_free(&key);
    }
    uint32_t crc = 0;
    if (rc == 0) rc = lcm_st_header_crc(w->n_meta, w->meta_keys, w->meta_values, w->n, ts, &crc, err);
    free(ts);
    char value[16];
    snprintf(value, sizeof value, "%08" PRIx32, crc);
    return rc ? rc : lcm_st_add_meta(w, LCM_ST_HEADER_CRC_KEY, value, err);
}

/* The header JSON, padded with spaces so that the data section starts at a multiple of 8. */
static void build_header(const lcm_st_writer *w, lcm_sbuf *h) {
    int first = 1;
    lcm_sbuf_puts(h, "{");
    if (w->n_meta > 0) {
        lcm_json_key(h, &first, ST_METADATA_KEY);
        lcm_sbuf_puts(h, "{");
        int mfirst = 1;
        for (int i = 0; i < w->n_meta; i++) {
            lcm_json_key(h, &mfirst, w->meta_keys[i]);
            lcm_json_str(h, w->meta_values[i]);
        }
        lcm_sbuf_puts(h, "}");
    }
    uint64_t offset = 0;
    for (int i = 0; i < w->n; i++) {
        const st_entry *e = &w->tensors[i];
        lcm_json_key(h, &first, e->name);
        lcm_sbuf_printf(h, "{\"dtype\":\"%s\",\"shape\":[", st_dtypes[e->dtype].name);
        for (int d = 0; d < e->ndim; d++) lcm_sbuf_printf(h, d ? ",%" PRId64 : "%" PRId64, e->shape[d]);
        lcm_sbuf_printf(h, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", offset, offset + e->nbytes);
        offset += e->nbytes;
    }
    lcm_sbuf_puts(h, "}");
    while (h->len % 8 != 0) lcm_sbuf_puts(h, " ");
}

int lcm_st_write(lcm_st_writer *w, const char *path, lcm_error *err) {
    lcm_sbuf h = {0};
    build_header(w, &h);
    if (h.oom) {
        lcm_sbuf_free(&h);
        return lcm_fail(err, LCM_ERR_NOMEM, "%s: out of memory building the safetensors header", path);
    }
    if (h.len > ST_MAX_HEADER) {
        lcm_sbuf_free(&h);
        return lcm_fail(err, LCM_ERR_INTERNAL, "%s: safetensors header of %zu bytes exceeds the %llu-byte limit",
                        path, h.len, ST_MAX_HEADER);
    }
    uint8_t len_le[8];
    for (int i = 0; i < 8; i++) len_le[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    lcm_afile af;
    int rc = lcm_afile_open(&af, path, err);
    if (rc != 0) {
        lcm_sbuf_free(&h);
        return rc;
    }
    rc = lcm_afile_write(&af, len_le, sizeof len_le, err);
    if (rc == 0) rc = lcm_afile_write(&af, h.s, h.len, err);
    for (int i = 0; rc == 0 && i < w->n; i++) rc = lcm_afile_write(&af, w->tensors[i].data, w->tensors[i].nbytes, err);
    lcm_sbuf_free(&h);
    if (rc != 0) {
        lcm_afile_abort(&af);
        return rc;
    }
    return lcm_afile_commit(&af, err);
}
