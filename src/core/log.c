/* log.c: the process-wide log (stderr, and the run directory's log file once it is set). */
#include "lcm/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static lcm_log_level log_level = LCM_LOG_INFO;
static int log_quiet;
static FILE *log_file;
static char log_path[1024];
static int log_errno; /* the first write error on the log file since it was set; the file is then closed */

void lcm_log_set_level(lcm_log_level level) { log_level = level; }
void lcm_log_set_quiet(int quiet) { log_quiet = quiet; }

int lcm_log_set_file(const char *path) {
    pthread_mutex_lock(&log_mu);
    if (log_file) fclose(log_file);
    log_file = NULL;
    log_errno = 0;
    snprintf(log_path, sizeof log_path, "%s", path ? path : "");
    if (path) log_file = fopen(path, "a");
    int rc = (path && !log_file) ? -1 : 0;
    pthread_mutex_unlock(&log_mu);
    return rc;
}

void lcm_log(lcm_log_level level, const char *fmt, ...) {
    if (level < log_level) return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    const char *tag = level == LCM_LOG_WARN ? "warning: " : level == LCM_LOG_ERROR ? "error: " : "";
    pthread_mutex_lock(&log_mu);
    if (!log_quiet || level >= LCM_LOG_WARN) {
        fprintf(stderr, "%s%s\n", tag, line);
        fflush(stderr);
    }
    if (log_file) {
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        char stamp[32];
        strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
        if (fprintf(log_file, "%s %s%s\n", stamp, tag, line) < 0 || fflush(log_file) != 0) {
            log_errno = errno ? errno : EIO;
            fclose(log_file);
            log_file = NULL;
            fprintf(stderr, "warning: cannot write the log file %s: %s; logging to stderr only\n", log_path,
                    strerror(log_errno));
        }
    }
    pthread_mutex_unlock(&log_mu);
}

int lcm_log_file_error(char *path, size_t cap) {
    pthread_mutex_lock(&log_mu);
    int e = log_errno;
    snprintf(path, cap, "%s", log_path);
    pthread_mutex_unlock(&log_mu);
    return e;
}
