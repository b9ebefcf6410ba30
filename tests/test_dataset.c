/* test_dataset.c: the .lcmd format: writer/reader round trips per dtype, EOT and source ids, and that
 * every kind of damage (truncation, bad magic/version/CRC, inconsistent header, bad offsets, NaN/Inf)
 * is an error naming what is wrong, never a crash. Header byte positions used here come from
 * docs/dataset-format.md, not from the implementation. */
#include <pthread.h>
#include <stdint.h>

#include "harness.h"
#include "lcm/dataset.h"
#include "lcm/half.h"
#include "lcm/philox.h"

/* Header field positions (docs/dataset-format.md). */
enum { H_VERSION = 8, H_DTYPE = 12, H_DIM = 16, H_FLAGS = 20, H_NDOCS = 24, H_NCONCEPTS = 32,
       H_PAYLOAD_OFF = 40, H_OFFSETS_OFF = 56, H_SOURCES_OFF = 72, H_EOT_OFF = 88, H_FILE_SIZE = 104,
       H_TABLES_CRC = 112, H_HEADER_CRC = 116, HEADER = 4096 };

static uint64_t rd64(const char *b, int at) { uint64_t v; memcpy(&v, b + at, 8); return v; }
static uint32_t rd32(const char *b, int at) { uint32_t v; memcpy(&v, b + at, 4); return v; }
static void wr64(char *b, int at, uint64_t v) { memcpy(b + at, &v, 8); }
static void wr32(char *b, int at, uint32_t v) { memcpy(b + at, &v, 4); }

/* Recompute both CRCs as the format document defines them, so a test can change a field and reach
 * the checks behind the checksums. */
static void reseal(char *b, size_t size) {
    uint64_t toff = rd64(b, H_OFFSETS_OFF), fsize = rd64(b, H_FILE_SIZE);
    if (toff <= fsize && fsize <= size) wr32(b, H_TABLES_CRC, lcm_crc32(0, b + toff, (size_t)(fsize - toff)));
    wr32(b, H_HEADER_CRC, 0);
    wr32(b, H_HEADER_CRC, lcm_crc32(0, b, HEADER));
}

static float *random_data(uint64_t n, int dim, uint64_t seed) {
    float *x = malloc((size_t)n * (size_t)dim * sizeof *x);
    lcm_rng r;
    lcm_rng_init(&r, seed, 7);
    for (size_t i = 0; i < (size_t)n * (size_t)dim; i++) x[i] = (lcm_rng_uniform(&r) - 0.5f) * 0.1f;
    return x;
}

static const uint64_t lens5[5] = {3, 1, 7, 2, 5}; /* 18 concepts */

/* Five documents of lens5 from `x`, optionally with EOT and source ids. */
static int write_five(const char *path, lcm_dtype dt, int dim, const float *x, const float *eot, int sources,
                      lcm_error *err) {
    lcm_dataset_writer *w;
    LCM_TRY(lcm_dataset_writer_open(&w, path, dt, dim, err));
    uint64_t at = 0;
    for (int d = 0; d < 5; d++) {
        int rc = lcm_dataset_writer_add(w, x + at * (uint64_t)dim, lens5[d], err);
        if (rc == 0 && sources) rc = lcm_dataset_writer_set_source(w, 1000 + 10 * (uint64_t)d, err);
        if (rc != 0) {
            lcm_dataset_writer_abort(w);
            return rc;
        }
        at += lens5[d];
    }
    if (eot) {
        int rc = lcm_dataset_writer_set_eot(w, eot, err);
        if (rc != 0) {
            lcm_dataset_writer_abort(w);
            return rc;
        }
    }
    return lcm_dataset_writer_commit(w, err);
}

static float stored(lcm_dtype dt, float v) {
    if (dt == LCM_F16) return lcm_f16_to_f32(lcm_f32_to_f16(v));
    if (dt == LCM_BF16) return lcm_bf16_to_f32(lcm_f32_to_bf16(v));
    return v;
}

TEST(crc32_matches_zlib) {
    /* The standard check value of CRC-32/ISO-HDLC (zlib, Python's zlib.crc32). */
    CHECK(lcm_crc32(0, "123456789", 9) == 0xCBF43926u);
    CHECK(lcm_crc32(lcm_crc32(0, "1234", 4), "56789", 5) == 0xCBF43926u);
    CHECK(lcm_crc32(0, "", 0) == 0);
}

