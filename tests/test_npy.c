/* test_npy.c: the .npy header parser (versions, dict spellings, refused dtypes and layouts, size checks)
 * and `lcm data import` (round trips per input/storage dtype, lengths vs offsets, EOT and source ids,
 * and every malformed input refused before anything is written). The .npy files are built byte by
 * byte here, following the NumPy format specification, so malformed variants are easy to make. */
#include <stdint.h>

#include "harness.h"
#include "lcm/dataset.h"
#include "lcm/half.h"
#include "lcm/npy.h"

static char tmp[256];

static const char *p(const char *name) {
    static char buf[16][512]; /* a spec literal holds up to 5 of these at once */
    static int k;
    k = (k + 1) % 16;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmp, name);
    return buf[k];
}

/* A .npy file: magic, version major.0, header length, dict padded with spaces + '\n' to a multiple of
 * 64 bytes, data. keep < total truncates the file. */
static void write_npy_v(const char *path, int major, const char *dict, const void *data, size_t nbytes, size_t keep) {
    size_t pre = major == 1 ? 10 : 12;
    size_t hl = strlen(dict) + 1;
    size_t total_h = (pre + hl + 63) / 64 * 64;
    size_t len = total_h - pre;
    char *b = calloc(1, total_h + nbytes);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (char)major;
    b[7] = 0;
    if (major == 1) {
        b[8] = (char)(len & 0xff);
        b[9] = (char)(len >> 8);
    } else {
        uint32_t l32 = (uint32_t)len;
        memcpy(b + 8, &l32, 4);
    }
    memset(b + pre, ' ', len);
    memcpy(b + pre, dict, strlen(dict));
    b[total_h - 1] = '\n';
    if (nbytes) memcpy(b + total_h, data, nbytes);
    size_t total = total_h + nbytes;
    lcm_error err = {0};
    CHECK_OK(lcm_write_file_atomic(path, b, keep < total ? keep : total, &err), &err);
    free(b);
}

static void write_npy(const char *path, const char *descr, const char *shape, const void *data, size_t nbytes) {
    char dict[256];
    snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
    write_npy_v(path, 1, dict, data, nbytes, SIZE_MAX);
}

static void setup(void) { snprintf(tmp, sizeof tmp, "%s", harness_tmpdir()); }
static void teardown(void) {
    lcm_error err = {0};
    lcm_rm_rf(tmp, &err);
}

TEST(header_spellings) {
    setup();
    float d[6] = {1, 2, 3, 4, 5, 6};
    lcm_error err = {0};
    lcm_npy a;
    const char *dicts[] = {
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
        "{\"shape\": (2, 3), \"descr\": \"<f4\", \"fortran_order\": False}",
        "{'descr':'<f4','fortran_order':False,'shape':(2L,3L)}",
        "{ 'fortran_order' : False , 'shape' : ( 2 , 3 , ) , 'descr' : '=f4' , }",
    };
    for (int major = 1; major <= 3; major++)
        for (size_t i = 0; i < sizeof dicts / sizeof dicts[0]; i++) {
            write_npy_v(p("a.npy"), major, dicts[i], d, sizeof d, SIZE_MAX);
            CHECK_OK(lcm_npy_open(&a, p("a.npy"), &err), &err);
            CHECKF(a.ndim == 2 && a.shape[0] == 2 && a.shape[1] == 3 && a.numel == 6 && a.type == LCM_NPY_F32,
                   "version %d, dict %zu", major, i);
            float got;
            memcpy(&got, a.data + 5 * 4, 4);
            CHECK(got == 6.0f);
            lcm_npy_close(&a);
        }
    int64_t ints[3] = {5, -1, 7};
    write_npy(p("i.npy"), "<i8", "(3,)", ints, sizeof ints);
    CHECK_OK(lcm_npy_open(&a, p("i.npy"), &err), &err);
    CHECK(a.ndim == 1 && a.shape[0] == 3 && lcm_npy_is_int(&a) && lcm_npy_int(&a, 1) == -1 && lcm_npy_int(&a, 2) == 7);
    char s[64];
    lcm_npy_shape_str(&a, s, sizeof s);
    CHECK(strcmp(s, "(3,)") == 0);
    lcm_npy_close(&a);
    /* fortran_order True is harmless for 1-D data (the same bytes). */
    write_npy_v(p("f1.npy"), 1, "{'descr': '<i8', 'fortran_order': True, 'shape': (3,), }", ints, sizeof ints, SIZE_MAX);
    CHECK_OK(lcm_npy_open(&a, p("f1.npy"), &err), &err);
    lcm_npy_close(&a);
    teardown();
}

