/* npy.c: the NumPy .npy reader (header parser and checks) and `lcm data import` (embeddings, document
 * lengths or offsets, optional EOT and source ids from .npy files into a .lcmd dataset).
 *
 * The header is "\x93NUMPY", major, minor, a little-endian length (u16 for version 1.0, u32 for 2.0 and
 * 3.0), then a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (N, D), } padded
 * with spaces and a newline. The parser accepts exactly what numpy's own reader accepts from that
 * grammar (the three keys, string / bool / tuple-of-int values, either quote, trailing commas). */
#include "lcm/npy.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/escape.h"
#include "lcm/half.h"

/* ---- the header dict ---------------------------------------------------------------------------- */

typedef struct parser {
    const char *s, *end;
    const char *path;
    lcm_error *err;
} parser;

static void skip_ws(parser *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) p->s++;
}

static int bad_header(parser *p, const char *what) {
    return lcm_fail(p->err, LCM_ERR_FORMAT, "%s: malformed .npy header: %s; re-save the array with numpy.save",
                    p->path, what);
}

static int parse_str(parser *p, char *out, size_t cap) {
    skip_ws(p);
    if (p->s >= p->end || (*p->s != '\'' && *p->s != '"')) return bad_header(p, "expected a quoted string");
    char q = *p->s++;
    size_t n = 0;
    while (p->s < p->end && *p->s != q) {
        if (n + 1 >= cap) return bad_header(p, "string too long");
        /* A NUL would cut the string short of what the header says ("descr\0x" is not "descr"). */
        if ((unsigned char)*p->s < 0x20) return bad_header(p, "control character in a string");
        out[n++] = *p->s++;
    }
    if (p->s >= p->end) return bad_header(p, "unterminated string");
    p->s++;
    out[n] = '\0';
    return 0;
}

static int parse_bool(parser *p, int *out) {
    skip_ws(p);
    size_t left = (size_t)(p->end - p->s);
    if (left >= 4 && memcmp(p->s, "True", 4) == 0) { *out = 1; p->s += 4; return 0; }
    if (left >= 5 && memcmp(p->s, "False", 5) == 0) { *out = 0; p->s += 5; return 0; }
    return bad_header(p, "fortran_order must be True or False");
}

static int parse_shape(parser *p, lcm_npy *a) {
    skip_ws(p);
    if (p->s >= p->end || *p->s != '(') return bad_header(p, "shape must be a tuple");
    p->s++;
    a->ndim = 0;
    for (;;) {
        skip_ws(p);
        if (p->s < p->end && *p->s == ')') { p->s++; return 0; }
        if (p->s >= p->end || !isdigit((unsigned char)*p->s)) return bad_header(p, "shape must hold non-negative integers");
        uint64_t v = 0;
        while (p->s < p->end && isdigit((unsigned char)*p->s)) {
            if (v > (UINT64_MAX - 9) / 10) return bad_header(p, "shape value too large");
            v = v * 10 + (uint64_t)(*p->s++ - '0');
        }
        if (p->s < p->end && *p->s == 'L') p->s++; /* Python 2 long literal, written by old numpy */
        if (a->ndim == LCM_NPY_MAX_DIMS) return bad_header(p, "more than 8 dimensions");
        a->shape[a->ndim++] = v;
        skip_ws(p);
        if (p->s < p->end && *p->s == ',') { p->s++; continue; }
        if (p->s < p->end && *p->s == ')') { p->s++; return 0; }
        return bad_header(p, "expected ',' or ')' in shape");
    }
}

