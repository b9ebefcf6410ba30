/* text.c: the text side file of a dataset ("<name>.text" beside "<name>.lcmd"): the sentence of each
 * concept, for `lcm data inspect --show` and for people reading generated output. It is optional and
 * never needed for training. Layout (docs/dataset-format.md): a 64-byte header, the UTF-8 bytes of all
 * sentences back to back, zero padding to 8 bytes, then u64 offsets[n + 1]. Like the .lcmd file it is
 * streamed, finished by patching the header, committed atomically, and fully validated on open. */
#include <stdlib.h>
#include <string.h>

#include "lcm/dataset.h"
#include "lcmd_format.h"

#define TEXT_MAGIC "LCM-TEXT"
#define TEXT_VERSION 1u
#define TEXT_HEADER 64u
#define TEXT_CRC_AT 52u

void lcm_text_path_for(const char *dataset_path, char *out, size_t cap) {
    size_t n = strlen(dataset_path);
    if (n > 5 && strcmp(dataset_path + n - 5, ".lcmd") == 0) n -= 5;
    snprintf(out, cap, "%.*s.text", (int)n, dataset_path);
}

static uint32_t header_crc(const uint8_t *h) {
    static const uint8_t zero[4];
    uint32_t crc = lcm_crc32(0, h, TEXT_CRC_AT);
    crc = lcm_crc32(crc, zero, 4);
    return lcm_crc32(crc, h + TEXT_CRC_AT + 4, TEXT_HEADER - TEXT_CRC_AT - 4);
}

/* ---- writing ----------------------------------------------------------------------------------- */

struct lcm_text_writer {
    lcm_afile af;
    uint64_t *offsets;
    uint64_t n, cap;
    uint32_t crc; /* of everything after the header, as it is written */
};

int lcm_text_writer_open(lcm_text_writer **out, const char *path, lcm_error *err) {
    *out = NULL;
    lcm_text_writer *w = calloc(1, sizeof *w);
    if (w) w->offsets = malloc(1024 * sizeof *w->offsets);
    if (!w || !w->offsets) {
        if (w) free(w);
        return lcm_fail(err, LCM_ERR_NOMEM, "out of memory creating %s", path);
    }
    w->cap = 1024;
    w->offsets[0] = 0;
    static const uint8_t placeholder[TEXT_HEADER];
    int rc = lcm_afile_open(&w->af, path, err);
    if (rc == 0) rc = lcm_afile_write(&w->af, placeholder, sizeof placeholder, err);
    if (rc != 0) {
        lcm_text_writer_abort(w);
        return rc;
    }
    *out = w;
    return 0;
}

/* Length of the valid UTF-8 prefix of s (RFC 3629: no overlong forms, no surrogates, <= U+10FFFF). */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xbf;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xc2 && c <= 0xdf) len = 2;
        else if (c >= 0xe0 && c <= 0xef) { len = 3; if (c == 0xe0) lo = 0xa0; if (c == 0xed) hi = 0x9f; }
        else if (c >= 0xf0 && c <= 0xf4) { len = 4; if (c == 0xf0) lo = 0x90; if (c == 0xf4) hi = 0x8f; }
        else return i;
        if (n - i < len) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xc0) != 0x80) return i;
        i += len;
    }
    return n;
}

int lcm_text_writer_add(lcm_text_writer *w, const char *s, size_t n, lcm_error *err) {
    size_t ok = utf8_valid_prefix((const unsigned char *)s, n);
    if (ok != n)
        return lcm_fail(err, LCM_ERR_DATA, "%s: sentence %llu is not valid UTF-8 (at byte %zu); fix the source text",
                        w->af.path, (unsigned long long)w->n, ok);
    if (w->n + 2 > w->cap) {
        uint64_t *p = realloc(w->offsets, 2 * w->cap * sizeof *p);
        if (!p) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory writing %s", w->af.path);
        w->offsets = p;
        w->cap *= 2;
    }
    LCM_TRY(lcm_afile_write(&w->af, s, n, err));
    w->crc = lcm_crc32(w->crc, s, n);
    w->offsets[w->n + 1] = w->offsets[w->n] + n;
    w->n++;
    return 0;
}

static int text_finish(lcm_text_writer *w, lcm_error *err) {
    static const uint8_t zeros[8];
    uint64_t text_bytes = w->offsets[w->n];
    uint64_t pad = (8 - w->af.written % 8) % 8;
    LCM_TRY(lcm_afile_write(&w->af, zeros, (size_t)pad, err));
    w->crc = lcm_crc32(w->crc, zeros, (size_t)pad);
    uint64_t offsets_off = w->af.written;
    size_t table = (size_t)(w->n + 1) * 8;
    LCM_TRY(lcm_afile_write(&w->af, w->offsets, table, err));
    w->crc = lcm_crc32(w->crc, w->offsets, table);
    uint8_t h[TEXT_HEADER] = {0};
    uint32_t version = TEXT_VERSION;
    uint64_t file_size = w->af.written;
    memcpy(h, TEXT_MAGIC, 8);
    memcpy(h + 8, &version, 4);
    memcpy(h + 16, &w->n, 8);
    memcpy(h + 24, &text_bytes, 8);
    memcpy(h + 32, &offsets_off, 8);
    memcpy(h + 40, &file_size, 8);
    memcpy(h + 48, &w->crc, 4);
    uint32_t hc = header_crc(h);
    memcpy(h + TEXT_CRC_AT, &hc, 4);
    return lcm_afile_pwrite(&w->af, 0, h, sizeof h, err);
}

