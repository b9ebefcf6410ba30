/* error.c: error values with messages (see include/lcm/error.h). */
#include "lcm/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int lcm_fail(lcm_error *err, lcm_status code, const char *fmt, ...) {
    if (err && err->code == LCM_OK) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        /* File-controlled text is escaped where it is formatted (escape.h); this is the backstop that
         * keeps a message one line, without terminal control bytes, if a caller forgot. */
        for (char *p = err->msg; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    }
    return (int)code;
}

int lcm_error_context(lcm_error *err, const char *fmt, ...) {
    if (!err || err->code == LCM_OK) return err ? (int)err->code : 0;
    char prefix[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[sizeof err->msg];
    memcpy(old, err->msg, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t room = sizeof err->msg - n - 3;
    size_t k = strlen(old);
    if (k > room) k = room;
    memcpy(err->msg + n + 2, old, k);
    err->msg[n + 2 + k] = '\0';
    return (int)err->code;
}

void lcm_error_clear(lcm_error *err) {
    if (!err) return;
    err->code = LCM_OK;
    err->msg[0] = '\0';
}

const char *lcm_status_name(lcm_status code) {
    switch (code) {
    case LCM_OK: return "ok";
    case LCM_ERR_USAGE: return "usage error";
    case LCM_ERR_CONFIG: return "config error";
    case LCM_ERR_IO: return "i/o error";
    case LCM_ERR_FORMAT: return "bad file";
    case LCM_ERR_DATA: return "bad data";
    case LCM_ERR_NOMEM: return "out of memory";
    case LCM_ERR_DEVICE: return "device error";
    case LCM_ERR_NUMERIC: return "training diverged";
    case LCM_ERR_INTERRUPTED: return "interrupted";
    case LCM_ERR_INTERNAL: return "internal error";
    }
    return "error";
}

int lcm_exit_status(lcm_status code) {
    switch (code) {
    case LCM_OK: return 0;
    case LCM_ERR_USAGE:
    case LCM_ERR_CONFIG: return 2;
    case LCM_ERR_INTERRUPTED: return 130;
    default: return 1;
    }
}