/* What a descr string means, for messages. */
static const char *descr_name(const char *d) {
    const char *t = (d[0] == '<' || d[0] == '>' || d[0] == '|' || d[0] == '=') ? d + 1 : d;
    static const char *names[][2] = {{"f2", "float16"}, {"f4", "float32"}, {"f8", "float64"}, {"i1", "int8"},
                                     {"i2", "int16"},   {"i4", "int32"},   {"i8", "int64"},   {"u1", "uint8"},
                                     {"u2", "uint16"},  {"u4", "uint32"},  {"u8", "uint64"},  {"b1", "bool"},
                                     {"c8", "complex64"}, {"c16", "complex128"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(t, names[i][0]) == 0) return names[i][1];
    return "an unsupported type";
}

static int set_type(parser *p, lcm_npy *a) {
    char shown[LCM_ESC_CAP];
    const char *d = a->descr;
    lcm_escape_str(shown, sizeof shown, d);
    if (d[0] == '>' && d[1] != '\0' && strcmp(d + 2, "1") != 0)
        return lcm_fail(p->err, LCM_ERR_FORMAT,
                        "%s: big-endian %s data ('%s') is not supported; convert it with "
                        "arr.astype(arr.dtype.newbyteorder('<')) and save again",
                        p->path, descr_name(d), shown);
    static const struct { const char *code; lcm_npy_type type; size_t elem; } known[] = {
        {"f4", LCM_NPY_F32, 4}, {"f2", LCM_NPY_F16, 2}, {"i4", LCM_NPY_I32, 4},
        {"i8", LCM_NPY_I64, 8}, {"u4", LCM_NPY_U32, 4}, {"u8", LCM_NPY_U64, 8}};
    if (d[0] == '<' || d[0] == '=')
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            if (strcmp(d + 1, known[i].code) == 0) {
                a->type = known[i].type;
                a->elem = known[i].elem;
                return 0;
            }
    return lcm_fail(p->err, LCM_ERR_FORMAT,
                    "%s: dtype '%s' (%s) is not supported; lcm reads float32 or float16 embeddings and "
                    "int32/int64 lengths — convert with arr.astype('float32') or arr.astype('int64')",
                    p->path, shown, descr_name(d));
}

static int parse_dict(parser *p, lcm_npy *a) {
    int have_descr = 0, have_order = 0, have_shape = 0, fortran = 0;
    skip_ws(p);
    if (p->s >= p->end || *p->s != '{') return bad_header(p, "expected '{'");
    p->s++;
    for (;;) {
        skip_ws(p);
        if (p->s < p->end && *p->s == '}') { p->s++; break; }
        char key[32];
        LCM_TRY(parse_str(p, key, sizeof key));
        skip_ws(p);
        if (p->s >= p->end || *p->s != ':') return bad_header(p, "expected ':' after a key");
        p->s++;
        if (strcmp(key, "descr") == 0) {
            skip_ws(p);
            if (p->s < p->end && *p->s == '[')
                return lcm_fail(p->err, LCM_ERR_FORMAT,
                                "%s: structured dtype (a record array) is not supported; save a plain float32 "
                                "or integer array",
                                p->path);
            LCM_TRY(parse_str(p, a->descr, sizeof a->descr));
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            LCM_TRY(parse_bool(p, &fortran));
            have_order = 1;
        } else if (strcmp(key, "shape") == 0) {
            LCM_TRY(parse_shape(p, a));
            have_shape = 1;
        } else {
            char what[160], shown[LCM_ESC_CAP / 2];
            snprintf(what, sizeof what, "unexpected key '%s'", lcm_escape_str(shown, sizeof shown, key));
            return bad_header(p, what);
        }
        skip_ws(p);
        if (p->s < p->end && *p->s == ',') { p->s++; continue; }
        if (p->s < p->end && *p->s == '}') { p->s++; break; }
        return bad_header(p, "expected ',' or '}'");
    }
    skip_ws(p);
    if (p->s != p->end) return bad_header(p, "unexpected text after the dict");
    if (!have_descr || !have_order || !have_shape) return bad_header(p, "'descr', 'fortran_order' and 'shape' are all required");
    if (fortran && a->ndim > 1)
        return lcm_fail(p->err, LCM_ERR_FORMAT,
                        "%s: the array is in Fortran (column-major) order; save a C-ordered copy with "
                        "numpy.save(path, numpy.ascontiguousarray(arr))",
                        p->path);
    return set_type(p, a);
}

/* ---- the file ----------------------------------------------------------------------------------- */

static int npy_validate(lcm_npy *a, const char *path, lcm_error *err) {
    const uint8_t *b = a->map.data;
    uint64_t size = a->map.size;
    if (size < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: not a .npy file (%s); save the array with numpy.save", path,
                        size < 10 ? "too short" : "bad magic");
    unsigned major = b[6], minor = b[7];
    uint64_t hlen, hstart;
    if (major == 1) {
        hlen = (uint64_t)b[8] | ((uint64_t)b[9] << 8);
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (size < 12) return lcm_fail(err, LCM_ERR_FORMAT, "%s: truncated .npy header; save the array again", path);
        hlen = (uint64_t)b[8] | ((uint64_t)b[9] << 8) | ((uint64_t)b[10] << 16) | ((uint64_t)b[11] << 24);
        hstart = 12;
    } else {
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: .npy format version %u.%u is not supported (1.0, 2.0, 3.0 are)", path,
                        major, minor);
    }
    if (hlen > size - hstart)
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: truncated: the .npy header is %llu bytes but the file has only %llu; the file "
                        "was not completely written — save it again",
                        path, (unsigned long long)hlen, (unsigned long long)(size - hstart));
    parser p = {(const char *)b + hstart, (const char *)b + hstart + hlen, path, err};
    LCM_TRY(parse_dict(&p, a));
    a->numel = 1;
    for (int i = 0; i < a->ndim; i++)
        if (__builtin_mul_overflow(a->numel, a->shape[i], &a->numel))
            return lcm_fail(err, LCM_ERR_FORMAT, "%s: the shape overflows 64 bits; the header is corrupt", path);
    uint64_t nbytes, have = size - hstart - hlen;
    char shape[160];
    lcm_npy_shape_str(a, shape, sizeof shape);
    if (__builtin_mul_overflow(a->numel, (uint64_t)a->elem, &nbytes) || nbytes > have)
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: truncated: shape %s of %s needs %llu bytes of data, the file has %llu; the file "
                        "was not completely written — save it again",
                        path, shape, descr_name(a->descr), (unsigned long long)(a->numel * a->elem),
                        (unsigned long long)have);
    if (nbytes < have)
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: %llu unexpected bytes after the data of shape %s; this is not a plain numpy.save "
                        "file — save the array again",
                        path, (unsigned long long)(have - nbytes), shape);
    a->data = b + hstart + hlen;
    return 0;
}

