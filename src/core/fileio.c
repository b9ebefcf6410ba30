/* fileio.c: atomic file writes, read-only mappings, directory helpers. */
#include "lcm/fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The temporary files of the atomic writes in progress, for a signal handler to remove. A slot is
 * FREE, then CLAIMED while its path is copied in, then READY; the handler reads only READY slots, and
 * holds one REMOVING while it unlinks the path, so that the owner cannot free it (and another write
 * claim it and copy a new path in) under the handler. More writes at once than slots: the extra ones
 * are simply not tracked. */
enum { TMP_FREE, TMP_CLAIMED, TMP_READY, TMP_REMOVING };
#define TMP_SLOTS 64
static struct {
    atomic_int state;
    char path[LCM_PATH_MAX + 32];
} tmp_files[TMP_SLOTS];

static int tmp_track(const char *tmp) {
    for (int i = 0; i < TMP_SLOTS; i++) {
        int expected = TMP_FREE;
        if (atomic_compare_exchange_strong(&tmp_files[i].state, &expected, TMP_CLAIMED)) {
            snprintf(tmp_files[i].path, sizeof tmp_files[i].path, "%s", tmp);
            atomic_store(&tmp_files[i].state, TMP_READY);
            return i + 1;
        }
    }
    return 0;
}

static void tmp_untrack(lcm_afile *af) {
    if (af->slot > 0) {
        /* READY -> FREE; while a handler on another thread holds it REMOVING, wait (an unlink). A
         * handler on this thread runs to its end before this thread goes on, so it never waits here. */
        atomic_int *state = &tmp_files[af->slot - 1].state;
        int expected = TMP_READY;
        while (!atomic_compare_exchange_weak(state, &expected, TMP_FREE)) {
            if (expected != TMP_REMOVING && expected != TMP_READY) break; /* not ours (cannot happen) */
            expected = TMP_READY;
            sched_yield();
        }
    }
    af->slot = 0;
}

void lcm_afile_remove_all_tmp(void) {
    for (int i = 0; i < TMP_SLOTS; i++) {
        int expected = TMP_READY;
        if (atomic_compare_exchange_strong(&tmp_files[i].state, &expected, TMP_REMOVING)) {
            unlink(tmp_files[i].path);
            atomic_store(&tmp_files[i].state, TMP_READY);
        }
    }
}

int lcm_afile_open(lcm_afile *af, const char *path, lcm_error *err) {
    memset(af, 0, sizeof *af);
    if (strlen(path) >= sizeof af->path) return lcm_fail(err, LCM_ERR_IO, "%s: path too long", path);
    snprintf(af->path, sizeof af->path, "%s", path);
    snprintf(af->tmp, sizeof af->tmp, "%s.tmp.%ld", path, (long)getpid());
    af->slot = tmp_track(af->tmp); /* before the file exists: a signal never finds it untracked */
    af->f = fopen(af->tmp, "wb");
    if (!af->f) {
        int e = errno;
        tmp_untrack(af);
        return lcm_fail(err, LCM_ERR_IO, "cannot create %s: %s", af->tmp, strerror(e));
    }
    return 0;
}

int lcm_afile_write(lcm_afile *af, const void *data, size_t n, lcm_error *err) {
    if (n == 0) return 0;
    if (fwrite(data, 1, n, af->f) != n)
        return lcm_fail(err, LCM_ERR_IO, "writing %s: %s", af->tmp, strerror(errno));
    af->written += n;
    return 0;
}

int lcm_afile_pad(lcm_afile *af, uint64_t align, lcm_error *err) {
    static const char zeros[4096];
    uint64_t rem = af->written % align;
    if (rem == 0) return 0;
    uint64_t need = align - rem;
    while (need > 0) {
        size_t k = need < sizeof zeros ? (size_t)need : sizeof zeros;
        LCM_TRY(lcm_afile_write(af, zeros, k, err));
        need -= k;
    }
    return 0;
}

int lcm_afile_pwrite(lcm_afile *af, uint64_t offset, const void *data, size_t n, lcm_error *err) {
    if (fflush(af->f) != 0) return lcm_fail(err, LCM_ERR_IO, "writing %s: %s", af->tmp, strerror(errno));
    int fd = fileno(af->f);
    const char *p = data;
    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, (off_t)offset);
        if (k < 0) {
            if (errno == EINTR) continue;
            return lcm_fail(err, LCM_ERR_IO, "writing %s: %s", af->tmp, strerror(errno));
        }
        p += k;
        n -= (size_t)k;
        offset += (uint64_t)k;
    }
    return 0;
}

