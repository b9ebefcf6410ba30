/* writer.c: writing a .lcmd dataset. The payload is streamed document by document after a placeholder
 * header page; the document offsets, source ids and EOT vector are kept in memory and written after
 * the payload; the real header is patched in last and the file is committed atomically, so a reader
 * sees a complete file or none. Non-finite values, and values the storage dtype cannot hold, are
 * refused here, where the document they belong to is still known. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/dataset.h"
#include "lcm/half.h"
#include "lcmd_format.h"

struct lcm_dataset_writer {
    lcm_afile af;
    lcm_dtype dtype;
    int dim;
    size_t elem;
    uint64_t *offsets;   /* [n_docs + 1] */
    uint64_t offsets_cap;
    uint64_t n_docs;
    uint64_t *sources;   /* [n_sources], used once set_source has been called */
    uint64_t n_sources, sources_cap;
    int use_sources;
    float *eot;          /* [dim] or NULL */
    void *conv;          /* conversion buffer: CONV_ROWS rows of the storage dtype */
};

#define CONV_ROWS 256

int lcm_dataset_writer_open(lcm_dataset_writer **out, const char *path, lcm_dtype dtype, int dim, lcm_error *err) {
    *out = NULL;
    if (lcm_dtype_size(dtype) == 0)
        return lcm_fail(err, LCM_ERR_USAGE, "%s: unknown dtype code %d (f32, f16 or bf16)", path, (int)dtype);
    if (dim < 1 || dim > LCMD_MAX_DIM)
        return lcm_fail(err, LCM_ERR_USAGE, "%s: embedding dimension %d is outside [1, %d]", path, dim, LCMD_MAX_DIM);
    lcm_dataset_writer *w = calloc(1, sizeof *w);
    if (!w) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory creating %s", path);
    w->dtype = dtype;
    w->dim = dim;
    w->elem = lcm_dtype_size(dtype);
    w->offsets_cap = 1024;
    w->offsets = malloc(w->offsets_cap * sizeof *w->offsets);
    w->conv = malloc((size_t)CONV_ROWS * (size_t)dim * w->elem);
    if (!w->offsets || !w->conv) {
        free(w->offsets);
        free(w->conv);
        free(w);
        return lcm_fail(err, LCM_ERR_NOMEM, "out of memory creating %s", path);
    }
    w->offsets[0] = 0;
    static const uint8_t placeholder[LCMD_HEADER_SIZE];
    int rc = lcm_afile_open(&w->af, path, err);
    if (rc == 0) rc = lcm_afile_write(&w->af, placeholder, sizeof placeholder, err);
    if (rc != 0) {
        lcm_dataset_writer_abort(w);
        return rc;
    }
    *out = w;
    return 0;
}

static int value_error(lcm_dataset_writer *w, uint64_t concept, int d, float v, lcm_error *err) {
    if (!isfinite(v))
        return lcm_fail(err, LCM_ERR_DATA,
                        "%s: document %llu, concept %llu, dimension %d is %s; the embeddings are corrupt — fix "
                        "or drop that document in the source data",
                        w->af.path, (unsigned long long)w->n_docs, (unsigned long long)concept, d,
                        isnan(v) ? "NaN" : "Inf");
    return lcm_fail(err, LCM_ERR_DATA,
                    "%s: document %llu, concept %llu, dimension %d: %g does not fit in %s (largest %s); store "
                    "the dataset as %s",
                    w->af.path, (unsigned long long)w->n_docs, (unsigned long long)concept, d, (double)v,
                    lcm_dtype_name(w->dtype), w->dtype == LCM_F16 ? "65504" : "3.4e38",
                    w->dtype == LCM_F16 ? "f32 or bf16" : "f32");
}

static int begin_doc(lcm_dataset_writer *w, uint64_t n, lcm_error *err) {
    if (n == 0)
        return lcm_fail(err, LCM_ERR_DATA,
                        "%s: document %llu is empty; every document needs at least one concept — drop empty "
                        "documents from the source data",
                        w->af.path, (unsigned long long)w->n_docs);
    if (w->use_sources && w->n_sources != w->n_docs)
        return lcm_fail(err, LCM_ERR_INTERNAL, "%s: document %llu was given no source id",
                        w->af.path, (unsigned long long)(w->n_docs - 1));
    if (w->n_docs + 2 > w->offsets_cap) {
        uint64_t cap = w->offsets_cap * 2;
        uint64_t *p = realloc(w->offsets, cap * sizeof *p);
        if (!p) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory writing %s", w->af.path);
        w->offsets = p;
        w->offsets_cap = cap;
    }
    return 0;
}