int lcm_npy_open(lcm_npy *a, const char *path, lcm_error *err) {
    memset(a, 0, sizeof *a);
    if (strlen(path) >= sizeof a->path) return lcm_fail(err, LCM_ERR_IO, "%s: path too long", path);
    snprintf(a->path, sizeof a->path, "%s", path);
    LCM_TRY(lcm_map_file(&a->map, path, err));
    int rc = npy_validate(a, path, err);
    if (rc != 0) lcm_npy_close(a);
    return rc;
}

void lcm_npy_close(lcm_npy *a) {
    lcm_unmap_file(&a->map);
    memset(a, 0, sizeof *a);
}

int lcm_npy_is_int(const lcm_npy *a) { return a->type != LCM_NPY_F32 && a->type != LCM_NPY_F16; }

int64_t lcm_npy_int(const lcm_npy *a, uint64_t i) {
    const uint8_t *p = a->data + i * a->elem;
    switch (a->type) {
    case LCM_NPY_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case LCM_NPY_U32: { uint32_t v; memcpy(&v, p, 4); return v; }
    case LCM_NPY_I64: { int64_t v; memcpy(&v, p, 8); return v; }
    case LCM_NPY_U64: { uint64_t v; memcpy(&v, p, 8); return (int64_t)v; }
    default: return 0;
    }
}

