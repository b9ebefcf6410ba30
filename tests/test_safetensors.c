/* test_safetensors.c: the strict JSON parser, the safetensors reader/writer (round trips, every
 * rejection rule on a hand-built corrupt file, a mutation fuzz loop, atomic replacement), normalizer
 * save/load, and the two halves of the Python interop check that tests/test_safetensors_python.sh drives
 * through LCM_ST_INTEROP_WRITE / LCM_ST_INTEROP_READ. */
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "harness.h"
#include "lcm/checkpoint.h"
#include "lcm/dataset.h"
#include "lcm/fileio.h"
#include "lcm/half.h"
#include "lcm/json.h"
#include "lcm/model.h"
#include "lcm/safetensors.h"

/* ---- helpers ----------------------------------------------------------------------------------- */

static void join(char *out, size_t cap, const char *dir, const char *name) { snprintf(out, cap, "%s/%s", dir, name); }

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        perror(path);
        exit(2);
    }
    fclose(f);
}

/* A hand-built file: the u64 length field `n_field`, `header` as given, then data_len pattern bytes. */
static void write_st_raw(const char *path, uint64_t n_field, const char *header, size_t header_len, size_t data_len) {
    size_t total = 8 + header_len + data_len;
    uint8_t *buf = malloc(total + 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(n_field >> (8 * i));
    memcpy(buf + 8, header, header_len);
    for (size_t i = 0; i < data_len; i++) buf[8 + header_len + i] = (uint8_t)(i * 37 + 1);
    write_bytes(path, buf, total);
    free(buf);
}

static void write_st(const char *path, const char *header, size_t data_len) {
    write_st_raw(path, strlen(header), header, strlen(header), data_len);
}

static int count_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    if (d) closedir(d);
    return n;
}

static int parse_str(const char *text, lcm_json **out, lcm_error *err) {
    return lcm_json_parse(text, strlen(text), out, err);
}

/* ---- JSON -------------------------------------------------------------------------------------- */

TEST(json_parses_every_value_kind) {
    lcm_error err = {0};
    lcm_json *root = NULL;
    CHECK_OK(parse_str(" {\"a\": [1, -2.5e3, true, false, null, \"x\", {}, []], \"b\": {\"c\": \"d\"}}\n", &root, &err),
             &err);
    if (!root) return;
    CHECK(root->type == LCM_JSON_OBJECT && root->n == 2);
    const lcm_json *a = lcm_json_get(root, "a");
    CHECK(a && a->type == LCM_JSON_ARRAY && a->n == 8);
    if (a && a->n == 8) {
        CHECK(a->items[0].type == LCM_JSON_NUMBER && a->items[0].number == 1);
        CHECK(a->items[0].is_uint && a->items[0].uint == 1);
        CHECK(a->items[1].type == LCM_JSON_NUMBER && a->items[1].number == -2500 && !a->items[1].is_uint);
        CHECK(a->items[2].type == LCM_JSON_BOOL && a->items[2].boolean == 1);
        CHECK(a->items[3].type == LCM_JSON_BOOL && a->items[3].boolean == 0);
        CHECK(a->items[4].type == LCM_JSON_NULL);
        CHECK(a->items[5].type == LCM_JSON_STRING && strcmp(a->items[5].str, "x") == 0 && a->items[5].len == 1);
        CHECK(a->items[6].type == LCM_JSON_OBJECT && a->items[6].n == 0);
        CHECK(a->items[7].type == LCM_JSON_ARRAY && a->items[7].n == 0);
    }
    const lcm_json *b = lcm_json_get(root, "b");
    CHECK(b && strcmp(lcm_json_get_string(b, "c"), "d") == 0);
    CHECK(lcm_json_get(root, "missing") == NULL);
    CHECK(lcm_json_get(a, "a") == NULL); /* not an object */
    CHECK(lcm_json_get_string(root, "a") == NULL); /* not a string */
    CHECK(strcmp(lcm_json_type_name(LCM_JSON_OBJECT), "object") == 0);
    /* Positions: the key "a" is at byte 2, the first element of its array at byte 8. */
    CHECK(a && a->pos == 2);
    CHECK(a && a->n == 8 && a->items[0].pos == 8);
    lcm_json_free(root);
    /* A bare scalar is a valid JSON text too. */
    CHECK_OK(parse_str("\"only\"", &root, &err), &err);
    CHECK(root && root->type == LCM_JSON_STRING && strcmp(root->str, "only") == 0);
    lcm_json_free(root);
}

TEST(json_string_escapes_and_surrogates) {
    lcm_error err = {0};
    lcm_json *root = NULL;
    /* U+00E9 (2 bytes), U+20AC (3 bytes), U+1F600 as a surrogate pair (4 bytes), raw UTF-8 U+00FC. */
    const char *text = "\"q\\\"b\\\\s\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\\u20AC\\ud83d\\ude00\xc3\xbc\"";
    const char want[] = "q\"b\\s/\b\f\n\r\tA\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xc3\xbc";
    CHECK_OK(parse_str(text, &root, &err), &err);
    CHECK(root && root->len == sizeof want - 1 && memcmp(root->str, want, sizeof want) == 0);
    lcm_json_free(root);
    /* \u0000 is legal JSON: it is kept, with the length telling it apart from the end of the string. */
    CHECK_OK(parse_str("{\"k\": \"a\\u0000b\"}", &root, &err), &err);
    const lcm_json *k = lcm_json_get(root, "k");
    CHECK(k && k->len == 3 && k->str[1] == '\0' && k->str[2] == 'b');
    CHECK(lcm_json_get_string(root, "k") == NULL); /* a C string would silently cut it */
    lcm_json_free(root);
}

TEST(json_rejects_bad_strings) {
    lcm_error err = {0};
    lcm_json *root = NULL;
    CHECK_FAILS(parse_str("\"\\ud83d\"", &root, &err), &err, LCM_ERR_FORMAT, "byte 1: high surrogate");
    CHECK_FAILS(parse_str("\"\\ude00\"", &root, &err), &err, LCM_ERR_FORMAT, "byte 1: lone low surrogate");
    CHECK_FAILS(parse_str("\"\\ud83d\\u0041\"", &root, &err), &err, LCM_ERR_FORMAT, "not a low surrogate");
    CHECK_FAILS(parse_str("\"\\u12G4\"", &root, &err), &err, LCM_ERR_FORMAT, "4 hex digits");
    CHECK_FAILS(parse_str("\"a\\xb\"", &root, &err), &err, LCM_ERR_FORMAT, "byte 2: invalid escape '\\x'");
    CHECK_FAILS(parse_str("\"a\tb\"", &root, &err), &err, LCM_ERR_FORMAT, "byte 2: control character 0x09");
    CHECK_FAILS(parse_str("\"abc", &root, &err), &err, LCM_ERR_FORMAT, "byte 0: unterminated string");
    CHECK_FAILS(parse_str("\"abc\\\"", &root, &err), &err, LCM_ERR_FORMAT, "unterminated string");
    CHECK_FAILS(parse_str("'a'", &root, &err), &err, LCM_ERR_FORMAT, "byte 0: unexpected '''");
    /* Overlong '/', a UTF-8-encoded surrogate, a cut 3-byte sequence, a stray continuation byte, > U+10FFFF. */
    CHECK_FAILS(parse_str("\"\xc0\xaf\"", &root, &err), &err, LCM_ERR_FORMAT, "byte 1: invalid UTF-8");
    CHECK_FAILS(parse_str("\"\xed\xa0\x80\"", &root, &err), &err, LCM_ERR_FORMAT, "invalid UTF-8");
    CHECK_FAILS(parse_str("\"\xe2\x82\"", &root, &err), &err, LCM_ERR_FORMAT, "invalid UTF-8");
    CHECK_FAILS(parse_str("\"\x80\"", &root, &err), &err, LCM_ERR_FORMAT, "invalid UTF-8");
    CHECK_FAILS(parse_str("\"\xf4\x90\x80\x80\"", &root, &err), &err, LCM_ERR_FORMAT, "invalid UTF-8");
    CHECK(root == NULL);
}