TEST(dtype_names) {
    lcm_dtype t;
    CHECK(lcm_dtype_parse("bf16", &t) == 0 && t == LCM_BF16);
    CHECK(lcm_dtype_parse("f16", &t) == 0 && t == LCM_F16);
    CHECK(lcm_dtype_parse("f64", &t) != 0);
    CHECK(strcmp(lcm_dtype_name(LCM_F32), "f32") == 0);
    CHECK(lcm_dtype_size(LCM_F16) == 2 && lcm_dtype_size(LCM_F32) == 4);
}

TEST(round_trip_each_dtype) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    const int dim = 13; /* odd: the payload of a 2-byte dtype is not a multiple of 8 and needs padding */
    float *x = random_data(18, dim, 1);
    float eot[13];
    for (int d = 0; d < dim; d++) eot[d] = 0.5f + (float)d;
    lcm_dtype dts[3] = {LCM_F32, LCM_F16, LCM_BF16};
    for (int k = 0; k < 3; k++) {
        char path[512];
        snprintf(path, sizeof path, "%s/rt-%s.lcmd", dir, lcm_dtype_name(dts[k]));
        CHECK_OK(write_five(path, dts[k], dim, x, k == 1 ? NULL : eot, k != 2, &err), &err);
        lcm_dataset ds;
        CHECK_OK(lcm_dataset_open(&ds, path, &err), &err);
        if (err.code) continue;
        CHECK(ds.dtype == dts[k] && ds.dim == dim && ds.n_docs == 5 && ds.n_concepts == 18 && ds.version == 1);
        uint64_t at = 0;
        for (int d = 0; d < 5; d++) {
            CHECK(ds.doc_offsets[d] == at && lcm_dataset_doc_len(&ds, (uint64_t)d) == lens5[d]);
            at += lens5[d];
        }
        float out[18 * 13];
        lcm_dataset_read(&ds, 0, 18, out);
        int same = 1;
        for (int i = 0; i < 18 * dim; i++) same &= out[i] == stored(dts[k], x[i]);
        CHECKF(same, "dtype %s: values read back differ from the half.h rounding of the input", lcm_dtype_name(dts[k]));
        /* A range in the middle. */
        lcm_dataset_read(&ds, 4, 3, out);
        same = 1;
        for (int i = 0; i < 3 * dim; i++) same &= out[i] == stored(dts[k], x[4 * dim + i]);
        CHECK(same);
        if (k == 1) {
            CHECK(ds.eot == NULL);
        } else {
            CHECK(ds.eot != NULL && ds.eot[0] == 0.5f && ds.eot[12] == 12.5f); /* EOT is fp32 at any dtype */
        }
        if (k == 2) {
            CHECK(ds.source_ids == NULL);
        } else {
            CHECK(ds.source_ids != NULL && ds.source_ids[0] == 1000 && ds.source_ids[4] == 1040);
        }
        CHECK_OK(lcm_dataset_check_finite(&ds, &err), &err);
        lcm_dataset_close(&ds);
    }
    free(x);
    lcm_rm_rf(dir, &err);
}

TEST(add_raw_is_bit_exact) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/raw.lcmd", dir);
    uint16_t h[2 * 4];
    for (int i = 0; i < 8; i++) h[i] = (uint16_t)(0x3c00u + (unsigned)i); /* f16 1.0 and the next few */
    h[5] = 0x0001;                                                          /* a subnormal survives */
    lcm_dataset_writer *w;
    CHECK_OK(lcm_dataset_writer_open(&w, path, LCM_F16, 4, &err), &err);
    CHECK_OK(lcm_dataset_writer_add_raw(w, h, 2, &err), &err);
    CHECK_OK(lcm_dataset_writer_commit(w, &err), &err);
    lcm_dataset ds;
    CHECK_OK(lcm_dataset_open(&ds, path, &err), &err);
    CHECK(memcmp(ds.payload, h, sizeof h) == 0);
    float f[8];
    lcm_dataset_read(&ds, 0, 2, f);
    CHECK(f[0] == 1.0f && f[5] == lcm_f16_to_f32(1));
    lcm_dataset_close(&ds);
    lcm_rm_rf(dir, &err);
}

