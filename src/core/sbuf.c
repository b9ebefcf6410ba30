/* sbuf.c: growable strings and a small JSON value writer. */
#include "lcm/sbuf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int sbuf_reserve(lcm_sbuf *b, size_t extra) {
    if (b->oom) return -1;
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->oom = 1;
        return -1;
    }
    b->s = s;
    b->cap = cap;
    return 0;
}

void lcm_sbuf_free(lcm_sbuf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

void lcm_sbuf_reset(lcm_sbuf *b) {
    b->len = 0;
    if (b->s) b->s[0] = '\0';
}

void lcm_sbuf_append(lcm_sbuf *b, const char *s, size_t n) {
    if (sbuf_reserve(b, n) != 0) return;
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void lcm_sbuf_puts(lcm_sbuf *b, const char *s) { lcm_sbuf_append(b, s, strlen(s)); }

void lcm_sbuf_printf(lcm_sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sbuf_reserve(b, (size_t)n) != 0) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void lcm_json_str(lcm_sbuf *b, const char *s) {
    lcm_sbuf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': lcm_sbuf_puts(b, "\\\""); break;
        case '\\': lcm_sbuf_puts(b, "\\\\"); break;
        case '\n': lcm_sbuf_puts(b, "\\n"); break;
        case '\r': lcm_sbuf_puts(b, "\\r"); break;
        case '\t': lcm_sbuf_puts(b, "\\t"); break;
        default:
            if (*p < 0x20)
                lcm_sbuf_printf(b, "\\u%04x", *p);
            else
                lcm_sbuf_append(b, (const char *)p, 1);
        }
    }
    lcm_sbuf_puts(b, "\"");
}

void lcm_json_num(lcm_sbuf *b, double x) {
    if (!isfinite(x)) {
        lcm_sbuf_puts(b, "null");
        return;
    }
    char tmp[40];
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, x);
        if (strtod(tmp, NULL) == x) break;
    }
    lcm_sbuf_puts(b, tmp);
}

void lcm_json_key(lcm_sbuf *b, int *first, const char *key) {
    if (!*first) lcm_sbuf_puts(b, ",");
    *first = 0;
    lcm_json_str(b, key);
    lcm_sbuf_puts(b, ":");
}
