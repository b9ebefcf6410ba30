/* dataset.c: reading the concept dataset (.lcmd): the header codec, opening and validating a mapped
 * file, fp32 conversion of concept ranges, the NaN/Inf scan, dtype names, CRC-32.
 * The byte layout is docs/dataset-format.md; lcmd_format.h holds its constants. */
#include "lcm/dataset.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "lcm/half.h"
#include "lcmd_format.h"

/* ---- dtypes ------------------------------------------------------------------------------------ */

const char *lcm_dtype_name(lcm_dtype t) {
    switch (t) {
    case LCM_F32: return "f32";
    case LCM_F16: return "f16";
    case LCM_BF16: return "bf16";
    }
    return "?";
}

int lcm_dtype_parse(const char *s, lcm_dtype *out) {
    if (strcmp(s, "f32") == 0 || strcmp(s, "float32") == 0) *out = LCM_F32;
    else if (strcmp(s, "f16") == 0 || strcmp(s, "float16") == 0) *out = LCM_F16;
    else if (strcmp(s, "bf16") == 0 || strcmp(s, "bfloat16") == 0) *out = LCM_BF16;
    else return -1;
    return 0;
}

size_t lcm_dtype_size(lcm_dtype t) { return t == LCM_F32 ? 4 : (t == LCM_F16 || t == LCM_BF16) ? 2 : 0; }

/* ---- the header -------------------------------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

uint32_t lcmd_header_crc(const uint8_t *page) {
    static const uint8_t zero[4];
    uint32_t crc = lcm_crc32(0, page, LCMD_HEADER_CRC_AT);
    crc = lcm_crc32(crc, zero, 4);
    return lcm_crc32(crc, page + LCMD_HEADER_CRC_AT + 4, LCMD_HEADER_SIZE - LCMD_HEADER_CRC_AT - 4);
}

void lcmd_header_encode(lcmd_header *h, uint8_t *out) {
    memset(out, 0, LCMD_HEADER_SIZE);
    memcpy(out, LCMD_MAGIC, 8);
    put32(out + 8, h->version);
    put32(out + 12, h->dtype);
    put32(out + 16, h->dim);
    put32(out + 20, h->flags);
    put64(out + 24, h->n_docs);
    put64(out + 32, h->n_concepts);
    put64(out + 40, h->payload_off);
    put64(out + 48, h->payload_size);
    put64(out + 56, h->offsets_off);
    put64(out + 64, h->offsets_size);
    put64(out + 72, h->sources_off);
    put64(out + 80, h->sources_size);
    put64(out + 88, h->eot_off);
    put64(out + 96, h->eot_size);
    put64(out + 104, h->file_size);
    put32(out + 112, h->tables_crc);
    h->header_crc = lcmd_header_crc(out);
    put32(out + LCMD_HEADER_CRC_AT, h->header_crc);
}

void lcmd_header_decode(const uint8_t *in, lcmd_header *h) {
    h->version = get32(in + 8);
    h->dtype = get32(in + 12);
    h->dim = get32(in + 16);
    h->flags = get32(in + 20);
    h->n_docs = get64(in + 24);
    h->n_concepts = get64(in + 32);
    h->payload_off = get64(in + 40);
    h->payload_size = get64(in + 48);
    h->offsets_off = get64(in + 56);
    h->offsets_size = get64(in + 64);
    h->sources_off = get64(in + 72);
    h->sources_size = get64(in + 80);
    h->eot_off = get64(in + 88);
    h->eot_size = get64(in + 96);
    h->file_size = get64(in + 104);
    h->tables_crc = get32(in + 112);
    h->header_crc = get32(in + LCMD_HEADER_CRC_AT);
}

int lcmd_layout(lcmd_header *h, const char *path, lcm_error *err) {
    uint64_t elem = lcm_dtype_size((lcm_dtype)h->dtype), row, pos;
    int over = __builtin_mul_overflow((uint64_t)h->dim, elem, &row) |
               __builtin_mul_overflow(h->n_concepts, row, &h->payload_size) |
               __builtin_add_overflow(h->n_docs, 1, &h->offsets_size) |
               __builtin_mul_overflow(h->offsets_size, 8, &h->offsets_size);
    h->payload_off = LCMD_HEADER_SIZE;
    over |= __builtin_add_overflow(h->payload_off, h->payload_size, &pos) |
            __builtin_add_overflow(pos, 7, &pos);
    pos &= ~(uint64_t)7;
    h->offsets_off = pos;
    over |= __builtin_add_overflow(pos, h->offsets_size, &pos);
    h->sources_off = h->sources_size = 0;
    if (h->flags & LCMD_FLAG_SOURCE_IDS) {
        h->sources_off = pos;
        over |= __builtin_mul_overflow(h->n_docs, 8, &h->sources_size) |
                __builtin_add_overflow(pos, h->sources_size, &pos);
    }
    h->eot_off = h->eot_size = 0;
    if (h->flags & LCMD_FLAG_EOT) {
        h->eot_off = pos;
        h->eot_size = (uint64_t)h->dim * 4;
        over |= __builtin_add_overflow(pos, h->eot_size, &pos);
    }
    h->file_size = pos;
    if (over)
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: the header's counts (%llu documents, %llu concepts, dim %u) overflow 64-bit "
                        "sizes; the header is corrupt — re-create the file",
                        path, (unsigned long long)h->n_docs, (unsigned long long)h->n_concepts, h->dim);
    return 0;
}

/* ---- opening ----------------------------------------------------------------------------------- */

