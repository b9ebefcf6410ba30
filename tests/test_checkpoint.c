/* test_checkpoint.c: checkpoint integrity: CRC-32C, the checksums in safetensors metadata and their
 * verification on every load (bit flips anywhere in a checkpoint are detected or provably harmless),
 * validation of every train_state field, no commit of a non-finite state, rotation that keeps the
 * newest good checkpoint, and the choice of the newest checkpoint that verifies. The end-to-end fault
 * injection (SIGKILL, disk full) is tests/test_fault_ckpt.sh. */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "harness.h"
#include "lcm/checkpoint.h"
#include "lcm/crc32c.h"
#include "lcm/fileio.h"
#include "lcm/log.h"
#include "lcm/philox.h"
#include "lcm/safetensors.h"
#include "lcm/st_checksum.h"

/* ---- fixtures ---------------------------------------------------------------------------------- */

typedef struct fixture {
    lcm_param_table t;
    float *w, *m, *v;
    lcm_normalizer norm;
    lcm_train_state s;
    char run[256];
} fixture;

static const char *config_text = "[model]\nmodel_dim = 16\n";

static void fixture_init(fixture *fx, uint64_t seed) {
    lcm_error err = {0};
    memset(fx, 0, sizeof *fx);
    lcm_dims d = {.D = 12, .C = 16, .L = 2, .H = 2, .F = 24, .max_seq_len = 64, .rope_theta = 10000.0f, .eps = 1e-5f};
    CHECK_OK(lcm_param_table_build(&fx->t, &d, &err), &err);
    size_t P = fx->t.total;
    fx->w = calloc(P, sizeof(float));
    fx->m = calloc(P, sizeof(float));
    fx->v = calloc(P, sizeof(float));
    lcm_params_init(&fx->t, fx->w, seed);
    lcm_rng r;
    lcm_rng_init(&r, seed, 7);
    for (size_t i = 0; i < P; i++) {
        fx->m[i] = 0.01f * (2 * lcm_rng_uniform(&r) - 1);
        fx->v[i] = 1e-4f * lcm_rng_uniform(&r);
    }
    fx->norm.dim = d.D;
    fx->norm.center = malloc(d.D * sizeof(float));
    fx->norm.scale = malloc(d.D * sizeof(float));
    for (int i = 0; i < d.D; i++) {
        fx->norm.center[i] = 0.1f * (float)i;
        fx->norm.scale[i] = 1.0f + 0.01f * (float)i;
    }
    fx->s = (lcm_train_state){.step = 6, .cursor = {1, 3}, .bad_in_row = 1, .bad_total = 1, .concepts_seen = 600,
                              .elapsed_s = 12.5, .config_hash = 0x0123456789abcdefull};
    snprintf(fx->run, sizeof fx->run, "%s", harness_tmpdir());
}

static void fixture_free(fixture *fx) {
    lcm_error err = {0};
    lcm_rm_rf(fx->run, &err);
    free(fx->w);
    free(fx->m);
    free(fx->v);
    lcm_normalizer_free(&fx->norm);
    lcm_param_table_free(&fx->t);
}

static int save_step(fixture *fx, int64_t step, int keep_last, char *dir, size_t cap, lcm_error *err) {
    fx->s.step = step;
    fx->s.concepts_seen = 100 * step;
    return lcm_checkpoint_save(fx->run, &fx->t, fx->w, fx->m, fx->v, &fx->norm, &fx->s, config_text, keep_last, dir,
                               cap, err);
}

static void flip_bit(const char *path, uint64_t bit) {
    int fd = open(path, O_RDWR);
    uint8_t b = 0;
    if (fd < 0 || pread(fd, &b, 1, (off_t)(bit / 8)) != 1) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    b ^= (uint8_t)(1u << (bit % 8));
    if (pwrite(fd, &b, 1, (off_t)(bit / 8)) != 1) exit(2);
    close(fd);
}

static uint64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Header bytes (8 + JSON) and a tensor's file offset. */
static uint64_t header_bytes(const char *path) {
    lcm_st_file f;
    lcm_error err = {0};
    if (lcm_st_open(&f, path, &err) != 0) return 0;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | f.map.data[i];
    lcm_st_close(&f);
    return 8 + n;
}