static void end_doc(lcm_dataset_writer *w, uint64_t n) {
    w->offsets[w->n_docs + 1] = w->offsets[w->n_docs] + n;
    w->n_docs++;
}

int lcm_dataset_writer_add(lcm_dataset_writer *w, const float *emb, uint64_t n, lcm_error *err) {
    LCM_TRY(begin_doc(w, n, err));
    size_t dim = (size_t)w->dim;
    for (uint64_t r0 = 0; r0 < n; r0 += CONV_ROWS) {
        size_t rows = (size_t)(n - r0 < CONV_ROWS ? n - r0 : CONV_ROWS);
        const float *src = emb + r0 * dim;
        size_t count = rows * dim;
        const void *out = src;
        /* The conversion result is checked instead of the input: that also catches overflow to Inf. */
        size_t bad = count;
        if (w->dtype == LCM_F32) {
            for (size_t i = 0; i < count; i++)
                if (!isfinite(src[i])) { bad = i; break; }
        } else {
            uint16_t *h = w->conv;
            uint16_t mask = w->dtype == LCM_F16 ? 0x7c00u : 0x7f80u;
            unsigned any = 0;
            if (w->dtype == LCM_F16)
                for (size_t i = 0; i < count; i++) { h[i] = lcm_f32_to_f16(src[i]); any |= (h[i] & mask) == mask; }
            else
                for (size_t i = 0; i < count; i++) { h[i] = lcm_f32_to_bf16(src[i]); any |= (h[i] & mask) == mask; }
            if (any)
                for (size_t i = 0; i < count; i++)
                    if ((h[i] & mask) == mask) { bad = i; break; }
            out = h;
        }
        if (bad < count) return value_error(w, r0 + bad / dim, (int)(bad % dim), src[bad], err);
        LCM_TRY(lcm_afile_write(&w->af, out, count * w->elem, err));
    }
    end_doc(w, n);
    return 0;
}

int lcm_dataset_writer_add_raw(lcm_dataset_writer *w, const void *data, uint64_t n, lcm_error *err) {
    LCM_TRY(begin_doc(w, n, err));
    size_t count = (size_t)n * (size_t)w->dim;
    const uint8_t *bytes = data;
    /* Bits only: NaN and Inf are the values whose exponent is all ones. memcpy: data may be unaligned. */
    for (size_t i = 0; i < count; i++) {
        float v;
        int bad;
        if (w->dtype == LCM_F32) {
            uint32_t u;
            memcpy(&u, bytes + 4 * i, 4);
            bad = (u & 0x7f800000u) == 0x7f800000u;
            memcpy(&v, &u, 4);
        } else {
            uint16_t h;
            memcpy(&h, bytes + 2 * i, 2);
            bad = w->dtype == LCM_F16 ? (h & 0x7c00u) == 0x7c00u : (h & 0x7f80u) == 0x7f80u;
            v = w->dtype == LCM_F16 ? lcm_f16_to_f32(h) : lcm_bf16_to_f32(h);
        }
        if (bad) return value_error(w, i / (size_t)w->dim, (int)(i % (size_t)w->dim), v, err);
    }
    LCM_TRY(lcm_afile_write(&w->af, data, count * w->elem, err));
    end_doc(w, n);
    return 0;
}