TEST(utf8_validation) {
    CHECK(lcm_utf8_valid("", 0));
    CHECK(lcm_utf8_valid("plain ascii", 11));
    CHECK(lcm_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf", 13));
    CHECK(!lcm_utf8_valid("\xc1\xbf", 2));             /* overlong */
    CHECK(!lcm_utf8_valid("\xe0\x9f\xbf", 3));         /* overlong 3-byte */
    CHECK(!lcm_utf8_valid("\xf0\x8f\xbf\xbf", 4));     /* overlong 4-byte */
    CHECK(!lcm_utf8_valid("\xed\xbf\xbf", 3));         /* surrogate */
    CHECK(!lcm_utf8_valid("\xf5\x80\x80\x80", 4));     /* beyond U+10FFFF */
    CHECK(!lcm_utf8_valid("\xc3", 1));                 /* cut */
    CHECK(!lcm_utf8_valid("\xff", 1));
}

TEST(json_numbers) {
    lcm_error err = {0};
    struct { const char *text; double value; int is_uint; uint64_t uint; } ok[] = {
        {"0", 0, 1, 0},
        {"-0", 0, 0, 0},
        {"123", 123, 1, 123},
        {"1.5", 1.5, 0, 0},
        {"1e3", 1000, 0, 0},
        {"1E-2", 0.01, 0, 0},
        {"-1.25e+2", -125, 0, 0},
        {"1.0", 1, 0, 0},
        {"18446744073709551615", 18446744073709551615.0, 1, UINT64_MAX},
        {"18446744073709551616", 18446744073709551616.0, 0, 0},
        {"9007199254740993", 9007199254740992.0, 1, 9007199254740993ull}, /* 2^53 + 1: only uint is exact */
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        lcm_json *v = NULL;
        CHECK_OK(parse_str(ok[i].text, &v, &err), &err);
        if (!v) continue;
        CHECKF(v->type == LCM_JSON_NUMBER && v->number == ok[i].value && v->is_uint == ok[i].is_uint &&
                   (!ok[i].is_uint || v->uint == ok[i].uint),
               "%s parsed as %.17g is_uint=%d uint=%llu", ok[i].text, v->number, v->is_uint,
               (unsigned long long)v->uint);
        lcm_json_free(v);
    }
    struct { const char *text; const char *needle; } bad[] = {
        {"01", "byte 0: leading zero"},
        {"-01", "leading zero"},
        {"1.", "byte 2: expected a digit after '.'"},
        {".5", "byte 0: unexpected '.'"},
        {"-", "byte 1: expected a digit, found end of input"},
        {"+1", "byte 0: unexpected '+'"},
        {"1e", "expected a digit in the exponent"},
        {"1e+", "expected a digit in the exponent"},
        {"1e400", "byte 0: number out of range"},
        {"-1e400", "number out of range"},
        {"NaN", "unexpected 'N'"},
        {"Infinity", "unexpected 'I'"},
        {"0x10", "byte 1: unexpected 'x'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lcm_json *v = NULL;
        CHECK_FAILS(parse_str(bad[i].text, &v, &err), &err, LCM_ERR_FORMAT, bad[i].needle);
        CHECK(v == NULL);
    }
}

TEST(json_depth_limit) {
    lcm_error err = {0};
    char text[2 * (LCM_JSON_MAX_DEPTH + 1) + 1];
    for (int depth = LCM_JSON_MAX_DEPTH; depth <= LCM_JSON_MAX_DEPTH + 1; depth++) {
        int k = 0;
        for (int i = 0; i < depth; i++) text[k++] = '[';
        for (int i = 0; i < depth; i++) text[k++] = ']';
        text[k] = '\0';
        lcm_json *v = NULL;
        if (depth == LCM_JSON_MAX_DEPTH) {
            CHECK_OK(parse_str(text, &v, &err), &err);
            lcm_json_free(v);
        } else {
            CHECK_FAILS(parse_str(text, &v, &err), &err, LCM_ERR_FORMAT, "nested deeper than 64");
            CHECK(v == NULL);
        }
    }
    /* Objects count too, and a deep hostile document fails without recursing further. */
    char deep[4001];
    memset(deep, '[', 4000);
    deep[4000] = '\0';
    lcm_json *v = NULL;
    CHECK_FAILS(parse_str(deep, &v, &err), &err, LCM_ERR_FORMAT, "byte 64: arrays/objects nested deeper");
    CHECK_FAILS(parse_str("{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":"
                          "{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":"
                          "{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":"
                          "{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":"
                          "{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":",
                          &v, &err),
                &err, LCM_ERR_FORMAT, "nested deeper than 64");
}

TEST(json_rejects_structure_errors_with_positions) {
    lcm_error err = {0};
    struct { const char *text; const char *msg; } bad[] = {
        {"{\"a\" 1}", "byte 5: expected ':' after object key, found '1'"},
        {"{} x", "byte 3: unexpected 'x' (nothing may follow the JSON value)"},
        {"{}{}", "byte 2: unexpected '{'"},
        {"1 2", "byte 2: unexpected '2'"},
        {"[1,]", "byte 3: unexpected ']' (expected a JSON value)"},
        {"{\"a\":1,}", "byte 7: expected '\"' to start an object key, found '}'"},
        {"[1 2]", "byte 3: expected ',' or ']' in array, found '2'"},
        {"{\"a\":1 \"b\":2}", "byte 7: expected ',' or '}' in object"},
        {"{1:2}", "byte 1: expected '\"' to start an object key"},
        {"[", "byte 1: expected a JSON value, found end of input"},
        {"", "byte 0: expected a JSON value, found end of input"},
        {"   ", "byte 3: expected a JSON value"},
        {"tru", "byte 0: unexpected 't'"},
        {"nul", "byte 0: unexpected 'n'"},
        {"[true false]", "byte 6: expected ',' or ']'"},
        {"\xef\xbb\xbf{}", "byte 0: unexpected byte 0xef"}, /* a byte-order mark is not JSON whitespace */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lcm_json *v = NULL;
        lcm_error_clear(&err);
        int rc = parse_str(bad[i].text, &v, &err);
        CHECKF(rc == LCM_ERR_FORMAT && strncmp(err.msg, bad[i].msg, strlen(bad[i].msg)) == 0,
               "%s: want \"%s...\", got %d \"%s\"", bad[i].text, bad[i].msg, rc, err.msg);
        CHECK(v == NULL);
    }
    /* A NUL byte inside the given length is not the end of the text. */
    lcm_json *v = NULL;
    CHECK_FAILS(lcm_json_parse("{\"a\":1}\0", 8, &v, &err), &err, LCM_ERR_FORMAT, "byte 7: unexpected byte 0x00");
    CHECK(v == NULL);
}

TEST(json_duplicate_keys) {
    lcm_error err = {0};
    lcm_json *v = NULL;
    CHECK_FAILS(parse_str("{\"a\":1,\"b\":2,\"a\":3}", &v, &err), &err, LCM_ERR_FORMAT,
                "byte 13: duplicate key \"a\" in object (first at byte 1)");
    /* The same key spelled with an escape is the same key. */
    CHECK_FAILS(parse_str("{\"a\":1,\"\\u0061\":2}", &v, &err), &err, LCM_ERR_FORMAT, "duplicate key \"a\"");
    /* Of two duplicated keys, the first duplicate in the document is named. */
    CHECK_FAILS(parse_str("{\"z\":1,\"y\":1,\"y\":2,\"z\":2}", &v, &err), &err, LCM_ERR_FORMAT, "duplicate key \"y\"");
    CHECK_FAILS(parse_str("[{\"k\":{\"x\":1,\"x\":1}}]", &v, &err), &err, LCM_ERR_FORMAT, "duplicate key \"x\"");
    /* The key is shown escaped, as every file-controlled name is (escape.h). */
    CHECK_FAILS(parse_str("{\"a\\n\\u001b\":1,\"a\\n\\u001b\":2}", &v, &err), &err, LCM_ERR_FORMAT,
                "duplicate key \"a\\n\\x1b\"");
    /* Equal keys in different objects are fine. */
    CHECK_OK(parse_str("{\"a\":{\"a\":1},\"b\":{\"a\":2}}", &v, &err), &err);
    CHECK(v && v->n == 2);
    lcm_json_free(v);
}

/* A key is a C string for everyone who reads it: "a\u0000x" would be the key "a" to strcmp while the
 * duplicate check saw a different key (the heap overflow of issue 9 item 1). */
TEST(json_rejects_nul_in_keys) {
    lcm_error err = {0};
    lcm_json *v = NULL;
    CHECK_FAILS(parse_str("{\"c\\u0000x\":1}", &v, &err), &err, LCM_ERR_FORMAT,
                "byte 3: \\u0000 (a NUL character) in an object key");
    CHECK_FAILS(parse_str("{\"c\":1,\"c\\u0000\":2}", &v, &err), &err, LCM_ERR_FORMAT, "NUL character");
    CHECK_FAILS(parse_str("[{\"\\u0000\":1}]", &v, &err), &err, LCM_ERR_FORMAT, "NUL character");
    CHECK(v == NULL);
    /* Other escapes in keys are still keys. */
    CHECK_OK(parse_str("{\"a\\u0001\\n\":1}", &v, &err), &err);
    CHECK(v && v->n == 1 && v->items[0].key_len == 3 && strcmp(v->items[0].key, "a\x01\n") == 0);
    lcm_json_free(v);
}

/* ---- safetensors: round trips -------------------------------------------------------------------- */

TEST(st_round_trip_dtypes_and_shapes) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512];
    join(path, sizeof path, dir, "m.safetensors");

    float f32[6] = {0.5f, -1.25f, 3.0f, 1e-20f, -0.0f, 65504.0f};
    uint16_t f16[4], bf16[4];
    const float halfs[4] = {1.5f, -2.0f, 0.25f, 1024.0f}; /* exact in both fp16 and bf16 */
    for (int i = 0; i < 4; i++) {
        f16[i] = lcm_f32_to_f16(halfs[i]);
        bf16[i] = lcm_f32_to_bf16(halfs[i]);
    }
    double f64[3] = {0.1, -1e300, 2.5};
    int64_t i64[2] = {-5000000000LL, INT64_MAX};
    int32_t i32[3] = {-7, 0, 2147483647};
    uint8_t u8[5] = {0, 1, 127, 128, 255};
    float scalar = 42.5f;
    int64_t s23[] = {2, 3}, s4[] = {4}, s22[] = {2, 2}, s3[] = {3}, s2[] = {2}, s113[] = {1, 1, 3}, s5[] = {5},
            s04[] = {0, 4}, s0[] = {0};

    lcm_st_writer *w = lcm_st_writer_new();
    CHECK_OK(lcm_st_add(w, "f32", LCM_ST_F32, 2, s23, f32, &err), &err);
    CHECK_OK(lcm_st_add(w, "f16", LCM_ST_F16, 1, s4, f16, &err), &err);
    CHECK_OK(lcm_st_add(w, "bf16", LCM_ST_BF16, 2, s22, bf16, &err), &err);
    CHECK_OK(lcm_st_add(w, "f64", LCM_ST_F64, 1, s3, f64, &err), &err);
    CHECK_OK(lcm_st_add(w, "i64", LCM_ST_I64, 1, s2, i64, &err), &err);
    CHECK_OK(lcm_st_add(w, "i32", LCM_ST_I32, 3, s113, i32, &err), &err);
    CHECK_OK(lcm_st_add(w, "u8", LCM_ST_U8, 1, s5, u8, &err), &err);
    CHECK_OK(lcm_st_add(w, "scalar", LCM_ST_F32, 0, NULL, &scalar, &err), &err);
    CHECK_OK(lcm_st_add(w, "empty", LCM_ST_F32, 2, s04, NULL, &err), &err);
    CHECK_OK(lcm_st_add(w, "empty_i32", LCM_ST_I32, 1, s0, NULL, &err), &err);
    CHECK_OK(lcm_st_add(w, "layers.0.attn.w", LCM_ST_U8, 1, s2, u8, &err), &err);
    CHECK_OK(lcm_st_write(w, path, &err), &err);
    lcm_st_writer_free(w);

    lcm_st_file f;
    CHECK_OK(lcm_st_open(&f, path, &err), &err);
    CHECK(f.n == 11);
    CHECK(f.n_meta == 0);
    struct {
        const char *name;
        lcm_st_dtype dtype;
        int ndim;
        const int64_t *shape;
        const void *data;
        size_t nbytes;
    } want[] = {
        {"f32", LCM_ST_F32, 2, s23, f32, sizeof f32},     {"f16", LCM_ST_F16, 1, s4, f16, sizeof f16},
        {"bf16", LCM_ST_BF16, 2, s22, bf16, sizeof bf16}, {"f64", LCM_ST_F64, 1, s3, f64, sizeof f64},
        {"i64", LCM_ST_I64, 1, s2, i64, sizeof i64},      {"i32", LCM_ST_I32, 3, s113, i32, sizeof i32},
        {"u8", LCM_ST_U8, 1, s5, u8, sizeof u8},          {"scalar", LCM_ST_F32, 0, NULL, &scalar, 4},
        {"empty", LCM_ST_F32, 2, s04, NULL, 0},           {"empty_i32", LCM_ST_I32, 1, s0, NULL, 0},
        {"layers.0.attn.w", LCM_ST_U8, 1, s2, u8, 2},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const lcm_st_tensor *t = lcm_st_find(&f, want[i].name);
        CHECKF(t != NULL, "%s missing", want[i].name);
        if (!t) continue;
        CHECKF(t->dtype == want[i].dtype && t->ndim == want[i].ndim && t->nbytes == want[i].nbytes,
               "%s: %s ndim %d %llu bytes", want[i].name, lcm_st_dtype_name(t->dtype), t->ndim,
               (unsigned long long)t->nbytes);
        for (int d = 0; d < t->ndim && d < want[i].ndim; d++) CHECK(t->shape[d] == want[i].shape[d]);
        CHECK(t->numel * lcm_st_dtype_size(t->dtype) == t->nbytes);
        CHECKF(want[i].nbytes == 0 || memcmp(t->data, want[i].data, want[i].nbytes) == 0, "%s: bytes differ",
               want[i].name);
    }
    CHECK(lcm_st_find(&f, "nope") == NULL);

    float out[6];
    CHECK_OK(lcm_st_to_f32(lcm_st_find(&f, "f16"), out, &err), &err);
    for (int i = 0; i < 4; i++) CHECK(out[i] == halfs[i]);
    CHECK_OK(lcm_st_to_f32(lcm_st_find(&f, "bf16"), out, &err), &err);
    for (int i = 0; i < 4; i++) CHECK(out[i] == halfs[i]);
    CHECK_OK(lcm_st_to_f32(lcm_st_find(&f, "f64"), out, &err), &err);
    CHECK(out[0] == (float)0.1 && isinf(out[1]) && out[1] < 0 && out[2] == 2.5f);
    CHECK_OK(lcm_st_to_f32(lcm_st_find(&f, "f32"), out, &err), &err);
    CHECK(memcmp(out, f32, sizeof f32) == 0);
    CHECK_OK(lcm_st_to_f32(lcm_st_find(&f, "empty"), out, &err), &err);
    CHECK_FAILS(lcm_st_to_f32(lcm_st_find(&f, "i32"), out, &err), &err, LCM_ERR_FORMAT, "'i32' is I32, not a floating");

    /* Layout: header length a multiple of 8 (space padded), tensors in the order added, data contiguous. */
    const uint8_t *base = f.map.data;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | base[i];
    CHECK(n % 8 == 0);
    CHECK(base[8] == '{');
    char *hdr = malloc(n + 1);
    memcpy(hdr, base + 8, n);
    hdr[n] = '\0';
    size_t last = n;
    while (last > 0 && hdr[last - 1] == ' ') last--;
    CHECK(last > 0 && hdr[last - 1] == '}' && n - last < 8);
    const char *prev = hdr;
    const uint8_t *expect_data = base + 8 + n;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\":{", want[i].name);
        const char *at = strstr(hdr, quoted);
        CHECKF(at && at > prev, "%s is not after the previous tensor in the header", want[i].name);
        if (at) prev = at;
        const lcm_st_tensor *t = lcm_st_find(&f, want[i].name);
        CHECKF(t && t->data == expect_data, "%s data is not right after the previous tensor's", want[i].name);
        if (t) expect_data = t->data + t->nbytes;
    }
    CHECK(expect_data == base + f.map.size);
    free(hdr);
    lcm_st_close(&f);
    CHECK(f.tensors == NULL && f.map.data == NULL);
    lcm_rm_rf(dir, &err);
}