static uint64_t tensor_offset(const char *path, const char *name, uint64_t *nbytes) {
    lcm_st_file f;
    lcm_error err = {0};
    if (lcm_st_open(&f, path, &err) != 0) return 0;
    const lcm_st_tensor *t = lcm_st_find(&f, name);
    uint64_t off = t ? (uint64_t)(t->data - f.map.data) : 0;
    if (t && nbytes) *nbytes = t->nbytes;
    lcm_st_close(&f);
    return off;
}

/* Rewrite a safetensors file with fresh, valid checksums, one metadata value replaced (value NULL:
 * removed) and, when tensor is given, one F32 element changed: a file that passes every checksum but
 * holds what a buggy or hostile writer could put there. */
static void rewrite(const char *path, const char *key, const char *value, const char *tensor, uint64_t at, float x) {
    lcm_error err = {0};
    lcm_st_file f;
    CHECK_OK(lcm_st_open(&f, path, &err), &err);
    lcm_st_writer *w = lcm_st_writer_new();
    int replaced = 0;
    for (int i = 0; i < f.n_meta; i++) {
        const char *k = f.meta_keys[i];
        if (strncmp(k, LCM_ST_CRC_PREFIX, strlen(LCM_ST_CRC_PREFIX)) == 0 || strcmp(k, LCM_ST_HEADER_CRC_KEY) == 0)
            continue;
        if (key && strcmp(k, key) == 0) {
            replaced = 1;
            if (value) CHECK_OK(lcm_st_add_meta(w, k, value, &err), &err);
            continue;
        }
        CHECK_OK(lcm_st_add_meta(w, k, f.meta_values[i], &err), &err);
    }
    if (key && value && !replaced) CHECK_OK(lcm_st_add_meta(w, key, value, &err), &err);
    void *copies[8] = {0};
    for (int i = 0; i < f.n && i < 8; i++) {
        const lcm_st_tensor *t = &f.tensors[i];
        copies[i] = malloc(t->nbytes + 1);
        memcpy(copies[i], t->data, t->nbytes);
        if (tensor && strcmp(t->name, tensor) == 0) memcpy((char *)copies[i] + 4 * at, &x, 4);
        CHECK_OK(lcm_st_add(w, t->name, t->dtype, t->ndim, t->shape, copies[i], &err), &err);
    }
    CHECK_OK(lcm_st_add_checksums(w, &err), &err);
    CHECK_OK(lcm_st_write(w, path, &err), &err);
    lcm_st_writer_free(w);
    for (int i = 0; i < 8; i++) free(copies[i]);
    lcm_st_close(&f);
}

/* stderr into a file for the duration of a few calls. */
static int capture_begin(const char *path) {
    fflush(stderr);
    int saved = dup(2), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    close(fd);
    return saved;
}

static int capture_end(int saved, const char *path, const char *needle) {
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char *text = NULL;
    size_t n = 0;
    lcm_error err = {0};
    if (lcm_read_file(path, &text, &n, &err) != 0) return -1;
    int count = 0;
    for (const char *p = text; *needle && (p = strstr(p, needle)) != NULL; p++) count++;
    free(text);
    return count;
}

/* ---- CRC-32C ----------------------------------------------------------------------------------- */

TEST(crc32c_matches_the_published_check_values) {
    /* The check value of the CRC catalogue and the iSCSI test vectors of RFC 3720, appendix B.4. */
    uint8_t zeros[32] = {0}, ones[32], inc[32], dec[32];
    for (int i = 0; i < 32; i++) {
        ones[i] = 0xff;
        inc[i] = (uint8_t)i;
        dec[i] = (uint8_t)(31 - i);
    }
    for (int hw = 0; hw < 2; hw++) {
        uint32_t (*crc)(uint32_t, const void *, size_t) = hw ? lcm_crc32c : lcm_crc32c_portable;
        CHECK(crc(0, "123456789", 9) == 0xE3069283u);
        CHECK(crc(0, zeros, 32) == 0x8A9136AAu);
        CHECK(crc(0, ones, 32) == 0x62A8AB43u);
        CHECK(crc(0, inc, 32) == 0x46DD794Eu);
        CHECK(crc(0, dec, 32) == 0x113FDB5Cu);
        CHECK(crc(crc(0, "1234", 4), "56789", 5) == 0xE3069283u);
        CHECK(crc(0, "", 0) == 0);
    }
}

