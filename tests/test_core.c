/* test_core.c: error values, escaping, atomic files, mappings, JSON numbers, fp16/bf16 conversion, Philox. */
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "lcm/escape.h"
#include "lcm/fileio.h"
#include "lcm/half.h"
#include "lcm/philox.h"
#include "lcm/sbuf.h"

TEST(error_first_message_wins) {
    lcm_error err = {0};
    CHECK(lcm_fail(&err, LCM_ERR_IO, "first %d", 1) == LCM_ERR_IO);
    lcm_fail(&err, LCM_ERR_DATA, "second");
    CHECK(err.code == LCM_ERR_IO);
    CHECK(strcmp(err.msg, "first 1") == 0);
    lcm_error_context(&err, "reading %s", "x.bin");
    CHECK(strcmp(err.msg, "reading x.bin: first 1") == 0);
    CHECK(lcm_exit_status(LCM_ERR_CONFIG) == 2);
    CHECK(lcm_exit_status(LCM_ERR_IO) == 1);
}

TEST(escape_keeps_printable_ascii_and_escapes_the_rest) {
    char out[LCM_ESC_CAP];
    CHECK(strcmp(lcm_escape_str(out, sizeof out, "layers.0.w_q ~!@#$%^&*()"), "layers.0.w_q ~!@#$%^&*()") == 0);
    /* C escapes, then \xNN for other controls, DEL, and each byte of non-ASCII UTF-8 (escape.h says why). */
    const char in[] = "a\nb\tc\rd\"e'f\\g\x1b[2Jh\x7f\x01\xc3\xa9\xff";
    const char want[] = "a\\nb\\tc\\rd\\\"e\\'f\\\\g\\x1b[2Jh\\x7f\\x01\\xc3\\xa9\\xff";
    CHECKF(strcmp(lcm_escape_str(out, sizeof out, in), want) == 0, "got %s", out);
    /* An embedded NUL is shown, not taken for the end (the length is given). */
    CHECK(strcmp(lcm_escape(out, sizeof out, "a\0b", 3), "a\\x00b") == 0);
    CHECK(strcmp(lcm_escape(out, sizeof out, "", 0), "") == 0);
    CHECK(strcmp(lcm_escape_str(out, sizeof out, NULL), "(null)") == 0);
}

TEST(escape_cuts_long_text_after_whole_escapes) {
    char out[12];
    /* 11 characters fit exactly in 12 bytes: no cut. */
    CHECK(strcmp(lcm_escape_str(out, sizeof out, "abcdefghijk"), "abcdefghijk") == 0);
    CHECK(strcmp(lcm_escape_str(out, sizeof out, "abcdefghijkl"), "abcdefgh...") == 0);
    /* "\x1b" is never split: the cut comes before it when it would not fit whole with the "...". */
    CHECK(strcmp(lcm_escape_str(out, sizeof out, "abcde\x1b" "fghij"), "abcde...") == 0);
    CHECK(strlen(out) < sizeof out);
    char big[4096];
    memset(big, '\n', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char shown[LCM_ESC_CAP];
    lcm_escape_str(shown, sizeof shown, big);
    CHECK(strlen(shown) == sizeof shown - 1 && strcmp(shown + strlen(shown) - 5, "\\n...") == 0);
}

TEST(error_messages_are_one_line) {
    lcm_error err = {0};
    lcm_fail(&err, LCM_ERR_FORMAT, "name %s", "a\nb\x1b[31m");
    CHECK(strcmp(err.msg, "name a?b?[31m") == 0);
}

TEST(atomic_write_replaces_whole_file) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/a.bin", dir);
    CHECK_OK(lcm_write_file_atomic(path, "old", 3, &err), &err);
    lcm_afile af;
    CHECK_OK(lcm_afile_open(&af, path, &err), &err);
    CHECK_OK(lcm_afile_write(&af, "new-content", 11, &err), &err);
    /* Not committed yet: the old file is intact. */
    char *buf = NULL;
    size_t n = 0;
    CHECK_OK(lcm_read_file(path, &buf, &n, &err), &err);
    CHECK(n == 3 && memcmp(buf, "old", 3) == 0);
    free(buf);
    lcm_afile_abort(&af);
    CHECK(!lcm_file_exists(af.tmp));
    CHECK_OK(lcm_afile_open(&af, path, &err), &err);
    CHECK_OK(lcm_afile_write(&af, "abc", 3, &err), &err);
    CHECK_OK(lcm_afile_pad(&af, 8, &err), &err);
    CHECK_OK(lcm_afile_pwrite(&af, 1, "X", 1, &err), &err);
    CHECK_OK(lcm_afile_commit(&af, &err), &err);
    CHECK_OK(lcm_read_file(path, &buf, &n, &err), &err);
    CHECK(n == 8 && memcmp(buf, "aXc\0\0\0\0\0", 8) == 0);
    free(buf);
    CHECK_OK(lcm_rm_rf(dir, &err), &err);
    CHECK(!lcm_file_exists(dir));
}

TEST(map_missing_file_is_an_error) {
    lcm_error err = {0};
    lcm_mapping m;
    CHECK_FAILS(lcm_map_file(&m, "/nonexistent/x.lcmd", &err), &err, LCM_ERR_IO, "/nonexistent/x.lcmd");
}

/* A FIFO, a device or a directory is refused at once; before O_NONBLOCK a FIFO without a writer
 * blocked open() forever (alarm() ends such a run as a failure). */