TEST(st_metadata_round_trip) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512];
    join(path, sizeof path, dir, "meta.safetensors");
    lcm_st_writer *w = lcm_st_writer_new();
    const char *tricky = "quote \" backslash \\ newline \n tab \t ctrl \x01 unicode h\xc3\xa9llo \xe2\x82\xac";
    CHECK_OK(lcm_st_add_meta(w, "format", "pt", &err), &err);
    CHECK_OK(lcm_st_add_meta(w, "tricky", tricky, &err), &err);
    CHECK_OK(lcm_st_add_meta(w, "empty", "", &err), &err);
    CHECK_OK(lcm_st_add_meta(w, "k\xc3\xa9y \"2\"", "v", &err), &err);
    float x = 1;
    CHECK_OK(lcm_st_add(w, "x", LCM_ST_F32, 0, NULL, &x, &err), &err);
    CHECK_OK(lcm_st_write(w, path, &err), &err);
    lcm_st_writer_free(w);
    lcm_st_file f;
    CHECK_OK(lcm_st_open(&f, path, &err), &err);
    CHECK(f.n_meta == 4 && f.n == 1);
    CHECK(lcm_st_meta(&f, "format") && strcmp(lcm_st_meta(&f, "format"), "pt") == 0);
    CHECK(lcm_st_meta(&f, "tricky") && strcmp(lcm_st_meta(&f, "tricky"), tricky) == 0);
    CHECK(lcm_st_meta(&f, "empty") && strcmp(lcm_st_meta(&f, "empty"), "") == 0);
    CHECK(lcm_st_meta(&f, "k\xc3\xa9y \"2\"") && strcmp(lcm_st_meta(&f, "k\xc3\xa9y \"2\""), "v") == 0);
    CHECK(lcm_st_meta(&f, "absent") == NULL);
    CHECK(memcmp(f.map.data + 8, "{\"__metadata__\":{", 17) == 0);
    lcm_st_close(&f);
    lcm_rm_rf(dir, &err);
}