TEST(crc32c_instruction_and_table_agree_at_every_length_and_alignment) {
    uint8_t buf[300];
    lcm_rng r;
    lcm_rng_init(&r, 5, 0);
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(lcm_rng_uniform(&r) * 256);
    int bad = 0;
    for (size_t off = 0; off < 16; off++)
        for (size_t len = 0; off + len <= sizeof buf; len += 7)
            bad += lcm_crc32c(0x1234, buf + off, len) != lcm_crc32c_portable(0x1234, buf + off, len);
    CHECK(bad == 0);
}

/* ---- checksums in the files ---------------------------------------------------------------------- */

TEST(checkpoint_files_carry_a_crc32c_per_tensor_and_of_the_header) {
    fixture fx;
    fixture_init(&fx, 1);
    lcm_error err = {0};
    char dir[1200], path[1300];
    CHECK_OK(save_step(&fx, 3, 2, dir, sizeof dir, &err), &err);
    const char *files[] = {"model.safetensors", "train_state.safetensors"};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[k]);
        lcm_st_file f;
        CHECK_OK(lcm_st_open(&f, path, &err), &err);
        CHECK(f.n > 0);
        for (int i = 0; i < f.n; i++) {
            char key[256], want[16];
            snprintf(key, sizeof key, "crc32c:%s", f.tensors[i].name);
            snprintf(want, sizeof want, "%08x", lcm_crc32c_portable(0, f.tensors[i].data, f.tensors[i].nbytes));
            const char *got = lcm_st_meta(&f, key);
            CHECKF(got && strcmp(got, want) == 0, "%s: %s = %s, want %s", files[k], key, got ? got : "(none)", want);
        }
        const char *h = lcm_st_meta(&f, "lcm_header_crc32c");
        CHECK(h && strlen(h) == 8);
        lcm_st_close(&f);
    }
    fixture_free(&fx);
}

TEST(a_flipped_payload_bit_names_the_file_and_the_tensor) {
    fixture fx;
    fixture_init(&fx, 2);
    lcm_error err = {0};
    char dir[1200], model[1300], state[1300], npath[600];
    CHECK_OK(save_step(&fx, 3, 2, dir, sizeof dir, &err), &err);
    snprintf(model, sizeof model, "%s/model.safetensors", dir);
    snprintf(state, sizeof state, "%s/train_state.safetensors", dir);
    size_t P = fx.t.total;
    float *w = malloc(P * 4), *m = malloc(P * 4), *v = malloc(P * 4);
    lcm_normalizer n = {0};
    lcm_train_state s;
    const lcm_param *p = &fx.t.params[3];
    uint64_t nbytes = 0, off = tensor_offset(model, p->name, &nbytes);
    CHECK(off > 0 && nbytes == p->numel * 4);
    flip_bit(model, 8 * (off + nbytes / 2) + 5); /* one bit in the middle of a weight, like a cosmic ray */
    CHECK_FAILS(lcm_checkpoint_load(dir, &fx.t, w, m, v, &n, &s, &err), &err, LCM_ERR_FORMAT, p->name);
    CHECK_FAILS(lcm_checkpoint_load(dir, &fx.t, w, m, v, &n, &s, &err), &err, LCM_ERR_FORMAT, model);
    CHECK_FAILS(lcm_weights_load(model, &fx.t, w, NULL, &err), &err, LCM_ERR_FORMAT, "fails its checksum");
    flip_bit(model, 8 * (off + nbytes / 2) + 5);
    CHECK_OK(lcm_checkpoint_load(dir, &fx.t, w, m, v, &n, &s, &err), &err);
    lcm_normalizer_free(&n);
    CHECK(memcmp(w, fx.w, P * 4) == 0 && memcmp(v, fx.v, P * 4) == 0);

    off = tensor_offset(state, "adamw.exp_avg_sq", &nbytes);
    flip_bit(state, 8 * (off + nbytes - 1) + 0);
    CHECK_FAILS(lcm_checkpoint_load(dir, &fx.t, w, m, v, &n, &s, &err), &err, LCM_ERR_FORMAT,
                "train_state.safetensors: tensor 'adamw.exp_avg_sq' fails its checksum");

    /* The normalizer file has the same protection. */
    snprintf(npath, sizeof npath, "%s/normalizer.safetensors", fx.run);
    CHECK_OK(lcm_normalizer_save(&fx.norm, npath, &err), &err);
    off = tensor_offset(npath, "scale", &nbytes);
    flip_bit(npath, 8 * off + 3);
    CHECK_FAILS(lcm_normalizer_load(&n, npath, 12, &err), &err, LCM_ERR_FORMAT, "tensor 'scale' fails its checksum");
    free(w);
    free(m);
    free(v);
    fixture_free(&fx);
}