int lcm_dataset_writer_set_source(lcm_dataset_writer *w, uint64_t source_id, lcm_error *err) {
    if (w->n_docs == 0)
        return lcm_fail(err, LCM_ERR_INTERNAL, "%s: a source id must follow its document's add", w->af.path);
    if (!w->use_sources) {
        if (w->n_docs != 1)
            return lcm_fail(err, LCM_ERR_INTERNAL,
                            "%s: source ids must be given for every document, but the first came after document %llu",
                            w->af.path, (unsigned long long)(w->n_docs - 1));
        w->use_sources = 1;
    }
    if (w->n_sources != w->n_docs - 1)
        return lcm_fail(err, LCM_ERR_INTERNAL, "%s: document %llu was given two source ids", w->af.path,
                        (unsigned long long)(w->n_docs - 1));
    if (w->n_sources == w->sources_cap) {
        uint64_t cap = w->sources_cap ? 2 * w->sources_cap : 1024;
        uint64_t *p = realloc(w->sources, cap * sizeof *p);
        if (!p) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory writing %s", w->af.path);
        w->sources = p;
        w->sources_cap = cap;
    }
    w->sources[w->n_sources++] = source_id;
    return 0;
}

int lcm_dataset_writer_set_eot(lcm_dataset_writer *w, const float *eot, lcm_error *err) {
    for (int d = 0; d < w->dim; d++)
        if (!isfinite(eot[d]))
            return lcm_fail(err, LCM_ERR_DATA, "%s: the EOT vector is %s at dimension %d; give a finite EOT embedding",
                            w->af.path, isnan(eot[d]) ? "NaN" : "Inf", d);
    if (!w->eot) w->eot = malloc((size_t)w->dim * sizeof *w->eot);
    if (!w->eot) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory writing %s", w->af.path);
    memcpy(w->eot, eot, (size_t)w->dim * sizeof *w->eot);
    return 0;
}

static int write_tables(lcm_dataset_writer *w, lcm_error *err) {
    if (w->n_docs == 0)
        return lcm_fail(err, LCM_ERR_DATA, "%s: no documents were added; a dataset needs at least one", w->af.path);
    if (w->use_sources && w->n_sources != w->n_docs)
        return lcm_fail(err, LCM_ERR_INTERNAL, "%s: document %llu was given no source id", w->af.path,
                        (unsigned long long)(w->n_docs - 1));
    lcmd_header h = {0};
    h.version = LCMD_VERSION;
    h.dtype = (uint32_t)w->dtype;
    h.dim = (uint32_t)w->dim;
    h.flags = (w->use_sources ? LCMD_FLAG_SOURCE_IDS : 0) | (w->eot ? LCMD_FLAG_EOT : 0);
    h.n_docs = w->n_docs;
    h.n_concepts = w->offsets[w->n_docs];
    LCM_TRY(lcmd_layout(&h, w->af.path, err));
    LCM_TRY(lcm_afile_pad(&w->af, 8, err));
    uint32_t crc = lcm_crc32(0, w->offsets, (size_t)h.offsets_size);
    LCM_TRY(lcm_afile_write(&w->af, w->offsets, (size_t)h.offsets_size, err));
    if (w->use_sources) {
        crc = lcm_crc32(crc, w->sources, (size_t)h.sources_size);
        LCM_TRY(lcm_afile_write(&w->af, w->sources, (size_t)h.sources_size, err));
    }
    if (w->eot) {
        crc = lcm_crc32(crc, w->eot, (size_t)h.eot_size);
        LCM_TRY(lcm_afile_write(&w->af, w->eot, (size_t)h.eot_size, err));
    }
    if (w->af.written != h.file_size)
        return lcm_fail(err, LCM_ERR_INTERNAL, "%s: wrote %llu bytes but the layout says %llu", w->af.path,
                        (unsigned long long)w->af.written, (unsigned long long)h.file_size);
    h.tables_crc = crc;
    uint8_t hdr[LCMD_HEADER_SIZE];
    lcmd_header_encode(&h, hdr);
    return lcm_afile_pwrite(&w->af, 0, hdr, LCMD_HEADER_SIZE, err);
}

static void writer_free(lcm_dataset_writer *w) {
    free(w->offsets);
    free(w->sources);
    free(w->eot);
    free(w->conv);
    free(w);
}

int lcm_dataset_writer_commit(lcm_dataset_writer *w, lcm_error *err) {
    int rc = write_tables(w, err);
    if (rc == 0) rc = lcm_afile_commit(&w->af, err);
    else lcm_afile_abort(&w->af);
    writer_free(w);
    return rc;
}

void lcm_dataset_writer_abort(lcm_dataset_writer *w) {
    if (!w) return;
    lcm_afile_abort(&w->af);
    writer_free(w);
}