/* The weights loader lists the tensors a file has and the model does not: escaped too. */
TEST(weights_load_escapes_unexpected_names) {
    const char *dir = harness_tmpdir();
    char path[512];
    join(path, sizeof path, dir, "weights.safetensors");
    lcm_error err = {0};
    lcm_st_writer *w = lcm_st_writer_new();
    float x = 1;
    CHECK_OK(lcm_st_add(w, "x\nlcm: loaded\x1b[2J", LCM_ST_F32, 0, NULL, &x, &err), &err);
    CHECK_OK(lcm_st_write(w, path, &err), &err);
    lcm_st_writer_free(w);
    lcm_dims d = {.D = 4, .C = 8, .L = 1, .H = 2, .F = 16, .max_seq_len = 8};
    lcm_param_table t;
    CHECK_OK(lcm_param_table_build(&t, &d, &err), &err);
    float *master = calloc(t.total, sizeof *master);
    int rc = lcm_weights_load(path, &t, master, NULL, &err);
    CHECKF(rc == LCM_ERR_FORMAT && strstr(err.msg, "1 unexpected (x\\nlcm: loaded\\x1b[2J)") && !strchr(err.msg, '\n') &&
               !strchr(err.msg, '\x1b'), "got %d: %s", rc, err.msg);
    free(master);
    lcm_param_table_free(&t);
    lcm_rm_rf(dir, &err);
}

TEST(st_writer_rejects_misuse) {
    lcm_error err = {0};
    lcm_st_writer *w = lcm_st_writer_new();
    float x[4] = {0};
    int64_t s4[] = {4}, neg[] = {2, -1}, big[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    int64_t huge[] = {INT64_MAX, INT64_MAX};
    CHECK_OK(lcm_st_add(w, "a", LCM_ST_F32, 1, s4, x, &err), &err);
    CHECK_FAILS(lcm_st_add(w, "a", LCM_ST_F32, 1, s4, x, &err), &err, LCM_ERR_INTERNAL, "tensor 'a' added twice");
    CHECK_FAILS(lcm_st_add(w, "__metadata__", LCM_ST_F32, 1, s4, x, &err), &err, LCM_ERR_INTERNAL, "__metadata__");
    CHECK_FAILS(lcm_st_add(w, "", LCM_ST_F32, 1, s4, x, &err), &err, LCM_ERR_INTERNAL, "empty tensor name");
    CHECK_FAILS(lcm_st_add(w, "bad\xff", LCM_ST_F32, 1, s4, x, &err), &err, LCM_ERR_INTERNAL, "not valid UTF-8");
    CHECK_FAILS(lcm_st_add(w, "n", LCM_ST_F32, 2, neg, x, &err), &err, LCM_ERR_INTERNAL, "negative size -1");
    CHECK_FAILS(lcm_st_add(w, "d", LCM_ST_F32, 9, big, x, &err), &err, LCM_ERR_INTERNAL, "9 dimensions");
    CHECK_FAILS(lcm_st_add(w, "o", LCM_ST_F32, 2, huge, x, &err), &err, LCM_ERR_INTERNAL, "shape overflows");
    CHECK_FAILS(lcm_st_add(w, "t", (lcm_st_dtype)99, 1, s4, x, &err), &err, LCM_ERR_INTERNAL, "invalid dtype");
    CHECK_FAILS(lcm_st_add(w, "null", LCM_ST_F32, 1, s4, NULL, &err), &err, LCM_ERR_INTERNAL, "'null' has no data");
    CHECK_OK(lcm_st_add_meta(w, "k", "v", &err), &err);
    CHECK_FAILS(lcm_st_add_meta(w, "k", "w", &err), &err, LCM_ERR_INTERNAL, "metadata key 'k' added twice");
    CHECK_FAILS(lcm_st_add_meta(w, "v", "\xc3", &err), &err, LCM_ERR_INTERNAL, "not a UTF-8 string");
    CHECK(strcmp(lcm_st_dtype_name(LCM_ST_BF16), "BF16") == 0 && lcm_st_dtype_size(LCM_ST_I64) == 8);
    lcm_st_writer_free(w);
}

TEST(st_accepts_valid_edge_cases) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512];
    join(path, sizeof path, dir, "edge.safetensors");
    lcm_st_file f;
    /* No tensors at all, no data. */
    write_st(path, "{}      ", 0);
    CHECK_OK(lcm_st_open(&f, path, &err), &err);
    CHECK(f.n == 0 && f.n_meta == 0);
    lcm_st_close(&f);
    /* Header order differs from offset order; zero-size tensors share an offset; unpadded header; an
     * empty metadata object; a name with a JSON escape. */
    write_st(path,
             "{\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[4,7]},"
             "\"__metadata__\":{},"
             "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
             "\"a\\n\":{\"shape\":[1],\"data_offsets\":[0,4],\"dtype\":\"I32\"},"
             "\"z2\":{\"dtype\":\"F16\",\"shape\":[2,0],\"data_offsets\":[4,4]}}",
             7);
    CHECK_OK(lcm_st_open(&f, path, &err), &err);
    CHECK(f.n == 4 && f.n_meta == 0);
    const lcm_st_tensor *a = lcm_st_find(&f, "a\n"), *b = lcm_st_find(&f, "b");
    const uint8_t *data = f.map.data + f.map.size - 7;
    CHECK(a && a->data == data && a->nbytes == 4);
    CHECK(b && b->data == data + 4 && b->nbytes == 3 && b->data[0] == (uint8_t)(4 * 37 + 1));
    lcm_st_close(&f);
    lcm_rm_rf(dir, &err);
}

/* ---- safetensors: every rejection rule ------------------------------------------------------------ */

/* Write `header` + data_len bytes to <dir>/<name>, open it, and require LCM_ERR_FORMAT with a message
 * naming the file and containing each needle. */
static void expect_reject(const char *dir, const char *name, const char *header, size_t data_len, const char *needle,
                          const char *needle2) {
    char path[512];
    join(path, sizeof path, dir, name);
    write_st(path, header, data_len);
    lcm_error err = {0};
    lcm_st_file f;
    int rc = lcm_st_open(&f, path, &err);
    int named = strstr(err.msg, path) && strstr(err.msg, needle) && (!needle2 || strstr(err.msg, needle2));
    CHECKF(rc == LCM_ERR_FORMAT && named, "%s: want \"%s\"%s%s, got %d: %s", name, needle, needle2 ? " and " : "",
           needle2 ? needle2 : "", rc, err.msg);
    if (rc == 0) lcm_st_close(&f);
}

#define T_F32_8(name, b, e) "\"" name "\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[" #b "," #e "]}"

/* Issue 9 item 1: "__metadata__" and "__metadata__\u0000" both matched strcmp, so the metadata arrays
 * were filled twice past their end (a heap overflow under ASan, silent corruption without). */