TEST(writer_refuses_bad_documents) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/bad.lcmd", dir);
    float x[8] = {0};
    lcm_dataset_writer *w;
    CHECK_OK(lcm_dataset_writer_open(&w, path, LCM_F32, 4, &err), &err);
    CHECK_FAILS(lcm_dataset_writer_add(w, x, 0, &err), &err, LCM_ERR_DATA, "document 0 is empty");
    CHECK_OK(lcm_dataset_writer_add(w, x, 1, &err), &err);
    x[6] = NAN;
    CHECK_FAILS(lcm_dataset_writer_add(w, x, 2, &err), &err, LCM_ERR_DATA, "document 1, concept 1, dimension 2 is NaN");
    lcm_dataset_writer_abort(w);
    CHECK(!lcm_file_exists(path));

    /* 70000 does not fit in f16; it must not silently become Inf. */
    x[6] = 70000.0f;
    CHECK_OK(lcm_dataset_writer_open(&w, path, LCM_F16, 4, &err), &err);
    CHECK_FAILS(lcm_dataset_writer_add(w, x, 2, &err), &err, LCM_ERR_DATA, "does not fit in f16");
    lcm_dataset_writer_abort(w);

    /* Nothing added: committing is refused and nothing is left behind. */
    CHECK_OK(lcm_dataset_writer_open(&w, path, LCM_F32, 4, &err), &err);
    CHECK_FAILS(lcm_dataset_writer_commit(w, &err), &err, LCM_ERR_DATA, "no documents");
    CHECK(!lcm_file_exists(path));

    /* Source ids must cover every document. */
    x[6] = 0;
    CHECK_OK(lcm_dataset_writer_open(&w, path, LCM_F32, 4, &err), &err);
    CHECK_OK(lcm_dataset_writer_add(w, x, 1, &err), &err);
    CHECK_OK(lcm_dataset_writer_add(w, x, 1, &err), &err);
    CHECK_FAILS(lcm_dataset_writer_set_source(w, 5, &err), &err, LCM_ERR_INTERNAL, "every document");
    lcm_dataset_writer_abort(w);
    CHECK_FAILS(lcm_dataset_writer_open(&w, path, LCM_F32, 0, &err), &err, LCM_ERR_USAGE, "dimension 0");
    lcm_rm_rf(dir, &err);
}

/* ---- damage ---------------------------------------------------------------------------------- */

typedef struct good_file {
    char dir[256];
    char path[512];
    char *bytes;
    size_t size;
} good_file;

