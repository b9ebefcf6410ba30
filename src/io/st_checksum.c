/* st_checksum.c: the canonical header checksum and the verification of the checksums lcm stores in
 * safetensors metadata (st_checksum.h; the writer side is lcm_st_add_checksums in safetensors.c). */
#include "lcm/st_checksum.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/crc32c.h"
#include "lcm/escape.h"
#include "lcm/log.h"

/* Fuzz builds compute every checksum but load past a mismatch, so that a fuzzer's mutations reach the
 * readers behind this check instead of stopping here (the checksum code itself is still exercised). */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define IGNORE_MISMATCH 1
#else
#define IGNORE_MISMATCH 0
#endif

typedef struct meta_pair {
    const char *key, *value;
} meta_pair;

static int cmp_meta(const void *a, const void *b) {
    return strcmp(((const meta_pair *)a)->key, ((const meta_pair *)b)->key);
}

static int cmp_tensor(const void *a, const void *b) {
    return strcmp((*(const lcm_st_tensor *const *)a)->name, (*(const lcm_st_tensor *const *)b)->name);
}

static uint32_t crc_str(uint32_t crc, const char *s) { return lcm_crc32c(crc, s, strlen(s) + 1); /* with NUL */ }

int lcm_st_header_crc(int n_meta, char *const *keys, char *const *values, int n, const lcm_st_tensor *tensors,
                      uint32_t *out, lcm_error *err) {
    meta_pair *meta = calloc((size_t)n_meta + 1, sizeof *meta);
    const lcm_st_tensor **ts = calloc((size_t)n + 1, sizeof *ts);
    if (!meta || !ts) {
        free(meta);
        free(ts);
        return lcm_fail(err, LCM_ERR_NOMEM, "out of memory checksumming a safetensors header");
    }
    int m = 0;
    for (int i = 0; i < n_meta; i++)
        if (strcmp(keys[i], LCM_ST_HEADER_CRC_KEY) != 0) meta[m++] = (meta_pair){keys[i], values[i]};
    for (int i = 0; i < n; i++) ts[i] = &tensors[i];
    qsort(meta, (size_t)m, sizeof *meta, cmp_meta);
    qsort(ts, (size_t)n, sizeof *ts, cmp_tensor);
    uint32_t crc = 0;
    for (int i = 0; i < m; i++) {
        crc = lcm_crc32c(crc, "M", 1);
        crc = crc_str(crc, meta[i].key);
        crc = crc_str(crc, meta[i].value);
    }
    for (int i = 0; i < n; i++) {
        char shape[LCM_ST_MAX_DIMS * 21 + 1] = "";
        size_t len = 0;
        for (int d = 0; d < ts[i]->ndim && d < LCM_ST_MAX_DIMS; d++)
            len += (size_t)snprintf(shape + len, sizeof shape - len, d ? ",%" PRId64 : "%" PRId64, ts[i]->shape[d]);
        crc = lcm_crc32c(crc, "T", 1);
        crc = crc_str(crc, ts[i]->name);
        crc = crc_str(crc, lcm_st_dtype_name(ts[i]->dtype));
        crc = crc_str(crc, shape);
    }
    free(meta);
    free(ts);
    *out = crc;
    return 0;
}

/* "1a2b3c4d" exactly (what the writer stores), else -1. */
static int parse_crc(const char *s, uint32_t *out) {
    uint32_t v = 0;
    int i = 0;
    for (; s[i]; i++) {
        char c = s[i];
        int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (digit < 0 || i >= 8) return -1;
        v = v << 4 | (uint32_t)digit;
    }
    if (i != 8) return -1;
    *out = v;
    return 0;
}