TEST(st_metadata_key_with_nul_is_refused) {
    const char *dir = harness_tmpdir();
    char path[512];
    join(path, sizeof path, dir, "twice.safetensors");
    write_st(path, "{\"__metadata__\":{\"a\":\"1\",\"b\":\"2\"},\"__metadata__\\u0000\":{\"c\":\"3\",\"d\":\"4\"}}", 0);
    lcm_error err = {0};
    lcm_st_file f;
    int rc = lcm_st_open(&f, path, &err);
    CHECKF(rc == LCM_ERR_FORMAT && strstr(err.msg, path) && strstr(err.msg, "NUL character"), "got %d: %s", rc, err.msg);
    if (rc == 0) lcm_st_close(&f);
    /* A dtype that is "F32" only up to a NUL. */
    expect_reject(dir, "nul_dtype.safetensors", "{\"w\":{\"dtype\":\"F32\\u0000x\",\"shape\":[],\"data_offsets\":[0,4]}}",
                  4, "unknown dtype \"F32\\x00x\"", NULL);
    lcm_rm_rf(dir, &err);
}

/* Issue 9 item 4: a name from the file is printed escaped, so that it cannot forge a second line
 * or send escape sequences to a terminal. */
TEST(st_names_in_messages_are_escaped) {
    const char *dir = harness_tmpdir();
    /* "evil\n\x1b[2Jfake line" as the tensor name, with a bad dtype to make the reader name it. */
    expect_reject(dir, "evil.safetensors",
                  "{\"evil\\nlcm: ok\\u001b[2J\":{\"dtype\":\"Q8\",\"shape\":[],\"data_offsets\":[0,4]}}", 4,
                  "tensor 'evil\\nlcm: ok\\x1b[2J': unknown dtype \"Q8\"", NULL);
    expect_reject(dir, "evil_meta.safetensors", "{\"__metadata__\":{\"k\\r\\u007f\":1}}", 0,
                  "value of \"k\\r\\x7f\" is a number", NULL);
    expect_reject(dir, "evil_field.safetensors",
                  "{\"w\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"\\u00e9\\t\":1}}", 4,
                  "unknown field \"\\xc3\\xa9\\t\"", NULL);
    expect_reject(dir, "evil_hole.safetensors",
                  "{\"a\\n\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4,8]}}", 8,
                  "before tensor 'a\\n' belong to no tensor", NULL);
    lcm_error err = {0};
    lcm_rm_rf(dir, &err);
}