static void make_good(good_file *g, lcm_dtype dt) {
    lcm_error err = {0};
    snprintf(g->dir, sizeof g->dir, "%s", harness_tmpdir());
    snprintf(g->path, sizeof g->path, "%s/good.lcmd", g->dir);
    float *x = random_data(18, 8, 2);
    float eot[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK_OK(write_five(g->path, dt, 8, x, eot, 1, &err), &err);
    CHECK_OK(lcm_read_file(g->path, &g->bytes, &g->size, &err), &err);
    free(x);
}

static void put_file(const good_file *g, const char *b, size_t n) {
    lcm_error err = {0};
    CHECK_OK(lcm_write_file_atomic(g->path, b, n, &err), &err);
}

/* Open the damaged copy and expect a FORMAT error mentioning `needle` and the path. */
static void expect_open_fails(const good_file *g, const char *b, size_t n, const char *needle, int line) {
    lcm_error err = {0};
    put_file(g, b, n);
    lcm_dataset ds;
    int rc = lcm_dataset_open(&ds, g->path, &err);
    if (rc != LCM_ERR_FORMAT || !strstr(err.msg, needle) || !strstr(err.msg, g->path) || strchr(err.msg, '\n')) {
        fprintf(stderr, "  line %d: expected a one-line format error containing \"%s\", got %d: %s\n", line, needle,
                rc, err.msg);
        harness_failed = 1;
    }
    if (rc == 0) lcm_dataset_close(&ds);
}
#define EXPECT_OPEN_FAILS(g, b, n, needle) expect_open_fails(g, b, n, needle, __LINE__)

TEST(truncated_files) {
    good_file g;
    make_good(&g, LCM_F32);
    uint64_t payload_mid = HEADER + 100, tables = rd64(g.bytes, H_OFFSETS_OFF);
    size_t cuts[] = {0, 10, 100, HEADER - 1, HEADER, (size_t)payload_mid, (size_t)tables, (size_t)tables + 12,
                     g.size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) EXPECT_OPEN_FAILS(&g, g.bytes, cuts[i], "truncated");
    /* The message says what the header expected and what the file has. */
    lcm_error err = {0};
    put_file(&g, g.bytes, g.size - 1);
    lcm_dataset ds;
    char want[128];
    snprintf(want, sizeof want, "header says %zu bytes, the file has %zu", g.size, g.size - 1);
    CHECK_FAILS(lcm_dataset_open(&ds, g.path, &err), &err, LCM_ERR_FORMAT, want);
    /* A byte too many is damage too. */
    char *longer = malloc(g.size + 1);
    memcpy(longer, g.bytes, g.size);
    longer[g.size] = 0;
    EXPECT_OPEN_FAILS(&g, longer, g.size + 1, "unexpected bytes");
    free(longer);
    free(g.bytes);
    lcm_rm_rf(g.dir, &err);
}

TEST(bad_magic_version_crc) {
    good_file g;
    make_good(&g, LCM_F16);
    char *b = malloc(g.size);
    memcpy(b, g.bytes, g.size);
    b[0] = 'X';
    EXPECT_OPEN_FAILS(&g, b, g.size, "not an lcm dataset");
    memcpy(b, g.bytes, g.size);
    wr32(b, H_VERSION, 2);
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "format version 2 is not supported");
    memcpy(b, g.bytes, g.size);
    wr32(b, H_DTYPE, 9);
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "unknown dtype code 9");
    memcpy(b, g.bytes, g.size);
    wr32(b, H_DIM, 70000);
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "dimension 70000 is outside");
    /* Any changed header byte without a matching CRC, reserved bytes included. */
    memcpy(b, g.bytes, g.size);
    b[H_NDOCS] ^= 1;
    EXPECT_OPEN_FAILS(&g, b, g.size, "corrupt header: checksum");
    memcpy(b, g.bytes, g.size);
    b[3000] ^= 0x40;
    EXPECT_OPEN_FAILS(&g, b, g.size, "corrupt header: checksum");
    /* A changed table byte. */
    memcpy(b, g.bytes, g.size);
    b[rd64(b, H_SOURCES_OFF) + 3] ^= 1;
    EXPECT_OPEN_FAILS(&g, b, g.size, "corrupt tables");
    memcpy(b, g.bytes, g.size);
    b[rd64(b, H_EOT_OFF) + 1] ^= 1;
    EXPECT_OPEN_FAILS(&g, b, g.size, "corrupt tables");
    /* Unknown flags: written by a newer lcm. */
    memcpy(b, g.bytes, g.size);
    wr32(b, H_FLAGS, rd32(b, H_FLAGS) | 8);
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "unknown flags");
    free(b);
    free(g.bytes);
    lcm_error err = {0};
    lcm_rm_rf(g.dir, &err);
}

TEST(inconsistent_header) {
    good_file g;
    make_good(&g, LCM_F32);
    char *b = malloc(g.size);
    /* Dimension that disagrees with the sizes. */
    memcpy(b, g.bytes, g.size);
    wr32(b, H_DIM, 9);
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "payload");
    /* Concept count that disagrees with the payload. */
    memcpy(b, g.bytes, g.size);
    wr64(b, H_NCONCEPTS, 17);
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "payload");
    /* Tables moved or misaligned. */
    memcpy(b, g.bytes, g.size);
    wr64(b, H_OFFSETS_OFF, rd64(b, H_OFFSETS_OFF) + 4);
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "document-offset table");
    memcpy(b, g.bytes, g.size);
    wr64(b, H_PAYLOAD_OFF, 0);
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "payload");
    /* Astronomical counts must not overflow into a small size. */
    memcpy(b, g.bytes, g.size);
    wr64(b, H_NCONCEPTS, UINT64_MAX / 4);
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "overflow");
    memcpy(b, g.bytes, g.size);
    wr64(b, H_NDOCS, UINT64_MAX);
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "overflow");
    memcpy(b, g.bytes, g.size);
    wr64(b, H_NDOCS, 0);
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "no documents");
    free(b);
    free(g.bytes);
    lcm_error err = {0};
    lcm_rm_rf(g.dir, &err);
}