#define RECREATE "re-create it (lcm data import / lcm data synth / tools/parquet_to_lcmd.py)"

/* A stored table position must be the one the layout implies: anything else is a corrupt header. */
static int check_table(const char *path, const char *what, uint64_t off, uint64_t size, uint64_t want_off,
                       uint64_t want_size, lcm_error *err) {
    if (off == want_off && size == want_size) return 0;
    return lcm_fail(err, LCM_ERR_FORMAT,
                    "%s: corrupt header: the %s is recorded at offset %llu with %llu bytes, but the counts "
                    "in the header put it at offset %llu with %llu bytes; " RECREATE,
                    path, what, (unsigned long long)off, (unsigned long long)size, (unsigned long long)want_off,
                    (unsigned long long)want_size);
}

static int validate(lcm_dataset *ds, const char *path, lcm_error *err) {
    const uint8_t *base = ds->map.data;
    uint64_t size = ds->map.size;
    if (size < LCMD_HEADER_SIZE)
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: truncated: %llu bytes, smaller than the %u-byte header; the file was not "
                        "completely written — " RECREATE,
                        path, (unsigned long long)size, LCMD_HEADER_SIZE);
    if (memcmp(base, LCMD_MAGIC, 8) != 0)
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: not an lcm dataset (the first 8 bytes are not \"" LCMD_MAGIC "\"); give a .lcmd "
                        "file made by lcm data import, lcm data synth or tools/parquet_to_lcmd.py",
                        path);
    lcmd_header h;
    lcmd_header_decode(base, &h);
    if (h.version != LCMD_VERSION)
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: format version %u is not supported (this lcm reads version %u); re-create the "
                        "file with this version of lcm",
                        path, h.version, LCMD_VERSION);
    if (h.dtype != LCM_F32 && h.dtype != LCM_F16 && h.dtype != LCM_BF16)
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: corrupt header: unknown dtype code %u (1 = f32, 2 = f16, 3 = bf16); " RECREATE,
                        path, h.dtype);
    if (h.dim < 1 || h.dim > LCMD_MAX_DIM)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: corrupt header: dimension %u is outside [1, %d]; " RECREATE,
                        path, h.dim, LCMD_MAX_DIM);
    uint32_t crc = lcmd_header_crc(base);
    if (crc != h.header_crc)
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: corrupt header: checksum 0x%08x does not match the stored 0x%08x; " RECREATE, path,
                        crc, h.header_crc);
    if (h.flags & ~(LCMD_FLAG_SOURCE_IDS | LCMD_FLAG_EOT))
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: unknown flags 0x%x (this lcm knows 0x1 source ids, 0x2 EOT); the file was "
                        "written by a newer lcm — re-create it with this one",
                        path, h.flags);
    if (h.n_docs == 0)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: the dataset has no documents; " RECREATE " from non-empty data",
                        path);
    lcmd_header want = h;
    LCM_TRY(lcmd_layout(&want, path, err));
    LCM_TRY(check_table(path, "payload", h.payload_off, h.payload_size, want.payload_off, want.payload_size, err));
    LCM_TRY(check_table(path, "document-offset table", h.offsets_off, h.offsets_size, want.offsets_off,
                        want.offsets_size, err));
    LCM_TRY(check_table(path, "source-id table", h.sources_off, h.sources_size, want.sources_off,
                        want.sources_size, err));
    LCM_TRY(check_table(path, "EOT vector", h.eot_off, h.eot_size, want.eot_off, want.eot_size, err));
    if (h.file_size != want.file_size)
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: corrupt header: it records a file size of %llu bytes, its tables end at %llu; " RECREATE,
                        path, (unsigned long long)h.file_size, (unsigned long long)want.file_size);
    if (size < h.file_size)
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: truncated: the header says %llu bytes, the file has %llu; the file was not "
                        "completely written — " RECREATE,
                        path, (unsigned long long)h.file_size, (unsigned long long)size);
    if (size > h.file_size)
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: %llu unexpected bytes after the end of the dataset (the header says %llu bytes, "
                        "the file has %llu); the file was damaged — " RECREATE,
                        path, (unsigned long long)(size - h.file_size), (unsigned long long)h.file_size,
                        (unsigned long long)size);
    /* The tables are contiguous from offsets_off to the end of the file. */
    crc = lcm_crc32(0, base + h.offsets_off, (size_t)(h.file_size - h.offsets_off));
    if (crc != h.tables_crc)
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: corrupt tables: the checksum of the document offsets%s is 0x%08x, the header "
                        "stores 0x%08x; " RECREATE,
                        path, (h.flags & (LCMD_FLAG_SOURCE_IDS | LCMD_FLAG_EOT)) ? ", source ids and EOT" : "", crc,
                        h.tables_crc);

    const uint64_t *off = (const uint64_t *)(base + h.offsets_off);
    if (off[0] != 0)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: corrupt document offsets: the first is %llu, not 0; " RECREATE,
                        path, (unsigned long long)off[0]);
    for (uint64_t i = 0; i < h.n_docs; i++)
        if (off[i + 1] <= off[i])
            return lcm_fail(err, LCM_ERR_FORMAT,
                            "%s: corrupt document offsets: document %llu starts at concept %llu and ends at %llu "
                            "(every document needs at least one concept); " RECREATE,
                            path, (unsigned long long)i, (unsigned long long)off[i], (unsigned long long)off[i + 1]);
    if (off[h.n_docs] != h.n_concepts)
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: corrupt document offsets: the last document ends at concept %llu but the file "
                        "holds %llu concepts; " RECREATE,
                        path, (unsigned long long)off[h.n_docs], (unsigned long long)h.n_concepts);

    ds->version = h.version;
    ds->dtype = (lcm_dtype)h.dtype;
    ds->dim = (int)h.dim;
    ds->n_docs = h.n_docs;
    ds->n_concepts = h.n_concepts;
    ds->doc_offsets = off;
    ds->source_ids = h.sources_size ? (const uint64_t *)(base + h.sources_off) : NULL;
    ds->eot = h.eot_size ? (const float *)(base + h.eot_off) : NULL;
    ds->payload = base + h.payload_off;
    if (ds->eot)
        for (int d = 0; d < ds->dim; d++)
            if (!isfinite(ds->eot[d]))
                return lcm_fail(err, LCM_ERR_DATA,
                                "%s: the EOT vector is not finite at dimension %d; re-create the dataset with a "
                                "finite EOT embedding",
                                path, d);
    return 0;
}

