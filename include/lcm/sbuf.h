/* sbuf.h: a growable string buffer, and a JSON writer on top of it (metrics lines, headers, reports). */
#ifndef LCM_SBUF_H
#define LCM_SBUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct lcm_sbuf {
    char *s;     /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    int oom;     /* set when an allocation failed; the content is then truncated */
} lcm_sbuf;

void lcm_sbuf_free(lcm_sbuf *b);
void lcm_sbuf_reset(lcm_sbuf *b);
void lcm_sbuf_append(lcm_sbuf *b, const char *s, size_t n);
void lcm_sbuf_puts(lcm_sbuf *b, const char *s);
void lcm_sbuf_printf(lcm_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* JSON writing: the caller writes punctuation ({ } [ ] , :) itself; these write escaped values. */
void lcm_json_str(lcm_sbuf *b, const char *s);
/* Shortest representation that reads back to the same double; non-finite numbers become null. */
void lcm_json_num(lcm_sbuf *b, double x);
/* "key": (with a comma first unless *first; clears *first). */
void lcm_json_key(lcm_sbuf *b, int *first, const char *key);

#endif