TEST(st_rejects_corrupt_files) {
    const char *dir = harness_tmpdir();
    lcm_error err = {0};
    char path[512];
    lcm_st_file f;

    /* Too short for the length field. */
    join(path, sizeof path, dir, "short.safetensors");
    write_bytes(path, "\x02\0\0", 3);
    CHECK_FAILS(lcm_st_open(&f, path, &err), &err, LCM_ERR_FORMAT, "3 bytes is too short");
    /* Header length above the 100,000,000 limit (the file itself is small). */
    join(path, sizeof path, dir, "huge_header.safetensors");
    write_st_raw(path, 100000001ull, "{}", 2, 0);
    CHECK_FAILS(lcm_st_open(&f, path, &err), &err, LCM_ERR_FORMAT, "header length 100000001 exceeds");
    write_st_raw(path, UINT64_MAX, "{}", 2, 0);
    CHECK_FAILS(lcm_st_open(&f, path, &err), &err, LCM_ERR_FORMAT, "exceeds the safetensors limit");
    /* Header length past the end of the file. */
    join(path, sizeof path, dir, "past_end.safetensors");
    write_st_raw(path, 64, "{}", 2, 0);
    CHECK_FAILS(lcm_st_open(&f, path, &err), &err, LCM_ERR_FORMAT, "header length 64 runs past the end");
    /* A missing file is an I/O error naming it. */
    join(path, sizeof path, dir, "missing.safetensors");
    CHECK_FAILS(lcm_st_open(&f, path, &err), &err, LCM_ERR_IO, path);

    /* A valid file, then truncated by 4 bytes: the last tensor runs past the data section. */
    const char *two = "{" T_F32_8("a", 0, 8) "," T_F32_8("b", 8, 16) "}";
    expect_reject(dir, "truncated.safetensors", two, 12, "tensor 'b' ends at data byte 16", "only 12 bytes");
    expect_reject(dir, "trailing.safetensors", two, 20, "4 trailing bytes after the last tensor 'b'", NULL);
    expect_reject(dir, "trailing_no_tensors.safetensors", "{}", 3, "3 data bytes after the header but no tensors",
                  NULL);
    expect_reject(dir, "hole.safetensors", "{" T_F32_8("a", 0, 8) "," T_F32_8("b", 12, 20) "}", 20,
                  "data bytes [8, 12) between tensors 'a' and 'b' belong to no tensor", NULL);
    expect_reject(dir, "hole_at_start.safetensors", "{" T_F32_8("a", 4, 12) "}", 12,
                  "data bytes [0, 4) before tensor 'a'", NULL);
    expect_reject(dir, "overlap.safetensors", "{" T_F32_8("a", 0, 8) "," T_F32_8("b", 4, 12) "}", 12,
                  "tensor 'b' (data bytes [4, 12)) overlaps tensor 'a'", NULL);
    expect_reject(dir, "same_place.safetensors", "{" T_F32_8("a", 0, 8) "," T_F32_8("b", 0, 8) "}", 8, "overlaps",
                  NULL);
    expect_reject(dir, "wrong_span.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                  "tensor 'w': data_offsets [0, 8] span 8 bytes but F32 [3] needs 12", NULL);
    expect_reject(dir, "backwards.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8,
                  "tensor 'w': data_offsets [8, 0] end before they begin", NULL);
    expect_reject(dir, "bad_dtype.safetensors",
                  "{\"q\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                  "tensor 'q': unknown dtype \"F8_E4M3\"", NULL);
    expect_reject(dir, "dtype_lower.safetensors", "{\"q\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                  "unknown dtype \"f32\"", NULL);
    expect_reject(dir, "dtype_number.safetensors", "{\"q\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                  "tensor 'q': dtype is a number", NULL);
    expect_reject(dir, "neg_shape.safetensors", "{\"q\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0,
                  "tensor 'q': shape must be an array of non-negative integers", NULL);
    expect_reject(dir, "float_shape.safetensors",
                  "{\"q\":{\"dtype\":\"U8\",\"shape\":[2.0],\"data_offsets\":[0,2]}}", 2,
                  "shape must be an array of non-negative integers", NULL);
    expect_reject(dir, "shape_not_array.safetensors",
                  "{\"q\":{\"dtype\":\"U8\",\"shape\":2,\"data_offsets\":[0,2]}}", 2,
                  "shape must be an array", NULL);
    expect_reject(dir, "nine_dims.safetensors",
                  "{\"q\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
                  "tensor 'q': 9 dimensions (lcm supports at most 8)", NULL);
    expect_reject(dir, "overflow.safetensors",
                  "{\"q\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
                  "tensor 'q': shape [4294967296, 4294967296] overflows", NULL);
    expect_reject(dir, "overflow_bytes.safetensors",
                  "{\"q\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", 0,
                  "overflows 64-bit sizes", NULL);
    expect_reject(dir, "three_offsets.safetensors",
                  "{\"q\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,1]}}", 1,
                  "data_offsets must be [begin, end]", NULL);
    expect_reject(dir, "one_offset.safetensors", "{\"q\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1]}}", 1,
                  "data_offsets must be [begin, end]", NULL);
    expect_reject(dir, "no_offsets.safetensors", "{\"q\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1,
                  "tensor 'q': missing \"data_offsets\"", NULL);
    expect_reject(dir, "no_dtype.safetensors", "{\"q\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                  "missing \"dtype\"", NULL);
    expect_reject(dir, "unknown_field.safetensors",
                  "{\"q\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"offset\":0}}", 1,
                  "tensor 'q': unknown field \"offset\"", NULL);
    expect_reject(dir, "entry_not_object.safetensors", "{\"q\":[1]}", 0, "tensor 'q': entry is an array, not an object",
                  NULL);
    expect_reject(dir, "meta_number.safetensors", "{\"__metadata__\":{\"format\":\"pt\",\"epoch\":3}}", 0,
                  "\"__metadata__\" value of \"epoch\" is a number; metadata values must be strings", NULL);
    expect_reject(dir, "meta_nested.safetensors", "{\"__metadata__\":{\"cfg\":{\"a\":\"b\"}}}", 0,
                  "value of \"cfg\" is an object", NULL);
    expect_reject(dir, "meta_not_object.safetensors", "{\"__metadata__\":\"pt\"}", 0,
                  "\"__metadata__\" is a string; it must be an object", NULL);
    expect_reject(dir, "meta_nul.safetensors", "{\"__metadata__\":{\"a\":\"x\\u0000y\"}}", 0,
                  "contains a NUL character", NULL);
    expect_reject(dir, "name_nul.safetensors",
                  "{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0,
                  "byte 3: \\u0000 (a NUL character) in an object key", NULL);
    expect_reject(dir, "duplicate.safetensors", "{" T_F32_8("a", 0, 8) "," T_F32_8("a", 8, 16) "}", 16,
                  "duplicate key \"a\"", "header JSON");
    expect_reject(dir, "bad_json.safetensors",
                  "{\"a\":{\"dtype\":\"F32\" \"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                  "header JSON (byte 0 is file byte 8): byte 20: expected ',' or '}' in object", NULL);
    /* Without an error record the status still comes back. */
    join(path, sizeof path, dir, "bad_json.safetensors");
    CHECK(lcm_st_open(&f, path, NULL) == LCM_ERR_FORMAT);
    expect_reject(dir, "not_utf8.safetensors", "{\"\xff\":{}}", 0, "byte 2: invalid UTF-8", NULL);
    expect_reject(dir, "not_object.safetensors", "[]", 0, "does not start with '{'", NULL);
    expect_reject(dir, "leading_space.safetensors", " {}", 0, "does not start with '{'", NULL);
    expect_reject(dir, "trailing_junk.safetensors", "{}  x", 0, "unexpected 'x'", NULL);
    /* Padding with NUL instead of spaces is not JSON whitespace. */
    join(path, sizeof path, dir, "nul_padding.safetensors");
    write_st_raw(path, 4, "{}\0\0", 4, 0);
    CHECK_FAILS(lcm_st_open(&f, path, &err), &err, LCM_ERR_FORMAT, "byte 2: unexpected byte 0x00");
    write_st_raw(path, 0, "", 0, 0);
    CHECK_FAILS(lcm_st_open(&f, path, &err), &err, LCM_ERR_FORMAT, "does not start with '{'");
    lcm_rm_rf(dir, &err);
}

/* ---- fuzzing ------------------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Mutated copies of a valid file (flipped bits, JSON-significant bytes, truncation, a changed length
 * field) must open cleanly or fail with a message; whatever opens must be internally consistent. */
TEST(st_fuzz_mutations_never_crash) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char good[512], path[512];
    join(good, sizeof good, dir, "good.safetensors");
    join(path, sizeof path, dir, "fuzz.safetensors");
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[3] = {0x3c00, 0xc000, 0x7c00};
    double d[2] = {0.5, -0.25};
    int64_t s23[] = {2, 3}, s3[] = {3}, s2[] = {2}, s0[] = {0};
    lcm_st_writer *w = lcm_st_writer_new();
    lcm_st_add_meta(w, "format", "pt", &err);
    lcm_st_add(w, "a", LCM_ST_F32, 2, s23, a, &err);
    lcm_st_add(w, "h", LCM_ST_BF16, 1, s3, h, &err);
    lcm_st_add(w, "d", LCM_ST_F64, 1, s2, d, &err);
    lcm_st_add(w, "e", LCM_ST_F16, 1, s0, NULL, &err);
    CHECK_OK(lcm_st_write(w, good, &err), &err);
    lcm_st_writer_free(w);
    char *base = NULL;
    size_t size = 0;
    CHECK_OK(lcm_read_file(good, &base, &size, &err), &err);
    if (!base) return;
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | (uint8_t)base[i];
    const uint64_t header_end = 8 + header_len;

    static const char significant[] = "{}[]\":,0123456789-+.eE \\u";
    char *buf = malloc(size);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int opened = 0, rejected = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(buf, base, size);
        size_t n = size;
        int kind = (int)(rng_next(&seed) % 4);
        int edits = 1 + (int)(rng_next(&seed) % 3);
        for (int e = 0; e < edits; e++) {
            /* Mostly inside the header, where the parsing is. */
            size_t span = rng_next(&seed) % 4 ? (size_t)header_end : size;
            size_t at = (size_t)(rng_next(&seed) % span);
            if (kind == 0) buf[at] ^= (char)(1u << (rng_next(&seed) % 8));
            else if (kind == 1) buf[at] = significant[rng_next(&seed) % (sizeof significant - 1)];
            else if (kind == 2) buf[at] = (char)rng_next(&seed);
        }
        if (kind == 3) {
            if (rng_next(&seed) % 2) {
                n = (size_t)(rng_next(&seed) % size);
            } else {
                uint64_t len = header_end - 8 + (uint64_t)((int64_t)(rng_next(&seed) % 33) - 16);
                for (int i = 0; i < 8; i++) buf[i] = (char)(len >> (8 * i));
            }
        }
        write_bytes(path, buf, n);
        lcm_st_file f;
        lcm_error_clear(&err);
        int rc = lcm_st_open(&f, path, &err);
        if (rc != 0) {
            rejected++;
            CHECKF(err.msg[0] != '\0' && strstr(err.msg, path), "iteration %d: error without a message naming the file",
                   iter);
            continue;
        }
        opened++;
        const uint8_t *lo = f.map.data, *hi = f.map.data + f.map.size;
        for (int t = 0; t < f.n; t++) {
            const lcm_st_tensor *x = &f.tensors[t];
            int inside = x->data >= lo + 8 && x->data + x->nbytes <= hi;
            CHECKF(inside && x->numel * lcm_st_dtype_size(x->dtype) == x->nbytes,
                   "iteration %d: tensor %s outside the file", iter, x->name);
            if (x->dtype == LCM_ST_F32 || x->dtype == LCM_ST_F16 || x->dtype == LCM_ST_BF16 || x->dtype == LCM_ST_F64) {
                float *out = malloc((size_t)x->numel * sizeof(float) + 1);
                CHECK_OK(lcm_st_to_f32(x, out, &err), &err);
                free(out);
            }
        }
        lcm_st_close(&f);
    }
    /* Both outcomes occur: the loop exercised rejection paths and the accept path. */
    CHECKF(opened >= 10 && rejected >= 1000, "opened %d, rejected %d", opened, rejected);
    free(buf);
    free(base);
    lcm_rm_rf(dir, &err);
}

/* ---- atomic replacement ---------------------------------------------------------------------------- */

TEST(st_failed_write_keeps_old_file) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512];
    join(path, sizeof path, dir, "ckpt.safetensors");
    float old[4] = {1, 2, 3, 4};
    int64_t s4[] = {4};
    lcm_st_writer *w = lcm_st_writer_new();
    CHECK_OK(lcm_st_add(w, "old", LCM_ST_F32, 1, s4, old, &err), &err);
    CHECK_OK(lcm_st_write(w, path, &err), &err);
    lcm_st_writer_free(w);
    char *before = NULL;
    size_t before_n = 0;
    CHECK_OK(lcm_read_file(path, &before, &before_n, &err), &err);

    /* A write that fails midway: the file size limit stops it after 64 KiB of a 1 MiB tensor. */
    enum { BIG = 1 << 18 };
    float *big = calloc(BIG, sizeof(float));
    int64_t sbig[] = {BIG};
    w = lcm_st_writer_new();
    CHECK_OK(lcm_st_add(w, "new", LCM_ST_F32, 1, sbig, big, &err), &err);
    struct rlimit saved, small;
    getrlimit(RLIMIT_FSIZE, &saved);
    small = saved;
    small.rlim_cur = 64 * 1024;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0);
    lcm_error_clear(&err);
    int rc = lcm_st_write(w, path, &err);
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, old_handler);
    CHECKF(rc == LCM_ERR_IO && strstr(err.msg, "ckpt.safetensors"), "got %d: %s", rc, err.msg);
    lcm_st_writer_free(w);
    free(big);

    char *after = NULL;
    size_t after_n = 0;
    CHECK_OK(lcm_read_file(path, &after, &after_n, &err), &err);
    CHECK(after && after_n == before_n && memcmp(before, after, before_n) == 0);
    CHECK(count_dir_entries(dir) == 1); /* the temporary file is gone */
    lcm_st_file f;
    CHECK_OK(lcm_st_open(&f, path, &err), &err);
    CHECK(f.n == 1 && lcm_st_find(&f, "old"));
    lcm_st_close(&f);
    free(after);

    /* A read-only directory refuses the temporary file (root ignores permissions: then it is skipped). */
    if (geteuid() != 0) {
        chmod(dir, 0500);
        w = lcm_st_writer_new();
        CHECK_OK(lcm_st_add(w, "new", LCM_ST_F32, 1, s4, old, &err), &err);
        CHECK_FAILS(lcm_st_write(w, path, &err), &err, LCM_ERR_IO, "cannot create");
        lcm_st_writer_free(w);
        chmod(dir, 0700);
        CHECK_OK(lcm_read_file(path, &after, &after_n, &err), &err);
        CHECK(after && after_n == before_n && memcmp(before, after, before_n) == 0);
        free(after);
    }
    /* A directory that does not exist: an I/O error naming the path, nothing created. */
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no/such/dir/x.safetensors", dir);
    w = lcm_st_writer_new();
    CHECK_FAILS(lcm_st_write(w, missing, &err), &err, LCM_ERR_IO, "no/such/dir/x.safetensors");
    lcm_st_writer_free(w);
    CHECK(count_dir_entries(dir) == 1);
    free(before);
    lcm_rm_rf(dir, &err);
}