void lcm_npy_shape_str(const lcm_npy *a, char *out, size_t cap) {
    size_t n = (size_t)snprintf(out, cap, "(");
    for (int i = 0; i < a->ndim && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%llu", i ? ", " : "", (unsigned long long)a->shape[i]);
    if (n < cap) snprintf(out + n, cap - n, a->ndim == 1 ? ",)" : ")");
}

/* ---- import ------------------------------------------------------------------------------------- */

typedef struct import_inputs {
    lcm_npy emb, lens, eot, ids;
    uint64_t n_docs;
    int dim;
} import_inputs;

static int check_inputs(const lcm_import_spec *s, import_inputs *in, lcm_error *err) {
    char shape[160];
    lcm_npy *e = &in->emb;
    lcm_npy_shape_str(e, shape, sizeof shape);
    if (lcm_npy_is_int(e))
        return lcm_fail(err, LCM_ERR_DATA, "%s: embeddings must be float32 or float16, not %s; convert with arr.astype('float32')",
                        e->path, descr_name(e->descr));
    if (e->ndim != 2)
        return lcm_fail(err, LCM_ERR_DATA,
                        "%s: embeddings must be a 2-D array [concepts, dim], got shape %s; reshape it to "
                        "(-1, dim) before saving",
                        e->path, shape);
    if (e->shape[1] < 1 || e->shape[1] > 65536 || e->shape[0] == 0)
        return lcm_fail(err, LCM_ERR_DATA, "%s: embeddings of shape %s: need at least one row and a dimension in [1, 65536]",
                        e->path, shape);
    in->dim = (int)e->shape[1];
    uint64_t n = e->shape[0];

    lcm_npy *l = &in->lens;
    lcm_npy_shape_str(l, shape, sizeof shape);
    const char *what = s->lengths_are_offsets ? "offsets" : "lengths";
    if (!lcm_npy_is_int(l) || l->ndim != 1)
        return lcm_fail(err, LCM_ERR_DATA, "%s: document %s must be a 1-D integer array, got %s of shape %s",
                        l->path, what, descr_name(l->descr), shape);
    if (s->lengths_are_offsets) {
        if (l->numel < 2)
            return lcm_fail(err, LCM_ERR_DATA, "%s: offsets need n_docs + 1 >= 2 entries, got shape %s", l->path, shape);
        in->n_docs = l->numel - 1;
        if (lcm_npy_int(l, 0) != 0)
            return lcm_fail(err, LCM_ERR_DATA, "%s: offsets must start at 0, not %lld", l->path, (long long)lcm_npy_int(l, 0));
        for (uint64_t i = 0; i < in->n_docs; i++) {
            int64_t a = lcm_npy_int(l, i), b = lcm_npy_int(l, i + 1);
            if (b <= a)
                return lcm_fail(err, LCM_ERR_DATA,
                                "%s: offsets must increase strictly: document %llu runs from %lld to %lld (every "
                                "document needs at least one concept)",
                                l->path, (unsigned long long)i, (long long)a, (long long)b);
        }
        int64_t last = lcm_npy_int(l, in->n_docs);
        if ((uint64_t)last != n)
            return lcm_fail(err, LCM_ERR_DATA, "%s: the last offset is %lld but %s has %llu rows", l->path, (long long)last,
                            e->path, (unsigned long long)n);
    } else {
        if (l->numel == 0) return lcm_fail(err, LCM_ERR_DATA, "%s: no documents (empty lengths array)", l->path);
        in->n_docs = l->numel;
        uint64_t sum = 0;
        for (uint64_t i = 0; i < in->n_docs; i++) {
            int64_t v = lcm_npy_int(l, i);
            if (v <= 0)
                return lcm_fail(err, LCM_ERR_DATA,
                                "%s: document %llu has length %lld; every document needs at least one concept — "
                                "drop empty documents",
                                l->path, (unsigned long long)i, (long long)v);
            if (__builtin_add_overflow(sum, (uint64_t)v, &sum)) sum = UINT64_MAX;
        }
        if (sum != n)
            return lcm_fail(err, LCM_ERR_DATA,
                            "%s: the lengths sum to %llu but %s has %llu rows; they must describe every row exactly once",
                            l->path, (unsigned long long)sum, e->path, (unsigned long long)n);
    }
    if (s->eot) {
        lcm_npy *t = &in->eot;
        lcm_npy_shape_str(t, shape, sizeof shape);
        if (lcm_npy_is_int(t))
            return lcm_fail(err, LCM_ERR_DATA, "%s: the EOT embedding must be float32 or float16, not %s", t->path,
                            descr_name(t->descr));
        uint64_t d = t->ndim == 1 ? t->shape[0] : (t->ndim == 2 && t->shape[0] == 1) ? t->shape[1] : 0;
        if (d == 0)
            return lcm_fail(err, LCM_ERR_DATA, "%s: the EOT embedding must have shape (dim,) or (1, dim), got %s",
                            t->path, shape);
        if (d != (uint64_t)in->dim)
            return lcm_fail(err, LCM_ERR_DATA, "%s: the EOT embedding has dimension %llu but the embeddings in %s have %d",
                            t->path, (unsigned long long)d, e->path, in->dim);
    }
    if (s->source_ids) {
        lcm_npy *t = &in->ids;
        lcm_npy_shape_str(t, shape, sizeof shape);
        if (!lcm_npy_is_int(t) || t->ndim != 1 || t->numel != in->n_docs)
            return lcm_fail(err, LCM_ERR_DATA, "%s: source ids must be a 1-D integer array of %llu entries (one per document), got %s of shape %s",
                            t->path, (unsigned long long)in->n_docs, descr_name(t->descr), shape);
        for (uint64_t i = 0; i < in->n_docs; i++)
            if (lcm_npy_int(t, i) < 0 && t->type != LCM_NPY_U64)
                return lcm_fail(err, LCM_ERR_DATA, "%s: source id of document %llu is negative (%lld)", t->path,
                                (unsigned long long)i, (long long)lcm_npy_int(t, i));
    }
    return 0;
}

/* Rows [first, first + n) of a float npy as fp32. */
static void rows_f32(const lcm_npy *a, uint64_t first, uint64_t n, int dim, float *out) {
    size_t count = (size_t)n * (size_t)dim;
    const uint8_t *src = a->data + first * (uint64_t)dim * a->elem;
    if (a->type == LCM_NPY_F32) {
        memcpy(out, src, count * 4);
    } else {
        for (size_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = lcm_f16_to_f32(h);
        }
    }
}

static int write_docs(const lcm_import_spec *s, import_inputs *in, lcm_dataset_writer *w, lcm_dtype dt,
                      void (*progress)(void *, double), void *ctx, lcm_error *err) {
    uint64_t max_len = 0;
    for (uint64_t i = 0; i < in->n_docs; i++) {
        uint64_t len = s->lengths_are_offsets ? (uint64_t)(lcm_npy_int(&in->lens, i + 1) - lcm_npy_int(&in->lens, i))
                                              : (uint64_t)lcm_npy_int(&in->lens, i);
        if (len > max_len) max_len = len;
    }
    /* f16 stored as f16 is copied bit for bit; every other combination goes through fp32. */
    int raw = in->emb.type == LCM_NPY_F16 && dt == LCM_F16;
    float *buf = raw ? NULL : malloc((size_t)max_len * (size_t)in->dim * sizeof *buf);
    if (!raw && !buf) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory: a document of %llu concepts", (unsigned long long)max_len);
    uint64_t n = in->emb.shape[0], at = 0;
    int rc = 0;
    for (uint64_t i = 0; i < in->n_docs && rc == 0; i++) {
        uint64_t len = s->lengths_are_offsets ? (uint64_t)(lcm_npy_int(&in->lens, i + 1) - lcm_npy_int(&in->lens, i))
                                              : (uint64_t)lcm_npy_int(&in->lens, i);
        if (raw) {
            rc = lcm_dataset_writer_add_raw(w, in->emb.data + at * (uint64_t)in->dim * 2, len, err);
        } else {
            rows_f32(&in->emb, at, len, in->dim, buf);
            rc = lcm_dataset_writer_add(w, buf, len, err);
        }
        if (rc == 0 && s->source_ids) rc = lcm_dataset_writer_set_source(w, (uint64_t)lcm_npy_int(&in->ids, i), err);
        at += len;
        if (progress) progress(ctx, (double)at / (double)n);
    }
    free(buf);
    if (rc == 0 && s->eot) {
        float *eot = malloc((size_t)in->dim * sizeof *eot);
        if (!eot) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
        rows_f32(&in->eot, 0, 1, in->dim, eot);
        rc = lcm_dataset_writer_set_eot(w, eot, err);
        free(eot);
    }
    return rc;
}

int lcm_npy_import(const lcm_import_spec *s, void (*progress)(void *ctx, double frac), void *ctx,
                   lcm_import_result *result, lcm_error *err) {
    import_inputs in;
    memset(&in, 0, sizeof in);
    int rc = lcm_npy_open(&in.emb, s->embeddings, err);
    if (rc == 0) rc = lcm_npy_open(&in.lens, s->lengths, err);
    if (rc == 0 && s->eot) rc = lcm_npy_open(&in.eot, s->eot, err);
    if (rc == 0 && s->source_ids) rc = lcm_npy_open(&in.ids, s->source_ids, err);
    if (rc == 0) rc = check_inputs(s, &in, err);
    lcm_dtype dt = s->dtype ? s->dtype : in.emb.type == LCM_NPY_F16 ? LCM_F16 : LCM_F32;
    lcm_dataset_writer *w = NULL;
    if (rc == 0) rc = lcm_dataset_writer_open(&w, s->output, dt, in.dim, err);
    if (rc == 0) rc = write_docs(s, &in, w, dt, progress, ctx, err);
    if (w && rc == 0) rc = lcm_dataset_writer_commit(w, err);
    else if (w) lcm_dataset_writer_abort(w);
    if (rc == 0 && result) {
        result->n_docs = in.n_docs;
        result->n_concepts = in.emb.shape[0];
        result->dim = in.dim;
        result->dtype = dt;
        result->payload_bytes = in.emb.shape[0] * (uint64_t)in.dim * lcm_dtype_size(dt);
    }
    lcm_npy_close(&in.emb);
    lcm_npy_close(&in.lens);
    lcm_npy_close(&in.eot);
    lcm_npy_close(&in.ids);
    return rc;
}