TEST(bad_document_offsets) {
    good_file g;
    make_good(&g, LCM_BF16);
    char *b = malloc(g.size);
    uint64_t t = rd64(g.bytes, H_OFFSETS_OFF);
    /* offsets are 0 3 4 11 13 18 */
    memcpy(b, g.bytes, g.size);
    wr64(b, (int)t, 1);
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "the first is 1");
    memcpy(b, g.bytes, g.size);
    wr64(b, (int)t + 16, 3); /* document 1 empty */
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "document 1 starts at concept 3 and ends at 3");
    memcpy(b, g.bytes, g.size);
    wr64(b, (int)t + 24, 2); /* not monotonic */
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "document 2 starts at concept 4 and ends at 2");
    memcpy(b, g.bytes, g.size);
    wr64(b, (int)t + 40, 17);
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "ends at concept 17 but the file holds 18");
    memcpy(b, g.bytes, g.size);
    wr64(b, (int)t + 40, 1u << 30); /* out of range */
    reseal(b, g.size);
    EXPECT_OPEN_FAILS(&g, b, g.size, "holds 18 concepts");
    free(b);
    free(g.bytes);
    lcm_error err = {0};
    lcm_rm_rf(g.dir, &err);
}

TEST(check_finite_names_the_document) {
    lcm_dtype dts[3] = {LCM_F32, LCM_F16, LCM_BF16};
    for (int k = 0; k < 3; k++) {
        good_file g;
        make_good(&g, dts[k]);
        size_t elem = lcm_dtype_size(dts[k]);
        for (int nan = 0; nan < 2; nan++) {
            char *b = malloc(g.size);
            memcpy(b, g.bytes, g.size);
            /* document 2 is concepts 4..10: concept 5 of the file is concept 1 of document 2; dim 3 */
            size_t at = HEADER + (5 * 8 + 3) * elem;
            if (dts[k] == LCM_F32) wr32(b, (int)at, nan ? 0x7fc00000u : 0xff800000u);
            else if (dts[k] == LCM_F16) { uint16_t v = nan ? 0x7e00 : 0x7c00; memcpy(b + at, &v, 2); }
            else { uint16_t v = nan ? 0x7fc0 : 0xff80; memcpy(b + at, &v, 2); }
            put_file(&g, b, g.size); /* the payload is not checksummed: open succeeds */
            lcm_error err = {0};
            lcm_dataset ds;
            CHECK_OK(lcm_dataset_open(&ds, g.path, &err), &err);
            if (err.code == 0) {
                CHECK_FAILS(lcm_dataset_check_finite(&ds, &err), &err, LCM_ERR_DATA,
                            nan ? "document 2, concept 1 of 7 (concept 5 of the file), dimension 3 is NaN"
                                : "document 2, concept 1 of 7 (concept 5 of the file), dimension 3 is Inf");
                lcm_dataset_close(&ds);
            }
            free(b);
        }
        free(g.bytes);
        lcm_error err = {0};
        lcm_rm_rf(g.dir, &err);
    }
}

TEST(check_finite_last_element) {
    /* The scan covers the very last value of a payload larger than one scan block. */
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/big.lcmd", dir);
    const int dim = 100;
    const uint64_t n = 1000; /* 100000 values: more than one 65536-value block */
    float *x = random_data(n, dim, 3);
    lcm_dataset_writer *w;
    CHECK_OK(lcm_dataset_writer_open(&w, path, LCM_F32, dim, &err), &err);
    CHECK_OK(lcm_dataset_writer_add(w, x, n - 1, &err), &err);
    CHECK_OK(lcm_dataset_writer_add(w, x, 1, &err), &err);
    CHECK_OK(lcm_dataset_writer_commit(w, &err), &err);
    char *b;
    size_t size;
    CHECK_OK(lcm_read_file(path, &b, &size, &err), &err);
    wr32(b, (int)(HEADER + (n * dim - 1) * 4), 0x7f800000u);
    CHECK_OK(lcm_write_file_atomic(path, b, size, &err), &err);
    lcm_dataset ds;
    CHECK_OK(lcm_dataset_open(&ds, path, &err), &err);
    CHECK_FAILS(lcm_dataset_check_finite(&ds, &err), &err, LCM_ERR_DATA, "document 1, concept 0 of 1 (concept 999 of the file), dimension 99 is Inf");
    lcm_dataset_close(&ds);
    free(b);
    free(x);
    lcm_rm_rf(dir, &err);
}