/* The notice for an unverified file, once per path and process (lcm eval opens a file twice). */
static void note_unverified(const char *path) {
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static uint64_t seen[64];
    static int n_seen;
    uint64_t h = 14695981039346656037ULL;
    for (const char *p = path; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ULL;
    pthread_mutex_lock(&mu);
    int known = 0;
    for (int i = 0; i < n_seen && i < 64 && !known; i++) known = seen[i] == h;
    if (!known) seen[n_seen++ % 64] = h;
    pthread_mutex_unlock(&mu);
    if (!known)
        lcm_warn("%s carries no checksums (written by another tool, or by lcm before checksums): loading it "
                 "unverified", path);
}

/* The stored checksum value of a tensor, or NULL. */
static const char *tensor_crc(const lcm_st_file *f, const char *name) {
    const size_t plen = strlen(LCM_ST_CRC_PREFIX);
    for (int i = 0; i < f->n_meta; i++)
        if (strncmp(f->meta_keys[i], LCM_ST_CRC_PREFIX, plen) == 0 && strcmp(f->meta_keys[i] + plen, name) == 0)
            return f->meta_values[i];
    return NULL;
}

static int verify_header(const lcm_st_file *f, int *has_sums, lcm_error *err) {
    const size_t plen = strlen(LCM_ST_CRC_PREFIX);
    const char *stored = lcm_st_meta(f, LCM_ST_HEADER_CRC_KEY);
    int n_sums = 0;
    for (int i = 0; i < f->n_meta; i++) {
        const char *k = f->meta_keys[i];
        if (strncmp(k, LCM_ST_CRC_PREFIX, plen) != 0) continue;
        n_sums++;
        char shown[LCM_ESC_CAP];
        if (!lcm_st_find(f, k + plen))
            return lcm_fail(err, LCM_ERR_FORMAT, "%s: checksum metadata \"%s\" names no tensor of the file: the "
                            "header is damaged", f->path, lcm_escape_str(shown, sizeof shown, k));
    }
    *has_sums = stored || n_sums;
    if (!*has_sums) return 0;
    uint32_t want, got;
    if (!stored || parse_crc(stored, &want) != 0)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: the file carries checksums but its header checksum (metadata \""
                        LCM_ST_HEADER_CRC_KEY "\") is %s: the header is damaged", f->path,
                        stored ? "malformed" : "missing");
    LCM_TRY(lcm_st_header_crc(f->n_meta, f->meta_keys, f->meta_values, f->n, f->tensors, &got, err));
    if (got != want && !IGNORE_MISMATCH)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: the header fails its checksum (CRC-32C %08" PRIx32 ", stored %08"
                        PRIx32 "): the header is damaged", f->path, got, want);
    for (int i = 0; i < f->n; i++) {
        const char *s = tensor_crc(f, f->tensors[i].name);
        char shown[LCM_ESC_CAP];
        if (!s || parse_crc(s, &want) != 0)
            return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s' has %s checksum though the file carries "
                            "checksums: the header is damaged", f->path,
                            lcm_escape_str(shown, sizeof shown, f->tensors[i].name), s ? "a malformed" : "no");
    }
    return 0;
}

int lcm_st_verify(const lcm_st_file *f, lcm_st_verify_scope scope, int *verified, lcm_error *err) {
    int has_sums = 0;
    if (verified) *verified = 0;
    LCM_TRY(verify_header(f, &has_sums, err));
    if (!has_sums) {
        note_unverified(f->path);
        return 0;
    }
    for (int i = 0; scope == LCM_ST_VERIFY_ALL && i < f->n; i++) {
        const lcm_st_tensor *t = &f->tensors[i];
        uint32_t want = 0;
        parse_crc(tensor_crc(f, t->name), &want); /* verify_header checked that it is there and well formed */
        uint32_t got = lcm_crc32c(0, t->data, (size_t)t->nbytes);
        char shown[LCM_ESC_CAP];
        if (got != want && !IGNORE_MISMATCH)
            return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor '%s' fails its checksum (CRC-32C of its %" PRIu64
                            " bytes is %08" PRIx32 ", stored %08" PRIx32 "): the file is damaged", f->path,
                            lcm_escape_str(shown, sizeof shown, t->name), t->nbytes, got, want);
    }
    if (verified) *verified = 1;
    return 0;
}
