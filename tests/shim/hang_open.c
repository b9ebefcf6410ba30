/* hang_open.c: an LD_PRELOAD shim for tests/test_mpi.sh around open().
 *   LCM_TEST_HANG_OPEN=TEXT   an open() of a path that contains TEXT never returns: a process stuck
 *                             at start-up (a dead NFS server, a disk that does not answer)
 * Every other call goes to the real open(). Built by the test with cc -shared. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int (*open_fn)(const char *, int, ...);

static int call(const char *name, const char *path, int flags, mode_t mode) {
    const char *text = getenv("LCM_TEST_HANG_OPEN");
    if (text && text[0] && strstr(path, text))
        for (;;) sleep(1000);
    open_fn real = (open_fn)dlsym(RTLD_NEXT, name);
    return real(path, flags, mode);
}

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return call("open", path, flags, mode);
}

int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return call("open64", path, flags, mode);
}