/* Random damage must give success or an error, never a crash (run it under `make asan`). */
TEST(fuzzed_headers_never_crash) {
    good_file g;
    make_good(&g, LCM_F16);
    char *b = malloc(g.size + 64);
    lcm_rng r;
    lcm_rng_init(&r, 42, 1);
    int refused = 0;
    float out[18 * 8];
    for (int it = 0; it < 600; it++) {
        memcpy(b, g.bytes, g.size);
        size_t n = g.size;
        int kind = it % 3;
        int flips = 1 + (int)(lcm_rng_u32(&r) % 4);
        for (int f = 0; f < flips; f++) {
            size_t at = kind == 2 ? lcm_rng_u32(&r) % g.size : lcm_rng_u32(&r) % 128;
            b[at] = (char)lcm_rng_u32(&r);
        }
        /* kind 1: also reseal, so damaged fields get past the checksum to the layout checks */
        if (kind == 1) reseal(b, n);
        if (lcm_rng_u32(&r) % 8 == 0) n = lcm_rng_u32(&r) % (g.size + 64);
        put_file(&g, b, n);
        lcm_error err = {0};
        lcm_dataset ds;
        int rc = lcm_dataset_open(&ds, g.path, &err);
        if (rc == 0) {
            /* Whatever opened must be readable end to end. */
            CHECK(ds.n_concepts <= 18 * 8 && ds.dim >= 1);
            if (ds.n_concepts * (uint64_t)ds.dim <= 18 * 8) lcm_dataset_read(&ds, 0, ds.n_concepts, out);
            for (uint64_t d = 0; d < ds.n_docs; d++) CHECK(lcm_dataset_doc_len(&ds, d) >= 1);
            lcm_dataset_check_finite(&ds, &err);
            lcm_dataset_close(&ds);
        } else {
            refused++;
            CHECKF(rc == LCM_ERR_FORMAT || rc == LCM_ERR_DATA, "rc %d: %s", rc, err.msg);
            CHECK(err.msg[0] != '\0' && !strchr(err.msg, '\n'));
        }
    }
    CHECK(refused > 300); /* most damage is detected (payload flips are not, by design) */
    free(b);
    free(g.bytes);
    lcm_error err = {0};
    lcm_rm_rf(g.dir, &err);
}

/* ---- the text side file ----------------------------------------------------------------------- */

TEST(text_round_trip_and_damage) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512], other[512];
    lcm_text_path_for("data/train.lcmd", other, sizeof other);
    CHECK(strcmp(other, "data/train.text") == 0);
    lcm_text_path_for("x.bin", other, sizeof other);
    CHECK(strcmp(other, "x.bin.text") == 0);
    snprintf(path, sizeof path, "%s/t.text", dir);
    const char *s[4] = {"Hello world.", "", "Grüße, 世界 🙂", "End of text."};
    lcm_text_writer *w;
    CHECK_OK(lcm_text_writer_open(&w, path, &err), &err);
    for (int i = 0; i < 4; i++) CHECK_OK(lcm_text_writer_add(w, s[i], strlen(s[i]), &err), &err);
    CHECK_FAILS(lcm_text_writer_add(w, "bad \xc3\x28", 6, &err), &err, LCM_ERR_DATA, "sentence 4 is not valid UTF-8 (at byte 4)");
    CHECK_FAILS(lcm_text_writer_add(w, "\xed\xa0\x80", 3, &err), &err, LCM_ERR_DATA, "not valid UTF-8"); /* surrogate */
    CHECK_FAILS(lcm_text_writer_add(w, "\xc0\xaf", 2, &err), &err, LCM_ERR_DATA, "not valid UTF-8");     /* overlong */
    CHECK_OK(lcm_text_writer_commit(w, &err), &err);
    lcm_text t;
    CHECK_OK(lcm_text_open(&t, path, 4, &err), &err);
    CHECK(t.n == 4);
    for (uint64_t i = 0; i < t.n && i < 4; i++) {
        size_t n;
        const char *got = lcm_text_get(&t, i, &n);
        CHECK(n == strlen(s[i]) && memcmp(got, s[i], n) == 0);
    }
    lcm_text_close(&t);
    CHECK_FAILS(lcm_text_open(&t, path, 5, &err), &err, LCM_ERR_FORMAT, "holds 4 sentences but its dataset has 5 concepts");

    char *b;
    size_t size;
    CHECK_OK(lcm_read_file(path, &b, &size, &err), &err);
    CHECK_OK(lcm_write_file_atomic(path, b, size - 3, &err), &err);
    CHECK_FAILS(lcm_text_open(&t, path, 0, &err), &err, LCM_ERR_FORMAT, "truncated");
    b[70] ^= 1; /* a text byte */
    CHECK_OK(lcm_write_file_atomic(path, b, size, &err), &err);
    CHECK_FAILS(lcm_text_open(&t, path, 0, &err), &err, LCM_ERR_FORMAT, "corrupt contents");
    b[70] ^= 1;
    b[17] ^= 1; /* the sentence count */
    CHECK_OK(lcm_write_file_atomic(path, b, size, &err), &err);
    CHECK_FAILS(lcm_text_open(&t, path, 0, &err), &err, LCM_ERR_FORMAT, "corrupt header");
    b[0] = 'X';
    CHECK_OK(lcm_write_file_atomic(path, b, size, &err), &err);
    CHECK_FAILS(lcm_text_open(&t, path, 0, &err), &err, LCM_ERR_FORMAT, "not an lcm text file");
    free(b);
    lcm_rm_rf(dir, &err);
}