/* ---- normalizer ------------------------------------------------------------------------------------ */

static void free_norm(lcm_normalizer *n) {
    free(n->center);
    free(n->scale);
}

TEST(normalizer_save_load_round_trip) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512];
    join(path, sizeof path, dir, "normalizer.safetensors");
    enum { D = 7 };
    float center[D], scale[D];
    for (int i = 0; i < D; i++) {
        center[i] = 0.01f * (float)(i * i) - 0.3f;
        scale[i] = 0.05f + 0.1f * (float)i;
    }
    lcm_normalizer n = {D, center, scale};
    CHECK_OK(lcm_normalizer_save(&n, path, &err), &err);
    lcm_st_file f;
    CHECK_OK(lcm_st_open(&f, path, &err), &err);
    const lcm_st_tensor *c = lcm_st_find(&f, "center"), *s = lcm_st_find(&f, "scale");
    CHECK(c && c->dtype == LCM_ST_F32 && c->ndim == 1 && c->shape[0] == D);
    CHECK(s && s->dtype == LCM_ST_F32 && s->ndim == 1 && s->shape[0] == D);
    CHECK(lcm_st_meta(&f, "format") && strcmp(lcm_st_meta(&f, "format"), "pt") == 0);
    CHECK(lcm_st_meta(&f, "convention") && strstr(lcm_st_meta(&f, "convention"), "(x - center) / scale"));
    lcm_st_close(&f);

    lcm_normalizer m;
    CHECK_OK(lcm_normalizer_load(&m, path, D, &err), &err);
    CHECK(m.dim == D && m.center && m.scale);
    if (m.center && m.scale) {
        CHECK(memcmp(m.center, center, sizeof center) == 0);
        CHECK(memcmp(m.scale, scale, sizeof scale) == 0);
    }
    free_norm(&m);
    CHECK_OK(lcm_normalizer_load(&m, path, 0, &err), &err); /* 0: any dimension */
    CHECK(m.dim == D);
    free_norm(&m);
    CHECK_FAILS(lcm_normalizer_load(&m, path, 8, &err), &err, LCM_ERR_DATA,
                "normalizer dimension is 7 but the embeddings have dimension 8");
    CHECK(m.center == NULL && m.scale == NULL && m.dim == 0);
    lcm_rm_rf(dir, &err);
}

/* A normalizer file with the given tensors, written through the safetensors writer. */
static void write_norm(const char *path, const char *cname, lcm_st_dtype cdt, int cndim, const int64_t *cshape,
                       const void *cdata, const char *sname, lcm_st_dtype sdt, int sndim, const int64_t *sshape,
                       const void *sdata) {
    lcm_error err = {0};
    lcm_st_writer *w = lcm_st_writer_new();
    if (cname) CHECK_OK(lcm_st_add(w, cname, cdt, cndim, cshape, cdata, &err), &err);
    if (sname) CHECK_OK(lcm_st_add(w, sname, sdt, sndim, sshape, sdata, &err), &err);
    CHECK_OK(lcm_st_write(w, path, &err), &err);
    lcm_st_writer_free(w);
}

TEST(normalizer_reference_names_and_half_dtypes) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512];
    join(path, sizeof path, dir, "ref.safetensors");
    const float cvals[3] = {-0.5f, 0.125f, 3.0f}, svals[3] = {0.25f, 1.0f, 2.5f}; /* exact in fp16 and bf16 */
    uint16_t cb[3], sh[3];
    for (int i = 0; i < 3; i++) {
        cb[i] = lcm_f32_to_bf16(cvals[i]);
        sh[i] = lcm_f32_to_f16(svals[i]);
    }
    int64_t s3[] = {3};
    write_norm(path, "frontend.sonar_normalizer.center", LCM_ST_BF16, 1, s3, cb, "frontend.sonar_normalizer.scale",
               LCM_ST_F16, 1, s3, sh);
    lcm_normalizer m;
    CHECK_OK(lcm_normalizer_load(&m, path, 3, &err), &err);
    CHECK(m.dim == 3);
    for (int i = 0; i < 3 && m.center; i++) CHECK(m.center[i] == cvals[i] && m.scale[i] == svals[i]);
    free_norm(&m);
    lcm_rm_rf(dir, &err);
}

TEST(normalizer_rejections) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512];
    join(path, sizeof path, dir, "bad.safetensors");
    lcm_normalizer m;
    float ok[4] = {0.1f, 0.2f, 0.3f, 0.4f}, flat[4] = {1, 1, 1, 1};
    int64_t s4[] = {4}, s3[] = {3}, s22[] = {2, 2};
    int32_t ints[4] = {1, 1, 1, 1};

    write_norm(path, "center", LCM_ST_F32, 1, s4, ok, NULL, 0, 0, NULL, NULL);
    CHECK_FAILS(lcm_normalizer_load(&m, path, 0, &err), &err, LCM_ERR_FORMAT,
                "no tensor \"scale\" (nor \"frontend.sonar_normalizer.scale\")");
    CHECK(m.center == NULL && m.dim == 0);
    write_norm(path, "center", LCM_ST_F32, 2, s22, ok, "scale", LCM_ST_F32, 1, s4, flat);
    CHECK_FAILS(lcm_normalizer_load(&m, path, 0, &err), &err, LCM_ERR_FORMAT, "tensor 'center' has 2 dimensions");
    write_norm(path, "center", LCM_ST_F32, 1, s4, ok, "scale", LCM_ST_F32, 1, s3, flat);
    CHECK_FAILS(lcm_normalizer_load(&m, path, 0, &err), &err, LCM_ERR_FORMAT, "center has 4 entries but scale has 3");
    write_norm(path, "center", LCM_ST_I32, 1, s4, ints, "scale", LCM_ST_F32, 1, s4, flat);
    CHECK_FAILS(lcm_normalizer_load(&m, path, 0, &err), &err, LCM_ERR_FORMAT, "'center' is I32");
    float bad[4] = {1, 1, 0, 1};
    write_norm(path, "center", LCM_ST_F32, 1, s4, ok, "scale", LCM_ST_F32, 1, s4, bad);
    CHECK_FAILS(lcm_normalizer_load(&m, path, 0, &err), &err, LCM_ERR_DATA, "scale[2] = 0 (must be finite and > 0)");
    CHECK(m.center == NULL && m.scale == NULL);
    bad[2] = -1;
    write_norm(path, "center", LCM_ST_F32, 1, s4, ok, "scale", LCM_ST_F32, 1, s4, bad);
    CHECK_FAILS(lcm_normalizer_load(&m, path, 0, &err), &err, LCM_ERR_DATA, "scale[2] = -1");
    bad[2] = INFINITY;
    write_norm(path, "center", LCM_ST_F32, 1, s4, ok, "scale", LCM_ST_F32, 1, s4, bad);
    CHECK_FAILS(lcm_normalizer_load(&m, path, 0, &err), &err, LCM_ERR_DATA, "scale[2] = inf");
    bad[2] = NAN;
    write_norm(path, "center", LCM_ST_F32, 1, s4, ok, "scale", LCM_ST_F32, 1, s4, bad);
    CHECK_FAILS(lcm_normalizer_load(&m, path, 0, &err), &err, LCM_ERR_DATA, "scale[2] = nan");
    float cbad[4] = {0, 0, 0, NAN};
    write_norm(path, "center", LCM_ST_F32, 1, s4, cbad, "scale", LCM_ST_F32, 1, s4, flat);
    CHECK_FAILS(lcm_normalizer_load(&m, path, 0, &err), &err, LCM_ERR_DATA, "center[3] = nan (must be finite)");
    /* F64 beyond fp32 range narrows to inf, which is refused like any other inf. */
    double wide[4] = {1, 1, 1e300, 1};
    write_norm(path, "center", LCM_ST_F32, 1, s4, ok, "scale", LCM_ST_F64, 1, s4, wide);
    CHECK_FAILS(lcm_normalizer_load(&m, path, 0, &err), &err, LCM_ERR_DATA, "scale[2] = inf");
    int64_t s0[] = {0};
    write_norm(path, "center", LCM_ST_F32, 1, s0, NULL, "scale", LCM_ST_F32, 1, s0, NULL);
    CHECK_FAILS(lcm_normalizer_load(&m, path, 0, &err), &err, LCM_ERR_FORMAT, "has 0 entries");
    /* Every error names the file. */
    CHECK_FAILS(lcm_normalizer_load(&m, path, 0, &err), &err, LCM_ERR_FORMAT, path);

    /* Saving refuses values that loading would refuse, and then writes nothing. */
    char fresh[512];
    join(fresh, sizeof fresh, dir, "never.safetensors");
    float zero_scale[4] = {1, 0, 1, 1};
    lcm_normalizer n = {4, ok, zero_scale};
    CHECK_FAILS(lcm_normalizer_save(&n, fresh, &err), &err, LCM_ERR_DATA, "scale[1] = 0");
    CHECK(!lcm_file_exists(fresh));
    lcm_normalizer empty = {0, NULL, NULL};
    CHECK_FAILS(lcm_normalizer_save(&empty, fresh, &err), &err, LCM_ERR_INTERNAL, "empty normalizer");
    lcm_rm_rf(dir, &err);
}

