/* fuzz_util.h: what the libFuzzer harnesses of tests/fuzz/ share: a private scratch directory per
 * process and writing the fuzzer's bytes into files there (the readers under test take paths). */
#ifndef LCM_FUZZ_UTIL_H
#define LCM_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lcm/fileio.h"

static char fuzz_dir_path[256];

static inline void fuzz_dir_remove(void) {
    lcm_error err = {0};
    if (fuzz_dir_path[0]) lcm_rm_rf(fuzz_dir_path, &err);
}

/* The scratch directory (created on first use, removed at exit). */
static inline const char *fuzz_dir(void) {
    if (!fuzz_dir_path[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/lcm-fuzz-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
        if (!mkdtemp(fuzz_dir_path)) {
            perror("mkdtemp");
            abort();
        }
        atexit(fuzz_dir_remove);
    }
    return fuzz_dir_path;
}

/* fuzz_dir()/name, for path buffers of cap bytes. */
static inline void fuzz_path(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", fuzz_dir(), name); }

/* Write data[0..n) to path (replacing it); a failure here is the harness's, not the reader's. */
static inline void fuzz_write(const char *path, const uint8_t *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

/* The input cut into parts at the separator line "\n=====\n" (the seeds use it to hold several files);
 * parts[i] point into data. Returns the number of parts (at most max). */
#define FUZZ_SEP "\n=====\n"
static inline int fuzz_split(const uint8_t *data, size_t n, const uint8_t **parts, size_t *lens, int max) {
    const size_t sep = sizeof FUZZ_SEP - 1;
    int k = 0;
    size_t start = 0;
    for (size_t i = 0; k < max - 1 && i + sep <= n;) {
        if (memcmp(data + i, FUZZ_SEP, sep) == 0) {
            parts[k] = data + start;
            lens[k++] = i - start;
            i += sep;
            start = i;
        } else {
            i++;
        }
    }
    parts[k] = data + start;
    lens[k++] = n - start;
    return k;
}

#endif