int lcm_afile_commit(lcm_afile *af, lcm_error *err) {
    int rc = 0;
    if (fflush(af->f) != 0 || fsync(fileno(af->f)) != 0)
        rc = lcm_fail(err, LCM_ERR_IO, "writing %s: %s", af->tmp, strerror(errno));
    if (fclose(af->f) != 0 && rc == 0) rc = lcm_fail(err, LCM_ERR_IO, "closing %s: %s", af->tmp, strerror(errno));
    af->f = NULL;
    if (rc == 0 && rename(af->tmp, af->path) != 0)
        rc = lcm_fail(err, LCM_ERR_IO, "renaming %s to %s: %s", af->tmp, af->path, strerror(errno));
    if (rc != 0) unlink(af->tmp);
    tmp_untrack(af);
    if (rc != 0) return rc;
    char dir[LCM_PATH_MAX];
    lcm_dirname(af->path, dir, sizeof dir);
    return lcm_fsync_dir(dir, err);
}

void lcm_afile_abort(lcm_afile *af) {
    if (af->f) {
        fclose(af->f);
        af->f = NULL;
    }
    if (af->tmp[0]) unlink(af->tmp);
    af->tmp[0] = '\0';
    tmp_untrack(af);
}

int lcm_write_file_atomic(const char *path, const void *data, size_t n, lcm_error *err) {
    lcm_afile af;
    LCM_TRY(lcm_afile_open(&af, path, err));
    if (lcm_afile_write(&af, data, n, err) != 0) {
        lcm_afile_abort(&af);
        return err ? (int)err->code : LCM_ERR_IO;
    }
    return lcm_afile_commit(&af, err);
}

int lcm_fsync_dir(const char *dir, lcm_error *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return lcm_fail(err, LCM_ERR_IO, "cannot open directory %s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0 && e != EINVAL) return lcm_fail(err, LCM_ERR_IO, "fsync of directory %s: %s", dir, strerror(e));
    return 0;
}

int lcm_mkdir_p(const char *path, lcm_error *err) {
    char buf[LCM_PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return lcm_fail(err, LCM_ERR_IO, "%s: path too long", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return lcm_fail(err, LCM_ERR_IO, "cannot create directory %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return lcm_fail(err, LCM_ERR_IO, "cannot create directory %s: %s", buf, strerror(errno));
    if (!lcm_is_dir(buf)) return lcm_fail(err, LCM_ERR_IO, "%s exists and is not a directory", buf);
    return 0;
}

int lcm_read_file(const char *path, char **out, size_t *size, lcm_error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return lcm_fail(err, LCM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t k = fread(buf + len, 1, cap - len, f);
        len += k;
        if (len < cap) break;
        char *nb = realloc(buf, cap * 2 + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory reading %s", path);
    if (bad) {
        free(buf);
        return lcm_fail(err, LCM_ERR_IO, "reading %s failed", path);
    }
    buf[len] = '\0';
    *out = buf;
    if (size) *size = len;
    return 0;
}

int lcm_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int lcm_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

void lcm_dirname(const char *path, char *out, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(out, cap, ".");
    } else if (slash == path) {
        snprintf(out, cap, "/");
    } else {
        snprintf(out, cap, "%.*s", (int)(slash - path), path);
    }
}

int lcm_path_join(char *out, size_t cap, const char *dir, const char *name) {
    int n;
    if (name[0] == '/' || !dir || !dir[0] || strcmp(dir, ".") == 0)
        n = snprintf(out, cap, "%s", name);
    else
        n = snprintf(out, cap, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", name);
    return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}

int lcm_rm_rf(const char *path, lcm_error *err) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : lcm_fail(err, LCM_ERR_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) return lcm_fail(err, LCM_ERR_IO, "cannot open directory %s: %s", path, strerror(errno));
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char child[LCM_PATH_MAX];
            if (lcm_path_join(child, sizeof child, path, e->d_name) != 0 || lcm_rm_rf(child, err) != 0) {
                closedir(d);
                return lcm_fail(err, LCM_ERR_IO, "cannot remove %s/%s", path, e->d_name);
            }
        }
        closedir(d);
        if (rmdir(path) != 0) return lcm_fail(err, LCM_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
    } else if (unlink(path) != 0) {
        return lcm_fail(err, LCM_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
    }
    return 0;
}

int lcm_map_file(lcm_mapping *m, const char *path, lcm_error *err) {
    m->data = NULL;
    m->size = 0;
    /* O_NONBLOCK: a FIFO (a dataset, checkpoint or normalizer path that names one) is refused below
     * instead of waiting in open() for a writer; it changes nothing for a regular file. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return lcm_fail(err, LCM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return lcm_fail(err, LCM_ERR_IO, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return lcm_fail(err, LCM_ERR_IO, "%s is not a regular file", path);
    }
    m->size = (uint64_t)st.st_size;
    if (m->size > 0) {
        void *p = mmap(NULL, (size_t)m->size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            m->size = 0;
            return lcm_fail(err, LCM_ERR_IO, "cannot map %s: %s", path, strerror(e));
        }
        m->data = p;
    }
    close(fd);
    return 0;
}

void lcm_unmap_file(lcm_mapping *m) {
    if (m->data) munmap((void *)m->data, (size_t)m->size);
    m->data = NULL;
    m->size = 0;
}

double lcm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