/* ---- Python interop (driven by tests/test_safetensors_python.sh) ------------------------------------ */

/* The interop tensors. tools/st_check.py computes the same values with numpy; every value is exact in
 * its dtype, so both sides compare bit for bit. */
typedef struct interop_tensor {
    const char *name;
    lcm_st_dtype dtype;
    int ndim;
    int64_t shape[3];
} interop_tensor;

static const interop_tensor interop[] = {
    {"f32", LCM_ST_F32, 2, {2, 3}}, {"bf16", LCM_ST_BF16, 1, {3}}, {"f16", LCM_ST_F16, 1, {4}},
    {"f64", LCM_ST_F64, 1, {3}},    {"i64", LCM_ST_I64, 1, {3}},   {"i32", LCM_ST_I32, 2, {2, 2}},
    {"u8", LCM_ST_U8, 1, {5}},      {"scalar", LCM_ST_F32, 0, {0}}, {"empty", LCM_ST_F32, 2, {0, 3}},
};
#define N_INTEROP ((int)(sizeof interop / sizeof interop[0]))
static const char interop_note[] = "h\xc3\xa9llo \"quoted\"\n\tend";

/* Element i of interop tensor t, as its dtype's bytes (the formulas are repeated in tools/st_check.py). */
static void interop_value(const char *name, int64_t i, uint8_t *out) {
    if (strcmp(name, "f32") == 0) {
        float v = ((float)i - 2.5f) * 0.75f;
        memcpy(out, &v, 4);
    } else if (strcmp(name, "bf16") == 0) {
        uint16_t v = lcm_f32_to_bf16(1.5f - 1.75f * (float)i);
        memcpy(out, &v, 2);
    } else if (strcmp(name, "f16") == 0) {
        uint16_t v = lcm_f32_to_f16((float)i * 0.5f - 1.0f);
        memcpy(out, &v, 2);
    } else if (strcmp(name, "f64") == 0) {
        double v = 0.1 * (double)(i + 1);
        memcpy(out, &v, 8);
    } else if (strcmp(name, "i64") == 0) {
        int64_t v = (i - 1) * 10000000000LL;
        memcpy(out, &v, 8);
    } else if (strcmp(name, "i32") == 0) {
        int32_t v = (int32_t)(7 * i - 3);
        memcpy(out, &v, 4);
    } else if (strcmp(name, "u8") == 0) {
        out[0] = (uint8_t)(50 * i + 3);
    } else if (strcmp(name, "scalar") == 0) {
        float v = 3.25f;
        memcpy(out, &v, 4);
    }
}

static uint8_t *interop_data(const interop_tensor *t, uint64_t *nbytes) {
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
    size_t es = lcm_st_dtype_size(t->dtype);
    *nbytes = (uint64_t)numel * es;
    uint8_t *buf = malloc((size_t)*nbytes + 1);
    for (int64_t i = 0; i < numel; i++) interop_value(t->name, i, buf + (size_t)i * es);
    return buf;
}

TEST(interop_write) {
    const char *path = getenv("LCM_ST_INTEROP_WRITE");
    if (!path) SKIP("LCM_ST_INTEROP_WRITE not set (tests/test_safetensors_python.sh sets it)");
    lcm_error err = {0};
    uint8_t *bufs[N_INTEROP];
    lcm_st_writer *w = lcm_st_writer_new();
    CHECK_OK(lcm_st_add_meta(w, "format", "pt", &err), &err);
    CHECK_OK(lcm_st_add_meta(w, "note", interop_note, &err), &err);
    for (int i = 0; i < N_INTEROP; i++) {
        uint64_t nb;
        bufs[i] = interop_data(&interop[i], &nb);
        const interop_tensor *t = &interop[i];
        CHECK_OK(lcm_st_add(w, t->name, t->dtype, t->ndim, t->shape, bufs[i], &err), &err);
    }
    CHECK_OK(lcm_st_write(w, path, &err), &err);
    lcm_st_writer_free(w);
    for (int i = 0; i < N_INTEROP; i++) free(bufs[i]);
}

/* Reads the file named by LCM_ST_INTEROP_READ; LCM_ST_INTEROP_NAMES lists (comma-separated) the
 * interop tensors it must hold, and it may hold no others. */
TEST(interop_read) {
    const char *path = getenv("LCM_ST_INTEROP_READ");
    const char *names = getenv("LCM_ST_INTEROP_NAMES");
    if (!path || !names) SKIP("LCM_ST_INTEROP_READ/NAMES not set (tests/test_safetensors_python.sh sets them)");
    lcm_error err = {0};
    lcm_st_file f;
    CHECK_OK(lcm_st_open(&f, path, &err), &err);
    if (err.code) return;
    int expected = 0;
    for (int i = 0; i < N_INTEROP; i++) {
        char item[32];
        snprintf(item, sizeof item, ",%s,", interop[i].name);
        char list[512];
        snprintf(list, sizeof list, ",%s,", names);
        if (!strstr(list, item)) continue;
        expected++;
        const lcm_st_tensor *t = lcm_st_find(&f, interop[i].name);
        CHECKF(t != NULL, "%s: tensor '%s' missing", path, interop[i].name);
        if (!t) continue;
        CHECKF(t->dtype == interop[i].dtype && t->ndim == interop[i].ndim, "'%s': %s, %d dims", t->name,
               lcm_st_dtype_name(t->dtype), t->ndim);
        for (int d = 0; d < t->ndim && d < interop[i].ndim; d++) CHECK(t->shape[d] == interop[i].shape[d]);
        uint64_t nb;
        uint8_t *want = interop_data(&interop[i], &nb);
        CHECKF(t->nbytes == nb && (nb == 0 || memcmp(t->data, want, (size_t)nb) == 0), "'%s': values differ", t->name);
        free(want);
    }
    CHECKF(f.n == expected && expected > 0, "%s holds %d tensors, expected %d", path, f.n, expected);
    if (lcm_st_meta(&f, "note")) CHECK(strcmp(lcm_st_meta(&f, "note"), interop_note) == 0);
    CHECK(lcm_st_meta(&f, "format") && strcmp(lcm_st_meta(&f, "format"), "pt") == 0);
    lcm_st_close(&f);
}
