/* fileio.h: files that are never left half-written, read-only mappings, small file helpers.
 *
 * Atomic writes: data goes to "<path>.tmp.<pid>" in the same directory, is fsync'ed, renamed over
 * <path>, and the directory is fsync'ed. A crash at any point leaves either the old file or the new
 * one, never a mixture. */
#ifndef LCM_FILEIO_H
#define LCM_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "lcm/error.h"

#define LCM_PATH_MAX 1024

typedef struct lcm_afile {
    FILE *f;
    char tmp[LCM_PATH_MAX + 32];
    char path[LCM_PATH_MAX];
    uint64_t written;
    int slot;           /* 1 + its entry in the table of temporary files (fileio.c); 0: none */
} lcm_afile;

int lcm_afile_open(lcm_afile *af, const char *path, lcm_error *err);
int lcm_afile_write(lcm_afile *af, const void *data, size_t n, lcm_error *err);
/* Pad with zero bytes up to a multiple of `align` bytes (file offset). */
int lcm_afile_pad(lcm_afile *af, uint64_t align, lcm_error *err);
/* Overwrite bytes already written (e.g. a header finished last). The file position is restored. */
int lcm_afile_pwrite(lcm_afile *af, uint64_t offset, const void *data, size_t n, lcm_error *err);
/* fsync, rename into place, fsync the directory. The afile is closed either way. */
int lcm_afile_commit(lcm_afile *af, lcm_error *err);
/* Close and delete the temporary file (safe to call after a failed write or twice). */
void lcm_afile_abort(lcm_afile *af);

/* Unlink the temporary file of every atomic write in progress in this process. Async-signal-safe:
 * for a SIGINT/SIGTERM handler that ends the process (the files would otherwise stay forever). */
void lcm_afile_remove_all_tmp(void);

int lcm_write_file_atomic(const char *path, const void *data, size_t n, lcm_error *err);
int lcm_fsync_dir(const char *dir, lcm_error *err);
/* mkdir -p; existing directories are fine. */
int lcm_mkdir_p(const char *path, lcm_error *err);
/* Whole file into a NUL-terminated malloc'ed buffer. */
int lcm_read_file(const char *path, char **out, size_t *size, lcm_error *err);
int lcm_file_exists(const char *path);
int lcm_is_dir(const char *path);
/* Directory part of path ("." when none) into out. */
void lcm_dirname(const char *path, char *out, size_t cap);
/* Join dir and name into out ("name" alone when it is absolute). Returns -1 if it does not fit. */
int lcm_path_join(char *out, size_t cap, const char *dir, const char *name);
/* Remove a directory tree (checkpoint rotation). */
int lcm_rm_rf(const char *path, lcm_error *err);

/* A read-only, shared mapping of a whole file. size 0 files map to data == NULL. */
typedef struct lcm_mapping {
    const uint8_t *data;
    uint64_t size;
} lcm_mapping;

int lcm_map_file(lcm_mapping *m, const char *path, lcm_error *err);
void lcm_unmap_file(lcm_mapping *m);

/* Monotonic seconds. */
double lcm_now(void);

#endif