/* Every flip either fails the load (a one-line error naming the file) or changes nothing that is loaded:
 * weights, normalizer, moments, every state field and the stored config are compared bit for bit. */
TEST(every_single_bit_flip_is_detected_or_harmless) {
    fixture fx;
    fixture_init(&fx, 3);
    lcm_error err = {0};
    char dir[1200], path[1300];
    CHECK_OK(save_step(&fx, 4, 2, dir, sizeof dir, &err), &err);
    size_t P = fx.t.total;
    float *w = malloc(P * 4), *m = malloc(P * 4), *v = malloc(P * 4);
    lcm_train_state s0, s;
    lcm_normalizer n0 = {0}, n = {0};
    char *cfg0 = NULL, *cfg = NULL;
    CHECK_OK(lcm_checkpoint_load(dir, &fx.t, w, m, v, &n0, &s0, &err), &err);
    CHECK_OK(lcm_checkpoint_config_text(dir, &cfg0, &err), &err);
    lcm_rng r;
    lcm_rng_init(&r, 2026, 1);
    int detected = 0, harmless = 0, wrong = 0, tried = 0;
    const char *files[] = {"model.safetensors", "train_state.safetensors"};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[k]);
        const uint64_t size = file_size(path), header = header_bytes(path);
        /* Every bit of 400 random header bytes (the first 16 always: length and "{"), and 2,000 random
         * payload bits. */
        for (int j = 0; j < 400 + 2000; j++) {
            uint64_t bits[8];
            int nb = 0;
            if (j < 400) {
                uint64_t byte = j < 16 ? (uint64_t)j : (uint64_t)(lcm_rng_uniform(&r) * (double)header);
                for (int b = 0; b < 8; b++) bits[nb++] = 8 * byte + (uint64_t)b;
            } else {
                bits[nb++] = 8 * header + (uint64_t)(lcm_rng_uniform(&r) * (double)(8 * (size - header)));
            }
            for (int b = 0; b < nb; b++) {
                tried++;
                flip_bit(path, bits[b]);
                lcm_error_clear(&err);
                int rc = lcm_checkpoint_load(dir, &fx.t, w, m, v, &n, &s, &err);
                if (rc == 0) rc = lcm_checkpoint_config_text(dir, &cfg, &err);
                if (rc != 0) {
                    if (strstr(err.msg, path) && !strchr(err.msg, '\n')) detected++;
                    else {
                        wrong++;
                        fprintf(stderr, "  bit %llu of %s: error does not name the file in one line: %s\n",
                                (unsigned long long)bits[b], files[k], err.msg);
                    }
                } else {
                    int same = memcmp(w, fx.w, P * 4) == 0 && memcmp(m, fx.m, P * 4) == 0 &&
                               memcmp(v, fx.v, P * 4) == 0 && memcmp(&s, &s0, sizeof s) == 0 && n.dim == n0.dim &&
                               memcmp(n.center, n0.center, n.dim * 4) == 0 &&
                               memcmp(n.scale, n0.scale, n.dim * 4) == 0 && strcmp(cfg, cfg0) == 0;
                    if (same) harmless++;
                    else {
                        wrong++;
                        fprintf(stderr, "  bit %llu of %s: loaded, and something differs\n",
                                (unsigned long long)bits[b], files[k]);
                    }
                }
                lcm_normalizer_free(&n);
                free(cfg);
                cfg = NULL;
                flip_bit(path, bits[b]);
            }
        }
    }
    fprintf(stderr, "  %d single-bit flips: %d detected, %d harmless, %d wrong\n", tried, detected, harmless, wrong);
    CHECK(wrong == 0 && detected + harmless == tried && tried == 2 * (400 * 8 + 2000));
    lcm_normalizer_free(&n0);
    free(cfg0);
    free(w);
    free(m);
    free(v);
    fixture_free(&fx);
}