/* ---- the normalizer fit ----------------------------------------------------------------------- */

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* numpy.quantile(v, q) with the default "linear" method, by sorting. */
static double np_quantile(const float *v, size_t n, double q) {
    float *s = malloc(n * sizeof *s);
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_float);
    double pos = q * (double)(n - 1);
    size_t k = (size_t)floor(pos);
    double r = k + 1 < n ? s[k] + (pos - (double)k) * ((double)s[k + 1] - s[k]) : s[k];
    free(s);
    return r;
}

TEST(normalizer_fit_matches_sorted_quantiles) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512], np[512];
    snprintf(path, sizeof path, "%s/n.lcmd", dir);
    lcm_normalizer_path_for(path, np, sizeof np);
    char want_np[512];
    snprintf(want_np, sizeof want_np, "%s/normalizer.safetensors", dir);
    CHECK(strcmp(np, want_np) == 0);
    lcm_normalizer_path_for("train.lcmd", np, sizeof np);
    CHECK(strcmp(np, "normalizer.safetensors") == 0);

    /* Sizes that exercise every interpolation case: n - 1 divisible by 4 or not, tiny n, ties; each
     * dtype (f16/bf16 are counted, f32 selected: two code paths, one answer). */
    const uint64_t sizes[] = {1, 2, 3, 4, 5, 10, 101, 1000};
    const int dim = 5;
    for (int k = 0; k < 3; k++) {
        lcm_dtype dt = k == 0 ? LCM_F32 : k == 1 ? LCM_F16 : LCM_BF16;
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            uint64_t n = sizes[si];
            float *x = random_data(n, dim, 10 + si);
            for (uint64_t i = 0; i < n; i++) {
                x[i * dim + 1] = (float)(i % 3);                                   /* many ties */
                x[i * dim + 4] = 0.25f;                                            /* constant: no spread */
                x[i * dim + 2] = x[i * dim + 2] * 100 + (float)(i % 2 ? 1 : -1);   /* bimodal, both signs */
            }
            lcm_dataset_writer *w;
            CHECK_OK(lcm_dataset_writer_open(&w, path, dt, dim, &err), &err);
            CHECK_OK(lcm_dataset_writer_add(w, x, n, &err), &err);
            CHECK_OK(lcm_dataset_writer_commit(w, &err), &err);
            lcm_dataset ds;
            CHECK_OK(lcm_dataset_open(&ds, path, &err), &err);
            lcm_normalizer nz;
            CHECK_OK(lcm_normalizer_fit(&nz, &ds, 0, 1, &err), &err);
            float *col = malloc(n * sizeof *col);
            for (int d = 0; d < dim && !err.code; d++) {
                for (uint64_t i = 0; i < n; i++) col[i] = stored(dt, x[i * dim + d]);
                double med = np_quantile(col, n, 0.5);
                double iqr = np_quantile(col, n, 0.75) - np_quantile(col, n, 0.25);
                /* fp32 storage of values computed in double: agree to float rounding. */
                CHECKF(fabs(nz.center[d] - med) <= 1e-6 * (1 + fabs(med)), "%s n %llu dim %d center %g want %g",
                       lcm_dtype_name(dt), (unsigned long long)n, d, nz.center[d], med);
                double want_scale = iqr > 0 ? iqr / 1.3489795003921634 : 1.0;
                CHECKF(fabs(nz.scale[d] - want_scale) <= 1e-6 * (1 + want_scale), "%s n %llu dim %d scale %g want %g",
                       lcm_dtype_name(dt), (unsigned long long)n, d, nz.scale[d], want_scale);
            }
            free(col);
            lcm_normalizer_free(&nz);
            lcm_dataset_close(&ds);
            free(x);
        }
    }
    lcm_rm_rf(dir, &err);
}

