/* error.h: error values with messages.
 *
 * Library code never prints and never exits: a function that can fail returns an int (0 on success,
 * an lcm_status otherwise) and fills an lcm_error with a one-line message that names the file, key or
 * value at fault and what to do. Only the CLI layer prints the message and chooses the exit status. */
#ifndef LCM_ERROR_H
#define LCM_ERROR_H

#include <stddef.h>

typedef enum lcm_status {
    LCM_OK = 0,
    LCM_ERR_USAGE,       /* bad command line */
    LCM_ERR_CONFIG,      /* bad config file, key or value */
    LCM_ERR_IO,          /* open/read/write/mmap failed */
    LCM_ERR_FORMAT,      /* a file is truncated, corrupt or not what it claims to be */
    LCM_ERR_DATA,        /* the data itself is bad (NaN/Inf, empty) */
    LCM_ERR_NOMEM,       /* host or device allocation failed */
    LCM_ERR_DEVICE,      /* GPU, driver, cuBLAS or NCCL failure; no GPU where one is needed */
    LCM_ERR_NUMERIC,     /* training diverged (too many NaN/Inf steps) */
    LCM_ERR_INTERRUPTED, /* stopped by a signal or because another worker failed */
    LCM_ERR_INTERNAL,    /* a bug in lcm: please report it */
} lcm_status;

typedef struct lcm_error {
    lcm_status code;
    char msg[1024];
} lcm_error;

/* Record an error (if err is not NULL) and return code. The first error recorded wins: a later
 * lcm_fail on an error that already holds one keeps the earlier message (it is the root cause). */
int lcm_fail(lcm_error *err, lcm_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prepend context to an error already recorded: "reading run/ckpt/model.safetensors: <old message>". */
int lcm_error_context(lcm_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void lcm_error_clear(lcm_error *err);
const char *lcm_status_name(lcm_status code);
/* Process exit status for an error code (usage/config errors 2, others 1). */
int lcm_exit_status(lcm_status code);

#define LCM_TRY(expr)                   \
    do {                                \
        int lcm_try_rc_ = (expr);       \
        if (lcm_try_rc_ != 0) return lcm_try_rc_; \
    } while (0)

#endif