int lcm_dataset_open(lcm_dataset *ds, const char *path, lcm_error *err) {
    memset(ds, 0, sizeof *ds);
    if (strlen(path) >= sizeof ds->path) return lcm_fail(err, LCM_ERR_IO, "%s: path too long", path);
    snprintf(ds->path, sizeof ds->path, "%s", path);
    LCM_TRY(lcm_map_file(&ds->map, path, err));
    int rc = validate(ds, path, err);
    if (rc != 0) lcm_dataset_close(ds);
    return rc;
}

void lcm_dataset_close(lcm_dataset *ds) {
    lcm_unmap_file(&ds->map);
    memset(ds, 0, sizeof *ds);
}

/* ---- reading ----------------------------------------------------------------------------------- */

/* f16 -> f32 through a table of all 65536 values: about 5x the speed of converting each value (the
 * batch copy runs once per micro-batch on the training path). */
static float f16_table[65536];
static pthread_once_t f16_once = PTHREAD_ONCE_INIT;

static void f16_init(void) {
    for (uint32_t i = 0; i < 65536; i++) f16_table[i] = lcm_f16_to_f32((uint16_t)i);
}

void lcm_dataset_read(const lcm_dataset *ds, uint64_t first, uint64_t count, float *out) {
    size_t n = (size_t)(count * (uint64_t)ds->dim);
    const uint8_t *src = ds->payload + first * (uint64_t)ds->dim * lcm_dtype_size(ds->dtype);
    if (ds->dtype == LCM_F32) {
        memcpy(out, src, n * 4);
        return;
    }
    const uint16_t *h = (const uint16_t *)src;
    if (ds->dtype == LCM_F16) {
        pthread_once(&f16_once, f16_init);
        for (size_t i = 0; i < n; i++) out[i] = f16_table[h[i]];
    } else {
        for (size_t i = 0; i < n; i++) out[i] = lcm_bf16_to_f32(h[i]);
    }
}

