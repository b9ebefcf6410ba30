/* log.h: the process-wide log: messages to stderr and, once a run directory exists, to its log file.
 * Thread-safe; every line is written whole. */
#ifndef LCM_LOG_H
#define LCM_LOG_H

#include <stddef.h>
#include <stdio.h>

typedef enum { LCM_LOG_DEBUG, LCM_LOG_INFO, LCM_LOG_WARN, LCM_LOG_ERROR } lcm_log_level;

void lcm_log(lcm_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define lcm_info(...) lcm_log(LCM_LOG_INFO, __VA_ARGS__)
#define lcm_warn(...) lcm_log(LCM_LOG_WARN, __VA_ARGS__)
#define lcm_debug(...) lcm_log(LCM_LOG_DEBUG, __VA_ARGS__)

void lcm_log_set_level(lcm_log_level level);
/* Also append every line to this file (NULL closes it). Returns 0 or -1 with errno. */
int lcm_log_set_file(const char *path);
/* The errno of the first failed write to that file (0: none; the file is then closed and a warning
 * printed once), and its path into path[cap]. */
int lcm_log_file_error(char *path, size_t cap);
/* Quiet mode (tests): only warnings and errors reach stderr. */
void lcm_log_set_quiet(int quiet);

#endif