TEST(header_errors) {
    setup();
    float d[6] = {0};
    lcm_error err = {0};
    lcm_npy a;
    write_npy(p("ok.npy"), "<f4", "(2, 3)", d, sizeof d);
    char *bytes;
    size_t n;
    CHECK_OK(lcm_read_file(p("ok.npy"), &bytes, &n, &err), &err);
    bytes[1] = 'X';
    CHECK_OK(lcm_write_file_atomic(p("magic.npy"), bytes, n, &err), &err);
    CHECK_FAILS(lcm_npy_open(&a, p("magic.npy"), &err), &err, LCM_ERR_FORMAT, "bad magic");
    free(bytes);
    write_npy_v(p("short.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", d, sizeof d, 128 + 10); /* the padded header is 128 bytes */
    CHECK_FAILS(lcm_npy_open(&a, p("short.npy"), &err), &err, LCM_ERR_FORMAT, "truncated: shape (2, 3) of float32 needs 24 bytes of data, the file has 10");
    write_npy_v(p("shorth.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", d, sizeof d, 30);
    CHECK_FAILS(lcm_npy_open(&a, p("shorth.npy"), &err), &err, LCM_ERR_FORMAT, "truncated: the .npy header");
    write_npy_v(p("v4.npy"), 4, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", d, sizeof d, SIZE_MAX);
    CHECK_FAILS(lcm_npy_open(&a, p("v4.npy"), &err), &err, LCM_ERR_FORMAT, "version 4.0 is not supported");
    write_npy_v(p("fo.npy"), 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", d, sizeof d, SIZE_MAX);
    CHECK_FAILS(lcm_npy_open(&a, p("fo.npy"), &err), &err, LCM_ERR_FORMAT, "Fortran (column-major) order");
    write_npy(p("be.npy"), ">f4", "(2, 3)", d, sizeof d);
    CHECK_FAILS(lcm_npy_open(&a, p("be.npy"), &err), &err, LCM_ERR_FORMAT, "big-endian float32 data ('>f4')");
    double d8[6] = {0};
    write_npy(p("f8.npy"), "<f8", "(2, 3)", d8, sizeof d8);
    CHECK_FAILS(lcm_npy_open(&a, p("f8.npy"), &err), &err, LCM_ERR_FORMAT, "dtype '<f8' (float64) is not supported");
    write_npy(p("u1.npy"), "|u1", "(6,)", d, 6);
    CHECK_FAILS(lcm_npy_open(&a, p("u1.npy"), &err), &err, LCM_ERR_FORMAT, "'|u1' (uint8)");
    write_npy_v(p("rec.npy"), 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,), }", d, sizeof d, SIZE_MAX);
    CHECK_FAILS(lcm_npy_open(&a, p("rec.npy"), &err), &err, LCM_ERR_FORMAT, "structured dtype");
    write_npy_v(p("nokey.npy"), 1, "{'descr': '<f4', 'shape': (2, 3), }", d, sizeof d, SIZE_MAX);
    CHECK_FAILS(lcm_npy_open(&a, p("nokey.npy"), &err), &err, LCM_ERR_FORMAT, "are all required");
    write_npy_v(p("extra.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", d, sizeof d, SIZE_MAX);
    CHECK_FAILS(lcm_npy_open(&a, p("extra.npy"), &err), &err, LCM_ERR_FORMAT, "unexpected key 'x'");
    write_npy_v(p("junk.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3)}", d, sizeof d, SIZE_MAX);
    CHECK_FAILS(lcm_npy_open(&a, p("junk.npy"), &err), &err, LCM_ERR_FORMAT, "malformed .npy header");
    write_npy_v(p("huge.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", d, sizeof d, SIZE_MAX);
    CHECK_FAILS(lcm_npy_open(&a, p("huge.npy"), &err), &err, LCM_ERR_FORMAT, "overflows");
    /* Data beyond what the shape describes. */
    write_npy(p("long.npy"), "<f4", "(5,)", d, sizeof d);
    CHECK_FAILS(lcm_npy_open(&a, p("long.npy"), &err), &err, LCM_ERR_FORMAT, "4 unexpected bytes");
    CHECK_OK(lcm_write_file_atomic(p("empty.npy"), "", 0, &err), &err);
    CHECK_FAILS(lcm_npy_open(&a, p("empty.npy"), &err), &err, LCM_ERR_FORMAT, "not a .npy file");
    teardown();
}

/* ---- import ------------------------------------------------------------------------------------- */

enum { N = 10, D = 6 };
static float emb[N * D];
static const int32_t lens[3] = {4, 1, 5};
static const int64_t offs[4] = {0, 4, 5, 10};

static void write_inputs(void) {
    for (int i = 0; i < N * D; i++) emb[i] = 0.01f * (float)(i % 17) - 0.05f + 1e-4f * (float)i;
    write_npy(p("emb.npy"), "<f4", "(10, 6)", emb, sizeof emb);
    uint16_t h[N * D];
    for (int i = 0; i < N * D; i++) h[i] = lcm_f32_to_f16(emb[i]);
    write_npy(p("emb16.npy"), "<f2", "(10, 6)", h, sizeof h);
    write_npy(p("lens.npy"), "<i4", "(3,)", lens, sizeof lens);
    write_npy(p("offs.npy"), "<i8", "(4,)", offs, sizeof offs);
    float eot[D] = {1, 2, 3, 4, 5, 6};
    write_npy(p("eot.npy"), "<f4", "(6,)", eot, sizeof eot);
    write_npy(p("eot2.npy"), "<f4", "(1, 6)", eot, sizeof eot);
    write_npy(p("eot5.npy"), "<f4", "(5,)", eot, 5 * 4);
    uint64_t ids[3] = {7, 8, 99};
    write_npy(p("ids.npy"), "<u8", "(3,)", ids, sizeof ids);
}

static void progress(void *ctx, double frac) {
    double *last = ctx;
    if (frac < *last) *last = -1; /* never goes backwards */
    else *last = frac;
}

TEST(import_round_trip) {
    setup();
    write_inputs();
    lcm_error err = {0};
    double last = 0;
    lcm_import_spec s = {p("emb.npy"), p("lens.npy"), 0, p("eot.npy"), p("ids.npy"), 0, p("a.lcmd")};
    lcm_import_result r;
    CHECK_OK(lcm_npy_import(&s, progress, &last, &r, &err), &err);
    CHECK(last == 1.0);
    CHECK(r.n_docs == 3 && r.n_concepts == N && r.dim == D && r.dtype == LCM_F32 && r.payload_bytes == N * D * 4);
    lcm_dataset ds;
    CHECK_OK(lcm_dataset_open(&ds, p("a.lcmd"), &err), &err);
    CHECK(ds.n_docs == 3 && ds.n_concepts == N && ds.dim == D && ds.dtype == LCM_F32);
    CHECK(ds.doc_offsets[1] == 4 && ds.doc_offsets[2] == 5 && ds.doc_offsets[3] == 10);
    CHECK(memcmp(ds.payload, emb, sizeof emb) == 0);
    CHECK(ds.eot && ds.eot[5] == 6.0f);
    CHECK(ds.source_ids && ds.source_ids[0] == 7 && ds.source_ids[2] == 99);
    lcm_dataset_close(&ds);

    /* Offsets instead of lengths, and a (1, D) EOT: the same file, byte for byte. */
    lcm_import_spec s2 = {p("emb.npy"), p("offs.npy"), 1, p("eot2.npy"), p("ids.npy"), 0, p("b.lcmd")};
    CHECK_OK(lcm_npy_import(&s2, NULL, NULL, NULL, &err), &err);
    char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    CHECK_OK(lcm_read_file(p("a.lcmd"), &a, &na, &err), &err);
    CHECK_OK(lcm_read_file(p("b.lcmd"), &b, &nb, &err), &err);
    CHECK(na == nb && memcmp(a, b, na) == 0);
    free(a);
    free(b);
    teardown();
}

TEST(import_dtype_conversions) {
    setup();
    write_inputs();
    lcm_error err = {0};
    struct { const char *in; lcm_dtype store; } cases[] = {
        {"emb.npy", LCM_F16}, {"emb.npy", LCM_BF16}, {"emb16.npy", 0}, {"emb16.npy", LCM_F32}, {"emb16.npy", LCM_BF16}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        lcm_import_spec s = {p(cases[c].in), p("lens.npy"), 0, NULL, NULL, cases[c].store, p("c.lcmd")};
        CHECK_OK(lcm_npy_import(&s, NULL, NULL, NULL, &err), &err);
        lcm_dataset ds;
        CHECK_OK(lcm_dataset_open(&ds, p("c.lcmd"), &err), &err);
        if (err.code) continue;
        int from16 = strstr(cases[c].in, "16") != NULL;
        lcm_dtype want_dt = cases[c].store ? cases[c].store : LCM_F16;
        CHECK(ds.dtype == want_dt && ds.eot == NULL && ds.source_ids == NULL);
        float got[N * D];
        lcm_dataset_read(&ds, 0, N, got);
        int same = 1;
        for (int i = 0; i < N * D; i++) {
            float src = from16 ? lcm_f16_to_f32(lcm_f32_to_f16(emb[i])) : emb[i];
            float want = want_dt == LCM_F16 ? lcm_f16_to_f32(lcm_f32_to_f16(src))
                       : want_dt == LCM_BF16 ? lcm_bf16_to_f32(lcm_f32_to_bf16(src)) : src;
            same &= got[i] == want;
        }
        CHECKF(same, "case %zu (%s stored as %s)", c, cases[c].in, lcm_dtype_name(want_dt));
        lcm_dataset_close(&ds);
    }
    teardown();
}

static void expect_import_fails(lcm_import_spec s, const char *needle, int line) {
    lcm_error err = {0};
    int rc = lcm_npy_import(&s, NULL, NULL, NULL, &err);
    if (rc == 0 || !strstr(err.msg, needle)) {
        fprintf(stderr, "  line %d: expected an import error containing \"%s\", got %d: %s\n", line, needle, rc, err.msg);
        harness_failed = 1;
    }
    if (lcm_file_exists(s.output)) {
        fprintf(stderr, "  line %d: a failed import left %s behind\n", line, s.output);
        harness_failed = 1;
    }
}
#define EXPECT_IMPORT_FAILS(s, needle) expect_import_fails(s, needle, __LINE__)

TEST(import_refuses_bad_inputs) {
    setup();
    write_inputs();
    char out[512];
    snprintf(out, sizeof out, "%s", p("bad.lcmd"));
    write_npy(p("flat.npy"), "<f4", "(60,)", emb, sizeof emb);
    EXPECT_IMPORT_FAILS(((lcm_import_spec){p("flat.npy"), p("lens.npy"), 0, NULL, NULL, 0, out}),
                        "embeddings must be a 2-D array [concepts, dim], got shape (60,)");
    int32_t l9[3] = {4, 1, 4};
    write_npy(p("l9.npy"), "<i4", "(3,)", l9, sizeof l9);
    EXPECT_IMPORT_FAILS(((lcm_import_spec){p("emb.npy"), p("l9.npy"), 0, NULL, NULL, 0, out}),
                        "the lengths sum to 9 but");
    int64_t lneg[3] = {4, -1, 7};
    write_npy(p("lneg.npy"), "<i8", "(3,)", lneg, sizeof lneg);
    EXPECT_IMPORT_FAILS(((lcm_import_spec){p("emb.npy"), p("lneg.npy"), 0, NULL, NULL, 0, out}),
                        "document 1 has length -1");
    int32_t lzero[4] = {4, 0, 1, 5};
    write_npy(p("lzero.npy"), "<i4", "(4,)", lzero, sizeof lzero);
    EXPECT_IMPORT_FAILS(((lcm_import_spec){p("emb.npy"), p("lzero.npy"), 0, NULL, NULL, 0, out}),
                        "document 1 has length 0");
    int64_t onm[4] = {0, 5, 4, 10};
    write_npy(p("onm.npy"), "<i8", "(4,)", onm, sizeof onm);
    EXPECT_IMPORT_FAILS(((lcm_import_spec){p("emb.npy"), p("onm.npy"), 1, NULL, NULL, 0, out}),
                        "document 1 runs from 5 to 4");
    int64_t o1[4] = {1, 4, 5, 10};
    write_npy(p("o1.npy"), "<i8", "(4,)", o1, sizeof o1);
    EXPECT_IMPORT_FAILS(((lcm_import_spec){p("emb.npy"), p("o1.npy"), 1, NULL, NULL, 0, out}), "offsets must start at 0");
    int64_t oshort[3] = {0, 4, 9};
    write_npy(p("oshort.npy"), "<i8", "(3,)", oshort, sizeof oshort);
    EXPECT_IMPORT_FAILS(((lcm_import_spec){p("emb.npy"), p("oshort.npy"), 1, NULL, NULL, 0, out}),
                        "the last offset is 9 but");
    EXPECT_IMPORT_FAILS(((lcm_import_spec){p("emb.npy"), p("lens.npy"), 0, p("eot5.npy"), NULL, 0, out}),
                        "has dimension 5 but the embeddings");
    uint64_t ids2[2] = {1, 2};
    write_npy(p("ids2.npy"), "<u8", "(2,)", ids2, sizeof ids2);
    EXPECT_IMPORT_FAILS(((lcm_import_spec){p("emb.npy"), p("lens.npy"), 0, NULL, p("ids2.npy"), 0, out}),
                        "source ids must be a 1-D integer array of 3 entries");
    EXPECT_IMPORT_FAILS(((lcm_import_spec){p("emb.npy"), p("emb.npy"), 0, NULL, NULL, 0, out}),
                        "must be a 1-D integer array");
    EXPECT_IMPORT_FAILS(((lcm_import_spec){p("lens.npy"), p("lens.npy"), 0, NULL, NULL, 0, out}),
                        "embeddings must be float32 or float16");
    EXPECT_IMPORT_FAILS(((lcm_import_spec){p("nothere.npy"), p("lens.npy"), 0, NULL, NULL, 0, out}), "nothere.npy");
    /* NaN in the data: refused by the writer, naming the document. */
    float bad[N * D];
    memcpy(bad, emb, sizeof bad);
    bad[5 * D + 2] = NAN; /* concept 5 = document 2, concept 0 */
    write_npy(p("nan.npy"), "<f4", "(10, 6)", bad, sizeof bad);
    EXPECT_IMPORT_FAILS(((lcm_import_spec){p("nan.npy"), p("lens.npy"), 0, NULL, NULL, 0, out}),
                        "document 2, concept 0, dimension 2 is NaN");
    teardown();
}

/* Random damage to a .npy header must give success or an error, never a crash (run under `make asan`). */
TEST(fuzzed_headers_never_crash) {
    setup();
    float d[6] = {1, 2, 3, 4, 5, 6};
    write_npy(p("ok.npy"), "<f4", "(2, 3)", d, sizeof d);
    lcm_error err = {0};
    char *good;
    size_t n;
    CHECK_OK(lcm_read_file(p("ok.npy"), &good, &n, &err), &err);
    char *b = malloc(n);
    uint32_t x = 12345;
    int refused = 0;
    for (int it = 0; it < 2000; it++) {
        memcpy(b, good, n);
        int flips = 1 + it % 4;
        for (int f = 0; f < flips; f++) {
            x = x * 1664525u + 1013904223u;
            size_t at = (x >> 8) % 64; /* the header: magic, version, length, dict */
            x = x * 1664525u + 1013904223u;
            /* half the flips write characters the dict grammar uses, to get deeper into the parser */
            static const char dict_chars[] = "{}()[]',: 0123456789<>|fiuTrueFalsLdescrshape";
            b[at] = (x >> 31) ? dict_chars[(x >> 8) % (sizeof dict_chars - 1)] : (char)(x >> 16);
        }
        size_t len = n;
        if (it % 7 == 0) len = (x >> 4) % n;
        CHECK_OK(lcm_write_file_atomic(p("f.npy"), b, len, &err), &err);
        lcm_npy a;
        int rc = lcm_npy_open(&a, p("f.npy"), &err);
        if (rc == 0) {
            /* the data it promises is inside the file */
            volatile uint8_t sink = 0;
            for (uint64_t i = 0; i < a.numel * a.elem; i++) sink ^= a.data[i];
            (void)sink;
            lcm_npy_close(&a);
        } else {
            refused++;
            CHECKF(rc == LCM_ERR_FORMAT && err.msg[0] && !strchr(err.msg, '\n'), "rc %d: %s", rc, err.msg);
        }
        lcm_error_clear(&err);
    }
    CHECK(refused > 1000);
    free(b);
    free(good);
    teardown();
}