int lcm_text_writer_commit(lcm_text_writer *w, lcm_error *err) {
    int rc = text_finish(w, err);
    if (rc == 0) rc = lcm_afile_commit(&w->af, err);
    else lcm_afile_abort(&w->af);
    free(w->offsets);
    free(w);
    return rc;
}

void lcm_text_writer_abort(lcm_text_writer *w) {
    if (!w) return;
    lcm_afile_abort(&w->af);
    free(w->offsets);
    free(w);
}

/* ---- reading ----------------------------------------------------------------------------------- */

#define TEXT_REDO "re-create it with tools/parquet_to_lcmd.py or lcm data synth (synth.with_text=true)"

static int text_validate(lcm_text *t, const char *path, uint64_t expect_n, lcm_error *err) {
    const uint8_t *b = t->map.data;
    uint64_t size = t->map.size;
    if (size < TEXT_HEADER)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: truncated: %llu bytes, smaller than the %u-byte header; " TEXT_REDO,
                        path, (unsigned long long)size, TEXT_HEADER);
    if (memcmp(b, TEXT_MAGIC, 8) != 0)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: not an lcm text file (the first 8 bytes are not \"" TEXT_MAGIC "\")",
                        path);
    uint32_t version, body_crc, stored_hc;
    uint64_t n, text_bytes, offsets_off, file_size;
    memcpy(&version, b + 8, 4);
    memcpy(&n, b + 16, 8);
    memcpy(&text_bytes, b + 24, 8);
    memcpy(&offsets_off, b + 32, 8);
    memcpy(&file_size, b + 40, 8);
    memcpy(&body_crc, b + 48, 4);
    memcpy(&stored_hc, b + TEXT_CRC_AT, 4);
    if (version != TEXT_VERSION)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: text format version %u is not supported (this lcm reads %u); " TEXT_REDO,
                        path, version, TEXT_VERSION);
    if (header_crc(b) != stored_hc)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: corrupt header (checksum mismatch); " TEXT_REDO, path);
    uint64_t want_off, table, want_size;
    int over = __builtin_add_overflow(text_bytes, (uint64_t)TEXT_HEADER + 7, &want_off) |
               __builtin_add_overflow(n, 1, &table) | __builtin_mul_overflow(table, 8, &table);
    want_off &= ~(uint64_t)7;
    over |= __builtin_add_overflow(want_off, table, &want_size);
    if (over || offsets_off != want_off || file_size != want_size)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: corrupt header: %llu sentences of %llu bytes do not match the "
                        "recorded layout; " TEXT_REDO,
                        path, (unsigned long long)n, (unsigned long long)text_bytes);
    if (size != file_size)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: %s: the header says %llu bytes, the file has %llu; " TEXT_REDO, path,
                        size < file_size ? "truncated" : "damaged", (unsigned long long)file_size,
                        (unsigned long long)size);
    if (lcm_crc32(0, b + TEXT_HEADER, (size_t)(file_size - TEXT_HEADER)) != body_crc)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: corrupt contents (checksum mismatch); " TEXT_REDO, path);
    const uint64_t *off = (const uint64_t *)(b + offsets_off);
    if (off[0] != 0 || off[n] != text_bytes)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: corrupt sentence offsets; " TEXT_REDO, path);
    for (uint64_t i = 0; i < n; i++)
        if (off[i + 1] < off[i])
            return lcm_fail(err, LCM_ERR_FORMAT, "%s: corrupt sentence offsets at sentence %llu; " TEXT_REDO, path,
                            (unsigned long long)i);
    if (expect_n > 0 && n != expect_n)
        return lcm_fail(err, LCM_ERR_FORMAT,
                        "%s: holds %llu sentences but its dataset has %llu concepts; the text file belongs to "
                        "another dataset — " TEXT_REDO,
                        path, (unsigned long long)n, (unsigned long long)expect_n);
    t->n = n;
    t->offsets = off;
    t->bytes = (const char *)(b + TEXT_HEADER);
    return 0;
}

int lcm_text_open(lcm_text *t, const char *path, uint64_t expect_n, lcm_error *err) {
    memset(t, 0, sizeof *t);
    if (strlen(path) >= sizeof t->path) return lcm_fail(err, LCM_ERR_IO, "%s: path too long", path);
    snprintf(t->path, sizeof t->path, "%s", path);
    LCM_TRY(lcm_map_file(&t->map, path, err));
    int rc = text_validate(t, path, expect_n, err);
    if (rc != 0) lcm_text_close(t);
    return rc;
}

void lcm_text_close(lcm_text *t) {
    lcm_unmap_file(&t->map);
    memset(t, 0, sizeof *t);
}