TEST(a_file_without_checksums_loads_with_one_notice) {
    /* Weights as PyTorch or an older lcm write them: the same tensors, no checksum metadata. */
    fixture fx;
    fixture_init(&fx, 4);
    lcm_error err = {0};
    char path[600], log[600];
    snprintf(path, sizeof path, "%s/torch.safetensors", fx.run);
    snprintf(log, sizeof log, "%s/stderr", fx.run);
    lcm_st_writer *wr = lcm_st_writer_new();
    CHECK_OK(lcm_st_add_meta(wr, "format", "pt", &err), &err);
    for (int i = 0; i < fx.t.n; i++) {
        const lcm_param *p = &fx.t.params[i];
        CHECK_OK(lcm_st_add(wr, p->name, LCM_ST_F32, p->ndim, p->shape, fx.w + p->offset, &err), &err);
    }
    CHECK_OK(lcm_st_write(wr, path, &err), &err);
    lcm_st_writer_free(wr);
    float *w = calloc(fx.t.total, 4);
    int saved = capture_begin(log);
    int rc1 = lcm_weights_load(path, &fx.t, w, NULL, &err);
    int rc2 = lcm_weights_load(path, &fx.t, w, NULL, &err);
    CHECK(capture_end(saved, log, "carries no checksums") == 1);
    CHECK(rc1 == 0 && rc2 == 0 && memcmp(w, fx.w, fx.t.total * 4) == 0);

    /* Some checksums but not all: not an old file, a damaged one. */
    snprintf(log, sizeof log, "crc32c:%s", fx.t.params[0].name);
    char dir[1200], model[1300];
    CHECK_OK(save_step(&fx, 1, 2, dir, sizeof dir, &err), &err);
    snprintf(model, sizeof model, "%s/model.safetensors", dir);
    lcm_st_file f;
    CHECK_OK(lcm_st_open(&f, model, &err), &err);
    wr = lcm_st_writer_new();
    for (int i = 0; i < f.n_meta; i++)
        if (strcmp(f.meta_keys[i], log) != 0) CHECK_OK(lcm_st_add_meta(wr, f.meta_keys[i], f.meta_values[i], &err), &err);
    for (int i = 0; i < f.n; i++)
        CHECK_OK(lcm_st_add(wr, f.tensors[i].name, f.tensors[i].dtype, f.tensors[i].ndim, f.tensors[i].shape,
                            f.tensors[i].data, &err), &err);
    snprintf(path, sizeof path, "%s/partial.safetensors", fx.run);
    CHECK_OK(lcm_st_write(wr, path, &err), &err);
    lcm_st_writer_free(wr);
    lcm_st_close(&f);
    CHECK_FAILS(lcm_weights_load(path, &fx.t, w, NULL, &err), &err, LCM_ERR_FORMAT, "header is damaged");
    free(w);
    fixture_free(&fx);
}

/* ---- train_state fields -------------------------------------------------------------------------- */