/* ---- NaN / Inf ------------------------------------------------------------------------------- */

/* A value is NaN or Inf exactly when its exponent bits are all ones: no conversion is needed. */
static int all_ones_exponent(const lcm_dataset *ds, uint64_t i) {
    if (ds->dtype == LCM_F32) {
        uint32_t u = ((const uint32_t *)ds->payload)[i];
        return (u & 0x7f800000u) == 0x7f800000u;
    }
    uint16_t h = ((const uint16_t *)ds->payload)[i];
    return ds->dtype == LCM_F16 ? (h & 0x7c00u) == 0x7c00u : (h & 0x7f80u) == 0x7f80u;
}

static int is_nan_at(const lcm_dataset *ds, uint64_t i) {
    if (ds->dtype == LCM_F32) return (((const uint32_t *)ds->payload)[i] & 0x007fffffu) != 0;
    uint16_t h = ((const uint16_t *)ds->payload)[i];
    return ds->dtype == LCM_F16 ? (h & 0x03ffu) != 0 : (h & 0x007fu) != 0;
}

/* Branch-free block scans (they vectorise); the exact element is found only once a block is bad. */
static int block_bad(const lcm_dataset *ds, uint64_t begin, uint64_t end) {
    unsigned bad = 0;
    if (ds->dtype == LCM_F32) {
        const uint32_t *u = (const uint32_t *)ds->payload;
        for (uint64_t i = begin; i < end; i++) bad |= (u[i] & 0x7f800000u) == 0x7f800000u;
    } else {
        const uint16_t *h = (const uint16_t *)ds->payload;
        uint16_t mask = ds->dtype == LCM_F16 ? 0x7c00u : 0x7f80u;
        for (uint64_t i = begin; i < end; i++) bad |= (h[i] & mask) == mask;
    }
    return bad != 0;
}

int lcm_dataset_check_finite(const lcm_dataset *ds, lcm_error *err) {
    const uint64_t block = 1u << 16;
    uint64_t total = ds->n_concepts * (uint64_t)ds->dim;
    for (uint64_t b = 0; b < total; b += block) {
        uint64_t e = b + block < total ? b + block : total;
        if (!block_bad(ds, b, e)) continue;
        uint64_t i = b;
        while (!all_ones_exponent(ds, i)) i++;
        uint64_t concept = i / (uint64_t)ds->dim;
        /* The document holding it: the last doc whose first concept is <= concept. */
        uint64_t lo = 0, hi = ds->n_docs;
        while (hi - lo > 1) {
            uint64_t mid = lo + (hi - lo) / 2;
            if (ds->doc_offsets[mid] <= concept) lo = mid; else hi = mid;
        }
        return lcm_fail(err, LCM_ERR_DATA,
                        "%s: document %llu, concept %llu of %llu (concept %llu of the file), dimension %llu is "
                        "%s; the embeddings are corrupt — re-create the dataset, or drop that document from "
                        "the source data",
                        ds->path, (unsigned long long)lo, (unsigned long long)(concept - ds->doc_offsets[lo]),
                        (unsigned long long)lcm_dataset_doc_len(ds, lo), (unsigned long long)concept,
                        (unsigned long long)(i % (uint64_t)ds->dim), is_nan_at(ds, i) ? "NaN" : "Inf");
    }
    return 0;
}