TEST(map_refuses_what_is_not_a_regular_file) {
    lcm_error err = {0};
    lcm_mapping m;
    char fifo[512];
    snprintf(fifo, sizeof fifo, "%s/data.lcmd", harness_tmpdir());
    CHECK(mkfifo(fifo, 0600) == 0);
    alarm(60);
    CHECK_FAILS(lcm_map_file(&m, fifo, &err), &err, LCM_ERR_IO, "data.lcmd is not a regular file");
    CHECK_FAILS(lcm_map_file(&m, "/dev/null", &err), &err, LCM_ERR_IO, "/dev/null is not a regular file");
    CHECK_FAILS(lcm_map_file(&m, harness_tmpdir(), &err), &err, LCM_ERR_IO, "is not a regular file");
    alarm(0);
}

TEST(mkdir_p_and_paths) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char deep[512], out[512];
    snprintf(deep, sizeof deep, "%s/a/b/c", dir);
    CHECK_OK(lcm_mkdir_p(deep, &err), &err);
    CHECK(lcm_is_dir(deep));
    lcm_dirname("a/b/c.ini", out, sizeof out);
    CHECK(strcmp(out, "a/b") == 0);
    lcm_dirname("c.ini", out, sizeof out);
    CHECK(strcmp(out, ".") == 0);
    CHECK(lcm_path_join(out, sizeof out, "conf", "model/x.ini") == 0 && strcmp(out, "conf/model/x.ini") == 0);
    CHECK(lcm_path_join(out, sizeof out, "conf", "/abs.ini") == 0 && strcmp(out, "/abs.ini") == 0);
    lcm_rm_rf(dir, &err);
}

TEST(json_numbers_round_trip) {
    lcm_sbuf b = {0};
    double xs[] = {0.1, 1e-7, 3.0, -2.5e10, 0.30000000000000004};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        lcm_sbuf_reset(&b);
        lcm_json_num(&b, xs[i]);
        CHECK(strtod(b.s, NULL) == xs[i]);
    }
    lcm_sbuf_reset(&b);
    lcm_json_num(&b, NAN);
    CHECK(strcmp(b.s, "null") == 0);
    lcm_sbuf_reset(&b);
    lcm_json_str(&b, "a\"b\n");
    CHECK(strcmp(b.s, "\"a\\\"b\\n\"") == 0);
    lcm_sbuf_free(&b);
}

TEST(half_conversions) {
    /* Exactly representable values survive both ways. */
    float exact[] = {0.0f, 1.0f, -2.0f, 0.5f, 65504.0f, 6.103515625e-05f /* min normal */, 5.960464477539063e-08f};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        CHECK(lcm_f16_to_f32(lcm_f32_to_f16(exact[i])) == exact[i]);
    }
    CHECK(lcm_f32_to_f16(1.0f) == 0x3c00);
    CHECK(lcm_f32_to_f16(-2.0f) == 0xc000);
    CHECK(lcm_f32_to_f16(1e6f) == 0x7c00);          /* overflow to inf */
    CHECK(isnan(lcm_f16_to_f32(lcm_f32_to_f16(NAN))));
    /* Round to nearest even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 -> 1. */
    CHECK(lcm_f32_to_f16(1.0f + 0.00048828125f) == 0x3c00);
    CHECK(lcm_f32_to_f16(1.0f + 3 * 0.00048828125f) == 0x3c02);
    /* f16 -> f32 is exact for every finite f16: check round trip over all of them. */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        if (lcm_f32_to_f16(lcm_f16_to_f32((uint16_t)h)) != h) bad++;
    }
    CHECK(bad == 0);
    CHECK(lcm_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(lcm_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(lcm_f32_to_bf16(1.0f + 1.0f / 256) == 0x3f80);  /* halfway, to even */
    CHECK(lcm_f32_to_bf16(1.0f + 3.0f / 256) == 0x3f82);
    CHECK(isnan(lcm_bf16_to_f32(lcm_f32_to_bf16(NAN))));
}

TEST(philox_known_answer) {
    /* Random123's published known-answer vectors for Philox4x32-10. */
    lcm_u32x4 r = lcm_philox4x32(0, 0, 0, 0, 0);
    CHECK(r.v[0] == 0x6627e8d5u && r.v[1] == 0xe169c58du && r.v[2] == 0xbc57ac4cu && r.v[3] == 0x9b00dbd8u);
    r = lcm_philox4x32(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffffffffffull);
    CHECK(r.v[0] == 0x408f276du && r.v[1] == 0x41c83b0eu && r.v[2] == 0xa20bc7c6u && r.v[3] == 0x6d5451fdu);
}

TEST(dropout_mask_rate_and_independence) {
    lcm_dropout_key k = {.seed = 1, .step = 7, .microbatch = 2, .layer = 3, .site = 1};
    uint32_t thr = lcm_dropout_threshold(0.1f);
    int kept = 0, same = 0, n = 200000;
    lcm_dropout_key k2 = k;
    k2.site = 0;
    for (int i = 0; i < n; i++) {
        int a = lcm_dropout_keep(k, (uint64_t)i, thr);
        kept += a;
        same += a == lcm_dropout_keep(k2, (uint64_t)i, thr);
    }
    /* Binomial(n, 0.9): std = sqrt(n * 0.09) ~ 134; 5 sigma. */
    CHECK(abs(kept - (int)(0.9 * n)) < 700);
    /* Two sites agree where both keep or both drop: 0.82 of the time if independent. */
    CHECK(abs(same - (int)(0.82 * n)) < 1000);
    CHECK(lcm_dropout_threshold(0.0f) == 0);
    for (int i = 0; i < 1000; i++) CHECK(lcm_dropout_keep(k, (uint64_t)i, 0));
}