TEST(every_train_state_field_is_validated_on_load) {
    fixture fx;
    fixture_init(&fx, 5);
    lcm_error err = {0};
    char dir[1200], state[1300], backup[1300];
    CHECK_OK(save_step(&fx, 6, 2, dir, sizeof dir, &err), &err);
    snprintf(state, sizeof state, "%s/train_state.safetensors", dir);
    snprintf(backup, sizeof backup, "%s/state.bak", fx.run);
    char *good = NULL;
    size_t good_n = 0;
    CHECK_OK(lcm_read_file(state, &good, &good_n, &err), &err);
    size_t P = fx.t.total;
    float *w = malloc(P * 4), *m = malloc(P * 4), *v = malloc(P * 4);
    lcm_normalizer n = {0};
    lcm_train_state s;
    struct {
        const char *key, *value, *tensor;
        float x;
        const char *want;
    } cases[] = {
        {"step", "-5", NULL, 0, "step = '-5' is out of range (must be >= 0)"},
        {"step", "6x", NULL, 0, "step = '6x' is not an integer"},
        {"step", NULL, NULL, 0, "step = '(missing)' is missing"},
        {"cursor_epoch", "-1", NULL, 0, "cursor_epoch = '-1' is out of range"},
        {"cursor_epoch", "601", NULL, 0, "cursor_epoch = '601' is out of range (must be 0 to 600)"},
        {"cursor_index", "-2", NULL, 0, "cursor_index = '-2' is out of range"},
        {"bad_total", "7", NULL, 0, "bad_total = '7' is out of range (must be 0 to 6)"},
        {"bad_in_row", "2", NULL, 0, "bad_in_row = '2' is out of range (must be 0 to 1)"},
        {"concepts_seen", "-3", NULL, 0, "concepts_seen = '-3' is out of range"},
        {"elapsed_s", "nan", NULL, 0, "elapsed_s = 'nan' is not a finite number >= 0"},
        {"elapsed_s", "-1", NULL, 0, "elapsed_s = '-1'"},
        {"config_hash", "12345", NULL, 0, "config_hash = '12345' is not 16 hex digits"},
        {"param_total", "17", NULL, 0, "adamw.exp_avg must be F32 [17]"},
        {"format_version", "2", NULL, 0, "format_version = '2'"},
        {"format", "other", NULL, 0, "is not an lcm training state"},
        {NULL, NULL, "adamw.exp_avg_sq", -1e-3f, "adamw.exp_avg_sq[5] = -0.001 (a second moment must be finite and >= 0)"},
        {NULL, NULL, "adamw.exp_avg_sq", NAN, "adamw.exp_avg_sq[5] = nan"},
        {NULL, NULL, "adamw.exp_avg", INFINITY, "adamw.exp_avg[5] = inf (a moment must be finite)"},
        {"lcm_config", "[model]\nmodel_dim = 32\n", NULL, 0, "were written by different runs"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rewrite(state, cases[i].key, cases[i].value, cases[i].tensor, 5, cases[i].x);
        lcm_error_clear(&err);
        int rc = lcm_checkpoint_load(dir, &fx.t, w, m, v, &n, &s, &err);
        CHECKF(rc != 0 && strstr(err.msg, cases[i].want) && strstr(err.msg, state) && !strchr(err.msg, '\n'),
               "case %zu: rc %d, message: %s", i, rc, err.msg);
        lcm_normalizer_free(&n);
        CHECK_OK(lcm_write_file_atomic(state, good, good_n, &err), &err);
    }
    CHECK_OK(lcm_checkpoint_load(dir, &fx.t, w, m, v, &n, &s, &err), &err);
    CHECK(s.step == 6 && s.bad_total == 1 && s.cursor.epoch == 1 && s.cursor.index == 3 && s.elapsed_s == 12.5);
    lcm_normalizer_free(&n);
    free(good);
    free(w);
    free(m);
    free(v);
    fixture_free(&fx);
}

/* ---- saving ------------------------------------------------------------------------------------- */

TEST(a_non_finite_state_is_never_committed_and_rotation_keeps_the_good_one) {
    fixture fx;
    fixture_init(&fx, 6);
    lcm_error err = {0};
    char dir[1200], out[1200], path[1300];
    CHECK_OK(save_step(&fx, 1, 1, dir, sizeof dir, &err), &err);
    snprintf(path, sizeof path, "%s/checkpoints/step_000000001", fx.run);
    CHECK(lcm_is_dir(path));
    struct {
        float *array;
        float x;
        const char *want;
    } cases[] = {
        {fx.w, NAN, "the weights hold"},
        {fx.w, INFINITY, "the weights hold"},
        {fx.m, -INFINITY, "the AdamW first moments hold"},
        {fx.v, -1.0f, "the AdamW second moments hold"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t at = fx.t.params[2].offset + 1;
        float keep = cases[i].array[at];
        cases[i].array[at] = cases[i].x;
        lcm_error_clear(&err);
        int rc = save_step(&fx, 2 + (int64_t)i, 1, out, sizeof out, &err);
        char want[1400];
        snprintf(want, sizeof want, "this state is not checkpointed; the last checkpoint, %s, is intact (verified)", path);
        CHECKF(rc == LCM_ERR_NUMERIC && strstr(err.msg, cases[i].want) && strstr(err.msg, fx.t.params[2].name) &&
                   strstr(err.msg, want),
               "case %zu: %s", i, err.msg);
        cases[i].array[at] = keep;
    }
    /* Nothing new on disk, and keep_last = 1 did not rotate step 1 away. */
    snprintf(dir, sizeof dir, "%s/checkpoints", fx.run);
    int entries = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) entries += e->d_name[0] != '.';
    if (d) closedir(d);
    CHECK(entries == 1 && lcm_is_dir(path));
    float *w = malloc(fx.t.total * 4);
    lcm_train_state s;
    CHECK_OK(lcm_checkpoint_load(path, &fx.t, w, NULL, NULL, NULL, &s, &err), &err);
    CHECK(s.step == 1);
    free(w);
    fixture_free(&fx);
}

TEST(the_intact_message_says_only_what_is_true) {
    fixture fx;
    fixture_init(&fx, 7);
    lcm_error err = {0};
    char dir1[1200], dir2[1200], msg[1400], model[1300];
    lcm_checkpoint_describe_intact(fx.run, msg, sizeof msg);
    CHECKF(strstr(msg, "no checkpoint has been written") != NULL, "%s", msg);
    CHECK_OK(save_step(&fx, 1, 5, dir1, sizeof dir1, &err), &err);
    CHECK_OK(save_step(&fx, 2, 5, dir2, sizeof dir2, &err), &err);
    lcm_checkpoint_describe_intact(fx.run, msg, sizeof msg);
    CHECKF(strstr(msg, dir2) && strstr(msg, "is intact (verified)"), "%s", msg);
    /* The newest is damaged: the message names the older one that verifies. */
    snprintf(model, sizeof model, "%s/model.safetensors", dir2);
    flip_bit(model, 8 * (file_size(model) - 3));
    lcm_checkpoint_describe_intact(fx.run, msg, sizeof msg);
    CHECKF(strstr(msg, dir1) && !strstr(msg, dir2), "%s", msg);
    snprintf(model, sizeof model, "%s/model.safetensors", dir1);
    flip_bit(model, 8 * (file_size(model) - 3));
    lcm_checkpoint_describe_intact(fx.run, msg, sizeof msg);
    CHECKF(strstr(msg, "no checkpoint under") && strstr(msg, "verifies"), "%s", msg);
    fixture_free(&fx);
}

/* ---- choosing the checkpoint to resume ----------------------------------------------------------- */

TEST(resume_skips_damaged_and_empty_newest_checkpoints) {
    fixture fx;
    fixture_init(&fx, 8);
    lcm_error err = {0};
    char d1[1200], d2[1200], d3[1300], got[1300], model[1300], log[600];
    CHECK_OK(save_step(&fx, 1, 5, d1, sizeof d1, &err), &err);
    CHECK_OK(save_step(&fx, 2, 5, d2, sizeof d2, &err), &err);
    snprintf(model, sizeof model, "%s/train_state.safetensors", d2);
    flip_bit(model, 8 * (file_size(model) - 1) + 7);
    snprintf(d3, sizeof d3, "%s/checkpoints/step_000000003", fx.run);
    CHECK(mkdir(d3, 0755) == 0);
    snprintf(log, sizeof log, "%s/stderr", fx.run);
    int found = 0;
    int saved = capture_begin(log);
    CHECK_OK(lcm_checkpoint_latest_verified(fx.run, got, sizeof got, &found, &err), &err);
    CHECK(capture_end(saved, log, "resume: skipping") == 2);
    CHECK(found && strcmp(got, d1) == 0);
    /* None verifies: an error, not a fresh start over the damaged ones. */
    snprintf(model, sizeof model, "%s/model.safetensors", d1);
    unlink(model);
    saved = capture_begin(log);
    CHECK_FAILS(lcm_checkpoint_latest_verified(fx.run, got, sizeof got, &found, &err), &err, LCM_ERR_IO,
                "none of the 3 checkpoints");
    capture_end(saved, log, "");
    CHECK(!found);
    fixture_free(&fx);
}

TEST(a_checkpoint_moved_aside_by_an_interrupted_rerun_is_put_back) {
    /* A save of a step that already exists renames the old one to step_N.old, then the new one into
     * place. Killed between the two renames, step_N.old is the only copy of step N. */
    fixture fx;
    fixture_init(&fx, 9);
    lcm_error err = {0};
    char d1[1200], d2[1200], old[1300], got[1300], tmp[1300];
    CHECK_OK(save_step(&fx, 1, 5, d1, sizeof d1, &err), &err);
    CHECK_OK(save_step(&fx, 2, 5, d2, sizeof d2, &err), &err);
    snprintf(old, sizeof old, "%s.old", d2);
    snprintf(tmp, sizeof tmp, "%s.tmp", d2);
    CHECK(rename(d2, old) == 0 && mkdir(tmp, 0755) == 0);
    int found = 0;
    CHECK_OK(lcm_checkpoint_latest(fx.run, got, sizeof got, &found, &err), &err);
    CHECK(found && strcmp(got, d2) == 0 && lcm_is_dir(d2) && !lcm_is_dir(old) && !lcm_is_dir(tmp));
    lcm_train_state s;
    float *w = malloc(fx.t.total * 4);
    CHECK_OK(lcm_checkpoint_load(d2, &fx.t, w, NULL, NULL, NULL, &s, &err), &err);
    CHECK(s.step == 2);
    free(w);
    fixture_free(&fx);
}