TEST(normalizer_fit_sampled_and_identity) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/g.lcmd", dir);
    /* Gaussian data N(0.3, 0.02^2) in bf16: IQR / 1.349 estimates the std. */
    const uint64_t n = 20000;
    const int dim = 4;
    float *x = malloc(n * dim * sizeof *x);
    lcm_rng r;
    lcm_rng_init(&r, 5, 0);
    for (uint64_t i = 0; i < n * dim; i++) {
        double u1 = ((double)lcm_rng_u32(&r) + 0.5) / 4294967296.0, u2 = lcm_rng_uniform(&r);
        x[i] = (float)(0.3 + 0.02 * sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
    }
    lcm_dataset_writer *w;
    CHECK_OK(lcm_dataset_writer_open(&w, path, LCM_BF16, dim, &err), &err);
    CHECK_OK(lcm_dataset_writer_add(w, x, n / 2, &err), &err);
    CHECK_OK(lcm_dataset_writer_add(w, x + n / 2 * dim, n / 2, &err), &err);
    CHECK_OK(lcm_dataset_writer_commit(w, &err), &err);
    lcm_dataset ds;
    CHECK_OK(lcm_dataset_open(&ds, path, &err), &err);
    lcm_normalizer a, b;
    CHECK_OK(lcm_normalizer_fit(&a, &ds, 5000, 3, &err), &err);
    CHECK_OK(lcm_normalizer_fit(&b, &ds, 5000, 3, &err), &err);
    for (int d = 0; d < dim && !err.code; d++) {
        /* 5000 samples: the median's standard error is 1.25 * 0.02 / sqrt(5000) = 0.00035, the IQR-based
         * scale's about 0.02 * 1.1 / sqrt(5000) = 0.0003; bf16 steps near 0.3 are 2^-9 = 0.002, which
         * moves each quartile by up to 0.001 and the scale by up to 0.0015; 0.003 covers both. */
        CHECK_NEAR(a.center[d], 0.3, 0.003);
        CHECK_NEAR(a.scale[d], 0.02, 0.003);
        CHECK(a.center[d] == b.center[d] && a.scale[d] == b.scale[d]); /* seeded: repeatable */
    }
    lcm_normalizer_free(&a);
    lcm_normalizer_free(&b);
    lcm_dataset_close(&ds);
    lcm_normalizer id;
    CHECK_OK(lcm_normalizer_identity(&id, 3, &err), &err);
    CHECK(id.dim == 3 && id.center[2] == 0.0f && id.scale[2] == 1.0f);
    lcm_normalizer_free(&id);
    free(x);
    lcm_rm_rf(dir, &err);
}

/* Worker threads share one mapped dataset: concurrent first reads (the f16 table and the CRC table
 * are built on first use) must agree with a single-threaded read (run under `make tsan`). */

typedef struct reader_arg {
    const lcm_dataset *ds;
    float *out;
    uint32_t crc;
} reader_arg;

static void *reader(void *p) {
    reader_arg *a = p;
    lcm_dataset_read(a->ds, 0, a->ds->n_concepts, a->out);
    a->crc = lcm_crc32(0, a->out, a->ds->n_concepts * (uint64_t)a->ds->dim * sizeof(float));
    return NULL;
}

TEST(concurrent_readers_agree) {
    good_file g;
    make_good(&g, LCM_F16);
    lcm_error err = {0};
    lcm_dataset ds;
    CHECK_OK(lcm_dataset_open(&ds, g.path, &err), &err);
    if (!err.code) {
        reader_arg args[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            args[i].ds = &ds;
            args[i].out = malloc(ds.n_concepts * (size_t)ds.dim * sizeof(float));
            pthread_create(&th[i], NULL, reader, &args[i]);
        }
        for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
        float *want = random_data(18, 8, 2);
        int same = 1;
        for (int i = 0; i < 18 * 8; i++) same &= args[0].out[i] == stored(LCM_F16, want[i]);
        CHECK(same);
        for (int i = 0; i < 4; i++) {
            CHECK(args[i].crc == args[0].crc);
            free(args[i].out);
        }
        free(want);
        lcm_dataset_close(&ds);
    }
    free(g.bytes);
    lcm_rm_rf(g.dir, &err);
}
